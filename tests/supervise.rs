//! `berth supervise` as root, with real containers: the spec dir drives them, crashes restart
//! on the spec's backoff curve, a broken edit keeps the old container, a killed daemon adopts
//! what runs, and nothing leaks.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{
    children_of, start_as_pid1, wait_recorded, wait_until, zombie_children, Daemon, Guarded,
    SupervisorEnv,
};
use common::*;

const LOOP: &str =
    "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n";
const NONE: &str = "[network]\nmode = \"none\"\n";

fn wait_running(env: &TestEnv, name: &str) -> i64 {
    let mut pid = None;
    wait_until(Duration::from_secs(20), &format!("{name} running"), || {
        pid = env.running_pid(name);
        pid.is_some()
    });
    pid.unwrap()
}

/// The CPU niceness of `pid` (field 19 of /proc/PID/stat).
fn niceness(pid: &str) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(16).unwrap().parse().unwrap()
}

fn cgroup_file(env: &TestEnv, controller: &str, name_prefix: &str, file: &str) -> Option<PathBuf> {
    let base = controller_base(controller)?.join(&env.cgroup_parent);
    std::fs::read_dir(base)
        .ok()?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name_prefix}-"))
        })
        .map(|e| e.path().join(file))
}

#[test]
fn drop_edit_delete_a_file() {
    if skip_unless_root("supervise drop/edit/delete") {
        return;
    }
    let env = TestEnv::new("sv-ded");
    let d = Daemon::start(&env);
    env.write_spec("web", &format!("{LOOP}{NONE}"));
    let pid1 = wait_running(&env, "web");
    // The setup ran at a lower CPU priority; the container and its monitor are back at ours.
    let monitor = std::fs::read_to_string(format!("/proc/{pid1}/stat")).unwrap();
    let monitor = monitor[monitor.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(niceness(&pid1.to_string()), niceness("self"));
    assert_eq!(niceness(&monitor), niceness("self"));
    // An edit of the command makes a new container.
    env.write_spec("web", &format!("{LOOP}env = {{ V = \"2\" }}\n{NONE}"));
    wait_until(Duration::from_secs(20), "web recreated", || {
        env.running_pid("web").is_some_and(|p| p != pid1)
    });
    // Deleting the file removes it.
    std::fs::remove_file(env.specs().join("web.toml")).unwrap();
    wait_until(Duration::from_secs(20), "web removed", || {
        env.status("web").is_none()
    });
    assert_eq!(env.leftover_cgroups(), Vec::<PathBuf>::new());
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_memory_change_keeps_the_pid() {
    if skip_unless_root("supervise in-place update") {
        return;
    }
    let env = TestEnv::new("sv-mem");
    let d = Daemon::start(&env);
    env.write_spec(
        "app",
        &format!("{LOOP}[resources]\nmemory = \"64M\"\n{NONE}"),
    );
    let pid = wait_running(&env, "app");
    let limit = cgroup_file(&env, "memory", "app", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&env, "unified", "app", "memory.max"));
    env.write_spec(
        "app",
        &format!("{LOOP}[resources]\nmemory = \"128M\"\n{NONE}"),
    );
    let limit = limit.expect("memory limit file");
    wait_until(Duration::from_secs(20), "the new limit", || {
        std::fs::read_to_string(&limit)
            .map(|s| s.trim() == (128u64 << 20).to_string())
            .unwrap_or(false)
    });
    // The limit is written before the worker reports the update done.
    wait_until(Duration::from_secs(10), "the update to end", || {
        env.status("app").is_some_and(|s| s["state"] != "updating")
    });
    assert_eq!(
        env.running_pid("app"),
        Some(pid),
        "the container was restarted"
    );
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_crash_loop_follows_the_backoff_curve() {
    if skip_unless_root("supervise backoff") {
        return;
    }
    let env = TestEnv::new("sv-crash");
    let out = env.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let d = Daemon::start(&env);
    env.write_spec(
        "crash",
        &format!(
            "command = [\"sh\", \"-c\", \"cut -d' ' -f1 /proc/uptime >> /out/starts; exit 1\"]\n\
             [restart]\npolicy = \"on-failure\"\nmax_retries = 5\nbackoff = {{ initial = \"100ms\", max = \"400ms\", reset_after = \"60s\" }}\n\
             [[mounts]]\nsource = {:?}\ntarget = \"/out\"\n{NONE}",
            out.display()
        ),
    );
    wait_until(Duration::from_secs(30), "six starts", || {
        std::fs::read_to_string(out.join("starts"))
            .map(|s| s.lines().count() >= 6)
            .unwrap_or(false)
    });
    wait_until(Duration::from_secs(10), "crash given up", || {
        env.status("crash")
            .is_some_and(|s| s["state"] == "exited" && s["restarts"] == 5)
    });
    let starts: Vec<f64> = std::fs::read_to_string(out.join("starts"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 6, "max_retries = 5 means 6 runs: {starts:?}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // initial 100ms doubling, capped at 400ms, plus up to 10% jitter and the start itself.
    for (gap, want) in gaps.iter().zip([0.1, 0.2, 0.4, 0.4, 0.4]) {
        assert!(
            *gap >= want - 0.011 && *gap <= want * 1.1 + 0.25,
            "gaps {gaps:?}"
        );
    }
    let st = env.status("crash").unwrap();
    assert_eq!(st["last_exit"], "exit code 1");
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn an_invalid_edit_keeps_the_running_container() {
    if skip_unless_root("supervise invalid edit") {
        return;
    }
    let env = TestEnv::new("sv-bad");
    let d = Daemon::start(&env);
    env.write_spec("keep", &format!("{LOOP}{NONE}"));
    let pid = wait_running(&env, "keep");
    env.write_spec("keep", "[resources]\nmemory = \"1M\"\n");
    wait_until(Duration::from_secs(20), "the error in ps", || {
        env.status("keep").is_some_and(|s| {
            s["spec_error"]
                .as_str()
                .is_some_and(|e| e.contains("keep.toml:3:10"))
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.running_pid("keep"), Some(pid));
    let out = env.ctl(&["ps"]);
    assert!(
        stdout(&out).contains("keep.toml:3:10: resources.memory"),
        "{}",
        stdout(&out)
    );
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_killed_daemon_adopts_its_containers() {
    if skip_unless_root("supervise adoption") {
        return;
    }
    let env = TestEnv::new("sv-adopt");
    let d = Daemon::start(&env);
    env.write_spec("a", &format!("{LOOP}{NONE}"));
    env.write_spec("b", &format!("{LOOP}{NONE}"));
    let (pa, pb) = (wait_running(&env, "a"), wait_running(&env, "b"));
    wait_recorded(&env, "a");
    wait_recorded(&env, "b");
    d.kill9();
    // b dies while no daemon runs: the next daemon notices and restarts it (policy always).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pb as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(20), "b restarted", || {
        env.running_pid("b").is_some_and(|p| p != pb)
    });
    assert_eq!(env.running_pid("a"), Some(pa), "a was not adopted");
    let cgroups = env.leftover_cgroups();
    let per_hierarchy = cgroups
        .iter()
        .filter(|p| p.starts_with(controller_base("pids").unwrap_or_default()))
        .count();
    assert_eq!(per_hierarchy, 2, "duplicates: {cgroups:?}");
    assert!(env.daemon_log().contains("adopted"), "{}", env.daemon_log());
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn logs_are_kept_and_read_back() {
    if skip_unless_root("supervise logs") {
        return;
    }
    let env = TestEnv::new("sv-logs");
    let d = Daemon::start(&env);
    env.write_spec(
        "talk",
        &format!("command = [\"sh\", \"-c\", \"echo out-line; echo err-line >&2; trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n{NONE}"),
    );
    wait_running(&env, "talk");
    wait_until(Duration::from_secs(10), "logs", || {
        let out = env.command().args(["logs", "talk"]).output().unwrap();
        stdout(&out) == "out-line\n" && stderr(&out) == "err-line\n"
    });
    // The last two lines: one on each stream.
    let out = env
        .command()
        .args(["logs", "--timestamps", "--tail", "2", "talk"])
        .output()
        .unwrap();
    let line = stdout(&out);
    assert!(
        line.ends_with(" out-line\n") && line.starts_with("20"),
        "{line:?}"
    );
    assert!(stderr(&out).ends_with(" err-line\n"), "{}", stderr(&out));
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn fifty_specs_converge_and_stop_with_the_daemon() {
    if skip_unless_root("supervise 50 specs") {
        return;
    }
    let env = TestEnv::new("sv-50");
    std::fs::create_dir_all(env.specs()).unwrap();
    for i in 0..50 {
        env.write_spec(
            &format!("c{i:02}"),
            &format!("{LOOP}[resources]\nmemory = \"16M\"\n{NONE}"),
        );
    }
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(60), "50 running", || {
        env.ps().iter().filter(|c| c["state"] == "running").count() == 50
    });
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_thousand_stop_start_cycles_leak_nothing() {
    if skip_unless_root("supervise cycles") {
        return;
    }
    let env = TestEnv::new("sv-cycles");
    let d = Daemon::start(&env);
    // Stops at once on SIGTERM, so the cycles measure berth, not a sleep.
    env.write_spec(
        "cyc",
        &format!("command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n{NONE}"),
    );
    wait_running(&env, "cyc");
    for i in 0..1000 {
        let out = env.ctl(&["restart", "cyc"]);
        assert!(out.status.success(), "cycle {i}: {}", stderr(&out));
        wait_until(Duration::from_secs(10), "running again", || {
            env.status("cyc").is_some_and(|s| s["state"] == "running")
        });
    }
    let cgroups = env.leftover_cgroups();
    assert!(cgroups.len() <= cgroup_bases().len(), "{cgroups:?}");
    assert_eq!(env.leftover_containers().len(), 1);
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn as_pid_1_it_reaps_orphans() {
    if skip_unless_root("supervise as PID 1") {
        return;
    }
    let env = TestEnv::new("sv-pid1");
    let (mut child, init) = start_as_pid1(&env, None);
    // 100 processes whose parent exits at once: they are reparented to the namespace's init.
    let st = Command::new("nsenter")
        .args([
            "--target",
            &init.to_string(),
            "--pid",
            "--",
            "sh",
            "-c",
            "for i in $(seq 100); do (sleep 0.3 &); done",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let orphans = children_of(init);
    assert!(
        orphans.len() >= 90,
        "orphans were not reparented to berth: {orphans:?}"
    );
    std::thread::sleep(Duration::from_millis(800));
    wait_until(Duration::from_secs(10), "every orphan reaped", || {
        zombie_children(init) == 0
    });
    // Only the zygote, which forks the monitors, stays.
    let remaining: Vec<i32> = children_of(init)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !String::from_utf8_lossy(&cmdline).contains(berth::runtime::zygote::ZYGOTE_ARG)
        })
        .collect();
    assert_eq!(remaining.len(), 0, "{remaining:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        child.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        env.daemon_log()
    );
    env.assert_no_leaks();
}

#[test]
fn tells_systemd_it_is_ready_and_pings_the_watchdog() {
    if skip_unless_root("supervise notify") {
        return;
    }
    let env = TestEnv::new("sv-notify");
    std::fs::create_dir_all(env.specs()).unwrap();
    let path = env.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Guarded(Some(
        env.command()
            .arg("--socket")
            .arg(env.socket())
            .arg("supervise")
            .arg("--specs")
            .arg(env.specs())
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"WATCHDOG=1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait(Duration::from_secs(20)), Some(0));
    env.assert_no_leaks();
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: i64) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

#[test]
fn monitors_fork_from_the_zygote_and_starts_survive_its_loss() {
    if skip_unless_root("supervise zygote") {
        return;
    }
    let env = TestEnv::new("sv-zygote");
    let d = Daemon::start(&env);
    const LOOP: &str = "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n";
    env.write_spec("one", &format!("{LOOP}{NONE}"));
    env.write_spec("two", &format!("{LOOP}{NONE}"));
    let init_one = wait_running(&env, "one");
    let init_two = wait_running(&env, "two");
    // Each container's monitor is a child of the one zygote, a child of the daemon, and runs
    // from the sealed binary.
    let monitor_one = parent_of(init_one).unwrap();
    let monitor_two = parent_of(init_two).unwrap();
    let zygote = parent_of(monitor_one).unwrap();
    assert_eq!(parent_of(monitor_two), Some(zygote));
    assert_eq!(parent_of(zygote), Some(d.pid() as i64));
    assert_ne!(zygote, d.pid() as i64);
    assert_sealed_exe(monitor_one as i32);
    let cmdline = std::fs::read(format!("/proc/{zygote}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("__berth-zygote"));

    // Without the zygote, a start still works (its monitor is exec'd by the daemon), and the
    // running containers are untouched.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the zygote gone", || {
        !std::path::Path::new(&format!("/proc/{zygote}/cmdline")).exists()
            || std::fs::read(format!("/proc/{zygote}/cmdline"))
                .is_ok_and(|c| !String::from_utf8_lossy(&c).contains("__berth-zygote"))
    });
    env.write_spec("three", &format!("{LOOP}{NONE}"));
    let init_three = wait_running(&env, "three");
    assert_eq!(
        parent_of(parent_of(init_three).unwrap()),
        Some(d.pid() as i64)
    );
    assert_eq!(env.running_pid("one"), Some(init_one));
    d.stop();
    env.assert_no_leaks();
}
