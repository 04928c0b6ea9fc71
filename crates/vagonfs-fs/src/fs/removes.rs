//! The core's removals: unlink and rmdir, answered at once with write-back and deleted on the
//! server in the background (`deletes.rs`), or in the foreground (`--sync-close`, a file with a
//! spool to settle, no cache folder). A folder made by this mount is deleted once its create
//! landed (the delete waits for it).
//!
//! Subtle cases handled here:
//! - a name shown read-only (cut to fit, held more than once on the server) is never removed
//!   through the mount (EROFS): its real name could not be kept;
//! - unlink of a file with a spool is ordered after its own upload (a queued one is cancelled,
//!   one in flight is waited for and what it landed deleted), so a late upload can never bring
//!   the name back;
//! - a removed name stays held in the uploader's name table until its delete landed, so a new
//!   file or folder made under it waits (at most `--op-timeout`) and never meets the old one;
//! - rmdir judges emptiness on a listing that started within `--dir-refresh`, or on a fresh one;
//!   the background delete lists the folder again before deleting it (the server deletes a
//!   folder with everything in it), and keeps it if anything else is there;
//! - while an API failure is remembered, removals fail at once: nothing is promised.

use std::ffi::OsStr;
use std::time::Instant;

use crate::api::Space;

use super::deletes::Removed;
use super::inode::{Inode, Loc};
use super::names::Child;
use super::ops_write::{delete_remote, folder_target};
use super::write::{FileTarget, MovedFrom, NameHold, SpoolDir};
use super::{FsError, FsResult, NodeKind, VagonFs, lock};

