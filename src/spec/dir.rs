//! Which files of a spec directory are specs: regular `*.toml` files, or symlinks whose target
//! stays inside the directory (the `..data` swap config management tools use). Dotfiles and
//! editor/temp files are ignored. Also expands the paths given to `berth validate`.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, SpecErrors};
use super::parse::{load_file, load_in_dir};
use super::types::ValidatedSpec;
use super::{SpecError, ValidationContext};

/// Name endings of editor backups and temp files, never taken as specs.
const IGNORED_SUFFIXES: &[&str] = &["~", ".swp", ".bak", ".tmp"];

/// A directory entry named like a spec that is not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

/// What a spec directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Spec files, sorted, as paths inside the directory (not resolved through symlinks).
    pub files: Vec<PathBuf>,
    /// `*.toml` entries that are not used: symlinks leading outside the directory or dangling,
    /// and entries that are not regular files. Dotfiles and temp files are not listed here.
    pub rejected: Vec<Rejected>,
    /// For each symlink of `files`, its target as a path inside the directory: what is opened
    /// (inside the directory), so a link swapped after the listing is never followed.
    pub targets: BTreeMap<PathBuf, PathBuf>,
}

impl DirListing {
    /// What to open for `file` of the listing, relative to the directory.
    pub fn inside(&self, file: &Path) -> PathBuf {
        self.targets
            .get(file)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(file.file_name().unwrap_or_default()))
    }
}

/// True for names that look like specs: `*.toml`, not hidden, not an editor or temp file.
pub fn is_spec_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.len() > ".toml".len()
        && name.ends_with(".toml")
        && !IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Lists the spec files of `dir`, sorted.
pub fn spec_files_in(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    Ok(list_spec_dir(dir)?.files)
}

