//! The helper process: started from a sealed copy of our own binary in a hidden mode (before
//! any thread exists), it receives a `ContainerPlan`, forks the container's init into new
//! namespaces, reports `Started`/`Failed`, then stays as the container's small monitor: it
//! reaps the init and reports how it exited. The init side does every namespace, mount,
//! pivot_root and credential step, in the order runc/crun/youki use.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{
    chdir, execve, pipe2, pivot_root, sethostname, setsid, ForkResult, Gid, Pid, Uid,
};

use crate::runtime::container::ExitRecord;
use crate::runtime::mounts::{Mount, MountKind, DEVICES, DEV_SYMLINKS};
use crate::runtime::plan::{overlay_options, ContainerPlan, LogTarget};
use crate::runtime::protocol::{Channel, Event, ExitStatus, Request};
use crate::runtime::terminal::{self, TermSize};
use crate::runtime::{capabilities, seccomp, user};
use crate::sys::netdev::loopback_up;
use crate::sys::openat::{open_dir, open_in_root};
use crate::sys::process::{close_fds_at_exec, fork_single_threaded, set_niceness};

/// The argument that selects the helper mode; the channel's fd number follows it.
pub const MONITOR_ARG: &str = "__berth-monitor";

/// A failed init step, reported to the launcher as one line.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct InitError {
    step: String,
    detail: String,
}

fn step<E: std::fmt::Display>(step: impl Into<String>) -> impl FnOnce(E) -> InitError {
    let step = step.into();
    move |e| InitError {
        step,
        detail: e.to_string(),
    }
}

/// Entry point of the helper mode. Returns the helper's exit code.
pub fn monitor_main(channel_fd: RawFd) -> i32 {
    // The launcher placed the channel at this fd for us; nothing else here owns it.
    let channel = Channel::from_fd(crate::sys::process::take_fd(channel_fd));
    let plan = match channel.recv::<Request>() {
        Ok(Some(Request::Start(plan))) => plan,
        Ok(None) => return 125,
        Err(e) => {
            let _ = channel.send(&Event::Failed {
                error: format!("reading the plan: {e}"),
            });
            return 125;
        }
    };
    match start(&plan, &channel) {
        Ok((pid, output)) => {
            // The setup ran at the priority we were started with; the monitor's work (copying
            // output) is the container's.
            if let Some(n) = plan.niceness {
                let _ = set_niceness(n);
            }
            if channel.send(&Event::Started { pid: pid.as_raw() }).is_err() && plan.die_with_parent
            {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            // From here on a supervised container's helper only copies output and waits; once
            // idle, it gives back what it ran to start the container (see `pump_logs`).
            if let (Some(output), Some(target)) = (output, &plan.log) {
                pump_logs(output, target);
            }
            let status = wait_for(pid);
            if let Some(path) = &plan.exit_file {
                let record = ExitRecord {
                    status,
                    at: std::time::SystemTime::now(),
                };
                if let Ok(data) = serde_json::to_vec(&record) {
                    // Nobody to tell if this fails: the supervisor then sees an unknown exit.
                    let _ =
                        crate::state::write_atomic(path, &data, crate::state::Durability::Process);
                }
            }
            let _ = channel.send(&Event::Exited { status });
            0
        }
        Err(error) => {
            let _ = channel.send(&Event::Failed { error });
            125
        }
    }
}

/// The read ends of a supervised container's stdout and stderr.
struct Output {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Forks the init into a new pid namespace and waits until it exec'd or failed.
fn start(plan: &ContainerPlan, channel: &Channel) -> Result<(Pid, Option<Output>), String> {
    if plan.die_with_parent {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| format!("prctl: {e}"))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
    // The init reports a failure on this pipe; a successful exec closes it (O_CLOEXEC).
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let pipes = match plan.log {
        Some(_) => {
            let out = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            let err = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            Some((out, err))
        }
        None => None,
    };
    match fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_r);
            let e = match pipes {
                Some(((_, out_w), (_, stderr_w))) => {
                    // dup2 onto stdio clears close-on-exec on the copies.
                    match nix::unistd::dup2_stdout(&out_w)
                        .and_then(|()| nix::unistd::dup2_stderr(&stderr_w))
                    {
                        Ok(()) => init(plan, &err_w, channel).unwrap_err(),
                        Err(e) => InitError {
                            step: "redirecting output".into(),
                            detail: e.to_string(),
                        },
                    }
                }
                None => init(plan, &err_w, channel).unwrap_err(),
            };
            let mut w = File::from(err_w);
            let _ = w.write_all(e.to_string().as_bytes());
            std::process::exit(125);
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let output = pipes.map(|((out_r, _), (err_r, _))| Output {
                stdout: out_r,
                stderr: err_r,
            });
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            if msg.is_empty() {
                Ok((child, output))
            } else {
                let _ = waitpid(child, None);
                Err(msg)
            }
        }
    }
}

