//! What `vagonfs status` shows of a running mount: [`StatusSnapshot`], the payload of the
//! control socket (serde, line-delimited JSON) and of `vagonfs status --json`.
//!
//! The snapshot carries its own `taken_at`, so rates and ETAs are computed against the daemon's
//! clock (the same clock that stamped `started_at`), not the client's, and rendering a known
//! snapshot is deterministic. The mount builds one with [`StatusSnapshot::collect`] from its
//! [`MountIdentity`], the shared metrics and the write engine's list of uploads; `collect`
//! lives with the metrics (`daemon::metrics`), so this module is plain data and the two do not
//! import each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What does not change over a mount's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountIdentity {
    /// Canonical mount point.
    pub mountpoint: String,
    /// What is mounted, for people: e.g. `machine 42`, `shared storage`, `all storages`.
    pub target: String,
    /// Base URL of the API (no credentials, ever).
    pub api_url: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub read_only: bool,
    /// The embedded demo emulator, not a Vagon API (older daemons do not say: false).
    #[serde(default)]
    pub demo: bool,
}

/// Where one file's upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Waiting for a free upload slot.
    Queued,
    /// Parts being sent.
    Uploading,
    /// All parts sent, `complete` being called.
    Completing,
    /// Waiting before trying again after an error.
    Retrying,
    /// Given up; the local copy is kept.
    Failed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Queued => "queued",
            UploadState::Uploading => "uploading",
            UploadState::Completing => "completing",
            UploadState::Retrying => "retrying",
            UploadState::Failed => "failed",
        }
    }
}

/// One file's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// Path inside the mount, `/`-separated.
    pub path: String,
    pub bytes_sent: u64,
    pub size: u64,
    pub state: UploadState,
    /// When the upload started sending (`None` while queued).
    pub started_at: Option<DateTime<Utc>>,
}

/// A file whose last upload failed: its local copy is kept and the upload tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUpload {
    /// Path inside the mount, `/`-separated.
    pub path: String,
    /// Why, as the error said.
    pub reason: String,
    /// Retrying soon will not help (quota, permission): tried again every few minutes and by
    /// `vagonfs sync`. Otherwise retried with backoff.
    pub permanent: bool,
}

/// One kept error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    pub at: DateTime<Utc>,
    /// Where it happened: an endpoint, or e.g. `upload /docs/a.txt`.
    pub source: String,
    pub message: String,
}

/// Cache hit and miss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub block_hits: u64,
    pub block_misses: u64,
    pub dir_hits: u64,
    pub dir_misses: u64,
}

impl CacheStats {
    /// Block cache hit rate, 0..=1, `None` before the first lookup.
    pub fn block_hit_rate(&self) -> Option<f64> {
        rate(self.block_hits, self.block_misses)
    }

    /// Folder-listing cache hit rate, 0..=1, `None` before the first lookup.
    pub fn dir_hit_rate(&self) -> Option<f64> {
        rate(self.dir_hits, self.dir_misses)
    }
}

fn rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits.saturating_add(misses);
    (total > 0).then(|| hits as f64 / total as f64)
}

/// One endpoint's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub endpoint: String,
    pub requests: u64,
    pub errors: u64,
    /// Mean latency, milliseconds.
    pub mean_ms: Option<f64>,
    /// 95th percentile estimated from the histogram buckets, milliseconds.
    pub p95_ms: Option<f64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// Everything `vagonfs status` shows of one mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    #[serde(flatten)]
    pub identity: MountIdentity,
    /// When the daemon made this snapshot.
    pub taken_at: DateTime<Utc>,
    /// Uploads in flight first, then (some of) the queued ones.
    pub uploads: Vec<UploadProgress>,
    /// Files waiting for an upload slot.
    pub queued: u64,
    /// Files being uploaded.
    pub in_flight: u64,
    /// Bytes not yet stored remotely.
    pub pending_bytes: u64,
    /// Files whose last upload failed, with the reason (older daemons do not say: empty).
    #[serde(default)]
    pub failed: Vec<FailedUpload>,
    /// Oldest first.
    pub recent_errors: Vec<RecentError>,
    pub cache: CacheStats,
    pub retries: u64,
    /// Endpoints called at least once.
    pub endpoints: Vec<EndpointStats>,
    /// Since when the API cannot be reached, while it cannot (cached listings are served).
    #[serde(default)]
    pub api_unreachable_since: Option<DateTime<Utc>>,
    /// Folders made by mkdir that the server does not have yet (made in the background).
    #[serde(default)]
    pub folders_not_made: u64,
    /// Files removed through the mount that the server has not deleted yet (retried in the
    /// background).
    #[serde(default)]
    pub deletes_pending: u64,
}

impl StatusSnapshot {
    /// Nothing left to upload.
    pub fn uploads_done(&self) -> bool {
        self.queued == 0
            && self.in_flight == 0
            && self.folders_not_made == 0
            && self.deletes_pending == 0
    }
}
