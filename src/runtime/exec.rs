//! `berth exec`: runs one more process inside a running container, with the container's
//! namespaces, cgroup, credentials, capabilities, no_new_privs and seccomp profile.
//!
//! The CLI decides an [`ExecPlan`] (pure data) from what the daemon reports about the container
//! and from its init's /proc entries, then replaces itself with a sealed copy of our binary in
//! the hidden exec mode ([`EXEC_ARG`]), which reads the plan from fd 3. That helper is
//! single-threaded and fresh from exec: it joins the cgroup and the namespaces, forks the
//! command into the container's pid namespace, forwards signals to it and exits with its status.
//!
//! Owns: the exec plan and the exec helper. Must not touch: the container's own setup (see
//! `runtime::monitor`), cgroup creation, the daemon's state.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{fstat, Mode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, chroot, execve, fchdir, ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::runtime::protocol::Channel;
use crate::runtime::{capabilities, seccomp, terminal};
use crate::spec::ValidatedSpec;
use crate::state::Instance;
use crate::sys::process::{close_fds_at_exec, fork_single_threaded, take_fd};

/// The argument that selects the exec helper mode; the channel's fd number follows it.
pub const EXEC_ARG: &str = "__berth-exec";

/// berth's own failure (docker's convention).
pub const EXIT_SETUP: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// The command was not found in the container.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Namespaces joined, in nsenter's order (the user namespace is not used by berth). The mount
/// namespace comes last: after it, host paths are out of reach.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    // nix has no name for CLONE_NEWTIME.
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Signals the helper passes on to the command when another process sends them to it. The
/// ones a terminal sends to its foreground process group already reach the command directly.
const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Errors from deciding or starting an exec, on the CLI side and in the helper.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {name} is not running")]
    NotRunning { name: String },
    #[error("container {name}: its init (pid {pid}) has exited")]
    InitGone { name: String, pid: i32 },
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: &'static str },
    #[error("container {name}: {source}")]
    Capabilities {
        name: String,
        #[source]
        source: capabilities::CapError,
    },
    #[error("preparing the helper binary: {0}")]
    SealedExe(std::io::Error),
    #[error("passing the plan to the helper: {0}")]
    Channel(std::io::Error),
    #[error("starting the helper: {0}")]
    Spawn(std::io::Error),
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

fn step<E: Into<std::io::Error>>(step: impl Into<String>) -> impl FnOnce(E) -> ExecError {
    let step = step.into();
    move |e| ExecError::Step {
        step,
        source: e.into(),
    }
}

/// Everything the exec helper does, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// The container's name (for messages).
    pub name: String,
    /// The container's init on the host, proved by its start time.
    pub pid: i32,
    pub start_time: u64,
    /// argv; `args[0]` is looked up in `env`'s PATH inside the container when it has no '/'.
    pub args: Vec<String>,
    /// `KEY=value`: the init's environment (the container's).
    pub env: Vec<String>,
    /// The init's effective ids and supplementary groups.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The working directory in the container; `None` = the init's current one.
    pub cwd: Option<String>,
    /// Capability names kept in the bounding set (and effective for root).
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    /// RLIMIT_NOFILE (soft, hard) of the init, when it could be read.
    pub nofile: Option<(u64, u64)>,
    /// The files the helper writes "0" into to join the container's cgroup.
    pub cgroup_procs: Vec<PathBuf>,
    /// Whether the command gets our stdin (`-i`) or /dev/null.
    pub interactive: bool,
    /// `-t`: the command runs on a terminal of the container's own devpts, relayed to ours.
    #[serde(default)]
    pub tty: bool,
    /// The command is SIGKILLed when the helper dies (a health probe killed at its timeout).
    #[serde(default)]
    pub die_with_helper: bool,
}

/// The init's credentials, from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Splits `/proc/<pid>/environ` into `KEY=value` strings (entries without '=' are dropped).
pub fn parse_environ(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .filter(|e| e.contains('='))
        .collect()
}

