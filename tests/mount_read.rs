//! The mount, part 1: browse and read, through a real FUSE mount of a real emulator process.
//!
//! Every test seeds its own emulator through the API, mounts it with the `vagonfs` binary and
//! checks what plain tools and syscalls see against what the server holds (names, kinds, sizes,
//! mtimes, bytes by SHA-256). No assertion is about speed.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rand::{RngExt, SeedableRng};
use vagonfs::api::Space;

const MIB: usize = 1024 * 1024;

/// Random (offset, len) reads of `path` all equal the same slices of `expected`.
fn check_random_reads(path: &std::path::Path, expected: &[u8], seed: u64, count: usize) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..count {
        if expected.is_empty() {
            let mut buf = [0u8; 16];
            assert_eq!(file.read_at(&mut buf, 0).expect("read empty"), 0);
            return;
        }
        let offset = rng.random_range(0..expected.len());
        let len = rng.random_range(1..=(expected.len() - offset).min(256 * 1024));
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64)
            .unwrap_or_else(|e| panic!("{}: read {len} at {offset}: {e}", path.display()));
        assert!(
            buf == expected[offset..offset + len],
            "{}: bytes differ at {offset}+{len}",
            path.display()
        );
    }
    // Reading past the end gives nothing; a read straddling the end is short.
    let mut buf = [0u8; 64];
    assert_eq!(
        file.read_at(&mut buf, expected.len() as u64 + 10)
            .expect("read past end"),
        0
    );
    let tail = file
        .read_at(&mut buf, expected.len() as u64 - 1)
        .expect("read at end");
    assert_eq!(tail, 1);
    assert_eq!(buf[0], expected[expected.len() - 1]);
}

/// `cat path` output's SHA-256.
fn cat_sha(path: &std::path::Path) -> String {
    let out = Command::new("cat")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cat");
    assert!(
        out.status.success(),
        "cat {} failed: {}",
        path.display(),
        out.status
    );
    sha256(&out.stdout)
}

