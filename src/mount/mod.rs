//! `vagonfs mount MOUNTPOINT [options]`: from the command line to a running FUSE session.
//!
//! Owns the mount options ([`MountArgs`]), their validation, the choice of backend (the real
//! API with credentials; the embedded demo emulator with `--demo`, or for a foreground mount in
//! a terminal without credentials: [`DemoChoice`]), detaching (`--daemon`), and the life of the
//! session until a signal or an external `umount` ends it.
//!
//! Subtle cases handled here:
//! - Everything that can be checked locally (mount point exists, is a directory, is not a mount
//!   point already, is empty; option values) is checked *before* forking, and fails with exit
//!   status 2 and a message naming what is wrong (for a mounted folder: what is mounted there).
//!   A dead vagonfs mount (ENOTCONN: its daemon is gone) is detached lazily first, and logged;
//!   logging is therefore set up before the checks.
//! - No credentials and no terminal (`--daemon`, the mount helper, systemd): "no credentials",
//!   never a silent demo whose writes land in root's demo folder.
//! - `--daemon` forks before any tokio runtime or thread exists; the child reports readiness (or
//!   the error text and exit status) through a pipe, so the parent's exit status says whether
//!   the filesystem is mounted ([`detach`]).
//! - Signal handlers are installed *before* mounting: a SIGTERM that arrives during start-up
//!   still unmounts instead of killing the process and leaving a dead mount behind.
//! - The mount counts as ready only once the kernel's INIT handshake has been answered.
//! - On SIGINT/SIGTERM/SIGHUP the files still being written are uploaded first (progress
//!   logged), then the mount is unmounted (lazily when busy), the session thread is awaited for
//!   a bounded time, and the process exits; a second signal exits at once, leaving what was not
//!   uploaded in the spool folder for the next mount ([`session`]).
//! - Written files are spooled under `--cache-dir`, in one folder per mount target (locked: a
//!   second mount of the same target is refused at start); what a crashed run left there is
//!   uploaded in the background after mounting.
//!
//! - The mount's metrics, control socket (`vagonfs status`, `vagonfs unmount`) and optional
//!   Prometheus endpoint (`--metrics-addr`) are started before mounting ([`control`]).
//!
//! Exit status: 0 after a clean unmount, 2 for bad options, a bad mount point or missing
//! credentials, 1 for everything else (API unreachable, credentials refused, mount(2) failed).
//! Every failure is one line; the error chain goes to the debug log.
//!
//! The options and the parsers of their values are in `args` (re-exported here).

mod args;
mod backend;
mod client;
pub mod control;
pub mod demo;
mod detach;
mod session;

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::api::ApiError;
use crate::daemon::mounts;
use crate::fs::{FsConfig, RootSpec};
use crate::logging::LogTarget;

/// Exit status for bad options or a bad mount point (like clap's usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit status for any other failure.
pub const EXIT_FAILURE: u8 = 1;

pub use self::args::*;

