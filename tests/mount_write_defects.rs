//! The write-back engine through a real FUSE mount of a real emulator process: the data-loss
//! defects of issue 8 that need the kernel (a changed file without a writer: `truncate(2)` by
//! path while a reader holds it open, `mmap` stores that outlive `close`; an editor's save
//! renamed onto a name whose upload is running; a `complete` whose answer is lost; a hostile
//! `Retry-After` on a listing and on an upload; a name held twice; a folder holding a name
//! longer than 255 bytes; a planted cache or spool folder), and what `vagonfs status` shows of
//! the engine (failed uploads with their reason, the early ENOSPC once the quota is known).
//!
//! Exact server misbehaviour comes from the emulator's scheduled faults (`POST
//! /_emulator/faults` with `schedule`: a 429 with a given `Retry-After`, an answer dropped after
//! the server acted) and hostile entries from `POST /_emulator/raw-entry`. A panic inside the
//! daemon is caught by tokio and only logged, so tests that provoke one look for it in the
//! daemon's output.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vagonfs::api::Space;

const MIB: usize = 1024 * 1024;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vagonfs-defects-")
        .tempdir()
        .expect("tempdir")
}

fn mount(emu: &EmulatorProcess, cache: &Path, extra: &[&str]) -> TestMount {
    let mut args = vec![
        "--shared",
        "--cache-dir",
        cache.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    TestMount::start(emu, &args)
}

/// The bytes of `name` at the root of the shared storage, fetched straight from the emulator.
fn server_bytes(emu: &EmulatorProcess, name: &str) -> Option<Vec<u8>> {
    let entry = emu
        .list(Space::Shared, None)
        .into_iter()
        .find(|e| e.name == name)?;
    let api = emu.client();
    // The listed object may be replaced meanwhile (an overwrite lands under a new id): then
    // `None`, and the caller's wait looks again.
    rt().block_on(async move {
        if entry.size == 0 {
            return Some(Vec::new());
        }
        let link = api.file_link(entry.id).await.ok()?;
        let bytes = api.get_range(&link.url, 0..entry.size).await.ok()?;
        Some(bytes.to_vec())
    })
}

fn names_on_server(emu: &EmulatorProcess) -> Vec<String> {
    let mut names: Vec<String> = emu
        .list(Space::Shared, None)
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// `vagonfs status --json MOUNT`, parsed.
fn status_json(m: &TestMount) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
        .args(["status", "--json"])
        .arg(&m.path)
        .stdin(Stdio::null())
        .output()
        .expect("run vagonfs status");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Defect 4: `truncate(2)` by path while a reader has the file open leaves no writer whose
/// close would upload it; the engine uploads it after a quiet period anyway.
#[test]
fn truncate_by_path_while_a_reader_is_open_is_uploaded() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "log.txt", b"0123456789");
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    let reader = std::fs::File::open(m.join("log.txt")).expect("open for reading");
    // truncate(2) itself: the `truncate` tool opens the file and uses ftruncate.
    let path = std::ffi::CString::new(m.join("log.txt").into_os_string().into_encoded_bytes())
        .expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::truncate(path.as_ptr(), 4) },
        0,
        "truncate(2)"
    );
    let arrived = wait_until(Duration::from_secs(10), || {
        server_bytes(&emu, "log.txt").as_deref() == Some(&b"0123"[..])
    });
    assert!(
        arrived,
        "the truncation never reached the server while the reader stayed open:\n{}",
        m.output_text()
    );
    drop(reader);
}

