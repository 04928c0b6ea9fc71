//! The HTTP client against a small local server (axum, 127.0.0.1, port 0) that misbehaves on
//! purpose: truncated or ill-typed JSON, hostile names and numbers, non-JSON error pages,
//! throttling, flaky 5xx, bodies cut short, short bodies, hanging answers, looping pagination,
//! answers lost after the server acted. Each case must end in a clear error or a rejected item,
//! never a panic or a hang (every test is bounded by short timeouts and retry budgets).

mod bad_json;
mod error_answers;
mod lost;
mod pagination;
mod ranges;
mod retries;
mod signing;

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
