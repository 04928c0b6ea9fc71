//! mkdir answered before the server has the folder (`new_folders.rs`), against the in-memory
//! double behind the fault injector: what is written inside lands once the folder is made, a
//! name taken meanwhile on the server, retries, and a crash before the folder was made.
//! Requests are counted, never timed (the one bound, "mkdir did not wait for a held create",
//! is a hang guard of a second).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::{ApiMethod, Fault};
use crate::api::{FilesApi, ObjectType};
use crate::fs::engine::WriteBack;
use crate::fs::*;

use super::core::{Server, server};
use super::driver::{config, list, put, read_path, walk};

/// A mount of the shared storage with spools under `cache` and uploads in the background.
pub(super) fn mount(api: &Arc<Server>, cache: &std::path::Path) -> Arc<VagonFs> {
    let mut cfg = config(cache, 1);
    cfg.write_back = WriteBack::default();
    VagonFs::new(
        Arc::clone(api) as Arc<dyn FilesApi>,
        RootSpec::Space(Space::Shared),
        cfg,
    )
}

/// The server, the cache folder and a mount of it.
pub(super) fn setup() -> (Arc<Server>, tempfile::TempDir, Arc<VagonFs>) {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = mount(&api, cache.path());
    (api, cache, fs)
}

/// A daemon's runtime: dropping it stops every task of the mount where it stands (a crash).
pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn mkdir(fs: &VagonFs, parent: u64, name: &str) -> u64 {
    let made = tokio::time::timeout(
        Duration::from_secs(1),
        fs.mkdir(parent, OsStr::new(name), 0o755),
    )
    .await
    .expect("mkdir waited on the server");
    made.expect("mkdir").attr.ino
}

pub(super) fn tree(api: &Server) -> BTreeMap<String, Option<Vec<u8>>> {
    api.inner().tree(Space::Shared)
}

#[tokio::test]
async fn mkdir_answers_before_the_server_and_what_is_written_inside_lands() {
    let (api, _cache, fs) = setup();
    api.hold(ApiMethod::Create, None);
    let a = mkdir(&fs, ROOT_INO, "a").await;
    let b = mkdir(&fs, a, "b").await;
    let (_, closed) = tokio::time::timeout(Duration::from_secs(1), put(&fs, b, "f", b"hello"))
        .await
        .expect("close waited on the server");
    closed.expect("close");
    assert!(tree(&api).is_empty(), "nothing reached the server yet");
    assert_eq!(read_path(&fs, "a/b/f").await, b"hello");

    api.unhold(ApiMethod::Create);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    let want: BTreeMap<String, Option<Vec<u8>>> = [
        ("a".to_string(), None),
        ("a/b".to_string(), None),
        ("a/b/f".to_string(), Some(b"hello".to_vec())),
    ]
    .into();
    assert_eq!(tree(&api), want);
    // One create per folder and per file, nothing asked twice; one listing: the root's, for
    // the first mkdir's check that the name is free (a new folder is known to be empty).
    let creates = api.inner().creates();
    assert_eq!(creates.len(), 3, "{creates:?}");
    assert_eq!(api.calls(ApiMethod::ListFiles), 1);

    // Listed again, the folders are the same inodes (the server's ids are shown as the ids
    // mkdir gave them).
    fs.dirs.invalidate_all();
    for dir in [ROOT_INO, a, b] {
        list(&fs, dir).await;
    }
    let lists = api.calls(ApiMethod::ListFiles);
    assert!(lists >= 4, "listed from the server: {lists}");
    assert_eq!(walk(&fs, "a").await.expect("a").attr.ino, a);
    assert_eq!(walk(&fs, "a/b").await.expect("a/b").attr.ino, b);
    assert_eq!(read_path(&fs, "a/b/f").await, b"hello");
    // rmdir of a made folder deletes the server's.
    fs.unlink(b, OsStr::new("f")).await.expect("unlink");
    fs.rmdir(a, OsStr::new("b")).await.expect("rmdir");
    assert!(fs.wait_uploads().await.failed.is_empty());
    assert_eq!(api.inner().names(Space::Shared, None), ["a"]);
    let a_id = api.inner().entry(Space::Shared, None, "a").expect("a").id;
    assert!(api.inner().names(Space::Shared, Some(a_id)).is_empty());
}

/// Another client made a folder of the name before this mount's create arrived: it is used
/// (what `mkdir -p` does), and what is written here lands in it. A file that took the name is
/// left alone: the folder is made beside it as a conflict copy.
#[tokio::test]
async fn a_name_taken_on_the_server_meanwhile_is_merged_or_kept_beside() {
    let (api, _cache, fs) = setup();
    api.hold(ApiMethod::Create, None);
    let x = mkdir(&fs, ROOT_INO, "x").await;
    let y = mkdir(&fs, ROOT_INO, "y").await;
    put(&fs, x, "mine", b"m").await.1.expect("close");
    put(&fs, y, "inside", b"i").await.1.expect("close");
    let theirs = api.inner().add_dir(Space::Shared, None, "x");
    api.inner()
        .add_file(Space::Shared, Some(theirs), "theirs", b"t");
    api.inner().add_file(Space::Shared, None, "y", b"file");
    api.unhold(ApiMethod::Create);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");

    let t = tree(&api);
    assert_eq!(t.get("x"), Some(&None));
    assert_eq!(t.get("x/theirs"), Some(&Some(b"t".to_vec())));
    assert_eq!(t.get("x/mine"), Some(&Some(b"m".to_vec())));
    assert_eq!(
        t.get("y"),
        Some(&Some(b"file".to_vec())),
        "the file is kept"
    );
    let copy: Vec<_> = api
        .inner()
        .names(Space::Shared, None)
        .into_iter()
        .filter(|n| n.starts_with("y (conflict "))
        .collect();
    assert_eq!(copy.len(), 1, "{t:?}");
    let copy_id = api
        .inner()
        .entry(Space::Shared, None, &copy[0])
        .expect("copy");
    assert_eq!(copy_id.object_type, ObjectType::Directory);
    assert_eq!(
        api.inner()
            .content(Space::Shared, Some(copy_id.id), "inside"),
        Some(b"i".to_vec())
    );
}

