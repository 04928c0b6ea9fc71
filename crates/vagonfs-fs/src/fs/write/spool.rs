//! Spools: one local file per written file, in a per-mount folder under `--cache-dir`.
//!
//! [`SpoolDir`] is the folder (`<cache>/<mount key>/`), created `0700` and held under an
//! exclusive `flock` for the life of the mount, so two mounts of the same target cannot recover
//! or clean up each other's spools. Opening it removes what a crash left without meaning: spool
//! files with no journal record (they were never dirty, or their upload completed), records
//! whose spool is gone, and half-written temp files.
//!
//! [`Spool`] holds one file's current bytes, never in memory: positional I/O (`FileExt`) on one
//! `std::fs::File`, so one writer and many readers share it without a seek position. A spool
//! *based on a remote file* starts empty and is filled lazily: nothing is fetched until the first
//! mutation needs the old bytes (a write without `O_TRUNC`, or `truncate(n)` which needs only
//! `[0, n)`). Reads before that pass through to the remote source for the part not yet copied.
//!
//! Subtle cases:
//! - The fill fetches in [`FILL_BLOCK`] pieces, [`FILL_AHEAD`] at once (bounded memory, and the
//!   round trips overlap), and writes each piece, in order, under the
//!   state lock, clipped to the current `remote_limit`, so a `truncate` racing the fill is never
//!   undone by a late piece.
//! - Mutations wait for the fill to finish: a dirty spool is always complete on disk, which is
//!   what makes the crash journal sound (a record never points at a half-filled spool).
//! - The std `Mutex` guarding the state is only held for short positional calls, never across
//!   an `.await`; the fill's own async gate serializes fills (one fetch of each byte).
//! - Growth is sparse: a write past the end or a growing `set_len` leaves a hole that reads as
//!   zeros, like any POSIX file.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;

use super::remote::RemoteBytes;
use super::uploader::PartSource;
use super::{WriteError, WriteResult, join_error};
use crate::api::ApiResult;

/// Bytes fetched from the remote per fill step (bounds the fill's memory).
pub const FILL_BLOCK: u64 = 4 * 1024 * 1024;

/// Fill pieces fetched at once (one round trip each; a fill's memory is at most this many
/// pieces).
pub const FILL_AHEAD: usize = 4;

/// Spool folder and spool file permissions: the user's data, the user's eyes only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// File name parts inside a spool folder.
pub(crate) const SPOOL_EXT: &str = "spool";
pub(crate) const JOURNAL_EXT: &str = "journal.json";
pub(crate) const TEMP_EXT: &str = "tmp";
const LOCK_FILE: &str = ".lock";

/// The per-mount spool folder, locked while open.
#[derive(Debug)]
pub struct SpoolDir {
    path: PathBuf,
    /// Holds the exclusive flock; released when the folder is dropped.
    _lock: File,
    /// Spool ids in use in this process (open files, uploads being recovered): recovery skips
    /// them, so it is safe to run again while the mount is live.
    in_use: Mutex<HashSet<String>>,
    /// Something changed since the last group commit ([`GroupCommit::commit`]).
    unsynced: Arc<std::sync::atomic::AtomicBool>,
}

/// What the group commit of a spool folder needs, without holding the folder (and its lock).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    path: PathBuf,
    unsynced: Arc<std::sync::atomic::AtomicBool>,
}

