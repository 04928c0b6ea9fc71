//! Discovery: the mounts a user's daemons serve, from the control sockets and the mount table.
//!
//! Subtle cases: a socket without a daemon is skipped (and left), a mount in the table whose
//! daemon does not answer is still listed (a hung or foreign daemon), and each mount is listed
//! once whichever directory its socket is in.

use super::*;

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
