//! Listings (shared, per machine, session recordings), create, complete, delete, capacity.
//!
//! Subtle cases: a file create answers one presigned PUT URL per part (`ceil(size / chunk)`,
//! at least one) and the file stays invisible until complete; `chunk_size` is MiB, 1 to
//! [`MAX_CHUNK_MB`], and a create needing more than [`MAX_PARTS`] parts is 400 (as S3 limits
//! multipart uploads); `size` must fit a signed 64-bit integer (SQLite's); the recordings tree
//! is read-only (403 on create inside it, on delete).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::{
    QueryParams, base_url, blocking, field_bool, field_id, field_str, json_object, next_page,
    path_id,
};
use crate::api::ObjectType;
use crate::emulator::AppState;
use crate::emulator::reply::{Failure, Reply, Resource, iso_from_ms, ok, ok_empty};
use crate::emulator::store::{Entry, Listing, StorageInfo, Target, UploadSpec, check_name};

/// `chunk_size` when the client does not say, MiB.
pub const DEFAULT_CHUNK_MB: u64 = 250;
/// Largest `chunk_size`, MiB (S3's largest part, 5 GiB).
pub const MAX_CHUNK_MB: u64 = 5 * 1024;
/// Most parts one upload may have (S3's limit).
pub const MAX_PARTS: u64 = 10_000;
/// Bytes in a MiB (`chunk_size` is in "MB" that are MiB in practice).
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct FileAttributes {
    pub name: String,
    pub object_type: &'static str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub last_modified_date: String,
    pub parent_id: u64,
}

#[derive(Debug, Serialize)]
struct CurrentAttributes {
    name: String,
    object_type: &'static str,
    path: String,
    parent_id: Option<u64>,
}

#[derive(Debug, Serialize)]
struct FileList {
    files: Vec<Resource<FileAttributes>>,
    current: Resource<CurrentAttributes>,
    count: u64,
    page: u64,
    next_page: Option<u64>,
}

fn object_type(e: &Entry) -> ObjectType {
    if e.is_dir {
        ObjectType::Directory
    } else {
        ObjectType::File
    }
}

/// The JSON:API view of an entry.
pub fn file_resource(state: &AppState, e: &Entry) -> Resource<FileAttributes> {
    Resource::new(
        e.id,
        "file",
        FileAttributes {
            name: e.name.clone(),
            object_type: object_type(e).as_str(),
            size: if e.is_dir { 0 } else { e.size },
            content_type: if e.is_dir {
                None
            } else {
                e.content_type.clone()
            },
            last_modified_date: iso_from_ms(e.modified_ms),
            parent_id: state.store.api_parent_id(e),
        },
    )
}

async fn list_in(
    state: &AppState,
    storage: StorageInfo,
    owner: Option<u64>,
    query: Option<String>,
) -> Reply {
    let q = QueryParams::parse(query.as_deref());
    let parent = q.id("parent_id")?;
    let (page, per_page) = q.paging()?;
    let search = q.search().map(str::to_string);
    let listing: Listing = blocking(state, move |s| {
        s.list(storage, parent, owner, page, per_page, search.as_deref())
    })
    .await?;
    let folder = listing.folder;
    Ok(ok(FileList {
        files: listing
            .items
            .iter()
            .map(|e| file_resource(state, e))
            .collect(),
        current: Resource::new(
            folder.id,
            "file",
            CurrentAttributes {
                name: folder.name,
                object_type: ObjectType::Directory.as_str(),
                path: folder.path,
                parent_id: folder.parent_id,
            },
        ),
        count: listing.count,
        page,
        next_page: next_page(page, per_page, listing.count),
    }))
}

/// `GET /files`
pub async fn list_shared(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let storage = state.store.shared();
    list_in(&state, storage, None, query).await
}

/// `GET /machines/{id}/files`
pub async fn list_machine(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let machine = path_id(&id, "machine id")?;
    let storage = state
        .store
        .machine_storage(machine)
        .ok_or_else(|| Failure::not_found(format!("machine {machine} not found")))?;
    list_in(&state, storage, None, query).await
}

/// `GET /files/session-recordings`
pub async fn list_recordings(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let machine = QueryParams::parse(query.as_deref()).id("machine_id")?;
    if let Some(m) = machine
        && state.store.machine_storage(m).is_none()
    {
        return Err(Failure::not_found(format!("machine {m} not found")));
    }
    let storage = state.store.recordings();
    list_in(&state, storage, machine, query).await
}

#[derive(Debug, Serialize)]
struct CreatedDir {
    id: u64,
    uid: String,
}

#[derive(Debug, Serialize)]
struct CreatedFile {
    id: u64,
    uid: String,
    chunk_size: u64,
    upload_urls: Vec<String>,
}

