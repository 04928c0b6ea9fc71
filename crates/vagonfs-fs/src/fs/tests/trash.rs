//! The merged trash at the `--all` root (`fs/trash/`) against the in-memory double: the
//! syscalls GLib's `g_file_trash` makes, the restore and the Empty Trash of file managers, and
//! what each leaves on the server.

use std::ffi::OsStr;
use std::sync::Arc;

use crate::api::faulty::{ApiMethod, FaultyFilesApi};
use crate::api::mem::MemApi;
use crate::fs::*;

use super::driver::{child_names, config, errno, ino, read_path, write_all};

const PC: Space = Space::Machine(7);
const BOX: Space = Space::Machine(9);

struct Setup {
    mem: Arc<MemApi>,
    api: Arc<FaultyFilesApi<MemApi>>,
    fs: Arc<VagonFs>,
    _cache: tempfile::TempDir,
}

fn setup() -> Setup {
    let mem = MemApi::new();
    mem.add_machine(7, "pc");
    mem.add_machine(9, "box");
    let dir = mem.add_dir(PC, None, "dir");
    mem.add_file(PC, Some(dir), "a.txt", &b"alpha"[..]);
    mem.add_file(Space::Shared, None, "s.txt", &b"shared bytes"[..]);
    let api = Arc::new(FaultyFilesApi::new(Arc::clone(&mem), 1));
    let cache = tempfile::tempdir().expect("tempdir");
    let dyn_api: Arc<dyn FilesApi> = Arc::clone(&api) as Arc<dyn FilesApi>;
    let fs = VagonFs::new(dyn_api, RootSpec::All, config(cache.path(), 8));
    Setup {
        mem,
        api,
        fs,
        _cache: cache,
    }
}

fn info_text(path: &str) -> String {
    format!("[Trash Info]\nPath={path}\nDeletionDate=2026-11-30T01:02:03\n")
}

/// What `g_file_trash` does once it found `.Trash-1000`: `info/NAME.trashinfo` with O_EXCL,
/// the contents through a temporary file renamed over it, then the rename of the file.
async fn gio_trash(fs: &VagonFs, dir: &str, name: &str, top_path: &str) -> FsResult<()> {
    let info = ino(fs, ".Trash-1000/info").await;
    let files = ino(fs, ".Trash-1000/files").await;
    let info_name = format!("{name}.trashinfo");
    let (made, open) = fs
        .create(
            info,
            OsStr::new(&info_name),
            0o666,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
        )
        .await?;
    fs.release(made.attr.ino, open.fh).await?;
    let tmp = format!("{info_name}.XYZ123");
    let (t, open) = fs
        .create(
            info,
            OsStr::new(&tmp),
            0o600,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
        )
        .await?;
    write_all(fs, t.attr.ino, open.fh, info_text(top_path).as_bytes()).await;
    fs.fsync(t.attr.ino, open.fh).await?;
    fs.flush(t.attr.ino, open.fh).await?;
    fs.release(t.attr.ino, open.fh).await?;
    fs.rename(info, OsStr::new(&tmp), info, OsStr::new(&info_name), 0)
        .await?;
    let parent = ino(fs, dir).await;
    let moved = fs
        .rename(parent, OsStr::new(name), files, OsStr::new(name), 0)
        .await;
    if moved.is_err() {
        // GLib removes the info file after a failed rename.
        let _ = fs.unlink(info, OsStr::new(&info_name)).await;
    }
    moved
}

fn server_file(s: &Setup, space: Space, path: &str) -> Option<Vec<u8>> {
    s.mem.tree(space).get(path).cloned().flatten()
}

#[tokio::test]
async fn the_root_shows_a_trash_of_files_and_info() {
    let s = setup();
    let root = child_names(&s.fs, ROOT_INO).await;
    assert_eq!(
        root,
        vec![".Trash-1000", "machines", "recordings", "shared"]
    );
    let top = ino(&s.fs, ".Trash-1000").await;
    let attr = s.fs.getattr(top).await.expect("getattr").attr;
    assert_eq!(
        (attr.kind, attr.uid, attr.perm),
        (NodeKind::Directory, 1000, 0o755)
    );
    assert_eq!(
        child_names(&s.fs, top).await,
        vec!["expunged", "files", "info"]
    );
    // Nothing trashed yet: empty, and no storage got a trash folder.
    assert!(
        child_names(&s.fs, ino(&s.fs, ".Trash-1000/files").await)
            .await
            .is_empty()
    );
    assert!(
        s.mem
            .names(PC, None)
            .iter()
            .all(|n| !n.starts_with(".Trash"))
    );
    // The rest of the root stays read-only.
    assert_eq!(
        errno(s.fs.mkdir(ROOT_INO, OsStr::new(".Trash"), 0o700).await),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(
            s.fs.create(top, OsStr::new("x"), 0o600, libc::O_CREAT | libc::O_WRONLY)
                .await
        ),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(s.fs.lookup(ROOT_INO, OsStr::new(".Trash-0")).await),
        Some(libc::ENOENT),
        "only the mount's owner has a trash"
    );
}

