//! The wire shapes of the Vagon Files API and their tolerant decoding into the domain types of
//! [`crate::api`].
//!
//! Requests are plain serde structs ([`CreateBody`], [`CompleteBody`], ...), serialized once to
//! bytes by the client (the bytes signed are the bytes sent). A response body is parsed once
//! ([`parse_object`], which the client also uses to spot an error envelope under HTTP 200) and
//! decoded from that [`JsonObject`] through a small accessor ([`Resource`]) rather than derived
//! structs,
//! because the API leaves many gaps (contract §3) and every field needs its own leniency:
//!
//! - ids arrive as numbers or as strings of digits; sizes and capacity values likewise; an
//!   integral float (`1601.0`) is accepted, anything fractional, negative, above `i64::MAX`
//!   ([`MAX_SANE_VALUE`], so that sizes fit an `off_t`) or not a number is refused;
//! - list items are JSON:API-wrapped (`{"id", "type", "attributes": {...}}`) or flat; a field is
//!   looked up in `attributes` first, then at the top level of the item;
//! - `last_modified_date` may be missing (→ `None`, the fs falls back to the mount time), RFC 3339
//!   with or without fractional seconds, with or without a zone (no zone = UTC), with a space
//!   instead of `T`, or a Unix timestamp in seconds or milliseconds; an unreadable date is `None`
//!   (logged), it does not cost the entry;
//! - unknown fields are ignored; `null` counts as absent.
//!
//! Decision on bad list items: **skip with a warning**. A response whose *shape* is wrong
//! (not JSON, truncated, not an object, the list not an array, an envelope field of the wrong
//! type) is a [`WireError`] (→ `ApiError::Malformed`); but one item that lacks a required field
//! (`id`, `name`, `object_type`, a file's `size`) or carries a value that cannot be trusted
//! (negative or huge size, an id that does not parse, id 0, an unknown object type) is left out
//! of the page with a `tracing::warn!` naming its index and the reason, so that one broken entry
//! does not make a whole folder unreadable. Names are passed up raw (a name with `/`, NUL, `..`
//! is the fs layer's business). A directory's size is always reported as 0 (the domain rule),
//! so a bad `size` on a directory does not cost it.
//!
//! JSON bodies are bounded by the client ([`MAX_JSON_BODY`]) before they reach this module;
//! serde_json's recursion limit stops hostile nesting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    Capacity, Completed, Created, CurrentFolder, DownloadLink, DownloadRequested, DownloadState,
    DownloadStatus, FileEntry, FilePage, LiveEntry, Machine, MachinePage, ObjectType,
};

/// Largest JSON response body read into memory (64 MiB); a larger answer is refused as
/// malformed instead of exhausting memory. A 100-entry page is a few tens of KiB.
pub const MAX_JSON_BODY: usize = 64 * 1024 * 1024;

/// Largest id, size or capacity value trusted: `i64::MAX`, so that every value fits an `off_t`
/// and a SQLite integer.
pub const MAX_SANE_VALUE: u64 = i64::MAX as u64;

/// Largest float that still holds an exact integer (2^53); integral floats above are refused.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Timestamps above this are taken as milliseconds, below as seconds (1e11 s is year 5138).
const UNIX_MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// Keys under which a listing's items may arrive, in the order tried.
const FILE_LIST_KEYS: &[&str] = &["files", "data", "session_recordings", "recordings", "items"];
/// Keys under which the machine list may arrive.
const MACHINE_LIST_KEYS: &[&str] = &["machines", "data", "items"];

/// The server's answer could not be understood; the client adds the endpoint and turns it into
/// `ApiError::Malformed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

impl WireError {
    fn new(detail: impl Into<String>) -> Self {
        WireError(detail.into())
    }
}

pub type WireResult<T> = Result<T, WireError>;

/// A response body parsed once ([`parse_object`]) and handed to the decoders below.
pub type JsonObject = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `POST /files` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CreateBody<'a> {
    pub file_name: &'a str,
    pub object_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// MB per part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    pub overwrite: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<u64>,
}

/// One part of `POST /files/{id}/complete`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartBody<'a> {
    pub part_number: u32,
    pub etag: &'a str,
}

