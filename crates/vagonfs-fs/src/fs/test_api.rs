//! An in-memory [`FilesApi`] for the core's tests: no network, no kernel.
//!
//! It holds storage trees (shared, per machine, recordings), machines and capacity numbers,
//! counts calls per method, logs every ranged GET, and can serve hostile data: any name, two
//! objects with one name, a listed size that disagrees with the bytes, pages that repeat,
//! download links that get refused after a number of GETs, and queued errors per method.
//!
//! Links look like `mem://link/{id}?gen={n}&expires={unix secs}`; a link is refused once its
//! generation is below the "refused before" mark. A Range past the bytes answers like HTTP:
//! 416 when it starts past the end, a short-body `Malformed` error when it ends past it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::api::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    CurrentFolder, DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FileEntry,
    FilePage, FilesApi, ListQuery, LiveEntry, MAX_PER_PAGE, Machine, MachinePage, ObjectType,
    Space,
};

use super::lock;

/// How the double pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paging {
    Normal,
    /// `next_page` always points back at the same page.
    RepeatSamePage,
    /// `next_page` moves forward forever but every page has page 1's content.
    RepeatContent,
}

struct Node {
    parent: Option<u64>,
    entry: FileEntry,
    data: Bytes,
}

struct State {
    nodes: HashMap<u64, Node>,
    children: HashMap<(Space, u64), Vec<u64>>,
    machines: Vec<Machine>,
    capacity: HashMap<Option<u64>, Capacity>,
    next_id: u64,
    link_gen: u64,
    refused_below: u64,
    refuse_after_gets: Option<u64>,
    gets: u64,
    failures: HashMap<&'static str, VecDeque<ApiError>>,
    paging: Paging,
    /// Links report the size of the bytes (true) or the listed size (false).
    link_reports_bytes: bool,
    file_link_missing: bool,
}

/// The in-memory storage.
pub(crate) struct MemApi {
    state: Mutex<State>,
    calls: Mutex<HashMap<&'static str, u64>>,
    ranges: Mutex<Vec<(u64, Range<u64>)>>,
    /// Listings of this folder wait for a permit (a slow request).
    gate: Mutex<Option<(u64, Arc<Semaphore>)>>,
}

/// A fixed, recognisable modification time per id.
pub(crate) fn mtime_of(id: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 60)
}

/// Deterministic content of `len` bytes, different per `seed`.
pub(crate) fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

pub(crate) fn status(endpoint: &str, status: u16) -> ApiError {
    ApiError::Status {
        endpoint: endpoint.into(),
        status,
        client_code: Some(i64::from(status)),
        message: "test double".into(),
        retry_after: None,
    }
}

impl MemApi {
    pub(crate) fn new() -> Self {
        MemApi {
            state: Mutex::new(State {
                nodes: HashMap::new(),
                children: HashMap::new(),
                machines: Vec::new(),
                capacity: HashMap::new(),
                next_id: 1000,
                link_gen: 0,
                refused_below: 0,
                refuse_after_gets: None,
                gets: 0,
                failures: HashMap::new(),
                paging: Paging::Normal,
                link_reports_bytes: true,
                file_link_missing: false,
            }),
            calls: Mutex::new(HashMap::new()),
            ranges: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
        }
    }

    fn count(&self, method: &'static str) {
        *lock(&self.calls).entry(method).or_default() += 1;
    }

