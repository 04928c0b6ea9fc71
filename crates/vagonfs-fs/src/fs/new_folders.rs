//! Folders made by `mkdir`, answered at once and created on the server in the background.
//!
//! Over a real network `POST /files` for a folder costs a round trip, and tools make folders
//! one after another (`git clone`, `cp -r`, `tar x`, `mkdir -p`): that was most of a clone's
//! time. So `mkdir` gives the new folder a **placeholder id** (top bit set: no server id has
//! it) and returns; a background task creates the folder, and the placeholder then stands for
//! the server's id for the rest of the mount. [`NewFolders`] is a [`FilesApi`] wrapper that
//! every part of the core talks through, so nothing above it knows: requests carrying a
//! placeholder (a listing's parent, a create's parent, a delete, a folder download) wait for
//! the folder and carry its real id; answers carrying the real id (a listed entry, its
//! `parent_id`, a listing's `current`) carry the placeholder back. One id per folder for the
//! whole mount, so inodes, listings and the overlay never move.
//!
//! Subtle cases handled here:
//! - a folder made inside a folder still being made waits for its parent's id (`mkdir -p`);
//!   at most [`CREATES_AT_ONCE`] creates are in flight, a permit taken only once the parent's
//!   id is known (so waiting children cannot starve their parents of permits);
//! - a failed create that may succeed later (network, 5xx, timeout) is retried in the
//!   background with backoff, forever; a caller waiting for the id gets that attempt's error
//!   (so a lookup or upload is never held longer than one attempt) and nudges the next try;
//! - 409 (the name is taken on the server: another client made it meanwhile, or an attempt
//!   that timed out landed): a folder of that name is adopted (what `mkdir -p` would do); a
//!   file of that name is left alone and the folder is made as `name (conflict …)` beside it;
//! - any other refusal (the parent deleted elsewhere, permission) is final: waiters get it;
//!   files written inside stay in their spools, journaled (recovery makes conflict copies at
//!   the root when the parent is gone);
//! - a crash: the log (`.new-folders.log`, one JSON line per folder asked for and per folder
//!   made, in the spool folder, made durable by its group commit) is read at the next mount:
//!   a folder not made yet is made then (409 adopts one that landed before the crash), and a
//!   made one keeps its placeholder while any journal record may name it as a parent. The log
//!   is rewritten at load with only what is still needed;
//! - a placeholder this mount does not know (a record whose log was lost) answers 404, as a
//!   deleted folder would.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::api::paging::find_by_name;
use crate::api::{
    ApiError, ApiErrorKind, ApiResult, ByteStream, Capacity, Completed, CompletedPart,
    CreateRequest, Created, DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget,
    FilePage, FilesApi, ListQuery, LiveEntry, MachinePage, ObjectType, RangeBody, Space,
};

use super::line_log::{self, LineLog};
use super::lock;
use super::write::{JournalSpace, SpoolDir, conflict_name};

/// Set in every placeholder id, never in a server's.
const PLACEHOLDER_BIT: u64 = 1 << 63;

/// The log's file name in the spool folder.
const LOG_FILE: &str = ".new-folders.log";

/// Backoff between attempts of one folder's create.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Folder creates in flight at once. A create waits for its parent's id before it takes a
/// permit, so a folder whose parent is not made never holds one.
const CREATES_AT_ONCE: usize = 16;

/// Numbered conflict names tried when a file holds the folder's name.
const CONFLICT_NAME_TRIES: u32 = 20;

/// Whether `id` is a placeholder (a folder made by this mount, maybe not on the server yet).
pub(crate) fn is_placeholder(id: u64) -> bool {
    id & PLACEHOLDER_BIT != 0
}

/// Where one folder's create stands.
#[derive(Debug, Clone)]
enum Status {
    /// Not made yet; `failures` attempts failed, the last with `last`.
    Pending {
        failures: u32,
        last: Option<ApiError>,
    },
    Made(u64),
    Failed(ApiError),
}

