//! Pagination against a looping server, and pages followed to the end.

use super::*;

#[tokio::test]
async fn a_server_repeating_its_page_cannot_loop_the_client() {
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        get(|| async {
            // Ignores `page`, always says there is more.
            json_response(
                StatusCode::OK,
                json!({"files": [
                {"id": 1, "name": "a", "object_type": "file", "size": 1},
                {"id": 2, "name": "b", "object_type": "file", "size": 1}
            ], "page": 1, "next_page": 2}),
            )
        }),
    );
    let base = spawn(router).await;
    let api = client(&base);
    let err = paging::list_all(&api, Space::Shared, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed);
}

#[tokio::test]
async fn pages_are_followed_to_the_end() {
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let page: u64 = q["page"].parse().unwrap();
            assert_eq!(q["per_page"], "100");
            assert_eq!(q.get("parent_id").map(String::as_str), Some("7"));
            let ids = ((page - 1) * 100 + 1)..=(page * 100).min(250);
            let files: Vec<Value> = ids
                .map(|i| json!({"id": i.to_string(), "type": "file", "attributes": {"name": format!("f{i}"), "object_type": "file", "size": i}}))
                .collect();
            let next = if page < 3 { json!(page + 1) } else { Value::Null };
            json_response(StatusCode::OK, json!({"files": files, "count": 250, "page": page, "next_page": next}))
        }),
    );
    let base = spawn(router).await;
    let all = paging::list_all(&client(&base), Space::Shared, Some(7), None)
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all.last().map(|e| e.id), Some(250));
}
