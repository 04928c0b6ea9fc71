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
//!
//! The files here: this one holds the request bodies and the error bodies; `scalar` the
//! lenient scalars; `object` the parsed body, its accessor and paging; `response` one decoder
//! per endpoint. Everything is re-exported here, so callers name `model::…` only.

mod object;
mod response;
mod scalar;

use serde::Serialize;
use serde_json::{Map, Value};

pub use self::object::*;
pub use self::response::*;
pub use self::scalar::*;

/// Largest JSON response body read into memory (64 MiB); a larger answer is refused as
/// malformed instead of exhausting memory. A 100-entry page is a few tens of KiB.
pub const MAX_JSON_BODY: usize = 64 * 1024 * 1024;

/// Largest id, size or capacity value trusted: `i64::MAX`, so that every value fits an `off_t`
/// and a SQLite integer.
pub const MAX_SANE_VALUE: u64 = i64::MAX as u64;

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
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::api::{Capacity, DownloadState, FilePage, ObjectType};
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
