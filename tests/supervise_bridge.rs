//! `berth supervise` with bridge networking, as root: each daemon and its bridge live in a
//! network namespace the test pins (so nothing touches the host's own netns, and a killed
//! daemon's successor finds the same bridge). Containers find each other by name and are held
//! to their bandwidth; stop/start cycles and a kill -9 of the daemon leave no veth, rule or
//! lease behind and duplicate nothing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{wait_recorded, wait_until, Daemon, SupervisorEnv};
use common::netns::TestNetns;
use common::*;

/// Exits at once on SIGTERM.
const SERVE: &str = "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; httpd -p 80 -h /etc; sleep 100000 & wait\"]\n";
const BRIDGE: &str = "[network]\nmode = \"bridge\"\n";

fn skip(test: &str) -> bool {
    if skip_unless_root(test) {
        return true;
    }
    for tool in ["nft", "nsenter", "unshare", "ip"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping {test}: {tool} not installed");
            return true;
        }
    }
    false
}

fn wait_running(env: &TestEnv, name: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = env.running_pid(name) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name} running: {:?}\ndaemon log:\n{}",
            env.status(name),
            env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_down(env: &TestEnv, name: &str) {
    wait_until(Duration::from_secs(20), &format!("{name} stopped"), || {
        env.status(name).is_some_and(|s| {
            s["pid"].is_null() && ["exited", "stopped"].contains(&s["state"].as_str().unwrap_or(""))
        })
    });
}

fn leases(env: &TestEnv) -> String {
    std::fs::read_to_string(env.root().join("network/leases.json")).unwrap_or_default()
}

