//! The local control socket of a mount: how `vagonfs status` and `vagonfs unmount` talk to the
//! daemon serving a mount point.
//!
//! One Unix socket per mount, in a per-user directory ([`socket_dirs`]):
//! `$XDG_RUNTIME_DIR/vagonfs/`, else `/run/vagonfs` for root or `/tmp/vagonfs-<uid>`; named by
//! a hash of the canonical mount point ([`socket_file_name`]). Protocol: line-delimited JSON,
//! one [`Request`] per line from the client, [`Response`] lines back:
//! `{"cmd":"status"}` → one `{"type":"status","snapshot":{…}}`;
//! `{"cmd":"unmount","force":false}` → `{"type":"progress",…}` lines every second while the
//! daemon flushes and waits for uploads, then `{"type":"unmounted"}` or `{"type":"error",…}`.
//! The server side knows nothing of the filesystem: the mount gives it a [`ControlHandler`].
//!
//! Subtle cases owned here:
//! - access control is layered: the directory is 0700 and must be ours (a directory another
//!   user planted in `/tmp` is refused, not reused), the socket is 0600, and the server still
//!   checks every peer's uid (SO_PEERCRED) against the mounting user and root, answering anyone
//!   else with a `permission_denied` error line and closing;
//! - binding over an existing path: a socket that refuses connections is stale (its daemon
//!   died) and is replaced; one that accepts belongs to a live daemon and binding fails;
//! - the socket file is removed on shutdown only if it is still the one we bound (same inode),
//!   so a successor's socket is never deleted;
//! - an unmount outlives the connection that asked for it (a client hitting Ctrl-C does not
//!   cancel a flush half-way); concurrent unmount requests share one outcome, and a forced
//!   request during a graceful one calls the handler again with `force`;
//! - every read is bounded in size and time, on both sides, so a silent or flooding peer cannot
//!   hang or exhaust either process.
//!
//! The files here: this one holds the protocol (requests, answers, errors, line framing);
//! `paths` where sockets live; `server` the daemon's side; `client` the command's side;
//! `discovery` finding the mounts a user's daemons serve.

mod client;
mod discovery;
mod paths;
mod server;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::mounts::MountEntry;
use super::snapshot::StatusSnapshot;

/// Name of the per-user directory under `$XDG_RUNTIME_DIR`.
pub const SOCKET_DIR_NAME: &str = "vagonfs";
/// Root's directory when `$XDG_RUNTIME_DIR` is not set.
pub const ROOT_SOCKET_DIR: &str = "/run/vagonfs";
/// Hex characters of the mount point's SHA-256 in the socket name (64 bits: no collisions
/// between the handful of mounts a user has).
const HASH_HEX_CHARS: usize = 16;
const SOCKET_EXTENSION: &str = "sock";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Directory and socket modes: the owner only.
const DIR_MODE: u32 = 0o700;
const SOCKET_MODE: u32 = 0o600;

/// Longest request line the server reads (requests are a few dozen bytes).
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest response line the client reads (a snapshot with many uploads and errors).
const MAX_RESPONSE_LINE: usize = 16 * 1024 * 1024;
/// How often an unmount in progress reports its snapshot.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A connection with no request for this long is closed (`status --watch` asks every second).
const REQUEST_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A response that cannot be written within this time (client not reading) ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Client: time allowed to connect, and for a status answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Client: silence allowed between unmount progress lines (the server sends one every
/// [`PROGRESS_INTERVAL`]; this much silence means the daemon is stuck).
const UNMOUNT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Shutdown: how long connections still writing (an unmount's last line) may take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A client's request, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Unmount {
        #[serde(default)]
        force: bool,
    },
    /// Upload everything pending now and answer once nothing is (`vagonfs sync`).
    Sync,
}

/// A file `sync` could not upload, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailure {
    pub file: String,
    pub reason: String,
}

