//! Which storage the mount talks to: the Vagon API (credentials found) or an embedded demo
//! emulator (none configured), checked with one cheap request before mounting.
//!
//! The probe turns the usual first-run mistakes into clear messages before anything is
//! mounted: refused credentials, an unreachable API, `--machine` naming no machine.
//!
//! Whichever it is, the API is metered into the mount's [`Metrics`] (`MeteredFilesApi`, and
//! the HTTP client's retries through its retry observer), the probe included.

use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::{MountError, MountPlan, demo};
use crate::api::http::{ClientOptions, HttpFilesApi};
use crate::api::metered::{MeteredFilesApi, retry_observer};
use crate::api::{ApiErrorKind, FilesApi, ListQuery, Space};
use crate::config::Credentials;
use crate::daemon::metrics::Metrics;
use crate::emulator::RunningEmulator;
use crate::fs::RootSpec;

/// The storage behind the mount.
pub struct Backend {
    pub api: Arc<dyn FilesApi>,
    /// For logs: the API URL, and whether it is the demo.
    pub description: String,
    /// What stays the same for this storage across runs (the API URL; the demo's data
    /// folder, as its port changes): keys the spool folder, so recovery finds it again.
    pub identity: String,
    /// The API's base URL (no credentials), for `vagonfs status`.
    pub url: String,
    /// What every layer of this mount counts; `api` is metered into it.
    pub metrics: Arc<Metrics>,
    /// The in-process demo emulator, when there is one.
    emulator: Option<RunningEmulator>,
}

impl Backend {
    /// Stop what was started for this mount (the demo emulator).
    pub async fn shutdown(self) {
        if let Some(emulator) = self.emulator {
            emulator.shutdown().await;
        }
    }
}

/// Find the credentials (or start the demo), build the client, probe it.
pub async fn open(plan: &MountPlan) -> Result<Backend, MountError> {
    let metrics = Arc::new(Metrics::new());
    let creds = match (
        load_credentials(plan.credentials.as_deref())?,
        &plan.api_url,
    ) {
        (Some(creds), Some(url)) => Some(
            Credentials::new(url.clone(), creds.api_key, creds.api_secret)
                .map_err(|err| MountError::InvalidOption(format!("--api-url: {err}")))?,
        ),
        (None, Some(_)) => {
            return Err(MountError::Credentials(
                "--api-url needs an API key and secret (VAGON_API_KEY and VAGON_API_SECRET, or \
                 --credentials FILE)"
                    .into(),
            ));
        }
        (creds, None) => creds,
    };
    let backend = match creds {
        Some(creds) => {
            let url = creds.api_url.clone();
            Backend {
                api: connect(creds, &metrics)?,
                description: url.clone(),
                identity: url.clone(),
                url,
                metrics: Arc::clone(&metrics),
                emulator: None,
            }
        }
        None => {
            let demo = demo::start(&metrics).await?;
            eprintln!(
                "no Vagon credentials configured: mounting a local demo emulator at {} (data in {})",
                demo.url,
                demo.data_dir.display()
            );
            Backend {
                api: demo.api,
                description: format!("demo emulator at {}", demo.url),
                identity: format!("demo:{}", demo.data_dir.display()),
                url: demo.url.clone(),
                metrics: Arc::clone(&metrics),
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

fn load_credentials(explicit: Option<&Path>) -> Result<Option<Credentials>, MountError> {
    crate::config::load_credentials(explicit)
        .map_err(|err| MountError::Credentials(err.to_string()))
}

/// The HTTP client for `creds`, metered into `metrics` (calls, and the client's retries).
pub(super) fn connect(
    creds: Credentials,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn FilesApi>, MountError> {
    let options = ClientOptions {
        on_retry: Some(retry_observer(metrics.clone())),
        ..ClientOptions::default()
    };
    let client = HttpFilesApi::new(creds, options)
        .map_err(|err| MountError::Credentials(err.to_string()))?;
    Ok(Arc::new(MeteredFilesApi::new(client, metrics.clone())))
}
