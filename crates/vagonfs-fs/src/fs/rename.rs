//! rename(2): the API has no move, so a move is an upload under the new name and a delete of
//! the old object.
//!
//! - A file never uploaded (new, its upload queued) is only re-targeted: its spool and queued
//!   upload now go to the new name; no request at all (an editor's save-temp-then-rename costs
//!   one upload).
//! - Per-name order: an upload in flight of the source or of the replaced target is waited for
//!   first (never raced), and no new one of the replaced target starts.
//! - A file on the server is uploaded under its new name from its spool when it has one (its
//!   open handles go on writing to it, and later uploads go to the new name), else its
//!   bytes are streamed
//!   through a temporary spool (ranged downloads to local disk, then the upload; never the whole
//!   file in memory). Then the old object is deleted: in the background with write-back
//!   (`deletes.rs`, its old name held until then, retried), else at once. Its inode number
//!   stays.
//! - With write-back, a top-level move of a file only on the server answers once the bytes are
//!   in that (journaled) temporary spool: it becomes the file's spool ([`VagonFs::adopt_moved`]),
//!   holding the old name, and the engine uploads it. Its record names the old object
//!   (`moved_from`): deleted once the bytes landed (`landing.rs`), or once the moved file is
//!   removed or replaced, or by the next mount's recovery after a crash. Moved back to that
//!   name before it landed, that move lands first, in the foreground (the move's own hold on
//!   the name would otherwise make the new upload wait for itself). A new file of the old
//!   name, its upload waiting for that name, can still be moved (onto the moved file, too):
//!   a re-target takes the upload gate from an upload that only waits for its name
//!   (`write/file.rs`). A landing frees the old name even while an unlink or rename holds the
//!   file's fate. The files of a folder move
//!   are moved in the foreground: the old folder's delete must come after them.
//! - Onto an existing file: the upload overwrites it (`overwrite` with the target as base), so a
//!   reader never finds the name missing: the editors' save (write a temp file, rename it over)
//!   works. A spool of the replaced file is discarded (its pending changes were replaced too).
//! - `RENAME_NOREPLACE`: EEXIST when the target exists. `RENAME_EXCHANGE`: EINVAL (the API has
//!   no way to swap two objects).
//! - A folder is moved recursively: make the new folder (or reuse an empty one it replaces),
//!   move every child, `--transfers` files at a time across the whole tree, then delete the old
//!   folder. Not atomic: a failure midway leaves the children moved so far in the new folder
//!   and the rest in the old one, both visible (nothing lost); once one move failed no more
//!   start, and those in flight end (a move is never dropped halfway).
//! - The old folder is deleted only when a fresh listing shows nothing the move did not move
//!   (another client may have put a file there meanwhile, and the server deletes a folder with
//!   everything in it): else it is kept with that, and shows again. With write-back that delete
//!   is a background one (`deletes.rs`, after the deletes of the subfolders moved out of it).
//!   More than `FsConfig::rename_dir_limit` entries under it (counted before anything is done)
//!   answers EXDEV, so `mv` falls back to copy and delete with its own progress.
//! - A folder into itself or under itself: EINVAL. Across storage spaces: EXDEV.

use std::ffi::OsStr;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::api::CreateRequest;

use super::inode::Loc;
use super::names::Child;
use super::ops_write::{OpenFile, api_name, delete_remote, folder_target, remote_base};
use super::write::{ApiRemote, MovedFrom, NameHold, SpooledFile, Uploaded};
use super::{FsError, FsResult, NodeKind, VagonFs, lock};

/// A folder of a move: its location and, when the table has one, its inode.
#[derive(Debug, Clone)]
struct DirRef {
    ino: Option<u64>,
    loc: Loc,
    /// The folder's path as the user named it, when the table's path of `ino` is not it: in a
    /// folder move, the old and the new folder share the moving folder's inode.
    path: Option<Arc<str>>,
}

impl VagonFs {
    /// `name` in `dir` as logs and messages show it.
    fn shown_in(&self, dir: &DirRef, name: &OsStr) -> String {
        match &dir.path {
            Some(path) => format!("{path}/{}", name.to_string_lossy()),
            None => self.display_path(dir.ino, name),
        }
    }

