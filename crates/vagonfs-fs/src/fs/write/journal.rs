//! The crash journal: one small JSON record beside each dirty spool, and recovery at mount start.
//!
//! Why a JSON sidecar and not SQLite: a record lives and dies with exactly one spool file, there
//! is never a transaction across records, and the folder listing already is the index. A sidecar
//! written atomically (temp file, rename) is enough for crash-consistency (a crash of the
//! daemon loses nothing the kernel has; a group commit, `syncfs` of the spool folder at most
//! once a second while something changed, covers power loss), needs no shared connection (no lock shared by all open files), and a
//! damaged record harms only its own spool; it is also readable by a person who wants their
//! bytes back.
//!
//! Record lifecycle: none (a clean spool) → `dirty` (written when the spool first changes, after
//! its remote bytes are all local) → `uploading` (with `pending_upload_id` once `POST /files`
//! answered) → removed when `complete` succeeded. "Done" is the absence of a record: removing
//! the file is the atomic step. A write during an upload turns the record back to `dirty`.
//!
//! Recovery ([`recover`]) reads every record and asks the server what is at the target now;
//! [`decide`] then chooses:
//! - the file listed there has the id our last attempt created and the record says
//!   `uploading`: that attempt completed before the crash → nothing to send ([`RecoveryAction::AlreadyDone`]);
//! - nothing there, or the file we started from unchanged (same id, size and, when both are
//!   known, modification time), or our own earlier upload → upload under the name;
//! - anything else (changed, replaced, created meanwhile, a folder now): upload as a conflict
//!   copy beside it, `name (conflict 2026-11-27 023000).ext`, never overwriting what is there;
//! - the parent folder is gone: a conflict copy at the root of the space.
//!
//! A record that cannot be parsed is left in place with its spool (logged), never deleted: the
//! bytes are the user's.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::paging::find_by_name;
use crate::api::{ApiErrorKind, ApiResult, FileEntry, FilesApi, ObjectType, Space};

use super::progress::UploadState;
use super::spool::{SpoolClaim, SpoolDir, TEMP_EXT, remove_if_exists};
use super::uploader::{PartSource, UploadHooks, UploadTarget, Uploaded, Uploader};
use super::{WriteError, WriteResult, join_error};

/// Format version of a record; a newer version is left alone by an older vagonfs.
pub const JOURNAL_VERSION: u32 = 1;

/// Record and temp file permissions (they name the user's files).
const FILE_MODE: u32 = 0o600;

/// How many numbered conflict names to try when the first is taken.
const CONFLICT_NAME_TRIES: u32 = 20;

/// The storage a spool is written to (recordings are read-only, so not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JournalSpace {
    Shared,
    Machine { id: u64 },
}

impl JournalSpace {
    pub fn from_space(space: Space) -> WriteResult<JournalSpace> {
        match space {
            Space::Shared => Ok(JournalSpace::Shared),
            Space::Machine(id) => Ok(JournalSpace::Machine { id }),
            Space::Recordings { .. } => Err(WriteError::NotWritable(
                "session recordings are read-only".into(),
            )),
        }
    }

    pub fn space(self) -> Space {
        match self {
            JournalSpace::Shared => Space::Shared,
            JournalSpace::Machine { id } => Space::Machine(id),
        }
    }
}

/// The remote file a spool started from, for conflict detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteBase {
    pub id: u64,
    pub size: u64,
    /// `last_modified_date` in ms since the epoch; `None` when unknown (e.g. right after our
    /// own upload, whose answer carries no date).
    pub mtime_ms: Option<i64>,
}

impl RemoteBase {
    pub fn from_entry(e: &FileEntry) -> RemoteBase {
        RemoteBase {
            id: e.id,
            size: e.size,
            mtime_ms: e.modified.map(system_time_ms),
        }
    }

