//! The filesystem core: async, no fuser types in its API.
//!
//! `crate::fuse` decodes kernel requests and calls the methods of [`VagonFs`]; each returns a
//! plain `Result<_, FsError>` that the adapter turns into a reply (errno via
//! [`errno::to_errno`]). The core talks to the storage only through `Arc<dyn FilesApi>`.
//!
//! The method set below is the contract between the adapter and the core; keep it stable.
//!
//! Layout: [`inode`] (the inode table, lookup counts, forget), [`dir`] (listings through every
//! page, the listing cache, name sanitising, negative lookups), `entries` (what the kernel is
//! told: negative entries, mknod, listings through a [`DirectoryReplier`]), [`read`] (download
//! links, block
//! cache, prefetch), [`attr`] (attributes from listings and options), [`statfs`] (quota),
//! [`flight`] (single-flight fetches shared by all of them), [`errno`] (the one errno map),
//! [`write`] (the write-path engine: spools, journal, uploader), `overlay` (local changes laid
//! over cached listings), `names` (name resolution and folder views merging both),
//! `ops_write` (create, open for writing, write, flush, setattr, mkdir, unlink, rmdir, recovery),
//! `rename` (file and folder moves), `trash` (the merged desktop trash at the `--all` root),
//! [`engine`] (background uploads: one worker per dirty
//! file, `--transfers` at once, retries) and `room` (early ENOSPC from the known quota, the
//! `--cache-max-size` bound of the spools).
//!
//! Subtle cases owned here:
//! - every method takes `&self`; state sits behind `std::sync::Mutex`es held for a few map
//!   operations and never across an `.await`, so one slow request never blocks another
//!   operation, and any number of files can be read at once;
//! - readdir answers at most [`READDIR_BATCH`] entries per call from a snapshot of the listing
//!   taken at `opendir` (re-taken on a rewind to offset 0), so offsets stay valid while the
//!   folder changes; the snapshot shares the cached listing (`Arc`), never copies it; each
//!   returned entry counts as a kernel lookup (readdirplus), and the adapter hands the answer to
//!   the kernel through [`VagonFs::send_listing`], which gives back the lookups the kernel did
//!   not take (`entries`);
//! - no metadata operation waits on a relist when a listing exists (stale-while-revalidate, see
//!   `dir`); one that must wait (a folder never listed) waits at most `--op-timeout`, and during
//!   an outage cached listings keep answering (`health`);
//! - writes go to a local spool per inode (shared by all its handles, see `ops_write`), and
//!   are uploaded in the background by the write-back engine (`engine`), kicked by close;
//!   fsync waits for the upload; reads of an inode with a spool are served from it, from any
//!   handle, so what was written is seen at once; the read-only mount and the session
//!   recordings answer EROFS;
//! - a file whose bytes disagree with its listed size answers EIO, remembered per version
//!   (id, size, mtime) by the reader, without relisting its folder; a file found gone from the
//!   server (or changed under its id) at open or read answers ESTALE and drops its folder's
//!   cached listing once, so that the kernel's retry of the open (it looks the name up again on
//!   ESTALE) finds what the name is now (see `read` and `docs/SEMANTICS.md`).

pub mod attr;
mod counters;
mod deletes;
pub mod dir;
pub mod engine;
mod entries;
pub mod errno;
mod flight;
mod health;
mod inode;
mod landing;
mod line_log;
mod names;
mod new_folders;
mod ops_write;
mod overlay;
pub mod read;
mod removes;
mod rename;
mod room;
pub mod statfs;
mod sync;
#[cfg(test)]
mod tests;
pub mod times;
mod trash;
mod tree_walk;
mod types;
mod walk;
pub mod write;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::api::FilesApi;
// The scenario tests (`tests/`) take these through `use crate::fs::*`.
#[cfg(test)]
use crate::api::{ApiError, Space};

