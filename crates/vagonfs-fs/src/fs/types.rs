//! The core's public vocabulary: errors ([`FsError`], mapped to errno in one match in
//! `errno.rs`), attributes, replies, the mount's configuration ([`FsConfig`], [`RootSpec`]).
//! Types only: no behaviour beyond conversions.
//!
//! Subtle case: [`FsError`] is `Clone` by hand (an `io::Error` is not): the clone keeps the
//! OS error code, which is what the errno map reads.

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use crate::api::{ApiError, Space};

/// Most entries one `readdir` call answers (the kernel asks again from the last offset). About
/// what a 32-64 KiB readdirplus buffer holds; entries beyond what the buffer takes are given back
/// by [`VagonFs::send_listing`].
pub const READDIR_BATCH: usize = 256;

/// The root inode number (FUSE's convention).
pub const ROOT_INO: u64 = 1;

/// Errors of the core. Mapped to errno in one exhaustive match in [`errno`].
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("no such file or directory")]
    NotFound,
    #[error("unknown inode {0}")]
    StaleInode(u64),
    #[error("bad file handle {0}")]
    BadHandle(u64),
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("already exists")]
    Exists,
    /// Refused before it was tried: the storage's quota, or the local cache bound
    /// (`--cache-max-size`), cannot hold the change.
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("name not allowed: {0}")]
    InvalidName(String),
    #[error("name too long")]
    NameTooLong,
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("cross-device move refused: {0}")]
    CrossDevice(String),
    #[error("server data does not match: {0}")]
    Inconsistent(String),
    /// The version of a file being opened or read is no longer on the server (deleted, or
    /// replaced by another object under the name).
    #[error("file changed or removed on the server: {0}")]
    Gone(String),
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("file too large")]
    TooLarge,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

pub type FsResult<T> = Result<T, FsError>;

/// Cloning keeps the variant; a local I/O error is rebuilt from its kind and message (fetches
/// shared between several waiters hand each of them the same error).
impl Clone for FsError {
    fn clone(&self) -> Self {
        match self {
            FsError::Api(e) => FsError::Api(e.clone()),
            FsError::NotFound => FsError::NotFound,
            FsError::StaleInode(i) => FsError::StaleInode(*i),
            FsError::BadHandle(h) => FsError::BadHandle(*h),
            FsError::NotADirectory => FsError::NotADirectory,
            FsError::IsADirectory => FsError::IsADirectory,
            FsError::NotEmpty => FsError::NotEmpty,
            FsError::Exists => FsError::Exists,
            FsError::NoSpace(w) => FsError::NoSpace(w.clone()),
            FsError::ReadOnly => FsError::ReadOnly,
            FsError::InvalidName(n) => FsError::InvalidName(n.clone()),
            FsError::NameTooLong => FsError::NameTooLong,
            FsError::Unsupported(w) => FsError::Unsupported(w),
            FsError::NotPermitted(w) => FsError::NotPermitted(w),
            FsError::CrossDevice(w) => FsError::CrossDevice(w.clone()),
            FsError::Inconsistent(w) => FsError::Inconsistent(w.clone()),
            FsError::Gone(w) => FsError::Gone(w.clone()),
            FsError::Io(e) => FsError::Io(match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }),
            FsError::TooLarge => FsError::TooLarge,
            FsError::InvalidArgument(w) => FsError::InvalidArgument(w.clone()),
        }
    }
}

/// Kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Directory,
}

/// Attributes of an inode, as the kernel needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub atime: SystemTime,
    /// Permission bits only (e.g. 0o644), after the umask.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Attributes plus how long the kernel may cache them.
#[derive(Debug, Clone, Copy)]
pub struct AttrReply {
    pub attr: Attr,
    pub ttl: Duration,
}

/// A readdir(plus) entry. `offset` is the cookie of the *next* entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub attr: Attr,
    pub offset: i64,
}

/// What `open` answers.
#[derive(Debug, Clone, Copy)]
pub struct OpenReply {
    pub fh: u64,
    /// Keep the kernel page cache from earlier opens (file unchanged since).
    pub keep_cache: bool,
    pub direct_io: bool,
}

