//! The write-back engine through `VagonFs`, over the write path's in-memory double wrapped in
//! the fault injector (which also counts requests per method): close at local speed, request
//! counts, per-name order, dirty files without a writer, unknown `complete` outcomes, names the
//! mount must not write, live conflicts. One regression test per data-loss defect of issue 8.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use super::driver::{config, errno};
use crate::fs::engine::WriteBack;

use crate::api::faulty::{ApiMethod, Fault, FaultyFilesApi};
use crate::api::mem::MemApi;
use crate::fs::*;

pub(super) const SPACE: Space = Space::Shared;

/// create + write + close (flush and release), as `cp` does; the close must succeed.
pub(super) async fn put(fs: &VagonFs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (ino, closed) = super::driver::put(fs, parent, name, data).await;
    closed.expect("close");
    ino
}

pub(super) struct Env {
    pub(super) api: Arc<FaultyFilesApi<MemApi>>,
    pub(super) fs: Arc<VagonFs>,
    pub(super) _cache: tempfile::TempDir,
}

impl Env {
    pub(super) fn mem(&self) -> &Arc<MemApi> {
        self.api.inner()
    }

    /// Hold every part PUT at the server until `open_parts`.
    pub(super) fn hold_parts(&self) {
        self.api.hold(ApiMethod::UploadPart, None);
    }

    pub(super) fn open_parts(&self) {
        self.api.unhold(ApiMethod::UploadPart);
    }

    pub(super) fn calls(&self, m: ApiMethod) -> u64 {
        self.api.counters(m).calls
    }

