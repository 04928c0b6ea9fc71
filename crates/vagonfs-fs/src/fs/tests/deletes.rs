//! unlink answered before the server deleted the file (`deletes.rs`), against the in-memory
//! double behind the fault injector: the delete lands, a new file or folder of the removed name
//! waits for it, a refusal shows the file again, rmdir does not wait, and a crash before the
//! delete was sent. Requests are counted, never timed (the one bound, "unlink did not wait for
//! a held delete", is a hang guard of a second).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiError;
use crate::api::faulty::{ApiMethod, Fault};
use crate::fs::*;

use super::core::{Server, server};
use super::driver::{list, put, read_path, walk};
use super::new_folders::{mount, runtime, setup, tree};

/// The names folder `ino` shows.
pub(super) async fn shown(fs: &VagonFs, ino: u64) -> Vec<String> {
    let mut names: Vec<String> = list(fs, ino)
        .await
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

async fn unlink(fs: &VagonFs, parent: u64, name: &str) {
    tokio::time::timeout(Duration::from_secs(1), fs.unlink(parent, OsStr::new(name)))
        .await
        .expect("unlink waited on the server")
        .expect("unlink");
}

fn files(entries: &[(&str, Option<&[u8]>)]) -> BTreeMap<String, Option<Vec<u8>>> {
    entries
        .iter()
        .map(|(name, data)| (name.to_string(), data.map(<[u8]>::to_vec)))
        .collect()
}

#[tokio::test]
async fn unlink_answers_before_the_server_and_the_deletes_land_sixteen_at_a_time() {
    let (api, cache, fs) = setup();
    let names: Vec<String> = (0..20).map(|n| format!("f{n:02}")).collect();
    for name in &names {
        api.inner().add_file(Space::Shared, None, name, b"x");
    }
    assert_eq!(shown(&fs, ROOT_INO).await, names);
    api.hold(ApiMethod::Delete, None);
    for name in &names {
        unlink(&fs, ROOT_INO, name).await;
    }
    assert!(shown(&fs, ROOT_INO).await.is_empty());
    let err = fs
        .lookup(ROOT_INO, OsStr::new("f00"))
        .await
        .expect_err("removed");
    assert!(matches!(err, FsError::NotFound), "{err}");
    assert_eq!(fs.deletes_pending(), 20);
    assert_eq!(
        api.inner().names(Space::Shared, None),
        names,
        "nothing deleted yet"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.in_flight(ApiMethod::Delete), 16);

    api.unhold(ApiMethod::Delete);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(api.inner().names(Space::Shared, None).is_empty());
    assert_eq!(api.calls(ApiMethod::Delete), 20, "one delete per file");
    assert_eq!(api.max_in_flight(ApiMethod::Delete), 16);
    assert_eq!(fs.deletes_pending(), 0);
    fs.dirs.invalidate_all();
    assert!(shown(&fs, ROOT_INO).await.is_empty());
    assert_eq!(
        log_len(cache.path()),
        Some(0),
        "the log holds only deletes not done"
    );
}

/// The length of the deletes log under cache folder `cache`, if there is one.
fn log_len(cache: &std::path::Path) -> Option<u64> {
    let mut dirs = vec![cache.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.file_name() == Some(OsStr::new(".deletes.log")) {
                return Some(entry.metadata().expect("stat").len());
            }
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    None
}

/// `rm f; echo new > f` and `rm x; mkdir x`: the new object's create reaches the server only
/// once the old one is deleted, so it is neither refused (409) nor kept as a conflict copy.
#[tokio::test]
async fn a_file_or_folder_made_under_a_removed_name_waits_for_the_delete() {
    let (api, _cache, fs) = setup();
    api.inner().add_file(Space::Shared, None, "f", b"old");
    api.inner()
        .add_file(Space::Shared, None, "x", b"was a file");
    walk(&fs, "f").await.expect("f");
    walk(&fs, "x").await.expect("x");
    api.hold(ApiMethod::Delete, None);
    unlink(&fs, ROOT_INO, "f").await;
    unlink(&fs, ROOT_INO, "x").await;
    put(&fs, ROOT_INO, "f", b"new").await.1.expect("close");
    assert_eq!(read_path(&fs, "f").await, b"new");
    let mkdir = tokio::spawn({
        let fs = std::sync::Arc::clone(&fs);
        async move { fs.mkdir(ROOT_INO, OsStr::new("x"), 0o755).await }
    });
    // The upload is asked for now, and waits for the delete.
    let flushed = tokio::spawn({
        let fs = std::sync::Arc::clone(&fs);
        async move { fs.wait_uploads().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!mkdir.is_finished(), "mkdir waits for the delete of x");
    assert!(api.inner().creates().is_empty(), "nothing made yet");

    api.unhold(ApiMethod::Delete);
    mkdir.await.expect("task").expect("mkdir");
    let report = flushed.await.expect("task");
    assert!(report.failed.is_empty(), "{report:?}");
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        tree(&api),
        files(&[("f", Some(b"new".as_slice())), ("x", None)])
    );
}

/// A delete the server refuses for good: the file shows again, and `vagonfs sync` says so.
#[tokio::test]
async fn a_refused_delete_shows_the_file_again() {
    let (api, _cache, fs) = setup();
    api.inner().add_file(Space::Shared, None, "keep", b"k");
    walk(&fs, "keep").await.expect("keep");
    api.fail_where(
        ApiMethod::Delete,
        |_| true,
        Fault::Error(ApiError::Status {
            endpoint: "DELETE /files".into(),
            status: 403,
            client_code: None,
            message: "forbidden".into(),
            retry_after: None,
        }),
    );
    unlink(&fs, ROOT_INO, "keep").await;
    let report = fs.wait_uploads().await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].0.contains("keep"), "{report:?}");
    assert_eq!(fs.deletes_pending(), 0);
    assert_eq!(shown(&fs, ROOT_INO).await, ["keep"]);
    assert_eq!(read_path(&fs, "keep").await, b"k");
    assert_eq!(api.calls(ApiMethod::Delete), 1, "a refusal is not retried");
}

/// `rm -r d`: rmdir does not wait for the deletes inside (the server deletes a folder with
/// everything in it); a delete still in flight then finds its file gone, which counts as done.
#[tokio::test]
async fn rmdir_does_not_wait_for_the_deletes_inside() {
    let (api, _cache, fs) = setup();
    let d = api.inner().add_dir(Space::Shared, None, "d");
    let a = api.inner().add_file(Space::Shared, Some(d), "a", b"a");
    api.inner().add_file(Space::Shared, Some(d), "b", b"b");
    let d_ino = walk(&fs, "d").await.expect("d").attr.ino;
    assert_eq!(shown(&fs, d_ino).await, ["a", "b"]);
    api.hold(ApiMethod::Delete, Some(a));
    unlink(&fs, d_ino, "a").await;
    unlink(&fs, d_ino, "b").await;
    tokio::time::timeout(Duration::from_secs(1), fs.rmdir(ROOT_INO, OsStr::new("d")))
        .await
        .expect("rmdir waited for a's delete")
        .expect("rmdir");
    assert!(shown(&fs, ROOT_INO).await.is_empty());
    // The folder's delete does not wait for a's either (it only waits for folders inside).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.calls(ApiMethod::Delete) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "d's delete not sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.unhold(ApiMethod::Delete);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(fs.deletes_pending(), 0);
    assert!(tree(&api).is_empty());
}

/// The daemon dies before the delete was sent, with a new file written under the removed name:
/// the next mount hides the old file at once, deletes it, then uploads the new one under its
/// own name (no conflict copy).
#[test]
fn a_delete_not_sent_before_a_crash_is_sent_at_the_next_mount() {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    api.inner().add_file(Space::Shared, None, "gone", b"old");
    api.inner().add_file(Space::Shared, None, "kept", b"k");
    let rt = runtime();
    let fs = rt.block_on(async {
        let fs = mount(&api, cache.path());
        walk(&fs, "gone").await.expect("gone");
        api.hold(ApiMethod::Delete, None);
        unlink(&fs, ROOT_INO, "gone").await;
        put(&fs, ROOT_INO, "gone", b"new").await.1.expect("close");
        fs
    });
    drop(rt);
    drop(fs);
    api.unhold(ApiMethod::Delete);
    assert_eq!(api.calls(ApiMethod::Delete), 1, "held, not done");
    assert_eq!(
        tree(&api),
        files(&[("gone", Some(b"old".as_slice())), ("kept", Some(b"k"))])
    );

    // As the mount does: the spool folder (and the logs in it) is opened before the runtime
    // runs.
    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(
            shown(&fs, ROOT_INO).await,
            ["kept"],
            "hidden before it is deleted"
        );
        let report = fs.recover().await.expect("recover");
        assert_eq!(report.uploaded, ["gone"], "{report:?}");
        assert!(report.conflict_copies.is_empty(), "{report:?}");
        assert!(fs.wait_uploads().await.failed.is_empty());
        assert_eq!(
            tree(&api),
            files(&[("gone", Some(b"new".as_slice())), ("kept", Some(b"k"))])
        );
        assert_eq!(read_path(&fs, "gone").await, b"new");
    });
    drop(rt);
    drop(fs);
    // Ended: a third mount has nothing left to delete.
    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    assert_eq!(fs.deletes_pending(), 0);
}

