//! `vagonfs install-helper`: `mount.vagonfs` as a symlink to this binary.
//!
//! Subtle cases: a file that is not a symlink is never overwritten; a symlink is replaced
//! atomically (a new link renamed over the old one); a `--dest` that is a folder gets
//! `mount.vagonfs` inside it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{DEFAULT_HELPER_PATH, EXIT_USAGE, HELPER_NAME, HelperError};

/// `vagonfs install-helper` options.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallHelperArgs {
    /// Where to create the `mount.vagonfs` symlink: a path, or a folder to put it in.
    #[arg(long, default_value = DEFAULT_HELPER_PATH)]
    pub dest: PathBuf,
}

/// What [`install_helper`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    Created,
    /// An older symlink pointed elsewhere.
    Replaced {
        previous: PathBuf,
    },
    AlreadyInstalled,
}

/// Makes `dest` a symlink to the running `vagonfs` binary.
pub fn install_helper(dest: &Path) -> Result<InstallOutcome, HelperError> {
    let exe =
        std::env::current_exe().map_err(|e| HelperError::io(Path::new("/proc/self/exe"), e))?;
    install_helper_to(dest, &exe)
}

/// Where the link goes for `--dest`: a folder (not a symlink to one) gets `mount.vagonfs`
/// inside it; anything else is the link's own path.
pub fn helper_path(dest: &Path) -> PathBuf {
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => dest.join(HELPER_NAME),
        _ => dest.to_path_buf(),
    }
}

/// Makes `dest` (or `dest/mount.vagonfs` when `dest` is a folder) a symlink to `target`;
/// refuses to replace anything but a symlink.
pub fn install_helper_to(dest: &Path, target: &Path) -> Result<InstallOutcome, HelperError> {
    let dest = &helper_path(dest);
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let previous = std::fs::read_link(dest).map_err(|e| HelperError::io(dest, e))?;
            if previous == target {
                return Ok(InstallOutcome::AlreadyInstalled);
            }
            let name = format!(".{HELPER_NAME}.new-{}", std::process::id());
            let temp = dest.with_file_name(name);
            let _ = std::fs::remove_file(&temp);
            std::os::unix::fs::symlink(target, &temp).map_err(|e| HelperError::io(&temp, e))?;
            if let Err(e) = std::fs::rename(&temp, dest) {
                let _ = std::fs::remove_file(&temp);
                return Err(HelperError::io(dest, e));
            }
            Ok(InstallOutcome::Replaced { previous })
        }
        Ok(_) => Err(HelperError::NotASymlink(dest.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::os::unix::fs::symlink(target, dest).map_err(|e| HelperError::io(dest, e))?;
            Ok(InstallOutcome::Created)
        }
        Err(e) => Err(HelperError::io(dest, e)),
    }
}

/// `vagonfs install-helper [--dest PATH]`.
pub fn run_install_helper(args: InstallHelperArgs) -> ExitCode {
    match install_helper(&args.dest) {
        Ok(outcome) => {
            let dest = helper_path(&args.dest);
            let dest = dest.display();
            match outcome {
                InstallOutcome::Created => println!("installed {dest}"),
                InstallOutcome::Replaced { previous } => {
                    println!("installed {dest} (it pointed to {})", previous.display())
                }
                InstallOutcome::AlreadyInstalled => println!("{dest} is already installed"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vagonfs install-helper: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_creates_replaces_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(HELPER_NAME);
        let exe = dir.path().join("vagonfs");
        std::fs::write(&exe, "binary").unwrap();

        assert_eq!(
            install_helper_to(&dest, &exe).unwrap(),
            InstallOutcome::Created
        );
        assert_eq!(std::fs::read_link(&dest).unwrap(), exe);
        assert_eq!(
            install_helper_to(&dest, &exe).unwrap(),
            InstallOutcome::AlreadyInstalled
        );

        let newer = dir.path().join("vagonfs-2");
        assert_eq!(
            install_helper_to(&dest, &newer).unwrap(),
            InstallOutcome::Replaced {
                previous: exe.clone()
            }
        );
        assert_eq!(std::fs::read_link(&dest).unwrap(), newer);
        // No temporary link left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // A folder: the link goes inside it.
        let folder = dir.path().join("sbin");
        std::fs::create_dir(&folder).unwrap();
        assert_eq!(
            install_helper_to(&folder, &exe).unwrap(),
            InstallOutcome::Created
        );
        assert_eq!(std::fs::read_link(folder.join(HELPER_NAME)).unwrap(), exe);

        let file = dir.path().join("regular");
        std::fs::write(&file, "not a link").unwrap();
        assert!(matches!(
            install_helper_to(&file, &exe),
            Err(HelperError::NotASymlink(_))
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a link");
    }
}
