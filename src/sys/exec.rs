//! Replacing the calling process with another program while handing it one fd at fd 3: how
//! `berth exec` turns itself into the exec helper (see `runtime::exec`).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Execs `cmd` in place of the calling process with `fd` placed at fd 3 (and nothing else
/// inherited but stdio and fds without close-on-exec). Returns only on failure.
///
/// The program to run must not be reached through fd 3 itself (e.g. `/proc/self/fd/3`): that fd
/// is replaced before the exec.
pub fn exec_with_fd3(cmd: &mut Command, fd: &OwnedFd) -> io::Error {
    crate::sys::process::place_at_fd3(cmd, fd);
    cmd.exec()
}

/// Restores the default action of every signal in the calling process: Rust's runtime ignores
/// SIGPIPE, our caller may have ignored others (`nohup`), and an ignored signal stays ignored
/// across execve. This calls rt_sigaction(2) directly, because the C library refuses to touch
/// the signals it reserves for itself (32 and 33 in glibc), which a caller may still have left
/// ignored; call it just before execve, when nothing of this process needs those handlers.
/// SIGKILL and SIGSTOP are skipped (their action cannot change).
pub fn reset_signal_dispositions() -> io::Result<()> {
    // The kernel's `struct sigaction` (handler, flags, [restorer,] mask): all zeroes is SIG_DFL
    // with no flags and an empty mask, whatever the architecture's field order. 64 bytes is
    // more than any architecture's layout.
    let action = [0u64; 8];
    // The kernel's sigset_t: 64 signals on x86_64 and aarch64 (the architectures the seccomp
    // profile supports; MIPS has 128).
    let sigset_size: libc::size_t = 8;
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `action` (valid, large enough, outlives the call) and
        // writes nothing (oldact is NULL). SIG_DFL installs no handler, so no code of ours can
        // run in signal context afterwards.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                sigset_size,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // A number past the kernel's last signal.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<libc::winsize> {
    use std::os::fd::AsRawFd;
    // SAFETY: winsize is plain old data; TIOCGWINSZ writes into it and nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid open fd (borrowed); `ws` outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some(ws)
}

/// Sets the window size of the terminal on `fd`.
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is a valid open fd (borrowed); TIOCSWINSZ only reads `ws`, which outlives
    // the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
