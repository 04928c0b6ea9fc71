//! The decoders of each endpoint's answer into the domain types of [`crate::api`].
//!
//! Subtle cases: a directory's size is always 0 (a bad `size` on one does not cost it); a
//! created file's upload URLs must match the part count its size and chunk size give; a
//! download job is `processing`, `ready` or `failed` under several spellings; the live content
//! listing comes in two shapes (entries with a type, or separate file and folder lists).

use serde_json::Value;

use super::object::*;
use super::scalar::*;
use super::{JsonObject, WireError, WireResult};
use crate::api::{
    Capacity, Completed, Created, CurrentFolder, DownloadLink, DownloadRequested, DownloadState,
    DownloadStatus, FileEntry, FilePage, LiveEntry, Machine, MachinePage, ObjectType,
};

/// Keys under which a listing's items may arrive, in the order tried.
const FILE_LIST_KEYS: &[&str] = &["files", "data", "session_recordings", "recordings", "items"];
/// Keys under which the machine list may arrive.
const MACHINE_LIST_KEYS: &[&str] = &["machines", "data", "items"];

/// An `object_type` value.
pub(super) fn object_type(v: &Value) -> WireResult<ObjectType> {
    match v {
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(ObjectType::File),
            "directory" | "folder" | "dir" => Ok(ObjectType::Directory),
            _ => Err(WireError::new(format!(
                "unknown object_type {}",
                snippet(s, 40)
            ))),
        },
        other => Err(WireError::new(format!(
            "object_type has the wrong type ({})",
            type_name(other)
        ))),
    }
}

/// One listed file or folder (flat or JSON:API).
pub fn file_entry(v: &Value) -> WireResult<FileEntry> {
    let r = Resource::from_value(v, "item")?;
    let id = r.required_id("id")?;
    let name = r.required_str("name")?.to_string();
    let object_type = object_type(r.required("object_type")?)?;
    let size = match object_type {
        ObjectType::Directory => 0,
        ObjectType::File => r.required_u64("size")?,
    };
    let modified = r.get("last_modified_date").and_then(|d| {
        let parsed = parse_date(d);
        if parsed.is_none() {
            tracing::debug!(id, date = %snippet(&d.to_string(), 60), "unreadable last_modified_date");
        }
        parsed
    });
    Ok(FileEntry {
        id,
        name,
        object_type,
        size,
        content_type: r.lenient_str("content_type").map(str::to_string),
        modified,
        parent_id: r.lenient_u64("parent_id"),
    })
}

/// The `current` folder of a listing. An unusable `current` is dropped (it is informative).
pub(super) fn current_folder(v: &Value) -> Option<CurrentFolder> {
    let r = Resource::from_value(v, "current").ok()?;
    Some(CurrentFolder {
        id: r.lenient_u64("id")?,
        name: r.lenient_str("name").unwrap_or_default().to_string(),
        path: r.lenient_str("path").map(str::to_string),
        parent_id: r.lenient_u64("parent_id"),
    })
}

/// A page of `GET /files`, `GET /machines/{id}/files` or the session recordings.
pub fn file_page(obj: &JsonObject, requested_page: u32) -> WireResult<FilePage> {
    let items = list_under(obj, FILE_LIST_KEYS)?;
    let p = paging(obj, requested_page)?;
    Ok(FilePage {
        entries: decode_items(items, "list item", file_entry),
        current: obj.get("current").and_then(current_folder),
        count: p.count,
        page: p.page,
        next_page: p.next_page,
    })
}

pub(super) fn machine(v: &Value) -> WireResult<Machine> {
    let r = Resource::from_value(v, "machine")?;
    Ok(Machine {
        id: r.required_id("id")?,
        // A machine with no name is still reachable by id; the fs layer names its folder.
        name: r.optional_str("name")?.unwrap_or_default().to_string(),
        status: r.lenient_str("status").unwrap_or_default().to_string(),
    })
}

