//! Recovery of the write path against the in-memory [`MemApi`] double: an earlier run's
//! spools after a crash are uploaded, or kept both ways as a conflict copy when the remote
//! changed meanwhile, never uploaded twice, never beside a live upload of the same name, and
//! left alone while open or claimed; the spool folder's life: one mount per folder, leftovers
//! without data cleaned, clean spools removed on close, dirty ones kept, renames, mount keys.
//! (Split from `uploader.rs`, whose helpers it shares.)

use std::sync::Arc;
use std::time::Duration;

use crate::api::{FilesApi, Space};

use crate::api::faulty::{ApiMethod, Fault};
use crate::api::mem::MemApi;
use crate::fs::write::*;

use super::uploader::{
    HANG_GUARD, SPACE, env, errno_of, random_bytes, records, retries_exhausted, server,
    spool_files, target,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_upload_then_recover_uploads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool_dir = tmp.path().join("m");
    let (api, faulty, dyn_api) = server();
    let data = random_bytes(3 * MIB as usize + 5, 14);
    {
        let dir = SpoolDir::open(&spool_dir).expect("dir");
        let uploader =
            Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new()).with_chunk_size_mb(1);
        let f = SpooledFile::create_new(&dir, target("crash.bin"))
            .await
            .expect("create");
        f.write(0, &data[..]).await.expect("write");
        faulty.hold(ApiMethod::UploadPart, None);
        let (f2, up) = (Arc::clone(&f), uploader.clone());
        let task = tokio::spawn(async move { f2.upload(&up).await });
        tokio::time::timeout(HANG_GUARD, faulty.wait_arrivals(ApiMethod::UploadPart, 2))
            .await
            .expect("parts sent");
        // The "crash": the upload future is dropped mid-flight and the mount goes away.
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        assert_eq!(
            uploader.registry().recent()[0].state,
            UploadState::Cancelled
        );
        let recs = records(&dir);
        assert_eq!(recs.len(), 1);
        assert_eq!(
            recs[0].state,
            JournalState::Uploading,
            "the journal says not done"
        );
        drop(f);
        drop(dir);
    }
    assert!(api.entry(SPACE, None, "crash.bin").is_none());
    faulty.unhold(ApiMethod::UploadPart);
    // The next mount.
    let dir = SpoolDir::open(&spool_dir).expect("dir again");
    let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new()).with_chunk_size_mb(1);
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].action,
        RecoveryAction::Upload { overwrite: false }
    );
    assert_eq!(pending[0].record.name, "crash.bin");
    let done = pending
        .into_iter()
        .next()
        .expect("one")
        .run(&uploader)
        .await
        .expect("recovered upload");
    assert_eq!(done.uploaded.size, data.len() as u64);
    assert_eq!(done.conflict_copy, None);
    assert_eq!(api.content(SPACE, None, "crash.bin").expect("listed"), data);
    assert!(records(&dir).is_empty());
    assert_eq!(spool_files(&dir), 0);
    // Nothing left for a third mount.
    assert!(
        recover(&dir, dyn_api.as_ref())
            .await
            .expect("recover")
            .is_empty()
    );
}

