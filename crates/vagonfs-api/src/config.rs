//! Credentials for the Vagon API: where they come from, and keeping the secret secret.
//!
//! Load order ([`load_credentials`]), first match wins:
//! 1. `--credentials FILE` when given (a missing file is an error, not a fall-through);
//! 2. the environment: `VAGON_API_KEY` + `VAGON_API_SECRET` (both, or it is an error), and
//!    `VAGON_API_URL` (default [`DEFAULT_API_URL`]); `VAGON_API_URL` alone is an error too, since
//!    it would silently be ignored otherwise; empty values count as unset;
//! 3. `$XDG_CONFIG_HOME/vagonfs/config.toml` (or `~/.config/vagonfs/config.toml`) if it exists.
//!
//! Nothing configured → `Ok(None)`: the caller decides (`vagonfs mount` in a terminal offers its
//! embedded demo emulator, everything else refuses with "no credentials").
//!
//! A credentials file is TOML with the keys `api_url` (optional), `api_key`, `api_secret`; other
//! keys are ignored with a warning naming them (never their values). A file that group or others
//! may read or write is refused, with the `chmod 600` that fixes it; the mode is checked on the
//! opened file, not on the path, so a swap between check and read is not possible.
//!
//! The secret never shows: [`Credentials`]' `Debug` redacts it; no CLI option or clap `env`
//! carries it (so `--help` cannot print it); a TOML syntax error is reported by line and column
//! only, because the parser's own message quotes the offending line, which may hold the secret.
//! The API URL must be absolute http(s) with a host and no query or fragment.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The public API's base URL.
pub const DEFAULT_API_URL: &str = "https://api.vagon.io";
pub const ENV_API_KEY: &str = "VAGON_API_KEY";
pub const ENV_API_SECRET: &str = "VAGON_API_SECRET";
pub const ENV_API_URL: &str = "VAGON_API_URL";

/// Mode bits that must be clear on a credentials file: any access by group or others.
const GROUP_OTHER_BITS: u32 = 0o077;
/// A credentials file larger than this is not a credentials file (1 MiB).
const MAX_CREDENTIALS_FILE: u64 = 1024 * 1024;

/// What signs every request. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Base URL, e.g. `https://api.vagon.io` or `http://127.0.0.1:8080`.
    pub api_url: String,
    pub api_key: String,
    pub api_secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Validated credentials (URL shape, non-empty key and secret).
    pub fn new(
        api_url: impl Into<String>,
        api_key: impl Into<String>,
        api_secret: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let creds = Credentials {
            api_url: api_url.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
        };
        creds.validate("credentials")?;
        Ok(creds)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        check_url(&self.api_url, origin)?;
        for (key, value) in [("api_key", &self.api_key), ("api_secret", &self.api_secret)] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty {
                    origin: origin.to_string(),
                    key,
                });
            }
        }
        Ok(())
    }
}

