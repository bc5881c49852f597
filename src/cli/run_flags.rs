//! `berth run IMAGE [CMD...]` with docker's flags: the spec file those flags mean, as TOML
//! text, which the spec parser then validates like any spec file (and `--print-spec` prints,
//! so trying an image and writing its spec are one step apart). Pure.

use toml::{Table, Value};

// The docker-style flags of `berth run IMAGE`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// KEY=VALUE (or KEY, taken from this environment) for the container (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// [ADDR:]HOST:CONTAINER[/udp], ranges as 8000-8010:8000-8010 (repeatable; bridge network).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// HOST_PATH:CONTAINER_PATH[:ro] bind mount (repeatable).
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Memory limit, e.g. 256m or 1g (base 1024).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Most processes the container may have.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<u64>,
    /// The container's name [default: from the image's repository].
    #[arg(long)]
    pub name: Option<String>,
    /// bridge (default), host or none.
    #[arg(long)]
    pub network: Option<String>,
    /// A static address on the bridge.
    #[arg(long)]
    pub ip: Option<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or ids).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Replaces the image's Entrypoint (and drops its Cmd).
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// A read-only root filesystem.
    #[arg(long = "read-only")]
    pub read_only: bool,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Signal to stop the container with.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Accepted for docker's sake: a foreground container is always removed.
    #[arg(long)]
    pub rm: bool,
    /// Print the spec file these flags mean instead of running it.
    #[arg(long = "print-spec")]
    pub print_spec: bool,
}

impl RunFlags {
    /// The flags given, by name, for "these apply to an image" errors.
    pub fn given(&self) -> Vec<&'static str> {
        let mut g = Vec::new();
        let mut add = |on: bool, name| {
            if on {
                g.push(name)
            }
        };
        add(!self.env.is_empty(), "-e");
        add(!self.publish.is_empty(), "-p");
        add(!self.volumes.is_empty(), "-v");
        add(self.memory.is_some(), "-m");
        add(self.cpus.is_some(), "--cpus");
        add(self.pids_limit.is_some(), "--pids-limit");
        add(self.name.is_some(), "--name");
        add(self.network.is_some(), "--network");
        add(self.ip.is_some(), "--ip");
        add(self.workdir.is_some(), "-w");
        add(self.user.is_some(), "-u");
        add(self.entrypoint.is_some(), "--entrypoint");
        add(self.hostname.is_some(), "--hostname");
        add(self.read_only, "--read-only");
        add(!self.cap_add.is_empty(), "--cap-add");
        add(!self.cap_drop.is_empty(), "--cap-drop");
        add(self.stop_signal.is_some(), "--stop-signal");
        add(self.print_spec, "--print-spec");
        g
    }
}

/// The container name for `image` when `--name` is not given: its repository's last part,
/// cleaned to the characters a name may have (`registry:5000/team/web:1` -> `web`).
pub fn default_name(image: &str) -> String {
    let path = image.rsplit(['/']).next().unwrap_or(image);
    let repo = path.split(['@', ':']).next().unwrap_or(path);
    let cleaned: String = repo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['_', '.', '-']).to_string();
    if cleaned.is_empty() {
        "run".into()
    } else {
        cleaned.chars().take(63).collect()
    }
}

