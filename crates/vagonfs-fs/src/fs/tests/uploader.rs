//! Tests of the write path against the in-memory [`MemApi`] double, wrapped in the fault
//! injector: no kernel, no network.
//!
//! Parallelism and memory bounds are checked by counting (parts held at a gate of the wrapper,
//! part buffers alive in the uploader), never by timing. The only timeouts turn a would-be hang
//! (e.g. an uploader that never sends parts in parallel) into a failure.

use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use crate::api::{FilesApi, Space};
use crate::fs::FsError;
use crate::fs::errno::to_errno;

use crate::api::ApiError;
use crate::api::faulty::{ApiMethod, Fault, FaultTiming, FaultyFilesApi, Variant};
use crate::api::mem::{MemApi, part_number, status};
use crate::fs::write::*;

/// Turns a hang into a failure; generous because the machine is shared.
pub(super) const HANG_GUARD: Duration = Duration::from_secs(120);

pub(super) const SPACE: Space = Space::Machine(3);

pub(super) struct Env {
    pub(super) _tmp: tempfile::TempDir,
    pub(super) dir: Arc<SpoolDir>,
    /// What the server holds.
    pub(super) mem: Arc<MemApi>,
    /// The same server behind the fault injector (faults, holds, call counts).
    pub(super) api: Arc<FaultyFilesApi<MemApi>>,
    pub(super) uploader: Uploader,
}

/// The double, the fault injector around it, and the latter as the core sees it.
pub(super) fn server() -> (Arc<MemApi>, Arc<FaultyFilesApi<MemApi>>, Arc<dyn FilesApi>) {
    let mem = MemApi::new();
    let api = Arc::new(FaultyFilesApi::new(Arc::clone(&mem), 1));
    let dyn_api: Arc<dyn FilesApi> = api.clone();
    (mem, api, dyn_api)
}

/// What an upload that used up its retries answers.
pub(super) fn retries_exhausted() -> ApiError {
    ApiError::RetriesExhausted {
        attempts: 4,
        last: Box::new(status("PUT part", 503)),
    }
}

pub(super) fn env(chunk_mb: u64, concurrency: usize) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = SpoolDir::open(&tmp.path().join("mount-key")).expect("spool dir");
    let (mem, api, dyn_api) = server();
    let uploader = Uploader::new(dyn_api, UploadRegistry::new())
        .with_chunk_size_mb(chunk_mb)
        .with_concurrency(concurrency);
    Env {
        _tmp: tmp,
        dir,
        mem,
        api,
        uploader,
    }
}

pub(super) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

pub(super) fn target(name: &str) -> FileTarget {
    FileTarget {
        space: SPACE,
        parent_id: None,
        name: name.into(),
        display_path: name.into(),
    }
}

/// Every journal record in the folder.
pub(super) fn records(dir: &SpoolDir) -> Vec<JournalRecord> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.path()).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".journal.json") {
            out.push(JournalRecord::read(&p).expect("record"));
        }
    }
    out
}

/// Spool files in the folder.
pub(super) fn spool_files(dir: &SpoolDir) -> usize {
    std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "spool"))
        })
        .count()
}

pub(super) fn errno_of(e: WriteError) -> i32 {
    to_errno(&FsError::from(e))
}

#[tokio::test]
async fn sizes_around_the_chunk_arrive_byte_identical() {
    let e = env(1, 3);
    let mib = MIB as usize;
    let sizes = [0, 1, mib - 1, mib, mib + 1, 3 * mib + mib / 2];
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("file-{i}.bin");
        let data = random_bytes(size, i as u64);
        let f = SpooledFile::create_new(&e.dir, target(&name))
            .await
            .expect("create");
        // Written in uneven pieces, like a program would.
        let mut off = 0;
        while off < size {
            let n = (size - off).min(200_000 + i * 7);
            assert_eq!(
                f.write(off as u64, &data[off..off + n])
                    .await
                    .expect("write"),
                n as u32
            );
            off += n;
        }
        let up = f
            .upload(&e.uploader)
            .await
            .expect("upload")
            .expect("was dirty");
        assert_eq!(up.size, size as u64);
        assert_eq!(
            e.mem.content(SPACE, None, &name).expect("listed"),
            data,
            "size {size}"
        );
        let req = e.mem.creates().pop().expect("a create");
        assert_eq!(
            (req.size, req.chunk_size_mb, req.overwrite),
            (Some(size as u64), Some(1), false)
        );
        assert_eq!(
            req.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert!(!f.is_dirty());
        assert!(records(&e.dir).is_empty(), "record removed after upload");
        // A second flush has nothing to send.
        assert_eq!(f.upload(&e.uploader).await.expect("noop"), None);
    }
    // One part per started MiB, and one (empty) part for the empty file.
    let expected_parts: u32 = [1, 1, 1, 1, 2, 4].iter().sum();
    assert_eq!(e.mem.parts_stored(), expected_parts);
    assert_eq!(e.mem.completes(), sizes.len() as u32);
}

