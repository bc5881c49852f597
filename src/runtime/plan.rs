//! `ContainerPlan`: everything the container's init needs, decided up front as pure data from
//! the spec, the image config and the paths the caller prepared. Nothing here touches the system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::ResolvedImage;
use crate::runtime::mounts::{self, Mount, MountInputs};
use crate::runtime::terminal::TermSize;
use crate::spec::{NetworkMode, ValidatedSpec};

/// The PATH a container gets when neither image nor spec sets one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Soft and hard RLIMIT_NOFILE inside containers (Docker's defaults, capped by our own hard
/// limit at launch since raising it needs CAP_SYS_RESOURCE).
pub const NOFILE_LIMIT: (u64, u64) = (1024, 524288);

/// Host-side paths of one container's state. Only `dir`, `upper` and `work` (the writable
/// layer) are on disk; the init mounts a small tmpfs over `dir` itself, in its own mount
/// namespace, holding the overlay mount point and the files bound over /etc/hosts,
/// /etc/hostname and /etc/resolv.conf, so they vanish with the container and never touch the
/// disk (nor cost a directory of their own on it). The init names `upper` and `work` from
/// inside the covered `dir` (its working directory from before the mount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPaths {
    /// `<root>/containers/<id>`, and the tmpfs mount point.
    pub dir: PathBuf,
    /// The overlay mount point, inside the tmpfs.
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

impl ContainerPaths {
    pub fn new(dir: PathBuf) -> Self {
        ContainerPaths {
            rootfs: dir.join("root"),
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
            resolv_conf: dir.join("resolv.conf"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            dir,
        }
    }
}

/// The contents of the files bound over the image's /etc ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFiles {
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
}

/// Everything the container's init does, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub hostname: String,
    pub paths: ContainerPaths,
    pub etc: EtcFiles,
    /// Overlay lower dirs, lowest first; the init layer is last (on top).
    pub lower_dirs: Vec<PathBuf>,
    pub readonly_rootfs: bool,
    /// Whether the container gets its own network namespace.
    pub own_netns: bool,
    /// Bridge mode: the pinned network namespace (veth, address, routes already set up) the
    /// init joins instead of creating an empty one.
    pub netns: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// argv; `args[0]` is looked up in the container's PATH when it has no '/'.
    pub args: Vec<String>,
    /// `KEY=value`, in a stable order.
    pub env: Vec<String>,
    pub cwd: String,
    /// The user as written (spec or image); resolved inside the container's root.
    pub user: Option<String>,
    /// Capability names (e.g. `CHOWN`) kept in the bounding set (and effective for root).
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    pub nofile: (u64, u64),
    /// `cgroup.procs` files the init writes "0" to before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Kill the container when the process that started it dies (`berth run`).
    pub die_with_parent: bool,
    /// Supervised starts: the CPU niceness the container's program (and its monitor) run at.
    /// The setup before runs at the lower priority of the supervisor's workers, which the
    /// helper inherits, so a burst of starts leaves the CPU to the control path (`ps`, stops,
    /// probes). None: everything runs at the helper's own.
    pub niceness: Option<i32>,
    /// Supervised containers: where the monitor records how the container exited.
    pub exit_file: Option<PathBuf>,
    /// Supervised containers: their stdout/stderr go to rotated log files, written by the
    /// monitor (so a slow reader never blocks the container).
    pub log: Option<LogTarget>,
    /// `berth run -t`: the init makes a pty of this size in the container's devpts, takes it
    /// as its controlling terminal and stdio, and sends the master to the launcher.
    #[serde(default)]
    pub terminal: Option<TermSize>,
}

/// Where and how a supervised container's output is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("container {name}: no command: the image has no Entrypoint or Cmd and the spec sets neither `command` nor `entrypoint`")]
    NoCommand { name: String },
    #[error("container {name}: {message}")]
    Capabilities { name: String, message: String },
}

/// Host facts the plan depends on.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub cgroup2: bool,
    /// Bridge mode: the prepared netns and the /etc/hosts lines of the bridge's containers.
    pub netns: Option<PathBuf>,
    pub hosts: Vec<(String, std::net::Ipv4Addr)>,
    /// The host's resolv.conf, the base of containers'.
    pub resolv_conf: String,
    /// Name servers and search domains that replace the host's (the supervisor config's).
    pub dns: Vec<std::net::IpAddr>,
    pub dns_search: Vec<String>,
    pub init_layer: PathBuf,
    pub cgroup_procs: Vec<PathBuf>,
    pub capabilities: Vec<String>,
    pub die_with_parent: bool,
    pub niceness: Option<i32>,
    pub exit_file: Option<PathBuf>,
    pub log: Option<LogTarget>,
}

