//! The mount, part 2: create, write, delete, rename, through a real FUSE mount of a real
//! emulator process.
//!
//! Plain tools (`cp`, `cp -r`, `rsync -a`, `tar`, `mkdir -p`, `rm -r`, `mv`, `truncate`, shell
//! redirections) and syscalls write into the mount; what arrived is checked by SHA-256 of the
//! bytes read back through the mount *and* fetched straight from the emulator. Also: quota
//! exceeded (ENOSPC at close, spool kept), injected faults, `kill -9` during an upload and a
//! remount that finishes it, concurrent writers. No assertion is about speed.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use vagonfs::api::{FileEntry, ObjectType, Space};

const MIB: usize = 1024 * 1024;
/// Range size when fetching a file straight from the emulator.
const FETCH_RANGE: u64 = 16 * MIB as u64;

/// Hex SHA-256 of a file, read in pieces (never whole in memory).
fn sha_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// The server's entry at `path` (`a/b/c`) of the shared storage.
fn server_entry(emu: &EmulatorProcess, path: &str) -> Option<FileEntry> {
    let mut parent = None;
    let mut found = None;
    for part in path.split('/') {
        let entry = emu
            .list(Space::Shared, parent)
            .into_iter()
            .find(|e| e.name == part)?;
        parent = Some(entry.id);
        found = Some(entry);
    }
    found
}

/// SHA-256 and length of the file at `path`, fetched straight from the emulator in ranges.
fn server_sha(emu: &EmulatorProcess, path: &str) -> Option<(String, u64)> {
    let entry = server_entry(emu, path)?;
    assert_eq!(entry.object_type, ObjectType::File, "{path} is a folder");
    let api = emu.client();
    let hash = rt().block_on(async move {
        let mut hasher = Sha256::new();
        if entry.size > 0 {
            let link = api.file_link(entry.id).await.expect("download link");
            let mut at = 0;
            while at < entry.size {
                let end = (at + FETCH_RANGE).min(entry.size);
                let bytes = api.get_range(&link.url, at..end).await.expect("ranged GET");
                hasher.update(&bytes);
                at = end;
            }
        }
        hex::encode(hasher.finalize())
    });
    Some((hash, entry.size))
}

/// Relative path → SHA-256 (`None` for folders) of everything under `root`.
fn tree_sums(root: &Path) -> BTreeMap<String, Option<String>> {
    walk_local(root)
        .into_iter()
        .map(|(rel, (is_dir, _, _))| {
            let sum = (!is_dir).then(|| sha_file(&root.join(&rel)));
            (rel, sum)
        })
        .collect()
}

/// The same map for folder `path` on the server.
fn server_tree_sums(emu: &EmulatorProcess, path: &str) -> BTreeMap<String, Option<String>> {
    let top = server_entry(emu, path).unwrap_or_else(|| panic!("{path} not on the server"));
    walk_server(emu, Space::Shared, Some(top.id))
        .into_iter()
        .map(|(rel, (is_dir, _, _))| {
            let sum = (!is_dir).then(|| {
                server_sha(emu, &format!("{path}/{rel}"))
                    .expect("listed file")
                    .0
            });
            (rel, sum)
        })
        .collect()
}

