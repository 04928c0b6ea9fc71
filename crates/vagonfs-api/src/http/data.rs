//! The presigned data plane: part PUTs and download GETs on URLs the server signed.
//!
//! Subtle cases: no `Authorization` header, and 401/403 is [`ApiError::LinkRefused`] (the
//! caller fetches a fresh link); URLs never reach logs or errors (their query is the
//! signature: labels name the host only); a part's `ETag` is kept exactly, quotes included,
//! and a missing one is malformed; a 200 to a ranged GET is sliced only within
//! [`FULL_BODY_SLICE_LIMIT`]; a 2xx that is not 206 to an `If-Range` GET means the version
//! changed; a body cut short is resumed at the first missing byte, and progress does not
//! count against the attempt bound.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header;

use super::decode::{
    parse_content_range, read_prefix, skip_prefix, status_error, transport_error, validator_of,
};
use super::{FULL_BODY_SLICE_LIMIT, MAX_ERROR_BODY, MAX_RANGE_BYTES};
use crate::api::retry::{self, Budget, RetryObserver, RetryPolicy};
use crate::api::{ApiError, ApiResult};

/// The presigned-URL side: cheap to clone (the reqwest client is shared), so a download stream
/// can own one.
#[derive(Clone)]
pub(super) struct DataPlane {
    pub(super) client: reqwest::Client,
    pub(super) request_timeout: Duration,
    pub(super) min_transfer_rate: u64,
    pub(super) retry: RetryPolicy,
    pub(super) on_retry: Option<RetryObserver>,
}

/// `METHOD presigned URL on HOST`: never the URL itself (its query is the signature).
pub(super) fn link_label(method: &str, url: &url::Url) -> String {
    format!(
        "{method} presigned URL on {}",
        url.host_str().unwrap_or("?")
    )
}

pub(super) fn parse_link(raw: &str) -> ApiResult<url::Url> {
    url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| ApiError::InvalidRequest("not an http(s) presigned URL".into()))
}

/// What a ranged GET brought, before the next attempt.
pub(super) enum Opened {
    /// The body, from byte `from`; `skip` bytes to drop first (a 200 answer); `end` the object's
    /// size when the server said.
    Body {
        resp: reqwest::Response,
        skip: u64,
        object_end: Option<u64>,
        /// The version's `ETag` (else `Last-Modified`), when the server gave one.
        validator: Option<String>,
    },
    /// The object has no bytes at or after `from`.
    AtEnd,
}

impl Opened {
    /// The body of the range `[from, end)`, its bytes to drop first and its validator: the
    /// object must reach `end`.
    pub(super) fn into_range(
        self,
        label: &str,
        from: u64,
        end: u64,
    ) -> ApiResult<(reqwest::Response, u64, Option<String>)> {
        let malformed = |detail: String| ApiError::Malformed {
            endpoint: label.to_string(),
            detail,
        };
        match self {
            Opened::AtEnd => Err(malformed(format!("the object ends before byte {from}"))),
            Opened::Body {
                object_end: Some(total),
                ..
            } if total < end => Err(malformed(format!(
                "asked bytes up to {end}, but the object has only {total}"
            ))),
            Opened::Body {
                resp,
                skip,
                validator,
                ..
            } => Ok((resp, skip, validator)),
        }
    }
}

