//! [`MemApi`]: the one in-memory [`FilesApi`] double, with the emulator's rules and no network.
//!
//! It keeps what the emulator (`crate::emulator::store`) enforces, so a test of the core against
//! it means the same as one against the emulator:
//! - **create** checks the name (not empty, `.`/`..`, `/`, NUL, over 255 bytes: 400), the parent
//!   (a folder of the same space, else 404), the name (a folder there: 409; a file there and no
//!   `overwrite`: 409), the quota (in use − replaced + size > quota: 507), and answers
//!   `max(1, ceil(size / chunk MiB))` part URLs (more than 10,000: 400). A folder is listed at
//!   once; a file only after `complete`.
//! - **a part PUT** larger than its slot is 400; its ETag is the quoted MD5 of the body.
//! - **complete** checks every part like the emulator (missing, wrong ETag, wrong size, out of
//!   range: 422; listed twice: 400), then re-checks parent (404), name (409) and quota (507),
//!   and publishes under the upload's id, replacing *every* file of that name when
//!   `overwrite` (a new id: an overwrite by name never keeps the old id). Completing a finished
//!   upload again answers success (a retry after a lost answer).
//! - **listings** by parent (`None`/0 is the space's root), folders first then by name and id,
//!   `per_page` 0 means 20 and is capped at [`MAX_PER_PAGE`], with `count` and `next_page`;
//!   `search` filters by a case-insensitive substring. A removed machine answers 404.
//! - **links** (`mem://link/{id}?gen={n}`) expire when [`MemApi::expire_links`] says so (a
//!   refused link is 403); a Range past the end is 416 when it starts past it, and a short body
//!   ([`ApiError::Malformed`]) when only its end is past it.
//!
//! Seeding may break the rules the API keeps (that is the point): two objects with one name,
//! any name, an explicit id, a listed size that disagrees with the bytes, no modified time.
//! Another client's changes go straight in through [`MemApi::put_file`], [`MemApi::remove`] and
//! friends, never through a mount.
//!
//! Failures, latency, held ("frozen") calls and misbehaving answers are *not* here: wrap the
//! double in [`crate::faulty::FaultyFilesApi`], which also counts calls per method. What
//! the double records is what a server would see: the creates it received, the ranges it served.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    CurrentFolder, DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FileEntry,
    FilePage, FilesApi, ListQuery, LiveEntry, MAX_PER_PAGE, Machine, MachinePage, ObjectType,
    Space,
};

const MIB: u64 = 1024 * 1024;
/// The API's `chunk_size` when the client does not say, MiB.
pub const DEFAULT_CHUNK_MB: u64 = 250;
/// Largest `chunk_size`, MiB.
const MAX_CHUNK_MB: u64 = 5 * 1024;
/// Most parts one upload may have.
const MAX_PARTS: u64 = 10_000;
/// Longest name the API accepts, bytes.
const MAX_NAME_BYTES: usize = 255;
/// `per_page` when the client sends none.
const DEFAULT_PER_PAGE: u32 = 20;
/// The quota until a test sets one.
const DEFAULT_QUOTA: u64 = 1 << 40;
/// Ids handed out start here (explicit ids below it stay free for seeding).
const FIRST_ID: u64 = 1000;

/// The modification time the double gives object `id` (recognisable, distinct per id: every
/// upload gets a new id, so every version has its own time).
pub fn mtime_of(id: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 60)
}

/// Deterministic content of `len` bytes, different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Bytes {
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

/// An HTTP status error as the client would report it.
pub fn status(endpoint: &str, status: u16) -> ApiError {
    status_msg(endpoint, status, "in-memory double")
}

fn status_msg(endpoint: &str, status: u16, message: &str) -> ApiError {
    ApiError::Status {
        endpoint: endpoint.into(),
        status,
        client_code: Some(i64::from(status)),
        message: message.into(),
        retry_after: None,
    }
}

/// The part number a part URL of this double addresses (for fault rules aimed at one part).
pub fn part_number(url: &str) -> Option<u32> {
    parse_part_url(url).map(|(_, n)| n)
}

#[derive(Debug, Clone)]
struct Node {
    id: u64,
    space: Space,
    parent: Option<u64>,
    name: String,
    dir: bool,
    data: Bytes,
    content_type: Option<String>,
    modified: Option<SystemTime>,
    /// The size listings show, when seeded to differ from the bytes.
    listed_size: Option<u64>,
    /// Links report the listed size too (else the size of the bytes).
    link_reports_listed: bool,
}

