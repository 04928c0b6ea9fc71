//! The daemon's side: binding the socket, accepting connections, serving status, unmount and
//! sync requests.
//!
//! Subtle cases: a stale socket (refusing connections) is replaced, a live one makes binding
//! fail; every peer's uid is checked (SO_PEERCRED) against the mounting user and root; an
//! unmount outlives the connection that asked for it, concurrent requests share one outcome and
//! a forced request during a graceful one calls the handler again with `force`; the socket file
//! is removed on shutdown only if it is still the one bound (same inode).

use super::*;

/// Where an unmount stands; shared by all connections.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum UnmountPhase {
    Idle,
    /// `tasks` handler calls running; `forced` once a forced one was started.
    Running {
        forced: bool,
        tasks: u32,
    },
    Done(Result<(), UnmountRefused>),
}

pub(super) struct Shared {
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

pub(super) async fn accept_loop(
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

pub(super) async fn serve_connection(
    stream: UnixStream,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) {
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
pub(super) async fn report_unmount(shared: &Arc<Shared>, force: bool, write: &mut OwnedWriteHalf) {
    shared.start_unmount(force);
    let mut phase = shared.unmount.subscribe();
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = phase.borrow_and_update().clone();
        let last = match now {
            UnmountPhase::Done(Ok(())) => Some(Response::Unmounted),
            UnmountPhase::Done(Err(refused)) => Some(Response::Error {
                code: ErrorCode::UnmountFailed,
                message: refused.to_string(),
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
