//! Folder listings: fetched through every page, sanitised, cached, shared between callers.
//!
//! A folder is listed in full (`per_page` = [`MAX_PER_PAGE`], following `next_page`), turned
//! into a [`Listing`] of entries whose names are valid Linux file names, and cached for
//! `FsConfig::dir_cache_ttl`. Concurrent callers that need the same folder share one fetch
//! ([`SingleFlight`]); `lookup` and `readdir` answer from the cached listing (attributes
//! included, for readdirplus), so `ls -l` of a warm folder costs no request at all.
//!
//! Subtle cases handled here:
//! - paging (`api::paging::collect_pages`): page 1, then the others in parallel once its `count`
//!   is known; a server repeating a page (`next_page` not increasing, or the same items again)
//!   or paging forever ends the listing with a warning, with what was gathered; an object seen
//!   twice (a folder changing while it is paged) is kept once;
//! - names the server may send that Linux cannot show (empty, `.`, `..`, containing `/` or NUL)
//!   are skipped with one warning per object for the life of the mount, not one per listing;
//!   objects with id 0 (which would alias a storage root) likewise; such a listing is not
//!   [`Listing::complete`], and neither is one whose paging stopped early: the write path never
//!   removes or moves a folder whose listing is not complete (it would delete what it cannot see);
//! - names longer than [`NAME_MAX`] bytes are shown cut, as `…~{id}` (plus a short extension),
//!   read-only ([`ListedEntry::read_only`]);
//! - two objects with the same name in one folder both stay reachable: the lowest id keeps the
//!   name, the others get `~{id}` before the extension (`report~42.pdf`), further de-duplicated
//!   if that is taken too; the result depends only on the listing, so it is stable; all of
//!   them are read-only (the API writes by name: an upload would replace one of them);
//! - machine folders (`machines/` of `RootSpec::All`) are named after the machine: `/` and NUL
//!   replaced by `_`, empty/`.`/`..` replaced by `machine-{id}`, truncated to [`NAME_MAX`],
//!   de-duplicated the same way (`~{id}` at the end);
//! - negative lookups: a name missing from a listing is remembered for [`NEGATIVE_TTL`] (bounded
//!   by the folder TTL), so a program probing for a missing file does not relist a big folder
//!   each time its listing expires; [`DirCache::invalidate`] forgets both.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::api::{FileEntry, FilesApi, ObjectType, Space, paging};

use futures::FutureExt;

use super::counters::HitCounter;
use super::flight::{Flight, SingleFlight};
use super::health::{self, Health};
use super::inode::{InodeTable, Loc, Seen};
use super::{FsResult, NodeKind, lock};

/// Longest file name Linux accepts, bytes.
pub const NAME_MAX: usize = 255;

/// How long a lookup that found nothing is remembered (bounded by the folder cache TTL).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3);

/// Default of `FsConfig::dir_refresh`: a folder opened (`ls`, a file manager's F5) with a
/// listing older than this is revalidated in the background.
pub const DEFAULT_DIR_REFRESH: Duration = Duration::from_secs(10);

/// Default of `FsConfig::op_timeout`: longest wait of lookup, getattr, opendir and readdir on
/// the API.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Cached listings beyond this count trigger a sweep of the oldest half.
const LISTINGS_SWEEP_AT: usize = 1024;

/// Negative entries beyond this count trigger a sweep (and a clear if all are fresh).
const NEGATIVE_MAX: usize = 4096;

/// Objects remembered as already warned about; past this, warnings are no longer de-duplicated
/// but demoted to debug level (hostile data must not grow memory without bound).
const WARNED_MAX: usize = 65_536;

/// Folders whose invalidation epoch is remembered; past this the oldest are forgotten.
const EPOCHS_MAX: usize = 65_536;

/// One visible child of a folder.
#[derive(Debug, Clone)]
pub(crate) struct ListedEntry {
    pub(crate) name: OsString,
    pub(crate) seen: Seen,
    /// Shown under a name the server does not hold (a name held more than once, or one longer
    /// than [`NAME_MAX`]): an upload by name would hit another object, so never written.
    pub(crate) read_only: bool,
}

/// A folder's children as shown, in the server's order. Immutable once built and shared
/// (`Arc`) by every caller and every directory handle open on it: a handle keeps one as its
/// snapshot so that readdir offsets stay valid, at no copy.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<ListedEntry>,
    by_name: HashMap<OsString, usize>,
    by_loc: HashMap<Loc, usize>,
    /// Subfolders listed (for a folder's link count).
    pub(crate) subdirs: usize,
    /// Every page was read and every object is shown: only then may the write path conclude
    /// that the folder holds nothing else (rmdir, folder moves delete what the server holds).
    pub(crate) complete: bool,
    /// When its fetch started: it may lack what the server got after this (the overlay shows
    /// such changes over it, see `overlay.rs`).
    pub(crate) started: Instant,
}

