//! The signed control plane: one [`ApiCall`] built once and re-sent as is on every attempt,
//! each attempt signed afresh over the full path and the exact body bytes.
//!
//! Subtle cases: a 2xx answer whose envelope carries an error `client_code` is that error (a
//! 3-digit code is the status meant, a 4-digit one rides on 400); the per-attempt timeout
//! shrinks with the retry budget but never below [`MIN_ATTEMPT_TIMEOUT`]; `call_tracking`
//! reports whether any attempt's outcome went unknown, which the follow-ups (directory create
//! 409, delete 404, complete 404/400) need; the uploads remembered for the complete check are
//! bounded ([`MAX_REMEMBERED_UPLOADS`], oldest forgotten).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header;

use super::decode::{read_bounded, read_prefix, retry_after, status_error, transport_error};
use super::{HttpFilesApi, MAX_ERROR_BODY, PendingUpload};
use crate::api::model::{self, JsonObject, WireError};
use crate::api::retry::{self, Attempt};
use crate::api::{
    API_PREFIX, ApiError, ApiResult, FileEntry, FilesApi, ListQuery, MAX_PER_PAGE, ObjectType,
    Space,
};

/// Shortest per-attempt timeout, even when the retry budget is nearly spent.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Uploads remembered for the complete-after-unknown-outcome check; oldest forgotten beyond.
const MAX_REMEMBERED_UPLOADS: usize = 4096;

/// One control-plane request, ready to be sent (and re-sent) as is.
pub(super) struct ApiCall {
    method: Method,
    /// Under the API prefix, e.g. `/files/42/complete`.
    path: String,
    query: Vec<(&'static str, String)>,
    /// Exact JSON bytes, signed and sent.
    body: Option<Bytes>,
    /// `METHOD /path`, for logs and errors.
    pub(super) label: String,
    /// The answer's body is not used (delete): anything that is not a JSON object reads as `{}`.
    pub(super) ignore_body: bool,
}

impl ApiCall {
    pub(super) fn new(method: Method, path: String) -> Self {
        let label = format!("{method} {path}");
        ApiCall {
            method,
            path,
            query: Vec::new(),
            body: None,
            label,
            ignore_body: false,
        }
    }

    pub(super) fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub(super) fn json(mut self, body: &impl serde::Serialize) -> ApiResult<Self> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ApiError::InvalidRequest(format!("cannot encode {}: {e}", self.label)))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }
}

