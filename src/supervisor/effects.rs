//! What the supervisor's workers and decision loop do to the host, as one trait: start an
//! instance, signal it, wait for its exit, kill and clean it up, change its limits, and the
//! queries behind `ps`, `inspect` and `stats`. [`RuntimeEffects`] is the real one (the runtime,
//! the sealed launcher binary); tests pass a recording fake, so the loop and the workers run
//! without root.
//!
//! Blocking methods are called from tokio's blocking pool; [`Effects::exited`] is the one wait,
//! and it is async.

use std::collections::BTreeSet;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::metrics::Usage;
use crate::reconcile::plan::Bandwidth;
use crate::runtime::container::{LogLimits, Mode, Runtime};
use crate::runtime::protocol::ExitStatus;
use crate::runtime::zygote::Zygote;
use crate::spec::{BuildSpec, ValidatedSpec};
use crate::state::{self, Instance};

/// How an instance ended: its exit status and whether the OOM killer did it (`None`: its
/// monitor recorded nothing), and how long it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub exit: Option<(ExitStatus, bool)>,
    pub ran_for: Duration,
}

pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A health probe's result: healthy or not, and what it said.
pub type ProbeResult = Pin<Box<dyn Future<Output = (bool, String)> + Send>>;

pub trait Effects: Send + Sync + 'static {
    /// Fetches or unpacks the spec's image (blocking; in the bounded pull pool).
    fn pull(&self, spec: &ValidatedSpec) -> Result<(), String>;
    /// Asks the registry what the tag `image` names now and fetches it (blocking; in the pull
    /// pool): the reference pinned to that digest.
    /// A spec with `build` is rebuilt instead (cache hits when nothing changed).
    fn fetch_current(&self, image: &str, build: Option<&BuildSpec>) -> Result<String, String>;
    /// Prepares and starts an instance of `spec` (blocking).
    fn start(&self, spec: &ValidatedSpec) -> Result<Instance, String>;
    /// Sends `signal` to the instance's init, if it is still that process.
    fn signal(&self, inst: &Instance, signal: i32);
    /// Resolves once the instance's monitor is gone (at once if it already is).
    fn exited(&self, inst: &Instance) -> Wait;
    /// SIGKILLs every process of the instance's cgroup (blocking, bounded).
    fn kill_all(&self, inst: &Instance);
    /// Records how the ended instance exited and removes what it left (blocking).
    /// `release_lease`: the container is removed, so its bridge address is given up too.
    fn cleanup(&self, inst: &Instance, release_lease: bool) -> Ending;
    /// New cgroup limits (and bandwidth) for the running instance (blocking).
    fn update(
        &self,
        spec: &ValidatedSpec,
        inst: &Instance,
        bandwidth: Option<Bandwidth>,
    ) -> Result<(), String>;
    /// Runs the `[health]` probe of `spec` once against the running instance (the caller
    /// bounds it by the probe's timeout; an exec probe is also killed at it).
    fn probe(&self, inst: &Instance, spec: &ValidatedSpec) -> ProbeResult;
    /// Gives up the bridge address kept for container `name` between two of its instances.
    fn release_address(&self, name: &str);
    /// Whether the instance's monitor is still the process it was (pid and start time).
    fn is_alive(&self, inst: &Instance) -> bool;
    /// Removes the instances under the state root that no record names (blocking).
    fn sweep(&self, known_ids: &BTreeSet<String>);
    /// Bridge addresses by container name.
    fn bridge_hosts(&self) -> Vec<(String, std::net::Ipv4Addr)>;
    /// Rewrites the /etc/hosts of running bridge containers (init pid, hostname) (blocking).
    fn refresh_hosts(&self, targets: &[(i32, String)]);
    /// What each running instance (id, in bridge mode) has used so far (blocking).
    fn usage(&self, running: &[(String, bool)]) -> Vec<Option<Usage>>;
    /// Where things are, for `inspect`: the log dir of `name`, the root and the cgroup parent.
    fn locations(&self, name: &str) -> serde_json::Value;
}

/// After SIGKILL to the whole cgroup, how long to wait for the monitor to notice.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The longest a clean daemon stop takes: every container is stopped at once, each within
/// its `stop_timeout` (at most `MAX_STOP_TIMEOUT`) and `KILL_GRACE`, then the teardown of
/// cgroups, bridge and firewall, given `TEARDOWN_BOUND`. The service files' stop timeouts
/// (`packaging/`) are this, checked by a test.
pub const LONGEST_SHUTDOWN: Duration = Duration::from_secs(
    crate::spec::MAX_STOP_TIMEOUT.as_secs() + KILL_GRACE.as_secs() + TEARDOWN_BOUND.as_secs(),
);

/// What the teardown after the last stop is allowed, in `LONGEST_SHUTDOWN`.
const TEARDOWN_BOUND: Duration = Duration::from_secs(25);

/// The real effects: containers through the runtime, launched from the sealed binary.
pub struct RuntimeEffects {
    pub rt: Arc<Runtime>,
    pub exe: Arc<OwnedFd>,
    /// Forks the monitors (see `runtime::zygote`).
    pub zygote: Zygote,
    pub logs: LogLimits,
}