impl Node {
    fn entry(&self) -> FileEntry {
        FileEntry {
            id: self.id,
            name: self.name.clone(),
            object_type: if self.dir {
                ObjectType::Directory
            } else {
                ObjectType::File
            },
            size: self.listed_size(),
            content_type: self.content_type.clone(),
            modified: self.modified,
            parent_id: self.parent,
        }
    }

    fn listed_size(&self) -> u64 {
        match (self.dir, self.listed_size) {
            (true, _) => 0,
            (false, Some(s)) => s,
            (false, None) => self.data.len() as u64,
        }
    }
}

#[derive(Debug)]
struct Upload {
    space: Space,
    parent: Option<u64>,
    name: String,
    size: u64,
    chunk: u64,
    count: u32,
    content_type: Option<String>,
    overwrite: bool,
    /// part number → (bytes, quoted md5)
    parts: BTreeMap<u32, (Bytes, String)>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    nodes: BTreeMap<u64, Node>,
    uploads: BTreeMap<u64, Upload>,
    /// Uploads completed (a repeated complete answers success).
    completed: HashSet<u64>,
    quota: u64,
    capacity: BTreeMap<Option<u64>, Capacity>,
    machines: Vec<Machine>,
    removed_machines: HashSet<u64>,
    link_gen: u64,
    links_valid_from: u64,
    creates: Vec<CreateRequest>,
    completes: u32,
    parts_stored: u32,
    ranges: Vec<(u64, Range<u64>)>,
    bytes_served: u64,
}

/// The in-memory storage. See the module note.
pub struct MemApi {
    state: Mutex<State>,
}