use attr::AttrPolicy;
use dir::{DirCache, DirTimes, NAME_MAX};
use health::Health;
use inode::{Inode, InodeTable, Loc};
use names::{DirView, Resolved, Shown};
use ops_write::OpenFile;
use overlay::Overlay;
use read::{FileVersion, Reader, Stream};
use statfs::StatfsCache;
use write::{SpoolDir, UploadRegistry, Uploader};

pub use sync::{FlushReport, RecoveryReport};

pub use counters::CacheCounters;
pub use dir::{DEFAULT_DIR_REFRESH, DEFAULT_OP_TIMEOUT, KernelCache};
pub use entries::{DirectoryReplier, Lookup, Offered};

/// Lock a mutex, recovering from poisoning (a panicked holder must not take the mount down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub use types::*;

/// An open folder: the listing it reads from.
struct DirHandle {
    ino: u64,
    snapshot: Mutex<DirSnapshot>,
}

struct DirSnapshot {
    /// The listing (shared, never copied) and this mount's local changes over it.
    view: Arc<DirView>,
    /// Whether a readdir was answered from it (a later offset 0 is a rewind).
    served: bool,
}

/// An open file.
struct FileHandle {
    ino: u64,
    /// The folder the file was listed in, to drop its listing when the server's data is found
    /// inconsistent.
    parent: Option<Loc>,
    /// What reads of the server's bytes go through; replaced when the file's remote version
    /// changes (an upload from this mount gives it a new id). Unused while the inode has a
    /// spool (reads come from the spool then).
    stream: Mutex<Option<Arc<Stream>>>,
    /// Opened for writing: its close uploads.
    write: bool,
    /// `O_APPEND`: every write goes to the end.
    append: bool,
}

enum Handle {
    Dir(Arc<DirHandle>),
    File(Arc<FileHandle>),
}

/// The filesystem core.
pub struct VagonFs {
    config: FsConfig,
    /// The API, through [`new_folders::NewFolders`] (the same object as `folders`).
    api: Arc<dyn FilesApi>,
    /// Folders made by mkdir, created on the server in the background.
    folders: Arc<new_folders::NewFolders>,
    /// Files removed by unlink, deleted on the server in the background.
    deletes: deletes::Deletes,
    attrs: AttrPolicy,
    inodes: Arc<InodeTable>,
    dirs: DirCache,
    /// Whether the API answers (failures remembered a few seconds).
    health: Arc<Health>,
    overlay: Overlay,
    reader: Arc<Reader>,
    statfs: StatfsCache,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Next file handle number; never reused within a mount.
    next_fh: AtomicU64,
    /// Next `Loc::Local` number.
    next_local: AtomicU64,
    /// The spool folder, opened at the first need.
    spool_dir: Mutex<Option<Arc<SpoolDir>>>,
    uploader: Uploader,
    /// Inodes with a local spool.
    files: Mutex<HashMap<u64, OpenFile>>,
    /// Background uploads (`engine.rs`).
    engine: engine::Engine,
    /// This filesystem, for the engine's tasks (which must not keep it alive).
    me: Weak<VagonFs>,
    /// Modification times set by users, kept across remounts ([`times`]).
    times: times::TimeStore,
    /// The merged trash of the `--all` root (`trash`).
    trash: trash::Trash,
    /// Folder walks, whose next files are read ahead (`walk`).
    walks: walk::Walks,
    /// Folders opened lately, whose next folders are listed ahead (`tree_walk`).
    tree_walks: tree_walk::TreeWalks,
    /// Set once the first recovery round ran (`sync.rs`).
    first_recovery: tokio::sync::OnceCell<()>,
}