    /// Wait (bounded) until `cond` holds, yielding to the engine's tasks.
    pub(super) async fn until(&self, what: &str, mut cond: impl FnMut(&Env) -> bool) {
        for _ in 0..500 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

/// The engine in its default (background) mode, with the given upload delay.
pub(super) fn env(delay: Duration) -> Env {
    env_with(WriteBack {
        upload_delay: delay,
        ..WriteBack::default()
    })
}

/// The engine with these options.
pub(super) fn env_with(write_back: WriteBack) -> Env {
    let mem = MemApi::new();
    let api = Arc::new(FaultyFilesApi::new(mem, 7));
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(cache.path(), 16);
    cfg.write_back = write_back;
    let dyn_api: Arc<dyn FilesApi> = Arc::clone(&api) as Arc<dyn FilesApi>;
    let fs = VagonFs::new(dyn_api, RootSpec::Space(SPACE), cfg);
    Env {
        api,
        fs,
        _cache: cache,
    }
}

/// open an existing file for writing, write at 0, close.
pub(super) async fn overwrite(fs: &VagonFs, parent: u64, name: &str, data: &[u8]) -> FsResult<()> {
    let a = fs.lookup(parent, OsStr::new(name)).await?;
    let open = fs.open(a.attr.ino, libc::O_WRONLY | libc::O_TRUNC).await?;
    fs.write(a.attr.ino, open.fh, 0, data).await?;
    fs.flush(a.attr.ino, open.fh).await?;
    fs.release(a.attr.ino, open.fh).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_returns_before_the_upload_and_a_small_file_costs_three_requests() {
    let e = env(Duration::ZERO);
    let dir =
        e.fs.mkdir(ROOT_INO, OsStr::new("many"), 0o755)
            .await
            .expect("mkdir");
    let lists_before = e.calls(ApiMethod::ListFiles);
    // mkdir answers before its request; the folder is made in the background.
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert_eq!(e.calls(ApiMethod::Create), 1, "mkdir is one request");
    // Parts held at the server: close must still return.
    e.hold_parts();
    for i in 0..100 {
        put(
            &e.fs,
            dir.attr.ino,
            &format!("f{i:03}"),
            format!("file {i}").as_bytes(),
        )
        .await;
    }
    assert_eq!(e.mem().completes(), 0, "no close waited for its upload");
    e.open_parts();
    let report = e.fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    let parent = Some(dir.attr.ino).and_then(|_| e.mem().entry(SPACE, None, "many"));
    let parent_id = parent.expect("folder on the server").id;
    assert_eq!(e.mem().names(SPACE, Some(parent_id)).len(), 100);
    assert_eq!(
        e.mem()
            .content(SPACE, Some(parent_id), "f042")
            .expect("f042"),
        b"file 42"
    );
    assert_eq!(e.calls(ApiMethod::Create), 101);
    assert_eq!(e.calls(ApiMethod::UploadPart), 100);
    assert_eq!(e.calls(ApiMethod::Complete), 100);
    assert_eq!(
        e.calls(ApiMethod::ListFiles),
        lists_before,
        "no listing for the files"
    );
    // And they are shown, still without a listing.
    for i in [0, 57, 99] {
        let a =
            e.fs.lookup(dir.attr.ino, OsStr::new(&format!("f{i:03}")))
                .await
                .expect("lookup");
        assert_eq!(a.attr.size, format!("file {i}").len() as u64);
    }
    assert_eq!(e.calls(ApiMethod::ListFiles), lists_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_save_is_one_upload_and_a_swap_file_none() {
    let e = env(Duration::from_millis(300));
    put(&e.fs, ROOT_INO, "doc.txt", b"version 1").await;
    e.fs.wait_uploads().await;
    let creates = e.calls(ApiMethod::Create);
    // Swap file: created, written, deleted within the upload delay.
    let swp = put(&e.fs, ROOT_INO, ".doc.txt.swp", b"swap").await;
    e.fs.unlink(ROOT_INO, OsStr::new(".doc.txt.swp"))
        .await
        .expect("unlink swap");
    let _ = swp;
    // Save: write a temp file, rename it over the original.
    put(&e.fs, ROOT_INO, ".doc.txt.tmp", b"version 2").await;
    e.fs.rename(
        ROOT_INO,
        OsStr::new(".doc.txt.tmp"),
        ROOT_INO,
        OsStr::new("doc.txt"),
        0,
    )
    .await
    .expect("rename over");
    e.fs.wait_uploads().await;
    assert_eq!(e.calls(ApiMethod::Create), creates + 1, "one upload in all");
    assert_eq!(
        e.mem().content(SPACE, None, "doc.txt").expect("doc"),
        b"version 2"
    );
    assert_eq!(e.mem().names(SPACE, None), vec!["doc.txt".to_string()]);
}

/// Defect 1: a rename onto a name whose own upload is running, and `rm foo` + a new `foo`
/// while the old one still uploads, lose nothing and never answer EEXIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_and_recreate_are_ordered_after_the_running_upload() {
    let e = env(Duration::ZERO);
    put(&e.fs, ROOT_INO, "doc.txt", b"v1").await;
    e.fs.wait_uploads().await;
    // Save v2 in place: its upload starts at once and is held at the part PUT.
    e.hold_parts();
    overwrite(&e.fs, ROOT_INO, "doc.txt", b"v2")
        .await
        .expect("save v2");
    e.until("v2's part is in flight", |e| {
        e.api.in_flight(ApiMethod::UploadPart) == 1
    })
    .await;
    // The editor's next save: temp file, renamed over doc.txt while v2 uploads.
    put(&e.fs, ROOT_INO, "doc.tmp", b"v3").await;
    let fs = Arc::clone(&e.fs);
    let rename = tokio::spawn(async move {
        fs.rename(
            ROOT_INO,
            OsStr::new("doc.tmp"),
            ROOT_INO,
            OsStr::new("doc.txt"),
            0,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.open_parts();
    rename
        .await
        .expect("join")
        .expect("rename over a file being uploaded");
    let report = e.fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        e.mem()
            .content(SPACE, None, "doc.txt")
            .expect("doc.txt kept"),
        b"v3"
    );
    assert_eq!(e.mem().names(SPACE, None), vec!["doc.txt".to_string()]);

    // rm foo while its upload runs, then a new foo.
    e.hold_parts();
    put(&e.fs, ROOT_INO, "foo", b"old foo").await;
    e.until("old foo's part is in flight", |e| {
        e.api.in_flight(ApiMethod::UploadPart) == 1
    })
    .await;
    let fs = Arc::clone(&e.fs);
    let rm = tokio::spawn(async move { fs.unlink(ROOT_INO, OsStr::new("foo")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.open_parts();
    rm.await.expect("join").expect("rm foo");
    put(&e.fs, ROOT_INO, "foo", b"new foo").await;
    let report = e.fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        e.mem()
            .content(SPACE, None, "foo")
            .expect("the new foo survives"),
        b"new foo"
    );
}

/// Defect 2: a folder holding what the mount cannot show is never removed or moved.
#[tokio::test]
async fn folders_with_hidden_entries_are_never_removed_or_moved() {
    let e = env(Duration::ZERO);
    let hidden = e.mem().add_dir(SPACE, None, "hidden");
    e.mem()
        .put_file(SPACE, Some(hidden), "a/b", b"slash in the name");
    let long = e.mem().add_dir(SPACE, None, "long");
    let cjk = "\u{6f22}".repeat(100); // 300 bytes
    e.mem().put_file(SPACE, Some(long), &cjk, b"long name");
    assert_eq!(
        errno(e.fs.rmdir(ROOT_INO, OsStr::new("hidden")).await),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        errno(
            e.fs.rename(
                ROOT_INO,
                OsStr::new("hidden"),
                ROOT_INO,
                OsStr::new("h2"),
                0
            )
            .await
        ),
        Some(libc::EXDEV)
    );
    assert_eq!(
        errno(e.fs.rmdir(ROOT_INO, OsStr::new("long")).await),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        errno(
            e.fs.rename(ROOT_INO, OsStr::new("long"), ROOT_INO, OsStr::new("l2"), 0)
                .await
        ),
        Some(libc::EXDEV)
    );
    assert!(e.mem().content(SPACE, Some(hidden), "a/b").is_some());
    assert!(e.mem().content(SPACE, Some(long), &cjk).is_some());
    // The long name is shown, cut, read-only.
    let dir =
        e.fs.lookup(ROOT_INO, OsStr::new("long"))
            .await
            .expect("long");
    let fh = e.fs.opendir(dir.attr.ino).await.expect("opendir");
    let entries = e.fs.readdir(dir.attr.ino, fh, 0).await.expect("readdir");
    let shown: Vec<String> = entries
        .iter()
        .map(|d| d.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    assert_eq!(shown.len(), 1);
    assert!(
        shown[0].len() <= 255 && shown[0].contains("\u{2026}~"),
        "{shown:?}"
    );
    assert_eq!(
        errno(overwrite(&e.fs, dir.attr.ino, &shown[0], b"x").await),
        Some(libc::EROFS)
    );
    // Nor removed: `mv` of its folder copies, then unlinks, and the copy can only carry the
    // cut name, so the unlink would lose the real one.
    assert_eq!(
        errno(e.fs.unlink(dir.attr.ino, OsStr::new(&shown[0])).await),
        Some(libc::EROFS)
    );
    assert_eq!(
        e.mem().content(SPACE, Some(long), &cjk).expect("kept"),
        b"long name"
    );
}

/// Defect 3: a name the server holds twice is read-only under both names.
#[tokio::test]
async fn a_name_held_twice_is_read_only() {
    let e = env(Duration::ZERO);
    let first = e.mem().put_file(SPACE, None, "budget.xlsx", b"first");
    let second = e.mem().put_duplicate(SPACE, None, "budget.xlsx", b"second");
    let other = format!("budget~{}.xlsx", second.id);
    for name in ["budget.xlsx", other.as_str()] {
        assert_eq!(
            errno(overwrite(&e.fs, ROOT_INO, name, b"mine").await),
            Some(libc::EROFS),
            "{name}"
        );
        let a = e.fs.lookup(ROOT_INO, OsStr::new(name)).await.expect(name);
        assert_eq!(
            errno(
                e.fs.setattr(
                    a.attr.ino,
                    SetAttr {
                        size: Some(0),
                        ..SetAttr::default()
                    }
                )
                .await
            ),
            Some(libc::EROFS)
        );
        assert_eq!(
            errno(e.fs.unlink(ROOT_INO, OsStr::new(name)).await),
            Some(libc::EROFS),
            "unlink {name}"
        );
    }
    put(&e.fs, ROOT_INO, "new.xlsx", b"new").await;
    assert_eq!(
        errno(
            e.fs.rename(
                ROOT_INO,
                OsStr::new("new.xlsx"),
                ROOT_INO,
                OsStr::new("budget.xlsx"),
                0
            )
            .await
        ),
        Some(libc::EROFS)
    );
    e.fs.wait_uploads().await;
    let ids: Vec<u64> = [first.id, second.id].to_vec();
    assert_eq!(ids.len(), 2);
    assert_eq!(
        e.mem().names(SPACE, None),
        vec!["budget.xlsx", "budget.xlsx", "new.xlsx"]
    );
}

/// Defect 4: a change with no writable handle left is uploaded by the engine; fsync on a
/// read-only descriptor uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_without_a_writer_are_uploaded() {
    let e = env(Duration::ZERO);
    put(&e.fs, ROOT_INO, "log.txt", b"hello world").await;
    e.fs.wait_uploads().await;
    let a =
        e.fs.lookup(ROOT_INO, OsStr::new("log.txt"))
            .await
            .expect("lookup");
    let reader =
        e.fs.open(a.attr.ino, libc::O_RDONLY)
            .await
            .expect("open ro");
    // truncate(2) by path while a reader has it open.
    e.fs.setattr(
        a.attr.ino,
        SetAttr {
            size: Some(5),
            ..SetAttr::default()
        },
    )
    .await
    .expect("truncate");
    e.until("the truncation reaches the server", |e| {
        e.mem().content(SPACE, None, "log.txt").as_deref() == Some(b"hello".as_slice())
    })
    .await;
    // A write through another handle, then fsync through the read-only one.
    let w =
        e.fs.open(a.attr.ino, libc::O_WRONLY)
            .await
            .expect("open rw");
    e.fs.write(a.attr.ino, w.fh, 5, b", again")
        .await
        .expect("write");
    e.fs.fsync(a.attr.ino, reader.fh).await.expect("fsync");
    assert_eq!(
        e.mem().content(SPACE, None, "log.txt").expect("log"),
        b"hello, again"
    );
    e.fs.release(a.attr.ino, w.fh).await.expect("release");
    e.fs.release(a.attr.ino, reader.fh).await.expect("release");
}

/// Defect 5: `complete` times out after the server finished: the upload is recognised by its
/// id, and the next save overwrites it (no EEXIST, no second file).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_complete_with_an_unknown_outcome_is_resolved_by_id() {
    let e = env(Duration::ZERO);
    e.api
        .fail_next_after_effect(ApiMethod::Complete, 1, Fault::Timeout);
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("r.txt"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    e.fs.write(attr.attr.ino, open.fh, 0, b"first")
        .await
        .expect("write");
    e.fs.fsync(attr.attr.ino, open.fh)
        .await
        .expect("fsync resolves the timed-out complete");
    assert_eq!(e.calls(ApiMethod::Create), 1, "not created again");
    e.fs.write(attr.attr.ino, open.fh, 0, b"second")
        .await
        .expect("write");
    e.fs.fsync(attr.attr.ino, open.fh).await.expect("next save");
    e.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    e.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert_eq!(
        e.mem().content(SPACE, None, "r.txt").expect("r.txt"),
        b"second"
    );
    assert_eq!(e.mem().names(SPACE, None), vec!["r.txt".to_string()]);
    let report = e.fs.wait_uploads().await;
    assert!(
        report.failed.is_empty(),
        "unmount would succeed: {report:?}"
    );
}

/// A file `name` holding "base" on the server, opened here for a full rewrite (`O_TRUNC`).
async fn rewrite_of_base(e: &Env, name: &str) -> (u64, u64) {
    e.mem().put_file(SPACE, None, name, b"base");
    let a =
        e.fs.lookup(ROOT_INO, OsStr::new(name))
            .await
            .expect("lookup");
    let open =
        e.fs.open(a.attr.ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .expect("open");
    (a.attr.ino, open.fh)
}

/// Another client changes a file this mount has open: both versions are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_conflict_becomes_a_conflict_copy() {
    let e = env(Duration::ZERO);
    let (ino, fh) = rewrite_of_base(&e, "notes.txt").await;
    e.mem().put_file(SPACE, None, "notes.txt", b"theirs");
    e.fs.write(ino, fh, 0, b"MINE").await.expect("write");
    e.fs.fsync(ino, fh).await.expect("fsync");
    e.fs.release(ino, fh).await.expect("release");
    assert_eq!(
        e.mem().content(SPACE, None, "notes.txt").expect("theirs"),
        b"theirs"
    );
    let names = e.mem().names(SPACE, None);
    let copy = names
        .iter()
        .find(|n| n.starts_with("notes (conflict ") && n.ends_with(").txt"))
        .unwrap_or_else(|| panic!("no conflict copy: {names:?}"));
    assert_eq!(e.mem().content(SPACE, None, copy).expect("copy"), b"MINE");
}

/// Another client lands its version while this mount's upload of the file is being sent (two
/// machines saving the same file within a second): both are kept. The check that the name
/// still holds the version this mount started from comes just before `complete`; made before
/// the transfer, it let the later `complete` replace the other client's version unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_landed_during_the_upload_is_kept_beside_it() {
    let e = env(Duration::ZERO);
    let (ino, fh) = rewrite_of_base(&e, "model.bin").await;
    let mine = crate::api::mem::pattern(2 << 20, 5).to_vec();
    e.fs.write(ino, fh, 0, &mine[..]).await.expect("write");
    e.hold_parts();
    let fs = Arc::clone(&e.fs);
    let fsync = tokio::spawn(async move { fs.fsync(ino, fh).await });
    e.until("the upload is sending its part", |e| {
        e.calls(ApiMethod::UploadPart) >= 1
    })
    .await;
    e.mem().put_file(SPACE, None, "model.bin", b"theirs");
    e.open_parts();
    fsync.await.expect("join").expect("fsync");
    e.fs.release(ino, fh).await.expect("release");
    assert_eq!(
        e.mem().content(SPACE, None, "model.bin").expect("theirs"),
        b"theirs"
    );
    let names = e.mem().names(SPACE, None);
    let copy = names
        .iter()
        .find(|n| n.starts_with("model (conflict ") && n.ends_with(").bin"))
        .unwrap_or_else(|| panic!("no conflict copy: {names:?}"));
    assert!(e.mem().content(SPACE, None, copy).expect("copy") == mine);
}

/// Transient failures are retried by the engine on its own; permanent ones are kept, shown
/// with their reason, and reported by sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_retry_and_permanent_ones_are_reported() {
    let e = env(Duration::ZERO);
    e.api.fail_next(ApiMethod::Create, 3, Fault::Unavailable);
    put(&e.fs, ROOT_INO, "flaky.txt", b"arrives").await;
    // The server lists the file when `complete` succeeds, a moment before the engine hears
    // the answer and clears the transient failure: wait for both.
    e.until("retried until it arrived, and no failure left", |e| {
        e.mem().content(SPACE, None, "flaky.txt").is_some() && e.fs.upload_failures().is_empty()
    })
    .await;
    e.mem().set_quota(1);
    put(&e.fs, ROOT_INO, "big.txt", b"does not fit").await;
    e.until("the failure is recorded", |e| {
        !e.fs.upload_failures().is_empty()
    })
    .await;
    let failures = e.fs.upload_failures();
    assert_eq!(failures[0].file, "big.txt");
    assert!(failures[0].permanent, "{failures:?}");
    let report = e.fs.wait_uploads().await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(e.fs.pending_uploads(), 1, "kept for later");
}

/// Two handles appending at once never overwrite each other's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_two_handles_are_atomic() {
    let e = env(Duration::ZERO);
    put(&e.fs, ROOT_INO, "log", b"").await;
    let a =
        e.fs.lookup(ROOT_INO, OsStr::new("log"))
            .await
            .expect("lookup");
    let h1 =
        e.fs.open(a.attr.ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .expect("h1");
    let h2 =
        e.fs.open(a.attr.ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .expect("h2");
    let mut tasks = Vec::new();
    for (fh, tag) in [(h1.fh, b'a'), (h2.fh, b'b')] {
        let fs = Arc::clone(&e.fs);
        let ino = a.attr.ino;
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                fs.write(ino, fh, 0, &[tag; 10]).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    e.fs.fsync(a.attr.ino, h1.fh).await.expect("fsync");
    let data = e.mem().content(SPACE, None, "log").expect("log");
    assert_eq!(data.len(), 1000);
    assert_eq!(data.iter().filter(|b| **b == b'a').count(), 500);
    for chunk in data.chunks(10) {
        assert!(
            chunk.iter().all(|b| *b == chunk[0]),
            "interleaved: {chunk:?}"
        );
    }
    e.fs.release(a.attr.ino, h1.fh).await.expect("release");
    e.fs.release(a.attr.ino, h2.fh).await.expect("release");
}

/// `vagonfs status`'s backlog counts the changed files not yet sending; a permanent failure
/// leaves the backlog for the failure list (with its reason), and `vagonfs sync` retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_backlog_and_failures_with_their_reason_are_shown() {
    let e = env(Duration::from_secs(30));
    put(&e.fs, ROOT_INO, "a.txt", b"12345").await;
    put(&e.fs, ROOT_INO, "b.txt", b"1234567").await;
    assert_eq!(
        e.fs.upload_backlog(),
        engine::Backlog {
            files: 2,
            bytes: 12
        },
        "both wait out their upload delay"
    );
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert_eq!(e.fs.upload_backlog(), engine::Backlog::default());

    e.mem().set_quota(1);
    put(&e.fs, ROOT_INO, "c.txt", b"too big for the quota").await;
    let report = e.fs.wait_uploads().await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "c.txt");
    assert!(
        report.failed[0].1.contains("507"),
        "sync names the reason: {report:?}"
    );
    // The engine's own try records it for `status`.
    e.fs.schedule_upload(
        e.fs.lookup(ROOT_INO, OsStr::new("c.txt"))
            .await
            .unwrap()
            .attr
            .ino,
        Duration::ZERO,
    );
    e.until("the failure is recorded", |e| {
        !e.fs.upload_failures().is_empty()
    })
    .await;
    let failures = e.fs.upload_failures();
    assert_eq!(failures[0].file, "c.txt");
    assert!(failures[0].permanent);
    assert!(failures[0].reason.contains("507"), "{failures:?}");
    assert_eq!(
        e.fs.upload_backlog(),
        engine::Backlog::default(),
        "a file failed for good is listed as failed, not as waiting"
    );
    assert_eq!(e.fs.pending_uploads(), 1);
    // Room again: `vagonfs sync` retries it at once.
    e.mem().set_quota(1 << 30);
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert!(e.fs.upload_failures().is_empty());
    assert_eq!(
        e.mem().content(SPACE, None, "c.txt").as_deref(),
        Some(&b"too big for the quota"[..])
    );
}

/// `dd` closes the descriptor it dup'ed onto its output right after opening it, so the close
/// (FLUSH) comes before the writes, while the handle stays open. The engine then waits for the
/// writes to pause instead of sending a half-written file and then the whole one again (a
/// 1 GiB `dd` was uploaded twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_close_of_a_file_still_written_uploads_it_once() {
    let e = env(Duration::ZERO);
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("dd.out"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    e.fs.flush(ino, open.fh).await.expect("dd's early close");
    let mut expected = Vec::new();
    for i in 0..12u8 {
        let block = vec![i; 4096];
        e.fs.write(ino, open.fh, expected.len() as u64, &block[..])
            .await
            .expect("write");
        expected.extend_from_slice(&block);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e.fs.flush(ino, open.fh).await.expect("close");
    e.fs.release(ino, open.fh).await.expect("release");
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert_eq!(e.mem().content(SPACE, None, "dd.out"), Some(expected));
    assert_eq!(e.calls(ApiMethod::Create), 1, "uploaded once");
}
