//! Runs: one ranged GET for a stretch of consecutive missing blocks, in a task of its own,
//! each block handed to the cache and its waiters the moment its last byte has arrived.
//!
//! Subtle cases handled here:
//! - a run's memory: a read's run waits in line for the budget ([`Grant::Demand`]); a prefetch
//!   run got its budget at once and also waits for a permit of its handle
//!   ([`Grant::Prefetch`]), in the line it joined when it was started, so permits go to runs
//!   in the stream's order whatever order their tasks start in ([`in_line_for`]); each
//!   delivered block's share of the budget becomes the cache's;
//! - whatever way a run ends (error, panic, shutdown, dropped task), [`RunGuard`] removes the
//!   blocks it has not delivered from the in-flight map, gives their waiters an error (never a
//!   hang) and releases the bytes it reserved in the cache;
//! - lock order: the in-flight map before the cache, never the other way round;
//! - a run writes its blocks into segments (`super::segment`), a new one at each 1 MiB boundary
//!   of the file, so that a 1 MiB read of them is one view; a retried or resumed GET goes on
//!   writing where the last byte landed.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use futures::FutureExt;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, oneshot};

use super::cache::BlockKey;
use super::pool::BufferPool;
use super::segment::BLOCK_SIZE;
use super::segment::{Block, SEGMENT_BLOCKS, SegmentWriter};
use super::{BlockFlight, FileVersion, FsError, FsResult, MAX_RUN_BLOCKS, Pending, Reader, lock};

impl Reader {
    /// Start runs (of at most [`MAX_RUN_BLOCKS`]) for the missing blocks `blocks`; a read
    /// waits for their memory in line. `own_end`: the blocks a read needs end there, the rest
    /// is prefetch riding on the same GET (see [`RunGuard::run`] for when that GET fails).
    pub(super) fn start_runs(
        self: &Arc<Self>,
        fetching: &mut HashMap<BlockKey, BlockFlight>,
        file: FileVersion,
        blocks: Range<u64>,
        prefetch: Option<(Arc<Semaphore>, OwnedSemaphorePermit)>,
        own_end: Option<u64>,
    ) -> Vec<Pending> {
        let mut out = Vec::new();
        let mut at = blocks.start;
        let mut prefetch = prefetch;
        while at < blocks.end {
            let to = (at + MAX_RUN_BLOCKS).min(blocks.end);
            let (senders, flights) = register(fetching, file, at..to);
            out.extend(flights.into_iter().map(Pending::Fetching));
            let grant = match prefetch.take() {
                Some((permits, memory)) => Grant::Prefetch(in_line_for(permits), memory),
                None => Grant::Demand,
            };
            let own = own_end.filter(|&own| own > at && own < to);
            self.spawn_run(file, at..to, senders, grant, own);
            at = to;
        }
        out
    }

    /// The pool for a segment buffer of `len` bytes.
    pub(super) fn segment_pool(&self, len: u64) -> &Arc<BufferPool> {
        let blocks = len.div_ceil(BLOCK_SIZE).clamp(1, SEGMENT_BLOCKS) as usize;
        &self.segments[blocks - 1]
    }

    fn spawn_run(
        self: &Arc<Self>,
        file: FileVersion,
        blocks: Range<u64>,
        senders: Vec<oneshot::Sender<FsResult<Block>>>,
        grant: Grant,
        own_end: Option<u64>,
    ) {
        self.running.count.fetch_add(1, Ordering::SeqCst);
        let guard = RunGuard {
            reader: Arc::clone(self),
            file,
            next: blocks.start,
            senders: senders.into_iter().map(Some).collect(),
            reserved: 0,
        };
        tokio::spawn(guard.run(blocks, grant, own_end));
    }
}

/// How a run got (or gets) its memory.
enum Grant {
    /// A read waits for it: in line for the budget.
    Demand,
    /// A prefetch: the budget was granted at once; it also waits for its handle's permit, in
    /// the line it joined when it was started ([`in_line_for`]).
    Prefetch(PermitWait, OwnedSemaphorePermit),
}

