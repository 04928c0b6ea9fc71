//! Files of the merged `info/` held in memory: GLib's info file before its file is trashed,
//! and a storage's info file read through the root with `Path=` prefixed (see `trash/mod.rs`).

use super::*;

impl VagonFs {
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

    pub(super) async fn create_held(
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

    pub(super) fn held_write_in(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<u32> {
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

    pub(super) async fn held_read_in(&self, ino: u64, offset: u64, size: u32) -> FsResult<Bytes> {
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
    pub(super) async fn read_real_info(&self, shows: &Shows) -> FsResult<Vec<u8>> {
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

    pub(super) async fn read_whole(&self, real: u64) -> FsResult<Vec<u8>> {
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
    pub(super) fn drop_held(&self, ino: u64) {
        lock(&self.trash.held).remove(&ino);
        self.inodes.unbind(ino);
    }
}
