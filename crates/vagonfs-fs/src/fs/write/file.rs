//! [`SpooledFile`]: one written file's spool, journal record and upload, sequenced.
//!
//! The core keeps one `Arc<SpooledFile>` per written inode, shared by its open handles. This type
//! enforces the order that makes crashes safe, so the core cannot get it wrong:
//! - a mutation first completes the spool's lazy fill, then changes the bytes, then makes sure
//!   the record says `dirty` (one atomic journal write on the first change, none after);
//! - an upload journals `uploading` together with the id `POST /files` answered (before any
//!   part is sent; until then `dirty` already says "upload me"), and removes the record only
//!   after `complete` succeeded *and* no write happened meanwhile (generation check); otherwise
//!   the record goes back to `dirty` and the next flush sends the newer bytes;
//! - uploads of one file are serialized (an async gate), so two handles closing at once produce
//!   one upload, and the second finds the file clean; under the gate, the upload also holds its
//!   remote name (`name_hold.rs`) from its look at the server to its end, so recovery of an
//!   earlier run's spool for the same name cannot run beside it. These two are the only locks
//!   held across `.await`, always taken in that order. An upload that holds the gate only to
//!   wait for its name gives the gate up when a re-target (a rename), an unlink or a rename
//!   onto the file asks for it (`take_gate`), then waits for the name the file has after it,
//!   or stops while its fate is held (`hold_back`): none of them waits on a name held by a
//!   delete (retried forever through an outage) or by a hold that waits for them;
//! - record writes can be issued from several tasks; each carries a sequence number and an
//!   older one never overwrites a newer one (nor resurrects a removed record).
//!
//! One upload, from its gate to its record's update, is `file/upload.rs`.
//!
//! Dropping the last `Arc`: a clean spool's file is removed; a dirty one is kept with its record
//! for [`super::recover`] at the next mount (e.g. after a failed upload: ENOSPC, network).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use chrono::Utc;

use crate::api::Space;

use super::journal::{
    JOURNAL_VERSION, JournalRecord, JournalSpace, JournalState, MovedFrom, RemoteBase,
};
use super::remote::RemoteBytes;
use super::spool::{Spool, SpoolDir, remove_if_exists};
use super::{WriteResult, join_error};

/// Where a spooled file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    /// `Shared` or `Machine(id)`.
    pub space: Space,
    /// `None`: the root of the space.
    pub parent_id: Option<u64>,
    pub name: String,
    /// For logs and `status` (e.g. `Projects/report.txt`).
    pub display_path: String,
}

#[derive(Debug)]
struct Meta {
    target: FileTarget,
    space: JournalSpace,
    base: Option<RemoteBase>,
    dirty: bool,
    /// What the record says once the last op issued (`seq`) is applied (`None`: no record).
    record: Option<JournalState>,
    pending_upload_id: Option<u64>,
    /// Sequence of the last record write issued.
    seq: u64,
    /// Unlinked: never journal or upload again.
    discarded: bool,
    /// Last local change of the bytes (what getattr shows while the file is open).
    modified: SystemTime,
    /// Last change of the bytes, on the monotonic clock (unlike `modified`, never set by a
    /// user): the engine waits for writes through an open handle to pause.
    changed_at: std::time::Instant,
    /// An upload went to a conflict copy beside `target`'s old name (see [`SpooledFile::upload`]);
    /// cleared by a rename (re-target).
    conflict_copy: bool,
    /// A move's source, to delete once this file landed (kept in the record).
    moved_from: Option<MovedFrom>,
    /// Objects this file's own uploads overwrote, latest last (at most [`REPLACED_KEPT`]): a
    /// listing fetched before such an upload landed still shows them, as this file.
    replaced: Vec<u64>,
}

/// Overwritten objects a [`SpooledFile`] remembers.
const REPLACED_KEPT: usize = 4;

/// The sequence of the last record change applied on disk.
#[derive(Debug, Default)]
struct JournalIo {
    applied: u64,
}