#[tokio::test]
async fn trash_a_file_of_a_machine_and_of_shared_then_restore_and_empty() {
    let s = setup();
    gio_trash(&s.fs, "machines/pc/dir", "a.txt", "machines/pc/dir/a.txt")
        .await
        .expect("trash a.txt");
    gio_trash(&s.fs, "shared", "s.txt", "shared/s.txt")
        .await
        .expect("trash s.txt");
    s.fs.wait_uploads().await;

    // Each landed in its own storage's trash, info Path= relative to that storage.
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/files/a.txt").as_deref(),
        Some(&b"alpha"[..])
    );
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/info/a.txt.trashinfo"),
        Some(info_text("dir/a.txt").into_bytes())
    );
    assert_eq!(server_file(&s, PC, "dir/a.txt"), None);
    assert_eq!(
        server_file(&s, Space::Shared, ".Trash-1000/files/s.txt").as_deref(),
        Some(&b"shared bytes"[..])
    );
    assert_eq!(
        server_file(&s, Space::Shared, ".Trash-1000/info/s.txt.trashinfo"),
        Some(info_text("s.txt").into_bytes())
    );
    // No temporary info file ever reached a server, and the other machine got nothing.
    assert!(s.mem.tree(PC).keys().all(|k| !k.contains("XYZ123")));
    assert!(s.mem.tree(BOX).is_empty());

    // The merged view shows both, info files with Path= from the mount's root.
    let files = ino(&s.fs, ".Trash-1000/files").await;
    let info = ino(&s.fs, ".Trash-1000/info").await;
    assert_eq!(child_names(&s.fs, files).await, vec!["a.txt", "s.txt"]);
    assert_eq!(
        child_names(&s.fs, info).await,
        vec!["a.txt.trashinfo", "s.txt.trashinfo"]
    );
    assert_eq!(read_path(&s.fs, ".Trash-1000/files/a.txt").await, b"alpha");
    let shown = read_path(&s.fs, ".Trash-1000/info/a.txt.trashinfo").await;
    assert_eq!(shown, info_text("machines/pc/dir/a.txt").into_bytes());
    let attr =
        s.fs.lookup(info, OsStr::new("a.txt.trashinfo"))
            .await
            .expect("lookup");
    assert_eq!(
        attr.attr.size,
        shown.len() as u64,
        "listed size = shown bytes"
    );

    // Restore a.txt as a file manager does: rename back, remove the info file.
    let dir = ino(&s.fs, "machines/pc/dir").await;
    s.fs.rename(files, OsStr::new("a.txt"), dir, OsStr::new("a.txt"), 0)
        .await
        .expect("restore");
    s.fs.unlink(info, OsStr::new("a.txt.trashinfo"))
        .await
        .expect("unlink info");
    s.fs.wait_uploads().await;
    assert_eq!(
        server_file(&s, PC, "dir/a.txt").as_deref(),
        Some(&b"alpha"[..])
    );
    assert_eq!(server_file(&s, PC, ".Trash-1000/files/a.txt"), None);
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/info/a.txt.trashinfo"),
        None
    );
    assert_eq!(read_path(&s.fs, "machines/pc/dir/a.txt").await, b"alpha");

    // Restoring into another storage is what a cross-storage rename is: EXDEV.
    assert_eq!(
        errno(
            s.fs.rename(files, OsStr::new("s.txt"), dir, OsStr::new("s.txt"), 0)
                .await
        ),
        Some(libc::EXDEV)
    );
    assert_eq!(child_names(&s.fs, files).await, vec!["s.txt"]);

    // Empty Trash: what the view shows is deleted in its storage.
    s.fs.unlink(files, OsStr::new("s.txt"))
        .await
        .expect("empty files");
    s.fs.unlink(info, OsStr::new("s.txt.trashinfo"))
        .await
        .expect("empty info");
    assert_eq!(
        server_file(&s, Space::Shared, ".Trash-1000/files/s.txt"),
        None
    );
    assert_eq!(
        server_file(&s, Space::Shared, ".Trash-1000/info/s.txt.trashinfo"),
        None
    );
    assert!(child_names(&s.fs, files).await.is_empty());
    assert!(child_names(&s.fs, info).await.is_empty());
}