struct Folder {
    /// The name asked for, for logs and reports.
    name: String,
    status: watch::Sender<Status>,
    /// Cuts the wait before the next attempt short (someone needs the folder now).
    nudge: Arc<Notify>,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum LogLine {
    /// `mkdir` answered with placeholder `p`; the folder is to be made.
    Asked {
        p: u64,
        space: JournalSpace,
        parent: Option<u64>,
        name: String,
    },
    /// The server holds folder `p` as `id`.
    Made { p: u64, id: u64 },
}

#[derive(Default)]
struct Maps {
    folders: HashMap<u64, Folder>,
    /// (space, server id) → placeholder.
    by_real: HashMap<(Space, u64), u64>,
}

struct State {
    maps: Mutex<Maps>,
    /// Folder creates in flight at once (`git clone` makes hundreds in a burst).
    permits: tokio::sync::Semaphore,
    log: Mutex<Option<LineLog>>,
    /// Folders loaded from the log outside a runtime (the mount opens its spool folder before
    /// it runs): their tasks start at the first call made on one.
    unstarted: Mutex<Vec<(u64, CreateRequest, Arc<Notify>)>>,
}

/// The [`FilesApi`] the core talks through; see the module note.
pub(crate) struct NewFolders {
    inner: Arc<dyn FilesApi>,
    state: Arc<State>,
}

impl NewFolders {
    pub(crate) fn new(inner: Arc<dyn FilesApi>) -> Arc<Self> {
        Arc::new(NewFolders {
            inner,
            state: Arc::new(State {
                maps: Mutex::default(),
                permits: tokio::sync::Semaphore::new(CREATES_AT_ONCE),
                log: Mutex::default(),
                unstarted: Mutex::default(),
            }),
        })
    }

