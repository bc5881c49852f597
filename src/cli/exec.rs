//! `berth exec [-i] NAME -- CMD [ARGS...]`: asks the daemon which process is the container's
//! init, decides the exec plan, then becomes the exec helper (see `runtime::exec`), so the exit
//! code is the command's.

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

pub fn exec(cli: &Cli, name: &str, command: &[String], interactive: bool, tty: bool) -> ExitCode {
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
    let plan = match exec::plan(&target, command.to_vec(), interactive || tty, tty) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // The daemon's state root, whatever this command was given.
    let root = v["root"]
        .as_str()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cli.root());
    // Returns only if the helper could not be started.
    fail(exec::exec(&root, &plan))
}