async fn rmdir(fs: &VagonFs, parent: u64, name: &str) {
    tokio::time::timeout(Duration::from_secs(1), fs.rmdir(parent, OsStr::new(name)))
        .await
        .expect("rmdir waited on the server")
        .expect("rmdir");
}

/// Wait (at most 5 s) until `n` calls of `method` were made.
async fn calls_reach(api: &super::core::Server, method: ApiMethod, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.calls(method) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method:?}: {} calls, not {n}",
            api.calls(method)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `rm -r d` of `d/{e/{x,y},z}`, every folder listed moments before (as `rm` just read them):
/// each rmdir answers without a request, the tree is hidden at once, and a folder's delete is
/// sent only after the delete of the folder inside it landed, each after a fresh listing.
#[tokio::test]
async fn rm_r_answers_each_rmdir_at_once_and_deletes_a_folder_after_its_subfolders() {
    let (api, _cache, fs) = setup();
    let d = api.inner().add_dir(Space::Shared, None, "d");
    let e = api.inner().add_dir(Space::Shared, Some(d), "e");
    api.inner().add_file(Space::Shared, Some(e), "x", b"x");
    api.inner().add_file(Space::Shared, Some(e), "y", b"y");
    api.inner().add_file(Space::Shared, Some(d), "z", b"z");
    let d_ino = walk(&fs, "d").await.expect("d").attr.ino;
    let e_ino = walk(&fs, "d/e").await.expect("e").attr.ino;
    assert_eq!(shown(&fs, d_ino).await, ["e", "z"]);
    assert_eq!(shown(&fs, e_ino).await, ["x", "y"]);
    let lists = api.calls(ApiMethod::ListFiles);
    api.hold(ApiMethod::Delete, Some(e));
    unlink(&fs, e_ino, "x").await;
    unlink(&fs, e_ino, "y").await;
    rmdir(&fs, d_ino, "e").await;
    unlink(&fs, d_ino, "z").await;
    rmdir(&fs, ROOT_INO, "d").await;
    assert!(shown(&fs, ROOT_INO).await.is_empty());
    assert!(matches!(
        fs.lookup(ROOT_INO, OsStr::new("d")).await,
        Err(FsError::NotFound)
    ));
    // x, y, z and e are sent (e's held); d waits for e.
    calls_reach(&api, ApiMethod::Delete, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.calls(ApiMethod::Delete), 4, "d's delete waits for e's");
    assert_eq!(tree(&api).len(), 2, "d and e are still on the server");
    api.unhold(ApiMethod::Delete);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(tree(&api).is_empty());
    assert_eq!(
        api.calls(ApiMethod::Delete),
        5,
        "one delete per file and folder"
    );
    assert_eq!(
        api.calls(ApiMethod::ListFiles) - lists,
        2,
        "one fresh listing per folder, by its background delete; none by rmdir"
    );
    assert_eq!(fs.deletes_pending(), 0);
}

