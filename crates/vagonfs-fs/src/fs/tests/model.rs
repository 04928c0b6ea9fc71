//! A model-based property test of the write engine: random sequences of what users, other
//! clients and crashes do, run against `VagonFs` over the in-memory double (in the fault
//! injector), compared with a plain map of paths to contents.
//!
//! Each case runs on a current-thread runtime with paused time, so the engine's delays and
//! backoffs cost nothing and a run is repeatable. A **crash** drops that runtime (every task of
//! the mount dies where it stands) and the `VagonFs` without a flush, keeping its cache folder;
//! the next "daemon" is a new runtime and a new `VagonFs` on the same folder, which recovers the
//! journal.
//!
//! The model: every path the user wrote holds its last content; a file or folder the user did
//! not remove is still there; another client's change is kept, and when it raced a local edit
//! (changed the file between the user's open and close), the local bytes land in
//! `name (conflict …)`. After every step the mount's own view (readdir, read) must equal the
//! model (conflict copies aside: they appear once the upload ran); after the engine settles the
//! server must equal it too, conflict copies included.
//!
//! The names are few (`a`, `b`, `d/a`, `d/b`, `e/a`; folders `d`, `e`) and the files small, so
//! shrinking finds short cases. `PROPTEST_CASES` sets the number of cases (default kept small
//! for CI).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::driver::{config, list, read_all};
use crate::api::faulty::{ApiMethod, Fault, FaultyFilesApi};
use crate::api::mem::MemApi;
use crate::api::{FilesApi, ObjectType};
use crate::fs::engine::WriteBack;
use crate::fs::errno::to_errno;
use crate::fs::inode::Loc;
use crate::fs::*;

const FILES: [&str; 5] = ["a", "b", "d/a", "d/b", "e/a"];
const DIRS: [&str; 2] = ["d", "e"];
const SPACE: Space = Space::Shared;
/// Cases when `PROPTEST_CASES` is not set: keeps `cargo test` quick.
const DEFAULT_CASES: u32 = 24;
/// The seed of the quick run (see [`rng_seed`]).
const DEFAULT_SEED: u64 = 20_261_129;

#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Open (creating it when missing), optionally with `O_TRUNC`, write `data` at `offset`,
    /// optionally `fsync`, close.
    Write {
        file: usize,
        offset: u8,
        data: Vec<u8>,
        trunc: bool,
        fsync: bool,
    },
    /// `truncate(2)` by path, no handle open.
    Truncate {
        file: usize,
        size: u8,
    },
    Rename {
        from: usize,
        to: usize,
    },
    RenameDir {
        from: usize,
        to: usize,
    },
    Unlink {
        file: usize,
    },
    Mkdir {
        dir: usize,
    },
    Rmdir {
        dir: usize,
    },
    /// Another client, once this mount has settled: writes the file (`Some`) or deletes it.
    Other {
        file: usize,
        data: Option<Vec<u8>>,
    },
    /// Another client overwrites the file while this mount has it open for a full rewrite.
    Race {
        file: usize,
        mine: Vec<u8>,
        theirs: Vec<u8>,
    },
    /// The daemon dies (no flush), and a new one mounts the same cache folder.
    Crash,
    /// The kernel forgets every inode it holds no handle on (memory pressure, `drop_caches`,
    /// a folder's entries invalidated), leaves first.
    Forget,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..max)
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..FILES.len();
    let dir = 0..DIRS.len();
    prop_oneof![
        6 => (file.clone(), 0u8..12, bytes(10), any::<bool>(), prop::bool::weighted(0.2)).prop_map(
            |(file, offset, data, trunc, fsync)| Op::Write {
                file,
                offset,
                data,
                trunc,
                fsync
            }
        ),
        1 => (file.clone(), 0u8..16).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (dir.clone(), dir.clone()).prop_map(|(from, to)| Op::RenameDir { from, to }),
        2 => file.clone().prop_map(|file| Op::Unlink { file }),
        2 => dir.clone().prop_map(|dir| Op::Mkdir { dir }),
        1 => dir.prop_map(|dir| Op::Rmdir { dir }),
        1 => (file.clone(), prop::option::of(bytes(10))).prop_map(|(file, data)| Op::Other { file, data }),
        1 => (file, bytes(6), bytes(6)).prop_map(|(file, mine, theirs)| Op::Race { file, mine, theirs }),
        1 => Just(Op::Crash),
        1 => Just(Op::Forget),
    ]
}

