//! The command line: parses arguments and calls into the library. Prints; decides nothing
//! the library could decide.

mod image;
mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit code for berth's own errors (as docker uses).
pub const EXIT_BERTH_ERROR: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Runs real containers from TOML spec files"
)]
pub struct Cli {
    /// State dir (images, layers, containers).
    #[arg(long, global = true, default_value = "/var/lib/berth")]
    pub root: PathBuf,
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = "/run/berth/berth.sock")]
    pub socket: PathBuf,
    /// The cgroup under which containers' cgroups are made.
    #[arg(long, global = true, default_value = "berth")]
    pub cgroup_parent: String,
    /// Log filter (RUST_LOG syntax), e.g. `debug`.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check spec files or dirs of spec files; prints file:line:col: message per error.
    Validate {
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run one container in the foreground; its exit code is the container's.
    Run {
        /// Keep stdin open and connected to the container.
        #[arg(short, long)]
        interactive: bool,
        /// Keep the container's writable layer and state dir after it exits.
        #[arg(long)]
        keep: bool,
        spec: PathBuf,
    },
    /// Manage the image store: pull, import, ls, inspect, history, tag, rm, prune.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match &cli.command {
        Command::Validate { json, paths } => validate::validate(paths, *json),
        Command::Run {
            interactive,
            keep,
            spec,
        } => run::run(&cli, spec, *interactive, *keep),
        Command::Image { cmd } => image::image(&cli, cmd),
    }
}
