//! The write path's engine: local spools, the crash journal, and the multipart uploader.
//!
//! The Vagon Files API needs a file's total size before its first byte is sent (`POST /files`
//! with `size` and `chunk_size` answers one presigned URL per part), so written files are
//! spooled to local disk and uploaded whole on flush/fsync. This module owns everything below
//! the core's file handles; it knows no inodes and no fuser types.
//!
//! # Pieces
//! - [`SpoolDir`] (`spool.rs`): the per-mount folder under `--cache-dir` holding spools and
//!   journal records, locked (flock) so two mounts never share one;
//! - [`Spool`] (`spool.rs`): one local file holding a file's current bytes (positional I/O,
//!   sparse growth, lazy fill from the remote bytes for a partial overwrite);
//! - [`JournalRecord`] (`journal.rs`): the JSON sidecar that makes a dirty spool survive a crash,
//!   and [`recover`], which finds them at mount start and decides upload vs conflict copy;
//! - [`Uploader`] (`uploader.rs`): create → parallel part PUTs (bounded) → complete;
//! - [`UploadRegistry`] / [`UploadProgress`] (`progress.rs`): what `vagonfs status` shows;
//! - [`SpooledFile`] (`file.rs`): spool + journal + upload sequencing for one open file: **the
//!   object the core keeps per written inode**.
//!
//! # Contract with the core (how `VagonFs` uses this)
//! At mount start:
//! 1. `let dir = SpoolDir::open(&mount_cache_dir(&cache_base, &mount_key(..)))?` (fails with
//!    [`WriteError::CacheBusy`] when another mount holds it; orphan spools of a crash without a
//!    journal record are removed here);
//! 2. `for p in recover(&dir, api).await? { spawn(p.run(&uploader)) }` — each
//!    [`PendingUpload`] already knows whether it goes back under its name or as a conflict copy.
//!    `recover` skips spools in use in this process (open files, pending uploads), so it may be
//!    called again later (service back, or to pick up the kept spool of a closed file whose
//!    upload failed).
//!
//! One [`Uploader`] per mount (clones share its part budget and [`UploadRegistry`]);
//! `vagonfs status` reads [`UploadRegistry::active`] / [`UploadRegistry::recent`].
//!
//! Per file (one [`SpooledFile`] per inode, shared by all its open handles):
//! - `create` (new name) → [`SpooledFile::create_new`]: empty and already dirty, so a
//!   create+close with no write still makes the (empty) remote file;
//! - `open(O_TRUNC)` of an existing file → [`SpooledFile::create_truncated`] (dirty, empty);
//! - `open` for writing without `O_TRUNC` → [`SpooledFile::open_existing`] with a
//!   [`RemoteBytes`] source (e.g. [`ApiRemote`]): nothing is fetched until the first mutation,
//!   which first copies the remote bytes in (only `[0, n)` for a `truncate(n)`);
//! - `write` → [`SpooledFile::write`]; `setattr(size)` → [`SpooledFile::set_len`];
//! - `read`/`getattr` of a file with a spool → [`SpooledFile::read`] / [`SpooledFile::len`],
//!   [`SpooledFile::modified`] (`setattr(mtime)` → [`SpooledFile::set_modified`])
//!   (read-after-write comes from the spool; reads of a not-yet-filled spool pass through to the
//!   remote source without filling it);
//! - `flush` (close) and `fsync` → [`SpooledFile::upload`]: if dirty, journal `uploading` →
//!   [`Uploader::upload`] (overwrite when the file existed) → record removed, spool clean; its
//!   `Err` is what close(2)/fsync(2) return ([`FsError`] via `From<WriteError>`, errno in
//!   `fs/errno.rs`: 507 → ENOSPC, 409 → EEXIST, a failed part → EIO). A failed upload keeps
//!   the spool and its record: the next flush retries, and so does [`recover`] at the next
//!   mount;
//! - `rename` of a spooled file → [`SpooledFile::retarget`] then `upload` (under the new name)
//!   then `FilesApi::delete` of the old id ([`SpooledFile::base`]). The API has no move, so
//!   renaming a file *without* a spool is [`SpooledFile::open_existing`] at the new target with
//!   the old file as source, [`SpooledFile::mark_dirty`], `upload`, delete the old id;
//! - `unlink` of a file with a spool → [`SpooledFile::discard`]; `release` of the last handle →
//!   drop the `Arc<SpooledFile>`: a clean spool's file is removed, a dirty one is kept for
//!   recovery.
//!
//! After a successful upload the journal record is removed and the spool stays as the open
//! file's content (clean) until the last handle goes; it is not kept as a cache after that,
//! so the cache folder holds only what is open or not yet uploaded.
//!
//! # Subtle cases handled here
//! - Writes racing an upload: each mutation bumps a generation; an upload that finishes while
//!   the generation moved leaves the file dirty (and rewrites the record `dirty`), so the next
//!   flush sends the newer bytes.
//! - A crash between `complete` and the journal update: the record carries the id `POST /files`
//!   gave the attempt, so [`recover`] recognises the listed file as our own upload and does not
//!   make a conflict copy of it.
//! - Cancellation: dropping any future here leaves the record saying not done; nothing is
//!   marked clean before `complete` succeeded.

