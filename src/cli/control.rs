//! Commands that ask the daemon (`ps`, `inspect`, `stats`, `stop`, `start`, `restart`,
//! `plan`) and `logs`, which reads the log files directly so it never slows the daemon.

use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
pub use crate::supervisor::control::Request;
use crate::supervisor::control::{call, ContainerStats, ContainerStatus};

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {e}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

fn ask(cli: &Cli, req: &Request) -> Result<serde_json::Value, ExitCode> {
    call(&cli.socket(), req).map_err(fail)
}

fn print_json(v: &serde_json::Value) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    ExitCode::SUCCESS
}

/// `berth events`: the daemon's status changes as JSON lines, until it stops.
pub fn events(cli: &Cli) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match crate::supervisor::control::stream(&cli.socket(), &Request::Events, |line| {
        writeln!(out, "{line}")?;
        out.flush()
    }) {
        Ok(()) => ExitCode::SUCCESS,
        // Our reader went away (`berth events | head`).
        Err(crate::supervisor::control::ControlError::Io(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// How `ps` prints and which rows.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PsArgs {
    #[arg(long)]
    pub json: bool,
    /// Names only, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// A template per row, e.g. '{{.Name}}\t{{.State}}' (keys of `ps --json`).
    #[arg(long)]
    pub format: Option<String>,
    /// Only rows with name=SUBSTRING, state=S, health=H or image=SUBSTRING (repeatable, all
    /// must hold).
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
}

/// Whether a `ps` row passes every `KEY=VALUE` filter.
fn passes(row: &serde_json::Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, want)| {
        let got = row[k.as_str()].as_str().unwrap_or("");
        match k.as_str() {
            "name" | "image" => got.contains(want.as_str()),
            _ => got == want,
        }
    })
}

fn parse_filters(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    raw.iter()
        .map(|f| match f.split_once('=') {
            Some((k @ ("name" | "state" | "health" | "image"), v)) => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(format!(
                "--filter {f:?}: expected name=, state=, health= or image="
            )),
        })
        .collect()
}

