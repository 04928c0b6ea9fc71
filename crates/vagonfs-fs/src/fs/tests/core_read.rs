//! Reading through the core against the in-memory double: block sizes, refused and
//! fallback links, sizes that disagree with the bytes, the sequential prefetch window, random
//! reads, and the cache bound. Requests are counted, never timed. (Split from `core.rs`, which
//! keeps browsing, names and errors; both share its `config`/`server`/`mount`/`shared`.)

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::api::faulty::{ApiMethod, Fault, FaultTiming};
use crate::api::mem::{mtime_of, pattern};
use crate::fs::errno::to_errno;
use crate::fs::read::BLOCK_SIZE;
use crate::fs::*;

use super::driver::{MIB, read_all, read_path, walk};
use crate::api::ObjectType;

use super::core::{Server, config, mount, server, shared};

#[tokio::test]
async fn reads_of_every_size_return_the_bytes() {
    let api = server();
    let sizes = [0usize, 1, 4095, 4096, MIB + 1, 50 * MIB];
    for (i, size) in sizes.iter().enumerate() {
        api.inner().add_file(
            Space::Shared,
            None,
            &format!("s{i}"),
            pattern(*size, i as u64 + 10),
        );
    }
    let fs = shared(&api);
    for (i, size) in sizes.iter().enumerate() {
        let want = pattern(*size, i as u64 + 10);
        let attr = walk(&fs, &format!("s{i}")).await.expect("lookup").attr;
        assert_eq!(attr.size, *size as u64);
        for chunk in [4096u32, 128 * 1024, 3 * MIB as u32] {
            let got = read_all(&fs, attr.ino, chunk).await.expect("read");
            assert!(got == want[..], "size {size}, chunk {chunk}");
        }
    }
    // Random offsets and lengths in the 50 MiB file, crossing block boundaries.
    let big = pattern(50 * MIB, 15);
    let ino = walk(&fs, "s5").await.expect("s5").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let offset = rng.random_range(0..big.len() as u64 + 10);
        let len = rng.random_range(0..3 * MIB as u32);
        let got = fs.read(ino, open.fh, offset, len).await.expect("read");
        let from = (offset as usize).min(big.len());
        let to = (offset as usize)
            .saturating_add(len as usize)
            .min(big.len());
        assert!(got == big[from..to], "offset {offset} len {len}");
    }
    fs.release(ino, open.fh).await.expect("release");
}

#[tokio::test]
async fn refused_links_are_replaced_once() {
    let api = server();
    let data = pattern(5 * MIB, 5);
    api.inner().add_file(Space::Shared, None, "f", data.clone());
    let fs = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            cache_size: 0,
            ..config()
        },
    );
    let ino = walk(&fs, "f").await.expect("f").attr.ino;
    api.fail_after_calls(
        ApiMethod::GetRange,
        2,
        1,
        Fault::LinkRefused,
        FaultTiming::Before,
    );
    assert!(read_all(&fs, ino, 1 << 20).await.expect("read") == data[..]);
    assert_eq!(
        api.calls(ApiMethod::FileLink),
        2,
        "one link, then one replacement"
    );
    assert_eq!(
        api.calls(ApiMethod::GetRange),
        6,
        "five blocks plus the refused one"
    );

    // A link refused again right after its replacement: EIO, after exactly one retry.
    api.reset_counters();
    api.inner().clear_ranges();
    api.inner().expire_links();
    api.fail_next(ApiMethod::GetRange, 1, Fault::LinkRefused);
    api.fail_next(ApiMethod::GetRange, 1, Fault::LinkRefused);
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let err = fs
        .read(ino, open.fh, 0, 10)
        .await
        .map_err(|e| to_errno(&e))
        .err();
    assert_eq!(err, Some(libc::EIO));
    assert_eq!(api.calls(ApiMethod::GetRange), 2);
    // The next read gets a fresh link and works.
    let got = fs.read(ino, open.fh, 0, 10).await.expect("read");
    assert!(got == data[..10]);
    fs.release(ino, open.fh).await.expect("release");
}

#[tokio::test]
async fn links_fall_back_to_request_download_and_are_cached() {
    let api = server();
    let data = pattern(3 * MIB, 8);
    api.inner().add_file(Space::Shared, None, "f", data.clone());
    api.set_fail_rate(Some(ApiMethod::FileLink), 1.0, Fault::NotFound);
    let fs = shared(&api);
    assert!(read_path(&fs, "f").await == data[..]);
    assert_eq!(api.calls(ApiMethod::FileLink), 1);
    assert_eq!(
        api.calls(ApiMethod::RequestDownload),
        1,
        "the link is cached for the other blocks"
    );
}

