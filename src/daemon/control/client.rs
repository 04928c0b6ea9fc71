//! The command's side: connecting to a daemon, sending one request and reading its answer
//! lines.
//!
//! Subtle cases: a missing socket and a refused connection (stale) are "no daemon", told apart
//! from a permission error; every answer line is bounded in size and time; a stale socket is
//! removed only when it still refuses connections.

use super::*;

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

pub(super) fn remove_stale_socket(path: &Path) {
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
