//! The layout of a log directory: `current.log`, the rotated `<n>.log` files, and file identity.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{LogError, CURRENT_FILE};

/// `dir/current.log`.
pub(crate) fn current_path(dir: &Path) -> PathBuf {
    dir.join(CURRENT_FILE)
}

/// `dir/<n>.log` (n >= 1; 1 is the newest rotated file).
pub(crate) fn rotated_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n}.log"))
}

/// The rotated files in `dir`, oldest (highest number) first. A missing dir has none.
pub(crate) fn list_rotated(dir: &Path) -> Result<Vec<(u32, PathBuf)>, LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LogError::ListDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LogError::ListDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".log"))
            .filter(|s| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0')
            })
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
    Ok(found)
}

/// Opens `path` for reading; `None` when it does not exist.
pub(crate) fn open_existing(path: &Path) -> Result<Option<File>, LogError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Which file this is, across renames: (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId(u64, u64);

impl FileId {
    pub fn of(md: &Metadata) -> FileId {
        FileId(md.dev(), md.ino())
    }

    /// The identity of whatever is at `path` now; `None` when nothing is.
    pub fn of_path(path: &Path) -> Result<Option<FileId>, LogError> {
        match fs::metadata(path) {
            Ok(md) => Ok(Some(FileId::of(&md))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LogError::Stat {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

pub(crate) fn metadata(file: &File, path: &Path) -> Result<Metadata, LogError> {
    file.metadata().map_err(|source| LogError::Stat {
        path: path.to_path_buf(),
        source,
    })
}
