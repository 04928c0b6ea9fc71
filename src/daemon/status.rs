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

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::control::{self, ControlError};
use super::mounts;
use super::snapshot::{StatusSnapshot, UploadProgress, UploadState};

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
    fn new(mountpoint: &Path, status: Result<StatusSnapshot, String>) -> Self {
        let (status, error) = match status {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
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
                    .map_err(|e| explain_unreachable(&m.mountpoint, &e, m.in_mount_table));
                MountReport::new(&m.mountpoint, status)
            })
            .collect(),
    }
}

async fn status_of(mountpoint: &Path, dirs: &[PathBuf]) -> Result<StatusSnapshot, String> {
    let answer = match control::connect_to_mount(dirs, mountpoint).await {
        Ok(mut client) => client.status().await,
        Err(e) => Err(e),
    };
    answer.map_err(|e| explain_unreachable(mountpoint, &e, is_vagonfs_mount(mountpoint)))
}

/// Words for a mount whose daemon did not answer.
pub(super) fn explain_unreachable(
    mountpoint: &Path,
    error: &ControlError,
    mounted: bool,
) -> String {
    match (error.is_no_daemon(), mounted) {
        (true, true) => format!(
            "{} is a vagonfs mount but no daemon answers for it ({error}); \
             `vagonfs unmount {}` unmounts it",
            mountpoint.display(),
            mountpoint.display()
        ),
        (true, false) => format!("no vagonfs mount at {}", mountpoint.display()),
        (false, _) => error.to_string(),
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

// ---- rendering -------------------------------------------------------------------------------

/// Bytes in binary units: `512 B`, `1.5 KiB`, `400.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    const STEP: f64 = 1024.0;
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / STEP;
    let mut unit = 0;
    while value >= STEP && unit + 1 < UNITS.len() {
        value /= STEP;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration for people: `45s`, `3m05s`, `2h03m`, `3d04h`.
pub fn format_duration(secs: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match secs {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m{:02}s", s / MINUTE, s % MINUTE),
        s if s < DAY => format!("{}h{:02}m", s / HOUR, (s % HOUR) / MINUTE),
        s => format!("{}d{:02}h", s / DAY, (s % DAY) / HOUR),
    }
}

/// `[#########-----------]`, `done` of `total` (a zero total is complete).
pub fn progress_bar(done: u64, total: u64) -> String {
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        ((u128::from(done.min(total)) * BAR_WIDTH as u128) / u128::from(total)) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled))
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    }
}

/// Average rate of an upload since it started, bytes per second.
fn upload_rate(upload: &UploadProgress, taken_at: DateTime<Utc>) -> Option<f64> {
    let elapsed = (taken_at - upload.started_at?).to_std().ok()?.as_secs_f64();
    (elapsed > 0.0 && upload.bytes_sent > 0).then(|| upload.bytes_sent as f64 / elapsed)
}

/// One upload: bar, percent, path, bytes, rate and ETA, state.
pub fn render_upload_line(upload: &UploadProgress, taken_at: DateTime<Utc>) -> String {
    let mut line = format!(
        "{} {:>3}%  {}  {} / {}",
        progress_bar(upload.bytes_sent, upload.size),
        percent(upload.bytes_sent, upload.size),
        upload.path,
        format_bytes(upload.bytes_sent),
        format_bytes(upload.size),
    );
    if upload.state == UploadState::Uploading
        && let Some(rate) = upload_rate(upload, taken_at)
    {
        let left = upload.size.saturating_sub(upload.bytes_sent) as f64;
        line.push_str(&format!(
            "  {}/s  ETA {}",
            format_bytes(rate as u64),
            format_duration((left / rate).ceil() as u64)
        ));
    }
    if upload.state != UploadState::Uploading {
        line.push_str(&format!("  ({})", upload.state.as_str()));
    }
    line
}

fn upload_summary(snapshot: &StatusSnapshot) -> String {
    format!(
        "{} in flight, {} queued, {} pending",
        snapshot.in_flight,
        snapshot.queued,
        format_bytes(snapshot.pending_bytes)
    )
}

