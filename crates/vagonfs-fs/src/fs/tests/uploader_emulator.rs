//! The write path against the real emulator on loopback, through the real HTTP client.
//!
//! What the in-memory double cannot prove: the bytes survive the wire (presigned part PUTs,
//! ETags as the server makes them, the server's own part-size and size checks at complete), the
//! server's 507 reaches the caller as ENOSPC through the client's error parsing, and the lazy
//! fill works over real ranged downloads. The emulator runs in-process on port 0 in a temp
//! folder and is shut down at the end of each test.

use std::sync::Arc;

use md5::{Digest, Md5};
use rand::{RngExt, SeedableRng};

use crate::api::{FilesApi, ListQuery, Space};
use crate::emulator::{EmulatorConfig, RunningEmulator};
use crate::fs::FsError;
use crate::fs::errno::to_errno;

use crate::fs::write::*;

/// Bytes read back per ranged GET when checking a file.
const READ_BACK_PIECE: u64 = 8 * MIB;

struct Emu {
    _tmp: tempfile::TempDir,
    emu: Option<RunningEmulator>,
    api: Arc<dyn FilesApi>,
    dir: Arc<SpoolDir>,
}

impl Emu {
    async fn start(quota_bytes: Option<u64>) -> Emu {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = EmulatorConfig::new(tmp.path().join("data"));
        if let Some(q) = quota_bytes {
            cfg.quota_bytes = q;
        }
        let (emu, api) = super::driver::start_with_client(cfg).await;
        let api: Arc<dyn FilesApi> = api;
        let dir = SpoolDir::open(&tmp.path().join("cache").join("shared")).expect("spool dir");
        Emu {
            _tmp: tmp,
            emu: Some(emu),
            api,
            dir,
        }
    }

    fn emu(&self) -> &RunningEmulator {
        self.emu.as_ref().expect("running")
    }

    async fn stop(mut self) {
        if let Some(e) = self.emu.take() {
            e.shutdown().await;
        }
    }

    /// The listed root entry called `name`.
    async fn entry(&self, name: &str) -> crate::api::FileEntry {
        let q = ListQuery {
            parent_id: None,
            page: 1,
            per_page: 100,
            search: None,
        };
        let page = self.api.list_files(Space::Shared, &q).await.expect("list");
        page.entries
            .into_iter()
            .find(|e| e.name == name)
            .expect("listed")
    }

    /// MD5 of the remote file, read back in ranged pieces (never whole in memory).
    async fn remote_md5(&self, id: u64, size: u64) -> Vec<u8> {
        let link = self.api.file_link(id).await.expect("link").url;
        let mut h = Md5::new();
        let mut off = 0;
        while off < size {
            let end = (off + READ_BACK_PIECE).min(size);
            h.update(self.api.get_range(&link, off..end).await.expect("range"));
            off = end;
        }
        h.finalize().to_vec()
    }
}

fn target(name: &str) -> FileTarget {
    FileTarget {
        space: Space::Shared,
        parent_id: None,
        name: name.into(),
        display_path: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_mib_in_16_mib_parts_arrives_byte_identical() {
    let env = Emu::start(None).await;
    let size = 40 * MIB;
    let uploader = Uploader::new(Arc::clone(&env.api), UploadRegistry::new());
    assert_eq!((uploader.chunk_size_mb(), uploader.concurrency()), (16, 4));
    let f = SpooledFile::create_new(&env.dir, target("big.bin"))
        .await
        .expect("create");
    // Written 1 MiB at a time from a seeded generator; only the running MD5 is kept.
    let mut rng = rand::rngs::StdRng::seed_from_u64(40);
    let mut local = Md5::new();
    let mut piece = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < size {
        rng.fill(&mut piece[..]);
        f.write(off, &piece[..]).await.expect("write");
        local.update(&piece);
        off += MIB;
    }
    let local = local.finalize().to_vec();
    env.emu().reset_stats();
    let done = f.upload(&uploader).await.expect("upload").expect("dirty");
    assert_eq!(done.size, size);
    let stats = env.emu().stats();
    // 16 + 16 + 8 MiB.
    assert_eq!(stats.get("create"), Some(&1));
    assert_eq!(stats.get("data_put"), Some(&3));
    assert_eq!(stats.get("complete"), Some(&1));
    let entry = env.entry("big.bin").await;
    assert_eq!((entry.id, entry.size), (done.id, size));
    assert_eq!(env.remote_md5(entry.id, size).await, local);
    assert!(!f.is_dirty());
    drop(f);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_overwrite_fills_from_the_server_and_replaces_the_file() {
    let env = Emu::start(None).await;
    let uploader = Uploader::new(Arc::clone(&env.api), UploadRegistry::new()).with_chunk_size_mb(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let mut original = vec![0u8; 3 * MIB as usize + 123];
    rng.fill(&mut original[..]);
    let f = SpooledFile::create_new(&env.dir, target("doc.bin"))
        .await
        .expect("create");
    f.write(0, &original[..]).await.expect("write");
    f.upload(&uploader).await.expect("upload");
    drop(f);
    let entry = env.entry("doc.bin").await;
    let g = SpooledFile::open_existing(
        &env.dir,
        target("doc.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(Arc::clone(&env.api), entry.id),
    )
    .expect("open");
    g.write(2 * MIB - 2, b"across a part boundary")
        .await
        .expect("write");
    let done = g.upload(&uploader).await.expect("upload").expect("dirty");
    let mut expected = original;
    let at = (2 * MIB - 2) as usize;
    expected[at..at + 22].copy_from_slice(b"across a part boundary");
    let listed = env.entry("doc.bin").await;
    assert_eq!(listed.id, done.id, "replaced by the new upload");
    assert_eq!(listed.size, expected.len() as u64);
    assert_eq!(
        env.remote_md5(listed.id, listed.size).await,
        Md5::digest(&expected).to_vec()
    );
    drop(g);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_storage_is_enospc_and_the_spool_is_kept() {
    let env = Emu::start(Some(2 * MIB)).await;
    let uploader = Uploader::new(Arc::clone(&env.api), UploadRegistry::new()).with_chunk_size_mb(1);
    let f = SpooledFile::create_new(&env.dir, target("too-big.bin"))
        .await
        .expect("create");
    f.write(0, vec![7u8; 3 * MIB as usize])
        .await
        .expect("write");
    let err = f.upload(&uploader).await.expect_err("storage full");
    assert_eq!(to_errno(&FsError::from(err)), libc::ENOSPC);
    assert!(f.is_dirty());
    // The record stays for a later flush or the next mount.
    let records = std::fs::read_dir(env.dir.path())
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".journal.json"))
        })
        .count();
    assert_eq!(records, 1);
    drop(f);
    env.stop().await;
}
