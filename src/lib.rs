//! vagonfs: mount the file storage of Vagon Teams machines as a local folder.
//!
//! Layers, top to bottom (see `docs/ARCHITECTURE.md` and each module's note):
//! - [`cli`] / `main.rs`: the `vagonfs` command;
//! - [`fuse`]: the thin `fuser` adapter, translation only (crate `vagonfs-fs`);
//! - [`fs`]: the filesystem core, async, no fuser types in its API (crate `vagonfs-fs`);
//! - [`api`]: the `FilesApi` trait and its HTTP client (crate `vagonfs-api`);
//! - [`emulator`]: a faithful local server of the Vagon Files API (crate `vagonfs-emulator`).
//!
//! The library crates are re-exported under their module names, so `crate::fs::…`,
//! `vagonfs::api::…` and so on name the same items everywhere.

// Every dependency in Cargo.toml is used (dev-dependencies only in tests).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub use vagonfs_api as api;
pub use vagonfs_emulator as emulator;
pub use vagonfs_fs::{fs, fuse};

pub mod cli;
pub mod config;
pub mod daemon;
pub mod helper;
pub mod live;
pub mod logging;
pub mod mount;
