//! `Path=` of an info file: relative to the `--all` root as GLib writes it, relative to the
//! storage as stored (see `trash/mod.rs`).

/// A path escaped as GLib writes `Path=` (`g_uri_escape_string(path, "/", FALSE)`).
pub(super) fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Path=` lines of an info file rewritten by `f` (other lines untouched).
fn map_path_lines(data: &[u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for line in data.split_inclusive(|b| *b == b'\n') {
        match line.strip_prefix(b"Path=") {
            Some(value) => {
                out.extend_from_slice(b"Path=");
                out.extend_from_slice(&f(value));
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// An info file as stored in a storage: `Path=` relative to the `--all` root made relative to
/// the storage (`prefix` = its folder from the root); any other `Path=` is kept as it is.
pub(super) fn to_store_path(data: &[u8], prefix: &str) -> Vec<u8> {
    let escaped = escape_path(prefix);
    map_path_lines(data, |value| match value.strip_prefix(escaped.as_bytes()) {
        Some(rest) => rest.to_vec(),
        None => value.to_vec(),
    })
}

/// An info file as read through the merged `info/`: a relative `Path=` gets the storage's
/// folder in front again.
pub(super) fn to_top_path(data: &[u8], prefix: &str) -> Vec<u8> {
    let escaped = escape_path(prefix);
    map_path_lines(data, |value| {
        if value.starts_with(b"/") {
            value.to_vec()
        } else {
            let mut v = escaped.as_bytes().to_vec();
            v.extend_from_slice(value);
            v
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] =
        b"[Trash Info]\nPath=machines/Work%20PC/dir/a%20b.txt\nDeletionDate=2026-11-30T01:02:03\n";

    #[test]
    fn path_made_relative_to_the_storage_and_back() {
        let stored = to_store_path(INFO, "machines/Work PC/");
        assert_eq!(
            stored,
            b"[Trash Info]\nPath=dir/a%20b.txt\nDeletionDate=2026-11-30T01:02:03\n"
        );
        assert_eq!(to_top_path(&stored, "machines/Work PC/"), INFO);
        assert_eq!(
            to_top_path(&stored, "machines/Work PC/").len() - stored.len(),
            escape_path("machines/Work PC/").len()
        );
    }

    #[test]
    fn other_paths_are_kept() {
        let other = b"[Trash Info]\nPath=shared/x\n";
        assert_eq!(to_store_path(other, "machines/A/"), other);
        let absolute = b"[Trash Info]\nPath=/home/u/x\n";
        assert_eq!(to_top_path(absolute, "shared/"), absolute);
    }
}
