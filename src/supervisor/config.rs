//! The supervisor config file (`configs/berth.toml`): every key optional, unknown keys refused
//! with their line and column.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::cgroups::DeviceControl;
use crate::image::UnpackLimits;
use crate::init::{CgroupMode, InitConfig, Power};
use crate::network::NetworkConfig;
use crate::runtime::container::LogLimits;
use crate::spec::schema::Size;
use crate::spec::units;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    /// Every problem of a file, in order, one per line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

/// The file as written. Its doc comments and `schemars` attributes are the published schema
/// (`docs/config.schema.json`, see [`config_schema`]); the values are checked in
/// [`Config::parse`].
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "berth supervisor config")]
struct RawConfig {
    /// The spec dir watched (default /etc/berth/specs).
    specs: Option<PathBuf>,
    /// The state dir: images, containers, leases (default /var/lib/berth).
    root: Option<PathBuf>,
    /// The control socket (default /run/berth/berth.sock).
    socket: Option<PathBuf>,
    /// Where `<name>.json` status files go (default: `status` beside the socket).
    status_dir: Option<PathBuf>,
    /// The cgroup every container's cgroup is made under (default berth).
    cgroup_parent: Option<String>,
    /// On cgroup v2, whether a kernel that cannot load the BPF device program makes starts
    /// fail (`required`, the default) or only costs a warning (`best-effort`).
    #[schemars(with = "Option<String>", extend("enum" = ["required", "best-effort"]))]
    device_control: Option<Spanned<String>>,
    network: Option<RawNetwork>,
    logs: Option<RawLogs>,
    metrics: Option<RawMetrics>,
    init: Option<RawInit>,
    images: Option<RawImages>,
}

/// Bounds on unpacking image layers (registry pulls, imports, pulls by a spec).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Images")]
struct RawImages {
    /// Free space kept on the store's filesystem (default 256M).
    #[schemars(with = "Option<Size>")]
    reserve: Option<Spanned<toml::Value>>,
    /// A layer may unpack to this many times its compressed size (default 100; 64M always).
    #[schemars(with = "Option<u64>", range(min = 2))]
    max_ratio: Option<Spanned<u64>>,
}

/// Only when berth is the machine's first process.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Init")]
struct RawInit {
    /// The machine's hostname.
    #[schemars(with = "Option<String>")]
    hostname: Option<Spanned<String>>,
    /// Kernel modules loaded with their dependencies.
    #[schemars(with = "Option<Vec<String>>")]
    modules: Option<Vec<Spanned<String>>>,
    /// `v2` (the default): cgroup2 at /sys/fs/cgroup; `v1`: a hierarchy per controller.
    #[schemars(with = "Option<String>", extend("enum" = ["v2", "v1"]))]
    cgroup: Option<Spanned<String>>,
    /// What SIGTERM does (default poweroff).
    #[schemars(with = "Option<String>", extend("enum" = ["poweroff", "reboot", "halt"]))]
    shutdown: Option<Spanned<String>>,
}

/// Prometheus metrics (text format at http://LISTEN/metrics); off unless set.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Metrics")]
struct RawMetrics {
    /// address:port, such as `127.0.0.1:9462`.
    #[schemars(with = "Option<String>")]
    listen: Option<Spanned<String>>,
}

/// The bridge containers in `mode = "bridge"` are attached to.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
struct RawNetwork {
    /// The bridge's name, at most 15 characters (default berth0).
    #[schemars(with = "Option<String>", length(min = 1, max = 15))]
    bridge: Option<Spanned<String>>,
    /// The bridge's subnet (default 10.89.0.0/24); the bridge takes the first address.
    #[schemars(with = "Option<String>")]
    subnet: Option<Spanned<String>>,
    /// NAT for traffic leaving the subnet (default true).
    masquerade: Option<bool>,
    /// Default 1500.
    #[schemars(with = "Option<u32>", range(min = 576, max = 65535))]
    mtu: Option<Spanned<u32>>,
    /// Name servers for containers' /etc/resolv.conf; unset, the host's file is used.
    #[schemars(with = "Option<Vec<String>>")]
    dns: Option<Spanned<Vec<String>>>,
    /// Search domains for containers' /etc/resolv.conf.
    #[schemars(with = "Option<Vec<String>>")]
    dns_search: Option<Spanned<Vec<String>>>,
}

/// Every container's log files.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Logs")]
struct RawLogs {
    /// A file is rotated at this size (default 10M).
    #[schemars(with = "Option<Size>")]
    max_size: Option<Spanned<toml::Value>>,
    /// Rotated files kept (default 3).
    #[schemars(with = "Option<u32>", range(min = 1))]
    max_files: Option<Spanned<u32>>,
}

