//! An in-memory [`FilesApi`] double for the write path's tests (no network, no kernel).
//!
//! It keeps the contract of `docs/vagon-files-api.md` §2.5–2.7 that the uploader depends on:
//! create answers `max(1, ceil(size / chunk MiB))` part URLs and refuses a name that exists
//! (409, unless `overwrite`), a size over the free quota (507) or a missing parent (404); a part
//! PUT answers the quoted MD5 of its body as ETag; complete checks every part's ETag, that the
//! parts add up to the declared size (422) and the quota (507), then lists the file under a new
//! id, replacing an overwritten one atomically. Files are not listed before complete. A folder
//! create (`object_type` directory) lists the folder at once (409 when the name is taken).
//!
//! For the tests it counts calls, measures parts in flight, can hold part PUTs at a gate (to
//! observe parallelism by count, not by time), and injects failures: a part that always fails
//! (retries used up) and part links refused (expired).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::{Notify, Semaphore};

use crate::api::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FileEntry, FilePage, FilesApi,
    ListQuery, LiveEntry, MachinePage, ObjectType, Space,
};

const MIB: u64 = 1024 * 1024;
/// The API's default `chunk_size`, MB.
const DEFAULT_CHUNK_MB: u64 = 250;
/// A generous default quota for the double.
const DEFAULT_QUOTA: u64 = 1 << 40;

#[derive(Debug, Clone)]
struct Node {
    id: u64,
    space: Space,
    parent: Option<u64>,
    name: String,
    dir: bool,
    content: Vec<u8>,
    content_type: Option<String>,
    modified: SystemTime,
}

#[derive(Debug)]
struct PendingCreate {
    space: Space,
    parent: Option<u64>,
    name: String,
    size: u64,
    content_type: Option<String>,
    overwrite: bool,
    url_count: u32,
    parts: BTreeMap<u32, (Vec<u8>, String)>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Bumped per completed file so every completion has a distinct modification time.
    clock: u64,
    nodes: BTreeMap<u64, Node>,
    uploads: HashMap<u64, PendingCreate>,
    quota: u64,
    creates: Vec<CreateRequest>,
    completes: u32,
    parts_ok: u32,
}

/// The double. Shared as `Arc<MemApi>` (and `Arc<dyn FilesApi>`).
pub struct MemApi {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrivals: AtomicUsize,
    arrived: Notify,
    gated: AtomicBool,
    gate: Semaphore,
    fail_part: Mutex<Option<u32>>,
    refuse_parts: AtomicU32,
    part_calls: AtomicU32,
    bytes_fetched: AtomicU64,
    /// Spaces answered with 404 (a machine that no longer exists).
    gone_spaces: Mutex<Vec<Space>>,
    /// Listings fail as if the service were down (retries used up).
    lists_down: AtomicBool,
    /// Download links carry this; older ones are refused (expired).
    link_epoch: AtomicU32,
    file_links: AtomicU32,
    /// Answer no part URL for an empty file (a tolerated variant of the contract).
    no_url_for_empty: AtomicBool,
    /// Answer one part URL too many (a broken server).
    extra_url: AtomicBool,
}

