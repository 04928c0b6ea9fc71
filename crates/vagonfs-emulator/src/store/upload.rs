//! Multipart uploads: begin (a pending row), parts (files under `parts/`), complete (assemble a
//! blob, then one transaction makes it visible).
//!
//! Subtle cases:
//! - Part files are named `<part>-<md5>`, so a part sent again with other bytes never replaces a
//!   file another request may be reading; the row in `parts` says which one counts. Assembly
//!   re-hashes every part and checks it against the recorded MD5 and size, so what becomes
//!   visible is exactly what was acknowledged.
//! - Every non-final part must be exactly `chunk_size` MiB and the last one the rest: a part of
//!   the wrong size, a missing part, a wrong ETag or a part number beyond the count is 422.
//! - Complete re-checks everything that may have changed since create (parent deleted → 404,
//!   a folder or a non-overwritable file now holds the name → 409, quota → 507) inside the
//!   transaction that publishes the file, so concurrent completes cannot both squeeze under the
//!   quota. A failed complete keeps the upload and its parts (the client may retry).
//! - Completing an upload that is already complete answers with the file again (a client
//!   retrying after a lost response must not see an error).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use rusqlite::params;

use super::tree::{live_folder, same_name};
use super::{
    Entry, Store, StoreError, StoreResult, Target, get_entry, new_uid, publish, remove_quietly,
    usage,
};
use crate::emulator::reply::now_ms;

/// Buffer for copying part files into a blob.
const COPY_BUFFER: usize = 256 * 1024;

/// A validated file create.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    pub target: Target,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub chunk_bytes: u64,
    pub overwrite: bool,
}

impl UploadSpec {
    /// Parts needed: `ceil(size / chunk)`, at least one.
    pub fn part_count(size: u64, chunk_bytes: u64) -> u64 {
        size.div_ceil(chunk_bytes.max(1)).max(1)
    }
}

/// Bytes part `n` (1-based) of an upload must hold.
pub fn expected_part_size(size: u64, chunk_bytes: u64, n: u64) -> u64 {
    let start = (n.saturating_sub(1)).saturating_mul(chunk_bytes);
    size.saturating_sub(start).min(chunk_bytes)
}