/// Opens a spec directory (the path may be a symlink: it is the operator's own) for
/// [`super::parse::load_in_dir`].
pub fn open_spec_dir(dir: &Path) -> Result<std::os::fd::OwnedFd, SpecError> {
    let canon = fs::canonicalize(dir).map_err(|source| SpecError::Canonicalize {
        path: dir.to_path_buf(),
        source,
    })?;
    crate::sys::openat::open_dir(&canon).map_err(|source| SpecError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Lists the spec files of `dir` and the spec-named entries that were refused.
pub fn list_spec_dir(dir: &Path) -> Result<DirListing, SpecError> {
    let canon_dir = fs::canonicalize(dir).map_err(|source| SpecError::Canonicalize {
        path: dir.to_path_buf(),
        source,
    })?;
    let entries = fs::read_dir(dir).map_err(|source| SpecError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut listing = DirListing::default();
    for entry in entries {
        let entry = entry.map_err(|source| SpecError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if !is_spec_name(name) {
            continue;
        }
        let path = dir.join(name);
        let reject = |reason: String| Rejected {
            path: path.clone(),
            reason,
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed since read_dir: not there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                listing.rejected.push(reject(format!("cannot stat: {e}")));
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_file() {
            listing.files.push(path);
        } else if ft.is_symlink() {
            match fs::canonicalize(&path) {
                Ok(target) if !target.starts_with(&canon_dir) => {
                    listing.rejected.push(reject(format!(
                        "symlink leads outside the spec directory (to {})",
                        target.display()
                    )))
                }
                Ok(target) => match fs::metadata(&target) {
                    Ok(m) if m.is_file() => {
                        if let Ok(rel) = target.strip_prefix(&canon_dir) {
                            listing.targets.insert(path.clone(), rel.to_path_buf());
                        }
                        listing.files.push(path)
                    }
                    Ok(_) => listing
                        .rejected
                        .push(reject("symlink target is not a regular file".into())),
                    Err(e) => listing
                        .rejected
                        .push(reject(format!("cannot stat symlink target: {e}"))),
                },
                Err(e) => listing
                    .rejected
                    .push(reject(format!("cannot resolve symlink: {e}"))),
            }
        } else {
            listing.rejected.push(reject("not a regular file".into()));
        }
    }
    listing.files.sort();
    listing.rejected.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// Loads every path given: a directory expands to its spec files (refused entries and an
/// unreadable directory become errors), a file is taken as is. Results are in the order given,
/// each directory's files sorted.
pub fn load_paths(
    paths: &[PathBuf],
    ctx: &ValidationContext,
) -> Vec<(PathBuf, Result<ValidatedSpec, SpecErrors>)> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push((path.clone(), load_file(path, ctx)));
            continue;
        }
        match list_spec_dir(path).and_then(|l| Ok((l, open_spec_dir(path)?))) {
            Ok((listing, dir_fd)) => {
                let mut results: Vec<_> = listing
                    .files
                    .iter()
                    .map(|f| {
                        let r = load_in_dir(dir_fd.as_fd(), f, &listing.inside(f), ctx);
                        (f.clone(), r)
                    })
                    .chain(listing.rejected.iter().cloned().map(|r| {
                        let err = SpecErrors::from(Diagnostic::whole_file(
                            &r.path,
                            format!("ignored: {}", r.reason),
                        ));
                        (r.path, Err(err))
                    }))
                    .collect();
                results.sort_by(|a, b| a.0.cmp(&b.0));
                // A static IP is one container's only, and dependencies name other files: the
                // files of a dir are checked together.
                let present: Vec<String> = results
                    .iter()
                    .filter_map(|(f, _)| Some(f.file_stem()?.to_string_lossy().into_owned()))
                    .collect();
                let valid = || results.iter().filter_map(|(_, r)| r.as_ref().ok());
                let mut across = claim_clashes(valid());
                across.extend(dependency_errors(valid(), &present));
                let mut by_name: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
                for (name, diagnostic) in across {
                    by_name.entry(name).or_default().push(diagnostic);
                }
                for (name, diagnostics) in by_name {
                    if let Some(slot) = results
                        .iter_mut()
                        .find(|(_, r)| r.as_ref().is_ok_and(|s| s.name == name))
                    {
                        slot.1 = Err(SpecErrors { diagnostics });
                    }
                }
                out.extend(results);
            }
            Err(e) => {
                let err = SpecErrors::from(Diagnostic::whole_file(path, e.to_string()));
                out.push((path.clone(), Err(err)));
            }
        }
    }
    out
}

/// What one container may hold and no other: its static IP and the host ports it publishes.
/// The specs (by name) that claim one another of `specs` also claims, each with a diagnostic at
/// its `network.ip` or `network.ports`.
pub fn claim_clashes<'a>(
    specs: impl IntoIterator<Item = &'a ValidatedSpec> + Clone,
) -> Vec<(String, Diagnostic)> {
    let mut out = clashes(
        specs.clone(),
        "network.ip",
        |s| s.network.ip.into_iter().map(|ip| ip.to_string()).collect(),
        |ip| format!("{ip} is used by more than one spec"),
    );
    out.extend(port_clashes(specs));
    out
}

/// The specs that publish a host port another spec publishes too (on the same address, or
/// either on every address), each with a diagnostic at its `network.ports`.
fn port_clashes<'a>(
    specs: impl IntoIterator<Item = &'a ValidatedSpec>,
) -> Vec<(String, Diagnostic)> {
    let specs: Vec<&ValidatedSpec> = specs.into_iter().collect();
    let mut out = Vec::new();
    for s in &specs {
        let mut clashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &s.network.ports {
            for other in specs.iter().filter(|o| o.name != s.name) {
                if other.network.ports.iter().any(|q| q.overlaps(p)) {
                    clashes
                        .entry(p.host_side())
                        .or_insert_with(|| vec![s.file.display().to_string()])
                        .push(other.file.display().to_string());
                }
            }
        }
        for (port, files) in clashes {
            let message = format!(
                "network.ports: host port {port} is published by more than one spec: {}",
                files.join(", ")
            );
            out.push((
                s.name.clone(),
                super::diagnostic_at_key(&s.file, "network.ports", message),
            ));
        }
    }
    out
}

/// The specs whose `claims` (each counted once per spec) another spec also makes, with a
/// diagnostic at `key` naming every file involved.
fn clashes<'a>(
    specs: impl IntoIterator<Item = &'a ValidatedSpec>,
    key: &str,
    claims: impl Fn(&ValidatedSpec) -> std::collections::BTreeSet<String>,
    what: impl Fn(&str) -> String,
) -> Vec<(String, Diagnostic)> {
    let mut by_claim: BTreeMap<String, Vec<&ValidatedSpec>> = BTreeMap::new();
    for s in specs {
        for c in claims(s) {
            by_claim.entry(c).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for (claim, users) in by_claim.into_iter().filter(|(_, u)| u.len() > 1) {
        let files: Vec<String> = users.iter().map(|s| s.file.display().to_string()).collect();
        for s in &users {
            let message = format!("{key}: {}: {}", what(&claim), files.join(", "));
            out.push((
                s.name.clone(),
                super::diagnostic_at_key(&s.file, key, message),
            ));
        }
    }
    out
}

/// Problems of `depends_on` across the spec dir, each with a diagnostic at the dependent's
/// `depends_on` naming the files involved: a dependency with no spec file (`present` holds the
/// names of every spec file, valid or not), a `healthy` condition on a container without a
/// `[health]` probe, and cycles (each member of one gets the whole cycle).
pub fn dependency_errors<'a>(
    specs: impl IntoIterator<Item = &'a ValidatedSpec>,
    present: &[String],
) -> Vec<(String, Diagnostic)> {
    let by_name: BTreeMap<&str, &ValidatedSpec> =
        specs.into_iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = Vec::new();
    for s in by_name.values() {
        for (dep, cond) in &s.depends_on {
            if !present.iter().any(|p| p == dep) {
                let message = format!(
                    "depends_on: no spec file for {dep:?} (expected {})",
                    s.file.with_file_name(format!("{dep}.toml")).display()
                );
                out.push((s.name.clone(), at_dependency(s, dep, message)));
            } else if let (super::Condition::Healthy, Some(d)) = (cond, by_name.get(dep.as_str())) {
                if d.health.is_none() {
                    let message = format!(
                        "depends_on: {dep} = \"healthy\", but {} has no [health] probe",
                        d.file.display()
                    );
                    out.push((s.name.clone(), at_dependency(s, dep, message)));
                }
            }
        }
    }
    for s in by_name.values() {
        if let Some(cycle) = cycle_through(&s.name, &by_name) {
            let path: Vec<String> = cycle
                .iter()
                .map(|n| match by_name.get(n.as_str()) {
                    Some(d) => format!("{n} ({})", d.file.display()),
                    None => n.clone(),
                })
                .collect();
            let message = format!("depends_on: a cycle: {}", path.join(" -> "));
            out.push((s.name.clone(), at_dependency(s, &cycle[1], message)));
        }
    }
    out
}

/// A diagnostic at `dep` in the `depends_on` of `s`: its key in the table form, else (the
/// list form) the `depends_on` key.
fn at_dependency(s: &ValidatedSpec, dep: &str, message: String) -> Diagnostic {
    let d = super::diagnostic_at_key(&s.file, &format!("depends_on.{dep}"), message.clone());
    if d.key.is_some() && (d.line, d.col) != (1, 1) {
        return d;
    }
    super::diagnostic_at_key(&s.file, "depends_on", message)
}

/// The shortest path of dependencies from `start` back to itself (`[start, .., start]`).
fn cycle_through(start: &str, by_name: &BTreeMap<&str, &ValidatedSpec>) -> Option<Vec<String>> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(n) = queue.pop_front() {
        let Some(s) = by_name.get(n.as_str()) else {
            continue;
        };
        for dep in s.depends_on.keys() {
            if dep == start {
                let mut ordered = vec![start.to_string()];
                let mut chain: Vec<String> = Vec::new();
                let mut c = n.clone();
                while c != start {
                    chain.push(c.clone());
                    c = parent[&c].clone();
                }
                chain.reverse();
                ordered.extend(chain);
                ordered.push(start.to_string());
                return Some(ordered);
            }
            if !parent.contains_key(dep) && dep != start {
                parent.insert(dep.clone(), n.clone());
                queue.push_back(dep.clone());
            }
        }
    }
    None
}