#[tokio::test]
async fn sizes_that_disagree_with_the_bytes_give_eio() {
    let space = Space::Shared;
    let api = server();
    // Listed 3 MiB, 2.5 MiB of bytes, the link repeating the listed size.
    let short = api.inner().add_raw(
        space,
        None,
        500,
        "short",
        ObjectType::File,
        pattern(5 * MIB / 2, 1),
    );
    api.inner().set_listed_size(short, 3 * MIB as u64);
    // Listed 1000 bytes, 1200 bytes, the link repeating the listed size.
    let long = api
        .inner()
        .add_raw(space, None, 501, "long", ObjectType::File, pattern(1200, 2));
    api.inner().set_listed_size(long, 1000);
    api.inner().links_report_listed_size(short);
    api.inner().links_report_listed_size(long);
    let fs = shared(&api);

    let ino = walk(&fs, "short").await.expect("short").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let head = fs
        .read(ino, open.fh, 0, 4096)
        .await
        .expect("the head is there");
    assert!(head == pattern(5 * MIB / 2, 1)[..4096]);
    let tail = fs.read(ino, open.fh, 5 * MIB as u64 / 2 + 10, 4096).await;
    assert!(matches!(tail, Err(FsError::Inconsistent(_))), "{tail:?}");
    assert_eq!(tail.map_err(|e| to_errno(&e)).err(), Some(libc::EIO));
    // Past the bytes altogether (HTTP 416): EIO too.
    let beyond = fs.read(ino, open.fh, 3 * MIB as u64 - 10, 10).await;
    assert!(
        matches!(beyond, Err(FsError::Inconsistent(_))),
        "{beyond:?}"
    );
    // Remembered: the head (cached) still reads, anything else answers EIO with no request.
    api.reset_counters();
    api.inner().clear_ranges();
    let head = fs.read(ino, open.fh, 0, 4096).await.expect("cached head");
    assert!(head == pattern(5 * MIB / 2, 1)[..4096]);
    let again = fs.read(ino, open.fh, 5 * MIB as u64 / 2 + 10, 4096).await;
    assert!(matches!(again, Err(FsError::Inconsistent(_))), "{again:?}");
    assert_eq!(api.calls(ApiMethod::GetRange), 0);
    fs.release(ino, open.fh).await.expect("release");
    // The folder's listing is kept: a bad file does not make its folder relist.
    let long_ino = walk(&fs, "long").await.expect("long").attr.ino;
    assert_eq!(api.calls(ApiMethod::ListFiles), 0);
    // Longer than listed and the link does not say: the listed bytes, exactly.
    let got = read_all(&fs, long_ino, 4096).await.expect("read");
    assert!(got == pattern(1200, 2)[..1000]);

    // A link that reports another size than listed: the listing may be old, so the open
    // answers ESTALE (the kernel then looks the name up again) and the folder is relisted;
    // the listing still says so, so the next open reads EIO. Nothing fetched.
    let truthful = server();
    let long =
        truthful
            .inner()
            .add_raw(space, None, 501, "long", ObjectType::File, pattern(1200, 2));
    truthful.inner().set_listed_size(long, 1000);
    let fs = shared(&truthful);
    let ino = walk(&fs, "long").await.expect("long").attr.ino;
    let err = fs.open(ino, libc::O_RDONLY).await;
    assert!(matches!(err, Err(FsError::Gone(_))), "{err:?}");
    assert_eq!(err.map_err(|e| to_errno(&e)).err(), Some(libc::ESTALE));
    truthful.reset_counters();
    truthful.inner().clear_ranges();
    let ino = walk(&fs, "long").await.expect("long").attr.ino;
    assert_eq!(truthful.calls(ApiMethod::ListFiles), 1, "relisted once");
    let err = read_all(&fs, ino, 4096).await;
    assert!(matches!(err, Err(FsError::Inconsistent(_))), "{err:?}");
    assert_eq!(truthful.calls(ApiMethod::GetRange), 0);
    assert_eq!(truthful.calls(ApiMethod::ListFiles), 1, "and only once");
}

/// Ranges fetched so far, in blocks, in order of request.
fn fetched_runs(api: &Server) -> Vec<std::ops::Range<u64>> {
    api.inner()
        .ranges()
        .iter()
        .map(|(_, r)| r.start / BLOCK_SIZE..r.end.div_ceil(BLOCK_SIZE))
        .collect()
}

