//! The container's mounts as data (`Vec<Mount>`), decided here and executed in one place by
//! the container's init after pivot_root (`runtime::monitor`).

use std::path::PathBuf;

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A fresh filesystem instance (proc, tmpfs, devpts, mqueue, sysfs, cgroup2).
    Fs {
        fstype: String,
        data: Option<String>,
    },
    /// A host path, opened before pivot_root and bind-mounted from that fd afterwards, so no
    /// path inside the container can redirect it.
    Bind { host: PathBuf, recursive: bool },
}

/// One mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: String,
    /// `MsFlags` bits. `MS_RDONLY` on a bind is applied with a remount afterwards.
    pub flags: u64,
    /// Whether the target is a file (created empty when missing) rather than a dir.
    pub file: bool,
}

impl Mount {
    pub fn ms_flags(&self) -> MsFlags {
        MsFlags::from_bits_truncate(self.flags)
    }
}

/// Paths that read empty inside every container (SECURITY.md "Masked").
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths that are read-only inside every container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes bound from the host into the container's /dev: (name, major, minor).
pub const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks created in the container's /dev: (link, target).
pub const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];

/// Inputs that decide the mount list.
#[derive(Debug, Clone)]
pub struct MountInputs<'a> {
    /// Host files bound over /etc/hosts, /etc/hostname and /etc/resolv.conf.
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
    /// Whether the container has its own network namespace (sysfs needs one to show its own
    /// network devices).
    pub own_netns: bool,
    /// Mount a read-only cgroup2 fs at /sys/fs/cgroup (cgroup v2 hosts).
    pub cgroup2: bool,
    pub user_mounts: &'a [crate::spec::MountSpec],
}

fn bits(f: MsFlags) -> u64 {
    f.bits()
}

fn fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Mount {
    Mount {
        kind: MountKind::Fs {
            fstype: fstype.into(),
            data: data.map(str::to_string),
        },
        target: target.into(),
        flags: bits(flags),
        file: false,
    }
}

fn bind(host: PathBuf, target: &str, flags: MsFlags, file: bool) -> Mount {
    Mount {
        kind: MountKind::Bind {
            host,
            recursive: false,
        },
        target: target.into(),
        flags: bits(flags | MsFlags::MS_BIND),
        file,
    }
}