impl HttpFilesApi {
    /// The full URL of an API path (base URL path + API prefix + `path`) with its query.
    fn url(&self, call: &ApiCall) -> url::Url {
        let mut url = self.base.clone();
        let full = format!(
            "{}{API_PREFIX}{}",
            self.base.path().trim_end_matches('/'),
            call.path
        );
        url.set_path(&full);
        url.set_query(None);
        url.set_fragment(None);
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One signed attempt; the success body, parsed.
    async fn send_once(&self, call: &ApiCall, attempt: &Attempt) -> ApiResult<JsonObject> {
        let url = self.url(call);
        let body = call.body.clone().unwrap_or_default();
        let auth = crate::api::auth::authorization(
            &self.creds.api_key,
            &self.creds.api_secret,
            call.method.as_str(),
            url.path(),
            &body,
        );
        let timeout = self
            .opts
            .request_timeout
            .min(attempt.remaining.max(MIN_ATTEMPT_TIMEOUT));
        let mut req = self
            .data
            .client
            .request(call.method.clone(), url)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .timeout(timeout);
        if call.body.is_some() {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        tracing::debug!(call = %call.label, attempt = attempt.number, "request");
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&call.label, e, timeout))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        tracing::debug!(call = %call.label, status = status.as_u16(), "response");
        if !status.is_success() {
            let body = read_prefix(resp, MAX_ERROR_BODY).await;
            return Err(status_error(&call.label, status, &headers, &body));
        }
        let bytes = read_bounded(resp, model::MAX_JSON_BODY, &call.label, timeout).await?;
        let obj = match model::parse_object(&bytes) {
            Ok(obj) => obj,
            Err(_) if call.ignore_body => JsonObject::new(),
            Err(e) => return Err(Self::malformed(&call.label, e)),
        };
        if let Some(err) = model::envelope_error(&obj) {
            let code = err.client_code.unwrap_or(i64::from(status.as_u16()));
            // A 3-digit error code is the status the server meant; a 4-digit one rides on 400.
            let meant = u16::try_from(code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .unwrap_or(400);
            return Err(ApiError::Status {
                endpoint: call.label.clone(),
                status: meant,
                client_code: err.client_code,
                message: err.message,
                retry_after: retry_after(&headers),
            });
        }
        Ok(obj)
    }

    /// A call with retries; the success body, parsed.
    pub(super) async fn call(&self, call: &ApiCall) -> ApiResult<JsonObject> {
        let observer = self.opts.on_retry.as_ref();
        retry::run_observed(&self.opts.retry, observer, &call.label, |a| async move {
            self.send_once(call, &a).await
        })
        .await
    }

    /// A call with retries, and whether an attempt's outcome went unknown on the way.
    pub(super) async fn call_tracking(&self, call: &ApiCall) -> (ApiResult<JsonObject>, bool) {
        let unknown = AtomicBool::new(false);
        let observer = self.opts.on_retry.as_ref();
        let result = retry::run_observed(&self.opts.retry, observer, &call.label, |a| {
            unknown.store(a.outcome_unknown, Ordering::Relaxed);
            async move { self.send_once(call, &a).await }
        })
        .await;
        (result, unknown.load(Ordering::Relaxed))
    }

    fn malformed(label: &str, e: WireError) -> ApiError {
        ApiError::Malformed {
            endpoint: label.to_string(),
            detail: e.0,
        }
    }

    pub(super) fn decode<T>(label: &str, r: Result<T, WireError>) -> ApiResult<T> {
        r.map_err(|e| Self::malformed(label, e))
    }

    pub(super) fn list_call(&self, space: Space, query: &ListQuery) -> ApiCall {
        let (path, machine_filter) = match space {
            Space::Shared => ("/files".to_string(), None),
            Space::Machine(id) => (format!("/machines/{id}/files"), None),
            Space::Recordings { machine } => (self.opts.recordings_path.clone(), machine),
        };
        let per_page = clamp_per_page(query.per_page);
        let mut call = ApiCall::new(Method::GET, path);
        if let Some(m) = machine_filter {
            call = call.query("machine_id", m);
        }
        if let Some(p) = query.parent_id {
            call = call.query("parent_id", p);
        }
        call = call
            .query("page", query.page.max(1))
            .query("per_page", per_page);
        if let Some(q) = query.search.as_deref().filter(|q| !q.is_empty()) {
            call = call.query("q", q);
        }
        call
    }

    /// The entry named exactly `name` of kind `kind` in a folder, by a search listing.
    pub(super) async fn find_by_name(
        &self,
        space: Space,
        parent_id: Option<u64>,
        name: &str,
        kind: ObjectType,
    ) -> ApiResult<Option<FileEntry>> {
        crate::api::paging::find_by_name(self, space, parent_id, name, Some(kind)).await
    }

    pub(super) fn remember_upload(&self, id: u64, upload: PendingUpload) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.len() >= MAX_REMEMBERED_UPLOADS
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, u)| u.created)
                .map(|(k, _)| *k)
        {
            pending.remove(&oldest);
        }
        pending.insert(id, upload);
    }

    pub(super) fn take_upload(&self, id: u64) -> Option<PendingUpload> {
        self.pending.lock().ok()?.remove(&id)
    }

    /// After a complete whose first outcome was lost answered 404/400: is the file there, whole?
    pub(super) async fn completed_anyway(
        &self,
        file_id: u64,
        upload: Option<&PendingUpload>,
    ) -> bool {
        match upload {
            Some(u) => match self
                .find_by_name(u.space, u.parent_id, &u.name, ObjectType::File)
                .await
            {
                Ok(Some(e)) => e.id == file_id && e.size == u.size,
                _ => false,
            },
            None => self.file_link(file_id).await.is_ok(),
        }
    }
}

/// `per_page` as the API takes it: 1 to [`MAX_PER_PAGE`]; 0 means "as many as allowed".
pub(super) fn clamp_per_page(per_page: u32) -> u32 {
    match per_page {
        0 => MAX_PER_PAGE,
        n => n.min(MAX_PER_PAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_RECORDINGS_PATH;
    use super::super::tests::api;
    use super::*;

    #[test]
    fn urls_keep_the_base_path_and_prefix() {
        let a = api("https://api.vagon.io");
        let call = ApiCall::new(Method::GET, "/files".into())
            .query("q", "a b&c")
            .query("page", 2);
        let u = a.url(&call);
        assert_eq!(u.path(), "/organization-management/v1/files");
        assert_eq!(u.query(), Some("q=a+b%26c&page=2"));
        let b = api("http://127.0.0.1:9/proxy/");
        assert_eq!(
            b.url(&call).path(),
            "/proxy/organization-management/v1/files"
        );
    }

    #[test]
    fn list_calls_by_space() {
        let a = api("https://h");
        let q = ListQuery {
            parent_id: Some(7),
            page: 0,
            per_page: 500,
            search: Some("x".into()),
        };
        let call = a.list_call(Space::Machine(3), &q);
        assert_eq!(call.path, "/machines/3/files");
        assert_eq!(
            call.query,
            vec![
                ("parent_id", "7".into()),
                ("page", "1".into()),
                ("per_page", "100".into()),
                ("q", "x".into())
            ]
        );
        let call = a.list_call(
            Space::Recordings { machine: Some(4) },
            &ListQuery::default(),
        );
        assert_eq!(call.path, DEFAULT_RECORDINGS_PATH);
        assert_eq!(call.query[0], ("machine_id", "4".to_string()));
    }
}