/// A page of `GET /machines`.
pub fn machine_page(obj: &JsonObject, requested_page: u32) -> WireResult<MachinePage> {
    let items = list_under(obj, MACHINE_LIST_KEYS)?;
    let p = paging(obj, requested_page)?;
    Ok(MachinePage {
        machines: decode_items(items, "machine", machine),
        count: p.count,
        page: p.page,
        next_page: p.next_page,
    })
}

/// `POST /files` answer. For a file, `upload_urls` must hold `ceil(size / chunk)` URLs.
pub fn created(
    obj: &JsonObject,
    object_type: ObjectType,
    size: Option<u64>,
    requested_chunk_mb: Option<u64>,
) -> WireResult<Created> {
    // A created object may come back flat or wrapped under `file` / `data`.
    let r = payload(obj, &["file", "data"]);
    let id = r.required_id("id")?;
    let uid = r.lenient_str("uid").map(str::to_string);
    if object_type == ObjectType::Directory {
        return Ok(Created {
            id,
            uid,
            chunk_size_mb: None,
            upload_urls: Vec::new(),
        });
    }
    let chunk_size_mb = r.optional_u64("chunk_size")?.or(requested_chunk_mb);
    let urls = match r.required("upload_urls")? {
        Value::Array(urls) => urls,
        other => {
            return Err(WireError::new(format!(
                "upload_urls is not an array ({})",
                type_name(other)
            )));
        }
    };
    let upload_urls = urls
        .iter()
        .enumerate()
        .map(|(i, u)| match u {
            Value::String(s) => check_url(s, &format!("upload_urls[{i}]")),
            other => Err(WireError::new(format!(
                "upload_urls[{i}] is not a string ({})",
                type_name(other)
            ))),
        })
        .collect::<WireResult<Vec<_>>>()?;
    if upload_urls.is_empty() {
        return Err(WireError::new("upload_urls is empty"));
    }
    if let (Some(size), Some(chunk)) = (size, chunk_size_mb) {
        let expected = expected_parts(size, chunk)
            .ok_or_else(|| WireError::new(format!("chunk_size {chunk} MB is unusable")))?;
        if upload_urls.len() as u64 != expected {
            return Err(WireError::new(format!(
                "{} upload URLs for {size} bytes in {chunk} MB parts (expected {expected})",
                upload_urls.len()
            )));
        }
    }
    Ok(Created {
        id,
        uid,
        chunk_size_mb,
        upload_urls,
    })
}

/// Parts of a `size`-byte file in `chunk_mb` MiB parts: `ceil(size / chunk)`, at least 1.
/// `None` when `chunk_mb` is 0 or overflows.
pub fn expected_parts(size: u64, chunk_mb: u64) -> Option<u64> {
    let chunk = chunk_mb.checked_mul(1024 * 1024).filter(|c| *c > 0)?;
    Some(size.div_ceil(chunk).max(1))
}

/// `POST /files/{id}/complete` answer.
pub fn completed(obj: &JsonObject) -> WireResult<Completed> {
    let r = Resource::new(obj);
    Ok(Completed {
        uid: r.lenient_str("uid").map(str::to_string),
        download_url: r.lenient_str("download_url").map(str::to_string),
    })
}

/// `POST /files/download` answer: a link now, or a job id to poll; one of the two.
pub fn download_requested(obj: &JsonObject) -> WireResult<DownloadRequested> {
    let r = payload(obj, &["download"]);
    let url = r.optional_url("url")?;
    let download_id = match r.get("download_id") {
        Some(v) => Some(value_to_id(v, "download_id")?),
        None => r.get("id").map(|v| value_to_id(v, "id")).transpose()?,
    };
    if url.is_none() && download_id.is_none() {
        return Err(WireError::new(
            "neither `url` nor `download_id` in the answer",
        ));
    }
    Ok(DownloadRequested {
        url,
        download_id,
        size: r.optional_u64("size")?,
        name: r.lenient_str("name").map(str::to_string),
        content_type: r.lenient_str("content_type").map(str::to_string),
    })
}

