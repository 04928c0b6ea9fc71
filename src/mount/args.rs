//! The options of `vagonfs mount` ([`MountArgs`]) and the parsers of their values.
//!
//! Subtle cases: every value is checked here, where a typo is caught before anything starts
//! (a umask is octal only and at most 0777; sizes take K/M/G/T and are at least 1 MiB and at
//! most 1 TiB; durations take `ms`/`s`/`m`/`h` and are bounded per option; concurrency is 1
//! to 64); a log level is a bare level or a full filter.

use std::path::PathBuf;
use std::time::Duration;

/// Bytes in a MiB (`--cache-size` unit).
const MIB: u64 = 1024 * 1024;
/// Largest `--cache-size`, bytes (1 TiB: anything above is a typo).
const MAX_CACHE_BYTES: u64 = 1024 * 1024 * MIB;
/// Largest `--dir-cache-ttl`, seconds (one day).
const MAX_DIR_CACHE_TTL_SECS: u64 = 24 * 60 * 60;
/// Largest `--chunk-size`, MiB (the service takes parts of up to 5 GiB).
const MAX_CHUNK_SIZE_MB: u64 = 5120;
/// Largest `--upload-concurrency` (more only piles parts up in memory).
const MAX_UPLOAD_CONCURRENCY: usize = 64;
/// Log levels accepted as a bare word by `--log-level`.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `vagonfs mount` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,

    /// Show this machine's storage at the root of the mount (its numeric id).
    #[arg(long, value_name = "ID", conflicts_with_all = ["shared", "all"])]
    pub machine: Option<u64>,

    /// Show the organization's shared storage at the root of the mount.
    #[arg(long, conflicts_with = "all")]
    pub shared: bool,

    /// Show everything: machines/<name>/, shared/ and recordings/ (the default without
    /// --machine or --shared).
    #[arg(long)]
    pub all: bool,

    /// Owner of every file and folder [default: the calling user].
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Group of every file and folder [default: the calling user's group].
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,

    /// Permission bits to clear, in octal (files are 0666 & !umask, folders 0777 & !umask).
    #[arg(long, value_name = "OCTAL", default_value = "022", value_parser = parse_umask)]
    pub umask: u16,

    /// Let other users (not only the one who mounted) use the mount; permissions are then
    /// checked against --uid/--gid/--umask.
    #[arg(long)]
    pub allow_other: bool,

    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,

    /// How long a folder listing is trusted before it is fetched again: seconds, or a number
    /// with a unit (90s, 5m, 1h); at most a day.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_duration)]
    pub dir_cache_ttl: Duration,

    /// A folder opened (ls, a file manager's refresh) with a listing older than this is
    /// revalidated in the background, so changes made elsewhere show within seconds: seconds,
    /// or a number with a unit (10s, 1m).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_duration)]
    pub dir_refresh: Duration,

    /// Longest wait of lookup, stat, opendir and readdir on an unreachable API when nothing
    /// is cached (then EIO; cached listings are answered at once), and of rmdir and unlink
    /// (mkdir answers at once; the folder is made in the background): seconds, or with a unit.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_op_timeout)]
    pub op_timeout: Duration,

    /// Memory for cached file data: MiB, or a size with a unit (512M, 2G); 1 MiB to 1 TiB.
    #[arg(long, value_name = "MiB", default_value = "256", value_parser = parse_cache_size)]
    pub cache_size: u64,

    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG wins.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Write logs to FILE (appending) instead of stderr. With --daemon and no --log-file,
    /// logs are discarded once the mount is ready.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    #[command(flatten)]
    pub credentials: crate::config::CredentialsArgs,

    #[command(flatten)]
    pub metrics: crate::daemon::metrics_http::MetricsArgs,

    /// API base URL, replacing the one the credentials name (e.g. a test server).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,

    /// Run in the background once the mount is ready; the exit status says whether it mounted.
    #[arg(long)]
    pub daemon: bool,

    /// Mount a local demo emulator of the API (data in $XDG_DATA_HOME/vagonfs/demo) instead of
    /// a Vagon account. Without credentials this is the default only for a foreground mount
    /// typed in a terminal; elsewhere (--daemon, mount -t vagonfs, systemd) a missing
    /// credentials file is an error.
    #[arg(long, conflicts_with_all = ["credentials", "api_url"])]
    pub demo: bool,

    /// Folder for the local copies of files being written (kept until uploaded, and across a
    /// crash); must be owned by you and not writable by others [default: $XDG_CACHE_HOME/vagonfs,
    /// ~/.cache/vagonfs, systemd's $CACHE_DIRECTORY, or /var/cache/vagonfs for root].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Size of each uploaded part, MiB (1 to 5120).
    #[arg(long, value_name = "MiB", default_value_t = crate::fs::write::DEFAULT_CHUNK_SIZE_MB,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CHUNK_SIZE_MB))]
    pub chunk_size: u64,

    /// Parts of one file uploaded at once (1 to 64).
    #[arg(long, value_name = "N", default_value_t = crate::fs::write::DEFAULT_CONCURRENCY,
          value_parser = parse_transfers)]
    pub upload_concurrency: usize,

    /// Entries (counted recursively) past which renaming a folder answers EXDEV, so that `mv`
    /// copies and deletes instead of the mount moving every file one by one.
    #[arg(long, value_name = "N", default_value_t = crate::fs::DEFAULT_RENAME_DIR_LIMIT)]
    pub rename_dir_limit: usize,

    /// Longest a read of file contents waits for the network before it fails with ETIMEDOUT:
    /// seconds, or a number with a unit (30s, 2m); at most a day.
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_read_timeout)]
    pub read_timeout: Duration,
    /// Files uploaded at once in the background (1 to 64).
    #[arg(long, value_name = "N", default_value_t = crate::fs::engine::DEFAULT_TRANSFERS,
          value_parser = parse_transfers)]
    pub transfers: usize,

    /// close(2) waits until the file is on the server and returns the upload's error (by
    /// default close returns once the change is safe on local disk, and uploads run in the
    /// background; fsync(2) and `vagonfs sync` wait for them).
    #[arg(long)]
    pub sync_close: bool,

    /// How long a new file waits after its close before its upload starts, so that a file
    /// renamed or deleted right away (an editor's temporary file) costs no upload (e.g. 1s,
    /// 500ms, 0).
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_upload_delay)]
    pub upload_delay: Duration,

    /// Most disk space the local copies of changed files may take (MiB, or with a unit: 2G).
    /// When it is taken, a write waits for uploads to make room (it blocks while the API is
    /// unreachable); a single file larger than it is refused with ENOSPC [default: the smaller
    /// of 10 GiB and half the free space of the cache folder's disk at mount time].
    #[arg(long, value_name = "SIZE", value_parser = parse_cache_size)]
    pub cache_max_size: Option<u64>,
}

