//! The core's write path on both backends, from one driver: the in-memory double and the
//! emulator (real presigned part URLs and MD5 ETags, overwrite under a new id, the quota's 507,
//! recovery after a "crash"). What arrived is checked straight on the server, not through the
//! mount. (Split from `write.rs`.)

use std::ffi::OsStr;

use crate::api::mem::pattern;
use crate::fs::*;

use super::driver::{Backend, MIB, Server, child_names as names, errno, put, walk};

async fn files_of_every_size_arrive_byte_identical(backend: Backend) {
    let emu = Server::start(backend, crate::emulator::DEFAULT_QUOTA_BYTES).await;
    for chunk_mb in [1, 16] {
        let fs = emu.mount(chunk_mb);
        for (i, size) in [0, 1, 4 * MIB - 1, 16 * MIB + 1].into_iter().enumerate() {
            let name = format!("c{chunk_mb}-{i}.bin");
            let data = pattern(size, i as u64 + chunk_mb);
            put(&fs, ROOT_INO, &name, &data).await.1.expect("close");
            let got = emu.content(None, &name).await.expect("listed");
            assert!(got == data[..], "{name}: {} bytes back", got.len());
        }
        drop(fs);
    }
    assert_eq!(emu.spool_files().len(), 0);
    emu.stop().await;
}

async fn overwrite_rename_over_and_folder_moves(backend: Backend) {
    let emu = Server::start(backend, crate::emulator::DEFAULT_QUOTA_BYTES).await;
    let fs = emu.mount(1);
    let (ino, closed) = put(&fs, ROOT_INO, "doc.txt", b"version 1").await;
    closed.expect("first save");
    let first = emu.entry(None, "doc.txt").await.expect("listed").id;
    // Overwrite in place: new id on the server, same inode here.
    put(&fs, ROOT_INO, "doc.txt", b"version 2!")
        .await
        .1
        .expect("overwrite");
    let second = emu.entry(None, "doc.txt").await.expect("listed").id;
    assert_ne!(first, second);
    assert_eq!(walk(&fs, "doc.txt").await.expect("lookup").attr.ino, ino);
    assert_eq!(
        emu.content(None, "doc.txt").await.as_deref(),
        Some(&b"version 2!"[..])
    );
    // Save through a temp file renamed over it.
    put(&fs, ROOT_INO, "doc.txt~tmp", b"version 3")
        .await
        .1
        .expect("temp");
    fs.rename(
        ROOT_INO,
        OsStr::new("doc.txt~tmp"),
        ROOT_INO,
        OsStr::new("doc.txt"),
        0,
    )
    .await
    .expect("rename over");
    assert_eq!(
        emu.content(None, "doc.txt").await.as_deref(),
        Some(&b"version 3"[..])
    );
    assert!(emu.entry(None, "doc.txt~tmp").await.is_none());

    // A folder with a file and a subfolder, moved and renamed.
    let d = fs
        .mkdir(ROOT_INO, OsStr::new("proj"), 0o755)
        .await
        .expect("mkdir");
    let sub = fs
        .mkdir(d.attr.ino, OsStr::new("src"), 0o755)
        .await
        .expect("mkdir");
    let big = pattern(3 * MIB + 9, 77);
    put(&fs, sub.attr.ino, "main.rs", &big)
        .await
        .1
        .expect("put");
    fs.rename(
        ROOT_INO,
        OsStr::new("proj"),
        ROOT_INO,
        OsStr::new("proj2"),
        0,
    )
    .await
    .expect("folder rename");
    assert!(emu.entry(None, "proj").await.is_none());
    let p2 = emu.entry(None, "proj2").await.expect("proj2").id;
    let src = emu.entry(Some(p2), "src").await.expect("src").id;
    assert!(emu.content(Some(src), "main.rs").await.expect("main.rs") == big[..]);
    assert_eq!(
        walk(&fs, "proj2/src").await.expect("lookup").attr.ino,
        sub.attr.ino
    );
    // Remove it all.
    fs.unlink(sub.attr.ino, OsStr::new("main.rs"))
        .await
        .expect("rm");
    fs.rmdir(d.attr.ino, OsStr::new("src"))
        .await
        .expect("rmdir");
    fs.rmdir(ROOT_INO, OsStr::new("proj2"))
        .await
        .expect("rmdir");
    assert!(emu.entry(None, "proj2").await.is_none());
    drop(fs);
    emu.stop().await;
}