/// One written file: spool + journal + upload.
pub struct SpooledFile {
    dir: Arc<SpoolDir>,
    spool: Spool,
    meta: Mutex<Meta>,
    journal_io: Arc<Mutex<JournalIo>>,
    upload_gate: tokio::sync::Mutex<()>,
    /// A re-target waits for the upload gate: an upload still waiting for its name lets go of
    /// the gate when told here, and waits again after (for the name the file has then).
    regate: tokio::sync::Notify,
    /// An unlink of the file or a rename onto it is deciding its fate: no upload starts (one
    /// sending goes on; the deciding operation waits for it).
    held_back: AtomicBool,
    /// Serializes appends (length read + write) across handles.
    append_gate: tokio::sync::Mutex<()>,
    removed: AtomicBool,
}

impl std::fmt::Debug for SpooledFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpooledFile")
            .field("spool", &self.spool)
            .field("meta", &*self.meta())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One record change to apply.
enum RecordOp {
    Write(Box<JournalRecord>),
    Remove,
}

impl SpooledFile {
    /// A new file (`create`): empty, and dirty at once, so closing it without a write still
    /// creates the empty remote file.
    pub async fn create_new(
        dir: &Arc<SpoolDir>,
        target: FileTarget,
    ) -> WriteResult<Arc<SpooledFile>> {
        let f = Self::build(dir, target, None, Spool::create(dir)?, SystemTime::now())?;
        f.note_mutation(true).await?;
        Ok(f)
    }

    /// An existing file opened with `O_TRUNC`: empty, dirty, replacing `base` on upload.
    pub async fn create_truncated(
        dir: &Arc<SpoolDir>,
        target: FileTarget,
        base: RemoteBase,
    ) -> WriteResult<Arc<SpooledFile>> {
        let f = Self::build(
            dir,
            target,
            Some(base),
            Spool::create(dir)?,
            SystemTime::now(),
        )?;
        f.note_mutation(true).await?;
        Ok(f)
    }

    /// An existing file opened for writing without `O_TRUNC`: clean; its bytes are copied from
    /// `source` when the first mutation needs them.
    pub fn open_existing(
        dir: &Arc<SpoolDir>,
        target: FileTarget,
        base: RemoteBase,
        source: Arc<dyn RemoteBytes>,
    ) -> WriteResult<Arc<SpooledFile>> {
        let spool = Spool::create_lazy(dir, base.size, source)?;
        // Unchanged so far: the server's time until the first write.
        let modified = base.mtime().unwrap_or_else(SystemTime::now);
        Self::build(dir, target, Some(base), spool, modified)
    }

    fn build(
        dir: &Arc<SpoolDir>,
        target: FileTarget,
        base: Option<RemoteBase>,
        spool: Spool,
        modified: SystemTime,
    ) -> WriteResult<Arc<SpooledFile>> {
        let space = match JournalSpace::from_space(target.space) {
            Ok(s) => s,
            Err(e) => {
                // Nothing will ever use it: do not leave the fresh spool behind.
                let _ = spool.remove();
                return Err(e);
            }
        };
        Ok(Arc::new(SpooledFile {
            dir: Arc::clone(dir),
            spool,
            meta: Mutex::new(Meta {
                target,
                space,
                base,
                dirty: false,
                record: None,
                pending_upload_id: None,
                seq: 0,
                discarded: false,
                modified,
                changed_at: std::time::Instant::now(),
                conflict_copy: false,
                moved_from: None,
                replaced: Vec::new(),
            }),
            journal_io: Arc::new(Mutex::new(JournalIo::default())),
            upload_gate: tokio::sync::Mutex::new(()),
            regate: tokio::sync::Notify::new(),
            held_back: AtomicBool::new(false),
            append_gate: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
        }))
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        lock(&self.meta)
    }

    pub fn len(&self) -> u64 {
        self.spool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spool.is_empty()
    }

    /// Changed since the last successful upload (or never uploaded).
    pub fn is_dirty(&self) -> bool {
        self.meta().dirty
    }

    pub fn target(&self) -> FileTarget {
        self.meta().target.clone()
    }

    /// The storage the file goes to (cheaper than `target().space`).
    pub fn space(&self) -> crate::api::Space {
        self.meta().target.space
    }

    /// When the bytes last changed locally (or the server's time for an opened, unchanged file).
    pub fn modified(&self) -> SystemTime {
        self.meta().modified
    }

    /// How long ago its bytes last changed here.
    pub fn since_change(&self) -> std::time::Duration {
        self.meta().changed_at.elapsed()
    }

