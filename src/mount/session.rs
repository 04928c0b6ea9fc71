//! The life of one mount: runtime, backend, FUSE session, signals, unmount.
//!
//! Mounting is a direct mount(2) when privileged (root here), with `fusermount3` through
//! fuser as the fallback without privilege. The fuser session loop runs on its own thread (`fuse-session`) and only decodes requests;
//! the core's futures run on the tokio runtime built here. The main thread waits for the first
//! of: a signal (SIGINT, SIGTERM, SIGHUP) or the session ending by itself (someone ran
//! `umount`).
//!
//! Subtle cases handled here:
//! - Unmount is `umount2(path, 0)` first; if the mount is busy (an open file, a shell inside)
//!   it is detached lazily (`MNT_DETACH`), which removes it from the namespace at once. Without
//!   root, `fusermount3 -u -z` does the same.
//! - After unmounting, the session thread is awaited for [`SESSION_END_WAIT`]; a lazily
//!   detached mount may never end while something holds it open, so the process then exits
//!   anyway (closing /dev/fuse aborts the connection: holders get ENOTCONN, nothing hangs).
//! - A second signal during shutdown exits at once, after a lazy detach.
//! - Readiness is the kernel's INIT being answered, bounded by [`INIT_TIMEOUT`].
//! - Writes: the spool folder is opened (and locked) before mounting, so a second mount of the
//!   same target fails at once; after the mount is ready, what a crashed run left unsaved is
//!   uploaded in the background (`VagonFs::recover`). On a signal, or when unmounted from
//!   outside, every file with changes not yet uploaded is uploaded before exiting, with the
//!   progress logged every [`UPLOAD_PROGRESS_EVERY`]; a second signal stops that at once and
//!   leaves the rest in the spool folder for the next mount.
//! - `vagonfs unmount` (the control socket, [`super::control`]) ends the session like a signal:
//!   a graceful request has already waited for the uploads and is answered once the late writes
//!   are uploaded too; a forced one uploads nothing (the spool folder keeps the changes for the
//!   next mount) and waits for the session only [`FORCED_END_WAIT`].
//! - After the mount is up, the kernel's readahead for it is raised through
//!   `/sys/class/bdi/<dev>/read_ahead_kb` (the INIT handshake cannot go above what the kernel
//!   offered, usually 128 KiB); failure there is only logged.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

use fuser::{Config, MountOption, SessionACL};
use nix::mount::MsFlags;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::backend::{self, Backend};
use super::control::Living;
use super::detach::Readiness;
use super::{MountError, MountPlan};
use crate::daemon::mounts::{self, FS_NAME, FS_TYPE, UnmountError};
use crate::fs::{VagonFs, write};
use crate::fuse::{AdapterConfig, FuseAdapter};

/// How long the kernel may take to send INIT after mount(2).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the session thread after unmounting.
pub const SESSION_END_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for the session thread after a forced unmount.
const FORCED_END_WAIT: Duration = Duration::from_secs(1);
/// How long background fetches of the core get to finish after the unmount.
const BACKGROUND_WAIT: Duration = Duration::from_secs(5);
/// How long in-flight core tasks get to finish when the runtime shuts down.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Worker threads at least: the core's tasks and, in demo mode, the emulator share them.
const MIN_WORKER_THREADS: usize = 4;
/// Kernel readahead for the mount, KiB (the device default is 128).
pub const READ_AHEAD_KB: u32 = 1024;
/// How often the progress of the uploads awaited at exit is logged.
pub const UPLOAD_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The FUSE device.
const FUSE_DEVICE: &str = "/dev/fuse";

/// Mount per `plan` and serve until a signal or an external unmount. `readiness` (daemon mode)
/// is taken and fired once the mount is ready.
pub fn run(plan: MountPlan, readiness: &mut Option<Readiness>) -> Result<(), MountError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(MIN_WORKER_THREADS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("vagonfs-worker")
        .enable_all()
        .build()
        .map_err(|source| MountError::Io {
            what: "cannot start the async runtime",
            source,
        })?;

    let result = serve(&rt, plan, readiness);
    rt.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    result
}

