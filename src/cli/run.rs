//! `berth run SPEC.toml`: one container in the foreground, like `docker run --rm`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::runtime::container::{Mode, Runtime};
use crate::runtime::launch::{self, Stdin};
use crate::spec::{self, ValidationContext};

/// After this many SIGINT/SIGTERMs, the container is killed (as `docker run` does).
const FORCE_AFTER: u32 = 3;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

pub fn run(
    cli: &Cli,
    config: Option<&Path>,
    spec_path: &Path,
    interactive: bool,
    keep: bool,
) -> ExitCode {
    let cfg = match cli.settings(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let stdin = if interactive {
        Stdin::Inherit
    } else {
        Stdin::Null
    };
    // The helper is started here, from the main thread, whose exit is the only one that may
    // end it (its parent-death signal follows the thread that spawned it). Its start-up (the
    // exec and load of our binary) runs in its own process while the container is prepared.
    let helper = launch::start_helper(&cfg.root, stdin);
    let ctx = ValidationContext {
        subnet: cfg.network.subnet,
    };
    let spec = match spec::load_file(spec_path, &ctx) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let rt = match Runtime::open(&cfg.root, &cfg.cgroup_parent) {
        Ok(rt) => rt
            .with_network(cfg.network)
            .with_device_control(cfg.device_control)
            .with_unpack_limits(cfg.unpack_limits),
        Err(e) => return fail(e),
    };
    rt.sweep_dead_runs();
    let prepared = match rt.prepare(&spec, &Mode::Foreground) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // Signals are forwarded to the container's init once it runs; until then they are held.
    let target = Arc::new(AtomicI32::new(0));
    let pending = Arc::new(AtomicI32::new(0));
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) {
        Ok(s) => s,
        Err(e) => {
            let _ = rt.teardown(prepared, keep);
            return fail(format!("installing signal handlers: {e}"));
        }
    };
    let handle = signals.handle();
    {
        let target = Arc::clone(&target);
        let pending = Arc::clone(&pending);
        std::thread::spawn(move || {
            let mut stops = 0;
            for sig in signals.forever() {
                if sig == SIGINT || sig == SIGTERM {
                    stops += 1;
                }
                let sig = if stops >= FORCE_AFTER {
                    libc::SIGKILL
                } else {
                    sig
                };
                let pid = target.load(Ordering::SeqCst);
                if pid > 0 {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = kill(Pid::from_raw(pid), s);
                    }
                } else {
                    pending.store(sig, Ordering::SeqCst);
                }
            }
        });
    }
    let result = match helper {
        Ok(helper) => rt.start(&prepared, helper).map_err(|e| e.to_string()),
        Err(e) => Err(format!("container {}: {e}", spec.name)),
    };
    let code = match result {
        Ok(running) => {
            target.store(running.pid.as_raw(), Ordering::SeqCst);
            let held = pending.swap(0, Ordering::SeqCst);
            if held > 0 {
                if let Ok(s) = Signal::try_from(held) {
                    let _ = kill(running.pid, s);
                }
            }
            match running.wait() {
                Ok(status) => {
                    target.store(0, Ordering::SeqCst);
                    Ok(status.as_code())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    handle.close();
    let torn = rt.teardown(prepared, keep);
    match (code, torn) {
        (Ok(code), Ok(())) => ExitCode::from(code.clamp(0, 255) as u8),
        (Ok(code), Err(e)) => {
            eprintln!("berth: cleaning up: {e}");
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        (Err(e), torn) => {
            if let Err(t) = torn {
                eprintln!("berth: cleaning up: {t}");
            }
            fail(e)
        }
    }
}