/// Decides the container's plan from its spec and image.
pub fn build(
    spec: &ValidatedSpec,
    image: &ResolvedImage,
    paths: ContainerPaths,
    host: &HostFacts,
) -> Result<ContainerPlan, PlanError> {
    let cfg = &image.config;
    // As Docker: an entrypoint set in the spec drops the image's Cmd too.
    let entrypoint = spec
        .entrypoint
        .clone()
        .or_else(|| cfg.entrypoint.clone())
        .unwrap_or_default();
    let cmd = match (&spec.command, &spec.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => cfg.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(PlanError::NoCommand {
            name: spec.name.clone(),
        });
    }
    let env = merge_env(&cfg.env, &spec.env, &spec.hostname);
    let cwd = spec
        .workdir
        .clone()
        .or_else(|| cfg.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let user = spec
        .user
        .clone()
        .or_else(|| cfg.user.clone().filter(|u| !u.is_empty()));
    let own_netns = spec.network.mode != NetworkMode::Host;
    let mounts = mounts::container_mounts(&MountInputs {
        hosts: paths.hosts.clone(),
        hostname: paths.hostname.clone(),
        resolv_conf: paths.resolv_conf.clone(),
        own_netns,
        cgroup2: host.cgroup2,
        user_mounts: &spec.mounts,
    });
    let mut lower_dirs = image.layers.clone();
    lower_dirs.push(host.init_layer.clone());
    Ok(ContainerPlan {
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        etc: EtcFiles {
            hosts: hosts_file(&spec.hostname, &host.hosts),
            hostname: format!("{}\n", spec.hostname),
            resolv_conf: resolv_conf(
                &host.resolv_conf,
                &host.dns,
                &host.dns_search,
                spec.network.mode,
            ),
        },
        paths,
        lower_dirs,
        readonly_rootfs: spec.readonly_rootfs,
        own_netns,
        netns: host.netns.clone(),
        mounts,
        masked_paths: mounts::MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        readonly_paths: mounts::READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        args,
        env,
        cwd,
        user,
        capabilities: host.capabilities.clone(),
        no_new_privileges: true,
        seccomp: true,
        nofile: NOFILE_LIMIT,
        cgroup_procs: host.cgroup_procs.clone(),
        die_with_parent: host.die_with_parent,
        niceness: host.niceness,
        exit_file: host.exit_file.clone(),
        log: host.log.clone(),
        terminal: None,
    })
}

/// The container's /etc/resolv.conf: the host's, with its name servers replaced by `dns` and
/// its search domains by `search` when those are given. A container with its own network
/// namespace cannot reach a name server on the host's loopback (systemd-resolved's
/// 127.0.0.53, say): such lines are dropped, as Docker does.
pub fn resolv_conf(
    host: &str,
    dns: &[std::net::IpAddr],
    search: &[String],
    mode: NetworkMode,
) -> String {
    let own_netns = mode != NetworkMode::Host;
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let keep = match words.next() {
            Some("nameserver") => {
                let loopback = words
                    .next()
                    .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|a| a.is_loopback());
                dns.is_empty() && !(own_netns && loopback)
            }
            Some("search") | Some("domain") => search.is_empty(),
            _ => true,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    for server in dns {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

/// The container's /etc/hosts: localhost, its own name, and every container on its bridge.
pub fn hosts_file(hostname: &str, bridge: &[(String, std::net::Ipv4Addr)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if bridge.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for (name, ip) in bridge {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// Image env, then the spec's env over it, then PATH and HOSTNAME when missing.
fn merge_env(
    image_env: &[String],
    spec_env: &BTreeMap<String, String>,
    hostname: &str,
) -> Vec<String> {
    // In first-set order, each name once; the index makes every set O(1).
    let mut env: Vec<(String, String)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut set = |k: &str, v: &str, overwrite: bool| match index.get(k) {
        Some(&i) if overwrite => env[i].1 = v.to_string(),
        Some(_) => {}
        None => {
            index.insert(k.to_string(), env.len());
            env.push((k.to_string(), v.to_string()));
        }
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v, true);
    }
    for (k, v) in spec_env {
        set(k, v, true);
    }
    set("PATH", DEFAULT_PATH, false);
    set("HOSTNAME", hostname, false);
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The overlay mount options for a plan's layers (upper-most lower dir first, as overlayfs
/// wants). `volatile`: the writable layer is thrown away with the container, so syncing it to
/// disk at unmount (a full sync of the host filesystem, several ms per exit) is skipped.
pub fn overlay_options(lower_dirs: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lowers: Vec<String> = lower_dirs.iter().rev().map(|p| escape_overlay(p)).collect();
    format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lowers.join(":"),
        escape_overlay(upper),
        escape_overlay(work)
    )
}

/// Overlayfs splits options on ',' and lower dirs on ':'; both are escaped with '\'.
fn escape_overlay(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;
    use crate::spec::{NetworkSpec, Resources, RestartPolicy, RestartSpec};
    use std::time::Duration;

    fn spec() -> ValidatedSpec {
        ValidatedSpec {
            name: "web".into(),
            file: "/specs/web.toml".into(),
            image: "oci:/img:v1".into(),
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            workdir: None,
            user: None,
            hostname: "web".into(),
            readonly_rootfs: false,
            stop_signal: 15,
            stop_timeout: Duration::from_secs(10),
            cap_add: vec![],
            cap_drop: vec![],
            restart: RestartSpec {
                policy: RestartPolicy::Always,
                max_retries: 0,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(30),
                backoff_reset_after: Duration::from_secs(60),
            },
            resources: Resources::default(),
            network: NetworkSpec {
                mode: NetworkMode::None,
                ip: None,
                ports: vec![],
                egress: None,
                ingress: None,
            },
            mounts: vec![],
            health: None,
            depends_on: Default::default(),
            update: Default::default(),
            build: None,
        }
    }

    fn image(cfg: ImageConfig) -> ResolvedImage {
        ResolvedImage {
            layers: vec!["/l/1".into(), "/l/2".into()],
            config: cfg,
            digest: None,
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            cgroup2: false,
            netns: None,
            hosts: vec![],
            resolv_conf: "nameserver 127.0.0.53\n".into(),
            dns: vec![],
            dns_search: vec![],
            init_layer: "/root/init".into(),
            cgroup_procs: vec![],
            capabilities: vec!["CHOWN".into()],
            die_with_parent: true,
            niceness: None,
            exit_file: None,
            log: None,
        }
    }

    fn plan(s: &ValidatedSpec, cfg: ImageConfig) -> Result<ContainerPlan, PlanError> {
        build(
            s,
            &image(cfg),
            ContainerPaths::new("/root/containers/x".into()),
            &host(),
        )
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        };
        let mut s = spec();
        type Case<'a> = (Option<Vec<&'a str>>, Option<Vec<&'a str>>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (None, None, vec!["/entry", "serve"]),
            (Some(vec!["run"]), None, vec!["/entry", "run"]),
            (None, Some(vec!["/other"]), vec!["/other"]),
            (Some(vec!["x"]), Some(vec!["/other"]), vec!["/other", "x"]),
        ];
        for (command, entrypoint, want) in cases {
            s.command = command.map(|v| v.into_iter().map(String::from).collect());
            s.entrypoint = entrypoint.map(|v| v.into_iter().map(String::from).collect());
            assert_eq!(plan(&s, img.clone()).unwrap().args, want);
        }
    }

    #[test]
    fn no_command_is_an_error() {
        assert_eq!(
            plan(&spec(), ImageConfig::default()),
            Err(PlanError::NoCommand { name: "web".into() })
        );
    }

    #[test]
    fn env_merges_and_defaults() {
        let mut s = spec();
        s.command = Some(vec!["sh".into()]);
        s.env.insert("A".into(), "spec".into());
        let img = ImageConfig {
            env: vec!["A=image".into(), "B=b=c".into()],
            ..Default::default()
        };
        let p = plan(&s, img).unwrap();
        assert_eq!(
            p.env,
            vec![
                "A=spec",
                "B=b=c",
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=web"
            ]
        );
    }

    #[test]
    fn workdir_user_and_layers() {
        let mut s = spec();
        s.command = Some(vec!["sh".into()]);
        let img = ImageConfig {
            working_dir: Some("/srv".into()),
            user: Some("nobody".into()),
            ..Default::default()
        };
        let p = plan(&s, img.clone()).unwrap();
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user.as_deref(), Some("nobody"));
        assert_eq!(
            p.lower_dirs,
            vec![PathBuf::from("/l/1"), "/l/2".into(), "/root/init".into()]
        );
        s.workdir = Some("/w".into());
        s.user = Some("1000:1000".into());
        let p = plan(&s, img).unwrap();
        assert_eq!(
            (p.cwd.as_str(), p.user.as_deref()),
            ("/w", Some("1000:1000"))
        );
        assert!(p.own_netns);
    }

    #[test]
    fn overlay_options_top_first_and_escaped() {
        let o = overlay_options(
            &["/a".into(), "/b:c".into()],
            Path::new("/u"),
            Path::new("/w,x"),
        );
        assert_eq!(o, "lowerdir=/b\\:c:/a,upperdir=/u,workdir=/w\\,x,volatile");
    }

    #[test]
    fn resolv_conf_from_the_host_or_the_config() {
        let host = "# by resolved\nnameserver 127.0.0.53\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n";
        let dns: Vec<std::net::IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let search = vec!["corp".to_string(), "example".to_string()];
        let table: &[(&[std::net::IpAddr], &[String], NetworkMode, &str)] = &[
            (
                &[],
                &[],
                NetworkMode::Bridge,
                "# by resolved\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n",
            ),
            (&[], &[], NetworkMode::Host, host),
            (
                &dns,
                &[],
                NetworkMode::None,
                "# by resolved\nsearch lan\noptions edns0\nnameserver 10.0.0.2\n",
            ),
            (
                &dns,
                &search,
                NetworkMode::Bridge,
                "# by resolved\noptions edns0\nnameserver 10.0.0.2\nsearch corp example\n",
            ),
        ];
        for (dns, search, mode, want) in table {
            assert_eq!(
                resolv_conf(host, dns, search, *mode),
                *want,
                "{dns:?} {search:?} {mode:?}"
            );
        }
    }
}
