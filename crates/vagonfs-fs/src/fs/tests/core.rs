//! Tests of the core against the in-memory test double: no kernel, no network.
//!
//! Requests are counted, never timed: every assertion is about what was asked of the API and
//! what came back.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::faulty::{ApiMethod, Fault, FaultyFilesApi, Variant};
use crate::api::mem::{MemApi, mtime_of, pattern, status};
use crate::fs::errno::to_errno;
use crate::fs::*;

use super::driver::{MIB, list, names, read_path, walk};
use crate::api::{Capacity, ObjectType};

pub(super) fn config() -> FsConfig {
    super::driver::read_config(1234, 5678, 256 << 20)
}

/// The in-memory double inside the fault injector (which counts the calls).
pub(super) type Server = FaultyFilesApi<MemApi>;

pub(super) fn server() -> Arc<Server> {
    Arc::new(FaultyFilesApi::new(MemApi::new(), 1))
}

pub(super) fn mount(api: &Arc<Server>, root: RootSpec, config: FsConfig) -> Arc<VagonFs> {
    let api: Arc<dyn FilesApi> = Arc::clone(api) as Arc<dyn FilesApi>;
    VagonFs::new(api, root, config)
}

pub(super) fn shared(api: &Arc<Server>) -> Arc<VagonFs> {
    mount(api, RootSpec::Space(Space::Shared), config())
}

#[tokio::test]
async fn browse_a_tree() {
    let api = server();
    let docs = api.inner().add_dir(Space::Shared, None, "docs");
    let report = api
        .inner()
        .add_file(Space::Shared, Some(docs), "report.pdf", pattern(1601, 1));
    let notes = api
        .inner()
        .add_file(Space::Shared, Some(docs), "notes.txt", pattern(10, 2));
    api.inner().clear_modified(notes);
    let top = api
        .inner()
        .add_file(Space::Shared, None, "top.bin", pattern(5, 3));
    let before = SystemTime::now();
    let fs = shared(&api);
    let after = SystemTime::now();

    let root = list(&fs, ROOT_INO).await;
    assert_eq!(names(&root), vec![".", "..", "docs", "top.bin"]);
    assert_eq!(root[0].attr.ino, ROOT_INO);
    let docs_attr = root[2].attr;
    assert_eq!(docs_attr.kind, NodeKind::Directory);
    assert_eq!(docs_attr.perm, 0o755);
    assert_eq!(docs_attr.mtime, mtime_of(docs));
    let top_attr = root[3].attr;
    assert_eq!(
        (top_attr.kind, top_attr.size, top_attr.perm),
        (NodeKind::File, 5, 0o644)
    );
    assert_eq!(
        (top_attr.uid, top_attr.gid, top_attr.nlink),
        (1234, 5678, 1)
    );
    assert_eq!(top_attr.mtime, mtime_of(top));

    let inside = list(&fs, docs_attr.ino).await;
    assert_eq!(names(&inside), vec![".", "..", "notes.txt", "report.pdf"]);
    assert_eq!(inside[1].attr.ino, ROOT_INO, "`..` of docs is the root");
    assert_eq!(inside[3].attr.size, 1601);
    assert_eq!(inside[3].attr.mtime, mtime_of(report));
    let notes_mtime = inside[2].attr.mtime;
    assert!(
        notes_mtime >= before && notes_mtime <= after,
        "no mtime: the mount time"
    );

    // lookup agrees with readdir (same inode, same attributes) and costs no request.
    api.reset_counters();
    api.inner().clear_ranges();
    let looked = walk(&fs, "docs/report.pdf").await.expect("lookup");
    assert_eq!(looked.attr, inside[3].attr);
    assert_eq!(api.total_calls(), 0);
    let got = fs.getattr(looked.attr.ino).await.expect("getattr");
    assert_eq!(got.attr, looked.attr);
    assert!(got.ttl <= attr::kernel_ttl(&config()));

    assert_eq!(
        read_path(&fs, "docs/report.pdf").await,
        pattern(1601, 1).to_vec()
    );
    assert_eq!(read_path(&fs, "top.bin").await, pattern(5, 3).to_vec());

    let missing = fs.lookup(ROOT_INO, OsStr::new("nope")).await;
    assert!(matches!(missing, Err(FsError::NotFound)));
    let not_dir = fs.lookup(top_attr.ino, OsStr::new("x")).await;
    assert_eq!(not_dir.map_err(|e| to_errno(&e)).err(), Some(libc::ENOTDIR));
    let long = "n".repeat(256);
    let too_long = fs.lookup(ROOT_INO, OsStr::new(&long)).await;
    assert_eq!(
        too_long.map_err(|e| to_errno(&e)).err(),
        Some(libc::ENAMETOOLONG)
    );
    let open_dir = fs.open(docs_attr.ino, libc::O_RDONLY).await;
    assert_eq!(open_dir.map_err(|e| to_errno(&e)).err(), Some(libc::EISDIR));
}

