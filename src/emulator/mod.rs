//! A faithful local emulator of the Vagon Files API (being written).
//!
//! Public surface other modules rely on (keep these names):
//! - [`EmulatorArgs`]: the `vagonfs emulator` options (clap);
//! - [`EmulatorConfig`] + [`start`]: run it in-process (the embedded default of `vagonfs mount`,
//!   and the tests), returning a [`RunningEmulator`] with the bound address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `vagonfs emulator` options.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for persistent state (SQLite metadata and file bytes).
    #[arg(long)]
    pub data: PathBuf,
}

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub api_key: String,
    pub api_secret: String,
    pub machines: u32,
    pub quota_bytes: u64,
    pub link_ttl: Duration,
}

/// A running emulator; dropping it does not stop it, [`RunningEmulator::shutdown`] does.
pub struct RunningEmulator {
    pub addr: SocketAddr,
}

impl RunningEmulator {
    /// `http://HOST:PORT`, the API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Start an emulator on the current tokio runtime.
pub async fn start(_cfg: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
    anyhow::bail!("the emulator is being written")
}

pub fn run_cli(_args: EmulatorArgs) -> ExitCode {
    ExitCode::from(2)
}
