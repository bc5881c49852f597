//! `berth run` as root: the container's walls, proved by probes that run inside it.

mod common;

use common::*;

/// Runs `script` with busybox sh in a container of a fresh env; returns (exit, stdout, stderr).
fn sh(env: &TestEnv, extra: &str, script: &str) -> (i32, String, String) {
    let spec = env.spec(
        "probe",
        &format!("command = [\"sh\", \"-c\", {script:?}]\n{extra}\n[network]\nmode = \"none\"\n"),
    );
    let out = env.run(&spec);
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn pid1_is_the_command_and_hostname_is_the_containers() {
    if skip_unless_root("pid1") {
        return;
    }
    let env = TestEnv::new("pid1");
    let (code, out, err) = sh(
        &env,
        "hostname = \"box1\"",
        "echo pid=$$; hostname; cat /etc/hostname",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "pid=1\nbox1\nbox1\n");
    // Default hostname: the container's name.
    let (_, out, _) = sh(&env, "", "hostname");
    assert_eq!(out.trim(), "probe");
    env.assert_no_leaks();
}

#[test]
fn host_processes_and_files_are_invisible() {
    if skip_unless_root("invisible") {
        return;
    }
    let env = TestEnv::new("invis");
    let sentinel = env.dir.path().join("host-only");
    std::fs::write(&sentinel, "secret").unwrap();
    let script = format!(
        "ls /proc | grep -c '^[0-9]'; test -e {} && echo visible || echo hidden",
        sentinel.display()
    );
    let (code, out, err) = sh(&env, "", &script);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let procs: u32 = lines.next().unwrap().parse().unwrap();
    assert!(procs <= 3, "container sees {procs} processes");
    assert_eq!(lines.next(), Some("hidden"));
    env.assert_no_leaks();
}

#[test]
fn capabilities_seccomp_and_no_new_privs() {
    if skip_unless_root("caps") {
        return;
    }
    let env = TestEnv::new("caps");
    // grep is the container's command itself (no shell, which would ignore signals of its own).
    let spec = env.spec(
        "status",
        "command = [\"grep\", \"-E\", \"^(SigIgn|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):\", \"/proc/self/status\"]\n[network]\nmode = \"none\"\n",
    );
    let o = env.run(&spec);
    let (code, out, err) = (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o));
    assert_eq!(code, 0, "{err}");
    let want = "SigIgn:\t0000000000000000\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
    assert_eq!(out, want);
    // A non-root user keeps the bounding set but has no effective capabilities.
    let (code, out, err) = sh(
        &env,
        "user = \"app\"",
        "id; grep -E '^(CapEff|CapBnd):' /proc/self/status",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("uid=1000(app) gid=1000(app) groups=10(wheel),1000(app)\n"),
        "{out}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb"),
        "{out}"
    );
    env.assert_no_leaks();
}

#[test]
fn proc_is_masked_and_read_only() {
    if skip_unless_root("masks") {
        return;
    }
    let env = TestEnv::new("masks");
    let mut checks = String::new();
    // Mask only what exists on this kernel (SECURITY.md note).
    for p in [
        "/proc/kcore",
        "/proc/timer_list",
        "/proc/keys",
        "/proc/sched_debug",
    ] {
        if std::path::Path::new(p).exists() {
            checks.push_str(&format!("echo {p} $(cat {p} | wc -c); "));
        }
    }
    checks.push_str(
        "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys-writable || echo sys-ro; ",
    );
    checks.push_str("touch /sys/x 2>/dev/null && echo sysfs-writable || echo sysfs-ro");
    let (code, out, err) = sh(&env, "", &checks);
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        if line.starts_with("/proc/") {
            assert!(line.ends_with(" 0"), "not masked: {line}");
        }
    }
    assert!(
        out.lines().filter(|l| l.starts_with("/proc/")).count() >= 1,
        "{out}"
    );
    assert!(
        out.contains("sys-ro\n") && out.contains("sysfs-ro"),
        "{out}"
    );
    env.assert_no_leaks();
}

/// The files berth writes for the container (/etc/hosts, /etc/hostname, /etc/resolv.conf) are
/// bound nosuid, nodev and noexec: a bind carries its source mount's flags, and berth skips the
/// remount only when those are already exactly these.
#[test]
fn the_etc_files_are_bound_nosuid_nodev_noexec() {
    if skip_unless_root("etc files") {
        return;
    }
    let env = TestEnv::new("etcflags");
    let (code, out, err) = sh(
        &env,
        "",
        "grep -E ' /etc/(hosts|hostname|resolv.conf) ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in lines {
        // The sixth field holds the per-mount options.
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap_or("").split(',').collect();
        for want in ["nosuid", "nodev", "noexec"] {
            assert!(opts.contains(&want), "{want} missing: {line}");
        }
    }
    env.assert_no_leaks();
}