#[test]
fn browse_matches_the_server() {
    let emu = EmulatorProcess::start();
    let docs = emu.mkdir(Space::Shared, None, "Documents");
    emu.upload(Space::Shared, Some(docs), "a.txt", b"hello\n");
    emu.upload(
        Space::Shared,
        Some(docs),
        "r\u{e9}sum\u{e9} 2025.txt",
        &test_bytes(1, 3000),
    );
    let deep = emu.mkdir(Space::Shared, Some(docs), "deep");
    let nested = emu.mkdir(Space::Shared, Some(deep), "nested folder");
    emu.upload(
        Space::Shared,
        Some(nested),
        "leaf.bin",
        &test_bytes(2, 70_000),
    );
    emu.mkdir(Space::Shared, None, "empty");
    emu.upload(Space::Shared, None, "top.bin", &test_bytes(3, 12_345));
    let machines = emu.machines();
    assert!(!machines.is_empty(), "the emulator has no machines");
    let m0 = machines[0].id;
    let desk = emu.mkdir(Space::Machine(m0), None, "Desktop");
    emu.upload(Space::Machine(m0), Some(desk), "m.txt", b"machine file");

    // --shared: the shared tree at the root.
    {
        let mount = TestMount::start(&emu, &["--shared"]);
        let local = walk_local(&mount.path);
        let server = walk_server(&emu, Space::Shared, None);
        assert_eq!(
            local.keys().collect::<Vec<_>>(),
            server.keys().collect::<Vec<_>>(),
            "names differ"
        );
        for (path, (is_dir, size, mtime)) in &server {
            let (l_dir, l_size, l_mtime) = local[path];
            assert_eq!(l_dir, *is_dir, "{path}: kind");
            if !is_dir {
                assert_eq!(l_size, *size, "{path}: size");
                if let Some(mtime) = mtime {
                    assert_eq!(l_mtime, *mtime, "{path}: mtime");
                }
            }
        }
        let meta = std::fs::metadata(mount.join("Documents/a.txt")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            std::fs::read(mount.join("Documents/a.txt")).unwrap(),
            b"hello\n"
        );
        let err = std::fs::metadata(mount.join("Documents/missing.txt")).unwrap_err();
        assert_eq!(errno_of(&err), libc::ENOENT);
        let err = std::fs::read_dir(mount.join("top.bin")).unwrap_err();
        assert_eq!(errno_of(&err), libc::ENOTDIR);
    }

    // Default root: machines/<name>/, shared/, recordings/.
    {
        let mount = TestMount::start(&emu, &[]);
        let top: BTreeSet<String> = std::fs::read_dir(&mount.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for name in ["machines", "shared", "recordings"] {
            assert!(top.contains(name), "root lacks {name}: {top:?}");
        }
        let machine_dirs = std::fs::read_dir(mount.join("machines")).unwrap().count();
        assert_eq!(machine_dirs, machines.len());
        let shared = walk_local(&mount.join("shared"));
        assert!(
            shared.contains_key("Documents/deep/nested folder/leaf.bin"),
            "{shared:?}"
        );
        // The machine's file is under its folder, whatever the folder is named.
        let found = std::fs::read_dir(mount.join("machines"))
            .unwrap()
            .map(|e| e.unwrap().path().join("Desktop/m.txt"))
            .filter(|p| p.exists())
            .collect::<Vec<_>>();
        assert_eq!(
            found.len(),
            1,
            "Desktop/m.txt in exactly one machine folder"
        );
        assert_eq!(std::fs::read(&found[0]).unwrap(), b"machine file");
    }

    // --machine ID: that machine's storage at the root.
    {
        let id = m0.to_string();
        let mount = TestMount::start(&emu, &["--machine", &id]);
        assert_eq!(
            std::fs::read(mount.join("Desktop/m.txt")).unwrap(),
            b"machine file"
        );
    }
}

#[test]
fn reads_of_every_size_match_the_server() {
    let emu = EmulatorProcess::start();
    let sizes = [0usize, 1, 4095, 4096, MIB + 1, 50 * MIB];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .map(|&n| (format!("size-{n}.bin"), test_bytes(n as u64 + 7, n)))
        .collect();
    let dir = emu.mkdir(Space::Shared, None, "sizes");
    for (name, data) in &files {
        emu.upload(Space::Shared, Some(dir), name, data);
    }
    let mount = TestMount::start(&emu, &["--shared", "--read-only"]);
    for (i, (name, data)) in files.iter().enumerate() {
        let path = mount.join(&format!("sizes/{name}"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            data.len() as u64,
            "{name}: size"
        );
        assert_eq!(cat_sha(&path), sha256(data), "{name}: cat");
        check_random_reads(&path, data, i as u64, 40);
        let mut whole = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut whole).unwrap();
        assert_eq!(sha256(&whole), sha256(data), "{name}: read_to_end");
    }
}

#[test]
fn big_folder_lists_completely_and_warm_ls_asks_nothing() {
    const ENTRIES: usize = 2500;
    const FILES: usize = 100;
    let emu = EmulatorProcess::start();
    let dir = emu.mkdir(Space::Shared, None, "big");
    let items: Vec<(String, Bytes)> = (0..ENTRIES)
        .map(|i| {
            if i < FILES {
                (
                    format!("file-{i:05}.txt"),
                    Bytes::from(format!("file {i}\n")),
                )
            } else {
                (format!("dir-{i:05}/"), Bytes::new())
            }
        })
        .collect();
    let expected: BTreeSet<String> = items
        .iter()
        .map(|(n, _)| n.trim_end_matches('/').to_string())
        .collect();
    emu.seed_many(Space::Shared, Some(dir), items);

    let mount = TestMount::start(&emu, &["--shared", "--dir-cache-ttl", "600"]);
    let names: BTreeSet<String> = std::fs::read_dir(mount.join("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), ENTRIES);
    assert_eq!(names, expected);

    let ls = |path: &std::path::Path| {
        let out = Command::new("ls")
            .arg("-l")
            .arg(path)
            .output()
            .expect("run ls");
        assert!(
            out.status.success(),
            "ls -l failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = ls(&mount.join("big"));
    // "total N" plus one line per entry.
    assert_eq!(first.lines().count(), ENTRIES + 1);
    assert!(first.contains("file-00042.txt"));
    let before = emu.list_requests();
    let second = ls(&mount.join("big"));
    let after = emu.list_requests();
    assert_eq!(second, first);
    assert_eq!(
        after,
        before,
        "a warm `ls -l` made {} listing request(s)",
        after - before
    );
    // Sizes of the files are right in the listing.
    let meta = std::fs::metadata(mount.join("big/file-00042.txt")).unwrap();
    assert_eq!(meta.len(), "file 42\n".len() as u64);
}

#[test]
fn reads_survive_download_link_expiry() {
    let emu = EmulatorProcess::start_with(&["--link-ttl", "2"]);
    let data = test_bytes(99, 24 * MIB);
    let other = test_bytes(100, 3 * MIB);
    emu.upload(Space::Shared, None, "expiring.bin", &data);
    emu.upload(Space::Shared, None, "other.bin", &other);
    let mount = TestMount::start(&emu, &["--shared"]);
    let file = File::open(mount.join("expiring.bin")).unwrap();
    // Far-apart ranges, each after the previous link has expired.
    for offset in [0usize, 20 * MIB, 9 * MIB, 23 * MIB + 5] {
        let len = (64 * 1024).min(data.len() - offset);
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64).unwrap();
        assert!(
            buf == data[offset..offset + len],
            "bytes differ at {offset}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    assert_eq!(
        sha256(&std::fs::read(mount.join("expiring.bin")).unwrap()),
        sha256(&data)
    );
    assert_eq!(
        sha256(&std::fs::read(mount.join("other.bin")).unwrap()),
        sha256(&other)
    );
    // The expired links were really replaced: more than one link per file was asked for.
    let stats = emu.stats();
    let links = ["file_link", "request_download"]
        .iter()
        .filter_map(|k| stats.get(*k).and_then(|v| v.as_u64()))
        .sum::<u64>();
    assert!(links > 2, "only {links} download link(s) fetched: {stats}");
}

#[test]
fn reads_stay_correct_under_server_faults() {
    let emu = EmulatorProcess::start();
    let sizes = [1usize, 4096, MIB + 1, 8 * MIB, 20 * MIB];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .map(|&n| (format!("f-{n}.bin"), test_bytes(n as u64 * 3, n)))
        .collect();
    let dir = emu.mkdir(Space::Shared, None, "faulty");
    for (name, data) in &files {
        emu.upload(Space::Shared, Some(dir), name, data);
    }
    // Seeded without faults; now the same data behind a misbehaving server.
    let emu = emu.restart(&[
        "--fail-rate",
        "0.2",
        "--throttle-rate",
        "0.1",
        "--reset-rate",
        "0.05",
    ]);
    let faults = emu.faults();
    assert_eq!(
        faults.get("fail_rate").and_then(|v| v.as_f64()),
        Some(0.2),
        "{faults}"
    );
    assert_eq!(
        faults.get("reset_rate").and_then(|v| v.as_f64()),
        Some(0.05),
        "{faults}"
    );
    let mount = TestMount::start(&emu, &["--shared", "--read-only"]);
    let names: BTreeSet<String> = std::fs::read_dir(mount.join("faulty"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, files.iter().map(|(n, _)| n.clone()).collect());
    for (i, (name, data)) in files.iter().enumerate() {
        let path = mount.join(&format!("faulty/{name}"));
        assert_eq!(cat_sha(&path), sha256(data), "{name}");
        check_random_reads(&path, data, 1000 + i as u64, 20);
    }
}

#[test]
fn concurrent_readers_of_large_files() {
    const READERS: usize = 8;
    let emu = EmulatorProcess::start();
    let files: Vec<(String, Vec<u8>)> = (0..READERS)
        .map(|i| {
            (
                format!("large-{i}.bin"),
                test_bytes(500 + i as u64, 12 * MIB + i),
            )
        })
        .collect();
    for (name, data) in &files {
        emu.upload(Space::Shared, None, name, data);
    }
    let mount = TestMount::start(&emu, &["--shared"]);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(name, data)| {
                let path = mount.join(name);
                s.spawn(move || {
                    let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(got.len(), data.len(), "{name}: length");
                    assert_eq!(sha256(&got), sha256(data), "{name}: bytes");
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("reader thread");
        }
    });
}

#[test]
fn sigterm_unmounts_and_exits() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "f.txt", b"contents");
    // Idle mount.
    let mut mount = TestMount::start(&emu, &["--shared"]);
    assert_eq!(std::fs::read(mount.join("f.txt")).unwrap(), b"contents");
    let status = mount.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!is_mounted(&mount.path), "still mounted after SIGTERM");
    // The mount point is an ordinary empty folder again.
    assert_eq!(std::fs::read_dir(&mount.path).unwrap().count(), 0);

    // Busy mount: a file held open inside it.
    let mut mount = TestMount::start(&emu, &["--shared"]);
    let held = File::open(mount.join("f.txt")).unwrap();
    let status = mount.stop();
    assert!(
        status.success(),
        "exit status after SIGTERM with a busy mount: {status}"
    );
    assert!(
        !is_mounted(&mount.path),
        "a busy mount stayed mounted after SIGTERM"
    );
    // The held descriptor now fails instead of hanging.
    let mut buf = [0u8; 8];
    assert!(
        held.read_at(&mut buf, 0).is_err(),
        "read through a dead mount succeeded"
    );
}

#[test]
fn bad_mount_points_and_options_exit_2() {
    let scratch = Scratch::new();
    let check = |mountpoint: std::path::PathBuf, args: &[&str], needle: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
            .arg("mount")
            .arg(&mountpoint)
            .args(args)
            .env("HOME", &scratch.home)
            .env("XDG_DATA_HOME", scratch.home.join("data"))
            .env("XDG_CONFIG_HOME", scratch.home.join("config"))
            .env_remove("VAGON_API_KEY")
            .env_remove("VAGON_API_SECRET")
            .output()
            .expect("run vagonfs mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{mountpoint:?} {args:?}: status {}; stderr: {stderr}",
            out.status
        );
        assert!(
            stderr.contains(needle),
            "{mountpoint:?} {args:?}: stderr lacks {needle:?}: {stderr}"
        );
        assert!(!is_mounted(&mountpoint));
    };
    let base = scratch.home.join("cases");
    std::fs::create_dir(&base).unwrap();
    check(base.join("missing"), &[], "does not exist");
    std::fs::write(base.join("file"), b"x").unwrap();
    check(base.join("file"), &[], "not a directory");
    std::fs::create_dir(base.join("full")).unwrap();
    std::fs::write(base.join("full/x"), b"x").unwrap();
    check(base.join("full"), &[], "not empty");
    std::fs::create_dir(base.join("empty")).unwrap();
    check(base.join("empty"), &["--umask", "0999"], "--umask");
    check(base.join("empty"), &["--cache-size", "0"], "--cache-size");
    check(
        base.join("empty"),
        &["--dir-cache-ttl", "soon"],
        "--dir-cache-ttl",
    );
    check(base.join("empty"), &["--log-level", "loud"], "--log-level");
    check(base.join("empty"), &["--machine", "x"], "--machine");
    check(
        base.join("empty"),
        &["--machine", "1", "--shared"],
        "--shared",
    );
    check(base.join("empty"), &["--all", "--shared"], "--all");
    check(base.join("empty"), &["--cache-size", "3X"], "--cache-size");
    check(
        base.join("empty"),
        &["--dir-cache-ttl", "2d"],
        "--dir-cache-ttl",
    );
    // An API URL without a key pair to sign with.
    check(
        base.join("empty"),
        &["--api-url", "http://127.0.0.1:9"],
        "--api-url",
    );
}

#[test]
fn read_only_mount_answers_erofs() {
    let emu = EmulatorProcess::start();
    let dir = emu.mkdir(Space::Shared, None, "dir");
    emu.upload(Space::Shared, Some(dir), "f.txt", b"keep me");
    let mount = TestMount::start(&emu, &["--shared", "--read-only"]);
    let erofs = |what: &str, result: std::io::Result<()>| {
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what} succeeded on a read-only mount"));
        assert_eq!(errno_of(&err), libc::EROFS, "{what}: {err}");
    };
    erofs("create", File::create(mount.join("new.txt")).map(drop));
    erofs(
        "open for write",
        std::fs::OpenOptions::new()
            .write(true)
            .open(mount.join("dir/f.txt"))
            .map(drop),
    );
    erofs(
        "append",
        std::fs::OpenOptions::new()
            .append(true)
            .open(mount.join("dir/f.txt"))
            .map(drop),
    );
    erofs("mkdir", std::fs::create_dir(mount.join("newdir")));
    erofs("unlink", std::fs::remove_file(mount.join("dir/f.txt")));
    erofs("rmdir", std::fs::remove_dir(mount.join("dir")));
    erofs(
        "rename",
        std::fs::rename(mount.join("dir/f.txt"), mount.join("dir/g.txt")),
    );
    let path = std::ffi::CString::new(
        mount
            .join("dir/f.txt")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::truncate(path.as_ptr(), 0) };
    erofs(
        "truncate",
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    // Nothing changed on the server.
    let listed = emu.list(Space::Shared, Some(dir));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "f.txt");
    assert_eq!(std::fs::read(mount.join("dir/f.txt")).unwrap(), b"keep me");
}

#[test]
fn links_and_special_files_are_refused() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "f.txt", b"x");
    let mount = TestMount::start(&emu, &["--shared"]);
    let err = std::os::unix::fs::symlink("f.txt", mount.join("link")).unwrap_err();
    assert_eq!(errno_of(&err), libc::EPERM, "symlink: {err}");
    let err = std::fs::hard_link(mount.join("f.txt"), mount.join("hard")).unwrap_err();
    assert_eq!(errno_of(&err), libc::EPERM, "link: {err}");
    let fifo =
        std::ffi::CString::new(mount.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    let path =
        std::ffi::CString::new(mount.join("f.txt").into_os_string().into_encoded_bytes()).unwrap();
    let name = c"user.test";
    let mut buf = [0u8; 16];
    // SAFETY: valid pointers and lengths.
    let rc = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTSUP)
    );
}

