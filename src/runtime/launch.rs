//! The launcher side: starts the helper from a sealed copy of our own binary, hands it the
//! plan over the typed channel, and waits for `Started` or `Failed`. A guard kills the helper
//! unless the launch succeeded.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::unistd::Pid;

use crate::runtime::monitor::MONITOR_ARG;
use crate::runtime::plan::ContainerPlan;
use crate::runtime::protocol::{Channel, Event, ExitStatus, Request};
use crate::sys::process::{sealed_self_exe, spawn_with_fd3};

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
}

/// Starts the container described by `plan`.
pub fn launch(plan: &ContainerPlan, stdin: Stdin) -> Result<Running, LaunchError> {
    let exe = sealed_self_exe().map_err(LaunchError::SealedExe)?;
    let (ours, theirs) = Channel::pair().map_err(LaunchError::Channel)?;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("berth").arg(MONITOR_ARG).arg("3");
    // Its own process group: the terminal's ^C reaches `berth run`, which forwards it.
    cmd.process_group(0);
    cmd.stdin(match stdin {
        Stdin::Null => Stdio::null(),
        Stdin::Inherit => Stdio::inherit(),
    });
    let child = spawn_with_fd3(&mut cmd, theirs.fd()).map_err(LaunchError::Spawn)?;
    drop(theirs);
    drop::<OwnedFd>(exe);
    let guard = HelperGuard(Some(child));
    ours.send(&Request::Start(Box::new(plan.clone())))
        .map_err(LaunchError::Channel)?;
    match ours.recv::<Event>().map_err(LaunchError::Channel)? {
        Some(Event::Started { pid }) => Ok(Running {
            pid: Pid::from_raw(pid),
            helper: guard.disarm(),
            channel: ours,
        }),
        Some(Event::Failed { error }) => Err(LaunchError::Init(error)),
        Some(Event::Exited { .. }) | None => Err(LaunchError::HelperGone),
    }
}

impl Running {
    /// Blocks until the container's init exits, then reaps the helper.
    pub fn wait(mut self) -> Result<ExitStatus, LaunchError> {
        let status = loop {
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
