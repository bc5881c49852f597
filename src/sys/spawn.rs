//! Starting our own helpers with posix_spawn(3): the C library starts the child with
//! clone(CLONE_VM | CLONE_VFORK), so the parent's memory is never marked copy-on-write. A
//! daemon with thousands of containers that forked for every start would pay for it twice:
//! the page-table copy in the fork, then a write fault on every page it touches afterwards
//! (measured: a fifth of the decision loop's time in a burst of 2,000 starts).
//!
//! `std::process::Command` takes the same path, but not once a `pre_exec` closure is set, which
//! is the only way it offers to place a fd at 3; here the fd goes to 3 as a file action.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where one of the child's stdio fds comes from.
#[derive(Debug, Clone, Copy)]
pub enum Io<'a> {
    Inherit,
    Null,
    Fd(BorrowedFd<'a>),
}

/// A program to start with `fd3` at fd 3 and nothing else inherited but stdio (and fds
/// without close-on-exec).
pub struct Spawn<'a> {
    /// The program's path, e.g. `/proc/self/fd/N` of the sealed binary.
    pub program: &'a OsStr,
    /// Every argument, argv[0] first.
    pub args: Vec<&'a OsStr>,
    pub fd3: BorrowedFd<'a>,
    pub stdin: Io<'a>,
    pub stdout: Io<'a>,
    pub stderr: Io<'a>,
    /// Its own process group (a terminal's ^C then reaches only us).
    pub process_group: bool,
}

/// A child started by [`spawn`]. Whoever owns it waits for it (or leaves it to the reaper of
/// all children, `sys::children::reap_others`).
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    status: Option<ExitStatus>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Starts `s` (see the module doc).
pub fn spawn(s: &Spawn<'_>) -> io::Result<Child> {
    let program = cstring(s.program)?;
    let args = s
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<Vec<_>>>()?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut actions = PosixSpawnFileActions::init()?;
    // dup2 of a fd onto itself would keep its close-on-exec flag: move it up first.
    let moved;
    let fd3 = if s.fd3.as_raw_fd() == 3 {
        moved = s.fd3.try_clone_to_owned()?;
        moved.as_raw_fd()
    } else {
        s.fd3.as_raw_fd()
    };
    // The stdio sources are placed before fd 3 is replaced, so one of them may be fd 3.
    for (target, io) in [(0, s.stdin), (1, s.stdout), (2, s.stderr)] {
        match io {
            Io::Inherit => {}
            Io::Null => {
                let flags = if target == 0 {
                    OFlag::O_RDONLY
                } else {
                    OFlag::O_WRONLY
                };
                actions.add_open(target, "/dev/null", flags, Mode::empty())?;
            }
            Io::Fd(fd) if fd.as_raw_fd() == target => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a stdio source must not be that stdio fd itself",
                ))
            }
            Io::Fd(fd) => actions.add_dup2(fd.as_raw_fd(), target)?,
        }
    }
    actions.add_dup2(fd3, 3)?;
    let mut attr = PosixSpawnAttr::init()?;
    let mut flags =
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF;
    if s.process_group {
        flags |= PosixSpawnFlags::POSIX_SPAWN_SETPGROUP;
        attr.set_pgroup(Pid::from_raw(0))?;
    }
    attr.set_flags(flags)?;
    attr.set_sigmask(&SigSet::empty())?;
    // Rust's runtime ignores SIGPIPE; an ignored signal would stay ignored across the exec.
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    attr.set_sigdefault(&defaults)?;
    let pid = posix_spawn(program.as_c_str(), &actions, &attr, &args, &env)?;
    Ok(Child { pid, status: None })
}

fn exit_status(ws: WaitStatus) -> Option<ExitStatus> {
    match ws {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, core) => Some(ExitStatus::from_raw(
            sig as i32 | if core { 0x80 } else { 0 },
        )),
        _ => None,
    }
}

