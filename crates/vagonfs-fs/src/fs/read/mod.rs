//! Reads: download links, ranged GETs streamed into a bounded block cache, sequential prefetch.
//!
//! A file is read through its presigned download link ([`links`]) in [`BLOCK_SIZE`]-aligned
//! blocks held in an LRU bounded by `FsConfig::cache_size` ([`cache`]). Blocks are fetched in
//! *runs*: one ranged GET for a stretch of consecutive missing blocks, streamed, each block
//! handed to its waiters the moment its last byte has arrived (a read never waits for the rest
//! of a GET). A read that is not sequential fetches only the blocks it touches (128 KiB each);
//! a sequential reader ([`seq`]) gets a prefetch window that grows 4-fold up to 64 MiB, fetched in
//! runs of up to [`MAX_RUN_BLOCKS`] blocks, [`PREFETCH_CONCURRENCY`] runs at a time per handle.
//! The run of a read's missing blocks goes on into the prefetch right behind them (one GET, same
//! first byte since blocks are handed over as they arrive), when the budget has room at once.
//!
//! Subtle cases handled here:
//! - links are fetched at open (awaited at most [`OPEN_LINK_WAIT`], the fetch goes on in the
//!   background after that) and reused; a link the storage refuses (`ApiError::LinkRefused`)
//!   is replaced once per GET and the GET resumed where it stopped ([`get`]);
//! - coherence: a link or a GET answering not-found, a link reporting another size than the
//!   listing, or a GET whose validator (`ETag`) differs from the one seen before for this
//!   version, all mean this version is gone: [`FsError::Gone`] (ESTALE), remembered per
//!   version, so the caller relists the folder once ([`Reader::first_report`]) and later reads
//!   answer at once. A resumed GET checks the version with `If-Range` (see the API layer);
//! - sizes: the listed size is the truth the kernel was given. A block of another length, a
//!   Range the server cannot satisfy (416) or a short body give [`FsError::Inconsistent`]
//!   (EIO), never garbage and never zero-fill; the version is remembered as bad, so later reads
//!   answer EIO without a request and without relisting (a changed file comes back with a new
//!   size or mtime from the next listing, and is read again). A link reporting another size is
//!   `Gone` the first time (the listing is probably old) and EIO after that;
//! - a sequential reader does not keep what it read: blocks more than [`KEEP_BEHIND`] behind
//!   its reads leave the cache (the kernel's page cache holds them; keeping them too was double
//!   caching). Their buffers come back to the pool for the blocks ahead, so a long sequential
//!   read runs in warm memory: fresh block memory page-faults on every 4 KiB, ~30 % of the
//!   daemon's CPU in perf of a fresh 128 MiB read at 0 ms; with this, 512 MiB took 400-560 ms
//!   of daemon CPU instead of 690-700. A random reader's blocks stay cached (LRU as before).
//!   (Tried and dropped: blocks of long runs cut from one slab advised MADV_HUGEPAGE: the
//!   faults went, but zeroing 2 MiB pages cold cost as much: clear_page 25 % of the samples);
//! - a run writes its blocks into *segments* ([`segment`]): one buffer per 1 MiB-aligned
//!   stretch of the run, each block a view of it. A read spanning consecutive blocks of one
//!   segment (the kernel's 1 MiB reads of a sequential reader are 1 MiB-aligned) is answered
//!   with one view, without the copy into a reply buffer that was 12 % of the daemon's CPU
//!   (perf, fresh 128 MiB read at 0 ms; fuser 0.18's reply takes one slice). A read spanning
//!   segments is still copied, into a pooled 1 MiB reply buffer. The cache evicts segments
//!   whole (a cached block keeps its segment's buffer alive);
//! - segment buffers come from pools (one per length in blocks) of buffers given back by
//!   segments that left the cache: as fresh allocations they page-faulted on every page, half
//!   the daemon's CPU in a sequential read at 0 ms (perf);
//! - memory: bytes being fetched come out of a budget of `max(cache_size, MIN_FETCH_BUDGET)`
//!   bytes (a semaphore); a read waits in line for its share, a prefetch that does not get its
//!   share at once is not started. Cached plus in-flight bytes stay within the cache bound
//!   (landing blocks evict), so the daemon's block memory stays within
//!   `max(cache_size, MIN_FETCH_BUDGET)` whatever the number of readers; the prefetch window is
//!   also capped at half the cache, so prefetched blocks do not evict each other unread;
//! - a cache smaller than one block means no cache: each read fetches exactly its range;
//! - a read waits at most `read_timeout` (ETIMEDOUT); the fetch it waited for goes on and
//!   fills the cache. The version is then marked stalled for `read_timeout`: reads of it that
//!   need the network wait only [`STALLED_WAIT`] meanwhile (cached bytes are served at once).
//!   The kernel retries a failed readahead with a read of its own, so without the mark a frozen
//!   server made one `pread` wait twice `read_timeout`; a read that succeeds clears the mark.
//!   An open whose link did not come within [`OPEN_LINK_WAIT`] marks it too: a frozen server
//!   answers `cat` in about 5 s, not 5 s plus `read_timeout`;
//! - locks: the in-flight map may be locked before the cache, never the other way round;
//! - in-flight fetches are shared: a read needing a block being fetched waits for that block;
//!   runs go on in their own tasks, so an interrupted read does not waste a half-done fetch.
//!   Whatever ends a run (error, panic, shutdown), its blocks still in flight are removed from
//!   the map and their waiters get an error, never a hang.
//!
//! The files here: this one holds the [`Reader`] (open, read, the cache and in-flight map, the
//! versions known bad); `run` the runs (one task per ranged GET of consecutive blocks, and the
//! guard that cleans up after it); `get` the one ranged GET every read goes through (link,
//! validator, refused-link retry, error mapping); `cache` the block LRU; `pool` the buffer pools;
//! `segment` the buffers runs write their blocks into (and the zero-copy join of a read);
//! `links` the download links; `seq` the sequential-reader detection; `folder` the read-ahead
//! of the next files of a folder walk.

