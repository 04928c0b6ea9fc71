//! Retries: throttling with Retry-After, flaky 5xx, bounded attempts and time, hangs, refused connections.

use super::*;

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
