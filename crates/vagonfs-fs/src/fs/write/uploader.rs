//! The multipart uploader: `POST /files` → parallel part `PUT`s → `POST /files/{id}/complete`.
//!
//! [`Uploader::upload`] sends the bytes of a [`PartSource`] (a spool file and the length to
//! send) as one remote file. Parts are read from disk only when their turn comes and at most
//! `concurrency` part futures exist at once, so at most `concurrency` parts are ever in memory
//! per upload (`concurrency × chunk` bytes; 64 MiB with the defaults). Across all uploads of one
//! uploader (its clones share it), part buffers come out of one memory budget counted in bytes
//! ([`DEFAULT_PART_MEMORY`]): eight large files uploading at once hold no more part memory than
//! one, while thousands of small files are not held back by a count of parts (a 4 KiB part takes
//! a 4 KiB share).
//!
//! Subtle cases:
//! - The part count comes from the *server's* answer: `chunk_size` may be changed by the server,
//!   and the number of URLs must equal `max(1, ceil(size / chunk))` or the upload stops with a
//!   protocol error before a byte is sent. A 0-byte file is one empty part (or none, when the
//!   server answers no URL for it).
//! - A part URL refused (expired or invalid presigned link) restarts the whole upload from
//!   create, once ([`LINK_RESTARTS`]); other part errors were already retried by
//!   `FilesApi::upload_part` and fail the upload.
//! - The first failing part cancels the others (their futures are dropped); the abandoned
//!   upload is never completed, so the server never lists it.
//! - `chunk_size` is in MB per the API; like the emulator we treat it as MiB.
//! - Dropping the future at any point leaves nothing marked done: the caller's journal decides.
//! - A `complete` that fails without a definite answer (timeout, transport error, 5xx) is
//!   resolved by looking the attempt's id up in its folder: listed means done.
//! - Presigned URLs are never logged (they carry signatures).
//! - A part larger than the whole budget (a server-chosen chunk size) takes the whole budget,
//!   so it waits for the others instead of waiting forever.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::api::paging::find_by_name;
use crate::api::{ApiErrorKind, CompletedPart, CreateRequest, FilesApi, ObjectType, Space};

use super::content_type::guess_content_type;
use super::name_hold::{NameHold, UploadNames};
use super::progress::{UploadProgress, UploadRegistry, UploadState, UploadTicket};
use super::{WriteError, WriteResult, join_error};

/// One MiB: the unit of the API's `chunk_size` (documented as MB; the emulator uses MiB).
pub const MIB: u64 = 1024 * 1024;
/// Default part size, MiB: large enough to keep per-request overhead small, small enough that
/// `concurrency` parts in memory stay modest.
pub const DEFAULT_CHUNK_SIZE_MB: u64 = 16;
/// Default number of parts in flight (and in memory) per upload.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default cap on the bytes of part buffers alive across all the uploads of one [`Uploader`]
/// (and its clones): one upload's worth (`DEFAULT_CONCURRENCY` parts of the default chunk), so
/// many files closed at once cannot pile up `files × concurrency` parts. Measured: 8 files of
/// 128 MiB uploading at once held 11–16 parts (209–273 MiB of daemon RSS) under the former
/// count of 16 parts.
pub const DEFAULT_PART_MEMORY: u64 = DEFAULT_CONCURRENCY as u64 * DEFAULT_CHUNK_SIZE_MB * MIB;
/// The unit of the part memory budget's permits (a tokio semaphore counts in `u32`).
const BUDGET_UNIT: u64 = 1024;
/// How many times an upload starts again from create after a part link was refused.
pub const LINK_RESTARTS: u32 = 1;

/// Bytes to upload: an open file and how many of its first bytes to send.
#[derive(Debug, Clone)]
pub struct PartSource {
    file: Arc<File>,
    len: u64,
}

impl PartSource {
    pub(crate) fn new(file: Arc<File>, len: u64) -> PartSource {
        PartSource { file, len }
    }

