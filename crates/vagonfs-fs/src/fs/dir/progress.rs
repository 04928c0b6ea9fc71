//! Answers from the pages of a folder listing still arriving: a lookup in a folder never listed
//! is answered by the first page holding its name, not after the last page.
//!
//! Subtle cases handled here:
//! - a name two arrived objects show under is not answered early (only the whole listing can
//!   tell which keeps the name, the lowest id);
//! - a name answered early that the whole listing shows otherwise (a later page held the same
//!   name with a lower id) is checked when the listing lands: the kernel forgets its entry, and
//!   the next lookup resolves it in the whole listing;
//! - a fetch's pages are forgotten however it ends ([`ProgressDone`]).

use std::ffi::{OsStr, OsString};
use std::sync::Mutex;

use crate::api::{FileEntry, Space};

use super::naming::{listed_entry, visible_name};
use super::{HashMap, ListedEntry, Listing, Loc, Shared, lock};

/// The pages of one running folder fetch that have arrived so far, by shown name.
pub(super) struct Progress {
    space: Space,
    /// Shown name → the entry, or `None` when two arrived objects show under it (then only
    /// the whole listing can tell which one keeps the name).
    names: Mutex<HashMap<OsString, Option<ListedEntry>>>,
    /// Bumped at each page taken.
    pub(super) pages: tokio::sync::watch::Sender<u32>,
    /// Names answered from a page before the listing was whole, with what they were answered:
    /// checked against the whole listing when it lands.
    answered: Mutex<Vec<(OsString, Loc)>>,
}

impl Progress {
    pub(super) fn new(space: Space) -> Self {
        Progress {
            space,
            names: Mutex::new(HashMap::new()),
            pages: tokio::sync::watch::Sender::new(0),
            answered: Mutex::new(Vec::new()),
        }
    }

    /// Take one page's new objects (the pager's observer).
    pub(super) fn take(&self, page: &[FileEntry]) {
        {
            let mut names = lock(&self.names);
            for e in page {
                let Some((name, long)) = visible_name(e) else {
                    continue;
                };
                let shown = listed_entry(self.space, e, name, long);
                names
                    .entry(shown.name.clone())
                    .and_modify(|slot| *slot = None)
                    .or_insert(Some(shown));
            }
        }
        self.pages.send_modify(|n| *n += 1);
    }

    /// The entry shown as `name` in the pages arrived so far, when exactly one object holds it;
    /// remembered as answered.
    pub(super) fn early(&self, name: &OsStr) -> Option<ListedEntry> {
        let hit = lock(&self.names).get(name).cloned().flatten()?;
        lock(&self.answered).push((name.to_os_string(), hit.seen.loc));
        Some(hit)
    }
}

/// Unregisters a fetch's [`Progress`] when the fetch ends, however it ends.
pub(super) struct ProgressDone<'a> {
    pub(super) shared: &'a Shared,
    pub(super) key: (Loc, u64),
}

impl Drop for ProgressDone<'_> {
    fn drop(&mut self) {
        lock(&self.shared.progress).remove(&self.key);
    }
}

impl Shared {
    /// Names answered from a page before the whole listing of `dir` was known, that the whole
    /// listing shows otherwise (a later page held the same name with a lower id): the kernel
    /// forgets its entry, and the next lookup resolves the name in the whole listing.
    pub(super) fn check_early_answers(&self, dir: Loc, progress: &Progress, listing: &Listing) {
        let answered = std::mem::take(&mut *lock(&progress.answered));
        if answered.is_empty() {
            return;
        }
        let parent = self.inodes.ino_of(&dir);
        for (name, loc) in answered {
            if listing.find(&name).map(|e| e.seen.loc) == Some(loc) {
                continue;
            }
            tracing::debug!(?dir, name = ?name, "a name answered from an early page is shown otherwise");
            if let (Some(kernel), Some(parent)) = (self.kernel.get(), parent) {
                kernel.forget_entry(parent, &name);
            }
        }
    }
}