/// The supervisor config schema, as committed in `docs/config.schema.json`.
pub fn config_schema() -> serde_json::Value {
    crate::spec::schema::document_for::<RawConfig>()
}

/// The supervisor's settings after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub specs: PathBuf,
    pub root: PathBuf,
    pub socket: PathBuf,
    /// Where `<name>.json` status files go; unset, `status` beside the socket
    /// (/run/berth/status by default).
    pub status_dir: Option<PathBuf>,
    pub cgroup_parent: String,
    /// Whether containers may run where cgroup v2 device control is unavailable.
    pub device_control: DeviceControl,
    pub network: NetworkConfig,
    pub logs: LogLimits,
    /// Where the Prometheus metrics are served (`[metrics] listen`); off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// What berth does as PID 1 (`[init]`).
    pub init: InitConfig,
    /// `[images]`: the free space kept and the compression ratio allowed when unpacking.
    pub unpack_limits: UnpackLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            specs: "/etc/berth/specs".into(),
            root: "/var/lib/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            status_dir: None,
            cgroup_parent: "berth".into(),
            device_control: DeviceControl::Required,
            network: NetworkConfig::default(),
            logs: LogLimits::default(),
            metrics_listen: None,
            init: InitConfig::default(),
            unpack_limits: UnpackLimits::default(),
        }
    }
}

