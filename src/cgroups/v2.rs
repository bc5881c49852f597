//! cgroup v2 executor: one directory under the cgroup2 mount, controllers enabled in
//! `cgroup.subtree_control` from the root down. Writes what `limits::v2_writes` decides.
//!
//! Written directly rather than through cgroups-rs: its v2 code hardcodes /sys/fs/cgroup as the
//! mount (so it cannot run against a fixture root) and enables every available controller,
//! ignoring failures.
//!
//! Devices: v2 has no devices controller; `devices` attaches the BPF device program for
//! `limits::ALLOWED_DEVICES` to the cgroup once its limits are written, before any process
//! joins it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::devices::{self, DeviceControl};
use super::error::CgroupError;
use super::files;
use super::limits;
use super::{v1, CgroupStats, ContainerCgroup, Dir};
use crate::spec::Resources;

const KILL_ROUNDS: u32 = 20;

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Makes sure `want` are enabled for `dir`'s children. Failing to enable one that `required`
/// does not name is only logged.
fn enable(dir: &Path, want: &[&str], required: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = files::read(&path)?;
    let enabled: Vec<&str> = current
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if files::write(&path, &all.join(" ")).is_ok() {
        return Ok(());
    }
    // One at a time, so that an optional controller the kernel refuses does not block the rest.
    for c in missing {
        if let Err(e) = files::write(&path, &format!("+{c}")) {
            if required.contains(&c) {
                return Err(CgroupError::EnableControllers {
                    controllers: vec![c.to_string()],
                    path: dir.to_path_buf(),
                    source: e.into(),
                });
            }
            tracing::debug!(controller = c, dir = %dir.display(), "optional controller not enabled: {e}");
        }
    }
    Ok(())
}

pub(super) fn create(
    root: &Path,
    rel: &Path,
    dir: &Dir,
    res: &Resources,
    device_control: DeviceControl,
) -> Result<(), CgroupError> {
    let available = files::read(&root.join("cgroup.controllers"))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let required = limits::v2_required_controllers(res);
    if let Some(c) = required.iter().find(|c| !available.contains(c)) {
        return Err(CgroupError::ControllerMissing {
            controller: c.to_string(),
            path: root.to_path_buf(),
        });
    }
    let want: Vec<&str> = limits::V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.contains(c))
        .collect();

    let mut cur = root.to_path_buf();
    enable(&cur, &want, &required)?;
    for comp in rel.parent().unwrap_or(Path::new("")).components() {
        cur.push(comp);
        mkdir(&cur)?;
        enable(&cur, &want, &required)?;
    }
    mkdir(&dir.path)?;
    let mut writes = limits::v2_writes(res);
    writes.extend(limits::v2_io_writes(&super::io_throttles(res)?, &[]));
    files::apply_writes(&paths(dir, writes))?;
    devices::attach(&dir.path, limits::ALLOWED_DEVICES, device_control)
}

