//! The supervisor's lifecycle as root, with real containers whose init ignores SIGTERM (`sleep`
//! as PID 1): stops run in parallel, a spec dropped during stops starts while they wait, a
//! failed update keeps the old container, and one daemon holds a root.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{wait_child, wait_until, Daemon, SupervisorEnv};
use common::*;

/// `sleep` as PID 1 ignores SIGTERM: only the SIGKILL after stop_timeout ends it.
const SLEEPER: &str =
    "command = [\"sleep\", \"100000\"]\nstop_timeout = \"2s\"\n[network]\nmode = \"none\"\n";

fn running(env: &TestEnv) -> usize {
    env.ps().iter().filter(|c| c["state"] == "running").count()
}

#[test]
fn fifty_sigterm_ignoring_containers_stop_in_parallel() {
    if skip_unless_root("parallel stops") {
        return;
    }
    let env = TestEnv::new("lc-par");
    std::fs::create_dir_all(env.specs()).unwrap();
    for i in 0..50 {
        env.write_spec(&format!("s{i:02}"), SLEEPER);
    }
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(60), "50 running", || {
        running(&env) == 50
    });
    let t0 = Instant::now();
    d.stop();
    let took = t0.elapsed();
    eprintln!("daemon with 50 SIGTERM-ignoring containers (stop_timeout 2s) exited in {took:?}");
    // One after another they would take 50 x 2 s; the figure itself is the bench's.
    assert!(
        took < Duration::from_secs(25),
        "stops were not parallel: {took:?}"
    );
    env.assert_no_leaks();
}

#[test]
fn a_spec_dropped_during_stops_runs_before_they_end() {
    if skip_unless_root("start during stops") {
        return;
    }
    let env = TestEnv::new("lc-drop");
    std::fs::create_dir_all(env.specs()).unwrap();
    for i in 0..10 {
        env.write_spec(&format!("old{i}"), &SLEEPER.replace("\"2s\"", "\"20s\""));
    }
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(30), "10 running", || {
        running(&env) == 10
    });
    for i in 0..10 {
        std::fs::remove_file(env.specs().join(format!("old{i}.toml"))).unwrap();
    }
    wait_until(Duration::from_secs(10), "10 stopping", || {
        env.ps().iter().filter(|c| c["state"] == "stopping").count() == 10
    });
    env.write_spec("new", SLEEPER);
    wait_until(Duration::from_secs(10), "new running", || {
        env.running_pid("new").is_some()
    });
    let ps = env.ps();
    let stopping = ps.iter().filter(|c| c["state"] == "stopping").count();
    assert_eq!(stopping, 10, "the new spec waited for the stops: {ps:?}");
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_failed_update_keeps_the_running_container() {
    if skip_unless_root("failed update") {
        return;
    }
    let env = TestEnv::new("lc-upd");
    let d = Daemon::start(&env);
    env.write_spec("web", SLEEPER);
    let mut pid = None;
    wait_until(Duration::from_secs(20), "web running", || {
        pid = env.running_pid("web");
        pid.is_some()
    });
    let missing = env.dir.path().join("no-such-layout");
    std::fs::write(
        env.specs().join("web.toml"),
        format!("image = \"oci:{}:v2\"\n{SLEEPER}", missing.display()),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the update failure reported",
        || {
            env.status("web").is_some_and(|s| {
                s["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("update failed"))
            })
        },
    );
    let s = env.status("web").unwrap();
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["pid"].as_i64(), pid, "the old container runs on: {s}");
    let inspect = env.ctl(&["inspect", "web"]);
    assert!(
        stdout(&inspect).contains(&format!("{}", pid.unwrap())),
        "inspect shows the instance: {}",
        stdout(&inspect)
    );
    assert!(
        env.daemon_log().contains("update failed"),
        "{}",
        env.daemon_log()
    );
    // The spec restored: nothing changes, no second copy.
    env.write_spec("web", SLEEPER);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.running_pid("web"), pid);
    assert_eq!(env.leftover_containers().len(), 1, "one instance");
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_second_daemon_on_the_same_root_refuses() {
    if skip_unless_root("one daemon per root") {
        return;
    }
    let env = TestEnv::new("lc-lock");
    let d = Daemon::start(&env);
    env.write_spec("web", SLEEPER);
    wait_until(Duration::from_secs(20), "web running", || {
        env.running_pid("web").is_some()
    });
    let pid = env.running_pid("web");
    let other_socket = env.dir.path().join("other.sock");
    let mut second = env
        .command()
        .arg("--socket")
        .arg(&other_socket)
        .arg("supervise")
        .arg("--specs")
        .arg(env.specs())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_child(&mut second, Duration::from_secs(10));
    let mut err = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the second daemon must refuse: {code:?} {err}"
    );
    let root = env.root().display().to_string();
    assert!(
        err.contains(&root) && err.contains("in use"),
        "names the root: {err}"
    );
    let first_pid = std::fs::read_to_string(env.root().join("daemon.lock")).unwrap();
    assert!(
        err.contains(first_pid.trim()),
        "names the first daemon's pid: {err}"
    );
    assert!(!other_socket.exists());
    assert_eq!(env.running_pid("web"), pid, "the first daemon is untouched");
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn berth_reboot_outside_an_init_only_stops_the_daemon() {
    if skip_unless_root("berth reboot outside an init") {
        return;
    }
    let env = TestEnv::new("lc-power");
    std::fs::create_dir_all(env.specs()).unwrap();
    env.write_spec("db", SLEEPER);
    env.write_spec("web", &format!("depends_on = [\"db\"]\n{SLEEPER}"));
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(30), "2 running", || running(&env) == 2);
    let out = env.ctl(&["reboot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("then reboot"), "{}", stdout(&out));
    let t0 = Instant::now();
    assert_eq!(
        d.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        env.daemon_log()
    );
    // Each ignores SIGTERM: web's stop timeout, then db's, in reverse dependency order.
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    let log = env.daemon_log();
    let web = log.find("exited: signal 9 name=web").expect(&log);
    let db = log.find("exited: signal 9 name=db").expect(&log);
    assert!(web < db, "db stopped before web:\n{log}");
    env.assert_no_leaks();
}