#[tokio::test]
async fn all_layout_with_machine_name_collisions() {
    let api = server();
    for (id, name) in [
        (1, "dev"),
        (2, "dev"),
        (3, "a/b"),
        (4, ""),
        (5, ".."),
        (6, "x\0y"),
        (7, "dev~2"),
    ] {
        api.inner().add_machine(id, name);
    }
    for id in 100..250 {
        api.inner().add_machine(id, &format!("m{id}"));
    }
    api.inner()
        .add_file(Space::Machine(2), None, "two.txt", pattern(20, 22));
    api.inner()
        .add_file(Space::Machine(7), None, "seven.txt", pattern(7, 77));
    api.inner()
        .add_file(Space::Shared, None, "s.txt", pattern(3, 33));
    let rec_dir = api
        .inner()
        .add_dir(Space::Recordings { machine: None }, None, "session-1");
    api.inner().add_file(
        Space::Recordings { machine: None },
        Some(rec_dir),
        "take.mp4",
        pattern(1000, 9),
    );
    let fs = mount(&api, RootSpec::All, config());

    let root = list(&fs, ROOT_INO).await;
    assert_eq!(
        names(&root),
        vec![".", "..", "machines", "recordings", "shared", ".Trash-1234"]
    );
    assert_eq!(root[2].attr.perm, 0o555, "machines cannot be created");
    assert_eq!(root[3].attr.perm, 0o555, "recordings are read-only");
    assert_eq!(root[4].attr.perm, 0o755);

    let machines = list(&fs, root[2].attr.ino).await;
    assert_eq!(
        api.calls(ApiMethod::ListMachines),
        2,
        "157 machines: two pages"
    );
    let shown = names(&machines);
    assert_eq!(
        &shown[..9],
        &[
            ".",
            "..",
            "dev",
            "dev~2~1",
            "a_b",
            "machine-4",
            "machine-5",
            "x_y",
            "dev~2"
        ]
    );
    assert_eq!(shown.len(), 2 + 157);
    assert!(
        machines[2..]
            .iter()
            .all(|e| e.attr.kind == NodeKind::Directory && e.attr.perm == 0o755)
    );

    assert_eq!(
        read_path(&fs, "machines/dev~2~1/two.txt").await,
        pattern(20, 22).to_vec()
    );
    assert_eq!(
        read_path(&fs, "machines/dev~2/seven.txt").await,
        pattern(7, 77).to_vec()
    );
    assert_eq!(
        read_path(&fs, "shared/s.txt").await,
        pattern(3, 33).to_vec()
    );
    assert_eq!(
        read_path(&fs, "recordings/session-1/take.mp4").await,
        pattern(1000, 9).to_vec()
    );

    let take = walk(&fs, "recordings/session-1/take.mp4")
        .await
        .expect("recording");
    assert_eq!(take.attr.perm, 0o444);
    let session = walk(&fs, "recordings/session-1").await.expect("session");
    assert_eq!(session.attr.perm, 0o555);
    let write = fs.open(take.attr.ino, libc::O_RDWR).await;
    assert_eq!(write.map_err(|e| to_errno(&e)).err(), Some(libc::EROFS));
    let mk = fs.mkdir(session.attr.ino, OsStr::new("new"), 0o755).await;
    assert_eq!(mk.map_err(|e| to_errno(&e)).err(), Some(libc::EROFS));
}