    /// Start making folder `req` (its parent may be a placeholder) and answer its placeholder.
    /// The request is logged first, in the spool folder `dir`, so a crash cannot lose it.
    pub(crate) fn create_later(&self, dir: &SpoolDir, req: CreateRequest) -> std::io::Result<u64> {
        let space = JournalSpace::from_space(req.space)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, e))?;
        let p = self.fresh_placeholder();
        self.append(
            dir,
            &LogLine::Asked {
                p,
                space,
                parent: req.parent_id,
                name: req.name.clone(),
            },
        )?;
        self.start(p, req);
        Ok(p)
    }

    /// Wait until folder `p` is made (its server id) or refused for good. Does not hurry it.
    pub(crate) async fn made(&self, p: u64) -> ApiResult<u64> {
        self.launch();
        let Some(mut rx) = lock(&self.state.maps)
            .folders
            .get(&p)
            .map(|f| f.status.subscribe())
        else {
            return Err(unknown(p));
        };
        loop {
            match rx.borrow_and_update().clone() {
                Status::Made(id) => return Ok(id),
                Status::Failed(e) => return Err(e),
                Status::Pending { .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err(stopping());
            }
        }
    }

    /// How many folders are not made on the server yet (`vagonfs status`).
    pub(crate) fn not_made(&self) -> usize {
        lock(&self.state.maps)
            .folders
            .values()
            .filter(|f| matches!(*f.status.borrow(), Status::Pending { .. }))
            .count()
    }

    /// Try every folder not made yet now (`vagonfs sync`, unmount, recovery), and wait for
    /// those attempts: the folders that are still not made, with why.
    pub(crate) async fn make_pending(&self) -> Vec<(String, ApiError)> {
        self.launch();
        let pending: Vec<(u64, String)> = lock(&self.state.maps)
            .folders
            .iter()
            .filter(|(_, f)| matches!(*f.status.borrow(), Status::Pending { .. }))
            .map(|(p, f)| (*p, f.name.clone()))
            .collect();
        let tries = pending
            .into_iter()
            .map(|(p, name)| async move { self.real(p).await.err().map(|e| (name, e)) });
        futures::future::join_all(tries)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Read the log left in spool folder `dir` by earlier runs (once, when the folder is
    /// opened). Folders made keep their placeholders while `journaled` (a journal record may
    /// name one as its parent) or while a folder not made yet is inside one. Folders not made
    /// are made now, or from the first call made in a runtime (recovery at mount) when loaded
    /// outside one. The log is rewritten with what is kept.
    pub(crate) fn load(&self, dir: &SpoolDir, journaled: bool) -> std::io::Result<()> {
        let path = dir.path().join(LOG_FILE);
        let lines: Vec<LogLine> = line_log::read_lines(&path, LOG_FILE)?;
        let mut made: HashMap<u64, u64> = HashMap::new();
        for line in &lines {
            if let LogLine::Made { p, id } = line {
                made.insert(*p, *id);
            }
        }
        // A made folder is still needed as the parent of one not made yet.
        let parents: std::collections::HashSet<u64> = lines
            .iter()
            .filter_map(|line| match line {
                LogLine::Asked { p, parent, .. } if !made.contains_key(p) => *parent,
                _ => None,
            })
            .collect();
        let mut kept = Vec::new();
        let mut to_make = Vec::new();
        for line in lines {
            let LogLine::Asked {
                p,
                space,
                parent,
                ref name,
            } = line
            else {
                continue;
            };
            match made.get(&p) {
                Some(&id) if journaled || parents.contains(&p) => {
                    self.register(p, name, Status::Made(id));
                    lock(&self.state.maps)
                        .by_real
                        .insert((space.space(), id), p);
                    kept.push(line.clone());
                    kept.push(LogLine::Made { p, id });
                }
                Some(_) => {}
                None => {
                    kept.push(line.clone());
                    to_make.push((
                        p,
                        CreateRequest::directory(space.space(), parent, name.clone()),
                    ));
                }
            }
        }
        line_log::rewrite(&path, &kept)?;
        *lock(&self.state.log) = Some(LineLog::open(&path, dir.group_commit())?);
        if !to_make.is_empty() {
            tracing::info!(
                folders = to_make.len(),
                "making folders an earlier run was asked for but had not made on the server"
            );
        }
        for (p, req) in to_make {
            self.start(p, req);
        }
        Ok(())
    }

    fn fresh_placeholder(&self) -> u64 {
        let maps = lock(&self.state.maps);
        loop {
            let p = uuid::Uuid::new_v4().as_u64_pair().0 | PLACEHOLDER_BIT;
            if !maps.folders.contains_key(&p) {
                return p;
            }
        }
    }

    fn register(&self, p: u64, name: &str, status: Status) -> (Arc<Notify>, bool) {
        let mut maps = lock(&self.state.maps);
        let nudge = Arc::new(Notify::new());
        let fresh = !maps.folders.contains_key(&p);
        maps.folders.entry(p).or_insert_with(|| Folder {
            name: name.to_string(),
            status: watch::Sender::new(status),
            nudge: Arc::clone(&nudge),
        });
        (nudge, fresh)
    }

    /// Register `p` as pending and spawn the task that makes it.
    fn start(&self, p: u64, req: CreateRequest) {
        let (nudge, fresh) = self.register(
            p,
            &req.name,
            Status::Pending {
                failures: 0,
                last: None,
            },
        );
        if !fresh {
            return;
        }
        lock(&self.state.unstarted).push((p, req, nudge));
        self.launch();
    }

    /// Start the tasks of the folders not started yet, when there is a runtime to run them.
    fn launch(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let waiting = std::mem::take(&mut *lock(&self.state.unstarted));
        for (p, req, nudge) in waiting {
            let state = Arc::downgrade(&self.state);
            let inner = Arc::clone(&self.inner);
            tokio::spawn(make(state, inner, p, req, nudge));
        }
    }

    fn append(&self, dir: &SpoolDir, line: &LogLine) -> std::io::Result<()> {
        let mut slot = lock(&self.state.log);
        let log = match slot.take() {
            Some(log) => log,
            None => LineLog::open(&dir.path().join(LOG_FILE), dir.group_commit())?,
        };
        slot.insert(log).append(line)
    }

    /// The server id `id` stands for: itself, or the id of the folder placeholder `id` was
    /// given to, waited for (at most until the current attempt ends).
    async fn real(&self, id: u64) -> ApiResult<u64> {
        if is_placeholder(id) {
            self.launch();
        }
        real(&self.state, id).await
    }

    async fn real_opt(&self, id: Option<u64>) -> ApiResult<Option<u64>> {
        match id {
            Some(id) => Ok(Some(self.real(id).await?)),
            None => Ok(None),
        }
    }

    /// The id the core knows server object `id` of `space` by: its placeholder, or itself.
    pub(crate) fn shown_id(&self, space: Space, id: u64) -> u64 {
        lock(&self.state.maps)
            .by_real
            .get(&(space, id))
            .copied()
            .unwrap_or(id)
    }

    /// Server ids in an answer from `space`, turned back into placeholders.
    fn shown(&self, space: Space, mut page: FilePage) -> FilePage {
        let maps = lock(&self.state.maps);
        if maps.by_real.is_empty() {
            return page;
        }
        let back = |id: u64| maps.by_real.get(&(space, id)).copied().unwrap_or(id);
        for e in &mut page.entries {
            e.id = back(e.id);
            e.parent_id = e.parent_id.map(back);
        }
        if let Some(c) = &mut page.current {
            c.id = back(c.id);
            c.parent_id = c.parent_id.map(back);
        }
        page
    }
}

async fn real(state: &State, id: u64) -> ApiResult<u64> {
    if !is_placeholder(id) {
        return Ok(id);
    }
    let Some((mut rx, nudge)) = lock(&state.maps)
        .folders
        .get(&id)
        .map(|f| (f.status.subscribe(), Arc::clone(&f.nudge)))
    else {
        return Err(unknown(id));
    };
    let seen = match rx.borrow_and_update().clone() {
        Status::Made(real) => return Ok(real),
        Status::Failed(e) => return Err(e),
        Status::Pending { failures, .. } => failures,
    };
    nudge.notify_one();
    loop {
        if rx.changed().await.is_err() {
            return Err(stopping());
        }
        match rx.borrow_and_update().clone() {
            Status::Made(real) => return Ok(real),
            Status::Failed(e) => return Err(e),
            Status::Pending {
                failures,
                last: Some(e),
            } if failures > seen => return Err(e),
            Status::Pending { .. } => {}
        }
    }
}

/// The task that makes folder `p`: attempts until made or refused for good.
async fn make(
    state: Weak<State>,
    inner: Arc<dyn FilesApi>,
    p: u64,
    req: CreateRequest,
    nudge: Arc<Notify>,
) {
    let mut wait = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let Some(st) = state.upgrade() else { return };
        let outcome = attempt(&st, inner.as_ref(), &req).await;
        let status = match outcome {
            Ok(id) => {
                if let Some(log) = lock(&st.log).as_mut()
                    && let Err(e) = log.append(&LogLine::Made { p, id })
                {
                    tracing::warn!(folder = %req.name, error = %e, "cannot note a made folder in the cache folder's log");
                }
                Status::Made(id)
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                tracing::info!(folder = %req.name, error = %e, retry_in = ?wait, "folder not made on the server yet; retrying");
                Status::Pending {
                    failures,
                    last: Some(e),
                }
            }
            Err(e) => {
                tracing::error!(folder = %req.name, error = %e, "the server refused to make a folder made through the mount; what is written inside stays in the cache folder");
                Status::Failed(e)
            }
        };
        let done = !matches!(status, Status::Pending { .. });
        {
            // One lock: an answer naming the new id is shown with the placeholder from the
            // moment the id is known.
            let mut maps = lock(&st.maps);
            if let Status::Made(id) = status {
                maps.by_real.insert((req.space, id), p);
            }
            if let Some(f) = maps.folders.get(&p) {
                f.status.send_replace(status);
            }
        }
        drop(st);
        if done {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = nudge.notified() => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// One attempt at making `req`: its id on the server.
async fn attempt(state: &State, api: &dyn FilesApi, req: &CreateRequest) -> ApiResult<u64> {
    let parent = match req.parent_id {
        Some(p) => Some(real(state, p).await?),
        None => None,
    };
    let mut req = req.clone();
    req.parent_id = parent;
    let Ok(_permit) = state.permits.acquire().await else {
        return Err(stopping());
    };
    match api.create(&req).await {
        Ok(created) => Ok(created.id),
        Err(e) if e.kind() == ApiErrorKind::AlreadyExists => {
            let held = find_by_name(api, req.space, parent, &req.name, None).await?;
            if let Some(entry) = held.filter(|e| e.object_type == ObjectType::Directory) {
                tracing::info!(folder = %req.name, "a folder of this name was made elsewhere meanwhile; using it");
                return Ok(entry.id);
            }
            let at = chrono::Utc::now();
            let mut last = e;
            for n in 1..=CONFLICT_NAME_TRIES {
                let mut copy = req.clone();
                copy.name = conflict_name(&req.name, at, n);
                match api.create(&copy).await {
                    Ok(created) => {
                        tracing::warn!(folder = %req.name, made_as = %copy.name, "a file took this folder's name on the server meanwhile; the folder is made beside it");
                        return Ok(created.id);
                    }
                    Err(e) if e.kind() == ApiErrorKind::AlreadyExists => last = e,
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        }
        Err(e) => Err(e),
    }
}

fn unknown(p: u64) -> ApiError {
    ApiError::Status {
        endpoint: "folder made through the mount".into(),
        status: 404,
        client_code: None,
        message: format!("placeholder {p:#x} is not known to this mount"),
        retry_after: None,
    }
}

fn stopping() -> ApiError {
    ApiError::Transport {
        endpoint: "folder made through the mount".into(),
        detail: "the mount is stopping".into(),
    }
}

#[async_trait]
impl FilesApi for NewFolders {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        self.inner.list_machines(page, per_page).await
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let mut q = query.clone();
        q.parent_id = self.real_opt(query.parent_id).await?;
        let page = self.inner.list_files(space, &q).await?;
        Ok(self.shown(space, page))
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let mut r = req.clone();
        r.parent_id = self.real_opt(req.parent_id).await?;
        self.inner.create(&r).await
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        self.inner.upload_part(url, body).await
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        self.inner.complete(file_id, parts).await
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let id = self.real(file_id).await?;
        self.inner.delete(id).await
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        let target = match target {
            DownloadTarget::Directory(id) => DownloadTarget::Directory(self.real(*id).await?),
            DownloadTarget::Files(ids) => {
                let mut real = Vec::with_capacity(ids.len());
                for id in ids {
                    real.push(self.real(*id).await?);
                }
                DownloadTarget::Files(real)
            }
        };
        self.inner.request_download(&target).await
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        self.inner.download_status(download_id).await
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        self.inner.file_link(file_id).await
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        self.inner.capacity(machine_id).await
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        self.inner.list_content(machine_id, path).await
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        self.inner.get_range(url, range).await
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        self.inner.get_stream(url, offset).await
    }

    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        self.inner.get_range_stream(url, range, expect).await
    }
}
