//! Fault injection, for testing clients against an unreliable service.
//!
//! - `fail_rate`: share of API and data requests answered 503 (JSON error body);
//! - `throttle_rate`: share answered 429 with `Retry-After: 1`;
//! - `latency_ms`: added before each API and data request is handled;
//! - `reset_rate`: share of data transfers whose connection is dropped mid-body: a download
//!   sends about half its bytes then the stream errors (hyper aborts the connection); an upload
//!   reads about half the part, then the connection is closed without an answer.
//!
//! All start at 0 (off). They are set on the command line and changed at runtime, in process
//! ([`FaultSwitch::set`]) or through `POST /_emulator/faults`. Test hooks under `/_emulator/`
//! are never faulted. Faults are decided before authentication, as a load balancer would.
//!
//! Besides rates, exact faults can be scheduled for the next requests of one endpoint family
//! ([`Scheduled`], `POST /_emulator/faults` with `{"schedule": [...]}`), for tests that need one
//! precise answer rather than a chance of it:
//! - `throttle`: answered 429 with the given `Retry-After` value sent verbatim (a huge number,
//!   a negative one, garbage: what a hostile or broken server might send);
//! - `drop_answer`: the request is handled (its effect is stored), then the connection is
//!   dropped without an answer, so the client cannot know the outcome (a `complete` that
//!   "timed out" although the server finished);
//! - `status`: answered with the given HTTP `status` (an error envelope) without being
//!   handled, e.g. the 404 a real server may give a retried `complete` it already carried out
//!   (the emulator itself answers that retry with the file).
//!
//! A scheduled fault wins over the rates; several for one family are used in the order given.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::reply::Failure;
use super::stats::FAMILIES;
use super::{AppState, ConnectionKill};

/// The fault rates in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    pub fail_rate: f64,
    pub throttle_rate: f64,
    pub latency_ms: u64,
    pub reset_rate: f64,
}

/// A fault setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("{name} must be between 0 and 1, got {rate}")]
    RateOutOfRange { name: &'static str, rate: f64 },
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0} is not between 0 and 1")]
    NotARate(f64),
    #[error("{0:?} is not an endpoint family (one of {FAMILIES:?})")]
    UnknownFamily(String),
    #[error("a throttle needs a retry_after that is a valid header value, got {0:?}")]
    BadRetryAfter(Option<String>),
    #[error("a status fault needs a status between 400 and 599, got {0:?}")]
    BadStatus(Option<u16>),
}

/// `--fail-rate` and friends: a number in `[0, 1]`.
pub fn parse_rate(s: &str) -> Result<f64, FaultError> {
    let rate: f64 = s.parse().map_err(|_| FaultError::NotANumber(s.into()))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(FaultError::NotARate(rate))
    }
}

impl Faults {
    /// Rates must be in `[0, 1]`.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("throttle_rate", self.throttle_rate),
            ("reset_rate", self.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultError::RateOutOfRange { name, rate });
            }
        }
        Ok(())
    }
}

/// A partial change of [`Faults`] (the admin endpoint's body): absent fields keep their value;
/// `schedule` adds faults for the next requests of a family.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    pub fail_rate: Option<f64>,
    pub throttle_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub reset_rate: Option<f64>,
    pub schedule: Option<Vec<Scheduled>>,
}

/// What a scheduled fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduledKind {
    /// 429 with `retry_after` as the `Retry-After` header, verbatim.
    Throttle,
    /// Handle the request, then drop the connection without answering.
    DropAnswer,
    /// Answer `status` without handling the request.
    Status,
}

/// A fault for the next `count` requests of endpoint family `family` (a stats family:
/// `list_files`, `create`, `complete`, `data_put`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduled {
    pub family: String,
    #[serde(default = "one")]
    pub count: u32,
    pub fault: ScheduledKind,
    #[serde(default)]
    pub retry_after: Option<String>,
    /// The status a `status` fault answers (400..=599).
    #[serde(default)]
    pub status: Option<u16>,
}

fn one() -> u32 {
    1
}

