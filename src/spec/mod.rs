//! Container spec files: parsing and validation into a `ValidatedSpec` (pure: no I/O beyond
//! reading spec files and listing a spec directory). Owns the spec format, its defaults and its
//! diagnostics (`file:line:col: message`); must not touch the system otherwise.
//!
//! - `types`: the validated form other modules consume.
//! - `parse`: one file's text to a `ValidatedSpec`, with every problem as a `Diagnostic`.
//! - `units`: sizes, durations, rates, signals, ports, cpusets, hostnames, capability names.
//! - `diagnostic`: `Diagnostic` and `SpecErrors`.
//! - `dir`: which files of a spec directory are specs; expanding `berth validate` paths.

mod diagnostic;
mod dir;
mod parse;
pub mod schema;
mod types;
pub mod units;

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use diagnostic::{line_col, Diagnostic, SpecErrors};
pub use dir::{
    claim_clashes, dependency_errors, is_spec_name, list_spec_dir, load_paths, open_spec_dir,
    spec_files_in, DirListing, Rejected,
};
pub use parse::{
    check_ip_in_subnet, diagnostic_at_key, load_file, load_in_dir, parse_str,
    DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_RESET_AFTER, DEFAULT_STOP_SIGNAL,
    DEFAULT_STOP_TIMEOUT, MAX_SPEC_SIZE, MAX_STOP_TIMEOUT, MIN_MEMORY,
};
pub use types::*;

/// Facts from outside the spec that validation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationContext {
    /// The bridge subnet static `network.ip` addresses must fall in (network address, prefix).
    pub subnet: (Ipv4Addr, u8),
}

impl Default for ValidationContext {
    /// 10.89.0.0/24, the default bridge subnet.
    fn default() -> Self {
        ValidationContext {
            subnet: (Ipv4Addr::new(10, 89, 0, 0), 24),
        }
    }
}

/// Errors of this module that are not diagnostics about a spec's content.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot list spec directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve spec directory {}: {source}", path.display())]
    Canonicalize {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid spec:\n{0}")]
    Invalid(#[from] SpecErrors),
}

#[cfg(test)]
mod tests;
