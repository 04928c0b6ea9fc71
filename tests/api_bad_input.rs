//! The HTTP client against a small local server (axum, 127.0.0.1, port 0) that misbehaves on
//! purpose: truncated or ill-typed JSON, hostile names and numbers, non-JSON error pages,
//! throttling, flaky 5xx, bodies cut short, short bodies, hanging answers, looping pagination,
//! answers lost after the server acted. Each case must end in a clear error or a rejected item,
//! never a panic or a hang (every test is bounded by short timeouts and retry budgets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use futures::StreamExt;
use serde_json::{Value, json};

use vagonfs::api::http::{ClientOptions, HttpFilesApi};
use vagonfs::api::retry::RetryPolicy;
use vagonfs::api::{
    ApiError, ApiErrorKind, CompletedPart, CreateRequest, FilesApi, ListQuery, ObjectType, Space,
    auth, paging,
};
use vagonfs::config::Credentials;

const KEY: &str = "test-key";
const SECRET: &str = "test-secret";
const PREFIX: &str = "/organization-management/v1";

async fn spawn(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        max_elapsed: Duration::from_secs(20),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

fn client_with(base: &str, retry: RetryPolicy, request_timeout: Duration) -> HttpFilesApi {
    let opts = ClientOptions {
        retry,
        request_timeout,
        ..ClientOptions::default()
    };
    HttpFilesApi::new(Credentials::new(base, KEY, SECRET).unwrap(), opts).unwrap()
}

fn client(base: &str) -> HttpFilesApi {
    client_with(base, fast_retry(5), Duration::from_secs(10))
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn raw_json(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Whether a request carries a valid HMAC over its path and exact body.
fn signed_ok(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::parse_authorization)
    else {
        return false;
    };
    h.api_key == KEY && auth::verify(SECRET, method.as_str(), path, body, &h)
}

fn list_of(items: Value) -> Value {
    json!({"files": items, "count": 1, "page": 1, "next_page": null,
           "client_code": 200, "message": "OK", "timestamp": "2026-02-05T10:10:22Z"})
}

fn shared_root() -> ListQuery {
    ListQuery {
        parent_id: None,
        page: 1,
        per_page: 100,
        search: None,
    }
}

// ------------------------------------------------------------------------------------------
// Signing
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Bad JSON
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Error answers
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Retries
// ------------------------------------------------------------------------------------------

/// A route answering `failures` with `fail`, then `ok`.
fn flaky(
    failures: u32,
    fail: fn() -> Response,
    ok: fn() -> Response,
) -> (axum::routing::MethodRouter, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let route = any(move || {
        let calls = c.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                fail()
            } else {
                ok()
            }
        }
    });
    (route, calls)
}

fn capacity_ok() -> Response {
    json_response(
        StatusCode::OK,
        json!({"total": "100", "in_use": 5, "client_code": 200}),
    )
}

