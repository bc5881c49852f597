//! `berth import compose`: a Compose file's services as spec files, one per service. Pure: the
//! Compose text, the values of its `${VAR}`s and the reading of its `env_file`s come in, spec
//! texts and one warning per key that has no berth equivalent go out. What berth can express
//! is mapped (image, build, command, entrypoint, environment and env_file, ports, bind mounts,
//! restart, mem_limit/cpus/pids_limit and their `deploy.resources.limits`, network_mode,
//! networks' ipv4_address, healthcheck, depends_on with its conditions, user, working_dir,
//! hostname, read_only, cap_add/cap_drop, stop_signal, stop_grace_period).

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value as Yaml;
use toml::{Table, Value};

use crate::spec::units;

/// One service as a spec file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedSpec {
    /// The container's name (the service's), the file's stem.
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversion {
    pub specs: Vec<ConvertedSpec>,
    /// `service: key: what was done instead`, one per key not mapped as Compose means it.
    pub warnings: Vec<String>,
}

/// What the conversion reads besides the Compose text.
pub struct Inputs<'a> {
    /// The Compose file's dir: relative paths (bind sources, build contexts, env_files) are
    /// made absolute against it.
    pub dir: &'a Path,
    /// `${VAR}` values (the environment, then the dir's `.env`).
    pub vars: &'a dyn Fn(&str) -> Option<String>,
    /// Reads an env_file.
    pub read: &'a dyn Fn(&Path) -> Result<String, String>,
}

/// Keys of a service that map, handled below.
const MAPPED: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "restart",
    "mem_limit",
    "cpus",
    "pids_limit",
    "cpuset",
    "deploy",
    "network_mode",
    "networks",
    "healthcheck",
    "depends_on",
    "user",
    "working_dir",
    "hostname",
    "read_only",
    "cap_add",
    "cap_drop",
    "stop_signal",
    "stop_grace_period",
    "container_name",
];

pub fn convert(text: &str, inputs: &Inputs<'_>) -> Result<Conversion, String> {
    let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let doc = interpolate_all(doc, inputs.vars)?;
    let services = doc
        .get("services")
        .and_then(Yaml::as_mapping)
        .ok_or("no `services` mapping")?;
    let mut out = Conversion::default();
    for key in doc
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str())
    {
        if !matches!(key, "services" | "version" | "name" | "networks") {
            out.warnings
                .push(format!("top-level `{key}`: no berth equivalent, left out"));
        }
    }
    for (name, svc) in services {
        let name = name.as_str().ok_or("a service name is not a string")?;
        units::check_name(name).map_err(|e| format!("service {name}: {e}"))?;
        let mut s = Service {
            name,
            svc,
            inputs,
            warnings: &mut out.warnings,
        };
        let table = s.spec()?;
        let text = toml::to_string(&table).map_err(|e| format!("service {name}: {e}"))?;
        out.specs.push(ConvertedSpec {
            name: name.to_string(),
            text,
        });
    }
    Ok(out)
}

struct Service<'a, 'w> {
    name: &'a str,
    svc: &'a Yaml,
    inputs: &'a Inputs<'a>,
    warnings: &'w mut Vec<String>,
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::String).collect())
}