/// Defect 4: stores through a shared mapping after `close` are written back by the kernel
/// later, then the file is released; the engine uploads them without a writer's close.
#[test]
fn mmap_stores_that_outlive_close_are_uploaded() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "map.bin", &[b'a'; 4096]);
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("map.bin"))
        .expect("open");
    // SAFETY: a fresh shared mapping of 4096 bytes of an open file; only this test touches it,
    // and it is unmapped before the function returns.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        // The descriptor is closed first: the stores below outlive every close.
        drop(file);
        std::ptr::write_bytes(p.cast::<u8>(), b'z', 16);
        // No msync (that would be an fsync): the kernel writes the page back on its own,
        // here at `sync`, and only then releases the file.
        assert_eq!(libc::munmap(p, 4096), 0, "munmap");
    }
    assert!(Command::new("sync").status().expect("sync").success());
    let mut expected = vec![b'a'; 4096];
    expected[..16].fill(b'z');
    let arrived = wait_until(Duration::from_secs(10), || {
        server_bytes(&emu, "map.bin").as_deref() == Some(&expected[..])
    });
    assert!(
        arrived,
        "the mapped stores never reached the server:\n{}",
        m.output_text()
    );
}

/// Defect 1: an editor's save (write a temp file, rename it onto the name) while the name's
/// previous save is still uploading ends with the newest bytes under the name, and nothing
/// else left: not both files gone, not EEXIST.
#[test]
fn an_editor_save_renamed_onto_a_name_whose_upload_is_running() {
    let emu = EmulatorProcess::start_with(&["--latency-ms", "20"]);
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &["--upload-delay", "0"]);
    let first = test_bytes(1, 8 * MIB);
    std::fs::write(m.join("doc.txt"), &first).expect("first save");
    // The first save's upload is running (8 MiB in parts at 20 ms each); save again.
    let second = test_bytes(2, 3 * MIB);
    std::fs::write(m.join(".doc.txt.swp"), &second).expect("temp file");
    std::fs::rename(m.join(".doc.txt.swp"), m.join("doc.txt")).expect("rename onto the name");
    assert_eq!(std::fs::read(m.join("doc.txt")).expect("read"), second);
    m.sync_ok();
    assert_eq!(names_on_server(&emu), vec!["doc.txt".to_string()]);
    assert_eq!(
        server_bytes(&emu, "doc.txt").map(|b| sha256(&b)),
        Some(sha256(&second)),
        "the newest save is the one on the server"
    );
}

