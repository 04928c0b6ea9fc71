//! Whole listings over paginated endpoints, and waiting for background downloads.
//!
//! [`collect_pages`] reads every page of a listing, asked [`PAGE_SIZE`] at a time. Page 1 comes
//! first; when it carries `count`, the remaining pages are known and fetched in parallel, at
//! most [`PAGES_IN_FLIGHT`] at once, and consumed in page order (so the result keeps the
//! server's order). Without `count` it follows `next_page` one page after the other. 10,000
//! entries at a 20 ms round trip cost one round trip for page 1 and two for the 99 others (50,
//! then 49). Many pages in flight means many connections over HTTP/1.1 (one handshake each, the
//! first time); over HTTP/2, which the client offers, they share one connection.
//! [`collect_pages_observed`] hands each page's new items to an observer as they are taken (in
//! page order), so a lookup of one name can be answered by the page that holds it.
//! [`only_page`] turns a page 1 fetched already (the mount's probe) into the whole listing when
//! no page follows, through the same guards.
//!
//! A buggy or hostile server cannot make it loop forever or grow without bound; paging *stops*
//! (with what was gathered and a reason, [`Collected::stopped`]) when:
//! - a `next_page` does not move forward (≤ the page just read);
//! - a page's items (ids, in order) are exactly the previous page's ("server repeated a page",
//!   e.g. a server ignoring `page`);
//! - more than [`MAX_EMPTY_PAGES_IN_A_ROW`] empty pages still announce a next page, or more than
//!   [`MAX_PAGES`] pages were read.
//!
//! What a stop means is the caller's [`OnStop`] policy: [`OnStop::Fail`] turns it into an error
//! (a client must not act on a partial listing: [`list_all`], [`list_all_machines`],
//! [`find_by_name`], which decides whether a server file exists before an upload overwrites or
//! recreates it); [`OnStop::Warn`] keeps the partial listing with a warning (a view of a folder,
//! like the filesystem's listing cache). Every walk over pages in the project goes through
//! [`collect_pages`].
//!
//! A `count` that is wrong is survived: too small, the last page fetched still announces a
//! `next_page` and paging goes on one page at a time from there; too large, the pages past the
//! end come back empty (and more than [`MAX_EMPTY_PAGES_IN_A_ROW`] of them that still announce
//! more stop it).
//!
//! Offset pagination over a folder that changes while it is read can show an item on two pages
//! (an insert before it shifts it); each id is kept once, first sighting kept. (An item can
//! equally be missed by a delete during the listing; no client can see that.)
//!
//! [`wait_for_download`] polls a background download (zip) with growing intervals until it is
//! ready or failed, bounded by `max_wait`.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::time::Instant;

use super::{
    ApiError, ApiResult, DownloadLink, DownloadState, DownloadTarget, FileEntry, FilePage,
    FilesApi, ListQuery, MAX_PER_PAGE, Machine, ObjectType, Space,
};

/// Items asked per page: the most the API serves.
pub const PAGE_SIZE: u32 = MAX_PER_PAGE;
/// Most pages read in one listing (10 million entries at 100 a page).
pub const MAX_PAGES: u32 = 100_000;
/// Empty pages that still announce a next page, tolerated in a row.
pub const MAX_EMPTY_PAGES_IN_A_ROW: u32 = 3;
/// Pages of one listing requested at once once page 1 told the count: the 99 pages after the
/// first of a 10,000-entry folder take two round trips (the bound is four in all).
pub const PAGES_IN_FLIGHT: usize = 50;
/// First wait between two download status polls.
pub const DOWNLOAD_POLL_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two download status polls.
pub const DOWNLOAD_POLL_MAX: Duration = Duration::from_secs(5);

/// One page as the pager needs it: the items, the announced next page and the total count.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page: Option<u32>,
    /// Items on all pages, when the server said.
    pub count: Option<u64>,
}

/// Every item of a listing, and why paging stopped before the server's last page, if it did.
#[derive(Debug, Clone)]
pub struct Collected<T> {
    /// Each id once, in the server's order.
    pub items: Vec<T>,
    pub stopped: Option<StopReason>,
    /// Pages requested.
    pub pages: u32,
}