pub fn ps(cli: &Cli, args: &PsArgs) -> ExitCode {
    let filters = match parse_filters(&args.filters) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let template = match args.format.as_deref().map(super::format::Template::parse) {
        Some(Err(e)) => return fail(e),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let v = match ask(cli, &Request::Ps) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let all = v.as_array().cloned().unwrap_or_default();
    let kept: Vec<serde_json::Value> = all.into_iter().filter(|r| passes(r, &filters)).collect();
    if args.json {
        return print_json(&serde_json::Value::Array(kept));
    }
    if args.quiet || template.is_some() {
        for r in &kept {
            match &template {
                Some(t) => println!("{}", t.render(r)),
                None => println!("{}", r["name"].as_str().unwrap_or_default()),
            }
        }
        return ExitCode::SUCCESS;
    }
    let rows: Vec<ContainerStatus> =
        serde_json::from_value(serde_json::Value::Array(kept)).unwrap_or_default();
    println!(
        "{:<20} {:<11} {:<9} {:>8} {:>8}  {:<32} {:<15} {:<20} NOTE",
        "NAME", "STATE", "HEALTH", "PID", "RESTARTS", "IMAGE", "IP", "PORTS"
    );
    for r in rows {
        let pid = r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let ip = r.ip.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let ports = if r.ports.is_empty() {
            "-".to_string()
        } else {
            r.ports.join(",")
        };
        let note = r.note.or(r.last_exit).unwrap_or_default();
        let health = r.health.as_deref().unwrap_or("-");
        println!(
            "{:<20} {:<11} {health:<9} {:>8} {:>8}  {:<32} {ip:<15} {ports:<20} {note}",
            r.name, r.state, pid, r.restarts, r.image
        );
        if let Some(e) = r.spec_error {
            for line in e.lines() {
                println!("  ! {line}");
            }
        }
    }
    ExitCode::SUCCESS
}

pub fn inspect(cli: &Cli, name: &str, format: Option<&str>) -> ExitCode {
    let template = match format.map(super::format::Template::parse) {
        Some(Err(e)) => return fail(e),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    match ask(
        cli,
        &Request::Inspect {
            name: name.to_string(),
        },
    ) {
        Ok(v) => match template {
            Some(t) => {
                println!("{}", t.render(&v));
                ExitCode::SUCCESS
            }
            None => print_json(&v),
        },
        Err(c) => c,
    }
}

/// `berth stats`: on a terminal it redraws every second, as docker's does, until interrupted;
/// with `--no-stream`, `--json` or output that is not a terminal it prints once.
pub fn stats(cli: &Cli, json: bool, no_stream: bool) -> ExitCode {
    use std::io::IsTerminal;
    if json || no_stream || !std::io::stdout().is_terminal() {
        return stats_once(cli, json);
    }
    loop {
        // Clear the screen and go home, then the table.
        print!("\x1b[2J\x1b[H");
        let code = stats_once(cli, false);
        if code != ExitCode::SUCCESS {
            return code;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn stats_once(cli: &Cli, json: bool) -> ExitCode {
    let v = match ask(cli, &Request::Stats) {
        Ok(v) => v,
        Err(c) => return c,
    };
    if json {
        return print_json(&v);
    }
    let rows: Vec<ContainerStats> = serde_json::from_value(v).unwrap_or_default();
    println!(
        "{:<20} {:>7} {:>12} {:>12} {:>6} {:>23}",
        "NAME", "CPU %", "MEM", "LIMIT", "PIDS", "NET I/O"
    );
    let mib = |b: u64| format!("{:.1}MiB", b as f64 / (1 << 20) as f64);
    for r in rows {
        let limit = r.memory_limit.map(mib).unwrap_or_else(|| "-".into());
        let net = match (r.net_rx_bytes, r.net_tx_bytes) {
            (Some(rx), Some(tx)) => format!("{} / {}", mib(rx), mib(tx)),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:>7.1} {:>12} {:>12} {:>6} {net:>23}",
            r.name,
            r.cpu_percent,
            mib(r.memory_bytes),
            limit,
            r.pids
        );
    }
    ExitCode::SUCCESS
}

pub fn simple(cli: &Cli, req: Request) -> ExitCode {
    match ask(cli, &req) {
        Ok(v) => {
            if let Some(s) = v.as_str() {
                println!("{s}");
            }
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

pub fn plan(cli: &Cli, json: bool) -> ExitCode {
    let v = match ask(cli, &Request::Plan) {
        Ok(v) => v,
        Err(c) => return c,
    };
    if json {
        return print_json(&v);
    }
    let actions = v["actions"].as_array().cloned().unwrap_or_default();
    if actions.is_empty() {
        println!("nothing to do");
    }
    for a in actions {
        println!("{}", a.as_str().unwrap_or_default());
    }
    if let Some(errors) = v["spec_errors"].as_object() {
        for e in errors.values() {
            println!("! {}", e.as_str().unwrap_or_default());
        }
    }
    ExitCode::SUCCESS
}

/// `--since`/`--until`: an RFC 3339 time (`2026-12-02T10:00:00Z`), seconds since the epoch,
/// or a duration back from now (`10m`, `1h 30m`).
pub fn log_time(s: &str) -> Result<std::time::SystemTime, String> {
    let now = std::time::SystemTime::now();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => now
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} reaches before the epoch")),
        Err(_) => Err(format!(
            "{s:?}: expected an RFC 3339 time, seconds since the epoch or a duration such as 10m"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn logs(
    cli: &Cli,
    name: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    since: Option<std::time::SystemTime>,
    until: Option<std::time::SystemTime>,
) -> ExitCode {
    if crate::spec::units::check_name(name).is_err() {
        return fail(format!("invalid container name {name:?}"));
    }
    let dir = cli.root().join("logs").join(name);
    if !dir.is_dir() && !follow {
        return fail(format!("no logs for {name:?} under {}", dir.display()));
    }
    let opts = crate::logs::PrintOptions {
        follow,
        tail,
        timestamps,
        since,
        until,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    match crate::logs::print(&dir, opts, &mut out, &mut err, &|| false) {
        Ok(()) => ExitCode::SUCCESS,
        Err(crate::logs::LogError::Output { .. }) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