/// Another client puts a file in `p/d` after `rmdir p/d; rmdir p` answered: d's listing before
/// its delete (held until then) finds it, so d is kept, and p (which waited for d, though its
/// own listing was free to go) finds d and is kept too.
/// Nothing is deleted, both show again with the other client's file, and `vagonfs sync`
/// reports both.
#[tokio::test]
async fn a_folder_that_gained_a_file_elsewhere_is_kept_with_its_parent_and_shows_again() {
    let (api, _cache, fs) = setup();
    let p = api.inner().add_dir(Space::Shared, None, "p");
    let d = api.inner().add_dir(Space::Shared, Some(p), "d");
    let p_ino = walk(&fs, "p").await.expect("p").attr.ino;
    let d_ino = walk(&fs, "p/d").await.expect("d").attr.ino;
    assert_eq!(shown(&fs, p_ino).await, ["d"]);
    assert!(shown(&fs, d_ino).await.is_empty());
    api.hold(ApiMethod::ListFiles, Some(d));
    rmdir(&fs, p_ino, "d").await;
    rmdir(&fs, ROOT_INO, "p").await;
    assert!(shown(&fs, ROOT_INO).await.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.inner()
        .add_file(Space::Shared, Some(d), "theirs", b"keep me");
    api.unhold(ApiMethod::ListFiles);
    let report = fs.wait_uploads().await;
    let mut failed: Vec<_> = report.failed.iter().map(|(what, _)| what.clone()).collect();
    failed.sort();
    assert_eq!(failed, ["delete of p", "delete of p/d"], "{report:?}");
    assert!(
        report.failed.iter().all(|(_, why)| why.contains("kept")),
        "{report:?}"
    );
    assert_eq!(api.calls(ApiMethod::Delete), 0, "nothing deleted");
    assert_eq!(fs.deletes_pending(), 0);
    assert_eq!(tree(&api).len(), 3, "p, p/d and p/d/theirs");
    assert_eq!(shown(&fs, ROOT_INO).await, ["p"]);
    assert_eq!(read_path(&fs, "p/d/theirs").await, b"keep me");
}

/// The daemon dies after `rmdir d` answered, before its delete was sent: the next mount hides
/// d at once, lists it again, and deletes it; a third mount has nothing pending.
#[test]
fn a_folder_delete_not_sent_before_a_crash_is_sent_at_the_next_mount_after_a_fresh_listing() {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    api.inner().add_dir(Space::Shared, None, "d");
    api.inner().add_file(Space::Shared, None, "kept", b"k");
    let rt = runtime();
    let fs = rt.block_on(async {
        let fs = mount(&api, cache.path());
        walk(&fs, "d").await.expect("d");
        api.hold(ApiMethod::Delete, None);
        rmdir(&fs, ROOT_INO, "d").await;
        fs
    });
    drop(rt);
    drop(fs);
    api.unhold(ApiMethod::Delete);
    assert_eq!(tree(&api).len(), 2, "d is still on the server");

    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(shown(&fs, ROOT_INO).await, ["kept"], "hidden at once");
        let lists = api.calls(ApiMethod::ListFiles);
        fs.recover().await.expect("recover");
        assert!(fs.wait_uploads().await.failed.is_empty());
        assert_eq!(tree(&api), files(&[("kept", Some(b"k".as_slice()))]));
        assert!(
            api.calls(ApiMethod::ListFiles) > lists,
            "listed again before its delete"
        );
    });
    drop(rt);
    drop(fs);
    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    assert_eq!(fs.deletes_pending(), 0);
}