#[tokio::test]
async fn sequential_reads_prefetch_with_a_growing_window() {
    let api = server();
    let data = pattern(200 * MIB, 3);
    api.inner()
        .add_file(Space::Shared, None, "movie", data.clone());
    let fs = shared(&api);
    let ino = walk(&fs, "movie").await.expect("movie").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let step = 128 * 1024u32;
    let mut offset = 0u64;
    let mut bursts = Vec::new();
    let mut seen = 0;
    while offset < data.len() as u64 {
        let got = fs.read(ino, open.fh, offset, step).await.expect("read");
        assert!(got == data[offset as usize..offset as usize + got.len()]);
        offset += got.len() as u64;
        fs.wait_background().await;
        let runs = fetched_runs(&api);
        if runs.len() > seen {
            bursts.push(runs[seen..].iter().map(|r| r.end - r.start).sum::<u64>());
            seen = runs.len();
        }
    }
    fs.release(ino, open.fh).await.expect("release");
    // Every block fetched exactly once, aligned, in runs of at most MAX_RUN_BLOCKS.
    let mut runs = fetched_runs(&api);
    runs.sort_by_key(|r| r.start);
    let mut next = 0;
    for r in &runs {
        assert_eq!(r.start, next, "{runs:?}");
        assert!(r.end - r.start <= read::MAX_RUN_BLOCKS, "{runs:?}");
        next = r.end;
    }
    assert_eq!(next, 200 * MIB as u64 / BLOCK_SIZE);
    assert!(
        api.inner()
            .ranges()
            .iter()
            .all(|(_, r)| r.start % BLOCK_SIZE == 0)
    );
    // The first read (at 0) fetches its block and starts the window at once; then the
    // prefetch bursts grow to the maximum window.
    assert_eq!(bursts[0], 1 + read::INITIAL_WINDOW_BLOCKS, "{bursts:?}");
    let largest = bursts.iter().copied().max().unwrap_or(0);
    assert!(largest >= read::MAX_WINDOW_BLOCKS / 2, "{bursts:?}");
    assert!(
        bursts.iter().all(|&b| b <= read::MAX_WINDOW_BLOCKS),
        "{bursts:?}"
    );
    // Big GETs once the stream is clearly sequential.
    assert!(
        runs.iter().any(|r| r.end - r.start == read::MAX_RUN_BLOCKS),
        "{runs:?}"
    );
}

/// The GET of a first read goes on into the prefetch right behind it: `head -c 1` on a fresh
/// mount is one GET (it was 5: the block, then 4 GETs of one block), and `dd bs=1M` starts
/// with one GET of up to MAX_RUN_BLOCKS and the 8 MiB start window fetched at once.
#[tokio::test]
async fn a_first_read_and_its_prefetch_share_one_get() {
    let api = server();
    let data = pattern(40 * MIB, 5);
    api.inner()
        .add_file(Space::Shared, None, "small-first", data.clone());
    api.inner()
        .add_file(Space::Shared, None, "big-first", data.clone());
    let fs = shared(&api);

    // A small first read (what the kernel asks for `head -c 1`).
    let ino = walk(&fs, "small-first")
        .await
        .expect("small-first")
        .attr
        .ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let got = fs.read(ino, open.fh, 0, 16 * 1024).await.expect("read");
    assert!(got == data[..16 * 1024]);
    fs.wait_background().await;
    assert_eq!(
        fetched_runs(&api),
        vec![0..1 + read::INITIAL_WINDOW_BLOCKS],
        "one GET: the block read and the initial window"
    );
    fs.release(ino, open.fh).await.expect("release");

    // A big first read at 0 (dd bs=1M: the kernel asks 1 MiB).
    let ino = walk(&fs, "big-first").await.expect("big-first").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let before = fetched_runs(&api).len();
    let got = fs.read(ino, open.fh, 0, MIB as u32).await.expect("read");
    assert!(got == data[..MIB]);
    fs.wait_background().await;
    let mut runs = fetched_runs(&api)[before..].to_vec();
    runs.sort_by_key(|r| r.start);
    let read_blocks = MIB as u64 / BLOCK_SIZE;
    assert_eq!(runs[0].start, 0, "{runs:?}");
    assert_eq!(runs[0].end, read::MAX_RUN_BLOCKS, "{runs:?}");
    let fetched: u64 = runs.iter().map(|r| r.end - r.start).sum();
    assert_eq!(
        fetched,
        read_blocks + read::STREAM_START_WINDOW,
        "the read and the 8 MiB start window, each block once: {runs:?}"
    );
    fs.release(ino, open.fh).await.expect("release");
}