impl MemApi {
    pub fn new() -> Arc<MemApi> {
        Arc::new(MemApi {
            state: Mutex::new(State {
                next_id: FIRST_ID,
                quota: DEFAULT_QUOTA,
                ..State::default()
            }),
        })
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- seeding (may break the API's rules) ----

    /// Add an object with an explicit id (any name, duplicates allowed).
    pub fn add_raw(
        &self,
        space: Space,
        parent: Option<u64>,
        id: u64,
        name: &str,
        kind: ObjectType,
        data: impl AsRef<[u8]>,
    ) -> u64 {
        let mut st = self.st();
        st.next_id = st.next_id.max(id + 1);
        st.nodes.insert(
            id,
            Node {
                id,
                space,
                parent: parent.filter(|p| *p != 0),
                name: name.to_string(),
                dir: kind == ObjectType::Directory,
                data: Bytes::copy_from_slice(data.as_ref()),
                content_type: None,
                modified: Some(mtime_of(id)),
                listed_size: None,
                link_reports_listed: false,
            },
        );
        id
    }

    fn fresh_id(&self) -> u64 {
        let mut st = self.st();
        let id = st.next_id;
        st.next_id += 1;
        id
    }

    /// Add a folder (no name check: a duplicate is possible).
    pub fn add_dir(&self, space: Space, parent: Option<u64>, name: &str) -> u64 {
        let id = self.fresh_id();
        self.add_raw(space, parent, id, name, ObjectType::Directory, b"")
    }

    /// Add a file (no name check: a duplicate is possible).
    pub fn add_file(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        data: impl AsRef<[u8]>,
    ) -> u64 {
        let id = self.fresh_id();
        self.add_raw(space, parent, id, name, ObjectType::File, data)
    }

    /// Add a second file under a name the folder already holds; returns its entry.
    pub fn put_duplicate(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        data: impl AsRef<[u8]>,
    ) -> FileEntry {
        let id = self.add_file(space, parent, name, data);
        self.entry_by_id(id).expect("just added")
    }

    /// List object `id` with `size` whatever its bytes are; its links still tell the truth.
    pub fn set_listed_size(&self, id: u64, size: u64) {
        if let Some(n) = self.st().nodes.get_mut(&id) {
            n.listed_size = Some(size);
        }
    }

    /// Links of object `id` report its listed size rather than the size of its bytes.
    pub fn links_report_listed_size(&self, id: u64) {
        if let Some(n) = self.st().nodes.get_mut(&id) {
            n.link_reports_listed = true;
        }
    }

    /// Leave out `last_modified_date` for object `id`.
    pub fn clear_modified(&self, id: u64) {
        if let Some(n) = self.st().nodes.get_mut(&id) {
            n.modified = None;
        }
    }

    pub fn add_machine(&self, id: u64, name: &str) {
        self.st().machines.push(Machine {
            id,
            name: name.into(),
            status: "off".into(),
        });
    }

    /// The machine is deleted: its storage answers 404 from now on.
    pub fn remove_machine(&self, id: u64) {
        let mut st = self.st();
        st.removed_machines.insert(id);
        st.machines.retain(|m| m.id != id);
    }

    /// Answer `cap` to `capacity(machine)` instead of the quota and the bytes in use.
    pub fn set_capacity(&self, machine: Option<u64>, cap: Capacity) {
        self.st().capacity.insert(machine, cap);
    }

    /// Bytes all stored files may hold together (507 beyond).
    pub fn set_quota(&self, bytes: u64) {
        self.st().quota = bytes;
    }

    // ---- another client ----

    /// Another client uploads `name` with `overwrite`: every file of that name goes, the new one
    /// has a new id.
    pub fn put_file(
        &self,
        space: Space,
        parent: Option<u64>,
        name: &str,
        data: impl AsRef<[u8]>,
    ) -> FileEntry {
        let parent = parent.filter(|p| *p != 0);
        {
            let mut st = self.st();
            let old: Vec<u64> = same_name(&st, space, parent, name)
                .filter(|n| !n.dir)
                .map(|n| n.id)
                .collect();
            for id in old {
                st.nodes.remove(&id);
            }
        }
        self.put_duplicate(space, parent, name, data)
    }

    /// Replace a file's bytes in place (same id), with the given modification time.
    pub fn replace_data(&self, id: u64, data: impl AsRef<[u8]>, modified: SystemTime) {
        if let Some(n) = self.st().nodes.get_mut(&id) {
            n.data = Bytes::copy_from_slice(data.as_ref());
            n.listed_size = None;
            n.modified = Some(modified);
        }
    }

    /// Another client deletes object `id` (a folder with everything under it). False when
    /// there was no such object.
    pub fn remove(&self, id: u64) -> bool {
        remove_tree(&mut self.st(), id)
    }

    /// Every download link handed out so far is refused from now on (it expired).
    pub fn expire_links(&self) {
        let mut st = self.st();
        st.links_valid_from = st.link_gen + 1;
    }

    // ---- what the server holds ----

    /// The first listed object of that name.
    pub fn entry(&self, space: Space, parent: Option<u64>, name: &str) -> Option<FileEntry> {
        let st = self.st();
        first_by_name(&st, space, parent, name).map(Node::entry)
    }

    pub fn entry_by_id(&self, id: u64) -> Option<FileEntry> {
        self.st().nodes.get(&id).map(Node::entry)
    }

    /// The bytes of the first file of that name.
    pub fn content(&self, space: Space, parent: Option<u64>, name: &str) -> Option<Vec<u8>> {
        let st = self.st();
        first_by_name(&st, space, parent, name)
            .filter(|n| !n.dir)
            .map(|n| n.data.to_vec())
    }

    pub fn content_type_of(&self, space: Space, parent: Option<u64>, name: &str) -> Option<String> {
        let st = self.st();
        first_by_name(&st, space, parent, name).and_then(|n| n.content_type.clone())
    }

    /// Names listed in a folder, sorted (a duplicate name appears twice).
    pub fn names(&self, space: Space, parent: Option<u64>) -> Vec<String> {
        let st = self.st();
        let parent = parent.filter(|p| *p != 0);
        let mut v: Vec<String> = st
            .nodes
            .values()
            .filter(|n| n.space == space && n.parent == parent)
            .map(|n| n.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Everything listed in `space`, by path (`a/b/c`): `None` for a folder, the bytes of a
    /// file. A duplicate name shows as `name#id` for every copy after the first.
    pub fn tree(&self, space: Space) -> BTreeMap<String, Option<Vec<u8>>> {
        let st = self.st();
        let mut out = BTreeMap::new();
        let mut stack: Vec<(Option<u64>, String)> = vec![(None, String::new())];
        while let Some((parent, prefix)) = stack.pop() {
            for n in sorted_children(&st, space, parent) {
                let mut path = format!("{prefix}{}", n.name);
                if out.contains_key(&path) {
                    path = format!("{path}#{}", n.id);
                }
                if n.dir {
                    out.insert(path.clone(), None);
                    stack.push((Some(n.id), format!("{path}/")));
                } else {
                    out.insert(path, Some(n.data.to_vec()));
                }
            }
        }
        out
    }

    /// Every create received (answered with an error or not).
    pub fn creates(&self) -> Vec<CreateRequest> {
        self.st().creates.clone()
    }

    /// Uploads made visible by complete.
    pub fn completes(&self) -> u32 {
        self.st().completes
    }

    /// Part PUTs stored.
    pub fn parts_stored(&self) -> u32 {
        self.st().parts_stored
    }

    /// Uploads created and not completed (nor deleted).
    pub fn pending_uploads(&self) -> usize {
        self.st().uploads.len()
    }

    /// Every ranged GET served: (file id, range).
    pub fn ranges(&self) -> Vec<(u64, Range<u64>)> {
        self.st().ranges.clone()
    }

    /// Forget the ranges served so far.
    pub fn clear_ranges(&self) {
        self.st().ranges.clear();
    }

    /// Bytes served by ranged GETs so far.
    pub fn bytes_served(&self) -> u64 {
        self.st().bytes_served
    }

    fn link_for(&self, id: u64) -> ApiResult<DownloadLink> {
        let ep = "GET /files/{id}/download";
        let mut st = self.st();
        st.link_gen += 1;
        let generation = st.link_gen;
        let n = st
            .nodes
            .get(&id)
            .ok_or_else(|| status_msg(ep, 404, "file not found"))?;
        if n.dir {
            return Err(status_msg(ep, 400, "a folder has no download link"));
        }
        let size = if n.link_reports_listed {
            n.listed_size()
        } else {
            n.data.len() as u64
        };
        Ok(DownloadLink {
            url: format!("mem://link/{id}?gen={generation}"),
            size: Some(size),
            name: Some(n.name.clone()),
            content_type: n.content_type.clone(),
        })
    }

    /// The bytes behind a link that is still valid.
    fn linked(&self, url: &str) -> ApiResult<(u64, Bytes)> {
        let refused = ApiError::LinkRefused { status: 403 };
        let (id, generation) = parse_link(url).ok_or(refused.clone())?;
        let st = self.st();
        if generation < st.links_valid_from {
            return Err(refused);
        }
        let n = st.nodes.get(&id).filter(|n| !n.dir).ok_or(refused)?;
        Ok((id, n.data.clone()))
    }
}

fn parse_link(url: &str) -> Option<(u64, u64)> {
    let rest = url.strip_prefix("mem://link/")?;
    let (id, query) = rest.split_once('?')?;
    let generation = query.strip_prefix("gen=")?.parse().ok()?;
    Some((id.parse().ok()?, generation))
}

fn parse_part_url(url: &str) -> Option<(u64, u32)> {
    let rest = url.strip_prefix("mem://part/")?;
    let (id, n) = rest.split_once('/')?;
    Some((id.parse().ok()?, n.parse().ok()?))
}

fn same_name<'a>(
    st: &'a State,
    space: Space,
    parent: Option<u64>,
    name: &'a str,
) -> impl Iterator<Item = &'a Node> + 'a {
    st.nodes
        .values()
        .filter(move |n| n.space == space && n.parent == parent && n.name == name)
}

fn first_by_name<'a>(
    st: &'a State,
    space: Space,
    parent: Option<u64>,
    name: &str,
) -> Option<&'a Node> {
    let parent = parent.filter(|p| *p != 0);
    sorted_children(st, space, parent)
        .into_iter()
        .find(|n| n.name == name)
}

/// A folder's children in the API's order: folders first, then by name, then by id.
fn sorted_children(st: &State, space: Space, parent: Option<u64>) -> Vec<&Node> {
    let mut v: Vec<&Node> = st
        .nodes
        .values()
        .filter(|n| n.space == space && n.parent == parent)
        .collect();
    v.sort_by(|a, b| {
        b.dir
            .cmp(&a.dir)
            .then_with(|| a.name.cmp(&b.name))
            .then(a.id.cmp(&b.id))
    });
    v
}

fn remove_tree(st: &mut State, id: u64) -> bool {
    if st.nodes.remove(&id).is_none() {
        return st.uploads.remove(&id).is_some();
    }
    let mut gone = vec![id];
    while let Some(p) = gone.pop() {
        let children: Vec<u64> = st
            .nodes
            .values()
            .filter(|n| n.parent == Some(p))
            .map(|n| n.id)
            .collect();
        for c in children {
            st.nodes.remove(&c);
            gone.push(c);
        }
    }
    true
}

fn used(st: &State) -> u64 {
    st.nodes
        .values()
        .filter(|n| !n.dir)
        .map(|n| n.data.len() as u64)
        .sum()
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name must not be empty");
    }
    if name == "." || name == ".." {
        return Err("name is reserved");
    }
    if name.contains('/') || name.contains('\0') {
        return Err("name must not contain '/' or NUL");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("name is too long");
    }
    Ok(())
}

