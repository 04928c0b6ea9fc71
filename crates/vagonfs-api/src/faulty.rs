//! [`FaultyFilesApi`]: a [`FilesApi`] wrapper that injects failures and latency, so the layers
//! above (the fs core) can be tested against a misbehaving storage without any HTTP.
//!
//! Per method ([`ApiMethod`]) or for all methods at once:
//! - a failure probability, drawn from a **seeded** RNG (same seed, same call sequence → same
//!   failures), injecting a chosen [`Fault`];
//! - "fail the next N calls" of a method (queued after those already scheduled), which wins
//!   over the probability;
//! - added latency before each call;
//! - for [`FilesApi::get_stream`], cutting every stream after a number of bytes (a transport
//!   error mid-body).
//!
//! A fault strikes [`FaultTiming::Before`] the call (the storage never sees it) or
//! [`FaultTiming::After`] it: the wrapped call runs and takes effect, then the error is returned
//! anyway, which is what a timeout or a reset after the server acted looks like; this is the case
//! that tests idempotency (a create retried after its first attempt in fact succeeded).
//!
//! Counters of calls and injected faults per method let tests check what happened. Settings can
//! change while the wrapper is shared (`Arc`), e.g. failing only during one phase of a test.
//!
//! No retry happens here: retries belong to the HTTP client; a fault injected here reaches the
//! caller as is, which is the point.
//!
//! Beyond errors, for tests of ordering and parallelism:
//! - **holds**: calls of a method (optionally only those aimed at one id: a listing's parent, a
//!   file's id) wait at a gate until released one by one ([`FaultyFilesApi::release`]) or all
//!   at once ([`FaultyFilesApi::unhold`]); a hold never released is a frozen call. Calls in
//!   flight and the most at once are counted, and a test can wait for the N-th arrival;
//! - **rules with a predicate** on the call ([`Call`]: its id, URL, space), e.g. one part of an
//!   upload that always fails;
//! - **variants** of a server that answers differently but within what the client must
//!   tolerate or detect ([`Variant`]): no part URL for an empty file, one part URL too many,
//!   listings whose `next_page` repeats, or in another order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, Semaphore};

use super::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi, ListQuery,
    LiveEntry, MachinePage, ObjectType, RangeBody, Space,
};

pub use super::ApiMethod;

/// The error a fault produces.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 503.
    Unavailable,
    /// HTTP 429, optionally with `Retry-After` seconds.
    Throttled { retry_after: Option<u64> },
    /// No answer in time.
    Timeout,
    /// Connection reset.
    Transport,
    /// A presigned link refused (expired).
    LinkRefused,
    /// HTTP 404.
    NotFound,
    /// HTTP 507.
    NoSpace,
    /// HTTP 409 (the name is taken).
    Conflict,
    /// Any error, as given.
    Error(ApiError),
}

impl Fault {
    fn to_error(&self, method: ApiMethod) -> ApiError {
        let endpoint = format!("{} (injected)", method.name());
        let status = |status: u16, message: &str, retry_after| ApiError::Status {
            endpoint: endpoint.clone(),
            status,
            client_code: Some(i64::from(status)),
            message: message.to_string(),
            retry_after,
        };
        match self {
            Fault::Unavailable => status(503, "injected: service unavailable", None),
            Fault::Throttled { retry_after } => {
                status(429, "injected: too many requests", *retry_after)
            }
            Fault::NotFound => status(404, "injected: not found", None),
            Fault::NoSpace => status(507, "injected: storage full", None),
            Fault::Conflict => status(409, "injected: name already exists", None),
            Fault::Timeout => ApiError::Timeout { endpoint, secs: 0 },
            Fault::Transport => ApiError::Transport {
                endpoint,
                detail: "injected: connection reset".into(),
            },
            Fault::LinkRefused => ApiError::LinkRefused { status: 403 },
            Fault::Error(e) => e.clone(),
        }
    }
}