#[tokio::test]
async fn recover_makes_a_conflict_copy_when_the_remote_changed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool_dir = tmp.path().join("m");
    let (api, _faulty, dyn_api) = server();
    let folder = api.add_dir(SPACE, None, "Projects");
    let entry = api.put_file(SPACE, Some(folder), "report.txt", b"the original text");
    let tgt = FileTarget {
        space: SPACE,
        parent_id: Some(folder),
        name: "report.txt".into(),
        display_path: "Projects/report.txt".into(),
    };
    {
        let dir = SpoolDir::open(&spool_dir).expect("dir");
        let f = SpooledFile::open_existing(
            &dir,
            tgt,
            RemoteBase::from_entry(&entry),
            ApiRemote::new(Arc::clone(&dyn_api), entry.id),
        )
        .expect("open");
        f.write(4, b"EDITED").await.expect("write");
        // Crash before any flush: the dirty spool and its record stay.
        drop(f);
        drop(dir);
    }
    // Meanwhile someone else changes the file.
    api.put_file(SPACE, Some(folder), "report.txt", b"their newer text");
    let dir = SpoolDir::open(&spool_dir).expect("dir again");
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(pending.len(), 1);
    let RecoveryAction::ConflictCopy { parent_id, name } = &pending[0].action else {
        panic!("expected a conflict copy, got {:?}", pending[0].action);
    };
    assert_eq!(*parent_id, Some(folder));
    assert!(
        name.starts_with("report (conflict ") && name.ends_with(").txt"),
        "{name}"
    );
    let name = name.clone();
    let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new());
    pending
        .into_iter()
        .next()
        .expect("one")
        .run(&uploader)
        .await
        .expect("upload");
    assert_eq!(
        api.content(SPACE, Some(folder), "report.txt")
            .expect("theirs"),
        b"their newer text"
    );
    assert_eq!(
        api.content(SPACE, Some(folder), &name).expect("ours"),
        b"the EDITEDal text"
    );
    assert!(records(&dir).is_empty());
}

#[tokio::test]
async fn recover_overwrites_when_the_remote_is_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (api, _faulty, dyn_api) = server();
    let entry = api.put_file(SPACE, None, "same.txt", b"abcdef");
    {
        let dir = SpoolDir::open(tmp.path()).expect("dir");
        let f = SpooledFile::open_existing(
            &dir,
            target("same.txt"),
            RemoteBase::from_entry(&entry),
            ApiRemote::new(Arc::clone(&dyn_api), entry.id),
        )
        .expect("open");
        f.set_len(3).await.expect("truncate");
        drop(f);
    }
    let dir = SpoolDir::open(tmp.path()).expect("dir");
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(
        pending[0].action,
        RecoveryAction::Upload { overwrite: true }
    );
    let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new());
    pending
        .into_iter()
        .next()
        .expect("one")
        .run(&uploader)
        .await
        .expect("upload");
    assert_eq!(
        api.content(SPACE, None, "same.txt").expect("listed"),
        b"abc"
    );
    assert_eq!(api.names(SPACE, None), vec!["same.txt".to_string()]);
}

#[tokio::test]
async fn recover_recognises_an_upload_that_completed_before_the_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (api, _faulty, dyn_api) = server();
    let id;
    {
        let dir = SpoolDir::open(tmp.path()).expect("dir");
        let f = SpooledFile::create_new(&dir, target("done.txt"))
            .await
            .expect("create");
        f.write(0, b"complete").await.expect("write");
        // Upload directly, as if the crash came between complete and the journal update:
        // the record is left saying `uploading` with this attempt's id.
        let ticket = UploadRegistry::new().register("done.txt", f.len());
        let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new());
        let tgt = UploadTarget {
            space: SPACE,
            parent_id: None,
            name: "done.txt".into(),
            content_type: None,
            overwrite: false,
        };
        id = uploader
            .upload_tracked(f.spool().part_source(), &tgt, &ticket, None)
            .await
            .expect("upload")
            .id;
        let mut rec = records(&dir).pop().expect("record");
        rec.state = JournalState::Uploading;
        rec.pending_upload_id = Some(id);
        // What `SpooledFile::upload` journals when it starts.
        rec.size = f.len();
        rec.generation = f.generation();
        rec.write_atomic(&dir).expect("write record");
        drop(f);
    }
    let dir = SpoolDir::open(tmp.path()).expect("dir");
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert!(pending.is_empty(), "nothing to upload: {pending:?}");
    assert!(records(&dir).is_empty());
    assert_eq!(spool_files(&dir), 0);
    assert_eq!(api.names(SPACE, None), vec!["done.txt".to_string()]);
    assert_eq!(api.entry(SPACE, None, "done.txt").expect("listed").id, id);
}