/// Failures are visible: a background upload over the quota is listed by `vagonfs status`
/// with its reason; once the quota is known, a copy that cannot fit fails at once with
/// ENOSPC, and nothing of it is sent.
#[test]
fn status_lists_failed_uploads_and_a_known_full_quota_is_enospc_at_once() {
    let emu = EmulatorProcess::start_with(&["--quota-bytes", &(4 * MIB).to_string()]);
    let cache = tempdir();
    let src = tempdir();
    let m = mount(&emu, cache.path(), &["--upload-delay", "0"]);
    std::fs::write(src.path().join("huge"), test_bytes(3, 6 * MIB)).expect("write");
    let out = Command::new("cp")
        .arg(src.path().join("huge"))
        .arg(m.join("huge"))
        .output()
        .expect("cp");
    assert!(
        out.status.success(),
        "the quota is not known yet: cp returns at local speed: {out:?}"
    );
    let mut last = serde_json::Value::Null;
    let listed = wait_until(Duration::from_secs(10), || {
        last = status_json(&m);
        last[0]["status"]["failed"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    assert!(listed, "no failure in status: {last}");
    let failed = &last[0]["status"]["failed"][0];
    assert_eq!(failed["path"], "huge", "{last}");
    assert_eq!(failed["permanent"], true, "{last}");
    assert!(
        failed["reason"].as_str().unwrap_or("").contains("507"),
        "the reason is named: {last}"
    );
    // The 507 taught the mount the quota: the next copy that cannot fit is refused at its
    // first write. (cp leaves the empty file it created, which is uploaded as such.)
    let out = Command::new("cp")
        .arg(src.path().join("huge"))
        .arg(m.join("huge2"))
        .output()
        .expect("cp");
    assert!(
        !out.status.success(),
        "cp over a known full quota succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "{out:?}"
    );
    assert_eq!(std::fs::metadata(m.join("huge2")).expect("stat").len(), 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server_bytes(&emu, "huge2").is_none_or(|b| b.is_empty()),
        "no byte of it was sent"
    );
}

/// `vagonfs unmount MOUNT` (graceful: waits for pending uploads, refuses while they fail).
fn unmount(m: &TestMount) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vagonfs"))
        .arg("unmount")
        .arg(&m.path)
        .stdin(Stdio::null())
        .output()
        .expect("run vagonfs unmount")
}

/// The mount process's lines that contain `needle`.
fn lines_with(m: &TestMount, needle: &str) -> Vec<String> {
    m.output_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// No thread of the daemon panicked (a panic in a task is caught by tokio and logged, the
/// process lives on: only its output tells).
fn assert_no_panic(m: &TestMount) {
    let panics = lines_with(m, "panicked");
    assert!(panics.is_empty(), "the daemon panicked: {panics:?}");
}

/// `ls DIR` through the mount, the names sorted, or the error.
fn ls(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Defect 5: `complete` is carried out by the server but its answer never arrives (the
/// connection drops: the outcome is unknown to the client, as after a timeout), and the retry
/// is told 404. The upload is still recognised as done: the next save of the file overwrites it
/// (no EEXIST, no second file), and a graceful unmount does not refuse.
#[test]
fn a_complete_whose_answer_is_lost_neither_breaks_the_next_save_nor_unmount() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let mut m = mount(&emu, cache.path(), &["--upload-delay", "0"]);
    // The first complete is carried out but unanswered; its retry meets the 404 a real server
    // may give an upload it already completed (the emulator would answer it with the file).
    emu.set_faults(serde_json::json!({
        "schedule": [
            {"family": "complete", "fault": "drop_answer"},
            {"family": "complete", "fault": "status", "status": 404}
        ]
    }));
    std::fs::write(m.join("report.txt"), b"first save").expect("first save");
    m.sync_ok();
    let stats = emu.stats();
    assert!(
        stats["complete"].as_u64() >= Some(2),
        "the dropped answer was not met (one complete only): {stats}"
    );
    // Resolved by looking the upload up, never by creating it again.
    assert_eq!(stats["create"].as_u64(), Some(1), "{stats}");
    assert_eq!(names_on_server(&emu), vec!["report.txt".to_string()]);
    std::fs::write(m.join("report.txt"), b"second save").expect("second save");
    m.sync_ok();
    assert_eq!(names_on_server(&emu), vec!["report.txt".to_string()]);
    assert_eq!(
        server_bytes(&emu, "report.txt").as_deref(),
        Some(&b"second save"[..])
    );
    let out = unmount(&m);
    assert!(
        out.status.success(),
        "graceful unmount refused: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.output_text()
    );
    assert!(m.stop().success() || !is_mounted(&m.path));
    assert_no_panic(&m);
}

/// What a hostile or broken server may put in `Retry-After`: beyond any clock (u64::MAX
/// seconds), beyond u64, negative, garbage, a date in the year 9999. The first, a sane "1",
/// is honoured, so the call has been running for a second when u64::MAX arrives (added to a
/// second, it overflows a `Duration`: the panic of defect 6).
const HOSTILE_RETRY_AFTER: [&str; 6] = [
    "1",
    "18446744073709551615",
    "99999999999999999999",
    "-5",
    "soon",
    "Fri, 31 Dec 9999 23:59:59 GMT",
];

fn throttles(family: &str) -> serde_json::Value {
    let list: Vec<serde_json::Value> = HOSTILE_RETRY_AFTER
        .iter()
        .map(|v| serde_json::json!({"family": family, "fault": "throttle", "retry_after": v}))
        .collect();
    serde_json::json!({ "schedule": list })
}

/// Defect 6: a hostile `Retry-After` on a folder listing neither panics nor parks the
/// listing: once the server answers normally, the folder lists (no folder left answering EIO
/// for the life of the mount).
#[test]
fn a_hostile_retry_after_on_a_listing_leaves_the_folder_working() {
    let emu = EmulatorProcess::start();
    let dir = emu.mkdir(Space::Shared, None, "docs");
    emu.upload(Space::Shared, Some(dir), "a.txt", b"a");
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    emu.set_faults(throttles("list_files"));
    // The listings meet the five answers (each ls may fail while they last).
    let mut last = Err(std::io::Error::other("not tried"));
    let listed = wait_until(Duration::from_secs(30), || {
        last = ls(&m.join("docs"));
        last.as_ref().is_ok_and(|n| n == &["a.txt".to_string()])
    });
    assert!(
        listed,
        "the folder never listed again: {last:?}\n{}",
        m.output_text()
    );
    assert!(
        emu.stats()["list_files"].as_u64() > Some(HOSTILE_RETRY_AFTER.len() as u64),
        "the hostile answers were not all met: {}",
        emu.stats()
    );
    // And it keeps working: a new file shows.
    std::fs::write(m.join("docs/b.txt"), b"b").expect("write");
    assert_eq!(
        ls(&m.join("docs")).expect("ls"),
        vec!["a.txt".to_string(), "b.txt".to_string()]
    );
    assert_no_panic(&m);
}

/// Defect 6: a hostile `Retry-After` on an upload (its create, then a part PUT) neither
/// panics nor parks the upload for an hour: the file lands, and the folder keeps working.
#[test]
fn a_hostile_retry_after_on_an_upload_neither_panics_nor_parks_it() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &["--upload-delay", "0"]);
    let mut faults = throttles("create");
    let puts = throttles("data_put");
    faults["schedule"]
        .as_array_mut()
        .expect("list")
        .extend(puts["schedule"].as_array().expect("list").iter().cloned());
    emu.set_faults(faults);
    std::fs::write(m.join("up.txt"), b"uploaded anyway").expect("write");
    let landed = wait_until(Duration::from_secs(60), || {
        server_bytes(&emu, "up.txt").as_deref() == Some(&b"uploaded anyway"[..])
    });
    assert!(landed, "the upload never landed:\n{}", m.output_text());
    let stats = emu.stats();
    assert!(
        stats["create"].as_u64() > Some(HOSTILE_RETRY_AFTER.len() as u64)
            && stats["data_put"].as_u64() > Some(HOSTILE_RETRY_AFTER.len() as u64),
        "the hostile answers were not all met: {stats}"
    );
    std::fs::write(m.join("next.txt"), b"next").expect("write");
    m.sync_ok();
    assert_eq!(
        names_on_server(&emu),
        vec!["next.txt".to_string(), "up.txt".to_string()]
    );
    assert_no_panic(&m);
}

/// `POST /_emulator/raw-entry` (bypasses the emulator's name rules): returns the new id.
fn raw_entry(emu: &EmulatorProcess, body: serde_json::Value) -> u64 {
    let url = format!("{}/_emulator/raw-entry", emu.url);
    rt().block_on(async {
        let r = vagonfs_api::http::tls::client()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("raw-entry");
        assert!(r.status().is_success(), "raw-entry: {}", r.status());
        let v: serde_json::Value = r.json().await.expect("raw-entry JSON");
        v["data"]["id"]
            .as_u64()
            .or_else(|| v["id"].as_u64())
            .unwrap_or_else(|| panic!("raw-entry answer without an id: {v}"))
    })
}

/// Defect 3: a name the server holds twice is shown twice (`budget.xlsx`, `budget~ID.xlsx`)
/// and is read-only under both: opening either for writing is EROFS with one log line each,
/// and both server files keep their bytes.
#[test]
fn a_name_held_twice_is_read_only_under_both_names() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "budget.xlsx", b"first");
    let second = raw_entry(
        &emu,
        serde_json::json!({"name": "budget.xlsx", "object_type": "file", "content": "second"}),
    );
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &["--upload-delay", "0"]);
    let other = format!("budget~{second}.xlsx");
    assert_eq!(
        ls(&m.path).expect("ls"),
        vec!["budget.xlsx".to_string(), other.clone()]
    );
    const REFUSED: &str = "refusing to write";
    for (i, name) in ["budget.xlsx", other.as_str()].into_iter().enumerate() {
        for truncate in [false, true] {
            let err = std::fs::OpenOptions::new()
                .write(true)
                .truncate(truncate)
                .open(m.join(name))
                .expect_err("opened a name held twice for writing");
            assert_eq!(errno_of(&err), libc::EROFS, "{name}: {err}");
        }
        // The daemon's log reaches its file a little after the refusal: wait for it (briefly).
        let want = 2 * (i + 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut said = lines_with(&m, REFUSED);
        while said.len() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            said = lines_with(&m, REFUSED);
        }
        assert_eq!(said.len(), want, "one log line per refusal: {said:?}");
        assert!(
            said.last().is_some_and(|l| l.contains("budget")),
            "{said:?}"
        );
    }
    // Reading still works under both names.
    let mut both = vec![
        std::fs::read(m.join("budget.xlsx")).expect("read"),
        std::fs::read(m.join(&other)).expect("read"),
    ];
    both.sort();
    assert_eq!(both, vec![b"first".to_vec(), b"second".to_vec()]);
    m.sync_ok();
    let mut on_server: Vec<(String, u64)> = emu
        .list(Space::Shared, None)
        .into_iter()
        .map(|e| (e.name, e.size))
        .collect();
    on_server.sort();
    assert_eq!(
        on_server,
        vec![
            ("budget.xlsx".to_string(), 5),
            ("budget.xlsx".to_string(), 6)
        ]
    );
    assert_no_panic(&m);
}

