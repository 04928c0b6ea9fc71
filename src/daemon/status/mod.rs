//! `vagonfs status` and `vagonfs unmount`: the client side of the control socket, and the
//! text rendering of a [`StatusSnapshot`] (progress bars, rates, ETAs, tables).
//!
//! Subtle cases owned here:
//! - rates and ETAs use the snapshot's own `taken_at` against `started_at` (both the daemon's
//!   clock), so a client with a skewed clock still shows sane numbers, and a known snapshot
//!   renders to known text;
//! - `unmount` when no daemon answers (socket missing or stale) falls back to a direct unmount
//!   (`umount2` as root, `fusermount3 -u` otherwise), but only for a vagonfs mount in the mount
//!   table; a daemon that is alive but silent is not bypassed unless `--force` is given;
//! - a daemon may exit right after unmounting, before its last line reaches us: a closed or
//!   reset connection then counts as success when the mount is gone from the mount table;
//! - Ctrl-C while `unmount` waits stops the waiting only: the daemon keeps flushing and
//!   unmounts once the uploads are done (the request outlives the connection).
//!
//! The files here: this one holds the commands; `render` the text they print.

mod render;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::control::{self, ControlError};
use super::mounts;
use super::snapshot::StatusSnapshot;

/// Exit codes of `status` / `unmount`.
pub(super) const EXIT_FAILURE: u8 = 1;
/// The shell's convention for "interrupted by SIGINT" (128 + 2).
pub(super) const EXIT_INTERRUPTED: u8 = 130;

/// `--watch` refresh period.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Characters inside a progress bar's brackets.
const BAR_WIDTH: usize = 20;
/// Uploads listed before "… and N more".
const MAX_UPLOAD_LINES: usize = 10;
/// Recent errors listed by `status` (the newest ones).
const MAX_ERROR_LINES: usize = 5;
/// Without a terminal, `unmount` logs its progress every this many snapshots (about 10 s),
/// or when the number of uploads left changes.
const PROGRESS_LOG_EVERY: u32 = 10;
/// Clear the screen and go home.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// `vagonfs status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The mount to show; every vagonfs mount of this user when left out.
    pub mountpoint: Option<PathBuf>,
    /// Refresh every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON for scripts: an array with one object per mount
    /// (`{"mountpoint", "status", "error"}`); with --watch, one such array per line.
    #[arg(long)]
    pub json: bool,
}

/// `vagonfs unmount` options.
#[derive(Debug, Clone, clap::Args)]
pub struct UnmountArgs {
    /// The mount point to unmount.
    pub mountpoint: PathBuf,
    /// Unmount at once, without waiting for uploads to finish.
    #[arg(long)]
    pub force: bool,
}

/// One mount's line in `status --json`.
#[derive(Debug, Serialize)]
pub struct MountReport {
    pub mountpoint: String,
    pub status: Option<StatusSnapshot>,
    pub error: Option<String>,
}

