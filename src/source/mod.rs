//! The spec dir as the supervisor sees it. A full relist is the truth and inotify only a hint
//! to relist sooner. Each file that turns invalid keeps its last good version (so a broken
//! edit never stops a running container) and its error is reported. Static IPs used by more
//! than one file are refused as a set. Reads only; starts nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reconcile::{Desired, DesiredSet};
use crate::spec::{self, ValidatedSpec, ValidationContext};

/// What the dir asks for now, and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub desired: DesiredSet,
    /// Container name (or file path, for files that are not specs at all) -> its errors.
    pub errors: BTreeMap<String, String>,
}

/// The spec dir and the last good version of each of its files.
#[derive(Debug)]
pub struct SpecSource {
    dir: PathBuf,
    ctx: ValidationContext,
    last_good: BTreeMap<String, Arc<ValidatedSpec>>,
}

impl SpecSource {
    pub fn new(dir: &Path, ctx: ValidationContext) -> SpecSource {
        SpecSource {
            dir: dir.to_path_buf(),
            ctx,
            last_good: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seeds the last good version of `name` (from the state a previous daemon left), so a
    /// file that is invalid when the daemon starts keeps what was running.
    pub fn seed(&mut self, name: &str, spec: Arc<ValidatedSpec>) {
        self.last_good.insert(name.to_string(), spec);
    }

    /// Reads the whole dir again.
    pub fn relist(&mut self) -> Snapshot {
        let mut errors = BTreeMap::new();
        let (listing, dir_fd) = match spec::list_spec_dir(&self.dir)
            .and_then(|l| Ok((l, spec::open_spec_dir(&self.dir)?)))
        {
            Ok(pair) => pair,
            Err(e) => {
                // An unreadable dir changes nothing: what runs keeps running.
                errors.insert(self.dir.display().to_string(), e.to_string());
                return self.snapshot(errors);
            }
        };
        for r in &listing.rejected {
            errors.insert(
                r.path.display().to_string(),
                format!("{}: ignored: {}", r.path.display(), r.reason),
            );
        }
        let mut fresh: BTreeMap<String, Arc<ValidatedSpec>> = BTreeMap::new();
        let mut present: Vec<String> = Vec::new();
        for path in &listing.files {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            present.push(name.clone());
            let inside = listing.inside(path);
            match spec::load_in_dir(std::os::fd::AsFd::as_fd(&dir_fd), path, &inside, &self.ctx) {
                Ok(s) => {
                    fresh.insert(name, Arc::new(s));
                }
                Err(e) => {
                    errors.insert(name, e.to_string());
                }
            }
        }
        let mut clashes = spec::claim_clashes(fresh.values().map(|s| &**s));
        clashes.extend(spec::dependency_errors(
            fresh.values().map(|s| &**s),
            &present,
        ));
        for (name, diagnostic) in clashes {
            fresh.remove(&name);
            // A spec can have several: keep each.
            let e = errors.entry(name).or_default();
            if !e.is_empty() {
                e.push('\n');
            }
            e.push_str(&diagnostic.to_string());
        }
        self.last_good.retain(|name, _| present.contains(name));
        self.last_good.extend(fresh);
        self.snapshot(errors)
    }

    fn snapshot(&self, errors: BTreeMap<String, String>) -> Snapshot {
        let desired = self
            .last_good
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    Desired {
                        spec: Arc::clone(s),
                    },
                )
            })
            .collect();
        Snapshot { desired, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn invalid_edit_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = SpecSource::new(dir.path(), ValidationContext::default());
        write(
            dir.path(),
            "web.toml",
            "image = \"oci:/i:v1\"\ncommand = [\"a\"]\n",
        );
        let s1 = src.relist();
        assert_eq!(s1.desired["web"].spec.command, Some(vec!["a".to_string()]));
        write(
            dir.path(),
            "web.toml",
            "image = \"oci:/i:v1\"\ncommand = 5\n",
        );
        let s2 = src.relist();
        assert_eq!(s2.desired["web"].spec.command, Some(vec!["a".to_string()]));
        assert!(s2.errors["web"].contains("web.toml:2:"), "{:?}", s2.errors);
        std::fs::remove_file(dir.path().join("web.toml")).unwrap();
        let s3 = src.relist();
        assert!(s3.desired.is_empty() && s3.errors.is_empty());
    }

    #[test]
    fn static_ip_clash_refuses_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = SpecSource::new(dir.path(), ValidationContext::default());
        write(
            dir.path(),
            "a.toml",
            "image = \"oci:/i\"\n[network]\nip = \"10.89.0.5\"\n",
        );
        write(
            dir.path(),
            "b.toml",
            "image = \"oci:/i\"\n[network]\nip = \"10.89.0.5\"\n",
        );
        write(dir.path(), ".c.toml", "garbage");
        let s = src.relist();
        assert!(s.desired.is_empty());
        assert_eq!(s.errors.len(), 2);
        assert!(s.errors["a"].contains("used by more than one spec"));
        assert!(
            s.errors["b"].contains("b.toml:3:6: network.ip"),
            "{:?}",
            s.errors
        );
    }

    #[test]
    fn a_host_port_two_specs_publish_refuses_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = SpecSource::new(dir.path(), ValidationContext::default());
        for (name, ports) in [
            ("a", "[\"8080:80\", \"53:53/udp\"]"),
            ("b", "[\"8080:8080/tcp\"]"),
            // The same number over the other protocol is another port.
            ("c", "[\"8080:80/udp\"]"),
        ] {
            write(
                dir.path(),
                &format!("{name}.toml"),
                &format!("image = \"oci:/i\"\n[network]\nports = {ports}\n"),
            );
        }
        let s = src.relist();
        assert_eq!(s.desired.keys().collect::<Vec<_>>(), ["c"]);
        assert!(
            s.errors["a"].contains(
                "a.toml:3:9: network.ports: host port 8080/tcp is published by more than one spec"
            ),
            "{:?}",
            s.errors
        );
        assert!(s.errors["b"].contains("b.toml"), "{:?}", s.errors);
    }

    #[test]
    fn missing_dir_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = SpecSource::new(dir.path(), ValidationContext::default());
        write(dir.path(), "web.toml", "image = \"oci:/i\"\n");
        assert_eq!(src.relist().desired.len(), 1);
        let moved = dir.path().with_extension("moved");
        std::fs::rename(dir.path(), &moved).unwrap();
        let s = src.relist();
        assert_eq!(s.desired.len(), 1);
        assert_eq!(s.errors.len(), 1);
        std::fs::rename(&moved, dir.path()).unwrap();
    }
}
