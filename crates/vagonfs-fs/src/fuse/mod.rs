//! The `fuser` adapter: translation only, no filesystem logic.
//!
//! Every kernel request is decoded here, handed to the async core ([`VagonFs`]) as a task on the
//! tokio runtime (`Handle::spawn`), and answered from that task when it finishes. The fuser
//! session thread never waits on the network and never calls `block_on`: it only decodes,
//! spawns and goes back to reading `/dev/fuse`.
//!
//! Layout: this file holds the adapter (dispatch onto the runtime, refusals, logging, metrics);
//! `filesystem` the `fuser::Filesystem` impl, one method per kernel operation; `reply` the
//! translation of the core's answers into fuser's types; `notify` the kernel invalidations.
//!
//! Each operation runs inside a `tracing` span (`op`, `ino`, `fh`); its duration is logged at
//! trace (debug when slow). A failure is mapped to errno by `crate::fs::errno::to_errno` and
//! logged exactly once, at a level that fits the errno: ENOENT and other "normal" answers at
//! debug, quota/permission answers at info, EIO/ETIMEDOUT and anything unexpected at warn.
//!
//! Subtle cases handled here:
//! - readdir(plus): the fuser reply is handed to the core as a `DirectoryReplier`
//!   (`reply::Listing`, `reply::ListingPlus`) through `VagonFs::send_listing`: the core learns
//!   which entries the kernel took and keeps its lookup counts exact (the policy is the core's,
//!   `fs::entries`).
//! - A lookup the core answers `Lookup::Missing` becomes a negative entry (node id 0) with
//!   the TTL the core gave.
//! - readdirplus entries carry no TTL in the core's reply; they use [`AdapterConfig::entry_ttl`]
//!   (the mount sets it to the TTL the core gives lookups).
//! - Operations the API cannot express answer explicitly instead of fuser's ENOSYS defaults:
//!   symlink/link → EPERM, readlink → EINVAL
//!   (there are no links), setxattr/removexattr and fallocate → ENOTSUP. getxattr and
//!   listxattr answer ENOSYS on purpose: the kernel then stops sending them for the rest of
//!   the mount (a copy asked `security.capability` 1,240 times otherwise).
//! - Changes that revalidated listings find (a file added, removed or changed elsewhere) are
//!   pushed to the kernel's caches as FUSE notifications ([`KernelNotifier`]), from a thread of
//!   their own: a notification can block on the kernel's lock of the folder while a request on
//!   that folder waits for its reply, so it must never be sent from a task that replies.
//! - mknod goes to `VagonFs::mknod` (create + flush + release for a regular file, EPERM for
//!   any other node type).
//! - A name the kernel would refuse in a listing (too long, `/`, NUL) fails the whole listing
//!   with EIO in the kernel; such an entry is skipped with a warning instead.
//! - Every operation is counted (and, if answered with an error, counted as failed) in the
//!   mount's metrics when it gave the adapter some ([`FuseAdapter::with_metrics`]).
//! - A panic inside the core drops the reply, which fuser answers with EIO: the caller never
//!   hangs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tracing::{Instrument, Span, debug, info, trace, warn};

use crate::fs::errno::to_errno;
use crate::fs::{FsError, FsResult, VagonFs};
pub use crate::op::{FuseOp, OpObserver};
pub use notify::KernelNotifier;
use reply::FuseReply;
pub use reply::file_attr;

mod filesystem;
mod notify;
mod reply;

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
/// An operation slower than this is logged at debug (otherwise at trace).
const SLOW_OP: Duration = Duration::from_secs(1);

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