#[tokio::test]
async fn a_trashed_folder_moves_whole_and_empties_with_rmdir() {
    let s = setup();
    gio_trash(&s.fs, "machines/pc", "dir", "machines/pc/dir")
        .await
        .expect("trash a folder");
    s.fs.wait_uploads().await;
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/files/dir/a.txt").as_deref(),
        Some(&b"alpha"[..])
    );
    let files = ino(&s.fs, ".Trash-1000/files").await;
    let inner = ino(&s.fs, ".Trash-1000/files/dir").await;
    assert_eq!(
        errno(s.fs.rmdir(files, OsStr::new("dir")).await),
        Some(libc::ENOTEMPTY)
    );
    s.fs.unlink(inner, OsStr::new("a.txt"))
        .await
        .expect("unlink inside");
    s.fs.rmdir(files, OsStr::new("dir")).await.expect("rmdir");
    assert!(!s.mem.tree(PC).contains_key(".Trash-1000/files/dir"));
}

#[tokio::test]
async fn names_taken_in_two_storages_pair_up_with_a_tag() {
    let s = setup();
    // Machine 9 was trashed into by another mount: files/s.txt and its info file.
    let t = s.mem.add_dir(BOX, None, ".Trash-1000");
    let f = s.mem.add_dir(BOX, Some(t), "files");
    let i = s.mem.add_dir(BOX, Some(t), "info");
    s.mem.add_file(BOX, Some(f), "s.txt", &b"box bytes"[..]);
    s.mem.add_file(
        BOX,
        Some(i),
        "s.txt.trashinfo",
        info_text("s.txt").into_bytes(),
    );
    gio_trash(&s.fs, "shared", "s.txt", "shared/s.txt")
        .await
        .expect_err("the name is shown taken: GLib would pick s.txt.2");
    gio_trash(&s.fs, "shared", "s.txt.2", "shared/s.txt")
        .await
        .expect_err("no such file");
    // Trash it under another name, as GLib does when NAME.trashinfo exists.
    let shared = ino(&s.fs, "shared").await;
    // Looked up first, as the kernel does.
    ino(&s.fs, "shared/s.txt").await;
    s.fs.rename(
        shared,
        OsStr::new("s.txt"),
        shared,
        OsStr::new("s.txt.2"),
        0,
    )
    .await
    .expect("rename");
    gio_trash(&s.fs, "shared", "s.txt.2", "shared/s.txt.2")
        .await
        .expect("trash");
    let files = ino(&s.fs, ".Trash-1000/files").await;
    let info = ino(&s.fs, ".Trash-1000/info").await;
    assert_eq!(child_names(&s.fs, files).await, vec!["s.txt", "s.txt.2"]);
    assert_eq!(
        child_names(&s.fs, info).await,
        vec!["s.txt.2.trashinfo", "s.txt.trashinfo"]
    );
    assert_eq!(
        read_path(&s.fs, ".Trash-1000/info/s.txt.trashinfo").await,
        info_text("machines/box/s.txt").into_bytes()
    );

    // The same name in shared's trash now (made by another mount): shared comes first and
    // keeps it; machine 9's pair shows with its id.
    let st = s
        .mem
        .entry(Space::Shared, None, ".Trash-1000")
        .expect("trash")
        .id;
    let sf = s
        .mem
        .entry(Space::Shared, Some(st), "files")
        .expect("files")
        .id;
    let si = s
        .mem
        .entry(Space::Shared, Some(st), "info")
        .expect("info")
        .id;
    s.mem
        .add_file(Space::Shared, Some(sf), "s.txt", &b"other"[..]);
    s.mem.add_file(
        Space::Shared,
        Some(si),
        "s.txt.trashinfo",
        info_text("s.txt").into_bytes(),
    );
    s.fs.wait_uploads().await;
    let fresh = {
        let mem: Arc<dyn FilesApi> = Arc::clone(&s.api) as Arc<dyn FilesApi>;
        let cache = tempfile::tempdir().expect("tempdir");
        (
            VagonFs::new(mem, RootSpec::All, config(cache.path(), 8)),
            cache,
        )
    };
    let fs = &fresh.0;
    let files = ino(fs, ".Trash-1000/files").await;
    let info = ino(fs, ".Trash-1000/info").await;
    assert_eq!(
        child_names(fs, files).await,
        vec!["s.txt", "s.txt.2", "s.txt~9"]
    );
    assert_eq!(
        child_names(fs, info).await,
        vec!["s.txt.2.trashinfo", "s.txt.trashinfo", "s.txt~9.trashinfo"]
    );
    assert_eq!(
        read_path(fs, ".Trash-1000/files/s.txt~9").await,
        b"box bytes"
    );
    assert_eq!(
        read_path(fs, ".Trash-1000/info/s.txt~9.trashinfo").await,
        info_text("machines/box/s.txt").into_bytes()
    );
    // Deleting the tagged one deletes machine 9's, nothing else.
    fs.unlink(files, OsStr::new("s.txt~9"))
        .await
        .expect("unlink");
    fs.unlink(info, OsStr::new("s.txt~9.trashinfo"))
        .await
        .expect("unlink");
    assert_eq!(server_file(&s, BOX, ".Trash-1000/files/s.txt"), None);
    assert_eq!(
        server_file(&s, Space::Shared, ".Trash-1000/files/s.txt").as_deref(),
        Some(&b"other"[..])
    );
    assert_eq!(child_names(fs, files).await, vec!["s.txt", "s.txt.2"]);
}