mod cache;
mod folder;
mod get;
mod links;
mod pool;
mod run;
mod segment;
mod seq;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use tokio::sync::{Notify, Semaphore};

use crate::api::{ApiError, FilesApi};

use super::counters::HitCounter;
use super::{CacheStats, FsError, FsResult, lock};

use cache::{BlockCache, BlockKey};
pub use folder::{HEAD_BLOCKS, WALK_CONCURRENCY};
use links::Links;
pub use links::{ASSUMED_LINK_LIFETIME, LINK_REUSE_FRACTION, OPEN_REVALIDATE};
use pool::BufferPool;
pub use segment::BLOCK_SIZE;
use segment::Block;
pub use segment::SEGMENT_BLOCKS;
use seq::SeqState;
pub use seq::{
    INITIAL_WINDOW_BLOCKS, MAX_WINDOW_BLOCKS, SEQ_SLACK, STREAM_HINT, STREAM_START_WINDOW,
};

/// Longest run (one ranged GET), in blocks (8 MiB).
pub const MAX_RUN_BLOCKS: u64 = 64;

/// Blocks a sequential reader keeps cached behind it (2 MiB: the kernel's readahead sends
/// neighbouring reads out of order, within [`SEQ_SLACK`]).
pub const KEEP_BEHIND: u64 = 16;

/// Prefetch runs in flight at once per open handle: 8 × 8 MiB covers the 64 MiB window. With 4,
/// the runs went in waves (4 start, all wait one round trip, all stream, then the next 4): at
/// 20 ms the pipe stood idle for a round trip in every ~45 ms.
pub const PREFETCH_CONCURRENCY: usize = 8;

/// Bytes fetches may hold at once even when the cache is smaller (8 MiB): the fixed part of the
/// read path's memory bound.
pub const MIN_FETCH_BUDGET: u64 = MAX_RUN_BLOCKS * BLOCK_SIZE;

/// Default bound on one read waiting for the network.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a read of a version marked stalled (a read of it timed out moments ago) waits for
/// the network before answering ETIMEDOUT.
pub const STALLED_WAIT: Duration = Duration::from_millis(250);

