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
    async fn unmount(&self, force: bool) -> Result<(), String>;

    /// Upload every pending change now (retrying failed ones) and return once nothing is
    /// pending: the files that still could not be uploaded, with the reason. The server reports
    /// progress from [`ControlHandler::snapshot`] while this runs.
    async fn sync(&self) -> Vec<SyncFailure>;
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

// ---- where sockets live ------------------------------------------------------------------

/// The socket directories to look in, the one sockets are created in
/// ([`primary_socket_dir`]) first.
pub fn socket_dirs() -> Vec<PathBuf> {
    socket_dirs_for(
        nix::unistd::geteuid().as_raw(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

/// Where this process creates its control sockets.
pub fn primary_socket_dir() -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    let xdg = xdg_socket_dir(uid, std::env::var_os("XDG_RUNTIME_DIR"));
    xdg.unwrap_or_else(|| fallback_socket_dir(uid))
}

/// `$XDG_RUNTIME_DIR/vagonfs`, when the variable holds an absolute path to a directory of
/// `uid` (`sudo` may pass on the invoking user's variable: root must not use that one).
fn xdg_socket_dir(uid: u32, xdg_runtime_dir: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let xdg = PathBuf::from(xdg_runtime_dir?);
    let ours = std::fs::metadata(&xdg).is_ok_and(|m| m.is_dir() && m.uid() == uid);
    (xdg.is_absolute() && ours).then(|| xdg.join(SOCKET_DIR_NAME))
}

fn fallback_socket_dir(uid: u32) -> PathBuf {
    if uid == 0 {
        PathBuf::from(ROOT_SOCKET_DIR)
    } else {
        PathBuf::from(format!("/tmp/vagonfs-{uid}"))
    }
}

fn socket_dirs_for(uid: u32, xdg_runtime_dir: Option<std::ffi::OsString>) -> Vec<PathBuf> {
    let fallback = fallback_socket_dir(uid);
    match xdg_socket_dir(uid, xdg_runtime_dir) {
        Some(xdg) => vec![xdg, fallback],
        None => vec![fallback],
    }
}

/// The socket's file name for a canonical mount point.
pub fn socket_file_name(canonical_mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(canonical_mountpoint.as_os_str().as_bytes());
    let mut name = hex::encode(digest);
    name.truncate(HASH_HEX_CHARS);
    format!("{name}.{SOCKET_EXTENSION}")
}

/// Creates `dir` 0700, or checks that an existing one is a real directory of ours and not
/// open to others (tightening its mode if needed).
pub fn prepare_socket_dir(dir: &Path) -> Result<(), ControlError> {
    let unsafe_dir = |reason: String| ControlError::UnsafeDir {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            // The umask may have narrowed the mode; it cannot have widened it. Set it anyway.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| ControlError::io(dir, e))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir).map_err(|e| ControlError::io(dir, e))?;
            if !meta.file_type().is_dir() {
                return Err(unsafe_dir("not a directory (or a symbolic link)".into()));
            }
            let me = nix::unistd::geteuid().as_raw();
            if meta.uid() != me {
                return Err(unsafe_dir(format!(
                    "owned by uid {}, not by uid {me}",
                    meta.uid()
                )));
            }
            if meta.mode() & 0o777 != DIR_MODE {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                    .map_err(|e| ControlError::io(dir, e))?;
            }
            Ok(())
        }
        Err(e) => Err(ControlError::io(dir, e)),
    }
}

// ---- server ------------------------------------------------------------------------------

/// Where an unmount stands; shared by all connections.
#[derive(Debug, Clone, PartialEq)]
enum UnmountPhase {
    Idle,
    /// `tasks` handler calls running; `forced` once a forced one was started.
    Running {
        forced: bool,
        tasks: u32,
    },
    Done(Result<(), String>),
}

struct Shared {
    handler: Arc<dyn ControlHandler>,
    owner_uid: u32,
    unmount: watch::Sender<UnmountPhase>,
}

impl Shared {
    fn peer_allowed(&self, uid: u32) -> bool {
        uid == self.owner_uid || uid == 0
    }

    /// Starts a handler call unless one that covers this request is running or done.
    fn start_unmount(self: &Arc<Self>, force: bool) {
        let mut spawn = false;
        self.unmount.send_if_modified(|phase| {
            match phase {
                UnmountPhase::Idle | UnmountPhase::Done(Err(_)) => {
                    *phase = UnmountPhase::Running {
                        forced: force,
                        tasks: 1,
                    };
                }
                UnmountPhase::Running { forced, tasks, .. } if force && !*forced => {
                    *forced = true;
                    *tasks += 1;
                }
                UnmountPhase::Running { .. } | UnmountPhase::Done(Ok(())) => return false,
            }
            spawn = true;
            true
        });
        if !spawn {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let result = shared.handler.unmount(force).await;
            if let Err(e) = &result {
                tracing::warn!(force, error = %e, "unmount requested over the control socket failed");
            }
            shared.unmount.send_modify(|phase| {
                // The first success ends it; a failure only once no other call is running.
                if let UnmountPhase::Running { tasks, .. } = phase {
                    match result {
                        Ok(()) => *phase = UnmountPhase::Done(Ok(())),
                        Err(e) if *tasks <= 1 => *phase = UnmountPhase::Done(Err(e)),
                        Err(_) => *tasks -= 1,
                    }
                }
            });
        });
    }
}