/// Run a command; its output (status checked by the caller).
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed.
fn run_ok(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(script: &str) {
    run_ok(Command::new("sh").arg("-c").arg(script));
}

/// The mount options every test uses, with the spool folder at `cache`.
fn write_args(cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--shared".to_string(),
        "--cache-dir".to_string(),
        cache.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn mount(emu: &EmulatorProcess, cache: &Path, extra: &[&str]) -> TestMount {
    let args = write_args(cache, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestMount::start(emu, &refs)
}

/// Spool and journal files under the cache folder (any mount key).
fn spool_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(keys) = std::fs::read_dir(cache) else {
        return out;
    };
    for key in keys.flatten() {
        let Ok(files) = std::fs::read_dir(key.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".spool") || name.ends_with(".journal.json") {
                out.push(f.path());
            }
        }
    }
    out
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vagonfs-write-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn cp_in_files_of_every_size() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let src = tempdir();
    let mut m = mount(&emu, cache.path(), &[]);
    let sizes = [
        ("zero", 0),
        ("one", 1),
        ("four", 4 * MIB - 1),
        ("sixteen", 16 * MIB + 1),
        ("big", 200 * MIB),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        let local = src.path().join(name);
        std::fs::write(&local, test_bytes(i as u64 + 1, *size)).expect("write source");
        let want = sha_file(&local);
        run_ok(Command::new("cp").arg(&local).arg(m.join(name)));
        let meta = std::fs::metadata(m.join(name)).expect("stat");
        assert_eq!(meta.len(), *size as u64, "{name}: size in the mount");
        assert_eq!(sha_file(&m.join(name)), want, "{name}: read back");
        m.sync_ok();
        assert_eq!(
            server_sha(&emu, name),
            Some((want, *size as u64)),
            "{name}: on the server"
        );
    }
    assert!(m.stop().success(), "{}", m.output_text());
    assert!(spool_files(cache.path()).is_empty(), "spools left behind");
}

#[test]
fn cp_r_rsync_tar_mkdir_p_and_rm_r() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let work = tempdir();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::create_dir_all(tree.join("emptydir")).expect("mkdir");
    let files: [(&str, usize); 6] = [
        ("a.txt", 1000),
        ("b.bin", 300 * 1024),
        ("sub/c.bin", 2 * MIB + 7),
        ("sub/deeper/d.txt", 10),
        ("sub/empty.txt", 0),
        ("sub/deeper/e.dat", 5 * MIB),
    ];
    for (i, (rel, size)) in files.iter().enumerate() {
        std::fs::write(tree.join(rel), test_bytes(100 + i as u64, *size)).expect("write");
    }
    let want = tree_sums(&tree);
    let mut m = mount(&emu, cache.path(), &[]);

    // cp -r in.
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(&tree)
            .arg(m.join("cp_tree")),
    );
    assert_eq!(
        tree_sums(&m.join("cp_tree")),
        want,
        "cp -r: through the mount"
    );
    m.sync_ok();
    assert_eq!(
        server_tree_sums(&emu, "cp_tree"),
        want,
        "cp -r: on the server"
    );

    // rsync -a in, and out again.
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", tree.display()))
            .arg(format!("{}/", m.join("rs_tree").display())),
    );
    m.sync_ok();
    assert_eq!(
        server_tree_sums(&emu, "rs_tree"),
        want,
        "rsync in: on the server"
    );
    let back = work.path().join("rs_back");
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", m.join("rs_tree").display()))
            .arg(format!("{}/", back.display())),
    );
    assert_eq!(tree_sums(&back), want, "rsync out");

    // tar x into the mount, tar c out of it.
    let archive = work.path().join("in.tar");
    run_ok(
        Command::new("tar")
            .arg("cf")
            .arg(&archive)
            .arg("-C")
            .arg(&tree)
            .arg("."),
    );
    std::fs::create_dir(m.join("tar_tree")).expect("mkdir in mount");
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(&archive)
            .arg("-C")
            .arg(m.join("tar_tree")),
    );
    m.sync_ok();
    assert_eq!(
        server_tree_sums(&emu, "tar_tree"),
        want,
        "tar x: on the server"
    );
    let out_archive = work.path().join("out.tar");
    run_ok(
        Command::new("tar")
            .arg("cf")
            .arg(&out_archive)
            .arg("-C")
            .arg(m.join("tar_tree"))
            .arg("."),
    );
    let untar = work.path().join("untar");
    std::fs::create_dir(&untar).expect("mkdir");
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(&out_archive)
            .arg("-C")
            .arg(&untar),
    );
    assert_eq!(tree_sums(&untar), want, "tar c out of the mount");

    // mkdir -p, rm -r.
    run_ok(Command::new("mkdir").arg("-p").arg(m.join("p/q/r")));
    // mkdir answers before the server has the folder; `vagonfs sync` waits for it.
    m.sync_ok();
    assert!(server_entry(&emu, "p/q/r").is_some());
    run_ok(Command::new("mkdir").arg("-p").arg(m.join("p/q/r")));
    run_ok(
        Command::new("rm")
            .arg("-r")
            .arg(m.join("cp_tree"))
            .arg(m.join("p")),
    );
    // rm -r answers before the server has deleted the tree; `vagonfs sync` waits for it.
    m.sync_ok();
    assert!(server_entry(&emu, "cp_tree").is_none());
    assert!(server_entry(&emu, "p").is_none());
    assert!(!m.join("cp_tree").exists());
    let mut left: Vec<String> = std::fs::read_dir(&m.path)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["rs_tree", "tar_tree"]);
    assert!(m.stop().success(), "{}", m.output_text());
}