    /// utimensat(2): the local modification time until the next change. The server sets its
    /// own time at upload; this only shapes what getattr shows meanwhile.
    pub fn set_modified(&self, t: SystemTime) {
        self.meta().modified = t;
    }

    /// The remote file the next upload replaces (after an upload: the uploaded file).
    pub fn base(&self) -> Option<RemoteBase> {
        self.meta().base
    }

    /// `visit(id)` for each object this file's uploads overwrote, latest last (a few): an
    /// older listing may still show one of them under the file's name (see `landing.rs`).
    pub fn each_replaced(&self, mut visit: impl FnMut(u64)) {
        self.meta().replaced.iter().for_each(|id| visit(*id));
    }

    /// Bumped by every write and `set_len`.
    pub fn generation(&self) -> u64 {
        self.spool.generation()
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Write `data` at `offset`. Returns the byte count written (all of it).
    pub async fn write(&self, offset: u64, data: impl Into<Vec<u8>>) -> WriteResult<u32> {
        let data = data.into();
        let n = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "write larger than 4 GiB")
        })?;
        self.spool.write(offset, data).await?;
        self.note_mutation(true).await?;
        Ok(n)
    }

    /// Write `data` at the end (`O_APPEND`), atomically with respect to every other append of
    /// this file, whichever handle it comes through.
    pub async fn append(&self, data: impl Into<Vec<u8>>) -> WriteResult<u32> {
        let data = data.into();
        let n = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "write larger than 4 GiB")
        })?;
        {
            let _append = self.append_gate.lock().await;
            // The length is only known once the remote bytes are in.
            self.spool.ensure_filled().await?;
            self.spool.write(self.spool.len(), data).await?;
        }
        self.note_mutation(true).await?;
        Ok(n)
    }

    /// Wait until no upload of this file is sending (the per-file upload order: an unlink or a
    /// rename of the name waits here instead of racing the upload). One that only waits for its
    /// name gives the gate up ([`Self::take_gate`]) and waits again after (or stops, when
    /// [`Self::hold_back`] says so).
    pub async fn wait_idle(&self) {
        drop(self.take_gate().await);
    }

    /// An unlink of the file or a rename onto it is deciding its fate (`true`): no upload
    /// starts until it is given back (`false`).
    pub fn hold_back(&self, held: bool) {
        self.held_back.store(held, Ordering::SeqCst);
    }

    /// The upload gate, for a change of the file's target or fate: an upload that holds it
    /// only to wait for its name (held by a delete of an earlier file of that name, or by a
    /// move that has not landed) is told to give it up, so the change never waits on that name
    /// (a move or an unlink would hang behind an unrelated delete retried through an outage,
    /// or behind a hold that waits for this very move).
    async fn take_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        if let Ok(gate) = self.upload_gate.try_lock() {
            return gate;
        }
        // A permit stored for an upload that is sending (not waiting for its name) costs the
        // next upload one more turn of its loop, nothing else.
        self.regate.notify_one();
        self.upload_gate.lock().await
    }

    /// Whether an upload of this file is running now.
    pub fn is_uploading(&self) -> bool {
        self.upload_gate.try_lock().is_err()
    }

    /// Whether some bytes of this file reached the server from here, or it started from a
    /// server file (a file with a base is replaced by its uploads; one without is new).
    pub fn has_base(&self) -> bool {
        self.meta().base.is_some()
    }

    /// Note that a move left the object these bytes came from under its old name (deleted
    /// once this file landed). Set before [`Self::retarget`], whose record write carries it.
    pub fn set_moved_from(&self, from: Option<MovedFrom>) {
        self.meta().moved_from = from;
    }

    /// Whether a move answered before this file landed still has to delete the object it
    /// left under `parent_id`/`name`.
    pub fn moved_from_is(&self, parent_id: Option<u64>, name: &str) -> bool {
        self.meta()
            .moved_from
            .as_ref()
            .is_some_and(|f| f.parent_id == parent_id && f.name == name)
    }

    /// The move's source still to delete, taken (the file landed, or was removed).
    pub fn take_moved_from(&self) -> Option<MovedFrom> {
        self.meta().moved_from.take()
    }

    /// The delete of the move's source is noted (in the deletes' log) after this file's upload
    /// landed: the record the upload kept for it goes, unless a write made the file dirty
    /// again (then the record says so, without the source).
    pub async fn move_source_noted(&self) -> WriteResult<()> {
        let op = {
            let mut m = self.meta();
            if m.dirty
                || m.discarded
                || m.moved_from.is_some()
                || m.record != Some(JournalState::Uploading)
            {
                None
            } else {
                m.record = None;
                Some(self.next_op(&mut m, RecordOp::Remove))
            }
        };
        if let Some(op) = op {
            self.apply(op).await?;
        }
        Ok(())
    }

    /// Whether its name is a conflict copy's that an upload chose (not a rename): the bytes
    /// went beside the name the user gave, because another client changed or took it.
    pub fn is_conflict_copy(&self) -> bool {
        self.meta().conflict_copy
    }

    /// Read up to `size` bytes at `offset` (read-after-write sees the spool).
    pub async fn read(&self, offset: u64, size: u32) -> WriteResult<Bytes> {
        self.spool.read(offset, size).await
    }

    /// `truncate(2)` / `ftruncate(2)`.
    pub async fn set_len(&self, len: u64) -> WriteResult<()> {
        self.spool.set_len(len).await?;
        self.note_mutation(true).await
    }

    /// Make the file need an upload without changing its bytes (copies the remote bytes in
    /// first when needed): used for a rename of a file that has no local changes.
    pub async fn mark_dirty(&self) -> WriteResult<()> {
        self.spool.ensure_filled().await?;
        self.note_mutation(false).await
    }

    /// fsync(2) of the spool file (local durability; the upload is [`SpooledFile::upload`]).
    pub async fn sync_local(&self) -> WriteResult<()> {
        self.spool.sync().await
    }

    /// Point the file at a new name/folder (rename) and, when given, a new base (the file that
    /// the rename replaces). Marks it dirty: the bytes must appear under the new name. The
    /// caller deletes the old remote file (the base returned) after the upload.
    ///
    /// Returns the target and base it replaced, as they were once any upload in flight ended:
    /// that upload may have put the bytes on the server under the old name meanwhile.
    pub async fn retarget(
        &self,
        target: FileTarget,
        base: Option<RemoteBase>,
    ) -> WriteResult<(FileTarget, Option<RemoteBase>)> {
        let space = JournalSpace::from_space(target.space)?;
        self.spool.ensure_filled().await?;
        // Ordered after an upload that started since the caller's `wait_idle` (the engine's
        // worker may start one at any await): it lands under the old name and its bookkeeping
        // reads the old target; the next upload goes to the new one. Never both at once. One
        // still waiting for its name gives the gate up (it has sent nothing).
        let _gate = self.take_gate().await;
        let previous = self.point_at(target, base, space);
        self.note_mutation(false).await?;
        Ok(previous)
    }

    /// Undo [`SpooledFile::retarget`] after a failed move: point back at `target` and `base`,
    /// unless an upload under the new name landed since (its base is no longer `moved_base`,
    /// the one the move set): then the move happened, nothing changes, and the landed base is
    /// returned.
    pub async fn retarget_back(
        &self,
        target: FileTarget,
        base: Option<RemoteBase>,
        moved_base: Option<RemoteBase>,
    ) -> WriteResult<Option<RemoteBase>> {
        let space = JournalSpace::from_space(target.space)?;
        let _gate = self.take_gate().await;
        {
            let m = self.meta();
            if m.base != moved_base && !m.discarded {
                return Ok(m.base);
            }
        }
        self.point_at(target, base, space);
        self.note_mutation(false).await?;
        Ok(None)
    }

    /// Point at `target`/`base`, dirty (the caller holds the upload gate and writes the
    /// record). Returns the target and base replaced.
    fn point_at(
        &self,
        target: FileTarget,
        base: Option<RemoteBase>,
        space: JournalSpace,
    ) -> (FileTarget, Option<RemoteBase>) {
        let mut m = self.meta();
        let previous = (
            std::mem::replace(&mut m.target, target),
            std::mem::replace(&mut m.base, base),
        );
        m.conflict_copy = false;
        m.space = space;
        // A pending id names a file under the old name: no longer proof of anything.
        m.pending_upload_id = None;
        m.dirty = true;
        // Force a record write even if it already said dirty.
        m.record = None;
        previous
    }

    /// The file was unlinked: drop its record and spool file; the handle keeps working on the
    /// open descriptor, but nothing is journaled or uploaded any more.
    pub async fn discard(&self) -> WriteResult<()> {
        let op = {
            let mut m = self.meta();
            m.discarded = true;
            m.dirty = false;
            m.record
                .take()
                .map(|_| self.next_op(&mut m, RecordOp::Remove))
        };
        if let Some(op) = op {
            self.apply(op).await?;
        }
        self.removed.store(true, Ordering::Release);
        self.spool.remove()
    }

    /// After a change: dirty, and the record says so (written only when it did not already).
    /// `touch`: the bytes changed (not just where they go).
    async fn note_mutation(&self, touch: bool) -> WriteResult<()> {
        // New bytes in the spool: the next group commit makes them durable.
        self.dir.note_unsynced();
        let op = {
            let mut m = self.meta();
            if touch {
                m.modified = SystemTime::now();
                m.changed_at = std::time::Instant::now();
            }
            if m.discarded {
                return Ok(());
            }
            m.dirty = true;
            // Already `dirty` on disk: nothing to write. Said by the last record op issued, but
            // that op may still be on its way (another task's, e.g. an upload's bookkeeping
            // after a write raced it): returning before it is applied would let a crash keep
            // the older record, and recovery would take the old bytes as landed. Then this
            // change writes its own (the later sequence wins).
            if m.record == Some(JournalState::Dirty) && self.journal_applied() >= m.seq {
                return Ok(());
            }
            m.record = Some(JournalState::Dirty);
            let rec = self.record_of(&m);
            self.next_op(&mut m, RecordOp::Write(Box::new(rec)))
        };
        let seq = op.0;
        let result = self.apply(op).await;
        if result.is_err() {
            // The record is not on disk: the next mutation must try to write it again (the
            // bytes are dirty either way).
            let mut m = self.meta();
            if m.seq == seq && m.record == Some(JournalState::Dirty) {
                m.record = None;
            }
        }
        result
    }

    fn record_of(&self, m: &Meta) -> JournalRecord {
        JournalRecord {
            version: JOURNAL_VERSION,
            spool_id: self.spool.id().to_string(),
            space: m.space,
            parent_id: m.target.parent_id,
            name: m.target.name.clone(),
            display_path: m.target.display_path.clone(),
            base: m.base,
            state: m.record.unwrap_or(JournalState::Dirty),
            generation: self.spool.generation(),
            size: self.spool.len(),
            pending_upload_id: m.pending_upload_id,
            updated_at: Utc::now(),
            moved_from: m.moved_from.clone(),
        }
    }

    /// The sequence of the last record op on disk (lock order: `meta`, then `journal_io`).
    fn journal_applied(&self) -> u64 {
        lock(&self.journal_io).applied
    }

    fn next_op(&self, m: &mut Meta, op: RecordOp) -> (u64, RecordOp) {
        m.seq += 1;
        (m.seq, op)
    }

    /// Apply a record change on the blocking pool, unless a newer one was applied already.
    async fn apply(&self, (seq, op): (u64, RecordOp)) -> WriteResult<()> {
        let dir = Arc::clone(&self.dir);
        let io = Arc::clone(&self.journal_io);
        let id = self.spool.id().to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut io = lock(&io);
            if seq <= io.applied {
                return Ok(());
            }
            match op {
                RecordOp::Write(rec) => rec.write_atomic(&dir)?,
                RecordOp::Remove => JournalRecord::remove(&dir, &id)?,
            }
            io.applied = seq;
            Ok(())
        })
        .await
        .map_err(join_error)??;
        Ok(())
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        let m = lock(&self.meta);
        if m.dirty && m.record.is_some() {
            tracing::warn!(
                file = %m.target.display_path, spool = %self.spool.path().display(),
                "closing a file whose changes are not uploaded; kept for recovery at the next mount"
            );
            return;
        }
        // Clean (or never journaled): the spool has nothing the server lacks.
        if let Err(e) = remove_if_exists(self.spool.path()) {
            tracing::warn!(spool = %self.spool.path().display(), error = %e, "cannot remove a clean spool");
        }
    }
}

mod upload;

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