#[tokio::test]
async fn the_part_url_count_is_checked_and_none_is_tolerated_for_empty_files() {
    let e = env(1, 2);
    e.api.set_variant(Variant::NoPartUrlForEmptyFile, true);
    let f = SpooledFile::create_new(&e.dir, target("empty"))
        .await
        .expect("create");
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    assert_eq!(e.mem.content(SPACE, None, "empty").expect("listed"), b"");
    assert_eq!(e.api.calls(ApiMethod::UploadPart), 0);
    // A part count that does not fit the size stops before any byte is sent.
    e.api.set_variant(Variant::NoPartUrlForEmptyFile, false);
    e.api.set_variant(Variant::ExtraPartUrl, true);
    let g = SpooledFile::create_new(&e.dir, target("one"))
        .await
        .expect("create");
    g.write(0, b"x").await.expect("write");
    let err = g.upload(&e.uploader).await.expect_err("wrong URL count");
    assert!(matches!(err, WriteError::Protocol(_)), "{err:?}");
    assert_eq!(errno_of(err), libc::EIO);
    assert_eq!(
        (e.api.calls(ApiMethod::UploadPart), e.mem.completes()),
        (0, 1)
    );
    assert!(g.is_dirty());
}

#[tokio::test]
async fn content_type_follows_the_extension() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("notes.TXT"))
        .await
        .expect("create");
    f.write(0, b"hello").await.expect("write");
    f.upload(&e.uploader).await.expect("upload");
    assert_eq!(
        e.mem.content_type_of(SPACE, None, "notes.TXT").as_deref(),
        Some("text/plain")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_go_in_parallel_but_never_more_than_concurrency() {
    let e = env(1, 4);
    let data = random_bytes(10 * MIB as usize, 7);
    let path = e.dir.path().join("plain-source");
    std::fs::write(&path, &data).expect("source");
    let source = PartSource::open(&path).expect("open");
    e.api.hold(ApiMethod::UploadPart, None);
    let ticket = e.uploader.registry().register("big.bin", source.len());
    let progress = Arc::clone(ticket.progress());
    let uploader = e.uploader.clone();
    let tgt = UploadTarget {
        space: SPACE,
        parent_id: None,
        name: "big.bin".into(),
        content_type: None,
        overwrite: false,
    };
    let task =
        tokio::spawn(async move { uploader.upload_tracked(source, &tgt, &ticket, None).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 4))
        .await
        .expect("4 parts in flight at once");
    assert_eq!(e.api.in_flight(ApiMethod::UploadPart), 4);
    assert_eq!(
        e.uploader.registry().active()[0].state,
        UploadState::Sending
    );
    // Let them through one at a time: each release makes room for exactly one more.
    for done in 1..=10 {
        e.api.release(ApiMethod::UploadPart, 1);
        if done <= 6 {
            tokio::time::timeout(
                HANG_GUARD,
                e.api.wait_arrivals(ApiMethod::UploadPart, 4 + done),
            )
            .await
            .expect("next part");
        }
        assert!(e.api.in_flight(ApiMethod::UploadPart) <= 4);
    }
    let up = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("finishes")
        .expect("joined")
        .expect("upload");
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(e.api.max_in_flight(ApiMethod::UploadPart), 4);
    assert!(
        progress.max_parts_in_memory() <= 4,
        "{}",
        progress.max_parts_in_memory()
    );
    assert_eq!(progress.bytes_sent(), data.len() as u64);
    assert_eq!(e.mem.content(SPACE, None, "big.bin").expect("listed"), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_in_memory_stay_within_concurrency() {
    let e = env(1, 2);
    let data = random_bytes(9 * MIB as usize + 3, 8);
    let f = SpooledFile::create_new(&e.dir, target("mem.bin"))
        .await
        .expect("create");
    f.write(0, &data[..]).await.expect("write");
    let ticket = e.uploader.registry().register("mem.bin", f.len());
    let tgt = UploadTarget {
        space: SPACE,
        parent_id: None,
        name: "mem.bin".into(),
        content_type: None,
        overwrite: false,
    };
    e.uploader
        .upload_tracked(f.spool().part_source(), &tgt, &ticket, None)
        .await
        .expect("upload");
    let max = ticket.progress().max_parts_in_memory();
    assert!((1..=2).contains(&max), "parts in memory at once: {max}");
    assert!(e.api.max_in_flight(ApiMethod::UploadPart) <= 2);
    assert_eq!(e.mem.content(SPACE, None, "mem.bin").expect("listed"), data);
}

/// Each file's upload in a task of its own, all through `uploader`.
fn spawn_uploads(
    files: &[Arc<SpooledFile>],
    uploader: &Uploader,
) -> Vec<tokio::task::JoinHandle<WriteResult<Option<Uploaded>>>> {
    files
        .iter()
        .map(|f| {
            let (f, u) = (Arc::clone(f), uploader.clone());
            tokio::spawn(async move { f.upload(&u).await })
        })
        .collect()
}

/// Wait for [`spawn_uploads`]' tasks: each must have uploaded its (dirty) file.
async fn join_uploads(tasks: Vec<tokio::task::JoinHandle<WriteResult<Option<Uploaded>>>>) {
    for t in tasks {
        t.await.expect("joined").expect("upload").expect("dirty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_part_budget_is_shared_by_all_uploads() {
    let e = env(1, 2);
    let uploader = e.uploader.clone().with_part_memory(3 * MIB);
    let mut files = Vec::new();
    for (i, name) in ["one.bin", "two.bin"].iter().enumerate() {
        let f = SpooledFile::create_new(&e.dir, target(name))
            .await
            .expect("create");
        f.write(0, random_bytes(4 * MIB as usize, 20 + i as u64))
            .await
            .expect("write");
        files.push(f);
    }
    e.api.hold(ApiMethod::UploadPart, None);
    let tasks = spawn_uploads(&files, &uploader);
    // Each upload alone may have 2 parts out; together they may have 3, not 4.
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 3))
        .await
        .expect("3 parts out");
    assert_eq!(e.api.in_flight(ApiMethod::UploadPart), 3);
    e.api.unhold(ApiMethod::UploadPart);
    join_uploads(tasks).await;
    assert_eq!(e.api.max_in_flight(ApiMethod::UploadPart), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_parts_take_a_small_share_of_the_part_budget() {
    // A budget of 1 MiB holds one 1 MiB part, but eight 4 KiB files all send at once: the
    // budget counts bytes, not parts, so small files are not held back by large ones' share.
    let e = env(1, 2);
    let uploader = e.uploader.clone().with_part_memory(MIB);
    let mut files = Vec::new();
    for i in 0..8u64 {
        let f = SpooledFile::create_new(&e.dir, target(&format!("small{i}.txt")))
            .await
            .expect("create");
        f.write(0, random_bytes(4096, 40 + i)).await.expect("write");
        files.push(f);
    }
    e.api.hold(ApiMethod::UploadPart, None);
    let tasks = spawn_uploads(&files, &uploader);
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 8))
        .await
        .expect("8 small parts out together");
    e.api.unhold(ApiMethod::UploadPart);
    join_uploads(tasks).await;
    // A part larger than the whole budget takes all of it and still goes.
    let big = SpooledFile::create_new(&e.dir, target("big.bin"))
        .await
        .expect("create");
    let data = random_bytes(3 * MIB as usize / 2, 50);
    big.write(0, data.clone()).await.expect("write");
    let uploader = e
        .uploader
        .clone()
        .with_part_memory(64 * 1024)
        .with_chunk_size_mb(1);
    tokio::time::timeout(HANG_GUARD, big.upload(&uploader))
        .await
        .expect("a part larger than the budget does not wait forever")
        .expect("upload")
        .expect("dirty");
    assert_eq!(uploader.part_memory(), 64 * 1024);
    assert_eq!(e.mem.content(SPACE, None, "big.bin").expect("listed"), data);
}

#[tokio::test]
async fn quota_full_is_enospc_and_keeps_the_spool() {
    let e = env(1, 2);
    e.mem.set_quota(MIB);
    let data = random_bytes(2 * MIB as usize, 9);
    let f = SpooledFile::create_new(&e.dir, target("big.dat"))
        .await
        .expect("create");
    f.write(0, &data[..]).await.expect("write");
    let err = f.upload(&e.uploader).await.expect_err("quota");
    assert_eq!(errno_of(err), libc::ENOSPC);
    assert!(f.is_dirty());
    let recs = records(&e.dir);
    assert_eq!(recs.len(), 1);
    // Refused at create: the record still says dirty (no attempt id to remember).
    assert_eq!(
        (
            recs[0].name.as_str(),
            recs[0].state,
            recs[0].pending_upload_id
        ),
        ("big.dat", JournalState::Dirty, None)
    );
    assert_eq!(spool_files(&e.dir), 1);
    let failed = e.uploader.registry().recent();
    assert_eq!(failed[0].state, UploadState::Failed);
    // Room again: the next flush succeeds from the kept spool.
    e.mem.set_quota(1 << 30);
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    assert_eq!(e.mem.content(SPACE, None, "big.dat").expect("listed"), data);
    assert!(records(&e.dir).is_empty());
}

#[tokio::test]
async fn quota_exceeded_at_complete_is_enospc_too() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("x.bin"))
        .await
        .expect("create");
    f.write(0, random_bytes(MIB as usize, 1))
        .await
        .expect("write");
    // Fits at create, but someone else fills the storage before complete.
    e.mem.set_quota(MIB + 10);
    e.api.hold(ApiMethod::UploadPart, None);
    let (mem, faulty) = (Arc::clone(&e.mem), Arc::clone(&e.api));
    let filler = tokio::spawn(async move {
        faulty.wait_arrivals(ApiMethod::UploadPart, 1).await;
        mem.put_file(Space::Shared, None, "other", [0u8; 20]);
        faulty.unhold(ApiMethod::UploadPart);
    });
    let err = f.upload(&e.uploader).await.expect_err("quota at complete");
    filler.await.expect("filler");
    assert_eq!(errno_of(err), libc::ENOSPC);
    assert_eq!(records(&e.dir).len(), 1);
}

#[tokio::test]
async fn a_failing_part_is_eio_and_keeps_the_journal() {
    let e = env(1, 2);
    e.api.fail_where(
        ApiMethod::UploadPart,
        move |c| c.url.and_then(part_number) == Some(2),
        Fault::Error(retries_exhausted()),
    );
    let data = random_bytes(3 * MIB as usize, 10);
    let f = SpooledFile::create_new(&e.dir, target("fail.bin"))
        .await
        .expect("create");
    f.write(0, &data[..]).await.expect("write");
    let err = f.upload(&e.uploader).await.expect_err("part 2 fails");
    assert_eq!(errno_of(err), libc::EIO);
    assert_eq!(e.mem.completes(), 0);
    assert!(
        e.mem.entry(SPACE, None, "fail.bin").is_none(),
        "never listed"
    );
    let recs = records(&e.dir);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].state, JournalState::Uploading);
    let created = e.mem.creates().len();
    assert_eq!(created, 1);
    assert!(recs[0].pending_upload_id.is_some());
    // The fault goes away: the next flush uploads.
    e.api.clear_where(ApiMethod::UploadPart);
    f.upload(&e.uploader).await.expect("retry").expect("dirty");
    assert_eq!(
        e.mem.content(SPACE, None, "fail.bin").expect("listed"),
        data
    );
}

