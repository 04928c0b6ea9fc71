//! `statfs`: the storage quota as `df` shows it, from `GET /files/capacity`.
//!
//! Numbers are cached for [`STATFS_TTL`] per capacity query (desktop file managers call statfs
//! very often) and fetched single-flight. Older numbers are still answered at once, and
//! refreshed in the background (`rm -r`, `find` and file managers call statfs as they start:
//! none of them waits a round trip for numbers that move slowly); a statfs with nothing cached
//! waits for its numbers, and the quota check before a write ([`StatfsCache::fresh_free`])
//! waits for fresh ones.
//!
//! Subtle cases handled here:
//! - which numbers: a machine's tree shows that machine's capacity; the shared tree shows the
//!   shared storage's; the `RootSpec::All` root, its virtual folders and the recordings show the
//!   team's numbers when the server gives them, else the shared storage's;
//! - `in_use` larger than `total` (over quota, or a server with no quota saying total 0) shows
//!   0 free, never a wrapped-around number;
//! - a failed refresh serves the last numbers known (marked stale in the log) rather than
//!   making `df` fail on a network blip; with nothing known yet the error is returned, after at
//!   most `--op-timeout` (file managers call statfs on every folder they show);
//! - inode counts: the API has no inode limit; `files` is the inodes in use plus
//!   [`STATFS_FREE_FILES`] free, so `df -i` shows IUsed = the inodes this mount holds, never a
//!   negative number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{Capacity, FilesApi, Space};

use super::dir::NAME_MAX;
use super::flight::SingleFlight;
use super::inode::Loc;
use super::{FsResult, StatFs, lock};

/// How long capacity numbers are reused.
pub const STATFS_TTL: Duration = Duration::from_secs(5);

/// The block size `statfs` reports, bytes.
pub const STATFS_BLOCK: u64 = 4096;

/// Free inodes reported: the API has no inode limit, and some tools refuse to write to a file
/// system that reports none free.
pub const STATFS_FREE_FILES: u64 = 1 << 20;

/// Which numbers of a capacity answer to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `total` / `in_use` of the storage asked about.
    Storage,
    /// The team's numbers if present, else the storage's.
    Team,
}

/// Capacity answers by `machine_id` asked, with when they arrived and the bytes that uploads
/// from here added to that storage since (not in the answer yet).
type CapacityMap = HashMap<Option<u64>, (Instant, Capacity, u64)>;

pub(crate) struct StatfsCache {
    api: Arc<dyn FilesApi>,
    op_timeout: Duration,
    cached: Arc<Mutex<CapacityMap>>,
    flight: SingleFlight<Option<u64>, Capacity>,
}

impl StatfsCache {
    pub(crate) fn new(api: Arc<dyn FilesApi>, op_timeout: Duration) -> Self {
        StatfsCache {
            api,
            op_timeout,
            cached: Arc::new(Mutex::new(HashMap::new())),
            flight: SingleFlight::new(),
        }
    }

    /// statfs for an inode at `loc`; `files` is the number of live inodes.
    pub(crate) async fn statfs(&self, loc: Loc, files: u64) -> FsResult<StatFs> {
        let (machine, scope) = query_of(loc);
        let last = lock(&self.cached)
            .get(&machine)
            .map(|(at, cap, _)| (*at, *cap));
        let capacity = match last {
            Some((at, cap)) => {
                if at.elapsed() >= STATFS_TTL {
                    self.refresh_later(machine);
                }
                cap
            }
            None => self.capacity(machine).await?,
        };
        let landed = lock(&self.cached).get(&machine).map_or(0, |e| e.2);
        let (total, in_use) = match (scope, capacity.team_total, capacity.team_in_use) {
            (Scope::Team, Some(t), Some(u)) => (t, u),
            _ => (capacity.total, capacity.in_use.saturating_add(landed)),
        };
        Ok(numbers(total, in_use, files))
    }

    /// Free bytes of the storage of `space` as last learnt, without a request, and whether
    /// those numbers are older than [`STATFS_TTL`]. `None` when nothing is known, for spaces
    /// nothing is written to, and for a server without a quota (total 0).
    /// Uploads landed since the numbers were learnt are subtracted.
    pub(crate) fn last_free(&self, space: Space) -> Option<(u64, bool)> {
        let machine = capacity_key(space)?;
        let (at, cap, landed) = lock(&self.cached).get(&machine).copied()?;
        (cap.total > 0).then(|| {
            (
                cap.total.saturating_sub(cap.in_use).saturating_sub(landed),
                at.elapsed() >= STATFS_TTL,
            )
        })
    }

    /// An upload from here grew the storage of `space` by `bytes`: counted against the last
    /// numbers until the next capacity answer (which includes it, or is fetched so soon after
    /// that it may not: then the check errs on accepting, as before).
    pub(crate) fn note_landed(&self, space: Space, bytes: u64) {
        let Some(machine) = capacity_key(space) else {
            return;
        };
        if let Some(entry) = lock(&self.cached).get_mut(&machine) {
            entry.2 = entry.2.saturating_add(bytes);
        }
    }

