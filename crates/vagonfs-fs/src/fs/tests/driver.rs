//! The one driver of the core's scenario tests: configurations, the backends a scenario runs
//! against, and the calls a FUSE adapter would make (walk a path, list a folder, read a file,
//! create-write-close).
//!
//! [`Server`] is where a scenario's files land, chosen by [`Backend`]: the in-memory double
//! (wrapped in the fault injector) or a real emulator in this process over loopback HTTP. Its
//! questions ("what does the server hold under that name?") are answered by the double's state
//! or, for the emulator, by a listing, a link and a ranged GET, so one scenario body checks both.
//! `on_both!` instantiates a scenario once per backend.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::FaultyFilesApi;
use crate::api::http::{ClientOptions, HttpFilesApi};
use crate::api::mem::MemApi;
use crate::api::{FileEntry, FilesApi};
use crate::config::Credentials;
use crate::emulator::{EmulatorConfig, RunningEmulator};
use crate::fs::errno::to_errno;
use crate::fs::*;

pub(super) const MIB: usize = 1 << 20;
/// Bytes per write call, like a kernel write of 128 KiB.
pub(super) const WRITE_PIECE: usize = 128 << 10;

/// Start an emulator with `cfg` on the current runtime and a client for it.
pub(super) async fn start_with_client(cfg: EmulatorConfig) -> (RunningEmulator, Arc<HttpFilesApi>) {
    let running = crate::emulator::start(cfg.clone())
        .await
        .expect("emulator starts");
    let creds = Credentials {
        api_url: running.base_url(),
        api_key: cfg.api_key,
        api_secret: cfg.api_secret,
    };
    let api = Arc::new(HttpFilesApi::new(creds, ClientOptions::default()).expect("client"));
    (running, api)
}

/// The core's options for read tests: ids shown as `uid`/`gid`, no usable spool folder.
pub(super) fn read_config(uid: u32, gid: u32, cache_size: u64) -> FsConfig {
    FsConfig {
        uid,
        gid,
        umask: 0o022,
        read_only: false,
        dir_cache_ttl: Duration::from_secs(3600),
        dir_refresh: DEFAULT_DIR_REFRESH,
        op_timeout: DEFAULT_OP_TIMEOUT,
        cache_size,
        // These tests only read; a write would fail on the missing spool folder's parent.
        cache_dir: std::path::PathBuf::from("/nonexistent/vagonfs-read-tests"),
        chunk_size_mb: write::DEFAULT_CHUNK_SIZE_MB,
        upload_concurrency: write::DEFAULT_CONCURRENCY,
        rename_dir_limit: DEFAULT_RENAME_DIR_LIMIT,
        read_timeout: crate::fs::read::DEFAULT_READ_TIMEOUT,
        write_back: crate::fs::engine::WriteBack::sync_close(),
    }
}

/// The core's options for write tests: spools under `cache`, parts of `chunk_mb` MiB.
pub(super) fn config(cache: &Path, chunk_mb: u64) -> FsConfig {
    FsConfig {
        cache_dir: cache.join("spools"),
        chunk_size_mb: chunk_mb,
        upload_concurrency: 4,
        ..read_config(1000, 1000, 64 << 20)
    }
}

pub(super) fn errno<T>(r: FsResult<T>) -> Option<i32> {
    r.err().map(|e| to_errno(&e))
}

pub(super) async fn walk(fs: &VagonFs, path: &str) -> FsResult<AttrReply> {
    let mut at = fs.getattr(ROOT_INO).await?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = fs.lookup(at.attr.ino, OsStr::new(part)).await?;
    }
    Ok(at)
}

pub(super) async fn ino(fs: &VagonFs, path: &str) -> u64 {
    walk(fs, path).await.expect(path).attr.ino
}

/// Every entry of a folder, `.` and `..` included, through opendir/readdir/releasedir.
pub(super) async fn list(fs: &VagonFs, ino: u64) -> Vec<DirEntry> {
    let fh = fs.opendir(ino).await.expect("opendir");
    let mut all: Vec<DirEntry> = Vec::new();
    let mut offset = 0;
    loop {
        let batch = fs.readdir(ino, fh, offset).await.expect("readdir");
        let Some(last) = batch.last() else { break };
        assert!(batch.len() <= READDIR_BATCH);
        offset = last.offset;
        all.extend(batch);
    }
    fs.releasedir(ino, fh);
    all
}

pub(super) fn names(entries: &[DirEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect()
}

/// The names a folder shows, without `.` and `..`, sorted.
pub(super) async fn child_names(fs: &VagonFs, dir: u64) -> Vec<String> {
    let mut out: Vec<String> = names(&list(fs, dir).await)
        .into_iter()
        .filter(|n| n != "." && n != "..")
        .collect();
    out.sort();
    out
}

/// open, read to the end in `chunk`-byte reads, release.
pub(super) async fn read_all(fs: &VagonFs, ino: u64, chunk: u32) -> FsResult<Vec<u8>> {
    let open = fs.open(ino, libc::O_RDONLY).await?;
    let mut out = Vec::new();
    let result = loop {
        match fs.read(ino, open.fh, out.len() as u64, chunk).await {
            Ok(bytes) if bytes.is_empty() => break Ok(()),
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => break Err(e),
        }
    };
    fs.release(ino, open.fh).await?;
    result.map(|()| out)
}

/// Read an open handle to the end.
pub(super) async fn read_handle(fs: &VagonFs, ino: u64, fh: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = fs
            .read(ino, fh, out.len() as u64, 1 << 20)
            .await
            .expect("read");
        if got.is_empty() {
            return out;
        }
        out.extend_from_slice(&got);
    }
}

