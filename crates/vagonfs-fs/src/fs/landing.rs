//! What happens to a written file's spool between its changes and the server: holding its
//! fate while an unlink or a rename decides it, uploading it (`upload_ino`, the engine's and
//! fsync's one way to send a file), the bookkeeping once an upload landed (`after_upload`), and
//! dropping the spool when nothing needs it any more.
//!
//! Subtle cases handled here:
//! - a clean spool is kept until the inode points at what its upload landed
//!   ([`VagonFs::shows_upload`]), and never dropped while someone else holds it (an open in
//!   progress, a rename): until then it is the only way to the file's bytes;
//! - an unlink or a rename onto a file holds its fate ([`VagonFs::hold_fate`]): no new upload
//!   starts (one that only waited for its name stops: `SpooledFile::hold_back`; one sending is
//!   waited for), its spool stays; a failed operation gives back its name and pending changes and
//!   runs the bookkeeping an upload skipped meanwhile ([`VagonFs::keep_fate`]);
//! - an upload that went to a conflict copy moves the inode to the copy's name; one that landed
//!   a file a rename re-targeted (the engine may send it before the rename moved the inode)
//!   leaves the name to the rename, so it never shadows a neighbour of the new name;
//! - an upload marks the id it replaced as gone, and counts its growth against the storage's
//!   known free space (the quota check, `room.rs`);
//! - a listed file that this mount's own upload just created is the uploading inode
//!   (`upsert_listed` for lookups and readdir, `bind_listed` for the write path's facts: a
//!   folder move taking it for a file only on the server moved its older bytes), found
//!   through one map of the spooled files per readdir batch (`spooled_by_base`), made only
//!   when an entry of the batch has no inode yet, or by one scan for a single lookup or a
//!   write-path child; all through `each_spooled_base`. So is a listed object that one of the
//!   file's own uploads overwrote (`SpooledFile::each_replaced`), where the file still has that name:
//!   a listing fetched before that upload landed, read when no bookkeeping bound the inode to
//!   it, shows the file, never a second inode whose bytes are gone.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::Space;

use super::inode::Loc;
use super::ops_write::folder_target;
use super::write::{SpooledFile, Uploaded};
use super::{FsError, FsResult, VagonFs, lock};

/// Spooled files' inodes by the remote object each one replaces (`true`), or one of its
/// uploads already overwrote (`false`): [`VagonFs::spooled_by_base`].
pub(crate) type SpooledByBase = HashMap<(Space, u64), (u64, bool)>;

/// Of two spooled files an object may be, the one that replaces it now, then the lowest inode.
fn better(best: Option<(u64, bool)>, found: (u64, bool)) -> (u64, bool) {
    match best {
        Some(b) if (!b.1, b.0) <= (!found.1, found.0) => b,
        _ => found,
    }
}

impl VagonFs {
    /// An unlink of `ino`, or a rename onto it, starts: no new upload of it starts (one in
    /// flight goes on: the caller waits for it), and its spool stays until the operation ends,
    /// however it ends. Its spool, if it has one.
    pub(crate) fn hold_fate(&self, ino: u64) -> Option<Arc<SpooledFile>> {
        lock(&self.files).get_mut(&ino).map(|f| {
            f.unlinked = true;
            f.deciding = true;
            f.file.hold_back(true);
            Arc::clone(&f.file)
        })
    }

    /// The unlink or rename that held `ino`'s fate failed: it keeps its name, and its pending
    /// changes go up again.
    pub(crate) fn keep_fate(&self, ino: u64) {
        let file = lock(&self.files).get_mut(&ino).map(|f| {
            f.unlinked = false;
            f.deciding = false;
            f.file.hold_back(false);
            Arc::clone(&f.file)
        });
        // An upload of it that landed while it was held skipped its bookkeeping (it looked
        // unlinked): the inode moves to what it landed now.
        if let Some(file) = &file
            && !file.is_dirty()
            && let Some(base) = file.base()
            && !self.shows_upload(ino, file)
        {
            let done = Uploaded {
                id: base.id,
                size: base.size,
            };
            self.after_upload(ino, file, &done);
        }
        self.kick(ino);
    }

