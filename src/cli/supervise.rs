//! `berth supervise`: the daemon, with settings from the config file and the command line.

use std::path::Path;
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::supervisor::config::Config;

pub fn supervise(cli: &Cli, config: Option<&Path>, specs: Option<&Path>) -> ExitCode {
    let mut cfg = match config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(EXIT_BERTH_ERROR);
            }
        },
        None => Config::default(),
    };
    // The command line wins over the config file.
    if let Some(s) = specs {
        cfg.specs = s.to_path_buf();
    }
    if let Some(r) = &cli.root {
        cfg.root = r.clone();
    }
    if let Some(s) = &cli.socket {
        cfg.socket = s.clone();
    }
    if let Some(c) = &cli.cgroup_parent {
        cfg.cgroup_parent = c.clone();
    }
    match crate::supervisor::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}