impl VagonFs {
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if let Some(trash) = self.trash_unlink(parent, name).await {
            return trash;
        }
        let dir = self.dir_node(parent)?;
        self.check_writable(&dir.loc)?;
        let child = self.child(&dir, name).await?.ok_or(FsError::NotFound)?;
        if child.kind == NodeKind::Directory {
            return Err(FsError::IsADirectory);
        }
        self.refuse_read_only_removal(parent, name, &child)?;
        self.remove_file(&dir, name, &child).await
    }

    /// A name shown read-only (cut to fit, or held more than once on the server) is never
    /// removed through the mount: `mv` of its folder falls back to copy-then-delete (the folder
    /// answers EXDEV), and the copy can only carry the shown name, so the delete would lose the
    /// object's real name (or, for a duplicate, which object is which). EROFS, logged once per
    /// call; the web UI can remove it.
    fn refuse_read_only_removal(&self, parent: u64, name: &OsStr, child: &Child) -> FsResult<()> {
        if !child.read_only {
            return Ok(());
        }
        tracing::warn!(
            file = %self.display_path(Some(parent), name),
            "refusing to remove a name shown read-only (longer than 255 bytes, or held more than once on the server): its real name cannot be kept through the mount"
        );
        Err(FsError::ReadOnly)
    }

    /// Delete a file shown as `name` in `dir`: on the server, and its spool (open descriptors
    /// keep working on the unlinked spool).
    ///
    /// Ordered after the file's own upload: no new upload starts once it is marked unlinked, a
    /// queued one is cancelled for free, and one in flight is waited for and what it landed is
    /// deleted, so a late upload can never bring the name back or destroy a newer file of the
    /// same name.
    pub(crate) async fn remove_file(
        &self,
        dir: &Inode,
        name: &OsStr,
        child: &Child,
    ) -> FsResult<()> {
        if self.remove_later(dir, name, child).await? {
            return Ok(());
        }
        let file = child.ino.and_then(|ino| self.hold_fate(ino));
        let remote = match &file {
            Some(f) => {
                f.wait_idle().await;
                f.base().map(|b| b.id)
            }
            None => match child.loc {
                Loc::Remote { id, .. } => Some(id),
                _ => None,
            },
        };
        if let Some(id) = remote
            && let Err(e) = self
                .health
                .bounded(
                    "delete",
                    self.config.op_timeout,
                    delete_remote(self.api.as_ref(), id),
                )
                .await
        {
            if let Some(ino) = child.ino {
                self.keep_fate(ino);
            }
            return Err(e);
        }
        let old_name = child.ino.and_then(|ino| {
            let mut files = lock(&self.files);
            let f = files.get_mut(&ino)?;
            f.deciding = false;
            f.old_name.take()
        });
        if let Some(f) = &file
            && let Some(from) = f.take_moved_from()
        {
            // Moved here and removed before its bytes landed: the object it was moved from
            // goes too.
            self.delete_move_source(f.target().space, from, old_name);
        }
        if let (Some(f), Some(id)) = (&file, remote) {
            // What its upload landed is gone too (the listing may show it).
            self.overlay.mark_gone(Loc::Remote {
                space: f.target().space,
                id,
            });
        }
        if let Some(file) = file
            && let Err(e) = file.discard().await
        {
            tracing::warn!(file = %file.target().display_path, error = %e, "cannot remove the spool of an unlinked file");
        }
        if let Some(ino) = child.ino {
            self.clear_failure(ino);
        }
        self.forget_removed(dir, name, child);
        Ok(())
    }

    /// With write-back, a file that is only on the server (no spool here) is removed at once
    /// and deleted in the background, its name held until then (`deletes.rs`). `false`: it is
    /// to be removed in the foreground (a spool to settle, `--sync-close`).
    async fn remove_later(&self, dir: &Inode, name: &OsStr, child: &Child) -> FsResult<bool> {
        let Loc::Remote { .. } = child.loc else {
            return Ok(false);
        };
        if child
            .ino
            .is_some_and(|ino| lock(&self.files).contains_key(&ino))
            || !self.may_remove_later()?
        {
            return Ok(false);
        }
        self.remove_in_background(dir, name, child, None).await
    }

    /// Whether removals may be answered before the server acted: not with `--sync-close`; the
    /// error at once while the API is known to be down (nothing is promised then).
    fn may_remove_later(&self) -> FsResult<bool> {
        if self.engine.config.sync_close {
            return Ok(false);
        }
        match self.health.recent_failure() {
            Some(err) => Err(err),
            None => Ok(true),
        }
    }

    /// Remove `child` (`name` in `dir`; a folder when `folder` is given, with when rmdir's
    /// fresh listing of it started) now and have it deleted in the background: its name held
    /// (at most `--op-timeout` to take it), the delete noted in the log, the object hidden, then
    /// the delete started. `false`: not noted (the caller removes it in the foreground).
    async fn remove_in_background(
        &self,
        dir: &Inode,
        name: &OsStr,
        child: &Child,
        folder: Option<Option<Instant>>,
    ) -> FsResult<bool> {
        let Some(text) = name.to_str() else {
            return Ok(false);
        };
        let Ok(spool) = self.spool_dir() else {
            return Ok(false);
        };
        let (_, parent_id) = folder_target(dir.loc)?;
        let what = if folder.is_some() {
            "delete folder"
        } else {
            "delete"
        };
        let hold = self.hold_name_bounded(dir.loc, text, what).await?;
        let removed = Removed {
            loc: child.loc,
            folder,
            parent: parent_id,
            name: text,
            shown: self.display_path(Some(dir.ino), name),
        };
        if !self.note_delete(&spool, removed, Some(hold)) {
            return Ok(false);
        }
        if let Some(ino) = child.ino {
            self.clear_failure(ino);
        }
        self.forget_removed(dir, name, child);
        // Sent only once hidden, so a refusal (which shows it again) comes after.
        self.launch_deletes();
        Ok(true)
    }

    /// With write-back, the object a move left under its old name (`old_target`: a file, or
    /// with `folder` the old folder of a folder move, whose delete lists it first) is deleted
    /// in the background, the old name held until then (a new file of that name uploads after
    /// it). `false`: to be deleted now (`--sync-close`, the name held by an upload, no cache
    /// folder).
    pub(crate) fn delete_moved_later(
        &self,
        old: Loc,
        old_target: &FileTarget,
        folder: bool,
    ) -> bool {
        if self.engine.config.sync_close {
            return false;
        }
        let Ok(spool) = self.spool_dir() else {
            return false;
        };
        let Some(hold) =
            self.uploader
                .try_hold_name(old_target.space, old_target.parent_id, &old_target.name)
        else {
            return false;
        };
        let removed = Removed {
            loc: old,
            folder: folder.then_some(None),
            parent: old_target.parent_id,
            name: &old_target.name,
            shown: old_target.display_path.clone(),
        };
        if !self.note_delete(&spool, removed, Some(hold)) {
            return false;
        }
        self.launch_deletes();
        true
    }

    /// [`VagonFs::delete_later`], a failure to write its log line warned about: `false` then,
    /// and the caller deletes at once instead.
    fn note_delete(&self, spool: &SpoolDir, removed: Removed<'_>, hold: Option<NameHold>) -> bool {
        match self.delete_later(spool, removed, hold) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot note a delete in the cache folder; deleting now");
                false
            }
        }
    }

    /// The object a move left under its old name (`from`, in `space`), once the moved bytes
    /// landed or the moved file was removed: hidden, and deleted in the background, its old
    /// name held until then (`hold`, when the move still has it). Without a cache folder's log
    /// (it is gone), deleted by a task of its own.
    pub(crate) fn delete_move_source(&self, space: Space, from: MovedFrom, hold: Option<NameHold>) {
        let loc = Loc::Remote { space, id: from.id };
        self.overlay.mark_gone(loc);
        let hold = hold.or_else(|| self.take_move_hold(&loc));
        if let Ok(spool) = self.spool_dir() {
            let removed = Removed {
                loc,
                folder: None,
                parent: from.parent_id,
                name: &from.name,
                shown: from.display_path.clone(),
            };
            if self.note_delete(&spool, removed, hold) {
                self.launch_deletes();
                return;
            }
        }
        let api = std::sync::Arc::clone(&self.api);
        tokio::spawn(async move {
            if let Err(e) = delete_remote(api.as_ref(), from.id).await {
                // The bytes are safe under the new name; a copy stays under the old one.
                tracing::warn!(file = %from.display_path, error = %e, "moved, but the old copy could not be deleted");
            }
        });
    }

    /// Wait (at most `--op-timeout`) until no upload or pending delete holds `name` in folder
    /// `dir`, before making a folder of that name: a file just removed there is gone first.
    pub(crate) async fn wait_name_free(&self, dir: Loc, name: &str) -> FsResult<()> {
        self.hold_name_bounded(dir, name, "waiting for a delete")
            .await
            .map(drop)
    }

    /// The uploader's hold on `name` in folder `dir`, waited for at most `--op-timeout` (then
    /// the op-timeout error for `what`).
    async fn hold_name_bounded(&self, dir: Loc, name: &str, what: &str) -> FsResult<NameHold> {
        let (space, parent_id) = folder_target(dir)?;
        tokio::time::timeout(
            self.config.op_timeout,
            self.uploader.hold_name(space, parent_id, name),
        )
        .await
        .map_err(|_| super::health::op_timed_out(what, self.config.op_timeout))
    }

    /// Local bookkeeping once the object shown as `name` in `dir` no longer exists there.
    pub(crate) fn forget_removed(&self, dir: &Inode, name: &OsStr, child: &Child) {
        self.overlay.mark_gone(child.loc);
        self.overlay.remove(dir.loc, name, child.ino);
        if let Some(ino) = child.ino {
            self.inodes.unbind(ino);
            self.release_spool_if_done(ino);
        }
        self.dirs.touch(dir.loc);
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if let Some(trash) = self.trash_rmdir(parent, name).await {
            return trash;
        }
        let dir = self.dir_node(parent)?;
        self.check_writable(&dir.loc)?;
        let child = self.child(&dir, name).await?.ok_or(FsError::NotFound)?;
        if child.kind != NodeKind::Directory {
            return Err(FsError::NotADirectory);
        }
        self.refuse_read_only_removal(parent, name, &child)?;
        let Loc::Remote { id, .. } = child.loc else {
            // A storage root or a virtual folder.
            return Err(FsError::ReadOnly);
        };
        if self.rmdir_later(&dir, name, &child).await? {
            return Ok(());
        }
        if !self.is_empty_dir(child.loc).await? {
            return Err(FsError::NotEmpty);
        }
        self.health
            .bounded(
                "delete folder",
                self.config.op_timeout,
                delete_remote(self.api.as_ref(), id),
            )
            .await?;
        self.forget_removed(&dir, name, &child);
        self.deletes.folder_deleted(child.loc);
        self.dirs.invalidate(child.loc);
        Ok(())
    }

    /// With write-back, a folder that shows empty is removed at once and deleted in the
    /// background once a fresh listing confirms it (`deletes.rs`), its name held until then.
    /// It is judged here on its listing if one started within `--dir-refresh`, else on a fresh
    /// one. `false`: to be removed in the foreground (`--sync-close`, no cache folder). A folder
    /// made by this mount is deleted once its create landed (`deletes.rs`).
    async fn rmdir_later(&self, dir: &Inode, name: &OsStr, child: &Child) -> FsResult<bool> {
        if name.to_str().is_none() || !self.may_remove_later()? {
            return Ok(false);
        }
        let checked = match self.dirs.recent(child.loc) {
            Some(listing) if self.shows_nothing(child.loc, &listing) => None,
            _ => {
                let listing = self.dirs.relist(child.loc).await?;
                if !self.shows_nothing(child.loc, &listing) {
                    return Err(FsError::NotEmpty);
                }
                Some(listing.started)
            }
        };
        self.remove_in_background(dir, name, child, Some(checked))
            .await
    }
}
