//! berth on a pure cgroup v2 machine: a Debian kernel booted under qemu from an initramfs with
//! busybox, the berth binary and the busybox image; cgroup2 mounted at /sys/fs/cgroup.
//!
//! Device control: a container given CAP_SYS_ADMIN mounts a tmpfs and a devtmpfs (every host
//! device node) and tries a loop block device and /dev/kmsg, both outside the allowlist, for
//! read, write and mknod; /dev/null and the container's /dev/pts must work. Run once with
//! `berth run` and once with `berth exec -t` into a supervised container (whose command runs
//! on a /dev/pts terminal). The supervised one also has a write throttle on the loop device,
//! which must show in its io.max. Needs root, qemu-system-x86 and linux-image-amd64; skips otherwise.

mod common;

use std::time::Duration;

use common::vm::{Initramfs, Vm, INIT_PRELUDE};
use common::*;

/// Each probe prints `PROBE <label> ok|denied|error <message>`; denied is EPERM, the answer
/// of the device program (any other error comes from past it: the device's own open).
const PROBES: &str = r#"
probe() {
  if err=$( (case "$2" in r) true <"$3" ;; w) true >>"$3" ;; m) mknod "$3" $4 $5 $6 ;; esac) 2>&1 ); then
    echo "PROBE $1 ok"
  else
    case "$err" in *"not permitted"*) echo "PROBE $1 denied" ;; *) echo "PROBE $1 error $err" ;; esac
  fi
}
mkdir -p /m && mount -t tmpfs -o mode=755 tmpfs /m || echo "PROBE-SETUP-FAILED tmpfs"
mkdir /m/d && mount -t devtmpfs devtmpfs /m/d || echo "PROBE-SETUP-FAILED devtmpfs"
[ -b /m/d/loop0 ] && [ -c /m/d/kmsg ] || echo "PROBE-SETUP-FAILED nodes"
probe block-mknod m /m/blk b 7 0
probe block-read r /m/d/loop0
probe block-write w /m/d/loop0
probe kmsg-mknod m /m/kmsg c 1 11
probe kmsg-read r /m/d/kmsg
probe kmsg-write w /m/d/kmsg
probe null-read r /dev/null
probe null-write w /dev/null
probe null-mknod m /m/null c 1 3
probe made-null-read r /m/null
probe ptmx r /dev/ptmx
if t=$(tty); then probe pts-read r "$t"; probe pts-write w "$t"; fi
umount /m/d /m
echo PROBES-DONE
"#;

const STAGE2: &str = r#"
echo VM-BOOTED
grep -q cgroup2 /proc/mounts && [ -f /sys/fs/cgroup/cgroup.controllers ] && echo VM-CGROUP2
dd if=/dev/zero of=/tmp/disk bs=1k count=64 2>/dev/null && losetup /dev/loop0 /tmp/disk || echo "VM-ERROR losetup"
# The host side of the probes: without a device program every one of them works.
(cd /tmp && mknod blk b 7 0 && true </tmp/blk && true >>/dev/loop0 && true </dev/kmsg && echo VM-HOST-PROBES-OK)
echo VM-RUN-START
/berth --root /run/berth-run run /specs/probe.toml
echo "VM-RUN-EXIT $?"
mkdir -p /run/sup-specs && cp /specs/idle.toml /run/sup-specs/
/berth --root /run/berth-sup --socket /run/berth.sock supervise --specs /run/sup-specs >/tmp/sup.log 2>&1 &
sup=$!
i=0
until /berth --socket /run/berth.sock ps 2>/dev/null | grep -q running; do
  i=$((i+1)); [ $i -gt 600 ] && { echo VM-ERROR supervise; cat /tmp/sup.log; break; }
  sleep 0.1
