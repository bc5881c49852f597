//! `berth supervise`: the daemon, with settings from the config file and the command line.

use std::path::Path;
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::supervisor::config::{Config, ConfigError};

pub fn supervise(cli: &Cli, config: Option<&Path>, specs: Option<&Path>) -> ExitCode {
    let mut cfg = match settings(cli, config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(EXIT_BERTH_ERROR);
        }
    };
    if let Some(s) = specs {
        cfg.specs = s.to_path_buf();
    }
    match crate::supervisor::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}

/// The config file's settings (the defaults without one), overridden by the global flags.
pub(super) fn settings(cli: &Cli, config: Option<&Path>) -> Result<Config, ConfigError> {
    let mut cfg = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // The command line wins over the config file.
    if let Some(r) = &cli.root {
        cfg.root = r.clone();
    }
    if let Some(s) = &cli.socket {
        cfg.socket = s.clone();
    }
    if let Some(c) = &cli.cgroup_parent {
        cfg.cgroup_parent = c.clone();
    }
    Ok(cfg)
}