impl DataPlane {
    pub(super) fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / self.min_transfer_rate)
    }

    pub(super) async fn upload_part(&self, raw_url: &str, body: Bytes) -> ApiResult<String> {
        let url = parse_link(raw_url)?;
        let label = link_label("PUT", &url);
        let timeout = self.transfer_timeout(body.len() as u64);
        retry::run_observed(&self.retry, self.on_retry.as_ref(), &label, |_| {
            let req = self
                .client
                .put(url.clone())
                .body(body.clone())
                .timeout(timeout);
            let label = &label;
            async move {
                let resp = req
                    .send()
                    .await
                    .map_err(|e| transport_error(label, e, timeout))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(self.link_error(label, resp).await);
                }
                let etag = resp
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.trim().is_empty())
                    .map(str::to_string);
                // Drain the (usually empty) body so the connection can be reused.
                read_prefix(resp, MAX_ERROR_BODY).await;
                etag.ok_or_else(|| ApiError::Malformed {
                    endpoint: label.clone(),
                    detail: "part uploaded but the answer has no ETag".into(),
                })
            }
        })
        .await
    }

    /// The error for a non-2xx answer of a presigned URL.
    async fn link_error(&self, label: &str, resp: reqwest::Response) -> ApiError {
        let status = resp.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return ApiError::LinkRefused {
                status: status.as_u16(),
            };
        }
        let headers = resp.headers().clone();
        let body = read_prefix(resp, MAX_ERROR_BODY).await;
        status_error(label, status, &headers, &body)
    }

    /// One GET of the object from byte `from` (to `end`, exclusive, when given); with
    /// `if_range`, a ranged GET that the server must answer whole (200) if the object's
    /// validator is no longer that one.
    pub(super) async fn open(
        &self,
        url: &url::Url,
        label: &str,
        from: u64,
        end: Option<u64>,
        timeout: Option<Duration>,
        if_range: Option<&str>,
    ) -> ApiResult<Opened> {
        let mut req = self.client.get(url.clone());
        let ranged = match end {
            Some(end) => {
                req = req.header(header::RANGE, format!("bytes={from}-{}", end - 1));
                true
            }
            None if from > 0 => {
                req = req.header(header::RANGE, format!("bytes={from}-"));
                true
            }
            None => false,
        };
        if let (true, Some(v)) = (ranged, if_range) {
            req = req.header(header::IF_RANGE, v);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let shown = timeout.unwrap_or(self.request_timeout);
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(label, e, shown))?;
        let status = resp.status();
        let malformed = |detail: String| ApiError::Malformed {
            endpoint: label.to_string(),
            detail,
        };
        let validator = validator_of(resp.headers());
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(parse_content_range);
                let object_end = match cr {
                    Some(Some((start, _, total))) => {
                        if start != from {
                            return Err(malformed(format!(
                                "asked bytes from {from}, the server sent bytes from {start}"
                            )));
                        }
                        total
                    }
                    Some(None) => return Err(malformed("unreadable Content-Range".into())),
                    // Open-ended request: the body runs to the end of the object.
                    None if end.is_none() => resp.content_length().map(|n| from + n),
                    None => None,
                };
                Ok(Opened::Body {
                    resp,
                    skip: 0,
                    object_end,
                    validator,
                })
            }
            s if s.is_success() && ranged && if_range.is_some() => {
                // If-Range did not match: the object is another version now.
                drop(resp);
                Err(ApiError::ObjectChanged {
                    endpoint: label.to_string(),
                })
            }
            s if s.is_success() => {
                // The server ignored Range and sends the whole object: usable when it starts
                // where we want (from 0) or when the bytes to download and drop are few.
                let reach = end.unwrap_or(from);
                if from > 0 && reach > FULL_BODY_SLICE_LIMIT {
                    return Err(malformed(format!(
                        "the server ignored the Range header (HTTP {}) for bytes from {from}; \
                         refusing to download and drop {from} bytes",
                        s.as_u16()
                    )));
                }
                let object_end = resp.content_length();
                Ok(Opened::Body {
                    resp,
                    skip: from,
                    object_end,
                    validator,
                })
            }
            StatusCode::RANGE_NOT_SATISFIABLE if end.is_none() => Ok(Opened::AtEnd),
            _ => Err(self.link_error(label, resp).await),
        }
    }

    pub(super) async fn get_range(&self, raw_url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        if range.start > range.end {
            return Err(ApiError::InvalidRequest(format!("bad range {range:?}")));
        }
        let len = range.end - range.start;
        if len == 0 {
            return Ok(Bytes::new());
        }
        if len > MAX_RANGE_BYTES {
            return Err(ApiError::InvalidRequest(format!(
                "range of {len} bytes is too large"
            )));
        }
        let url = parse_link(raw_url)?;
        let label = link_label("GET", &url);
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut budget = Budget::new(&self.retry).observed(self.on_retry.as_ref());
        loop {
            let from = range.start + buf.len() as u64;
            let before = buf.len();
            let err = match self
                .read_range_into(&url, &label, from, range.end, &mut buf)
                .await
            {
                Ok(()) => return Ok(buf.freeze()),
                Err(e) => e,
            };
            if buf.len() > before {
                // A cut-short body: resume at the first missing byte.
                budget.made_progress();
            }
            let wait = budget.after_failure(&label, err)?;
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: append bytes `[from, end)` to `buf`. `Ok` only when all of them came.
    async fn read_range_into(
        &self,
        url: &url::Url,
        label: &str,
        from: u64,
        end: u64,
        buf: &mut BytesMut,
    ) -> ApiResult<()> {
        let timeout = self.transfer_timeout(end - from);
        let (mut resp, mut skip, _) = self
            .open(url, label, from, Some(end), Some(timeout), None)
            .await?
            .into_range(label, from, end)?;
        let mut need = end - from;
        while need > 0 {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(ApiError::Transport {
                        endpoint: label.to_string(),
                        detail: format!("body ended {need} bytes short"),
                    });
                }
                Err(e) => return Err(transport_error(label, e, timeout)),
            };
            let mut chunk = chunk;
            skip_prefix(&mut chunk, &mut skip);
            let take = need.min(chunk.len() as u64) as usize;
            buf.extend_from_slice(&chunk[..take]);
            need -= take as u64;
        }
        Ok(())
    }
}
