//! The daemon's event loop. One task owns every decision: it turns events (spec dir changes,
//! exits, finished actions, timers, control requests, signals) into observed state, asks
//! `reconcile::plan` what to do, and hands each action to its own task, one at a time per
//! container. Blocking runtime work runs on tokio's blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use super::config::Config;
use super::control::{ContainerStats, ContainerStatus, Request, Response};
use super::notify;
use crate::reconcile::policy;
use crate::reconcile::{plan, Action, Observed, ObservedSet, Phase};
use crate::runtime::container::{Mode, Runtime, RuntimeError};
use crate::runtime::launch::{self, Stdin};
use crate::runtime::protocol::ExitStatus;
use crate::source::{Snapshot, SpecSource};
use crate::spec::{ValidatedSpec, ValidationContext};
use crate::state::{self, ContainerRecord, Instance, StateDir};

/// How often the spec dir is relisted without any inotify hint.
const RELIST_EVERY: Duration = Duration::from_secs(10);
/// Quiet time after an inotify hint before relisting (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(15);
/// After SIGKILL to the whole cgroup, how long to wait for the monitor to notice.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify_crate::Error,
    },
    #[error("starting the event loop: {0}")]
    Tokio(std::io::Error),
}

use ::notify as notify_crate;

enum Event {
    Hint,
    Exited {
        name: String,
        id: String,
    },
    Done {
        name: String,
        outcome: Outcome,
    },
    RestartDue {
        name: String,
    },
    Control {
        req: Request,
        reply: oneshot::Sender<Response>,
    },
    Shutdown,
}

enum Outcome {
    Started {
        instance: Instance,
        spec: Arc<ValidatedSpec>,
    },
    StartFailed {
        error: String,
        spec: Arc<ValidatedSpec>,
    },
    /// The instance is gone (stopped by us, or exited on its own) and torn down.
    Ended {
        exit: Option<(ExitStatus, bool)>,
        at: Instant,
        ran_for: Duration,
    },
    Removed,
    Updated {
        spec: Arc<ValidatedSpec>,
        error: Option<String>,
    },
}

/// What the daemon keeps per container beyond the planner's view.
#[derive(Default)]
struct Extra {
    instance: Option<Instance>,
    note: Option<String>,
    /// A stop is in progress because of `berth stop` / `restart` / shutdown.
    stopping: bool,
}

struct Daemon {
    rt: Arc<Runtime>,
    state: StateDir,
    source: SpecSource,
    snapshot: Snapshot,
    observed: ObservedSet,
    extra: BTreeMap<String, Extra>,
    left: BTreeSet<String>,
    tx: mpsc::UnboundedSender<Event>,
    exe: Arc<OwnedFd>,
    logs: crate::runtime::container::LogLimits,
    shutting_down: bool,
}

