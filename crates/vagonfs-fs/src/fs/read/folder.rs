//! Reading ahead across files: the link and the first bytes of files a folder walk will open next.
//!
//! A program that reads the files of a folder one after the other (`cp -r`, `tar`, `grep -r`,
//! `rsync`, a file manager making thumbnails) pays, per file, a link request at open and a GET
//! at the first read: two round trips of 20-150 ms each, one file after the other. When the
//! core sees such a walk (`fs/walk.rs`) it hands the next files here, and each gets, in the
//! background: a fresh link (so the open needs no request: [`Links::fresh_for_open`]) and its
//! first [`HEAD_BLOCKS`] blocks in the block cache (so a small file's reads need none either).
//!
//! Subtle cases handled here:
//! - bounded: [`WALK_CONCURRENCY`] files at a time per mount; the data comes out of the same
//!   memory budget as any prefetch and is skipped (the link still fetched) when the budget has
//!   no room at once, so a walk never delays a read that waits;
//! - a file already known gone or bad, or whose first blocks are cached or in flight, costs no
//!   data request; a link fetched less than `OPEN_REVALIDATE` ago is not asked again;
//! - the link is asked before the data, so the open's revalidation (`OPEN_REVALIDATE`) is
//!   served by this fetch: the walk costs the requests the files' own opens and reads would
//!   have made, plus, when the walk stops, at most those of the files fetched ahead;
//! - a failure here is only logged at debug level: the open and the read that follow ask
//!   again and report it themselves;
//! - in uncached mode (a cache smaller than a block) only links are fetched.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::cache::BlockKey;
use super::{FileVersion, Pending, Reader, lock};

/// Files read ahead at once, per mount (as many as a walk hands over at once, so that the
/// last of a window does not wait two more round trips for a slot).
pub const WALK_CONCURRENCY: usize = 16;

/// Blocks read ahead from the start of each file of a walk (1 MiB: the whole of most files a
/// walk reads, and a sequential reader's first kernel read).
pub const HEAD_BLOCKS: u64 = 8;

impl Reader {
    /// Fetch, in the background, the links and the first blocks of `files` (the next files of
    /// a folder walk, in the order they will probably be opened).
    pub(crate) fn read_ahead_files(self: &Arc<Self>, files: Vec<FileVersion>) {
        for file in files {
            if self.known_bad(file).is_some() {
                continue;
            }
            let me = Arc::clone(self);
            let guard = super::RunningGuard::enter(Arc::clone(self));
            tokio::spawn(async move {
                let _guard = guard;
                let Ok(_slot) = Arc::clone(&me.walk_permits).acquire_owned().await else {
                    return;
                };
                me.read_ahead_file(file).await;
            });
        }
    }

    async fn read_ahead_file(self: &Arc<Self>, file: FileVersion) {
        if !self.links.fresh_for_open(file.id, file.size)
            && let Err(e) = self.links.fetch(file.id).await
        {
            tracing::debug!(file = file.id, "read-ahead link: {e}");
            return;
        }
        if self.uncached || file.size == 0 {
            return;
        }
        let blocks = 0..file.size.div_ceil(super::BLOCK_SIZE).min(HEAD_BLOCKS);
        let flights = {
            let mut fetching = lock(&self.fetching);
            let busy = blocks
                .clone()
                .any(|index| self.is_there(&fetching, &BlockKey { file, index }));
            if busy {
                return;
            }
            let n = (blocks.end - blocks.start) as u32;
            let Ok(memory) = Arc::clone(&self.budget).try_acquire_many_owned(n) else {
                return;
            };
            // A semaphore of its own: the walk's slot is held by this task already.
            let one = Arc::new(Semaphore::new(1));
            self.start_runs(&mut fetching, file, blocks, Some((one, memory)), None)
        };
        for p in flights {
            if let Pending::Fetching(flight) = p
                && let Err(e) = flight.await
            {
                tracing::debug!(file = file.id, "read-ahead data: {e}");
                return;
            }
        }
    }
}