#[tokio::test]
async fn a_refused_part_link_restarts_from_create_once() {
    let e = env(1, 1);
    let data = random_bytes(2 * MIB as usize, 11);
    let f = SpooledFile::create_new(&e.dir, target("r.bin"))
        .await
        .expect("create");
    f.write(0, &data[..]).await.expect("write");
    e.api
        .fail_next(ApiMethod::UploadPart, 1, Fault::LinkRefused);
    f.upload(&e.uploader)
        .await
        .expect("restart works")
        .expect("dirty");
    assert_eq!(e.mem.creates().len(), 2);
    // One refused PUT, then both parts of the fresh upload.
    assert_eq!(e.api.calls(ApiMethod::UploadPart), 3);
    assert_eq!(e.mem.content(SPACE, None, "r.bin").expect("listed"), data);
    // Refused again after the restart: give up, EIO.
    f.write(0, b"x").await.expect("write");
    e.api
        .fail_next(ApiMethod::UploadPart, 10, Fault::LinkRefused);
    let err = f.upload(&e.uploader).await.expect_err("refused twice");
    assert_eq!(errno_of(err), libc::EIO);
    assert_eq!(e.mem.creates().len(), 4);
    assert_eq!(
        e.api.calls(ApiMethod::UploadPart),
        5,
        "the first part of each attempt, then it stops"
    );
}

