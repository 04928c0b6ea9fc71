//! Shared harness of the mount tests: a real emulator process, a client to seed it, and a
//! [`TestMount`] guard around a real `vagonfs mount` process.
//!
//! Guarantees the tests rely on:
//! - every process started here is stopped by its PID on drop (emulator: SIGKILL; mount:
//!   SIGTERM, a bounded wait, then `umount -l` and SIGKILL), so a failing test never leaves a
//!   process or a mount behind;
//! - each mount gets a unique empty temporary mount point and its own HOME / XDG folders, so no
//!   real credentials or demo data of the machine leak in;
//! - waits are bounded (generously: the machine is shared) and fail with the processes' output,
//!   never hang; no assertion is about speed.
//!
//! The output of every child is echoed to the test's stderr with a prefix, so `cargo test --
//! --nocapture` shows it, and a failing test prints it.

#![allow(dead_code)] // each test binary uses a part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use vagonfs::api::{
    CompletedPart, CreateRequest, FileEntry, FilesApi, ListQuery, MAX_PER_PAGE, Machine,
    ObjectType, Space,
};

/// The key pair the test emulators accept.
pub const API_KEY: &str = "vagonfs-test-key";
pub const API_SECRET: &str = "vagonfs-test-secret";
/// What the emulator prints once it accepts connections.
const LISTENING: &str = "vagonfs emulator listening on ";
/// Bound on a process coming up (emulator listening, mount visible).
pub const START_WAIT: Duration = Duration::from_secs(90);
/// Bound on a process going away after SIGTERM (the mount waits up to 10 s for a busy
/// session itself).
pub const STOP_WAIT: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits.
const POLL: Duration = Duration::from_millis(50);
/// Part size used when seeding, MiB.
const SEED_CHUNK_MIB: u64 = 8;
const MIB: u64 = 1024 * 1024;
/// Uploads in flight at once when seeding many files.
pub const SEED_CONCURRENCY: usize = 16;

/// The runtime the harness's async client runs on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// `len` deterministic pseudo-random bytes for `seed`.
pub fn test_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Hex SHA-256.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Spawn a thread echoing `stream` line by line with `prefix`, keeping the lines, and sending
/// each to `tx` (when given).
fn drain<R: Read + Send + 'static>(
    stream: R,
    prefix: String,
    lines: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{prefix}] {line}");
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(line);
            }
        }
    });
}

/// A `vagonfs emulator` process on a free loopback port, killed on drop.
pub struct EmulatorProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data folder (kept across [`EmulatorProcess::restart`]).
    data: Arc<TempDir>,
    pub output: Arc<Mutex<Vec<String>>>,
    client: Arc<dyn FilesApi>,
}

