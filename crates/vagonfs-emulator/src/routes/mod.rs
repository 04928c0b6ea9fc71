//! The router: every endpoint of the contract under `/organization-management/v1` (HMAC
//! checked), the presigned data plane under `/_data/`, and the test hooks under `/_emulator/`.
//!
//! Layers, outermost first: request log (method, path without the query so presigned
//! signatures never reach the log, status, duration) → per-family count → injected faults
//! (API and data only) → HMAC check (API only) → handler.
//!
//! Shared request parsing lives here, with the exact 400s: ids are decimal integers (a JSON
//! number or a digit string; empty or 0 means "root" where a parent is meant); `page` starts at 1;
//! `per_page` is 1.. and capped at [`crate::api::MAX_PER_PAGE`]; a JSON body must be an object.

mod admin;
mod data;
mod downloads;
mod files;
mod machines;

pub use machines::READY_MACHINE;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::AppState;
use super::reply::Failure;
use super::stats::FamilyTable;
use super::store::StoreError;
use crate::api::{API_PREFIX, MAX_PER_PAGE};

/// `per_page` when the client does not say.
const DEFAULT_PER_PAGE: u64 = 20;

/// Collects routes and the stats family of each.
struct Table {
    router: Router<AppState>,
    families: FamilyTable,
}

impl Table {
    fn new() -> Self {
        Table {
            router: Router::new(),
            families: HashMap::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &str, family: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // Only standard methods are registered here, all of which have a filter.
        let filter = MethodFilter::try_from(method.clone()).expect("a standard HTTP method");
        self.families.insert((method, path.to_string()), family);
        self.router = self.router.route(path, on(filter, handler));
        self
    }
}

/// The API and data routes, not yet layered, and the stats family of each route.
pub struct Routes {
    api: Router<AppState>,
    data: Router<AppState>,
    pub families: FamilyTable,
}

/// Collect every counted route (the state, which needs the family table, comes later).
pub fn build() -> Routes {
    let p = |path: &str| format!("{API_PREFIX}{path}");
    let api = Table::new()
        .add(
            Method::GET,
            &p("/machines"),
            "list_machines",
            machines::list,
        )
        .add(
            Method::POST,
            &p("/machines/{id}/list-content"),
            "list_content",
            machines::list_content,
        )
        .add(
            Method::GET,
            &p("/machines/{id}/files"),
            "list_files",
            files::list_machine,
        )
        .add(Method::GET, &p("/files"), "list_files", files::list_shared)
        .add(
            Method::GET,
            &p("/files/session-recordings"),
            "list_files",
            files::list_recordings,
        )
        .add(Method::POST, &p("/files"), "create", files::create)
        .add(
            Method::POST,
            &p("/files/{id}/complete"),
            "complete",
            files::complete,
        )
        .add(Method::DELETE, &p("/files/{id}"), "delete", files::delete)
        .add(
            Method::GET,
            &p("/files/capacity"),
            "capacity",
            files::capacity,
        )
        .add(
            Method::POST,
            &p("/files/download"),
            "request_download",
            downloads::request,
        )
        .add(
            Method::GET,
            &p("/files/download/{id}"),
            "download_status",
            downloads::status,
        )
        .add(
            Method::GET,
            &p("/files/{id}/download"),
            "file_link",
            downloads::file_link,
        );
    let data = Table::new()
        .add(Method::PUT, data::PART_ROUTE, "data_put", data::put_part)
        .add(Method::GET, data::FILE_ROUTE, "data_get", data::get_file)
        .add(Method::GET, data::ZIP_ROUTE, "data_get", data::get_zip);
    let mut families = api.families;
    families.extend(data.families);
    Routes {
        api: api.router,
        data: data.router,
        families,
    }
}

/// Layer the routes, add the hooks and the fallbacks.
pub fn app(state: AppState, routes: Routes) -> Router {
    let api = routes.api.route_layer(middleware::from_fn_with_state(
        state.clone(),
        super::auth::require_hmac,
    ));
    api.merge(routes.data)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::faults::inject,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::stats::count,
        ))
        .merge(admin::routes())
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn unknown_endpoint() -> Failure {
    Failure::not_found("no such endpoint")
}

async fn method_not_allowed() -> Failure {
    Failure::new(405, "method not allowed on this endpoint")
}

/// One span and one log line (debug level; `vagonfs emulator` shows them by default) per
/// request; the query (presigned signatures) is left out.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let span = tracing::debug_span!("request", %method, %path);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::debug!(status, elapsed_ms, "handled"));
    response
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound(_) => Failure::not_found(message),
            StoreError::BadRequest(_) => Failure::bad_request(message),
            StoreError::Conflict(_) => Failure::new(409, message),
            StoreError::NoSpace(_) => Failure::new(507, message),
            StoreError::SizeMismatch(_) => Failure::new(422, message),
            StoreError::RootFolder(_) => Failure::new(super::reply::STATUS_ROOT_FOLDER, message),
            StoreError::ReadOnly(_) => Failure::forbidden(message),
            StoreError::Db(_) | StoreError::Io(_) | StoreError::Locked(_) => {
                tracing::error!(error = %message, "store failure");
                Failure::internal(message)
            }
        }
    }
}