    /// The whole file at `path`, at its current length.
    pub fn open(path: &Path) -> std::io::Result<PartSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(PartSource {
            file: Arc::new(file),
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read `[offset, offset + len)` into a new buffer (on the blocking pool).
    async fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
        .map_err(join_error)?
    }
}

/// Where an upload goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    /// `Shared` or `Machine(id)`; recordings are read-only.
    pub space: Space,
    /// The parent folder; `None` is the root of the space.
    pub parent_id: Option<u64>,
    pub name: String,
    /// `None`: guessed from the name's extension.
    pub content_type: Option<String>,
    /// Replace a file of that name (otherwise the server answers 409 when one exists).
    pub overwrite: bool,
}

/// A completed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The id of the new remote file.
    pub id: u64,
    pub size: u64,
}

/// Largest upload whose check before `complete` ([`UploadHooks::before_complete`]) runs while
/// its part is sent (1 MiB: about a round trip's transfer on a common link).
const CHECK_OVERLAP_MAX: u64 = 1 << 20;

/// Told about steps of an upload, e.g. to journal the id of the file being created.
#[async_trait]
pub trait UploadHooks: Send + Sync {
    /// `POST /files` answered `file_id` (called once per attempt, before any part is sent).
    async fn created(&self, file_id: u64) -> WriteResult<()>;

    /// May this attempt now replace what its name holds? Asked as late as possible before
    /// `complete` (while the only part is sent, or once every part is): an `Err` abandons the
    /// attempt, which is never completed, so nothing on the server is replaced.
    async fn before_complete(&self) -> WriteResult<()> {
        Ok(())
    }
}

/// Uploads files in parts, with bounded parallelism.
#[derive(Clone)]
pub struct Uploader {
    api: Arc<dyn FilesApi>,
    chunk_size_mb: u64,
    concurrency: usize,
    /// The part memory budget, in [`BUDGET_UNIT`]s.
    budget_units: u32,
    /// Shared by clones: one permit per [`BUDGET_UNIT`] of part buffer alive.
    parts_budget: Arc<Semaphore>,
    registry: Arc<UploadRegistry>,
    /// Shared by clones: the remote names being uploaded (one upload per name).
    names: Arc<UploadNames>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("chunk_size_mb", &self.chunk_size_mb)
            .field("concurrency", &self.concurrency)
            .field("part_memory", &(u64::from(self.budget_units) * BUDGET_UNIT))
            .finish()
    }
}

/// Why one attempt stopped.
enum AttemptError {
    /// A part link was refused: worth one fresh create.
    LinkRefused(WriteError),
    Fatal(WriteError),
}

impl From<WriteError> for AttemptError {
    fn from(e: WriteError) -> Self {
        match &e {
            WriteError::Api(a) if a.kind() == ApiErrorKind::LinkRefused => {
                AttemptError::LinkRefused(e)
            }
            _ => AttemptError::Fatal(e),
        }
    }
}

impl Uploader {
    /// An uploader with the default chunk size and concurrency, reporting to `registry`.
    pub fn new(api: Arc<dyn FilesApi>, registry: Arc<UploadRegistry>) -> Uploader {
        Uploader {
            api,
            chunk_size_mb: DEFAULT_CHUNK_SIZE_MB,
            concurrency: DEFAULT_CONCURRENCY,
            budget_units: 0,
            parts_budget: Arc::new(Semaphore::new(0)),
            registry,
            names: Arc::default(),
        }
        .with_part_memory(DEFAULT_PART_MEMORY)
    }

    /// Bytes of part buffers allowed across all uploads at once (at least 1 KiB, at most
    /// 4 TiB). Clones made after this share the budget.
    pub fn with_part_memory(mut self, bytes: u64) -> Uploader {
        self.budget_units = u32::try_from((bytes / BUDGET_UNIT).max(1)).unwrap_or(u32::MAX);
        self.parts_budget = Arc::new(Semaphore::new(self.budget_units as usize));
        self
    }

    /// Part size to ask for, MiB (at least 1).
    pub fn with_chunk_size_mb(mut self, mb: u64) -> Uploader {
        self.chunk_size_mb = mb.max(1);
        self
    }

