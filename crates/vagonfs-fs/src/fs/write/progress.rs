//! Upload progress, shared with whoever wants to show it (`vagonfs status`).
//!
//! An [`UploadRegistry`] lists the uploads that are queued or running; each is an
//! [`UploadProgress`] of atomics the uploader bumps as parts land, so reading it never blocks
//! an upload. [`UploadTicket`] is the registration: dropping it takes the upload off the list
//! and keeps its last [`ProgressSnapshot`] among the [`RECENT_KEPT`] most recent finished ones,
//! marked `Cancelled` when it was dropped before finishing (a cancelled future); a ticket dropped
//! before its upload began (nothing to send after all) leaves no trace. An optional
//! [`UploadObserver`] hears each begun upload's outcome as its ticket drops (outside the lock).
//!
//! Rate and ETA are derived from bytes acknowledged by the server (a part counts once its PUT
//! answered), over the time since the parts started; a restarted upload starts counting again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Finished uploads kept for `status` (most recent first).
pub const RECENT_KEPT: usize = 16;

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadState {
    /// Registered, not yet sending (recovery waiting for its turn). A flush waiting behind its
    /// file's running upload is not registered until that upload is over.
    Queued,
    /// `POST /files`.
    Creating,
    /// Part PUTs.
    Sending,
    /// `POST /files/{id}/complete`.
    Completing,
    Done,
    Failed,
    /// Dropped before it finished (the journal still says not done).
    Cancelled,
}

impl UploadState {
    fn to_u8(self) -> u8 {
        match self {
            UploadState::Queued => 0,
            UploadState::Creating => 1,
            UploadState::Sending => 2,
            UploadState::Completing => 3,
            UploadState::Done => 4,
            UploadState::Failed => 5,
            UploadState::Cancelled => 6,
        }
    }

    fn from_u8(v: u8) -> UploadState {
        match v {
            0 => UploadState::Queued,
            1 => UploadState::Creating,
            2 => UploadState::Sending,
            3 => UploadState::Completing,
            4 => UploadState::Done,
            5 => UploadState::Failed,
            _ => UploadState::Cancelled,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            UploadState::Done | UploadState::Failed | UploadState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Queued => "queued",
            UploadState::Creating => "creating",
            UploadState::Sending => "sending",
            UploadState::Completing => "completing",
            UploadState::Done => "done",
            UploadState::Failed => "failed",
            UploadState::Cancelled => "cancelled",
        }
    }
}

