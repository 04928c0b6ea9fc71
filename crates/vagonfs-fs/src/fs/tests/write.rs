//! The core's write path against the in-memory double (`api/mem.rs`) in the fault injector:
//! no network, no kernel. Each test drives `VagonFs` the way the FUSE adapter does (create, write,
//! flush, release, setattr, rename...) and checks what arrived on the "server", what the mount
//! shows, and what stays in the spool folder.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::{ApiMethod, FaultyFilesApi};
use crate::api::mem::{MemApi, pattern};
use crate::fs::*;

use super::driver::{
    MIB, child_names as names, config, errno, ino, put, read_handle, read_path, spool_files_in,
    walk, write_all,
};

/// Files in the mount's spool folder.
fn spool_files(s: &Setup) -> Vec<String> {
    spool_files_in(s.cache.path())
}

struct Setup {
    /// What the server holds.
    mem: Arc<MemApi>,
    /// The same server behind the fault injector.
    api: Arc<FaultyFilesApi<MemApi>>,
    fs: Arc<VagonFs>,
    cache: tempfile::TempDir,
}

fn setup_with(chunk_mb: u64, tweak: impl FnOnce(&mut FsConfig)) -> Setup {
    let mem = MemApi::new();
    let api = Arc::new(FaultyFilesApi::new(Arc::clone(&mem), 1));
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(cache.path(), chunk_mb);
    tweak(&mut cfg);
    let dyn_api: Arc<dyn FilesApi> = Arc::clone(&api) as Arc<dyn FilesApi>;
    let fs = VagonFs::new(dyn_api, RootSpec::Space(Space::Shared), cfg);
    Setup {
        mem,
        api,
        fs,
        cache,
    }
}

fn setup() -> Setup {
    setup_with(16, |_| {})
}

#[tokio::test]
async fn create_write_close_arrives_byte_identical() {
    // Sizes around the part size, with the default 16 MiB parts and with 1 MiB parts.
    for chunk_mb in [16, 1] {
        let s = setup_with(chunk_mb, |_| {});
        let sizes = [0, 1, 4 * MIB - 1, 16 * MIB + 1];
        for (i, size) in sizes.iter().enumerate() {
            let name = format!("f{i}.bin");
            let data = pattern(*size, i as u64 + 7);
            let (_, closed) = put(&s.fs, ROOT_INO, &name, &data).await;
            closed.expect("close uploads");
            let got = s.mem.content(Space::Shared, None, &name).expect("uploaded");
            assert!(
                got == data[..],
                "{name} ({size} bytes, {chunk_mb} MiB parts)"
            );
            assert_eq!(
                walk(&s.fs, &name).await.expect("lookup").attr.size,
                *size as u64
            );
            assert!(
                read_path(&s.fs, &name).await == data[..],
                "read back {name}"
            );
        }
        let creates = s.mem.creates();
        assert_eq!(creates.len(), sizes.len(), "one create per file");
        assert!(creates.iter().all(|c| c.chunk_size_mb == Some(chunk_mb)));
        assert!(
            spool_files(&s).is_empty(),
            "nothing left in the spool folder"
        );
    }
}

#[tokio::test]
async fn a_new_file_exists_before_its_upload() {
    let s = setup();
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("new.txt"), 0o644, libc::O_RDWR)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    assert_eq!(attr.attr.kind, NodeKind::File);
    s.fs.write(ino, open.fh, 0, b"hello").await.expect("write");
    // Seen by lookup, getattr, readdir and reads, while the server has nothing yet.
    assert_eq!(s.mem.entry(Space::Shared, None, "new.txt"), None);
    let looked = walk(&s.fs, "new.txt").await.expect("lookup");
    assert_eq!((looked.attr.ino, looked.attr.size), (ino, 5));
    assert_eq!(s.fs.getattr(ino).await.expect("getattr").attr.size, 5);
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["new.txt"]);
    assert_eq!(read_path(&s.fs, "new.txt").await, b"hello");
    assert_eq!(s.mem.creates().len(), 0);

    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(
        s.mem.content(Space::Shared, None, "new.txt").as_deref(),
        Some(&b"hello"[..])
    );
    // Same inode afterwards, bound to the server's id now.
    assert_eq!(walk(&s.fs, "new.txt").await.expect("lookup").attr.ino, ino);
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["new.txt"]);

    // An empty file created and closed is uploaded as 0 bytes; so is an O_RDONLY create.
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("empty"), 0o644, libc::O_RDONLY)
            .await
            .expect("create");
    s.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    s.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert_eq!(
        s.mem.content(Space::Shared, None, "empty").as_deref(),
        Some(&b""[..])
    );
    // O_EXCL on an existing name.
    assert_eq!(
        errno(
            s.fs.create(ROOT_INO, OsStr::new("empty"), 0o644, libc::O_EXCL)
                .await
        ),
        Some(libc::EEXIST)
    );
    // Names the API cannot carry.
    assert_eq!(
        errno(
            s.fs.create(ROOT_INO, OsStr::new(&"n".repeat(256)), 0o644, 0)
                .await
        ),
        Some(libc::ENAMETOOLONG)
    );
}

