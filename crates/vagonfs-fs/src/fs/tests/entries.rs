//! What the kernel is told (`fs::entries`): negative entries, mknod, and listings handed to a
//! [`DirectoryReplier`] whose lookup references the core keeps exact.

use std::ffi::OsStr;
use std::sync::Arc;

use crate::api::mem::{MemApi, pattern};
use crate::fs::errno::to_errno;
use crate::fs::*;

use super::driver::read_config;

/// A kernel reply buffer that takes `room` entries, refuses names containing `!`, and records
/// what it was sent.
pub(super) struct FakeKernel {
    pub plus: bool,
    pub room: usize,
    pub sent: Vec<String>,
}

impl FakeKernel {
    pub fn new(plus: bool, room: usize) -> Self {
        FakeKernel {
            plus,
            room,
            sent: Vec::new(),
        }
    }
}

impl DirectoryReplier for FakeKernel {
    fn counts_lookups(&self) -> bool {
        self.plus
    }

    fn add(&mut self, entry: &DirEntry) -> Offered {
        let name = entry.name.to_string_lossy().into_owned();
        if name.contains('!') {
            return Offered::Refused;
        }
        if self.sent.len() == self.room {
            return Offered::Full;
        }
        self.sent.push(name);
        Offered::Taken
    }
}

fn mount_with(files: &[&str]) -> Arc<VagonFs> {
    let api = MemApi::new();
    for (seed, name) in (1..).zip(files) {
        api.add_file(Space::Shared, None, name, pattern(10, seed));
    }
    let api: Arc<dyn FilesApi> = api;
    VagonFs::new(
        api,
        RootSpec::Space(Space::Shared),
        read_config(1234, 5678, 64 << 20),
    )
}

/// The inode numbers of the entries named, from a listing.
fn ino_of(entries: &[DirEntry], name: &str) -> u64 {
    entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.attr.ino)
        .unwrap_or_else(|| panic!("{name} listed"))
}

async fn listing(fs: &VagonFs) -> Vec<DirEntry> {
    let fh = fs.opendir(ROOT_INO).await.expect("opendir");
    let entries = fs.readdir(ROOT_INO, fh, 0).await.expect("readdir");
    fs.releasedir(ROOT_INO, fh);
    entries
}

#[tokio::test]
async fn readdirplus_keeps_a_reference_only_for_entries_the_kernel_took() {
    let fs = mount_with(&["a", "b!", "c", "d"]);
    let entries = listing(&fs).await;
    // ".", "..", "a" fit; "b!" is refused; "c" finds the buffer full; "d" is never offered.
    let mut kernel = FakeKernel::new(true, 3);
    assert_eq!(fs.send_listing(&entries, &mut kernel), 3);
    assert_eq!(kernel.sent, [".", "..", "a"]);
    assert!(
        fs.getattr(ino_of(&entries, "a")).await.is_ok(),
        "a was sent"
    );
    for gone in ["b!", "c", "d"] {
        let err = fs.getattr(ino_of(&entries, gone)).await.expect_err(gone);
        assert_eq!(
            to_errno(&err),
            libc::ESTALE,
            "{gone}: its only lookup given back"
        );
    }
    assert!(fs.getattr(ROOT_INO).await.is_ok(), "the root stays");
    // The kernel forgets what it was sent: nothing is left over.
    fs.forget(ino_of(&entries, "a"), 1);
    assert!(fs.getattr(ino_of(&entries, "a")).await.is_err());
}

#[tokio::test]
async fn plain_readdir_keeps_no_reference() {
    let fs = mount_with(&["a", "b"]);
    let entries = listing(&fs).await;
    let mut kernel = FakeKernel::new(false, 100);
    assert_eq!(fs.send_listing(&entries, &mut kernel), 4);
    assert_eq!(kernel.sent, [".", "..", "a", "b"]);
    for name in ["a", "b"] {
        assert!(fs.getattr(ino_of(&entries, name)).await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn a_missing_name_is_a_negative_entry_and_mknod_makes_only_files() {
    let fs = mount_with(&["present"]);
    match fs.lookup_entry(ROOT_INO, OsStr::new("absent")).await {
        Ok(Lookup::Missing(ttl)) => assert_eq!(ttl, fs.negative_lookup_ttl()),
        other => panic!("a negative entry, got {other:?}"),
    }
    assert!(matches!(
        fs.lookup_entry(ROOT_INO, OsStr::new("present")).await,
        Ok(Lookup::Found(_))
    ));

    let fifo = fs
        .mknod(ROOT_INO, OsStr::new("pipe"), libc::S_IFIFO | 0o644)
        .await
        .expect_err("no fifos");
    assert_eq!(to_errno(&fifo), libc::EPERM);
    let made = fs
        .mknod(ROOT_INO, OsStr::new("empty"), libc::S_IFREG | 0o644)
        .await
        .expect("mknod");
    assert_eq!(made.attr.size, 0);
    fs.wait_background().await;
    assert!(matches!(
        fs.lookup_entry(ROOT_INO, OsStr::new("empty")).await,
        Ok(Lookup::Found(a)) if a.attr.ino == made.attr.ino
    ));
}