/// Creates that fail as a network failure does are tried again; `vagonfs sync` (here
/// `wait_uploads`) hurries them and reports the folder until it is made.
#[tokio::test]
async fn a_folder_whose_create_fails_for_a_while_is_made_later() {
    let (api, _cache, fs) = setup();
    api.fail_next(ApiMethod::Create, 2, Fault::Transport);
    let z = mkdir(&fs, ROOT_INO, "z").await;
    put(&fs, z, "f", b"data").await.1.expect("close");
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        api.inner().tree(Space::Shared).get("z/f"),
        Some(&Some(b"data".to_vec()))
    );
    assert_eq!(
        api.counters(ApiMethod::Create).calls,
        4,
        "2 failed, folder, file"
    );
}

/// The daemon dies before the server made the folder: the next mount makes it, and uploads
/// the file journaled inside it there. A folder whose create landed just before the crash is
/// found, not made twice.
#[test]
fn folders_not_made_before_a_crash_are_made_at_the_next_mount() {
    crash_before_the_folders_are_made_then(Next::Recover);
}

/// The same crash; at the next mount `vagonfs sync` comes before the mount's background
/// recovery started: it runs recovery's first round itself, so it does not answer "everything
/// is uploaded" before the folders and the file are on the server.
#[test]
fn a_sync_right_after_the_mount_waits_for_what_recovery_uploads() {
    crash_before_the_folders_are_made_then(Next::Sync);
}

enum Next {
    Recover,
    Sync,
}

fn crash_before_the_folders_are_made_then(next: Next) {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let fs = rt.block_on(async {
        let fs = mount(&api, cache.path());
        api.hold(ApiMethod::Create, None);
        let d = mkdir(&fs, ROOT_INO, "d").await;
        let e = mkdir(&fs, d, "e").await;
        put(&fs, e, "f", b"unsaved").await.1.expect("close");
        fs
    });
    // The create of `d` lands on the server, its answer is lost with the daemon.
    drop(rt);
    drop(fs);
    api.unhold(ApiMethod::Create);
    api.inner().add_dir(Space::Shared, None, "d");

    // As the mount does: the spool folder (and the log in it) is opened before the runtime runs.
    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    let rt = runtime();
    rt.block_on(async {
        match next {
            Next::Recover => {
                let report = fs.recover().await.expect("recover");
                assert_eq!(report.uploaded.len(), 1, "{report:?}");
                assert!(report.failed.is_empty(), "{report:?}");
            }
            Next::Sync => {
                let report = fs.wait_uploads().await;
                assert!(report.failed.is_empty(), "{report:?}");
                // The background recovery, later, finds nothing left.
                let report = fs.recover().await.expect("recover");
                assert_eq!(report, RecoveryReport::default());
            }
        }
        let want: BTreeMap<String, Option<Vec<u8>>> = [
            ("d".to_string(), None),
            ("d/e".to_string(), None),
            ("d/e/f".to_string(), Some(b"unsaved".to_vec())),
        ]
        .into();
        assert_eq!(tree(&api), want);
        assert_eq!(read_path(&fs, "d/e/f").await, b"unsaved");
    });
}

/// A crash with a folder made and a folder inside it not made yet, and nothing else unsaved:
/// the next mount still knows the made one, and makes the other inside it.
#[test]
fn a_folder_inside_a_made_one_is_made_after_a_crash() {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let fs = rt.block_on(async {
        let fs = mount(&api, cache.path());
        let d = mkdir(&fs, ROOT_INO, "d").await;
        let Some(node) = fs.inodes.get(d) else {
            panic!("d has no inode")
        };
        let Loc::Remote { id, .. } = node.loc else {
            panic!("d at {:?}", node.loc)
        };
        fs.folders.made(id).await.expect("d made");
        api.hold(ApiMethod::Create, None);
        mkdir(&fs, d, "e").await;
        fs
    });
    drop(rt);
    drop(fs);
    api.unhold(ApiMethod::Create);
    assert_eq!(tree(&api), [("d".to_string(), None)].into());

    let fs = mount(&api, cache.path());
    fs.open_spool_dir().expect("spool folder");
    let rt = runtime();
    rt.block_on(async {
        let report = fs.recover().await.expect("recover");
        assert!(report.failed.is_empty(), "{report:?}");
        let want: BTreeMap<String, Option<Vec<u8>>> =
            [("d".to_string(), None), ("d/e".to_string(), None)].into();
        assert_eq!(tree(&api), want);
    });
}