#[tokio::test]
async fn overwrite_keeps_the_inode_and_readers_see_the_new_bytes() {
    let s = setup();
    let old = pattern(3 * MIB, 1);
    let first = s.mem.put_file(Space::Shared, None, "doc.bin", &old);
    let ino = ino(&s.fs, "doc.bin").await;
    let reader = s.fs.open(ino, libc::O_RDONLY).await.expect("open reader");
    assert!(read_handle(&s.fs, ino, reader.fh).await == old[..]);

    let writer =
        s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .expect("open writer");
    let new = pattern(MIB + 3, 2);
    write_all(&s.fs, ino, writer.fh, &new).await;
    // The other handle sees the new bytes at once, before any upload.
    assert!(read_handle(&s.fs, ino, reader.fh).await == new[..]);
    assert_eq!(
        s.fs.getattr(ino).await.expect("attr").attr.size,
        new.len() as u64
    );
    assert!(s.mem.content(Space::Shared, None, "doc.bin").expect("old") == old[..]);

    s.fs.flush(ino, writer.fh).await.expect("close uploads");
    s.fs.release(ino, writer.fh).await.expect("release");
    let now = s.mem.entry(Space::Shared, None, "doc.bin").expect("listed");
    assert_ne!(now.id, first.id, "an overwrite gives a new id");
    assert!(s.mem.content(Space::Shared, None, "doc.bin").expect("new") == new[..]);
    let req = s.mem.creates().pop().expect("one create");
    assert!(
        req.overwrite,
        "replaced with overwrite, never deleted first"
    );
    // Same inode; the reader (now without a spool behind it) reads the new remote bytes.
    assert_eq!(walk(&s.fs, "doc.bin").await.expect("lookup").attr.ino, ino);
    assert!(read_handle(&s.fs, ino, reader.fh).await == new[..]);
    s.fs.release(ino, reader.fh).await.expect("release");
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["doc.bin"]);
    assert!(read_path(&s.fs, "doc.bin").await == new[..]);
}

