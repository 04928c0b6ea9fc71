//! [`HttpFilesApi`]: the real client of the Vagon Files API (reqwest + rustls).
//!
//! Control plane (every endpoint under `/organization-management/v1`): each attempt is signed
//! afresh ([`crate::api::auth`]: ms timestamp, new UUID nonce) over the request's full path as
//! sent (`Url::path()`, the base URL's own path included, no query) and over the exact body
//! bytes: a JSON body is serialized to bytes once, and those bytes are both signed and sent, on
//! every attempt. Answers are read with a size bound ([`model::MAX_JSON_BODY`]) and decoded
//! tolerantly by [`model`]; an error answer keeps HTTP status, `client_code` and `message` (a
//! non-JSON error body gives a bounded snippet of its text); a 2xx answer whose envelope carries
//! an error `client_code` (≥ 400) is treated as that error. `Retry-After` is read as seconds or
//! an HTTP-date.
//!
//! Data plane (presigned URLs: part PUTs, download GETs): no `Authorization` header; 401/403 →
//! [`ApiError::LinkRefused`] (the caller fetches a fresh link); a part's `ETag` is returned
//! exactly as received, quotes included, and a missing one is malformed. URLs never reach logs or
//! errors (their query holds the signature): errors name only the host.
//!
//! Ranged reads ([`FilesApi::get_range`]) return exactly the bytes asked or an error:
//! - 206 is expected; a `Content-Range` starting elsewhere is malformed; an object that ends
//!   before the range does (per `Content-Range`/`Content-Length`) is malformed, not short data;
//! - a 200 (server ignored `Range`) is sliced only when the range ends within
//!   [`FULL_BODY_SLICE_LIMIT`] (the discarded prefix is bounded), else it is an error;
//! - a body cut short mid-way is resumed at the first missing byte; an attempt that made progress
//!   does not count against the attempt bound (the time bound still holds).
//!
//! [`FilesApi::get_stream`] resumes the same way inside the stream. It has no total timeout (a
//! stream may be long), only the idle read timeout.
//!
//! Timeouts: connect timeout; each control request `min(request_timeout, time left in the retry
//! budget)`; transfers (part PUT, ranged GET) get `request_timeout + bytes / min_transfer_rate`;
//! every read also has an idle timeout of `request_timeout`.
//!
//! Retries and idempotency: see [`super::retry`]. This module holds the follow-ups: directory
//! create answering 409 after an unknown outcome → look the directory up by name; delete
//! answering 404 after one → success; complete answering 404/400 after one → check that the file
//! now exists (by listing its folder when this client created the upload, else by asking its
//! download link) with the declared size.
//!
//! The files here: this one holds the client, its options and the [`FilesApi`] endpoints with
//! their follow-ups; `control` sends a signed call with retries; `data` is the presigned data
//! plane; `stream` the resumable download streams; `decode` the response decoding both planes
//! share; `tls` builds every reqwest client of the process (crypto provider, verifier).

mod control;
mod data;
mod decode;
mod stream;
pub mod tls;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;

use self::control::{ApiCall, clamp_per_page};
use self::data::DataPlane;
use super::model;
use super::retry::{RetryObserver, RetryPolicy};
use super::{
    ApiError, ApiErrorKind, ApiResult, ByteStream, Capacity, Completed, CompletedPart,
    CreateRequest, Created, DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget,
    FilePage, FilesApi, ListQuery, LiveEntry, MachinePage, ObjectType, RangeBody, Space,
};
use crate::config::Credentials;

/// Default path (under the API prefix) of the session recordings listing (contract §2.4, ours).
pub const DEFAULT_RECORDINGS_PATH: &str = "/files/session-recordings";
/// Default path of the download status; `{id}` is replaced by the download id (§2.10, ours).
pub const DEFAULT_DOWNLOAD_STATUS_PATH: &str = "/files/download/{id}";
/// Default timeout of one control request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default slowest transfer tolerated before a part PUT / ranged GET times out (256 KiB/s).
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 256 * 1024;
/// A 200 answer to a ranged GET is sliced only when the range ends within this many bytes
/// (16 MiB): the bytes before the range are downloaded and thrown away.
pub const FULL_BODY_SLICE_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest range one `get_range` may ask for (1 GiB): it is held in memory.
pub const MAX_RANGE_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest error body read from a presigned URL (64 KiB); only a snippet is kept anyway.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How the client behaves. `Default` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Session recordings listing, under `/organization-management/v1`.
    pub recordings_path: String,
    /// Download status, under `/organization-management/v1`; must contain `{id}`.
    pub download_status_path: String,
    pub user_agent: String,
    /// Bytes per second: the slowest transfer tolerated (scales transfer timeouts).
    pub min_transfer_rate: u64,
    /// Told of every retry (the daemon counts them).
    pub on_retry: Option<RetryObserver>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            recordings_path: DEFAULT_RECORDINGS_PATH.to_string(),
            download_status_path: DEFAULT_DOWNLOAD_STATUS_PATH.to_string(),
            user_agent: format!("vagonfs/{}", env!("CARGO_PKG_VERSION")),
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            on_retry: None,
        }
    }
}

