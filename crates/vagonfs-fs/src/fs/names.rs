//! What a folder shows: the server's listing merged with this mount's local changes.
//!
//! Every name lookup of the core goes through [`VagonFs::resolve`] and every readdir snapshot is
//! built by [`VagonFs::view`], so files created but not uploaded, files replaced by an upload
//! (a new id), and objects deleted or moved away look the same to `lookup`, `readdir`, `create`,
//! `unlink`, `rmdir` and `rename`.
//!
//! Subtle cases handled here:
//! - a name in the overlay shadows a listed entry of the same name (the listing may be older
//!   than an overwrite or a rename onto that name);
//! - an overlay name whose inode is gone (the kernel forgot it after its upload or mkdir
//!   settled: `drop_caches`, memory pressure, a parent's revalidation) is dropped from the
//!   overlay, and the folder is listed again first
//!   ([`DirCache::relist`](super::dir::DirCache::relist)): the cached listing
//!   predates the name (the empty one mkdir seeds, say), so falling back on it lost the name
//!   (`git clone` into the mount, then `git status`: "not a git repository"); `rmdir` counts
//!   such a name as content;
//! - listed objects this mount deleted, replaced or moved are hidden until the listing is
//!   fetched again (see `overlay.rs`);
//! - a folder is empty only on a fresh *complete* listing (every page read, every object
//!   shown), and a name the server holds more than once (or one cut to fit) is never written
//!   ([`VagonFs::check_name_writable`]).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use super::dir::{ListedEntry, Listing, Want};
use super::inode::{Inode, Loc};
use super::{FsResult, NodeKind, VagonFs};

/// A folder as shown at one moment: the server's listing (shared, not copied: a directory
/// handle on a 50,000-entry folder costs the few local changes, not the listing), the listed
/// entries this mount removed or shadowed, and the names this mount put there. Positions
/// `0..listing.len()` are the listed entries, then the local names: readdir offsets index them.
#[derive(Debug)]
pub(crate) struct DirView {
    listing: Arc<Listing>,
    /// Positions of listed entries not shown.
    hidden: HashSet<usize>,
    local: Vec<(OsString, u64)>,
}

/// What a [`DirView`] position shows.
#[derive(Debug)]
pub(crate) enum Shown<'a> {
    /// From the server's listing.
    Listed(&'a ListedEntry),
    /// A listed entry this mount removed or shadowed: nothing (the position stays used).
    Hidden,
    /// Put there by this mount: an inode of the table.
    Local { name: &'a OsStr, ino: u64 },
}

impl DirView {
    /// Whether both views read the same listing in memory (tests).
    #[cfg(test)]
    pub(crate) fn shares_listing(&self, other: &DirView) -> bool {
        Arc::ptr_eq(&self.listing, &other.listing)
    }

    /// Positions (shown or hidden).
    pub(crate) fn len(&self) -> usize {
        self.listing.entries.len() + self.local.len()
    }

    /// A folder shown without a server listing of its own (the merged trash, `trash/`).
    pub(crate) fn local_only(local: Vec<(OsString, u64)>) -> Arc<DirView> {
        Arc::new(DirView {
            listing: Arc::new(Listing::new(Vec::new(), true, std::time::Instant::now())),
            hidden: HashSet::new(),
            local,
        })
    }

    pub(crate) fn at(&self, pos: usize) -> Option<Shown<'_>> {
        let listed = self.listing.entries.len();
        if pos < listed {
            return Some(if self.hidden.contains(&pos) {
                Shown::Hidden
            } else {
                Shown::Listed(&self.listing.entries[pos])
            });
        }
        self.local
            .get(pos - listed)
            .map(|(name, ino)| Shown::Local { name, ino: *ino })
    }
}

/// A name found in a folder.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    /// An inode this mount put there (overlay).
    Node(Inode),
    /// A listed entry (no inode needed yet).
    Listed(ListedEntry),
}

/// What the write path needs to know of a child, whichever way it was found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child {
    /// The inode, when one exists.
    pub(crate) ino: Option<u64>,
    pub(crate) loc: Loc,
    pub(crate) kind: NodeKind,
    /// As the server lists it (a local spool's length is not this).
    pub(crate) size: u64,
    /// The server's time, when known (`None` when only a local time is known).
    pub(crate) remote_mtime: Option<SystemTime>,
    /// Shown under a name the server does not hold alone (see `ListedEntry::read_only`).
    pub(crate) read_only: bool,
}

