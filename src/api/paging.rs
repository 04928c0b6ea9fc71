//! Whole listings over paginated endpoints, and waiting for background downloads.
//!
//! [`entries`] / [`machines`] are `Stream`s of items over all pages, asked [`PAGE_SIZE`] at a
//! time and following `next_page` until it is `null`. A buggy or hostile server cannot make
//! them loop forever or grow without bound:
//! - a `next_page` that does not move forward (≤ the page just read) is an error;
//! - a page whose items (ids, in order) are exactly the previous page's is an error ("server
//!   repeated a page", e.g. a server ignoring `page`);
//! - more than [`MAX_EMPTY_PAGES_IN_A_ROW`] empty pages that still announce a next page, or more
//!   than [`MAX_PAGES`] pages, is an error.
//!
//! Offset pagination over a folder that changes while it is read can show an item on two pages
//! (an insert before it shifts it); the stream yields each id once, first sighting kept. (An
//! item can equally be missed by a delete during the listing; no client can see that.)
//!
//! [`wait_for_download`] polls a background download (zip) with growing intervals until it is
//! ready or failed, bounded by `max_wait`.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::{
    ApiError, ApiResult, DownloadLink, DownloadState, DownloadTarget, FileEntry, FilesApi,
    ListQuery, MAX_PER_PAGE, Machine, Space,
};

/// Items asked per page: the most the API serves.
pub const PAGE_SIZE: u32 = MAX_PER_PAGE;
/// Most pages read in one listing (10 million entries at 100 a page).
pub const MAX_PAGES: u32 = 100_000;
/// Empty pages that still announce a next page, tolerated in a row.
pub const MAX_EMPTY_PAGES_IN_A_ROW: u32 = 3;
/// First wait between two download status polls.
pub const DOWNLOAD_POLL_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two download status polls.
pub const DOWNLOAD_POLL_MAX: Duration = Duration::from_secs(5);

/// One page as the pager needs it: the items and the announced next page.
struct Page<T> {
    items: Vec<T>,
    next_page: Option<u32>,
}

struct Pager<F> {
    fetch: F,
    what: &'static str,
    /// Next page to ask; `None` once the last page was read.
    page: Option<u32>,
    pages_read: u32,
    empty_in_a_row: u32,
    previous_ids: Vec<u64>,
    seen: HashSet<u64>,
}

fn malformed(what: &str, detail: String) -> ApiError {
    ApiError::Malformed {
        endpoint: format!("listing {what}"),
        detail,
    }
}

/// All pages of a listing as one stream of items, guarded as the module note says.
fn paginate<'a, T, F, Fut>(
    what: &'static str,
    id_of: fn(&T) -> u64,
    fetch: F,
) -> BoxStream<'a, ApiResult<T>>
where
    T: Send + 'a,
    F: FnMut(u32) -> Fut + Send + 'a,
    Fut: Future<Output = ApiResult<Page<T>>> + Send + 'a,
{
    let pager = Pager {
        fetch,
        what,
        page: Some(1),
        pages_read: 0,
        empty_in_a_row: 0,
        previous_ids: Vec::new(),
        seen: HashSet::new(),
    };
    stream::try_unfold(pager, move |mut p| async move {
        let Some(page) = p.page else { return Ok(None) };
        let got = (p.fetch)(page).await?;
        p.pages_read += 1;
        let ids: Vec<u64> = got.items.iter().map(id_of).collect();
        if !ids.is_empty() && ids == p.previous_ids {
            return Err(malformed(
                p.what,
                format!("the server repeated a page (page {page})"),
            ));
        }
        if let Some(next) = got.next_page {
            if next <= page {
                return Err(malformed(
                    p.what,
                    format!("next_page {next} does not move past page {page}"),
                ));
            }
            if p.pages_read >= MAX_PAGES {
                return Err(malformed(p.what, format!("more than {MAX_PAGES} pages")));
            }
            if ids.is_empty() {
                p.empty_in_a_row += 1;
                if p.empty_in_a_row > MAX_EMPTY_PAGES_IN_A_ROW {
                    return Err(malformed(
                        p.what,
                        format!(
                            "{} empty pages in a row that announce more",
                            p.empty_in_a_row
                        ),
                    ));
                }
            } else {
                p.empty_in_a_row = 0;
            }
        }
        p.page = got.next_page;
        let fresh: Vec<T> = got
            .items
            .into_iter()
            .filter(|item| p.seen.insert(id_of(item)))
            .collect();
        p.previous_ids = ids;
        Ok(Some((fresh, p)))
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// Every entry of a folder (`parent` `None` = the root of `space`), optionally filtered by the
/// server-side search `q`.
pub fn entries<'a>(
    api: &'a dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
) -> BoxStream<'a, ApiResult<FileEntry>> {
    let search = search.map(str::to_string);
    paginate(
        "files",
        |e: &FileEntry| e.id,
        move |page| {
            let query = ListQuery {
                parent_id: parent,
                page,
                per_page: PAGE_SIZE,
                search: search.clone(),
            };
            async move {
                let p = api.list_files(space, &query).await?;
                Ok(Page {
                    items: p.entries,
                    next_page: p.next_page,
                })
            }
        },
    )
}

/// [`entries`], collected.
pub async fn list_all(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
    search: Option<&str>,
) -> ApiResult<Vec<FileEntry>> {
    entries(api, space, parent, search).try_collect().await
}

/// Every machine of the organization.
pub fn machines(api: &dyn FilesApi) -> BoxStream<'_, ApiResult<Machine>> {
    paginate(
        "machines",
        |m: &Machine| m.id,
        move |page| async move {
            let p = api.list_machines(page, PAGE_SIZE).await?;
            Ok(Page {
                items: p.machines,
                next_page: p.next_page,
            })
        },
    )
}

/// [`machines`], collected.
pub async fn list_all_machines(api: &dyn FilesApi) -> ApiResult<Vec<Machine>> {
    machines(api).try_collect().await
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
    async fn errors_pass_through() {
        let api = ScriptedApi::with_pages(vec![page(1..3, 1, Some(2))]);
        // Page 2 is not scripted: the fake answers 404.
        let err = list_all(&api, Space::Shared, None, None).await.unwrap_err();
        assert_eq!(err.kind(), crate::api::ApiErrorKind::NotFound);
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