#[tokio::test]
async fn a_new_file_whose_name_was_taken_meanwhile_becomes_a_conflict_copy() {
    let e = env(1, 2);
    e.mem.put_file(SPACE, None, "taken.txt", b"theirs");
    let f = SpooledFile::create_new(&e.dir, target("taken.txt"))
        .await
        .expect("create");
    f.write(0, b"mine").await.expect("write");
    f.upload(&e.uploader)
        .await
        .expect("uploaded")
        .expect("something sent");
    assert_eq!(
        e.mem.content(SPACE, None, "taken.txt").expect("listed"),
        b"theirs",
        "the other client's file is untouched"
    );
    let copy = f.target().name;
    assert!(
        copy.starts_with("taken (conflict ") && copy.ends_with(").txt"),
        "{copy}"
    );
    assert_eq!(e.mem.content(SPACE, None, &copy).expect("copy"), b"mine");
    assert!(!f.is_dirty());
}

#[tokio::test]
async fn truncating_open_replaces_the_remote_file() {
    let e = env(1, 2);
    let old = e.mem.put_file(SPACE, None, "t.txt", b"old content");
    let f = SpooledFile::create_truncated(&e.dir, target("t.txt"), RemoteBase::from_entry(&old))
        .await
        .expect("create");
    // Opened with O_TRUNC and closed without a write: the file becomes empty.
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    assert_eq!(e.mem.content(SPACE, None, "t.txt").expect("listed"), b"");
    assert!(e.mem.creates()[0].overwrite);
}