/// Live counters of one upload.
#[derive(Debug)]
pub struct UploadProgress {
    display: Mutex<String>,
    size: AtomicU64,
    sent: AtomicU64,
    state: AtomicU8,
    attempt: AtomicU32,
    queued_at: SystemTime,
    started: Mutex<Option<(SystemTime, Instant)>>,
    error: Mutex<Option<String>>,
    parts_in_memory: AtomicUsize,
    max_parts_in_memory: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UploadProgress {
    pub fn new(display: impl Into<String>, size: u64) -> UploadProgress {
        UploadProgress {
            display: Mutex::new(display.into()),
            size: AtomicU64::new(size),
            sent: AtomicU64::new(0),
            state: AtomicU8::new(UploadState::Queued.to_u8()),
            attempt: AtomicU32::new(0),
            queued_at: SystemTime::now(),
            started: Mutex::new(None),
            error: Mutex::new(None),
            parts_in_memory: AtomicUsize::new(0),
            max_parts_in_memory: AtomicUsize::new(0),
        }
    }

    pub fn state(&self) -> UploadState {
        UploadState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, s: UploadState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }

    pub fn set_display(&self, display: impl Into<String>) {
        *lock(&self.display) = display.into();
    }

    pub fn display(&self) -> String {
        lock(&self.display).clone()
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// A new attempt (create) begins: counters restart.
    pub(crate) fn begin_attempt(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
        self.sent.store(0, Ordering::Relaxed);
        self.attempt.fetch_add(1, Ordering::Relaxed);
        *lock(&self.started) = Some((SystemTime::now(), Instant::now()));
        *lock(&self.error) = None;
        self.set_state(UploadState::Creating);
    }

    pub(crate) fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn fail(&self, message: String) {
        *lock(&self.error) = Some(message);
        self.set_state(UploadState::Failed);
    }

    /// A part buffer was allocated; returns a guard that counts it out on drop.
    pub(crate) fn part_buffer(self: &Arc<Self>) -> PartBufferGuard {
        let now = self.parts_in_memory.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_parts_in_memory.fetch_max(now, Ordering::AcqRel);
        PartBufferGuard {
            progress: Arc::clone(self),
        }
    }

    /// The most part buffers this upload ever held at once (the memory bound).
    pub fn max_parts_in_memory(&self) -> usize {
        self.max_parts_in_memory.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let started = *lock(&self.started);
        let size = self.size();
        let sent = self.bytes_sent().min(size);
        let elapsed = started.map(|(_, i)| i.elapsed());
        let rate = match elapsed {
            Some(e) if e.as_secs_f64() > 0.0 && sent > 0 => Some(sent as f64 / e.as_secs_f64()),
            _ => None,
        };
        let eta = rate.map(|r| Duration::from_secs_f64((size - sent) as f64 / r));
        ProgressSnapshot {
            display: self.display(),
            size,
            sent,
            state: self.state(),
            attempt: self.attempt.load(Ordering::Relaxed),
            queued_at: self.queued_at,
            started_at: started.map(|(s, _)| s),
            elapsed,
            rate_bytes_per_sec: rate,
            eta,
            error: lock(&self.error).clone(),
        }
    }
}

/// Counts one part buffer out of memory when dropped.
pub(crate) struct PartBufferGuard {
    progress: Arc<UploadProgress>,
}

impl Drop for PartBufferGuard {
    fn drop(&mut self) {
        self.progress.parts_in_memory.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A point-in-time copy of an upload's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSnapshot {
    pub display: String,
    pub size: u64,
    /// Bytes of parts the server acknowledged.
    pub sent: u64,
    pub state: UploadState,
    /// 1 for the first create; 2 after a restart.
    pub attempt: u32,
    pub queued_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub elapsed: Option<Duration>,
    pub rate_bytes_per_sec: Option<f64>,
    pub eta: Option<Duration>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    next_id: u64,
    active: Vec<(u64, Arc<UploadProgress>)>,
    recent: VecDeque<ProgressSnapshot>,
}

/// Told once per upload that began when it leaves the registry: `ok` when it finished, not
/// `ok` when it failed or was cancelled. Lets the daemon count outcomes without the core
/// depending on it.
pub trait UploadObserver: Send + Sync {
    fn upload_finished(&self, ok: bool);
}

/// The uploads of one mount, queued or running, plus the last few finished.
#[derive(Default)]
pub struct UploadRegistry {
    inner: Mutex<RegistryInner>,
    observer: OnceLock<Arc<dyn UploadObserver>>,
}

impl std::fmt::Debug for UploadRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadRegistry")
            .field("inner", &self.inner)
            .field("observer", &self.observer.get().is_some())
            .finish()
    }
}

impl UploadRegistry {
    pub fn new() -> Arc<UploadRegistry> {
        Arc::new(UploadRegistry::default())
    }

