//! Files removed by `unlink` and folders removed by `rmdir`, answered at once and deleted on
//! the server in the background.
//!
//! Over a real network `DELETE /files/{id}` costs a round trip, and `rm -r`, `git clean` and
//! file managers remove files one after another: a folder of 1,000 files took 1,000 round trips
//! in series, and each folder two more (its fresh listing, its delete). So with write-back,
//! unlink of a file that exists only on the server (no spool here), and rmdir of a folder that
//! shows empty, hide it at once (the overlay's `gone`, the same mark a finished delete leaves)
//! and return; a task sends the delete, at most [`DELETES_AT_ONCE`] in flight.
//!
//! Subtle cases handled here:
//! - **the name stays taken until the delete lands.** The task holds the file's remote name in
//!   the uploader's name table (`write/name_hold.rs`), taken by unlink before it answers. An
//!   upload of a new file of that name (create after rm, a rename onto it) waits for the hold,
//!   so it looks at the server only once the old file is gone, and never makes a conflict copy
//!   of the file the user just removed; `mkdir` and a folder move take and drop the same hold
//!   (`VagonFs::wait_name_free`) before making a folder of that name;
//! - a delete is by id, and ids are never reused: a late delete can only remove the object the
//!   user removed, never a newer file of the same name;
//! - a failed delete that may succeed later (network, 5xx, timeout) is retried with backoff
//!   (1 s doubling to 30 s), forever while the mount lives; `vagonfs sync` and unmount hurry
//!   every pending delete and report those that still fail;
//! - a refusal (anything but 404, which counts as deleted) is final: the file shows again (its
//!   `gone` mark is lifted and its folder listed again), logged at error level;
//! - **a folder is deleted only once a fresh listing shows nothing but what was removed here**
//!   (the server deletes a folder with everything in it): rmdir answers on the folder's
//!   listing if one started within `--dir-refresh` (else it lists it first, as before), and the
//!   task lists the folder again right before its `DELETE` (unless rmdir's own fresh listing
//!   is under [`CHECK_FRESH`] old). Anything else there (another client's file, an object the
//!   mount cannot show, a page that did not come) and the folder is kept and shows again, with
//!   what is in it, logged at error level: never deleted unseen;
//! - a folder's delete waits for the deletes of the folders removed inside it (`rm -r` removes
//!   them first): each may find something and be kept, and then its parent must be kept too.
//!   It does not wait for the files inside: they are hidden already, and the server deletes
//!   them with it; deletes of files in it not sent yet are then dropped
//!   ([`Deletes::folder_deleted`]), and one in flight answers 404, which counts as done;
//! - while an outage is remembered, unlink fails at once, as before (nothing is promised);
//! - a crash: `.deletes.log` in the spool folder (one JSON line per delete asked for and per
//!   delete ended, made durable by the spool folder's group commit, `line_log.rs`) is read when
//!   the next mount opens its spool folder: the files and folders are hidden again at once,
//!   their names taken before recovery uploads anything (a file written under the same name
//!   after the rm waits, as it did before the crash), and the deletes are sent from the mount's
//!   first recovery round (a folder's after a fresh listing, always).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};

use crate::api::{ApiError, ApiErrorKind, Space};

use super::inode::Loc;
use super::line_log::{self, LineLog};
use super::new_folders::is_placeholder;
use super::types::FsError;
use super::write::{JournalRecord, JournalSpace, NameHold, SpoolDir};
use super::{VagonFs, lock};

/// The log's file name in the spool folder.
const LOG_FILE: &str = ".deletes.log";

/// Deletes in flight at once.
const DELETES_AT_ONCE: usize = 16;

/// A folder's delete trusts rmdir's own fresh listing this long; after that (its subfolders'
/// deletes took time, or an attempt failed) it lists the folder again before deleting it.
const CHECK_FRESH: Duration = Duration::from_secs(1);

/// Backoff between attempts of one delete.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum LogLine {
    /// unlink (or rmdir, `folder`) answered; object `id` (named `name` in folder `parent`) is
    /// to be deleted.
    Asked {
        space: JournalSpace,
        id: u64,
        parent: Option<u64>,
        name: String,
        shown: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        folder: bool,
    },
    /// The delete of `id` ended (deleted, found gone, dropped with its folder, or refused).
    Ended { space: JournalSpace, id: u64 },
}

