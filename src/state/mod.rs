//! The supervisor's durable state: one record per container name under `<root>/state`,
//! written atomically (temp file, fsync, rename), so a daemon killed at any step finds either
//! the old record or the new one. The only writer of `<root>/state`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::spec::ValidatedSpec;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state root {root} is in use by another berth daemon{}; one daemon per --root",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { root: PathBuf, pid: Option<i32> },
    #[error("state record {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A running instance of a container, proved by pid and process start time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub init_pid: i32,
    pub init_start: u64,
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub started_at: SystemTime,
    /// The manifest digest of the image it runs.
    #[serde(default)]
    pub image_digest: Option<String>,
}

/// What the supervisor knows of one container between its own restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// The spec the instance was started from.
    pub spec: ValidatedSpec,
    pub instance: Option<Instance>,
    pub restarts: u32,
    pub manual_stop: bool,
    /// How the last instance ended, while no new one runs: (status, OOM killed).
    #[serde(default)]
    pub last_exit: Option<(crate::runtime::protocol::ExitStatus, bool)>,
}

/// `<root>/state`.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let dir = root.join("state");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        Ok(StateDir { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let path = self.path(&record.name);
        let data = serde_json::to_vec_pretty(record).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &data, Durability::Machine)
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every record; unreadable ones are returned as errors alongside.
    pub fn load_all(&self) -> (Vec<ContainerRecord>, Vec<StateError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (records, vec![io(&self.dir)(e)]),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted write: the rename never happened.
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path).map_err(io(&path)).and_then(|d| {
                serde_json::from_slice(&d).map_err(|source| StateError::Parse {
                    path: path.clone(),
                    source,
                })
            }) {
                Ok(r) => records.push(r),
                Err(e) => errors.push(e),
            }
        }
        records.sort_by(|a: &ContainerRecord, b| a.name.cmp(&b.name));
        (records, errors)
    }
}

/// The exclusive lock one daemon holds on its state root (`<root>/daemon.lock`, flock), for as
/// long as it runs; the kernel releases it when the process dies, even by SIGKILL.
#[derive(Debug)]
pub struct RootLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Takes the root's lock, or says which daemon holds it.
pub fn lock_root(root: &Path) -> Result<RootLock, StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io(root))?;
    let path = root.join("daemon.lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StateError::Locked {
                root: root.to_path_buf(),
                pid,
            });
        }
        Err((_, e)) => return Err(io(&path)(e.into())),
    };
    lock.set_len(0).map_err(io(&path))?;
    write!(&mut *lock, "{}", std::process::id()).map_err(io(&path))?;
    Ok(RootLock { _lock: lock })
}

/// How far a record written by [`write_atomic`] must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the machine: the file and its directory are fsynced.
    Machine,
    /// A crash of the process only (the page cache keeps it): for records of kernel objects
    /// that a reboot removes anyway.
    Process,
}

/// Writes `data` to `path` through a temp file in the same dir and a rename, so readers see the
/// old or the new content, never a part; with [`Durability::Machine`] fsyncing the file before
/// and the dir after the rename.
pub fn write_atomic(path: &Path, data: &[u8], durability: Durability) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    if durability == Durability::Machine {
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    if durability == Durability::Machine {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A process's start time (clock ticks since boot, field 22 of /proc/PID/stat), which with the
/// pid identifies it: a recycled pid has a different start time.
pub fn process_start_time(pid: i32) -> Option<u64> {
    Some(read_stat(pid)?.start)
}

/// What identifies a process and its parent, from /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 4: the parent's pid.
    pub ppid: i32,
    /// Field 22: the start time in clock ticks since boot.
    pub start: u64,
}

/// Reads `/proc/PID/stat`; `None` once the process is gone.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses one `/proc/PID/stat` line.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let ppid = rest.nth(1)?.parse().ok()?;
    let start = rest.nth(17)?.parse().ok()?;
    Some(ProcStat { ppid, start })
}

/// Whether `pid` is still the process that started at `start`.
pub fn is_same_process(pid: i32, start: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_odd_names() {
        let stat =
            "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                ppid: 1,
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let me = std::process::id() as i32;
        assert!(is_same_process(me, process_start_time(me).unwrap()));
        assert!(!is_same_process(me, 1));
    }

    #[test]
    fn atomic_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let text = "image = \"oci:/x:y\"\ncommand = [\"true\"]\n";
        let spec =
            crate::spec::parse_str(Path::new("/s/web.toml"), text, &Default::default()).unwrap();
        let rec = ContainerRecord {
            name: "web".into(),
            spec,
            instance: None,
            restarts: 2,
            manual_stop: true,
            last_exit: None,
        };
        state.save(&rec).unwrap();
        std::fs::write(dir.path().join("state/.half.json.tmp"), "{").unwrap();
        let (all, errs) = state.load_all();
        assert!(errs.is_empty());
        assert_eq!(all, vec![rec]);
        assert!(!dir.path().join("state/.half.json.tmp").exists());
        state.remove("web").unwrap();
        assert!(state.load_all().0.is_empty());
    }
}
