//! Machines, their storages and recordings, the live disk of a running machine, and the raw-entry hook.

use super::*;

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