#[test]
fn mount_unshare_and_devices_are_refused() {
    if skip_unless_root("refused") {
        return;
    }
    let env = TestEnv::new("refused");
    let script = "mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo no-mount; \
                  unshare -n true 2>/dev/null && echo unshared || echo no-unshare; \
                  mknod /tmp/sda b 8 0 2>/dev/null; head -c1 /tmp/sda >/dev/null 2>&1 && echo read-disk || echo no-disk; \
                  mknod /dev/kmsg2 c 1 11 2>/dev/null; head -c1 /dev/kmsg2 >/dev/null 2>&1 && echo read-kmsg || echo no-kmsg; \
                  ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c";
    let (code, out, err) = sh(&env, "", script);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        &["no-mount", "no-unshare", "no-disk", "no-kmsg"],
        "{out}"
    );
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
        "stdin",
    ] {
        assert!(
            lines[4].split(' ').any(|d| d == dev),
            "/dev lacks {dev}: {}",
            lines[4]
        );
    }
    assert_eq!(lines[5].trim(), "4", "allowed devices work");
    env.assert_no_leaks();
}

#[test]
fn only_stdio_fds_reach_the_container() {
    if skip_unless_root("fds") {
        return;
    }
    let env = TestEnv::new("fds");
    // pid 1 stays the shell (`; true`) and holds no pipe of its own while ls looks at it.
    let spec = env.spec(
        "fds",
        "command = [\"sh\", \"-c\", \"ls /proc/1/fd; true\"]\n[network]\nmode = \"none\"\n",
    );
    // fd 7 is opened without close-on-exec by the shell, so berth inherits it.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 7</dev/null; exec {} --root {} --cgroup-parent {} run {}",
            berth_bin(),
            env.root().display(),
            env.cgroup_parent,
            spec.display()
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n1\n2\n");
    env.assert_no_leaks();
}

#[test]
fn writes_do_not_outlive_the_container() {
    if skip_unless_root("writes") {
        return;
    }
    let env = TestEnv::new("writes");
    let (code, _, err) = sh(
        &env,
        "",
        "echo hi > /marker && rm /bin/true && test ! -e /bin/true",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = sh(
        &env,
        "",
        "test -e /marker && echo seen || echo fresh; test -e /bin/true && echo intact",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "fresh\nintact\n");
    env.assert_no_leaks();
}

#[test]
fn symlinked_dev_in_the_image_cannot_reach_the_host() {
    if skip_unless_root("devlink") {
        return;
    }
    let env = TestEnv::new("devlink");
    let victim = env.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // A rootfs image whose /dev, /proc and /etc/hosts point at host paths.
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let image_dir = busybox_image()
        .trim_start_matches("oci:")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let blobs = std::path::Path::new(&image_dir).join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::symlink(&victim, rootfs.join("dev")).unwrap();
    std::os::unix::fs::symlink(&victim, rootfs.join("proc")).unwrap();
    let spec = env.spec_with_image(
        "devlink",
        &format!("rootfs:{}", rootfs.display()),
        "command = [\"sh\", \"-c\", \"touch /dev/pwned /dev/shm/x && ls /dev/null && cat /proc/1/comm; true\"]\n[network]\nmode = \"none\"\n",
    );
    let out = env.run(&spec);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "/dev/null\nsh\n");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "the host dir was written to"
    );
    env.assert_no_leaks();
}

#[test]
fn image_config_and_spec_overrides() {
    if skip_unless_root("config") {
        return;
    }
    let env = TestEnv::new("config");
    let (code, out, err) = sh(
        &env,
        "workdir = \"/srv/app\"\nenv = { GREETING = \"hi\", PATH = \"/bin\" }",
        "pwd; echo $GREETING $PATH $HOME $HOSTNAME",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/srv/app\nhi /bin /root probe\n");
    env.assert_no_leaks();
}

#[test]
fn the_helper_runs_from_a_sealed_view_of_berth() {
    if skip_unless_root("sealed") {
        return;
    }
    let env = TestEnv::new("sealed");
    let spec = env.spec(
        "sleeper",
        "command = [\"sleep\", \"1\"]\n[network]\nmode = \"none\"\n",
    );
    let mut child = env
        .command()
        .arg("run")
        .arg(&spec)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The helper is berth's child; wait until it has forked the container.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let helper = loop {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let grand = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if !grand.trim().is_empty() {
                break pid.to_string();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no helper appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_sealed_exe(helper.parse().unwrap());
    assert!(child.wait().unwrap().success());
    env.assert_no_leaks();
}

/// Every other test of this file again, with berth where the root cannot be pivoted (as on an
/// initramfs): the same masks, read-only paths, devices, fds and invisibility must hold.
#[test]
fn the_same_isolation_where_the_root_cannot_be_pivoted() {
    if skip_unless_root("isolation without pivot_root") {
        return;
    }
    if std::env::var_os("BERTH_TEST_NO_PIVOT").is_some() {
        return; // the inner run
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BERTH_TEST_NO_PIVOT", "1")
        .args(["--skip", "the_same_isolation_where", "--test-threads", "4"])
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    let passed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no result in {text}"));
    assert!(passed >= 10, "only {passed} ran:\n{text}");
    // The wrapper really leaves no mount point at the root: pivot_root could not have worked.
    let probe = std::process::Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            common::NO_PIVOT_WRAPPER,
            "sh",
        ])
        .args(["sh", "-c", "mountpoint -q / && echo mounted || echo plain"])
        .output()
        .unwrap();
    assert_eq!(stdout(&probe).trim(), "plain", "{}", stderr(&probe));
}
