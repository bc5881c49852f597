//! One long-lived task per container that carries out its jobs one at a time and reports each
//! outcome to the decision loop. It decides nothing: the loop sends a job only for an action
//! the planner returned. Waits (for an exit, a stop timeout) are async; only short kernel work
//! and image pulls go to the blocking pool, pulls behind their own bounded semaphore, so no
//! container waits behind another's stop or pull.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use super::effects::{Effects, Ending, KILL_GRACE};
use super::engine::now;
use super::metrics::Counters;
use crate::reconcile::plan::Bandwidth;
use crate::spec::{BuildSpec, NetworkMode, ValidatedSpec};
use crate::state::Instance;

/// What a worker is asked to do.
#[derive(Debug)]
pub enum Job {
    Start {
        spec: Arc<ValidatedSpec>,
    },
    /// Fetch the new image, stop the old instance, start the new one; if that fails, start
    /// the old spec again.
    Recreate {
        old: Instance,
        old_spec: Arc<ValidatedSpec>,
        spec: Arc<ValidatedSpec>,
    },
    /// The stop signal, SIGKILL after the stop timeout; with `kill`, SIGKILL at once.
    Stop {
        inst: Instance,
        spec: Arc<ValidatedSpec>,
        kill: bool,
    },
    /// Stop (if it runs) and clean up for good: the container's file is gone.
    Remove {
        inst: Option<Instance>,
        spec: Arc<ValidatedSpec>,
    },
    Cleanup {
        inst: Instance,
    },
    /// Stop what runs of the failed version (if anything), start `previous` again.
    Rollback {
        inst: Option<Instance>,
        spec: Arc<ValidatedSpec>,
        previous: Arc<ValidatedSpec>,
    },
    Update {
        inst: Instance,
        spec: Arc<ValidatedSpec>,
        bandwidth: Option<Bandwidth>,
    },
}

/// What came of a job.
#[derive(Debug)]
pub enum Outcome {
    Started {
        instance: Instance,
        spec: Arc<ValidatedSpec>,
    },
    StartFailed {
        error: String,
        spec: Arc<ValidatedSpec>,
    },
    /// A Recreate to `failed` did not happen; `running` runs (the old instance untouched, or
    /// started again from `spec`).
    UpdateFailed {
        error: String,
        failed: Arc<ValidatedSpec>,
        running: Instance,
        spec: Arc<ValidatedSpec>,
    },
    /// A failed version is gone and `previous` started again (or not: the error).
    RolledBack {
        result: Result<Instance, String>,
        previous: Arc<ValidatedSpec>,
        failed: Arc<ValidatedSpec>,
    },
    /// The instance is gone (stopped, or ended on its own) and cleaned up.
    Ended {
        ending: Ending,
        at: Instant,
    },
    Removed,
    Updated {
        spec: Arc<ValidatedSpec>,
        error: Option<String>,
    },
}

/// What a worker reports to the loop.
pub trait Report: Send + Sync + 'static {
    fn done(&self, name: &str, outcome: Outcome);
    fn exited(&self, name: &str, id: &str);
    /// A health probe of instance `id` succeeded or not, saying `output`.
    fn probed(&self, name: &str, id: &str, ok: bool, output: String);
    /// While instance `id` ran, its image's tag was found to name `result` (pinned by digest).
    fn checked(&self, name: &str, id: &str, result: Result<String, String>);
}

/// The loop's handle on one container's worker; dropping it ends the worker once its current
/// job is done.
pub struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Shared by every worker.
#[derive(Clone)]
pub struct Context {
    pub effects: Arc<dyn Effects>,
    pub pulls: Arc<Semaphore>,
    pub report: Arc<dyn Report>,
    pub counters: Arc<Counters>,
}

impl Worker {
    pub fn spawn(name: String, ctx: Context) -> Worker {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let outcome = run(&name, &ctx, job).await;
                ctx.report.done(&name, outcome);
            }
        });
        Worker { jobs }
    }

    pub fn send(&self, job: Job) {
        // The receiver lives as long as this handle.
        let _ = self.jobs.send(job);
    }
}

/// Reports the exit of `inst` to the loop when its monitor goes away.
pub fn watch_exit(name: &str, inst: &Instance, ctx: &Context) {
    let wait = ctx.effects.exited(inst);
    let (name, id, report) = (name.to_string(), inst.id.clone(), Arc::clone(&ctx.report));
    tokio::spawn(async move {
        wait.await;
        report.exited(&name, &id);
    });
}

