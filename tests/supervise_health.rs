//! Health probes as root, with real containers: an http probe on busybox httpd (and one that
//! gets a 404), tcp probes in none and host mode, exec probes (one killed at its timeout), and
//! a SIGSTOPped container restarted because it stopped answering.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::*;

/// busybox httpd serving an index page on `port` of the container's loopback.
fn httpd(port: u16) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www\"]\nstop_timeout = \"1s\"\n"
    )
}

fn wait_health(env: &TestEnv, name: &str, health: &str) -> serde_json::Value {
    let mut row = None;
    wait_until(Duration::from_secs(30), &format!("{name} {health}"), || {
        row = env.status(name).filter(|s| s["health"] == health);
        row.is_some()
    });
    row.unwrap()
}

#[test]
fn http_tcp_and_exec_probes() {
    if skip_unless_root("health probes") {
        return;
    }
    let env = TestEnv::new("hl-probes");
    let d = Daemon::start(&env);
    let none = "[network]\nmode = \"none\"\n";
    let fast = "interval = \"500ms\"\ntimeout = \"1s\"\nretries = 2\non_unhealthy = \"none\"\n";
    env.write_spec(
        "web",
        &format!(
            "{}{none}[health]\nhttp = {{ port = 8080, path = \"/index.html\" }}\n{fast}",
            httpd(8080)
        ),
    );
    env.write_spec(
        "lost",
        &format!(
            "{}{none}[health]\nhttp = {{ port = 8080, path = \"/missing\" }}\n{fast}",
            httpd(8080)
        ),
    );
    env.write_spec(
        "port",
        &format!(
            "{}{none}[health]\ntcp = {{ port = 8080 }}\n{fast}",
            httpd(8080)
        ),
    );
    env.write_spec(
        "closed",
        &format!(
            "{}{none}[health]\ntcp = {{ port = 8081 }}\n{fast}",
            httpd(8080)
        ),
    );
    // Host mode: the probe reaches the host's loopback, where this httpd listens.
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    env.write_spec(
        "hosted",
        &format!(
            "{}[network]\nmode = \"host\"\n[health]\ntcp = {{ port = {host_port} }}\n{fast}",
            httpd(host_port)
        ),
    );
    env.write_spec(
        "ready",
        &format!(
            "command = [\"sh\", \"-c\", \"echo ok > /tmp/ready; exec sleep 100000\"]\nstop_timeout = \"1s\"\n{none}[health]\nexec = [\"sh\", \"-c\", \"cat /tmp/ready\"]\n{fast}"
        ),
    );
    env.write_spec(
        "slow",
        &format!(
            "command = [\"sleep\", \"100000\"]\nstop_timeout = \"1s\"\n{none}[health]\nexec = [\"sleep\", \"1000\"]\ninterval = \"500ms\"\ntimeout = \"1s\"\nretries = 1\non_unhealthy = \"none\"\n"
        ),
    );

    let web = wait_health(&env, "web", "healthy");
    assert!(
        web["health_output"].as_str().unwrap().contains("200"),
        "{web}"
    );
    let lost = wait_health(&env, "lost", "unhealthy");
    assert!(
        lost["health_output"].as_str().unwrap().contains("404"),
        "{lost}"
    );
    assert_eq!(lost["state"], "running", "on_unhealthy = none only reports");
    wait_health(&env, "port", "healthy");
    let closed = wait_health(&env, "closed", "unhealthy");
    assert!(
        closed["health_output"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{closed}"
    );
    wait_health(&env, "hosted", "healthy");
    let ready = wait_health(&env, "ready", "healthy");
    assert_eq!(ready["health_output"], "ok", "the exec probe's output");
    let slow = wait_health(&env, "slow", "unhealthy");
    assert!(
        slow["health_output"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{slow}"
    );
    // The probe killed at its timeout leaves nothing running in the container: its cgroup
    // holds the init and at most the one probe in flight.
    let procs = cgroup_bases()
        .into_iter()
        .filter_map(|b| {
            let dir = b.join(&env.cgroup_parent);
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("slow-"))
        })
        .map(|e| {
            std::fs::read_to_string(e.path().join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        (1..=3).contains(&procs),
        "{procs} processes in slow's cgroup"
    );
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_sigstopped_container_is_restarted() {
    if skip_unless_root("unhealthy restart") {
        return;
    }
    let env = TestEnv::new("hl-stop");
    let d = Daemon::start(&env);
    env.write_spec(
        "hang",
        &format!(
            "{}[network]\nmode = \"none\"\n[health]\nhttp = {{ port = 8080 }}\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 2\n[restart]\nbackoff = {{ initial = \"100ms\" }}\n",
            httpd(8080)
        ),
    );
    let row = wait_health(&env, "hang", "healthy");
    let pid = row["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let t0 = Instant::now();
    let mut again = None;
    wait_until(Duration::from_secs(30), "restarted and healthy", || {
        again = env.status("hang").filter(|s| {
            s["health"] == "healthy" && s["pid"].as_i64().is_some_and(|p| p != pid as i64)
        });
        again.is_some()
    });
    eprintln!("SIGSTOP -> healthy again in {:?}", t0.elapsed());
    let again = again.unwrap();
    assert_eq!(again["restarts"], 1, "{again}");
    assert!(
        env.daemon_log().contains("unhealthy"),
        "{}",
        env.daemon_log()
    );
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn a_chain_starts_in_order_at_boot_and_stops_in_reverse() {
    if skip_unless_root("depends_on chain") {
        return;
    }
    let env = TestEnv::new("hl-chain");
    let out = env.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(env.specs()).unwrap();
    // Each appends to one shared file when it starts and when SIGTERM stops it.
    let body = |name: &str, before: &str, extra: &str| {
        format!(
            "command = [\"sh\", \"-c\", \"{before}echo start-{name} >> /out/order; trap 'echo stop-{name} >> /out/order; exit 0' TERM; while :; do sleep 0.1; done\"]\n\
             {extra}\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\n[network]\nmode = \"none\"\n",
            out.display()
        )
    };
    env.write_spec("web", &body("web", "", "depends_on = [\"app\"]"));
    env.write_spec("app", &body("app", "", "depends_on = { db = \"healthy\" }"));
    env.write_spec(
        "db",
        &format!(
            "{}[health]\ntcp = {{ port = 8080 }}\ninterval = \"500ms\"\n",
            body("db", "httpd -p 127.0.0.1:8080 -h /tmp; ", "")
        ),
    );
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(30), "web running", || {
        env.running_pid("web").is_some()
    });
    assert_eq!(env.status("db").unwrap()["health"], "healthy");
    // The status files beside the socket say the same.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join("status/db.json")).unwrap())
            .unwrap();
    assert_eq!(file["health"], "healthy", "{file}");
    assert_eq!(file["phase"], "running");
    assert!(
        file["image_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{file}"
    );
    assert_eq!(file["spec_sha256"].as_str().unwrap().len(), 64);
    d.stop();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join("status/web.json")).unwrap())
            .unwrap();
    assert_eq!(file["phase"], "stopped", "{file}");
    let order = std::fs::read_to_string(out.join("order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        [
            "start-db",
            "start-app",
            "start-web",
            "stop-web",
            "stop-app",
            "stop-db"
        ],
        "{}",
        env.daemon_log()
    );
    env.assert_no_leaks();
}

#[test]
fn an_update_that_exits_is_rolled_back_and_the_old_version_serves_again() {
    if skip_unless_root("update rollback") {
        return;
    }
    let env = TestEnv::new("hl-roll");
    let d = Daemon::start(&env);
    let rest = "[network]\nmode = \"none\"\n[health]\nhttp = { port = 8080, path = \"/index.html\" }\ninterval = \"500ms\"\n[update]\nhealthy_for = \"3s\"\n";
    env.write_spec("web", &format!("{}{rest}", httpd(8080)));
    let first = wait_health(&env, "web", "healthy");
    // The new version's command exits 1 at once.
    env.write_spec(
        "web",
        &format!("command = [\"sh\", \"-c\", \"exit 1\"]\nstop_timeout = \"1s\"\n{rest}"),
    );
    let mut row = None;
    wait_until(Duration::from_secs(30), "rolled back and healthy", || {
        row = env.status("web").filter(|s| {
            s["health"] == "healthy"
                && s["pid"] != first["pid"]
                && s["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("rolled back"))
        });
        row.is_some()
    });
    let row = row.unwrap();
    assert!(
        row["health_output"].as_str().unwrap().contains("200"),
        "{row}"
    );
    assert!(
        env.daemon_log().contains("rolling back"),
        "{}",
        env.daemon_log()
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join("status/web.json")).unwrap())
            .unwrap();
    assert!(
        file["last_rollback"]
            .as_str()
            .unwrap()
            .contains("exited (code 1)"),
        "{file}"
    );
    // Not tried again: the pid stays.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.status("web").unwrap()["pid"], row["pid"]);
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn berth_events_streams_the_transitions() {
    if skip_unless_root("berth events") {
        return;
    }
    use std::io::BufRead;
    let env = TestEnv::new("hl-events");
    let d = Daemon::start(&env);
    let mut child = env
        .command()
        .arg("--socket")
        .arg(env.socket())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Subscribed once the client has connected: give it a moment, then drop a spec.
    std::thread::sleep(Duration::from_millis(300));
    env.write_spec(
        "ev",
        "command = [\"sleep\", \"100000\"]\nstop_timeout = \"1s\"\n[network]\nmode = \"none\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an event line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["name"] == "ev" && v["phase"] == "running" {
            break v;
        }
    };
    assert_eq!(
        running["spec_sha256"].as_str().unwrap().len(),
        64,
        "{running}"
    );
    assert!(running["pid"].as_i64().is_some(), "{running}");
    let _ = child.kill();
    let _ = child.wait();
    d.stop();
    env.assert_no_leaks();
}

/// The test busybox image with `APP_VERSION=version` added to its config's Env (same layer,
/// new config, new manifest digest).
fn versioned_image(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    busybox_variant(&dir.join(format!("v{version}")), |config| {
        let env = &mut config["config"]["Env"];
        if !env.is_array() {
            *env = serde_json::json!([]);
        }
        env.as_array_mut()
            .unwrap()
            .push(format!("APP_VERSION={version}").into());
    })
}

/// Pushes `layout` as `dest` and returns the digest the registry gives it.
fn push(layout: &std::path::Path, dest: &str) -> String {
    common::registry::skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{dest}"),
    ]);
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn a_moved_tag_is_picked_up_by_check_and_a_bad_one_rolled_back() {
    if skip_unless_root("update check") {
        return;
    }
    for tool in ["docker-registry", "skopeo"] {
        if !common::registry::have(tool) {
            eprintln!("skipping update check: {tool} not installed");
            return;
        }
    }
    let env = TestEnv::new("hl-check");
    let reg = common::registry::Registry::start(None);
    let images = tempfile::tempdir().unwrap();
    let tag = format!("{}/app:stable", reg.host());
    let v1 = push(&versioned_image(images.path(), "1"), &tag);
    let d = Daemon::start(&env);
    // The version in the image's Env is what it serves; "bad" exits at once.
    let spec = format!(
        "image = {tag:?}\ncommand = [\"sh\", \"-c\", \"[ \\\"$APP_VERSION\\\" = bad ] && exit 1; mkdir -p /www && echo $APP_VERSION > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www\"]\nstop_timeout = \"1s\"\n[network]\nmode = \"none\"\n[health]\nhttp = {{ port = 8080, path = \"/index.html\" }}\ninterval = \"500ms\"\n[update]\ncheck = \"10s\"\nhealthy_for = \"3s\"\n"
    );
    std::fs::write(env.specs().join("web.toml"), spec).unwrap();
    let status_file = env.dir.path().join("status/web.json");
    let file = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&status_file).unwrap_or_default()).unwrap_or_default()
    };
    let serving = || {
        let out = env.ctl(&["exec", "web", "--", "cat", "/www/index.html"]);
        stdout(&out).trim().to_string()
    };
    wait_until(Duration::from_secs(30), "v1 healthy", || {
        file()["health"] == "healthy"
    });
    assert_eq!(file()["image_digest"], v1.as_str());
    assert_eq!(serving(), "1");

    // The tag moves: the next check (within 10 s) pulls it and replaces the container.
    let v2 = push(&versioned_image(images.path(), "2"), &tag);
    assert_ne!(v1, v2);
    wait_until(Duration::from_secs(40), "v2 healthy", || {
        let f = file();
        f["image_digest"] == v2.as_str() && f["health"] == "healthy"
    });
    assert_eq!(serving(), "2");
    assert!(
        env.daemon_log().contains(&format!("now names {v2}")),
        "{}",
        env.daemon_log()
    );
    // Kept once it ran its healthy_for.
    std::thread::sleep(Duration::from_secs(4));
    let kept = file();
    assert_eq!(kept["image_digest"], v2.as_str());

    // The tag moves to a version that exits: rolled back to v2, which serves again.
    let bad = push(&versioned_image(images.path(), "bad"), &tag);
    wait_until(Duration::from_secs(40), "rolled back to v2", || {
        let f = file();
        f["image_digest"] == v2.as_str()
            && f["health"] == "healthy"
            && f["last_rollback"].as_str().is_some()
    });
    assert_eq!(serving(), "2");
    assert!(
        env.daemon_log().contains(&format!("now names {bad}")),
        "{}",
        env.daemon_log()
    );
    // Later checks find the bad digest again and leave v2 running.
    let pid = file()["pid"].clone();
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(file()["pid"], pid, "{}", env.daemon_log());
    assert_eq!(file()["image_digest"], v2.as_str());
    d.stop();
    env.assert_no_leaks();
}

