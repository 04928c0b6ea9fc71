//! Folder walks (`fs/walk.rs`, `fs/read/folder.rs`) against the in-memory double: a program
//! reading a folder's files in listed order finds the next files' links and first bytes
//! fetched ahead; random opens fetch nothing ahead; the requests are those the files' own
//! opens and reads would have made. Requests are counted, never timed.

use std::sync::Arc;

use crate::api::faulty::ApiMethod;
use crate::api::mem::pattern;
use crate::fs::walk::WALK_AHEAD;
use crate::fs::*;

use super::core::{Server, server, shared};
use super::driver::{MIB, ino, list, names, read_all};

/// A folder `d` of `n` files `f000`, `f001`, …: file `i` is `size(i)` bytes of pattern `i`.
fn folder(api: &Arc<Server>, n: usize, size: impl Fn(usize) -> usize) -> u64 {
    let d = api.inner().add_dir(Space::Shared, None, "d");
    for i in 0..n {
        api.inner().add_file(
            Space::Shared,
            Some(d),
            &format!("f{i:03}"),
            pattern(size(i), i as u64),
        );
    }
    d
}

/// Open file `i` of `d`, read it whole in 128 KiB reads, check its bytes, close it.
async fn read_file(fs: &VagonFs, dir: u64, i: usize, size: usize) {
    let attr = fs
        .lookup(dir, format!("f{i:03}").as_ref())
        .await
        .expect("lookup")
        .attr;
    let got = read_all(fs, attr.ino, 128 << 10).await.expect("read");
    assert!(got == pattern(size, i as u64), "bytes of f{i:03}");
}

fn requests(api: &Server) -> (u64, u64) {
    (
        api.calls(ApiMethod::FileLink) + api.calls(ApiMethod::RequestDownload),
        api.calls(ApiMethod::GetRange),
    )
}

#[tokio::test]
async fn a_walk_in_listed_order_finds_the_next_files_fetched_ahead() {
    let api = server();
    let n = 40;
    // Mostly small files, a few bigger than what is read ahead of each (1 MiB).
    let size = |i: usize| if i % 10 == 9 { 3 * MIB + 7 } else { 4096 + i };
    folder(&api, n, size);
    let fs = shared(&api);
    let dir = ino(&fs, "d").await;
    let listed = names(&list(&fs, dir).await);
    assert_eq!(listed.iter().filter(|n| n.starts_with('f')).count(), n);

    for i in 0..3 {
        read_file(&fs, dir, i, size(i)).await;
    }
    fs.wait_background().await;
    // The three opens made a walk: the next files' links and first bytes are here already.
    let before = requests(&api);
    for i in 3..3 + WALK_AHEAD.min(6) {
        read_file(&fs, dir, i, size(i)).await;
    }
    assert_eq!(
        requests(&api),
        before,
        "files 3..9 open and read with no request"
    );
    for i in 3 + WALK_AHEAD.min(6)..n {
        read_file(&fs, dir, i, size(i)).await;
    }
    fs.wait_background().await;
    // Every file's link exactly once, and no small file fetched twice: the walk made the
    // requests the files' own opens and reads would have made, earlier.
    let (links, gets) = requests(&api);
    assert_eq!(links, n as u64, "one link per file");
    let big = (0..n).filter(|&i| size(i) > MIB).count() as u64;
    let small = n as u64 - big;
    // A big file read alone, on a fresh mount, for comparison.
    let alone = shared(&api);
    let alone_dir = ino(&alone, "d").await;
    let gets_before = api.calls(ApiMethod::GetRange);
    read_file(&alone, alone_dir, 9, size(9)).await;
    alone.wait_background().await;
    let per_big = api.calls(ApiMethod::GetRange) - gets_before;
    // A big file: its first MiB read ahead (at most one GET more than its reads alone make).
    assert!(
        gets >= small + big && gets <= small + big * (per_big + 1),
        "{gets} GETs for {small} small and {big} big files ({per_big} for a big one alone)"
    );
}

#[tokio::test]
async fn two_files_opened_in_order_fetch_nothing_ahead() {
    // `diff f004 f005`, `cat f004 f005`: not a walk.
    let api = server();
    folder(&api, 40, |_| 5000);
    let fs = shared(&api);
    let dir = ino(&fs, "d").await;
    list(&fs, dir).await;
    read_file(&fs, dir, 4, 5000).await;
    read_file(&fs, dir, 5, 5000).await;
    fs.wait_background().await;
    assert_eq!(requests(&api), (2, 2));
}

#[tokio::test]
async fn opens_out_of_listed_order_fetch_nothing_ahead() {
    let api = server();
    folder(&api, 40, |_| 5000);
    let fs = shared(&api);
    let dir = ino(&fs, "d").await;
    list(&fs, dir).await;
    for i in [30, 5, 27, 2, 2, 39, 0] {
        read_file(&fs, dir, i, 5000).await;
    }
    fs.wait_background().await;
    let (links, gets) = requests(&api);
    assert_eq!(
        links, 6,
        "one link per file opened (2 opened twice, at once)"
    );
    assert_eq!(
        gets, 6,
        "one GET per file read, the second read of f002 cached"
    );
}

#[tokio::test]
async fn a_walk_that_stops_wastes_at_most_one_window() {
    let api = server();
    let n = 100;
    folder(&api, n, |_| 5000);
    let fs = shared(&api);
    let dir = ino(&fs, "d").await;
    list(&fs, dir).await;
    for i in 0..5 {
        read_file(&fs, dir, i, 5000).await;
    }
    fs.wait_background().await;
    let (links, gets) = requests(&api);
    let bound = (5 + WALK_AHEAD) as u64;
    assert_eq!(links, bound, "the 5 files read and one window ahead");
    assert_eq!(gets, bound);
}

#[tokio::test]
async fn a_file_with_local_changes_is_not_fetched_ahead() {
    let api = server();
    folder(&api, 10, |_| 5000);
    let fs = shared(&api);
    let dir = ino(&fs, "d").await;
    list(&fs, dir).await;
    // f003 is rewritten here and stays open: its reads come from the spool.
    let f3 = fs
        .lookup(dir, "f003".as_ref())
        .await
        .expect("f003")
        .attr
        .ino;
    let w = fs
        .open(f3, libc::O_WRONLY | libc::O_TRUNC)
        .await
        .expect("open for writing");
    fs.write(f3, w.fh, 0, b"local").await.expect("write");
    read_file(&fs, dir, 0, 5000).await;
    read_file(&fs, dir, 1, 5000).await;
    read_file(&fs, dir, 2, 5000).await;
    fs.wait_background().await;
    let (links, gets) = requests(&api);
    assert_eq!(links, 9, "all but f003");
    assert_eq!(gets, 9);
    fs.release(f3, w.fh).await.expect("release");
}
