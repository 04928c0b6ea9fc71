//! The one logging setup of every `vagonfs` command (mount, emulator, ls).
//!
//! Subtle cases owned here:
//! - colour (ANSI escapes) only when the log goes to a terminal and `NO_COLOR` is not set
//!   (<https://no-color.org>: any non-empty value); redirected logs, `mount -t vagonfs`, the
//!   systemd journal and `--log-file` get plain text;
//! - `RUST_LOG` wins over the command's own level, so a user can always ask for more;
//! - initialising twice (tests run several commands in one process) is a no-op, not a panic.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::sync::Mutex;

/// Where the log goes.
pub enum LogTarget {
    Stderr,
    /// Appended to this file (never coloured).
    File(File),
}

/// Whether text written to stderr may carry colour: a terminal, and no `NO_COLOR`.
pub fn stderr_wants_colour() -> bool {
    colour_allowed(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The colour rule, from its two inputs.
fn colour_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Log at `level` (a level or a tracing filter; `RUST_LOG` wins) to `target`.
pub fn init(level: &str, target: LogTarget) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match target {
        LogTarget::File(file) => builder
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .try_init(),
        LogTarget::Stderr => builder
            .with_ansi(stderr_wants_colour())
            .with_writer(io::stderr)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
        assert!(!colour_allowed(false, Some(OsStr::new(""))));
    }
}