/// Probes `inst` every `interval` (after the previous probe ended) until it exits; `None`
/// when its spec has no probe. Abort the returned handle when the probe changes.
pub fn watch_health(
    name: &str,
    inst: &Instance,
    spec: &Arc<ValidatedSpec>,
    ctx: &Context,
) -> Option<tokio::task::AbortHandle> {
    let health = spec.health.clone()?;
    let exited = ctx.effects.exited(inst);
    let (name, inst, spec, ctx) = (
        name.to_string(),
        inst.clone(),
        Arc::clone(spec),
        ctx.clone(),
    );
    let task = tokio::spawn(async move {
        tokio::pin!(exited);
        loop {
            tokio::select! {
                _ = &mut exited => return,
                _ = tokio::time::sleep(health.interval) => {}
            }
            let probe = ctx.effects.probe(&inst, &spec);
            let t0 = std::time::Instant::now();
            let (ok, output) = match tokio::time::timeout(health.timeout, probe).await {
                Ok(result) => result,
                Err(_) => (false, format!("no answer within {:?}", health.timeout)),
            };
            ctx.counters.probe_seconds.observe(t0.elapsed());
            if !ok {
                ctx.counters.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
            ctx.report.probed(&name, &inst.id, ok, output);
        }
    });
    Some(task.abort_handle())
}

/// Asks the registry every `every` what `image` (a tag) names now, fetching what it names,
/// until `inst` exits. Abort the returned handle when the spec changes.
pub fn watch_image(
    name: &str,
    inst: &Instance,
    image: String,
    build: Option<BuildSpec>,
    every: Duration,
    ctx: &Context,
) -> tokio::task::AbortHandle {
    let exited = ctx.effects.exited(inst);
    let (name, id, ctx) = (name.to_string(), inst.id.clone(), ctx.clone());
    let task = tokio::spawn(async move {
        tokio::pin!(exited);
        loop {
            tokio::select! {
                _ = &mut exited => return,
                _ = tokio::time::sleep(every) => {}
            }
            let result = async {
                let _permit = ctx.pulls.acquire().await.map_err(|e| e.to_string())?;
                let image = image.clone();
                let build = build.clone();
                blocking(&ctx, move |fx| fx.fetch_current(&image, build.as_ref())).await?
            }
            .await;
            let counter = match result {
                Ok(_) => &ctx.counters.checks_ok,
                Err(_) => &ctx.counters.checks_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            ctx.report.checked(&name, &id, result);
        }
    });
    task.abort_handle()
}

/// How much lower the CPU priority of the workers' blocking work is than the daemon's.
const WORK_NICE: i32 = 10;

/// Runs a lifecycle step on the blocking pool at a lower CPU priority, so that a burst of
/// starts, pulls and cleanups leaves the CPU to the loop and the control socket.
async fn blocking<T: Send + 'static>(
    ctx: &Context,
    f: impl FnOnce(&dyn Effects) -> T + Send + 'static,
) -> Result<T, String> {
    let effects = Arc::clone(&ctx.effects);
    tokio::task::spawn_blocking(move || {
        let _lowered = crate::sys::process::Lowered::by(WORK_NICE);
        f(effects.as_ref())
    })
    .await
    .map_err(|e| format!("blocking task failed: {e}"))
}

async fn pull(ctx: &Context, spec: &Arc<ValidatedSpec>) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let result = async {
        let _permit = ctx.pulls.acquire().await.map_err(|e| e.to_string())?;
        let spec = Arc::clone(spec);
        blocking(ctx, move |fx| fx.pull(&spec)).await?
    }
    .await;
    ctx.counters.pull_seconds.observe(t0.elapsed());
    let counter = match result {
        Ok(()) => &ctx.counters.pulls_ok,
        Err(_) => &ctx.counters.pulls_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    result
}

async fn start(ctx: &Context, spec: &Arc<ValidatedSpec>) -> Result<Instance, String> {
    pull(ctx, spec).await?;
    let spec = Arc::clone(spec);
    blocking(ctx, move |fx| fx.start(&spec)).await?
}

/// The stop signal, then SIGKILL to the whole cgroup after the stop timeout (at once with
/// `kill`); then cleanup.
async fn stop(
    ctx: &Context,
    inst: &Instance,
    spec: &ValidatedSpec,
    release: bool,
    kill: bool,
) -> Ending {
    let ended = !kill && {
        ctx.effects.signal(inst, spec.stop_signal);
        tokio::time::timeout(spec.stop_timeout, ctx.effects.exited(inst))
            .await
            .is_ok()
    };
    if !ended {
        let i = inst.clone();
        let _ = blocking(ctx, move |fx| fx.kill_all(&i)).await;
        if tokio::time::timeout(KILL_GRACE, ctx.effects.exited(inst))
            .await
            .is_err()
        {
            tracing::warn!(id = %inst.id, "still running {KILL_GRACE:?} after SIGKILL");
        }
    }
    cleanup(ctx, inst, release).await
}

async fn cleanup(ctx: &Context, inst: &Instance, release: bool) -> Ending {
    let i = inst.clone();
    blocking(ctx, move |fx| fx.cleanup(&i, release))
        .await
        .unwrap_or(Ending {
            exit: None,
            ran_for: Duration::ZERO,
        })
}

async fn run(name: &str, ctx: &Context, job: Job) -> Outcome {
    match job {
        Job::Start { spec } => match start(ctx, &spec).await {
            Ok(instance) => Outcome::Started { instance, spec },
            Err(error) => Outcome::StartFailed { error, spec },
        },
        Job::Recreate {
            old,
            old_spec,
            spec,
        } => {
            // The new image first: a failed pull leaves the old instance as it is.
            if let Err(error) = pull(ctx, &spec).await {
                return Outcome::UpdateFailed {
                    error,
                    failed: spec,
                    running: old,
                    spec: old_spec,
                };
            }
            if spec.update.order == crate::spec::UpdateOrder::StartFirst {
                // The new one first; the old one goes only once it runs.
                return match start(ctx, &spec).await {
                    Ok(instance) => {
                        stop(ctx, &old, &old_spec, false, false).await;
                        Outcome::Started { instance, spec }
                    }
                    Err(error) => Outcome::UpdateFailed {
                        error,
                        failed: spec,
                        running: old,
                        spec: old_spec,
                    },
                };
            }
            stop(ctx, &old, &old_spec, false, false).await;
            let s = Arc::clone(&spec);
            let error = match blocking(ctx, move |fx| fx.start(&s)).await {
                Ok(Ok(instance)) => return Outcome::Started { instance, spec },
                Ok(Err(e)) | Err(e) => e,
            };
            tracing::error!(%name, "the new version did not start ({error}); starting the old one again");
            match start(ctx, &old_spec).await {
                Ok(running) => Outcome::UpdateFailed {
                    error,
                    failed: spec,
                    running,
                    spec: old_spec,
                },
                Err(again) => Outcome::StartFailed {
                    error: format!("{error}; the previous version did not start either: {again}"),
                    spec: old_spec,
                },
            }
        }
        Job::Stop { inst, spec, kill } => Outcome::Ended {
            ending: stop(ctx, &inst, &spec, false, kill).await,
            at: now(),
        },
        Job::Rollback {
            inst,
            spec,
            previous,
        } => {
            if let Some(inst) = inst {
                stop(ctx, &inst, &spec, false, false).await;
            }
            Outcome::RolledBack {
                result: start(ctx, &previous).await,
                previous,
                failed: spec,
            }
        }
        Job::Cleanup { inst } => Outcome::Ended {
            ending: cleanup(ctx, &inst, false).await,
            at: now(),
        },
        Job::Remove { inst, spec } => {
            match inst {
                Some(inst) => {
                    stop(ctx, &inst, &spec, true, false).await;
                }
                // Between two instances (a restart pending): only its address is held.
                None if spec.network.mode == NetworkMode::Bridge => {
                    let n = name.to_string();
                    let _ = blocking(ctx, move |fx| fx.release_address(&n)).await;
                }
                None => {}
            }
            Outcome::Removed
        }
        Job::Update {
            inst,
            spec,
            bandwidth,
        } => {
            let s = Arc::clone(&spec);
            let error = blocking(ctx, move |fx| fx.update(&s, &inst, bandwidth))
                .await
                .and_then(|r| r)
                .err();
            Outcome::Updated { spec, error }
        }
    }
}