/// The effective uid and gid (second field of `Uid:`/`Gid:`) and the `Groups:` list.
pub fn parse_ids(status: &str) -> Option<Ids> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let gid = field("Gid:")?.nth(1)?.parse().ok()?;
    let groups = field("Groups:")?
        .map(|g| g.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    Some(Ids { uid, gid, groups })
}

/// The `Max open files` (soft, hard) of `/proc/<pid>/limits`; `unlimited` is RLIM_INFINITY.
pub fn parse_nofile(limits: &str) -> Option<(u64, u64)> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let value = |s: &str| match s {
        "unlimited" => Some(libc::RLIM_INFINITY),
        n => n.parse().ok(),
    };
    let mut f = rest.split_whitespace();
    Some((value(f.next()?)?, value(f.next()?)?))
}

/// What an exec needs to know of the container, from the daemon.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub spec: &'a ValidatedSpec,
    pub instance: Option<&'a Instance>,
    /// `ContainerCgroup::join_files()` of the instance's cgroup.
    pub cgroup_procs: Vec<PathBuf>,
}

/// Decides the exec: the container's env, credentials and limits are read from its init's
/// /proc entries (the init is proved by its start time before and after), the capabilities
/// from the spec, as the container got them.
pub fn plan(
    target: &Target,
    args: Vec<String>,
    interactive: bool,
    tty: bool,
) -> Result<ExecPlan, ExecError> {
    let name = target.name.to_string();
    let inst = target
        .instance
        .ok_or_else(|| ExecError::NotRunning { name: name.clone() })?;
    let (pid, start) = (inst.init_pid, inst.init_start);
    let gone = || ExecError::InitGone {
        name: name.clone(),
        pid,
    };
    if !crate::state::is_same_process(pid, start) {
        return Err(gone());
    }
    let read = |file: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        fs::read(&path).map_err(|source| ExecError::Proc { path, source })
    };
    let env = parse_environ(&read("environ")?);
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let ids = parse_ids(&String::from_utf8_lossy(&read("status")?)).ok_or(ExecError::Parse {
        path: status_path,
        what: "no Uid, Gid or Groups line",
    })?;
    let nofile = parse_nofile(&String::from_utf8_lossy(&read("limits")?));
    if !crate::state::is_same_process(pid, start) {
        return Err(gone());
    }
    let caps = capabilities::effective_set(&target.spec.cap_add, &target.spec.cap_drop).map_err(
        |source| ExecError::Capabilities {
            name: name.clone(),
            source,
        },
    )?;
    let mut capabilities: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    capabilities.sort();
    Ok(ExecPlan {
        name,
        pid,
        start_time: start,
        args,
        env,
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups,
        cwd: target.spec.workdir.clone(),
        capabilities,
        no_new_privileges: true,
        seccomp: true,
        nofile,
        cgroup_procs: target.cgroup_procs.clone(),
        interactive,
        tty,
        die_with_helper: false,
    })
}

/// The exec helper as a program to run from `exe` (a sealed copy of our binary: a process in
/// the container can reach the helper's /proc/PID/exe, so it must not be the binary on disk),
/// with the plan queued on the channel end that must be placed at the child's fd 3.
pub struct HelperCommand {
    /// `/proc/self/fd/N` of the sealed binary.
    program: String,
    interactive: bool,
    pub fd3: Channel,
    /// A copy of `exe` when it was fd 3 itself (which is replaced by the channel).
    _exe: Option<OwnedFd>,
}

const HELPER_ARGS: [&str; 3] = ["berth", EXEC_ARG, "3"];

