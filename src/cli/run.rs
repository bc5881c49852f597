//! `berth run SPEC.toml` or `berth run [FLAGS] IMAGE [CMD...]`: one container in the
//! foreground, like `docker run --rm`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use nix::sys::signal::{kill, Signal};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGWINCH};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use super::run_flags::{self, RunFlags};
use super::{Cli, EXIT_BERTH_ERROR};
use crate::runtime::container::{Mode, Runtime};
use crate::runtime::launch::{self, Stdin};
use crate::runtime::terminal::{self, TermSize};
use crate::spec::{self, ValidationContext};

/// After this many SIGINT/SIGTERMs, the container is killed (as `docker run` does).
const FORCE_AFTER: u32 = 3;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

/// The size of our terminal (stdout's, else stdin's), else 24x80.
fn our_size() -> TermSize {
    TermSize::of(std::io::stdout().as_fd())
        .or_else(|| TermSize::of(std::io::stdin().as_fd()))
        .filter(|s| s.rows > 0 && s.cols > 0)
        .unwrap_or(TermSize { rows: 24, cols: 80 })
}

/// What to run: a spec file, or an image with docker's flags.
pub struct Target<'a> {
    pub target: &'a str,
    pub command: &'a [String],
    pub flags: &'a RunFlags,
}

impl Target<'_> {
    fn is_spec_file(&self) -> bool {
        self.target.ends_with(".toml")
    }

    /// The spec text an image and its flags mean, and the container's name.
    fn image_spec(&self) -> Result<(String, String), String> {
        let name = self
            .flags
            .name
            .clone()
            .unwrap_or_else(|| run_flags::default_name(self.target));
        let text = run_flags::spec_text(self.target, self.command, self.flags, &|k| {
            std::env::var(k).ok()
        })?;
        Ok((name, text))
    }

    fn load(&self, ctx: &ValidationContext) -> Result<spec::ValidatedSpec, String> {
        if self.is_spec_file() {
            return spec::load_file(Path::new(self.target), ctx).map_err(|e| e.to_string());
        }
        let (name, text) = self.image_spec()?;
        spec::parse_str(Path::new(&format!("{name}.toml")), &text, ctx)
            .map_err(|e| format!("the flags make this spec:\n{text}\nwhich is not valid:\n{e}"))
    }
}

/// How the container's stdio is wired: `-i` and `-t`.
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    pub interactive: bool,
    pub tty: bool,
}

pub fn run(
    cli: &Cli,
    config: Option<&Path>,
    target: &Target<'_>,
    stdio: Stdio,
    keep: bool,
) -> ExitCode {
    if target.is_spec_file() {
        let mut given = target.flags.given();
        if !target.command.is_empty() {
            given.push("a command");
        }
        if !given.is_empty() {
            return fail(format!(
                "{} is a spec file: {} apply only to `berth run IMAGE`; put them in the spec",
                target.target,
                given.join(", ")
            ));
        }
    } else if target.flags.print_spec {
        return match target.image_spec() {
            Ok((name, text)) => {
                println!("# {name}.toml\n{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let cfg = match cli.settings(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let stdin = if stdio.interactive {
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
    let spec = match target.load(&ctx) {
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
    let mut prepared = match rt.prepare(&spec, &Mode::Foreground) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if stdio.tty {
        prepared.plan.terminal = Some(our_size());
    }
    // Signals are forwarded to the container's init once it runs; until then they wait in
    // the self-pipe, which this thread watches while it waits for the container.
    let mut wanted = vec![SIGINT, SIGTERM, SIGHUP, SIGQUIT];
    if stdio.tty {
        wanted.push(SIGWINCH);
    }
    // `watched`: the pipe's read end once more, for the wait to poll while `signals` drains it.
    let (mut signals, watched) = match UnixStream::pair().and_then(|(read, write)| {
        let watched = read.try_clone()?;
        Ok((
            SignalDelivery::with_pipe(read, write, SignalOnly, &wanted)?,
            watched,
        ))
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = rt.teardown(prepared, keep);
            return fail(format!("installing signal handlers: {e}"));
        }
    };
    let result = match helper {
        Ok(helper) => rt.start(&prepared, helper).map_err(|e| e.to_string()),
        Err(e) => Err(format!("container {}: {e}", spec.name)),
    };
    let mut relay = None;
    // -t: the pty master, resized on SIGWINCH (which then reaches the container's foreground).
    let mut master: Option<OwnedFd> = None;
    let code = match result {
        Ok(mut running) => {
            if let Some(m) = running.terminal.take() {
                master = m.try_clone().ok();
                let raw = stdio.interactive.then(terminal::RawMode::enter);
                let input = stdio.interactive;
                relay = Some((
                    raw,
                    std::thread::spawn(move || terminal::relay(&File::from(m), input, None)),
                ));
            }
            let init = running.pid;
            let mut stops = 0;
            let mut forward = || {
                for sig in signals.pending() {
                    if sig == SIGWINCH {
                        if let Some(m) = &master {
                            let _ = our_size().apply(m.as_fd());
                        }
                        continue;
                    }
                    if sig == SIGINT || sig == SIGTERM {
                        stops += 1;
                    }
                    let sig = if stops >= FORCE_AFTER {
                        libc::SIGKILL
                    } else {
                        sig
                    };
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = kill(init, s);
                    }
                }
            };
            // What arrived during the start.
            forward();
            match running.wait_watching(Some(watched.as_fd()), forward) {
                Ok(status) => Ok(status.as_code()),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    drop(signals);
    // The relay ends when the container's last process closes the terminal; our terminal's
    // mode comes back after its last output.
    if let Some((raw, thread)) = relay {
        let _ = thread.join();
        drop(raw);
    }
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