impl Listing {
    pub(crate) fn new(entries: Vec<ListedEntry>, complete: bool, started: Instant) -> Self {
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let by_loc = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.seen.loc, i))
            .collect();
        let subdirs = entries
            .iter()
            .filter(|e| e.seen.kind == NodeKind::Directory)
            .count();
        Listing {
            entries,
            by_name,
            by_loc,
            subdirs,
            complete,
            started,
        }
    }

    pub(crate) fn find(&self, name: &OsStr) -> Option<&ListedEntry> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    pub(crate) fn find_loc(&self, loc: &Loc) -> Option<&ListedEntry> {
        self.by_loc.get(loc).and_then(|&i| self.entries.get(i))
    }
}

/// What the kernel is told when a refreshed listing differs from the one it replaces. The
/// adapter implements it over FUSE notifications; the core never sees fuser types.
pub trait KernelCache: Send + Sync {
    /// Forget the kernel's entry (positive or negative) for `name` in folder `parent`.
    fn forget_entry(&self, parent: u64, name: &OsStr);
    /// Forget the kernel's attributes and cached pages of `ino`.
    fn forget_inode(&self, ino: u64);
}

/// A cached listing and when it was fetched.
struct Cached {
    listing: Arc<Listing>,
    fetched: Instant,
}

/// How fresh a caller wants a listing before it is revalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// lookup, getattr: revalidate after the folder TTL.
    Lookup,
    /// opendir: revalidate after `--dir-refresh`.
    Open,
}

/// Options of the listing cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirTimes {
    /// Listings older than this are revalidated by lookups; zero: no cache at all.
    pub(crate) ttl: Duration,
    /// Listings older than this are revalidated when the folder is opened.
    pub(crate) refresh: Duration,
    /// Longest wait on the API of a caller that has no listing to fall back on.
    pub(crate) op_timeout: Duration,
}

/// What the fetch task needs (shared with it).
struct Shared {
    api: Arc<dyn FilesApi>,
    listings: Mutex<HashMap<Loc, Cached>>,
    warned: Mutex<HashSet<Loc>>,
    negative: Mutex<HashMap<(Loc, OsString), Instant>>,
    /// Names dropped from a cached listing ([`DirCache::forget_name`]): a lookup of one waits
    /// for the folder's refresh instead of answering from the cache.
    stale_names: Mutex<HashSet<(Loc, OsString)>>,
    /// When this mount last created, removed or renamed something in a folder: its shown
    /// mtime/ctime, for the mount's life (the API keeps no folder times).
    touched: Mutex<HashMap<Loc, std::time::SystemTime>>,
    /// Invalidation epoch per folder: a fetch started before the last invalidation of its
    /// folder is not cached (it may predate a change this mount made).
    epochs: Mutex<(u64, HashMap<Loc, u64>)>,
    health: Arc<Health>,
    inodes: Arc<InodeTable>,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    /// The pages that have arrived of each running fetch, by folder and epoch: a lookup in a
    /// folder never listed is answered by the page that holds its name ([`DirCache::entry`]).
    progress: Mutex<HashMap<(Loc, u64), Arc<Progress>>>,
}

/// The pages of one running folder fetch that have arrived so far, by shown name.
struct Progress {
    space: Space,
    /// Shown name → the entry, or `None` when two arrived objects show under it (then only
    /// the whole listing can tell which one keeps the name).
    names: Mutex<HashMap<OsString, Option<ListedEntry>>>,
    /// Bumped at each page taken.
    pages: tokio::sync::watch::Sender<u32>,
    /// Names answered from a page before the listing was whole, with what they were answered:
    /// checked against the whole listing when it lands.
    answered: Mutex<Vec<(OsString, Loc)>>,
}

impl Progress {
    fn new(space: Space) -> Self {
        Progress {
            space,
            names: Mutex::new(HashMap::new()),
            pages: tokio::sync::watch::Sender::new(0),
            answered: Mutex::new(Vec::new()),
        }
    }

    /// Take one page's new objects (the pager's observer).
    fn take(&self, page: &[FileEntry]) {
        {
            let mut names = lock(&self.names);
            for e in page {
                let Some((name, long)) = visible_name(e) else {
                    continue;
                };
                let shown = listed_entry(self.space, e, name, long);
                names
                    .entry(shown.name.clone())
                    .and_modify(|slot| *slot = None)
                    .or_insert(Some(shown));
            }
        }
        self.pages.send_modify(|n| *n += 1);
    }

    /// The entry shown as `name` in the pages arrived so far, when exactly one object holds it;
    /// remembered as answered.
    fn early(&self, name: &OsStr) -> Option<ListedEntry> {
        let hit = lock(&self.names).get(name).cloned().flatten()?;
        lock(&self.answered).push((name.to_os_string(), hit.seen.loc));
        Some(hit)
    }
}

/// The listing cache of one mount.
pub(crate) struct DirCache {
    shared: Arc<Shared>,
    times: DirTimes,
    flight: SingleFlight<(Loc, u64), Arc<Listing>>,
    /// Listings answered from the cache, or fetched.
    pub(crate) counter: HitCounter,
}

