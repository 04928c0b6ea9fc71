//! Response shapes shared by every endpoint: the success envelope, JSON:API resources, and the
//! error body.
//!
//! Every JSON answer carries `client_code` (200 on success), `message` ("OK") and `timestamp`
//! (ISO 8601, UTC, whole seconds, e.g. `2026-02-05T10:10:22Z`). Errors are a non-2xx status with
//! `{"client_code": <status>, "message": "...", "timestamp": "..."}`; a few statuses are not in
//! `http`'s table (450, 4710-style codes never go on the status line) and are built with
//! `StatusCode::from_u16`, which accepts any three-digit code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The `client_code` and status for "cannot delete a root folder" (Vagon's own code).
pub const STATUS_ROOT_FOLDER: u16 = 450;
/// Seconds a throttled client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// `2026-02-05T10:10:22Z` for a time in Unix milliseconds.
pub fn iso_from_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The three fields every answer carries.
#[derive(Debug, Serialize)]
pub struct Envelope {
    pub client_code: i64,
    pub message: String,
    pub timestamp: String,
}

impl Envelope {
    fn ok() -> Self {
        Envelope {
            client_code: 200,
            message: "OK".into(),
            timestamp: iso_from_ms(now_ms()),
        }
    }
}

#[derive(Serialize)]
struct WithEnvelope<T> {
    #[serde(flatten)]
    body: T,
    #[serde(flatten)]
    envelope: Envelope,
}

/// A 200 answer: `body`'s fields followed by the envelope.
pub fn ok<T: Serialize>(body: T) -> Response {
    Json(WithEnvelope {
        body,
        envelope: Envelope::ok(),
    })
    .into_response()
}

/// A 200 answer with only the envelope.
pub fn ok_empty() -> Response {
    Json(Envelope::ok()).into_response()
}

/// A JSON:API resource object: `{"id": "42", "type": "file", "attributes": {...}}`.
#[derive(Debug, Serialize)]
pub struct Resource<A> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub attributes: A,
}

impl<A> Resource<A> {
    pub fn new(id: u64, kind: &'static str, attributes: A) -> Self {
        Resource {
            id: id.to_string(),
            kind,
            attributes,
        }
    }
}

/// A non-2xx answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub message: String,
    /// `Retry-After` seconds, for 429.
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn unavailable() -> Self {
        Self::new(503, "service unavailable (injected fault)")
    }
    pub fn throttled() -> Self {
        Failure {
            status: 429,
            message: "too many requests (injected fault)".into(),
            retry_after: Some(RETRY_AFTER_SECS),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Envelope {
            client_code: i64::from(self.status),
            message: self.message,
            timestamp: iso_from_ms(now_ms()),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What every handler returns.
pub type Reply = Result<Response, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_is_whole_seconds_utc() {
        assert_eq!(iso_from_ms(1_770_286_222_999), "2026-02-05T10:10:22Z");
    }

    #[test]
    fn envelope_follows_body_fields() {
        #[derive(Serialize)]
        struct B {
            id: u64,
        }
        let v = serde_json::to_value(WithEnvelope {
            body: B { id: 7 },
            envelope: Envelope::ok(),
        })
        .unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["client_code"], 200);
        assert_eq!(v["message"], "OK");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