done
echo VM-EXEC-START
/berth --socket /run/berth.sock exec -t idle -- sh /probe/probes.sh </dev/console
echo "VM-EXEC-EXIT $?"
for f in /sys/fs/cgroup/berth/*/io.max; do echo "VM-IOMAX $(cat "$f")"; done
kill -TERM $sup; wait $sup
echo "VM-SUPERVISE-EXIT $?"
left=$(find /sys/fs/cgroup/berth -mindepth 1 -type d 2>/dev/null); [ -n "$left" ] && echo "VM-LEFTOVER $left"
echo VM-DONE
sync
poweroff -f
"#;

fn probes_of(section: &str) -> Vec<(String, String)> {
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PROBE "))
        .map(|l| {
            let (label, rest) = l.split_once(' ').unwrap_or((l, ""));
            (label.to_string(), rest.to_string())
        })
        .collect()
}

fn between<'a>(out: &'a str, start: &str, end: &str) -> &'a str {
    let s = out
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the console:\n{out}"));
    let e = out[s..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} after {start} in the console:\n{out}"));
    &out[s..s + e]
}

/// What each probe must answer: outside the allowlist, EPERM; inside it, success. A pts
/// must not be denied (the exec'd command's own terminal opens; `berth run` has none).
fn check_probes(what: &str, section: &str, with_tty: bool) {
    assert!(
        !section.contains("PROBE-SETUP-FAILED") && section.contains("PROBES-DONE"),
        "{what}: the probes did not run as set up:\n{section}"
    );
    let got = probes_of(section);
    let mut want = vec![
        ("block-mknod", "denied"),
        ("block-read", "denied"),
        ("block-write", "denied"),
        ("kmsg-mknod", "denied"),
        ("kmsg-read", "denied"),
        ("kmsg-write", "denied"),
        ("null-read", "ok"),
        ("null-write", "ok"),
        ("null-mknod", "ok"),
        ("made-null-read", "ok"),
        ("ptmx", "ok"),
    ];
    if with_tty {
        want.extend([("pts-read", "ok"), ("pts-write", "ok")]);
    }
    let got: Vec<(&str, &str)> = got.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
    assert_eq!(got, want, "{what}:\n{section}");
}

#[test]
fn device_control_on_pure_cgroup_v2() {
    if skip_unless_root("device_control_on_pure_cgroup_v2") {
        return;
    }
    let Some(vm) = Vm::find("device_control_on_pure_cgroup_v2") else {
        return;
    };
    let mut fs = Initramfs::new();
    fs.module(&vm, "overlay");
    fs.module(&vm, "loop");
    fs.binary(berth_bin(), "berth");
    let image = busybox_image()
        .trim_start_matches("oci:")
        .trim_end_matches(":latest");
    fs.copy_tree(image, "image");
    fs.write("probe/probes.sh", PROBES, 0o755);
    let common = "image = \"oci:/image:latest\"\ncap_add = [\"SYS_ADMIN\"]\n\
         [network]\nmode = \"none\"\n[[mounts]]\nsource = \"/probe\"\ntarget = \"/probe\"\n\
         readonly = true\n";
    fs.write(
        "specs/probe.toml",
        &format!("command = [\"sh\", \"/probe/probes.sh\"]\n{common}"),
        0o644,
    );
    fs.write(
        "specs/idle.toml",
        &format!(
            "command = [\"sleep\", \"600\"]\nstop_timeout = \"1s\"\n{common}\
             [resources]\nio = {{ write_bps = {{ \"/dev/loop0\" = \"1M\" }} }}\n"
        ),
        0o644,
    );
    fs.write("init", &format!("{INIT_PRELUDE}{STAGE2}"), 0o755);
    let initrd = fs.pack();

    let out = vm.boot(&initrd, "", Duration::from_secs(300));
    assert!(out.contains("VM-BOOTED"), "the VM did not boot:\n{out}");
    assert!(
        out.contains("VM-CGROUP2"),
        "no cgroup2 at /sys/fs/cgroup:\n{out}"
    );
    assert!(
        out.contains("VM-HOST-PROBES-OK"),
        "the host itself cannot use the probed devices, so the probes would prove nothing:\n{out}"
    );
    assert!(!out.contains("VM-ERROR"), "{out}");

    let run = between(&out, "VM-RUN-START", "VM-RUN-EXIT");
    check_probes("berth run", run, false);
    assert!(out.contains("VM-RUN-EXIT 0"), "berth run failed:\n{out}");

    let exec = between(&out, "VM-EXEC-START", "VM-EXEC-EXIT");
    check_probes("berth exec -t", exec, true);
    assert!(out.contains("VM-EXEC-EXIT 0"), "berth exec failed:\n{out}");
    // The supervised container's write throttle on loop0 (7:0) is in its io.max.
    assert!(
        out.contains("VM-IOMAX 7:0 rbps=max wbps=1048576 riops=max wiops=max"),
        "no io.max throttle:\n{out}"
    );
    assert!(out.contains("VM-SUPERVISE-EXIT 0"), "{out}");
    assert!(!out.contains("VM-LEFTOVER"), "cgroups left behind:\n{out}");
    assert!(out.contains("VM-DONE"), "{out}");
}
