//! cgroups: the only writer under /sys/fs/cgroup.
//!
//! Owns creating, limiting, listing, killing and removing each container's cgroup on cgroup v1,
//! hybrid (v1 controllers plus a controller-less cgroup2 at /sys/fs/cgroup/unified) and pure v2
//! hosts. It never touches namespaces, mounts or processes other than the ones it finds inside
//! its own cgroups (which `kill_all` signals). A container's init joins by writing "0" into each
//! of `join_files()` itself before exec.
//!
//! `limits` is the pure translation of `Resources` into file writes; `v1` and `v2` execute it.
//! cgroups-rs provides mount detection and, on v1, directory creation (with the cpuset parent
//! copy), removal and the freezer; the rest is written directly where noted.

mod devices;
mod error;
mod files;
pub mod limits;
mod v1;
mod v2;

#[cfg(test)]
mod root_tests;

use std::path::{Component, Path, PathBuf};

pub use devices::DeviceControl;
pub use error::{CgroupError, CgroupErrors};
pub use limits::{Controller, DeviceAccess, DeviceKind, DeviceRule, ALLOWED_DEVICES};

use crate::spec::Resources;

/// The spec's per-device IO throttles with each device resolved to its numbers (a path that
/// is no block device now is an error naming it).
fn io_throttles(res: &Resources) -> Result<Vec<limits::IoThrottle>, CgroupError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    res.io_devices
        .iter()
        .map(|d| {
            let err = |source: error::Cause| CgroupError::IoDevice {
                path: d.device.clone(),
                source,
            };
            let m = std::fs::metadata(&d.device).map_err(|e| err(e.into()))?;
            if !m.file_type().is_block_device() {
                return Err(err("not a block device".into()));
            }
            let rdev = m.rdev();
            Ok(limits::IoThrottle {
                major: nix::sys::stat::major(rdev),
                minor: nix::sys::stat::minor(rdev),
                read_bps: d.read_bps,
                write_bps: d.write_bps,
                read_iops: d.read_iops,
                write_iops: d.write_iops,
            })
        })
        .collect()
}

