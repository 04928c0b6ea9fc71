//! The core against a real emulator in this process, over loopback HTTP through `HttpFilesApi`:
//! the whole stack below the kernel (core, client, signing, paging, presigned links, ranges).
//!
//! Files are put in place through the API itself (create, parts, complete) and, for data the
//! API would refuse (hostile names, a declared size that differs from the bytes), through the
//! emulator's `/_emulator/raw-entry` hook. Requests are counted with the emulator's own stats.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::api::http::HttpFilesApi;
use crate::api::mem::pattern;
use crate::api::{CompletedPart, CreateRequest, ObjectType};
use crate::emulator::{EmulatorConfig, RunningEmulator};
use crate::fs::errno::to_errno;
use crate::fs::*;

use super::driver::{MIB, list, names, read_all, walk};

fn config() -> FsConfig {
    super::driver::read_config(1000, 1000, 64 << 20)
}

struct Emu {
    running: Option<RunningEmulator>,
    api: Arc<HttpFilesApi>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Emu {
    async fn start(machines: u32, link_ttl: Duration) -> Emu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = EmulatorConfig::new(dir.path());
        cfg.machines = machines;
        cfg.link_ttl = link_ttl;
        let (running, api) = super::driver::start_with_client(cfg).await;
        Emu {
            running: Some(running),
            api,
            http: vagonfs_api::http::tls::client(),
            _dir: dir,
        }
    }

    fn mount(&self, root: RootSpec, config: FsConfig) -> Arc<VagonFs> {
        let api: Arc<dyn FilesApi> = Arc::clone(&self.api) as Arc<dyn FilesApi>;
        VagonFs::new(api, root, config)
    }

