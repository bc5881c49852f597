//! Small helpers that read and write cgroup control files, and the executor that writes a
//! translated list of limits following each file's `FilePolicy`.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::CgroupError;
use super::limits::{file_policy, FilePolicy};

/// Writes `value` to an existing control file (never creates one: a missing file is an error,
/// as it is on a cgroup filesystem).
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_io(path, value).map_err(|e| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source: e.into(),
    })
}

fn write_io(path: &Path, value: &str) -> io::Result<()> {
    write_to(open_control(path)?, value).map(drop)
}

/// An existing control file, open for writing.
fn open_control(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new().write(true).truncate(true).open(path)
}

/// Writes `value` in one write(2) (cgroup files take a whole value per write); the file back.
fn write_to(mut f: fs::File, value: &str) -> io::Result<fs::File> {
    f.write_all(value.as_bytes()).map(|()| f)
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Like `read`, but a missing file (a controller that is not there) is `None`.
pub(super) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

pub(super) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    s.trim().parse().map_err(|e| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("{:?} is not a number: {e}", s.trim()),
    })
}

/// A missing file reads as 0.
pub(super) fn read_u64_or_zero(path: &Path) -> Result<u64, CgroupError> {
    match read_opt(path)? {
        Some(s) => parse_u64(path, &s),
        None => Ok(0),
    }
}

/// The value of `key` in a flat keyed file (`key value` lines); a missing file or key is 0.
pub(super) fn read_keyed_or_zero(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(0);
    };
    for line in s.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            return parse_u64(path, it.next().unwrap_or(""));
        }
    }
    Ok(0)
}

/// Pids listed in a cgroup.procs file; a missing file (a hierarchy where the cgroup is gone)
/// lists none.
pub(super) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    s.split_whitespace()
        .map(|t| {
            t.parse::<i32>().map_err(|e| CgroupError::Parse {
                path: path.to_path_buf(),
                reason: format!("{t:?} is not a pid: {e}"),
            })
        })
        .collect()
}

/// Writes `(dir, file, value)` entries in order, following `file_policy`: required files must
/// take the write, `IfExists` files are skipped when absent, and in each `FirstOf` group only
/// the first file that exists is written.
pub(super) fn apply_writes(writes: &[(PathBuf, &'static str, String)]) -> Result<(), CgroupError> {
    let mut done_groups: HashSet<&'static str> = HashSet::new();
    let mut seen_groups: Vec<(&'static str, &Path)> = Vec::new();
    // Consecutive writes to one file (the device rules of v1's devices.allow, one per write)
    // share one open file.
    let mut open: Option<(PathBuf, fs::File)> = None;
    let mut i = 0;
    while i < writes.len() {
        let (dir, file, value) = &writes[i];
        let path = dir.join(file);
        match file_policy(file) {
            FilePolicy::Required => {
                let written = match open.take() {
                    Some((p, f)) if p == path => Ok(f),
                    _ => open_control(&path),
                }
                .and_then(|f| write_to(f, value));
                let written = written.map(|f| open = Some((path.clone(), f)));
                if let Err(e) = written {
                    // v1 keeps memsw >= limit: when raising the limit past the current memsw,
                    // the memsw write that follows has to go first.
                    let next_is_memsw = writes
                        .get(i + 1)
                        .is_some_and(|n| n.1 == "memory.memsw.limit_in_bytes" && n.0 == *dir);
                    if *file == "memory.limit_in_bytes"
                        && e.raw_os_error() == Some(libc::EINVAL)
                        && next_is_memsw
                    {
                        let (ndir, nfile, nvalue) = &writes[i + 1];
                        write(&ndir.join(nfile), nvalue)?;
                        write(&path, value)?;
                        i += 2;
                        continue;
                    }
                    return Err(CgroupError::Write {
                        path,
                        value: value.clone(),
                        source: e.into(),
                    });
                }
            }
            FilePolicy::IfExists => {
                if path.exists() {
                    write(&path, value)?;
                } else {
                    tracing::debug!(path = %path.display(), "cgroup file absent on this kernel; skipped");
                }
            }
            FilePolicy::FirstOf(group) => {
                seen_groups.push((group, dir));
                if !done_groups.contains(group) && path.exists() {
                    write(&path, value)?;
                    done_groups.insert(group);
                }
            }
        }
        i += 1;
    }
    for (group, dir) in seen_groups {
        if done_groups.insert(group) {
            tracing::debug!(dir = %dir.display(), "no {group} file on this kernel; skipped");
        }
    }
    Ok(())
}

/// rmdir with brief retries while the kernel still reports the cgroup busy (the last tasks
/// are exiting). A cgroup that is already gone is fine.
pub(super) fn rmdir_retry(path: &Path) -> Result<(), CgroupError> {
    let mut delay = std::time::Duration::from_millis(2);
    let mut tries = 0;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 8 => {
                tries += 1;
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(CgroupError::Remove {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}