#[tokio::test]
async fn recover_skips_what_it_cannot_check_and_stops_when_the_service_is_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (api, faulty, dyn_api) = server();
    {
        let dir = SpoolDir::open(tmp.path()).expect("dir");
        let gone = FileTarget {
            space: Space::Machine(99),
            parent_id: None,
            name: "lost.txt".into(),
            display_path: "lost.txt".into(),
        };
        let f = SpooledFile::create_new(&dir, gone).await.expect("create");
        f.write(0, b"on a deleted machine").await.expect("write");
        let g = SpooledFile::create_new(&dir, target("fine.txt"))
            .await
            .expect("create");
        g.write(0, b"fine").await.expect("write");
    }
    let dir = SpoolDir::open(tmp.path()).expect("dir");
    // Down: nothing decided, nothing changed.
    faulty.set_fail_rate(
        Some(ApiMethod::ListFiles),
        1.0,
        Fault::Error(retries_exhausted()),
    );
    let err = recover(&dir, dyn_api.as_ref())
        .await
        .expect_err("service down");
    assert_eq!(errno_of(err), libc::EIO);
    assert_eq!(records(&dir).len(), 2);
    // Up again, but machine 99 is gone: that record is kept, the other one goes ahead.
    faulty.set_fail_rate(Some(ApiMethod::ListFiles), 0.0, Fault::Unavailable);
    api.remove_machine(99);
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].record.name, "fine.txt");
    let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new());
    pending
        .into_iter()
        .next()
        .expect("one")
        .run(&uploader)
        .await
        .expect("upload");
    let left = records(&dir);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "lost.txt");
    assert_eq!(spool_files(&dir), 1);
}

/// Recovery of an earlier run's spool for `same.txt` and this run's own upload of a new
/// `same.txt` never run side by side: recovery waits for the name, looks again, and keeps both
/// (its bytes go to a conflict copy) instead of meeting 409 or replacing the newer file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_waits_for_a_live_upload_of_the_same_name_and_keeps_both() {
    let e = env(1, 2);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    // An earlier run's spool: its upload failed (quota), so it is kept with its record.
    let left = SpooledFile::create_new(&e.dir, target("same.txt"))
        .await
        .expect("create");
    left.write(0, b"recovered").await.expect("write");
    e.mem.set_quota(1);
    assert!(left.upload(&e.uploader).await.is_err());
    drop(left);
    e.mem.set_quota(1 << 30);
    let pending = recover(&e.dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].action,
        RecoveryAction::Upload { overwrite: false },
        "nothing there when recovery looked"
    );
    // Meanwhile this run writes a new `same.txt`; its part is held on the wire.
    let live = SpooledFile::create_new(&e.dir, target("same.txt"))
        .await
        .expect("create");
    live.write(0, b"live").await.expect("write");
    e.api.hold(ApiMethod::UploadPart, None);
    let (f, up) = (Arc::clone(&live), e.uploader.clone());
    let live_task = tokio::spawn(async move { f.upload(&up).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 1))
        .await
        .expect("live part sent");
    let up = e.uploader.clone();
    let p = pending.into_iter().next().expect("one");
    let recovery = tokio::spawn(async move { p.run(&up).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!recovery.is_finished(), "recovery waits for the name");
    assert_eq!(e.uploader.names_held(), 1);
    e.api.unhold(ApiMethod::UploadPart);
    live_task
        .await
        .expect("joined")
        .expect("live upload")
        .expect("dirty");
    let recovered = tokio::time::timeout(HANG_GUARD, recovery)
        .await
        .expect("recovery ends")
        .expect("joined")
        .expect("recovered");
    let copy = recovered.conflict_copy.expect("a conflict copy");
    assert!(copy.starts_with("same (conflict "), "{copy}");
    assert_eq!(
        e.mem.content(SPACE, None, "same.txt").expect("live"),
        b"live"
    );
    assert_eq!(
        e.mem.content(SPACE, None, &copy).expect("copy"),
        b"recovered"
    );
    assert_eq!(e.uploader.names_held(), 0);
}

