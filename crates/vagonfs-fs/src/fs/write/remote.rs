//! Where a lazily filled spool gets a remote file's old bytes.
//!
//! [`RemoteBytes`] is the one question a spool asks: "bytes `a..b` of the file you stand for".
//! The core may answer it from its own read path (block cache, link cache); [`ApiRemote`] is a
//! self-contained answer over [`FilesApi`]: it asks for the file's presigned link once, keeps it,
//! and asks again once when the link is refused (expired), so a long fill survives link expiry.
//! The link is a secret-bearing URL: it is never logged.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::api::{ApiErrorKind, ApiResult, FilesApi};

/// Ranged access to the remote bytes a spool was based on.
#[async_trait]
pub trait RemoteBytes: Send + Sync + 'static {
    /// Exactly the bytes of `range` (end exclusive), or an error.
    async fn fetch(&self, range: Range<u64>) -> ApiResult<Bytes>;
}

/// [`RemoteBytes`] over the API: `GET /files/{id}/download` for a link, ranged GETs on it.
pub struct ApiRemote {
    api: Arc<dyn FilesApi>,
    file_id: u64,
    link: Mutex<Option<String>>,
}

impl ApiRemote {
    pub fn new(api: Arc<dyn FilesApi>, file_id: u64) -> Arc<ApiRemote> {
        Arc::new(ApiRemote {
            api,
            file_id,
            link: Mutex::new(None),
        })
    }

    fn cached_link(&self) -> Option<String> {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn store_link(&self, link: Option<String>) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }

    async fn fresh_link(&self) -> ApiResult<String> {
        let link = self.api.file_link(self.file_id).await?.url;
        self.store_link(Some(link.clone()));
        Ok(link)
    }
}

#[async_trait]
impl RemoteBytes for ApiRemote {
    async fn fetch(&self, range: Range<u64>) -> ApiResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let (link, cached) = match self.cached_link() {
            Some(l) => (l, true),
            None => (self.fresh_link().await?, false),
        };
        match self.api.get_range(&link, range.clone()).await {
            Err(e) if e.kind() == ApiErrorKind::LinkRefused && cached => {
                tracing::debug!(
                    file_id = self.file_id,
                    "download link refused; asking for a new one"
                );
                let link = self.fresh_link().await?;
                self.api.get_range(&link, range).await
            }
            r => r,
        }
    }
}
