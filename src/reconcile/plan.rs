//! The planner: a pure function from the desired containers (the spec dir's last good versions),
//! the observed containers and the time to the actions to take now. It owns the rules below and
//! nothing else: it never touches the runtime, the clock, the state dir or randomness (the
//! caller passes `now` and `jitter`), so it is table-tested without root.
//!
//! # Rules, per container name (the returned actions are sorted by name, one per container)
//! - **busy** (an action is being carried out for it): no action, not even `Remove`.
//! - **desired, not observed**: `Start`.
//! - **observed, not desired** (its file is gone): `Remove`, once it is not busy.
//! - Specs are compared by [`classify`], which ignores `file`: a difference in the image,
//!   command, entrypoint, env, workdir, user, hostname, readonly_rootfs, caps, network mode,
//!   ip, ports or mounts needs a new container; else a difference in `resources` or in a bridge
//!   container's `egress`/`ingress` can be applied in place; else a difference in `restart`,
//!   `stop_signal`, `stop_timeout` or `[health]` only needs recording (a new probe applies
//!   to the running instance).
//! - **Exiting** (its process ended, not cleaned up yet): `Cleanup`.
//! - **manual_stop** (`berth stop`): `Stop` while it runs, then no action while the desired
//!   spec equals `observed.spec`, whatever the phase and even when a restart was pending (the
//!   stop cancels it and sticks across exits). A spec change clears it: the rules below apply
//!   as if it were not stopped.
//! - **restart_requested** (`berth restart`): `Stop` while it runs, then `Start`.
//! - **Unhealthy** (its probe failed `retries` times) while running, with `on_unhealthy`
//!   restart or stop, and no new container needed anyway: `KillUnhealthy`. Once it has ended,
//!   `on_unhealthy = "stop"` means `Leave`; "restart" leaves it to the restart policy and its
//!   backoff, as any failure.
//! - **failed_update**: a `Recreate` to that desired spec failed and the old instance runs on:
//!   while the desired spec is that one, the old version counts as desired (no recreate, and
//!   its restarts start the old version: [`spec_to_start`]).
//! - **Running**: `Recreate` / `UpdateResources` (with the new limits, and the new bandwidth
//!   when it changed) / `Adopt` / nothing, following [`classify`].
//! - **Stopped** (and not held by a manual stop): `Start` (not started yet, or the spec changed
//!   since the manual stop).
//! - **Exited / StartFailed**: a spec change -> `Start` right away (the change is the fix).
//!   Else a pending restart (`restart_at`) that is due (`<= now`) -> `Start`; pending and not due
//!   -> nothing. Else ask the policy (the desired spec's `[restart]`, see `policy.rs`): the
//!   policy does not restart this ending (`never`, `on-failure` after exit code 0) or
//!   `max_retries` is reached -> `Leave { reason }`; otherwise `ScheduleRestart` after
//!   `backoff(restart, observed.restarts, jitter)`.
//!
//! # What the daemon does with the actions (so that planning again converges)
//! - `Start`, `Recreate`, `UpdateResources`, `Adopt`: afterwards `observed.spec` is the desired
//!   spec; `Start` and `Recreate` clear `manual_stop` and `restart_at`. A `Recreate` fetches the
//!   new image before it stops the old container.
//! - `ScheduleRestart`: sets `restart_at = now + delay`; the `Start` when it is due counts one
//!   more restart in `restarts`. When a container exits, `restarts` becomes
//!   `policy::consecutive_after_run(..)`.
//! - `Leave` is returned on every planning pass while the container stays ended: record the
//!   reason, report it once.
//! - `Stop` ends in `Stopped` (and clears `restart_requested`); `Cleanup` in `Exited`; an exit
//!   the daemon observes sets `Exiting`. A failed `Recreate` keeps (or restores) the old
//!   instance and sets `failed_update` to the desired spec.
//! - **trial** (a new version started by a `Recreate`, while `update.rollback`): unchanged
//!   desired spec and it ended, failed to start or is unhealthy -> `Rollback`; it ran for
//!   `update.healthy_for` (and is healthy, with a probe) -> `Confirm`.
//! - [`plan_shutdown`] replaces `plan` once the daemon shuts down: containers stop in reverse
//!   dependency order, each once nothing that depends on it runs.
//! - Every `Start` waits for the spec's `depends_on`: a dependency not ready by its condition
//!   (started: running; healthy: running and healthy; completed: exited with code 0) turns it
//!   into `Wait { reason }`, at boot, after adoption, after an edit and on every restart.
//! - A file that turns invalid is not the planner's concern: the source keeps its last good
//!   version in the `DesiredSet`, so the container keeps running.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reconcile::health::Health;
use crate::reconcile::policy;
use crate::runtime::protocol::ExitStatus;
use crate::spec::{
    Condition, NetworkMode, NetworkSpec, OnUnhealthy, Resources, RestartPolicy, ValidatedSpec,
};

/// One container the spec dir asks for (the last good version of its file).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub spec: Arc<ValidatedSpec>,
}

/// The desired containers, by container name.
pub type DesiredSet = BTreeMap<String, Desired>;

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Created and running (possibly adopted after a daemon restart).
    Running { pid: i32, since: Instant },
    /// Its process ended.
    Exited {
        status: ExitStatus,
        oom_killed: bool,
        at: Instant,
    },
    /// Starting it failed (image missing, bad command...).
    StartFailed { error: String, at: Instant },
    /// Stopped on request (`berth stop`) or not started yet.
    Stopped,
    /// Its process ended and what it leaves (cgroup, state dir, network) is not cleaned up yet.
    Exiting { at: Instant },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The spec the current/last instance was started from.
    pub spec: Arc<ValidatedSpec>,
    pub phase: Phase,
    /// An action for this container is being carried out: plan nothing else for it.
    pub busy: bool,
    /// Stopped by `berth stop`: no restart until a start or a spec change.
    pub manual_stop: bool,
    /// Consecutive restarts since the container last ran at least `reset_after`.
    pub restarts: u32,
    /// When the pending restart is due (set by the daemon from an `Action::ScheduleRestart`).
    pub restart_at: Option<Instant>,
    /// `berth restart`: stop the running instance, then start it again.
    pub restart_requested: bool,
    /// A desired spec whose `Recreate` failed (its image could not be fetched or its container
    /// did not start); the old instance runs on and that spec is not tried again.
    pub failed_update: Option<Arc<ValidatedSpec>>,
    /// The running instance's health, when its spec has a probe.
    pub health: Option<Health>,
    /// The last instance was killed for being unhealthy.
    pub killed_unhealthy: bool,
    /// A new version on trial: it must run (healthy, with a probe) for its
    /// `update.healthy_for` from `since`, or it is rolled back to `previous`.
    pub trial: Option<Trial>,
}

/// A version being tried after an update.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub since: Instant,
    pub previous: Arc<ValidatedSpec>,
}

impl Observed {
    /// A container first seen with `spec`, not started yet.
    pub fn new(spec: Arc<ValidatedSpec>) -> Observed {
        Observed {
            spec,
            phase: Phase::Stopped,
            busy: false,
            manual_stop: false,
            restarts: 0,
            restart_at: None,
            restart_requested: false,
            failed_update: None,
            health: None,
            killed_unhealthy: false,
            trial: None,
        }
    }

    /// What its running version's probe does when unhealthy (`None` without a probe).
    fn on_unhealthy(&self) -> OnUnhealthy {
        self.spec
            .health
            .as_ref()
            .map_or(OnUnhealthy::None, |h| h.on_unhealthy)
    }
}

