//! The wire to the Vagon Files API, behind one trait.
//!
//! [`FilesApi`] is everything the filesystem core needs from the storage: paginated listings,
//! create / upload parts / complete, delete, download links and the bytes behind them, capacity.
//! Its implementations:
//! - [`http::HttpFilesApi`]: the real client (reqwest, HMAC signing, retries, tolerant parsing);
//! - [`faulty::FaultyFilesApi`]: a wrapper that injects failures, for tests of the core;
//! - `mem::MemApi` (tests and the `test-support` feature): the in-memory double with the
//!   emulator's rules, which tests wrap in `FaultyFilesApi` for faults;
//! - the emulator (`crate::emulator`), reached over loopback through `HttpFilesApi`.
//!
//! The types here are the *domain* view: plain Rust values, already validated. The serde shapes
//! of the wire (JSON:API wrapping, ids as strings or numbers, ...) live in [`model`] and never
//! leave this module.
//!
//! Subtle cases owned here: ids are global across storages (a file id alone addresses it for
//! delete, complete and download); names arriving from the server are *not* trusted here (the
//! core decides what to do with a name containing `/` or NUL); the data plane (presigned URLs)
//! goes through the same trait so that fault injection and retries cover it too.

// Every dependency in Cargo.toml is used (dev-dependencies only in tests).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod auth;
pub mod config;
pub mod error;
pub mod faulty;
pub mod http;
#[cfg(any(test, feature = "test-support"))]
pub mod mem;
pub mod metered;
pub mod model;
pub mod name;
pub mod paging;
pub mod retry;

// Inside this crate `crate::api::…` names what `vagonfs::api::…` names in the binary, so the
// modules (their tests and doc links) read the same wherever they are used from.
#[allow(unused_imports)]
use crate as api;

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::{ApiError, ApiErrorKind};

/// Result of every API call.
pub type ApiResult<T> = Result<T, ApiError>;

/// The API's path prefix; part of the signed path.
pub const API_PREFIX: &str = "/organization-management/v1";

/// The largest page the API serves (the emulator caps `per_page` at this, like the service).
pub const MAX_PER_PAGE: u32 = 100;

/// Which storage tree a listing or a create addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// The organization's shared storage (`GET /files`).
    Shared,
    /// One machine's storage (`GET /machines/{id}/files`; `machine_id` on create).
    Machine(u64),
    /// Session recordings, read-only (`GET /files/session-recordings`), optionally filtered.
    Recordings { machine: Option<u64> },
}

impl Space {
    /// The `machine_id` to send on create / capacity, if any.
    pub fn machine_id(&self) -> Option<u64> {
        match self {
            Space::Machine(id) => Some(*id),
            Space::Recordings { machine } => *machine,
            Space::Shared => None,
        }
    }
}

/// Kind of a storage object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    File,
    Directory,
}

impl ObjectType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectType::File => "file",
            ObjectType::Directory => "directory",
        }
    }
}

/// One file or folder as listed by the server (after tolerant parsing; the name is raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub id: u64,
    pub name: String,
    pub object_type: ObjectType,
    /// Bytes; 0 for directories.
    pub size: u64,
    pub content_type: Option<String>,
    /// `last_modified_date`; `None` when the server left it out.
    pub modified: Option<SystemTime>,
    pub parent_id: Option<u64>,
}

/// The folder a listing was made in (`current` in the response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentFolder {
    pub id: u64,
    pub name: String,
    pub path: Option<String>,
    pub parent_id: Option<u64>,
}

/// A listing query. `parent_id` `None` (or 0) is the root of the space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub parent_id: Option<u64>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    pub search: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    pub entries: Vec<FileEntry>,
    pub current: Option<CurrentFolder>,
    /// Total items across all pages, when the server said.
    pub count: Option<u64>,
    pub page: u32,
    /// `None` on the last page.
    pub next_page: Option<u32>,
}

/// A machine of the organization (`GET /machines`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: u64,
    pub name: String,
    /// e.g. "ready", "off", "running", as the server says it.
    pub status: String,
}

/// One page of machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePage {
    pub machines: Vec<Machine>,
    pub count: Option<u64>,
    pub page: u32,
    pub next_page: Option<u32>,
}

/// `POST /files` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub space: Space,
    pub parent_id: Option<u64>,
    pub name: String,
    pub object_type: ObjectType,
    /// Required for files.
    pub content_type: Option<String>,
    /// Bytes; required for files.
    pub size: Option<u64>,
    /// MB (MiB in practice) per part.
    pub chunk_size_mb: Option<u64>,
    pub overwrite: bool,
}

impl CreateRequest {
    /// A request to create the folder `name` under `parent_id` (the space's root when `None`).
    pub fn directory(space: Space, parent_id: Option<u64>, name: impl Into<String>) -> Self {
        CreateRequest {
            space,
            parent_id,
            name: name.into(),
            object_type: ObjectType::Directory,
            content_type: None,
            size: None,
            chunk_size_mb: None,
            overwrite: false,
        }
    }
}

/// `POST /files` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: u64,
    pub uid: Option<String>,
    /// MB per part, as the server decided (files only).
    pub chunk_size_mb: Option<u64>,
    /// One presigned URL per part (files only).
    pub upload_urls: Vec<String>,
}

/// One uploaded part, for complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based.
    pub part_number: u32,
    /// As received in the part PUT's `ETag` header, quotes included.
    pub etag: String,
}

/// `POST /files/{id}/complete` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub uid: Option<String>,
    pub download_url: Option<String>,
}

