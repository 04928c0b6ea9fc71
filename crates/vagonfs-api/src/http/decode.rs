//! Response decoding shared by both planes: transport failures, bounded bodies, error answers,
//! `Retry-After`, `Content-Range` and the version validator.
//!
//! Subtle cases: a transport error never carries the URL (presigned signatures); a body is
//! refused beyond its bound before it is read whole; an error body is read only as a bounded
//! prefix; `Retry-After` may be delta-seconds or an HTTP-date (a past date is 0); a weak `ETag`
//! is no validator (it cannot be used with `If-Range`).

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use crate::api::model;
use crate::api::{ApiError, ApiResult};

/// The validator of an answer: its `ETag` if strong (a weak one cannot be used with
/// `If-Range`), else its `Last-Modified`.
pub(super) fn validator_of(headers: &HeaderMap) -> Option<String> {
    let get = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    get(header::ETAG)
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| get(header::LAST_MODIFIED))
}

/// `bytes a-b/total` (total may be `*`) → (a, b, total).
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (a <= b).then_some((a, b, total))
}

/// A reqwest failure as a typed error; the URL is stripped (presigned signatures).
pub(super) fn transport_error(label: &str, e: reqwest::Error, timeout: Duration) -> ApiError {
    let e = e.without_url();
    if e.is_timeout() {
        return ApiError::Timeout {
            endpoint: label.to_string(),
            secs: timeout.as_secs(),
        };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::Transport {
        endpoint: label.to_string(),
        detail: model::snippet(&detail, model::ERROR_MESSAGE_MAX_CHARS),
    }
}

/// Read a whole body, refusing more than `max` bytes.
pub(super) async fn read_bounded(
    mut resp: reqwest::Response,
    max: usize,
    label: &str,
    timeout: Duration,
) -> ApiResult<Bytes> {
    let too_big = || ApiError::Malformed {
        endpoint: label.to_string(),
        detail: format!("response body larger than {max} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(label, e, timeout))?
    {
        if buf.len() + chunk.len() > max {
            return Err(too_big());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// At most `max` bytes of a body, whatever happens (for error bodies: a snippet is enough).
pub(super) async fn read_prefix(mut resp: reqwest::Response, max: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(max - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    buf.freeze()
}

/// A non-2xx answer as [`ApiError::Status`].
pub(super) fn status_error(
    label: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiError {
    let parsed = model::error_body(body, model::ERROR_MESSAGE_MAX_CHARS);
    let message = if parsed.message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        parsed.message
    };
    ApiError::Status {
        endpoint: label.to_string(),
        status: status.as_u16(),
        client_code: parsed.client_code,
        message,
        retry_after: retry_after(headers),
    }
}

/// `Retry-After` as seconds from now: delta-seconds or an HTTP-date (a past date → 0).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(match when.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs() + u64::from(d.subsec_nanos() > 0),
        Err(_) => 0,
    })
}

/// Drop up to `skip` bytes from the front of `chunk`: the prefix before the range in a 200
/// answer to a ranged GET, spread over the first chunks.
pub(super) fn skip_prefix(chunk: &mut Bytes, skip: &mut u64) {
    if *skip > 0 {
        let drop = (*skip).min(chunk.len() as u64);
        *skip -= drop;
        *chunk = chunk.slice(drop as usize..);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiErrorKind;

    #[test]
    fn content_range_and_retry_after() {
        assert_eq!(
            parse_content_range("bytes 0-99/100"),
            Some((0, 99, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(3));
        let later = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let secs = retry_after(&h).unwrap();
        assert!((28..=31).contains(&secs), "{secs}");
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(0));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_error_keeps_code_and_snippet() {
        let h = HeaderMap::new();
        let e = status_error(
            "GET /files",
            StatusCode::FORBIDDEN,
            &h,
            br#"{"client_code": 4710, "message": "Permission required"}"#,
        );
        assert_eq!(e.kind(), ApiErrorKind::PermissionDenied);
        let long = "<html>".repeat(1000);
        match status_error(
            "GET /files",
            StatusCode::INTERNAL_SERVER_ERROR,
            &h,
            long.as_bytes(),
        ) {
            ApiError::Status {
                status: 500,
                client_code: None,
                message,
                ..
            } => {
                assert!(message.starts_with("<html>"));
                assert!(message.chars().count() <= model::ERROR_MESSAGE_MAX_CHARS + 1);
            }
            other => panic!("{other:?}"),
        }
        match status_error("GET /files", StatusCode::BAD_GATEWAY, &h, b"") {
            ApiError::Status { message, .. } => assert_eq!(message, "Bad Gateway"),
            other => panic!("{other:?}"),
        }
    }
}
