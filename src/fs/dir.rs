//! Folder listings: fetched through every page, sanitised, cached, shared between callers.
//!
//! A folder is listed in full (`per_page` = [`MAX_PER_PAGE`], following `next_page`), turned
//! into a [`Listing`] of entries whose names are valid Linux file names, and cached for
//! `FsConfig::dir_cache_ttl`. Concurrent callers that need the same folder share one fetch
//! ([`SingleFlight`]); `lookup` and `readdir` answer from the cached listing (attributes
//! included, for readdirplus), so `ls -l` of a warm folder costs no request at all.
//!
//! Subtle cases handled here:
//! - paging: a server repeating a page (`next_page` not increasing, or a page with nothing new)
//!   or paging forever ([`MAX_LIST_PAGES`]) ends the listing with a warning, with what was
//!   gathered; an object seen twice (a folder changing while it is paged) is kept once;
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{FileEntry, FilesApi, ListQuery, MAX_PER_PAGE, ObjectType, Space};

use super::counters::HitCounter;
use super::flight::SingleFlight;
use super::inode::{Loc, Seen};
use super::{FsResult, NodeKind, lock};

/// Longest file name Linux accepts, bytes.
pub const NAME_MAX: usize = 255;

/// How long a lookup that found nothing is remembered (bounded by the folder cache TTL).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3);

/// Upper bound on the pages of one listing: a server paging forever cannot hang a lookup.
/// 100,000 pages of 100 = ten million entries.
pub const MAX_LIST_PAGES: u32 = 100_000;

/// Cached listings beyond this count trigger a sweep of the expired ones.
const LISTINGS_SWEEP_AT: usize = 1024;

/// Negative entries beyond this count trigger a sweep (and a clear if all are fresh).
const NEGATIVE_MAX: usize = 4096;

/// Objects remembered as already warned about; past this, warnings are no longer de-duplicated
/// but demoted to debug level (hostile data must not grow memory without bound).
const WARNED_MAX: usize = 65_536;

/// One visible child of a folder.
#[derive(Debug, Clone)]
pub(crate) struct ListedEntry {
    pub(crate) name: OsString,
    pub(crate) seen: Seen,
    /// Shown under a name the server does not hold (a name held more than once, or one longer
    /// than [`NAME_MAX`]): an upload by name would hit another object, so never written.
    pub(crate) read_only: bool,
}

/// A folder's children as shown, in the server's order. Immutable once built: a directory handle
/// keeps one as its snapshot so that readdir offsets stay valid.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<ListedEntry>,
    by_name: HashMap<OsString, usize>,
    by_loc: HashMap<Loc, usize>,
    expires: Instant,
    /// Every page was read and every object is shown: only then may the write path conclude
    /// that the folder holds nothing else (rmdir, folder moves delete what the server holds).
    pub(crate) complete: bool,
}

impl Listing {
    fn new(entries: Vec<ListedEntry>, expires: Instant, complete: bool) -> Self {
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
        Listing {
            entries,
            by_name,
            by_loc,
            expires,
            complete,
        }
    }

