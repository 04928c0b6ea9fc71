//! Append-only logs of JSON lines in the spool folder, for changes answered before the server
//! has them: folders made by mkdir (`new_folders.rs`) and files removed by unlink
//! (`deletes.rs`).
//!
//! Subtle cases: a line is made durable by the spool folder's group commit (the same fsync as
//! journal records), not one fsync per line; a torn last line (a crash mid-write) and any line
//! that does not parse are skipped with a warning; a log is rewritten (temp file, fsync, rename)
//! only at load, with what is still needed, so it never grows across mounts; files are opened
//! `O_NOFOLLOW`, mode 0600, in the private spool folder.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::write::GroupCommit;

/// One log open for appending.
pub(crate) struct LineLog {
    file: File,
    commit: GroupCommit,
}

impl LineLog {
    pub(crate) fn open(path: &Path, commit: GroupCommit) -> std::io::Result<LineLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(LineLog { file, commit })
    }

    /// Append `line`; durable at the spool folder's next group commit.
    pub(crate) fn append<T: Serialize>(&mut self, line: &T) -> std::io::Result<()> {
        self.file.write_all(&to_line(line)?)?;
        self.commit.note();
        Ok(())
    }

    /// Empty the log: every line in it is done with. Appends go on from the start.
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.commit.note();
        Ok(())
    }
}

fn to_line<T: Serialize>(line: &T) -> std::io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    Ok(text)
}

/// Every line of the log at `path` that parses (none when there is no log); `what` names the
/// log in warnings.
pub(crate) fn read_lines<T: DeserializeOwned>(path: &Path, what: &str) -> std::io::Result<Vec<T>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for (n, text) in std::io::BufReader::new(file).lines().enumerate() {
        let Ok(text) = text else { break };
        match serde_json::from_str(&text) {
            Ok(line) => lines.push(line),
            Err(e) => {
                tracing::warn!(log = what, line = n + 1, error = %e, "skipping an unreadable line of a log in the cache folder")
            }
        }
    }
    Ok(lines)
}

/// Replace the log at `path` with `lines` (temp file, rename); no lines: no log.
pub(crate) fn rewrite<T: Serialize>(path: &Path, lines: &[T]) -> std::io::Result<()> {
    if lines.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp: PathBuf = path.with_extension(format!(
        "{}.{}",
        uuid::Uuid::new_v4().simple(),
        super::write::TEMP_EXT
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        for line in lines {
            f.write_all(&to_line(line)?)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
