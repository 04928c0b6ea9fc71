//! Bad JSON: truncated, ill-typed, hostile names, huge bodies.

use super::*;

async fn list_answer(text: &'static str) -> Result<Vec<vagonfs::api::FileEntry>, ApiError> {
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        get(move || async move { raw_json(StatusCode::OK, text) }),
    );
    let base = spawn(router).await;
    client(&base)
        .list_files(Space::Shared, &shared_root())
        .await
        .map(|p| p.entries)
}

#[tokio::test]
async fn truncated_json_is_malformed() {
    let err = list_answer(r#"{"files": [{"id": "42", "type": "file", "attributes": {"name": "rep"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed);
    assert!(err.to_string().contains("GET /files"), "{err}");
}

#[tokio::test]
async fn wrong_shapes_are_malformed() {
    for text in [
        r#"{"files": {"id": 1}}"#,
        r#"[1, 2, 3]"#,
        r#""just a string""#,
        r#"{"files": [], "next_page": "two"}"#,
        r#"{"files": [], "count": -4}"#,
        r#"{"no_list_here": true}"#,
        "",
    ] {
        let err = list_answer(text).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::Malformed, "{text}: {err}");
    }
}

#[tokio::test]
async fn ill_typed_items_are_rejected_one_by_one() {
    let entries = list_answer(
        r#"{"files": [
            {"id": "1", "type": "file", "attributes": {"name": "ok.txt", "object_type": "file", "size": "12"}},
            {"id": "2", "attributes": {"name": "neg", "object_type": "file", "size": -3}},
            {"id": "3", "attributes": {"name": "huge", "object_type": "file", "size": 99999999999999999999999}},
            {"id": "4", "attributes": {"name": "float", "object_type": "file", "size": 1.5}},
            {"id": "abc", "attributes": {"name": "badid", "object_type": "file", "size": 1}},
            {"id": "18446744073709551616", "attributes": {"name": "bigid", "object_type": "file", "size": 1}},
            {"id": 7, "attributes": {"object_type": "file", "size": 1}},
            {"id": 8, "attributes": {"name": ["x"], "object_type": "file", "size": 1}},
            {"id": 9, "attributes": {"name": "kind", "object_type": 3, "size": 1}},
            {"id": 10, "name": "flat-dir", "object_type": "directory", "last_modified_date": "2026-02-05T10:10:22.123+01:00"},
            null, 5, "str"
        ], "next_page": null}"#,
    )
    .await
    .unwrap();
    let got: Vec<(u64, &str)> = entries.iter().map(|e| (e.id, e.name.as_str())).collect();
    assert_eq!(got, vec![(1, "ok.txt"), (10, "flat-dir")]);
    assert_eq!(entries[0].size, 12);
    assert!(entries[1].modified.is_some());
}

#[tokio::test]
async fn hostile_names_are_passed_up_raw_for_the_fs_to_filter() {
    let entries = list_answer(
        r#"{"files": [
            {"id": 1, "name": "../x", "object_type": "file", "size": 1},
            {"id": 2, "name": "a/b", "object_type": "file", "size": 1},
            {"id": 3, "name": "nul\u0000byte", "object_type": "file", "size": 1},
            {"id": 4, "name": "", "object_type": "directory"},
            {"id": 5, "name": "..", "object_type": "directory"}
        ], "next_page": null}"#,
    )
    .await
    .unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["../x", "a/b", "nul\0byte", "", ".."]);
}

#[tokio::test]
async fn a_huge_json_body_is_refused_not_buffered() {
    const CHUNK: usize = 1024 * 1024;
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        get(|| async {
            // 70 MiB without Content-Length: the client must stop reading at its bound.
            let chunks = futures::stream::iter((0..70).map(|i| {
                let b = if i == 0 {
                    b"{\"files\": [\"".to_vec()
                } else {
                    vec![b'x'; CHUNK]
                };
                Ok::<_, std::io::Error>(Bytes::from(b))
            }));
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(chunks))
                .unwrap()
        }),
    );
    let base = spawn(router).await;
    let err = client(&base)
        .list_files(Space::Shared, &shared_root())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed);
    assert!(err.to_string().contains("larger than"), "{err}");
}
