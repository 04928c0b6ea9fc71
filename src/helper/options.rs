//! The `-o` options of `mount.vagonfs`: which are ours, which mount's generic ones are dropped,
//! how each value is checked, and their mapping to `vagonfs mount` flags.
//!
//! Subtle cases: generic options (`rw`, `defaults`, `_netdev`, `x-systemd.*`, atime and
//! suid/dev/exec flags, ...) are dropped; any other unknown option is refused unless sloppy
//! (`-s`), then dropped with a warning; the last value of a repeated option wins and a flag is
//! passed once; `_` and `-` are the same in a name; values a typo would break far from the
//! fstab line (uid, gid, umask, upload_concurrency) are checked here, and a flag given a value
//! is refused.

use super::HelperError;

/// How an option's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    /// No value allowed: `allow_other`.
    None,
    /// Any non-empty text (sizes, durations, paths, addresses: `vagonfs mount` parses them).
    Text,
    /// A decimal `u32` (ids, counts).
    U32,
    /// Octal permission bits, at most 0777.
    Octal,
}

/// The vagonfs options mount may pass, each mapped to `--name-with-dashes`. `ro` is handled
/// apart (it maps to `--read-only` and `rw` undoes it).
pub(super) const OPTIONS: &[(&str, Value)] = &[
    ("uid", Value::U32),
    ("gid", Value::U32),
    ("umask", Value::Octal),
    ("allow_other", Value::None),
    ("credentials", Value::Text),
    ("api_url", Value::Text),
    ("cache_dir", Value::Text),
    ("cache_size", Value::Text),
    ("dir_cache_ttl", Value::Text),
    ("dir_refresh", Value::Text),
    ("op_timeout", Value::Text),
    ("chunk_size", Value::Text),
    ("upload_concurrency", Value::U32),
    ("log_level", Value::Text),
    ("log_file", Value::Text),
    ("metrics_addr", Value::Text),
    ("metrics_allow_remote", Value::None),
];

/// Generic options dropped as they are (they mean nothing here, or belong to mount itself).
pub(super) const GENERIC_OPTIONS: &[&str] = &[
    "rw",
    "defaults",
    "_netdev",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "mand",
    "nomand",
    "iversion",
    "noiversion",
];
/// Generic options with a value, dropped by prefix: userspace options of other programs
/// (`x-systemd.automount`, `x-gvfs-show`), fstab comments, and the `user=NAME` mount adds
/// for a user mount.
pub(super) const GENERIC_PREFIXES: &[&str] = &["x-", "comment=", "user="];

pub(super) fn known_options() -> String {
    let mut names: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
    names.push("ro");
    names.join(", ")
}

/// The result of [`map_options`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedOptions {
    /// `vagonfs mount` flags, in first-seen order.
    pub flags: Vec<String>,
    /// Generic options dropped.
    pub ignored: Vec<String>,
    /// Unknown options dropped because of `-s`.
    pub unknown: Vec<String>,
}

/// Maps a comma-separated option string to `vagonfs mount` flags.
pub fn map_options(options: &str, sloppy: bool) -> Result<MappedOptions, HelperError> {
    // (option name, value), last value wins, first-seen order kept.
    let mut chosen: Vec<(&'static str, Option<String>)> = Vec::new();
    let mut read_only = false;
    let (mut ignored, mut unknown) = (Vec::new(), Vec::new());
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        let normalized = name.replace('-', "_");
        if option == "ro" {
            read_only = true;
            continue;
        }
        if option == "rw" {
            read_only = false;
            ignored.push(option.to_string());
            continue;
        }
        if GENERIC_OPTIONS.contains(&option)
            || GENERIC_PREFIXES.iter().any(|p| option.starts_with(p))
        {
            ignored.push(option.to_string());
            continue;
        }
        let Some(&(known, kind)) = OPTIONS.iter().find(|(n, _)| *n == normalized) else {
            if sloppy {
                unknown.push(option.to_string());
                continue;
            }
            return Err(HelperError::UnknownOption(option.to_string()));
        };
        let value = check_value(known, kind, value)?;
        match chosen.iter_mut().find(|(n, _)| *n == known) {
            Some(slot) => slot.1 = value,
            None => chosen.push((known, value)),
        }
    }
    let mut flags = Vec::new();
    for (name, value) in chosen {
        flags.push(format!("--{}", name.replace('_', "-")));
        flags.extend(value);
    }
    if read_only {
        flags.push("--read-only".into());
    }
    Ok(MappedOptions {
        flags,
        ignored,
        unknown,
    })
}

