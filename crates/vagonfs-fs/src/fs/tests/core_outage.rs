//! Revalidation and outage through the core against the in-memory double: nothing waits on a
//! relist when a listing exists, an unreachable or hung API answers from cached listings or
//! fails within `--op-timeout`, directory handles share one listing, folder link counts, and a
//! changed listing tells the kernel. Requests are counted, never timed. (Split from `core.rs`,
//! whose `config`/`server`/`mount`/`shared` it shares.)

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::{ApiMethod, Fault, FaultyFilesApi};
use crate::api::mem::MemApi;
use crate::api::mem::{mtime_of, pattern};
use crate::fs::errno::to_errno;
use crate::fs::*;

use super::core::{config, mount, server, shared};
use super::driver::{list, walk};

fn transport_error() -> ApiError {
    ApiError::Transport {
        endpoint: "GET /files".into(),
        detail: "connection refused".into(),
    }
}

#[tokio::test]
async fn nothing_waits_on_a_relist_when_a_listing_exists() {
    let api = server();
    let dir = api.inner().add_dir(Space::Shared, None, "big");
    api.inner()
        .add_file(Space::Shared, Some(dir), "f", pattern(10, 1));
    let fs = shared(&api);
    let f = walk(&fs, "big/f").await.expect("f").attr.ino;
    let big = walk(&fs, "big").await.expect("big").attr.ino;
    assert_eq!(api.calls(ApiMethod::ListFiles), 2);
    // The TTL passes and the server hangs on every listing of `big`.
    api.hold(ApiMethod::ListFiles, Some(dir));
    fs.dirs.expire(Loc::Remote {
        space: Space::Shared,
        id: dir,
    });
    let quick = tokio::time::timeout(Duration::from_secs(1), async {
        assert_eq!(fs.getattr(f).await.expect("getattr").attr.size, 10);
        assert!(fs.lookup(big, OsStr::new("f")).await.is_ok());
        assert_eq!(list(&fs, big).await.len(), 3);
    })
    .await;
    assert!(
        quick.is_ok(),
        "getattr, lookup and readdir waited on the relist"
    );
    // One revalidation runs for all of them.
    for _ in 0..1000 {
        if api.calls(ApiMethod::ListFiles) >= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(api.calls(ApiMethod::ListFiles), 3);
    api.unhold(ApiMethod::ListFiles);
    fs.wait_background().await;
}

#[tokio::test]
async fn outage_serves_cached_listings_and_fails_fast_without() {
    let api = server();
    let cached = api.inner().add_dir(Space::Shared, None, "cached");
    let cold = api.inner().add_dir(Space::Shared, None, "cold");
    api.inner()
        .add_file(Space::Shared, Some(cached), "a", pattern(3, 1));
    api.inner()
        .add_file(Space::Shared, Some(cold), "b", pattern(3, 2));
    let fs = shared(&api);
    let cached_ino = walk(&fs, "cached/a").await.expect("a").attr.ino;
    let cold_ino = walk(&fs, "cold").await.expect("cold").attr.ino;
    api.reset_counters();
    api.inner().clear_ranges();
    assert!(fs.api_unreachable_since().is_none());
    for _ in 0..3 {
        api.fail_next(ApiMethod::ListFiles, 1, Fault::Error(transport_error()));
    }
    fs.dirs.expire(Loc::Remote {
        space: Space::Shared,
        id: cached,
    });
    // The cached folder answers (its revalidation fails in the background).
    assert_eq!(fs.getattr(cached_ino).await.expect("stat").attr.size, 3);
    fs.wait_background().await;
    assert!(fs.api_unreachable_since().is_some(), "outage noticed");
    // The folder never listed fails at once (the failure is remembered), with EIO.
    let started = std::time::Instant::now();
    let err = fs.opendir(cold_ino).await.map(|_| ()).unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        api.calls(ApiMethod::ListFiles),
        1,
        "no request while the failure is remembered"
    );
    // Cached folders keep answering, lookups and readdir alike.
    let cached_dir = walk(&fs, "cached").await.expect("cached").attr.ino;
    assert_eq!(list(&fs, cached_dir).await.len(), 3);
    assert_eq!(api.calls(ApiMethod::ListFiles), 1);
}