    /// Set who hears of finished uploads. Only the first call takes effect (`false` after).
    pub fn set_observer(&self, observer: Arc<dyn UploadObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Put an upload on the list (state `Queued`) until the ticket is dropped.
    pub fn register(self: &Arc<Self>, display: impl Into<String>, size: u64) -> UploadTicket {
        let progress = Arc::new(UploadProgress::new(display, size));
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = inner.next_id;
        inner.active.push((id, Arc::clone(&progress)));
        UploadTicket {
            registry: Arc::clone(self),
            id,
            progress,
        }
    }

    /// Uploads queued or running, in registration order.
    pub fn active(&self) -> Vec<ProgressSnapshot> {
        lock(&self.inner)
            .active
            .iter()
            .map(|(_, p)| p.snapshot())
            .collect()
    }

    /// The last finished uploads, most recent first.
    pub fn recent(&self) -> Vec<ProgressSnapshot> {
        lock(&self.inner).recent.iter().cloned().collect()
    }

    fn finish(&self, id: u64) {
        let ok = {
            let mut inner = lock(&self.inner);
            let Some(pos) = inner.active.iter().position(|(i, _)| *i == id) else {
                return;
            };
            let (_, p) = inner.active.remove(pos);
            if p.attempt.load(Ordering::Relaxed) == 0 {
                // Never started (e.g. the file was already clean when its turn came): not an
                // upload worth showing.
                return;
            }
            if !p.state().is_finished() {
                p.set_state(UploadState::Cancelled);
            }
            inner.recent.push_front(p.snapshot());
            inner.recent.truncate(RECENT_KEPT);
            p.state() == UploadState::Done
        };
        // Outside the lock: the observer may take its own.
        if let Some(observer) = self.observer.get() {
            observer.upload_finished(ok);
        }
    }
}

/// One registered upload; dropping it takes it off the active list.
#[derive(Debug)]
pub struct UploadTicket {
    registry: Arc<UploadRegistry>,
    id: u64,
    progress: Arc<UploadProgress>,
}

impl UploadTicket {
    pub fn progress(&self) -> &Arc<UploadProgress> {
        &self.progress
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        self.registry.finish(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_and_finishes() {
        let reg = UploadRegistry::new();
        let a = reg.register("a.txt", 10);
        let b = reg.register("b.txt", 20);
        let never = reg.register("c.txt", 30);
        assert_eq!(reg.active().len(), 3);
        drop(never);
        assert_eq!(reg.active().len(), 2);
        assert!(
            reg.recent().is_empty(),
            "a ticket that never started leaves no trace"
        );
        a.progress().begin_attempt(10);
        b.progress().begin_attempt(20);
        a.progress().add_sent(4);
        let snap = reg
            .active()
            .into_iter()
            .find(|s| s.display == "a.txt")
            .expect("listed");
        assert_eq!(
            (snap.sent, snap.size, snap.state, snap.attempt),
            (4, 10, UploadState::Creating, 1)
        );
        a.progress().set_state(UploadState::Done);
        drop(a);
        drop(b);
        assert!(reg.active().is_empty());
        let recent = reg.recent();
        assert_eq!(recent.len(), 2);
        // b was dropped last and never finished: most recent, cancelled.
        assert_eq!(
            (recent[0].display.as_str(), recent[0].state),
            ("b.txt", UploadState::Cancelled)
        );
        assert_eq!(
            (recent[1].display.as_str(), recent[1].state),
            ("a.txt", UploadState::Done)
        );
    }

    #[derive(Default)]
    struct Outcomes(Mutex<Vec<bool>>);

    impl UploadObserver for Outcomes {
        fn upload_finished(&self, ok: bool) {
            lock(&self.0).push(ok);
        }
    }

    #[test]
    fn observer_hears_each_begun_upload_once() {
        let reg = UploadRegistry::new();
        let seen = Arc::new(Outcomes::default());
        assert!(reg.set_observer(seen.clone()));
        assert!(!reg.set_observer(Arc::new(Outcomes::default())));
        let done = reg.register("done.txt", 1);
        let failed = reg.register("failed.txt", 1);
        let cancelled = reg.register("cancelled.txt", 1);
        let never = reg.register("never.txt", 1);
        for t in [&done, &failed, &cancelled] {
            t.progress().begin_attempt(1);
        }
        done.progress().set_state(UploadState::Done);
        failed.progress().fail("refused".into());
        drop(never);
        assert!(lock(&seen.0).is_empty(), "never began: not an outcome");
        drop(done);
        drop(failed);
        drop(cancelled);
        assert_eq!(*lock(&seen.0), vec![true, false, false]);
    }

    #[test]
    fn recent_is_bounded() {
        let reg = UploadRegistry::new();
        for i in 0..(RECENT_KEPT + 5) {
            let t = reg.register(format!("f{i}"), 1);
            t.progress().begin_attempt(1);
        }
        assert_eq!(reg.recent().len(), RECENT_KEPT);
        assert_eq!(reg.recent()[0].display, format!("f{}", RECENT_KEPT + 4));
    }

    #[test]
    fn part_buffers_are_counted() {
        let p = Arc::new(UploadProgress::new("x", 0));
        let g1 = p.part_buffer();
        let g2 = p.part_buffer();
        drop(g1);
        let _g3 = p.part_buffer();
        drop(g2);
        assert_eq!(p.max_parts_in_memory(), 2);
    }
}