impl HelperCommand {
    /// As a child of this process, started by posix_spawn (see `sys::spawn`).
    pub fn spawn(&self) -> crate::sys::spawn::Spawn<'_> {
        use crate::sys::spawn::Io;
        crate::sys::spawn::Spawn {
            program: self.program.as_ref(),
            args: HELPER_ARGS.iter().map(|a| a.as_ref()).collect(),
            fd3: self.fd3.fd().as_fd(),
            stdin: if self.interactive {
                Io::Inherit
            } else {
                Io::Null
            },
            stdout: Io::Inherit,
            stderr: Io::Inherit,
            process_group: false,
        }
    }
}

pub fn helper_command(exe: &OwnedFd, plan: &ExecPlan) -> Result<HelperCommand, ExecError> {
    let (ours, theirs) = Channel::pair().map_err(ExecError::Channel)?;
    // The message stays queued in the helper's end after ours closes.
    ours.send(plan).map_err(ExecError::Channel)?;
    let moved = if std::os::fd::AsRawFd::as_raw_fd(exe) == 3 {
        Some(exe.try_clone().map_err(ExecError::SealedExe)?)
    } else {
        None
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(moved.as_ref().unwrap_or(exe));
    Ok(HelperCommand {
        program: format!("/proc/self/fd/{fd}"),
        interactive: plan.interactive,
        fd3: theirs,
        _exe: moved,
    })
}

/// Replaces the calling process with the exec helper, with the plan waiting on fd 3. Returns
/// only on failure.
pub fn exec(root: &std::path::Path, plan: &ExecPlan) -> ExecError {
    let exe = match crate::runtime::launch::sealed_exe(root) {
        Ok(fd) => fd,
        Err(e) => return ExecError::SealedExe(e),
    };
    let h = match helper_command(&exe, plan) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let mut cmd = Command::new(&h.program);
    cmd.arg0(HELPER_ARGS[0]).args(&HELPER_ARGS[1..]);
    if !h.interactive {
        cmd.stdin(Stdio::null());
    }
    ExecError::Spawn(crate::sys::exec::exec_with_fd3(&mut cmd, h.fd3.fd()))
}

/// Entry point of the exec helper mode. Returns its exit code: the command's, 128 + the signal
/// that ended it, or 125/126/127 for berth's own failures.
pub fn exec_main(channel_fd: RawFd) -> i32 {
    // Until the command's execve, the helper and its child are reachable from the container
    // (the child is in its pid namespace): not dumpable, no ptrace, no /proc/PID/mem.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("berth: exec: prctl(PR_SET_DUMPABLE): {e}");
        return EXIT_SETUP;
    }
    // The launcher placed the channel at this fd for us; nothing else here owns it.
    let channel = Channel::from_fd(take_fd(channel_fd));
    let plan = match channel.recv::<ExecPlan>() {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            eprintln!("berth: exec: no plan received");
            return EXIT_SETUP;
        }
        Err(e) => {
            eprintln!("berth: exec: reading the plan: {e}");
            return EXIT_SETUP;
        }
    };
    drop(channel);
    match run(&plan) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: exec in {}: {e}", plan.name);
            EXIT_SETUP
        }
    }
}