/// The shared storage mounted with a 300 ms `--op-timeout`.
fn with_short_op_timeout(api: &Arc<FaultyFilesApi<MemApi>>) -> Arc<VagonFs> {
    mount(
        api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            op_timeout: Duration::from_millis(300),
            ..config()
        },
    )
}

#[tokio::test]
async fn a_hung_api_fails_uncached_lookups_within_the_op_timeout() {
    let api = server();
    let dir = api.inner().add_dir(Space::Shared, None, "d");
    let fs = with_short_op_timeout(&api);
    let d = walk(&fs, "d").await.expect("d").attr.ino;
    api.hold(ApiMethod::ListFiles, Some(dir));
    let started = std::time::Instant::now();
    let err = fs.lookup(d, OsStr::new("x")).await.unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(fs.api_unreachable_since().is_some());
    // The fetch goes on in the background and fills the cache once the server answers.
    api.unhold(ApiMethod::ListFiles);
    fs.wait_background().await;
    let again = tokio::time::timeout(Duration::from_secs(5), fs.lookup(d, OsStr::new("x"))).await;
    assert!(matches!(again, Ok(Err(FsError::NotFound))), "{again:?}");
}

#[tokio::test]
async fn directory_handles_share_one_listing() {
    let api = server();
    for i in 0..300u64 {
        api.inner()
            .add_file(Space::Shared, None, &format!("f{i:03}"), pattern(1, i));
    }
    let fs = shared(&api);
    let a = fs.opendir(ROOT_INO).await.expect("opendir");
    let b = fs.opendir(ROOT_INO).await.expect("opendir");
    let view = |fh| match lock(&fs.handles).get(&fh) {
        Some(Handle::Dir(h)) => Arc::clone(&lock(&h.snapshot).view),
        _ => panic!("no handle"),
    };
    let (va, vb) = (view(a), view(b));
    assert!(va.shares_listing(&vb), "two handles, one listing in memory");
    assert_eq!(
        api.calls(ApiMethod::ListFiles),
        3,
        "300 entries: 3 pages, once"
    );
    fs.releasedir(ROOT_INO, a);
    fs.releasedir(ROOT_INO, b);
}

#[tokio::test]
async fn folder_link_counts_follow_subfolders() {
    let api = server();
    let top = api.inner().add_dir(Space::Shared, None, "top");
    api.inner().add_dir(Space::Shared, Some(top), "x");
    api.inner().add_dir(Space::Shared, Some(top), "y");
    api.inner()
        .add_file(Space::Shared, Some(top), "f", pattern(1, 1));
    let fs = shared(&api);
    let t = walk(&fs, "top").await.expect("top").attr.ino;
    // Not listed yet: the usual 2.
    assert_eq!(fs.getattr(t).await.expect("getattr").attr.nlink, 2);
    let entries = list(&fs, t).await;
    assert_eq!(entries[0].attr.nlink, 4, "`.` of top: 2 + x and y");
    assert_eq!(fs.getattr(t).await.expect("getattr").attr.nlink, 4);
    let f = entries.iter().find(|e| e.name == "f").expect("f");
    assert_eq!(f.attr.nlink, 1);
}

#[tokio::test]
async fn a_changed_listing_tells_the_kernel() {
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);
    impl KernelCache for Seen {
        fn forget_entry(&self, parent: u64, name: &OsStr) {
            lock(&self.0).push(format!("entry {parent} {}", name.to_string_lossy()));
        }
        fn forget_inode(&self, ino: u64) {
            lock(&self.0).push(format!("inode {ino}"));
        }
    }
    let api = server();
    let keep = api
        .inner()
        .add_file(Space::Shared, None, "keep", pattern(5, 1));
    let changes = api
        .inner()
        .add_file(Space::Shared, None, "changes", pattern(5, 2));
    let fs = shared(&api);
    let seen = Arc::new(Seen::default());
    fs.set_kernel_cache(Arc::clone(&seen) as Arc<dyn KernelCache>);
    let changes_ino = walk(&fs, "changes").await.expect("changes").attr.ino;
    walk(&fs, "keep").await.expect("keep");
    // The kernel is answered "no such name" for `new` (a negative entry it keeps a while).
    let missing = fs.lookup_entry(ROOT_INO, OsStr::new("new")).await;
    assert!(matches!(missing, Ok(Lookup::Missing(_))), "{missing:?}");
    api.inner()
        .replace_data(changes, pattern(9, 3), mtime_of(77));
    api.inner()
        .add_file(Space::Shared, None, "new", pattern(1, 4));
    // Never asked for: the kernel holds no entry to drop.
    api.inner()
        .add_file(Space::Shared, None, "unasked", pattern(1, 5));
    let _ = keep;
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    // The revalidation behind this opendir finds the differences.
    list(&fs, ROOT_INO).await;
    fs.wait_background().await;
    let mut got = lock(&seen.0).clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            format!("entry {ROOT_INO} new"),
            format!("inode {changes_ino}")
        ]
    );
    assert_eq!(list(&fs, ROOT_INO).await.len(), 6);
}

