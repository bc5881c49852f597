//! What `ps` and `inspect` show of each container, read from the decision loop's records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::control::ContainerStatus;
use super::engine::Engine;
use crate::reconcile::Phase;
use crate::runtime::protocol::ExitStatus;

pub fn describe(status: ExitStatus, oom_killed: bool) -> String {
    let oom = if oom_killed { " (OOM killed)" } else { "" };
    match status {
        ExitStatus::Code(c) => format!("exit code {c}{oom}"),
        ExitStatus::Signal(s) => format!("signal {s}{oom}"),
    }
}

/// Every container the daemon knows or the spec dir names, sorted.
pub fn ps(e: &Engine, addresses: &BTreeMap<String, Ipv4Addr>) -> Vec<ContainerStatus> {
    let names: BTreeSet<&String> = e
        .records
        .keys()
        .chain(e.snapshot.desired.keys())
        .chain(e.snapshot.errors.keys())
        .collect();
    names
        .into_iter()
        .map(|n| status_of(e, n, addresses))
        .collect()
}

pub fn status_of(
    e: &Engine,
    name: &str,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> ContainerStatus {
    let r = e.records.get(name);
    let spec = e.spec_of(name);
    let state = match r {
        None => "pending",
        Some(r) => match (r.job, &r.obs.phase) {
            (Some("stopping" | "removing" | "killing"), _) => "stopping",
            (Some("updating"), _) => "updating",
            (Some(_), Phase::Running { .. }) => "running",
            (Some(_), _) => "starting",
            (None, Phase::Running { .. }) => "running",
            (None, _) if r.waiting.is_some() => "waiting",
            (None, Phase::Exiting { .. }) => "exited",
            (None, Phase::Exited { .. }) if r.obs.restart_at.is_some() => "restarting",
            (None, Phase::Exited { .. }) => "exited",
            (None, Phase::StartFailed { .. }) => "failed",
            (None, Phase::Stopped) => "stopped",
        },
    };
    let phase = r.map(|r| &r.obs.phase);
    let health = r.and_then(|r| r.health.as_ref());
    ContainerStatus {
        health: health.map(|h| h.status.as_str().to_string()),
        health_output: health
            .map(|h| h.last_output.clone())
            .filter(|o| !o.is_empty()),
        name: name.to_string(),
        state: state.to_string(),
        pid: match phase {
            Some(Phase::Running { pid, .. }) => Some(*pid),
            _ => None,
        },
        id: r.and_then(|r| r.instance.as_ref()).map(|i| i.id.clone()),
        image: spec.as_ref().map(|s| s.image.clone()).unwrap_or_default(),
        restarts: r.map(|r| r.obs.restarts).unwrap_or(0),
        last_exit: match phase {
            Some(Phase::Exited {
                status, oom_killed, ..
            }) => Some(describe(*status, *oom_killed)),
            _ => None,
        },
        note: r.and_then(|r| r.waiting.clone().or_else(|| r.note.clone())),
        spec_error: e.snapshot.errors.get(name).cloned(),
        ip: match phase {
            Some(Phase::Running { .. }) => addresses.get(name).copied(),
            _ => None,
        },
        ports: spec
            .map(|s| {
                s.network
                    .ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{}/{}",
                            p.host_port,
                            p.container_port,
                            p.protocol.as_str()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
