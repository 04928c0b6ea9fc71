//! Living with a mount, the daemon side: its shared [`Metrics`], its control socket (what
//! `vagonfs status` and `vagonfs unmount` talk to) and, with `--metrics-addr`, its Prometheus
//! endpoint. The session loop ([`super::session`]) owns the FUSE session; this module hands it
//! the unmount requests that arrive over the socket ([`Living::next_request`]) and answers
//! them once the session has done what they asked ([`UnmountRequest::answer`]).
//!
//! Subtle cases owned here:
//! - the control socket is bound *before* mounting, on the canonical mount point (after the
//!   mount, canonicalizing would go through the mount itself); it serves only the mounting
//!   user and root (`daemon::control`). A socket that cannot be bound is a warning, not a
//!   failure: the mount works, and `vagonfs unmount` falls back to a direct unmount;
//! - a graceful unmount uploads every file with changes and waits for every upload *while the
//!   mount is still there*, then asks the session to unmount; a forced request arriving
//!   meanwhile stops that wait at once. An upload that fails makes the graceful unmount fail
//!   (the mount stays, nothing is lost; `--force` leaves the local copies for the next mount);
//! - the metrics refresher holds the core weakly: the core holds the metered API, which holds
//!   the metrics, so a strong reference would be a cycle that outlives the mount;
//! - each upload is logged at debug only; an info line sums them up every
//!   [`UPLOAD_SUMMARY_EVERY`] when anything was uploaded ("uploaded 12 files, 340.0 MiB in the
//!   last minute");
//! - figures the core keeps itself (cache hit counts, the upload registry) are pulled into the
//!   metrics at each snapshot and scrape ([`Metrics::set_refresher`]), never pushed from the hot
//!   paths; upload outcomes are the exception: the registry tells the metrics (an
//!   [`UploadObserver`]) as each upload ends, since a count cannot be pulled afterwards.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{MountError, MountPlan};
pub use crate::daemon::control::UnmountRefused;
use crate::daemon::control::{ControlHandler, ControlServer, SyncFailure};
use crate::daemon::metrics::{CacheKind, Endpoint, Metrics, UploadQueueStats};
use crate::daemon::metrics_http::MetricsServer;
use crate::daemon::snapshot::{self, MountIdentity, StatusSnapshot};
use crate::fs::write::{ProgressSnapshot, UploadObserver, UploadRegistry, UploadState};
use crate::fs::{RootSpec, VagonFs};

/// What is mounted, in words (`vagonfs status`): `machine 42`, `shared storage`, ...
pub fn target_description(root: &RootSpec) -> String {
    match root {
        RootSpec::Space(crate::api::Space::Machine(id)) => format!("machine {id}"),
        RootSpec::Space(crate::api::Space::Shared) => "shared storage".to_string(),
        RootSpec::Space(crate::api::Space::Recordings { machine: None }) => {
            "session recordings".to_string()
        }
        RootSpec::Space(crate::api::Space::Recordings { machine: Some(id) }) => {
            format!("session recordings of machine {id}")
        }
        RootSpec::All => "all storages (machines, shared, recordings)".to_string(),
    }
}

/// The mount source shown in the mount table and `df` (`vagonfs:machine:42`): the same words
/// as the `mount -t vagonfs` source, prefixed so that `daemon::mounts` knows it as ours.
pub fn mount_source(root: &RootSpec) -> String {
    let what = match root {
        RootSpec::Space(crate::api::Space::Machine(id)) => format!("machine:{id}"),
        RootSpec::Space(crate::api::Space::Shared) => "shared".to_string(),
        RootSpec::Space(crate::api::Space::Recordings { machine: None }) => "recordings".into(),
        RootSpec::Space(crate::api::Space::Recordings { machine: Some(id) }) => {
            format!("recordings:{id}")
        }
        RootSpec::All => "all".to_string(),
    };
    format!("{}:{what}", crate::daemon::mounts::FS_NAME)
}

