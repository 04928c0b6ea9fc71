//! Retries: exponential backoff with full jitter, bounded in attempts *and* in total time.
//!
//! What is retried ([`should_retry`]): connection errors (refused, reset, body cut short),
//! timeouts, HTTP 429 and HTTP 500/502/503/504. Nothing else: another 4xx will not change by
//! asking again, and 501/505/507 are answers, not hiccups. A 429 or 503 carrying `Retry-After`
//! (seconds or HTTP-date, parsed by the client into `ApiError::Status::retry_after`) is honoured
//! as the wait before the next attempt; when that wait would cross the time budget the loop gives
//! up at once instead of sleeping past it.
//!
//! Bounds: at most [`RetryPolicy::max_attempts`] attempts, and no attempt *starts* after
//! [`RetryPolicy::max_elapsed`]; each attempt is told the time left ([`Attempt::remaining`]) so
//! the client can shorten its request timeout, which keeps the whole call within about
//! `max_elapsed` (plus at most one connect timeout).
//!
//! Idempotency. Each attempt learns whether an earlier attempt's outcome is unknown
//! ([`Attempt::outcome_unknown`]): a timeout, a dropped connection or a 5xx may come *after* the
//! server acted. The client uses this to read a later answer correctly:
//! - directory create: a retry answering 409 after an unknown outcome is most likely our own
//!   directory; the client finds it by name (a listing with `q`) and returns its id, so a timed
//!   out `mkdir` never yields two directories nor a spurious EEXIST. (If someone else created the
//!   same name at the same moment, that directory is returned: the one ambiguity left.)
//! - file create: an unfinished upload is invisible (not listed, no name taken) until complete,
//!   so creating again is safe: at worst the server keeps an orphan, never-completed upload,
//!   which no listing shows. A server that *did* reserve the name would answer 409; that is
//!   passed up as is (the fs layer can retry with overwrite).
//! - complete: after an unknown outcome, a 404/400 probably means the first attempt completed
//!   the upload; the client checks that the file now exists and is readable (its download link)
//!   before calling it a success.
//! - delete: after an unknown outcome, 404 means the first attempt did it: success.
//! - part PUTs and GETs are idempotent; a download cut short mid-body resumes at the first byte
//!   not received (in `http`), counting as an attempt.
//!
//! A 429 is the one retryable answer known to come *before* the server acted, so it does not
//! make the outcome unknown.
//!
//! Observing: a [`RetryObserver`] (given to the client in its options) is told of every retry
//! about to happen, with the error that caused it, so the daemon can count retries. It is
//! called only when another attempt will actually be made, never for the final failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use rand::RngExt;

use super::{ApiError, ApiResult};

/// Default number of attempts (the first one included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default total time budget of one call, retries included.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(60);
/// Default first backoff ceiling; doubles every attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Default largest backoff ceiling.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// HTTP statuses that are retried (besides transport errors and timeouts).
pub const RETRY_STATUSES: &[u16] = &[429, 500, 502, 503, 504];

/// The longest server-asked wait honoured (`Retry-After`); a larger value is read as this much.
/// A server may send any number (`Retry-After: 99999999999999`); it must neither overflow the
/// clock arithmetic nor park a request for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// No attempt starts after this much time since the first.
    pub max_elapsed: Duration,
    /// Backoff ceiling before the second attempt; doubles each attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_elapsed: DEFAULT_MAX_ELAPSED,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Full jitter: a uniform wait in `[0, min(max_backoff, initial_backoff * 2^(attempt-1))]`
    /// after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32, rng: &mut impl RngExt) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64))
    }
}

/// Told of each retry about to be made, with the error that caused it (e.g. to count retries).
/// Called on the task making the call, so it may read task-local context.
#[derive(Clone)]
pub struct RetryObserver(Arc<dyn Fn(&ApiError) + Send + Sync>);

impl RetryObserver {
    pub fn new(f: impl Fn(&ApiError) + Send + Sync + 'static) -> Self {
        RetryObserver(Arc::new(f))
    }

    pub fn notify(&self, err: &ApiError) {
        (self.0)(err)
    }
}

/// The same observer (one shared closure), not an equal behaviour.
impl PartialEq for RetryObserver {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RetryObserver {}

impl std::fmt::Debug for RetryObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryObserver")
    }
}

/// What an attempt knows about the attempts before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// An earlier attempt may have reached the server and acted (timeout, reset, 5xx).
    pub outcome_unknown: bool,
    /// Time left in the budget when this attempt starts.
    pub remaining: Duration,
}