    /// Count the call, then serve a queued failure if there is one.
    fn enter(&self, method: &'static str) -> ApiResult<()> {
        self.count(method);
        match lock(&self.state)
            .failures
            .get_mut(method)
            .and_then(VecDeque::pop_front)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn calls(&self, method: &str) -> u64 {
        lock(&self.calls).get(method).copied().unwrap_or(0)
    }

    pub(crate) fn total_calls(&self) -> u64 {
        lock(&self.calls).values().sum()
    }

    pub(crate) fn reset_calls(&self) {
        lock(&self.calls).clear();
        lock(&self.ranges).clear();
    }

    /// Every ranged GET so far: (file id, range).
    pub(crate) fn ranges(&self) -> Vec<(u64, Range<u64>)> {
        lock(&self.ranges).clone()
    }

    /// Add an object with an explicit id and name (any of them hostile), listed with the size
    /// of its bytes.
    pub(crate) fn add_raw(
        &self,
        space: Space,
        parent: Option<u64>,
        id: u64,
        name: &str,
        kind: ObjectType,
        data: Bytes,
    ) -> u64 {
        let mut s = lock(&self.state);
        s.next_id = s.next_id.max(id + 1);
        let size = if kind == ObjectType::File {
            data.len() as u64
        } else {
            0
        };
        let entry = FileEntry {
            id,
            name: name.to_string(),
            object_type: kind,
            size,
            content_type: None,
            modified: Some(mtime_of(id)),
            parent_id: parent,
        };
        s.nodes.insert(
            id,
            Node {
                parent,
                entry,
                data,
            },
        );
        s.children
            .entry((space, parent.unwrap_or(0)))
            .or_default()
            .push(id);
        if kind == ObjectType::Directory {
            s.children.entry((space, id)).or_default();
        }
        id
    }

    /// List an object with `size` whatever its bytes are.
    pub(crate) fn set_listed_size(&self, id: u64, size: u64) {
        if let Some(node) = lock(&self.state).nodes.get_mut(&id) {
            node.entry.size = size;
        }
    }

    fn next_id(&self) -> u64 {
        let mut s = lock(&self.state);
        let id = s.next_id;
        s.next_id += 1;
        id
    }

    pub(crate) fn add_dir(&self, space: Space, parent: Option<u64>, name: &str) -> u64 {
        let id = self.next_id();
        self.add_raw(space, parent, id, name, ObjectType::Directory, Bytes::new())
    }

    pub(crate) fn add_file(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        data: Bytes,
    ) -> u64 {
        let id = self.next_id();
        self.add_raw(space, parent, id, name, ObjectType::File, data)
    }

    /// Replace a file's bytes (and listed size and mtime), as an upload over it would.
    pub(crate) fn replace_data(&self, id: u64, data: Bytes, modified: SystemTime) {
        let mut s = lock(&self.state);
        if let Some(node) = s.nodes.get_mut(&id) {
            node.entry.size = data.len() as u64;
            node.entry.modified = Some(modified);
            node.data = data;
        }
    }

    /// Leave out `last_modified_date` for an object.
    pub(crate) fn clear_modified(&self, id: u64) {
        if let Some(node) = lock(&self.state).nodes.get_mut(&id) {
            node.entry.modified = None;
        }
    }

    pub(crate) fn add_machine(&self, id: u64, name: &str) {
        lock(&self.state).machines.push(Machine {
            id,
            name: name.into(),
            status: "off".into(),
        });
    }

    pub(crate) fn set_capacity(&self, machine: Option<u64>, cap: Capacity) {
        lock(&self.state).capacity.insert(machine, cap);
    }

    pub(crate) fn set_paging(&self, paging: Paging) {
        lock(&self.state).paging = paging;
    }

    /// Links report the listed size rather than the size of the bytes.
    pub(crate) fn links_report_listed_size(&self) {
        lock(&self.state).link_reports_bytes = false;
    }

    /// `GET /files/{id}/download` answers 404 (the endpoint is gone), forcing the fallback.
    pub(crate) fn remove_file_link_endpoint(&self) {
        lock(&self.state).file_link_missing = true;
    }

    /// Listings of folder `parent` (0 = a root) wait until the returned semaphore gets permits.
    pub(crate) fn hold_listings_of(&self, parent: u64) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *lock(&self.gate) = Some((parent, Arc::clone(&gate)));
        gate
    }