fn status(endpoint: &str, status: u16, message: &str) -> ApiError {
    ApiError::Status {
        endpoint: endpoint.into(),
        status,
        client_code: Some(i64::from(status)),
        message: message.into(),
        retry_after: None,
    }
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// Decrements the in-flight count even when the PUT future is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MemApi {
    pub fn new() -> Arc<MemApi> {
        Arc::new(MemApi {
            state: Mutex::new(State {
                next_id: 100,
                quota: DEFAULT_QUOTA,
                ..State::default()
            }),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            arrivals: AtomicUsize::new(0),
            arrived: Notify::new(),
            gated: AtomicBool::new(false),
            gate: Semaphore::new(0),
            fail_part: Mutex::new(None),
            refuse_parts: AtomicU32::new(0),
            part_calls: AtomicU32::new(0),
            bytes_fetched: AtomicU64::new(0),
            gone_spaces: Mutex::new(Vec::new()),
            lists_down: AtomicBool::new(false),
            link_epoch: AtomicU32::new(0),
            file_links: AtomicU32::new(0),
            no_url_for_empty: AtomicBool::new(false),
            extra_url: AtomicBool::new(false),
        })
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- test controls ----

    pub fn set_quota(&self, bytes: u64) {
        self.st().quota = bytes;
    }

    /// Part number (1-based) whose PUT always fails as if retries were used up.
    pub fn fail_part(&self, part: Option<u32>) {
        *self.fail_part.lock().unwrap_or_else(|p| p.into_inner()) = part;
    }

    /// The next `n` part PUTs answer "link refused" (403, expired).
    pub fn refuse_next_parts(&self, n: u32) {
        self.refuse_parts.store(n, Ordering::Release);
    }

    /// Hold every part PUT until [`MemApi::release`] lets it through.
    pub fn hold_parts(&self) {
        // Permits left over from an earlier `open_gate` would let parts through.
        self.gate.forget_permits(usize::MAX);
        self.gated.store(true, Ordering::Release);
    }

    /// Stop holding part PUTs (and let the held ones through).
    pub fn open_gate(&self) {
        self.gated.store(false, Ordering::Release);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Answer 404 for everything in `space` from now on.
    pub fn remove_space(&self, space: Space) {
        self.gone_spaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(space);
    }

    /// Listings fail with a 503 (retries used up) while `down`.
    pub fn set_lists_down(&self, down: bool) {
        self.lists_down.store(down, Ordering::Release);
    }

    /// Empty files get no part URL (complete then takes no parts).
    pub fn set_no_url_for_empty(&self, on: bool) {
        self.no_url_for_empty.store(on, Ordering::Release);
    }

    /// Answer one part URL more than the size needs.
    pub fn set_extra_url(&self, on: bool) {
        self.extra_url.store(on, Ordering::Release);
    }

    /// Every download link handed out so far expires.
    pub fn expire_links(&self) {
        self.link_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// `GET /files/{id}/download` calls so far.
    pub fn file_links(&self) -> u32 {
        self.file_links.load(Ordering::Acquire)
    }

    /// Bytes served by `get_range` so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.load(Ordering::Acquire)
    }

    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Wait until `n` part PUTs have arrived in total (held or not).
    pub async fn wait_arrivals(&self, n: usize) {
        loop {
            let notified = self.arrived.notified();
            if self.arrivals.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Acquire)
    }

    pub fn creates(&self) -> Vec<CreateRequest> {
        self.st().creates.clone()
    }

    pub fn completes(&self) -> u32 {
        self.st().completes
    }

    pub fn parts_ok(&self) -> u32 {
        self.st().parts_ok
    }

    /// Every part PUT call, failed ones included.
    pub fn part_calls(&self) -> u32 {
        self.part_calls.load(Ordering::Acquire)
    }

    /// Put a file directly (as if uploaded earlier by someone).
    pub fn put_file(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        content: &[u8],
    ) -> FileEntry {
        let mut st = self.st();
        if let Some(old) = find(&st, space, parent, name) {
            st.nodes.remove(&old);
        }
        st.next_id += 1;
        st.clock += 1;
        let id = st.next_id;
        let node = Node {
            id,
            space,
            parent,
            name: name.into(),
            dir: false,
            content: content.to_vec(),
            content_type: None,
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + st.clock),
        };
        let e = entry_of(&node);
        st.nodes.insert(id, node);
        e
    }

    /// Put a second file under a name already held in that folder (some servers allow it; the
    /// mount must never write by such a name).
    pub fn put_duplicate(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        content: &[u8],
    ) -> FileEntry {
        let mut st = self.st();
        st.next_id += 1;
        st.clock += 1;
        let id = st.next_id;
        let node = Node {
            id,
            space,
            parent,
            name: name.into(),
            dir: false,
            content: content.to_vec(),
            content_type: None,
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + st.clock),
        };
        let e = entry_of(&node);
        st.nodes.insert(id, node);
        e
    }

    pub fn mkdir(&self, space: Space, parent: Option<u64>, name: &str) -> u64 {
        let mut st = self.st();
        st.next_id += 1;
        let id = st.next_id;
        st.nodes.insert(
            id,
            Node {
                id,
                space,
                parent,
                name: name.into(),
                dir: true,
                content: Vec::new(),
                content_type: None,
                modified: UNIX_EPOCH,
            },
        );
        id
    }

    pub fn entry(&self, space: Space, parent: Option<u64>, name: &str) -> Option<FileEntry> {
        let st = self.st();
        find(&st, space, parent, name)
            .and_then(|id| st.nodes.get(&id))
            .map(entry_of)
    }

    pub fn content(&self, space: Space, parent: Option<u64>, name: &str) -> Option<Vec<u8>> {
        let st = self.st();
        find(&st, space, parent, name)
            .and_then(|id| st.nodes.get(&id))
            .map(|n| n.content.clone())
    }

    pub fn content_type_of(&self, space: Space, parent: Option<u64>, name: &str) -> Option<String> {
        let st = self.st();
        find(&st, space, parent, name)
            .and_then(|id| st.nodes.get(&id))
            .and_then(|n| n.content_type.clone())
    }

    /// Names listed in a folder.
    pub fn names(&self, space: Space, parent: Option<u64>) -> Vec<String> {
        let st = self.st();
        let mut v: Vec<String> = st
            .nodes
            .values()
            .filter(|n| n.space == space && n.parent == parent)
            .map(|n| n.name.clone())
            .collect();
        v.sort();
        v
    }
}

