//! Table-driven tests of the spec format: every key, its defaults and its errors, with the line
//! and column each error points at; and spec directory listing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "specs/web.toml";

fn parse(text: &str) -> Result<ValidatedSpec, SpecErrors> {
    parse_str(Path::new(FILE), text, &ValidationContext::default())
}

fn ok(text: &str) -> ValidatedSpec {
    match parse(text) {
        Ok(s) => s,
        Err(e) => panic!("unexpected errors for {text:?}:\n{e}"),
    }
}

fn errs(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(s) => panic!("expected errors for {text:?}, got {s:?}"),
        Err(e) => e.diagnostics,
    }
}

const FULL: &str = r#"image = "registry.example:5000/web:1.4"
command = ["nginx", "-g", "daemon off;"]
entrypoint = ["/entry.sh"]
env = { TZ = "UTC", EMPTY = "" }
workdir = "/srv"
user = "1000:1000"
hostname = "web"
readonly_rootfs = true
stop_signal = "SIGQUIT"
stop_timeout = "20s"
cap_add = ["NET_ADMIN", "CAP_SYS_TIME"]
cap_drop = ["cap_mknod"]

[restart]
policy = "on-failure"
max_retries = 5
backoff = { initial = "250ms", max = "1m", reset_after = "2m" }

[resources]
memory = "256M"
cpus = 0.5
cpu_weight = 100
cpuset = "0"
pids = 128
io = { weight = 200 }

[network]
mode = "bridge"
ip = "10.89.0.10"
ports = ["8080:80/tcp", "5353:53/udp", "5353:53"]
egress = "10mbit"
ingress = "2mbps"

[[mounts]]
source = "/srv/web-data"
target = "/var/www/"
readonly = true

[[mounts]]
source = "/srv/logs"
target = "/var/log/nginx"
"#;

