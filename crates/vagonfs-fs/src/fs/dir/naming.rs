//! The names listed objects are shown under: valid Linux names, cut to [`NAME_MAX`] bytes,
//! de-duplicated (`~{id}`), machine folders named after their machine. The rules are in the
//! `//!` note of `dir/mod.rs`; this module is their one owner.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::Mutex;

use crate::api::{FileEntry, ObjectType, Space};

use super::{ListedEntry, NAME_MAX, WARNED_MAX};
use crate::fs::inode::{Loc, Seen};
use crate::fs::{NodeKind, lock};

/// Why `name` cannot be a Linux file name, if it cannot.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.len() > NAME_MAX {
        Some("longer than 255 bytes")
    } else {
        None
    }
}

/// Warn about `loc` once for the life of the mount.
fn warn_once(warned: &Mutex<HashSet<Loc>>, loc: Loc, what: &str, name: &str) {
    let first = {
        let mut set = lock(warned);
        if set.len() >= WARNED_MAX {
            None
        } else {
            Some(set.insert(loc))
        }
    };
    match first {
        Some(true) => tracing::warn!(?loc, name = %name.escape_debug(), "{what}"),
        Some(false) => {}
        None => tracing::debug!(?loc, name = %name.escape_debug(), "{what}"),
    }
}

/// Turn a raw listing into visible entries: invalid names skipped, names longer than
/// [`NAME_MAX`] shortened to `…~{id}`, duplicates renamed; the last two are read-only.
pub(crate) fn sanitize(
    space: Space,
    raw: Vec<FileEntry>,
    warned: &Mutex<HashSet<Loc>>,
) -> Vec<ListedEntry> {
    let mut valid = Vec::with_capacity(raw.len());
    for mut entry in raw {
        let loc = Loc::Remote {
            space,
            id: entry.id,
        };
        if entry.id == 0 {
            warn_once(warned, loc, "skipping an object with id 0", &entry.name);
            continue;
        }
        match visible_name(&entry) {
            Some((name, long)) => {
                if long {
                    warn_once(
                        warned,
                        loc,
                        &format!("name longer than 255 bytes shown read-only as {name:?}"),
                        &entry.name,
                    );
                    entry.name = name;
                }
                valid.push((entry, long));
            }
            None => {
                let problem = name_problem(&entry.name).unwrap_or("cannot be shortened");
                warn_once(
                    warned,
                    loc,
                    &format!(
                        "skipping an object whose name cannot be a Linux file name ({problem})"
                    ),
                    &entry.name,
                );
            }
        }
    }
    let names: Vec<(String, u64)> = valid.iter().map(|(e, _)| (e.name.clone(), e.id)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (name, _) in &names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let held_twice: Vec<bool> = names.iter().map(|(n, _)| counts[n.as_str()] > 1).collect();
    let shown = dedupe_names(&names, true);
    valid
        .into_iter()
        .zip(shown)
        .zip(held_twice)
        .map(|(((e, long), name), twice)| listed_entry(space, &e, name, long || twice))
        .collect()
}

/// The name object `e` shows under on its own (before duplicates are told apart), and whether
/// it was cut to fit; `None` for an object that cannot be shown (id 0, or a name Linux
/// cannot hold).
pub(super) fn visible_name(e: &FileEntry) -> Option<(String, bool)> {
    if e.id == 0 {
        return None;
    }
    let long = e.name.len() > NAME_MAX;
    let name = if long {
        shortened_name(&e.name, e.id)
    } else {
        e.name.clone()
    };
    name_problem(&name).is_none().then_some((name, long))
}

/// Object `e` of `space` shown as `name`.
pub(super) fn listed_entry(
    space: Space,
    e: &FileEntry,
    name: String,
    read_only: bool,
) -> ListedEntry {
    let kind = match e.object_type {
        ObjectType::File => NodeKind::File,
        ObjectType::Directory => NodeKind::Directory,
    };
    let size = if kind == NodeKind::File { e.size } else { 0 };
    ListedEntry {
        name: OsString::from(name),
        seen: Seen {
            loc: Loc::Remote { space, id: e.id },
            kind,
            size,
            mtime: e.modified,
        },
        read_only,
    }
}

/// A name longer than [`NAME_MAX`] cut to fit, with `…~{id}` (and a short extension) after it.
fn shortened_name(name: &str, id: u64) -> String {
    let ext = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => &name[dot..],
        _ => "",
    };
    let tag = format!("\u{2026}~{id}{ext}");
    let stem = &name[..name.len() - ext.len()];
    format!(
        "{}{tag}",
        truncate_to(stem, NAME_MAX.saturating_sub(tag.len()))
    )
}

