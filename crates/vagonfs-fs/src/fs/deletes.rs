//! Files removed by `unlink`, answered at once and deleted on the server in the background.
//!
//! Over a real network `DELETE /files/{id}` costs a round trip, and `rm -r`, `git clean` and
//! file managers remove files one after another: a folder of 1,000 files took 1,000 round trips
//! in series. So with write-back, unlink of a file that exists only on the server (no spool
//! here) hides it at once (the overlay's `gone`, the same mark a finished delete leaves) and
//! returns; a task sends the delete, at most [`DELETES_AT_ONCE`] in flight.
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
//! - rmdir does not wait for the deletes inside: the server deletes a folder with everything in
//!   it, and the files are hidden already, so a fresh listing shows the folder empty. Deletes
//!   not sent yet in a folder that was deleted are dropped ([`Deletes::folder_deleted`]);
//! - while an outage is remembered, unlink fails at once, as before (nothing is promised);
//! - a crash: `.deletes.log` in the spool folder (one JSON line per delete asked for and per
//!   delete ended, made durable by the spool folder's group commit, `line_log.rs`) is read when
//!   the next mount opens its spool folder: the files are hidden again at once, their names
//!   taken before recovery uploads anything (a file written under the same name after the rm
//!   waits, as it did before the crash), and the deletes are sent from the mount's first
//!   recovery round.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};

use crate::api::{ApiError, ApiErrorKind, Space};

use super::inode::Loc;
use super::line_log::{self, LineLog};
use super::write::{JournalSpace, NameHold, SpoolDir};
use super::{VagonFs, lock};

/// The log's file name in the spool folder.
const LOG_FILE: &str = ".deletes.log";

/// Deletes in flight at once.
const DELETES_AT_ONCE: usize = 16;

/// Backoff between attempts of one delete.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum LogLine {
    /// unlink answered; file `id` (named `name` in folder `parent`) is to be deleted.
    Asked {
        space: JournalSpace,
        id: u64,
        parent: Option<u64>,
        name: String,
        shown: String,
    },
    /// The delete of `id` ended (deleted, found gone, dropped with its folder, or refused).
    Ended { space: JournalSpace, id: u64 },
}

/// A delete to send: the file, its remote name, and the hold on that name when taken already.
struct Job {
    space: JournalSpace,
    id: u64,
    parent: Option<u64>,
    name: String,
    shown: String,
    hold: Option<NameHold>,
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

/// Where one delete stands.
#[derive(Debug, Clone)]
enum Status {
    /// Not done yet; `failures` attempts failed, the last with `last`.
    Pending {
        failures: u32,
        last: Option<ApiError>,
    },
    /// Deleted (or found gone, or its folder was deleted).
    Done,
    /// Refused for good: the file shows again.
    Refused(ApiError),
}

struct Pending {
    /// The folder it was in.
    dir: Loc,
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
}

impl Default for Deletes {
    fn default() -> Self {
        Deletes {
            pending: Mutex::default(),
            permits: Arc::new(Semaphore::new(DELETES_AT_ONCE)),
            log: Mutex::default(),
            unstarted: Mutex::default(),
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
    /// files whose delete still failed, with why.
    pub(crate) async fn hurry(&self) -> Vec<(String, ApiError)> {
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

    fn register(&self, loc: Loc, dir: Loc, shown: String) {
        let status = watch::Sender::new(Status::Pending {
            failures: 0,
            last: None,
        });
        lock(&self.pending).insert(
            loc,
            Pending {
                dir,
                shown,
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
        })
    }
}

/// The outcome of the attempt after the one `rx` shows now: done, refused, or that attempt's
/// error.
async fn next_outcome(mut rx: watch::Receiver<Status>) -> Result<(), ApiError> {
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
                return Err(ApiError::Transport {
                    endpoint: "delete".into(),
                    detail: "the mount is stopping".into(),
                });
            }
            Status::Pending { .. } => {}
        }
    }
}

impl VagonFs {
    /// Delete remote file `file`, named `name` in folder `parent` of its space (shown as
    /// `shown`), in the background; `hold` keeps its name taken until the delete ended (see the
    /// module note). Noted in the log of spool folder `dir` first. The caller hides the file
    /// once this returned, then starts the delete with [`Self::launch_deletes`].
    pub(crate) fn delete_later(
        &self,
        dir: &SpoolDir,
        file: Loc,
        parent: Option<u64>,
        name: &str,
        shown: String,
        hold: NameHold,
    ) -> std::io::Result<()> {
        let Loc::Remote { space, id } = file else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a remote file",
            ));
        };
        let space = JournalSpace::from_space(space)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, e))?;
        let job = Job {
            space,
            id,
            parent,
            name: name.to_string(),
            shown,
            hold: Some(hold),
        };
        // Pending before it is in the log: the log is emptied only when nothing is pending.
        self.deletes
            .register(job.loc(), job.dir(), job.shown.clone());
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
        let lines: Vec<LogLine> = line_log::read_lines(&path, LOG_FILE)?;
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
        let mut kept = Vec::new();
        let mut jobs = Vec::new();
        for line in lines {
            let LogLine::Asked {
                space,
                id,
                parent,
                ref name,
                ref shown,
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
            };
            if ended.contains(&job.loc()) || lock(&self.deletes.pending).contains_key(&job.loc()) {
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
                files = jobs.len(),
                "deleting files an earlier run removed but had not deleted on the server"
            );
        }
        for job in jobs {
            self.deletes
                .register(job.loc(), job.dir(), job.shown.clone());
            lock(&self.deletes.unstarted).push(job);
        }
        self.launch_deletes();
        Ok(())
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
    let mut wait = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let Ok(permit) = permits.acquire().await else {
            return;
        };
        let Some(fs) = me.upgrade() else { return };
        if fs.deletes.dropped(&loc) {
            fs.deletes.finish(&loc, Status::Done);
            return;
        }
        // Still hidden, however long the retries last (the overlay sweeps old marks).
        fs.overlay.mark_gone(loc);
        let outcome = fs.api.delete(job.id).await;
        drop(permit);
        match outcome {
            Ok(()) => {
                fs.deletes.finish(&loc, Status::Done);
                return;
            }
            Err(e) if e.kind() == ApiErrorKind::NotFound => {
                fs.deletes.finish(&loc, Status::Done);
                return;
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                tracing::info!(file = %job.shown, error = %e, retry_in = ?wait, "file removed here not deleted on the server yet; retrying");
                status.send_replace(Status::Pending {
                    failures,
                    last: Some(e),
                });
            }
            Err(e) => {
                tracing::error!(file = %job.shown, error = %e, "the server refused to delete a file removed through the mount; it shows again");
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