/// Defect 2: a folder holding a name the mount cannot show as is (100 CJK characters: 300
/// bytes, over the 255 a Linux name may have; shown cut, read-only) is never removed nor
/// moved: rmdir answers ENOTEMPTY, rename(2) EXDEV, and nothing is deleted on the server.
#[test]
fn a_folder_holding_a_300_byte_name_is_never_removed_or_moved() {
    let emu = EmulatorProcess::start();
    let keep = emu.mkdir(Space::Shared, None, "keep");
    let long: String = "語".repeat(100);
    assert_eq!(long.len(), 300);
    let long_id = raw_entry(
        &emu,
        serde_json::json!({"name": long, "object_type": "file", "parent_id": keep,
                           "content": "long name"}),
    );
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    let shown = ls(&m.join("keep")).expect("ls keep");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].len() <= 255, "{shown:?}");
    let err = std::fs::remove_dir(m.join("keep")).expect_err("rmdir of a non-empty folder");
    assert_eq!(errno_of(&err), libc::ENOTEMPTY, "rmdir: {err}");
    let err = std::fs::rename(m.join("keep"), m.join("moved")).expect_err("rename");
    assert_eq!(errno_of(&err), libc::EXDEV, "rename: {err}");
    // `mv` then copies and deletes: the copy lands under the cut name, and the delete of the
    // read-only original is refused (EROFS), so `mv` fails and the real name stays.
    let mv = std::process::Command::new("mv")
        .arg(m.join("keep"))
        .arg(m.join("moved"))
        .output()
        .expect("run mv");
    assert!(!mv.status.success(), "mv succeeded: {mv:?}");
    let err = std::fs::remove_file(m.join("keep").join(&shown[0])).expect_err("unlink");
    assert_eq!(errno_of(&err), libc::EROFS, "unlink: {err}");
    m.sync_ok();
    let root: Vec<String> = emu
        .list(Space::Shared, None)
        .into_iter()
        .filter(|e| e.name == "keep")
        .map(|e| e.name)
        .collect();
    assert_eq!(root, vec!["keep".to_string()], "the folder is kept");
    // What `mv` copied before it failed is a new folder beside it, holding the cut name.
    let moved: Vec<_> = emu
        .list(Space::Shared, None)
        .into_iter()
        .filter(|e| e.name == "moved")
        .collect();
    assert_eq!(moved.len(), 1, "mv's copy");
    let inside = emu.list(Space::Shared, Some(keep));
    assert_eq!(
        inside
            .iter()
            .map(|e| (e.id, e.name.clone()))
            .collect::<Vec<_>>(),
        vec![(long_id, long.clone())],
        "its file is kept"
    );
    assert_no_panic(&m);
}

