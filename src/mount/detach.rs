//! `--daemon`: fork, and let the parent's exit status say whether the mount came up.
//!
//! The parent waits on a pipe; the child (in a new session, stdio still inherited) runs the
//! mount and writes one report: `0\n` when the mount is ready, or `<status>\n<message>` when it
//! failed. The parent prints the message and exits with that status. A child that dies without
//! a report (killed, panicked) makes the parent exit 1 with a message saying so.
//!
//! Subtle cases: the child leaves the caller's working directory (all paths were made absolute
//! before); fork happens before any thread exists (the caller's duty: no tokio runtime, no
//! logging thread); the pipe is close-on-exec so helpers spawned later (fusermount) do not keep
//! it open; once ready, the child points stdin/stdout/stderr at /dev/null *before* reporting, so
//! a parent whose output is captured by a pipe sees EOF as soon as the parent exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::unistd::ForkResult;

use super::{EXIT_FAILURE, MountError};

/// The report a ready child sends.
const READY: &str = "0\n";

/// Which side of the fork we are on.
pub enum Forked {
    /// The parent, after the child reported: the status to exit with.
    Parent(ExitCode),
    /// The child: report through this once the mount is ready or has failed.
    Child(Readiness),
}

/// The child's end of the report pipe.
pub struct Readiness {
    pipe: File,
}

impl Readiness {
    /// The mount is ready: detach stdio and tell the parent to exit 0.
    pub fn ready(mut self) {
        detach_stdio();
        let _ = self.pipe.write_all(READY.as_bytes());
    }

    /// The mount failed: the parent prints `message` and exits with `status`.
    pub fn failed(mut self, status: u8, message: &str) {
        let _ = write!(self.pipe, "{status}\n{message}");
    }
}

/// Fork. Must be called while the process has a single thread.
pub fn fork() -> Result<Forked, MountError> {
    let io = |what| {
        move |err: nix::Error| MountError::Io {
            what,
            source: err.into(),
        }
    };
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    // SAFETY: the caller guarantees no other thread exists, so the child's copy of the
    // process is consistent (no lock held by a thread that does not exist in the child).
    match unsafe { nix::unistd::fork() }.map_err(io("fork"))? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            Ok(Forked::Parent(wait_for_child(read_end)))
        }
        ForkResult::Child => {
            drop(read_end);
            // A new session: no controlling terminal, so no SIGHUP when the terminal closes.
            nix::unistd::setsid().map_err(io("setsid"))?;
            // Do not keep the caller's working directory busy (paths are absolute by now).
            nix::unistd::chdir("/").map_err(io("chdir /"))?;
            Ok(Forked::Child(Readiness {
                pipe: File::from(write_end),
            }))
        }
    }
}

/// Parent: read the child's report and turn it into our exit status.
fn wait_for_child(read_end: OwnedFd) -> ExitCode {
    let mut report = String::new();
    let read = File::from(read_end).read_to_string(&mut report);
    let (status, message) = match report.split_once('\n') {
        Some((status, message)) => (status.trim().parse::<u8>().ok(), message),
        None => (None, ""),
    };
    match (read, status) {
        (Ok(_), Some(0)) => ExitCode::SUCCESS,
        (Ok(_), Some(status)) => {
            eprintln!("vagonfs mount: {message}");
            ExitCode::from(status)
        }
        (Err(err), _) => {
            eprintln!("vagonfs mount: cannot read the background process's report: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
        (Ok(_), None) => {
            eprintln!("vagonfs mount: the background process exited before the mount was ready");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Point stdin, stdout and stderr at /dev/null.
fn detach_stdio() {
    let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
}
