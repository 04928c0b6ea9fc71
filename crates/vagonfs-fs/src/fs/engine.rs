//! The write-back engine: every changed file on its way to the server, in the background.
//!
//! A changed file is its journal record plus its spool (`write/`); both are written before
//! `close` returns (the record at the first change, the bytes by each `write`), so the change
//! survives a crash of the daemon. From there this engine owns it: one *worker* task per dirty
//! inode uploads it, at most `--transfers` files at once, and retries until the server has the
//! current bytes. Handles only feed it: `close` (and `release`, `truncate` by path, a failed
//! upload) *kick* the worker; nothing waits for it except `fsync(2)`, `vagonfs sync`,
//! `--sync-close` and unmount.
//!
//! Subtle cases owned here:
//! - **one worker per inode**, so at most one upload per file is in flight; a kick while it
//!   sleeps or uploads only moves its due time (a newer version supersedes a queued one: the
//!   upload always sends the spool as it is when it starts, and a write during an upload leaves
//!   the file dirty, so the worker goes round once more);
//! - a file **still open for writing** is uploaded only once its writes paused for
//!   [`WRITING_QUIET`] (a close of one of several descriptors kicks the engine, e.g. `dd`'s
//!   early close of the descriptor it dup'ed): never a half-written file and then the whole;
//! - a **new file** (never on the server) waits `--upload-delay` after its close before its
//!   upload starts, so an editor's write-temp-then-rename save costs one upload (the rename only
//!   re-targets the queued upload) and a swap file deleted within the delay costs none;
//! - **transient errors** (unreachable, 5xx, throttled, timeouts) are retried with exponential
//!   backoff, without a time limit, while the mount lives; **permanent** ones (quota, permission,
//!   a local I/O error) are kept with their reason ([`VagonFs::upload_failures`]), logged once at
//!   warn, and retried on a slow timer and by `vagonfs sync`;
//! - the worker's exit is decided under the workers' lock, so a kick can never be lost between
//!   "nothing left to do" and the worker leaving;
//! - a worker holds only a `Weak` reference while it sleeps: a dropped filesystem ends it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::{FsError, VagonFs, lock};

// The engine's options live with the mount's configuration (`types.rs`); re-exported here,
// where callers look for them.
pub use super::types::{DEFAULT_TRANSFERS, DEFAULT_UPLOAD_DELAY, WriteBack};

/// First wait after a transient failure; doubled up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Wait after a permanent failure (quota, permission) before trying again on its own.
pub(crate) const SLOW_RETRY: Duration = Duration::from_secs(300);
/// How often the spool folder's group commit runs (while something changed).
pub const GROUP_COMMIT: Duration = Duration::from_secs(1);
/// Quiet period before a file changed without a writer (truncate by path) is uploaded.
pub(crate) const QUIET: Duration = Duration::from_millis(200);
/// A file still open for writing is uploaded only once its writes paused this long: a close of
/// one descriptor while another still writes (`dd` closes the descriptor it dup'ed onto its
/// output at the start) must not send a half-written file and then the whole one again.
pub(crate) const WRITING_QUIET: Duration = Duration::from_secs(1);

/// Why a file's last upload failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFailure {
    /// `a/b/c` as shown in the mount.
    pub file: String,
    pub reason: String,
    /// Retrying soon will not help (quota, permission, ...): retried on a slow timer.
    pub permanent: bool,
}

/// One inode's worker.
struct Worker {
    /// When the next upload may start.
    due: Mutex<Instant>,
    kick: Notify,
}

/// The engine's state, one per mount.
pub(crate) struct Engine {
    pub(crate) config: WriteBack,
    transfers: Arc<Semaphore>,
    workers: Mutex<HashMap<u64, Arc<Worker>>>,
    failures: Mutex<HashMap<u64, UploadFailure>>,
    /// Signalled when a spool is released (room in `--cache-max-size` for a waiting write).
    pub(crate) spool_freed: Notify,
}

