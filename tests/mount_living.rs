//! Living with a mount, end to end against a real emulator process: the `mount.vagonfs`
//! helper and `umount`, `vagonfs status` during an upload, `vagonfs unmount` (graceful: waits
//! and loses nothing; forced: leaves a spool the next mount uploads), the metrics endpoint,
//! another user kept away from the control socket, and no secret in a debug log.
//!
//! Uploads are slowed by the emulator's per-request latency and 1 MiB parts, so that a copy
//! is still uploading when the test looks; the assertions are about what is seen (progress
//! that only grows, bytes that arrive intact), never about how long anything takes.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use vagonfs::api::{FileEntry, ObjectType, Space};

const MIB: usize = 1024 * 1024;
/// Added latency per emulator request while an upload is watched, ms.
const SLOW_MS: &str = "150";
/// Range size when fetching a file straight from the emulator.
const FETCH_RANGE: u64 = 16 * MIB as u64;
/// Bound on an upload or a recovery finishing (generous: the machine is shared).
const UPLOAD_WAIT: Duration = Duration::from_secs(180);

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vagonfs-living-")
        .tempdir()
        .expect("tempdir")
}

/// `vagonfs ARGS` with the test's environment.
fn vagonfs(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vagonfs"));
    cmd.args(args);
    cmd
}

/// `vagonfs status MOUNTPOINT --json`: the mount's snapshot (panics when it has none).
fn status(mountpoint: &Path) -> serde_json::Value {
    let out = run(vagonfs(&["status", "--json"]).arg(mountpoint));
    assert!(out.status.success(), "status failed: {}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", text(&out)));
    let report = &reports[0];
    assert!(
        report["status"].is_object(),
        "no status for {}: {report}",
        mountpoint.display()
    );
    report["status"].clone()
}

