//! The filesystem core: async, no fuser types in its API (skeleton; being written).
//!
//! `crate::fuse` decodes kernel requests and calls the methods of [`VagonFs`]; each returns a
//! plain `Result<_, FsError>` that the adapter turns into a reply (errno via
//! [`errno::to_errno`]). The core talks to the storage only through `Arc<dyn FilesApi>`.
//!
//! The method set below is the contract between the adapter and the core; keep it stable.

pub mod errno;
pub mod write;

use std::ffi::OsStr;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::api::{ApiError, FilesApi, Space};

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
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("file too large")]
    TooLarge,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

pub type FsResult<T> = Result<T, FsError>;

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
    pub dir_cache_ttl: Duration,
    /// Memory block cache, bytes.
    pub cache_size: u64,
}

/// The filesystem core.
pub struct VagonFs {
    #[allow(dead_code)]
    api: Arc<dyn FilesApi>,
    #[allow(dead_code)]
    root: RootSpec,
    #[allow(dead_code)]
    config: FsConfig,
}

impl VagonFs {
    pub fn new(api: Arc<dyn FilesApi>, root: RootSpec, config: FsConfig) -> Arc<Self> {
        Arc::new(VagonFs { api, root, config })
    }

    pub async fn lookup(&self, _parent: u64, _name: &OsStr) -> FsResult<AttrReply> {
        Err(FsError::Unsupported("lookup"))
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, _ino: u64, _nlookup: u64) {}

    pub async fn getattr(&self, _ino: u64) -> FsResult<AttrReply> {
        Err(FsError::Unsupported("getattr"))
    }

    pub async fn setattr(&self, _ino: u64, _set: SetAttr) -> FsResult<AttrReply> {
        Err(FsError::ReadOnly)
    }

    pub async fn opendir(&self, _ino: u64) -> FsResult<u64> {
        Err(FsError::Unsupported("opendir"))
    }

    /// Entries from cookie `offset` on (0 = start), including `.` and `..`. Every returned entry
    /// counts as a lookup of its inode (readdirplus), except `.` and `..`.
    pub async fn readdir(&self, _ino: u64, _fh: u64, _offset: i64) -> FsResult<Vec<DirEntry>> {
        Err(FsError::Unsupported("readdir"))
    }

    pub fn releasedir(&self, _ino: u64, _fh: u64) {}

    /// `flags` are the open(2) flags.
    pub async fn open(&self, _ino: u64, _flags: i32) -> FsResult<OpenReply> {
        Err(FsError::Unsupported("open"))
    }

    pub async fn read(&self, _ino: u64, _fh: u64, _offset: u64, _size: u32) -> FsResult<Bytes> {
        Err(FsError::Unsupported("read"))
    }

    pub async fn write(&self, _ino: u64, _fh: u64, _offset: u64, _data: &[u8]) -> FsResult<u32> {
        Err(FsError::ReadOnly)
    }

    /// close(2) of one descriptor: uploads a changed file; the result is what close returns.
    pub async fn flush(&self, _ino: u64, _fh: u64) -> FsResult<()> {
        Ok(())
    }

    pub async fn fsync(&self, _ino: u64, _fh: u64) -> FsResult<()> {
        Ok(())
    }

    pub async fn release(&self, _ino: u64, _fh: u64) -> FsResult<()> {
        Ok(())
    }

    pub async fn create(
        &self,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _flags: i32,
    ) -> FsResult<(AttrReply, OpenReply)> {
        Err(FsError::ReadOnly)
    }

    pub async fn mkdir(&self, _parent: u64, _name: &OsStr, _mode: u32) -> FsResult<AttrReply> {
        Err(FsError::ReadOnly)
    }

    pub async fn unlink(&self, _parent: u64, _name: &OsStr) -> FsResult<()> {
        Err(FsError::ReadOnly)
    }

    pub async fn rmdir(&self, _parent: u64, _name: &OsStr) -> FsResult<()> {
        Err(FsError::ReadOnly)
    }

    /// `flags` are renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
    pub async fn rename(
        &self,
        _parent: u64,
        _name: &OsStr,
        _newparent: u64,
        _newname: &OsStr,
        _flags: u32,
    ) -> FsResult<()> {
        Err(FsError::ReadOnly)
    }

    pub async fn statfs(&self, _ino: u64) -> FsResult<StatFs> {
        Err(FsError::Unsupported("statfs"))
    }
}
