//! `mount.vagonfs`: the helper `mount -t vagonfs SOURCE DIR -o OPTS` (and fstab, and systemd
//! `.mount` units) run, and `vagonfs install-helper`, which installs it as a symlink to the
//! `vagonfs` binary.
//!
//! mount(8) calls `/sbin/mount.vagonfs SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE]`. The binary
//! sees `mount.vagonfs` as its argv[0] ([`is_helper_invocation`]), and
//! [`run_mount_helper`] turns the call into `vagonfs mount --daemon DIR <flags>`, runs it and
//! waits: the daemon detaches once the mount is ready, so the helper's exit status is mount(8)'s
//! answer: 0 mounted, 1 a bad invocation (options, source), 32 the mount failed (no
//! credentials, API unreachable, mount point in use, ...).
//!
//! Subtle cases owned here:
//! - mount passes generic options that mean nothing to a FUSE filesystem or belong to other
//!   programs (`rw`, `defaults`, `_netdev`, `nofail`, `user=alice`, `x-systemd.*`, atime and
//!   suid/dev/exec flags, ...): they are dropped; any other unknown option is refused (exit 1)
//!   unless `-s` (sloppy) is given, in which case it is dropped with a warning;
//! - options repeat in fstab merges: the last value wins (`ro,rw` is read-write), and a flag is
//!   passed once, since the mount command refuses a repeated one;
//! - option names are accepted with `_` or `-` and mapped to `--name-with-dashes`;
//! - values are checked where a typo would otherwise surface far from the fstab line (uid,
//!   gid, umask, upload_concurrency) and a flag given a value (`allow_other=1`) is refused;
//! - silent on success, as mount is: the mount runs at `--log-level warn` unless the options
//!   name a log level or a log file, or `-v` is given; problems (and the retry progress of an
//!   unreachable API) still reach stderr;
//! - the embedded demo emulator is never a fallback here (the mount runs with `--daemon`):
//!   missing credentials fail the mount with "no credentials: …";
//! - `install_helper` never overwrites a file that is not a symlink, and replaces a symlink
//!   atomically (a new link renamed over the old one); `--dest DIR` puts `mount.vagonfs` in
//!   that folder.
//!
//! The files here: this one holds the invocation (argv, source, exit codes); `options` the
//! `-o` options and their mapping; `install` `vagonfs install-helper`.

mod install;
mod options;

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The helper's file name, as mount(8) looks for it.
pub const HELPER_NAME: &str = "mount.vagonfs";
/// Where `vagonfs install-helper` puts it by default.
pub const DEFAULT_HELPER_PATH: &str = "/sbin/mount.vagonfs";

/// mount(8)'s exit codes: incorrect invocation or permissions.
pub const EXIT_USAGE: u8 = 1;
/// mount(8)'s exit codes: mount failure.
pub const EXIT_MOUNT_FAILURE: u8 = 32;

const USAGE: &str = "usage: mount.vagonfs SOURCE DIR [-sfnv] [-o OPTIONS]\n\
    SOURCE is machine:ID (one machine's storage), shared (the organization's shared storage) \
    or all (everything);\n\
    see `vagonfs mount --help` for the options (`-o uid=1000,allow_other,cache_size=1G`).";

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// `--help` / `-h`: not an error; the usage goes to stdout.
    #[error("{USAGE}")]
    Help,
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error(
        "unknown mount option {0:?} (vagonfs options: {known}; `-s` drops unknown options)",
        known = known_options()
    )]
    UnknownOption(String),
    #[error("mount option {option}: {reason}")]
    BadValue { option: String, reason: String },
    #[error("bad source {0:?}: expected machine:ID, shared or all")]
    BadSource(String),
    #[error("cannot start {exe}: {source}")]
    Exec { exe: PathBuf, source: io::Error },
    /// `vagonfs mount` ran and failed; it printed why.
    #[error("the mount failed ({0})")]
    MountFailed(std::process::ExitStatus),
    #[error("{0} exists and is not a symbolic link; refusing to replace it")]
    NotASymlink(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl HelperError {
    fn io(path: &Path, source: io::Error) -> Self {
        HelperError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// mount(8)'s exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            HelperError::Exec { .. } | HelperError::MountFailed(_) => EXIT_MOUNT_FAILURE,
            _ => EXIT_USAGE,
        }
    }
}

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Machine(u64),
    Shared,
    All,
}

