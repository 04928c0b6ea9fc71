//! Download links: `POST /files/download` (one file at once, or a zip job), its status, and the
//! single-file link `GET /files/{id}/download`.
//!
//! Subtle cases: exactly one of `file_ids` (non-empty) and `directory_id` is required; a single
//! id naming a folder is zipped like `directory_id`; a zip job runs on a blocking thread and is
//! tracked so shutdown waits for it; every status poll of a ready job issues a fresh link (the
//! old one may have expired); a single-file job whose file has since been deleted reports
//! `failed`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::{base_url, blocking, field_id, json_object, path_id, value_id};
use crate::emulator::AppState;
use crate::emulator::reply::{Failure, Reply, Resource, ok};
use crate::emulator::store::{Download, DownloadStatus, Planned, StoreError};

/// A presigned GET link to a file's bytes.
pub fn file_url(state: &AppState, headers: &HeaderMap, file_id: u64) -> String {
    let base = base_url(state, headers);
    state.presign.url(
        &base,
        "GET",
        &super::data::file_path(file_id),
        state.config.link_ttl,
    )
}

fn zip_url(state: &AppState, headers: &HeaderMap, download_id: u64) -> String {
    let base = base_url(state, headers);
    state.presign.url(
        &base,
        "GET",
        &super::data::zip_path(download_id),
        state.config.link_ttl,
    )
}

#[derive(Debug, Serialize)]
struct Requested {
    url: Option<String>,
    size: Option<u64>,
    name: String,
    content_type: String,
    download_id: u64,
}

/// `POST /files/download`
pub async fn request(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Reply {
    let map = json_object(&body)?;
    let directory = field_id(&map, "directory_id")?;
    let file_ids: Vec<u64> = match map.get("file_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                ids.push(
                    value_id(Some(item), "file_ids")?
                        .ok_or_else(|| Failure::bad_request("file_ids must hold integers"))?,
                );
            }
            ids
        }
        Some(_) => {
            return Err(Failure::bad_request(
                "file_ids must be an array of integers",
            ));
        }
    };
    match (file_ids.is_empty(), directory) {
        (true, None) => {
            return Err(Failure::bad_request(
                "give file_ids (non-empty) or directory_id",
            ));
        }
        (false, Some(_)) => {
            return Err(Failure::bad_request(
                "give file_ids or directory_id, not both",
            ));
        }
        _ => {}
    }
    let planned = blocking(&state, move |s| s.plan_download(&file_ids, directory)).await?;
    let answer = match planned {
        Planned::File(file, download) => Requested {
            url: Some(file_url(&state, &headers, file.id)),
            size: Some(file.size),
            name: download.name,
            content_type: download.content_type,
            download_id: download.id,
        },
        Planned::Zip(download, items) => {
            spawn_zip_job(&state, download.id, items);
            Requested {
                url: None,
                size: None,
                name: download.name,
                content_type: download.content_type,
                download_id: download.id,
            }
        }
    };
    Ok(ok(answer))
}

/// Build a zip in the background and record the outcome.
fn spawn_zip_job(state: &AppState, download_id: u64, items: Vec<crate::emulator::store::ZipItem>) {
    let store = state.store.clone();
    let job = tokio::task::spawn_blocking(move || {
        let (tmp, name) = store.zip_slot();
        let built = match crate::emulator::zip::build(&items, &tmp) {
            Ok(size) => Ok((tmp, name, size)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        };
        if let Err(e) = store.finish_zip(download_id, built) {
            tracing::error!(download_id, error = %e, "could not record the end of a zip job");
        }
    });
    state.track_job(job);
}

#[derive(Debug, Serialize)]
struct StatusAttributes {
    status: &'static str,
    url: Option<String>,
    size: Option<u64>,
    name: String,
    content_type: String,
}

#[derive(Debug, Serialize)]
struct StatusBody {
    download: Resource<StatusAttributes>,
}

/// `GET /files/download/{id}`
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let id = path_id(&id, "download id")?;
    let (download, file) = blocking(&state, move |s| {
        let download: Download = s
            .download(id)?
            .ok_or_else(|| StoreError::NotFound(format!("download {id} not found")))?;
        let file = s.download_file(&download)?;
        Ok((download, file))
    })
    .await?;
    let (status, url) = match (download.status, download.file_id, file) {
        (DownloadStatus::Ready, Some(_), Some(f)) => (
            DownloadStatus::Ready,
            Some(file_url(&state, &headers, f.id)),
        ),
        (DownloadStatus::Ready, Some(_), None) => (DownloadStatus::Failed, None),
        (DownloadStatus::Ready, None, _) => (
            DownloadStatus::Ready,
            Some(zip_url(&state, &headers, download.id)),
        ),
        (other, _, _) => (other, None),
    };
    Ok(ok(StatusBody {
        download: Resource::new(
            download.id,
            "download",
            StatusAttributes {
                status: status.as_str(),
                url,
                size: download.size,
                name: download.name,
                content_type: download.content_type,
            },
        ),
    }))
}

#[derive(Debug, Serialize)]
struct Link {
    url: String,
    size: u64,
    name: String,
    content_type: String,
}

/// `GET /files/{id}/download`
pub async fn file_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let id = path_id(&id, "file id")?;
    let entry = blocking(&state, move |s| s.visible(id)).await?;
    if entry.is_dir {
        return Err(Failure::bad_request(format!(
            "{id} is a folder: request a zip with POST /files/download"
        )));
    }
    Ok(ok(Link {
        url: file_url(&state, &headers, entry.id),
        size: entry.size,
        content_type: entry.content_type_or_default().to_string(),
        name: entry.name,
    }))
}