/// `machines/` entries: one folder per machine, named after it.
pub(super) fn machine_entries(
    machines: Vec<crate::api::Machine>,
    warned: &Mutex<HashSet<Loc>>,
) -> Vec<ListedEntry> {
    let names: Vec<(String, u64)> = machines
        .iter()
        .map(|m| {
            let safe = machine_folder_name(&m.name, m.id);
            if safe != m.name {
                let loc = Loc::SpaceRoot(Space::Machine(m.id));
                warn_once(warned, loc, &format!("machine shown as {safe:?}"), &m.name);
            }
            (safe, m.id)
        })
        .collect();
    let shown = dedupe_names(&names, false);
    machines
        .into_iter()
        .zip(shown)
        .map(|(m, name)| ListedEntry {
            name: OsString::from(name),
            seen: Seen {
                loc: Loc::SpaceRoot(Space::Machine(m.id)),
                kind: NodeKind::Directory,
                size: 0,
                mtime: None,
            },
            read_only: false,
        })
        .collect()
}

/// A machine's name made into a file name.
fn machine_folder_name(name: &str, id: u64) -> String {
    let replaced: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if replaced.is_empty() || replaced == "." || replaced == ".." {
        return format!("machine-{id}");
    }
    truncate_to(&replaced, NAME_MAX).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Names for a list of `(name, id)` such that all are distinct: for each name, the lowest id
/// keeps it; the others, in id order, get `~{id}` (then `~{id}~{n}`) before the extension (when
/// `split_ext`) or at the end, avoiding every name already taken. Order is preserved.
pub(crate) fn dedupe_names(items: &[(String, u64)], split_ext: bool) -> Vec<String> {
    let mut owner: HashMap<&str, u64> = HashMap::new();
    for (name, id) in items {
        owner
            .entry(name.as_str())
            .and_modify(|o| *o = (*o).min(*id))
            .or_insert(*id);
    }
    let mut taken: HashSet<String> = owner.keys().map(|n| n.to_string()).collect();
    let mut out: Vec<Option<String>> = items
        .iter()
        .map(|(name, id)| (owner.get(name.as_str()) == Some(id)).then(|| name.clone()))
        .collect();
    // Losers in id order, so the outcome does not depend on the server's ordering.
    let mut losers: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
    losers.sort_by_key(|&i| (items[i].1, i));
    for i in losers {
        let (name, id) = &items[i];
        let mut attempt = 0u32;
        let fresh = loop {
            let candidate = with_id_suffix(name, *id, attempt, split_ext);
            if !taken.contains(&candidate) {
                break candidate;
            }
            attempt += 1;
        };
        taken.insert(fresh.clone());
        out[i] = Some(fresh);
    }
    out.into_iter().map(|n| n.unwrap_or_default()).collect()
}

/// `report.pdf` + 42 → `report~42.pdf` (attempt 0) or `report~42~1.pdf`, within [`NAME_MAX`].
fn with_id_suffix(name: &str, id: u64, attempt: u32, split_ext: bool) -> String {
    let tag = if attempt == 0 {
        format!("~{id}")
    } else {
        format!("~{id}~{attempt}")
    };
    let (stem, ext) = match name.rfind('.') {
        // A leading dot is a hidden file's name, not an extension.
        Some(dot) if split_ext && dot > 0 && name.len() - dot + tag.len() < NAME_MAX / 2 => {
            name.split_at(dot)
        }
        _ => (name, ""),
    };
    let budget = NAME_MAX.saturating_sub(tag.len() + ext.len());
    format!("{}{tag}{ext}", truncate_to(stem, budget))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn lowest_id_keeps_the_name() {
        let got = dedupe_names(
            &pairs(&[("a.txt", 9), ("a.txt", 3), ("b", 1), ("b", 2)]),
            true,
        );
        assert_eq!(got, vec!["a~9.txt", "a.txt", "b", "b~2"]);
    }

    #[test]
    fn generated_names_avoid_real_ones() {
        let got = dedupe_names(&pairs(&[("a.txt", 1), ("a.txt", 7), ("a~7.txt", 2)]), true);
        assert_eq!(got, vec!["a.txt", "a~7~1.txt", "a~7.txt"]);
        let hidden = dedupe_names(&pairs(&[(".bashrc", 1), (".bashrc", 2)]), true);
        assert_eq!(hidden, vec![".bashrc", ".bashrc~2"]);
    }

    #[test]
    fn suffix_stays_within_name_max() {
        let long = "x".repeat(250) + ".txt";
        let got = with_id_suffix(&long, 123456, 0, true);
        assert!(got.len() <= NAME_MAX, "{}", got.len());
        assert!(got.ends_with("~123456.txt"));
        let multibyte = "é".repeat(127); // 254 bytes
        let got = with_id_suffix(&multibyte, 5, 0, false);
        assert!(got.len() <= NAME_MAX && got.ends_with("~5"));
    }

    #[test]
    fn invalid_names() {
        for bad in ["", ".", "..", "a/b", "nul\0", &"y".repeat(256)] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["...", " ", "a\nb", &"z".repeat(255), "ünïcode"] {
            assert!(name_problem(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn machine_names_become_file_names() {
        assert_eq!(machine_folder_name("a/b", 1), "a_b");
        assert_eq!(machine_folder_name("x\0y", 1), "x_y");
        assert_eq!(machine_folder_name("", 4), "machine-4");
        assert_eq!(machine_folder_name("..", 5), "machine-5");
        assert_eq!(machine_folder_name(&"m".repeat(300), 5).len(), NAME_MAX);
    }
}
