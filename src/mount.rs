//! `vagonfs mount` (being written).

use std::path::PathBuf;
use std::process::ExitCode;

/// `vagonfs mount` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,
}

pub fn run_cli(_args: MountArgs) -> ExitCode {
    ExitCode::from(2)
}