    fn base(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.base_url())
            .unwrap_or_default()
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        self.running.as_ref().map(|r| r.stats()).unwrap_or_default()
    }

    fn stat(&self, family: &str) -> u64 {
        self.stats().get(family).copied().unwrap_or(0)
    }

    fn reset_stats(&self) {
        if let Some(r) = &self.running {
            r.reset_stats();
        }
    }

    async fn mkdir(&self, space: Space, parent: Option<u64>, name: &str) -> u64 {
        let req = CreateRequest::directory(space, parent, name);
        self.api.create(&req).await.expect("mkdir").id
    }

    /// A file uploaded the way the write path will: create, every part, complete.
    async fn upload(&self, space: Space, parent: Option<u64>, name: &str, data: &Bytes) -> u64 {
        let req = CreateRequest {
            space,
            parent_id: parent,
            name: name.into(),
            object_type: ObjectType::File,
            content_type: Some("application/octet-stream".into()),
            size: Some(data.len() as u64),
            chunk_size_mb: Some(8),
            overwrite: false,
        };
        let created = self.api.create(&req).await.expect("create");
        let chunk = created.chunk_size_mb.unwrap_or(8) as usize * MIB;
        let mut parts = Vec::new();
        for (i, url) in created.upload_urls.iter().enumerate() {
            let from = (i * chunk).min(data.len());
            let to = ((i + 1) * chunk).min(data.len());
            let etag = self
                .api
                .upload_part(url, data.slice(from..to))
                .await
                .expect("part");
            parts.push(CompletedPart {
                part_number: i as u32 + 1,
                etag,
            });
        }
        self.api
            .complete(created.id, &parts)
            .await
            .expect("complete");
        created.id
    }

    /// An entry inserted behind the API's back (hostile names, lying sizes).
    async fn raw(&self, body: serde_json::Value) -> u64 {
        let resp = self
            .http
            .post(format!("{}/_emulator/raw-entry", self.base()))
            .json(&body)
            .send()
            .await
            .expect("raw-entry");
        assert!(resp.status().is_success(), "raw-entry: {}", resp.status());
        let v: serde_json::Value = resp.json().await.expect("raw-entry json");
        v.get("id").and_then(|i| i.as_u64()).expect("raw-entry id")
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_and_read_through_the_emulator() {
    let emu = Emu::start(3, Duration::from_secs(900)).await;
    let docs = emu.mkdir(Space::Shared, None, "docs").await;
    let sizes = [0usize, 1, 4095, 4096, MIB + 1, 20 * MIB];
    for (i, size) in sizes.iter().enumerate() {
        emu.upload(
            Space::Shared,
            Some(docs),
            &format!("f{i}"),
            &pattern(*size, i as u64),
        )
        .await;
    }
    emu.upload(Space::Machine(2), None, "on-two.txt", &pattern(300, 2))
        .await;
    let fs = emu.mount(RootSpec::All, config());

    let root = names(&list(&fs, ROOT_INO).await);
    // The merged trash of the mount's owner (`fs/trash/`) comes after the listed folders.
    assert_eq!(
        root,
        vec![".", "..", "machines", "recordings", "shared", ".Trash-1000"]
    );
    let machines = walk(&fs, "machines").await.expect("machines");
    let shown = list(&fs, machines.attr.ino).await;
    assert_eq!(shown.len(), 2 + 3, "{:?}", names(&shown));

    let docs_attr = walk(&fs, "shared/docs").await.expect("docs").attr;
    assert_eq!(docs_attr.kind, NodeKind::Directory);
    let entries = list(&fs, docs_attr.ino).await;
    assert_eq!(entries.len(), 2 + sizes.len());
    for (i, size) in sizes.iter().enumerate() {
        let e = entries
            .iter()
            .find(|e| e.name == format!("f{i}").as_str())
            .expect("listed");
        assert_eq!(
            (e.attr.kind, e.attr.size, e.attr.perm),
            (NodeKind::File, *size as u64, 0o644)
        );
        let got = read_all(&fs, e.attr.ino, 128 * 1024).await.expect("read");
        assert!(
            got == pattern(*size, i as u64)[..],
            "f{i}: {} bytes",
            got.len()
        );
    }
    // Random reads in the big one.
    let big = entries
        .iter()
        .find(|e| e.name == "f5")
        .expect("f5")
        .attr
        .ino;
    let data = pattern(20 * MIB, 5);
    let open = fs.open(big, libc::O_RDONLY).await.expect("open");
    for k in [13u64, 2, 19, 7] {
        let offset = k * MIB as u64 - 50;
        let got = fs.read(big, open.fh, offset, 100_000).await.expect("read");
        assert!(got == data[offset as usize..offset as usize + 100_000]);
    }
    fs.release(big, open.fh).await.expect("release");

    // The machine folders are the machines' storages.
    let mut found = false;
    for e in &shown[2..] {
        let inside = names(&list(&fs, e.attr.ino).await);
        if inside.iter().any(|n| n == "on-two.txt") {
            found = true;
        }
    }
    assert!(found, "machine 2's file shows in one machine folder");

    // Warm: listing again and looking up every name costs nothing.
    emu.reset_stats();
    list(&fs, docs_attr.ino).await;
    for i in 0..sizes.len() {
        fs.lookup(docs_attr.ino, OsStr::new(&format!("f{i}")))
            .await
            .expect("lookup");
    }
    assert_eq!(emu.stat("list_files"), 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_folder_is_paged_once() {
    let emu = Emu::start(1, Duration::from_secs(900)).await;
    let dir = emu.mkdir(Space::Shared, None, "big").await;
    for i in 0..1_050 {
        emu.raw(serde_json::json!({
            "name": format!("n{i:04}"), "object_type": "file", "parent_id": dir, "content": "x"
        }))
        .await;
    }
    let fs = emu.mount(RootSpec::Space(Space::Shared), config());
    let big = walk(&fs, "big").await.expect("big").attr.ino;
    emu.reset_stats();
    let entries = list(&fs, big).await;
    assert_eq!(entries.len(), 2 + 1_050);
    assert_eq!(emu.stat("list_files"), 11, "{:?}", emu.stats());
    emu.reset_stats();
    assert_eq!(list(&fs, big).await.len(), 2 + 1_050);
    assert_eq!(emu.stat("list_files"), 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_from_the_emulator() {
    let emu = Emu::start(1, Duration::from_secs(900)).await;
    for name in ["a/b", "", "..", "nul\u{0}x"] {
        emu.raw(serde_json::json!({"name": name, "object_type": "file", "content": "bad"}))
            .await;
    }
    let first = emu
        .raw(serde_json::json!({"name": "dup.txt", "object_type": "file", "content": "one"}))
        .await;
    let second = emu
        .raw(serde_json::json!({"name": "dup.txt", "object_type": "file", "content": "two"}))
        .await;
    assert!(first < second);
    // Raw entries travel as JSON (base64), under the server's 2 MB body limit.
    let short = pattern(MIB + 100, 1);
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    emu.raw(serde_json::json!({
        "name": "declared-bigger", "object_type": "file",
        "content_base64": b64(&short), "size": 2 * MIB
    }))
    .await;
    let long = pattern(200, 2);
    emu.raw(serde_json::json!({
        "name": "declared-smaller", "object_type": "file",
        "content_base64": b64(&long), "size": 100
    }))
    .await;
    let fs = emu.mount(RootSpec::Space(Space::Shared), config());
    let shown = names(&list(&fs, ROOT_INO).await);
    let mut sorted = shown[2..].to_vec();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "declared-bigger",
            "declared-smaller",
            "dup.txt",
            &format!("dup~{second}.txt")
        ]
    );
    let one = walk(&fs, "dup.txt").await.expect("dup").attr.ino;
    assert_eq!(read_all(&fs, one, 4096).await.expect("read"), b"one");
    let two = walk(&fs, &format!("dup~{second}.txt"))
        .await
        .expect("dup2")
        .attr
        .ino;
    assert_eq!(read_all(&fs, two, 4096).await.expect("read"), b"two");

    // Declared 2 MiB, 1 MiB + 100 bytes: the head reads, the tail is EIO, never zeros.
    let bigger = walk(&fs, "declared-bigger").await.expect("bigger").attr;
    assert_eq!(bigger.size, 2 * MIB as u64);
    let err = read_all(&fs, bigger.ino, 1 << 20)
        .await
        .map_err(|e| to_errno(&e))
        .err();
    assert_eq!(err, Some(libc::EIO));
    let open = fs.open(bigger.ino, libc::O_RDONLY).await.expect("open");
    let head = fs.read(bigger.ino, open.fh, 0, 4096).await.expect("head");
    assert!(head == short[..4096]);
    fs.release(bigger.ino, open.fh).await.expect("release");
    // Declared 100, 200 bytes: exactly the 100 declared ones.
    let smaller = walk(&fs, "declared-smaller")
        .await
        .expect("smaller")
        .attr
        .ino;
    let got = read_all(&fs, smaller, 4096).await.expect("read");
    assert!(got == long[..100]);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_links_are_reused_then_replaced_before_they_expire() {
    // Links live 2 s: reused for 80 % of that (1.6 s), then replaced.
    let emu = Emu::start(1, Duration::from_secs(2)).await;
    let data = pattern(5 * MIB, 9);
    emu.upload(Space::Shared, None, "f", &data).await;
    let fs = emu.mount(
        RootSpec::Space(Space::Shared),
        FsConfig {
            cache_size: 0,
            ..config()
        },
    );
    let ino = walk(&fs, "f").await.expect("f").attr.ino;
    emu.reset_stats();
    let got = read_all(&fs, ino, 1 << 20).await.expect("read");
    assert!(got == data[..]);
    assert_eq!(
        emu.stat("file_link"),
        1,
        "one link for the read: {:?}",
        emu.stats()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let got = read_all(&fs, ino, 1 << 20).await.expect("read");
    assert!(got == data[..]);
    assert_eq!(emu.stat("file_link"), 2, "{:?}", emu.stats());
    assert_eq!(
        emu.stat("data_get"),
        10,
        "no GET with an expired link: {:?}",
        emu.stats()
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statfs_and_recordings_from_the_emulator() {
    let emu = Emu::start(2, Duration::from_secs(900)).await;
    emu.upload(Space::Machine(1), None, "m.bin", &pattern(MIB, 1))
        .await;
    emu.raw(serde_json::json!({
        "name": "session.mp4", "object_type": "file", "recordings": true, "machine_id": 1,
        "content": "video"
    }))
    .await;
    let fs = emu.mount(RootSpec::Space(Space::Machine(1)), config());
    let s = fs.statfs(ROOT_INO).await.expect("statfs");
    let quota = crate::emulator::DEFAULT_QUOTA_BYTES;
    assert_eq!(s.blocks, quota / 4096);
    assert_eq!(s.blocks_free, (quota - MIB as u64) / 4096);

    let all = emu.mount(RootSpec::All, config());
    let rec = walk(&all, "recordings").await.expect("recordings").attr;
    assert_eq!(rec.perm & 0o222, 0);
    // The emulator may hold recordings of its own: look for ours, anywhere below.
    let mut queue = vec![rec.ino];
    let mut found = None;
    while let Some(dir) = queue.pop() {
        for e in list(&all, dir).await.into_iter().skip(2) {
            match e.attr.kind {
                NodeKind::Directory => queue.push(e.attr.ino),
                NodeKind::File if e.name == "session.mp4" => found = Some(e.attr),
                NodeKind::File => assert_eq!(e.attr.perm, 0o444),
            }
        }
    }
    let file = found.expect("a recording");
    assert_eq!(file.perm, 0o444);
    assert!(read_all(&all, file.ino, 4096).await.expect("read") == b"video");
    let w = all
        .open(file.ino, libc::O_WRONLY)
        .await
        .map_err(|e| to_errno(&e))
        .err();
    assert_eq!(w, Some(libc::EROFS));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_carry_a_validator_and_a_resume_checks_it() {
    use futures::StreamExt;
    let emu = Emu::start(1, Duration::from_secs(900)).await;
    let data = pattern(300_000, 5);
    let id = emu.upload(Space::Shared, None, "v", &data).await;
    let link = emu.api.file_link(id).await.expect("link");
    let collect = |body: crate::api::RangeBody| async move {
        let chunks: Vec<_> = body.chunks.collect().await;
        chunks
            .into_iter()
            .map(|c| c.expect("chunk"))
            .flat_map(|c| c.to_vec())
            .collect::<Vec<u8>>()
    };
    // The version's validator comes with the bytes.
    let body = emu
        .api
        .get_range_stream(&link.url, 1000..250_000, None)
        .await
        .expect("get");
    let etag = body.validator.clone().expect("an ETag");
    assert!(collect(body).await == data[1000..250_000]);
    // The same version again: served.
    let body = emu
        .api
        .get_range_stream(&link.url, 0..10, Some(&etag))
        .await
        .expect("same version");
    assert!(collect(body).await == data[..10]);
    // Another version: refused, nothing spliced.
    let other = emu
        .api
        .get_range_stream(&link.url, 0..10, Some("\"another\""))
        .await;
    assert!(
        matches!(other, Err(crate::api::ApiError::ObjectChanged { .. })),
        "{:?}",
        other.err()
    );
    // The emulator honours If-Range: a range of the named version, else the whole object.
    for (validator, status, len) in [(etag.as_str(), 206, 10), ("\"another\"", 200, 300_000)] {
        let resp = emu
            .http
            .get(&link.url)
            .header("Range", "bytes=0-9")
            .header("If-Range", validator)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status().as_u16(), status, "If-Range {validator}");
        assert_eq!(resp.bytes().await.expect("body").len(), len);
    }
    emu.stop().await;
}

#[tokio::test]
async fn ten_thousand_entries_cost_one_request_per_page_in_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = EmulatorConfig::new(dir.path());
    cfg.faults.latency_ms = 20;
    let (running, api) = super::driver::start_with_client(cfg).await;
    let http = vagonfs_api::http::tls::client();
    let resp = http
        .post(format!("{}/_emulator/bulk-folders", running.base_url()))
        .json(&serde_json::json!({"count": 10_000, "prefix": "d", "machine_id": 1}))
        .send()
        .await
        .expect("bulk-folders");
    assert!(resp.status().is_success(), "{}", resp.status());
    running.reset_stats();
    let fs = VagonFs::new(
        Arc::clone(&api) as Arc<dyn FilesApi>,
        RootSpec::Space(Space::Machine(1)),
        config(),
    );
    let entries = list(&fs, ROOT_INO).await;
    assert_eq!(entries.len(), 10_002);
    let stats = running.stats();
    assert_eq!(stats["list_files"], 100, "one request per page");
    let peak = running.peaks()["list_files"];
    assert!(peak >= 10, "pages in flight together: at most {peak} were");
    assert!(peak <= crate::api::paging::PAGES_IN_FLIGHT as u64);
    running.shutdown().await;
}
