//! The HMAC check in front of every API route, exactly as the contract states it.
//!
//! `Authorization: HMAC {key}:{signature}:{nonce}:{timestamp}`; the signature is checked with
//! [`crate::api::auth::verify`] over the raw path (as sent, without the query) and the raw body
//! bytes, so what is verified is byte for byte what arrived. Every failure is 401 with
//! `{"client_code": 401, "message": ...}`; the checks, in order: header present and well formed,
//! known key, timestamp within [`MAX_SKEW_MS`] of now, signature, nonce not seen before.
//!
//! The nonce memory is bounded: a nonce is kept for twice the skew window (a timestamp may be up
//! to the window ahead, and is then accepted for up to the window after that), and at most
//! [`MAX_NONCES`] are kept; past that the oldest are forgotten, which could only let a replay
//! through if more than that many requests arrived within ten minutes. Nonces are recorded only
//! once the signature is valid, so unauthenticated traffic cannot flush the memory.
//!
//! API bodies are small JSON; one larger than [`MAX_API_BODY`] is refused with 413.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::reply::{Failure, now_ms};
use crate::api::auth::{parse_authorization, verify};

/// Largest accepted gap between a request's timestamp and the server clock (5 minutes).
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// How long a nonce is remembered: the whole span in which its timestamp is acceptable.
const NONCE_RETENTION_MS: i64 = 2 * MAX_SKEW_MS;
/// Most nonces remembered at once.
pub const MAX_NONCES: usize = 200_000;
/// Largest API request body (JSON), bytes.
pub const MAX_API_BODY: usize = 1024 * 1024;

/// The accepted credentials and the nonces already used.
pub struct Authenticator {
    api_key: String,
    api_secret: String,
    nonces: Mutex<NonceMemory>,
}

#[derive(Debug, Default)]
struct NonceMemory {
    seen: HashSet<String>,
    /// `(forget after, nonce)`, oldest first (insertion order; retention is constant, so the
    /// deadlines are non-decreasing).
    order: VecDeque<(i64, String)>,
}

impl NonceMemory {
    /// Record `nonce`; false if it was already there.
    fn insert(&mut self, nonce: &str, now: i64, capacity: usize) -> bool {
        while let Some((deadline, _)) = self.order.front() {
            if *deadline >= now && self.order.len() < capacity {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if !self.seen.insert(nonce.to_string()) {
            return false;
        }
        self.order
            .push_back((now + NONCE_RETENTION_MS, nonce.to_string()));
        true
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Authenticator {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            nonces: Mutex::new(NonceMemory::default()),
        }
    }

    /// Check one request; `Err` is the 401's reason.
    pub fn check(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let header = authorization
            .and_then(parse_authorization)
            .ok_or(AuthError::NoHeader)?;
        if header.api_key != self.api_key {
            return Err(AuthError::UnknownKey);
        }
        let now = now_ms();
        if header.timestamp_ms.abs_diff(now) > MAX_SKEW_MS.unsigned_abs() {
            return Err(AuthError::ClockSkew);
        }
        let valid = verify(&self.api_secret, method, path, body, &header);
        if !valid {
            return Err(AuthError::BadSignature);
        }
        let fresh = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                &format!("{}:{}", header.api_key, header.nonce),
                now,
                MAX_NONCES,
            );
        if !fresh {
            return Err(AuthError::NonceReused);
        }
        Ok(())
    }
}

/// Why a request is refused with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing or malformed Authorization header (expected HMAC key:signature:nonce:timestamp)"
    )]
    NoHeader,
    #[error("unknown API key")]
    UnknownKey,
    #[error("timestamp is more than 5 minutes away from the server clock (milliseconds expected)")]
    ClockSkew,
    #[error("invalid signature")]
    BadSignature,
    #[error("nonce already used")]
    NonceReused,
}

/// Middleware for API routes: buffer the body, verify, hand the same bytes on.
pub async fn require_hmac(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_API_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Failure::new(
                413,
                format!("request body larger than {MAX_API_BODY} bytes"),
            )
            .into_response();
        }
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(message) = state.auth.check(
        authorization,
        parts.method.as_str(),
        parts.uri.path(),
        &bytes,
    ) {
        tracing::debug!(path = parts.uri.path(), %message, "refused request");
        return Failure::unauthorized(message.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::sign;

    const PATH: &str = "/organization-management/v1/files";

    fn header(key: &str, secret: &str, ts: i64, nonce: &str, body: &[u8]) -> String {
        let sig = sign(key, secret, "POST", PATH, ts, nonce, body);
        format!("HMAC {key}:{sig}:{nonce}:{ts}")
    }

    #[test]
    fn checks_in_order() {
        let a = Authenticator::new("k", "s");
        let now = now_ms();
        let ok = header("k", "s", now, "n1", b"{}");
        assert_eq!(a.check(Some(&ok), "POST", PATH, b"{}"), Ok(()));
        assert_eq!(
            a.check(Some(&ok), "POST", PATH, b"{}"),
            Err(AuthError::NonceReused)
        );
        assert!(a.check(None, "POST", PATH, b"").is_err());
        let other_key = header("x", "s", now, "n2", b"{}");
        assert_eq!(
            a.check(Some(&other_key), "POST", PATH, b"{}"),
            Err(AuthError::UnknownKey)
        );
        let stale = header("k", "s", now - MAX_SKEW_MS - 1000, "n3", b"{}");
        assert_eq!(
            a.check(Some(&stale), "POST", PATH, b"{}"),
            Err(AuthError::ClockSkew)
        );
        for extreme in [i64::MIN, i64::MAX, 0] {
            let h = format!("HMAC k:00:n-extreme:{extreme}");
            assert_eq!(
                a.check(Some(&h), "POST", PATH, b"{}"),
                Err(AuthError::ClockSkew)
            );
        }
        let wrong = header("k", "bad", now, "n4", b"{}");
        assert_eq!(
            a.check(Some(&wrong), "POST", PATH, b"{}"),
            Err(AuthError::BadSignature)
        );
        // The body is part of what is signed.
        let signed = header("k", "s", now, "n5", b"{}");
        assert_eq!(
            a.check(Some(&signed), "POST", PATH, b"{ }"),
            Err(AuthError::BadSignature)
        );
        // A refused request does not burn its nonce.
        assert_eq!(a.check(Some(&signed), "POST", PATH, b"{}"), Ok(()));
    }

    #[test]
    fn nonce_memory_forgets_old_and_stays_bounded() {
        let mut m = NonceMemory::default();
        assert!(m.insert("a", 0, 10));
        assert!(!m.insert("a", 1, 10));
        // After the retention span, "a" is forgotten.
        assert!(m.insert("b", NONCE_RETENTION_MS + 1, 10));
        assert!(m.insert("a", NONCE_RETENTION_MS + 2, 10));
        for i in 0..50 {
            m.insert(&format!("n{i}"), NONCE_RETENTION_MS + 3, 10);
        }
        assert!(m.order.len() <= 10 && m.seen.len() == m.order.len());
    }
}