/// How long the output pipes stay quiet before the monitor gives back the pages that starting
/// the container and copying touched (see `release_pages_and_wait`); the next output faults
/// them in again.
pub(crate) const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies the container's output into its log files until both pipes close (when the
/// container's last process is gone). If the log files cannot be written, output is still
/// drained, so the container never blocks on a full pipe. The pages the start touched are
/// given back before the first wait, and those the copying touched whenever the pipes have
/// been quiet for `IDLE_RELEASE`, until the next output.
fn pump_logs(output: Output, target: &LogTarget) {
    use crate::logs::{LogConfig, LogWriter, Stream};
    let mut writer = LogWriter::open(
        &target.dir,
        LogConfig {
            max_size: target.max_size,
            max_files: target.max_files,
        },
    )
    .ok();
    let mut open: Vec<(Stream, File)> = vec![
        (Stream::Stdout, File::from(output.stdout)),
        (Stream::Stderr, File::from(output.stderr)),
    ];
    let mut buf = vec![0u8; 16 * 1024];
    // Until the next output, given back are the pages touched since the last release.
    let release_and_wait = |open: &[(Stream, File)]| {
        let fds: Vec<_> = open.iter().map(|(_, f)| f.as_fd()).collect();
        crate::sys::process::release_pages_and_wait(&fds)
    };
    // How long to wait before giving pages back; without a way to, the wait is a plain one.
    let mut idle =
        nix::poll::PollTimeout::try_from(IDLE_RELEASE).unwrap_or(nix::poll::PollTimeout::MAX);
    // Started: what it ran to start the container goes back at once.
    let _ = release_and_wait(&open);
    while !open.is_empty() {
        let mut fds: Vec<nix::poll::PollFd> = open
            .iter()
            .map(|(_, f)| nix::poll::PollFd::new(f.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut fds, idle) {
            Ok(0) => {
                drop(fds);
                if let Err(e) = release_and_wait(&open) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        idle = nix::poll::PollTimeout::NONE;
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut closed = Vec::new();
        for (i, (stream, file)) in open.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            match file.read(&mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if let Some(w) = writer.as_mut() {
                        let _ = w.write(*stream, &buf[..n], std::time::SystemTime::now());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            let (stream, _) = open.remove(i);
            if let Some(w) = writer.as_mut() {
                let _ = w.flush_partial(stream, std::time::SystemTime::now());
            }
        }
    }
}

fn wait_for(pid: Pid) -> ExitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return ExitStatus::Signal(sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return ExitStatus::Code(255),
        }
    }
}

/// With `die_with_parent` (`berth run`): the init's parent-death signal, set again (a fork
/// and a change of credentials clear it); a helper already gone by then (its end of the
/// error pipe `report` closed) would never send it, so the init ends here instead.
fn die_with_helper(plan: &ContainerPlan, report: &OwnedFd) -> Result<(), InitError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    if !plan.die_with_parent {
        return Ok(());
    }
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(step("prctl(PR_SET_PDEATHSIG)"))?;
    let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLOUT)];
    let gone = poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR));
    if gone {
        std::process::exit(125);
    }
    Ok(())
}