/// What the user (and other clients) expect: files by path, folders, conflict copies.
#[derive(Debug, Default, Clone)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
    /// `(folder path or "", original name, bytes)` of every expected conflict copy.
    conflicts: Vec<(String, String, Vec<u8>)>,
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Model {
    fn is_dir(&self, path: &str) -> bool {
        self.dirs.iter().any(|d| d == path)
    }

    fn parent_exists(&self, path: &str) -> bool {
        let (dir, _) = split(path);
        dir.is_empty() || self.is_dir(dir)
    }

    fn dir_is_empty(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        !self.files.keys().any(|p| p.starts_with(&prefix))
            && !self.conflicts.iter().any(|(d, _, _)| d == dir)
    }

    /// The expected tree: path → `None` for a folder, the bytes of a file; conflict copies as
    /// `name (conflict)` with every copy's bytes, sorted.
    fn expected(&self, with_conflicts: bool) -> Tree {
        let mut t = Tree::default();
        for d in &self.dirs {
            t.entries.insert(d.clone(), None);
        }
        for (p, data) in &self.files {
            t.entries.insert(p.clone(), Some(data.clone()));
        }
        if with_conflicts {
            for (dir, name, data) in &self.conflicts {
                t.conflict(dir, name, data.clone());
            }
        }
        t.sort();
        t
    }
}

/// A tree as seen by the server or the mount.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tree {
    entries: BTreeMap<String, Option<Vec<u8>>>,
    conflicts: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Tree {
    fn conflict(&mut self, dir: &str, name: &str, data: Vec<u8>) {
        let key = match dir {
            "" => name.to_string(),
            d => format!("{d}/{name}"),
        };
        self.conflicts.entry(key).or_default().push(data);
    }

    fn sort(&mut self) {
        for v in self.conflicts.values_mut() {
            v.sort();
        }
    }

    /// Add a listed entry; a conflict copy's name goes back to its original name.
    fn add(&mut self, path: &str, data: Option<Vec<u8>>) {
        let (dir, name) = split(path);
        match (original_of_conflict(name), data) {
            (Some(orig), Some(data)) => self.conflict(dir, &orig, data),
            (_, data) => {
                self.entries.insert(path.to_string(), data);
            }
        }
    }
}

/// `notes (conflict 2026-11-29 180000).txt` → `notes.txt`.
fn original_of_conflict(name: &str) -> Option<String> {
    let start = name.find(" (conflict ")?;
    let end = start + name[start..].find(')')?;
    Some(format!("{}{}", &name[..start], &name[end + 1..]))
}

/// The server's tree, from the double's state.
fn server_tree(mem: &MemApi) -> Tree {
    let mut t = Tree::default();
    for (path, data) in mem.tree(SPACE) {
        t.add(&path, data);
    }
    t.sort();
    t
}

/// Readdir of every folder of the mount, reading no file.
async fn list_folders(fs: &VagonFs) {
    let mut stack = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        for e in list(fs, ino).await {
            let name = e.name.to_string_lossy();
            if name != "." && name != ".." && e.attr.kind == NodeKind::Directory {
                stack.push(e.attr.ino);
            }
        }
    }
}

/// The mount's tree, through readdir and read.
async fn mount_tree(fs: &VagonFs) -> Tree {
    let mut t = Tree::default();
    let mut stack = vec![(ROOT_INO, String::new())];
    while let Some((ino, prefix)) = stack.pop() {
        for e in list(fs, ino).await {
            let name = e.name.to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{prefix}{name}");
            if e.attr.kind == NodeKind::Directory {
                t.add(&path, None);
                stack.push((e.attr.ino, format!("{path}/")));
            } else {
                let data = read_all(fs, e.attr.ino, 64 << 10)
                    .await
                    .unwrap_or_else(|err| panic!("read {path}: {err}"));
                t.add(&path, Some(data));
            }
        }
    }
    t.sort();
    t
}

