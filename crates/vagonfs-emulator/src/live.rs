//! The "live disk" of running machines (`POST /machines/{id}/list-content`): a real folder under
//! `--data` (`live/machine-<n>/`) stands for the machine's `C:\` drive.
//!
//! Subtle cases: paths are Windows paths (`C:\Users`, `c:/Users/`, `C:`), drive letters are
//! case-insensitive, both separators are accepted and repeated or trailing separators ignored;
//! a `.` or `..` component, a NUL, or a relative path is 400 (nothing can escape the folder); a
//! drive other than `C:` or a missing path is 404; a path that is a file is 400. Entries are
//! listed without following symlinks, folders first, then by name; the `path` of each is the
//! normalized request path joined with `\`.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Folders created in a fresh live disk (relative to `C:\`, `/`-separated).
const SEED_FOLDERS: &[&str] = &[
    "Users/Administrator/Desktop",
    "Users/Administrator/Documents",
    "Users/Administrator/Downloads",
    "Users/Public/Documents",
    "Program Files/Vagon",
    "Windows/System32",
];
/// Files created in a fresh live disk: (path, content).
const SEED_FILES: &[(&str, &str)] = &[
    (
        "Users/Administrator/Desktop/readme.txt",
        "Welcome to your Vagon computer.\r\n",
    ),
    ("Users/Administrator/Documents/notes.txt", "notes\r\n"),
    ("Windows/win.ini", "; for 16-bit app support\r\n"),
];

/// One listed entry, as the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveItem {
    pub path: String,
    pub name: String,
    pub is_directory: bool,
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    BadPath(String),
    #[error("path {0} not found")]
    NotFound(String),
    #[error("path {0} is not a folder")]
    NotAFolder(String),
    #[error("disk error: {0}")]
    Io(#[from] std::io::Error),
}

/// The folder standing for machine `m`'s `C:\`.
pub fn machine_root(live_dir: &Path, m: u64) -> PathBuf {
    live_dir.join(format!("machine-{m}"))
}

/// Create the machine's live disk with a small Windows-like tree, unless it exists.
pub fn seed(root: &Path) -> std::io::Result<()> {
    if root.exists() {
        return Ok(());
    }
    for folder in SEED_FOLDERS {
        std::fs::create_dir_all(root.join(folder))?;
    }
    for (file, content) in SEED_FILES {
        std::fs::write(root.join(file), content)?;
    }
    Ok(())
}

/// Split a Windows path into its components under `C:`. Returns the normalized display prefix
/// (`C:\Users\Administrator`) and the components.
fn parse(path: &str) -> Result<(String, Vec<String>), LiveError> {
    if path.contains('\0') {
        return Err(LiveError::BadPath("path must not contain NUL".into()));
    }
    let mut chars = path.chars();
    let (Some(drive), Some(':')) = (chars.next(), chars.next()) else {
        return Err(LiveError::BadPath(format!(
            "{path:?} is not an absolute Windows path like C:\\Users"
        )));
    };
    if !drive.is_ascii_alphabetic() {
        return Err(LiveError::BadPath(format!("{path:?} has no drive letter")));
    }
    if !drive.eq_ignore_ascii_case(&'c') {
        return Err(LiveError::NotFound(path.into()));
    }
    let rest = chars.as_str();
    let mut components = Vec::new();
    for part in rest.split(['\\', '/']).filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(LiveError::BadPath(
                "path must not contain . or .. components".into(),
            ));
        }
        components.push(part.to_string());
    }
    let display = format!("C:\\{}", components.join("\\"));
    Ok((display, components))
}

/// `root` joined with `components`, each matched as Windows does: the exact name first, else
/// the one name in the folder that equals it ignoring case. `None` when one is missing.
fn resolve_case_insensitive(root: &Path, components: &[String]) -> Option<std::path::PathBuf> {
    let mut dir = root.to_path_buf();
    for component in components {
        let exact = dir.join(component);
        if std::fs::symlink_metadata(&exact).is_ok() {
            dir = exact;
            continue;
        }
        let wanted = component.to_lowercase();
        let found = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().to_lowercase() == wanted)?;
        dir = found.path();
    }
    Some(dir)
}

/// List the folder `path` of the live disk rooted at `root`.
pub fn list(root: &Path, path: &str) -> Result<Vec<LiveItem>, LiveError> {
    let (display, components) = parse(path)?;
    // Windows paths are case-insensitive: `c:\users` is `C:\Users`.
    let Some(dir) = resolve_case_insensitive(root, &components) else {
        return Err(LiveError::NotFound(display));
    };
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LiveError::NotFound(display));
        }
        Err(e) => return Err(e.into()),
    };
    if !meta.is_dir() {
        return Err(LiveError::NotAFolder(display));
    }
    let prefix = if display.ends_with('\\') {
        display
    } else {
        format!("{display}\\")
    };
    let mut items = Vec::new();
    for item in std::fs::read_dir(&dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let is_directory = item.file_type()?.is_dir();
        items.push(LiveItem {
            path: format!("{prefix}{name}"),
            name,
            is_directory,
        });
    }
    items.sort_by(|a, b| {
        b.is_directory
            .cmp(&a.is_directory)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_guarded() {
        assert_eq!(parse("C:\\Users").unwrap().0, "C:\\Users");
        assert_eq!(
            parse("c:/Users//Administrator/").unwrap().0,
            "C:\\Users\\Administrator"
        );
        assert_eq!(parse("C:").unwrap(), ("C:\\".to_string(), vec![]));
        assert!(matches!(parse("C:\\..\\x"), Err(LiveError::BadPath(_))));
        assert!(matches!(parse("Users"), Err(LiveError::BadPath(_))));
        assert!(matches!(parse("D:\\Users"), Err(LiveError::NotFound(_))));
        assert!(matches!(parse(""), Err(LiveError::BadPath(_))));
    }

    #[test]
    fn lists_the_seeded_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = machine_root(dir.path(), 1);
        seed(&root).unwrap();
        let top = list(&root, "C:\\").unwrap();
        let names: Vec<_> = top.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["Program Files", "Users", "Windows"]);
        assert_eq!(top[1].path, "C:\\Users");
        let names = |path: &str| -> Vec<String> {
            list(&root, path)
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(
            names("c:\\users\\ADMINISTRATOR\\desktop"),
            names("C:\\Users\\Administrator\\Desktop"),
            "Windows paths ignore case"
        );
        assert!(matches!(
            list(&root, "C:\\Users\\Nobody"),
            Err(LiveError::NotFound(_))
        ));
        let admin = list(&root, "C:\\Users\\Administrator\\Desktop").unwrap();
        assert_eq!(
            admin,
            [LiveItem {
                path: "C:\\Users\\Administrator\\Desktop\\readme.txt".into(),
                name: "readme.txt".into(),
                is_directory: false
            }]
        );
        let windows = list(&root, "C:\\Windows").unwrap();
        assert!(windows[0].is_directory && !windows[1].is_directory);
        assert!(matches!(
            list(&root, "C:\\Nope"),
            Err(LiveError::NotFound(_))
        ));
        assert!(matches!(
            list(&root, "C:\\Windows\\win.ini"),
            Err(LiveError::NotAFolder(_))
        ));
    }
}