/// `mv a b` of a file only on the server: the rename answers before its bytes are uploaded as
/// `b` and before the delete of `a` (held here). The old name stays held, so a new `a` written
/// meanwhile waits for that delete, then lands under its own name: no conflict copy, nothing
/// lost.
#[tokio::test]
async fn a_move_answers_before_the_old_copy_is_deleted_and_the_old_name_waits_for_it() {
    let (api, _cache, fs) = setup();
    let a = api.inner().add_file(Space::Shared, None, "a", b"moved");
    walk(&fs, "a").await.expect("a");
    api.hold(ApiMethod::Delete, Some(a));
    tokio::time::timeout(
        Duration::from_secs(1),
        fs.rename(ROOT_INO, OsStr::new("a"), ROOT_INO, OsStr::new("b"), 0),
    )
    .await
    .expect("the move waited for the old copy's delete")
    .expect("rename");
    assert_eq!(shown(&fs, ROOT_INO).await, ["b"]);
    // The move (until its delete) holds the old name (a new `a` waits for it), not the new one.
    assert!(
        fs.uploader
            .try_hold_name(Space::Shared, None, "a")
            .is_none(),
        "the old name is held"
    );
    assert!(
        fs.uploader
            .try_hold_name(Space::Shared, None, "b")
            .is_some(),
        "the new name is free"
    );
    let (_, closed) = put(&fs, ROOT_INO, "a", b"new").await;
    closed.expect("close");
    let b = fs.lookup(ROOT_INO, OsStr::new("b")).await.expect("b");
    fs.upload_ino(b.attr.ino).await.expect("b lands");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fs.deletes_pending(), 1, "b landed; a's delete is held");
    assert_eq!(
        api.inner().content(Space::Shared, None, "a").as_deref(),
        Some(b"moved".as_slice()),
        "the new a waits for the old one's delete"
    );
    api.unhold(ApiMethod::Delete);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        tree(&api),
        files(&[("a", Some(b"new".as_slice())), ("b", Some(b"moved"))])
    );
    assert_eq!(api.calls(ApiMethod::Delete), 1);
}