/// Runs the supervisor until SIGTERM/SIGINT; then stops every container and returns.
pub fn run(config: Config) -> Result<(), DaemonError> {
    if std::process::id() == 1 {
        super::pid1::prepare();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .map_err(DaemonError::Tokio)?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), DaemonError> {
    let runtime = Arc::new(
        Runtime::open(&config.root, &config.cgroup_parent)?
            .with_network(config.network.clone())
            .with_device_control(config.device_control),
    );
    let state = StateDir::open(&config.root)?;
    let exe =
        Arc::new(
            crate::sys::process::sealed_self_exe().map_err(|e| RuntimeError::Launch {
                name: "supervisor".into(),
                source: launch::LaunchError::SealedExe(e),
            })?,
        );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = ValidationContext {
        subnet: config.network.subnet,
    };
    let mut d = Daemon {
        rt: runtime,
        state,
        source: SpecSource::new(&config.specs, ctx),
        snapshot: Snapshot::default(),
        observed: ObservedSet::new(),
        extra: BTreeMap::new(),
        left: BTreeSet::new(),
        tx: tx.clone(),
        exe,
        logs: config.logs,
        shutting_down: false,
    };
    let hint = Arc::new(tokio::sync::Notify::new());
    let _watcher = watch_specs(&config.specs, Arc::clone(&hint));
    let listener = bind_socket(&config.socket)?;
    tokio::spawn(accept_loop(listener, tx.clone()));
    spawn_signal_handlers(tx.clone());

    d.adopt();
    d.snapshot = d.source.relist();
    d.log_spec_errors(&BTreeMap::new());
    d.reconcile();
    notify::notify("READY=1");
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                notify::notify("WATCHDOG=1");
            }
        });
    }

    let mut relist = tokio::time::interval(RELIST_EVERY);
    relist.tick().await;
    loop {
        let event = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => break },
            _ = hint.notified() => Event::Hint,
            _ = relist.tick() => Event::Hint,
        };
        match event {
            Event::Hint => {
                // Debounce: let a burst of writes settle, then take the whole dir again.
                tokio::time::sleep(DEBOUNCE).await;
                let previous = std::mem::take(&mut d.snapshot.errors);
                d.snapshot = d.source.relist();
                d.log_spec_errors(&previous);
            }
            Event::Exited { name, id } => d.on_exited(name, id),
            Event::Done { name, outcome } => d.on_done(name, outcome),
            Event::RestartDue { name } => {
                if let Some(o) = d.observed.get_mut(&name) {
                    // A cancelled restart (manual stop) leaves restart_at empty.
                    if o.restart_at.is_none() {
                        continue;
                    }
                }
            }
            Event::Control { req, reply } => d.on_control(req, reply),
            Event::Shutdown => {
                d.shutting_down = true;
                notify::notify("STOPPING=1");
            }
        }
        if d.shutting_down {
            if d.shutdown_step() {
                break;
            }
        } else {
            d.reconcile();
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

impl Daemon {
    fn send_later(&self, after: Duration, ev: Event) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(ev);
        });
    }

    /// Takes over what a previous daemon left: running instances are adopted (proved by pid
    /// and start time), ended ones are cleaned up and handled by their policy, and container
    /// dirs no record knows are removed.
    fn adopt(&mut self) {
        let (records, errors) = self.state.load_all();
        for e in errors {
            tracing::warn!("{e}");
        }
        let mut known_ids = BTreeSet::new();
        for rec in records {
            let spec = Arc::new(rec.spec.clone());
            self.source.seed(&rec.name, Arc::clone(&spec));
            let mut obs = Observed {
                spec,
                phase: Phase::Stopped,
                busy: false,
                manual_stop: rec.manual_stop,
                restarts: rec.restarts,
                restart_at: None,
            };
            let mut extra = Extra::default();
            if let (None, Some((status, oom_killed))) = (&rec.instance, rec.last_exit) {
                obs.phase = Phase::Exited {
                    status,
                    oom_killed,
                    at: Instant::now(),
                };
            }
            if let Some(inst) = rec.instance.clone() {
                known_ids.insert(inst.id.clone());
                if state::is_same_process(inst.monitor_pid, inst.monitor_start) {
                    let ran = SystemTime::now()
                        .duration_since(inst.started_at)
                        .unwrap_or_default();
                    obs.phase = Phase::Running {
                        pid: inst.init_pid,
                        since: Instant::now().checked_sub(ran).unwrap_or_else(Instant::now),
                    };
                    tracing::info!(name = %rec.name, id = %inst.id, pid = inst.init_pid, "adopted");
                    self.watch_exit(&rec.name, &inst);
                } else {
                    // It ended while no daemon ran: clean up, then its policy decides.
                    obs.busy = true;
                    self.spawn_cleanup(&rec.name, inst.clone());
                }
                extra.instance = Some(inst);
            }
            self.extra.insert(rec.name.clone(), extra);
            self.observed.insert(rec.name, obs);
        }
        // Instances no record knows (a daemon killed between start and record): remove them.
        let containers = self.rt.root().join("containers");
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known_ids.contains(&id) {
                    tracing::warn!(%id, "removing an instance no record knows");
                    if let Err(err) = self.rt.teardown_id(&id, false) {
                        tracing::warn!(%id, "{err}");
                    }
                }
            }
        }
    }

    fn log_spec_errors(&self, previous: &BTreeMap<String, String>) {
        for (name, err) in &self.snapshot.errors {
            if previous.get(name) != Some(err) {
                tracing::error!(spec = %name, "{err}");
            }
        }
    }

    fn save(&self, name: &str) {
        let (Some(o), Some(x)) = (self.observed.get(name), self.extra.get(name)) else {
            return;
        };
        let rec = ContainerRecord {
            name: name.to_string(),
            spec: (*o.spec).clone(),
            instance: x.instance.clone(),
            restarts: o.restarts,
            manual_stop: o.manual_stop,
            last_exit: match &o.phase {
                Phase::Exited {
                    status, oom_killed, ..
                } => Some((*status, *oom_killed)),
                _ => None,
            },
        };
        if let Err(e) = self.state.save(&rec) {
            tracing::error!(%name, "{e}");
        }
    }

    fn reconcile(&mut self) {
        let jitter = jitter();
        let actions = plan(
            &self.snapshot.desired,
            &self.observed,
            Instant::now(),
            jitter,
        );
        for action in actions {
            self.execute(action);
        }
    }

    fn desired_spec(&self, name: &str) -> Option<Arc<ValidatedSpec>> {
        self.snapshot.desired.get(name).map(|d| Arc::clone(&d.spec))
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Start { name } => {
                let Some(spec) = self.desired_spec(&name) else {
                    return;
                };
                let obs = self
                    .observed
                    .entry(name.clone())
                    .or_insert_with(|| Observed {
                        spec: Arc::clone(&spec),
                        phase: Phase::Stopped,
                        busy: false,
                        manual_stop: false,
                        restarts: 0,
                        restart_at: None,
                    });
                if obs.restart_at.take().is_some() {
                    obs.restarts += 1;
                }
                obs.manual_stop = false;
                obs.busy = true;
                self.extra.entry(name.clone()).or_default();
                self.left.remove(&name);
                self.spawn_start(name, spec, None);
            }
            Action::Recreate { name } => {
                let Some(spec) = self.desired_spec(&name) else {
                    return;
                };
                let old = self.extra.get(&name).and_then(|x| x.instance.clone());
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = true;
                    o.manual_stop = false;
                    o.restart_at = None;
                }
                self.spawn_start(name, spec, old);
            }
            Action::Remove { name } => {
                let inst = self.extra.get(&name).and_then(|x| x.instance.clone());
                let old_spec = self.observed.get(&name).map(|o| Arc::clone(&o.spec));
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = true;
                }
                let rt = Arc::clone(&self.rt);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let container = name.clone();
                    let _ = tokio::task::spawn_blocking(move || match (inst, old_spec) {
                        (Some(inst), Some(spec)) => {
                            stop_instance(&rt, &inst, &spec, true);
                        }
                        // Between two instances (a restart pending): only its address is held.
                        (None, Some(spec))
                            if spec.network.mode == crate::spec::NetworkMode::Bridge =>
                        {
                            if let Err(e) = rt.release_address(&container) {
                                tracing::warn!(name = %container, "{e}");
                            }
                        }
                        _ => {}
                    })
                    .await;
                    let _ = tx.send(Event::Done {
                        name,
                        outcome: Outcome::Removed,
                    });
                });
            }
            Action::UpdateResources {
                name,
                resources,
                bandwidth,
            } => {
                let Some(spec) = self.desired_spec(&name) else {
                    return;
                };
                let Some(id) = self
                    .extra
                    .get(&name)
                    .and_then(|x| x.instance.as_ref())
                    .map(|i| i.id.clone())
                else {
                    return;
                };
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = true;
                }
                let rt = Arc::clone(&self.rt);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let container = name.clone();
                    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
                        rt.update_limits(&id, &resources)
                            .map_err(|e| e.to_string())?;
                        if let Some(b) = bandwidth {
                            rt.set_bandwidth(&container, &id, b.egress, b.ingress)
                                .map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    let _ = tx.send(Event::Done {
                        name,
                        outcome: Outcome::Updated {
                            spec,
                            error: result.err(),
                        },
                    });
                });
            }
            Action::Adopt { name } => {
                if let (Some(spec), Some(o)) =
                    (self.desired_spec(&name), self.observed.get_mut(&name))
                {
                    o.spec = spec;
                }
                self.save(&name);
            }
            Action::ScheduleRestart { name, delay } => {
                if let Some(o) = self.observed.get_mut(&name) {
                    o.restart_at = Some(Instant::now() + delay);
                }
                tracing::info!(%name, ?delay, "restarting");
                self.send_later(delay, Event::RestartDue { name });
            }
            Action::Leave { name, reason } => {
                if self.left.insert(name.clone()) {
                    tracing::info!(%name, "not restarted: {reason}");
                    if let Some(x) = self.extra.get_mut(&name) {
                        x.note = Some(reason);
                    }
                }
            }
        }
    }

    /// Starts `spec` as a new instance of `name`; for a recreate, the new image is resolved
    /// first and only then is `old` stopped.
    fn spawn_start(&self, name: String, spec: Arc<ValidatedSpec>, old: Option<Instance>) {
        let rt = Arc::clone(&self.rt);
        let exe = Arc::clone(&self.exe);
        let tx = self.tx.clone();
        let logs = self.logs;
        let old_spec = self.observed.get(&name).map(|o| Arc::clone(&o.spec));
        tokio::spawn(async move {
            let spec2 = Arc::clone(&spec);
            let result = tokio::task::spawn_blocking(move || -> Result<Instance, String> {
                if let Some(old) = old {
                    rt.resolve_image(&spec2).map_err(|e| e.to_string())?;
                    stop_instance(&rt, &old, old_spec.as_deref().unwrap_or(&spec2), false);
                }
                start_instance(&rt, &exe, &spec2, logs)
            })
            .await
            .unwrap_or_else(|e| Err(format!("start task failed: {e}")));
            let outcome = match result {
                Ok(instance) => Outcome::Started { instance, spec },
                Err(error) => Outcome::StartFailed { error, spec },
            };
            let _ = tx.send(Event::Done { name, outcome });
        });
    }

    /// Watches an instance's monitor; its exit means the container ended.
    fn watch_exit(&self, name: &str, inst: &Instance) {
        let tx = self.tx.clone();
        let (name, id, pid) = (name.to_string(), inst.id.clone(), inst.monitor_pid);
        tokio::spawn(async move {
            if let Ok(afd) = crate::sys::process::async_pidfd(pid) {
                let _ = afd.readable().await;
            }
            // Reap it if it is our child (it is not after an adoption).
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            let _ = tx.send(Event::Exited { name, id });
        });
    }

    fn spawn_cleanup(&self, name: &str, inst: Instance) {
        let rt = Arc::clone(&self.rt);
        let tx = self.tx.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let (exit, ran_for) =
                tokio::task::spawn_blocking(move || cleanup_instance(&rt, &inst, false))
                    .await
                    .unwrap_or((None, Duration::ZERO));
            let _ = tx.send(Event::Done {
                name,
                outcome: Outcome::Ended {
                    exit,
                    at: Instant::now(),
                    ran_for,
                },
            });
        });
    }

    fn on_exited(&mut self, name: String, id: String) {
        let Some(x) = self.extra.get(&name) else {
            return;
        };
        let Some(inst) = x.instance.clone() else {
            return;
        };
        if inst.id != id || x.stopping {
            return;
        }
        let Some(o) = self.observed.get_mut(&name) else {
            return;
        };
        if o.busy {
            return;
        }
        o.busy = true;
        self.spawn_cleanup(&name, inst);
    }

    fn on_done(&mut self, name: String, outcome: Outcome) {
        match outcome {
            Outcome::Removed => {
                self.observed.remove(&name);
                self.extra.remove(&name);
                self.left.remove(&name);
                if let Err(e) = self.state.remove(&name) {
                    tracing::error!(%name, "{e}");
                }
                tracing::info!(%name, "removed");
                self.refresh_bridge_hosts();
                return;
            }
            Outcome::Started { instance, spec } => {
                tracing::info!(%name, id = %instance.id, pid = instance.init_pid, "started");
                self.watch_exit(&name, &instance);
                let x = self.extra.entry(name.clone()).or_default();
                x.instance = Some(instance.clone());
                x.note = None;
                x.stopping = false;
                if let Some(o) = self.observed.get_mut(&name) {
                    o.spec = spec;
                    o.phase = Phase::Running {
                        pid: instance.init_pid,
                        since: Instant::now(),
                    };
                    o.busy = false;
                }
            }
            Outcome::StartFailed { error, spec } => {
                tracing::error!(%name, "start failed: {error}");
                let x = self.extra.entry(name.clone()).or_default();
                x.instance = None;
                x.note = Some(error.clone());
                x.stopping = false;
                if let Some(o) = self.observed.get_mut(&name) {
                    o.spec = spec;
                    o.phase = Phase::StartFailed {
                        error,
                        at: Instant::now(),
                    };
                    o.busy = false;
                }
            }
            Outcome::Ended { exit, at, ran_for } => {
                let x = self.extra.entry(name.clone()).or_default();
                let stopped = std::mem::take(&mut x.stopping);
                x.instance = None;
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = false;
                    o.restarts =
                        policy::consecutive_after_run(&o.spec.restart, o.restarts, ran_for);
                    o.phase = match exit {
                        _ if stopped => Phase::Stopped,
                        Some((status, oom_killed)) => Phase::Exited {
                            status,
                            oom_killed,
                            at,
                        },
                        // The monitor left no record (killed itself): count it as a kill.
                        None => Phase::Exited {
                            status: ExitStatus::Signal(9),
                            oom_killed: false,
                            at,
                        },
                    };
                    if let Some((status, oom)) = exit {
                        let oom = if oom { " (OOM killed)" } else { "" };
                        tracing::info!(%name, "exited: {}{oom}", describe(status));
                    }
                }
                if let (Some(x), Some((status, oom))) = (self.extra.get_mut(&name), exit) {
                    x.note = Some(format!(
                        "{}{}",
                        describe(status),
                        if oom { " (OOM killed)" } else { "" }
                    ));
                }
            }
            Outcome::Updated { spec, error } => {
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = false;
                    match error {
                        None => {
                            tracing::info!(%name, "resources updated in place");
                            o.spec = spec;
                        }
                        Some(e) => tracing::error!(%name, "updating resources: {e}"),
                    }
                }
            }
        }
        self.save(&name);
        self.refresh_bridge_hosts();
    }

    /// Keeps every running bridge container's /etc/hosts listing the bridge's containers.
    fn refresh_bridge_hosts(&self) {
        let targets: Vec<(i32, String)> = self
            .observed
            .values()
            .filter(|o| o.spec.network.mode == crate::spec::NetworkMode::Bridge)
            .filter_map(|o| match o.phase {
                Phase::Running { pid, .. } => Some((pid, o.spec.hostname.clone())),
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let rt = Arc::clone(&self.rt);
        tokio::task::spawn_blocking(move || {
            for (pid, hostname) in targets {
                if let Err(e) = rt.refresh_hosts(pid, &hostname) {
                    tracing::debug!(pid, "refreshing /etc/hosts: {e}");
                }
            }
        });
    }

    /// The bridge addresses by container name, read only when some container is in bridge mode.
    fn bridge_addresses(&self) -> BTreeMap<String, std::net::Ipv4Addr> {
        let bridged = self
            .observed
            .values()
            .any(|o| o.spec.network.mode == crate::spec::NetworkMode::Bridge);
        if !bridged {
            return BTreeMap::new();
        }
        self.rt.bridge_hosts().into_iter().collect()
    }

    fn status_of(
        &self,
        name: &str,
        addresses: &BTreeMap<String, std::net::Ipv4Addr>,
    ) -> ContainerStatus {
        let o = self.observed.get(name);
        let x = self.extra.get(name);
        let spec = o
            .map(|o| Arc::clone(&o.spec))
            .or_else(|| self.desired_spec(name));
        let state = match o {
            None => "pending",
            Some(o) if o.busy && x.is_some_and(|x| x.stopping) => "stopping",
            Some(o) if o.busy => "starting",
            Some(o) => match &o.phase {
                Phase::Running { .. } => "running",
                Phase::Exited { .. } if o.restart_at.is_some() => "restarting",
                Phase::Exited { .. } => "exited",
                Phase::StartFailed { .. } => "failed",
                Phase::Stopped => "stopped",
            },
        };
        let last_exit = o.and_then(|o| match &o.phase {
            Phase::Exited {
                status, oom_killed, ..
            } => Some(format!(
                "{}{}",
                describe(*status),
                if *oom_killed { " (OOM killed)" } else { "" }
            )),
            _ => None,
        });
        ContainerStatus {
            name: name.to_string(),
            state: state.to_string(),
            pid: match o.map(|o| &o.phase) {
                Some(Phase::Running { pid, .. }) => Some(*pid),
                _ => None,
            },
            id: x.and_then(|x| x.instance.as_ref()).map(|i| i.id.clone()),
            image: spec.as_ref().map(|s| s.image.clone()).unwrap_or_default(),
            restarts: o.map(|o| o.restarts).unwrap_or(0),
            last_exit,
            note: x.and_then(|x| x.note.clone()),
            spec_error: self.snapshot.errors.get(name).cloned(),
            ip: match o.map(|o| &o.phase) {
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

    fn names(&self) -> BTreeSet<String> {
        self.observed
            .keys()
            .chain(self.snapshot.desired.keys())
            .chain(self.snapshot.errors.keys())
            .cloned()
            .collect()
    }

    fn on_control(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let resp = match req {
            Request::Ps => {
                let addresses = self.bridge_addresses();
                let rows: Vec<ContainerStatus> = self
                    .names()
                    .iter()
                    .map(|n| self.status_of(n, &addresses))
                    .collect();
                Response::Ok(serde_json::to_value(rows).unwrap_or_default())
            }
            Request::Inspect { name } => match self.observed.get(&name) {
                None if !self.snapshot.desired.contains_key(&name) => {
                    Response::Error(format!("no container {name:?}"))
                }
                _ => {
                    let x = self.extra.get(&name);
                    let spec = self
                        .observed
                        .get(&name)
                        .map(|o| Arc::clone(&o.spec))
                        .or_else(|| self.desired_spec(&name));
                    Response::Ok(serde_json::json!({
                        "status": self.status_of(&name, &self.bridge_addresses()),
                        "instance": x.and_then(|x| x.instance.clone()),
                        "spec": spec.as_deref(),
                        "log_dir": self.rt.log_dir(&name),
                        "root": self.rt.root(),
                        "cgroup_parent": self.rt.cgroup_parent(),
                    }))
                }
            },
            Request::Stats => {
                let running: Vec<(String, String, bool)> = self
                    .extra
                    .iter()
                    .filter_map(|(n, x)| {
                        let bridged = self.observed.get(n).is_some_and(|o| {
                            o.spec.network.mode == crate::spec::NetworkMode::Bridge
                        });
                        x.instance
                            .as_ref()
                            .map(|i| (n.clone(), i.id.clone(), bridged))
                    })
                    .collect();
                let rt = Arc::clone(&self.rt);
                tokio::spawn(async move {
                    let rows = tokio::task::spawn_blocking(move || sample_stats(&rt, &running))
                        .await
                        .unwrap_or_default();
                    let _ =
                        reply.send(Response::Ok(serde_json::to_value(rows).unwrap_or_default()));
                });
                return;
            }
            Request::Stop { name } => self.manual_stop(&name, true),
            Request::Restart { name } => self.manual_stop(&name, false),
            Request::Start { name } => match self.observed.get_mut(&name) {
                None => Response::Error(format!("no container {name:?}")),
                Some(o) => {
                    o.manual_stop = false;
                    if matches!(o.phase, Phase::Exited { .. } | Phase::StartFailed { .. })
                        && !o.busy
                    {
                        o.phase = Phase::Stopped;
                        o.restart_at = None;
                    }
                    self.left.remove(&name);
                    self.save(&name);
                    Response::Ok(serde_json::json!("starting"))
                }
            },
            Request::Plan => {
                let actions = plan(&self.snapshot.desired, &self.observed, Instant::now(), 0.0);
                let lines: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
                Response::Ok(
                    serde_json::json!({ "actions": lines, "spec_errors": self.snapshot.errors }),
                )
            }
        };
        let _ = reply.send(resp);
    }

    /// `berth stop` (sticky: no restart until a start or a spec change) and `berth restart`.
    fn manual_stop(&mut self, name: &str, sticky: bool) -> Response {
        let Some(o) = self.observed.get_mut(name) else {
            return Response::Error(format!("no container {name:?}"));
        };
        if o.busy {
            return Response::Error(format!("{name}: busy with another action, try again"));
        }
        o.manual_stop = sticky;
        o.restart_at = None;
        let inst = self.extra.get(name).and_then(|x| x.instance.clone());
        match inst {
            Some(inst) => {
                o.busy = true;
                let spec = Arc::clone(&o.spec);
                if let Some(x) = self.extra.get_mut(name) {
                    x.stopping = true;
                }
                self.spawn_stop(name, inst, spec);
            }
            None => {
                if !sticky {
                    o.phase = Phase::Stopped;
                }
            }
        }
        self.save(name);
        Response::Ok(serde_json::json!(if sticky {
            "stopping"
        } else {
            "restarting"
        }))
    }

    fn spawn_stop(&self, name: &str, inst: Instance, spec: Arc<ValidatedSpec>) {
        let rt = Arc::clone(&self.rt);
        let tx = self.tx.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let (exit, ran_for) =
                tokio::task::spawn_blocking(move || stop_instance(&rt, &inst, &spec, false))
                    .await
                    .unwrap_or((None, Duration::ZERO));
            let _ = tx.send(Event::Done {
                name,
                outcome: Outcome::Ended {
                    exit,
                    at: Instant::now(),
                    ran_for,
                },
            });
        });
    }

    /// One step of the shutdown: stop whatever runs and is idle; true when nothing is left.
    fn shutdown_step(&mut self) -> bool {
        let names: Vec<String> = self.observed.keys().cloned().collect();
        let mut pending = false;
        for name in names {
            let (busy, inst) = {
                let o = &self.observed[&name];
                (
                    o.busy,
                    self.extra.get(&name).and_then(|x| x.instance.clone()),
                )
            };
            if busy {
                pending = true;
            } else if let Some(inst) = inst {
                pending = true;
                let spec = Arc::clone(&self.observed[&name].spec);
                if let Some(o) = self.observed.get_mut(&name) {
                    o.busy = true;
                }
                if let Some(x) = self.extra.get_mut(&name) {
                    x.stopping = true;
                }
                self.spawn_stop(&name, inst, spec);
            }
        }
        !pending
    }
}

/// A number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal(s) => format!("signal {s}"),
    }
}

