//! berth as the first process of a machine: a Debian kernel booted under qemu from an
//! initramfs with the static berth binary, its config, spec files and a busybox OCI layout.
//!
//! - **Alone** (berth is /init, nothing else on the root, which stays the initramfs, so
//!   containers start without pivot_root): it mounts what it needs, loads overlay with
//!   `[init] modules`, sets the hostname, brings a container up with its cgroup v2 limits and
//!   exec probe, restarts one that crashes, and a checker container proves the limits, the
//!   masks and that a chroot escape finds nothing of the host; a last container asks
//!   `berth poweroff` over the socket, and the machine powers off without a panic.
//! - **Behind a script** (a busybox script starts a watcher and execs berth, which stays PID
//!   1): a spec broken at boot is reported and starts once fixed, `berth stats` and
//!   `berth commit` (the v2 freezer) work, and SIGTERM powers off.
//! - **With a broken config**: berth says so on the console, runs with the defaults, serves
//!   the socket, and SIGINT (what ctrl-alt-del sends) reboots.
//!
//! Needs root, qemu-system-x86, linux-image-amd64, cpio and a C compiler with a static libc
//! (for the escape probe); skips otherwise.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::vm::{is_dynamic, static_berth, Initramfs, Vm};
use common::*;

const IMAGE: &str = "image = \"oci:/images/busybox:latest\"\n";

/// The checker's probes, one bit of the exit code each (the console shows the code).
const CHECK: &str = r#"
rc=0
fail() { rc=$((rc | $1)); }
cg=$(ls -d /hostcg/berth/limited-* | head -1)
[ -d "$cg" ] || fail 1
[ "$(cat $cg/memory.max)" = 67108864 ] || fail 2
[ "$(cat $cg/cpu.max)" = "50000 100000" ] || fail 4
[ "$(cat $cg/pids.max)" = 50 ] || fail 8
[ "$(cat $cg/cpuset.cpus)" = 0 ] || fail 16
grep -q 'default 200' $cg/io.weight || fail 32
i=0
until tr -d ' \n' </hostrun/status/crash.json | grep -q '"phase":"exited".*"restarts":1'; do
  i=$((i+1)); [ $i -gt 150 ] && { fail 64; break; }
  sleep 0.2
done
/berth --socket /hostrun/berth.sock ps | grep -q 'limited.*running.*healthy' || fail 128
# A chroot escape (CAP_SYS_CHROOT is in the default set) must find the container, not the
# initramfs it was moved over.
/probe/esc /etc/berth; e=$?
[ $e = 0 ] || fail 256
[ -s /proc/kcore ] && fail 512
echo h 2>/dev/null >/proc/sysrq-trigger && fail 1024
[ -e /etc/berth ] && fail 2048
exit $rc
"#;

/// Escapes a chroot the classic way (chroot into a subdir, walk up, chroot there) and says
/// whether `argv[1]` is then reachable: exit 0 no, 1 yes, 2 the escape could not be tried.
const ESC: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
  if (argc < 2) return 2;
  mkdir("/tmp/esc", 0755);
  if (chroot("/tmp/esc") != 0) { perror("chroot"); return 2; }
  for (int i = 0; i < 64; i++) if (chdir("..") != 0) return 2;
  if (chroot(".") != 0) { perror("chroot ."); return 2; }
  return access(argv[1], F_OK) == 0 ? 1 : 0;
}
"#;

fn compile_esc(dir: &Path) -> Option<std::path::PathBuf> {
    let src = dir.join("esc.c");
    std::fs::write(&src, ESC).unwrap();
    let out = dir.join("esc");
    let ok = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(out)
}

/// The initramfs every boot starts from: the static berth, the busybox layout, the overlay
/// module where berth loads it from, and `config` as /etc/berth/berth.toml.
fn base(vm: &Vm, config: &str) -> Initramfs {
    let fs = Initramfs::bare();
    let berth = static_berth();
    assert!(!is_dynamic(&berth), "{} asks for a loader", berth.display());
    fs.copy(&berth, "berth");
    let image = busybox_image()
        .trim_start_matches("oci:")
        .trim_end_matches(":latest");
    fs.copy_tree(image, "images/busybox");
    fs.kernel_modules(vm, &["overlay"]);
    fs.write("etc/berth/berth.toml", config, 0o644);
    fs
}

fn spec(fs: &Initramfs, name: &str, body: &str) {
    fs.write(
        &format!("etc/berth/specs/{name}.toml"),
        &format!("{IMAGE}{body}"),
        0o644,
    );
}

/// The console without colour escapes (berth colours its log on a terminal).
fn plain(out: String) -> String {
    let mut s = String::with_capacity(out.len());
    let mut chars = out.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            s.push(c);
        }
    }
    s
}

