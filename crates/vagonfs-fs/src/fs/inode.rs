//! The inode table: one inode per storage object, lookup counts, forget.
//!
//! An inode is identified by where it lives ([`Loc`]): a virtual folder of the `RootSpec::All`
//! layout, the root of a storage tree, or a listed object `(space, remote id)`. The table maps
//! both ways (ino → node, loc → ino), so the same object listed twice (two readdirs, a readdir
//! and a lookup) gets the same ino for as long as the kernel holds it.
//!
//! Subtle cases handled here:
//! - ino numbers are never reused within a mount: a forgotten object that is looked up again gets
//!   a fresh number (the kernel may still have requests in flight for the old one, which answer
//!   ESTALE);
//! - lookup counts are the kernel's: every `lookup` reply and every readdirplus entry (not `.`
//!   and `..`) adds one, `forget(n)` subtracts `n`; an inode is dropped only when its count is 0
//!   *and* it is not otherwise needed (open handles; the root is pinned). Later, a file with a
//!   local spool not yet uploaded will also count as needed (see [`Inode::open_handles`]);
//! - an object whose kind changed on the server (same id, file became folder) gets a new inode:
//!   the kernel must never see an inode change type. The old inode stays until forgotten but is
//!   no longer reachable by its location;
//! - a file that exists locally before the server lists it (created, not yet uploaded) lives at
//!   [`Loc::Local`] and is re-bound to its remote id on upload ([`InodeTable::rebind`]); so is a
//!   file replaced by an upload (the server gives the new bytes a new id) and a moved object:
//!   re-binding is a map update, the inode number stays;
//! - a file with a local spool is pinned ([`InodeTable::set_spooled`]): its inode stays while the
//!   spool exists even if the kernel forgot it, since the overlay of local names points at it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::api::Space;

use super::{NodeKind, ROOT_INO, lock};

/// Where an inode lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Loc {
    /// The root of the `RootSpec::All` layout: `machines/`, `recordings/`, `shared/`.
    AllRoot,
    /// `machines/` of the `RootSpec::All` layout: one folder per machine.
    Machines,
    /// The root folder of a storage tree.
    SpaceRoot(Space),
    /// A listed object.
    Remote { space: Space, id: u64 },
    /// A file created locally and not uploaded yet (`n` is unique within the mount).
    Local { space: Space, n: u64 },
    /// `.Trash-$uid` at the root of the `RootSpec::All` layout, or its `files/` or `info/`:
    /// views merging every storage's own trash (see `trash/`).
    Trash(TrashDir),
    /// A file made in the merged `info/`, held in memory until the file it describes is
    /// trashed (`n` is unique within the mount; see `trash/`).
    Held { n: u64 },
}

/// Which folder of the merged trash (`trash/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TrashDir {
    /// `.Trash-$uid` itself: holds `files/` and `info/`.
    Top,
    Files,
    Info,
    /// Where gvfs moves an item before deleting it (Empty Trash): routed like `files/`.
    Expunged,
}

impl Loc {
    /// The storage tree this location belongs to (none for the virtual folders).
    pub(crate) fn space(&self) -> Option<Space> {
        match self {
            Loc::AllRoot | Loc::Machines | Loc::Trash(_) | Loc::Held { .. } => None,
            Loc::SpaceRoot(space) | Loc::Remote { space, .. } | Loc::Local { space, .. } => {
                Some(*space)
            }
        }
    }

    /// Nothing can be written here, whatever the mount options: the virtual folders (machines
    /// cannot be created from a file system) and the session recordings.
    /// The merged trash is not: what is written there goes to a storage (`trash/`).
    pub(crate) fn is_read_only(&self) -> bool {
        if matches!(self, Loc::Trash(_) | Loc::Held { .. }) {
            return false;
        }
        match self.space() {
            None => true,
            Some(Space::Recordings { .. }) => true,
            Some(Space::Shared | Space::Machine(_)) => false,
        }
    }
}

