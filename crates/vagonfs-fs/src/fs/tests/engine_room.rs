//! The write-back engine and the room it has (`fs/room.rs`), through `VagonFs` over the
//! in-memory double: with the quota known, a change that cannot fit is ENOSPC at once; landed
//! uploads count against the quota; a full storage is learnt from a failed upload; a full
//! spool folder waits for uploads to drain. (Split from `engine.rs`, whose `Env` it shares.)

use std::ffi::OsStr;
use std::time::Duration;

use super::driver::errno;
use super::engine::{SPACE, env, env_with, overwrite, put};
use crate::api::faulty::ApiMethod;
use crate::fs::engine::WriteBack;
use crate::fs::*;

/// With the quota known (statfs), a write or close that clearly cannot fit, counting what is
/// still waiting to be uploaded, answers ENOSPC at once, without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_that_cannot_fit_the_known_quota_is_enospc_at_once() {
    let e = env(Duration::from_secs(30));
    e.mem().set_quota(1000);
    e.fs.statfs(ROOT_INO).await.expect("statfs");
    put(&e.fs, ROOT_INO, "first", &[1; 600]).await;
    let creates = e.calls(ApiMethod::Create);
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("second"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    e.fs.write(ino, open.fh, 0, &[2; 300]).await.expect("fits");
    assert_eq!(
        errno(e.fs.write(ino, open.fh, 300, &[2; 300]).await),
        Some(libc::ENOSPC),
        "600 waiting + 600 > 1000"
    );
    // A truncate that grows it is refused the same way.
    let grow = SetAttr {
        size: Some(5000),
        fh: Some(open.fh),
        ..SetAttr::default()
    };
    assert_eq!(errno(e.fs.setattr(ino, grow).await), Some(libc::ENOSPC));
    e.fs.flush(ino, open.fh)
        .await
        .expect("300 bytes fit at close");
    e.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(e.calls(ApiMethod::Create), creates, "nothing was sent");
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    // 900 of 1000 used now. The server takes a replacement only when its whole size is free
    // (it frees the old bytes at complete): 650 bytes are refused at once, 90 fit.
    tokio::time::sleep(statfs::STATFS_TTL).await;
    e.fs.statfs(ROOT_INO).await.expect("statfs");
    assert_eq!(
        errno(overwrite(&e.fs, ROOT_INO, "first", &[3; 650]).await),
        Some(libc::ENOSPC)
    );
    overwrite(&e.fs, ROOT_INO, "first", &[4; 90])
        .await
        .expect("90 bytes fit");
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert_eq!(e.mem().content(SPACE, None, "first").unwrap(), vec![4; 90]);
}

/// The quota check subtracts what uploads from here added since the numbers were learnt: a
/// file that landed counts against the free space at once, without a capacity request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_landed_upload_counts_against_the_known_quota() {
    let e = env(Duration::ZERO);
    e.mem().set_quota(1000);
    e.fs.statfs(ROOT_INO).await.expect("statfs");
    let asked = e.calls(ApiMethod::Capacity);
    put(&e.fs, ROOT_INO, "first", &[1; 600]).await;
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("second"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    assert_eq!(
        errno(e.fs.write(attr.attr.ino, open.fh, 0, &[2; 600]).await),
        Some(libc::ENOSPC),
        "600 landed + 600 > 1000"
    );
    e.fs.write(attr.attr.ino, open.fh, 0, &[2; 300])
        .await
        .expect("300 fit");
    assert_eq!(e.calls(ApiMethod::Capacity), asked, "no capacity request");
    // statfs shows it too (df after a copy).
    let s = e.fs.statfs(ROOT_INO).await.expect("statfs");
    assert_eq!(
        s.blocks_free, 0,
        "1000 - 600 bytes is less than one 4 KiB block"
    );
    e.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    e.fs.release(attr.attr.ino, open.fh).await.expect("release");
}

/// A 507 from an upload teaches the mount the quota (one capacity request, in the background),
/// so the next change that cannot fit is refused at its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_storage_is_learnt_from_a_failed_upload() {
    let e = env(Duration::ZERO);
    e.mem().set_quota(100);
    put(&e.fs, ROOT_INO, "big", &[1; 200]).await;
    e.until("the quota was asked after the 507", |e| {
        e.calls(ApiMethod::Capacity) == 1 && !e.fs.upload_failures().is_empty()
    })
    .await;
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("also-big"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    assert_eq!(
        errno(e.fs.write(attr.attr.ino, open.fh, 0, &[2; 200]).await),
        Some(libc::ENOSPC)
    );
    e.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert_eq!(e.calls(ApiMethod::Capacity), 1);
}

/// `--cache-max-size`: a write that would pass the bound waits for uploads to drain the spool
/// (and goes on once one did); a file larger than the bound, or a spool full of files still
/// open, is ENOSPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_waits_for_uploads_to_drain() {
    let e = env_with(WriteBack {
        upload_delay: Duration::ZERO,
        spool_max: Some(10_000),
        ..WriteBack::default()
    });
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("huge"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    assert_eq!(
        errno(e.fs.write(attr.attr.ino, open.fh, 0, &[0; 10_001]).await),
        Some(libc::ENOSPC),
        "larger than the whole bound"
    );
    e.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    e.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert!(e.fs.wait_uploads().await.failed.is_empty());

    e.hold_parts();
    put(&e.fs, ROOT_INO, "a", &[1; 6000]).await;
    let (attr, open) =
        e.fs.create(ROOT_INO, OsStr::new("b"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    let fs = Arc::clone(&e.fs);
    let writer = tokio::spawn(async move { fs.write(ino, open.fh, 0, &[2; 6000]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "the write waits while `a` is uploading"
    );
    e.open_parts();
    let written = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the write goes on once `a` is uploaded")
        .expect("join");
    assert_eq!(written.expect("write"), 6000);
    assert_eq!(e.mem().content(SPACE, None, "a").unwrap(), vec![1; 6000]);

    // `b` is still open: nothing can drain, so another write that does not fit is ENOSPC.
    let (c, c_open) =
        e.fs.create(ROOT_INO, OsStr::new("c"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    assert_eq!(
        errno(e.fs.write(c.attr.ino, c_open.fh, 0, &[3; 5000]).await),
        Some(libc::ENOSPC)
    );
    for (ino, fh) in [(ino, open.fh), (c.attr.ino, c_open.fh)] {
        e.fs.flush(ino, fh).await.expect("close");
        e.fs.release(ino, fh).await.expect("release");
    }
    assert!(e.fs.wait_uploads().await.failed.is_empty());
    assert_eq!(e.mem().content(SPACE, None, "b").unwrap(), vec![2; 6000]);
}
