//! logs: each container's stdout and stderr as rotated files on disk, and reading them back.
//!
//! Owns the directory `<root>/logs/<name>/`: `current.log` plus the rotated `1.log` (newest) ..
//! `<max_files - 1>.log` (oldest). The container's own monitor is the only writer
//! ([`LogWriter`]); it writes plain files, so a slow or absent reader never blocks the
//! container. Readers ([`read_all`], [`tail`], [`Follower`], [`print`]) only ever read.
//!
//! Records use the Kubernetes CRI log format, one per line:
//! `<RFC3339 UTC timestamp, 9 fraction digits> <stdout|stderr> <P|F> <content>\n`. A line longer
//! than 16 KiB is cut into `P` pieces closed by an `F` piece; output that ends without a newline
//! (the stream reached EOF) is written as a `P` record. Readers join the pieces into one line,
//! placed where its last piece is. A line the previous writer left unfinished (the container
//! exited mid-line, or the monitor died) is closed with an empty `F` record when the next writer
//! opens, so a restarted container's output never joins it.
//!
//! This module never touches processes, pipes or the state dir: the monitor passes it bytes.

mod error;
mod files;
mod follow;
mod format;
mod print;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use error::LogError;
pub use follow::{Follower, PARTIAL_GRACE};
pub use format::{timestamp, Stream, MAX_LINE};
pub use print::{print, PrintOptions};
pub use reader::{read_all, tail, LogLine};
pub use writer::{LogConfig, LogWriter};

/// The file being written in a container's log directory.
pub const CURRENT_FILE: &str = "current.log";