impl GroupCommit {
    /// Something in the folder changed: the next commit makes it durable.
    pub fn note(&self) {
        self.unsynced
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// When anything changed since the last commit, flush the filesystem holding the spool
    /// folder (`syncfs(2)`: every spool and record on it, and the folder entries, in one call).
    /// Blocking; run it off the async workers.
    pub fn commit(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let result = (|| {
            use std::os::fd::AsRawFd;
            let dir = File::open(&self.path)?;
            // SAFETY: a valid open descriptor, borrowed for the call.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })();
        if result.is_err() {
            self.unsynced.store(true, Ordering::Release);
        }
        result
    }
}

/// Marks a spool id in use until dropped.
#[derive(Debug)]
pub(crate) struct SpoolClaim {
    dir: Arc<SpoolDir>,
    id: String,
}

impl Drop for SpoolClaim {
    fn drop(&mut self) {
        lock(&self.dir.in_use).remove(&self.id);
    }
}

impl SpoolDir {
    /// Create (if needed) and lock `path`, then remove crash leftovers that carry no data to
    /// upload. Fails with [`WriteError::CacheBusy`] when another process holds the lock.
    pub fn open(path: &Path) -> WriteResult<Arc<SpoolDir>> {
        ensure_private_dir(path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WriteError::CacheBusy(path.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        // Who holds it, for the message a second mount gives ([`lock_holder`]). Best effort:
        // the lock, not this text, is what keeps a second mount out.
        let pid = format!("{}\n", std::process::id());
        let _ = lock
            .set_len(0)
            .and_then(|()| lock.write_all_at(pid.as_bytes(), 0));
        let dir = SpoolDir {
            path: path.to_path_buf(),
            _lock: lock,
            in_use: Mutex::new(HashSet::new()),
            unsynced: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        dir.clean_leftovers()?;
        Ok(Arc::new(dir))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A record or spool changed: the next group commit makes it durable.
    pub fn note_unsynced(&self) {
        self.unsynced
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The folder's group commit (holds no reference to the folder itself).
    pub fn group_commit(&self) -> GroupCommit {
        GroupCommit {
            path: self.path.clone(),
            unsynced: Arc::clone(&self.unsynced),
        }
    }

    /// Claim `id` for this process; `None` when it is claimed already.
    pub(crate) fn claim(self: &Arc<Self>, id: &str) -> Option<SpoolClaim> {
        lock(&self.in_use)
            .insert(id.to_string())
            .then(|| SpoolClaim {
                dir: Arc::clone(self),
                id: id.to_string(),
            })
    }

    pub(crate) fn spool_path(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}.{SPOOL_EXT}"))
    }

    pub(crate) fn journal_path(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}.{JOURNAL_EXT}"))
    }

    /// Ids of every spool that has a journal record, sorted (stable recovery order).
    pub(crate) fn journaled_ids(&self) -> WriteResult<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(&format!(".{JOURNAL_EXT}")) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Remove spools without a record, records without a spool, and temp files. Only called
    /// while holding the lock and before any spool of this run exists.
    fn clean_leftovers(&self) -> WriteResult<()> {
        let mut spools = Vec::new();
        let mut journals = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(&format!(".{TEMP_EXT}")) {
                tracing::debug!(file = %name, "removing a half-written journal temp file");
                remove_if_exists(&entry.path())?;
            } else if let Some(id) = name.strip_suffix(&format!(".{SPOOL_EXT}")) {
                spools.push(id.to_string());
            } else if let Some(id) = name.strip_suffix(&format!(".{JOURNAL_EXT}")) {
                journals.push(id.to_string());
            }
        }
        for id in &spools {
            if !journals.contains(id) {
                tracing::debug!(spool = %id, "removing a clean spool left by an earlier run");
                remove_if_exists(&self.spool_path(id))?;
            }
        }
        for id in &journals {
            if !spools.contains(id) {
                tracing::warn!(
                    spool = %id,
                    "journal record without its spool file: the unsaved bytes are lost; removing the record"
                );
                remove_if_exists(&self.journal_path(id))?;
            }
        }
        Ok(())
    }
}

/// Create `path` (mode `0700`, parents too) if it is missing, then check that it is a safe
/// place for the user's unsent bytes: a real folder (`lstat`: a symlink is refused, whatever it
/// points at), owned by this process's effective user, and writable by nobody else. Another
/// local user who could write there could plant journal records (uploads made with our
/// credentials) or symlinks that make us overwrite their targets.
/// The process id written by the process that holds the spool folder at `path` locked, when
/// its lock file says (for "in use by …" messages; may name a process that is gone).
pub fn lock_holder(path: &Path) -> Option<u32> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path.join(LOCK_FILE))
        .ok()?;
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

pub fn ensure_private_dir(path: &Path) -> WriteResult<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let unsafe_dir = |reason: String| WriteError::UnsafeCacheDir {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)?;
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(
            "it is a symbolic link; give the real folder with --cache-dir".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a folder".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to this user (uid {euid})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "it is writable by group or others (mode {mode:04o}); chmod go-w it"
        )));
    }
    Ok(())
}

/// Remove a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[derive(Debug)]
struct SpoolState {
    /// Logical length (the local file is kept at this length too).
    len: u64,
    /// `[0, remote_limit)` must come from the remote source; only ever shrinks.
    remote_limit: u64,
    /// `[0, filled_to)` has been copied from the remote.
    filled_to: u64,
    /// Bumped by every mutation.
    generation: u64,
}

