//! The HTTP client against the real emulator, started in process on 127.0.0.1 port 0 with a
//! temp data folder: every endpoint, big listings through pagination, multipart uploads read
//! back through ranges, overwrite / 409 / 507, recursive delete, zips, link expiry, bad
//! credentials, and a batch of transfers through injected faults (503, 429, dropped
//! connections) that must all succeed through retries with identical bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use vagonfs::api::http::{ClientOptions, HttpFilesApi};
use vagonfs::api::retry::RetryPolicy;
use vagonfs::api::{
    ApiError, ApiErrorKind, ApiResult, CompletedPart, CreateRequest, DownloadTarget, FilesApi,
    ListQuery, ObjectType, Space, paging,
};
use vagonfs::config::Credentials;
use vagonfs::emulator::{EmulatorConfig, Faults, RunningEmulator, start};

const KEY: &str = "demo-key";
const SECRET: &str = "demo-secret";
const MIB: usize = 1024 * 1024;
/// Longest wait for a zip to be built.
const ZIP_WAIT: Duration = Duration::from_secs(30);

struct Emu {
    running: Option<RunningEmulator>,
    _dir: tempfile::TempDir,
}

impl Emu {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmulatorConfig::new(dir.path().join("data"));
        tweak(&mut cfg);
        let running = start(cfg).await.expect("the emulator starts");
        Emu {
            running: Some(running),
            _dir: dir,
        }
    }

    fn emu(&self) -> &RunningEmulator {
        self.running.as_ref().unwrap()
    }

    fn base(&self) -> String {
        self.emu().base_url()
    }

    fn api_with(&self, secret: &str, retry: RetryPolicy) -> HttpFilesApi {
        let opts = ClientOptions {
            retry,
            ..ClientOptions::default()
        };
        HttpFilesApi::new(Credentials::new(self.base(), KEY, secret).unwrap(), opts).unwrap()
    }

    fn api(&self) -> HttpFilesApi {
        self.api_with(SECRET, quick_retry(8))
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        max_elapsed: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // A cheap xorshift stream: distinct bytes per file and per offset.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn dir_req(space: Space, parent: Option<u64>, name: &str) -> CreateRequest {
    CreateRequest::directory(space, parent, name)
}

async fn mkdir(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
) -> ApiResult<u64> {
    Ok(api.create(&dir_req(space, parent, name)).await?.id)
}

/// Create, PUT every part, complete: the file's id.
async fn upload(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
    data: &[u8],
    chunk_mb: u64,
    overwrite: bool,
) -> ApiResult<u64> {
    let created = api
        .create(&CreateRequest {
            space,
            parent_id: parent,
            name: name.into(),
            object_type: ObjectType::File,
            content_type: Some("application/octet-stream".into()),
            size: Some(data.len() as u64),
            chunk_size_mb: Some(chunk_mb),
            overwrite,
        })
        .await?;
    let chunk = created.chunk_size_mb.unwrap_or(chunk_mb) as usize * MIB;
    let mut parts = Vec::new();
    for (i, url) in created.upload_urls.iter().enumerate() {
        let start = (i * chunk).min(data.len());
        let end = ((i + 1) * chunk).min(data.len());
        let etag = api
            .upload_part(url, Bytes::copy_from_slice(&data[start..end]))
            .await?;
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "ETag kept quoted: {etag}"
        );
        parts.push(CompletedPart {
            part_number: i as u32 + 1,
            etag,
        });
    }
    api.complete(created.id, &parts).await?;
    Ok(created.id)
}

/// The whole file through ranged GETs of `block` bytes.
async fn read_back(api: &dyn FilesApi, id: u64, block: usize) -> ApiResult<Vec<u8>> {
    let link = api.file_link(id).await?;
    let size = link.size.expect("the link says the size") as usize;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let end = (out.len() + block).min(size);
        let got = api
            .get_range(&link.url, out.len() as u64..end as u64)
            .await?;
        assert_eq!(got.len(), end - out.len());
        out.extend_from_slice(&got);
    }
    Ok(out)
}