/// `POST /files/{id}/complete` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CompleteBody<'a> {
    pub parts: Vec<PartBody<'a>>,
}

/// `POST /files/download` body: `{"file_ids": [...]}` or `{"directory_id": n}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DownloadBody<'a> {
    Files { file_ids: &'a [u64] },
    Directory { directory_id: u64 },
}

/// `POST /machines/{id}/list-content` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListContentBody<'a> {
    pub path: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

/// A non-negative integer sent as a JSON number or a string of digits, at most
/// [`MAX_SANE_VALUE`]. `what` names the field in the error.
pub fn value_to_u64(v: &Value, what: &str) -> WireResult<u64> {
    let n = match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u
            } else if n.as_i64().is_some() {
                return Err(WireError::new(format!("{what} is negative ({n})")));
            } else {
                match n.as_f64() {
                    Some(f)
                        if f.is_finite()
                            && f.fract() == 0.0
                            && (0.0..=MAX_EXACT_FLOAT).contains(&f) =>
                    {
                        // Exact: integral and below 2^53.
                        f as u64
                    }
                    _ => {
                        return Err(WireError::new(format!(
                            "{what} is not a usable integer ({n})"
                        )));
                    }
                }
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::new(format!(
                    "{what} is not an integer ({})",
                    snippet(s, 40)
                )));
            }
            t.parse::<u64>().map_err(|_| {
                WireError::new(format!("{what} is out of range ({})", snippet(s, 40)))
            })?
        }
        other => {
            return Err(WireError::new(format!(
                "{what} has the wrong type ({})",
                type_name(other)
            )));
        }
    };
    if n > MAX_SANE_VALUE {
        return Err(WireError::new(format!("{what} is out of range ({n})")));
    }
    Ok(n)
}

/// An id: like [`value_to_u64`], and not 0 (0 means "the root" in this API).
pub fn value_to_id(v: &Value, what: &str) -> WireResult<u64> {
    match value_to_u64(v, what)? {
        0 => Err(WireError::new(format!("{what} is 0"))),
        n => Ok(n),
    }
}

/// A `client_code`: a number or a string of digits (may be any width, 200, 404, 4710).
pub fn value_to_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean sent as `true`/`false`, `"true"`/`"false"`, `1`/`0`.
fn value_to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Parse a date the way the API might send it (see the module note). `None` when unreadable.
pub fn parse_date(v: &Value) -> Option<SystemTime> {
    match v {
        Value::String(s) => parse_date_str(s.trim()),
        Value::Number(_) => {
            let n = value_to_u64(v, "date").ok()?;
            let d = if n >= UNIX_MILLIS_THRESHOLD {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n)
            };
            UNIX_EPOCH.checked_add(d)
        }
        _ => None,
    }
}

