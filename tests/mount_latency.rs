//! The mount over a slow or absent API, and the metadata the storage cannot keep: through a real
//! FUSE mount of a real emulator process.
//!
//! - outage: the emulator is frozen (SIGSTOP: connections hang, as with a dead network); cached
//!   folders answer at once, an uncached one fails with EIO within `--op-timeout` (+1 s), `vagonfs
//!   status` says since when the API is unreachable, and everything works again once the
//!   emulator is resumed (SIGCONT), with no remount;
//! - revalidation: a file added straight to the emulator shows in `ls` within `--dir-refresh`
//!   + 1 s;
//! - a read of bytes never fetched while the API is frozen fails with ETIMEDOUT within
//!   `--read-timeout` (+1 s), and the first read of a file opened meanwhile within the open's
//!   link wait (+1.5 s); cached bytes still answer, and reads work again once it is back;
//! - metadata: folder times move with the changes made in them, a new folder shows its creation
//!   time, a folder's link count is 2 + its subfolders, an open file that was unlinked has
//!   nlink 0, and `df -i` never shows a negative count;
//! - folder walks: `cp -r` out of the mount at 20 ms a request asks each file once, several at
//!   a time;
//! - the mount's probe reads the root's first page whole: a root of one page answers its first
//!   lookups and `ls` with no request; a root of more pages is listed as any folder.
//!
//! Wall-clock bounds here are the generous ones the issue names, not benchmarks.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vagonfs::api::Space;

const M1: Space = Space::Machine(1);

fn names(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    out.sort();
    Ok(out)
}

/// Resumes the emulator when the test ends, whatever happens.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP the emulator");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

#[test]
fn outage_answers_from_cache_fails_fast_and_recovers_without_remount() {
    let emu = EmulatorProcess::start();
    let cached = emu.mkdir(M1, None, "cached");
    emu.upload(M1, Some(cached), "a.txt", b"hello");
    let cold = emu.mkdir(M1, None, "cold");
    emu.upload(M1, Some(cold), "b.txt", b"world");
    let mount = TestMount::start(&emu, &["--machine", "1", "--dir-refresh", "1"]);
    assert_eq!(names(&mount.join("cached")).unwrap(), vec!["a.txt"]);
    assert_eq!(names(&mount.path).unwrap(), vec!["cached", "cold"]);
    // Let the listings age past --dir-refresh: each ls below starts a revalidation that hangs.
    std::thread::sleep(Duration::from_millis(1200));

    let frozen = Frozen::freeze(emu.pid());
    let started = Instant::now();
    assert_eq!(names(&mount.join("cached")).unwrap(), vec!["a.txt"]);
    let meta = std::fs::metadata(mount.join("cached/a.txt")).expect("stat cached file");
    assert_eq!(meta.len(), 5);
    assert_eq!(names(&mount.path).unwrap(), vec!["cached", "cold"]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "cached folders took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = names(&mount.join("cold")).expect_err("an uncached folder with the API down");
    let took = started.elapsed();
    assert_eq!(errno_of(&err), libc::EIO, "{err}");
    assert!(took <= Duration::from_secs(6), "failed after {took:?}");
    // Remembered: the next attempt fails at once; cached folders still answer.
    let started = Instant::now();
    assert!(names(&mount.join("cold")).is_err());
    assert_eq!(names(&mount.join("cached")).unwrap(), vec!["a.txt"]);
    assert!(started.elapsed() < Duration::from_secs(1));

    let status = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
        .arg("status")
        .arg(&mount.path)
        .output()
        .expect("vagonfs status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("API unreachable since"), "{text}");

    drop(frozen);
    let back = wait_until(Duration::from_secs(20), || {
        names(&mount.join("cold")).is_ok_and(|n| n == vec!["b.txt"])
    });
    assert!(back, "the mount did not recover after the API came back");
    assert_eq!(
        std::fs::read(mount.join("cold/b.txt")).expect("read after recovery"),
        b"world"
    );
    assert!(
        mount
            .output_text()
            .contains("serving cached listing: API unreachable")
    );
}

#[test]
fn changes_made_elsewhere_show_within_dir_refresh() {
    let emu = EmulatorProcess::start();
    let dir = emu.mkdir(M1, None, "shared-folder");
    emu.upload(M1, Some(dir), "old.txt", b"1");
    let refresh = Duration::from_secs(2);
    let mount = TestMount::start(&emu, &["--machine", "1", "--dir-refresh", "2"]);
    let folder = mount.join("shared-folder");
    assert_eq!(names(&folder).unwrap(), vec!["old.txt"]);
    let added_at = Instant::now();
    emu.upload(M1, Some(dir), "new.txt", b"22");
    let seen = wait_until(refresh + Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(100));
        names(&folder).is_ok_and(|n| n.contains(&"new.txt".to_string()))
    });
    let took = added_at.elapsed();
    assert!(seen, "new.txt never showed");
    assert!(
        took <= refresh + Duration::from_secs(1),
        "new.txt showed after {took:?}"
    );
    assert_eq!(std::fs::read(folder.join("new.txt")).unwrap(), b"22");
}

