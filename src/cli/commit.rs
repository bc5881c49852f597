//! `berth commit NAME REF`: asks the daemon which instance of NAME runs and from which image,
//! then turns that instance's writable layer into a new image recorded as REF.

use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
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
    let upper = cli.root().join("containers").join(id).join("upper");
    let store = match ImageStore::open(&cli.root()) {
        Ok(s) => s.with_progress(Progress::new(|line| eprintln!("{line}"))),
        Err(e) => return fail(e),
    };
    match store.commit(&base, &upper, &target, &format!("berth commit {name}")) {
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