    /// Drop the spool of `ino` when no handle is open and it has nothing left to upload.
    pub(crate) fn release_spool_if_done(&self, ino: u64) {
        if self.inodes.get(ino).is_some_and(|n| n.open_handles > 0) {
            return;
        }
        let dropped = {
            let mut files = lock(&self.files);
            // A clean spool whose upload finished but whose bookkeeping (`after_upload`: the
            // inode moves to the uploaded id) has not run yet is still the only way to its
            // bytes: the inode shows a file never listed (`Loc::Local`), or the version the
            // upload replaced (a read there would show the old bytes).
            match files.get(&ino) {
                // An unlink or a rename onto it is deciding: it may yet keep its name.
                Some(f) if f.deciding => None,
                // Clean and landed, and nobody else holds it: an open of it in progress (its
                // handle not counted yet), an upload still doing its bookkeeping.
                Some(f)
                    if f.unlinked
                        || (!f.file.is_dirty()
                            && self.shows_upload(ino, &f.file)
                            && Arc::strong_count(&f.file) == 1) =>
                {
                    files.remove(&ino)
                }
                // Dirty: the engine keeps uploading it; it comes back here when done.
                Some(_) => None,
                None => None,
            }
        };
        if dropped.is_some() {
            self.inodes.set_spooled(ino, false);
            // Room in `--cache-max-size` for a write waiting on it.
            self.engine.spool_freed.notify_waiters();
        }
    }

    /// Whether inode `ino` shows what `file` last uploaded (or, never uploaded, a listed file):
    /// until then its upload's bookkeeping (`after_upload`) has not run, and the spool is the
    /// only way to its bytes.
    pub(crate) fn shows_upload(&self, ino: u64, file: &SpooledFile) -> bool {
        match (file.base(), self.inodes.get(ino).map(|n| n.loc)) {
            (Some(base), Some(Loc::Remote { space, id })) => id == base.id && space == file.space(),
            (None, Some(loc)) => !matches!(loc, Loc::Local { .. }),
            _ => false,
        }
    }

    /// Upload `ino`'s spool if it is dirty.
    pub(crate) async fn upload_ino(&self, ino: u64) -> FsResult<()> {
        let Some((file, unlinked)) = lock(&self.files)
            .get(&ino)
            .map(|f| (Arc::clone(&f.file), f.unlinked))
        else {
            return Ok(());
        };
        if unlinked {
            return Ok(());
        }
        // What the upload replaces (a file renamed onto a listed name before its first upload
        // replaces that file, and its inode never pointed at it).
        let replaced = file.base().map(|b| b.id);
        let replaced_size = file.base().map_or(0, |b| b.size);
        match file.upload(&self.uploader).await {
            Ok(None) => Ok(()),
            Ok(Some(done)) => {
                // The quota check's numbers: the storage holds this much more now.
                self.statfs
                    .note_landed(file.space(), done.size.saturating_sub(replaced_size));
                if let Some(old) = replaced.filter(|old| *old != done.id) {
                    self.overlay.mark_gone(Loc::Remote {
                        space: file.space(),
                        id: old,
                    });
                }
                self.after_upload(ino, &file, &done);
                if let Err(e) = file.move_source_noted().await {
                    // A stale record costs only a look at the server at the next mount.
                    tracing::warn!(file = %file.target().display_path, error = %e, "upload done but its journal record could not be removed");
                }
                self.release_spool_if_done(ino);
                Ok(())
            }
            Err(e) => {
                let e = FsError::from(e);
                tracing::debug!(ino, file = %file.target().display_path, error = %e, "upload failed; the spool is kept");
                Err(e)
            }
        }
    }

    /// The inode for a listed child ([`super::inode::InodeTable::upsert`]), except that a
    /// listed file which this mount's own upload just created is the uploading inode, not a
    /// second inode beside it. The server answers a listing with the new file as soon as its
    /// `complete` did, before this mount's bookkeeping of the landing ([`Self::after_upload`])
    /// ran; a second inode would show the landed (older) bytes while the file's spool holds
    /// newer ones still on their way (found by the model test: the mount showed a file's
    /// previous version until its next upload landed).
    ///
    /// `spooled`: a readdir batch's [`Self::spooled_by_base`], made at most once for all its
    /// entries (and only if one of them needs it), so that each listed file is one map lookup,
    /// not a scan of every spooled file; `None` (one lookup) scans once, without building a
    /// map. Both find the lowest inode that replaces the listed object.
    pub(crate) fn upsert_listed(
        &self,
        seen: &super::inode::Seen,
        name: &std::ffi::OsStr,
        parent: (u64, Loc),
        count_lookup: bool,
        spooled: Option<&OnceCell<SpooledByBase>>,
    ) -> super::inode::Inode {
        if let Some(ino) = self.bind_listed(seen, name, parent.1, spooled)
            && let Some(node) = self.inodes.get(ino)
            && node.loc != seen.loc
        {
            // An object the file's own upload overwrote, listed before that landed: the file.
            let node = if count_lookup {
                self.inodes.add_lookup(ino)
            } else {
                Some(node)
            };
            if let Some(node) = node {
                return node;
            }
        }
        self.inodes.upsert(seen, name, parent, count_lookup)
    }

