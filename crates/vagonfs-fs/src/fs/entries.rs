//! What the kernel is told about names: lookups that may answer a negative entry, `mknod`, and
//! listings handed to the kernel through a [`DirectoryReplier`].
//!
//! These are filesystem decisions, so they live in the core; the adapter (`crate::fuse`) only
//! translates the answers into FUSE replies.
//!
//! Subtle cases owned here:
//! - a lookup of a name known missing answers [`Lookup::Missing`] with the negative TTL, so
//!   `stat` storms on absent names (shells, editors) stay in the kernel; with no folder cache
//!   (`dir_cache_ttl` 0) there is no negative cache either and the answer is ENOENT;
//! - every entry [`VagonFs::readdir`] returns counts as a lookup of its inode (except `.` and
//!   `..`), but the kernel takes a reference only for readdirplus entries that fit its buffer,
//!   and none at all for plain readdir: [`VagonFs::send_listing`] offers each entry to the
//!   replier, learns which ones the kernel took, and gives back the lookups of all the others
//!   (an entry refused for its name, the ones after a full buffer, every one of a plain
//!   readdir), so the inode table's counts stay exact and unsent inodes can be forgotten;
//! - `mknod` of a regular file is create + flush + release: an empty file exists once it is
//!   uploaded; any other node type is EPERM (the storage holds only files and folders).

use std::ffi::OsStr;
use std::time::Duration;

use super::{AttrReply, DirEntry, FsError, FsResult, VagonFs};

/// What a lookup tells the kernel.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// The name exists.
    Found(AttrReply),
    /// Nothing by that name; the kernel may remember so for this long (a negative entry).
    Missing(Duration),
}

/// What the kernel did with one listing entry offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Sent in the reply.
    Taken,
    /// Not sent: the kernel would refuse this name (and fail the whole listing).
    Refused,
    /// Not sent: the reply buffer is full; no further entry is offered.
    Full,
}

/// The kernel's side of a listing reply (mountpoint-s3 calls its own `DirectoryReplier`): the
/// core offers entries one by one and learns which the kernel took.
pub trait DirectoryReplier {
    /// Whether this reply takes a kernel lookup reference for every entry it sends
    /// (readdirplus), or none (plain readdir).
    fn counts_lookups(&self) -> bool;

    /// Offer one entry.
    fn add(&mut self, entry: &DirEntry) -> Offered;
}

/// `.` and `..` are never counted as lookups.
fn is_dot(entry: &DirEntry) -> bool {
    entry.name == "." || entry.name == ".."
}

impl VagonFs {
    /// A lookup whose "not found" may be a negative entry (see the module note).
    pub async fn lookup_entry(&self, parent: u64, name: &OsStr) -> FsResult<Lookup> {
        match self.lookup(parent, name).await {
            Ok(found) => Ok(Lookup::Found(found)),
            Err(FsError::NotFound) if !self.negative_lookup_ttl().is_zero() => {
                let ttl = self.negative_lookup_ttl();
                if let Some(dir) = self.inodes.get(parent) {
                    self.dirs.told_missing(dir.loc, name, ttl);
                }
                Ok(Lookup::Missing(ttl))
            }
            Err(err) => Err(err),
        }
    }

    /// `mknod(2)`: an empty regular file, created and uploaded (see the module note).
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> FsResult<AttrReply> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::NotPermitted(
                "only regular files and folders can be stored",
            ));
        }
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
        let (attr, open) = self.create(parent, name, mode, flags).await?;
        // An empty file exists once it is uploaded: flush does that. Release either way.
        let flushed = self.flush(attr.attr.ino, open.fh).await;
        let released = self.release(attr.attr.ino, open.fh).await;
        flushed.and(released).map(|()| attr)
    }

    /// Hand the entries of one [`VagonFs::readdir`] answer to the kernel through `out`, and give
    /// back the lookup of every entry the kernel holds no reference for. Returns how many
    /// entries were sent.
    pub fn send_listing(&self, entries: &[DirEntry], out: &mut dyn DirectoryReplier) -> usize {
        let counts = out.counts_lookups();
        let mut sent = 0;
        let mut rest = entries.iter();
        for entry in rest.by_ref() {
            match out.add(entry) {
                Offered::Taken => {
                    sent += 1;
                    if !counts {
                        self.give_back(entry);
                    }
                }
                Offered::Refused => self.give_back(entry),
                Offered::Full => {
                    self.give_back(entry);
                    break;
                }
            }
        }
        for entry in rest {
            self.give_back(entry);
        }
        sent
    }

    /// The lookup that `readdir` counted for `entry`, which the kernel does not hold.
    fn give_back(&self, entry: &DirEntry) {
        if !is_dot(entry) {
            self.inodes.forget(entry.attr.ino, 1);
        }
    }
}
