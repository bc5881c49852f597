//! A Debian kernel booted under qemu (TCG, no KVM needed) from an initramfs the test builds:
//! for what this host cannot show, such as a pure cgroup v2 machine or berth as PID 1.
//!
//! The kernel is `/boot/vmlinuz-<ver>` with its modules in `/lib/modules/<ver>` (Debian's
//! linux-image-amd64); the machine has no disk and no network, and its serial console is the
//! output the test reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bootable kernel and the qemu to boot it.
pub struct Vm {
    pub kernel: PathBuf,
    pub modules: PathBuf,
    qemu: PathBuf,
}

impl Vm {
    /// The newest kernel in /boot that has its modules, and qemu-system-x86_64; `None` (with
    /// the reason on stderr, for the skip message) when either is missing.
    pub fn find(test: &str) -> Option<Vm> {
        let skip = |why: &str| {
            eprintln!("skipping {test}: {why} (apt-get install qemu-system-x86 linux-image-amd64)");
            None
        };
        if std::env::consts::ARCH != "x86_64" {
            return skip("the VM tests boot an x86_64 kernel");
        }
        let qemu = match which("qemu-system-x86_64") {
            Some(q) => q,
            None => return skip("no qemu-system-x86_64"),
        };
        let mut kernels: Vec<(String, PathBuf)> = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let ver = name.strip_prefix("vmlinuz-")?.to_string();
                Path::new("/lib/modules")
                    .join(&ver)
                    .join("modules.dep")
                    .is_file()
                    .then(|| (ver, e.path()))
            })
            .collect();
        kernels.sort();
        match kernels.pop() {
            Some((ver, kernel)) => Some(Vm {
                kernel,
                modules: Path::new("/lib/modules").join(ver),
                qemu,
            }),
            None => skip("no /boot/vmlinuz-* with its /lib/modules"),
        }
    }

    /// Boots `initrd` with `cmdline` appended, waits for the machine to power off (at most
    /// `timeout`, then it is killed) and returns what its console printed.
    pub fn boot(&self, initrd: &Path, cmdline: &str, timeout: Duration) -> String {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console");
        let mut child = Command::new(&self.qemu)
            .args(["-accel", "tcg", "-m", "768", "-smp", "1", "-nodefaults"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init {cmdline}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting qemu");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).replace('\r', "");
        match status {
            Some(s) if s.success() => out,
            Some(s) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("qemu exited with {s}: {err}\nconsole:\n{out}")
            }
            None => panic!("the VM did not power off within {timeout:?}; console:\n{out}"),
        }
    }
}

/// An initramfs being laid out in a temp dir, packed with cpio (newc) by [`Initramfs::pack`].
pub struct Initramfs {
    dir: tempfile::TempDir,
    modules: Vec<String>,
}

impl Default for Initramfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Initramfs {
    /// An initramfs with /bin/busybox (the host's busybox-static) and the usual empty dirs.
    pub fn new() -> Initramfs {
        let fs = Initramfs {
            dir: tempfile::tempdir().unwrap(),
            modules: Vec::new(),
        };
        for d in ["bin", "dev", "proc", "sys", "run", "tmp", "etc", "modules"] {
            std::fs::create_dir_all(fs.dir.path().join(d)).unwrap();
        }
        fs.copy("/bin/busybox", "bin/busybox");
        fs
    }

    /// An initramfs with nothing in it but the usual empty dirs.
    pub fn bare() -> Initramfs {
        let fs = Initramfs {
            dir: tempfile::tempdir().unwrap(),
            modules: Vec::new(),
        };
        for d in ["dev", "proc", "sys", "run", "tmp", "etc"] {
            std::fs::create_dir_all(fs.dir.path().join(d)).unwrap();
        }
        fs
    }

