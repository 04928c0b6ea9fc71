//! Finding vagonfs mounts in the kernel's mount table, and naming mount points canonically.
//!
//! Subtle cases owned here:
//! - `/proc/self/mountinfo` escapes space, tab, newline and backslash in paths as `\040`-style
//!   octal; the optional fields before ` - ` vary in number, so the separator is searched, not
//!   counted;
//! - a vagonfs mount is a FUSE mount (`fuse`, `fuse.vagonfs`, `fuseblk`) whose fs type or
//!   source names vagonfs (the mount passes `FSName`/`Subtype`), so other FUSE mounts are left
//!   alone;
//! - a mount point whose daemon died answers `stat` with ENOTCONN, so canonicalizing it fails:
//!   [`canonical_mountpoint`] then resolves the parent and keeps the last component as given;
//! - [`unmount`] is the one way out for every caller (the session, `vagonfs unmount`, a dead
//!   mount cleared before mounting): `umount2` (lazily with `force`), and without privilege
//!   `fusermount3 -u` (or `fusermount -u`), `-z` with `force`.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The kernel's mount table of this process's mount namespace.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

/// The file system name: the FUSE subtype, and the word that marks a mount as ours in its fs
/// type or source (`vagonfs:machine:42`, see `mount::control::mount_source`).
pub const FS_NAME: &str = "vagonfs";
/// The file system type given to mount(2): FUSE with subtype vagonfs.
pub const FS_TYPE: &str = "fuse.vagonfs";

/// One line of mountinfo that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// A FUSE mount that names vagonfs.
    pub fn is_vagonfs(&self) -> bool {
        let fuse =
            self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.");
        fuse && (self.fstype.contains(FS_NAME) || self.source.contains(FS_NAME))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...). A malformed escape is kept as is.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            // id parent major:minor root mountpoint options [optional...]
            let mountpoint = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next()?;
            Some(MountEntry {
                mountpoint: PathBuf::from(OsString::from_vec(unescape(mountpoint))),
                fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
            })
        })
        .collect()
}

/// The vagonfs mounts in `text` (mountinfo format).
pub fn vagonfs_mounts_in(text: &str) -> Vec<MountEntry> {
    parse_mountinfo(text)
        .into_iter()
        .filter(MountEntry::is_vagonfs)
        .collect()
}

/// The vagonfs mounts of this mount namespace.
pub fn vagonfs_mounts() -> io::Result<Vec<MountEntry>> {
    Ok(vagonfs_mounts_in(&std::fs::read_to_string(MOUNTINFO_PATH)?))
}

/// The topmost mount at `mountpoint` (canonical path) in this namespace, if any.
pub fn mount_at(mountpoint: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string(MOUNTINFO_PATH).ok()?;
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint)
}

impl MountEntry {
    /// What is mounted, for a message: `a vagonfs mount of machine:42`, `a fuse.sshfs mount
    /// of user@host:`.
    pub fn describe(&self) -> String {
        if self.is_vagonfs() {
            let what = self
                .source
                .strip_prefix(FS_NAME)
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(&self.source);
            format!("a vagonfs mount of {what}")
        } else {
            format!("a {} mount of {}", self.fstype, self.source)
        }
    }
}

/// Why [`unmount`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{} is busy (files open in it?); `--force` detaches it lazily", .0.display())]
    Busy(PathBuf),
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    #[error("cannot unmount {}: {source}", path.display())]
    System {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{tool} -u {}: {message}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot unmount {}: no privilege, and neither fusermount3 nor fusermount is installed", .0.display())]
    NoTool(PathBuf),
}

/// Unmount `path`: `umount2` (`MNT_DETACH` with `force`: detached now, cleaned up once no
/// longer busy); without privilege `fusermount3 -u` (`-z` with `force`), else `fusermount`.
pub fn unmount(path: &Path, force: bool) -> Result<(), UnmountError> {
    use nix::errno::Errno;
    let flags = if force {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(path, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => Err(UnmountError::Busy(path.to_path_buf())),
        Err(Errno::EINVAL | Errno::ENOENT) => Err(UnmountError::NotMounted(path.to_path_buf())),
        Err(Errno::EPERM) => fusermount_unmount(path, force),
        Err(source) => Err(UnmountError::System {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The unprivileged way out: `fusermount3 -u [-z] -- PATH`, else `fusermount`.
fn fusermount_unmount(path: &Path, force: bool) -> Result<(), UnmountError> {
    for tool in ["fusermount3", "fusermount"] {
        let mut cmd = std::process::Command::new(tool);
        cmd.arg("-u");
        if force {
            cmd.arg("-z");
        }
        match cmd.arg("--").arg(path).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                return Err(UnmountError::Tool {
                    tool,
                    path: path.to_path_buf(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(UnmountError::Tool {
                    tool,
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        }
    }
    Err(UnmountError::NoTool(path.to_path_buf()))
}

/// The canonical form of a mount point: symlinks resolved, absolute. Works for a mount point
/// whose daemon is gone (stat fails with ENOTCONN) by resolving only its parent.
pub fn canonical_mountpoint(path: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(first) => {
            let absolute = std::path::absolute(path)?;
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                return Err(first);
            };
            if first.kind() == io::ErrorKind::NotFound {
                return Err(first);
            }
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:31 / /mnt/vagon rw,nosuid,nodev,relatime shared:5 - fuse.vagonfs vagonfs rw,user_id=0,group_id=0
37 22 0:32 / /mnt/with\\040space rw,nosuid,nodev - fuse vagonfs:machine:42 rw,user_id=0
38 22 0:33 / /mnt/sshfs rw,nosuid,nodev - fuse.sshfs user@host: rw
39 22 0:34 / /mnt/other rw - fuse other rw
garbage line
40 22 0:35 / /srv/vagonfs-backup rw - ext4 /dev/sdb1 rw
";

    #[test]
    fn finds_vagonfs_fuse_mounts_only() {
        let found = vagonfs_mounts_in(SAMPLE);
        let points: Vec<_> = found.iter().map(|m| m.mountpoint.clone()).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/mnt/vagon"),
                PathBuf::from("/mnt/with space")
            ]
        );
        assert_eq!(found[1].source, "vagonfs:machine:42");
        assert_eq!(parse_mountinfo(SAMPLE).len(), 6);
    }

    #[test]
    fn describes_what_is_mounted() {
        let found = parse_mountinfo(SAMPLE);
        assert_eq!(found[2].describe(), "a vagonfs mount of machine:42");
        assert_eq!(found[3].describe(), "a fuse.sshfs mount of user@host:");
        assert_eq!(found[1].describe(), "a vagonfs mount of vagonfs");
    }

    #[test]
    fn unmounting_what_is_not_mounted_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unmount(dir.path(), false),
            Err(UnmountError::NotMounted(_))
        ));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), b"a b\tc\\d");
        assert_eq!(unescape("bad\\09x"), b"bad\\09x");
        assert_eq!(unescape("end\\04"), b"end\\04");
    }

    #[test]
    fn canonical_of_missing_and_existing() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("m")).unwrap();
        std::os::unix::fs::symlink(real.join("m"), real.join("link")).unwrap();
        assert_eq!(
            canonical_mountpoint(&real.join("link")).unwrap(),
            real.join("m")
        );
        assert!(canonical_mountpoint(&real.join("absent")).is_err());
    }
}