    /// The modification time, when known.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime_ms.map(ms_to_system_time)
    }

    /// The same file, unchanged? Times are compared only when both are known.
    pub fn matches(&self, e: &FileEntry) -> bool {
        let mtime_ok = match (self.mtime_ms, e.modified) {
            (Some(a), Some(b)) => a == system_time_ms(b),
            _ => true,
        };
        e.object_type == ObjectType::File && e.id == self.id && e.size == self.size && mtime_ok
    }
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Where a dirty spool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalState {
    /// Changed locally, not (fully) uploaded.
    Dirty,
    /// An upload of the current bytes was started.
    Uploading,
}

/// One spool's journal record (`<spool id>.journal.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub version: u32,
    pub spool_id: String,
    pub space: JournalSpace,
    /// `None`: the root of the space.
    pub parent_id: Option<u64>,
    pub name: String,
    /// For logs and `status` (e.g. `Projects/report.txt`).
    pub display_path: String,
    /// The remote file the bytes started from; `None` for a new file.
    pub base: Option<RemoteBase>,
    pub state: JournalState,
    /// The spool's generation when the record was written.
    pub generation: u64,
    /// The spool's length when the record was written.
    pub size: u64,
    /// Id answered by `POST /files` for the current upload attempt.
    pub pending_upload_id: Option<u64>,
    pub updated_at: DateTime<Utc>,
    /// A move's source: the object left under the old name, deleted once these bytes landed
    /// (here, so that a crash before that does not forget it; absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<MovedFrom>,
}

/// The object a move of a file on the server left under its old name (same space as the
/// record): its bytes go up under the new name first, then it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedFrom {
    pub id: u64,
    /// Its folder (`None`: the root of the space).
    pub parent_id: Option<u64>,
    pub name: String,
    pub display_path: String,
}

impl JournalRecord {
    pub fn path(dir: &SpoolDir, spool_id: &str) -> PathBuf {
        dir.journal_path(spool_id)
    }

    /// Write atomically: temp file, rename over the record. Durable against a crash of the
    /// daemon at once (the page cache survives it); against power loss within a second, by the
    /// spool folder's group commit ([`SpoolDir::note_unsynced`]).
    pub fn write_atomic(&self, dir: &SpoolDir) -> std::io::Result<()> {
        let path = dir.journal_path(&self.spool_id);
        // A fresh name each time, created exclusively and never through a symlink: two writes
        // of one record cannot share a temp file, and nothing planted there is followed.
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let tmp = path.with_extension(format!("json.{nonce}.{TEMP_EXT}"));
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(FILE_MODE)
                .open(&tmp)?;
            f.write_all(&body)?;
        }
        std::fs::rename(&tmp, &path)?;
        dir.note_unsynced();
        Ok(())
    }

    pub fn read(path: &Path) -> WriteResult<JournalRecord> {
        let bytes = std::fs::read(path)?;
        let rec: JournalRecord =
            serde_json::from_slice(&bytes).map_err(|e| WriteError::Journal {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        if rec.version > JOURNAL_VERSION {
            return Err(WriteError::Journal {
                path: path.to_path_buf(),
                detail: format!("written by a newer vagonfs (version {})", rec.version),
            });
        }
        Ok(rec)
    }

    /// Remove the record (the "done" step); made durable by the group commit.
    pub fn remove(dir: &SpoolDir, spool_id: &str) -> std::io::Result<()> {
        remove_if_exists(&dir.journal_path(spool_id))?;
        dir.note_unsynced();
        Ok(())
    }
}

/// What recovery does with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Upload under the recorded name; `overwrite` when a file of ours (or our base) is there.
    Upload { overwrite: bool },
    /// The remote changed meanwhile: upload as `name` in `parent_id`, next to it.
    ConflictCopy {
        parent_id: Option<u64>,
        name: String,
    },
    /// The upload finished before the crash; `id` is the listed file.
    AlreadyDone { id: u64 },
}