/// What a sequential reader has read is in the kernel's page cache: the block cache keeps only
/// the last KEEP_BEHIND blocks behind it, so the buffers come back for the blocks ahead. A
/// random reader's blocks stay cached.
#[tokio::test]
async fn a_sequential_reader_does_not_keep_what_it_read_cached() {
    let api = server();
    let data = pattern(40 * MIB, 6);
    api.inner()
        .add_file(Space::Shared, None, "stream", data.clone());
    let fs = shared(&api);
    let ino = walk(&fs, "stream").await.expect("stream").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let mut offset = 0u64;
    while offset < data.len() as u64 {
        let got = fs
            .read(ino, open.fh, offset, MIB as u32)
            .await
            .expect("read");
        assert!(got == data[offset as usize..offset as usize + got.len()]);
        offset += got.len() as u64;
        fs.wait_background().await;
    }
    let stats = fs.cache_stats();
    let last_read = MIB as u64 / BLOCK_SIZE;
    assert!(stats.cached_blocks > 0, "{stats:?}");
    assert!(
        stats.cached_blocks as u64 <= read::KEEP_BEHIND + last_read,
        "{stats:?}"
    );
    fs.release(ino, open.fh).await.expect("release");

    // Random reads: kept, a second read of the same bytes makes no GET.
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let gets = api.calls(ApiMethod::GetRange);
    for k in [200u64, 17, 99, 200, 17] {
        let at = k * BLOCK_SIZE + 10;
        let got = fs.read(ino, open.fh, at, 4096).await.expect("read");
        assert!(got == data[at as usize..at as usize + 4096]);
    }
    fs.wait_background().await;
    assert_eq!(
        api.calls(ApiMethod::GetRange) - gets,
        3,
        "two re-reads from the cache"
    );
    // A sequential stream starting later releases only its own blocks, not those read before.
    let mut at = 250 * BLOCK_SIZE;
    while at < 290 * BLOCK_SIZE {
        fs.read(ino, open.fh, at, MIB as u32).await.expect("read");
        at += MIB as u64;
    }
    fs.wait_background().await;
    let gets = api.calls(ApiMethod::GetRange);
    for k in [17u64, 99, 200] {
        let at = k * BLOCK_SIZE + 10;
        let got = fs.read(ino, open.fh, at, 4096).await.expect("read");
        assert!(got == data[at as usize..at as usize + 4096]);
    }
    assert_eq!(api.calls(ApiMethod::GetRange), gets, "still cached");
    fs.release(ino, open.fh).await.expect("release");
}

