//! What more than one benchmark needs (each uses a part of it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The busybox OCI layout at `image_dir` (one layer, from examples/busybox-image.sh) unpacked
/// into the plain dir `rootfs`, once: for the runtimes' bundles and `--rootfs` imports.
pub fn unpack_rootfs(image_dir: &Path, rootfs: &Path) {
    if rootfs.exists() {
        return;
    }
    std::fs::create_dir_all(rootfs).unwrap();
    let layer = std::fs::read_dir(image_dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    assert!(Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(rootfs)
        .status()
        .unwrap()
        .success());
}

/// Which berth binary the benchmarks measure, from `BENCH_BERTH`: unset, the one berth ships
/// (the static build of `packaging/build-static`, built here); `cargo`, cargo's own (dynamic)
/// release build; anything else, the binary it names.
enum BerthBinary {
    Static,
    Cargo,
    Given(PathBuf),
}

impl BerthBinary {
    fn from_env() -> BerthBinary {
        match std::env::var_os("BENCH_BERTH") {
            None => BerthBinary::Static,
            Some(v) if v == "cargo" => BerthBinary::Cargo,
            Some(v) => BerthBinary::Given(PathBuf::from(v)),
        }
    }

    /// How it is built, for the report.
    fn label(&self) -> String {
        match self {
            BerthBinary::Static => "packaging/build-static (static, musl)".into(),
            BerthBinary::Cargo => "cargo build --release (dynamic, glibc)".into(),
            BerthBinary::Given(p) => format!("{} (BENCH_BERTH)", p.display()),
        }
    }
}

/// The berth binary the benchmarks measure (see [`BerthBinary`]); the static one is built
/// first.
pub fn berth_binary() -> PathBuf {
    match BerthBinary::from_env() {
        BerthBinary::Cargo => cargo_berth(),
        BerthBinary::Given(p) => p,
        BerthBinary::Static => {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
            let out = repo.join("target/berth-static");
            let status = Command::new(repo.join("packaging/build-static"))
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("running packaging/build-static");
            assert!(
                status.success(),
                "packaging/build-static failed (BENCH_BERTH=cargo measures cargo's build)"
            );
            out
        }
    }
}

/// cargo's own release build of berth (dynamically linked against glibc).
pub fn cargo_berth() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// Writes a benchmark's results as `<name>.json` under `BENCH_OUT` (default target/bench),
/// where `cargo bench --bench report` reads them.
pub fn write_results(name: &str, data: &serde_json::Value) {
    let dir = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench"));
    let path = dir.join(format!("{name}.json"));
    match std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(data).unwrap()))
    {
        Ok(()) => println!("results: {}", path.display()),
        Err(e) => println!("results: writing {}: {e}", path.display()),
    }
}

/// What the results were measured on: host, kernel, cgroup layout, and the version line of
/// each tool compared (those installed).
pub fn machine() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let cgroups = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1 (hybrid)"
    };
    let version = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
    };
    let tools: serde_json::Map<String, serde_json::Value> =
        ["crun", "runc", "podman", "conmon", "skopeo", "umoci"]
            .iter()
            .filter_map(|t| version(t).map(|v| (t.to_string(), v.into())))
            .collect();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "os": read("/etc/debian_version"),
        "cgroups": cgroups,
        "berth": env!("CARGO_PKG_VERSION"),
        "berth_binary": BerthBinary::from_env().label(),
        "tools": tools,
    })
}

/// Removes the cgroup parent `name` (and any cgroup left under it) in every hierarchy.
pub fn remove_cgroup_parent(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for base in cgroup_bases() {
        rm(&base.join(name));
    }
}

/// The mount point of every cgroup hierarchy.
pub fn cgroup_bases() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(p, _)| p)
        .collect()
}

/// (mount point, fs type) of every mount.
pub fn mountinfo() -> Vec<(PathBuf, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((
                PathBuf::from(fields.get(4)?),
                fields.get(sep + 1)?.to_string(),
            ))
        })
        .collect()
}