/// Why an option's value was refused; clap prints it after the option's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0:?} is not an octal number (e.g. 022)")]
    NotOctal(String),
    #[error("{0:?} is larger than 0777")]
    UmaskTooLarge(String),
    #[error("{0:?} is not a size (e.g. 256 or 1G)")]
    NotASize(String),
    #[error("{0:?} is not between 1 MiB and 1 TiB")]
    SizeOutOfRange(String),
    #[error("{value:?} is not a duration (e.g. {example})")]
    NotADuration {
        value: String,
        example: &'static str,
    },
    #[error("{value:?}: unknown unit (use {units})")]
    UnknownUnit { value: String, units: &'static str },
    #[error("{0:?} is shorter than one second")]
    ShorterThanASecond(String),
    #[error("a read timeout of 0 would fail every read: give 1s or more")]
    ZeroReadTimeout,
    #[error("{value:?} is longer than {limit}")]
    TooLong { value: String, limit: &'static str },
    #[error("{0:?} is not a number from 1 to {MAX_UPLOAD_CONCURRENCY}")]
    NotAConcurrency(String),
    #[error("{value:?} is not a valid filter: {reason}")]
    BadFilter { value: String, reason: String },
    #[error("{0:?} is not a log level (one of {levels})", levels = LOG_LEVELS.join(", "))]
    NotALogLevel(String),
}

/// `--umask`: octal digits (an optional `0o` prefix), at most 0777.
pub fn parse_umask(s: &str) -> Result<u16, ArgError> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(ArgError::NotOctal(s.into()));
    }
    match u16::from_str_radix(digits, 8) {
        Ok(v) if v <= 0o777 => Ok(v),
        _ => Err(ArgError::UmaskTooLarge(s.into())),
    }
}

/// A number and the unit after it (`"5m"` → `(5, "m")`); `None` when it does not start with
/// digits or overflows.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    Some((number.parse().ok()?, unit.trim()))
}

/// `--cache-size`: a plain number is MiB; `K`, `M`, `G`, `T` (optionally `iB` or `B`, always
/// binary) give the unit. Between 1 MiB and 1 TiB. Returns bytes.
pub fn parse_cache_size(s: &str) -> Result<u64, ArgError> {
    let (number, unit) = number_and_unit(s).ok_or_else(|| ArgError::NotASize(s.into()))?;
    let unit = unit.to_ascii_uppercase();
    let scale: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" if unit.is_empty() => MIB,
        "K" => 1024,
        "M" => MIB,
        "G" => 1024 * MIB,
        "T" => 1024 * 1024 * MIB,
        _ => {
            return Err(ArgError::UnknownUnit {
                value: s.into(),
                units: "K, M, G or T",
            });
        }
    };
    let bytes = number.checked_mul(scale).filter(|b| *b <= MAX_CACHE_BYTES);
    match bytes {
        Some(b) if b >= MIB => Ok(b),
        _ => Err(ArgError::SizeOutOfRange(s.into())),
    }
}