#[test]
fn appends_truncation_overwrite_mv_and_the_editor_save() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    // Put there by another client before the mount lists the folder (the mount sees others'
    // changes only when its cached listing expires).
    let big = test_bytes(7, 3 * MIB);
    emu.upload(Space::Shared, None, "patch.bin", &big);
    let m = mount(&emu, cache.path(), &[]);
    let p = |rel: &str| m.join(rel).display().to_string();
    let content = |rel: &str| {
        m.sync_ok();
        let (sum, _) = server_sha(&emu, rel).unwrap_or_else(|| panic!("{rel} not on the server"));
        sum
    };
    let sha = |b: &[u8]| sha256(b);

    // Shell redirections: > then >>.
    sh(&format!(
        "printf 'one\\n' > '{0}' && printf 'two\\n' >> '{0}' && printf 'three\\n' >> '{0}'",
        p("e.txt")
    ));
    assert_eq!(content("e.txt"), sha(b"one\ntwo\nthree\n"));
    assert_eq!(
        std::fs::read(m.join("e.txt")).expect("read"),
        b"one\ntwo\nthree\n"
    );
    let ino = std::fs::metadata(m.join("e.txt")).expect("stat").ino();

    // truncate(1) down and up.
    run_ok(
        Command::new("truncate")
            .args(["-s", "4"])
            .arg(m.join("e.txt")),
    );
    assert_eq!(content("e.txt"), sha(b"one\n"));
    run_ok(
        Command::new("truncate")
            .args(["-s", "8"])
            .arg(m.join("e.txt")),
    );
    assert_eq!(content("e.txt"), sha(b"one\n\0\0\0\0"));

    // A write in the middle of an existing file (its old bytes come from the server).
    let f = File::options()
        .write(true)
        .open(m.join("patch.bin"))
        .expect("open for writing");
    f.write_all_at(b"PATCHED", MIB as u64).expect("pwrite");
    drop(f);
    let mut want = big.clone();
    want[MIB..MIB + 7].copy_from_slice(b"PATCHED");
    assert_eq!(content("patch.bin"), sha(&want));

    // Overwrite with cp: same inode, new bytes.
    let other = tempdir();
    std::fs::write(other.path().join("x"), b"replaced").expect("write");
    run_ok(
        Command::new("cp")
            .arg(other.path().join("x"))
            .arg(m.join("e.txt")),
    );
    assert_eq!(content("e.txt"), sha(b"replaced"));
    assert_eq!(std::fs::metadata(m.join("e.txt")).expect("stat").ino(), ino);

    // mv of a file into a folder, and of the folder.
    std::fs::create_dir(m.join("dir")).expect("mkdir");
    run_ok(
        Command::new("mv")
            .arg(m.join("e.txt"))
            .arg(m.join("dir/f.txt")),
    );
    // The old copy is deleted in the background; `vagonfs sync` waits for it.
    m.sync_ok();
    assert!(server_entry(&emu, "e.txt").is_none());
    assert_eq!(content("dir/f.txt"), sha(b"replaced"));
    run_ok(Command::new("mv").arg(m.join("dir")).arg(m.join("dir2")));
    // The old folder too, after its fresh listing.
    m.sync_ok();
    assert!(server_entry(&emu, "dir").is_none());
    assert_eq!(content("dir2/f.txt"), sha(b"replaced"));
    assert_eq!(
        std::fs::read(m.join("dir2/f.txt")).expect("read"),
        b"replaced"
    );

    // The editors' save: write a temp file, rename it over the original.
    std::fs::write(m.join("doc.txt"), b"version 1").expect("write");
    {
        let mut tmp = File::create(m.join(".doc.txt.tmp")).expect("create temp");
        tmp.write_all(b"version 2, longer").expect("write temp");
        tmp.sync_all().expect("fsync temp");
    }
    std::fs::rename(m.join(".doc.txt.tmp"), m.join("doc.txt")).expect("rename over");
    assert_eq!(
        std::fs::read(m.join("doc.txt")).expect("read"),
        b"version 2, longer"
    );
    assert_eq!(content("doc.txt"), sha(b"version 2, longer"));
    assert!(server_entry(&emu, ".doc.txt.tmp").is_none());
    assert!(!m.join(".doc.txt.tmp").exists());
}