/// The control server of one mount. Dropping it stops accepting and removes the socket; call
/// [`ControlServer::shutdown`] to also let a last unmount answer reach its client.
pub struct ControlServer {
    path: PathBuf,
    /// Device and inode of the socket we bound, so we never remove another daemon's.
    ident: (u64, u64),
    cancel: CancellationToken,
    accept: Option<JoinHandle<()>>,
    /// Yields `None` once every connection task has ended.
    conns_done: mpsc::Receiver<()>,
}

impl ControlServer {
    /// Binds the socket of `canonical_mountpoint` in [`primary_socket_dir`] (created if
    /// needed). Call it before mounting (canonicalizing the mount point afterwards would go
    /// through the mount itself), within a Tokio runtime.
    pub fn start(
        canonical_mountpoint: &Path,
        handler: Arc<dyn ControlHandler>,
    ) -> Result<Self, ControlError> {
        let dir = primary_socket_dir();
        prepare_socket_dir(&dir)?;
        Self::bind(&dir.join(socket_file_name(canonical_mountpoint)), handler)
    }

    /// Binds at `path` (its directory must exist), mode 0600, serving the effective user of
    /// this process and root. Within a Tokio runtime.
    pub fn bind(path: &Path, handler: Arc<dyn ControlHandler>) -> Result<Self, ControlError> {
        use std::os::unix::ffi::OsStrExt;
        if path.as_os_str().as_bytes().len() > MAX_SOCKET_PATH_BYTES {
            return Err(ControlError::PathTooLong(path.to_path_buf()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ControlError::AlreadyServed(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "replacing a stale control socket");
                std::fs::remove_file(path).map_err(|e| ControlError::io(path, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::io(path, e)),
        }
        let listener =
            tokio::net::UnixListener::bind(path).map_err(|e| ControlError::io(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| ControlError::io(path, e))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| ControlError::io(path, e))?;

        let (unmount, _) = watch::channel(UnmountPhase::Idle);
        let shared = Arc::new(Shared {
            handler,
            owner_uid: nix::unistd::geteuid().as_raw(),
            unmount,
        });
        let cancel = CancellationToken::new();
        let (conn_tx, conns_done) = mpsc::channel::<()>(1);
        let accept = tokio::spawn(accept_loop(listener, shared, cancel.clone(), conn_tx));
        tracing::debug!(socket = %path.display(), "control socket listening");
        Ok(ControlServer {
            path: path.to_path_buf(),
            ident: (meta.dev(), meta.ino()),
            cancel,
            accept: Some(accept),
            conns_done,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets connections finish what they are writing (bounded by a grace
    /// period; idle ones close at once), and removes the socket.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        // Every connection task holds a sender; recv() is None once all have ended.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.conns_done.recv()).await;
        self.remove_socket();
    }

    fn remove_socket(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.ident => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove control socket");
                }
            }
            _ => {}
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.remove_socket();
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    conn_tx: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let cancel = cancel.clone();
                    let done = conn_tx.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, &shared, &cancel).await;
                        drop(done);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: UnixStream, shared: &Arc<Shared>, cancel: &CancellationToken) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read control socket peer credentials");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if !shared.peer_allowed(uid) {
        tracing::warn!(
            peer_uid = uid,
            "control socket: refused a connection from another user"
        );
        let refusal = Response::Error {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "permission denied: this mount belongs to uid {}; uid {uid} may not control it",
                shared.owner_uid
            ),
        };
        let _ = send(&mut write, &refusal).await;
        return;
    }
    let mut read = BufReader::new(read);
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return,
            line = tokio::time::timeout(REQUEST_IDLE_TIMEOUT, read_line(&mut read, MAX_REQUEST_LINE)) => line,
        };
        let line = match line {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                let message = format!("unreadable request: {e}");
                let _ = send(
                    &mut write,
                    &Response::Error {
                        code: ErrorCode::BadRequest,
                        message,
                    },
                )
                .await;
                return;
            }
            Ok(Ok(Some(line))) => line,
        };
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Status) => Response::Status {
                snapshot: Box::new(shared.handler.snapshot()),
            },
            Ok(Request::Unmount { force }) => {
                report_unmount(shared, force, &mut write).await;
                return;
            }
            Ok(Request::Sync) => {
                let sync = shared.handler.sync();
                tokio::pin!(sync);
                let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        failed = &mut sync => break Response::Synced { failed },
                        _ = ticker.tick() => {
                            let progress = Response::Progress { snapshot: Box::new(shared.handler.snapshot()) };
                            if send(&mut write, &progress).await.is_err() {
                                return;
                            }
                        }
                        _ = cancel.cancelled() => return,
                    }
                }
            }
            Err(e) => Response::Error {
                code: ErrorCode::BadRequest,
                message: format!("bad request: {e}"),
            },
        };
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

