//! Download links: fetched once per file, reused for most of their lifetime, never logged.
//!
//! Subtle cases handled here:
//! - a link is fetched with `file_link`, falling back to `POST /files/download` when that
//!   endpoint answers not-found/bad-request (a server without it); both answering not-found
//!   means the object is gone;
//! - reuse: a link is used until [`LINK_REUSE_FRACTION`] of its lifetime has passed, whatever
//!   the lifetime: the URL's own expiry when it says (`expires`/`exp` in unix seconds or
//!   milliseconds or RFC 3339, or AWS `X-Amz-Date` + `X-Amz-Expires`), else
//!   [`ASSUMED_LINK_LIFETIME`]. A 5 s link is reused for 4 s, a 15 min one for 12 min;
//! - an open asks for a fresh link when the cached one is older than [`OPEN_REVALIDATE`]: the
//!   answer says whether the object still exists with the listed size, so a file replaced
//!   elsewhere is noticed at open, not in the middle of a read;
//! - fetches are single-flight per file id, and run in their own task: a waiter that gives up
//!   (a bounded open) does not cancel them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::api::{ApiErrorKind, DownloadTarget, FilesApi};

use super::super::flight::SingleFlight;
use super::super::{FsError, FsResult, lock};

/// How long a link lives when its URL does not say (the service's default is 15 minutes).
pub const ASSUMED_LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Share of a link's lifetime during which it is reused (the rest is room for clock skew and
/// slow requests).
pub const LINK_REUSE_FRACTION: f64 = 0.8;

/// An open fetches a new link when the cached one is older than this, to learn whether the
/// object is still there: a new open sees a file replaced elsewhere at most this long after.
pub const OPEN_REVALIDATE: Duration = Duration::from_secs(3);

/// An `expires` value above this is milliseconds, not seconds (as seconds it would be in the
/// year 5138; as milliseconds it is 1973).
const EXPIRES_MS_THRESHOLD: u64 = 100_000_000_000;

/// Cached links beyond this count trigger a sweep of the expired ones.
const LINKS_SWEEP_AT: usize = 4096;

/// A download link and the size the server gave with it.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) url: String,
    pub(super) size: Option<u64>,
}

struct CachedLink {
    link: Link,
    fetched: Instant,
    until: Instant,
}

/// The link cache of one mount.
pub(super) struct Links {
    api: Arc<dyn FilesApi>,
    map: Arc<Mutex<HashMap<u64, CachedLink>>>,
    flight: SingleFlight<u64, Link>,
}

impl Links {
    pub(super) fn new(api: Arc<dyn FilesApi>) -> Self {
        Links {
            api,
            map: Arc::new(Mutex::new(HashMap::new())),
            flight: SingleFlight::new(),
        }
    }

    /// A usable link for file `id`: cached, or fetched.
    pub(super) async fn get(&self, id: u64) -> FsResult<Link> {
        let cached = lock(&self.map)
            .get(&id)
            .filter(|c| Instant::now() < c.until)
            .map(|c| c.link.clone());
        match cached {
            Some(link) => Ok(link),
            None => self.fetch(id).await,
        }
    }

    /// Whether a link of file `id` was fetched within [`OPEN_REVALIDATE`], is still usable, and
    /// agrees with the listed `size`.
    pub(super) fn fresh_for_open(&self, id: u64, size: u64) -> bool {
        let now = Instant::now();
        lock(&self.map).get(&id).is_some_and(|c| {
            now < c.until
                && now.duration_since(c.fetched) < OPEN_REVALIDATE
                && c.link.size.is_none_or(|s| s == size)
        })
    }

    /// Ask the server for a link of file `id` (joining a request already running).
    pub(super) async fn fetch(&self, id: u64) -> FsResult<Link> {
        let api = Arc::clone(&self.api);
        let map = Arc::clone(&self.map);
        self.flight
            .run(id, move || async move {
                let link = fetch_link(api.as_ref(), id).await?;
                let now = Instant::now();
                let until = link_deadline(&link.url, SystemTime::now(), now);
                let mut map = lock(&map);
                if map.len() >= LINKS_SWEEP_AT {
                    map.retain(|_, c| now < c.until);
                }
                map.insert(
                    id,
                    CachedLink {
                        link: link.clone(),
                        fetched: now,
                        until,
                    },
                );
                Ok(link)
            })
            .await
    }