#[tokio::test]
async fn lazy_fill_only_when_a_mutation_needs_the_old_bytes() {
    let e = env(1, 2);
    let original = random_bytes(3 * MIB as usize + 17, 12);
    let entry = e.mem.put_file(SPACE, None, "doc.bin", &original);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let f = SpooledFile::open_existing(
        &e.dir,
        target("doc.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(dyn_api, entry.id),
    )
    .expect("open");
    assert_eq!(f.len(), original.len() as u64);
    assert!(!f.is_dirty());
    assert!(!f.spool().is_filled());
    assert_eq!(
        Some(f.modified()),
        entry.modified,
        "the server's time until written"
    );
    assert_eq!(e.mem.bytes_served(), 0, "opening fetches nothing");
    // A read before any write passes through, fetching only what was asked.
    let got = f.read(MIB + 3, 100).await.expect("read");
    assert_eq!(&got[..], &original[MIB as usize + 3..MIB as usize + 103]);
    assert_eq!(e.mem.bytes_served(), 100);
    assert!(!f.spool().is_filled());
    assert!(records(&e.dir).is_empty(), "no record while clean");
    // A partial overwrite without O_TRUNC needs the old bytes around it.
    f.write(MIB + 5, b"PATCH").await.expect("write");
    assert!(
        Some(f.modified()) > entry.modified,
        "a write moves the local time"
    );
    assert!(f.spool().is_filled());
    assert_eq!(e.mem.bytes_served(), 100 + original.len() as u64);
    let recs = records(&e.dir);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].base, Some(RemoteBase::from_entry(&entry)));
    // Read-after-write comes from the spool.
    assert_eq!(
        &f.read(MIB + 4, 7).await.expect("read")[..],
        &[
            original[MIB as usize + 4],
            b'P',
            b'A',
            b'T',
            b'C',
            b'H',
            original[MIB as usize + 10]
        ]
    );
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    let mut expected = original.clone();
    expected[MIB as usize + 5..MIB as usize + 10].copy_from_slice(b"PATCH");
    assert_eq!(
        e.mem.content(SPACE, None, "doc.bin").expect("listed"),
        expected
    );
    assert!(
        e.mem.creates()[0].overwrite,
        "replacing the file it was opened from"
    );
}

