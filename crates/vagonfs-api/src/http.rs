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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};

use super::model::{self, JsonObject, WireError};
use super::retry::{self, Attempt, Budget, RetryObserver, RetryPolicy};
use super::{
    API_PREFIX, ApiError, ApiErrorKind, ApiResult, ByteStream, Capacity, Completed, CompletedPart,
    CreateRequest, Created, DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget,
    FilePage, FilesApi, ListQuery, LiveEntry, MAX_PER_PAGE, MachinePage, ObjectType, RangeBody,
    Space,
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
/// Shortest per-attempt timeout, even when the retry budget is nearly spent.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Uploads remembered for the complete-after-unknown-outcome check; oldest forgotten beyond.
const MAX_REMEMBERED_UPLOADS: usize = 4096;

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

/// One control-plane request, ready to be sent (and re-sent) as is.
struct ApiCall {
    method: Method,
    /// Under the API prefix, e.g. `/files/42/complete`.
    path: String,
    query: Vec<(&'static str, String)>,
    /// Exact JSON bytes, signed and sent.
    body: Option<Bytes>,
    /// `METHOD /path`, for logs and errors.
    label: String,
    /// The answer's body is not used (delete): anything that is not a JSON object reads as `{}`.
    ignore_body: bool,
}

impl ApiCall {
    fn new(method: Method, path: String) -> Self {
        let label = format!("{method} {path}");
        ApiCall {
            method,
            path,
            query: Vec::new(),
            body: None,
            label,
            ignore_body: false,
        }
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    fn json(mut self, body: &impl serde::Serialize) -> ApiResult<Self> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ApiError::InvalidRequest(format!("cannot encode {}: {e}", self.label)))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
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
        let client = reqwest::Client::builder()
            .use_rustls_tls()
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

    /// The full URL of an API path (base URL path + API prefix + `path`) with its query.
    fn url(&self, call: &ApiCall) -> url::Url {
        let mut url = self.base.clone();
        let full = format!(
            "{}{API_PREFIX}{}",
            self.base.path().trim_end_matches('/'),
            call.path
        );
        url.set_path(&full);
        url.set_query(None);
        url.set_fragment(None);
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One signed attempt; the success body, parsed.
    async fn send_once(&self, call: &ApiCall, attempt: &Attempt) -> ApiResult<JsonObject> {
        let url = self.url(call);
        let body = call.body.clone().unwrap_or_default();
        let auth = super::auth::authorization(
            &self.creds.api_key,
            &self.creds.api_secret,
            call.method.as_str(),
            url.path(),
            &body,
        );
        let timeout = self
            .opts
            .request_timeout
            .min(attempt.remaining.max(MIN_ATTEMPT_TIMEOUT));
        let mut req = self
            .data
            .client
            .request(call.method.clone(), url)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .timeout(timeout);
        if call.body.is_some() {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        tracing::debug!(call = %call.label, attempt = attempt.number, "request");
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&call.label, e, timeout))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        tracing::debug!(call = %call.label, status = status.as_u16(), "response");
        if !status.is_success() {
            let body = read_prefix(resp, MAX_ERROR_BODY).await;
            return Err(status_error(&call.label, status, &headers, &body));
        }
        let bytes = read_bounded(resp, model::MAX_JSON_BODY, &call.label, timeout).await?;
        let obj = match model::parse_object(&bytes) {
            Ok(obj) => obj,
            Err(_) if call.ignore_body => JsonObject::new(),
            Err(e) => return Err(Self::malformed(&call.label, e)),
        };
        if let Some(err) = model::envelope_error(&obj) {
            let code = err.client_code.unwrap_or(i64::from(status.as_u16()));
            // A 3-digit error code is the status the server meant; a 4-digit one rides on 400.
            let meant = u16::try_from(code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .unwrap_or(400);
            return Err(ApiError::Status {
                endpoint: call.label.clone(),
                status: meant,
                client_code: err.client_code,
                message: err.message,
                retry_after: retry_after(&headers),
            });
        }
        Ok(obj)
    }

    /// A call with retries; the success body, parsed.
    async fn call(&self, call: &ApiCall) -> ApiResult<JsonObject> {
        let observer = self.opts.on_retry.as_ref();
        retry::run_observed(&self.opts.retry, observer, &call.label, |a| async move {
            self.send_once(call, &a).await
        })
        .await
    }

    /// A call with retries, and whether an attempt's outcome went unknown on the way.
    async fn call_tracking(&self, call: &ApiCall) -> (ApiResult<JsonObject>, bool) {
        let unknown = AtomicBool::new(false);
        let observer = self.opts.on_retry.as_ref();
        let result = retry::run_observed(&self.opts.retry, observer, &call.label, |a| {
            unknown.store(a.outcome_unknown, Ordering::Relaxed);
            async move { self.send_once(call, &a).await }
        })
        .await;
        (result, unknown.load(Ordering::Relaxed))
    }

    fn malformed(label: &str, e: WireError) -> ApiError {
        ApiError::Malformed {
            endpoint: label.to_string(),
            detail: e.0,
        }
    }

    fn decode<T>(label: &str, r: Result<T, WireError>) -> ApiResult<T> {
        r.map_err(|e| Self::malformed(label, e))
    }

    fn list_call(&self, space: Space, query: &ListQuery) -> ApiCall {
        let (path, machine_filter) = match space {
            Space::Shared => ("/files".to_string(), None),
            Space::Machine(id) => (format!("/machines/{id}/files"), None),
            Space::Recordings { machine } => (self.opts.recordings_path.clone(), machine),
        };
        let per_page = clamp_per_page(query.per_page);
        let mut call = ApiCall::new(Method::GET, path);
        if let Some(m) = machine_filter {
            call = call.query("machine_id", m);
        }
        if let Some(p) = query.parent_id {
            call = call.query("parent_id", p);
        }
        call = call
            .query("page", query.page.max(1))
            .query("per_page", per_page);
        if let Some(q) = query.search.as_deref().filter(|q| !q.is_empty()) {
            call = call.query("q", q);
        }
        call
    }

    /// The entry named exactly `name` of kind `kind` in a folder, by a search listing.
    async fn find_by_name(
        &self,
        space: Space,
        parent_id: Option<u64>,
        name: &str,
        kind: ObjectType,
    ) -> ApiResult<Option<super::FileEntry>> {
        super::paging::find_by_name(self, space, parent_id, name, Some(kind)).await
    }

    fn remember_upload(&self, id: u64, upload: PendingUpload) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.len() >= MAX_REMEMBERED_UPLOADS
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, u)| u.created)
                .map(|(k, _)| *k)
        {
            pending.remove(&oldest);
        }
        pending.insert(id, upload);
    }

    fn take_upload(&self, id: u64) -> Option<PendingUpload> {
        self.pending.lock().ok()?.remove(&id)
    }

    /// After a complete whose first outcome was lost answered 404/400: is the file there, whole?
    async fn completed_anyway(&self, file_id: u64, upload: Option<&PendingUpload>) -> bool {
        match upload {
            Some(u) => match self
                .find_by_name(u.space, u.parent_id, &u.name, ObjectType::File)
                .await
            {
                Ok(Some(e)) => e.id == file_id && e.size == u.size,
                _ => false,
            },
            None => self.file_link(file_id).await.is_ok(),
        }
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

// -------------------------------------------------------------------------------------------
// Data plane: presigned URLs
// -------------------------------------------------------------------------------------------

/// The presigned-URL side: cheap to clone (the reqwest client is shared), so a download stream
/// can own one.
#[derive(Clone)]
struct DataPlane {
    client: reqwest::Client,
    request_timeout: Duration,
    min_transfer_rate: u64,
    retry: RetryPolicy,
    on_retry: Option<RetryObserver>,
}

/// `per_page` as the API takes it: 1 to [`MAX_PER_PAGE`]; 0 means "as many as allowed".
fn clamp_per_page(per_page: u32) -> u32 {
    match per_page {
        0 => MAX_PER_PAGE,
        n => n.min(MAX_PER_PAGE),
    }
}

/// `METHOD presigned URL on HOST`: never the URL itself (its query is the signature).
fn link_label(method: &str, url: &url::Url) -> String {
    format!(
        "{method} presigned URL on {}",
        url.host_str().unwrap_or("?")
    )
}

fn parse_link(raw: &str) -> ApiResult<url::Url> {
    url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| ApiError::InvalidRequest("not an http(s) presigned URL".into()))
}

/// What a ranged GET brought, before the next attempt.
enum Opened {
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

impl DataPlane {
    fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / self.min_transfer_rate)
    }

    async fn upload_part(&self, raw_url: &str, body: Bytes) -> ApiResult<String> {
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
    async fn open(
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

    async fn get_range(&self, raw_url: &str, range: Range<u64>) -> ApiResult<Bytes> {
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
        let (mut resp, mut skip, object_end) = match self
            .open(url, label, from, Some(end), Some(timeout), None)
            .await?
        {
            Opened::Body {
                resp,
                skip,
                object_end,
                ..
            } => (resp, skip, object_end),
            Opened::AtEnd => {
                return Err(ApiError::Malformed {
                    endpoint: label.to_string(),
                    detail: format!("the object ends before byte {from}"),
                });
            }
        };
        if let Some(total) = object_end.filter(|t| *t < end) {
            return Err(ApiError::Malformed {
                endpoint: label.to_string(),
                detail: format!("asked bytes up to {end}, but the object has only {total}"),
            });
        }
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
            if skip > 0 {
                let drop = skip.min(chunk.len() as u64);
                skip -= drop;
                chunk = chunk.slice(drop as usize..);
            }
            let take = need.min(chunk.len() as u64) as usize;
            buf.extend_from_slice(&chunk[..take]);
            need -= take as u64;
        }
        Ok(())
    }

    async fn get_range_stream(
        &self,
        raw_url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        if range.start >= range.end {
            return Err(ApiError::InvalidRequest(format!("bad range {range:?}")));
        }
        let url = parse_link(raw_url)?;
        let label = link_label("GET", &url);
        let mut state = RangeState {
            plane: self.clone(),
            timeout: self.transfer_timeout(range.end - range.start),
            url,
            label,
            next: range.start,
            end: range.end,
            resp: None,
            validator: expect.map(str::to_string),
            budget: Budget::new(&self.retry).observed(self.on_retry.as_ref()),
            done: false,
        };
        // The first answer is awaited here, so that a refused link, a missing object or a
        // changed version is this call's error (the caller may replace the link and retry).
        let first = retry::run_observed(&self.retry, self.on_retry.as_ref(), &state.label, |_| {
            state.plane.open(
                &state.url,
                &state.label,
                state.next,
                Some(state.end),
                Some(state.timeout),
                state.validator.as_deref(),
            )
        })
        .await?;
        state.resp = Some(state.check(first)?);
        Ok(RangeBody {
            validator: state.validator.clone(),
            chunks: futures::stream::unfold(state, RangeState::step).boxed(),
        })
    }

    async fn get_stream(&self, raw_url: &str, offset: u64) -> ApiResult<ByteStream> {
        let url = parse_link(raw_url)?;
        let label = link_label("GET", &url);
        let opened = retry::run_observed(&self.retry, self.on_retry.as_ref(), &label, |_| {
            self.open(&url, &label, offset, None, None, None)
        })
        .await?;
        let state = StreamState {
            plane: self.clone(),
            url,
            label,
            next: offset,
            opened: Some(opened),
            object_end: None,
            budget: Budget::new(&self.retry).observed(self.on_retry.as_ref()),
            done: false,
        };
        Ok(futures::stream::unfold(state, StreamState::step).boxed())
    }
}

/// A ranged download handed out chunk by chunk, resumed where it was cut with `If-Range`.
struct RangeState {
    plane: DataPlane,
    url: url::Url,
    label: String,
    /// Offset of the next byte to hand out, and the end of the range (exclusive).
    next: u64,
    end: u64,
    /// The response being read: its body, and the bytes to drop first (a 200 answer).
    resp: Option<(reqwest::Response, u64)>,
    /// The version's validator: every resume must be of this version.
    validator: Option<String>,
    budget: Budget,
    timeout: Duration,
    done: bool,
}

impl RangeState {
    async fn step(mut self) -> Option<(ApiResult<Bytes>, Self)> {
        loop {
            if self.done || self.next >= self.end {
                return None;
            }
            let (mut resp, mut skip) = match self.resp.take() {
                Some(r) => r,
                None => {
                    let opened = self
                        .plane
                        .open(
                            &self.url,
                            &self.label,
                            self.next,
                            Some(self.end),
                            Some(self.timeout),
                            self.validator.as_deref(),
                        )
                        .await;
                    match opened.and_then(|o| self.check(o)) {
                        Ok(r) => r,
                        Err(e) => match self.failed(e).await {
                            Some(fatal) => return Some((Err(fatal), self)),
                            None => continue,
                        },
                    }
                }
            };
            let err = match resp.chunk().await {
                Ok(Some(mut chunk)) => {
                    if skip > 0 {
                        let drop = skip.min(chunk.len() as u64);
                        skip -= drop;
                        chunk = chunk.slice(drop as usize..);
                    }
                    let want = self.end - self.next;
                    if chunk.len() as u64 > want {
                        chunk.truncate(want as usize);
                    }
                    self.next += chunk.len() as u64;
                    if !chunk.is_empty() {
                        self.budget.made_progress();
                    }
                    if self.next < self.end {
                        self.resp = Some((resp, skip));
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    return Some((Ok(chunk), self));
                }
                Ok(None) => ApiError::Transport {
                    endpoint: self.label.clone(),
                    detail: format!("body ended {} bytes short", self.end - self.next),
                },
                Err(e) => transport_error(&self.label, e, self.timeout),
            };
            if let Some(fatal) = self.failed(err).await {
                return Some((Err(fatal), self));
            }
        }
    }

    /// Take what an attempt opened, checking that it is the version read so far.
    fn check(&mut self, opened: Opened) -> ApiResult<(reqwest::Response, u64)> {
        let Opened::Body {
            resp,
            skip,
            object_end,
            validator,
        } = opened
        else {
            return Err(ApiError::Malformed {
                endpoint: self.label.clone(),
                detail: format!("the object ends before byte {}", self.next),
            });
        };
        if let Some(total) = object_end.filter(|t| *t < self.end) {
            return Err(ApiError::Malformed {
                endpoint: self.label.clone(),
                detail: format!(
                    "asked bytes up to {}, but the object has only {total}",
                    self.end
                ),
            });
        }
        match (&self.validator, validator) {
            (Some(known), Some(now)) if *known != now => {
                return Err(ApiError::ObjectChanged {
                    endpoint: self.label.clone(),
                });
            }
            (None, now) => self.validator = now,
            _ => {}
        }
        Ok((resp, skip))
    }

    /// Count a failure; wait before resuming, or give the final error (and end the stream).
    async fn failed(&mut self, err: ApiError) -> Option<ApiError> {
        self.resp = None;
        if matches!(err, ApiError::ObjectChanged { .. }) {
            self.done = true;
            return Some(err);
        }
        match self.budget.after_failure(&self.label, err) {
            Ok(wait) => {
                tokio::time::sleep(wait).await;
                None
            }
            Err(fatal) => {
                self.done = true;
                Some(fatal)
            }
        }
    }
}

/// The validator of an answer: its `ETag` if strong (a weak one cannot be used with
/// `If-Range`), else its `Last-Modified`.
fn validator_of(headers: &HeaderMap) -> Option<String> {
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

/// A download stream that resumes where it was cut.
struct StreamState {
    plane: DataPlane,
    url: url::Url,
    label: String,
    /// Offset of the next byte to hand out.
    next: u64,
    opened: Option<Opened>,
    object_end: Option<u64>,
    budget: Budget,
    done: bool,
}

impl StreamState {
    async fn step(mut self) -> Option<(ApiResult<Bytes>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if self.object_end.is_some_and(|end| self.next >= end) {
                return None;
            }
            let opened = match self.opened.take() {
                Some(o) => o,
                None => match self
                    .plane
                    .open(&self.url, &self.label, self.next, None, None, None)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => match self.failed(e).await {
                        Some(fatal) => return Some((Err(fatal), self)),
                        None => continue,
                    },
                },
            };
            let (mut resp, mut skip) = match opened {
                Opened::AtEnd => return None,
                Opened::Body {
                    resp,
                    skip,
                    object_end,
                    ..
                } => {
                    if object_end.is_some() {
                        self.object_end = object_end;
                    }
                    (resp, skip)
                }
            };
            // Read until a non-empty chunk to hand out; keep the response for the next call.
            loop {
                match resp.chunk().await {
                    Ok(Some(mut chunk)) => {
                        if skip > 0 {
                            let drop = skip.min(chunk.len() as u64);
                            skip -= drop;
                            chunk = chunk.slice(drop as usize..);
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        self.next += chunk.len() as u64;
                        self.budget.made_progress();
                        self.opened = Some(Opened::Body {
                            resp,
                            skip,
                            object_end: self.object_end,
                            validator: None,
                        });
                        return Some((Ok(chunk), self));
                    }
                    Ok(None) => {
                        if self.object_end.is_some_and(|end| self.next < end) {
                            let err = ApiError::Transport {
                                endpoint: self.label.clone(),
                                detail: "body ended short".into(),
                            };
                            if let Some(fatal) = self.failed(err).await {
                                return Some((Err(fatal), self));
                            }
                            break;
                        }
                        return None;
                    }
                    Err(e) => {
                        let err = transport_error(&self.label, e, self.plane.request_timeout);
                        if let Some(fatal) = self.failed(err).await {
                            return Some((Err(fatal), self));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Count a failure; wait before resuming, or give the final error (and end the stream).
    async fn failed(&mut self, err: ApiError) -> Option<ApiError> {
        self.opened = None;
        match self.budget.after_failure(&self.label, err) {
            Ok(wait) => {
                tokio::time::sleep(wait).await;
                None
            }
            Err(fatal) => {
                self.done = true;
                Some(fatal)
            }
        }
    }
}

/// `bytes a-b/total` (total may be `*`) → (a, b, total).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
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

// -------------------------------------------------------------------------------------------
// Shared helpers
// -------------------------------------------------------------------------------------------

/// A reqwest failure as a typed error; the URL is stripped (presigned signatures).
fn transport_error(label: &str, e: reqwest::Error, timeout: Duration) -> ApiError {
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
async fn read_bounded(
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
async fn read_prefix(mut resp: reqwest::Response, max: usize) -> Bytes {
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
fn status_error(label: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
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
fn retry_after(headers: &HeaderMap) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(url: &str) -> HttpFilesApi {
        HttpFilesApi::new(
            Credentials::new(url, "k", "s").unwrap(),
            ClientOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn urls_keep_the_base_path_and_prefix() {
        let a = api("https://api.vagon.io");
        let call = ApiCall::new(Method::GET, "/files".into())
            .query("q", "a b&c")
            .query("page", 2);
        let u = a.url(&call);
        assert_eq!(u.path(), "/organization-management/v1/files");
        assert_eq!(u.query(), Some("q=a+b%26c&page=2"));
        let b = api("http://127.0.0.1:9/proxy/");
        assert_eq!(
            b.url(&call).path(),
            "/proxy/organization-management/v1/files"
        );
    }

    #[test]
    fn list_calls_by_space() {
        let a = api("https://h");
        let q = ListQuery {
            parent_id: Some(7),
            page: 0,
            per_page: 500,
            search: Some("x".into()),
        };
        let call = a.list_call(Space::Machine(3), &q);
        assert_eq!(call.path, "/machines/3/files");
        assert_eq!(
            call.query,
            vec![
                ("parent_id", "7".into()),
                ("page", "1".into()),
                ("per_page", "100".into()),
                ("q", "x".into())
            ]
        );
        let call = a.list_call(
            Space::Recordings { machine: Some(4) },
            &ListQuery::default(),
        );
        assert_eq!(call.path, DEFAULT_RECORDINGS_PATH);
        assert_eq!(call.query[0], ("machine_id", "4".to_string()));
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