    /// Parts in flight per upload (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Uploader {
        self.concurrency = n.max(1);
        self
    }

    pub fn chunk_size_mb(&self) -> u64 {
        self.chunk_size_mb
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The part memory budget, bytes.
    pub fn part_memory(&self) -> u64 {
        u64::from(self.budget_units) * BUDGET_UNIT
    }

    /// Permits a part of `len` bytes takes: its size in units, rounded up, at least 1, and at
    /// most the whole budget (so a part larger than the budget waits for the others, not
    /// forever).
    fn units_for(&self, len: u64) -> u32 {
        let units = len.div_ceil(BUDGET_UNIT).max(1);
        u32::try_from(units).map_or(self.budget_units, |u| u.min(self.budget_units))
    }

    pub fn registry(&self) -> &Arc<UploadRegistry> {
        &self.registry
    }

    pub fn api(&self) -> &Arc<dyn FilesApi> {
        &self.api
    }

    /// Wait until no other upload of this uploader (or its clones) aims at `name` in
    /// `parent_id` of `space`, then hold it until the hold is dropped: taken before looking at
    /// what the server holds there, kept until the upload ended (see `name_hold.rs`).
    pub(crate) async fn hold_name(
        &self,
        space: Space,
        parent_id: Option<u64>,
        name: &str,
    ) -> NameHold {
        self.names.hold((space, parent_id, name.to_string())).await
    }

    /// [`Self::hold_name`] when nobody holds or waits for the name, else `None`.
    pub(crate) fn try_hold_name(
        &self,
        space: Space,
        parent_id: Option<u64>,
        name: &str,
    ) -> Option<NameHold> {
        self.names.try_hold((space, parent_id, name.to_string()))
    }

    /// Names held or waited for now (for tests).
    #[cfg(test)]
    pub(crate) fn names_held(&self) -> usize {
        self.names.len()
    }

    /// Upload `source` as `target`, registered in the registry under the target's name.
    pub async fn upload(&self, source: PartSource, target: &UploadTarget) -> WriteResult<Uploaded> {
        let ticket = self.registry.register(target.name.clone(), source.len());
        self.upload_tracked(source, target, &ticket, None).await
    }

    /// Upload `source` as `target`, reporting to `ticket` and telling `hooks` of each create.
    pub async fn upload_tracked(
        &self,
        source: PartSource,
        target: &UploadTarget,
        ticket: &UploadTicket,
        hooks: Option<&dyn UploadHooks>,
    ) -> WriteResult<Uploaded> {
        let progress = ticket.progress();
        let mut restarts = 0;
        loop {
            match self.attempt(&source, target, progress, hooks).await {
                Ok(done) => {
                    progress.set_state(UploadState::Done);
                    tracing::debug!(name = %target.name, id = done.id, size = done.size, "upload complete");
                    return Ok(done);
                }
                Err(AttemptError::LinkRefused(e)) if restarts < LINK_RESTARTS => {
                    restarts += 1;
                    tracing::warn!(name = %target.name, error = %e, "a part link was refused; restarting the upload from create");
                }
                // Not a failure: the caller uploads a conflict copy instead.
                Err(AttemptError::Fatal(e @ WriteError::ChangedMeanwhile { .. })) => return Err(e),
                Err(AttemptError::LinkRefused(e) | AttemptError::Fatal(e)) => {
                    tracing::warn!(name = %target.name, error = %e, "upload failed");
                    progress.fail(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    async fn attempt(
        &self,
        source: &PartSource,
        target: &UploadTarget,
        progress: &Arc<UploadProgress>,
        hooks: Option<&dyn UploadHooks>,
    ) -> Result<Uploaded, AttemptError> {
        if matches!(target.space, Space::Recordings { .. }) {
            return Err(AttemptError::Fatal(WriteError::NotWritable(
                "session recordings are read-only".into(),
            )));
        }
        let size = source.len();
        progress.begin_attempt(size);
        let content_type = target
            .content_type
            .clone()
            .unwrap_or_else(|| guess_content_type(&target.name).into());
        let created = self
            .api
            .create(&CreateRequest {
                space: target.space,
                parent_id: target.parent_id,
                name: target.name.clone(),
                object_type: ObjectType::File,
                content_type: Some(content_type),
                size: Some(size),
                chunk_size_mb: Some(self.chunk_size_mb),
                overwrite: target.overwrite,
            })
            .await
            .map_err(WriteError::from)?;
        if let Some(h) = hooks {
            h.created(created.id).await?;
        }
        let chunk_mb = created.chunk_size_mb.unwrap_or(self.chunk_size_mb);
        let chunk = chunk_mb
            .checked_mul(MIB)
            .filter(|c| *c > 0)
            .ok_or_else(|| {
                WriteError::Protocol(format!("server chose chunk_size {chunk_mb} MB"))
            })?;
        let expected = size.div_ceil(chunk).max(1);
        let url_count = created.upload_urls.len();
        // Tolerance: for an empty file a server might answer no URL at all (then complete takes
        // no parts); the documented answer is one URL for one empty part.
        let empty_without_parts = size == 0 && url_count == 0;
        if url_count as u64 != expected && !empty_without_parts {
            return Err(WriteError::Protocol(format!(
                "server sent {url_count} part URLs for {size} bytes in {chunk_mb} MiB parts (expected {expected})"
            ))
            .into());
        }
        // `expected` parts of `chunk` bytes each fit in memory one at a time by construction, but
        // the part number must fit the wire's u32 and a part length must fit usize.
        if url_count > u32::MAX as usize || chunk > usize::MAX as u64 {
            return Err(WriteError::Protocol(format!("{url_count} parts of {chunk} bytes")).into());
        }
        let file_id = created.id;
        tracing::debug!(name = %target.name, parent = ?target.parent_id, id = file_id, size, overwrite = ?target.overwrite, parts = url_count, chunk_mb, "sending parts");
        progress.set_state(UploadState::Sending);

        // Owned values in each part future (no borrowed closure arguments), so the upload
        // future stays `Send` for callers that spawn it.
        let sending = futures::stream::iter(created.upload_urls.into_iter().enumerate())
            .map(|(i, url)| {
                let api = Arc::clone(&self.api);
                let source = source.clone();
                let progress = Arc::clone(progress);
                let budget = Arc::clone(&self.parts_budget);
                let offset = i as u64 * chunk;
                let len = chunk.min(size - offset);
                let units = self.units_for(len);
                async move {
                    // Never closed; an error here would be a bug, reported, not a panic.
                    let _permit = budget
                        .acquire_many_owned(units)
                        .await
                        .map_err(|e| WriteError::Protocol(format!("part budget: {e}")))?;
                    let guard = progress.part_buffer();
                    let data = source.read(offset, len as usize).await?;
                    let etag = api.upload_part(&url, Bytes::from(data)).await?;
                    drop(guard);
                    progress.add_sent(len);
                    Ok::<_, WriteError>(CompletedPart {
                        part_number: (i + 1) as u32,
                        etag,
                    })
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<CompletedPart>>();
        let check = async {
            match hooks {
                Some(h) => h.before_complete().await,
                None => Ok(()),
            }
        };
        // A small file: the check overlaps its one part (no round trip added; the window
        // between the check and `complete` stays about one round trip). Otherwise the check
        // follows the last part, so a long transfer does not widen that window.
        let mut parts = if url_count <= 1 && size <= CHECK_OVERLAP_MAX {
            let (parts, checked) = tokio::join!(sending, check);
            checked?;
            parts?
        } else {
            let parts = sending.await?;
            check.await?;
            parts
        };
        parts.sort_by_key(|p| p.part_number);

        progress.set_state(UploadState::Completing);
        if let Err(e) = self.api.complete(file_id, &parts).await {
            // A timeout or a lost answer says nothing about whether the server finished: look
            // the new file up by its id before calling the attempt failed (never create again
            // blindly: without `overwrite` that meets our own file as 409).
            if !(e.is_retryable() || e.kind() == ApiErrorKind::Timeout) {
                return Err(WriteError::from(e).into());
            }
            let found = find_by_name(
                self.api.as_ref(),
                target.space,
                target.parent_id,
                &target.name,
                None,
            )
            .await;
            match found {
                Ok(Some(f)) if f.id == file_id && f.size == size => {
                    tracing::info!(name = %target.name, id = file_id, error = %e, "complete answered with an error, but the upload is listed: done");
                }
                _ => return Err(WriteError::from(e).into()),
            }
        }
        Ok(Uploaded { id: file_id, size })
    }
}
