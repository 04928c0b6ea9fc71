//! Download streams handed out chunk by chunk: [`RangeState`] (a range, every resume of one
//! version through `If-Range`) and [`StreamState`] (from an offset to the end).
//!
//! Subtle cases: a resumed range whose validator differs is [`ApiError::ObjectChanged`] and ends
//! the stream at once (no retry); a chunk that made progress resets the attempt bound; an
//! open-ended stream ends cleanly at the object's end, and short only when the object's size
//! was known and not reached.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::data::{DataPlane, Opened, link_label, parse_link};
use super::decode::{skip_prefix, transport_error};
use crate::api::retry::{self, Budget};
use crate::api::{ApiError, ApiResult, ByteStream, RangeBody};

impl DataPlane {
    pub(super) async fn get_range_stream(
        &self,
        raw_url: &str,
        range: Range<u64>,
        expect: Option<&str>,
    ) -> ApiResult<RangeBody> {
        if range.start >= range.end {
            return Err(ApiError::InvalidRequest(format!("bad range {range:?}")));
        }
        let url = parse_link(raw_url)?;
        let label = link_label("GET", &url);
        let mut state = RangeState {
            plane: self.clone(),
            timeout: self.transfer_timeout(range.end - range.start),
            url,
            label,
            next: range.start,
            end: range.end,
            resp: None,
            validator: expect.map(str::to_string),
            budget: Budget::new(&self.retry).observed(self.on_retry.as_ref()),
            done: false,
        };
        // The first answer is awaited here, so that a refused link, a missing object or a
        // changed version is this call's error (the caller may replace the link and retry).
        let first = retry::run_observed(&self.retry, self.on_retry.as_ref(), &state.label, |_| {
            state.plane.open(
                &state.url,
                &state.label,
                state.next,
                Some(state.end),
                Some(state.timeout),
                state.validator.as_deref(),
            )
        })
        .await?;
        state.resp = Some(state.check(first)?);
        Ok(RangeBody {
            validator: state.validator.clone(),
            chunks: futures::stream::unfold(state, RangeState::step).boxed(),
        })
    }

    pub(super) async fn get_stream(&self, raw_url: &str, offset: u64) -> ApiResult<ByteStream> {
        let url = parse_link(raw_url)?;
        let label = link_label("GET", &url);
        let opened = retry::run_observed(&self.retry, self.on_retry.as_ref(), &label, |_| {
            self.open(&url, &label, offset, None, None, None)
        })
        .await?;
        let state = StreamState {
            plane: self.clone(),
            url,
            label,
            next: offset,
            opened: Some(opened),
            object_end: None,
            budget: Budget::new(&self.retry).observed(self.on_retry.as_ref()),
            done: false,
        };
        Ok(futures::stream::unfold(state, StreamState::step).boxed())
    }
}

/// A ranged download handed out chunk by chunk, resumed where it was cut with `If-Range`.
pub(super) struct RangeState {
    pub(super) plane: DataPlane,
    pub(super) url: url::Url,
    pub(super) label: String,
    /// Offset of the next byte to hand out, and the end of the range (exclusive).
    pub(super) next: u64,
    pub(super) end: u64,
    /// The response being read: its body, and the bytes to drop first (a 200 answer).
    pub(super) resp: Option<(reqwest::Response, u64)>,
    /// The version's validator: every resume must be of this version.
    pub(super) validator: Option<String>,
    pub(super) budget: Budget,
    pub(super) timeout: Duration,
    pub(super) done: bool,
}