#[test]
fn full_example_parses() {
    let s = ok(FULL);
    let want = ValidatedSpec {
        name: "web".into(),
        file: PathBuf::from(FILE),
        image: "registry.example:5000/web:1.4".into(),
        command: Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
        entrypoint: Some(vec!["/entry.sh".into()]),
        env: BTreeMap::from([
            ("EMPTY".to_string(), String::new()),
            ("TZ".to_string(), "UTC".to_string()),
        ]),
        workdir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        hostname: "web".into(),
        readonly_rootfs: true,
        stop_signal: 3,
        stop_timeout: Duration::from_secs(20),
        cap_add: vec!["NET_ADMIN".into(), "SYS_TIME".into()],
        cap_drop: vec!["MKNOD".into()],
        restart: RestartSpec {
            policy: RestartPolicy::OnFailure,
            max_retries: 5,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            backoff_reset_after: Duration::from_secs(120),
        },
        resources: Resources {
            memory: Some(256 << 20),
            cpus: Some(0.5),
            cpu_weight: Some(100),
            cpuset: Some("0".into()),
            pids: Some(128),
            io_weight: Some(200),
            io_devices: vec![],
        },
        network: NetworkSpec {
            mode: NetworkMode::Bridge,
            ip: Some(Ipv4Addr::new(10, 89, 0, 10)),
            ports: vec![
                PortMapping {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
                PortMapping {
                    host_ip: None,
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                },
                PortMapping {
                    host_ip: None,
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Tcp,
                },
            ],
            egress: Some(10_000_000),
            ingress: Some(16_000_000),
        },
        mounts: vec![
            MountSpec {
                source: "/srv/web-data".into(),
                target: "/var/www".into(),
                readonly: true,
            },
            MountSpec {
                source: "/srv/logs".into(),
                target: "/var/log/nginx".into(),
                readonly: false,
            },
        ],
        health: None,
        depends_on: Default::default(),
        update: Default::default(),
        build: None,
    };
    assert_eq!(s, want);
}

#[test]
fn design_example_parses() {
    // The example of DESIGN.md, verbatim apart from the comments.
    let s = ok(r#"image = "registry.example:5000/web:1.4"
command = ["nginx", "-g", "daemon off;"]
entrypoint = ["/entry.sh"]
env = { TZ = "UTC" }
workdir = "/srv"
user = "1000:1000"
hostname = "web"
readonly_rootfs = false
stop_signal = "SIGTERM"
stop_timeout = "10s"

[restart]
policy = "always"
max_retries = 0
backoff = { initial = "100ms", max = "30s", reset_after = "60s" }

[resources]
memory = "256M"
cpus = 0.5
cpu_weight = 100
cpuset = "0-1"
pids = 128
io = { weight = 100 }

[network]
mode = "bridge"
ip = "10.89.0.10"
ports = ["8080:80/tcp"]
egress = "10mbit"
ingress = "10mbit"

[[mounts]]
source = "/srv/web-data"
target = "/var/www"
readonly = true
"#);
    assert_eq!(s.network.ports.len(), 1);
    assert_eq!(s.mounts.len(), 1);
}

#[test]
fn update_section() {
    let s = ok("image = \"busybox\"\n");
    assert_eq!(s.update, UpdateSpec::default());
    assert_eq!(s.update.healthy_for, Duration::from_secs(10));
    assert!(s.update.rollback);
    let s = ok("image = \"busybox\"\n[network]\nmode = \"none\"\n[update]\norder = \"start-first\"\nhealthy_for = \"30s\"\nrollback = false\n");
    assert_eq!(
        s.update,
        UpdateSpec {
            order: UpdateOrder::StartFirst,
            healthy_for: Duration::from_secs(30),
            rollback: false,
            check: None,
        }
    );
    let s = ok("image = \"registry.example/app:1\"\n[update]\ncheck = \"1h\"\n");
    assert_eq!(s.update.check, Some(Duration::from_secs(3600)));
}

#[test]
fn depends_on_forms() {
    let s = ok("image = \"busybox\"\ndepends_on = [\"db\", \"cache\"]\n");
    assert_eq!(
        s.depends_on.into_iter().collect::<Vec<_>>(),
        [
            ("cache".to_string(), Condition::Started),
            ("db".to_string(), Condition::Started)
        ]
    );
    let s = ok("image = \"busybox\"\ndepends_on = { db = \"healthy\", migrate = \"completed\" }\n");
    assert_eq!(s.depends_on["db"], Condition::Healthy);
    assert_eq!(s.depends_on["migrate"], Condition::Completed);
    assert!(ok("image = \"busybox\"\n").depends_on.is_empty());
}

#[test]
fn health_probes() {
    let s = ok("image = \"busybox\"\n[health]\nhttp = { port = 8080, path = \"/healthz\" }\ninterval = \"2s\"\ntimeout = \"1s\"\nretries = 5\nstart_period = \"30s\"\non_unhealthy = \"stop\"\n");
    assert_eq!(
        s.health,
        Some(HealthSpec {
            probe: Probe::Http {
                port: 8080,
                path: "/healthz".into()
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retries: 5,
            start_period: Duration::from_secs(30),
            on_unhealthy: OnUnhealthy::Stop,
        })
    );
    let s = ok("image = \"busybox\"\n[health]\ntcp = { port = 5432 }\n");
    let h = s.health.unwrap();
    assert_eq!(h.probe, Probe::Tcp { port: 5432 });
    assert_eq!(
        (
            h.interval,
            h.timeout,
            h.retries,
            h.start_period,
            h.on_unhealthy
        ),
        (
            Duration::from_secs(10),
            Duration::from_secs(5),
            3,
            Duration::ZERO,
            OnUnhealthy::Restart
        )
    );
    let s = ok("image = \"busybox\"\n[health]\nexec = [\"pg_isready\", \"-q\"]\n");
    assert_eq!(
        s.health.unwrap().probe,
        Probe::Exec {
            command: vec!["pg_isready".into(), "-q".into()]
        }
    );
    let s = ok("image = \"busybox\"\n[health]\nhttp = { port = 80 }\n");
    assert_eq!(
        s.health.unwrap().probe,
        Probe::Http {
            port: 80,
            path: "/".into()
        }
    );
    assert_eq!(ok("image = \"busybox\"\n").health, None);
}

#[test]
fn defaults() {
    let s = ok("image = \"busybox\"\n");
    assert_eq!(s.name, "web");
    assert_eq!(s.hostname, "web");
    assert_eq!(s.command, None);
    assert_eq!(s.entrypoint, None);
    assert!(s.env.is_empty());
    assert_eq!(s.workdir, None);
    assert_eq!(s.user, None);
    assert!(!s.readonly_rootfs);
    assert_eq!(s.stop_signal, 15);
    assert_eq!(s.stop_timeout, Duration::from_secs(10));
    assert!(s.cap_add.is_empty() && s.cap_drop.is_empty());
    assert_eq!(
        s.restart,
        RestartSpec {
            policy: RestartPolicy::Always,
            max_retries: 0,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
        }
    );
    assert_eq!(s.resources, Resources::default());
    assert_eq!(
        s.network,
        NetworkSpec {
            mode: NetworkMode::Bridge,
            ip: None,
            ports: vec![],
            egress: None,
            ingress: None,
        }
    );
    assert!(s.mounts.is_empty());
}

#[test]
fn valid_values() {
    // (spec text after `image`, or a replacement `image` line; check)
    type Check = fn(&ValidatedSpec) -> bool;
    let cases: &[(&str, Check)] = &[
        ("stop_signal = \"TERM\"", |s| s.stop_signal == 15),
        ("stop_signal = 9", |s| s.stop_signal == 9),
        ("stop_signal = \"10\"", |s| s.stop_signal == 10),
        ("stop_timeout = \"1m 30s\"", |s| {
            s.stop_timeout == Duration::from_secs(90)
        }),
        ("user = \"nginx\"", |s| s.user.as_deref() == Some("nginx")),
        ("user = \"nginx:www\"", |s| {
            s.user.as_deref() == Some("nginx:www")
        }),
        ("hostname = \"a.b-c.d\"", |s| s.hostname == "a.b-c.d"),
        ("cap_add = [\"NET_ADMIN\", \"CAP_NET_ADMIN\"]", |s| {
            s.cap_add == ["NET_ADMIN"]
        }),
        ("[restart]\npolicy = \"never\"", |s| {
            s.restart.policy == RestartPolicy::Never
        }),
        ("[restart.backoff]\nmax = \"5s\"", |s| {
            s.restart.backoff_max == Duration::from_secs(5)
        }),
        ("[resources]\nmemory = 8388608", |s| {
            s.resources.memory == Some(8 << 20)
        }),
        ("[resources]\nmemory = \"4MiB\"", |s| {
            s.resources.memory == Some(4 << 20)
        }),
        ("[resources]\nmemory = \"1G\"", |s| {
            s.resources.memory == Some(1 << 30)
        }),
        ("[resources]\ncpus = 2", |s| s.resources.cpus == Some(2.0)),
        ("[resources]\ncpu_weight = 10000", |s| {
            s.resources.cpu_weight == Some(10000)
        }),
        ("[resources]\nio.weight = 1", |s| {
            s.resources.io_weight == Some(1)
        }),
        ("[network]\nmode = \"host\"", |s| {
            s.network.mode == NetworkMode::Host
        }),
        ("[network]\nmode = \"none\"\negress = \"1gbit\"", |s| {
            s.network.mode == NetworkMode::None && s.network.egress == Some(1_000_000_000)
        }),
        ("[network]\negress = 64000", |s| {
            s.network.egress == Some(64000)
        }),
        ("[network]\ningress = \"500kbit\"", |s| {
            s.network.ingress == Some(500_000)
        }),
        ("[network]\nip = \"10.89.0.254\"", |s| {
            s.network.ip == Some(Ipv4Addr::new(10, 89, 0, 254))
        }),
        ("[network]\nports = [\"53:53/udp\", \"53:53/tcp\"]", |s| {
            s.network.ports.len() == 2
        }),
        ("image = \"oci:/var/lib/images/web:1\"", |s| {
            s.image == "oci:/var/lib/images/web:1"
        }),
    ];
    for (extra, check) in cases {
        let text = if extra.starts_with("image") {
            format!("{extra}\n")
        } else {
            format!("image = \"busybox\"\n{extra}\n")
        };
        let s = ok(&text);
        assert!(check(&s), "check failed for {extra:?}: {s:?}");
    }
}

/// (text, line, col, key, message fragment): each text must give exactly this one diagnostic.
const ERRORS: &[(&str, usize, usize, &str, &str)] = &[
    // Required, unknown and misplaced keys.
    ("command = [\"x\"]\n", 1, 1, "image", "missing required key `image`"),
    ("image = \"busybox\"\nimgae = \"x\"\n", 2, 1, "imgae", "did you mean `image`?"),
    ("image = \"busybox\"\nmemory = \"1G\"\n", 2, 1, "memory", "belongs in the [resources] table"),
    ("image = \"busybox\"\n[resources]\nmemroy = \"1G\"\n", 3, 1, "resources.memroy", "unknown key `memroy` in [resources]; did you mean `memory`?"),
    ("image = \"busybox\"\n[resources]\nswap = \"1G\"\n", 3, 1, "resources.swap", "unknown key `swap` in [resources]"),
    ("image = \"busybox\"\n[network]\nmode = \"bridge\"\nhostname = \"x\"\n", 4, 1, "network.hostname", "top-level keys must come before"),
    ("image = \"busybox\"\n[restart]\nbackoff = { inital = \"1s\" }\n", 3, 13, "restart.backoff.inital", "did you mean `initial`?"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/b\"\nro = true\n", 5, 1, "mounts[0].ro", "unknown key `ro`"),
    ("image = \"busybox\"\n[resources]\nio = { weigth = 5 }\n", 3, 8, "resources.io.weigth", "did you mean `weight`?"),
    // Wrong types.
    ("image = 5\n", 1, 9, "image", "expected a string, found integer"),
    ("image = \"busybox\"\ncommand = \"nginx -g\"\n", 2, 11, "command", "expected an array, found string"),
    ("image = \"busybox\"\ncommand = [\"nginx\", 5]\n", 2, 21, "command[1]", "expected a string, found integer"),
    ("image = \"busybox\"\nenv = { A = 1 }\n", 2, 13, "env.A", "expected a string, found integer"),
    ("image = \"busybox\"\nreadonly_rootfs = \"yes\"\n", 2, 19, "readonly_rootfs", "expected a boolean"),
    ("image = \"busybox\"\nstop_timeout = 10\n", 2, 16, "stop_timeout", "expected a duration string"),
    ("image = \"busybox\"\nrestart = \"always\"\n", 2, 11, "restart", "expected a table, found string"),
    ("image = \"busybox\"\n[resources]\ncpus = \"2\"\n", 3, 8, "resources.cpus", "expected a number of CPUs"),
    ("image = \"busybox\"\n[resources]\nmemory = true\n", 3, 10, "resources.memory", "expected a size"),
    ("image = \"busybox\"\n[resources]\npids = 1.5\n", 3, 8, "resources.pids", "expected an integer, found float"),
    ("image = \"busybox\"\n[mounts]\nsource = \"/a\"\n", 2, 1, "mounts", "expected an array of tables ([[mounts]])"),
    ("image = \"busybox\"\n[network]\nports = \"80:80\"\n", 3, 9, "network.ports", "expected an array"),
    // Invalid values.
    ("image = \"\"\n", 1, 9, "image", "must not be empty"),
    ("image = \"rootfs:relative\"\n", 1, 9, "image", "invalid image reference"),
    ("image = \"busybox\"\ncommand = []\n", 2, 11, "command", "must not be an empty array"),
    ("image = \"busybox\"\nentrypoint = [\"\"]\n", 2, 14, "entrypoint", "must not be empty"),
    ("image = \"busybox\"\nenv = { \"A=B\" = \"x\" }\n", 2, 9, "env.A=B", "invalid environment variable name"),
    ("image = \"busybox\"\nenv = { \"\" = \"x\" }\n", 2, 9, "env.", "invalid environment variable name"),
    ("image = \"busybox\"\nworkdir = \"srv\"\n", 2, 11, "workdir", "must be an absolute path"),
    ("image = \"busybox\"\nuser = \"\"\n", 2, 8, "user", "must not be empty"),
    ("image = \"busybox\"\nuser = \"1:2:3\"\n", 2, 8, "user", "invalid user"),
    ("image = \"busybox\"\nuser = \"1:\"\n", 2, 8, "user", "invalid user"),
    ("image = \"busybox\"\nuser = \"4294967296\"\n", 2, 8, "user", "between 0 and 4294967294"),
    ("image = \"busybox\"\nuser = \"-1\"\n", 2, 8, "user", "between 0 and 4294967294"),
    ("image = \"busybox\"\nuser = \"app:4294967295\"\n", 2, 8, "user", "between 0 and 4294967294"),
    ("image = \"busybox\"\n[resources]\ncpus = 1e9\n", 3, 8, "resources.cpus", "at most 1024"),
    ("image = \"busybox\"\n[resources]\npids = 18446744073709551615\n", 3, 8, "resources.pids", "4194304"),
    ("image = \"busybox\"\nhostname = \"web_1\"\n", 2, 12, "hostname", "may only contain letters, digits and '-'"),
    ("image = \"busybox\"\nhostname = \"-web\"\n", 2, 12, "hostname", "must not start or end with '-'"),
    ("image = \"busybox\"\nstop_signal = \"SIGFOO\"\n", 2, 15, "stop_signal", "unknown signal \"SIGFOO\""),
    ("image = \"busybox\"\nstop_signal = 65\n", 2, 15, "stop_signal", "out of range 1..=64"),
    ("image = \"busybox\"\nstop_signal = 0\n", 2, 15, "stop_signal", "out of range 1..=64"),
    ("image = \"busybox\"\nstop_timeout = \"10 parsecs\"\n", 2, 16, "stop_timeout", "invalid duration"),
    ("image = \"busybox\"\nstop_timeout = \"6m\"\n", 2, 16, "stop_timeout", "longer than the 300s allowed"),
    ("image = \"busybox\"\ncap_add = [\"NET_ADMIN\", \"CAP_FLY\"]\n", 2, 25, "cap_add[1]", "unknown capability \"CAP_FLY\""),
    ("image = \"busybox\"\n[restart]\npolicy = \"sometimes\"\n", 3, 10, "restart.policy", "unknown restart policy"),
    ("image = \"busybox\"\n[restart]\nmax_retries = -1\n", 3, 15, "restart.max_retries", "must be at least 0, got -1"),
    ("image = \"busybox\"\n[restart]\nbackoff = { initial = \"1m\", max = \"1s\" }\n", 3, 23, "restart.backoff.initial", "must not be greater than max"),
    ("image = \"busybox\"\n[restart]\nbackoff = { initial = \"1m\" }\n", 3, 23, "restart.backoff.initial", "backoff initial (1m) must not be greater than max (30s)"),
    ("image = \"busybox\"\n[resources]\nmemory = \"3M\"\n", 3, 10, "resources.memory", "must be at least 4M (4194304 bytes), got \"3M\""),
    ("image = \"busybox\"\n[resources]\nmemory = 1024\n", 3, 10, "resources.memory", "must be at least 4M"),
    ("image = \"busybox\"\n[resources]\nmemory = \"12Q\"\n", 3, 10, "resources.memory", "unknown unit \"Q\""),
    ("image = \"busybox\"\n[resources]\nmemory = -5\n", 3, 10, "resources.memory", "invalid size -5"),
    ("image = \"busybox\"\n[resources]\ncpus = 0\n", 3, 8, "resources.cpus", "must be greater than 0"),
    ("image = \"busybox\"\n[resources]\ncpus = -0.5\n", 3, 8, "resources.cpus", "must be greater than 0"),
    ("image = \"busybox\"\n[resources]\ncpus = nan\n", 3, 8, "resources.cpus", "must be greater than 0"),
    ("image = \"busybox\"\n[resources]\ncpu_weight = 0\n", 3, 14, "resources.cpu_weight", "must be between 1 and 10000, got 0"),
    ("image = \"busybox\"\n[resources]\ncpu_weight = 10001\n", 3, 14, "resources.cpu_weight", "must be between 1 and 10000"),
    ("image = \"busybox\"\n[resources]\ncpuset = \"0-\"\n", 3, 10, "resources.cpuset", "invalid cpuset"),
    ("image = \"busybox\"\n[resources]\ncpuset = \"3-1\"\n", 3, 10, "resources.cpuset", "start after its end"),
    ("image = \"busybox\"\n[resources]\npids = 0\n", 3, 8, "resources.pids", "must be between 1 and 4194304, got 0"),
    ("image = \"busybox\"\n[resources]\nio = { weight = 0 }\n", 3, 17, "resources.io.weight", "must be between 1 and 10000"),
    ("image = \"busybox\"\n[resources]\nio = { read_bps = { \"sda\" = \"1M\" } }\n", 3, 21, "resources.io.read_bps.\"sda\"", "absolute path"),
    ("image = \"busybox\"\n[resources]\nio = { read_bps = { \"/dev/null\" = \"1M\" } }\n", 3, 21, "resources.io.read_bps.\"/dev/null\"", "is not a block device"),
    ("image = \"busybox\"\n[resources]\nio = { write_iops = { \"/dev/berth-none\" = 10 } }\n", 3, 23, "resources.io.write_iops.\"/dev/berth-none\"", "no such block device on this host"),
    ("image = \"busybox\"\n[resources]\nio = { write_bps = 5 }\n", 3, 20, "resources.io.write_bps", "expected a table"),
    ("image = \"busybox\"\nenv = { \"A B\" = \"1\" }\n", 2, 9, "env.A B", "no '=', whitespace or control characters"),
    ("image = \"busybox\"\nenv = { \"A\\tB\" = \"1\" }\n", 2, 9, "env.A\tB", "whitespace"),
    ("image = \"busybox\"\n[resources]\ncpuset = \"0,4095\"\n", 3, 10, "resources.cpuset", "CPU 4095 is not online on this host"),
    ("image = \"busybox\"\n[network]\nmode = \"nat\"\n", 3, 8, "network.mode", "unknown network mode \"nat\""),
    ("image = \"busybox\"\n[network]\nip = \"10.89.1.5\"\n", 3, 6, "network.ip", "outside the bridge subnet 10.89.0.0/24"),
    ("image = \"busybox\"\n[network]\nip = \"10.89.0.0\"\n", 3, 6, "network.ip", "network address"),
    ("image = \"busybox\"\n[network]\nip = \"10.89.0.1\"\n", 3, 6, "network.ip", "gateway address"),
    ("image = \"busybox\"\n[network]\nip = \"10.89.0.255\"\n", 3, 6, "network.ip", "broadcast address"),
    ("image = \"busybox\"\n[network]\nip = \"10.89.0\"\n", 3, 6, "network.ip", "invalid IPv4 address"),
    ("image = \"busybox\"\n[network]\nports = [\"80:80\", \"0:80\"]\n", 3, 19, "network.ports[1]", "host port 0 is out of range"),
    ("image = \"busybox\"\n[network]\nports = [\"80\"]\n", 3, 10, "network.ports[0]", "expected \"[ADDR:]HOST:CONTAINER[/tcp|udp]\""),
    ("image = \"busybox\"\n[network]\nports = [\"80:80/sctp\"]\n", 3, 10, "network.ports[0]", "unknown protocol \"sctp\""),
    ("image = \"busybox\"\n[network]\nports = [\"8080:80\", \"8080:81/tcp\"]\n", 3, 21, "network.ports[1]", "host port 8080/tcp is mapped more than once"),
    ("image = \"busybox\"\n[network]\nmode = \"host\"\nports = [\"80:80\"]\n", 4, 1, "network.ports", "cannot be used with mode = \"host\""),
    ("image = \"busybox\"\n[network]\nmode = \"host\"\nip = \"10.89.0.5\"\n", 4, 1, "network.ip", "cannot be used with mode = \"host\""),
    ("image = \"busybox\"\n[network]\nmode = \"host\"\negress = \"1mbit\"\n", 4, 1, "network.egress", "cannot be used with mode = \"host\""),
    ("image = \"busybox\"\n[network]\nmode = \"none\"\nports = [\"80:80\"]\n", 4, 1, "network.ports", "cannot be used with mode = \"none\""),
    ("image = \"busybox\"\n[network]\negress = \"10mb\"\n", 3, 10, "network.egress", "unknown unit \"mb\""),
    ("image = \"busybox\"\n[network]\ningress = \"0kbit\"\n", 3, 11, "network.ingress", "must be greater than 0"),
    ("image = \"busybox\"\n[network]\ningress = 0\n", 3, 11, "network.ingress", "must be greater than 0"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"rel\"\ntarget = \"/b\"\n", 3, 10, "mounts[0].source", "must be an absolute host path"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"b\"\n", 4, 10, "mounts[0].target", "must be an absolute path inside the container"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/\"\n", 4, 10, "mounts[0].target", "cannot mount over the container's root"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/x/../..\"\n", 4, 10, "mounts[0].target", "must not contain '..'"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\n", 2, 1, "mounts[0]", "missing required key `target`"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/b\"\nreadonly = 1\n", 5, 12, "mounts[0].readonly", "expected a boolean"),
    ("image = \"busybox\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/b\"\n[[mounts]]\nsource = \"/c\"\ntarget = \"/b/\"\n", 7, 10, "mounts[1].target", "already the target of another mount"),    ("image = \"busybox\"\n[health]\ninterval = \"5s\"\n", 2, 1, "health", "needs one probe"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 1 }\nexec = [\"true\"]\n", 4, 8, "health.exec", "only one probe kind"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 0 }\n", 3, 16, "health.tcp.port", "between 1 and 65535"),
    ("image = \"busybox\"\n[health]\ntcp = {}\n", 3, 7, "health.tcp.port", "missing required key `port`"),
    ("image = \"busybox\"\n[health]\nhttp = { port = 80, path = \"healthz\" }\n", 3, 28, "health.http.path", "must start with '/'"),
    ("image = \"busybox\"\n[health]\nexec = []\n", 3, 8, "health.exec", "empty"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 5 }\ninterval = \"0s\"\n", 4, 12, "health.interval", "greater than 0"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 5 }\nretries = 0\n", 4, 11, "health.retries", "between 1 and 1000"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 5 }\non_unhealthy = \"reboot\"\n", 4, 16, "health.on_unhealthy", "unknown action"),
    ("image = \"busybox\"\n[health]\ntcp = { port = 5 }\nintervall = \"1s\"\n", 4, 1, "health.intervall", "interval"),    ("image = \"busybox\"\ndepends_on = [\"web\"]\n", 2, 15, "depends_on[0]", "itself"),
    ("image = \"busybox\"\ndepends_on = { db = \"ready\" }\n", 2, 21, "depends_on.db", "unknown condition"),
    ("image = \"busybox\"\ndepends_on = [\"a/b\"]\n", 2, 15, "depends_on[0]", "not a container name"),
    ("image = \"busybox\"\ndepends_on = \"db\"\n", 2, 14, "depends_on", "a list of container names"),    ("image = \"busybox\"\n[update]\norder = \"blue-green\"\n", 3, 9, "update.order", "unknown order"),
    ("image = \"busybox\"\n[network]\nports = [\"80:80\"]\n[update]\norder = \"start-first\"\n", 5, 9, "update.order", "published ports"),
    ("image = \"busybox\"\n[update]\nrollback = \"yes\"\n", 3, 12, "update.rollback", "expected a boolean"),
    ("image = \"oci:/img:1\"\n[update]\ncheck = \"1h\"\n", 3, 9, "update.check", "not a registry image"),
    ("image = \"busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n[update]\ncheck = \"1h\"\n", 3, 9, "update.check", "pinned by digest"),
    ("image = \"busybox\"\n[update]\ncheck = \"5s\"\n", 3, 9, "update.check", "at least 10s"),
];

/// A block device of this host, if it has any (sysfs lists them).
fn some_block_device() -> Option<String> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .find(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        })
}

