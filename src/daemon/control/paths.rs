//! Where control sockets live: the per-user directories, the socket's name from the mount
//! point, and making a directory safe to bind in.
//!
//! Subtle cases: `$XDG_RUNTIME_DIR/vagonfs/` first, else `/run/vagonfs` for root or
//! `/tmp/vagonfs-<uid>`; a directory that is not ours or not 0700 is refused, not reused (one
//! another user planted in `/tmp`); a socket path longer than `sun_path` allows is an error,
//! not a truncated name.

use super::*;

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
pub(super) fn xdg_socket_dir(
    uid: u32,
    xdg_runtime_dir: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let xdg = PathBuf::from(xdg_runtime_dir?);
    let ours = std::fs::metadata(&xdg).is_ok_and(|m| m.is_dir() && m.uid() == uid);
    (xdg.is_absolute() && ours).then(|| xdg.join(SOCKET_DIR_NAME))
}

pub(super) fn fallback_socket_dir(uid: u32) -> PathBuf {
    if uid == 0 {
        PathBuf::from(ROOT_SOCKET_DIR)
    } else {
        PathBuf::from(format!("/tmp/vagonfs-{uid}"))
    }
}

pub(super) fn socket_dirs_for(
    uid: u32,
    xdg_runtime_dir: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
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