/// Why the server answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    PermissionDenied,
    BadRequest,
    UnmountFailed,
}

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Status {
        snapshot: Box<StatusSnapshot>,
    },
    Progress {
        snapshot: Box<StatusSnapshot>,
    },
    Unmounted,
    /// The answer to [`Request::Sync`]: nothing is pending but `failed`.
    Synced {
        failed: Vec<SyncFailure>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// What the mount provides to the control server.
#[async_trait]
pub trait ControlHandler: Send + Sync + 'static {
    /// The mount's state now. Called often (every second per watching client): keep it cheap.
    fn snapshot(&self) -> StatusSnapshot;

    /// Unmount: with `force == false`, flush open files and wait for every upload, then
    /// unmount; with `force`, unmount at once. Returns once the mount is gone (or failed).
    /// May be called with `force == true` while a graceful call is still waiting: it should
    /// then stop waiting and unmount. The server reports progress itself from
    /// [`ControlHandler::snapshot`] while this runs.
    async fn unmount(&self, force: bool) -> Result<(), UnmountRefused>;

    /// Upload every pending change now (retrying failed ones) and return once nothing is
    /// pending: the files that still could not be uploaded, with the reason. The server reports
    /// progress from [`ControlHandler::snapshot`] while this runs.
    async fn sync(&self) -> Vec<SyncFailure>;
}

/// Why an unmount asked over the control socket did not happen (sent to the client as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnmountRefused {
    #[error(
        "not unmounted: {} file(s) could not be uploaded ({}); they stay in the mount. Fix the \
         cause and retry, or `vagonfs unmount --force` (the local copies are kept and uploaded \
         by the next mount)",
        .0.len(),
        .0.join("; ")
    )]
    UploadsFailed(Vec<String>),
    #[error("interrupted by a signal: changes not uploaded stay in {}", .0.display())]
    Interrupted(std::path::PathBuf),
    #[error("the mount is already shutting down")]
    ShuttingDown,
    #[error("the daemon ended before unmounting")]
    DaemonEnded,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no control socket at {0} (no vagonfs daemon serves this mount for this user)")]
    NoSocket(PathBuf),
    #[error("control socket {0} is stale: its daemon is gone")]
    Stale(PathBuf),
    #[error(
        "permission denied on control socket {0}: the mount belongs to another user \
         (run the command as that user or as root)"
    )]
    PermissionDenied(PathBuf),
    #[error("another vagonfs daemon already serves {0}")]
    AlreadyServed(PathBuf),
    #[error("refusing socket directory {path}: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
    #[error(
        "control socket path {0} is too long for a Unix socket (max {MAX_SOCKET_PATH_BYTES} bytes)"
    )]
    PathTooLong(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon at {0} did not answer in time")]
    Timeout(PathBuf),
    #[error("unexpected answer from {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("the daemon could not unmount: {0}")]
    UnmountFailed(String),
    #[error("the daemon refused the request: {0}")]
    Refused(String),
}

impl ControlError {
    fn io(path: &Path, source: io::Error) -> Self {
        ControlError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// No daemon answers there (socket missing or stale).
    pub fn is_no_daemon(&self) -> bool {
        matches!(self, ControlError::NoSocket(_) | ControlError::Stale(_))
    }
}

pub use self::client::*;
pub use self::discovery::*;
pub use self::paths::*;
pub use self::server::*;

pub(super) async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    response: &Response,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer is not reading"))?
}