/// Longest an open waits for the file's download link (the fetch goes on after that).
pub const OPEN_LINK_WAIT: Duration = Duration::from_secs(5);

/// Versions remembered as gone or bad; past this, the memory is cleared.
const BAD_MAX: usize = 65_536;

/// Which content a block belongs to: the object and what its listing said of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub(crate) id: u64,
    pub(crate) size: u64,
    pub(crate) mtime: Option<SystemTime>,
}

/// What one open handle reads: the content it opened, and its access pattern.
pub(crate) struct Stream {
    pub(crate) file: FileVersion,
    seq: Mutex<SeqState>,
    permits: Arc<Semaphore>,
}

impl Stream {
    pub(crate) fn new(file: FileVersion) -> Self {
        Stream {
            file,
            seq: Mutex::new(SeqState::default()),
            permits: Arc::new(Semaphore::new(PREFETCH_CONCURRENCY)),
        }
    }
}

/// The shared answer of one block being fetched.
type BlockFlight = Shared<BoxFuture<'static, FsResult<Block>>>;

/// A block a read needs: already there, or being fetched.
enum Pending {
    Ready(Block),
    Fetching(BlockFlight),
}

/// Why a version is not read any more.
#[derive(Debug, Clone)]
enum Bad {
    /// Gone from the server (or changed under the same id).
    Gone(String),
    /// The link reported another size than the listing.
    Mismatch(String),
    /// Its bytes disagree with its size.
    Inconsistent(String),
}

struct BadEntry {
    why: Bad,
    /// The caller was told once (and relisted the folder).
    reported: bool,
}

/// Runs in flight, for [`Reader::idle`].
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    done: Notify,
}

/// Counts one background task in [`Reader::running`] while it lives.
struct RunningGuard(Arc<Reader>);

impl RunningGuard {
    fn enter(reader: Arc<Reader>) -> Self {
        reader.running.count.fetch_add(1, Ordering::SeqCst);
        RunningGuard(reader)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.running.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.running.done.notify_waiters();
        }
    }
}

/// The read path of one mount.
pub(crate) struct Reader {
    api: Arc<dyn FilesApi>,
    links: Links,
    cache: Arc<Mutex<BlockCache>>,
    /// Buffers of segments gone from the cache, for new segments: one pool per length in
    /// blocks (index `blocks - 1`).
    segments: Vec<Arc<BufferPool>>,
    /// Buffers for replies that span several segments (reused: a fresh 1 MiB allocation is a
    /// mapping of its own, and writing it page-faults on every page).
    replies: Arc<BufferPool>,
    fetching: Mutex<HashMap<BlockKey, BlockFlight>>,
    /// Memory for bytes being fetched, in blocks.
    budget: Arc<Semaphore>,
    budget_blocks: u32,
    /// The validator (`ETag`) first seen for each version.
    validators: Mutex<HashMap<FileVersion, String>>,
    bad: Mutex<HashMap<FileVersion, BadEntry>>,
    running: Running,
    /// Files of folder walks read ahead at once ([`folder`]).
    walk_permits: Arc<Semaphore>,
    /// Prefetch window cap, blocks.
    max_window: u64,
    /// The cache cannot hold a block: reads go straight to the server, exact ranges.
    uncached: bool,
    read_timeout: Duration,
    /// Versions whose read timed out, and when (see the module note).
    stalled: Mutex<HashMap<FileVersion, std::time::Instant>>,
    /// Blocks reads found cached, or not.
    pub(crate) counter: HitCounter,
}