/// `statfs` numbers.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// `setattr` request (only the fields the kernel set).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    /// The handle the change came through (ftruncate), if any.
    pub fh: Option<u64>,
}

/// What the mount's root shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// One storage tree at the root.
    Space(Space),
    /// `machines/<name>/`, `shared/`, `recordings/`.
    All,
}

/// Options of the core (the mount options that matter below the adapter).
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    pub umask: u16,
    pub read_only: bool,
    /// How long lookups and getattr trust a listing before revalidating it (in the background
    /// when there is one: nothing waits on a relist). Zero: no listing cache at all.
    pub dir_cache_ttl: Duration,
    /// How old a listing may be when its folder is opened before it is revalidated (in the
    /// background), so a file manager's refresh shows other machines' changes within seconds.
    pub dir_refresh: Duration,
    /// Longest wait of lookup, getattr, opendir, readdir (and statfs) on the API when no cached
    /// answer exists, and of the one request of rmdir and unlink; then EIO.
    pub op_timeout: Duration,
    /// Memory block cache, bytes.
    pub cache_size: u64,
    /// This mount's spool folder (`write::mount_cache_dir(base, &write::mount_key(..))`);
    /// opened (and locked) at the first write or at [`VagonFs::recover`].
    pub cache_dir: std::path::PathBuf,
    /// Part size asked of the server, MiB.
    pub chunk_size_mb: u64,
    /// Parts in flight per upload.
    pub upload_concurrency: usize,
    /// Entries (files and folders, counted recursively) past which a folder rename answers
    /// EXDEV, so `mv` falls back to copy and delete.
    pub rename_dir_limit: usize,
    /// Longest a read waits for the network before it answers ETIMEDOUT
    /// ([`super::read::DEFAULT_READ_TIMEOUT`]).
    pub read_timeout: Duration,
    /// The write-back engine's options (`--transfers`, `--sync-close`, `--upload-delay`).
    pub write_back: WriteBack,
}

/// Default of [`FsConfig::rename_dir_limit`].
pub const DEFAULT_RENAME_DIR_LIMIT: usize = 10_000;

/// Numbers of the block cache (for `vagonfs status` and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of cached blocks.
    pub cached_bytes: u64,
    /// Bytes reserved by block fetches in flight.
    pub inflight_bytes: u64,
    /// Highest `cached_bytes + inflight_bytes` seen.
    pub peak_bytes: u64,
    pub cached_blocks: usize,
    /// Block fetches running (reads and prefetches).
    pub fetches_running: usize,
}

/// Default of `--transfers`: files uploaded at once.
pub const DEFAULT_TRANSFERS: usize = 8;
/// Default of `--upload-delay`: how long a new file waits after its close.
pub const DEFAULT_UPLOAD_DELAY: Duration = Duration::from_secs(1);
/// Options of the write-back engine (mount options `--transfers`, `--sync-close`,
/// `--upload-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBack {
    /// Files uploaded at once (at least 1).
    pub transfers: usize,
    /// `close(2)` waits for the upload and returns its result (the pre-engine behaviour).
    pub sync_close: bool,
    /// How long a new file waits after its close before its upload starts.
    pub upload_delay: Duration,
    /// `--cache-max-size`: most bytes the spools may hold at once (`None`: no bound). A write
    /// that would pass it waits for uploads to drain (see `VagonFs::make_room`).
    pub spool_max: Option<u64>,
}

impl Default for WriteBack {
    fn default() -> Self {
        WriteBack {
            transfers: DEFAULT_TRANSFERS,
            sync_close: false,
            upload_delay: DEFAULT_UPLOAD_DELAY,
            spool_max: None,
        }
    }
}

impl WriteBack {
    /// `close` uploads and waits (tests of the upload path itself use this).
    pub fn sync_close() -> Self {
        WriteBack {
            sync_close: true,
            ..WriteBack::default()
        }
    }
}