/// An unmount asked over the control socket, for the session loop to carry out.
#[derive(Debug)]
pub struct UnmountRequest {
    /// Unmount at once: no waiting for uploads before or after.
    pub force: bool,
    done: oneshot::Sender<Result<(), UnmountRefused>>,
}

impl UnmountRequest {
    /// Tell the asking client how it went (once the mount is gone, or why not).
    pub fn answer(self, result: Result<(), UnmountRefused>) {
        let _ = self.done.send(result);
    }
}

/// The daemon's living parts for one mount.
pub struct Living {
    metrics: Arc<Metrics>,
    control: Option<ControlServer>,
    metrics_server: Option<MetricsServer>,
    requests: mpsc::UnboundedReceiver<UnmountRequest>,
    /// The periodic upload summary ([`spawn_upload_summary`]).
    summary: tokio::task::JoinHandle<()>,
}

impl Living {
    /// Starts the metrics endpoint (when asked) and the control socket for the mount of `fs`
    /// described by `plan`, against the API at `api_url` (the demo emulator's when `demo`). Within the runtime, before mounting.
    pub async fn start(
        plan: &MountPlan,
        api_url: &str,
        demo: bool,
        metrics: Arc<Metrics>,
        fs: &Arc<VagonFs>,
    ) -> Result<Living, MountError> {
        let tally = install_refresher(&metrics, fs);
        let summary = spawn_upload_summary(tally);
        let metrics_server = MetricsServer::start(&plan.metrics, Arc::clone(&metrics))
            .await
            .map_err(|e| MountError::Metrics(e.to_string()))?;
        let identity = MountIdentity {
            mountpoint: plan.mountpoint.display().to_string(),
            target: target_description(&plan.root),
            api_url: api_url.to_string(),
            pid: std::process::id(),
            started_at: Utc::now(),
            read_only: plan.fs.read_only,
            demo,
        };
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (forced, _) = watch::channel(false);
        let handler = Arc::new(MountControl {
            identity,
            metrics: Arc::clone(&metrics),
            fs: Arc::clone(fs),
            requests: requests_tx,
            forced,
        });
        let control = start_control(&plan.mountpoint, handler);
        Ok(Living {
            metrics,
            control,
            metrics_server,
            requests,
            summary,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The next unmount asked over the control socket (pending forever when none comes).
    pub async fn next_request(&mut self) -> UnmountRequest {
        match self.requests.recv().await {
            Some(request) => request,
            // Cannot happen while the handler lives (it holds a sender); wait forever then.
            None => std::future::pending().await,
        }
    }

    /// Answers every unmount request still waiting with `result` (the mount is gone, or the
    /// session is ending for another reason).
    pub fn answer_waiting(&mut self, result: &Result<(), UnmountRefused>) {
        while let Ok(request) = self.requests.try_recv() {
            request.answer(result.clone());
        }
    }

    /// Stops the servers; the control socket gets a short grace so that the last answer of an
    /// unmount reaches its client.
    pub async fn shutdown(mut self) {
        self.summary.abort();
        self.answer_waiting(&Ok(()));
        if let Some(server) = self.metrics_server.take() {
            server.shutdown().await;
        }
        if let Some(control) = self.control.take() {
            control.shutdown().await;
        }
    }
}

fn start_control(mountpoint: &Path, handler: Arc<MountControl>) -> Option<ControlServer> {
    match ControlServer::start(mountpoint, handler) {
        Ok(server) => {
            info!(socket = %server.path().display(), "control socket ready (vagonfs status / unmount)");
            Some(server)
        }
        Err(err) => {
            warn!(
                "no control socket for this mount ({err}): `vagonfs status` will not show it and \
                 `vagonfs unmount` will unmount it directly"
            );
            None
        }
    }
}

/// How often the one-line upload summary is logged (when something was uploaded).
pub const UPLOAD_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Upload outcomes, counted into the metrics as the core's registry reports them, and tallied
/// for the periodic summary line (per-upload lines are at debug).
struct UploadTally {
    metrics: Arc<Metrics>,
    done: AtomicU64,
    failed: AtomicU64,
}

impl UploadObserver for UploadTally {
    fn upload_finished(&self, ok: bool) {
        self.metrics.upload_finished(ok);
        let counter = if ok { &self.done } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl UploadTally {
    /// (files uploaded, files failed, part bytes sent) so far.
    fn totals(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.metrics.bytes_up(Endpoint::UploadPart),
        )
    }
}

/// The summary line for what changed between two [`UploadTally::totals`], if anything did.
pub fn upload_summary(
    before: (u64, u64, u64),
    now: (u64, u64, u64),
    every: Duration,
) -> Option<String> {
    let files = now.0.saturating_sub(before.0);
    let failed = now.1.saturating_sub(before.1);
    let bytes = now.2.saturating_sub(before.2);
    if files == 0 && failed == 0 {
        return None;
    }
    let period = if every == Duration::from_secs(60) {
        "the last minute".to_string()
    } else {
        format!("the last {}s", every.as_secs())
    };
    let mut line = format!(
        "uploaded {files} file{}, {} in {period}",
        if files == 1 { "" } else { "s" },
        crate::daemon::status::format_bytes(bytes)
    );
    if failed > 0 {
        line.push_str(&format!(
            "; {failed} failed (kept in the cache folder, see `vagonfs status`)"
        ));
    }
    Some(line)
}

/// Logs [`upload_summary`] every [`UPLOAD_SUMMARY_EVERY`] while the mount lives.
fn spawn_upload_summary(tally: Arc<UploadTally>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut before = tally.totals();
        let mut tick = tokio::time::interval(UPLOAD_SUMMARY_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = tally.totals();
            if let Some(line) = upload_summary(before, now, UPLOAD_SUMMARY_EVERY) {
                info!("{line}");
            }
            before = now;
        }
    })
}

/// Pulls the core's cache counts and upload queue into `metrics` before each read of them.
fn install_refresher(metrics: &Arc<Metrics>, fs: &Arc<VagonFs>) -> Arc<UploadTally> {
    // The registry holds the metrics, not the core: no cycle.
    let tally = Arc::new(UploadTally {
        metrics: Arc::clone(metrics),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    if !fs
        .uploads()
        .set_observer(Arc::clone(&tally) as Arc<dyn UploadObserver>)
    {
        warn!("upload outcomes already observed; not counted in the metrics");
    }
    let fs: Weak<VagonFs> = Arc::downgrade(fs);
    metrics.set_refresher(Box::new(move |metrics: &Metrics| {
        let Some(fs) = fs.upgrade() else { return };
        let counts = fs.cache_counters();
        metrics.set_cache_counts(CacheKind::Block, counts.block_hits, counts.block_misses);
        metrics.set_cache_counts(CacheKind::Dir, counts.dir_hits, counts.dir_misses);
        let mut queue = queue_stats(&fs.uploads().active());
        // Changed files the engine has not started sending yet (upload delay, no free
        // transfer slot, waiting to retry): not in the registry until their upload starts.
        let backlog = fs.upload_backlog();
        queue.queued += backlog.files;
        queue.pending_bytes += backlog.bytes;
        metrics.set_upload_queue(queue);
    }));
    tally
}

/// The upload queue from the registry's active uploads.
pub fn queue_stats(active: &[ProgressSnapshot]) -> UploadQueueStats {
    let mut stats = UploadQueueStats::default();
    for upload in active.iter().filter(|u| !u.state.is_finished()) {
        if upload.state == UploadState::Queued {
            stats.queued += 1;
        } else {
            stats.in_flight += 1;
        }
        stats.pending_bytes += upload.size.saturating_sub(upload.sent);
    }
    stats
}

/// The uploads `vagonfs status` shows: in flight first, then queued; finished ones (about to
/// leave the registry) are left out, except failures.
pub fn status_uploads(registry: &UploadRegistry) -> Vec<snapshot::UploadProgress> {
    let mut out: Vec<snapshot::UploadProgress> = registry
        .active()
        .iter()
        .filter_map(|u| {
            let state = match u.state {
                UploadState::Queued => snapshot::UploadState::Queued,
                UploadState::Creating | UploadState::Sending if u.attempt > 1 => {
                    snapshot::UploadState::Retrying
                }
                UploadState::Creating | UploadState::Sending => snapshot::UploadState::Uploading,
                UploadState::Completing => snapshot::UploadState::Completing,
                UploadState::Failed => snapshot::UploadState::Failed,
                UploadState::Done | UploadState::Cancelled => return None,
            };
            Some(snapshot::UploadProgress {
                path: u.display.clone(),
                bytes_sent: u.sent,
                size: u.size,
                state,
                started_at: u.started_at.map(DateTime::<Utc>::from),
            })
        })
        .collect();
    // Stable: registration order within each group.
    out.sort_by_key(|u| u.state == snapshot::UploadState::Queued);
    out
}

/// The files whose last upload failed, for `vagonfs status`.
pub fn failed_uploads(fs: &VagonFs) -> Vec<snapshot::FailedUpload> {
    fs.upload_failures()
        .into_iter()
        .map(|f| snapshot::FailedUpload {
            path: f.file,
            reason: f.reason,
            permanent: f.permanent,
        })
        .collect()
}

/// The [`ControlHandler`] of a mount.
struct MountControl {
    identity: MountIdentity,
    metrics: Arc<Metrics>,
    fs: Arc<VagonFs>,
    requests: mpsc::UnboundedSender<UnmountRequest>,
    /// Set by a forced unmount: a graceful one still waiting for uploads stops waiting.
    forced: watch::Sender<bool>,
}

#[async_trait]
impl ControlHandler for MountControl {
    fn snapshot(&self) -> StatusSnapshot {
        let mut snapshot = StatusSnapshot::collect(
            &self.identity,
            &self.metrics,
            status_uploads(&self.fs.uploads()),
        );
        snapshot.api_unreachable_since = self.fs.api_unreachable_since().map(DateTime::<Utc>::from);
        snapshot.folders_not_made = self.fs.folders_not_made() as u64;
        snapshot.deletes_pending = self.fs.deletes_pending() as u64;
        snapshot.failed = failed_uploads(&self.fs);
        snapshot
    }

    async fn sync(&self) -> Vec<SyncFailure> {
        info!("sync asked over the control socket: uploading every pending change");
        let report = self.fs.wait_uploads().await;
        report
            .failed
            .into_iter()
            .map(|(file, reason)| SyncFailure { file, reason })
            .collect()
    }

    async fn unmount(&self, force: bool) -> Result<(), UnmountRefused> {
        if force {
            self.forced.send_replace(true);
            info!("forced unmount asked over the control socket");
        } else {
            info!("unmount asked over the control socket: uploading pending changes first");
            let mut forced = self.forced.subscribe();
            tokio::select! {
                report = self.fs.wait_uploads() => {
                    if !report.failed.is_empty() {
                        let files: Vec<String> = report
                            .failed
                            .iter()
                            .map(|(file, err)| format!("{file}: {err}"))
                            .collect();
                        return Err(UnmountRefused::UploadsFailed(files));
                    }
                }
                _ = forced.wait_for(|forced| *forced) => {}
            }
        }
        let (done, answer) = oneshot::channel();
        self.requests
            .send(UnmountRequest { force, done })
            .map_err(|_| UnmountRefused::ShuttingDown)?;
        answer.await.unwrap_or(Err(UnmountRefused::DaemonEnded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_summary_lines() {
        let minute = Duration::from_secs(60);
        assert_eq!(upload_summary((3, 0, 100), (3, 0, 100), minute), None);
        assert_eq!(
            upload_summary((3, 0, 0), (15, 0, 340 * 1024 * 1024), minute).as_deref(),
            Some("uploaded 12 files, 340.0 MiB in the last minute")
        );
        let line = upload_summary((0, 0, 0), (1, 2, 10), Duration::from_secs(5)).unwrap();
        assert!(line.starts_with("uploaded 1 file, "), "{line}");
        assert!(line.contains("in the last 5s; 2 failed"), "{line}");
    }
}