impl Reader {
    pub(crate) fn new(
        api: Arc<dyn FilesApi>,
        cache_size: u64,
        read_timeout: Duration,
    ) -> Arc<Self> {
        let half_cache_blocks = cache_size / 2 / BLOCK_SIZE;
        let budget_blocks =
            u32::try_from(cache_size.max(MIN_FETCH_BUDGET) / BLOCK_SIZE).unwrap_or(u32::MAX >> 4);
        Arc::new(Reader {
            links: Links::new(Arc::clone(&api)),
            api,
            cache: Arc::new(Mutex::new(BlockCache::new(cache_size))),
            segments: segment::pools(),
            replies: BufferPool::sized(pool::REPLY_BUFFER, pool::REPLY_POOL_MAX),
            fetching: Mutex::new(HashMap::new()),
            budget: Arc::new(Semaphore::new(budget_blocks as usize)),
            budget_blocks,
            validators: Mutex::new(HashMap::new()),
            bad: Mutex::new(HashMap::new()),
            running: Running::default(),
            walk_permits: Arc::new(Semaphore::new(WALK_CONCURRENCY)),
            max_window: MAX_WINDOW_BLOCKS.min(half_cache_blocks),
            uncached: cache_size < BLOCK_SIZE,
            read_timeout,
            stalled: Mutex::new(HashMap::new()),
            counter: HitCounter::default(),
        })
    }

