//! [`MeteredFilesApi`]: a [`FilesApi`] wrapper that reports every call to an [`ApiObserver`]:
//! one request per call, its latency, its error, payload bytes up and down. The daemon's
//! `Metrics` is the observer of a mount (it implements the trait on its side, so `api` never
//! depends on `daemon`); its tests live with it, in `daemon/metrics/metered_tests.rs`.
//!
//! Subtle cases owned here:
//! - it sits *above* the client's retries, so one call is one request whatever the attempts
//!   (retries are reported by the client through [`retry_observer`]) and the latency is what
//!   the caller waited;
//! - `get_stream` is timed to the stream's opening; the bytes are counted as the caller pulls
//!   them, and an error in the middle of the body is counted as an error of that call (once);
//! - presigned URLs (`upload_part`, `get_range`, `get_stream`) are never recorded: only the
//!   endpoint name and an error message with its query strings redacted.
//! - bytes count payload only (part bodies, download bodies), not JSON bodies or headers;
//! - retries: each call (and each poll of a download stream) runs with its endpoint in a
//!   task-local, so the client's [`RetryObserver`] made by [`retry_observer`] knows which
//!   endpoint a retry belongs to; a retry outside any metered call is not counted.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use super::retry::RetryObserver;
use super::{
    ApiError, ApiErrorKind, ApiMethod as Endpoint, ApiResult, ByteStream, Capacity, Completed,
    CompletedPart, CreateRequest, Created, DownloadLink, DownloadRequested, DownloadStatus,
    DownloadTarget, FilePage, FilesApi, ListQuery, LiveEntry, MachinePage, RangeBody, Space,
};

/// Told of every metered call. Called on the task that made the call; must be quick.
pub trait ApiObserver: Send + Sync + 'static {
    /// One finished call: its latency, and its error if it failed.
    fn on_call(&self, method: Endpoint, elapsed: Duration, error: Option<&ApiError>);
    /// An error that surfaced after the call was counted (mid-way through a download stream).
    fn on_late_error(&self, method: Endpoint, error: &ApiError);
    /// Payload bytes sent to the storage (part bodies).
    fn on_bytes_up(&self, method: Endpoint, bytes: u64);
    /// Payload bytes received from the storage (download bodies).
    fn on_bytes_down(&self, method: Endpoint, bytes: u64);
    /// The client is about to retry a call to `method` after an error of kind `cause`.
    fn on_retry(&self, method: Endpoint, cause: ApiErrorKind);
}

tokio::task_local! {
    /// The endpoint of the metered call running on this task.
    static CURRENT_ENDPOINT: Endpoint;
}

/// Runs `fut` as a call to `endpoint` (for [`retry_observer`]).
async fn scoped<F: std::future::Future>(endpoint: Endpoint, fut: F) -> F::Output {
    CURRENT_ENDPOINT.scope(endpoint, fut).await
}

/// The observer to give the HTTP client (`ClientOptions::on_retry`) so that its retries are
/// reported to `observer` under the endpoint of the metered call that made them.
pub fn retry_observer(observer: Arc<dyn ApiObserver>) -> RetryObserver {
    RetryObserver::new(move |err| {
        if let Ok(endpoint) = CURRENT_ENDPOINT.try_with(|e| *e) {
            observer.on_retry(endpoint, err.kind());
        }
    })
}

/// Counts every call of the wrapped API. `A` may be unsized (`dyn FilesApi`).
pub struct MeteredFilesApi<A: FilesApi + ?Sized> {
    inner: Arc<A>,
    observer: Arc<dyn ApiObserver>,
}

impl<A: FilesApi> MeteredFilesApi<A> {
    pub fn new(inner: A, observer: Arc<dyn ApiObserver>) -> Self {
        MeteredFilesApi {
            inner: Arc::new(inner),
            observer,
        }
    }
}

impl<A: FilesApi + ?Sized> MeteredFilesApi<A> {
    /// Wraps an API already shared (e.g. `Arc<dyn FilesApi>`).
    pub fn from_arc(inner: Arc<A>, observer: Arc<dyn ApiObserver>) -> Self {
        MeteredFilesApi { inner, observer }
    }

    /// Records one finished call and hands its result back.
    fn record<T>(
        &self,
        endpoint: Endpoint,
        started: Instant,
        result: ApiResult<T>,
    ) -> ApiResult<T> {
        self.observer
            .on_call(endpoint, started.elapsed(), result.as_ref().err());
        result
    }
}

