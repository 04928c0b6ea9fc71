//! What the kernel is told when a folder's listing is replaced by a newer one.
//!
//! Subtle cases handled here:
//! - an entry gone, or now another object, is invalidated, unless that object's inode was last
//!   seen under that name in that folder (this mount's upload moved the inode to the new id):
//!   the kernel's entry already leads to it;
//! - a changed size or time invalidates the inode's attributes and pages, not its entry;
//! - a new name is invalidated only where the kernel may hold a negative entry for it
//!   ([`ToldMissing`], fed by lookups answered "no such name"). Otherwise it is this mount's own
//!   object, shown before the server listed it: invalidating a positive entry unhashes it, the
//!   kernel drops every inode under it (all of `.git` after a clone), and a process whose
//!   working folder it is can no longer read its path (`git -C`: "Unable to read current
//!   working directory").

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::time::Instant;

use super::{ListedEntry, Listing, Loc, NEGATIVE_MAX, Shared, lock};

/// What the kernel is told when a refreshed listing differs from the one it replaces. The
/// adapter implements it over FUSE notifications; the core never sees fuser types.
pub trait KernelCache: Send + Sync {
    /// Forget the kernel's entry (positive or negative) for `name` in folder `parent`.
    fn forget_entry(&self, parent: u64, name: &OsStr);
    /// Forget the kernel's attributes and cached pages of `ino`.
    fn forget_inode(&self, ino: u64);
}

/// Negative entries the kernel may hold, by folder and name, with when they expire. Past
/// [`NEGATIVE_MAX`] unexpired ones, the record is dropped and, until what it held has expired,
/// every new name of a listing is invalidated (as if each had been answered missing).
#[derive(Default)]
pub(super) struct ToldMissing {
    pub(super) names: HashMap<(Loc, OsString), Instant>,
    overflow_until: Option<Instant>,
}

impl ToldMissing {
    pub(super) fn note(&mut self, dir: Loc, name: &OsStr, until: Instant) {
        let now = Instant::now();
        if self.names.len() >= NEGATIVE_MAX {
            self.names.retain(|_, u| now < *u);
            if self.names.len() >= NEGATIVE_MAX {
                let latest = self.names.values().copied().max().unwrap_or(until);
                self.overflow_until = Some(latest.max(until));
                self.names.clear();
            }
        }
        self.names.insert((dir, name.to_os_string()), until);
    }

    /// Whether the kernel may hold a negative entry for `name` in `dir` now.
    fn may_hold(&self, dir: Loc, name: &OsStr) -> bool {
        let now = Instant::now();
        self.overflow_until.is_some_and(|u| now < u)
            || self
                .names
                .get(&(dir, name.to_os_string()))
                .is_some_and(|u| now < *u)
    }
}

impl Shared {
    /// Whether `entry`'s object has an inode last seen under its name in folder `parent`: the
    /// kernel's entry there already leads to it.
    fn holds_as(&self, parent: u64, entry: &ListedEntry) -> bool {
        self.inodes
            .ino_of(&entry.seen.loc)
            .and_then(|ino| self.inodes.get(ino))
            .is_some_and(|node| {
                node.kind == entry.seen.kind
                    && node.parent.map(|(p, _)| p) == Some(parent)
                    && node.name.as_deref() == Some(entry.name.as_os_str())
            })
    }

    /// Invalidate the kernel's entries and inodes that differ between `old` and `new`.
    pub(super) fn tell_kernel(&self, dir: Loc, old: &Listing, new: &Listing) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        let Some(parent) = self.inodes.ino_of(&dir) else {
            return;
        };
        let mut entries = 0usize;
        let mut inodes = 0usize;
        for before in &old.entries {
            match new.find(&before.name) {
                Some(after)
                    if after.seen.loc == before.seen.loc && after.seen.kind == before.seen.kind =>
                {
                    if (after.seen.size, after.seen.mtime) != (before.seen.size, before.seen.mtime)
                        && let Some(ino) = self.inodes.ino_of(&after.seen.loc)
                    {
                        kernel.forget_inode(ino);
                        inodes += 1;
                    }
                }
                // Another object under the same name that the kernel already holds there (this
                // mount's upload replaced the file: its inode moved to the new id).
                Some(after) if self.holds_as(parent, after) => {}
                // Gone, or another object under the same name.
                _ => {
                    kernel.forget_entry(parent, &before.name);
                    entries += 1;
                }
            }
        }
        for after in &new.entries {
            // A new name: only a negative entry the kernel may hold needs dropping. A positive
            // one is this mount's own object (mkdir, an upload, a move: shown before the server
            // listed it); invalidating it dropped every inode under it, and a process whose
            // working folder it was could no longer read its path (`git -C`).
            if old.find(&after.name).is_none()
                && lock(&self.told_missing).may_hold(dir, &after.name)
            {
                kernel.forget_entry(parent, &after.name);
                entries += 1;
            }
        }
        if entries + inodes > 0 {
            tracing::debug!(
                ?dir,
                entries,
                inodes,
                "listing changed: kernel caches invalidated"
            );
        }
    }
}
