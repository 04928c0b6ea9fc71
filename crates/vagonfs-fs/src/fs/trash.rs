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

    /// `Some` for a create in the merged trash: held in memory in `info/`, EROFS elsewhere.
    pub(crate) fn trash_create<'a>(
        &'a self,
        parent: u64,
        name: &'a OsStr,
        flags: i32,
    ) -> BoxFuture<'a, Option<FsResult<(AttrReply, OpenReply)>>> {
        Box::pin(async move {
            let dir = self.node(parent).ok()?;
            match dir.loc {
                Loc::Trash(TrashDir::Info) => Some(self.create_held(&dir, name, flags).await),
                Loc::Trash(_) => Some(Err(FsError::ReadOnly)),
                _ => None,
            }
        })
    }

    async fn create_held(
        &self,
        dir: &Inode,
        name: &OsStr,
        flags: i32,
    ) -> FsResult<(AttrReply, OpenReply)> {
        self.check_writable(&dir.loc)?;
        api_name(name)?;
        if let Some(ino) = self.held_named(TrashDir::Info, name) {
            if flags & libc::O_EXCL != 0 {
                return Err(FsError::Exists);
            }
            let open = self
                .held_open(ino, flags)
                .ok_or(FsError::StaleInode(ino))??;
            let node = self
                .inodes
                .add_lookup(ino)
                .ok_or(FsError::StaleInode(ino))?;
            return Ok((self.reply(node), open));
        }
        if self.merged_find(TrashDir::Info, name).await?.is_some() {
            // An info file of a storage: GLib never opens one to write.
            return Err(if flags & libc::O_EXCL != 0 {
                FsError::Exists
            } else {
                FsError::ReadOnly
            });
        }
        let pending = lock(&self.trash.held)
            .values()
            .filter(|h| h.shows.is_none())
            .count();
        if pending >= HELD_MAX {
            return Err(FsError::NoSpace(format!(
                "{HELD_MAX} trash info files are waiting for their file already"
            )));
        }
        let n = self.trash.next.fetch_add(1, Ordering::Relaxed);
        let node =
            self.inodes
                .insert_new(Loc::Held { n }, NodeKind::File, name, (dir.ino, dir.loc));
        self.inodes
            .set_local_attrs(node.ino, Some(0), Some(SystemTime::now()));
        lock(&self.trash.held).insert(
            node.ino,
            HeldFile {
                name: name.to_os_string(),
                data: Vec::new(),
                made: Instant::now(),
                shows: None,
            },
        );
        let node = self.node(node.ino)?;
        self.inodes.opened(node.ino, node.size, node.mtime);
        let fh = self.add_file_handle(FileHandle {
            ino: node.ino,
            parent: None,
            stream: Mutex::new(None),
            write: true,
            append: flags & libc::O_APPEND != 0,
        });
        Ok((
            self.reply(node),
            OpenReply {
                fh,
                keep_cache: false,
                direct_io: true,
            },
        ))
    }

    /// `Some` for an open of a held file (a pending info file, or one shown through the
    /// merged `info/`).
    pub(crate) fn held_open(&self, ino: u64, flags: i32) -> Option<FsResult<OpenReply>> {
        let node = self.inodes.get(ino)?;
        if !matches!(node.loc, Loc::Held { .. }) {
            return None;
        }
        let writes = (flags & libc::O_ACCMODE) != libc::O_RDONLY || (flags & libc::O_TRUNC) != 0;
        {
            let mut held = lock(&self.trash.held);
            let Some(file) = held.get_mut(&ino) else {
                return Some(Err(FsError::NotFound));
            };
            if writes && file.shows.is_some() {
                // A storage's info file: written only through that storage.
                return Some(Err(FsError::ReadOnly));
            }
            if flags & libc::O_TRUNC != 0 {
                file.data.clear();
            }
        }
        if flags & libc::O_TRUNC != 0 {
            self.inodes
                .set_local_attrs(ino, Some(0), Some(SystemTime::now()));
        }
        self.inodes.opened(ino, node.size, node.mtime);
        let fh = self.add_file_handle(FileHandle {
            ino,
            parent: None,
            stream: Mutex::new(None),
            write: writes,
            append: flags & libc::O_APPEND != 0,
        });
        Some(Ok(OpenReply {
            fh,
            keep_cache: false,
            direct_io: true,
        }))
    }

    /// `Some` for a write to a held file.
    pub(crate) fn held_write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Option<FsResult<u32>> {
        let node = self.inodes.get(ino)?;
        if !matches!(node.loc, Loc::Held { .. }) {
            return None;
        }
        Some(self.held_write_in(ino, fh, offset, data))
    }

    fn held_write_in(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.file_handle(ino, fh)?;
        if !handle.write {
            return Err(FsError::BadHandle(fh));
        }
        let len = {
            let mut held = lock(&self.trash.held);
            let file = held.get_mut(&ino).ok_or(FsError::NotFound)?;
            let start = if handle.append {
                file.data.len()
            } else {
                usize::try_from(offset).map_err(|_| FsError::TooLarge)?
            };
            let end = start.checked_add(data.len()).ok_or(FsError::TooLarge)?;
            if end > HELD_BYTES_MAX {
                return Err(FsError::TooLarge);
            }
            if file.data.len() < end {
                file.data.resize(end, 0);
            }
            file.data[start..end].copy_from_slice(data);
            file.data.len()
        };
        self.inodes
            .set_local_attrs(ino, Some(len as u64), Some(SystemTime::now()));
        u32::try_from(data.len()).map_err(|_| FsError::TooLarge)
    }

    /// `Some` for a read of a held file. An info file of a storage is read whole at the first
    /// read (through the storage's inode) and served with its `Path=` prefixed.
    pub(crate) fn held_read<'a>(
        &'a self,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> BoxFuture<'a, Option<FsResult<Bytes>>> {
        Box::pin(async move {
            let node = self.inodes.get(ino)?;
            if !matches!(node.loc, Loc::Held { .. }) {
                return None;
            }
            Some(self.held_read_in(ino, offset, size).await)
        })
    }

    async fn held_read_in(&self, ino: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let (shows, empty) = {
            let held = lock(&self.trash.held);
            let file = held.get(&ino).ok_or(FsError::NotFound)?;
            (file.shows.clone(), file.data.is_empty())
        };
        if let Some(shows) = shows
            && (offset == 0 || empty)
        {
            // A fresh copy at each read from the start (a reader of a changed file sees it).
            let body = self.read_real_info(&shows).await?;
            let prefix = self
                .trash_stores()
                .await?
                .into_iter()
                .find(|s| s.space == shows.space);
            let shown = match prefix {
                Some(store) => to_top_path(&body, &store.prefix),
                None => body,
            };
            let len = shown.len() as u64;
            if let Some(file) = lock(&self.trash.held).get_mut(&ino) {
                file.data = shown;
            }
            // The listed size was a guess (stored size + prefix): now it is known.
            self.inodes.set_local_attrs(ino, Some(len), None);
        }
        let held = lock(&self.trash.held);
        let file = held.get(&ino).ok_or(FsError::NotFound)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let end = start.saturating_add(size as usize).min(file.data.len());
        Ok(Bytes::copy_from_slice(&file.data[start..end]))
    }

    /// The bytes of the storage's info file `shows`, at most [`HELD_BYTES_MAX`].
    async fn read_real_info(&self, shows: &Shows) -> FsResult<Vec<u8>> {
        // Its inode, held (one lookup) for the read: the one the view found while it still
        // shows that file, else whatever the storage's `info/` shows under its name now.
        let linked = self
            .inodes
            .get(shows.ino)
            .filter(|n| self.inodes.is_linked(n))
            .and_then(|n| self.inodes.add_lookup(n.ino));
        let real = match linked {
            Some(node) => node.ino,
            None => {
                let dir = self.node(shows.dir)?;
                let found: BoxFuture<'_, FsResult<Option<Resolved>>> =
                    Box::pin(self.resolve(&dir, &shows.name));
                match found.await?.ok_or(FsError::NotFound)? {
                    Resolved::Node(n) => {
                        self.inodes
                            .add_lookup(n.ino)
                            .ok_or(FsError::StaleInode(n.ino))?
                            .ino
                    }
                    Resolved::Listed(e) => {
                        self.inodes
                            .upsert(&e.seen, &e.name, (dir.ino, dir.loc), true)
                            .ino
                    }
                }
            }
        };
        let body = self.read_whole(real).await;
        self.inodes.forget(real, 1);
        body
    }

    async fn read_whole(&self, real: u64) -> FsResult<Vec<u8>> {
        let open: BoxFuture<'_, FsResult<OpenReply>> = Box::pin(self.open(real, libc::O_RDONLY));
        let fh = open.await?.fh;
        let mut body = Vec::new();
        let result = loop {
            let chunk: BoxFuture<'_, FsResult<Bytes>> =
                Box::pin(self.read(real, fh, body.len() as u64, 64 << 10));
            match chunk.await {
                Ok(b) if b.is_empty() => break Ok(()),
                Ok(b) => {
                    body.extend_from_slice(&b);
                    if body.len() > HELD_BYTES_MAX {
                        break Err(FsError::TooLarge);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let _ = self.release(real, fh).await;
        result.map(|()| body)
    }

    /// `Some` for a setattr of a held file (a truncate, a time).
    pub(crate) fn held_setattr(&self, ino: u64, set: &SetAttr) -> Option<FsResult<AttrReply>> {
        let node = self.inodes.get(ino)?;
        if !matches!(node.loc, Loc::Held { .. }) {
            return None;
        }
        if let Some(size) = set.size {
            let mut held = lock(&self.trash.held);
            let Some(file) = held.get_mut(&ino) else {
                return Some(Err(FsError::NotFound));
            };
            if file.shows.is_some() {
                return Some(Err(FsError::ReadOnly));
            }
            match usize::try_from(size) {
                Ok(s) if s <= HELD_BYTES_MAX => file.data.resize(s, 0),
                _ => return Some(Err(FsError::TooLarge)),
            }
            drop(held);
            self.inodes
                .set_local_attrs(ino, Some(size), Some(SystemTime::now()));
        }
        if let Some(t) = set.mtime {
            self.inodes.set_mtime_override(ino, Some(t));
        }
        Some(self.node(ino).map(|n| self.reply(n)))
    }

    /// Forget a held file (unlinked, committed, or replaced by a rename).
    fn drop_held(&self, ino: u64) {
        lock(&self.trash.held).remove(&ino);
        self.inodes.unbind(ino);
    }

    /// `Some` for an unlink in the merged trash: a held file is dropped, a storage's object
    /// deleted in its own folder.
    pub(crate) fn trash_unlink<'a>(
        &'a self,
        parent: u64,
        name: &'a OsStr,
    ) -> BoxFuture<'a, Option<FsResult<()>>> {
        Box::pin(async move {
            let dir = self.node(parent).ok()?;
            let part = match dir.loc {
                Loc::Trash(TrashDir::Top) => return Some(Err(FsError::ReadOnly)),
                Loc::Trash(part) => part,
                _ => return None,
            };
            if let Err(e) = self.check_writable(&dir.loc) {
                return Some(Err(e));
            }
            if let Some(ino) = self.held_named(part, name) {
                self.drop_held(ino);
                return Some(Ok(()));
            }
            Some(match self.merged_find(part, name).await {
                Ok(Some(m)) => {
                    let done: BoxFuture<'_, FsResult<()>> =
                        Box::pin(self.unlink(m.dir.ino, &m.name));
                    done.await
                }
                Ok(None) => Err(FsError::NotFound),
                Err(e) => Err(e),
            })
        })
    }

    /// `Some` for an rmdir in the merged trash: the storage's folder is removed.
    pub(crate) fn trash_rmdir<'a>(
        &'a self,
        parent: u64,
        name: &'a OsStr,
    ) -> BoxFuture<'a, Option<FsResult<()>>> {
        Box::pin(async move {
            let dir = self.node(parent).ok()?;
            let part = match dir.loc {
                Loc::Trash(TrashDir::Top) => return Some(Err(FsError::ReadOnly)),
                Loc::Trash(part) => part,
                _ => return None,
            };
            if let Err(e) = self.check_writable(&dir.loc) {
                return Some(Err(e));
            }
            Some(match self.merged_find(part, name).await {
                Ok(Some(m)) => {
                    let done: BoxFuture<'_, FsResult<()>> =
                        Box::pin(self.rmdir(m.dir.ino, &m.name));
                    done.await
                }
                Ok(None) => Err(FsError::NotFound),
                Err(e) => Err(e),
            })
        })
    }

    /// `Some` for a rename from or into the merged trash (see the module note).
    pub(crate) fn trash_rename<'a>(
        &'a self,
        parent: u64,
        name: &'a OsStr,
        newparent: u64,
        newname: &'a OsStr,
        flags: u32,
    ) -> BoxFuture<'a, Option<FsResult<()>>> {
        Box::pin(async move {
            let src = self.node(parent).ok()?;
            let dst = self.node(newparent).ok()?;
            if !matches!(src.loc, Loc::Trash(_)) && !matches!(dst.loc, Loc::Trash(_)) {
                return None;
            }
            Some(self.trash_move(&src, name, &dst, newname, flags).await)
        })
    }

    async fn trash_move(
        &self,
        src: &Inode,
        name: &OsStr,
        dst: &Inode,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable(&src.loc)?;
        self.check_writable(&dst.loc)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(FsError::InvalidArgument(
                "RENAME_EXCHANGE is not supported".into(),
            ));
        }
        if let Loc::Trash(part) = src.loc
            && let Some(ino) = self.held_named(part, name)
        {
            return self.rename_held(ino, dst, newname, flags).await;
        }
        // Where the object is.
        let (from, from_name, store) = match src.loc {
            Loc::Trash(TrashDir::Top) => return Err(FsError::ReadOnly),
            Loc::Trash(part) => {
                let m = self
                    .merged_find(part, name)
                    .await?
                    .ok_or(FsError::NotFound)?;
                (m.dir, m.name, m.store)
            }
            _ => {
                let space = src.loc.space().ok_or(FsError::ReadOnly)?;
                let store = self
                    .trash_stores()
                    .await?
                    .into_iter()
                    .find(|s| s.space == space)
                    .ok_or(FsError::ReadOnly)?;
                (src.clone(), name.to_os_string(), store)
            }
        };
        // Where it goes: into the trash, that storage's own trash, never replacing.
        let (to, flags) = match dst.loc {
            Loc::Trash(TrashDir::Top) => return Err(FsError::ReadOnly),
            Loc::Trash(part) => {
                api_name(newname)?;
                let dir = self
                    .store_dir(&store, part, true)
                    .await?
                    .ok_or(FsError::NotFound)?;
                (dir, flags | libc::RENAME_NOREPLACE)
            }
            _ => (dst.clone(), flags),
        };
        // The source exists (nothing is written for a name that is not there), and has an
        // inode for the move (held by one lookup while it runs).
        let looked: BoxFuture<'_, FsResult<AttrReply>> =
            Box::pin(self.lookup(from.ino, &from_name));
        let looked = looked.await?.attr.ino;
        let result = self
            .trash_move_found(src, dst, &from, &from_name, &store, &to, newname, flags)
            .await;
        self.forget(looked, 1);
        if result.is_ok() {
            // The next view lists it afresh (it shows the move even once the inode is gone).
            self.dirs.invalidate(to.loc);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn trash_move_found(
        &self,
        src: &Inode,
        dst: &Inode,
        from: &Inode,
        from_name: &OsStr,
        store: &Store,
        to: &Inode,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        // Trashing a file: its info file goes to the storage first.
        let info = match (src.loc, dst.loc) {
            (Loc::Trash(_), _) => None,
            (_, Loc::Trash(TrashDir::Files)) => {
                let mut info_name = newname.to_os_string();
                info_name.push(INFO_EXT);
                self.held_named(TrashDir::Info, &info_name)
                    .map(|ino| (ino, info_name))
            }
            _ => None,
        };
        let committed = match &info {
            Some((ino, info_name)) => Some(self.commit_info(store, *ino, info_name).await?),
            None => None,
        };
        let moved: BoxFuture<'_, FsResult<()>> =
            Box::pin(self.rename(from.ino, from_name, to.ino, newname, flags));
        match moved.await {
            Ok(()) => {
                if let (Some((ino, info_name)), Some((dir, file))) = (&info, &committed) {
                    self.held_now_shows(*ino, store.space, *file, info_name, dir.ino);
                }
                Ok(())
            }
            Err(e) => {
                if let (Some((dir, _)), Some((_, info_name))) = (committed, &info) {
                    let undo: BoxFuture<'_, FsResult<()>> =
                        Box::pin(self.unlink(dir.ino, info_name));
                    if let Err(undo) = undo.await {
                        tracing::warn!(name = ?info_name, error = %undo, "cannot remove the trash info file of a failed move to the trash");
                    }
                }
                Err(e)
            }
        }
    }

    /// Rename a held info file: within the merged `info/` only (GLib's temporary file renamed
    /// over `NAME.trashinfo`).
    async fn rename_held(
        &self,
        ino: u64,
        dst: &Inode,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if dst.loc != Loc::Trash(TrashDir::Info) {
            return Err(FsError::CrossDevice(
                "a trash info file waiting for its file stays in the trash".into(),
            ));
        }
        api_name(newname)?;
        if let Some(old) = self.held_named(TrashDir::Info, newname) {
            if old == ino {
                return Ok(());
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            self.drop_held(old);
        } else if self.merged_find(TrashDir::Info, newname).await?.is_some() {
            // A storage's info file is never replaced from here.
            return Err(FsError::Exists);
        }
        if let Some(file) = lock(&self.trash.held).get_mut(&ino) {
            file.name = newname.to_os_string();
        }
        self.inodes.set_place(ino, (dst.ino, dst.loc), newname);
        Ok(())
    }

    /// Write held info file `ino` as `name` in `store`'s own `info/` (made if missing), its
    /// `Path=` made relative to the storage. The folder it went to and the file's inode.
    async fn commit_info(&self, store: &Store, ino: u64, name: &OsStr) -> FsResult<(Inode, u64)> {
        let data = lock(&self.trash.held)
            .get(&ino)
            .map(|h| h.data.clone())
            .ok_or(FsError::NotFound)?;
        let body = to_store_path(&data, &store.prefix);
        let dir = self
            .store_dir(store, TrashDir::Info, true)
            .await?
            .ok_or(FsError::NotFound)?;
        let made: BoxFuture<'_, FsResult<(AttrReply, OpenReply)>> = Box::pin(self.create(
            dir.ino,
            name,
            0o600,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        ));
        let (attr, open) = made.await?;
        let file = attr.attr.ino;
        let mut written = 0usize;
        let mut result = Ok(());
        while written < body.len() {
            match self
                .write(file, open.fh, written as u64, &body[written..])
                .await
            {
                Ok(0) => {
                    result = Err(FsError::Io(std::io::Error::from(
                        std::io::ErrorKind::WriteZero,
                    )));
                    break;
                }
                Ok(n) => written += n as usize,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.flush(file, open.fh).await;
        }
        let _ = self.release(file, open.fh).await;
        // The create's lookup is kept: the inode stays while the mount lives (a few hundred
        // bytes), so the storage's `info/` shows the file over listings fetched before its
        // upload (in the background) landed, and a failed move can remove it again.
        if let Err(e) = result {
            let undo: BoxFuture<'_, FsResult<()>> = Box::pin(self.unlink(dir.ino, name));
            let _ = undo.await;
            return Err(e);
        }
        Ok((dir, file))
    }

    /// Held info file `ino` was written to the storage as `file` (`name` in folder `dir`): it
    /// is no longer pending, and goes on serving the same bytes as the merged view's inode for
    /// that file, so the kernel's entry for it (and an open by gvfs right after the trash)
    /// stays good.
    fn held_now_shows(&self, ino: u64, space: Space, file: u64, name: &OsStr, dir: u64) {
        if let Some(held) = lock(&self.trash.held).get_mut(&ino) {
            held.shows = Some(Shows {
                space,
                ino: file,
                name: name.to_os_string(),
                dir,
            });
            held.made = Instant::now();
        }
        // The alias's own count (the kernel's is the create's), given back by `prune_held`.
        self.inodes.add_lookup(ino);
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

/// A path escaped as GLib writes `Path=` (`g_uri_escape_string(path, "/", FALSE)`).
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Path=` lines of an info file rewritten by `f` (other lines untouched).
fn map_path_lines(data: &[u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for line in data.split_inclusive(|b| *b == b'\n') {
        match line.strip_prefix(b"Path=") {
            Some(value) => {
                out.extend_from_slice(b"Path=");
                out.extend_from_slice(&f(value));
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// An info file as stored in a storage: `Path=` relative to the `--all` root made relative to
/// the storage (`prefix` = its folder from the root); any other `Path=` is kept as it is.
pub(crate) fn to_store_path(data: &[u8], prefix: &str) -> Vec<u8> {
    let escaped = escape_path(prefix);
    map_path_lines(data, |value| match value.strip_prefix(escaped.as_bytes()) {
        Some(rest) => rest.to_vec(),
        None => value.to_vec(),
    })
}

/// An info file as read through the merged `info/`: a relative `Path=` gets the storage's
/// folder in front again.
pub(crate) fn to_top_path(data: &[u8], prefix: &str) -> Vec<u8> {
    let escaped = escape_path(prefix);
    map_path_lines(data, |value| {
        if value.starts_with(b"/") {
            value.to_vec()
        } else {
            let mut v = escaped.as_bytes().to_vec();
            v.extend_from_slice(value);
            v
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] =
        b"[Trash Info]\nPath=machines/Work%20PC/dir/a%20b.txt\nDeletionDate=2026-11-30T01:02:03\n";

    #[test]
    fn path_made_relative_to_the_storage_and_back() {
        let stored = to_store_path(INFO, "machines/Work PC/");
        assert_eq!(
            stored,
            b"[Trash Info]\nPath=dir/a%20b.txt\nDeletionDate=2026-11-30T01:02:03\n"
        );
        assert_eq!(to_top_path(&stored, "machines/Work PC/"), INFO);
        assert_eq!(
            to_top_path(&stored, "machines/Work PC/").len() - stored.len(),
            escape_path("machines/Work PC/").len()
        );
    }

    #[test]
    fn other_paths_are_kept() {
        let other = b"[Trash Info]\nPath=shared/x\n";
        assert_eq!(to_store_path(other, "machines/A/"), other);
        let absolute = b"[Trash Info]\nPath=/home/u/x\n";
        assert_eq!(to_top_path(absolute, "shared/"), absolute);
    }

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
