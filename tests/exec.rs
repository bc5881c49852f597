//! `berth exec` as root against a supervised container: the command joins the container's
//! namespaces and cgroup with the container's capabilities, no_new_privs and seccomp, its exit
//! code passes through, and nothing leaks.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::daemon::{wait_child, wait_until, Daemon, SupervisorEnv};
use common::*;

fn ctl(env: &TestEnv) -> std::process::Command {
    let mut c = env.command();
    c.arg("--socket").arg(env.socket());
    c
}

/// `berth exec NAME -- ARGS` with stdin closed.
fn exec(env: &TestEnv, name: &str, args: &[&str]) -> Output {
    ctl(env)
        .args(["exec", name, "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

const SPEC: &str =
    "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n\
hostname = \"inside\"\nenv = { GREETING = \"hello from the spec\" }\n[network]\nmode = \"none\"\n";

fn check(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The host pid of the process whose parent is `parent` and whose argv is `argv`.
fn child_with_args(parent: i32, argv: &[&str]) -> Option<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: i32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == parent && cmdline == want).then_some(pid)
    })
}

fn link(pid: i32, what: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/{what}")).unwrap()
}

#[test]
fn exec_joins_the_container() {
    if skip_unless_root("exec") {
        return;
    }
    let env = TestEnv::new("exec");
    let d = Daemon::start(&env);
    std::fs::write(
        env.specs().join("box.toml"),
        format!("image = {:?}\n{SPEC}", busybox_image()),
    )
    .unwrap();
    std::fs::write(
        env.specs().join("user.toml"),
        format!(
            "image = {:?}\nuser = \"65534:65534\"\nworkdir = \"/tmp\"\n{SPEC}",
            busybox_image()
        ),
    )
    .unwrap();
    let mut init = None;
    wait_until(Duration::from_secs(20), "box running", || {
        init = env.running_pid("box");
        init.is_some()
    });
    let init = init.unwrap() as i32;

    wait_until(Duration::from_secs(20), "user running", || {
        env.running_pid("user").is_some()
    });

    // The container's user and working directory: the init's cwd by default, else the spec's.
    assert_eq!(check(&exec(&env, "box", &["pwd"]), "pwd"), "/\n");
    assert_eq!(check(&exec(&env, "box", &["id", "-u"]), "id"), "0\n");
    assert_eq!(check(&exec(&env, "user", &["pwd"]), "pwd"), "/tmp\n");
    assert_eq!(
        check(&exec(&env, "user", &["sh", "-c", "id -u; id -g"]), "id"),
        "65534\n65534\n"
    );
    let status = check(&exec(&env, "user", &["cat", "/proc/self/status"]), "status");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t00000000a80425fb"), "{status}");

    // The container's hostname and environment.
    assert_eq!(
        check(&exec(&env, "box", &["hostname"]), "hostname"),
        "inside\n"
    );
    assert_eq!(
        check(&exec(&env, "box", &["sh", "-c", "echo $GREETING"]), "env"),
        "hello from the spec\n"
    );

    // Its pid namespace: not pid 1, and only the container's processes are visible.
    let pid = check(&exec(&env, "box", &["sh", "-c", "echo $$"]), "echo $$");
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(pid > 1, "exec'd shell is pid {pid}");
    let procs = check(&exec(&env, "box", &["ls", "/proc"]), "ls /proc");
    let pids: Vec<i32> = procs
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() <= 4,
        "more than the container's processes: {pids:?}"
    );
    // Its root filesystem: the file written by one exec is seen by the next.
    check(
        &exec(&env, "box", &["sh", "-c", "echo kept > /tmp/mark"]),
        "write",
    );
    assert_eq!(
        check(&exec(&env, "box", &["cat", "/tmp/mark"]), "read"),
        "kept\n"
    );

    // The container's security setup.
    let status = check(&exec(&env, "box", &["cat", "/proc/self/status"]), "status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    assert_eq!(field("CapEff:"), "00000000a80425fb");
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("CapInh:"), "0000000000000000");
    assert_eq!(field("CapAmb:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    // Default signal dispositions (Rust ignores SIGPIPE; the command must not inherit that).
    assert_eq!(field("SigIgn:"), "0000000000000000");
    assert_eq!(field("SigBlk:"), "0000000000000000");
    // Seccomp and the missing CAP_SYS_ADMIN: no unshare, no mount.
    let out = exec(&env, "box", &["unshare", "-n", "true"]);
    assert_eq!(out.status.code(), Some(1), "unshare: {}", stderr(&out));
    assert!(stderr(&out).contains("not permitted"), "{}", stderr(&out));

    // A long-running exec, seen from the host: same cgroups and namespaces as the init, and
    // signals sent to `berth exec` reach the command.
    let mut sleeper = ctl(&env)
        .args(["exec", "box", "--", "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let helper = sleeper.id() as i32;
    let mut cmd = None;
    wait_until(Duration::from_secs(10), "the exec'd sleep", || {
        cmd = child_with_args(helper, &["sleep", "300"]);
        cmd.is_some()
    });
    let cmd = cmd.unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{cmd}/cgroup")).unwrap(),
        std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap()
    );
    for ns in ["ipc", "uts", "net", "pid", "mnt", "cgroup"] {
        assert_eq!(
            link(cmd, &format!("ns/{ns}")),
            link(init, &format!("ns/{ns}")),
            "{ns}"
        );
    }
    assert_eq!(link(cmd, "root"), link(init, "root"));
    // The helper's own exe is the sealed view, not the binary on disk.
    common::assert_sealed_exe(helper);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_child(&mut sleeper, Duration::from_secs(10)),
        Some(128 + 15),
        "SIGTERM reaches the command"
    );

    // Exit codes.
    let out = exec(&env, "box", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // As with docker, the command may follow the name without `--`, its flags included.
    let out = ctl(&env)
        .args(["exec", "box", "sh", "-c", "echo $0-$1; exit 7", "-n", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "-n-x\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(7));
    let out = exec(&env, "box", &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = exec(&env, "box", &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no-such-command") && err.lines().count() == 1,
        "{err}"
    );
    let out = exec(&env, "box", &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let out = exec(&env, "nothere", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("nothere") && err.lines().count() == 1, "{err}");

    // -i: stdin reaches the command; without it, the command reads /dev/null.
    let out = output_with_input(
        ctl(&env).args(["exec", "-i", "box", "--", "cat"]),
        b"echoed through\n",
    );
    assert_eq!(check(&out, "exec -i cat"), "echoed through\n");
    let out = ctl(&env)
        .args(["exec", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(check(&out, "exec cat"), "");

    // -t: a terminal of the container's own devpts, relayed to ours (util-linux `script`
    // gives this test a terminal of its own).
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok()
    {
        let inner = format!(
            "stty cols 91 rows 17; {} --root {} --cgroup-parent {} --socket {} exec -t box -- sh -c 'tty; stty size; exit 3'",
            berth_bin(),
            env.root().display(),
            env.cgroup_parent,
            env.socket().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&out).replace('\r', "");
        assert!(
            text.contains("/dev/pts/0\n17 91\n"),
            "{text:?} {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(3), "{text:?}");
    }

    d.stop();
    env.assert_no_leaks();
}