async fn collect_stream(api: &dyn FilesApi, url: &str, offset: u64) -> ApiResult<Vec<u8>> {
    let chunks: Vec<Bytes> = api.get_stream(url, offset).await?.try_collect().await?;
    Ok(chunks.concat())
}

fn names(entries: &[vagonfs::api::FileEntry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.name.clone()).collect()
}

async fn list(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
) -> ApiResult<Vec<vagonfs::api::FileEntry>> {
    paging::list_all(api, space, parent, None).await
}

#[tokio::test]
async fn every_endpoint() {
    let emu = Emu::start().await;
    let api = emu.api();

    // Machines.
    let machines = paging::list_all_machines(&api).await.unwrap();
    assert_eq!(
        machines.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(machines[0].status, "ready");
    assert!(machines.iter().all(|m| !m.name.is_empty()));

    // Shared storage: a folder, a file in it, its listing.
    assert!(list(&api, Space::Shared, None).await.unwrap().is_empty());
    let docs = mkdir(&api, Space::Shared, None, "docs").await.unwrap();
    let text = b"hello from vagonfs\n".to_vec();
    let a = upload(&api, Space::Shared, Some(docs), "a.txt", &text, 1, false)
        .await
        .unwrap();
    let page = api
        .list_files(
            Space::Shared,
            &ListQuery {
                parent_id: Some(docs),
                page: 1,
                per_page: 20,
                search: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.current.as_ref().map(|c| (c.id, c.name.as_str())),
        Some((docs, "docs"))
    );
    assert_eq!(page.entries.len(), 1);
    let e = &page.entries[0];
    assert_eq!(
        (e.id, e.name.as_str(), e.size, e.object_type),
        (a, "a.txt", text.len() as u64, ObjectType::File)
    );
    assert_eq!(e.content_type.as_deref(), Some("application/octet-stream"));
    assert!(e.modified.is_some());
    assert_eq!(page.next_page, None);
    let root = list(&api, Space::Shared, None).await.unwrap();
    assert_eq!(
        (root.len(), root[0].id, root[0].object_type),
        (1, docs, ObjectType::Directory)
    );
    // Search.
    let found = paging::list_all(&api, Space::Shared, Some(docs), Some("a.t"))
        .await
        .unwrap();
    assert_eq!(names(&found), BTreeSet::from(["a.txt".to_string()]));

    // A machine's storage is its own tree.
    let m1 = mkdir(&api, Space::Machine(1), None, "work").await.unwrap();
    let m1_file = upload(
        &api,
        Space::Machine(1),
        Some(m1),
        "w.bin",
        &pattern(5000, 1),
        1,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        names(&list(&api, Space::Machine(1), Some(m1)).await.unwrap()),
        BTreeSet::from(["w.bin".to_string()])
    );
    assert!(
        list(&api, Space::Machine(2), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        read_back(&api, m1_file, 1000).await.unwrap(),
        pattern(5000, 1)
    );
    let err = list(&api, Space::Machine(99), None).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);

    // Capacity.
    let shared = api.capacity(None).await.unwrap();
    assert!(
        shared.total > 0 && shared.in_use >= text.len() as u64,
        "{shared:?}"
    );
    let m1_cap = api.capacity(Some(1)).await.unwrap();
    assert!(m1_cap.in_use >= 5000, "{m1_cap:?}");

    // Session recordings: read-only, seeded through the emulator's test hook.
    let hook = vagonfs_api::http::tls::client()
        .post(format!("{}/_emulator/raw-entry", emu.base()))
        .json(
            &json!({"name": "session-1.mp4", "object_type": "file", "machine_id": 1,
                       "recordings": true, "content": "mp4 bytes", "content_type": "video/mp4"}),
        )
        .send()
        .await
        .unwrap();
    assert!(hook.status().is_success());
    let recs = list(&api, Space::Recordings { machine: Some(1) }, None)
        .await
        .unwrap();
    let rec_names: Vec<String> = {
        // Recordings may be grouped in folders: walk the tree.
        let mut out = Vec::new();
        let mut todo = recs.clone();
        while let Some(e) = todo.pop() {
            match e.object_type {
                ObjectType::File => out.push(e.name.clone()),
                ObjectType::Directory => todo.extend(
                    list(&api, Space::Recordings { machine: Some(1) }, Some(e.id))
                        .await
                        .unwrap(),
                ),
            }
        }
        out
    };
    // The emulator seeds a few recordings of its own; ours is among them.
    assert!(
        rec_names.contains(&"session-1.mp4".to_string()),
        "{rec_names:?}"
    );
    assert!(
        rec_names.iter().all(|n| n.ends_with(".mp4")),
        "{rec_names:?}"
    );
    let err = api
        .create(&dir_req(Space::Recordings { machine: Some(1) }, None, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidRequest);

    // The live disk of a running machine; machine 2 is off; 99 does not exist.
    let live = api.list_content(1, "C:\\").await.unwrap();
    assert!(!live.is_empty());
    assert!(live.iter().any(|e| e.is_directory));
    assert_eq!(
        api.list_content(2, "C:\\").await.unwrap_err().kind(),
        ApiErrorKind::BadRequest
    );
    assert_eq!(
        api.list_content(99, "C:\\").await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );

    // Links and bytes.
    let link = api.file_link(a).await.unwrap();
    assert_eq!(
        (link.size, link.name.as_deref()),
        (Some(text.len() as u64), Some("a.txt"))
    );
    assert_eq!(
        &api.get_range(&link.url, 6..10).await.unwrap()[..],
        &text[6..10]
    );
    assert_eq!(collect_stream(&api, &link.url, 0).await.unwrap(), text);
    assert_eq!(
        collect_stream(&api, &link.url, 6).await.unwrap(),
        &text[6..]
    );

    // One file: a link at once.
    let req = api
        .request_download(&DownloadTarget::Files(vec![a]))
        .await
        .unwrap();
    let url = req.url.clone().expect("one file: url at once");
    assert_eq!(collect_stream(&api, &url, 0).await.unwrap(), text);
    // A folder: a zip job to poll.
    let req = api
        .request_download(&DownloadTarget::Directory(docs))
        .await
        .unwrap();
    let id = req.download_id.expect("a job id");
    let link = paging::wait_for_download(&api, id, ZIP_WAIT).await.unwrap();
    let status = api.download_status(id).await.unwrap();
    assert_eq!(status.state, vagonfs::api::DownloadState::Ready);
    let zip = collect_stream(&api, &link.url, 0).await.unwrap();
    assert_eq!(
        unzip(&zip),
        BTreeMap::from([("a.txt".to_string(), Some(text.clone()))])
    );
    assert_eq!(
        api.download_status(987_654).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );

    // Complete with parts that do not add up: 422.
    let created = api
        .create(&CreateRequest {
            space: Space::Shared,
            parent_id: None,
            name: "short.bin".into(),
            object_type: ObjectType::File,
            content_type: Some("application/octet-stream".into()),
            size: Some(10),
            chunk_size_mb: Some(1),
            overwrite: false,
        })
        .await
        .unwrap();
    let etag = api
        .upload_part(&created.upload_urls[0], Bytes::from_static(b"12345"))
        .await
        .unwrap();
    let err = api
        .complete(
            created.id,
            &[CompletedPart {
                part_number: 1,
                etag,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::SizeMismatch, "{err}");
    // Not listed: never completed.
    assert!(!names(&list(&api, Space::Shared, None).await.unwrap()).contains("short.bin"));

    // Delete.
    api.delete(a).await.unwrap();
    assert!(
        list(&api, Space::Shared, Some(docs))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.delete(a).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );
    assert_eq!(
        api.file_link(a).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );
    emu.stop().await;
}

/// Members of a zip archive: path → bytes (`None` for folders).
fn unzip(bytes: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip archive");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().to_string();
        if member.is_dir() {
            out.insert(name.trim_end_matches('/').to_string(), None);
        } else {
            let mut data = Vec::new();
            member.read_to_end(&mut data).unwrap();
            out.insert(name, Some(data));
        }
    }
    out
}

#[tokio::test]
async fn a_folder_of_2500_entries_is_listed_completely() {
    const N: usize = 2500;
    const PARALLEL: usize = 16;
    let emu = Emu::start().await;
    let api = Arc::new(emu.api());
    let big = mkdir(api.as_ref(), Space::Shared, None, "big")
        .await
        .unwrap();
    let created: Vec<u64> = futures::stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            async move { mkdir(api.as_ref(), Space::Shared, Some(big), &format!("d{i:05}")).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(created.len(), N);
    let all = list(api.as_ref(), Space::Shared, Some(big)).await.unwrap();
    assert_eq!(all.len(), N);
    let expected: BTreeSet<String> = (0..N).map(|i| format!("d{i:05}")).collect();
    assert_eq!(names(&all), expected);
    let ids: BTreeSet<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, created.into_iter().collect::<BTreeSet<_>>());
    emu.stop().await;
}

#[tokio::test]
async fn multipart_upload_reads_back_identical_through_ranges() {
    let emu = Emu::start().await;
    let api = emu.api();
    let data = pattern(3 * MIB + MIB / 2 + 123, 7);
    let id = upload(&api, Space::Shared, None, "big.bin", &data, 1, false)
        .await
        .unwrap();
    // Blocks that straddle part boundaries.
    assert_eq!(read_back(&api, id, 300_000).await.unwrap(), data);
    let link = api.file_link(id).await.unwrap();
    let across = (MIB - 10) as u64..(2 * MIB + 10) as u64;
    assert_eq!(
        &api.get_range(&link.url, across.clone()).await.unwrap()[..],
        &data[across.start as usize..across.end as usize]
    );
    assert_eq!(
        collect_stream(&api, &link.url, 1_000_001).await.unwrap(),
        &data[1_000_001..]
    );
    // Asking past the end is an error, not short data.
    let err = api
        .get_range(&link.url, data.len() as u64 - 5..data.len() as u64 + 5)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ApiErrorKind::Malformed | ApiErrorKind::BadRequest
        ),
        "{err}"
    );
    // An empty file: one part of zero bytes.
    let empty = upload(&api, Space::Shared, None, "empty", &[], 1, false)
        .await
        .unwrap();
    assert_eq!(api.file_link(empty).await.unwrap().size, Some(0));
    emu.stop().await;
}

#[tokio::test]
async fn overwrite_conflict_and_quota() {
    let emu = Emu::start_with(|c| c.quota_bytes = 2 * MIB as u64).await;
    let api = emu.api();
    let v1 = pattern(1000, 1);
    let v2 = pattern(2000, 2);
    upload(&api, Space::Shared, None, "o.bin", &v1, 1, false)
        .await
        .unwrap();
    // Same name, no overwrite: 409.
    let err = upload(&api, Space::Shared, None, "o.bin", &v2, 1, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::AlreadyExists, "{err}");
    // Overwrite: one entry, the new bytes.
    let id2 = upload(&api, Space::Shared, None, "o.bin", &v2, 1, true)
        .await
        .unwrap();
    let root = list(&api, Space::Shared, None).await.unwrap();
    assert_eq!(root.len(), 1);
    assert_eq!((root[0].id, root[0].size), (id2, 2000));
    assert_eq!(read_back(&api, id2, 512).await.unwrap(), v2);
    // A directory of the same name as another: 409 too.
    mkdir(&api, Space::Shared, None, "d").await.unwrap();
    let err = mkdir(&api, Space::Shared, None, "d").await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::AlreadyExists);
    // Beyond the 2 MiB quota: 507 (at create or at complete).
    let too_big = pattern(3 * MIB, 3);
    let err = upload(&api, Space::Shared, None, "huge.bin", &too_big, 1, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NoSpace, "{err}");
    assert!(!names(&list(&api, Space::Shared, None).await.unwrap()).contains("huge.bin"));
    emu.stop().await;
}

#[tokio::test]
async fn recursive_delete_and_zip_of_a_tree() {
    let emu = Emu::start().await;
    let api = emu.api();
    let top = mkdir(&api, Space::Shared, None, "top").await.unwrap();
    let sub = mkdir(&api, Space::Shared, Some(top), "sub").await.unwrap();
    mkdir(&api, Space::Shared, Some(top), "empty")
        .await
        .unwrap();
    let f1 = upload(&api, Space::Shared, Some(sub), "f1.txt", b"one", 1, false)
        .await
        .unwrap();
    upload(
        &api,
        Space::Shared,
        Some(sub),
        "f2.bin",
        &pattern(70_000, 9),
        1,
        false,
    )
    .await
    .unwrap();
    upload(&api, Space::Shared, Some(top), "f3.txt", b"three", 1, false)
        .await
        .unwrap();

    let link = paging::download_link(&api, &DownloadTarget::Directory(top), ZIP_WAIT)
        .await
        .unwrap();
    assert_eq!(link.name.as_deref(), Some("top.zip"));
    let zip = collect_stream(&api, &link.url, 0).await.unwrap();
    let expected = BTreeMap::from([
        ("empty".to_string(), None),
        ("sub".to_string(), None),
        ("sub/f1.txt".to_string(), Some(b"one".to_vec())),
        ("sub/f2.bin".to_string(), Some(pattern(70_000, 9))),
        ("f3.txt".to_string(), Some(b"three".to_vec())),
    ]);
    assert_eq!(unzip(&zip), expected);

    api.delete(top).await.unwrap();
    assert!(list(&api, Space::Shared, None).await.unwrap().is_empty());
    assert_eq!(
        list(&api, Space::Shared, Some(sub))
            .await
            .unwrap_err()
            .kind(),
        ApiErrorKind::NotFound
    );
    assert_eq!(
        api.file_link(f1).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );
    emu.stop().await;
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    let emu = Emu::start_with(|c| c.link_ttl = Duration::from_millis(300)).await;
    let api = emu.api();
    let id = upload(&api, Space::Shared, None, "x", b"data", 1, false)
        .await
        .unwrap();
    let link = api.file_link(id).await.unwrap();
    // Let the link's lifetime pass (a wait, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = api.get_range(&link.url, 0..4).await.unwrap_err();
    assert!(
        matches!(err, ApiError::LinkRefused { status: 403 }),
        "{err}"
    );
    assert!(matches!(
        api.get_stream(&link.url, 0).await,
        Err(ApiError::LinkRefused { .. })
    ));
    // A fresh link works.
    let fresh = api.file_link(id).await.unwrap();
    assert_eq!(&api.get_range(&fresh.url, 0..4).await.unwrap()[..], b"data");
    // A tampered link is refused too.
    let tampered = fresh.url.replace("sig=", "sig=00");
    assert!(matches!(
        api.get_range(&tampered, 0..4).await,
        Err(ApiError::LinkRefused { .. })
    ));
    emu.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_unauthorized() {
    let emu = Emu::start().await;
    let wrong_secret = emu.api_with("not-the-secret", quick_retry(3));
    let err = wrong_secret.capacity(None).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Unauthorized, "{err}");
    let opts = ClientOptions {
        retry: quick_retry(3),
        ..ClientOptions::default()
    };
    let wrong_key = HttpFilesApi::new(
        Credentials::new(emu.base(), "other-key", SECRET).unwrap(),
        opts,
    )
    .unwrap();
    assert_eq!(
        wrong_key.capacity(None).await.unwrap_err().kind(),
        ApiErrorKind::Unauthorized
    );
    assert!(emu.api().capacity(None).await.is_ok());
    emu.stop().await;
}

/// Upload `n` files in parallel and read each back, under the faults now in force.
async fn batch_round_trip(
    api: Arc<HttpFilesApi>,
    parent: u64,
    n: usize,
    size: impl Fn(usize) -> usize,
) {
    // Wide: most of a throttled request's time is the server's `Retry-After: 1`, spent asleep.
    const PARALLEL: usize = 50;
    let results: Vec<(usize, bool)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let data = pattern(size(i), i as u64 + 100);
            async move {
                let name = format!("f{i:03}.bin");
                let id = upload(
                    api.as_ref(),
                    Space::Shared,
                    Some(parent),
                    &name,
                    &data,
                    1,
                    false,
                )
                .await
                .unwrap_or_else(|e| panic!("upload of {name}: {e}"));
                let back = read_back(api.as_ref(), id, 4096)
                    .await
                    .unwrap_or_else(|e| panic!("download of {name}: {e}"));
                (i, back == data)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let differ: Vec<usize> = results
        .iter()
        .filter(|(_, same)| !same)
        .map(|(i, _)| *i)
        .collect();
    assert!(differ.is_empty(), "files read back different: {differ:?}");
    assert_eq!(results.len(), n);
    let listed = list(api.as_ref(), Space::Shared, Some(parent))
        .await
        .unwrap();
    assert_eq!(listed.len(), n);
}

#[tokio::test]
async fn a_hundred_transfers_succeed_through_503s_and_429s() {
    let emu = Emu::start().await;
    // 50% of requests fail: allow enough attempts that none runs out (0.5^30 per request).
    let api = Arc::new(emu.api_with(SECRET, quick_retry(30)));
    let parent = mkdir(api.as_ref(), Space::Shared, None, "batch")
        .await
        .unwrap();
    emu.emu()
        .set_faults(Faults {
            fail_rate: 0.3,
            throttle_rate: 0.2,
            latency_ms: 0,
            reset_rate: 0.0,
        })
        .unwrap();
    batch_round_trip(api, parent, 100, |i| 1000 + i * 37).await;
    let stats = emu.emu().stats();
    emu.emu().set_faults(Faults::default()).unwrap();
    // The faults did strike: far more requests than the 100 × 5 a clean run makes.
    let total: u64 = stats.values().sum();
    assert!(total > 600, "{stats:?}");
    emu.stop().await;
}

#[tokio::test]
async fn transfers_survive_dropped_connections() {
    let emu = Emu::start().await;
    let api = Arc::new(emu.api_with(SECRET, quick_retry(30)));
    let parent = mkdir(api.as_ref(), Space::Shared, None, "resets")
        .await
        .unwrap();
    emu.emu()
        .set_faults(Faults {
            fail_rate: 0.0,
            throttle_rate: 0.0,
            latency_ms: 0,
            reset_rate: 0.3,
        })
        .unwrap();
    // Big enough that a transfer cut "about half way" has bytes to resume from.
    batch_round_trip(api.clone(), parent, 20, |i| 100_000 + i * 1000).await;
    // Streams resume too.
    let all = list(api.as_ref(), Space::Shared, Some(parent))
        .await
        .unwrap();
    for e in all.iter().take(5) {
        let i: usize = e
            .name
            .trim_start_matches('f')
            .trim_end_matches(".bin")
            .parse()
            .unwrap();
        let link = api.file_link(e.id).await.unwrap();
        let got = collect_stream(api.as_ref(), &link.url, 0).await.unwrap();
        assert!(
            got == pattern(100_000 + i * 1000, i as u64 + 100),
            "{} differs",
            e.name
        );
    }
    emu.emu().set_faults(Faults::default()).unwrap();
    emu.stop().await;
}