/// `report.txt` → `report (conflict 2026-11-27 023000).txt`; `n > 1` adds a number inside
/// the parentheses. Hidden names without an extension (`.bashrc`) keep the suffix at the end.
pub fn conflict_name(name: &str, at: DateTime<Utc>, n: u32) -> String {
    let stamp = at.format("%Y-%m-%d %H%M%S");
    let tag = if n > 1 {
        format!("(conflict {stamp} {n})")
    } else {
        format!("(conflict {stamp})")
    };
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => format!("{stem} {tag}.{ext}"),
        _ => format!("{name} {tag}"),
    }
}

/// Decide what to do with `record`, given what the server lists at its target now (`None`:
/// nothing of that name). `parent_gone`: the parent folder itself no longer exists.
pub fn decide(
    record: &JournalRecord,
    remote: Option<&FileEntry>,
    parent_gone: bool,
    now: DateTime<Utc>,
) -> RecoveryAction {
    if parent_gone {
        return RecoveryAction::ConflictCopy {
            parent_id: None,
            name: conflict_name(&record.name, now, 1),
        };
    }
    let Some(e) = remote else {
        return RecoveryAction::Upload { overwrite: false };
    };
    if e.object_type == ObjectType::File && Some(e.id) == record.pending_upload_id {
        if record.state == JournalState::Uploading && e.size == record.size {
            return RecoveryAction::AlreadyDone { id: e.id };
        }
        // Ours, but there were newer writes after it.
        return RecoveryAction::Upload { overwrite: true };
    }
    if record.base.is_some_and(|b| b.matches(e)) {
        return RecoveryAction::Upload { overwrite: true };
    }
    RecoveryAction::ConflictCopy {
        parent_id: record.parent_id,
        name: conflict_name(&record.name, now, 1),
    }
}

/// The version an overwrite may replace, and where: checked just before its `complete`
/// ([`UploadHooks::before_complete`]), by a running file's upload and by recovery alike.
pub(crate) struct Replacing {
    pub(crate) api: Arc<dyn FilesApi>,
    pub(crate) base: RemoteBase,
    /// This file's own earlier attempt (its `complete` may have landed unseen).
    pub(crate) earlier: Option<u64>,
    pub(crate) space: Space,
    pub(crate) parent_id: Option<u64>,
    pub(crate) name: String,
}

impl Replacing {
    /// What an upload to `target` may replace: `base` (and this file's `earlier` attempt), when
    /// it overwrites; `None` for a new name or a conflict copy, which replace nothing.
    pub(crate) fn of_upload(
        api: &Arc<dyn FilesApi>,
        base: Option<RemoteBase>,
        earlier: Option<u64>,
        target: &UploadTarget,
    ) -> Option<Replacing> {
        base.filter(|_| target.overwrite).map(|base| Replacing {
            api: Arc::clone(api),
            base,
            earlier,
            space: target.space,
            parent_id: target.parent_id,
            name: target.name.clone(),
        })
    }

    /// [`Replacing::check`] when there is something to check (an upload hook's answer).
    pub(crate) async fn check_if(replacing: Option<&Replacing>) -> WriteResult<()> {
        match replacing {
            Some(r) => r.check().await,
            None => Ok(()),
        }
    }

    /// The name still holds the version this overwrite started from, the earlier attempt, or
    /// nothing (deleted meanwhile: the upload puts it back); anything else is another client's
    /// version: [`WriteError::ChangedMeanwhile`]. One search listing.
    pub(crate) async fn check(&self) -> WriteResult<()> {
        match find_by_name(
            self.api.as_ref(),
            self.space,
            self.parent_id,
            &self.name,
            None,
        )
        .await?
        {
            Some(e) if self.base.matches(&e) || Some(e.id) == self.earlier => Ok(()),
            None => Ok(()),
            Some(e) => Err(WriteError::ChangedMeanwhile { theirs: e.id }),
        }
    }
}

/// A recovered spool waiting to be uploaded.
#[derive(Debug)]
pub struct PendingUpload {
    dir: Arc<SpoolDir>,
    /// No second recovery (or open file) touches this spool while the upload is pending.
    _claim: SpoolClaim,
    pub record: JournalRecord,
    pub action: RecoveryAction,
}

