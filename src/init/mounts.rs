//! The filesystems an init mounts: the API filesystems, /run and /tmp, and the cgroup fs
//! (cgroup2, or a v1 hierarchy per controller on request), each only where nothing is mounted
//! yet. [`plan_mounts`] decides from the mount table; one loop mounts.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

/// Which cgroup fs an init mounts at /sys/fs/cgroup (`[init] cgroup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// The unified hierarchy (cgroup2).
    V2,
    /// A tmpfs with one v1 hierarchy per enabled controller (cpu and cpuacct together, as
    /// net_cls and net_prio, the way systemd mounts them).
    V1,
}

/// One mount an init makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitMount {
    pub target: String,
    pub fstype: &'static str,
    pub source: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

fn m(target: &str, fstype: &'static str, flags: MsFlags, data: Option<&str>) -> InitMount {
    InitMount {
        target: target.to_string(),
        fstype,
        source: fstype.to_string(),
        flags,
        data: data.map(str::to_string),
    }
}

/// The v1 hierarchies for the enabled controllers of `/proc/cgroups`: (dir, controllers)
/// plus the links (`cpu` -> `cpu,cpuacct`).
pub fn v1_hierarchies(proc_cgroups: &str) -> (Vec<String>, Vec<(String, String)>) {
    let enabled: Vec<&str> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then_some(f[0])
        })
        .collect();
    let mut dirs = Vec::new();
    let mut links = Vec::new();
    let mut taken = Vec::new();
    for pair in [["cpu", "cpuacct"], ["net_cls", "net_prio"]] {
        if pair.iter().all(|c| enabled.contains(c)) {
            let dir = pair.join(",");
            for c in pair {
                links.push((c.to_string(), dir.clone()));
                taken.push(c);
            }
            dirs.push(dir);
        }
    }
    for c in enabled {
        if !taken.contains(&c) {
            dirs.push(c.to_string());
        }
    }
    (dirs, links)
}

