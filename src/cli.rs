//! The `vagonfs` command line (clap). Each subcommand's options live with the module that owns
//! the subcommand; this file only composes them (logging is [`crate::logging`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vagonfs",
    version,
    about = "Mount the file storage of Vagon Teams machines as a local folder",
    long_about = "vagonfs mounts the file storage of Vagon Teams cloud computers (\"machines\") as an \
ordinary local folder, over the Vagon Files API. Without credentials, `vagonfs mount --demo DIR` (or a plain \
`vagonfs mount DIR` typed in a terminal) mounts a local demo emulator of the API instead."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local emulator of the Vagon Files API (for development, tests and demos).
    Emulator(crate::emulator::EmulatorArgs),
    /// Mount a machine's storage (or the shared storage, or everything) at MOUNTPOINT.
    Mount(crate::mount::MountArgs),
    /// Show each vagonfs mount: target, uploads with progress, errors, cache and request stats.
    Status(crate::daemon::status::StatusArgs),
    /// Flush open files, wait for uploads, then unmount (`--force`: at once).
    Unmount(crate::daemon::status::UnmountArgs),
    /// Wait until a mount (every mount when left out) has uploaded every change; exits non-zero
    /// and lists what failed and why (`cp -r … && vagonfs sync`).
    Sync(crate::daemon::sync::SyncArgs),
    /// List a folder of a running machine's live disk: `vagonfs ls 42 'C:\Users'` (`--live` optional).
    Ls(crate::live::LsArgs),
    /// Install the `mount.vagonfs` helper so `mount -t vagonfs` and fstab lines work.
    InstallHelper(crate::helper::InstallHelperArgs),
}

pub fn main() -> ExitCode {
    // Invoked as `mount.vagonfs` (through the /sbin symlink): behave as mount(8)'s helper.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a0| crate::helper::is_helper_invocation(a0))
    {
        return crate::helper::run_mount_helper(argv);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Emulator(args) => {
            crate::logging::init(
                crate::emulator::CLI_LOG_FILTER,
                crate::logging::LogTarget::Stderr,
            );
            crate::emulator::run_cli(args)
        }
        Command::Mount(args) => crate::mount::run_cli(args),
        Command::Status(args) => crate::daemon::status::run_status(args),
        Command::Unmount(args) => crate::daemon::status::run_unmount(args),
        Command::Sync(args) => crate::daemon::sync::run_sync(args),
        Command::Ls(args) => crate::live::run_cli(args),
        Command::InstallHelper(args) => crate::helper::run_install_helper(args),
    }
}