fn serve(
    rt: &tokio::runtime::Runtime,
    plan: MountPlan,
    readiness: &mut Option<Readiness>,
) -> Result<(), MountError> {
    // Before anything is mounted: a signal from here on unmounts instead of killing us.
    let mut signals = {
        let _guard = rt.enter();
        Signals::new().map_err(|source| MountError::Io {
            what: "cannot install signal handlers",
            source,
        })?
    };

    let backend = rt.block_on(async {
        tokio::select! {
            backend = backend::open(&plan) => backend.map(Some),
            _ = signals.recv() => Ok(None),
        }
    })?;
    let Some(backend) = backend else {
        return Err(MountError::Interrupted);
    };
    let result = serve_mounted(rt, &plan, &backend, &mut signals, readiness);
    rt.block_on(backend.shutdown());
    result
}

fn serve_mounted(
    rt: &tokio::runtime::Runtime,
    plan: &MountPlan,
    backend: &Backend,
    signals: &mut Signals,
    readiness: &mut Option<Readiness>,
) -> Result<(), MountError> {
    let mut fs_config = plan.fs.clone();
    fs_config.cache_dir = write::mount_cache_dir(
        &plan.cache_base,
        &write::mount_key(&plan.root, &backend.identity),
    );
    let cache_dir = fs_config.cache_dir.clone();
    if fs_config.write_back.spool_max.is_none() {
        let max = write::default_spool_max(&plan.cache_base);
        tracing::debug!(bytes = max, "local cache bound (--cache-max-size default)");
        fs_config.write_back.spool_max = Some(max);
    }
    let fs = VagonFs::new(backend.api.clone(), plan.root.clone(), fs_config);
    if !plan.fs.read_only {
        // The base folder too: whoever can write it could swap our per-mount folder.
        write::ensure_private_dir(&plan.cache_base).map_err(|err| MountError::Cache {
            path: plan.cache_base.clone(),
            source: err.into(),
        })?;
        fs.open_spool_dir().map_err(|source| match source {
            // The folder's lock is held: another mount of the same storage.
            crate::fs::FsError::NotPermitted(_) => MountError::CacheInUse {
                cache_dir: cache_dir.clone(),
                other: other_mount_of(plan, write::lock_holder(&cache_dir)),
            },
            source => MountError::Cache {
                path: cache_dir.clone(),
                source,
            },
        })?;
    }
    // After the spool folder: its logs name folders an earlier run made by placeholder ids.
    if let Some((listing, asked)) = backend.root_listing.clone() {
        fs.seed_root_listing(listing, asked);
    }
    if let Err(err) = fs.open_time_store() {
        warn!("{err}; modification times set in this mount are kept only until it ends");
    }
    // Before mounting: the control socket is named after the canonical mount point.
    let mut living = rt.block_on(Living::start(
        plan,
        &backend.url,
        backend.demo,
        backend.metrics.clone(),
        &fs,
    ))?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let adapter = FuseAdapter::new(
        fs.clone(),
        rt.handle().clone(),
        AdapterConfig {
            // The TTL the core gives lookups, so readdirplus entries are cached no longer.
            entry_ttl: crate::fs::attr::kernel_ttl(&plan.fs),
        },
        Some(ready_tx),
    )
    .with_metrics(backend.metrics.clone());
    let mut session = MountedSession::start(adapter, plan, &fs)?;

    let started = rt.block_on(async {
        tokio::select! {
            // The sender is dropped only if the session died before INIT.
            ready = ready_rx => ready.map_err(|_| MountError::NotReady(INIT_TIMEOUT)),
            _ = tokio::time::sleep(INIT_TIMEOUT) => Err(MountError::NotReady(INIT_TIMEOUT)),
            _ = signals.recv() => Err(MountError::Interrupted),
        }
    });
    if let Err(err) = started {
        session.unmount();
        rt.block_on(session.wait_end(SESSION_END_WAIT));
        return Err(err);
    }

    raise_readahead(&plan.mountpoint);
    info!(
        mountpoint = %plan.mountpoint.display(),
        backend = %backend.description,
        read_only = plan.fs.read_only,
        "mounted{}",
        if plan.foreground {
            "; Ctrl-C to stop (uploads what is pending, then unmounts)"
        } else {
            ""
        }
    );
    if let Some(readiness) = readiness.take() {
        readiness.ready();
    }
    if !plan.fs.read_only {
        let fs = fs.clone();
        rt.spawn(async move { recover_in_background(&fs).await });
    }

    let (signal, asked) = rt.block_on(async {
        tokio::select! {
            signal = signals.recv() => (Some(signal), None),
            () = session.ended() => (None, None),
            // `vagonfs unmount`: graceful ones have already waited for the uploads.
            request = living.next_request() => (Some("unmount request"), Some(request)),
        }
    });
    // A forced unmount uploads nothing: what is not uploaded stays in the spool folder.
    let force = asked.as_ref().is_some_and(|r| r.force);
    match signal {
        None => {
            info!("unmounted from outside; exiting");
            rt.block_on(async {
                tokio::select! {
                    () = upload_before_exit(&fs) => {}
                    signal = signals.recv() => {
                        warn!("{signal} received: exiting at once; changes not uploaded stay in {}", cache_dir.display());
                    }
                }
            });
        }
        Some(name) => {
            info!("{name} received: uploading what is not yet uploaded, then unmounting");
            let uploaded = force || rt.block_on(async {
                tokio::select! {
                    () = upload_before_exit(&fs) => true,
                    signal = signals.recv() => {
                        warn!("{signal} received again: exiting at once; changes not uploaded stay in {}", cache_dir.display());
                        false
                    }
                }
            });
            if !uploaded {
                lazy_unmount(&plan.mountpoint);
                if let Some(request) = asked {
                    request.answer(Err(super::control::UnmountRefused::Interrupted(
                        cache_dir.clone(),
                    )));
                }
                rt.block_on(living.shutdown());
                return Ok(());
            }
            info!("unmounting {}", plan.mountpoint.display());
            session.unmount();
            let ended = rt.block_on(async {
                // Forced: a writer blocked in close(2) on an upload would hold the mount busy;
                // exiting soon closes /dev/fuse, which fails it with ENOTCONN.
                let limit = if force {
                    FORCED_END_WAIT
                } else {
                    SESSION_END_WAIT
                };
                tokio::select! {
                    ended = session.wait_end(limit) => ended,
                    signal = signals.recv() => {
                        warn!("{signal} received again: exiting at once");
                        false
                    }
                }
            });
            if !ended {
                // Detached but still held open somewhere: exiting closes /dev/fuse, which aborts
                // the connection (holders get ENOTCONN).
                lazy_unmount(&plan.mountpoint);
                warn!("the FUSE session did not end after unmount; exiting anyway");
            }
            // Writes that came in while the first uploads ran (a cheap no-op otherwise).
            let late = if force {
                info!(
                    "forced unmount: changes not uploaded stay in {}",
                    cache_dir.display()
                );
                None
            } else {
                rt.block_on(async {
                    tokio::select! {
                        report = fs.flush_all() => Some(report),
                        signal = signals.recv() => {
                            warn!("{signal} received again: exiting at once");
                            None
                        }
                    }
                })
            };
            if let Some(report) = late {
                log_flush(&report);
            }
            if let Some(request) = asked {
                request.answer(Ok(()));
            }
        }
    }
    // Let background fetches (prefetch, links) finish, within bounds.
    // (The timer must be made inside the runtime.)
    let settled = rt.block_on(async {
        tokio::time::timeout(BACKGROUND_WAIT, fs.wait_background())
            .await
            .is_ok()
    });
    if !settled {
        debug!("background fetches still running after {BACKGROUND_WAIT:?}; leaving them");
    }
    rt.block_on(living.shutdown());
    Ok(())
}