#[tokio::test]
async fn an_info_file_without_its_file_never_reaches_a_server() {
    let s = setup();
    let info = ino(&s.fs, ".Trash-1000/info").await;
    let creates = s.api.calls(ApiMethod::Create);
    let (made, open) =
        s.fs.create(
            info,
            OsStr::new("x.trashinfo"),
            0o600,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
        )
        .await
        .expect("create");
    write_all(&s.fs, made.attr.ino, open.fh, b"[Trash Info]\n").await;
    s.fs.release(made.attr.ino, open.fh).await.expect("release");
    assert_eq!(
        s.fs.getattr(made.attr.ino)
            .await
            .expect("getattr")
            .attr
            .size,
        13
    );
    assert_eq!(
        read_path(&s.fs, ".Trash-1000/info/x.trashinfo").await,
        b"[Trash Info]\n"
    );
    assert_eq!(child_names(&s.fs, info).await, vec!["x.trashinfo"]);
    assert_eq!(
        errno(
            s.fs.create(
                info,
                OsStr::new("x.trashinfo"),
                0o600,
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR
            )
            .await
        ),
        Some(libc::EEXIST)
    );
    // A held file stays in the trash.
    let shared = ino(&s.fs, "shared").await;
    assert_eq!(
        errno(
            s.fs.rename(info, OsStr::new("x.trashinfo"), shared, OsStr::new("x"), 0)
                .await
        ),
        Some(libc::EXDEV)
    );
    s.fs.unlink(info, OsStr::new("x.trashinfo"))
        .await
        .expect("unlink");
    assert!(child_names(&s.fs, info).await.is_empty());
    assert_eq!(
        s.api.calls(ApiMethod::Create),
        creates,
        "nothing made on a server"
    );

    // Held files are bounded.
    for n in 0..64 {
        let (m, o) =
            s.fs.create(
                info,
                OsStr::new(&format!("{n}.trashinfo")),
                0o600,
                libc::O_CREAT | libc::O_RDWR,
            )
            .await
            .expect("create");
        s.fs.release(m.attr.ino, o.fh).await.expect("release");
    }
    assert_eq!(
        errno(
            s.fs.create(
                info,
                OsStr::new("65.trashinfo"),
                0o600,
                libc::O_CREAT | libc::O_RDWR
            )
            .await
        ),
        Some(libc::ENOSPC)
    );
}

#[tokio::test]
async fn a_name_taken_in_the_storage_trash_is_never_overwritten() {
    let s = setup();
    // An orphan in machine 7's trash (its info file is gone): not shown as taken in info/.
    let t = s.mem.add_dir(PC, None, ".Trash-1000");
    let f = s.mem.add_dir(PC, Some(t), "files");
    s.mem.add_dir(PC, Some(t), "info");
    s.mem.add_file(PC, Some(f), "a.txt", &b"older"[..]);
    assert_eq!(
        errno(gio_trash(&s.fs, "machines/pc/dir", "a.txt", "machines/pc/dir/a.txt").await),
        Some(libc::EEXIST)
    );
    s.fs.wait_uploads().await;
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/files/a.txt").as_deref(),
        Some(&b"older"[..])
    );
    assert_eq!(
        server_file(&s, PC, "dir/a.txt").as_deref(),
        Some(&b"alpha"[..])
    );
    assert_eq!(
        server_file(&s, PC, ".Trash-1000/info/a.txt.trashinfo"),
        None,
        "the info file of the failed move is removed"
    );
    let info = ino(&s.fs, ".Trash-1000/info").await;
    let creates = s.api.calls(ApiMethod::Create);
    assert_eq!(
        errno(
            gio_trash(
                &s.fs,
                "machines/pc/dir",
                "none.txt",
                "machines/pc/dir/none.txt"
            )
            .await
        ),
        Some(libc::ENOENT)
    );
    assert_eq!(
        s.api.calls(ApiMethod::Create),
        creates,
        "nothing written for a missing file"
    );
    assert!(child_names(&s.fs, info).await.is_empty());
}