mod content_type;
mod file;
mod journal;
mod name_hold;
mod progress;
mod remote;
mod spool;
mod uploader;

use std::path::{Path, PathBuf};

use crate::api::ApiError;
use crate::fs::{FsError, RootSpec};

pub use content_type::guess_content_type;
pub use file::{FileTarget, SpooledFile};
pub use journal::{
    JournalRecord, JournalSpace, JournalState, MovedFrom, PendingUpload, Recovered, RecoveryAction,
    RemoteBase, conflict_name, decide, recover,
};
pub(crate) use name_hold::NameHold;
pub use progress::{
    ProgressSnapshot, UploadObserver, UploadProgress, UploadRegistry, UploadState, UploadTicket,
};
pub use remote::{ApiRemote, RemoteBytes};
pub(crate) use spool::TEMP_EXT;
pub use spool::{
    FILL_AHEAD, FILL_BLOCK, GroupCommit, Spool, SpoolDir, ensure_private_dir, lock_holder,
};
pub use uploader::{
    DEFAULT_CHUNK_SIZE_MB, DEFAULT_CONCURRENCY, DEFAULT_PART_MEMORY, LINK_RESTARTS, MIB,
    PartSource, UploadHooks, UploadTarget, Uploaded, Uploader,
};

/// Errors of the write path (the "UploadError" of the design notes: upload, spool and journal
/// failures alike). Mapped to [`FsError`] by `From`, and from there to errno in `fs/errno.rs`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The server (or a presigned URL) said no; its kind decides the errno.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Local I/O on the spool or the journal.
    #[error("local spool I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server's answer does not fit the upload (e.g. the wrong number of part URLs).
    #[error("upload protocol: {0}")]
    Protocol(String),
    /// A journal record could not be read back.
    #[error("journal record {path}: {detail}")]
    Journal { path: PathBuf, detail: String },
    /// Another process holds this spool folder (a second mount of the same target).
    #[error("spool folder {0} is in use by another vagonfs mount")]
    CacheBusy(PathBuf),
    /// The cache folder is not a safe place for unsent bytes (see [`ensure_private_dir`]).
    #[error("unsafe cache folder {}: {reason}", path.display())]
    UnsafeCacheDir { path: PathBuf, reason: String },
    /// No cache folder can be chosen without `--cache-dir`.
    #[error("{0}")]
    NoCacheDir(&'static str),
    /// The target cannot be written (e.g. session recordings).
    #[error("not writable: {0}")]
    NotWritable(String),
    /// Just before `complete`, the name held another client's file (`theirs`), not the version
    /// this upload was to replace: the upload is abandoned (never completed), and the bytes go
    /// to a conflict copy instead (see `SpooledFile::upload`).
    #[error("changed on the server by another client (file {theirs})")]
    ChangedMeanwhile { theirs: u64 },
}

pub type WriteResult<T> = Result<T, WriteError>;