impl DirCache {
    pub(crate) fn new(
        api: Arc<dyn FilesApi>,
        times: DirTimes,
        health: Arc<Health>,
        inodes: Arc<InodeTable>,
    ) -> Self {
        DirCache {
            shared: Arc::new(Shared {
                api,
                listings: Mutex::new(HashMap::new()),
                warned: Mutex::new(HashSet::new()),
                negative: Mutex::new(HashMap::new()),
                stale_names: Mutex::new(HashSet::new()),
                touched: Mutex::new(HashMap::new()),
                epochs: Mutex::new((0, HashMap::new())),
                health,
                inodes,
                kernel: OnceLock::new(),
                progress: Mutex::new(HashMap::new()),
            }),
            times,
            flight: SingleFlight::new(),
            counter: HitCounter::default(),
        }
    }

    /// Tell the kernel of changes found by revalidations from now on (set once, at mount).
    pub(crate) fn set_kernel_cache(&self, kernel: Arc<dyn KernelCache>) {
        let _ = self.shared.kernel.set(kernel);
    }

    /// How long the kernel (and this cache) may remember that a name does not exist.
    pub(crate) fn negative_ttl(&self) -> Duration {
        NEGATIVE_TTL.min(self.times.ttl)
    }

    /// The listing of folder `dir` for a lookup or getattr (see [`DirCache::get`]).
    pub(crate) async fn listing(&self, dir: Loc) -> FsResult<Arc<Listing>> {
        self.get(dir, Want::Lookup).await
    }