#[test]
fn quota_exceeded_is_enospc_and_the_spool_is_kept() {
    let emu = EmulatorProcess::start_with(&["--quota-bytes", &(4 * MIB).to_string()]);
    let cache = tempdir();
    let src = tempdir();
    let mut m = mount(&emu, cache.path(), &["--sync-close"]);
    std::fs::write(src.path().join("small"), test_bytes(1, MIB)).expect("write");
    std::fs::write(src.path().join("huge"), test_bytes(2, 6 * MIB)).expect("write");
    run_ok(
        Command::new("cp")
            .arg(src.path().join("small"))
            .arg(m.join("small")),
    );
    let out = run(Command::new("cp")
        .arg(src.path().join("huge"))
        .arg(m.join("huge")));
    assert!(!out.status.success(), "cp beyond the quota succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // Nothing on the server was harmed.
    assert!(server_entry(&emu, "huge").is_none());
    assert_eq!(
        server_sha(&emu, "small").map(|(s, _)| s),
        Some(sha_file(&src.path().join("small")))
    );
    let kept = spool_files(cache.path());
    assert_eq!(kept.len(), 2, "spool and journal record kept: {kept:?}");
    m.stop();
    assert_eq!(
        spool_files(cache.path()).len(),
        2,
        "still kept after unmount"
    );
}

#[test]
fn a_background_upload_over_the_quota_is_reported_by_sync_and_kept() {
    let emu = EmulatorProcess::start_with(&["--quota-bytes", &(4 * MIB).to_string()]);
    let cache = tempdir();
    let src = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    std::fs::write(src.path().join("huge"), test_bytes(2, 6 * MIB)).expect("write");
    // close returns at local speed: the quota is met later, by the background upload.
    run_ok(
        Command::new("cp")
            .arg(src.path().join("huge"))
            .arg(m.join("huge")),
    );
    let out = m.sync();
    assert!(!out.status.success(), "sync hid a failed upload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("huge") && stderr.to_lowercase().contains("stor"),
        "sync names the file and the reason: {stderr}"
    );
    assert!(server_entry(&emu, "huge").is_none());
    assert_eq!(
        sha_file(&m.join("huge")),
        sha256(&test_bytes(2, 6 * MIB)),
        "still readable through the mount"
    );
    assert_eq!(spool_files(cache.path()).len(), 2, "spool and record kept");
}

#[test]
fn small_files_arrive_intact_through_injected_faults() {
    const FILES: usize = 200;
    const WRITERS: usize = 8;
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    std::fs::create_dir(m.join("many")).expect("mkdir");
    emu.set_faults(serde_json::json!({"fail_rate": 0.3, "reset_rate": 0.05}));
    let dir = m.join("many");
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let dir = dir.clone();
            s.spawn(move || {
                for i in (w..FILES).step_by(WRITERS) {
                    let data = test_bytes(1000 + i as u64, 100 + i * 97);
                    std::fs::write(dir.join(format!("f{i:03}")), &data)
                        .unwrap_or_else(|e| panic!("f{i:03}: {e}"));
                }
            });
        }
    });
    // Uploads run (and retry) in the background, through the faults; sync waits for them.
    m.sync_ok();
    emu.set_faults(serde_json::json!({"fail_rate": 0.0, "reset_rate": 0.0}));
    let on_server = server_entry(&emu, "many").expect("many");
    let listed = emu.list(Space::Shared, Some(on_server.id));
    assert_eq!(listed.len(), FILES);
    for i in 0..FILES {
        let want = sha256(&test_bytes(1000 + i as u64, 100 + i * 97));
        let got = server_sha(&emu, &format!("many/f{i:03}")).map(|(s, _)| s);
        assert_eq!(got, Some(want), "f{i:03}");
    }
}

#[test]
fn kill_9_during_an_upload_then_remount_finishes_it() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let data = test_bytes(77, 48 * MIB);
    let want = sha256(&data);
    let m = mount(
        &emu,
        cache.path(),
        &["--chunk-size", "1", "--upload-concurrency", "2"],
    );
    // Slow parts, so the upload is surely running when the daemon is killed.
    emu.set_faults(serde_json::json!({"latency_ms": 150}));
    let target = m.join("crash.bin");
    let writer = std::thread::spawn(move || std::fs::write(target, &data));
    let uploading = wait_until(START_WAIT, || {
        spool_files(cache.path()).iter().any(|p| {
            p.to_string_lossy().ends_with(".journal.json")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"uploading\""))
        })
    });
    assert!(uploading, "the upload never started:\n{}", m.output_text());
    let pid = m.pid().expect("mount pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
    // The writer's close fails (the daemon is gone); the bytes are in the journaled spool.
    let _ = writer.join();
    drop(m);
    emu.set_faults(serde_json::json!({"latency_ms": 0}));
    assert!(server_entry(&emu, "crash.bin").is_none());

    let m2 = mount(&emu, cache.path(), &[]);
    let arrived = wait_until(START_WAIT, || server_entry(&emu, "crash.bin").is_some());
    assert!(arrived, "not recovered:\n{}", m2.output_text());
    assert_eq!(
        server_sha(&emu, "crash.bin"),
        Some((want.clone(), 48 * MIB as u64))
    );
    assert_eq!(sha_file(&m2.join("crash.bin")), want);
    assert!(
        wait_until(START_WAIT, || spool_files(cache.path()).is_empty()),
        "spool left after recovery"
    );
}

