//! Test hooks under `/_emulator/` (no HMAC, never faulted, not counted):
//! - `GET /_emulator/stats`: request counts per endpoint family, e.g.
//!   `{"list_files": 3, "file_link": 1, "data_get": 2, ...}` (every family present);
//! - `GET /_emulator/peaks`: the most requests of each family handled at once (e.g. pages of
//!   one listing fetched in parallel);
//! - `POST /_emulator/reset-stats`: zero them (counts and peaks);
//! - `GET /_emulator/faults`, `POST /_emulator/faults`: read or change the injected fault rates;
//!   the body holds any of `fail_rate`, `throttle_rate`, `reset_rate` (0..1) and `latency_ms`,
//!   and `schedule`, exact faults for the next requests of an endpoint family, e.g.
//!   `[{"family": "complete", "fault": "drop_answer"}, {"family": "list_files", "count": 2,
//!   "fault": "throttle", "retry_after": "99999999999999999999"}]` (see `faults.rs`); answers the
//!   rates now in force;
//! - `POST /_emulator/raw-entry`: insert an entry bypassing validation, for hostile-data tests:
//!   `{"name": "a/b", "object_type": "file"|"directory", "parent_id": 0, "machine_id": 1,
//!     "recordings": false, "content": "text" | "content_base64": "...", "size": 999,
//!     "content_type": "text/plain"}`; `size` (declared) defaults to the content's length and may
//!   differ from it; names may be empty, `..`, contain `/` or NUL, or repeat. Answers
//!   `{"id": n, "uid": "..."}`. Only the parent must exist.
//! - `POST /_emulator/bulk-folders`: `{"count": 10000, "prefix": "d", "parent_id": 7,
//!   "machine_id": 1}` inserts `count` (at most [`MAX_BULK`]) empty folders `d000000`, `d000001`,
//!   ... in one transaction, for big-folder tests and benchmarks; answers
//!   `{"count", "first_id", "last_id"}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;

use super::blocking;
use crate::api::ObjectType;
use crate::emulator::AppState;
use crate::emulator::faults::FaultPatch;
use crate::emulator::reply::{Failure, Reply, ok, ok_empty};
use crate::emulator::store::{DEFAULT_CONTENT_TYPE, NewEntry, Target};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/peaks", get(peaks))
        .route("/_emulator/reset-stats", post(reset_stats))
        .route("/_emulator/faults", get(faults).post(set_faults))
        .route("/_emulator/raw-entry", post(raw_entry))
        .route("/_emulator/bulk-folders", post(bulk_folders))
}

async fn stats(State(state): State<AppState>) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(state.stats.snapshot())
}

async fn peaks(State(state): State<AppState>) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(state.stats.peaks())
}

async fn reset_stats(State(state): State<AppState>) -> Reply {
    state.stats.reset();
    Ok(ok_empty())
}

async fn faults(State(state): State<AppState>) -> Reply {
    Ok(ok(state.faults.get()))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::bad_request(format!("invalid body: {e}")))
}

async fn set_faults(State(state): State<AppState>, body: Bytes) -> Reply {
    let patch: FaultPatch = parse(&body)?;
    let now = state
        .faults
        .apply(patch)
        .map_err(|e| Failure::bad_request(e.to_string()))?;
    tracing::info!(?now, "fault injection changed");
    Ok(ok(now))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    object_type: ObjectType,
    #[serde(default)]
    parent_id: Option<u64>,
    #[serde(default)]
    machine_id: Option<u64>,
    #[serde(default)]
    recordings: bool,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    content_base64: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    content_type: Option<String>,
}

/// Most folders one `bulk-folders` call inserts.
pub const MAX_BULK: u64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkFolders {
    count: u64,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    parent_id: Option<u64>,
    #[serde(default)]
    machine_id: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct BulkInserted {
    count: u64,
    first_id: u64,
    last_id: u64,
}

async fn bulk_folders(State(state): State<AppState>, body: Bytes) -> Reply {
    let bulk: BulkFolders = parse(&body)?;
    if bulk.count == 0 || bulk.count > MAX_BULK {
        return Err(Failure::bad_request(format!(
            "count must be between 1 and {MAX_BULK}"
        )));
    }
    if bulk.prefix.contains('/') || bulk.prefix.len() > 200 {
        return Err(Failure::bad_request("prefix: no '/', at most 200 bytes"));
    }
    let target = Target {
        machine_id: bulk.machine_id,
        parent_id: bulk.parent_id,
    };
    let count = bulk.count;
    let (first_id, last_id) = blocking(&state, move |s| {
        s.insert_folders(target, &bulk.prefix, count)
    })
    .await?;
    Ok(ok(BulkInserted {
        count,
        first_id,
        last_id,
    }))
}

#[derive(Debug, serde::Serialize)]
struct Inserted {
    id: u64,
    uid: String,
}

async fn raw_entry(State(state): State<AppState>, body: Bytes) -> Reply {
    let raw: RawEntry = parse(&body)?;
    let content = match (raw.content, raw.content_base64) {
        (Some(_), Some(_)) => {
            return Err(Failure::bad_request(
                "give content or content_base64, not both",
            ));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Failure::bad_request(format!("content_base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let is_dir = raw.object_type == ObjectType::Directory;
    if is_dir && !content.is_empty() {
        return Err(Failure::bad_request("a directory has no content"));
    }
    if let Some(size) = raw.size
        && i64::try_from(size).is_err()
    {
        return Err(Failure::bad_request("size is too large"));
    }
    let new = NewEntry {
        target: Target {
            machine_id: raw.machine_id,
            parent_id: raw.parent_id,
        },
        recordings: raw.recordings,
        owner_machine: if raw.recordings { raw.machine_id } else { None },
        name: raw.name,
        is_dir,
        size: raw.size,
        content,
        content_type: if is_dir {
            None
        } else {
            raw.content_type
                .or_else(|| Some(DEFAULT_CONTENT_TYPE.into()))
        },
        modified_ms: None,
    };
    let entry = blocking(&state, move |s| s.insert_raw(new)).await?;
    Ok(ok(Inserted {
        id: entry.id,
        uid: entry.uid,
    }))
}