/// `GET path` from 127.0.0.1:port: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels exactly) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn metrics_are_served_and_promtool_accepts_them() {
    if skip_unless_root("metrics") {
        return;
    }
    let env = TestEnv::new("hl-metrics");
    let port = common::registry::free_port();
    let d = Daemon::start_with_config(&env, &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let rest = "[network]\nmode = \"none\"\n[health]\nhttp = { port = 8080, path = \"/index.html\" }\ninterval = \"500ms\"\n";
    env.write_spec("web", &format!("{}{rest}", httpd(8080)));
    env.write_spec(
        "crash",
        "command = [\"sh\", \"-c\", \"exit 3\"]\n[network]\nmode = \"none\"\n[restart]\npolicy = \"on-failure\"\nmax_retries = 1\nbackoff = { initial = \"100ms\" }\n",
    );
    wait_health(&env, "web", "healthy");
    wait_until(Duration::from_secs(20), "crash given up", || {
        env.status("crash").is_some_and(|s| s["state"] == "exited")
    });
    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let get = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    assert_eq!(
        get("berth_container_state{name=\"web\",state=\"running\"}"),
        1.0
    );
    assert_eq!(
        get("berth_container_state{name=\"crash\",state=\"exited\"}"),
        1.0
    );
    assert_eq!(
        get("berth_container_health{name=\"web\",health=\"healthy\"}"),
        1.0
    );
    assert_eq!(get("berth_container_last_exit_code{name=\"crash\"}"), 3.0);
    assert_eq!(get("berth_container_restarts_total{name=\"crash\"}"), 1.0);
    assert!(get("berth_container_memory_bytes{name=\"web\"}") > 0.0);
    assert!(get("berth_container_cpu_seconds_total{name=\"web\"}") > 0.0);
    assert!(get("berth_container_pids{name=\"web\"}") >= 1.0);
    assert!(get("berth_probe_duration_seconds_count") >= 1.0);
    assert!(get("berth_reconciles_total") >= 1.0);
    assert!(get("berth_image_pulls_total{result=\"ok\"}") >= 3.0);
    assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");

    if common::registry::have("promtool") {
        let out = output_with_input(
            std::process::Command::new("promtool").args(["check", "metrics"]),
            text.as_bytes(),
        );
        assert!(
            out.status.success(),
            "promtool: {}{}",
            stdout(&out),
            stderr(&out)
        );
    } else {
        eprintln!("promtool not installed (Debian package prometheus): its check is skipped");
    }
    d.stop();
    env.assert_no_leaks();
}