impl MountReport {
    fn new(mountpoint: &Path, status: Result<StatusSnapshot, DaemonError>) -> Self {
        let (status, error) = match status {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        MountReport {
            mountpoint: mountpoint.display().to_string(),
            status,
            error,
        }
    }
}

pub(super) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `vagonfs status [MOUNTPOINT] [--watch] [--json]`.
pub fn run_status(args: StatusArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vagonfs status: cannot start: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    rt.block_on(status_main(args, &control::socket_dirs()))
}

async fn status_main(args: StatusArgs, dirs: &[PathBuf]) -> ExitCode {
    let target = match &args.mountpoint {
        None => None,
        Some(p) => match mounts::canonical_mountpoint(p) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("vagonfs status: no such mount: {}: {e}", p.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        },
    };
    if !args.watch {
        let reports = collect_reports(target.as_deref(), dirs).await;
        let failed = reports.iter().any(|r| r.error.is_some());
        print_reports(&reports, args.json, false);
        return if failed {
            ExitCode::from(EXIT_FAILURE)
        } else {
            ExitCode::SUCCESS
        };
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let reports = collect_reports(target.as_deref(), dirs).await;
        if !args.json {
            print!("{CLEAR_SCREEN}");
        }
        print_reports(&reports, args.json, true);
        tokio::select! {
            _ = &mut ctrl_c => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

/// The reports of one mount point, or of every mount found.
async fn collect_reports(target: Option<&Path>, dirs: &[PathBuf]) -> Vec<MountReport> {
    match target {
        Some(mountpoint) => vec![MountReport::new(
            mountpoint,
            status_of(mountpoint, dirs).await,
        )],
        None => control::list_mounts(dirs, &mount_table())
            .await
            .into_iter()
            .map(|m| {
                let status = m
                    .status
                    .map_err(|e| explain_unreachable(&m.mountpoint, e, m.in_mount_table));
                MountReport::new(&m.mountpoint, status)
            })
            .collect(),
    }
}

async fn status_of(mountpoint: &Path, dirs: &[PathBuf]) -> Result<StatusSnapshot, DaemonError> {
    let answer = match control::connect_to_mount(dirs, mountpoint).await {
        Ok(mut client) => client.status().await,
        Err(e) => Err(e),
    };
    answer.map_err(|e| explain_unreachable(mountpoint, e, is_vagonfs_mount(mountpoint)))
}

/// Why a command got nothing from a mount's daemon, in words for the user.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "{} is a vagonfs mount but no daemon answers for it ({error}); `vagonfs unmount {}` \
         unmounts it",
        mountpoint.display(),
        mountpoint.display()
    )]
    DeadMount {
        mountpoint: PathBuf,
        error: ControlError,
    },
    #[error("no vagonfs mount at {}", .0.display())]
    NotAMount(PathBuf),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// A mount whose daemon did not answer: a dead mount, no mount, or the daemon's own error.
pub(super) fn explain_unreachable(
    mountpoint: &Path,
    error: ControlError,
    mounted: bool,
) -> DaemonError {
    match (error.is_no_daemon(), mounted) {
        (true, true) => DaemonError::DeadMount {
            mountpoint: mountpoint.to_path_buf(),
            error,
        },
        (true, false) => DaemonError::NotAMount(mountpoint.to_path_buf()),
        (false, _) => DaemonError::Control(error),
    }
}

/// The vagonfs mounts of the mount table (none when it cannot be read).
pub(super) fn mount_table() -> Vec<mounts::MountEntry> {
    mounts::vagonfs_mounts().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "cannot read the mount table");
        Vec::new()
    })
}

pub(super) fn is_vagonfs_mount(mountpoint: &Path) -> bool {
    mount_table().iter().any(|m| m.mountpoint == mountpoint)
}

fn print_reports(reports: &[MountReport], json: bool, watching: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let text = if watching {
            serde_json::to_string(reports)
        } else {
            serde_json::to_string_pretty(reports)
        };
        match text {
            Ok(text) => {
                let _ = writeln!(out, "{text}");
            }
            Err(e) => eprintln!("vagonfs status: cannot encode JSON: {e}"),
        }
    } else if reports.is_empty() {
        let _ = writeln!(out, "no vagonfs mounts");
    } else {
        for (i, report) in reports.iter().enumerate() {
            if i > 0 {
                let _ = writeln!(out);
            }
            match (&report.status, &report.error) {
                (Some(snapshot), _) => {
                    let _ = write!(out, "{}", render_snapshot(snapshot));
                }
                (None, error) => {
                    let error = error.as_deref().unwrap_or("no answer");
                    let _ = writeln!(out, "{}\n  error     {error}", report.mountpoint);
                }
            }
        }
    }
    let _ = out.flush();
}

// ---- unmount -------------------------------------------------------------------------------