impl MemApi {
    /// The file id of a download link that is still valid.
    fn download_id(&self, url: &str) -> ApiResult<u64> {
        let refused = ApiError::LinkRefused { status: 403 };
        let rest = url.strip_prefix("mem://file/").ok_or(refused.clone())?;
        let (id, epoch) = rest.split_once("?epoch=").ok_or(refused.clone())?;
        let epoch: u32 = epoch.parse().map_err(|_| refused.clone())?;
        if epoch != self.link_epoch.load(Ordering::Acquire) {
            return Err(refused);
        }
        id.parse().map_err(|_| refused)
    }
}

fn find(st: &State, space: Space, parent: Option<u64>, name: &str) -> Option<u64> {
    st.nodes
        .values()
        .find(|n| n.space == space && n.parent == parent && n.name == name)
        .map(|n| n.id)
}

fn entry_of(n: &Node) -> FileEntry {
    FileEntry {
        id: n.id,
        name: n.name.clone(),
        object_type: if n.dir {
            ObjectType::Directory
        } else {
            ObjectType::File
        },
        size: n.content.len() as u64,
        content_type: n.content_type.clone(),
        modified: Some(n.modified),
        parent_id: n.parent,
    }
}

fn used(st: &State) -> u64 {
    st.nodes.values().map(|n| n.content.len() as u64).sum()
}

fn not_emulated(what: &str) -> ApiError {
    ApiError::InvalidRequest(format!(
        "{what} is not emulated by the write-path test double"
    ))
}