impl Source {
    pub fn parse(text: &str) -> Result<Self, HelperError> {
        let bad = || HelperError::BadSource(text.to_string());
        match text {
            "shared" => Ok(Source::Shared),
            "all" => Ok(Source::All),
            _ => {
                let id = text.strip_prefix("machine:").ok_or_else(bad)?;
                match id.parse::<u64>() {
                    Ok(id) if id > 0 => Ok(Source::Machine(id)),
                    _ => Err(bad()),
                }
            }
        }
    }

    /// The `vagonfs mount` flags that select this source.
    pub fn flags(&self) -> Vec<String> {
        match self {
            Source::Machine(id) => vec!["--machine".into(), id.to_string()],
            Source::Shared => vec!["--shared".into()],
            Source::All => vec!["--all".into()],
        }
    }
}

pub use self::install::*;
use self::options::known_options;
pub use self::options::{MappedOptions, map_options};

/// A parsed `mount.vagonfs` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperInvocation {
    pub source: Source,
    pub mountpoint: PathBuf,
    /// `-f`: do everything but the mount (print the command).
    pub fake: bool,
    /// `-v`: say what is run.
    pub verbose: bool,
    /// `-s`: drop unknown options instead of failing.
    pub sloppy: bool,
    /// The `vagonfs mount` flags for the options, in first-seen order.
    pub flags: Vec<String>,
    /// Generic options dropped.
    pub ignored: Vec<String>,
    /// Unknown options dropped under `-s`.
    pub unknown: Vec<String>,
}

impl HelperInvocation {
    /// The arguments of the `vagonfs` command to run.
    pub fn mount_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "mount".into(),
            "--daemon".into(),
            self.mountpoint.clone().into_os_string(),
        ];
        args.extend(self.source.flags().into_iter().map(OsString::from));
        args.extend(self.flags.iter().map(OsString::from));
        // mount(8) is silent on success: only warnings and errors, unless asked otherwise.
        let logs_chosen = self
            .flags
            .iter()
            .any(|f| f == "--log-level" || f == "--log-file");
        if !self.verbose && !logs_chosen {
            args.extend(["--log-level".into(), "warn".into()]);
        }
        args
    }
}

/// Parses the arguments after argv[0].
pub fn parse_helper_args(args: &[OsString]) -> Result<HelperInvocation, HelperError> {
    let mut positional: Vec<&OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let (mut fake, mut verbose, mut sloppy) = (false, false, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            // Paths may be any bytes; flags are ASCII.
            positional.push(arg);
            continue;
        };
        if let Some(long) = text.strip_prefix("--") {
            return Err(match long {
                "help" => HelperError::Help,
                _ => HelperError::Usage(format!("unknown option --{long}")),
            });
        }
        let Some(letters) = text.strip_prefix('-').filter(|l| !l.is_empty()) else {
            positional.push(arg);
            continue;
        };
        for (i, c) in letters.char_indices() {
            match c {
                's' => sloppy = true,
                'f' => fake = true,
                'n' => {} // no mtab to write: nothing to do
                'v' => verbose = true,
                'h' => return Err(HelperError::Help),
                'o' | 't' | 'N' => {
                    let rest = &letters[i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        let next = iter
                            .next()
                            .ok_or_else(|| HelperError::Usage(format!("-{c} needs a value")))?;
                        next.to_str()
                            .ok_or_else(|| HelperError::Usage(format!("-{c}: not UTF-8")))?
                            .to_string()
                    } else {
                        rest.to_string()
                    };
                    match c {
                        'o' => options.push(value),
                        't' => check_type(&value)?,
                        _ => {
                            return Err(HelperError::Usage(
                                "mounting in another namespace (-N) is not supported".into(),
                            ));
                        }
                    }
                    break;
                }
                other => return Err(HelperError::Usage(format!("unknown flag -{other}"))),
            }
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        return Err(HelperError::Usage(format!(
            "expected SOURCE and DIR, got {} argument(s)",
            positional.len()
        )));
    };
    let source = source
        .to_str()
        .ok_or_else(|| HelperError::BadSource(source.to_string_lossy().into_owned()))?;
    let source = Source::parse(source)?;
    let MappedOptions {
        flags,
        ignored,
        unknown,
    } = map_options(&options.join(","), sloppy)?;
    Ok(HelperInvocation {
        source,
        mountpoint: PathBuf::from(mountpoint),
        fake,
        verbose,
        sloppy,
        flags,
        ignored,
        unknown,
    })
}