/// The spec text for `image`, `command` and `flags`; `lookup` reads this process's
/// environment for `-e KEY`.
pub fn spec_text(
    image: &str,
    command: &[String],
    flags: &RunFlags,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let mut top = Table::new();
    top.insert("image".into(), image.into());
    if !command.is_empty() {
        top.insert("command".into(), strings(command));
    }
    if let Some(e) = &flags.entrypoint {
        top.insert("entrypoint".into(), strings(std::slice::from_ref(e)));
    }
    if !flags.env.is_empty() {
        let mut env = Table::new();
        for e in &flags.env {
            let (k, v) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match lookup(e) {
                    Some(v) => (e.clone(), v),
                    // As docker: a name that is not set here is left out.
                    None => continue,
                },
            };
            env.insert(k, v.into());
        }
        top.insert("env".into(), Value::Table(env));
    }
    for (key, v) in [
        ("workdir", &flags.workdir),
        ("user", &flags.user),
        ("hostname", &flags.hostname),
        ("stop_signal", &flags.stop_signal),
    ] {
        if let Some(v) = v {
            top.insert(key.into(), v.clone().into());
        }
    }
    if flags.read_only {
        top.insert("readonly_rootfs".into(), true.into());
    }
    if !flags.cap_add.is_empty() {
        top.insert("cap_add".into(), strings(&flags.cap_add));
    }
    if !flags.cap_drop.is_empty() {
        top.insert("cap_drop".into(), strings(&flags.cap_drop));
    }
    let mut resources = Table::new();
    if let Some(m) = &flags.memory {
        resources.insert("memory".into(), m.clone().into());
    }
    if let Some(c) = flags.cpus {
        resources.insert("cpus".into(), c.into());
    }
    if let Some(p) = flags.pids_limit {
        resources.insert("pids".into(), (p as i64).into());
    }
    if !resources.is_empty() {
        top.insert("resources".into(), Value::Table(resources));
    }
    let mut network = Table::new();
    if let Some(n) = &flags.network {
        network.insert("mode".into(), n.clone().into());
    }
    if let Some(ip) = &flags.ip {
        network.insert("ip".into(), ip.clone().into());
    }
    if !flags.publish.is_empty() {
        network.insert("ports".into(), strings(&flags.publish));
    }
    if !network.is_empty() {
        top.insert("network".into(), Value::Table(network));
    }
    if !flags.volumes.is_empty() {
        let mut mounts = Vec::new();
        for v in &flags.volumes {
            mounts.push(Value::Table(volume(v)?));
        }
        top.insert("mounts".into(), Value::Array(mounts));
    }
    toml::to_string(&top).map_err(|e| format!("writing the spec: {e}"))
}

/// `-v HOST:CONTAINER[:ro|rw]` as a `[[mounts]]` table.
fn volume(v: &str) -> Result<Table, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => return Err(format!("-v {v:?}: expected HOST_PATH:CONTAINER_PATH[:ro]")),
    };
    if !source.starts_with('/') {
        return Err(format!(
            "-v {v:?}: {source:?} is not a host path; berth has no named volumes, give an \
             absolute host dir"
        ));
    }
    let mut t = Table::new();
    t.insert("source".into(), source.into());
    t.insert("target".into(), target.into());
    if readonly {
        t.insert("readonly".into(), true.into());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (image, name) in [
            ("busybox", "busybox"),
            ("registry:5000/team/web:1.4", "web"),
            ("localhost/app@sha256:abc", "app"),
            ("oci:/srv/images/my_img:latest", "my_img"),
            ("rootfs:/", "run"),
        ] {
            assert_eq!(default_name(image), name, "{image}");
        }
    }

    #[test]
    fn flags_to_spec() {
        let flags = RunFlags {
            env: vec!["A=1".into(), "HOME_DIR".into(), "UNSET".into()],
            publish: vec!["127.0.0.1:8080:80".into()],
            volumes: vec!["/srv/data:/data:ro".into(), "/tmp/x:/x".into()],
            memory: Some("256m".into()),
            cpus: Some(0.5),
            network: Some("bridge".into()),
            workdir: Some("/data".into()),
            read_only: true,
            ..RunFlags::default()
        };
        let lookup = |k: &str| (k == "HOME_DIR").then(|| "/root".to_string());
        let text = spec_text(
            "busybox",
            &["sh".into(), "-c".into(), "echo hi".into()],
            &flags,
            &lookup,
        )
        .unwrap();
        let want = "image = \"busybox\"\n\
            command = [\"sh\", \"-c\", \"echo hi\"]\n\
            workdir = \"/data\"\n\
            readonly_rootfs = true\n\
            \n\
            [env]\n\
            A = \"1\"\n\
            HOME_DIR = \"/root\"\n\
            \n\
            [resources]\n\
            memory = \"256m\"\n\
            cpus = 0.5\n\
            \n\
            [network]\n\
            mode = \"bridge\"\n\
            ports = [\"127.0.0.1:8080:80\"]\n\
            \n\
            [[mounts]]\n\
            source = \"/srv/data\"\n\
            target = \"/data\"\n\
            readonly = true\n\
            \n\
            [[mounts]]\n\
            source = \"/tmp/x\"\n\
            target = \"/x\"\n";
        assert_eq!(text, want);
        for bad in ["data:/data", "/a", "/a:/b:rx"] {
            let f = RunFlags {
                volumes: vec![bad.into()],
                ..RunFlags::default()
            };
            assert!(spec_text("x", &[], &f, &lookup).is_err(), "{bad}");
        }
    }
}
