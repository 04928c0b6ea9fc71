//! [`MeteredFilesApi`]: a [`FilesApi`] wrapper that counts every call into the shared
//! [`Metrics`]: one request per call, its latency, its error kind, payload bytes up and down,
//! and failed calls into the recent-errors ring that `vagonfs status` shows.
//!
//! Subtle cases owned here:
//! - it sits *above* the client's retries, so one call is one request whatever the attempts
//!   (retries are counted by the client through [`Metrics::on_retry`]) and the latency is what
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
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use super::retry::RetryObserver;
use super::{
    ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi, ListQuery,
    LiveEntry, MachinePage, RangeBody, Space,
};
use crate::daemon::metrics::{Endpoint, Metrics};

tokio::task_local! {
    /// The endpoint of the metered call running on this task.
    static CURRENT_ENDPOINT: Endpoint;
}

/// Runs `fut` as a call to `endpoint` (for [`retry_observer`]).
async fn scoped<F: std::future::Future>(endpoint: Endpoint, fut: F) -> F::Output {
    CURRENT_ENDPOINT.scope(endpoint, fut).await
}

/// The observer to give the HTTP client (`ClientOptions::on_retry`) so that its retries are
/// counted in `metrics` under the endpoint of the metered call that made them.
pub fn retry_observer(metrics: Arc<Metrics>) -> RetryObserver {
    RetryObserver::new(move |err| {
        if let Ok(endpoint) = CURRENT_ENDPOINT.try_with(|e| *e) {
            metrics.on_retry(endpoint, err.kind());
        }
    })
}

/// Counts every call of the wrapped API. `A` may be unsized (`dyn FilesApi`).
pub struct MeteredFilesApi<A: FilesApi + ?Sized> {
    inner: Arc<A>,
    metrics: Arc<Metrics>,
}

impl<A: FilesApi> MeteredFilesApi<A> {
    pub fn new(inner: A, metrics: Arc<Metrics>) -> Self {
        MeteredFilesApi {
            inner: Arc::new(inner),
            metrics,
        }
    }
}

impl<A: FilesApi + ?Sized> MeteredFilesApi<A> {
    /// Wraps an API already shared (e.g. `Arc<dyn FilesApi>`).
    pub fn from_arc(inner: Arc<A>, metrics: Arc<Metrics>) -> Self {
        MeteredFilesApi { inner, metrics }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records one finished call and hands its result back.
    fn record<T>(
        &self,
        endpoint: Endpoint,
        started: Instant,
        result: ApiResult<T>,
    ) -> ApiResult<T> {
        let kind = result.as_ref().err().map(|e| e.kind());
        self.metrics
            .record_request(endpoint, started.elapsed(), kind);
        if let Err(e) = &result {
            self.metrics.push_error(endpoint.name(), &e.to_string());
        }
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
            self.metrics.add_bytes_up(Endpoint::UploadPart, len);
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
            self.metrics
                .add_bytes_down(Endpoint::GetRange, bytes.len() as u64);
        }
        self.record(Endpoint::GetRange, t, r)
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let t = Instant::now();
        let r = scoped(Endpoint::GetStream, self.inner.get_stream(url, offset)).await;
        let stream = self.record(Endpoint::GetStream, t, r)?;
        let metered = MeteredStream {
            inner: stream,
            metrics: self.metrics.clone(),
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
                metrics: self.metrics.clone(),
                endpoint: Endpoint::GetRange,
                failed: false,
            }),
        })
    }
}