/// The observed containers, by container name.
pub type ObservedSet = BTreeMap<String, Observed>;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create and start the container from the desired spec (first time, or a restart after exit).
    Start { name: String },
    /// Stop it and remove it (no longer desired).
    Remove { name: String },
    /// Stop the running instance (its stop signal, SIGKILL after its stop_timeout) and clean it
    /// up: `berth stop`, `berth restart`, the daemon's shutdown.
    Stop { name: String },
    /// Its process ended: record how, and remove what it left.
    Cleanup { name: String },
    /// The version on trial failed (`reason`): stop what is left of it and start the previous
    /// version again; that new version is not tried again until the file changes.
    Rollback { name: String, reason: String },
    /// The version on trial ran (and was healthy) for its `healthy_for`: keep it.
    Confirm { name: String },
    /// It should start, but a dependency is not ready by its condition; `reason` says which.
    Wait { name: String, reason: String },
    /// Its probe says unhealthy and `on_unhealthy` is restart or stop: SIGKILL it (it no
    /// longer answers), clean it up; then the restart policy, or the stop, applies.
    KillUnhealthy { name: String },
    /// The spec changed in a way that needs a new container: fetch the new image first, then stop
    /// the old one and start the new.
    Recreate { name: String },
    /// Only [resources] or the bandwidth limits changed: apply the new cgroup limits, and the
    /// new bandwidth when it changed, to the running container in place.
    UpdateResources {
        name: String,
        resources: Resources,
        bandwidth: Option<Bandwidth>,
    },
    /// Only restart/stop settings changed: record the new spec, nothing to do to the process.
    Adopt { name: String },
    /// Exited and the policy says restart after `delay` (the daemon arms a timer and sets
    /// restart_at).
    ScheduleRestart { name: String, delay: Duration },
    /// Exited and the policy says not to restart (never / on-failure with exit 0 / max_retries
    /// reached); `reason` says which.
    Leave { name: String, reason: String },
}

impl Action {
    /// The container the action is for.
    pub fn name(&self) -> &str {
        match self {
            Action::Start { name }
            | Action::Remove { name }
            | Action::Stop { name }
            | Action::Cleanup { name }
            | Action::KillUnhealthy { name }
            | Action::Recreate { name }
            | Action::UpdateResources { name, .. }
            | Action::Adopt { name }
            | Action::ScheduleRestart { name, .. }
            | Action::Leave { name, .. }
            | Action::Wait { name, .. }
            | Action::Rollback { name, .. }
            | Action::Confirm { name } => name,
        }
    }
}

/// A bridge-mode container's bandwidth limits, bits per second (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub egress: Option<u64>,
    pub ingress: Option<u64>,
}

impl Bandwidth {
    fn of(spec: &ValidatedSpec) -> Bandwidth {
        Bandwidth {
            egress: spec.network.egress,
            ingress: spec.network.ingress,
        }
    }
}

/// How a new spec differs from the one the current instance was started from (the largest
/// difference wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecChange {
    /// Equal, apart from `file`.
    None,
    /// Only `restart`, `stop_signal` or `stop_timeout` differ: nothing to do to the process.
    Settings,
    /// `resources` or a bridge container's `egress`/`ingress` differ (and maybe the settings):
    /// new limits for the running container.
    Resources,
    /// Anything else differs: the container must be created again.
    Recreate,
}

/// Compare `old` (what runs) with `new` (what is desired). `file` is ignored.
pub fn classify(old: &ValidatedSpec, new: &ValidatedSpec) -> SpecChange {
    // Destructured field by field so that a field added to ValidatedSpec must be classified here.
    let ValidatedSpec {
        name,
        file: _,
        image,
        command,
        entrypoint,
        env,
        workdir,
        user,
        hostname,
        readonly_rootfs,
        stop_signal,
        stop_timeout,
        cap_add,
        cap_drop,
        restart,
        resources,
        network,
        mounts,
        health,
        depends_on,
        update,
        build,
    } = old;
    let needs_new_container = *name != new.name
        || *image != new.image
        || *build != new.build
        || *command != new.command
        || *entrypoint != new.entrypoint
        || *env != new.env
        || *workdir != new.workdir
        || *user != new.user
        || *hostname != new.hostname
        || *readonly_rootfs != new.readonly_rootfs
        || *cap_add != new.cap_add
        || *cap_drop != new.cap_drop
        || network_needs_new_container(network, &new.network)
        || *mounts != new.mounts;
    if needs_new_container {
        SpecChange::Recreate
    } else if *resources != new.resources
        || (network.egress, network.ingress) != (new.network.egress, new.network.ingress)
    {
        SpecChange::Resources
    } else if *restart != new.restart
        || *stop_signal != new.stop_signal
        || *stop_timeout != new.stop_timeout
        || *health != new.health
        || *depends_on != new.depends_on
        || *update != new.update
    {
        SpecChange::Settings
    } else {
        SpecChange::None
    }
}

/// Whether a network change needs a new container: anything but a bridge container's
/// bandwidth limits (which change in place).
fn network_needs_new_container(old: &NetworkSpec, new: &NetworkSpec) -> bool {
    old.mode != new.mode
        || old.ip != new.ip
        || old.ports != new.ports
        || (old.mode != NetworkMode::Bridge && old != new)
}

/// Pure: what to do now. `jitter` in [0, 1) scales the random part of backoff delays (pass a
/// fixed value in tests). At most one action per container, sorted by container name.
pub fn plan(
    desired: &DesiredSet,
    observed: &ObservedSet,
    now: Instant,
    jitter: f64,
) -> Vec<Action> {
    let names: BTreeSet<&String> = desired.keys().chain(observed.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let action = plan_one(name, desired.get(name), observed.get(name), now, jitter)?;
            match (&action, desired.get(name)) {
                (Action::Start { .. }, Some(d)) => match waiting_on(&d.spec, observed) {
                    Some(reason) => Some(Action::Wait {
                        name: name.clone(),
                        reason,
                    }),
                    None => Some(action),
                },
                _ => Some(action),
            }
        })
        .collect()
}

/// Why `spec` cannot start yet: the first of its dependencies that is not ready (by its
/// condition), or `None` when all are.
pub fn waiting_on(spec: &ValidatedSpec, observed: &ObservedSet) -> Option<String> {
    spec.depends_on.iter().find_map(|(dep, cond)| {
        let o = observed.get(dep);
        let ready = o.is_some_and(|o| match cond {
            Condition::Started => matches!(o.phase, Phase::Running { .. }),
            Condition::Healthy => {
                matches!(o.phase, Phase::Running { .. }) && o.health == Some(Health::Healthy)
            }
            Condition::Completed => matches!(
                o.phase,
                Phase::Exited {
                    status: ExitStatus::Code(0),
                    ..
                }
            ),
        });
        if ready {
            return None;
        }
        let now = match o.map(|o| (&o.phase, o.health)) {
            None => "not created yet".to_string(),
            Some((Phase::Running { .. }, Some(h))) => format!("running, {}", h.as_str()),
            Some((Phase::Running { .. }, None)) => "running".into(),
            Some((Phase::Exited { status, .. }, _)) => format!("exited ({status:?})"),
            Some((Phase::StartFailed { .. }, _)) => "failed to start".into(),
            Some((Phase::Stopped, _)) => "stopped".into(),
            Some((Phase::Exiting { .. }, _)) => "exiting".into(),
        };
        Some(format!(
            "waiting for {dep} to be {} (it is {now})",
            match cond {
                Condition::Completed => "completed (exit 0)",
                c => c.as_str(),
            }
        ))
    })
}

/// The planner while the daemon shuts down: every running container is stopped and every
/// ended one cleaned up, all at once (each has its own worker); nothing starts or restarts.
/// Busy containers finish what they are doing first. The shutdown is over when this returns
/// nothing and no container is busy.
pub fn plan_shutdown(observed: &ObservedSet) -> Vec<Action> {
    // A container is stopped once nothing that depends on it still runs or is busy (reverse
    // dependency order); if that holds every running one back (a cycle among last good
    // specs), all are stopped.
    let held = |name: &String| {
        observed.iter().any(|(other, o)| {
            other != name
                && o.spec.depends_on.contains_key(name)
                && (o.busy || matches!(o.phase, Phase::Running { .. }))
        })
    };
    let idle_running = || {
        observed
            .iter()
            .filter(|(_, o)| !o.busy && matches!(o.phase, Phase::Running { .. }))
    };
    let mut stops: Vec<&String> = idle_running()
        .map(|(n, _)| n)
        .filter(|n| !held(n))
        .collect();
    let any_busy = observed.values().any(|o| o.busy);
    if stops.is_empty() && !any_busy {
        stops = idle_running().map(|(n, _)| n).collect();
    }
    let mut actions: Vec<Action> = observed
        .iter()
        .filter(|(_, o)| !o.busy && matches!(o.phase, Phase::Exiting { .. }))
        .map(|(n, _)| Action::Cleanup { name: n.clone() })
        .chain(stops.into_iter().map(|n| Action::Stop { name: n.clone() }))
        .collect();
    actions.sort_by(|a, b| a.name().cmp(b.name()));
    actions
}

