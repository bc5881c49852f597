//! One container's life on the host: prepare its state dir, image, cgroup and plan; start it;
//! tear it down, collecting errors and going on.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::cgroups::{self, CgroupMode, ContainerCgroup, DeviceControl};
use crate::image::{ImageRef, ImageStore, RegistryRef};
use crate::network::{Attachment, Network, NetworkConfig, NetworkError};
use crate::runtime::capabilities;
use crate::runtime::launch::{self, Helper, Running};
use crate::runtime::plan::{self, ContainerPaths, ContainerPlan, HostFacts, LogTarget};
use crate::spec::{NetworkMode, Resources, ValidatedSpec};

/// Dirs and empty files the init layer provides over every image, so whatever the image has
/// there (a symlink at /dev, say) is hidden before anything is mounted on them.
const INIT_DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "etc",
    "dev/pts",
    "dev/shm",
    "dev/mqueue",
];
const INIT_FILES: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("state dir {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image}: {source}")]
    ImageRef {
        image: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("instance {id} has no cgroup")]
    NoCgroup { id: String },
    #[error(transparent)]
    Plan(#[from] crate::runtime::plan::PlanError),
    #[error("container {name}: {source}")]
    Network {
        name: String,
        source: crate::network::NetworkError,
    },
    #[error("container {name}: {source}")]
    Launch {
        name: String,
        source: launch::LaunchError,
    },
    #[error("building the image of {name} ({file}): {message}")]
    Build {
        name: String,
        file: PathBuf,
        message: String,
    },
}

/// Errors from a teardown that went on past each of them.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct TeardownErrors(pub Vec<String>);

/// How a container runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `berth run`: stdio passed through, killed with its launcher.
    Foreground,
    /// Under the supervisor: output to rotated log files, outlives the daemon, exit recorded.
    Supervised(LogLimits),
}

/// Log rotation limits (from the supervisor config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: 10 << 20,
            max_files: 3,
        }
    }
}

/// How a supervised container's process ended, as its monitor recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub status: crate::runtime::protocol::ExitStatus,
    pub at: std::time::SystemTime,
}

fn exit_file(dir: &Path) -> PathBuf {
    dir.join("exit.json")
}

/// Where a bridge-mode instance's `Attachment` is kept, for teardown by a later daemon.
fn network_file(dir: &Path) -> PathBuf {
    dir.join("network.json")
}

/// Names the `berth run` process (pid and start time) that owns a foreground instance; a
/// supervised instance has none (the daemon's records own those).
fn owner_file(dir: &Path) -> PathBuf {
    dir.join("owner")
}

/// The parents (pid, start time) of a cgroup's processes that are not in it themselves: the
/// monitor of the container's init, unless it is gone and the init was inherited (by pid 1 or
/// by this process, which are left out).
fn monitors_of(pids: &[i32]) -> Vec<(i32, u64)> {
    let me = std::process::id() as i32;
    let mut parents: Vec<(i32, u64)> = pids
        .iter()
        .filter_map(|p| crate::state::read_stat(*p))
        .map(|s| s.ppid)
        .filter(|pp| *pp > 1 && *pp != me && !pids.contains(pp))
        .filter_map(|pp| Some((pp, crate::state::process_start_time(pp)?)))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    parents
}

/// How long the processes of an orphaned instance get to die after SIGKILL.
const ORPHAN_KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The runtime bound to a state dir and a cgroup parent.
#[derive(Debug)]
pub struct Runtime {
    root: PathBuf,
    cgroup_parent: String,
    images: ImageStore,
    network_config: NetworkConfig,
    network: std::sync::OnceLock<Network>,
    device_control: DeviceControl,
}

/// A container ready to start: state dir made, cgroup created, plan decided.
#[derive(Debug)]
pub struct Prepared {
    pub id: String,
    pub plan: ContainerPlan,
    pub cgroup: ContainerCgroup,
    /// Bridge mode: what the network set up for it.
    pub network: Option<Attachment>,
    /// The image's manifest digest (none for a plain rootfs dir).
    pub image_digest: Option<String>,
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir_private(path: &Path) -> Result<(), RuntimeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(state_err(path))
}