fn parse_date_str(s: &str) -> Option<SystemTime> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let utc: DateTime<Utc> = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        d.with_timezone(&Utc)
    } else if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%z") {
        d.with_timezone(&Utc)
    } else {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?;
        naive.and_utc()
    };
    let secs = utc.timestamp();
    let nanos = utc.timestamp_subsec_nanos();
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most `max` characters of `s`, control characters replaced, `…` when cut. For error
/// messages and logs built from server text.
pub fn snippet(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// Parse a whole response body as a JSON object.
pub fn parse_object(body: &[u8]) -> WireResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(WireError::new(format!(
            "expected a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(WireError::new(format!("invalid JSON: {e}"))),
    }
}

/// A JSON object that may be JSON:API-wrapped: fields are looked up in `attributes` first, then
/// at the top level. `null` counts as absent.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    top: &'a Map<String, Value>,
    attributes: Option<&'a Map<String, Value>>,
}

impl<'a> Resource<'a> {
    pub fn new(top: &'a Map<String, Value>) -> Self {
        let attributes = match top.get("attributes") {
            Some(Value::Object(a)) => Some(a),
            _ => None,
        };
        Resource { top, attributes }
    }

    /// A resource from a value that must be an object.
    pub fn from_value(v: &'a Value, what: &str) -> WireResult<Self> {
        match v {
            Value::Object(m) => Ok(Resource::new(m)),
            other => Err(WireError::new(format!(
                "{what} is not an object ({})",
                type_name(other)
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let found = self
            .attributes
            .and_then(|a| a.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| self.top.get(key));
        found.filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str) -> WireResult<&'a Value> {
        self.get(key)
            .ok_or_else(|| WireError::new(format!("missing field `{key}`")))
    }

    pub fn required_id(&self, key: &str) -> WireResult<u64> {
        value_to_id(self.required(key)?, key)
    }

    pub fn required_u64(&self, key: &str) -> WireResult<u64> {
        value_to_u64(self.required(key)?, key)
    }

    /// Absent → `None`; present but unusable → error.
    pub fn optional_u64(&self, key: &str) -> WireResult<Option<u64>> {
        self.get(key).map(|v| value_to_u64(v, key)).transpose()
    }

    /// Absent or unusable → `None` (for fields that are only informative).
    pub fn lenient_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| value_to_u64(v, key).ok())
    }

    pub fn required_str(&self, key: &str) -> WireResult<&'a str> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            other => Err(WireError::new(format!(
                "field `{key}` is not a string ({})",
                type_name(other)
            ))),
        }
    }

    /// Absent → `None`; present but not a string → error.
    pub fn optional_str(&self, key: &str) -> WireResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(WireError::new(format!(
                "field `{key}` is not a string ({})",
                type_name(other)
            ))),
        }
    }

    /// Absent → `None`; present but not an absolute http(s) URL → error.
    pub fn optional_url(&self, key: &str) -> WireResult<Option<String>> {
        self.optional_str(key)?
            .map(|u| check_url(u, key))
            .transpose()
    }

    /// Absent or not a string → `None`.
    pub fn lenient_str(&self, key: &str) -> Option<&'a str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// The object under the first of `keys` that holds one, else `obj` itself: an answer may wrap
/// its payload (`{"download": {...}}`) or not.
fn payload<'a>(obj: &'a JsonObject, keys: &[&str]) -> Resource<'a> {
    keys.iter()
        .find_map(|k| match obj.get(*k) {
            Some(Value::Object(inner)) => Some(Resource::new(inner)),
            _ => None,
        })
        .unwrap_or_else(|| Resource::new(obj))
}

/// The array under the first of `keys` present in `obj`. Missing → error; not an array → error.
fn list_under<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> WireResult<&'a Vec<Value>> {
    for key in keys {
        match obj.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => return Ok(items),
            Some(other) => {
                return Err(WireError::new(format!(
                    "field `{key}` is not an array ({})",
                    type_name(other)
                )));
            }
        }
    }
    Err(WireError::new(format!(
        "missing list (looked for {})",
        keys.join(", ")
    )))
}

/// `count`, `page`, `next_page` of a list envelope. `next_page` null, absent, `false` or 0 → last
/// page.
struct Paging {
    count: Option<u64>,
    page: u32,
    next_page: Option<u32>,
}

fn paging(obj: &Map<String, Value>, requested_page: u32) -> WireResult<Paging> {
    let env = Resource::new(obj);
    let count = env.optional_u64("count")?;
    let page = match env.optional_u64("page")? {
        Some(p) => to_page(p, "page")?,
        None => requested_page,
    };
    let next_page = match env.get("next_page") {
        None | Some(Value::Bool(false)) => None,
        Some(v) => match value_to_u64(v, "next_page")? {
            0 => None,
            n => Some(to_page(n, "next_page")?),
        },
    };
    Ok(Paging {
        count,
        page,
        next_page,
    })
}

fn to_page(n: u64, what: &str) -> WireResult<u32> {
    u32::try_from(n).map_err(|_| WireError::new(format!("{what} is out of range ({n})")))
}