/// `POST /files`
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Reply {
    let map = json_object(&body)?;
    let name = field_str(&map, "file_name")?
        .ok_or_else(|| Failure::bad_request("file_name is required"))?
        .to_string();
    check_name(&name).map_err(|e| Failure::bad_request(e.to_string()))?;
    let kind = match field_str(&map, "object_type")? {
        Some("file") => ObjectType::File,
        Some("directory") => ObjectType::Directory,
        Some(other) => {
            return Err(Failure::bad_request(format!(
                "object_type must be \"file\" or \"directory\", got {other:?}"
            )));
        }
        None => return Err(Failure::bad_request("object_type is required")),
    };
    let target = Target {
        machine_id: field_id(&map, "machine_id")?,
        parent_id: field_id(&map, "parent_id")?,
    };
    let overwrite = field_bool(&map, "overwrite")?.unwrap_or(false);
    if kind == ObjectType::Directory {
        let entry = blocking(&state, move |s| s.create_dir(target, &name)).await?;
        return Ok(ok(CreatedDir {
            id: entry.id,
            uid: entry.uid,
        }));
    }
    let content_type = match field_str(&map, "content_type")? {
        Some(ct) if !ct.trim().is_empty() => ct.to_string(),
        _ => return Err(Failure::bad_request("content_type is required for files")),
    };
    let size = field_id(&map, "size")?
        .ok_or_else(|| Failure::bad_request("size is required for files"))?;
    if i64::try_from(size).is_err() {
        return Err(Failure::bad_request("size is too large"));
    }
    let chunk_mb = field_id(&map, "chunk_size")?.unwrap_or(DEFAULT_CHUNK_MB);
    if !(1..=MAX_CHUNK_MB).contains(&chunk_mb) {
        return Err(Failure::bad_request(format!(
            "chunk_size must be between 1 and {MAX_CHUNK_MB} (MB)"
        )));
    }
    let chunk_bytes = chunk_mb * MIB;
    if UploadSpec::part_count(size, chunk_bytes) > MAX_PARTS {
        return Err(Failure::bad_request(format!(
            "an upload may have at most {MAX_PARTS} parts: use a larger chunk_size"
        )));
    }
    let spec = UploadSpec {
        target,
        name,
        content_type,
        size,
        chunk_bytes,
        overwrite,
    };
    let (entry, parts) = blocking(&state, move |s| s.begin_upload(&spec)).await?;
    let base = base_url(&state, &headers);
    let upload_urls = (1..=parts)
        .map(|n| {
            state.presign.url(
                &base,
                "PUT",
                &super::data::part_path(entry.id, n),
                state.config.upload_link_ttl,
            )
        })
        .collect();
    Ok(ok(CreatedFile {
        id: entry.id,
        uid: entry.uid,
        chunk_size: chunk_mb,
        upload_urls,
    }))
}

#[derive(Debug, Serialize)]
struct CompletedBody {
    uid: String,
    download_url: String,
}

/// `POST /files/{id}/complete`
pub async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let id = path_id(&id, "file id")?;
    let map = json_object(&body)?;
    let parts = map
        .get("parts")
        .and_then(|p| p.as_array())
        .ok_or_else(|| Failure::bad_request("parts must be an array of {part_number, etag}"))?;
    let mut claimed = Vec::with_capacity(parts.len());
    for part in parts {
        let Some(obj) = part.as_object() else {
            return Err(Failure::bad_request(
                "each part must be an object {part_number, etag}",
            ));
        };
        let n = field_id(obj, "part_number")?
            .filter(|n| *n >= 1)
            .ok_or_else(|| Failure::bad_request("part_number must be an integer of at least 1"))?;
        let etag =
            field_str(obj, "etag")?.ok_or_else(|| Failure::bad_request("etag is required"))?;
        claimed.push((n, etag.to_string()));
    }
    let entry = blocking(&state, move |s| s.complete(id, &claimed)).await?;
    let url = super::downloads::file_url(&state, &headers, entry.id);
    Ok(ok(CompletedBody {
        uid: entry.uid,
        download_url: url,
    }))
}

/// `DELETE /files/{id}`
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Reply {
    let id = path_id(&id, "file id")?;
    blocking(&state, move |s| s.delete(id)).await?;
    Ok(ok_empty())
}

#[derive(Debug, Serialize)]
struct Usage {
    total: u64,
    in_use: u64,
}

#[derive(Debug, Serialize)]
struct CapacityBody {
    total: u64,
    in_use: u64,
    team: Usage,
}

/// `GET /files/capacity?machine_id=…`: one storage (a machine's, or the shared one) and the
/// whole team (shared plus every machine).
pub async fn capacity(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let machine = QueryParams::parse(query.as_deref()).id("machine_id")?;
    let storage = match machine {
        Some(m) => state
            .store
            .machine_storage(m)
            .ok_or_else(|| Failure::not_found(format!("machine {m} not found")))?,
        None => state.store.shared(),
    };
    let (in_use, team_in_use, storages) = blocking(&state, move |s| {
        let mut team = s.usage(s.shared())?;
        for m in 1..=s.machines() {
            if let Some(st) = s.machine_storage(m) {
                team = team.saturating_add(s.usage(st)?);
            }
        }
        Ok((s.usage(storage)?, team, s.machines() + 1))
    })
    .await?;
    let quota = state.store.quota();
    Ok(ok(CapacityBody {
        total: quota,
        in_use,
        team: Usage {
            total: quota.saturating_mul(storages),
            in_use: team_in_use,
        },
    }))
}
