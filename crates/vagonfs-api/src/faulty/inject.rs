//! How a call goes through the wrapper: the decision (latency, hold, fault) taken under one
//! lock, then the wait, the gate, the inner call and the fault before or after it.
//!
//! Subtle cases: a call is counted in flight until its future ends or is dropped
//! ([`InFlight`]); a scheduled fault wins over a probability; a predicate rule is checked
//! first; a fault `After` runs the inner call and drops its answer; a cut stream ends with a
//! transport error after the byte limit; the variants change answers within what the client
//! must tolerate (no part URL for an empty file, one URL too many, pages repeated or shuffled).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::RngExt;
use tokio::sync::Semaphore;

use super::fault::*;
use super::{ApiMethod, FaultyFilesApi};
use crate::api::{
    ApiError, ApiResult, ByteStream, Capacity, Completed, CompletedPart, CreateRequest, Created,
    DownloadLink, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi, ListQuery,
    LiveEntry, MachinePage, ObjectType, RangeBody, Space,
};

/// Counts a call out of flight even when its future is dropped.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do for one call.
pub(super) struct Decision {
    latency: Duration,
    fault: Option<(ApiError, FaultTiming)>,
    gate: Option<Arc<Semaphore>>,
}

impl<A: FilesApi + ?Sized> FaultyFilesApi<A> {
    fn decide(&self, call: &Call<'_>) -> Decision {
        let method = call.method;
        let mut st = self.state();
        let latency = st.latency.get(&method).copied().unwrap_or(st.latency_all);
        let mut fault = None;
        let picked = st
            .filtered
            .get(&method)
            .filter(|(filter, _)| filter(call))
            .map(|(_, f)| f.to_error(method));
        if let Some(err) = picked {
            fault = Some((err, FaultTiming::Before));
        } else if let Some(queue) = st.scheduled.get_mut(&method)
            && let Some(s) = queue.front_mut()
        {
            if s.skip > 0 {
                s.skip -= 1;
            } else {
                s.remaining -= 1;
                fault = Some((s.fault.to_error(method), s.timing));
                if s.remaining == 0 {
                    queue.pop_front();
                }
            }
        } else if let Some(rule) = st
            .per_method
            .get(&method)
            .or(st.all_methods.as_ref())
            .cloned()
            && st.rng.random_bool(rule.probability)
        {
            fault = Some((rule.fault.to_error(method), rule.timing));
        }
        let c = st.counters.entry(method).or_default();
        c.calls += 1;
        if fault.is_some() {
            c.injected += 1;
            tracing::debug!(method = method.name(), "injecting a fault");
        }
        let gate = st
            .holds
            .get(&method)
            .filter(|h| h.target.is_none() || h.target == call.target)
            .map(|h| Arc::clone(&h.gate));
        Decision {
            latency,
            fault,
            gate,
        }
    }

    /// Run `call` under the faults set for its method.
    async fn run<T, Fut>(&self, call: Call<'_>, f: impl FnOnce() -> Fut) -> ApiResult<T>
    where
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let i = call.method.index();
        let d = self.decide(&call);
        let now = self.in_flight[i].fetch_add(1, Ordering::AcqRel) + 1;
        let _flight = InFlight(&self.in_flight[i]);
        self.max_in_flight[i].fetch_max(now, Ordering::AcqRel);
        self.arrived.notify_waiters();
        if !d.latency.is_zero() {
            tokio::time::sleep(d.latency).await;
        }
        if let Some(gate) = d.gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        match d.fault {
            None => f().await,
            Some((err, FaultTiming::Before)) => Err(err),
            Some((err, FaultTiming::After)) => {
                let _lost = f().await;
                Err(err)
            }
        }
    }
}