fn assert_clean_power_off(out: &str, what: &str) {
    assert!(
        !out.contains("Kernel panic"),
        "{what}: the kernel panicked:\n{out}"
    );
    assert!(out.contains(what), "{what} not on the console:\n{out}");
}

/// A busybox script as /init that runs `watch` in the background and execs berth, which so
/// stays PID 1; /dev/console and /dev/null are in the image for the script.
fn scripted(fs: &Initramfs, watch: &str) {
    fs.copy("/bin/busybox", "bin/busybox");
    fs.write(
        "init",
        "#!/bin/busybox sh\n/bin/busybox sh /watch.sh </dev/console >/dev/console 2>&1 &\nexec /berth\n",
        0o755,
    );
    fs.write(
        "watch.sh",
        &format!("PATH=/bin\nb() {{ /bin/busybox \"$@\"; }}\n{watch}"),
        0o755,
    );
    // The shell needs /dev/null for a background job, before berth mounts devtmpfs.
    for (node, major, minor) in [("console", "5", "1"), ("null", "1", "3")] {
        let st = Command::new("mknod")
            .arg(fs.path(&format!("dev/{node}")))
            .args(["c", major, minor])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Waits (in the VM's shell) until `cond` holds, at most `n` tenths of a second.
fn wait_for(cond: &str, n: u32, what: &str) -> String {
    format!(
        "i=0; until {cond}; do i=$((i+1)); [ $i -gt {n} ] && {{ echo 'VM-TIMEOUT {what}'; break; }}; b sleep 0.1; done\n"
    )
}

#[test]
fn berth_alone_as_init_on_an_initramfs_root() {
    if skip_unless_root("berth as init") {
        return;
    }
    let Some(vm) = Vm::find("berth as init") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(esc) = compile_esc(tmp.path()) else {
        eprintln!("skipping berth as init: no C compiler with a static libc for the probe");
        return;
    };
    // The store is on the initramfs, in the VM's RAM, beside a 30 MB test build of berth: the
    // default reserve of free space (256 MiB, meant for disks) would refuse the image.
    let fs = base(
        &vm,
        "[images]\nreserve = \"32M\"\n[init]\nhostname = \"vm-edge\"\nmodules = [\"overlay\"]\n",
    );
    fs.copy(&esc, "probe/esc");
    fs.write("probe/check.sh", CHECK, 0o755);
    fs.copy(static_berth(), "init");
    let none = "[network]\nmode = \"none\"\n";
    // sleep as a container's PID 1 ignores SIGTERM: the power-off must kill it (cgroup.kill).
    spec(
        &fs,
        "limited",
        &format!(
            "command = [\"sleep\", \"3600\"]\nstop_timeout = \"1s\"\n{none}\
             [resources]\nmemory = \"64M\"\ncpus = 0.5\npids = 50\ncpuset = \"0\"\nio = {{ weight = 200 }}\n\
             [health]\nexec = [\"true\"]\ninterval = \"1s\"\n"
        ),
    );
    spec(
        &fs,
        "crash",
        &format!(
            "command = [\"sh\", \"-c\", \"exit 3\"]\n{none}\
             [restart]\npolicy = \"on-failure\"\nmax_retries = 1\nbackoff = {{ initial = \"100ms\" }}\n"
        ),
    );
    let mounts = "[[mounts]]\nsource = \"/run/berth\"\ntarget = \"/hostrun\"\n\
         [[mounts]]\nsource = \"/berth\"\ntarget = \"/berth\"\nreadonly = true\n";
    spec(
        &fs,
        "checker",
        &format!(
            "command = [\"sh\", \"/probe/check.sh\"]\ndepends_on = {{ limited = \"healthy\" }}\n\
             [restart]\npolicy = \"never\"\n{none}{mounts}\
             [[mounts]]\nsource = \"/probe\"\ntarget = \"/probe\"\nreadonly = true\n\
             [[mounts]]\nsource = \"/sys/fs/cgroup\"\ntarget = \"/hostcg\"\nreadonly = true\n"
        ),
    );
    spec(
        &fs,
        "stopper",
        &format!(
            "command = [\"sh\", \"-c\", \"until grep -q exited /hostrun/status/checker.json 2>/dev/null; do sleep 0.2; done; exec /berth --socket /hostrun/berth.sock poweroff\"]\n\
             [restart]\npolicy = \"never\"\n{none}{mounts}"
        ),
    );
    let initrd = fs.pack();
    let out = plain(vm.boot(&initrd, "", Duration::from_secs(240)));

    let checked = out
        .lines()
        .find(|l| l.contains("name=checker") && l.contains("exited: exit code"))
        .unwrap_or_else(|| panic!("the checker did not finish:\n{out}"));
    assert!(
        checked.contains("exited: exit code 0 "),
        "checks failed (bits: 1 cgroup, 2 memory.max, 4 cpu.max, 8 pids.max, 16 cpuset, \
         32 io.weight, 64 crash not restarted once, 128 not healthy in ps, 256 chroot escape, \
         512 kcore, 1024 sysrq writable, 2048 host file visible): {checked}\n{out}"
    );
    assert!(out.contains("loaded kernel module overlay"), "{out}");
    assert!(out.contains("shutting down"), "{out}");
    assert!(!out.contains("WARN"), "warnings at boot:\n{out}");
    assert!(
        !out.contains("pivot_root"),
        "a start failed over pivot_root:\n{out}"
    );
    assert_clean_power_off(&out, "reboot: Power down");
}

#[test]
fn berth_behind_a_script_a_broken_spec_stats_commit_and_sigterm() {
    if skip_unless_root("berth as init behind a script") {
        return;
    }
    let Some(vm) = Vm::find("berth as init behind a script") else {
        return;
    };
    let fs = base(
        &vm,
        "[init]\nhostname = \"vm-script\"\nmodules = [\"overlay\"]\n",
    );
    let none = "[network]\nmode = \"none\"\n";
    spec(
        &fs,
        "idle",
        &format!("command = [\"sleep\", \"3600\"]\nstop_timeout = \"1s\"\n{none}"),
    );
    fs.write(
        "etc/berth/specs/late.toml",
        "image = \"oci:/images/busybox:latest\"\ncommand = \"not a list\"\n",
        0o644,
    );
    let ps = "/berth ps 2>/dev/null";
    let mut watch = String::new();
    watch += &wait_for(&format!("{ps} | b grep -q 'idle .*running'"), 600, "idle");
    watch += "echo \"VM-HOSTNAME $(b hostname)\"\n";
    watch += &format!("{ps} | b grep -q 'late.*command' && echo VM-BROKEN-REPORTED\n");
    fs.write(
        "late-fixed.toml",
        &format!("{IMAGE}command = [\"sleep\", \"3600\"]\nstop_timeout = \"1s\"\n{none}"),
        0o644,
    );
    watch += "b cp /late-fixed.toml /etc/berth/specs/.late.tmp && b mv /etc/berth/specs/.late.tmp /etc/berth/specs/late.toml\n";
    watch += &wait_for(&format!("{ps} | b grep -q 'late .*running'"), 600, "late");
    watch += &format!("{ps} | b grep -q 'late .*running' && echo VM-FIXED-RUNS\n");
    watch += "/berth stats | b grep -q idle && echo VM-STATS-OK\n";
    watch += "/berth commit idle localhost/idle:1 >/dev/null && echo VM-COMMIT-OK\n";
    watch += "b grep -q 1 /sys/fs/cgroup/berth/idle-*/cgroup.freeze && echo VM-STILL-FROZEN\n";
    watch += "echo VM-SIGTERM; b kill -TERM 1\n";
    scripted(&fs, &watch);
    let initrd = fs.pack();
    let out = plain(vm.boot(&initrd, "", Duration::from_secs(240)));
    for marker in [
        "VM-HOSTNAME vm-script",
        "VM-BROKEN-REPORTED",
        "VM-FIXED-RUNS",
        "VM-STATS-OK",
        "VM-COMMIT-OK",
        "VM-SIGTERM",
    ] {
        assert!(out.contains(marker), "no {marker}:\n{out}");
    }
    assert!(!out.contains("VM-TIMEOUT"), "{out}");
    assert!(!out.contains("VM-STILL-FROZEN"), "{out}");
    assert!(
        out.contains("late.toml:2:11"),
        "the broken spec's error is not on the console:\n{out}"
    );
    assert_clean_power_off(&out, "reboot: Power down");
}

#[test]
fn a_broken_config_keeps_the_machine_up_and_sigint_reboots() {
    if skip_unless_root("berth as init with a broken config") {
        return;
    }
    let Some(vm) = Vm::find("berth as init with a broken config") else {
        return;
    };
    let fs = base(&vm, "[init]\nhostname = \"x\"\nrunlevel = 3\n");
    let mut watch = String::new();
    watch += &wait_for("/berth ps >/dev/null 2>&1", 600, "socket");
    watch += "/berth ps >/dev/null 2>&1 && echo VM-SOCKET-SERVES\n";
    watch += "echo VM-SIGINT; b kill -INT 1\n";
    scripted(&fs, &watch);
    let initrd = fs.pack();
    let out = plain(vm.boot(&initrd, "", Duration::from_secs(180)));
    assert!(
        out.contains("berth.toml:3:1") && out.contains("running with the default settings"),
        "the config error is not on the console:\n{out}"
    );
    assert!(out.contains("VM-SOCKET-SERVES"), "{out}");
    assert!(!out.contains("VM-TIMEOUT"), "{out}");
    assert_clean_power_off(&out, "reboot: Restarting system");
}