#[tokio::test]
async fn big_folders_cost_one_request_per_hundred_cold_and_none_warm() {
    for (count, pages) in [(2_500u64, 25u64), (10_000, 100)] {
        let api = server();
        let dir = api.inner().add_dir(Space::Shared, None, "big");
        for i in 0..count {
            api.inner().add_file(
                Space::Shared,
                Some(dir),
                &format!("f{i:05}"),
                pattern(i as usize % 7, i),
            );
        }
        let fs = shared(&api);
        let big = walk(&fs, "big").await.expect("big");
        api.reset_counters();
        api.inner().clear_ranges();
        let entries = list(&fs, big.attr.ino).await;
        assert_eq!(entries.len() as u64, count + 2);
        assert_eq!(
            api.calls(ApiMethod::ListFiles),
            pages,
            "{count} entries cold"
        );
        assert!(
            entries[2..]
                .iter()
                .enumerate()
                .all(|(i, e)| e.attr.size == i as u64 % 7)
        );

        // Warm: a second listing and a lookup of every name cost nothing.
        api.reset_counters();
        api.inner().clear_ranges();
        let again = list(&fs, big.attr.ino).await;
        assert_eq!(names(&again), names(&entries));
        for i in 0..count {
            let e = fs
                .lookup(big.attr.ino, OsStr::new(&format!("f{i:05}")))
                .await
                .expect("lookup");
            assert_eq!(e.attr.ino, entries[i as usize + 2].attr.ino);
        }
        assert_eq!(api.total_calls(), 0, "{count} entries warm");
    }
}

#[tokio::test]
async fn concurrent_lookups_share_one_listing() {
    let api = server();
    for i in 0..10_000u64 {
        api.inner()
            .add_file(Space::Shared, None, &format!("n{i}"), pattern(1, i));
    }
    let fs = shared(&api);
    // The server holds the first page until every lookup has asked.
    api.hold(ApiMethod::ListFiles, Some(0));
    let lookups: Vec<_> = (0..32u64)
        .map(|i| {
            let fs = Arc::clone(&fs);
            let name = format!("n{}", i * 311);
            tokio::spawn(async move { fs.lookup(ROOT_INO, OsStr::new(&name)).await })
        })
        .collect();
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert!(lookups.iter().all(|l| !l.is_finished()));
    assert_eq!(
        api.calls(ApiMethod::ListFiles),
        1,
        "one request in flight for 32 lookups"
    );
    api.unhold(ApiMethod::ListFiles);
    for r in futures::future::join_all(lookups).await {
        assert!(matches!(r, Ok(Ok(_))));
    }
    assert_eq!(
        api.calls(ApiMethod::ListFiles),
        100,
        "the folder was listed once"
    );
}

#[tokio::test]
async fn a_slow_listing_blocks_nothing_else() {
    let api = server();
    let slow = api.inner().add_dir(Space::Shared, None, "slow");
    api.inner()
        .add_file(Space::Shared, Some(slow), "inside", pattern(1, 1));
    api.inner()
        .add_file(Space::Shared, None, "quick.bin", pattern(3 * MIB, 4));
    let fs = shared(&api);
    let slow_ino = walk(&fs, "slow").await.expect("slow").attr.ino;
    api.hold(ApiMethod::ListFiles, Some(slow));
    let waiting = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move { fs.lookup(slow_ino, OsStr::new("inside")).await })
    };
    while api.calls(ApiMethod::ListFiles) < 2 {
        tokio::task::yield_now().await;
    }
    // The listing of `slow` is stuck in the server; everything else goes on.
    assert_eq!(
        read_path(&fs, "quick.bin").await,
        pattern(3 * MIB, 4).to_vec()
    );
    assert!(list(&fs, ROOT_INO).await.len() == 4);
    assert!(!waiting.is_finished());
    api.unhold(ApiMethod::ListFiles);
    assert!(matches!(waiting.await, Ok(Ok(_))));
}