fn paths(dir: &Dir, writes: Vec<(&'static str, String)>) -> Vec<(PathBuf, &'static str, String)> {
    writes
        .into_iter()
        .map(|(f, v)| (dir.path.clone(), f, v))
        .collect()
}

pub(super) fn update(
    dir: &Dir,
    res: &Resources,
    device_control: DeviceControl,
) -> Result<(), CgroupError> {
    // Resets only touch files present (controllers the host lacks have none).
    let mut writes: Vec<_> = paths(dir, limits::v2_resets(res))
        .into_iter()
        .filter(|(d, f, _)| d.join(f).exists())
        .collect();
    writes.extend(paths(dir, limits::v2_writes(res)));
    // Throttles: set the spec's, lift those of devices it no longer names.
    let limited = files::read_opt(&dir.path.join("io.max"))?
        .map(|t| limits::limited_devices(&t))
        .unwrap_or_default();
    writes.extend(paths(
        dir,
        limits::v2_io_writes(&super::io_throttles(res)?, &limited),
    ));
    files::apply_writes(&writes)?;
    devices::attach(&dir.path, limits::ALLOWED_DEVICES, device_control)
}

/// Writes `cgroup.freeze` and, to freeze, waits (at most `FREEZE_TIMEOUT`) until
/// `cgroup.events` says `frozen 1`.
pub(super) fn set_frozen(dir: &Dir, frozen: bool) -> Result<(), CgroupError> {
    files::write(
        &dir.path.join("cgroup.freeze"),
        if frozen { "1" } else { "0" },
    )?;
    if !frozen {
        return Ok(());
    }
    let events = dir.path.join("cgroup.events");
    super::wait_frozen(&dir.path, || {
        Ok(files::read_keyed_or_zero(&events, "frozen")? == 1)
    })
}

/// `cgroup.kill` when the kernel has it (5.14+), else freeze, SIGKILL each pid, thaw; until
/// the cgroup is empty.
pub(super) fn kill_all(cg: &ContainerCgroup) -> Result<(), CgroupError> {
    let dir = &cg.dirs[0].path;
    let kill = dir.join("cgroup.kill");
    let freeze = dir.join("cgroup.freeze");
    let has_kill = kill.exists();
    for round in 0..KILL_ROUNDS {
        if cg.pids()?.is_empty() {
            return Ok(());
        }
        if has_kill {
            files::write(&kill, "1")?;
        } else {
            let frozen = freeze.exists() && files::write(&freeze, "1").is_ok();
            let signalled = cg.pids().and_then(|pids| v1::signal_all(cg, &pids));
            if frozen {
                files::write(&freeze, "0")?;
            }
            signalled?;
        }
        std::thread::sleep(Duration::from_millis((1u64 << round).min(20)));
    }
    let pids = cg.pids()?;
    if pids.is_empty() {
        return Ok(());
    }
    Err(CgroupError::KillTimeout {
        path: dir.clone(),
        pids,
        rounds: KILL_ROUNDS,
    })
}

pub(super) fn stats(dir: &Dir) -> Result<CgroupStats, CgroupError> {
    let p = &dir.path;
    let max = files::read_opt(&p.join("memory.max"))?;
    let memory_limit = match max.as_deref().map(str::trim) {
        None | Some("max") => None,
        Some(v) => Some(files::parse_u64(&p.join("memory.max"), v)?),
    };
    Ok(CgroupStats {
        cpu_usage_ns: files::read_keyed_or_zero(&p.join("cpu.stat"), "usage_usec")? * 1000,
        memory_bytes: files::read_u64_or_zero(&p.join("memory.current"))?,
        memory_limit,
        pids_current: files::read_u64_or_zero(&p.join("pids.current"))?,
        oom_kills: files::read_keyed_or_zero(&p.join("memory.events"), "oom_kill")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::CgroupMode;
    use super::*;
    use std::fs;
    use DeviceControl::BestEffort;

    /// Files the kernel would put in a v2 cgroup with the given controllers enabled.
    fn cgroup_files(dir: &Path, with_io_weight: bool) {
        fs::create_dir_all(dir).unwrap();
        let mut names = vec![
            "cgroup.procs",
            "cgroup.subtree_control",
            "cgroup.kill",
            "cgroup.freeze",
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "cpu.weight",
            "cpuset.cpus",
            "pids.max",
            "io.bfq.weight",
        ];
        if with_io_weight {
            names.push("io.weight");
        }
        for n in names {
            fs::write(dir.join(n), "").unwrap();
        }
    }

    fn fixture(with_io_weight: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        cgroup_files(&root.join("berth"), false);
        fs::write(
            root.join("berth/cgroup.subtree_control"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        cgroup_files(&root.join("berth/web"), with_io_weight);
        t
    }

    fn read(p: PathBuf) -> String {
        fs::read_to_string(p).unwrap()
    }

    fn full() -> Resources {
        Resources {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            cpu_weight: Some(200),
            cpuset: Some("0".into()),
            pids: Some(20),
            io_weight: Some(100),
            io_devices: vec![],
        }
    }

    #[test]
    fn create_writes_limits_and_enables_controllers() {
        let t = fixture(false);
        let root = t.path();
        let cg =
            ContainerCgroup::create_at(root, CgroupMode::V2, "berth", "web", &full(), BestEffort)
                .unwrap();
        let leaf = root.join("berth/web");
        // Root lacked cpuset, cpu and io; the parent already had everything.
        assert_eq!(
            read(root.join("cgroup.subtree_control")),
            "+cpu +cpuset +io"
        );
        assert_eq!(
            read(root.join("berth/cgroup.subtree_control")),
            "cpuset cpu io memory pids\n"
        );
        assert_eq!(read(leaf.join("memory.max")), "67108864");
        assert_eq!(read(leaf.join("memory.swap.max")), "0");
        assert_eq!(read(leaf.join("cpu.max")), "50000 100000");
        assert_eq!(read(leaf.join("cpu.weight")), "200");
        assert_eq!(read(leaf.join("cpuset.cpus")), "0");
        assert_eq!(read(leaf.join("pids.max")), "20");
        // No io.weight in this fixture: the BFQ file takes the (scaled) weight.
        assert_eq!(read(leaf.join("io.bfq.weight")), "10");
        assert_eq!(cg.join_files(), vec![leaf.join("cgroup.procs")]);
        assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
        cg.kill_all().unwrap();
    }

    #[test]
    fn io_weight_preferred_over_bfq() {
        let t = fixture(true);
        let res = Resources {
            io_weight: Some(300),
            ..Resources::default()
        };
        ContainerCgroup::create_at(t.path(), CgroupMode::V2, "berth", "web", &res, BestEffort)
            .unwrap();
        let leaf = t.path().join("berth/web");
        assert_eq!(read(leaf.join("io.weight")), "default 300");
        assert_eq!(read(leaf.join("io.bfq.weight")), "");
        assert_eq!(
            read(leaf.join("memory.max")),
            "",
            "no memory limit, no write"
        );
    }

    #[test]
    fn update_resets_absent_limits() {
        let t = fixture(true);
        let cg = ContainerCgroup::create_at(
            t.path(),
            CgroupMode::V2,
            "berth",
            "web",
            &full(),
            BestEffort,
        )
        .unwrap();
        let res = Resources {
            memory: Some(128 << 20),
            ..Resources::default()
        };
        cg.update(&res, BestEffort).unwrap();
        let leaf = t.path().join("berth/web");
        assert_eq!(read(leaf.join("memory.max")), "134217728");
        assert_eq!(read(leaf.join("memory.swap.max")), "0");
        assert_eq!(read(leaf.join("cpu.max")), "max 100000");
        assert_eq!(read(leaf.join("cpu.weight")), "100");
        assert_eq!(read(leaf.join("cpuset.cpus")), "\n");
        assert_eq!(read(leaf.join("pids.max")), "max");
        assert_eq!(read(leaf.join("io.weight")), "default 100");
    }

    #[test]
    fn missing_required_controller_is_an_error() {
        let t = fixture(false);
        fs::write(t.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        let err = ContainerCgroup::create_at(
            t.path(),
            CgroupMode::V2,
            "berth",
            "web",
            &full(),
            BestEffort,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "cpuset"),
            "{err}"
        );
    }

    #[test]
    fn failed_write_names_the_file_and_removes_the_new_dir() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(root.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        // The leaf is created empty: memory.max does not exist, as with a disabled controller.
        let res = Resources {
            memory: Some(64 << 20),
            ..Resources::default()
        };
        let err = ContainerCgroup::create_at(root, CgroupMode::V2, "", "web", &res, BestEffort)
            .unwrap_err();
        match &err {
            CgroupError::Write { path, value, .. } => {
                assert_eq!(path, &root.join("web/memory.max"));
                assert_eq!(value, "67108864");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(!root.join("web").exists());
    }

    /// A dir that is no cgroup takes no device program (and without root none loads): with
    /// device control required, that is an error naming the cgroup, and nothing is left.
    #[test]
    fn required_device_control_refuses_without_a_program() {
        let t = fixture(false);
        let err = ContainerCgroup::create_at(
            t.path(),
            CgroupMode::V2,
            "berth",
            "db",
            &Resources::default(),
            DeviceControl::Required,
        )
        .unwrap_err();
        match &err {
            CgroupError::DeviceControl { path, .. } => assert_eq!(path, &t.path().join("berth/db")),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("best-effort"), "{err}");
        assert!(!t.path().join("berth/db").exists());
    }

    #[test]
    fn stats_from_files() {
        let t = fixture(false);
        let leaf = t.path().join("berth/web");
        fs::write(leaf.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        fs::write(leaf.join("memory.current"), "4096\n").unwrap();
        fs::write(leaf.join("memory.max"), "max\n").unwrap();
        fs::write(leaf.join("pids.current"), "3\n").unwrap();
        fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(leaf.join("cgroup.procs"), "10\n11\n").unwrap();
        let cg = ContainerCgroup::open_at(t.path(), CgroupMode::V2, "berth", "web")
            .unwrap()
            .expect("exists");
        assert_eq!(
            cg.stats().unwrap(),
            CgroupStats {
                cpu_usage_ns: 1_500_000,
                memory_bytes: 4096,
                memory_limit: None,
                pids_current: 3,
                oom_kills: 1
            }
        );
        assert_eq!(cg.pids().unwrap(), [10, 11]);
        fs::write(leaf.join("memory.max"), "1048576\n").unwrap();
        assert_eq!(cg.stats().unwrap().memory_limit, Some(1 << 20));
        assert!(
            ContainerCgroup::open_at(t.path(), CgroupMode::V2, "berth", "nope")
                .unwrap()
                .is_none()
        );
    }
}
