//! The presigned data plane: `PUT /_data/parts/{id}/{n}` (one part of an upload) and
//! `GET /_data/files/{id}`, `GET /_data/downloads/{id}` (bytes of a file or a finished zip).
//!
//! No HMAC header: the URL's own `exp`/`sig` are checked (403 when expired or tampered with).
//! Bodies are streamed both ways, never held whole in memory: a part goes to a temp file while
//! its MD5 is computed (the ETag, quoted), a download streams from the blob file.
//!
//! Subtle cases:
//! - A part larger than it should be (`chunk_size` MiB, or the rest for the last part) is
//!   refused with 400 as soon as the excess arrives; a smaller one is accepted (complete then
//!   answers 422). A temp file is removed whatever ends the request (even a dropped connection).
//! - Ranges: `bytes=a-b`, `a-` and `-n` give 206 with `Content-Range`; a start beyond the end
//!   (or `-0`, or any range of an empty object) gives 416 with `Content-Range: bytes */len`;
//!   a malformed or multi-range header is ignored (200, whole body), as RFC 9110 allows. The
//!   length served is the blob's real length, which a raw entry may make differ from the
//!   declared size.
//! - Versions: every download answer carries a strong `ETag` naming the stored bytes; a ranged
//!   GET with `If-Range` naming another version (or a date) is answered whole (200), as RFC 9110
//!   says, so a client resuming a cut body notices that the object changed.
//! - Injected resets: a download sends about half of its bytes and then fails the stream; an
//!   upload reads about half of the part and then the connection is closed with no answer.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{blocking, parse_id};
use crate::emulator::faults::reset_connection;
use crate::emulator::presign::LinkError;
use crate::emulator::reply::{Failure, Reply};
use crate::emulator::store::{DownloadStatus, StoreError};
use crate::emulator::{AppState, ConnectionKill};

pub const PART_ROUTE: &str = "/_data/parts/{id}/{part}";
pub const FILE_ROUTE: &str = "/_data/files/{id}";
pub const ZIP_ROUTE: &str = "/_data/downloads/{id}";

/// Read buffer when streaming a download.
const STREAM_CHUNK: usize = 64 * 1024;

pub fn part_path(file_id: u64, n: u64) -> String {
    format!("/_data/parts/{file_id}/{n}")
}

pub fn file_path(file_id: u64) -> String {
    format!("/_data/files/{file_id}")
}

pub fn zip_path(download_id: u64) -> String {
    format!("/_data/downloads/{download_id}")
}

/// Check the presigned URL of a request (`method` as signed).
fn check_link(state: &AppState, method: &str, req: &Request) -> Result<(), Failure> {
    state
        .presign
        .check(method, req.uri().path(), req.uri().query())
        .map_err(|e| match e {
            LinkError::Expired => Failure::forbidden("link expired"),
            LinkError::Invalid => Failure::forbidden("link signature invalid"),
        })
}

/// Removes a temp file when dropped, unless [`TempFile::keep`] was called.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `PUT /_data/parts/{id}/{n}`
pub async fn put_part(
    State(state): State<AppState>,
    Path((id, part)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_link(&state, "PUT", &req)?;
    let (Some(id), Some(n)) = (parse_id(&id), parse_id(&part)) else {
        return Err(Failure::not_found("no such upload part"));
    };
    let expected = blocking(&state, move |s| s.part_size(id, n)).await?;
    // With a reset, stop after about half of the part (at once for an empty part).
    let cut_at = state.faults.roll_reset().then_some(expected / 2);
    let kill = req.extensions().get::<ConnectionKill>().cloned();

    let tmp = TempFile {
        path: state.store.dirs().tmp_file(),
        armed: true,
    };
    let mut file = tokio::fs::File::create(&tmp.path)
        .await
        .map_err(|e| Failure::internal(format!("temp file: {e}")))?;
    let mut hasher = Md5::new();
    let mut received: u64 = 0;
    let mut body = req.into_body().into_data_stream();
    loop {
        if cut_at.is_some_and(|cut| received >= cut) {
            drop(file);
            drop(tmp);
            return Ok(reset_connection(kill).await);
        }
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk.map_err(|e| Failure::bad_request(format!("reading the body: {e}")))?;
        received += chunk.len() as u64;
        if received > expected {
            return Err(Failure::bad_request(format!(
                "part {n} is larger than the {expected} bytes it should hold"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| Failure::internal(format!("writing the part: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| Failure::internal(format!("writing the part: {e}")))?;
    drop(file);
    let md5_hex = hex::encode(hasher.finalize());
    let path = tmp.keep();
    let etag = format!("\"{md5_hex}\"");
    blocking(&state, move |s| {
        s.record_part(id, n, &path, received, &md5_hex)
    })
    .await?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// `GET /_data/files/{id}`
pub async fn get_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    check_link(&state, "GET", &req)?;
    let id = parse_id(&id).ok_or_else(|| Failure::not_found("no such file"))?;
    let entry = blocking(&state, move |s| s.visible(id)).await?;
    if entry.is_dir {
        return Err(Failure::not_found(format!("{id} is a folder, not a file")));
    }
    let blob = entry
        .blob
        .as_deref()
        .map(|b| state.store.blob_path(b))
        .unwrap_or_default();
    serve(
        &state,
        req,
        blob,
        entry.content_type_or_default(),
        &entry.name,
    )
    .await
}

/// `GET /_data/downloads/{id}`
pub async fn get_zip(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Reply {
    check_link(&state, "GET", &req)?;
    let id = parse_id(&id).ok_or_else(|| Failure::not_found("no such download"))?;
    let download = blocking(&state, move |s| {
        s.download(id)?
            .filter(|d| d.status == DownloadStatus::Ready && d.zip.is_some())
            .ok_or_else(|| StoreError::NotFound(format!("download {id} not ready")))
    })
    .await?;
    let zip = download
        .zip
        .as_deref()
        .map(|z| state.store.zip_path(z))
        .unwrap_or_default();
    serve(&state, req, zip, &download.content_type, &download.name).await
}

/// What a `Range` header asks of an object of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    Whole,
    /// Inclusive bounds.
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(headers: &HeaderMap, len: u64) -> RangeAsk {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
        },
        (start, "") => match num(start) {
            None => RangeAsk::Whole,
            Some(s) if s >= len => RangeAsk::Unsatisfiable,
            Some(s) => RangeAsk::Part(s, len - 1),
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part(s, e.min(len - 1))
                }
            }
            _ => RangeAsk::Whole,
        },
    }
}

/// Stream (part of) `path` as the answer to `req`.
async fn serve(
    state: &AppState,
    req: Request,
    path: PathBuf,
    content_type: &str,
    name: &str,
) -> Reply {
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure::not_found("the object's bytes are gone")
        } else {
            Failure::internal(format!("opening the object: {e}"))
        }
    })?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| Failure::internal(format!("object metadata: {e}")))?;
    let len = meta.len();
    let etag = etag_of(&meta);
    // If-Range: the range holds only for the version named; any other validator (or a date:
    // no Last-Modified is served) means the whole, current object (RFC 9110 §13.1.5).
    let if_range_holds = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let ask = if if_range_holds {
        parse_range(req.headers(), len)
    } else {
        RangeAsk::Whole
    };
    let (status, start, count) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeAsk::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            insert(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            return Ok(response);
        }
    };
    let reset = req.method() != axum::http::Method::HEAD && state.faults.roll_reset();
    if reset && count < 2 {
        // Too short to cut in the middle: drop the connection before answering.
        let kill = req.extensions().get::<ConnectionKill>().cloned();
        return Ok(reset_connection(kill).await);
    }
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| Failure::internal(format!("seek: {e}")))?;
    let stream =
        ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, count), STREAM_CHUNK);
    let body = if reset {
        Body::from_stream(cut_after(stream, count / 2))
    } else {
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    insert(headers, header::CONTENT_TYPE, content_type);
    insert(headers, header::CONTENT_LENGTH, &count.to_string());
    insert(headers, header::ACCEPT_RANGES, "bytes");
    insert(headers, header::ETAG, &etag);
    insert(
        headers,
        header::CONTENT_DISPOSITION,
        &content_disposition(name),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        insert(
            headers,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{len}"),
        );
    }
    Ok(response)
}