/// `KEY = "value"` pairs as a TOML table.
fn string_table(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Table(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

impl<'a> Service<'a, '_> {
    fn warn(&mut self, key: &str, what: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {key}: {what}", self.name));
    }

    fn err(&self, key: &str, what: impl std::fmt::Display) -> String {
        format!("service {}: {key}: {what}", self.name)
    }

    fn get(&self, key: &str) -> Option<&'a Yaml> {
        let svc: &'a Yaml = self.svc;
        svc.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar(v)
                .map(Some)
                .ok_or_else(|| self.err(key, "expected a string")),
        }
    }

    /// A path relative to the Compose file's dir, made absolute.
    fn path(&self, p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            let rel = p.strip_prefix("./").unwrap_or(p);
            let abs = self.inputs.dir.join(rel);
            abs.to_string_lossy().trim_end_matches("/.").to_string()
        }
    }

    /// A command: a list as it is, a string split as a shell would (without running one).
    fn command(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Yaml::String(s)) => shell_words::split(s)
                .map(Some)
                .map_err(|e| self.err(key, e)),
            Some(Yaml::Sequence(items)) => items
                .iter()
                .map(|i| scalar(i).ok_or_else(|| self.err(key, "expected strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(key, "expected a string or a list")),
        }
    }

    fn spec(&mut self) -> Result<Table, String> {
        let mut top = Table::new();
        for key in self
            .svc
            .as_mapping()
            .ok_or_else(|| self.err("", "a service is a mapping"))?
            .keys()
            .filter_map(Yaml::as_str)
            .filter(|k| !MAPPED.contains(k))
            .map(str::to_string)
            .collect::<Vec<_>>()
        {
            self.warn(&key, "no berth equivalent, left out");
        }
        if let Some(c) = self.string("container_name")? {
            if c != self.name {
                self.warn(
                    "container_name",
                    format!("the container is named {:?}, after the service", self.name),
                );
            }
        }
        match (self.string("image")?, self.get("build")) {
            (_, Some(b)) => {
                let build = self.build(b)?;
                top.insert("build".into(), Value::Table(build));
            }
            (Some(image), None) => {
                top.insert("image".into(), image.into());
            }
            (None, None) => return Err(self.err("image", "neither `image` nor `build`")),
        }
        if let Some(c) = self.command("command")? {
            top.insert("command".into(), strings(&c));
        }
        if let Some(e) = self.command("entrypoint")? {
            top.insert("entrypoint".into(), strings(&e));
        }
        let env = self.environment()?;
        if !env.is_empty() {
            top.insert("env".into(), string_table(env));
        }
        for (from, to) in [
            ("working_dir", "workdir"),
            ("user", "user"),
            ("hostname", "hostname"),
            ("stop_signal", "stop_signal"),
            ("stop_grace_period", "stop_timeout"),
        ] {
            if let Some(v) = self.string(from)? {
                top.insert(to.into(), v.into());
            }
        }
        if let Some(Yaml::Bool(true)) = self.get("read_only") {
            top.insert("readonly_rootfs".into(), true.into());
        }
        for key in ["cap_add", "cap_drop"] {
            if let Some(caps) = self.command(key)? {
                top.insert(key.into(), strings(&caps));
            }
        }
        if let Some(r) = self.restart()? {
            top.insert("restart".into(), Value::Table(r));
        }
        let resources = self.resources()?;
        if !resources.is_empty() {
            top.insert("resources".into(), Value::Table(resources));
        }
        let network = self.network()?;
        if !network.is_empty() {
            top.insert("network".into(), Value::Table(network));
        }
        let mounts = self.mounts()?;
        if !mounts.is_empty() {
            top.insert("mounts".into(), Value::Array(mounts));
        }
        if let Some(h) = self.health()? {
            top.insert("health".into(), Value::Table(h));
        }
        if let Some(d) = self.depends_on()? {
            top.insert("depends_on".into(), d);
        }
        Ok(top)
    }

    fn build(&mut self, b: &Yaml) -> Result<Table, String> {
        let mut t = Table::new();
        let (context, file, args) = match b {
            Yaml::String(c) => (c.clone(), None, None),
            Yaml::Mapping(_) => (
                b.get("context")
                    .and_then(scalar)
                    .unwrap_or_else(|| ".".into()),
                b.get("dockerfile").and_then(scalar),
                b.get("args"),
            ),
            _ => return Err(self.err("build", "expected a path or a mapping")),
        };
        t.insert("context".into(), self.path(&context).into());
        if let Some(f) = file {
            t.insert("file".into(), f.into());
        }
        if let Some(a) = args {
            let pairs = self.pairs("build.args", a)?;
            if !pairs.is_empty() {
                t.insert("args".into(), string_table(pairs));
            }
        }
        if self.string("image")?.is_some() {
            self.warn(
                "image",
                "with `build`, the image is built (the name is not used)",
            );
        }
        Ok(t)
    }

    /// `KEY: value` mappings or `KEY=value` lists; a name without a value takes the
    /// variable of that name, and is left out (as Compose does) when it is not set.
    fn pairs(&mut self, key: &str, v: &Yaml) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        match v {
            Yaml::Mapping(m) => {
                for (k, val) in m {
                    let k = scalar(k).ok_or_else(|| self.err(key, "a key is not a string"))?;
                    match val {
                        Yaml::Null => match (self.inputs.vars)(&k) {
                            Some(v) => out.push((k, v)),
                            None => self.warn(key, format!("{k} is not set here: left out")),
                        },
                        v => out.push((
                            k,
                            scalar(v).ok_or_else(|| self.err(key, "values are scalars"))?,
                        )),
                    }
                }
            }
            Yaml::Sequence(items) => {
                for i in items {
                    let s = scalar(i).ok_or_else(|| self.err(key, "expected KEY=value"))?;
                    match s.split_once('=') {
                        Some((k, v)) => out.push((k.to_string(), v.to_string())),
                        None => match (self.inputs.vars)(&s) {
                            Some(v) => out.push((s, v)),
                            None => self.warn(key, format!("{s} is not set here: left out")),
                        },
                    }
                }
            }
            _ => return Err(self.err(key, "expected a mapping or a list")),
        }
        Ok(out)
    }

    /// env_file entries first, `environment` over them.
    fn environment(&mut self) -> Result<BTreeMap<String, String>, String> {
        let mut env = BTreeMap::new();
        let files: Vec<String> = match self.get("env_file") {
            None => vec![],
            Some(Yaml::Sequence(items)) => items
                .iter()
                .filter_map(|i| scalar(i).or_else(|| i.get("path").and_then(scalar)))
                .collect(),
            Some(v) => scalar(v).into_iter().collect(),
        };
        for f in files {
            let path = self.path(&f);
            let text = (self.inputs.read)(Path::new(&path))
                .map_err(|e| self.err("env_file", format!("{path}: {e}")))?;
            for (k, v) in env_file(&text) {
                env.insert(k, v);
            }
        }
        if let Some(v) = self.get("environment").cloned() {
            for (k, v) in self.pairs("environment", &v)? {
                env.insert(k, v);
            }
        }
        Ok(env)
    }

    fn restart(&mut self) -> Result<Option<Table>, String> {
        let Some(r) = self.string("restart")? else {
            return Ok(None);
        };
        let mut t = Table::new();
        let (policy, retries) = match r.split_once(':') {
            Some(("on-failure", n)) => (
                "on-failure",
                Some(n.parse::<i64>().map_err(|_| self.err("restart", &r))?),
            ),
            _ => match r.as_str() {
                "no" => ("never", None),
                "always" => ("always", None),
                "on-failure" => ("on-failure", None),
                "unless-stopped" => {
                    self.warn(
                        "restart",
                        "unless-stopped is `always` (a `berth stop` sticks until `berth start`)",
                    );
                    ("always", None)
                }
                _ => return Err(self.err("restart", format!("unknown policy {r:?}"))),
            },
        };
        t.insert("policy".into(), policy.into());
        if let Some(n) = retries {
            t.insert("max_retries".into(), n.into());
        }
        Ok(Some(t))
    }

    fn resources(&mut self) -> Result<Table, String> {
        let mut t = Table::new();
        let limits = self
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("limits"));
        let memory = self
            .get("mem_limit")
            .or_else(|| limits.and_then(|l| l.get("memory")))
            .and_then(scalar);
        if let Some(m) = memory {
            // Compose's units are base 1024, as berth's.
            let bytes = units::parse_size(&m).map_err(|e| self.err("mem_limit", e))?;
            t.insert("memory".into(), size_text(bytes).into());
        }
        let cpus = self
            .get("cpus")
            .or_else(|| limits.and_then(|l| l.get("cpus")))
            .and_then(scalar);
        if let Some(c) = cpus {
            let n: f64 = c.parse().map_err(|_| self.err("cpus", &c))?;
            t.insert("cpus".into(), n.into());
        }
        let pids = self
            .get("pids_limit")
            .or_else(|| limits.and_then(|l| l.get("pids")))
            .and_then(scalar);
        if let Some(p) = pids {
            let n: i64 = p.parse().map_err(|_| self.err("pids_limit", &p))?;
            if n > 0 {
                t.insert("pids".into(), n.into());
            }
        }
        if let Some(c) = self.string("cpuset")? {
            t.insert("cpuset".into(), c.into());
        }
        if let Some(d) = self.get("deploy") {
            for k in d
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.as_str())
            {
                if k != "resources" {
                    self.warn(&format!("deploy.{k}"), "no berth equivalent, left out");
                }
            }
            if d.get("resources")
                .and_then(|r| r.get("reservations"))
                .is_some()
            {
                self.warn(
                    "deploy.resources.reservations",
                    "no berth equivalent, left out",
                );
            }
        }
        Ok(t)
    }

    fn network(&mut self) -> Result<Table, String> {
        let mut t = Table::new();
        match self.string("network_mode")?.as_deref() {
            None | Some("bridge") => {}
            Some(m @ ("host" | "none")) => {
                t.insert("mode".into(), m.into());
            }
            Some(other) => self.warn(
                "network_mode",
                format!("{other:?} has no berth equivalent: the berth bridge"),
            ),
        }
        match self.get("networks") {
            Some(Yaml::Mapping(nets)) => {
                let nets: Vec<(String, Yaml)> = nets
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                    .collect();
                if nets.len() > 1 {
                    self.warn("networks", "berth has one bridge: every network is it");
                }
                if let Some(ip) = nets
                    .iter()
                    .find_map(|(_, v)| v.get("ipv4_address").and_then(scalar))
                {
                    t.insert("ip".into(), ip.into());
                }
            }
            Some(Yaml::Sequence(nets)) if nets.len() > 1 => {
                self.warn("networks", "berth has one bridge: every network is it")
            }
            _ => {}
        }
        if let Some(ports) = self.get("ports").cloned() {
            let list = ports
                .as_sequence()
                .ok_or_else(|| self.err("ports", "expected a list"))?;
            let mut out = Vec::new();
            for p in list {
                if let Some(p) = self.port(p)? {
                    out.push(Value::String(p));
                }
            }
            if !out.is_empty() {
                t.insert("ports".into(), Value::Array(out));
            }
        }
        Ok(t)
    }

    /// A short (`[IP:]HOST:CONTAINER[/proto]`) or long (`target`, `published`, ...) port.
    fn port(&mut self, p: &Yaml) -> Result<Option<String>, String> {
        let (ip, host, container, proto) = match p {
            Yaml::Mapping(_) => (
                p.get("host_ip").and_then(scalar),
                p.get("published").and_then(scalar),
                p.get("target")
                    .and_then(scalar)
                    .ok_or_else(|| self.err("ports", "a long port needs `target`"))?,
                p.get("protocol").and_then(scalar),
            ),
            v => {
                let s = scalar(v).ok_or_else(|| self.err("ports", "expected a string"))?;
                let (rest, proto) = match s.split_once('/') {
                    Some((r, pr)) => (r.to_string(), Some(pr.to_string())),
                    None => (s.clone(), None),
                };
                let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
                match parts.as_slice() {
                    [c] => (None, None, c.to_string(), proto),
                    [c, h] => (None, Some(h.to_string()), c.to_string(), proto),
                    [c, h, ip] => (
                        Some(ip.trim_matches(|c| c == '[' || c == ']').to_string()),
                        Some(h.to_string()),
                        c.to_string(),
                        proto,
                    ),
                    _ => return Err(self.err("ports", &s)),
                }
            }
        };
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            self.warn(
                "ports",
                format!("{container} without a host port: berth publishes only fixed host ports, left out"),
            );
            return Ok(None);
        };
        let mut s = match ip.filter(|i| i != "0.0.0.0") {
            Some(ip) => format!("{ip}:{host}:{container}"),
            None => format!("{host}:{container}"),
        };
        if let Some(pr) = proto {
            s.push('/');
            s.push_str(&pr);
        }
        Ok(Some(s))
    }

    /// Bind mounts; named volumes and tmpfs are warned about and left out.
    fn mounts(&mut self) -> Result<Vec<Value>, String> {
        let Some(list) = self.get("volumes").cloned() else {
            return Ok(vec![]);
        };
        let list = list
            .as_sequence()
            .ok_or_else(|| self.err("volumes", "expected a list"))?;
        let mut out = Vec::new();
        for v in list {
            let (source, target, readonly) = match v {
                Yaml::Mapping(_) => {
                    let kind = v.get("type").and_then(scalar).unwrap_or_default();
                    let source = v.get("source").and_then(scalar).unwrap_or_default();
                    let target = v.get("target").and_then(scalar).unwrap_or_default();
                    if kind != "bind" {
                        self.warn(
                            "volumes",
                            format!("{kind} {source} at {target}: only bind mounts map, left out"),
                        );
                        continue;
                    }
                    let ro = matches!(v.get("read_only"), Some(Yaml::Bool(true)));
                    (source, target, ro)
                }
                v => {
                    let s = scalar(v).ok_or_else(|| self.err("volumes", "expected a string"))?;
                    let parts: Vec<&str> = s.split(':').collect();
                    let (src, dst, mode) = match parts.as_slice() {
                        [d] => ("", *d, ""),
                        [s, d] => (*s, *d, ""),
                        [s, d, m] => (*s, *d, *m),
                        _ => return Err(self.err("volumes", &s)),
                    };
                    if !(src.starts_with('/') || src.starts_with('.') || src.starts_with('~')) {
                        self.warn(
                            "volumes",
                            format!("{s}: named and anonymous volumes have no berth equivalent (give a host dir), left out"),
                        );
                        continue;
                    }
                    let ro = mode.split(',').any(|m| m == "ro");
                    (src.to_string(), dst.to_string(), ro)
                }
            };
            if source.starts_with('~') {
                self.warn("volumes", format!("{source}: ~ is not expanded, left out"));
                continue;
            }
            let mut t = Table::new();
            t.insert("source".into(), self.path(&source).into());
            t.insert("target".into(), target.into());
            if readonly {
                t.insert("readonly".into(), true.into());
            }
            out.push(Value::Table(t));
        }
        Ok(out)
    }

    fn health(&mut self) -> Result<Option<Table>, String> {
        let Some(h) = self.get("healthcheck").cloned() else {
            return Ok(None);
        };
        if matches!(h.get("disable"), Some(Yaml::Bool(true))) {
            return Ok(None);
        }
        let command = match h.get("test") {
            Some(Yaml::String(s)) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Some(Yaml::Sequence(items)) => {
                let words: Vec<String> = items.iter().filter_map(scalar).collect();
                match words.split_first() {
                    Some((first, rest)) if first == "CMD" => rest.to_vec(),
                    Some((first, rest)) if first == "CMD-SHELL" => {
                        vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
                    }
                    Some((first, _)) if first == "NONE" => return Ok(None),
                    _ => return Err(self.err("healthcheck.test", "expected CMD or CMD-SHELL")),
                }
            }
            _ => return Err(self.err("healthcheck", "needs `test`")),
        };
        let mut t = Table::new();
        t.insert("exec".into(), strings(&command));
        for key in ["interval", "timeout", "start_period"] {
            if let Some(d) = h.get(key).and_then(scalar) {
                t.insert(key.into(), d.into());
            }
        }
        if let Some(r) = h.get("retries").and_then(Yaml::as_i64) {
            t.insert("retries".into(), r.into());
        }
        // Compose only reports health; so does this probe.
        t.insert("on_unhealthy".into(), "none".into());
        Ok(Some(t))
    }

    fn depends_on(&mut self) -> Result<Option<Value>, String> {
        match self.get("depends_on").cloned() {
            None => Ok(None),
            Some(Yaml::Sequence(items)) => {
                let names: Vec<String> = items.iter().filter_map(scalar).collect();
                Ok(Some(strings(&names)))
            }
            Some(Yaml::Mapping(m)) => {
                let mut t = Table::new();
                for (k, v) in &m {
                    let k = scalar(k).ok_or_else(|| self.err("depends_on", "names"))?;
                    let cond = match v.get("condition").and_then(scalar).as_deref() {
                        None | Some("service_started") => "started",
                        Some("service_healthy") => "healthy",
                        Some("service_completed_successfully") => "completed",
                        Some(other) => {
                            return Err(self.err("depends_on", format!("condition {other:?}")))
                        }
                    };
                    t.insert(k, cond.into());
                }
                Ok(Some(Value::Table(t)))
            }
            Some(_) => Err(self.err("depends_on", "expected a list or a mapping")),
        }
    }
}

