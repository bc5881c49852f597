//! Replacing the calling process with another program while handing it one fd at fd 3: how
//! `berth exec` turns itself into the exec helper (see `runtime::exec`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Execs `cmd` in place of the calling process with `fd` placed at fd 3 (and nothing else
/// inherited but stdio and fds without close-on-exec). Returns only on failure.
///
/// The program to run must not be reached through fd 3 itself (e.g. `/proc/self/fd/3`): that fd
/// is replaced before the exec.
pub fn exec_with_fd3(cmd: &mut Command, fd: &OwnedFd) -> io::Error {
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in this process just before execve and calls only dup2 and
    // fcntl, both async-signal-safe; it allocates nothing and touches no shared state. If the
    // exec fails afterwards, fd 3 holds a copy of `fd`, which the caller owns anyway.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                // dup2 onto itself keeps O_CLOEXEC: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.exec()
}

/// Restores the default action of `sig` in the calling process (Rust's runtime ignores
/// SIGPIPE, and an ignored signal stays ignored across execve).
pub fn default_signal(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run in signal context; the
    // previous action (returned) is not a handler we need to keep.
    unsafe { sigaction(sig, &action) }.map(drop)
}
