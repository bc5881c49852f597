//! `berth logs`: prints a container's log lines, stdout lines to one writer and stderr lines to
//! the other, optionally following new output.

use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime};

use super::follow::Follower;
use super::format;
use super::reader::{history, Assembler, LogLine, Snapshot};
use super::{LogError, Stream};

/// How often a follow checks for new lines (and for `stop`).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `berth logs` asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// `-f`: keep printing new lines until `stop` says so.
    pub follow: bool,
    /// `--tail N`: start with only the last N lines (all when `None`).
    pub tail: Option<usize>,
    /// `--timestamps`: prefix each line with its RFC3339 UTC timestamp and a space.
    pub timestamps: bool,
    /// `--since`: only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// `--until`: only lines written before this time; a follow ends once it has passed.
    pub until: Option<SystemTime>,
}

impl PrintOptions {
    fn keep(&self, mut lines: Vec<LogLine>) -> Vec<LogLine> {
        lines.retain(|l| {
            self.since.map(|s| s <= l.time).unwrap_or(true)
                && self.until.map(|u| l.time < u).unwrap_or(true)
        });
        lines
    }
}

/// Prints the log lines in `dir` (a container's `<root>/logs/<name>/`): stdout lines to `out`,
/// stderr lines to `err`, each followed by a newline unless it is an unfinished last line. A
/// missing directory prints nothing (and, when following, waits for it). When following, checks
/// `stop` every 100 ms and returns once it is true. An error writing to `out`/`err` (a closed
/// pipe, say) is returned as `LogError::Output`.
pub fn print(
    dir: &Path,
    opts: PrintOptions,
    out: &mut impl Write,
    err: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<(), LogError> {
    let snap = Snapshot::take(dir)?;
    let mut asm = Assembler::default();
    let lines = opts.keep(history(&snap, opts.tail, &mut asm)?);
    write_lines(&lines, opts.timestamps, out, err)?;
    if !opts.follow {
        return write_lines(&opts.keep(asm.finish()), opts.timestamps, out, err);
    }
    let mut follower = Follower::resume(dir, snap, asm);
    while !stop() && opts.until.map(|u| SystemTime::now() < u).unwrap_or(true) {
        let lines = opts.keep(follower.poll()?);
        if lines.is_empty() {
            thread::sleep(POLL_INTERVAL);
        } else {
            write_lines(&lines, opts.timestamps, out, err)?;
        }
    }
    Ok(())
}

fn write_lines(
    lines: &[LogLine],
    timestamps: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), LogError> {
    let mut wrote = [false; 2];
    for line in lines {
        let result = match line.stream {
            Stream::Stdout => write_line(out, line, timestamps),
            Stream::Stderr => write_line(err, line, timestamps),
        };
        result.map_err(|source| LogError::Output {
            stream: line.stream,
            source,
        })?;
        wrote[line.stream.index()] = true;
    }
    for stream in Stream::ALL {
        if wrote[stream.index()] {
            let result = match stream {
                Stream::Stdout => out.flush(),
                Stream::Stderr => err.flush(),
            };
            result.map_err(|source| LogError::Output { stream, source })?;
        }
    }
    Ok(())
}

fn write_line(w: &mut impl Write, line: &LogLine, timestamps: bool) -> std::io::Result<()> {
    if timestamps {
        write!(w, "{} ", format::timestamp(line.time))?;
    }
    w.write_all(&line.content)?;
    if !line.partial {
        w.write_all(b"\n")?;
    }
    Ok(())
}
