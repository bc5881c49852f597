//! `berth supervise`: the daemon, with settings from the config file and the command line.

use std::path::Path;
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};

pub fn supervise(cli: &Cli, config: Option<&Path>, specs: Option<&Path>) -> ExitCode {
    let mut cfg = match cli.settings(config) {
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
