//! [`FaultyFilesApi`]: a [`FilesApi`] wrapper that injects failures and latency, so the layers
//! above (the fs core) can be tested against a misbehaving storage without any HTTP.
//!
//! Per method ([`ApiMethod`]) or for all methods at once:
//! - a failure probability, drawn from a **seeded** RNG (same seed, same call sequence → same
//!   failures), injecting a chosen [`Fault`];
//! - "fail the next N calls" of a method, which wins over the probability;
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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi, ListQuery,
    LiveEntry, MachinePage, RangeBody, Space,
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

struct State {
    rng: StdRng,
    all_methods: Option<Rule>,
    per_method: HashMap<ApiMethod, Rule>,
    scheduled: HashMap<ApiMethod, Scheduled>,
    latency_all: Duration,
    latency: HashMap<ApiMethod, Duration>,
    cut_streams_after: Option<u64>,
    counters: HashMap<ApiMethod, MethodCounters>,
}

/// A [`FilesApi`] that fails on purpose. See the module note.
pub struct FaultyFilesApi<A: ?Sized> {
    inner: Arc<A>,
    state: Mutex<State>,
}

/// What to do for one call.
struct Decision {
    latency: Duration,
    fault: Option<(ApiError, FaultTiming)>,
}

impl<A: FilesApi + ?Sized> FaultyFilesApi<A> {
    /// Wrap `inner`; `seed` drives the probabilistic faults.
    pub fn new(inner: impl Into<Arc<A>>, seed: u64) -> Self {
        FaultyFilesApi {
            inner: inner.into(),
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                all_methods: None,
                per_method: HashMap::new(),
                scheduled: HashMap::new(),
                latency_all: Duration::ZERO,
                latency: HashMap::new(),
                cut_streams_after: None,
                counters: HashMap::new(),
            }),
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

    /// Fail the next `n` calls of `method` with `fault`, before the call.
    pub fn fail_next(&self, method: ApiMethod, n: u32, fault: Fault) {
        self.fail_next_timed(method, n, fault, FaultTiming::Before);
    }

    /// Let the next `n` calls of `method` take effect, then fail them with `fault`.
    pub fn fail_next_after_effect(&self, method: ApiMethod, n: u32, fault: Fault) {
        self.fail_next_timed(method, n, fault, FaultTiming::After);
    }

    pub fn fail_next_timed(&self, method: ApiMethod, n: u32, fault: Fault, timing: FaultTiming) {
        let mut st = self.state();
        if n == 0 {
            st.scheduled.remove(&method);
        } else {
            st.scheduled.insert(
                method,
                Scheduled {
                    remaining: n,
                    fault,
                    timing,
                },
            );
        }
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

    fn decide(&self, method: ApiMethod) -> Decision {
        let mut st = self.state();
        let latency = st.latency.get(&method).copied().unwrap_or(st.latency_all);
        let mut fault = None;
        if let Some(s) = st.scheduled.get_mut(&method) {
            s.remaining -= 1;
            fault = Some((s.fault.to_error(method), s.timing));
            if s.remaining == 0 {
                st.scheduled.remove(&method);
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
        Decision { latency, fault }
    }

    /// Run `call` under the faults set for `method`.
    async fn run<T, Fut>(&self, method: ApiMethod, call: impl FnOnce() -> Fut) -> ApiResult<T>
    where
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let d = self.decide(method);
        if !d.latency.is_zero() {
            tokio::time::sleep(d.latency).await;
        }
        match d.fault {
            None => call().await,
            Some((err, FaultTiming::Before)) => Err(err),
            Some((err, FaultTiming::After)) => {
                let _lost = call().await;
                Err(err)
            }
        }
    }
}

#[async_trait]
impl<A: FilesApi + ?Sized> FilesApi for FaultyFilesApi<A> {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        self.run(ApiMethod::ListMachines, || {
            self.inner.list_machines(page, per_page)
        })
        .await
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        self.run(ApiMethod::ListFiles, || self.inner.list_files(space, query))
            .await
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        self.run(ApiMethod::Create, || self.inner.create(req)).await
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        self.run(ApiMethod::UploadPart, || self.inner.upload_part(url, body))
            .await
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        self.run(ApiMethod::Complete, || self.inner.complete(file_id, parts))
            .await
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        self.run(ApiMethod::Delete, || self.inner.delete(file_id))
            .await
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        self.run(ApiMethod::RequestDownload, || {
            self.inner.request_download(target)
        })
        .await
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        self.run(ApiMethod::DownloadStatus, || {
            self.inner.download_status(download_id)
        })
        .await
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        self.run(ApiMethod::FileLink, || self.inner.file_link(file_id))
            .await
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        self.run(ApiMethod::Capacity, || self.inner.capacity(machine_id))
            .await
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        self.run(ApiMethod::ListContent, || {
            self.inner.list_content(machine_id, path)
        })
        .await
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        self.run(ApiMethod::GetRange, || self.inner.get_range(url, range))
            .await
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let stream = self
            .run(ApiMethod::GetStream, || self.inner.get_stream(url, offset))
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
        self.run(ApiMethod::GetRange, || {
            self.inner.get_range_stream(url, range, expect)
        })
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
