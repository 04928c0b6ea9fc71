//! Local changes laid over the server's listings, until the server's listings show them.
//!
//! Listings are cached and fetched in the background of many operations, and the server lists a
//! new file only once its upload completed. So what this mount did locally is kept here and
//! merged into every lookup and readdir:
//! - **names** `(folder, name) → ino`: files created (not yet uploaded: their inode lives at
//!   `Loc::Local`), files replaced by an upload (a new id), objects just made (mkdir) or moved
//!   here. A name here shadows a listed entry of the same name. An entry is held while the file
//!   has a local spool (`settled: None`); once the server has it ([`Overlay::settle`]) it is
//!   shown only over listings whose fetch **started before** the settle (they cannot know of
//!   it), and dropped as soon as a listing started after it is consulted: from then on the
//!   server's listing is the truth, so a file deleted or replaced elsewhere after it landed
//!   shows as the server has it (not as this mount left it) once the folder is listed again.
//!   Not a timer: a listing cached before the change (the empty one seeded by mkdir, say) may be
//!   served long after any grace period would have ended;
//! - **gone** remote objects: deleted, replaced by an overwrite, or moved away. Remote ids are
//!   never reused, so hiding them from any listing is always right.
//!
//! Memory: both maps are swept only when they grow past a bound, of entries older than the
//! grace period (folder TTL + margin). A swept name's folder is returned to the caller to be
//! invalidated when its cached listing may predate the name ([`Swept`]), so sweeping never
//! shows a stale listing without the name.
//!
//! Every method takes the lock briefly and never awaits.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::inode::Loc;
use super::lock;

/// Added to the folder TTL for the grace period (slow listings still in flight).
pub const GRACE_MARGIN: Duration = Duration::from_secs(5);

/// Gone entries beyond this count trigger a sweep of those older than the grace period.
const GONE_SWEEP_AT: usize = 65_536;

/// Settled names beyond this count trigger a sweep of those older than the grace period.
const NAMES_SWEEP_AT: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct LocalName {
    ino: u64,
    /// When the server got what this name shows; `None`: held (local bytes the server lacks).
    settled: Option<Instant>,
}

impl LocalName {
    /// Whether this name still shows over a listing whose fetch started at `listed` (`None`: no
    /// listing known).
    fn shows_over(&self, listed: Option<Instant>) -> bool {
        match (self.settled, listed) {
            (Some(settled), Some(listed)) => listed <= settled,
            _ => true,
        }
    }
}

#[derive(Default)]
struct State {
    names: HashMap<Loc, BTreeMap<OsString, LocalName>>,
    /// Settled names in `names` (for the sweep bound).
    settled: usize,
    gone: HashMap<Loc, Instant>,
}

impl State {
    fn insert(&mut self, dir: Loc, name: &OsStr, entry: LocalName) {
        let old = self
            .names
            .entry(dir)
            .or_default()
            .insert(name.to_os_string(), entry);
        if old.is_some_and(|o| o.settled.is_some()) {
            self.settled -= 1;
        }
        if entry.settled.is_some() {
            self.settled += 1;
        }
    }

    fn remove(&mut self, dir: Loc, name: &OsStr) {
        if let Some(names) = self.names.get_mut(&dir) {
            if names.remove(name).is_some_and(|o| o.settled.is_some()) {
                self.settled -= 1;
            }
            if names.is_empty() {
                self.names.remove(&dir);
            }
        }
    }
}

/// Folders whose settled names a sweep dropped: invalidate their cached listings when those
/// started before `before` (they may lack the names).
#[must_use = "a swept folder's stale listing must be invalidated"]
#[derive(Debug, Default)]
pub(crate) struct Swept {
    pub(crate) dirs: Vec<Loc>,
    pub(crate) before: Option<Instant>,
}

/// The overlay of one mount.
pub(crate) struct Overlay {
    grace: Duration,
    inner: Mutex<State>,
}

impl Overlay {
    pub(crate) fn new(dir_cache_ttl: Duration) -> Self {
        Overlay {
            grace: dir_cache_ttl.saturating_add(GRACE_MARGIN),
            inner: Mutex::new(State::default()),
        }
    }

    /// The inode shown as `name` in folder `dir`, if this mount put one there, over a listing of
    /// `dir` whose fetch started at `listed` (`None`: none cached). A settled name that such a
    /// listing supersedes is dropped.
    pub(crate) fn get(&self, dir: Loc, name: &OsStr, listed: Option<Instant>) -> Option<u64> {
        let mut st = lock(&self.inner);
        let entry = *st.names.get(&dir)?.get(name)?;
        if entry.shows_over(listed) {
            return Some(entry.ino);
        }
        st.remove(dir, name);
        None
    }

    /// Show `ino` as `name` in `dir`, held until [`Overlay::settle`].
    pub(crate) fn hold(&self, dir: Loc, name: &OsStr, ino: u64) {
        lock(&self.inner).insert(dir, name, LocalName { ino, settled: None });
    }

    /// The server now has what `name` shows: keep it only over listings fetched before now.
    /// Also puts the entry in place when missing (mkdir, rename).
    pub(crate) fn settle(&self, dir: Loc, name: &OsStr, ino: u64) -> Swept {
        let now = Instant::now();
        let mut st = lock(&self.inner);
        st.insert(
            dir,
            name,
            LocalName {
                ino,
                settled: Some(now),
            },
        );
        if st.settled < NAMES_SWEEP_AT {
            return Swept::default();
        }
        let Some(cut) = now.checked_sub(self.grace) else {
            return Swept::default();
        };
        let mut swept = Swept::default();
        let mut dropped = 0;
        st.names.retain(|d, names| {
            let before = names.len();
            names.retain(|_, n| n.settled.is_none_or(|s| s > cut));
            if names.len() < before {
                dropped += before - names.len();
                swept.dirs.push(*d);
            }
            !names.is_empty()
        });
        st.settled -= dropped;
        swept.before = Some(cut);
        swept
    }

