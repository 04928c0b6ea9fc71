//! The XDG trash at the root of the `RootSpec::All` layout (`machines/`, `shared/`,
//! `recordings/`).
//!
//! GLib (`gio trash`, file managers) trashes a file into `$top/.Trash-$uid/{files,info}`, `$top`
//! being the mount point (a FUSE mount is one device). With `--machine`/`--shared` that is an
//! ordinary folder of the storage. At the `--all` root (read-only otherwise) the mount shows a
//! virtual `.Trash-$uid` (`$uid` = the mount's `--uid`, the owner of every file it shows, so
//! the only user GLib lets use it) holding `files/` and `info/`, views merging every writable
//! storage's own `.Trash-$uid/files` and `.Trash-$uid/info` (shared first, then the machines in
//! listing order; the recordings have no trash). It holds `expunged/` too, where gvfs moves an
//! item before deleting it (Empty Trash), merged and routed like `files/`.
//!
//! Files: this one (the views, the storages, the merge), `held` (files held in memory:
//! pending info files and info files read through the root), `moves` (unlink, rmdir, rename
//! routed to the storage; the info file written before its file moves), `info` (`Path=`).
//!
//! Subtle cases owned here:
//! - a rename from storage S into `files/NAME` is a rename into S's `.Trash-$uid/files/NAME`
//!   (folders made on first use), the same-storage move the mount always does: no byte crosses
//!   storages. It never replaces (`RENAME_NOREPLACE`: EEXIST when S's trash holds the name
//!   already, so an orphan there is never overwritten). A rename out of `files/` or `info/`
//!   (restore) starts from the storage's object; into another storage it answers what any
//!   cross-storage rename answers (EXDEV). unlink and rmdir act on the storage's object;
//! - GLib writes `info/NAME.trashinfo` (an `O_EXCL` create, then a temporary file renamed over
//!   it) *before* the rename names the storage, so a file made in the merged `info/` is held in
//!   memory ([`HELD_MAX`] files of at most [`HELD_BYTES_MAX`] bytes; dropped after
//!   [`HELD_TTL`]). The rename of `files/NAME` writes `NAME.trashinfo` to S's `info/` first
//!   (XDG's order: a crash between leaves an info file without its file, never a file without
//!   its info), then moves the file; a failed move removes that copy again. An info file never
//!   followed by a rename is dropped (GLib unlinks it after a failed rename): nothing of it
//!   reaches a server;
//! - `Path=` in an info file is relative to the trash's top. Stored in S it is made relative to
//!   S's root (`machines/X/dir/f` → `dir/f`), so a `--machine` mount of S sees a correct trash;
//!   read through the merged `info/` an info file shows it prefixed again (the file is served
//!   from memory, `direct_io`: its listed size is the stored one plus the prefix);
//! - names taken in more than one storage: the first storage keeps the name, the others show
//!   as `NAME~TAG` in `files/` and `NAME~TAG.trashinfo` in `info/` (TAG = `shared` or the
//!   machine id, again suffixed if taken), so a file and its info file still pair up;
//! - never lose a byte: only what the merged view shows can be removed through it; a storage
//!   whose trash cannot be listed is left out of the view (logged), so Empty Trash never
//!   touches it; the view fails only when no storage could be listed. Folders under
//!   `files/NAME` are the storage's own: rmdir there keeps its usual rules (a folder whose
//!   listing is not complete is never deleted).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::api::Space;

mod held;
mod info;
mod moves;

use info::{escape_path, to_store_path, to_top_path};

use super::inode::{Inode, Loc, Seen, TrashDir};
use super::names::{DirView, Resolved};
use super::ops_write::api_name;
use super::{
    AttrReply, FileHandle, FsError, FsResult, NodeKind, OpenReply, ROOT_INO, SetAttr, VagonFs, lock,
};

/// Most info files held in memory at once (GLib holds one per trash operation in flight).
pub(crate) const HELD_MAX: usize = 64;

/// Longest an info file is held without the rename of its file.
pub(crate) const HELD_TTL: Duration = Duration::from_secs(600);

