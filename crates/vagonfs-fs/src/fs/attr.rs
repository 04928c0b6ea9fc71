//! Attributes as the kernel sees them, from what listings say and the mount options.
//!
//! The API knows sizes and modification times only; everything else comes from the options:
//! uid/gid, and permissions `0o666 & !umask` for files, `0o777 & !umask` for folders.
//!
//! Subtle cases handled here:
//! - write bits are dropped where nothing can be written: read-only mounts, the session
//!   recordings, and the virtual folders of the `RootSpec::All` layout;
//! - a missing `modified` (the API may leave it out) shows the mount time, for every object the
//!   same, so `make`-like tools see a stable time rather than "now";
//! - the kernel's attribute and entry TTL ([`kernel_ttl`]) is `--dir-refresh` (10 s by
//!   default), at least [`MIN_ATTR_TTL`] and never longer than the folder cache TTL: attributes
//!   come from listings, and a listing older than `--dir-refresh` is revalidated when its folder
//!   is opened, with every changed or removed entry invalidated in the kernel by a notification
//!   (`fuse/notify.rs`); a local change invalidates its folder's attributes in the kernel
//!   itself. So a longer TTL shows nothing older than the daemon would, while the `stat` storms
//!   of file managers and build tools stay in the kernel (with 1 s, every file manager refresh
//!   re-asked the daemon for every file shown).

use std::time::{Duration, SystemTime};

use super::inode::{Inode, Loc};
use super::{Attr, AttrReply, FsConfig, NodeKind};

/// The shortest TTL the kernel is given for attributes and entries.
pub const MIN_ATTR_TTL: Duration = Duration::from_secs(1);

/// How long the kernel may cache attributes and entries: `--dir-refresh`, at least
/// [`MIN_ATTR_TTL`], at most the folder cache TTL (see the module note).
pub fn kernel_ttl(config: &FsConfig) -> Duration {
    config
        .dir_refresh
        .max(MIN_ATTR_TTL)
        .min(config.dir_cache_ttl)
}

/// Permission bits of a writable file before the umask.
const FILE_PERM: u16 = 0o666;
/// Permission bits of a writable folder before the umask.
const DIR_PERM: u16 = 0o777;
/// Every write bit.
const WRITE_BITS: u16 = 0o222;

/// Builds [`Attr`]s for one mount.
#[derive(Debug, Clone)]
pub(crate) struct AttrPolicy {
    uid: u32,
    gid: u32,
    umask: u16,
    read_only: bool,
    mount_time: SystemTime,
    ttl: Duration,
}

impl AttrPolicy {
    pub(crate) fn new(config: &FsConfig, mount_time: SystemTime) -> Self {
        AttrPolicy {
            uid: config.uid,
            gid: config.gid,
            umask: config.umask,
            read_only: config.read_only,
            mount_time,
            ttl: kernel_ttl(config),
        }
    }

    /// Whether writes are refused at `loc` whatever the write path can do.
    pub(crate) fn refuses_writes(&self, loc: &Loc) -> bool {
        self.read_only || loc.is_read_only()
    }

    pub(crate) fn attr(&self, node: &Inode) -> Attr {
        let base = match node.kind {
            NodeKind::File => FILE_PERM,
            NodeKind::Directory => DIR_PERM,
        };
        let mut perm = base & !self.umask;
        if self.refuses_writes(&node.loc) {
            perm &= !WRITE_BITS;
        }
        let mtime = node.mtime.unwrap_or(self.mount_time);
        Attr {
            ino: node.ino,
            kind: node.kind,
            size: node.size,
            mtime,
            ctime: mtime,
            atime: mtime,
            perm,
            nlink: match node.kind {
                NodeKind::File => 1,
                NodeKind::Directory => 2,
            },
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// How long the kernel may cache attributes and entries.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn reply(&self, node: &Inode) -> AttrReply {
        AttrReply {
            attr: self.attr(node),
            ttl: self.ttl,
        }
    }
}
