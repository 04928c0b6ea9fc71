//! Reads: download links, ranged GETs in blocks, a bounded block cache, sequential prefetch.
//!
//! A file is read through its presigned download link in [`BLOCK_SIZE`]-aligned blocks (HTTP
//! Range GETs). Blocks land in an LRU cache bounded by `FsConfig::cache_size` bytes, keyed by
//! the file's id *and* its listed size and mtime, so a file changed on the server never serves
//! old blocks. Each open handle has a [`Stream`] that detects sequential reading and prefetches
//! ahead with a window that starts at [`INITIAL_WINDOW_BLOCKS`] and doubles up to
//! [`MAX_WINDOW_BLOCKS`], with at most [`PREFETCH_CONCURRENCY`] prefetches in flight per handle;
//! random reads fetch only the blocks they touch.
//!
//! Subtle cases handled here:
//! - links: fetched with `file_link`, falling back to `POST /files/download` when that endpoint
//!   answers not-found/bad-request; cached per file id for [`LINK_TTL`], or less when the URL
//!   says when it expires (`expires`/`exp` in unix seconds or milliseconds or RFC 3339, or AWS
//!   `X-Amz-Date` + `X-Amz-Expires`) minus [`LINK_EXPIRY_MARGIN`]; a link the storage refuses (`ApiError::LinkRefused`) is replaced
//!   once and the range retried; links are fetched single-flight, and never logged;
//! - sizes: the listed size is the truth the kernel was given. A link that reports another size,
//!   a block of another length, a Range the server cannot satisfy (416) or a short body all give
//!   [`FsError::Inconsistent`] (EIO) — never garbage and never zero-fill. (A file longer than
//!   listed whose link does not say so is served up to its listed size.)
//! - memory: blocks being fetched are counted against the bound from the moment they are
//!   registered. A prefetch that does not fit is not started; a block a read needs is always
//!   fetched (evicting what it must), so peak memory stays under `cache_size` plus the blocks of
//!   the reads in progress. The prefetch window is also capped at half the cache, so prefetched
//!   blocks do not evict each other before they are read;
//! - a cache smaller than one block means no cache: each read fetches exactly its range;
//! - locks: the block flight map may be locked before the cache, never the other way round;
//! - in-flight fetches are shared: a read needing a block being prefetched waits for that fetch;
//!   fetches run in their own tasks, so an interrupted read does not waste a half-done fetch.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use lru::LruCache;
use tokio::sync::Semaphore;

use crate::api::{ApiError, ApiErrorKind, DownloadTarget, FilesApi};

use super::counters::HitCounter;
use super::flight::{Flight, SingleFlight};
use super::{CacheStats, FsError, FsResult, lock};

/// Unit of fetching and caching, bytes; blocks are aligned to it.
pub const BLOCK_SIZE: u64 = 1 << 20;

/// First prefetch window of a sequential reader, in blocks (1 MiB).
pub const INITIAL_WINDOW_BLOCKS: u64 = 1;

/// Largest prefetch window, in blocks (64 MiB); also capped at half the block cache.
pub const MAX_WINDOW_BLOCKS: u64 = 64;

/// Prefetch fetches in flight at once per open handle.
pub const PREFETCH_CONCURRENCY: usize = 4;

/// A read starting this close to where the previous one ended still counts as sequential
/// (the kernel's asynchronous readahead sends neighbouring requests out of order).
pub const SEQ_SLACK: u64 = BLOCK_SIZE;

/// How long a download link is reused: the service's links last 15 minutes by default; this
/// leaves room for clock skew and slow requests.
pub const LINK_TTL: Duration = Duration::from_secs(10 * 60);

/// A link whose URL says when it expires is dropped this long before.
pub const LINK_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// An `expires` value above this is milliseconds, not seconds (as seconds it would be in the
/// year 5138; as milliseconds it is 1973).
const EXPIRES_MS_THRESHOLD: u64 = 100_000_000_000;

/// Cached links beyond this count trigger a sweep of the expired ones.
const LINKS_SWEEP_AT: usize = 4096;

/// HTTP status of a Range the server cannot satisfy.
const HTTP_RANGE_NOT_SATISFIABLE: u16 = 416;