impl EmulatorProcess {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `vagonfs emulator` arguments (e.g. `--link-ttl 2`).
    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempfile::Builder::new()
            .prefix("vagonfs-emu-")
            .tempdir()
            .expect("tempdir");
        Self::spawn(Arc::new(data), extra)
    }

    /// Stop this emulator and start another on the same data, with `extra` arguments (e.g.
    /// faults switched on after seeding). The port changes.
    pub fn restart(mut self, extra: &[&str]) -> Self {
        let data = self.data.clone();
        // Gracefully, so the data folder is left as a clean shutdown leaves it.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        wait_until(STOP_WAIT, || !matches!(self.child.try_wait(), Ok(None)));
        drop(self);
        Self::spawn(data, extra)
    }

    fn spawn(data: Arc<TempDir>, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vagonfs"))
            .arg("emulator")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vagonfs emulator");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            drain(
                out,
                format!("emulator {pid}"),
                output.clone(),
                Some(tx.clone()),
            );
        }
        if let Some(err) = child.stderr.take() {
            drain(err, format!("emulator {pid}"), output.clone(), Some(tx));
        }
        let deadline = Instant::now() + START_WAIT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(LISTENING) {
                        break line[at + LISTENING.len()..].trim().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the emulator did not say it was listening within {START_WAIT:?}");
                }
            }
        };
        let client = client_for(&url);
        EmulatorProcess {
            child,
            url,
            data,
            output,
            client,
        }
    }

    /// The emulator's process id (e.g. to SIGSTOP it: an API that stops answering).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of this emulator.
    pub fn client(&self) -> Arc<dyn FilesApi> {
        self.client.clone()
    }

    /// The environment that points `vagonfs mount` at this emulator.
    pub fn mount_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VAGON_API_URL", self.url.clone()),
            ("VAGON_API_KEY", API_KEY.to_string()),
            ("VAGON_API_SECRET", API_SECRET.to_string()),
        ]
    }

    /// `GET /_emulator/stats`: requests handled, per family.
    pub fn stats(&self) -> serde_json::Value {
        self.admin_get("stats")
    }

    /// `POST /_emulator/reset-stats`: the counters and peaks start again from zero.
    pub fn reset_stats(&self) {
        self.admin_post("reset-stats", None);
    }

    /// `GET /_emulator/peaks`: the most requests of each family handled at once.
    pub fn peaks(&self) -> serde_json::Value {
        self.admin_get("peaks")
    }

    fn admin_get(&self, what: &str) -> serde_json::Value {
        let url = format!("{}/_emulator/{what}", self.url);
        rt().block_on(async {
            let response = vagonfs_api::http::tls::client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET /_emulator/{what}: {e}"));
            assert!(
                response.status().is_success(),
                "{what}: HTTP {}",
                response.status()
            );
            response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_else(|e| panic!("{what} JSON: {e}"))
        })
    }

    /// The fault rates in force (`GET /_emulator/faults`).
    pub fn faults(&self) -> serde_json::Value {
        self.admin_get("faults")
    }

    /// Switch fault injection on or off (`POST /_emulator/faults`), e.g.
    /// `{"fail_rate": 0.2, "throttle_rate": 0.1, "reset_rate": 0.05}`.
    pub fn set_faults(&self, faults: serde_json::Value) {
        self.admin_post("faults", Some(&faults));
    }

    /// `POST /_emulator/{what}` with `body` as JSON (or none); fails the test unless it
    /// succeeds.
    pub fn admin_post(&self, what: &str, body: Option<&serde_json::Value>) {
        let url = format!("{}/_emulator/{what}", self.url);
        rt().block_on(async {
            let mut request = vagonfs_api::http::tls::client().post(&url);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST /_emulator/{what}: {e}"));
            assert!(
                response.status().is_success(),
                "{what}: HTTP {}",
                response.status()
            );
        })
    }

    /// Listing requests served so far (`GET /files`, `GET /machines/{id}/files`, recordings).
    pub fn list_requests(&self) -> u64 {
        list_request_count(&self.stats())
    }

    // Seeding, through the API like any client.

    pub fn machines(&self) -> Vec<Machine> {
        rt().block_on(async {
            let mut out = Vec::new();
            let mut page = 1;
            loop {
                let listed = self
                    .client
                    .list_machines(page, MAX_PER_PAGE)
                    .await
                    .expect("list machines");
                out.extend(listed.machines);
                match listed.next_page {
                    Some(next) if next > page => page = next,
                    _ => return out,
                }
            }
        })
    }

    /// Every entry of a folder (`parent` `None` = the space's root).
    pub fn list(&self, space: Space, parent: Option<u64>) -> Vec<FileEntry> {
        rt().block_on(list_all(self.client.as_ref(), space, parent))
    }

    pub fn mkdir(&self, space: Space, parent: Option<u64>, name: &str) -> u64 {
        rt().block_on(mkdir(self.client.as_ref(), space, parent, name))
            .unwrap_or_else(|err| panic!("mkdir {name}: {err}"))
    }

    /// Upload `data` as file `name`; returns its id.
    pub fn upload(&self, space: Space, parent: Option<u64>, name: &str, data: &[u8]) -> u64 {
        rt().block_on(upload(
            self.client.as_ref(),
            space,
            parent,
            name,
            Bytes::copy_from_slice(data),
        ))
        .unwrap_or_else(|err| panic!("upload {name}: {err}"))
    }

    /// Make many folders and files at once (names with a trailing `/` are folders).
    pub fn seed_many(&self, space: Space, parent: Option<u64>, items: Vec<(String, Bytes)>) {
        use futures::StreamExt;
        let api = self.client.clone();
        rt().block_on(async move {
            let results: Vec<Result<u64, String>> = futures::stream::iter(items)
                .map(|(name, data)| {
                    let api = api.clone();
                    async move {
                        match name.strip_suffix('/') {
                            Some(dir) => mkdir(api.as_ref(), space, parent, dir).await,
                            None => upload(api.as_ref(), space, parent, &name, data).await,
                        }
                    }
                })
                .buffer_unordered(SEED_CONCURRENCY)
                .collect()
                .await;
            for result in results {
                result.expect("seed");
            }
        });
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The number of folder listing requests in a `/_emulator/stats` answer.
pub fn list_request_count(stats: &serde_json::Value) -> u64 {
    stats
        .get("list_files")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no `list_files` count in the emulator stats: {stats}"))
}

fn client_for(url: &str) -> Arc<dyn FilesApi> {
    let creds = vagonfs::config::Credentials::new(url, API_KEY, API_SECRET).expect("credentials");
    let client =
        vagonfs::api::http::HttpFilesApi::new(creds, vagonfs::api::http::ClientOptions::default())
            .expect("HTTP client");
    Arc::new(client)
}

async fn list_all(api: &dyn FilesApi, space: Space, parent: Option<u64>) -> Vec<FileEntry> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let query = ListQuery {
            parent_id: parent,
            page,
            per_page: MAX_PER_PAGE,
            search: None,
        };
        let listed = api.list_files(space, &query).await.expect("list files");
        out.extend(listed.entries);
        match listed.next_page {
            Some(next) if next > page => page = next,
            _ => return out,
        }
    }
}

