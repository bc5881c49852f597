//! The decision loop. It owns one [`Record`] per container name (the planner's view, the
//! running instance, what to report) and nothing else holds container state. It turns events
//! (spec dir changes, exits, finished jobs, timers, control requests, the shutdown) into
//! observed state, asks the planner what to do, and hands each action to that container's
//! [`Worker`]. It never waits for the host itself: every effect goes through a worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::control::{Request, Response};
use super::effects::Effects;
use super::metrics::{self, Counters, Sample, Usage};
use super::persist::{Write, Writer};
use super::status;
use super::worker::{self, Job, Outcome, Worker};
use crate::image::{ImageRef, RegistryRef};
use crate::init::Power;
use crate::reconcile::health::{self, Health, HealthState};
use crate::reconcile::plan::{spec_to_start, Trial};
use crate::reconcile::plan::{Desired, DesiredSet};
use crate::reconcile::policy;
use crate::reconcile::{plan, plan_shutdown, Action, Observed, ObservedSet, Phase};
use crate::runtime::protocol::ExitStatus;
use crate::source::{Snapshot, SpecSource};
use crate::spec::{NetworkMode, ValidatedSpec};
use crate::state::{ContainerRecord, Instance, StateDir};

/// How often the spec dir is relisted without any inotify hint.
const RELIST_EVERY: Duration = Duration::from_secs(10);
/// Quiet time after an inotify hint before relisting (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(15);
/// Image pulls carried out at once; the others queue without holding a thread.
pub const PULLS_AT_ONCE: usize = 2;
/// Events taken in at most per planning pass.
const BATCH: usize = 512;
/// The window `berth stats` measures CPU use over.
const STATS_WINDOW: Duration = Duration::from_millis(200);

pub enum Event {
    /// The spec dir may have changed: relist it.
    Hint,
    Exited {
        name: String,
        id: String,
    },
    Done {
        name: String,
        outcome: Outcome,
    },
    /// A time the planner waits for has come (a restart due, a trial's healthy_for over): the
    /// pass after it acts.
    Wake,
    /// While instance `id` ran, its image's tag was asked of the registry (`update.check`):
    /// the image it names now, pinned by digest.
    Checked {
        name: String,
        id: String,
        result: Result<String, String>,
    },
    /// A health probe of instance `id` ended.
    Probed {
        name: String,
        id: String,
        ok: bool,
        output: String,
    },
    Control {
        req: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A `berth events` client: every status change goes to `events` as a JSON line.
    Subscribe {
        events: mpsc::UnboundedSender<String>,
    },
    /// Stop every container and end the loop; `power` is what the machine should do then
    /// (when berth is its init).
    Shutdown {
        power: Option<Power>,
    },
    /// A relist of the spec dir finished.
    Relisted(Box<Snapshot>),
}

/// Sends the workers' reports into the loop.
struct Reporter(mpsc::UnboundedSender<Event>);

impl worker::Report for Reporter {
    fn done(&self, name: &str, outcome: Outcome) {
        let _ = self.0.send(Event::Done {
            name: name.to_string(),
            outcome,
        });
    }

    fn exited(&self, name: &str, id: &str) {
        let _ = self.0.send(Event::Exited {
            name: name.to_string(),
            id: id.to_string(),
        });
    }

    fn probed(&self, name: &str, id: &str, ok: bool, output: String) {
        let _ = self.0.send(Event::Probed {
            name: name.to_string(),
            id: id.to_string(),
            ok,
            output,
        });
    }

    fn checked(&self, name: &str, id: &str, result: Result<String, String>) {
        let _ = self.0.send(Event::Checked {
            name: name.to_string(),
            id: id.to_string(),
            result,
        });
    }
}

/// What `update.check` found a container's tag to name, while it differs from what the file
/// says literally: the desired spec's image is `pinned` (`registry/repo:tag@sha256:...`).
struct Pin {
    /// The tag the file names (canonical, without digest).
    tag: RegistryRef,
    pinned: String,
}

/// The registry tag an image reference names, without any digest.
fn registry_tag(image: &str) -> Option<RegistryRef> {
    match ImageRef::parse(image) {
        Ok(ImageRef::Registry(r)) => Some(RegistryRef { digest: None, ..r }),
        _ => None,
    }
}

/// Everything the daemon knows of one container.
pub struct Record {
    pub obs: Observed,
    pub instance: Option<Instance>,
    /// The job its worker is doing ("starting", "stopping"...), if any.
    pub job: Option<&'static str>,
    /// The last thing worth telling about it (an exit, an error, why it is not restarted).
    pub note: Option<String>,
    /// A `Leave` was reported (it is returned on every pass; logged once).
    left: bool,
    /// The exit of this instance id was seen while a job was running.
    exit_seen: Option<String>,
    /// The running instance's health, when its spec has a probe.
    pub health: Option<HealthState>,
    /// The task probing the running instance.
    probe: Option<tokio::task::AbortHandle>,
    /// The task asking the registry for a new image (`update.check`).
    checker: Option<tokio::task::AbortHandle>,
    /// Why it waits to start (a dependency not ready), while it does.
    pub waiting: Option<String>,
    /// The last rollback: when and why.
    pub last_rollback: Option<String>,
    /// Restarts by the restart policy since this daemon started (never reset).
    restarts_total: u64,
    /// How the last instance ended.
    last_exit: Option<ExitStatus>,
}

impl Record {
    fn new(spec: Arc<ValidatedSpec>) -> Record {
        Record {
            obs: Observed::new(spec),
            instance: None,
            job: None,
            note: None,
            left: false,
            exit_seen: None,
            health: None,
            probe: None,
            checker: None,
            waiting: None,
            last_rollback: None,
            restarts_total: 0,
            last_exit: None,
        }
    }