/// Which content a block belongs to: the object and what its listing said of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub(crate) id: u64,
    pub(crate) size: u64,
    pub(crate) mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlockKey {
    file: FileVersion,
    index: u64,
}

impl BlockKey {
    fn range(&self) -> Range<u64> {
        let start = self.index.saturating_mul(BLOCK_SIZE);
        start..start.saturating_add(BLOCK_SIZE).min(self.file.size)
    }

    fn len(&self) -> u64 {
        let r = self.range();
        r.end.saturating_sub(r.start)
    }
}

/// A download link and the size the server gave with it.
#[derive(Debug, Clone)]
struct Link {
    url: String,
    size: Option<u64>,
}

struct CachedLink {
    link: Link,
    until: Instant,
}

/// The LRU of blocks plus the bytes reserved by fetches in flight.
struct BlockCache {
    lru: LruCache<BlockKey, Bytes>,
    limit: u64,
    cached: u64,
    inflight: u64,
    peak: u64,
}

impl BlockCache {
    fn new(limit: u64) -> Self {
        BlockCache {
            lru: LruCache::unbounded(),
            limit,
            cached: 0,
            inflight: 0,
            peak: 0,
        }
    }

    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.cached + self.inflight);
    }

    /// Evict least recently used blocks until `extra` more bytes fit (or nothing is left).
    fn evict_for(&mut self, extra: u64) {
        while self.cached + self.inflight + extra > self.limit {
            match self.lru.pop_lru() {
                Some((_, bytes)) => self.cached = self.cached.saturating_sub(bytes.len() as u64),
                None => break,
            }
        }
    }

    /// Reserve room for an optional fetch; refuses when fetches in flight already fill the bound.
    fn try_reserve(&mut self, len: u64) -> bool {
        if self.inflight + len > self.limit {
            return false;
        }
        self.evict_for(len);
        self.inflight += len;
        self.note_peak();
        true
    }

    /// Reserve room for a fetch a read is waiting for: always granted.
    fn reserve(&mut self, len: u64) {
        self.evict_for(len);
        self.inflight += len;
        self.note_peak();
    }

    fn release(&mut self, len: u64) {
        self.inflight = self.inflight.saturating_sub(len);
    }

    fn insert(&mut self, key: BlockKey, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.limit {
            return;
        }
        if let Some(old) = self.lru.put(key, bytes) {
            self.cached = self.cached.saturating_sub(old.len() as u64);
        }
        self.cached += len;
        self.evict_for(0);
        self.note_peak();
    }
}

/// Bytes reserved in the cache for one fetch; released when dropped unless committed.
struct Reservation {
    cache: Arc<Mutex<BlockCache>>,
    len: u64,
    done: bool,
}

impl Reservation {
    fn commit(mut self, key: BlockKey, bytes: Bytes) {
        let mut cache = lock(&self.cache);
        cache.release(self.len);
        cache.insert(key, bytes);
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.cache).release(self.len);
        }
    }
}

/// Sequential-read detection of one handle.
#[derive(Debug, Default)]
struct SeqState {
    /// Reads seen so far.
    reads: u64,
    /// Where the previous read ended.
    next: u64,
    /// Current prefetch window, blocks; 0 = not streaming.
    window: u64,
    /// First block not yet prefetched.
    ra_next: u64,
}