/// Largest held info file (GLib's are a few hundred bytes).
pub(crate) const HELD_BYTES_MAX: usize = 64 << 10;

const INFO_EXT: &str = ".trashinfo";

/// A file of the merged `info/` kept in memory.
struct HeldFile {
    name: OsString,
    data: Vec<u8>,
    made: Instant,
    /// `Some`: an info file of a storage read through the merged view (its `Path=` prefixed),
    /// not a pending one: never committed, and only its bytes are served.
    shows: Option<Shows>,
}

/// The storage's info file a held alias shows.
#[derive(Debug, Clone)]
struct Shows {
    space: Space,
    /// Its inode (the number stays when an upload re-binds it to a new id).
    ino: u64,
    name: OsString,
    /// Its folder (the storage's own `info/`), to find it by name once its inode is gone.
    dir: u64,
}

/// The merged trash's state: the held info files, by inode.
pub(crate) struct Trash {
    held: Mutex<HashMap<u64, HeldFile>>,
    next: AtomicU64,
}

impl Trash {
    pub(crate) fn new() -> Self {
        Trash {
            held: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

/// A storage whose trash the merged view shows.
#[derive(Debug, Clone)]
struct Store {
    space: Space,
    root: Inode,
    /// Its path from the `--all` root, with a trailing `/` (`shared/`, `machines/NAME/`).
    prefix: String,
    /// What a clashing name gets after `~`.
    tag: String,
}

/// One entry of a merged folder.
#[derive(Debug, Clone)]
struct Merged {
    /// The name shown in the merged folder.
    shown: OsString,
    /// Its name in the storage's own folder.
    name: OsString,
    /// The storage's own `files/` or `info/`.
    dir: Inode,
    ino: u64,
    store: Store,
}

impl TrashDir {
    /// The folders of `.Trash-$uid`, as listed.
    const PARTS: [TrashDir; 3] = [TrashDir::Expunged, TrashDir::Files, TrashDir::Info];

    /// Its name in `.Trash-$uid` (`None` for `.Trash-$uid` itself).
    fn folder_name(self) -> Option<&'static str> {
        match self {
            TrashDir::Top => None,
            TrashDir::Files => Some("files"),
            TrashDir::Info => Some("info"),
            TrashDir::Expunged => Some("expunged"),
        }
    }
}

impl VagonFs {
    /// `.Trash-$uid` for this mount's owner.
    fn trash_name(&self) -> OsString {
        OsString::from(format!(".Trash-{}", self.config.uid))
    }

    /// The inode of a folder of the merged trash (made at the first need).
    fn trash_node(&self, part: TrashDir) -> Inode {
        let (name, parent) = match part.folder_name() {
            None => (self.trash_name(), (ROOT_INO, Loc::AllRoot)),
            Some(name) => (
                OsString::from(name),
                (
                    self.trash_node(TrashDir::Top).ino,
                    Loc::Trash(TrashDir::Top),
                ),
            ),
        };
        let seen = Seen {
            loc: Loc::Trash(part),
            kind: NodeKind::Directory,
            size: 0,
            mtime: None,
        };
        self.inodes.upsert(&seen, &name, parent, false)
    }

    /// The `.Trash-$uid` entry of the `--all` root's listing (`None` for any other folder).
    pub(crate) fn trash_root_entry(&self, dir: &Inode) -> Option<(OsString, u64)> {
        (dir.loc == Loc::AllRoot).then(|| (self.trash_name(), self.trash_node(TrashDir::Top).ino))
    }

    /// `Some` when `dir` is the `--all` root asked for `.Trash-$uid`, or a folder of the merged
    /// trash: what `name` shows there.
    pub(crate) fn trash_resolve<'a>(
        &'a self,
        dir: &'a Inode,
        name: &'a OsStr,
    ) -> BoxFuture<'a, Option<FsResult<Option<Resolved>>>> {
        Box::pin(async move {
            let part = match dir.loc {
                Loc::AllRoot if name == self.trash_name() => {
                    return Some(Ok(Some(Resolved::Node(self.trash_node(TrashDir::Top)))));
                }
                Loc::Trash(TrashDir::Top) => {
                    let part = TrashDir::PARTS
                        .into_iter()
                        .find(|p| p.folder_name().is_some_and(|n| name == n));
                    return Some(Ok(part.map(|p| Resolved::Node(self.trash_node(p)))));
                }
                Loc::Trash(part) => part,
                _ => return None,
            };
            if let Some(ino) = self.held_named(part, name) {
                return Some(Ok(self.inodes.get(ino).map(Resolved::Node)));
            }
            let found = self.merged_find(part, name).await;
            Some(
                found.map(|m| {
                    m.and_then(|m| self.inodes.get(self.shown_ino(&m)).map(Resolved::Node))
                }),
            )
        })
    }