#[async_trait]
impl FilesApi for MemApi {
    async fn list_machines(&self, _page: u32, _per_page: u32) -> ApiResult<MachinePage> {
        Err(not_emulated("GET /machines"))
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        if self.lists_down.load(Ordering::Acquire) {
            return Err(ApiError::RetriesExhausted {
                attempts: 4,
                last: Box::new(status("GET /files", 503, "service unavailable")),
            });
        }
        if self
            .gone_spaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&space)
        {
            return Err(status("GET /machines/{id}/files", 404, "machine not found"));
        }
        let st = self.st();
        let parent = query.parent_id.filter(|p| *p != 0);
        if let Some(p) = parent
            && !st.nodes.get(&p).is_some_and(|n| n.dir && n.space == space)
        {
            return Err(status("GET /files", 404, "parent folder not found"));
        }
        let mut items: Vec<&Node> = st
            .nodes
            .values()
            .filter(|n| n.space == space && n.parent == parent)
            .filter(|n| {
                query
                    .search
                    .as_ref()
                    .is_none_or(|q| n.name.to_lowercase().contains(&q.to_lowercase()))
            })
            .collect();
        items.sort_by(|a, b| b.dir.cmp(&a.dir).then(a.name.cmp(&b.name)));
        let per_page = query.per_page.clamp(1, crate::api::MAX_PER_PAGE) as usize;
        let page = query.page.max(1);
        let start = (page as usize - 1) * per_page;
        let entries: Vec<FileEntry> = items
            .iter()
            .skip(start)
            .take(per_page)
            .map(|n| entry_of(n))
            .collect();
        let next_page = (start + per_page < items.len()).then_some(page + 1);
        Ok(FilePage {
            entries,
            current: None,
            count: Some(items.len() as u64),
            page,
            next_page,
        })
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let mut st = self.st();
        st.creates.push(req.clone());
        let parent = req.parent_id.filter(|p| *p != 0);
        if let Some(p) = parent
            && !st
                .nodes
                .get(&p)
                .is_some_and(|n| n.dir && n.space == req.space)
        {
            return Err(status("POST /files", 404, "parent folder not found"));
        }
        if req.object_type == ObjectType::Directory {
            if find(&st, req.space, parent, &req.name).is_some() {
                return Err(status("POST /files", 409, "name already exists"));
            }
            st.next_id += 1;
            let id = st.next_id;
            st.nodes.insert(
                id,
                Node {
                    id,
                    space: req.space,
                    parent,
                    name: req.name.clone(),
                    dir: true,
                    content: Vec::new(),
                    content_type: None,
                    modified: UNIX_EPOCH,
                },
            );
            return Ok(Created {
                id,
                uid: Some(format!("uid-{id}")),
                chunk_size_mb: None,
                upload_urls: Vec::new(),
            });
        }
        if !req.overwrite && find(&st, req.space, parent, &req.name).is_some() {
            return Err(status("POST /files", 409, "file already exists"));
        }
        let (Some(size), Some(_)) = (req.size, req.content_type.as_ref()) else {
            return Err(status(
                "POST /files",
                400,
                "size and content_type are required",
            ));
        };
        if size > st.quota.saturating_sub(used(&st)) {
            return Err(status("POST /files", 507, "storage full"));
        }
        let chunk_mb = req.chunk_size_mb.unwrap_or(DEFAULT_CHUNK_MB).max(1);
        let mut count = size.div_ceil(chunk_mb * MIB).max(1) as u32;
        if size == 0 && self.no_url_for_empty.load(Ordering::Acquire) {
            count = 0;
        }
        if self.extra_url.load(Ordering::Acquire) {
            count += 1;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.uploads.insert(
            id,
            PendingCreate {
                space: req.space,
                parent,
                name: req.name.clone(),
                size,
                content_type: req.content_type.clone(),
                overwrite: req.overwrite,
                url_count: count,
                parts: BTreeMap::new(),
            },
        );
        let upload_urls = (1..=count)
            .map(|p| format!("mem://part/{id}/{p}?sig=secret"))
            .collect();
        Ok(Created {
            id,
            uid: Some(format!("uid-{id}")),
            chunk_size_mb: Some(chunk_mb),
            upload_urls,
        })
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        self.part_calls.fetch_add(1, Ordering::AcqRel);
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.arrived.notify_waiters();
        if self.gated.load(Ordering::Acquire) {
            self.gate
                .acquire()
                .await
                .map_err(|_| not_emulated("closed gate"))?
                .forget();
        }
        let rest = url
            .strip_prefix("mem://part/")
            .ok_or(ApiError::LinkRefused { status: 403 })?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (id, part) = rest
            .split_once('/')
            .ok_or(ApiError::LinkRefused { status: 403 })?;
        let id: u64 = id
            .parse()
            .map_err(|_| ApiError::LinkRefused { status: 403 })?;
        let part: u32 = part
            .parse()
            .map_err(|_| ApiError::LinkRefused { status: 403 })?;
        if self
            .refuse_parts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ApiError::LinkRefused { status: 403 });
        }
        if *self.fail_part.lock().unwrap_or_else(|p| p.into_inner()) == Some(part) {
            return Err(ApiError::RetriesExhausted {
                attempts: 4,
                last: Box::new(status("PUT part", 503, "injected failure")),
            });
        }
        let mut st = self.st();
        let up = st
            .uploads
            .get_mut(&id)
            .ok_or(ApiError::LinkRefused { status: 403 })?;
        if part == 0 || part > up.url_count {
            return Err(ApiError::LinkRefused { status: 403 });
        }
        let etag = quoted_md5(&body);
        up.parts.insert(part, (body.to_vec(), etag.clone()));
        st.parts_ok += 1;
        Ok(etag)
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let mut st = self.st();
        let ep = "POST /files/{id}/complete";
        let up = st
            .uploads
            .get(&file_id)
            .ok_or_else(|| status(ep, 404, "file not found"))?;
        if parts.len() != up.url_count as usize {
            return Err(status(ep, 400, "wrong number of parts"));
        }
        let mut content = Vec::with_capacity(up.size as usize);
        for (i, p) in parts.iter().enumerate() {
            let (data, etag) = up
                .parts
                .get(&p.part_number)
                .ok_or_else(|| status(ep, 400, "part not uploaded"))?;
            if p.part_number as usize != i + 1 || *etag != p.etag {
                return Err(status(ep, 400, "parts out of order or ETag mismatch"));
            }
            content.extend_from_slice(data);
        }
        if content.len() as u64 != up.size {
            return Err(status(ep, 422, "file size mismatch"));
        }
        let existing = find(&st, up.space, up.parent, &up.name);
        if existing.is_some() && !up.overwrite {
            return Err(status(ep, 409, "file already exists"));
        }
        let freed = existing
            .and_then(|id| st.nodes.get(&id))
            .map_or(0, |n| n.content.len() as u64);
        if used(&st) - freed + up.size > st.quota {
            return Err(status(ep, 507, "storage limit exceeded"));
        }
        let Some(up) = st.uploads.remove(&file_id) else {
            return Err(status(ep, 404, "file not found"));
        };
        if let Some(old) = existing {
            st.nodes.remove(&old);
        }
        st.clock += 1;
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + st.clock);
        st.nodes.insert(
            file_id,
            Node {
                id: file_id,
                space: up.space,
                parent: up.parent,
                name: up.name,
                dir: false,
                content,
                content_type: up.content_type,
                modified,
            },
        );
        st.completes += 1;
        Ok(Completed {
            uid: Some(format!("uid-{file_id}")),
            download_url: None,
        })
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let mut st = self.st();
        if st.nodes.remove(&file_id).is_none() {
            return Err(status("DELETE /files/{id}", 404, "file not found"));
        }
        // Everything under a deleted folder goes with it.
        loop {
            let orphans: Vec<u64> = st
                .nodes
                .values()
                .filter(|n| n.parent.is_some_and(|p| !st.nodes.contains_key(&p)))
                .map(|n| n.id)
                .collect();
            if orphans.is_empty() {
                return Ok(());
            }
            for id in orphans {
                st.nodes.remove(&id);
            }
        }
    }

    async fn request_download(&self, _target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        Err(not_emulated("POST /files/download"))
    }

    async fn download_status(&self, _download_id: u64) -> ApiResult<DownloadStatus> {
        Err(not_emulated("GET /files/download/{id}"))
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        let st = self.st();
        let n = st
            .nodes
            .get(&file_id)
            .filter(|n| !n.dir)
            .ok_or_else(|| status("GET /files/{id}/download", 404, "file not found"))?;
        self.file_links.fetch_add(1, Ordering::AcqRel);
        let epoch = self.link_epoch.load(Ordering::Acquire);
        Ok(DownloadLink {
            url: format!("mem://file/{file_id}?epoch={epoch}"),
            size: Some(n.content.len() as u64),
            name: Some(n.name.clone()),
            content_type: n.content_type.clone(),
        })
    }

    async fn capacity(&self, _machine_id: Option<u64>) -> ApiResult<Capacity> {
        let st = self.st();
        Ok(Capacity {
            total: st.quota,
            in_use: used(&st),
            team_total: None,
            team_in_use: None,
        })
    }

    async fn list_content(&self, _machine_id: u64, _path: &str) -> ApiResult<Vec<LiveEntry>> {
        Err(not_emulated("POST /machines/{id}/list-content"))
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        let id = self.download_id(url)?;
        let st = self.st();
        let n = st
            .nodes
            .get(&id)
            .ok_or(ApiError::LinkRefused { status: 403 })?;
        let len = n.content.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(status("GET download", 416, "range not satisfiable"));
        }
        self.bytes_fetched
            .fetch_add(range.end - range.start, Ordering::AcqRel);
        Ok(Bytes::copy_from_slice(
            &n.content[range.start as usize..range.end as usize],
        ))
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let len = {
            let id = self.download_id(url)?;
            let st = self.st();
            st.nodes
                .get(&id)
                .ok_or(ApiError::LinkRefused { status: 403 })?
                .content
                .len() as u64
        };
        let bytes = self.get_range(url, offset.min(len)..len).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
    }
}
