//! Docker's verbs as root against a supervised busybox: `ps -q/--format/--filter`,
//! `inspect --format`, `exec -u/-e/-w/-d`, `top`, `port`, `pause`/`unpause`, `kill -s` (the init ignores SIGTERM,
//! as `sleep` as PID 1 does), `wait` (the exit code), `info`, `version` and `cp` (both ways, never through the
//! container's links to the host).

mod common;

use std::time::{Duration, Instant};

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::*;

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.ctl(args);
    assert!(
        out.status.success(),
        "berth {args:?}: {}{}\n{}",
        stdout(&out),
        stderr(&out),
        env.daemon_log()
    );
    stdout(&out)
}

#[test]
fn docker_verbs_on_a_supervised_container() {
    if skip_unless_root("docker verbs") {
        return;
    }
    let env = TestEnv::new("verbs");
    let d = Daemon::start(&env);
    // `web` ignores SIGTERM (its init traps it) and exits 7 on SIGUSR1; `idle` idles.
    env.write_spec(
        "web",
        "command = [\"sh\", \"-c\", \"trap '' TERM; trap 'exit 7' USR1; sleep 1000 & while :; do sleep 0.1; done\"]\n\
         [restart]\npolicy = \"never\"\n[network]\nmode = \"none\"\n",
    );
    env.write_spec(
        "idle",
        "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n[network]\nmode = \"none\"\n",
    );
    wait_until(Duration::from_secs(30), "both running", || {
        env.running_pid("web").is_some() && env.running_pid("idle").is_some()
    });

    let mut names: Vec<String> = ok(&env, &["ps", "-q"]).lines().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["idle", "web"]);
    assert_eq!(ok(&env, &["ps", "-q", "--filter", "name=we"]), "web\n");
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "--filter",
                "state=running",
                "--filter",
                "name=idle",
                "--format",
                "{{.Name}}:{{.State}}"
            ]
        ),
        "idle:running\n"
    );
    let err = env.ctl(&["ps", "--filter", "colour=red"]);
    assert!(!err.status.success() && stderr(&err).contains("expected name="));
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "web",
                "--format",
                "{{.status.state}} {{.spec.restart.policy}}"
            ]
        ),
        "running never\n"
    );

    // exec with docker's -u, -e, -w and -d.
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                "-u",
                "nobody",
                "-e",
                "X=set",
                "-w",
                "/tmp",
                "web",
                "sh",
                "-c",
                "id -un; echo $X; pwd"
            ]
        ),
        "nobody\nset\n/tmp\n"
    );
    assert_eq!(
        ok(&env, &["exec", "-u", "1000:1000", "web", "id", "-u"]),
        "1000\n"
    );
    let started = Instant::now();
    ok(
        &env,
        &[
            "exec",
            "-d",
            "web",
            "sh",
            "-c",
            "sleep 1; echo detached > /tmp/d",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "-d returns at once"
    );
    wait_until(Duration::from_secs(10), "the detached exec ran", || {
        stdout(&env.ctl(&["exec", "web", "cat", "/tmp/d"])) == "detached\n"
    });
    let bad = env.ctl(&["exec", "-u", "nosuchuser", "web", "true"]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("nosuchuser"),
        "{}",
        stderr(&bad)
    );

    // top: the init, its sleep child and the loop's sleeps, by host pid.
    let pid = env.running_pid("web").unwrap();
    let top = ok(&env, &["top", "web"]);
    assert!(top.starts_with("UID"), "{top}");
    assert!(top.contains(&format!(" {pid} ")), "{top}");
    assert!(top.contains("sleep 1000"), "{top}");

    // pause freezes every process; unpause thaws them.
    ok(&env, &["pause", "web"]);
    let state = |pid: i64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s[s.rfind(')')? + 2..].split(' ').next().map(String::from))
    };
    wait_until(Duration::from_secs(10), "web frozen", || {
        // A frozen task sleeps in the freezer (D or S), and nothing it runs makes progress.
        let before = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(300));
        let after = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        before == after && state(pid).is_some()
    });
    ok(&env, &["unpause", "web"]);

    // kill -s TERM is ignored by this init; `wait` then sees SIGUSR1's exit 7.
    ok(&env, &["kill", "-s", "TERM", "web"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.running_pid("web"), Some(pid), "TERM is trapped");
    let waiter = env
        .command()
        .arg("--socket")
        .arg(env.socket())
        .args(["wait", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    ok(&env, &["kill", "-s", "SIGUSR1", "web"]);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stdout(&out));
    assert_eq!(stdout(&out), "7\n");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let bad = env.ctl(&["kill", "-s", "SIGNOPE", "idle"]);
    assert!(!bad.status.success());
    let gone = env.ctl(&["wait", "web"]);
    assert!(!gone.status.success(), "web no longer runs");
    // kill (SIGKILL by default) of `idle`: it restarts (policy always).
    let idle = env.running_pid("idle").unwrap();
    ok(&env, &["kill", "idle"]);
    wait_until(Duration::from_secs(20), "idle restarted", || {
        env.running_pid("idle").is_some_and(|p| p != idle)
    });

    // stats prints once when piped (it redraws only on a terminal), and with --no-stream.
    for args in [&["stats"][..], &["stats", "--no-stream"][..]] {
        let table = ok(&env, args);
        assert!(
            table.starts_with("NAME") && table.contains("idle"),
            "{table}"
        );
    }

    let info = ok(&env, &["info", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["daemon"]["containers"], 2, "{info}");
    assert_eq!(v["daemon"]["running"], 1, "{info}");
    assert_eq!(v["storage"]["root"], env.root().display().to_string());
    assert!(v["cgroups"]["version"].as_str().unwrap().starts_with('v'));
    let version = ok(&env, &["version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn port_lists_published_ports() {
    if skip_unless_root("berth port") {
        return;
    }
    let env = TestEnv::new("verbs-port");
    // A bridge network in a netns of the test's own.
    let netns = common::netns::TestNetns::new(&env);
    let d = Daemon::start_in(&env, &netns, None);
    env.write_spec(
        "pub",
        "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n[network]\nports = [\"127.0.0.1:18301:80\", \"18302-18303:90-91/udp\"]\n",
    );
    wait_until(Duration::from_secs(30), "pub running", || {
        env.running_pid("pub").is_some()
    });
    assert_eq!(
        ok(&env, &["port", "pub"]),
        "80/tcp -> 127.0.0.1:18301\n90/udp -> 0.0.0.0:18302\n91/udp -> 0.0.0.0:18303\n"
    );
    // The rules name the address: one rule per chain for each mapping.
    let rules = netns.rule_comments();
    assert!(
        rules
            .iter()
            .any(|r| r.ends_with("port=tcp/127.0.0.1:18301")),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|r| r.ends_with("port=udp/18303")),
        "{rules:?}"
    );
    d.stop();
    wait_until(Duration::from_secs(5), "no container rules", || {
        netns.container_leftovers().is_empty()
    });
    drop(netns);
    env.assert_no_leaks();
}

#[test]
fn cp_copies_both_ways_inside_the_containers_root() {
    if skip_unless_root("berth cp") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::new("verbs-cp");
    let d = Daemon::start(&env);
    // `/escape` points at `/` and `/data/plink` at /etc/passwd: read from the host, both
    // would lead out of the container if a path were resolved as a host path.
    env.write_spec(
        "box",
        "command = [\"sh\", \"-c\", \"mkdir -p /data/sub && echo hello > /data/sub/a && chmod 640 /data/sub/a && ln -s / /escape && ln -s /etc/passwd /data/plink && touch /ready && trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n[network]\nmode = \"none\"\n",
    );
    wait_until(Duration::from_secs(30), "box ready", || {
        env.running_pid("box")
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}/root/ready")).exists())
    });
    let host = env.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let h = |rel: &str| host.join(rel);
    let hs = |rel: &str| h(rel).display().to_string();

    // A dir onto a new name becomes it; into an existing dir goes below it.
    ok(&env, &["cp", "box:/data/sub", &hs("got")]);
    assert_eq!(std::fs::read_to_string(h("got/a")).unwrap(), "hello\n");
    let meta = std::fs::metadata(h("got/a")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    ok(&env, &["cp", "box:/data/sub", &hs("got")]);
    assert_eq!(std::fs::read_to_string(h("got/sub/a")).unwrap(), "hello\n");
    // A link is copied as a link; -L copies what it names, the container's /etc/passwd.
    ok(&env, &["cp", "box:/data/plink", &hs("plink")]);
    assert_eq!(
        std::fs::read_link(h("plink")).unwrap(),
        std::path::Path::new("/etc/passwd")
    );
    ok(&env, &["cp", "-L", "box:/data/plink", &hs("passwd")]);
    let pid = env.running_pid("box").unwrap();
    assert_eq!(
        std::fs::read(h("passwd")).unwrap(),
        std::fs::read(format!("/proc/{pid}/root/etc/passwd")).unwrap()
    );

    // Into the container: through its `/escape` link, the file still lands in its own /etc.
    std::fs::write(h("in.txt"), "from the host\n").unwrap();
    std::os::unix::fs::chown(h("in.txt"), Some(1234), Some(1234)).unwrap();
    let probe = format!("/etc/berth-cp-probe-{}", std::process::id());
    ok(&env, &["cp", &hs("in.txt"), &format!("box:/escape{probe}")]);
    assert!(
        !std::path::Path::new(&probe).exists(),
        "{probe} written on the host"
    );
    assert_eq!(ok(&env, &["exec", "box", "cat", &probe]), "from the host\n");
    assert_eq!(
        ok(&env, &["exec", "box", "stat", "-c", "%u:%g", &probe]),
        "0:0\n"
    );
    // -a keeps the ids; a file into a dir keeps its name.
    ok(&env, &["cp", "-a", &hs("in.txt"), "box:/data"]);
    assert_eq!(
        ok(
            &env,
            &["exec", "box", "stat", "-c", "%u:%g", "/data/in.txt"]
        ),
        "1234:1234\n"
    );
    // Out again, through the link: the container's file, owned by the caller.
    ok(
        &env,
        &["cp", &format!("box:/escape{probe}"), &hs("back.txt")],
    );
    assert_eq!(
        std::fs::read_to_string(h("back.txt")).unwrap(),
        "from the host\n"
    );
    assert_eq!(std::fs::metadata(h("back.txt")).unwrap().uid(), 0);

    // Errors: a missing source, a dir onto a file, two host paths, a missing parent.
    for (args, says) in [
        (vec!["cp", "box:/nope", &hs("x")], "not found"),
        (vec!["cp", "box:/data", &hs("in.txt")], "onto the file"),
        (vec!["cp", &hs("in.txt"), &hs("y")], "one side must be"),
        (
            vec!["cp", &hs("in.txt"), "box:/no/such/x"],
            "parent dir does not exist",
        ),
        (vec!["cp", &hs("in.txt"), "ghost:/tmp"], "ghost"),
    ] {
        let out = env.ctl(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(!h("x").exists() && !h("y").exists());
    d.stop();
    env.assert_no_leaks();
}