async fn mkdir(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
) -> Result<u64, String> {
    let created = api
        .create(&CreateRequest::directory(space, parent, name))
        .await
        .map_err(|e| e.to_string())?;
    Ok(created.id)
}

async fn upload(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
    data: Bytes,
) -> Result<u64, String> {
    let size = data.len() as u64;
    let created = api
        .create(&CreateRequest {
            space,
            parent_id: parent,
            name: name.to_string(),
            object_type: ObjectType::File,
            content_type: Some("application/octet-stream".into()),
            size: Some(size),
            chunk_size_mb: Some(SEED_CHUNK_MIB),
            overwrite: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let chunk = created.chunk_size_mb.unwrap_or(SEED_CHUNK_MIB) * MIB;
    let mut parts = Vec::new();
    for (i, url) in created.upload_urls.iter().enumerate() {
        let start = (i as u64 * chunk).min(size) as usize;
        let end = ((i as u64 + 1) * chunk).min(size) as usize;
        let etag = api
            .upload_part(url, data.slice(start..end))
            .await
            .map_err(|e| e.to_string())?;
        parts.push(CompletedPart {
            part_number: i as u32 + 1,
            etag,
        });
    }
    api.complete(created.id, &parts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(created.id)
}

/// Mount points in /proc/self/mountinfo (octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    vagonfs::daemon::mounts::parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mountpoint)
        .collect()
}

pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|p| p == path)
}

