//! A faithful local emulator of the Vagon Files API (`vagonfs emulator`, and in process for the
//! embedded default of `vagonfs mount` and for tests).
//!
//! It serves every endpoint of `docs/vagon-files-api.md` under `/organization-management/v1`,
//! with the contract's HMAC check, envelope and JSON:API shapes, on an axum router driven by our
//! own hyper accept loop (so an injected reset can really drop a connection). State lives in a
//! data folder (SQLite metadata + blob files, see [`store`]), so a restart on the same folder
//! keeps every file. Machines: `--machines N` (default 2), machine 1 "ready" with a live disk
//! for `list-content`, the others "off"; each machine and the shared storage has its own quota.
//!
//! Besides the API (see [`routes`] for the layering):
//! - presigned data URLs on the emulator's own host: `PUT /_data/parts/{id}/{n}`,
//!   `GET /_data/files/{id}`, `GET /_data/downloads/{id}`, each with `exp` and `sig` ([`presign`]);
//! - test hooks, no HMAC: `GET /_emulator/stats`, `POST /_emulator/reset-stats`,
//!   `GET|POST /_emulator/faults`, `POST /_emulator/raw-entry` (bodies in `routes/admin.rs`).
//!
//! Public surface: [`EmulatorArgs`] (clap), [`EmulatorConfig`] + [`start`] returning a
//! [`RunningEmulator`] (`addr`, `base_url()`, `stats()`, `set_faults()`, `shutdown()`), and
//! [`run_cli`], which prints exactly one line `vagonfs emulator listening on http://HOST:PORT`
//! to stdout (the key, the secret and a ready `vagonfs mount` line go to stderr) and runs until
//! SIGINT/SIGTERM.
//!
//! Shutdown is graceful: the listener closes, open connections finish their current request
//! (bounded by [`SHUTDOWN_GRACE`]), running zip jobs are awaited, and the data folder's lock is
//! released once the last request is done, so a new emulator may open the same folder at once.

// Every dependency in Cargo.toml is used (dev-dependencies only in tests).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod auth;
pub mod faults;
pub mod live;
pub mod presign;
pub mod reply;
pub mod routes;
pub mod stats;
pub mod store;
pub mod zip;

// `crate::emulator::…` and `crate::api::…` read as they do in the `vagonfs` binary.
use crate as emulator;
use vagonfs_api as api;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use faults::Faults;
use faults::parse_rate;

/// Default quota of each storage: 25 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 25 * 1024 * 1024 * 1024;
/// Default lifetime of presigned download links (15 minutes).
pub const DEFAULT_LINK_TTL_SECS: u64 = 900;
/// Default lifetime of presigned part-upload URLs (1 hour: a big upload takes a while).
pub const DEFAULT_UPLOAD_LINK_TTL_SECS: u64 = 3600;
/// Default number of machines.
pub const DEFAULT_MACHINES: u32 = 2;
/// Most machines an emulator may have.
pub const MAX_MACHINES: u32 = 1000;
/// Longest wait for open connections when shutting down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Log filter of `vagonfs emulator` unless `RUST_LOG` says otherwise: one line per request.
pub const CLI_LOG_FILTER: &str = "info,vagonfs_emulator::routes=debug";
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `vagonfs emulator` options.
#[derive(Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for persistent state (SQLite metadata and file bytes); created if missing.
    #[arg(long)]
    pub data: PathBuf,
    /// API key clients must sign with.
    #[arg(long, env = "VAGONFS_EMULATOR_API_KEY", default_value = "demo-key")]
    pub api_key: String,
    /// API secret clients must sign with.
    #[arg(
        long,
        env = "VAGONFS_EMULATOR_API_SECRET",
        default_value = "demo-secret",
        hide_env_values = true
    )]
    pub api_secret: String,
    /// Number of machines (machine 1 is running, the others are off).
    #[arg(long, default_value_t = DEFAULT_MACHINES, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_MACHINES)))]
    pub machines: u32,
    /// Quota of each storage (shared, and each machine's), bytes.
    #[arg(long, default_value_t = DEFAULT_QUOTA_BYTES)]
    pub quota_bytes: u64,
    /// Lifetime of presigned download links, seconds.
    #[arg(long, default_value_t = DEFAULT_LINK_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub link_ttl: u64,
    /// Lifetime of presigned part-upload URLs, seconds.
    #[arg(long, default_value_t = DEFAULT_UPLOAD_LINK_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_link_ttl: u64,
    /// Share (0..1) of API and data requests answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Share (0..1) of API and data requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Added latency per API and data request, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share (0..1) of data transfers whose connection is dropped mid-body.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
}