#[tokio::test]
async fn the_fill_survives_an_expired_download_link() {
    let e = env(1, 2);
    let original = random_bytes(5 * MIB as usize, 16);
    let entry = e.mem.put_file(SPACE, None, "long.bin", &original);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let f = SpooledFile::open_existing(
        &e.dir,
        target("long.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(dyn_api, entry.id),
    )
    .expect("open");
    assert_eq!(&f.read(0, 4).await.expect("read")[..], &original[..4]);
    assert_eq!(e.api.calls(ApiMethod::FileLink), 1);
    e.mem.expire_links();
    f.write(original.len() as u64, b"tail")
        .await
        .expect("append after a fill");
    assert_eq!(
        e.api.calls(ApiMethod::FileLink),
        2,
        "one fresh link after the refusal"
    );
    f.upload(&e.uploader).await.expect("upload");
    let mut expected = original;
    expected.extend_from_slice(b"tail");
    assert_eq!(
        e.mem.content(SPACE, None, "long.bin").expect("listed"),
        expected
    );
}

/// The fill of a file of 6 pieces and a bit: the first piece alone (it fetches the link), then
/// [`FILL_AHEAD`] pieces in flight at once, written in order; a piece that fails keeps what came
/// before it, and the next mutation resumes there, each byte fetched once more at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_fetches_pieces_four_at_a_time_and_resumes_after_a_failure() {
    let e = env(1, 2);
    let len = 6 * FILL_BLOCK as usize + 17;
    let original = random_bytes(len, 21);
    let entry = e.mem.put_file(SPACE, None, "big.bin", &original);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let f = SpooledFile::open_existing(
        &e.dir,
        target("big.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(dyn_api, entry.id),
    )
    .expect("open");
    e.api.hold(ApiMethod::GetRange, None);
    let f2 = Arc::clone(&f);
    let append = tokio::spawn(async move { f2.write(len as u64, b"tail").await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::GetRange, 1))
        .await
        .expect("first piece asked");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(e.api.in_flight(ApiMethod::GetRange), 1, "the first alone");
    e.api.release(ApiMethod::GetRange, 1);
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::GetRange, 5))
        .await
        .expect("four more asked");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        e.api.in_flight(ApiMethod::GetRange),
        4,
        "FILL_AHEAD pieces at once"
    );
    e.api.unhold(ApiMethod::GetRange);
    append
        .await
        .expect("joined")
        .expect("append after the fill");
    assert_eq!(e.api.calls(ApiMethod::GetRange), 7, "one GET per piece");
    assert_eq!(e.api.max_in_flight(ApiMethod::GetRange), FILL_AHEAD);
    assert_eq!(e.api.calls(ApiMethod::FileLink), 1, "one link for the fill");
    f.upload(&e.uploader).await.expect("upload");
    let mut expected = original.clone();
    expected.extend_from_slice(b"tail");
    assert!(e.mem.content(SPACE, None, "big.bin").expect("listed") == expected);

    // Another file; its third piece fails: the fill stops there, and the write with it.
    let other = e.mem.put_file(SPACE, None, "other.bin", &original[..len]);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let g = SpooledFile::open_existing(
        &e.dir,
        target("other.bin"),
        RemoteBase::from_entry(&other),
        ApiRemote::new(dyn_api, other.id),
    )
    .expect("open");
    e.api.reset_counters();
    let served = e.mem.bytes_served();
    e.api.fail_after_calls(
        ApiMethod::GetRange,
        2,
        1,
        Fault::Transport,
        FaultTiming::Before,
    );
    g.write(len as u64, b"end")
        .await
        .expect_err("a piece failed");
    assert!(!g.spool().is_filled());
    g.write(len as u64, b"end").await.expect("resumed");
    let refetched = e.mem.bytes_served() - served - len as u64;
    assert!(
        refetched <= 2 * FILL_BLOCK,
        "only the pieces in flight past the failure are fetched again: {refetched}"
    );
    g.upload(&e.uploader).await.expect("upload");
    let mut expected = original[..len].to_vec();
    expected.extend_from_slice(b"end");
    assert!(e.mem.content(SPACE, None, "other.bin").expect("listed") == expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_flushes_at_once_upload_once() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("twice.txt"))
        .await
        .expect("create");
    f.write(0, b"once").await.expect("write");
    e.api.hold(ApiMethod::UploadPart, None);
    let (f1, u1) = (Arc::clone(&f), e.uploader.clone());
    let first = tokio::spawn(async move { f1.upload(&u1).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 1))
        .await
        .expect("first sending");
    // The second flush waits at the file's gate; one poll takes it there. It must not list the
    // file a second time while the first upload is running.
    let mut second = Box::pin(f.upload(&e.uploader));
    assert!(
        futures::poll!(&mut second).is_pending(),
        "waits for the first"
    );
    let active = e.uploader.registry().active();
    assert_eq!(active.len(), 1, "the file is listed once: {active:?}");
    assert_ne!(active[0].state, UploadState::Queued);
    e.api.unhold(ApiMethod::UploadPart);
    let a = first.await.expect("joined").expect("first");
    let b = second.await.expect("second");
    assert!(a.is_some());
    assert_eq!(b, None, "the second found the file clean");
    assert!(e.uploader.registry().active().is_empty());
    assert_eq!(e.mem.creates().len(), 1);
    assert_eq!(
        e.mem.content(SPACE, None, "twice.txt").expect("listed"),
        b"once"
    );
}

