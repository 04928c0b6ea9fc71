//! The emulator's persistent state: metadata in SQLite, file bytes as blob files on disk.
//!
//! Layout under `--data`:
//! - `emulator.sqlite`: entries (files, folders, pending uploads), uploaded parts, download jobs,
//!   storages (shared, one per machine, session recordings) and the presigning key;
//! - `blobs/<uuid>`: the bytes of each visible file, immutable once written;
//! - `parts/<file id>/<part>-<md5>`: uploaded parts of pending uploads;
//! - `zips/<uuid>.zip`: finished download archives; `tmp/`: files being written;
//! - `live/machine-<n>/`: the "live disk" of running machines (`list-content`);
//! - `emulator.lock`: held while an emulator uses the folder, so two never share it.
//!
//! Subtle cases owned here:
//! - Crash safety. Bytes are written to `tmp/`, fsynced and renamed into `blobs/` *before* the
//!   single SQLite transaction that makes them visible (a completed upload also drops, in that
//!   same transaction, the file it overwrote). Old blobs are unlinked after the commit. So a crash
//!   at any moment leaves either the old state or the new one, plus at worst unreferenced files,
//!   which [`Store::open`] removes. Pending uploads are rows with `pending = 1`: never listed,
//!   never counted in quotas or name conflicts.
//! - Ids come from one AUTOINCREMENT sequence, so they are global across storages and never
//!   reused. Each storage has a root folder row (its id is the `current.id` of a root listing);
//!   items directly under it are shown with `parent_id` 0, and deleting it answers 450.
//! - Listings page by keyset (`tree`): page `p` starts after the last key of page `p - 1`,
//!   known from a per-folder table of page boundaries that one index scan builds and that is
//!   kept until the connection's change counter moves; any page then costs about the first.
//! - All SQL runs on one connection behind a mutex; callers run `Store` methods on blocking
//!   threads (`tokio::task::spawn_blocking`), never on the async workers. Long file work (part
//!   assembly, zips) runs outside the mutex.

mod downloads;
mod pages;
mod seed;
mod tree;
mod upload;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

pub use downloads::{Download, DownloadStatus, Planned, ZipItem};
pub use tree::{Folder, Listing, NewEntry, Target};
pub use upload::UploadSpec;

pub use crate::api::name::{MAX_NAME_BYTES, check_name};

/// How long [`Store::open`] waits for another emulator (or a previous one in the same process,
/// still shutting down) to release the data folder.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to take the folder lock.
const LOCK_RETRY: Duration = Duration::from_millis(50);
/// How long SQLite waits on a locked database before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deepest folder chain walked when building a path (guards against a corrupted parent loop).
const MAX_DEPTH: usize = 4096;
/// MIME type of bytes whose type nobody stated.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS storages (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    machine_id INTEGER NOT NULL,
    root_id INTEGER NOT NULL,
    UNIQUE (kind, machine_id)
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id INTEGER NOT NULL,
    parent_id INTEGER,
    name TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT,
    modified_ms INTEGER NOT NULL,
    uid TEXT NOT NULL,
    blob TEXT,
    pending INTEGER NOT NULL DEFAULT 0,
    owner_machine INTEGER,
    chunk_bytes INTEGER,
    part_count INTEGER,
    overwrite INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_by_parent ON entries (parent_id, pending, is_dir, name);
CREATE TABLE IF NOT EXISTS parts (
    file_id INTEGER NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    PRIMARY KEY (file_id, part_number)
);
CREATE TABLE IF NOT EXISTS downloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER,
    file_id INTEGER,
    zip TEXT,
    created_ms INTEGER NOT NULL
);
";

/// Columns selected for an [`Entry`], in [`Entry::from_row`] order.
const ENTRY_COLUMNS: &str = "id, storage_id, parent_id, name, is_dir, size, content_type, \
     modified_ms, uid, blob, pending, owner_machine, chunk_bytes, part_count, overwrite";

/// Why a store operation failed; each maps to one HTTP status in the routes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    SizeMismatch(String),
    #[error("{0}")]
    RootFolder(String),
    #[error("{0}")]
    ReadOnly(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("disk error: {0}")]
    Io(#[from] std::io::Error),
    #[error("data folder {0} is in use by another emulator")]
    Locked(PathBuf),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which tree a storage holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    Shared,
    Machine(u64),
    Recordings,
}