    /// `vm`'s `/lib/modules/<release>` as berth loads from it: modules.dep, modules.builtin
    /// and the files of `names` with their dependencies, at their paths.
    pub fn kernel_modules(&self, vm: &Vm, names: &[&str]) {
        let release = vm
            .modules
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let dst = format!("lib/modules/{release}");
        let dep = std::fs::read_to_string(vm.modules.join("modules.dep")).unwrap();
        self.write(&format!("{dst}/modules.dep"), &dep, 0o644);
        if let Ok(b) = std::fs::read_to_string(vm.modules.join("modules.builtin")) {
            self.write(&format!("{dst}/modules.builtin"), &b, 0o644);
        }
        let mut todo: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
        let mut done = Vec::new();
        while let Some(n) = todo.pop() {
            let Some((path, deps)) = dep.lines().find_map(|l| {
                let (path, deps) = l.split_once(':')?;
                let stem = Path::new(path).file_name()?.to_str()?.split(".ko").next()?;
                (stem.replace('-', "_") == n).then(|| (path.to_string(), deps.to_string()))
            }) else {
                panic!("module {n} not in modules.dep");
            };
            if done.contains(&path) {
                continue;
            }
            self.copy(vm.modules.join(&path), &format!("{dst}/{path}"));
            for d in deps.split_whitespace() {
                let stem = Path::new(d).file_name().unwrap().to_string_lossy();
                todo.push(stem.split(".ko").next().unwrap().replace('-', "_"));
            }
            done.push(path);
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies host file `src` to `dst` (relative), keeping its mode.
    pub fn copy(&self, src: impl AsRef<Path>, dst: &str) {
        let to = self.path(dst);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.as_ref(), &to)
            .unwrap_or_else(|e| panic!("copying {}: {e}", src.as_ref().display()));
    }

    /// Copies the directory tree `src` to `dst`.
    pub fn copy_tree(&self, src: impl AsRef<Path>, dst: &str) {
        let to = self.path(dst);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(src.as_ref())
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a {}", src.as_ref().display());
    }

    /// Writes `text` to `dst` with `mode`.
    pub fn write(&self, dst: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let to = self.path(dst);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, text).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Copies an executable and the shared libraries `ldd` lists for it, at their host paths.
    pub fn binary(&self, src: impl AsRef<Path>, dst: &str) {
        self.copy(src.as_ref(), dst);
        let out = Command::new("ldd").arg(src.as_ref()).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                self.copy(lib, lib.trim_start_matches('/'));
            }
        }
    }

    /// Adds kernel module `name` of `vm`'s kernel and the modules it depends on, to be loaded
    /// (in dependency order) by `load-modules` from /modules/order.
    pub fn module(&mut self, vm: &Vm, name: &str) {
        let dep = std::fs::read_to_string(vm.modules.join("modules.dep")).unwrap();
        let find = |n: &str| {
            dep.lines()
                .find_map(|l| {
                    let (path, deps) = l.split_once(':')?;
                    let file = Path::new(path).file_name()?.to_str()?;
                    let stem = file.split(".ko").next()?;
                    (stem == n || stem.replace('-', "_") == n.replace('-', "_")).then(|| {
                        (
                            path.to_string(),
                            deps.split_whitespace()
                                .map(String::from)
                                .collect::<Vec<_>>(),
                        )
                    })
                })
                .unwrap_or_else(|| panic!("module {n} not in modules.dep"))
        };
        let (path, deps) = find(name);
        // modules.dep lists every dependency, nearest first: load them from the end.
        for p in deps.iter().rev().chain(std::iter::once(&path)) {
            let file = Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !self.modules.contains(&file) {
                self.copy(vm.modules.join(p), &format!("modules/{file}"));
                self.modules.push(file);
            }
        }
        self.write("modules/order", &(self.modules.join("\n") + "\n"), 0o644);
    }

    /// Packs the tree as a newc cpio archive and returns its path (inside the temp dir).
    pub fn pack(&self) -> PathBuf {
        let out = self.dir.path().with_extension("cpio");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && find . | cpio --quiet -o -H newc -R 0:0 > '{}'",
                self.dir.path().display(),
                out.display()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "cpio failed (apt-get install cpio)");
        out
    }
}

impl Drop for Initramfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().with_extension("cpio"));
    }
}

/// berth linked statically (`-C target-feature=+crt-static`), built once per test run into
/// `target/vm-static` and stripped: the binary an init image carries.
pub fn static_berth() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target_dir = manifest.join("target/vm-static");
        let t0 = Instant::now();
        let out = Command::new(env!("CARGO"))
            .current_dir(manifest)
            .args(["build", "--locked", "--bin", "berth"])
            .args(["--target", "x86_64-unknown-linux-gnu"])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "static build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = target_dir.join("x86_64-unknown-linux-gnu/debug/berth");
        let stripped = target_dir.join("berth-static");
        std::fs::copy(&built, &stripped).unwrap();
        let _ = Command::new("strip").arg(&stripped).status();
        eprintln!("static berth built in {:?}", t0.elapsed());
        stripped
    })
    .clone()
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
pub fn is_dynamic(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is no ELF file", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The start of every init script: busybox applets, the kernel filesystems, the modules from
/// /modules/order, and the root moved from the initramfs onto a tmpfs (where pivot_root works),
/// then `/stage2` run as PID 1 on it with cgroup2 at /sys/fs/cgroup.
pub const INIT_PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
if [ "$1" != stage2 ]; then
  mount -t devtmpfs devtmpfs /dev
  mkdir /newroot && mount -t tmpfs -o mode=755 tmpfs /newroot
  for e in /*; do case "$e" in /newroot|/proc|/sys|/dev) ;; *) cp -a "$e" /newroot/ ;; esac; done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev
  umount /dev
  exec switch_root /newroot /init stage2
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in $(cat /modules/order); do insmod /modules/$m || echo "VM-ERROR insmod $m"; done
ip link set lo up
"#;
