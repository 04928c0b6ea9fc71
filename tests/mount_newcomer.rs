//! No surprises for a new user, end to end against a real emulator process: no demo behind a
//! system mount's back, one mount per folder, a dead mount point cleared, errors that name
//! their cause, quiet plain-text logs, and modification times that survive a remount (`rsync
//! -a` twice sends nothing the second time).
//!
//! Assertions are about what is printed, mounted and sent; never about speed.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// mount(8)'s "mount failure" exit status.
const MOUNT_FAILURE: i32 = 32;
/// `vagonfs mount`'s usage exit status.
const EXIT_USAGE: i32 = 2;

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `vagonfs status --json MOUNTPOINT`'s snapshot, if a daemon answers.
fn status(mountpoint: &Path) -> Option<serde_json::Value> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_vagonfs"))
        .args(["status", "--json"])
        .arg(mountpoint));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let snap = reports[0]["status"].clone();
    snap.is_object().then_some(snap)
}

/// Stops a daemon started with `--daemon` (or by the helper): `vagonfs unmount --force`, a
/// lazy unmount, then SIGKILL of its PID.
struct Detached<'a> {
    mountpoint: &'a Path,
    pid: Option<i32>,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        if is_mounted(self.mountpoint) {
            let _ = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
                .args(["unmount", "--force"])
                .arg(self.mountpoint)
                .stdin(Stdio::null())
                .output();
        }
        if is_mounted(self.mountpoint) {
            lazy_unmount(self.mountpoint);
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn no_credentials_means_no_demo_for_the_helper_and_daemon() {
    let scratch = Scratch::new();
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("mount.vagonfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vagonfs"), &helper).unwrap();

    // The helper, as mount(8) runs it, with no credentials anywhere: 32, nothing mounted.
    let mut cmd = Command::new(&helper);
    cmd.arg("machine:1").arg(&scratch.mountpoint);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VAGON_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", &scratch.home)
        .env("XDG_CONFIG_HOME", scratch.home.join(".config"))
        .env("XDG_DATA_HOME", scratch.home.join(".local/share"))
        .env("XDG_CACHE_HOME", scratch.home.join(".cache"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(MOUNT_FAILURE), "{}", text(&out));
    assert!(text(&out).contains("no credentials: "), "{}", text(&out));
    assert!(!is_mounted(&scratch.mountpoint));
    assert!(
        !scratch.home.join(".local/share/vagonfs/demo").exists(),
        "no demo emulator may have started"
    );

    // `--help` is the usage, not an error.
    let out = run(Command::new(&helper).arg("--help"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("usage: mount.vagonfs SOURCE DIR"),
        "{}",
        text(&out)
    );

    // `vagonfs mount --daemon` without credentials: the same message, the usage status.
    let out = run(&mut scratch.command(&["--machine", "1", "--daemon"], &[]));
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out));
    assert!(text(&out).contains("no credentials: "), "{}", text(&out));
    assert!(!is_mounted(&scratch.mountpoint));
}

#[test]
fn one_mount_per_folder_and_a_dead_mount_point_is_mounted_again() {
    let emu = EmulatorProcess::start();
    let env = emu.mount_env();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").display().to_string();
    // A mount of the same storage with its own cache folder, mounted first: the message below
    // must name the mount holding the folder, not the first one of that storage it finds.
    let decoy_cache = dir.path().join("decoy-cache").display().to_string();
    let decoy = TestMount::start(&emu, &["--machine", "1", "--cache-dir", &decoy_cache]);
    let first = TestMount::start(&emu, &["--machine", "1", "--cache-dir", &cache]);

    // A second mount on the same folder is refused and names what is there.
    let mut second = Command::new(env!("CARGO_BIN_EXE_vagonfs"));
    second
        .args(["mount", "--shared", "--daemon"])
        .arg(&first.path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run(&mut second);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out));
    assert!(
        text(&out).contains("a vagonfs mount of machine:1 is already mounted there"),
        "{}",
        text(&out)
    );

    // Another mount of the same storage with the same cache folder: the lock names the other
    // mount and --cache-dir.
    let other = Scratch::new();
    let out = run(&mut other.command(&["--machine", "1", "--cache-dir", &cache, "--daemon"], &env));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("in use by another vagonfs mount")
            && said.contains(&first.path.display().to_string())
            && !said.contains(&decoy.path.display().to_string())
            && said.contains("--cache-dir"),
        "{said}"
    );
    drop(decoy);
    assert!(!is_mounted(&other.mountpoint));

    // kill -9: the mount point is dead (ENOTCONN) ...
    let pid = first.pid().expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let dead = wait_until(STOP_WAIT, || {
        std::fs::metadata(&first.path)
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::ENOTCONN)
    });
    assert!(dead, "the mount point did not go dead after kill -9");
    // ... and mounting there again clears it first, says so, and mounts.
    let mut again = Command::new(env!("CARGO_BIN_EXE_vagonfs"));
    again
        .args(["mount", "--machine", "1", "--daemon", "--cache-dir", &cache])
        .arg(&first.path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run(&mut again);
    let mut guard = Detached {
        mountpoint: &first.path,
        pid: None,
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("was dead (its daemon is gone): detached it"),
        "{}",
        text(&out)
    );
    guard.pid = status(&first.path)
        .and_then(|s| s["pid"].as_i64())
        .map(|p| p as i32);
    assert!(guard.pid.is_some(), "no daemon answers for the new mount");
    std::fs::read_dir(&first.path).expect("the new mount answers");
    let mounts = mount_points()
        .into_iter()
        .filter(|p| p == &first.path)
        .count();
    assert_eq!(mounts, 1, "exactly one mount on the folder");
    drop(guard);
    drop(first);
}