/// Decode a list, keeping the good items and logging (then dropping) the bad ones.
fn decode_items<T>(
    items: &[Value],
    what: &str,
    decode: impl Fn(&Value) -> WireResult<T>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match decode(item) {
            Ok(v) => out.push(v),
            Err(e) => {
                let id = match item {
                    Value::Object(m) => m.get("id").map(|v| snippet(&v.to_string(), 40)),
                    _ => None,
                };
                tracing::warn!(
                    index,
                    id = id.as_deref().unwrap_or("?"),
                    reason = %e,
                    "skipping a {what} the server sent that cannot be used"
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An `object_type` value.
fn object_type(v: &Value) -> WireResult<ObjectType> {
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
fn current_folder(v: &Value) -> Option<CurrentFolder> {
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

fn machine(v: &Value) -> WireResult<Machine> {
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

/// A presigned URL must be an absolute http(s) URL.
fn check_url(s: &str, what: &str) -> WireResult<String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(s.to_string()),
        _ => Err(WireError::new(format!("{what} is not an http(s) URL"))),
    }
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

fn live_entry(v: &Value, forced_dir: Option<bool>) -> WireResult<LiveEntry> {
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

/// What an error body said: `client_code` and `message` (or `error`, or JSON:API
/// `errors[0].detail`/`title`). A non-JSON body gives its text, bounded to `max_chars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub client_code: Option<i64>,
    pub message: String,
}

pub fn error_body(body: &[u8], max_chars: usize) -> ErrorBody {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
        return error_object(&obj, max_chars);
    }
    let text = String::from_utf8_lossy(body);
    ErrorBody {
        client_code: None,
        message: snippet(text.trim(), max_chars),
    }
}

fn error_object(obj: &JsonObject, max_chars: usize) -> ErrorBody {
    let client_code = obj.get("client_code").and_then(value_to_code);
    let message = ["message", "error", "detail"]
        .iter()
        .find_map(|k| match obj.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        })
        .or_else(|| match obj.get("errors") {
            Some(Value::Array(errs)) => errs.first().and_then(|e| {
                ["detail", "title", "message"]
                    .iter()
                    .find_map(|k| match e.get(*k) {
                        Some(Value::String(s)) => Some(s.clone()),
                        _ => None,
                    })
            }),
            _ => None,
        })
        .unwrap_or_default();
    ErrorBody {
        client_code,
        message: snippet(&message, max_chars),
    }
}

/// The error a success body signals, when its `client_code` is one (≥ 400): some servers answer
/// HTTP 200 with an error envelope.
pub fn envelope_error(obj: &JsonObject) -> Option<ErrorBody> {
    let code = obj.get("client_code").and_then(value_to_code)?;
    (code >= 400).then(|| error_object(obj, ERROR_MESSAGE_MAX_CHARS))
}

/// Longest server message kept in an error (characters).
pub const ERROR_MESSAGE_MAX_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn from(b: &[u8]) -> JsonObject {
        parse_object(b).unwrap()
    }

    fn page_of(b: &[u8], p: u32) -> WireResult<FilePage> {
        file_page(&parse_object(b)?, p)
    }

    #[test]
    fn integers_from_numbers_and_strings() {
        assert_eq!(value_to_u64(&json!(42), "id"), Ok(42));
        assert_eq!(value_to_u64(&json!("42"), "id"), Ok(42));
        assert_eq!(value_to_u64(&json!(" 42 "), "id"), Ok(42));
        assert_eq!(value_to_u64(&json!(1601.0), "size"), Ok(1601));
        assert!(value_to_u64(&json!(-1), "size").is_err());
        assert!(value_to_u64(&json!("-1"), "size").is_err());
        assert!(value_to_u64(&json!(1.5), "size").is_err());
        assert!(value_to_u64(&json!("12abc"), "size").is_err());
        assert!(value_to_u64(&json!(""), "size").is_err());
        assert!(value_to_u64(&json!(true), "size").is_err());
        assert!(value_to_u64(&json!([1]), "size").is_err());
        assert!(value_to_u64(&json!(u64::MAX), "size").is_err());
        assert!(value_to_u64(&json!("99999999999999999999999"), "size").is_err());
        assert!(value_to_u64(&json!(1e30), "size").is_err());
        assert_eq!(value_to_u64(&json!(i64::MAX), "size"), Ok(MAX_SANE_VALUE));
        assert!(value_to_id(&json!(0), "id").is_err());
        let huge: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
        assert!(value_to_u64(&huge, "size").is_err());
    }

    #[test]
    fn dates_in_many_shapes() {
        let base = parse_date(&json!("2026-02-05T10:10:22Z")).unwrap();
        assert_eq!(parse_date(&json!("2026-02-05T10:10:22")), Some(base));
        assert_eq!(parse_date(&json!("2026-02-05 10:10:22")), Some(base));
        assert_eq!(parse_date(&json!("2026-02-05T12:10:22+02:00")), Some(base));
        assert_eq!(parse_date(&json!("2026-02-05T10:10:22+0000")), Some(base));
        let frac = parse_date(&json!("2026-02-05T10:10:22.250Z")).unwrap();
        assert_eq!(
            frac.duration_since(base).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_date(&json!("2026-02-05T10:10:22.250")).unwrap(), frac);
        let secs = base.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(parse_date(&json!(secs)), Some(base));
        assert_eq!(parse_date(&json!(secs * 1000)), Some(base));
        assert_eq!(parse_date(&json!("yesterday")), None);
        assert_eq!(parse_date(&json!(null)), None);
        assert!(parse_date(&json!("1969-12-31T23:59:59Z")).unwrap() < UNIX_EPOCH);
    }

    #[test]
    fn list_items_wrapped_or_flat() {
        let body = obj(json!({
            "files": [
                {"id": "42", "type": "file", "attributes": {"name": "report.pdf", "object_type": "file",
                  "size": "1601", "content_type": "application/pdf",
                  "last_modified_date": "2026-02-05T10:10:22Z", "parent_id": 7, "extra": [1, 2]}},
                {"id": 43, "name": "Sub", "object_type": "directory", "parent_id": "7"},
                {"id": 44, "name": "raw.bin", "object_type": "FILE", "size": 0.0,
                  "last_modified_date": "garbage"}
            ],
            "current": {"id": "7", "type": "file", "attributes": {"name": "Projects",
                        "object_type": "directory", "path": "/Projects", "parent_id": 0}},
            "count": "3", "page": 1, "next_page": null,
            "client_code": 200, "message": "OK", "timestamp": "2026-02-05T10:10:22Z", "unknown": {}
        }));
        let page = file_page(&body, 1).unwrap();
        assert_eq!(page.entries.len(), 3);
        let f = &page.entries[0];
        assert_eq!((f.id, f.name.as_str(), f.size), (42, "report.pdf", 1601));
        assert_eq!(f.object_type, ObjectType::File);
        assert_eq!(f.content_type.as_deref(), Some("application/pdf"));
        assert!(f.modified.is_some());
        assert_eq!(f.parent_id, Some(7));
        let d = &page.entries[1];
        assert_eq!(
            (d.id, d.object_type, d.size, d.modified),
            (43, ObjectType::Directory, 0, None)
        );
        assert_eq!(page.entries[2].modified, None);
        assert_eq!(page.entries[2].object_type, ObjectType::File);
        let cur = page.current.unwrap();
        assert_eq!(
            (cur.id, cur.name.as_str(), cur.path.as_deref()),
            (7, "Projects", Some("/Projects"))
        );
        assert_eq!((page.count, page.page, page.next_page), (Some(3), 1, None));
    }

    #[test]
    fn bad_items_are_skipped_not_fatal() {
        let body = obj(json!({
            "files": [
                {"id": "x1", "name": "a", "object_type": "file", "size": 1},
                {"id": 2, "object_type": "file", "size": 1},
                {"id": 3, "name": "c", "object_type": "file", "size": -5},
                {"id": 4, "name": "d", "object_type": "file"},
                {"id": 5, "name": 5, "object_type": "file", "size": 1},
                {"id": 6, "name": "f", "object_type": "symlink", "size": 1},
                {"id": 7, "name": "g", "object_type": "file", "size": 1e300},
                "not an object",
                {"id": 0, "name": "zero", "object_type": "file", "size": 1},
                {"id": 9, "name": "../x", "object_type": "file", "size": 3},
                {"id": 10, "name": "dir", "object_type": "directory", "size": -1}
            ],
            "next_page": 2
        }));
        let page = file_page(&body, 1).unwrap();
        let ids: Vec<u64> = page.entries.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![9, 10]);
        assert_eq!(page.entries[0].name, "../x", "names are passed up raw");
        assert_eq!(page.next_page, Some(2));
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(page_of(b"{\"files\": [{\"id\": 1", 1).is_err());
        assert!(page_of(b"[]", 1).is_err());
        assert!(page_of(b"", 1).is_err());
        assert!(page_of(b"{\"files\": {}}", 1).is_err());
        assert!(page_of(b"{\"count\": 3}", 1).is_err());
        assert!(page_of(b"{\"files\": [], \"next_page\": \"soon\"}", 1).is_err());
        assert!(page_of(b"{\"files\": [], \"next_page\": -1}", 1).is_err());
        assert!(page_of(b"{\"files\": [], \"page\": 99999999999}", 1).is_err());
        let deep = "[".repeat(10_000);
        assert!(page_of(deep.as_bytes(), 1).is_err());
        assert_eq!(
            page_of(b"{\"files\": [], \"next_page\": false}", 3)
                .unwrap()
                .page,
            3
        );
    }

    #[test]
    fn created_checks_part_count() {
        let mib = 1024 * 1024;
        let ok = obj(json!({"id": 6731, "uid": "u", "chunk_size": 1,
            "upload_urls": ["http://h/p1", "http://h/p2", "http://h/p3", "http://h/p4"]}));
        let c = created(&ok, ObjectType::File, Some(3 * mib + 1), Some(1)).unwrap();
        assert_eq!(
            (c.id, c.chunk_size_mb, c.upload_urls.len()),
            (6731, Some(1), 4)
        );
        assert!(created(&ok, ObjectType::File, Some(3 * mib), Some(1)).is_err());
        let empty = obj(json!({"id": 1, "upload_urls": []}));
        assert!(created(&empty, ObjectType::File, Some(0), None).is_err());
        let bad_url = obj(json!({"id": 1, "upload_urls": ["not a url"]}));
        assert!(created(&bad_url, ObjectType::File, Some(1), None).is_err());
        let zero_file = obj(json!({"id": 1, "chunk_size": 250, "upload_urls": ["https://h/p"]}));
        assert_eq!(
            created(&zero_file, ObjectType::File, Some(0), None)
                .unwrap()
                .upload_urls
                .len(),
            1
        );
        let dir = obj(json!({"id": "6731", "uid": "u"}));
        assert_eq!(
            created(&dir, ObjectType::Directory, None, None).unwrap().id,
            6731
        );
        assert!(
            created(
                &from(b"{\"uid\": \"u\"}"),
                ObjectType::Directory,
                None,
                None
            )
            .is_err()
        );
        assert_eq!(expected_parts(0, 250), Some(1));
        assert_eq!(expected_parts(mib, 1), Some(1));
        assert_eq!(expected_parts(mib + 1, 1), Some(2));
        assert_eq!(expected_parts(1, 0), None);
        assert_eq!(expected_parts(1, u64::MAX), None);
    }

    #[test]
    fn downloads_and_capacity() {
        let now = obj(
            json!({"url": "https://s3/x?sig=1", "size": 1601, "name": "r.pdf",
            "content_type": "application/pdf", "download_id": 5085}),
        );
        let d = download_requested(&now).unwrap();
        assert_eq!(
            (d.url.as_deref(), d.download_id),
            (Some("https://s3/x?sig=1"), Some(5085))
        );
        let later = obj(json!({"url": null, "download_id": "5085", "name": "p.zip"}));
        assert_eq!(download_requested(&later).unwrap().url, None);
        assert!(download_requested(&from(b"{\"url\": null}")).is_err());

        let st = obj(
            json!({"download": {"id": "5085", "type": "download", "attributes":
            {"status": "ready", "url": "https://s3/z", "size": "10", "name": "p.zip"}}}),
        );
        let s = download_status(&st).unwrap();
        assert_eq!((s.state, s.size), (DownloadState::Ready, Some(10)));
        let proc_ = obj(json!({"download": {"attributes": {"status": "processing", "url": null}}}));
        assert_eq!(
            download_status(&proc_).unwrap().state,
            DownloadState::Processing
        );
        let bad = obj(json!({"download": {"attributes": {"status": "ready", "url": null}}}));
        assert!(download_status(&bad).is_err());
        assert!(
            download_status(&from(
                b"{\"download\": {\"attributes\": {\"status\": \"weird\"}}}"
            ))
            .is_err()
        );

        let cap = obj(json!({"total": "26843545600", "in_use": 1073741824,
            "team": {"total": 5, "in_use": "4"}}));
        assert_eq!(
            capacity(&cap).unwrap(),
            Capacity {
                total: 26843545600,
                in_use: 1073741824,
                team_total: Some(5),
                team_in_use: Some(4)
            }
        );
        assert!(capacity(&from(b"{\"total\": -1, \"in_use\": 0}")).is_err());
        assert!(capacity(&from(b"{\"in_use\": 0}")).is_err());
    }

    #[test]
    fn live_content_both_shapes() {
        let arr = obj(json!({"content": [
            {"path": "C:\\Users\\Administrator", "name": "Administrator", "is_directory": true},
            {"path": "C:\\Users\\a.txt", "name": "a.txt", "is_directory": "false"},
            {"path": "C:\\x", "is_directory": true}
        ]}));
        let e = live_entries(&arr).unwrap();
        assert_eq!(e.len(), 2);
        assert!(e[0].is_directory && !e[1].is_directory);
        let obj =
            obj(json!({"content": {"files": [{"name": "f"}], "directories": [{"name": "d"}]}}));
        let e = live_entries(&obj).unwrap();
        assert_eq!((e[0].name.as_str(), e[0].is_directory), ("d", true));
        assert_eq!((e[1].name.as_str(), e[1].is_directory), ("f", false));
        assert!(live_entries(&from(b"{\"content\": 3}")).is_err());
    }

    #[test]
    fn error_bodies() {
        let e = error_body(
            br#"{"client_code": "4710", "message": "Permission required"}"#,
            300,
        );
        assert_eq!(
            (e.client_code, e.message.as_str()),
            (Some(4710), "Permission required")
        );
        let e = error_body(br#"{"errors": [{"detail": "nope"}]}"#, 300);
        assert_eq!((e.client_code, e.message.as_str()), (None, "nope"));
        let html = format!("<html>{}</html>", "x".repeat(5000));
        let e = error_body(html.as_bytes(), 50);
        assert_eq!(e.client_code, None);
        assert!(e.message.starts_with("<html>") && e.message.chars().count() == 51);
        let e = error_body(b"\xff\xfe bad\nbytes", 50);
        assert!(!e.message.contains('\n'));
        assert!(envelope_error(&from(br#"{"client_code": 4710, "message": "no"}"#)).is_some());
        assert!(envelope_error(&from(br#"{"client_code": 200, "message": "OK"}"#)).is_none());
    }

    #[test]
    fn request_bodies_serialize_as_documented() {
        let b = CreateBody {
            file_name: "a.txt",
            object_type: "file",
            content_type: Some("text/plain"),
            size: Some(5),
            chunk_size: Some(1),
            overwrite: false,
            parent_id: None,
            machine_id: Some(3),
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"file_name": "a.txt", "object_type": "file", "content_type": "text/plain",
                   "size": 5, "chunk_size": 1, "overwrite": false, "machine_id": 3})
        );
        assert_eq!(
            serde_json::to_value(DownloadBody::Files { file_ids: &[42] }).unwrap(),
            json!({"file_ids": [42]})
        );
        assert_eq!(
            serde_json::to_value(DownloadBody::Directory { directory_id: 7 }).unwrap(),
            json!({"directory_id": 7})
        );
        let parts = CompleteBody {
            parts: vec![PartBody {
                part_number: 1,
                etag: "\"e\"",
            }],
        };
        assert_eq!(
            serde_json::to_value(&parts).unwrap(),
            json!({"parts": [{"part_number": 1, "etag": "\"e\""}]})
        );
    }
}
