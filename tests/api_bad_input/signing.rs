//! Signing: every attempt signed over the exact bytes with a fresh nonce; a wrong secret is not retried.

use super::*;

#[tokio::test]
async fn every_attempt_is_signed_over_exact_bytes_with_a_fresh_nonce() {
    let nonces = Arc::new(Mutex::new(Vec::<String>::new()));
    let n2 = nonces.clone();
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        post(move |req: Request| {
            let nonces = n2.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                if !signed_ok(&parts.method, parts.uri.path(), &parts.headers, &body) {
                    return json_response(
                        StatusCode::UNAUTHORIZED,
                        json!({"client_code": 401, "message": "bad signature"}),
                    );
                }
                let sent: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(sent["file_name"], "résumé ✓.txt");
                let h = auth::parse_authorization(
                    parts.headers[header::AUTHORIZATION].to_str().unwrap(),
                )
                .unwrap();
                let mut n = nonces.lock().unwrap();
                n.push(h.nonce);
                if n.len() == 1 {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"client_code": 503, "message": "busy"}),
                    );
                }
                json_response(
                    StatusCode::OK,
                    json!({"id": 6731, "uid": "u", "client_code": 200}),
                )
            }
        }),
    );
    let base = spawn(router).await;
    let api = client(&base);
    let req = CreateRequest {
        space: Space::Shared,
        parent_id: Some(3),
        name: "résumé ✓.txt".into(),
        object_type: ObjectType::Directory,
        content_type: None,
        size: None,
        chunk_size_mb: None,
        overwrite: false,
    };
    let created = api.create(&req).await.unwrap();
    assert_eq!(created.id, 6731);
    let nonces = nonces.lock().unwrap();
    assert_eq!(nonces.len(), 2);
    assert_ne!(nonces[0], nonces[1], "a retry must use a fresh nonce");
}

#[tokio::test]
async fn wrong_secret_is_unauthorized_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let router = Router::new().route(
        &format!("{PREFIX}/files"),
        get(move |req: Request| {
            let calls = c.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let (parts, _) = req.into_parts();
                if signed_ok(&parts.method, parts.uri.path(), &parts.headers, b"") {
                    json_response(StatusCode::OK, list_of(json!([])))
                } else {
                    json_response(
                        StatusCode::UNAUTHORIZED,
                        json!({"client_code": 401, "message": "invalid signature"}),
                    )
                }
            }
        }),
    );
    let base = spawn(router).await;
    let good = client(&base);
    assert!(good.list_files(Space::Shared, &shared_root()).await.is_ok());
    let opts = ClientOptions {
        retry: fast_retry(5),
        ..ClientOptions::default()
    };
    let bad = HttpFilesApi::new(Credentials::new(&base, KEY, "wrong").unwrap(), opts).unwrap();
    let err = bad
        .list_files(Space::Shared, &shared_root())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Unauthorized);
    assert!(err.to_string().contains("invalid signature"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