/// The parent of a create or listing: the space's root, or a folder of that space.
fn check_parent(st: &State, space: Space, parent: Option<u64>, ep: &str) -> ApiResult<()> {
    if let Space::Machine(m) = space
        && st.removed_machines.contains(&m)
    {
        return Err(status_msg(ep, 404, "machine not found"));
    }
    match parent {
        None => Ok(()),
        Some(p) if st.nodes.get(&p).is_some_and(|n| n.dir && n.space == space) => Ok(()),
        Some(_) => Err(status_msg(ep, 404, "parent folder not found")),
    }
}

/// Bytes a file of `name` would replace; 409 when a folder holds the name, or a file does and
/// `overwrite` is off.
fn replaced_size(
    st: &State,
    space: Space,
    parent: Option<u64>,
    name: &str,
    overwrite: bool,
    ep: &str,
) -> ApiResult<u64> {
    let existing: Vec<&Node> = same_name(st, space, parent, name).collect();
    if existing.iter().any(|n| n.dir) {
        return Err(status_msg(ep, 409, "a folder holds that name"));
    }
    if !existing.is_empty() && !overwrite {
        return Err(status_msg(ep, 409, "file already exists"));
    }
    Ok(existing.iter().map(|n| n.data.len() as u64).sum())
}

fn check_quota(st: &State, replaced: u64, size: u64, ep: &str) -> ApiResult<()> {
    let after = used(st).saturating_sub(replaced).saturating_add(size);
    if after > st.quota {
        return Err(status_msg(ep, 507, "storage limit exceeded"));
    }
    Ok(())
}