/// One run: the server, the mount's cache folder, the current "daemon".
struct World {
    mem: Arc<MemApi>,
    api: Arc<FaultyFilesApi<MemApi>>,
    cache: tempfile::TempDir,
    delay: Duration,
    faults: bool,
    rt: Option<tokio::runtime::Runtime>,
    fs: Option<Arc<VagonFs>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

impl World {
    fn new(delay: Duration, faults: bool) -> World {
        let mem = MemApi::new();
        let api = Arc::new(FaultyFilesApi::<MemApi>::new(Arc::clone(&mem), 11));
        let mut w = World {
            mem,
            api,
            cache: tempfile::tempdir().expect("tempdir"),
            delay,
            faults,
            rt: None,
            fs: None,
        };
        w.boot();
        w
    }

    fn set_faults(&self, on: bool) {
        self.api.clear();
        if on && self.faults {
            // Transient failures of part PUTs (the engine retries them) and slow calls.
            self.api
                .set_fail_rate(Some(ApiMethod::UploadPart), 0.3, Fault::Transport);
            self.api.set_latency(None, Duration::from_millis(20));
        }
    }

    /// Start a daemon on the cache folder and let it recover what the last one left.
    fn boot(&mut self) {
        let rt = runtime();
        let mut cfg = config(self.cache.path(), 1);
        cfg.write_back = WriteBack {
            upload_delay: self.delay,
            ..WriteBack::default()
        };
        let api: Arc<dyn FilesApi> = Arc::clone(&self.api) as Arc<dyn FilesApi>;
        let fs = rt.block_on(async {
            let fs = VagonFs::new(api, RootSpec::Space(SPACE), cfg);
            fs.recover().await.expect("recover");
            fs
        });
        self.set_faults(true);
        self.rt = Some(rt);
        self.fs = Some(fs);
    }

    /// The daemon dies: its tasks stop where they are, nothing is flushed.
    fn crash(&mut self) {
        let fs = self.fs.take();
        let rt = self.rt.take();
        drop(rt);
        drop(fs);
        self.boot();
    }

    fn fs(&self) -> Arc<VagonFs> {
        Arc::clone(self.fs.as_ref().expect("mounted"))
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.as_ref().expect("runtime").block_on(f)
    }