impl Store {
    /// Start a file upload: checks the name, conflicts and quota, and records a pending row.
    pub fn begin_upload(&self, spec: &UploadSpec) -> StoreResult<(Entry, u64)> {
        let mut db = self.db();
        let (storage, parent) = self.writable_target(&db, spec.target)?;
        let existing = same_name(&db, parent.id, &spec.name)?;
        let replaced = replaced_size(&existing, &spec.name, spec.overwrite)?;
        let in_use = usage(&db, storage.id)?;
        check_quota(in_use, replaced, spec.size, self.quota)?;
        let parts = UploadSpec::part_count(spec.size, spec.chunk_bytes);
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO entries (storage_id, parent_id, name, is_dir, size, content_type,
                                  modified_ms, uid, pending, chunk_bytes, part_count, overwrite)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10)",
            params![
                storage.id,
                parent.id,
                spec.name,
                spec.size,
                spec.content_type,
                now_ms(),
                new_uid(),
                spec.chunk_bytes,
                parts,
                spec.overwrite
            ],
        )?;
        let id = u64::try_from(tx.last_insert_rowid()).unwrap_or_default();
        let entry = get_entry(&tx, id)?
            .ok_or_else(|| StoreError::NotFound(format!("upload {id} vanished")))?;
        tx.commit()?;
        Ok((entry, parts))
    }

    /// The bytes part `n` of pending upload `file_id` must hold; 404 when there is no such
    /// upload or part.
    pub fn part_size(&self, file_id: u64, n: u64) -> StoreResult<u64> {
        let entry = self.pending_upload(file_id)?;
        let (size, chunk, count) = upload_shape(&entry);
        if n == 0 || n > count {
            return Err(StoreError::NotFound(format!(
                "upload {file_id} has no part {n} (it has {count})"
            )));
        }
        Ok(expected_part_size(size, chunk, n))
    }

    fn pending_upload(&self, file_id: u64) -> StoreResult<Entry> {
        match self.entry(file_id)? {
            Some(e) if e.pending => Ok(e),
            _ => Err(StoreError::NotFound(format!("upload {file_id} not found"))),
        }
    }

    /// Record a received part whose bytes are in `tmp` (moved into `parts/`).
    pub fn record_part(
        &self,
        file_id: u64,
        n: u64,
        tmp: &Path,
        size: u64,
        md5_hex: &str,
    ) -> StoreResult<()> {
        let folder = self.dirs.parts.join(file_id.to_string());
        let db = self.db();
        // Checked under the lock: a delete of the upload cannot slip in between.
        match get_entry(&db, file_id)? {
            Some(e) if e.pending => {}
            _ => {
                remove_quietly(tmp);
                return Err(StoreError::NotFound(format!("upload {file_id} not found")));
            }
        }
        std::fs::create_dir_all(&folder)?;
        std::fs::rename(tmp, folder.join(part_file_name(n, md5_hex)))?;
        db.execute(
            "INSERT OR REPLACE INTO parts (file_id, part_number, size, md5) VALUES (?1, ?2, ?3, ?4)",
            params![file_id, n, size, md5_hex],
        )?;
        Ok(())
    }

    /// Complete an upload from the client's list of `(part_number, etag)`.
    pub fn complete(&self, file_id: u64, claimed: &[(u64, String)]) -> StoreResult<Entry> {
        // Phase 1: check the claim against what was received.
        let (entry, plan) = {
            let db = self.db();
            let entry = get_entry(&db, file_id)?
                .ok_or_else(|| StoreError::NotFound(format!("file {file_id} not found")))?;
            if !entry.pending {
                return if entry.is_dir {
                    Err(StoreError::BadRequest(format!("{file_id} is a folder")))
                } else {
                    Ok(entry)
                };
            }
            let received = received_parts(&db, file_id)?;
            let plan = check_claim(&entry, claimed, &received)?;
            (entry, plan)
        };
        // Phase 2: assemble the blob outside the lock.
        let blob = new_uid();
        let blob_path = self.blob_path(&blob);
        let folder = self.dirs.parts.join(file_id.to_string());
        let tmp = self.dirs.tmp_file();
        if let Err(e) = assemble(&folder, &plan, &tmp) {
            remove_quietly(&tmp);
            return Err(e);
        }
        publish(&tmp, &blob_path).inspect_err(|_| remove_quietly(&tmp))?;
        // Phase 3: publish in one transaction.
        let outcome = self.publish_upload(&entry, &blob);
        match &outcome {
            Ok((published, replaced)) => {
                if published.blob.as_deref() != Some(blob.as_str()) {
                    remove_quietly(&blob_path);
                }
                for old in replaced {
                    remove_quietly(&self.blob_path(old));
                }
                remove_quietly(&folder);
            }
            Err(_) => remove_quietly(&blob_path),
        }
        outcome.map(|(published, _)| published)
    }

    /// Make a pending upload visible with `blob`; returns the file and the blobs it replaced.
    fn publish_upload(&self, upload: &Entry, blob: &str) -> StoreResult<(Entry, Vec<String>)> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let current = get_entry(&tx, upload.id)?
            .ok_or_else(|| StoreError::NotFound(format!("file {} not found", upload.id)))?;
        if !current.pending {
            // A concurrent complete won the race: same answer as for a repeated complete.
            return Ok((current, Vec::new()));
        }
        let parent = upload.parent_id.unwrap_or_default();
        live_folder(&tx, parent).map_err(|_| {
            StoreError::NotFound(format!("parent folder {parent} no longer exists"))
        })?;
        let existing = same_name(&tx, parent, &upload.name)?;
        let replaced_bytes = replaced_size(&existing, &upload.name, upload.overwrite)?;
        check_quota(
            usage(&tx, upload.storage_id)?,
            replaced_bytes,
            upload.size,
            self.quota,
        )?;
        let mut replaced = Vec::new();
        for old in &existing {
            tx.execute("DELETE FROM entries WHERE id = ?1", [old.id])?;
            replaced.extend(old.blob.clone());
        }
        tx.execute(
            "UPDATE entries SET pending = 0, blob = ?1, modified_ms = ?2 WHERE id = ?3",
            params![blob, now_ms(), upload.id],
        )?;
        tx.execute("DELETE FROM parts WHERE file_id = ?1", [upload.id])?;
        let published = get_entry(&tx, upload.id)?
            .ok_or_else(|| StoreError::NotFound(format!("file {} vanished", upload.id)))?;
        tx.commit()?;
        Ok((published, replaced))
    }
}