impl Scheduled {
    fn validate(&self) -> Result<(), FaultError> {
        if !FAMILIES.contains(&self.family.as_str()) {
            return Err(FaultError::UnknownFamily(self.family.clone()));
        }
        if self.fault == ScheduledKind::Throttle
            && self
                .retry_after
                .as_deref()
                .is_none_or(|v| HeaderValue::from_str(v).is_err())
        {
            return Err(FaultError::BadRetryAfter(self.retry_after.clone()));
        }
        if self.fault == ScheduledKind::Status
            && !self.status.is_some_and(|s| (400..=599).contains(&s))
        {
            return Err(FaultError::BadStatus(self.status));
        }
        Ok(())
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Pass,
    Fail,
    Throttle,
}

/// The runtime-adjustable fault settings.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    current: Mutex<Faults>,
    /// Scheduled faults not used up yet, in the order given.
    scheduled: Mutex<Vec<Scheduled>>,
}

impl FaultSwitch {
    pub fn new(initial: Faults) -> Self {
        FaultSwitch {
            current: Mutex::new(initial),
            scheduled: Mutex::new(Vec::new()),
        }
    }

    pub fn get(&self) -> Faults {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace the settings; refused (unchanged) when a rate is out of range.
    pub fn set(&self, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        Ok(())
    }

    /// Change the given fields and add the scheduled faults; returns the new settings.
    /// Nothing changes when any part is invalid.
    pub fn apply(&self, patch: FaultPatch) -> Result<Faults, FaultError> {
        let mut next = self.get();
        next.fail_rate = patch.fail_rate.unwrap_or(next.fail_rate);
        next.throttle_rate = patch.throttle_rate.unwrap_or(next.throttle_rate);
        next.latency_ms = patch.latency_ms.unwrap_or(next.latency_ms);
        next.reset_rate = patch.reset_rate.unwrap_or(next.reset_rate);
        let schedule = patch.schedule.unwrap_or_default();
        for s in &schedule {
            s.validate()?;
        }
        self.set(next)?;
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(schedule.into_iter().filter(|s| s.count > 0));
        Ok(next)
    }

    /// The scheduled fault for this request of `family`, if one is left (used up by this).
    fn take_scheduled(&self, family: &str) -> Option<Scheduled> {
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|p| p.into_inner());
        let at = scheduled.iter().position(|s| s.family == family)?;
        let s = &mut scheduled[at];
        s.count -= 1;
        let taken = s.clone();
        if s.count == 0 {
            scheduled.remove(at);
        }
        Some(taken)
    }

    fn decide(&self) -> (Duration, Decision) {
        let f = self.get();
        let mut rng = rand::rng();
        let decision = if rng.random_bool(f.fail_rate) {
            Decision::Fail
        } else if rng.random_bool(f.throttle_rate) {
            Decision::Throttle
        } else {
            Decision::Pass
        };
        (Duration::from_millis(f.latency_ms), decision)
    }

    /// Whether this data transfer should have its connection dropped.
    pub fn roll_reset(&self) -> bool {
        rand::rng().random_bool(self.get().reset_rate)
    }
}

/// Middleware for API and data routes: latency, then a scheduled fault, or 503 or 429 by
/// chance.
pub async fn inject(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (latency, decision) = state.faults.decide();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let family = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| state.stats.family(req.method(), route.as_str()));
    if let Some(s) = family.and_then(|f| state.faults.take_scheduled(f)) {
        tracing::info!(family = s.family, fault = ?s.fault, "scheduled fault");
        return match s.fault {
            ScheduledKind::Throttle => {
                let mut response = Failure::throttled().into_response();
                if let Some(value) = s
                    .retry_after
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            ScheduledKind::Status => {
                let status = s.status.unwrap_or(500);
                Failure::new(status, format!("injected {status}")).into_response()
            }
            ScheduledKind::DropAnswer => {
                let kill = req.extensions().get::<ConnectionKill>().cloned();
                let answer = next.run(req).await;
                tracing::info!(status = %answer.status(), "scheduled fault: answer dropped");
                drop(answer);
                reset_connection(kill).await
            }
        };
    }
    match decision {
        Decision::Pass => next.run(req).await,
        Decision::Fail => Failure::unavailable().into_response(),
        Decision::Throttle => Failure::throttled().into_response(),
    }
}

