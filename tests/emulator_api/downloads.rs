//! Downloads: one file at once, folders as zips (polled until ready).

use super::*;

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