#[tokio::test]
async fn paging_stops_when_the_server_repeats() {
    for paging in [
        Variant::ListingRepeatsPage,
        Variant::ListingRepeatsFirstPage,
    ] {
        let api = server();
        for i in 0..150u64 {
            api.inner()
                .add_file(Space::Shared, None, &format!("p{i:03}"), pattern(1, i));
        }
        api.set_variant(paging, true);
        let fs = shared(&api);
        let entries = list(&fs, ROOT_INO).await;
        assert_eq!(entries.len(), 2 + 100, "{paging:?}: the first page, once");
        let expected_calls = if paging == Variant::ListingRepeatsPage {
            1
        } else {
            2
        };
        assert_eq!(
            api.calls(ApiMethod::ListFiles),
            expected_calls,
            "{paging:?}"
        );
    }
}

#[tokio::test]
async fn forget_drops_inodes_at_zero_and_numbers_are_not_reused() {
    let api = server();
    api.inner()
        .add_file(Space::Shared, None, "a", pattern(10, 1));
    api.inner()
        .add_file(Space::Shared, None, "b", pattern(10, 2));
    let fs = shared(&api);
    let a1 = fs
        .lookup(ROOT_INO, OsStr::new("a"))
        .await
        .expect("a")
        .attr
        .ino;
    let a2 = fs
        .lookup(ROOT_INO, OsStr::new("a"))
        .await
        .expect("a")
        .attr
        .ino;
    assert_eq!(a1, a2);
    fs.forget(a1, 1);
    assert!(fs.getattr(a1).await.is_ok(), "one reference left");
    fs.forget(a1, 1);
    let gone = fs.getattr(a1).await.map_err(|e| to_errno(&e)).err();
    assert_eq!(gone, Some(libc::ESTALE));
    let a3 = fs
        .lookup(ROOT_INO, OsStr::new("a"))
        .await
        .expect("a")
        .attr
        .ino;
    assert!(a3 > a1, "a new number");

    // An open handle keeps the inode after the last forget.
    let open = fs.open(a3, libc::O_RDONLY).await.expect("open");
    fs.forget(a3, 1);
    assert_eq!(
        &fs.read(a3, open.fh, 0, 100).await.expect("read")[..],
        &pattern(10, 1)[..]
    );
    fs.release(a3, open.fh).await.expect("release");
    assert!(fs.getattr(a3).await.is_err());

    // readdir entries count as lookups; entries the kernel did not take are given back.
    let fh = fs.opendir(ROOT_INO).await.expect("opendir");
    let entries = fs.readdir(ROOT_INO, fh, 0).await.expect("readdir");
    fs.releasedir(ROOT_INO, fh);
    let b = entries
        .iter()
        .find(|e| e.name == "b")
        .map(|e| e.attr.ino)
        .expect("b");
    assert!(fs.getattr(b).await.is_ok());
    let mut kernel = super::entries::FakeKernel::new(true, 0);
    assert_eq!(fs.send_listing(&entries, &mut kernel), 0);
    assert!(
        fs.getattr(b).await.is_err(),
        "the only reference was the unsent entry"
    );
    assert!(fs.getattr(ROOT_INO).await.is_ok(), "the root stays");
}

#[tokio::test]
async fn hostile_names_are_skipped_and_warned_once() {
    let api = server();
    let long = "y".repeat(256);
    let bad = ["", ".", "..", "a/b", "nul\0x", long.as_str()];
    for (i, name) in bad.iter().enumerate() {
        let id = 100 + i as u64;
        api.inner().add_raw(
            Space::Shared,
            None,
            id,
            name,
            ObjectType::File,
            pattern(1, 1),
        );
    }
    let no_bytes = bytes::Bytes::new();
    api.inner().add_raw(
        Space::Shared,
        None,
        0,
        "zero-id",
        ObjectType::Directory,
        no_bytes,
    );
    api.inner()
        .add_file(Space::Shared, None, "ok.txt", pattern(4, 4));
    let fs = shared(&api);
    // The long name is shown cut, with its id (read-only); the others cannot be shown.
    let short = format!("{}\u{2026}~105", "y".repeat(248));
    let shown = vec![".", "..", "ok.txt", short.as_str()];
    assert_eq!(names(&list(&fs, ROOT_INO).await), shown);
    assert_eq!(fs.dirs.warned_count(), 7);
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    // Answered from the cache, revalidated in the background.
    assert_eq!(names(&list(&fs, ROOT_INO).await), shown);
    fs.wait_background().await;
    assert_eq!(api.calls(ApiMethod::ListFiles), 2);
    assert_eq!(
        fs.dirs.warned_count(),
        7,
        "no second warning for the same objects"
    );
    assert_eq!(read_path(&fs, "ok.txt").await, pattern(4, 4).to_vec());
}