/// Whether the wrapped call runs before the injected error is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// The error replaces the call: the storage never sees it.
    Before,
    /// The call runs and takes effect; its answer is lost and the error returned instead.
    After,
}

#[derive(Debug, Clone)]
struct Rule {
    probability: f64,
    fault: Fault,
    timing: FaultTiming,
}

#[derive(Debug, Clone)]
struct Scheduled {
    /// Calls let through before the first fault.
    skip: u32,
    remaining: u32,
    fault: Fault,
    timing: FaultTiming,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MethodCounters {
    /// Calls made to the wrapper.
    pub calls: u64,
    /// Of which answered with an injected fault.
    pub injected: u64,
}

/// What a call is aimed at, for holds and predicate rules.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: ApiMethod,
    /// A listing's parent (0 for a root), or the file id of complete, delete, file_link.
    pub target: Option<u64>,
    /// The presigned URL of a part PUT or a download GET.
    pub url: Option<&'a str>,
    pub space: Option<Space>,
}

impl<'a> Call<'a> {
    fn new(method: ApiMethod) -> Self {
        Call {
            method,
            target: None,
            url: None,
            space: None,
        }
    }
    fn target(mut self, id: u64) -> Self {
        self.target = Some(id);
        self
    }
    fn url(mut self, url: &'a str) -> Self {
        self.url = Some(url);
        self
    }
    fn space(mut self, space: Space) -> Self {
        self.space = Some(space);
        self
    }
}

/// A predicate over calls.
pub type CallFilter = Arc<dyn Fn(&Call<'_>) -> bool + Send + Sync>;

/// A server that answers otherwise than the emulator, within what the client must tolerate or
/// detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A create of an empty file answers no part URL; its complete takes no part.
    NoPartUrlForEmptyFile,
    /// A file create answers one part URL more than the size needs.
    ExtraPartUrl,
    /// A listing's `next_page` points back at the page just served.
    ListingRepeatsPage,
    /// A listing's `next_page` moves on forever, every page holding page 1's entries.
    ListingRepeatsFirstPage,
    /// Each page lists its entries in the reverse of the emulator's order.
    ListingReversed,
}

struct Hold {
    target: Option<u64>,
    gate: Arc<Semaphore>,
}

struct State {
    rng: StdRng,
    filtered: HashMap<ApiMethod, (CallFilter, Fault)>,
    holds: HashMap<ApiMethod, Hold>,
    variants: HashSet<Variant>,
    /// Part URLs held back from an empty file's create, by file id (for its complete).
    dropped_urls: HashMap<u64, Vec<String>>,
    all_methods: Option<Rule>,
    per_method: HashMap<ApiMethod, Rule>,
    /// Per method, in the order they strike.
    scheduled: HashMap<ApiMethod, VecDeque<Scheduled>>,
    latency_all: Duration,
    latency: HashMap<ApiMethod, Duration>,
    cut_streams_after: Option<u64>,
    counters: HashMap<ApiMethod, MethodCounters>,
}

/// A [`FilesApi`] that fails on purpose. See the module note.
pub struct FaultyFilesApi<A: ?Sized> {
    inner: Arc<A>,
    state: Mutex<State>,
    in_flight: [AtomicUsize; ApiMethod::ALL.len()],
    max_in_flight: [AtomicUsize; ApiMethod::ALL.len()],
    arrived: Notify,
}

/// Counts a call out of flight even when its future is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do for one call.
struct Decision {
    latency: Duration,
    fault: Option<(ApiError, FaultTiming)>,
    gate: Option<Arc<Semaphore>>,
}