impl SeqState {
    /// Account for a read of `offset..end` and answer the blocks to prefetch.
    fn on_read(&mut self, offset: u64, end: u64, nblocks: u64, max_window: u64) -> Range<u64> {
        let continues = self.reads > 0 && offset.abs_diff(self.next) <= SEQ_SLACK;
        self.reads += 1;
        self.next = end;
        if !continues || max_window == 0 {
            self.window = 0;
            self.ra_next = 0;
            return 0..0;
        }
        let after = end.saturating_sub(1) / BLOCK_SIZE + 1;
        let ahead = self.ra_next.saturating_sub(after);
        if self.window == 0 {
            self.window = INITIAL_WINDOW_BLOCKS.min(max_window);
        } else if ahead > self.window / 2 {
            // Still well ahead of the reader.
            return 0..0;
        } else {
            self.window = (self.window * 2).min(max_window);
        }
        let from = self.ra_next.max(after);
        let to = after.saturating_add(self.window).min(nblocks);
        self.ra_next = self.ra_next.max(to);
        from..to.max(from)
    }
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

/// A block a read needs: already there, or being fetched.
enum Pending {
    Ready(Bytes),
    Fetching(Flight<Bytes>),
}

/// The read path of one mount.
pub(crate) struct Reader {
    api: Arc<dyn FilesApi>,
    links: Arc<Mutex<HashMap<u64, CachedLink>>>,
    link_flight: SingleFlight<u64, Link>,
    cache: Arc<Mutex<BlockCache>>,
    blocks: SingleFlight<BlockKey, Bytes>,
    /// Prefetch window cap, blocks.
    max_window: u64,
    /// The cache cannot hold a block: reads go straight to the server, exact ranges.
    uncached: bool,
    /// Blocks reads found cached, or not.
    pub(crate) counter: HitCounter,
}

impl Reader {
    pub(crate) fn new(api: Arc<dyn FilesApi>, cache_size: u64) -> Arc<Self> {
        let half_cache_blocks = cache_size / 2 / BLOCK_SIZE;
        Arc::new(Reader {
            api,
            links: Arc::new(Mutex::new(HashMap::new())),
            link_flight: SingleFlight::new(),
            cache: Arc::new(Mutex::new(BlockCache::new(cache_size))),
            blocks: SingleFlight::new(),
            max_window: MAX_WINDOW_BLOCKS.min(half_cache_blocks),
            uncached: cache_size < BLOCK_SIZE,
            counter: HitCounter::default(),
        })
    }

    /// Read `size` bytes at `offset` (fewer at the end of the file).
    pub(crate) async fn read(
        self: &Arc<Self>,
        stream: &Stream,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let result = self.read_blocks(stream, offset, size).await;
        if let Err(FsError::Inconsistent(_)) = &result {
            // Whatever link was used, the next open starts afresh.
            self.forget_link(stream.file.id, None);
        }
        result
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
            return self.get_range(file, offset..end).await;
        }
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        // The blocks this read needs go first, then the prefetch behind them.
        let pending: Vec<Pending> = (first..=last)
            .map(|i| self.demand(BlockKey { file, index: i }))
            .collect();
        let ahead =
            lock(&stream.seq).on_read(offset, end, file.size.div_ceil(BLOCK_SIZE), self.max_window);
        for index in ahead {
            self.prefetch(stream, BlockKey { file, index });
        }
        let mut parts = Vec::with_capacity(pending.len());
        for p in pending {
            match p {
                Pending::Ready(bytes) => {
                    self.counter.hit();
                    parts.push(bytes);
                }
                Pending::Fetching(flight) => {
                    self.counter.miss();
                    parts.push(flight.await?);
                }
            }
        }
        assemble(&parts, first, offset, end)
    }

    /// Numbers of the block cache.
    pub(crate) fn stats(&self) -> CacheStats {
        // Lock order is flight map, then cache (see `demand`): never the cache first.
        let fetches_running = self.blocks.len();
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
        self.blocks.idle().await;
        self.link_flight.idle().await;
    }

    fn demand(self: &Arc<Self>, key: BlockKey) -> Pending {
        if let Some(bytes) = lock(&self.cache).lru.get(&key).cloned() {
            return Pending::Ready(bytes);
        }
        let this = Arc::clone(self);
        let flight = self.blocks.join_or_start(key, move || {
            let mut cache = lock(&this.cache);
            if let Some(bytes) = cache.lru.get(&key).cloned() {
                // Landed between the first look and now.
                return Some(async move { Ok(bytes) }.boxed());
            }
            cache.reserve(key.len());
            drop(cache);
            let reservation = Reservation {
                cache: Arc::clone(&this.cache),
                len: key.len(),
                done: false,
            };
            Some(Arc::clone(&this).fetch_block(key, reservation, None))
        });
        match flight {
            Some(flight) => Pending::Fetching(flight),
            // join_or_start only declines when `make` does, and this `make` never does.
            None => Pending::Fetching(
                async {
                    Err(FsError::Io(std::io::Error::other(
                        "block fetch not started",
                    )))
                }
                .boxed()
                .shared(),
            ),
        }
    }

