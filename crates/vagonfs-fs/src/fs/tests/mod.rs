//! The core's scenario tests, in one place with one driver ([`driver`]): no kernel, and no
//! network but loopback to an emulator in this process. Unit tests of one module stay inline
//! in that module; end-to-end tests through a real mount live in `tests/`.
//!
//! - [`entries`]: what the kernel is told (negative entries, mknod, listings through a
//!   `DirectoryReplier`).
//! - [`core`]: browsing, names and errors against the in-memory double (`api::mem`) in the
//!   fault injector (`api::faulty`); [`core_read`]: reading, the same way. Requests are
//!   counted, never timed; [`core_outage`]: revalidation and outage, the same way.
//! - [`write`]: the write path through `VagonFs`; [`write_both`]: the scenarios that only look
//!   at what the server holds, run against both the double and the emulator (`on_both!`).
//! - [`engine`]: the write-back engine (background uploads, order per name, conflicts);
//!   [`engine_room`]: the quota and the spool bound seen through it.
//! - [`uploader`], [`uploader_emulator`]: the spool, journal and uploader below `VagonFs`;
//!   [`uploader_life`]: recovery of an earlier run's spools, and the spool folder's life.
//! - [`emulator`]: browsing and reading through the real HTTP client against the emulator.
//! - [`dir_emulator`]: folder listings through the real HTTP client against the emulator
//!   (parallel pages, lookups answered by the page holding the name, forgetting one name).
//! - [`model`]: a model-based property test of the write engine; [`model_findings`]: the
//!   inputs it found failing, kept as named tests.
//! - [`trash`]: the merged trash of the `--all` root (GLib's trash, restore, Empty Trash).
//! - [`walk`]: folder walks, whose next files are fetched ahead.
//! - [`moves`]: folder moves (files moved `--transfers` at a time; the old folder kept with
//!   what another client put there).

#[macro_use]
mod driver;

mod core;
mod core_outage;
mod core_read;
mod deletes;
mod dir_emulator;
mod emulator;
mod engine;
mod engine_room;
mod entries;
mod model;
mod model_findings;
mod moves;
mod new_folders;
mod trash;
mod tree_walk;
mod uploader;
mod uploader_emulator;
mod uploader_life;
mod walk;
mod write;
mod write_both;
