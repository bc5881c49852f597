//! berth as PID 1, the init of a machine: what it sets up before the supervisor runs (the API
//! filesystems and the cgroup fs, the console, hostname, loopback, kernel modules) and how it
//! ends (every process stopped, filesystems synced and unmounted, reboot(2)). It owns the
//! machine-wide steps only; the containers are the supervisor's, stopped before `finish`.

mod modules;
mod mounts;
mod power;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub use modules::{load_modules, ModuleError};
pub use mounts::{plan_mounts, CgroupMode, InitMount};
pub use power::{finish, idle, power_of};

/// What ends the machine, as busybox init and sysvinit name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    Poweroff,
    Reboot,
    Halt,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::Poweroff => "poweroff",
            Power::Reboot => "reboot",
            Power::Halt => "halt",
        }
    }

    pub fn parse(s: &str) -> Option<Power> {
        match s {
            "poweroff" => Some(Power::Poweroff),
            "reboot" => Some(Power::Reboot),
            "halt" => Some(Power::Halt),
            _ => None,
        }
    }
}

/// `[init]` of the supervisor config: what berth does as PID 1 (ignored otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub hostname: Option<String>,
    /// Kernel modules to load by name, with their dependencies, from /lib/modules.
    pub modules: Vec<String>,
    pub cgroup: CgroupMode,
    /// What SIGTERM does (SIGUSR2 powers off, SIGUSR1 halts, SIGINT reboots whatever this is).
    pub shutdown: Power,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            hostname: None,
            modules: Vec::new(),
            cgroup: CgroupMode::V2,
            shutdown: Power::Poweroff,
        }
    }
}

static MACHINE_INIT: AtomicBool = AtomicBool::new(false);

/// Whether this process is the machine's init (PID 1 of the first pid namespace, whose end
/// is the machine's), as [`early`] found. PID 1 of a container's pid namespace is not: it only
/// reaps its orphans, and SIGTERM ends it like any daemon.
pub fn is_machine_init() -> bool {
    MACHINE_INIT.load(Ordering::Relaxed)
}

/// Called first thing by every berth process. In the machine's init: ctrl-alt-del turned into
/// SIGINT, which only the first pid namespace's init may ask for (a child namespace gets
/// EINVAL: that is how the two are told apart), then /proc, /dev and a console on fds 0-2
/// (the kernel leaves them closed when the root has no /dev/console).
pub fn early() {
    if std::process::id() != 1 || nix::sys::reboot::set_cad_enabled(false).is_err() {
        return;
    }
    MACHINE_INIT.store(true, Ordering::Relaxed);
    mounts::mount_early();
    power::console_fds();
}

/// The rest of the set-up, once the config is known: every mount the plan lacks, the hostname,
/// lo up and the modules. Each failure is logged: a half-equipped machine that runs its
/// supervisor is better than none.
pub fn prepare(config: &InitConfig) {
    mounts::mount_missing(config.cgroup);
    if let Some(h) = &config.hostname {
        if let Err(e) = nix::unistd::sethostname(h) {
            tracing::warn!("setting the hostname {h:?}: {e}");
        }
    }
    if let Err(e) = crate::sys::netdev::loopback_up() {
        tracing::warn!("bringing lo up: {e}");
    }
    if !config.modules.is_empty() {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = std::path::Path::new("/lib/modules").join(release);
        for e in load_modules(&dir, &config.modules) {
            tracing::warn!("{e}");
        }
    }
}