/// One `\n`-terminated line without its terminator, at most `max` bytes; `None` at a clean
/// end of stream. A longer line or a stream cut mid-line is an error.
pub(super) async fn read_line<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    // One byte more than allowed, to tell "exactly max" from "too long".
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = read.take(limit).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        let detail = if line.len() > max {
            "line too long"
        } else {
            "connection closed mid-line"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, detail));
    }
    line.pop();
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::testing::FakeMount;
    use super::*;

    fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("t.sock")
    }

    #[tokio::test]
    async fn status_round_trip_and_socket_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let server = ControlServer::bind(&path, FakeMount::new("/mnt/a")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, SOCKET_MODE, "socket mode {mode:o}");

        let mut client = ControlClient::connect(&path).await.unwrap();
        let snap = client.status().await.unwrap();
        assert_eq!(snap.identity.mountpoint, "/mnt/a");
        // The same connection serves a second request.
        assert_eq!(client.status().await.unwrap().uploads[0].path, "/big.bin");

        server.shutdown().await;
        assert!(!path.exists(), "socket left behind");
        assert!(matches!(
            ControlClient::connect(&path).await,
            Err(ControlError::NoSocket(_))
        ));
    }

    #[tokio::test]
    async fn unmount_streams_progress_then_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let fake = FakeMount::new("/mnt/b");
        let server = ControlServer::bind(&path, fake.clone()).unwrap();

        let client = ControlClient::connect(&path).await.unwrap();
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        let waiter = tokio::spawn(client.unmount(false, move |s| {
            let _ = seen_tx.send(s.uploads[0].bytes_sent);
        }));
        // First progress line: nothing sent yet.
        assert_eq!(seen_rx.recv().await, Some(0));
        *fake.sent.lock().unwrap() = 60;
        // Progress follows the handler's snapshot.
        loop {
            if seen_rx.recv().await == Some(60) {
                break;
            }
        }
        // A second client joins the same unmount instead of starting another.
        let second = ControlClient::connect(&path).await.unwrap();
        let second = tokio::spawn(second.unmount(false, |_| {}));
        *fake.sent.lock().unwrap() = 100;
        fake.release.notify_one();
        waiter.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(fake.unmount_calls.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn force_during_graceful_unmount_calls_the_handler_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let fake = FakeMount::new("/mnt/c");
        let server = ControlServer::bind(&path, fake.clone()).unwrap();
        let graceful = ControlClient::connect(&path).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let graceful = tokio::spawn(graceful.unmount(false, move |_| {
            let _ = tx.send(());
        }));
        rx.recv().await.unwrap();
        let forced = ControlClient::connect(&path).await.unwrap();
        forced.unmount(true, |_| {}).await.unwrap();
        graceful.await.unwrap().unwrap();
        assert_eq!(fake.forced_calls.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn failed_unmount_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let mut fake = FakeMount::new("/mnt/d");
        Arc::get_mut(&mut fake).unwrap().fail = true;
        let server = ControlServer::bind(&path, fake).unwrap();
        let client = ControlClient::connect(&path).await.unwrap();
        match client.unmount(false, |_| {}).await {
            Err(ControlError::UnmountFailed(m)) => {
                assert!(m.contains("could not be uploaded"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_get_an_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let server = ControlServer::bind(&path, FakeMount::new("/mnt/e")).unwrap();
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(b"{\"cmd\":\"explode\"}\n").await.unwrap();
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader, MAX_RESPONSE_LINE)
            .await
            .unwrap()
            .unwrap();
        let response: Response = serde_json::from_slice(&line).unwrap();
        assert!(
            matches!(
                response,
                Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{response:?}"
        );

        // An endless line is cut off, not buffered.
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let _ = stream.write_all(&vec![b'x'; MAX_REQUEST_LINE + 10]).await;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader, MAX_RESPONSE_LINE)
            .await
            .unwrap()
            .unwrap();
        let response: Response = serde_json::from_slice(&line).unwrap();
        assert!(matches!(
            response,
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn live_socket_is_not_replaced_and_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_in(&dir);
        let server = ControlServer::bind(&path, FakeMount::new("/mnt/f")).unwrap();
        assert!(matches!(
            ControlServer::bind(&path, FakeMount::new("/mnt/f")),
            Err(ControlError::AlreadyServed(_))
        ));
        server.shutdown().await;

        // A socket file nobody listens on (a crashed daemon's).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(matches!(
            ControlClient::connect(&path).await,
            Err(ControlError::Stale(_))
        ));
        let server = ControlServer::bind(&path, FakeMount::new("/mnt/f")).unwrap();
        assert!(ControlClient::connect(&path).await.is_ok());
        drop(server);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn discovery_lists_live_mounts_and_removes_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let live_point = PathBuf::from("/mnt/live");
        let live_sock = dir.path().join(socket_file_name(&live_point));
        let server = ControlServer::bind(&live_sock, FakeMount::new("/mnt/live")).unwrap();
        let stale = dir.path().join("0123456789abcdef.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();

        let table = vec![
            MountEntry {
                mountpoint: live_point.clone(),
                fstype: "fuse.vagonfs".into(),
                source: "vagonfs".into(),
            },
            MountEntry {
                mountpoint: "/mnt/orphan".into(),
                fstype: "fuse.vagonfs".into(),
                source: "vagonfs".into(),
            },
        ];
        let found = list_mounts(&dirs, &table).await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].mountpoint, live_point);
        assert!(found[0].in_mount_table);
        assert_eq!(found[0].socket.as_deref(), Some(live_sock.as_path()));
        assert!(found[0].status.is_ok());
        assert_eq!(found[1].mountpoint, PathBuf::from("/mnt/orphan"));
        assert!(matches!(found[1].status, Err(ControlError::NoSocket(_))));
        assert!(!stale.exists(), "stale socket kept");
        assert!(dir.path().join("notes.txt").exists());

        let client = connect_to_mount(&dirs, &live_point).await.unwrap();
        assert_eq!(client.path(), live_sock);
        assert!(matches!(
            connect_to_mount(&dirs, Path::new("/mnt/none")).await,
            Err(ControlError::NoSocket(_))
        ));
        server.shutdown().await;
    }

    #[test]
    fn socket_dirs_and_names() {
        let xdg = tempfile::tempdir().unwrap();
        let owner = std::fs::metadata(xdg.path()).unwrap().uid();
        let other = owner + 1;
        assert_eq!(
            socket_dirs_for(owner, Some(xdg.path().into())),
            vec![xdg.path().join(SOCKET_DIR_NAME), fallback_socket_dir(owner)]
        );
        // Another user's runtime directory (sudo keeping the variable) is not used.
        assert_eq!(
            socket_dirs_for(other, Some(xdg.path().into())),
            vec![PathBuf::from(format!("/tmp/vagonfs-{other}"))]
        );
        assert_eq!(
            socket_dirs_for(0, None),
            vec![PathBuf::from(ROOT_SOCKET_DIR)]
        );
        assert_eq!(
            socket_dirs_for(5, Some("relative".into())),
            vec![PathBuf::from("/tmp/vagonfs-5")]
        );
        let a = socket_file_name(Path::new("/mnt/a"));
        assert_eq!(a.len(), HASH_HEX_CHARS + 1 + SOCKET_EXTENSION.len());
        assert_ne!(a, socket_file_name(Path::new("/mnt/b")));
        assert_eq!(a, socket_file_name(Path::new("/mnt/a")));
    }

    #[test]
    fn socket_dir_is_private_and_ours() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("vagonfs");
        prepare_socket_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, DIR_MODE);
        // An existing directory open to others is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare_socket_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, DIR_MODE);
        // A symlink is refused.
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            prepare_socket_dir(&link),
            Err(ControlError::UnsafeDir { .. })
        ));
        // Another user's directory is refused.
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(matches!(
            prepare_socket_dir(&theirs),
            Err(ControlError::UnsafeDir { .. })
        ));
    }

    /// Runs a Python client as uid 65534 against `socket`; returns what it printed.
    fn connect_as_nobody(socket: &Path) -> String {
        use std::os::unix::process::CommandExt;
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b'{"cmd":"status"}\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # the server may refuse and close before reading anything
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break  # closed with our request unread: a reset after the data, not an EOF
    except socket.timeout:
        print(data.decode().strip()); print("STILL OPEN"); sys.exit(0)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
print("CLOSED")
"#;
        let out = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(socket)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run /usr/bin/python3 as uid 65534");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_user_cannot_reach_or_use_the_socket() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test switches uid, it needs root"
        );
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("vagonfs");
        prepare_socket_dir(&dir).unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("x.sock");
        let server = ControlServer::bind(&path, FakeMount::new("/mnt/g")).unwrap();

        // The file modes alone keep another user out.
        let socket = path.clone();
        let out = tokio::task::spawn_blocking(move || connect_as_nobody(&socket))
            .await
            .unwrap();
        assert_eq!(out.trim(), "EACCES");

        // With the modes opened up, the peer-credential check still refuses, and closes.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let socket = path.clone();
        let out = tokio::task::spawn_blocking(move || connect_as_nobody(&socket))
            .await
            .unwrap();
        let mut lines = out.lines();
        let first = lines.next().unwrap_or_default();
        let response: Response =
            serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(
            matches!(
                response,
                Response::Error {
                    code: ErrorCode::PermissionDenied,
                    ..
                }
            ),
            "{response:?}"
        );
        assert_eq!(lines.next(), Some("CLOSED"), "{out}");

        // The owner (root here) is still served.
        let mut client = ControlClient::connect(&path).await.unwrap();
        assert_eq!(client.status().await.unwrap().identity.mountpoint, "/mnt/g");
        server.shutdown().await;
    }
}