/// The uploads block: a summary line, then one line per upload (bounded).
pub fn render_uploads(snapshot: &StatusSnapshot) -> Vec<String> {
    let mut lines = vec![format!("uploads   {}", upload_summary(snapshot))];
    for upload in snapshot.uploads.iter().take(MAX_UPLOAD_LINES) {
        lines.push(format!(
            "  {}",
            render_upload_line(upload, snapshot.taken_at)
        ));
    }
    if snapshot.uploads.len() > MAX_UPLOAD_LINES {
        lines.push(format!(
            "  … and {} more",
            snapshot.uploads.len() - MAX_UPLOAD_LINES
        ));
    }
    lines.extend(render_failed(snapshot));
    lines
}

/// The failed uploads: a count line, then one line per file with its reason (bounded).
pub fn render_failed(snapshot: &StatusSnapshot) -> Vec<String> {
    let failed = &snapshot.failed;
    if failed.is_empty() {
        return Vec::new();
    }
    let permanent = failed.iter().filter(|f| f.permanent).count();
    let mut lines = vec![format!(
        "failed    {} file(s) kept locally: {permanent} retried every few minutes and by `vagonfs sync`, {} retrying with backoff",
        failed.len(),
        failed.len() - permanent
    )];
    for f in failed.iter().take(MAX_UPLOAD_LINES) {
        let how = if f.permanent { "failed" } else { "retrying" };
        lines.push(format!("  {}  ({how}) {}", f.path, f.reason));
    }
    if failed.len() > MAX_UPLOAD_LINES {
        lines.push(format!("  … and {} more", failed.len() - MAX_UPLOAD_LINES));
    }
    lines
}

