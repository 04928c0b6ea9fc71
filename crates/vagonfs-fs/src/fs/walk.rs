//! Folder walks: a program opening the files of one folder in their listed order.
//!
//! `cp -r`, `tar`, `grep -r`, `rsync` and file managers read a folder's files one after the
//! other, in the order readdir gave them (rsync and shell globs sort by name, which is the
//! server's order for files). Each open costs a link request and each first read a GET, in
//! series. Once three opens of one folder come in listed order ([`WALK_STREAK`]), the next
//! [`WALK_AHEAD`] files of the listing are handed to the reader (`read/folder.rs`), which fetches their links and first
//! bytes in the background, several at a time.
//!
//! Subtle cases handled here:
//! - a walk is recognised only when an open lands a little ahead of the previous one in the
//!   same listing (at most [`WALK_AHEAD`] entries further, within [`WALK_GAP`]): random opens,
//!   an editor opening one file, or opens in an order of their own fetch nothing ahead, so a
//!   walk in another order wastes at most one window;
//! - each file is handed over once per walk (`ahead_to`), not again at every open;
//! - the positions belong to one listing (`Arc` identity): a folder relisted meanwhile starts
//!   a new walk, since its entries may have moved;
//! - only files are read ahead, never folders; a file that has an inode is read ahead as the
//!   inode knows it (its version keys the block cache), and skipped if it has a local spool
//!   (its reads are served from the spool);
//! - files this mount put in a folder and no listing shows yet (only the overlay does: `tar x`
//!   into a new folder, then `cp -r` out of it) are walked over those names in inode order,
//!   the order they were made and the one `cp` reads in (coreutils sorts by inode number);
//! - memory: walks of at most [`WALKS_MAX`] folders are remembered; past that, the oldest go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dir::Listing;
use super::inode::{Inode, Loc};
use super::read::FileVersion;
use super::{NodeKind, VagonFs, lock};

/// Files read ahead of a walk's last open.
pub const WALK_AHEAD: usize = 16;

/// Longest pause between two opens of one walk.
pub const WALK_GAP: Duration = Duration::from_secs(5);

/// Folders whose walk is remembered.
const WALKS_MAX: usize = 64;

#[derive(Clone, Copy)]
struct Walk {
    /// The listing the positions are in (compared by address, never dereferenced).
    listing: usize,
    /// Position of the last file opened.
    last: usize,
    /// Position after the last file handed over for reading ahead.
    ahead_to: usize,
    /// Opens that continued this walk in a row.
    streak: u32,
    at: Instant,
}

/// The walks of one mount.
#[derive(Default)]
pub(crate) struct Walks {
    map: Mutex<HashMap<Loc, Walk>>,
    /// Processes that walked a folder lately (pid, when): the first file they open in another
    /// folder starts its read-ahead at once (`cp -r` of a tree moves from folder to folder).
    walkers: Mutex<HashMap<u32, Instant>>,
}

impl Walks {
    /// A file at `file` in folder `dir`, listed as `listing`, was opened for reading by process
    /// `pid` (when known): the listing positions to read ahead now (empty unless this open
    /// continues a walk, or starts one for a process that walks).
    pub(crate) fn opened(
        &self,
        dir: Loc,
        listing: &Arc<Listing>,
        file: &Loc,
        pid: Option<u32>,
    ) -> std::ops::Range<usize> {
        let Some(pos) = listing.position(file) else {
            return 0..0;
        };
        self.opened_at(dir, listing_id(listing), pos, listing.entries.len(), pid)
    }

    /// [`Walks::opened`] for the entry at `pos` of a sequence of `len` entries known as `id`
    /// (a listing, or the names this mount put in the folder over it).
    fn opened_at(
        &self,
        dir: Loc,
        id: usize,
        pos: usize,
        len: usize,
        pid: Option<u32>,
    ) -> std::ops::Range<usize> {
        let now = Instant::now();
        let walker = pid.filter(|p| {
            lock(&self.walkers)
                .get(p)
                .is_some_and(|at| now.duration_since(*at) < WALK_GAP)
        });
        let mut map = lock(&self.map);
        if map.len() >= WALKS_MAX && !map.contains_key(&dir) {
            evict_oldest(&mut map, |w| w.at);
        }
        let fresh = Walk {
            listing: id,
            last: pos,
            ahead_to: pos + 1,
            streak: 0,
            at: now,
        };
        let walk = map.entry(dir).or_insert(fresh);
        let continues = walk.listing == id
            && pos > walk.last
            && pos - walk.last <= WALK_AHEAD
            && now.duration_since(walk.at) < WALK_GAP;
        if continues {
            walk.streak += 1;
        } else {
            *walk = fresh;
        }
        walk.last = pos;
        walk.at = now;
        if walker.is_none() && walk.streak < WALK_STREAK {
            walk.ahead_to = walk.ahead_to.max(pos + 1);
            return 0..0;
        }
        let from = walk.ahead_to.max(pos + 1);
        let to = (pos + 1 + WALK_AHEAD).min(len);
        walk.ahead_to = to.max(from);
        drop(map);
        if let Some(p) = pid {
            let mut walkers = lock(&self.walkers);
            if walkers.len() >= WALKS_MAX && !walkers.contains_key(&p) {
                evict_oldest(&mut walkers, |at| *at);
            }
            walkers.insert(p, now);
        }
        from..to.max(from)
    }
}