/// What a listing that the pager had to stop early (see the module note) gives its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// An error ([`ApiError::Malformed`]): for decisions that must not rest on part of a folder.
    Fail,
    /// What was gathered, with a warning in the log: for views of a folder.
    Warn,
}

impl<T> Collected<T> {
    /// The items under `policy`; `what` names the listing in the error or the warning.
    pub fn finish(self, what: &str, policy: OnStop) -> ApiResult<Vec<T>> {
        match (self.stopped, policy) {
            (None, _) => Ok(self.items),
            (Some(why), OnStop::Fail) => Err(malformed(what, why.to_string())),
            (Some(why), OnStop::Warn) => {
                tracing::warn!(
                    listing = what,
                    pages = self.pages,
                    "listing stopped early: {why}"
                );
                Ok(self.items)
            }
        }
    }
}

/// Why a listing stopped before the server's last page (the guards of the module note).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    #[error("the server repeated a page (page {0})")]
    RepeatedPage(u32),
    #[error("next_page {next} does not move past page {page}")]
    NoProgress { next: u32, page: u32 },
    #[error("more than {MAX_PAGES} pages")]
    TooManyPages,
    #[error("{0} empty pages in a row that announce more")]
    EmptyPages(u32),
}

/// The guards of the module note, applied page after page in page order.
struct Guard<T> {
    id_of: fn(&T) -> u64,
    pages_read: u32,
    empty_in_a_row: u32,
    previous_ids: Vec<u64>,
    seen: HashSet<u64>,
    items: Vec<T>,
}

impl<T> Guard<T> {
    fn new(id_of: fn(&T) -> u64) -> Self {
        Guard {
            id_of,
            pages_read: 0,
            empty_in_a_row: 0,
            previous_ids: Vec::new(),
            seen: HashSet::new(),
            items: Vec::new(),
        }
    }

    /// Take page `page`; `Err` says why paging must stop (its new items are kept).
    fn take(&mut self, page: u32, got: Page<T>) -> Result<(), StopReason> {
        self.pages_read += 1;
        let ids: Vec<u64> = got.items.iter().map(self.id_of).collect();
        if !ids.is_empty() && ids == self.previous_ids {
            return Err(StopReason::RepeatedPage(page));
        }
        for item in got.items {
            if self.seen.insert((self.id_of)(&item)) {
                self.items.push(item);
            }
        }
        self.previous_ids = ids;
        if let Some(next) = got.next_page {
            if next <= page {
                return Err(StopReason::NoProgress { next, page });
            }
            if self.pages_read >= MAX_PAGES {
                return Err(StopReason::TooManyPages);
            }
            if self.previous_ids.is_empty() {
                self.empty_in_a_row += 1;
                if self.empty_in_a_row > MAX_EMPTY_PAGES_IN_A_ROW {
                    return Err(StopReason::EmptyPages(self.empty_in_a_row));
                }
            } else {
                self.empty_in_a_row = 0;
            }
        }
        Ok(())
    }

    fn done(self, stopped: Option<StopReason>) -> Collected<T> {
        Collected {
            items: self.items,
            stopped,
            pages: self.pages_read,
        }
    }
}

/// Every page of a listing through `fetch(page)`, as the module note says: in parallel once
/// page 1 gives the count, else one after the other.
pub async fn collect_pages<T, F, Fut>(id_of: fn(&T) -> u64, fetch: F) -> ApiResult<Collected<T>>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = ApiResult<Page<T>>>,
{
    collect_pages_observed(id_of, fetch, |_: &[T]| {}).await
}

