//! [`SpooledFile::upload`]: one upload of a spooled file, from taking its gate and its name to
//! the record's update once `complete` succeeded.
//!
//! Subtle cases handled here (the order that makes crashes safe is the parent module's note):
//! - the gate, then the name: while the upload only waits for its name, a re-target, an unlink
//!   or a rename onto the file may take the gate (`take_gate`), and a held fate stops it
//!   (`hold_back`); after that wait the file is checked again (`discard` may have run);
//! - an overwrite replaces only the version it started from, checked just before `complete`
//!   ([`FileHooks`]); else the bytes go to a conflict copy beside it (at most
//!   [`CONFLICT_TRIES`] names), and a 409 from this file's own earlier attempt is overwritten;
//! - a truncate during the transfer makes the attempt moot: the bytes as they are now go instead;
//! - once landed: the new base, the objects the upload overwrote (`replaced`, so that an older
//!   listing still shows them as this file), and the record removed only when no write came
//!   meanwhile (a move's record stays until its source's delete is noted).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chrono::Utc;

use crate::api::paging::find_by_name;
use crate::api::{ApiErrorKind, ObjectType};

use super::super::journal::{JournalState, Replacing, conflict_name};
use super::super::uploader::{UploadHooks, UploadTarget, Uploaded, Uploader};
use super::super::{WriteError, WriteResult};
use super::{REPLACED_KEPT, RecordOp, RemoteBase, SpooledFile};

/// Names tried for a conflict copy before giving up (the error is then the 409).
const CONFLICT_TRIES: u32 = 20;

