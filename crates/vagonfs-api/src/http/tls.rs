//! The one place that builds a `reqwest` client, so every client of the process gets the same TLS.
//!
//! reqwest 0.13 ships rustls over aws-lc-rs by default (a large C library to compile and a
//! bigger binary); the workspace takes reqwest's `rustls-no-provider` feature instead and
//! installs rustls's `ring` provider here, as the process-wide default, before any client is
//! built. Subtle cases:
//! - a reqwest client built before a provider is installed panics in `build()` (TLS is set up
//!   eagerly, even for `http://` URLs): build clients only through [`client_builder`] /
//!   [`client`], tests and hooks included;
//! - installing is idempotent and race-free: a provider already installed (by us or by an
//!   embedding program) is kept;
//! - the certificate verifier is reqwest's default, the platform's trust store
//!   (`rustls-platform-verifier`), so a corporate CA added to the system is honoured.

use std::sync::Once;

/// Installs the `ring` crypto provider as the process default (once; a provider already
/// installed by someone else wins).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A `reqwest` client builder over rustls, with the crypto provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().tls_backend_rustls()
}

/// A `reqwest` client with default settings (for hooks and tests on loopback).
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a default reqwest client always builds once a crypto provider is installed")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_build_with_the_installed_provider() {
        let _ = super::client();
        let _ = super::client();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