/// What this client remembers of an upload it started, to check a complete whose outcome was
/// lost.
#[derive(Debug, Clone)]
struct PendingUpload {
    space: Space,
    parent_id: Option<u64>,
    name: String,
    size: u64,
    created: std::time::Instant,
}

/// The HTTP client of the Vagon Files API.
pub struct HttpFilesApi {
    creds: Credentials,
    base: url::Url,
    opts: ClientOptions,
    data: DataPlane,
    pending: Mutex<HashMap<u64, PendingUpload>>,
}

impl std::fmt::Debug for HttpFilesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFilesApi")
            .field("api_url", &self.creds.api_url)
            .field("api_key", &self.creds.api_key)
            .finish_non_exhaustive()
    }
}

impl HttpFilesApi {
    pub fn new(creds: Credentials, opts: ClientOptions) -> ApiResult<Self> {
        let base = url::Url::parse(&creds.api_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| ApiError::InvalidRequest(format!("bad API URL {:?}", creds.api_url)))?;
        if !opts.recordings_path.starts_with('/') {
            return Err(ApiError::InvalidRequest(
                "the recordings path must start with '/'".into(),
            ));
        }
        if !opts.download_status_path.starts_with('/')
            || !opts.download_status_path.contains("{id}")
        {
            return Err(ApiError::InvalidRequest(
                "the download status path must start with '/' and contain {id}".into(),
            ));
        }
        if opts.min_transfer_rate == 0 {
            return Err(ApiError::InvalidRequest(
                "min_transfer_rate must be > 0".into(),
            ));
        }
        let client = tls::client_builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.request_timeout)
            .build()
            .map_err(|e| ApiError::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        let data = DataPlane {
            client,
            request_timeout: opts.request_timeout,
            min_transfer_rate: opts.min_transfer_rate,
            retry: opts.retry.clone(),
            on_retry: opts.on_retry.clone(),
        };
        Ok(HttpFilesApi {
            creds,
            base,
            opts,
            data,
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }
}

#[async_trait]
impl FilesApi for HttpFilesApi {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        let page = page.max(1);
        let call = ApiCall::new(Method::GET, "/machines".into())
            .query("page", page)
            .query("per_page", clamp_per_page(per_page));
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::machine_page(&answer, page))
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let call = self.list_call(space, query);
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::file_page(&answer, query.page.max(1)))
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        if matches!(req.space, Space::Recordings { .. }) {
            return Err(ApiError::InvalidRequest(
                "session recordings are read-only".into(),
            ));
        }
        if req.chunk_size_mb == Some(0) {
            return Err(ApiError::InvalidRequest(
                "chunk_size must be at least 1 MB".into(),
            ));
        }
        let (content_type, size) = match req.object_type {
            ObjectType::Directory => (None, None),
            ObjectType::File => {
                let size = req
                    .size
                    .ok_or_else(|| ApiError::InvalidRequest("a file needs a size".into()))?;
                let ct = req
                    .content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream");
                (Some(ct), Some(size))
            }
        };
        let body = model::CreateBody {
            file_name: &req.name,
            object_type: req.object_type.as_str(),
            content_type,
            size,
            chunk_size: if req.object_type == ObjectType::File {
                req.chunk_size_mb
            } else {
                None
            },
            overwrite: req.overwrite,
            parent_id: req.parent_id,
            machine_id: req.space.machine_id(),
        };
        let call = ApiCall::new(Method::POST, "/files".into()).json(&body)?;
        let (result, unknown) = self.call_tracking(&call).await;
        let answer = match result {
            Ok(obj) => obj,
            Err(e)
                if unknown
                    && req.object_type == ObjectType::Directory
                    && e.kind() == ApiErrorKind::AlreadyExists =>
            {
                // Our own earlier attempt most likely created it: find it and answer with it.
                match self
                    .find_by_name(req.space, req.parent_id, &req.name, ObjectType::Directory)
                    .await?
                {
                    Some(dir) => {
                        tracing::info!(
                            id = dir.id,
                            "directory create: earlier attempt had succeeded"
                        );
                        return Ok(Created {
                            id: dir.id,
                            uid: None,
                            chunk_size_mb: None,
                            upload_urls: Vec::new(),
                        });
                    }
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let created = Self::decode(
            &call.label,
            model::created(&answer, req.object_type, size, req.chunk_size_mb),
        )?;
        if let (ObjectType::File, Some(size)) = (req.object_type, size) {
            self.remember_upload(
                created.id,
                PendingUpload {
                    space: req.space,
                    parent_id: req.parent_id,
                    name: req.name.clone(),
                    size,
                    created: std::time::Instant::now(),
                },
            );
        }
        Ok(created)
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        self.data.upload_part(url, body).await
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let body = model::CompleteBody {
            parts: parts
                .iter()
                .map(|p| model::PartBody {
                    part_number: p.part_number,
                    etag: &p.etag,
                })
                .collect(),
        };
        let call = ApiCall::new(Method::POST, format!("/files/{file_id}/complete")).json(&body)?;
        let (result, unknown) = self.call_tracking(&call).await;
        let upload = self.take_upload(file_id);
        let err = match result {
            Ok(obj) => return Self::decode(&call.label, model::completed(&obj)),
            Err(e) => e,
        };
        if unknown
            && matches!(
                err.kind(),
                ApiErrorKind::NotFound | ApiErrorKind::BadRequest
            )
            && self.completed_anyway(file_id, upload.as_ref()).await
        {
            tracing::info!(file_id, "complete: earlier attempt had succeeded");
            return Ok(Completed {
                uid: None,
                download_url: None,
            });
        }
        // Keep it for a later retry of complete by the caller.
        if let Some(u) = upload {
            self.remember_upload(file_id, u);
        }
        Err(err)
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let mut call = ApiCall::new(Method::DELETE, format!("/files/{file_id}"));
        call.ignore_body = true;
        match self.call_tracking(&call).await {
            (Ok(_), _) => Ok(()),
            (Err(e), true) if e.kind() == ApiErrorKind::NotFound => {
                tracing::info!(file_id, "delete: earlier attempt had succeeded");
                Ok(())
            }
            (Err(e), _) => Err(e),
        }
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        let body = match target {
            DownloadTarget::Files(ids) if ids.is_empty() => {
                return Err(ApiError::InvalidRequest("no file to download".into()));
            }
            DownloadTarget::Files(ids) => model::DownloadBody::Files { file_ids: ids },
            DownloadTarget::Directory(id) => model::DownloadBody::Directory { directory_id: *id },
        };
        let call = ApiCall::new(Method::POST, "/files/download".into()).json(&body)?;
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::download_requested(&answer))
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        let path = self
            .opts
            .download_status_path
            .replace("{id}", &download_id.to_string());
        let call = ApiCall::new(Method::GET, path);
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::download_status(&answer))
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        let call = ApiCall::new(Method::GET, format!("/files/{file_id}/download"));
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::download_link(&answer))
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        let mut call = ApiCall::new(Method::GET, "/files/capacity".into());
        if let Some(m) = machine_id {
            call = call.query("machine_id", m);
        }
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::capacity(&answer))
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        let call = ApiCall::new(Method::POST, format!("/machines/{machine_id}/list-content"))
            .json(&model::ListContentBody { path })?;
        let answer = self.call(&call).await?;
        Self::decode(&call.label, model::live_entries(&answer))
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        self.data.get_range(url, range).await
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        self.data.get_stream(url, offset).await
    }

    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        self.data.get_range_stream(url, range, expect).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of `url` with the default options (the tests of `control` use it too).
    pub(super) fn api(url: &str) -> HttpFilesApi {
        HttpFilesApi::new(
            Credentials::new(url, "k", "s").unwrap(),
            ClientOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn options_are_checked() {
        let c = Credentials::new("https://h", "k", "s").unwrap();
        let bad = ClientOptions {
            download_status_path: "/downloads".into(),
            ..Default::default()
        };
        assert!(HttpFilesApi::new(c.clone(), bad).is_err());
        let bad = ClientOptions {
            recordings_path: "rec".into(),
            ..Default::default()
        };
        assert!(HttpFilesApi::new(c.clone(), bad).is_err());
        let bad = ClientOptions {
            min_transfer_rate: 0,
            ..Default::default()
        };
        assert!(HttpFilesApi::new(c, bad).is_err());
        let dbg = format!("{:?}", api("https://h"));
        assert!(!dbg.contains("\"s\""));
    }
}
