//! cgroup v1 (and hybrid) executor: one directory per mounted hierarchy, plus the cgroup2
//! `unified` one on hybrid hosts. Writes what `limits::v1_writes` decides.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::DevicesController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies::{mountinfo_self, Mountinfo};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::systemd::SystemdController;
use cgroups_rs::fs::Subsystem;
use cgroups_rs::FreezerState;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::CgroupError;
use super::files;
use super::limits::{self, file_policy, Controller, FilePolicy};
use super::{CgroupStats, ContainerCgroup, Dir, Hierarchy};
use crate::spec::Resources;

/// Kill rounds before `kill_all` gives up.
const KILL_ROUNDS: u32 = 20;

/// v1 memory.limit_in_bytes at or above this means "unlimited".
const V1_UNLIMITED: u64 = 1 << 62;

/// The host's v1 hierarchies, from /proc/self/mountinfo read once per process (mounts of
/// cgroup hierarchies do not change under a running supervisor).
pub(super) fn mounted_hierarchies() -> &'static [Hierarchy] {
    static MOUNTED: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    MOUNTED.get_or_init(|| from_mountinfo(&mountinfo_self()))
}

fn from_mountinfo(mounts: &[Mountinfo]) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in mounts.iter().filter(|m| m.fs_type.0 == "cgroup") {
        let controllers: Vec<Controller> = m
            .super_opts
            .iter()
            .filter_map(|o| Controller::from_mount_option(o))
            .collect();
        // The same hierarchy mounted twice (bind mounts) is used once.
        if controllers.is_empty() || out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(Hierarchy {
            controllers,
            mount: m.mount_point.clone(),
        });
    }
    out
}

