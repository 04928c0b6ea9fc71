//! Answers lost after the server acted: retried writes must not act twice.

use super::*;

/// A tiny stateful server whose first answer to each write is lost after the write happened
/// (the handler acts, then sleeps past the client's timeout).
#[derive(Default)]
struct Lossy {
    dirs: Mutex<HashMap<String, u64>>,
    files: Mutex<HashMap<u64, (String, u64, bool)>>,
    next_id: AtomicU32,
    lose_next: Mutex<HashMap<&'static str, bool>>,
}

impl Lossy {
    fn lose(&self, what: &'static str) -> bool {
        self.lose_next.lock().unwrap().remove(what).unwrap_or(false)
    }
}

async fn stall() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

fn lossy_router(state: Arc<Lossy>) -> Router {
    let s1 = state.clone();
    let s2 = state.clone();
    let s3 = state.clone();
    let s4 = state;
    Router::new()
        .route(
            &format!("{PREFIX}/files"),
            post(move |body: Bytes| {
                let s = s1.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let name = v["file_name"].as_str().unwrap().to_string();
                    let id = 100 + u64::from(s.next_id.fetch_add(1, Ordering::SeqCst));
                    if v["object_type"] == "directory" {
                        if s.dirs.lock().unwrap().contains_key(&name) {
                            return json_response(StatusCode::CONFLICT, json!({"client_code": 409, "message": "File already exists"}));
                        }
                        s.dirs.lock().unwrap().insert(name, id);
                        if s.lose("mkdir") {
                            stall().await;
                        }
                        return json_response(StatusCode::OK, json!({"id": id, "uid": "d"}));
                    }
                    let size = v["size"].as_u64().unwrap();
                    s.files.lock().unwrap().insert(id, (name, size, false));
                    json_response(StatusCode::OK, json!({"id": id, "chunk_size": 1, "upload_urls": ["http://127.0.0.1:1/p1"]}))
                }
            })
            .get(move |Query(q): Query<HashMap<String, String>>| {
                let s = s2.clone();
                async move {
                    let wanted = q.get("q").cloned().unwrap_or_default();
                    let mut items: Vec<Value> = s.dirs.lock().unwrap().iter()
                        .filter(|(n, _)| n.contains(&wanted))
                        .map(|(n, id)| json!({"id": id, "name": n, "object_type": "directory"}))
                        .collect();
                    items.extend(s.files.lock().unwrap().iter()
                        .filter(|(_, (n, _, done))| *done && n.contains(&wanted))
                        .map(|(id, (n, size, _))| json!({"id": id, "name": n, "object_type": "file", "size": size})));
                    json_response(StatusCode::OK, json!({"files": items, "next_page": null}))
                }
            }),
        )
        .route(
            &format!("{PREFIX}/files/{{id}}/complete"),
            post(move |axum::extract::Path(id): axum::extract::Path<u64>| {
                let s = s3.clone();
                async move {
                    let mut files = s.files.lock().unwrap();
                    match files.get_mut(&id) {
                        Some(f) if !f.2 => f.2 = true,
                        _ => return json_response(StatusCode::NOT_FOUND, json!({"client_code": 404, "message": "File not found"})),
                    }
                    drop(files);
                    if s.lose("complete") {
                        return json_response(StatusCode::BAD_GATEWAY, json!({"client_code": 502, "message": "gateway"}));
                    }
                    json_response(StatusCode::OK, json!({"uid": "u", "download_url": "http://127.0.0.1:1/d"}))
                }
            }),
        )
        .route(
            &format!("{PREFIX}/files/{{id}}"),
            delete(move |axum::extract::Path(id): axum::extract::Path<u64>| {
                let s = s4.clone();
                async move {
                    let existed = s.files.lock().unwrap().remove(&id).is_some();
                    if !existed {
                        return json_response(StatusCode::NOT_FOUND, json!({"client_code": 404, "message": "File not found"}));
                    }
                    if s.lose("delete") {
                        stall().await;
                    }
                    json_response(StatusCode::OK, json!({"client_code": 200, "message": "OK"}))
                }
            }),
        )
}

#[tokio::test]
async fn mkdir_whose_answer_was_lost_returns_the_directory_once() {
    let state = Arc::new(Lossy::default());
    state.lose_next.lock().unwrap().insert("mkdir", true);
    let base = spawn(lossy_router(state.clone())).await;
    let api = client_with(&base, fast_retry(4), Duration::from_secs(1));
    let req = CreateRequest {
        space: Space::Shared,
        parent_id: None,
        name: "Projects".into(),
        object_type: ObjectType::Directory,
        content_type: None,
        size: None,
        chunk_size_mb: None,
        overwrite: false,
    };
    let created = api.create(&req).await.unwrap();
    let dirs = state.dirs.lock().unwrap().clone();
    assert_eq!(dirs.len(), 1, "exactly one directory");
    assert_eq!(dirs["Projects"], created.id);
    drop(dirs);
    // Without an unknown outcome, 409 stays 409.
    let err = api.create(&req).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::AlreadyExists);
}

#[tokio::test]
async fn complete_and_delete_whose_answers_were_lost_succeed() {
    let state = Arc::new(Lossy::default());
    let base = spawn(lossy_router(state.clone())).await;
    let api = client_with(&base, fast_retry(4), Duration::from_secs(1));
    let req = CreateRequest {
        space: Space::Shared,
        parent_id: None,
        name: "a.bin".into(),
        object_type: ObjectType::File,
        content_type: Some("application/octet-stream".into()),
        size: Some(10),
        chunk_size_mb: Some(1),
        overwrite: false,
    };
    let created = api.create(&req).await.unwrap();
    state.lose_next.lock().unwrap().insert("complete", true);
    let parts = [CompletedPart {
        part_number: 1,
        etag: "\"e\"".into(),
    }];
    api.complete(created.id, &parts).await.unwrap();
    assert!(state.files.lock().unwrap()[&created.id].2);
    // A complete of an unknown upload, with no lost answer, is a plain 404.
    assert_eq!(
        api.complete(9999, &parts).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );

    state.lose_next.lock().unwrap().insert("delete", true);
    api.delete(created.id).await.unwrap();
    assert!(state.files.lock().unwrap().is_empty());
    // Deleting again, no lost answer: 404 is reported.
    assert_eq!(
        api.delete(created.id).await.unwrap_err().kind(),
        ApiErrorKind::NotFound
    );
}
