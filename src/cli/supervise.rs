//! `berth supervise`: the daemon, with settings from the config file and the command line.
//! As the machine's init it never returns: a config it cannot read costs the defaults, a
//! daemon that cannot run leaves the machine up, and the end is a power-off, reboot or halt.

use std::path::Path;
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::init;

pub fn supervise(cli: &Cli, config: Option<&Path>, specs: Option<&Path>) -> ExitCode {
    let pid1 = init::is_machine_init();
    let mut cfg = match cli.settings(config) {
        Ok(c) => c,
        Err(e) if pid1 => {
            eprintln!("berth: {e}; running with the default settings");
            cli.settings(None).unwrap_or_default()
        }
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(EXIT_BERTH_ERROR);
        }
    };
    if let Some(s) = specs {
        cfg.specs = s.to_path_buf();
    }
    let shutdown = cfg.init.shutdown;
    match crate::supervisor::run(cfg) {
        Ok(power) if pid1 => init::finish(power.unwrap_or(shutdown)),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if pid1 => {
            eprintln!("berth: {e}; no containers will run, the machine stays up");
            init::idle(shutdown)
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}