/// What `POST /files/download` should package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadTarget {
    Files(Vec<u64>),
    Directory(u64),
}

/// A presigned link with what the server said of its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    pub url: String,
    pub size: Option<u64>,
    pub name: Option<String>,
    pub content_type: Option<String>,
}

/// `POST /files/download` answer: a link at once, or a job to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequested {
    pub url: Option<String>,
    pub download_id: Option<u64>,
    pub size: Option<u64>,
    pub name: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadState {
    Processing,
    Ready,
    Failed,
}

/// `GET /files/download/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadStatus {
    pub state: DownloadState,
    pub url: Option<String>,
    pub size: Option<u64>,
    pub name: Option<String>,
    pub content_type: Option<String>,
}

/// `GET /files/capacity` answer, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub total: u64,
    pub in_use: u64,
    pub team_total: Option<u64>,
    pub team_in_use: Option<u64>,
}

/// One entry of a running machine's live disk (`POST /machines/{id}/list-content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    pub path: String,
    pub name: String,
    pub is_directory: bool,
}

/// A stream of body chunks (a download).
pub type ByteStream = BoxStream<'static, ApiResult<Bytes>>;

/// The methods of [`FilesApi`], one value each: what faults are aimed at (`faulty`) and what
/// requests are counted by (`metered`, the metrics' `endpoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiMethod {
    ListMachines,
    ListFiles,
    Create,
    UploadPart,
    Complete,
    Delete,
    RequestDownload,
    DownloadStatus,
    FileLink,
    Capacity,
    ListContent,
    GetRange,
    GetStream,
}

impl ApiMethod {
    pub const ALL: [ApiMethod; 13] = [
        ApiMethod::ListMachines,
        ApiMethod::ListFiles,
        ApiMethod::Create,
        ApiMethod::UploadPart,
        ApiMethod::Complete,
        ApiMethod::Delete,
        ApiMethod::RequestDownload,
        ApiMethod::DownloadStatus,
        ApiMethod::FileLink,
        ApiMethod::Capacity,
        ApiMethod::ListContent,
        ApiMethod::GetRange,
        ApiMethod::GetStream,
    ];

    /// The trait method's name (also the metrics label value).
    pub fn name(self) -> &'static str {
        match self {
            ApiMethod::ListMachines => "list_machines",
            ApiMethod::ListFiles => "list_files",
            ApiMethod::Create => "create",
            ApiMethod::UploadPart => "upload_part",
            ApiMethod::Complete => "complete",
            ApiMethod::Delete => "delete",
            ApiMethod::RequestDownload => "request_download",
            ApiMethod::DownloadStatus => "download_status",
            ApiMethod::FileLink => "file_link",
            ApiMethod::Capacity => "capacity",
            ApiMethod::ListContent => "list_content",
            ApiMethod::GetRange => "get_range",
            ApiMethod::GetStream => "get_stream",
        }
    }

    /// Position in [`ApiMethod::ALL`], for per-method tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Everything vagonfs asks of the storage. Object-safe: used as `Arc<dyn FilesApi>`.
///
/// Every method is bounded in time by the implementation (timeouts, bounded retries); none may
/// hang forever.
#[async_trait]
pub trait FilesApi: Send + Sync + 'static {
    /// `GET /machines`, one page.
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage>;

    /// One page of a folder listing in `space`.
    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage>;

    /// `POST /files`: create a directory, or start a file's multipart upload.
    async fn create(&self, req: &CreateRequest) -> ApiResult<Created>;

    /// `PUT` one part to its presigned URL (no HMAC). Returns the `ETag` as received.
    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String>;

    /// `POST /files/{id}/complete`.
    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed>;

    /// `DELETE /files/{id}` (a directory with everything under it).
    async fn delete(&self, file_id: u64) -> ApiResult<()>;

    /// `POST /files/download`.
    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested>;

    /// `GET /files/download/{download_id}`.
    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus>;

    /// `GET /files/{id}/download`: one file's presigned link.
    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink>;

    /// `GET /files/capacity?machine_id=…`.
    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity>;

    /// `POST /machines/{id}/list-content`.
    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>>;

    /// `GET` a presigned download URL, bytes `range` (end exclusive) or the whole object.
    /// Returns exactly the bytes asked for, or an error (a short body is an error).
    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes>;

    /// `GET` a presigned download URL from `offset` to the end, as a stream.
    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream>;

    /// `GET` bytes `range` (end exclusive, non-empty) of a presigned download URL as a stream
    /// whose chunks add up to exactly the range (or end with an error), so a reader can use
    /// the first bytes before the last have come. Every byte comes from one version of the
    /// object: a cut body is resumed with `If-Range` on the version's validator (`ETag`, else
    /// `Last-Modified`), and `expect` (a validator seen before for the same object) must match
    /// the first answer's. A version that changed is [`ApiError::ObjectChanged`].
    ///
    /// The default takes the whole range with [`FilesApi::get_range`] and knows no validator.
    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        let _ = expect;
        let bytes = self.get_range(url, range).await?;
        Ok(RangeBody {
            validator: None,
            chunks: Box::pin(futures::stream::once(async move { Ok(bytes) })),
        })
    }
}

/// What [`FilesApi::get_range_stream`] answers.
pub struct RangeBody {
    /// The object version's validator (`ETag` or `Last-Modified`), when the server gave one.
    pub validator: Option<String>,
    /// The bytes of the range, in order.
    pub chunks: ByteStream,
}