    /// Wait until every change is on the server (faults off meanwhile), then forget what the
    /// mount listed, so it sees other clients' changes.
    fn settle(&self) {
        self.set_faults(false);
        let fs = self.fs();
        self.run(async {
            for _ in 0..20 {
                let report = fs.wait_uploads().await;
                if report.failed.is_empty() && fs.pending_uploads() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        self.expire_listings();
        self.set_faults(true);
    }

    fn expire_listings(&self) {
        let fs = self.fs();
        fs.dirs.expire(Loc::SpaceRoot(SPACE));
        for d in DIRS {
            if let Some(e) = self.mem.entry(SPACE, None, d) {
                fs.dirs.expire(Loc::Remote {
                    space: SPACE,
                    id: fs.folders.shown_id(SPACE, e.id),
                });
            }
        }
        // An expired listing answers from the cache once while it refreshes: list every folder
        // (not reading files: a file another client just deleted is still listed in that stale
        // answer, and reading it is ESTALE by design), and wait for the refresh.
        self.run(async {
            list_folders(&fs).await;
            fs.wait_background().await;
        });
    }

    /// The server id of folder `dir` ("" = the root).
    fn server_parent(&self, dir: &str) -> Option<Option<u64>> {
        if dir.is_empty() {
            return Some(None);
        }
        self.mem
            .entry(SPACE, None, dir)
            .filter(|e| e.object_type == ObjectType::Directory)
            .map(|e| Some(e.id))
    }
}

async fn lookup_path(fs: &VagonFs, path: &str) -> FsResult<AttrReply> {
    super::driver::walk(fs, path).await
}

async fn parent_ino(fs: &VagonFs, path: &str) -> u64 {
    let (dir, _) = split(path);
    if dir.is_empty() {
        ROOT_INO
    } else {
        lookup_path(fs, dir).await.expect("parent").attr.ino
    }
}

fn errno_of<T>(r: FsResult<T>) -> Result<T, i32> {
    r.map_err(|e| to_errno(&e))
}

/// Open `path` for writing (creating it when `create`), write, maybe fsync, close.
async fn write_file(fs: &VagonFs, path: &str, create: bool, op: (u64, &[u8], bool, bool)) {
    let (offset, data, trunc, fsync) = op;
    let (ino, fh) = if create {
        let parent = parent_ino(fs, path).await;
        let (_, name) = split(path);
        let (attr, open) = fs
            .create(parent, OsStr::new(name), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
        (attr.attr.ino, open.fh)
    } else {
        let ino = lookup_path(fs, path).await.expect("lookup").attr.ino;
        let flags = libc::O_WRONLY | if trunc { libc::O_TRUNC } else { 0 };
        (ino, fs.open(ino, flags).await.expect("open").fh)
    };
    fs.write(ino, fh, offset, data).await.expect("write");
    if fsync {
        // The upload's result: with transient faults it may fail; the engine retries.
        let _ = fs.fsync(ino, fh).await;
    }
    fs.flush(ino, fh).await.expect("close");
    fs.release(ino, fh).await.expect("release");
}

fn apply(w: &mut World, m: &mut Model, op: &Op) {
    if let Op::Crash = op {
        // No handle of the old daemon may outlive it. The recovered files show again once
        // their uploads landed: the view is compared after that.
        w.crash();
        return w.settle();
    }
    let fs = w.fs();
    match op {
        Op::Write {
            file,
            offset,
            data,
            trunc,
            fsync,
        } => {
            let path = FILES[*file];
            if !m.parent_exists(path) {
                return;
            }
            let exists = m.files.contains_key(path);
            let offset = u64::from(*offset);
            w.run(write_file(
                &fs,
                path,
                !exists,
                (offset, data, *trunc, *fsync),
            ));
            let content = m.files.entry(path.to_string()).or_default();
            if *trunc {
                content.clear();
            }
            let end = offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[offset as usize..end].copy_from_slice(data);
        }
        Op::Truncate { file, size } => {
            let path = FILES[*file];
            let Some(content) = m.files.get_mut(path) else {
                return;
            };
            w.run(async {
                let ino = lookup_path(&fs, path).await.expect("lookup").attr.ino;
                let set = SetAttr {
                    size: Some(u64::from(*size)),
                    ..SetAttr::default()
                };
                fs.setattr(ino, set).await.expect("truncate");
            });
            content.resize(usize::from(*size), 0);
        }
        Op::Rename { from, to } => {
            let (src, dst) = (FILES[*from], FILES[*to]);
            if src == dst || !m.files.contains_key(src) || !m.parent_exists(dst) || m.is_dir(dst) {
                return;
            }
            let result = w.run(async {
                let sp = parent_ino(&fs, src).await;
                let dp = parent_ino(&fs, dst).await;
                errno_of(
                    fs.rename(
                        sp,
                        OsStr::new(split(src).1),
                        dp,
                        OsStr::new(split(dst).1),
                        0,
                    )
                    .await,
                )
            });
            match result {
                Ok(()) => {
                    let data = m.files.remove(src).expect("checked");
                    m.files.insert(dst.to_string(), data);
                }
                // A file only on the server is copied by the rename itself; a transient fault
                // of that copy fails the rename and changes nothing.
                Err(libc::EIO) if w.faults => {}
                Err(e) => panic!("rename {src} -> {dst}: errno {e}"),
            }
        }
        Op::RenameDir { from, to } => {
            let (src, dst) = (DIRS[*from], DIRS[*to]);
            if src == dst || !m.is_dir(src) || m.is_dir(dst) || m.files.contains_key(dst) {
                return;
            }
            let result = w.run(async {
                errno_of(
                    fs.rename(ROOT_INO, OsStr::new(src), ROOT_INO, OsStr::new(dst), 0)
                        .await,
                )
            });
            match result {
                Ok(()) => {
                    let prefix = format!("{src}/");
                    let moved: Vec<String> = m
                        .files
                        .keys()
                        .filter(|p| p.starts_with(&prefix))
                        .cloned()
                        .collect();
                    for p in moved {
                        let data = m.files.remove(&p).expect("listed");
                        m.files
                            .insert(format!("{dst}/{}", &p[prefix.len()..]), data);
                    }
                    for c in &mut m.conflicts {
                        if c.0 == src {
                            c.0 = dst.to_string();
                        }
                    }
                    m.dirs.retain(|d| d != src);
                    m.dirs.push(dst.to_string());
                }
                // Not atomic (documented): a fault midway leaves what moved so far in the new
                // folder, the rest in the old one, both shown. Nothing moved: no new folder.
                Err(libc::EIO) if w.faults => {
                    if w.run(lookup_path(&fs, dst)).is_ok() {
                        m.dirs.push(dst.to_string());
                        let prefix = format!("{src}/");
                        let under: Vec<String> = m
                            .files
                            .keys()
                            .filter(|p| p.starts_with(&prefix))
                            .cloned()
                            .collect();
                        for p in under {
                            let moved = format!("{dst}/{}", &p[prefix.len()..]);
                            if w.run(lookup_path(&fs, &p)).is_err()
                                && w.run(lookup_path(&fs, &moved)).is_ok()
                            {
                                let data = m.files.remove(&p).expect("listed");
                                m.files.insert(moved, data);
                            }
                        }
                        // Conflict copies are children like any other: each is where the
                        // partial move left it.
                        let seen = w.run(mount_tree(&fs));
                        let holds = |dir: &str, name: &str, data: &Vec<u8>| {
                            seen.conflicts
                                .get(&format!("{dir}/{name}"))
                                .is_some_and(|copies| copies.contains(data))
                        };
                        for c in &mut m.conflicts {
                            if c.0 == src && !holds(src, &c.1, &c.2) && holds(dst, &c.1, &c.2) {
                                c.0 = dst.to_string();
                            }
                        }
                    }
                }
                Err(e) => panic!("rename {src} -> {dst}: errno {e}"),
            }
        }
        Op::Unlink { file } => {
            let path = FILES[*file];
            if m.files.remove(path).is_none() {
                return;
            }
            w.run(async {
                let parent = parent_ino(&fs, path).await;
                fs.unlink(parent, OsStr::new(split(path).1))
                    .await
                    .expect("unlink");
            });
        }
        Op::Mkdir { dir } => {
            let path = DIRS[*dir];
            let result =
                w.run(async { errno_of(fs.mkdir(ROOT_INO, OsStr::new(path), 0o755).await) });
            if m.is_dir(path) || m.files.contains_key(path) {
                assert_eq!(result.err(), Some(libc::EEXIST), "mkdir {path}");
            } else {
                result.unwrap_or_else(|e| panic!("mkdir {path}: errno {e}"));
                m.dirs.push(path.to_string());
            }
        }
        Op::Rmdir { dir } => {
            let path = DIRS[*dir];
            if !m.is_dir(path) {
                return;
            }
            let result = w.run(async { errno_of(fs.rmdir(ROOT_INO, OsStr::new(path)).await) });
            if m.dir_is_empty(path) {
                result.unwrap_or_else(|e| panic!("rmdir {path}: errno {e}"));
                m.dirs.retain(|d| d != path);
            } else {
                assert_eq!(result.err(), Some(libc::ENOTEMPTY), "rmdir {path}");
            }
        }
        Op::Other { file, data } => {
            let path = FILES[*file];
            let (dir, name) = split(path);
            if !m.parent_exists(path) {
                return;
            }
            w.settle();
            let Some(parent) = w.server_parent(dir) else {
                panic!("folder {dir} missing on the server after settling");
            };
            match data {
                Some(data) => {
                    w.mem.put_file(SPACE, parent, name, data);
                    m.files.insert(path.to_string(), data.clone());
                }
                None => {
                    if let Some(e) = w.mem.entry(SPACE, parent, name) {
                        w.mem.remove(e.id);
                    }
                    m.files.remove(path);
                }
            }
            w.expire_listings();
        }
        Op::Race { file, mine, theirs } => {
            let path = FILES[*file];
            let (dir, name) = split(path);
            if !m.files.contains_key(path) {
                return;
            }
            // The mount knows the current version; the user opens it to rewrite it.
            w.settle();
            let parent = w.server_parent(dir).expect("folder on the server");
            w.run(async {
                let ino = lookup_path(&fs, path).await.expect("lookup").attr.ino;
                let open = fs
                    .open(ino, libc::O_WRONLY | libc::O_TRUNC)
                    .await
                    .expect("open");
                fs.write(ino, open.fh, 0, &mine[..]).await.expect("write");
                w.mem.put_file(SPACE, parent, name, theirs);
                fs.flush(ino, open.fh).await.expect("close");
                fs.release(ino, open.fh).await.expect("release");
            });
            m.files.insert(path.to_string(), theirs.clone());
            m.conflicts
                .push((dir.to_string(), name.to_string(), mine.clone()));
            // What the mount shows of `path` is defined again once the copy is up.
            w.settle();
        }
        Op::Forget => w.run(forget_all(&fs)),
        Op::Crash => unreachable!("handled above"),
    }
}

/// What the kernel does under memory pressure: every inode below the root it reached through
/// readdir is forgotten (its whole lookup count), leaves first.
async fn forget_all(fs: &VagonFs) {
    let mut seen = Vec::new();
    let mut stack = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        for e in list(fs, ino).await {
            let name = e.name.to_string_lossy();
            if name == "." || name == ".." {
                continue;
            }
            seen.push(e.attr.ino);
            if e.attr.kind == NodeKind::Directory {
                stack.push(e.attr.ino);
            }
        }
    }
    for ino in seen.into_iter().rev() {
        fs.forget(ino, u64::MAX);
    }
}

/// Run `ops`; after each, the mount's view equals the model (conflict copies aside); at the
/// end, settled, the server and the mount equal it, conflict copies included.
pub(super) fn check(ops: &[Op], delay: Duration, faults: bool) -> Result<(), TestCaseError> {
    let mut w = World::new(delay, faults);
    let mut m = Model::default();
    for (i, op) in ops.iter().enumerate() {
        apply(&mut w, &mut m, op);
        let fs = w.fs();
        let mut seen = w.run(mount_tree(&fs));
        seen.conflicts.clear();
        prop_assert_eq!(
            &seen,
            &m.expected(false),
            "the mount's view after step {} ({:?})",
            i,
            op
        );
    }
    w.settle();
    let expected = m.expected(true);
    prop_assert_eq!(&server_tree(&w.mem), &expected, "the server, settled");
    let fs = w.fs();
    prop_assert_eq!(&w.run(mount_tree(&fs)), &expected, "the mount, settled");
    Ok(())
}

/// Without `PROPTEST_CASES` (CI, `cargo test`): a fixed seed, so the quick run checks the same
/// cases every time (the seeds of past failures in `proptest-regressions/` run first); with it,
/// a random seed (or `PROPTEST_RNG_SEED`) to explore.
fn rng_seed() -> proptest::test_runner::RngSeed {
    match std::env::var("PROPTEST_CASES") {
        Ok(_) => ProptestConfig::default().rng_seed,
        Err(_) => proptest::test_runner::RngSeed::Fixed(DEFAULT_SEED),
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: rng_seed(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    // Its findings so far, each fixed with a regression test of its own:
    // - a file written and closed, then a crash while part uploads fail: the recovered upload
    //   failed transiently once and was never tried again while the mount lived (`VagonFs::
    //   recover` retries with backoff; `a_crash_while_part_uploads_fail_still_lands_the_file`);
    // - write `a`, then another client deletes `a`: the mount kept showing `a` (reads: ESTALE)
    //   for the overlay's grace period even over listings fetched after the delete; and a file
    //   uploaded into a folder made by this mount vanished from the view once that grace ended
    //   while the empty listing seeded by mkdir was still cached. A settled overlay name now
    //   shows over listings fetched before it landed, and only over those (`overlay.rs`;
    //   `a_file_deleted_elsewhere_after_it_landed_goes_with_the_next_listing`,
    //   `a_file_uploaded_into_a_new_folder_stays_shown`).
    #[test]
    fn the_server_and_the_mount_follow_the_model(
        ops in prop::collection::vec(op(), 1..24),
        delay in prop_oneof![Just(Duration::ZERO), Just(Duration::from_secs(1))],
        faults in any::<bool>(),
    ) {
        check(&ops, delay, faults)?;
    }
}