impl Runtime {
    pub fn open(root: &Path, cgroup_parent: &str) -> Result<Runtime, RuntimeError> {
        mkdir_private(root)?;
        mkdir_private(&root.join("containers"))?;
        let images = ImageStore::open(root)?;
        let rt = Runtime {
            root: root.to_path_buf(),
            cgroup_parent: cgroup_parent.to_string(),
            images,
            network_config: NetworkConfig::default(),
            network: std::sync::OnceLock::new(),
            device_control: DeviceControl::default(),
        };
        rt.ensure_init_layer()?;
        Ok(rt)
    }

    /// Whether containers may run where the kernel cannot attach a cgroup v2 device program.
    pub fn with_device_control(mut self, control: DeviceControl) -> Runtime {
        self.device_control = control;
        self
    }

    /// Bounds the layers this runtime unpacks (free space kept, compression ratio).
    pub fn with_unpack_limits(mut self, limits: crate::image::UnpackLimits) -> Runtime {
        self.images = self.images.with_unpack_limits(limits);
        self
    }

    /// Sets the bridge network (name, subnet) used by bridge-mode containers.
    pub fn with_network(mut self, config: NetworkConfig) -> Runtime {
        self.network_config = config;
        self
    }

    /// What a clean daemon exit undoes once no container of this root is left (a `berth run`
    /// beside the daemon keeps everything): the bridge and its NAT rules, when this process
    /// used them, and the cgroup parent in every hierarchy. Goes on past each error.
    pub fn release_shared(&self) -> Result<(), TeardownErrors> {
        if !self.instance_ids().is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        if let Some(net) = self.network.get() {
            if let Err(e) = net.remove_bridge() {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = ContainerCgroup::remove_parent_if_empty(&self.cgroup_parent) {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownErrors(errors))
        }
    }

    /// The bridge network, set up on first use.
    fn network(&self, name: &str) -> Result<&Network, RuntimeError> {
        self.on_network(name, Ok)
    }

    /// Runs `f` on the bridge network (set up on first use), its errors attributed to
    /// container `name`.
    fn on_network<'a, T>(
        &'a self,
        name: &str,
        f: impl FnOnce(&'a Network) -> Result<T, NetworkError>,
    ) -> Result<T, RuntimeError> {
        let network = match self.network.get() {
            Some(n) => Ok(n),
            None => Network::new(&self.root, self.network_config.clone(), None)
                .map(|n| self.network.get_or_init(|| n)),
        };
        network.and_then(f).map_err(|source| RuntimeError::Network {
            name: name.to_string(),
            source,
        })
    }

    /// Names and addresses of every container on the bridge (for /etc/hosts).
    pub fn bridge_hosts(&self) -> Vec<(String, std::net::Ipv4Addr)> {
        self.on_network("hosts", Network::hosts).unwrap_or_default()
    }

    /// Rewrites the /etc/hosts of a running bridge-mode container (pid `init_pid`) with the
    /// bridge's current names. The path is resolved inside the container's root, so nothing in
    /// it can redirect the write.
    pub fn refresh_hosts(&self, init_pid: i32, hostname: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::fd::AsFd;
        let text = plan::hosts_file(hostname, &self.bridge_hosts());
        // /proc/PID/root is a magic link to the container's root: follow it (only it).
        let root: OwnedFd = nix::fcntl::open(
            format!("/proc/{init_pid}/root").as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let fd = crate::sys::openat::open_in_root(
            root.as_fd(),
            Path::new("etc/hosts"),
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_NOFOLLOW,
            0,
        )?;
        fs::File::from(fd).write_all(text.as_bytes())
    }

    /// The cgroup under which containers' cgroups are made.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/logs/<name>`: a container's log files, kept across its restarts.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// How instance `id` exited, if its monitor recorded it.
    pub fn read_exit(&self, id: &str) -> Option<ExitRecord> {
        let data = fs::read(exit_file(&self.container_dir(id))).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// The cgroup of instance `id`, if it still exists.
    pub fn cgroup(&self, id: &str) -> Result<Option<ContainerCgroup>, RuntimeError> {
        Ok(ContainerCgroup::open(&self.cgroup_parent, id)?)
    }

    /// Changes the cgroup limits of the running instance `id` in place.
    pub fn update_limits(&self, id: &str, res: &Resources) -> Result<(), RuntimeError> {
        match self.cgroup(id)? {
            Some(cg) => Ok(cg.update(res, self.device_control)?),
            None => Err(RuntimeError::NoCgroup { id: id.to_string() }),
        }
    }

    /// Frees the bridge address of container `name`, removed while no instance of it runs.
    pub fn release_address(&self, name: &str) -> Result<(), RuntimeError> {
        self.on_network(name, |n| n.release_name(name))
    }

    /// Bytes the bridge-mode instance `id` has received and sent; None without a network.
    pub fn traffic(&self, id: &str) -> Option<(u64, u64)> {
        self.on_network(id, |n| n.traffic(id)).ok().flatten()
    }

    /// New bandwidth limits for the running bridge-mode instance `id` of container `name`.
    pub fn set_bandwidth(
        &self,
        name: &str,
        id: &str,
        egress: Option<u64>,
        ingress: Option<u64>,
    ) -> Result<(), RuntimeError> {
        self.on_network(name, |n| n.set_bandwidth(id, egress, ingress))
    }

    /// Removes what is left of instance `id` (cgroup, state dir), e.g. after a restart of the
    /// daemon found it exited. Goes on past each error.
    /// `release_lease`: also give up the name's dynamic address (the container is removed,
    /// not restarted).
    pub fn teardown_id(&self, id: &str, release_lease: bool) -> Result<(), TeardownErrors> {
        let mut errors = Vec::new();
        let record = fs::read(network_file(&self.container_dir(id)))
            .ok()
            .and_then(|data| serde_json::from_slice::<Attachment>(&data).ok());
        match record {
            Some(att) => {
                if let Err(e) = self
                    .network(&att.name)
                    .map_err(|e| e.to_string())
                    .and_then(|n| n.detach(&att, release_lease).map_err(|e| e.to_string()))
                {
                    errors.push(e);
                }
            }
            // No record, or one cut short: a crash between the attach and the record may
            // still have left the namespace, the veth and rules.
            None => {
                if let Ok(n) = self.network(id) {
                    if n.is_attached(id) {
                        if let Err(e) = n.detach_id(id) {
                            errors.push(e.to_string());
                        }
                    }
                }
            }
        }
        match ContainerCgroup::open(&self.cgroup_parent, id) {
            Ok(Some(cg)) => {
                if let Err(e) = cg.destroy() {
                    errors.push(e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("removing {}: {e}", dir.display()))
            }
            _ => {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownErrors(errors))
        }
    }

    /// The ids of the instances under this root.
    pub fn instance_ids(&self) -> Vec<String> {
        fs::read_dir(self.root.join("containers"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes an instance that nothing owns any more (its launcher or its record is gone):
    /// whatever of it still runs is killed first, then its cgroup, network (and, with
    /// `release_lease`, its address) and dir go.
    pub fn remove_orphan(&self, id: &str, release_lease: bool) {
        if let Ok(Some(cg)) = self.cgroup(id) {
            // The monitor outlives the container's processes by the write of its exit file
            // into the container dir: the teardown waits for it too.
            let monitors = monitors_of(&cg.pids().unwrap_or_default());
            let _ = cg.kill_all();
            let deadline = std::time::Instant::now() + ORPHAN_KILL_GRACE;
            let running = || {
                cg.pids().is_ok_and(|p| !p.is_empty())
                    || monitors
                        .iter()
                        .any(|(pid, start)| crate::state::is_same_process(*pid, *start))
            };
            while running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if let Err(err) = self.teardown_id(id, release_lease) {
            tracing::warn!(%id, "{err}");
        }
    }

    /// Removes what foreground runs that were killed before their teardown (kill -9) left
    /// under this root: each instance whose owner process is gone, with its lease.
    pub fn sweep_dead_runs(&self) {
        for id in self.instance_ids() {
            if self.run_owner_alive(&id) == Some(false) {
                tracing::warn!(%id, "removing what a killed `berth run` left");
                self.remove_orphan(&id, true);
            }
        }
    }

    /// For an instance of `berth run` (or of a build's RUN step): whether the process that
    /// launched it still runs. `None` for an instance without an owner (a supervised one).
    pub fn run_owner_alive(&self, id: &str) -> Option<bool> {
        let owner = fs::read_to_string(owner_file(&self.container_dir(id))).ok()?;
        let mut f = owner.split_whitespace().map(|n| n.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (f.next(), f.next()) else {
            return None;
        };
        Some(crate::state::is_same_process(pid as i32, start))
    }

    /// Resolves (and fetches or unpacks on first use) a spec's image. A spec with `build`
    /// builds it first, unless its image is pinned to a digest that is still recorded.
    pub fn resolve_image(
        &self,
        spec: &ValidatedSpec,
    ) -> Result<crate::image::ResolvedImage, RuntimeError> {
        let image_ref = ImageRef::parse(&spec.image).map_err(|e| RuntimeError::ImageRef {
            image: spec.image.clone(),
            source: e.into(),
        })?;
        if let (Some(build), ImageRef::Registry(r)) = (&spec.build, &image_ref) {
            if r.digest.is_some() {
                if let Ok(image) = self.images.resolve(&image_ref) {
                    return Ok(image);
                }
            }
            let pinned = self.build_image(&spec.name, &spec.image, build)?;
            let pinned = ImageRef::parse(&pinned).map_err(|e| RuntimeError::ImageRef {
                image: pinned.clone(),
                source: e.into(),
            })?;
            return Ok(self.images.resolve(&pinned)?);
        }
        Ok(self.images.resolve(&image_ref)?)
    }

    /// Builds the image of container `name` as `build` says, recorded as the tag of `image`
    /// and as that tag pinned to the new manifest digest; returns the pinned reference. The
    /// build runs as a `berth build` process of its own: it needs a private mount namespace,
    /// which a threaded daemon cannot enter. An unchanged context is all cache hits.
    pub fn build_image(
        &self,
        name: &str,
        image: &str,
        build: &crate::spec::BuildSpec,
    ) -> Result<String, RuntimeError> {
        let fail = |message: String| RuntimeError::Build {
            name: name.to_string(),
            file: build.file.clone(),
            message,
        };
        let tag = match ImageRef::parse(image) {
            Ok(ImageRef::Registry(r)) => RegistryRef { digest: None, ..r },
            _ => return Err(fail(format!("{image:?} is not a registry name"))),
        };
        let exe = std::env::current_exe().map_err(|e| fail(format!("finding berth: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(["build", "-t", &tag.to_string(), "-f"])
            .arg(&build.file);
        for (k, v) in &build.args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        cmd.arg(&build.context);
        // Waited for as the daemon's other tools are: its reaper must not take the exit.
        let out = crate::sys::children::output(&mut cmd, None, None)
            .map_err(|e| fail(format!("running berth build: {e}")))?;
        let text = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let last: Vec<&str> = text.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(fail(last.join("\n")));
        }
        if let Some(summary) = text.lines().rev().find(|l| l.starts_with("built in")) {
            tracing::debug!(%name, "{summary}");
        }
        let rec = self.images.find(&tag.to_string())?;
        let pinned = RegistryRef {
            digest: Some(rec.digest.clone()),
            ..tag.clone()
        };
        self.images.tag(&tag.to_string(), &pinned)?;
        Ok(pinned.to_string())
    }

    /// What the registry tag `image` names now, fetched into the store: the reference pinned
    /// to its digest (`registry/repo:tag@sha256:...`).
    pub fn fetch_current_image(
        &self,
        image: &str,
        build: Option<&crate::spec::BuildSpec>,
    ) -> Result<String, RuntimeError> {
        if let Some(b) = build {
            return self.build_image(image, image, b);
        }
        let r = match ImageRef::parse(image) {
            Ok(ImageRef::Registry(r)) => Ok(r),
            Ok(_) => Err(format!("{image:?} is not a registry image")),
            Err(e) => Err(e),
        }
        .map_err(|e| RuntimeError::ImageRef {
            image: image.to_string(),
            source: e.into(),
        })?;
        Ok(self.images.fetch_current(&r)?.to_string())
    }

    fn init_layer(&self) -> PathBuf {
        self.root.join("init-layer")
    }

    /// Creates the shared init layer once (built in a temp dir, renamed into place).
    fn ensure_init_layer(&self) -> Result<(), RuntimeError> {
        let dest = self.init_layer();
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = self
            .root
            .join(format!("init-layer.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        for d in INIT_DIRS {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(tmp.join(d))
                .map_err(state_err(&tmp))?;
        }
        for f in INIT_FILES {
            fs::write(tmp.join(f), "").map_err(state_err(&tmp))?;
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another process made it first.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(state_err(&dest)(e)),
        }
    }

    /// Resolves the image, makes the state dir and the cgroup, and decides the plan. On error
    /// nothing is left behind.
    pub fn prepare(&self, spec: &ValidatedSpec, mode: &Mode) -> Result<Prepared, RuntimeError> {
        let image = self.resolve_image(spec)?;
        self.prepare_with(spec, &image, mode)
    }

    /// [`Runtime::prepare`] with the image already resolved (a build step's layers); the
    /// spec's `image` is not read.
    pub fn prepare_with(
        &self,
        spec: &ValidatedSpec,
        image: &crate::image::ResolvedImage,
        mode: &Mode,
    ) -> Result<Prepared, RuntimeError> {
        let caps = capabilities::effective_set(&spec.cap_add, &spec.cap_drop).map_err(|e| {
            plan::PlanError::Capabilities {
                name: spec.name.clone(),
                message: e.to_string(),
            }
        })?;
        let mut cap_names: Vec<String> = caps
            .iter()
            .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
            .collect();
        cap_names.sort();

        let id = format!("{}-{}", spec.name, random_suffix());
        let paths = ContainerPaths::new(self.root.join("containers").join(&id));
        let mut attachment = None;
        let result = self.prepare_dirs(&paths).and_then(|()| {
            if matches!(mode, Mode::Foreground) {
                let me = std::process::id() as i32;
                let owner = format!("{me} {}", crate::state::process_start_time(me).unwrap_or(0));
                fs::write(owner_file(&paths.dir), owner).map_err(state_err(&paths.dir))?;
            }
            let (netns, hosts) = match spec.network.mode {
                NetworkMode::Bridge => {
                    let att =
                        self.on_network(&spec.name, |n| n.attach(&spec.name, &id, &spec.network))?;
                    let data = serde_json::to_vec(&att).unwrap_or_default();
                    attachment = Some(att.clone());
                    // A new file in the new dir, in one small write: a crash before it ends
                    // leaves a record `teardown_id` cannot read, which it treats as none.
                    fs::write(network_file(&paths.dir), &data).map_err(state_err(&paths.dir))?;
                    (Some(att.netns.clone()), self.bridge_hosts())
                }
                NetworkMode::None | NetworkMode::Host => (None, Vec::new()),
            };
            let cgroup = ContainerCgroup::create(
                &self.cgroup_parent,
                &id,
                &spec.resources,
                self.device_control,
            )?;
            let host = HostFacts {
                netns,
                hosts,
                cgroup2: cgroups::cgroup_mode() == CgroupMode::V2,
                resolv_conf: host_resolv_conf(),
                dns: self.network_config.dns.clone(),
                dns_search: self.network_config.dns_search.clone(),
                init_layer: self.init_layer(),
                cgroup_procs: cgroup.join_files(),
                capabilities: cap_names,
                die_with_parent: matches!(mode, Mode::Foreground),
                niceness: match mode {
                    Mode::Foreground => None,
                    Mode::Supervised(_) => crate::sys::process::main_thread_niceness().ok(),
                },
                exit_file: match mode {
                    Mode::Foreground => None,
                    Mode::Supervised(_) => Some(exit_file(&paths.dir)),
                },
                log: match mode {
                    Mode::Foreground => None,
                    Mode::Supervised(logs) => Some(LogTarget {
                        dir: self.log_dir(&spec.name),
                        max_size: logs.max_size,
                        max_files: logs.max_files,
                    }),
                },
            };
            match plan::build(spec, image, paths.clone(), &host) {
                Ok(plan) => Ok(Prepared {
                    id: id.clone(),
                    plan,
                    cgroup,
                    network: attachment.clone(),
                    image_digest: image.digest.clone(),
                }),
                Err(e) => {
                    let _ = cgroup.destroy();
                    Err(e.into())
                }
            }
        });
        if result.is_err() {
            if let (Some(att), Some(net)) = (&attachment, self.network.get()) {
                let _ = net.detach(att, false);
            }
            let _ = fs::remove_dir_all(&paths.dir);
        }
        result
    }

    fn prepare_dirs(&self, p: &ContainerPaths) -> Result<(), RuntimeError> {
        mkdir_private(&p.dir)?;
        for d in [&p.upper, &p.work] {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(d)
                .map_err(state_err(d))?;
        }
        Ok(())
    }

    /// Starts a prepared container through a helper from `launch::start_helper`.
    pub fn start(&self, prepared: &Prepared, helper: Helper) -> Result<Running, RuntimeError> {
        helper
            .start(&prepared.plan)
            .map_err(|source| RuntimeError::Launch {
                name: prepared.plan.name.clone(),
                source,
            })
    }

    /// Removes what `prepare` made: the cgroup (killing anything left in it) and, unless
    /// `keep`, the state dir with the writable layer. Goes on past each error.
    pub fn teardown(&self, prepared: Prepared, keep: bool) -> Result<(), TeardownErrors> {
        let Prepared {
            plan,
            cgroup,
            network,
            ..
        } = prepared;
        // The network and the cgroup are independent: each is undone whatever the other gave.
        // The state dir goes last, so a crash before leaves a dir that tells a later cleanup
        // what to undo. (One after the other: both are quick now, and a thread to overlap
        // them cost more CPU than the overlap saved.)
        let net_result = match &network {
            Some(att) => self
                .network(&plan.name)
                .map_err(|e| e.to_string())
                .and_then(|n| n.detach(att, true).map_err(|e| e.to_string())),
            None => Ok(()),
        };
        let cgroup_result = cgroup.destroy().map_err(|e| e.to_string());
        let dir_result = if keep {
            // Kept on purpose: no later sweep takes it for a crashed run's.
            let _ = fs::remove_file(owner_file(&plan.paths.dir));
            Ok(())
        } else {
            fs::remove_dir_all(&plan.paths.dir)
                .map_err(|e| format!("removing {}: {e}", plan.paths.dir.display()))
        };
        let errors: Vec<String> = [net_result, cgroup_result, dir_result]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownErrors(errors))
        }
    }
}

/// The host's resolv.conf (capped), or an empty one.
fn host_resolv_conf() -> String {
    use std::io::Read;
    let mut buf = String::new();
    if let Ok(f) = fs::File::open("/etc/resolv.conf") {
        let _ = f.take(64 * 1024).read_to_string(&mut buf);
    }
    buf
}

/// Eight hex digits, different for every container started on this host.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}
