//! Whether the API answers: failures of interactive metadata requests remembered for a few
//! seconds, so a storm of lookups during an outage does not send (and wait on) a request each.
//! The changes a user waits on that are one request (rmdir, unlink) go through
//! [`Health::bounded`] too (mkdir answers at once, `new_folders.rs`, but fails at once here
//! while an outage is remembered): `rm -rf` of a folder on a frozen server fails within `--op-timeout`
//! and then at once, not after the client's 60 s budget per file.
//!
//! Only failures that say "the API cannot be reached" count ([`unreachable`]): connection
//! errors and timeouts (the client's, and [`FsConfig::op_timeout`](super::FsConfig) running
//! out). A 5xx or 429 after the client's retries is a server that answers, and a 404 or a 403
//! an answer: neither is remembered, the next caller asks again.
//!
//! Subtle cases handled here:
//! - after a failure, for [`FAILURE_MEMORY`] every caller that would have to *wait* on the API
//!   fails at once with the remembered error, and background revalidations are not started;
//!   the first caller after that window tries again (one probe), so recovery is noticed within
//!   a few seconds of the API coming back, with no remount;
//! - the outage start (`since`) is kept across the repeated failures of one outage, for
//!   `vagonfs status` ("API unreachable since …"), and cleared by the first success;
//! - "serving cached listing: API unreachable" is logged once per outage, not per lookup.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{ApiError, ApiErrorKind};

use super::{FsError, lock};

/// How long a failure is remembered: callers meanwhile fail (or serve cached data) at once.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(3);

/// Whether `err` says the API could not be reached (rather than answering no).
pub(crate) fn unreachable(err: &FsError) -> bool {
    match err {
        FsError::Api(e) => matches!(e.kind(), ApiErrorKind::Transport | ApiErrorKind::Timeout),
        _ => false,
    }
}

/// The error given when an operation ran out of `--op-timeout`.
pub(crate) fn op_timed_out(what: &str, limit: Duration) -> FsError {
    FsError::Api(ApiError::Transport {
        endpoint: what.to_string(),
        detail: format!("API unreachable: no answer within {limit:?} (--op-timeout)"),
    })
}

#[derive(Debug, Default)]
struct State {
    /// When the current outage began (wall clock, for `vagonfs status`), and when.
    since: Option<(SystemTime, Instant)>,
    /// The last failure and when it happened.
    last: Option<(Instant, FsError)>,
    /// "serving cached listing" was logged in this outage.
    logged_stale: bool,
}

/// The API's health as this mount saw it.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<State>,
}

impl Health {
    /// A request succeeded: the API answers.
    pub(crate) fn ok(&self) {
        let mut s = lock(&self.state);
        if let Some((_, at)) = s.since.take() {
            tracing::info!(
                down_for = ?at.elapsed(),
                "API reachable again"
            );
        }
        s.last = None;
        s.logged_stale = false;
    }

    /// A request failed with `err`; remembered when it says the API is unreachable.
    pub(crate) fn failed(&self, err: &FsError) {
        if !unreachable(err) {
            return;
        }
        let mut s = lock(&self.state);
        if s.since.is_none() {
            tracing::warn!("API unreachable: {err}");
            s.since = Some((SystemTime::now(), Instant::now()));
        }
        s.last = Some((Instant::now(), err.clone()));
    }

    /// The remembered failure, while it is recent: callers fail with it instead of asking.
    pub(crate) fn recent_failure(&self) -> Option<FsError> {
        let s = lock(&self.state);
        match &s.last {
            Some((at, err)) if at.elapsed() < FAILURE_MEMORY => Some(err.clone()),
            _ => None,
        }
    }

    /// Since when the API is unreachable, if it is.
    pub(crate) fn unreachable_since(&self) -> Option<SystemTime> {
        lock(&self.state).since.map(|(t, _)| t)
    }

    /// A wait on the API that a user's operation makes (a folder listing; the one request of
    /// rmdir, unlink): it fails at once while a failure is remembered (`call` is then
    /// never polled), and waits at most `limit` (then `op_timed_out`, remembered); a success
    /// clears the outage, an unreachable API is remembered. The call is dropped at the limit:
    /// a frozen server that acts on a dropped change later makes the change the user asked
    /// for, and the next listing shows it.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        if let Some(err) = self.recent_failure() {
            return Err(err);
        }
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => {
                self.ok();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Err(e)
            }
            Err(_) => {
                let e = op_timed_out(what, limit);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Log "serving cached listing" once per outage.
    pub(crate) fn serving_stale(&self) {
        let mut s = lock(&self.state);
        if s.since.is_some() && !s.logged_stale {
            s.logged_stale = true;
            tracing::warn!("serving cached listing: API unreachable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> FsError {
        FsError::Api(ApiError::Transport {
            endpoint: "GET /files".into(),
            detail: "connection refused".into(),
        })
    }

    #[test]
    fn outages_are_remembered_and_cleared() {
        let h = Health::default();
        assert!(h.recent_failure().is_none());
        h.failed(&FsError::NotFound);
        assert!(h.recent_failure().is_none(), "an answer is not an outage");
        h.failed(&down());
        let since = h.unreachable_since().expect("down");
        assert!(h.recent_failure().is_some());
        h.failed(&down());
        assert_eq!(h.unreachable_since(), Some(since), "same outage");
        h.ok();
        assert!(h.unreachable_since().is_none());
        assert!(h.recent_failure().is_none());
        assert!(unreachable(&op_timed_out(
            "listing",
            Duration::from_secs(5)
        )));
    }
}