impl VagonFs {
    /// The object shown as `name` in folder `dir`, if any (no lookup counted, no inode made).
    pub(crate) async fn resolve(&self, dir: &Inode, name: &OsStr) -> FsResult<Option<Resolved>> {
        if let Some(trash) = self.trash_resolve(dir, name).await {
            return trash;
        }
        if let Some(ino) = self
            .overlay
            .get(dir.loc, name, self.dirs.listed_at(dir.loc))
        {
            match self.inodes.get(ino) {
                Some(node) => return Ok(Some(Resolved::Node(node))),
                None => {
                    // The kernel forgot the inode, and the cached listing predates the name.
                    self.overlay.remove(dir.loc, name, Some(ino));
                    let listing = self.dirs.relist(dir.loc).await?;
                    return Ok(self.found(dir.loc, name, listing.find(name).cloned()));
                }
            }
        }
        if self.dirs.is_known_missing(dir.loc, name) {
            return Ok(None);
        }
        let found = self.dirs.entry(dir.loc, name).await?;
        Ok(self.found(dir.loc, name, found))
    }

    /// What a listed entry shows (nothing when this mount removed it); a name found missing is
    /// remembered.
    fn found(&self, dir: Loc, name: &OsStr, entry: Option<ListedEntry>) -> Option<Resolved> {
        match entry {
            Some(e) if !self.overlay.is_gone(&e.seen.loc) => Some(Resolved::Listed(e)),
            _ => {
                self.dirs.note_missing(dir, name);
                None
            }
        }
    }

    /// The names this mount put in folder `dir` that show over `listing`, with live inodes.
    /// A name whose inode the kernel forgot (an upload or a mkdir that landed, not held) is
    /// something `listing` predates: the folder is listed again, waited for, and that listing
    /// is the one to show (returned with the names over it).
    async fn local_names(
        &self,
        dir: Loc,
        mut listing: Arc<Listing>,
    ) -> FsResult<(Arc<Listing>, Vec<(OsString, u64)>)> {
        /// A name can only be lost again if it landed and was forgotten during the relist.
        const RELISTS: usize = 2;
        let mut relists = 0;
        loop {
            let mut lost = false;
            let mut live = Vec::new();
            for (name, ino) in self.overlay.names(dir, Some(listing.started)) {
                if self.inodes.get(ino).is_some() {
                    live.push((name, ino));
                } else {
                    self.overlay.remove(dir, &name, Some(ino));
                    lost = true;
                }
            }
            if !lost || relists == RELISTS {
                return Ok((listing, live));
            }
            listing = self.dirs.relist(dir).await?;
            relists += 1;
        }
    }

    /// The server now has what `name` in folder `dir` shows (an upload landed, a mkdir, a
    /// move): shown over listings fetched before now (see `overlay.rs`).
    pub(crate) fn settle_name(&self, dir: Loc, name: &OsStr, ino: u64) {
        self.dirs.forget_missing(dir, name);
        self.dirs
            .invalidate_swept(self.overlay.settle(dir, name, ino));
    }

    /// [`VagonFs::resolve`] as facts for the write path.
    pub(crate) async fn child(&self, dir: &Inode, name: &OsStr) -> FsResult<Option<Child>> {
        Ok(self
            .resolve(dir, name)
            .await?
            .map(|r| self.child_of(dir.loc, &r)))
    }

    /// `r`, found in folder `dir`, as the write path sees it.
    pub(crate) fn child_of(&self, dir: Loc, r: &Resolved) -> Child {
        match r {
            Resolved::Node(n) => Child {
                ino: Some(n.ino),
                loc: n.loc,
                kind: n.kind,
                size: n.size,
                remote_mtime: if n.local_mtime { None } else { n.mtime },
                read_only: false,
            },
            Resolved::Listed(e) => Child {
                ino: self
                    .bind_listed(&e.seen, &e.name, dir, None)
                    .filter(|i| self.inodes.get(*i).is_some_and(|n| n.kind == e.seen.kind)),
                loc: e.seen.loc,
                kind: e.seen.kind,
                size: e.seen.size,
                remote_mtime: e.seen.mtime,
                read_only: e.read_only,
            },
        }
    }