#[tokio::test]
async fn truncate_fills_only_the_kept_prefix() {
    let e = env(1, 2);
    let original = random_bytes(2 * MIB as usize, 13);
    let entry = e.mem.put_file(SPACE, None, "cut.bin", &original);
    let dyn_api: Arc<dyn FilesApi> = e.api.clone();
    let f = SpooledFile::open_existing(
        &e.dir,
        target("cut.bin"),
        RemoteBase::from_entry(&entry),
        ApiRemote::new(dyn_api, entry.id),
    )
    .expect("open");
    f.set_len(1000).await.expect("truncate");
    assert_eq!(e.mem.bytes_served(), 1000);
    // Growing again reads as zeros, not as the old remote bytes.
    f.set_len(3000).await.expect("extend");
    let got = f.read(0, 4000).await.expect("read");
    assert_eq!(got.len(), 3000);
    assert_eq!(&got[..1000], &original[..1000]);
    assert!(got[1000..].iter().all(|b| *b == 0));
    f.upload(&e.uploader).await.expect("upload");
    assert_eq!(
        e.mem.content(SPACE, None, "cut.bin").expect("listed"),
        got.to_vec()
    );
}

#[tokio::test]
async fn sparse_writes_read_back_zeros_in_the_hole() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("sparse"))
        .await
        .expect("create");
    f.write(5000, b"end").await.expect("write");
    assert_eq!(f.len(), 5003);
    let got = f.read(0, 10_000).await.expect("read");
    assert_eq!(got.len(), 5003);
    assert!(got[..5000].iter().all(|b| *b == 0));
    assert_eq!(&got[5000..], b"end");
    assert!(f.read(5003, 10).await.expect("eof").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_an_upload_keep_the_file_dirty() {
    let e = env(1, 2);
    let f = SpooledFile::create_new(&e.dir, target("live.txt"))
        .await
        .expect("create");
    f.write(0, b"version one").await.expect("write");
    e.api.hold(ApiMethod::UploadPart, None);
    let (f2, up) = (Arc::clone(&f), e.uploader.clone());
    let task = tokio::spawn(async move { f2.upload(&up).await });
    tokio::time::timeout(HANG_GUARD, e.api.wait_arrivals(ApiMethod::UploadPart, 1))
        .await
        .expect("part sent");
    f.write(8, b"two").await.expect("write during upload");
    e.api.unhold(ApiMethod::UploadPart);
    task.await.expect("joined").expect("upload").expect("dirty");
    assert!(f.is_dirty(), "the newer bytes are not uploaded yet");
    let recs = records(&e.dir);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].state, JournalState::Dirty);
    f.upload(&e.uploader).await.expect("upload").expect("dirty");
    assert_eq!(
        e.mem.content(SPACE, None, "live.txt").expect("listed"),
        b"version two"
    );
    assert!(!f.is_dirty());
    assert!(records(&e.dir).is_empty());
}
