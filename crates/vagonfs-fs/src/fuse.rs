//! The `fuser` adapter: translation only, no filesystem logic.
//!
//! Every kernel request is decoded here, handed to the async core ([`VagonFs`]) as a task on the
//! tokio runtime (`Handle::spawn`), and answered from that task when it finishes. The fuser
//! session thread never waits on the network and never calls `block_on`: it only decodes,
//! spawns and goes back to reading `/dev/fuse`.
//!
//! Each operation runs inside a `tracing` span (`op`, `ino`, `fh`); its duration is logged at
//! trace (debug when slow). A failure is mapped to errno by `crate::fs::errno::to_errno` and
//! logged exactly once, at a level that fits the errno: ENOENT and other "normal" answers at
//! debug, quota/permission answers at info, EIO/ETIMEDOUT and anything unexpected at warn.
//!
//! Subtle cases handled here:
//! - readdir(plus): the core counts *every* entry it returns as a lookup (except `.`/`..`), but
//!   the kernel only takes a reference for the entries that fit in its buffer (readdirplus) or
//!   none at all (plain readdir). The adapter hands the rest back with `VagonFs::unsent`, so
//!   the core's lookup counts stay exact.
//! - A lookup of a missing name answers a negative entry (node id 0) with the core's negative
//!   TTL, so `stat` storms on absent names (shells, editors) stay in the kernel.
//! - readdirplus entries carry no TTL in the core's reply; they use [`AdapterConfig::entry_ttl`]
//!   (the mount sets it to the TTL the core gives lookups).
//! - Operations the API cannot express answer explicitly instead of fuser's ENOSYS defaults:
//!   symlink/link → EPERM, mknod of anything but a regular file → EPERM, readlink → EINVAL
//!   (there are no links), setxattr/removexattr and fallocate → ENOTSUP. getxattr and
//!   listxattr answer ENOSYS on purpose: the kernel then stops sending them for the rest of
//!   the mount (a copy asked `security.capability` 1,240 times otherwise).
//! - Changes that revalidated listings find (a file added, removed or changed elsewhere) are
//!   pushed to the kernel's caches as FUSE notifications ([`KernelNotifier`]), from a thread of
//!   their own: a notification can block on the kernel's lock of the folder while a request on
//!   that folder waits for its reply, so it must never be sent from a task that replies.
//! - mknod(S_IFREG) is served as create + flush + release, so `mknod name` makes an empty file.
//! - A name the kernel would refuse in a listing (too long, `/`, NUL) fails the whole listing
//!   with EIO in the kernel; such an entry is skipped with a warning instead.
//! - Every operation is counted (and, if answered with an error, counted as failed) in the
//!   mount's metrics when it gave the adapter some ([`FuseAdapter::with_metrics`]).
//! - A panic inside the core drops the reply, which fuser answers with EIO: the caller never
//!   hangs.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{Instrument, Span, debug, info, trace, warn};

use crate::fs::errno::to_errno;
use crate::fs::{
    Attr, AttrReply, FsError, FsResult, KernelCache, NodeKind, OpenReply, SetAttr, VagonFs,
};
pub use crate::op::{FuseOp, OpObserver};

/// Kernel readahead we ask for. The kernel caps it at what it offered in INIT (often 128 KiB);
/// the mount raises the device's `read_ahead_kb` afterwards when it can.
pub const MAX_READAHEAD: u32 = 4 * 1024 * 1024;
/// Largest write request we accept; the kernel caps it further at its `max_pages` (1 MiB by
/// default on Linux).
pub const MAX_WRITE: u32 = 4 * 1024 * 1024;
/// Background requests (readahead, async I/O) the kernel may have in flight at once. The kernel
/// default (12) is tuned for local disks; a network filesystem wants more in flight.
pub const MAX_BACKGROUND: u16 = 64;
/// Background requests above which the kernel considers the filesystem congested (3/4).
pub const CONGESTION_THRESHOLD: u16 = 48;
/// `st_blksize`: the I/O size we advertise to tools like `cp` and `cat` (bigger requests mean
/// fewer round trips through FUSE).
pub const PREFERRED_IO_SIZE: u32 = 1024 * 1024;
/// Size of a `st_blocks` unit.
const STAT_BLOCK_SIZE: u64 = 512;
/// An operation slower than this is logged at debug (otherwise at trace).
const SLOW_OP: Duration = Duration::from_secs(1);
/// The lookup generation: inode numbers are never reused within a mount.
const GENERATION: Generation = Generation(0);
/// The longest name the kernel takes in a FUSE directory listing (`FUSE_NAME_MAX`).
const FUSE_NAME_MAX: usize = 1024;