#[test]
fn errors_name_the_cause() {
    let emu = EmulatorProcess::start();
    let with_url = |url: String| {
        vec![
            ("VAGON_API_URL", url),
            ("VAGON_API_KEY", API_KEY.to_string()),
            ("VAGON_API_SECRET", API_SECRET.to_string()),
        ]
    };
    // A server that answers 404 everywhere is not a missing machine.
    let scratch = Scratch::new();
    let out = run(&mut scratch.command(
        &["--machine", "1", "--daemon"],
        &with_url(format!("{}/not-the-api", emu.url)),
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not answer as the Vagon API"),
        "{}",
        text(&out)
    );
    // The right API and a machine that does not exist.
    let out =
        run(&mut scratch.command(&["--machine", "99", "--daemon"], &with_url(emu.url.clone())));
    assert!(
        text(&out).contains("machine 99 was not found in this organization"),
        "{}",
        text(&out)
    );

    // Nobody listens: progress lines while retrying, then one line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&mut scratch.command(&["--shared", "--daemon"], &with_url(url.clone())));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "cannot reach {url}: connection refused (retrying, 1/"
        )),
        "{said}"
    );
    let last = said.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("vagonfs mount: cannot reach {url}: connection refused"),
        "{said}"
    );
    assert!(!is_mounted(&scratch.mountpoint));
}

#[test]
fn logs_are_plain_and_quiet_when_piped() {
    let emu = EmulatorProcess::start();
    let mut mount = TestMount::start(&emu, &["--machine", "1"]);
    for i in 0..3 {
        std::fs::write(mount.join(&format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    assert_eq!(std::fs::read(mount.join("f2.txt")).unwrap(), b"file 2\n");
    let status = mount.stop();
    assert!(status.success(), "{status}");
    let said = mount.output_text();
    assert!(
        !said.contains('\u{1b}'),
        "ANSI escapes in a piped log:\n{said}"
    );
    assert!(
        !said.contains("upload complete"),
        "per-upload lines at info:\n{said}"
    );
    assert!(said.contains("Ctrl-C to stop"), "no Ctrl-C hint:\n{said}");
}

/// Files under `root` with their sizes and whole-second mtimes, for a local tree.
fn make_tree(root: &Path) -> usize {
    let mut n = 0;
    for (dir, files) in [("", 4), ("docs", 5), ("docs/deep", 3)] {
        let folder = root.join(dir);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..files {
            let path = folder.join(format!("file-{i}.txt"));
            std::fs::write(&path, format!("{dir} {i}\n").repeat(i + 1)).unwrap();
            // Old times, as an archive or a backup has them.
            let out = run(Command::new("touch")
                .args(["-d", &format!("2021-03-0{} 10:1{i}:0{i}", 1 + i % 8)])
                .arg(&path));
            assert!(out.status.success(), "{}", text(&out));
            n += 1;
        }
    }
    n
}

/// `rsync -a --itemize-changes SRC/ DST/`: the lines of files it sent.
fn rsync_sent(src: &Path, dst: &Path) -> Vec<String> {
    let out = run(Command::new("rsync")
        .args(["-a", "--itemize-changes"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display())));
    assert!(out.status.success(), "rsync failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(">f") || l.starts_with("<f"))
        .map(str::to_string)
        .collect()
}

#[test]
fn rsync_twice_across_a_remount_sends_nothing_the_second_time() {
    let emu = EmulatorProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = make_tree(&src);
    let cache = dir.path().join("cache").display().to_string();
    let args = ["--machine", "1", "--cache-dir", &cache];

    let mut mount = TestMount::start(&emu, &args);
    let first = rsync_sent(&src, &mount.path);
    assert_eq!(first.len(), files, "{first:?}");
    // In the same mount: nothing to send.
    assert_eq!(rsync_sent(&src, &mount.path), Vec::<String>::new());
    assert!(mount.stop().success());

    // A fresh mount (same host, same cache folder) shows the times rsync set.
    let mut mount = TestMount::start(&emu, &args);
    let want = std::fs::metadata(src.join("docs/deep/file-2.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let shown = std::fs::metadata(mount.join("docs/deep/file-2.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(shown, want);
    assert_eq!(
        rsync_sent(&src, &mount.path),
        Vec::<String>::new(),
        "rsync sent files again after a remount:\n{}",
        mount.output_text()
    );

    // A file changed on the server (another host): its remembered time is dropped, and rsync
    // sends it again.
    let entry = emu
        .list(vagonfs::api::Space::Machine(1), None)
        .into_iter()
        .find(|e| e.name == "file-0.txt")
        .expect("file-0.txt on the server");
    let api = emu.client();
    rt().block_on(api.delete(entry.id))
        .expect("delete on the server");
    emu.upload(vagonfs::api::Space::Machine(1), None, "file-0.txt", b" 0\n");
    assert!(mount.stop().success());
    let mount = TestMount::start(&emu, &args);
    let shown = std::fs::metadata(mount.join("file-0.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let want = std::fs::metadata(src.join("file-0.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_ne!(shown, want, "a changed file must not keep the old time");
    assert_eq!(
        rsync_sent(&src, &mount.path),
        vec![">f..t...... file-0.txt".to_string()]
    );
}