    fn prefetch(self: &Arc<Self>, stream: &Stream, key: BlockKey) {
        let this = Arc::clone(self);
        let permits = Arc::clone(&stream.permits);
        // Started in the background; a read that needs the block joins it.
        let _ = self.blocks.join_or_start(key, move || {
            let mut cache = lock(&this.cache);
            if cache.lru.contains(&key) || !cache.try_reserve(key.len()) {
                return None;
            }
            drop(cache);
            let reservation = Reservation {
                cache: Arc::clone(&this.cache),
                len: key.len(),
                done: false,
            };
            Some(Arc::clone(&this).fetch_block(key, reservation, Some(permits)))
        });
    }

    fn fetch_block(
        self: Arc<Self>,
        key: BlockKey,
        reservation: Reservation,
        permits: Option<Arc<Semaphore>>,
    ) -> BoxFuture<'static, FsResult<Bytes>> {
        async move {
            let _permit =
                match permits {
                    Some(p) => Some(p.acquire_owned().await.map_err(|_| {
                        FsError::Io(std::io::Error::other("prefetch permits closed"))
                    })?),
                    None => None,
                };
            let bytes = self.get_range(key.file, key.range()).await?;
            reservation.commit(key, bytes.clone());
            Ok(bytes)
        }
        .boxed()
    }

    /// GET `range` of `file`, through a cached link, replacing a refused link once.
    async fn get_range(&self, file: FileVersion, range: Range<u64>) -> FsResult<Bytes> {
        let link = self.link(file).await?;
        let bytes = match self.api.get_range(&link.url, range.clone()).await {
            Err(e) if e.kind() == ApiErrorKind::LinkRefused => {
                tracing::debug!(file = file.id, "download link refused; getting a fresh one");
                self.forget_link(file.id, Some(&link.url));
                let link = self.link(file).await?;
                self.api
                    .get_range(&link.url, range.clone())
                    .await
                    .map_err(|e| range_error(file, &range, e))?
            }
            other => other.map_err(|e| range_error(file, &range, e))?,
        };
        if bytes.len() as u64 != range.end - range.start {
            return Err(FsError::Inconsistent(format!(
                "file {}: asked for bytes {}..{}, got {} bytes",
                file.id,
                range.start,
                range.end,
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// A usable link for `file`, cached or fetched (single-flight).
    async fn link(&self, file: FileVersion) -> FsResult<Link> {
        let cached = lock(&self.links)
            .get(&file.id)
            .filter(|c| Instant::now() < c.until)
            .map(|c| c.link.clone());
        let link = match cached {
            Some(link) => link,
            None => {
                let api = Arc::clone(&self.api);
                let links = Arc::clone(&self.links);
                let id = file.id;
                self.link_flight
                    .run(id, move || async move {
                        let link = fetch_link(api.as_ref(), id).await?;
                        let until = link_deadline(&link.url, SystemTime::now(), Instant::now());
                        let mut map = lock(&links);
                        if map.len() >= LINKS_SWEEP_AT {
                            let now = Instant::now();
                            map.retain(|_, c| now < c.until);
                        }
                        map.insert(
                            id,
                            CachedLink {
                                link: link.clone(),
                                until,
                            },
                        );
                        Ok(link)
                    })
                    .await?
            }
        };
        match link.size {
            Some(served) if served != file.size => Err(FsError::Inconsistent(format!(
                "file {}: listed with {} bytes, the server serves {served}",
                file.id, file.size
            ))),
            _ => Ok(link),
        }
    }

    /// Drop the cached link of file `id` (only if it is still `url`, when given: another read may
    /// already have replaced it).
    fn forget_link(&self, id: u64, url: Option<&str>) {
        let mut links = lock(&self.links);
        if url.is_none()
            || links
                .get(&id)
                .is_some_and(|c| Some(c.link.url.as_str()) == url)
        {
            links.remove(&id);
        }
    }
}

/// `GET /files/{id}/download`, else `POST /files/download` for that one file.
async fn fetch_link(api: &dyn FilesApi, id: u64) -> FsResult<Link> {
    match api.file_link(id).await {
        Ok(l) => Ok(Link {
            url: l.url,
            size: l.size,
        }),
        Err(e) if matches!(e.kind(), ApiErrorKind::NotFound | ApiErrorKind::BadRequest) => {
            tracing::debug!(
                file = id,
                "file link endpoint failed ({e}); requesting a download"
            );
            let d = api
                .request_download(&DownloadTarget::Files(vec![id]))
                .await?;
            match d.url {
                Some(url) => Ok(Link { url, size: d.size }),
                None => Err(FsError::Inconsistent(format!(
                    "the server gave no direct download link for file {id}"
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Until when a link fetched now may be used.
fn link_deadline(url: &str, now_sys: SystemTime, now: Instant) -> Instant {
    let mut ttl = LINK_TTL;
    if let Some(expires) = url_expiry(url) {
        let left = expires.duration_since(now_sys).unwrap_or(Duration::ZERO);
        ttl = ttl.min(left.saturating_sub(LINK_EXPIRY_MARGIN));
    }
    now + ttl
}

/// When a presigned URL says it expires, if it says so in a way we understand: an `expires` or
/// `exp` query parameter (unix seconds or milliseconds, or RFC 3339), or AWS SigV4's
/// `X-Amz-Date` + `X-Amz-Expires` (seconds after the signing time).
fn url_expiry(url: &str) -> Option<SystemTime> {
    let parsed = url::Url::parse(url).ok()?;
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(value) = param("expires").or_else(|| param("exp")) {
        if let Ok(n) = value.parse::<u64>() {
            let since_epoch = if n > EXPIRES_MS_THRESHOLD {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n)
            };
            return SystemTime::UNIX_EPOCH.checked_add(since_epoch);
        }
        return chrono::DateTime::parse_from_rfc3339(&value)
            .ok()
            .map(SystemTime::from);
    }
    let signed = param("x-amz-date")?;
    let lifetime: u64 = param("x-amz-expires")?.parse().ok()?;
    let signed = chrono::NaiveDateTime::parse_from_str(&signed, "%Y%m%dT%H%M%SZ").ok()?;
    SystemTime::from(signed.and_utc()).checked_add(Duration::from_secs(lifetime))
}

/// An error of a ranged GET, as the core reports it.
fn range_error(file: FileVersion, range: &Range<u64>, e: ApiError) -> FsError {
    let unsatisfiable = matches!(
        &e,
        ApiError::Status { status, .. } if *status == HTTP_RANGE_NOT_SATISFIABLE
    );
    if unsatisfiable || e.kind() == ApiErrorKind::Malformed {
        FsError::Inconsistent(format!(
            "file {}: listed with {} bytes but bytes {}..{} could not be served: {e}",
            file.id, file.size, range.start, range.end
        ))
    } else {
        FsError::Api(e)
    }
}

/// The bytes `offset..end` out of consecutive blocks starting at block `first`.
fn assemble(parts: &[Bytes], first: u64, offset: u64, end: u64) -> FsResult<Bytes> {
    let bad = || FsError::Inconsistent(format!("blocks do not cover bytes {offset}..{end}"));
    if let [only] = parts {
        let base = first * BLOCK_SIZE;
        let (from, to) = ((offset - base) as usize, (end - base) as usize);
        if from > to || to > only.len() {
            return Err(bad());
        }
        return Ok(only.slice(from..to));
    }
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, part) in parts.iter().enumerate() {
        let base = (first + i as u64) * BLOCK_SIZE;
        let from = offset.max(base) - base;
        let to = end.min(base + part.len() as u64).saturating_sub(base);
        let piece = part.get(from as usize..to as usize).ok_or_else(bad)?;
        out.extend_from_slice(piece);
    }
    if out.len() as u64 != end - offset {
        return Err(bad());
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_while_sequential_and_resets_on_a_jump() {
        let mut s = SeqState::default();
        let n = 1000;
        let step = 128 * 1024;
        // First read: no prefetch.
        assert_eq!(s.on_read(0, step, n, 64), 0..0);
        let mut windows = Vec::new();
        let mut off = step;
        while off < 200 * BLOCK_SIZE {
            let r = s.on_read(off, off + step, n, 64);
            if !r.is_empty() {
                windows.push(s.window);
            }
            off += step;
        }
        assert_eq!(&windows[..7], &[1, 2, 4, 8, 16, 32, 64]);
        assert!(windows.iter().all(|&w| w <= 64));
        // A jump: no prefetch, window reset.
        assert_eq!(
            s.on_read(900 * BLOCK_SIZE, 900 * BLOCK_SIZE + 10, n, 64),
            0..0
        );
        assert_eq!(s.window, 0);
    }

    #[test]
    fn window_respects_cap_and_file_end() {
        let mut s = SeqState::default();
        s.on_read(0, 10, 3, 8);
        let r = s.on_read(10, BLOCK_SIZE, 3, 8);
        assert_eq!(r, 1..2);
        let r = s.on_read(BLOCK_SIZE, 2 * BLOCK_SIZE, 3, 8);
        assert_eq!(r, 2..3, "never past the last block");
        let mut none = SeqState::default();
        none.on_read(0, 10, 3, 0);
        assert_eq!(none.on_read(10, 20, 3, 0), 0..0, "no window with no cache");
    }

    #[test]
    fn expiry_from_the_url() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Instant::now();
        let secs = format!("http://h/x?sig=abc&expires={}", 1_800_000_000 + 120);
        assert_eq!(link_deadline(&secs, now, at), at + Duration::from_secs(90));
        let ms = format!("http://h/x?Expires={}", (1_800_000_000u64 + 120) * 1000);
        assert_eq!(link_deadline(&ms, now, at), at + Duration::from_secs(90));
        let rfc = "http://h/x?expires=2027-01-15T08:00:00Z";
        assert_eq!(
            url_expiry(rfc),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        assert_eq!(link_deadline("http://h/x?a=1", now, at), at + LINK_TTL);
        let emulator = format!("http://h/x?exp={}&sig=ab", (1_800_000_000u64 + 60) * 1000);
        assert_eq!(
            link_deadline(&emulator, now, at),
            at + Duration::from_secs(30)
        );
        let aws = "https://b.s3.amazonaws.com/k?X-Amz-Date=20270115T080000Z&X-Amz-Expires=300";
        assert_eq!(link_deadline(aws, now, at), at + Duration::from_secs(270));
        let past = "http://h/x?expires=5";
        assert_eq!(link_deadline(past, now, at), at);
    }

    #[test]
    fn cache_bound_and_reservations() {
        let mut c = BlockCache::new(3 * BLOCK_SIZE);
        let file = FileVersion {
            id: 1,
            size: 10 * BLOCK_SIZE,
            mtime: None,
        };
        for index in 0..3 {
            assert!(c.try_reserve(BLOCK_SIZE));
            c.release(BLOCK_SIZE);
            c.insert(
                BlockKey { file, index },
                Bytes::from(vec![0u8; BLOCK_SIZE as usize]),
            );
        }
        assert_eq!(c.cached, 3 * BLOCK_SIZE);
        // Reserving evicts the least recently used.
        assert!(c.try_reserve(BLOCK_SIZE));
        assert_eq!(c.lru.len(), 2);
        assert!(!c.lru.contains(&BlockKey { file, index: 0 }));
        assert!(c.try_reserve(BLOCK_SIZE));
        assert!(c.try_reserve(BLOCK_SIZE));
        assert!(!c.try_reserve(BLOCK_SIZE), "in-flight bytes fill the bound");
        assert!(c.peak <= 3 * BLOCK_SIZE);
        c.reserve(BLOCK_SIZE);
        assert_eq!(
            c.inflight,
            4 * BLOCK_SIZE,
            "a needed block is always fetched"
        );
    }

    #[test]
    fn assemble_within_one_block_shares_the_cached_bytes() {
        let block = Bytes::from(vec![3u8; 4096]);
        let base = BLOCK_SIZE;
        let got = assemble(std::slice::from_ref(&block), 1, base + 100, base + 200).ok();
        let got = got.as_deref().unwrap_or_default();
        assert_eq!(got, &block[100..200]);
        // A view of the cached block, not a copy of it.
        assert_eq!(got.as_ptr(), block[100..].as_ptr());
    }

    #[test]
    fn assemble_across_blocks() {
        let b0 = Bytes::from((0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let b1 = Bytes::from(vec![7u8; 10]);
        let got = assemble(&[b0.clone(), b1], 0, BLOCK_SIZE - 3, BLOCK_SIZE + 2).ok();
        let mut want = b0[b0.len() - 3..].to_vec();
        want.extend_from_slice(&[7, 7]);
        assert_eq!(got.as_deref(), Some(&want[..]));
        assert!(assemble(&[Bytes::from_static(b"ab")], 0, 0, 3).is_err());
    }
}