/// Hierarchies of a tempdir laid out like /sys/fs/cgroup: one dir per hierarchy, named after
/// its controllers ("cpu,cpuacct", "systemd" for name=systemd); symlinks and `unified` skipped.
pub(super) fn scan_hierarchies(root: &Path) -> Result<Vec<Hierarchy>, CgroupError> {
    let detect = |e: std::io::Error| CgroupError::Detect {
        path: root.to_path_buf(),
        source: e.into(),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(detect)? {
        let entry = entry.map_err(detect)?;
        if !entry.file_type().map_err(detect)?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let controllers: Vec<Controller> = name
            .split(',')
            .filter_map(|o| match o {
                "systemd" => Some(Controller::Systemd),
                o => Controller::from_mount_option(o),
            })
            .collect();
        if !controllers.is_empty() {
            out.push(Hierarchy {
                controllers,
                mount: entry.path(),
            });
        }
    }
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    Ok(out)
}

/// The cgroups-rs handle for a v1 dir: cpuset first, since its creation copies the parent's
/// cpus and mems. `None` for the cgroup2 dir of a hybrid host and for hierarchies cgroups-rs
/// has no type for (misc): those are handled with plain mkdir/rmdir.
fn rs_handle(d: &Dir) -> Option<Subsystem> {
    let (p, m) = (d.path.clone(), d.mount.clone());
    let order = [
        Controller::Cpuset,
        Controller::Freezer,
        Controller::Memory,
        Controller::Cpu,
        Controller::CpuAcct,
        Controller::Pids,
        Controller::Devices,
        Controller::Blkio,
        Controller::Systemd,
    ];
    let c = order.into_iter().find(|c| d.has(*c))?;
    Some(match c {
        Controller::Cpuset => Subsystem::CpuSet(CpuSetController::new(p, m, false)),
        Controller::Freezer => Subsystem::Freezer(FreezerController::new(p, m, false)),
        Controller::Memory => Subsystem::Mem(MemController::new(p, m, false)),
        Controller::Cpu => Subsystem::Cpu(CpuController::new(p, m, false)),
        Controller::CpuAcct => Subsystem::CpuAcct(CpuAcctController::new(p, m)),
        Controller::Pids => Subsystem::Pid(PidController::new(p, m, false)),
        Controller::Devices => Subsystem::Devices(DevicesController::new(p, m)),
        Controller::Blkio => Subsystem::BlkIo(BlkIoController::new(p, m, false)),
        _ => Subsystem::Systemd(SystemdController::new(p, m, false)),
    })
}

fn find(dirs: &[Dir], c: Controller) -> Option<&Dir> {
    dirs.iter().find(|d| d.has(c))
}

/// Resolves translated writes to paths. A limit whose hierarchy is not mounted is an error
/// when `required`, else skipped.
fn resolve(
    dirs: &[Dir],
    writes: Vec<(Controller, &'static str, String)>,
    required: bool,
) -> Result<Vec<(PathBuf, &'static str, String)>, CgroupError> {
    let mut out = Vec::with_capacity(writes.len());
    for (c, file, value) in writes {
        match find(dirs, c) {
            Some(d) => out.push((d.path.clone(), file, value)),
            None if required && file_policy(file) == FilePolicy::Required => {
                return Err(CgroupError::ControllerMissing {
                    controller: c.to_string(),
                    path: dirs.first().map(|d| d.mount.clone()).unwrap_or_default(),
                })
            }
            None => tracing::debug!(controller = %c, file, "no such v1 hierarchy; skipped"),
        }
    }
    Ok(out)
}

pub(super) fn create(dirs: &[Dir], res: &Resources) -> Result<(), CgroupError> {
    for d in dirs {
        match rs_handle(d) {
            Some(s) => s
                .to_controller()
                .create()
                .map_err(|e| CgroupError::Create {
                    path: d.path.clone(),
                    source: e.into(),
                })?,
            // cgroups-rs ignores cgroup2 mounts on hybrid hosts and has no misc type.
            None => std::fs::create_dir_all(&d.path).map_err(|e| CgroupError::Create {
                path: d.path.clone(),
                source: e.into(),
            })?,
        }
    }

    // cgroups-rs copies the parent's cpus/mems on creation but only logs a failure: check, as
    // no task can join a v1 cpuset cgroup with either empty.
    if let Some(cs) = find(dirs, Controller::Cpuset) {
        for file in ["cpuset.mems", "cpuset.cpus"] {
            if files::read(&cs.path.join(file))?.trim().is_empty() {
                return Err(CgroupError::CpusetEmpty {
                    path: cs.path.clone(),
                    file,
                });
            }
        }
    }

    let mut writes = resolve(dirs, limits::v1_writes(res), true)?;
    writes.extend(resolve(
        dirs,
        limits::v1_io_writes(&super::io_throttles(res)?, &[]),
        true,
    )?);
    if find(dirs, Controller::Devices).is_some() {
        writes.extend(resolve(dirs, limits::v1_device_writes(), true)?);
    } else {
        tracing::warn!(
            "no v1 devices hierarchy: container device access is not restricted by cgroup"
        );
    }
    files::apply_writes(&writes)
}

pub(super) fn update(dirs: &[Dir], res: &Resources) -> Result<(), CgroupError> {
    // Resets only touch files this kernel has.
    let mut writes: Vec<_> = resolve(dirs, limits::v1_resets(res), false)?
        .into_iter()
        .filter(|(d, f, _)| d.join(f).exists())
        .collect();
    writes.extend(resolve(dirs, limits::v1_writes(res), true)?);
    // Throttles: set the spec's, lift those of devices it no longer names.
    let mut limited = Vec::new();
    if let Some(b) = find(dirs, Controller::Blkio) {
        for file in limits::V1_THROTTLE_FILES {
            if let Some(text) = files::read_opt(&b.path.join(file))? {
                limited.extend(limits::limited_devices(&text));
            }
        }
    }
    limited.sort();
    limited.dedup();
    writes.extend(resolve(
        dirs,
        limits::v1_io_writes(&super::io_throttles(res)?, &limited),
        true,
    )?);
    if res.cpuset.is_none() {
        if let Some(cs) = find(dirs, Controller::Cpuset) {
            if let Some(parent) = cs.path.parent() {
                let cpus = files::read(&parent.join("cpuset.cpus"))?;
                writes.push((cs.path.clone(), "cpuset.cpus", cpus.trim().to_string()));
            }
        }
    }
    files::apply_writes(&writes)
}

fn freezer_err(step: &'static str, d: &Dir, e: cgroups_rs::fs::error::Error) -> CgroupError {
    CgroupError::Freezer {
        step,
        path: d.path.clone(),
        source: e.into(),
    }
}

/// Freezes (and waits for FROZEN, at most `FREEZE_TIMEOUT`) or thaws through the freezer
/// hierarchy.
pub(super) fn set_frozen(dirs: &[Dir], frozen: bool) -> Result<(), CgroupError> {
    let d = find(dirs, Controller::Freezer).ok_or_else(|| CgroupError::ControllerMissing {
        controller: "freezer".into(),
        path: dirs.first().map(|d| d.path.clone()).unwrap_or_default(),
    })?;
    let f = FreezerController::new(d.path.clone(), d.mount.clone(), false);
    if !frozen {
        return f.thaw().map_err(|e| freezer_err("thawing", d, e));
    }
    f.freeze().map_err(|e| freezer_err("freezing", d, e))?;
    super::wait_frozen(&d.path, || {
        f.state()
            .map(|s| matches!(s, FreezerState::Frozen))
            .map_err(|e| freezer_err("reading the freezer state of", d, e))
    })
}

/// Freeze, SIGKILL every pid, thaw, until empty.
pub(super) fn kill_all(cg: &ContainerCgroup) -> Result<(), CgroupError> {
    let freezer = find(&cg.dirs, Controller::Freezer)
        .filter(|d| d.path.is_dir())
        .map(|d| {
            (
                d,
                FreezerController::new(d.path.clone(), d.mount.clone(), false),
            )
        });

    for round in 0..KILL_ROUNDS {
        if cg.pids()?.is_empty() {
            return Ok(());
        }
        let mut frozen = false;
        if let Some((d, f)) = &freezer {
            // Killing unfrozen still works (a fork may slip through, hence the rounds).
            match f.freeze() {
                Ok(()) => frozen = true,
                Err(e) => tracing::debug!(path = %d.path.display(), "freezing failed: {e}"),
            }
            // Wait briefly for FROZEN; a task stuck in D state must not stall the kill.
            for _ in 0..20 {
                if !frozen || matches!(f.state(), Ok(FreezerState::Frozen)) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        let signalled = cg.pids().and_then(|pids| signal_all(cg, &pids));
        if let (Some((d, f)), true) = (&freezer, frozen) {
            // SIGKILLed tasks only die once thawed.
            f.thaw().map_err(|e| freezer_err("thawing", d, e))?;
        }
        signalled?;
        std::thread::sleep(Duration::from_millis((1u64 << round).min(20)));
    }
    let pids = cg.pids()?;
    if pids.is_empty() {
        return Ok(());
    }
    Err(CgroupError::KillTimeout {
        path: cg.dirs[0].path.clone(),
        pids,
        rounds: KILL_ROUNDS,
    })
}

/// SIGKILLs each pid; one already gone is fine.
pub(super) fn signal_all(cg: &ContainerCgroup, pids: &[i32]) -> Result<(), CgroupError> {
    for &pid in pids.iter().filter(|p| **p > 0) {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(CgroupError::Kill {
                    pid,
                    path: cg.dirs[0].path.clone(),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

/// Removes one hierarchy's dir (cgroups-rs: removes sub-cgroups first and retries with
/// backoff while the kernel reports it busy).
pub(super) fn remove(d: &Dir) -> Result<(), CgroupError> {
    match rs_handle(d) {
        Some(s) => s.to_controller().delete().map_err(|e| CgroupError::Remove {
            path: d.path.clone(),
            source: e.into(),
        }),
        None => files::rmdir_retry(&d.path),
    }
}

/// Reads only the five figures needed (cgroups-rs's memory_stat reads a dozen files and turns
/// read errors into zeros).
pub(super) fn stats(dirs: &[Dir]) -> Result<CgroupStats, CgroupError> {
    let mut s = CgroupStats::default();
    if let Some(d) = find(dirs, Controller::CpuAcct) {
        s.cpu_usage_ns = files::read_u64_or_zero(&d.path.join("cpuacct.usage"))?;
    } else if let Some(d) = find(dirs, Controller::Unified) {
        s.cpu_usage_ns = files::read_keyed_or_zero(&d.path.join("cpu.stat"), "usage_usec")? * 1000;
    }
    if let Some(d) = find(dirs, Controller::Memory) {
        s.memory_bytes = files::read_u64_or_zero(&d.path.join("memory.usage_in_bytes"))?;
        let limit = files::read_u64_or_zero(&d.path.join("memory.limit_in_bytes"))?;
        s.memory_limit = (limit > 0 && limit < V1_UNLIMITED).then_some(limit);
        s.oom_kills = files::read_keyed_or_zero(&d.path.join("memory.oom_control"), "oom_kill")?;
    }
    if let Some(d) = find(dirs, Controller::Pids) {
        s.pids_current = files::read_u64_or_zero(&d.path.join("pids.current"))?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_to_hierarchies() {
        let mi = |point: &str, opts: &[&str], fs: &str| Mountinfo {
            mount_root: "/".into(),
            mount_point: point.into(),
            fs_type: (fs.to_string(), None),
            super_opts: opts.iter().map(|s| s.to_string()).collect(),
        };
        let mounts = [
            mi(
                "/sys/fs/cgroup/cpu,cpuacct",
                &["rw", "cpu", "cpuacct"],
                "cgroup",
            ),
            mi(
                "/sys/fs/cgroup/systemd",
                &["rw", "xattr", "name=systemd"],
                "cgroup",
            ),
            mi("/sys/fs/cgroup/unified", &["rw"], "cgroup2"),
            mi("/other/cpu,cpuacct", &["rw", "cpu", "cpuacct"], "cgroup"),
            mi("/sys/fs/cgroup/foo", &["rw", "name=foo"], "cgroup"),
        ];
        let h = from_mountinfo(&mounts);
        assert_eq!(
            h,
            [
                Hierarchy {
                    controllers: vec![Controller::Cpu, Controller::CpuAcct],
                    mount: "/sys/fs/cgroup/cpu,cpuacct".into()
                },
                Hierarchy {
                    controllers: vec![Controller::Systemd],
                    mount: "/sys/fs/cgroup/systemd".into()
                },
            ]
        );
    }
}