/// `vagonfs unmount MOUNTPOINT [--force]`.
pub fn run_unmount(args: UnmountArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vagonfs unmount: cannot start: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(unmount_main(&args, &control::socket_dirs())) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vagonfs unmount: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Why `vagonfs unmount` failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountCommandError {
    #[error("no such mount point: {}: {source}", path.display())]
    NoSuchMountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no vagonfs mount at {}", .0.display())]
    NotVagonfs(PathBuf),
    #[error("{source}; `vagonfs unmount --force {}` unmounts it anyway", path.display())]
    Silent {
        path: PathBuf,
        #[source]
        source: ControlError,
    },
    #[error(
        "the daemon could not unmount {}: {message}\n(`vagonfs unmount --force {}` unmounts \
         without waiting for uploads)",
        path.display(),
        path.display()
    )]
    Refused { path: PathBuf, message: String },
    #[error(transparent)]
    Direct(#[from] mounts::UnmountError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

async fn unmount_main(
    args: &UnmountArgs,
    dirs: &[PathBuf],
) -> Result<ExitCode, UnmountCommandError> {
    let mountpoint = mounts::canonical_mountpoint(&args.mountpoint).map_err(|source| {
        UnmountCommandError::NoSuchMountPoint {
            path: args.mountpoint.clone(),
            source,
        }
    })?;
    let shown = mountpoint.display();
    let client = match control::connect_to_mount(dirs, &mountpoint).await {
        Ok(client) => client,
        Err(e) if e.is_no_daemon() || (args.force && matches!(e, ControlError::Timeout(_))) => {
            if !is_vagonfs_mount(&mountpoint) {
                return Err(UnmountCommandError::NotVagonfs(mountpoint));
            }
            eprintln!(
                "vagonfs unmount: no vagonfs daemon answers for {shown} ({e}); unmounting it directly"
            );
            mounts::unmount(&mountpoint, args.force)?;
            println!("unmounted {shown}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(source @ ControlError::Timeout(_)) => {
            return Err(UnmountCommandError::Silent {
                path: mountpoint,
                source,
            });
        }
        Err(e) => return Err(e.into()),
    };

    let mut view = ProgressView::new(std::io::stderr().is_terminal());
    let outcome = tokio::select! {
        outcome = client.unmount(args.force, |s| view.update(s)) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nvagonfs unmount: stopped waiting; the daemon carries on and unmounts {shown} \
                 once its uploads are done"
            );
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    };
    match outcome {
        Ok(()) => {}
        Err(ControlError::Protocol { .. } | ControlError::Io { .. })
            if !is_vagonfs_mount(&mountpoint) =>
        {
            // The daemon exited as it unmounted, before its last line reached us.
        }
        Err(ControlError::UnmountFailed(message)) => {
            return Err(UnmountCommandError::Refused {
                path: mountpoint,
                message,
            });
        }
        Err(e) => return Err(e.into()),
    }
    println!("unmounted {shown}");
    Ok(ExitCode::SUCCESS)
}

/// Shows unmount progress: redrawn in place on a terminal, a line now and then otherwise.
pub(super) struct ProgressView {
    tty: bool,
    drawn_lines: usize,
    snapshots: u32,
    last_left: Option<(u64, u64)>,
}

impl ProgressView {
    pub(super) fn new(tty: bool) -> Self {
        ProgressView {
            tty,
            drawn_lines: 0,
            snapshots: 0,
            last_left: None,
        }
    }

    pub(super) fn update(&mut self, snapshot: &StatusSnapshot) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            if self.drawn_lines > 0 {
                // Up to the first line drawn last time, and clear to the end of the screen.
                let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn_lines);
            }
            let lines = render_uploads(snapshot);
            for line in &lines {
                let _ = writeln!(err, "{line}");
            }
            self.drawn_lines = lines.len();
        } else {
            let left = (snapshot.queued, snapshot.in_flight);
            if self.last_left != Some(left) || self.snapshots.is_multiple_of(PROGRESS_LOG_EVERY) {
                let _ = writeln!(err, "waiting: {}", upload_summary(snapshot));
            }
            self.last_left = Some(left);
        }
        self.snapshots = self.snapshots.wrapping_add(1);
        let _ = err.flush();
    }
}

pub use self::render::*;

#[cfg(test)]
mod command_tests {
    //! The commands end to end against a control server with a fake mount (no FUSE).

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::render::tests::{MIB, known_snapshot};
    use super::*;
    use crate::daemon::control::ControlServer;
    use crate::daemon::control::testing::FakeMount;

    /// A socket directory, a mount point directory, and a fake daemon serving it.
    struct Setup {
        _base: tempfile::TempDir,
        dirs: Vec<PathBuf>,
        mountpoint: PathBuf,
    }

    fn setup() -> Setup {
        let base = tempfile::tempdir().unwrap();
        let sockets = base.path().join("sockets");
        control::prepare_socket_dir(&sockets).unwrap();
        let mountpoint = std::fs::canonicalize(base.path()).unwrap().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        Setup {
            _base: base,
            dirs: vec![sockets],
            mountpoint,
        }
    }

    fn serve(s: &Setup, fake: Arc<FakeMount>) -> ControlServer {
        let path = s.dirs[0].join(control::socket_file_name(&s.mountpoint));
        ControlServer::bind(&path, fake).unwrap()
    }