#[tokio::test]
async fn recover_leaves_open_files_and_claimed_spools_alone() {
    let e = env(1, 2);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let open = SpooledFile::create_new(&e.dir, target("open.txt"))
        .await
        .expect("create");
    open.write(0, b"still being written").await.expect("write");
    assert!(
        recover(&e.dir, dyn_api.as_ref())
            .await
            .expect("recover")
            .is_empty(),
        "in use"
    );
    // Closed with its upload failed: the kept spool is picked up by a later call.
    e.mem.set_quota(1);
    assert!(open.upload(&e.uploader).await.is_err());
    drop(open);
    e.mem.set_quota(1 << 30);
    let first = recover(&e.dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(first.len(), 1);
    // While that one is pending, a second call does not hand it out again.
    assert!(
        recover(&e.dir, dyn_api.as_ref())
            .await
            .expect("recover")
            .is_empty()
    );
    first
        .into_iter()
        .next()
        .expect("one")
        .run(&e.uploader)
        .await
        .expect("upload");
    assert_eq!(
        e.mem.content(SPACE, None, "open.txt").expect("listed"),
        b"still being written"
    );
}

#[tokio::test]
async fn recover_puts_a_copy_at_the_root_when_the_folder_is_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (api, _faulty, dyn_api) = server();
    let folder = api.add_dir(SPACE, None, "Gone");
    {
        let dir = SpoolDir::open(tmp.path()).expect("dir");
        let tgt = FileTarget {
            space: SPACE,
            parent_id: Some(folder),
            name: "a.md".into(),
            display_path: "Gone/a.md".into(),
        };
        let f = SpooledFile::create_new(&dir, tgt).await.expect("create");
        f.write(0, b"# keep me").await.expect("write");
        drop(f);
    }
    api.delete(folder).await.expect("delete folder");
    let dir = SpoolDir::open(tmp.path()).expect("dir");
    let pending = recover(&dir, dyn_api.as_ref()).await.expect("recover");
    assert!(matches!(
        &pending[0].action,
        RecoveryAction::ConflictCopy {
            parent_id: None,
            ..
        }
    ));
    let uploader = Uploader::new(Arc::clone(&dyn_api), UploadRegistry::new());
    pending
        .into_iter()
        .next()
        .expect("one")
        .run(&uploader)
        .await
        .expect("upload");
    let names = api.names(SPACE, None);
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("a (conflict "), "{names:?}");
}

#[tokio::test]
async fn a_second_mount_of_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = SpoolDir::open(tmp.path()).expect("first");
    let err = SpoolDir::open(tmp.path()).expect_err("busy");
    assert!(matches!(err, WriteError::CacheBusy(_)));
    // The lock file names its holder, for the second mount's message.
    assert_eq!(lock_holder(tmp.path()), Some(std::process::id()));
    drop(first);
    SpoolDir::open(tmp.path()).expect("free again");
}

#[tokio::test]
async fn open_cleans_leftovers_without_data_to_upload() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let dir = SpoolDir::open(tmp.path()).expect("dir");
        std::fs::write(dir.path().join("aaaa.spool"), b"clean leftover").expect("spool");
        std::fs::write(dir.path().join("bbbb.journal.json.tmp"), b"{").expect("tmp");
        std::fs::write(dir.path().join("cccc.spool"), b"dirty").expect("spool");
        std::fs::write(dir.path().join("cccc.journal.json"), b"not json").expect("bad record");
    }
    let dir = SpoolDir::open(tmp.path()).expect("dir");
    assert!(!dir.path().join("aaaa.spool").exists());
    assert!(!dir.path().join("bbbb.journal.json.tmp").exists());
    // A damaged record is never deleted with its bytes: left for a person to look at.
    assert!(dir.path().join("cccc.spool").exists());
    let api = MemApi::new();
    assert!(
        recover(&dir, api.as_ref())
            .await
            .expect("recover")
            .is_empty()
    );
    assert!(dir.path().join("cccc.journal.json").exists());
}

