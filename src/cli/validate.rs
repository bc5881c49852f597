//! `berth validate PATH...`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::spec::{self, Diagnostic, ValidationContext};

#[derive(Serialize)]
struct FileReport<'a> {
    file: &'a std::path::Path,
    ok: bool,
    errors: &'a [Diagnostic],
}

pub fn validate(cli: &Cli, config: Option<&Path>, paths: &[PathBuf], json: bool) -> ExitCode {
    let ctx = match cli.settings(config) {
        Ok(c) => ValidationContext {
            subnet: c.network.subnet,
        },
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(EXIT_BERTH_ERROR);
        }
    };
    let results = spec::load_paths(paths, &ctx);
    let mut failed = false;
    let mut reports = Vec::new();
    for (file, result) in &results {
        let errors: &[Diagnostic] = match result {
            Ok(_) => &[],
            Err(e) => &e.diagnostics,
        };
        failed |= !errors.is_empty();
        if json {
            reports.push(FileReport {
                file,
                ok: errors.is_empty(),
                errors,
            });
        } else {
            for d in errors {
                eprintln!("{d}");
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    } else if !failed {
        println!("{} spec file(s) valid", results.len());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