#[test]
fn folder_metadata_follows_what_happens_inside() {
    let emu = EmulatorProcess::start();
    let top = emu.mkdir(M1, None, "top");
    emu.mkdir(M1, Some(top), "x");
    emu.mkdir(M1, Some(top), "y");
    emu.upload(M1, Some(top), "f", b"data");
    let mount = TestMount::start(&emu, &["--machine", "1"]);
    let top_path = mount.join("top");

    // Link count: 2 + subfolders, once the folder is listed.
    assert_eq!(names(&top_path).unwrap(), vec!["f", "x", "y"]);
    assert_eq!(std::fs::metadata(&top_path).unwrap().nlink(), 4);

    // A change inside moves the folder's mtime and ctime.
    let before = std::fs::metadata(&top_path).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(top_path.join("g"), b"new").expect("create g");
    let after = std::fs::metadata(&top_path).unwrap();
    assert!(after.modified().unwrap() > before.modified().unwrap());
    assert!(after.ctime() > before.ctime());
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::remove_file(top_path.join("g")).expect("unlink g");
    let removed = std::fs::metadata(&top_path).unwrap();
    assert!(removed.modified().unwrap() > after.modified().unwrap());

    // A new folder shows when it was made, not when the mount started.
    std::thread::sleep(Duration::from_millis(1100));
    let made = SystemTime::now();
    std::fs::create_dir(top_path.join("new")).expect("mkdir");
    let mtime = std::fs::metadata(top_path.join("new"))
        .unwrap()
        .modified()
        .unwrap();
    let off = mtime.duration_since(made).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(1),
        "new folder mtime off by {off:?}"
    );

    // An open file that was unlinked has no link left.
    let file = std::fs::File::open(top_path.join("f")).expect("open f");
    std::fs::remove_file(top_path.join("f")).expect("unlink f");
    assert_eq!(file.metadata().expect("fstat").nlink(), 0);

    // df -i: used inodes never negative.
    let vfs = nix::sys::statvfs::statvfs(&mount.path).expect("statvfs");
    assert!(vfs.files() >= vfs.files_free());
}

/// `count` empty folders in `parent` of machine 1, through the emulator's bulk hook.
fn bulk_folders(emu: &EmulatorProcess, parent: Option<u64>, count: u64) {
    emu.admin_post(
        "bulk-folders",
        Some(&serde_json::json!({"count": count, "prefix": "d", "machine_id": 1, "parent_id": parent})),
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn directory_handles_share_one_listing_in_memory() {
    let emu = EmulatorProcess::start();
    let big = emu.mkdir(M1, None, "big");
    bulk_folders(&emu, Some(big), 20_000);
    let mount = TestMount::start(&emu, &["--machine", "1"]);
    let path = mount.join("big");
    // List it once (the listing and the inodes exist from here on).
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 20_000);
    let pid = mount.pid().expect("mount pid");
    let before = rss_kib(pid);
    let mut handles = Vec::new();
    for _ in 0..300 {
        let mut dir = std::fs::read_dir(&path).expect("opendir");
        // One readdir on each: the handle holds its snapshot.
        assert!(dir.next().is_some());
        handles.push(dir);
    }
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 100,
        "300 handles on 20,000 entries grew the daemon by {grown_mib} MiB"
    );
    drop(handles);
}

