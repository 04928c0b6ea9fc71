//! `vagonfs sync [MOUNTPOINT]`: wait until a mount has uploaded every change.
//!
//! Closing a file returns once its change is safe on local disk; uploads run in the background.
//! A script that needs the server to have everything runs `cp -r … && vagonfs sync`: the daemon
//! uploads every pending change at once (failed ones included), answers once nothing is pending,
//! and this command exits 0, or 1 listing each file it could not upload and why.
//!
//! Subtle cases owned here:
//! - without MOUNTPOINT every vagonfs mount of this user is synced, one after the other; one
//!   failing does not stop the others, and the exit status is the worst;
//! - Ctrl-C stops the waiting only: the uploads carry on in the daemon.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::control::{self, SyncFailure};
use super::mounts;
use super::status::{
    DaemonError, EXIT_FAILURE, EXIT_INTERRUPTED, ProgressView, explain_unreachable,
    is_vagonfs_mount, mount_table, runtime,
};

/// `vagonfs sync` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// The mount to sync; every vagonfs mount of this user when left out.
    pub mountpoint: Option<PathBuf>,
}

/// `vagonfs sync [MOUNTPOINT]`.
pub fn run_sync(args: SyncArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vagonfs sync: cannot start: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let dirs = control::socket_dirs();
    rt.block_on(async {
        tokio::select! {
            code = sync_main(&args, &dirs) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\nvagonfs sync: stopped waiting; the uploads carry on in the background");
                ExitCode::from(EXIT_INTERRUPTED)
            }
        }
    })
}

async fn sync_main(args: &SyncArgs, dirs: &[PathBuf]) -> ExitCode {
    let targets: Vec<PathBuf> = match &args.mountpoint {
        Some(m) => match mounts::canonical_mountpoint(m) {
            Ok(p) => vec![p],
            Err(e) => {
                eprintln!("vagonfs sync: no such mount point: {}: {e}", m.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        },
        None => control::list_mounts(dirs, &mount_table())
            .await
            .into_iter()
            .map(|m| m.mountpoint)
            .collect(),
    };
    if targets.is_empty() {
        println!("no vagonfs mounts");
        return ExitCode::SUCCESS;
    }
    let mut ok = true;
    for mountpoint in &targets {
        match sync_one(mountpoint, dirs).await {
            Ok(failed) if failed.is_empty() => {
                println!("{}: everything is uploaded", mountpoint.display());
            }
            Ok(failed) => {
                ok = false;
                eprintln!(
                    "vagonfs sync: {}: {} file(s) could not be uploaded (kept locally, retried later):",
                    mountpoint.display(),
                    failed.len()
                );
                for f in failed {
                    eprintln!("  {}: {}", f.file, f.reason);
                }
            }
            Err(message) => {
                ok = false;
                eprintln!("vagonfs sync: {}: {message}", mountpoint.display());
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

async fn sync_one(mountpoint: &Path, dirs: &[PathBuf]) -> Result<Vec<SyncFailure>, DaemonError> {
    let client = control::connect_to_mount(dirs, mountpoint)
        .await
        .map_err(|e| explain_unreachable(mountpoint, e, is_vagonfs_mount(mountpoint)))?;
    let mut view = ProgressView::new(std::io::stderr().is_terminal());
    client
        .sync(|s| view.update(s))
        .await
        .map_err(DaemonError::Control)
}
