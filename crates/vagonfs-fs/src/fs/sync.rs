//! The mount-wide upload operations: flushing everything (SIGTERM, `vagonfs sync`, a graceful
//! unmount) and recovery at start of what an earlier run left unsaved.
//!
//! Subtle cases handled here:
//! - [`VagonFs::wait_uploads`] makes rounds while failures are transient (a few, with backoff),
//!   then waits for uploads still running in the background (the engine's, recovery's): a
//!   graceful unmount must not return while bytes are on their way;
//! - the first recovery round is run once, by [`VagonFs::recover`] (the mount's background
//!   task) or by [`VagonFs::wait_uploads`] if a `vagonfs sync` comes first; either waits for
//!   the other's, so a sync right after a mount does not answer "everything is uploaded"
//!   before recovery's uploads are even queued;
//! - recovery skips spools in use in this process, retries transient failures with backoff
//!   without a time limit (the API may be down at mount time), keeps spools that fail for good
//!   for the next try, and decides per file between its own name and a conflict copy (in
//!   `write/journal.rs`). It runs its uploads itself, beside the engine (see `engine.rs`): the
//!   recovered files show once landed.

use std::time::Duration;

use super::write::Recovered;
use super::{FsError, FsResult, VagonFs, lock};

/// What [`VagonFs::flush_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Files uploaded.
    pub uploaded: usize,
    /// Files whose upload failed (their spool is kept): `(file, error)`.
    pub failed: Vec<(String, String)>,
}

/// How often [`VagonFs::wait_uploads`] looks at the registry for uploads still running.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// Rounds of uploads [`VagonFs::wait_uploads`] makes while the failures are transient, and the
/// first pause between them (doubled each round: about 30 s in all).
const SYNC_ROUNDS: u32 = 6;
const SYNC_BACKOFF: Duration = Duration::from_millis(500);

/// First wait before recovery tries a transiently failed upload again; it doubles up to
/// [`RECOVERY_MAX_RETRY`].
const RECOVERY_FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between recovery passes while the API stays unreachable.
const RECOVERY_MAX_RETRY: Duration = Duration::from_secs(60);

/// What [`VagonFs::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Uploaded under their own name.
    pub uploaded: Vec<String>,
    /// Uploaded as a conflict copy: `(file, copy name)`.
    pub conflict_copies: Vec<(String, String)>,
    /// Not uploaded (kept for the next try): `(file, error)`.
    pub failed: Vec<(String, String)>,
}

impl RecoveryReport {
    fn merge(&mut self, other: RecoveryReport) {
        self.uploaded.extend(other.uploaded);
        self.conflict_copies.extend(other.conflict_copies);
        self.failed.extend(other.failed);
    }
}

impl VagonFs {
    /// Upload every dirty spool (open files, and closed ones whose upload failed) now, at most
    /// `--transfers` at once, and wait. For SIGTERM.
    pub async fn flush_all(&self) -> FlushReport {
        self.flush_round().await.0
    }

    /// One [`VagonFs::flush_all`] round; `true` when every failure was transient.
    async fn flush_round(&self) -> (FlushReport, bool) {
        use futures::StreamExt;
        let mut report = FlushReport::default();
        let mut all_transient = true;
        // Folders first: files made inside them wait for them anyway.
        for (name, e) in self.folders.make_pending().await {
            all_transient &= e.is_retryable();
            report
                .failed
                .push((format!("folder {name}"), e.to_string()));
        }
        self.launch_deletes();
        for (name, e) in self.deletes.hurry().await {
            all_transient &= e.is_retryable();
            report
                .failed
                .push((format!("delete of {name}"), e.to_string()));
        }
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        let results: Vec<_> = futures::stream::iter(inos.iter().copied())
            .map(|ino| async move {
                let file = self.spooled_file(ino)?;
                if !self.needs_upload_now(ino) {
                    return None;
                }
                let name = file.target().display_path;
                Some((name, self.upload_ino(ino).await))
            })
            .buffer_unordered(self.engine.config.transfers.max(1))
            .collect()
            .await;
        for (name, result) in results.into_iter().flatten() {
            match result {
                Ok(()) => report.uploaded += 1,
                Err(e) => {
                    all_transient &= super::engine::transient(&e);
                    report.failed.push((name, e.to_string()));
                }
            }
        }
        // Deletes queued by what just landed (the old copies of files moved in the
        // background).
        if self.deletes.pending() > 0 {
            self.launch_deletes();
            for (name, e) in self.deletes.hurry().await {
                let what = format!("delete of {name}");
                if report.failed.iter().any(|(w, _)| *w == what) {
                    continue;
                }
                all_transient &= e.is_retryable();
                report.failed.push((what, e.to_string()));
            }
        }
        for ino in inos {
            self.release_spool_if_done(ino);
            if !self.needs_upload_now(ino) {
                self.clear_failure(ino);
            }
        }
        // What stays is durable before this returns (unmount, `vagonfs sync`).
        let dir = lock(&self.spool_dir).as_ref().map(|d| d.group_commit());
        if let Some(commit) = dir {
            match tokio::task::spawn_blocking(move || commit.commit()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot sync the spool folder"),
                Err(e) => tracing::warn!(error = %e, "spool folder sync task failed"),
            }
        }
        (report, all_transient)
    }