    /// Free bytes of the storage of `space` from numbers at most [`STATFS_TTL`] old (fetched
    /// when older); `None` when they cannot be had (no quota, or the API does not answer).
    pub(crate) async fn fresh_free(&self, space: Space) -> Option<u64> {
        let machine = capacity_key(space)?;
        self.capacity(machine).await.ok()?;
        self.last_free(space)
            .and_then(|(free, stale)| (!stale).then_some(free))
    }

    async fn capacity(&self, machine: Option<u64>) -> FsResult<Capacity> {
        let last = lock(&self.cached)
            .get(&machine)
            .map(|(at, cap, _)| (*at, *cap));
        if let Some((at, cap)) = last
            && at.elapsed() < STATFS_TTL
        {
            return Ok(cap);
        }
        let flight = async {
            match self.fetch(machine) {
                Some(flight) => flight.await,
                None => Err(super::FsError::Io(std::io::Error::other(
                    "capacity fetch not started",
                ))),
            }
        };
        let fetched = match tokio::time::timeout(self.op_timeout, flight).await {
            Ok(result) => result,
            Err(_) => Err(super::health::op_timed_out("capacity", self.op_timeout)),
        };
        match (fetched, last) {
            (Ok(cap), _) => Ok(cap),
            (Err(e), Some((_, cap))) => {
                tracing::warn!(
                    ?machine,
                    "capacity refresh failed, showing stale numbers: {e}"
                );
                Ok(cap)
            }
            (Err(e), None) => Err(e),
        }
    }
}

impl StatfsCache {
    /// The running fetch of `machine`'s numbers, or a new one (cached once it lands).
    fn fetch(&self, machine: Option<u64>) -> Option<super::flight::Flight<Capacity>> {
        let api = Arc::clone(&self.api);
        let cached = Arc::clone(&self.cached);
        self.flight.join_or_start(machine, move || {
            Some(async move {
                let cap = api.capacity(machine).await?;
                lock(&cached).insert(machine, (Instant::now(), cap, 0));
                Ok(cap)
            })
        })
    }

    /// Refresh `machine`'s numbers in the background (joining a refresh already running).
    fn refresh_later(&self, machine: Option<u64>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(flight) = self.fetch(machine) {
            tokio::spawn(async move {
                if let Err(e) = flight.await {
                    tracing::debug!(?machine, "capacity refresh failed, stale numbers stay: {e}");
                }
            });
        }
    }

    /// Make every cached number older than [`STATFS_TTL`] (tests: "the TTL has passed").
    #[cfg(test)]
    pub(crate) fn expire(&self) {
        for entry in lock(&self.cached).values_mut() {
            entry.0 = Instant::now().checked_sub(STATFS_TTL).unwrap_or(entry.0);
        }
    }
}

/// The capacity query whose numbers `statfs` at `loc` shows, and which of them.
fn query_of(loc: Loc) -> (Option<u64>, Scope) {
    match loc.space() {
        Some(Space::Machine(id)) => (Some(id), Scope::Storage),
        Some(Space::Shared) => (None, Scope::Storage),
        Some(Space::Recordings { .. }) | None => (None, Scope::Team),
    }
}

/// The key of the capacity query that gives a storage's own numbers (writes land in
/// machine and shared storages only).
fn capacity_key(space: Space) -> Option<Option<u64>> {
    match space {
        Space::Machine(id) => Some(Some(id)),
        Space::Shared => Some(None),
        Space::Recordings { .. } => None,
    }
}

/// The `statfs` numbers for a quota of `total` bytes with `in_use` used, `files` inodes in use.
fn numbers(total: u64, in_use: u64, files: u64) -> StatFs {
    let blocks = total.div_ceil(STATFS_BLOCK);
    let used = in_use.div_ceil(STATFS_BLOCK);
    let free = blocks.saturating_sub(used);
    StatFs {
        block_size: STATFS_BLOCK as u32,
        blocks,
        blocks_free: free,
        blocks_avail: free,
        files: files.saturating_add(STATFS_FREE_FILES),
        files_free: STATFS_FREE_FILES,
        name_max: NAME_MAX as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_from_bytes() {
        let s = numbers(26_843_545_600, 1_073_741_824, 3);
        assert_eq!(s.blocks, 6_553_600);
        assert_eq!(s.blocks_free, 6_553_600 - 262_144);
        assert_eq!(s.blocks_avail, s.blocks_free);
        assert_eq!(s.block_size, 4096);
        let over = numbers(4096, 10_000, 0);
        assert_eq!((over.blocks, over.blocks_free), (1, 0));
        // df -i: IUsed = files - files_free, never negative.
        assert_eq!(s.files - s.files_free, 3);
        assert_eq!(over.files - over.files_free, 0);
    }
}