/// Why `vagonfs mount` failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {}: {reason}", path.display())]
    MountPoint { path: PathBuf, reason: String },
    #[error("{0}")]
    InvalidOption(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(
        "no credentials: set VAGON_API_KEY and VAGON_API_SECRET, write \
         ~/.config/vagonfs/config.toml, or pass --credentials FILE (`--demo` mounts a local \
         demo emulator instead)"
    )]
    NoCredentials,
    #[error(
        "{url} does not answer as the Vagon API (404 on its machine list): check the API URL \
         (--api-url, VAGON_API_URL or api_url in the credentials file)"
    )]
    WrongApiUrl { url: String },
    #[error("mount point {}: {what} is already mounted there; unmount it first or pick another folder", path.display())]
    AlreadyMounted { path: PathBuf, what: String },
    #[error(
        "cache folder {} is in use by another vagonfs mount of the same storage{}; unmount \
         that one first, or give this mount its own --cache-dir",
        cache_dir.display(),
        other.as_ref().map(|p| format!(" (at {})", p.display())).unwrap_or_default()
    )]
    CacheInUse {
        cache_dir: PathBuf,
        other: Option<PathBuf>,
    },
    #[error("cannot start the demo emulator: {0}")]
    Demo(String),
    /// One line: the innermost cause only (the chain is logged at debug).
    #[error("cannot reach {url}: {cause}")]
    Unreachable {
        url: String,
        cause: String,
        source: Box<ApiError>,
    },
    #[error("machine {0} was not found in this organization")]
    NoSuchMachine(u64),
    #[error("cannot mount on {}: {source}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel did not start the FUSE session within {0:?}")]
    NotReady(Duration),
    #[error("interrupted by a signal before the mount was ready")]
    Interrupted,
    #[error("cache folder {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: crate::fs::FsError,
    },
    #[error("{0}")]
    Metrics(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl MountError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            MountError::MountPoint { .. }
            | MountError::AlreadyMounted { .. }
            | MountError::InvalidOption(_)
            | MountError::NoCredentials
            | MountError::Credentials(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The validated options, ready to run.
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// Absolute, symlinks resolved.
    pub mountpoint: PathBuf,
    pub root: RootSpec,
    pub fs: FsConfig,
    pub allow_other: bool,
    /// Absolute (the daemon changes its working directory).
    pub credentials: Option<PathBuf>,
    /// `--api-url`: replaces the credentials' URL.
    pub api_url: Option<String>,
    /// `--cache-dir` (absolute): each mount target gets its own spool folder under it, chosen
    /// once the backend is known (`fs.cache_dir` is set then).
    pub cache_base: PathBuf,
    /// `--metrics-addr` (address already checked).
    pub metrics: crate::daemon::metrics_http::MetricsArgs,
    /// Whether the demo emulator may (or must) be the backend.
    pub demo: DemoChoice,
    /// Not `--daemon`: the terminal gets the "Ctrl-C to stop" hint.
    pub foreground: bool,
}

/// When the embedded demo emulator is the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoChoice {
    /// `--demo`: always.
    Asked,
    /// An interactive foreground mount: when no credentials are configured.
    IfNoCredentials,
    /// `--daemon`, the mount helper, systemd (no terminal): never; no credentials is an error.
    Never,
}

impl DemoChoice {
    /// From `--demo`, `--daemon` and whether stdin and stderr are terminals.
    pub fn choose(demo: bool, daemon: bool, interactive: bool) -> Self {
        match (demo, daemon, interactive) {
            (true, _, _) => DemoChoice::Asked,
            (false, false, true) => DemoChoice::IfNoCredentials,
            _ => DemoChoice::Never,
        }
    }
}

/// `vagonfs mount`.
/// Allocations at least this large get their own mapping from glibc's malloc, returned to the
/// system when freed. Upload parts of `--chunk-size` churn constantly; with glibc's default,
/// dynamic threshold (which climbs to 32 MiB after the first large free) they are carved from
/// arenas that keep freed memory, so the daemon's RSS drifts past `--cache-size` + 64 MiB while
/// reading, and past 128 MiB while writing 1 GiB (measured by `bench/run.sh`). Pinned just above
/// the read path's 128 KiB buffers (its blocks, and the copy fuser makes of each read reply):
/// as mappings of their own, every page written to them was a page fault, the largest CPU cost
/// of a sequential read (perf, `bench/RESULTS.md`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 256 * 1024;

/// Free memory at the top of a heap kept for reuse rather than given back (and faulted in
/// again at the next allocation): 16 MiB, a fixed part of the daemon's memory overhead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 16 * 1024 * 1024;

/// Pin malloc's mmap and trim thresholds (see [`MMAP_THRESHOLD_BYTES`]) so big freed buffers
/// leave the RSS and the read path's small ones are reused.
fn bound_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator parameters; called before any other thread.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                & libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        };
        if ok != 1 {
            tracing::debug!("mallopt refused; memory use may run higher");
        }
    }
}