#[test]
fn embedded_demo_without_credentials() {
    // One HOME for both mounts below, outliving each mount's scratch folder.
    let home_dir = tempfile::Builder::new()
        .prefix("vagonfs-home-")
        .tempdir()
        .unwrap();
    let home = home_dir.path().canonicalize().unwrap();
    let env = [
        ("HOME", home.display().to_string()),
        (
            "XDG_DATA_HOME",
            home.join(".local/share").display().to_string(),
        ),
    ];
    // Not a terminal: the demo only when asked for (`--demo`).
    let mount = TestMount::start_in(Scratch::new(), &["--demo"], &env);
    let said = mount.output_text();
    assert!(
        said.contains("--demo: mounting a local demo emulator at http://127.0.0.1:"),
        "no demo notice on stderr:\n{said}"
    );
    // `vagonfs status` marks it as the demo.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vagonfs"))
        .arg("status")
        .arg(&mount.path)
        .output()
        .expect("vagonfs status");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(", demo)") && shown.contains("(the local demo emulator)"),
        "{shown}"
    );
    let shared = mount.join("shared");
    let readme = std::fs::read_to_string(shared.join("README.txt")).unwrap();
    assert!(readme.contains("DEMO"), "{readme}");
    let png = std::fs::read(shared.join("Pictures/gradient.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let big = shared.join(vagonfs::mount::demo::BIG_FILE_PATH);
    assert_eq!(
        std::fs::metadata(&big).unwrap().len(),
        vagonfs::mount::demo::BIG_FILE_SIZE
    );
    let file = File::open(&big).unwrap();
    for offset in [
        0u64,
        1,
        4095,
        33 * MIB as u64 + 17,
        vagonfs::mount::demo::BIG_FILE_SIZE - 100,
    ] {
        let mut got = vec![0u8; 100];
        file.read_exact_at(&mut got, offset).unwrap();
        let mut want = vec![0u8; 100];
        vagonfs::mount::demo::fill_pattern(offset, &mut want);
        assert_eq!(got, want, "demo bytes at {offset}");
    }
    let machines: Vec<_> = std::fs::read_dir(mount.join("machines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(machines.len(), vagonfs::mount::demo::DEMO_MACHINES as usize);
    for machine in &machines {
        let welcome = std::fs::read_to_string(machine.join("Desktop/welcome.txt")).unwrap();
        assert!(welcome.contains("demo machine"), "{welcome}");
    }
    let data_dir = home.join(".local/share/vagonfs/demo");
    assert!(
        data_dir.join(vagonfs::mount::demo::SEED_MARKER).is_file(),
        "no seed marker in {data_dir:?}"
    );
    drop(mount);

    // A second mount of the same demo data does not seed again and shows the same tree.
    let again = TestMount::start_in(Scratch::new(), &["--shared", "--demo"], &env);
    assert!(
        !again.output_text().contains("seeding the demo tree"),
        "{}",
        again.output_text()
    );
    assert_eq!(
        std::fs::read_to_string(again.join("README.txt")).unwrap(),
        readme
    );
}

#[test]
fn daemon_returns_once_mounted() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "f.txt", b"from the daemon");
    let scratch = Scratch::new();
    // `output()` would hang if the daemon kept the parent's pipes open.
    let out = scratch
        .command(&["--shared", "--daemon"], &emu.mount_env())
        .output()
        .expect("run --daemon");
    let guard = DaemonGuard {
        path: scratch.mountpoint.clone(),
    };
    assert!(
        out.status.success(),
        "--daemon: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(&scratch.mountpoint),
        "--daemon returned 0 but nothing is mounted"
    );
    assert_eq!(
        std::fs::read(scratch.mountpoint.join("f.txt")).unwrap(),
        b"from the daemon"
    );
    drop(guard);
    assert!(!is_mounted(&scratch.mountpoint));

    // A daemon that cannot mount says why, with a failing status.
    let scratch = Scratch::new();
    let out = scratch
        .command(&["--machine", "987654321", "--daemon"], &emu.mount_env())
        .output()
        .expect("run --daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {}; stderr: {stderr}",
        out.status
    );
    assert!(stderr.contains("987654321"), "{stderr}");
    assert!(!is_mounted(&scratch.mountpoint));
}

/// Unmounts a daemon's mount (the daemon then exits by itself).
struct DaemonGuard {
    path: std::path::PathBuf,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new("umount").arg(&self.path).status();
        }
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
    }
}

