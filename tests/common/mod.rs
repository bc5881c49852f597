//! Shared fixtures for the integration tests: the berth binary, a busybox OCI image built from
//! Debian's busybox-static by `examples/busybox-image.sh`, and a per-test environment with its
//! own `--root` and cgroup parent that checks, when dropped, that nothing leaked.
#![allow(dead_code)]

pub mod daemon;
pub mod netns;
pub mod registry;
pub mod schema;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// The helper `pid` runs from a sealed view of berth (an overlayfs mount attached nowhere, or
/// a sealed memfd), never from the binary on disk, and its exe cannot be opened for writing.
pub fn assert_sealed_exe(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let shown = std::fs::read_link(&exe).unwrap();
    let running = std::fs::metadata(&exe).unwrap();
    let disk = std::fs::metadata(berth_bin()).unwrap();
    assert_ne!(
        (running.dev(), running.ino()),
        (disk.dev(), disk.ino()),
        "helper {pid} runs the binary on disk ({})",
        shown.display()
    );
    assert_ne!(
        shown,
        Path::new(berth_bin()),
        "helper {pid} runs the binary on disk"
    );
    let write = std::fs::OpenOptions::new().write(true).open(&exe);
    assert!(write.is_err(), "helper {pid}: its binary is writable");
    // The view has the bytes of the real binary.
    assert_eq!(running.len(), disk.len());
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips a root-only test (returns true) when not root, saying so.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root");
    true
}

/// `oci:DIR:latest` of the busybox image. Built once for a given busybox binary and build
/// script, and shared by every test binary and run (built aside and renamed into place, so
/// concurrent builders never see a half-made layout), so nothing piles up in the temp dir.
pub fn busybox_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox-image.sh");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&script).unwrap().hash(&mut h);
        std::fs::read("/bin/busybox")
            .unwrap_or_default()
            .hash(&mut h);
        let dir = std::env::temp_dir().join(format!("berth-test-busybox-{:016x}", h.finish()));
        if !dir.join("index.json").is_file() {
            let tmp = std::env::temp_dir().join(format!(
                ".berth-test-busybox-{}-{}",
                std::process::id(),
                h.finish()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            let out = Command::new("sh")
                .arg(&script)
                .arg(&tmp)
                .output()
                .expect("running busybox-image.sh");
            assert!(
                out.status.success(),
                "busybox-image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Another test binary may have got there first: its copy is as good.
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        format!("oci:{}:latest", dir.display())
    })
}

/// A copy of the busybox image at `out` (an OCI layout tagged `latest`) whose config `edit`
/// changed: the same layer, a new config and manifest.
pub fn busybox_variant(out: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    use sha2::{Digest, Sha256};
    let base = busybox_image()
        .strip_prefix("oci:")
        .and_then(|s| s.strip_suffix(":latest"))
        .unwrap()
        .to_string();
    let base = Path::new(&base);
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(base.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::copy(base.join("oci-layout"), out.join("oci-layout")).unwrap();
    let blob = |d: &str| std::fs::read(blobs.join(&d["sha256:".len()..])).unwrap();
    let put = |bytes: &[u8]| {
        let d = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        (d, bytes.len())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("index.json")).unwrap()).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    edit(&mut config);
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    out.to_path_buf()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs its arguments chrooted into a directory that is no mount point, in a private mount
/// namespace that sees every host dir but /mnt (where it lives): there pivot_root fails with
/// EINVAL (the current root is no mount point), as on an initramfs, and berth must move the
/// root instead.
pub const NO_PIVOT_WRAPPER: &str = r#"set -e
base=/mnt/berth-no-pivot
mkdir -p $base
mount -t tmpfs -o mode=755 tmpfs $base
mkdir $base/root
for p in /*; do
  d=${p#/}
  if [ -L "$p" ]; then
    ln -s "$(readlink "$p")" "$base/root/$d"
  elif [ -d "$p" ] && [ "$d" != mnt ]; then
    mkdir "$base/root/$d"
    mount --rbind "$p" "$base/root/$d"
  fi
done
cd / && exec chroot $base/root "$@"
"#;

/// One test's own state dir, spec dir and cgroup parent.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl TestEnv {
    pub fn new(tag: &str) -> TestEnv {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix(&format!("berth-{tag}-"))
                .tempdir()
                .unwrap(),
            cgroup_parent: format!("berth-test-{}-{tag}-{n}", std::process::id()),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Writes `specs/NAME.toml` with the busybox image and `body` (TOML keys after `image`).
    pub fn spec(&self, name: &str, body: &str) -> PathBuf {
        self.spec_with_image(name, busybox_image(), body)
    }

    pub fn spec_with_image(&self, name: &str, image: &str, body: &str) -> PathBuf {
        let dir = self.dir.path().join("specs");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        let text = format!("image = {image:?}\n{body}");
        schema::check_spec(&path, &text);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `berth --root R --cgroup-parent P`; with `BERTH_TEST_NO_PIVOT` set, run where the root
    /// cannot be pivoted (see [`NO_PIVOT_WRAPPER`]).
    pub fn command(&self) -> Command {
        let mut c = if std::env::var_os("BERTH_TEST_NO_PIVOT").is_some() {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                NO_PIVOT_WRAPPER,
                "sh",
            ])
            .arg(berth_bin());
            c
        } else {
            Command::new(berth_bin())
        };
        c.arg("--root")
            .arg(self.root())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent);
        c
    }

    /// `berth run SPEC` with stdin closed; returns its output.
    pub fn run(&self, spec: &Path) -> Output {
        self.command()
            .arg("run")
            .arg(spec)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Cgroup dirs of this test's parent, in every hierarchy, that still have children.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for base in cgroup_bases() {
            let parent = base.join(&self.cgroup_parent);
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        left.push(e.path());
                    }
                }
            }
        }
        left
    }

    /// Mounts anywhere on the host that mention this test's dir.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .map(String::from)
            .collect()
    }

    /// Container state dirs still present.
    pub fn leftover_containers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root().join("containers"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    pub fn assert_no_leaks(&self) {
        assert_eq!(
            self.leftover_cgroups(),
            Vec::<PathBuf>::new(),
            "cgroups leaked"
        );
        assert_eq!(
            self.leftover_mounts(),
            Vec::<String>::new(),
            "mounts leaked"
        );
        assert_eq!(
            self.leftover_containers(),
            Vec::<PathBuf>::new(),
            "container dirs leaked"
        );
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for base in cgroup_bases() {
            let parent = base.join(&self.cgroup_parent);
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// The mount points of the cgroup hierarchies (v1 controllers, or the v2 root).
pub fn cgroup_bases() -> Vec<PathBuf> {
    let mut bases = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(sep + 1).copied().unwrap_or("");
        if fstype == "cgroup" || fstype == "cgroup2" {
            bases.push(PathBuf::from(fields[4]));
        }
    }
    bases
}

/// The container cgroup dir for `controller` (v1) or the v2 root, under this parent.
pub fn controller_base(controller: &str) -> Option<PathBuf> {
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(sep + 1).copied().unwrap_or("");
        let opts = fields.get(sep + 3).copied().unwrap_or("");
        if fstype == "cgroup" && opts.split(',').any(|o| o == controller) {
            return Some(PathBuf::from(fields[4]));
        }
    }
    None
}

/// Runs `cmd` with `input` on its stdin; its whole output.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