pub fn run_cli(args: MountArgs) -> ExitCode {
    let log_target = match &args.log_file {
        None => LogTarget::Stderr,
        Some(path) => match File::options().create(true).append(true).open(path) {
            Ok(file) => LogTarget::File(file),
            Err(err) => {
                return fail(&MountError::InvalidOption(format!(
                    "--log-file {}: {err}",
                    path.display()
                )));
            }
        },
    };
    // Before checking the mount point: clearing a dead mount there is logged.
    crate::logging::init(&args.log_level, log_target);
    tracing::debug!(
        version = env!("CARGO_PKG_VERSION"),
        "vagonfs mount starting"
    );
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(err) => return fail(&err),
    };
    bound_allocator_retention();

    // No thread and no runtime exist yet: this is the one place where forking is safe.
    let mut readiness = if args.daemon {
        match detach::fork() {
            Ok(detach::Forked::Parent(code)) => return code,
            Ok(detach::Forked::Child(readiness)) => Some(readiness),
            Err(err) => return fail(&err),
        }
    } else {
        None
    };

    match session::run(plan, &mut readiness) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match readiness.take() {
            // Still attached to the parent: it prints the message and exits with the code.
            Some(readiness) => {
                readiness.failed(err.exit_code(), &err.to_string());
                ExitCode::from(err.exit_code())
            }
            None => fail(&err),
        },
    }
}

fn fail(err: &MountError) -> ExitCode {
    eprintln!("vagonfs mount: {err}");
    ExitCode::from(err.exit_code())
}

/// Validate the options and the mount point (no network, no threads).
pub fn plan(args: &MountArgs) -> Result<MountPlan, MountError> {
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    let root = match (args.machine, args.shared) {
        (Some(id), _) => RootSpec::Space(crate::api::Space::Machine(id)),
        (None, true) => RootSpec::Space(crate::api::Space::Shared),
        (None, false) => RootSpec::All,
    };
    let credentials = match &args.credentials.credentials {
        None => None,
        Some(path) => Some(std::path::absolute(path).map_err(|err| {
            MountError::InvalidOption(format!("--credentials {}: {err}", path.display()))
        })?),
    };
    let cache_base = match &args.cache_dir {
        None => crate::fs::write::default_cache_base()
            .map_err(|err| MountError::InvalidOption(err.to_string()))?,
        Some(dir) => std::path::absolute(dir).map_err(|err| {
            MountError::InvalidOption(format!("--cache-dir {}: {err}", dir.display()))
        })?,
    };
    if let Some(addr) = args.metrics.metrics_addr {
        crate::daemon::metrics_http::check_metrics_addr(addr, args.metrics.metrics_allow_remote)
            .map_err(|e| MountError::InvalidOption(e.to_string()))?;
    }
    Ok(MountPlan {
        mountpoint,
        root,
        fs: FsConfig {
            uid: args.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
            gid: args.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw()),
            umask: args.umask,
            read_only: args.read_only,
            dir_cache_ttl: args.dir_cache_ttl,
            dir_refresh: args.dir_refresh,
            op_timeout: args.op_timeout,
            cache_size: args.cache_size,
            // Replaced by the per-target folder under `cache_base` once the backend is known.
            cache_dir: cache_base.clone(),
            chunk_size_mb: args.chunk_size,
            upload_concurrency: args.upload_concurrency,
            rename_dir_limit: args.rename_dir_limit,
            read_timeout: args.read_timeout,
            write_back: crate::fs::engine::WriteBack {
                transfers: args.transfers,
                sync_close: args.sync_close,
                upload_delay: args.upload_delay,
                // The default is measured on the cache disk at mount time (`serve_mounted`).
                spool_max: args.cache_max_size,
            },
        },
        allow_other: args.allow_other,
        credentials,
        api_url: args.api_url.clone(),
        cache_base,
        metrics: args.metrics.clone(),
        demo: DemoChoice::choose(
            args.demo,
            args.daemon,
            io::stdin().is_terminal() && io::stderr().is_terminal(),
        ),
        foreground: !args.daemon,
    })
}