#[tokio::test]
async fn throttled_with_retry_after_seconds_then_success() {
    let (route, calls) = flaky(
        1,
        || {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "slow down",
            )
                .into_response()
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files/capacity"), route)).await;
    let cap = client(&base).capacity(None).await.unwrap();
    assert_eq!((cap.total, cap.in_use), (100, 5));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn throttled_with_retry_after_http_date_then_success() {
    let (route, calls) = flaky(
        1,
        || {
            let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(1));
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(&when).unwrap());
            r
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files/capacity"), route)).await;
    assert!(client(&base).capacity(None).await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unavailable_twice_then_success() {
    let (route, calls) = flaky(
        2,
        || {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"client_code": 503, "message": "maintenance"}),
            )
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files/capacity"), route)).await;
    assert!(client(&base).capacity(None).await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let (route, calls) = flaky(
        100,
        || {
            json_response(
                StatusCode::NOT_FOUND,
                json!({"client_code": 404, "message": "Parent folder not found"}),
            )
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files"), route)).await;
    let err = client(&base)
        .list_files(Space::Shared, &shared_root())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn always_unavailable_stops_after_bounded_attempts() {
    let (route, calls) = flaky(
        u32::MAX,
        || {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"client_code": 503, "message": "down"}),
            )
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files/capacity"), route)).await;
    let err = client_with(&base, fast_retry(4), Duration::from_secs(10))
        .capacity(None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::RetriesExhausted { attempts: 4, .. }),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn always_unavailable_stops_at_the_time_budget() {
    let (route, calls) = flaky(
        u32::MAX,
        || {
            json_response(
                StatusCode::BAD_GATEWAY,
                json!({"client_code": 502, "message": "down"}),
            )
        },
        capacity_ok,
    );
    let base = spawn(Router::new().route(&format!("{PREFIX}/files/capacity"), route)).await;
    // Attempts are plenty; the 1.5 s budget is what ends it.
    let policy = RetryPolicy {
        max_attempts: 10_000,
        max_elapsed: Duration::from_millis(1500),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
    };
    let err = client_with(&base, policy, Duration::from_secs(10))
        .capacity(None)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::RetriesExhausted { .. }), "{err}");
    let n = calls.load(Ordering::SeqCst);
    assert!(n > 1 && n < 10_000, "{n} attempts");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let router = Router::new().route(
        &format!("{PREFIX}/files/capacity"),
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            capacity_ok()
        }),
    );
    let base = spawn(router).await;
    let err = client_with(&base, fast_retry(2), Duration::from_secs(1))
        .capacity(None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // Bind then drop: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client_with(&base, fast_retry(2), Duration::from_secs(2))
        .capacity(None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Transport, "{err}");
}

// ------------------------------------------------------------------------------------------
// Pagination against a looping server
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Presigned URLs: parts and ranges
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn part_upload_keeps_the_etag_and_sends_no_authorization() {
    let router = Router::new()
        .route(
            "/part/ok",
            put(|headers: HeaderMap, body: Bytes| async move {
                assert!(
                    headers.get(header::AUTHORIZATION).is_none(),
                    "presigned: no HMAC"
                );
                assert_eq!(&body[..], b"part bytes");
                (
                    StatusCode::OK,
                    [(header::ETAG, "\"9e107d9d372bb6826bd81d3542a419d6\"")],
                    "",
                )
            }),
        )
        .route("/part/noetag", put(|| async { StatusCode::OK }))
        .route(
            "/part/expired",
            put(|| async { (StatusCode::FORBIDDEN, "<Error>AccessDenied</Error>") }),
        );
    let base = spawn(router).await;
    let api = client(&base);
    let etag = api
        .upload_part(
            &format!("{base}/part/ok?X-Sig=abc"),
            Bytes::from_static(b"part bytes"),
        )
        .await
        .unwrap();
    assert_eq!(etag, "\"9e107d9d372bb6826bd81d3542a419d6\"");
    let err = api
        .upload_part(&format!("{base}/part/noetag"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed);
    let err = api
        .upload_part(
            &format!("{base}/part/expired?X-Sig=secret-sig"),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::LinkRefused { status: 403 }));
    assert!(!err.to_string().contains("secret-sig"));
}

const OBJECT_LEN: usize = 100_000;

fn object() -> Vec<u8> {
    (0..OBJECT_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn requested_range(headers: &HeaderMap) -> (usize, Option<usize>) {
    let v = headers.get(header::RANGE).unwrap().to_str().unwrap();
    let (a, b) = v.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
    (
        a.parse().unwrap(),
        if b.is_empty() {
            None
        } else {
            Some(b.parse::<usize>().unwrap() + 1)
        },
    )
}

/// A ranged GET server whose first answer is cut after half its body.
/// The ranges a test server was asked for, in order.
type SeenRanges = Arc<Mutex<Vec<(usize, Option<usize>)>>>;

fn cutting_server(ranges: SeenRanges) -> Router {
    let calls = Arc::new(AtomicU32::new(0));
    Router::new().route(
        "/obj",
        get(move |headers: HeaderMap| {
            let ranges = ranges.clone();
            let calls = calls.clone();
            async move {
                let data = object();
                let (start, end) = requested_range(&headers);
                let end = end.unwrap_or(OBJECT_LEN).min(OBJECT_LEN);
                ranges.lock().unwrap().push((start, Some(end)));
                let body = data[start..end].to_vec();
                let len = body.len();
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let stream_body = if first {
                    // Half the body goes out, then the connection breaks.
                    let half = Bytes::from(body[..len / 2].to_vec());
                    let cut = futures::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err(std::io::Error::other("cut"))
                    });
                    Body::from_stream(futures::stream::once(async { Ok(half) }).chain(cut))
                } else {
                    Body::from(body)
                };
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{OBJECT_LEN}", end - 1),
                    )
                    .header(header::CONTENT_LENGTH, len)
                    .body(stream_body)
                    .unwrap()
            }
        }),
    )
}

#[tokio::test]
async fn a_range_cut_short_is_resumed_for_the_rest() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let base = spawn(cutting_server(ranges.clone())).await;
    let api = client(&base);
    let got = api
        .get_range(&format!("{base}/obj?sig=1"), 1000..81_000)
        .await
        .unwrap();
    assert_eq!(&got[..], &object()[1000..81_000]);
    let ranges = ranges.lock().unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0], (1000, Some(81_000)));
    assert_eq!(
        ranges[1],
        (41_000, Some(81_000)),
        "the retry asks only for the missing bytes"
    );
}

