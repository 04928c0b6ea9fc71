//! The core's write path against a real emulator in this process, over loopback HTTP through
//! `HttpFilesApi`: create/parts/complete with real presigned part URLs and MD5 ETags, overwrite
//! with a new id, deletes, folder creation, the quota (507), and recovery after a "crash".
//! What arrived is checked by fetching it straight from the emulator (a download link and a
//! ranged GET), not through the mount.

use std::ffi::OsStr;
use std::sync::Arc;

use super::errno::to_errno;
use super::write_tests::config;
use super::*;
use crate::api::ListQuery;
use crate::api::http::HttpFilesApi;
use crate::api::mem::pattern;
use crate::emulator::{EmulatorConfig, RunningEmulator};

const MIB: usize = 1 << 20;
/// Bytes per write call, like a kernel write of 128 KiB.
const WRITE_PIECE: usize = 128 << 10;

struct Emu {
    running: Option<RunningEmulator>,
    api: Arc<HttpFilesApi>,
    _data: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Emu {
    async fn start(quota_bytes: u64) -> Emu {
        let data = tempfile::tempdir().expect("tempdir");
        let mut cfg = EmulatorConfig::new(data.path());
        cfg.machines = 1;
        cfg.quota_bytes = quota_bytes;
        let (running, api) = super::emu_support::start_with_client(cfg).await;
        Emu {
            running: Some(running),
            api,
            _data: data,
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn mount(&self, chunk_mb: u64) -> Arc<VagonFs> {
        let api: Arc<dyn FilesApi> = Arc::clone(&self.api) as Arc<dyn FilesApi>;
        VagonFs::new(
            api,
            RootSpec::Space(Space::Shared),
            config(self.cache.path(), chunk_mb),
        )
    }

    /// The listed entry `name` in folder `parent` of the shared storage.
    async fn entry(&self, parent: Option<u64>, name: &str) -> Option<crate::api::FileEntry> {
        let query = ListQuery {
            parent_id: parent,
            page: 1,
            per_page: crate::api::MAX_PER_PAGE,
            search: None,
        };
        let page = self
            .api
            .list_files(Space::Shared, &query)
            .await
            .expect("list");
        page.entries.into_iter().find(|e| e.name == name)
    }

    /// A file's bytes, straight from the emulator.
    async fn content(&self, parent: Option<u64>, name: &str) -> Option<Vec<u8>> {
        let e = self.entry(parent, name).await?;
        if e.size == 0 {
            return Some(Vec::new());
        }
        let link = self.api.file_link(e.id).await.expect("link");
        let bytes = self.api.get_range(&link.url, 0..e.size).await.expect("get");
        Some(bytes.to_vec())
    }

    fn spool_files(&self) -> usize {
        std::fs::read_dir(self.cache.path().join("spools"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn errno<T>(r: FsResult<T>) -> Option<i32> {
    r.err().map(|e| to_errno(&e))
}

async fn walk(fs: &VagonFs, path: &str) -> FsResult<AttrReply> {
    let mut at = fs.getattr(ROOT_INO).await?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = fs.lookup(at.attr.ino, OsStr::new(part)).await?;
    }
    Ok(at)
}

/// create (or open with `O_TRUNC` when it exists) + write + close.
async fn put(fs: &VagonFs, parent: u64, name: &str, data: &[u8]) -> (u64, FsResult<()>) {
    let (attr, open) = fs
        .create(
            parent,
            OsStr::new(name),
            0o644,
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .await
        .expect("create");
    let ino = attr.attr.ino;
    let mut off = 0u64;
    for piece in data.chunks(WRITE_PIECE) {
        fs.write(ino, open.fh, off, piece).await.expect("write");
        off += piece.len() as u64;
    }
    let closed = fs.flush(ino, open.fh).await;
    fs.release(ino, open.fh).await.expect("release");
    (ino, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_every_size_arrive_byte_identical() {
    let emu = Emu::start(crate::emulator::DEFAULT_QUOTA_BYTES).await;
    for chunk_mb in [1, 16] {
        let fs = emu.mount(chunk_mb);
        for (i, size) in [0, 1, 4 * MIB - 1, 16 * MIB + 1].into_iter().enumerate() {
            let name = format!("c{chunk_mb}-{i}.bin");
            let data = pattern(size, i as u64 + chunk_mb);
            put(&fs, ROOT_INO, &name, &data).await.1.expect("close");
            let got = emu.content(None, &name).await.expect("listed");
            assert!(got == data[..], "{name}: {} bytes back", got.len());
        }
        drop(fs);
    }
    assert_eq!(emu.spool_files(), 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_rename_over_and_folder_moves() {
    let emu = Emu::start(crate::emulator::DEFAULT_QUOTA_BYTES).await;
    let fs = emu.mount(1);
    let (ino, closed) = put(&fs, ROOT_INO, "doc.txt", b"version 1").await;
    closed.expect("first save");
    let first = emu.entry(None, "doc.txt").await.expect("listed").id;
    // Overwrite in place: new id on the server, same inode here.
    put(&fs, ROOT_INO, "doc.txt", b"version 2!")
        .await
        .1
        .expect("overwrite");
    let second = emu.entry(None, "doc.txt").await.expect("listed").id;
    assert_ne!(first, second);
    assert_eq!(walk(&fs, "doc.txt").await.expect("lookup").attr.ino, ino);
    assert_eq!(
        emu.content(None, "doc.txt").await.as_deref(),
        Some(&b"version 2!"[..])
    );
    // Save through a temp file renamed over it.
    put(&fs, ROOT_INO, "doc.txt~tmp", b"version 3")
        .await
        .1
        .expect("temp");
    fs.rename(
        ROOT_INO,
        OsStr::new("doc.txt~tmp"),
        ROOT_INO,
        OsStr::new("doc.txt"),
        0,
    )
    .await
    .expect("rename over");
    assert_eq!(
        emu.content(None, "doc.txt").await.as_deref(),
        Some(&b"version 3"[..])
    );
    assert!(emu.entry(None, "doc.txt~tmp").await.is_none());

    // A folder with a file and a subfolder, moved and renamed.
    let d = fs
        .mkdir(ROOT_INO, OsStr::new("proj"), 0o755)
        .await
        .expect("mkdir");
    let sub = fs
        .mkdir(d.attr.ino, OsStr::new("src"), 0o755)
        .await
        .expect("mkdir");
    let big = pattern(3 * MIB + 9, 77);
    put(&fs, sub.attr.ino, "main.rs", &big)
        .await
        .1
        .expect("put");
    fs.rename(
        ROOT_INO,
        OsStr::new("proj"),
        ROOT_INO,
        OsStr::new("proj2"),
        0,
    )
    .await
    .expect("folder rename");
    assert!(emu.entry(None, "proj").await.is_none());
    let p2 = emu.entry(None, "proj2").await.expect("proj2").id;
    let src = emu.entry(Some(p2), "src").await.expect("src").id;
    assert!(emu.content(Some(src), "main.rs").await.expect("main.rs") == big[..]);
    assert_eq!(
        walk(&fs, "proj2/src").await.expect("lookup").attr.ino,
        sub.attr.ino
    );
    // Remove it all.
    fs.unlink(sub.attr.ino, OsStr::new("main.rs"))
        .await
        .expect("rm");
    fs.rmdir(d.attr.ino, OsStr::new("src"))
        .await
        .expect("rmdir");
    fs.rmdir(ROOT_INO, OsStr::new("proj2"))
        .await
        .expect("rmdir");
    assert!(emu.entry(None, "proj2").await.is_none());
    drop(fs);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_is_enospc_and_nothing_is_lost() {
    let emu = Emu::start(2 * MIB as u64).await;
    let fs = emu.mount(1);
    put(&fs, ROOT_INO, "keep.bin", &pattern(MIB, 1))
        .await
        .1
        .expect("fits");
    let (_, closed) = put(&fs, ROOT_INO, "toobig.bin", &pattern(3 * MIB, 2)).await;
    assert_eq!(errno(closed), Some(libc::ENOSPC));
    assert!(emu.entry(None, "toobig.bin").await.is_none());
    assert!(emu.content(None, "keep.bin").await.expect("kept") == pattern(MIB, 1)[..]);
    assert_eq!(
        emu.spool_files(),
        2,
        "the spool and its journal record stay"
    );
    drop(fs);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_crash_uploads_the_unsaved_file() {
    let emu = Emu::start(crate::emulator::DEFAULT_QUOTA_BYTES).await;
    let data = pattern(2 * MIB + 3, 5);
    {
        let fs = emu.mount(1);
        let (attr, open) = fs
            .create(ROOT_INO, OsStr::new("crash.bin"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
        fs.write(attr.attr.ino, open.fh, 0, &data)
            .await
            .expect("write");
        // Dropped without close: what a killed daemon leaves.
    }
    assert!(emu.entry(None, "crash.bin").await.is_none());
    let fs = emu.mount(1);
    let report = fs.recover().await.expect("recover");
    assert_eq!(report.uploaded, vec!["crash.bin".to_string()]);
    assert!(emu.content(None, "crash.bin").await.expect("arrived") == data[..]);
    assert_eq!(emu.spool_files(), 0);
    drop(fs);
    emu.stop().await;
}