/// [`collect_pages`], telling `on_page` the new items of each page as it is taken (in page
/// order, de-duplicated), so a caller that needs one item need not wait for the last page.
pub async fn collect_pages_observed<T, F, Fut, O>(
    id_of: fn(&T) -> u64,
    fetch: F,
    mut on_page: O,
) -> ApiResult<Collected<T>>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = ApiResult<Page<T>>>,
    O: FnMut(&[T]),
{
    let mut guard = Guard::new(id_of);
    let first = fetch(1).await?;
    let per_page = first.items.len() as u64;
    let (count, mut next) = (first.count, first.next_page);
    let taken = guard.take(1, first);
    on_page(&guard.items);
    if let Err(why) = taken {
        return Ok(guard.done(Some(why)));
    }
    if let (Some(count), Some(2)) = (count, next)
        && per_page > 0
    {
        let last = count.div_ceil(per_page).clamp(2, u64::from(MAX_PAGES)) as u32;
        let mut pages = stream::iter(2..=last)
            .map(|p| {
                let fut = fetch(p);
                async move { (p, fut.await) }
            })
            .buffered(PAGES_IN_FLIGHT);
        while let Some((p, got)) = pages.next().await {
            let got = got?;
            next = got.next_page;
            let before = guard.items.len();
            let taken = guard.take(p, got);
            on_page(&guard.items[before..]);
            if let Err(why) = taken {
                return Ok(guard.done(Some(why)));
            }
        }
        // A count that was too small: the last page still announces more.
    }
    while let Some(page) = next {
        let got = fetch(page).await?;
        next = got.next_page;
        let before = guard.items.len();
        let taken = guard.take(page, got);
        on_page(&guard.items[before..]);
        if let Err(why) = taken {
            return Ok(guard.done(Some(why)));
        }
    }
    Ok(guard.done(None))
}

/// Page 1 of a folder, fetched already (the mount's probe asks the root's first page), as the
/// whole listing when it is the only page (`next_page` absent), through the same guards as
/// [`collect_pages`] (each id once); `None` when more pages follow.
pub fn only_page(first: FilePage) -> Option<Collected<FileEntry>> {
    if first.next_page.is_some() {
        return None;
    }
    let mut guard = Guard::new(|e: &FileEntry| e.id);
    let stopped = guard
        .take(
            1,
            Page {
                items: first.entries,
                next_page: None,
                count: first.count,
            },
        )
        .err();
    Some(guard.done(stopped))
}

fn malformed(what: &str, detail: String) -> ApiError {
    ApiError::Malformed {
        endpoint: format!("listing {what}"),
        detail,
    }
}

/// Every page of one folder of `space` (`parent` `None` = the root), optionally filtered by the
/// server-side search `q`; a stop of the pager is reported, not an error.
pub async fn folder_pages(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
) -> ApiResult<Collected<FileEntry>> {
    folder_pages_observed(api, space, parent, search, |_: &[FileEntry]| {}).await
}

/// [`folder_pages`], telling `on_page` the new entries of each page as it is taken.
pub async fn folder_pages_observed(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
    on_page: impl FnMut(&[FileEntry]),
) -> ApiResult<Collected<FileEntry>> {
    collect_pages_observed(
        |e: &FileEntry| e.id,
        |page| {
            let query = ListQuery {
                parent_id: parent,
                page,
                per_page: PAGE_SIZE,
                search: search.map(str::to_string),
            };
            async move {
                let p = api.list_files(space, &query).await?;
                Ok(Page {
                    items: p.entries,
                    next_page: p.next_page,
                    count: p.count,
                })
            }
        },
        on_page,
    )
    .await
}

/// Every page of `GET /machines`; a stop of the pager is reported, not an error.
pub async fn machine_pages(api: &dyn FilesApi) -> ApiResult<Collected<Machine>> {
    collect_pages(
        |m: &Machine| m.id,
        |page| async move {
            let p = api.list_machines(page, PAGE_SIZE).await?;
            Ok(Page {
                items: p.machines,
                next_page: p.next_page,
                count: p.count,
            })
        },
    )
    .await
}

/// Every entry of a folder (`parent` `None` = the root of `space`), optionally filtered by the
/// server-side search `q`. A listing the pager had to stop is an error.
pub async fn list_all(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
) -> ApiResult<Vec<FileEntry>> {
    list_folder(api, space, parent, search, OnStop::Fail).await
}

/// Every entry of a folder, optionally filtered by the server-side search `q`; a listing the
/// pager had to stop is handled as `policy` says.
pub async fn list_folder(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
    policy: OnStop,
) -> ApiResult<Vec<FileEntry>> {
    folder_pages(api, space, parent, search)
        .await?
        .finish("files", policy)
}

/// Every machine of the organization. A listing the pager had to stop is an error.
pub async fn list_all_machines(api: &dyn FilesApi) -> ApiResult<Vec<Machine>> {
    machine_pages(api).await?.finish("machines", OnStop::Fail)
}

