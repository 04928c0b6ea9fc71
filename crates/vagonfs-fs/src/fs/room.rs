//! Room for a change before it is accepted: the storage's quota (an early ENOSPC) and the bound
//! of the local spools (`--cache-max-size`).
//!
//! Both checks run when a write or a truncate makes a file longer, and the quota check again at
//! close; neither makes a request on the common path.
//!
//! Subtle cases owned here:
//! - **the quota is the last one known** (statfs, or the refresh a 507 upload failure starts):
//!   nothing is fetched to accept a change. A change is refused only when it *clearly* cannot
//!   fit: its growth over the server file it replaces, plus the growth still pending in other
//!   changed files of the same storage, is more than the free space; or the file alone is
//!   (the server wants a file's whole size free at create, even for a replacement: it frees
//!   the old bytes only at `complete`). What uploads from here added since the numbers were
//!   learnt is subtracted (another client's changes are not known: the check errs on
//!   accepting, and the upload answers 507 for itself). Numbers older than
//!   `STATFS_TTL` that say "full" are confirmed by one fresh capacity request before refusing
//!   (a file deleted meanwhile freed room); when that request fails, the change is accepted and
//!   the upload answers for itself;
//! - **the spool bound counts the length of every spool** (written files, open copies of server
//!   files, unlinked files still open) and is a soft bound: two writes checked at the same time
//!   may both pass it by one write. A file longer than the whole bound is ENOSPC at once;
//! - **a full spool makes the write wait** for uploads to drain (woken when a spool is released,
//!   and at least every second). It waits only while something can drain: closed changed files
//!   whose upload did not fail for good. With the API down, that wait lasts until it is back
//!   (documented in SEMANTICS.md); with only open files in the spool, it is ENOSPC at once.

use std::time::Duration;

use super::write::SpooledFile;
use super::{FsError, FsResult, VagonFs, lock};

/// Longest a write waiting for spool room sleeps between two looks.
const ROOM_POLL: Duration = Duration::from_secs(1);

impl VagonFs {
    /// Before `file` (inode `ino`) grows to `new_len` bytes: is there room on the server (as
    /// far as known) and in the spool? Waits while the spool is full and uploads can drain it.
    pub(crate) async fn make_room(
        &self,
        ino: u64,
        file: &SpooledFile,
        new_len: u64,
    ) -> FsResult<()> {
        let old_len = file.len();
        if new_len <= old_len {
            return Ok(());
        }
        self.check_quota(ino, file, new_len).await?;
        self.wait_spool_room(ino, new_len - old_len, new_len).await
    }

    /// ENOSPC when `file` at `new_len` bytes clearly cannot fit in its storage's last known
    /// free space, with the other pending changes of that storage.
    pub(crate) async fn check_quota(
        &self,
        ino: u64,
        file: &SpooledFile,
        new_len: u64,
    ) -> FsResult<()> {
        let space = file.space();
        let Some((free, stale)) = self.statfs.last_free(space) else {
            return Ok(());
        };
        let need = new_len.saturating_sub(file.base().map_or(0, |b| b.size));
        let others = self.pending_growth(space, ino);
        // Both are sure refusals: the storage cannot hold every pending change, or the server
        // cannot even start this upload (it wants the whole size free, and frees the bytes of
        // the file it replaces only at `complete`).
        let fits = |free: u64| need.saturating_add(others) <= free && new_len <= free;
        if new_len == 0 || fits(free) {
            return Ok(());
        }
        let free = if stale {
            match self.statfs.fresh_free(space).await {
                Some(free) if !fits(free) => free,
                _ => return Ok(()),
            }
        } else {
            free
        };
        tracing::debug!(
            file = %file.target().display_path,
            need,
            others,
            free,
            "refused at once: the storage cannot hold it"
        );
        Err(FsError::NoSpace(format!(
            "the storage has {free} bytes free; this file needs {need} more and other changes \
             waiting to be uploaded {others}"
        )))
    }

    /// Bytes the changed files of `space` (but `except`) will add to it once uploaded.
    fn pending_growth(&self, space: crate::api::Space, except: u64) -> u64 {
        lock(&self.files)
            .iter()
            .filter(|(ino, f)| {
                **ino != except && !f.unlinked && f.file.is_dirty() && f.file.space() == space
            })
            .map(|(_, f)| {
                f.file
                    .len()
                    .saturating_sub(f.file.base().map_or(0, |b| b.size))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes held by this mount's spools (their lengths).
    pub(crate) fn spool_bytes(&self) -> u64 {
        lock(&self.files)
            .values()
            .map(|f| f.file.len())
            .fold(0u64, u64::saturating_add)
    }

    /// Whether a spool other than `ino`'s will go away on its own: closed, and uploaded (or
    /// being uploaded) unless its upload failed for good.
    fn spool_can_drain(&self, ino: u64) -> bool {
        let failed = self.permanently_failed();
        let candidates: Vec<u64> = lock(&self.files)
            .keys()
            .copied()
            .filter(|i| *i != ino && !failed.contains(i))
            .collect();
        candidates
            .into_iter()
            .any(|i| self.inodes.get(i).is_none_or(|n| n.open_handles == 0))
    }

    /// Wait until the spools have room for `grow` more bytes (a file growing to `new_len`).
    async fn wait_spool_room(&self, ino: u64, grow: u64, new_len: u64) -> FsResult<()> {
        let Some(max) = self.engine.config.spool_max else {
            return Ok(());
        };
        if new_len > max {
            return Err(FsError::NoSpace(format!(
                "a file of {new_len} bytes is larger than the local cache bound \
                 (--cache-max-size, {max} bytes)"
            )));
        }
        let mut waited = false;
        loop {
            let freed = self.engine.spool_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let used = self.spool_bytes();
            if used.saturating_add(grow) <= max {
                if waited {
                    tracing::info!("room in the local cache again; writing");
                }
                return Ok(());
            }
            if !self.spool_can_drain(ino) {
                return Err(FsError::NoSpace(format!(
                    "the local cache bound (--cache-max-size, {max} bytes) is taken by files \
                     still open for writing"
                )));
            }
            if !waited {
                tracing::info!(
                    used,
                    max,
                    "local cache full (--cache-max-size): the write waits for uploads to drain"
                );
                waited = true;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(ROOM_POLL) => {}
            }
        }
    }
}
