//! Pure translation of a spec's `Resources` into cgroup file writes, for v1 and v2.
//!
//! Nothing here touches the filesystem: the executors in `v1.rs` and `v2.rs` write what these
//! functions return, in order, following `file_policy` for files that only some kernels have.
//! The device allowlist lives here as data so the runtime can read the same table.

use std::fmt;

use crate::spec::Resources;

/// CFS period used for every CPU quota, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The kernel refuses CFS quotas below 1 ms.
const MIN_CFS_QUOTA_US: u64 = 1_000;

/// A cgroup hierarchy kind. On v1 each controller (or co-mounted group of controllers) has its
/// own hierarchy; `Unified` is a cgroup2 hierarchy (all of v2, or the controller-less one that a
/// hybrid host mounts at /sys/fs/cgroup/unified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    Cpu,
    CpuAcct,
    Cpuset,
    Memory,
    Devices,
    Freezer,
    Blkio,
    Pids,
    NetCls,
    NetPrio,
    PerfEvent,
    HugeTlb,
    Rdma,
    Misc,
    /// The `name=systemd` named hierarchy (no controller, process tracking only).
    Systemd,
    /// A cgroup2 hierarchy.
    Unified,
}

impl Controller {
    /// The v1 mount option naming this hierarchy (`name=systemd` for systemd).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::CpuAcct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
            Controller::Pids => "pids",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::PerfEvent => "perf_event",
            Controller::HugeTlb => "hugetlb",
            Controller::Rdma => "rdma",
            Controller::Misc => "misc",
            Controller::Systemd => "name=systemd",
            Controller::Unified => "unified",
        }
    }

    /// Parses a v1 mount option (as in /proc/self/mountinfo) into a hierarchy kind.
    pub fn from_mount_option(opt: &str) -> Option<Controller> {
        Some(match opt {
            "cpu" => Controller::Cpu,
            "cpuacct" => Controller::CpuAcct,
            "cpuset" => Controller::Cpuset,
            "memory" => Controller::Memory,
            "devices" => Controller::Devices,
            "freezer" => Controller::Freezer,
            "blkio" => Controller::Blkio,
            "pids" => Controller::Pids,
            "net_cls" => Controller::NetCls,
            "net_prio" => Controller::NetPrio,
            "perf_event" => Controller::PerfEvent,
            "hugetlb" => Controller::HugeTlb,
            "rdma" => Controller::Rdma,
            "misc" => Controller::Misc,
            "name=systemd" => Controller::Systemd,
            _ => return None,
        })
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Device type in a device cgroup rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// One device cgroup rule; `None` for major/minor means `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Any of "r", "w", "m".
    pub access: &'static str,
}

impl DeviceRule {
    /// The rule in devices.allow syntax, e.g. `c 1:3 rwm`.
    pub fn to_v1_line(&self) -> String {
        let t = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{t} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    /// Whether this rule lets `access` (a set of [`DeviceAccess`] bits) reach the device:
    /// the kind and numbers match and every requested access is in the rule's.
    pub fn permits(&self, kind: DeviceKind, major: u32, minor: u32, access: u32) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !DeviceAccess::bits(self.access) == 0
    }
}

/// The access bits of a device request, as the kernel numbers them (BPF_DEVCG_ACC_*).
pub struct DeviceAccess;

impl DeviceAccess {
    pub const MKNOD: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
    pub const ALL: u32 = 7;

    /// The bits of an access string such as "rwm".
    pub fn bits(access: &str) -> u32 {
        access.chars().fold(0, |b, c| {
            b | match c {
                'm' => Self::MKNOD,
                'r' => Self::READ,
                'w' => Self::WRITE,
                _ => 0,
            }
        })
    }
}

const fn dev(major: u32, minor: u32) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major: Some(major),
        minor: Some(minor),
        access: "rwm",
    }
}

