//! Tree walks: a program opening folders below a folder it opened moments ago (`find`, `du`,
//! `rm -r`, `ls -R`, `rsync` and `cp -r` scanning a tree) lists the next folders in the
//! background, so it does not wait a round trip for each folder in turn.
//!
//! These tools read a folder whole, then open each of its subfolders in turn, depth first; over
//! a real network each opendir of a folder not listed yet costs its listing, one after the
//! other. Once a folder is opened less than [`WALK_GAP`] after its parent was (a descent), the
//! parent's next [`AHEAD`] subfolders after it that have no listing cached or coming are listed
//! in the background, and so are the folder's own first [`AHEAD`] subfolders once its listing
//! is there. Every later descent moves the window on.
//!
//! Subtle cases handled here:
//! - a single opendir, or folders opened in no parent-child order, lists nothing ahead: an
//!   editor or a shell in one folder costs nothing extra; a file manager going down one level
//!   costs at most 2 × [`AHEAD`] listings, each fetched once and cached like any other;
//! - a listing cached (however old: its revalidation is the usual one) or already being fetched
//!   is never asked again; nothing is asked while an API failure is remembered, or when listings
//!   are not cached at all (`--dir-cache-ttl 0`);
//! - the scan for candidates looks at most [`SCAN`] entries after the folder opened, so a folder
//!   of 10,000 subfolders costs no quadratic work over a walk;
//! - times are tokio's clock (tests pause it); memory: at most [`OPENED_MAX`] opened folders
//!   are remembered; past that those older than [`WALK_GAP`] go, then all.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

use super::inode::{Inode, Loc};
use super::walk::WALK_GAP;
use super::{NodeKind, VagonFs, lock};

/// Folders listed ahead per step of a walk (each side: siblings, children).
pub const AHEAD: usize = 16;

/// Entries of a listing looked at for candidates per step.
const SCAN: usize = 256;

/// Opened folders remembered.
const OPENED_MAX: usize = 1024;

/// When each folder was last opened.
#[derive(Default)]
pub(crate) struct TreeWalks {
    opened: Mutex<HashMap<Loc, Instant>>,
}

impl TreeWalks {
    /// Folder `dir` (in folder `parent`) is opened now: whether its parent was opened less than
    /// [`WALK_GAP`] ago.
    fn step(&self, dir: Loc, parent: Option<Loc>) -> bool {
        let now = Instant::now();
        let mut opened = lock(&self.opened);
        if opened.len() >= OPENED_MAX {
            opened.retain(|_, at| now.duration_since(*at) < WALK_GAP);
            if opened.len() >= OPENED_MAX {
                opened.clear();
            }
        }
        opened.insert(dir, now);
        parent
            .and_then(|p| opened.get(&p))
            .is_some_and(|at| now.duration_since(*at) < WALK_GAP)
    }
}

impl VagonFs {
    /// Folder `dir` is being opened: when that is a step of a tree walk, the next subfolders
    /// of its parent are listed in the background. Whether it is one (then call
    /// [`Self::tree_walk_entered`] once its own listing is there).
    pub(crate) fn tree_walk_step(&self, dir: &Inode) -> bool {
        let parent = dir.parent.map(|(_, loc)| loc);
        if !self.tree_walks.step(dir.loc, parent) {
            return false;
        }
        if let Some(parent) = parent {
            self.list_ahead(parent, Some(&dir.loc));
        }
        true
    }

    /// The listing of folder `dir`, a step of a tree walk, is there: its first subfolders are
    /// listed in the background.
    pub(crate) fn tree_walk_entered(&self, dir: Loc) {
        self.list_ahead(dir, None);
    }

    /// Start listings of up to [`AHEAD`] subfolders of `dir` (after `after` in its listing)
    /// that have none cached or coming.
    fn list_ahead(&self, dir: Loc, after: Option<&Loc>) {
        let Some(listing) = self.dirs.peek(dir) else {
            return;
        };
        let from = after
            .and_then(|loc| listing.position(loc))
            .map_or(0, |i| i + 1);
        let mut started = 0;
        for entry in listing.entries.iter().skip(from).take(SCAN) {
            if started >= AHEAD {
                break;
            }
            if entry.seen.kind != NodeKind::Directory || self.overlay.is_gone(&entry.seen.loc) {
                continue;
            }
            if self.dirs.prefetch(entry.seen.loc) {
                started += 1;
            }
        }
    }
}
