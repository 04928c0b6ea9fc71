//! `MeteredFilesApi` reporting into [`Metrics`]: calls, errors, bytes, retries and the
//! recent-errors ring, as a mount wires them (`mount/backend.rs`).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::api::metered::{MeteredFilesApi, retry_observer};
use crate::api::retry::RetryObserver;
use crate::api::{ApiError, ApiErrorKind, DownloadState, ObjectType};
use crate::api::{
    ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi, ListQuery,
    LiveEntry, MachinePage, Space,
};

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
    let scripted = Arc::new(Scripted {
        fail_list: true,
        ..Default::default()
    });
    let api = MeteredFilesApi::from_arc(scripted.clone(), metrics.clone());
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

    assert_eq!(scripted.calls.lock().unwrap().len(), 3);
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
