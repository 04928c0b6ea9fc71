//! A scripted in-memory [`FilesApi`](crate::api::FilesApi) for unit tests of `faulty` and of
//! `paging`: pages, download statuses and a blob given in advance, calls recorded.

use std::collections::VecDeque;
use std::sync::Mutex;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::api::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadState, DownloadStatus, DownloadTarget, FilePage,
    FilesApi, ListQuery, LiveEntry, MachinePage, ObjectType, Space,
};

#[derive(Default)]
pub struct ScriptedApi {
    pages: Vec<FilePage>,
    statuses: Mutex<VecDeque<DownloadStatus>>,
    pub blob: Bytes,
    asked: Mutex<Vec<(u32, u32)>>,
    polls: Mutex<u32>,
    pub created: Mutex<Vec<String>>,
    pub deleted: Mutex<Vec<u64>>,
}

fn not_found(what: &str) -> ApiError {
    ApiError::Status {
        endpoint: what.to_string(),
        status: 404,
        client_code: Some(404),
        message: "not scripted".into(),
        retry_after: None,
    }
}

impl ScriptedApi {
    pub fn with_pages(pages: Vec<FilePage>) -> Self {
        ScriptedApi {
            pages,
            ..Default::default()
        }
    }
    pub fn with_statuses(statuses: Vec<DownloadStatus>) -> Self {
        ScriptedApi {
            statuses: Mutex::new(statuses.into()),
            ..Default::default()
        }
    }
    pub fn with_blob(blob: &[u8]) -> Self {
        ScriptedApi {
            blob: Bytes::copy_from_slice(blob),
            ..Default::default()
        }
    }
    pub fn asked_pages(&self) -> Vec<u32> {
        self.asked.lock().unwrap().iter().map(|(p, _)| *p).collect()
    }
    pub fn asked_per_page(&self) -> Vec<u32> {
        self.asked.lock().unwrap().iter().map(|(_, n)| *n).collect()
    }
    pub fn status_polls(&self) -> u32 {
        *self.polls.lock().unwrap()
    }
}

#[async_trait]
impl FilesApi for ScriptedApi {
    async fn list_machines(&self, _page: u32, _per_page: u32) -> ApiResult<MachinePage> {
        Ok(MachinePage {
            machines: Vec::new(),
            count: Some(0),
            page: 1,
            next_page: None,
        })
    }
    async fn list_files(&self, _space: Space, q: &ListQuery) -> ApiResult<FilePage> {
        self.asked.lock().unwrap().push((q.page, q.per_page));
        let idx = (q.page as usize)
            .checked_sub(1)
            .ok_or_else(|| not_found("page 0"))?;
        self.pages
            .get(idx)
            .cloned()
            .ok_or_else(|| not_found("list_files"))
    }
    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let mut created = self.created.lock().unwrap();
        created.push(req.name.clone());
        let urls = match req.object_type {
            ObjectType::File => vec!["http://fake/part1".to_string()],
            ObjectType::Directory => Vec::new(),
        };
        Ok(Created {
            id: created.len() as u64,
            uid: None,
            chunk_size_mb: None,
            upload_urls: urls,
        })
    }
    async fn upload_part(&self, _url: &str, body: Bytes) -> ApiResult<String> {
        Ok(format!("\"{}\"", body.len()))
    }
    async fn complete(&self, _file_id: u64, _parts: &[CompletedPart]) -> ApiResult<Completed> {
        Ok(Completed {
            uid: None,
            download_url: None,
        })
    }
    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        self.deleted.lock().unwrap().push(file_id);
        Ok(())
    }
    async fn request_download(&self, _t: &DownloadTarget) -> ApiResult<DownloadRequested> {
        Err(not_found("request_download"))
    }
    async fn download_status(&self, _id: u64) -> ApiResult<DownloadStatus> {
        *self.polls.lock().unwrap() += 1;
        let mut st = self.statuses.lock().unwrap();
        match st.len() {
            0 => Err(not_found("download_status")),
            1 => Ok(st[0].clone()),
            _ => Ok(st.pop_front().unwrap_or(DownloadStatus {
                state: DownloadState::Failed,
                url: None,
                size: None,
                name: None,
                content_type: None,
            })),
        }
    }
    async fn file_link(&self, _file_id: u64) -> ApiResult<DownloadLink> {
        Err(not_found("file_link"))
    }
    async fn capacity(&self, _m: Option<u64>) -> ApiResult<Capacity> {
        Ok(Capacity {
            total: 10,
            in_use: 1,
            team_total: None,
            team_in_use: None,
        })
    }
    async fn list_content(&self, _m: u64, _p: &str) -> ApiResult<Vec<LiveEntry>> {
        Ok(Vec::new())
    }
    async fn get_range(&self, _url: &str, r: Range<u64>) -> ApiResult<Bytes> {
        let (s, e) = (r.start as usize, r.end as usize);
        if s > e || e > self.blob.len() {
            return Err(not_found("get_range"));
        }
        Ok(self.blob.slice(s..e))
    }
    async fn get_stream(&self, _url: &str, offset: u64) -> ApiResult<ByteStream> {
        let rest = self.blob.slice((offset as usize).min(self.blob.len())..);
        // Small chunks, as a network would deliver.
        let chunks: Vec<ApiResult<Bytes>> = rest
            .chunks(4)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(futures::stream::iter(chunks).boxed())
    }
}
