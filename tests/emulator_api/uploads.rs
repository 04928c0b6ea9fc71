//! The upload flow: parts then complete, byte-identical ranged reads; complete refuses parts that do not add up; name conflicts and overwrite.

use super::*;

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
