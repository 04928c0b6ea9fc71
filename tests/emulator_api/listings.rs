//! Listings and pagination; malformed requests are 400.

use super::*;

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