/// Handles on the init, opened before any namespace changes.
struct InitHandles {
    namespaces: Vec<(&'static str, CloneFlags, OwnedFd)>,
    root: OwnedFd,
    cwd: OwnedFd,
}

/// Opens the init's namespaces, root and cwd through a /proc/<pid> dir fd, which stays bound
/// to that process: the start time read through it before and after proves every handle is
/// the init's, whatever pid reuse happens meanwhile.
fn open_init(plan: &ExecPlan) -> Result<InitHandles, ExecError> {
    let pid = plan.pid;
    let gone = || ExecError::InitGone {
        name: plan.name.clone(),
        pid,
    };
    let dir = nix::fcntl::open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| gone())?;
    let check = || -> Result<(), ExecError> {
        let fd = openat(
            &dir,
            "stat",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| gone())?;
        let mut stat = String::new();
        File::from(fd)
            .read_to_string(&mut stat)
            .map_err(|_| gone())?;
        if crate::state::parse_stat(&stat).map(|s| s.start) == Some(plan.start_time) {
            Ok(())
        } else {
            Err(gone())
        }
    };
    check()?;
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("ns/{name}");
        let fd = match openat(
            &dir,
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A kernel without time namespaces.
            Err(Errno::ENOENT) if name == "time" => continue,
            Err(e) => return Err(step(format!("opening /proc/{pid}/{path}"))(e)),
        };
        // Already there (the host's network with `mode = "host"`, a shared time namespace):
        // nothing to join.
        let theirs = fstat(&fd).map_err(step(format!("fstat /proc/{pid}/{path}")))?;
        let ours = fs::metadata(format!("/proc/self/{path}"))
            .map_err(step(format!("stat /proc/self/{path}")))?;
        if theirs.st_dev as u64 == ours.dev() && theirs.st_ino as u64 == ours.ino() {
            continue;
        }
        namespaces.push((name, flag, fd));
    }
    let dir_at = |what: &str| {
        openat(
            &dir,
            what,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(step(format!("opening /proc/{pid}/{what}")))
    };
    let root = dir_at("root")?;
    let cwd = dir_at("cwd")?;
    check()?;
    Ok(InitHandles {
        namespaces,
        root,
        cwd,
    })
}