impl SpooledFile {
    /// Upload if dirty. `Ok(None)`: nothing to send. On error the record and spool are kept and
    /// the file stays dirty.
    ///
    /// Conflicts: an overwrite checks that the server still holds the version the spool
    /// started from (one search listing) just before its `complete`, while a small file's one
    /// part is sent or after a bigger file's last part (a check before the transfer let a
    /// version another client landed during it be replaced unseen); if another client changed
    /// or replaced it, the created upload is abandoned and the bytes go to
    /// `name (conflict …).ext` beside it, and so do a new file's when the name was taken by
    /// someone else meanwhile (409; the server checks that at `complete` too). A 409 caused by this file's own earlier attempt (its
    /// `complete` answered too late) is recognised by the attempt's id and overwritten instead.
    pub async fn upload(&self, uploader: &Uploader) -> WriteResult<Option<Uploaded>> {
        if !self.is_dirty() {
            return Ok(None);
        }
        // The gate, then the name: no other upload of this name (recovery of an earlier run's
        // spool) runs between the look at the server below and this upload's end. While it
        // only waits for the name, a re-target, an unlink or a rename onto the file may take
        // the gate (`take_gate`): then the name the file has after it is waited for.
        let (_gate, _name) = loop {
            let gate = self.upload_gate.lock().await;
            let (space, parent_id, name) = {
                let m = self.meta();
                // Another handle's flush uploaded it while this one waited; or an unlink or a
                // rename onto it is deciding (it uploads again if the file keeps its name).
                if !m.dirty || m.discarded || self.held_back.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                (m.target.space, m.target.parent_id, m.target.name.clone())
            };
            tokio::select! {
                biased;
                hold = uploader.hold_name(space, parent_id, &name) => break (gate, hold),
                () = self.regate.notified() => drop(gate),
            }
        };
        // Registered only once the gate is ours: a flush waiting behind this file's running
        // upload (a second handle, `flush_all` at unmount) must not list the file twice.
        let ticket = uploader
            .registry()
            .register(self.target().display_path, self.len());
        let (mut target, mut generation, mut source, base, earlier) = {
            let mut m = self.meta();
            if !m.dirty || m.discarded {
                return Ok(None);
            }
            let generation = self.spool.generation();
            let source = self.spool.part_source();
            // Journaled together with the id once `POST /files` answers (see `FileHooks`):
            // until then the record's `dirty` already makes recovery upload it.
            m.record = Some(JournalState::Uploading);
            let earlier = m.pending_upload_id.take();
            let target = UploadTarget {
                space: m.target.space,
                parent_id: m.target.parent_id,
                name: m.target.name.clone(),
                content_type: None,
                overwrite: m.base.is_some(),
            };
            (target, generation, source, m.base, earlier)
        };
        let own_name = target.name.clone();
        let api = Arc::clone(uploader.api());
        // Conflict names used so far, and passes through the loop below (bounded).
        let mut conflicts = 0u32;
        let mut passes = 0u32;
        let done = loop {
            passes += 1;
            // An overwrite replaces only the version it started from (or this file's own
            // earlier attempt): checked just before `complete`, not before the transfer, so a
            // client that lands its version meanwhile is not overwritten unseen.
            let hooks = FileHooks {
                file: self,
                replacing: Replacing::of_upload(&api, base, earlier, &target),
            };
            let result = uploader
                .upload_tracked(source.clone(), &target, &ticket, Some(&hooks))
                .await;
            let taken = match result {
                Ok(done) => break done,
                Err(WriteError::ChangedMeanwhile { theirs }) if passes <= CONFLICT_TRIES => {
                    tracing::warn!(file = %own_name, theirs, "changed on the server by another client since it was opened; keeping both");
                    true
                }
                // The spool changed while this attempt read it (a truncate made it shorter than
                // the length the attempt started with): that attempt is moot (never completed),
                // so the bytes as they are now go instead, at once. A failure of the spool
                // itself fails again below, with the generation unchanged.
                Err(WriteError::Io(e))
                    if self.spool.generation() != generation && passes <= CONFLICT_TRIES =>
                {
                    let mut m = self.meta();
                    if m.discarded {
                        return Err(WriteError::Io(e));
                    }
                    tracing::debug!(file = %own_name, error = %e, "changed while uploading; sending the new bytes");
                    // As at the start: these bytes are what this upload now sends.
                    m.record = Some(JournalState::Uploading);
                    generation = self.spool.generation();
                    source = self.spool.part_source();
                    false
                }
                Err(WriteError::Api(e))
                    if e.kind() == ApiErrorKind::AlreadyExists && passes <= CONFLICT_TRIES =>
                {
                    let there = find_by_name(
                        api.as_ref(),
                        target.space,
                        target.parent_id,
                        &target.name,
                        None,
                    )
                    .await
                    .map_err(WriteError::from)?;
                    match there {
                        // Our own earlier attempt landed after all: replace it.
                        Some(f) if f.object_type == ObjectType::File && Some(f.id) == earlier => {
                            target.overwrite = true;
                            false
                        }
                        Some(_) => {
                            if conflicts == 0 {
                                tracing::warn!(file = %own_name, "the name was taken on the server meanwhile; keeping both");
                            }
                            true
                        }
                        // Gone again: try the same name once more.
                        None => false,
                    }
                }
                Err(e) => return Err(e),
            };
            if taken {
                conflicts += 1;
                target.overwrite = false;
                target.name = conflict_name(&own_name, Utc::now(), conflicts);
            }
            ticket
                .progress()
                .set_state(super::super::progress::UploadState::Queued);
        };
        if target.name != own_name {
            tracing::warn!(file = %own_name, saved_as = %target.name, "conflict: this mount's version was saved under another name");
        }
        let op = {
            let mut m = self.meta();
            if target.overwrite {
                let gone = base.map(|b| b.id).into_iter().chain(earlier);
                for id in gone.filter(|id| *id != done.id) {
                    m.replaced.push(id);
                }
                let over = m.replaced.len().saturating_sub(REPLACED_KEPT);
                m.replaced.drain(..over);
            }
            m.base = Some(RemoteBase {
                id: done.id,
                size: source.len(),
                mtime_ms: None,
            });
            m.pending_upload_id = None;
            if target.name != m.target.name {
                // A conflict copy: later uploads of this file go there too.
                m.conflict_copy = true;
                m.target.display_path = match m.target.display_path.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{}", target.name),
                    None => target.name.clone(),
                };
                m.target.name = target.name.clone();
            }
            if m.discarded {
                None
            } else if self.spool.generation() == generation
                && m.record == Some(JournalState::Uploading)
                && m.moved_from.is_some()
            {
                // A move's upload: the record (`uploading` with this attempt's id, so recovery
                // knows it landed) stays until the source's delete is noted, so that a crash
                // in between still deletes it ([`Self::move_source_noted`]).
                m.dirty = false;
                None
            } else if self.spool.generation() == generation
                && m.record == Some(JournalState::Uploading)
            {
                m.dirty = false;
                m.record = None;
                Some(self.next_op(&mut m, RecordOp::Remove))
            } else {
                // Written to while uploading: the newer bytes go next time.
                m.record = Some(JournalState::Dirty);
                let rec = self.record_of(&m);
                Some(self.next_op(&mut m, RecordOp::Write(Box::new(rec))))
            }
        };
        if let Some(op) = op {
            // The upload itself succeeded: a journal hiccup now must not fail close(2). A stale
            // record only costs a redundant upload (or, when it says `uploading` with this
            // attempt's id, nothing) at the next mount.
            if let Err(e) = self.apply(op).await {
                tracing::warn!(file = %target.name, error = %e, "upload done but its journal record could not be updated");
            }
        }
        Ok(Some(done))
    }
}

/// Journals each create's id for [`SpooledFile::upload`], and checks an overwrite's target
/// before `complete`.
struct FileHooks<'a> {
    file: &'a SpooledFile,
    /// Set when the attempt replaces a version: what the name may hold for it to go ahead.
    replacing: Option<Replacing>,
}

#[async_trait]
impl UploadHooks for FileHooks<'_> {
    async fn created(&self, file_id: u64) -> WriteResult<()> {
        let op = {
            let mut m = self.file.meta();
            if m.discarded {
                return Ok(());
            }
            m.pending_upload_id = Some(file_id);
            let rec = self.file.record_of(&m);
            self.file.next_op(&mut m, RecordOp::Write(Box::new(rec)))
        };
        self.file.apply(op).await
    }

    async fn before_complete(&self) -> WriteResult<()> {
        Replacing::check_if(self.replacing.as_ref()).await
    }
}