/// `--op-timeout`: as [`parse_duration`], at least one second (a shorter bound would fail
/// lookups on an ordinary slow answer).
pub fn parse_op_timeout(s: &str) -> Result<Duration, ArgError> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(ArgError::ShorterThanASecond(s.into()));
    }
    Ok(d)
}

/// `--read-timeout`: a duration of at least one second.
fn parse_read_timeout(s: &str) -> Result<Duration, ArgError> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(ArgError::ZeroReadTimeout),
        d => Ok(d),
    }
}

/// `--dir-cache-ttl`: a plain number is seconds; `s`, `m`, `h` give the unit. At most a day.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let (number, unit) = number_and_unit(s).ok_or_else(|| ArgError::NotADuration {
        value: s.into(),
        example: "60 or 5m",
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        _ => {
            return Err(ArgError::UnknownUnit {
                value: s.into(),
                units: "s, m or h",
            });
        }
    };
    match number.checked_mul(scale) {
        Some(secs) if secs <= MAX_DIR_CACHE_TTL_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(ArgError::TooLong {
            value: s.into(),
            limit: "a day",
        }),
    }
}

/// `--transfers` and `--upload-concurrency`: 1 to [`MAX_UPLOAD_CONCURRENCY`].
pub fn parse_transfers(s: &str) -> Result<usize, ArgError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_UPLOAD_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(ArgError::NotAConcurrency(s.into())),
    }
}

/// Longest `--upload-delay`.
const MAX_UPLOAD_DELAY: Duration = Duration::from_secs(600);

/// `--upload-delay`: a number with `ms` or `s` (a plain number is seconds), at most 10 minutes.
pub fn parse_upload_delay(s: &str) -> Result<Duration, ArgError> {
    let (number, unit) = number_and_unit(s).ok_or_else(|| ArgError::NotADuration {
        value: s.into(),
        example: "1s or 500ms",
    })?;
    let d = match unit {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        _ => {
            return Err(ArgError::UnknownUnit {
                value: s.into(),
                units: "ms or s",
            });
        }
    };
    if d > MAX_UPLOAD_DELAY {
        return Err(ArgError::TooLong {
            value: s.into(),
            limit: "10 minutes",
        });
    }
    Ok(d)
}

/// `--log-level`: a level name, or a tracing filter with `=` or `,` in it.
pub fn parse_log_level(s: &str) -> Result<String, ArgError> {
    let lower = s.trim().to_ascii_lowercase();
    if LOG_LEVELS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    if s.contains('=') || s.contains(',') {
        return tracing_subscriber::EnvFilter::try_new(s)
            .map(|_| s.to_string())
            .map_err(|err| ArgError::BadFilter {
                value: s.into(),
                reason: err.to_string(),
            });
    }
    Err(ArgError::NotALogLevel(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_parses_octal_only() {
        assert_eq!(parse_umask("022"), Ok(0o22));
        assert_eq!(parse_umask("0o077"), Ok(0o77));
        assert_eq!(parse_umask("0"), Ok(0));
        assert_eq!(parse_umask("777"), Ok(0o777));
        assert!(parse_umask("0777").is_ok());
        assert!(parse_umask("1000").is_err());
        assert!(parse_umask("08").is_err());
        assert!(parse_umask("").is_err());
        assert!(parse_umask("-1").is_err());
        assert!(parse_umask("abc").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_cache_size("256"), Ok(256 * MIB));
        assert_eq!(parse_cache_size("1G"), Ok(1024 * MIB));
        assert_eq!(parse_cache_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_cache_size("2048k"), Ok(2 * MIB));
        assert_eq!(parse_cache_size("1T"), Ok(MAX_CACHE_BYTES));
        for bad in [
            "0",
            "512K",
            "2T",
            "1X",
            "G",
            "",
            "-1",
            "1.5G",
            "99999999999999999999",
        ] {
            assert!(parse_cache_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["25h", "1d", "s", "", "-1", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_back_options() {
        assert_eq!(parse_upload_delay("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_upload_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_upload_delay("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "-1", "1h", "601", "1.5s", "ms"] {
            assert!(parse_upload_delay(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_transfers("8"), Ok(8));
        for bad in ["0", "65", "x"] {
            assert!(parse_transfers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_concurrency_bounds() {
        assert_eq!(parse_transfers("4"), Ok(4));
        assert_eq!(parse_transfers("64"), Ok(64));
        for bad in ["0", "65", "-1", "x", ""] {
            assert!(parse_transfers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_level_accepts_levels_and_filters() {
        assert_eq!(parse_log_level("DEBUG").as_deref(), Ok("debug"));
        assert!(parse_log_level("vagonfs=trace,info").is_ok());
        assert!(parse_log_level("verbose").is_err());
        assert!(parse_log_level("x=notalevel").is_err());
    }
}