#[test]
fn a_cached_read_in_a_big_folder_does_not_wait_on_its_relist() {
    let emu = EmulatorProcess::start_with(&["--latency-ms", "20"]);
    let big = emu.mkdir(M1, None, "big");
    bulk_folders(&emu, Some(big), 20_000);
    emu.upload(M1, Some(big), "zz-file.bin", b"0123456789");
    let mount = TestMount::start(&emu, &["--machine", "1", "--dir-cache-ttl", "1"]);
    let file = std::fs::File::open(mount.join("big/zz-file.bin")).expect("open");
    let mut buf = [0u8; 10];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0).expect("first read");
    assert_eq!(&buf, b"0123456789");
    // Past the folder TTL and the attribute TTL: the kernel asks getattr before the read.
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0).expect("cached read");
    let took = started.elapsed();
    assert_eq!(&buf, b"0123456789");
    assert!(
        took < Duration::from_millis(500),
        "cached read took {took:?}"
    );
    let started = Instant::now();
    let meta = std::fs::metadata(mount.join("big/zz-file.bin")).expect("stat");
    assert_eq!(meta.len(), 10);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn a_read_blocked_by_a_frozen_api_fails_within_read_timeout_then_works_again() {
    let emu = EmulatorProcess::start();
    let data = test_bytes(12, 96 << 20);
    emu.upload(M1, None, "big.bin", &data);
    emu.upload(M1, None, "other.bin", &data[..4096]);
    // A small cache caps the read-ahead window (half the cache): bytes 90 MiB in are never
    // prefetched by the first read before the freeze, whatever the kernel's read-ahead (at
    // 30 MiB of a 32 MiB file, CI once found them fetched already).
    let mount = TestMount::start(
        &emu,
        &["--machine", "1", "--read-timeout", "2", "--cache-size", "8"],
    );
    let file = std::fs::File::open(mount.join("big.bin")).expect("open");
    let mut head = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).expect("first read");
    assert_eq!(head, data[..4096]);

    let frozen = Frozen::freeze(emu.pid());
    // Cached bytes still answer at once.
    let started = Instant::now();
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).expect("cached read");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Bytes never fetched: the read gives up after --read-timeout, with ETIMEDOUT.
    let far = (90 << 20) as u64;
    let mut buf = vec![0u8; 4096];
    let started = Instant::now();
    let err = std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, far)
        .expect_err("a read with the API frozen");
    let took = started.elapsed();
    assert_eq!(errno_of(&err), libc::ETIMEDOUT, "{err}");
    // Once, not twice: the kernel retries a failed readahead with a read of its own, which
    // must not wait the whole timeout again.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(3),
        "failed after {took:?} with --read-timeout 2"
    );

    // A file opened while the API is frozen: its open waits for the link at most
    // min(5 s, --read-timeout), and then its first read only a moment, not --read-timeout more.
    let started = Instant::now();
    let other = std::fs::File::open(mount.join("other.bin")).expect("open while frozen");
    let err = std::os::unix::fs::FileExt::read_exact_at(&other, &mut buf, 0)
        .expect_err("a first read with the API frozen");
    let took = started.elapsed();
    assert_eq!(errno_of(&err), libc::ETIMEDOUT, "{err}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "open + first read failed after {took:?} with --read-timeout 2"
    );

    drop(frozen);
    let back = wait_until(Duration::from_secs(20), || {
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, far).is_ok()
    });
    assert!(back, "reads did not recover after the API came back");
    assert_eq!(buf, data[far as usize..far as usize + 4096]);
    // And a new open of the file reads it whole.
    assert_eq!(
        std::fs::read(mount.join("big.bin")).expect("read all"),
        data
    );
    let back = wait_until(Duration::from_secs(20), || {
        std::fs::read(mount.join("other.bin")).is_ok_and(|d| d == data[..4096])
    });
    assert!(
        back,
        "the file opened during the outage is read once the API is back"
    );
}