/// A prefetch run's wait for a permit of its handle.
type PermitWait = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Join the line for one of `permits` now, in the order runs are started (the stream's order,
/// under the in-flight map's lock), not when the run's task first runs: tasks start in any
/// order on the multi-threaded runtime, and at 20 ms a run far ahead often took the permit of
/// the run the reader needed next, which then waited a whole round trip more (measured). The
/// semaphore serves its line first come, first served; the wait is polled once here with a
/// no-op waker to take its place, and the run's task polls it again with its own.
fn in_line_for(permits: Arc<Semaphore>) -> PermitWait {
    let mut wait: PermitWait = Box::pin(permits.acquire_owned());
    let mut cx = Context::from_waker(Waker::noop());
    match wait.as_mut().poll(&mut cx) {
        Poll::Ready(got) => Box::pin(std::future::ready(got)),
        Poll::Pending => wait,
    }
}

/// Register the blocks `blocks` of `file` as in flight: one sender each for the run, one
/// shared flight each for the waiters.
fn register(
    fetching: &mut HashMap<BlockKey, BlockFlight>,
    file: FileVersion,
    blocks: Range<u64>,
) -> (Vec<oneshot::Sender<FsResult<Block>>>, Vec<BlockFlight>) {
    let mut senders = Vec::new();
    let mut flights = Vec::new();
    for index in blocks {
        let (tx, rx) = oneshot::channel::<FsResult<Block>>();
        let flight = rx
            .map(|r| {
                r.unwrap_or_else(|_| {
                    Err(FsError::Io(std::io::Error::other(
                        "block fetch ended without an answer",
                    )))
                })
            })
            .boxed()
            .shared();
        fetching.insert(BlockKey { file, index }, flight.clone());
        senders.push(tx);
        flights.push(flight);
    }
    (senders, flights)
}

/// One run in flight. Whatever way it ends (dropped included), the blocks it has not delivered
/// leave the in-flight map, their waiters get an error, and its memory is given back.
struct RunGuard {
    reader: Arc<Reader>,
    file: FileVersion,
    /// Index of the next block to deliver.
    next: u64,
    /// Senders of the blocks from `next` on.
    senders: std::collections::VecDeque<Option<oneshot::Sender<FsResult<Block>>>>,
    /// Bytes counted as in flight in the cache.
    reserved: u64,
}

impl RunGuard {
    /// Fetch `blocks`. When the blocks a read needs end at `own_end` and the rest is prefetch
    /// riding on the same GET, a GET refused as inconsistent before any block arrived (an
    /// object shorter than listed refuses the whole range at once) is tried again for the
    /// read's own blocks alone: the prefetch must not cost the read bytes the server has.
    async fn run(mut self, blocks: Range<u64>, grant: Grant, own_end: Option<u64>) {
        let file = self.file;
        let n = (blocks.end - blocks.start) as u32;
        let (_permit, mut memory) = match grant {
            Grant::Demand => {
                let want = n.min(self.reader.budget_blocks);
                match Arc::clone(&self.reader.budget)
                    .acquire_many_owned(want)
                    .await
                {
                    Ok(m) => (None, m),
                    Err(_) => {
                        return self.fail(FsError::Io(std::io::Error::other("read budget closed")));
                    }
                }
            }
            Grant::Prefetch(wait, memory) => match wait.await {
                Ok(p) => (Some(p), memory),
                Err(_) => {
                    return self.fail(FsError::Io(std::io::Error::other(
                        "prefetch permits closed",
                    )));
                }
            },
        };
        let start = blocks.start * BLOCK_SIZE;
        let end = (blocks.end * BLOCK_SIZE).min(file.size);
        self.reserved = end - start;
        lock(&self.reader.cache).reserve(self.reserved);
        tracing::debug!(
            file = file.id,
            from = blocks.start,
            to = blocks.end,
            "run start"
        );
        match self.fetch(start..end, &mut memory).await {
            Ok(()) => tracing::debug!(
                file = file.id,
                from = blocks.start,
                to = blocks.end,
                "run done"
            ),
            Err(e) => {
                let retry = match (&e, own_end) {
                    (FsError::Inconsistent(_), Some(own)) if self.next == blocks.start => {
                        Some((own * BLOCK_SIZE).min(file.size))
                    }
                    _ => None,
                };
                if let Some(own) = retry
                    && let Err(again) = self.fetch(start..own, &mut memory).await
                {
                    return self.fail(again);
                }
                self.fail(e)
            }
        }
    }

    /// GET `range` and deliver its blocks as they complete (a refused link is replaced once,
    /// in [`Reader::stream_range`]). The blocks are written into segments ([`super::segment`]):
    /// one buffer per 1 MiB-aligned stretch of the run, so that a 1 MiB read of them is one
    /// view, not a copy.
    async fn fetch(
        &mut self,
        range: Range<u64>,
        memory: &mut OwnedSemaphorePermit,
    ) -> FsResult<()> {
        let reader = Arc::clone(&self.reader);
        let file = self.file;
        let mut seg: Option<SegmentWriter> = None;
        let mut first = true;
        reader
            .stream_range(file, range.clone(), |c| {
                if std::mem::take(&mut first) {
                    tracing::debug!(file = file.id, block = self.next, "run first byte");
                }
                let mut c = &c[..];
                while !c.is_empty() {
                    let key = BlockKey {
                        file,
                        index: self.next,
                    };
                    let writer = seg.get_or_insert_with(|| {
                        // From this block to the next 1 MiB boundary of the file, within the run.
                        let seg_end =
                            ((self.next / SEGMENT_BLOCKS + 1) * SEGMENT_BLOCKS * BLOCK_SIZE)
                                .min(range.end);
                        let len = seg_end.saturating_sub(self.next * BLOCK_SIZE);
                        SegmentWriter::new(len as usize, reader.segment_pool(len))
                    });
                    let (taken, block) = writer.fill(c, key.len() as usize);
                    c = &c[taken..];
                    if writer.is_full() {
                        seg = None;
                    }
                    if let Some(block) = block {
                        self.deliver(key, block, memory);
                    } else if taken == 0 {
                        // Cannot happen (a segment ends on a block end); never spin.
                        break;
                    }
                }
            })
            .await
    }

    /// Block `key` (the next one) is complete: into the cache, out of the in-flight map, to its
    /// waiters.
    fn deliver(&mut self, key: BlockKey, block: Block, memory: &mut OwnedSemaphorePermit) {
        let len = block.len() as u64;
        {
            let mut fetching = lock(&self.reader.fetching);
            lock(&self.reader.cache).land(key, block.clone(), len);
            fetching.remove(&key);
        }
        self.reserved = self.reserved.saturating_sub(len);
        // This block's memory is the cache's now.
        drop(memory.split(1));
        self.next += 1;
        if let Some(Some(tx)) = self.senders.pop_front() {
            let _ = tx.send(Ok(block));
        }
    }

    /// The run failed: every block not delivered gets `err`.
    fn fail(mut self, err: FsError) {
        let mut fetching = lock(&self.reader.fetching);
        for (i, tx) in self.senders.iter_mut().enumerate() {
            fetching.remove(&BlockKey {
                file: self.file,
                index: self.next + i as u64,
            });
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(err.clone()));
            }
        }
        // Nothing left for `drop` to remove (a new run may register these blocks from now on).
        self.senders.clear();
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        {
            let mut fetching = lock(&self.reader.fetching);
            for i in 0..self.senders.len() {
                fetching.remove(&BlockKey {
                    file: self.file,
                    index: self.next + i as u64,
                });
            }
            lock(&self.reader.cache).release(self.reserved);
        }
        // Senders still here are dropped: their waiters get an error.
        self.senders.clear();
        if self.reader.running.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.reader.running.done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_go_to_runs_in_the_order_they_were_started_not_first_polled() {
        let permits = Arc::new(Semaphore::new(0));
        let first = in_line_for(Arc::clone(&permits));
        let second = in_line_for(Arc::clone(&permits));
        // The second run's task runs first: it still waits behind the first.
        let mut second = tokio::spawn(second);
        tokio::task::yield_now().await;
        permits.add_permits(1);
        tokio::task::yield_now().await;
        assert!(
            futures::poll!(&mut second).is_pending(),
            "the later run took the permit"
        );
        let got = first.await.expect("the first run's permit");
        drop(got);
        let _permit = second.await.expect("task").expect("then the second's");
        // A permit free at once is taken at once.
        let free = Arc::new(Semaphore::new(1));
        let wait = in_line_for(Arc::clone(&free));
        assert_eq!(free.available_permits(), 0);
        let _permit = wait.await.expect("the free permit");
    }
}
