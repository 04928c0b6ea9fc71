//! Which storage the mount talks to: the Vagon API (credentials found) or the embedded demo
//! emulator (`--demo`, or none configured in an interactive terminal; otherwise missing
//! credentials are an error), checked with one request before mounting: the root's first page,
//! which is kept as the root's listing when it is all of it (a mount's first `ls` or lookup at
//! the root then costs no request).
//!
//! The probe turns the usual first-run mistakes into clear messages before anything is
//! mounted: refused credentials, an unreachable API (with a progress line per retry, then one
//! line), `--machine` naming no machine, and a URL that is not the Vagon API at all: a 404 for
//! the machine is checked with one more request (the machine list), only on that failure.
//!
//! Whichever it is, the API is metered into the mount's [`Metrics`] (`MeteredFilesApi`, and
//! the HTTP client's retries through its retry observer), the probe included.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::client::{StartupProgress, api_cause, connect, error_chain};
use super::{DemoChoice, MountError, MountPlan, demo};
use crate::api::paging::{self, Collected};
use crate::api::{ApiErrorKind, FileEntry, FilesApi, ListQuery, Space};
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
    /// The demo emulator, not a Vagon API (`vagonfs status` says so).
    pub demo: bool,
    /// The storage root's listing, when the probe's page was all of it, and when it was asked:
    /// the mount starts with it cached (`VagonFs::seed_root_listing`).
    pub root_listing: Option<(Collected<FileEntry>, Instant)>,
}

impl Backend {
    /// Stop what was started for this mount (the demo emulator).
    pub async fn shutdown(self) {
        if let Some(emulator) = self.emulator {
            emulator.shutdown().await;
        }
    }
}

/// Find the credentials (or start the demo, when allowed), build the client, probe it.
pub async fn open(plan: &MountPlan) -> Result<Backend, MountError> {
    let metrics = Arc::new(Metrics::new());
    let creds = if plan.demo == DemoChoice::Asked {
        None
    } else {
        match (
            load_credentials(plan.credentials.as_deref())?,
            &plan.api_url,
        ) {
            (Some(creds), Some(url)) => Some(
                Credentials::new(url.clone(), creds.api_key, creds.api_secret)
                    .map_err(|err| MountError::InvalidOption(format!("--api-url: {err}")))?,
            ),
            (None, Some(_)) => {
                return Err(MountError::Credentials(
                    "--api-url needs an API key and secret (VAGON_API_KEY and VAGON_API_SECRET, \
                     or --credentials FILE)"
                        .into(),
                ));
            }
            (creds, None) => creds,
        }
    };
    let backend = match creds {
        Some(creds) => {
            let url = creds.api_url.clone();
            let startup = StartupProgress::new(&url);
            let backend = Backend {
                api: connect(creds, &metrics, Some(startup.clone()))?,
                description: url.clone(),
                identity: url.clone(),
                url,
                metrics: Arc::clone(&metrics),
                emulator: None,
                demo: false,
                root_listing: None,
            };
            let probed = probe(backend.api.as_ref(), &plan.root, &backend.url).await;
            startup.finish();
            Backend {
                root_listing: probed?,
                ..backend
            }
        }
        None if plan.demo == DemoChoice::Never => return Err(MountError::NoCredentials),
        None => {
            let demo = demo::start(&metrics).await?;
            // One clear line, whatever the log level.
            match plan.demo {
                DemoChoice::Asked => eprintln!(
                    "--demo: mounting a local demo emulator at {} (data in {})",
                    demo.url,
                    demo.data_dir.display()
                ),
                _ => eprintln!(
                    "no Vagon credentials configured: mounting a local demo emulator at {} (data \
                     in {}); set VAGON_API_KEY and VAGON_API_SECRET or pass --credentials FILE \
                     to mount your storage",
                    demo.url,
                    demo.data_dir.display()
                ),
            }
            let backend = Backend {
                api: demo.api,
                description: format!("demo emulator at {}", demo.url),
                identity: format!("demo:{}", demo.data_dir.display()),
                url: demo.url.clone(),
                metrics: Arc::clone(&metrics),
                emulator: Some(demo.emulator),
                demo: true,
                root_listing: None,
            };
            Backend {
                root_listing: probe(backend.api.as_ref(), &plan.root, &backend.url).await?,
                ..backend
            }
        }
    };
    info!(backend = %backend.description, "API reachable");
    Ok(backend)
}

/// One request that the mount's root needs anyway: the root's first page, whole, which is
/// the root's listing when no page follows (returned, with when it was asked). A 404 for
/// `--machine` is told apart from a wrong API URL by one more request (only on that failure).
async fn probe(
    api: &dyn FilesApi,
    root: &RootSpec,
    url: &str,
) -> Result<Option<(Collected<FileEntry>, Instant)>, MountError> {
    let first = ListQuery {
        parent_id: None,
        page: 1,
        per_page: paging::PAGE_SIZE,
        search: None,
    };
    let asked = Instant::now();
    let result = match root {
        RootSpec::All => api.list_machines(1, 1).await.map(|_| None),
        RootSpec::Space(space) => api
            .list_files(*space, &first)
            .await
            .map(|page| paging::only_page(page).map(|got| (got, asked))),
    };
    let err = match result {
        Ok(listing) => return Ok(listing),
        Err(err) => err,
    };
    debug!("probe of {url} failed: {}", error_chain(&err));
    match (root, err.kind()) {
        (RootSpec::Space(Space::Machine(id)), ApiErrorKind::NotFound) => {
            // Does the API root answer as the Vagon API at all?
            match api.list_machines(1, 1).await {
                Ok(_) => Err(MountError::NoSuchMachine(*id)),
                Err(check) => {
                    debug!("the machine list of {url} failed too: {check}");
                    Err(MountError::WrongApiUrl {
                        url: url.to_string(),
                    })
                }
            }
        }
        (_, ApiErrorKind::NotFound) => Err(MountError::WrongApiUrl {
            url: url.to_string(),
        }),
        _ => Err(MountError::Unreachable {
            url: url.to_string(),
            cause: api_cause(&err),
            source: Box::new(err),
        }),
    }
}

fn load_credentials(explicit: Option<&Path>) -> Result<Option<Credentials>, MountError> {
    crate::config::load_credentials(explicit)
        .map_err(|err| MountError::Credentials(err.to_string()))
}