/// Devices a container may use (`a` is written to devices.deny first on v1; the v2 program
/// denies by default): the nodes of its /dev and the pseudo-terminals of its devpts. Every
/// other char and block device is denied for read, write and mknod.
pub const ALLOWED_DEVICES: &[DeviceRule] = &[
    dev(1, 3), // null
    dev(1, 5), // zero
    dev(1, 7), // full
    dev(1, 8), // random
    dev(1, 9), // urandom
    dev(5, 0), // tty
    dev(5, 1), // console
    dev(5, 2), // ptmx
    DeviceRule {
        kind: DeviceKind::Char,
        major: Some(136),
        minor: None,
        access: "rwm",
    }, // pts/*
];

/// How an executor treats a file named in a write list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePolicy {
    /// Must exist; a failed write is an error.
    Required,
    /// Written only when the kernel has it (swap accounting may be off); skipped with a debug log.
    IfExists,
    /// One of a group of alternatives emitted next to each other: the first one that exists is
    /// written, the others skipped; if none exists the group is skipped with a debug log.
    FirstOf(&'static str),
}

/// The policy for a file that `v1_writes`/`v2_writes` may return.
pub fn file_policy(file: &str) -> FilePolicy {
    match file {
        "memory.memsw.limit_in_bytes" | "memory.swap.max" => FilePolicy::IfExists,
        "io.weight" | "io.bfq.weight" | "blkio.weight" | "blkio.bfq.weight" => {
            FilePolicy::FirstOf("io weight")
        }
        _ => FilePolicy::Required,
    }
}

/// v2 cpu.weight (1..=10000) to v1 cpu.shares (2..=262144), as runc/crun convert.
pub fn cpu_weight_to_shares(w: u64) -> u64 {
    let w = w.clamp(1, 10_000);
    2 + ((w - 1) * 262_142) / 9_999
}

/// 1..=10000 onto v1 blkio.weight's 10..=1000.
pub fn io_weight_to_blkio(w: u64) -> u64 {
    let w = w.clamp(1, 10_000);
    10 + ((w - 1) * 990) / 9_999
}

/// 1..=10000 onto BFQ's 1..=1000 (blkio.bfq.weight and io.bfq.weight).
pub fn io_weight_to_bfq(w: u64) -> u64 {
    let w = w.clamp(1, 10_000);
    1 + ((w - 1) * 999) / 9_999
}

/// CPUs to a CFS quota over `CFS_PERIOD_US`.
pub fn cpus_to_quota(cpus: f64) -> u64 {
    let q = (cpus * CFS_PERIOD_US as f64).round();
    if q.is_finite() && q > 0.0 {
        (q as u64).max(MIN_CFS_QUOTA_US)
    } else {
        MIN_CFS_QUOTA_US
    }
}

/// The v1 writes that set every limit present in `res`, in the order they must be written.
/// Absent limits produce no write (see `v1_resets` for `update`). The v1 cpuset also needs
/// cpuset.mems (and cpus when none is given) copied from the parent: that is done on creation
/// by the executor, since it depends on the parent's values.
pub fn v1_writes(res: &Resources) -> Vec<(Controller, &'static str, String)> {
    let mut w = Vec::new();
    if let Some(m) = res.memory {
        // On a fresh cgroup both are unlimited, so the limit goes first (memsw >= limit always).
        w.push((Controller::Memory, "memory.limit_in_bytes", m.to_string()));
        w.push((
            Controller::Memory,
            "memory.memsw.limit_in_bytes",
            m.to_string(),
        ));
    }
    if let Some(c) = res.cpus {
        w.push((
            Controller::Cpu,
            "cpu.cfs_period_us",
            CFS_PERIOD_US.to_string(),
        ));
        w.push((
            Controller::Cpu,
            "cpu.cfs_quota_us",
            cpus_to_quota(c).to_string(),
        ));
    }
    if let Some(cw) = res.cpu_weight {
        w.push((
            Controller::Cpu,
            "cpu.shares",
            cpu_weight_to_shares(cw).to_string(),
        ));
    }
    if let Some(set) = &res.cpuset {
        w.push((Controller::Cpuset, "cpuset.cpus", set.clone()));
    }
    if let Some(p) = res.pids {
        w.push((Controller::Pids, "pids.max", p.to_string()));
    }
    if let Some(iw) = res.io_weight {
        w.push((
            Controller::Blkio,
            "blkio.weight",
            io_weight_to_blkio(iw).to_string(),
        ));
        w.push((
            Controller::Blkio,
            "blkio.bfq.weight",
            io_weight_to_bfq(iw).to_string(),
        ));
    }
    w
}

