//! One ranged GET of a file's bytes through its download link: the link, the validator, the
//! refused-link retry, and how a failed GET is reported.
//!
//! Subtle cases handled here:
//! - a link the storage refuses (`ApiError::LinkRefused`, an expired or revoked presigned URL) is
//!   forgotten and replaced once per GET, and the GET resumed at the first byte not yet handed
//!   on; a second refusal is the GET's error;
//! - coherence: the first validator (`ETag`) seen for a version is remembered; a later GET
//!   (resumed or not) answering another one means the version is gone ([`FsError::Gone`]); a
//!   resumed GET also sends it as `If-Range` (see the API layer);
//! - a body that ends (without an error) before the range does is [`FsError::Inconsistent`];
//! - a cached link reporting another size than the listing is asked again before concluding;
//!   a fresh one that still does marks the version [`Bad::Mismatch`] and answers `Gone` (the
//!   listing is probably older than the file: the caller relists once, EIO after that).

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;

use crate::api::{ApiError, ApiErrorKind};

use super::links::Link;
use super::{Bad, FileVersion, FsError, FsResult, Reader, lock};

/// Validators remembered; past this, the memory is cleared.
const VALIDATORS_MAX: usize = 4096;

/// HTTP status of a Range the server cannot satisfy.
const HTTP_RANGE_NOT_SATISFIABLE: u16 = 416;

impl Reader {
    /// GET bytes `range` of `file` and hand the body to `sink` chunk by chunk, in order, each
    /// byte once: on a refused link the GET resumes where `sink` stopped getting bytes.
    pub(super) async fn stream_range(
        &self,
        file: FileVersion,
        range: Range<u64>,
        mut sink: impl FnMut(Bytes),
    ) -> FsResult<()> {
        let mut refreshed = false;
        let mut expect = self.validator(file);
        let mut at = range.start;
        loop {
            let from = at;
            if from >= range.end {
                return Ok(());
            }
            let link = self.link_for(file, false).await?;
            let failure = match self
                .api
                .get_range_stream(&link.url, from..range.end, expect.as_deref())
                .await
            {
                Ok(mut body) => {
                    self.note_validator(file, &body.validator);
                    if let (Some(known), Some(now)) = (&expect, &body.validator)
                        && known != now
                    {
                        return Err(FsError::Gone(format!(
                            "file {}: the server now holds another version",
                            file.id
                        )));
                    }
                    expect = body.validator.clone().or(expect);
                    let mut failed = None;
                    while let Some(chunk) = body.chunks.next().await {
                        match chunk {
                            Ok(c) => {
                                at += c.len() as u64;
                                sink(c);
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        None if at < range.end => {
                            return Err(FsError::Inconsistent(format!(
                                "file {}: the body of bytes {}..{} ended at {at}",
                                file.id, range.start, range.end
                            )));
                        }
                        None => return Ok(()),
                        Some(e) => e,
                    }
                }
                Err(e) => e,
            };
            if failure.kind() == ApiErrorKind::LinkRefused && !refreshed {
                refreshed = true;
                tracing::debug!(file = file.id, "download link refused; getting a fresh one");
                self.links.forget(file.id, Some(&link.url));
                continue;
            }
            return Err(range_error(file, &(from..range.end), failure));
        }
    }

    /// A link for `file` that agrees with its listed size (a fresh one when `fresh`).
    pub(super) async fn link_for(&self, file: FileVersion, fresh: bool) -> FsResult<Link> {
        let mut link = if fresh {
            self.links.fetch(file.id).await?
        } else {
            self.links.get(file.id).await?
        };
        if !fresh && link.size.is_some_and(|served| served != file.size) {
            // A cached link tells the size of its day: ask again before concluding.
            link = self.links.fetch(file.id).await?;
        }
        match link.size {
            Some(served) if served != file.size => {
                let why = format!(
                    "file {}: listed with {} bytes, the server serves {served}",
                    file.id, file.size
                );
                // The listing is probably older than the file: the first caller relists;
                // if the listing keeps saying so, the file is bad (EIO).
                self.mark_bad(file, Bad::Mismatch(why.clone()));
                Err(FsError::Gone(why))
            }
            _ => Ok(link),
        }
    }

    fn validator(&self, file: FileVersion) -> Option<String> {
        lock(&self.validators).get(&file).cloned()
    }

    fn note_validator(&self, file: FileVersion, validator: &Option<String>) {
        if let Some(v) = validator {
            let mut map = lock(&self.validators);
            if map.len() >= VALIDATORS_MAX {
                map.clear();
            }
            map.entry(file).or_insert_with(|| v.clone());
        }
    }
}

/// An error of a ranged GET, as the core reports it.
fn range_error(file: FileVersion, range: &Range<u64>, e: ApiError) -> FsError {
    let unsatisfiable = matches!(
        &e,
        ApiError::Status { status, .. } if *status == HTTP_RANGE_NOT_SATISFIABLE
    );
    if unsatisfiable || e.kind() == ApiErrorKind::Malformed {
        FsError::Inconsistent(format!(
            "file {}: listed with {} bytes but bytes {}..{} could not be served: {e}",
            file.id, file.size, range.start, range.end
        ))
    } else if e.kind() == ApiErrorKind::NotFound {
        FsError::Gone(format!("file {}: {e}", file.id))
    } else {
        FsError::Api(e)
    }
}
