//! The zygote: one helper process the daemon starts from the sealed binary at its start, which
//! forks every container's monitor on request instead of the daemon exec'ing the binary for
//! each. The monitors then share, copy-on-write, the pages the binary's start-up wrote (its
//! relocated constants, the C library's), which a fresh exec would write again in each of
//! them, and a start skips the exec and the dynamic loading. The zygote is single-threaded,
//! runs nothing but this loop, and ends when the daemon's end of its socket closes. Its
//! children are reaped by the kernel (SIGCHLD ignored); each monitor runs `monitor_main` as
//! an exec'd helper would, in a process group of its own, at the requesting thread's niceness.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};

use crate::runtime::launch::{Helper, LaunchError};
use crate::runtime::monitor;
use crate::runtime::protocol::Channel;
use crate::sys::process::{fork_single_threaded, niceness, set_auto_reap, set_niceness, take_fd};
use crate::sys::spawn::{spawn, Child, Io, Spawn};

/// The argument that selects the zygote mode; the socket's fd number follows it.
pub const ZYGOTE_ARG: &str = "__berth-zygote";

/// Daemon to zygote: fork a monitor whose channel is the fd sent with this.
#[derive(Debug, Serialize, Deserialize)]
struct ForkRequest {
    niceness: i32,
}

/// Zygote to daemon: the monitor's pid, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
struct ForkReply {
    pid: Result<i32, String>,
}

/// The daemon's side. Dropped, its socket closes, which ends the zygote (the daemon's reaper
/// collects it).
pub struct Zygote {
    /// The zygote and its socket; `None` once it failed (monitors are exec'd from then on).
    live: Mutex<Option<(Child, Channel)>>,
    exe: std::sync::Arc<OwnedFd>,
}

impl Zygote {
    /// Starts the zygote from the sealed binary `exe`; without one, every helper is exec'd.
    pub fn start(exe: std::sync::Arc<OwnedFd>) -> Zygote {
        let live = Self::spawn(&exe)
            .map_err(|e| tracing::warn!(error = %e, "no zygote: monitors are exec'd one by one"))
            .ok();
        Zygote {
            live: Mutex::new(live),
            exe,
        }
    }

    fn spawn(exe: &OwnedFd) -> std::io::Result<(Child, Channel)> {
        let (ours, theirs) = Channel::pair()?;
        let program = format!("/proc/self/fd/{}", exe.as_raw_fd());
        let child = spawn(&Spawn {
            program: program.as_ref(),
            args: ["berth", ZYGOTE_ARG, "3"].map(AsRef::as_ref).to_vec(),
            fd3: theirs.fd().as_fd(),
            stdin: Io::Null,
            stdout: Io::Inherit,
            stderr: Io::Inherit,
            process_group: true,
        })?;
        Ok((child, ours))
    }

    /// A helper waiting for its plan, forked by the zygote (or exec'd if the zygote is gone).
    pub fn helper(&self) -> Result<Helper, LaunchError> {
        let (ours, theirs) = Channel::pair().map_err(LaunchError::Channel)?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, zygote)) = live.as_ref() {
            let request = ForkRequest {
                niceness: niceness().unwrap_or(0),
            };
            let reply = zygote
                .send_with_fd(&request, Some(theirs.fd().as_raw_fd()))
                .and_then(|()| zygote.recv::<ForkReply>());
            match reply {
                Ok(Some(ForkReply { pid: Ok(pid) })) => return Ok(Helper::forked(pid, ours)),
                Ok(Some(ForkReply { pid: Err(e) })) => {
                    return Err(LaunchError::Spawn(std::io::Error::other(e)))
                }
                other => {
                    tracing::warn!(reply = ?other.map(|r| r.map(|r| r.pid)), "the zygote is gone: monitors are exec'd from now on");
                    if let Some((mut child, _)) = live.take() {
                        let _ = child.kill();
                    }
                }
            }
        }
        drop(live);
        crate::runtime::launch::spawn_helper(&self.exe, crate::runtime::launch::Stdin::Null)
    }
}

/// Waits until the daemon sends a request (or closes the socket). After
/// `monitor::IDLE_RELEASE` without one, what the start-up and the forks touched of the binary
/// goes back first; the monitors fault in what they run.
fn wait_for_request(socket: &Channel) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let idle = PollTimeout::try_from(monitor::IDLE_RELEASE).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(socket.fd().as_fd(), PollFlags::POLLIN)];
    if let Ok(0) = poll(&mut fds, idle) {
        // An error leaves the next receive to find out (or to block, as before).
        let _ = crate::sys::process::release_pages_and_wait(&[socket.fd().as_fd()]);
    }
}

/// The zygote's loop. Returns its exit code: 0 when the daemon closed the socket.
pub fn zygote_main(fd: RawFd) -> i32 {
    // The daemon placed the socket at this fd for us; nothing else here owns it.
    let socket = Channel::from_fd(take_fd(fd));
    if set_auto_reap(true).is_err() {
        return 125;
    }
    loop {
        wait_for_request(&socket);
        let (request, channel) = match socket.recv_with_fd::<ForkRequest>() {
            Ok(Some((r, Some(fd)))) => (r, fd),
            Ok(None) => return 0,
            Ok(Some((_, None))) | Err(_) => return 125,
        };
        let reply = match fork_single_threaded() {
            Ok(ForkResult::Child) => {
                drop(socket);
                std::process::exit(run_monitor(request.niceness, channel));
            }
            Ok(ForkResult::Parent { child }) => ForkReply {
                pid: Ok(child.as_raw()),
            },
            Err(e) => ForkReply {
                pid: Err(format!("fork: {e}")),
            },
        };
        drop(channel);
        if socket.send(&reply).is_err() {
            return 125;
        }
    }
}

/// In the forked child: the state an exec'd helper starts with, then the monitor.
fn run_monitor(nice: i32, channel: OwnedFd) -> i32 {
    if set_auto_reap(false).is_err() {
        return 125;
    }
    let _ = set_niceness(nice);
    // Its own process group, as an exec'd helper has.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    monitor::monitor_main(channel.into_raw_fd())
}
