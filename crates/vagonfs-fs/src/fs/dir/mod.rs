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
//!   each time its listing expires; [`DirCache::invalidate`] forgets both;
//! - the storage root may start with the listing the mount's probe read before mounting
//!   ([`DirCache::seed_root`]: its first page, when no page followed), stored as a fetch started
//!   at the probe's time would be, so a fresh mount's first lookups at the root ask nothing;
//! - a listing that replaces another tells the kernel what changed: entries gone or now another
//!   object, attributes changed, and new names only where the kernel may hold a negative entry
//!   ([`DirCache::told_missing`]). A new name is otherwise this mount's own object, shown before
//!   the server listed it: invalidating its entry dropped every inode under it (all of `.git`
//!   after a clone), and unhashed the working folder of a process inside it (`git -C`:
//!   "Unable to read current working directory");
//! - a caller that knows the cached listing lacks something asks [`DirCache::relist`]: a fetch
//!   started then, not one already running (which may predate it).
//!
//! `fetch` walks the pages; `naming` turns objects into shown names; `progress` answers lookups
//! from the pages of a listing still arriving; `kernel` says what the kernel is told when a
//! listing is replaced.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::api::{FileEntry, FilesApi};

use futures::FutureExt;

use super::counters::HitCounter;
use super::flight::{Flight, SingleFlight};
use super::health::{self, Health};
use super::inode::{InodeTable, Loc, Seen};
use super::{FsResult, NodeKind, lock};

mod fetch;
mod kernel;
mod naming;
mod progress;

use fetch::{fetch_entries, listed_entries};
pub use kernel::KernelCache;
use kernel::ToldMissing;
pub(crate) use naming::name_problem;
use progress::{Progress, ProgressDone};

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

    /// Where the object `loc` is in [`Listing::entries`].
    pub(crate) fn position(&self, loc: &Loc) -> Option<usize> {
        self.by_loc.get(loc).copied()
    }

    pub(crate) fn find_loc(&self, loc: &Loc) -> Option<&ListedEntry> {
        self.by_loc.get(loc).and_then(|&i| self.entries.get(i))
    }
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
    /// Names the kernel was answered "no such name" for, until its negative entry expires:
    /// the only new names of a listing whose kernel entries need invalidating.
    told_missing: Mutex<ToldMissing>,
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
                told_missing: Mutex::new(ToldMissing::default()),
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
        let wait = async {
            let epoch = self.epoch(dir);
            let mut flight = self.start(dir);
            let progress = lock(&self.shared.progress).get(&(dir, epoch)).cloned();
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
        self.shared
            .health
            .bounded("folder listing", self.times.op_timeout, wait)
            .await
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
        // Started only once the health check let it (`bounded` polls it after that).
        let flight = async { self.start(dir).await };
        self.shared
            .health
            .bounded("folder listing", self.times.op_timeout, flight)
            .await
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
        self.new_epoch(dir);
        lock(&self.shared.listings).remove(&dir);
        lock(&self.shared.negative).retain(|(d, _), _| *d != dir);
    }

    /// A fetch of `dir` running now is not cached and not joined by later callers (it may
    /// predate a change the caller knows of).
    fn new_epoch(&self, dir: Loc) {
        let mut epochs = lock(&self.shared.epochs);
        epochs.0 += 1;
        let next = epochs.0;
        if epochs.1.len() >= EPOCHS_MAX {
            let floor = next.saturating_sub(EPOCHS_MAX as u64 / 2);
            epochs.1.retain(|_, e| *e > floor);
        }
        epochs.1.insert(dir, next);
    }

    /// A listing of `dir` whose fetch starts now (one already running may predate what the
    /// caller knows, so it is not joined), waited for at most `--op-timeout`. No fallback on the
    /// cached listing: the caller knows it lacks something. Until it lands, the cached listing
    /// still serves everyone else, and stays the outage fallback.
    pub(crate) async fn relist(&self, dir: Loc) -> FsResult<Arc<Listing>> {
        self.new_epoch(dir);
        self.wait_fetch(dir).await
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

    /// Cache the listing of storage root `dir` read before the mount (the probe's page 1, when
    /// it was the only page), as a fetch started at `began` would: the first lookups after
    /// mounting need no request. Nothing for other folders.
    pub(crate) fn seed_root(
        &self,
        dir: Loc,
        got: crate::api::paging::Collected<FileEntry>,
        began: Instant,
    ) {
        let Loc::SpaceRoot(space) = dir else {
            return;
        };
        if self.times.ttl.is_zero() {
            return;
        }
        let (entries, complete) = listed_entries(space, None, got, &self.shared.warned);
        let listing = Arc::new(Listing::new(entries, complete, began));
        self.shared.store(dir, self.epoch(dir), &listing);
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

    /// Forget that `name` was found missing in `dir` (it was just created or moved here, and
    /// the kernel's entry for it is this mount's object now, not a negative one).
    pub(crate) fn forget_missing(&self, dir: Loc, name: &OsStr) {
        let key = (dir, name.to_os_string());
        lock(&self.shared.told_missing).names.remove(&key);
        lock(&self.shared.negative).remove(&key);
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

    /// The kernel was answered "no such name" for `name` in `dir`, a negative entry it may keep
    /// for `ttl`: a listing that shows the name later invalidates that entry.
    pub(crate) fn told_missing(&self, dir: Loc, name: &OsStr, ttl: Duration) {
        lock(&self.shared.told_missing).note(dir, name, Instant::now() + ttl);
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

    /// List `dir` in the background when nothing is cached or being fetched for it (a tree walk
    /// will open it soon): whether a fetch was started. Nothing while an API failure is
    /// remembered, or when listings are not cached.
    pub(crate) fn prefetch(&self, dir: Loc) -> bool {
        if self.times.ttl.is_zero()
            || self.shared.health.recent_failure().is_some()
            || lock(&self.shared.listings).contains_key(&dir)
            || self.flight.is_running(&(dir, self.epoch(dir)))
        {
            return false;
        }
        drop(self.start(dir));
        true
    }

    /// The cached listing of `dir`, however old, without asking the API.
    pub(crate) fn peek(&self, dir: Loc) -> Option<Arc<Listing>> {
        lock(&self.shared.listings)
            .get(&dir)
            .map(|c| Arc::clone(&c.listing))
    }

    /// The cached listing of `dir` if its fetch started less than `--dir-refresh` ago (what an
    /// opened folder is served without asking again), without asking the API.
    pub(crate) fn recent(&self, dir: Loc) -> Option<Arc<Listing>> {
        let refresh = self.times.refresh.min(self.times.ttl);
        self.peek(dir)
            .filter(|listing| listing.started.elapsed() < refresh)
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

impl Shared {
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
}