    /// The inode of listed object `seen`, if it has one: the one bound to it, or the spooled
    /// file whose own upload created it, bound to it now (as the landing's bookkeeping will).
    /// The write path's facts about a listed child come through here too: a folder move that
    /// listed a file between its upload's `complete` and that bookkeeping took it for a file
    /// only on the server, moved its landed (older) bytes, and left the newer ones to land
    /// under the old folder (found by the model test).
    ///
    /// A listed object that a spooled file's upload overwrote (`name` in folder `parent`, a
    /// listing fetched before that upload landed) is that file too, where it still has that
    /// name: its inode is returned, left bound to what it is now (a folder move that listed it
    /// in that window took it for a file only on the server and failed on its download).
    pub(crate) fn bind_listed(
        &self,
        seen: &super::inode::Seen,
        name: &std::ffi::OsStr,
        parent: Loc,
        spooled: Option<&OnceCell<SpooledByBase>>,
    ) -> Option<u64> {
        if let Some(ino) = self.inodes.ino_of(&seen.loc) {
            return Some(ino);
        }
        let Loc::Remote { space, id } = seen.loc else {
            return None;
        };
        if seen.kind != super::NodeKind::File {
            return None;
        }
        let own = match spooled {
            Some(batch) => batch
                .get_or_init(|| self.spooled_by_base())
                .get(&(space, id))
                .copied(),
            None => {
                let mut best = None;
                self.each_spooled_base(|base, found| {
                    if base == (space, id) {
                        best = Some(better(best, found));
                    }
                });
                best
            }
        };
        let (ino, current) = own?;
        let node = self.inodes.get(ino)?;
        if !current {
            let named = node.name.as_deref() == Some(name);
            return (named && node.parent.map(|(_, at)| at) == Some(parent)).then_some(ino);
        }
        if node.loc != seen.loc {
            self.bind_landed(ino, node.loc, seen.loc);
        }
        Some(ino)
    }

    /// The inodes of this mount's spooled files (not unlinked) by the remote object each one
    /// replaces, `(space, id)`; the lowest inode when two replace the same object.
    pub(crate) fn spooled_by_base(&self) -> SpooledByBase {
        let mut map = SpooledByBase::new();
        self.each_spooled_base(|base, found| {
            map.entry(base)
                .and_modify(|v| *v = better(Some(*v), found))
                .or_insert(found);
        });
        map
    }

    /// `visit((space, id), (inode, true))` for each spooled file (not unlinked) that replaces a
    /// remote object, and `(inode, false)` for each object its uploads overwrote, under the
    /// `files` lock: the one rule of which upload a listed object may be.
    fn each_spooled_base(&self, mut visit: impl FnMut((Space, u64), (u64, bool))) {
        for (ino, f) in lock(&self.files).iter() {
            if f.unlinked {
                continue;
            }
            let space = f.file.space();
            if let Some(base) = f.file.base() {
                visit((space, base.id), (*ino, true));
            }
            f.file.each_replaced(|id| visit((space, id), (*ino, false)));
        }
    }

    /// `ino` is now the object its upload landed as (`to`), no longer `from`: the old object
    /// leaves listings, the inode moves, and a remembered time of the old version no longer
    /// holds (new bytes on the server). Shared by the landing's bookkeeping and by a listing
    /// that saw the landed object first ([`Self::upsert_listed`]).
    fn bind_landed(&self, ino: u64, from: Loc, to: Loc) {
        if from != to {
            self.overlay.mark_gone(from);
            self.inodes.rebind(ino, to);
        }
        self.time_moved(from, to, false, Some(ino));
    }