#[test]
fn listing_kinds_are_right() {
    let emu = EmulatorProcess::start();
    let d = emu.mkdir(Space::Shared, None, "d");
    emu.upload(Space::Shared, Some(d), "x", b"12345");
    let mount = TestMount::start(
        &emu,
        &[
            "--shared",
            "--uid",
            "1234",
            "--gid",
            "2345",
            "--umask",
            "027",
            // The unit forms mount(8) options use.
            "--cache-size",
            "1G",
            "--dir-cache-ttl",
            "5m",
        ],
    );
    use std::os::unix::fs::MetadataExt;
    let dm = std::fs::metadata(mount.join("d")).unwrap();
    assert!(dm.is_dir());
    assert_eq!((dm.uid(), dm.gid()), (1234, 2345));
    assert_eq!(dm.mode() & 0o777, 0o750);
    let fm = std::fs::metadata(mount.join("d/x")).unwrap();
    assert!(fm.is_file());
    assert_eq!(fm.mode() & 0o777, 0o640);
    assert_eq!(fm.len(), 5);
    let kinds: Vec<(String, bool)> = std::fs::read_dir(mount.join("d"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().unwrap().is_dir(),
            )
        })
        .collect();
    assert_eq!(kinds, vec![("x".to_string(), false)]);
    // statfs answers (df works) with the core's numbers.
    let st = nix::sys::statvfs::statvfs(&mount.path).expect("statvfs");
    assert!(st.block_size() > 0);
    assert!(st.blocks() >= st.blocks_available(), "{st:?}");
}