impl VagonFs {
    pub fn new(api: Arc<dyn FilesApi>, root: RootSpec, config: FsConfig) -> Arc<Self> {
        let root_loc = match root {
            RootSpec::Space(space) => Loc::SpaceRoot(space),
            RootSpec::All => Loc::AllRoot,
        };
        let folders = new_folders::NewFolders::new(api);
        let api: Arc<dyn FilesApi> = Arc::clone(&folders) as Arc<dyn FilesApi>;
        let uploader = Uploader::new(Arc::clone(&api), UploadRegistry::new())
            .with_chunk_size_mb(config.chunk_size_mb)
            .with_concurrency(config.upload_concurrency)
            // One upload's worth of parts, shared by all (8 files at once use no more).
            .with_part_memory(
                (config.upload_concurrency as u64)
                    .saturating_mul(config.chunk_size_mb)
                    .saturating_mul(write::MIB),
            );
        let inodes = Arc::new(InodeTable::new(root_loc));
        let health = Arc::new(Health::default());
        let times = DirTimes {
            ttl: config.dir_cache_ttl,
            refresh: config.dir_refresh,
            op_timeout: config.op_timeout,
        };
        Arc::new_cyclic(|me| VagonFs {
            me: me.clone(),
            engine: engine::Engine::new(config.write_back),
            attrs: AttrPolicy::new(&config, SystemTime::now()),
            dirs: DirCache::new(
                Arc::clone(&api),
                times,
                Arc::clone(&health),
                Arc::clone(&inodes),
            ),
            inodes,
            health,
            overlay: Overlay::new(config.dir_cache_ttl),
            reader: Reader::new(Arc::clone(&api), config.cache_size, config.read_timeout),
            statfs: StatfsCache::new(Arc::clone(&api), config.op_timeout),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            next_local: AtomicU64::new(1),
            spool_dir: Mutex::new(None),
            uploader,
            files: Mutex::new(HashMap::new()),
            times: times::TimeStore::new(),
            trash: trash::Trash::new(),
            walks: walk::Walks::default(),
            tree_walks: tree_walk::TreeWalks::default(),
            first_recovery: tokio::sync::OnceCell::new(),
            deletes: deletes::Deletes::default(),
            api,
            folders,
            config,
        })
    }

    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<AttrReply> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let dir = self.dir_node(parent)?;
        if name == "." || name == ".." {
            let target = match (name == "..", dir.parent) {
                (true, Some((up, _))) => up,
                _ => parent,
            };
            let node = self
                .inodes
                .add_lookup(target)
                .ok_or(FsError::StaleInode(target))?;
            return Ok(self.attrs.reply(&node));
        }
        let node = match self.resolve(&dir, name).await? {
            Some(Resolved::Node(node)) => self
                .inodes
                .add_lookup(node.ino)
                .ok_or(FsError::StaleInode(node.ino))?,
            Some(Resolved::Listed(entry)) => {
                self.upsert_listed(&entry.seen, &entry.name, (parent, dir.loc), true, None)
            }
            None => return Err(FsError::NotFound),
        };
        Ok(self.reply(node))
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.inodes.forget(ino, nlookup);
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<AttrReply> {
        let node = self.fresh_node(ino).await?;
        Ok(self.reply(node))
    }

    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dir = self.dir_node(ino)?;
        let walking = self.tree_walk_step(&dir);
        let view = self.view(&dir).await?;
        if walking {
            self.tree_walk_entered(dir.loc);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = DirHandle {
            ino,
            snapshot: Mutex::new(DirSnapshot {
                view,
                served: false,
            }),
        };
        lock(&self.handles).insert(fh, Handle::Dir(Arc::new(handle)));
        Ok(fh)
    }