#[tokio::test]
async fn duplicate_names_stay_reachable() {
    let api = server();
    let s = Space::Shared;
    api.inner()
        .add_raw(s, None, 50, "a.txt", ObjectType::File, pattern(5, 50));
    api.inner()
        .add_raw(s, None, 20, "a.txt", ObjectType::File, pattern(2, 20));
    api.inner()
        .add_raw(s, None, 60, "a~50.txt", ObjectType::File, pattern(6, 60));
    api.inner()
        .add_raw(s, None, 70, "d", ObjectType::Directory, bytes::Bytes::new());
    api.inner()
        .add_raw(s, None, 71, "d", ObjectType::File, pattern(7, 71));
    // A server that lists a higher id first: the lower id still keeps the plain name.
    api.set_variant(Variant::ListingReversed, true);
    let fs = shared(&api);
    let shown = names(&list(&fs, ROOT_INO).await);
    assert_eq!(
        shown,
        vec![".", "..", "d~71", "a~50.txt", "a~50~1.txt", "a.txt", "d"]
    );
    assert_eq!(read_path(&fs, "a.txt").await, pattern(2, 20).to_vec());
    assert_eq!(read_path(&fs, "a~50~1.txt").await, pattern(5, 50).to_vec());
    assert_eq!(read_path(&fs, "a~50.txt").await, pattern(6, 60).to_vec());
    assert_eq!(read_path(&fs, "d~71").await, pattern(7, 71).to_vec());
    assert_eq!(
        walk(&fs, "d").await.expect("d").attr.kind,
        NodeKind::Directory
    );
}

#[tokio::test]
async fn statfs_shows_the_quota() {
    let api = server();
    let gib = 1u64 << 30;
    api.inner().set_capacity(
        Some(5),
        Capacity {
            total: 10 * gib,
            in_use: gib,
            team_total: None,
            team_in_use: None,
        },
    );
    api.inner().set_capacity(
        None,
        Capacity {
            total: 4 * gib,
            in_use: gib,
            team_total: Some(100 * gib),
            team_in_use: Some(30 * gib),
        },
    );
    let fs = mount(&api, RootSpec::Space(Space::Machine(5)), config());
    let s = fs.statfs(ROOT_INO).await.expect("statfs");
    assert_eq!(
        (s.block_size, s.blocks, s.blocks_free),
        (4096, 10 * gib / 4096, 9 * gib / 4096)
    );
    assert_eq!(s.blocks_avail, s.blocks_free);
    assert_eq!(s.name_max, 255);
    fs.statfs(ROOT_INO).await.expect("statfs");
    assert_eq!(api.calls(ApiMethod::Capacity), 1, "cached");
    // Older numbers are answered at once and refreshed in the background.
    api.inner().set_capacity(
        Some(5),
        Capacity {
            total: 10 * gib,
            in_use: 2 * gib,
            team_total: None,
            team_in_use: None,
        },
    );
    fs.statfs.expire();
    api.hold(ApiMethod::Capacity, None);
    let s = tokio::time::timeout(Duration::from_secs(1), fs.statfs(ROOT_INO))
        .await
        .expect("statfs waited for the refresh")
        .expect("statfs");
    assert_eq!(s.blocks_free, 9 * gib / 4096, "the last numbers");
    api.unhold(ApiMethod::Capacity);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fs.statfs(ROOT_INO).await.expect("statfs").blocks_free != 8 * gib / 4096 {
        assert!(std::time::Instant::now() < deadline, "not refreshed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(api.calls(ApiMethod::Capacity), 2, "one refresh");

    let all = mount(&api, RootSpec::All, config());
    let root = all.statfs(ROOT_INO).await.expect("statfs");
    assert_eq!(
        (root.blocks, root.blocks_free),
        (100 * gib / 4096, 70 * gib / 4096),
        "team numbers"
    );
    let shared_ino = walk(&all, "shared").await.expect("shared").attr.ino;
    let sh = all.statfs(shared_ino).await.expect("statfs");
    assert_eq!(
        (sh.blocks, sh.blocks_free),
        (4 * gib / 4096, 3 * gib / 4096),
        "shared storage"
    );
}

#[tokio::test]
async fn missing_names_are_remembered_briefly() {
    let api = server();
    api.inner()
        .add_file(Space::Shared, None, "present", pattern(1, 1));
    let fs = shared(&api);
    assert_eq!(fs.negative_lookup_ttl(), dir::NEGATIVE_TTL);
    assert!(matches!(
        fs.lookup(ROOT_INO, OsStr::new("missing")).await,
        Err(FsError::NotFound)
    ));
    assert_eq!(api.calls(ApiMethod::ListFiles), 1);
    // The listing expired, the negative entry did not: no request.
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    assert!(matches!(
        fs.lookup(ROOT_INO, OsStr::new("missing")).await,
        Err(FsError::NotFound)
    ));
    assert_eq!(api.calls(ApiMethod::ListFiles), 1);
    // A name not known missing is answered from the stale listing, revalidated meanwhile.
    assert!(fs.lookup(ROOT_INO, OsStr::new("present")).await.is_ok());
    fs.wait_background().await;
    assert_eq!(api.calls(ApiMethod::ListFiles), 2);

    // No folder cache, no negative cache.
    let uncached = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            dir_cache_ttl: Duration::ZERO,
            ..config()
        },
    );
    assert_eq!(uncached.negative_lookup_ttl(), Duration::ZERO);
    api.reset_counters();
    api.inner().clear_ranges();
    for _ in 0..3 {
        assert!(
            uncached
                .lookup(ROOT_INO, OsStr::new("missing"))
                .await
                .is_err()
        );
    }
    assert_eq!(api.calls(ApiMethod::ListFiles), 3);
}