/// Whether an error is worth another attempt.
pub fn should_retry(err: &ApiError) -> bool {
    match err {
        ApiError::Status {
            status,
            client_code,
            ..
        } => {
            RETRY_STATUSES.contains(status)
                && *client_code != Some(super::error::CLIENT_CODE_PERMISSION)
        }
        ApiError::Transport { .. } | ApiError::Timeout { .. } => true,
        _ => false,
    }
}

/// Whether the request that failed with `err` may have been acted on by the server.
fn may_have_acted(err: &ApiError) -> bool {
    !matches!(err, ApiError::Status { status: 429, .. })
}

/// The retry state of one call: failures so far and the time spent, against a policy. Shared by
/// [`run`] and by the resumable transfers of the client (which also call
/// [`Budget::made_progress`] when a cut-short body brought bytes, so that a slow but moving
/// transfer is bounded by time rather than by attempts).
#[derive(Debug, Clone)]
pub struct Budget {
    policy: RetryPolicy,
    start: Instant,
    failures: u32,
    observer: Option<RetryObserver>,
}

impl Budget {
    pub fn new(policy: &RetryPolicy) -> Self {
        Budget {
            policy: policy.clone(),
            start: Instant::now(),
            failures: 0,
            observer: None,
        }
    }

    /// Tell `observer` (when given) of every retry this budget allows.
    pub fn observed(mut self, observer: Option<&RetryObserver>) -> Self {
        self.observer = observer.cloned();
        self
    }

    /// Time left before no attempt may start.
    pub fn remaining(&self) -> Duration {
        self.policy.max_elapsed.saturating_sub(self.start.elapsed())
    }

    /// The last attempt moved forward: it does not count against the attempt bound.
    pub fn made_progress(&mut self) {
        self.failures = 0;
    }

    /// After a failed attempt: how long to wait before the next one, or the error to give up
    /// with (the error itself when it is not retryable, else [`ApiError::RetriesExhausted`]).
    pub fn after_failure(&mut self, what: &str, err: ApiError) -> Result<Duration, ApiError> {
        if !should_retry(&err) {
            return Err(err);
        }
        self.failures += 1;
        if self.failures >= self.policy.max_attempts.max(1) {
            tracing::debug!(what, attempts = self.failures, error = %err, "giving up: attempts used up");
            return Err(exhausted(self.failures, err));
        }
        let wait = match &err {
            ApiError::Status {
                retry_after: Some(secs),
                ..
            } => Duration::from_secs((*secs).min(MAX_RETRY_AFTER.as_secs())),
            _ => self.policy.backoff(self.failures, &mut rand::rng()),
        };
        // Checked: a hostile `Retry-After` or an unbounded `max_elapsed` must not overflow.
        let retry_at = self.start.elapsed().checked_add(wait);
        if retry_at.is_none_or(|at| at >= self.policy.max_elapsed) {
            tracing::debug!(what, attempts = self.failures, error = %err, "giving up: time budget used up");
            return Err(exhausted(self.failures, err));
        }
        tracing::debug!(what, failures = self.failures, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
        if let Some(observer) = &self.observer {
            observer.notify(&err);
        }
        Ok(wait)
    }
}

/// Run `op` until it succeeds, fails with a non-retryable error, or the policy's bounds are
/// reached (then [`ApiError::RetriesExhausted`] with the last error). `what` names the call in
/// logs.
pub async fn run<T, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> ApiResult<T>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    run_observed(policy, None, what, op).await
}

/// [`run`], telling `observer` (when given) of every retry.
pub async fn run_observed<T, F, Fut>(
    policy: &RetryPolicy,
    observer: Option<&RetryObserver>,
    what: &str,
    mut op: F,
) -> ApiResult<T>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let mut budget = Budget::new(policy).observed(observer);
    let mut outcome_unknown = false;
    let mut number = 1;
    loop {
        let attempt = Attempt {
            number,
            outcome_unknown,
            remaining: budget.remaining(),
        };
        let err = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        outcome_unknown |= may_have_acted(&err);
        let wait = budget.after_failure(what, err)?;
        tokio::time::sleep(wait).await;
        number += 1;
    }
}