fn plan_one(
    name: &str,
    desired: Option<&Desired>,
    observed: Option<&Observed>,
    now: Instant,
    jitter: f64,
) -> Option<Action> {
    let name = name.to_string();
    let (desired, observed) = match (desired, observed) {
        (None, None) => return None,
        (Some(_), None) => return Some(Action::Start { name }),
        (_, Some(o)) if o.busy => return None,
        (None, Some(_)) => return Some(Action::Remove { name }),
        (Some(d), Some(o)) => (d, o),
    };
    if let Phase::Exiting { .. } = observed.phase {
        return Some(Action::Cleanup { name });
    }
    // A desired spec that failed as an update is held back: the version that works is the
    // one to keep running, restart and compare against, until the file changes again.
    let change = if held_back(observed, desired) {
        SpecChange::None
    } else {
        classify(&observed.spec, &desired.spec)
    };
    let running = matches!(observed.phase, Phase::Running { .. });
    if observed.manual_stop && change == SpecChange::None {
        return running.then_some(Action::Stop { name });
    }
    if running && observed.restart_requested {
        return Some(Action::Stop { name });
    }
    if let (Some(trial), SpecChange::None) = (&observed.trial, change) {
        if let Some(action) = judge_trial(name.clone(), observed, trial, now) {
            return Some(action);
        }
    }
    if running
        && change != SpecChange::Recreate
        && observed.health == Some(Health::Unhealthy)
        && observed.on_unhealthy() != OnUnhealthy::None
    {
        return Some(Action::KillUnhealthy { name });
    }
    match &observed.phase {
        Phase::Exiting { .. } => None,
        Phase::Running { .. } => match change {
            SpecChange::None => None,
            SpecChange::Settings => Some(Action::Adopt { name }),
            SpecChange::Resources => Some(Action::UpdateResources {
                name,
                resources: desired.spec.resources.clone(),
                bandwidth: (Bandwidth::of(&observed.spec) != Bandwidth::of(&desired.spec))
                    .then(|| Bandwidth::of(&desired.spec)),
            }),
            SpecChange::Recreate => Some(Action::Recreate { name }),
        },
        Phase::Stopped => Some(Action::Start { name }),
        Phase::Exited {
            status, oom_killed, ..
        } => after_end(
            name,
            desired,
            observed,
            change,
            Ended::Exited(*status, *oom_killed),
            now,
            jitter,
        ),
        Phase::StartFailed { error, .. } => after_end(
            name,
            desired,
            observed,
            change,
            Ended::StartFailed(error),
            now,
            jitter,
        ),
    }
}

/// Whether the desired spec is the one whose update failed (see `Observed::failed_update`).
fn held_back(o: &Observed, desired: &Desired) -> bool {
    o.failed_update
        .as_ref()
        .is_some_and(|f| classify(f, &desired.spec) == SpecChange::None)
}

/// The spec a `Start` of this container runs: the desired one, unless it is held back after a
/// failed update, then the version that ran last.
pub fn spec_to_start(desired: &Desired, observed: Option<&Observed>) -> Arc<ValidatedSpec> {
    match observed {
        Some(o) if held_back(o, desired) => Arc::clone(&o.spec),
        _ => Arc::clone(&desired.spec),
    }
}

/// The version on trial: rolled back when it ended or is unhealthy, kept once it ran (and was
/// healthy) for `healthy_for`, else nothing yet.
fn judge_trial(name: String, o: &Observed, trial: &Trial, now: Instant) -> Option<Action> {
    let rollback = |reason: String| {
        Some(Action::Rollback {
            name: name.clone(),
            reason,
        })
    };
    let within = humantime::format_duration(o.spec.update.healthy_for);
    match &o.phase {
        Phase::Running { .. } if o.health == Some(Health::Unhealthy) => {
            rollback(format!("the new version became unhealthy within {within}"))
        }
        Phase::Running { .. } => {
            let ran = now.saturating_duration_since(trial.since) >= o.spec.update.healthy_for;
            let healthy = o.spec.health.is_none() || o.health == Some(Health::Healthy);
            (ran && healthy).then(|| Action::Confirm { name: name.clone() })
        }
        Phase::Exited { status, .. } => rollback(format!(
            "the new version exited ({}) within {within}",
            match status {
                ExitStatus::Code(c) => format!("code {c}"),
                ExitStatus::Signal(s) => format!("signal {s}"),
            }
        )),
        Phase::StartFailed { error, .. } => {
            rollback(format!("the new version failed to start: {error}"))
        }
        Phase::Stopped | Phase::Exiting { .. } => None,
    }
}

/// How the last instance ended, for the policy and the `Leave` reason.
enum Ended<'a> {
    Exited(ExitStatus, bool),
    StartFailed(&'a str),
}

impl Ended<'_> {
    fn status(&self) -> Option<ExitStatus> {
        match self {
            Ended::Exited(status, _) => Some(*status),
            Ended::StartFailed(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Ended::Exited(ExitStatus::Code(c), oom) => {
                format!("exited with code {c}{}", oom_note(*oom))
            }
            Ended::Exited(ExitStatus::Signal(s), oom) => {
                format!("killed by signal {s}{}", oom_note(*oom))
            }
            Ended::StartFailed(error) => format!("failed to start: {error}"),
        }
    }
}

fn oom_note(oom_killed: bool) -> &'static str {
    if oom_killed {
        " (out of memory)"
    } else {
        ""
    }
}