/// A delete to send: the object, its remote name, and the hold on that name when taken
/// already.
struct Job {
    space: JournalSpace,
    id: u64,
    parent: Option<u64>,
    name: String,
    shown: String,
    hold: Option<NameHold>,
    /// A folder: deleted only after a fresh listing (see the module note).
    folder: bool,
    /// When the fresh listing rmdir judged the folder on started, if it fetched one.
    checked: Option<Instant>,
}

impl Job {
    fn loc(&self) -> Loc {
        Loc::Remote {
            space: self.space.space(),
            id: self.id,
        }
    }

    fn dir(&self) -> Loc {
        dir_loc(self.space.space(), self.parent)
    }
}

/// The folder a create or delete with parent `parent` acts in.
fn dir_loc(space: Space, parent: Option<u64>) -> Loc {
    match parent {
        Some(id) => Loc::Remote { space, id },
        None => Loc::SpaceRoot(space),
    }
}

/// Why a delete did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum DeleteError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The folder's listing before its delete failed.
    #[error("listing the folder before deleting it: {detail}")]
    Listing { detail: String, retryable: bool },
    /// The folder holds what was not removed through the mount: kept.
    #[error(
        "the folder holds entries on the server that were not removed through this mount (another client's, or ones the mount cannot show); it was kept and shows again"
    )]
    NotEmpty,
}

impl DeleteError {
    /// Whether a later attempt may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            DeleteError::Api(e) => e.is_retryable(),
            DeleteError::Listing { retryable, .. } => *retryable,
            DeleteError::NotEmpty => false,
        }
    }

    /// A listing's failure: final only when the server refused it for good (a 403); an
    /// outage, a timeout or a 5xx may pass.
    fn listing(e: &FsError) -> Self {
        let retryable = match e {
            FsError::Api(a) => a.is_retryable() || a.kind() == ApiErrorKind::Timeout,
            _ => true,
        };
        DeleteError::Listing {
            detail: e.to_string(),
            retryable,
        }
    }
}

/// Where one delete stands.
#[derive(Debug, Clone)]
enum Status {
    /// Not done yet; `failures` attempts failed, the last with `last`.
    Pending {
        failures: u32,
        last: Option<DeleteError>,
    },
    /// Deleted (or found gone, or its folder was deleted).
    Done,
    /// Refused for good: the file or folder shows again.
    Refused(DeleteError),
}

struct Pending {
    /// The folder it was in.
    dir: Loc,
    /// A folder's delete (its parent's delete waits for it).
    folder: bool,
    /// Its path, for logs and reports.
    shown: String,
    status: watch::Sender<Status>,
    /// Cuts the wait before the next attempt short (`vagonfs sync`, unmount).
    nudge: Arc<Notify>,
    /// Its folder was deleted on the server: nothing left to send.
    dropped: bool,
}

/// The deletes not done yet, by the file's location (see the module note).
pub(crate) struct Deletes {
    pending: Mutex<HashMap<Loc, Pending>>,
    permits: Arc<Semaphore>,
    log: Mutex<Option<LineLog>>,
    /// Deletes loaded from the log outside a runtime (the mount opens its spool folder before
    /// it runs): their tasks start at the first chance on one ([`VagonFs::launch_deletes`]).
    unstarted: Mutex<Vec<Job>>,
    /// The old names of moves an earlier run answered before their uploads (their journal
    /// records name the objects left there), held from the spool folder's opening until those
    /// objects' deletes, by object: a new file of such a name uploads after it, as it would
    /// have before the crash.
    move_holds: Mutex<HashMap<Loc, (MoveName, NameHold)>>,
}

/// A remote name: space, folder, name.
pub(crate) type MoveName = (Space, Option<u64>, String);

impl Default for Deletes {
    fn default() -> Self {
        Deletes {
            pending: Mutex::default(),
            permits: Arc::new(Semaphore::new(DELETES_AT_ONCE)),
            log: Mutex::default(),
            unstarted: Mutex::default(),
            move_holds: Mutex::default(),
        }
    }
}