impl Effects for RuntimeEffects {
    fn pull(&self, spec: &ValidatedSpec) -> Result<(), String> {
        self.rt
            .resolve_image(spec)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn fetch_current(&self, image: &str, build: Option<&BuildSpec>) -> Result<String, String> {
        self.rt
            .fetch_current_image(image, build)
            .map_err(|e| e.to_string())
    }

    fn start(&self, spec: &ValidatedSpec) -> Result<Instance, String> {
        let helper = self.zygote.helper().map_err(|e| e.to_string())?;
        let monitor_pid = helper.pid();
        let prepared = self
            .rt
            .prepare(spec, &Mode::Supervised(self.logs))
            .map_err(|e| e.to_string())?;
        let id = prepared.id.clone();
        let image_digest = prepared.image_digest.clone();
        match self.rt.start(&prepared, helper) {
            Ok(running) => {
                let init_pid = running.pid.as_raw();
                running.detach();
                Ok(Instance {
                    id,
                    init_pid,
                    init_start: state::process_start_time(init_pid).unwrap_or(0),
                    monitor_pid,
                    monitor_start: state::process_start_time(monitor_pid).unwrap_or(0),
                    started_at: SystemTime::now(),
                    image_digest,
                })
            }
            Err(e) => {
                let _ = self.rt.teardown(prepared, false);
                Err(e.to_string())
            }
        }
    }

    fn signal(&self, inst: &Instance, signal: i32) {
        if state::is_same_process(inst.init_pid, inst.init_start) {
            if let Ok(sig) = Signal::try_from(signal) {
                let _ = kill(Pid::from_raw(inst.init_pid), sig);
            }
        }
    }

    fn exited(&self, inst: &Instance) -> Wait {
        let (pid, start) = (inst.monitor_pid, inst.monitor_start);
        Box::pin(async move {
            // The pidfd is opened first, then the identity checked: a pid reused after the
            // monitor's exit fails the check, and the fd then refers to the live process.
            if let Ok(afd) = crate::sys::process::async_pidfd(pid) {
                if state::is_same_process(pid, start) {
                    let _ = afd.readable().await;
                }
            }
            // Reap it if it is our child (it is not after an adoption).
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        })
    }

    fn kill_all(&self, inst: &Instance) {
        if let Ok(Some(cg)) = self.rt.cgroup(&inst.id) {
            if let Err(e) = cg.kill_all() {
                tracing::warn!(id = %inst.id, "{e}");
            }
        }
    }

    fn cleanup(&self, inst: &Instance, release_lease: bool) -> Ending {
        let rt = &self.rt;
        let oom = rt
            .cgroup(&inst.id)
            .ok()
            .flatten()
            .and_then(|cg| cg.stats().ok())
            .is_some_and(|s| s.oom_kills > 0);
        let exit = rt.read_exit(&inst.id);
        let ran_for = exit
            .and_then(|e| e.at.duration_since(inst.started_at).ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(inst.started_at)
                    .unwrap_or_default()
            });
        if let Err(e) = rt.teardown_id(&inst.id, release_lease) {
            tracing::warn!(id = %inst.id, "cleaning up: {e}");
        }
        Ending {
            exit: exit.map(|e| (e.status, oom)),
            ran_for,
        }
    }

    fn update(
        &self,
        spec: &ValidatedSpec,
        inst: &Instance,
        bandwidth: Option<Bandwidth>,
    ) -> Result<(), String> {
        self.rt
            .update_limits(&inst.id, &spec.resources)
            .map_err(|e| e.to_string())?;
        if let Some(b) = bandwidth {
            self.rt
                .set_bandwidth(&spec.name, &inst.id, b.egress, b.ingress)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn probe(&self, inst: &Instance, spec: &ValidatedSpec) -> ProbeResult {
        Box::pin(super::probe::run(
            inst.clone(),
            spec.clone(),
            Arc::clone(&self.exe),
            self.rt.cgroup_parent().to_string(),
        ))
    }

    fn release_address(&self, name: &str) {
        if let Err(e) = self.rt.release_address(name) {
            tracing::warn!(%name, "{e}");
        }
    }

    fn is_alive(&self, inst: &Instance) -> bool {
        state::is_same_process(inst.monitor_pid, inst.monitor_start)
    }

    fn sweep(&self, known_ids: &BTreeSet<String>) {
        for id in self.rt.instance_ids() {
            // A `berth run` or a build step that shares the root is its launcher's.
            if !known_ids.contains(&id) && self.rt.run_owner_alive(&id) != Some(true) {
                // It may still run (a crash between its start and its record).
                tracing::warn!(%id, "removing an instance no record knows");
                self.rt.remove_orphan(&id, false);
            }
        }
    }

    fn bridge_hosts(&self) -> Vec<(String, std::net::Ipv4Addr)> {
        self.rt.bridge_hosts()
    }

    fn refresh_hosts(&self, targets: &[(i32, String)]) {
        for (pid, hostname) in targets {
            if let Err(e) = self.rt.refresh_hosts(*pid, hostname) {
                tracing::debug!(pid, "refreshing /etc/hosts: {e}");
            }
        }
    }

    fn usage(&self, running: &[(String, bool)]) -> Vec<Option<Usage>> {
        read_usage(&self.rt, running)
    }

    fn locations(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "log_dir": self.rt.log_dir(name),
            "root": self.rt.root(),
            "cgroup_parent": self.rt.cgroup_parent(),
        })
    }
}

/// What the cgroup (and the bridge veth) of each running instance (id, in bridge mode) has
/// used so far.
fn read_usage(rt: &Runtime, running: &[(String, bool)]) -> Vec<Option<Usage>> {
    running
        .iter()
        .map(|(id, bridged)| {
            let s = rt.cgroup(id).ok().flatten()?.stats().ok()?;
            Some(Usage {
                cpu_ns: s.cpu_usage_ns,
                memory_bytes: s.memory_bytes,
                memory_limit: s.memory_limit,
                pids: s.pids_current,
                traffic: if *bridged { rt.traffic(id) } else { None },
            })
        })
        .collect()
}