/// Prepares and starts one instance (blocking).
fn start_instance(
    rt: &Runtime,
    exe: &OwnedFd,
    spec: &ValidatedSpec,
    logs: crate::runtime::container::LogLimits,
) -> Result<Instance, String> {
    let helper = launch::spawn_helper(exe, Stdin::Null).map_err(|e| e.to_string())?;
    let monitor_pid = helper.pid();
    let prepared = rt
        .prepare(spec, &Mode::Supervised(logs))
        .map_err(|e| e.to_string())?;
    let id = prepared.id.clone();
    match rt.start(&prepared, helper) {
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
            })
        }
        Err(e) => {
            let _ = rt.teardown(prepared, false);
            Err(e.to_string())
        }
    }
}

/// Waits for the monitor of `inst` to exit, up to `timeout`; true when it did.
fn wait_monitor(inst: &Instance, timeout: Duration) -> bool {
    let Ok(fd) = crate::sys::process::pidfd_open(inst.monitor_pid) else {
        return true;
    };
    if !state::is_same_process(inst.monitor_pid, inst.monitor_start) {
        return true;
    }
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let ready = nix::poll::poll(
        &mut fds,
        nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
    );
    let _ = waitpid(Pid::from_raw(inst.monitor_pid), Some(WaitPidFlag::WNOHANG));
    matches!(ready, Ok(n) if n > 0)
}

