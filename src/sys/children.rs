//! Child processes the process waits for itself, and the reaping of every other child.
//!
//! A supervisor reaps whatever exits (its monitors, and as PID 1 every orphan) with
//! `waitpid(-1)`, which would also take the exit status of a tool it runs and waits for (`nft`)
//! from under `std::process::Child::wait`. Such a tool runs inside [`while_waited`], during
//! which [`reap_others`] defers; the last waiter to finish does the deferred reaping.

use std::io::{self, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Held shared while a child that is waited for explicitly may exist; exclusively to reap.
static WAITED: RwLock<()> = RwLock::new(());
/// A reap was skipped because a waited-for child might have been taken.
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// Runs `f`, which spawns children and waits for each of them itself, with [`reap_others`]
/// held off; reaps afterwards what was deferred.
pub fn while_waited<R>(f: impl FnOnce() -> R) -> R {
    let result = {
        let _guard = WAITED.read().unwrap_or_else(|e| e.into_inner());
        f()
    };
    if DEFERRED.load(Ordering::Acquire) {
        reap_others();
    }
    result
}

/// Reaps every exited child without blocking, or, while a [`while_waited`] section runs, notes
/// that it must be done when that ends.
pub fn reap_others() {
    let Ok(_guard) = WAITED.try_write() else {
        DEFERRED.store(true, Ordering::Release);
        return;
    };
    DEFERRED.store(false, Ordering::Release);
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

/// Runs `cmd` with `input` on its stdin (none: /dev/null) and its stdout and stderr captured,
/// as a child waited for here (see [`while_waited`]). With `timeout`, a child still running
/// then is killed and the result is a `TimedOut` error; its output is then read once it has
/// exited, so it must fit in the pipes (a tool's short answer).
pub fn output(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Option<Duration>,
) -> io::Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    while_waited(|| {
        let mut child = cmd.spawn()?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            match stdin.write_all(input) {
                // It stopped reading: its exit status says why.
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
                _ => {}
            }
        }
        if let Some(timeout) = timeout {
            let deadline = Instant::now() + timeout;
            while child.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        child.wait_with_output()
    })
}
