//! The core's write operations: create, open for writing, write, flush/fsync, release, setattr,
//! mkdir; unlink and rmdir are in `removes.rs`. What happens to a spool once changed is in
//! `landing.rs`; the mount-wide operations (flushing everything, recovery at start) are in
//! `sync.rs`.
//!
//! Each written inode has one [`SpooledFile`] (the write engine's object, `write/file.rs`),
//! shared by all its handles and kept in `VagonFs::files`. Reads of an inode with a spool are
//! served from it (any handle), and `getattr`/listings show its length and local time, so what
//! was written is seen at once, before and while it is uploaded. `flush` (close) and `fsync`
//! upload it when dirty; their result is the upload's (ENOSPC for a full storage, EEXIST, EIO
//! when retries are used up).
//!
//! Subtle cases handled here:
//! - a created file exists (lookup/readdir) at once: its inode lives at `Loc::Local` and is
//!   shown through the overlay until uploaded; create+close without a write uploads an empty
//!   file;
//! - an existing file opened for writing without `O_TRUNC` gets a lazy spool: its old bytes are
//!   fetched only when a write or truncate needs them;
//! - an upload that replaces a file gives it a new id: the inode is re-bound to it (same inode
//!   number), the old id is hidden from stale listings, the parent listing is dropped;
//! - the spool stays after the last close while the file is dirty (a failed upload): the inode
//!   stays pinned and visible with its local bytes, [`VagonFs::flush_all`] retries it, and a
//!   crash leaves it journaled for [`VagonFs::recover`] at the next mount;
//! - unlink of an open file: no more uploads for it (an upload already in flight that completes
//!   anyway is deleted again), its spool file is removed, the open descriptors keep reading and
//!   writing the unlinked spool;
//! - `truncate(2)` without a handle uploads at once (no close will follow);
//! - chmod/chown succeed without effect (the API has no permissions); utimens sets the local
//!   time shown while the mount lives.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::{ApiErrorKind, CreateRequest, Space};

use super::dir::name_problem;
use super::inode::{Inode, Loc};
use super::names::Child;
use super::write::{
    ApiRemote, FileTarget, NameHold, RemoteBase, SpoolDir, SpooledFile, UploadRegistry,
};
use super::{
    AttrReply, FileHandle, FsError, FsResult, NAME_MAX, NodeKind, OpenReply, SetAttr, VagonFs, lock,
};

/// An inode's spool and what happened to it.
pub(crate) struct OpenFile {
    pub(crate) file: Arc<SpooledFile>,
    /// Unlinked (or replaced by a rename onto it): never uploaded again.
    pub(crate) unlinked: bool,
    /// An unlink or a rename onto it is deciding its fate ([`VagonFs::hold_fate`]): its spool
    /// stays, whatever else asks, until that operation ends; a failed one gives it back its
    /// pending changes ([`VagonFs::keep_fate`]).
    pub(crate) deciding: bool,
    /// A move answered before its upload (`rename.rs`): the hold on the old name, kept until
    /// the old object's delete (queued once the file landed, or was removed) ends.
    pub(crate) old_name: Option<NameHold>,
}

/// A name the API can carry: valid for Linux and UTF-8 (names travel in JSON).
pub(crate) fn api_name(name: &OsStr) -> FsResult<String> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    let s = name
        .to_str()
        .ok_or_else(|| FsError::InvalidName(name.to_string_lossy().into_owned()))?;
    if let Some(problem) = name_problem(s) {
        return Err(FsError::InvalidName(format!("{s:?}: {problem}")));
    }
    Ok(s.to_string())
}

/// The space and parent id of folder `loc`, for a create in it.
pub(crate) fn folder_target(loc: Loc) -> FsResult<(Space, Option<u64>)> {
    match loc {
        Loc::SpaceRoot(space) => Ok((space, None)),
        Loc::Remote { space, id } => Ok((space, Some(id))),
        Loc::AllRoot | Loc::Machines | Loc::Local { .. } | Loc::Trash(_) | Loc::Held { .. } => {
            Err(FsError::ReadOnly)
        }
    }
}

