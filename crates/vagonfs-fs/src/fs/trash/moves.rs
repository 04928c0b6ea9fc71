//! unlink, rmdir and rename in the merged trash: routed to the storage's own object, and the
//! held info file written to the storage before its file is moved (see `trash/mod.rs`).

use super::*;

impl VagonFs {
    /// The merged-trash part that folder `parent` is, for an unlink or rmdir in it: `None`
    /// when it is not in the merged trash; EROFS at its top, or when the mount is read-only.
    fn trash_part_of(&self, parent: u64) -> Option<FsResult<TrashDir>> {
        let dir = self.node(parent).ok()?;
        let part = match dir.loc {
            Loc::Trash(TrashDir::Top) => return Some(Err(FsError::ReadOnly)),
            Loc::Trash(part) => part,
            _ => return None,
        };
        Some(self.check_writable(&dir.loc).map(|()| part))
    }

    /// `Some` for an unlink in the merged trash: a held file is dropped, a storage's object
    /// deleted in its own folder.
    pub(crate) fn trash_unlink<'a>(
        &'a self,
        parent: u64,
        name: &'a OsStr,
    ) -> BoxFuture<'a, Option<FsResult<()>>> {
        Box::pin(async move {
            let part = match self.trash_part_of(parent)? {
                Ok(part) => part,
                Err(e) => return Some(Err(e)),
            };
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
            let part = match self.trash_part_of(parent)? {
                Ok(part) => part,
                Err(e) => return Some(Err(e)),
            };
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

    pub(super) async fn trash_move(
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
    pub(super) async fn trash_move_found(
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
    pub(super) async fn rename_held(
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
    pub(super) async fn commit_info(
        &self,
        store: &Store,
        ino: u64,
        name: &OsStr,
    ) -> FsResult<(Inode, u64)> {
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
    pub(super) fn held_now_shows(&self, ino: u64, space: Space, file: u64, name: &OsStr, dir: u64) {
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
