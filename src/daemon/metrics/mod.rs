//! The daemon's counters (`exposition`: the `/metrics` page; `redact`: secrets out of messages).
//!
//! [`Metrics`] is one shared value (`Arc<Metrics>`) that every layer updates with plain atomic
//! adds, from any thread, without locks: API calls per endpoint (count, errors by
//! [`ApiErrorKind`], latency histogram, payload bytes), retries, block/dir cache hits and misses,
//! the upload queue (gauges set by the write engine) and FUSE operations by op. The only lock
//! guards the bounded ring of recent errors, touched on errors only. Figures another layer
//! keeps itself (the core's cache hit counts, the upload queue) are pulled in by a
//! [`Refresher`] the mount installs, run before every rendering and status snapshot.
//!
//! Subtle cases owned here:
//! - histogram buckets are stored non-cumulative; readers take one [`HistogramSnapshot`] whose
//!   `count` is the sum of its own buckets, so a reader racing an update never sees the two
//!   disagree;
//! - error messages kept for `vagonfs status` go through [`redact_urls`]: transport errors from
//!   the HTTP stack quote the request URL, and presigned URLs carry their signature in the
//!   query string, which must never be shown or logged;
//! - the enum tables ([`Endpoint`], [`ERROR_KINDS`], [`FuseOp`], [`CacheKind`]) index fixed
//!   arrays of atomics: a new variant gets its slot by construction (exhaustive matches, or
//!   derived tables), never by a hand-kept list.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;

use crate::api::ApiErrorKind;

use super::snapshot::{
    CacheStats, EndpointStats, MountIdentity, RecentError, StatusSnapshot, UploadProgress,
};

mod exposition;
#[cfg(test)]
mod metered_tests;
mod redact;

pub use exposition::CONTENT_TYPE as EXPOSITION_CONTENT_TYPE;
pub use redact::redact_urls;

/// Upper bounds of the latency buckets, microseconds (Prometheus renders them in seconds).
/// From 1 ms (a loopback listing) to 60 s (a large part on a slow link); slower is `+Inf`.
pub const LATENCY_BUCKETS_MICROS: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// Finite buckets plus `+Inf`.
const N_BUCKETS: usize = LATENCY_BUCKETS_MICROS.len() + 1;

/// How many recent errors `vagonfs status` can show; older ones are dropped.
pub const RECENT_ERRORS_CAPACITY: usize = 32;
/// Longest error message kept in the ring, characters (a server may send a whole HTML page).
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// The API calls that are metered, one per [`crate::api::FilesApi`] method.
pub use crate::api::ApiMethod as Endpoint;

/// Every [`ApiErrorKind`], in label order.
pub const ERROR_KINDS: [ApiErrorKind; 16] = [
    ApiErrorKind::NotFound,
    ApiErrorKind::AlreadyExists,
    ApiErrorKind::NoSpace,
    ApiErrorKind::PermissionDenied,
    ApiErrorKind::Unauthorized,
    ApiErrorKind::BadRequest,
    ApiErrorKind::SizeMismatch,
    ApiErrorKind::RootFolder,
    ApiErrorKind::LinkRefused,
    ApiErrorKind::Throttled,
    ApiErrorKind::Unavailable,
    ApiErrorKind::Transport,
    ApiErrorKind::Timeout,
    ApiErrorKind::Malformed,
    ApiErrorKind::InvalidRequest,
    ApiErrorKind::DownloadFailed,
];
const N_KINDS: usize = ERROR_KINDS.len();

/// Index into [`ERROR_KINDS`] and the label value. Exhaustive: a new kind does not compile
/// until it has a slot here (and in `ERROR_KINDS`, checked by a test).
fn kind_slot(kind: ApiErrorKind) -> (usize, &'static str) {
    use ApiErrorKind as K;
    match kind {
        K::NotFound => (0, "not_found"),
        K::AlreadyExists => (1, "already_exists"),
        K::NoSpace => (2, "no_space"),
        K::PermissionDenied => (3, "permission_denied"),
        K::Unauthorized => (4, "unauthorized"),
        K::BadRequest => (5, "bad_request"),
        K::SizeMismatch => (6, "size_mismatch"),
        K::RootFolder => (7, "root_folder"),
        K::LinkRefused => (8, "link_refused"),
        K::Throttled => (9, "throttled"),
        K::Unavailable => (10, "unavailable"),
        K::Transport => (11, "transport"),
        K::Timeout => (12, "timeout"),
        K::Malformed => (13, "malformed"),
        K::InvalidRequest => (14, "invalid_request"),
        K::DownloadFailed => (15, "download_failed"),
    }
}