/// One inode.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub(crate) ino: u64,
    pub(crate) loc: Loc,
    pub(crate) kind: NodeKind,
    pub(crate) size: u64,
    /// As listed; `None` when the server did not say (shown as the mount time).
    pub(crate) mtime: Option<SystemTime>,
    /// The folder this node was last seen in: its ino (for `..`) and its location (to list it
    /// again for fresh attributes). `None` for the root.
    pub(crate) parent: Option<(u64, Loc)>,
    /// The kernel's references.
    lookups: u64,
    /// Open file handles: keep the inode while the kernel may still read through them.
    pub(crate) open_handles: u32,
    /// Never dropped (the root).
    pinned: bool,
    /// The name it was last seen or created under (`None` for the root).
    pub(crate) name: Option<OsString>,
    /// Has a local spool: kept even when the kernel forgot it.
    spooled: bool,
    /// `mtime` is a local time (set by a write or an upload), not the server's.
    pub(crate) local_mtime: bool,
    /// Set by utimens: shown instead of any other time while the mount lives (the API cannot
    /// store it), until the next write or truncation of the file.
    pub(crate) mtime_override: Option<SystemTime>,
    /// `(size, mtime)` at the previous open, to tell the kernel whether its page cache is still
    /// good.
    last_open: Option<(u64, Option<SystemTime>)>,
}

impl Inode {
    fn fresh(ino: u64, loc: Loc, kind: NodeKind, pinned: bool) -> Self {
        Inode {
            ino,
            loc,
            kind,
            size: 0,
            mtime: None,
            parent: None,
            lookups: 0,
            open_handles: 0,
            pinned,
            name: None,
            spooled: false,
            local_mtime: false,
            mtime_override: None,
            last_open: None,
        }
    }

    fn droppable(&self) -> bool {
        !self.pinned && !self.spooled && self.lookups == 0 && self.open_handles == 0
    }
}

/// What a listing says of a child; enough to create or refresh its inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) loc: Loc,
    pub(crate) kind: NodeKind,
    pub(crate) size: u64,
    pub(crate) mtime: Option<SystemTime>,
}

struct Tables {
    by_ino: HashMap<u64, Inode>,
    by_loc: HashMap<Loc, u64>,
    next_ino: u64,
}

/// The table. Every method takes the lock briefly and never awaits.
pub(crate) struct InodeTable {
    inner: Mutex<Tables>,
}

impl InodeTable {
    /// A table holding only the root, at [`ROOT_INO`].
    pub(crate) fn new(root: Loc) -> Self {
        let node = Inode::fresh(ROOT_INO, root, NodeKind::Directory, true);
        let mut by_ino = HashMap::new();
        by_ino.insert(ROOT_INO, node);
        let mut by_loc = HashMap::new();
        by_loc.insert(root, ROOT_INO);
        InodeTable {
            inner: Mutex::new(Tables {
                by_ino,
                by_loc,
                next_ino: ROOT_INO + 1,
            }),
        }
    }

    pub(crate) fn get(&self, ino: u64) -> Option<Inode> {
        lock(&self.inner).by_ino.get(&ino).cloned()
    }

    /// The inode for a listed child, created if needed, its attributes refreshed from the
    /// listing and its parent recorded; counts one kernel lookup when `count_lookup`.
    pub(crate) fn upsert(
        &self,
        seen: &Seen,
        name: &OsStr,
        parent: (u64, Loc),
        count_lookup: bool,
    ) -> Inode {
        let mut t = lock(&self.inner);
        let reuse = t
            .by_loc
            .get(&seen.loc)
            .copied()
            .filter(|ino| t.by_ino.get(ino).is_some_and(|n| n.kind == seen.kind));
        let ino = match reuse {
            Some(ino) => ino,
            None => {
                // New, or the object changed kind: a fresh inode either way.
                let ino = t.next_ino;
                t.next_ino += 1;
                t.by_loc.insert(seen.loc, ino);
                ino
            }
        };
        let node = t
            .by_ino
            .entry(ino)
            .or_insert_with(|| Inode::fresh(ino, seen.loc, seen.kind, false));
        if !node.pinned {
            node.size = seen.size;
            node.mtime = seen.mtime;
            node.local_mtime = false;
            node.parent = Some(parent);
            node.name = Some(name.to_os_string());
        }
        if count_lookup {
            node.lookups += 1;
        }
        node.clone()
    }

    /// Refresh an inode's attributes from a newer listing. Returns the updated node.
    pub(crate) fn refresh(&self, ino: u64, seen: &Seen) -> Option<Inode> {
        let mut t = lock(&self.inner);
        let node = t.by_ino.get_mut(&ino)?;
        if node.kind == seen.kind && node.loc == seen.loc {
            node.size = seen.size;
            node.mtime = seen.mtime;
            node.local_mtime = false;
        }
        Some(node.clone())
    }

