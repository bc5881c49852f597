//! `berth commit NAME REF`: asks the daemon which instance of NAME runs and from which image,
//! then turns that instance's writable layer into a new image recorded as REF, with the
//! container frozen meanwhile (as `docker commit` pauses it) so the layer is read in one state.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use super::{Cli, EXIT_BERTH_ERROR};
use crate::cgroups::{CgroupError, ContainerCgroup};
use crate::image::{ImageRef, ImageStore, Progress};
use crate::spec::ValidatedSpec;
use crate::state::Instance;
use crate::supervisor::control::{call, Request};

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

pub fn commit(cli: &Cli, name: &str, reference: &str) -> ExitCode {
    let target = match ImageRef::parse(reference) {
        Ok(ImageRef::Registry(r)) => r,
        Ok(_) => return fail(format!("{reference:?} is not a registry reference")),
        Err(e) => return fail(e),
    };
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
    let state = v["status"]["state"].as_str().unwrap_or("unknown");
    let Some(instance) = instance.filter(|_| state == "running") else {
        return fail(format!("container {name} is not running (state: {state})"));
    };
    let spec: ValidatedSpec = match serde_json::from_value(v["spec"].clone()) {
        Ok(s) => s,
        Err(e) => return fail(format!("bad response from the daemon: spec: {e}")),
    };
    let id = &instance.id;
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return fail(format!("container {name}: unexpected instance id {id:?}"));
    }
    let base = match ImageRef::parse(&spec.image) {
        Ok(r) => r,
        Err(e) => return fail(format!("container {name}: image {:?}: {e}", spec.image)),
    };
    // The daemon's own state dir and cgroup parent, whatever this command was given.
    let root = v["root"]
        .as_str()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cli.root());
    let cgroup_parent = cli.daemon_cgroup_parent(&v);
    let upper = root.join("containers").join(id).join("upper");
    let store = match ImageStore::open(&root) {
        Ok(s) => s.with_progress(Progress::new(|line| eprintln!("{line}"))),
        Err(e) => return fail(e),
    };
    let cgroup = match ContainerCgroup::open(&cgroup_parent, id) {
        Ok(Some(cg)) => cg,
        Ok(None) => return fail(format!("container {name}: no cgroup {cgroup_parent}/{id}")),
        Err(e) => return fail(e),
    };
    let result = {
        let _frozen = match Frozen::new(&cgroup) {
            Ok(f) => f,
            Err(e) => return fail(format!("container {name}: {e}")),
        };
        store.commit(&base, &upper, &target, &format!("berth commit {name}"))
    };
    match result {
        Ok((rec, stats)) => {
            eprintln!(
                "{name}: {} entries ({} whiteouts, {} opaque dirs) committed",
                stats.entries, stats.whiteouts, stats.opaque_dirs
            );
            println!("{} {}", rec.name, rec.digest);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// A frozen container cgroup, thawed on drop. Meanwhile the signals that end this command
/// from a terminal or a service manager are held, so an interrupt takes effect only once the
/// container runs again.
struct Frozen<'a> {
    cgroup: &'a ContainerCgroup,
    held: SigSet,
}

impl<'a> Frozen<'a> {
    fn new(cgroup: &'a ContainerCgroup) -> Result<Frozen<'a>, CgroupError> {
        let mut held = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            held.add(s);
        }
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), None);
        match cgroup.freeze() {
            Ok(()) => Ok(Frozen { cgroup, held }),
            Err(e) => {
                let _ =
                    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&held), None);
                Err(e)
            }
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cgroup.thaw() {
            eprintln!("berth: thawing the container: {e}");
        }
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&self.held), None);
    }
}