/// A strong `ETag` for the bytes of a stored object: blobs and zips are written once and never
/// changed in place, so the file's identity, length and modification time name its version.
fn etag_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `attachment; filename*=UTF-8''…` (RFC 6266), safe for any stored name.
fn content_disposition(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename*=UTF-8''{encoded}")
}

/// Pass `allowed` bytes of `inner`, then fail the stream (the connection is aborted mid-body).
fn cut_after<S>(inner: S, allowed: u64) -> impl Stream<Item = std::io::Result<Bytes>>
where
    S: Stream<Item = std::io::Result<Bytes>>,
{
    let mut remaining = allowed;
    inner.flat_map(move |item| {
        let out: Vec<std::io::Result<Bytes>> = match item {
            Err(e) => vec![Err(e)],
            Ok(chunk) if remaining > 0 && chunk.len() as u64 <= remaining => {
                remaining -= chunk.len() as u64;
                vec![Ok(chunk)]
            }
            Ok(chunk) => {
                let keep = usize::try_from(remaining)
                    .unwrap_or(chunk.len())
                    .min(chunk.len());
                remaining = 0;
                vec![
                    Ok(chunk.slice(..keep)),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected connection reset",
                    )),
                ]
            }
        };
        futures::stream::iter(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, len: u64) -> RangeAsk {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        parse_range(&h, len)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=0-3", 10), RangeAsk::Part(0, 3));
        assert_eq!(ask("bytes=5-100", 10), RangeAsk::Part(5, 9));
        assert_eq!(ask("bytes=7-", 10), RangeAsk::Part(7, 9));
        assert_eq!(ask("bytes=-3", 10), RangeAsk::Part(7, 9));
        assert_eq!(ask("bytes=-30", 10), RangeAsk::Part(0, 9));
        assert_eq!(ask("bytes=10-", 10), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=10-20", 10), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 10), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=0-0", 0), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-5", 0), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=5-3", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=0-1,4-5", 10), RangeAsk::Whole);
        assert_eq!(ask("items=0-1", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=a-b", 10), RangeAsk::Whole);
    }

    #[tokio::test]
    async fn cut_stream_sends_the_allowed_bytes_then_fails() {
        let chunks = || -> Vec<std::io::Result<Bytes>> {
            vec![
                Ok(Bytes::from_static(b"abcd")),
                Ok(Bytes::from_static(b"efgh")),
            ]
        };
        let out: Vec<_> = cut_after(futures::stream::iter(chunks()), 6)
            .collect()
            .await;
        let data: Vec<u8> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(data, b"abcdef");
        assert!(out.last().unwrap().is_err());
        let out: Vec<_> = cut_after(futures::stream::iter(chunks()), 4)
            .collect()
            .await;
        let data: Vec<u8> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(data, b"abcd");
        assert!(out.last().unwrap().is_err());
    }

    #[test]
    fn disposition_is_encoded() {
        assert_eq!(
            content_disposition("a b/ü"),
            "attachment; filename*=UTF-8''a%20b%2F%C3%BC"
        );
    }
}