/// The pinned container namespaces under the root.
fn pins(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.root().join("netns"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks, once the daemon has stopped every container, that no veth, per-container rule or
/// pinned namespace is left, then that nothing else leaked.
fn assert_clean(env: &TestEnv, netns: TestNetns) {
    // The kernel may still be finishing the deletion of a namespace's links.
    wait_until(
        Duration::from_secs(5),
        "no container veths or rules",
        || netns.container_leftovers().is_empty(),
    );
    assert_eq!(pins(env), Vec::<String>::new(), "pinned netns leaked");
    drop(netns);
    env.assert_no_leaks();
}

#[test]
fn bridge_containers_find_each_other_by_name_under_the_supervisor() {
    if skip("supervise bridge") {
        return;
    }
    let env = TestEnv::new("sv-br");
    let netns = TestNetns::new(&env);
    let config = "[network]\nbridge = \"brsv7\"\nsubnet = \"10.89.7.0/24\"\nmasquerade = false\n\
                  mtu = 1400\ndns = [\"10.89.7.1\"]\ndns_search = [\"svc.test\"]\n";
    let d = Daemon::start_in(&env, &netns, Some(config));
    const LOOP: &str = "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n";
    env.write_spec("alpha", &format!("{LOOP}{BRIDGE}egress = \"8mbit\"\n"));
    wait_running(&env, "alpha");
    env.write_spec("beta", &format!("{LOOP}{BRIDGE}"));
    wait_running(&env, "beta");
    // alpha started first: its /etc/hosts learns of beta when beta starts.
    wait_until(
        Duration::from_secs(10),
        "beta in alpha's /etc/hosts",
        || {
            let out = env.ctl(&["exec", "alpha", "--", "cat", "/etc/hosts"]);
            stdout(&out).contains("\tbeta\n")
        },
    );
    // The config's bridge, subnet, MTU, masquerade switch and name servers.
    assert!(
        netns.links().contains(&"brsv7".to_string()),
        "{:?}",
        netns.links()
    );
    assert!(
        !netns
            .rule_comments()
            .iter()
            .any(|c| c.ends_with("masquerade")),
        "{:?}",
        netns.rule_comments()
    );
    let out = env.ctl(&[
        "exec",
        "alpha",
        "--",
        "cat",
        "/etc/resolv.conf",
        "/sys/class/net/eth0/mtu",
    ]);
    assert_eq!(
        stdout(&out),
        "nameserver 10.89.7.1\nsearch svc.test\n1400\n",
        "{}",
        stderr(&out)
    );
    let out = env.ctl(&[
        "exec", "alpha", "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(stdout(&out).contains(" 10.89.7."), "{}", stdout(&out));
    let out = env.ctl(&["exec", "alpha", "--", "ping", "-c1", "-W2", "beta"]);
    assert!(
        out.status.success(),
        "ping beta: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // TCP by name, held to alpha's egress limit: alpha serves 2 MiB (about 2.1 s at 8 Mbit/s).
    let out = env.ctl(&[
        "exec",
        "alpha",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=64k count=32 2>/dev/null && httpd -p 80 -h /",
    ]);
    assert!(out.status.success(), "httpd: {}", stderr(&out));
    let t0 = Instant::now();
    let out = env.ctl(&[
        "exec",
        "beta",
        "--",
        "sh",
        "-c",
        "wget -q -O - http://alpha/big | wc -c",
    ]);
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "wget: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2097152");
    let seconds = 2097152.0 * 8.0 / 8_000_000.0;
    assert!(
        (seconds * 0.85..=seconds * 1.15 + 0.3).contains(&elapsed),
        "2 MiB took {elapsed:.2} s under an 8 Mbit/s limit (expected about {seconds:.2} s)"
    );
    // `berth stats` counts the transfer on each side.
    let out = env.ctl(&["stats", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    let bytes = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
    assert!(bytes(&row("alpha"), "net_tx_bytes") >= 2097152, "{rows:?}");
    assert!(bytes(&row("beta"), "net_rx_bytes") >= 2097152, "{rows:?}");
    assert!(bytes(&row("beta"), "net_tx_bytes") < 2097152, "{rows:?}");
    d.stop();
    // A clean exit leaves no bridge, no NAT table and no cgroup parent behind.
    assert!(
        !netns.links().contains(&"brsv7".to_string()),
        "{:?}",
        netns.links()
    );
    let table = netns.sh("nft list table ip berth");
    assert!(!table.status.success(), "{}", stdout(&table));
    for base in cgroup_bases() {
        assert!(
            !base.join(&env.cgroup_parent).exists(),
            "{}",
            base.display()
        );
    }
    assert_clean(&env, netns);
}

#[test]
fn two_hundred_bridge_stop_start_cycles_leave_the_host_as_before() {
    if skip("supervise bridge cycles") {
        return;
    }
    let env = TestEnv::new("sv-brcyc");
    let netns = TestNetns::new(&env);
    let d = Daemon::start_in(&env, &netns, None);
    // A neighbour that stays, and the container that cycles: a published port and both
    // bandwidth limits, so every cycle adds and removes rules and qdiscs.
    env.write_spec("stay", &format!("{SERVE}{BRIDGE}ip = \"10.89.0.9\"\n"));
    env.write_spec(
        "cyc",
        &format!("{SERVE}{BRIDGE}ports = [\"18090:80/tcp\"]\negress = \"50mbit\"\ningress = \"50mbit\"\n"),
    );
    wait_running(&env, "stay");
    wait_running(&env, "cyc");
    let links = netns.links();
    let rules = netns.rule_comments();
    let lease_file = leases(&env);
    assert_eq!(netns.veths().len(), 2, "{links:?}");
    let cyc_rules = |rules: &[String]| {
        rules
            .iter()
            .filter(|c| c.starts_with("berth id=cyc-"))
            .count()
    };
    assert_eq!(cyc_rules(&rules), 2, "{rules:?}");

    for i in 0..200 {
        eprintln!("cycle {i}");
        let out = env.ctl(&["stop", "cyc"]);
        assert!(out.status.success(), "cycle {i}: stop: {}", stderr(&out));
        wait_down(&env, "cyc");
        if i % 50 == 0 {
            // Stopped: only the neighbour's veth (once the kernel has deleted cyc's with its
            // namespace), and no rule of cyc's.
            wait_until(Duration::from_secs(5), "cyc's veth gone", || {
                netns.veths().len() == 1
            });
            assert_eq!(cyc_rules(&netns.rule_comments()), 0, "cycle {i}");
        }
        let out = env.ctl(&["start", "cyc"]);
        assert!(out.status.success(), "cycle {i}: start: {}", stderr(&out));
        wait_running(&env, "cyc");
    }
    // The same links apart from cyc's veth (its name follows the instance), the same rules
    // apart from the instance id in their comments, the same leases.
    let without_veths = |l: Vec<String>| -> Vec<String> {
        l.into_iter().filter(|n| !n.starts_with("bth")).collect()
    };
    wait_until(Duration::from_secs(5), "the last stopped veth gone", || {
        netns.veths().len() == 2
    });
    assert_eq!(without_veths(netns.links()), without_veths(links.clone()));
    let now = netns.rule_comments();
    assert_eq!(now.len(), rules.len(), "{now:?} against {rules:?}");
    assert_eq!(cyc_rules(&now), 2, "{now:?}");
    assert_eq!(leases(&env), lease_file);
    assert_eq!(pins(&env).len(), 2, "{:?}", pins(&env));
    // The published port still reaches the current instance.
    let out = netns.sh("busybox wget -q -O - http://127.0.0.1:18090/passwd");
    assert!(stdout(&out).starts_with("root:"), "{}", stderr(&out));
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn a_killed_daemon_adopts_bridge_containers_without_duplicates() {
    if skip("supervise bridge adoption") {
        return;
    }
    let env = TestEnv::new("sv-bradopt");
    let netns = TestNetns::new(&env);
    let d = Daemon::start_in(&env, &netns, None);
    env.write_spec(
        "web",
        &format!("{SERVE}{BRIDGE}ports = [\"18091:80/tcp\"]\negress = \"50mbit\"\n"),
    );
    env.write_spec("db", &format!("{SERVE}{BRIDGE}"));
    let web = wait_running(&env, "web");
    let db = wait_running(&env, "db");
    let rules = netns.rule_comments();
    let veths = netns.veths();
    let lease_file = leases(&env);
    wait_recorded(&env, "web");
    wait_recorded(&env, "db");
    d.kill9();
    // db dies while no daemon runs: the next one cleans up its network and restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(db as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let d = Daemon::start_in(&env, &netns, None);
    wait_until(Duration::from_secs(20), "db restarted", || {
        env.running_pid("db").is_some_and(|p| p != db)
    });
    assert_eq!(env.running_pid("web"), Some(web), "web was not adopted");
    // web kept its veth and rules; db has a new veth; nothing is doubled.
    wait_until(Duration::from_secs(5), "db's old veth gone", || {
        netns.veths().len() == 2
    });
    let now = netns.rule_comments();
    assert_eq!(now, rules, "rules changed or doubled");
    let now_veths = netns.veths();
    assert_eq!(
        now_veths.iter().filter(|v| veths.contains(v)).count(),
        1,
        "{now_veths:?} against {veths:?}"
    );
    assert_eq!(pins(&env).len(), 2, "{:?}", pins(&env));
    // Both keep their addresses.
    assert_eq!(leases(&env), lease_file);
    let out = netns.sh("busybox wget -q -O - http://127.0.0.1:18091/passwd");
    assert!(stdout(&out).starts_with("root:"), "{}", stderr(&out));
    let out = env.ctl(&["exec", "web", "--", "ping", "-c1", "-W2", "db"]);
    assert!(out.status.success(), "ping db: {}", stderr(&out));
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn bad_network_input_fails_one_container_and_spares_the_rest() {
    if skip("supervise bridge bad input") {
        return;
    }
    let env = TestEnv::new("sv-brbad");
    let netns = TestNetns::new(&env);
    // A host process holds port 18093 in the daemon's namespace.
    let _holder = common::daemon::Guarded(Some(
        netns
            .command("busybox")
            .args(["nc", "-l", "-p", "18093"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let d = Daemon::start_in(&env, &netns, None);
    env.write_spec(
        "good",
        &format!("{SERVE}{BRIDGE}ip = \"10.89.0.5\"\nports = [\"18094:80/tcp\"]\n"),
    );
    let good = wait_running(&env, "good");
    // Port bound on the host, port published by another container, address taken, address
    // outside the subnet.
    env.write_spec(
        "bound",
        &format!("{SERVE}{BRIDGE}ports = [\"18093:80/tcp\"]\n"),
    );
    env.write_spec(
        "twice",
        &format!("{SERVE}{BRIDGE}ports = [\"18094:81/tcp\"]\n"),
    );
    env.write_spec("taken", &format!("{SERVE}{BRIDGE}ip = \"10.89.0.5\"\n"));
    env.write_spec("outside", &format!("{SERVE}{BRIDGE}ip = \"10.90.0.5\"\n"));
    let problem = |name: &str| -> String {
        env.status(name)
            .map(|s| {
                let note = s["note"].as_str().unwrap_or("");
                let spec = s["spec_error"].as_str().unwrap_or("");
                format!("{} {note}{spec}", s["state"].as_str().unwrap_or(""))
            })
            .unwrap_or_default()
    };
    let expect = [
        ("bound", "failed", "port 18093"),
        // Two specs publishing one host port are refused as a pair, like a shared address:
        // the running one keeps its last good version.
        (
            "twice",
            "",
            "host port 18094/tcp is published by more than one spec",
        ),
        ("taken", "", "10.89.0.5"),
        ("outside", "", "10.90.0.5"),
    ];
    for (name, state, needle) in expect {
        wait_until(Duration::from_secs(20), &format!("{name}'s error"), || {
            let p = problem(name);
            p.starts_with(state) && p.contains(needle)
        });
    }
    // The spec errors name the file and the line of `ip`.
    for name in ["taken", "outside"] {
        let p = problem(name);
        assert!(p.contains(&format!("{name}.toml:5:")), "{name}: {p}");
    }
    // Nothing of theirs was left behind, and good kept running and answering.
    assert_eq!(env.running_pid("good"), Some(good));
    let status = env.status("good").unwrap();
    assert_eq!(status["ip"], "10.89.0.5");
    assert_eq!(status["ports"], serde_json::json!(["18094:80/tcp"]));
    let out = env.ctl(&["ps"]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("good ")
            && l.contains(" 10.89.0.5 ")
            && l.contains(" 18094:80/tcp ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(netns.veths().len(), 1, "{:?}", netns.links());
    let out = netns.sh("busybox wget -q -O - http://127.0.0.1:18094/passwd");
    assert!(stdout(&out).starts_with("root:"), "{}", stderr(&out));
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn five_hundred_crash_restarts_on_the_bridge_leak_nothing() {
    if skip("supervise bridge crash restarts") {
        return;
    }
    let env = TestEnv::new("sv-brcrash");
    let netns = TestNetns::new(&env);
    let d = Daemon::start_in(&env, &netns, None);
    env.write_spec("stay", &format!("{SERVE}{BRIDGE}ip = \"10.89.0.9\"\n"));
    wait_running(&env, "stay");
    let links = netns.links();
    let rules = netns.rule_comments();
    // Crashes at once, is restarted after 1 ms, with a port and a limit each time.
    env.write_spec(
        "crash",
        &format!(
            "command = [\"sh\", \"-c\", \"exit 3\"]\n[restart]\npolicy = \"always\"\n\
             backoff = {{ initial = \"1ms\", max = \"1ms\" }}\n{BRIDGE}ports = [\"18095:80/tcp\"]\negress = \"10mbit\"\n"
        ),
    );
    wait_until(Duration::from_secs(300), "500 restarts", || {
        env.status("crash")
            .is_some_and(|s| s["restarts"].as_u64().unwrap_or(0) >= 500)
    });
    std::fs::remove_file(env.specs().join("crash.toml")).unwrap();
    wait_until(Duration::from_secs(20), "crash removed", || {
        env.status("crash").is_none()
    });
    // The neighbour is untouched; the crash loop left no veth, rule, lease or pin.
    wait_until(Duration::from_secs(5), "crash's last veth gone", || {
        netns.links() == links
    });
    assert_eq!(netns.rule_comments(), rules);
    assert!(!leases(&env).contains("\"crash\""), "{}", leases(&env));
    assert_eq!(pins(&env).len(), 1, "{:?}", pins(&env));
    assert_eq!(env.leftover_containers().len(), 1);
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn a_bandwidth_change_is_applied_in_place() {
    if skip("supervise bridge bandwidth update") {
        return;
    }
    if Command::new("tc").arg("-V").output().is_err() {
        eprintln!("skipping: tc not installed");
        return;
    }
    let env = TestEnv::new("sv-brbw");
    let netns = TestNetns::new(&env);
    let d = Daemon::start_in(&env, &netns, None);
    env.write_spec("bw", &format!("{SERVE}{BRIDGE}egress = \"8mbit\"\n"));
    let pid = wait_running(&env, "bw");
    let id = env.status("bw").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pin = env.root().join("netns").join(&id);
    // The qdisc line of a link: (kind, rate) as tc prints them.
    let qdisc = |in_container: bool| -> String {
        let script = if in_container {
            format!("nsenter --net={} tc qdisc show dev eth0", pin.display())
        } else {
            format!("tc qdisc show dev {}", netns.veths()[0])
        };
        let out = netns.sh(&script);
        assert!(out.status.success(), "{script}: {}", stderr(&out));
        stdout(&out)
    };
    assert!(
        qdisc(true).contains("tbf") && qdisc(true).contains("rate 8Mbit"),
        "{}",
        qdisc(true)
    );
    assert!(!qdisc(false).contains("tbf"), "{}", qdisc(false));

    env.write_spec(
        "bw",
        &format!("{SERVE}{BRIDGE}egress = \"20mbit\"\ningress = \"5mbit\"\n"),
    );
    wait_until(Duration::from_secs(10), "the new limits", || {
        qdisc(true).contains("rate 20Mbit") && qdisc(false).contains("rate 5Mbit")
    });
    assert_eq!(
        env.running_pid("bw"),
        Some(pid),
        "the container was restarted"
    );

    env.write_spec("bw", &format!("{SERVE}{BRIDGE}ingress = \"5mbit\"\n"));
    wait_until(Duration::from_secs(10), "egress unlimited", || {
        !qdisc(true).contains("tbf")
    });
    assert!(qdisc(false).contains("rate 5Mbit"), "{}", qdisc(false));
    assert_eq!(
        env.running_pid("bw"),
        Some(pid),
        "the container was restarted"
    );
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn as_pid_1_it_publishes_ports_while_reaping_orphans() {
    if skip("supervise bridge as PID 1") {
        return;
    }
    let env = TestEnv::new("sv-brpid1");
    let netns = TestNetns::new(&env);
    let (mut daemon, init) = common::daemon::start_as_pid1(&env, Some(&netns));
    // Orphans keep exiting (each must be reaped by berth) while containers publish ports
    // (each runs nft, whose exit status berth must not reap from under itself).
    let storm = std::thread::spawn(move || {
        for _ in 0..10 {
            let _ = Command::new("nsenter")
                .args(["--target", &init.to_string(), "--pid", "--", "sh", "-c"])
                .arg("for i in $(seq 30); do (true &); done")
                .status();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for i in 0..5 {
        env.write_spec(
            &format!("p{i}"),
            &format!("{SERVE}{BRIDGE}ports = [\"{}:80/tcp\"]\n", 18100 + i),
        );
    }
    for i in 0..5 {
        wait_running(&env, &format!("p{i}"));
    }
    // Each restart unpublishes and publishes again.
    for _ in 0..10 {
        for i in 0..5 {
            let out = env.ctl(&["restart", &format!("p{i}")]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        for i in 0..5 {
            wait_running(&env, &format!("p{i}"));
        }
    }
    storm.join().unwrap();
    for i in 0..5 {
        let out = netns.sh(&format!(
            "busybox wget -q -O - http://127.0.0.1:{}/passwd",
            18100 + i
        ));
        assert!(stdout(&out).starts_with("root:"), "p{i}: {}", stderr(&out));
    }
    assert!(
        !env.daemon_log().contains("No child processes"),
        "{}",
        env.daemon_log()
    );
    wait_until(Duration::from_secs(10), "every orphan reaped", || {
        common::daemon::zombie_children(init) == 0
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        daemon.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        env.daemon_log()
    );
    assert_clean(&env, netns);
}

/// Runs `name` (a bridge-mode server) under a daemon that is then killed with SIGKILL once the
/// instance is recorded, and removes that record and the spec file: what a crash between a
/// start and its record leaves, with the spec gone before a daemon comes back. Returns the
/// container's pid.
fn crash_forgetting(env: &TestEnv, netns: &TestNetns, name: &str) -> i64 {
    let d = Daemon::start_in(env, netns, None);
    env.write_spec(name, &format!("{SERVE}{BRIDGE}"));
    let pid = wait_running(env, name);
    wait_recorded(env, name);
    d.kill9();
    std::fs::remove_file(env.root().join(format!("state/{name}.json"))).unwrap();
    std::fs::remove_file(env.specs().join(format!("{name}.toml"))).unwrap();
    pid
}

/// Waits until the process `pid` is gone.
fn wait_gone(pid: i64) {
    wait_until(Duration::from_secs(10), "its process gone", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err()
    });
}

#[test]
fn an_address_a_crash_left_unclaimed_is_released_by_the_next_daemon() {
    if skip("supervise unclaimed lease") {
        return;
    }
    let env = TestEnv::new("sv-brlease");
    let netns = TestNetns::new(&env);
    let pid = crash_forgetting(&env, &netns, "gone");
    // The container and its address are left, but no record.
    assert!(leases(&env).contains("\"gone\""), "{}", leases(&env));
    let d = Daemon::start_in(&env, &netns, None);
    wait_until(Duration::from_secs(20), "the address released", || {
        !leases(&env).contains("\"gone\"")
    });
    // The container no record knows was torn down.
    wait_gone(pid);
    d.stop();
    assert_clean(&env, netns);
}

#[test]
fn a_network_record_cut_short_still_lets_the_next_daemon_tear_the_container_down() {
    if skip("supervise cut record") {
        return;
    }
    let env = TestEnv::new("sv-brcut");
    let netns = TestNetns::new(&env);
    let pid = crash_forgetting(&env, &netns, "cut");
    // As a crash in the middle of writing it leaves it: the instance's network record empty.
    let dirs: Vec<_> = std::fs::read_dir(env.root().join("containers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("network.json").exists())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::write(dirs[0].join("network.json"), b"").unwrap();
    let d = Daemon::start_in(&env, &netns, None);
    wait_gone(pid);
    wait_until(Duration::from_secs(10), "its instance dir gone", || {
        !dirs[0].exists()
    });
    d.stop();
    // The veth, the pinned namespace and the rules went with it.
    assert_clean(&env, netns);
}
