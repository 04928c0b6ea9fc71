//! vagonfs: mount the file storage of Vagon Teams machines as a local folder.
//!
//! Layers, top to bottom (see `docs/` and each module's note):
//! - [`cli`] / `main.rs`: the `vagonfs` command;
//! - [`fuse`]: the thin `fuser` adapter, translation only;
//! - [`fs`]: the filesystem core, async, no fuser types in its API;
//! - [`api`]: the `FilesApi` trait and its HTTP client;
//! - [`emulator`]: a faithful local server of the Vagon Files API.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod emulator;
pub mod fs;
pub mod fuse;
pub mod helper;
pub mod live;
pub mod logging;
pub mod mount;