impl RangeState {
    pub(super) async fn step(mut self) -> Option<(ApiResult<Bytes>, Self)> {
        loop {
            if self.done || self.next >= self.end {
                return None;
            }
            let (mut resp, mut skip) = match self.resp.take() {
                Some(r) => r,
                None => {
                    let opened = self
                        .plane
                        .open(
                            &self.url,
                            &self.label,
                            self.next,
                            Some(self.end),
                            Some(self.timeout),
                            self.validator.as_deref(),
                        )
                        .await;
                    match opened.and_then(|o| self.check(o)) {
                        Ok(r) => r,
                        Err(e) => match self.failed(e).await {
                            Some(fatal) => return Some((Err(fatal), self)),
                            None => continue,
                        },
                    }
                }
            };
            let err = match resp.chunk().await {
                Ok(Some(mut chunk)) => {
                    skip_prefix(&mut chunk, &mut skip);
                    let want = self.end - self.next;
                    if chunk.len() as u64 > want {
                        chunk.truncate(want as usize);
                    }
                    self.next += chunk.len() as u64;
                    if !chunk.is_empty() {
                        self.budget.made_progress();
                    }
                    if self.next < self.end {
                        self.resp = Some((resp, skip));
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    return Some((Ok(chunk), self));
                }
                Ok(None) => ApiError::Transport {
                    endpoint: self.label.clone(),
                    detail: format!("body ended {} bytes short", self.end - self.next),
                },
                Err(e) => transport_error(&self.label, e, self.timeout),
            };
            if let Some(fatal) = self.failed(err).await {
                return Some((Err(fatal), self));
            }
        }
    }

    /// Take what an attempt opened, checking that it is the version read so far.
    pub(super) fn check(&mut self, opened: Opened) -> ApiResult<(reqwest::Response, u64)> {
        let (resp, skip, validator) = opened.into_range(&self.label, self.next, self.end)?;
        match (&self.validator, validator) {
            (Some(known), Some(now)) if *known != now => {
                return Err(ApiError::ObjectChanged {
                    endpoint: self.label.clone(),
                });
            }
            (None, now) => self.validator = now,
            _ => {}
        }
        Ok((resp, skip))
    }

    /// Count a failure; wait before resuming, or give the final error (and end the stream).
    async fn failed(&mut self, err: ApiError) -> Option<ApiError> {
        self.resp = None;
        if matches!(err, ApiError::ObjectChanged { .. }) {
            self.done = true;
            return Some(err);
        }
        let fatal = wait_or_give_up(&mut self.budget, &self.label, err).await;
        self.done |= fatal.is_some();
        fatal
    }
}

/// A download stream that resumes where it was cut.
pub(super) struct StreamState {
    pub(super) plane: DataPlane,
    pub(super) url: url::Url,
    pub(super) label: String,
    /// Offset of the next byte to hand out.
    pub(super) next: u64,
    pub(super) opened: Option<Opened>,
    pub(super) object_end: Option<u64>,
    pub(super) budget: Budget,
    pub(super) done: bool,
}

impl StreamState {
    pub(super) async fn step(mut self) -> Option<(ApiResult<Bytes>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if self.object_end.is_some_and(|end| self.next >= end) {
                return None;
            }
            let opened = match self.opened.take() {
                Some(o) => o,
                None => match self
                    .plane
                    .open(&self.url, &self.label, self.next, None, None, None)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => match self.failed(e).await {
                        Some(fatal) => return Some((Err(fatal), self)),
                        None => continue,
                    },
                },
            };
            let (mut resp, mut skip) = match opened {
                Opened::AtEnd => return None,
                Opened::Body {
                    resp,
                    skip,
                    object_end,
                    ..
                } => {
                    if object_end.is_some() {
                        self.object_end = object_end;
                    }
                    (resp, skip)
                }
            };
            // Read until a non-empty chunk to hand out; keep the response for the next call.
            loop {
                match resp.chunk().await {
                    Ok(Some(mut chunk)) => {
                        skip_prefix(&mut chunk, &mut skip);
                        if chunk.is_empty() {
                            continue;
                        }
                        self.next += chunk.len() as u64;
                        self.budget.made_progress();
                        self.opened = Some(Opened::Body {
                            resp,
                            skip,
                            object_end: self.object_end,
                            validator: None,
                        });
                        return Some((Ok(chunk), self));
                    }
                    Ok(None) => {
                        if self.object_end.is_some_and(|end| self.next < end) {
                            let err = ApiError::Transport {
                                endpoint: self.label.clone(),
                                detail: "body ended short".into(),
                            };
                            if let Some(fatal) = self.failed(err).await {
                                return Some((Err(fatal), self));
                            }
                            break;
                        }
                        return None;
                    }
                    Err(e) => {
                        let err = transport_error(&self.label, e, self.plane.request_timeout);
                        if let Some(fatal) = self.failed(err).await {
                            return Some((Err(fatal), self));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Count a failure; wait before resuming, or give the final error (and end the stream).
    async fn failed(&mut self, err: ApiError) -> Option<ApiError> {
        self.opened = None;
        let fatal = wait_or_give_up(&mut self.budget, &self.label, err).await;
        self.done |= fatal.is_some();
        fatal
    }
}

/// Count a failure against `budget`: wait before the next attempt (`None`), or the final error.
async fn wait_or_give_up(budget: &mut Budget, label: &str, err: ApiError) -> Option<ApiError> {
    match budget.after_failure(label, err) {
        Ok(wait) => {
            tokio::time::sleep(wait).await;
            None
        }
        Err(fatal) => Some(fatal),
    }
}
