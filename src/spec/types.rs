//! The validated form of a spec file: every value checked, units converted, defaults applied.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A spec file after parsing and validation. The file stem is the container's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedSpec {
    /// The container's name: the file stem.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The image reference as written (checked with `crate::image::ImageRef::parse`).
    pub image: String,
    /// Replaces the image's Cmd when set.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Merged over the image's Env.
    pub env: BTreeMap<String, String>,
    /// Absolute path inside the container.
    pub workdir: Option<String>,
    /// `uid[:gid]` or `name[:group]`, resolved later against the image's /etc/passwd.
    pub user: Option<String>,
    /// Defaults to the container's name.
    pub hostname: String,
    pub readonly_rootfs: bool,
    /// Signal number (e.g. 15 for SIGTERM).
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    /// Capability names (upper case, without the CAP_ prefix) added to the default set.
    pub cap_add: Vec<String>,
    /// Capability names (upper case, without the CAP_ prefix) removed from the default set.
    pub cap_drop: Vec<String>,
    pub restart: RestartSpec,
    pub resources: Resources,
    pub network: NetworkSpec,
    pub mounts: Vec<MountSpec>,
    /// The `[health]` probe, if any.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Containers (by name) that must be ready before this one starts, and how ready.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Condition>,
    /// How an edit replaces the running container (`[update]`).
    #[serde(default)]
    pub update: UpdateSpec,
    /// `build = { context = ... }`: the image is built from this Containerfile (and `image`
    /// is the name it is recorded as, `localhost/berth-build/NAME:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
}

/// A spec's image build: a context dir and its Containerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Absolute (a relative one in the file is taken from the spec file's dir).
    pub context: PathBuf,
    /// The Containerfile, absolute [default: CONTEXT/Containerfile, else CONTEXT/Dockerfile].
    pub file: PathBuf,
    /// `--build-arg` values.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// How often a spec's build context is checked for changes when `update.check` is not set.
pub const BUILD_CHECK: Duration = Duration::from_secs(10);

/// `[update]`: how a new version replaces the running one, and when it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    pub order: UpdateOrder,
    /// The new version must run this long (and be healthy, with a probe) to be kept.
    pub healthy_for: Duration,
    /// Whether a new version that does not go back to the one before.
    pub rollback: bool,
    /// How often the image's tag is asked of its registry; a new digest is an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Duration>,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        UpdateSpec {
            order: UpdateOrder::StopFirst,
            healthy_for: Duration::from_secs(10),
            rollback: true,
            check: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one.
    StopFirst,
    /// Start the new one, then stop the old (no static ip or published ports).
    StartFirst,
}

/// When a dependency is ready for its dependents to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Its container runs.
    Started,
    /// It runs and its `[health]` probe says healthy.
    Healthy,
    /// It ran and exited with code 0.
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

/// How berth checks that a running container works (`[health]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub probe: Probe,
    /// Time between the end of one probe and the start of the next (and before the first).
    pub interval: Duration,
    /// A probe that takes longer fails (an exec probe is killed).
    pub timeout: Duration,
    /// Consecutive failures that make the container unhealthy (at least 1).
    pub retries: u32,
    /// Failures during this time after the start do not count; the first success ends it.
    pub start_period: Duration,
    pub on_unhealthy: OnUnhealthy,
}

/// One probe kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// GET `path` on 127.0.0.1:`port` in the container's network namespace; 2xx/3xx = healthy.
    Http { port: u16, path: String },
    /// A TCP connect to 127.0.0.1:`port` in the container's network namespace.
    Tcp { port: u16 },
    /// A command run inside the container (as `berth exec` runs it); exit 0 = healthy.
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Kill it; the restart policy and its backoff decide what follows.
    Restart,
    /// Kill it and leave it stopped until the file changes or `berth start`.
    Stop,
    /// Only report it.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// 0 = unlimited.
    pub max_retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset_after: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Hard memory limit in bytes (at least 4 MiB).
    pub memory: Option<u64>,
    /// CPU quota in CPUs (> 0).
    pub cpus: Option<f64>,
    /// 1..=10000, as cgroup v2's cpu.weight.
    pub cpu_weight: Option<u64>,
    /// A cpuset list such as "0-1,3".
    pub cpuset: Option<String>,
    /// Maximum number of tasks (> 0).
    pub pids: Option<u64>,
    /// 1..=10000 (cgroup v2 io.weight; scaled to blkio.weight on v1).
    pub io_weight: Option<u64>,
    /// Per block device throttles (`io.read_bps` and the like), sorted by device path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_devices: Vec<IoDeviceLimit>,
}

/// The IO throttles of one block device, named by path (resolved to its device numbers when
/// the cgroup is written). Rates are bytes or operations per second; None is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoDeviceLimit {
    pub device: std::path::PathBuf,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Bridge,
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it listens on; every host address when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether two mappings want the same host port: same protocol and port, on the same
    /// address or with either on every address.
    pub fn overlaps(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    /// `[ADDR:]PORT/PROTO` of the host side, as messages and `ps` show it.
    pub fn host_side(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.protocol.as_str()),
            None => format!("{}/{}", self.host_port, self.protocol.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<PortMapping>,
    /// Bits per second.
    pub egress: Option<u64>,
    /// Bits per second.
    pub ingress: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub readonly: bool,
}
