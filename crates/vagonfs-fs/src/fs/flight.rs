//! Single-flight: concurrent requests for the same key share one fetch.
//!
//! Used for folder listings, download links, capacity and data blocks. The fetch runs in its own
//! tokio task, so it completes (and fills whatever cache its future fills) even when every waiter
//! went away (an interrupted syscall drops the waiting future); a caller that arrives while it
//! runs joins it instead of sending a second request.
//!
//! Subtle cases handled here:
//! - the entry is removed by the fetch task itself when it finishes, under the same lock that
//!   registered it, and only if it is still the same fetch (a generation number); the removal is
//!   a drop guard inside the task, so a fetch that panics or is cancelled is removed too and
//!   cannot poison its key for the life of the mount; a later caller
//!   either joins the running fetch or finds what the fetch left in its cache, never a finished
//!   stale entry;
//! - the task is spawned while the registering lock is held; `tokio::spawn` never polls inline,
//!   so the task's own removal always happens after the registration;
//! - errors are not cached: a failed fetch is forgotten and the next caller tries again;
//! - a task that panics or is cancelled by runtime shutdown becomes an `FsError::Io` for the
//!   waiters, never a panic in the caller.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::{FsError, FsResult, lock};

/// The shared handle on a running fetch.
pub(crate) type Flight<V> = Shared<BoxFuture<'static, FsResult<V>>>;

struct Inner<K, V> {
    next_gen: u64,
    running: HashMap<K, (u64, Flight<V>)>,
}

/// A map of running fetches by key.
pub(crate) struct SingleFlight<K, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        SingleFlight {
            inner: Arc::new(Mutex::new(Inner {
                next_gen: 0,
                running: HashMap::new(),
            })),
        }
    }

    /// Join the fetch running for `key`, or start the one `make` builds.
    pub(crate) async fn run<F, Fut>(&self, key: K, make: F) -> FsResult<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = FsResult<V>> + Send + 'static,
    {
        match self.join_or_start(key, || Some(make())) {
            Some(flight) => flight.await,
            // `make` always builds a fetch, so there is always a flight to wait on.
            None => Err(FsError::Io(std::io::Error::other(
                "single-flight lost its fetch",
            ))),
        }
    }

    /// Join the fetch running for `key`, or start the one `make` builds; `make` may decline
    /// (answer `None`, e.g. a prefetch with no memory left), in which case nothing runs. `make`
    /// is called with this map's lock held: it must be quick and must not touch this map.
    pub(crate) fn join_or_start<F, Fut>(&self, key: K, make: F) -> Option<Flight<V>>
    where
        F: FnOnce() -> Option<Fut>,
        Fut: Future<Output = FsResult<V>> + Send + 'static,
    {
        let mut guard = lock(&self.inner);
        if let Some((_, flight)) = guard.running.get(&key) {
            return Some(flight.clone());
        }
        let fetch = make()?;
        let generation = guard.next_gen;
        guard.next_gen += 1;
        let inner = Arc::clone(&self.inner);
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            // Removes the entry however the fetch ends: finished, failed, panicked, or
            // cancelled by runtime shutdown. Without it a panicking fetch would leave its entry
            // behind, and every later caller would join a flight that can only fail.
            let _done = Deregister {
                inner,
                key: Some(task_key),
                generation,
            };
            fetch.await
        });
        let flight = async move {
            match task.await {
                Ok(result) => result,
                Err(join) => Err(FsError::Io(std::io::Error::other(format!(
                    "background fetch did not finish: {join}"
                )))),
            }
        }
        .boxed()
        .shared();
        guard.running.insert(key, (generation, flight.clone()));
        Some(flight)
    }

    /// Whether a fetch for `key` is running.
    pub(crate) fn is_running(&self, key: &K) -> bool {
        lock(&self.inner).running.contains_key(key)
    }

    /// Number of fetches running.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).running.len()
    }

    /// Wait until no fetch is running (including fetches started meanwhile). Errors of the
    /// fetches are their waiters' business and are ignored here.
    pub(crate) async fn idle(&self) {
        loop {
            let flights: Vec<Flight<V>> = lock(&self.inner)
                .running
                .values()
                .map(|(_, f)| f.clone())
                .collect();
            if flights.is_empty() {
                return;
            }
            for flight in flights {
                let _ = flight.await;
            }
        }
    }
}

/// Removes a fetch's entry from the map when dropped, if the entry is still that fetch's.
struct Deregister<K: Eq + Hash, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
    key: Option<K>,
    generation: u64,
}

impl<K: Eq + Hash, V> Drop for Deregister<K, V> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut guard = lock(&self.inner);
        if matches!(guard.running.get(&key), Some((g, _)) if *g == self.generation) {
            guard.running.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let flight: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::new());
        let calls = Arc::new(AtomicU32::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let flight = Arc::clone(&flight);
            let calls = Arc::clone(&calls);
            let rx = Arc::clone(&rx);
            waiters.push(tokio::spawn(async move {
                flight
                    .run(7, move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let rx = lock(&rx).take();
                        async move {
                            if let Some(rx) = rx {
                                let _ = rx.await;
                            }
                            Ok(42)
                        }
                    })
                    .await
            }));
        }
        // Let every waiter register before the fetch may finish.
        while flight.len() == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let _ = tx.send(());
        for w in waiters {
            assert_eq!(w.await.ok().and_then(|r| r.ok()), Some(42));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        flight.idle().await;
        assert_eq!(flight.len(), 0);
    }

    #[tokio::test]
    async fn errors_are_not_kept() {
        let flight: SingleFlight<u32, u32> = SingleFlight::new();
        let first = flight.run(1, || async { Err(FsError::NotFound) }).await;
        assert!(matches!(first, Err(FsError::NotFound)));
        flight.idle().await;
        let second = flight.run(1, || async { Ok(5) }).await;
        assert_eq!(second.ok(), Some(5));
    }

    #[tokio::test]
    async fn a_panicking_fetch_does_not_poison_its_key() {
        let flight: SingleFlight<u32, u32> = SingleFlight::new();
        let first = flight
            .run(9, || async {
                if true {
                    panic!("fetch blew up");
                }
                Ok(0)
            })
            .await;
        assert!(matches!(first, Err(FsError::Io(_))));
        flight.idle().await;
        assert_eq!(flight.len(), 0);
        let second = flight.run(9, || async { Ok(6) }).await;
        assert_eq!(second.ok(), Some(6));
    }

    #[tokio::test]
    async fn declined_start_runs_nothing() {
        let flight: SingleFlight<u32, u32> = SingleFlight::new();
        let started = flight.join_or_start(3, || None::<futures::future::Ready<FsResult<u32>>>);
        assert!(started.is_none());
        assert_eq!(flight.len(), 0);
    }
}