/// Starts (or joins) the unmount and streams progress until it is done.
async fn report_unmount(shared: &Arc<Shared>, force: bool, write: &mut OwnedWriteHalf) {
    shared.start_unmount(force);
    let mut phase = shared.unmount.subscribe();
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = phase.borrow_and_update().clone();
        let last = match now {
            UnmountPhase::Done(Ok(())) => Some(Response::Unmounted),
            UnmountPhase::Done(Err(message)) => Some(Response::Error {
                code: ErrorCode::UnmountFailed,
                message,
            }),
            UnmountPhase::Idle | UnmountPhase::Running { .. } => None,
        };
        if let Some(last) = last {
            let _ = send(write, &last).await;
            return;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let progress = Response::Progress { snapshot: Box::new(shared.handler.snapshot()) };
                if send(write, &progress).await.is_err() {
                    return;
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(write: &mut W, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer is not reading"))?
}

/// One `\n`-terminated line without its terminator, at most `max` bytes; `None` at a clean
/// end of stream. A longer line or a stream cut mid-line is an error.
async fn read_line<R: AsyncRead + Unpin>(
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

// ---- client ------------------------------------------------------------------------------

/// A connection to one daemon's control socket.
pub struct ControlClient {
    path: PathBuf,
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl ControlClient {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
            Err(_) => return Err(ControlError::Timeout(path.to_path_buf())),
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    io::ErrorKind::NotFound => ControlError::NoSocket(path.to_path_buf()),
                    io::ErrorKind::ConnectionRefused => ControlError::Stale(path.to_path_buf()),
                    io::ErrorKind::PermissionDenied => {
                        ControlError::PermissionDenied(path.to_path_buf())
                    }
                    _ => ControlError::io(path, e),
                });
            }
        };
        let (read, write) = stream.into_split();
        Ok(ControlClient {
            path: path.to_path_buf(),
            read: BufReader::new(read),
            write,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn request(&mut self, request: &Request) -> Result<(), ControlError> {
        let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Protocol {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        line.push(b'\n');
        self.write
            .write_all(&line)
            .await
            .map_err(|e| ControlError::io(&self.path, e))
    }

    async fn response(&mut self, wait: Duration) -> Result<Response, ControlError> {
        let line = tokio::time::timeout(wait, read_line(&mut self.read, MAX_RESPONSE_LINE))
            .await
            .map_err(|_| ControlError::Timeout(self.path.clone()))?
            .map_err(|e| ControlError::io(&self.path, e))?
            .ok_or_else(|| ControlError::Protocol {
                path: self.path.clone(),
                detail: "the daemon closed the connection".into(),
            })?;
        match serde_json::from_slice::<Response>(&line) {
            Ok(Response::Error {
                code: ErrorCode::PermissionDenied,
                ..
            }) => Err(ControlError::PermissionDenied(self.path.clone())),
            Ok(Response::Error {
                code: ErrorCode::UnmountFailed,
                message,
            }) => Err(ControlError::UnmountFailed(message)),
            Ok(Response::Error {
                code: ErrorCode::BadRequest,
                message,
            }) => Err(ControlError::Refused(message)),
            Ok(response) => Ok(response),
            Err(e) => Err(ControlError::Protocol {
                path: self.path.clone(),
                detail: e.to_string(),
            }),
        }
    }

    fn unexpected(&self, response: &Response) -> ControlError {
        let kind = match response {
            Response::Status { .. } => "status",
            Response::Progress { .. } => "progress",
            Response::Unmounted => "unmounted",
            Response::Synced { .. } => "synced",
            Response::Error { .. } => "error",
        };
        ControlError::Protocol {
            path: self.path.clone(),
            detail: format!("unexpected {kind} line"),
        }
    }

    /// The daemon's status now. The connection stays usable for more requests.
    pub async fn status(&mut self) -> Result<StatusSnapshot, ControlError> {
        self.request(&Request::Status).await?;
        match self.response(REPLY_TIMEOUT).await? {
            Response::Status { snapshot } => Ok(*snapshot),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Asks the daemon to unmount and waits until it has, calling `on_progress` with every
    /// progress snapshot meanwhile.
    pub async fn unmount(
        mut self,
        force: bool,
        mut on_progress: impl FnMut(&StatusSnapshot),
    ) -> Result<(), ControlError> {
        self.request(&Request::Unmount { force }).await?;
        loop {
            match self.response(UNMOUNT_IDLE_TIMEOUT).await? {
                Response::Progress { snapshot } => on_progress(&snapshot),
                Response::Unmounted => return Ok(()),
                other => return Err(self.unexpected(&other)),
            }
        }
    }
}

impl ControlClient {
    /// Asks the daemon to upload everything pending and waits until nothing is, calling
    /// `on_progress` with every progress snapshot meanwhile. Returns the files that failed.
    pub async fn sync(
        mut self,
        mut on_progress: impl FnMut(&StatusSnapshot),
    ) -> Result<Vec<SyncFailure>, ControlError> {
        self.request(&Request::Sync).await?;
        loop {
            match self.response(UNMOUNT_IDLE_TIMEOUT).await? {
                Response::Progress { snapshot } => on_progress(&snapshot),
                Response::Synced { failed } => return Ok(failed),
                other => return Err(self.unexpected(&other)),
            }
        }
    }
}

/// Connects to the daemon of `canonical_mountpoint`, trying each of `dirs`. Stale sockets met
/// on the way are removed. When none answers, the most telling error is returned (permission
/// denied, then a timeout, then a stale or missing socket in the first directory).
pub async fn connect_to_mount(
    dirs: &[PathBuf],
    canonical_mountpoint: &Path,
) -> Result<ControlClient, ControlError> {
    let name = socket_file_name(canonical_mountpoint);
    let mut errors = Vec::new();
    for dir in dirs {
        let path = dir.join(&name);
        match ControlClient::connect(&path).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                if matches!(e, ControlError::Stale(_)) {
                    remove_stale_socket(&path);
                }
                errors.push(e);
            }
        }
    }
    let rank = |e: &ControlError| match e {
        ControlError::PermissionDenied(_) => 0,
        ControlError::Timeout(_) => 1,
        ControlError::Stale(_) => 3,
        ControlError::NoSocket(_) => 4,
        _ => 2,
    };
    errors.sort_by_key(rank);
    Err(errors
        .into_iter()
        .next()
        .unwrap_or_else(|| ControlError::NoSocket(name.into())))
}

fn remove_stale_socket(path: &Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed a stale control socket"),
            Err(e) => {
                tracing::debug!(socket = %path.display(), error = %e, "cannot remove stale socket")
            }
        }
    }
}

// ---- discovery ---------------------------------------------------------------------------

/// A vagonfs mount found by [`list_mounts`].
#[derive(Debug)]
pub struct FoundMount {
    pub mountpoint: PathBuf,
    /// The socket that answered (or that failed in a way other than "no daemon").
    pub socket: Option<PathBuf>,
    /// Listed in this process's mount table (a daemon in another mount namespace is not).
    pub in_mount_table: bool,
    pub status: Result<StatusSnapshot, ControlError>,
}

/// Every vagonfs mount this user can see: live sockets in `dirs` (see [`socket_dirs`]), and
/// the vagonfs FUSE mounts of `table` (see [`super::mounts::vagonfs_mounts`]), reported with
/// an error when no daemon answers.
pub async fn list_mounts(dirs: &[PathBuf], table: &[MountEntry]) -> Vec<FoundMount> {
    let mut found: Vec<FoundMount> = Vec::new();
    // Sockets that exist but did not answer with a status, by file name.
    let mut unanswered: Vec<(String, PathBuf, ControlError)> = Vec::new();
    let table_points: HashSet<&Path> = table.iter().map(|m| m.mountpoint.as_path()).collect();

    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            if !is_socket || path.extension().and_then(|e| e.to_str()) != Some(SOCKET_EXTENSION) {
                continue;
            }
            let answer = match ControlClient::connect(&path).await {
                Ok(mut client) => client.status().await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(snapshot) => {
                    let mountpoint = PathBuf::from(&snapshot.identity.mountpoint);
                    if found.iter().any(|f| f.mountpoint == mountpoint) {
                        continue;
                    }
                    found.push(FoundMount {
                        in_mount_table: table_points.contains(mountpoint.as_path()),
                        mountpoint,
                        socket: Some(path),
                        status: Ok(snapshot),
                    });
                }
                Err(ControlError::Stale(_)) => remove_stale_socket(&path),
                Err(e) => {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    unanswered.push((name, path, e));
                }
            }
        }
    }

    for mount in table {
        if found.iter().any(|f| f.mountpoint == mount.mountpoint) {
            continue;
        }
        let name = socket_file_name(&mount.mountpoint);
        let (socket, status) = match unanswered.iter().position(|(n, _, _)| *n == name) {
            Some(i) => {
                let (_, path, error) = unanswered.swap_remove(i);
                (Some(path), Err(error))
            }
            None => {
                let expected = dirs
                    .first()
                    .map(|d| d.join(&name))
                    .unwrap_or_else(|| name.into());
                (None, Err(ControlError::NoSocket(expected)))
            }
        };
        found.push(FoundMount {
            mountpoint: mount.mountpoint.clone(),
            socket,
            in_mount_table: true,
            status,
        });
    }
    for (_, path, error) in unanswered {
        tracing::debug!(socket = %path.display(), %error, "control socket of an unknown mount did not answer");
    }
    found.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    found
}