impl From<WriteError> for FsError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Api(e) => FsError::Api(e),
            WriteError::Io(e) => FsError::Io(e),
            WriteError::Protocol(s) => FsError::Inconsistent(s),
            WriteError::Journal { path, detail } => {
                FsError::Inconsistent(format!("journal {}: {detail}", path.display()))
            }
            WriteError::CacheBusy(_) => {
                FsError::NotPermitted("spool folder in use by another mount")
            }
            WriteError::NotWritable(_) => FsError::ReadOnly,
            // Handled by the upload itself (a conflict copy); never a user's answer.
            e @ WriteError::ChangedMeanwhile { .. } => FsError::Inconsistent(e.to_string()),
            e @ (WriteError::UnsafeCacheDir { .. } | WriteError::NoCacheDir(_)) => FsError::Io(
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()),
            ),
        }
    }
}

/// The application folder name under the cache base.
const APP_DIR: &str = "vagonfs";

/// `--cache-dir`'s default, in order: `$XDG_CACHE_HOME/vagonfs` (absolute only),
/// `~/.cache/vagonfs`, systemd's `$CACHE_DIRECTORY` (a unit with `CacheDirectory=vagonfs`),
/// and for root without a home `/var/cache/vagonfs`. Never a folder under `/tmp`, where another
/// local user could have created it first: anyone else without a home gets an error asking for
/// `--cache-dir`.
pub fn default_cache_base() -> WriteResult<PathBuf> {
    cache_base_from(
        |k| std::env::var_os(k).filter(|v| !v.is_empty()),
        nix::unistd::geteuid().is_root(),
    )
}

fn cache_base_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    is_root: bool,
) -> WriteResult<PathBuf> {
    // The XDG spec says relative values are invalid and must be ignored.
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(p) = env("XDG_CACHE_HOME").and_then(absolute) {
        return Ok(p.join(APP_DIR));
    }
    if let Some(h) = env("HOME").and_then(absolute) {
        return Ok(h.join(".cache").join(APP_DIR));
    }
    // systemd passes a colon-separated list; the unit's own folder comes first.
    if let Some(list) = env("CACHE_DIRECTORY") {
        let first = list.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(p) = first.filter(|p| p.is_absolute()) {
            return Ok(p);
        }
    }
    if is_root {
        return Ok(PathBuf::from("/var/cache").join(APP_DIR));
    }
    Err(WriteError::NoCacheDir(
        "no HOME, XDG_CACHE_HOME or CACHE_DIRECTORY to put the write cache in: give --cache-dir DIR",
    ))
}

/// The most `--cache-max-size` defaults to.
pub const DEFAULT_SPOOL_MAX: u64 = 10 * 1024 * 1024 * 1024;

/// `--cache-max-size`'s default for spools under `cache_base`: the smaller of
/// [`DEFAULT_SPOOL_MAX`] and half the space free now on its disk (measured at the nearest
/// folder that exists; the whole default when the disk cannot be measured).
pub fn default_spool_max(cache_base: &std::path::Path) -> u64 {
    let free = cache_base
        .ancestors()
        .find(|p| p.exists())
        .and_then(|p| nix::sys::statvfs::statvfs(p).ok())
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()));
    spool_max_for(free)
}

fn spool_max_for(free: Option<u64>) -> u64 {
    free.map_or(DEFAULT_SPOOL_MAX, |f| (f / 2).min(DEFAULT_SPOOL_MAX))
}

/// Hex digits of the endpoint hash kept in a mount key (enough to tell endpoints apart).
const KEY_HASH_HEX: usize = 12;

/// A stable folder name for one mount target: what the root shows, plus a short hash of
/// `endpoint_identity` so the same machine id on two API endpoints never shares spools.
/// `endpoint_identity` must be stable across runs (the API base URL for the real service; the
/// emulator's data folder for an embedded emulator, whose port changes) or recovery will not
/// find the previous run's spools.
pub fn mount_key(root: &RootSpec, endpoint_identity: &str) -> String {
    use sha2::Digest;
    let target = match root {
        RootSpec::All => "all".to_string(),
        RootSpec::Space(crate::api::Space::Shared) => "shared".to_string(),
        RootSpec::Space(crate::api::Space::Machine(id)) => format!("machine-{id}"),
        RootSpec::Space(crate::api::Space::Recordings { machine: None }) => "recordings".into(),
        RootSpec::Space(crate::api::Space::Recordings { machine: Some(id) }) => {
            format!("recordings-{id}")
        }
    };
    let digest = sha2::Sha256::digest(endpoint_identity.as_bytes());
    let hash = hex::encode(digest);
    format!("{target}-{}", &hash[..KEY_HASH_HEX])
}

