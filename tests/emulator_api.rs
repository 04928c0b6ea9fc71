//! The emulator's API against the contract: authentication, listings and pagination, the upload
//! flow, conflicts, quota, delete, downloads and zips, machines and their live disk, the test
//! hooks. Each test runs a real emulator on port 0 in its own temp folder.

mod emulator_support;

use std::io::Read;

use emulator_support::{Client, KEY, MIB, SECRET, TestEmulator, pattern};
use reqwest::Method;
use serde_json::{Value, json};
use vagonfs::api::API_PREFIX;
use vagonfs::api::auth::sign;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn hmac_signature_is_checked_exactly() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let path = format!("{API_PREFIX}/files");

    assert_eq!(c.get("/files").await.status, 200);

    let header = |secret: &str, key: &str, ts: i64, nonce: &str| {
        let sig = sign(key, secret, "GET", &path, ts, nonce, b"");
        format!("HMAC {key}:{sig}:{nonce}:{ts}")
    };
    let expect_401 = |a: emulator_support::Answer, what: &str| {
        assert_eq!(a.status, 401, "{what}: {:?}", a.body);
        assert_eq!(a.body["client_code"], 401, "{what}");
        assert!(
            a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    };

    let wrong_secret = header("not-the-secret", KEY, now_ms(), "n-wrong-secret");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(wrong_secret))
            .await,
        "wrong secret",
    );

    let unknown_key = header(SECRET, "someone-else", now_ms(), "n-unknown-key");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(unknown_key))
            .await,
        "unknown key",
    );

    let stale = header(SECRET, KEY, now_ms() - 6 * 60 * 1000, "n-stale");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(stale)).await,
        "stale timestamp",
    );
    let future = header(SECRET, KEY, now_ms() + 6 * 60 * 1000, "n-future");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(future))
            .await,
        "future timestamp",
    );
    let seconds = header(SECRET, KEY, now_ms() / 1000, "n-seconds");
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(seconds))
            .await,
        "timestamp in seconds",
    );

    expect_401(
        c.send_raw(Method::GET, "/files", vec![], None).await,
        "no header",
    );
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some("Bearer abc".into()))
            .await,
        "other scheme",
    );

    // A nonce works once.
    let once = header(SECRET, KEY, now_ms(), "n-once");
    assert_eq!(
        c.send_raw(Method::GET, "/files", vec![], Some(once.clone()))
            .await
            .status,
        200
    );
    expect_401(
        c.send_raw(Method::GET, "/files", vec![], Some(once)).await,
        "reused nonce",
    );

    // The query is not signed; the path is.
    let signed_for_files = header(SECRET, KEY, now_ms(), "n-query");
    let a = c
        .send_raw(
            Method::GET,
            "/files?page=1&per_page=5",
            vec![],
            Some(signed_for_files),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let other_path = header(SECRET, KEY, now_ms(), "n-path");
    expect_401(
        c.send_raw(Method::GET, "/machines", vec![], Some(other_path))
            .await,
        "other path",
    );

    // The raw body bytes are signed: whitespace matters.
    let body = br#"{"file_name": "d", "object_type": "directory"}"#.to_vec();
    let auth = Client::sign(&Method::POST, "/files", &body);
    let mut altered = body.clone();
    altered.insert(1, b' ');
    expect_401(
        c.send_raw(Method::POST, "/files", altered, Some(auth))
            .await,
        "altered body",
    );
    let auth = Client::sign(&Method::POST, "/files", &body);
    assert_eq!(
        c.send_raw(Method::POST, "/files", body, Some(auth))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn upload_in_parts_then_ranged_reads_are_byte_identical() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let content = pattern(2 * MIB + MIB / 2 + 7, 1);

    let created = c.begin(0, "big.bin", content.len(), 1, false).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(created.body["chunk_size"], 1);
    assert_eq!(created.body["upload_urls"].as_array().unwrap().len(), 3);
    assert!(created.body["id"].is_u64(), "create answers a numeric id");
    assert!(created.body["uid"].is_string());
    // Not listed before complete.
    assert!(c.names(0).await.is_empty());

    let id = c.upload_in(0, "big2.bin", &content, 1, false).await;
    let listed = c.get("/files").await;
    let item = &listed.body["files"][0];
    assert_eq!(item["id"], id.to_string());
    assert_eq!(item["type"], "file");
    assert_eq!(item["attributes"]["name"], "big2.bin");
    assert_eq!(item["attributes"]["object_type"], "file");
    assert_eq!(item["attributes"]["size"], content.len());
    assert_eq!(item["attributes"]["parent_id"], 0);
    assert!(
        item["attributes"]["last_modified_date"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(listed.body["client_code"], 200);
    assert_eq!(listed.body["message"], "OK");

    let link = c.get(&format!("/files/{id}/download")).await;
    assert_eq!(link.body["size"], content.len());
    assert_eq!(link.body["name"], "big2.bin");
    assert_eq!(link.body["content_type"], "application/octet-stream");
    let url = link.body["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&c.base),
        "links point at the emulator itself: {url}"
    );

    let (status, headers, whole) = c.fetch(&url, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(whole == content, "whole body differs");

    let len = content.len();
    let cases: [(String, usize, usize); 4] = [
        (format!("bytes=100-{}", MIB + 50), 100, MIB + 50),
        (format!("bytes={}-", len - 10), len - 10, len - 1),
        ("bytes=-5".into(), len - 5, len - 1),
        (format!("bytes={}-{}", len - 3, len + 100), len - 3, len - 1),
    ];
    for (range, a, b) in cases {
        let (status, headers, body) = c.fetch(&url, Some(&range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {a}-{b}/{len}"),
            "{range}"
        );
        assert!(body == content[a..=b], "{range}: bytes differ");
    }
    let (status, headers, _) = c.fetch(&url, Some(&format!("bytes={len}-"))).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{len}"));

    // The complete answer's download_url serves the same bytes; an empty file works too.
    let empty = c.upload(0, "empty", b"").await;
    let (status, _, body) = c.fetch(&c.link(empty).await, None).await;
    assert_eq!((status, body.len()), (200, 0));
}

#[tokio::test]
async fn complete_refuses_parts_that_do_not_add_up() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let content = pattern(MIB + 10, 2);
    let created = c.begin(0, "f.bin", content.len(), 1, false).await;
    let id = created.body["id"].as_u64().unwrap();
    let urls: Vec<String> = created.body["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().into())
        .collect();
    assert_eq!(urls.len(), 2);

    // A part bigger than its slot is refused at once.
    assert_eq!(c.put_part(&urls[1], vec![0; 11]).await.0, 400);

    let (_, e1) = c.put_part(&urls[0], content[..MIB].to_vec()).await;
    let e1 = e1.unwrap();
    assert!(
        e1.starts_with('"') && e1.ends_with('"') && e1.len() == 34,
        "quoted MD5: {e1}"
    );
    let complete = async |parts: Value| {
        c.post(&format!("/files/{id}/complete"), json!({ "parts": parts }))
            .await
    };

    // Part 2 never sent.
    assert_eq!(
        complete(json!([{"part_number": 1, "etag": e1}]))
            .await
            .status,
        422
    );
    // Part 2 short: sizes do not add up to the declared size.
    let (_, short) = c.put_part(&urls[1], content[MIB..MIB + 4].to_vec()).await;
    let a =
        complete(json!([{"part_number": 1, "etag": e1}, {"part_number": 2, "etag": short}])).await;
    assert_eq!(a.status, 422, "{:?}", a.body);
    assert_eq!(a.body["client_code"], 422);
    let (_, e2) = c.put_part(&urls[1], content[MIB..].to_vec()).await;
    let e2 = e2.unwrap();
    // Wrong etag, a part out of range, a part listed but missing from the request.
    assert_eq!(
        complete(json!([{"part_number": 1, "etag": e2}, {"part_number": 2, "etag": e2}]))
            .await
            .status,
        422
    );
    assert_eq!(
        complete(json!([{"part_number": 1, "etag": e1}, {"part_number": 2, "etag": e2}, {"part_number": 3, "etag": e2}]))
            .await
            .status,
        422
    );
    // Malformed bodies are 400.
    assert_eq!(complete(json!("nope")).await.status, 400);
    assert_eq!(
        complete(json!([{"part_number": 0, "etag": e1}]))
            .await
            .status,
        400
    );
    assert!(
        c.names(0).await.is_empty(),
        "nothing visible after failed completes"
    );

    let ok =
        complete(json!([{"part_number": 1, "etag": e1}, {"part_number": 2, "etag": e2}])).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert!(ok.body["download_url"].is_string());
    let (_, _, body) = c
        .fetch(ok.body["download_url"].as_str().unwrap(), None)
        .await;
    assert!(body == content);
    // A repeated complete (a retry after a lost answer) is not an error.
    let again =
        complete(json!([{"part_number": 1, "etag": e1}, {"part_number": 2, "etag": e2}])).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        c.post("/files/999999/complete", json!({"parts": []}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn name_conflicts_and_overwrite() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let first = c.upload(0, "a.txt", b"first").await;
    let again = c.begin(0, "a.txt", 3, 1, false).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["client_code"], 409);

    let second = c.upload_in(0, "a.txt", b"second!", 1, true).await;
    assert_ne!(first, second);
    assert_eq!(c.names(0).await, ["a.txt"]);
    let (_, _, body) = c.fetch(&c.link(second).await, None).await;
    assert_eq!(body, b"second!");
    assert_eq!(
        c.get(&format!("/files/{first}/download")).await.status,
        404,
        "the overwritten file is gone"
    );

    c.mkdir(0, "d", None).await;
    assert_eq!(
        c.begin(0, "d", 1, 1, true).await.status,
        409,
        "a file cannot replace a folder"
    );
    let dup_dir = c
        .post(
            "/files",
            json!({"file_name": "d", "object_type": "directory"}),
        )
        .await;
    assert_eq!(dup_dir.status, 409);
    let dir_over_file = c
        .post(
            "/files",
            json!({"file_name": "a.txt", "object_type": "directory"}),
        )
        .await;
    assert_eq!(dir_over_file.status, 409);

    // A conflict that appears between create and complete is caught at complete.
    let pending = c.begin(0, "late", 1, 1, false).await;
    let url = pending.body["upload_urls"][0].as_str().unwrap().to_string();
    let id = pending.body["id"].as_u64().unwrap();
    c.mkdir(0, "late", None).await;
    let (_, etag) = c.put_part(&url, b"x".to_vec()).await;
    let a = c
        .post(
            &format!("/files/{id}/complete"),
            json!({"parts": [{"part_number": 1, "etag": etag}]}),
        )
        .await;
    assert_eq!(a.status, 409, "{:?}", a.body);
}

#[tokio::test]
async fn quota_is_enforced_on_create_and_complete() {
    let t = TestEmulator::start_with(|cfg| cfg.quota_bytes = 1000).await;
    let c = &t.client;
    let full = c.begin(0, "huge", 1001, 1, false).await;
    assert_eq!(full.status, 507, "{:?}", full.body);
    assert_eq!(full.body["client_code"], 507);

    // Two uploads that fit alone but not together: the second complete is 507.
    let a = c.begin(0, "a", 600, 1, false).await;
    let b = c.begin(0, "b", 600, 1, false).await;
    assert_eq!((a.status, b.status), (200, 200));
    let finish = |answer: &emulator_support::Answer, byte: u8| {
        let url = answer.body["upload_urls"][0].as_str().unwrap().to_string();
        let id = answer.body["id"].as_u64().unwrap();
        async move {
            let (_, etag) = c.put_part(&url, vec![byte; 600]).await;
            c.post(
                &format!("/files/{id}/complete"),
                json!({"parts": [{"part_number": 1, "etag": etag}]}),
            )
            .await
        }
    };
    assert_eq!(finish(&a, 1).await.status, 200);
    let second = finish(&b, 2).await;
    assert_eq!(second.status, 507, "{:?}", second.body);
    assert_eq!(c.names(0).await, ["a"]);

    // Replacing a file only needs room for the difference.
    c.upload_in(0, "a", &[3; 900], 1, true).await;
    let cap = c.get("/files/capacity").await;
    assert_eq!(cap.body["total"], 1000);
    assert_eq!(cap.body["in_use"], 900);
    // Machine storages have their own quota.
    let m = c.get("/files/capacity?machine_id=1").await;
    assert_eq!(
        (m.body["total"].as_u64(), m.body["in_use"].as_u64()),
        (Some(1000), Some(0))
    );
    assert_eq!(m.body["team"]["in_use"], 900);
    assert_eq!(m.body["team"]["total"], 3000);
    assert_eq!(c.get("/files/capacity?machine_id=9").await.status, 404);
    assert_eq!(c.get("/files/capacity?machine_id=x").await.status, 400);
}

#[tokio::test]
async fn delete_is_recursive_and_root_folders_are_kept() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let top = c.mkdir(0, "top", None).await;
    let sub = c.mkdir(top, "sub", None).await;
    let deep = c.upload(sub, "deep.txt", b"deep").await;
    let keep = c.upload(0, "keep.txt", b"keep").await;
    let deep_link = c.link(deep).await;

    let a = c.delete(&format!("/files/{top}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["client_code"], 200);
    assert_eq!(c.names(0).await, ["keep.txt"]);
    assert_eq!(c.get(&format!("/files?parent_id={sub}")).await.status, 404);
    assert_eq!(c.get(&format!("/files/{deep}/download")).await.status, 404);
    assert_eq!(
        c.fetch(&deep_link, None).await.0,
        404,
        "bytes of a deleted file are gone"
    );
    assert_eq!(c.delete(&format!("/files/{top}")).await.status, 404);
    assert_eq!(c.delete("/files/abc").await.status, 400);

    let root = c.get("/files").await.body["current"]["id"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let a = c.delete(&format!("/files/{root}")).await;
    assert_eq!(a.status, 450, "{:?}", a.body);
    assert_eq!(a.body["client_code"], 450);
    assert_eq!(c.get(&format!("/files/{keep}/download")).await.status, 200);
}

#[tokio::test]
async fn downloads_one_file_at_once_and_folders_as_zips() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let project = c.mkdir(0, "project", None).await;
    let docs = c.mkdir(project, "docs", None).await;
    c.mkdir(project, "empty", None).await;
    let readme = c.upload(project, "readme.md", b"# readme").await;
    c.upload(docs, "guide.txt", &pattern(70_000, 3)).await;
    let other = c.upload(0, "other.txt", b"other").await;

    let one = c
        .post("/files/download", json!({"file_ids": [readme]}))
        .await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(one.body["name"], "readme.md");
    assert_eq!(one.body["size"], 8);
    assert!(one.body["download_id"].is_u64());
    let (_, _, bytes) = c.fetch(one.body["url"].as_str().unwrap(), None).await;
    assert_eq!(bytes, b"# readme");

    let zip = c
        .post("/files/download", json!({"directory_id": project}))
        .await;
    assert_eq!(zip.status, 200, "{:?}", zip.body);
    assert!(zip.body["url"].is_null());
    assert_eq!(zip.body["name"], "project.zip");
    assert_eq!(zip.body["content_type"], "application/zip");
    let bytes = wait_for_zip(c, zip.body["download_id"].as_u64().unwrap()).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid zip");
    let mut names: Vec<String> = archive.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["docs/", "docs/guide.txt", "empty/", "readme.md"]);
    let mut guide = Vec::new();
    archive
        .by_name("docs/guide.txt")
        .unwrap()
        .read_to_end(&mut guide)
        .unwrap();
    assert!(guide == pattern(70_000, 3));

    let several = c
        .post("/files/download", json!({"file_ids": [readme, other]}))
        .await;
    assert!(several.body["url"].is_null());
    let bytes = wait_for_zip(c, several.body["download_id"].as_u64().unwrap()).await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<&str> = archive.file_names().collect();
    names.sort();
    assert_eq!(names, ["other.txt", "readme.md"]);

    for bad in [
        json!({}),
        json!({"file_ids": []}),
        json!({"file_ids": [1], "directory_id": 2}),
        json!({"file_ids": "x"}),
    ] {
        assert_eq!(
            c.post("/files/download", bad.clone()).await.status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        c.post("/files/download", json!({"file_ids": [424242]}))
            .await
            .status,
        404
    );
    assert_eq!(c.get("/files/download/424242").await.status, 404);
    assert_eq!(
        c.get(&format!("/files/{project}/download")).await.status,
        400,
        "a folder has no single link"
    );
}

/// Poll a zip job until ready (bounded), then fetch it.
async fn wait_for_zip(c: &Client, download_id: u64) -> Vec<u8> {
    for _ in 0..600 {
        let s = c.get(&format!("/files/download/{download_id}")).await;
        assert_eq!(s.status, 200, "{:?}", s.body);
        let d = &s.body["download"];
        assert_eq!(d["id"], download_id.to_string());
        assert_eq!(d["type"], "download");
        match d["attributes"]["status"].as_str().unwrap() {
            "processing" => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            "ready" => {
                let url = d["attributes"]["url"].as_str().unwrap();
                let (status, _, bytes) = c.fetch(url, None).await;
                assert_eq!(status, 200);
                assert_eq!(d["attributes"]["size"], bytes.len());
                return bytes;
            }
            other => panic!("zip job ended {other}"),
        }
    }
    panic!("zip job {download_id} never became ready");
}

#[tokio::test]
async fn pagination_of_250_entries() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let parent = c.mkdir(0, "many", None).await;
    for i in 0..250 {
        let name = format!("e{i:03}");
        if i % 5 == 0 {
            c.mkdir(parent, &name, None).await;
        } else {
            let a = c
                .hook(
                    Method::POST,
                    "raw-entry",
                    Some(json!({"name": name, "object_type": "file", "parent_id": parent})),
                )
                .await;
            assert_eq!(a.status, 200, "{:?}", a.body);
        }
    }
    let mut seen = Vec::new();
    let mut page = Some(1);
    let mut pages = 0;
    while let Some(p) = page {
        let a = c
            .get(&format!("/files?parent_id={parent}&page={p}&per_page=100"))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["count"], 250);
        assert_eq!(a.body["page"], p);
        assert_eq!(a.body["current"]["attributes"]["path"], "/many");
        assert_eq!(a.body["current"]["attributes"]["parent_id"], 0);
        let files = a.body["files"].as_array().unwrap();
        assert_eq!(files.len(), if p < 3 { 100 } else { 50 });
        seen.extend(files.iter().map(|f| {
            (
                f["attributes"]["object_type"].as_str().unwrap().to_string(),
                f["attributes"]["name"].as_str().unwrap().to_string(),
            )
        }));
        page = a.body["next_page"].as_u64();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    // Folders first, then by name.
    let dirs = seen.iter().take_while(|(k, _)| k == "directory").count();
    assert_eq!(dirs, 50);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    assert_eq!(seen, sorted);

    let default = c.get(&format!("/files?parent_id={parent}")).await;
    assert_eq!(default.body["files"].as_array().unwrap().len(), 20);
    assert_eq!(default.body["next_page"], 2);
    let capped = c
        .get(&format!("/files?parent_id={parent}&per_page=1000"))
        .await;
    assert_eq!(capped.body["files"].as_array().unwrap().len(), 100);
    let beyond = c
        .get(&format!("/files?parent_id={parent}&page=9&per_page=100"))
        .await;
    assert_eq!(beyond.body["files"].as_array().unwrap().len(), 0);
    assert!(beyond.body["next_page"].is_null());

    let search = c.get(&format!("/files?parent_id={parent}&q=E24")).await;
    let found: Vec<&str> = search.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["attributes"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        [
            "e240", "e245", "e241", "e242", "e243", "e244", "e246", "e247", "e248", "e249"
        ]
    );
    assert_eq!(search.body["count"], 10);
}

#[tokio::test]
async fn bad_requests_are_400() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    for q in [
        "parent_id=abc",
        "page=0",
        "page=-1",
        "per_page=0",
        "per_page=x",
        "parent_id=1.5",
    ] {
        let a = c.get(&format!("/files?{q}")).await;
        assert_eq!(a.status, 400, "{q}");
        assert_eq!(a.body["client_code"], 400, "{q}");
    }
    assert_eq!(c.get("/files?parent_id=987654").await.status, 404);
    let file = c.upload(0, "plain", b"x").await;
    assert_eq!(
        c.get(&format!("/files?parent_id={file}")).await.status,
        400,
        "a file is no parent"
    );

    let raw = |bytes: &'static [u8]| {
        let auth = Client::sign(&Method::POST, "/files", bytes);
        c.send_raw(Method::POST, "/files", bytes.to_vec(), Some(auth))
    };
    assert_eq!(raw(b"{not json").await.status, 400);
    assert_eq!(raw(b"[]").await.status, 400);
    for name in ["", ".", "..", "a/b", "nul\0byte"] {
        let a = c
            .post(
                "/files",
                json!({"file_name": name, "object_type": "directory"}),
            )
            .await;
        assert_eq!(a.status, 400, "{name:?}");
    }
    for body in [
        json!({"object_type": "directory"}),
        json!({"file_name": "x"}),
        json!({"file_name": "x", "object_type": "folder"}),
        json!({"file_name": "x", "object_type": "file", "content_type": "text/plain"}),
        json!({"file_name": "x", "object_type": "file", "size": 1}),
        json!({"file_name": "x", "object_type": "file", "content_type": "a/b", "size": -1}),
        json!({"file_name": "x", "object_type": "file", "content_type": "a/b", "size": 1, "chunk_size": 0}),
        json!({"file_name": "x", "object_type": "directory", "parent_id": "abc"}),
        json!({"file_name": "x", "object_type": "directory", "overwrite": "yes"}),
    ] {
        let a = c.post("/files", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
    }
    assert_eq!(
        c.post(
            "/files",
            json!({"file_name": "x", "object_type": "directory", "machine_id": 77})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        c.post(
            "/files",
            json!({"file_name": "x", "object_type": "directory", "parent_id": 987654})
        )
        .await
        .status,
        404
    );
    assert_eq!(c.get("/no/such/endpoint").await.status, 404);
}

#[tokio::test]
async fn machines_storages_and_recordings() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let m = c.get("/machines").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body["count"], 2);
    assert_eq!(m.body["machines"][0]["id"], "1");
    assert_eq!(m.body["machines"][0]["type"], "machine");
    assert_eq!(m.body["machines"][0]["attributes"]["status"], "ready");
    assert_eq!(m.body["machines"][1]["attributes"]["status"], "off");
    let paged = c.get("/machines?per_page=1&page=1").await;
    assert_eq!(paged.body["next_page"], 2);

    // Each machine has its own tree; ids are global.
    let shared_dir = c.mkdir(0, "same-name", None).await;
    let m1_dir = c.mkdir(0, "same-name", Some(1)).await;
    assert_ne!(shared_dir, m1_dir);
    let listing = c.get("/machines/1/files").await;
    assert_eq!(listing.body["files"][0]["id"], m1_dir.to_string());
    assert_eq!(listing.body["current"]["attributes"]["name"], "Machine 1");
    assert_eq!(c.get("/machines/2/files").await.body["count"], 0);
    assert_eq!(
        c.get(&format!("/machines/2/files?parent_id={m1_dir}"))
            .await
            .status,
        404
    );
    assert_eq!(c.get("/machines/3/files").await.status, 404);
    assert_eq!(c.get("/machines/x/files").await.status, 400);
    // A parent decides the storage; a contradicting machine_id is 404.
    let inner = c
        .post(
            "/files",
            json!({"file_name": "inner", "object_type": "directory", "parent_id": m1_dir}),
        )
        .await;
    assert_eq!(inner.status, 200);
    let wrong = c
        .post("/files", json!({"file_name": "x", "object_type": "directory", "parent_id": m1_dir, "machine_id": 2}))
        .await;
    assert_eq!(wrong.status, 404);

    // Session recordings: a tree per machine with small .mp4 files, read-only, filterable.
    let all = c.get("/files/session-recordings").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["count"], 2);
    let only1 = c.get("/files/session-recordings?machine_id=1").await;
    assert_eq!(only1.body["count"], 1);
    let folder1 = only1.body["files"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.get(&format!(
            "/files/session-recordings?machine_id=2&parent_id={folder1}"
        ))
        .await
        .status,
        404
    );
    let sessions = c
        .get(&format!(
            "/files/session-recordings?machine_id=1&parent_id={folder1}"
        ))
        .await;
    let session = sessions.body["files"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let files = c
        .get(&format!("/files/session-recordings?parent_id={session}"))
        .await;
    let first = &files.body["files"][0];
    assert!(
        first["attributes"]["name"]
            .as_str()
            .unwrap()
            .ends_with(".mp4")
    );
    assert_eq!(first["attributes"]["content_type"], "video/mp4");
    let rec_id: u64 = first["id"].as_str().unwrap().parse().unwrap();
    let (status, _, bytes) = c.fetch(&c.link(rec_id).await, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        bytes.len() as u64,
        first["attributes"]["size"].as_u64().unwrap()
    );
    assert_eq!(&bytes[4..8], b"ftyp");
    assert_eq!(c.delete(&format!("/files/{rec_id}")).await.status, 403);
    assert_eq!(
        c.get("/files/session-recordings?machine_id=9").await.status,
        404
    );
}

#[tokio::test]
async fn live_disk_of_a_running_machine() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let a = c
        .post("/machines/1/list-content", json!({"path": "C:\\Users"}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let content = a.body["content"].as_array().unwrap();
    assert!(content.contains(
        &json!({"path": "C:\\Users\\Administrator", "name": "Administrator", "is_directory": true})
    ));

    // It is a real folder under the data dir: what appears there is listed.
    let live = t
        .emu()
        .data_dir()
        .join("live/machine-1/Users/Administrator/Desktop");
    std::fs::write(live.join("new.txt"), b"hi").unwrap();
    let desk = c
        .post(
            "/machines/1/list-content",
            json!({"path": "c:/Users/Administrator/Desktop/"}),
        )
        .await;
    let names: Vec<&str> = desk.body["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"new.txt"), "{names:?}");
    assert_eq!(
        desk.body["content"][0]["path"]
            .as_str()
            .unwrap()
            .split('\\')
            .next(),
        Some("C:")
    );

    assert_eq!(
        c.post("/machines/2/list-content", json!({"path": "C:\\"}))
            .await
            .status,
        400,
        "machine off"
    );
    assert_eq!(
        c.post("/machines/9/list-content", json!({"path": "C:\\"}))
            .await
            .status,
        404
    );
    assert_eq!(
        c.post("/machines/1/list-content", json!({"path": "C:\\..\\etc"}))
            .await
            .status,
        400
    );
    assert_eq!(
        c.post("/machines/1/list-content", json!({"path": "C:\\Nope"}))
            .await
            .status,
        404
    );
    assert_eq!(
        c.post("/machines/1/list-content", json!({})).await.status,
        400
    );
}

#[tokio::test]
async fn raw_entries_bypass_validation() {
    let t = TestEmulator::start().await;
    let c = &t.client;
    let raw = |body: Value| c.hook(Method::POST, "raw-entry", Some(body));
    for name in ["a/b", "", "..", "dup", "dup", "nul\u{0}name"] {
        let a = raw(json!({"name": name, "object_type": "file", "content": "abc"})).await;
        assert_eq!(a.status, 200, "{name:?}: {:?}", a.body);
    }
    let liar =
        raw(json!({"name": "liar", "object_type": "file", "content": "short", "size": 1000})).await;
    let liar_id = liar.body["id"].as_u64().unwrap();
    let names = c.names(0).await;
    assert_eq!(names.iter().filter(|n| *n == "dup").count(), 2);
    assert!(
        names.contains(&"a/b".to_string())
            && names.contains(&String::new())
            && names.contains(&"..".to_string())
    );

    let link = c.get(&format!("/files/{liar_id}/download")).await;
    assert_eq!(
        link.body["size"], 1000,
        "the declared size is what the API says"
    );
    let (status, _, bytes) = c.fetch(link.body["url"].as_str().unwrap(), None).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"short".as_slice()),
        "the bytes are what was stored"
    );
    let b64 =
        raw(json!({"name": "bin", "object_type": "file", "content_base64": "AAEC/w=="})).await;
    let (_, _, bytes) = c
        .fetch(&c.link(b64.body["id"].as_u64().unwrap()).await, None)
        .await;
    assert_eq!(bytes, [0, 1, 2, 255]);
    // Absurd declared sizes do not break quota arithmetic: the storage is simply full.
    for name in ["huge-1", "huge-2"] {
        let a =
            raw(json!({"name": name, "object_type": "file", "size": 9_000_000_000_000_000_000u64}))
                .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    assert_eq!(c.begin(0, "more", 1, 1, false).await.status, 507);
    assert_eq!(c.get("/files/capacity").await.status, 200);
    assert_eq!(
        raw(json!({"name": "x", "object_type": "file", "parent_id": 987654}))
            .await
            .status,
        404
    );
    assert_eq!(
        raw(json!({"name": "x", "object_type": "file", "bogus": 1}))
            .await
            .status,
        400
    );
}