#[test]
fn sigterm_uploads_what_is_still_open_before_exiting() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let mut m = mount(&emu, cache.path(), &[]);
    let mut f = File::create(m.join("open.txt")).expect("create");
    f.write_all(b"written, never closed").expect("write");
    // The file is still open (not uploaded) when the daemon is told to stop.
    assert_eq!(m.stop().code(), Some(0), "{}", m.output_text());
    drop(f);
    assert_eq!(
        server_sha(&emu, "open.txt").map(|(s, _)| s),
        Some(sha256(b"written, never closed"))
    );
}

#[test]
fn eight_writers_and_a_reader_at_once() {
    const WRITERS: usize = 8;
    const SIZE: usize = 6 * MIB;
    let emu = EmulatorProcess::start();
    let existing = test_bytes(5, 24 * MIB);
    emu.upload(Space::Shared, None, "existing.bin", &existing);
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &[]);
    let want_existing = sha256(&existing);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let path = m.join(&format!("w{w}.bin"));
            s.spawn(move || {
                let data = test_bytes(300 + w as u64, SIZE);
                let mut f = File::create(&path).expect("create");
                for piece in data.chunks(64 * 1024) {
                    f.write_all(piece).expect("write");
                }
                f.sync_all().expect("fsync");
            });
        }
        let reader = m.join("existing.bin");
        let want = want_existing.clone();
        s.spawn(move || {
            for _ in 0..3 {
                assert_eq!(sha_file(&reader), want, "read while others write");
            }
        });
    });
    for w in 0..WRITERS {
        let want = sha256(&test_bytes(300 + w as u64, SIZE));
        assert_eq!(sha_file(&m.join(&format!("w{w}.bin"))), want);
        assert_eq!(
            server_sha(&emu, &format!("w{w}.bin")),
            Some((want, SIZE as u64))
        );
    }
}

/// `git clone` into the mount, then what git does next, with every folder revalidated when it
/// is opened (`--dir-refresh 0`) and the kernel's caches dropped: every file and folder the
/// clone made stays shown. (A folder made here showed only through the inodes the kernel held:
/// once they were forgotten, `.git/logs/refs` and the files under `.git/objects/xx/` vanished
/// until their folders were listed again, and git said "not a git repository".)
#[test]
fn git_clone_then_status_log_and_fsck_after_the_kernel_forgets() {
    let emu = EmulatorProcess::start();
    let cache = tempdir();
    let m = mount(&emu, cache.path(), &["--dir-refresh", "0"]);
    let src = tempdir();
    let commit = "git -c user.name=t -c user.email=t@example.com commit -q";
    sh(&format!(
        "cd '{}' && git init -q && mkdir -p a/b c && echo one > a/b/f && echo two > c/g \
         && git add . && {commit} -m one && echo three >> a/b/f && {commit} -am two",
        src.path().display()
    ));
    run_ok(
        Command::new("git")
            .args(["clone", "-q"])
            .arg(src.path())
            .arg(m.join("repo")),
    );
    let git = |args: &[&str]| {
        let out = run(Command::new("git").arg("-C").arg(m.join("repo")).args(args));
        assert!(
            out.status.success(),
            "git {args:?} failed with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let check = |when: &str| {
        assert_eq!(git(&["status", "--porcelain"]), "", "{when}: a clean tree");
        assert_eq!(
            git(&["log", "--format=%s"]),
            "two\none\n",
            "{when}: the history"
        );
        git(&["fsck", "--full"]);
        assert_eq!(
            std::fs::read_to_string(m.join("repo/a/b/f")).expect("read a/b/f"),
            "one\nthree\n",
            "{when}"
        );
    };
    check("right after the clone");
    m.sync_ok();
    check("once everything landed");
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop the kernel's dentries and inodes");
    check("after the kernel forgot its inodes");
    assert_eq!(
        tree_sums(&m.join("repo/.git")),
        server_tree_sums(&emu, "repo/.git"),
        "the mount shows what the server holds"
    );
}