/// Drop the connection carrying this request (an injected reset) and never answer.
pub async fn reset_connection(req_kill: Option<ConnectionKill>) -> Response {
    match req_kill {
        Some(kill) => {
            kill.0.cancel();
            // The connection task drops this future once it sees the cancellation.
            std::future::pending::<Response>().await
        }
        // Not served by our accept loop (no kill switch): the closest thing is an error.
        None => Failure::internal("connection reset (injected)").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated_and_patched() {
        let s = FaultSwitch::default();
        assert!(
            s.set(Faults {
                fail_rate: 1.5,
                ..Faults::default()
            })
            .is_err()
        );
        assert!(
            s.set(Faults {
                reset_rate: -0.1,
                ..Faults::default()
            })
            .is_err()
        );
        assert!(
            s.apply(FaultPatch {
                throttle_rate: Some(f64::NAN),
                ..FaultPatch::default()
            })
            .is_err()
        );
        let f = s
            .apply(FaultPatch {
                latency_ms: Some(5),
                ..FaultPatch::default()
            })
            .unwrap();
        assert_eq!(
            f,
            Faults {
                latency_ms: 5,
                ..Faults::default()
            }
        );
        let f = s
            .apply(FaultPatch {
                fail_rate: Some(1.0),
                ..FaultPatch::default()
            })
            .unwrap();
        assert_eq!(f.latency_ms, 5);
        assert_eq!(s.decide().1, Decision::Fail);
        s.set(Faults {
            throttle_rate: 1.0,
            ..Faults::default()
        })
        .unwrap();
        assert_eq!(s.decide().1, Decision::Throttle);
        s.set(Faults::default()).unwrap();
        assert_eq!(s.decide().1, Decision::Pass);
        assert!(!s.roll_reset());
    }

    #[test]
    fn scheduled_faults_are_validated_and_used_up_in_order() {
        let s = FaultSwitch::default();
        let sched = |family: &str, count, fault, retry_after: Option<&str>| Scheduled {
            family: family.into(),
            count,
            fault,
            retry_after: retry_after.map(String::from),
            status: (fault == ScheduledKind::Status).then_some(404),
        };
        let bad = [
            sched("nope", 1, ScheduledKind::DropAnswer, None),
            sched("list_files", 1, ScheduledKind::Throttle, None),
            sched("list_files", 1, ScheduledKind::Throttle, Some("a\nb")),
            Scheduled {
                status: Some(200),
                ..sched("complete", 1, ScheduledKind::Status, None)
            },
        ];
        for b in bad {
            let patch = FaultPatch {
                latency_ms: Some(7),
                schedule: Some(vec![b.clone()]),
                ..FaultPatch::default()
            };
            assert!(s.apply(patch).is_err(), "{b:?}");
        }
        // Nothing of a refused patch was applied.
        assert_eq!(s.get().latency_ms, 0);
        s.apply(FaultPatch {
            schedule: Some(vec![
                sched("list_files", 2, ScheduledKind::Throttle, Some("-5")),
                sched("complete", 1, ScheduledKind::DropAnswer, None),
                sched("list_files", 1, ScheduledKind::Throttle, Some("soon")),
            ]),
            ..FaultPatch::default()
        })
        .unwrap();
        let after = |f| s.take_scheduled(f).and_then(|x| x.retry_after);
        assert_eq!(after("list_files").as_deref(), Some("-5"));
        assert_eq!(after("list_files").as_deref(), Some("-5"));
        assert_eq!(after("list_files").as_deref(), Some("soon"));
        assert!(s.take_scheduled("list_files").is_none());
        assert_eq!(
            s.take_scheduled("complete").map(|x| x.fault),
            Some(ScheduledKind::DropAnswer)
        );
        assert!(s.take_scheduled("complete").is_none());
    }
}