#[tokio::test]
async fn api_errors_surface_with_their_errno_and_are_not_cached() {
    let api = server();
    api.inner()
        .add_file(Space::Shared, None, "f", pattern(1, 1));
    let fs = shared(&api);
    api.fail_next(
        ApiMethod::ListFiles,
        1,
        Fault::Error(status("GET /files", 503)),
    );
    let e = fs
        .lookup(ROOT_INO, OsStr::new("f"))
        .await
        .map_err(|e| to_errno(&e))
        .err();
    assert_eq!(e, Some(libc::EIO));
    api.fail_next(
        ApiMethod::ListFiles,
        1,
        Fault::Error(status("GET /files", 4710)),
    );
    let e = fs.opendir(ROOT_INO).await.map_err(|e| to_errno(&e)).err();
    assert_eq!(e, Some(libc::EACCES));
    assert!(fs.lookup(ROOT_INO, OsStr::new("f")).await.is_ok());
    assert!(fs.lookup(ROOT_INO, OsStr::new("other")).await.is_err());
    assert_eq!(api.calls(ApiMethod::ListFiles), 3);

    // statfs with nothing known yet fails; getattr keeps working when a refresh fails.
    api.set_fail_rate(Some(ApiMethod::Capacity), 1.0, Fault::NotFound);
    let e = fs.statfs(ROOT_INO).await.map_err(|e| to_errno(&e)).err();
    assert_eq!(e, Some(libc::ENOENT));
    api.set_fail_rate(Some(ApiMethod::Capacity), 0.0, Fault::NotFound);
    let ino = walk(&fs, "f").await.expect("f").attr.ino;
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    api.fail_next(
        ApiMethod::ListFiles,
        1,
        Fault::Error(status("GET /files", 503)),
    );
    assert_eq!(fs.getattr(ino).await.expect("getattr").attr.size, 1);
}