#[tokio::test]
async fn random_reads_fetch_only_the_blocks_they_need() {
    let api = server();
    let data = pattern(50 * MIB, 4);
    api.inner()
        .add_file(Space::Shared, None, "db", data.clone());
    let fs = shared(&api);
    let ino = walk(&fs, "db").await.expect("db").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let picks = [3u64, 170, 9, 390, 250, 33, 380];
    for k in picks {
        let offset = k * BLOCK_SIZE + 1000;
        let got = fs.read(ino, open.fh, offset, 4096).await.expect("read");
        assert!(got == data[offset as usize..offset as usize + 4096]);
    }
    // A read across a boundary needs two blocks: one GET for both.
    let edge = 20 * BLOCK_SIZE - 100;
    let got = fs.read(ino, open.fh, edge, 200).await.expect("read");
    assert!(got == data[edge as usize..edge as usize + 200]);
    fs.wait_background().await;
    fs.release(ino, open.fh).await.expect("release");
    let mut want: Vec<std::ops::Range<u64>> = picks.iter().map(|&k| k..k + 1).collect();
    want.push(19..21);
    assert_eq!(fetched_runs(&api), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_bound_holds_with_readers_in_parallel() {
    let api = server();
    let files: Vec<_> = (0..3u64).map(|i| pattern(30 * MIB, 100 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        api.inner()
            .add_file(Space::Shared, None, &format!("r{i}"), data.clone());
    }
    let cache = 8 * MIB as u64;
    let fs = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            cache_size: cache,
            ..config()
        },
    );
    let mut readers = Vec::new();
    for (i, data) in files.iter().enumerate() {
        let fs = Arc::clone(&fs);
        let data = data.clone();
        readers.push(tokio::spawn(async move {
            let ino = walk(&fs, &format!("r{i}")).await.expect("walk").attr.ino;
            read_all(&fs, ino, 128 * 1024)
                .await
                .map(|got| got == data[..])
        }));
    }
    for r in futures::future::join_all(readers).await {
        assert!(matches!(r, Ok(Ok(true))));
    }
    fs.wait_background().await;
    let stats = fs.cache_stats();
    // Reads wait in line for memory: cached plus in flight never pass the bound.
    assert!(stats.peak_bytes <= cache, "{stats:?}");
    assert!(stats.cached_bytes <= cache, "{stats:?}");
    assert_eq!(stats.inflight_bytes, 0);
    // Every byte was fetched at least once...
    let fetched: u64 = api
        .inner()
        .ranges()
        .iter()
        .map(|(_, r)| r.end - r.start)
        .sum();
    assert!(fetched >= 90 * MIB as u64, "every block at least once");
    // ...and a block read twice is fetched once.
    api.reset_counters();
    api.inner().clear_ranges();
    let ino = walk(&fs, "r2").await.expect("r2").attr.ino;
    let open = fs.open(ino, libc::O_RDONLY).await.expect("open");
    for _ in 0..2 {
        let tail = fs
            .read(ino, open.fh, 30 * MIB as u64 - 4096, 4096)
            .await
            .expect("tail");
        assert!(tail == files[2][30 * MIB - 4096..]);
    }
    fs.release(ino, open.fh).await.expect("release");
    assert!(api.calls(ApiMethod::GetRange) <= 1);
}

#[tokio::test]
async fn no_cache_fetches_exactly_what_is_read() {
    let api = server();
    let data = pattern(3 * MIB + 5, 6);
    api.inner().add_file(Space::Shared, None, "f", data.clone());
    let fs = mount(
        &api,
        RootSpec::Space(Space::Shared),
        FsConfig {
            cache_size: 0,
            ..config()
        },
    );
    assert!(read_path(&fs, "f").await == data[..]);
    fs.wait_background().await;
    let stats = fs.cache_stats();
    assert_eq!((stats.cached_bytes, stats.cached_blocks), (0, 0));
    let fetched: u64 = api
        .inner()
        .ranges()
        .iter()
        .map(|(_, r)| r.end - r.start)
        .sum();
    assert_eq!(fetched, data.len() as u64, "no block rounding, no prefetch");
}

#[tokio::test]
async fn keep_cache_only_while_the_file_is_unchanged() {
    let api = server();
    let id = api
        .inner()
        .add_file(Space::Shared, None, "f", pattern(100, 1));
    let fs = shared(&api);
    let ino = walk(&fs, "f").await.expect("f").attr.ino;
    let first = fs.open(ino, libc::O_RDONLY).await.expect("open");
    assert!(!first.keep_cache);
    fs.release(ino, first.fh).await.expect("release");
    let second = fs.open(ino, libc::O_RDONLY).await.expect("open");
    assert!(second.keep_cache);
    fs.release(ino, second.fh).await.expect("release");

    api.inner()
        .replace_data(id, pattern(120, 2), mtime_of(9999));
    fs.dirs.expire(Loc::SpaceRoot(Space::Shared));
    // The stale listing answers at once and is revalidated in the background.
    assert_eq!(fs.getattr(ino).await.expect("getattr").attr.size, 100);
    fs.wait_background().await;
    let third = fs.open(ino, libc::O_RDONLY).await.expect("open");
    assert!(!third.keep_cache, "changed on the server");
    let got = fs.read(ino, third.fh, 0, 4096).await.expect("read");
    assert_eq!(
        &got[..],
        &pattern(120, 2)[..],
        "new content, not cached old blocks"
    );
    fs.release(ino, third.fh).await.expect("release");
    assert_eq!(fs.getattr(ino).await.expect("getattr").attr.size, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_files_read_at_once() {
    let api = server();
    let files: Vec<_> = (0..12u64)
        .map(|i| pattern(3 * MIB + i as usize * 1000, i))
        .collect();
    for (i, data) in files.iter().enumerate() {
        api.inner()
            .add_file(Space::Shared, None, &format!("c{i}"), data.clone());
    }
    let fs = shared(&api);
    let tasks = files.iter().enumerate().map(|(i, data)| {
        let fs = Arc::clone(&fs);
        let data = data.clone();
        tokio::spawn(async move { read_path(&fs, &format!("c{i}")).await == data[..] })
    });
    for ok in futures::future::join_all(tasks).await {
        assert!(matches!(ok, Ok(true)));
    }
    assert_eq!(api.calls(ApiMethod::FileLink), 12, "one link per file");
}