fn after_end(
    name: String,
    desired: &Desired,
    observed: &Observed,
    change: SpecChange,
    ended: Ended<'_>,
    now: Instant,
    jitter: f64,
) -> Option<Action> {
    if change != SpecChange::None || observed.restart_requested {
        return Some(Action::Start { name });
    }
    if observed.killed_unhealthy && observed.on_unhealthy() == OnUnhealthy::Stop {
        return Some(Action::Leave {
            name,
            reason: "stopped: unhealthy (on_unhealthy = \"stop\")".into(),
        });
    }
    match observed.restart_at {
        Some(due) if due <= now => return Some(Action::Start { name }),
        Some(_) => return None,
        None => {}
    }
    let restart = &desired.spec.restart;
    if !policy::should_restart(restart.policy, ended.status()) {
        let policy = match restart.policy {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        };
        return Some(Action::Leave {
            name,
            reason: format!("restart policy {policy}: {}", ended.describe()),
        });
    }
    if policy::gives_up(restart, observed.restarts) {
        return Some(Action::Leave {
            name,
            reason: format!(
                "max_retries ({}) reached after {} restarts: {}",
                restart.max_retries,
                observed.restarts,
                ended.describe()
            ),
        });
    }
    Some(Action::ScheduleRestart {
        name,
        delay: policy::backoff(restart, observed.restarts, jitter),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MountSpec, NetworkMode, NetworkSpec, RestartSpec};

    fn spec_named(name: &str) -> ValidatedSpec {
        ValidatedSpec {
            name: name.into(),
            file: format!("/specs/{name}.toml").into(),
            image: "oci:/img:v1".into(),
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            workdir: None,
            user: None,
            hostname: name.into(),
            readonly_rootfs: false,
            stop_signal: 15,
            stop_timeout: Duration::from_secs(10),
            cap_add: vec![],
            cap_drop: vec![],
            restart: RestartSpec {
                policy: RestartPolicy::Always,
                max_retries: 0,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(30),
                backoff_reset_after: Duration::from_secs(60),
            },
            resources: Resources::default(),
            network: NetworkSpec {
                mode: NetworkMode::None,
                ip: None,
                ports: vec![],
                egress: None,
                ingress: None,
            },
            mounts: vec![],
            health: None,
            depends_on: Default::default(),
            update: Default::default(),
            build: None,
        }
    }

    fn spec() -> ValidatedSpec {
        spec_named("web")
    }

    fn with(f: impl FnOnce(&mut ValidatedSpec)) -> ValidatedSpec {
        let mut s = spec();
        f(&mut s);
        s
    }

    fn observed(spec: ValidatedSpec, phase: Phase) -> Observed {
        Observed {
            phase,
            ..Observed::new(Arc::new(spec))
        }
    }

    fn probed(on_unhealthy: OnUnhealthy) -> ValidatedSpec {
        with(|s| {
            s.health = Some(crate::spec::HealthSpec {
                probe: crate::spec::Probe::Tcp { port: 80 },
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                retries: 3,
                start_period: Duration::ZERO,
                on_unhealthy,
            })
        })
    }

    fn trial(since: Instant) -> Trial {
        Trial {
            since,
            previous: Arc::new(spec()),
        }
    }

    fn o_with_spec(spec: ValidatedSpec, phase: Phase, f: &dyn Fn(&mut Observed)) -> Observed {
        let mut o = observed(spec, phase);
        f(&mut o);
        o
    }

    fn desired_set(specs: &[ValidatedSpec]) -> DesiredSet {
        specs
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Desired {
                        spec: Arc::new(s.clone()),
                    },
                )
            })
            .collect()
    }

    fn observed_set(list: &[Observed]) -> ObservedSet {
        list.iter()
            .map(|o| (o.spec.name.clone(), o.clone()))
            .collect()
    }

    fn start() -> Action {
        Action::Start { name: "web".into() }
    }

    /// One container, "web": the desired spec (None = no file), what is observed (None =
    /// nothing), the single action wanted (None = no action).
    struct Case {
        what: &'static str,
        desired: Option<ValidatedSpec>,
        observed: Option<Observed>,
        want: Option<Action>,
    }

    fn run(cases: Vec<Case>, now: Instant, jitter: f64) {
        let mut failures = vec![];
        for c in &cases {
            let desired = desired_set(c.desired.as_slice());
            let observed = observed_set(c.observed.as_slice());
            let got = plan(&desired, &observed, now, jitter);
            let want: Vec<Action> = c.want.iter().cloned().collect();
            if got != want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", c.what));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn classify_table() {
        let base = spec();
        let cases: Vec<(&str, ValidatedSpec, SpecChange)> = vec![
            ("equal", spec(), SpecChange::None),
            (
                "file only",
                with(|s| s.file = "/elsewhere/web.toml".into()),
                SpecChange::None,
            ),
            (
                "image",
                with(|s| s.image = "oci:/img:v2".into()),
                SpecChange::Recreate,
            ),
            (
                "command",
                with(|s| s.command = Some(vec!["sh".into()])),
                SpecChange::Recreate,
            ),
            (
                "entrypoint",
                with(|s| s.entrypoint = Some(vec!["/e".into()])),
                SpecChange::Recreate,
            ),
            (
                "env",
                with(|s| {
                    s.env.insert("TZ".into(), "UTC".into());
                }),
                SpecChange::Recreate,
            ),
            (
                "workdir",
                with(|s| s.workdir = Some("/srv".into())),
                SpecChange::Recreate,
            ),
            (
                "user",
                with(|s| s.user = Some("1000".into())),
                SpecChange::Recreate,
            ),
            (
                "hostname",
                with(|s| s.hostname = "other".into()),
                SpecChange::Recreate,
            ),
            (
                "readonly_rootfs",
                with(|s| s.readonly_rootfs = true),
                SpecChange::Recreate,
            ),
            (
                "cap_add",
                with(|s| s.cap_add = vec!["NET_ADMIN".into()]),
                SpecChange::Recreate,
            ),
            (
                "cap_drop",
                with(|s| s.cap_drop = vec!["CHOWN".into()]),
                SpecChange::Recreate,
            ),
            (
                "network mode",
                with(|s| s.network.mode = NetworkMode::Host),
                SpecChange::Recreate,
            ),
            (
                "network egress",
                with(|s| s.network.egress = Some(10_000_000)),
                SpecChange::Recreate,
            ),
            (
                "mounts",
                with(|s| {
                    s.mounts.push(MountSpec {
                        source: "/srv/data".into(),
                        target: "/data".into(),
                        readonly: true,
                    })
                }),
                SpecChange::Recreate,
            ),
            (
                "memory",
                with(|s| s.resources.memory = Some(256 << 20)),
                SpecChange::Resources,
            ),
            (
                "cpus",
                with(|s| s.resources.cpus = Some(0.5)),
                SpecChange::Resources,
            ),
            (
                "pids",
                with(|s| s.resources.pids = Some(64)),
                SpecChange::Resources,
            ),
            (
                "resources and restart",
                with(|s| {
                    s.resources.pids = Some(64);
                    s.restart.max_retries = 3;
                }),
                SpecChange::Resources,
            ),
            (
                "image and resources",
                with(|s| {
                    s.image = "oci:/img:v2".into();
                    s.resources.pids = Some(64);
                }),
                SpecChange::Recreate,
            ),
            (
                "restart policy",
                with(|s| s.restart.policy = RestartPolicy::Never),
                SpecChange::Settings,
            ),
            (
                "backoff",
                with(|s| s.restart.backoff_initial = Duration::ZERO),
                SpecChange::Settings,
            ),
            (
                "stop_signal",
                with(|s| s.stop_signal = 2),
                SpecChange::Settings,
            ),
            (
                "stop_timeout",
                with(|s| s.stop_timeout = Duration::from_secs(1)),
                SpecChange::Settings,
            ),
        ];
        for (what, new, want) in cases {
            assert_eq!(classify(&base, &new), want, "{what}");
        }
    }

    #[test]
    fn plan_table() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        let running = Phase::Running {
            pid: 1234,
            since: t0,
        };
        let exited = |code| Phase::Exited {
            status: ExitStatus::Code(code),
            oom_killed: false,
            at: now,
        };
        let killed = |sig, oom| Phase::Exited {
            status: ExitStatus::Signal(sig),
            oom_killed: oom,
            at: now,
        };
        let start_failed = Phase::StartFailed {
            error: "image oci:/img:v1 not found".into(),
            at: now,
        };
        let new_image = || with(|s| s.image = "oci:/img:v2".into());
        let policy = |p| with(|s| s.restart.policy = p);
        let o = |phase: Phase| observed(spec(), phase);
        let o_with = |phase: Phase, f: &dyn Fn(&mut Observed)| {
            let mut ob = observed(spec(), phase);
            f(&mut ob);
            ob
        };
        let schedule = |ms| {
            Some(Action::ScheduleRestart {
                name: "web".into(),
                delay: Duration::from_millis(ms),
            })
        };
        let leave = |reason: &str| {
            Some(Action::Leave {
                name: "web".into(),
                reason: reason.into(),
            })
        };

        let cases = vec![
            // Presence.
            Case {
                what: "new file -> start",
                desired: Some(spec()),
                observed: None,
                want: Some(start()),
            },
            Case {
                what: "file gone, running -> remove",
                desired: None,
                observed: Some(o(running.clone())),
                want: Some(Action::Remove { name: "web".into() }),
            },
            Case {
                what: "file gone, exited -> remove",
                desired: None,
                observed: Some(o(exited(1))),
                want: Some(Action::Remove { name: "web".into() }),
            },
            Case {
                what: "file gone, manually stopped -> remove",
                desired: None,
                observed: Some(o_with(Phase::Stopped, &|ob| ob.manual_stop = true)),
                want: Some(Action::Remove { name: "web".into() }),
            },
            Case {
                what: "file gone but busy -> wait",
                desired: None,
                observed: Some(o_with(running.clone(), &|ob| ob.busy = true)),
                want: None,
            },
            // Busy containers are left alone whatever else holds.
            Case {
                what: "busy, image changed",
                desired: Some(new_image()),
                observed: Some(o_with(running.clone(), &|ob| ob.busy = true)),
                want: None,
            },
            Case {
                what: "busy, exited",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| ob.busy = true)),
                want: None,
            },
            Case {
                what: "busy, restart due",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.busy = true;
                    ob.restart_at = Some(t0);
                })),
                want: None,
            },
            Case {
                what: "busy, not started yet",
                desired: Some(spec()),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.busy = true)),
                want: None,
            },
            // Running.
            Case {
                what: "running, unchanged",
                desired: Some(spec()),
                observed: Some(o(running.clone())),
                want: None,
            },
            Case {
                what: "running, only file path differs",
                desired: Some(with(|s| s.file = "/other/web.toml".into())),
                observed: Some(o(running.clone())),
                want: None,
            },
            Case {
                what: "running, image changed -> recreate",
                desired: Some(new_image()),
                observed: Some(o(running.clone())),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "running, env changed -> recreate",
                desired: Some(with(|s| {
                    s.env.insert("A".into(), "1".into());
                })),
                observed: Some(o(running.clone())),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "running, mount changed -> recreate",
                desired: Some(with(|s| {
                    s.mounts.push(MountSpec {
                        source: "/a".into(),
                        target: "/b".into(),
                        readonly: false,
                    })
                })),
                observed: Some(o(running.clone())),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "running, resources only -> update in place with the new values",
                desired: Some(with(|s| {
                    s.resources.memory = Some(512 << 20);
                    s.resources.cpus = Some(1.5);
                    s.resources.cpuset = Some("0-1".into());
                })),
                observed: Some(o(running.clone())),
                want: Some(Action::UpdateResources {
                    name: "web".into(),
                    resources: Resources {
                        memory: Some(512 << 20),
                        cpus: Some(1.5),
                        cpuset: Some("0-1".into()),
                        ..Resources::default()
                    },
                    bandwidth: None,
                }),
            },
            Case {
                what: "running on the bridge, bandwidth only -> update in place",
                desired: Some(with(|s| {
                    s.network.mode = NetworkMode::Bridge;
                    s.network.egress = Some(20_000_000);
                })),
                observed: Some(observed(
                    with(|s| {
                        s.network.mode = NetworkMode::Bridge;
                        s.network.egress = Some(8_000_000);
                        s.network.ingress = Some(8_000_000);
                    }),
                    running.clone(),
                )),
                want: Some(Action::UpdateResources {
                    name: "web".into(),
                    resources: Resources::default(),
                    bandwidth: Some(Bandwidth {
                        egress: Some(20_000_000),
                        ingress: None,
                    }),
                }),
            },
            Case {
                what: "running on the bridge, ports changed -> recreate",
                desired: Some(with(|s| {
                    s.network.mode = NetworkMode::Bridge;
                    s.network.ports = vec![crate::spec::PortMapping {
                        host_ip: None,
                        host_port: 8080,
                        container_port: 80,
                        protocol: crate::spec::Protocol::Tcp,
                    }];
                })),
                observed: Some(observed(
                    with(|s| s.network.mode = NetworkMode::Bridge),
                    running.clone(),
                )),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "running, network mode changed -> recreate",
                desired: Some(with(|s| s.network.mode = NetworkMode::Bridge)),
                observed: Some(o(running.clone())),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "running, restart settings only -> adopt",
                desired: Some(with(|s| s.restart.max_retries = 5)),
                observed: Some(o(running.clone())),
                want: Some(Action::Adopt { name: "web".into() }),
            },
            Case {
                what: "running, stop_timeout only -> adopt",
                desired: Some(with(|s| s.stop_timeout = Duration::from_secs(3))),
                observed: Some(o(running.clone())),
                want: Some(Action::Adopt { name: "web".into() }),
            },
            Case {
                what: "running with a stale restart_at -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| ob.restart_at = Some(t0))),
                want: None,
            },
            // Not started yet.
            Case {
                what: "stopped, not by hand -> start",
                desired: Some(spec()),
                observed: Some(o(Phase::Stopped)),
                want: Some(start()),
            },
            // Exits under each policy.
            Case {
                what: "always, exit 0 -> restart",
                desired: Some(spec()),
                observed: Some(o(exited(0))),
                want: schedule(100),
            },
            Case {
                what: "always, exit 1 -> restart",
                desired: Some(spec()),
                observed: Some(o(exited(1))),
                want: schedule(100),
            },
            Case {
                what: "on-failure, exit 0 -> leave",
                desired: Some(policy(RestartPolicy::OnFailure)),
                observed: Some(observed(policy(RestartPolicy::OnFailure), exited(0))),
                want: leave("restart policy on-failure: exited with code 0"),
            },
            Case {
                what: "on-failure, exit 3 -> restart",
                desired: Some(policy(RestartPolicy::OnFailure)),
                observed: Some(observed(policy(RestartPolicy::OnFailure), exited(3))),
                want: schedule(100),
            },
            Case {
                what: "on-failure, killed by a signal -> restart",
                desired: Some(policy(RestartPolicy::OnFailure)),
                observed: Some(observed(
                    policy(RestartPolicy::OnFailure),
                    killed(15, false),
                )),
                want: schedule(100),
            },
            Case {
                what: "on-failure, OOM killed -> restart",
                desired: Some(policy(RestartPolicy::OnFailure)),
                observed: Some(observed(policy(RestartPolicy::OnFailure), killed(9, true))),
                want: schedule(100),
            },
            Case {
                what: "on-failure, start failed -> restart",
                desired: Some(policy(RestartPolicy::OnFailure)),
                observed: Some(observed(
                    policy(RestartPolicy::OnFailure),
                    start_failed.clone(),
                )),
                want: schedule(100),
            },
            Case {
                what: "never, exit 1 -> leave",
                desired: Some(policy(RestartPolicy::Never)),
                observed: Some(observed(policy(RestartPolicy::Never), exited(1))),
                want: leave("restart policy never: exited with code 1"),
            },
            Case {
                what: "never, OOM killed -> leave, reason says so",
                desired: Some(policy(RestartPolicy::Never)),
                observed: Some(observed(policy(RestartPolicy::Never), killed(9, true))),
                want: leave("restart policy never: killed by signal 9 (out of memory)"),
            },
            Case {
                what: "never, start failed -> leave with the error",
                desired: Some(policy(RestartPolicy::Never)),
                observed: Some(observed(policy(RestartPolicy::Never), start_failed.clone())),
                want: leave("restart policy never: failed to start: image oci:/img:v1 not found"),
            },
            Case {
                what: "always, start failed -> restart",
                desired: Some(spec()),
                observed: Some(o(start_failed.clone())),
                want: schedule(100),
            },
            // Backoff grows with the consecutive restarts.
            Case {
                what: "third consecutive restart -> 400ms",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| ob.restarts = 2)),
                want: schedule(400),
            },
            Case {
                what: "initial = 0 -> immediate",
                desired: Some(with(|s| s.restart.backoff_initial = Duration::ZERO)),
                observed: Some(observed(
                    with(|s| s.restart.backoff_initial = Duration::ZERO),
                    exited(1),
                )),
                want: schedule(0),
            },
            // max_retries.
            Case {
                what: "max_retries 3, 2 restarts -> restart",
                desired: Some(with(|s| s.restart.max_retries = 3)),
                observed: Some(Observed {
                    restarts: 2,
                    ..observed(with(|s| s.restart.max_retries = 3), exited(1))
                }),
                want: schedule(400),
            },
            Case {
                what: "max_retries 3, 3 restarts -> give up",
                desired: Some(with(|s| s.restart.max_retries = 3)),
                observed: Some(Observed {
                    restarts: 3,
                    ..observed(with(|s| s.restart.max_retries = 3), exited(1))
                }),
                want: leave("max_retries (3) reached after 3 restarts: exited with code 1"),
            },
            Case {
                what: "max_retries 0 = unlimited",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| ob.restarts = 1000)),
                want: schedule(30_000),
            },
            // Pending restarts.
            Case {
                what: "restart pending, not due -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.restart_at = Some(now + Duration::from_millis(1))
                })),
                want: None,
            },
            Case {
                what: "restart due exactly now -> start",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| ob.restart_at = Some(now))),
                want: Some(start()),
            },
            Case {
                what: "restart overdue -> start",
                desired: Some(spec()),
                observed: Some(o_with(start_failed.clone(), &|ob| ob.restart_at = Some(t0))),
                want: Some(start()),
            },
            // A spec change on an ended container is the fix: start now.
            Case {
                what: "exited, image changed -> start now",
                desired: Some(new_image()),
                observed: Some(o(exited(1))),
                want: Some(start()),
            },
            Case {
                what: "exited with restart pending, command changed -> start now",
                desired: Some(with(|s| s.command = Some(vec!["fixed".into()]))),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.restart_at = Some(now + Duration::from_secs(20))
                })),
                want: Some(start()),
            },
            Case {
                what: "OOM killed, memory raised -> start now",
                desired: Some(with(|s| s.resources.memory = Some(1 << 30))),
                observed: Some(o(killed(9, true))),
                want: Some(start()),
            },
            Case {
                what: "gave up, spec changed -> start now",
                desired: Some(with(|s| {
                    s.restart.max_retries = 3;
                    s.image = "oci:/img:v2".into();
                })),
                observed: Some(Observed {
                    restarts: 3,
                    ..observed(with(|s| s.restart.max_retries = 3), exited(1))
                }),
                want: Some(start()),
            },
            Case {
                what: "start failed, image changed -> start now",
                desired: Some(new_image()),
                observed: Some(o(start_failed.clone())),
                want: Some(start()),
            },
            Case {
                what: "left by policy never, policy changed to always -> start now",
                desired: Some(spec()),
                observed: Some(observed(policy(RestartPolicy::Never), exited(1))),
                want: Some(start()),
            },
            // Manual stop.
            Case {
                what: "manual stop, stopped -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.manual_stop = true)),
                want: None,
            },
            Case {
                what: "manual stop, exited by the stop signal -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(killed(15, false), &|ob| ob.manual_stop = true)),
                want: None,
            },
            Case {
                what: "manual stop cancels a due restart",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.manual_stop = true;
                    ob.restart_at = Some(t0);
                })),
                want: None,
            },
            Case {
                what: "manual stop, start failed -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(start_failed.clone(), &|ob| ob.manual_stop = true)),
                want: None,
            },
            Case {
                what: "manual stop, file path only differs -> still nothing",
                desired: Some(with(|s| s.file = "/other/web.toml".into())),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.manual_stop = true)),
                want: None,
            },
            Case {
                what: "manual stop, stopped, image changed -> start",
                desired: Some(new_image()),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.manual_stop = true)),
                want: Some(start()),
            },
            Case {
                what: "manual stop, stopped, restart settings changed -> start",
                desired: Some(with(|s| s.restart.max_retries = 2)),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.manual_stop = true)),
                want: Some(start()),
            },
            Case {
                what: "manual stop, exited, resources changed -> start",
                desired: Some(with(|s| s.resources.pids = Some(10))),
                observed: Some(o_with(exited(0), &|ob| ob.manual_stop = true)),
                want: Some(start()),
            },
            Case {
                what: "manual stop, running, unchanged -> stop",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| ob.manual_stop = true)),
                want: Some(Action::Stop { name: "web".into() }),
            },
            Case {
                what: "manual stop, running but busy (stopping) -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.manual_stop = true;
                    ob.busy = true;
                })),
                want: None,
            },
            Case {
                what: "restart requested, running -> stop",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| ob.restart_requested = true)),
                want: Some(Action::Stop { name: "web".into() }),
            },
            Case {
                what: "restart requested, stopped -> start",
                desired: Some(spec()),
                observed: Some(o_with(Phase::Stopped, &|ob| ob.restart_requested = true)),
                want: Some(start()),
            },
            Case {
                what: "restart requested, exited with a restart pending -> start now",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.restart_requested = true;
                    ob.restart_at = Some(now + Duration::from_secs(60));
                })),
                want: Some(start()),
            },
            Case {
                what: "process ended, not cleaned up -> cleanup",
                desired: Some(spec()),
                observed: Some(observed(spec(), Phase::Exiting { at: now })),
                want: Some(Action::Cleanup { name: "web".into() }),
            },
            Case {
                what: "process ended while manually stopped -> cleanup",
                desired: Some(spec()),
                observed: Some(o_with(Phase::Exiting { at: now }, &|ob| {
                    ob.manual_stop = true
                })),
                want: Some(Action::Cleanup { name: "web".into() }),
            },
            Case {
                what: "process ended, file gone -> remove",
                desired: None,
                observed: Some(observed(spec(), Phase::Exiting { at: now })),
                want: Some(Action::Remove { name: "web".into() }),
            },
            Case {
                what: "recreate to this image failed before -> nothing, the old one runs on",
                desired: Some(new_image()),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.failed_update = Some(Arc::new(new_image()))
                })),
                want: None,
            },
            Case {
                what: "recreate failed, then another new spec -> recreate again",
                desired: Some(with(|s| s.image = "oci:/img:v3".into())),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.failed_update = Some(Arc::new(new_image()))
                })),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "recreate failed, spec restored -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.failed_update = Some(Arc::new(new_image()))
                })),
                want: None,
            },
            Case {
                what: "unhealthy, on_unhealthy restart -> kill",
                desired: Some(probed(OnUnhealthy::Restart)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    running.clone(),
                    &|ob| ob.health = Some(Health::Unhealthy),
                )),
                want: Some(Action::KillUnhealthy { name: "web".into() }),
            },
            Case {
                what: "unhealthy, on_unhealthy stop -> kill",
                desired: Some(probed(OnUnhealthy::Stop)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Stop),
                    running.clone(),
                    &|ob| ob.health = Some(Health::Unhealthy),
                )),
                want: Some(Action::KillUnhealthy { name: "web".into() }),
            },
            Case {
                what: "unhealthy, on_unhealthy none -> nothing",
                desired: Some(probed(OnUnhealthy::None)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::None),
                    running.clone(),
                    &|ob| ob.health = Some(Health::Unhealthy),
                )),
                want: None,
            },
            Case {
                what: "healthy or starting -> nothing",
                desired: Some(probed(OnUnhealthy::Restart)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    running.clone(),
                    &|ob| ob.health = Some(Health::Starting),
                )),
                want: None,
            },
            Case {
                what: "unhealthy but the image changed -> recreate",
                desired: Some({
                    let mut s = probed(OnUnhealthy::Restart);
                    s.image = "oci:/img:v2".into();
                    s
                }),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    running.clone(),
                    &|ob| ob.health = Some(Health::Unhealthy),
                )),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "killed unhealthy, on_unhealthy stop -> leave",
                desired: Some(probed(OnUnhealthy::Stop)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Stop),
                    killed(9, false),
                    &|ob| ob.killed_unhealthy = true,
                )),
                want: Some(Action::Leave {
                    name: "web".into(),
                    reason: "stopped: unhealthy (on_unhealthy = \"stop\")".into(),
                }),
            },
            Case {
                what: "killed unhealthy, on_unhealthy restart -> the policy's backoff",
                desired: Some(probed(OnUnhealthy::Restart)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    killed(9, false),
                    &|ob| {
                        ob.killed_unhealthy = true;
                        ob.restarts = 2;
                    },
                )),
                want: Some(Action::ScheduleRestart {
                    name: "web".into(),
                    delay: Duration::from_millis(400),
                }),
            },
            Case {
                what: "on trial, not yet healthy_for -> nothing",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| ob.trial = Some(trial(now)))),
                want: None,
            },
            Case {
                what: "on trial for healthy_for -> confirm",
                desired: Some(spec()),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.trial = Some(trial(now - Duration::from_secs(10)))
                })),
                want: Some(Action::Confirm { name: "web".into() }),
            },
            Case {
                what: "on trial, probed, healthy_for over but not healthy yet -> nothing",
                desired: Some(probed(OnUnhealthy::Restart)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    running.clone(),
                    &|ob| {
                        ob.trial = Some(trial(now - Duration::from_secs(60)));
                        ob.health = Some(Health::Starting);
                    },
                )),
                want: None,
            },
            Case {
                what: "on trial, unhealthy -> rollback, not a kill",
                desired: Some(probed(OnUnhealthy::Restart)),
                observed: Some(o_with_spec(
                    probed(OnUnhealthy::Restart),
                    running.clone(),
                    &|ob| {
                        ob.trial = Some(trial(now));
                        ob.health = Some(Health::Unhealthy);
                    },
                )),
                want: Some(Action::Rollback {
                    name: "web".into(),
                    reason: "the new version became unhealthy within 10s".into(),
                }),
            },
            Case {
                what: "on trial, exited -> rollback",
                desired: Some(spec()),
                observed: Some(o_with(exited(1), &|ob| ob.trial = Some(trial(now)))),
                want: Some(Action::Rollback {
                    name: "web".into(),
                    reason: "the new version exited (code 1) within 10s".into(),
                }),
            },
            Case {
                what: "on trial, edited again -> recreate",
                desired: Some(new_image()),
                observed: Some(o_with(running.clone(), &|ob| ob.trial = Some(trial(now)))),
                want: Some(Action::Recreate { name: "web".into() }),
            },
            Case {
                what: "update failed, then the old version exited -> its restart policy",
                desired: Some(new_image()),
                observed: Some(o_with(exited(1), &|ob| {
                    ob.failed_update = Some(Arc::new(new_image()))
                })),
                want: Some(Action::ScheduleRestart {
                    name: "web".into(),
                    delay: Duration::from_millis(100),
                }),
            },
            Case {
                what: "recreate failed, resources changed on top -> still nothing",
                desired: Some(with(|s| {
                    s.image = "oci:/img:v2".into();
                    s.resources.pids = Some(5);
                })),
                observed: Some(o_with(running.clone(), &|ob| {
                    ob.failed_update = Some(Arc::new(with(|s| {
                        s.image = "oci:/img:v2".into();
                        s.resources.pids = Some(5);
                    })))
                })),
                want: None,
            },
            Case {
                what: "manual stop still running, image changed -> recreate",
                desired: Some(new_image()),
                observed: Some(o_with(running.clone(), &|ob| ob.manual_stop = true)),
                want: Some(Action::Recreate { name: "web".into() }),
            },
        ];
        run(cases, now, 0.0);
    }

    fn depending(name: &str, deps: &[(&str, Condition)]) -> ValidatedSpec {
        let mut s = spec_named(name);
        s.depends_on = deps.iter().map(|(d, c)| (d.to_string(), *c)).collect();
        s
    }

    #[test]
    fn a_held_back_spec_is_not_what_starts() {
        let failed = Arc::new(new_image_spec());
        let desired = Desired {
            spec: Arc::clone(&failed),
        };
        let mut o = observed(spec(), Phase::Stopped);
        assert_eq!(
            spec_to_start(&desired, Some(&o)),
            failed,
            "no failed update"
        );
        o.failed_update = Some(Arc::clone(&failed));
        assert_eq!(
            *spec_to_start(&desired, Some(&o)),
            spec(),
            "the version that ran"
        );
        assert_eq!(spec_to_start(&desired, None), failed);
    }

    fn new_image_spec() -> ValidatedSpec {
        with(|s| s.image = "oci:/img:v2".into())
    }

    #[test]
    fn depends_on_gates_every_start() {
        let t0 = Instant::now();
        let running = Phase::Running { pid: 1, since: t0 };
        let exited0 = Phase::Exited {
            status: ExitStatus::Code(0),
            oom_killed: false,
            at: t0,
        };
        let app = |c| depending("app", &[("db", c)]);
        let db = |phase: Phase, health: Option<Health>| {
            let mut o = observed(spec_named("db"), phase);
            o.health = health;
            o
        };
        let wait = |reason: &str| {
            vec![Action::Wait {
                name: "app".into(),
                reason: reason.into(),
            }]
        };
        let cases: Vec<(&str, ValidatedSpec, Option<Observed>, Vec<Action>)> = vec![
            (
                "started: db not created",
                app(Condition::Started),
                None,
                wait("waiting for db to be started (it is not created yet)"),
            ),
            (
                "started: db running",
                app(Condition::Started),
                Some(db(running.clone(), None)),
                vec![Action::Start { name: "app".into() }],
            ),
            (
                "healthy: db still starting",
                app(Condition::Healthy),
                Some(db(running.clone(), Some(Health::Starting))),
                wait("waiting for db to be healthy (it is running, starting)"),
            ),
            (
                "healthy: db healthy",
                app(Condition::Healthy),
                Some(db(running.clone(), Some(Health::Healthy))),
                vec![Action::Start { name: "app".into() }],
            ),
            (
                "completed: db running",
                app(Condition::Completed),
                Some(db(running.clone(), None)),
                wait("waiting for db to be completed (exit 0) (it is running)"),
            ),
            (
                "completed: db exited 0",
                app(Condition::Completed),
                Some(db(exited0.clone(), None)),
                vec![Action::Start { name: "app".into() }],
            ),
            (
                "started: db exited",
                app(Condition::Started),
                Some(db(killed_phase(), None)),
                wait("waiting for db to be started (it is exited (Signal(9)))"),
            ),
        ];
        for (what, app_spec, db_obs, mut want) in cases {
            let desired = desired_set(&[app_spec]);
            let observed = observed_set(db_obs.as_slice());
            let mut got = plan(&desired, &observed, t0, 0.0);
            // The db itself has no file here: it is removed; only app's action is looked at.
            got.retain(|a| a.name() == "app");
            want.retain(|a| a.name() == "app");
            assert_eq!(got, want, "{what}");
        }
        // A restart that is due waits as well.
        let mut app_obs = observed(app(Condition::Healthy), exited0.clone());
        app_obs.restart_at = Some(t0);
        let desired = desired_set(&[app(Condition::Healthy), spec_named("db")]);
        let observed = observed_set(&[app_obs, db(running.clone(), Some(Health::Unhealthy))]);
        assert_eq!(
            plan(&desired, &observed, t0, 0.0),
            wait("waiting for db to be healthy (it is running, unhealthy)")
        );
    }

    fn killed_phase() -> Phase {
        Phase::Exited {
            status: ExitStatus::Signal(9),
            oom_killed: false,
            at: Instant::now(),
        }
    }

    #[test]
    fn shutdown_goes_in_reverse_dependency_order() {
        let t0 = Instant::now();
        let running = Phase::Running { pid: 1, since: t0 };
        let chain = |web: Phase, web_busy: bool, app: Phase| {
            let mut w = observed(depending("web", &[("app", Condition::Started)]), web);
            w.busy = web_busy;
            let a = observed(depending("app", &[("db", Condition::Healthy)]), app);
            let d = observed(spec_named("db"), Phase::Running { pid: 2, since: t0 });
            observed_set(&[w, a, d])
        };
        let stop = |n: &str| Action::Stop { name: n.into() };
        assert_eq!(
            plan_shutdown(&chain(running.clone(), false, running.clone())),
            vec![stop("web")]
        );
        assert_eq!(
            plan_shutdown(&chain(running.clone(), true, running.clone())),
            vec![],
            "web is being stopped: app and db wait"
        );
        assert_eq!(
            plan_shutdown(&chain(Phase::Stopped, false, running.clone())),
            vec![stop("app")]
        );
        assert_eq!(
            plan_shutdown(&chain(Phase::Stopped, false, Phase::Stopped)),
            vec![stop("db")]
        );
        // A cycle among the last good specs: all stop rather than none.
        let a = observed(
            depending("a", &[("b", Condition::Started)]),
            running.clone(),
        );
        let b = observed(
            depending("b", &[("a", Condition::Started)]),
            running.clone(),
        );
        assert_eq!(
            plan_shutdown(&observed_set(&[a, b])),
            vec![stop("a"), stop("b")]
        );
    }

    #[test]
    fn shutdown_stops_and_cleans_up_everything_idle_at_once() {
        let t0 = Instant::now();
        let running = Phase::Running { pid: 7, since: t0 };
        let mut set = ObservedSet::new();
        for (name, phase, busy) in [
            ("a", running.clone(), false),
            ("b", running.clone(), true),
            ("c", Phase::Exiting { at: t0 }, false),
            ("d", Phase::Stopped, false),
            ("e", running.clone(), false),
            (
                "f",
                Phase::Exited {
                    status: ExitStatus::Code(0),
                    oom_killed: false,
                    at: t0,
                },
                false,
            ),
        ] {
            let mut o = observed(spec_named(name), phase);
            o.busy = busy;
            set.insert(name.into(), o);
        }
        assert_eq!(
            plan_shutdown(&set),
            vec![
                Action::Stop { name: "a".into() },
                Action::Cleanup { name: "c".into() },
                Action::Stop { name: "e".into() },
            ]
        );
        assert!(plan_shutdown(&ObservedSet::new()).is_empty());
    }

    #[test]
    fn jitter_reaches_the_delay() {
        let t0 = Instant::now();
        let cases = vec![
            Case {
                what: "first restart, jitter 0.5 -> 105ms",
                desired: Some(spec()),
                observed: Some(observed(
                    spec(),
                    Phase::Exited {
                        status: ExitStatus::Code(1),
                        oom_killed: false,
                        at: t0,
                    },
                )),
                want: Some(Action::ScheduleRestart {
                    name: "web".into(),
                    delay: Duration::from_millis(105),
                }),
            },
            Case {
                what: "capped restart, jitter 0.5 -> still max",
                desired: Some(spec()),
                observed: Some(Observed {
                    restarts: 20,
                    ..observed(
                        spec(),
                        Phase::Exited {
                            status: ExitStatus::Code(1),
                            oom_killed: false,
                            at: t0,
                        },
                    )
                }),
                want: Some(Action::ScheduleRestart {
                    name: "web".into(),
                    delay: Duration::from_secs(30),
                }),
            },
        ];
        run(cases, t0, 0.5);
    }

    #[test]
    fn several_containers_sorted_by_name_one_action_each() {
        let t0 = Instant::now();
        let running = Phase::Running { pid: 7, since: t0 };
        let desired = desired_set(&[
            spec_named("zeta"),
            spec_named("alpha"),
            ValidatedSpec {
                image: "oci:/img:v2".into(),
                ..spec_named("mid")
            },
            spec_named("keep"),
        ]);
        let observed = observed_set(&[
            observed(spec_named("mid"), running.clone()),
            observed(spec_named("gone"), running.clone()),
            observed(spec_named("keep"), running.clone()),
            Observed {
                busy: true,
                ..observed(spec_named("gone-busy"), running.clone())
            },
        ]);
        let got = plan(&desired, &observed, t0, 0.0);
        assert_eq!(
            got,
            vec![
                Action::Start {
                    name: "alpha".into()
                },
                Action::Remove {
                    name: "gone".into()
                },
                Action::Recreate { name: "mid".into() },
                Action::Start {
                    name: "zeta".into()
                },
            ]
        );
        let names: Vec<&str> = got.iter().map(Action::name).collect();
        assert_eq!(names, ["alpha", "gone", "mid", "zeta"]);
        assert!(plan(&DesiredSet::new(), &ObservedSet::new(), t0, 0.0).is_empty());
    }

    /// Plays the daemon's part around the planner through a crash loop: each instance dies
    /// right away; returns the delays asked for until the planner leaves it (or `limit` exits).
    fn crash_loop(
        spec: ValidatedSpec,
        jitter: f64,
        limit: usize,
    ) -> (Vec<Duration>, Option<Action>) {
        let name = spec.name.clone();
        let desired = desired_set(std::slice::from_ref(&spec));
        let mut now = Instant::now();
        let mut ob = observed(spec.clone(), Phase::Stopped);
        let mut delays = vec![];
        for _ in 0..limit {
            // Start (first time or due restart) -> runs 10ms -> crashes.
            let actions = plan(&desired, &observed_set(&[ob.clone()]), now, jitter);
            assert_eq!(actions, vec![Action::Start { name: name.clone() }]);
            if ob.restart_at.take().is_some() {
                ob.restarts += 1;
            }
            ob.phase = Phase::Running {
                pid: 100,
                since: now,
            };
            assert!(plan(&desired, &observed_set(&[ob.clone()]), now, jitter).is_empty());
            let ran_for = Duration::from_millis(10);
            now += ran_for;
            ob.restarts = policy::consecutive_after_run(&spec.restart, ob.restarts, ran_for);
            ob.phase = Phase::Exited {
                status: ExitStatus::Code(1),
                oom_killed: false,
                at: now,
            };
            match plan(&desired, &observed_set(&[ob.clone()]), now, jitter).as_slice() {
                [Action::ScheduleRestart { delay, .. }] => {
                    delays.push(*delay);
                    ob.restart_at = Some(now + *delay);
                    if !delay.is_zero() {
                        // Not due a moment before.
                        let before = now + *delay - Duration::from_nanos(1);
                        let early = plan(&desired, &observed_set(&[ob.clone()]), before, jitter);
                        assert!(early.is_empty(), "{early:?}");
                    }
                    now += *delay;
                }
                [other] => return (delays, Some(other.clone())),
                other => panic!("unexpected {other:?}"),
            }
        }
        (delays, None)
    }

    #[test]
    fn crash_loop_follows_the_backoff_curve() {
        let (delays, end) = crash_loop(spec(), 0.0, 14);
        assert_eq!(end, None);
        let want: Vec<Duration> = [
            100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000,
            30_000, 30_000,
        ]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
        assert_eq!(delays, want);

        let (jittered, _) = crash_loop(spec(), 0.99, 14);
        for (got, base) in jittered.iter().zip(&want) {
            assert!(got >= base, "{got:?} < {base:?}");
            assert!(got <= &base.mul_f64(1.1), "{got:?} > 110% of {base:?}");
            assert!(*got <= Duration::from_secs(30), "{got:?}");
        }
        assert!(jittered[0] > want[0]);
    }

    #[test]
    fn crash_loop_gives_up_after_max_retries() {
        let s = with(|s| s.restart.max_retries = 3);
        let (delays, end) = crash_loop(s, 0.0, 10);
        assert_eq!(delays, [100, 200, 400].map(Duration::from_millis).to_vec());
        assert_eq!(
            end,
            Some(Action::Leave {
                name: "web".into(),
                reason: "max_retries (3) reached after 3 restarts: exited with code 1".into()
            })
        );
    }

    #[test]
    fn crash_loop_with_zero_initial_restarts_at_once() {
        let s = with(|s| s.restart.backoff_initial = Duration::ZERO);
        let (delays, end) = crash_loop(s, 0.99, 6);
        assert_eq!(end, None);
        assert_eq!(delays, vec![Duration::ZERO; 6]);
    }

    #[test]
    fn long_run_resets_the_backoff() {
        let s = spec();
        let restarts = policy::consecutive_after_run(&s.restart, 7, Duration::from_secs(61));
        let t0 = Instant::now();
        let ob = Observed {
            restarts,
            ..observed(
                s.clone(),
                Phase::Exited {
                    status: ExitStatus::Signal(9),
                    oom_killed: true,
                    at: t0,
                },
            )
        };
        assert_eq!(
            plan(&desired_set(&[s]), &observed_set(&[ob]), t0, 0.0),
            vec![Action::ScheduleRestart {
                name: "web".into(),
                delay: Duration::from_millis(100)
            }]
        );
    }

    #[test]
    fn manual_stop_sticks_across_exits_until_a_spec_change() {
        let s = spec();
        let desired = desired_set(std::slice::from_ref(&s));
        let t0 = Instant::now();
        let mut ob = Observed {
            manual_stop: true,
            restart_at: Some(t0), // a restart was pending when the stop came
            ..observed(
                s.clone(),
                Phase::Exited {
                    status: ExitStatus::Code(1),
                    oom_killed: false,
                    at: t0,
                },
            )
        };
        for step in 0..5u64 {
            let now = t0 + Duration::from_secs(step * 100);
            assert!(
                plan(&desired, &observed_set(&[ob.clone()]), now, 0.0).is_empty(),
                "step {step}"
            );
            ob.phase = if step % 2 == 0 {
                Phase::Stopped
            } else {
                Phase::Exited {
                    status: ExitStatus::Signal(15),
                    oom_killed: false,
                    at: now,
                }
            };
        }
        let changed = desired_set(&[with(|s| {
            s.env.insert("V".into(), "2".into());
        })]);
        assert_eq!(plan(&changed, &observed_set(&[ob]), t0, 0.0), vec![start()]);
    }
}
