//! The logs module's error type: each variant names the failed step and carries the path.

use std::io;
use std::path::PathBuf;

use super::Stream;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("creating log directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("listing log directory {path}: {source}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("opening log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("reading log file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing log file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("rotating log file {from} to {to}: {source}")]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("removing old log file {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("checking log file {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("printing container {stream} lines: {source}")]
    Output {
        stream: Stream,
        #[source]
        source: io::Error,
    },
}
