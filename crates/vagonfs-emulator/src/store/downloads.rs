//! Download jobs (`POST /files/download`): one file is a job that is ready at once; several
//! files or a folder is a zip job that a background worker finishes.
//!
//! Subtle cases: the zip's member paths are built from stored names, which raw entries may make
//! hostile (`/`, `..`, empty, duplicates); each path component is made safe and duplicates get a
//! ` (n)` suffix, so an archive never escapes its extraction folder nor repeats a member. A
//! job's finished archive lives in `zips/` until the data folder is cleaned of it.

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};

use super::{Entry, Store, StoreError, StoreResult, get_entry, new_uid};
use crate::emulator::reply::now_ms;

/// MIME type of zip archives.
pub const ZIP_CONTENT_TYPE: &str = "application/zip";
/// Name of an archive of several picked files.
const MULTI_FILE_ZIP_NAME: &str = "files.zip";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadStatus {
    Processing,
    Ready,
    Failed,
}

impl DownloadStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DownloadStatus::Processing => "processing",
            DownloadStatus::Ready => "ready",
            DownloadStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "processing" => DownloadStatus::Processing,
            "ready" => DownloadStatus::Ready,
            _ => DownloadStatus::Failed,
        }
    }
}

/// A download job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub id: u64,
    pub status: DownloadStatus,
    pub name: String,
    pub content_type: String,
    /// Bytes; unknown for a zip until it is built.
    pub size: Option<u64>,
    /// A single-file download: the file.
    pub file_id: Option<u64>,
    /// A finished zip: its file under `zips/`.
    pub zip: Option<String>,
}

/// One member of a zip: a folder (`blob` None) or a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipItem {
    pub path: String,
    pub blob: Option<PathBuf>,
}

/// What was asked for, resolved: one file, or a zip to build.
#[derive(Debug, Clone)]
pub enum Planned {
    File(Entry, Download),
    Zip(Download, Vec<ZipItem>),
}

impl Store {
    /// Resolve a download request: `file_ids` (one or more) or a `directory_id`.
    pub fn plan_download(&self, file_ids: &[u64], directory: Option<u64>) -> StoreResult<Planned> {
        let picked: Vec<Entry> = match directory {
            Some(d) => {
                let dir = self.visible(d)?;
                if !dir.is_dir {
                    return Err(StoreError::BadRequest(format!("{d} is not a folder")));
                }
                vec![dir]
            }
            None => file_ids
                .iter()
                .map(|id| self.visible(*id))
                .collect::<Result<_, _>>()?,
        };
        if let [single] = picked.as_slice()
            && !single.is_dir
        {
            let download = self.insert_download(
                DownloadStatus::Ready,
                &single.name,
                single.content_type_or_default(),
                Some(single.size),
                Some(single.id),
            )?;
            return Ok(Planned::File(single.clone(), download));
        }
        let (name, members): (String, Vec<Entry>) = match picked.as_slice() {
            [dir] if dir.is_dir => (
                format!("{}.zip", safe_component(&dir.name)),
                self.children(dir.id)?,
            ),
            _ => (MULTI_FILE_ZIP_NAME.to_string(), picked),
        };
        let mut items = Vec::new();
        self.add_members(&members, "", &mut items, 0)?;
        let download = self.insert_download(
            DownloadStatus::Processing,
            &name,
            ZIP_CONTENT_TYPE,
            None,
            None,
        )?;
        Ok(Planned::Zip(download, items))
    }

    /// A visible (not pending) entry of an exposed storage, else 404.
    pub fn visible(&self, id: u64) -> StoreResult<Entry> {
        match self.entry(id)? {
            Some(e) if !e.pending && self.storage_by_id(e.storage_id).is_some() => Ok(e),
            _ => Err(StoreError::NotFound(format!(
                "file or folder {id} not found"
            ))),
        }
    }

