//! The launcher side: starts the helper from a sealed copy of our own binary, hands it the
//! plan over the typed channel, and waits for `Started` or `Failed`. A guard kills the helper
//! unless the launch succeeded.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::unistd::Pid;

use crate::runtime::monitor::MONITOR_ARG;
use crate::runtime::plan::ContainerPlan;
use crate::runtime::protocol::{Channel, Event, ExitStatus, Request};
use crate::sys::process::sealed_self_exe;
use crate::sys::spawn::{spawn, Child, Io, Spawn};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("preparing the helper binary: {0}")]
    SealedExe(std::io::Error),
    #[error("starting the helper: {0}")]
    Spawn(std::io::Error),
    #[error("talking to the helper: {0}")]
    Channel(std::io::Error),
    #[error("the helper exited before reporting")]
    HelperGone,
    #[error("{0}")]
    Init(String),
}

/// Kills and reaps the helper on drop unless disarmed.
struct HelperGuard(Option<Child>);

impl HelperGuard {
    fn disarm(mut self) -> Child {
        self.0.take().expect("guard holds the child until disarmed")
    }
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How the container's stdin is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Null,
    Inherit,
}

/// A started container.
#[derive(Debug)]
pub struct Running {
    /// The container's init on the host.
    pub pid: Pid,
    helper: Child,
    channel: Channel,
    /// The pty master of a plan with a `terminal`.
    pub terminal: Option<OwnedFd>,
}

/// A helper started and waiting for its plan. Starting it is independent of the plan, so
/// callers overlap it with preparing the container. Dropped unused, it is killed.
#[derive(Debug)]
pub struct Helper {
    guard: HelperGuard,
    channel: Channel,
}

impl std::fmt::Debug for HelperGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HelperGuard")
            .field(&self.0.as_ref().map(Child::id))
            .finish()
    }
}

/// Starts a helper from the sealed view of our own binary (`exe`, see [`sealed_exe`]), with
/// its channel at fd 3.
pub fn spawn_helper(exe: &OwnedFd, stdin: Stdin) -> Result<Helper, LaunchError> {
    let (ours, theirs) = Channel::pair().map_err(LaunchError::Channel)?;
    // The channel goes to fd 3 in the helper, so the binary must be exec'd from another fd.
    let moved;
    let exe = if exe.as_raw_fd() == 3 {
        moved = exe.try_clone().map_err(LaunchError::SealedExe)?;
        &moved
    } else {
        exe
    };
    let program = format!("/proc/self/fd/{}", exe.as_raw_fd());
    let child = spawn(&Spawn {
        program: program.as_ref(),
        args: ["berth", MONITOR_ARG, "3"].map(AsRef::as_ref).to_vec(),
        fd3: theirs.fd().as_fd(),
        stdin: match stdin {
            Stdin::Null => Io::Null,
            Stdin::Inherit => Io::Inherit,
        },
        stdout: Io::Inherit,
        stderr: Io::Inherit,
        // Its own process group: the terminal's ^C reaches `berth run`, which forwards it.
        process_group: true,
    })
    .map_err(LaunchError::Spawn)?;
    Ok(Helper {
        guard: HelperGuard(Some(child)),
        channel: ours,
    })
}

/// The binary helpers are started from (see `sys::process::sealed_self_exe`), for the state
/// root `root`.
pub fn sealed_exe(root: &Path) -> std::io::Result<OwnedFd> {
    sealed_self_exe(&root.join("empty"))
}

/// A sealed view of our binary and a helper started from it: the whole start-up that does not
/// depend on the container.
pub fn start_helper(root: &Path, stdin: Stdin) -> Result<Helper, LaunchError> {
    let exe = sealed_exe(root).map_err(LaunchError::SealedExe)?;
    spawn_helper(&exe, stdin)
}

impl Helper {
    /// A helper another process of ours forked (the zygote), talking on `channel`.
    pub(crate) fn forked(pid: i32, channel: Channel) -> Helper {
        Helper {
            guard: HelperGuard(Some(Child::adopted(pid))),
            channel,
        }
    }

    /// The helper's pid (it stays as the container's monitor).
    pub fn pid(&self) -> i32 {
        self.guard.0.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Hands the helper its plan and waits until the container runs or failed to start.
    pub fn start(self, plan: &ContainerPlan) -> Result<Running, LaunchError> {
        let Helper { guard, channel } = self;
        channel
            .send(&Request::Start(Box::new(plan.clone())))
            .map_err(LaunchError::Channel)?;
        let mut terminal = None;
        loop {
            match channel
                .recv_with_fd::<Event>()
                .map_err(LaunchError::Channel)?
            {
                Some((Event::Terminal, fd)) => terminal = fd,
                Some((Event::Started { pid }, _)) => {
                    return Ok(Running {
                        pid: Pid::from_raw(pid),
                        helper: guard.disarm(),
                        channel,
                        terminal,
                    })
                }
                Some((Event::Failed { error }, _)) => return Err(LaunchError::Init(error)),
                Some((Event::Exited { .. }, _)) | None => return Err(LaunchError::HelperGone),
            }
        }
    }
}

impl Running {
    /// Leaves the container running on its own: the monitor outlives us and records the exit.
    pub fn detach(self) {}

    /// Blocks until the container's init exits, then reaps the helper.
    pub fn wait(self) -> Result<ExitStatus, LaunchError> {
        self.wait_watching(None, || {})
    }

    /// [`Running::wait`], calling `ready` whenever `watched` becomes readable meanwhile (on
    /// this thread: the caller needs none of its own to watch, e.g., a signal pipe).
    pub fn wait_watching(
        mut self,
        watched: Option<std::os::fd::BorrowedFd<'_>>,
        mut ready: impl FnMut(),
    ) -> Result<ExitStatus, LaunchError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let status = loop {
            if let Some(fd) = watched {
                let mut fds = [
                    PollFd::new(self.channel.fd().as_fd(), PollFlags::POLLIN),
                    PollFd::new(fd, PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(LaunchError::Channel(e.into())),
                }
                let [channel, other] = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
                if other {
                    ready();
                }
                if !channel {
                    continue;
                }
            }
            match self.channel.recv::<Event>().map_err(LaunchError::Channel)? {
                Some(Event::Exited { status }) => break status,
                Some(_) => continue,
                None => {
                    let _ = self.helper.wait();
                    return Err(LaunchError::HelperGone);
                }
            }
        };
        let _ = self.helper.wait();
        Ok(status)
    }
}