/// The label value of an error kind.
pub fn kind_label(kind: ApiErrorKind) -> &'static str {
    kind_slot(kind).1
}

/// Which cache a hit or miss is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// The memory block cache of file contents.
    Block,
    /// The folder-listing cache.
    Dir,
}

impl CacheKind {
    pub const ALL: [CacheKind; 2] = [CacheKind::Block, CacheKind::Dir];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Block => "block",
            CacheKind::Dir => "dir",
        }
    }
}

/// The FUSE operations, named by the adapter that counts them (label values of the per-op
/// counters).
pub use crate::fuse::FuseOp;

/// Pulls figures owned by other layers (cache counts kept by the core, the upload queue) into
/// the metrics just before they are read.
pub type Refresher = Box<dyn Fn(&Metrics) + Send + Sync>;

const N_ENDPOINTS: usize = Endpoint::ALL.len();
const N_FUSE_OPS: usize = <FuseOp as strum::EnumCount>::COUNT;
const N_CACHES: usize = CacheKind::ALL.len();

/// A latency histogram: non-cumulative bucket counts plus the sum, microseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; N_BUCKETS],
    sum_micros: AtomicU64,
}

/// A consistent-enough read of a [`Histogram`]: `count` is the sum of `buckets`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Non-cumulative counts, one per [`LATENCY_BUCKETS_MICROS`] bound then `+Inf`.
    pub buckets: [u64; N_BUCKETS],
    pub sum_micros: u64,
    pub count: u64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let buckets: [u64; N_BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Mean latency, `None` before the first observation.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_micros / self.count))
    }

    /// An estimate of quantile `q` (0..=1) from the buckets, interpolating linearly inside the
    /// bucket that holds it (what Prometheus' `histogram_quantile` does). Observations above the
    /// last finite bound are reported as that bound. `None` before the first observation.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = LATENCY_BUCKETS_MICROS.get(i) else {
                    return LATENCY_BUCKETS_MICROS
                        .last()
                        .map(|&b| Duration::from_micros(b));
                };
                let lower = if i == 0 {
                    0
                } else {
                    LATENCY_BUCKETS_MICROS[i - 1]
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                let micros = lower as f64 + within * (upper - lower) as f64;
                return Some(Duration::from_micros(micros as u64));
            }
            below += n;
        }
        LATENCY_BUCKETS_MICROS
            .last()
            .map(|&b| Duration::from_micros(b))
    }
}

/// Counters of one endpoint.
#[derive(Debug, Default)]
struct EndpointCounters {
    requests: AtomicU64,
    errors: [AtomicU64; N_KINDS],
    retries: [AtomicU64; N_KINDS],
    latency: Histogram,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The upload queue as the write engine last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadQueueStats {
    /// Files waiting for their upload to start.
    pub queued: u64,
    /// Files being uploaded now.
    pub in_flight: u64,
    /// Bytes of queued and in-flight files not yet acknowledged by the storage.
    pub pending_bytes: u64,
}

/// Everything the daemon counts. Share as `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    endpoints: [EndpointCounters; N_ENDPOINTS],
    cache_hits: [AtomicU64; N_CACHES],
    cache_misses: [AtomicU64; N_CACHES],
    upload_queued: AtomicI64,
    upload_in_flight: AtomicI64,
    upload_pending_bytes: AtomicI64,
    uploads_completed: AtomicU64,
    uploads_failed: AtomicU64,
    fuse_ops: [AtomicU64; N_FUSE_OPS],
    fuse_errors: [AtomicU64; N_FUSE_OPS],
    recent_errors: Mutex<VecDeque<RecentError>>,
    refresher: OnceLock<RefresherSlot>,
}

/// [`Refresher`] with a `Debug` for [`Metrics`]'s.
struct RefresherSlot(Refresher);

