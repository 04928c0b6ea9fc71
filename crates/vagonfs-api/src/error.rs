//! Errors of the API layer.
//!
//! [`ApiError`] keeps what the server said (HTTP status, `client_code`, `message`) so that logs
//! and `vagonfs status` can show it; [`ApiError::kind`] classifies it for the layers above
//! (retry decisions here, errno in `crate::fs::errno`). The classification is the one place that
//! knows the API's codes: 404 not found, 409 exists, 507 full, 401/403/4710 denied, 422 size
//! mismatch, 450 root folder, 429 throttled, 5xx unavailable.

/// The Vagon `client_code` for "permission required".
pub const CLIENT_CODE_PERMISSION: i64 = 4710;
/// The Vagon `client_code` / status for "cannot delete a root folder".
pub const CLIENT_CODE_ROOT_FOLDER: i64 = 450;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a non-success status.
    #[error("{endpoint}: HTTP {status}{}: {message}", client_code.map(|c| format!(" (client_code {c})")).unwrap_or_default())]
    Status {
        endpoint: String,
        status: u16,
        client_code: Option<i64>,
        message: String,
        /// `Retry-After`, seconds, when the server sent one.
        retry_after: Option<u64>,
    },
    /// A presigned URL was refused (expired or tampered): the caller should get a fresh link.
    #[error("presigned link refused with HTTP {status} (expired or invalid)")]
    LinkRefused { status: u16 },
    /// Connection refused/reset, body cut short, DNS, TLS.
    #[error("{endpoint}: connection error: {detail}")]
    Transport { endpoint: String, detail: String },
    /// No answer within the time allowed.
    #[error("{endpoint}: timed out after {secs}s")]
    Timeout { endpoint: String, secs: u64 },
    /// The server's answer could not be understood (bad JSON, wrong types, missing fields,
    /// a short body).
    #[error("{endpoint}: malformed response: {detail}")]
    Malformed { endpoint: String, detail: String },
    /// Bad arguments caught before sending (e.g. a part larger than allowed).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A background download job (zip) failed on the server.
    #[error("download {download_id} failed on the server")]
    DownloadFailed { download_id: u64 },
    /// A background download job did not become ready in time.
    #[error("download {download_id} not ready after {secs}s")]
    DownloadNotReady { download_id: u64, secs: u64 },
    /// The object behind a presigned URL is not the version that was being read (its
    /// validator changed, or a resumed range came back whole): that version is gone.
    #[error("{endpoint}: the object changed while it was read")]
    ObjectChanged { endpoint: String },
    /// Retries used up; the last error is kept.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: Box<ApiError> },
}

/// What an [`ApiError`] means, for retry and errno decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiErrorKind {
    NotFound,
    AlreadyExists,
    NoSpace,
    PermissionDenied,
    Unauthorized,
    BadRequest,
    SizeMismatch,
    RootFolder,
    LinkRefused,
    Throttled,
    Unavailable,
    Transport,
    Timeout,
    Malformed,
    InvalidRequest,
    DownloadFailed,
}

impl ApiError {
    pub fn kind(&self) -> ApiErrorKind {
        use ApiErrorKind as K;
        match self {
            ApiError::Status {
                status,
                client_code,
                ..
            } => match (*status, *client_code) {
                (_, Some(CLIENT_CODE_PERMISSION)) => K::PermissionDenied,
                (401, _) => K::Unauthorized,
                (403, _) => K::PermissionDenied,
                (404, _) => K::NotFound,
                (409, _) => K::AlreadyExists,
                (422, _) => K::SizeMismatch,
                (429, _) => K::Throttled,
                (450, _) | (_, Some(CLIENT_CODE_ROOT_FOLDER)) => K::RootFolder,
                (507, _) => K::NoSpace,
                (s, _) if s >= 500 => K::Unavailable,
                _ => K::BadRequest,
            },
            ApiError::LinkRefused { .. } => K::LinkRefused,
            ApiError::Transport { .. } => K::Transport,
            ApiError::Timeout { .. } => K::Timeout,
            ApiError::Malformed { .. } => K::Malformed,
            ApiError::InvalidRequest(_) => K::InvalidRequest,
            ApiError::DownloadFailed { .. } | ApiError::DownloadNotReady { .. } => {
                K::DownloadFailed
            }
            // The version asked for no longer exists, as far as the reader is concerned.
            ApiError::ObjectChanged { .. } => K::NotFound,
            ApiError::RetriesExhausted { last, .. } => last.kind(),
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ApiErrorKind::Throttled
                | ApiErrorKind::Unavailable
                | ApiErrorKind::Transport
                | ApiErrorKind::Timeout
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: Option<i64>) -> ApiError {
        ApiError::Status {
            endpoint: "GET /files".into(),
            status,
            client_code: code,
            message: "x".into(),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(status(404, Some(404)).kind(), ApiErrorKind::NotFound);
        assert_eq!(status(409, None).kind(), ApiErrorKind::AlreadyExists);
        assert_eq!(status(507, None).kind(), ApiErrorKind::NoSpace);
        assert_eq!(
            status(403, Some(4710)).kind(),
            ApiErrorKind::PermissionDenied
        );
        assert_eq!(
            status(400, Some(4710)).kind(),
            ApiErrorKind::PermissionDenied
        );
        assert_eq!(status(401, None).kind(), ApiErrorKind::Unauthorized);
        assert_eq!(status(503, None).kind(), ApiErrorKind::Unavailable);
        assert_eq!(status(429, None).kind(), ApiErrorKind::Throttled);
        assert_eq!(status(450, None).kind(), ApiErrorKind::RootFolder);
        assert!(status(503, None).is_retryable());
        assert!(!status(404, None).is_retryable());
        let wrapped = ApiError::RetriesExhausted {
            attempts: 3,
            last: Box::new(status(507, None)),
        };
        assert_eq!(wrapped.kind(), ApiErrorKind::NoSpace);
    }
}