impl Deletes {
    /// How many deletes are not done yet (`vagonfs status`, `vagonfs sync`).
    pub(crate) fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Folder `dir` was deleted on the server, with whatever was in it: deletes of files in it
    /// that are not sent yet are dropped.
    pub(crate) fn folder_deleted(&self, dir: Loc) {
        for p in lock(&self.pending).values_mut() {
            if p.dir == dir {
                p.dropped = true;
                p.nudge.notify_one();
            }
        }
    }

    /// Try every pending delete now (`vagonfs sync`, unmount) and wait for those attempts: the
    /// files and folders whose delete still failed, with why.
    pub(crate) async fn hurry(&self) -> Vec<(String, DeleteError)> {
        let waits: Vec<_> = lock(&self.pending)
            .values()
            .map(|p| {
                p.nudge.notify_one();
                (p.shown.clone(), p.status.subscribe())
            })
            .collect();
        let tries = waits
            .into_iter()
            .map(|(shown, rx)| async move { next_outcome(rx).await.err().map(|e| (shown, e)) });
        futures::future::join_all(tries)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The folders inside `dir` whose deletes are pending: their status and nudge.
    fn subfolders(&self, dir: Loc) -> Vec<(watch::Receiver<Status>, Arc<Notify>)> {
        lock(&self.pending)
            .values()
            .filter(|p| p.folder && p.dir == dir)
            .map(|p| (p.status.subscribe(), Arc::clone(&p.nudge)))
            .collect()
    }

    fn register(&self, job: &Job) {
        let status = watch::Sender::new(Status::Pending {
            failures: 0,
            last: None,
        });
        lock(&self.pending).insert(
            job.loc(),
            Pending {
                dir: job.dir(),
                folder: job.folder,
                shown: job.shown.clone(),
                status,
                nudge: Arc::new(Notify::new()),
                dropped: false,
            },
        );
    }

    fn dropped(&self, loc: &Loc) -> bool {
        lock(&self.pending).get(loc).is_some_and(|p| p.dropped)
    }

    /// The delete of `loc` ended with `status`: noted in the log, waiters see it, and it is no
    /// longer pending. The last one pending empties the log instead (every line in it is done
    /// with), so it holds no more than the deletes not done.
    fn finish(&self, loc: &Loc, status: Status) {
        let mut log = lock(&self.log);
        let ended = lock(&self.pending).remove(loc);
        let none_left = lock(&self.pending).is_empty();
        if let (Some(log), Loc::Remote { space, id }) = (log.as_mut(), *loc)
            && let Ok(space) = JournalSpace::from_space(space)
        {
            let noted = if none_left {
                log.clear()
            } else {
                log.append(&LogLine::Ended { space, id })
            };
            if let Err(e) = noted {
                tracing::warn!(error = %e, "cannot note an ended delete in the cache folder's log");
            }
        }
        drop(log);
        if let Some(p) = ended {
            p.status.send_replace(status);
        }
    }

    /// Note `job` in the log (opened in spool folder `dir` at the first need) before its delete
    /// is promised.
    fn note_asked(&self, dir: &SpoolDir, job: &Job) -> std::io::Result<()> {
        let mut slot = lock(&self.log);
        let log = match slot.take() {
            Some(log) => log,
            None => LineLog::open(&dir.path().join(LOG_FILE), dir.group_commit())?,
        };
        slot.insert(log).append(&LogLine::Asked {
            space: job.space,
            id: job.id,
            parent: job.parent,
            name: job.name.clone(),
            shown: job.shown.clone(),
            folder: job.folder,
        })
    }
}

/// The outcome of the attempt after the one `rx` shows now: done, refused, or that attempt's
/// error.
async fn next_outcome(mut rx: watch::Receiver<Status>) -> Result<(), DeleteError> {
    let seen = match rx.borrow_and_update().clone() {
        Status::Done => return Ok(()),
        Status::Refused(e) => return Err(e),
        Status::Pending { failures, .. } => failures,
    };
    loop {
        let changed = rx.changed().await;
        match rx.borrow_and_update().clone() {
            Status::Done => return Ok(()),
            Status::Refused(e) => return Err(e),
            Status::Pending {
                failures,
                last: Some(e),
            } if failures > seen => return Err(e),
            Status::Pending { .. } if changed.is_err() => {
                // The task ended without a word: the mount is going away.
                return Err(DeleteError::Api(ApiError::Transport {
                    endpoint: "delete".into(),
                    detail: "the mount is stopping".into(),
                }));
            }
            Status::Pending { .. } => {}
        }
    }
}

/// The deletes asked for in `lines` and not ended, in order.
fn not_ended(lines: Vec<LogLine>) -> Vec<LogLine> {
    let ended: HashSet<Loc> = lines
        .iter()
        .filter_map(|line| match *line {
            LogLine::Ended { space, id } => Some(Loc::Remote {
                space: space.space(),
                id,
            }),
            LogLine::Asked { .. } => None,
        })
        .collect();
    lines
        .into_iter()
        .filter(|line| match *line {
            LogLine::Asked { space, id, .. } => !ended.contains(&Loc::Remote {
                space: space.space(),
                id,
            }),
            LogLine::Ended { .. } => false,
        })
        .collect()
}

/// Whether the log in spool folder `dir` holds a delete not ended (read before the folders'
/// log, whose placeholders such a delete may name).
pub(crate) fn any_pending(dir: &SpoolDir) -> std::io::Result<bool> {
    let lines = line_log::read_lines(&dir.path().join(LOG_FILE), LOG_FILE)?;
    Ok(!not_ended(lines).is_empty())
}

/// What [`VagonFs::delete_later`] is to delete.
pub(crate) struct Removed<'a> {
    /// The file or folder.
    pub(crate) loc: Loc,
    /// A folder, and when the fresh listing rmdir judged it on started (if it fetched one).
    pub(crate) folder: Option<Option<Instant>>,
    /// Its folder's id (`None`: the space's root).
    pub(crate) parent: Option<u64>,
    /// Its remote name.
    pub(crate) name: &'a str,
    /// Its path, for logs and reports.
    pub(crate) shown: String,
}