impl Child {
    /// A process we did not start ourselves (another of our processes forked it): it can be
    /// killed, but only its parent can wait for it, so `wait` fails with ECHILD.
    pub fn adopted(pid: i32) -> Child {
        Child {
            pid: Pid::from_raw(pid),
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// SIGKILL, unless it was reaped already.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(self.pid, Signal::SIGKILL).map_err(io::Error::from)
    }

    /// Blocks until it exits.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.status {
                return Ok(st);
            }
            match waitpid(self.pid, None) {
                Ok(ws) => self.status = exit_status(ws),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Its exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(ws) => self.status = exit_status(ws),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.status)
    }
}

/// What [`output`] collected.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Starts `s` with stdin on /dev/null and its stdout and stderr captured (what `s` says of
/// them is overridden), reading both as it runs; at `timeout` it is killed and the result is a
/// `TimedOut` error. Run it inside `sys::children::while_waited`.
pub fn output(s: Spawn<'_>, timeout: Duration) -> io::Result<Output> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut child = spawn(&Spawn {
        stdin: Io::Null,
        stdout: Io::Fd(out_w.as_fd()),
        stderr: Io::Fd(err_w.as_fd()),
        ..s
    })?;
    drop((out_w, err_w));
    let stop = |child: &mut Child, e: io::Error| {
        let _ = child.kill();
        let _ = child.wait();
        e
    };
    let deadline = Instant::now() + timeout;
    // stdout and stderr: each pipe until its end of file, and what came through it.
    let mut pipes = [Some(out_r), Some(err_r)];
    let mut data = [Vec::new(), Vec::new()];
    let mut buf = [0u8; 16384];
    while pipes.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            );
            return Err(stop(&mut child, e));
        }
        let open: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|&i| pipes[i].as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as u32 + 1)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(stop(&mut child, e.into())),
        }
        let ready: Vec<usize> = open
            .iter()
            .zip(&fds)
            .filter(|(_, f)| f.any().unwrap_or(false))
            .map(|(&i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let Some(fd) = &pipes[i] else { continue };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => pipes[i] = None,
                Ok(n) => data[i].extend_from_slice(&buf[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(stop(&mut child, e.into())),
            }
        }
    }
    let status = child.wait()?;
    let [stdout, stderr] = data;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh<'a>(script: &'a str, fd3: BorrowedFd<'a>) -> Spawn<'a> {
        Spawn {
            program: OsStr::new("/bin/sh"),
            args: vec![OsStr::new("sh"), OsStr::new("-c"), OsStr::new(script)],
            fd3,
            stdin: Io::Null,
            stdout: Io::Inherit,
            stderr: Io::Inherit,
            process_group: false,
        }
    }

    #[test]
    fn fd3_stdio_and_exit_status() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let out = output(
            sh("echo out; echo err >&2; echo three >&3; exit 7", w.as_fd()),
            Duration::from_secs(10),
        )
        .unwrap();
        drop(w);
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(7));
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"three\n");
    }

    #[test]
    fn a_child_past_its_timeout_is_killed() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let t0 = Instant::now();
        let err = output(sh("sleep 30", w.as_fd()), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stderr_is_read_after_stdout_closed() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let out = output(
            sh("exec 1>&-; sleep 0.3; echo late >&2", w.as_fd()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, b"");
        assert_eq!(out.stderr, b"late\n");
    }

    #[test]
    fn large_output_is_read_while_it_runs() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let out = output(
            sh("i=0; while [ $i -lt 4000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done", w.as_fd()),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.stdout.len(), 4000 * 41);
    }

    #[test]
    fn process_group_and_kill() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut s = sh("sleep 30", w.as_fd());
        s.process_group = true;
        let mut child = spawn(&s).unwrap();
        let pgid = nix::unistd::getpgid(Some(Pid::from_raw(child.id() as i32))).unwrap();
        assert_eq!(pgid.as_raw(), child.id() as i32);
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert_eq!(child.try_wait().unwrap().and_then(|s| s.signal()), Some(9));
    }
}
