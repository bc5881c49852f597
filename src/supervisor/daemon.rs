//! The daemon's wiring: the lock on the state root, the runtime, the spec dir watcher, the
//! control socket and the signals, all feeding the decision loop (`engine`), which runs until
//! the shutdown has stopped every container.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use super::config::Config;
use super::control::{Request, Response};
use super::effects::RuntimeEffects;
use super::engine::{Engine, Event};
use super::notify;
use crate::runtime::container::{Runtime, RuntimeError};
use crate::runtime::launch;
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
    #[error("starting the event loop: {0}")]
    Tokio(std::io::Error),
}

use ::notify as notify_crate;

/// Runs the supervisor until SIGTERM/SIGINT; then stops every container and returns.
pub fn run(config: Config) -> Result<(), DaemonError> {
    if std::process::id() == 1 {
        super::pid1::prepare();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(DaemonError::Tokio)?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), DaemonError> {
    // Held for the daemon's life; the kernel drops it when the process dies.
    let _lock = state::lock_root(&config.root)?;
    let runtime = Arc::new(
        Runtime::open(&config.root, &config.cgroup_parent)?
            .with_network(config.network.clone())
            .with_device_control(config.device_control),
    );
    let exe =
        Arc::new(
            crate::sys::process::sealed_self_exe().map_err(|e| RuntimeError::Launch {
                name: "supervisor".into(),
                source: launch::LaunchError::SealedExe(e),
            })?,
        );
    let effects = Arc::new(RuntimeEffects {
        rt: runtime,
        exe,
        logs: config.logs,
    });
    let ctx = ValidationContext {
        subnet: config.network.subnet,
    };
    let (engine, tx, rx) = Engine::new(
        effects,
        StateDir::open(&config.root)?,
        SpecSource::new(&config.specs, ctx),
    );
    let hint = Arc::new(tokio::sync::Notify::new());
    let _watcher = watch_specs(&config.specs, Arc::clone(&hint));
    let listener = bind_socket(&config.socket)?;
    tokio::spawn(accept_loop(listener, tx.clone()));
    spawn_signal_handlers(tx);

    engine
        .run(rx, hint, || {
            notify::notify("READY=1");
            if let Some(every) = notify::watchdog_interval() {
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        notify::notify("WATCHDOG=1");
                    }
                });
            }
        })
        .await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
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
