//! The command line: parses arguments and calls into the library. Prints; decides nothing
//! the library could decide.

mod build;
mod commit;
mod container;
mod control;
mod cp;
mod exec;
mod format;
mod generate;
mod image;
mod info;
mod interop;
mod run;
mod run_flags;
mod supervise;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::supervisor::config::{Config, ConfigError};

/// The exit code for berth's own errors (as docker uses).
pub const EXIT_BERTH_ERROR: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Runs real containers from TOML spec files"
)]
pub struct Cli {
    /// State dir (images, layers, containers) [default: /var/lib/berth, or the config's].
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// The daemon's control socket [default: /run/berth/berth.sock, or the config's].
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// The cgroup under which containers' cgroups are made [default: berth, or the config's].
    #[arg(long, global = true)]
    pub cgroup_parent: Option<String>,
    /// Log filter (RUST_LOG syntax), e.g. `debug` [default: warn; info for supervise].
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What `berth schema` describes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemaOf {
    /// Spec files (docs/spec.schema.json).
    Spec,
    /// The supervisor config (docs/config.schema.json).
    Config,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImportCommand {
    /// A Compose file's services as spec files, one per service; prints each key it cannot
    /// map, then validates the dir.
    Compose {
        /// The Compose file (compose.yaml, docker-compose.yml).
        file: PathBuf,
        /// The spec dir to write into.
        #[arg(long)]
        to: PathBuf,
        /// Replace spec files that exist.
        #[arg(long)]
        force: bool,
        /// Supervisor config whose bridge subnet static addresses are checked against.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ExportCommand {
    /// Kubernetes manifests: NAME.yaml per spec (a Deployment, or a Pod for restart
    /// on-failure/never, and a Service for published ports); prints what it cannot map.
    Kube {
        /// The spec dir.
        dir: PathBuf,
        /// The dir to write the manifests into.
        #[arg(long)]
        to: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `defer`: a subcommand's arguments are built only when it is the one used (or for help,
/// completions and man pages), not on every invocation for all of them. The argument structs
/// a subcommand takes in carry plain comments, not doc comments: built late, a doc comment
/// there would replace the subcommand's own description.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Check spec files or dirs of spec files; prints file:line:col: message per error.
    Validate {
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
        /// Supervisor config file whose bridge subnet static addresses must fall in.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run one container in the foreground, from a spec file or as `docker run --rm IMAGE
    /// [CMD...]` with docker's flags (`--print-spec` prints the spec file they mean); the exit
    /// code is the container's (125: berth failed).
    Run {
        /// Keep stdin open and connected to the container.
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a terminal of its own (a pty from the container's devpts),
        /// relayed to ours; with -i our terminal is in raw mode meanwhile.
        #[arg(short, long)]
        tty: bool,
        /// Keep the container's writable layer and state dir after it exits.
        #[arg(long)]
        keep: bool,
        /// Supervisor config file whose root, cgroup parent and [network] to use (the
        /// supervisor's bridge, subnet, DNS...).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: Box<run_flags::RunFlags>,
        /// A spec file (NAME.toml), or an image reference.
        target: String,
        /// With an image: the command, replacing the image's Cmd.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// The daemon: keep containers matching the spec dir, restart them, answer the socket.
    Supervise {
        /// Supervisor config file (see configs/berth.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The spec dir [default: /etc/berth/specs, or the config's].
        #[arg(long)]
        specs: Option<PathBuf>,
    },
    /// List containers (from the daemon).
    Ps(control::PsArgs),
    /// Stream every status change from the daemon, one JSON object per line.
    Events,
    /// Show one container's state, instance and spec (JSON).
    Inspect {
        name: String,
        /// The output is JSON unless --format says otherwise; accepted as on every other query.
        #[arg(long)]
        json: bool,
        /// A template, e.g. '{{.status.state}}' or '{{json .spec.network}}'.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// CPU, memory and pids of running containers, from their cgroups; redrawn every second
    /// on a terminal (`--no-stream`: once).
    Stats {
        #[arg(long)]
        json: bool,
        /// Print once (what happens anyway when the output is not a terminal).
        #[arg(long)]
        no_stream: bool,
    },
    /// Stop every container, end the daemon and, when it is the machine's init, power off
    /// (only the daemon ends otherwise).
    Poweroff,
    /// As poweroff, then reboot the machine when the daemon is its init.
    Reboot,
    /// As poweroff, then halt the machine when the daemon is its init.
    Halt,
    /// Send a signal to a container's init (default SIGKILL); its restart policy decides what
    /// follows, as for any exit.
    Kill {
        /// The signal, by name or number.
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
        name: String,
    },
    /// Wait until a running container exits; prints its exit code and exits with it.
    Wait { name: String },
    /// Freeze every process of a container (the cgroup freezer).
    Pause { name: String },
    /// Thaw a paused container.
    Unpause { name: String },
    /// The processes of a container (host pids).
    Top { name: String },
    /// A container's published ports.
    Port { name: String },
    /// Check a login against a registry and record it in the credentials file
    /// ($REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    Login {
        #[arg(short, long)]
        username: String,
        /// The password (visible to other users in ps; prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// host[:port] of the registry.
        registry: String,
    },
    /// Forget the login for a registry.
    Logout { registry: String },
    /// Convert from another tool's files into spec files.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Convert spec files into another tool's files.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout, e.g.
    /// `berth completions bash > /usr/share/bash-completion/completions/berth`.
    Completions { shell: clap_complete::Shell },
    /// The JSON Schema of spec files or of the supervisor config, on stdout (as committed in
    /// docs/; editors read it through a `#:schema PATH` first line).
    Schema { of: SchemaOf },
    /// Man pages for berth and every subcommand, written into DIR.
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// berth's version and what it was built with.
    Version {
        #[arg(long)]
        json: bool,
    },
    /// This host as berth sees it: kernel, cgroups, storage, images, bridge and the daemon.
    Info {
        /// Supervisor config file whose settings to show.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a container; it stays stopped until `berth start` or a change of its spec.
    Stop { name: String },
    /// Start a stopped container.
    Start { name: String },
    /// Stop and start a container.
    Restart { name: String },
    /// What the daemon would do now for the spec dir, changing nothing.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// A container's output (kept across its restarts, rotated by size).
    Logs {
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Prefix each line with its time (RFC 3339).
        #[arg(short, long)]
        timestamps: bool,
        /// Only lines from this time on: RFC 3339, epoch seconds, or a duration ago (10m).
        #[arg(long, value_parser = control::log_time)]
        since: Option<std::time::SystemTime>,
        /// Only lines before this time (as --since); a follow ends there.
        #[arg(long, value_parser = control::log_time)]
        until: Option<std::time::SystemTime>,
        name: String,
    },
    /// Run a command inside a running container: its namespaces, cgroup, user, capabilities
    /// and seccomp profile. The exit code is the command's (125: berth failed, 126: cannot
    /// execute, 127: not found).
    Exec {
        /// Connect stdin to the command (else it reads /dev/null).
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a terminal (relayed to ours).
        #[arg(short, long)]
        tty: bool,
        #[command(flatten)]
        opts: exec::ExecOpts,
        name: String,
        /// The command and its arguments (everything after NAME, flags included; a `--`
        /// before them is allowed).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy files and dirs between a running container and the host: `NAME:PATH DEST` or
    /// `SRC NAME:PATH`, placed as docker places them; container paths are resolved inside
    /// its root, never through its links to the host.
    Cp(cp::CpArgs),
    /// Turn a running container's changes into a new image layer, recorded as REF
    /// (e.g. `localhost/app:v2`) on top of the image it runs.
    Commit { name: String, reference: String },
    /// Build an image from a Containerfile (Dockerfile) into the store: FROM, RUN (as a
    /// container, network none unless --network host), COPY/ADD (with --from, --chown,
    /// --chmod, globs, .dockerignore; ADD unpacks local tar archives), ENV, ARG, WORKDIR,
    /// USER, CMD, ENTRYPOINT, EXPOSE, LABEL, VOLUME, STOPSIGNAL, SHELL, HEALTHCHECK and
    /// multi-stage builds. Unchanged steps come from the build cache.
    Build(build::BuildArgs),
    /// Manage the image store: pull, import, ls, inspect, history, tag, rm, prune.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCommand,
    },
}

impl Cli {
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| "/var/lib/berth".into())
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| "/run/berth/berth.sock".into())
    }

    pub fn cgroup_parent(&self) -> String {
        self.cgroup_parent.clone().unwrap_or_else(|| "berth".into())
    }

    /// The cgroup parent the daemon uses, from its `inspect` answer `v` (this command's own
    /// setting only when the daemon does not say).
    pub fn daemon_cgroup_parent(&self, v: &serde_json::Value) -> String {
        v["cgroup_parent"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.cgroup_parent())
    }

    /// The supervisor config file's settings (the defaults without one), overridden by the
    /// global flags: for the daemon, and for `run` and `validate` given `--config`.
    pub fn settings(&self, config: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(r) = &self.root {
            cfg.root = r.clone();
        }
        if let Some(s) = &self.socket {
            cfg.socket = s.clone();
        }
        if let Some(c) = &self.cgroup_parent {
            cfg.cgroup_parent = c.clone();
        }
        Ok(cfg)
    }
}

/// The command line of the machine's init: the kernel passes only the words of its own
/// command line it does not know, which are no berth command; the daemon runs with
/// `/etc/berth/berth.toml` when there is one.
fn init_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) if std::env::args().len() > 1 => {
            eprintln!("berth: as init, ignoring the arguments: {e}")
        }
        Err(_) => {}
    }
    let config = Path::new(DEFAULT_CONFIG);
    Cli {
        root: None,
        socket: None,
        cgroup_parent: None,
        log: None,
        command: Command::Supervise {
            config: config.is_file().then(|| config.to_path_buf()),
            specs: None,
        },
    }
}

/// The supervisor config read by an init started without arguments.
const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";

/// `Cli::parse()`, but clap's command tree and matches are not freed: they live as long as
/// the process, as a static would. Freeing their thousands of allocations at every start cost
/// more than building them (musl returns each emptied group to the kernel: some 30 munmaps).
fn parse_args() -> Cli {
    let mut cmd = Cli::command();
    let mut matches = cmd.get_matches_mut();
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    std::mem::forget(matches);
    std::mem::forget(cmd);
    cli
}

pub fn main() -> ExitCode {
    crate::init::early();
    let cli = if crate::init::is_machine_init() {
        init_cli()
    } else {
        parse_args()
    };
    let default_log = if matches!(cli.command, Command::Supervise { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = cli.log.as_deref().unwrap_or(default_log);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match &cli.command {
        Command::Supervise { config, specs } => {
            supervise::supervise(&cli, config.as_deref(), specs.as_deref())
        }
        Command::Ps(args) => control::ps(&cli, args),
        Command::Events => control::events(&cli),
        Command::Inspect {
            name,
            json: _,
            format,
        } => control::inspect(&cli, name, format.as_deref()),
        Command::Stats { json, no_stream } => control::stats(&cli, *json, *no_stream),
        Command::Stop { name } => {
            control::simple(&cli, control::Request::Stop { name: name.clone() })
        }
        Command::Start { name } => {
            control::simple(&cli, control::Request::Start { name: name.clone() })
        }
        Command::Restart { name } => {
            control::simple(&cli, control::Request::Restart { name: name.clone() })
        }
        Command::Plan { json } => control::plan(&cli, *json),
        Command::Poweroff => power(&cli, crate::init::Power::Poweroff),
        Command::Reboot => power(&cli, crate::init::Power::Reboot),
        Command::Halt => power(&cli, crate::init::Power::Halt),
        Command::Logs {
            follow,
            tail,
            timestamps,
            since,
            until,
            name,
        } => control::logs(&cli, name, *follow, *tail, *timestamps, *since, *until),
        Command::Validate {
            json,
            config,
            paths,
        } => validate::validate(&cli, config.as_deref(), paths, *json),
        Command::Run {
            interactive,
            tty,
            keep,
            config,
            flags,
            target,
            command,
        } => run::run(
            &cli,
            config.as_deref(),
            &run::Target {
                target,
                command,
                flags,
            },
            run::Stdio {
                interactive: *interactive,
                tty: *tty,
            },
            *keep,
        ),
        Command::Image { cmd } => image::image(&cli, cmd),
        Command::Build(args) => build::build(&cli, args),
        Command::Kill { signal, name } => container::kill(&cli, name, signal),
        Command::Wait { name } => container::wait(&cli, name),
        Command::Pause { name } => container::pause(&cli, name, true),
        Command::Unpause { name } => container::pause(&cli, name, false),
        Command::Top { name } => container::top(&cli, name),
        Command::Port { name } => container::port(&cli, name),
        Command::Version { json } => info::version(*json),
        Command::Import(ImportCommand::Compose {
            file,
            to,
            force,
            config,
        }) => interop::import_compose(&cli, file, to, *force, config.as_deref()),
        Command::Export(ExportCommand::Kube { dir, to, config }) => {
            interop::export_kube(&cli, dir, to, config.as_deref())
        }
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { out } => generate::man(out),
        Command::Schema { of } => generate::schema(*of),
        Command::Login {
            username,
            password,
            password_stdin,
            registry,
        } => image::login(registry, username, password.as_deref(), *password_stdin),
        Command::Logout { registry } => image::logout(registry),
        Command::Info { config, json } => info::info(&cli, config.as_deref(), *json),
        Command::Commit { name, reference } => commit::commit(&cli, name, reference),
        Command::Exec {
            interactive,
            tty,
            opts,
            name,
            command,
        } => exec::exec(&cli, name, command, *interactive, *tty, opts),
        Command::Cp(args) => cp::cp(&cli, args),
    }
}

fn power(cli: &Cli, action: crate::init::Power) -> ExitCode {
    control::simple(cli, control::Request::Power { action })
}