impl Engine {
    pub(crate) fn new(config: WriteBack) -> Self {
        Engine {
            config,
            transfers: Arc::new(Semaphore::new(config.transfers.max(1))),
            workers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            spool_freed: Notify::new(),
        }
    }
}

/// What waits to go to the server (for `vagonfs status`): changed files that no upload is
/// sending right now, not counting the ones whose last upload failed for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Files waiting for their upload to start (the `--upload-delay`, a free transfer slot, or
    /// the next retry of a transient failure).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Whether an upload error is worth retrying soon.
pub(crate) fn transient(e: &FsError) -> bool {
    match e {
        FsError::Api(a) => a.is_retryable() || a.kind() == crate::api::ApiErrorKind::Timeout,
        FsError::Inconsistent(_) => true,
        _ => false,
    }
}

impl VagonFs {
    /// Have `ino`'s changes uploaded in the background, not before `delay` from now (an earlier
    /// due time already set stays).
    pub(crate) fn schedule_upload(&self, ino: u64, delay: Duration) {
        let at = Instant::now() + delay;
        let mut workers = lock(&self.engine.workers);
        if let Some(w) = workers.get(&ino) {
            let mut due = lock(&w.due);
            if at < *due {
                *due = at;
            }
            drop(due);
            w.kick.notify_one();
            return;
        }
        let w = Arc::new(Worker {
            due: Mutex::new(at),
            kick: Notify::new(),
        });
        workers.insert(ino, Arc::clone(&w));
        drop(workers);
        let me = self.me.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(drive(me, ino, w));
            }
            Err(_) => {
                // No runtime (cannot happen inside the mount): leave it to `flush_all`.
                lock(&self.engine.workers).remove(&ino);
            }
        }
    }

    /// Files whose last upload failed, with the reason (for `vagonfs status` and `sync`).
    pub fn upload_failures(&self) -> Vec<UploadFailure> {
        let mut out: Vec<UploadFailure> = lock(&self.engine.failures).values().cloned().collect();
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }

    /// Files with changes not on the server yet (dirty spools, not unlinked).
    pub fn pending_uploads(&self) -> usize {
        lock(&self.files)
            .values()
            .filter(|f| !f.unlinked && f.file.is_dirty())
            .count()
    }

    pub(crate) fn note_failure(&self, ino: u64, e: &FsError, permanent: bool) {
        let file = self
            .spooled_file(ino)
            .map(|f| f.target().display_path)
            .unwrap_or_else(|| format!("inode {ino}"));
        let failure = UploadFailure {
            file: file.clone(),
            reason: e.to_string(),
            permanent,
        };
        let before = lock(&self.engine.failures).insert(ino, failure);
        match (permanent, before) {
            // Logged once at warn per failing streak, not at every slow retry.
            (true, None)
            | (
                true,
                Some(UploadFailure {
                    permanent: false, ..
                }),
            ) => {
                tracing::warn!(file = %file, error = %e, "upload failed; the local copy is kept, and the upload retried every {} min and by `vagonfs sync`", SLOW_RETRY.as_secs() / 60)
            }
            (false, None) => {
                tracing::info!(file = %file, error = %e, "upload failed; retrying with backoff")
            }
            _ => tracing::debug!(file = %file, error = %e, "upload failed again"),
        }
        if let FsError::Api(a) = e
            && a.kind() == crate::api::ApiErrorKind::NoSpace
        {
            // The storage is full: learn its numbers, so the next close that cannot fit
            // answers ENOSPC at once (`check_quota`).
            self.refresh_quota(ino);
        }
    }

    /// Changed files waiting for an upload to start, and their bytes (uploads running are in
    /// the upload registry; permanent failures in [`VagonFs::upload_failures`]).
    pub fn upload_backlog(&self) -> Backlog {
        let failed = self.permanently_failed();
        let mut backlog = Backlog::default();
        for (ino, f) in lock(&self.files).iter() {
            if f.unlinked || !f.file.is_dirty() || f.file.is_uploading() || failed.contains(ino) {
                continue;
            }
            backlog.files += 1;
            backlog.bytes += f.file.len();
        }
        backlog
    }

    /// Inodes whose last upload failed for good.
    pub(crate) fn permanently_failed(&self) -> Vec<u64> {
        lock(&self.engine.failures)
            .iter()
            .filter(|(_, f)| f.permanent)
            .map(|(ino, _)| *ino)
            .collect()
    }

    /// Learn the quota of `ino`'s storage again, in the background (one capacity request).
    fn refresh_quota(&self, ino: u64) {
        let (Some(file), Some(fs), Ok(rt)) = (
            self.spooled_file(ino),
            self.me.upgrade(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let space = file.space();
        rt.spawn(async move {
            fs.statfs.fresh_free(space).await;
        });
    }

    pub(crate) fn clear_failure(&self, ino: u64) {
        lock(&self.engine.failures).remove(&ino);
    }

    /// Whether `ino` has changes to send (a spool, dirty, not unlinked).
    pub(crate) fn needs_upload_now(&self, ino: u64) -> bool {
        self.needs_upload(ino)
    }

    /// While `ino` is open for writing and was written less than [`WRITING_QUIET`] ago: how
    /// long until that pause is reached (its upload waits; `fsync` and `--sync-close` do not).
    fn still_written(&self, ino: u64) -> Option<Duration> {
        let writing = lock(&self.handles)
            .values()
            .any(|h| matches!(h, super::Handle::File(f) if f.ino == ino && f.write));
        if !writing {
            return None;
        }
        let since = self.spooled_file(ino)?.since_change();
        WRITING_QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }

    fn needs_upload(&self, ino: u64) -> bool {
        lock(&self.files)
            .get(&ino)
            .is_some_and(|f| !f.unlinked && f.file.is_dirty())
    }
}

/// The worker of `ino`: wait until due, upload, repeat while the file is dirty.
async fn drive(me: Weak<VagonFs>, ino: u64, w: Arc<Worker>) {
    let mut backoff = BACKOFF_START;
    loop {
        // Sleep until due; a kick may bring the due time forward.
        loop {
            let due = *lock(&w.due);
            let now = Instant::now();
            if now >= due {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(due - now) => {}
                _ = w.kick.notified() => {}
            }
        }
        let Some(fs) = me.upgrade() else { return };
        {
            let mut workers = lock(&fs.engine.workers);
            if !fs.needs_upload(ino) {
                if workers.get(&ino).is_some_and(|x| Arc::ptr_eq(x, &w)) {
                    workers.remove(&ino);
                }
                drop(workers);
                fs.clear_failure(ino);
                fs.release_spool_if_done(ino);
                return;
            }
        }
        if let Some(wait) = fs.still_written(ino) {
            *lock(&w.due) = Instant::now() + wait;
            continue;
        }
        let transfers = Arc::clone(&fs.engine.transfers);
        let Ok(permit) = transfers.acquire_owned().await else {
            return;
        };
        let result = fs.upload_ino(ino).await;
        drop(permit);
        let next = match result {
            Ok(()) => {
                backoff = BACKOFF_START;
                fs.clear_failure(ino);
                // Written to meanwhile: go round at once (the loop re-checks).
                Duration::ZERO
            }
            Err(e) if transient(&e) => {
                fs.note_failure(ino, &e, false);
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
            Err(e) => {
                fs.note_failure(ino, &e, true);
                SLOW_RETRY
            }
        };
        *lock(&w.due) = Instant::now() + next;
        drop(fs);
    }
}

/// The group commit of a spool folder: every [`GROUP_COMMIT`], make what changed durable
/// against power loss (one `syncfs` for all the files closed meanwhile, instead of two fsyncs
/// per close). Ends when the folder is dropped.
pub(crate) fn start_group_commit(dir: &Arc<crate::fs::write::SpoolDir>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(dir);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(GROUP_COMMIT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(dir) = weak.upgrade() else { return };
            let commit = dir.group_commit();
            // Not held across the commit: a dropped mount must release its folder at once.
            drop(dir);
            let done = tokio::task::spawn_blocking(move || commit.commit()).await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "group commit of the spool folder failed; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "group commit task failed"),
            }
        }
    });
}