    /// Bookkeeping after `ino`'s spool was uploaded as `done`. No listing is fetched or
    /// dropped: the overlay shows the file under its name (and hides the id it replaced) until
    /// any listing fetched before the upload has expired, so a new file costs exactly its three
    /// upload requests.
    pub(crate) fn after_upload(&self, ino: u64, file: &SpooledFile, done: &Uploaded) {
        let (unlinked, old_name) = match lock(&self.files).get_mut(&ino) {
            Some(f) => (f.unlinked, f.old_name.take()),
            None => (false, None),
        };
        let new_loc = Loc::Remote {
            space: file.target().space,
            id: done.id,
        };
        // A move answered before this upload: its bytes are under the new name now, so the
        // object left under the old name goes (its time carried to the new one). Also when an
        // unlink or a rename holds this file's fate: whatever it decides, that object is due,
        // and its hold on the old name must not wait for the decision (a rename of a new file
        // of that name onto this one waits for that file's upload, which waits for the name).
        let _moved = file
            .take_moved_from()
            .map(|from| self.move_source_landed(file.target().space, from, old_name, new_loc));
        if unlinked {
            // Unlinked while its upload was in flight: the unlink waits for this upload and
            // deletes what it landed (per-name order), so nothing more to do here.
            return;
        }
        let Some(node) = self.inodes.get(ino) else {
            return;
        };
        // The landed size first: the remembered time is stored with it (`bind_landed`).
        self.inodes
            .set_local_attrs(ino, Some(done.size), Some(file.modified()));
        self.bind_landed(ino, node.loc, new_loc);
        if let (Some((dir_ino, dir_loc)), Some(name)) = (node.parent, &node.name) {
            let target = file.target();
            let landed = std::ffi::OsString::from(target.name);
            let same_folder = folder_target(dir_loc).ok() == Some((target.space, target.parent_id));
            if !same_folder || (&landed != name && !file.is_conflict_copy()) {
                // A rename re-targeted the file and the engine's worker sent it before the
                // rename moved the inode: the rename puts the name in place (and must not be
                // taken for a conflict copy here, which would shadow a neighbour of that name).
                return;
            }
            if &landed != name {
                // A conflict copy: the server's file keeps the name; this inode is the copy.
                tracing::warn!(
                    file = %self.display_path(Some(dir_ino), name),
                    copy = %landed.to_string_lossy(),
                    "conflict with a change made elsewhere: this mount's version is kept as a copy"
                );
                self.overlay.remove(dir_loc, name, Some(ino));
                self.inodes.set_place(ino, (dir_ino, dir_loc), &landed);
                self.settle_name(dir_loc, &landed, ino);
                // The listing has the other client's file under the name: fetch it again.
                self.dirs.invalidate(dir_loc);
            } else {
                self.settle_name(dir_loc, name, ino);
            }
        }
    }
}

impl VagonFs {
    /// Upload `ino` now (foreground) if a move answered before its upload left an object at
    /// `place`: that move holds `place`'s name until the object is deleted, after the landing,
    /// and the caller needs the name free (`rename.rs`' module note).
    pub(crate) async fn land_if_moved_from(
        &self,
        ino: u64,
        place: &super::write::FileTarget,
    ) -> FsResult<()> {
        match self.spooled_file(ino) {
            Some(f)
                if f.space() == place.space && f.moved_from_is(place.parent_id, &place.name) =>
            {
                self.upload_ino(ino).await
            }
            _ => Ok(()),
        }
    }

    /// A move answered before its file landed: the bytes are at `new_loc` now, so the object
    /// the move left under the old name (`from`, in `space`) goes, its time carried to the new one. The
    /// delete (holding the old name with `hold`) is queued when the guard returned is dropped,
    /// so that a landing's bookkeeping comes first.
    pub(crate) fn move_source_landed(
        &self,
        space: Space,
        from: super::write::MovedFrom,
        hold: Option<super::write::NameHold>,
        new_loc: Loc,
    ) -> MovedDelete<'_> {
        self.time_moved(Loc::Remote { space, id: from.id }, new_loc, true, None);
        MovedDelete {
            fs: self,
            space,
            from: Some(from),
            hold,
        }
    }
}

/// The delete of a move's source, queued when dropped: after the landing's bookkeeping, on
/// every way out of it.
pub(crate) struct MovedDelete<'a> {
    fs: &'a VagonFs,
    space: Space,
    from: Option<super::write::MovedFrom>,
    hold: Option<super::write::NameHold>,
}

impl Drop for MovedDelete<'_> {
    fn drop(&mut self) {
        if let Some(from) = self.from.take() {
            self.fs
                .delete_move_source(self.space, from, self.hold.take());
        }
    }
}
