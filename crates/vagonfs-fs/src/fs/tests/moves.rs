//! rename(2) of a folder on the server (`rename.rs`), against the in-memory double behind the
//! fault injector, with write-back and with `--sync-close`: its files are moved `--transfers` at
//! a time (counted at a held `complete`, never timed), and the old folder is deleted only when a
//! fresh listing shows nothing the move did not move: a file another client put there during
//! the move stays, with its folder.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::ApiMethod;
use crate::fs::*;

use super::core::{Server, server};
use super::deletes::shown;
use super::driver::{config, read_path, walk};
use super::new_folders::tree;

/// Files moved at once in these tests (`--transfers`).
const TRANSFERS: usize = 3;

fn mount(api: &Arc<Server>, cache: &std::path::Path, sync_close: bool) -> Arc<VagonFs> {
    let mut cfg = config(cache, 1);
    cfg.write_back = WriteBack {
        transfers: TRANSFERS,
        sync_close,
        ..WriteBack::default()
    };
    VagonFs::new(
        Arc::clone(api) as Arc<dyn FilesApi>,
        RootSpec::Space(Space::Shared),
        cfg,
    )
}

/// `mv d e` of `d/{f0..f7, s/{g0,g1}}`: at most [`TRANSFERS`] files in flight (their
/// `complete` held), and `theirs`, put into `d` by another client while the move ran, is kept
/// with `d`; everything else is in `e`, byte for byte.
async fn move_keeps_what_another_client_put_in_the_old_folder(sync_close: bool) {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = mount(&api, cache.path(), sync_close);
    let d = api.inner().add_dir(Space::Shared, None, "d");
    let s = api.inner().add_dir(Space::Shared, Some(d), "s");
    let mut expected = BTreeMap::new();
    expected.insert("e".to_string(), None);
    expected.insert("e/s".to_string(), None);
    for n in 0..8 {
        let data = format!("file {n}").into_bytes();
        api.inner()
            .add_file(Space::Shared, Some(d), &format!("f{n}"), &data);
        expected.insert(format!("e/f{n}"), Some(data));
    }
    for n in 0..2 {
        let data = format!("sub {n}").into_bytes();
        api.inner()
            .add_file(Space::Shared, Some(s), &format!("g{n}"), &data);
        expected.insert(format!("e/s/g{n}"), Some(data));
    }
    walk(&fs, "d/s").await.expect("d/s");
    api.hold(ApiMethod::Complete, None);
    let fs2 = Arc::clone(&fs);
    let rename = tokio::spawn(async move {
        fs2.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("e"), 0)
            .await
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        api.wait_arrivals(ApiMethod::Complete, TRANSFERS),
    )
    .await
    .expect("moves started");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        api.in_flight(ApiMethod::Complete),
        TRANSFERS,
        "files moved --transfers at a time"
    );
    api.inner()
        .add_file(Space::Shared, Some(d), "theirs", b"keep me");
    api.unhold(ApiMethod::Complete);
    tokio::time::timeout(Duration::from_secs(10), rename)
        .await
        .expect("the move ended")
        .expect("joined")
        .expect("rename");
    assert_eq!(api.max_in_flight(ApiMethod::Complete), TRANSFERS);
    // A kept folder is named by `vagonfs sync` only while its delete is pending; it may have
    // been kept already.
    fs.wait_uploads().await;
    assert_eq!(fs.deletes_pending(), 0);
    expected.insert("d".to_string(), None);
    expected.insert("d/theirs".to_string(), Some(b"keep me".to_vec()));
    assert_eq!(tree(&api), expected);
    fs.dirs.invalidate_all();
    assert_eq!(shown(&fs, ROOT_INO).await, ["d", "e"]);
    assert_eq!(read_path(&fs, "d/theirs").await, b"keep me");
    assert_eq!(read_path(&fs, "e/s/g1").await, b"sub 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_move_keeps_what_another_client_put_in_the_old_folder() {
    move_keeps_what_another_client_put_in_the_old_folder(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_move_keeps_what_another_client_put_in_the_old_folder_with_sync_close() {
    move_keeps_what_another_client_put_in_the_old_folder(true).await;
}

/// With nothing added, the old folder and its subfolder are deleted (write-back: in the
/// background, after their fresh listings), and one list request each is all it costs beyond
/// the move's own count.
#[tokio::test]
async fn a_folder_move_deletes_the_old_folders_once_empty() {
    let api = server();
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = mount(&api, cache.path(), false);
    let d = api.inner().add_dir(Space::Shared, None, "d");
    let s = api.inner().add_dir(Space::Shared, Some(d), "s");
    api.inner().add_file(Space::Shared, Some(d), "a", b"A");
    api.inner().add_file(Space::Shared, Some(s), "b", b"B");
    walk(&fs, "d/s").await.expect("d/s");
    fs.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("e"), 0)
        .await
        .expect("rename");
    assert_eq!(shown(&fs, ROOT_INO).await, ["e"]);
    let report = fs.wait_uploads().await;
    assert!(report.failed.is_empty(), "{report:?}");
    let mut expected = BTreeMap::new();
    expected.insert("e".to_string(), None);
    expected.insert("e/a".to_string(), Some(b"A".to_vec()));
    expected.insert("e/s".to_string(), None);
    expected.insert("e/s/b".to_string(), Some(b"B".to_vec()));
    assert_eq!(tree(&api), expected);
    fs.dirs.invalidate_all();
    assert_eq!(shown(&fs, ROOT_INO).await, ["e"]);
}
