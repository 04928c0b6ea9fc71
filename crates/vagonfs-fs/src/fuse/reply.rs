//! Reply translation: the core's answers in the kernel's types, and back.
//!
//! Subtle cases:
//! - every fuser reply type fails through one [`FuseReply::fail`], with the errno the core's
//!   one map chose ([`crate::fs::errno::to_errno`]);
//! - a negative lookup entry is node id 0 with the negative TTL as its entry TTL;
//! - listing offsets are the core's opaque `i64` cookies carried bit for bit as the kernel's
//!   `u64` ([`kernel_offset`], [`core_offset`]);
//! - a name the kernel would refuse in a listing fails the *whole* listing with EIO, so
//!   [`kernel_accepts`] is checked for every entry before it is added.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, TimeOrNow,
};

use tracing::warn;

use super::PREFERRED_IO_SIZE;
use crate::fs::{Attr, DirEntry, DirectoryReplier, NodeKind, Offered, OpenReply};

/// Size of a `st_blocks` unit.
const STAT_BLOCK_SIZE: u64 = 512;
/// The lookup generation: inode numbers are never reused within a mount.
pub(super) const GENERATION: Generation = Generation(0);
/// The longest name the kernel takes in a FUSE directory listing (`FUSE_NAME_MAX`).
const FUSE_NAME_MAX: usize = 1024;

/// The error half of every fuser reply type.
pub(super) trait FuseReply {
    fn fail(self, errno: i32);
}

macro_rules! fuse_reply {
    ($($t:ty),* $(,)?) => {
        $(impl FuseReply for $t {
            fn fail(self, errno: i32) {
                self.error(Errno::from_i32(errno))
            }
        })*
    };
}

fuse_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyOpen,
    ReplyWrite,
    ReplyEmpty,
    ReplyStatfs,
    ReplyCreate,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyXattr,
);

pub(super) fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Directory => FileType::Directory,
    }
}

/// The kernel's view of a core [`Attr`].
pub fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(STAT_BLOCK_SIZE),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0 tells the kernel "no such name" and lets it
/// cache that answer for the entry TTL.
pub(super) fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

pub(super) fn open_flags(open: &OpenReply) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if open.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if open.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    flags
}

pub(super) fn system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Whether the kernel accepts `name` in a directory listing. One bad name (too long, or with
/// `/` or NUL) makes the kernel fail the *whole* listing with EIO, so such an entry is skipped
/// (and logged) rather than sent. The core is expected to have filtered these already.
pub(super) fn kernel_accepts(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    !bytes.is_empty() && bytes.len() <= FUSE_NAME_MAX && !bytes.iter().any(|&b| b == b'/' || b == 0)
}

/// A listing offset for the kernel. The core's offsets are opaque cookies (`i64`, positive);
/// the kernel's are `u64`: the bits go through unchanged both ways.
pub(super) fn kernel_offset(offset: i64) -> u64 {
    offset.cast_unsigned()
}

/// The core's listing offset for one the kernel sends back (see [`kernel_offset`]).
pub(super) fn core_offset(offset: u64) -> i64 {
    offset.cast_signed()
}

/// A plain readdir reply as the core's [`DirectoryReplier`]: no lookup references.
pub(super) struct Listing<'a>(pub &'a mut ReplyDirectory);

impl DirectoryReplier for Listing<'_> {
    fn counts_lookups(&self) -> bool {
        false
    }

    fn add(&mut self, entry: &DirEntry) -> Offered {
        if !kernel_accepts(&entry.name) {
            warn!(name = ?entry.name, "entry skipped: a name the kernel refuses");
            return Offered::Refused;
        }
        let (ino, offset) = (INodeNo(entry.attr.ino), kernel_offset(entry.offset));
        match self
            .0
            .add(ino, offset, file_type(entry.attr.kind), &entry.name)
        {
            true => Offered::Full,
            false => Offered::Taken,
        }
    }
}

/// A readdirplus reply as the core's [`DirectoryReplier`]: one lookup reference per entry
/// sent, each entry's attributes cached for `ttl`.
pub(super) struct ListingPlus<'a> {
    pub reply: &'a mut ReplyDirectoryPlus,
    pub ttl: Duration,
}

impl DirectoryReplier for ListingPlus<'_> {
    fn counts_lookups(&self) -> bool {
        true
    }

    fn add(&mut self, entry: &DirEntry) -> Offered {
        if !kernel_accepts(&entry.name) {
            warn!(name = ?entry.name, "entry skipped: a name the kernel refuses");
            return Offered::Refused;
        }
        let attr = file_attr(&entry.attr);
        let offset = kernel_offset(entry.offset);
        match self
            .reply
            .add(attr.ino, offset, &entry.name, &self.ttl, &attr, GENERATION)
        {
            true => Offered::Full,
            false => Offered::Taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_the_kernel_refuses() {
        assert!(kernel_accepts(OsStr::new("report.pdf")));
        assert!(kernel_accepts(OsStr::new("r\u{e9}sum\u{e9} 2025.txt")));
        assert!(!kernel_accepts(OsStr::new("")));
        assert!(!kernel_accepts(OsStr::new("a/b")));
        assert!(!kernel_accepts(OsStr::new("a\0b")));
        assert!(kernel_accepts(OsStr::new(&"x".repeat(FUSE_NAME_MAX))));
        assert!(!kernel_accepts(OsStr::new(&"x".repeat(FUSE_NAME_MAX + 1))));
    }

    #[test]
    fn attributes_translate() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let attr = Attr {
            ino: 42,
            kind: NodeKind::File,
            size: 1025,
            mtime: t,
            ctime: t,
            atime: t,
            perm: 0o640,
            nlink: 1,
            uid: 7,
            gid: 8,
        };
        let fa = file_attr(&attr);
        assert_eq!((fa.ino, fa.size, fa.blocks), (INodeNo(42), 1025, 3));
        assert_eq!(fa.kind, FileType::RegularFile);
        assert_eq!((fa.perm, fa.uid, fa.gid, fa.nlink), (0o640, 7, 8, 1));
        assert_eq!(fa.mtime, t);
        let dir = file_attr(&Attr {
            kind: NodeKind::Directory,
            size: 0,
            ..attr
        });
        assert_eq!((dir.kind, dir.blocks), (FileType::Directory, 0));
        let open = OpenReply {
            fh: 1,
            keep_cache: true,
            direct_io: false,
        };
        assert_eq!(open_flags(&open), FopenFlags::FOPEN_KEEP_CACHE);
        let open = OpenReply {
            fh: 1,
            keep_cache: false,
            direct_io: true,
        };
        assert_eq!(open_flags(&open), FopenFlags::FOPEN_DIRECT_IO);
        assert_eq!(core_offset(kernel_offset(5)), 5);
        assert_eq!(core_offset(kernel_offset(i64::MAX)), i64::MAX);
    }
}