/// What the adapter needs to know beyond the core.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// TTL of readdirplus entries (the core's `DirEntry` carries none).
    pub entry_ttl: Duration,
}

/// The `fuser::Filesystem` over a [`VagonFs`].
pub struct FuseAdapter {
    fs: Arc<VagonFs>,
    rt: Handle,
    config: AdapterConfig,
    /// Fired once when the kernel's INIT has been answered: the mount is usable.
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Per-op counters (`vagonfs status`, `--metrics-addr`), when the mount keeps them.
    metrics: Option<Arc<dyn OpObserver>>,
}

impl FuseAdapter {
    /// `rt` runs the core's futures; `ready` fires once the kernel handshake is done.
    pub fn new(
        fs: Arc<VagonFs>,
        rt: Handle,
        config: AdapterConfig,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Self {
        FuseAdapter {
            fs,
            rt,
            config,
            ready,
            metrics: None,
        }
    }

    /// Count every operation (and every failed one) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn OpObserver>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One more `op`, failed or not.
    fn count(&self, op: FuseOp, failed: bool) {
        if let Some(metrics) = &self.metrics {
            count_op(metrics.as_ref(), op, failed);
        }
    }

    /// Run `fut` on the runtime inside the operation's span; answer `reply` with `on_ok` or
    /// with the mapped errno, from the task.
    fn dispatch<T, R, Fut, OnOk>(&self, ctx: OpCtx, reply: R, fut: Fut, on_ok: OnOk)
    where
        T: Send + 'static,
        R: FuseReply + Send + 'static,
        Fut: Future<Output = FsResult<T>> + Send + 'static,
        OnOk: FnOnce(R, T) + Send + 'static,
    {
        let span = ctx.span();
        self.count(ctx.op, false);
        let metrics = self.metrics.clone();
        self.rt.spawn(
            async move {
                let started = Instant::now();
                let result = fut.await;
                let elapsed = started.elapsed();
                match result {
                    Ok(value) => {
                        log_done(ctx.op, elapsed);
                        on_ok(reply, value);
                    }
                    Err(err) => {
                        let errno = to_errno(&err);
                        log_failure(ctx.op, &err, errno, elapsed);
                        if let Some(metrics) = &metrics {
                            metrics.failed(ctx.op);
                        }
                        reply.fail(errno);
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Answer at once, from the fuser thread, for requests decided without the core.
    fn refuse<R: FuseReply>(&self, ctx: OpCtx, reply: R, errno: i32, why: &str) {
        let _entered = ctx.span().entered();
        self.count(ctx.op, true);
        debug!(errno, "{} refused: {why}", ctx.op.as_str());
        reply.fail(errno);
    }
}

/// Which operation, for the span and the logs.
#[derive(Debug, Clone, Copy)]
struct OpCtx {
    op: FuseOp,
    ino: u64,
    fh: Option<u64>,
}

impl OpCtx {
    fn new(op: FuseOp, ino: u64) -> Self {
        OpCtx { op, ino, fh: None }
    }

    fn fh(op: FuseOp, ino: u64, fh: u64) -> Self {
        OpCtx {
            op,
            ino,
            fh: Some(fh),
        }
    }

    fn span(&self) -> Span {
        let span = tracing::info_span!(
            "fuse",
            op = self.op.as_str(),
            ino = self.ino,
            fh = tracing::field::Empty
        );
        if let Some(fh) = self.fh {
            span.record("fh", fh);
        }
        span
    }
}

/// Counts one `op` (an `OpCtx` name) in `metrics`, and its failure.
fn count_op(metrics: &dyn OpObserver, op: FuseOp, failed: bool) {
    metrics.op(op);
    if failed {
        metrics.failed(op);
    }
}

fn log_done(op: FuseOp, elapsed: Duration) {
    if elapsed >= SLOW_OP {
        debug!(?elapsed, "{op} done (slow)");
    } else {
        trace!(?elapsed, "{op} done");
    }
}

/// Log a failed operation once, at a level fitting its errno.
fn log_failure(op: FuseOp, err: &FsError, errno: i32, elapsed: Duration) {
    match errno {
        // Ordinary answers: a name that is not there, a write to a read-only mount, ...
        libc::ENOENT
        | libc::EEXIST
        | libc::ENOTEMPTY
        | libc::EROFS
        | libc::EISDIR
        | libc::ENOTDIR
        | libc::ENAMETOOLONG
        | libc::EINVAL
        | libc::ENOTSUP
        | libc::EPERM
        | libc::EXDEV => debug!(errno, ?elapsed, "{op} failed: {err}"),
        // The server's verdicts the user should be able to see without debug logs.
        libc::EACCES | libc::ENOSPC | libc::EFBIG => {
            info!(errno, ?elapsed, "{op} failed: {err}")
        }
        // EIO, ETIMEDOUT, ESTALE, EBADF and anything unexpected.
        _ => warn!(errno, ?elapsed, "{op} failed: {err}"),
    }
}

/// The error half of every fuser reply type.
trait FuseReply {
    fn fail(self, errno: i32);
}

macro_rules! fuse_reply {
    ($($t:ty),* $(,)?) => {
        $(impl FuseReply for $t {
            fn fail(self, errno: i32) {
                self.error(Errno::from_i32(errno))
            }
        })*
    };
}

fuse_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyOpen,
    ReplyWrite,
    ReplyEmpty,
    ReplyStatfs,
    ReplyCreate,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyXattr,
);

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Directory => FileType::Directory,
    }
}

/// The kernel's view of a core [`Attr`].
pub fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(STAT_BLOCK_SIZE),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

/// A note for the kernel.
enum Note {
    Entry(u64, OsString),
    Inode(u64),
}

/// The core's [`KernelCache`] over FUSE notifications, sent by a thread of its own (see the
/// module note). The thread ends when the core lets go of it.
pub struct KernelNotifier {
    notes: std::sync::Mutex<std::sync::mpsc::Sender<Note>>,
}

impl KernelNotifier {
    /// Start the sending thread over a session's notifier.
    pub fn start(notifier: fuser::Notifier) -> Arc<KernelNotifier> {
        let (tx, rx) = std::sync::mpsc::channel::<Note>();
        let spawned = std::thread::Builder::new()
            .name("fuse-notify".into())
            .spawn(move || {
                for note in rx {
                    let (what, sent) = match &note {
                        Note::Entry(parent, name) => {
                            ("entry", notifier.inval_entry(INodeNo(*parent), name))
                        }
                        // Offset 0, length 0: attributes and every cached page.
                        Note::Inode(ino) => ("inode", notifier.inval_inode(INodeNo(*ino), 0, 0)),
                    };
                    // ENOENT: the kernel did not hold it; anything else after unmount.
                    if let Err(err) = sent {
                        trace!(what, "kernel invalidation not applied: {err}");
                    }
                }
            });
        if let Err(err) = spawned {
            warn!("no kernel invalidations (changes elsewhere show after the TTLs): {err}");
        }
        Arc::new(KernelNotifier {
            notes: std::sync::Mutex::new(tx),
        })
    }

    fn send(&self, note: Note) {
        let tx = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(note);
    }
}

impl KernelCache for KernelNotifier {
    fn forget_entry(&self, parent: u64, name: &OsStr) {
        self.send(Note::Entry(parent, name.to_os_string()));
    }

    fn forget_inode(&self, ino: u64) {
        self.send(Note::Inode(ino));
    }
}

/// What a lookup found.
enum Found {
    Entry(AttrReply),
    /// Nothing by that name; the kernel may remember so for this long.
    Missing(Duration),
}

/// The attributes of a negative entry: node id 0 tells the kernel "no such name" and lets it
/// cache that answer for the entry TTL.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

fn open_flags(open: &OpenReply) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if open.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if open.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    flags
}

fn system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Whether the kernel accepts `name` in a directory listing. One bad name (too long, or with
/// `/` or NUL) makes the kernel fail the *whole* listing with EIO, so such an entry is skipped
/// (and logged) rather than sent. The core is expected to have filtered these already.
fn kernel_accepts(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    !bytes.is_empty() && bytes.len() <= FUSE_NAME_MAX && !bytes.iter().any(|&b| b == b'/' || b == 0)
}

/// A listing offset for the kernel. The core's offsets are opaque cookies (`i64`, positive);
/// the kernel's are `u64`: the bits go through unchanged both ways.
fn kernel_offset(offset: i64) -> u64 {
    offset.cast_unsigned()
}

/// The core's listing offset for one the kernel sends back (see [`kernel_offset`]).
fn core_offset(offset: u64) -> i64 {
    offset.cast_signed()
}

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
            async move {
                match fs.lookup(parent, &name).await {
                    Ok(found) => Ok(Found::Entry(found)),
                    // A name known missing: a negative entry lets the kernel remember it.
                    Err(FsError::NotFound) if !fs.negative_lookup_ttl().is_zero() => {
                        Ok(Found::Missing(fs.negative_lookup_ttl()))
                    }
                    Err(err) => Err(err),
                }
            },
            |reply, found| match found {
                Found::Entry(a) => reply.entry(&a.ttl, &file_attr(&a.attr), GENERATION),
                Found::Missing(ttl) => reply.entry(&ttl, &negative_attr(), GENERATION),
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
        let ctx = OpCtx::new(FuseOp::Mknod, parent);
        if mode & libc::S_IFMT != libc::S_IFREG {
            self.refuse(
                ctx,
                reply,
                libc::EPERM,
                "only regular files and folders can be stored",
            );
            return;
        }
        let fs = self.fs.clone();
        let name = name.to_os_string();
        self.dispatch(
            ctx,
            reply,
            async move {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                let (attr, open) = fs.create(parent, &name, mode, flags).await?;
                // An empty file exists once it is uploaded: flush does that. Release either way.
                let flushed = fs.flush(attr.attr.ino, open.fh).await;
                let released = fs.release(attr.attr.ino, open.fh).await;
                flushed.and(released).map(|()| attr)
            },
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

    fn open(&self, _req: &Request, INodeNo(ino): INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.dispatch(
            OpCtx::new(FuseOp::Open, ino),
            reply,
            async move { fs.open(ino, flags.0).await },
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
            async move { fs.write(ino, fh, off, &data).await },
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
                for entry in &entries {
                    if !kernel_accepts(&entry.name) {
                        warn!(name = ?entry.name, "entry skipped: a name the kernel refuses");
                        continue;
                    }
                    let kind = file_type(entry.attr.kind);
                    if reply.add(
                        INodeNo(entry.attr.ino),
                        kernel_offset(entry.offset),
                        kind,
                        &entry.name,
                    ) {
                        break;
                    }
                }
                // Plain readdir takes no lookup reference, delivered or not.
                core.unsent(&entries);
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
                let mut sent = 0;
                for entry in &entries {
                    if !kernel_accepts(&entry.name) {
                        warn!(name = ?entry.name, "entry skipped: a name the kernel refuses");
                        core.unsent(std::slice::from_ref(entry));
                        sent += 1;
                        continue;
                    }
                    let attr = file_attr(&entry.attr);
                    let offset = kernel_offset(entry.offset);
                    if reply.add(attr.ino, offset, &entry.name, &ttl, &attr, GENERATION) {
                        break;
                    }
                    sent += 1;
                }
                // The kernel takes a reference only for the entries that fit its buffer.
                core.unsent(&entries[sent..]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_refuses() {
        assert!(kernel_accepts(OsStr::new("report.pdf")));
        assert!(kernel_accepts(OsStr::new("r\u{e9}sum\u{e9} 2025.txt")));
        assert!(!kernel_accepts(OsStr::new("")));
        assert!(!kernel_accepts(OsStr::new("a/b")));
        assert!(!kernel_accepts(OsStr::new("a\0b")));
        assert!(kernel_accepts(OsStr::new(&"x".repeat(FUSE_NAME_MAX))));
        assert!(!kernel_accepts(OsStr::new(&"x".repeat(FUSE_NAME_MAX + 1))));
    }

    #[test]
    fn attributes_translate() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let attr = Attr {
            ino: 42,
            kind: NodeKind::File,
            size: 1025,
            mtime: t,
            ctime: t,
            atime: t,
            perm: 0o640,
            nlink: 1,
            uid: 7,
            gid: 8,
        };
        let fa = file_attr(&attr);
        assert_eq!((fa.ino, fa.size, fa.blocks), (INodeNo(42), 1025, 3));
        assert_eq!(fa.kind, FileType::RegularFile);
        assert_eq!((fa.perm, fa.uid, fa.gid, fa.nlink), (0o640, 7, 8, 1));
        assert_eq!(fa.mtime, t);
        let dir = file_attr(&Attr {
            kind: NodeKind::Directory,
            size: 0,
            ..attr
        });
        assert_eq!((dir.kind, dir.blocks), (FileType::Directory, 0));
        let open = OpenReply {
            fh: 1,
            keep_cache: true,
            direct_io: false,
        };
        assert_eq!(open_flags(&open), FopenFlags::FOPEN_KEEP_CACHE);
        let open = OpenReply {
            fh: 1,
            keep_cache: false,
            direct_io: true,
        };
        assert_eq!(open_flags(&open), FopenFlags::FOPEN_DIRECT_IO);
        assert_eq!(core_offset(kernel_offset(5)), 5);
        assert_eq!(core_offset(kernel_offset(i64::MAX)), i64::MAX);
    }
}
