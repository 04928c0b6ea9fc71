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

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::reply::Failure;

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

/// A partial change of [`Faults`] (the admin endpoint's body): absent fields keep their value.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    pub fail_rate: Option<f64>,
    pub throttle_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub reset_rate: Option<f64>,
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
}

impl FaultSwitch {
    pub fn new(initial: Faults) -> Self {
        FaultSwitch {
            current: Mutex::new(initial),
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

    /// Change the given fields; returns the new settings.
    pub fn apply(&self, patch: FaultPatch) -> Result<Faults, FaultError> {
        let mut next = self.get();
        next.fail_rate = patch.fail_rate.unwrap_or(next.fail_rate);
        next.throttle_rate = patch.throttle_rate.unwrap_or(next.throttle_rate);
        next.latency_ms = patch.latency_ms.unwrap_or(next.latency_ms);
        next.reset_rate = patch.reset_rate.unwrap_or(next.reset_rate);
        self.set(next)?;
        Ok(next)
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

/// Middleware for API and data routes: latency, then 503 or 429 by chance.
pub async fn inject(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (latency, decision) = state.faults.decide();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match decision {
        Decision::Pass => next.run(req).await,
        Decision::Fail => Failure::unavailable().into_response(),
        Decision::Throttle => Failure::throttled().into_response(),
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
}