#[tokio::test]
async fn clean_spools_are_removed_on_close_and_dirty_ones_kept() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("a"))
        .await
        .expect("create");
    f.write(0, b"1").await.expect("write");
    f.upload(&e.uploader).await.expect("upload");
    drop(f);
    assert_eq!(spool_files(&e.dir), 0);
    let g = SpooledFile::create_new(&e.dir, target("b"))
        .await
        .expect("create");
    g.write(0, b"2").await.expect("write");
    drop(g);
    assert_eq!(spool_files(&e.dir), 1);
    assert_eq!(records(&e.dir).len(), 1);
}

#[tokio::test]
async fn discard_forgets_the_file() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("gone.txt"))
        .await
        .expect("create");
    f.write(0, b"bytes").await.expect("write");
    f.discard().await.expect("discard");
    assert!(records(&e.dir).is_empty());
    assert_eq!(spool_files(&e.dir), 0);
    // Still usable through the open descriptor (POSIX unlink semantics), never uploaded.
    f.write(5, b"!").await.expect("write after unlink");
    assert_eq!(&f.read(0, 10).await.expect("read")[..], b"bytes!");
    assert_eq!(f.upload(&e.uploader).await.expect("noop"), None);
    assert!(records(&e.dir).is_empty());
    assert!(e.mem.creates().is_empty());
}

#[tokio::test]
async fn rename_uploads_under_the_new_name() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("draft.txt"))
        .await
        .expect("create");
    f.write(0, b"text").await.expect("write");
    f.upload(&e.uploader).await.expect("upload");
    let old = f.base().expect("uploaded");
    f.retarget(target("final.txt"), None)
        .await
        .expect("retarget");
    assert!(f.is_dirty());
    assert_eq!(records(&e.dir)[0].name, "final.txt");
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    e.mem.delete(old.id).await.expect("delete old");
    assert_eq!(e.mem.names(SPACE, None), vec!["final.txt".to_string()]);
    assert_eq!(
        e.mem.content(SPACE, None, "final.txt").expect("listed"),
        b"text"
    );
}

