//! The text rendering of a [`StatusSnapshot`]: byte and duration units, progress bars, rates,
//! ETAs, the upload and error tables.
//!
//! Subtle cases: rates and ETAs use the snapshot's own `taken_at` against `started_at` (both
//! the daemon's clock), so a client with a skewed clock still shows sane numbers and a known
//! snapshot renders to known text; a total of 0 is 0 %, never a division by zero; uploads and
//! errors beyond their line limits are summed up as "… and N more".

use chrono::{DateTime, Utc};

use super::{BAR_WIDTH, MAX_ERROR_LINES, MAX_UPLOAD_LINES};
use crate::daemon::snapshot::{StatusSnapshot, UploadProgress, UploadState};

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

pub(super) fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    }
}

/// Average rate of an upload since it started, bytes per second.
pub(super) fn upload_rate(upload: &UploadProgress, taken_at: DateTime<Utc>) -> Option<f64> {
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

pub(super) fn upload_summary(snapshot: &StatusSnapshot) -> String {
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

pub(super) fn hit_rate_text(rate: Option<f64>, hits: u64, misses: u64) -> String {
    match rate {
        Some(r) => format!("{:.1}% ({hits} hits, {misses} misses)", r * 100.0),
        None => "no lookups yet".to_string(),
    }
}

pub(super) fn ms_text(ms: Option<f64>) -> String {
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
    if s.folders_not_made > 0 {
        line(format!(
            "  folders   {} made here, not on the server yet (retried in the background)",
            s.folders_not_made
        ));
    }
    if s.deletes_pending > 0 {
        line(format!(
            "  deletes   {} removed here, not deleted on the server yet (retried in the background)",
            s.deletes_pending
        ));
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
pub(crate) mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::daemon::snapshot::{
        CacheStats, EndpointStats, FailedUpload, MountIdentity, RecentError,
    };

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_770_000_000 + secs, 0).single().unwrap()
    }

    pub(crate) const MIB: u64 = 1024 * 1024;

    pub(crate) fn known_snapshot() -> StatusSnapshot {
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
            folders_not_made: 0,
            deletes_pending: 0,
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
    fn folders_not_made_and_deletes_not_done_are_shown_and_keep_sync_waiting() {
        type Set = fn(&mut StatusSnapshot);
        let cases: [(Set, &str, &str); 2] = [
            (
                |s| s.folders_not_made = 3,
                "  folders ",
                "  folders   3 made here, not on the server yet (retried in the background)\n",
            ),
            (
                |s| s.deletes_pending = 12,
                "  deletes ",
                "  deletes   12 removed here, not deleted on the server yet (retried in the background)\n",
            ),
        ];
        for (set, label, line) in cases {
            let mut s = known_snapshot();
            s.queued = 0;
            s.in_flight = 0;
            assert!(!render_snapshot(&s).contains(label));
            assert!(s.uploads_done());
            set(&mut s);
            let text = render_snapshot(&s);
            assert!(text.contains(line), "{text}");
            assert!(!s.uploads_done());
        }
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
}