    /// The next call of `method` fails with `err` (queued; one per call).
    pub(crate) fn fail_next(&self, method: &'static str, err: ApiError) {
        lock(&self.state)
            .failures
            .entry(method)
            .or_default()
            .push_back(err);
    }

    /// Every link issued so far is refused from now on.
    pub(crate) fn refuse_issued_links(&self) {
        let mut s = lock(&self.state);
        s.refused_below = s.link_gen + 1;
    }

    /// After `n` more ranged GETs, every link issued by then is refused.
    pub(crate) fn refuse_links_after_gets(&self, n: u64) {
        let mut s = lock(&self.state);
        s.refuse_after_gets = Some(s.gets + n);
    }

    fn link_for(&self, id: u64) -> ApiResult<(String, Option<u64>, String)> {
        let mut s = lock(&self.state);
        s.link_gen += 1;
        let generation = s.link_gen;
        let reports_bytes = s.link_reports_bytes;
        let node = s
            .nodes
            .get(&id)
            .ok_or_else(|| status("GET /files/{id}/download", 404))?;
        if node.entry.object_type != ObjectType::File {
            return Err(status("GET /files/{id}/download", 400));
        }
        let expires = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() + 15 * 60)
            .unwrap_or(0);
        let size = if reports_bytes {
            node.data.len() as u64
        } else {
            node.entry.size
        };
        let url = format!("mem://link/{id}?gen={generation}&expires={expires}");
        Ok((url, Some(size), node.entry.name.clone()))
    }
}

fn parse_link(url: &str) -> Option<(u64, u64)> {
    let parsed = url::Url::parse(url).ok()?;
    let id = parsed.path().trim_start_matches('/').parse().ok()?;
    let generation = parsed
        .query_pairs()
        .find(|(k, _)| k == "gen")?
        .1
        .parse()
        .ok()?;
    Some((id, generation))
}