async fn quota_exceeded_is_enospc_and_nothing_is_lost(backend: Backend) {
    let emu = Server::start(backend, 2 * MIB as u64).await;
    let fs = emu.mount(1);
    put(&fs, ROOT_INO, "keep.bin", &pattern(MIB, 1))
        .await
        .1
        .expect("fits");
    let (_, closed) = put(&fs, ROOT_INO, "toobig.bin", &pattern(3 * MIB, 2)).await;
    assert_eq!(errno(closed), Some(libc::ENOSPC));
    assert!(emu.entry(None, "toobig.bin").await.is_none());
    assert!(emu.content(None, "keep.bin").await.expect("kept") == pattern(MIB, 1)[..]);
    assert_eq!(
        emu.spool_files().len(),
        2,
        "the spool and its journal record stay"
    );
    drop(fs);
    emu.stop().await;
}

async fn recovery_after_a_crash_uploads_the_unsaved_file(backend: Backend) {
    let emu = Server::start(backend, crate::emulator::DEFAULT_QUOTA_BYTES).await;
    let data = pattern(2 * MIB + 3, 5);
    {
        let fs = emu.mount(1);
        let (attr, open) = fs
            .create(ROOT_INO, OsStr::new("crash.bin"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
        fs.write(attr.attr.ino, open.fh, 0, &data[..])
            .await
            .expect("write");
        // Dropped without close: what a killed daemon leaves.
    }
    assert!(emu.entry(None, "crash.bin").await.is_none());
    let fs = emu.mount(1);
    let report = fs.recover().await.expect("recover");
    assert_eq!(report.uploaded, vec!["crash.bin".to_string()]);
    assert!(emu.content(None, "crash.bin").await.expect("arrived") == data[..]);
    assert_eq!(emu.spool_files().len(), 0);
    drop(fs);
    emu.stop().await;
}

async fn mkdir_rmdir_and_their_errors(backend: Backend) {
    let server = Server::start(backend, crate::emulator::DEFAULT_QUOTA_BYTES).await;
    let fs = server.mount(16);
    let d = fs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755)
        .await
        .expect("mkdir");
    assert_eq!(d.attr.kind, NodeKind::Directory);
    // mkdir answered before the server had the folder; `vagonfs sync` waits for it.
    assert!(fs.wait_uploads().await.failed.is_empty());
    assert!(server.names(None).await.contains(&"d".to_string()));
    assert_eq!(walk(&fs, "d").await.expect("lookup").attr.ino, d.attr.ino);
    assert_eq!(
        errno(fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755).await),
        Some(libc::EEXIST)
    );
    let sub = fs
        .mkdir(d.attr.ino, OsStr::new("sub"), 0o755)
        .await
        .expect("mkdir -p");
    put(&fs, sub.attr.ino, "f", b"1").await.1.expect("put");
    assert_eq!(
        errno(fs.rmdir(ROOT_INO, OsStr::new("d")).await),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        errno(fs.rmdir(sub.attr.ino, OsStr::new("f")).await),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        errno(fs.unlink(d.attr.ino, OsStr::new("sub")).await),
        Some(libc::EISDIR)
    );
    assert_eq!(
        errno(fs.rmdir(ROOT_INO, OsStr::new("nope")).await),
        Some(libc::ENOENT)
    );
    // A file not uploaded yet also makes its folder non-empty.
    let (attr, open) = fs
        .create(d.attr.ino, OsStr::new("local"), 0o644, libc::O_WRONLY)
        .await
        .expect("create");
    fs.unlink(sub.attr.ino, OsStr::new("f"))
        .await
        .expect("rm f");
    fs.rmdir(d.attr.ino, OsStr::new("sub"))
        .await
        .expect("rmdir sub");
    assert_eq!(
        errno(fs.rmdir(ROOT_INO, OsStr::new("d")).await),
        Some(libc::ENOTEMPTY)
    );
    fs.unlink(d.attr.ino, OsStr::new("local"))
        .await
        .expect("rm");
    fs.release(attr.attr.ino, open.fh).await.expect("release");
    fs.rmdir(ROOT_INO, OsStr::new("d")).await.expect("rmdir d");
    assert!(server.names(None).await.is_empty());
    assert!(names(&fs, ROOT_INO).await.is_empty());
    drop(fs);
    server.stop().await;
}

on_both!(
    mkdir_rmdir_and_their_errors,
    files_of_every_size_arrive_byte_identical,
    overwrite_rename_over_and_folder_moves,
    quota_exceeded_is_enospc_and_nothing_is_lost,
    recovery_after_a_crash_uploads_the_unsaved_file,
);
