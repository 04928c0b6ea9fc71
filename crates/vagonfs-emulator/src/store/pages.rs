//! Keyset pagination of a folder listing.
//!
//! `OFFSET n` walks n rows, so with 100,000 entries the last page would cost ~100 times the
//! first. A [`PageBounds`] table holds the key `(is_dir, name, id)` of the last item of every
//! page and the count, built by one scan of the `(parent_id, pending, is_dir, name, id)` index
//! and cached per `(folder, owner, per_page)` until anything in the database changes (SQLite's
//! `total_changes` of the one connection); page `p` is then the `per_page` items after page
//! `p - 1`'s last key, read from the index.
//!
//! Subtle cases: the cache starts over past [`BOUNDS_KEPT`] folders rather than growing; the
//! owner filter of a recordings listing keeps the same parameter list with or without an owner
//! ([`owner_clause`]); a page past the last is empty, not an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use super::{ENTRY_COLUMNS, Entry, Store, StoreResult};

/// Where a listing page starts: the key of the previous page's last item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PageKey {
    is_dir: bool,
    name: String,
    id: u64,
}

/// A folder's page boundaries for one `per_page`.
#[derive(Debug)]
pub(super) struct PageBounds {
    /// `after[i]`: the last key of page `i + 1`.
    pub(super) after: Vec<PageKey>,
    /// Items on all pages.
    pub(super) count: u64,
}

/// Folders whose bounds are kept; past this the cache starts over.
const BOUNDS_KEPT: usize = 64;

type BoundsKey = (u64, Option<u64>, u64);

/// [`PageBounds`] by `(folder, owner, per_page)`, with the change counter they were built at.
#[derive(Debug, Default)]
pub(super) struct BoundsCache(Mutex<HashMap<BoundsKey, (u64, Arc<PageBounds>)>>);

impl BoundsCache {
    fn get(&self, key: &BoundsKey) -> Option<(u64, Arc<PageBounds>)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|(g, b)| (*g, Arc::clone(b)))
    }

    fn put(&self, key: BoundsKey, generation: u64, bounds: Arc<PageBounds>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= BOUNDS_KEPT && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, (generation, bounds));
    }
}

/// The SQL filter on the recordings' owner, bound as parameter `?{param}` (a condition that is
/// always true when there is no owner, so the parameter list stays the same).
pub(super) fn owner_clause(owner: Option<u64>, param: u8) -> String {
    if owner.is_some() {
        format!("AND owner_machine = ?{param}")
    } else {
        format!("AND ?{param} IS NULL")
    }
}

impl Store {
    /// The page boundaries of `parent`'s listing, cached while nothing changed.
    pub(super) fn page_bounds(
        &self,
        conn: &Connection,
        parent: u64,
        owner: Option<u64>,
        per_page: u64,
    ) -> StoreResult<Arc<PageBounds>> {
        let generation = conn.total_changes();
        let key = (parent, owner, per_page);
        if let Some((g, bounds)) = self.page_bounds.get(&key)
            && g == generation
        {
            return Ok(bounds);
        }
        let mut after = Vec::new();
        let mut count: u64 = 0;
        for is_dir in [true, false] {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT name, id FROM entries WHERE parent_id = ?1 AND pending = 0 \
                 AND is_dir = ?2 {} ORDER BY name, id",
                owner_clause(owner, 3)
            ))?;
            let mut rows = stmt.query(params![parent, is_dir, owner])?;
            while let Some(row) = rows.next()? {
                count += 1;
                if per_page > 0 && count.is_multiple_of(per_page) {
                    after.push(PageKey {
                        is_dir,
                        name: row.get(0)?,
                        id: row.get(1)?,
                    });
                }
            }
        }
        let bounds = Arc::new(PageBounds { after, count });
        self.page_bounds.put(key, generation, Arc::clone(&bounds));
        Ok(bounds)
    }

    /// Up to `per_page` items of `parent` after `after` (from the start when `None`), folders
    /// first, each group by name then id.
    pub(super) fn keyset_page(
        &self,
        conn: &Connection,
        parent: u64,
        owner: Option<u64>,
        after: Option<&PageKey>,
        per_page: u64,
    ) -> StoreResult<Vec<Entry>> {
        let mut items = Vec::new();
        for is_dir in [true, false] {
            let left = per_page.saturating_sub(items.len() as u64);
            if left == 0 {
                break;
            }
            let from = match after {
                None => None,
                Some(k) if k.is_dir == is_dir => Some(k),
                // Past the last folder: the files start from their first.
                Some(k) if k.is_dir => None,
                // The key is a file: no folder comes after it.
                Some(_) => continue,
            };
            let owner_sql = owner_clause(owner, 3);
            let limit = left.min(i64::MAX as u64);
            let page: Vec<Entry> = match from {
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = ?1 AND pending = 0 \
                         AND is_dir = ?2 {owner_sql} ORDER BY name, id LIMIT ?4"
                    ))?;
                    stmt.query_map(params![parent, is_dir, owner, limit], Entry::from_row)?
                        .collect::<Result<_, _>>()?
                }
                Some(k) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = ?1 AND pending = 0 \
                         AND is_dir = ?2 {owner_sql} AND (name, id) > (?5, ?6) \
                         ORDER BY name, id LIMIT ?4"
                    ))?;
                    stmt.query_map(
                        params![parent, is_dir, owner, limit, k.name, k.id],
                        Entry::from_row,
                    )?
                    .collect::<Result<_, _>>()?
                }
            };
            items.extend(page);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use crate::emulator::store::tree::tests::store;
    use crate::emulator::store::{NewEntry, Target};

    #[test]
    fn keyset_pages_match_the_order_and_cost_the_same_anywhere() {
        let (_d, s) = store();
        let storage = s.machine_storage(1).unwrap();
        let target = Target {
            machine_id: Some(1),
            parent_id: None,
        };
        let (first, last) = s.insert_folders(target, "d", 100_000).unwrap();
        assert_eq!(last - first, 99_999);
        // A few files after the folders, one name repeated (ordered by id then).
        for name in ["b", "a", "a"] {
            s.insert_raw(NewEntry {
                target,
                name: name.into(),
                content: b"x".to_vec(),
                ..NewEntry::default()
            })
            .unwrap();
        }
        let page = |p: u64| s.list(storage, None, None, p, 100, None).unwrap();
        let one = page(1);
        assert_eq!(one.count, 100_003);
        assert_eq!(one.items[0].name, "d000000");
        assert_eq!(page(2).items[0].name, "d000100");
        let end = page(1001);
        let names: Vec<&str> = end.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["a", "a", "b"]);
        assert!(end.items[0].id < end.items[1].id);
        assert!(page(1002).items.is_empty());
        // The boundary table is built once; then the last page costs about the first.
        let time = |p: u64| {
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                page(p);
                best = best.min(t.elapsed());
            }
            best
        };
        let (t_first, t_last) = (time(1), time(1000));
        assert!(
            t_last < t_first * 3,
            "last page {t_last:?}, first {t_first:?}"
        );
        // A change is seen at once: the table is rebuilt.
        s.create_dir(target, "0-first").unwrap();
        assert_eq!(page(1).items[0].name, "0-first");
        assert_eq!(page(1).count, 100_004);
    }
}
