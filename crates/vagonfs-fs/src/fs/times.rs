//! Modification times that users set (`touch -d`, `cp -p`, `tar`, `rsync -a`), kept across
//! remounts on this host. The API stores no modification time: without this, a fresh mount
//! shows the upload time and `rsync -a` sends every file again.
//!
//! A small SQLite table (`times.sqlite` in the mount's cache folder), loaded into memory when
//! the mount starts and written through on every change; lookups never touch the disk.
//!
//! Subtle cases owned here:
//! - an entry is keyed by the server file (storage + id) and remembers the file's size and the
//!   server's own time for it; a listing that shows another size or another server time means
//!   the file changed on the server (another host, the web app): the entry is dropped and the
//!   server's time shows again. Times set on another host are not seen here (another host sees
//!   the upload time: it has its own store);
//! - right after our own upload the server's time is not known yet (the complete call does not
//!   return it): the entry is written without it and adopts the time of the first listing that
//!   shows the same id and size;
//! - a store that cannot be opened or written (read-only cache folder, full disk) is logged
//!   once and the mount goes on with the times in memory only: a remount then shows upload
//!   times, nothing worse;
//! - times are nanoseconds since the epoch (negative before 1970), so `rsync` compares equal.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use crate::api::Space;

/// The store's file name in the mount's cache folder.
pub const TIMES_FILE: &str = "times.sqlite";
/// How long a write waits for another mount holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// One remembered time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    size: u64,
    /// The server's time for the file when the user's time was set; `None` until a listing
    /// shows it (right after our own upload).
    server_ns: Option<i64>,
    user_ns: i64,
}

/// The store (see the module note). Cheap to query; every method takes `&self`.
#[derive(Default)]
pub struct TimeStore {
    entries: Mutex<HashMap<(String, u64), Stored>>,
    db: Mutex<Option<Connection>>,
    /// A write failed once already: later failures are logged at debug only.
    warned: AtomicBool,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("modification-time store {path}: {source}")]
pub struct TimeStoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

impl TimeStore {
    /// An empty store kept in memory only (until [`TimeStore::open`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Open (or create) the database at `path` and load it.
    pub fn open(&self, path: &Path) -> Result<(), TimeStoreError> {
        let err = |source| TimeStoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // WAL: one small write per changed time without a full sync each.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS times (
                 space TEXT NOT NULL,
                 id INTEGER NOT NULL,
                 size INTEGER NOT NULL,
                 server_ns INTEGER,
                 user_ns INTEGER NOT NULL,
                 PRIMARY KEY (space, id)
             )",
        )
        .map_err(err)?;
        let mut loaded = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT space, id, size, server_ns, user_ns FROM times")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        (r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64),
                        Stored {
                            size: r.get::<_, i64>(2)? as u64,
                            server_ns: r.get(3)?,
                            user_ns: r.get(4)?,
                        },
                    ))
                })
                .map_err(err)?;
            for row in rows {
                let (key, stored) = row.map_err(err)?;
                loaded.insert(key, stored);
            }
        }
        tracing::debug!(entries = loaded.len(), path = %path.display(), "modification times loaded");
        lock(&self.entries).extend(loaded);
        *lock(&self.db) = Some(conn);
        Ok(())
    }

    /// The user's time set on file `id` of `space` while it was `size` bytes and the server
    /// said `server` (`None`: not known yet, right after our own upload).
    pub fn remember(
        &self,
        space: Space,
        id: u64,
        size: u64,
        server: Option<SystemTime>,
        user: SystemTime,
    ) {
        let stored = Stored {
            size,
            server_ns: server.map(to_ns),
            user_ns: to_ns(user),
        };
        let key = (space_key(space), id);
        if lock(&self.entries).insert(key.clone(), stored) == Some(stored) {
            return;
        }
        self.write(|db| {
            db.execute(
                "INSERT OR REPLACE INTO times (space, id, size, server_ns, user_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.0,
                    key.1 as i64,
                    stored.size as i64,
                    stored.server_ns,
                    stored.user_ns
                ],
            )
        });
    }

    /// Drop what is remembered for file `id` of `space` (its content changed).
    pub fn forget(&self, space: Space, id: u64) {
        let _ = self.take(space, id);
    }

    /// Remove and return what is remembered for file `id` of `space`: (size, user's time).
    pub fn take(&self, space: Space, id: u64) -> Option<(u64, SystemTime)> {
        let key = (space_key(space), id);
        let stored = lock(&self.entries).remove(&key)?;
        self.write(|db| {
            db.execute(
                "DELETE FROM times WHERE space = ?1 AND id = ?2",
                params![key.0, key.1 as i64],
            )
        });
        Some((stored.size, from_ns(stored.user_ns)))
    }

    /// The time to show for file `id` of `space`, listed with `size` and the server's time
    /// `server`: the user's, while the file is the one it was set on. A changed file drops
    /// the entry; a first sighting after our own upload adopts the server's time.
    pub fn shown(
        &self,
        space: Space,
        id: u64,
        size: u64,
        server: Option<SystemTime>,
    ) -> Option<SystemTime> {
        let key = (space_key(space), id);
        let server_ns = server.map(to_ns);
        let mut entries = lock(&self.entries);
        let stored = *entries.get(&key)?;
        let same = stored.size == size
            && match (stored.server_ns, server_ns) {
                (Some(a), Some(b)) => a == b,
                (None, _) => true,
                (Some(_), None) => false,
            };
        if !same {
            entries.remove(&key);
            drop(entries);
            tracing::debug!(
                id,
                "the file changed on the server: its remembered time is dropped"
            );
            self.write(|db| {
                db.execute(
                    "DELETE FROM times WHERE space = ?1 AND id = ?2",
                    params![key.0, key.1 as i64],
                )
            });
            return None;
        }
        if stored.server_ns.is_none() && server_ns.is_some() {
            let adopted = Stored {
                server_ns,
                ..stored
            };
            entries.insert(key.clone(), adopted);
            drop(entries);
            self.write(|db| {
                db.execute(
                    "UPDATE times SET server_ns = ?3 WHERE space = ?1 AND id = ?2",
                    params![key.0, key.1 as i64, server_ns],
                )
            });
        }
        Some(from_ns(stored.user_ns))
    }

    /// Entries held (for tests and logs).
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run `f` on the database, if open; a failure is logged (once at warn) and otherwise
    /// ignored: the times stay in memory.
    fn write(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<usize>) {
        let db = lock(&self.db);
        let Some(conn) = db.as_ref() else { return };
        if let Err(e) = f(conn) {
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!("cannot save a modification time: {e}");
            } else {
                tracing::warn!(
                    "cannot save a modification time ({e}); times set now are kept only until \
                     the unmount"
                );
            }
        }
    }

    /// Whether the database row for `id` of `space` exists (tests).
    #[cfg(test)]
    fn persisted(&self, space: Space, id: u64) -> bool {
        use rusqlite::OptionalExtension;
        let db = lock(&self.db);
        db.as_ref()
            .and_then(|c| {
                c.query_row(
                    "SELECT 1 FROM times WHERE space = ?1 AND id = ?2",
                    params![space_key(space), id as i64],
                    |_| Ok(()),
                )
                .optional()
                .ok()
                .flatten()
            })
            .is_some()
    }
}