/// `bytes` in the largest of berth's units that holds it exactly (`512M`), else in bytes.
fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `KEY=value` lines of an env_file (`#` comments, blank lines and `export ` skipped, one
/// level of matching quotes removed).
pub fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = [('"', '"'), ('\'', '\'')]
                .iter()
                .find_map(|(a, b)| v.strip_prefix(*a).and_then(|v| v.strip_suffix(*b)))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Compose's interpolation in every string: `$$` is `$`; `${VAR}`, `$VAR`, `${VAR:-default}`
/// (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` / `${VAR?message}` (an error).
pub fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("{s:?}: unclosed ${{"))?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            let cut = inner.find([':', '-', '?']).unwrap_or(inner.len());
            let (name, op) = inner.split_at(cut);
            let value = vars(name);
            let set = value.is_some();
            let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
            let v = match op {
                "" => value.unwrap_or_default(),
                _ if op.starts_with(":-") => {
                    if nonempty {
                        value.unwrap_or_default()
                    } else {
                        op[2..].to_string()
                    }
                }
                _ if op.starts_with('-') => {
                    if set {
                        value.unwrap_or_default()
                    } else {
                        op[1..].to_string()
                    }
                }
                _ if op.starts_with(":?") || op.starts_with('?') => {
                    let ok = if op.starts_with(':') { nonempty } else { set };
                    if !ok {
                        let msg = op.trim_start_matches(':').trim_start_matches('?');
                        return Err(format!("{name} is not set: {msg}"));
                    }
                    value.unwrap_or_default()
                }
                _ => return Err(format!("{s:?}: unknown form ${{{inner}}}")),
            };
            out.push_str(&v);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(&vars(&rest[..end]).unwrap_or_default());
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(v: Yaml, vars: &dyn Fn(&str) -> Option<String>) -> Result<Yaml, String> {
    Ok(match v {
        Yaml::String(s) => Yaml::String(interpolate(&s, vars)?),
        Yaml::Sequence(items) => Yaml::Sequence(
            items
                .into_iter()
                .map(|i| interpolate_all(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => Yaml::Mapping(
            m.into_iter()
                .map(|(k, v)| Ok((k, interpolate_all(v, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.4".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        for (s, want) in [
            ("app:${TAG}", "app:1.4"),
            ("app:$TAG-x", "app:1.4-x"),
            ("$$HOME", "$HOME"),
            ("${NOPE:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${NOPE-d}", "d"),
            ("${NOPE}", ""),
            ("cost $", "cost $"),
        ] {
            assert_eq!(interpolate(s, &vars).unwrap(), want, "{s}");
        }
        assert!(interpolate("${NOPE:?needed}", &vars)
            .unwrap_err()
            .contains("needed"));
        assert!(interpolate("${TAG", &vars).is_err());
    }

    #[test]
    fn env_files() {
        let got = env_file("# c\nA=1\n\nexport B = \"two words\"\nC='x'\nnot a pair\n");
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
    }

    fn convert_text(yaml: &str) -> Conversion {
        let read = |p: &Path| -> Result<String, String> {
            assert_eq!(p, Path::new("/app/web.env"));
            Ok("FROM_FILE=1\nDEBUG=0\n".into())
        };
        convert(
            yaml,
            &Inputs {
                dir: Path::new("/app"),
                vars: &vars,
                read: &read,
            },
        )
        .unwrap()
    }

    fn spec_of(c: &Conversion, name: &str) -> toml::Table {
        let s = c.specs.iter().find(|s| s.name == name).unwrap();
        toml::from_str(&s.text).unwrap()
    }

    #[test]
    fn a_service_maps_key_by_key() {
        let c = convert_text(
            r#"
services:
  web:
    image: "registry.example/web:${TAG}"
    command: nginx -g "daemon off;"
    env_file: web.env
    environment:
      DEBUG: "1"
    ports: ["8080:80", "127.0.0.1:9090:90/udp", "3000", {target: 81, published: 8081}]
    volumes: ["./site:/usr/share/nginx/html:ro", "data:/var/lib/x", "/logs:/logs"]
    restart: on-failure:3
    mem_limit: 512m
    cpus: 0.5
    pids_limit: 64
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- localhost || exit 1"]
      interval: 30s
      retries: 5
    depends_on:
      db: {condition: service_healthy}
    labels: {a: b}
    networks:
      front: {ipv4_address: 10.89.0.20}
"#,
        );
        let web = spec_of(&c, "web");
        let want: toml::Table = toml::from_str(
            r#"
image = "registry.example/web:1.4"
command = ["nginx", "-g", "daemon off;"]
env = { DEBUG = "1", FROM_FILE = "1" }
depends_on = { db = "healthy" }
[restart]
policy = "on-failure"
max_retries = 3
[resources]
memory = "512M"
cpus = 0.5
pids = 64
[network]
ip = "10.89.0.20"
ports = ["8080:80", "127.0.0.1:9090:90/udp", "8081:81"]
[[mounts]]
source = "/app/site"
target = "/usr/share/nginx/html"
readonly = true
[[mounts]]
source = "/logs"
target = "/logs"
[health]
exec = ["/bin/sh", "-c", "wget -q -O- localhost || exit 1"]
interval = "30s"
retries = 5
on_unhealthy = "none"
"#,
        )
        .unwrap();
        assert_eq!(web, want);
        let joined = c.warnings.join("\n");
        for w in ["web: labels", "3000 without a host port", "data:/var/lib/x"] {
            assert!(joined.contains(w), "{w} in {joined}");
        }
    }

    #[test]
    fn restart_and_network_modes_and_depends_lists() {
        let c = convert_text(
            "services:\n  a:\n    image: x\n    restart: unless-stopped\n    network_mode: host\n    depends_on: [b]\n    command: [\"sleep\", \"1\"]\n  b:\n    build: {context: ./b, dockerfile: Containerfile, args: [V=1]}\n    restart: \"no\"\n",
        );
        let a = spec_of(&c, "a");
        assert_eq!(a["restart"]["policy"].as_str(), Some("always"));
        assert_eq!(a["network"]["mode"].as_str(), Some("host"));
        assert_eq!(a["depends_on"].as_array().unwrap().len(), 1);
        let b = spec_of(&c, "b");
        assert_eq!(b["build"]["context"].as_str(), Some("/app/b"));
        assert_eq!(b["build"]["args"]["V"].as_str(), Some("1"));
        assert_eq!(b["restart"]["policy"].as_str(), Some("never"));
        assert!(c.warnings.iter().any(|w| w.contains("unless-stopped")));
    }

    #[test]
    fn errors_name_the_service_and_key() {
        let read = |_: &Path| -> Result<String, String> { Err("no such file".into()) };
        let inputs = Inputs {
            dir: Path::new("/app"),
            vars: &vars,
            read: &read,
        };
        for (yaml, says) in [
            ("services:\n  a:\n    command: x\n", "service a: image"),
            (
                "services:\n  a:\n    image: x\n    restart: sometimes\n",
                "unknown policy",
            ),
            (
                "services:\n  a:\n    image: x\n    env_file: e\n",
                "/app/e: no such file",
            ),
            (
                "services:\n  \"bad name\":\n    image: x\n",
                "invalid container name",
            ),
            ("nothing: here\n", "no `services`"),
        ] {
            let e = convert(yaml, &inputs).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