    /// An open of `file` for reading: get its link now (so the first read needs one round
    /// trip), and learn whether the object is still there. `Gone` when it is not; any other
    /// failure is left to the reads.
    pub(crate) async fn open(self: &Arc<Self>, file: FileVersion) -> FsResult<()> {
        if let Some(err) = self.known_bad(file) {
            return match err {
                FsError::Gone(_) => Err(err),
                // Reads answer EIO; the open itself is fine.
                _ => Ok(()),
            };
        }
        if self.links.fresh_for_open(file.id, file.size) {
            return Ok(());
        }
        let wait = OPEN_LINK_WAIT.min(self.read_timeout);
        match tokio::time::timeout(wait, self.link_for(file, true)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(FsError::Gone(why))) => {
                self.mark_bad(file, Bad::Gone(why.clone()));
                Err(FsError::Gone(why))
            }
            Ok(Err(e)) => {
                tracing::debug!(file = file.id, "no download link at open: {e}");
                Ok(())
            }
            Err(_) => {
                // A server that cannot give a link in this time will not give the bytes soon:
                // the first read waits only `STALLED_WAIT` (the fetch goes on), so `cat` on a
                // frozen server answers ETIMEDOUT after about this wait, not this wait plus
                // `read_timeout`.
                tracing::debug!(file = file.id, "download link not there within {wait:?}");
                self.mark_stalled(file);
                Ok(())
            }
        }
    }

    /// Reads of `file` that need the network wait only [`STALLED_WAIT`] for a while.
    fn mark_stalled(&self, file: FileVersion) {
        let mut marks = lock(&self.stalled);
        if marks.len() >= BAD_MAX {
            marks.clear();
        }
        marks.insert(file, std::time::Instant::now());
    }

    /// Read `size` bytes at `offset` (fewer at the end of the file).
    pub(crate) async fn read(
        self: &Arc<Self>,
        stream: &Stream,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let file = stream.file;
        if let Some(err) = self.known_bad(file) {
            // What is cached of it is still served; nothing more is asked of the server.
            return self.cached_range(file, offset, size).ok_or(err);
        }
        let stalled = self.is_stalled(file);
        let wait = if stalled {
            STALLED_WAIT.min(self.read_timeout)
        } else {
            self.read_timeout
        };
        let result = match tokio::time::timeout(wait, self.read_blocks(stream, offset, size)).await
        {
            Ok(r) => r,
            Err(_) => {
                if !stalled {
                    self.mark_stalled(file);
                }
                Err(FsError::Api(ApiError::Timeout {
                    endpoint: format!("read of file {}", file.id),
                    secs: self.read_timeout.as_secs(),
                }))
            }
        };
        if stalled && result.is_ok() {
            lock(&self.stalled).remove(&file);
        }
        match &result {
            Err(FsError::Inconsistent(why)) => {
                self.mark_bad(file, Bad::Inconsistent(why.clone()));
                self.links.forget(file.id, None);
            }
            Err(FsError::Gone(why)) => {
                self.mark_bad(file, Bad::Gone(why.clone()));
                self.links.forget(file.id, None);
            }
            _ => {}
        }
        result
    }

    /// Whether a read of `file` timed out less than `read_timeout` ago.
    fn is_stalled(&self, file: FileVersion) -> bool {
        let mut marks = lock(&self.stalled);
        match marks.get(&file) {
            Some(at) if at.elapsed() < self.read_timeout => true,
            Some(_) => {
                marks.remove(&file);
                false
            }
            None => false,
        }
    }

    /// Whether the caller is the first to hear that `file` is gone or bad (it then relists the
    /// folder once); later callers are not.
    pub(crate) fn first_report(&self, file: FileVersion) -> bool {
        match lock(&self.bad).get_mut(&file) {
            Some(entry) if !entry.reported => {
                entry.reported = true;
                true
            }
            _ => false,
        }
    }

    /// `size` bytes at `offset` of `file` if every block they need is cached.
    fn cached_range(&self, file: FileVersion, offset: u64, size: u32) -> Option<Bytes> {
        if size == 0 || offset >= file.size {
            return Some(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let parts = {
            let mut cache = lock(&self.cache);
            (first..=last)
                .map(|index| cache.lru.get(&BlockKey { file, index }).cloned())
                .collect::<Option<Vec<Block>>>()?
        };
        assemble(&parts, first, offset, end, &self.replies).ok()
    }

    /// The error a version remembered as gone or bad answers with.
    fn known_bad(&self, file: FileVersion) -> Option<FsError> {
        lock(&self.bad).get(&file).map(|e| match &e.why {
            Bad::Gone(why) => FsError::Gone(why.clone()),
            Bad::Mismatch(why) | Bad::Inconsistent(why) => FsError::Inconsistent(why.clone()),
        })
    }

    fn mark_bad(&self, file: FileVersion, why: Bad) {
        let mut bad = lock(&self.bad);
        if bad.len() >= BAD_MAX {
            bad.clear();
        }
        bad.entry(file).or_insert(BadEntry {
            why,
            reported: false,
        });
    }

    async fn read_blocks(
        self: &Arc<Self>,
        stream: &Stream,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let file = stream.file;
        if size == 0 || offset >= file.size {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        if self.uncached {
            // No room for even one block: fetch exactly what is asked, nothing more.
            return self.read_direct(file, offset..end).await;
        }
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        tracing::trace!(file = file.id, offset, size, "read");
        // The blocks this read needs go first (their GET going on into the prefetch right
        // behind them), then the rest of the prefetch.
        let (ahead, window) = {
            let mut seq = lock(&stream.seq);
            let ahead = seq.on_read(offset, end, file.size.div_ceil(BLOCK_SIZE), self.max_window);
            (ahead, seq.window)
        };
        let pending = self.demand(file, first..last + 1, ahead.clone());
        if !ahead.is_empty() {
            self.prefetch(stream, ahead, (window / 4).clamp(1, MAX_RUN_BLOCKS));
        }
        let mut parts = Vec::with_capacity(pending.len());
        for p in pending {
            match p {
                Pending::Ready(block) => {
                    self.counter.hit();
                    parts.push(block);
                }
                Pending::Fetching(flight) => {
                    self.counter.miss();
                    parts.push(flight.await?);
                }
            }
        }
        let reply = assemble(&parts, first, offset, end, &self.replies);
        drop(parts);
        self.release_behind(stream, first);
        reply
    }

    /// A sequential reader is at block `first`: the blocks it read more than [`KEEP_BEHIND`]
    /// blocks ago are in the kernel's page cache now; drop them from the block cache so that
    /// their buffers come back to the pool for the blocks ahead (fresh memory page-faults on
    /// every page: measured as the biggest CPU cost of a first sequential read).
    fn release_behind(&self, stream: &Stream, first: u64) {
        let upto = first.saturating_sub(KEEP_BEHIND);
        let from = {
            let mut seq = lock(&stream.seq);
            if seq.window == 0 || upto <= seq.released_to {
                return;
            }
            std::mem::replace(&mut seq.released_to, upto)
        };
        let mut cache = lock(&self.cache);
        for index in from..upto {
            if let Some(block) = cache.lru.pop(&BlockKey {
                file: stream.file,
                index,
            }) {
                cache.cached = cache.cached.saturating_sub(block.len() as u64);
            }
        }
    }

    /// The blocks `blocks` of `file`: cached, joined, or fetched (in runs of missing blocks).
    /// When the last run ends where the prefetch `ahead` begins, its GET goes on into it (up to
    /// [`MAX_RUN_BLOCKS`], and only if the memory budget has room now): one GET instead of a
    /// demand GET plus prefetch GETs, with the same first byte (blocks are handed over as they
    /// arrive). `head -c 1` on a fresh mount made 5 GETs (1 block, then 4 of 1 block); now 1.
    fn demand(
        self: &Arc<Self>,
        file: FileVersion,
        blocks: Range<u64>,
        ahead: Range<u64>,
    ) -> Vec<Pending> {
        let mut out = Vec::with_capacity((blocks.end - blocks.start) as usize);
        let mut fetching = lock(&self.fetching);
        let mut missing: Option<Range<u64>> = None;
        for index in blocks {
            let key = BlockKey { file, index };
            let found = match lock(&self.cache).lru.get(&key) {
                Some(block) => Some(Pending::Ready(block.clone())),
                None => fetching.get(&key).map(|f| Pending::Fetching(f.clone())),
            };
            match found {
                Some(p) => {
                    if let Some(run) = missing.take() {
                        out.extend(self.start_runs(&mut fetching, file, run, None, None));
                    }
                    out.push(p);
                }
                None => match &mut missing {
                    Some(run) => run.end = index + 1,
                    None => missing = Some(index..index + 1),
                },
            }
        }
        if let Some(run) = missing {
            let wanted = (run.end - run.start) as usize;
            let mut to = run.end;
            if ahead.start == run.end {
                let room = self.budget.available_permits() as u64;
                while to < ahead.end && to - run.start < MAX_RUN_BLOCKS.min(room) {
                    let key = BlockKey { file, index: to };
                    if self.is_there(&fetching, &key) {
                        break;
                    }
                    to += 1;
                }
                to = to.max(run.end);
            }
            let own = (to > run.end).then_some(run.end);
            let mut flights = self.start_runs(&mut fetching, file, run.start..to, None, own);
            flights.truncate(wanted);
            out.extend(flights);
        }
        out
    }

    /// Whether block `key` is cached or being fetched; `fetching` is the in-flight map, already
    /// locked (it is locked before the cache, never after).
    fn is_there(&self, fetching: &HashMap<BlockKey, BlockFlight>, key: &BlockKey) -> bool {
        fetching.contains_key(key) || lock(&self.cache).lru.contains(key)
    }

    /// Prefetch the blocks `blocks` that are neither cached nor in flight, in runs of
    /// `run_len` blocks; stops at the first run the memory budget cannot grant at once.
    fn prefetch(self: &Arc<Self>, stream: &Stream, blocks: Range<u64>, run_len: u64) {
        let file = stream.file;
        let mut fetching = lock(&self.fetching);
        let mut index = blocks.start;
        while index < blocks.end {
            // Skip what is there or coming.
            let key = BlockKey { file, index };
            if self.is_there(&fetching, &key) {
                index += 1;
                continue;
            }
            let mut to = index + 1;
            while to < blocks.end && to - index < run_len {
                let k = BlockKey { file, index: to };
                if self.is_there(&fetching, &k) {
                    break;
                }
                to += 1;
            }
            let n = (to - index) as u32;
            let Ok(memory) = Arc::clone(&self.budget).try_acquire_many_owned(n) else {
                return;
            };
            let permits = Arc::clone(&stream.permits);
            let _ = self.start_runs(
                &mut fetching,
                file,
                index..to,
                Some((permits, memory)),
                None,
            );
            index = to;
        }
    }

    /// Uncached mode: exactly `range`, within the memory budget.
    async fn read_direct(&self, file: FileVersion, range: Range<u64>) -> FsResult<Bytes> {
        let n = u32::try_from((range.end - range.start).div_ceil(BLOCK_SIZE))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_blocks);
        let _memory = Arc::clone(&self.budget)
            .acquire_many_owned(n)
            .await
            .map_err(|_| FsError::Io(std::io::Error::other("read budget closed")))?;
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        self.stream_range(file, range.clone(), |c| out.extend_from_slice(&c))
            .await?;
        if out.len() as u64 != range.end - range.start {
            return Err(FsError::Inconsistent(format!(
                "file {}: asked for bytes {}..{}, got {} bytes",
                file.id,
                range.start,
                range.end,
                out.len()
            )));
        }
        Ok(out.freeze())
    }

    /// Numbers of the block cache.
    pub(crate) fn stats(&self) -> CacheStats {
        // Lock order is in-flight map, then cache: never the cache first.
        let fetches_running = lock(&self.fetching).len();
        let c = lock(&self.cache);
        CacheStats {
            cached_bytes: c.cached,
            inflight_bytes: c.inflight,
            peak_bytes: c.peak,
            cached_blocks: c.lru.len(),
            fetches_running,
        }
    }

    /// Wait until no block or link fetch is running.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.running.done.notified();
            if self.running.count.load(Ordering::SeqCst) == 0 {
                break;
            }
            notified.await;
        }
        self.links.idle().await;
    }
}