fn expected_part_size(size: u64, chunk: u64, n: u32) -> u64 {
    let start = u64::from(n.saturating_sub(1)).saturating_mul(chunk);
    size.saturating_sub(start).min(chunk)
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// The emulator's checks of a complete's part list; the file's bytes when they pass.
fn check_claim(up: &Upload, parts: &[CompletedPart], ep: &str) -> ApiResult<Vec<u8>> {
    let mut seen = HashSet::new();
    for p in parts {
        if p.part_number == 0 || p.part_number > up.count {
            return Err(status_msg(ep, 422, "part out of range"));
        }
        if !seen.insert(p.part_number) {
            return Err(status_msg(ep, 400, "part listed twice"));
        }
    }
    let mut content = Vec::with_capacity(up.size as usize);
    for n in 1..=up.count {
        let Some(claim) = parts.iter().find(|p| p.part_number == n) else {
            return Err(status_msg(ep, 422, "part missing from the request"));
        };
        let Some((data, etag)) = up.parts.get(&n) else {
            return Err(status_msg(ep, 422, "part never uploaded"));
        };
        if claim.etag.trim().trim_matches('"') != etag.trim_matches('"') {
            return Err(status_msg(ep, 422, "ETag does not match the uploaded part"));
        }
        if data.len() as u64 != expected_part_size(up.size, up.chunk, n) {
            return Err(status_msg(ep, 422, "part has the wrong size"));
        }
        content.extend_from_slice(data);
    }
    if content.len() as u64 != up.size {
        return Err(status_msg(ep, 422, "parts do not add up to the size"));
    }
    Ok(content)
}

#[async_trait]
impl FilesApi for MemApi {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        let st = self.st();
        let per = per_page.clamp(1, MAX_PER_PAGE) as usize;
        let page = page.max(1);
        let start = (page as usize - 1) * per;
        let machines: Vec<Machine> = st.machines.iter().skip(start).take(per).cloned().collect();
        Ok(MachinePage {
            machines,
            count: Some(st.machines.len() as u64),
            page,
            next_page: (start + per < st.machines.len()).then_some(page + 1),
        })
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let ep = "GET /files";
        let st = self.st();
        let parent = query.parent_id.filter(|p| *p != 0);
        check_parent(&st, space, parent, ep)?;
        let needle = query.search.as_ref().map(|q| q.to_lowercase());
        let items: Vec<&Node> = sorted_children(&st, space, parent)
            .into_iter()
            .filter(|n| {
                needle
                    .as_ref()
                    .is_none_or(|q| n.name.to_lowercase().contains(q))
            })
            .collect();
        let per = match query.per_page {
            0 => DEFAULT_PER_PAGE,
            n => n.min(MAX_PER_PAGE),
        } as usize;
        let page = query.page.max(1);
        let start = (page as usize - 1).saturating_mul(per);
        let entries = items
            .iter()
            .skip(start)
            .take(per)
            .map(|n| n.entry())
            .collect();
        let current = parent
            .and_then(|p| st.nodes.get(&p))
            .map(|n| CurrentFolder {
                id: n.id,
                name: n.name.clone(),
                path: None,
                parent_id: n.parent,
            });
        Ok(FilePage {
            entries,
            current,
            count: Some(items.len() as u64),
            page,
            next_page: (start.saturating_add(per) < items.len()).then_some(page + 1),
        })
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let ep = "POST /files";
        let mut st = self.st();
        st.creates.push(req.clone());
        if let Err(why) = check_name(&req.name) {
            return Err(status_msg(ep, 400, why));
        }
        if matches!(req.space, Space::Recordings { .. }) {
            return Err(status_msg(ep, 403, "session recordings are read-only"));
        }
        let parent = req.parent_id.filter(|p| *p != 0);
        check_parent(&st, req.space, parent, ep)?;
        if req.object_type == ObjectType::Directory {
            if same_name(&st, req.space, parent, &req.name)
                .next()
                .is_some()
            {
                return Err(status_msg(ep, 409, "name already exists"));
            }
            let id = st.next_id;
            st.next_id += 1;
            st.nodes.insert(
                id,
                Node {
                    id,
                    space: req.space,
                    parent,
                    name: req.name.clone(),
                    dir: true,
                    data: Bytes::new(),
                    content_type: None,
                    modified: Some(mtime_of(id)),
                    listed_size: None,
                    link_reports_listed: false,
                },
            );
            return Ok(Created {
                id,
                uid: Some(format!("uid-{id}")),
                chunk_size_mb: None,
                upload_urls: Vec::new(),
            });
        }
        let (Some(size), Some(_)) = (req.size, req.content_type.as_ref()) else {
            return Err(status_msg(ep, 400, "size and content_type are required"));
        };
        let chunk_mb = req.chunk_size_mb.unwrap_or(DEFAULT_CHUNK_MB);
        if !(1..=MAX_CHUNK_MB).contains(&chunk_mb) {
            return Err(status_msg(ep, 400, "chunk_size out of range"));
        }
        let chunk = chunk_mb * MIB;
        let count = size.div_ceil(chunk).max(1);
        if count > MAX_PARTS {
            return Err(status_msg(ep, 400, "too many parts"));
        }
        let replaced = replaced_size(&st, req.space, parent, &req.name, req.overwrite, ep)?;
        check_quota(&st, replaced, size, ep)?;
        let id = st.next_id;
        st.next_id += 1;
        let count = count as u32;
        st.uploads.insert(
            id,
            Upload {
                space: req.space,
                parent,
                name: req.name.clone(),
                size,
                chunk,
                count,
                content_type: req.content_type.clone(),
                overwrite: req.overwrite,
                parts: BTreeMap::new(),
            },
        );
        Ok(Created {
            id,
            uid: Some(format!("uid-{id}")),
            chunk_size_mb: Some(chunk_mb),
            upload_urls: (1..=count)
                .map(|n| format!("mem://part/{id}/{n}"))
                .collect(),
        })
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        let ep = "PUT part";
        let (id, n) = parse_part_url(url).ok_or(ApiError::LinkRefused { status: 403 })?;
        let mut st = self.st();
        let up = st
            .uploads
            .get_mut(&id)
            .ok_or_else(|| status_msg(ep, 404, "upload not found"))?;
        if n == 0 || n > up.count {
            return Err(status_msg(ep, 404, "no such part"));
        }
        if body.len() as u64 > expected_part_size(up.size, up.chunk, n) {
            return Err(status_msg(ep, 400, "part larger than its slot"));
        }
        let etag = quoted_md5(&body);
        up.parts.insert(n, (body, etag.clone()));
        st.parts_stored += 1;
        Ok(etag)
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let ep = "POST /files/{id}/complete";
        let mut st = self.st();
        let done = Completed {
            uid: Some(format!("uid-{file_id}")),
            download_url: None,
        };
        let Some(up) = st.uploads.get(&file_id) else {
            if st.completed.contains(&file_id) && st.nodes.contains_key(&file_id) {
                return Ok(done);
            }
            return Err(status_msg(ep, 404, "file not found"));
        };
        let content = check_claim(up, parts, ep)?;
        let (space, parent) = (up.space, up.parent);
        check_parent(&st, space, parent, ep)?;
        let replaced = replaced_size(&st, space, parent, &up.name, up.overwrite, ep)?;
        check_quota(&st, replaced, up.size, ep)?;
        let Some(up) = st.uploads.remove(&file_id) else {
            return Err(status_msg(ep, 404, "file not found"));
        };
        let old: Vec<u64> = same_name(&st, space, parent, &up.name)
            .map(|n| n.id)
            .collect();
        for id in old {
            st.nodes.remove(&id);
        }
        st.nodes.insert(
            file_id,
            Node {
                id: file_id,
                space,
                parent,
                name: up.name,
                dir: false,
                data: content.into(),
                content_type: up.content_type,
                modified: Some(mtime_of(file_id)),
                listed_size: None,
                link_reports_listed: false,
            },
        );
        st.completed.insert(file_id);
        st.completes += 1;
        Ok(done)
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        if remove_tree(&mut self.st(), file_id) {
            Ok(())
        } else {
            Err(status_msg("DELETE /files/{id}", 404, "file not found"))
        }
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        match target {
            DownloadTarget::Files(ids) if ids.len() == 1 => {
                let link = self.link_for(ids[0])?;
                Ok(DownloadRequested {
                    url: Some(link.url),
                    download_id: None,
                    size: link.size,
                    name: link.name,
                    content_type: link.content_type,
                })
            }
            _ => Err(ApiError::InvalidRequest(
                "the in-memory double packages no zip (use the emulator)".into(),
            )),
        }
    }

    async fn download_status(&self, _download_id: u64) -> ApiResult<DownloadStatus> {
        Err(status_msg(
            "GET /files/download/{id}",
            404,
            "no download job",
        ))
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        self.link_for(file_id)
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        let st = self.st();
        if let Some(cap) = st.capacity.get(&machine_id) {
            return Ok(*cap);
        }
        Ok(Capacity {
            total: st.quota,
            in_use: used(&st),
            team_total: None,
            team_in_use: None,
        })
    }

    async fn list_content(&self, _machine_id: u64, _path: &str) -> ApiResult<Vec<LiveEntry>> {
        Err(status_msg(
            "POST /machines/{id}/list-content",
            400,
            "no machine is running",
        ))
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        // Let other tasks run, as a real request would.
        tokio::task::yield_now().await;
        let (id, data) = self.linked(url)?;
        let len = data.len() as u64;
        if range.start >= len && range.end > range.start {
            return Err(status("GET link", 416));
        }
        if range.end > len || range.start > range.end {
            return Err(ApiError::Malformed {
                endpoint: "GET link".into(),
                detail: format!(
                    "short body: {} of {} bytes",
                    len.saturating_sub(range.start),
                    range.end.saturating_sub(range.start)
                ),
            });
        }
        let mut st = self.st();
        st.ranges.push((id, range.clone()));
        st.bytes_served += range.end - range.start;
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let (_, data) = self.linked(url)?;
        let len = data.len() as u64;
        let bytes = self.get_range(url, offset.min(len)..len).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_req(name: &str, size: u64, overwrite: bool) -> CreateRequest {
        CreateRequest {
            space: Space::Shared,
            parent_id: None,
            name: name.into(),
            object_type: ObjectType::File,
            content_type: Some("application/octet-stream".into()),
            size: Some(size),
            chunk_size_mb: Some(1),
            overwrite,
        }
    }

    async fn upload(api: &MemApi, name: &str, data: &[u8], overwrite: bool) -> ApiResult<u64> {
        let c = api
            .create(&file_req(name, data.len() as u64, overwrite))
            .await?;
        let mut parts = Vec::new();
        for (i, url) in c.upload_urls.iter().enumerate() {
            let start = (i as u64 * MIB) as usize;
            let end = (start + MIB as usize).min(data.len());
            let etag = api
                .upload_part(url, Bytes::copy_from_slice(&data[start..end]))
                .await?;
            parts.push(CompletedPart {
                part_number: i as u32 + 1,
                etag,
            });
        }
        api.complete(c.id, &parts).await?;
        Ok(c.id)
    }

    fn code(e: ApiError) -> u16 {
        match e {
            ApiError::Status { status, .. } => status,
            other => panic!("not a status: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_is_listed_only_after_complete_and_overwrite_gives_a_new_id() {
        let api = MemApi::new();
        let c = api.create(&file_req("a", 3, false)).await.unwrap();
        assert!(api.entry(Space::Shared, None, "a").is_none());
        let etag = api
            .upload_part(&c.upload_urls[0], Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let parts = [CompletedPart {
            part_number: 1,
            etag,
        }];
        api.complete(c.id, &parts).await.unwrap();
        assert_eq!(api.entry(Space::Shared, None, "a").unwrap().id, c.id);
        // A repeated complete (a retry after a lost answer) succeeds.
        api.complete(c.id, &parts).await.unwrap();
        assert_eq!(code(upload(&api, "a", b"x", false).await.unwrap_err()), 409);
        let second = upload(&api, "a", b"xy", true).await.unwrap();
        assert_ne!(second, c.id);
        assert_eq!(api.names(Space::Shared, None), vec!["a"]);
        assert_eq!(api.content(Space::Shared, None, "a").unwrap(), b"xy");
    }

    #[tokio::test]
    async fn quota_parent_names_and_parts_are_checked() {
        let api = MemApi::new();
        api.set_quota(10);
        assert_eq!(
            code(api.create(&file_req("big", 11, false)).await.unwrap_err()),
            507
        );
        let mut req = file_req("x", 1, false);
        req.parent_id = Some(4242);
        assert_eq!(code(api.create(&req).await.unwrap_err()), 404);
        assert_eq!(
            code(api.create(&file_req("a/b", 1, false)).await.unwrap_err()),
            400
        );
        let dir = api.add_dir(Space::Shared, None, "d");
        assert_eq!(
            code(api.create(&file_req("d", 1, true)).await.unwrap_err()),
            409
        );
        let c = api.create(&file_req("f", 4, false)).await.unwrap();
        assert_eq!(
            code(
                api.upload_part(&c.upload_urls[0], Bytes::from_static(b"12345"))
                    .await
                    .unwrap_err()
            ),
            400,
            "larger than the part"
        );
        let etag = api
            .upload_part(&c.upload_urls[0], Bytes::from_static(b"123"))
            .await
            .unwrap();
        let parts = [CompletedPart {
            part_number: 1,
            etag,
        }];
        assert_eq!(
            code(api.complete(c.id, &parts).await.unwrap_err()),
            422,
            "short"
        );
        let bad = [CompletedPart {
            part_number: 1,
            etag: "\"0\"".into(),
        }];
        assert_eq!(
            code(api.complete(c.id, &bad).await.unwrap_err()),
            422,
            "etag"
        );
        // Someone else fills the storage before complete.
        api.put_file(Space::Shared, Some(dir), "other", [0u8; 8]);
        let etag = api
            .upload_part(&c.upload_urls[0], Bytes::from_static(b"1234"))
            .await
            .unwrap();
        let parts = [CompletedPart {
            part_number: 1,
            etag,
        }];
        assert_eq!(code(api.complete(c.id, &parts).await.unwrap_err()), 507);
        assert_eq!(
            api.pending_uploads(),
            1,
            "a failed complete keeps the upload"
        );
        assert!(api.remove(dir));
        api.complete(c.id, &parts).await.unwrap();
    }

    #[tokio::test]
    async fn pages_count_and_links_expire() {
        let api = MemApi::new();
        for i in 0..45 {
            api.add_file(Space::Shared, None, &format!("f{i:02}"), [i as u8]);
        }
        api.add_dir(Space::Shared, None, "zz");
        let q = |page| ListQuery {
            parent_id: None,
            page,
            per_page: 0,
            search: None,
        };
        let p1 = api.list_files(Space::Shared, &q(1)).await.unwrap();
        assert_eq!(
            (p1.entries.len(), p1.count, p1.next_page),
            (20, Some(46), Some(2))
        );
        assert_eq!(p1.entries[0].name, "zz", "folders first");
        let p3 = api.list_files(Space::Shared, &q(3)).await.unwrap();
        assert_eq!((p3.entries.len(), p3.next_page), (6, None));
        let id = api.entry(Space::Shared, None, "f07").unwrap().id;
        let link = api.file_link(id).await.unwrap();
        assert_eq!(&api.get_range(&link.url, 0..1).await.unwrap()[..], [7]);
        assert!(matches!(
            api.get_range(&link.url, 0..2).await,
            Err(ApiError::Malformed { .. })
        ));
        api.expire_links();
        assert!(matches!(
            api.get_range(&link.url, 0..1).await,
            Err(ApiError::LinkRefused { .. })
        ));
        let fresh = api.file_link(id).await.unwrap();
        assert!(api.get_range(&fresh.url, 0..1).await.is_ok());
        // Seeded duplicates: an overwrite by name replaces them all.
        api.put_duplicate(Space::Shared, None, "f07", b"dup");
        assert_eq!(
            api.names(Space::Shared, None)
                .iter()
                .filter(|n| *n == "f07")
                .count(),
            2
        );
        upload(&api, "f07", b"new", true).await.unwrap();
        assert_eq!(
            api.names(Space::Shared, None)
                .iter()
                .filter(|n| *n == "f07")
                .count(),
            1
        );
    }
}