    /// Drop `name` from `dir` (only if it still shows `ino`, when given).
    pub(crate) fn remove(&self, dir: Loc, name: &OsStr, ino: Option<u64>) {
        let mut st = lock(&self.inner);
        let shows = st
            .names
            .get(&dir)
            .and_then(|names| names.get(name))
            .map(|n| n.ino);
        if shows.is_some() && (ino.is_none() || shows == ino) {
            st.remove(dir, name);
        }
    }

    /// The names this mount put in `dir` that show over a listing whose fetch started at
    /// `listed` (`None`: none cached), sorted. Settled names it supersedes are dropped.
    pub(crate) fn names(&self, dir: Loc, listed: Option<Instant>) -> Vec<(OsString, u64)> {
        let mut st = lock(&self.inner);
        let Some(names) = st.names.get_mut(&dir) else {
            return Vec::new();
        };
        let before = names.len();
        names.retain(|_, n| n.shows_over(listed));
        let dropped = before - names.len();
        let out: Vec<(OsString, u64)> = names.iter().map(|(k, n)| (k.clone(), n.ino)).collect();
        if names.is_empty() {
            st.names.remove(&dir);
        }
        st.settled -= dropped;
        out
    }

    /// The remote object at `loc` no longer exists (deleted, replaced, moved).
    pub(crate) fn mark_gone(&self, loc: Loc) {
        if !matches!(loc, Loc::Remote { .. }) {
            return;
        }
        let now = Instant::now();
        let mut st = lock(&self.inner);
        if st.gone.len() >= GONE_SWEEP_AT
            && let Some(cut) = now.checked_sub(self.grace)
        {
            st.gone.retain(|_, at| *at > cut);
        }
        st.gone.insert(loc, now);
    }

    /// The removal of `loc` did not happen after all (a delete refused by the server).
    pub(crate) fn unmark_gone(&self, loc: &Loc) {
        lock(&self.inner).gone.remove(loc);
    }

    /// Whether a listed object is one this mount removed.
    pub(crate) fn is_gone(&self, loc: &Loc) -> bool {
        lock(&self.inner).gone.contains_key(loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Space;

    const DIR: Loc = Loc::SpaceRoot(Space::Shared);

    #[test]
    fn held_until_settled_then_over_older_listings_only() {
        let o = Overlay::new(Duration::ZERO);
        let older = Instant::now();
        o.hold(DIR, OsStr::new("a"), 5);
        let newer = Instant::now() + Duration::from_secs(1);
        assert_eq!(o.get(DIR, OsStr::new("a"), Some(newer)), Some(5), "held");
        assert_eq!(o.names(DIR, Some(newer)), vec![(OsString::from("a"), 5)]);
        o.remove(DIR, OsStr::new("a"), Some(6));
        assert_eq!(
            o.get(DIR, OsStr::new("a"), None),
            Some(5),
            "another inode's removal"
        );
        o.remove(DIR, OsStr::new("a"), Some(5));
        assert_eq!(o.get(DIR, OsStr::new("a"), None), None);

        let swept = o.settle(DIR, OsStr::new("b"), 7);
        assert!(swept.dirs.is_empty());
        assert_eq!(o.get(DIR, OsStr::new("b"), None), Some(7), "no listing");
        assert_eq!(
            o.get(DIR, OsStr::new("b"), Some(older)),
            Some(7),
            "a listing fetched before the upload landed"
        );
        assert_eq!(o.names(DIR, Some(older)), vec![(OsString::from("b"), 7)]);
        assert_eq!(
            o.get(DIR, OsStr::new("b"), Some(newer)),
            None,
            "a listing fetched after: the server's word"
        );
        assert_eq!(
            o.get(DIR, OsStr::new("b"), Some(older)),
            None,
            "dropped once superseded"
        );
        assert_eq!(lock(&o.inner).settled, 0);
    }

    #[test]
    fn a_sweep_names_the_folders_whose_listings_may_lack_the_names() {
        let o = Overlay {
            grace: Duration::ZERO,
            inner: Mutex::new(State::default()),
        };
        let other = Loc::Remote {
            space: Space::Shared,
            id: 3,
        };
        for i in 0..NAMES_SWEEP_AT - 1 {
            let swept = o.settle(DIR, OsStr::new(&format!("f{i}")), i as u64 + 10);
            assert!(swept.dirs.is_empty());
        }
        std::thread::sleep(Duration::from_millis(2));
        let swept = o.settle(other, OsStr::new("last"), 1);
        assert!(swept.dirs.contains(&DIR), "{swept:?}");
        assert!(swept.before.is_some());
        assert_eq!(o.names(DIR, None), vec![]);
        assert!(lock(&o.inner).settled <= 1);
    }

    #[test]
    fn gone_only_for_remote_objects() {
        let o = Overlay::new(Duration::from_secs(60));
        let remote = Loc::Remote {
            space: Space::Shared,
            id: 9,
        };
        assert!(!o.is_gone(&remote));
        o.mark_gone(remote);
        assert!(o.is_gone(&remote));
        o.mark_gone(DIR);
        assert!(!o.is_gone(&DIR));
    }
}