/// `(bytes_sent, size)` of the upload whose path ends with `name`, if listed.
fn upload_of(snapshot: &serde_json::Value, name: &str) -> Option<(u64, u64)> {
    snapshot["uploads"].as_array()?.iter().find_map(|u| {
        let path = u["path"].as_str()?;
        path.ends_with(name).then(|| {
            (
                u["bytes_sent"].as_u64().unwrap_or(0),
                u["size"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// The shared storage's root entry `name`.
fn server_entry(emu: &EmulatorProcess, space: Space, name: &str) -> Option<FileEntry> {
    emu.list(space, None).into_iter().find(|e| e.name == name)
}

/// SHA-256 and size of root file `name` fetched straight from the emulator.
fn server_sha(emu: &EmulatorProcess, space: Space, name: &str) -> Option<(String, u64)> {
    let entry = server_entry(emu, space, name)?;
    assert_eq!(entry.object_type, ObjectType::File);
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

/// A local file of `len` test bytes; its SHA-256.
fn local_file(dir: &Path, name: &str, seed: u64, len: usize) -> (PathBuf, String) {
    let data = test_bytes(seed, len);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write local file");
    (path, sha256(&data))
}

/// `cp FROM TO` into the mount, as its own process (its close waits for the upload). Not a
/// thread of this test: the status commands the test forks would inherit the open file, and
/// every close of an inherited descriptor is a FUSE flush that uploads what is there so far.
/// cp's stderr is captured: a copy that a test cuts on purpose fails its close, and that
/// expected failure must not read as a problem in a passing run.
fn copy_in_background(from: PathBuf, to: PathBuf) -> std::process::Child {
    Command::new("cp")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cp")
}

/// Polls `status` until the upload of `name` shows progress that grew at least once; returns
/// every `(sent, size)` seen. Panics if the copy ends first.
fn watch_upload_grow(
    mountpoint: &Path,
    name: &str,
    copy: &mut std::process::Child,
) -> Vec<(u64, u64)> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let grew = wait_until(UPLOAD_WAIT, || {
        assert!(
            matches!(copy.try_wait(), Ok(None)),
            "the copy finished before its upload was seen growing: {seen:?}"
        );
        if let Some(progress) = upload_of(&status(mountpoint), name) {
            seen.push(progress);
        }
        let sent: Vec<u64> = seen.iter().map(|s| s.0).filter(|s| *s > 0).collect();
        sent.windows(2).any(|w| w[1] > w[0])
    });
    assert!(grew, "no growing upload progress seen: {seen:?}");
    seen
}

fn pid_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Cleans up a daemon started outside [`TestMount`] (the helper detaches): lazy unmount and
/// SIGKILL of its PID if still there.
struct DaemonGuard {
    mountpoint: PathBuf,
    pid: Option<i32>,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        if let Some(pid) = self.pid
            && pid_alive(pid)
        {
            let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn helper_mounts_umount_unmounts_and_the_debug_log_keeps_secrets() {
    let emu = EmulatorProcess::start();
    let scratch = Scratch::new();
    let dir = tempdir();
    let helper = dir.path().join("mount.vagonfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vagonfs"), &helper).expect("symlink");
    let log = dir.path().join("mount.log");
    let cache = dir.path().join("cache");
    let options = format!(
        "rw,nodev,_netdev,cache_dir={},log_level=debug,log_file={}",
        cache.display(),
        log.display()
    );
    // mount(8)'s convention: `mount.vagonfs SOURCE DIR -o OPTIONS`.
    let mut cmd = Command::new(&helper);
    cmd.arg("machine:1")
        .arg(&scratch.mountpoint)
        .args(["-o", &options])
        .env("HOME", &scratch.home);
    for (key, value) in emu.mount_env() {
        cmd.env(key, value);
    }
    let mut guard = DaemonGuard {
        mountpoint: scratch.mountpoint.clone(),
        pid: None,
    };
    let out = run(cmd.stdin(Stdio::null()));
    assert!(out.status.success(), "mount.vagonfs failed: {}", text(&out));
    // The helper returns once the detached daemon reports the mount ready.
    assert!(is_mounted(&scratch.mountpoint), "{}", text(&out));
    let snap = status(&scratch.mountpoint);
    let pid = snap["pid"].as_i64().expect("pid") as i32;
    guard.pid = Some(pid);
    assert_eq!(snap["target"], "machine 1");
    assert_eq!(snap["api_url"], emu.url.as_str());
    let source = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .find(|l| l.contains(&scratch.mountpoint.display().to_string()))
        .map(str::to_string)
        .expect("mountinfo line");
    assert!(
        source.contains(" fuse.vagonfs vagonfs:machine:1 "),
        "{source}"
    );

    // Write, read back and list: uploads and downloads go through presigned URLs.
    let data = test_bytes(7, 3 * MIB + 5);
    std::fs::write(scratch.mountpoint.join("notes.bin"), &data).expect("write into the mount");
    let mut back = Vec::new();
    std::fs::File::open(scratch.mountpoint.join("notes.bin"))
        .and_then(|mut f| f.read_to_end(&mut back))
        .expect("read back");
    assert_eq!(sha256(&back), sha256(&data));
    let names: Vec<String> = std::fs::read_dir(&scratch.mountpoint)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"notes.bin".to_string()), "{names:?}");

    // `umount DIR` unmounts; the daemon notices and exits.
    let out = run(Command::new("umount").arg(&scratch.mountpoint));
    assert!(out.status.success(), "umount failed: {}", text(&out));
    assert!(!is_mounted(&scratch.mountpoint));
    assert!(
        wait_until(STOP_WAIT, || !pid_alive(pid)),
        "the daemon {pid} did not exit after umount"
    );
    assert_eq!(
        server_sha(&emu, Space::Machine(1), "notes.bin"),
        Some((sha256(&data), data.len() as u64))
    );

    let log_text = std::fs::read_to_string(&log).expect("log file");
    assert!(
        log_text.lines().count() > 10 && log_text.contains("DEBUG"),
        "a debug log was expected:\n{log_text}"
    );
    for secret in [API_SECRET, "sig=", "Signature"] {
        assert!(
            !log_text.contains(secret),
            "the log contains {secret:?}:\n{log_text}"
        );
    }
}

#[test]
fn status_shows_upload_progress_and_unmount_waits_and_loses_nothing() {
    let emu = EmulatorProcess::start_with(&["--latency-ms", SLOW_MS]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let cache_arg = cache.display().to_string();
    let mut mount = TestMount::start(
        &emu,
        &[
            "--shared",
            "--sync-close",
            "--chunk-size",
            "1",
            "--upload-concurrency",
            "1",
            "--cache-dir",
            &cache_arg,
        ],
    );
    let len = 12 * MIB + 123;
    let (src, sum) = local_file(dir.path(), "big.bin", 11, len);
    let mut copy = copy_in_background(src, mount.join("big.bin"));
    let seen = watch_upload_grow(&mount.path, "big.bin", &mut copy);
    // Progress only grows, and is of the whole file.
    for pair in seen.windows(2) {
        assert!(pair[1].0 >= pair[0].0, "progress went back: {seen:?}");
    }
    for (sent, size) in &seen {
        assert_eq!(*size, len as u64, "{seen:?}");
        assert!(sent <= size, "{seen:?}");
    }

    // Graceful unmount while the upload runs: waits for it, then unmounts.
    let out = run(vagonfs(&["unmount"]).arg(&mount.path));
    assert!(
        out.status.success(),
        "vagonfs unmount failed: {}",
        text(&out)
    );
    assert!(!is_mounted(&mount.path));
    let copied = copy.wait_with_output().expect("wait for cp");
    assert!(
        copied.status.success(),
        "cp failed: {}: {}",
        copied.status,
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(
        server_sha(&emu, Space::Shared, "big.bin"),
        Some((sum, len as u64))
    );
    let status = mount.stop();
    assert!(status.success(), "the daemon exited with {status}");
}

#[test]
fn forced_unmount_leaves_a_spool_that_the_next_mount_uploads() {
    let emu = EmulatorProcess::start_with(&["--latency-ms", SLOW_MS]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let cache_arg = cache.display().to_string();
    let args = [
        "--shared",
        "--sync-close",
        "--chunk-size",
        "1",
        "--upload-concurrency",
        "1",
        "--cache-dir",
        &cache_arg,
    ];
    let mut mount = TestMount::start(&emu, &args);
    let len = 8 * MIB + 7;
    let (src, sum) = local_file(dir.path(), "cut.bin", 12, len);
    let mut copy = copy_in_background(src, mount.join("cut.bin"));
    watch_upload_grow(&mount.path, "cut.bin", &mut copy);

    // From now on every request fails: the upload cannot finish, the client retries (and the
    // retries are counted).
    emu.set_faults(serde_json::json!({"fail_rate": 1.0}));
    let retried = wait_until(UPLOAD_WAIT, || {
        status(&mount.path)["retries"].as_u64().unwrap_or(0) > 0
    });
    assert!(retried, "no retry counted: {}", status(&mount.path));

    let out = run(vagonfs(&["unmount", "--force"]).arg(&mount.path));
    assert!(
        out.status.success(),
        "unmount --force failed: {}",
        text(&out)
    );
    assert!(!is_mounted(&mount.path));
    let status = mount.stop();
    assert!(status.success(), "the daemon exited with {status}");
    // The copy saw its close fail (or the connection end); either way it is over. Its
    // "cp: failed to close ...: Input/output error" is expected here, so it is not printed.
    let _ = copy.wait_with_output().expect("wait for cp");
    emu.set_faults(serde_json::json!({"fail_rate": 0.0, "latency_ms": 0}));
    assert!(
        server_entry(&emu, Space::Shared, "cut.bin").is_none(),
        "the upload was cut: nothing may be listed yet"
    );

    // The next mount with the same cache folder uploads what was left.
    let _again = TestMount::start(&emu, &args);
    let arrived = wait_until(UPLOAD_WAIT, || {
        server_entry(&emu, Space::Shared, "cut.bin").is_some_and(|e| e.size == len as u64)
    });
    assert!(arrived, "the spool left by --force was not uploaded");
    assert_eq!(
        server_sha(&emu, Space::Shared, "cut.bin"),
        Some((sum, len as u64))
    );
}

/// The `name{labels} value` samples of a Prometheus text page; panics on a malformed line.
fn samples(page: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed sample line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

#[test]
fn metrics_endpoint_serves_counters_after_an_ls() {
    let emu = EmulatorProcess::start();
    emu.upload(Space::Shared, None, "hello.txt", b"hello");
    let mount = TestMount::start(&emu, &["--shared", "--metrics-addr", "127.0.0.1:0"]);
    // The daemon says where it serves (port 0 picked a free one).
    const SERVING: &str = "serving metrics at http://";
    let mut url = None;
    assert!(
        wait_until(START_WAIT, || {
            let out = mount.output_text();
            url = out.find(SERVING).map(|at| {
                let rest = &out[at + SERVING.len()..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                format!("http://{}", &rest[..end])
            });
            url.is_some()
        }),
        "no metrics address in the output:\n{}",
        mount.output_text()
    );
    let url = url.expect("metrics url");
    let names: Vec<String> = std::fs::read_dir(&mount.path)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["hello.txt".to_string()]);

    let (content_type, page) = rt().block_on(async {
        let response = vagonfs_api::http::tls::client()
            .get(&url)
            .send()
            .await
            .expect("GET /metrics");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (content_type, response.text().await.expect("metrics body"))
    });
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = samples(&page);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
    };
    assert!(value("vagonfs_api_requests_total{endpoint=\"list_files\"}") > 0.0);
    assert!(value("vagonfs_fuse_ops_total{op=\"opendir\"}") > 0.0);
    assert!(
        value("vagonfs_cache_misses_total{cache=\"dir\"}")
            + value("vagonfs_cache_hits_total{cache=\"dir\"}")
            > 0.0
    );

    // A file written and closed is uploaded; its outcome reaches the upload counters.
    std::fs::write(mount.path.join("new.txt"), b"new").expect("write new.txt");
    const COMPLETED: &str = "vagonfs_uploads_completed_total";
    let mut last = String::new();
    assert!(
        wait_until(START_WAIT, || {
            last = rt().block_on(async {
                match vagonfs_api::http::tls::client().get(&url).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            });
            crate::samples(&last)
                .iter()
                .any(|(s, v)| s == COMPLETED && *v >= 1.0)
        }),
        "no completed upload counted:\n{last}"
    );
}

#[test]
fn another_user_can_neither_see_nor_unmount_the_mount() {
    let emu = EmulatorProcess::start();
    let mount = TestMount::start(&emu, &["--shared"]);
    let nobody = nix::unistd::Uid::from_raw(65534);
    let as_nobody = |args: &[&str]| {
        let mut cmd = vagonfs(args);
        cmd.arg(&mount.path)
            .uid(nobody.as_raw())
            .gid(65534)
            .env("HOME", "/")
            .env_remove("XDG_RUNTIME_DIR");
        run(&mut cmd)
    };
    let out = as_nobody(&["status", "--json"]);
    let reports: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(
        reports[0]["status"].is_null(),
        "another user got a status: {}",
        text(&out)
    );
    let out = as_nobody(&["unmount"]);
    assert!(
        !out.status.success(),
        "another user unmounted: {}",
        text(&out)
    );
    let out = as_nobody(&["unmount", "--force"]);
    assert!(
        !out.status.success(),
        "another user force-unmounted: {}",
        text(&out)
    );
    assert!(is_mounted(&mount.path));
    // The owner still can.
    assert!(status(&mount.path)["pid"].is_number());
}

/// `vagonfs ls --live ARGS` against `emu` (or with `env` only).
fn ls_live(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let home = tempdir();
    let mut cmd = vagonfs(&["ls", "--live"]);
    cmd.args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VAGON_") {
            cmd.env_remove(&key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    run(&mut cmd)
}

#[test]
fn ls_live_lists_a_running_machine_and_explains_the_others() {
    let emu = EmulatorProcess::start();
    let env = emu.mount_env();
    let out = ls_live(&["1", "C:\\"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, ["Program Files\\", "Users\\", "Windows\\"]);
    let out = ls_live(&["1", "C:\\Users\\Administrator\\Desktop", "--json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed[0]["name"], "readme.txt");
    assert_eq!(listed[0]["is_directory"], false);
    // The default path is C:\.
    let out = ls_live(&["1"], &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Users\\"));

    // Machine 2 exists but is off; 9 does not exist; a missing folder; no credentials.
    let out = ls_live(&["2", "C:\\"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("machine 2 is not running; start it first"),
        "{}",
        text(&out)
    );
    let out = ls_live(&["9"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("machine 9 was not found"),
        "{}",
        text(&out)
    );
    let out = ls_live(&["1", "C:\\Nope"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no folder 'C:\\Nope'"),
        "{}",
        text(&out)
    );
    let out = ls_live(&["1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no Vagon credentials configured"),
        "{}",
        text(&out)
    );
}
