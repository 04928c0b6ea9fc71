//! The `fuser::Filesystem` implementation: one method per kernel operation, each decoding its
//! arguments, handing them to the core through [`FuseAdapter::dispatch`] (or answering at once
//! through [`FuseAdapter::refuse`] what the storage cannot express) and encoding the answer
//! with [`super::reply`].
//!
//! Subtle cases: see the note of [`super`] (negative entries, readdir lookup counts, mknod,
//! refusals, INIT capabilities).

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, FileHandle, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, trace};

use super::reply::{
    GENERATION, Listing, ListingPlus, core_offset, file_attr, negative_attr, open_flags,
    system_time,
};
use super::{
    CONGESTION_THRESHOLD, FuseAdapter, FuseOp, MAX_BACKGROUND, MAX_READAHEAD, MAX_WRITE, OpCtx,
};
use crate::fs::{AttrReply, Lookup, OpenReply, SetAttr};

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Async reads: the kernel may send several reads of one file at once (readahead).
        // Big writes: writes larger than a page. Readdirplus: listings carry attributes, so
        // `ls -l` needs no lookup per entry. Parallel dirops: lookups and listings in one
        // folder need not be serialized. Auto inval data: a changed mtime/size seen in
        // fresh attributes drops stale cached pages (others may change files on the server).
        // Not asked: atomic O_TRUNC (the kernel truncates through setattr, which the core
        // handles), writeback cache (the core uploads on close and must see every write).
        for (cap, name) in [
            (InitFlags::FUSE_ASYNC_READ, "async read"),
            (InitFlags::FUSE_BIG_WRITES, "big writes"),
            (InitFlags::FUSE_DO_READDIRPLUS, "readdirplus"),
            (InitFlags::FUSE_PARALLEL_DIROPS, "parallel dirops"),
            (InitFlags::FUSE_AUTO_INVAL_DATA, "auto inval data"),
        ] {
            if config.add_capabilities(cap).is_err() {
                debug!("kernel does not offer FUSE capability {name}");
            }
        }
        let readahead = match config.set_max_readahead(MAX_READAHEAD) {
            Ok(_) => MAX_READAHEAD,
            Err(nearest) => {
                // Cannot fail: `nearest` is the kernel's own maximum.
                let _ = config.set_max_readahead(nearest);
                nearest
            }
        };
        let max_write = match config.set_max_write(MAX_WRITE) {
            Ok(_) => MAX_WRITE,
            Err(nearest) => {
                let _ = config.set_max_write(nearest);
                nearest
            }
        };
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(CONGESTION_THRESHOLD);
        debug!(readahead, max_write, "FUSE session initialized");
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        Ok(())
    }

    fn destroy(&mut self) {
        debug!("FUSE session destroyed");
    }

    fn lookup(&self, _req: &Request, INodeNo(parent): INodeNo, name: &OsStr, reply: ReplyEntry) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Lookup, parent),
            reply,
            async move { fs.lookup_entry(parent, &name).await },
            |reply, found| match found {
                Lookup::Found(a) => reply.entry(&a.ttl, &file_attr(&a.attr), GENERATION),
                Lookup::Missing(ttl) => reply.entry(&ttl, &negative_attr(), GENERATION),
            },
        );
    }

    fn forget(&self, _req: &Request, INodeNo(ino): INodeNo, nlookup: u64) {
        trace!(ino, nlookup, "forget");
        self.count(FuseOp::Forget, false);
        self.fs.forget(ino, nlookup);
    }

    fn getattr(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        let ctx = match fh {
            Some(FileHandle(fh)) => OpCtx::fh(FuseOp::Getattr, ino, fh),
            None => OpCtx::new(FuseOp::Getattr, ino),
        };
        self.dispatch(
            ctx,
            reply,
            async move { fs.getattr(ino).await },
            |reply, a: AttrReply| reply.attr(&a.ttl, &file_attr(&a.attr)),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = fh.map(|FileHandle(fh)| fh);
        let set = SetAttr {
            size,
            mode,
            uid,
            gid,
            atime: atime.map(system_time),
            mtime: mtime.map(system_time),
            fh,
        };
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx {
                op: FuseOp::Setattr,
                ino,
                fh,
            },
            reply,
            async move { fs.setattr(ino, set).await },
            |reply, a: AttrReply| reply.attr(&a.ttl, &file_attr(&a.attr)),
        );
    }

    fn readlink(&self, _req: &Request, INodeNo(ino): INodeNo, reply: ReplyData) {
        self.refuse(
            OpCtx::new(FuseOp::Readlink, ino),
            reply,
            libc::EINVAL,
            "no symbolic links here",
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        INodeNo(parent): INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Mknod, parent),
            reply,
            async move { fs.mknod(parent, &name, mode).await },
            |reply, a: AttrReply| reply.entry(&a.ttl, &file_attr(&a.attr), GENERATION),
        );
    }

    fn mkdir(
        &self,
        _req: &Request,
        INodeNo(parent): INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Mkdir, parent),
            reply,
            async move { fs.mkdir(parent, &name, mode).await },
            |reply, a: AttrReply| reply.entry(&a.ttl, &file_attr(&a.attr), GENERATION),
        );
    }

    fn unlink(&self, _req: &Request, INodeNo(parent): INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Unlink, parent),
            reply,
            async move { fs.unlink(parent, &name).await },
            |reply, ()| reply.ok(),
        );
    }

    fn rmdir(&self, _req: &Request, INodeNo(parent): INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Rmdir, parent),
            reply,
            async move { fs.rmdir(parent, &name).await },
            |reply, ()| reply.ok(),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        INodeNo(parent): INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.refuse(
            OpCtx::new(FuseOp::Symlink, parent),
            reply,
            libc::EPERM,
            "the storage has no links",
        );
    }

    fn rename(
        &self,
        _req: &Request,
        INodeNo(parent): INodeNo,
        name: &OsStr,
        INodeNo(newparent): INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        let newname: OsString = newname.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Rename, parent),
            reply,
            async move {
                fs.rename(parent, &name, newparent, &newname, flags.bits())
                    .await
            },
            |reply, ()| reply.ok(),
        );
    }

    fn link(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.refuse(
            OpCtx::new(FuseOp::Link, ino),
            reply,
            libc::EPERM,
            "the storage has no links",
        );
    }

    fn open(&self, req: &Request, INodeNo(ino): INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let pid = Some(req.pid());
        self.dispatch(
            OpCtx::new(FuseOp::Open, ino),
            reply,
            async move { fs.open_by(ino, flags.0, pid).await },
            |reply, open: OpenReply| reply.opened(FileHandle(open.fh), open_flags(&open)),
        );
    }

    fn read(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        off: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ctx = OpCtx::fh(FuseOp::Read, ino, fh);
        let fs = self.fs.clone();
        self.dispatch(
            ctx,
            reply,
            async move { fs.read(ino, fh, off, size).await },
            |reply, data| reply.data(&data),
        );
    }

    fn write(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        off: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ctx = OpCtx::fh(FuseOp::Write, ino, fh);
        // fuser reuses its request buffer: the task needs its own copy.
        let data = data.to_vec();
        let fs = self.fs.clone();
        self.dispatch(
            ctx,
            reply,
            async move { fs.write(ino, fh, off, data).await },
            |reply, written| reply.written(written),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::fh(FuseOp::Flush, ino, fh),
            reply,
            async move { fs.flush(ino, fh).await },
            |reply, ()| reply.ok(),
        );
    }

    fn release(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::fh(FuseOp::Release, ino, fh),
            reply,
            async move { fs.release(ino, fh).await },
            |reply, ()| reply.ok(),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::fh(FuseOp::Fsync, ino, fh),
            reply,
            async move { fs.fsync(ino, fh).await },
            |reply, ()| reply.ok(),
        );
    }

    fn opendir(&self, _req: &Request, INodeNo(ino): INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::new(FuseOp::Opendir, ino),
            reply,
            async move { fs.opendir(ino).await },
            |reply, fh| reply.opened(FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        let core = self.fs.clone();
        self.dispatch(
            OpCtx::fh(FuseOp::Readdir, ino, fh),
            reply,
            async move { fs.readdir(ino, fh, core_offset(offset)).await },
            move |mut reply, entries| {
                core.send_listing(&entries, &mut Listing(&mut reply));
                reply.ok();
            },
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let core = self.fs.clone();
        let ttl = self.config.entry_ttl;
        self.dispatch(
            OpCtx::fh(FuseOp::Readdirplus, ino, fh),
            reply,
            async move { fs.readdir(ino, fh, core_offset(offset)).await },
            move |mut reply, entries| {
                core.send_listing(
                    &entries,
                    &mut ListingPlus {
                        reply: &mut reply,
                        ttl,
                    },
                );
                reply.ok();
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _entered = OpCtx::fh(FuseOp::Releasedir, ino, fh).span().entered();
        self.count(FuseOp::Releasedir, false);
        self.fs.releasedir(ino, fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Folder changes are made on the server synchronously: nothing is pending.
        self.count(FuseOp::Fsyncdir, false);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, INodeNo(ino): INodeNo, reply: ReplyStatfs) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::new(FuseOp::Statfs, ino),
            reply,
            async move { fs.statfs(ino).await },
            |reply, s| {
                reply.statfs(
                    s.blocks,
                    s.blocks_free,
                    s.blocks_avail,
                    s.files,
                    s.files_free,
                    s.block_size,
                    s.name_max,
                    s.block_size,
                )
            },
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.refuse(
            OpCtx::new(FuseOp::Setxattr, ino),
            reply,
            libc::ENOTSUP,
            "no extended attributes",
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS: the kernel remembers it and asks no more (ENOTSUP would be asked each time).
        self.refuse(
            OpCtx::new(FuseOp::Getxattr, ino),
            reply,
            libc::ENOSYS,
            "no extended attributes",
        );
    }

    fn listxattr(&self, _req: &Request, INodeNo(ino): INodeNo, _size: u32, reply: ReplyXattr) {
        self.refuse(
            OpCtx::new(FuseOp::Listxattr, ino),
            reply,
            libc::ENOSYS,
            "no extended attributes",
        );
    }

    fn removexattr(&self, _req: &Request, INodeNo(ino): INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.refuse(
            OpCtx::new(FuseOp::Removexattr, ino),
            reply,
            libc::ENOTSUP,
            "no extended attributes",
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The mount uses `default_permissions`: the kernel checks modes itself and does not
        // normally ask. If it does, the answer is the same: allowed as far as we know.
        self.count(FuseOp::Access, false);
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        INodeNo(parent): INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            OpCtx::new(FuseOp::Create, parent),
            reply,
            async move { fs.create(parent, &name, mode, flags).await },
            |reply, (a, open): (AttrReply, OpenReply)| {
                reply.created(
                    &a.ttl,
                    &file_attr(&a.attr),
                    GENERATION,
                    FileHandle(open.fh),
                    open_flags(&open),
                )
            },
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        INodeNo(ino): INodeNo,
        FileHandle(fh): FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.refuse(
            OpCtx::fh(FuseOp::Fallocate, ino, fh),
            reply,
            libc::ENOTSUP,
            "no preallocation",
        );
    }
}
