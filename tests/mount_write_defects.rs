//! The write-back engine through a real FUSE mount of a real emulator process: the data-loss
//! defects of issue 8 that need the kernel (a changed file without a writer: `truncate(2)` by
//! path while a reader holds it open, `mmap` stores that outlive `close`; an editor's save
//! renamed onto a name whose upload is running), and what `vagonfs status` shows of the
//! engine (failed uploads with their reason, the early ENOSPC once the quota is known).

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
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