/// `GET /files/download/{id}` answer. `ready` without a URL is malformed.
pub fn download_status(obj: &JsonObject) -> WireResult<DownloadStatus> {
    let r = payload(obj, &["download"]);
    let status = r.required_str("status")?;
    let state = match status.trim().to_ascii_lowercase().as_str() {
        "processing" | "pending" | "queued" | "in_progress" | "running" => {
            DownloadState::Processing
        }
        "ready" | "completed" | "complete" | "done" | "finished" => DownloadState::Ready,
        "failed" | "error" | "cancelled" | "canceled" => DownloadState::Failed,
        _ => {
            return Err(WireError::new(format!(
                "unknown download status {}",
                snippet(status, 40)
            )));
        }
    };
    let url = r.optional_url("url")?;
    if state == DownloadState::Ready && url.is_none() {
        return Err(WireError::new("download is ready but has no url"));
    }
    Ok(DownloadStatus {
        state,
        url,
        size: r.optional_u64("size")?,
        name: r.lenient_str("name").map(str::to_string),
        content_type: r.lenient_str("content_type").map(str::to_string),
    })
}

/// `GET /files/{id}/download` answer.
pub fn download_link(obj: &JsonObject) -> WireResult<DownloadLink> {
    let r = Resource::new(obj);
    Ok(DownloadLink {
        url: check_url(r.required_str("url")?, "url")?,
        size: r.optional_u64("size")?,
        name: r.lenient_str("name").map(str::to_string),
        content_type: r.lenient_str("content_type").map(str::to_string),
    })
}

/// `GET /files/capacity` answer.
pub fn capacity(obj: &JsonObject) -> WireResult<Capacity> {
    let r = Resource::new(obj);
    let total = r.required_u64("total")?;
    let in_use = r.required_u64("in_use")?;
    let (team_total, team_in_use) = match r.get("team") {
        Some(Value::Object(team)) => {
            let t = Resource::new(team);
            (t.optional_u64("total")?, t.optional_u64("in_use")?)
        }
        Some(other) => {
            return Err(WireError::new(format!(
                "team is not an object ({})",
                type_name(other)
            )));
        }
        None => (None, None),
    };
    Ok(Capacity {
        total,
        in_use,
        team_total,
        team_in_use,
    })
}

pub(super) fn live_entry(v: &Value, forced_dir: Option<bool>) -> WireResult<LiveEntry> {
    let r = Resource::from_value(v, "content item")?;
    let name = r.required_str("name")?.to_string();
    let path = r.optional_str("path")?.unwrap_or_default().to_string();
    let is_directory = match forced_dir {
        Some(d) => d,
        None => {
            let raw = r.required("is_directory")?;
            value_to_bool(raw).ok_or_else(|| {
                WireError::new(format!(
                    "is_directory is not a boolean ({})",
                    type_name(raw)
                ))
            })?
        }
    };
    Ok(LiveEntry {
        path,
        name,
        is_directory,
    })
}

/// `POST /machines/{id}/list-content` answer: `content` as an array of entries, or (as the older
/// seat endpoint answers) an object with `directories` and `files` arrays.
pub fn live_entries(obj: &JsonObject) -> WireResult<Vec<LiveEntry>> {
    match obj.get("content") {
        Some(Value::Array(items)) => Ok(decode_items(items, "live entry", |v| live_entry(v, None))),
        Some(Value::Object(parts)) => {
            let mut out = Vec::new();
            for (key, is_dir) in [("directories", true), ("files", false)] {
                match parts.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) => {
                        out.extend(decode_items(items, "live entry", |v| {
                            live_entry(v, Some(is_dir))
                        }))
                    }
                    Some(other) => {
                        return Err(WireError::new(format!(
                            "content.{key} is not an array ({})",
                            type_name(other)
                        )));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(WireError::new(format!(
            "content has the wrong type ({})",
            type_name(other)
        ))),
        None => Err(WireError::new("missing field `content`")),
    }
}
