//! The desktop trash through a real mount, with GLib's own `gio trash`: at the root of an
//! `--all` mount (files of a machine and of shared land in that storage's own `.Trash-0`, shown
//! merged at the root) and inside a `--machine` mount; restore as file managers do it (rename
//! back, remove the info file) and through gvfs (`gio trash --restore`), and Empty Trash.
//!
//! Needs `gio` (libglib2.0-bin) and, for `--list`/`--restore`/`--empty`, gvfs with
//! `dbus-run-session` (`.ci/run` installs them).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use vagonfs::api::Space;

/// `gio ARGS` in a private D-Bus session (gvfs's trash backend runs there), with a private
/// home so the user's own trash is not involved.
fn gio(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("dbus-run-session");
    cmd.arg("--").arg("gio").args(args).env("HOME", home);
    for var in [
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        "DBUS_SESSION_BUS_ADDRESS",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd)
}

fn gio_ok(home: &Path, args: &[&str]) -> String {
    let out = gio(home, args);
    assert!(out.status.success(), "gio {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Path=` as GLib escapes it.
fn escaped(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn id_of(emu: &EmulatorProcess, space: Space, parent: Option<u64>, name: &str) -> Option<u64> {
    emu.list(space, parent)
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.id)
}

/// The names in `space`'s `.Trash-0/<part>` on the server.
fn server_trash(emu: &EmulatorProcess, space: Space, part: &str) -> Vec<String> {
    let Some(top) = id_of(emu, space, None, ".Trash-0") else {
        return Vec::new();
    };
    let Some(dir) = id_of(emu, space, Some(top), part) else {
        return Vec::new();
    };
    let mut names: Vec<String> = emu
        .list(space, Some(dir))
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn gio_trash_at_the_root_of_an_all_mount_restore_and_empty() {
    let emu = EmulatorProcess::start();
    let machine = emu.machines()[0].id;
    let space = Space::Machine(machine);
    emu.upload(space, None, "trash-me.txt", b"machine bytes");
    emu.upload(Space::Shared, None, "shared-trash.txt", b"shared bytes");
    let home = tempfile::tempdir().expect("home");
    let mount = TestMount::start(&emu, &[]);
    let folder = listed(&mount.join("machines"))
        .into_iter()
        .find(|m| mount.join(&format!("machines/{m}/trash-me.txt")).exists())
        .expect("the machine's folder");
    let file = mount.join(&format!("machines/{folder}/trash-me.txt"));

    gio_ok(home.path(), &["trash", file.to_str().unwrap()]);
    gio_ok(
        home.path(),
        &[
            "trash",
            mount.join("shared/shared-trash.txt").to_str().unwrap(),
        ],
    );
    assert!(!file.exists());
    assert!(!mount.join("shared/shared-trash.txt").exists());

    // The merged view at the root.
    let trash = mount.join(".Trash-0");
    assert_eq!(
        listed(&trash.join("files")),
        vec!["shared-trash.txt", "trash-me.txt"]
    );
    assert_eq!(
        listed(&trash.join("info")),
        vec!["shared-trash.txt.trashinfo", "trash-me.txt.trashinfo"]
    );
    assert_eq!(
        std::fs::read(trash.join("files/trash-me.txt")).expect("read"),
        b"machine bytes"
    );
    let info = std::fs::read_to_string(trash.join("info/trash-me.txt.trashinfo")).expect("info");
    let top_path = escaped(&format!("machines/{folder}/trash-me.txt"));
    assert!(
        info.contains(&format!("\nPath={top_path}\n")),
        "through the root, Path= is from the mount's root: {info}"
    );

    // On the server: in each storage's own trash, info Path= relative to the storage.
    mount.sync_ok();
    assert_eq!(server_trash(&emu, space, "files"), vec!["trash-me.txt"]);
    assert_eq!(
        server_trash(&emu, space, "info"),
        vec!["trash-me.txt.trashinfo"]
    );
    assert_eq!(
        server_trash(&emu, Space::Shared, "files"),
        vec!["shared-trash.txt"]
    );
    let alone = TestMount::start(&emu, &["--machine", &machine.to_string()]);
    let stored =
        std::fs::read_to_string(alone.join(".Trash-0/info/trash-me.txt.trashinfo")).expect("info");
    assert!(
        stored.contains("\nPath=trash-me.txt\n"),
        "stored relative to the machine's root: {stored}"
    );
    assert_eq!(
        std::fs::read(alone.join(".Trash-0/files/trash-me.txt")).expect("read"),
        b"machine bytes"
    );
    drop(alone);

    // Restore as a file manager does: rename back, remove the info file.
    std::fs::rename(trash.join("files/trash-me.txt"), &file).expect("restore");
    std::fs::remove_file(trash.join("info/trash-me.txt.trashinfo")).expect("remove info");
    assert_eq!(std::fs::read(&file).expect("read"), b"machine bytes");
    assert_eq!(listed(&trash.join("files")), vec!["shared-trash.txt"]);
    mount.sync_ok();
    assert!(server_trash(&emu, space, "files").is_empty());
    assert!(server_trash(&emu, space, "info").is_empty());
    assert!(id_of(&emu, space, None, "trash-me.txt").is_some());

    // Through gvfs: list and restore the shared file, trash the machine's again, empty.
    // `--list` prints `URI<TAB>original path`; the original path comes from the info file
    // read through the root.
    let list = gio_ok(home.path(), &["trash", "--list"]);
    let original = mount.join("shared/shared-trash.txt");
    let uri = list
        .lines()
        .find_map(|line| {
            let (uri, path) = line.split_once('\t')?;
            (Path::new(path) == original).then(|| uri.to_string())
        })
        .unwrap_or_else(|| panic!("gio trash --list has no {}: {list}", original.display()));
    gio_ok(home.path(), &["trash", "--restore", &uri]);
    assert_eq!(
        std::fs::read(mount.join("shared/shared-trash.txt")).expect("restored"),
        b"shared bytes"
    );
    let left = listed(&trash.join("files"));
    assert!(left.is_empty(), "{left:?}\n{}", mount.output_text());
    gio_ok(home.path(), &["trash", file.to_str().unwrap()]);
    assert_eq!(listed(&trash.join("files")), vec!["trash-me.txt"]);
    gio_ok(home.path(), &["trash", "--empty"]);
    assert!(listed(&trash.join("files")).is_empty());
    assert!(listed(&trash.join("info")).is_empty());
    mount.sync_ok();
    assert!(server_trash(&emu, space, "files").is_empty());
    assert!(server_trash(&emu, space, "info").is_empty());
    assert!(id_of(&emu, space, None, "trash-me.txt").is_none());
    assert!(id_of(&emu, Space::Shared, None, "shared-trash.txt").is_some());
}

#[test]
fn gio_trash_inside_a_machine_mount() {
    let emu = EmulatorProcess::start();
    let machine = emu.machines()[0].id;
    let space = Space::Machine(machine);
    emu.upload(space, None, "alone.txt", b"alone bytes");
    let home = tempfile::tempdir().expect("home");
    let mount = TestMount::start(&emu, &["--machine", &machine.to_string()]);
    gio_ok(
        home.path(),
        &["trash", mount.join("alone.txt").to_str().unwrap()],
    );
    assert!(!mount.join("alone.txt").exists());
    let info =
        std::fs::read_to_string(mount.join(".Trash-0/info/alone.txt.trashinfo")).expect("info");
    assert!(info.contains("\nPath=alone.txt\n"), "{info}");
    mount.sync_ok();
    assert_eq!(server_trash(&emu, space, "files"), vec!["alone.txt"]);
    assert_eq!(
        server_trash(&emu, space, "info"),
        vec!["alone.txt.trashinfo"]
    );
    std::fs::rename(
        mount.join(".Trash-0/files/alone.txt"),
        mount.join("alone.txt"),
    )
    .expect("restore");
    std::fs::remove_file(mount.join(".Trash-0/info/alone.txt.trashinfo")).expect("remove info");
    assert_eq!(
        std::fs::read(mount.join("alone.txt")).expect("read"),
        b"alone bytes"
    );
}