/// Read every journal record in `dir`, look at the server, and return the spools still to
/// upload with what to do for each. Spools in use in this process (open files, uploads returned
/// by an earlier call and not finished) are skipped, so this may run again while the mount is
/// live, e.g. to retry after the service came back or to pick up the kept spool of a file whose
/// upload failed before it was closed. Records whose upload had in fact completed are cleaned up
/// here. Unreadable records, and records whose target the server refuses to show (machine gone,
/// access denied), are logged and left in place. A transient server error (unreachable, 5xx,
/// throttled) aborts the scan: call again later; nothing is changed for the records not yet
/// decided.
pub async fn recover(dir: &Arc<SpoolDir>, api: &dyn FilesApi) -> WriteResult<Vec<PendingUpload>> {
    let mut pending = Vec::new();
    for id in dir.journaled_ids()? {
        let Some(claim) = dir.claim(&id) else {
            // An open file's spool, or an upload a previous call returned: not ours to decide.
            continue;
        };
        let path = dir.journal_path(&id);
        let record = match JournalRecord::read(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(record = %path.display(), error = %e, "cannot read a journal record; its spool is kept as is");
                continue;
            }
        };
        if record.spool_id != id || !dir.spool_path(&id).exists() {
            tracing::error!(record = %path.display(), "journal record does not match its spool; left in place");
            continue;
        }
        let action = match look_and_decide(api, &record).await {
            Ok(action) => action,
            // The service is unreachable or struggling: the same for every record, so stop
            // and let the caller try the whole recovery again later.
            Err(e) if e.is_retryable() => return Err(e.into()),
            // Specific to this record (its machine is gone, access was revoked, ...): keep
            // it for a later mount and go on with the others.
            Err(e) => {
                tracing::error!(
                    file = %record.display_path, error = %e,
                    "cannot check the target of unsaved changes; kept for a later mount"
                );
                continue;
            }
        };
        match &action {
            RecoveryAction::AlreadyDone { id: remote_id } if record.moved_from.is_none() => {
                tracing::info!(file = %record.display_path, id = remote_id, "upload had completed before the restart; cleaning up");
                forget_spool(dir, &record.spool_id).await?;
                continue;
            }
            RecoveryAction::AlreadyDone { id: remote_id } => {
                // Its run cleans up and reports it landed, so that the caller deletes the
                // object it was moved from.
                tracing::info!(file = %record.display_path, id = remote_id, "a move's upload had completed before the restart");
            }
            RecoveryAction::Upload { overwrite } => {
                tracing::info!(file = %record.display_path, overwrite, "unsaved changes found; will upload");
            }
            RecoveryAction::ConflictCopy { name, .. } => {
                tracing::warn!(
                    file = %record.display_path, conflict_copy = %name,
                    "the remote file changed while these changes were unsaved; uploading them as a conflict copy"
                );
            }
        }
        pending.push(PendingUpload {
            dir: Arc::clone(dir),
            _claim: claim,
            record,
            action,
        });
    }
    Ok(pending)
}

/// What the server holds at `record`'s target now, and so what to do ([`decide`]).
async fn look_and_decide(api: &dyn FilesApi, record: &JournalRecord) -> ApiResult<RecoveryAction> {
    let space = record.space.space();
    let (remote, parent_gone) = match find_by_name(api, space, record.parent_id, &record.name, None)
        .await
    {
        Ok(e) => (e, false),
        Err(e) if e.kind() == ApiErrorKind::NotFound && record.parent_id.is_some() => (None, true),
        Err(e) => return Err(e),
    };
    Ok(decide(record, remote.as_ref(), parent_gone, Utc::now()))
}