/// The v1 writes that put every limit absent from `res` back to the kernel default, for
/// `update`. An absent cpuset is restored from the parent by the executor.
pub fn v1_resets(res: &Resources) -> Vec<(Controller, &'static str, String)> {
    let mut w = Vec::new();
    if res.memory.is_none() {
        // Raising: memsw first, since the kernel keeps memsw >= limit.
        w.push((
            Controller::Memory,
            "memory.memsw.limit_in_bytes",
            "-1".into(),
        ));
        w.push((Controller::Memory, "memory.limit_in_bytes", "-1".into()));
    }
    if res.cpus.is_none() {
        w.push((Controller::Cpu, "cpu.cfs_quota_us", "-1".into()));
    }
    if res.cpu_weight.is_none() {
        w.push((Controller::Cpu, "cpu.shares", "1024".into()));
    }
    if res.pids.is_none() {
        w.push((Controller::Pids, "pids.max", "max".into()));
    }
    if res.io_weight.is_none() {
        w.push((Controller::Blkio, "blkio.weight", "500".into()));
        w.push((Controller::Blkio, "blkio.bfq.weight", "100".into()));
    }
    w
}

/// One block device's throttles (`Resources::io_devices`) with the device resolved to its
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoThrottle {
    pub major: u64,
    pub minor: u64,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// The v1 throttle files, each with the field of [`IoThrottle`] it takes.
pub const V1_THROTTLE_FILES: [&str; 4] = [
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

fn fields(t: &IoThrottle) -> [Option<u64>; 4] {
    [t.read_bps, t.write_bps, t.read_iops, t.write_iops]
}

/// The v1 writes that set the throttles of `io` and lift those of every device in `limited`
/// (what the files list now, for an update) that `io` no longer limits: "MAJ:MIN RATE", 0 to
/// lift.
pub fn v1_io_writes(
    io: &[IoThrottle],
    limited: &[(u64, u64)],
) -> Vec<(Controller, &'static str, String)> {
    let mut w = Vec::new();
    for (i, file) in V1_THROTTLE_FILES.iter().enumerate() {
        for &(major, minor) in limited {
            let kept = io
                .iter()
                .any(|t| (t.major, t.minor) == (major, minor) && fields(t)[i].is_some());
            if !kept {
                w.push((Controller::Blkio, *file, format!("{major}:{minor} 0")));
            }
        }
        for t in io {
            if let Some(rate) = fields(t)[i] {
                w.push((
                    Controller::Blkio,
                    *file,
                    format!("{}:{} {rate}", t.major, t.minor),
                ));
            }
        }
    }
    w
}

/// The v2 `io.max` writes for `io`, and "max" for every device in `limited` it no longer
/// names (an update).
pub fn v2_io_writes(io: &[IoThrottle], limited: &[(u64, u64)]) -> Vec<(&'static str, String)> {
    let rate = |v: Option<u64>| v.map_or("max".to_string(), |n| n.to_string());
    let mut w: Vec<(&'static str, String)> = limited
        .iter()
        .filter(|d| !io.iter().any(|t| (t.major, t.minor) == **d))
        .map(|(major, minor)| {
            (
                "io.max",
                format!("{major}:{minor} rbps=max wbps=max riops=max wiops=max"),
            )
        })
        .collect();
    w.extend(io.iter().map(|t| {
        (
            "io.max",
            format!(
                "{}:{} rbps={} wbps={} riops={} wiops={}",
                t.major,
                t.minor,
                rate(t.read_bps),
                rate(t.write_bps),
                rate(t.read_iops),
                rate(t.write_iops)
            ),
        )
    }));
    w
}

/// The devices a v1 throttle file or v2 `io.max` lists with a limit: lines that start with
/// "MAJ:MIN" followed by something other than no limit.
pub fn limited_devices(text: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let (dev, rest) = l.trim().split_once(' ')?;
            let (major, minor) = dev.split_once(':')?;
            let unlimited = rest
                .split_whitespace()
                .all(|kv| kv == "0" || kv.ends_with("=max"));
            (!unlimited).then_some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The v1 devices writes: deny all, then the allowlist.
pub fn v1_device_writes() -> Vec<(Controller, &'static str, String)> {
    let mut w = vec![(Controller::Devices, "devices.deny", "a".to_string())];
    w.extend(
        ALLOWED_DEVICES
            .iter()
            .map(|d| (Controller::Devices, "devices.allow", d.to_v1_line())),
    );
    w
}

/// The v2 controllers a container cgroup gets enabled when the host has them.
pub const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids"];

/// The v2 controllers `res` cannot do without.
pub fn v2_required_controllers(res: &Resources) -> Vec<&'static str> {
    let mut c = Vec::new();
    if res.cpus.is_some() || res.cpu_weight.is_some() {
        c.push("cpu");
    }
    if res.cpuset.is_some() {
        c.push("cpuset");
    }
    if res.memory.is_some() {
        c.push("memory");
    }
    if res.pids.is_some() {
        c.push("pids");
    }
    if !res.io_devices.is_empty() {
        c.push("io");
    }
    c
}

/// The v2 writes that set every limit present in `res`, in order.
pub fn v2_writes(res: &Resources) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    if let Some(m) = res.memory {
        w.push(("memory.max", m.to_string()));
        w.push(("memory.swap.max", "0".to_string()));
    }
    if let Some(c) = res.cpus {
        w.push(("cpu.max", format!("{} {CFS_PERIOD_US}", cpus_to_quota(c))));
    }
    if let Some(cw) = res.cpu_weight {
        w.push(("cpu.weight", cw.clamp(1, 10_000).to_string()));
    }
    if let Some(set) = &res.cpuset {
        w.push(("cpuset.cpus", set.clone()));
    }
    if let Some(p) = res.pids {
        w.push(("pids.max", p.to_string()));
    }
    if let Some(iw) = res.io_weight {
        w.push(("io.weight", format!("default {}", iw.clamp(1, 10_000))));
        w.push(("io.bfq.weight", io_weight_to_bfq(iw).to_string()));
    }
    w
}

/// The v2 writes that put every limit absent from `res` back to the default, for `update`.
pub fn v2_resets(res: &Resources) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    if res.memory.is_none() {
        w.push(("memory.max", "max".into()));
        w.push(("memory.swap.max", "max".into()));
    }
    if res.cpus.is_none() {
        w.push(("cpu.max", format!("max {CFS_PERIOD_US}")));
    }
    if res.cpu_weight.is_none() {
        w.push(("cpu.weight", "100".into()));
    }
    if res.cpuset.is_none() {
        // An empty v2 cpuset means "the parent's". A newline, since an empty write never
        // reaches the kernel.
        w.push(("cpuset.cpus", "\n".into()));
    }
    if res.pids.is_none() {
        w.push(("pids.max", "max".into()));
    }
    if res.io_weight.is_none() {
        w.push(("io.weight", "default 100".into()));
        w.push(("io.bfq.weight", "100".into()));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> Resources {
        Resources::default()
    }

    #[test]
    fn conversions() {
        let shares = [(1, 2), (100, 2597), (200, 5219), (10_000, 262_144)];
        for (w, s) in shares {
            assert_eq!(cpu_weight_to_shares(w), s, "weight {w}");
        }
        let blkio = [(1, 10), (100, 19), (10_000, 1000), (5000, 504)];
        for (w, b) in blkio {
            assert_eq!(io_weight_to_blkio(w), b, "io weight {w}");
        }
        let bfq = [(1, 1), (100, 10), (10_000, 1000)];
        for (w, b) in bfq {
            assert_eq!(io_weight_to_bfq(w), b, "io weight {w}");
        }
        let quota = [
            (0.5, 50_000),
            (2.0, 200_000),
            (0.001, 1_000),
            (1.234567, 123_457),
        ];
        for (c, q) in quota {
            assert_eq!(cpus_to_quota(c), q, "cpus {c}");
        }
    }

    type V1Case = (Resources, Vec<(Controller, &'static str, &'static str)>);

    #[test]
    fn v1_table() {
        use Controller::*;
        let cases: Vec<V1Case> = vec![
            (res(), vec![]),
            (
                Resources {
                    memory: Some(64 << 20),
                    ..res()
                },
                vec![
                    (Memory, "memory.limit_in_bytes", "67108864"),
                    (Memory, "memory.memsw.limit_in_bytes", "67108864"),
                ],
            ),
            (
                Resources {
                    cpus: Some(0.5),
                    cpu_weight: Some(200),
                    ..res()
                },
                vec![
                    (Cpu, "cpu.cfs_period_us", "100000"),
                    (Cpu, "cpu.cfs_quota_us", "50000"),
                    (Cpu, "cpu.shares", "5219"),
                ],
            ),
            (
                Resources {
                    cpuset: Some("0-1".into()),
                    pids: Some(20),
                    io_weight: Some(100),
                    ..res()
                },
                vec![
                    (Cpuset, "cpuset.cpus", "0-1"),
                    (Pids, "pids.max", "20"),
                    (Blkio, "blkio.weight", "19"),
                    (Blkio, "blkio.bfq.weight", "10"),
                ],
            ),
        ];
        for (r, want) in cases {
            let got = v1_writes(&r);
            let got: Vec<(Controller, &str, &str)> =
                got.iter().map(|(c, f, v)| (*c, *f, v.as_str())).collect();
            assert_eq!(got, want, "for {r:?}");
        }
    }

    #[test]
    fn v2_table() {
        let cases: Vec<(Resources, Vec<(&str, &str)>)> = vec![
            (res(), vec![]),
            (
                Resources {
                    memory: Some(64 << 20),
                    cpus: Some(1.5),
                    ..res()
                },
                vec![
                    ("memory.max", "67108864"),
                    ("memory.swap.max", "0"),
                    ("cpu.max", "150000 100000"),
                ],
            ),
            (
                Resources {
                    cpu_weight: Some(200),
                    cpuset: Some("0".into()),
                    pids: Some(20),
                    io_weight: Some(500),
                    ..res()
                },
                vec![
                    ("cpu.weight", "200"),
                    ("cpuset.cpus", "0"),
                    ("pids.max", "20"),
                    ("io.weight", "default 500"),
                    ("io.bfq.weight", "50"),
                ],
            ),
        ];
        for (r, want) in cases {
            let got = v2_writes(&r);
            let got: Vec<(&str, &str)> = got.iter().map(|(f, v)| (*f, v.as_str())).collect();
            assert_eq!(got, want, "for {r:?}");
        }
    }

    #[test]
    fn resets_cover_exactly_the_absent_limits() {
        let all = Resources {
            memory: Some(1 << 30),
            cpus: Some(1.0),
            cpu_weight: Some(100),
            cpuset: Some("0".into()),
            pids: Some(10),
            io_weight: Some(100),
            io_devices: vec![],
        };
        assert!(v1_resets(&all).is_empty());
        assert!(v2_resets(&all).is_empty());
        let files: Vec<&str> = v1_resets(&res()).iter().map(|w| w.1).collect();
        assert_eq!(
            files,
            [
                "memory.memsw.limit_in_bytes",
                "memory.limit_in_bytes",
                "cpu.cfs_quota_us",
                "cpu.shares",
                "pids.max",
                "blkio.weight",
                "blkio.bfq.weight"
            ]
        );
        let v2: Vec<(&str, String)> = v2_resets(&res());
        assert!(v2.contains(&("cpu.max", "max 100000".to_string())));
        assert!(v2.contains(&("cpuset.cpus", "\n".to_string())));
    }

    #[test]
    fn devices_table() {
        let w = v1_device_writes();
        assert_eq!(w[0], (Controller::Devices, "devices.deny", "a".to_string()));
        let allows: Vec<&str> = w[1..].iter().map(|x| x.2.as_str()).collect();
        assert_eq!(
            allows,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm"
            ]
        );
        assert!(w[1..].iter().all(|x| x.1 == "devices.allow"));
    }

    #[test]
    fn policies() {
        assert_eq!(file_policy("memory.max"), FilePolicy::Required);
        assert_eq!(file_policy("memory.swap.max"), FilePolicy::IfExists);
        assert_eq!(
            file_policy("blkio.bfq.weight"),
            file_policy("blkio.weight"),
            "alternatives share a group"
        );
        assert_eq!(
            v2_required_controllers(&Resources {
                memory: Some(1),
                cpu_weight: Some(1),
                ..res()
            }),
            ["cpu", "memory"]
        );
    }

    #[test]
    fn controller_names_round_trip() {
        for c in [
            Controller::Cpu,
            Controller::CpuAcct,
            Controller::Cpuset,
            Controller::Memory,
            Controller::Systemd,
            Controller::Pids,
        ] {
            assert_eq!(Controller::from_mount_option(c.name()), Some(c));
        }
        assert_eq!(Controller::from_mount_option("rw"), None);
    }

    #[test]
    fn io_throttle_writes() {
        let t = |major, minor, r, w| IoThrottle {
            major,
            minor,
            read_bps: r,
            write_bps: w,
            ..Default::default()
        };
        let b = |f: &str, v: &str| (Controller::Blkio, f.to_string(), v.to_string());
        let v1 = |io: &[IoThrottle], limited: &[(u64, u64)]| -> Vec<(Controller, String, String)> {
            v1_io_writes(io, limited)
                .into_iter()
                .map(|(c, f, v)| (c, f.to_string(), v))
                .collect()
        };
        // Create: only what is set.
        assert_eq!(
            v1(&[t(7, 3, None, Some(4 << 20))], &[]),
            vec![b("blkio.throttle.write_bps_device", "7:3 4194304")]
        );
        // Update: the read limit moves to another device, the write limit is lifted.
        assert_eq!(
            v1(&[t(8, 0, Some(100), None)], &[(7, 3)]),
            vec![
                b("blkio.throttle.read_bps_device", "7:3 0"),
                b("blkio.throttle.read_bps_device", "8:0 100"),
                b("blkio.throttle.write_bps_device", "7:3 0"),
                b("blkio.throttle.read_iops_device", "7:3 0"),
                b("blkio.throttle.write_iops_device", "7:3 0"),
            ]
        );
        // A device still limited keeps its value without a lift first.
        assert_eq!(
            v1(&[t(7, 3, None, Some(5))], &[(7, 3)]),
            vec![
                b("blkio.throttle.read_bps_device", "7:3 0"),
                b("blkio.throttle.write_bps_device", "7:3 5"),
                b("blkio.throttle.read_iops_device", "7:3 0"),
                b("blkio.throttle.write_iops_device", "7:3 0"),
            ]
        );
        let full = IoThrottle {
            major: 259,
            minor: 1,
            read_bps: Some(1),
            write_bps: Some(2),
            read_iops: Some(3),
            write_iops: Some(4),
        };
        assert_eq!(
            v2_io_writes(&[full, t(7, 3, None, Some(9))], &[(8, 0), (7, 3)]),
            vec![
                (
                    "io.max",
                    "8:0 rbps=max wbps=max riops=max wiops=max".to_string()
                ),
                ("io.max", "259:1 rbps=1 wbps=2 riops=3 wiops=4".to_string()),
                (
                    "io.max",
                    "7:3 rbps=max wbps=9 riops=max wiops=max".to_string()
                ),
            ]
        );
        assert_eq!(v2_io_writes(&[], &[]), vec![]);
    }

    #[test]
    fn limited_devices_of_the_kernel_files() {
        let cases: &[(&str, Vec<(u64, u64)>)] = &[
            ("", vec![]),
            ("7:3 4194304\n8:0 100\n", vec![(7, 3), (8, 0)]),
            // v1 lists a lifted rule as 0 until it is gone.
            ("7:3 0\n", vec![]),
            (
                "259:1 rbps=1 wbps=max riops=max wiops=max\n7:3 rbps=max wbps=max riops=max wiops=max\n",
                vec![(259, 1)],
            ),
            ("garbage\n7:x 5\n", vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(&limited_devices(text), want, "{text:?}");
        }
    }
}