/// mkdir, unlink and rmdir on a hung API. mkdir and unlink answer at once (the folder is made
/// and the file deleted on the server in the background, `new_folders.rs`, `deletes.rs`; with
/// `--sync-close` both fail within `--op-timeout`); rmdir of a folder never listed must list
/// it first, and fails within `--op-timeout` (not the client's 60 s budget), and the next
/// changes fail at once without a request while the failure is remembered (`rm -rf` of a
/// folder is one unlink per file), nothing shown changed but the new folder and the removed
/// file. Once the API answers again everything works, with no remount, and what was asked for
/// during the outage is on the server.
#[tokio::test]
async fn a_hung_api_answers_mkdir_and_unlink_at_once_and_fails_an_unlisted_rmdir_within_the_op_timeout()
 {
    let api = server();
    api.inner().add_dir(Space::Shared, None, "d");
    api.inner()
        .add_file(Space::Shared, None, "f", pattern(3, 1));
    api.inner()
        .add_file(Space::Shared, None, "g", pattern(3, 2));
    // With --sync-close, mkdir and unlink wait for the server as close does: at most
    // --op-timeout.
    let synced = with_short_op_timeout(&api);
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            op_timeout: Duration::from_millis(300),
            write_back: crate::fs::engine::WriteBack::default(),
            ..super::driver::config(cache.path(), 1)
        },
    );
    walk(&fs, "f").await.expect("f");
    walk(&synced, "f").await.expect("f");
    api.hold(ApiMethod::Create, None);
    api.hold(ApiMethod::Delete, None);
    let started = std::time::Instant::now();
    let err = synced
        .mkdir(ROOT_INO, OsStr::new("synced"), 0o755)
        .await
        .unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = synced.unlink(ROOT_INO, OsStr::new("g")).await.unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let started = std::time::Instant::now();
    fs.mkdir(ROOT_INO, OsStr::new("new"), 0o755)
        .await
        .expect("mkdir answers without the server");
    fs.unlink(ROOT_INO, OsStr::new("f"))
        .await
        .expect("unlink answers without the server");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fs.deletes_pending(), 1);
    api.hold(ApiMethod::ListFiles, None);
    let started = std::time::Instant::now();
    let err = fs.rmdir(ROOT_INO, OsStr::new("d")).await.unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(fs.api_unreachable_since().is_some());
    let err = fs
        .mkdir(ROOT_INO, OsStr::new("new2"), 0o755)
        .await
        .unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    let err = fs.unlink(ROOT_INO, OsStr::new("g")).await.unwrap_err();
    assert_eq!(to_errno(&err), libc::EIO, "{err}");
    assert_eq!(
        api.calls(ApiMethod::Delete),
        1,
        "f's background delete: remembered failures answer the rest"
    );
    let mut shown = list(&fs, ROOT_INO).await;
    shown.retain(|e| e.name != "." && e.name != "..");
    let names: Vec<_> = shown.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["d", "g", "new"]);

    api.unhold(ApiMethod::ListFiles);
    api.unhold(ApiMethod::Create);
    api.unhold(ApiMethod::Delete);
    tokio::time::sleep(crate::fs::health::FAILURE_MEMORY).await;
    fs.mkdir(ROOT_INO, OsStr::new("new2"), 0o755)
        .await
        .expect("mkdir once the API answers");
    fs.unlink(ROOT_INO, OsStr::new("g")).await.expect("unlink");
    fs.rmdir(ROOT_INO, OsStr::new("d")).await.expect("rmdir");
    assert!(fs.wait_uploads().await.failed.is_empty());
    assert_eq!(fs.deletes_pending(), 0);
    assert!(fs.api_unreachable_since().is_none());
    assert_eq!(api.inner().names(Space::Shared, None), ["new", "new2"]);
}