    /// `Some` for a folder of the merged trash: what it shows.
    pub(crate) fn trash_view<'a>(
        &'a self,
        dir: &'a Inode,
    ) -> BoxFuture<'a, Option<FsResult<Arc<DirView>>>> {
        Box::pin(async move {
            let part = match dir.loc {
                Loc::Trash(TrashDir::Top) => {
                    return Some(Ok(DirView::local_only(
                        TrashDir::PARTS
                            .into_iter()
                            .filter_map(|p| Some((p.folder_name()?.into(), self.trash_node(p).ino)))
                            .collect(),
                    )));
                }
                Loc::Trash(part) => part,
                _ => return None,
            };
            let merged = match self.merged(part).await {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let mut names: Vec<(OsString, u64)> = merged
                .iter()
                .map(|m| (m.shown.clone(), self.shown_ino(m)))
                .collect();
            let taken: HashSet<OsString> = names.iter().map(|(n, _)| n.clone()).collect();
            if part == TrashDir::Info {
                self.prune_held();
                let held = lock(&self.trash.held);
                names.extend(
                    held.iter()
                        .filter(|(_, h)| h.shows.is_none() && !taken.contains(&h.name))
                        .map(|(ino, h)| (h.name.clone(), *ino)),
                );
            }
            Some(Ok(DirView::local_only(names)))
        })
    }

    /// The pending (held) info file shown as `name` in `part`, if any.
    fn held_named(&self, part: TrashDir, name: &OsStr) -> Option<u64> {
        if part != TrashDir::Info {
            return None;
        }
        self.prune_held();
        lock(&self.trash.held)
            .iter()
            .find(|(_, h)| h.shows.is_none() && h.name == name)
            .map(|(ino, _)| *ino)
    }

    /// Drop held files older than [`HELD_TTL`] (an info file whose file never came).
    fn prune_held(&self) {
        let expired: Vec<(u64, HeldFile)> = {
            let mut held = lock(&self.trash.held);
            let old: Vec<u64> = held
                .iter()
                .filter(|(_, h)| h.made.elapsed() > HELD_TTL)
                .map(|(ino, _)| *ino)
                .collect();
            old.into_iter()
                .filter_map(|ino| held.remove(&ino).map(|h| (ino, h)))
                .collect()
        };
        for (ino, h) in expired {
            self.inodes.unbind(ino);
            if h.shows.is_some() {
                // The count taken when the alias was made.
                self.inodes.forget(ino, 1);
            } else {
                tracing::info!(name = ?h.name, "dropping a trash info file whose file was never moved to the trash");
            }
        }
    }

    /// Every storage that can have a trash: shared, then the machines.
    async fn trash_stores(&self) -> FsResult<Vec<Store>> {
        let top = self.dirs.listing(Loc::AllRoot).await?;
        let mut stores = Vec::new();
        let mut machines = None;
        for e in &top.entries {
            match e.seen.loc {
                Loc::SpaceRoot(Space::Shared) => stores.push(Store {
                    space: Space::Shared,
                    root: self
                        .inodes
                        .upsert(&e.seen, &e.name, (ROOT_INO, Loc::AllRoot), false),
                    prefix: format!("{}/", e.name.to_string_lossy()),
                    tag: "shared".into(),
                }),
                Loc::Machines => {
                    machines = Some((
                        self.inodes
                            .upsert(&e.seen, &e.name, (ROOT_INO, Loc::AllRoot), false),
                        e.name.to_string_lossy().into_owned(),
                    ));
                }
                _ => {}
            }
        }
        let Some((machines, folder)) = machines else {
            return Ok(stores);
        };
        let listing = self.dirs.listing(Loc::Machines).await?;
        for e in &listing.entries {
            if let Loc::SpaceRoot(space @ Space::Machine(id)) = e.seen.loc {
                stores.push(Store {
                    space,
                    root: self
                        .inodes
                        .upsert(&e.seen, &e.name, (machines.ino, machines.loc), false),
                    prefix: format!("{folder}/{}/", e.name.to_string_lossy()),
                    tag: id.to_string(),
                });
            }
        }
        Ok(stores)
    }

    /// The folder `name` in `dir` (a storage folder), made when `create` and missing.
    async fn sub_dir(&self, dir: &Inode, name: &OsStr, create: bool) -> FsResult<Option<Inode>> {
        let found: BoxFuture<'_, FsResult<Option<Resolved>>> = Box::pin(self.resolve(dir, name));
        match found.await? {
            Some(Resolved::Node(n)) if n.kind == NodeKind::Directory => Ok(Some(n)),
            Some(Resolved::Listed(e)) if e.seen.kind == NodeKind::Directory => Ok(Some(
                self.inodes
                    .upsert(&e.seen, &e.name, (dir.ino, dir.loc), false),
            )),
            Some(_) => Err(FsError::NotADirectory),
            None if create => {
                let made: BoxFuture<'_, FsResult<AttrReply>> =
                    Box::pin(self.mkdir(dir.ino, name, 0o700));
                // The mkdir's lookup stays counted: the inode stays while the mount lives.
                let ino = made.await?.attr.ino;
                Ok(Some(self.node(ino)?))
            }
            None => Ok(None),
        }
    }

    /// S's `.Trash-$uid/files` or `.Trash-$uid/info`, made when `create` and missing.
    async fn store_dir(
        &self,
        store: &Store,
        part: TrashDir,
        create: bool,
    ) -> FsResult<Option<Inode>> {
        let Some(top) = self
            .sub_dir(&store.root, &self.trash_name(), create)
            .await?
        else {
            return Ok(None);
        };
        match part.folder_name() {
            None => Ok(Some(top)),
            Some(name) => self.sub_dir(&top, OsStr::new(name), create).await,
        }
    }

    /// What the merged `part` shows, storage by storage.
    async fn merged(&self, part: TrashDir) -> FsResult<Vec<Merged>> {
        let stores = self.trash_stores().await?;
        let lists = futures::future::join_all(stores.iter().map(|store| async move {
            let Some(dir) = self.store_dir(store, part, false).await? else {
                return Ok(None);
            };
            let children = self.children_of(dir.loc).await?;
            Ok::<_, FsError>(Some((dir, children)))
        }))
        .await;
        let mut out = Vec::new();
        let mut taken = HashSet::new();
        let mut failed = None;
        let mut listed = 0usize;
        for (store, got) in stores.iter().zip(lists) {
            let (dir, children) = match got {
                Ok(Some(found)) => found,
                Ok(None) => {
                    listed += 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(space = ?store.space, error = %e, "trash of this storage not shown: cannot list it");
                    failed.get_or_insert(e);
                    continue;
                }
            };
            listed += 1;
            for (name, child) in children {
                let shown = unique_name(&name, &store.tag, part, &mut taken);
                let ino = match child.ino {
                    Some(ino) => ino,
                    None => {
                        let seen = Seen {
                            loc: child.loc,
                            kind: child.kind,
                            size: child.size,
                            mtime: child.remote_mtime,
                        };
                        self.inodes
                            .upsert(&seen, &name, (dir.ino, dir.loc), false)
                            .ino
                    }
                };
                out.push(Merged {
                    shown,
                    name,
                    dir: dir.clone(),
                    ino,
                    store: store.clone(),
                });
            }
        }
        match failed {
            Some(e) if listed == 0 => Err(e),
            _ => Ok(out),
        }
    }

    async fn merged_find(&self, part: TrashDir, name: &OsStr) -> FsResult<Option<Merged>> {
        Ok(self
            .merged(part)
            .await?
            .into_iter()
            .find(|m| m.shown == name))
    }

    /// The inode the merged view shows for `m`: the storage's object, except an info file
    /// (shown through an inode serving it with `Path=` prefixed).
    fn shown_ino(&self, m: &Merged) -> u64 {
        let Some(node) = self.inodes.get(m.ino) else {
            return m.ino;
        };
        // Its length as shown (a spool not uploaded yet has its own).
        let node = self.shown(node);
        if m.dir.name.as_deref() != Some(OsStr::new("info")) || node.kind != NodeKind::File {
            return m.ino;
        }
        let size = node.size + escape_path(&m.store.prefix).len() as u64;
        let existing = lock(&self.trash.held)
            .iter_mut()
            .find(|(_, h)| h.shows.as_ref().is_some_and(|s| s.ino == m.ino))
            .map(|(ino, h)| {
                h.made = Instant::now();
                *ino
            });
        if let Some(ino) = existing
            && let Some(alias) = self.inodes.get(ino)
        {
            // Keep its listed size in step with the storage's file.
            if alias.size != size {
                self.inodes.set_local_attrs(ino, Some(size), node.mtime);
            }
            return ino;
        }
        let n = self.trash.next.fetch_add(1, Ordering::Relaxed);
        let info = self.trash_node(TrashDir::Info);
        let alias = self.inodes.insert_new(
            Loc::Held { n },
            NodeKind::File,
            &m.shown,
            (info.ino, info.loc),
        );
        // Its own lookup (from `insert_new`) keeps it while the alias is held (`prune_held`).
        self.inodes
            .set_local_attrs(alias.ino, Some(size), node.mtime);
        lock(&self.trash.held).insert(
            alias.ino,
            HeldFile {
                name: m.shown.clone(),
                data: Vec::new(),
                made: Instant::now(),
                shows: Some(Shows {
                    space: m.store.space,
                    ino: m.ino,
                    name: m.name.clone(),
                    dir: m.dir.ino,
                }),
            },
        );
        alias.ino
    }
}