impl StorageKind {
    fn db_kind(&self) -> (&'static str, u64) {
        match self {
            StorageKind::Shared => ("shared", 0),
            StorageKind::Machine(m) => ("machine", *m),
            StorageKind::Recordings => ("recordings", 0),
        }
    }

    /// The name shown for the storage's root folder.
    pub fn root_name(&self) -> String {
        match self {
            StorageKind::Shared => "Shared Files".into(),
            StorageKind::Machine(m) => machine_name(*m),
            StorageKind::Recordings => "Session Recordings".into(),
        }
    }
}

/// The display name of machine `m`.
pub fn machine_name(m: u64) -> String {
    format!("Machine {m}")
}

/// One storage tree and its root folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageInfo {
    pub id: i64,
    pub kind: StorageKind,
    pub root_id: u64,
}

/// A row of `entries`: a file, a folder, a root folder or a pending upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub storage_id: i64,
    /// `None` only for a storage's root folder.
    pub parent_id: Option<u64>,
    pub name: String,
    pub is_dir: bool,
    /// Declared size (a raw entry may declare a size its blob does not have).
    pub size: u64,
    pub content_type: Option<String>,
    pub modified_ms: i64,
    pub uid: String,
    pub blob: Option<String>,
    pub pending: bool,
    /// Session recordings: the machine the recording belongs to.
    pub owner_machine: Option<u64>,
    pub chunk_bytes: Option<u64>,
    pub part_count: Option<u32>,
    pub overwrite: bool,
}

impl Entry {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Entry {
            id: row.get(0)?,
            storage_id: row.get(1)?,
            parent_id: row.get(2)?,
            name: row.get(3)?,
            is_dir: row.get(4)?,
            size: row.get(5)?,
            content_type: row.get(6)?,
            modified_ms: row.get(7)?,
            uid: row.get(8)?,
            blob: row.get(9)?,
            pending: row.get(10)?,
            owner_machine: row.get(11)?,
            chunk_bytes: row.get(12)?,
            part_count: row.get(13)?,
            overwrite: row.get(14)?,
        })
    }

    pub fn is_root(&self) -> bool {
        self.parent_id.is_none()
    }

    /// The MIME type to serve the entry's bytes with.
    pub fn content_type_or_default(&self) -> &str {
        self.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE)
    }
}

/// Folders under the data folder.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
    pub blobs: PathBuf,
    pub parts: PathBuf,
    pub tmp: PathBuf,
    pub zips: PathBuf,
    pub live: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Self {
        Dirs {
            root: root.to_path_buf(),
            blobs: root.join("blobs"),
            parts: root.join("parts"),
            tmp: root.join("tmp"),
            zips: root.join("zips"),
            live: root.join("live"),
        }
    }

    /// A fresh path under `tmp/`.
    pub fn tmp_file(&self) -> PathBuf {
        self.tmp.join(uuid::Uuid::new_v4().to_string())
    }
}

/// The emulator's state. Methods block (SQLite, disk): call them from blocking threads.
pub struct Store {
    conn: Mutex<Connection>,
    dirs: Dirs,
    machines: u64,
    quota: u64,
    shared: StorageInfo,
    recordings: StorageInfo,
    /// Index `m - 1` is machine `m`'s storage.
    machine_storages: Vec<StorageInfo>,
    presign_key: Vec<u8>,
    /// Where each page of a folder listing starts (keyset pagination, see `tree`).
    page_bounds: pages::BoundsCache,
    /// Held (advisory lock) for the store's lifetime.
    _lock: File,
}