/// What to mount, in order, given the mount table and (for v1) `/proc/cgroups`.
pub fn plan_mounts(mountinfo: &str, cgroup: CgroupMode, proc_cgroups: &str) -> Vec<InitMount> {
    let mounted = crate::mountinfo::mount_points(mountinfo);
    let mut all = vec![
        m("/proc", "proc", NOSUID_NODEV_NOEXEC, None),
        m("/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
        m("/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=755")),
        InitMount {
            source: "devpts".into(),
            ..m(
                "/dev/pts",
                "devpts",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("gid=5,mode=620,ptmxmode=666"),
            )
        },
        InitMount {
            source: "shm".into(),
            ..m(
                "/dev/shm",
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=1777"),
            )
        },
        m(
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        ),
        m(
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    match cgroup {
        CgroupMode::V2 => all.push(InitMount {
            source: "cgroup2".into(),
            ..m(
                "/sys/fs/cgroup",
                "cgroup2",
                NOSUID_NODEV_NOEXEC,
                Some("nsdelegate"),
            )
        }),
        CgroupMode::V1 => {
            all.push(InitMount {
                source: "cgroup".into(),
                ..m(
                    "/sys/fs/cgroup",
                    "tmpfs",
                    NOSUID_NODEV_NOEXEC,
                    Some("mode=755"),
                )
            });
            let (dirs, _) = v1_hierarchies(proc_cgroups);
            for dir in dirs {
                all.push(InitMount {
                    source: "cgroup".into(),
                    ..m(
                        &format!("/sys/fs/cgroup/{dir}"),
                        "cgroup",
                        NOSUID_NODEV_NOEXEC,
                        Some(&dir),
                    )
                });
            }
        }
    }
    all.into_iter()
        .filter(|mnt| !mounted.contains(&mnt.target))
        .collect()
}

fn mount_one(mnt: &InitMount) {
    let _ = std::fs::create_dir_all(&mnt.target);
    if let Err(e) = mount(
        Some(mnt.source.as_str()),
        mnt.target.as_str(),
        Some(mnt.fstype),
        mnt.flags,
        mnt.data.as_deref(),
    ) {
        tracing::warn!("mounting {} at {}: {e}", mnt.fstype, mnt.target);
    }
}

fn mountinfo() -> String {
    crate::mountinfo::read_own().unwrap_or_default()
}

/// /proc (so that the mount table can be read) and /dev (for the console), when missing.
pub(super) fn mount_early() {
    if !Path::new("/proc/self/mountinfo").exists() {
        mount_one(&m("/proc", "proc", NOSUID_NODEV_NOEXEC, None));
    }
    let plan = plan_mounts(&mountinfo(), CgroupMode::V2, "");
    for mnt in plan.iter().filter(|p| p.target == "/dev") {
        mount_one(mnt);
    }
}

/// Everything else of the plan that is not mounted yet.
pub(super) fn mount_missing(cgroup: CgroupMode) {
    // The v1 controllers are known only once /proc is there; /sys/fs/cgroup only once /sys is.
    for mnt in plan_mounts(&mountinfo(), cgroup, "") {
        if mnt.target.starts_with("/sys/fs/cgroup") {
            break;
        }
        mount_one(&mnt);
    }
    let controllers = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    for mnt in plan_mounts(&mountinfo(), cgroup, &controllers) {
        mount_one(&mnt);
    }
    if cgroup == CgroupMode::V1 {
        for (link, dir) in v1_hierarchies(&controllers).1 {
            let path = Path::new("/sys/fs/cgroup").join(&link);
            if !path.exists() {
                let _ = std::os::unix::fs::symlink(&dir, &path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t1\t1
cpu\t0\t1\t1
cpuacct\t0\t1\t1
blkio\t0\t1\t1
memory\t0\t1\t1
devices\t0\t1\t1
freezer\t0\t1\t1
net_cls\t0\t1\t1
perf_event\t0\t1\t1
net_prio\t0\t1\t1
hugetlb\t0\t1\t0
pids\t0\t1\t1
";

    fn targets(plan: &[InitMount]) -> Vec<&str> {
        plan.iter().map(|m| m.target.as_str()).collect()
    }

    #[test]
    fn an_empty_table_gets_everything_in_order() {
        let plan = plan_mounts("", CgroupMode::V2, "");
        assert_eq!(
            targets(&plan),
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/tmp",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(plan[7].fstype, "cgroup2");
    }

    #[test]
    fn what_is_mounted_is_left_alone() {
        // As after the kernel mounted devtmpfs and an earlier stage mounted /proc and /sys.
        let info = "1 0 0:2 / / rw - rootfs rootfs rw
20 1 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw
21 1 0:20 / /proc rw - proc proc rw
22 1 0:21 / /sys rw - sysfs sysfs rw
23 22 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let plan = plan_mounts(info, CgroupMode::V2, "");
        assert_eq!(targets(&plan), ["/dev/pts", "/dev/shm", "/run", "/tmp"]);
    }

    #[test]
    fn v1_mounts_a_hierarchy_per_controller() {
        let plan = plan_mounts("", CgroupMode::V1, PROC_CGROUPS);
        let cg: Vec<_> = plan
            .iter()
            .filter(|m| m.target.starts_with("/sys/fs/cgroup"))
            .map(|m| (m.target.as_str(), m.fstype, m.data.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            cg,
            [
                ("/sys/fs/cgroup", "tmpfs", "mode=755"),
                ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                (
                    "/sys/fs/cgroup/net_cls,net_prio",
                    "cgroup",
                    "net_cls,net_prio"
                ),
                ("/sys/fs/cgroup/cpuset", "cgroup", "cpuset"),
                ("/sys/fs/cgroup/blkio", "cgroup", "blkio"),
                ("/sys/fs/cgroup/memory", "cgroup", "memory"),
                ("/sys/fs/cgroup/devices", "cgroup", "devices"),
                ("/sys/fs/cgroup/freezer", "cgroup", "freezer"),
                ("/sys/fs/cgroup/perf_event", "cgroup", "perf_event"),
                ("/sys/fs/cgroup/pids", "cgroup", "pids"),
            ]
        );
        let (_, links) = v1_hierarchies(PROC_CGROUPS);
        assert!(links.contains(&("cpuacct".to_string(), "cpu,cpuacct".to_string())));
    }
}