/// The bytes `offset..end` out of consecutive blocks starting at block `first`: a view of the
/// cached bytes when they are one block or consecutive blocks of one segment (the usual case:
/// the kernel's reads are at most 1 MiB, 1 MiB-aligned when sequential), else a copy.
fn assemble(
    parts: &[Block],
    first: u64,
    offset: u64,
    end: u64,
    replies: &Arc<BufferPool>,
) -> FsResult<Bytes> {
    let bad = || FsError::Inconsistent(format!("blocks do not cover bytes {offset}..{end}"));
    let base = first * BLOCK_SIZE;
    let (from, to) = ((offset - base) as usize, (end - base) as usize);
    if let [only] = parts {
        if from > to || to > only.len() {
            return Err(bad());
        }
        return Ok(only.bytes().slice(from..to));
    }
    if let Some(joined) = segment::join(parts, from, to - from) {
        return Ok(joined);
    }
    let mut out = replies.take_for(to - from);
    for (i, part) in parts.iter().enumerate() {
        let base = (first + i as u64) * BLOCK_SIZE;
        let from = offset.max(base) - base;
        let to = end.min(base + part.len() as u64).saturating_sub(base);
        let piece = part
            .bytes()
            .get(from as usize..to as usize)
            .ok_or_else(bad)?;
        out.extend_from_slice(piece);
    }
    if out.len() as u64 != end - offset {
        return Err(bad());
    }
    Ok(replies.seal(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_within_one_block_shares_the_cached_bytes() {
        let block = Block::plain(Bytes::from(vec![3u8; 4096]));
        let base = BLOCK_SIZE;
        let pool = BufferPool::sized(pool::REPLY_BUFFER, 1);
        let got = assemble(
            std::slice::from_ref(&block),
            1,
            base + 100,
            base + 200,
            &pool,
        )
        .ok();
        let got = got.as_deref().unwrap_or_default();
        assert_eq!(got, &block.bytes()[100..200]);
        // A view of the cached block, not a copy of it.
        assert_eq!(got.as_ptr(), block.bytes()[100..].as_ptr());
    }

    #[test]
    fn assemble_across_blocks() {
        let pool = BufferPool::sized(pool::REPLY_BUFFER, 1);
        let b0 = Bytes::from((0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let b1 = Block::plain(Bytes::from(vec![7u8; 10]));
        let parts = [Block::plain(b0.clone()), b1];
        let got = assemble(&parts, 0, BLOCK_SIZE - 3, BLOCK_SIZE + 2, &pool).ok();
        let mut want = b0[b0.len() - 3..].to_vec();
        want.extend_from_slice(&[7, 7]);
        assert_eq!(got.as_deref(), Some(&want[..]));
        let short = Block::plain(Bytes::from_static(b"ab"));
        assert!(assemble(&[short], 0, 0, 3, &pool).is_err());
    }
}