/// A storage's name in the table.
fn space_key(space: Space) -> String {
    match space {
        Space::Shared => "shared".into(),
        Space::Machine(id) => format!("machine:{id}"),
        Space::Recordings { machine: None } => "recordings".into(),
        Space::Recordings { machine: Some(id) } => format!("recordings:{id}"),
    }
}

fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Space = Space::Machine(1);

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn a_time_survives_a_reopen_and_adopts_the_server_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TIMES_FILE);
        let store = TimeStore::new();
        store.open(&path).unwrap();
        // Set right after our upload: the server's time is not known yet.
        store.remember(S, 7, 100, None, at(1_000, 123_456_789));
        drop(store);

        let store = TimeStore::new();
        store.open(&path).unwrap();
        assert_eq!(store.len(), 1);
        // First listing: adopts the server's time.
        assert_eq!(
            store.shown(S, 7, 100, Some(at(5_000, 0))),
            Some(at(1_000, 123_456_789))
        );
        // Same file, same server time: still the user's.
        assert_eq!(
            store.shown(S, 7, 100, Some(at(5_000, 0))),
            Some(at(1_000, 123_456_789))
        );
        // Another storage, same id: nothing.
        assert_eq!(store.shown(Space::Shared, 7, 100, Some(at(5_000, 0))), None);
        drop(store);

        let store = TimeStore::new();
        store.open(&path).unwrap();
        // The server's version changed (same size, new time): dropped, for good.
        assert_eq!(store.shown(S, 7, 100, Some(at(6_000, 0))), None);
        assert!(!store.persisted(S, 7));
        assert_eq!(store.shown(S, 7, 100, Some(at(5_000, 0))), None);
    }

    #[test]
    fn a_changed_size_drops_the_entry_and_forget_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = TimeStore::new();
        store.open(&dir.path().join(TIMES_FILE)).unwrap();
        store.remember(S, 1, 10, Some(at(50, 0)), at(20, 0));
        store.remember(S, 2, 10, Some(at(50, 0)), at(20, 0));
        assert_eq!(store.shown(S, 1, 11, Some(at(50, 0))), None);
        assert!(!store.persisted(S, 1));
        assert!(store.persisted(S, 2));
        assert_eq!(store.take(S, 2), Some((10, at(20, 0))));
        assert!(store.is_empty() && !store.persisted(S, 2));
        store.forget(S, 2);
    }

    #[test]
    fn times_before_1970_and_memory_only_stores_work() {
        let store = TimeStore::new();
        let old = UNIX_EPOCH - Duration::new(86_400, 5);
        store.remember(S, 3, 0, None, old);
        assert_eq!(store.shown(S, 3, 0, None), Some(old));
        assert_eq!(from_ns(to_ns(old)), old);
    }

    #[test]
    fn an_unwritable_store_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = TimeStore::new();
        let err = store
            .open(&dir.path().join("missing/dir/times.sqlite"))
            .unwrap_err();
        assert!(err.to_string().contains("modification-time store"), "{err}");
        // Still usable in memory.
        store.remember(S, 1, 1, None, at(1, 0));
        assert_eq!(store.len(), 1);
    }
}
