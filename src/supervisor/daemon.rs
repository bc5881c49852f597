//! The daemon's wiring: the lock on the state root, the runtime, the spec dir watcher, the
//! control socket and the signals, all feeding the decision loop (`engine`), which runs until
//! the shutdown has stopped every container.

use std::path::PathBuf;
use std::sync::Arc;

use super::config::Config;
use super::effects::RuntimeEffects;
use super::engine::Engine;
use super::notify;
use super::signals::spawn_signal_handlers;
use super::socket::{bind_socket, spawn_control_thread, PsSource};
use super::watch::watch_specs;
use crate::init::Power;
use crate::runtime::container::{Runtime, RuntimeError};
use crate::runtime::launch;
use crate::runtime::zygote::Zygote;
use crate::source::SpecSource;
use crate::spec::ValidationContext;
use crate::state::{self, StateDir};

/// Threads for short blocking work (cgroup and netlink calls, launching, teardown) and the
/// image pulls, which never hold more than `engine::PULLS_AT_ONCE` of them.
const BLOCKING_THREADS: usize = 8;

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
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the event loop: {0}")]
    Tokio(std::io::Error),
}

/// Runs the supervisor until SIGTERM/SIGINT; then stops every container and returns.
/// Returns the power state asked for with the shutdown (a signal or `berth poweroff`...).
pub fn run(config: Config) -> Result<Option<Power>, DaemonError> {
    if crate::init::is_machine_init() {
        crate::init::prepare(&config.init);
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(DaemonError::Tokio)?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<Option<Power>, DaemonError> {
    // Held for the daemon's life; the kernel drops it when the process dies.
    let _lock = state::lock_root(&config.root)?;
    let runtime = Arc::new(
        Runtime::open(&config.root, &config.cgroup_parent)?
            .with_network(config.network.clone())
            .with_device_control(config.device_control)
            .with_unpack_limits(config.unpack_limits),
    );
    let exe = Arc::new(
        launch::sealed_exe(&config.root).map_err(|e| RuntimeError::Launch {
            name: "supervisor".into(),
            source: launch::LaunchError::SealedExe(e),
        })?,
    );
    let effects = Arc::new(RuntimeEffects {
        rt: runtime,
        zygote: Zygote::start(Arc::clone(&exe)),
        exe,
        logs: config.logs,
    });
    let ctx = ValidationContext {
        subnet: config.network.subnet,
    };
    let status_dir = config.status_dir();
    let status = match super::status::StatusFiles::open(&status_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("status dir {}: {e}; no status files", status_dir.display());
            None
        }
    };
    let (engine, tx, rx) = Engine::new(
        effects.clone(),
        StateDir::open(&config.root)?,
        SpecSource::new(&config.specs, ctx),
        status,
    );
    let hint = Arc::new(tokio::sync::Notify::new());
    let _watcher = watch_specs(&config.specs, Arc::clone(&hint));
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            super::metrics::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let listener = bind_socket(&config.socket)?;
    let ps = PsSource {
        board: engine.board(),
        effects: effects.clone(),
    };
    spawn_control_thread(listener, tx.clone(), ps).map_err(|source| DaemonError::Socket {
        path: config.socket.clone(),
        source,
    })?;
    if let Some(metrics) = metrics {
        if let Ok(addr) = metrics.local_addr() {
            tracing::info!("serving metrics at http://{addr}/metrics");
        }
        tokio::spawn(super::metrics::serve(metrics, tx.clone()));
    }
    spawn_signal_handlers(tx, config.init.shutdown);

    let power = engine
        .run(
            rx,
            hint,
            || notify::notify("READY=1"),
            notify::watchdog_interval(),
        )
        .await;
    let _ = std::fs::remove_file(&config.socket);
    // Every container is stopped: what they shared goes too.
    if let Err(e) = effects.rt.release_shared() {
        tracing::warn!("removing the bridge and the cgroup parent: {e}");
    }
    Ok(power)
}

/// The soft fd limit up to the hard one: every container costs the daemon a few fds (pidfds,
/// its log pipes' watchers) and every control connection one. Containers get their own limit
/// from the plan.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the fd limit from {soft} to {hard}: {e}");
            }
        }
    }
}
