//! `vagonfs ls --live MACHINE [PATH]`: list a folder of a running machine's live disk (its
//! Windows drive, e.g. `C:\Users`) through `POST /machines/{id}/list-content`, with the same
//! credentials as `vagonfs mount`.
//!
//! Subtle cases owned here:
//! - the live disk exists only while the machine runs; the API answers 400 for a machine that
//!   is off and also for a bad path, and 404 for an unknown machine and also for a missing
//!   folder. The two are told apart by the error text and, when that is not conclusive, by one
//!   look at the machine list, so the user reads "machine 2 is not running; start it first"
//!   or "machine 9 was not found", not a bare HTTP status;
//! - without credentials this command refuses with a message saying how to give them: the
//!   embedded demo emulator that `vagonfs mount` falls back to would list an invented disk;
//! - names come from a remote Windows machine: they are printed as received (folders with a
//!   trailing `\`), one per line, control characters escaped so a name cannot rewrite the
//!   terminal.

use std::path::Path;
use std::process::ExitCode;

use crate::api::http::{ClientOptions, HttpFilesApi};
use crate::api::{ApiError, ApiErrorKind, FilesApi, LiveEntry, Machine};
use crate::config::Credentials;

/// Exit status for usage and credential problems.
const EXIT_USAGE: u8 = 2;
/// Exit status when the listing failed.
const EXIT_FAILURE: u8 = 1;
/// Machines asked per page when looking one up.
const MACHINES_PER_PAGE: u32 = 100;
/// Most machine pages read when looking one up (100 000 machines).
const MAX_MACHINE_PAGES: u32 = 1000;
/// Machine statuses meaning the live disk can be listed.
const RUNNING_STATUSES: [&str; 2] = ["ready", "running"];

/// `vagonfs ls` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// List the live disk of a running machine (the only mode, so it may be left out: the
    /// storage is what `vagonfs mount` shows).
    #[arg(long)]
    pub live: bool,
    /// The machine's numeric id.
    pub machine: u64,
    /// Windows folder to list (case does not matter, as on Windows).
    #[arg(default_value = "C:\\")]
    pub path: String,
    /// Print JSON (an array of {"path","name","is_directory"}).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub credentials: crate::config::CredentialsArgs,
    /// API base URL, replacing the one the credentials name.
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
}

/// Why `vagonfs ls --live` failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "no Vagon credentials configured: set VAGON_API_KEY and VAGON_API_SECRET (and \
         VAGON_API_URL), write $XDG_CONFIG_HOME/vagonfs/config.toml, or pass --credentials FILE \
         (the demo emulator has no live disks)"
    )]
    NoCredentials,
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("machine {0} is not running; start it first")]
    NotRunning(u64),
    #[error("machine {0} was not found in this organization")]
    NoSuchMachine(u64),
    #[error("no folder '{path}' on machine {machine}: {message}")]
    NoSuchFolder {
        machine: u64,
        path: String,
        message: String,
    },
    #[error("machine {machine} refused the path '{path}': {message}")]
    BadPath {
        machine: u64,
        path: String,
        message: String,
    },
    #[error("cannot list '{path}' on machine {machine}: {source}")]
    Api {
        machine: u64,
        path: String,
        #[source]
        source: ApiError,
    },
}

impl LiveError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LiveError::NoCredentials | LiveError::Credentials(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// `vagonfs ls --live`.
pub fn run_cli(args: LsArgs) -> ExitCode {
    crate::logging::init("warn", crate::logging::LogTarget::Stderr);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LiveError::Credentials(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| {
            rt.block_on(async {
                let api = connect(args.credentials.credentials.as_deref(), &args.api_url)?;
                list(&api, args.machine, &args.path).await
            })
        });
    match result {
        Ok(entries) => {
            if args.json {
                let items: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "path": e.path,
                            "name": e.name,
                            "is_directory": e.is_directory,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                for entry in &entries {
                    println!("{}", display_name(entry));
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vagonfs ls: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// The HTTP client for the configured credentials (`--api-url` replacing their URL).
fn connect(explicit: Option<&Path>, api_url: &Option<String>) -> Result<HttpFilesApi, LiveError> {
    let creds = crate::config::load_credentials(explicit)
        .map_err(|e| LiveError::Credentials(e.to_string()))?
        .ok_or(LiveError::NoCredentials)?;
    let creds = match api_url {
        Some(url) => Credentials::new(url.clone(), creds.api_key, creds.api_secret)
            .map_err(|e| LiveError::Credentials(format!("--api-url: {e}")))?,
        None => creds,
    };
    HttpFilesApi::new(creds, ClientOptions::default())
        .map_err(|e| LiveError::Credentials(e.to_string()))
}

/// Lists `path` on `machine`, turning the API's answers into clear errors.
pub async fn list(
    api: &dyn FilesApi,
    machine: u64,
    path: &str,
) -> Result<Vec<LiveEntry>, LiveError> {
    let err = match api.list_content(machine, path).await {
        Ok(entries) => return Ok(entries),
        Err(err) => err,
    };
    let message = match &err {
        ApiError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match err.kind() {
        ApiErrorKind::BadRequest => {
            if message.to_ascii_lowercase().contains("not running") {
                return Err(LiveError::NotRunning(machine));
            }
            match find_machine(api, machine).await {
                Some(m) if !is_running(&m) => Err(LiveError::NotRunning(machine)),
                _ => Err(LiveError::BadPath {
                    machine,
                    path: path.to_string(),
                    message,
                }),
            }
        }
        ApiErrorKind::NotFound => match find_machine(api, machine).await {
            None => Err(LiveError::NoSuchMachine(machine)),
            Some(_) => Err(LiveError::NoSuchFolder {
                machine,
                path: path.to_string(),
                message,
            }),
        },
        _ => Err(LiveError::Api {
            machine,
            path: path.to_string(),
            source: err,
        }),
    }
}

fn is_running(machine: &Machine) -> bool {
    RUNNING_STATUSES
        .iter()
        .any(|s| machine.status.eq_ignore_ascii_case(s))
}

/// The machine `id` from the machine list (`None` if absent or the list cannot be read).
async fn find_machine(api: &dyn FilesApi, id: u64) -> Option<Machine> {
    let mut page = 1;
    for _ in 0..MAX_MACHINE_PAGES {
        let listed = api.list_machines(page, MACHINES_PER_PAGE).await.ok()?;
        if let Some(m) = listed.machines.into_iter().find(|m| m.id == id) {
            return Some(m);
        }
        page = listed.next_page.filter(|next| *next > page)?;
    }
    None
}

/// A name for the terminal: control characters escaped, folders with a trailing `\`.
fn display_name(entry: &LiveEntry) -> String {
    let mut out = String::with_capacity(entry.name.len() + 1);
    for c in entry.name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if entry.is_directory {
        out.push('\\');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_safely() {
        let entry = |name: &str, dir: bool| LiveEntry {
            path: format!("C:\\{name}"),
            name: name.to_string(),
            is_directory: dir,
        };
        assert_eq!(display_name(&entry("Users", true)), "Users\\");
        assert_eq!(
            display_name(&entry("a b's \"x\".txt", false)),
            "a b's \"x\".txt"
        );
        assert_eq!(display_name(&entry("évé", false)), "évé");
        assert_eq!(display_name(&entry("x\u{1b}[2Jy", false)), "x\\u{1b}[2Jy");
    }
}