fn check_type(fstype: &str) -> Result<(), HelperError> {
    match fstype {
        "vagonfs" | "fuse.vagonfs" => Ok(()),
        other => Err(HelperError::Usage(format!(
            "mount.vagonfs cannot mount type {other:?}"
        ))),
    }
}

/// Whether the binary was started as the mount helper (argv[0] ends in `mount.vagonfs`).
pub fn is_helper_invocation(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(HELPER_NAME))
}

/// The helper's main: parses `argv` (argv[0] included) and execs
/// `vagonfs mount --daemon DIR <flags>`. Returns only on error, or with `-f`.
pub fn run_mount_helper(argv: Vec<OsString>) -> ExitCode {
    let invocation = match parse_helper_args(argv.get(1..).unwrap_or_default()) {
        Ok(inv) => inv,
        Err(HelperError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{HELPER_NAME}: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(source) => {
            let e = HelperError::Exec {
                exe: PathBuf::from("/proc/self/exe"),
                source,
            };
            eprintln!("{HELPER_NAME}: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let args = invocation.mount_args();
    let shown = || {
        let words: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} {}", exe.display(), words.join(" "))
    };
    if invocation.fake {
        println!("{}", shown());
        return ExitCode::SUCCESS;
    }
    if !invocation.unknown.is_empty() {
        let unknown = invocation.unknown.join(",");
        eprintln!("{HELPER_NAME}: warning: dropping unknown options (-s): {unknown}");
    }
    if invocation.verbose {
        eprintln!("{HELPER_NAME}: running {}", shown());
        if !invocation.ignored.is_empty() {
            let ignored = invocation.ignored.join(",");
            eprintln!("{HELPER_NAME}: ignoring generic options: {ignored}");
        }
    }
    use std::os::unix::process::CommandExt;
    // Run and wait (not exec): mount(8) wants its own exit codes, not the mount command's.
    let e = match std::process::Command::new(&exe)
        .arg0("vagonfs")
        .args(&args)
        .status()
    {
        Ok(status) if status.success() => return ExitCode::SUCCESS,
        // `vagonfs mount` said why on stderr already.
        Ok(status) => HelperError::MountFailed(status),
        Err(source) => {
            let e = HelperError::Exec { exe, source };
            eprintln!("{HELPER_NAME}: {e}");
            e
        }
    };
    ExitCode::from(e.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn sources() {
        assert_eq!(Source::parse("machine:42").unwrap(), Source::Machine(42));
        assert_eq!(Source::parse("shared").unwrap(), Source::Shared);
        assert_eq!(Source::parse("all").unwrap(), Source::All);
        for bad in [
            "machine:",
            "machine:0",
            "machine:x",
            "machine:-1",
            "Machine:4",
            "42",
            "",
            "shared:1",
        ] {
            assert!(
                matches!(Source::parse(bad), Err(HelperError::BadSource(_))),
                "{bad}"
            );
        }
        assert_eq!(Source::Machine(7).flags(), vec!["--machine", "7"]);
    }

    #[test]
    fn full_invocations() {
        let inv = parse_helper_args(&args(&[
            "machine:42",
            "/mnt/vagon",
            "-n",
            "-o",
            "rw,_netdev,uid=1000,allow_other",
        ]))
        .unwrap();
        assert_eq!(inv.source, Source::Machine(42));
        assert_eq!(inv.mountpoint, PathBuf::from("/mnt/vagon"));
        assert!(!inv.fake && !inv.verbose && !inv.sloppy);
        assert_eq!(
            inv.mount_args(),
            args(&[
                "mount",
                "--daemon",
                "/mnt/vagon",
                "--machine",
                "42",
                "--uid",
                "1000",
                "--allow-other",
                "--log-level",
                "warn"
            ])
        );

        // Flags combined, -o glued to its value, repeated -o, -t accepted.
        let inv = parse_helper_args(&args(&[
            "-sfv",
            "shared",
            "-ouid=1",
            "/m",
            "-o",
            "gid=2,bogus",
            "-t",
            "fuse.vagonfs",
        ]))
        .unwrap();
        assert!(inv.fake && inv.verbose && inv.sloppy);
        assert_eq!(inv.flags, vec!["--uid", "1", "--gid", "2"]);
        assert_eq!(inv.unknown, vec!["bogus"]);
        assert!(inv.ignored.is_empty());
        assert_eq!(inv.source, Source::Shared);

        let inv = parse_helper_args(&args(&["all", "/m"])).unwrap();
        assert_eq!(
            inv.mount_args(),
            args(&["mount", "--daemon", "/m", "--all", "--log-level", "warn"])
        );
        // -v, or a log level or file in the options: the mount logs as asked.
        let inv = parse_helper_args(&args(&["all", "/m", "-v"])).unwrap();
        assert!(!inv.mount_args().contains(&OsString::from("warn")));
        let inv = parse_helper_args(&args(&["all", "/m", "-o", "log_level=debug"])).unwrap();
        assert_eq!(
            inv.mount_args(),
            args(&["mount", "--daemon", "/m", "--all", "--log-level", "debug"])
        );
    }

    #[test]
    fn invocation_errors() {
        let usage = |words: &[&str]| match parse_helper_args(&args(words)) {
            Err(e @ HelperError::Usage(_)) => e.exit_code(),
            other => panic!("{words:?}: {other:?}"),
        };
        assert_eq!(usage(&["machine:1"]), EXIT_USAGE);
        assert_eq!(usage(&["machine:1", "/m", "/extra"]), EXIT_USAGE);
        assert_eq!(usage(&["machine:1", "/m", "-o"]), EXIT_USAGE);
        assert_eq!(usage(&["machine:1", "/m", "-x"]), EXIT_USAGE);
        assert_eq!(usage(&["machine:1", "/m", "-t", "ext4"]), EXIT_USAGE);
        assert_eq!(
            usage(&["machine:1", "/m", "-N", "/proc/1/ns/mnt"]),
            EXIT_USAGE
        );
        assert_eq!(usage(&["machine:1", "/m", "--bogus"]), EXIT_USAGE);
        for help in [&["--help"][..], &["-h"], &["shared", "/m", "--help"]] {
            assert!(
                matches!(parse_helper_args(&args(help)), Err(HelperError::Help)),
                "{help:?}"
            );
        }
        let unknown = parse_helper_args(&args(&["shared", "/m", "-o", "nope"])).unwrap_err();
        assert!(matches!(unknown, HelperError::UnknownOption(_)));
        assert_eq!(unknown.exit_code(), EXIT_USAGE);
        assert!(matches!(
            parse_helper_args(&args(&["disk:1", "/m"])),
            Err(HelperError::BadSource(_))
        ));
    }

    #[test]
    fn helper_name_detection() {
        assert!(is_helper_invocation(OsStr::new("/sbin/mount.vagonfs")));
        assert!(is_helper_invocation(OsStr::new("mount.vagonfs")));
        assert!(!is_helper_invocation(OsStr::new("/usr/bin/vagonfs")));
        assert!(!is_helper_invocation(OsStr::new("mount.vagonfs.bak")));
    }
}
