//! `berth exec [-i] [-t] [-d] [-u USER] [-e K=V] [-w DIR] NAME CMD [ARGS...]`: asks the daemon
//! which process is the container's init, decides the exec plan, then becomes the exec helper
//! (see `runtime::exec`), so the exit code is the command's. `-d` runs the same exec as a
//! process of its own, detached, and returns at once.

use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::cgroups::ContainerCgroup;
use crate::runtime::exec::{self, Target};
use crate::spec::ValidatedSpec;
use crate::state::Instance;
use crate::supervisor::control::{call, Request};

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

// What `exec` changes of the container's own settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecOpts {
    /// Run as USER[:GROUP] (names from the container's /etc/passwd and /etc/group, or ids).
    #[arg(short, long)]
    pub user: Option<String>,
    /// KEY=VALUE added to (or replacing in) the container's environment (repeatable).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Start the command and return; its output goes nowhere.
    #[arg(short, long)]
    pub detach: bool,
}

/// Applies `-u`, `-e` and `-w` to the plan; the user is looked up inside the container's root
/// (openat2 RESOLVE_IN_ROOT below /proc/PID/root, so its links cannot lead out).
fn apply(plan: &mut exec::ExecPlan, opts: &ExecOpts) -> Result<(), String> {
    for e in &opts.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("-e {e:?}: expected KEY=VALUE"))?;
        if k.is_empty() || k.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("-e {e:?}: {k:?} is not a variable name"));
        }
        plan.env
            .retain(|kv| kv.split_once('=').map(|(key, _)| key) != Some(k));
        plan.env.push(format!("{k}={v}"));
    }
    if let Some(w) = &opts.workdir {
        if !w.starts_with('/') {
            return Err(format!("-w {w:?}: must be an absolute path"));
        }
        plan.cwd = Some(w.clone());
    }
    if let Some(u) = &opts.user {
        let root = nix::fcntl::open(
            format!("/proc/{}/root", plan.pid).as_str(),
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("opening the container's root: {e}"))?;
        let read = |rel: &str| {
            use std::io::Read;
            let f = crate::sys::openat::open_in_root(
                std::os::fd::AsFd::as_fd(&root),
                std::path::Path::new(rel),
                nix::fcntl::OFlag::O_RDONLY,
                0,
            )
            .ok()?;
            let mut s = String::new();
            std::fs::File::from(f)
                .take(4 << 20)
                .read_to_string(&mut s)
                .ok()?;
            Some(s)
        };
        let (passwd, group) = (read("etc/passwd"), read("etc/group"));
        let r = crate::runtime::user::resolve(Some(u), passwd.as_deref(), group.as_deref())
            .map_err(|e| format!("-u {u}: {e}"))?;
        plan.uid = r.uid;
        plan.gid = r.gid;
        plan.groups = r.additional_gids;
    }
    Ok(())
}

/// `-d`: the same exec, without `-d`, as a process of its own in its own process group.
fn detach(cli: &Cli, name: &str, command: &[String], opts: &ExecOpts) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("finding berth: {e}")),
    };
    let mut c = std::process::Command::new(exe);
    c.arg("--root")
        .arg(cli.root())
        .arg("--socket")
        .arg(cli.socket());
    if let Some(p) = &cli.cgroup_parent {
        c.arg("--cgroup-parent").arg(p);
    }
    c.arg("exec");
    if let Some(u) = &opts.user {
        c.arg("--user").arg(u);
    }
    for e in &opts.env {
        c.arg("--env").arg(e);
    }
    if let Some(w) = &opts.workdir {
        c.arg("--workdir").arg(w);
    }
    c.arg(name).arg("--").args(command);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    match c.spawn() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(format!("starting the detached exec: {e}")),
    }
}

pub fn exec(
    cli: &Cli,
    name: &str,
    command: &[String],
    interactive: bool,
    tty: bool,
    opts: &ExecOpts,
) -> ExitCode {
    if opts.detach {
        if interactive || tty {
            return fail("-d runs the command without our terminal: drop -i and -t");
        }
        return detach(cli, name, command, opts);
    }
    let v = match call(
        &cli.socket(),
        &Request::Inspect {
            name: name.to_string(),
        },
    ) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let instance: Option<Instance> = match serde_json::from_value(v["instance"].clone()) {
        Ok(i) => i,
        Err(e) => return fail(format!("bad response from the daemon: instance: {e}")),
    };
    let spec: ValidatedSpec = match serde_json::from_value(v["spec"].clone()) {
        Ok(s) => s,
        Err(e) => return fail(format!("bad response from the daemon: spec: {e}")),
    };
    // The daemon's cgroup parent, whatever this command was given.
    let cgroup_parent = cli.daemon_cgroup_parent(&v);
    let cgroup_procs = match &instance {
        Some(inst) => match ContainerCgroup::open(&cgroup_parent, &inst.id) {
            Ok(Some(cg)) => cg.join_files(),
            Ok(None) => {
                return fail(format!(
                    "container {name}: no cgroup {} under {cgroup_parent}",
                    inst.id
                ))
            }
            Err(e) => return fail(format!("container {name}: {e}")),
        },
        None => Vec::new(),
    };
    let target = Target {
        name,
        spec: &spec,
        instance: instance.as_ref(),
        cgroup_procs,
    };
    let mut plan = match exec::plan(&target, command.to_vec(), interactive || tty, tty) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let Err(e) = apply(&mut plan, opts) {
        return fail(e);
    }
    // The daemon's state root, whatever this command was given.
    let root = v["root"]
        .as_str()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cli.root());
    // Returns only if the helper could not be started.
    fail(exec::exec(&root, &plan))
}
