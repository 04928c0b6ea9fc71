//! Local changes laid over the server's listings, until the server's listings show them.
//!
//! Listings are cached and fetched in the background of many operations, and the server lists a
//! new file only once its upload completed. So what this mount did locally is kept here and
//! merged into every lookup and readdir:
//! - **names** `(folder, name) → ino`: files created (not yet uploaded: their inode lives at
//!   `Loc::Local`), files replaced by an upload (a new id), objects just made (mkdir) or moved
//!   here. A name here shadows a listed entry of the same name. An entry is held while the file
//!   has a local spool (`until: None`), and for a grace period after the server got it
//!   ([`Overlay::settle`]): long enough for any listing fetched before the change (a fetch in
//!   flight when the change was made, cached for the folder TTL) to have expired;
//! - **gone** remote objects: deleted, replaced by an overwrite, or moved away. Remote ids are
//!   never reused, so hiding them from a stale listing is always right; they are forgotten after
//!   the same grace period to bound memory.
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

/// Gone entries beyond this count trigger a sweep of the expired ones.
const GONE_SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct LocalName {
    ino: u64,
    /// `None`: held until settled (the file has local bytes the server lacks).
    until: Option<Instant>,
}

#[derive(Default)]
struct State {
    names: HashMap<Loc, BTreeMap<OsString, LocalName>>,
    gone: HashMap<Loc, Instant>,
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

    /// The inode shown as `name` in folder `dir`, if this mount put one there.
    pub(crate) fn get(&self, dir: Loc, name: &OsStr) -> Option<u64> {
        let now = Instant::now();
        let mut st = lock(&self.inner);
        let names = st.names.get_mut(&dir)?;
        match names.get(name) {
            Some(n) if n.until.is_none_or(|u| now < u) => Some(n.ino),
            Some(_) => {
                names.remove(name);
                None
            }
            None => None,
        }
    }

    /// Show `ino` as `name` in `dir`, held until [`Overlay::settle`].
    pub(crate) fn hold(&self, dir: Loc, name: &OsStr, ino: u64) {
        lock(&self.inner)
            .names
            .entry(dir)
            .or_default()
            .insert(name.to_os_string(), LocalName { ino, until: None });
    }

    /// The server now has what `name` shows: keep it only for the grace period. Also puts the
    /// entry in place when missing (mkdir, rename).
    pub(crate) fn settle(&self, dir: Loc, name: &OsStr, ino: u64) {
        let until = Some(Instant::now() + self.grace);
        lock(&self.inner)
            .names
            .entry(dir)
            .or_default()
            .insert(name.to_os_string(), LocalName { ino, until });
    }

    /// Drop `name` from `dir` (only if it still shows `ino`, when given).
    pub(crate) fn remove(&self, dir: Loc, name: &OsStr, ino: Option<u64>) {
        let mut st = lock(&self.inner);
        if let Some(names) = st.names.get_mut(&dir) {
            if ino.is_none() || names.get(name).map(|n| n.ino) == ino {
                names.remove(name);
            }
            if names.is_empty() {
                st.names.remove(&dir);
            }
        }
    }

    /// The names this mount put in `dir` (live ones only), sorted.
    pub(crate) fn names(&self, dir: Loc) -> Vec<(OsString, u64)> {
        let now = Instant::now();
        let mut st = lock(&self.inner);
        let Some(names) = st.names.get_mut(&dir) else {
            return Vec::new();
        };
        names.retain(|_, n| n.until.is_none_or(|u| now < u));
        names.iter().map(|(k, n)| (k.clone(), n.ino)).collect()
    }

    /// The remote object at `loc` no longer exists (deleted, replaced, moved).
    pub(crate) fn mark_gone(&self, loc: Loc) {
        if !matches!(loc, Loc::Remote { .. }) {
            return;
        }
        let now = Instant::now();
        let mut st = lock(&self.inner);
        if st.gone.len() >= GONE_SWEEP_AT {
            st.gone.retain(|_, until| now < *until);
        }
        st.gone.insert(loc, now + self.grace);
    }

    /// Whether a listed object is one this mount removed.
    pub(crate) fn is_gone(&self, loc: &Loc) -> bool {
        lock(&self.inner)
            .gone
            .get(loc)
            .is_some_and(|until| Instant::now() < *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Space;

    const DIR: Loc = Loc::SpaceRoot(Space::Shared);

    #[test]
    fn held_until_settled_then_for_the_grace_only() {
        let o = Overlay::new(Duration::ZERO);
        o.hold(DIR, OsStr::new("a"), 5);
        assert_eq!(o.get(DIR, OsStr::new("a")), Some(5));
        assert_eq!(o.names(DIR), vec![(OsString::from("a"), 5)]);
        o.remove(DIR, OsStr::new("a"), Some(6));
        assert_eq!(
            o.get(DIR, OsStr::new("a")),
            Some(5),
            "another inode's removal"
        );
        o.remove(DIR, OsStr::new("a"), Some(5));
        assert_eq!(o.get(DIR, OsStr::new("a")), None);
        let zero = Overlay {
            grace: Duration::ZERO,
            inner: Mutex::new(State::default()),
        };
        zero.settle(DIR, OsStr::new("b"), 7);
        assert_eq!(zero.get(DIR, OsStr::new("b")), None, "grace over");
        assert!(zero.names(DIR).is_empty());
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