/// `cp -r` of a folder out of the mount, at 20 ms a request: each file's link and bytes are
/// asked once (the folder walk fetches ahead what the opens and reads would have asked, never
/// more), and several at a time although `cp` reads one file after the other.
#[test]
fn cp_r_out_of_a_folder_asks_each_file_once_and_several_at_a_time() {
    let emu = EmulatorProcess::start_with(&["--latency-ms", "20"]);
    let dir = emu.mkdir(Space::Shared, None, "walk");
    let files: Vec<(String, Bytes)> = (0..40u64)
        .map(|i| {
            let name = format!("f{i:02}.txt");
            (name, Bytes::from(test_bytes(i + 300, 20_000 + i as usize)))
        })
        .collect();
    emu.seed_many(Space::Shared, Some(dir), files.clone());
    let mount = TestMount::start(&emu, &["--shared"]);
    let count = |stats: &serde_json::Value, keys: &[&str]| -> u64 {
        keys.iter()
            .filter_map(|k| stats.get(*k).and_then(|v| v.as_u64()))
            .sum()
    };
    let before = emu.stats();
    let out = tempfile::tempdir().unwrap();
    let copied = out.path().join("walk");
    let status = Command::new("cp")
        .arg("-r")
        .arg(mount.join("walk"))
        .arg(&copied)
        .status()
        .unwrap();
    assert!(status.success(), "cp -r failed");
    for (name, data) in &files {
        assert_eq!(
            sha256(&std::fs::read(copied.join(name)).unwrap()),
            sha256(data),
            "{name}"
        );
    }
    let after = emu.stats();
    let links = ["file_link", "request_download"];
    assert_eq!(
        count(&after, &links) - count(&before, &links),
        40,
        "{after}"
    );
    assert_eq!(
        count(&after, &["data_get"]) - count(&before, &["data_get"]),
        40,
        "{after}"
    );
    let peaks = emu.peaks();
    assert!(
        count(&peaks, &["file_link"]) > 1 && count(&peaks, &["data_get"]) > 1,
        "links and GETs overlapped: {peaks}"
    );
}

#[test]
fn a_fresh_mount_answers_at_its_root_from_the_probes_page() {
    let emu = EmulatorProcess::start();
    let docs = emu.mkdir(M1, None, "docs");
    emu.upload(M1, None, "a.txt", b"alpha");
    emu.upload(M1, Some(docs), "inner.txt", b"inner");
    let mount = TestMount::start(&emu, &["--machine", "1"]);
    emu.reset_stats();
    assert_eq!(names(&mount.path).unwrap(), ["a.txt", "docs"]);
    assert_eq!(std::fs::metadata(mount.join("a.txt")).unwrap().len(), 5);
    assert_eq!(
        std::fs::metadata(mount.join("missing")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    let stats = emu.stats();
    assert_eq!(
        stats["list_files"], 0,
        "the probe's page was the root: {stats}"
    );
    // The folder below is listed as before.
    assert_eq!(names(&mount.join("docs")).unwrap(), ["inner.txt"]);
    assert_eq!(emu.stats()["list_files"], 1);
    drop(mount);

    // A root of more than one page: the probe's page is not taken as the listing.
    bulk_folders(&emu, None, 150);
    let mount = TestMount::start(&emu, &["--machine", "1"]);
    emu.reset_stats();
    let shown = names(&mount.path).unwrap();
    assert_eq!(shown.len(), 152, "150 folders, a.txt and docs");
    assert!(shown.iter().any(|n| n == "a.txt"));
    let stats = emu.stats();
    assert_eq!(stats["list_files"], 2, "both pages of the root: {stats}");
}