/// Counts a download stream's bytes as they are pulled, and its first error.
struct MeteredStream {
    inner: ByteStream,
    metrics: Arc<Metrics>,
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
                self.metrics.add_bytes_down(endpoint, chunk.len() as u64);
            }
            Poll::Ready(Some(Err(e))) if !self.failed => {
                self.failed = true;
                self.metrics.record_error_kind(endpoint, e.kind());
                self.metrics.push_error(endpoint.name(), &e.to_string());
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::StreamExt;

    use super::*;
    use crate::api::{ApiError, ApiErrorKind, DownloadState, ObjectType};

    /// A scripted API: answers from fixed values, fails where told.
    #[derive(Default)]
    struct Scripted {
        fail_list: bool,
        calls: Mutex<Vec<&'static str>>,
        /// `capacity` goes through the retry loop with this observer, failing once with a 503.
        retry_observer: Option<RetryObserver>,
    }

    fn unavailable(endpoint: &str) -> ApiError {
        ApiError::Status {
            endpoint: endpoint.into(),
            status: 503,
            client_code: None,
            message: "down".into(),
            retry_after: None,
        }
    }

    #[async_trait]
    impl FilesApi for Scripted {
        async fn list_machines(&self, page: u32, _: u32) -> ApiResult<MachinePage> {
            self.calls.lock().unwrap().push("list_machines");
            Ok(MachinePage {
                machines: vec![],
                count: Some(0),
                page,
                next_page: None,
            })
        }
        async fn list_files(&self, _: Space, q: &ListQuery) -> ApiResult<FilePage> {
            self.calls.lock().unwrap().push("list_files");
            if self.fail_list {
                return Err(unavailable("GET /files"));
            }
            Ok(FilePage {
                entries: vec![],
                current: None,
                count: None,
                page: q.page,
                next_page: None,
            })
        }
        async fn create(&self, _: &CreateRequest) -> ApiResult<Created> {
            Ok(Created {
                id: 1,
                uid: None,
                chunk_size_mb: None,
                upload_urls: vec![],
            })
        }
        async fn upload_part(&self, _: &str, _: Bytes) -> ApiResult<String> {
            Ok("\"etag\"".into())
        }
        async fn complete(&self, _: u64, _: &[CompletedPart]) -> ApiResult<Completed> {
            Ok(Completed {
                uid: None,
                download_url: None,
            })
        }
        async fn delete(&self, id: u64) -> ApiResult<()> {
            Err(ApiError::Status {
                endpoint: format!("DELETE /files/{id}"),
                status: 404,
                client_code: Some(404),
                message: "not found".into(),
                retry_after: None,
            })
        }
        async fn request_download(&self, _: &DownloadTarget) -> ApiResult<DownloadRequested> {
            Ok(DownloadRequested {
                url: None,
                download_id: Some(1),
                size: None,
                name: None,
                content_type: None,
            })
        }
        async fn download_status(&self, _: u64) -> ApiResult<DownloadStatus> {
            Ok(DownloadStatus {
                state: DownloadState::Ready,
                url: None,
                size: None,
                name: None,
                content_type: None,
            })
        }
        async fn file_link(&self, _: u64) -> ApiResult<DownloadLink> {
            Ok(DownloadLink {
                url: "http://x/y?sig=1".into(),
                size: None,
                name: None,
                content_type: None,
            })
        }
        async fn capacity(&self, _: Option<u64>) -> ApiResult<Capacity> {
            let policy = crate::api::retry::RetryPolicy {
                initial_backoff: std::time::Duration::ZERO,
                ..Default::default()
            };
            let failed_once = std::sync::atomic::AtomicBool::new(false);
            let observer = self.retry_observer.as_ref();
            crate::api::retry::run_observed(&policy, observer, "GET /files/capacity", |_| {
                let first = !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if first {
                        return Err(unavailable("GET /files/capacity"));
                    }
                    Ok(Capacity {
                        total: 1,
                        in_use: 0,
                        team_total: None,
                        team_in_use: None,
                    })
                }
            })
            .await
        }
        async fn list_content(&self, _: u64, _: &str) -> ApiResult<Vec<LiveEntry>> {
            Ok(vec![])
        }
        async fn get_range(&self, _: &str, range: Range<u64>) -> ApiResult<Bytes> {
            Ok(Bytes::from(vec![0u8; (range.end - range.start) as usize]))
        }
        async fn get_stream(&self, url: &str, _: u64) -> ApiResult<ByteStream> {
            let chunks: Vec<ApiResult<Bytes>> = vec![
                Ok(Bytes::from_static(b"hello")),
                Ok(Bytes::from_static(b" world")),
                Err(ApiError::Transport {
                    endpoint: format!("GET {url}"),
                    detail: "reset".into(),
                }),
                Err(ApiError::Transport {
                    endpoint: "GET".into(),
                    detail: "again".into(),
                }),
            ];
            Ok(futures::stream::iter(chunks).boxed())
        }
    }

    #[tokio::test]
    async fn counts_calls_errors_and_bytes() {
        let metrics = Arc::new(Metrics::new());
        let api = MeteredFilesApi::new(
            Scripted {
                fail_list: true,
                ..Default::default()
            },
            metrics.clone(),
        );
        let q = ListQuery {
            page: 1,
            per_page: 10,
            ..Default::default()
        };
        assert!(api.list_files(Space::Shared, &q).await.is_err());
        assert!(api.list_files(Space::Shared, &q).await.is_err());
        api.list_machines(1, 10).await.unwrap();
        api.upload_part("http://h/p?sig=secret", Bytes::from_static(b"12345"))
            .await
            .unwrap();
        assert_eq!(
            api.get_range("http://h/p?sig=secret", 10..20)
                .await
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            api.delete(9).await.unwrap_err().kind(),
            ApiErrorKind::NotFound
        );
        let req = CreateRequest {
            space: Space::Shared,
            parent_id: None,
            name: "d".into(),
            object_type: ObjectType::Directory,
            content_type: None,
            size: None,
            chunk_size_mb: None,
            overwrite: false,
        };
        api.create(&req).await.unwrap();

        assert_eq!(api.inner.calls.lock().unwrap().len(), 3);
        assert_eq!(metrics.requests(Endpoint::ListFiles), 2);
        assert_eq!(
            metrics.errors(Endpoint::ListFiles, ApiErrorKind::Unavailable),
            2
        );
        assert_eq!(metrics.requests(Endpoint::ListMachines), 1);
        assert_eq!(metrics.errors_total(Endpoint::ListMachines), 0);
        assert_eq!(metrics.bytes_up(Endpoint::UploadPart), 5);
        assert_eq!(metrics.bytes_down(Endpoint::GetRange), 10);
        assert_eq!(metrics.errors(Endpoint::Delete, ApiErrorKind::NotFound), 1);
        assert_eq!(metrics.requests(Endpoint::Create), 1);
        assert_eq!(metrics.latency(Endpoint::ListFiles).count, 2);

        let errs = metrics.recent_errors();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].source, "list_files");
        assert!(errs[0].message.contains("HTTP 503"), "{}", errs[0].message);
        assert_eq!(errs[2].source, "delete");
    }

    #[tokio::test]
    async fn retries_are_counted_under_the_calling_endpoint() {
        let metrics = Arc::new(Metrics::new());
        let api = MeteredFilesApi::new(
            Scripted {
                retry_observer: Some(retry_observer(metrics.clone())),
                ..Default::default()
            },
            metrics.clone(),
        );
        api.capacity(None).await.unwrap();
        assert_eq!(metrics.retries_total(), 1);
        assert_eq!(metrics.requests(Endpoint::Capacity), 1);
        assert_eq!(metrics.errors_total(Endpoint::Capacity), 0);
        let page = metrics.render_prometheus();
        assert!(
            page.lines().any(|l| l.contains("retries")
                && l.contains("endpoint=\"capacity\"")
                && l.ends_with(" 1")),
            "{page}"
        );
        // Outside a metered call the observer has no endpoint: nothing is counted.
        let bare = Scripted {
            retry_observer: Some(retry_observer(metrics.clone())),
            ..Default::default()
        };
        bare.capacity(None).await.unwrap();
        assert_eq!(metrics.retries_total(), 1);
    }

    #[tokio::test]
    async fn stream_bytes_and_one_error_per_stream() {
        let metrics = Arc::new(Metrics::new());
        let shared: Arc<dyn FilesApi> = Arc::new(Scripted::default());
        let api = MeteredFilesApi::from_arc(shared, metrics.clone());
        let mut stream = api
            .get_stream("http://h/blob?X-Signature=topsecret", 0)
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut errors = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => errors += 1,
            }
        }
        assert_eq!(got, b"hello world");
        assert_eq!(errors, 2);
        assert_eq!(metrics.requests(Endpoint::GetStream), 1);
        assert_eq!(metrics.bytes_down(Endpoint::GetStream), 11);
        assert_eq!(
            metrics.errors(Endpoint::GetStream, ApiErrorKind::Transport),
            1
        );
        let errs = metrics.recent_errors();
        assert_eq!(errs.len(), 1);
        assert!(
            !errs[0].message.contains("topsecret"),
            "{}",
            errs[0].message
        );
    }
}