    #[tokio::test]
    async fn unmount_asks_the_daemon() {
        let s = setup();
        let fake = FakeMount::new(&s.mountpoint.display().to_string());
        let server = serve(&s, fake.clone());
        fake.release.notify_one();
        let args = UnmountArgs {
            mountpoint: s.mountpoint.clone(),
            force: false,
        };
        assert_eq!(
            unmount_main(&args, &s.dirs).await.expect("unmounted"),
            ExitCode::SUCCESS
        );
        assert_eq!(fake.unmount_calls.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn unmount_reports_a_daemon_failure() {
        let s = setup();
        let mut fake = FakeMount::new("x");
        Arc::get_mut(&mut fake).unwrap().fail = true;
        let server = serve(&s, fake);
        let args = UnmountArgs {
            mountpoint: s.mountpoint.clone(),
            force: false,
        };
        let err = unmount_main(&args, &s.dirs).await.unwrap_err().to_string();
        assert!(
            err.contains("could not unmount") && err.contains("uploads failed"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn unmount_without_daemon_or_mount_is_a_clear_error() {
        let s = setup();
        let args = UnmountArgs {
            mountpoint: s.mountpoint.clone(),
            force: false,
        };
        let err = unmount_main(&args, &s.dirs).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("no vagonfs mount at {}", s.mountpoint.display())
        );
        let args = UnmountArgs {
            mountpoint: s.mountpoint.join("absent"),
            force: true,
        };
        let err = unmount_main(&args, &s.dirs).await.unwrap_err().to_string();
        assert!(err.starts_with("no such mount point"), "{err}");
    }

    #[tokio::test]
    async fn status_finds_the_daemon() {
        let s = setup();
        let fake = FakeMount::new(&s.mountpoint.display().to_string());
        let server = serve(&s, fake);
        let one = collect_reports(Some(&s.mountpoint), &s.dirs).await;
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].status.as_ref().unwrap().identity.target,
            "machine 42"
        );
        let all = collect_reports(None, &s.dirs).await;
        let ours = all
            .iter()
            .find(|r| r.mountpoint == s.mountpoint.display().to_string());
        assert!(ours.is_some_and(|r| r.status.is_some()), "{all:?}");
        server.shutdown().await;

        let gone = collect_reports(Some(&s.mountpoint), &s.dirs).await;
        let error = gone[0].error.as_deref().unwrap();
        assert_eq!(
            error,
            format!("no vagonfs mount at {}", s.mountpoint.display())
        );
    }

    /// A FUSE filesystem that answers nothing (every op ENOSYS): enough to be mounted.
    struct NullFs;
    impl fuser::Filesystem for NullFs {}

    /// Lazily unmounts `path` if a test left it mounted.
    struct MountGuard(PathBuf);
    impl Drop for MountGuard {
        fn drop(&mut self) {
            if is_vagonfs_mount(&self.0) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    #[tokio::test]
    async fn unmount_falls_back_to_umount_when_no_daemon_answers() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts, it needs root"
        );
        let s = setup();
        let mut options = fuser::Config::default();
        options.mount_options = vec![fuser::MountOption::FSName("vagonfs:test".into())];
        let session = fuser::spawn_mount(NullFs, &s.mountpoint, &options).unwrap();
        let _guard = MountGuard(s.mountpoint.clone());
        assert!(is_vagonfs_mount(&s.mountpoint), "{:?}", mount_table());

        // Mounted, but no control socket: status says so.
        let report = collect_reports(Some(&s.mountpoint), &s.dirs).await;
        let error = report[0].error.as_deref().unwrap();
        assert!(error.contains("no daemon answers"), "{error}");

        let args = UnmountArgs {
            mountpoint: s.mountpoint.clone(),
            force: false,
        };
        assert_eq!(
            unmount_main(&args, &s.dirs).await.expect("unmounted"),
            ExitCode::SUCCESS
        );
        assert!(!is_vagonfs_mount(&s.mountpoint), "still mounted");
        drop(session);
    }

    #[test]
    fn json_reports_shape() {
        let reports = vec![
            MountReport::new(Path::new("/mnt/vagon"), Ok(known_snapshot())),
            MountReport::new(
                Path::new("/mnt/dead"),
                Err(DaemonError::NotAMount("/mnt/dead".into())),
            ),
        ];
        let v: serde_json::Value = serde_json::to_value(&reports).unwrap();
        assert_eq!(v[0]["mountpoint"], "/mnt/vagon");
        assert_eq!(v[0]["status"]["uploads"][0]["bytes_sent"], 400 * MIB);
        assert_eq!(v[0]["status"]["uploads"][0]["state"], "uploading");
        assert!(v[0]["error"].is_null());
        assert!(v[1]["status"].is_null());
        assert_eq!(v[1]["error"], "no vagonfs mount at /mnt/dead");
    }

    #[test]
    fn unreachable_explanations() {
        let stale = || ControlError::Stale("/run/vagonfs/x.sock".into());
        let mp = Path::new("/mnt/v");
        assert!(
            explain_unreachable(mp, stale(), true)
                .to_string()
                .contains("no daemon answers")
        );
        assert_eq!(
            explain_unreachable(mp, stale(), false).to_string(),
            "no vagonfs mount at /mnt/v"
        );
        let denied = ControlError::PermissionDenied("/s".into());
        assert!(
            explain_unreachable(mp, denied, true)
                .to_string()
                .starts_with("permission denied")
        );
    }
}
