//! Hit and miss counts of the core's caches (block cache, folder-listing cache), for
//! `vagonfs status` and the metrics page.
//!
//! Plain relaxed atomics bumped on the read and lookup paths; the mount reads them when a
//! status snapshot or a scrape asks ([`VagonFs::cache_counters`](super::VagonFs::cache_counters)).
//! What counts:
//! - block cache: each block a read needs counts once, a hit when its bytes are cached, a
//!   miss otherwise (even when it joins a fetch already running, e.g. a prefetch not landed
//!   yet: the read waits on the network either way); reads of a mount whose cache cannot hold a
//!   block are not counted;
//! - folder listings: each listing asked for counts once, a hit when a fresh cached listing
//!   answered, a miss when it was fetched (or a running fetch was joined).

use std::sync::atomic::{AtomicU64, Ordering};

/// Hits and misses of one cache.
#[derive(Debug, Default)]
pub(crate) struct HitCounter {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl HitCounter {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// `(hits, misses)`.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// Hit and miss counts of the core's caches since the mount started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub block_hits: u64,
    pub block_misses: u64,
    pub dir_hits: u64,
    pub dir_misses: u64,
}