impl std::fmt::Debug for RefresherSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            endpoints: std::array::from_fn(|_| EndpointCounters::default()),
            cache_hits: Default::default(),
            cache_misses: Default::default(),
            upload_queued: AtomicI64::new(0),
            upload_in_flight: AtomicI64::new(0),
            upload_pending_bytes: AtomicI64::new(0),
            uploads_completed: AtomicU64::new(0),
            uploads_failed: AtomicU64::new(0),
            fuse_ops: std::array::from_fn(|_| AtomicU64::new(0)),
            fuse_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            recent_errors: Mutex::new(VecDeque::with_capacity(RECENT_ERRORS_CAPACITY)),
            refresher: OnceLock::new(),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- API -------------------------------------------------------------------------------

    /// One finished API call: counts it, its latency, and its error kind if it failed.
    pub fn record_request(
        &self,
        endpoint: Endpoint,
        elapsed: Duration,
        error: Option<ApiErrorKind>,
    ) {
        let c = &self.endpoints[endpoint.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.latency.observe(elapsed);
        if let Some(kind) = error {
            self.record_error_kind(endpoint, kind);
        }
    }

    /// An error that surfaced after the call was counted (e.g. mid-way through a download
    /// stream).
    pub fn record_error_kind(&self, endpoint: Endpoint, kind: ApiErrorKind) {
        let c = &self.endpoints[endpoint.index()];
        c.errors[kind_slot(kind).0].fetch_add(1, Ordering::Relaxed);
    }

    /// Payload bytes sent to the storage (part bodies).
    pub fn add_bytes_up(&self, endpoint: Endpoint, bytes: u64) {
        self.endpoints[endpoint.index()]
            .bytes_up
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Payload bytes received from the storage (download bodies).
    pub fn add_bytes_down(&self, endpoint: Endpoint, bytes: u64) {
        self.endpoints[endpoint.index()]
            .bytes_down
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The HTTP client is about to retry a call to `endpoint` after an error of kind `cause`.
    /// (Each attempt is *not* a separate request in these counters: the metering wrapper sits
    /// above the retries and sees one call.)
    pub fn on_retry(&self, endpoint: Endpoint, cause: ApiErrorKind) {
        let c = &self.endpoints[endpoint.index()];
        c.retries[kind_slot(cause).0].fetch_add(1, Ordering::Relaxed);
    }

    /// Latency histogram of one endpoint.
    pub fn latency(&self, endpoint: Endpoint) -> HistogramSnapshot {
        self.endpoints[endpoint.index()].latency.snapshot()
    }

    /// Calls made to one endpoint.
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint.index()]
            .requests
            .load(Ordering::Relaxed)
    }

    /// Failed calls to one endpoint, of one kind.
    pub fn errors(&self, endpoint: Endpoint, kind: ApiErrorKind) -> u64 {
        self.endpoints[endpoint.index()].errors[kind_slot(kind).0].load(Ordering::Relaxed)
    }

    /// Failed calls to one endpoint, all kinds.
    pub fn errors_total(&self, endpoint: Endpoint) -> u64 {
        let c = &self.endpoints[endpoint.index()];
        c.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }

    /// Retries of all endpoints, all causes.
    pub fn retries_total(&self) -> u64 {
        self.endpoints
            .iter()
            .flat_map(|c| c.retries.iter())
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }

    pub fn bytes_up(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint.index()]
            .bytes_up
            .load(Ordering::Relaxed)
    }

    pub fn bytes_down(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint.index()]
            .bytes_down
            .load(Ordering::Relaxed)
    }

    /// Per-endpoint figures for `vagonfs status`, endpoints never called left out.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        /// The quantile shown as "p95".
        const P95: f64 = 0.95;
        Endpoint::ALL
            .iter()
            .filter(|&&e| self.requests(e) > 0)
            .map(|&e| {
                let latency = self.latency(e);
                EndpointStats {
                    endpoint: e.name().to_string(),
                    requests: self.requests(e),
                    errors: self.errors_total(e),
                    mean_ms: latency.mean().map(duration_ms),
                    p95_ms: latency.quantile(P95).map(duration_ms),
                    bytes_up: self.bytes_up(e),
                    bytes_down: self.bytes_down(e),
                }
            })
            .collect()
    }

    // ---- caches ----------------------------------------------------------------------------

    pub fn cache_hit(&self, cache: CacheKind) {
        self.cache_hits[cache as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_miss(&self, cache: CacheKind) {
        self.cache_misses[cache as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sets a cache's counts from a layer that keeps its own (the core): the last report wins.
    pub fn set_cache_counts(&self, cache: CacheKind, hits: u64, misses: u64) {
        self.cache_hits[cache as usize].store(hits, Ordering::Relaxed);
        self.cache_misses[cache as usize].store(misses, Ordering::Relaxed);
    }

    pub fn cache_stats(&self) -> CacheStats {
        let hits = |c: CacheKind| self.cache_hits[c as usize].load(Ordering::Relaxed);
        let misses = |c: CacheKind| self.cache_misses[c as usize].load(Ordering::Relaxed);
        CacheStats {
            block_hits: hits(CacheKind::Block),
            block_misses: misses(CacheKind::Block),
            dir_hits: hits(CacheKind::Dir),
            dir_misses: misses(CacheKind::Dir),
        }
    }

    // ---- uploads ---------------------------------------------------------------------------

    /// The write engine reports its queue (call on every change; the last report wins, so
    /// the gauges cannot drift the way paired increments and decrements can).
    pub fn set_upload_queue(&self, stats: UploadQueueStats) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.upload_queued
            .store(clamp(stats.queued), Ordering::Relaxed);
        self.upload_in_flight
            .store(clamp(stats.in_flight), Ordering::Relaxed);
        self.upload_pending_bytes
            .store(clamp(stats.pending_bytes), Ordering::Relaxed);
    }

    pub fn upload_queue(&self) -> UploadQueueStats {
        let load = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        UploadQueueStats {
            queued: load(&self.upload_queued),
            in_flight: load(&self.upload_in_flight),
            pending_bytes: load(&self.upload_pending_bytes),
        }
    }

    /// A file's upload finished (`ok`) or was given up.
    pub fn upload_finished(&self, ok: bool) {
        let counter = if ok {
            &self.uploads_completed
        } else {
            &self.uploads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    // ---- FUSE ------------------------------------------------------------------------------

    pub fn fuse_op(&self, op: FuseOp) {
        self.fuse_ops[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An op answered with an error (counted in addition to [`Metrics::fuse_op`]).
    pub fn fuse_error(&self, op: FuseOp) {
        self.fuse_errors[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fuse_ops(&self, op: FuseOp) -> u64 {
        self.fuse_ops[op.index()].load(Ordering::Relaxed)
    }

    // ---- recent errors ---------------------------------------------------------------------

    /// Keeps an error for `vagonfs status` (URLs redacted, message shortened). `source` says
    /// where it happened, e.g. an endpoint name or "upload /docs/a.txt".
    pub fn push_error(&self, source: &str, message: &str) {
        let mut message = redact_urls(message);
        if let Some((cut, _)) = message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        let entry = RecentError {
            at: Utc::now(),
            source: redact_urls(source),
            message,
        };
        let mut ring = self.recent_errors.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RECENT_ERRORS_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The kept errors, oldest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        let ring = self.recent_errors.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }

    // ---- refresh ---------------------------------------------------------------------------

    /// Installs the function that pulls figures owned elsewhere into these metrics; it runs
    /// before every rendering and status snapshot. Only the first call installs one; returns
    /// whether this one did.
    pub fn set_refresher(&self, refresher: Refresher) -> bool {
        self.refresher.set(RefresherSlot(refresher)).is_ok()
    }

    /// Runs the refresher, if any.
    pub fn refresh(&self) {
        if let Some(slot) = self.refresher.get() {
            (slot.0)(self);
        }
    }

    // ---- exposition ------------------------------------------------------------------------
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The mount's metering: every call through `MeteredFilesApi` lands here.
/// The adapter counts every FUSE operation, and every failed one, here.
impl crate::fuse::OpObserver for Metrics {
    fn op(&self, op: FuseOp) {
        self.fuse_op(op);
    }

    fn failed(&self, op: FuseOp) {
        self.fuse_error(op);
    }
}

impl crate::api::metered::ApiObserver for Metrics {
    fn on_call(&self, method: Endpoint, elapsed: Duration, error: Option<&crate::api::ApiError>) {
        self.record_request(method, elapsed, error.map(|e| e.kind()));
        if let Some(e) = error {
            self.push_error(method.name(), &e.to_string());
        }
    }

    fn on_late_error(&self, method: Endpoint, error: &crate::api::ApiError) {
        self.record_error_kind(method, error.kind());
        self.push_error(method.name(), &error.to_string());
    }

    fn on_bytes_up(&self, method: Endpoint, bytes: u64) {
        self.add_bytes_up(method, bytes);
    }

    fn on_bytes_down(&self, method: Endpoint, bytes: u64) {
        self.add_bytes_down(method, bytes);
    }

    fn on_retry(&self, method: Endpoint, cause: ApiErrorKind) {
        Metrics::on_retry(self, method, cause);
    }
}

/// Filled from the metrics here, so `snapshot` stays plain data (no import circle).
impl StatusSnapshot {
    /// A snapshot now, from the mount's identity, its metrics and the write engine's uploads.
    pub fn collect(
        identity: &MountIdentity,
        metrics: &Metrics,
        uploads: Vec<UploadProgress>,
    ) -> Self {
        metrics.refresh();
        let queue = metrics.upload_queue();
        StatusSnapshot {
            identity: identity.clone(),
            taken_at: Utc::now(),
            uploads,
            queued: queue.queued,
            in_flight: queue.in_flight,
            pending_bytes: queue.pending_bytes,
            failed: Vec::new(),
            recent_errors: metrics.recent_errors(),
            cache: metrics.cache_stats(),
            retries: metrics.retries_total(),
            endpoints: metrics.endpoint_stats(),
            api_unreachable_since: None,
            folders_not_made: 0,
            deletes_pending: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn error_kinds_table_matches_slots() {
        for (i, kind) in ERROR_KINDS.iter().enumerate() {
            assert_eq!(kind_slot(*kind).0, i, "{kind:?}");
        }
        let labels: HashSet<_> = ERROR_KINDS.iter().map(|k| kind_label(*k)).collect();
        assert_eq!(labels.len(), ERROR_KINDS.len());
    }

    #[test]
    fn fuse_op_names_are_snake_case_and_distinct() {
        let names: std::collections::HashSet<&str> =
            FuseOp::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(names.len(), FuseOp::ALL.len());
        assert_eq!(FuseOp::CopyFileRange.as_str(), "copy_file_range");
        assert_eq!(FuseOp::Readdirplus.as_str(), "readdirplus");
        assert_eq!(FuseOp::Other.as_str(), "other");
    }

    #[test]
    fn refresher_runs_before_rendering_and_only_the_first_is_kept() {
        let metrics = Arc::new(Metrics::new());
        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&calls);
        assert!(metrics.set_refresher(Box::new(move |m| {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            m.set_cache_counts(CacheKind::Dir, n * 10, n);
        })));
        assert!(!metrics.set_refresher(Box::new(|_| {})));
        let page = metrics.render_prometheus();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            page.lines()
                .any(|l| l.contains("cache=\"dir\"") && l.ends_with(" 10")),
            "{page}"
        );
        metrics.refresh();
        assert_eq!(metrics.cache_stats().dir_hits, 20);
        assert_eq!(metrics.cache_stats().dir_misses, 2);
    }

    #[test]
    fn enum_tables_are_in_index_order() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        for (i, op) in FuseOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        for (i, c) in CacheKind::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn quantile_and_mean_from_buckets() {
        let m = Metrics::new();
        assert_eq!(m.latency(Endpoint::Delete).quantile(0.95), None);
        for _ in 0..90 {
            m.record_request(Endpoint::Delete, Duration::from_micros(2_000), None);
        }
        for _ in 0..10 {
            m.record_request(Endpoint::Delete, Duration::from_millis(200), None);
        }
        let h = m.latency(Endpoint::Delete);
        assert_eq!(h.count, 100);
        assert_eq!(
            h.mean(),
            Some(Duration::from_micros((90 * 2_000 + 10 * 200_000) / 100))
        );
        // The 95th observation lies in the (100 ms, 250 ms] bucket, half-way through its 10.
        assert_eq!(h.quantile(0.95), Some(Duration::from_micros(175_000)));
        // The median lies in (1 ms, 2.5 ms].
        let p50 = h.quantile(0.5).unwrap();
        assert!(
            p50 > Duration::from_millis(1) && p50 <= Duration::from_micros(2_500),
            "{p50:?}"
        );
        // Beyond the last bound: reported as the last bound.
        m.record_request(Endpoint::Capacity, Duration::from_secs(100), None);
        assert_eq!(
            m.latency(Endpoint::Capacity).quantile(0.95),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn recent_errors_are_bounded_and_redacted() {
        let m = Metrics::new();
        for i in 0..RECENT_ERRORS_CAPACITY + 5 {
            m.push_error("list_files", &format!("error {i}"));
        }
        let errs = m.recent_errors();
        assert_eq!(errs.len(), RECENT_ERRORS_CAPACITY);
        assert_eq!(errs[0].message, "error 5");
        assert_eq!(
            errs.last().unwrap().message,
            format!("error {}", RECENT_ERRORS_CAPACITY + 4)
        );

        m.push_error(
            "upload_part",
            "connection error: error sending request for url \
             (http://127.0.0.1:8080/blob/7?expires=1&sig=deadbeef): reset",
        );
        let last = m.recent_errors().pop().unwrap();
        assert!(!last.message.contains("deadbeef"), "{}", last.message);
        assert!(
            last.message
                .contains("http://127.0.0.1:8080/blob/7?[redacted]): reset")
        );

        m.push_error("x", &"é".repeat(MAX_ERROR_MESSAGE_CHARS * 2));
        let long = m.recent_errors().pop().unwrap();
        assert_eq!(long.message.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
    }

    #[test]
    fn endpoint_stats_skip_unused_endpoints() {
        let m = Metrics::new();
        m.record_request(
            Endpoint::Create,
            Duration::from_millis(4),
            Some(ApiErrorKind::NoSpace),
        );
        let stats = m.endpoint_stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].endpoint, "create");
        assert_eq!(stats[0].requests, 1);
        assert_eq!(stats[0].errors, 1);
        assert_eq!(stats[0].mean_ms, Some(4.0));
    }

    #[test]
    fn collect_takes_the_metrics_and_round_trips_through_json() {
        let metrics = Metrics::new();
        metrics.cache_hit(CacheKind::Block);
        metrics.cache_miss(CacheKind::Block);
        metrics.cache_miss(CacheKind::Block);
        metrics.cache_miss(CacheKind::Block);
        metrics.set_upload_queue(UploadQueueStats {
            queued: 4,
            in_flight: 1,
            pending_bytes: 10,
        });
        metrics.record_request(Endpoint::ListFiles, Duration::from_millis(2), None);
        metrics.push_error("list_files", "boom");
        let identity = MountIdentity {
            mountpoint: "/mnt/v".into(),
            target: "machine 42".into(),
            api_url: "http://127.0.0.1:1".into(),
            pid: 7,
            started_at: Utc::now(),
            read_only: false,
            demo: false,
        };
        let snap = StatusSnapshot::collect(&identity, &metrics, Vec::new());
        assert_eq!(snap.queued, 4);
        assert_eq!(snap.in_flight, 1);
        assert!(!snap.uploads_done());
        assert_eq!(snap.cache.block_hit_rate(), Some(0.25));
        assert_eq!(snap.cache.dir_hit_rate(), None);
        assert_eq!(snap.endpoints.len(), 1);
        assert_eq!(snap.recent_errors[0].message, "boom");

        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains("\"mountpoint\":\"/mnt/v\""), "{json}");
        let mut back: StatusSnapshot = serde_json::from_str(&json).unwrap();
        // Floats may come back one ulp off without serde_json's float_roundtrip: compare
        // the latency figures within a tolerance, everything else exactly.
        let (got, want) = (&back.endpoints[0], &snap.endpoints[0]);
        assert_eq!((got.requests, got.errors), (want.requests, want.errors));
        let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-9;
        assert!(close(got.mean_ms, want.mean_ms) && close(got.p95_ms, want.p95_ms));
        back.endpoints = snap.endpoints.clone();
        assert_eq!(back, snap);
    }
}