    /// A new inode for an object the server does not list yet (or was just made by us), with
    /// one kernel lookup (the create/mkdir reply).
    pub(crate) fn insert_new(
        &self,
        loc: Loc,
        kind: NodeKind,
        name: &OsStr,
        parent: (u64, Loc),
    ) -> Inode {
        let mut t = lock(&self.inner);
        let ino = t.next_ino;
        t.next_ino += 1;
        t.by_loc.insert(loc, ino);
        let mut node = Inode::fresh(ino, loc, kind, false);
        node.parent = Some(parent);
        node.name = Some(name.to_os_string());
        node.lookups = 1;
        t.by_ino.insert(ino, node.clone());
        node
    }

    /// The inode bound to `loc`, if any.
    pub(crate) fn ino_of(&self, loc: &Loc) -> Option<u64> {
        lock(&self.inner).by_loc.get(loc).copied()
    }

    /// Move `ino` to a new location (an upload gave it a new id, or it was moved): the inode
    /// number stays, the old location no longer leads to it.
    pub(crate) fn rebind(&self, ino: u64, loc: Loc) {
        let mut t = lock(&self.inner);
        let Some(node) = t.by_ino.get_mut(&ino) else {
            return;
        };
        let old = std::mem::replace(&mut node.loc, loc);
        if t.by_loc.get(&old) == Some(&ino) {
            t.by_loc.remove(&old);
        }
        t.by_loc.insert(loc, ino);
    }

    /// The object of `ino` is gone (deleted or replaced): its location no longer leads to it.
    /// The inode itself stays while the kernel holds it (open handles keep working).
    pub(crate) fn unbind(&self, ino: u64) {
        let mut t = lock(&self.inner);
        let Some(loc) = t.by_ino.get(&ino).map(|n| n.loc) else {
            return;
        };
        if t.by_loc.get(&loc) == Some(&ino) {
            t.by_loc.remove(&loc);
        }
    }

    /// The folder and name an inode now lives under (after a rename).
    pub(crate) fn set_place(&self, ino: u64, parent: (u64, Loc), name: &OsStr) {
        let mut t = lock(&self.inner);
        if let Some(node) = t.by_ino.get_mut(&ino) {
            node.parent = Some(parent);
            node.name = Some(name.to_os_string());
        }
    }

    /// Local attributes (after an upload, or utimens): `mtime` is then a local time.
    pub(crate) fn set_local_attrs(&self, ino: u64, size: Option<u64>, mtime: Option<SystemTime>) {
        let mut t = lock(&self.inner);
        if let Some(node) = t.by_ino.get_mut(&ino) {
            if let Some(size) = size {
                node.size = size;
            }
            if let Some(mtime) = mtime {
                node.mtime = Some(mtime);
                node.local_mtime = true;
            }
        }
    }

    /// The object of `ino` was replaced by a new upload (a move copies the file): its size is
    /// `size`, and the old object's modification time no longer describes it. Until a listing
    /// tells the new one, none is known (conflict checks then go by id and size).
    pub(crate) fn set_uploaded(&self, ino: u64, size: u64) {
        if let Some(node) = lock(&self.inner).by_ino.get_mut(&ino) {
            node.size = size;
            if !node.local_mtime {
                node.mtime = None;
            }
        }
    }

    /// utimens: the time to show (`None` clears it).
    pub(crate) fn set_mtime_override(&self, ino: u64, t: Option<SystemTime>) {
        if let Some(node) = lock(&self.inner).by_ino.get_mut(&ino) {
            node.mtime_override = t;
        }
    }

    /// Whether `ino` has a local spool (pinned while it has).
    pub(crate) fn set_spooled(&self, ino: u64, spooled: bool) {
        let mut t = lock(&self.inner);
        if let Some(node) = t.by_ino.get_mut(&ino) {
            node.spooled = spooled;
            if !spooled {
                Self::drop_if_unneeded(&mut t, ino);
            }
        }
    }

    /// One more kernel reference (a lookup of `.`/`..`, or a create).
    pub(crate) fn add_lookup(&self, ino: u64) -> Option<Inode> {
        let mut t = lock(&self.inner);
        let node = t.by_ino.get_mut(&ino)?;
        node.lookups += 1;
        Some(node.clone())
    }

