//! Living with a mount: what a running vagonfs daemon exposes, and the commands that talk to it.
//!
//! - [`metrics`]: the shared counters ([`metrics::Metrics`]), updated lock-free by every layer,
//!   and their Prometheus text rendering;
//! - [`metrics_http`]: `--metrics-addr`, the HTTP endpoint serving them (loopback unless
//!   explicitly allowed);
//! - [`snapshot`]: [`snapshot::StatusSnapshot`], what `vagonfs status` shows of a mount;
//! - [`control`]: the per-mount Unix control socket (status, graceful or forced unmount),
//!   server and client, and the discovery of live mounts;
//! - [`mounts`]: vagonfs mounts in the kernel's mount table, canonical mount points;
//! - [`status`]: the `vagonfs status` and `vagonfs unmount` commands and their rendering;
//! - [`sync`]: the `vagonfs sync` command (wait until a mount has nothing left to upload).
//!
//! Nothing here depends on the filesystem core: the mount hands the control server a
//! [`control::ControlHandler`] and feeds [`metrics::Metrics`]. The wrapper that meters the API
//! is `crate::api::metered`.

pub mod control;
pub mod metrics;
pub mod metrics_http;
pub mod mounts;
pub mod snapshot;
pub mod status;
pub mod sync;
