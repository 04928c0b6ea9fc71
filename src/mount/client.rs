//! The mount's API client: the HTTP client for some credentials, metered into the mount's
//! [`Metrics`] (every call, and the client's retries through its retry observer). Shared by
//! the real backend ([`super::backend`]) and the demo ([`super::demo`]).
//!
//! While the mount starts ([`StartupProgress`]), a retry is also a line for the user, so an
//! unreachable API is not silence: `cannot reach URL: connection refused (retrying, 3/8)…`.
//! Once the mount is up, retries are only counted (and logged at debug by the client).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::MountError;
use crate::api::ApiError;
use crate::api::FilesApi;
use crate::api::http::{ClientOptions, HttpFilesApi};
use crate::api::metered::{MeteredFilesApi, retry_observer};
use crate::api::retry::{DEFAULT_MAX_ATTEMPTS, RetryObserver};
use crate::config::Credentials;
use crate::daemon::metrics::Metrics;

/// The HTTP client for `creds`, metered into `metrics` (calls, and the client's retries);
/// while `startup` is active, each retry is also reported to the user as a progress line.
pub(super) fn connect(
    creds: Credentials,
    metrics: &Arc<Metrics>,
    startup: Option<StartupProgress>,
) -> Result<Arc<dyn FilesApi>, MountError> {
    let metered = retry_observer(metrics.clone());
    let on_retry = match startup {
        None => metered,
        Some(startup) => RetryObserver::new(move |err| {
            metered.notify(err);
            startup.retrying(err);
        }),
    };
    let options = ClientOptions {
        on_retry: Some(on_retry),
        ..ClientOptions::default()
    };
    let client = HttpFilesApi::new(creds, options)
        .map_err(|err| MountError::Credentials(err.to_string()))?;
    Ok(Arc::new(MeteredFilesApi::new(client, metrics.clone())))
}

/// Retries reported to the user while the mount starts (shared by every clone).
#[derive(Clone)]
pub struct StartupProgress {
    inner: Arc<StartupInner>,
}

struct StartupInner {
    url: String,
    active: AtomicBool,
    retries: AtomicU32,
}

impl StartupProgress {
    pub fn new(url: &str) -> Self {
        StartupProgress {
            inner: Arc::new(StartupInner {
                url: url.to_string(),
                active: AtomicBool::new(true),
                retries: AtomicU32::new(0),
            }),
        }
    }

    /// The mount is up (or gave up): retries are no longer the user's business.
    pub fn finish(&self) {
        self.inner.active.store(false, Ordering::Relaxed);
    }

    fn retrying(&self, err: &ApiError) {
        if !self.inner.active.load(Ordering::Relaxed) {
            return;
        }
        let n = self.inner.retries.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            "cannot reach {}: {} (retrying, {n}/{})…",
            self.inner.url,
            api_cause(err),
            DEFAULT_MAX_ATTEMPTS - 1
        );
    }
}

/// What went wrong with an API call, in a few words for a one-line message: `connection
/// refused`, `timed out after 30s`, `HTTP 401: bad signature` (the endpoint, the retries and
/// the transport layers are for the debug log).
pub fn api_cause(err: &ApiError) -> String {
    match err {
        ApiError::RetriesExhausted { last, .. } => api_cause(last),
        ApiError::Transport { detail, .. } => {
            let last = detail.rsplit(": ").next().unwrap_or(detail);
            plain(last)
        }
        ApiError::Timeout { secs, .. } => format!("timed out after {secs}s"),
        ApiError::Status {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        other => root_cause(other),
    }
}

/// `Connection refused (os error 111)` → `connection refused`.
fn plain(text: &str) -> String {
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The innermost cause of `err`, in words (`connection refused`, `dns error: …`), for a
/// one-line message; the whole chain is for the debug log.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    match plain(&last.to_string()) {
        text if text.is_empty() => err.to_string(),
        text => text,
    }
}

/// `err` and every error under it, joined by `: ` (for the debug log).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn root_cause_is_the_innermost_error_in_plain_words() {
        let err = Outer(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(root_cause(&err), "connection refused");
        let plain = std::io::Error::other("Timed out");
        assert_eq!(root_cause(&plain), "timed out");
    }

    #[test]
    fn api_causes_in_a_few_words() {
        let refused = ApiError::Transport {
            endpoint: "GET /files".into(),
            detail: "error sending request: client error (Connect): tcp connect error: \
                     Connection refused (os error 111)"
                .into(),
        };
        assert_eq!(api_cause(&refused), "connection refused");
        let exhausted = ApiError::RetriesExhausted {
            attempts: 8,
            last: Box::new(refused),
        };
        assert_eq!(api_cause(&exhausted), "connection refused");
        let timeout = ApiError::Timeout {
            endpoint: "GET /files".into(),
            secs: 30,
        };
        assert_eq!(api_cause(&timeout), "timed out after 30s");
    }
}