    /// The kernel dropped `n` references. Unknown inodes are ignored (a forget may race with
    /// nothing the core could do differently).
    pub(crate) fn forget(&self, ino: u64, n: u64) {
        let mut t = lock(&self.inner);
        let Some(node) = t.by_ino.get_mut(&ino) else {
            tracing::debug!(ino, n, "forget of an unknown inode");
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        Self::drop_if_unneeded(&mut t, ino);
    }

    /// A file handle was opened on `ino`. Answers whether the kernel may keep its page cache:
    /// the size and mtime are the same as at the previous open of this inode.
    pub(crate) fn opened(&self, ino: u64, size: u64, mtime: Option<SystemTime>) -> Option<bool> {
        let mut t = lock(&self.inner);
        let node = t.by_ino.get_mut(&ino)?;
        node.open_handles += 1;
        let keep = node.last_open == Some((size, mtime));
        node.last_open = Some((size, mtime));
        Some(keep)
    }

    /// A file handle on `ino` was released.
    pub(crate) fn closed(&self, ino: u64) {
        let mut t = lock(&self.inner);
        if let Some(node) = t.by_ino.get_mut(&ino) {
            node.open_handles = node.open_handles.saturating_sub(1);
            Self::drop_if_unneeded(&mut t, ino);
        }
    }

    fn drop_if_unneeded(t: &mut Tables, ino: u64) {
        let Some(node) = t.by_ino.get(&ino) else {
            return;
        };
        if !node.droppable() {
            return;
        }
        let loc = node.loc;
        t.by_ino.remove(&ino);
        // Only unbind the location if it still points here (a kind change may have re-bound it).
        if t.by_loc.get(&loc) == Some(&ino) {
            t.by_loc.remove(&loc);
        }
    }

    /// Whether `node` is still reachable by a name (its location leads to it): false once its
    /// object was deleted or replaced (the inode lives on while open: nlink 0).
    pub(crate) fn is_linked(&self, node: &Inode) -> bool {
        node.pinned || lock(&self.inner).by_loc.get(&node.loc) == Some(&node.ino)
    }

    /// Number of live inodes.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: u64, kind: NodeKind) -> Seen {
        Seen {
            loc: Loc::Remote {
                space: Space::Shared,
                id,
            },
            kind,
            size: id,
            mtime: None,
        }
    }

    const ROOT: (u64, Loc) = (ROOT_INO, Loc::SpaceRoot(Space::Shared));

    #[test]
    fn same_object_same_ino_until_forgotten() {
        let t = InodeTable::new(Loc::SpaceRoot(Space::Shared));
        let a = t.upsert(&seen(10, NodeKind::File), OsStr::new("a"), ROOT, true);
        let b = t.upsert(&seen(10, NodeKind::File), OsStr::new("a"), ROOT, true);
        assert_eq!(a.ino, b.ino);
        assert_ne!(a.ino, ROOT_INO);
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some(), "one reference left");
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none(), "count reached 0");
        let c = t.upsert(&seen(10, NodeKind::File), OsStr::new("a"), ROOT, true);
        assert!(c.ino > b.ino, "ino numbers are never reused");
    }

    #[test]
    fn open_handles_keep_the_inode() {
        let t = InodeTable::new(Loc::SpaceRoot(Space::Shared));
        let a = t.upsert(&seen(3, NodeKind::File), OsStr::new("x"), ROOT, true);
        assert_eq!(t.opened(a.ino, 3, None), Some(false));
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some(), "still open");
        t.closed(a.ino);
        assert!(t.get(a.ino).is_none());
    }

    #[test]
    fn root_is_pinned_and_kind_change_gets_new_inode() {
        let t = InodeTable::new(Loc::SpaceRoot(Space::Shared));
        t.forget(ROOT_INO, 5);
        assert!(t.get(ROOT_INO).is_some());
        let f = t.upsert(&seen(8, NodeKind::File), OsStr::new("x"), ROOT, true);
        let d = t.upsert(&seen(8, NodeKind::Directory), OsStr::new("x"), ROOT, true);
        assert_ne!(f.ino, d.ino);
        assert_eq!(t.get(f.ino).map(|n| n.kind), Some(NodeKind::File));
        // Forgetting the old one must not unbind the new one.
        t.forget(f.ino, 1);
        let again = t.upsert(&seen(8, NodeKind::Directory), OsStr::new("x"), ROOT, false);
        assert_eq!(again.ino, d.ino);
    }

    #[test]
    fn keep_cache_only_when_unchanged() {
        let t = InodeTable::new(Loc::SpaceRoot(Space::Shared));
        let a = t.upsert(&seen(4, NodeKind::File), OsStr::new("x"), ROOT, true);
        let when = SystemTime::UNIX_EPOCH;
        assert_eq!(t.opened(a.ino, 4, Some(when)), Some(false));
        assert_eq!(t.opened(a.ino, 4, Some(when)), Some(true));
        assert_eq!(t.opened(a.ino, 5, Some(when)), Some(false));
    }
}