/// Why credentials could not be loaded. No variant carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read credentials file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "credentials file {} can be accessed by group or others (mode {mode:04o}); \
         fix it with `chmod 600 {}`", path.display(), path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("credentials file {} is too large to be a credentials file", path.display())]
    TooLarge { path: PathBuf },
    #[error("credentials file {} is not valid TOML: {detail}", path.display())]
    BadToml { path: PathBuf, detail: String },
    #[error("{origin}: missing key `{key}`")]
    MissingKey { origin: String, key: &'static str },
    #[error("{origin}: `{key}` must be a string")]
    WrongType { origin: String, key: &'static str },
    #[error("{origin}: `{key}` is empty")]
    Empty { origin: String, key: &'static str },
    #[error("{origin}: bad API URL {url:?}: {reason}")]
    BadUrl {
        origin: String,
        url: String,
        reason: String,
    },
    #[error("{set} is set but {missing} is not: set both, or neither to use a credentials file")]
    HalfSetEnv {
        set: &'static str,
        missing: &'static str,
    },
}

/// Load credentials from the real environment (see the module note for the order).
pub fn load_credentials(explicit: Option<&Path>) -> Result<Option<Credentials>, ConfigError> {
    load_with(explicit, &|k| std::env::var(k).ok())
}

/// [`load_credentials`] with the environment given as a lookup function (tests pass their own,
/// so they never touch the process environment).
pub fn load_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, ConfigError> {
    if let Some(path) = explicit {
        return read_file(path).map(Some);
    }
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    match (get(ENV_API_KEY), get(ENV_API_SECRET)) {
        (Some(api_key), Some(api_secret)) => {
            let api_url = get(ENV_API_URL).unwrap_or_else(|| DEFAULT_API_URL.to_string());
            let creds = Credentials {
                api_url,
                api_key,
                api_secret,
            };
            creds.validate("environment")?;
            return Ok(Some(creds));
        }
        (Some(_), None) => {
            return Err(ConfigError::HalfSetEnv {
                set: ENV_API_KEY,
                missing: ENV_API_SECRET,
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::HalfSetEnv {
                set: ENV_API_SECRET,
                missing: ENV_API_KEY,
            });
        }
        (None, None) => {
            if get(ENV_API_URL).is_some() {
                return Err(ConfigError::HalfSetEnv {
                    set: ENV_API_URL,
                    missing: "VAGON_API_KEY and VAGON_API_SECRET",
                });
            }
        }
    }
    match default_config_path(env) {
        Some(path) if path.exists() => read_file(&path).map(Some),
        _ => Ok(None),
    }
}

/// `$XDG_CONFIG_HOME/vagonfs/config.toml`, else `$HOME/.config/vagonfs/config.toml`. A relative
/// `XDG_CONFIG_HOME` is ignored, as the XDG spec says.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("vagonfs").join("config.toml"))
}

/// Read, check and parse one credentials file.
pub fn read_file(path: &Path) -> Result<Credentials, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(ConfigError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_CREDENTIALS_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    parse_toml(&text, path)
}

/// Parse the TOML text of a credentials file read from `path`.
pub fn parse_toml(text: &str, path: &Path) -> Result<Credentials, ConfigError> {
    let origin = format!("credentials file {}", path.display());
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::BadToml {
            path: path.to_path_buf(),
            // Not `e.to_string()`: it quotes the offending line, which may hold the secret.
            detail: match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("{} (line {line}, column {col})", e.message().trim())
                }
                None => e.message().trim().to_string(),
            },
        })?;
    let string = |key: &'static str| -> Result<Option<String>, ConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::WrongType {
                origin: origin.clone(),
                key,
            }),
        }
    };
    let required = |key: &'static str| -> Result<String, ConfigError> {
        string(key)?.ok_or(ConfigError::MissingKey {
            origin: origin.clone(),
            key,
        })
    };
    let creds = Credentials {
        api_url: string("api_url")?.unwrap_or_else(|| DEFAULT_API_URL.to_string()),
        api_key: required("api_key")?,
        api_secret: required("api_secret")?,
    };
    let unknown: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "api_url" | "api_key" | "api_secret"))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(file = %path.display(), keys = ?unknown, "ignoring unknown keys in the credentials file");
    }
    creds.validate(&origin)?;
    Ok(creds)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

fn check_url(raw: &str, origin: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        origin: origin.to_string(),
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if !url.has_host() {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base URL takes no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials go in api_key/api_secret, not in the URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret() {
        let c = Credentials::new("https://api.vagon.io", "key-1", "very-secret-value").unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("very-secret-value"));
        assert!(shown.contains("key-1") && shown.contains("<redacted>"));
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "https://api.vagon.io",
            "http://127.0.0.1:8080",
            "https://h/prefix/",
        ] {
            assert!(Credentials::new(good, "k", "s").is_ok(), "{good}");
        }
        for bad in [
            "api.vagon.io",
            "ftp://h",
            "https://h/?x=1",
            "https://u:p@h",
            "",
            "http://",
        ] {
            assert!(
                matches!(
                    Credentials::new(bad, "k", "s"),
                    Err(ConfigError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Credentials::new("https://h", " ", "s"),
            Err(ConfigError::Empty { key: "api_key", .. })
        ));
    }

    #[test]
    fn toml_errors_never_quote_the_secret() {
        let p = Path::new("/x/config.toml");
        let err = parse_toml("api_key = \"k\"\napi_secret = hunter2-secret\n", p).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::BadToml { .. }));
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        let err = parse_toml("api_key = \"k\"\n", p).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::MissingKey {
                    key: "api_secret",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_toml("api_key = 5\napi_secret = \"s\"", p).unwrap_err();
        assert!(
            matches!(err, ConfigError::WrongType { key: "api_key", .. }),
            "{err}"
        );
        let c = parse_toml("api_key = \"k\"\napi_secret = \"s\"\nmount_opts = 1\n", p).unwrap();
        assert_eq!(c.api_url, DEFAULT_API_URL);
    }

    #[test]
    fn env_half_set_is_an_error() {
        let env = |k: &str| (k == ENV_API_KEY).then(|| "k".to_string());
        assert!(matches!(
            load_with(None, &env),
            Err(ConfigError::HalfSetEnv { .. })
        ));
        let env = |k: &str| (k == ENV_API_URL).then(|| "http://127.0.0.1:1".to_string());
        assert!(matches!(
            load_with(None, &env),
            Err(ConfigError::HalfSetEnv { .. })
        ));
    }

    #[test]
    fn xdg_path() {
        let env = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("/xdg".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(
            default_config_path(&env),
            Some(PathBuf::from("/xdg/vagonfs/config.toml"))
        );
        let env = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("relative".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(
            default_config_path(&env),
            Some(PathBuf::from("/home/u/.config/vagonfs/config.toml"))
        );
        assert_eq!(default_config_path(&|_| None), None);
    }
}