    pub(crate) fn find(&self, name: &OsStr) -> Option<&ListedEntry> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    pub(crate) fn find_loc(&self, loc: &Loc) -> Option<&ListedEntry> {
        self.by_loc.get(loc).and_then(|&i| self.entries.get(i))
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// The listing cache of one mount.
pub(crate) struct DirCache {
    api: Arc<dyn FilesApi>,
    ttl: Duration,
    listings: Arc<Mutex<HashMap<Loc, Arc<Listing>>>>,
    flight: SingleFlight<Loc, Arc<Listing>>,
    negative: Mutex<HashMap<(Loc, OsString), Instant>>,
    warned: Arc<Mutex<HashSet<Loc>>>,
    /// Listings answered from the cache, or fetched.
    pub(crate) counter: HitCounter,
}

impl DirCache {
    pub(crate) fn new(api: Arc<dyn FilesApi>, ttl: Duration) -> Self {
        DirCache {
            api,
            ttl,
            listings: Arc::new(Mutex::new(HashMap::new())),
            flight: SingleFlight::new(),
            negative: Mutex::new(HashMap::new()),
            warned: Arc::new(Mutex::new(HashSet::new())),
            counter: HitCounter::default(),
        }
    }

    /// How long the kernel (and this cache) may remember that a name does not exist.
    pub(crate) fn negative_ttl(&self) -> Duration {
        NEGATIVE_TTL.min(self.ttl)
    }

    /// The listing of folder `dir`: cached if fresh, else fetched (joining a running fetch).
    pub(crate) async fn listing(&self, dir: Loc) -> FsResult<Arc<Listing>> {
        if let Some(listing) = lock(&self.listings).get(&dir)
            && listing.fresh(Instant::now())
        {
            self.counter.hit();
            return Ok(Arc::clone(listing));
        }
        self.counter.miss();
        let api = Arc::clone(&self.api);
        let listings = Arc::clone(&self.listings);
        let warned = Arc::clone(&self.warned);
        let ttl = self.ttl;
        self.flight
            .run(dir, move || async move {
                let (entries, complete) = fetch_entries(api.as_ref(), dir, &warned).await?;
                let listing = Arc::new(Listing::new(entries, Instant::now() + ttl, complete));
                let mut map = lock(&listings);
                if map.len() >= LISTINGS_SWEEP_AT {
                    let now = Instant::now();
                    map.retain(|_, l| l.fresh(now));
                }
                map.insert(dir, Arc::clone(&listing));
                Ok(listing)
            })
            .await
    }

    /// Forget what is known of folder `dir` (its listing and the names found missing in it):
    /// the next lookup lists it again.
    pub(crate) fn invalidate(&self, dir: Loc) {
        lock(&self.listings).remove(&dir);
        lock(&self.negative).retain(|(d, _), _| *d != dir);
    }

    /// Cache an empty, complete listing for folder `dir` that this mount just created (mkdir):
    /// its first lookups need no request.
    pub(crate) fn seed_empty(&self, dir: Loc) {
        let listing = Listing::new(Vec::new(), Instant::now() + self.ttl, true);
        lock(&self.listings).insert(dir, Arc::new(listing));
    }

    /// Forget every cached listing and negative entry (after recovery uploaded files the
    /// listings could not know of).
    pub(crate) fn invalidate_all(&self) {
        lock(&self.listings).clear();
        lock(&self.negative).clear();
    }

    /// Whether `name` was recently found missing in `dir`.
    pub(crate) fn is_known_missing(&self, dir: Loc, name: &OsStr) -> bool {
        let mut neg = lock(&self.negative);
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
        lock(&self.negative).remove(&(dir, name.to_os_string()));
    }

    /// Remember that `name` is missing in `dir`.
    pub(crate) fn note_missing(&self, dir: Loc, name: &OsStr) {
        let ttl = self.negative_ttl();
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut neg = lock(&self.negative);
        if neg.len() >= NEGATIVE_MAX {
            neg.retain(|_, until| now < *until);
            if neg.len() >= NEGATIVE_MAX {
                neg.clear();
            }
        }
        neg.insert((dir, name.to_os_string()), now + ttl);
    }

    /// Make the cached listing of `dir` stale (tests: "the TTL has passed").
    #[cfg(test)]
    pub(crate) fn expire(&self, dir: Loc) {
        let mut map = lock(&self.listings);
        if let Some(old) = map.get(&dir) {
            let stale = Listing::new(old.entries.clone(), Instant::now(), old.complete);
            map.insert(dir, Arc::new(stale));
        }
    }

    /// Objects warned about so far (tests).
    #[cfg(test)]
    pub(crate) fn warned_count(&self) -> usize {
        lock(&self.warned).len()
    }
}

/// Fetch and sanitise the children of `dir`; `true` when the listing shows all of them.
async fn fetch_entries(
    api: &dyn FilesApi,
    dir: Loc,
    warned: &Mutex<HashSet<Loc>>,
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
            let (raw, paged_all) = list_all_files(api, space, parent).await?;
            let before = raw.len();
            let entries = sanitize(space, raw, warned);
            let complete = paged_all && entries.len() == before;
            Ok((entries, complete))
        }
        // Only files are created locally; nothing to list.
        Loc::Local { .. } => Err(super::FsError::NotADirectory),
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

/// Every page of one folder of `space` (`parent` `None` = the root), objects de-duplicated by id;
/// `false` when paging stopped early (the server may hold more).
pub(crate) async fn list_all_files(
    api: &dyn FilesApi,
    space: Space,
    parent: Option<u64>,
) -> FsResult<(Vec<FileEntry>, bool)> {
    let mut complete = true;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut page = 1u32;
    let mut pages = 0u32;
    loop {
        let query = ListQuery {
            parent_id: parent,
            page,
            per_page: MAX_PER_PAGE,
            search: None,
        };
        let got = api.list_files(space, &query).await?;
        pages += 1;
        let before = out.len();
        for entry in got.entries {
            if ids.insert(entry.id) {
                out.push(entry);
            }
        }
        let Some(next) = got.next_page else { break };
        if let Some(reason) = paging_stops(page, next, out.len() - before, pages) {
            tracing::warn!(
                ?space,
                ?parent,
                page,
                next,
                "listing stopped early: {reason}"
            );
            complete = false;
            break;
        }
        page = next;
    }
    Ok((out, complete))
}

/// Every page of `GET /machines`, de-duplicated by id.
async fn list_all_machines(api: &dyn FilesApi) -> FsResult<Vec<crate::api::Machine>> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut page = 1u32;
    let mut pages = 0u32;
    loop {
        let got = api.list_machines(page, MAX_PER_PAGE).await?;
        pages += 1;
        let before = out.len();
        for m in got.machines {
            if ids.insert(m.id) {
                out.push(m);
            }
        }
        let Some(next) = got.next_page else { break };
        if let Some(reason) = paging_stops(page, next, out.len() - before, pages) {
            tracing::warn!(page, next, "machine listing stopped early: {reason}");
            break;
        }
        page = next;
    }
    Ok(out)
}

/// Why paging must stop although the server announced a next page, if it must.
fn paging_stops(page: u32, next: u32, new_items: usize, pages: u32) -> Option<&'static str> {
    if next <= page {
        Some("the server's next page does not move forward")
    } else if new_items == 0 {
        Some("the server repeated a page (nothing new on it)")
    } else if pages >= MAX_LIST_PAGES {
        Some("too many pages")
    } else {
        None
    }
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
        let long = entry.name.len() > NAME_MAX;
        if long {
            let short = shortened_name(&entry.name, entry.id);
            if name_problem(&short).is_none() {
                warn_once(
                    warned,
                    loc,
                    &format!("name longer than 255 bytes shown read-only as {short:?}"),
                    &entry.name,
                );
                entry.name = short;
            }
        }
        if let Some(problem) = name_problem(&entry.name) {
            warn_once(
                warned,
                loc,
                &format!("skipping an object whose name {problem}"),
                &entry.name,
            );
            continue;
        }
        valid.push((entry, long));
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
        .map(|(((e, long), name), twice)| {
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
                read_only: long || twice,
            }
        })
        .collect()
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

    #[test]
    fn paging_guard() {
        assert!(paging_stops(1, 2, 100, 1).is_none());
        assert!(paging_stops(2, 2, 100, 2).is_some());
        assert!(paging_stops(3, 1, 100, 3).is_some());
        assert!(paging_stops(1, 2, 0, 1).is_some());
        assert!(paging_stops(1, 2, 5, MAX_LIST_PAGES).is_some());
    }
}