/// ms since the epoch, as the journal keeps times.
fn epoch_ms(t: SystemTime) -> Option<i64> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// The remote file a child is, for an overwrite or a conflict check.
pub(crate) fn remote_base(c: &Child) -> Option<RemoteBase> {
    match c.loc {
        Loc::Remote { id, .. } if c.kind == NodeKind::File => Some(RemoteBase {
            id,
            size: c.size,
            mtime_ms: c.remote_mtime.and_then(epoch_ms),
        }),
        _ => None,
    }
}

/// A deleted object that is already gone counts as deleted.
pub(crate) async fn delete_remote(api: &dyn crate::api::FilesApi, id: u64) -> FsResult<()> {
    match api.delete(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ApiErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl VagonFs {
    /// The upload status (queued, running and recent uploads) for `vagonfs status`.
    pub fn uploads(&self) -> Arc<UploadRegistry> {
        Arc::clone(self.uploader.registry())
    }

    /// Open (create and lock) this mount's spool folder now, so that a second mount of the same
    /// target fails at start rather than at its first write. Idempotent.
    pub fn open_spool_dir(&self) -> FsResult<()> {
        self.spool_dir().map(|_| ())
    }

    pub(crate) fn spool_dir(&self) -> FsResult<Arc<SpoolDir>> {
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        let mut slot = lock(&self.spool_dir);
        if let Some(dir) = &*slot {
            return Ok(Arc::clone(dir));
        }
        let dir = SpoolDir::open(&self.config.cache_dir)?;
        // Made folders keep their placeholders while a journal record or a pending delete may
        // name one.
        let journaled = !dir.journaled_ids()?.is_empty() || super::deletes::any_pending(&dir)?;
        self.folders.load(&dir, journaled)?;
        self.load_deletes(&dir)?;
        self.load_move_sources(&dir)?;
        super::engine::start_group_commit(&dir);
        *slot = Some(Arc::clone(&dir));
        Ok(dir)
    }

    pub(crate) fn spooled_file(&self, ino: u64) -> Option<Arc<SpooledFile>> {
        lock(&self.files).get(&ino).map(|f| Arc::clone(&f.file))
    }

    /// EROFS where nothing can be written.
    pub(crate) fn check_writable(&self, loc: &Loc) -> FsResult<()> {
        if self.attrs.refuses_writes(loc) {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Where a file named `name` in folder `dir` is uploaded.
    pub(crate) fn file_target(
        &self,
        dir_ino: Option<u64>,
        dir_loc: Loc,
        name: &OsStr,
    ) -> FsResult<FileTarget> {
        let (space, parent_id) = folder_target(dir_loc)?;
        Ok(FileTarget {
            space,
            parent_id,
            name: api_name(name)?,
            display_path: self.display_path(dir_ino, name),
        })
    }

    /// Start keeping `file` as the spool of `ino` (visible as `name` in `dir`).
    fn adopt(&self, ino: u64, file: Arc<SpooledFile>, dir: Loc, name: &OsStr) {
        lock(&self.files).insert(
            ino,
            OpenFile {
                file,
                unlinked: false,
                deciding: false,
                old_name: None,
            },
        );
        self.inodes.set_spooled(ino, true);
        self.overlay.hold(dir, name, ino);
    }

    /// The spool of an existing file, made (lazily filled) if it has none yet.
    async fn spool_of(&self, node: &Inode) -> FsResult<Arc<SpooledFile>> {
        if let Some(f) = self.spooled_file(node.ino) {
            return Ok(f);
        }
        let Loc::Remote { id, .. } = node.loc else {
            return Err(FsError::NotFound);
        };
        self.check_name_writable(node).await?;
        let (Some((dir_ino, dir_loc)), Some(name)) = (node.parent, node.name.clone()) else {
            return Err(FsError::NotPermitted("the root cannot be written"));
        };
        let target = self.file_target(Some(dir_ino), dir_loc, &name)?;
        let base = RemoteBase {
            id,
            size: node.size,
            mtime_ms: if node.local_mtime {
                None
            } else {
                node.mtime.and_then(epoch_ms)
            },
        };
        let dir = self.spool_dir()?;
        let made = {
            let files = lock(&self.files);
            if let Some(f) = files.get(&node.ino) {
                return Ok(Arc::clone(&f.file));
            }
            drop(files);
            let source = ApiRemote::new(Arc::clone(&self.api), id);
            SpooledFile::open_existing(&dir, target, base, source)?
        };
        // Two opens may race to here; the first one's spool wins, the other is dropped (clean,
        // so its file is removed).
        let file = {
            let mut files = lock(&self.files);
            match files.get(&node.ino) {
                Some(f) => return Ok(Arc::clone(&f.file)),
                None => {
                    files.insert(
                        node.ino,
                        OpenFile {
                            file: Arc::clone(&made),
                            unlinked: false,
                            deciding: false,
                            old_name: None,
                        },
                    );
                    made
                }
            }
        };
        self.inodes.set_spooled(node.ino, true);
        self.overlay.hold(dir_loc, &name, node.ino);
        Ok(file)
    }

    /// `open` with write access or `O_TRUNC`.
    pub(crate) async fn open_for_write(&self, node: Inode, flags: i32) -> FsResult<OpenReply> {
        self.check_writable(&node.loc)?;
        let node = self.fresh_node(node.ino).await?;
        let file = self.spool_of(&node).await?;
        let truncate = flags & libc::O_TRUNC != 0;
        // The handle first: from the truncation on, the engine's worker must see a writer (and
        // wait for its writes to pause), or it could send the emptied file before the writes
        // that follow the open (found by the model test: the server, and for a while the mount,
        // showed the file empty).
        let fh = self.add_file_handle(FileHandle {
            ino: node.ino,
            parent: node.parent.map(|(_, l)| l),
            stream: std::sync::Mutex::new(None),
            write: true,
            append: flags & libc::O_APPEND != 0,
        });
        let opened = async {
            if truncate && !file.is_empty() {
                file.set_len(0).await?;
            }
            let shown = self.shown(node.clone());
            self.inodes
                .opened(node.ino, shown.size, shown.mtime)
                .ok_or(FsError::StaleInode(node.ino))
        }
        .await;
        let keep_cache = match opened {
            Ok(keep) => keep,
            Err(e) => {
                lock(&self.handles).remove(&fh);
                return Err(e);
            }
        };
        Ok(OpenReply {
            fh,
            keep_cache: keep_cache && !truncate,
            direct_io: false,
        })
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        flags: i32,
    ) -> FsResult<(AttrReply, OpenReply)> {
        if let Some(trash) = self.trash_create(parent, name, flags).await {
            return trash;
        }
        let dir = self.dir_node(parent)?;
        self.check_writable(&dir.loc)?;
        let target = self.file_target(Some(parent), dir.loc, name)?;
        if let Some(existing) = self.child(&dir, name).await? {
            if flags & libc::O_EXCL != 0 {
                return Err(FsError::Exists);
            }
            if existing.kind == NodeKind::Directory {
                return Err(FsError::IsADirectory);
            }
            // Open the existing file with these flags; the reply counts as a lookup.
            let looked = self.lookup(parent, name).await?;
            let ino = looked.attr.ino;
            return match self.open(ino, flags).await {
                Ok(open) => Ok((self.getattr(ino).await?, open)),
                Err(e) => {
                    self.forget(ino, 1);
                    Err(e)
                }
            };
        }
        let spools = self.spool_dir()?;
        let file = SpooledFile::create_new(&spools, target.clone()).await?;
        let loc = Loc::Local {
            space: target.space,
            n: self
                .next_local
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let node = self
            .inodes
            .insert_new(loc, NodeKind::File, name, (parent, dir.loc));
        self.adopt(node.ino, file, dir.loc, name);
        // Drop a remembered "missing" for this name (the listing itself is still right).
        self.dirs.forget_missing(dir.loc, name);
        self.dirs.touch(dir.loc);
        let shown = self.shown(node.clone());
        self.inodes.opened(node.ino, shown.size, shown.mtime);
        let fh = self.add_file_handle(FileHandle {
            ino: node.ino,
            parent: Some(dir.loc),
            stream: std::sync::Mutex::new(None),
            // Even opened read-only, its close must create the (empty) file.
            write: true,
            append: flags & libc::O_APPEND != 0,
        });
        tracing::debug!(file = %target.display_path, "created locally");
        Ok((
            self.attrs.reply(&shown),
            OpenReply {
                fh,
                keep_cache: false,
                direct_io: false,
            },
        ))
    }

    /// write(2). `data` is taken as owned bytes (the adapter's copy of fuser's buffer) and
    /// goes to the spool on the blocking pool without another copy.
    pub async fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: impl Into<Vec<u8>>,
    ) -> FsResult<u32> {
        let data = data.into();
        if let Some(held) = self.held_write(ino, fh, offset, &data) {
            return held;
        }
        let handle = self.file_handle(ino, fh)?;
        if !handle.write {
            let node = self.node(ino)?;
            self.check_writable(&node.loc)?;
            return Err(FsError::BadHandle(fh));
        }
        let file = self.spooled_file(ino).ok_or(FsError::BadHandle(fh))?;
        let end = if handle.append { file.len() } else { offset };
        self.make_room(ino, &file, end.saturating_add(data.len() as u64))
            .await?;
        let n = if handle.append {
            file.append(data).await?
        } else {
            file.write(offset, data).await?
        };
        // New bytes: a time set by utimens no longer holds (the write's time does).
        self.inodes.set_mtime_override(ino, None);
        Ok(n)
    }

    /// close(2) of one descriptor. The changed file's journal record and spool are on local
    /// disk already (each write put its bytes in the spool, the first one wrote the record), so
    /// this only hands the file to the write-back engine and returns; with `--sync-close` it
    /// uploads and returns the upload's result instead.
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        let handle = self.file_handle(ino, fh)?;
        if !handle.write {
            return Ok(());
        }
        if let Some(file) = self.spooled_file(ino)
            && file.is_dirty()
            && let Err(e) = self.check_quota(ino, &file, file.len()).await
        {
            // Kept (and shown by `vagonfs status`), tried again on the slow timer, by `vagonfs
            // sync`, or by the next close once there is room.
            self.note_failure(ino, &e, true);
            self.schedule_upload(ino, super::engine::SLOW_RETRY);
            return Err(e);
        }
        if self.engine.config.sync_close {
            return self.upload_ino(ino).await;
        }
        self.kick(ino);
        Ok(())
    }

    /// Hand `ino`'s changes, if any, to the engine: a new file after `--upload-delay`, any other
    /// at once.
    pub(crate) fn kick(&self, ino: u64) {
        let Some(file) = lock(&self.files)
            .get(&ino)
            .filter(|f| !f.unlinked)
            .map(|f| Arc::clone(&f.file))
        else {
            return;
        };
        if !file.is_dirty() {
            return;
        }
        let delay = if file.has_base() {
            Duration::ZERO
        } else {
            self.engine.config.upload_delay
        };
        self.schedule_upload(ino, delay);
    }

    /// fsync(2), through any descriptor of the file (read-only ones too): waits until the
    /// file's current bytes are on the server, and returns the upload's error.
    pub async fn fsync(&self, ino: u64, fh: u64) -> FsResult<()> {
        self.file_handle(ino, fh)?;
        let result = self.upload_ino(ino).await;
        match &result {
            Ok(()) => self.clear_failure(ino),
            Err(_) => self.kick(ino),
        }
        result
    }

    pub async fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        let removed = {
            let mut handles = lock(&self.handles);
            match handles.get(&fh) {
                Some(super::Handle::File(h)) if h.ino == ino => handles.remove(&fh),
                _ => None,
            }
        };
        match removed {
            Some(_) => {
                self.inodes.closed(ino);
                // Changes made through a mapping after close, or left by a failed upload, go
                // up without a writer.
                if !self.engine.config.sync_close {
                    self.kick(ino);
                }
                self.release_spool_if_done(ino);
                Ok(())
            }
            None => Err(FsError::BadHandle(fh)),
        }
    }

    pub async fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<AttrReply> {
        if let Some(held) = self.held_setattr(ino, &set) {
            return held;
        }
        let node = self.node(ino)?;
        let changes = set.size.is_some()
            || set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if !changes {
            return self.getattr(ino).await;
        }
        self.check_writable(&node.loc)?;
        if let Some(size) = set.size {
            if node.kind == NodeKind::Directory {
                return Err(FsError::IsADirectory);
            }
            let node = self.fresh_node(ino).await?;
            let file = self.spool_of(&node).await?;
            self.make_room(ino, &file, size).await?;
            file.set_len(size).await?;
            // Not held past here: a spool someone holds is never released.
            drop(file);
            self.inodes.set_mtime_override(ino, None);
            let open = self.inodes.get(ino).is_some_and(|n| n.open_handles > 0);
            if !open {
                // truncate(2) by path: no close will follow. Uploaded by the engine after a
                // quiet period (or now, with `--sync-close`).
                if self.engine.config.sync_close {
                    let result = self.upload_ino(ino).await;
                    self.release_spool_if_done(ino);
                    result?;
                } else {
                    self.schedule_upload(ino, super::engine::QUIET);
                }
            } else if set.fh.is_none() && !self.engine.config.sync_close {
                // truncate(2) by path while a reader (or writer) has it open: nobody's close
                // is bound to upload it.
                self.schedule_upload(ino, super::engine::QUIET);
            }
        }
        if let Some(t) = set.mtime {
            if let Some(file) = self.spooled_file(ino) {
                file.set_modified(t);
            }
            self.inodes.set_mtime_override(ino, Some(t));
            self.remember_time(ino);
        }
        // mode, uid, gid, atime: the API keeps none of them; accepted without effect.
        self.getattr(ino).await
    }

    /// Answered at once: the folder gets a placeholder id and is made on the server in the
    /// background (`new_folders.rs`). Its name is held in the overlay and its inode pinned
    /// until the server has it, like a created file's. With `--sync-close` it waits for the
    /// server instead (at most `--op-timeout`), as close does.
    pub async fn mkdir(&self, parent: u64, name: &OsStr, _mode: u32) -> FsResult<AttrReply> {
        let dir = self.dir_node(parent)?;
        self.check_writable(&dir.loc)?;
        let (space, parent_id) = folder_target(dir.loc)?;
        let api_name = api_name(name)?;
        if self.child(&dir, name).await?.is_some() {
            return Err(FsError::Exists);
        }
        self.wait_name_free(dir.loc, &api_name).await?;
        let request = CreateRequest::directory(space, parent_id, api_name);
        let later = !self.engine.config.sync_close;
        let id = if later {
            // While the API is known to be down, say so at once rather than promise a folder.
            if let Some(err) = self.health.recent_failure() {
                return Err(err);
            }
            let spool = self.spool_dir()?;
            self.folders.create_later(&spool, request)?
        } else {
            self.health
                .bounded("create folder", self.config.op_timeout, async {
                    Ok(self.api.create(&request).await?.id)
                })
                .await?
        };
        let loc = Loc::Remote { space, id };
        let node = self
            .inodes
            .insert_new(loc, NodeKind::Directory, name, (parent, dir.loc));
        if later {
            self.inodes.set_spooled(node.ino, true);
            self.overlay.hold(dir.loc, name, node.ino);
            self.dirs.forget_missing(dir.loc, name);
            self.settle_when_made(id, dir.loc, name.to_os_string(), node.ino);
        } else {
            self.settle_name(dir.loc, name, node.ino);
        }
        // Known to be empty: nothing to list.
        self.dirs.seed_empty(loc);
        self.dirs.touch(dir.loc);
        // A new folder shows its creation time until the server lists it.
        self.dirs.touch(loc);
        Ok(self.reply(node))
    }

    /// Once folder `id` (a placeholder) is on the server, its name shows as the server lists
    /// it and its inode is no longer pinned.
    fn settle_when_made(&self, id: u64, dir: Loc, name: std::ffi::OsString, ino: u64) {
        let me = self.me.clone();
        let folders = Arc::clone(&self.folders);
        tokio::spawn(async move {
            // Refused for good: the name stays held (and logged), its content in the spools.
            if folders.made(id).await.is_err() {
                return;
            }
            let Some(fs) = me.upgrade() else { return };
            if fs.overlay.get(dir, &name, None) == Some(ino) {
                fs.settle_name(dir, &name, ino);
            }
            fs.inodes.set_spooled(ino, false);
        });
    }
}