#[tokio::test]
async fn readdir_offsets_are_stable_within_one_opendir() {
    let api = server();
    for i in 0..600u64 {
        api.inner()
            .add_file(Space::Shared, None, &format!("e{i:04}"), pattern(1, i));
    }
    let fs = shared(&api);
    let fh = fs.opendir(ROOT_INO).await.expect("opendir");
    let first = fs.readdir(ROOT_INO, fh, 0).await.expect("readdir");
    assert_eq!(first.len(), READDIR_BATCH);
    // The folder changes on the server and the cache expires mid-listing.
    api.inner()
        .add_file(Space::Shared, None, "a-new-one", pattern(1, 1));
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    let mut all = first.clone();
    let mut offset = first.last().map(|e| e.offset).unwrap_or(0);
    loop {
        let batch = fs.readdir(ROOT_INO, fh, offset).await.expect("readdir");
        let Some(last) = batch.last() else { break };
        offset = last.offset;
        all.extend(batch);
    }
    assert_eq!(all.len(), 602, "the snapshot: no entry lost or repeated");
    let seen: std::collections::HashSet<String> = names(&all).into_iter().collect();
    assert_eq!(seen.len(), 602);
    assert!(!seen.contains("a-new-one"));
    // Re-reading from an offset answers the same entries.
    let again = fs.readdir(ROOT_INO, fh, 300).await.expect("readdir");
    assert_eq!(names(&again), names(&all[300..300 + READDIR_BATCH]));
    // A rewind shows the folder as it is now.
    let rewound = fs.readdir(ROOT_INO, fh, 0).await.expect("readdir");
    assert_eq!(rewound.len(), READDIR_BATCH);
    fs.releasedir(ROOT_INO, fh);
    fs.wait_background().await;
    assert!(
        names(&list(&fs, ROOT_INO).await)
            .iter()
            .any(|n| n == "a-new-one")
    );
    assert!(fs.readdir(ROOT_INO, fh, 0).await.is_err(), "released");
}

#[tokio::test]
async fn read_only_mount_answers_erofs() {
    let api = server();
    api.inner()
        .add_file(Space::Shared, None, "f", pattern(10, 1));
    api.inner().add_dir(Space::Shared, None, "d");
    let fs = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            read_only: true,
            ..config()
        },
    );
    let f = walk(&fs, "f").await.expect("f").attr.ino;
    let d = walk(&fs, "d").await.expect("d").attr.ino;
    let erofs = |r: FsError| to_errno(&r);
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            fs.open(f, flags).await.map_err(erofs).err(),
            Some(libc::EROFS)
        );
    }
    let name = OsStr::new("x");
    assert_eq!(
        fs.create(ROOT_INO, name, 0o644, libc::O_WRONLY)
            .await
            .map_err(erofs)
            .err(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, name, 0o755).await.map_err(erofs).err(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs.unlink(ROOT_INO, OsStr::new("f"))
            .await
            .map_err(erofs)
            .err(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs.rmdir(ROOT_INO, OsStr::new("d"))
            .await
            .map_err(erofs)
            .err(),
        Some(libc::EROFS)
    );
    let renamed = fs.rename(ROOT_INO, OsStr::new("f"), d, name, 0).await;
    assert_eq!(renamed.map_err(erofs).err(), Some(libc::EROFS));
    let truncate = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(
        fs.setattr(f, truncate).await.map_err(erofs).err(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs.setattr(f, SetAttr::default())
            .await
            .expect("no-op")
            .attr
            .size,
        10
    );
    let open = fs.open(f, libc::O_RDONLY).await.expect("open");
    assert_eq!(
        fs.write(f, open.fh, 0, b"x").await.map_err(erofs).err(),
        Some(libc::EROFS)
    );
    fs.flush(f, open.fh).await.expect("flush of a read handle");
    fs.release(f, open.fh).await.expect("release");
    for method in [
        ApiMethod::Create,
        ApiMethod::UploadPart,
        ApiMethod::Complete,
        ApiMethod::Delete,
    ] {
        assert_eq!(api.calls(method), 0, "{method:?}");
    }

    // A read-only mount shows no write bits, and has nothing to recover.
    let ro = fs;
    assert!(ro.read_only());
    assert_eq!(
        ro.recover().await.expect("recover"),
        RecoveryReport::default()
    );
    let attrs = list(&ro, ROOT_INO).await;
    assert!(attrs.iter().all(|e| e.attr.perm & 0o222 == 0));
}