/// The mounts every container gets, in order, followed by the spec's own.
pub fn container_mounts(inp: &MountInputs<'_>) -> Vec<Mount> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut m = vec![
        fs("proc", "/proc", nosuid_nodev_noexec, None),
        // /dev is nodev: only the device nodes bound below (their own mounts) can be opened,
        // so a node made with mknod anywhere in the container is useless.
        fs(
            "tmpfs",
            "/dev",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
    ];
    // A plain bind each: nosuid and noexec would need a second mount call (a remount) per
    // node and change nothing, since execve and set-user-ID only ever apply to regular files.
    for (name, _, _) in DEVICES {
        m.push(bind(
            PathBuf::from(format!("/dev/{name}")),
            &format!("/dev/{name}"),
            MsFlags::empty(),
            true,
        ));
    }
    m.extend([
        fs(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        fs(
            "tmpfs",
            "/dev/shm",
            nosuid_nodev_noexec,
            Some("mode=1777,size=65536k"),
        ),
        fs("mqueue", "/dev/mqueue", nosuid_nodev_noexec, None),
    ]);
    if inp.own_netns {
        m.push(fs(
            "sysfs",
            "/sys",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        ));
    } else {
        // A new sysfs instance is refused in the host's netns; bind the host's read-only.
        let mut b = bind(
            "/sys".into(),
            "/sys",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            false,
        );
        b.kind = MountKind::Bind {
            host: "/sys".into(),
            recursive: true,
        };
        m.push(b);
    }
    if inp.cgroup2 {
        m.push(fs(
            "cgroup2",
            "/sys/fs/cgroup",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        ));
    }
    let ro_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m.push(bind(inp.hosts.clone(), "/etc/hosts", ro_nodev, true));
    m.push(bind(inp.hostname.clone(), "/etc/hostname", ro_nodev, true));
    m.push(bind(
        inp.resolv_conf.clone(),
        "/etc/resolv.conf",
        ro_nodev,
        true,
    ));
    for um in inp.user_mounts {
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if um.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        m.push(Mount {
            kind: MountKind::Bind {
                host: um.source.clone(),
                recursive: true,
            },
            target: um.target.clone(),
            flags: bits(flags | MsFlags::MS_BIND),
            file: !um.source.is_dir(),
        });
    }
    m
}

/// Where the host root cannot be pivoted (an initramfs), the mounts of the container's mount
/// namespace to detach before its rootfs is moved over `/`: every one that is neither the
/// rootfs (the last mount at `rootfs`), below it, nor one it is mounted on. Deepest first.
/// `None` when no mount is at `rootfs`.
pub fn mounts_to_detach(table: &str, rootfs: &str) -> Option<Vec<String>> {
    let entries = crate::mountinfo::parse(table);
    let root = entries.iter().rev().find(|e| e.mount_point == rootfs)?;
    let parent_of: std::collections::HashMap<u32, u32> =
        entries.iter().map(|e| (e.id, e.parent)).collect();
    let chain = |mut id: u32| {
        let mut ids = vec![id];
        while let Some(&p) = parent_of.get(&id) {
            if p == id || ids.contains(&p) {
                break;
            }
            ids.push(p);
            id = p;
        }
        ids
    };
    let holders = chain(root.id);
    Some(
        entries
            .iter()
            .rev()
            .filter(|e| !holders.contains(&e.id) && !chain(e.id).contains(&root.id))
            .map(|e| e.mount_point.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_move_of_the_root_detaches() {
        // An initramfs host: rootfs, its API filesystems, berth's state on a tmpfs at /run,
        // the container's overlay there, and its own mounts inside.
        let table = "1 0 0:1 / / rw - rootfs rootfs rw
20 1 0:20 / /proc rw - proc proc rw
21 1 0:21 / /sys rw - sysfs sysfs rw
22 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
23 1 0:5 / /dev rw - devtmpfs devtmpfs rw
24 23 0:23 / /dev/pts rw - devpts devpts rw
25 1 0:24 / /run rw - tmpfs tmpfs rw
26 25 0:25 / /run/berth/c1/scratch rw - tmpfs tmpfs rw
27 25 0:26 / /run/berth/c1/rootfs rw - overlay overlay rw,lowerdir=/l
28 27 0:27 / /run/berth/c1/rootfs/proc rw - proc proc rw
29 27 0:28 / /run/berth/c1/rootfs/dev rw - tmpfs tmpfs rw
30 25 0:29 / /run/berth/other/rootfs rw - overlay overlay rw,lowerdir=/m
";
        assert_eq!(
            mounts_to_detach(table, "/run/berth/c1/rootfs").unwrap(),
            [
                "/run/berth/other/rootfs",
                "/run/berth/c1/scratch",
                "/dev/pts",
                "/dev",
                "/sys/fs/cgroup",
                "/sys",
                "/proc",
            ]
        );
        assert_eq!(mounts_to_detach(table, "/nowhere"), None);
    }

    fn inputs(mounts: &[crate::spec::MountSpec], own_netns: bool) -> MountInputs<'_> {
        MountInputs {
            hosts: "/c/hosts".into(),
            hostname: "/c/hostname".into(),
            resolv_conf: "/c/resolv.conf".into(),
            own_netns,
            cgroup2: false,
            user_mounts: mounts,
        }
    }

    #[test]
    fn order_and_flags() {
        let m = container_mounts(&inputs(&[], true));
        let targets: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets[0], "/proc");
        assert_eq!(targets[1], "/dev");
        // devices come right after /dev and before anything mounted under it
        assert_eq!(
            &targets[2..8],
            &[
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        assert!(targets.contains(&"/etc/resolv.conf"));
        let dev = &m[1];
        assert!(dev.ms_flags().contains(MsFlags::MS_NODEV));
        let null = &m[2];
        assert!(
            !null.ms_flags().contains(MsFlags::MS_NODEV),
            "device binds must allow device access"
        );
        let sys = m.iter().find(|m| m.target == "/sys").unwrap();
        assert!(sys.ms_flags().contains(MsFlags::MS_RDONLY));
        assert!(matches!(sys.kind, MountKind::Fs { .. }));
    }

    #[test]
    fn host_network_binds_sysfs() {
        let m = container_mounts(&inputs(&[], false));
        let sys = m.iter().find(|m| m.target == "/sys").unwrap();
        assert_eq!(
            sys.kind,
            MountKind::Bind {
                host: "/sys".into(),
                recursive: true
            }
        );
        assert!(sys.ms_flags().contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn user_mounts_last_and_nodev() {
        let um = vec![crate::spec::MountSpec {
            source: "/tmp".into(),
            target: "/data".into(),
            readonly: true,
        }];
        let m = container_mounts(&inputs(&um, true));
        let last = m.last().unwrap();
        assert_eq!(last.target, "/data");
        assert!(last
            .ms_flags()
            .contains(MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_BIND));
        assert!(!last.file);
    }
}