/// Wait (bounded) until `cond` holds; false if it never did.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A fresh, empty mount point (canonical path) plus a private HOME for the mount process.
pub struct Scratch {
    pub mountpoint: PathBuf,
    pub home: PathBuf,
    dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vagonfs-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let mountpoint = root.join("mnt");
        let home = root.join("home");
        std::fs::create_dir(&mountpoint).expect("mkdir mnt");
        std::fs::create_dir(&home).expect("mkdir home");
        Scratch {
            mountpoint,
            home,
            dir,
        }
    }

    /// `vagonfs mount <mountpoint> <args>` with a private HOME/XDG and no VAGON_* variables,
    /// plus `env`.
    pub fn command(&self, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vagonfs"));
        cmd.arg("mount").arg(&self.mountpoint).args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VAGON_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `vagonfs mount`, unmounted and stopped on drop whatever happened.
pub struct TestMount {
    child: Option<Child>,
    pub path: PathBuf,
    pub output: Arc<Mutex<Vec<String>>>,
    scratch: Scratch,
}

impl TestMount {
    /// Mount the emulator's storage with `args`; panics if it does not come up.
    pub fn start(emu: &EmulatorProcess, args: &[&str]) -> Self {
        Self::start_in(Scratch::new(), args, &emu.mount_env())
    }

    /// Mount in `scratch` with `env` added (no VAGON_* unless given: the embedded demo).
    pub fn start_in(scratch: Scratch, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = scratch
            .command(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vagonfs mount");
        let output = Arc::new(Mutex::new(Vec::new()));
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            drain(out, format!("mount {pid}"), output.clone(), None);
        }
        if let Some(err) = child.stderr.take() {
            drain(err, format!("mount {pid}"), output.clone(), None);
        }
        let path = scratch.mountpoint.clone();
        let mut mount = TestMount {
            child: Some(child),
            path,
            output,
            scratch,
        };
        let mut exited = None;
        let up = wait_until(START_WAIT, || {
            if let Some(child) = mount.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            is_mounted(&mount.path)
        });
        if let Some(status) = exited {
            mount.child = None;
            panic!(
                "vagonfs mount exited with {status} before mounting:\n{}",
                mount.output_text()
            );
        }
        assert!(
            up,
            "{} was not mounted within {START_WAIT:?}:\n{}",
            mount.path.display(),
            mount.output_text()
        );
        mount
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the mount process printed so far.
    pub fn output_text(&self) -> String {
        self.output.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// A path inside the mount.
    /// `vagonfs sync <mountpoint>`: waits until the mount has uploaded every change.
    pub fn sync(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_vagonfs"))
            .arg("sync")
            .arg(&self.path)
            .stdin(Stdio::null())
            .output()
            .expect("run vagonfs sync")
    }

    /// [`TestMount::sync`], which must succeed.
    pub fn sync_ok(&self) {
        let out = self.sync();
        assert!(
            out.status.success(),
            "vagonfs sync failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.output_text()
        );
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// SIGTERM, and wait (bounded) for the process to exit. Returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("mount process already stopped");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let mut status = None;
        let exited = wait_until(STOP_WAIT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(
            exited,
            "vagonfs mount did not exit within {STOP_WAIT:?} after SIGTERM:\n{}",
            self.output_text()
        );
        self.child = None;
        status.expect("exit status")
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                wait_until(STOP_WAIT, || !matches!(child.try_wait(), Ok(None)));
            }
            if is_mounted(&self.path) {
                lazy_unmount(&self.path);
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
        // `scratch` (the mount point's folder) is removed after this, with the mount gone.
    }
}

/// `umount -l PATH`.
pub fn lazy_unmount(path: &Path) {
    let _ = Command::new("umount").arg("-l").arg(path).status();
}

/// Every file and folder under `root`, relative path → (is_dir, size, mtime), walking the mount.
pub fn walk_local(root: &Path) -> BTreeMap<String, (bool, u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let rel_child = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(root.join(&rel_child)).expect("stat");
            let key = rel_child.to_string_lossy().into_owned();
            out.insert(
                key,
                (meta.is_dir(), meta.len(), meta.modified().expect("mtime")),
            );
            if meta.is_dir() {
                stack.push(rel_child);
            }
        }
    }
    out
}

/// Every file and folder under folder `parent` of `space` on the server, same shape as
/// [`walk_local`] (mtime `None` when the server gave none).
pub fn walk_server(
    emu: &EmulatorProcess,
    space: Space,
    parent: Option<u64>,
) -> BTreeMap<String, (bool, u64, Option<std::time::SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), parent)];
    while let Some((prefix, folder)) = stack.pop() {
        for entry in emu.list(space, folder) {
            let rel = if prefix.is_empty() {
                entry.name.clone()
            } else {
                format!("{prefix}/{}", entry.name)
            };
            let is_dir = entry.object_type == ObjectType::Directory;
            out.insert(
                rel.clone(),
                (is_dir, if is_dir { 0 } else { entry.size }, entry.modified),
            );
            if is_dir {
                stack.push((rel, Some(entry.id)));
            }
        }
    }
    out
}

/// The OS error number of an io::Error (panics if there is none).
/// Run `cmd` to its end with no input, and give back what it printed and how it ended.
pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A finished command's stdout then stderr, as text (for assertions and their messages).
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn errno_of(err: &std::io::Error) -> i32 {
    err.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {err}"))
}
