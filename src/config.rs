//! Credentials for the Vagon API, as the commands take them: loading, validation and the
//! secret-keeping rules are `vagonfs_api::config`'s (re-exported here); the `--credentials`
//! option ([`CredentialsArgs`]) is the command line's.

use std::path::PathBuf;

pub use vagonfs_api::config::*;

/// The `--credentials` option, for commands that talk to the API.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialsArgs {
    /// TOML file with api_url, api_key, api_secret (mode 600). Without it: the environment
    /// (VAGON_API_KEY, VAGON_API_SECRET, VAGON_API_URL), then $XDG_CONFIG_HOME/vagonfs/config.toml.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
}

impl CredentialsArgs {
    pub fn load(&self) -> Result<Option<Credentials>, ConfigError> {
        load_credentials(self.credentials.as_deref())
    }
}