#[tokio::test]
async fn append_and_lazy_fill() {
    let s = setup();
    s.mem.put_file(Space::Shared, None, "log", b"abc");
    let ino = ino(&s.fs, "log").await;
    let open =
        s.fs.open(ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .expect("open");
    assert_eq!(
        s.mem.bytes_served(),
        0,
        "nothing fetched before a write needs it"
    );
    // The offset is ignored: O_APPEND writes go to the end.
    s.fs.write(ino, open.fh, 0, b"def").await.expect("write");
    s.fs.write(ino, open.fh, 1, b"gh").await.expect("write");
    assert_eq!(s.mem.bytes_served(), 3, "the old bytes, once");
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(
        s.mem.content(Space::Shared, None, "log").as_deref(),
        Some(&b"abcdefgh"[..])
    );
    // A second append session on the uploaded file.
    let open =
        s.fs.open(ino, libc::O_RDWR | libc::O_APPEND)
            .await
            .expect("open");
    s.fs.write(ino, open.fh, 0, b"!").await.expect("write");
    assert_eq!(read_handle(&s.fs, ino, open.fh).await, b"abcdefgh!");
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(
        s.mem.content(Space::Shared, None, "log").as_deref(),
        Some(&b"abcdefgh!"[..])
    );
}

#[tokio::test]
async fn truncate_by_path_and_by_handle() {
    let s = setup();
    let data = pattern(2 * MIB, 5);
    s.mem.put_file(Space::Shared, None, "t", &data);
    let ino = ino(&s.fs, "t").await;
    // truncate(2): no handle, so it is uploaded at once.
    let attr =
        s.fs.setattr(
            ino,
            SetAttr {
                size: Some(1000),
                ..SetAttr::default()
            },
        )
        .await
        .expect("truncate");
    assert_eq!(attr.attr.size, 1000);
    assert!(s.mem.content(Space::Shared, None, "t").expect("t") == data[..1000]);
    assert_eq!(
        s.mem.bytes_served(),
        1000,
        "only the kept prefix is fetched"
    );
    assert!(spool_files(&s).is_empty());
    // ftruncate through a handle, growing with zeros: uploaded at close.
    let open = s.fs.open(ino, libc::O_RDWR).await.expect("open");
    s.fs.setattr(
        ino,
        SetAttr {
            size: Some(1500),
            fh: Some(open.fh),
            ..SetAttr::default()
        },
    )
    .await
    .expect("ftruncate");
    assert!(s.mem.content(Space::Shared, None, "t").expect("t").len() == 1000);
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    let mut want = data[..1000].to_vec();
    want.resize(1500, 0);
    assert!(s.mem.content(Space::Shared, None, "t").expect("t") == want);
    // chmod/chown succeed without effect; utimens shows the local time.
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let attr =
        s.fs.setattr(
            ino,
            SetAttr {
                mode: Some(0o600),
                uid: Some(1),
                mtime: Some(when),
                ..SetAttr::default()
            },
        )
        .await
        .expect("chmod/utimens");
    assert_eq!((attr.attr.mtime, attr.attr.perm), (when, 0o644));
    // A folder cannot be truncated.
    let d =
        s.fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755)
            .await
            .expect("mkdir");
    let r =
        s.fs.setattr(
            d.attr.ino,
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )
        .await;
    assert_eq!(errno(r), Some(libc::EISDIR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_see_the_bytes_while_they_upload() {
    let s = setup_with(1, |_| {});
    let data = pattern(3 * MIB + 17, 9);
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("up.bin"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    write_all(&s.fs, ino, open.fh, &data).await;
    s.api.hold(ApiMethod::UploadPart, None);
    let fs = Arc::clone(&s.fs);
    let fh = open.fh;
    let closing = tokio::spawn(async move { fs.flush(ino, fh).await });
    s.api.wait_arrivals(ApiMethod::UploadPart, 1).await;
    // Uploading now (parts held): another handle reads the new bytes from the spool.
    let reader = s.fs.open(ino, libc::O_RDONLY).await.expect("open");
    assert!(read_handle(&s.fs, ino, reader.fh).await == data[..]);
    assert_eq!(
        walk(&s.fs, "up.bin").await.expect("lookup").attr.size,
        data.len() as u64
    );
    let active = s.fs.uploads().active();
    assert_eq!(active.len(), 1, "status shows the running upload");
    assert_eq!(s.mem.entry(Space::Shared, None, "up.bin"), None);
    s.api.unhold(ApiMethod::UploadPart);
    closing.await.expect("join").expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert!(read_handle(&s.fs, ino, reader.fh).await == data[..]);
    s.fs.release(ino, reader.fh).await.expect("release");
    assert!(s.mem.content(Space::Shared, None, "up.bin").expect("up") == data[..]);
    assert!(s.fs.uploads().active().is_empty());
}

#[tokio::test]
async fn unlink_of_files_open_and_closed() {
    let s = setup();
    put(&s.fs, ROOT_INO, "gone", b"bytes").await.1.expect("put");
    let ino = ino(&s.fs, "gone").await;
    let open = s.fs.open(ino, libc::O_RDWR).await.expect("open");
    s.fs.write(ino, open.fh, 5, b"+more").await.expect("write");
    s.fs.unlink(ROOT_INO, OsStr::new("gone"))
        .await
        .expect("unlink");
    assert_eq!(s.mem.entry(Space::Shared, None, "gone"), None);
    assert_eq!(errno(walk(&s.fs, "gone").await), Some(libc::ENOENT));
    assert!(names(&s.fs, ROOT_INO).await.is_empty());
    // The open descriptor keeps working; its close uploads nothing.
    assert_eq!(read_handle(&s.fs, ino, open.fh).await, b"bytes+more");
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(s.mem.entry(Space::Shared, None, "gone"), None);
    assert_eq!(s.mem.creates().len(), 1);

    // A file created and unlinked before its upload never reaches the server.
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("tmp"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    s.fs.write(attr.attr.ino, open.fh, 0, b"x")
        .await
        .expect("write");
    s.fs.unlink(ROOT_INO, OsStr::new("tmp"))
        .await
        .expect("unlink");
    s.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    s.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert_eq!(s.mem.creates().len(), 1);
    assert!(spool_files(&s).is_empty());
    assert_eq!(
        errno(s.fs.unlink(ROOT_INO, OsStr::new("tmp")).await),
        Some(libc::ENOENT)
    );
}

#[tokio::test]
async fn rename_files_and_the_editor_save() {
    let s = setup();
    s.mem.put_file(Space::Shared, None, "doc.txt", b"version 1");
    // A remote file without a spool: streamed through a temporary spool.
    let data = pattern(5 * MIB + 1, 3);
    let first = s.mem.put_file(Space::Shared, None, "a.bin", &data);
    let a = ino(&s.fs, "a.bin").await;
    let d =
        s.fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755)
            .await
            .expect("mkdir");
    s.fs.rename(
        ROOT_INO,
        OsStr::new("a.bin"),
        d.attr.ino,
        OsStr::new("b.bin"),
        0,
    )
    .await
    .expect("rename");
    assert_eq!(s.mem.entry(Space::Shared, None, "a.bin"), None);
    let moved = s.mem.entry(Space::Shared, Some(first.id + 1), "b.bin");
    assert!(
        moved.is_some(),
        "{:?}",
        s.mem.names(Space::Shared, Some(first.id + 1))
    );
    assert_eq!(ino(&s.fs, "d/b.bin").await, a, "the inode moved with it");
    assert!(read_path(&s.fs, "d/b.bin").await == data[..]);
    assert_eq!(errno(walk(&s.fs, "a.bin").await), Some(libc::ENOENT));
    assert!(spool_files(&s).is_empty(), "the temporary spool is gone");

    // The save pattern: write a temp file, rename it over the original.
    let doc = ino(&s.fs, "doc.txt").await;
    let (tmp, closed) = put(&s.fs, ROOT_INO, ".doc.txt.swp", b"version 2").await;
    closed.expect("temp saved");
    s.fs.rename(
        ROOT_INO,
        OsStr::new(".doc.txt.swp"),
        ROOT_INO,
        OsStr::new("doc.txt"),
        0,
    )
    .await
    .expect("rename over");
    assert_eq!(
        s.mem.content(Space::Shared, None, "doc.txt").as_deref(),
        Some(&b"version 2"[..])
    );
    assert_eq!(s.mem.entry(Space::Shared, None, ".doc.txt.swp"), None);
    let now = walk(&s.fs, "doc.txt").await.expect("lookup");
    assert_eq!(now.attr.ino, tmp, "the renamed file's inode");
    assert_ne!(now.attr.ino, doc);
    assert_eq!(read_path(&s.fs, "doc.txt").await, b"version 2");
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["d", "doc.txt"]);
    assert!(
        s.mem.creates().last().expect("create").overwrite,
        "the target was replaced in one step"
    );

    // A file being written, renamed while open: its close uploads under the new name.
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("w1"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    s.fs.write(attr.attr.ino, open.fh, 0, b"abc")
        .await
        .expect("write");
    s.fs.rename(ROOT_INO, OsStr::new("w1"), ROOT_INO, OsStr::new("w2"), 0)
        .await
        .expect("rename open file");
    s.fs.write(attr.attr.ino, open.fh, 3, b"def")
        .await
        .expect("write");
    s.fs.flush(attr.attr.ino, open.fh).await.expect("close");
    s.fs.release(attr.attr.ino, open.fh).await.expect("release");
    assert_eq!(
        s.mem.content(Space::Shared, None, "w2").as_deref(),
        Some(&b"abcdef"[..])
    );
    assert_eq!(s.mem.entry(Space::Shared, None, "w1"), None);

    // Flags and kinds.
    let r =
        s.fs.rename(
            ROOT_INO,
            OsStr::new("w2"),
            ROOT_INO,
            OsStr::new("doc.txt"),
            libc::RENAME_NOREPLACE,
        )
        .await;
    assert_eq!(errno(r), Some(libc::EEXIST));
    let r =
        s.fs.rename(
            ROOT_INO,
            OsStr::new("w2"),
            ROOT_INO,
            OsStr::new("doc.txt"),
            libc::RENAME_EXCHANGE,
        )
        .await;
    assert_eq!(errno(r), Some(libc::EINVAL));
    let r =
        s.fs.rename(ROOT_INO, OsStr::new("w2"), ROOT_INO, OsStr::new("d"), 0)
            .await;
    assert_eq!(errno(r), Some(libc::EISDIR));
    let r =
        s.fs.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("w2"), 0)
            .await;
    assert_eq!(errno(r), Some(libc::ENOTDIR));
    let r =
        s.fs.rename(
            ROOT_INO,
            OsStr::new("missing"),
            ROOT_INO,
            OsStr::new("x"),
            0,
        )
        .await;
    assert_eq!(errno(r), Some(libc::ENOENT));
    assert_eq!(
        s.mem.content(Space::Shared, None, "w2").as_deref(),
        Some(&b"abcdef"[..]),
        "failed renames change nothing"
    );
}

#[tokio::test]
async fn rename_folders_recursively_and_exdev_past_the_limit() {
    let s = setup_with(16, |c| c.rename_dir_limit = 5);
    let top =
        s.fs.mkdir(ROOT_INO, OsStr::new("top"), 0o755)
            .await
            .expect("mkdir");
    let sub =
        s.fs.mkdir(top.attr.ino, OsStr::new("sub"), 0o755)
            .await
            .expect("mkdir");
    put(&s.fs, top.attr.ino, "a", b"A").await.1.expect("a");
    put(&s.fs, sub.attr.ino, "b", &pattern(MIB, 4))
        .await
        .1
        .expect("b");
    // Not uploaded yet: moves along from its spool.
    let (local, open) =
        s.fs.create(sub.attr.ino, OsStr::new("c"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    s.fs.write(local.attr.ino, open.fh, 0, b"C")
        .await
        .expect("write");
    let dest =
        s.fs.mkdir(ROOT_INO, OsStr::new("dest"), 0o755)
            .await
            .expect("mkdir");

    // Into itself.
    let r =
        s.fs.rename(
            ROOT_INO,
            OsStr::new("top"),
            sub.attr.ino,
            OsStr::new("x"),
            0,
        )
        .await;
    assert_eq!(errno(r), Some(libc::EINVAL));

    s.fs.rename(
        ROOT_INO,
        OsStr::new("top"),
        dest.attr.ino,
        OsStr::new("moved"),
        0,
    )
    .await
    .expect("move folder");
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["dest"]);
    assert_eq!(ino(&s.fs, "dest/moved").await, top.attr.ino, "inode kept");
    assert_eq!(ino(&s.fs, "dest/moved/sub").await, sub.attr.ino);
    assert_eq!(read_path(&s.fs, "dest/moved/a").await, b"A");
    assert!(read_path(&s.fs, "dest/moved/sub/b").await == pattern(MIB, 4)[..]);
    assert_eq!(read_path(&s.fs, "dest/moved/sub/c").await, b"C");
    s.fs.flush(local.attr.ino, open.fh).await.expect("close");
    s.fs.release(local.attr.ino, open.fh)
        .await
        .expect("release");
    // On the server: only the new tree.
    let dest_id = s.mem.entry(Space::Shared, None, "dest").expect("dest").id;
    let moved = s
        .mem
        .entry(Space::Shared, Some(dest_id), "moved")
        .expect("moved");
    assert_eq!(s.mem.names(Space::Shared, Some(moved.id)), vec!["a", "sub"]);
    let sub_id = s
        .mem
        .entry(Space::Shared, Some(moved.id), "sub")
        .expect("sub")
        .id;
    assert_eq!(s.mem.names(Space::Shared, Some(sub_id)), vec!["b", "c"]);
    assert_eq!(
        s.mem.content(Space::Shared, Some(sub_id), "c").as_deref(),
        Some(&b"C"[..])
    );
    assert_eq!(s.mem.names(Space::Shared, None), vec!["dest"]);

    // 6 entries under `big` > the limit of 5: EXDEV, nothing touched.
    let big =
        s.fs.mkdir(ROOT_INO, OsStr::new("big"), 0o755)
            .await
            .expect("mkdir");
    for i in 0..6 {
        put(&s.fs, big.attr.ino, &format!("f{i}"), b"x")
            .await
            .1
            .expect("put");
    }
    let r =
        s.fs.rename(ROOT_INO, OsStr::new("big"), ROOT_INO, OsStr::new("big2"), 0)
            .await;
    assert_eq!(errno(r), Some(libc::EXDEV));
    let big_id = s.mem.entry(Space::Shared, None, "big").expect("big").id;
    assert_eq!(s.mem.names(Space::Shared, Some(big_id)).len(), 6);
    assert_eq!(s.mem.entry(Space::Shared, None, "big2"), None);

    // Onto an empty folder: replaces it; onto a non-empty one: ENOTEMPTY.
    let empty =
        s.fs.mkdir(ROOT_INO, OsStr::new("empty"), 0o755)
            .await
            .expect("mkdir");
    let r =
        s.fs.rename(
            ROOT_INO,
            OsStr::new("empty"),
            ROOT_INO,
            OsStr::new("big"),
            0,
        )
        .await;
    assert_eq!(errno(r), Some(libc::ENOTEMPTY));
    s.fs.rename(
        ROOT_INO,
        OsStr::new("dest"),
        ROOT_INO,
        OsStr::new("empty"),
        0,
    )
    .await
    .expect("onto an empty folder");
    assert_eq!(read_path(&s.fs, "empty/moved/a").await, b"A");
    assert_ne!(ino(&s.fs, "empty").await, empty.attr.ino);
    assert_eq!(names(&s.fs, ROOT_INO).await, vec!["big", "empty"]);
}

#[tokio::test]
async fn quota_full_is_enospc_and_keeps_the_spool() {
    let s = setup();
    s.mem.set_quota(1000);
    let data = pattern(5000, 1);
    let (ino, closed) = put(&s.fs, ROOT_INO, "big", &data).await;
    assert_eq!(errno(closed), Some(libc::ENOSPC));
    assert_eq!(s.mem.entry(Space::Shared, None, "big"), None);
    let kept = spool_files(&s);
    assert_eq!(kept.len(), 2, "the spool and its journal record: {kept:?}");
    // Still shown with its local bytes.
    assert!(read_path(&s.fs, "big").await == data[..]);
    assert_eq!(walk(&s.fs, "big").await.expect("lookup").attr.ino, ino);
    // Room again: the unmount flush sends it.
    s.mem.set_quota(1 << 30);
    let report = s.fs.wait_uploads().await;
    assert_eq!(report.uploaded, 1, "{report:?}");
    assert!(report.failed.is_empty());
    assert!(s.mem.content(Space::Shared, None, "big").expect("big") == data[..]);
    assert!(spool_files(&s).is_empty());
}

#[tokio::test]
async fn a_crash_leaves_a_journaled_spool_that_the_next_mount_uploads() {
    let s = setup();
    let data = pattern(3 * MIB + 5, 8);
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("unsaved.bin"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    write_all(&s.fs, attr.attr.ino, open.fh, &data).await;
    // The daemon dies: no flush, no release.
    let Setup {
        mem,
        api,
        fs,
        cache,
        ..
    } = s;
    drop(fs);
    assert_eq!(mem.entry(Space::Shared, None, "unsaved.bin"), None);

    let dyn_api: Arc<dyn FilesApi> = Arc::clone(&api) as Arc<dyn FilesApi>;
    let fs = VagonFs::new(
        dyn_api,
        RootSpec::Space(Space::Shared),
        config(cache.path(), 16),
    );
    let report = fs.recover().await.expect("recover");
    assert_eq!(
        report.uploaded,
        vec!["unsaved.bin".to_string()],
        "{report:?}"
    );
    assert!(
        mem.content(Space::Shared, None, "unsaved.bin")
            .expect("arrived")
            == data[..]
    );
    assert!(read_path(&fs, "unsaved.bin").await == data[..]);
    assert_eq!(
        fs.recover().await.expect("again"),
        RecoveryReport::default(),
        "nothing left"
    );
}

#[tokio::test]
async fn a_second_mount_of_the_same_cache_folder_is_refused() {
    let s = setup();
    s.fs.open_spool_dir().expect("first");
    let dyn_api: Arc<dyn FilesApi> = Arc::clone(&s.api) as Arc<dyn FilesApi>;
    let other = VagonFs::new(
        dyn_api,
        RootSpec::Space(Space::Shared),
        config(s.cache.path(), 16),
    );
    assert_eq!(errno(other.open_spool_dir()), Some(libc::EPERM));
}

#[tokio::test]
async fn read_only_mount_writes_nothing_locally() {
    let s = setup_with(16, |c| c.read_only = true);
    s.mem.put_file(Space::Shared, None, "f", b"x");
    let f = ino(&s.fs, "f").await;
    assert_eq!(errno(s.fs.open(f, libc::O_RDWR).await), Some(libc::EROFS));
    assert_eq!(
        errno(s.fs.create(ROOT_INO, OsStr::new("n"), 0o644, 0).await),
        Some(libc::EROFS)
    );
    assert_eq!(errno(s.fs.open_spool_dir()), Some(libc::EROFS));
    assert!(!s.cache.path().join("spools").exists());
    assert_eq!(s.fs.flush_all().await, FlushReport::default());
}

#[tokio::test]
async fn a_time_set_before_close_survives_the_upload_until_the_next_write() {
    let s = setup();
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("t.txt"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    s.fs.write(ino, open.fh, 0, b"abc").await.expect("write");
    // tar x: futimens on the open file, then close.
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567);
    let set = SetAttr {
        mtime: Some(when),
        fh: Some(open.fh),
        ..SetAttr::default()
    };
    s.fs.setattr(ino, set).await.expect("futimens");
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(s.fs.getattr(ino).await.expect("attr").attr.mtime, when);
    assert_eq!(walk(&s.fs, "t.txt").await.expect("lookup").attr.mtime, when);
    // A later write shows the write's time again.
    let open = s.fs.open(ino, libc::O_WRONLY).await.expect("open");
    s.fs.write(ino, open.fh, 3, b"d").await.expect("write");
    assert_ne!(s.fs.getattr(ino).await.expect("attr").attr.mtime, when);
    s.fs.flush(ino, open.fh).await.expect("close");
    s.fs.release(ino, open.fh).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_during_an_upload_leaves_no_stray_copy() {
    let s = setup_with(1, |_| {});
    let data = pattern(2 * MIB, 12);
    let (attr, open) =
        s.fs.create(ROOT_INO, OsStr::new("r1"), 0o644, libc::O_WRONLY)
            .await
            .expect("create");
    let ino = attr.attr.ino;
    write_all(&s.fs, ino, open.fh, &data).await;
    s.api.hold(ApiMethod::UploadPart, None);
    let fs = Arc::clone(&s.fs);
    let fh = open.fh;
    let closing = tokio::spawn(async move { fs.flush(ino, fh).await });
    s.api.wait_arrivals(ApiMethod::UploadPart, 1).await;
    let fs = Arc::clone(&s.fs);
    let renaming = tokio::spawn(async move {
        fs.rename(ROOT_INO, OsStr::new("r1"), ROOT_INO, OsStr::new("r2"), 0)
            .await
    });
    s.api.unhold(ApiMethod::UploadPart);
    closing.await.expect("join").expect("close");
    renaming.await.expect("join").expect("rename");
    s.fs.release(ino, open.fh).await.expect("release");
    assert_eq!(s.mem.names(Space::Shared, None), vec!["r2"]);
    assert!(s.mem.content(Space::Shared, None, "r2").expect("r2") == data[..]);
    assert_eq!(walk(&s.fs, "r2").await.expect("lookup").attr.ino, ino);
}