/// The vagonfs mount of the same target that holds the cache folder (for a message): the one
/// whose mount point process `holder` (from the folder's lock file) was started with, else the
/// first other mount of the same target in the mount table.
fn other_mount_of(plan: &MountPlan, holder: Option<u32>) -> Option<PathBuf> {
    let source = super::control::mount_source(&plan.root);
    let others: Vec<PathBuf> = mounts::vagonfs_mounts()
        .ok()?
        .into_iter()
        .filter(|m| m.source == source && m.mountpoint != plan.mountpoint)
        .map(|m| m.mountpoint)
        .collect();
    let started_with = holder.map(mount_points_named_by).unwrap_or_default();
    others
        .iter()
        .find(|m| started_with.contains(m))
        .or(others.first())
        .cloned()
}

/// The existing folders process `pid`'s arguments name, made absolute against its working
/// folder and canonical (empty when the process is gone or not readable).
fn mount_points_named_by(pid: u32) -> Vec<PathBuf> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let (Ok(cmdline), Ok(cwd)) = (
        std::fs::read(proc.join("cmdline")),
        std::fs::read_link(proc.join("cwd")),
    ) else {
        return Vec::new();
    };
    cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty() && !a.starts_with(b"-"))
        .map(|a| cwd.join(std::ffi::OsStr::from_bytes(a)))
        // Not the FUSE mount itself: canonicalizing a path inside a live mount would ask it.
        .filter_map(|p| {
            p.parent()
                .and_then(|d| d.canonicalize().ok())
                .zip(p.file_name().map(PathBuf::from))
        })
        .map(|(dir, name)| dir.join(name))
        .collect()
}