/// `mkdir d; rmdir d` on this mount, its create landed, then the daemon dies before d's delete
/// was sent: the next mount still knows d's placeholder (the pending delete names it), hides d
/// even in the root listing its probe read from the API itself (server ids), and deletes the
/// folder on the server.
#[test]
fn a_folder_made_here_and_removed_is_deleted_after_a_crash() {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let fs = rt.block_on(async {
        let fs = mount(&api, cache.path());
        tokio::time::timeout(
            Duration::from_secs(1),
            fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755),
        )
        .await
        .expect("mkdir waited")
        .expect("mkdir");
        assert!(fs.wait_uploads().await.failed.is_empty());
        assert_eq!(tree(&api).len(), 1, "d made");
        api.hold(ApiMethod::Delete, None);
        rmdir(&fs, ROOT_INO, "d").await;
        assert!(shown(&fs, ROOT_INO).await.is_empty());
        fs
    });
    drop(rt);
    drop(fs);
    api.unhold(ApiMethod::Delete);
    assert_eq!(tree(&api).len(), 1, "d is still on the server");

    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    let rt = runtime();
    rt.block_on(async {
        // As the mount does: the probe's root page, read from the API before mounting.
        let probe = std::time::Instant::now();
        let root =
            crate::api::paging::folder_pages(api.inner().as_ref(), Space::Shared, None, None)
                .await
                .expect("probe");
        assert_eq!(root.items.len(), 1);
        fs.seed_root_listing(root, probe);
        assert!(shown(&fs, ROOT_INO).await.is_empty(), "hidden at once");
        fs.recover().await.expect("recover");
        assert!(fs.wait_uploads().await.failed.is_empty());
        assert!(tree(&api).is_empty(), "{:?}", tree(&api));
    });
}

