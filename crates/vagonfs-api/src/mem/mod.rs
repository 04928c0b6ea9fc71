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
//!
//! The files here: this one holds the double, its seeding and its inspection; `rules` the
//! state and the rules of the API it keeps; `api` the [`FilesApi`] endpoints.

mod api;
mod rules;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use self::rules::*;
use super::{
    ApiError, ApiResult, Capacity, CompletedPart, CreateRequest, Created, CurrentFolder,
    DownloadLink, FileEntry, Machine, ObjectType, Space,
};

const MIB: u64 = 1024 * 1024;
/// The API's `chunk_size` when the client does not say, MiB.
pub const DEFAULT_CHUNK_MB: u64 = 250;
/// Largest `chunk_size`, MiB.
const MAX_CHUNK_MB: u64 = 5 * 1024;
/// Most parts one upload may have.
const MAX_PARTS: u64 = 10_000;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FilesApi, ListQuery};

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