/// Upload what a crashed or failed earlier run left in the spool folder; log the outcome.
async fn recover_in_background(fs: &VagonFs) {
    match fs.recover().await {
        Ok(report) => {
            for (file, copy) in &report.conflict_copies {
                warn!(%file, conflict_copy = %copy, "recovered changes uploaded as a conflict copy");
            }
            if !report.uploaded.is_empty()
                || !report.conflict_copies.is_empty()
                || !report.failed.is_empty()
            {
                info!(
                    uploaded = report.uploaded.len(),
                    conflict_copies = report.conflict_copies.len(),
                    failed = report.failed.len(),
                    "recovery of unsaved changes finished"
                );
            }
        }
        Err(err) => warn!(
            "recovery of unsaved changes failed: {err}; they stay in the cache folder for the next mount"
        ),
    }
}

/// Upload every file with changes not yet uploaded (and wait for recovery uploads), logging
/// the progress while it takes.
async fn upload_before_exit(fs: &VagonFs) {
    let uploads = fs.uploads();
    let progress = async {
        loop {
            tokio::time::sleep(UPLOAD_PROGRESS_EVERY).await;
            for p in uploads.active() {
                info!(
                    file = %p.display,
                    sent = p.sent,
                    size = p.size,
                    state = p.state.as_str(),
                    "waiting for an upload before exiting"
                );
            }
        }
    };
    tokio::select! {
        report = fs.wait_uploads() => log_flush(&report),
        () = progress => {}
    }
}

fn log_flush(report: &crate::fs::FlushReport) {
    if report.uploaded > 0 {
        info!(files = report.uploaded, "uploaded before exiting");
    }
    for (file, err) in &report.failed {
        warn!(%file, error = %err, "not uploaded; kept in the cache folder for the next mount");
    }
}

/// Who may use the mount: everyone with `--allow-other`, else its owner.
fn session_acl(plan: &MountPlan) -> SessionACL {
    if plan.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    }
}

/// The fuser session configuration for `plan`; its mount options serve the fusermount path
/// (without privilege).
fn fuser_config(plan: &MountPlan) -> Config {
    let mut options = vec![
        MountOption::FSName(super::control::mount_source(&plan.root)),
        MountOption::Subtype(FS_NAME.to_string()),
        // The kernel checks permissions against the attributes (--uid/--gid/--umask).
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        // Access times are not stored by the API: do not send setattr for them.
        MountOption::NoAtime,
    ];
    if plan.fs.read_only {
        options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = options;
    // allow_other goes to fusermount through the ACL.
    config.acl = session_acl(plan);
    config
}

/// mount(2) a FUSE filesystem at `plan.mountpoint`, served through a new /dev/fuse descriptor.
/// Needs privilege (root or CAP_SYS_ADMIN); fails with EPERM otherwise.
///
/// Done here rather than through `fuser::Session::new` because fuser's `Mount` guard, when
/// the session ends, unmounts again a filesystem that is already gone and logs a spurious
/// error; with our own mount, the unmount path is ours alone ([`unmount`]).
fn mount_direct(plan: &MountPlan) -> io::Result<OwnedFd> {
    let device: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(FUSE_DEVICE)?
        .into();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        device.as_raw_fd(),
        libc::S_IFDIR,
        nix::unistd::getuid(),
        nix::unistd::getgid(),
    );
    if plan.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    if plan.fs.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let source = super::control::mount_source(&plan.root);
    nix::mount::mount(
        Some(source.as_str()),
        &plan.mountpoint,
        Some(FS_TYPE),
        flags,
        Some(data.as_str()),
    )?;
    Ok(device)
}