/// `vagonfs mount` with `args` that must be refused before mounting: its output.
fn mount_refused(emu: &EmulatorProcess, args: &[&str]) -> String {
    let scratch = Scratch::new();
    let mountpoint = scratch.mountpoint.clone();
    let mut child = scratch
        .command(args, &emu.mount_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vagonfs mount");
    let exited = wait_until(START_WAIT, || {
        !matches!(child.try_wait(), Ok(None)) || is_mounted(&mountpoint)
    });
    if is_mounted(&mountpoint) || !exited {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_until(STOP_WAIT, || !matches!(child.try_wait(), Ok(None)));
        lazy_unmount(&mountpoint);
        let _ = child.kill();
        let _ = child.wait();
        panic!("vagonfs mount {args:?} was not refused");
    }
    let out = child.wait_with_output().expect("mount output");
    assert!(!out.status.success(), "mount exited 0: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir` (recursively, relative to it) with its size and modification
/// time, for "nothing was written through it".
fn files_under(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let meta = std::fs::symlink_metadata(e.path()).expect("lstat");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).expect("under dir").to_path_buf();
                out.push((rel, meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

/// Defect 7: a cache folder or a mount's spool folder that another user could have planted
/// (a symbolic link, mode 0777, owned by another uid) is refused before mounting, with a
/// message naming the folder and why, and nothing is written through it.
#[test]
fn a_planted_cache_or_spool_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let emu = EmulatorProcess::start();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let chown = |p: &Path, uid: u32| {
        std::os::unix::fs::lchown(p, Some(uid), None).expect("chown");
    };
    // The cache folder itself.
    let base = tempdir();
    let elsewhere = base.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    chmod(&elsewhere, 0o700);
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    let open = base.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o700);
    chown(&theirs, 65534);
    for (dir, why) in [
        (&link, "symbolic link"),
        (&open, "writable by group or others"),
        (&theirs, "belongs to uid 65534"),
    ] {
        let said = mount_refused(
            &emu,
            &["--shared", "--cache-dir", dir.to_str().expect("utf-8")],
        );
        assert!(
            said.contains(dir.to_str().expect("utf-8")) && said.contains(why),
            "{}: {said}",
            dir.display()
        );
    }
    for dir in [&elsewhere, &open, &theirs] {
        assert_eq!(files_under(dir), vec![], "{}", dir.display());
    }
    // A mount's own spool folder inside a sound cache folder: made by a first mount, then
    // planted (replaced by a link, opened to all, given to another uid).
    let cache = tempdir();
    chmod(cache.path(), 0o700);
    {
        let mut m = mount(&emu, cache.path(), &[]);
        assert!(m.stop().success());
    }
    let spools: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .expect("read cache")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(spools.len(), 1, "{spools:?}");
    let spool = &spools[0];
    let cache_arg = cache.path().to_str().expect("utf-8");
    let before = files_under(spool);
    chmod(spool, 0o777);
    let said = mount_refused(&emu, &["--shared", "--cache-dir", cache_arg]);
    assert!(said.contains("writable by group or others"), "{said}");
    chmod(spool, 0o700);
    chown(spool, 65534);
    let said = mount_refused(&emu, &["--shared", "--cache-dir", cache_arg]);
    assert!(said.contains("belongs to uid 65534"), "{said}");
    chown(spool, 0);
    assert_eq!(
        files_under(spool),
        before,
        "nothing written in the planted spool"
    );
    let real = cache.path().join("real-spool");
    std::fs::rename(spool, &real).expect("move the spool away");
    std::os::unix::fs::symlink(&real, spool).expect("symlink");
    let said = mount_refused(&emu, &["--shared", "--cache-dir", cache_arg]);
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(
        files_under(&real),
        before,
        "nothing written through the link"
    );
}