    /// Watches a new (or adopted) instance: its exit, its probe and its image's tag, as the
    /// spec says.
    fn track(&mut self, name: &str, inst: &Instance, ctx: &worker::Context) {
        worker::watch_exit(name, inst, ctx);
        self.start_probing(name, inst, ctx);
        self.start_checking(name, inst, ctx);
    }

    /// Asks the registry about `inst`'s image tag as the record's spec says, replacing any
    /// checker it had.
    fn start_checking(&mut self, name: &str, inst: &Instance, ctx: &worker::Context) {
        self.stop_checking();
        let spec = &self.obs.spec;
        // A built image is checked by rebuilding it: a changed context is a new digest.
        let every = spec
            .update
            .check
            .or_else(|| spec.build.as_ref().map(|_| crate::spec::BUILD_CHECK));
        if let (Some(every), Some(tag)) = (every, registry_tag(&spec.image)) {
            self.checker = Some(worker::watch_image(
                name,
                inst,
                tag.to_string(),
                spec.build.clone(),
                every,
                ctx,
            ));
        }
    }

    fn stop_checking(&mut self) {
        if let Some(c) = self.checker.take() {
            c.abort();
        }
    }

    /// Stops what watches the instance that ended.
    fn untrack(&mut self) {
        self.stop_probing();
        self.stop_checking();
    }

    /// Probes `inst` as the record's spec says, replacing any probe task it had.
    fn start_probing(&mut self, name: &str, inst: &Instance, ctx: &worker::Context) {
        self.stop_probing();
        self.probe = worker::watch_health(name, inst, &self.obs.spec, ctx);
        if self.probe.is_some() {
            self.health = Some(HealthState::new());
            self.obs.health = Some(Health::Starting);
        }
    }

    fn stop_probing(&mut self) {
        if let Some(p) = self.probe.take() {
            p.abort();
        }
        self.health = None;
        self.obs.health = None;
    }

    fn set_job(&mut self, job: Option<&'static str>) {
        self.job = job;
        self.obs.busy = job.is_some();
    }
}

pub struct Engine {
    ctx: worker::Context,
    state: StateDir,
    /// Relisted on the blocking pool (`Event::Relisted` brings the result back).
    source: Arc<std::sync::Mutex<SpecSource>>,
    relisting: bool,
    relist_again: bool,
    /// Records and status files go to disk from a thread of their own.
    writer: Writer,
    /// The containers whose status may have changed since the last publish (`None`: all).
    dirty: Option<BTreeSet<String>>,
    /// The spec dir as its files say.
    pub(super) snapshot: Snapshot,
    /// What the planner is given: the snapshot with the pins applied.
    desired: DesiredSet,
    pins: BTreeMap<String, Pin>,
    pub(super) records: BTreeMap<String, Record>,
    workers: BTreeMap<String, Worker>,
    tx: mpsc::UnboundedSender<Event>,
    shutting_down: bool,
    power: Option<Power>,
    status: Option<status::StatusFiles>,
    /// Every container's `ps` row as of the last pass (also read by the control socket).
    board: status::Board,
    subscribers: Vec<mpsc::UnboundedSender<String>>,
}

impl Engine {
    /// An engine and the sender of its events (for the control socket, signals and tests).
    pub fn new(
        effects: Arc<dyn Effects>,
        state: StateDir,
        source: SpecSource,
        status: Option<status::StatusFiles>,
    ) -> (
        Engine,
        mpsc::UnboundedSender<Event>,
        mpsc::UnboundedReceiver<Event>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = worker::Context {
            effects,
            pulls: Arc::new(Semaphore::new(PULLS_AT_ONCE)),
            report: Arc::new(Reporter(tx.clone())),
            counters: Arc::new(Counters::default()),
        };
        let writer = Writer::spawn(state.clone());
        let engine = Engine {
            ctx,
            state,
            source: Arc::new(std::sync::Mutex::new(source)),
            relisting: false,
            relist_again: false,
            writer,
            dirty: None,
            snapshot: Snapshot::default(),
            desired: DesiredSet::new(),
            pins: BTreeMap::new(),
            records: BTreeMap::new(),
            workers: BTreeMap::new(),
            tx: tx.clone(),
            shutting_down: false,
            power: None,
            status,
            board: status::Board::default(),
            subscribers: Vec::new(),
        };
        (engine, tx, rx)
    }

