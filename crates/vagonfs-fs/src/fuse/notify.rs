//! Kernel cache invalidations: the core's [`KernelCache`] over FUSE notifications.
//!
//! Subtle case: a notification can block on the kernel's lock of a folder while a request on
//! that folder waits for its reply, so notifications are sent from a thread of their own
//! ("fuse-notify"), never from a task that replies. ENOENT from the kernel (it did not hold
//! the entry) and errors after unmount are expected and only traced.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use fuser::INodeNo;
use tracing::{trace, warn};

use crate::fs::KernelCache;

/// A note for the kernel.
enum Note {
    Entry(u64, OsString),
    Inode(u64),
}

/// The core's [`KernelCache`] over FUSE notifications, sent by a thread of its own (see the
/// module note). The thread ends when the core lets go of it.
pub struct KernelNotifier {
    notes: std::sync::Mutex<std::sync::mpsc::Sender<Note>>,
}

impl KernelNotifier {
    /// Start the sending thread over a session's notifier.
    pub fn start(notifier: fuser::Notifier) -> Arc<KernelNotifier> {
        let (tx, rx) = std::sync::mpsc::channel::<Note>();
        let spawned = std::thread::Builder::new()
            .name("fuse-notify".into())
            .spawn(move || {
                for note in rx {
                    if let Note::Entry(parent, name) = &note {
                        trace!(parent, ?name, "invalidating a kernel entry");
                    }
                    let (what, sent) = match &note {
                        Note::Entry(parent, name) => {
                            ("entry", notifier.inval_entry(INodeNo(*parent), name))
                        }
                        // Offset 0, length 0: attributes and every cached page.
                        Note::Inode(ino) => ("inode", notifier.inval_inode(INodeNo(*ino), 0, 0)),
                    };
                    // ENOENT: the kernel did not hold it; anything else after unmount.
                    if let Err(err) = sent {
                        trace!(what, "kernel invalidation not applied: {err}");
                    }
                }
            });
        if let Err(err) = spawned {
            warn!("no kernel invalidations (changes elsewhere show after the TTLs): {err}");
        }
        Arc::new(KernelNotifier {
            notes: std::sync::Mutex::new(tx),
        })
    }

    fn send(&self, note: Note) {
        let tx = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(note);
    }
}

impl KernelCache for KernelNotifier {
    fn forget_entry(&self, parent: u64, name: &OsStr) {
        self.send(Note::Entry(parent, name.to_os_string()));
    }

    fn forget_inode(&self, ino: u64) {
        self.send(Note::Inode(ino));
    }
}