/// `http://host:port` as the client reached us (the `Host` header), for presigned links; the
/// bound address when the header is missing or odd.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", state.addr),
    }
}

/// A path segment id.
fn path_id(raw: &str, what: &str) -> Result<u64, Failure> {
    parse_id(raw).ok_or_else(|| {
        Failure::bad_request(format!("{what} must be a positive integer, got {raw:?}"))
    })
}

fn parse_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Query parameters (the last value wins when one repeats).
struct QueryParams(HashMap<String, String>);

impl QueryParams {
    fn parse(raw: Option<&str>) -> Self {
        QueryParams(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// An optional id; empty means absent.
    fn id(&self, key: &str) -> Result<Option<u64>, Failure> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(raw) => parse_id(raw).map(Some).ok_or_else(|| {
                Failure::bad_request(format!("{key} must be an integer, got {raw:?}"))
            }),
        }
    }

    fn positive(&self, key: &str, default: u64) -> Result<u64, Failure> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(raw) => match parse_id(raw) {
                Some(n) if n >= 1 => Ok(n),
                _ => Err(Failure::bad_request(format!(
                    "{key} must be an integer of at least 1, got {raw:?}"
                ))),
            },
        }
    }

    /// `(page, per_page)` with the defaults and the cap.
    fn paging(&self) -> Result<(u64, u64), Failure> {
        let page = self.positive("page", 1)?;
        let per_page = self
            .positive("per_page", DEFAULT_PER_PAGE)?
            .min(u64::from(MAX_PER_PAGE));
        Ok((page, per_page))
    }

    fn search(&self) -> Option<&str> {
        self.get("q").filter(|q| !q.is_empty())
    }
}

/// `next_page` for a listing.
fn next_page(page: u64, per_page: u64, count: u64) -> Option<u64> {
    (page.saturating_mul(per_page) < count).then_some(page + 1)
}

/// A JSON object body.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::bad_request("request body must be a JSON object")),
        Err(e) => Err(Failure::bad_request(format!("invalid JSON body: {e}"))),
    }
}

/// An optional id field: a non-negative integer or a digit string; null means absent.
fn field_id(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, Failure> {
    value_id(map.get(key), key)
}

/// An id value (see [`field_id`]); `key` names it in the error.
fn value_id(value: Option<&Value>, key: &str) -> Result<Option<u64>, Failure> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| Failure::bad_request(format!("{key} must be a non-negative integer"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_id(s)
            .map(Some)
            .ok_or_else(|| Failure::bad_request(format!("{key} must be an integer, got {s:?}"))),
        Some(_) => Err(Failure::bad_request(format!("{key} must be an integer"))),
    }
}

fn field_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Failure> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::bad_request(format!("{key} must be a string"))),
    }
}

fn field_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, Failure> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Failure::bad_request(format!("{key} must be true or false"))),
    }
}

/// Run a store operation on a blocking thread.
async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&super::store::Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(result) => result.map_err(Failure::from),
        Err(e) => {
            tracing::error!(error = %e, "store task failed");
            Err(Failure::internal("internal error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_rules() {
        let q = QueryParams::parse(Some("page=2&per_page=500&q=&parent_id="));
        assert_eq!(q.paging().unwrap(), (2, 100));
        assert_eq!(q.search(), None);
        assert_eq!(q.id("parent_id").unwrap(), None);
        assert_eq!(QueryParams::parse(None).paging().unwrap(), (1, 20));
        for bad in ["page=0", "page=x", "per_page=0", "per_page=-1", "page=1.5"] {
            assert!(QueryParams::parse(Some(bad)).paging().is_err(), "{bad}");
        }
        assert!(
            QueryParams::parse(Some("parent_id=abc"))
                .id("parent_id")
                .is_err()
        );
        assert!(
            QueryParams::parse(Some("parent_id=-3"))
                .id("parent_id")
                .is_err()
        );
        assert_eq!(
            QueryParams::parse(Some("parent_id=7"))
                .id("parent_id")
                .unwrap(),
            Some(7)
        );
        assert_eq!(next_page(1, 100, 250), Some(2));
        assert_eq!(next_page(3, 100, 250), None);
        assert_eq!(next_page(1, 20, 20), None);
        assert_eq!(next_page(1, 20, 0), None);
    }

    #[test]
    fn json_fields() {
        let m =
            json_object(br#"{"a": 5, "b": "6", "c": -1, "d": "x", "e": null, "f": true}"#).unwrap();
        assert_eq!(field_id(&m, "a").unwrap(), Some(5));
        assert_eq!(field_id(&m, "b").unwrap(), Some(6));
        assert!(field_id(&m, "c").is_err());
        assert!(field_id(&m, "d").is_err());
        assert_eq!(field_id(&m, "e").unwrap(), None);
        assert_eq!(field_bool(&m, "f").unwrap(), Some(true));
        assert!(field_str(&m, "a").is_err());
        assert!(json_object(b"[1]").is_err());
        assert!(json_object(b"{").is_err());
        assert!(json_object(b"").is_err());
    }
}