#[async_trait]
impl<A: FilesApi + ?Sized> FilesApi for MeteredFilesApi<A> {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        let t = Instant::now();
        let r = scoped(
            Endpoint::ListMachines,
            self.inner.list_machines(page, per_page),
        )
        .await;
        self.record(Endpoint::ListMachines, t, r)
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let t = Instant::now();
        let r = scoped(Endpoint::ListFiles, self.inner.list_files(space, query)).await;
        self.record(Endpoint::ListFiles, t, r)
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let t = Instant::now();
        let r = scoped(Endpoint::Create, self.inner.create(req)).await;
        self.record(Endpoint::Create, t, r)
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        let len = body.len() as u64;
        let t = Instant::now();
        let r = scoped(Endpoint::UploadPart, self.inner.upload_part(url, body)).await;
        if r.is_ok() {
            self.observer.on_bytes_up(Endpoint::UploadPart, len);
        }
        self.record(Endpoint::UploadPart, t, r)
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let t = Instant::now();
        let r = scoped(Endpoint::Complete, self.inner.complete(file_id, parts)).await;
        self.record(Endpoint::Complete, t, r)
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let t = Instant::now();
        let r = scoped(Endpoint::Delete, self.inner.delete(file_id)).await;
        self.record(Endpoint::Delete, t, r)
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        let t = Instant::now();
        let r = scoped(
            Endpoint::RequestDownload,
            self.inner.request_download(target),
        )
        .await;
        self.record(Endpoint::RequestDownload, t, r)
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        let t = Instant::now();
        let r = scoped(
            Endpoint::DownloadStatus,
            self.inner.download_status(download_id),
        )
        .await;
        self.record(Endpoint::DownloadStatus, t, r)
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        let t = Instant::now();
        let r = scoped(Endpoint::FileLink, self.inner.file_link(file_id)).await;
        self.record(Endpoint::FileLink, t, r)
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        let t = Instant::now();
        let r = scoped(Endpoint::Capacity, self.inner.capacity(machine_id)).await;
        self.record(Endpoint::Capacity, t, r)
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        let t = Instant::now();
        let r = scoped(
            Endpoint::ListContent,
            self.inner.list_content(machine_id, path),
        )
        .await;
        self.record(Endpoint::ListContent, t, r)
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        let t = Instant::now();
        let r = scoped(Endpoint::GetRange, self.inner.get_range(url, range)).await;
        if let Ok(bytes) = &r {
            self.observer
                .on_bytes_down(Endpoint::GetRange, bytes.len() as u64);
        }
        self.record(Endpoint::GetRange, t, r)
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let t = Instant::now();
        let r = scoped(Endpoint::GetStream, self.inner.get_stream(url, offset)).await;
        let stream = self.record(Endpoint::GetStream, t, r)?;
        let metered = MeteredStream {
            inner: stream,
            observer: self.observer.clone(),
            endpoint: Endpoint::GetStream,
            failed: false,
        };
        Ok(Box::pin(metered))
    }

    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        let t = Instant::now();
        let r = scoped(
            Endpoint::GetRange,
            self.inner.get_range_stream(url, range, expect),
        )
        .await;
        let body = self.record(Endpoint::GetRange, t, r)?;
        Ok(RangeBody {
            validator: body.validator,
            chunks: Box::pin(MeteredStream {
                inner: body.chunks,
                observer: self.observer.clone(),
                endpoint: Endpoint::GetRange,
                failed: false,
            }),
        })
    }
}

/// Counts a download stream's bytes as they are pulled, and its first error.
struct MeteredStream {
    inner: ByteStream,
    observer: Arc<dyn ApiObserver>,
    /// What the bytes and errors are counted under.
    endpoint: Endpoint,
    /// An error was already counted: a stream that keeps yielding errors is one failed call.
    failed: bool,
}

impl Stream for MeteredStream {
    type Item = ApiResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let endpoint = self.endpoint;
        let polled = CURRENT_ENDPOINT.sync_scope(endpoint, || self.inner.as_mut().poll_next(cx));
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                self.observer.on_bytes_down(endpoint, chunk.len() as u64);
            }
            Poll::Ready(Some(Err(e))) if !self.failed => {
                self.failed = true;
                self.observer.on_late_error(endpoint, e);
            }
            _ => {}
        }
        polled
    }
}
