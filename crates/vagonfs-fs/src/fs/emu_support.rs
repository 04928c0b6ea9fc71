//! Test support: an in-process emulator and an `HttpFilesApi` signed with its credentials, shared
//! by the core's and the write engine's emulator-backed tests.

use std::sync::Arc;

use crate::api::http::{ClientOptions, HttpFilesApi};
use crate::config::Credentials;
use crate::emulator::{EmulatorConfig, RunningEmulator};

/// Start an emulator with `cfg` on the current runtime and a client for it.
pub(crate) async fn start_with_client(cfg: EmulatorConfig) -> (RunningEmulator, Arc<HttpFilesApi>) {
    let running = crate::emulator::start(cfg.clone())
        .await
        .expect("emulator starts");
    let creds = Credentials {
        api_url: running.base_url(),
        api_key: cfg.api_key,
        api_secret: cfg.api_secret,
    };
    let api = Arc::new(HttpFilesApi::new(creds, ClientOptions::default()).expect("client"));
    (running, api)
}