fn hit_rate_text(rate: Option<f64>, hits: u64, misses: u64) -> String {
    match rate {
        Some(r) => format!("{:.1}% ({hits} hits, {misses} misses)", r * 100.0),
        None => "no lookups yet".to_string(),
    }
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// Everything `vagonfs status` prints for one mount.
pub fn render_snapshot(s: &StatusSnapshot) -> String {
    let id = &s.identity;
    let uptime = (s.taken_at - id.started_at).num_seconds().max(0) as u64;
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if id.demo {
        line(format!("{}  ({}, demo)", id.mountpoint, id.target));
        line(format!(
            "  api       {} (the local demo emulator)",
            id.api_url
        ));
    } else {
        line(format!("{}  ({})", id.mountpoint, id.target));
        line(format!("  api       {}", id.api_url));
    }
    if let Some(since) = s.api_unreachable_since {
        line(format!(
            "            API unreachable since {} (cached listings are served)",
            since.format("%Y-%m-%d %H:%M:%SZ")
        ));
    }
    line(format!(
        "  daemon    pid {}, up {}, {}",
        id.pid,
        format_duration(uptime),
        if id.read_only {
            "read-only"
        } else {
            "read-write"
        }
    ));
    for l in render_uploads(s) {
        line(format!("  {l}"));
    }
    let c = &s.cache;
    line(format!(
        "  cache     block {}; dir {}",
        hit_rate_text(c.block_hit_rate(), c.block_hits, c.block_misses),
        hit_rate_text(c.dir_hit_rate(), c.dir_hits, c.dir_misses)
    ));
    if s.endpoints.is_empty() {
        line("  requests  none yet".into());
    } else {
        line(format!(
            "  requests  {:<18} {:>8} {:>7} {:>9} {:>9}",
            "endpoint", "count", "errors", "mean ms", "p95 ms"
        ));
        for e in &s.endpoints {
            line(format!(
                "            {:<18} {:>8} {:>7} {:>9} {:>9}",
                e.endpoint,
                e.requests,
                e.errors,
                ms_text(e.mean_ms),
                ms_text(e.p95_ms)
            ));
        }
    }
    line(format!("  retries   {}", s.retries));
    if s.recent_errors.is_empty() {
        line("  errors    none".into());
    } else {
        let shown = s.recent_errors.len().min(MAX_ERROR_LINES);
        line(format!(
            "  errors    last {shown} of {}",
            s.recent_errors.len()
        ));
        for e in s.recent_errors.iter().skip(s.recent_errors.len() - shown) {
            line(format!(
                "    {}  {}: {}",
                e.at.format("%Y-%m-%d %H:%M:%SZ"),
                e.source,
                e.message
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::daemon::snapshot::{
        CacheStats, EndpointStats, FailedUpload, MountIdentity, RecentError,
    };

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_770_000_000 + secs, 0).single().unwrap()
    }

    const MIB: u64 = 1024 * 1024;

    fn known_snapshot() -> StatusSnapshot {
        StatusSnapshot {
            identity: MountIdentity {
                mountpoint: "/mnt/vagon".into(),
                target: "machine 42".into(),
                api_url: "http://127.0.0.1:8080".into(),
                pid: 4242,
                started_at: at(0),
                read_only: false,
                demo: false,
            },
            taken_at: at(7_380),
            uploads: vec![
                UploadProgress {
                    path: "/video/big.mov".into(),
                    bytes_sent: 400 * MIB,
                    size: 1000 * MIB,
                    state: UploadState::Uploading,
                    started_at: Some(at(7_380 - 40)),
                },
                UploadProgress {
                    path: "/notes.txt".into(),
                    bytes_sent: 0,
                    size: 1536,
                    state: UploadState::Queued,
                    started_at: None,
                },
            ],
            queued: 1,
            in_flight: 1,
            pending_bytes: 600 * MIB + 1536,
            failed: Vec::new(),
            recent_errors: (0..7)
                .map(|i| RecentError {
                    at: at(i * 60),
                    source: "upload_part".into(),
                    message: format!("HTTP 503 #{i}"),
                })
                .collect(),
            cache: CacheStats {
                block_hits: 93,
                block_misses: 7,
                dir_hits: 0,
                dir_misses: 0,
            },
            retries: 3,
            endpoints: vec![EndpointStats {
                endpoint: "list_files".into(),
                requests: 120,
                errors: 2,
                mean_ms: Some(12.34),
                p95_ms: Some(40.0),
                bytes_up: 0,
                bytes_down: 0,
            }],
            api_unreachable_since: None,
        }
    }

    #[test]
    fn upload_lines_have_bar_rate_and_eta() {
        let s = known_snapshot();
        // 400 MiB in 40 s = 10 MiB/s; 600 MiB left = 60 s.
        assert_eq!(
            render_upload_line(&s.uploads[0], s.taken_at),
            "[########------------]  40%  /video/big.mov  400.0 MiB / 1000.0 MiB  10.0 MiB/s  ETA 1m00s"
        );
        assert_eq!(
            render_upload_line(&s.uploads[1], s.taken_at),
            "[--------------------]   0%  /notes.txt  0 B / 1.5 KiB  (queued)"
        );
    }

    #[test]
    fn whole_status_text() {
        let text = render_snapshot(&known_snapshot());
        let expected = "\
/mnt/vagon  (machine 42)
  api       http://127.0.0.1:8080
  daemon    pid 4242, up 2h03m, read-write
  uploads   1 in flight, 1 queued, 600.0 MiB pending
    [########------------]  40%  /video/big.mov  400.0 MiB / 1000.0 MiB  10.0 MiB/s  ETA 1m00s
    [--------------------]   0%  /notes.txt  0 B / 1.5 KiB  (queued)
  cache     block 93.0% (93 hits, 7 misses); dir no lookups yet
  requests  endpoint              count  errors   mean ms    p95 ms
            list_files              120       2      12.3      40.0
  retries   3
  errors    last 5 of 7
    2026-02-02 02:42:00Z  upload_part: HTTP 503 #2
    2026-02-02 02:43:00Z  upload_part: HTTP 503 #3
    2026-02-02 02:44:00Z  upload_part: HTTP 503 #4
    2026-02-02 02:45:00Z  upload_part: HTTP 503 #5
    2026-02-02 02:46:00Z  upload_part: HTTP 503 #6
";
        assert_eq!(text, expected);
    }

    #[test]
    fn failed_uploads_are_listed_with_their_reason() {
        let mut s = known_snapshot();
        s.failed = vec![
            FailedUpload {
                path: "docs/big.iso".into(),
                reason: "API error: HTTP 507: storage full".into(),
                permanent: true,
            },
            FailedUpload {
                path: "notes.txt".into(),
                reason: "API unreachable".into(),
                permanent: false,
            },
        ];
        let text = render_snapshot(&s);
        let expected = "\
  failed    2 file(s) kept locally: 1 retried every few minutes and by `vagonfs sync`, 1 retrying with backoff
    docs/big.iso  (failed) API error: HTTP 507: storage full
    notes.txt  (retrying) API unreachable
  cache ";
        assert!(text.contains(expected), "{text}");
        // Older daemons send no list: read as none.
        let mut json = serde_json::to_value(known_snapshot()).unwrap();
        json.as_object_mut().unwrap().remove("failed");
        let back: StatusSnapshot = serde_json::from_value(json).unwrap();
        assert!(back.failed.is_empty());
        assert!(!render_snapshot(&back).contains("failed"));
    }

    #[test]
    fn an_unreachable_api_is_shown() {
        let mut s = known_snapshot();
        s.api_unreachable_since = Some(at(60));
        let text = render_snapshot(&s);
        assert!(
            text.contains("  api       http://127.0.0.1:8080\n            API unreachable since 2026-02-02 02:41:00Z"),
            "{text}"
        );
    }

    #[test]
    fn long_upload_lists_are_cut() {
        let mut s = known_snapshot();
        let one = s.uploads[1].clone();
        s.uploads = vec![one; MAX_UPLOAD_LINES + 3];
        let lines = render_uploads(&s);
        assert_eq!(lines.len(), 1 + MAX_UPLOAD_LINES + 1);
        assert_eq!(lines.last().unwrap(), "  … and 3 more");
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(5 * 1024 * MIB), "5.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(185), "3m05s");
        assert_eq!(format_duration(7_380), "2h03m");
        assert_eq!(format_duration(3 * 86_400 + 4 * 3_600), "3d04h");
        assert_eq!(progress_bar(0, 0), format!("[{}]", "#".repeat(BAR_WIDTH)));
        assert_eq!(progress_bar(5, 10), "[##########----------]");
        assert_eq!(
            progress_bar(u64::MAX, u64::MAX),
            format!("[{}]", "#".repeat(BAR_WIDTH))
        );
        assert_eq!(progress_bar(20, 10), format!("[{}]", "#".repeat(BAR_WIDTH)));
        assert_eq!(percent(1, 3), 33);
    }

    #[test]
    fn json_reports_shape() {
        let reports = vec![
            MountReport::new(Path::new("/mnt/vagon"), Ok(known_snapshot())),
            MountReport::new(Path::new("/mnt/dead"), Err("no daemon".into())),
        ];
        let v: serde_json::Value = serde_json::to_value(&reports).unwrap();
        assert_eq!(v[0]["mountpoint"], "/mnt/vagon");
        assert_eq!(v[0]["status"]["uploads"][0]["bytes_sent"], 400 * MIB);
        assert_eq!(v[0]["status"]["uploads"][0]["state"], "uploading");
        assert!(v[0]["error"].is_null());
        assert!(v[1]["status"].is_null());
        assert_eq!(v[1]["error"], "no daemon");
    }

    #[test]
    fn unreachable_explanations() {
        let e = ControlError::Stale("/run/vagonfs/x.sock".into());
        let mp = Path::new("/mnt/v");
        assert!(explain_unreachable(mp, &e, true).contains("no daemon answers"));
        assert_eq!(
            explain_unreachable(mp, &e, false),
            "no vagonfs mount at /mnt/v"
        );
        let denied = ControlError::PermissionDenied("/s".into());
        assert!(explain_unreachable(mp, &denied, true).starts_with("permission denied"));
    }
}

#[cfg(test)]
mod command_tests {
    //! The commands end to end against a control server with a fake mount (no FUSE).

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

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
}
