//! A container's terminal (`run -t`, `exec -t`) on ours: raw mode while it lasts, and the copy
//! loop between our stdin/stdout and the pty master. The pty itself is always made inside the
//! container, from its own devpts, by the process that runs there.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use serde::{Deserialize, Serialize};

/// A terminal's size, as the pty is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

impl TermSize {
    /// The size of the terminal on `fd`, if it is one.
    pub fn of(fd: BorrowedFd<'_>) -> Option<TermSize> {
        crate::sys::exec::window_size(fd).map(|ws| TermSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        })
    }

    /// Sets the terminal on `fd` (a pty master) to this size.
    pub fn apply(self, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        let ws = libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        crate::sys::exec::set_window_size(fd, &ws)
    }
}

/// A new pty from the devpts our root shows at `/dev/ptmx` (the container's, when called
/// inside it), unlocked: its master and the path of its slave. Errors name the step.
pub fn open_pty() -> Result<(PtyMaster, String), String> {
    let at = |what: &'static str| move |e: Errno| format!("{what}: {e}");
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(at("opening /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(at("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(at("unlockpt"))?;
    let slave = nix::pty::ptsname_r(&master).map_err(at("ptsname"))?;
    Ok((master, slave))
}

/// Opens the pty slave `path` as our controlling terminal (the caller leads a session that has
/// none: opened without O_NOCTTY, it becomes that session's) and puts it on stdin, stdout and
/// stderr. Returns the fd it opened (close-on-exec; the three copies are not).
pub fn attach(path: &str) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    nix::unistd::dup2_stdin(&fd)?;
    nix::unistd::dup2_stdout(&fd)?;
    nix::unistd::dup2_stderr(&fd)?;
    Ok(fd)
}

/// Our stdin's terminal in raw mode (the container's terminal does the line editing and
/// turns ^C into its SIGINT), restored when dropped. Nothing when stdin is not a terminal.
pub struct RawMode(Option<Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

/// Copies the master's output to our stdout and, when `input`, our stdin to the master, until
/// the container's side of the terminal is closed (every process there gone: EIO) or, when
/// `wake` (an fd and what to do when it is readable) returns false.
pub fn relay(
    master: &File,
    input: bool,
    mut wake: Option<(BorrowedFd<'_>, &mut dyn FnMut() -> bool)>,
) {
    let stdin = std::io::stdin();
    let mut buf = [0u8; 16 * 1024];
    let mut stdin_open = input;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if let Some((fd, _)) = &wake {
            fds.push(PollFd::new(*fd, PollFlags::POLLIN));
        }
        let stdin_at = fds.len();
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            match (&*master).read(&mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO (or EOF): the container's side is closed.
                _ => return,
            }
        }
        if let Some((_, on_wake)) = &mut wake {
            if ready[1] && !on_wake() {
                return;
            }
        }
        if stdin_open && ready.get(stdin_at).copied().unwrap_or(false) {
            match stdin.lock().read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = (&*master).write_all(&buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
}