impl std::fmt::Debug for EmulatorArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&EmulatorConfig::from_args(self), f)
    }
}

impl std::fmt::Debug for EmulatorConfig {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<hidden>")
            .field("machines", &self.machines)
            .field("quota_bytes", &self.quota_bytes)
            .field("link_ttl", &self.link_ttl)
            .field("upload_link_ttl", &self.upload_link_ttl)
            .field("faults", &self.faults)
            .finish()
    }
}

/// How to run an emulator.
#[derive(Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub api_key: String,
    pub api_secret: String,
    pub machines: u32,
    /// Quota of each storage, bytes.
    pub quota_bytes: u64,
    /// Lifetime of presigned download links.
    pub link_ttl: Duration,
    /// Lifetime of presigned part-upload URLs.
    pub upload_link_ttl: Duration,
    /// Fault injection at start (changeable at runtime).
    pub faults: Faults,
}

impl EmulatorConfig {
    /// Defaults: loopback, any free port, demo credentials, 2 machines, 25 GiB, 15 min links,
    /// no faults.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            api_key: "demo-key".into(),
            api_secret: "demo-secret".into(),
            machines: DEFAULT_MACHINES,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            link_ttl: Duration::from_secs(DEFAULT_LINK_TTL_SECS),
            upload_link_ttl: Duration::from_secs(DEFAULT_UPLOAD_LINK_TTL_SECS),
            faults: Faults::default(),
        }
    }

    pub fn from_args(args: &EmulatorArgs) -> Self {
        EmulatorConfig {
            listen: args.listen,
            data_dir: args.data.clone(),
            api_key: args.api_key.clone(),
            api_secret: args.api_secret.clone(),
            machines: args.machines,
            quota_bytes: args.quota_bytes,
            link_ttl: Duration::from_secs(args.link_ttl),
            upload_link_ttl: Duration::from_secs(args.upload_link_ttl),
            faults: Faults {
                fail_rate: args.fail_rate,
                throttle_rate: args.throttle_rate,
                latency_ms: args.latency_ms,
                reset_rate: args.reset_rate,
            },
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.api_key.is_empty(), "the API key must not be empty");
        anyhow::ensure!(
            !self.api_key.contains(':'),
            "the API key must not contain ':'"
        );
        anyhow::ensure!(
            !self.api_secret.is_empty(),
            "the API secret must not be empty"
        );
        anyhow::ensure!(
            self.machines <= MAX_MACHINES,
            "at most {MAX_MACHINES} machines"
        );
        anyhow::ensure!(i64::try_from(self.quota_bytes).is_ok(), "quota too large");
        Ok(self.faults.validate()?)
    }
}

/// The per-connection kill switch a handler uses to drop its connection (injected resets).
#[derive(Debug, Clone)]
pub struct ConnectionKill(pub CancellationToken);

/// What every handler sees.
pub struct EmulatorState {
    pub store: Arc<store::Store>,
    pub auth: auth::Authenticator,
    pub presign: presign::Presigner,
    pub faults: faults::FaultSwitch,
    pub stats: stats::Stats,
    pub config: EmulatorConfig,
    /// The bound address (for links when a request has no usable `Host`).
    pub addr: SocketAddr,
    jobs: Mutex<Vec<JoinHandle<()>>>,
}

pub type AppState = Arc<EmulatorState>;

