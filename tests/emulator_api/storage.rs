//! Quota on create and complete; recursive delete that keeps root folders.

use super::*;

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