#[test]
fn io_throttles_merge_per_device() {
    let Some(dev) = some_block_device() else {
        eprintln!("skipping io_throttles_merge_per_device: no block device on this host");
        return;
    };
    let s = ok(&format!(
        "image = \"busybox\"\n[resources]\nio = {{ weight = 10, read_bps = {{ {dev:?} = \"20M\" }}, write_bps = {{ {dev:?} = 1024 }}, write_iops = {{ {dev:?} = 300 }} }}\n"
    ));
    assert_eq!(s.resources.io_weight, Some(10));
    assert_eq!(
        s.resources.io_devices,
        vec![IoDeviceLimit {
            device: dev.clone().into(),
            read_bps: Some(20 << 20),
            write_bps: Some(1024),
            read_iops: None,
            write_iops: Some(300),
        }]
    );
    let e = errs(&format!(
        "image = \"busybox\"\n[resources]\nio = {{ read_bps = {{ {dev:?} = \"0\" }}, read_iops = {{ {dev:?} = 0 }} }}\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .all(|d| d.message.contains("greater than 0") || d.message.contains("at least 1")),
        "{e:?}"
    );
}

#[test]
fn errors_point_at_key_or_value() {
    let mut failures = Vec::new();
    for (text, line, col, key, fragment) in ERRORS {
        let diags = errs(text);
        let want = format!("{FILE}:{line}:{col}: ");
        let good = diags.len() == 1 && {
            let d = &diags[0];
            d.file == Path::new(FILE)
                && (d.line, d.col) == (*line, *col)
                && d.key.as_deref() == Some(*key)
                && d.message.contains(fragment)
                && d.to_string().starts_with(&want)
        };
        if !good {
            let got: Vec<String> = diags
                .iter()
                .map(|d| format!("{d} [key {:?}]", d.key))
                .collect();
            failures.push(format!(
                "{text:?}\n  want {want}[{key}] ...{fragment}...\n  got  {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_in_a_file_are_reported_in_order() {
    let text = "image = \"busybox\"\nbogus = 1\nstop_signal = \"NOPE\"\n[resources]\nmemory = \"3M\"\ncpus = 0\nswap = 1\n[network]\nip = \"192.168.1.1\"\n";
    let diags = errs(text);
    let got: Vec<(usize, usize, Option<&str>)> = diags
        .iter()
        .map(|d| (d.line, d.col, d.key.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 1, Some("bogus")),
            (3, 15, Some("stop_signal")),
            (5, 10, Some("resources.memory")),
            (6, 8, Some("resources.cpus")),
            (7, 1, Some("resources.swap")),
            (9, 6, Some("network.ip")),
        ]
    );
    let shown = SpecErrors::new(diags).to_string();
    assert_eq!(shown.lines().count(), 6);
}

#[test]
fn syntax_error_has_position() {
    let diags = errs("image = \"busybox\"\n[resources\nmemory = \"1G\"\n");
    assert!(!diags.is_empty());
    let d = &diags[0];
    assert_eq!(d.line, 2, "{d}");
    assert!(d.message.starts_with("TOML syntax error"), "{d}");
    assert_eq!(d.key, None);

    let diags = errs("image = \"busybox\"\nimage = \"alpine\"\n");
    assert_eq!((diags[0].line, diags[0].col), (2, 1), "{}", diags[0]);
    assert!(
        diags[0].message.contains("duplicate key `image`"),
        "{}",
        diags[0]
    );
}

#[test]
fn names_come_from_the_file_stem() {
    let ctx = ValidationContext::default();
    let s = parse_str(Path::new("/x/my_app.toml"), "image = \"busybox\"\n", &ctx).unwrap();
    assert_eq!(s.name, "my_app");
    assert_eq!(s.hostname, "my-app");

    let s = parse_str(Path::new("/x/web.prod.toml"), "image = \"busybox\"\n", &ctx).unwrap();
    assert_eq!(
        (s.name.as_str(), s.hostname.as_str()),
        ("web.prod", "web.prod")
    );

    // A name that is valid but cannot default the hostname asks for `hostname`...
    let e = parse_str(Path::new("/x/a..b.toml"), "image = \"busybox\"\n", &ctx).unwrap_err();
    assert!(e[0].message.contains("set `hostname`"), "{e}");
    // ...and is fine once it is set.
    let s = parse_str(
        Path::new("/x/a..b.toml"),
        "image = \"busybox\"\nhostname = \"ab\"\n",
        &ctx,
    )
    .unwrap();
    assert_eq!(s.name, "a..b");

    for bad in [
        "/x/-web.toml",
        "/x/we b.toml",
        &format!("/x/{}.toml", "a".repeat(64)),
    ] {
        let e = parse_str(
            Path::new(bad),
            "image = \"busybox\"\nhostname = \"h\"\n",
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{bad}: {e}");
        assert_eq!((e[0].line, e[0].col), (1, 1));
        assert!(e[0].message.contains("invalid container name"), "{e}");
    }
}

#[test]
fn subnet_comes_from_the_context() {
    let ctx = ValidationContext {
        subnet: (Ipv4Addr::new(172, 30, 0, 0), 16),
    };
    let text = "image = \"busybox\"\n[network]\nip = \"172.30.5.9\"\n";
    let s = parse_str(Path::new("a.toml"), text, &ctx).unwrap();
    assert_eq!(s.network.ip, Some(Ipv4Addr::new(172, 30, 5, 9)));
    assert!(parse(text).is_err());
    assert!(check_ip_in_subnet(Ipv4Addr::new(172, 30, 255, 255), ctx.subnet).is_err());
    assert!(check_ip_in_subnet(Ipv4Addr::new(172, 30, 0, 1), ctx.subnet).is_err());
    assert!(check_ip_in_subnet(Ipv4Addr::new(172, 30, 0, 2), ctx.subnet).is_ok());
}

#[test]
fn spec_error_wraps_diagnostics() {
    let e: SpecError = errs("x = 1\n").pop().map(SpecErrors::from).unwrap().into();
    assert!(e.to_string().contains("specs/web.toml:1:1: "), "{e}");
}

mod files {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const GOOD: &str = "image = \"busybox\"\n";

    #[test]
    fn a_link_swapped_after_the_listing_is_not_followed_out_of_the_dir() {
        let root = tempfile::tempdir().unwrap();
        let specs = root.path().join("specs");
        fs::create_dir_all(specs.join("..data")).unwrap();
        fs::write(specs.join("..data/web.toml"), GOOD).unwrap();
        let outside = root.path().join("outside.toml");
        fs::write(&outside, "image = \"evil\"\n").unwrap();
        let link = specs.join("web.toml");
        symlink("..data/web.toml", &link).unwrap();
        let ctx = ValidationContext::default();
        let listing = list_spec_dir(&specs).unwrap();
        assert_eq!(listing.files, std::slice::from_ref(&link));
        let dir = open_spec_dir(&specs).unwrap();
        // Swapped between the listing and the read: the listed target is read.
        fs::remove_file(&link).unwrap();
        symlink(&outside, &link).unwrap();
        let inside = listing.inside(&link);
        let s = load_in_dir(std::os::fd::AsFd::as_fd(&dir), &link, &inside, &ctx).unwrap();
        assert_eq!(s.image, "busybox");
        // Opened by its own name, the outside link resolves inside the dir: nothing there.
        let e = load_in_dir(
            std::os::fd::AsFd::as_fd(&dir),
            &link,
            std::path::Path::new("web.toml"),
            &ctx,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cannot open spec file inside"),
            "{e}"
        );
        assert!(!e.to_string().contains("evil"));
    }

    #[test]
    fn load_file_reads_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ValidationContext::default();
        let p = dir.path().join("web.toml");
        fs::write(&p, GOOD).unwrap();
        let s = load_file(&p, &ctx).unwrap();
        assert_eq!((s.name.as_str(), s.file.as_path()), ("web", p.as_path()));

        fs::write(&p, "image = \"busybox\"\n[resources]\nmemory = \"3M\"\n").unwrap();
        let e = load_file(&p, &ctx).unwrap_err();
        assert_eq!(
            (e[0].file.as_path(), e[0].line, e[0].col),
            (p.as_path(), 3, 10)
        );
    }

    #[test]
    fn load_file_problems_are_diagnostics() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ValidationContext::default();

        let missing = dir.path().join("missing.toml");
        let e = load_file(&missing, &ctx).unwrap_err();
        assert_eq!((e[0].line, e[0].col), (1, 1));
        assert!(e[0].message.contains("cannot open"), "{e}");

        let big = dir.path().join("big.toml");
        let mut text = String::from(GOOD);
        text.push_str(&"# padding\n".repeat(110_000));
        fs::write(&big, text).unwrap();
        let e = load_file(&big, &ctx).unwrap_err();
        assert!(e[0].message.contains("limit"), "{e}");

        let bin = dir.path().join("bin.toml");
        fs::write(&bin, b"image = \"\xff\"\n").unwrap();
        let e = load_file(&bin, &ctx).unwrap_err();
        assert!(e[0].message.contains("UTF-8"), "{e}");

        let sub = dir.path().join("sub.toml");
        fs::create_dir(&sub).unwrap();
        let e = load_file(&sub, &ctx).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn dir_listing_skips_hidden_temp_and_escaping_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("specs");
        fs::create_dir(&dir).unwrap();
        let outside = root.path().join("outside.toml");
        fs::write(&outside, GOOD).unwrap();

        for name in [
            "b.toml",
            "a.toml",
            ".hidden.toml",
            "c.toml~",
            "c.toml.swp",
            ".c.toml.swp",
            "c.toml.bak",
            "c.toml.tmp",
            "notes.txt",
            ".toml",
        ] {
            fs::write(dir.join(name), GOOD).unwrap();
        }
        // The config-management layout: web.toml -> ..data/web.toml, ..data -> ..v1.
        fs::create_dir(dir.join("..v1")).unwrap();
        fs::write(dir.join("..v1/web.toml"), GOOD).unwrap();
        symlink("..v1", dir.join("..data")).unwrap();
        symlink("..data/web.toml", dir.join("web.toml")).unwrap();
        // Escaping symlinks: absolute and relative.
        symlink(&outside, dir.join("evil.toml")).unwrap();
        symlink("../outside.toml", dir.join("evil2.toml")).unwrap();
        // Dangling symlink and a directory named like a spec.
        symlink("nowhere.toml", dir.join("dangling.toml")).unwrap();
        fs::create_dir(dir.join("d.toml")).unwrap();

        let files = spec_files_in(&dir).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.toml", "b.toml", "web.toml"]);
        assert!(files.iter().all(|p| p.parent() == Some(dir.as_path())));

        let listing = list_spec_dir(&dir).unwrap();
        let rejected: Vec<_> = listing
            .rejected
            .iter()
            .map(|r| r.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            rejected,
            ["d.toml", "dangling.toml", "evil.toml", "evil2.toml"]
        );
        assert!(listing.rejected[2]
            .reason
            .contains("outside the spec directory"));

        // A spec dir reached through a symlink still accepts links inside it.
        let alias = root.path().join("alias");
        symlink(&dir, &alias).unwrap();
        assert_eq!(spec_files_in(&alias).unwrap().len(), 3);
    }

    #[test]
    fn missing_dir_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let err = spec_files_in(&root.path().join("nope")).unwrap_err();
        assert!(matches!(err, SpecError::Canonicalize { .. }), "{err}");
    }

    #[test]
    fn dependency_problems_name_both_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("specs");
        fs::create_dir(&dir).unwrap();
        let spec = |deps: &str| format!("image = \"busybox\"\ndepends_on = {deps}\n");
        fs::write(dir.join("a.toml"), spec("{ b = \"started\" }")).unwrap();
        fs::write(dir.join("b.toml"), spec("[\"c\"]")).unwrap();
        fs::write(dir.join("c.toml"), spec("{ a = \"started\" }")).unwrap();
        fs::write(dir.join("d.toml"), spec("[\"nobody\"]")).unwrap();
        fs::write(dir.join("e.toml"), spec("{ f = \"healthy\" }")).unwrap();
        fs::write(dir.join("f.toml"), "image = \"busybox\"\n").unwrap();
        fs::write(dir.join("g.toml"), spec("{ f = \"started\" }")).unwrap();
        let results = load_paths(std::slice::from_ref(&dir), &ValidationContext::default());
        let errors: BTreeMap<String, String> = results
            .iter()
            .filter_map(|(p, r)| {
                let name = p.file_stem()?.to_string_lossy().into_owned();
                r.as_ref().err().map(|e| (name, e.to_string()))
            })
            .collect();
        assert_eq!(
            errors.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"],
            "{errors:?}"
        );
        let a = &errors["a"];
        assert!(a.contains("a.toml:2:") && a.contains("cycle"), "{a}");
        for f in ["a.toml", "b.toml", "c.toml"] {
            assert!(a.contains(f), "the cycle names {f}: {a}");
        }
        assert!(errors["b"].contains("b.toml:2:"), "{}", errors["b"]);
        let d = &errors["d"];
        assert!(d.contains("d.toml:2:") && d.contains("nobody.toml"), "{d}");
        let e = &errors["e"];
        assert!(
            e.contains("e.toml:2:") && e.contains("f.toml") && e.contains("[health]"),
            "{e}"
        );
    }

    #[test]
    fn load_paths_expands_dirs_and_takes_files_as_is() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ValidationContext::default();
        let dir = root.path().join("specs");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a.toml"), GOOD).unwrap();
        fs::write(dir.join("b.toml"), "image = 1\n").unwrap();
        fs::write(dir.join(".c.toml"), "garbage").unwrap();
        symlink(root.path().join("x.toml"), dir.join("evil.toml")).unwrap();
        fs::write(root.path().join("x.toml"), GOOD).unwrap();
        // A file given directly is taken even without the .toml suffix.
        let single = root.path().join("single.conf");
        fs::write(&single, GOOD).unwrap();

        let results = load_paths(&[dir.clone(), single.clone()], &ctx);
        let summary: Vec<_> = results
            .iter()
            .map(|(p, r)| (p.file_name().unwrap().to_str().unwrap(), r.is_ok()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a.toml", true),
                ("b.toml", false),
                ("evil.toml", false),
                ("single.conf", true),
            ]
        );
        let evil = results[2].1.as_ref().unwrap_err();
        assert!(evil[0].message.contains("ignored"), "{evil}");
        assert_eq!(results[3].1.as_ref().unwrap().name, "single");

        let missing = load_paths(&[root.path().join("nope.toml")], &ctx);
        assert!(missing[0].1.is_err());
    }
}

#[test]
fn control_bytes_in_keys_are_escaped_in_diagnostics() {
    let text = "image = \"busybox\"\n\"a\\u001b[31mb\\u0000\" = 1\n";
    let errs = crate::spec::parse_str(
        std::path::Path::new("/s/web.toml"),
        text,
        &ValidationContext::default(),
    )
    .unwrap_err();
    let shown = errs.to_string();
    assert!(shown.contains("unknown key"), "{shown}");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(shown.contains("\\u{1b}[31m"), "{shown}");
}