#[async_trait]
impl<A: FilesApi + ?Sized> FilesApi for FaultyFilesApi<A> {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        self.run(Call::new(ApiMethod::ListMachines), || {
            self.inner.list_machines(page, per_page)
        })
        .await
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let call = Call::new(ApiMethod::ListFiles)
            .target(query.parent_id.unwrap_or(0))
            .space(space);
        if self.variant(Variant::ListingRepeatsFirstPage) {
            let first = ListQuery {
                page: 1,
                ..query.clone()
            };
            let mut page = self
                .run(call, || self.inner.list_files(space, &first))
                .await?;
            page.page = query.page;
            page.next_page = Some(query.page.max(1) + 1);
            return Ok(page);
        }
        let mut page = self
            .run(call, || self.inner.list_files(space, query))
            .await?;
        if self.variant(Variant::ListingRepeatsPage) {
            page.next_page = Some(page.page);
        }
        if self.variant(Variant::ListingReversed) {
            page.entries.reverse();
        }
        Ok(page)
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let call = Call::new(ApiMethod::Create).space(req.space);
        let mut created = self.run(call, || self.inner.create(req)).await?;
        if req.object_type == ObjectType::File {
            if req.size == Some(0) && self.variant(Variant::NoPartUrlForEmptyFile) {
                let urls = std::mem::take(&mut created.upload_urls);
                self.state().dropped_urls.insert(created.id, urls);
            }
            if self.variant(Variant::ExtraPartUrl) {
                let extra = format!("{}-extra", created.upload_urls.last().map_or("", |u| u));
                created.upload_urls.push(extra);
            }
        }
        Ok(created)
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        let call = Call::new(ApiMethod::UploadPart).url(url);
        self.run(call, || self.inner.upload_part(url, body)).await
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let call = Call::new(ApiMethod::Complete).target(file_id);
        let dropped = match parts.is_empty() {
            true => self.state().dropped_urls.remove(&file_id),
            false => None,
        };
        let Some(urls) = dropped else {
            return self.run(call, || self.inner.complete(file_id, parts)).await;
        };
        // The variant's server needs no part for an empty file: send the wrapped one its
        // empty parts here, unseen by the counters.
        self.run(call, || async {
            let mut empty = Vec::new();
            for (i, url) in urls.iter().enumerate() {
                let etag = self.inner.upload_part(url, Bytes::new()).await?;
                empty.push(CompletedPart {
                    part_number: i as u32 + 1,
                    etag,
                });
            }
            self.inner.complete(file_id, &empty).await
        })
        .await
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        let call = Call::new(ApiMethod::Delete).target(file_id);
        self.run(call, || self.inner.delete(file_id)).await
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        self.run(Call::new(ApiMethod::RequestDownload), || {
            self.inner.request_download(target)
        })
        .await
    }

    async fn download_status(&self, download_id: u64) -> ApiResult<DownloadStatus> {
        let call = Call::new(ApiMethod::DownloadStatus).target(download_id);
        self.run(call, || self.inner.download_status(download_id))
            .await
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        let call = Call::new(ApiMethod::FileLink).target(file_id);
        self.run(call, || self.inner.file_link(file_id)).await
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        self.run(Call::new(ApiMethod::Capacity), || {
            self.inner.capacity(machine_id)
        })
        .await
    }

    async fn list_content(&self, machine_id: u64, path: &str) -> ApiResult<Vec<LiveEntry>> {
        let call = Call::new(ApiMethod::ListContent).target(machine_id);
        self.run(call, || self.inner.list_content(machine_id, path))
            .await
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        let call = Call::new(ApiMethod::GetRange).url(url);
        self.run(call, || self.inner.get_range(url, range)).await
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let call = Call::new(ApiMethod::GetStream).url(url);
        let stream = self
            .run(call, || self.inner.get_stream(url, offset))
            .await?;
        let Some(limit) = self.state().cut_streams_after else {
            return Ok(stream);
        };
        Ok(cut_after(stream, limit))
    }

    async fn get_range_stream(
        &self,
        url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        let call = Call::new(ApiMethod::GetRange).url(url);
        self.run(call, || self.inner.get_range_stream(url, range, expect))
            .await
    }
}

/// A stream that ends with a transport error once `limit` bytes went through.
fn cut_after(stream: ByteStream, limit: u64) -> ByteStream {
    futures::stream::unfold(
        (stream, 0u64, false),
        move |(mut s, sent, done)| async move {
            if done {
                return None;
            }
            if sent >= limit {
                let err = ApiError::Transport {
                    endpoint: "get_stream (injected)".into(),
                    detail: format!("injected: stream cut after {sent} bytes"),
                };
                return Some((Err(err), (s, sent, true)));
            }
            match s.next().await? {
                Ok(chunk) => {
                    let room = (limit - sent).min(chunk.len() as u64) as usize;
                    let chunk = chunk.slice(..room);
                    let sent = sent + room as u64;
                    Some((Ok(chunk), (s, sent, false)))
                }
                Err(e) => Some((Err(e), (s, sent, true))),
            }
        },
    )
    .boxed()
}