/// The mount point must exist, be a directory, not be a mount point already, and be empty.
/// A dead vagonfs mount there (its daemon is gone: ENOTCONN) is detached first, and logged.
/// Returns its canonical path.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let bad = |reason: String| MountError::MountPoint {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(bad("does not exist (create an empty folder first)".into()));
        }
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            clear_dead_mount(path)?;
            std::fs::metadata(path).map_err(|err| bad(err.to_string()))?
        }
        Err(err) => return Err(bad(err.to_string())),
    };
    if !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    let canonical = path.canonicalize().map_err(|err| bad(err.to_string()))?;
    if let Some(entry) = mounts::mount_at(&canonical) {
        return Err(MountError::AlreadyMounted {
            path: canonical,
            what: entry.describe(),
        });
    }
    let mut entries = std::fs::read_dir(path).map_err(|err| bad(err.to_string()))?;
    if entries.next().is_some() {
        return Err(bad("is not empty (mount on an empty folder)".into()));
    }
    Ok(canonical)
}

/// `path` answers ENOTCONN: a FUSE mount whose daemon is gone. A vagonfs one is detached
/// lazily (what it had not uploaded waits in the cache folder for this mount); anything else
/// is left to the user.
fn clear_dead_mount(path: &Path) -> Result<(), MountError> {
    let bad = |reason: String| MountError::MountPoint {
        path: path.to_path_buf(),
        reason,
    };
    let canonical = mounts::canonical_mountpoint(path).map_err(|err| bad(err.to_string()))?;
    match mounts::mount_at(&canonical) {
        Some(entry) if entry.is_vagonfs() => {
            mounts::unmount(&canonical, true).map_err(|err| {
                bad(format!(
                    "{} is dead (its daemon is gone) and cannot be removed: {err}",
                    entry.describe()
                ))
            })?;
            tracing::warn!(
                "{} at {} was dead (its daemon is gone): detached it (lazy unmount); mounting again",
                entry.describe(),
                canonical.display()
            );
            Ok(())
        }
        Some(entry) => Err(bad(format!(
            "{} there is dead (transport endpoint is not connected); remove it with `umount -l {}`",
            entry.describe(),
            path.display()
        ))),
        None => Err(bad(format!(
            "transport endpoint is not connected; remove the dead mount with `umount -l {}`",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vagonfs mount` arguments parsed as the CLI does.
    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MountArgs,
    }

    #[test]
    fn write_options_reach_the_core() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().to_str().unwrap();
        let parsed = Wrapper::try_parse_from(["mount", mnt, "--shared"]).unwrap();
        let planned = plan(&parsed.args).unwrap();
        assert_eq!(
            planned.fs.chunk_size_mb,
            crate::fs::write::DEFAULT_CHUNK_SIZE_MB
        );
        assert_eq!(
            planned.fs.upload_concurrency,
            crate::fs::write::DEFAULT_CONCURRENCY
        );
        assert_eq!(
            planned.fs.rename_dir_limit,
            crate::fs::DEFAULT_RENAME_DIR_LIMIT
        );
        assert_eq!(
            Some(planned.cache_base),
            crate::fs::write::default_cache_base().ok()
        );

        let parsed = Wrapper::try_parse_from([
            "mount",
            mnt,
            "--cache-dir",
            "rel/cache",
            "--chunk-size",
            "8",
            "--upload-concurrency",
            "2",
            "--rename-dir-limit",
            "50",
        ])
        .unwrap();
        let planned = plan(&parsed.args).unwrap();
        assert_eq!(
            (
                planned.fs.chunk_size_mb,
                planned.fs.upload_concurrency,
                planned.fs.rename_dir_limit
            ),
            (8, 2, 50)
        );
        assert!(planned.cache_base.is_absolute() && planned.cache_base.ends_with("rel/cache"));
        for bad in [
            ["--chunk-size", "0"],
            ["--chunk-size", "5121"],
            ["--upload-concurrency", "0"],
        ] {
            assert!(
                Wrapper::try_parse_from(["mount", mnt, bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mountpoint_checks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = check_mountpoint(&missing).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(err.exit_code(), EXIT_USAGE);

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = check_mountpoint(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("a"), b"x").unwrap();
        let err = check_mountpoint(&full).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(
            check_mountpoint(&empty).unwrap(),
            empty.canonicalize().unwrap()
        );
    }
}