pub(super) async fn read_path(fs: &VagonFs, path: &str) -> Vec<u8> {
    let ino = walk(fs, path).await.expect("walk").attr.ino;
    read_all(fs, ino, 128 * 1024).await.expect("read")
}

/// Write `data` at 0 in kernel-sized pieces.
pub(super) async fn write_all(fs: &VagonFs, ino: u64, fh: u64, data: &[u8]) {
    let mut off = 0;
    for piece in data.chunks(WRITE_PIECE) {
        let n = fs.write(ino, fh, off as u64, piece).await.expect("write");
        assert_eq!(n as usize, piece.len());
        off += piece.len();
    }
}

/// create (truncating a file that exists) + write + close, as `cp` does; returns the new inode
/// and the close's result.
pub(super) async fn put(fs: &VagonFs, parent: u64, name: &str, data: &[u8]) -> (u64, FsResult<()>) {
    let (attr, open) = fs
        .create(
            parent,
            OsStr::new(name),
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        )
        .await
        .expect("create");
    let ino = attr.attr.ino;
    write_all(fs, ino, open.fh, data).await;
    let closed = fs.flush(ino, open.fh).await;
    fs.release(ino, open.fh).await.expect("release");
    (ino, closed)
}

/// Files in a spool folder (spools and journal records), sorted.
pub(super) fn spool_files_in(cache: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(cache.join("spools")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Which server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    /// The in-memory double in the fault injector.
    Mem,
    /// An emulator in this process, over loopback HTTP.
    Emulator,
}

enum Store {
    Mem(Arc<MemApi>),
    Emulator {
        running: Option<RunningEmulator>,
        _data: tempfile::TempDir,
    },
}

/// A scenario's server (the shared storage of either backend) and the mount's cache folder.
pub(super) struct Server {
    /// What the mount talks to.
    pub(super) api: Arc<dyn FilesApi>,
    store: Store,
    pub(super) cache: tempfile::TempDir,
}

impl Server {
    /// A server of `backend` whose storage holds at most `quota` bytes.
    pub(super) async fn start(backend: Backend, quota: u64) -> Server {
        let cache = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Mem => {
                let mem = MemApi::new();
                mem.set_quota(quota);
                let api: Arc<dyn FilesApi> =
                    Arc::new(FaultyFilesApi::<MemApi>::new(Arc::clone(&mem), 1));
                Server {
                    api,
                    store: Store::Mem(mem),
                    cache,
                }
            }
            Backend::Emulator => {
                let data = tempfile::tempdir().expect("tempdir");
                let mut cfg = EmulatorConfig::new(data.path());
                cfg.machines = 1;
                cfg.quota_bytes = quota;
                let (running, http) = start_with_client(cfg).await;
                Server {
                    api: http,
                    store: Store::Emulator {
                        running: Some(running),
                        _data: data,
                    },
                    cache,
                }
            }
        }
    }

    /// A mount of the shared storage with parts of `chunk_mb` MiB (a new one on the same cache
    /// folder is a remount).
    pub(super) fn mount(&self, chunk_mb: u64) -> Arc<VagonFs> {
        VagonFs::new(
            Arc::clone(&self.api),
            RootSpec::Space(Space::Shared),
            config(self.cache.path(), chunk_mb),
        )
    }

    /// The listed entry `name` in folder `parent` of the shared storage.
    pub(super) async fn entry(&self, parent: Option<u64>, name: &str) -> Option<FileEntry> {
        if let Store::Mem(mem) = &self.store {
            return mem.entry(Space::Shared, parent, name);
        }
        self.listing(parent)
            .await
            .into_iter()
            .find(|e| e.name == name)
    }

    async fn listing(&self, parent: Option<u64>) -> Vec<FileEntry> {
        crate::api::paging::list_all(self.api.as_ref(), Space::Shared, parent, None)
            .await
            .expect("list")
    }

    /// Names listed in a folder, sorted.
    pub(super) async fn names(&self, parent: Option<u64>) -> Vec<String> {
        if let Store::Mem(mem) = &self.store {
            return mem.names(Space::Shared, parent);
        }
        let mut v: Vec<String> = self
            .listing(parent)
            .await
            .into_iter()
            .map(|e| e.name)
            .collect();
        v.sort();
        v
    }

    /// A file's bytes, straight from the server.
    pub(super) async fn content(&self, parent: Option<u64>, name: &str) -> Option<Vec<u8>> {
        if let Store::Mem(mem) = &self.store {
            return mem.content(Space::Shared, parent, name);
        }
        let e = self.entry(parent, name).await?;
        if e.size == 0 {
            return Some(Vec::new());
        }
        let link = self.api.file_link(e.id).await.expect("link");
        let bytes = self.api.get_range(&link.url, 0..e.size).await.expect("get");
        Some(bytes.to_vec())
    }

    /// Files in the mount's spool folder.
    pub(super) fn spool_files(&self) -> Vec<String> {
        spool_files_in(self.cache.path())
    }

    pub(super) async fn stop(mut self) {
        if let Store::Emulator { running, .. } = &mut self.store
            && let Some(r) = running.take()
        {
            r.shutdown().await;
        }
    }
}

/// Instantiate each scenario `async fn name(backend: Backend)` as a test against the double
/// (`…::mem::name`) and one against the emulator (`…::emulator::name`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::fs::tests::driver::Backend::Mem).await
                }
            )*
        }
        mod emulator {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::fs::tests::driver::Backend::Emulator).await
                }
            )*
        }
    };
}
