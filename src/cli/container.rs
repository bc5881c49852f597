//! Docker's verbs on one supervised container, done from the daemon's `inspect` answer:
//! `kill -s SIG`, `wait`, `pause`/`unpause` (the cgroup freezer, as `berth commit` uses),
//! `top` (the processes of its cgroup) and `port` (its published ports).

use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{kill as send, Signal};
use nix::unistd::Pid;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::cgroups::ContainerCgroup;
use crate::runtime::container::ExitRecord;
use crate::state::Instance;
use crate::supervisor::control::{call, Request};

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

/// The daemon's `inspect` answer for `name`.
fn inspect(cli: &Cli, name: &str) -> Result<serde_json::Value, String> {
    call(
        &cli.socket(),
        &Request::Inspect {
            name: name.to_string(),
        },
    )
    .map_err(|e| e.to_string())
}

/// The running instance of `name` (with its state as the daemon says it).
pub(super) fn running(cli: &Cli, name: &str) -> Result<(Instance, serde_json::Value), String> {
    let v = inspect(cli, name)?;
    let state = v["status"]["state"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let instance: Option<Instance> = serde_json::from_value(v["instance"].clone())
        .map_err(|e| format!("bad response from the daemon: instance: {e}"))?;
    match instance.filter(|_| state == "running") {
        Some(i) if crate::state::is_same_process(i.init_pid, i.init_start) => Ok((i, v)),
        _ => Err(format!("container {name} is not running (state: {state})")),
    }
}

fn cgroup_of(cli: &Cli, name: &str) -> Result<ContainerCgroup, String> {
    let (inst, v) = running(cli, name)?;
    let parent = cli.daemon_cgroup_parent(&v);
    match ContainerCgroup::open(&parent, &inst.id) {
        Ok(Some(cg)) => Ok(cg),
        Ok(None) => Err(format!("container {name}: no cgroup {parent}/{}", inst.id)),
        Err(e) => Err(e.to_string()),
    }
}

/// `berth kill [-s SIG] NAME`: the signal (default SIGKILL) to the container's init. The
/// restart policy then decides, as for any exit.
pub fn kill(cli: &Cli, name: &str, signal: &str) -> ExitCode {
    let sig = match crate::spec::units::parse_signal(signal)
        .map_err(|e| e.to_string())
        .and_then(|n| Signal::try_from(n).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return fail(format!("-s {signal}: {e}")),
    };
    match running(cli, name) {
        Ok((inst, _)) => match send(Pid::from_raw(inst.init_pid), sig) {
            Ok(()) => {
                println!("{name}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("signalling {name} (pid {}): {e}", inst.init_pid)),
        },
        Err(e) => fail(e),
    }
}

/// `berth wait NAME`: blocks until the running instance ends, then prints its exit code
/// (the shell's convention: 128 + the signal) and exits with it. The code is the one the
/// instance's monitor records in its state dir; should the daemon have cleaned that up
/// first, the daemon's own account of the exit.
pub fn wait(cli: &Cli, name: &str) -> ExitCode {
    let (inst, v) = match running(cli, name) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let root = v["root"]
        .as_str()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cli.root());
    let dir = root.join("containers").join(&inst.id);
    let code = loop {
        if let Some(rec) = std::fs::read(dir.join("exit.json"))
            .ok()
            .and_then(|d| serde_json::from_slice::<ExitRecord>(&d).ok())
        {
            break rec.status.as_code();
        }
        if !dir.is_dir() {
            let v = match inspect(cli, name) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            break described_code(v["status"]["last_exit"].as_str().unwrap_or(""));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{code}");
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The code of an exit as `ps` describes it (`exit code 3`, `signal 9 (OOM killed)`).
fn described_code(s: &str) -> i32 {
    let num = |rest: &str| {
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse::<i32>().ok())
    };
    if let Some(rest) = s.strip_prefix("exit code ") {
        num(rest).unwrap_or(0)
    } else if let Some(rest) = s.strip_prefix("signal ") {
        num(rest).map(|n| 128 + n).unwrap_or(0)
    } else {
        0
    }
}

/// `berth pause NAME` / `unpause NAME`: freezes or thaws every process of the container.
pub fn pause(cli: &Cli, name: &str, frozen: bool) -> ExitCode {
    let cg = match cgroup_of(cli, name) {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    let result = if frozen { cg.freeze() } else { cg.thaw() };
    match result {
        Ok(()) => {
            println!("{name}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("container {name}: {e}")),
    }
}

/// `berth top NAME`: the container's processes (host pids), as `ps -f` shows them.
pub fn top(cli: &Cli, name: &str) -> ExitCode {
    let cg = match cgroup_of(cli, name) {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    let mut pids = match cg.pids() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    pids.sort_unstable();
    println!(
        "{:<8} {:<8} {:<8} {:>6}  CMD",
        "UID", "PID", "PPID", "STATE"
    );
    for pid in pids {
        let Some(p) = ProcInfo::read(pid) else {
            continue;
        };
        println!(
            "{:<8} {:<8} {:<8} {:>6}  {}",
            p.uid, pid, p.ppid, p.state, p.cmd
        );
    }
    ExitCode::SUCCESS
}

/// What `top` shows of one process, from /proc.
struct ProcInfo {
    uid: u32,
    ppid: i32,
    state: String,
    cmd: String,
}

impl ProcInfo {
    fn read(pid: i32) -> Option<ProcInfo> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .map(str::to_string)
        };
        let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
        let ppid = field("PPid:")?.parse().ok()?;
        let state = field("State:")?.split_whitespace().next()?.to_string();
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut cmd: String = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if cmd.is_empty() {
            cmd = format!("[{}]", field("Name:").unwrap_or_default());
        }
        Some(ProcInfo {
            uid,
            ppid,
            state,
            cmd,
        })
    }
}

/// `berth port NAME`: its published ports, `CONTAINER/PROTO -> ADDR:HOST` as docker prints.
pub fn port(cli: &Cli, name: &str) -> ExitCode {
    let v = match inspect(cli, name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let ports: Vec<crate::spec::PortMapping> =
        serde_json::from_value(v["spec"]["network"]["ports"].clone()).unwrap_or_default();
    for p in ports {
        let addr = p
            .host_ip
            .map(|a| a.to_string())
            .unwrap_or_else(|| "0.0.0.0".into());
        println!(
            "{}/{} -> {addr}:{}",
            p.container_port,
            p.protocol.as_str(),
            p.host_port
        );
    }
    ExitCode::SUCCESS
}