    /// Drop the cached link of file `id` (only if it is still `url`, when given: another read
    /// may already have replaced it).
    pub(super) fn forget(&self, id: u64, url: Option<&str>) {
        let mut map = lock(&self.map);
        if url.is_none()
            || map
                .get(&id)
                .is_some_and(|c| Some(c.link.url.as_str()) == url)
        {
            map.remove(&id);
        }
    }

    pub(super) async fn idle(&self) {
        self.flight.idle().await;
    }
}

/// `GET /files/{id}/download`, else `POST /files/download` for that one file.
async fn fetch_link(api: &dyn FilesApi, id: u64) -> FsResult<Link> {
    match api.file_link(id).await {
        Ok(l) => Ok(Link {
            url: l.url,
            size: l.size,
        }),
        Err(e) if matches!(e.kind(), ApiErrorKind::NotFound | ApiErrorKind::BadRequest) => {
            tracing::debug!(
                file = id,
                "file link endpoint failed ({e}); requesting a download"
            );
            let d = match api.request_download(&DownloadTarget::Files(vec![id])).await {
                Ok(d) => d,
                Err(e) if e.kind() == ApiErrorKind::NotFound => {
                    return Err(FsError::Gone(format!(
                        "file {id} is no longer on the server"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            match d.url {
                Some(url) => Ok(Link { url, size: d.size }),
                None => Err(FsError::Inconsistent(format!(
                    "the server gave no direct download link for file {id}"
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Until when a link fetched now may be used: [`LINK_REUSE_FRACTION`] of its lifetime.
pub(super) fn link_deadline(url: &str, now_sys: SystemTime, now: Instant) -> Instant {
    let lifetime = match url_expiry(url) {
        Some(expires) => expires.duration_since(now_sys).unwrap_or(Duration::ZERO),
        None => ASSUMED_LINK_LIFETIME,
    };
    now + lifetime.mul_f64(LINK_REUSE_FRACTION)
}

/// When a presigned URL says it expires, if it says so in a way we understand: an `expires` or
/// `exp` query parameter (unix seconds or milliseconds, or RFC 3339), or AWS SigV4's
/// `X-Amz-Date` + `X-Amz-Expires` (seconds after the signing time).
fn url_expiry(url: &str) -> Option<SystemTime> {
    let parsed = url::Url::parse(url).ok()?;
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(value) = param("expires").or_else(|| param("exp")) {
        if let Ok(n) = value.parse::<u64>() {
            let since_epoch = if n > EXPIRES_MS_THRESHOLD {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n)
            };
            return SystemTime::UNIX_EPOCH.checked_add(since_epoch);
        }
        return chrono::DateTime::parse_from_rfc3339(&value)
            .ok()
            .map(SystemTime::from);
    }
    let signed = param("x-amz-date")?;
    let lifetime: u64 = param("x-amz-expires")?.parse().ok()?;
    let signed = chrono::NaiveDateTime::parse_from_str(&signed, "%Y%m%dT%H%M%SZ").ok()?;
    SystemTime::from(signed.and_utc()).checked_add(Duration::from_secs(lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_from_the_url() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Instant::now();
        let secs = format!("http://h/x?sig=abc&expires={}", 1_800_000_000 + 100);
        assert_eq!(link_deadline(&secs, now, at), at + Duration::from_secs(80));
        let ms = format!("http://h/x?Expires={}", (1_800_000_000u64 + 100) * 1000);
        assert_eq!(link_deadline(&ms, now, at), at + Duration::from_secs(80));
        let rfc = "http://h/x?expires=2027-01-15T08:00:00Z";
        assert_eq!(
            url_expiry(rfc),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        assert_eq!(
            link_deadline("http://h/x?a=1", now, at),
            at + Duration::from_secs(12 * 60)
        );
        // A 5 s link is reused for 4 s (a fixed margin would swallow it whole).
        let emulator = format!("http://h/x?exp={}&sig=ab", (1_800_000_000u64 + 5) * 1000);
        assert_eq!(
            link_deadline(&emulator, now, at),
            at + Duration::from_secs(4)
        );
        let aws = "https://b.s3.amazonaws.com/k?X-Amz-Date=20270115T080000Z&X-Amz-Expires=300";
        assert_eq!(link_deadline(aws, now, at), at + Duration::from_secs(240));
        let past = "http://h/x?expires=5";
        assert_eq!(link_deadline(past, now, at), at);
    }
}
