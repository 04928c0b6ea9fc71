//! The double's state and the API's rules it keeps: names, parents, quota, part claims.
//!
//! Subtle cases: a name is checked like the emulator (empty, `.`/`..`, `/`, NUL, over 255
//! bytes); what an overwrite replaces counts against the quota only once (in use minus what
//! is replaced, plus the size); a part's expected size is the chunk size except the last; a claimed part is
//! checked for presence, ETag and size (422) and for being listed twice (400).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use bytes::Bytes;
use md5::{Digest, Md5};

use std::time::SystemTime;

use super::status_msg;
use crate::api::{
    ApiResult, Capacity, CompletedPart, CreateRequest, FileEntry, Machine, ObjectType, Space,
};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) id: u64,
    pub(super) space: Space,
    pub(super) parent: Option<u64>,
    pub(super) name: String,
    pub(super) dir: bool,
    pub(super) data: Bytes,
    pub(super) content_type: Option<String>,
    pub(super) modified: Option<SystemTime>,
    /// The size listings show, when seeded to differ from the bytes.
    pub(super) listed_size: Option<u64>,
    /// Links report the listed size too (else the size of the bytes).
    pub(super) link_reports_listed: bool,
}

impl Node {
    pub(super) fn entry(&self) -> FileEntry {
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

    pub(super) fn listed_size(&self) -> u64 {
        match (self.dir, self.listed_size) {
            (true, _) => 0,
            (false, Some(s)) => s,
            (false, None) => self.data.len() as u64,
        }
    }
}

#[derive(Debug)]
pub(super) struct Upload {
    pub(super) space: Space,
    pub(super) parent: Option<u64>,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) chunk: u64,
    pub(super) count: u32,
    pub(super) content_type: Option<String>,
    pub(super) overwrite: bool,
    /// part number → (bytes, quoted md5)
    pub(super) parts: BTreeMap<u32, (Bytes, String)>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) next_id: u64,
    pub(super) nodes: BTreeMap<u64, Node>,
    pub(super) uploads: BTreeMap<u64, Upload>,
    /// Uploads completed (a repeated complete answers success).
    pub(super) completed: HashSet<u64>,
    pub(super) quota: u64,
    pub(super) capacity: BTreeMap<Option<u64>, Capacity>,
    pub(super) machines: Vec<Machine>,
    pub(super) removed_machines: HashSet<u64>,
    pub(super) link_gen: u64,
    pub(super) links_valid_from: u64,
    pub(super) creates: Vec<CreateRequest>,
    pub(super) completes: u32,
    pub(super) parts_stored: u32,
    pub(super) ranges: Vec<(u64, Range<u64>)>,
    pub(super) bytes_served: u64,
}

pub(super) fn parse_link(url: &str) -> Option<(u64, u64)> {
    let rest = url.strip_prefix("mem://link/")?;
    let (id, query) = rest.split_once('?')?;
    let generation = query.strip_prefix("gen=")?.parse().ok()?;
    Some((id.parse().ok()?, generation))
}

pub(super) fn parse_part_url(url: &str) -> Option<(u64, u32)> {
    let rest = url.strip_prefix("mem://part/")?;
    let (id, n) = rest.split_once('/')?;
    Some((id.parse().ok()?, n.parse().ok()?))
}

pub(super) fn same_name<'a>(
    st: &'a State,
    space: Space,
    parent: Option<u64>,
    name: &'a str,
) -> impl Iterator<Item = &'a Node> + 'a {
    st.nodes
        .values()
        .filter(move |n| n.space == space && n.parent == parent && n.name == name)
}

pub(super) fn first_by_name<'a>(
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
pub(super) fn sorted_children(st: &State, space: Space, parent: Option<u64>) -> Vec<&Node> {
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

pub(super) fn remove_tree(st: &mut State, id: u64) -> bool {
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

pub(super) fn used(st: &State) -> u64 {
    st.nodes
        .values()
        .filter(|n| !n.dir)
        .map(|n| n.data.len() as u64)
        .sum()
}

/// The parent of a create or listing: the space's root, or a folder of that space.
pub(super) fn check_parent(
    st: &State,
    space: Space,
    parent: Option<u64>,
    ep: &str,
) -> ApiResult<()> {
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
pub(super) fn replaced_size(
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

pub(super) fn check_quota(st: &State, replaced: u64, size: u64, ep: &str) -> ApiResult<()> {
    let after = used(st).saturating_sub(replaced).saturating_add(size);
    if after > st.quota {
        return Err(status_msg(ep, 507, "storage limit exceeded"));
    }
    Ok(())
}

pub(super) fn expected_part_size(size: u64, chunk: u64, n: u32) -> u64 {
    let start = u64::from(n.saturating_sub(1)).saturating_mul(chunk);
    size.saturating_sub(start).min(chunk)
}

pub(super) fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// The emulator's checks of a complete's part list; the file's bytes when they pass.
pub(super) fn check_claim(up: &Upload, parts: &[CompletedPart], ep: &str) -> ApiResult<Vec<u8>> {
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