/// The helper's work: join, fork, wait.
fn run(plan: &ExecPlan) -> Result<i32, ExecError> {
    if plan.args.is_empty() {
        return Err(ExecError::Step {
            step: "the command".into(),
            source: std::io::Error::other("no command given"),
        });
    }
    let handles = open_init(plan)?;
    // The cgroup first, while its files are reachable and before the cgroup namespace (rooted
    // at the container's cgroup) would hide the move.
    for procs in &plan.cgroup_procs {
        fs::write(procs, "0").map_err(step(format!("joining cgroup {}", procs.display())))?;
    }
    for (name, flag, fd) in &handles.namespaces {
        setns(fd, *flag).map_err(step(format!("joining the {name} namespace")))?;
    }
    // The init's root exactly (as nsenter --root): it is the container's rootfs.
    fchdir(&handles.root).map_err(step("fchdir to the container's root"))?;
    chroot(".").map_err(step("chroot to the container's root"))?;
    drop(handles.root);

    // Signals wait in a signalfd from here on; the child unblocks them just before execve.
    let mut mask = SigSet::empty();
    for sig in FORWARDED {
        mask.add(sig);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(step("blocking signals"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(step("signalfd"))?;

    // -t: a terminal from the container's devpts (/dev/ptmx inside its root), sized like ours.
    let pty = if plan.tty {
        let (master, slave) = terminal::open_pty()
            .map_err(|e| step("a terminal in the container")(std::io::Error::other(e)))?;
        if let Some(size) = terminal::TermSize::of(std::io::stdin().as_fd()) {
            let _ = size.apply(master.as_fd());
        }
        Some((master, slave))
    } else {
        None
    };

    match fork_single_threaded().map_err(step("fork"))? {
        ForkResult::Child => {
            drop(sfd);
            if let Some((master, slave)) = pty {
                drop(master);
                if let Err(e) = attach_terminal(&slave) {
                    eprintln!("berth: exec in {}: the terminal {slave}: {e}", plan.name);
                    std::process::exit(EXIT_SETUP);
                }
            }
            let e = child(plan, &handles.cwd).unwrap_err();
            eprintln!("berth: exec in {}: {}", plan.name, e.message);
            std::process::exit(e.code);
        }
        ForkResult::Parent { child } => {
            drop(handles.cwd);
            match pty {
                Some((master, _)) => Ok(relay_terminal(child, &sfd, master)),
                None => Ok(wait_forwarding(child, &sfd)),
            }
        }
    }
}

/// In the child: a new session whose controlling terminal is `slave`, on stdin/out/err.
fn attach_terminal(slave: &str) -> nix::Result<()> {
    nix::unistd::setsid()?;
    terminal::attach(slave).map(drop)
}

/// Relays between our terminal and the command's until it exits; our terminal is in raw mode
/// meanwhile and restored afterwards.
fn relay_terminal(child: Pid, sfd: &SignalFd, master: nix::pty::PtyMaster) -> i32 {
    let _raw = terminal::RawMode::enter();
    let master = File::from(OwnedFd::from(master));
    let mut status = None;
    let mut on_signal = || {
        let Ok(Some(info)) = sfd.read_signal() else {
            return true;
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGWINCH) => {
                if let Some(size) = terminal::TermSize::of(std::io::stdin().as_fd()) {
                    let _ = size.apply(master.as_fd());
                }
            }
            Ok(Signal::SIGCHLD) => {
                status = exit_code(child, Some(WaitPidFlag::WNOHANG));
                return status.is_none();
            }
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(_) => {}
        }
        true
    };
    terminal::relay(&master, true, Some((sfd.as_fd(), &mut on_signal)));
    status.unwrap_or_else(|| exit_code(child, None).unwrap_or(EXIT_SETUP))
}

/// The shell's exit code of `child` once it ended (`flags` WNOHANG: None while it runs).
fn exit_code(child: Pid, flags: Option<WaitPidFlag>) -> Option<i32> {
    loop {
        return match waitpid(child, flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            Err(Errno::EINTR) => continue,
            Ok(_) if flags.is_none() => continue,
            Ok(_) => None,
            Err(_) => Some(EXIT_SETUP),
        };
    }
}

/// Waits for `child`, passing on the signals other processes send to the helper.
fn wait_forwarding(child: Pid, sfd: &SignalFd) -> i32 {
    loop {
        if let Some(code) = exit_code(child, Some(WaitPidFlag::WNOHANG)) {
            return code;
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                // SIGCHLD: loop to waitpid. From the terminal (SI_KERNEL): the command is in
                // the same foreground process group and got it already.
                if sig != Signal::SIGCHLD && info.ssi_code != libc::SI_KERNEL {
                    let _ = kill(child, sig);
                }
            }
            Ok(None) | Err(Errno::EINTR) => {}
            // No signalfd: a plain blocking wait still gets the status right.
            Err(_) => return exit_code(child, None).unwrap_or(EXIT_SETUP),
        }
    }
}

/// A failed step in the child, with the exit code it ends with.
struct ChildError {
    code: i32,
    message: String,
}

fn fail<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> ChildError {
    let what = what.into();
    move |e| ChildError {
        code: EXIT_SETUP,
        message: format!("{what}: {e}"),
    }
}

/// In the container's namespaces and root: credentials, capabilities, no_new_privs, seccomp,
/// then execve — the order of the container's own init. Returns only on failure.
fn child(plan: &ExecPlan, init_cwd: &OwnedFd) -> Result<Infallible, ChildError> {
    if let Some((soft, hard)) = plan.nofile {
        let (_, our_hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(fail("getrlimit"))?;
        let hard = hard.min(our_hard);
        setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)
            .map_err(fail("setrlimit(NOFILE)"))?;
    }
    let caps = capabilities::effective_set(&plan.capabilities, &["ALL".to_string()])
        .map_err(fail("capabilities"))?;
    // As in the init: the bounding set shrinks while we are uid 0 (it needs CAP_SETPCAP).
    capabilities::drop_bounding(&caps).map_err(fail("dropping bounding capabilities"))?;
    let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(fail("setgroups"))?;
    let gid = Gid::from_raw(plan.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(fail(format!("setgid {}", plan.gid)))?;
    let uid = Uid::from_raw(plan.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(fail(format!("setuid {}", plan.uid)))?;
    capabilities::apply(&caps, plan.uid == 0).map_err(fail("setting capabilities"))?;
    // After the credential change, which clears it.
    if plan.die_with_helper {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("prctl(PR_SET_PDEATHSIG)"))?;
    }
    match &plan.cwd {
        Some(dir) => chdir(dir.as_str()).map_err(fail(format!("chdir to {dir}")))?,
        None => fchdir(init_cwd.as_fd()).map_err(fail("chdir to the init's directory"))?,
    }
    if plan.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(fail("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    }
    let program = find_program(&plan.args[0], &plan.env)?;
    let cstring = |s: &str| {
        CString::new(s).map_err(|_| ChildError {
            code: EXIT_SETUP,
            message: format!("argument or environment entry {s:?} holds a NUL byte"),
        })
    };
    let argv: Vec<CString> = plan
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let path = cstring(&program)?;
    let filters = if plan.seccomp {
        Some(seccomp::profile_for(&caps).map_err(fail("building the seccomp profile"))?)
    } else {
        None
    };
    // Nothing of the helper's reaches the command but stdio.
    close_fds_at_exec(3).map_err(fail("closing inherited fds"))?;
    crate::sys::exec::reset_signal_dispositions().map_err(fail("resetting signal actions"))?;
    if let Some(filters) = filters {
        seccomp::install(&filters).map_err(fail("installing the seccomp profile"))?;
    }
    SigSet::empty()
        .thread_set_mask()
        .map_err(fail("unblocking signals"))?;
    let err = execve(&path, &argv, &envp).unwrap_err();
    Err(ChildError {
        code: match err {
            Errno::ENOENT => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_EXECUTE,
        },
        message: format!("executing {program:?}: {err}"),
    })
}

/// Looks `name` up in the container's PATH as execvp would.
fn find_program(name: &str, env: &[String]) -> Result<String, ChildError> {
    if let Some(path) = crate::runtime::command::find_in_path(name, env) {
        return Ok(path);
    }
    if name.contains('/') && fs::metadata(name).is_ok() {
        return Err(ChildError {
            code: EXIT_CANNOT_EXECUTE,
            message: format!("{name:?} is not an executable file"),
        });
    }
    Err(ChildError {
        code: EXIT_NOT_FOUND,
        message: format!("command {name:?} not found in the container"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_splits_on_nul() {
        let env = parse_environ(b"PATH=/bin\0HOME=/root\0junk\0\0X=a=b\0");
        assert_eq!(env, ["PATH=/bin", "HOME=/root", "X=a=b"]);
        assert!(parse_environ(b"").is_empty());
    }

    #[test]
    fn ids_from_status() {
        let status = "Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(
            parse_ids(status),
            Some(Ids {
                uid: 1001,
                gid: 51,
                groups: vec![4, 24, 27]
            })
        );
        let none = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(
            parse_ids(none),
            Some(Ids {
                uid: 0,
                gid: 0,
                groups: vec![]
            })
        );
        assert_eq!(parse_ids("Uid:\t0\t0\t0\t0\n"), None);
    }

    #[test]
    fn nofile_from_limits() {
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(limits), Some((1024, 524288)));
        let inf = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_nofile(inf),
            Some((libc::RLIM_INFINITY, libc::RLIM_INFINITY))
        );
        assert_eq!(parse_nofile("Max processes 1 2\n"), None);
    }

    #[test]
    fn start_time_of_self() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            crate::state::parse_stat(&stat).map(|s| s.start),
            crate::state::process_start_time(me)
        );
    }

    #[test]
    fn plan_round_trips_as_json() {
        let plan = ExecPlan {
            name: "web".into(),
            pid: 42,
            start_time: 7,
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            uid: 0,
            gid: 0,
            groups: vec![],
            cwd: None,
            capabilities: vec!["CAP_KILL".into()],
            no_new_privileges: true,
            seccomp: true,
            nofile: Some((1024, 4096)),
            cgroup_procs: vec!["/sys/fs/cgroup/x/cgroup.procs".into()],
            interactive: false,
            tty: false,
            die_with_helper: false,
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<ExecPlan>(&json).unwrap(), plan);
    }
}
