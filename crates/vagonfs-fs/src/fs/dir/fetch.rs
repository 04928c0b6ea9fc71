//! Fetching one folder's children from the server: every page of a folder's listing, the
//! machine list of `machines/`, the fixed entries of the `--all` root; each object turned into
//! a [`ListedEntry`] by `naming.rs`.
//!
//! Subtle case: a listing whose paging stopped early (a server repeating pages, or paging
//! forever) ends with what was gathered and a warning, and is not complete (see `mod.rs`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::Mutex;

use crate::api::{FileEntry, FilesApi, Space, paging};

use super::naming::{machine_entries, sanitize};
use super::{ListedEntry, Progress};
use crate::fs::inode::{Loc, Seen};
use crate::fs::{FsResult, NodeKind};

/// Fetch and sanitise the children of `dir`; `true` when the listing shows all of them.
pub(super) async fn fetch_entries(
    api: &dyn FilesApi,
    dir: Loc,
    warned: &Mutex<HashSet<Loc>>,
    progress: Option<&Progress>,
) -> FsResult<(Vec<ListedEntry>, bool)> {
    match dir {
        Loc::AllRoot => Ok((all_root_entries(), true)),
        Loc::Machines => {
            let machines = list_all_machines(api).await?;
            Ok((machine_entries(machines, warned), true))
        }
        Loc::SpaceRoot(space) | Loc::Remote { space, .. } => {
            let parent = match dir {
                Loc::Remote { id, .. } => Some(id),
                _ => None,
            };
            let got = paging::folder_pages_observed(api, space, parent, None, |page| {
                if let Some(p) = progress {
                    p.take(page);
                }
            })
            .await?;
            Ok(listed_entries(space, parent, got, warned))
        }
        // Only files are created locally; nothing to list.
        Loc::Local { .. } | Loc::Held { .. } => Err(crate::fs::FsError::NotADirectory),
        // Built from the storages' own trash folders by `trash/`, never listed here.
        Loc::Trash(_) => Err(crate::fs::FsError::Unsupported(
            "the merged trash is not a listed folder",
        )),
    }
}

/// A folder's paged objects as entries Linux can show, and whether they are all of them (every
/// page read, every object shown): for a fetch, and for the root's page the mount's probe read.
pub(super) fn listed_entries(
    space: Space,
    parent: Option<u64>,
    got: paging::Collected<FileEntry>,
    warned: &Mutex<HashSet<Loc>>,
) -> (Vec<ListedEntry>, bool) {
    let (raw, paged_all) = report_stop(space, parent, got);
    let before = raw.len();
    let entries = sanitize(space, raw, warned);
    let complete = paged_all && entries.len() == before;
    (entries, complete)
}

fn all_root_entries() -> Vec<ListedEntry> {
    let dir = |name: &str, loc: Loc| ListedEntry {
        name: OsString::from(name),
        seen: Seen {
            loc,
            kind: NodeKind::Directory,
            size: 0,
            mtime: None,
        },
        read_only: false,
    };
    vec![
        dir("machines", Loc::Machines),
        dir(
            "recordings",
            Loc::SpaceRoot(Space::Recordings { machine: None }),
        ),
        dir("shared", Loc::SpaceRoot(Space::Shared)),
    ]
}

/// The items of a folder's pages (objects de-duplicated by id, fetched in parallel once page 1
/// gave the count: `api::paging`), and whether they are all of them: a server that pages
/// wrongly ends the listing with a warning, with what was gathered, and `false`.
fn report_stop(
    space: Space,
    parent: Option<u64>,
    got: paging::Collected<FileEntry>,
) -> (Vec<FileEntry>, bool) {
    if let Some(reason) = &got.stopped {
        tracing::warn!(
            ?space,
            ?parent,
            pages = got.pages,
            "listing stopped early: {reason}"
        );
    }
    let complete = got.stopped.is_none();
    (got.items, complete)
}

/// Every page of `GET /machines`, de-duplicated by id.
async fn list_all_machines(api: &dyn FilesApi) -> FsResult<Vec<crate::api::Machine>> {
    let got = paging::machine_pages(api).await?;
    if let Some(reason) = &got.stopped {
        tracing::warn!(pages = got.pages, "machine listing stopped early: {reason}");
    }
    Ok(got.items)
}
