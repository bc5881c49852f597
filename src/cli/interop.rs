//! `berth import compose FILE --to DIR` and `berth export kube DIR --to OUT`: the files
//! around the pure conversions of `interop`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::interop::{compose, kube};
use crate::spec::{self, ValidationContext};
use crate::state::{write_atomic, Durability};

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

fn read(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > spec::MAX_SPEC_SIZE {
        return Err(format!("larger than {} bytes", spec::MAX_SPEC_SIZE));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Writes one spec file per service into `to` (never over an existing file unless `force`),
/// prints each key it could not map, then validates the dir as `berth validate` does.
pub fn import_compose(
    cli: &Cli,
    file: &Path,
    to: &Path,
    force: bool,
    config: Option<&Path>,
) -> ExitCode {
    let text = match read(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    let dir = match std::path::absolute(file.parent().unwrap_or(Path::new("."))) {
        Ok(d) => d,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    // As Compose: the environment first, then the `.env` beside the file.
    let dotenv = read(&dir.join(".env"))
        .map(|t| compose::env_file(&t))
        .unwrap_or_default();
    let vars = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            dotenv
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    let inputs = compose::Inputs {
        dir: &dir,
        vars: &vars,
        read: &read,
    };
    let conversion = match compose::convert(&text, &inputs) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", file.display())),
    };
    if let Err(e) = std::fs::create_dir_all(to) {
        return fail(format!("creating {}: {e}", to.display()));
    }
    let paths: Vec<PathBuf> = conversion
        .specs
        .iter()
        .map(|s| to.join(format!("{}.toml", s.name)))
        .collect();
    if !force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            return fail(format!(
                "{} exists (--force replaces it); nothing written",
                p.display()
            ));
        }
    }
    for (s, path) in conversion.specs.iter().zip(&paths) {
        let text = format!("# from {}, service {}\n{}", file.display(), s.name, s.text);
        if let Err(e) = write_atomic(path, text.as_bytes(), Durability::Machine) {
            return fail(e);
        }
        println!("{}", path.display());
    }
    for w in &conversion.warnings {
        eprintln!("berth: warning: {w}");
    }
    super::validate::validate(cli, config, &[to.to_path_buf()], false)
}

/// Writes `OUT/NAME.yaml` (a Deployment or Pod, and a Service for published ports) for every
/// valid spec in `dir`; a spec that does not validate is reported and skipped.
pub fn export_kube(cli: &Cli, dir: &Path, out: &Path, config: Option<&Path>) -> ExitCode {
    let ctx = match cli.settings(config) {
        Ok(c) => ValidationContext {
            subnet: c.network.subnet,
        },
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        return fail(format!("creating {}: {e}", out.display()));
    }
    let mut failed = false;
    for (file, result) in spec::load_paths(&[dir.to_path_buf()], &ctx) {
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                for d in &e.diagnostics {
                    eprintln!("{d}");
                }
                eprintln!("berth: {}: not exported", file.display());
                failed = true;
                continue;
            }
        };
        let export = kube::export(&s);
        let yaml = match export.to_yaml() {
            Ok(y) => y,
            Err(e) => return fail(format!("{}: {e}", file.display())),
        };
        let path = out.join(format!("{}.yaml", export.name));
        if let Err(e) = write_atomic(&path, yaml.as_bytes(), Durability::Machine) {
            return fail(e);
        }
        println!("{}", path.display());
        for u in &export.unmapped {
            eprintln!("berth: {}: {u}", s.name);
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