    /// Where `name` in `dir` is on the server (see [`VagonFs::file_target`]).
    fn place_in(&self, dir: &DirRef, name: &OsStr) -> FsResult<super::write::FileTarget> {
        // With its own path, the folder's inode is not walked for a path that is replaced.
        let ino = if dir.path.is_some() { None } else { dir.ino };
        let mut target = self.file_target(ino, dir.loc, name)?;
        if dir.path.is_some() {
            target.display_path = self.shown_in(dir, name);
        }
        Ok(target)
    }
}

impl VagonFs {
    /// `flags` are renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(FsError::InvalidArgument(
                "RENAME_EXCHANGE is not supported".into(),
            ));
        }
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(FsError::InvalidArgument(format!("rename flags {flags:#x}")));
        }
        if let Some(trash) = self
            .trash_rename(parent, name, newparent, newname, flags)
            .await
        {
            return trash;
        }
        let src_dir = self.dir_node(parent)?;
        let dst_dir = self.dir_node(newparent)?;
        self.check_writable(&src_dir.loc)?;
        self.check_writable(&dst_dir.loc)?;
        api_name(newname)?;
        let (src_space, _) = folder_target(src_dir.loc)?;
        let (dst_space, _) = folder_target(dst_dir.loc)?;
        if src_space != dst_space {
            return Err(FsError::CrossDevice("between storage spaces".into()));
        }
        let src = self.child(&src_dir, name).await?.ok_or(FsError::NotFound)?;
        if parent == newparent && name == newname {
            return Ok(());
        }
        let dst = self.child(&dst_dir, newname).await?;
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if d.read_only {
                // An upload by that name would replace another object the server holds.
                tracing::warn!(
                    file = %self.display_path(Some(newparent), newname),
                    "refusing to rename onto a name the server holds more than once (or a longer one)"
                );
                return Err(FsError::ReadOnly);
            }
            if d.ino.is_some() && d.ino == src.ino {
                return Ok(());
            }
            match (src.kind, d.kind) {
                (NodeKind::File, NodeKind::Directory) => return Err(FsError::IsADirectory),
                (NodeKind::Directory, NodeKind::File) => return Err(FsError::NotADirectory),
                _ => {}
            }
        }
        let from = DirRef {
            ino: Some(parent),
            loc: src_dir.loc,
            path: None,
        };
        let to = DirRef {
            ino: Some(newparent),
            loc: dst_dir.loc,
            path: None,
        };
        match src.kind {
            NodeKind::File => {
                self.move_file(from, name, &src, to, newname, dst, true)
                    .await
            }
            NodeKind::Directory => {
                if src.ino.is_some_and(|s| self.is_within(newparent, s)) {
                    return Err(FsError::InvalidArgument(
                        "cannot move a folder into itself".into(),
                    ));
                }
                if let Some(d) = &dst
                    && !self.is_empty_dir(d.loc).await?
                {
                    return Err(FsError::NotEmpty);
                }
                let limit = self.config.rename_dir_limit;
                let count = self.count_entries(src.loc, limit).await?;
                if count > limit {
                    tracing::info!(
                        entries = count,
                        limit,
                        "folder too big to move in place; answering EXDEV (mv copies instead)"
                    );
                    return Err(FsError::CrossDevice(format!(
                        "folder holds more than {limit} entries"
                    )));
                }
                let lanes = Semaphore::new(self.engine.config.transfers.max(1));
                self.move_dir(from, name, src, to, newname, dst, &lanes)
                    .await
            }
        }
    }

    /// Entries under folder `loc`, recursively, on fresh listings; counting stops past `limit`.
    /// EXDEV when a folder under it does not show everything it holds (its listing stopped
    /// early, or holds names the mount cannot show or cannot write): moving it would delete
    /// what the mount cannot move.
    async fn count_entries(&self, loc: Loc, limit: usize) -> FsResult<usize> {
        let mut count = 0usize;
        let mut todo = vec![loc];
        while let Some(dir) = todo.pop() {
            self.dirs.invalidate(dir);
            let children = self.children_of(dir).await?;
            let listing = self.dirs.listing(dir).await?;
            if !listing.complete || listing.entries.iter().any(|e| e.read_only) {
                tracing::warn!(
                    ?dir,
                    "folder holds objects the mount cannot show or write; answering EXDEV (mv copies what it sees instead)"
                );
                return Err(FsError::CrossDevice(
                    "the folder holds objects the mount cannot show or write".into(),
                ));
            }
            for (_, child) in children {
                count += 1;
                if count > limit {
                    return Ok(count);
                }
                if child.kind == NodeKind::Directory {
                    todo.push(child.loc);
                }
            }
        }
        Ok(count)
    }

    /// Move the file `src` (shown as `src_name` in `from`) to `dst_name` in `to`, replacing
    /// `dst` when given. `later`: with write-back, a file only on the server may be uploaded
    /// under its new name in the background (see the module note).
    #[allow(clippy::too_many_arguments)]
    async fn move_file(
        &self,
        from: DirRef,
        src_name: &OsStr,
        src: &Child,
        to: DirRef,
        dst_name: &OsStr,
        dst: Option<Child>,
        later: bool,
    ) -> FsResult<()> {
        let target = self.place_in(&to, dst_name)?;
        // The replaced file's own upload goes first (per-name order): no new one starts, one in
        // flight is waited for, and what it landed is what this move replaces. Its spool stays
        // until the move is decided: a failed move leaves it its name and pending changes.
        let dino = dst
            .as_ref()
            .and_then(|d| d.ino)
            .filter(|d| Some(*d) != src.ino);
        let replaced_file = dino.and_then(|d| self.hold_fate(d));
        let result = self
            .move_file_held(
                from,
                src_name,
                src,
                to,
                dst_name,
                dst,
                target,
                replaced_file,
                later,
            )
            .await;
        if result.is_err()
            && let Some(d) = dino
        {
            self.keep_fate(d);
        }
        result
    }

    /// [`VagonFs::move_file`] once the replaced file's fate is held.
    #[allow(clippy::too_many_arguments)]
    async fn move_file_held(
        &self,
        from: DirRef,
        src_name: &OsStr,
        src: &Child,
        to: DirRef,
        dst_name: &OsStr,
        dst: Option<Child>,
        target: super::write::FileTarget,
        replaced_file: Option<Arc<SpooledFile>>,
        later: bool,
    ) -> FsResult<()> {
        let mut replace = dst.as_ref().and_then(remote_base);
        if let Some(f) = &replaced_file {
            f.wait_idle().await;
            if let Some(b) = f.base() {
                replace = Some(b);
            }
        }
        // Moved back to the name that a move answered before its upload still holds: that
        // move lands first (its old object's delete then holds the name, not this file, whose
        // upload would otherwise wait for itself).
        if let Some(ino) = src.ino {
            self.land_if_moved_from(ino, &target).await?;
        }
        let spooled = src.ino.and_then(|i| self.spooled_file(i).map(|f| (i, f)));
        let (file, listed_id, temporary) = match &spooled {
            // On the server under the old name, or never uploaded: decided below, once the
            // re-target is ordered after any upload of it (the engine may start one meanwhile).
            Some((_, f)) => (Arc::clone(f), None, false),
            None => {
                // The waits above may have let the source's own upload land (and its clean
                // spool go): take where its inode is now.
                let mut now = *src;
                if let Some(n) = src.ino.and_then(|i| self.inodes.get(i))
                    && n.loc != src.loc
                {
                    now.loc = n.loc;
                    now.size = n.size;
                    now.remote_mtime = None;
                }
                let (Loc::Remote { id, .. }, Some(base)) = (now.loc, remote_base(&now)) else {
                    return Err(FsError::NotFound);
                };
                let spools = self.spool_dir()?;
                let source = ApiRemote::new(Arc::clone(&self.api), id);
                let f = SpooledFile::open_existing(&spools, target.clone(), base, source)?;
                (f, Some(id), true)
            }
        };
        // The source's own place (a temporary spool below is made for the new name already).
        let source_place = self.place_in(&from, src_name)?;
        // A file only on the server: its record names the object left under the old name, so
        // that a crash before that object's delete does not forget it. With write-back, a
        // top-level move answers once the bytes are in that journaled spool, the old name held.
        let mut old_hold = None;
        if let (true, Some(id)) = (temporary, listed_id) {
            file.set_moved_from(Some(MovedFrom {
                id,
                parent_id: source_place.parent_id,
                name: source_place.name.clone(),
                display_path: source_place.display_path.clone(),
            }));
            if later && src.ino.is_some() && !self.engine.config.sync_close {
                old_hold = self.uploader.try_hold_name(
                    source_place.space,
                    source_place.parent_id,
                    &source_place.name,
                );
            }
        }
        let before = (file.target(), file.base());
        let (old_target, old_base) = match file.retarget(target.clone(), replace).await {
            Ok(previous) => previous,
            Err(e) => {
                // Not moved (a journal write failed); nothing could upload it meanwhile that
                // the undo would not see.
                self.undo_retarget(&file, temporary, before, replace).await;
                return Err(e.into());
            }
        };
        if let (Some((ino, _)), None) = (&spooled, old_base) {
            // Never on the server: its queued upload now goes to the new name. No bytes move.
            self.retargeted_pending(*ino, &file, from, src_name, src, to, dst_name, dst)
                .await;
            tracing::debug!(from = %old_target.display_path, to = %target.display_path, "queued upload re-targeted");
            return Ok(());
        }
        if let (Some(hold), Some(ino), Some(id)) = (old_hold, src.ino, listed_id)
            && self.adopt_moved(ino, &file, hold)
        {
            self.overlay.mark_gone(Loc::Remote {
                space: source_place.space,
                id,
            });
            self.retargeted_pending(ino, &file, from, src_name, src, to, dst_name, dst)
                .await;
            tracing::debug!(from = %source_place.display_path, to = %target.display_path, "moved; uploading under the new name in the background");
            return Ok(());
        }
        // The object under the old name, deleted once the bytes are under the new one.
        let old_id = old_base.map(|b| b.id).or(listed_id);
        // Where that object is: a temporary spool was made for the new name already, so the
        // old name is the source's (the delete holds it, and a crash's log names it).
        let old_place = if temporary {
            source_place
        } else {
            old_target.clone()
        };
        let done = match file.upload(&self.uploader).await {
            Ok(Some(done)) => done,
            // The engine's worker sent the re-targeted bytes first (it found the file dirty):
            // what it landed is the move's upload.
            Ok(None) => match file.base() {
                Some(b) if Some(b) != replace && Some(b.id) != old_id => Uploaded {
                    id: b.id,
                    size: b.size,
                },
                _ => return Err(FsError::NotFound),
            },
            Err(e) => {
                let undone = self
                    .undo_retarget(&file, temporary, (old_target.clone(), old_base), replace)
                    .await;
                match undone {
                    // The engine's worker landed the bytes under the new name after this
                    // upload failed: the move happened, and must not be reported as failed.
                    Some(b) => Uploaded {
                        id: b.id,
                        size: b.size,
                    },
                    None => return Err(e.into()),
                }
            }
        };
        let new_loc = Loc::Remote {
            space: target.space,
            id: done.id,
        };
        // The replaced file: gone, and its own pending changes with it.
        if let Some(d) = &dst {
            if let Some(dino) = d.ino.filter(|d| Some(*d) != src.ino) {
                self.drop_replaced(dino).await;
            }
            if d.loc != new_loc {
                self.overlay.mark_gone(d.loc);
            }
        }
        if let Some(old) = old_id.filter(|o| *o != done.id) {
            let old_loc = Loc::Remote {
                space: target.space,
                id: old,
            };
            self.overlay.mark_gone(old_loc);
            if !self.delete_moved_later(old_loc, &old_place, false)
                && let Err(e) = delete_remote(self.api.as_ref(), old).await
            {
                // The bytes are safe under the new name; a copy stays under the old one.
                tracing::warn!(file = %old_place.display_path, error = %e, "moved, but the old copy could not be deleted");
            }
        }
        // The record of a file moved from the server names the object it left (`moved_from`),
        // kept by its upload until that object's delete is noted. This move's own temporary
        // spool: that is `old_id`, deleted or logged above. A file a move answered before its
        // upload: its bytes landed here, so the object that move left goes now.
        if let Some(moved) = file.take_moved_from() {
            if !temporary {
                let hold = src.ino.and_then(|i| {
                    lock(&self.files)
                        .get_mut(&i)
                        .and_then(|f| f.old_name.take())
                });
                drop(self.move_source_landed(target.space, moved, hold, new_loc));
            }
            if let Err(e) = file.move_source_noted().await {
                // A stale record costs only a look at the server at the next mount.
                tracing::warn!(file = %target.display_path, error = %e, "moved, but its journal record could not be removed");
            }
        }
        match src.ino {
            Some(ino) => {
                self.inodes.rebind(ino, new_loc);
                if let Some(pino) = to.ino {
                    self.inodes.set_place(ino, (pino, to.loc), dst_name);
                }
                self.inodes.set_uploaded(ino, done.size);
                self.overlay.remove(from.loc, src_name, Some(ino));
                self.settle_name(to.loc, dst_name, ino);
            }
            None => self.overlay.remove(from.loc, src_name, None),
        }
        if let Some(old) = old_base.map(|b| b.id).or(old_id) {
            let old = Loc::Remote {
                space: old_target.space,
                id: old,
            };
            self.time_moved(old, new_loc, true, src.ino);
        }
        if let Some(dino) = dst.and_then(|d| d.ino).filter(|d| Some(*d) != src.ino) {
            self.release_spool_if_done(dino);
        }
        self.dirs.forget_missing(to.loc, dst_name);
        self.dirs.touch(from.loc);
        self.dirs.touch(to.loc);
        tracing::debug!(from = %old_place.display_path, to = %target.display_path, "file moved");
        Ok(())
    }

    /// A folder move failed after its new folder `new_loc` was made or chosen, `moved` entries
    /// into it. Nothing moved: a folder this move made is deleted again when a fresh listing
    /// shows it empty (the move changed nothing). Else both folders stay, each with what it holds, and the listings involved
    /// are fetched again so the mount shows that.
    async fn stopped_midway(
        &self,
        from: DirRef,
        to: DirRef,
        src: Loc,
        new_loc: Loc,
        moved: usize,
        created: bool,
    ) {
        // Only a folder seen empty on a fresh, complete listing is deleted (a nested move may
        // have put something there even when no entry of this level moved).
        let empty = async {
            self.dirs.invalidate(new_loc);
            self.dirs
                .listing(new_loc)
                .await
                .is_ok_and(|l| l.complete && l.entries.is_empty())
        };
        if moved == 0 && created && empty.await {
            if let Loc::Remote { id, .. } = new_loc
                && let Err(e) = delete_remote(self.api.as_ref(), id).await
            {
                tracing::warn!(error = %e, "a folder move failed, and the empty folder it made could not be removed");
            }
        } else {
            tracing::warn!(
                moved,
                "a folder move stopped midway: what moved is in the new folder, the rest in the old one"
            );
        }
        for loc in [from.loc, to.loc, src, new_loc] {
            self.dirs.invalidate(loc);
        }
    }

    /// A move answered before its upload: the temporary spool becomes `ino`'s (reads come
    /// from it, the engine uploads it), holding the old name until the old object's delete
    /// ended. `false`: `ino` got a spool of its own meanwhile (an open for writing), and the
    /// move goes on in the foreground.
    fn adopt_moved(&self, ino: u64, file: &Arc<SpooledFile>, hold: NameHold) -> bool {
        {
            let mut files = lock(&self.files);
            if files.contains_key(&ino) {
                return false;
            }
            files.insert(
                ino,
                OpenFile {
                    file: Arc::clone(file),
                    unlinked: false,
                    deciding: false,
                    old_name: Some(hold),
                },
            );
        }
        self.inodes.set_spooled(ino, true);
        true
    }

    /// A move of a file whose bytes were never uploaded, once its spool (and queued upload)
    /// points at the new name: replace `dst` (its spool discarded; the server file it names is
    /// replaced by the upload, by name) and show the file there. No request.
    #[allow(clippy::too_many_arguments)]
    async fn retargeted_pending(
        &self,
        ino: u64,
        file: &Arc<SpooledFile>,
        from: DirRef,
        src_name: &OsStr,
        src: &Child,
        to: DirRef,
        dst_name: &OsStr,
        dst: Option<Child>,
    ) {
        if let Some(dino) = dst
            .as_ref()
            .and_then(|d| d.ino)
            .filter(|d| Some(*d) != src.ino)
        {
            self.drop_replaced(dino).await;
            self.overlay.remove(to.loc, dst_name, Some(dino));
            self.release_spool_if_done(dino);
        }
        if let Some(pino) = to.ino {
            self.inodes.set_place(ino, (pino, to.loc), dst_name);
        }
        self.overlay.remove(from.loc, src_name, Some(ino));
        if !file.is_dirty() && self.shows_upload(ino, file) {
            // Its upload landed under the new name during the awaits above, and its bookkeeping
            // left the name to this move.
            self.settle_name(to.loc, dst_name, ino);
        } else {
            self.overlay.hold(to.loc, dst_name, ino);
        }
        self.dirs.forget_missing(to.loc, dst_name);
        self.kick(ino);
    }

    /// A move failed after `file` may have been re-targeted: a temporary spool is dropped (the
    /// old file is untouched), a file's own spool points back at `old` (name and base), unless
    /// an upload under the new name landed meanwhile (the engine's worker may send a
    /// re-targeted file at any time): then the move happened, and that upload's base is
    /// returned.
    async fn undo_retarget(
        &self,
        file: &SpooledFile,
        temporary: bool,
        old: (super::write::FileTarget, Option<super::write::RemoteBase>),
        moved_base: Option<super::write::RemoteBase>,
    ) -> Option<super::write::RemoteBase> {
        if temporary {
            if let Err(d) = file.discard().await {
                tracing::warn!(error = %d, "cannot remove a temporary rename spool");
            }
            return None;
        }
        match file.retarget_back(old.0, old.1, moved_base).await {
            Ok(landed) => landed,
            Err(r) => {
                tracing::warn!(error = %r, "cannot point a spool back at its old name");
                None
            }
        }
    }

    /// Move folder `src` recursively (see the module note). Boxed: it recurses.
    /// `lanes` bounds the files moved at once, across the whole tree.
    #[allow(clippy::too_many_arguments)]
    fn move_dir<'a>(
        &'a self,
        from: DirRef,
        src_name: &'a OsStr,
        src: Child,
        to: DirRef,
        dst_name: &'a OsStr,
        dst: Option<Child>,
        lanes: &'a Semaphore,
    ) -> BoxFuture<'a, FsResult<()>> {
        Box::pin(async move {
            let Loc::Remote { space, .. } = src.loc else {
                return Err(FsError::ReadOnly);
            };
            let (new_id, created) = match dst.as_ref().map(|d| d.loc) {
                Some(Loc::Remote { id, .. }) => (id, false),
                Some(_) => return Err(FsError::ReadOnly),
                None => {
                    let (_, parent_id) = folder_target(to.loc)?;
                    self.wait_name_free(to.loc, &api_name(dst_name)?).await?;
                    let _lane = lanes.acquire().await;
                    let made = self
                        .api
                        .create(&CreateRequest::directory(
                            space,
                            parent_id,
                            api_name(dst_name)?,
                        ))
                        .await?;
                    (made.id, true)
                }
            };
            let new_loc = Loc::Remote { space, id: new_id };
            let inner_from = DirRef {
                ino: src.ino,
                loc: src.loc,
                path: Some(self.shown_in(&from, src_name).into()),
            };
            // Children keep pointing at the folder's inode, which moves to the new folder below.
            let inner_to = DirRef {
                ino: src.ino,
                loc: new_loc,
                path: Some(self.shown_in(&to, dst_name).into()),
            };
            let moved = AtomicUsize::new(0);
            let children = async {
                let entries = self.children_of(src.loc).await?;
                // Every child is moved or left whole: once one failed no more start, and those
                // in flight are waited for (a move is never dropped halfway).
                let failed = AtomicBool::new(false);
                let mut moves = futures::stream::iter(entries)
                    .map(|(name, child)| {
                        let (failed, moved) = (&failed, &moved);
                        let (inner_from, inner_to) = (inner_from.clone(), inner_to.clone());
                        async move {
                            if failed.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                            let result = match child.kind {
                                NodeKind::File => {
                                    let _lane = lanes.acquire().await;
                                    // Each file's bytes under the new folder before the
                                    // old folder's delete: in the foreground.
                                    self.move_file(
                                        inner_from, &name, &child, inner_to, &name, None, false,
                                    )
                                    .await
                                }
                                NodeKind::Directory => {
                                    self.move_dir(
                                        inner_from, &name, child, inner_to, &name, None, lanes,
                                    )
                                    .await
                                }
                            };
                            match &result {
                                Ok(()) => moved.fetch_add(1, Ordering::Relaxed),
                                Err(_) => {
                                    failed.store(true, Ordering::Relaxed);
                                    0
                                }
                            };
                            result
                        }
                    })
                    .buffer_unordered(self.engine.config.transfers.max(1));
                let mut first_error = None;
                while let Some(r) = moves.next().await {
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            };
            let moved_all = children.await;
            let gone = match moved_all {
                Ok(()) => self.delete_moved_folder(&from, src_name, src.loc).await,
                Err(e) => Err(e),
            };
            let gone = match gone {
                Ok(gone) => gone,
                Err(e) => {
                    self.stopped_midway(
                        from,
                        to,
                        src.loc,
                        new_loc,
                        moved.load(Ordering::Relaxed),
                        created,
                    )
                    .await;
                    return Err(e);
                }
            };
            if gone {
                self.overlay.mark_gone(src.loc);
            }
            if let Some(d) = dst.and_then(|d| d.ino).filter(|d| Some(*d) != src.ino) {
                self.inodes.unbind(d);
            }
            match src.ino {
                Some(ino) => {
                    self.inodes.rebind(ino, new_loc);
                    if let Some(pino) = to.ino {
                        self.inodes.set_place(ino, (pino, to.loc), dst_name);
                    }
                    self.overlay.remove(from.loc, src_name, Some(ino));
                    self.settle_name(to.loc, dst_name, ino);
                }
                None => self.overlay.remove(from.loc, src_name, None),
            }
            for loc in [from.loc, to.loc, src.loc, new_loc] {
                self.dirs.invalidate(loc);
            }
            self.dirs.touch(from.loc);
            self.dirs.touch(to.loc);
            Ok(())
        })
    }
}