impl VagonFs {
    /// Delete remote object `what` in the background; `hold` keeps its name taken until the
    /// delete ended (see the module note; `None`: the task takes it first). Noted in the log of
    /// spool folder `dir` first. The caller hides it once this returned, then starts the delete
    /// with [`Self::launch_deletes`].
    pub(crate) fn delete_later(
        &self,
        dir: &SpoolDir,
        what: Removed<'_>,
        hold: Option<NameHold>,
    ) -> std::io::Result<()> {
        let Loc::Remote { space, id } = what.loc else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a remote file or folder",
            ));
        };
        let space = JournalSpace::from_space(space)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, e))?;
        let job = Job {
            space,
            id,
            parent: what.parent,
            name: what.name.to_string(),
            shown: what.shown,
            hold,
            folder: what.folder.is_some(),
            checked: what.folder.flatten(),
        };
        // Pending before it is in the log: the log is emptied only when nothing is pending.
        self.deletes.register(&job);
        if let Err(e) = self.deletes.note_asked(dir, &job) {
            lock(&self.deletes.pending).remove(&job.loc());
            return Err(e);
        }
        lock(&self.deletes.unstarted).push(job);
        Ok(())
    }

    /// Read the log left in spool folder `dir` by earlier runs (once, when the folder is
    /// opened): the deletes that had not ended are hidden again, their names taken, and sent
    /// from the first call made in a runtime. The log is rewritten with those.
    pub(crate) fn load_deletes(&self, dir: &SpoolDir) -> std::io::Result<()> {
        let path = dir.path().join(LOG_FILE);
        let lines = not_ended(line_log::read_lines(&path, LOG_FILE)?);
        let mut kept = Vec::new();
        let mut jobs = Vec::new();
        for line in lines {
            let LogLine::Asked {
                space,
                id,
                parent,
                ref name,
                ref shown,
                folder,
            } = line
            else {
                continue;
            };
            let mut job = Job {
                space,
                id,
                parent,
                name: name.clone(),
                shown: shown.clone(),
                hold: None,
                folder,
                checked: None,
            };
            if lock(&self.deletes.pending).contains_key(&job.loc()) {
                continue;
            }
            // Nothing runs yet: the name is free, so recovery's uploads wait for the delete.
            job.hold = self.uploader.try_hold_name(space.space(), parent, name);
            self.overlay.mark_gone(job.loc());
            kept.push(line.clone());
            jobs.push(job);
        }
        line_log::rewrite(&path, &kept)?;
        *lock(&self.deletes.log) = Some(LineLog::open(&path, dir.group_commit())?);
        if !jobs.is_empty() {
            tracing::info!(
                objects = jobs.len(),
                "deleting files and folders an earlier run removed but had not deleted on the server"
            );
        }
        for job in jobs {
            self.deletes.register(&job);
            lock(&self.deletes.unstarted).push(job);
        }
        self.launch_deletes();
        Ok(())
    }

    /// The journal records in spool folder `dir` that name a move's source (opened once): each
    /// such object is hidden again and its name held until its delete (see `move_holds`).
    pub(crate) fn load_move_sources(&self, dir: &SpoolDir) -> std::io::Result<()> {
        let ids = dir.journaled_ids().map_err(std::io::Error::other)?;
        for id in ids {
            // An unreadable record is recovery's to report.
            let Ok(record) = JournalRecord::read(&dir.journal_path(&id)) else {
                continue;
            };
            let Some(from) = record.moved_from else {
                continue;
            };
            let space = record.space.space();
            let loc = Loc::Remote { space, id: from.id };
            self.overlay.mark_gone(loc);
            if let Some(hold) = self
                .uploader
                .try_hold_name(space, from.parent_id, &from.name)
            {
                lock(&self.deletes.move_holds)
                    .insert(loc, ((space, from.parent_id, from.name), hold));
            }
        }
        Ok(())
    }

    /// The hold an earlier run's move left on the old name of `loc`, if any.
    pub(crate) fn take_move_hold(&self, loc: &Loc) -> Option<NameHold> {
        lock(&self.deletes.move_holds)
            .remove(loc)
            .map(|(_, hold)| hold)
    }

    /// Whether an earlier run's move still holds `name` (its source not deleted yet): a
    /// recovered upload of that name waits for a later round, rather than in this one, whose
    /// end the move's own recovered upload may need first.
    pub(crate) fn move_holds_name(&self, name: &MoveName) -> bool {
        lock(&self.deletes.move_holds)
            .values()
            .any(|(held, _)| held == name)
    }

    /// Start the tasks of the deletes not started yet, when there is a runtime to run them.
    pub(crate) fn launch_deletes(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let jobs = std::mem::take(&mut *lock(&self.deletes.unstarted));
        for job in jobs {
            let Some((status, nudge)) = lock(&self.deletes.pending)
                .get(&job.loc())
                .map(|p| (p.status.clone(), Arc::clone(&p.nudge)))
            else {
                continue;
            };
            let me = self.me.clone();
            let permits = Arc::clone(&self.deletes.permits);
            tokio::spawn(run(me, permits, job, status, nudge));
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Done,
    Failed(DeleteError),
    /// The mount is gone.
    Stop,
}

/// The task of one delete: attempts until done or refused.
async fn run(
    me: Weak<VagonFs>,
    permits: Arc<Semaphore>,
    mut job: Job,
    status: watch::Sender<Status>,
    nudge: Arc<Notify>,
) {
    let (loc, dir) = (job.loc(), job.dir());
    if job.hold.is_none() {
        let Some(fs) = me.upgrade() else { return };
        let names = fs.uploader.clone();
        drop(fs);
        job.hold = Some(
            names
                .hold_name(job.space.space(), job.parent, &job.name)
                .await,
        );
    }
    let what = if job.folder { "folder" } else { "file" };
    let mut wait = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let outcome = if job.folder {
            attempt_folder(&me, &permits, &mut job).await
        } else {
            attempt_file(&me, &permits, &job).await
        };
        let Some(fs) = me.upgrade() else { return };
        match outcome {
            Attempt::Stop => return,
            Attempt::Done => {
                fs.deletes.finish(&loc, Status::Done);
                if job.folder {
                    fs.deletes.folder_deleted(loc);
                    fs.dirs.invalidate(loc);
                }
                return;
            }
            Attempt::Failed(e) if e.is_retryable() => {
                failures += 1;
                tracing::info!(%what, path = %job.shown, error = %e, retry_in = ?wait, "removed here, not deleted on the server yet; retrying");
                status.send_replace(Status::Pending {
                    failures,
                    last: Some(e),
                });
            }
            Attempt::Failed(e) => {
                tracing::error!(%what, path = %job.shown, error = %e, "not deleted on the server although removed through the mount; it shows again");
                fs.overlay.unmark_gone(&loc);
                fs.dirs.invalidate(dir);
                fs.deletes.finish(&loc, Status::Refused(e));
                return;
            }
        }
        drop(fs);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = nudge.notified() => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// One attempt at a file: its `DELETE`.
async fn attempt_file(me: &Weak<VagonFs>, permits: &Semaphore, job: &Job) -> Attempt {
    let Ok(_permit) = permits.acquire().await else {
        return Attempt::Stop;
    };
    let Some(fs) = me.upgrade() else {
        return Attempt::Stop;
    };
    send_delete(&fs, job).await
}

/// The `DELETE` of `job`'s object (a permit held).
async fn send_delete(fs: &VagonFs, job: &Job) -> Attempt {
    let loc = job.loc();
    if fs.deletes.dropped(&loc) {
        return Attempt::Done;
    }
    // Still hidden, however long the retries last (the overlay sweeps old marks).
    fs.overlay.mark_gone(loc);
    match fs.api.delete(job.id).await {
        Ok(()) => Attempt::Done,
        Err(e) if e.kind() == ApiErrorKind::NotFound => Attempt::Done,
        Err(e) => Attempt::Failed(e.into()),
    }
}

/// One attempt at a folder: the deletes of the folders removed inside it first (each nudged
/// to try now), then a fresh listing of it, then its `DELETE` (see the module note).
async fn attempt_folder(me: &Weak<VagonFs>, permits: &Semaphore, job: &mut Job) -> Attempt {
    let loc = job.loc();
    loop {
        let Some(fs) = me.upgrade() else {
            return Attempt::Stop;
        };
        if fs.deletes.dropped(&loc) {
            return Attempt::Done;
        }
        fs.overlay.mark_gone(loc);
        let inside = fs.deletes.subfolders(loc);
        drop(fs);
        if inside.is_empty() {
            break;
        }
        let tries = inside.into_iter().map(|(rx, nudge)| {
            nudge.notify_one();
            next_outcome(rx)
        });
        let failed = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter_map(Result::err)
            .find(DeleteError::is_retryable);
        if let Some(e) = failed {
            return Attempt::Failed(e);
        }
        // Done or refused (a refused one shows again, and the listing below finds it).
        job.checked = None;
    }
    if is_placeholder(job.id) {
        // Made by this mount: its create first (a refused or unknown one left nothing to delete).
        let Some(fs) = me.upgrade() else {
            return Attempt::Stop;
        };
        let folders = Arc::clone(&fs.folders);
        drop(fs);
        match folders.made(job.id).await {
            Ok(_) => {}
            Err(e) if e.is_retryable() => return Attempt::Failed(e.into()),
            Err(_) => return Attempt::Done,
        }
    }
    let Ok(_permit) = permits.acquire().await else {
        return Attempt::Stop;
    };
    let Some(fs) = me.upgrade() else {
        return Attempt::Stop;
    };
    let checked = job.checked.take();
    if checked.is_none_or(|at| at.elapsed() >= CHECK_FRESH) {
        match fs.dirs.relist(loc).await {
            Ok(listing) if fs.shows_nothing(loc, &listing) => {}
            Ok(_) => return Attempt::Failed(DeleteError::NotEmpty),
            Err(e) if is_not_found(&e) => return Attempt::Done,
            Err(e) => return Attempt::Failed(DeleteError::listing(&e)),
        }
    }
    send_delete(&fs, job).await
}

/// A listing that found its folder gone.
fn is_not_found(e: &FsError) -> bool {
    match e {
        FsError::NotFound => true,
        FsError::Api(a) => a.kind() == ApiErrorKind::NotFound,
        _ => false,
    }
}