    fn children(&self, dir: u64) -> StoreResult<Vec<Entry>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {} FROM entries WHERE parent_id = ?1 AND pending = 0 ORDER BY is_dir DESC, name, id",
            super::ENTRY_COLUMNS
        ))?;
        Ok(stmt
            .query_map([dir], Entry::from_row)?
            .collect::<Result<_, _>>()?)
    }

    fn add_members(
        &self,
        members: &[Entry],
        prefix: &str,
        items: &mut Vec<ZipItem>,
        depth: usize,
    ) -> StoreResult<()> {
        if depth > super::MAX_DEPTH {
            return Err(StoreError::BadRequest("folder tree too deep to zip".into()));
        }
        let mut used = HashSet::new();
        for member in members {
            let name = unique_name(&safe_component(&member.name), &mut used);
            let path = format!("{prefix}{name}");
            if member.is_dir {
                let folder = format!("{path}/");
                items.push(ZipItem {
                    path: folder.clone(),
                    blob: None,
                });
                self.add_members(&self.children(member.id)?, &folder, items, depth + 1)?;
            } else {
                let blob = member.blob.as_deref().map(|b| self.blob_path(b));
                items.push(ZipItem {
                    path,
                    blob: Some(blob.unwrap_or_default()),
                });
            }
        }
        Ok(())
    }

    fn insert_download(
        &self,
        status: DownloadStatus,
        name: &str,
        content_type: &str,
        size: Option<u64>,
        file_id: Option<u64>,
    ) -> StoreResult<Download> {
        let db = self.db();
        db.execute(
            "INSERT INTO downloads (status, name, content_type, size, file_id, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![status.as_str(), name, content_type, size, file_id, now_ms()],
        )?;
        let id = u64::try_from(db.last_insert_rowid()).unwrap_or_default();
        Ok(Download {
            id,
            status,
            name: name.into(),
            content_type: content_type.into(),
            size,
            file_id,
            zip: None,
        })
    }

    /// A fresh path under `tmp/` to build a zip in, and the name it will have in `zips/`.
    pub fn zip_slot(&self) -> (PathBuf, String) {
        (self.dirs.tmp_file(), format!("{}.zip", new_uid()))
    }

    pub fn zip_path(&self, zip: &str) -> PathBuf {
        self.dirs.zips.join(zip)
    }

    /// Record a zip job's end: the archive built in `tmp` (moved into `zips/`), or a failure.
    pub fn finish_zip<E: std::error::Error>(
        &self,
        id: u64,
        built: Result<(PathBuf, String, u64), E>,
    ) -> StoreResult<()> {
        let db = self.db();
        match built {
            Ok((tmp, zip, size)) => {
                super::publish(&tmp, &self.zip_path(&zip))?;
                db.execute(
                    "UPDATE downloads SET status = 'ready', zip = ?1, size = ?2 WHERE id = ?3",
                    params![zip, size, id],
                )?;
            }
            Err(reason) => {
                tracing::warn!(download_id = id, %reason, "zip job failed");
                db.execute("UPDATE downloads SET status = 'failed' WHERE id = ?1", [id])?;
            }
        }
        Ok(())
    }

    pub fn download(&self, id: u64) -> StoreResult<Option<Download>> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT id, status, name, content_type, size, file_id, zip FROM downloads WHERE id = ?1",
                [id],
                |r| {
                    Ok(Download {
                        id: r.get(0)?,
                        status: DownloadStatus::parse(&r.get::<_, String>(1)?),
                        name: r.get(2)?,
                        content_type: r.get(3)?,
                        size: r.get(4)?,
                        file_id: r.get(5)?,
                        zip: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// The file behind a single-file download, if it is still there.
    pub fn download_file(&self, download: &Download) -> StoreResult<Option<Entry>> {
        let Some(file_id) = download.file_id else {
            return Ok(None);
        };
        Ok(get_entry(&self.db(), file_id)?.filter(|e| !e.pending && !e.is_dir))
    }
}

/// A stored name made safe as one zip path component.
fn safe_component(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".into(),
        _ => cleaned,
    }
}

/// `name`, or `name (2)`, `name (3)`... whichever is not yet in `used`.
fn unique_name(name: &str, used: &mut HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while !used.insert(candidate.clone()) {
        candidate = format!("{name} ({n})");
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_safe_and_unique() {
        assert_eq!(safe_component("a/b"), "a_b");
        assert_eq!(safe_component(".."), "_");
        assert_eq!(safe_component(""), "_");
        let mut used = HashSet::new();
        assert_eq!(unique_name("x", &mut used), "x");
        assert_eq!(unique_name("x", &mut used), "x (2)");
        assert_eq!(unique_name("x", &mut used), "x (3)");
    }
}