impl<A: FilesApi + ?Sized> FaultyFilesApi<A> {
    /// Wrap `inner`; `seed` drives the probabilistic faults.
    pub fn new(inner: impl Into<Arc<A>>, seed: u64) -> Self {
        FaultyFilesApi {
            inner: inner.into(),
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                filtered: HashMap::new(),
                holds: HashMap::new(),
                variants: HashSet::new(),
                dropped_urls: HashMap::new(),
                all_methods: None,
                per_method: HashMap::new(),
                scheduled: HashMap::new(),
                latency_all: Duration::ZERO,
                latency: HashMap::new(),
                cut_streams_after: None,
                counters: HashMap::new(),
            }),
            in_flight: std::array::from_fn(|_| AtomicUsize::new(0)),
            max_in_flight: std::array::from_fn(|_| AtomicUsize::new(0)),
            arrived: Notify::new(),
        }
    }

    pub fn inner(&self) -> &Arc<A> {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fail calls of `method` (`None`: of every method without its own rate) with probability
    /// `probability` (clamped to [0, 1]), before the call. 0 removes the rate.
    pub fn set_fail_rate(&self, method: Option<ApiMethod>, probability: f64, fault: Fault) {
        self.set_fail_rate_timed(method, probability, fault, FaultTiming::Before);
    }

    /// [`Self::set_fail_rate`] with a choice of timing.
    pub fn set_fail_rate_timed(
        &self,
        method: Option<ApiMethod>,
        probability: f64,
        fault: Fault,
        timing: FaultTiming,
    ) {
        let probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        let rule = (probability > 0.0).then_some(Rule {
            probability,
            fault,
            timing,
        });
        let mut st = self.state();
        match (method, rule) {
            (None, rule) => st.all_methods = rule,
            (Some(m), Some(rule)) => {
                st.per_method.insert(m, rule);
            }
            (Some(m), None) => {
                st.per_method.remove(&m);
            }
        }
    }

    /// Fail the next `n` calls of `method` with `fault`, before the call (after the failures
    /// already scheduled for it).
    pub fn fail_next(&self, method: ApiMethod, n: u32, fault: Fault) {
        self.fail_next_timed(method, n, fault, FaultTiming::Before);
    }

    /// Let the next `n` calls of `method` take effect, then fail them with `fault`.
    pub fn fail_next_after_effect(&self, method: ApiMethod, n: u32, fault: Fault) {
        self.fail_next_timed(method, n, fault, FaultTiming::After);
    }

    pub fn fail_next_timed(&self, method: ApiMethod, n: u32, fault: Fault, timing: FaultTiming) {
        self.fail_after_calls(method, 0, n, fault, timing);
    }

    /// Let `skip` calls of `method` through, then fail the `n` after them with `fault`.
    pub fn fail_after_calls(
        &self,
        method: ApiMethod,
        skip: u32,
        n: u32,
        fault: Fault,
        timing: FaultTiming,
    ) {
        let mut st = self.state();
        if n == 0 {
            st.scheduled.remove(&method);
        } else {
            st.scheduled
                .entry(method)
                .or_default()
                .push_back(Scheduled {
                    skip,
                    remaining: n,
                    fault,
                    timing,
                });
        }
    }

    /// Fail every call of `method` that `filter` picks, before the call, until
    /// [`Self::clear_where`]. Wins over every other rule.
    pub fn fail_where(
        &self,
        method: ApiMethod,
        filter: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
        fault: Fault,
    ) {
        self.state()
            .filtered
            .insert(method, (Arc::new(filter), fault));
    }

    pub fn clear_where(&self, method: ApiMethod) {
        self.state().filtered.remove(&method);
    }

    /// Hold calls of `method` (only those aimed at `target`, when given) at a gate: each waits
    /// for a [`Self::release`]; counted as in flight while they wait.
    pub fn hold(&self, method: ApiMethod, target: Option<u64>) {
        let gate = Arc::new(Semaphore::new(0));
        self.state().holds.insert(method, Hold { target, gate });
    }

    /// Let `n` held calls of `method` through (one call each).
    pub fn release(&self, method: ApiMethod, n: usize) {
        if let Some(h) = self.state().holds.get(&method) {
            h.gate.add_permits(n);
        }
    }

    /// Stop holding `method`, letting every held call through.
    pub fn unhold(&self, method: ApiMethod) {
        if let Some(h) = self.state().holds.remove(&method) {
            h.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Calls of `method` between their arrival and their answer, now.
    pub fn in_flight(&self, method: ApiMethod) -> usize {
        self.in_flight[method.index()].load(Ordering::Acquire)
    }

    /// The most calls of `method` ever in flight at once.
    pub fn max_in_flight(&self, method: ApiMethod) -> usize {
        self.max_in_flight[method.index()].load(Ordering::Acquire)
    }

    /// Wait until `n` calls of `method` have arrived in all (held or not).
    pub async fn wait_arrivals(&self, method: ApiMethod, n: usize) {
        loop {
            let notified = self.arrived.notified();
            if self.counters(method).calls >= n as u64 {
                return;
            }
            notified.await;
        }
    }

    /// Answer like a server of that variant (`on`), or like the wrapped one.
    pub fn set_variant(&self, variant: Variant, on: bool) {
        let mut st = self.state();
        if on {
            st.variants.insert(variant);
        } else {
            st.variants.remove(&variant);
        }
    }

    fn variant(&self, variant: Variant) -> bool {
        self.state().variants.contains(&variant)
    }

    /// Delay every call of `method` (`None`: of every method without its own latency).
    pub fn set_latency(&self, method: Option<ApiMethod>, latency: Duration) {
        let mut st = self.state();
        match method {
            None => st.latency_all = latency,
            Some(m) => {
                st.latency.insert(m, latency);
            }
        }
    }

    /// Cut every download stream after `bytes` bytes with a transport error (`None`: never).
    pub fn cut_streams_after(&self, bytes: Option<u64>) {
        self.state().cut_streams_after = bytes;
    }

    /// Remove every fault and latency (counters are kept).
    pub fn clear(&self) {
        let mut st = self.state();
        st.all_methods = None;
        st.per_method.clear();
        st.scheduled.clear();
        st.latency_all = Duration::ZERO;
        st.latency.clear();
        st.cut_streams_after = None;
        st.filtered.clear();
        st.variants.clear();
        for (_, h) in st.holds.drain() {
            h.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Calls of `method` so far.
    pub fn calls(&self, method: ApiMethod) -> u64 {
        self.counters(method).calls
    }

    /// Calls so far, all methods.
    pub fn total_calls(&self) -> u64 {
        self.state().counters.values().map(|c| c.calls).sum()
    }

    /// Start counting again from zero.
    pub fn reset_counters(&self) {
        self.state().counters.clear();
    }

    pub fn counters(&self, method: ApiMethod) -> MethodCounters {
        self.state()
            .counters
            .get(&method)
            .copied()
            .unwrap_or_default()
    }

    /// Faults injected so far, all methods.
    pub fn total_injected(&self) -> u64 {
        self.state().counters.values().map(|c| c.injected).sum()
    }

    fn decide(&self, call: &Call<'_>) -> Decision {
        let method = call.method;
        let mut st = self.state();
        let latency = st.latency.get(&method).copied().unwrap_or(st.latency_all);
        let mut fault = None;
        let picked = st
            .filtered
            .get(&method)
            .filter(|(filter, _)| filter(call))
            .map(|(_, f)| f.to_error(method));
        if let Some(err) = picked {
            fault = Some((err, FaultTiming::Before));
        } else if let Some(queue) = st.scheduled.get_mut(&method)
            && let Some(s) = queue.front_mut()
        {
            if s.skip > 0 {
                s.skip -= 1;
            } else {
                s.remaining -= 1;
                fault = Some((s.fault.to_error(method), s.timing));
                if s.remaining == 0 {
                    queue.pop_front();
                }
            }
        } else if let Some(rule) = st
            .per_method
            .get(&method)
            .or(st.all_methods.as_ref())
            .cloned()
            && st.rng.gen_bool(rule.probability)
        {
            fault = Some((rule.fault.to_error(method), rule.timing));
        }
        let c = st.counters.entry(method).or_default();
        c.calls += 1;
        if fault.is_some() {
            c.injected += 1;
            tracing::debug!(method = method.name(), "injecting a fault");
        }
        let gate = st
            .holds
            .get(&method)
            .filter(|h| h.target.is_none() || h.target == call.target)
            .map(|h| Arc::clone(&h.gate));
        Decision {
            latency,
            fault,
            gate,
        }
    }

    /// Run `call` under the faults set for its method.
    async fn run<T, Fut>(&self, call: Call<'_>, f: impl FnOnce() -> Fut) -> ApiResult<T>
    where
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let i = call.method.index();
        let d = self.decide(&call);
        let now = self.in_flight[i].fetch_add(1, Ordering::AcqRel) + 1;
        let _flight = InFlight(&self.in_flight[i]);
        self.max_in_flight[i].fetch_max(now, Ordering::AcqRel);
        self.arrived.notify_waiters();
        if !d.latency.is_zero() {
            tokio::time::sleep(d.latency).await;
        }
        if let Some(gate) = d.gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        match d.fault {
            None => f().await,
            Some((err, FaultTiming::Before)) => Err(err),
            Some((err, FaultTiming::After)) => {
                let _lost = f().await;
                Err(err)
            }
        }
    }
}

#[async_trait]
impl<A: FilesApi + ?Sized> FilesApi for FaultyFilesApi<A> {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        self.run(Call::new(ApiMethod::ListMachines), || {
            self.inner.list_machines(page, per_page)
        })
        .await
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let call = Call::new(ApiMethod::ListFiles)
            .target(query.parent_id.unwrap_or(0))
            .space(space);
        if self.variant(Variant::ListingRepeatsFirstPage) {
            let first = ListQuery {
                page: 1,
                ..query.clone()
            };
            let mut page = self
                .run(call, || self.inner.list_files(space, &first))
                .await?;
            page.page = query.page;
            page.next_page = Some(query.page.max(1) + 1);
            return Ok(page);
        }
        let mut page = self
            .run(call, || self.inner.list_files(space, query))
            .await?;
        if self.variant(Variant::ListingRepeatsPage) {
            page.next_page = Some(page.page);
        }
        if self.variant(Variant::ListingReversed) {
            page.entries.reverse();
        }
        Ok(page)
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let call = Call::new(ApiMethod::Create).space(req.space);
        let mut created = self.run(call, || self.inner.create(req)).await?;
        if req.object_type == ObjectType::File {
            if req.size == Some(0) && self.variant(Variant::NoPartUrlForEmptyFile) {
                let urls = std::mem::take(&mut created.upload_urls);
                self.state().dropped_urls.insert(created.id, urls);
            }
            if self.variant(Variant::ExtraPartUrl) {
                let extra = format!("{}-extra", created.upload_urls.last().map_or("", |u| u));
                created.upload_urls.push(extra);
            }
        }
        Ok(created)
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        let call = Call::new(ApiMethod::UploadPart).url(url);
        self.run(call, || self.inner.upload_part(url, body)).await
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let call = Call::new(ApiMethod::Complete).target(file_id);
        let dropped = match parts.is_empty() {
            true => self.state().dropped_urls.remove(&file_id),
            false => None,
        };
        let Some(urls) = dropped else {
            return self.run(call, || self.inner.complete(file_id, parts)).await;
        };
        // The variant's server needs no part for an empty file: send the wrapped one its
        // empty parts here, unseen by the counters.
        self.run(call, || async {
            let mut empty = Vec::new();
            for (i, url) in urls.iter().enumerate() {
                let etag = self.inner.upload_part(url, Bytes::new()).await?;
                empty.push(CompletedPart {
                    part_number: i as u32 + 1,
                    etag,
                });
            }
            self.inner.complete(file_id, &empty).await
        })
        .await
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let call = Call::new(ApiMethod::Delete).target(file_id);
        self.run(call, || self.inner.delete(file_id)).await
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        self.run(Call::new(ApiMethod::RequestDownload), || {
            self.inner.request_download(target)
        })
        .await
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        let call = Call::new(ApiMethod::DownloadStatus).target(download_id);
        self.run(call, || self.inner.download_status(download_id))
            .await
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        let call = Call::new(ApiMethod::FileLink).target(file_id);
        self.run(call, || self.inner.file_link(file_id)).await
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        self.run(Call::new(ApiMethod::Capacity), || {
            self.inner.capacity(machine_id)
        })
        .await
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        let call = Call::new(ApiMethod::ListContent).target(machine_id);
        self.run(call, || self.inner.list_content(machine_id, path))
            .await
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        let call = Call::new(ApiMethod::GetRange).url(url);
        self.run(call, || self.inner.get_range(url, range)).await
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let call = Call::new(ApiMethod::GetStream).url(url);
        let stream = self
            .run(call, || self.inner.get_stream(url, offset))
            .await?;
        let Some(limit) = self.state().cut_streams_after else {
            return Ok(stream);
        };
        Ok(cut_after(stream, limit))
    }

    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        let call = Call::new(ApiMethod::GetRange).url(url);
        self.run(call, || self.inner.get_range_stream(url, range, expect))
            .await
    }
}

/// A stream that ends with a transport error once `limit` bytes went through.
fn cut_after(stream: ByteStream, limit: u64) -> ByteStream {
    futures::stream::unfold(
        (stream, 0u64, false),
        move |(mut s, sent, done)| async move {
            if done {
                return None;
            }
            if sent >= limit {
                let err = ApiError::Transport {
                    endpoint: "get_stream (injected)".into(),
                    detail: format!("injected: stream cut after {sent} bytes"),
                };
                return Some((Err(err), (s, sent, true)));
            }
            match s.next().await? {
                Ok(chunk) => {
                    let room = (limit - sent).min(chunk.len() as u64) as usize;
                    let chunk = chunk.slice(..room);
                    let sent = sent + room as u64;
                    Some((Ok(chunk), (s, sent, false)))
                }
                Err(e) => Some((Err(e), (s, sent, true))),
            }
        },
    )
    .boxed()
}

/// A scripted in-memory [`FilesApi`] for unit tests of this module and of `paging`.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::api::{DownloadState, ObjectType};

    #[derive(Default)]
    pub struct ScriptedApi {
        pages: Vec<FilePage>,
        statuses: Mutex<VecDeque<DownloadStatus>>,
        pub blob: Bytes,
        asked: Mutex<Vec<(u32, u32)>>,
        polls: Mutex<u32>,
        pub created: Mutex<Vec<String>>,
        pub deleted: Mutex<Vec<u64>>,
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::Status {
            endpoint: what.to_string(),
            status: 404,
            client_code: Some(404),
            message: "not scripted".into(),
            retry_after: None,
        }
    }

    impl ScriptedApi {
        pub fn with_pages(pages: Vec<FilePage>) -> Self {
            ScriptedApi {
                pages,
                ..Default::default()
            }
        }
        pub fn with_statuses(statuses: Vec<DownloadStatus>) -> Self {
            ScriptedApi {
                statuses: Mutex::new(statuses.into()),
                ..Default::default()
            }
        }
        pub fn with_blob(blob: &[u8]) -> Self {
            ScriptedApi {
                blob: Bytes::copy_from_slice(blob),
                ..Default::default()
            }
        }
        pub fn asked_pages(&self) -> Vec<u32> {
            self.asked.lock().unwrap().iter().map(|(p, _)| *p).collect()
        }
        pub fn asked_per_page(&self) -> Vec<u32> {
            self.asked.lock().unwrap().iter().map(|(_, n)| *n).collect()
        }
        pub fn status_polls(&self) -> u32 {
            *self.polls.lock().unwrap()
        }
    }

    #[async_trait]
    impl FilesApi for ScriptedApi {
        async fn list_machines(&self, _page: u32, _per_page: u32) -> ApiResult<MachinePage> {
            Ok(MachinePage {
                machines: Vec::new(),
                count: Some(0),
                page: 1,
                next_page: None,
            })
        }
        async fn list_files(&self, _space: Space, q: &ListQuery) -> ApiResult<FilePage> {
            self.asked.lock().unwrap().push((q.page, q.per_page));
            let idx = (q.page as usize)
                .checked_sub(1)
                .ok_or_else(|| not_found("page 0"))?;
            self.pages
                .get(idx)
                .cloned()
                .ok_or_else(|| not_found("list_files"))
        }
        async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
            let mut created = self.created.lock().unwrap();
            created.push(req.name.clone());
            let urls = match req.object_type {
                ObjectType::File => vec!["http://fake/part1".to_string()],
                ObjectType::Directory => Vec::new(),
            };
            Ok(Created {
                id: created.len() as u64,
                uid: None,
                chunk_size_mb: None,
                upload_urls: urls,
            })
        }
        async fn upload_part(&self, _url: &str, body: Bytes) -> ApiResult<String> {
            Ok(format!("\"{}\"", body.len()))
        }
        async fn complete(&self, _file_id: u64, _parts: &[CompletedPart]) -> ApiResult<Completed> {
            Ok(Completed {
                uid: None,
                download_url: None,
            })
        }
        async fn delete(&self, file_id: u64) -> ApiResult<()> {
            self.deleted.lock().unwrap().push(file_id);
            Ok(())
        }
        async fn request_download(&self, _t: &DownloadTarget) -> ApiResult<DownloadRequested> {
            Err(not_found("request_download"))
        }
        async fn download_status(&self, _id: u64) -> ApiResult<DownloadStatus> {
            *self.polls.lock().unwrap() += 1;
            let mut st = self.statuses.lock().unwrap();
            match st.len() {
                0 => Err(not_found("download_status")),
                1 => Ok(st[0].clone()),
                _ => Ok(st.pop_front().unwrap_or(DownloadStatus {
                    state: DownloadState::Failed,
                    url: None,
                    size: None,
                    name: None,
                    content_type: None,
                })),
            }
        }
        async fn file_link(&self, _file_id: u64) -> ApiResult<DownloadLink> {
            Err(not_found("file_link"))
        }
        async fn capacity(&self, _m: Option<u64>) -> ApiResult<Capacity> {
            Ok(Capacity {
                total: 10,
                in_use: 1,
                team_total: None,
                team_in_use: None,
            })
        }
        async fn list_content(&self, _m: u64, _p: &str) -> ApiResult<Vec<LiveEntry>> {
            Ok(Vec::new())
        }
        async fn get_range(&self, _url: &str, r: Range<u64>) -> ApiResult<Bytes> {
            let (s, e) = (r.start as usize, r.end as usize);
            if s > e || e > self.blob.len() {
                return Err(not_found("get_range"));
            }
            Ok(self.blob.slice(s..e))
        }
        async fn get_stream(&self, _url: &str, offset: u64) -> ApiResult<ByteStream> {
            let rest = self.blob.slice((offset as usize).min(self.blob.len())..);
            // Small chunks, as a network would deliver.
            let chunks: Vec<ApiResult<Bytes>> = rest
                .chunks(4)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Ok(futures::stream::iter(chunks).boxed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::ScriptedApi;
    use super::*;
    use crate::api::{ApiErrorKind, ObjectType};

    fn dir(name: &str) -> CreateRequest {
        CreateRequest {
            space: Space::Shared,
            parent_id: None,
            name: name.into(),
            object_type: ObjectType::Directory,
            content_type: None,
            size: None,
            chunk_size_mb: None,
            overwrite: false,
        }
    }

    #[tokio::test]
    async fn fail_next_n_then_pass() {
        let api = FaultyFilesApi::new(ScriptedApi::default(), 1);
        api.fail_next(ApiMethod::Capacity, 2, Fault::Unavailable);
        assert_eq!(
            api.capacity(None).await.unwrap_err().kind(),
            ApiErrorKind::Unavailable
        );
        assert_eq!(
            api.capacity(None).await.unwrap_err().kind(),
            ApiErrorKind::Unavailable
        );
        assert!(api.capacity(None).await.is_ok());
        // Other methods untouched.
        assert!(api.list_content(1, "C:\\").await.is_ok());
        assert_eq!(
            api.counters(ApiMethod::Capacity),
            MethodCounters {
                calls: 3,
                injected: 2
            }
        );
    }

    #[tokio::test]
    async fn before_vs_after_effect() {
        let api = FaultyFilesApi::new(ScriptedApi::default(), 1);
        api.fail_next(ApiMethod::Create, 1, Fault::Timeout);
        assert_eq!(
            api.create(&dir("a")).await.unwrap_err().kind(),
            ApiErrorKind::Timeout
        );
        assert!(
            api.inner().created.lock().unwrap().is_empty(),
            "Before: never reached"
        );
        api.fail_next_after_effect(ApiMethod::Create, 1, Fault::Transport);
        assert_eq!(
            api.create(&dir("b")).await.unwrap_err().kind(),
            ApiErrorKind::Transport
        );
        assert_eq!(
            *api.inner().created.lock().unwrap(),
            vec!["b".to_string()],
            "After: took effect"
        );
    }

    #[tokio::test]
    async fn seeded_rates_are_reproducible() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let api = FaultyFilesApi::new(ScriptedApi::default(), seed);
            api.set_fail_rate(None, 0.3, Fault::Unavailable);
            let mut out = Vec::new();
            for _ in 0..200 {
                out.push(api.capacity(None).await.is_err());
            }
            out
        }
        let a = pattern(42).await;
        assert_eq!(a, pattern(42).await);
        assert_ne!(a, pattern(43).await);
        let failed = a.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&failed), "{failed} of 200 at rate 0.3");
    }

    #[tokio::test]
    async fn per_method_rate_overrides_global() {
        let api = FaultyFilesApi::new(ScriptedApi::default(), 5);
        api.set_fail_rate(None, 1.0, Fault::Unavailable);
        api.set_fail_rate(Some(ApiMethod::Delete), 1.0, Fault::NotFound);
        assert_eq!(
            api.delete(3).await.unwrap_err().kind(),
            ApiErrorKind::NotFound
        );
        assert_eq!(
            api.capacity(None).await.unwrap_err().kind(),
            ApiErrorKind::Unavailable
        );
        api.clear();
        assert!(api.delete(3).await.is_ok());
        assert_eq!(api.total_injected(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_added() {
        let api = FaultyFilesApi::new(ScriptedApi::default(), 5);
        api.set_latency(Some(ApiMethod::Capacity), Duration::from_secs(3));
        let t0 = tokio::time::Instant::now();
        api.capacity(None).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(3));
        let t1 = tokio::time::Instant::now();
        api.delete(1).await.unwrap();
        assert!(t1.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn streams_are_cut() {
        let api: FaultyFilesApi<dyn FilesApi> = FaultyFilesApi::new(
            Arc::new(ScriptedApi::with_blob(b"0123456789abcdef")) as Arc<dyn FilesApi>,
            1,
        );
        api.cut_streams_after(Some(10));
        let mut s = api.get_stream("http://fake/x", 0).await.unwrap();
        let mut got = Vec::new();
        let mut err = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => err = Some(e),
            }
        }
        assert_eq!(got, b"0123456789");
        assert_eq!(err.unwrap().kind(), ApiErrorKind::Transport);
        api.cut_streams_after(None);
        let all: Vec<_> = api
            .get_stream("http://fake/x", 4)
            .await
            .unwrap()
            .collect()
            .await;
        let bytes: Vec<u8> = all.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"456789abcdef");
    }
}