/// Sets up the container around the current process and execs its command; `report` is the
/// error pipe. Returns only on failure.
fn init(
    plan: &ContainerPlan,
    report: &OwnedFd,
    channel: &Channel,
) -> Result<std::convert::Infallible, InitError> {
    die_with_helper(plan, report)?;
    // Into the cgroup first, so everything below is accounted and limited, and the cgroup
    // namespace is rooted at the container's own cgroup.
    for procs in &plan.cgroup_procs {
        fs::write(procs, "0").map_err(step(format!("joining cgroup {}", procs.display())))?;
    }
    setsid().map_err(step("setsid"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if plan.own_netns && plan.netns.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(step("unshare namespaces"))?;
    if let Some(netns) = &plan.netns {
        let fd = open(
            netns.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(step(format!(
            "opening network namespace {}",
            netns.display()
        )))?;
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).map_err(step(format!(
            "joining network namespace {}",
            netns.display()
        )))?;
    }
    make_private()?;

    let p = &plan.paths;
    // The tmpfs covers the container dir; the overlay's upper and work dirs in it stay
    // reachable, relative to this working directory, which keeps the covered dir.
    chdir(&p.dir).map_err(step(format!("chdir to {}", p.dir.display())))?;
    let covered = |d: &Path| {
        d.strip_prefix(&p.dir)
            .map(Path::to_path_buf)
            .map_err(step(format!(
                "{} is outside {}",
                d.display(),
                p.dir.display()
            )))
    };
    let (upper, work) = (covered(&p.upper)?, covered(&p.work)?);
    mount(
        Some("tmpfs"),
        &p.dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=700,size=1m"),
    )
    .map_err(step(format!("mounting tmpfs at {}", p.dir.display())))?;
    for (path, text) in [
        (&p.hosts, &plan.etc.hosts),
        (&p.hostname, &plan.etc.hostname),
        (&p.resolv_conf, &plan.etc.resolv_conf),
    ] {
        fs::write(path, text).map_err(step(format!("writing {}", path.display())))?;
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&p.rootfs)
        .map_err(step(format!("creating {}", p.rootfs.display())))?;
    let opts = overlay_options(&plan.lower_dirs, &upper, &work);
    mount(
        Some("overlay"),
        &p.rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(step(format!(
        "mounting overlay rootfs at {}",
        p.rootfs.display()
    )))?;

    // Every mount is made before pivot_root, while host sources are still reachable; each
    // target is resolved inside the new root (openat2 RESOLVE_IN_ROOT), so no symlink in the
    // image can redirect a mount onto the host.
    let root = open_dir(&p.rootfs).map_err(step("opening the rootfs"))?;
    for m in &plan.mounts {
        do_mount(&root, m)?;
    }
    drop(root);

    chdir(&p.rootfs).map_err(step("chdir to rootfs"))?;
    enter_root(&p.rootfs)?;
    chdir("/").map_err(step("chdir /"))?;

    for (link, target) in DEV_SYMLINKS {
        std::os::unix::fs::symlink(target, link).map_err(step(format!("symlink {link}")))?;
    }
    sethostname(&plan.hostname).map_err(step("sethostname"))?;
    if plan.own_netns {
        loopback_up().map_err(step("bringing up lo"))?;
    }
    let null = open_verified_null()?;
    for path in &plan.masked_paths {
        mask(path, &null)?;
    }
    for path in &plan.readonly_paths {
        readonly(path)?;
    }
    if plan.readonly_rootfs {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(step("remounting / read-only"))?;
    }

    let passwd = read_small("/etc/passwd");
    let group = read_small("/etc/group");
    let who = user::resolve(plan.user.as_deref(), passwd.as_deref(), group.as_deref())
        .map_err(step("resolving the user"))?;
    let mut env = plan.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", who.home));
    }
    if !Path::new(&plan.cwd).is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&plan.cwd)
            .map_err(step(format!("creating workdir {}", plan.cwd)))?;
    }
    let program = find_program(&plan.args[0], &env)?;
    if let Some(size) = plan.terminal {
        take_terminal(size, &who, channel)?;
    }

    let (soft, hard) = plan.nofile;
    let (_, our_hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(step("getrlimit"))?;
    let hard = hard.min(our_hard);
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).map_err(step("setrlimit(NOFILE)"))?;

    // The program runs at the plan's priority; raising it back needs CAP_SYS_NICE, which is
    // still held here.
    if let Some(n) = plan.niceness {
        set_niceness(n).map_err(step("restoring the CPU priority"))?;
    }
    // Exactly the plan's set: drop ALL, add each.
    let caps = capabilities::effective_set(&plan.capabilities, &["ALL".to_string()])
        .map_err(step("capabilities"))?;
    // The bounding set shrinks while we are still uid 0 (it needs CAP_SETPCAP); after the uid
    // change `apply` sets permitted/effective: the set for root, nothing for other users.
    capabilities::drop_bounding(&caps).map_err(step("dropping bounding capabilities"))?;
    let gids: Vec<Gid> = who
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(step("setgroups"))?;
    let gid = Gid::from_raw(who.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(step(format!("setgid {}", who.gid)))?;
    let uid = Uid::from_raw(who.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(step(format!("setuid {}", who.uid)))?;
    capabilities::apply(&caps, who.uid == 0).map_err(step("setting capabilities"))?;
    // Credentials changed above, which clears the parent-death signal.
    die_with_helper(plan, report)?;
    chdir(plan.cwd.as_str()).map_err(step(format!("chdir to workdir {}", plan.cwd)))?;
    if plan.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    }
    // Signals we (Rust's runtime: SIGPIPE) or our caller ignored would stay ignored in the
    // container's command.
    crate::sys::exec::reset_signal_dispositions().map_err(step("resetting signal dispositions"))?;
    // Every inherited fd but stdio closes at exec; the error pipe lives until then, so a
    // failure below (a NUL in an argument, seccomp, the exec itself) is still reported.
    close_fds_at_exec(3).map_err(step("closing inherited fds"))?;
    let argv: Vec<CString> = plan
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
    let program = cstring(&program)?;
    if plan.seccomp {
        let filters = seccomp::profile_for(&caps).map_err(step("building the seccomp profile"))?;
        seccomp::install(&filters).map_err(step("installing the seccomp profile"))?;
    }
    let err = execve(&program, &argv, &envp).unwrap_err();
    let mut detail = err.to_string();
    if err == Errno::ENOENT && Path::new(program.to_str().unwrap_or("")).exists() {
        detail.push_str(" (the file is there: its ELF or #! interpreter is missing)");
    }
    if err == Errno::E2BIG {
        let bytes: usize = env.iter().chain(&plan.args).map(|s| s.len() + 1).sum();
        detail.push_str(&format!(
            " ({} environment entries and {} arguments, {bytes} bytes, pass the kernel's \
             limit of a quarter of the stack rlimit)",
            env.len(),
            plan.args.len()
        ));
    }
    Err(InitError {
        step: format!("exec {}", plan.args[0]),
        detail,
    })
}

/// `-t`: a pty from the container's own devpts (its `/dev/ptmx`), owned by the user the
/// command runs as, becomes our controlling terminal (we lead a session of our own) and our
/// stdin, stdout and stderr; the master goes to the launcher, which relays it.
fn take_terminal(
    size: TermSize,
    who: &user::ResolvedUser,
    channel: &Channel,
) -> Result<(), InitError> {
    let (master, name) = terminal::open_pty().map_err(step("a terminal"))?;
    size.apply(master.as_fd())
        .map_err(step("setting the terminal's size"))?;
    // We lead a session of our own (setsid above) with no terminal yet.
    let slave = terminal::attach(&name).map_err(step(format!("taking {name} as the terminal")))?;
    nix::unistd::fchown(
        &slave,
        Some(Uid::from_raw(who.uid)),
        Some(Gid::from_raw(who.gid)),
    )
    .map_err(step(format!("chown {name}")))?;
    nix::sys::stat::fchmod(&slave, Mode::from_bits_truncate(0o620))
        .map_err(step(format!("chmod {name}")))?;
    channel
        .send_with_fd(&Event::Terminal, Some(master.as_raw_fd()))
        .map_err(step("sending the terminal"))
}

fn cstring(s: &str) -> Result<CString, InitError> {
    CString::new(s).map_err(step(format!("argument {s:?} contains a NUL byte")))
}

fn verify_char_device(fd: &OwnedFd, major: u64, minor: u64, what: &Path) -> Result<(), InitError> {
    let st = nix::sys::stat::fstat(fd).map_err(step(format!("stat {}", what.display())))?;
    let is_char = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
    let rdev = st.st_rdev;
    if !is_char || nix::sys::stat::major(rdev) != major || nix::sys::stat::minor(rdev) != minor {
        return Err(InitError {
            step: format!("checking {}", what.display()),
            detail: format!("not the char device {major}:{minor}"),
        });
    }
    Ok(())
}

/// The container's /dev/null (bound from the host's), verified on the opened fd, for masking
/// files.
fn open_verified_null() -> Result<OwnedFd, InitError> {
    let fd = open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(step("opening /dev/null"))?;
    verify_char_device(&fd, 1, 3, Path::new("/dev/null"))?;
    Ok(fd)
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens (creating when missing) a mount target inside `root`, every component resolved in
/// the root. Returns an O_PATH fd of the target.
fn target_in_root(root: &OwnedFd, target: &str, file: bool) -> Result<OwnedFd, InitError> {
    let what = || format!("creating mount target {target}");
    let rel = Path::new(target.trim_start_matches('/'));
    let path_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
    if let Ok(fd) = open_in_root(root.as_fd(), rel, path_flags, 0) {
        return Ok(fd);
    }
    let components: Vec<_> = rel.components().collect();
    // Usually only the last component is missing (a device node in the new /dev): create it
    // in its parent at once. Otherwise walk down, creating each missing dir.
    let known_parent = rel
        .parent()
        .and_then(|p| open_in_root(root.as_fd(), p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0).ok());
    let first_missing = if known_parent.is_some() {
        components.len().saturating_sub(1)
    } else {
        0
    };
    let mut prefix: PathBuf = components[..first_missing].iter().collect();
    let mut parent = known_parent;
    for (i, c) in components.iter().enumerate().skip(first_missing) {
        let dir = match parent.take() {
            Some(dir) => dir,
            None => open_in_root(root.as_fd(), &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
                .map_err(step(what()))?,
        };
        prefix.push(c);
        let last = i + 1 == components.len();
        if !last && open_in_root(root.as_fd(), &prefix, path_flags, 0).is_ok() {
            continue;
        }
        if last && file {
            nix::fcntl::openat(
                &dir,
                c.as_os_str(),
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(step(what()))?;
        } else {
            match nix::sys::stat::mkdirat(&dir, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(step(what())(e)),
            }
        }
    }
    open_in_root(root.as_fd(), rel, path_flags, 0).map_err(step(what()))
}

/// Stops mount propagation out of the new mount namespace: `/` and everything below it
/// private. Under a chroot that is no mount point, `/` cannot be named: each mount in sight
/// is made private instead.
fn make_private() -> Result<(), InitError> {
    let private = |target: &str, flags: MsFlags| {
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
    };
    match private("/", MsFlags::MS_REC | MsFlags::MS_PRIVATE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            let table = crate::mountinfo::read_own().map_err(step("reading mountinfo"))?;
            for target in crate::mountinfo::mount_points(&table) {
                let _ = private(&target, MsFlags::MS_PRIVATE);
            }
            Ok(())
        }
        Err(e) => Err(step("making / private")(e)),
    }
}

/// Makes the mounted rootfs (the cwd) the root of the container: pivot_root, and the old
/// root detached. Where the host root cannot be pivoted (pivot_root's EINVAL: an initramfs,
/// whose rootfs has no parent mount, or a root that is not a mount point), every mount of the
/// old tree but the rootfs and those holding it is detached, the rootfs is moved over `/` and
/// chrooted into, as runc's no-pivot mode does: a walk up from it ends on the mount moved over
/// the old `/`, so nothing of the host is reachable by path. Every later step (masks,
/// read-only paths, credentials, seccomp) is the same in both.
fn enter_root(rootfs: &Path) -> Result<(), InitError> {
    match pivot_root(".", ".") {
        Ok(()) => umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root")),
        Err(Errno::EINVAL) => move_root(rootfs),
        Err(e) => Err(step("pivot_root")(e)),
    }
}

fn move_root(rootfs: &Path) -> Result<(), InitError> {
    let real = fs::canonicalize(rootfs).map_err(step("resolving the rootfs path"))?;
    let table = crate::mountinfo::read_own().map_err(step("reading mountinfo"))?;
    let detach = crate::runtime::mounts::mounts_to_detach(&table, &real.to_string_lossy())
        .ok_or_else(|| InitError {
            step: "moving the root".into(),
            detail: format!("{} is not a mount point", real.display()),
        })?;
    for target in detach {
        // Gone with its parent already, or busy: what stays is unreachable once moved over.
        let _ = umount2(target.as_str(), MntFlags::MNT_DETACH);
    }
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("moving the rootfs over /"))?;
    nix::unistd::chroot(".").map_err(step("chroot"))?;
    Ok(())
}

/// Executes one mount of the plan onto its target inside `root` (before pivot_root).
fn do_mount(root: &OwnedFd, m: &Mount) -> Result<(), InitError> {
    let target = target_in_root(root, &m.target, m.file)?;
    let flags = m.ms_flags();
    let what = || format!("mounting {}", m.target);
    match &m.kind {
        MountKind::Fs { fstype, data } => {
            mount(
                Some(fstype.as_str()),
                fd_path(&target).as_str(),
                Some(fstype.as_str()),
                flags,
                data.as_deref(),
            )
            .map_err(step(what()))?;
        }
        MountKind::Bind { host, recursive } => {
            let source = open(
                host.as_path(),
                OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(step(format!("opening mount source {}", host.display())))?;
            if let Some((_, major, minor)) = DEVICES
                .iter()
                .find(|(n, _, _)| host == &PathBuf::from(format!("/dev/{n}")))
            {
                verify_char_device(&source, *major, *minor, host)?;
            }
            let mut bind_flags = MsFlags::MS_BIND;
            if *recursive {
                bind_flags |= MsFlags::MS_REC;
            }
            mount(
                Some(fd_path(&source).as_str()),
                fd_path(&target).as_str(),
                None::<&str>,
                bind_flags,
                None::<&str>,
            )
            .map_err(step(what()))?;
            // Other flags only take effect on a remount, which must address the new mount:
            // the old fd still names the dir underneath, so open the target again. A bind
            // copies its source mount's flags, so there is nothing to remount when those are
            // already the ones asked for (the /etc files, bound from a nosuid, nodev, noexec
            // tmpfs).
            let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() && !has_exactly(&source, extra) {
                let rel = Path::new(m.target.trim_start_matches('/'));
                let mounted = open_in_root(root.as_fd(), rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)
                    .map_err(step(what()))?;
                mount(
                    None::<&str>,
                    fd_path(&mounted).as_str(),
                    None::<&str>,
                    extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
                .map_err(step(format!("remounting {}", m.target)))?;
            }
        }
    }
    Ok(())
}

/// Whether the mount `fd` lies on has exactly `flags`, which are only read-only, nosuid, nodev
/// and noexec (any other flag, or a failed statfs, says no).
fn has_exactly(fd: &OwnedFd, flags: MsFlags) -> bool {
    let per_mount =
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !per_mount.contains(flags) {
        return false;
    }
    // The ST_ flags of statvfs have the values of the MS_ flags.
    nix::sys::statvfs::fstatvfs(fd)
        .is_ok_and(|st| MsFlags::from_bits_truncate(st.flags().bits() as _) & per_mount == flags)
}

/// Makes `path` read empty: a read-only tmpfs over a dir, /dev/null over a file.
fn mask(path: &str, null: &OwnedFd) -> Result<(), InitError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let what = || format!("masking {path}");
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
        .map_err(step(what()))?;
    } else {
        mount(
            Some(fd_path(null).as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(step(what()))?;
    }
    Ok(())
}

/// Binds `path` over itself read-only.
fn readonly(path: &str) -> Result<(), InitError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let what = || format!("making {path} read-only");
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step(what()))?;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(step(what()))?;
    Ok(())
}

/// Reads a small config file of the image (capped at 1 MiB); missing files are `None`.
fn read_small(path: &str) -> Option<String> {
    let f = File::open(path).ok()?;
    let mut s = String::new();
    f.take(1 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Looks `name` up in the container's PATH as execvp would; the error names the command.
fn find_program(name: &str, env: &[String]) -> Result<String, InitError> {
    crate::runtime::command::find_in_path(name, env).ok_or_else(|| InitError {
        step: format!("command {name:?}"),
        detail: "not found in the image".into(),
    })
}