/// Stops an instance: its stop signal, then SIGKILL to the whole cgroup after its timeout;
/// then tears it down. Returns how it ended and how long it ran.
fn stop_instance(
    rt: &Runtime,
    inst: &Instance,
    spec: &ValidatedSpec,
    release_lease: bool,
) -> (Option<(ExitStatus, bool)>, Duration) {
    if state::is_same_process(inst.init_pid, inst.init_start) {
        if let Ok(sig) = Signal::try_from(spec.stop_signal) {
            let _ = kill(Pid::from_raw(inst.init_pid), sig);
        }
    }
    if !wait_monitor(inst, spec.stop_timeout) {
        if let Ok(Some(cg)) = rt.cgroup(&inst.id) {
            if let Err(e) = cg.kill_all() {
                tracing::warn!(id = %inst.id, "{e}");
            }
        }
        wait_monitor(inst, KILL_GRACE);
    }
    cleanup_instance(rt, inst, release_lease)
}

/// Records how an ended instance exited (and whether the OOM killer did it), then removes its
/// cgroup and state dir.
fn cleanup_instance(
    rt: &Runtime,
    inst: &Instance,
    release_lease: bool,
) -> (Option<(ExitStatus, bool)>, Duration) {
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
    (exit.map(|e| (e.status, oom)), ran_for)
}

