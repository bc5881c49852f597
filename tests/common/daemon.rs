//! A `berth supervise` daemon per test: its own root, socket, spec dir and cgroup parent, and
//! the control commands the tests use.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::TestNetns;
use super::{busybox_image, stderr, TestEnv};

/// A daemon of one test: its own root, socket, spec dir and cgroup parent.
pub struct Daemon<'a> {
    env: &'a TestEnv,
    child: Option<Child>,
}

impl<'a> Daemon<'a> {
    pub fn start(env: &'a TestEnv) -> Daemon<'a> {
        Daemon::spawn(env, env.command())
    }

    /// A daemon with `config` (the text of a supervisor config file).
    pub fn start_with_config(env: &'a TestEnv, config: &str) -> Daemon<'a> {
        let path = env.dir.path().join("berth.toml");
        std::fs::write(&path, config).unwrap();
        let mut c = env.command();
        c.arg("--socket")
            .arg(env.socket())
            .arg("supervise")
            .arg("--config")
            .arg(path);
        Daemon::spawn_supervise(env, c)
    }

    /// A daemon inside the test's network namespace (for bridge mode), with `config` (the
    /// text of a supervisor config file) when given.
    pub fn start_in(env: &'a TestEnv, netns: &TestNetns, config: Option<&str>) -> Daemon<'a> {
        let mut c = netns.command(super::berth_bin());
        c.arg("--root")
            .arg(env.root())
            .arg("--cgroup-parent")
            .arg(&env.cgroup_parent)
            .arg("--socket")
            .arg(env.socket())
            .arg("supervise");
        if let Some(text) = config {
            let path = env.dir.path().join("berth.toml");
            std::fs::write(&path, text).unwrap();
            c.arg("--config").arg(path);
        }
        Daemon::spawn_supervise(env, c)
    }

    /// `berth [global options] --socket S supervise --specs D` from `command`.
    fn spawn(env: &'a TestEnv, mut command: std::process::Command) -> Daemon<'a> {
        command.arg("--socket").arg(env.socket()).arg("supervise");
        Daemon::spawn_supervise(env, command)
    }

    /// Adds `--specs D` to `command` (which ends in `supervise`) and starts it.
    fn spawn_supervise(env: &'a TestEnv, mut command: std::process::Command) -> Daemon<'a> {
        std::fs::create_dir_all(env.specs()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.dir.path().join("daemon.log"))
            .unwrap();
        let child = command
            .arg("--specs")
            .arg(env.specs())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            env,
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "the socket", || {
            std::os::unix::net::UnixStream::connect(env.socket()).is_ok()
        });
        d
    }

    /// SIGTERM and wait: every container stopped, exit 0.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_child(&mut child, Duration::from_secs(30));
        assert_eq!(
            status,
            Some(0),
            "daemon exit; log:\n{}",
            self.env.daemon_log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the daemon to exit on its own (at most `timeout`): its exit code.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        wait_child(&mut child, timeout)
    }

    /// kill -9, leaving its containers running.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_child(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits until the daemon's record of `name` names a running instance (records are written
/// by a thread of their own, a moment after `ps` shows the container running): what a test
/// that kills the daemon needs before it does.
pub fn wait_recorded(env: &TestEnv, name: &str) {
    let record = env.root().join(format!("state/{name}.json"));
    wait_until(Duration::from_secs(10), &format!("{name}'s record"), || {
        std::fs::read_to_string(&record).is_ok_and(|r| r.contains("\"instance\": {"))
    });
}

pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub trait SupervisorEnv {
    fn specs(&self) -> PathBuf;
    fn socket(&self) -> PathBuf;
    fn daemon_log(&self) -> String;
    fn write_spec(&self, name: &str, body: &str);
    fn ps(&self) -> Vec<serde_json::Value>;
    fn status(&self, name: &str) -> Option<serde_json::Value>;
    fn running_pid(&self, name: &str) -> Option<i64>;
    fn ctl(&self, args: &[&str]) -> std::process::Output;
}

impl SupervisorEnv for TestEnv {
    fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }
    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
    /// Written to a temp file and renamed in, as config tools do.
    fn write_spec(&self, name: &str, body: &str) {
        let tmp = self.specs().join(format!(".{name}.toml.tmp"));
        let path = self.specs().join(format!("{name}.toml"));
        let text = format!("image = {:?}\n{body}", busybox_image());
        super::schema::check_spec(&path, &text);
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        self.command()
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }
    fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["ps", "--json"]);
        assert!(out.status.success(), "ps: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn status(&self, name: &str) -> Option<serde_json::Value> {
        self.ps().into_iter().find(|c| c["name"] == name)
    }
    fn running_pid(&self, name: &str) -> Option<i64> {
        self.status(name)
            .filter(|s| s["state"] == "running")
            .and_then(|s| s["pid"].as_i64())
    }
}

/// A daemon started some other way (under `unshare`): SIGTERM and waited for when dropped, so
/// a failing test leaves no daemon or container behind.
pub struct Guarded(pub Option<Child>);

impl Guarded {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits for the exit (up to `timeout`) and returns its code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let code = wait_child(self.0.as_mut()?, timeout);
        if code.is_some() {
            self.0 = None;
        }
        code
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_child(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A daemon as PID 1 of a new pid namespace (`unshare --pid --fork --mount-proc`), inside
/// `netns` when given. Returns the guarded `unshare` process and berth's pid (as seen here).
pub fn start_as_pid1(env: &TestEnv, netns: Option<&TestNetns>) -> (Guarded, i32) {
    std::fs::create_dir_all(env.specs()).unwrap();
    let log = std::fs::File::create(env.dir.path().join("daemon.log")).unwrap();
    let mut command = match netns {
        Some(n) => n.command("unshare"),
        None => std::process::Command::new("unshare"),
    };
    let child = Guarded(Some(
        command
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(super::berth_bin())
            .arg("--root")
            .arg(env.root())
            .arg("--cgroup-parent")
            .arg(&env.cgroup_parent)
            .arg("--socket")
            .arg(env.socket())
            .arg("supervise")
            .arg("--specs")
            .arg(env.specs())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    wait_until(Duration::from_secs(10), "the socket", || {
        std::os::unix::net::UnixStream::connect(env.socket()).is_ok()
    });
    // berth is the only child of `unshare --fork`.
    let init = children_of(child.pid() as i32)[0];
    (child, init)
}

/// The children of process `pid` (as listed in /proc).
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// How many children of process `pid` are zombies (exited, not reaped yet).
pub fn zombie_children(pid: i32) -> usize {
    children_of(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z "))
        })
        .count()
}