    /// The folder as shown now, for opendir: listed entries not removed or shadowed locally,
    /// then the local names. A snapshot: readdir offsets index into it. The listing is the
    /// cached one, revalidated in the background once older than `--dir-refresh`.
    pub(crate) async fn view(&self, dir: &Inode) -> FsResult<Arc<DirView>> {
        if let Some(trash) = self.trash_view(dir).await {
            return trash;
        }
        let listing = self.dirs.get(dir.loc, Want::Open).await?;
        let (listing, mut local) = self.local_names(dir.loc, listing).await?;
        local.extend(self.trash_root_entry(dir));
        let shadowed: HashSet<&OsString> = local.iter().map(|(n, _)| n).collect();
        let hidden = listing
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| shadowed.contains(&e.name) || self.overlay.is_gone(&e.seen.loc))
            .map(|(i, _)| i)
            .collect();
        Ok(Arc::new(DirView {
            listing,
            hidden,
            local,
        }))
    }

    /// The children of folder `loc` as shown (listing merged with the overlay).
    pub(crate) async fn children_of(&self, loc: Loc) -> FsResult<Vec<(OsString, Child)>> {
        let listing = self.dirs.listing(loc).await?;
        let (listing, local) = self.local_names(loc, listing).await?;
        let shadowed: HashSet<&OsString> = local.iter().map(|(n, _)| n).collect();
        let mut out = Vec::with_capacity(listing.entries.len() + local.len());
        for e in &listing.entries {
            if !shadowed.contains(&e.name) && !self.overlay.is_gone(&e.seen.loc) {
                out.push((
                    e.name.clone(),
                    self.child_of(loc, &Resolved::Listed(e.clone())),
                ));
            }
        }
        for (name, ino) in local {
            if let Some(node) = self.inodes.get(ino) {
                out.push((name, self.child_of(loc, &Resolved::Node(node))));
            }
        }
        Ok(out)
    }

    /// Whether inode `ino` is `ancestor` or lies under it (by the parents the table knows).
    pub(crate) fn is_within(&self, ino: u64, ancestor: u64) -> bool {
        /// A cycle would be a bug; never loop forever.
        const MAX_DEPTH: usize = 4096;
        let mut at = Some(ino);
        for _ in 0..MAX_DEPTH {
            let Some(i) = at else { return false };
            if i == ancestor {
                return true;
            }
            at = self.inodes.get(i).and_then(|n| n.parent).map(|(p, _)| p);
        }
        false
    }

    /// Whether folder `loc` shows nothing, judged on a fresh listing (the server deletes a
    /// folder with everything in it, so a stale "empty" must never be trusted).
    pub(crate) async fn is_empty_dir(&self, loc: Loc) -> FsResult<bool> {
        self.dirs.invalidate(loc);
        let listing = self.dirs.listing(loc).await?;
        Ok(self.shows_nothing(loc, &listing))
    }

    /// Whether `listing` of folder `loc` shows nothing this mount did not remove: no name held
    /// here, and every listed object removed through the mount (`gone`).
    pub(crate) fn shows_nothing(&self, loc: Loc, listing: &Listing) -> bool {
        // Names held here (not uploaded yet), and settled ones this listing cannot know (even
        // when the kernel forgot their inodes: the server has them).
        if !self.overlay.names(loc, Some(listing.started)).is_empty() {
            return false;
        }
        // A listing that stopped early or hides objects it cannot show proves nothing: the
        // server deletes whatever is there.
        listing.complete
            && listing
                .entries
                .iter()
                .all(|e| self.overlay.is_gone(&e.seen.loc))
    }

    /// EROFS for a file shown under a name the server does not hold alone (a name held more
    /// than once, or cut to fit): the API writes by name, so an upload would replace another
    /// object. Judged on the folder's listing (cached; the file was looked up through it).
    pub(crate) async fn check_name_writable(&self, node: &Inode) -> FsResult<()> {
        let (Loc::Remote { .. }, Some((dir_ino, dir_loc))) = (node.loc, node.parent) else {
            return Ok(());
        };
        let listing = self.dirs.listing(dir_loc).await?;
        match listing.find_loc(&node.loc) {
            Some(e) if e.read_only => {
                let name = node.name.as_deref().unwrap_or(OsStr::new(""));
                tracing::warn!(
                    file = %self.display_path(Some(dir_ino), name),
                    id = ?node.loc,
                    "refusing to write: the server holds this name more than once (or a longer one), and an upload by name would replace another file; rename or delete it instead"
                );
                Err(super::FsError::ReadOnly)
            }
            _ => Ok(()),
        }
    }

    /// `a/b/c` for a name in folder `dir_ino` (for logs and `vagonfs status`).
    pub(crate) fn display_path(&self, dir_ino: Option<u64>, name: &OsStr) -> String {
        /// Deeper than this is shown cut (a cycle would be a bug; never loop forever).
        const MAX_DEPTH: usize = 256;
        let mut parts = vec![name.to_string_lossy().into_owned()];
        let mut at = dir_ino;
        while let Some(ino) = at {
            if parts.len() > MAX_DEPTH {
                break;
            }
            let Some(node) = self.inodes.get(ino) else {
                break;
            };
            match (&node.name, node.parent) {
                (Some(n), Some((up, _))) => {
                    parts.push(n.to_string_lossy().into_owned());
                    at = Some(up);
                }
                _ => at = None,
            }
        }
        parts.reverse();
        parts.join("/")
    }
}
