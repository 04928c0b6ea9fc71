//! The folder tree: listings, folder creation, recursive delete, raw entries and the seeded
//! session recordings.
//!
//! Subtle cases: a parent id may be 0, omitted, or the root folder's own id (all mean the
//! root); a parent that is a file, pending, in another storage, or (for a recordings listing
//! filtered by machine) owned by another machine is "not found"; listing order is folders first,
//! then by name (byte order), then id (raw entries may repeat a name); `q` is a case-insensitive
//! substring match done in Rust (SQLite's `lower()` only folds ASCII).//!
//! Keyset pagination is in `pages`; raw entries and the seeded recordings in `seed`.

use rusqlite::{Connection, params};

use super::pages::owner_clause;
use super::{
    ENTRY_COLUMNS, Entry, MAX_DEPTH, StorageInfo, StorageKind, Store, StoreError, StoreResult,
    get_entry, new_uid, remove_quietly,
};
use crate::emulator::reply::now_ms;

/// Where a new entry goes: an explicit parent, or the root of a machine's (or the shared)
/// storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    pub machine_id: Option<u64>,
    /// `None` or 0: the root.
    pub parent_id: Option<u64>,
}

/// The folder a listing was made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub id: u64,
    pub name: String,
    /// `/A/B`, `/` for the root.
    pub path: String,
    /// API view: `None` for a root folder, 0 for a folder directly under the root.
    pub parent_id: Option<u64>,
}

/// One page of a folder.
#[derive(Debug, Clone)]
pub struct Listing {
    pub folder: Folder,
    pub items: Vec<Entry>,
    /// Items on all pages.
    pub count: u64,
}

/// An entry inserted as is, bypassing validation (test hook and seeding).
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    pub target: Target,
    /// Put it in the session recordings tree (owned by `owner_machine`).
    pub recordings: bool,
    pub owner_machine: Option<u64>,
    pub name: String,
    pub is_dir: bool,
    /// Declared size; `None` = the content's length.
    pub size: Option<u64>,
    pub content: Vec<u8>,
    pub content_type: Option<String>,
    /// The listed modification time, ms since the epoch; `None` = now.
    pub modified_ms: Option<i64>,
}

impl Store {
    /// Where an API create lands; the recordings tree is read-only (403).
    pub(super) fn writable_target(
        &self,
        conn: &Connection,
        target: Target,
    ) -> StoreResult<(StorageInfo, Entry)> {
        let (storage, parent) = self.resolve_target_in(conn, target, false)?;
        if storage.kind == StorageKind::Recordings {
            return Err(StoreError::ReadOnly(
                "session recordings are read-only".into(),
            ));
        }
        Ok((storage, parent))
    }

    /// Where a create (or raw insert) lands: the storage and the parent folder.
    pub(super) fn resolve_target_in(
        &self,
        conn: &Connection,
        target: Target,
        recordings: bool,
    ) -> StoreResult<(StorageInfo, Entry)> {
        let by_machine = match (recordings, target.machine_id) {
            (true, _) => self.recordings,
            (false, Some(m)) => self
                .machine_storage(m)
                .ok_or_else(|| StoreError::NotFound(format!("machine {m} not found")))?,
            (false, None) => self.shared,
        };
        let parent = match target.parent_id {
            None | Some(0) => by_machine.root_id,
            Some(p) => p,
        };
        let folder = live_folder(conn, parent)?;
        let storage = self
            .storage_by_id(folder.storage_id)
            .ok_or_else(|| StoreError::NotFound(format!("parent folder {parent} not found")))?;
        // An explicit machine (or the recordings flag) must agree with the parent's storage.
        let explicit = recordings || target.machine_id.is_some();
        if explicit && storage.id != by_machine.id {
            return Err(StoreError::NotFound(format!(
                "parent folder {parent} not found in that storage"
            )));
        }
        Ok((storage, folder))
    }