/// Where the cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long [`ContainerCgroup::freeze`] waits for every task to stop (one in uninterruptible
/// sleep delays it).
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Polls `frozen` (the freezer state of cgroup `path`) every millisecond until it says so, at
/// most `FREEZE_TIMEOUT`.
fn wait_frozen(
    path: &Path,
    mut frozen: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
    while !frozen()? {
        if std::time::Instant::now() >= deadline {
            return Err(CgroupError::Freezer {
                step: "freezing",
                path: path.to_path_buf(),
                source: format!("not frozen after {FREEZE_TIMEOUT:?}").into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// v1 hierarchies plus a cgroup2 mount at /sys/fs/cgroup/unified (usually with no
    /// controllers; berth still creates a cgroup there to track and kill processes).
    Hybrid,
    /// /sys/fs/cgroup is cgroup2.
    V2,
}

/// Detects the host's cgroup mode from the filesystem magic of /sys/fs/cgroup.
pub fn cgroup_mode() -> CgroupMode {
    mode_of(Path::new(CGROUP_ROOT))
}

fn mode_of(root: &Path) -> CgroupMode {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    match statfs(root) {
        Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => CgroupMode::V2,
        _ => match statfs(&root.join("unified")) {
            Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => CgroupMode::Hybrid,
            _ => CgroupMode::V1,
        },
    }
}

/// Usage figures for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Current memory usage in bytes (v1 includes page cache, as memory.usage_in_bytes does).
    pub memory_bytes: u64,
    /// The memory hard limit, `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Number of tasks in the cgroup.
    pub pids_current: u64,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kills: u64,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Controllers co-mounted in it (`[Unified]` for a cgroup2 mount).
    pub controllers: Vec<Controller>,
    pub mount: PathBuf,
}

/// A container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    pub controllers: Vec<Controller>,
    pub mount: PathBuf,
    pub path: PathBuf,
}

impl Dir {
    fn has(&self, c: Controller) -> bool {
        self.controllers.contains(&c)
    }
}

/// A container's cgroup, one directory per hierarchy (`<mount>/<parent>/<name>`).
#[derive(Debug)]
pub struct ContainerCgroup {
    mode: CgroupMode,
    rel: PathBuf,
    dirs: Vec<Dir>,
}

impl ContainerCgroup {
    /// Creates `<parent>/<name>` in every hierarchy of this host and applies `res` and the
    /// device allowlist (v1's devices controller, or v2's device program as `devices` says).
    /// An existing cgroup of that name is reused (its limits are rewritten). On error, what was
    /// created is removed again.
    pub fn create(
        parent: &str,
        name: &str,
        res: &Resources,
        devices: DeviceControl,
    ) -> Result<Self, CgroupError> {
        Self::create_at(
            Path::new(CGROUP_ROOT),
            cgroup_mode(),
            parent,
            name,
            res,
            devices,
        )
    }

    /// `create` under another mount root (tests use a tempdir laid out like a cgroup mount).
    /// For v1/hybrid, the real root uses the mounts from /proc/self/mountinfo (read once per
    /// process); any other root is scanned for hierarchy dirs named after their controllers.
    pub fn create_at(
        root: &Path,
        mode: CgroupMode,
        parent: &str,
        name: &str,
        res: &Resources,
        devices: DeviceControl,
    ) -> Result<Self, CgroupError> {
        let cg = Self::layout(root, mode, parent, name)?;
        let result = match mode {
            CgroupMode::V2 => v2::create(root, &cg.rel, &cg.dirs[0], res, devices),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::create(&cg.dirs, res),
        };
        if let Err(e) = result {
            // Leave nothing half-made behind; the creation error is the one to report.
            for d in &cg.dirs {
                let _ = files::rmdir_retry(&d.path);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Re-attaches to an existing container cgroup; `None` when it exists in no hierarchy.
    pub fn open(parent: &str, name: &str) -> Result<Option<Self>, CgroupError> {
        Self::open_at(Path::new(CGROUP_ROOT), cgroup_mode(), parent, name)
    }

    /// `open` under another mount root.
    pub fn open_at(
        root: &Path,
        mode: CgroupMode,
        parent: &str,
        name: &str,
    ) -> Result<Option<Self>, CgroupError> {
        let cg = Self::layout(root, mode, parent, name)?;
        Ok(cg.dirs.iter().any(|d| d.path.is_dir()).then_some(cg))
    }

    fn layout(
        root: &Path,
        mode: CgroupMode,
        parent: &str,
        name: &str,
    ) -> Result<Self, CgroupError> {
        let rel = relative_path(parent, name)?;
        let mut dirs: Vec<Dir> = hierarchies(root, mode)?
            .into_iter()
            .map(|h| Dir {
                path: h.mount.join(&rel),
                controllers: h.controllers,
                mount: h.mount,
            })
            .collect();
        // blkio before memory when joining, for cgroup writeback accounting; cgroup2 last.
        dirs.sort_by_key(|d| (d.has(Controller::Unified), !d.has(Controller::Blkio)));
        Ok(ContainerCgroup { mode, rel, dirs })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// `<parent>/<name>`, relative to each hierarchy's mount.
    pub fn relative_path(&self) -> &Path {
        &self.rel
    }

    /// The cgroup's directory in each hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// The files a single-threaded process writes "0" into to join every hierarchy: v1's
    /// `tasks` (moving only the calling thread skips the global threadgroup lock that
    /// `cgroup.procs` takes, ~10 ms per start), v2's `cgroup.procs`.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = match self.mode {
            CgroupMode::V2 => "cgroup.procs",
            CgroupMode::V1 | CgroupMode::Hybrid => "tasks",
        };
        self.dirs.iter().map(|d| d.path.join(file)).collect()
    }

    /// Changes the limits in place to `res`; limits absent from `res` go back to unlimited. On
    /// v2 the device program is replaced atomically (v1's device list is left as it is: its
    /// rewrite would deny everything for a moment).
    pub fn update(&self, res: &Resources, devices: DeviceControl) -> Result<(), CgroupError> {
        match self.mode {
            CgroupMode::V2 => v2::update(&self.dirs[0], res, devices),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::update(&self.dirs, res),
        }
    }

    /// Every process (thread group) in the cgroup, in any hierarchy, sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for d in &self.dirs {
            all.extend(files::read_pids(&d.path.join("cgroup.procs"))?);
        }
        // 0 stands for a process outside our pid namespace; never signal it.
        all.retain(|p| *p > 0);
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// SIGKILLs every process in the cgroup and waits (boundedly) until it is empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match self.mode {
            CgroupMode::V2 => v2::kill_all(self),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::kill_all(self),
        }
    }

    /// Stops every process of the cgroup where it is (the freezer), waiting until all are
    /// stopped; a cgroup that does not freeze within `FREEZE_TIMEOUT` is thawed again and is
    /// an error. Undo with [`ContainerCgroup::thaw`].
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let result = match self.mode {
            CgroupMode::V2 => v2::set_frozen(&self.dirs[0], true),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::set_frozen(&self.dirs, true),
        };
        if result.is_err() {
            let _ = self.thaw();
        }
        result
    }

    /// Lets the processes of a frozen cgroup run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.mode {
            CgroupMode::V2 => v2::set_frozen(&self.dirs[0], false),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::set_frozen(&self.dirs, false),
        }
    }

    /// Kills what is left and removes the cgroup from every hierarchy, continuing past errors.
    /// Parent dirs stay (other containers share them).
    ///
    /// The usual cgroup is empty by now, so each dir is first removed outright: the kernel
    /// refuses (EBUSY) one that still has processes, and only then are they killed and the
    /// rest removed with retries. That spares reading every hierarchy's `cgroup.procs`.
    pub fn destroy(self) -> Result<(), CgroupErrors> {
        let busy: Vec<&Dir> = self
            .dirs
            .iter()
            .filter(|d| match std::fs::remove_dir(&d.path) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            })
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        if let Err(e) = self.kill_all() {
            errors.push(e);
        }
        for d in busy {
            let r = match self.mode {
                CgroupMode::V2 => files::rmdir_retry(&d.path),
                CgroupMode::V1 | CgroupMode::Hybrid => v1::remove(d),
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        CgroupErrors::into_result(errors)
    }

    /// Current usage figures.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match self.mode {
            CgroupMode::V2 => v2::stats(&self.dirs[0]),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::stats(&self.dirs),
        }
    }

    /// Removes `parent` (and its now-empty ancestors) from every hierarchy when no cgroup is
    /// left in it. A parent that is not empty or already gone is not an error.
    pub fn remove_parent_if_empty(parent: &str) -> Result<(), CgroupErrors> {
        Self::remove_parent_if_empty_at(Path::new(CGROUP_ROOT), cgroup_mode(), parent)
    }

    /// `remove_parent_if_empty` under another mount root.
    pub fn remove_parent_if_empty_at(
        root: &Path,
        mode: CgroupMode,
        parent: &str,
    ) -> Result<(), CgroupErrors> {
        let rel = parent_path(parent).map_err(|e| CgroupErrors(vec![e]))?;
        let hiers = hierarchies(root, mode).map_err(|e| CgroupErrors(vec![e]))?;
        let mut errors = Vec::new();
        for h in hiers {
            let mut p: &Path = &rel;
            while p != Path::new("") {
                let dir = h.mount.join(p);
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EBUSY)) => {
                        break
                    }
                    Err(e) => {
                        errors.push(CgroupError::Remove {
                            path: dir,
                            source: e.into(),
                        });
                        break;
                    }
                }
                p = p.parent().unwrap_or(Path::new(""));
            }
        }
        CgroupErrors::into_result(errors)
    }
}