/// Opens that must continue a walk before it reads ahead: three files of one folder opened in
/// listed order (two is `diff a b`, `cat a b`: not worth 16 files fetched ahead). The process
/// that opened them is a walker from then on.
pub const WALK_STREAK: u32 = 2;

fn evict_oldest<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    when: impl Fn(&V) -> Instant,
) {
    let oldest = map.iter().min_by_key(|(_, v)| when(v)).map(|(k, _)| *k);
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

/// The server file an inode shows, as the table knows it (`None` for one not on the server).
fn version_of(node: &Inode) -> Option<FileVersion> {
    match node.loc {
        Loc::Remote { id, .. } => Some(FileVersion {
            id,
            size: node.size,
            mtime: node.mtime,
        }),
        _ => None,
    }
}

impl VagonFs {
    /// A file at `file` in folder `dir` was opened for reading by process `pid`: if that
    /// continues a walk (or starts one for a process that walks), read the next files ahead.
    pub(crate) fn read_ahead_walk(&self, dir: Loc, file: &Loc, pid: Option<u32>) {
        let Some(listing) = self.dirs.peek(dir) else {
            return;
        };
        if listing.position(file).is_none() {
            return self.read_ahead_made_here(dir, &listing, file, pid);
        }
        let range = self.walks.opened(dir, &listing, file, pid);
        let Some(entries) = listing.entries.get(range) else {
            return;
        };
        let files: Vec<FileVersion> = entries
            .iter()
            .filter(|e| e.seen.kind == NodeKind::File)
            .filter_map(|e| {
                let Loc::Remote { id, .. } = e.seen.loc else {
                    return None;
                };
                match self.inodes.ino_of(&e.seen.loc) {
                    Some(ino) if self.spooled_file(ino).is_some() => None,
                    Some(ino) => self.inodes.get(ino).and_then(|node| version_of(&node)),
                    None => Some(FileVersion {
                        id,
                        size: e.seen.size,
                        mtime: e.seen.mtime,
                    }),
                }
            })
            .collect();
        self.read_ahead(dir, files);
    }

    /// [`Self::read_ahead_walk`] of a file this mount put in `dir` (written, copied or moved
    /// here: shown through the overlay until a listing shows it, e.g. `tar x` into a new
    /// folder, then `cp -r` out of it). The walk goes over those names in inode order, and
    /// reads ahead the ones that landed and have no spool. A program reading them in name
    /// order (`rsync`, `tar c`) is not seen as a walk: each file costs its own round trips.
    fn read_ahead_made_here(&self, dir: Loc, listing: &Arc<Listing>, file: &Loc, pid: Option<u32>) {
        let names = self.overlay.names(dir, Some(listing.started));
        let mut nodes: Vec<_> = names
            .iter()
            .filter_map(|(_, ino)| self.inodes.get(*ino).map(|n| (*ino, n)))
            .collect();
        // In inode order: the order they were made here, and the one `cp -r` reads a folder
        // in (coreutils sorts entries by inode number); for listed files it is the listing's.
        nodes.sort_by_key(|(ino, _)| *ino);
        let Some(pos) = nodes.iter().position(|(_, n)| n.loc == *file) else {
            return;
        };
        // Never an address (aligned): a walk over these names is not one over the listing.
        let id = listing_id(listing) | 1;
        let range = self.walks.opened_at(dir, id, pos, nodes.len(), pid);
        let files = nodes
            .get(range)
            .unwrap_or_default()
            .iter()
            .filter(|(ino, n)| n.kind == NodeKind::File && self.spooled_file(*ino).is_none())
            .filter_map(|(_, n)| version_of(n))
            .collect();
        self.read_ahead(dir, files);
    }

    fn read_ahead(&self, dir: Loc, files: Vec<FileVersion>) {
        if !files.is_empty() {
            tracing::debug!(folder = ?dir, files = files.len(), "folder walk: reading ahead");
            self.reader.read_ahead_files(files);
        }
    }
}

/// A listing's identity for [`Walk::listing`] (its address, never dereferenced).
fn listing_id(listing: &Arc<Listing>) -> usize {
    Arc::as_ptr(listing) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Space;
    use crate::fs::NodeKind;
    use crate::fs::dir::ListedEntry;
    use crate::fs::inode::Seen;

    fn listing(n: u64) -> Arc<Listing> {
        let entries = (1..=n)
            .map(|id| ListedEntry {
                name: format!("f{id}").into(),
                seen: Seen {
                    loc: file(id),
                    kind: NodeKind::File,
                    size: 10,
                    mtime: None,
                },
                read_only: false,
            })
            .collect();
        Arc::new(Listing::new(entries, true, Instant::now()))
    }

    fn file(id: u64) -> Loc {
        Loc::Remote {
            space: Space::Shared,
            id,
        }
    }

    const DIR: Loc = Loc::SpaceRoot(Space::Shared);

    #[test]
    fn two_opens_in_listed_order_start_a_walk_and_each_file_is_handed_over_once() {
        let walks = Walks::default();
        let l = listing(100);
        assert_eq!(walks.opened(DIR, &l, &file(1), None), 0..0);
        // Two files in order (`diff a b`) are not a walk yet; the third is.
        assert_eq!(walks.opened(DIR, &l, &file(2), None), 0..0);
        assert_eq!(walks.opened(DIR, &l, &file(3), None), 3..3 + WALK_AHEAD);
        // The next open hands over only the one file newly in the window.
        assert_eq!(
            walks.opened(DIR, &l, &file(4), None),
            3 + WALK_AHEAD..4 + WALK_AHEAD
        );
        // Skipping a few (a folder in between, a file the program filters out) still walks.
        assert_eq!(
            walks.opened(DIR, &l, &file(7), None),
            4 + WALK_AHEAD..7 + WALK_AHEAD
        );
    }

    #[test]
    fn random_or_backward_opens_read_nothing_ahead() {
        let walks = Walks::default();
        let l = listing(100);
        assert_eq!(walks.opened(DIR, &l, &file(50), None), 0..0);
        assert_eq!(walks.opened(DIR, &l, &file(10), None), 0..0);
        assert_eq!(walks.opened(DIR, &l, &file(90), None), 0..0);
        assert_eq!(
            walks.opened(DIR, &l, &file(90), None),
            0..0,
            "the same file again"
        );
        // Not in the listing (a file created here since).
        assert_eq!(walks.opened(DIR, &l, &file(1000), None), 0..0);
    }

    #[test]
    fn a_new_listing_starts_a_new_walk_and_the_window_stops_at_the_end() {
        let walks = Walks::default();
        let l = listing(10);
        walks.opened(DIR, &l, &file(1), None);
        walks.opened(DIR, &l, &file(2), None);
        assert_eq!(walks.opened(DIR, &l, &file(3), None), 3..10);
        let relisted = listing(10);
        assert_eq!(walks.opened(DIR, &relisted, &file(4), None), 0..0);
        assert_eq!(walks.opened(DIR, &relisted, &file(5), None), 0..0);
        assert_eq!(walks.opened(DIR, &relisted, &file(6), None), 6..10);
        assert_eq!(walks.opened(DIR, &relisted, &file(7), None), 10..10);
    }

    #[test]
    fn a_process_that_walked_starts_walking_the_next_folder_at_its_first_open() {
        let walks = Walks::default();
        let l = listing(100);
        let (a, b, c) = (folder(1), folder(2), folder(3));
        // Two opens in order: the process is not a walker yet.
        walks.opened(a, &l, &file(1), Some(7));
        assert_eq!(walks.opened(a, &l, &file(2), Some(7)), 0..0);
        assert_eq!(walks.opened(b, &l, &file(1), Some(7)), 0..0);
        // A third in order makes the walk, and the process a walker: its first open in the
        // next folder reads ahead.
        assert_eq!(walks.opened(a, &l, &file(3), Some(7)), 3..3 + WALK_AHEAD);
        assert_eq!(walks.opened(c, &l, &file(1), Some(7)), 1..1 + WALK_AHEAD);
        assert_eq!(
            walks.opened(c, &l, &file(2), Some(7)),
            1 + WALK_AHEAD..2 + WALK_AHEAD
        );
        // Another process opening a file there (or nobody known) does not.
        let d = folder(4);
        assert_eq!(walks.opened(d, &l, &file(1), Some(8)), 0..0);
        assert_eq!(walks.opened(d, &l, &file(50), None), 0..0);
    }

    fn folder(id: u64) -> Loc {
        Loc::Remote {
            space: Space::Shared,
            id: 1_000_000 + id,
        }
    }

    #[test]
    fn walks_of_many_folders_stay_bounded() {
        let walks = Walks::default();
        let l = listing(3);
        for id in 0..(WALKS_MAX as u64 * 3) {
            for f in 1..=3 {
                walks.opened(folder(id), &l, &file(f), Some(id as u32));
            }
        }
        assert!(lock(&walks.map).len() <= WALKS_MAX);
        assert!(lock(&walks.walkers).len() <= WALKS_MAX);
    }
}
