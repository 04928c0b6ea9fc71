//! vagonfs-fs: the filesystem core ([`fs`]: async, no fuser types in its API) and the thin
//! fuser adapter over it ([`fuse`]: translation only). The storage is reached only through
//! `vagonfs_api::FilesApi`.
//!
//! Module paths read as in the `vagonfs` binary (`crate::fs::…`, `crate::api::…`), which
//! re-exports [`fs`] and [`fuse`] under the same names.

// Every dependency in Cargo.toml is used (dev-dependencies only in tests).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod fs;
pub mod fuse;
pub mod op;

pub use vagonfs_api as api;

// The core's scenario tests run against the emulator (a dev-dependency) and sign with
// credentials loaded by `vagonfs_api::config`.
#[cfg(test)]
use vagonfs_api::config;
#[cfg(test)]
use vagonfs_emulator as emulator;
