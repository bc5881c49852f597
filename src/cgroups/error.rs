//! The cgroups module's error type: each variant names the failed step and carries the path.

use std::fmt;
use std::path::PathBuf;

/// The underlying cause (an `io::Error`, a `nix` errno or a cgroups-rs error).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup path component {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("no cgroup hierarchy found under {path}")]
    NoHierarchy { path: PathBuf },

    #[error("reading the cgroup hierarchies under {path}: {source}")]
    Detect {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error(
        "the {controller} controller needed by the resource limits is not available at {path}"
    )]
    ControllerMissing { controller: String, path: PathBuf },

    #[error("enabling controllers {controllers:?} in {path}: {source}")]
    EnableControllers {
        controllers: Vec<String>,
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("cpuset cgroup {path} still has an empty {file} after copying its parent's")]
    CpusetEmpty { path: PathBuf, file: &'static str },

    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: Cause,
    },

    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },

    #[error("{step} cgroup {path}: {source}")]
    Freezer {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("sending SIGKILL to pid {pid} of cgroup {path}: {source}")]
    Kill {
        pid: i32,
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("processes {pids:?} still in cgroup {path} after {rounds} kill rounds")]
    KillTimeout {
        path: PathBuf,
        pids: Vec<i32>,
        rounds: u32,
    },

    #[error(
        "cgroup v2 device control for {path}: {step}: {source}; berth does not run containers \
         without it (set device_control = \"best-effort\" in the supervisor config to run them \
         anyway)"
    )]
    DeviceControl {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("block device {path} of resources.io: {source}")]
    IoDevice {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: Cause,
    },
}

/// Every error met during a teardown that kept going past each one.
#[derive(Debug)]
pub struct CgroupErrors(pub Vec<CgroupError>);

impl fmt::Display for CgroupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cgroup teardown error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CgroupErrors {}

impl CgroupErrors {
    /// `Ok` when nothing failed.
    pub fn into_result(errors: Vec<CgroupError>) -> Result<(), CgroupErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CgroupErrors(errors))
        }
    }
}