impl Store {
    /// Open (creating if needed) the state in `data_dir` for `machines` machines, each storage
    /// limited to `quota` bytes; then remove what a crash may have left behind.
    pub fn open(data_dir: &Path, machines: u64, quota: u64) -> StoreResult<Store> {
        let dirs = Dirs::new(data_dir);
        for d in [
            &dirs.root,
            &dirs.blobs,
            &dirs.parts,
            &dirs.tmp,
            &dirs.zips,
            &dirs.live,
        ] {
            std::fs::create_dir_all(d)?;
        }
        let lock = take_lock(&dirs.root.join("emulator.lock"))?;
        let mut conn = Connection::open(dirs.root.join("emulator.sqlite"))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed transaction survives a power cut, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;

        let presign_key = presign_key(&conn)?;
        let shared = ensure_storage(&mut conn, StorageKind::Shared)?;
        let recordings = ensure_storage(&mut conn, StorageKind::Recordings)?;
        let mut machine_storages = Vec::new();
        for m in 1..=machines {
            machine_storages.push(ensure_storage(&mut conn, StorageKind::Machine(m))?);
        }
        let store = Store {
            conn: Mutex::new(conn),
            dirs,
            machines,
            quota,
            shared,
            recordings,
            machine_storages,
            presign_key,
            page_bounds: pages::BoundsCache::default(),
            _lock: lock,
        };
        for m in 1..=machines {
            store.seed_recordings(m)?;
        }
        store.cleanup()?;
        Ok(store)
    }

    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    pub fn presign_key(&self) -> &[u8] {
        &self.presign_key
    }

    pub fn machines(&self) -> u64 {
        self.machines
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// The connection; a panic elsewhere while holding it does not make it unusable.
    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn shared(&self) -> StorageInfo {
        self.shared
    }

    pub fn recordings(&self) -> StorageInfo {
        self.recordings
    }

    /// Machine `m`'s storage, if the machine exists (1..=machines).
    pub fn machine_storage(&self, m: u64) -> Option<StorageInfo> {
        let index = usize::try_from(m.checked_sub(1)?).ok()?;
        self.machine_storages.get(index).copied()
    }

    /// The storage with database id `id`, if it is one this emulator exposes.
    pub fn storage_by_id(&self, id: i64) -> Option<StorageInfo> {
        [self.shared, self.recordings]
            .into_iter()
            .chain(self.machine_storages.iter().copied())
            .find(|s| s.id == id)
    }

    /// `parent_id` as the API shows it: 0 for items directly under a root folder.
    pub fn api_parent_id(&self, entry: &Entry) -> u64 {
        match (entry.parent_id, self.storage_by_id(entry.storage_id)) {
            (Some(p), Some(s)) if p == s.root_id => 0,
            (Some(p), _) => p,
            (None, _) => 0,
        }
    }

    /// A live entry or pending upload by id; `None` when unknown.
    pub fn entry(&self, id: u64) -> StoreResult<Option<Entry>> {
        get_entry(&self.db(), id)
    }

    /// Bytes in use in a storage (declared sizes of visible files).
    pub fn usage(&self, storage: StorageInfo) -> StoreResult<u64> {
        usage(&self.db(), storage.id)
    }

    /// Path of a blob file.
    pub fn blob_path(&self, blob: &str) -> PathBuf {
        self.dirs.blobs.join(blob)
    }

    /// Remove what an interrupted run left: temp files, blobs no visible entry uses, part
    /// folders of uploads that no longer exist, unreferenced zips; mark unfinished zip jobs as
    /// failed (their worker is gone).
    fn cleanup(&self) -> StoreResult<()> {
        remove_dir_contents(&self.dirs.tmp, |_| true)?;
        let db = self.db();
        let blobs: HashSet<String> = collect_strings(
            &db,
            "SELECT blob FROM entries WHERE blob IS NOT NULL AND pending = 0",
        )?;
        let pending: HashSet<String> = collect_strings(
            &db,
            "SELECT CAST(id AS TEXT) FROM entries WHERE pending = 1",
        )?;
        db.execute(
            "UPDATE downloads SET status = 'failed' WHERE status = 'processing'",
            [],
        )?;
        let zips: HashSet<String> = collect_strings(
            &db,
            "SELECT zip FROM downloads WHERE zip IS NOT NULL AND status = 'ready'",
        )?;
        drop(db);
        let removed_blobs = remove_dir_contents(&self.dirs.blobs, |n| !blobs.contains(n))?;
        let removed_parts = remove_dir_contents(&self.dirs.parts, |n| !pending.contains(n))?;
        let removed_zips = remove_dir_contents(&self.dirs.zips, |n| !zips.contains(n))?;
        if removed_blobs + removed_parts + removed_zips > 0 {
            tracing::info!(
                removed_blobs,
                removed_parts,
                removed_zips,
                "removed leftovers of an interrupted run"
            );
        }
        Ok(())
    }
}

/// Take the data folder's advisory lock, waiting a little for a previous owner to let go.
fn take_lock(path: &Path) -> StoreResult<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(
                    path.parent().unwrap_or(path).to_path_buf(),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// The key presigned URLs are signed with: made once per data folder, so links survive a
/// restart.
fn presign_key(conn: &Connection) -> StoreResult<Vec<u8>> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'presign_key'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(bytes) = existing.and_then(|hex_key| hex::decode(hex_key).ok()) {
        return Ok(bytes);
    }
    let key: [u8; 32] = rand::random();
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('presign_key', ?1)",
        [hex::encode(key)],
    )?;
    Ok(key.to_vec())
}

