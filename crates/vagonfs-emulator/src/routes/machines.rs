//! `GET /machines` and `POST /machines/{id}/list-content`.
//!
//! Machine 1 is "ready" (running), every other machine "off". Listing the live disk of a machine
//! that is off is 400 (as the service answers "machine is not running"); an unknown machine 404.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;

use super::{QueryParams, field_str, json_object, next_page, path_id};
use crate::emulator::AppState;
use crate::emulator::live::{self, LiveError, LiveItem};
use crate::emulator::reply::{Failure, Reply, Resource, ok};
use crate::emulator::store::machine_name;

/// The machine that is running; the others are off.
pub const READY_MACHINE: u64 = 1;

/// Status of machine `m`, as the API spells it.
pub fn machine_status(m: u64) -> &'static str {
    if m == READY_MACHINE { "ready" } else { "off" }
}

#[derive(Debug, Serialize)]
struct MachineAttributes {
    name: String,
    status: &'static str,
}

#[derive(Debug, Serialize)]
struct MachineList {
    machines: Vec<Resource<MachineAttributes>>,
    count: u64,
    page: u64,
    next_page: Option<u64>,
}

/// `GET /machines`
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let (page, per_page) = QueryParams::parse(query.as_deref()).paging()?;
    let count = state.store.machines();
    let first = page
        .saturating_sub(1)
        .saturating_mul(per_page)
        .saturating_add(1);
    let last = first.saturating_add(per_page - 1).min(count);
    let machines = (first..=last)
        .map(|m| {
            Resource::new(
                m,
                "machine",
                MachineAttributes {
                    name: machine_name(m),
                    status: machine_status(m),
                },
            )
        })
        .collect();
    Ok(ok(MachineList {
        machines,
        count,
        page,
        next_page: next_page(page, per_page, count),
    }))
}

#[derive(Debug, Serialize)]
struct Content {
    content: Vec<LiveItem>,
}

/// `POST /machines/{id}/list-content`
pub async fn list_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let machine = path_id(&id, "machine id")?;
    if state.store.machine_storage(machine).is_none() {
        return Err(Failure::not_found(format!("machine {machine} not found")));
    }
    if machine_status(machine) != "ready" {
        return Err(Failure::bad_request(format!(
            "machine {machine} is not running"
        )));
    }
    let map = json_object(&body)?;
    let path = field_str(&map, "path")?
        .ok_or_else(|| Failure::bad_request("path is required (e.g. C:\\Users)"))?
        .to_string();
    let root = live::machine_root(&state.store.dirs().live, machine);
    let listed = tokio::task::spawn_blocking(move || live::list(&root, &path))
        .await
        .map_err(|e| Failure::internal(format!("listing task failed: {e}")))?;
    match listed {
        Ok(content) => Ok(ok(Content { content })),
        Err(e @ LiveError::NotFound(_)) => Err(Failure::not_found(e.to_string())),
        Err(e @ (LiveError::BadPath(_) | LiveError::NotAFolder(_))) => {
            Err(Failure::bad_request(e.to_string()))
        }
        Err(e @ LiveError::Io(_)) => Err(Failure::internal(e.to_string())),
    }
}