impl SpoolState {
    fn filled(&self) -> bool {
        self.filled_to >= self.remote_limit
    }
}

/// One file's bytes on local disk.
pub struct Spool {
    id: String,
    /// Keeps recovery away from this spool while it exists.
    _claim: SpoolClaim,
    path: PathBuf,
    file: Arc<File>,
    state: Arc<Mutex<SpoolState>>,
    source: Option<Arc<dyn RemoteBytes>>,
    /// Serializes fills; the only lock here held across an `.await`.
    fill_gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}

impl Spool {
    /// A new empty spool (a new file, or an existing one opened with `O_TRUNC`).
    pub fn create(dir: &Arc<SpoolDir>) -> WriteResult<Spool> {
        Self::create_with(dir, 0, None)
    }

    /// A spool standing for a remote file of `remote_len` bytes, filled from `source` only when
    /// a mutation first needs the old bytes.
    pub fn create_lazy(
        dir: &Arc<SpoolDir>,
        remote_len: u64,
        source: Arc<dyn RemoteBytes>,
    ) -> WriteResult<Spool> {
        Self::create_with(dir, remote_len, Some(source))
    }

    fn create_with(
        dir: &Arc<SpoolDir>,
        remote_len: u64,
        source: Option<Arc<dyn RemoteBytes>>,
    ) -> WriteResult<Spool> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let claim = dir
            .claim(&id)
            .ok_or_else(|| std::io::Error::other("spool id collision"))?;
        let path = dir.spool_path(&id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        // Sparse: reserves nothing on disk, and keeps pread within the file for the parts the
        // fill has not reached (those are never served from here before they are filled).
        file.set_len(remote_len)?;
        let remote_limit = if source.is_some() { remote_len } else { 0 };
        Ok(Spool {
            id,
            _claim: claim,
            path,
            file: Arc::new(file),
            state: Arc::new(Mutex::new(SpoolState {
                len: remote_len,
                remote_limit,
                filled_to: 0,
                generation: 0,
            })),
            source,
            fill_gate: tokio::sync::Mutex::new(()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, SpoolState> {
        lock(&self.state)
    }

    /// Current logical length.
    pub fn len(&self) -> u64 {
        self.state().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bumped by every write and `set_len`.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Whether every byte is on local disk (no remote bytes still to copy).
    pub fn is_filled(&self) -> bool {
        self.state().filled()
    }

    /// Copy the remote bytes still missing, in [`FILL_BLOCK`] pieces, [`FILL_AHEAD`] of them
    /// fetched at once and written in order. Idempotent; a failed fill keeps what was copied
    /// (in order, so `[0, filled_to)` stays one run) and resumes there next time.
    pub async fn ensure_filled(&self) -> WriteResult<()> {
        if self.state().filled() {
            return Ok(());
        }
        let Some(source) = &self.source else {
            return Ok(());
        };
        let _gate = self.fill_gate.lock().await;
        let (start, limit) = {
            let st = self.state();
            if st.filled() {
                return Ok(());
            }
            (st.filled_to, st.remote_limit)
        };
        // The first piece alone: it also fetches the source's link, which the others reuse.
        let pieces: Vec<(u64, u64)> = (start..limit)
            .step_by(FILL_BLOCK as usize)
            .map(|from| (from, (from + FILL_BLOCK).min(limit)))
            .collect();
        let Some((&first, rest)) = pieces.split_first() else {
            return Ok(());
        };
        self.fill_piece(first, source.fetch(first.0..first.1).await)
            .await?;
        let mut fetches = futures::stream::iter(rest.iter().copied())
            .map(|(from, to)| async move { ((from, to), source.fetch(from..to).await) })
            .buffered(FILL_AHEAD);
        while let Some((piece, fetched)) = fetches.next().await {
            if self.state().filled() {
                // A truncate lowered the limit below what is still in flight.
                return Ok(());
            }
            self.fill_piece(piece, fetched).await?;
        }
        Ok(())
    }

    /// Write fetched piece `from..to` (the next one after `filled_to`), clipped to the current
    /// `remote_limit`.
    async fn fill_piece(
        &self,
        (from, to): (u64, u64),
        fetched: ApiResult<Bytes>,
    ) -> WriteResult<()> {
        let bytes = fetched?;
        if bytes.len() as u64 != to - from {
            return Err(WriteError::Protocol(format!(
                "remote source returned {} bytes for range {from}..{to}",
                bytes.len()
            )));
        }
        let file = Arc::clone(&self.file);
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut st = lock(&state);
            // A truncate may have lowered the limit while this piece was in flight.
            let end = to.min(st.remote_limit);
            if end > from {
                // `end - from <= bytes.len()`, checked above.
                file.write_all_at(&bytes[..(end - from) as usize], from)?;
            }
            // `[0, min(to, limit))` is now local; when the limit fell below `from`, all that
            // is still needed was already there.
            st.filled_to = st.filled_to.max(to.min(st.remote_limit.max(from)));
            Ok(())
        })
        .await
        .map_err(join_error)??;
        Ok(())
    }

    /// Write `data` at `offset`, growing the file (sparsely) if needed. Fills first when the
    /// spool is based on a remote file. Returns the new generation.
    pub async fn write(&self, offset: u64, data: impl Into<Vec<u8>>) -> WriteResult<u64> {
        let data = data.into();
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "write past the largest offset",
            )
        })?;
        self.ensure_filled().await?;
        // On the blocking pool: a page-cache write can stall for a long time under dirty-page
        // throttling or a slow cache disk, and must not hold up an async worker (listings,
        // reads and uploads run there).
        let file = Arc::clone(&self.file);
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut st = lock(&state);
            file.write_all_at(&data, offset)?;
            st.len = st.len.max(end);
            st.generation += 1;
            Ok(st.generation)
        })
        .await
        .map_err(join_error)?
        .map_err(WriteError::from)
    }

    /// Read up to `size` bytes at `offset` (short at the end of the file).
    pub async fn read(&self, offset: u64, size: u32) -> WriteResult<Bytes> {
        let (len, filled_to, remote_limit) = {
            let st = self.state();
            (st.len, st.filled_to, st.remote_limit)
        };
        if offset >= len || size == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(size)).min(len);
        let local_end = if filled_to >= remote_limit {
            end
        } else {
            end.min(filled_to)
        };
        let mut out = Vec::with_capacity((end - offset) as usize);
        if local_end > offset {
            // On the blocking pool, like writes: a cold page means a disk read.
            let file = Arc::clone(&self.file);
            out = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                out.resize((local_end - offset) as usize, 0);
                file.read_exact_at(&mut out, offset)?;
                Ok(out)
            })
            .await
            .map_err(join_error)??;
        }
        if local_end < end {
            // Not filled yet, so nothing was written: the rest is the remote's bytes.
            let from = offset.max(local_end);
            let remote_end = end.min(remote_limit);
            if remote_end > from {
                let source = self.source.as_ref().ok_or_else(|| {
                    WriteError::Protocol("unfilled spool without a remote source".into())
                })?;
                let bytes = source.fetch(from..remote_end).await?;
                if bytes.len() as u64 != remote_end - from {
                    return Err(WriteError::Protocol(format!(
                        "remote source returned {} bytes for range {from}..{remote_end}",
                        bytes.len()
                    )));
                }
                out.extend_from_slice(&bytes);
            }
            // Past the remote's end (cannot happen before a mutation, kept for safety): zeros.
            out.resize((end - offset) as usize, 0);
        }
        Ok(Bytes::from(out))
    }

    /// Truncate or extend to `new_len`. Fills only `[0, new_len)` of the remote bytes first.
    /// Returns the new generation.
    pub async fn set_len(&self, new_len: u64) -> WriteResult<u64> {
        {
            let mut st = self.state();
            st.remote_limit = st.remote_limit.min(new_len);
        }
        self.ensure_filled().await?;
        let file = Arc::clone(&self.file);
        let state = Arc::clone(&self.state);
        let generation = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut st = lock(&state);
            file.set_len(new_len)?;
            st.len = new_len;
            st.generation += 1;
            Ok(st.generation)
        })
        .await
        .map_err(join_error)??;
        Ok(generation)
    }

    /// fsync(2) the spool file (local durability of what was written so far).
    pub async fn sync(&self) -> WriteResult<()> {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(join_error)??;
        Ok(())
    }

    /// What the uploader reads from: the file and its length now.
    pub fn part_source(&self) -> PartSource {
        PartSource::new(Arc::clone(&self.file), self.len())
    }

    /// Delete the spool file (the open descriptor stays valid until dropped).
    pub fn remove(&self) -> WriteResult<()> {
        remove_if_exists(&self.path)?;
        Ok(())
    }
}

/// Lock a std mutex, recovering from poisoning (the state stays consistent: every critical
/// section updates it only after its I/O succeeded).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