/// The entry named exactly `name` in a folder (of `kind`, when given), found by a search
/// listing (one request for a folder holding fewer than [`PAGE_SIZE`] matches). `Ok(None)` only
/// after every page was read: a listing the pager had to stop is an error, so "not there" is
/// never decided on part of the folder. A folder that is gone is the API's `NotFound`.
pub async fn find_by_name(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    name: &str,
    kind: Option<ObjectType>,
) -> ApiResult<Option<FileEntry>> {
    let entries = list_all(api, space, parent, Some(name)).await?;
    Ok(entries
        .into_iter()
        .find(|e| e.name == name && kind.is_none_or(|k| e.object_type == k)))
}

/// Poll `GET /files/download/{id}` until the download is ready (its link) or failed
/// ([`ApiError::DownloadFailed`]), at most `max_wait` ([`ApiError::DownloadNotReady`]).
pub async fn wait_for_download(
    api: &dyn FilesApi,
    download_id: u64,
    max_wait: Duration,
) -> ApiResult<DownloadLink> {
    let start = Instant::now();
    let mut interval = DOWNLOAD_POLL_FIRST;
    loop {
        let status = api.download_status(download_id).await?;
        match status.state {
            DownloadState::Ready => {
                let url = status.url.ok_or_else(|| ApiError::Malformed {
                    endpoint: "download status".into(),
                    detail: "ready without a url".into(),
                })?;
                return Ok(DownloadLink {
                    url,
                    size: status.size,
                    name: status.name,
                    content_type: status.content_type,
                });
            }
            DownloadState::Failed => return Err(ApiError::DownloadFailed { download_id }),
            DownloadState::Processing => {}
        }
        let left = max_wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(ApiError::DownloadNotReady {
                download_id,
                secs: max_wait.as_secs(),
            });
        }
        tokio::time::sleep(interval.min(left)).await;
        interval = (interval * 2).min(DOWNLOAD_POLL_MAX);
    }
}