/// CPU over a 200 ms window, memory and pids from the cgroups, and bridge traffic, of the
/// running instances (name, id, in bridge mode).
fn sample_stats(rt: &Runtime, running: &[(String, String, bool)]) -> Vec<ContainerStats> {
    let read = |id: &str| rt.cgroup(id).ok().flatten().and_then(|cg| cg.stats().ok());
    let first: Vec<_> = running.iter().map(|(_, id, _)| read(id)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = t0.elapsed().as_nanos() as f64;
    running
        .iter()
        .zip(first)
        .filter_map(|((name, id, bridged), before)| {
            let after = read(id)?;
            let traffic = if *bridged { rt.traffic(id) } else { None };
            let used = after
                .cpu_usage_ns
                .saturating_sub(before.map(|b| b.cpu_usage_ns).unwrap_or(after.cpu_usage_ns));
            Some(ContainerStats {
                name: name.clone(),
                cpu_percent: (used as f64 / elapsed * 1000.0).round() / 10.0,
                memory_bytes: after.memory_bytes,
                memory_limit: after.memory_limit,
                pids: after.pids_current,
                net_rx_bytes: traffic.map(|t| t.0),
                net_tx_bytes: traffic.map(|t| t.1),
            })
        })
        .collect()
}

/// Watches the spec dir; changes (not reads: relisting reads every file) wake `hint`, which
/// coalesces any number of them into one relist.
fn watch_specs(
    dir: &Path,
    hint: Arc<tokio::sync::Notify>,
) -> Option<notify_crate::RecommendedWatcher> {
    use notify_crate::Watcher;
    let result =
        notify_crate::recommended_watcher(move |ev: notify_crate::Result<notify_crate::Event>| {
            let is_change = match ev {
                Ok(ev) => match ev.kind {
                    notify_crate::EventKind::Access(notify_crate::event::AccessKind::Close(
                        notify_crate::event::AccessMode::Write,
                    )) => true,
                    notify_crate::EventKind::Access(_) => false,
                    _ => true,
                },
                Err(_) => true,
            };
            if is_change {
                hint.notify_one();
            }
        })
        .and_then(|mut w| {
            w.watch(dir, notify_crate::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
    match result {
        Ok(w) => Some(w),
        Err(e) => {
            // The periodic relist still sees every change, only later.
            tracing::warn!(dir = %dir.display(), "not watching for changes: {e}");
            None
        }
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another daemon is listening there",
        )));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, tx: mpsc::UnboundedSender<Event>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == me)
            .unwrap_or(false);
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let resp = if !allowed {
                Response::Error("permission denied".into())
            } else {
                match serde_json::from_str::<Request>(&line) {
                    Err(e) => Response::Error(format!("bad request: {e}")),
                    Ok(req) => {
                        let (reply, rx) = oneshot::channel();
                        let _ = tx.send(Event::Control { req, reply });
                        rx.await.unwrap_or_else(|_| {
                            Response::Error("the daemon is shutting down".into())
                        })
                    }
                }
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

fn spawn_signal_handlers(tx: mpsc::UnboundedSender<Event>) {
    for (kind, shutdown) in [
        (SignalKind::terminate(), true),
        (SignalKind::interrupt(), true),
        (SignalKind::hangup(), false),
    ] {
        let tx = tx.clone();
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    let _ = tx.send(if shutdown {
                        Event::Shutdown
                    } else {
                        Event::Hint
                    });
                }
            });
        }
    }
    // Reap every child that is not waited for elsewhere: monitors we started, and as PID 1
    // every orphan reparented to us.
    if let Ok(mut s) = signal(SignalKind::child()) {
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                crate::sys::children::reap_others();
            }
        });
    }
}
