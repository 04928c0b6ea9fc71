//! Entries put in without the API's checks: raw entries and bulk folders (test hooks,
//! benchmarks) and the seeded session recordings of each machine.
//!
//! Subtle cases: a raw entry may break the API's rules (a repeated name, any size) on purpose;
//! bulk folders go in in one transaction; the recordings are seeded once per machine, their
//! dates taken from the session folder's name, their bytes deterministic and MP4-looking.

use rusqlite::params;

use super::tree::{NewEntry, Target, insert_entry};
use super::{Entry, Store, StoreResult, new_uid, publish, remove_quietly};
use crate::emulator::reply::now_ms;

/// Seeded recordings per machine: (session folder, file name, bytes).
const SEED_RECORDINGS: &[(&str, &str, usize)] = &[
    ("Session 2026-01-12 09-30", "recording-1.mp4", 4096),
    ("Session 2026-01-12 09-30", "recording-2.mp4", 2500),
    ("Session 2026-01-14 16-05", "recording-1.mp4", 6000),
];

impl Store {
    /// Insert an entry without any check but the parent's existence (test hook, seeding).
    pub fn insert_raw(&self, new: NewEntry) -> StoreResult<Entry> {
        let blob = if new.is_dir {
            None
        } else {
            let name = new_uid();
            let tmp = self.dirs.tmp_file();
            std::fs::write(&tmp, &new.content)?;
            publish(&tmp, &self.blob_path(&name))?;
            Some(name)
        };
        let mut db = self.db();
        let inserted = (|| {
            let (storage, parent) = self.resolve_target_in(&db, new.target, new.recordings)?;
            let tx = db.transaction()?;
            let entry = insert_entry(&tx, storage.id, &parent, &new, blob.as_deref())?;
            tx.commit()?;
            Ok(entry)
        })();
        if inserted.is_err()
            && let Some(blob) = &blob
        {
            remove_quietly(&self.blob_path(blob));
        }
        inserted
    }

    /// `count` empty folders named `{prefix}{n:06}` (n from 0) under `target`, in one transaction
    /// (test hook and benchmarks: big folders in a moment). Answers the ids of the first and the
    /// last one. No name checks beyond the parent's existence, like [`Store::insert_raw`].
    pub fn insert_folders(
        &self,
        target: Target,
        prefix: &str,
        count: u64,
    ) -> StoreResult<(u64, u64)> {
        let mut db = self.db();
        let (storage, parent) = self.resolve_target_in(&db, target, false)?;
        let tx = db.transaction()?;
        let (mut first, mut last) = (0, 0);
        {
            let mut stmt = tx.prepare(
                "INSERT INTO entries (storage_id, parent_id, name, is_dir, size, modified_ms, uid)
                 VALUES (?1, ?2, ?3, 1, 0, ?4, ?5)",
            )?;
            let now = now_ms();
            for n in 0..count {
                stmt.execute(params![
                    storage.id,
                    parent.id,
                    format!("{prefix}{n:06}"),
                    now,
                    new_uid()
                ])?;
                last = u64::try_from(tx.last_insert_rowid()).unwrap_or_default();
                if n == 0 {
                    first = last;
                }
            }
        }
        tx.commit()?;
        Ok((first, last))
    }

    /// Give machine `m` its recordings folder with a few small sessions, once.
    pub(super) fn seed_recordings(&self, m: u64) -> StoreResult<()> {
        let seeded: bool = self.db().query_row(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE storage_id = ?1 AND owner_machine = ?2)",
            params![self.recordings.id, m],
            |r| r.get(0),
        )?;
        if seeded {
            return Ok(());
        }
        let folder = |parent: u64, name: &str, modified_ms: Option<i64>| {
            self.insert_raw(NewEntry {
                target: Target {
                    machine_id: None,
                    parent_id: Some(parent),
                },
                recordings: true,
                owner_machine: Some(m),
                name: name.into(),
                is_dir: true,
                modified_ms,
                ..NewEntry::default()
            })
        };
        let machine_dir = folder(self.recordings.root_id, &super::machine_name(m), None)?;
        let mut session: Option<(String, u64)> = None;
        for (session_name, file_name, len) in SEED_RECORDINGS {
            let session_id = match &session {
                Some((name, id)) if name == session_name => *id,
                _ => {
                    let id = folder(machine_dir.id, session_name, session_ms(session_name))?.id;
                    session = Some((session_name.to_string(), id));
                    id
                }
            };
            self.insert_raw(NewEntry {
                target: Target {
                    machine_id: None,
                    parent_id: Some(session_id),
                },
                recordings: true,
                owner_machine: Some(m),
                name: (*file_name).into(),
                content: fake_mp4(m, file_name, *len),
                content_type: Some("video/mp4".into()),
                // Recorded during the session: its date, not the seeding time.
                modified_ms: session_ms(session_name),
                ..NewEntry::default()
            })?;
        }
        Ok(())
    }
}

/// The date a seeded session folder is named after (`Session 2026-01-12 09-30`), ms since
/// the epoch (UTC).
fn session_ms(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix("Session ")?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H-%M")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Deterministic bytes that start like an MP4 (`ftyp` box) and differ per machine and file.
fn fake_mp4(machine: u64, name: &str, len: usize) -> Vec<u8> {
    let mut bytes = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    let seed = name.bytes().fold(machine.wrapping_mul(31), |acc, b| {
        acc.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    let mut state = seed | 1;
    while bytes.len() < len {
        // xorshift64: cheap deterministic filler.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(state as u8);
    }
    bytes.truncate(len);
    bytes
}

#[cfg(test)]
mod tests {
    use crate::emulator::store::StoreError;
    use crate::emulator::store::tree::tests::store;

    #[test]
    fn recordings_are_seeded_per_machine_and_filtered() {
        let (_d, s) = store();
        let all = s.list(s.recordings(), None, None, 1, 20, None).unwrap();
        assert_eq!(all.items.len(), 2);
        let one = s.list(s.recordings(), None, Some(1), 1, 20, None).unwrap();
        assert_eq!(one.items.len(), 1);
        let machine1 = &one.items[0];
        assert!(matches!(
            s.list(s.recordings(), Some(machine1.id), Some(2), 1, 20, None),
            Err(StoreError::NotFound(_))
        ));
        let sessions = s
            .list(s.recordings(), Some(machine1.id), Some(1), 1, 20, None)
            .unwrap();
        assert_eq!(sessions.items.len(), 2);
        let files = s
            .list(
                s.recordings(),
                Some(sessions.items[0].id),
                None,
                1,
                20,
                None,
            )
            .unwrap();
        assert!(
            files
                .items
                .iter()
                .all(|e| e.name.ends_with(".mp4") && !e.is_dir)
        );
        assert!(matches!(
            s.delete(files.items[0].id),
            Err(StoreError::ReadOnly(_))
        ));
    }
}