/// `<cache_base>/<mount_key>`: the folder [`SpoolDir::open`] takes.
pub fn mount_cache_dir(cache_base: &Path, mount_key: &str) -> PathBuf {
    cache_base.join(mount_key)
}

/// A blocking task that panicked or was cancelled, as an I/O error.
pub(crate) fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(format!("blocking spool task failed: {e}"))
}

#[cfg(test)]
mod cache_base_tests {
    use super::*;
    use std::ffi::OsString;

    fn base(vars: &[(&str, &str)], is_root: bool) -> WriteResult<PathBuf> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        cache_base_from(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            is_root,
        )
    }

    #[test]
    fn the_spool_bound_defaults_to_half_the_free_space_up_to_10_gib() {
        assert_eq!(spool_max_for(Some(4 << 30)), 2 << 30);
        assert_eq!(spool_max_for(Some(100 << 30)), DEFAULT_SPOOL_MAX);
        assert_eq!(spool_max_for(None), DEFAULT_SPOOL_MAX);
        // A folder not made yet is measured at its nearest existing parent.
        let dir = tempfile::tempdir().unwrap();
        let max = default_spool_max(&dir.path().join("not/yet"));
        assert!(max > 0 && max <= DEFAULT_SPOOL_MAX, "{max}");
    }

    #[test]
    fn never_falls_back_to_tmp() {
        assert_eq!(
            base(&[("HOME", "/home/u")], false).ok(),
            Some(PathBuf::from("/home/u/.cache/vagonfs"))
        );
        assert_eq!(
            base(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")], false).ok(),
            Some(PathBuf::from("/x/vagonfs"))
        );
        // A relative XDG value is ignored, as the spec says.
        assert_eq!(
            base(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")], false).ok(),
            Some(PathBuf::from("/home/u/.cache/vagonfs"))
        );
        // A systemd unit's CacheDirectory=.
        assert_eq!(
            base(&[("CACHE_DIRECTORY", "/var/cache/vagonfs:/other")], false).ok(),
            Some(PathBuf::from("/var/cache/vagonfs"))
        );
        // Root without a home: the system cache, never /tmp.
        assert_eq!(
            base(&[], true).ok(),
            Some(PathBuf::from("/var/cache/vagonfs"))
        );
        // Anyone else without a home: a clear error naming the option.
        let err = base(&[], false).expect_err("no place");
        assert!(err.to_string().contains("--cache-dir"), "{err}");
    }

    #[test]
    fn cache_folders_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        // Created 0700 when missing, accepted.
        let fresh = tmp.path().join("a").join("b");
        ensure_private_dir(&fresh).expect("fresh folder");
        let mode = std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        // Writable by others: refused, also by SpoolDir::open.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = ensure_private_dir(&open).expect_err("world-writable");
        assert!(matches!(err, WriteError::UnsafeCacheDir { .. }), "{err}");
        assert!(SpoolDir::open(&open).is_err());
        // A planted symlink to a private folder: refused, not followed.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).expect("symlink");
        let err = ensure_private_dir(&link).expect_err("symlink");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Owned by another user: refused.
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
            let err = ensure_private_dir(&theirs).expect_err("other owner");
            assert!(err.to_string().contains("uid 65534"), "{err}");
        }
    }

    #[test]
    fn a_planted_symlink_as_journal_temp_is_not_followed() {
        // Journal temp files get a fresh name and O_EXCL|O_NOFOLLOW: a record write never
        // goes through whatever sits in the folder.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = SpoolDir::open(&tmp.path().join("spools")).expect("open");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep me").expect("victim");
        std::os::unix::fs::symlink(&victim, dir.path().join("x.json.tmp")).expect("plant");
        let rec = JournalRecord {
            version: 1,
            spool_id: "x".into(),
            space: JournalSpace::Shared,
            parent_id: None,
            name: "x".into(),
            display_path: "x".into(),
            base: None,
            state: JournalState::Dirty,
            generation: 1,
            size: 0,
            pending_upload_id: None,
            updated_at: chrono::Utc::now(),
            moved_from: None,
        };
        rec.write_atomic(&dir).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
    }
}
