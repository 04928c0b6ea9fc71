//! Error answers: non-JSON error pages, client codes under any status.

use super::*;

#[tokio::test]
async fn non_json_500_gives_a_bounded_snippet() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let router = Router::new().route(
        &format!("{PREFIX}/files/capacity"),
        get(move || {
            let calls = c.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let page = format!(
                    "<html><body>Internal error\n{}</body></html>",
                    "x".repeat(100_000)
                );
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    page,
                )
            }
        }),
    );
    let base = spawn(router).await;
    let err = client_with(&base, fast_retry(3), Duration::from_secs(10))
        .capacity(None)
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    match &err {
        ApiError::RetriesExhausted { attempts: 3, last } => match last.as_ref() {
            ApiError::Status {
                status: 500,
                client_code: None,
                message,
                ..
            } => {
                assert!(
                    message.starts_with("<html><body>Internal error"),
                    "{message}"
                );
                assert!(
                    message.len() < 2000,
                    "snippet is bounded: {} bytes",
                    message.len()
                );
                assert!(!message.contains('\n'));
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.kind(), ApiErrorKind::Unavailable);
}

#[tokio::test]
async fn four_digit_client_code_under_any_4xx_and_under_200() {
    let router = Router::new()
        .route(
            &format!("{PREFIX}/machines/1/files"),
            get(|| async {
                json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"client_code": "4710", "message": "Permission required"}),
                )
            }),
        )
        .route(
            &format!("{PREFIX}/machines/2/files"),
            get(|| async {
                json_response(
                    StatusCode::OK,
                    json!({"client_code": 4710, "message": "Permission required"}),
                )
            }),
        )
        .route(
            &format!("{PREFIX}/files/9"),
            delete(|| async {
                json_response(
                    StatusCode::from_u16(450).unwrap(),
                    json!({"client_code": 450, "message": "Cannot delete root folder"}),
                )
            }),
        );
    let base = spawn(router).await;
    let api = client(&base);
    for m in [1, 2] {
        let err = api
            .list_files(Space::Machine(m), &shared_root())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::PermissionDenied, "{err}");
        match err {
            ApiError::Status {
                client_code,
                message,
                ..
            } => {
                assert_eq!(client_code, Some(4710));
                assert_eq!(message, "Permission required");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        api.delete(9).await.unwrap_err().kind(),
        ApiErrorKind::RootFolder
    );
}