/// Remove a spool and its record (its bytes are on the server).
async fn forget_spool(dir: &Arc<SpoolDir>, spool_id: &str) -> WriteResult<()> {
    let dir = Arc::clone(dir);
    let sid = spool_id.to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        JournalRecord::remove(&dir, &sid)?;
        remove_if_exists(&dir.spool_path(&sid))
    })
    .await
    .map_err(join_error)??;
    Ok(())
}

/// A recovered upload that ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub uploaded: Uploaded,
    /// The conflict copy's name, when it went to one.
    pub conflict_copy: Option<String>,
}

/// Journals the id of each create during a recovered upload.
struct RecordHooks {
    dir: Arc<SpoolDir>,
    record: Mutex<JournalRecord>,
    /// Set when the upload replaces a version (see [`Replacing`]).
    replacing: Option<Replacing>,
}

#[async_trait]
impl UploadHooks for RecordHooks {
    async fn created(&self, file_id: u64) -> WriteResult<()> {
        let rec = {
            let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
            r.pending_upload_id = Some(file_id);
            r.updated_at = Utc::now();
            r.clone()
        };
        write_record(&self.dir, rec).await
    }

    async fn before_complete(&self) -> WriteResult<()> {
        Replacing::check_if(self.replacing.as_ref()).await
    }
}

/// [`JournalRecord::write_atomic`] on the blocking pool.
pub(crate) async fn write_record(dir: &Arc<SpoolDir>, rec: JournalRecord) -> WriteResult<()> {
    let dir = Arc::clone(dir);
    tokio::task::spawn_blocking(move || rec.write_atomic(&dir))
        .await
        .map_err(join_error)??;
    Ok(())
}

impl PendingUpload {
    pub fn spool_path(&self) -> PathBuf {
        self.dir.spool_path(&self.record.spool_id)
    }

    /// Where the upload goes.
    pub fn target(&self) -> Option<UploadTarget> {
        let space = self.record.space.space();
        match &self.action {
            RecoveryAction::Upload { overwrite } => Some(UploadTarget {
                space,
                parent_id: self.record.parent_id,
                name: self.record.name.clone(),
                content_type: None,
                overwrite: *overwrite,
            }),
            RecoveryAction::ConflictCopy { parent_id, name } => Some(UploadTarget {
                space,
                parent_id: *parent_id,
                name: name.clone(),
                content_type: None,
                overwrite: false,
            }),
            RecoveryAction::AlreadyDone { .. } => None,
        }
    }