#[async_trait]
impl FilesApi for MemApi {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        self.enter("list_machines")?;
        let s = lock(&self.state);
        let per = per_page.clamp(1, MAX_PER_PAGE) as usize;
        let start = (page.max(1) as usize - 1) * per;
        let machines: Vec<Machine> = s.machines.iter().skip(start).take(per).cloned().collect();
        let more = start + per < s.machines.len();
        Ok(MachinePage {
            machines,
            count: Some(s.machines.len() as u64),
            page,
            next_page: more.then_some(page + 1),
        })
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        self.enter("list_files")?;
        let parent = query.parent_id.unwrap_or(0);
        let gate = lock(&self.gate)
            .as_ref()
            .filter(|(p, _)| *p == parent)
            .map(|(_, g)| Arc::clone(g));
        if let Some(gate) = gate {
            let _permit = gate.acquire().await;
        }
        let s = lock(&self.state);
        let Some(ids) = s.children.get(&(space, parent)) else {
            if parent == 0 {
                return Ok(FilePage {
                    entries: vec![],
                    current: None,
                    count: Some(0),
                    page: 1,
                    next_page: None,
                });
            }
            return Err(status("GET /files", 404));
        };
        let per = match query.per_page {
            0 => 20,
            n => n.min(MAX_PER_PAGE) as usize,
        };
        let page = query.page.max(1);
        let served_page = if s.paging == Paging::RepeatContent {
            1
        } else {
            page
        };
        let start = (served_page as usize - 1) * per;
        let entries: Vec<FileEntry> = ids
            .iter()
            .skip(start)
            .take(per)
            .filter_map(|id| s.nodes.get(id).map(|n| n.entry.clone()))
            .collect();
        let more = start + per < ids.len();
        let next_page = match s.paging {
            Paging::Normal => more.then_some(page + 1),
            Paging::RepeatSamePage => Some(page),
            Paging::RepeatContent => Some(page + 1),
        };
        let current = (parent != 0).then(|| CurrentFolder {
            id: parent,
            name: s
                .nodes
                .get(&parent)
                .map(|n| n.entry.name.clone())
                .unwrap_or_default(),
            path: None,
            parent_id: s.nodes.get(&parent).and_then(|n| n.parent),
        });
        Ok(FilePage {
            entries,
            current,
            count: Some(ids.len() as u64),
            page,
            next_page,
        })
    }

    async fn create(&self, _req: &CreateRequest) -> ApiResult<Created> {
        self.enter("create")?;
        Err(ApiError::InvalidRequest(
            "the test double does not write".into(),
        ))
    }

    async fn upload_part(&self, _url: &str, _body: Bytes) -> ApiResult<String> {
        self.enter("upload_part")?;
        Err(ApiError::InvalidRequest(
            "the test double does not write".into(),
        ))
    }

    async fn complete(&self, _file_id: u64, _parts: &[CompletedPart]) -> ApiResult<Completed> {
        self.enter("complete")?;
        Err(ApiError::InvalidRequest(
            "the test double does not write".into(),
        ))
    }

    async fn delete(&self, _file_id: u64) -> ApiResult<()> {
        self.enter("delete")?;
        Err(ApiError::InvalidRequest(
            "the test double does not write".into(),
        ))
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        self.enter("request_download")?;
        match target {
            DownloadTarget::Files(ids) if ids.len() == 1 => {
                let (url, size, name) = self.link_for(ids[0])?;
                Ok(DownloadRequested {
                    url: Some(url),
                    download_id: Some(1),
                    size,
                    name: Some(name),
                    content_type: None,
                })
            }
            _ => Err(ApiError::InvalidRequest(
                "the test double zips nothing".into(),
            )),
        }
    }

    async fn download_status(&self, _download_id: u64) -> ApiResult<DownloadStatus> {
        self.enter("download_status")?;
        Err(status("GET /files/download/{id}", 404))
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        self.enter("file_link")?;
        if lock(&self.state).file_link_missing {
            return Err(status("GET /files/{id}/download", 404));
        }
        let (url, size, name) = self.link_for(file_id)?;
        Ok(DownloadLink {
            url,
            size,
            name: Some(name),
            content_type: None,
        })
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        self.enter("capacity")?;
        lock(&self.state)
            .capacity
            .get(&machine_id)
            .copied()
            .ok_or_else(|| status("GET /files/capacity", 404))
    }

    async fn list_content(&self, _machine_id: u64, _path: &str) -> ApiResult<Vec<LiveEntry>> {
        self.enter("list_content")?;
        Err(status("POST /machines/{id}/list-content", 400))
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        self.enter("get_range")?;
        let (id, generation) =
            parse_link(url).ok_or_else(|| ApiError::InvalidRequest("not a test link".into()))?;
        lock(&self.ranges).push((id, range.clone()));
        // Let other tasks run, as a real request would.
        tokio::task::yield_now().await;
        let mut s = lock(&self.state);
        s.gets += 1;
        if s.refuse_after_gets.is_some_and(|n| s.gets > n) {
            s.refuse_after_gets = None;
            s.refused_below = s.link_gen + 1;
        }
        if generation < s.refused_below {
            return Err(ApiError::LinkRefused { status: 403 });
        }
        let data = &s
            .nodes
            .get(&id)
            .ok_or(ApiError::LinkRefused { status: 403 })?
            .data;
        let len = data.len() as u64;
        if range.start >= len && range.end > range.start {
            return Err(status("GET link", 416));
        }
        if range.end > len {
            return Err(ApiError::Malformed {
                endpoint: "GET link".into(),
                detail: format!(
                    "short body: {} of {} bytes",
                    len - range.start,
                    range.end - range.start
                ),
            });
        }
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn get_stream(&self, _url: &str, _offset: u64) -> ApiResult<ByteStream> {
        self.enter("get_stream")?;
        Err(ApiError::InvalidRequest(
            "the core reads with ranges".into(),
        ))
    }
}
