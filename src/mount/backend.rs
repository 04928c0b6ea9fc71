//! Which storage the mount talks to: the Vagon API (credentials found) or an embedded demo
//! emulator (none configured), checked with one cheap request before mounting.
//!
//! The probe turns the usual first-run mistakes into clear messages before anything is
//! mounted: refused credentials, an unreachable API, `--machine` naming no machine.

use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::{MountError, MountPlan, demo};
use crate::api::{ApiErrorKind, FilesApi, ListQuery, Space};
use crate::emulator::RunningEmulator;
use crate::fs::RootSpec;

/// The storage behind the mount.
pub struct Backend {
    pub api: Arc<dyn FilesApi>,
    /// For logs: the API URL, and whether it is the demo.
    pub description: String,
    /// The in-process demo emulator, when there is one.
    emulator: Option<RunningEmulator>,
}

impl Backend {
    /// Stop what was started for this mount (the demo emulator).
    pub async fn shutdown(self) {
        // `RunningEmulator::shutdown` is being written; until then the process exit stops it.
        drop(self.emulator);
    }
}

/// Find the credentials (or start the demo), build the client, probe it.
pub async fn open(plan: &MountPlan) -> Result<Backend, MountError> {
    let backend = match load_credentials(plan.credentials.as_deref())? {
        Some(creds) => {
            let url = creds.api_url.clone();
            Backend {
                api: connect(creds)?,
                description: url,
                emulator: None,
            }
        }
        None => {
            let demo = demo::start().await?;
            eprintln!(
                "no Vagon credentials configured: mounting a local demo emulator at {} (data in {})",
                demo.url,
                demo.data_dir.display()
            );
            Backend {
                api: demo.api,
                description: format!("demo emulator at {}", demo.url),
                emulator: Some(demo.emulator),
            }
        }
    };
    probe(backend.api.as_ref(), &plan.root, &backend.description).await?;
    info!(backend = %backend.description, "API reachable");
    Ok(backend)
}

/// One small request that the mount's root needs anyway.
async fn probe(api: &dyn FilesApi, root: &RootSpec, url: &str) -> Result<(), MountError> {
    let first = ListQuery {
        parent_id: None,
        page: 1,
        per_page: 1,
        search: None,
    };
    let result = match root {
        RootSpec::All => api.list_machines(1, 1).await.map(drop),
        RootSpec::Space(space) => api.list_files(*space, &first).await.map(drop),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err) => match (root, err.kind()) {
            (RootSpec::Space(Space::Machine(id)), ApiErrorKind::NotFound) => {
                Err(MountError::NoSuchMachine(*id))
            }
            _ => Err(MountError::Unreachable {
                url: url.to_string(),
                source: err,
            }),
        },
    }
}

// Until `crate::config::Credentials::load` and `crate::api::http::HttpFilesApi` are on main
// (being written in parallel): the names the mount codes against.

/// API location and key pair.
pub struct Credentials {
    pub api_url: String,
    pub api_key: String,
    pub api_secret: String,
}

fn load_credentials(explicit: Option<&Path>) -> Result<Option<Credentials>, MountError> {
    if let Some(path) = explicit {
        return Err(MountError::Credentials(format!(
            "{}: credentials files are not supported by this build yet",
            path.display()
        )));
    }
    match (
        std::env::var("VAGON_API_KEY"),
        std::env::var("VAGON_API_SECRET"),
    ) {
        (Ok(api_key), Ok(api_secret)) => Ok(Some(Credentials {
            api_url: std::env::var("VAGON_API_URL")
                .unwrap_or_else(|_| "https://api.vagon.io".into()),
            api_key,
            api_secret,
        })),
        _ => Ok(None),
    }
}

pub(super) fn connect(_creds: Credentials) -> Result<Arc<dyn FilesApi>, MountError> {
    Err(MountError::Credentials(
        "the HTTP client is not in this build yet".into(),
    ))
}