    /// Adopts what a previous daemon left, then runs until the shutdown has stopped every
    /// container. `hint` wakes it for a relist; `on_ready` is called once the first pass ran.
    /// Returns the power state the shutdown asked for, if any.
    /// `watchdog`: systemd's watchdog interval, fed from this loop (at half of it) so that it
    /// stops being fed when the loop stops turning.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        hint: Arc<tokio::sync::Notify>,
        on_ready: impl FnOnce(),
        watchdog: Option<Duration>,
    ) -> Option<Power> {
        self.adopt();
        // The first listing before anything runs: what to adopt and start depends on it.
        let first = self.lock_source().relist();
        self.take_snapshot(first);
        self.release_unclaimed_addresses();
        self.reconcile();
        self.publish();
        on_ready();
        let mut relist = tokio::time::interval(RELIST_EVERY);
        relist.tick().await;
        let mut dog = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| {
            (w / 2).max(Duration::from_millis(100))
        }));
        dog.tick().await;
        loop {
            let event = tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => ev, None => break },
                _ = hint.notified() => Event::Hint,
                _ = relist.tick() => Event::Hint,
                _ = dog.tick() => {
                    if watchdog.is_some() {
                        super::notify::notify("WATCHDOG=1");
                    }
                    continue;
                }
            };
            self.mark_dirty(&event);
            let mut changed = self.handle(event).await;
            // Whatever else is queued is taken in before one planning pass for all of it: a
            // burst of exits and finished jobs costs one pass, not one each.
            for _ in 0..BATCH {
                let Ok(event) = rx.try_recv() else {
                    break;
                };
                self.mark_dirty(&event);
                changed |= self.handle(event).await;
            }
            if !changed {
                continue;
            }
            if self.shutting_down {
                if self.shutdown_step() {
                    self.publish();
                    break;
                }
            } else {
                self.reconcile();
            }
            self.publish();
        }
        let power = self.power;
        self.writer.finish();
        power
    }

    /// Notes which containers' status an event may change.
    fn mark_dirty(&mut self, event: &Event) {
        let name = match event {
            Event::Exited { name, .. }
            | Event::Done { name, .. }
            | Event::Probed { name, .. }
            | Event::Checked { name, .. } => Some(name.clone()),
            Event::Control {
                req: Request::Stop { name } | Request::Start { name } | Request::Restart { name },
                ..
            } => Some(name.clone()),
            Event::Control { .. } | Event::Subscribe { .. } => return,
            Event::Hint | Event::Wake | Event::Shutdown { .. } | Event::Relisted(_) => None,
        };
        match (name, &mut self.dirty) {
            (Some(n), Some(set)) => {
                set.insert(n);
            }
            (Some(_), None) => {}
            (None, _) => self.dirty = None,
        }
    }

    pub(super) fn writer(&self) -> &Writer {
        &self.writer
    }

    fn lock_source(&self) -> std::sync::MutexGuard<'_, SpecSource> {
        self.source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `ps` rows as of the last pass, for the control socket.
    pub fn board(&self) -> status::Board {
        self.board.clone()
    }

    /// Updates the board and the status files that changed, and tells the `berth events`
    /// clients.
    fn publish(&mut self) {
        let dirty = self.dirty.replace(BTreeSet::new());
        let rows = status::refresh_board(self, &self.board, dirty.as_ref());
        if let Some(mut files) = self.status.take() {
            let changes = files.publish(self, rows, dirty.as_ref());
            self.status = Some(files);
            if !self.subscribers.is_empty() {
                for change in changes {
                    let line = change.to_string();
                    self.subscribers.retain(|s| s.send(line.clone()).is_ok());
                }
            }
        }
    }

    /// Takes in one event; false when it changed nothing the planner sees (a probe that left
    /// the health as it was: the common case, so that probes cost no planning pass).
    async fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Hint => {
                tokio::time::sleep(DEBOUNCE).await;
                self.start_relist();
                return false;
            }
            Event::Relisted(snapshot) => {
                self.relisting = false;
                self.take_snapshot(*snapshot);
                if std::mem::take(&mut self.relist_again) {
                    self.start_relist();
                }
            }
            Event::Exited { name, id } => self.on_exited(&name, &id),
            Event::Checked { name, id, result } => return self.on_checked(&name, &id, result),
            Event::Probed {
                name,
                id,
                ok,
                output,
            } => return self.on_probed(&name, &id, ok, output),
            Event::Done { name, outcome } => self.on_done(&name, outcome),
            // The pass after every event acts on it (a cancelled restart is no more).
            Event::Wake => {}
            Event::Control { req, reply } => {
                // A question changes nothing the planner sees: no pass after it, and the
                // answer goes out at once.
                let asks = matches!(
                    req,
                    Request::Ps
                        | Request::Inspect { .. }
                        | Request::Stats
                        | Request::Plan
                        | Request::Metrics
                        | Request::Events
                );
                self.on_control(req, reply);
                if asks {
                    return false;
                }
            }
            Event::Subscribe { events } => {
                self.subscribers.push(events);
                return false;
            }
            Event::Shutdown { power } => self.shut_down(power),
        }
        true
    }

    /// Reads the spec dir again on the blocking pool (reading and parsing thousands of files
    /// never holds up the loop); one relist at a time, another after it when hinted meanwhile.
    fn start_relist(&mut self) {
        if self.relisting {
            self.relist_again = true;
            return;
        }
        self.relisting = true;
        let (source, tx) = (Arc::clone(&self.source), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let snapshot = source.lock().unwrap_or_else(|e| e.into_inner()).relist();
            let _ = tx.send(Event::Relisted(Box::new(snapshot)));
        });
    }

    /// Takes in a relist's result, logging the errors that are new.
    fn take_snapshot(&mut self, snapshot: Snapshot) {
        let previous = std::mem::replace(&mut self.snapshot, snapshot).errors;
        self.log_spec_errors(&previous);
        self.apply_pins();
    }

    /// The desired set: the files' specs, each image a check pinned replaced by its pin (a
    /// pin whose file no longer names that tag with a check is dropped).
    fn apply_pins(&mut self) {
        let files = &self.snapshot.desired;
        self.pins.retain(|name, pin| {
            files.get(name).is_some_and(|d| {
                d.spec.update.check.is_some()
                    && registry_tag(&d.spec.image).as_ref() == Some(&pin.tag)
            })
        });
        self.desired = files
            .iter()
            .map(|(name, d)| {
                let d = match self.pins.get(name) {
                    Some(pin) => Desired {
                        spec: Arc::new(ValidatedSpec {
                            image: pin.pinned.clone(),
                            ..(*d.spec).clone()
                        }),
                    },
                    None => d.clone(),
                };
                (name.clone(), d)
            })
            .collect();
    }

    /// Stops every container from now on; the first power state asked for is kept.
    fn shut_down(&mut self, power: Option<Power>) {
        if !self.shutting_down {
            tracing::info!("shutting down: stopping every container");
        }
        self.shutting_down = true;
        self.power = self.power.or(power);
        super::notify::notify("STOPPING=1");
    }

    fn observed(&self) -> ObservedSet {
        self.records
            .iter()
            .map(|(n, r)| (n.clone(), r.obs.clone()))
            .collect()
    }

    fn reconcile(&mut self) {
        let t0 = std::time::Instant::now();
        let actions = plan(&self.desired, &self.observed(), now(), jitter());
        for action in actions {
            self.execute(action);
        }
        let counters = &self.ctx.counters;
        counters.reconciles.fetch_add(1, Ordering::Relaxed);
        counters.reconcile_seconds.observe(t0.elapsed());
    }

    /// The running instances: (name, id, in bridge mode).
    fn running(&self) -> Vec<(String, String, bool)> {
        self.records
            .iter()
            .filter_map(|(n, r)| {
                let bridged = r.obs.spec.network.mode == NetworkMode::Bridge;
                r.instance
                    .as_ref()
                    .map(|i| (n.clone(), i.id.clone(), bridged))
            })
            .collect()
    }

    /// Reads the usage of `running` on the blocking pool, twice `window` apart when given:
    /// (the first reads, the last reads, the time between them).
    fn read_usage(
        &self,
        running: &[(String, String, bool)],
        window: Option<Duration>,
    ) -> impl std::future::Future<Output = (Vec<Option<Usage>>, Vec<Option<Usage>>, Duration)> {
        let fx = Arc::clone(&self.ctx.effects);
        let ids: Vec<(String, bool)> = running.iter().map(|(_, id, b)| (id.clone(), *b)).collect();
        async move {
            let read = |fx: Arc<dyn Effects>, ids: Vec<(String, bool)>| async move {
                tokio::task::spawn_blocking(move || fx.usage(&ids))
                    .await
                    .unwrap_or_default()
            };
            let first = read(Arc::clone(&fx), ids.clone()).await;
            let Some(window) = window else {
                return (Vec::new(), first, Duration::ZERO);
            };
            let t0 = tokio::time::Instant::now();
            tokio::time::sleep(window).await;
            let last = read(fx, ids).await;
            (first, last, t0.elapsed())
        }
    }

    /// Every container as the metrics show it (without usage), from the board.
    fn samples(&self) -> Vec<Sample> {
        self.board
            .rows()
            .into_iter()
            .map(|row| {
                let r = self.records.get(&row.name);
                Sample {
                    restarts_total: r.map_or(0, |r| r.restarts_total),
                    last_exit_code: r.and_then(|r| r.last_exit).map(|e| i64::from(e.as_code())),
                    name: row.name,
                    state: row.state,
                    health: row.health,
                    usage: None,
                }
            })
            .collect()
    }

    /// One pass of the shutdown; true once nothing runs and no job is left.
    fn shutdown_step(&mut self) -> bool {
        let actions = plan_shutdown(&self.observed());
        let idle = actions.is_empty() && self.records.values().all(|r| r.job.is_none());
        for action in actions {
            self.execute(action);
        }
        idle
    }

    fn worker(&mut self, name: &str) -> &Worker {
        let ctx = &self.ctx;
        self.workers
            .entry(name.to_string())
            .or_insert_with(|| Worker::spawn(name.to_string(), ctx.clone()))
    }

    fn dispatch(&mut self, name: &str, job_name: &'static str, job: Job) {
        if let Some(r) = self.records.get_mut(name) {
            r.set_job(Some(job_name));
        }
        self.worker(name).send(job);
    }

    fn desired_spec(&self, name: &str) -> Option<Arc<ValidatedSpec>> {
        self.desired.get(name).map(|d| Arc::clone(&d.spec))
    }

    fn execute(&mut self, action: Action) {
        let name = action.name().to_string();
        if let Some(set) = &mut self.dirty {
            set.insert(name.clone());
        }
        match action {
            Action::Start { .. } => {
                let Some(desired) = self.desired.get(&name) else {
                    return;
                };
                let spec = spec_to_start(desired, self.records.get(&name).map(|r| &r.obs));
                let r = self
                    .records
                    .entry(name.clone())
                    .or_insert_with(|| Record::new(Arc::clone(&spec)));
                if r.obs.restart_at.take().is_some() {
                    r.obs.restarts += 1;
                    r.restarts_total += 1;
                }
                r.obs.manual_stop = false;
                r.left = false;
                r.waiting = None;
                self.dispatch(&name, "starting", Job::Start { spec });
            }
            Action::Recreate { .. } => {
                let (Some(spec), Some(r)) = (self.desired_spec(&name), self.records.get(&name))
                else {
                    return;
                };
                let Some(old) = r.instance.clone() else {
                    return;
                };
                let old_spec = Arc::clone(&r.obs.spec);
                if spec.image != old_spec.image {
                    tracing::info!(%name, image = %spec.image, "replacing the container");
                } else {
                    tracing::info!(%name, "the spec changed: replacing the container");
                }
                self.dispatch(
                    &name,
                    "updating",
                    Job::Recreate {
                        old,
                        old_spec,
                        spec,
                    },
                );
            }
            Action::Remove { .. } => {
                let Some(r) = self.records.get(&name) else {
                    return;
                };
                let job = Job::Remove {
                    inst: r.instance.clone(),
                    spec: Arc::clone(&r.obs.spec),
                };
                self.dispatch(&name, "removing", job);
            }
            Action::Stop { .. } => {
                let Some(r) = self.records.get(&name) else {
                    return;
                };
                let Some(inst) = r.instance.clone() else {
                    return;
                };
                let spec = Arc::clone(&r.obs.spec);
                self.dispatch(
                    &name,
                    "stopping",
                    Job::Stop {
                        inst,
                        spec,
                        kill: false,
                    },
                );
            }
            Action::Rollback { reason, .. } => {
                let Some(r) = self.records.get_mut(&name) else {
                    return;
                };
                let Some(trial) = r.obs.trial.clone() else {
                    return;
                };
                tracing::warn!(%name, "rolling back to the previous version: {reason}");
                r.last_rollback = Some(format!(
                    "{}: {reason}",
                    humantime::format_rfc3339_seconds(SystemTime::now())
                ));
                let inst = match r.obs.phase {
                    Phase::Running { .. } => r.instance.clone(),
                    _ => None,
                };
                let spec = Arc::clone(&r.obs.spec);
                self.dispatch(
                    &name,
                    "rolling back",
                    Job::Rollback {
                        inst,
                        spec,
                        previous: trial.previous,
                    },
                );
            }
            Action::Confirm { .. } => {
                if let Some(r) = self.records.get_mut(&name) {
                    r.obs.trial = None;
                    tracing::info!(%name, "the new version ran its healthy_for: kept");
                }
            }
            Action::Wait { reason, .. } => {
                let Some(spec) = self.desired_spec(&name) else {
                    return;
                };
                let r = self
                    .records
                    .entry(name.clone())
                    .or_insert_with(|| Record::new(spec));
                if r.waiting.as_deref() != Some(reason.as_str()) {
                    tracing::info!(%name, "{reason}");
                    r.waiting = Some(reason);
                }
            }
            Action::KillUnhealthy { .. } => {
                let Some(r) = self.records.get_mut(&name) else {
                    return;
                };
                let Some(inst) = r.instance.clone() else {
                    return;
                };
                let said = r.health.as_ref().map(|h| h.last_output.clone());
                tracing::warn!(%name, "unhealthy: killing it ({})", said.unwrap_or_default());
                r.obs.killed_unhealthy = true;
                let spec = Arc::clone(&r.obs.spec);
                self.dispatch(
                    &name,
                    "killing",
                    Job::Stop {
                        inst,
                        spec,
                        kill: true,
                    },
                );
            }
            Action::Cleanup { .. } => {
                let Some(inst) = self.records.get(&name).and_then(|r| r.instance.clone()) else {
                    return;
                };
                self.dispatch(&name, "cleaning up", Job::Cleanup { inst });
            }
            Action::UpdateResources { bandwidth, .. } => {
                let (Some(spec), Some(inst)) = (
                    self.desired_spec(&name),
                    self.records.get(&name).and_then(|r| r.instance.clone()),
                ) else {
                    return;
                };
                self.dispatch(
                    &name,
                    "updating",
                    Job::Update {
                        inst,
                        spec,
                        bandwidth,
                    },
                );
            }
            Action::Adopt { .. } => {
                if let (Some(spec), Some(r)) =
                    (self.desired_spec(&name), self.records.get_mut(&name))
                {
                    let new_probe = spec.health != r.obs.spec.health;
                    let new_check = spec.update.check != r.obs.spec.update.check;
                    r.obs.spec = spec;
                    if let Some(inst) = r.instance.clone() {
                        if new_probe {
                            r.start_probing(&name, &inst, &self.ctx);
                        }
                        if new_check {
                            r.start_checking(&name, &inst, &self.ctx);
                        }
                    }
                }
                self.save(&name);
            }
            Action::ScheduleRestart { delay, .. } => {
                if let Some(r) = self.records.get_mut(&name) {
                    r.obs.restart_at = Some(now() + delay);
                }
                tracing::info!(%name, ?delay, "restarting");
                self.wake_after(delay);
            }
            Action::Leave { reason, .. } => {
                if let Some(r) = self.records.get_mut(&name) {
                    if !r.left {
                        r.left = true;
                        tracing::info!(%name, "not restarted: {reason}");
                        r.note = Some(reason);
                    }
                }
            }
        }
    }

    fn on_exited(&mut self, name: &str, id: &str) {
        let Some(r) = self.records.get_mut(name) else {
            return;
        };
        if r.instance.as_ref().map(|i| i.id.as_str()) != Some(id) {
            return;
        }
        if r.job.is_some() {
            // The job in hand may be the stop that made it exit; if not, see on_done.
            r.exit_seen = Some(id.to_string());
        } else {
            r.obs.phase = Phase::Exiting { at: now() };
        }
    }

    /// Records what a check found the image's tag to name; true when that changes the
    /// desired image: a new digest is an update, and finding what runs makes the desired
    /// image what runs.
    fn on_checked(&mut self, name: &str, id: &str, result: Result<String, String>) -> bool {
        let Some(r) = self.records.get_mut(name) else {
            return false;
        };
        let Some(inst) = r.instance.as_ref().filter(|i| i.id == id) else {
            return false;
        };
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%name, "checking for a new image: {e}");
                return false;
            }
        };
        let (Some(tag), Some((_, digest))) = (registry_tag(&found), found.rsplit_once('@')) else {
            return false;
        };
        let runs_it = inst.image_digest.as_deref() == Some(digest);
        let pin = if runs_it {
            let running = &r.obs.spec.image;
            (running.contains('@') && registry_tag(running).as_ref() == Some(&tag))
                .then(|| running.clone())
        } else {
            Some(found.clone())
        };
        if pin.as_ref() == self.pins.get(name).map(|p| &p.pinned) {
            return false;
        }
        match pin {
            Some(pinned) => {
                if !runs_it {
                    tracing::info!(%name, "{tag} now names {digest}: updating");
                }
                self.pins.insert(name.to_string(), Pin { tag, pinned });
            }
            None => {
                self.pins.remove(name);
            }
        }
        self.apply_pins();
        true
    }

    /// Records a probe's result; true when the health changed.
    fn on_probed(&mut self, name: &str, id: &str, ok: bool, output: String) -> bool {
        let Some(r) = self.records.get_mut(name) else {
            return false;
        };
        let (Some(spec), Some(state), Phase::Running { since, .. }) =
            (r.obs.spec.health.as_ref(), r.health.as_ref(), &r.obs.phase)
        else {
            return false;
        };
        if r.instance.as_ref().map(|i| i.id.as_str()) != Some(id) {
            return false;
        }
        let next = health::after_probe(state, spec, ok, output, now().duration_since(*since));
        if next.status != state.status {
            match next.status {
                Health::Unhealthy => {
                    tracing::warn!(%name, "unhealthy: {}", next.last_output)
                }
                s => tracing::info!(%name, "{}: {}", s.as_str(), next.last_output),
            }
        }
        let changed = next.status != state.status;
        r.obs.health = Some(next.status);
        r.health = Some(next);
        changed
    }

    fn on_done(&mut self, name: &str, outcome: Outcome) {
        let Some(r) = self.records.get_mut(name) else {
            return;
        };
        let job = r.job;
        r.set_job(None);
        // When the planner must look again without an event (a trial's end).
        let mut wake = None;
        match outcome {
            Outcome::Removed => {
                self.records.remove(name);
                self.workers.remove(name);
                self.writer.send(Write::RemoveRecord(name.to_string()));
                tracing::info!(%name, "removed");
                self.refresh_bridge_hosts();
                return;
            }
            Outcome::Started { instance, spec } => {
                tracing::info!(%name, id = %instance.id, pid = instance.init_pid, "started");
                // A new version replacing a running one is on trial for its healthy_for.
                r.obs.trial = (job == Some("updating") && spec.update.rollback).then(|| Trial {
                    since: now(),
                    previous: Arc::clone(&r.obs.spec),
                });
                if r.obs.trial.is_some() {
                    wake = Some(spec.update.healthy_for);
                }
                r.obs.phase = Phase::Running {
                    pid: instance.init_pid,
                    since: now(),
                };
                r.obs.spec = spec;
                r.obs.restart_requested = false;
                r.obs.failed_update = None;
                r.obs.killed_unhealthy = false;
                r.track(name, &instance, &self.ctx);
                r.instance = Some(instance);
                r.note = None;
            }
            Outcome::StartFailed { error, spec } => {
                tracing::error!(%name, "start failed: {error}");
                r.obs.phase = Phase::StartFailed {
                    error: error.clone(),
                    at: now(),
                };
                r.obs.spec = spec;
                r.obs.restart_requested = false;
                r.instance = None;
                r.note = Some(error);
            }
            Outcome::UpdateFailed {
                error,
                failed,
                running,
                spec,
            } => {
                tracing::error!(%name, "update failed, the previous version runs on: {error}");
                let restarted = r.instance.as_ref().map(|i| &i.id) != Some(&running.id);
                r.obs.spec = spec;
                if restarted {
                    r.obs.phase = Phase::Running {
                        pid: running.init_pid,
                        since: now(),
                    };
                    r.track(name, &running, &self.ctx);
                }
                r.instance = Some(running);
                r.obs.failed_update = Some(failed);
                r.note = Some(format!(
                    "update failed, the previous version runs on: {error}"
                ));
            }
            Outcome::RolledBack {
                result,
                previous,
                failed,
            } => {
                r.obs.trial = None;
                r.obs.failed_update = Some(failed);
                r.obs.spec = previous;
                let why = r.last_rollback.clone().unwrap_or_default();
                match result {
                    Ok(instance) => {
                        tracing::info!(%name, id = %instance.id, "rolled back: the previous version runs");
                        r.obs.phase = Phase::Running {
                            pid: instance.init_pid,
                            since: now(),
                        };
                        r.track(name, &instance, &self.ctx);
                        r.instance = Some(instance);
                        r.note = Some(format!("rolled back ({why})"));
                    }
                    Err(error) => {
                        tracing::error!(%name, "rolled back, but the previous version did not start: {error}");
                        r.obs.phase = Phase::StartFailed {
                            error: error.clone(),
                            at: now(),
                        };
                        r.instance = None;
                        r.note = Some(format!(
                            "rolled back ({why}); the previous version did not start: {error}"
                        ));
                    }
                }
            }
            Outcome::Ended { ending, at } => {
                let said = r.health.as_ref().map(|h| h.last_output.clone());
                r.untrack();
                r.instance = None;
                r.obs.restarts = policy::consecutive_after_run(
                    &r.obs.spec.restart,
                    r.obs.restarts,
                    ending.ran_for,
                );
                let stopped = job == Some("stopping");
                r.obs.phase = match ending.exit {
                    _ if stopped => Phase::Stopped,
                    Some((status, oom_killed)) => Phase::Exited {
                        status,
                        oom_killed,
                        at,
                    },
                    // The monitor left no record (it was killed): count it as a kill.
                    None => Phase::Exited {
                        status: ExitStatus::Signal(9),
                        oom_killed: false,
                        at,
                    },
                };
                if let Some((status, oom)) = ending.exit {
                    r.last_exit = Some(status);
                    let text = status::describe(status, oom);
                    tracing::info!(%name, "exited: {text}");
                    r.note = Some(text);
                }
                if job == Some("killing") {
                    r.note = Some(format!("killed: unhealthy ({})", said.unwrap_or_default()));
                }
            }
            Outcome::Updated { spec, error } => match error {
                None => {
                    tracing::info!(%name, "resources updated in place");
                    r.obs.spec = spec;
                }
                Some(e) => {
                    tracing::error!(%name, "updating resources: {e}");
                    r.note = Some(format!("updating resources: {e}"));
                }
            },
        }
        // An exit seen during the job, of the instance that is still current: it ended.
        match (r.exit_seen.take(), &r.instance) {
            (Some(id), Some(inst)) if id == inst.id => {
                r.obs.phase = Phase::Exiting { at: now() };
            }
            _ => {}
        }
        if let Some(after) = wake {
            self.wake_after(after);
        }
        self.save(name);
        self.refresh_bridge_hosts();
    }

    /// Sends `Event::Wake` after `after`, for a decision that depends on the time.
    fn wake_after(&self, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Event::Wake);
        });
    }

    /// Takes over what a previous daemon left: instances that still run (proved by pid and
    /// start time) are tracked again, ended ones become `Exiting` (the planner cleans them up),
    /// and container dirs no record knows are removed.
    fn adopt(&mut self) {
        let (saved, errors) = self.state.load_all();
        for e in errors {
            tracing::warn!("{e}");
        }
        let mut known = BTreeSet::new();
        for rec in saved {
            let spec = Arc::new(rec.spec.clone());
            self.lock_source().seed(&rec.name, Arc::clone(&spec));
            // It was started from an image a check found: that stays desired while the file
            // names the same tag.
            if let (Some(_), Some(tag)) = (spec.update.check, registry_tag(&spec.image)) {
                if spec.image.contains('@') {
                    let pinned = spec.image.clone();
                    self.pins.insert(rec.name.clone(), Pin { tag, pinned });
                }
            }
            let mut r = Record::new(spec);
            r.obs.manual_stop = rec.manual_stop;
            r.obs.restarts = rec.restarts;
            if let (None, Some((status, oom_killed))) = (&rec.instance, rec.last_exit) {
                r.obs.phase = Phase::Exited {
                    status,
                    oom_killed,
                    at: now(),
                };
            }
            if let Some(inst) = rec.instance {
                known.insert(inst.id.clone());
                if self.ctx.effects.is_alive(&inst) {
                    let ran = SystemTime::now()
                        .duration_since(inst.started_at)
                        .unwrap_or_default();
                    r.obs.phase = Phase::Running {
                        pid: inst.init_pid,
                        since: now().checked_sub(ran).unwrap_or_else(Instant::now),
                    };
                    tracing::info!(name = %rec.name, id = %inst.id, pid = inst.init_pid, "adopted");
                    r.track(&rec.name, &inst, &self.ctx);
                } else {
                    r.obs.phase = Phase::Exiting { at: now() };
                }
                r.instance = Some(inst);
            }
            self.records.insert(rec.name, r);
        }
        self.ctx.effects.sweep(&known);
    }

    /// Gives up the bridge addresses of names that neither a record nor a spec file claims: a
    /// crash between a start and its record leaves such a lease, and the container's file may
    /// be gone by the next start.
    fn release_unclaimed_addresses(&self) {
        for (name, ip) in self.ctx.effects.bridge_hosts() {
            if !self.records.contains_key(&name) && !self.snapshot.desired.contains_key(&name) {
                tracing::info!(%name, %ip, "releasing an address no container claims");
                self.ctx.effects.release_address(&name);
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
        let Some(r) = self.records.get(name) else {
            return;
        };
        let rec = ContainerRecord {
            name: name.to_string(),
            spec: (*r.obs.spec).clone(),
            instance: r.instance.clone(),
            restarts: r.obs.restarts,
            manual_stop: r.obs.manual_stop,
            last_exit: match &r.obs.phase {
                Phase::Exited {
                    status, oom_killed, ..
                } => Some((*status, *oom_killed)),
                _ => None,
            },
        };
        self.writer.send(Write::Record(Box::new(rec)));
    }

    /// Keeps every running bridge container's /etc/hosts listing the bridge's containers.
    fn refresh_bridge_hosts(&self) {
        let targets: Vec<(i32, String)> = self
            .records
            .values()
            .filter(|r| r.obs.spec.network.mode == NetworkMode::Bridge)
            .filter_map(|r| match r.obs.phase {
                Phase::Running { pid, .. } => Some((pid, r.obs.spec.hostname.clone())),
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let fx = Arc::clone(&self.ctx.effects);
        tokio::task::spawn_blocking(move || fx.refresh_hosts(&targets));
    }

    fn on_control(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let resp = match req {
            Request::Ps => self.board.ps(&self.bridge_addresses()),
            Request::Inspect { name } => {
                if !self.records.contains_key(&name) && !self.snapshot.desired.contains_key(&name) {
                    Response::Error(format!("no container {name:?}"))
                } else {
                    let mut v = serde_json::json!({
                        "status": status::status_of(self, &name, &self.bridge_addresses()),
                        "instance": self.records.get(&name).and_then(|r| r.instance.clone()),
                        "spec": self.spec_of(&name).as_deref(),
                    });
                    if let (Some(o), serde_json::Value::Object(more)) =
                        (v.as_object_mut(), self.ctx.effects.locations(&name))
                    {
                        o.extend(more);
                    }
                    Response::ok(v)
                }
            }
            Request::Stats => {
                let running = self.running();
                let usage = self.read_usage(&running, Some(STATS_WINDOW));
                tokio::spawn(async move {
                    let (before, after, elapsed) = usage.await;
                    let rows: Vec<_> = running
                        .iter()
                        .zip(before.iter().zip(&after))
                        .filter_map(|((name, _, _), (b, a))| {
                            let a = a.as_ref()?;
                            Some(metrics::stats_row(
                                name,
                                b.as_ref().unwrap_or(a),
                                a,
                                elapsed,
                            ))
                        })
                        .collect();
                    let _ = reply.send(Response::ok(rows));
                });
                return;
            }
            Request::Metrics => {
                let running = self.running();
                let usage = self.read_usage(&running, None);
                let mut samples = self.samples();
                let counters = Arc::clone(&self.ctx.counters);
                tokio::spawn(async move {
                    let (_, now, _) = usage.await;
                    let by_name: BTreeMap<&str, Usage> = running
                        .iter()
                        .zip(now)
                        .filter_map(|((name, _, _), u)| Some((name.as_str(), u?)))
                        .collect();
                    for s in &mut samples {
                        s.usage = by_name.get(s.name.as_str()).copied();
                    }
                    let text = metrics::render(&counters, &samples);
                    let _ = reply.send(Response::ok(text));
                });
                return;
            }
            Request::Stop { name } => self.request(&name, "stopping", |o| {
                o.manual_stop = true;
                o.restart_requested = false;
                o.restart_at = None;
            }),
            Request::Restart { name } => self.request(&name, "restarting", |o| {
                o.manual_stop = false;
                o.restart_requested = true;
                o.restart_at = None;
            }),
            Request::Start { name } => self.request(&name, "starting", |o| {
                o.manual_stop = false;
                if matches!(o.phase, Phase::Exited { .. } | Phase::StartFailed { .. }) && !o.busy {
                    o.phase = Phase::Stopped;
                    o.restart_at = None;
                }
            }),
            Request::Power { action } => {
                self.shut_down(Some(action));
                Response::ok(format!(
                    "stopping every container, then {}",
                    action.as_str()
                ))
            }
            // Served by the socket as a stream (`Event::Subscribe`).
            Request::Events => Response::Error("events are a stream: use `berth events`".into()),
            Request::Plan => {
                let actions = plan(&self.desired, &self.observed(), now(), 0.0);
                let lines: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
                Response::ok(
                    serde_json::json!({ "actions": lines, "spec_errors": self.snapshot.errors }),
                )
            }
        };
        let _ = reply.send(resp);
    }

    /// A manual request: changes what the planner sees of `name`; the next pass acts on it.
    fn request(&mut self, name: &str, answer: &str, f: impl FnOnce(&mut Observed)) -> Response {
        let Some(r) = self.records.get_mut(name) else {
            return Response::Error(format!("no container {name:?}"));
        };
        f(&mut r.obs);
        r.left = false;
        self.save(name);
        Response::ok(answer)
    }

    pub(super) fn spec_of(&self, name: &str) -> Option<Arc<ValidatedSpec>> {
        self.records
            .get(name)
            .map(|r| Arc::clone(&r.obs.spec))
            .or_else(|| self.desired_spec(name))
    }

    /// The bridge addresses by container name, read only when some container is in bridge mode.
    fn bridge_addresses(&self) -> BTreeMap<String, std::net::Ipv4Addr> {
        if !self
            .records
            .values()
            .any(|r| r.obs.spec.network.mode == NetworkMode::Bridge)
        {
            return BTreeMap::new();
        }
        self.ctx.effects.bridge_hosts().into_iter().collect()
    }
}

/// The loop's clock: tokio's, so that tests in paused time move it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
