//! `berth build`: an image from a Containerfile into the store, as `docker build` makes one.
//! Steps and cache hits go to stderr (with each RUN's own output); the recorded names and the
//! manifest digest go to stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::build::{build as run_build, BuildOptions};
use crate::image::{ImageRef, RegistryRef};
use crate::spec::NetworkMode;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

/// `K=V`, or `K` alone for the value of the variable K in this command's environment.
fn build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), std::env::var(s).unwrap_or_default())),
        _ => Err(format!("--build-arg {s:?}: expected KEY=VALUE")),
    }
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name to record the image as (repeatable), e.g. `localhost/app:1`.
    #[arg(short, long = "tag", required = true)]
    pub tags: Vec<String>,
    /// The Containerfile [default: CONTEXT/Containerfile, else CONTEXT/Dockerfile].
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// A value for an ARG (repeatable); `KEY` alone takes it from the environment.
    #[arg(long = "build-arg", value_parser = build_arg)]
    pub build_args: Vec<(String, String)>,
    /// Network of RUN steps: none or host.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Run every step, looking nothing up in the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Build up to this stage (its name or index) instead of the last.
    #[arg(long)]
    pub target: Option<String>,
    /// The build context: the dir COPY and ADD read from.
    pub context: PathBuf,
}

fn containerfile(context: &Path) -> PathBuf {
    let c = context.join("Containerfile");
    if c.is_file() {
        c
    } else {
        context.join("Dockerfile")
    }
}

pub fn build(cli: &Cli, a: &BuildArgs) -> ExitCode {
    let mut tags: Vec<RegistryRef> = Vec::new();
    for t in &a.tags {
        match ImageRef::parse(t) {
            Ok(ImageRef::Registry(r)) => tags.push(r),
            Ok(_) => return fail(format!("-t {t:?}: not a registry reference")),
            Err(e) => return fail(format!("-t {t:?}: {e}")),
        }
    }
    let network = match a.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        n => return fail(format!("--network {n:?}: RUN steps take none or host")),
    };
    let cfg = match cli.settings(None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let opts = BuildOptions {
        root: cfg.root,
        cgroup_parent: cfg.cgroup_parent,
        file: a.file.clone().unwrap_or_else(|| containerfile(&a.context)),
        context: a.context.clone(),
        tags,
        build_args: a.build_args.iter().cloned().collect::<BTreeMap<_, _>>(),
        network,
        no_cache: a.no_cache,
        target: a.target.clone(),
    };
    let started = std::time::Instant::now();
    match run_build(&opts, &|line| eprintln!("{line}")) {
        Ok(report) => {
            eprintln!(
                "built in {:.2} s: {} steps, {} from the cache",
                started.elapsed().as_secs_f64(),
                report.steps,
                report.cached
            );
            for r in &report.records {
                println!("{} {}", r.name, r.digest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
