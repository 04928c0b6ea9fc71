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
//!
//! The files here: this one holds the wrapper and its settings; `fault` the fault kinds and
//! how they are aimed; `inject` how a call goes through the wrapper.

mod fault;
mod inject;
#[cfg(test)]
pub(crate) mod tests_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, Semaphore};

pub use self::fault::{Call, CallFilter, Fault, FaultTiming, MethodCounters, Variant};
use self::fault::{Hold, Rule, Scheduled, State};
pub use super::ApiMethod;
use super::FilesApi;

/// A [`FilesApi`] that fails on purpose. See the module note.
pub struct FaultyFilesApi<A: ?Sized> {
    inner: Arc<A>,
    state: Mutex<State>,
    in_flight: [AtomicUsize; ApiMethod::ALL.len()],
    max_in_flight: [AtomicUsize; ApiMethod::ALL.len()],
    arrived: Notify,
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
}

#[cfg(test)]
mod tests {
    use super::tests_support::ScriptedApi;
    use super::*;
    use futures::StreamExt;

    use crate::api::{ApiErrorKind, ObjectType};
    use crate::api::{CreateRequest, Space};

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
