//! `berth commit` as root against a supervised busybox container: the container's own command
//! changes its filesystem (a new file, a deleted file, a replaced dir), the commit turns that into
//! a new image, and containers from the new image see the change while the old image is
//! unchanged. A second commit on top of the first shows that tags keep earlier versions.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::*;

const NONE: &str = "[network]\nmode = \"none\"\n";

/// Puts a spec into the daemon's spec dir (temp file + rename).
fn supervise_spec(env: &TestEnv, name: &str, image: &str, script: &str) {
    let tmp = env.specs().join(format!(".{name}.toml.tmp"));
    let body = format!("image = {image:?}\ncommand = [\"sh\", \"-c\", {script:?}]\n{NONE}");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, env.specs().join(format!("{name}.toml"))).unwrap();
}

/// The upper dir of `name`'s running instance, once `ready` exists in it.
fn wait_ready_upper(env: &TestEnv, name: &str) -> PathBuf {
    let mut upper = None;
    wait_until(Duration::from_secs(30), &format!("{name} ready"), || {
        let out = env.ctl(&["inspect", name]);
        if !out.status.success() {
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let Some(id) = v["instance"]["id"].as_str() else {
            return false;
        };
        let u = env.root().join("containers").join(id).join("upper");
        let ok = u.join("ready").exists();
        upper = Some(u);
        ok
    });
    upper.unwrap()
}

/// `berth run` of a one-off spec (outside the daemon's spec dir) printing what `script` prints.
fn run_with(env: &TestEnv, name: &str, image: &str, script: &str) -> String {
    let dir = env.dir.path().join("run-specs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("image = {image:?}\ncommand = [\"sh\", \"-c\", {script:?}]\n{NONE}"),
    )
    .unwrap();
    let out = env.run(&path);
    assert!(
        out.status.success(),
        "run {name} ({image}): {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

const PROBE: &str = "cat /new-file; \
    if [ -e /bin/true ]; then echo true:present; else echo true:absent; fi; \
    echo home:$(ls /home); \
    cat /made/dir/f 2>/dev/null || echo made:absent; \
    cat /second 2>/dev/null || echo second:absent";

fn commit(env: &TestEnv, name: &str, reference: &str) {
    let out = env.ctl(&["commit", name, reference]);
    assert!(
        out.status.success(),
        "commit {name} {reference}: {}{}\ndaemon log:\n{}",
        stdout(&out),
        stderr(&out),
        env.daemon_log()
    );
    assert!(stdout(&out).starts_with(reference), "{}", stdout(&out));
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn commit_a_running_container() {
    if skip_unless_root("commit a running container") {
        return;
    }
    let env = TestEnv::new("commit");
    let base = busybox_image();
    let d = Daemon::start(&env);

    // The container changes its own filesystem, then idles.
    supervise_spec(
        &env,
        "web",
        base,
        "echo v2 > /new-file; rm /bin/true; rm -rf /home; mkdir /home; touch /home/only; \
         mkdir -p /made/dir; echo made > /made/dir/f; mknod /made/fifo p; \
         ln /made/dir/f /made/hard; ln -s /etc/shadow /made/link; touch /ready; \
         trap 'exit 0' TERM; while :; do sleep 0.1; done",
    );
    let upper = wait_ready_upper(&env, "web");
    let wh = std::fs::symlink_metadata(upper.join("bin/true")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()),
        "rm of a lower file leaves a whiteout in upper"
    );
    commit(&env, "web", "localhost/mine:v2");
    // The container was frozen for the commit and runs again.
    let out = env.ctl(&["inspect", "web"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["instance"]["id"].as_str().unwrap().to_string();
    if let Some(freezer) = controller_base("freezer") {
        let state = freezer
            .join(&env.cgroup_parent)
            .join(&id)
            .join("freezer.state");
        assert_eq!(std::fs::read_to_string(state).unwrap().trim(), "THAWED");
    }
    assert_eq!(v["status"]["state"], "running");

    // The new image, resolved from its record (no registry behind localhost here).
    let got = run_with(&env, "probe2", "localhost/mine:v2", PROBE);
    assert_eq!(
        lines(&got),
        ["v2", "true:absent", "home:only", "made", "second:absent"],
        "{got}"
    );
    let got = run_with(
        &env,
        "probe2b",
        "localhost/mine:v2",
        "ls -l /made/fifo | cut -c1; readlink /made/link; \
         [ /made/hard -ef /made/dir/f ] && echo hardlinked; \
         [ -e /ready ] && echo ready; ls /proc/self >/dev/null && echo proc",
    );
    assert_eq!(
        lines(&got),
        ["p", "/etc/shadow", "hardlinked", "ready", "proc"],
        "{got}"
    );

    let hist = env.ctl(&["image", "history", "localhost/mine:v2"]);
    assert!(hist.status.success(), "{}", stderr(&hist));
    let hist = stdout(&hist);
    assert!(hist.contains("berth commit web"), "{hist}");
    assert!(hist.contains("busybox-image.sh"), "{hist}");

    // A second container from the committed image, committed again on top.
    supervise_spec(
        &env,
        "app",
        "localhost/mine:v2",
        "echo v3 > /new-file; echo second > /second; rm -f /ready; touch /ready; \
         trap 'exit 0' TERM; while :; do sleep 0.1; done",
    );
    let upper3 = wait_ready_upper(&env, "app");
    assert!(upper3 != upper);
    commit(&env, "app", "localhost/mine:v3");
    let got = run_with(&env, "probe3", "localhost/mine:v3", PROBE);
    assert_eq!(
        lines(&got),
        ["v3", "true:absent", "home:only", "made", "second"],
        "{got}"
    );
    let json = env.ctl(&["image", "history", "--json", "localhost/mine:v3"]);
    let h: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let by: Vec<&str> = h.iter().filter_map(|e| e["created_by"].as_str()).collect();
    assert_eq!(
        by,
        ["busybox-image.sh", "berth commit web", "berth commit app"]
    );

    // Earlier versions are kept: v2 and the base image are as they were.
    let got = run_with(&env, "probe2c", "localhost/mine:v2", PROBE);
    assert_eq!(
        lines(&got),
        ["v2", "true:absent", "home:only", "made", "second:absent"],
        "{got}"
    );
    let got = run_with(
        &env,
        "probe1",
        base,
        "cat /new-file 2>/dev/null || echo new:absent; \
         if [ -e /bin/true ]; then echo true:present; fi; echo home:$(ls /home)",
    );
    assert_eq!(
        lines(&got),
        ["new:absent", "true:present", "home:app"],
        "{got}"
    );

    // A stopped container cannot be committed.
    let out = env.ctl(&["stop", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "web stopped", || {
        let out = env.ctl(&["inspect", "web"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["state"] == "stopped"
    });
    let out = env.ctl(&["commit", "web", "localhost/mine:v9"]);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));

    drop(d);
    env.assert_no_leaks();
}