/// A fake mount for the tests of the control socket and of the commands.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::Utc;
    use tokio::sync::Notify;

    use super::*;
    use crate::daemon::snapshot::{CacheStats, MountIdentity, UploadProgress, UploadState};

    /// A handler whose uploads finish when the test says so.
    pub(crate) struct FakeMount {
        pub mountpoint: String,
        pub sent: Mutex<u64>,
        pub release: Notify,
        pub unmount_calls: AtomicU32,
        pub forced_calls: AtomicU32,
        pub fail: bool,
    }

    impl FakeMount {
        pub fn new(mountpoint: &str) -> Arc<Self> {
            Arc::new(FakeMount {
                mountpoint: mountpoint.into(),
                sent: Mutex::new(0),
                release: Notify::new(),
                unmount_calls: AtomicU32::new(0),
                forced_calls: AtomicU32::new(0),
                fail: false,
            })
        }
    }

    #[async_trait]
    impl ControlHandler for FakeMount {
        fn snapshot(&self) -> StatusSnapshot {
            let sent = *self.sent.lock().unwrap();
            StatusSnapshot {
                identity: MountIdentity {
                    mountpoint: self.mountpoint.clone(),
                    target: "machine 42".into(),
                    api_url: "http://127.0.0.1:9".into(),
                    pid: 1,
                    started_at: Utc::now(),
                    read_only: false,
                    demo: false,
                },
                taken_at: Utc::now(),
                uploads: vec![UploadProgress {
                    path: "/big.bin".into(),
                    bytes_sent: sent,
                    size: 100,
                    state: UploadState::Uploading,
                    started_at: Some(Utc::now()),
                }],
                failed: Vec::new(),
                queued: 0,
                in_flight: 1,
                pending_bytes: 100 - sent,
                recent_errors: vec![],
                cache: CacheStats::default(),
                api_unreachable_since: None,
                retries: 0,
                endpoints: vec![],
            }
        }

        async fn unmount(&self, force: bool) -> Result<(), String> {
            self.unmount_calls.fetch_add(1, Ordering::SeqCst);
            if force {
                self.forced_calls.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if self.fail {
                return Err("uploads failed".into());
            }
            self.release.notified().await;
            Ok(())
        }

        async fn sync(&self) -> Vec<SyncFailure> {
            if self.fail {
                return vec![SyncFailure {
                    file: "big.bin".into(),
                    reason: "storage full".into(),
                }];
            }
            self.release.notified().await;
            Vec::new()
        }
    }
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
            Err(ControlError::UnmountFailed(m)) => assert_eq!(m, "uploads failed"),
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