/// The storage of `kind`, created with its root folder on first use.
fn ensure_storage(conn: &mut Connection, kind: StorageKind) -> StoreResult<StorageInfo> {
    let (db_kind, machine) = kind.db_kind();
    let found: Option<(i64, u64)> = conn
        .query_row(
            "SELECT id, root_id FROM storages WHERE kind = ?1 AND machine_id = ?2",
            params![db_kind, machine],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((id, root_id)) = found {
        return Ok(StorageInfo { id, kind, root_id });
    }
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO storages (kind, machine_id, root_id) VALUES (?1, ?2, 0)",
        params![db_kind, machine],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO entries (storage_id, parent_id, name, is_dir, size, modified_ms, uid)
         VALUES (?1, NULL, ?2, 1, 0, ?3, ?4)",
        params![
            id,
            kind.root_name(),
            crate::emulator::reply::now_ms(),
            new_uid()
        ],
    )?;
    let root_id = u64::try_from(tx.last_insert_rowid()).unwrap_or_default();
    tx.execute(
        "UPDATE storages SET root_id = ?1 WHERE id = ?2",
        params![root_id, id],
    )?;
    tx.commit()?;
    Ok(StorageInfo { id, kind, root_id })
}

fn get_entry(conn: &Connection, id: u64) -> StoreResult<Option<Entry>> {
    Ok(conn
        .query_row(
            &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1"),
            [id],
            Entry::from_row,
        )
        .optional()?)
}

/// Declared bytes of a storage's visible files. `TOTAL` (a float) rather than `SUM`: raw entries
/// may declare absurd sizes, and `SUM` fails on 64-bit overflow; a float is exact up to 2^53
/// bytes and the cast saturates.
fn usage(conn: &Connection, storage_id: i64) -> StoreResult<u64> {
    let total: f64 = conn.query_row(
        "SELECT TOTAL(size) FROM entries WHERE storage_id = ?1 AND pending = 0 AND is_dir = 0",
        [storage_id],
        |r| r.get(0),
    )?;
    Ok(total as u64)
}

fn collect_strings(conn: &Connection, sql: &str) -> StoreResult<HashSet<String>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Remove the entries of `dir` (files or folders) whose name `doomed` selects; returns how many.
fn remove_dir_contents(dir: &Path, doomed: impl Fn(&str) -> bool) -> StoreResult<usize> {
    let mut removed = 0;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !doomed(&name) {
            continue;
        }
        if item.file_type()?.is_dir() {
            std::fs::remove_dir_all(item.path())?;
        } else {
            std::fs::remove_file(item.path())?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Remove a file if present; a missing file is not an error (cleanup after a commit).
fn remove_quietly(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover file");
    }
}

/// Write `tmp` durably and move it to `dest` (same filesystem), then sync the folder so the
/// rename itself survives a power cut.
fn publish(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, dest)?;
    if let Some(parent) = dest.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_roots_and_key_and_lock_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, key) = {
            let s = Store::open(dir.path(), 2, 1 << 30).unwrap();
            (
                (s.shared().root_id, s.machine_storage(2).unwrap().root_id),
                s.presign_key().to_vec(),
            )
        };
        let s = Store::open(dir.path(), 2, 1 << 30).unwrap();
        assert_eq!(
            (s.shared().root_id, s.machine_storage(2).unwrap().root_id),
            roots
        );
        assert_eq!(s.presign_key(), key.as_slice());
        assert!(s.machine_storage(3).is_none());
        assert!(s.machine_storage(0).is_none());
        let again = File::options()
            .write(true)
            .open(dir.path().join("emulator.lock"))
            .unwrap();
        assert!(
            again.try_lock().is_err(),
            "the folder lock is held while the store is open"
        );
    }
}