impl EmulatorState {
    /// Keep a background job so that shutdown can wait for it.
    pub fn track_job(&self, job: JoinHandle<()>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|j| !j.is_finished());
        jobs.push(job);
    }

    fn take_jobs(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A running emulator; dropping it does not stop it, [`RunningEmulator::shutdown`] does.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    state: AppState,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://HOST:PORT`, the API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request counts by endpoint family (see [`stats::FAMILIES`]).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.state.stats.snapshot()
    }

    /// Most requests of each family handled at once (see [`stats::Stats::peaks`]).
    pub fn peaks(&self) -> BTreeMap<String, u64> {
        self.state.stats.peaks()
    }

    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    pub fn faults(&self) -> Faults {
        self.state.faults.get()
    }

    /// Change fault injection; refused when a rate is outside 0..1.
    pub fn set_faults(&self, faults: Faults) -> Result<(), faults::FaultError> {
        self.state.faults.set(faults)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.state.config.data_dir
    }

    /// Stop accepting, let open requests finish (bounded), wait for zip jobs.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.server.await {
            tracing::warn!(error = %e, "emulator server task ended abnormally");
        }
        for job in self.state.take_jobs() {
            let _ = job.await;
        }
    }
}

/// Start an emulator on the current tokio runtime: opens the data folder, binds, spawns the
/// server and returns at once.
pub async fn start(cfg: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
    cfg.validate()?;
    let data_dir = cfg.data_dir.clone();
    let (machines, quota) = (u64::from(cfg.machines), cfg.quota_bytes);
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<store::Store> {
        let store = store::Store::open(&data_dir, machines, quota)
            .with_context(|| format!("opening the data folder {}", data_dir.display()))?;
        if machines >= routes::READY_MACHINE {
            live::seed(&live::machine_root(
                &store.dirs().live,
                routes::READY_MACHINE,
            ))
            .context("creating the live disk")?;
        }
        Ok(store)
    })
    .await??;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let built = routes::build();
    let state = Arc::new(EmulatorState {
        presign: presign::Presigner::new(store.presign_key()),
        store: Arc::new(store),
        auth: auth::Authenticator::new(&cfg.api_key, &cfg.api_secret),
        faults: faults::FaultSwitch::new(cfg.faults),
        stats: stats::Stats::new(Arc::new(built.families.clone())),
        config: cfg,
        addr,
        jobs: Mutex::new(Vec::new()),
    });
    let app = routes::app(state.clone(), built);
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, app, stop.clone()));
    tracing::info!(%addr, "emulator started");
    Ok(RunningEmulator {
        addr,
        state,
        stop,
        server,
    })
}

/// Accept connections until `stop`, then let them finish (bounded by [`SHUTDOWN_GRACE`]).
async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, app.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
        connections.shutdown().await;
    }
}

/// Serve one HTTP/1.1 connection; dropped at once when a handler pulls its kill switch.
async fn serve_connection(stream: TcpStream, app: Router, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let kill = CancellationToken::new();
    let handler_kill = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handler_kill.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = kill.cancelled() => tracing::debug!("connection dropped (injected reset)"),
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = kill.cancelled() => {}
            }
        }
    }
}

/// `vagonfs emulator`: run until SIGINT/SIGTERM. Exit 2 on bad arguments, 1 when it cannot
/// start. The caller sets up logging first (at [`CLI_LOG_FILTER`]).
pub fn run_cli(args: EmulatorArgs) -> ExitCode {
    let cfg = EmulatorConfig::from_args(&args);
    if let Err(e) = cfg.validate() {
        eprintln!("vagonfs emulator: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vagonfs emulator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (key, secret) = (cfg.api_key.clone(), cfg.api_secret.clone());
    runtime.block_on(async move {
        // Before the listening line: a script that signals as soon as it has read the line
        // must stop the emulator, not kill it.
        let signals = shutdown_signals();
        let emulator = match start(cfg).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("vagonfs emulator: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout().lock();
        let printed = writeln!(out, "vagonfs emulator listening on {}", emulator.base_url())
            .and_then(|()| out.flush());
        drop(out);
        // On stderr: stdout keeps its one line for scripts that read the URL.
        eprintln!(
            "key {key}, secret {secret}; mount it with:\n  VAGON_API_URL={url} VAGON_API_KEY={key} \
             VAGON_API_SECRET={secret} vagonfs mount --machine 1 DIR\nCtrl-C to stop.",
            url = emulator.base_url(),
        );
        if let Err(e) = printed {
            tracing::warn!(error = %e, "could not print the listening line");
        }
        match signals {
            Ok(signalled) => signalled.await,
            Err(e) => tracing::error!(error = %e, "cannot wait for signals; stopping"),
        }
        tracing::info!("stopping");
        emulator.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Takes over SIGTERM and SIGINT now; the future ends when one of them arrives.
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