/// `name` as shown in a merged folder: itself if free, else with `~tag` (before `.trashinfo`
/// in `info/`), again until free.
fn unique_name(name: &OsStr, tag: &str, part: TrashDir, taken: &mut HashSet<OsString>) -> OsString {
    let mut shown = name.to_os_string();
    let bytes = name.as_bytes();
    let stem_len = match part {
        TrashDir::Info if bytes.ends_with(INFO_EXT.as_bytes()) => bytes.len() - INFO_EXT.len(),
        _ => bytes.len(),
    };
    let mut stem = bytes[..stem_len].to_vec();
    while taken.contains(&shown) {
        stem.push(b'~');
        stem.extend_from_slice(tag.as_bytes());
        let mut s = stem.clone();
        s.extend_from_slice(&bytes[stem_len..]);
        shown = OsStr::from_bytes(&s).to_os_string();
    }
    taken.insert(shown.clone());
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashing_names_get_the_storage_tag() {
        let mut taken = HashSet::new();
        let f = |n: &str, tag: &str, part, taken: &mut HashSet<OsString>| {
            unique_name(OsStr::new(n), tag, part, taken)
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(f("a.txt", "shared", TrashDir::Files, &mut taken), "a.txt");
        assert_eq!(f("a.txt", "7", TrashDir::Files, &mut taken), "a.txt~7");
        assert_eq!(f("a.txt", "7", TrashDir::Files, &mut taken), "a.txt~7~7");
        let mut taken = HashSet::new();
        assert_eq!(
            f("a.txt.trashinfo", "shared", TrashDir::Info, &mut taken),
            "a.txt.trashinfo"
        );
        assert_eq!(
            f("a.txt.trashinfo", "7", TrashDir::Info, &mut taken),
            "a.txt~7.trashinfo"
        );
    }
}
