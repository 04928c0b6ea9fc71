//! A fake mount for the tests of the control socket and of the commands.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use tokio::sync::Notify;

use super::*;
use crate::daemon::snapshot::{CacheStats, MountIdentity, UploadProgress, UploadState};

/// A handler whose uploads finish when the test says so.
pub(crate) struct FakeMount {
    pub mountpoint: String,
    pub sent: Mutex<u64>,
    pub release: Notify,
    pub unmount_calls: AtomicU32,
    pub forced_calls: AtomicU32,
    pub fail: bool,
}

impl FakeMount {
    pub fn new(mountpoint: &str) -> Arc<Self> {
        Arc::new(FakeMount {
            mountpoint: mountpoint.into(),
            sent: Mutex::new(0),
            release: Notify::new(),
            unmount_calls: AtomicU32::new(0),
            forced_calls: AtomicU32::new(0),
            fail: false,
        })
    }
}

#[async_trait]
impl ControlHandler for FakeMount {
    fn snapshot(&self) -> StatusSnapshot {
        let sent = *self.sent.lock().unwrap();
        StatusSnapshot {
            identity: MountIdentity {
                mountpoint: self.mountpoint.clone(),
                target: "machine 42".into(),
                api_url: "http://127.0.0.1:9".into(),
                pid: 1,
                started_at: Utc::now(),
                read_only: false,
                demo: false,
            },
            taken_at: Utc::now(),
            uploads: vec![UploadProgress {
                path: "/big.bin".into(),
                bytes_sent: sent,
                size: 100,
                state: UploadState::Uploading,
                started_at: Some(Utc::now()),
            }],
            failed: Vec::new(),
            queued: 0,
            in_flight: 1,
            pending_bytes: 100 - sent,
            recent_errors: vec![],
            cache: CacheStats::default(),
            api_unreachable_since: None,
            folders_not_made: 0,
            deletes_pending: 0,
            retries: 0,
            endpoints: vec![],
        }
    }

    async fn unmount(&self, force: bool) -> Result<(), UnmountRefused> {
        self.unmount_calls.fetch_add(1, Ordering::SeqCst);
        if force {
            self.forced_calls.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if self.fail {
            return Err(UnmountRefused::UploadsFailed(vec![
                "big.bin: uploads failed".into(),
            ]));
        }
        self.release.notified().await;
        Ok(())
    }

    async fn sync(&self) -> Vec<SyncFailure> {
        if self.fail {
            return vec![SyncFailure {
                file: "big.bin".into(),
                reason: "storage full".into(),
            }];
        }
        self.release.notified().await;
        Vec::new()
    }
}