    /// Upload the spool; on success remove its record and spool. On failure both are kept (the
    /// next mount tries again). A conflict copy whose name got taken meanwhile tries the next
    /// numbered name.
    ///
    /// The record's own name is held (one upload per name, see `name_hold.rs`) from a second
    /// look at the server to the upload's end: this run's own upload of that name may have
    /// landed since [`recover`] decided, and must then be kept beside (a conflict copy), never
    /// replaced. Another client's version landed during the transfer is found just before
    /// `complete` ([`Replacing`]), and the bytes go to a conflict copy too.
    pub async fn run(mut self, uploader: &Uploader) -> WriteResult<Recovered> {
        let _name = uploader
            .hold_name(
                self.record.space.space(),
                self.record.parent_id,
                &self.record.name,
            )
            .await;
        let action = look_and_decide(uploader.api().as_ref(), &self.record).await?;
        let same_kind = std::mem::discriminant(&action) == std::mem::discriminant(&self.action);
        if !same_kind {
            tracing::info!(file = %self.record.display_path, before = ?self.action, now = ?action, "the target changed since recovery looked; deciding again");
        }
        // A conflict copy keeps the name recovery announced (only its time stamp would differ).
        if !same_kind || !matches!(action, RecoveryAction::ConflictCopy { .. }) {
            self.action = action;
        }
        if let RecoveryAction::AlreadyDone { id } = self.action {
            forget_spool(&self.dir, &self.record.spool_id).await?;
            return Ok(Recovered {
                uploaded: Uploaded {
                    id,
                    size: self.record.size,
                },
                conflict_copy: None,
            });
        }
        let Some(mut target) = self.target() else {
            return Err(WriteError::Protocol(
                "nothing to upload for a completed record".into(),
            ));
        };
        let source = PartSource::open(&self.spool_path())?;
        let ticket = uploader
            .registry()
            .register(self.record.display_path.clone(), source.len());
        let mut conflict = matches!(self.action, RecoveryAction::ConflictCopy { .. });
        // The crashed run's attempt, which may have completed unseen.
        let earlier = self.record.pending_upload_id;
        let mut n = 1;
        loop {
            // The record now describes this upload: a crash during it is recognised next time
            // (a conflict copy has no base: it is a new file of its own name).
            let mut rec = self.record.clone();
            rec.state = JournalState::Uploading;
            rec.pending_upload_id = None;
            rec.size = source.len();
            rec.updated_at = Utc::now();
            if conflict {
                rec.parent_id = target.parent_id;
                rec.name = target.name.clone();
                rec.base = None;
            }
            write_record(&self.dir, rec.clone()).await?;
            // A conflict copy never overwrites: nothing to check for it.
            let hooks = RecordHooks {
                dir: Arc::clone(&self.dir),
                record: Mutex::new(rec),
                replacing: Replacing::of_upload(uploader.api(), self.record.base, earlier, &target),
            };
            ticket
                .progress()
                .set_display(format!("{} → {}", self.record.display_path, target.name));
            match uploader
                .upload_tracked(source.clone(), &target, &ticket, Some(&hooks))
                .await
            {
                Ok(done) => {
                    tracing::info!(
                        file = %self.record.display_path, uploaded_as = %target.name, id = done.id,
                        "recovered unsaved changes uploaded"
                    );
                    forget_spool(&self.dir, &self.record.spool_id).await?;
                    return Ok(Recovered {
                        uploaded: done,
                        conflict_copy: conflict.then(|| target.name.clone()),
                    });
                }
                Err(WriteError::Api(e))
                    if conflict
                        && e.kind() == ApiErrorKind::AlreadyExists
                        && n < CONFLICT_NAME_TRIES =>
                {
                    n += 1;
                    target.name = conflict_name(&self.record.name, Utc::now(), n);
                    ticket.progress().set_state(UploadState::Queued);
                }
                // Another client landed its version during this upload: keep both.
                Err(WriteError::ChangedMeanwhile { theirs }) if !conflict => {
                    tracing::warn!(file = %self.record.display_path, theirs, "changed on the server by another client during recovery; keeping both");
                    conflict = true;
                    target.overwrite = false;
                    target.name = conflict_name(&self.record.name, Utc::now(), n);
                    ticket.progress().set_state(UploadState::Queued);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// ms since the epoch → `SystemTime` (for tests and callers building bases).
pub fn ms_to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T02:30:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn record(
        base: Option<RemoteBase>,
        state: JournalState,
        pending: Option<u64>,
    ) -> JournalRecord {
        JournalRecord {
            version: JOURNAL_VERSION,
            spool_id: "s".into(),
            space: JournalSpace::Machine { id: 3 },
            parent_id: Some(7),
            name: "report.txt".into(),
            display_path: "report.txt".into(),
            base,
            state,
            generation: 4,
            size: 10,
            pending_upload_id: pending,
            updated_at: at(),
            moved_from: None,
        }
    }

    fn entry(id: u64, size: u64, mtime_ms: Option<i64>) -> FileEntry {
        FileEntry {
            id,
            name: "report.txt".into(),
            object_type: ObjectType::File,
            size,
            content_type: None,
            modified: mtime_ms.map(ms_to_system_time),
            parent_id: Some(7),
        }
    }

    #[test]
    fn conflict_names_keep_the_extension() {
        assert_eq!(
            conflict_name("report.txt", at(), 1),
            "report (conflict 2026-11-27 023000).txt"
        );
        assert_eq!(
            conflict_name("a.tar.gz", at(), 1),
            "a.tar (conflict 2026-11-27 023000).gz"
        );
        assert_eq!(
            conflict_name(".bashrc", at(), 1),
            ".bashrc (conflict 2026-11-27 023000)"
        );
        assert_eq!(
            conflict_name("Makefile", at(), 2),
            "Makefile (conflict 2026-11-27 023000 2)"
        );
    }

    #[test]
    fn decisions() {
        let base = RemoteBase {
            id: 5,
            size: 8,
            mtime_ms: Some(1_000),
        };
        let dirty = record(Some(base), JournalState::Dirty, None);
        // Unchanged remote: overwrite it.
        assert_eq!(
            decide(&dirty, Some(&entry(5, 8, Some(1_000))), false, at()),
            RecoveryAction::Upload { overwrite: true }
        );
        // Unknown time on one side: id and size decide.
        assert_eq!(
            decide(&dirty, Some(&entry(5, 8, None)), false, at()),
            RecoveryAction::Upload { overwrite: true }
        );
        let copy = RecoveryAction::ConflictCopy {
            parent_id: Some(7),
            name: "report (conflict 2026-11-27 023000).txt".into(),
        };
        // Size, time or id changed: conflict copy.
        assert_eq!(
            decide(&dirty, Some(&entry(5, 9, Some(1_000))), false, at()),
            copy
        );
        assert_eq!(
            decide(&dirty, Some(&entry(5, 8, Some(2_000))), false, at()),
            copy
        );
        assert_eq!(
            decide(&dirty, Some(&entry(6, 8, Some(1_000))), false, at()),
            copy
        );
        // Deleted remotely meanwhile: put it back.
        assert_eq!(
            decide(&dirty, None, false, at()),
            RecoveryAction::Upload { overwrite: false }
        );
        // New file, and someone created one of that name meanwhile: conflict copy.
        let new = record(None, JournalState::Dirty, None);
        assert_eq!(decide(&new, Some(&entry(9, 1, None)), false, at()), copy);
        assert_eq!(
            decide(&new, None, false, at()),
            RecoveryAction::Upload { overwrite: false }
        );
        // Our own attempt is listed: done, unless newer writes came after it.
        let up = record(Some(base), JournalState::Uploading, Some(11));
        assert_eq!(
            decide(&up, Some(&entry(11, 10, None)), false, at()),
            RecoveryAction::AlreadyDone { id: 11 }
        );
        let redirtied = record(Some(base), JournalState::Dirty, Some(11));
        assert_eq!(
            decide(&redirtied, Some(&entry(11, 10, None)), false, at()),
            RecoveryAction::Upload { overwrite: true }
        );
        // A folder of that name now: conflict copy.
        let mut folder = entry(5, 8, Some(1_000));
        folder.object_type = ObjectType::Directory;
        assert_eq!(decide(&dirty, Some(&folder), false, at()), copy);
        // Parent folder gone: conflict copy at the root.
        assert_eq!(
            decide(&dirty, None, true, at()),
            RecoveryAction::ConflictCopy {
                parent_id: None,
                name: "report (conflict 2026-11-27 023000).txt".into()
            }
        );
    }

    #[test]
    fn record_round_trips_and_rejects_newer_versions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = SpoolDir::open(tmp.path()).expect("open");
        let rec = record(
            Some(RemoteBase {
                id: 1,
                size: 2,
                mtime_ms: None,
            }),
            JournalState::Uploading,
            Some(4),
        );
        rec.write_atomic(&dir).expect("write");
        let path = JournalRecord::path(&dir, "s");
        assert_eq!(JournalRecord::read(&path).expect("read"), rec);
        let mut newer = rec.clone();
        newer.version = JOURNAL_VERSION + 1;
        newer.write_atomic(&dir).expect("write");
        assert!(matches!(
            JournalRecord::read(&path),
            Err(WriteError::Journal { .. })
        ));
        JournalRecord::remove(&dir, "s").expect("remove");
        assert!(!path.exists());
    }
}