impl Config {
    /// The status dir: the configured one, else `status` beside the socket.
    pub fn status_dir(&self) -> PathBuf {
        self.status_dir.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or(Path::new("/run/berth"))
                .join("status")
        })
    }

    /// Reads `path` (defaults for every missing key).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, col) = units_line_col(text, span.map(|s| s.start).unwrap_or(0));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                col,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let mut c = Config::default();
        // Every problem is reported, not only the first.
        let mut errors: Vec<ConfigError> = Vec::new();
        macro_rules! ok {
            ($e:expr) => {
                match $e {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            };
        }
        if let Some(v) = raw.specs {
            c.specs = v;
        }
        if let Some(v) = raw.root {
            c.root = v;
        }
        if let Some(v) = raw.socket {
            c.socket = v;
        }
        if let Some(v) = raw.status_dir {
            c.status_dir = Some(v);
        }
        if let Some(v) = raw.cgroup_parent {
            c.cgroup_parent = v;
        }
        if let Some(d) = raw.device_control {
            c.device_control = match d.get_ref().as_str() {
                "required" => DeviceControl::Required,
                "best-effort" => DeviceControl::BestEffort,
                other => {
                    errors.push(invalid(
                        Some(d.span()),
                        format!(
                            "device_control: {other:?} is not one of \"required\", \"best-effort\""
                        ),
                    ));
                    c.device_control
                }
            };
        }
        if let Some(listen) = raw.metrics.and_then(|m| m.listen) {
            c.metrics_listen = ok!(listen.get_ref().parse().map_err(|_| {
                invalid(
                    Some(listen.span()),
                    format!(
                        "metrics.listen: {:?} is not an address:port such as \"127.0.0.1:9462\"",
                        listen.get_ref()
                    ),
                )
            }));
        }
        if let Some(im) = raw.images {
            if let Some(r) = im.reserve {
                if let Some(v) = ok!(size_value(r.get_ref(), 0, "1G")
                    .map_err(|m| invalid(Some(r.span()), format!("images.reserve: {m}"))))
                {
                    c.unpack_limits.reserve = v;
                }
            }
            if let Some(r) = im.max_ratio {
                if *r.get_ref() < 2 {
                    errors.push(invalid(
                        Some(r.span()),
                        "images.max_ratio: must be at least 2".into(),
                    ));
                } else {
                    c.unpack_limits.max_ratio = r.into_inner();
                }
            }
        }
        if let Some(i) = raw.init {
            let init = &mut c.init;
            if let Some(h) = i.hostname {
                if ok!(units::check_hostname(h.get_ref())
                    .map_err(|m| invalid(Some(h.span()), format!("init.hostname: {m}"))))
                .is_some()
                {
                    init.hostname = Some(h.into_inner());
                }
            }
            for m in i.modules.unwrap_or_default() {
                let ok = !m.get_ref().is_empty()
                    && m.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    errors.push(invalid(
                        Some(m.span()),
                        format!("init.modules: {:?} is not a module name", m.get_ref()),
                    ));
                    continue;
                }
                init.modules.push(m.into_inner());
            }
            if let Some(g) = i.cgroup {
                init.cgroup = match g.get_ref().as_str() {
                    "v2" => CgroupMode::V2,
                    "v1" => CgroupMode::V1,
                    other => {
                        errors.push(invalid(
                            Some(g.span()),
                            format!("init.cgroup: {other:?} is not one of \"v2\", \"v1\""),
                        ));
                        init.cgroup
                    }
                };
            }
            if let Some(s) = i.shutdown {
                if let Some(p) = ok!(Power::parse(s.get_ref()).ok_or_else(|| {
                    invalid(
                        Some(s.span()),
                        format!(
                            "init.shutdown: {:?} is not one of \"poweroff\", \"reboot\", \"halt\"",
                            s.get_ref()
                        ),
                    )
                })) {
                    init.shutdown = p;
                }
            }
        }
        if let Some(n) = raw.network {
            let net = &mut c.network;
            if let Some(b) = n.bridge {
                let span = b.span();
                let b = b.into_inner();
                if b.is_empty() || b.len() > crate::network::IFNAME_MAX {
                    errors.push(invalid(
                        Some(span),
                        format!(
                            "network.bridge: {b:?} must be 1 to {} characters",
                            crate::network::IFNAME_MAX
                        ),
                    ));
                } else {
                    net.bridge = b;
                }
            }
            if let Some(s) = n.subnet {
                if let Some(v) = ok!(parse_subnet(s.get_ref())
                    .map_err(|m| invalid(Some(s.span()), format!("network.subnet: {m}"))))
                {
                    net.subnet = v;
                }
            }
            if let Some(m) = n.masquerade {
                net.masquerade = m;
            }
            if let Some(m) = n.mtu {
                if !(576..=65535).contains(m.get_ref()) {
                    errors.push(invalid(
                        Some(m.span()),
                        format!("network.mtu: {} must be between 576 and 65535", m.get_ref()),
                    ));
                } else {
                    net.mtu = m.into_inner();
                }
            }
            if let Some(d) = n.dns {
                let span = d.span();
                if let Some(v) = ok!(d
                    .into_inner()
                    .iter()
                    .map(|a| {
                        a.parse::<IpAddr>().map_err(|_| {
                            invalid(
                                Some(span.clone()),
                                format!("network.dns: {a:?} is not an IP address"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>())
                {
                    net.dns = v;
                }
            }
            if let Some(d) = n.dns_search {
                let span = d.span();
                let domains = d.into_inner();
                if let Some(bad) = domains
                    .iter()
                    .find(|d| d.is_empty() || d.len() > 253 || d.contains(char::is_whitespace))
                {
                    errors.push(invalid(
                        Some(span),
                        format!("network.dns_search: {bad:?} is not a domain name"),
                    ));
                } else {
                    net.dns_search = domains;
                }
            }
        }
        if let Some(l) = raw.logs {
            if let Some(v) = l.max_size {
                if let Some(n) = ok!(size_value(v.get_ref(), 1, "10M")
                    .map_err(|m| invalid(Some(v.span()), format!("logs.max_size: {m}"))))
                {
                    c.logs.max_size = n;
                }
            }
            if let Some(v) = l.max_files {
                if *v.get_ref() == 0 {
                    errors.push(invalid(
                        Some(v.span()),
                        "logs.max_files: must be at least 1".into(),
                    ));
                } else {
                    c.logs.max_files = v.into_inner();
                }
            }
        }
        // In the file's order.
        errors.sort_by_key(|e| match e {
            ConfigError::Invalid { line, col, .. } => (*line, *col),
            _ => (0, 0),
        });
        match errors.len() {
            0 => Ok(c),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }
}

/// A size key's value: a string such as `"10M"`, or a plain number of bytes of at least
/// `min`; `example` is shown when it is neither.
fn size_value(v: &toml::Value, min: i64, example: &str) -> Result<u64, String> {
    match v {
        toml::Value::String(s) => units::parse_size(s),
        toml::Value::Integer(i) if *i >= min => Ok(*i as u64),
        other => Err(format!(
            "expected a size such as \"{example}\", got {other}"
        )),
    }
}

fn units_line_col(text: &str, offset: usize) -> (usize, usize) {
    crate::spec::line_col(text, offset)
}

/// `10.89.0.0/24` -> (10.89.0.0, 24), the address masked to the prefix.
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| format!("prefix {prefix:?} must be 8..=30"))?;
    let mask = u32::MAX << (32 - prefix as u32);
    Ok((Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let p = Path::new("/etc/berth/berth.toml");
        assert_eq!(Config::parse(p, "").unwrap(), Config::default());
        let c = Config::parse(
            p,
            "specs = \"/s\"\nroot = \"/r\"\n[network]\nsubnet = \"10.1.2.3/16\"\n[logs]\nmax_size = \"1M\"\nmax_files = 5\n",
        )
        .unwrap();
        assert_eq!(c.specs, PathBuf::from("/s"));
        assert_eq!(c.network.subnet, (Ipv4Addr::new(10, 1, 0, 0), 16));
        assert!(c.network.masquerade);
        assert_eq!(c.device_control, DeviceControl::Required);
        let best = Config::parse(p, "device_control = \"best-effort\"\n").unwrap();
        assert_eq!(best.device_control, DeviceControl::BestEffort);
        let m = Config::parse(p, "[metrics]\nlisten = \"127.0.0.1:9462\"\n").unwrap();
        assert_eq!(m.metrics_listen, Some("127.0.0.1:9462".parse().unwrap()));
        assert_eq!(c.metrics_listen, None, "off unless set");
        let i = Config::parse(
            p,
            "[init]\nhostname = \"edge-1\"\nmodules = [\"overlay\", \"nf-tables\"]\ncgroup = \"v1\"\nshutdown = \"reboot\"\n",
        )
        .unwrap()
        .init;
        assert_eq!(
            i,
            InitConfig {
                hostname: Some("edge-1".into()),
                modules: vec!["overlay".into(), "nf-tables".into()],
                cgroup: CgroupMode::V1,
                shutdown: Power::Reboot,
            }
        );
        assert_eq!(c.init, InitConfig::default());
        let im = Config::parse(p, "[images]\nreserve = \"2G\"\nmax_ratio = 50\n").unwrap();
        assert_eq!(
            im.unpack_limits,
            UnpackLimits {
                reserve: 2 << 30,
                max_ratio: 50
            }
        );
        let n = Config::parse(
            p,
            "[network]\nmasquerade = false\nmtu = 1400\ndns = [\"10.0.0.2\", \"fd00::53\"]\ndns_search = [\"lan\"]\n",
        )
        .unwrap()
        .network;
        assert!(!n.masquerade);
        assert_eq!(n.mtu, 1400);
        assert_eq!(n.dns.len(), 2);
        assert_eq!(n.dns_search, vec!["lan".to_string()]);
        assert_eq!(
            c.logs,
            LogLimits {
                max_size: 1 << 20,
                max_files: 5
            }
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let p = Path::new("/c.toml");
        let e = Config::parse(p, "root = \"/r\"\nrooot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/c.toml:2:1:") && e.contains("rooot"), "{e}");
        let e = Config::parse(p, "[logs]\nmax_files = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/c.toml:2:13: logs.max_files"), "{e}");
        let e = Config::parse(p, "\n[logs]\nmax_size = \"10Q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/c.toml:3:12: logs.max_size"), "{e}");
        for (text, key, line) in [
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"\n",
                "network.bridge",
                2,
            ),
            ("\n[network]\nmtu = 100\n", "network.mtu", 3),
            ("[network]\ndns = [\"8.8.8.x\"]\n", "network.dns", 2),
            ("[network]\nsubnet = \"10.0.0.0\"\n", "network.subnet", 2),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen", 2),
            ("[init]\nmodules = [\"../x\"]\n", "init.modules", 2),
            ("[init]\n\ncgroup = \"v3\"\n", "init.cgroup", 3),
            ("[init]\nshutdown = \"off\"\n", "init.shutdown", 2),
            ("[init]\nhostname = \"-bad\"\n", "init.hostname", 2),
            ("[init]\nrunlevel = 3\n", "runlevel", 2),
            ("[images]\nmax_ratio = 1\n", "images.max_ratio", 2),
            ("[images]\nreserve = \"lots\"\n", "images.reserve", 2),
            (
                "root = \"/r\"\ndevice_control = \"off\"\n",
                "device_control",
                2,
            ),
        ] {
            let e = Config::parse(p, text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/c.toml:{line}:")) && e.contains(key),
                "{text:?}: {e}"
            );
        }
        assert!(parse_subnet("10.0.0.0/33").is_err());
    }

    #[test]
    fn every_error_of_a_file_is_reported() {
        let text = "device_control = \"maybe\"\n[network]\nmtu = 10\nsubnet = \"x\"\n[logs]\nmax_files = 0\n";
        let e = Config::parse(Path::new("/c.toml"), text)
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        for (line, (at, key)) in lines.iter().zip([
            ("/c.toml:1:", "device_control"),
            ("/c.toml:3:", "network.mtu"),
            ("/c.toml:4:", "network.subnet"),
            ("/c.toml:6:", "logs.max_files"),
        ]) {
            assert!(line.starts_with(at) && line.contains(key), "{e}");
        }
    }

    #[test]
    fn the_shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/berth.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.root, PathBuf::from("/var/lib/berth"));
    }
}