/// `POST /files/download`, then, when the server packages in the background, wait for it: the
/// link either way.
pub async fn download_link(
    api: &dyn FilesApi,
    target: &DownloadTarget,
    max_wait: Duration,
) -> ApiResult<DownloadLink> {
    let req = api.request_download(target).await?;
    match (req.url, req.download_id) {
        (Some(url), _) => Ok(DownloadLink {
            url,
            size: req.size,
            name: req.name,
            content_type: req.content_type,
        }),
        (None, Some(id)) => wait_for_download(api, id, max_wait).await,
        (None, None) => Err(ApiError::Malformed {
            endpoint: "POST /files/download".into(),
            detail: "neither a url nor a download id".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::faulty::tests_support::ScriptedApi;
    use crate::api::{DownloadStatus, FilePage, ObjectType};

    fn entry(id: u64) -> FileEntry {
        FileEntry {
            id,
            name: format!("f{id}"),
            object_type: ObjectType::File,
            size: id,
            content_type: None,
            modified: None,
            parent_id: None,
        }
    }

    fn page(ids: std::ops::Range<u64>, page: u32, next: Option<u32>) -> FilePage {
        FilePage {
            entries: ids.map(entry).collect(),
            current: None,
            count: None,
            page,
            next_page: next,
        }
    }

    #[test]
    fn only_page_is_the_listing_when_no_page_follows_and_keeps_each_id_once() {
        let mut first = page(1..4, 1, None);
        first.entries.push(entry(2));
        let got = only_page(first).expect("the only page");
        assert_eq!(
            got.items.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(got.stopped.is_none());
        assert_eq!(got.pages, 1);
        assert!(
            only_page(page(1..101, 1, Some(2))).is_none(),
            "more pages follow"
        );
        let empty = only_page(page(0..0, 1, None)).expect("an empty folder");
        assert!(empty.items.is_empty() && empty.stopped.is_none());
    }

    #[tokio::test]
    async fn follows_next_page_and_dedups() {
        let api = ScriptedApi::with_pages(vec![
            page(1..101, 1, Some(2)),
            // id 100 shows again (shifted by an insert): yielded once.
            page(100..150, 2, Some(3)),
            page(150..151, 3, None),
        ]);
        let all = list_all(&api, Space::Shared, None, None).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            (1..151).collect::<Vec<_>>()
        );
        let asked = api.asked_pages();
        assert_eq!(asked, vec![1, 2, 3]);
        assert!(api.asked_per_page().iter().all(|p| *p == PAGE_SIZE));
    }

    #[tokio::test]
    async fn repeated_page_is_an_error() {
        let api = ScriptedApi::with_pages(vec![page(1..4, 1, Some(2)), page(1..4, 1, Some(3))]);
        let err = list_all(&api, Space::Shared, None, None).await.unwrap_err();
        assert!(err.to_string().contains("repeated"), "{err}");
    }

    #[tokio::test]
    async fn backwards_next_page_is_an_error() {
        let api = ScriptedApi::with_pages(vec![page(1..4, 1, Some(2)), page(4..6, 2, Some(2))]);
        let err = list_all(&api, Space::Shared, None, None).await.unwrap_err();
        assert!(err.to_string().contains("does not move"), "{err}");
    }

    #[tokio::test]
    async fn endless_empty_pages_stop() {
        let pages = (1..50).map(|p| page(0..0, p, Some(p + 1))).collect();
        let api = ScriptedApi::with_pages(pages);
        let err = list_all(&api, Space::Shared, None, None).await.unwrap_err();
        assert!(err.to_string().contains("empty pages"), "{err}");
        assert_eq!(api.asked_pages().len() as u32, MAX_EMPTY_PAGES_IN_A_ROW + 1);
    }

    #[tokio::test]
    async fn the_policy_decides_what_a_stopped_listing_gives() {
        let script =
            || ScriptedApi::with_pages(vec![page(1..4, 1, Some(2)), page(1..4, 2, Some(3))]);
        let kept = list_folder(&script(), Space::Shared, None, None, OnStop::Warn)
            .await
            .unwrap();
        assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        let err = list_folder(&script(), Space::Shared, None, None, OnStop::Fail)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::api::ApiErrorKind::Malformed, "{err}");
    }

    #[tokio::test]
    async fn find_by_name_wants_the_exact_name_and_the_whole_listing() {
        let api = ScriptedApi::with_pages(vec![page(1..3, 1, Some(2)), page(20..23, 2, None)]);
        let found = find_by_name(&api, Space::Shared, None, "f21", None)
            .await
            .unwrap();
        assert_eq!(found.map(|e| e.id), Some(21));
        assert_eq!(api.asked_pages(), vec![1, 2]);
        let api = ScriptedApi::with_pages(vec![page(1..3, 1, None)]);
        for (name, kind) in [("f", None), ("f1", Some(ObjectType::Directory))] {
            let found = find_by_name(&api, Space::Shared, None, name, kind).await;
            assert!(found.unwrap().is_none(), "{name}");
        }
        // "Not there" is never decided on part of the folder.
        let api = ScriptedApi::with_pages(vec![page(1..3, 1, Some(2)), page(1..3, 2, Some(3))]);
        let err = find_by_name(&api, Space::Shared, None, "f9", None).await;
        assert!(err.is_err(), "{err:?}");
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let api = ScriptedApi::with_pages(vec![page(1..3, 1, Some(2))]);
        // Page 2 is not scripted: the fake answers 404.
        let err = list_all(&api, Space::Shared, None, None).await.unwrap_err();
        assert_eq!(err.kind(), crate::api::ApiErrorKind::NotFound);
    }

    /// A fetch over `total` items, `per` a page, that sleeps `delay` and records how many
    /// requests were in flight at most.
    fn counted_fetch(
        total: u64,
        per: u64,
        count: Option<u64>,
        peak: &std::sync::Arc<(
            std::sync::atomic::AtomicUsize,
            std::sync::atomic::AtomicUsize,
        )>,
        asked: &std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    ) -> impl Fn(u32) -> futures::future::BoxFuture<'static, ApiResult<Page<FileEntry>>> {
        use std::sync::atomic::Ordering::SeqCst;
        let peak = std::sync::Arc::clone(peak);
        let asked = std::sync::Arc::clone(asked);
        move |p| {
            let peak = std::sync::Arc::clone(&peak);
            asked.lock().unwrap().push(p);
            Box::pin(async move {
                let now = peak.0.fetch_add(1, SeqCst) + 1;
                peak.1.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                peak.0.fetch_sub(1, SeqCst);
                let from = (u64::from(p) - 1) * per + 1;
                let to = (from + per).min(total + 1);
                Ok(Page {
                    items: (from..to).map(entry).collect(),
                    next_page: (to <= total).then_some(p + 1),
                    count,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pages_after_the_first_go_in_parallel_and_keep_their_order() {
        let peak = std::sync::Arc::default();
        let asked = std::sync::Arc::default();
        let started = Instant::now();
        let fetch = counted_fetch(10_000, 100, Some(10_000), &peak, &asked);
        let got = collect_pages(|e: &FileEntry| e.id, fetch).await.unwrap();
        assert!(got.stopped.is_none());
        assert_eq!(
            got.items.iter().map(|e| e.id).collect::<Vec<_>>(),
            (1..=10_000).collect::<Vec<_>>()
        );
        assert_eq!(got.pages, 100);
        assert_eq!(asked.lock().unwrap().len(), 100, "one request per page");
        let most = peak.1.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(most, PAGES_IN_FLIGHT, "bounded, and that many together");
        // Page 1, then 99 pages 50 at a time: three round trips of 20 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_each_item_once_page_by_page_in_order() {
        let peak = std::sync::Arc::default();
        let asked = std::sync::Arc::default();
        let fetch = counted_fetch(1_050, 100, Some(1_050), &peak, &asked);
        let mut seen: Vec<Vec<u64>> = Vec::new();
        let got = collect_pages_observed(
            |e: &FileEntry| e.id,
            fetch,
            |page: &[FileEntry]| {
                seen.push(page.iter().map(|e| e.id).collect());
            },
        )
        .await
        .unwrap();
        assert_eq!(seen.len(), 11, "one call per page");
        assert_eq!(seen[0], (1..=100).collect::<Vec<_>>());
        assert_eq!(seen[10], (1001..=1050).collect::<Vec<_>>());
        let flat: Vec<u64> = seen.into_iter().flatten().collect();
        assert_eq!(flat, got.items.iter().map(|e| e.id).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_count_pages_follow_one_another() {
        let peak = std::sync::Arc::default();
        let asked = std::sync::Arc::default();
        let fetch = counted_fetch(450, 100, None, &peak, &asked);
        let got = collect_pages(|e: &FileEntry| e.id, fetch).await.unwrap();
        assert_eq!(got.items.len(), 450);
        assert_eq!(*asked.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(peak.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_count_is_survived() {
        // Too small: 3 pages announced, 5 there; the rest follows next_page.
        let peak = std::sync::Arc::default();
        let asked = std::sync::Arc::default();
        let fetch = counted_fetch(450, 100, Some(250), &peak, &asked);
        let got = collect_pages(|e: &FileEntry| e.id, fetch).await.unwrap();
        assert_eq!(got.items.len(), 450);
        assert!(got.stopped.is_none());
        assert_eq!(*asked.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        // Too large: pages past the end are empty and say they are the last.
        let asked = std::sync::Arc::default();
        let fetch = counted_fetch(150, 100, Some(1_000), &peak, &asked);
        let got = collect_pages(|e: &FileEntry| e.id, fetch).await.unwrap();
        assert_eq!(got.items.len(), 150);
        assert!(got.stopped.is_none());
        assert_eq!(asked.lock().unwrap().len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_download() {
        let processing = DownloadStatus {
            state: DownloadState::Processing,
            url: None,
            size: None,
            name: None,
            content_type: None,
        };
        let ready = DownloadStatus {
            state: DownloadState::Ready,
            url: Some("http://h/z".into()),
            size: Some(3),
            name: Some("a.zip".into()),
            content_type: None,
        };
        let api = ScriptedApi::with_statuses(vec![processing.clone(), processing.clone(), ready]);
        let link = wait_for_download(&api, 9, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!((link.url.as_str(), link.size), ("http://h/z", Some(3)));

        let api = ScriptedApi::with_statuses(vec![processing.clone(); 1000]);
        let err = wait_for_download(&api, 9, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ApiError::DownloadNotReady { download_id: 9, .. }
        ));
        // Growing intervals: far fewer polls than 10 s / 200 ms.
        assert!(api.status_polls() < 15, "{}", api.status_polls());

        let failed = DownloadStatus {
            state: DownloadState::Failed,
            ..processing
        };
        let api = ScriptedApi::with_statuses(vec![failed]);
        let err = wait_for_download(&api, 9, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::DownloadFailed { download_id: 9 }));
    }
}
