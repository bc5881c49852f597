//! Finding a container's command as execvp(3) would, from inside the container's root (the
//! caller has pivoted or chrooted into it, so paths resolve there).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::runtime::plan::DEFAULT_PATH;

/// A regular file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `name` itself when it has a '/', else the first executable `DIR/name` of the env's PATH
/// (Docker's default PATH when it has none).
pub fn find_in_path(name: &str, env: &[String]) -> Option<String> {
    if name.contains('/') {
        return is_executable(Path::new(name)).then(|| name.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}