#[tokio::test]
async fn rename_of_a_clean_remote_file_copies_it() {
    let e = env(1, 2);
    let data = random_bytes(MIB as usize + 9, 15);
    let entry = e.mem.put_file(SPACE, None, "src.bin", &data);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    // No move in the API: a copy from the old file under the new name, then delete.
    let f = SpooledFile::open_existing(
        &e.dir,
        target("dst.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(dyn_api, entry.id),
    )
    .expect("open");
    f.retarget(target("dst.bin"), None).await.expect("retarget");
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    e.mem.delete(entry.id).await.expect("delete");
    assert_eq!(e.mem.names(SPACE, None), vec!["dst.bin".to_string()]);
    assert_eq!(e.mem.content(SPACE, None, "dst.bin").expect("listed"), data);
}

#[tokio::test]
async fn recordings_are_not_writable() {
    let e = env(1, 2);
    let tgt = FileTarget {
        space: Space::Recordings { machine: None },
        parent_id: None,
        name: "x.mp4".into(),
        display_path: "x.mp4".into(),
    };
    let err = SpooledFile::create_new(&e.dir, tgt)
        .await
        .expect_err("read-only");
    assert_eq!(errno_of(err), libc::EROFS);
    assert_eq!(spool_files(&e.dir), 0);
}

#[test]
fn mount_keys_differ_by_target_and_endpoint() {
    use crate::fs::RootSpec;
    let a = mount_key(&RootSpec::Space(Space::Machine(3)), "https://api.vagon.io");
    assert!(a.starts_with("machine-3-"));
    assert_eq!(
        a,
        mount_key(&RootSpec::Space(Space::Machine(3)), "https://api.vagon.io")
    );
    assert_ne!(
        a,
        mount_key(&RootSpec::Space(Space::Machine(3)), "http://127.0.0.1:8080")
    );
    assert_ne!(
        a,
        mount_key(&RootSpec::Space(Space::Machine(4)), "https://api.vagon.io")
    );
    assert!(mount_key(&RootSpec::All, "x").starts_with("all-"));
    assert!(mount_key(&RootSpec::Space(Space::Shared), "x").starts_with("shared-"));
    let base = std::path::Path::new("/c/vagonfs");
    assert_eq!(mount_cache_dir(base, &a), base.join(&a));
}

/// Recovery overwrites a file whose server version is still the one the spool started from,
/// but another client lands its version while recovery's parts are on the wire: both are kept.
/// The check is just before `complete`, as for a running file's upload (made before the
/// transfer, the later `complete` replaced the other version unseen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_keeps_a_version_another_client_landed_during_its_upload() {
    let e = env(1, 2);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let entry = e.mem.put_file(SPACE, None, "shared.bin", b"base");
    let mine = random_bytes(2 << 20, 9);
    {
        let f = SpooledFile::open_existing(
            &e.dir,
            target("shared.bin"),
            RemoteBase::from_entry(&entry),
            ApiRemote::new(Arc::clone(&dyn_api), entry.id),
        )
        .expect("open");
        f.write(0, &mine[..]).await.expect("write");
        drop(f);
    }
    let pending = recover(&e.dir, dyn_api.as_ref()).await.expect("recover");
    assert_eq!(
        pending[0].action,
        RecoveryAction::Upload { overwrite: true }
    );
    e.api.hold(ApiMethod::UploadPart, None);
    let up = e.uploader.clone();
    let p = pending.into_iter().next().expect("one");
    let recovery = tokio::spawn(async move { p.run(&up).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 1))
        .await
        .expect("a part sent");
    e.mem.put_file(SPACE, None, "shared.bin", b"theirs");
    e.api.unhold(ApiMethod::UploadPart);
    let recovered = tokio::time::timeout(HANG_GUARD, recovery)
        .await
        .expect("recovery ends")
        .expect("joined")
        .expect("recovered");
    let copy = recovered.conflict_copy.expect("a conflict copy");
    assert!(copy.starts_with("shared (conflict "), "{copy}");
    assert_eq!(
        e.mem.content(SPACE, None, "shared.bin").expect("theirs"),
        b"theirs"
    );
    assert!(e.mem.content(SPACE, None, &copy).expect("copy") == mine);
    assert!(records(&e.dir).is_empty(), "nothing left to recover");
}

/// A truncate while an upload sends the parts of the longer bytes: the attempt finds the spool
/// shorter than its length (a short read). That is no failure of the spool: the bytes as they
/// are now go instead, in the same call, and the file ends clean. (Found by the model test: the
/// upload failed as a local I/O error, retried only every 5 minutes, a moved file left
/// unsent meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_during_an_upload_sends_the_shorter_bytes() {
    let e = env(1, 1);
    let data = random_bytes(3 * MIB as usize, 21);
    let f = SpooledFile::create_new(&e.dir, target("shrunk.bin"))
        .await
        .expect("create");
    f.write(0, &data[..]).await.expect("write");
    e.api.hold(ApiMethod::UploadPart, None);
    let (f2, up) = (Arc::clone(&f), e.uploader.clone());
    let task = tokio::spawn(async move { f2.upload(&up).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 1))
        .await
        .expect("the first part is sent");
    f.set_len(10).await.expect("truncate");
    e.api.unhold(ApiMethod::UploadPart);
    let done = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("the upload ended")
        .expect("joined")
        .expect("the upload sends the new bytes")
        .expect("dirty");
    assert_eq!(done.size, 10);
    assert_eq!(
        e.mem.content(SPACE, None, "shrunk.bin").expect("listed"),
        &data[..10]
    );
    assert!(!f.is_dirty(), "nothing left to send");
    assert!(records(&e.dir).is_empty(), "{:?}", records(&e.dir));
}