    /// Upload everything pending now and wait until nothing is (`vagonfs sync`, a graceful
    /// unmount): rounds of [`VagonFs::flush_all`] while the failures are transient (a few, with
    /// backoff), then wait until no upload is queued or running (recovery runs its uploads in
    /// the background). Returns the files that still failed.
    pub async fn wait_uploads(&self) -> FlushReport {
        if !self.config.read_only {
            // What an earlier run left: its first recovery round (run here if the mount's
            // background recovery has not started it yet, else waited for), so a sync right
            // after the mount does not answer before recovery's uploads are even queued.
            self.first_recovery_round().await;
        }
        let mut wait = SYNC_BACKOFF;
        let mut round = 1;
        let report = loop {
            let (report, transient) = self.flush_round().await;
            if report.failed.is_empty() || !transient || round >= SYNC_ROUNDS {
                break report;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            round += 1;
        };
        while !self.uploader.registry().active().is_empty() {
            tokio::time::sleep(WAIT_POLL).await;
        }
        report
    }

    /// Upload what a previous run left unsaved (a crash, a failed upload): every journaled spool
    /// of this mount's cache folder not in use here, under its name or as a conflict copy when
    /// the remote file changed meanwhile. Logs what it does. A transient failure (the API down
    /// or throttling at mount time) is retried with backoff, without a time limit, like every
    /// other upload: the mount calls this in the background. Spools that fail for good stay for
    /// the next try (reported in `failed`). Safe to call again while mounted.
    pub async fn recover(&self) -> FsResult<RecoveryReport> {
        let mut report = RecoveryReport::default();
        if self.config.read_only {
            return Ok(report);
        }
        let mut wait = RECOVERY_FIRST_RETRY;
        let mut first = self.first_recovery_round().await;
        loop {
            let round = match first.take() {
                Some((done, result)) => {
                    report.merge(done);
                    result
                }
                None => self.recover_round(&mut report).await,
            };
            let retry = match round {
                Ok(retry) => retry,
                Err(e) if super::engine::transient(&e) => {
                    tracing::info!(error = %e, "recovery of unsaved changes could not start; retrying");
                    true
                }
                Err(e) => return Err(e),
            };
            if !retry {
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECOVERY_MAX_RETRY);
        }
        Ok(report)
    }

    /// The mount's first recovery round, run once by whichever of [`Self::recover`] and
    /// [`Self::wait_uploads`] comes first; the other waits for it. Its report and result go to
    /// the caller that ran it (`None` for the others).
    async fn first_recovery_round(&self) -> Option<(RecoveryReport, FsResult<bool>)> {
        let mut ran = None;
        self.first_recovery
            .get_or_init(|| async {
                let mut report = RecoveryReport::default();
                let result = self.recover_round(&mut report).await;
                ran = Some((report, result));
            })
            .await;
        ran
    }

    /// One pass of [`Self::recover`]: upload every pending spool once. Returns whether one
    /// failed transiently (and so wants another pass).
    async fn recover_round(&self, report: &mut RecoveryReport) -> FsResult<bool> {
        let dir = self.spool_dir()?;
        // Folders an earlier run was asked for (loaded with the spool folder) come first: the
        // files below may be inside them.
        let mut retry = false;
        for (name, e) in self.folders.make_pending().await {
            if e.is_retryable() {
                tracing::info!(folder = %name, error = %e, "folder not made yet; retrying with backoff");
                retry = true;
            } else {
                report
                    .failed
                    .push((format!("folder {name}"), e.to_string()));
            }
        }
        // Deletes an earlier run was asked for (loaded with the spool folder, their names held).
        self.launch_deletes();
        let mut pending = super::write::recover(&dir, self.api.as_ref()).await?;
        let all = pending.len();
        pending.retain(|p| {
            !self.move_holds_name(&(
                p.record.space.space(),
                p.record.parent_id,
                p.record.name.clone(),
            ))
        });
        if pending.len() < all {
            // Their turn comes once the moves holding their names landed.
            retry = true;
        }
        if pending.is_empty() {
            return Ok(retry);
        }
        tracing::info!(
            files = pending.len(),
            "uploading changes left unsaved by an earlier run"
        );
        let results = futures::future::join_all(pending.into_iter().map(|p| {
            let shown = p.record.display_path.clone();
            // A move's source: deleted once these bytes landed (under any name).
            let moved = p
                .record
                .moved_from
                .clone()
                .map(|from| (p.record.space.space(), from));
            let uploader = self.uploader.clone();
            async move {
                let result = p.run(&uploader).await;
                if let (Ok(_), Some((space, from))) = (&result, moved) {
                    self.delete_move_source(space, from, None);
                }
                (shown, result)
            }
        }))
        .await;
        for (shown, result) in results {
            match result {
                Ok(Recovered {
                    conflict_copy: None,
                    ..
                }) => report.uploaded.push(shown),
                Ok(Recovered {
                    conflict_copy: Some(copy),
                    ..
                }) => report.conflict_copies.push((shown, copy)),
                Err(e) => {
                    let e = FsError::from(e);
                    if super::engine::transient(&e) {
                        tracing::info!(file = %shown, error = %e, "unsaved changes not uploaded yet; retrying with backoff");
                        retry = true;
                    } else {
                        tracing::error!(file = %shown, error = %e, "unsaved changes could not be uploaded; kept for the next try");
                        report.failed.push((shown, e.to_string()));
                    }
                }
            }
        }
        self.dirs.invalidate_all();
        Ok(retry)
    }
}