impl VagonFs {
    /// The old folder of a move, once everything it showed was moved out: deleted, but only
    /// when a fresh listing shows nothing else (another client may have put a file there
    /// while the move ran; the server deletes a folder with everything in it). With
    /// write-back in the background (`deletes.rs`: the same listing, after the deletes of the
    /// folders moved out of it), its name held until then. `Ok(false)`: kept, with what it
    /// holds (logged); it shows again.
    async fn delete_moved_folder(&self, from: &DirRef, name: &OsStr, old: Loc) -> FsResult<bool> {
        let Loc::Remote { id, .. } = old else {
            return Err(FsError::ReadOnly);
        };
        if self.delete_moved_later(old, &self.place_in(from, name)?, true) {
            return Ok(true);
        }
        let listing = self.dirs.relist(old).await?;
        if !self.shows_nothing(old, &listing) {
            tracing::warn!(
                folder = %self.shown_in(from, name),
                "moved, but the old folder holds something the move did not move (put there meanwhile, or not shown by the mount): kept with it"
            );
            return Ok(false);
        }
        delete_remote(self.api.as_ref(), id).await?;
        self.deletes.folder_deleted(old);
        Ok(true)
    }

    /// The file shown as inode `dino` was replaced by a rename onto its name: it is gone, and
    /// its own pending changes with it (its spool is discarded, its inode unbound).
    async fn drop_replaced(&self, dino: u64) {
        let replaced = lock(&self.files).get_mut(&dino).map(|f| {
            f.unlinked = true;
            f.deciding = false;
            f.file.hold_back(true);
            (Arc::clone(&f.file), f.old_name.take())
        });
        let replaced = replaced.map(|(f, old_name)| {
            if let Some(from) = f.take_moved_from() {
                // Moved there and replaced before its bytes landed: the object it was moved
                // from goes too.
                self.delete_move_source(f.target().space, from, old_name);
            }
            f
        });
        if let Some(f) = replaced
            && let Err(e) = f.discard().await
        {
            tracing::warn!(error = %e, "cannot remove the spool of a replaced file");
        }
        self.inodes.unbind(dino);
    }
}
