//! One upload per remote name at a time, whoever sends it: the engine's worker for an open or
//! closed file, `fsync`, a graceful unmount, or recovery of what an earlier run left unsaved.
//!
//! The engine already runs one upload per *file* (the file's upload gate), but two different
//! spools can aim at the same name: recovery uploads a spool an earlier run left for `foo`
//! while this run's `foo` is written and uploaded. Each decides "overwrite, or conflict copy"
//! by looking at what the server holds (`find_by_name`), then uploads; run side by side, the
//! later `complete` replaces the other's file, which neither looked at. A hold on the name
//! taken *before* the look and kept until the upload ended makes the second one see the
//! first's file, so it keeps both (a conflict copy) instead.
//!
//! Subtle cases: the key is the target as the server sees it (space, parent id, name), not the
//! path shown; a conflict copy's own name is not held (it is new and unique by its time stamp,
//! and a 409 on it moves to the next number); entries are removed when their last holder and
//! waiter is gone, so the table holds only names being uploaded; holders never take another
//! hold while holding one, so there is no lock order to keep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::api::Space;
use crate::fs::lock;

/// A remote name: where an upload lands.
pub(crate) type NameKey = (Space, Option<u64>, String);

/// The names being uploaded (shared by clones of the [`super::Uploader`]).
#[derive(Debug, Default)]
pub(crate) struct UploadNames {
    held: Mutex<HashMap<NameKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The hold on one name; released when dropped.
#[derive(Debug)]
pub(crate) struct NameHold {
    names: Arc<UploadNames>,
    key: NameKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl UploadNames {
    /// Wait until no other upload holds `key`, then hold it.
    pub(crate) async fn hold(self: &Arc<Self>, key: NameKey) -> NameHold {
        let slot = Arc::clone(lock(&self.held).entry(key.clone()).or_default());
        let guard = slot.lock_owned().await;
        NameHold {
            names: Arc::clone(self),
            key,
            guard: Some(guard),
        }
    }

    /// Hold `key` if nobody holds it now.
    pub(crate) fn try_hold(self: &Arc<Self>, key: NameKey) -> Option<NameHold> {
        let slot = Arc::clone(lock(&self.held).entry(key.clone()).or_default());
        // On failure the hold's drop below removes the slot if it was the last.
        let guard = slot.try_lock_owned().ok();
        let hold = NameHold {
            names: Arc::clone(self),
            key,
            guard,
        };
        hold.guard.is_some().then_some(hold)
    }

    /// Names held or waited for now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.held).len()
    }
}

impl Drop for NameHold {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = lock(&self.names.held);
        // Clones of the slot are only made under this lock: one left means nobody holds or
        // waits for the name.
        if held
            .get(&self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> NameKey {
        (Space::Shared, Some(7), name.to_string())
    }

    #[tokio::test]
    async fn a_name_is_held_by_one_upload_at_a_time_and_then_forgotten() {
        let names = Arc::new(UploadNames::default());
        let first = names.hold(key("foo")).await;
        // Another name is free.
        let other = names.hold(key("bar")).await;
        let n2 = Arc::clone(&names);
        let second = tokio::spawn(async move { n2.hold(key("foo")).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the same name waits");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("released")
            .expect("joined");
        assert_eq!(names.len(), 2);
        drop(second);
        drop(other);
        assert_eq!(names.len(), 0, "nothing held, nothing kept");
    }

    #[tokio::test]
    async fn a_waiter_dropped_while_waiting_leaves_no_entry() {
        let names = Arc::new(UploadNames::default());
        let first = names.hold(key("foo")).await;
        let n2 = Arc::clone(&names);
        let waiter = tokio::spawn(async move { n2.hold(key("foo")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert_eq!(names.len(), 0);
    }
}