    /// The listing of folder `dir` to look `name` up in: as [`DirCache::listing`], except after
    /// [`DirCache::forget_name`] of that name, when the refresh is waited for (bounded by
    /// `--op-timeout`; the cached listing if the API cannot be reached).
    pub(crate) async fn listing_for(&self, dir: Loc, name: &OsStr) -> FsResult<Arc<Listing>> {
        let key = (dir, name.to_os_string());
        if !lock(&self.shared.stale_names).contains(&key) {
            return self.listing(dir).await;
        }
        match self.wait_fetch(dir).await {
            Ok(listing) => Ok(listing),
            Err(e) if health::unreachable(&e) => match self.peek(dir) {
                Some(listing) => {
                    self.shared.health.serving_stale();
                    Ok(listing)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The entry shown as `name` in folder `dir`, for a lookup: from the cached listing as
    /// [`DirCache::listing_for`]; in a folder with no listing, as soon as a page holding the
    /// name has arrived (the listing goes on in the background and is cached whole), or `None`
    /// once every page has arrived without it. Waits at most `--op-timeout`.
    pub(crate) async fn entry(&self, dir: Loc, name: &OsStr) -> FsResult<Option<ListedEntry>> {
        let listed = !self.times.ttl.is_zero() && lock(&self.shared.listings).contains_key(&dir);
        if listed || !matches!(dir, Loc::SpaceRoot(_) | Loc::Remote { .. }) {
            let listing = self.listing_for(dir, name).await?;
            return Ok(listing.find(name).cloned());
        }
        self.counter.miss();
        if let Some(err) = self.shared.health.recent_failure() {
            return Err(err);
        }
        let epoch = self.epoch(dir);
        let mut flight = self.start(dir);
        let progress = lock(&self.shared.progress).get(&(dir, epoch)).cloned();
        let wait = async {
            let Some(progress) = progress else {
                return flight.await.map(|l| l.find(name).cloned());
            };
            let mut pages = progress.pages.subscribe();
            loop {
                if let Some(hit) = progress.early(name) {
                    return Ok(Some(hit));
                }
                tokio::select! {
                    done = &mut flight => return done.map(|l| l.find(name).cloned()),
                    changed = pages.changed() => {
                        if changed.is_err() {
                            return flight.await.map(|l| l.find(name).cloned());
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(self.times.op_timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let err = health::op_timed_out("folder listing", self.times.op_timeout);
                self.shared.health.failed(&err);
                Err(err)
            }
        }
    }

    /// Whether a fetch of folder `dir` is running (its pages are arriving).
    pub(crate) fn is_fetching(&self, dir: Loc) -> bool {
        lock(&self.shared.progress).keys().any(|(d, _)| *d == dir)
    }

    /// The listing of folder `dir`: the cached one at once when there is one (revalidated in
    /// the background once older than the TTL, or `--dir-refresh` for [`Want::Open`]); else
    /// fetched, waiting at most `--op-timeout`. A failure of the API within the last few seconds
    /// fails a caller with nothing cached at once ([`Health`]).
    pub(crate) async fn get(&self, dir: Loc, want: Want) -> FsResult<Arc<Listing>> {
        let max_age = match want {
            Want::Lookup => self.times.ttl,
            Want::Open => self.times.refresh.min(self.times.ttl),
        };
        let cached = lock(&self.shared.listings)
            .get(&dir)
            .map(|c| (Arc::clone(&c.listing), c.fetched.elapsed()));
        if let Some((listing, age)) = cached
            && !self.times.ttl.is_zero()
        {
            if age >= max_age {
                self.revalidate(dir);
            }
            self.counter.hit();
            return Ok(listing);
        }
        self.counter.miss();
        self.wait_fetch(dir).await
    }

    /// Fetch `dir` (or join its running fetch) and wait for it, at most `--op-timeout`; fail at
    /// once while a recent failure says the API is down.
    async fn wait_fetch(&self, dir: Loc) -> FsResult<Arc<Listing>> {
        if let Some(err) = self.shared.health.recent_failure() {
            return Err(err);
        }
        let flight = self.start(dir);
        match tokio::time::timeout(self.times.op_timeout, flight).await {
            Ok(result) => result,
            Err(_) => {
                let err = health::op_timed_out("folder listing", self.times.op_timeout);
                self.shared.health.failed(&err);
                Err(err)
            }
        }
    }

    /// Refresh `dir` in the background (joining a refresh already running), unless the API
    /// failed moments ago: then the cached listing is served as it is.
    fn revalidate(&self, dir: Loc) {
        if self.shared.health.recent_failure().is_some() {
            self.shared.health.serving_stale();
            return;
        }
        drop(self.start(dir));
    }

    /// The running fetch of `dir` at its current epoch, or a new one.
    fn start(&self, dir: Loc) -> Flight<Arc<Listing>> {
        let epoch = self.epoch(dir);
        let shared = Arc::clone(&self.shared);
        let ttl = self.times.ttl;
        let started = self.flight.join_or_start((dir, epoch), move || {
            let progress = match dir {
                Loc::SpaceRoot(space) | Loc::Remote { space, .. } => {
                    let p = Arc::new(Progress::new(space));
                    lock(&shared.progress).insert((dir, epoch), Arc::clone(&p));
                    Some(p)
                }
                _ => None,
            };
            Some(async move {
                let _done = ProgressDone {
                    shared: &shared,
                    key: (dir, epoch),
                };
                let began = Instant::now();
                let fetched = fetch_entries(
                    shared.api.as_ref(),
                    dir,
                    &shared.warned,
                    progress.as_deref(),
                )
                .await;
                let (entries, complete) = match fetched {
                    Ok(got) => {
                        shared.health.ok();
                        got
                    }
                    Err(e) => {
                        shared.health.failed(&e);
                        if health::unreachable(&e) && lock(&shared.listings).contains_key(&dir) {
                            shared.health.serving_stale();
                        }
                        return Err(e);
                    }
                };
                let listing = Arc::new(Listing::new(entries, complete, began));
                if !ttl.is_zero() {
                    shared.store(dir, epoch, &listing);
                }
                if let Some(progress) = &progress {
                    shared.check_early_answers(dir, progress, &listing);
                }
                Ok(listing)
            })
        });
        match started {
            Some(flight) => flight,
            // `make` always builds a fetch.
            None => futures::future::ready(Err(super::FsError::Io(std::io::Error::other(
                "listing fetch not started",
            ))))
            .boxed()
            .shared(),
        }
    }

    fn epoch(&self, dir: Loc) -> u64 {
        lock(&self.shared.epochs).1.get(&dir).copied().unwrap_or(0)
    }

    /// Forget what is known of folder `dir` (its listing and the names found missing in it):
    /// the next caller lists it again and waits for it, and a fetch already running is not
    /// cached (it may predate the change that made the caller invalidate).
    pub(crate) fn invalidate(&self, dir: Loc) {
        {
            let mut epochs = lock(&self.shared.epochs);
            epochs.0 += 1;
            let next = epochs.0;
            if epochs.1.len() >= EPOCHS_MAX {
                let floor = next.saturating_sub(EPOCHS_MAX as u64 / 2);
                epochs.1.retain(|_, e| *e > floor);
            }
            epochs.1.insert(dir, next);
        }
        lock(&self.shared.listings).remove(&dir);
        lock(&self.shared.negative).retain(|(d, _), _| *d != dir);
    }

    /// Cache an empty, complete listing for folder `dir` that this mount just created (mkdir):
    /// its first lookups need no request.
    pub(crate) fn seed_empty(&self, dir: Loc) {
        let listing = Arc::new(Listing::new(Vec::new(), true, Instant::now()));
        lock(&self.shared.listings).insert(
            dir,
            Cached {
                listing,
                fetched: Instant::now(),
            },
        );
    }

    /// Forget every cached listing and negative entry (after recovery uploaded files the
    /// listings could not know of).
    pub(crate) fn invalidate_all(&self) {
        let dirs: Vec<Loc> = lock(&self.shared.listings).keys().copied().collect();
        for dir in dirs {
            self.invalidate(dir);
        }
        lock(&self.shared.negative).clear();
    }

    /// The object listed as `name` in `dir` moved on (e.g. it answered 404: replaced or
    /// deleted elsewhere): the folder is revalidated in the background, and the next lookup of
    /// `name` waits for that refresh (bounded by `--op-timeout`) to resolve it again, while every
    /// other name of the folder is still answered from the cache at once. For the read path.
    pub(crate) fn forget_name(&self, dir: Loc, name: &OsStr) {
        lock(&self.shared.stale_names).insert((dir, name.to_os_string()));
        lock(&self.shared.negative).remove(&(dir, name.to_os_string()));
        if self.shared.health.recent_failure().is_none() {
            drop(self.start(dir));
        }
    }

    /// This mount created, removed or renamed an entry of folder `dir` just now: its mtime and
    /// ctime show this moment from now on (for the mount's life).
    pub(crate) fn touch(&self, dir: Loc) {
        lock(&self.shared.touched).insert(dir, std::time::SystemTime::now());
    }

    /// When this mount last changed folder `dir`, if it did.
    pub(crate) fn touched_at(&self, dir: Loc) -> Option<std::time::SystemTime> {
        lock(&self.shared.touched).get(&dir).copied()
    }

    /// Whether `name` was recently found missing in `dir`.
    pub(crate) fn is_known_missing(&self, dir: Loc, name: &OsStr) -> bool {
        let mut neg = lock(&self.shared.negative);
        let key = (dir, name.to_os_string());
        match neg.get(&key) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                neg.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Forget that `name` was found missing in `dir` (it was just created here).
    pub(crate) fn forget_missing(&self, dir: Loc, name: &OsStr) {
        lock(&self.shared.negative).remove(&(dir, name.to_os_string()));
    }

    /// Remember that `name` is missing in `dir`.
    pub(crate) fn note_missing(&self, dir: Loc, name: &OsStr) {
        let ttl = self.negative_ttl();
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut neg = lock(&self.shared.negative);
        if neg.len() >= NEGATIVE_MAX {
            neg.retain(|_, until| now < *until);
            if neg.len() >= NEGATIVE_MAX {
                neg.clear();
            }
        }
        neg.insert((dir, name.to_os_string()), now + ttl);
    }

    /// When the fetch of the cached listing of `dir` started, if one is cached.
    pub(crate) fn listed_at(&self, dir: Loc) -> Option<Instant> {
        lock(&self.shared.listings)
            .get(&dir)
            .map(|c| c.listing.started)
    }

    /// Invalidate the folders a sweep of the overlay named, whose cached listings started
    /// before the swept names settled (they may lack them).
    pub(crate) fn invalidate_swept(&self, swept: super::overlay::Swept) {
        let Some(before) = swept.before else {
            return;
        };
        for dir in swept.dirs {
            if self.listed_at(dir).is_some_and(|at| at <= before) {
                self.invalidate(dir);
            }
        }
    }

    /// The cached listing of `dir`, however old, without asking the API.
    pub(crate) fn peek(&self, dir: Loc) -> Option<Arc<Listing>> {
        lock(&self.shared.listings)
            .get(&dir)
            .map(|c| Arc::clone(&c.listing))
    }

    /// Wait until no listing fetch is running (tests, clean unmount).
    pub(crate) async fn idle(&self) {
        self.flight.idle().await;
    }

    /// Make the cached listing of `dir` stale (tests: "the TTL has passed").
    #[cfg(test)]
    pub(crate) fn expire(&self, dir: Loc) {
        let mut map = lock(&self.shared.listings);
        if let Some(old) = map.get_mut(&dir) {
            let age = self.times.ttl.max(self.times.refresh);
            old.fetched = Instant::now().checked_sub(age).unwrap_or(old.fetched);
        }
    }

    /// Objects warned about so far (tests).
    #[cfg(test)]
    pub(crate) fn warned_count(&self) -> usize {
        lock(&self.shared.warned).len()
    }
}

/// Unregisters a fetch's [`Progress`] when the fetch ends, however it ends.
struct ProgressDone<'a> {
    shared: &'a Shared,
    key: (Loc, u64),
}

impl Drop for ProgressDone<'_> {
    fn drop(&mut self) {
        lock(&self.shared.progress).remove(&self.key);
    }
}

impl Shared {
    /// Names answered from a page before the whole listing of `dir` was known, that the whole
    /// listing shows otherwise (a later page held the same name with a lower id): the kernel
    /// forgets its entry, and the next lookup resolves the name in the whole listing.
    fn check_early_answers(&self, dir: Loc, progress: &Progress, listing: &Listing) {
        let answered = std::mem::take(&mut *lock(&progress.answered));
        if answered.is_empty() {
            return;
        }
        let parent = self.inodes.ino_of(&dir);
        for (name, loc) in answered {
            if listing.find(&name).map(|e| e.seen.loc) == Some(loc) {
                continue;
            }
            tracing::debug!(?dir, name = ?name, "a name answered from an early page is shown otherwise");
            if let (Some(kernel), Some(parent)) = (self.kernel.get(), parent) {
                kernel.forget_entry(parent, &name);
            }
        }
    }

    /// Cache `listing` of `dir`, fetched at `epoch`, unless `dir` was invalidated since; tell
    /// the kernel what changed against the listing it replaces.
    fn store(&self, dir: Loc, epoch: u64, listing: &Arc<Listing>) {
        let old = {
            // Held while inserting: an invalidation cannot slip in between check and insert.
            let epochs = lock(&self.epochs);
            if epochs.1.get(&dir).copied().unwrap_or(0) != epoch {
                return;
            }
            let mut map = lock(&self.listings);
            if map.len() >= LISTINGS_SWEEP_AT {
                // The older half goes (an outage can only fall back on what is kept).
                let mut ages: Vec<Instant> = map.values().map(|c| c.fetched).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                map.retain(|_, c| c.fetched > cut);
            }
            map.insert(
                dir,
                Cached {
                    listing: Arc::clone(listing),
                    fetched: Instant::now(),
                },
            )
        };
        lock(&self.stale_names).retain(|(d, _)| *d != dir);
        if let Some(old) = old {
            self.tell_kernel(dir, &old.listing, listing);
        }
        // Names now listed are no longer missing.
        let mut neg = lock(&self.negative);
        if !neg.is_empty() {
            neg.retain(|(d, name), _| *d != dir || listing.find(name).is_none());
        }
    }

    /// Invalidate the kernel's entries and inodes that differ between `old` and `new`.
    fn tell_kernel(&self, dir: Loc, old: &Listing, new: &Listing) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        let Some(parent) = self.inodes.ino_of(&dir) else {
            return;
        };
        let mut entries = 0usize;
        let mut inodes = 0usize;
        for before in &old.entries {
            match new.find(&before.name) {
                Some(after)
                    if after.seen.loc == before.seen.loc && after.seen.kind == before.seen.kind =>
                {
                    if (after.seen.size, after.seen.mtime) != (before.seen.size, before.seen.mtime)
                        && let Some(ino) = self.inodes.ino_of(&after.seen.loc)
                    {
                        kernel.forget_inode(ino);
                        inodes += 1;
                    }
                }
                // Gone, or another object under the same name.
                _ => {
                    kernel.forget_entry(parent, &before.name);
                    entries += 1;
                }
            }
        }
        for after in &new.entries {
            if old.find(&after.name).is_none() {
                // The kernel may hold a negative entry for it.
                kernel.forget_entry(parent, &after.name);
                entries += 1;
            }
        }
        if entries + inodes > 0 {
            tracing::debug!(
                ?dir,
                entries,
                inodes,
                "listing changed: kernel caches invalidated"
            );
        }
    }
}

/// Fetch and sanitise the children of `dir`; `true` when the listing shows all of them.
async fn fetch_entries(
    api: &dyn FilesApi,
    dir: Loc,
    warned: &Mutex<HashSet<Loc>>,
    progress: Option<&Progress>,
) -> FsResult<(Vec<ListedEntry>, bool)> {
    match dir {
        Loc::AllRoot => Ok((all_root_entries(), true)),
        Loc::Machines => {
            let machines = list_all_machines(api).await?;
            Ok((machine_entries(machines, warned), true))
        }
        Loc::SpaceRoot(space) | Loc::Remote { space, .. } => {
            let parent = match dir {
                Loc::Remote { id, .. } => Some(id),
                _ => None,
            };
            let got = paging::folder_pages_observed(api, space, parent, None, |page| {
                if let Some(p) = progress {
                    p.take(page);
                }
            })
            .await?;
            let (raw, paged_all) = report_stop(space, parent, got);
            let before = raw.len();
            let entries = sanitize(space, raw, warned);
            let complete = paged_all && entries.len() == before;
            Ok((entries, complete))
        }
        // Only files are created locally; nothing to list.
        Loc::Local { .. } | Loc::Held { .. } => Err(super::FsError::NotADirectory),
        // Built from the storages' own trash folders by `trash/`, never listed here.
        Loc::Trash(_) => Err(super::FsError::Unsupported(
            "the merged trash is not a listed folder",
        )),
    }
}

fn all_root_entries() -> Vec<ListedEntry> {
    let dir = |name: &str, loc: Loc| ListedEntry {
        name: OsString::from(name),
        seen: Seen {
            loc,
            kind: NodeKind::Directory,
            size: 0,
            mtime: None,
        },
        read_only: false,
    };
    vec![
        dir("machines", Loc::Machines),
        dir(
            "recordings",
            Loc::SpaceRoot(Space::Recordings { machine: None }),
        ),
        dir("shared", Loc::SpaceRoot(Space::Shared)),
    ]
}

/// The items of a folder's pages (objects de-duplicated by id, fetched in parallel once page 1
/// gave the count: `api::paging`), and whether they are all of them: a server that pages
/// wrongly ends the listing with a warning, with what was gathered, and `false`.
fn report_stop(
    space: Space,
    parent: Option<u64>,
    got: paging::Collected<FileEntry>,
) -> (Vec<FileEntry>, bool) {
    if let Some(reason) = &got.stopped {
        tracing::warn!(
            ?space,
            ?parent,
            pages = got.pages,
            "listing stopped early: {reason}"
        );
    }
    let complete = got.stopped.is_none();
    (got.items, complete)
}

/// Every page of `GET /machines`, de-duplicated by id.
async fn list_all_machines(api: &dyn FilesApi) -> FsResult<Vec<crate::api::Machine>> {
    let got = paging::machine_pages(api).await?;
    if let Some(reason) = &got.stopped {
        tracing::warn!(pages = got.pages, "machine listing stopped early: {reason}");
    }
    Ok(got.items)
}

/// Why `name` cannot be a Linux file name, if it cannot.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.len() > NAME_MAX {
        Some("longer than 255 bytes")
    } else {
        None
    }
}

/// Warn about `loc` once for the life of the mount.
fn warn_once(warned: &Mutex<HashSet<Loc>>, loc: Loc, what: &str, name: &str) {
    let first = {
        let mut set = lock(warned);
        if set.len() >= WARNED_MAX {
            None
        } else {
            Some(set.insert(loc))
        }
    };
    match first {
        Some(true) => tracing::warn!(?loc, name = %name.escape_debug(), "{what}"),
        Some(false) => {}
        None => tracing::debug!(?loc, name = %name.escape_debug(), "{what}"),
    }
}

/// Turn a raw listing into visible entries: invalid names skipped, names longer than
/// [`NAME_MAX`] shortened to `…~{id}`, duplicates renamed; the last two are read-only.
pub(crate) fn sanitize(
    space: Space,
    raw: Vec<FileEntry>,
    warned: &Mutex<HashSet<Loc>>,
) -> Vec<ListedEntry> {
    let mut valid = Vec::with_capacity(raw.len());
    for mut entry in raw {
        let loc = Loc::Remote {
            space,
            id: entry.id,
        };
        if entry.id == 0 {
            warn_once(warned, loc, "skipping an object with id 0", &entry.name);
            continue;
        }
        match visible_name(&entry) {
            Some((name, long)) => {
                if long {
                    warn_once(
                        warned,
                        loc,
                        &format!("name longer than 255 bytes shown read-only as {name:?}"),
                        &entry.name,
                    );
                    entry.name = name;
                }
                valid.push((entry, long));
            }
            None => {
                let problem = name_problem(&entry.name).unwrap_or("cannot be shortened");
                warn_once(
                    warned,
                    loc,
                    &format!(
                        "skipping an object whose name cannot be a Linux file name ({problem})"
                    ),
                    &entry.name,
                );
            }
        }
    }
    let names: Vec<(String, u64)> = valid.iter().map(|(e, _)| (e.name.clone(), e.id)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (name, _) in &names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let held_twice: Vec<bool> = names.iter().map(|(n, _)| counts[n.as_str()] > 1).collect();
    let shown = dedupe_names(&names, true);
    valid
        .into_iter()
        .zip(shown)
        .zip(held_twice)
        .map(|(((e, long), name), twice)| listed_entry(space, &e, name, long || twice))
        .collect()
}

/// The name object `e` shows under on its own (before duplicates are told apart), and whether
/// it was cut to fit; `None` for an object that cannot be shown (id 0, or a name Linux
/// cannot hold).
fn visible_name(e: &FileEntry) -> Option<(String, bool)> {
    if e.id == 0 {
        return None;
    }
    let long = e.name.len() > NAME_MAX;
    let name = if long {
        shortened_name(&e.name, e.id)
    } else {
        e.name.clone()
    };
    name_problem(&name).is_none().then_some((name, long))
}

/// Object `e` of `space` shown as `name`.
fn listed_entry(space: Space, e: &FileEntry, name: String, read_only: bool) -> ListedEntry {
    let kind = match e.object_type {
        ObjectType::File => NodeKind::File,
        ObjectType::Directory => NodeKind::Directory,
    };
    let size = if kind == NodeKind::File { e.size } else { 0 };
    ListedEntry {
        name: OsString::from(name),
        seen: Seen {
            loc: Loc::Remote { space, id: e.id },
            kind,
            size,
            mtime: e.modified,
        },
        read_only,
    }
}

/// A name longer than [`NAME_MAX`] cut to fit, with `…~{id}` (and a short extension) after it.
fn shortened_name(name: &str, id: u64) -> String {
    let ext = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => &name[dot..],
        _ => "",
    };
    let tag = format!("\u{2026}~{id}{ext}");
    let stem = &name[..name.len() - ext.len()];
    format!(
        "{}{tag}",
        truncate_to(stem, NAME_MAX.saturating_sub(tag.len()))
    )
}

/// `machines/` entries: one folder per machine, named after it.
fn machine_entries(
    machines: Vec<crate::api::Machine>,
    warned: &Mutex<HashSet<Loc>>,
) -> Vec<ListedEntry> {
    let names: Vec<(String, u64)> = machines
        .iter()
        .map(|m| {
            let safe = machine_folder_name(&m.name, m.id);
            if safe != m.name {
                let loc = Loc::SpaceRoot(Space::Machine(m.id));
                warn_once(warned, loc, &format!("machine shown as {safe:?}"), &m.name);
            }
            (safe, m.id)
        })
        .collect();
    let shown = dedupe_names(&names, false);
    machines
        .into_iter()
        .zip(shown)
        .map(|(m, name)| ListedEntry {
            name: OsString::from(name),
            seen: Seen {
                loc: Loc::SpaceRoot(Space::Machine(m.id)),
                kind: NodeKind::Directory,
                size: 0,
                mtime: None,
            },
            read_only: false,
        })
        .collect()
}

/// A machine's name made into a file name.
fn machine_folder_name(name: &str, id: u64) -> String {
    let replaced: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if replaced.is_empty() || replaced == "." || replaced == ".." {
        return format!("machine-{id}");
    }
    truncate_to(&replaced, NAME_MAX).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Names for a list of `(name, id)` such that all are distinct: for each name, the lowest id
/// keeps it; the others, in id order, get `~{id}` (then `~{id}~{n}`) before the extension (when
/// `split_ext`) or at the end, avoiding every name already taken. Order is preserved.
pub(crate) fn dedupe_names(items: &[(String, u64)], split_ext: bool) -> Vec<String> {
    let mut owner: HashMap<&str, u64> = HashMap::new();
    for (name, id) in items {
        owner
            .entry(name.as_str())
            .and_modify(|o| *o = (*o).min(*id))
            .or_insert(*id);
    }
    let mut taken: HashSet<String> = owner.keys().map(|n| n.to_string()).collect();
    let mut out: Vec<Option<String>> = items
        .iter()
        .map(|(name, id)| (owner.get(name.as_str()) == Some(id)).then(|| name.clone()))
        .collect();
    // Losers in id order, so the outcome does not depend on the server's ordering.
    let mut losers: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
    losers.sort_by_key(|&i| (items[i].1, i));
    for i in losers {
        let (name, id) = &items[i];
        let mut attempt = 0u32;
        let fresh = loop {
            let candidate = with_id_suffix(name, *id, attempt, split_ext);
            if !taken.contains(&candidate) {
                break candidate;
            }
            attempt += 1;
        };
        taken.insert(fresh.clone());
        out[i] = Some(fresh);
    }
    out.into_iter().map(|n| n.unwrap_or_default()).collect()
}

/// `report.pdf` + 42 → `report~42.pdf` (attempt 0) or `report~42~1.pdf`, within [`NAME_MAX`].
fn with_id_suffix(name: &str, id: u64, attempt: u32, split_ext: bool) -> String {
    let tag = if attempt == 0 {
        format!("~{id}")
    } else {
        format!("~{id}~{attempt}")
    };
    let (stem, ext) = match name.rfind('.') {
        // A leading dot is a hidden file's name, not an extension.
        Some(dot) if split_ext && dot > 0 && name.len() - dot + tag.len() < NAME_MAX / 2 => {
            name.split_at(dot)
        }
        _ => (name, ""),
    };
    let budget = NAME_MAX.saturating_sub(tag.len() + ext.len());
    format!("{}{tag}{ext}", truncate_to(stem, budget))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn lowest_id_keeps_the_name() {
        let got = dedupe_names(
            &pairs(&[("a.txt", 9), ("a.txt", 3), ("b", 1), ("b", 2)]),
            true,
        );
        assert_eq!(got, vec!["a~9.txt", "a.txt", "b", "b~2"]);
    }

    #[test]
    fn generated_names_avoid_real_ones() {
        let got = dedupe_names(&pairs(&[("a.txt", 1), ("a.txt", 7), ("a~7.txt", 2)]), true);
        assert_eq!(got, vec!["a.txt", "a~7~1.txt", "a~7.txt"]);
        let hidden = dedupe_names(&pairs(&[(".bashrc", 1), (".bashrc", 2)]), true);
        assert_eq!(hidden, vec![".bashrc", ".bashrc~2"]);
    }

    #[test]
    fn suffix_stays_within_name_max() {
        let long = "x".repeat(250) + ".txt";
        let got = with_id_suffix(&long, 123456, 0, true);
        assert!(got.len() <= NAME_MAX, "{}", got.len());
        assert!(got.ends_with("~123456.txt"));
        let multibyte = "é".repeat(127); // 254 bytes
        let got = with_id_suffix(&multibyte, 5, 0, false);
        assert!(got.len() <= NAME_MAX && got.ends_with("~5"));
    }

    #[test]
    fn invalid_names() {
        for bad in ["", ".", "..", "a/b", "nul\0", &"y".repeat(256)] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["...", " ", "a\nb", &"z".repeat(255), "ünïcode"] {
            assert!(name_problem(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn machine_names_become_file_names() {
        assert_eq!(machine_folder_name("a/b", 1), "a_b");
        assert_eq!(machine_folder_name("x\0y", 1), "x_y");
        assert_eq!(machine_folder_name("", 4), "machine-4");
        assert_eq!(machine_folder_name("..", 5), "machine-5");
        assert_eq!(machine_folder_name(&"m".repeat(300), 5).len(), NAME_MAX);
    }
}