fn check_value(
    name: &str,
    kind: Value,
    value: Option<&str>,
) -> Result<Option<String>, HelperError> {
    let bad = |reason: &str| HelperError::BadValue {
        option: name.to_string(),
        reason: reason.into(),
    };
    match (kind, value) {
        (Value::None, None) => Ok(None),
        (Value::None, Some(_)) => Err(bad("takes no value")),
        (_, None) | (_, Some("")) => Err(bad("needs a value (name=value)")),
        (Value::Text, Some(v)) => Ok(Some(v.to_string())),
        (Value::U32, Some(v)) => {
            v.parse::<u32>()
                .map_err(|_| bad("expects a whole number"))?;
            Ok(Some(v.to_string()))
        }
        (Value::Octal, Some(v)) => match u32::from_str_radix(v, 8) {
            Ok(bits) if bits <= 0o777 => Ok(Some(v.to_string())),
            _ => Err(bad("expects octal permission bits, e.g. 022")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(options: &str) -> Result<Vec<String>, String> {
        map_options(options, false)
            .map(|m| m.flags)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn option_mapping_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("defaults", &[]),
            (
                "rw,_netdev,nofail,auto,noauto,user,users,nosuid,nodev,noexec,noatime",
                &[],
            ),
            (
                "x-systemd.automount,x-systemd.idle-timeout=60,x-gvfs-show,comment=hi",
                &[],
            ),
            ("user=alice", &[]),
            ("uid=1000,gid=100", &["--uid", "1000", "--gid", "100"]),
            ("umask=022", &["--umask", "022"]),
            ("allow_other", &["--allow-other"]),
            ("allow-other", &["--allow-other"]),
            ("ro", &["--read-only"]),
            ("ro,rw", &[]),
            ("rw,ro", &["--read-only"]),
            (
                "credentials=/etc/vagonfs/creds.toml",
                &["--credentials", "/etc/vagonfs/creds.toml"],
            ),
            (
                "cache_dir=/var/cache/vagonfs",
                &["--cache-dir", "/var/cache/vagonfs"],
            ),
            (
                "cache_size=2G,dir_cache_ttl=30s",
                &["--cache-size", "2G", "--dir-cache-ttl", "30s"],
            ),
            (
                "chunk_size=64,upload_concurrency=4",
                &["--chunk-size", "64", "--upload-concurrency", "4"],
            ),
            (
                "log_level=debug,log_file=/var/log/v.log",
                &["--log-level", "debug", "--log-file", "/var/log/v.log"],
            ),
            (
                "metrics_addr=127.0.0.1:9464",
                &["--metrics-addr", "127.0.0.1:9464"],
            ),
            (
                "metrics_addr=10.0.0.2:9464,metrics_allow_remote",
                &["--metrics-addr", "10.0.0.2:9464", "--metrics-allow-remote"],
            ),
            (
                "api_url=http://127.0.0.1:8080",
                &["--api-url", "http://127.0.0.1:8080"],
            ),
            ("uid=1,gid=2,uid=3", &["--uid", "3", "--gid", "2"]),
            ("allow_other,allow_other", &["--allow-other"]),
            (",,uid=5,,", &["--uid", "5"]),
            ("credentials=/a=b", &["--credentials", "/a=b"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                mapped(input).as_deref(),
                Ok(&want.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
                "{input}"
            );
        }
    }

    #[test]
    fn option_errors_table() {
        let cases: &[(&str, &str)] = &[
            ("frobnicate", "unknown mount option \"frobnicate\""),
            ("default_permissions", "unknown mount option"),
            ("uid=alice", "uid: expects a whole number"),
            ("uid=", "uid: needs a value"),
            ("gid", "gid: needs a value"),
            ("umask=999", "umask: expects octal"),
            ("umask=01777", "umask: expects octal"),
            ("allow_other=1", "allow_other: takes no value"),
            (
                "upload_concurrency=-1",
                "upload_concurrency: expects a whole number",
            ),
            ("cache_size=", "cache_size: needs a value"),
        ];
        for (input, want) in cases {
            let err = mapped(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn sloppy_drops_unknown_options() {
        let mapped = map_options("frobnicate,uid=1,rw,x-foo", true).unwrap();
        assert_eq!(mapped.flags, vec!["--uid", "1"]);
        assert_eq!(mapped.ignored, vec!["rw", "x-foo"]);
        assert_eq!(mapped.unknown, vec!["frobnicate"]);
        // Bad values are still errors under -s.
        assert!(map_options("uid=x", true).is_err());
    }
}
