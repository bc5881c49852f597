//! The end of the machine: every process left is asked to stop, then killed; filesystems are
//! synced and unmounted (remounted read-only where they cannot be); then reboot(2) powers off,
//! reboots or halts. An init never returns from here.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Power;

/// How long the processes left get after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Opens /dev/console on fds 0, 1 and 2 where they are closed.
pub(super) fn console_fds() {
    let missing: Vec<i32> = (0..3)
        .filter(|fd| !Path::new(&format!("/proc/self/fd/{fd}")).exists())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in missing {
        let _ = match fd {
            0 => nix::unistd::dup2_stdin(&console),
            1 => nix::unistd::dup2_stdout(&console),
            _ => nix::unistd::dup2_stderr(&console),
        };
    }
}

/// Reaps children until none is left or `deadline` passes; true when none is left.
fn reap_until(deadline: Instant) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) | Err(_) => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
        }
    }
}

/// SIGTERM to every process but this one, SIGKILL to what is left after the grace.
fn stop_everything() {
    let all = Pid::from_raw(-1);
    if kill(all, Signal::SIGTERM).is_ok() && !reap_until(Instant::now() + TERM_GRACE) {
        eprintln!("berth: processes left after {TERM_GRACE:?}: killing them");
        let _ = kill(all, Signal::SIGKILL);
        reap_until(Instant::now() + Duration::from_secs(2));
    }
}

/// Unmounts every filesystem but the root, deepest first; what cannot be unmounted (the
/// root, one in use) is remounted read-only.
fn unmount_everything() {
    let info = crate::mountinfo::read_own().unwrap_or_default();
    let mut targets = crate::mountinfo::mount_points(&info);
    // The mount table lists parents before their children.
    targets.reverse();
    for t in targets {
        if t == "/" || umount2(t.as_str(), MntFlags::empty()).is_ok() {
            continue;
        }
        let _ = mount(
            None::<&str>,
            t.as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
    }
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
}

/// Ends the machine as `power` says, after the supervisor stopped its containers.
pub fn finish(power: Power) -> ! {
    eprintln!("berth: {}: stopping what is left", power.as_str());
    stop_everything();
    nix::unistd::sync();
    unmount_everything();
    nix::unistd::sync();
    let mode = match power {
        Power::Poweroff => RebootMode::RB_POWER_OFF,
        Power::Reboot => RebootMode::RB_AUTOBOOT,
        Power::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    let err = match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // Exiting would panic the kernel: stay, reaping.
    eprintln!("berth: reboot(2) failed: {err}; staying up");
    loop {
        reap_until(Instant::now() + Duration::from_secs(3600));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What an init does when the supervisor cannot run: stays up, reaps orphans, and ends the
/// machine when told by a signal (SIGTERM: `shutdown`; SIGUSR2 poweroff, SIGUSR1 halt,
/// SIGINT reboot).
pub fn idle(shutdown: Power) -> ! {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let Ok(mut signals) =
        signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2])
    else {
        finish(shutdown)
    };
    loop {
        for sig in signals.wait() {
            match sig {
                SIGCHLD => crate::sys::children::reap_others(),
                _ => finish(power_of(sig, shutdown)),
            }
        }
    }
}

/// What a signal to an init asks for, as busybox init reads them.
pub fn power_of(signal: i32, shutdown: Power) -> Power {
    match signal {
        libc::SIGUSR2 => Power::Poweroff,
        libc::SIGUSR1 => Power::Halt,
        libc::SIGINT => Power::Reboot,
        _ => shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_as_busybox_init_reads_them() {
        for (sig, want) in [
            (libc::SIGTERM, Power::Reboot),
            (libc::SIGUSR2, Power::Poweroff),
            (libc::SIGUSR1, Power::Halt),
            (libc::SIGINT, Power::Reboot),
        ] {
            assert_eq!(power_of(sig, Power::Reboot), want, "{sig}");
        }
        assert_eq!(power_of(libc::SIGTERM, Power::Poweroff), Power::Poweroff);
    }
}
