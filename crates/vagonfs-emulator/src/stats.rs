//! Request counts per endpoint family, for tests that check what a client sent (did it cache a
//! listing? did it reuse a download link?).
//!
//! Every request that reaches a known route is counted once, whatever its outcome (401, an
//! injected 503, a reset), so retries show up. Families are named after the `FilesApi` methods
//! plus `data_get` / `data_put` for the presigned data plane; every family is always present in
//! a snapshot, 0 when unused. Requests to unknown paths and to the `/_emulator/` hooks are not
//! counted.
//!
//! Besides counts, the most requests of each family that were being handled at the same moment
//! (injected latency included) are kept ([`Stats::peaks`], `GET /_emulator/peaks`), so a test can
//! tell pages fetched in parallel from pages fetched one after the other. A request whose client
//! went away still leaves the in-flight count (a guard drops it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Every family, in the order they are listed.
pub const FAMILIES: &[&str] = &[
    "list_machines",
    "list_files",
    "create",
    "complete",
    "delete",
    "request_download",
    "download_status",
    "file_link",
    "capacity",
    "list_content",
    "data_put",
    "data_get",
];

/// Which family a `(method, route pattern)` belongs to; filled while the router is built.
pub type FamilyTable = HashMap<(Method, String), &'static str>;

/// The counters.
#[derive(Debug)]
pub struct Stats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// `(in flight now, most in flight at once)` by family.
    flight: Mutex<HashMap<&'static str, (u64, u64)>>,
    families: Arc<FamilyTable>,
}

/// One request of a family being handled; leaves the in-flight count when dropped.
struct InFlight<'a> {
    stats: &'a Stats,
    family: &'static str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut flight = self.stats.flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((now, _)) = flight.get_mut(self.family) {
            *now = now.saturating_sub(1);
        }
    }
}

impl Stats {
    pub fn new(families: Arc<FamilyTable>) -> Self {
        Stats {
            counts: Mutex::new(Self::zeroed()),
            flight: Mutex::new(HashMap::new()),
            families,
        }
    }

    fn zeroed() -> BTreeMap<&'static str, u64> {
        FAMILIES.iter().map(|f| (*f, 0)).collect()
    }

    pub(crate) fn family(&self, method: &Method, route: &str) -> Option<&'static str> {
        // HEAD is served by the GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.families
            .get(&(method.clone(), route.to_string()))
            .copied()
    }

    pub fn hit(&self, family: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(family)
            .or_default() += 1;
    }

    /// Counts by family name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Most requests of each family handled at once since the start (or the last reset); every
    /// family present, 0 when unused.
    pub fn peaks(&self) -> BTreeMap<String, u64> {
        let flight = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        FAMILIES
            .iter()
            .map(|f| (f.to_string(), flight.get(f).map_or(0, |(_, peak)| *peak)))
            .collect()
    }

    fn enter(&self, family: &'static str) -> InFlight<'_> {
        let mut flight = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        let (now, peak) = flight.entry(family).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
        InFlight {
            stats: self,
            family,
        }
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = Self::zeroed();
        // Requests still running keep counting down from what they are now.
        for (now, peak) in self
            .flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            *peak = *now;
        }
    }
}

/// Middleware: count the request under its route's family.
pub async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let family = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| state.stats.family(req.method(), route.as_str()));
    let _in_flight = family.map(|family| {
        state.stats.hit(family);
        state.stats.enter(family)
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_family_and_resets() {
        let mut table = FamilyTable::new();
        table.insert((Method::GET, "/x/{id}".into()), "data_get");
        let s = Stats::new(Arc::new(table));
        assert_eq!(s.family(&Method::HEAD, "/x/{id}"), Some("data_get"));
        assert_eq!(s.family(&Method::POST, "/x/{id}"), None);
        s.hit("data_get");
        s.hit("data_get");
        let snap = s.snapshot();
        assert_eq!(snap["data_get"], 2);
        assert_eq!(snap["list_files"], 0);
        assert_eq!(snap.len(), FAMILIES.len());
        s.reset();
        assert_eq!(s.snapshot()["data_get"], 0);
        {
            let _a = s.enter("list_files");
            let _b = s.enter("list_files");
        }
        let _c = s.enter("list_files");
        assert_eq!(s.peaks()["list_files"], 2);
        assert_eq!(s.peaks()["data_get"], 0);
        s.reset();
        assert_eq!(s.peaks()["list_files"], 1, "one still running");
    }
}