/// `(size, chunk_bytes, part_count)` of a pending upload.
fn upload_shape(entry: &Entry) -> (u64, u64, u64) {
    let chunk = entry.chunk_bytes.unwrap_or(1).max(1);
    let count = entry
        .part_count
        .map(u64::from)
        .unwrap_or_else(|| UploadSpec::part_count(entry.size, chunk));
    (entry.size, chunk, count)
}

fn part_file_name(n: u64, md5_hex: &str) -> String {
    format!("{n}-{md5_hex}")
}

/// `part_number → (size, md5)` as received.
fn received_parts(
    conn: &rusqlite::Connection,
    file_id: u64,
) -> StoreResult<BTreeMap<u64, (u64, String)>> {
    let mut stmt = conn.prepare("SELECT part_number, size, md5 FROM parts WHERE file_id = ?1")?;
    let rows = stmt.query_map([file_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One part to copy into the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedPart {
    number: u64,
    size: u64,
    md5: String,
}

/// Check the client's parts against the upload's shape and what arrived; 422 on any mismatch.
fn check_claim(
    entry: &Entry,
    claimed: &[(u64, String)],
    received: &BTreeMap<u64, (u64, String)>,
) -> StoreResult<Vec<PlannedPart>> {
    let (size, chunk, count) = upload_shape(entry);
    let mismatch = |m: String| Err(StoreError::SizeMismatch(m));
    let mut seen = HashSet::new();
    for (n, _) in claimed {
        if *n == 0 || *n > count {
            return mismatch(format!(
                "part {n} is out of range: the upload has {count} part(s)"
            ));
        }
        if !seen.insert(*n) {
            return Err(StoreError::BadRequest(format!("part {n} is listed twice")));
        }
    }
    let claims: BTreeMap<u64, &str> = claimed.iter().map(|(n, e)| (*n, e.as_str())).collect();
    let mut plan = Vec::new();
    let mut total: u64 = 0;
    for n in 1..=count {
        let Some(etag) = claims.get(&n) else {
            return mismatch(format!("part {n} is missing from the request"));
        };
        let Some((got, md5)) = received.get(&n) else {
            return mismatch(format!("part {n} was never uploaded"));
        };
        if normalize_etag(etag) != *md5 {
            return mismatch(format!("part {n}: etag does not match the uploaded part"));
        }
        let want = expected_part_size(size, chunk, n);
        if *got != want {
            return mismatch(format!("part {n} has {got} bytes, expected {want}"));
        }
        total = total.saturating_add(*got);
        plan.push(PlannedPart {
            number: n,
            size: *got,
            md5: md5.clone(),
        });
    }
    if total != size {
        return mismatch(format!(
            "parts add up to {total} bytes, declared size is {size}"
        ));
    }
    Ok(plan)
}

/// An ETag compared without quotes or a weak prefix, case-insensitively.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

/// Declared bytes of the file a create would replace; 409 when the name is taken by a folder,
/// or by a file and `overwrite` is off.
fn replaced_size(existing: &[Entry], name: &str, overwrite: bool) -> StoreResult<u64> {
    if existing.iter().any(|e| e.is_dir) {
        return Err(StoreError::Conflict(format!(
            "a folder named {name:?} already exists; a file cannot replace it"
        )));
    }
    if !existing.is_empty() && !overwrite {
        return Err(StoreError::Conflict(format!(
            "a file named {name:?} already exists"
        )));
    }
    Ok(existing.iter().map(|e| e.size).fold(0, u64::saturating_add))
}

fn check_quota(in_use: u64, replaced: u64, size: u64, quota: u64) -> StoreResult<()> {
    let after = in_use.saturating_sub(replaced).saturating_add(size);
    if after > quota {
        return Err(StoreError::NoSpace(format!(
            "storage full: {after} bytes needed, quota is {quota}"
        )));
    }
    Ok(())
}

/// Concatenate the planned parts into `out`, re-checking each part's size and MD5.
fn assemble(folder: &Path, plan: &[PlannedPart], out: &PathBuf) -> StoreResult<()> {
    let mut dest = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut buf = vec![0u8; COPY_BUFFER];
    for part in plan {
        let path = folder.join(part_file_name(part.number, &part.md5));
        let mut src = std::fs::File::open(&path).map_err(|e| {
            StoreError::SizeMismatch(format!(
                "part {} is gone ({e}); upload it again",
                part.number
            ))
        })?;
        let mut hasher = Md5::new();
        let mut copied: u64 = 0;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dest.write_all(&buf[..n])?;
            copied += n as u64;
        }
        if copied != part.size || hex::encode(hasher.finalize()) != part.md5 {
            return Err(StoreError::SizeMismatch(format!(
                "part {} changed on disk; upload it again",
                part.number
            )));
        }
    }
    dest.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn part_arithmetic() {
        assert_eq!(UploadSpec::part_count(0, MIB), 1);
        assert_eq!(UploadSpec::part_count(MIB, MIB), 1);
        assert_eq!(UploadSpec::part_count(MIB + 1, MIB), 2);
        assert_eq!(expected_part_size(MIB + 1, MIB, 1), MIB);
        assert_eq!(expected_part_size(MIB + 1, MIB, 2), 1);
        assert_eq!(expected_part_size(0, MIB, 1), 0);
    }

    #[test]
    fn etags_compare_loosely() {
        assert_eq!(normalize_etag("\"ABC\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    fn put(s: &Store, id: u64, n: u64, bytes: &[u8]) -> String {
        let tmp = s.dirs().tmp_file();
        std::fs::write(&tmp, bytes).unwrap();
        let md5 = hex::encode(Md5::digest(bytes));
        s.record_part(id, n, &tmp, bytes.len() as u64, &md5)
            .unwrap();
        format!("\"{md5}\"")
    }

    #[test]
    fn upload_complete_overwrite_and_quota() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1, 10).unwrap();
        let spec = |size, overwrite| UploadSpec {
            target: Target::default(),
            name: "f.bin".into(),
            content_type: "application/octet-stream".into(),
            size,
            chunk_bytes: 4,
            overwrite,
        };
        let (first, parts) = s.begin_upload(&spec(6, false)).unwrap();
        assert_eq!(parts, 2);
        assert!(
            s.list(s.shared(), None, None, 1, 20, None)
                .unwrap()
                .items
                .is_empty()
        );
        let e1 = put(&s, first.id, 1, b"abcd");
        // Wrong size for part 2 → 422; then the right bytes.
        let bad = put(&s, first.id, 2, b"efg");
        assert!(matches!(
            s.complete(first.id, &[(1, e1.clone()), (2, bad)]),
            Err(StoreError::SizeMismatch(_))
        ));
        let e2 = put(&s, first.id, 2, b"ef");
        assert!(matches!(
            s.complete(first.id, &[(1, e1.clone())]),
            Err(StoreError::SizeMismatch(_))
        ));
        assert!(matches!(
            s.complete(first.id, &[(1, e2.clone()), (2, e1.clone())]),
            Err(StoreError::SizeMismatch(_))
        ));
        let done = s
            .complete(first.id, &[(1, e1.clone()), (2, e2.clone())])
            .unwrap();
        assert_eq!(
            std::fs::read(s.blob_path(done.blob.as_deref().unwrap())).unwrap(),
            b"abcdef"
        );
        // Repeating complete answers the same file.
        assert_eq!(s.complete(first.id, &[]).unwrap().id, first.id);

        assert!(matches!(
            s.begin_upload(&spec(1, false)),
            Err(StoreError::Conflict(_))
        ));
        // 6 in use, quota 10: replacing the 6-byte file with 10 bytes fits, 11 does not.
        assert!(matches!(
            s.begin_upload(&spec(11, true)),
            Err(StoreError::NoSpace(_))
        ));
        let (second, _) = s.begin_upload(&spec(2, true)).unwrap();
        let e = put(&s, second.id, 1, b"zz");
        let replaced = s.complete(second.id, &[(1, e)]).unwrap();
        let listed = s.list(s.shared(), None, None, 1, 20, None).unwrap().items;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, replaced.id);
        assert!(s.entry(first.id).unwrap().is_none());
        assert!(!s.blob_path(done.blob.as_deref().unwrap()).exists());
        assert_eq!(s.usage(s.shared()).unwrap(), 2);
    }
}