#[tokio::test]
async fn a_stream_cut_short_is_resumed() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let base = spawn(cutting_server(ranges.clone())).await;
    let api = client(&base);
    let mut s = api.get_stream(&format!("{base}/obj"), 10).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, &object()[10..]);
    let ranges = ranges.lock().unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0].0, 10);
    assert!(
        ranges[1].0 > 10,
        "resumed past the bytes already received: {ranges:?}"
    );
}

#[tokio::test]
async fn short_or_misplaced_bodies_are_errors_never_short_data() {
    let router = Router::new()
        // 200 with a body shorter than the range asked.
        .route(
            "/short200",
            get(|| async { (StatusCode::OK, vec![1u8; 10]) }),
        )
        // 206 for an object that ends before the range does.
        .route(
            "/clamped",
            get(|| async {
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, "bytes 0-49/50")
                    .body(Body::from(vec![1u8; 50]))
                    .unwrap()
            }),
        )
        // 206 starting at the wrong offset.
        .route(
            "/elsewhere",
            get(|| async {
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, "bytes 0-99/1000")
                    .body(Body::from(vec![1u8; 100]))
                    .unwrap()
            }),
        )
        // 200 with the whole (small) object: sliced.
        .route("/full", get(|| async { (StatusCode::OK, object()) }))
        .route("/gone", get(|| async { StatusCode::FORBIDDEN }));
    let base = spawn(router).await;
    let api = client(&base);
    let err = api
        .get_range(&format!("{base}/short200"), 0..100)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let err = api
        .get_range(&format!("{base}/clamped"), 0..100)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let err = api
        .get_range(&format!("{base}/elsewhere"), 500..600)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Malformed, "{err}");
    let got = api
        .get_range(&format!("{base}/full"), 500..1500)
        .await
        .unwrap();
    assert_eq!(&got[..], &object()[500..1500]);
    let err = api
        .get_range(&format!("{base}/gone"), 0..10)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::LinkRefused { status: 403 }));
    assert!(matches!(
        api.get_stream(&format!("{base}/gone"), 0).await,
        Err(ApiError::LinkRefused { .. })
    ));
    assert!(
        api.get_range(&format!("{base}/full"), 5..5)
            .await
            .unwrap()
            .is_empty()
    );
}

// ------------------------------------------------------------------------------------------
// Answers lost after the server acted
// ------------------------------------------------------------------------------------------

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