/// The hierarchies to create container cgroups in.
fn hierarchies(root: &Path, mode: CgroupMode) -> Result<Vec<Hierarchy>, CgroupError> {
    let h = match mode {
        CgroupMode::V2 => {
            return Ok(vec![Hierarchy {
                controllers: vec![Controller::Unified],
                mount: root.to_path_buf(),
            }])
        }
        CgroupMode::V1 | CgroupMode::Hybrid if root == Path::new(CGROUP_ROOT) => {
            v1::mounted_hierarchies().to_vec()
        }
        CgroupMode::V1 | CgroupMode::Hybrid => v1::scan_hierarchies(root)?,
    };
    // On hybrid hosts the controller-less cgroup2 `unified` mount is left alone: it limits
    // nothing, and moving a process into it takes the kernel's global threadgroup lock (an RCU
    // grace period, ~10 ms) on every container start.
    if h.is_empty() {
        return Err(CgroupError::NoHierarchy {
            path: root.to_path_buf(),
        });
    }
    Ok(h)
}

fn check_component(c: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: c.to_string(),
            reason,
        })
    };
    if c.is_empty() {
        return bad("empty");
    }
    if c == "." || c == ".." {
        return bad("a relative component");
    }
    if c.contains('/') || c.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if c.starts_with("cgroup.") || c.contains('\n') {
        return bad("reserved by the cgroup filesystem");
    }
    Ok(())
}

/// `parent` ("a" or "a/b", leading/trailing '/' ignored) as a checked relative path.
fn parent_path(parent: &str) -> Result<PathBuf, CgroupError> {
    let trimmed = parent.trim_matches('/');
    let mut p = PathBuf::new();
    if trimmed.is_empty() {
        return Ok(p);
    }
    for c in trimmed.split('/') {
        check_component(c)?;
        p.push(c);
    }
    debug_assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(p)
}

fn relative_path(parent: &str, name: &str) -> Result<PathBuf, CgroupError> {
    check_component(name)?;
    Ok(parent_path(parent)?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            relative_path("/berth/", "web").unwrap(),
            PathBuf::from("berth/web")
        );
        assert_eq!(relative_path("", "web").unwrap(), PathBuf::from("web"));
        assert_eq!(relative_path("a/b", "c").unwrap(), PathBuf::from("a/b/c"));
        for (parent, name) in [
            ("berth", ".."),
            ("berth/../x", "web"),
            ("berth", "a/b"),
            ("berth", ""),
            ("a//b", "c"),
            ("berth", "cgroup.procs"),
        ] {
            assert!(
                matches!(
                    relative_path(parent, name),
                    Err(CgroupError::InvalidName { .. })
                ),
                "{parent:?} {name:?}"
            );
        }
    }

    #[test]
    fn mode_of_a_plain_dir_is_v1() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(mode_of(d.path()), CgroupMode::V1);
    }
}