/// `rm a; echo new > a`, the old `a`'s delete held (slow, or retried through an outage), and
/// the new `a`'s upload started: it waits for the name `a` until that delete lands. Returns the
/// new `a`'s inode and the upload's task.
async fn new_file_waiting_for_its_name(
    api: &Server,
    fs: &Arc<VagonFs>,
) -> (u64, tokio::task::JoinHandle<FsResult<()>>) {
    api.inner().add_file(Space::Shared, None, "a", b"old");
    fs.dirs.invalidate_all();
    walk(fs, "a").await.expect("a");
    api.hold(ApiMethod::Delete, None);
    unlink(fs, ROOT_INO, "a").await;
    let (a, closed) = put(fs, ROOT_INO, "a", b"new").await;
    closed.expect("close");
    // The upload of the new `a` starts (as the engine's or an fsync's) and waits for the name.
    let fs2 = Arc::clone(fs);
    let upload = tokio::spawn(async move { fs2.upload_ino(a).await });
    let file = fs.spooled_file(a).expect("spooled");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !file.is_uploading() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the upload started");
    (a, upload)
}

/// Once the held delete is let go: the upload task ended, nothing failed, and the server holds
/// `expected`.
async fn after_the_delete(
    api: &Server,
    fs: &VagonFs,
    upload: tokio::task::JoinHandle<FsResult<()>>,
    expected: &[(&str, Option<&[u8]>)],
) {
    api.unhold(ApiMethod::Delete);
    tokio::time::timeout(Duration::from_secs(10), upload)
        .await
        .expect("the upload ended")
        .expect("join")
        .expect("upload");
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(tree(api), files(expected));
}

/// `rm a; echo new > a; mv a b` while the server has not deleted the old `a` yet: the move
/// must not wait for the new `a`'s upload, which waits for the name `a` (it only re-targets a
/// file never uploaded). The upload that waited goes to `b` at once (nothing holds that name).
#[tokio::test]
async fn a_move_does_not_wait_for_an_upload_waiting_for_its_name() {
    let (api, _cache, fs) = setup();
    let (_, upload) = new_file_waiting_for_its_name(&api, &fs).await;
    tokio::time::timeout(
        Duration::from_secs(2),
        fs.rename(ROOT_INO, OsStr::new("a"), ROOT_INO, OsStr::new("b"), 0),
    )
    .await
    .expect("the move waited for the old a's delete")
    .expect("mv a b");
    assert_eq!(read_path(&fs, "b").await, b"new");
    after_the_delete(&api, &fs, upload, &[("b", Some(b"new"))]).await;
}

/// The same new `a`, removed again (`rm a`), or replaced by a move onto it (`mv c a`): neither
/// waits for its upload, which waits for the name and has sent nothing; that upload then stops.
#[tokio::test]
async fn a_file_waiting_for_its_name_is_removed_or_replaced_at_once() {
    for replace in [false, true] {
        let (api, _cache, fs) = setup();
        api.inner().add_file(Space::Shared, None, "c", b"c");
        walk(&fs, "c").await.expect("c");
        let (_, upload) = new_file_waiting_for_its_name(&api, &fs).await;
        let expected: &[(&str, Option<&[u8]>)] = if replace {
            tokio::time::timeout(
                Duration::from_secs(2),
                fs.rename(ROOT_INO, OsStr::new("c"), ROOT_INO, OsStr::new("a"), 0),
            )
            .await
            .expect("the move waited for the old a's delete")
            .expect("mv c a");
            assert_eq!(read_path(&fs, "a").await, b"c");
            &[("a", Some(b"c"))]
        } else {
            tokio::time::timeout(Duration::from_secs(2), fs.unlink(ROOT_INO, OsStr::new("a")))
                .await
                .expect("rm waited for the old a's delete")
                .expect("rm a");
            &[("c", Some(b"c"))]
        };
        after_the_delete(&api, &fs, upload, expected).await;
    }
}