    /// One page of `parent` (`None`/0/the root id: the root) in `storage`.
    pub fn list(
        &self,
        storage: StorageInfo,
        parent: Option<u64>,
        owner: Option<u64>,
        page: u64,
        per_page: u64,
        search: Option<&str>,
    ) -> StoreResult<Listing> {
        let db = self.db();
        let parent = match parent {
            None | Some(0) => storage.root_id,
            Some(p) => p,
        };
        let folder = live_folder(&db, parent)?;
        let owned_elsewhere =
            owner.is_some() && folder.owner_machine.is_some() && folder.owner_machine != owner;
        if folder.storage_id != storage.id || owned_elsewhere {
            return Err(StoreError::NotFound(format!(
                "parent folder {parent} not found"
            )));
        }
        let base = format!(
            "FROM entries WHERE parent_id = ?1 AND pending = 0 {}",
            owner_clause(owner, 2)
        );
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let (items, count) = match search.map(str::to_lowercase) {
            None => {
                let bounds = self.page_bounds(&db, parent, owner, per_page)?;
                let items = match page.saturating_sub(1) {
                    0 => self.keyset_page(&db, parent, owner, None, per_page)?,
                    p => match usize::try_from(p - 1)
                        .ok()
                        .and_then(|i| bounds.after.get(i))
                    {
                        Some(key) => self.keyset_page(&db, parent, owner, Some(key), per_page)?,
                        // Past the end.
                        None => Vec::new(),
                    },
                };
                (items, bounds.count)
            }
            Some(needle) => {
                let mut stmt = db.prepare(&format!(
                    "SELECT {ENTRY_COLUMNS} {base} ORDER BY is_dir DESC, name, id"
                ))?;
                let all = stmt
                    .query_map(params![parent, owner], Entry::from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                let matching: Vec<Entry> = all
                    .into_iter()
                    .filter(|e| e.name.to_lowercase().contains(&needle))
                    .collect();
                let count = matching.len() as u64;
                let items = matching
                    .into_iter()
                    .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                    .take(usize::try_from(per_page).unwrap_or(usize::MAX))
                    .collect();
                (items, count)
            }
        };
        let folder = self.folder_view(&db, &folder)?;
        Ok(Listing {
            folder,
            items,
            count,
        })
    }

    /// The API view of a folder: path from the root, parent id as the API shows it.
    fn folder_view(&self, conn: &Connection, folder: &Entry) -> StoreResult<Folder> {
        let mut names = Vec::new();
        let mut cursor = folder.clone();
        while let Some(parent) = cursor.parent_id {
            if names.len() >= MAX_DEPTH {
                return Err(StoreError::BadRequest("folder chain too deep".into()));
            }
            names.push(cursor.name.clone());
            cursor = get_entry(conn, parent)?
                .ok_or_else(|| StoreError::NotFound(format!("folder {parent} not found")))?;
        }
        names.reverse();
        Ok(Folder {
            id: folder.id,
            name: folder.name.clone(),
            path: format!("/{}", names.join("/")),
            parent_id: folder.parent_id.map(|_| self.api_parent_id(folder)),
        })
    }

    /// Create a folder (name already checked by the caller).
    pub fn create_dir(&self, target: Target, name: &str) -> StoreResult<Entry> {
        let mut db = self.db();
        let (storage, parent) = self.writable_target(&db, target)?;
        let tx = db.transaction()?;
        if let Some(existing) = same_name(&tx, parent.id, name)?.first() {
            let what = if existing.is_dir {
                "a folder"
            } else {
                "a file"
            };
            return Err(StoreError::Conflict(format!(
                "{what} named {name:?} already exists"
            )));
        }
        let folder = NewEntry {
            name: name.to_string(),
            is_dir: true,
            ..NewEntry::default()
        };
        let entry = insert_entry(&tx, storage.id, &parent, &folder, None)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Delete a file, a folder with everything under it, or a pending upload.
    pub fn delete(&self, id: u64) -> StoreResult<()> {
        let mut db = self.db();
        let entry = get_entry(&db, id)?
            .ok_or_else(|| StoreError::NotFound(format!("file {id} not found")))?;
        if self.storage_by_id(entry.storage_id).is_none() {
            return Err(StoreError::NotFound(format!("file {id} not found")));
        }
        if entry.is_root() {
            return Err(StoreError::RootFolder("cannot delete a root folder".into()));
        }
        if entry.storage_id == self.recordings.id {
            return Err(StoreError::ReadOnly(
                "session recordings are read-only".into(),
            ));
        }
        let tx = db.transaction()?;
        let doomed: Vec<(u64, Option<String>, bool)> = {
            let mut stmt = tx.prepare(
                "WITH RECURSIVE sub(id) AS (
                     SELECT ?1 UNION ALL SELECT e.id FROM entries e JOIN sub ON e.parent_id = sub.id
                 )
                 SELECT e.id, e.blob, e.pending FROM entries e JOIN sub ON e.id = sub.id",
            )?;
            stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        for (doomed_id, _, _) in &doomed {
            tx.execute("DELETE FROM entries WHERE id = ?1", [doomed_id])?;
            tx.execute("DELETE FROM parts WHERE file_id = ?1", [doomed_id])?;
        }
        tx.commit()?;
        drop(db);
        for (doomed_id, blob, pending) in doomed {
            if let Some(blob) = blob {
                remove_quietly(&self.blob_path(&blob));
            }
            if pending {
                remove_quietly(&self.dirs.parts.join(doomed_id.to_string()));
            }
        }
        Ok(())
    }
}

/// A visible folder (live, not pending) by id.
pub(super) fn live_folder(conn: &Connection, id: u64) -> StoreResult<Entry> {
    match get_entry(conn, id)? {
        Some(e) if e.is_dir && !e.pending => Ok(e),
        Some(e) if !e.pending => Err(StoreError::BadRequest(format!("{id} is not a folder"))),
        _ => Err(StoreError::NotFound(format!(
            "parent folder {id} not found"
        ))),
    }
}

/// Visible entries named `name` directly in `parent`.
pub(super) fn same_name(conn: &Connection, parent: u64, name: &str) -> StoreResult<Vec<Entry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = ?1 AND name = ?2 AND pending = 0"
    ))?;
    Ok(stmt
        .query_map(params![parent, name], Entry::from_row)?
        .collect::<Result<_, _>>()?)
}