fn exhausted(attempts: u32, last: ApiError) -> ApiError {
    if attempts <= 1 {
        last
    } else {
        ApiError::RetriesExhausted {
            attempts,
            last: Box::new(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16, retry_after: Option<u64>) -> ApiError {
        ApiError::Status {
            endpoint: "GET /files".into(),
            status: code,
            client_code: None,
            message: String::new(),
            retry_after,
        }
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy {
            max_attempts: 8,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(31))
                .min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(attempt, &mut rng) <= ceiling);
            }
        }
        // Full jitter: not always the ceiling.
        let waits: Vec<_> = (0..50).map(|_| p.backoff(5, &mut rng)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(900)));
    }

    #[test]
    fn classifies_retryable() {
        for code in [429, 500, 502, 503, 504] {
            assert!(should_retry(&status(code, None)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 450, 501, 507] {
            assert!(!should_retry(&status(code, None)), "{code}");
        }
        assert!(should_retry(&ApiError::Timeout {
            endpoint: "x".into(),
            secs: 1
        }));
        assert!(should_retry(&ApiError::Transport {
            endpoint: "x".into(),
            detail: "reset".into()
        }));
        assert!(!should_retry(&ApiError::LinkRefused { status: 403 }));
        assert!(!should_retry(&ApiError::Malformed {
            endpoint: "x".into(),
            detail: "d".into()
        }));
    }

    #[tokio::test]
    async fn retries_until_success_and_tracks_unknown_outcome() {
        let calls = AtomicU32::new(0);
        let seen = std::sync::Mutex::new(Vec::new());
        let out = run(&fast(5), "t", |a| {
            seen.lock().unwrap().push(a);
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(status(429, None)),
                    1 => Err(status(503, None)),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 2);
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            seen.iter().map(|a| a.number).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // A 429 happens before the server acts; a 503 may not.
        assert_eq!(
            seen.iter().map(|a| a.outcome_unknown).collect::<Vec<_>>(),
            vec![false, false, true]
        );
    }

    #[tokio::test]
    async fn observer_hears_each_retry_but_not_the_final_failure() {
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let observer = {
            let heard = Arc::clone(&heard);
            RetryObserver::new(move |e| heard.lock().unwrap().push(e.kind()))
        };
        let calls = AtomicU32::new(0);
        let out: ApiResult<()> = run_observed(&fast(3), Some(&observer), "t", |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(status(429, None)),
                    _ => Err(status(503, None)),
                }
            }
        })
        .await;
        assert!(matches!(
            out,
            Err(ApiError::RetriesExhausted { attempts: 3, .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Three attempts, two retries: the last 503 ends the call and is not a retry.
        assert_eq!(
            *heard.lock().unwrap(),
            vec![status(429, None).kind(), status(503, None).kind()]
        );
        // Not retryable: nothing heard.
        heard.lock().unwrap().clear();
        let out: ApiResult<()> = run_observed(&fast(3), Some(&observer), "t", |_| async {
            Err(status(404, None))
        })
        .await;
        assert!(out.is_err());
        assert!(heard.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn stops_on_non_retryable() {
        let calls = AtomicU32::new(0);
        let out: ApiResult<()> = run(&fast(5), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(404, None)) }
        })
        .await;
        assert!(matches!(out, Err(ApiError::Status { status: 404, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bounded_attempts() {
        let calls = AtomicU32::new(0);
        let out: ApiResult<()> = run(&fast(4), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(503, None)) }
        })
        .await;
        match out {
            Err(ApiError::RetriesExhausted { attempts, last }) => {
                assert_eq!(attempts, 4);
                assert!(matches!(*last, ApiError::Status { status: 503, .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn hostile_retry_after_neither_panics_nor_waits_past_the_cap() {
        // u64::MAX seconds does not fit an Instant/Duration sum: this used to panic.
        let mut budget = Budget::new(&RetryPolicy::default());
        let err = status(503, Some(u64::MAX));
        assert!(budget.after_failure("GET /files", err).is_err());
        // With no time bound at all (an upload's endless retry), the wait is capped.
        let endless = RetryPolicy {
            max_attempts: u32::MAX,
            max_elapsed: Duration::MAX,
            ..RetryPolicy::default()
        };
        let mut budget = Budget::new(&endless);
        let wait = budget.after_failure("PUT part", status(429, Some(u64::MAX)));
        assert_eq!(wait.ok(), Some(MAX_RETRY_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_time_and_retry_after_beyond_budget() {
        // Retry-After far beyond the budget: give up at once, without sleeping an hour.
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_elapsed: Duration::from_secs(10),
            ..fast(100)
        };
        let out: ApiResult<()> = run(&policy, "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(429, Some(3600))) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Retry-After within budget is honoured: with paused time, the clock shows the wait.
        let t0 = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let out = run(&policy, "t", |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(status(429, Some(2)))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(out.is_ok());
        assert!(t0.elapsed() >= Duration::from_secs(2));

        // A server always failing, with long backoffs, stops once the budget is spent.
        let slow = RetryPolicy {
            max_attempts: 1000,
            max_elapsed: Duration::from_secs(20),
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(4),
        };
        let calls = AtomicU32::new(0);
        let out: ApiResult<()> = run(&slow, "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(503, None)) }
        })
        .await;
        assert!(matches!(out, Err(ApiError::RetriesExhausted { .. })));
        let n = calls.load(Ordering::SeqCst);
        assert!(n > 1 && n < 1000, "{n} attempts");
    }
}
