//! Kernel modules loaded by name as modprobe would: found in `modules.dep` of the running
//! kernel's `/lib/modules/<release>`, dependencies first, built-in and loaded ones skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("kernel module {name}: reading {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel module {name}: not in {dep} nor built in")]
    Unknown { name: String, dep: PathBuf },
    #[error("kernel module {name}: loading {path}: {source}")]
    Load {
        name: String,
        path: PathBuf,
        source: Errno,
    },
}

/// A module's name from its file (`kernel/net/bridge/br_netfilter.ko.xz` -> `br_netfilter`),
/// with `-` as `_`, the way the kernel names modules.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep`: each module's file and the files it depends on, by module name.
pub fn parse_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let (file, deps) = l.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            Some((module_name(file), (file.to_string(), deps)))
        })
        .collect()
}

/// The files to insert for `wanted`, each after what it depends on, each once; names that
/// are neither in `dep` nor in `builtin` are returned apart.
pub fn load_order(
    dep: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    wanted: &[String],
) -> (Vec<String>, Vec<String>) {
    fn visit(
        file: &str,
        by_file: &BTreeMap<&str, &Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(file.to_string()) {
            return;
        }
        for d in by_file.get(file).copied().into_iter().flatten() {
            visit(d, by_file, seen, out);
        }
        out.push(file.to_string());
    }
    let by_file: BTreeMap<&str, &Vec<String>> =
        dep.values().map(|(f, d)| (f.as_str(), d)).collect();
    let (mut out, mut unknown, mut seen) = (Vec::new(), Vec::new(), BTreeSet::new());
    for w in wanted {
        let name = w.replace('-', "_");
        match dep.get(&name) {
            Some((file, _)) => visit(file, &by_file, &mut seen, &mut out),
            None if builtin.contains(&name) => {}
            None => unknown.push(w.clone()),
        }
    }
    (out, unknown)
}

/// Loads `wanted` and their dependencies from `dir` (`/lib/modules/<release>`); returns what
/// went wrong, module by module (a module already loaded is no error).
pub fn load_modules(dir: &Path, wanted: &[String]) -> Vec<ModuleError> {
    let dep_path = dir.join("modules.dep");
    let text = match std::fs::read_to_string(&dep_path) {
        Ok(t) => t,
        Err(source) => {
            return wanted
                .iter()
                .map(|name| ModuleError::Read {
                    name: name.clone(),
                    path: dep_path.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                })
                .collect()
        }
    };
    let builtin: BTreeSet<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let (files, unknown) = load_order(&parse_dep(&text), &builtin, wanted);
    let mut errors: Vec<ModuleError> = unknown
        .into_iter()
        .map(|name| ModuleError::Unknown {
            name,
            dep: dep_path.clone(),
        })
        .collect();
    for file in files {
        let path = dir.join(&file);
        let name = module_name(&file);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(source) => {
                errors.push(ModuleError::Read { name, path, source });
                continue;
            }
        };
        // A compressed module is decompressed by the kernel (MODULE_INIT_COMPRESSED_FILE).
        let flags = if file.ends_with(".ko") {
            ModuleInitFlags::empty()
        } else {
            ModuleInitFlags::from_bits_retain(4)
        };
        match finit_module(&f, c"", flags) {
            Ok(()) => tracing::info!("loaded kernel module {name}"),
            Err(Errno::EEXIST) => {}
            Err(source) => errors.push(ModuleError::Load { name, path, source }),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/lib/libcrc32c.ko:
kernel/drivers/net/wireguard/wire-guard.ko:
";

    #[test]
    fn names_from_files() {
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko.xz"), "overlay");
        assert_eq!(module_name("kernel/a/wire-guard.ko"), "wire_guard");
        assert_eq!(module_name("kernel/net/bridge/bridge.ko"), "bridge");
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let dep = parse_dep(DEP);
        let builtin: BTreeSet<String> = ["unix".to_string()].into();
        let want = |names: &[&str]| {
            load_order(
                &dep,
                &builtin,
                &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        for (wanted, files, unknown) in [
            (
                &["bridge"][..],
                &[
                    "kernel/net/llc/llc.ko",
                    "kernel/net/802/stp.ko",
                    "kernel/net/bridge/bridge.ko",
                ][..],
                &[][..],
            ),
            (
                &["stp", "bridge", "llc"],
                &[
                    "kernel/net/llc/llc.ko",
                    "kernel/net/802/stp.ko",
                    "kernel/net/bridge/bridge.ko",
                ],
                &[],
            ),
            (
                &["nf-tables", "overlay"],
                &[
                    "kernel/lib/libcrc32c.ko",
                    "kernel/net/netfilter/nfnetlink.ko",
                    "kernel/net/netfilter/nf_tables.ko",
                    "kernel/fs/overlayfs/overlay.ko.xz",
                ],
                &[],
            ),
            (
                &["unix", "wire-guard"],
                &["kernel/drivers/net/wireguard/wire-guard.ko"],
                &[],
            ),
            (&["nosuch", "llc"], &["kernel/net/llc/llc.ko"], &["nosuch"]),
        ] {
            let (got, missing) = want(wanted);
            assert_eq!(got, files, "{wanted:?}");
            assert_eq!(missing, unknown, "{wanted:?}");
        }
    }

    #[test]
    fn an_unreadable_dep_file_names_each_module() {
        let dir = tempfile::tempdir().unwrap();
        let errs = load_modules(dir.path(), &["overlay".into(), "veth".into()]);
        assert_eq!(errs.len(), 2);
        assert!(errs[0]
            .to_string()
            .contains("kernel module overlay: reading"));
    }
}