/// Insert `new` under `parent`; a recording inherits its parent's owner.
pub(super) fn insert_entry(
    conn: &Connection,
    storage_id: i64,
    parent: &Entry,
    new: &NewEntry,
    blob: Option<&str>,
) -> StoreResult<Entry> {
    let size = new.size.unwrap_or(new.content.len() as u64);
    let owner = new.owner_machine.or(parent.owner_machine);
    conn.execute(
        "INSERT INTO entries (storage_id, parent_id, name, is_dir, size, content_type,
                              modified_ms, uid, blob, owner_machine)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            storage_id,
            parent.id,
            new.name,
            new.is_dir,
            size,
            new.content_type,
            new.modified_ms.unwrap_or_else(now_ms),
            new_uid(),
            blob,
            owner
        ],
    )?;
    let id = u64::try_from(conn.last_insert_rowid()).unwrap_or_default();
    get_entry(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("entry {id} vanished")))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::emulator::store::UploadSpec;

    /// A store in a fresh temporary folder (the tests of `pages` and `seed` use it too).
    pub(in crate::store) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 2, 1 << 30).unwrap();
        (dir, s)
    }

    #[test]
    fn absurd_declared_sizes_do_not_overflow_usage() {
        let (_d, s) = store();
        let target = Target {
            machine_id: Some(1),
            parent_id: None,
        };
        for name in ["huge-1", "huge-2"] {
            s.insert_raw(NewEntry {
                target,
                name: name.into(),
                size: Some(1 << 62),
                ..NewEntry::default()
            })
            .unwrap();
        }
        let storage = s.machine_storage(1).unwrap();
        // 2^63 does not fit an i64 (SQLite's SUM would fail): the usage still answers.
        assert_eq!(s.usage(storage).unwrap(), 1 << 63);
        // And an upload is refused as "full", not as a server error.
        let spec = UploadSpec {
            target,
            name: "more".into(),
            size: 1,
            content_type: "text/plain".into(),
            chunk_bytes: 1 << 20,
            overwrite: false,
        };
        assert!(matches!(s.begin_upload(&spec), Err(StoreError::NoSpace(_))));
    }

    #[test]
    fn folders_first_then_name_and_paths() {
        let (_d, s) = store();
        let root = Target::default();
        let b = s.create_dir(root, "b-dir").unwrap();
        s.create_dir(root, "a-dir").unwrap();
        for name in ["Zeta", "alpha", "Beta"] {
            s.insert_raw(NewEntry {
                target: root,
                name: name.into(),
                content: b"x".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        let l = s.list(s.shared(), None, None, 1, 20, None).unwrap();
        let names: Vec<_> = l.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a-dir", "b-dir", "Beta", "Zeta", "alpha"]);
        assert_eq!(l.folder.path, "/");
        assert_eq!(l.folder.parent_id, None);

        let inner = s
            .create_dir(
                Target {
                    machine_id: None,
                    parent_id: Some(b.id),
                },
                "inner",
            )
            .unwrap();
        let l = s
            .list(s.shared(), Some(inner.id), None, 1, 20, None)
            .unwrap();
        assert_eq!(l.folder.path, "/b-dir/inner");
        assert_eq!(l.folder.parent_id, Some(b.id));
        let l = s.list(s.shared(), Some(b.id), None, 1, 20, None).unwrap();
        assert_eq!(l.folder.parent_id, Some(0));
        assert_eq!(s.api_parent_id(&l.items[0]), b.id);

        let found = s.list(s.shared(), None, None, 1, 20, Some("ET")).unwrap();
        assert_eq!(
            found
                .items
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["Beta", "Zeta"]
        );
        assert_eq!(found.count, 2);
    }

    #[test]
    fn conflicts_and_wrong_storage() {
        let (_d, s) = store();
        let dir = s.create_dir(Target::default(), "x").unwrap();
        assert!(matches!(
            s.create_dir(Target::default(), "x"),
            Err(StoreError::Conflict(_))
        ));
        // A shared folder is not a parent in machine 1's storage.
        let t = Target {
            machine_id: Some(1),
            parent_id: Some(dir.id),
        };
        assert!(matches!(s.create_dir(t, "y"), Err(StoreError::NotFound(_))));
        let t = Target {
            machine_id: Some(9),
            parent_id: None,
        };
        assert!(matches!(s.create_dir(t, "y"), Err(StoreError::NotFound(_))));
        let in_machine = s
            .create_dir(
                Target {
                    machine_id: Some(1),
                    parent_id: None,
                },
                "x",
            )
            .unwrap();
        assert_ne!(in_machine.id, dir.id);
    }

    #[test]
    fn recursive_delete_and_root_refusal() {
        let (_d, s) = store();
        let top = s.create_dir(Target::default(), "top").unwrap();
        let sub = s
            .create_dir(
                Target {
                    machine_id: None,
                    parent_id: Some(top.id),
                },
                "sub",
            )
            .unwrap();
        let f = s
            .insert_raw(NewEntry {
                target: Target {
                    machine_id: None,
                    parent_id: Some(sub.id),
                },
                name: "f".into(),
                content: b"hello".to_vec(),
                ..Default::default()
            })
            .unwrap();
        let blob = s.blob_path(f.blob.as_deref().unwrap());
        assert!(blob.exists());
        s.delete(top.id).unwrap();
        for id in [top.id, sub.id, f.id] {
            assert!(s.entry(id).unwrap().is_none());
        }
        assert!(!blob.exists());
        assert!(matches!(
            s.delete(s.shared().root_id),
            Err(StoreError::RootFolder(_))
        ));
        assert!(matches!(s.delete(top.id), Err(StoreError::NotFound(_))));
    }
}