    /// Entries from cookie `offset` on (0 = start), including `.` and `..`. Every returned entry
    /// counts as a lookup of its inode (readdirplus), except `.` and `..`.
    ///
    /// At most [`READDIR_BATCH`] entries per call; an empty answer is the end of the folder.
    pub async fn readdir(&self, ino: u64, fh: u64, offset: i64) -> FsResult<Vec<DirEntry>> {
        let handle = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(h)) if h.ino == ino => Arc::clone(h),
            _ => return Err(FsError::BadHandle(fh)),
        };
        let start = usize::try_from(offset)
            .map_err(|_| FsError::InvalidArgument(format!("readdir offset {offset}")))?;
        let dir = self.dir_node(ino)?;
        let snapshot = {
            let mut snap = lock(&handle.snapshot);
            let rewind = start == 0 && snap.served;
            snap.served = true;
            (!rewind).then(|| Arc::clone(&snap.view))
        };
        let view = match snapshot {
            Some(view) => view,
            None => {
                // rewinddir: show the folder as it is now.
                let fresh = self.view(&dir).await?;
                lock(&handle.snapshot).view = Arc::clone(&fresh);
                fresh
            }
        };
        let total = view.len() + 2;
        let mut out = Vec::new();
        let spooled = std::cell::OnceCell::new();
        for index in start..total.min(start.saturating_add(READDIR_BATCH)) {
            let next = i64::try_from(index + 1).unwrap_or(i64::MAX);
            let entry = match index {
                0 => DirEntry {
                    name: ".".into(),
                    attr: self.attr_of(&dir),
                    offset: next,
                },
                1 => {
                    let up = dir.parent.and_then(|(p, _)| self.inodes.get(p));
                    let attr = self.attr_of(up.as_ref().unwrap_or(&dir));
                    DirEntry {
                        name: "..".into(),
                        attr,
                        offset: next,
                    }
                }
                _ => {
                    let (name, node) = match view.at(index - 2) {
                        None => break,
                        // Removed or shadowed by this mount: its offset stays used.
                        Some(Shown::Hidden) => continue,
                        Some(Shown::Listed(listed)) => (
                            listed.name.as_os_str(),
                            Some(self.upsert_listed(
                                &listed.seen,
                                &listed.name,
                                (ino, dir.loc),
                                true,
                                Some(&spooled),
                            )),
                        ),
                        // Gone since the snapshot (unlinked and forgotten): skipped.
                        Some(Shown::Local { name, ino: local }) => {
                            (name, self.inodes.add_lookup(local))
                        }
                    };
                    let Some(node) = node else { continue };
                    DirEntry {
                        name: name.to_os_string(),
                        attr: self.attr_of(&self.shown(node)),
                        offset: next,
                    }
                }
            };
            out.push(entry);
        }
        Ok(out)
    }

    pub fn releasedir(&self, _ino: u64, fh: u64) {
        let mut handles = lock(&self.handles);
        if matches!(handles.get(&fh), Some(Handle::Dir(_))) {
            handles.remove(&fh);
        }
    }

    /// `flags` are the open(2) flags.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        self.open_by(ino, flags, None).await
    }

    /// [`VagonFs::open`] by process `pid`, when the kernel says which: a process reading the
    /// files of folders in their listed order gets the next files read ahead (`walk`).
    pub async fn open_by(&self, ino: u64, flags: i32, pid: Option<u32>) -> FsResult<OpenReply> {
        if let Some(held) = self.held_open(ino, flags) {
            return held;
        }
        let node = self.node(ino)?;
        if node.kind == NodeKind::Directory {
            return Err(FsError::IsADirectory);
        }
        let writes = (flags & libc::O_ACCMODE) != libc::O_RDONLY || (flags & libc::O_TRUNC) != 0;
        if writes {
            return self.open_for_write(node, flags).await;
        }
        let node = self.shown(self.fresh_node(ino).await?);
        let spooled = self.spooled_file(ino).is_some();
        let stream = match node.loc {
            _ if spooled => None,
            Loc::Remote { id, .. } => {
                let version = FileVersion {
                    id,
                    size: node.size,
                    mtime: node.mtime,
                };
                // The link now, so the first read is one round trip; and a file replaced or
                // deleted elsewhere is noticed here: ESTALE makes the kernel look the name up
                // again, in the folder listed afresh.
                // The files a walk reads next go ahead now, beside this one's link.
                if let Some((_, dir)) = node.parent {
                    self.read_ahead_walk(dir, &node.loc, pid);
                }
                if let Err(e) = self.reader.open(version).await {
                    self.file_gone(ino, node.parent.map(|(_, l)| l), version, &e);
                    return Err(e);
                }
                Some(Arc::new(Stream::new(version)))
            }
            // A local file whose spool is gone (unlinked before it was uploaded).
            Loc::Local { .. } => return Err(FsError::NotFound),
            // Every other location is a folder.
            _ => return Err(FsError::IsADirectory),
        };
        let keep_cache = self
            .inodes
            .opened(ino, node.size, node.mtime)
            .ok_or(FsError::StaleInode(ino))?;
        let fh = self.add_file_handle(FileHandle {
            ino,
            parent: node.parent.map(|(_, l)| l),
            stream: Mutex::new(stream),
            write: false,
            append: false,
        });
        Ok(OpenReply {
            fh,
            keep_cache,
            direct_io: false,
        })
    }

    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.file_handle(ino, fh)?;
        if let Some(held) = self.held_read(ino, offset, size).await {
            return held;
        }
        if let Some(file) = self.spooled_file(ino) {
            return Ok(file.read(offset, size).await?);
        }
        let node = self.node(ino)?;
        let Loc::Remote { id, .. } = node.loc else {
            return Err(FsError::NotFound);
        };
        let version = FileVersion {
            id,
            size: node.size,
            mtime: node.mtime,
        };
        let stream = {
            let mut slot = lock(&handle.stream);
            match &*slot {
                Some(s) if s.file == version => Arc::clone(s),
                _ => {
                    // First read, or the file changed (e.g. replaced by an upload).
                    let s = Arc::new(Stream::new(version));
                    *slot = Some(Arc::clone(&s));
                    s
                }
            }
        };
        let result = self.reader.read(&stream, offset, size).await;
        if let Err(e) = &result {
            self.file_gone(ino, handle.parent, stream.file, e);
        }
        result
    }

    /// After `err` from opening or reading `file`: the first time a version is found gone or
    /// bad, say so in the log; if gone, forget the name in its folder's cached listing so that
    /// it is resolved again (once per version, never once per read). Only that name waits for
    /// the folder's refresh: every other name of a big folder is still answered from the cache.
    fn file_gone(&self, ino: u64, parent: Option<Loc>, file: FileVersion, err: &FsError) {
        if !matches!(err, FsError::Gone(_) | FsError::Inconsistent(_))
            || !self.reader.first_report(file)
        {
            return;
        }
        match err {
            FsError::Gone(why) => {
                tracing::info!(ino, file = file.id, "{why}; looking the name up again");
                let named = self
                    .inodes
                    .get(ino)
                    .and_then(|n| Some((n.parent?.1, n.name?)));
                match (named, parent) {
                    (Some((dir, name)), _) => self.dirs.forget_name(dir, &name),
                    (None, Some(parent)) => self.dirs.invalidate(parent),
                    (None, None) => {}
                }
            }
            _ => tracing::warn!(ino, file = file.id, "read refused: {err}"),
        }
    }

    pub async fn statfs(&self, ino: u64) -> FsResult<StatFs> {
        let loc = self.node(ino).or_else(|_| self.node(ROOT_INO))?.loc;
        self.statfs.statfs(loc, self.inodes.len() as u64).await
    }

    /// Folders made by mkdir that the server does not have yet (`new_folders.rs`).
    pub fn folders_not_made(&self) -> usize {
        self.folders.not_made()
    }

    /// Files removed through the mount that the server has not deleted yet (`deletes.rs`).
    pub fn deletes_pending(&self) -> usize {
        self.deletes.pending()
    }

    /// Since when the API cannot be reached, while it cannot (`vagonfs status`).
    pub fn api_unreachable_since(&self) -> Option<SystemTime> {
        self.health.unreachable_since()
    }

    /// Tell the kernel, through `kernel`, of entries and attributes that changed on the server
    /// (found by revalidating listings). Set once, when the session is mounted.
    pub fn set_kernel_cache(&self, kernel: Arc<dyn KernelCache>) {
        self.dirs.set_kernel_cache(kernel);
    }

    /// How long the kernel may cache a name found missing (an adapter may answer a failed lookup
    /// with a negative entry of this TTL).
    pub fn negative_lookup_ttl(&self) -> Duration {
        self.dirs.negative_ttl()
    }

    /// Numbers of the block cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.reader.stats()
    }

    /// Hits and misses of the block and listing caches since the mount started.
    pub fn cache_counters(&self) -> CacheCounters {
        let (block_hits, block_misses) = self.reader.counter.get();
        let (dir_hits, dir_misses) = self.dirs.counter.get();
        CacheCounters {
            block_hits,
            block_misses,
            dir_hits,
            dir_misses,
        }
    }

    /// Wait until no background fetch (prefetch, link) is running: for a clean unmount, and for
    /// tests that count requests.
    pub async fn wait_background(&self) {
        self.dirs.idle().await;
        self.reader.idle().await;
    }

    /// Whether this mount refuses writes everywhere.
    pub fn read_only(&self) -> bool {
        self.config.read_only
    }

    fn node(&self, ino: u64) -> FsResult<Inode> {
        self.inodes.get(ino).ok_or(FsError::StaleInode(ino))
    }

    fn dir_node(&self, ino: u64) -> FsResult<Inode> {
        let node = self.node(ino)?;
        match node.kind {
            NodeKind::Directory => Ok(node),
            NodeKind::File => Err(FsError::NotADirectory),
        }
    }

    /// The node with its attributes refreshed from its folder's listing: the cached listing,
    /// however old (revalidated in the background), so getattr waits on the API only for a
    /// folder never listed, at most `--op-timeout`. A failed fetch, or an object no longer
    /// listed, keeps the last attributes: getattr on an open file must not fail on a network
    /// blip, and the next lookup notices a deletion.
    async fn fresh_node(&self, ino: u64) -> FsResult<Inode> {
        let node = self.node(ino)?;
        let (Loc::Remote { .. }, Some((_, parent_loc))) = (node.loc, node.parent) else {
            return Ok(node);
        };
        if self.spooled_file(ino).is_some() {
            // The local bytes are the truth while there is a spool.
            return Ok(node);
        }
        if self.dirs.peek(parent_loc).is_none() && self.dirs.is_fetching(parent_loc) {
            // Looked up from a page of a first listing moments ago: as fresh as it gets; the
            // listing goes on in the background.
            return Ok(node);
        }
        match self.dirs.listing(parent_loc).await {
            Ok(listing) => match listing.find_loc(&node.loc) {
                Some(entry) => Ok(self.inodes.refresh(ino, &entry.seen).unwrap_or(node)),
                None => Ok(node),
            },
            Err(e) => {
                tracing::debug!(ino, "attributes not refreshed: {e}");
                Ok(node)
            }
        }
    }

    /// The node as shown: a spool's length and local time override what the server listed; a
    /// time the user set in an earlier mount overrides the server's ([`times`]).
    fn shown(&self, mut node: Inode) -> Inode {
        if let Some(file) = self.spooled_file(node.ino) {
            node.size = file.len();
            node.mtime = Some(file.modified());
        } else if node.mtime_override.is_none()
            && !node.local_mtime
            && let Loc::Remote { space, id } = node.loc
            && let Some(t) = self.times.shown(space, id, node.size, node.mtime)
        {
            node.mtime = Some(t);
        }
        if let Some(t) = node.mtime_override {
            node.mtime = Some(t);
        }
        node
    }

    /// Keep the time the user set on `ino` (utimens) for later mounts, once the file is on the
    /// server as it is shown; a file with changes not yet uploaded is kept after its upload.
    pub(crate) fn remember_time(&self, ino: u64) {
        self.remember_time_of(ino, true);
    }

    /// [`Self::remember_time`]; `listed`: the inode's server time is the one listed for its
    /// current location (false right after it moved to a new server file: not known yet).
    fn remember_time_of(&self, ino: u64, listed: bool) {
        let Some(node) = self.inodes.get(ino) else {
            return;
        };
        let (Some(user), Loc::Remote { space, id }) = (node.mtime_override, node.loc) else {
            return;
        };
        if self.spooled_file(ino).is_some_and(|f| f.is_dirty()) {
            return;
        }
        let server = if node.local_mtime || !listed {
            None
        } else {
            node.mtime
        };
        self.times.remember(space, id, node.size, server, user);
    }

    /// The file at `from` is now `to` (uploaded anew). A rename (`same_bytes`) carries a time
    /// remembered for `from` over to `to`; changed bytes drop it. Then the inode's own
    /// utimens time, if any, is kept for `to`.
    pub(crate) fn time_moved(&self, from: Loc, to: Loc, same_bytes: bool, ino: Option<u64>) {
        if let Loc::Remote { space, id } = from
            && let Some((size, user)) = self.times.take(space, id)
            && same_bytes
            && let Loc::Remote {
                space: to_space,
                id: to_id,
            } = to
        {
            self.times.remember(to_space, to_id, size, None, user);
        }
        if let Some(ino) = ino {
            // The inode's listed time was the old file's: the new one's is not known yet.
            self.remember_time_of(ino, false);
        }
    }

    /// Take the storage root's listing read before mounting (the probe's page 1, when it was
    /// the only page: [`crate::api::paging::only_page`]), started at `began`, as if this mount
    /// had fetched it: the first lookups need no request. Call it once the spool folder is
    /// open (folders made by an earlier run keep their placeholder ids, [`new_folders`]: the
    /// probe's answer came from the API itself and names them by their server ids) and before
    /// anything else.
    pub fn seed_root_listing(
        &self,
        mut got: crate::api::paging::Collected<crate::api::FileEntry>,
        began: std::time::Instant,
    ) {
        let Some(root) = self.inodes.get(ROOT_INO) else {
            return;
        };
        if let Some(space) = root.loc.space() {
            for e in &mut got.items {
                e.id = self.folders.shown_id(space, e.id);
                e.parent_id = e.parent_id.map(|p| self.folders.shown_id(space, p));
            }
        }
        self.dirs.seed_root(root.loc, got, began);
    }

    /// Open the store of user-set modification times in the cache folder (see [`times`]).
    /// A mount that made no cache folder (read-only, never written) has nothing to open.
    pub fn open_time_store(&self) -> Result<(), times::TimeStoreError> {
        if !self.config.cache_dir.is_dir() {
            return Ok(());
        }
        self.times
            .open(&self.config.cache_dir.join(times::TIMES_FILE))
    }

    fn reply(&self, node: Inode) -> AttrReply {
        let node = self.shown(node);
        AttrReply {
            attr: self.attr_of(&node),
            ttl: self.attrs.ttl(),
        }
    }

    /// The attributes of a node as shown: a folder's link count is 2 + its subfolders when its
    /// listing is known, and its times move with the changes this mount made in it.
    fn attr_of(&self, node: &Inode) -> Attr {
        let mut attr = self.attrs.attr(node);
        if node.kind == NodeKind::Directory {
            if let Some(listing) = self.dirs.peek(node.loc) {
                let subdirs = u32::try_from(listing.subdirs).unwrap_or(u32::MAX - 2);
                attr.nlink = subdirs.saturating_add(2);
            }
            if let Some(changed) = self.dirs.touched_at(node.loc)
                && changed > attr.mtime
                && node.mtime_override.is_none()
            {
                attr.mtime = changed;
                attr.ctime = changed;
            }
        } else if !self.inodes.is_linked(node) {
            // An open file whose name was removed.
            attr.nlink = 0;
        }
        attr
    }

    fn add_file_handle(&self, handle: FileHandle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::File(Arc::new(handle)));
        fh
    }

    fn file_handle(&self, ino: u64, fh: u64) -> FsResult<Arc<FileHandle>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(h)) if h.ino == ino => Ok(Arc::clone(h)),
            _ => Err(FsError::BadHandle(fh)),
        }
    }
}