/// SIGINT, SIGTERM and SIGHUP, as one stream.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    fn new() -> io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// A mounted fuser session running on its own thread.
struct MountedSession {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
    ended: Option<oneshot::Receiver<()>>,
}

impl MountedSession {
    /// Mount (directly, else through fusermount) and start serving.
    fn start(adapter: FuseAdapter, plan: &MountPlan, fs: &VagonFs) -> Result<Self, MountError> {
        let path = &plan.mountpoint;
        let mount_error = |source| MountError::Mount {
            path: path.to_path_buf(),
            source,
        };
        let session = match mount_direct(plan) {
            Ok(device) => {
                debug!("mounted {} with mount(2)", path.display());
                // The kernel's INIT is answered here; if that fails, nobody serves the mount.
                fuser::Session::from_fd(adapter, device, session_acl(plan), fuser_config(plan))
                    .map_err(|err| {
                        unmount(path);
                        mount_error(err)
                    })?
            }
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                debug!("no privilege for mount(2): mounting through fusermount");
                fuser::Session::new(adapter, path, &fuser_config(plan)).map_err(mount_error)?
            }
            Err(err) => return Err(mount_error(err)),
        };
        // Changes found by revalidating listings reach the kernel's caches.
        fs.set_kernel_cache(crate::fuse::KernelNotifier::start(session.notifier()));
        let (ended_tx, ended_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                // `run` consumes the session and drops it once the kernel let go; its own
                // unmount is a no-op then.
                if let Err(err) = session.run() {
                    error!("FUSE session failed: {err}");
                }
                let _ = ended_tx.send(());
            })
            .map_err(mount_error)?;
        Ok(MountedSession {
            path: path.to_path_buf(),
            thread: Some(thread),
            ended: Some(ended_rx),
        })
    }

    /// Resolves when the session loop has ended (on unmount).
    async fn ended(&mut self) {
        match self.ended.as_mut() {
            Some(rx) => {
                let _ = rx.await;
                self.ended = None;
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Wait for the end at most `limit`; whether it ended.
    async fn wait_end(&mut self, limit: Duration) -> bool {
        if self.ended.is_none() && self.thread.is_none() {
            return true;
        }
        tokio::time::timeout(limit, self.ended()).await.is_ok()
    }

    fn unmount(&self) {
        unmount(&self.path);
    }
}

/// Unmount `path`: normally, else lazily if busy.
pub fn unmount(path: &Path) {
    match mounts::unmount(path, false) {
        Ok(()) => debug!("unmounted {}", path.display()),
        Err(UnmountError::Busy(_)) => {
            info!("{} is busy: detaching it lazily", path.display());
            lazy_unmount(path);
        }
        // Not (or no longer) a mount point: someone else unmounted it.
        Err(UnmountError::NotMounted(_)) => debug!("{} was not mounted", path.display()),
        Err(err) => warn!("{err}"),
    }
}

fn lazy_unmount(path: &Path) {
    match mounts::unmount(path, true) {
        Ok(()) | Err(UnmountError::NotMounted(_)) => {}
        Err(err) => warn!("{err}"),
    }
}

/// Raise the kernel readahead of the FUSE mount at `path` to [`READ_AHEAD_KB`], through the
/// sysfs knob of its device (`st_dev` of the mounted root).
fn raise_readahead(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(path) {
        Ok(meta) => meta.dev(),
        Err(err) => {
            debug!(
                "cannot stat {}: {err}; readahead left as is",
                path.display()
            );
            return;
        }
    };
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => debug!("readahead raised to {READ_AHEAD_KB} KiB ({knob})"),
        Err(err) => debug!("cannot raise readahead through {knob}: {err}"),
    }
}
