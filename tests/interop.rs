//! Moving to and from berth, as root: three Compose files of the shapes people write (a web
//! app with its database, a service a worker waits on until its healthcheck passes, two
//! services on static addresses) imported with `berth import compose` into a running daemon's
//! spec dir and run there; then the dir exported with `berth export kube` and read back into
//! k8s-openapi's types.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::netns::TestNetns;
use common::*;

const SERVE: &str = "trap 'exit 0' TERM; httpd -p 80 -h /srv; sleep 100000 & wait";

fn skip(test: &str) -> bool {
    if skip_unless_root(test) {
        return true;
    }
    for tool in ["nft", "nsenter", "ip"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping {test}: {tool} not installed");
            return true;
        }
    }
    false
}

fn import(env: &TestEnv, name: &str, yaml: &str) -> (bool, String) {
    let dir = env.dir.path().join(format!("compose-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), yaml).unwrap();
    std::fs::write(dir.join("web.env"), "GREETING=from-env-file\n").unwrap();
    std::fs::write(dir.join(".env"), "HOSTPORT=18095\n").unwrap();
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/index.html"), "compose site\n").unwrap();
    // Converted away from the spec dir, then moved in whole, as a config tool drops files.
    let staged = env.dir.path().join(format!("staged-{name}"));
    let out = env
        .command()
        .args(["import", "compose"])
        .arg(dir.join("docker-compose.yml"))
        .arg("--to")
        .arg(&staged)
        .arg("--config")
        .arg(env.dir.path().join("berth.toml"))
        .env("IMAGE", busybox_image())
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    if out.status.success() {
        for e in std::fs::read_dir(&staged).unwrap() {
            let e = e.unwrap();
            std::fs::rename(e.path(), env.specs().join(e.file_name())).unwrap();
        }
    }
    (out.status.success(), text)
}

fn wait_running(env: &TestEnv, name: &str) {
    wait_until(Duration::from_secs(30), &format!("{name} running"), || {
        env.running_pid(name).is_some()
    });
}

#[test]
fn compose_files_import_run_and_export_to_kubernetes() {
    if skip("compose import") {
        return;
    }
    let env = TestEnv::new("compose");
    let netns = TestNetns::new(&env);
    let config = "[network]\nbridge = \"brcmp5\"\nsubnet = \"10.89.5.0/24\"\nmasquerade = false\n";
    std::fs::write(env.dir.path().join("berth.toml"), config).unwrap();
    let d = Daemon::start_in(&env, &netns, Some(config));

    // A web app and its database: env_file, a published port from `.env`, a bind mount of
    // the site, depends_on, a restart policy, limits; `labels` has no equivalent.
    let (ok, text) = import(
        &env,
        "webapp",
        &format!(
            r#"
services:
  db:
    image: ${{IMAGE}}
    command: ["sh", "-c", "trap 'exit 0' TERM; echo ready > /tmp/db; sleep 100000 & wait"]
    restart: always
    mem_limit: 64m
  web:
    image: ${{IMAGE}}
    command: ["sh", "-c", "{SERVE}"]
    env_file: web.env
    environment:
      MODE: production
    ports: ["127.0.0.1:${{HOSTPORT}}:80"]
    volumes: ["./site:/srv:ro"]
    depends_on: [db]
    restart: unless-stopped
    cpus: 0.5
    pids_limit: 100
    labels: {{tier: front}}
"#
        ),
    );
    assert!(ok, "{text}");
    assert!(text.contains("web: labels: no berth equivalent"), "{text}");
    assert!(text.contains("2 spec file(s) valid"), "{text}");
    wait_running(&env, "db");
    wait_running(&env, "web");
    let out = env.ctl(&["exec", "web", "--", "sh", "-c", "echo $GREETING $MODE"]);
    assert_eq!(
        stdout(&out),
        "from-env-file production\n",
        "{}",
        stderr(&out)
    );
    wait_until(
        Duration::from_secs(10),
        "the site on 127.0.0.1:18095",
        || {
            let out = netns.sh("busybox wget -q -O - http://127.0.0.1:18095/index.html");
            stdout(&out) == "compose site\n"
        },
    );

    // A healthcheck the worker waits on (service_healthy): it becomes healthy once the api
    // has written its file, and the worker starts only then.
    let (ok, text) = import(
        &env,
        "health",
        r#"
services:
  api:
    image: ${IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /tmp/ready; sleep 100000 & wait"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 200ms
      timeout: 1s
      retries: 3
  worker:
    image: ${IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    depends_on:
      api: {condition: service_healthy}
"#,
    );
    assert!(ok, "{text}");
    wait_running(&env, "worker");
    let api = env.status("api").unwrap();
    assert_eq!(api["health"], "healthy", "{api}");

    // Static addresses on a network: each service gets its ipv4_address on berth's bridge.
    let (ok, text) = import(
        &env,
        "static",
        r#"
services:
  left:
    image: ${IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    networks:
      lan: {ipv4_address: 10.89.5.20}
  right:
    image: ${IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    networks:
      lan: {ipv4_address: 10.89.5.21}
networks:
  lan:
    ipam: {config: [{subnet: 10.89.5.0/24}]}
"#,
    );
    assert!(ok, "{text}");
    wait_running(&env, "left");
    wait_running(&env, "right");
    for (name, ip) in [("left", "10.89.5.20"), ("right", "10.89.5.21")] {
        let out = env.ctl(&["exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(
            stdout(&out).contains(&format!("inet {ip}/24")),
            "{name}: {}",
            stdout(&out)
        );
    }
    let out = env.ctl(&[
        "exec",
        "left",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "10.89.5.21",
    ]);
    assert!(out.status.success(), "left -> right: {}", stdout(&out));

    // An address outside the bridge's subnet is written, reported and refused.
    let (ok, text) = import(
        &env,
        "outside",
        "services:\n  far:\n    image: x\n    networks:\n      lan: {ipv4_address: 172.20.0.5}\n",
    );
    assert!(!ok && text.contains("outside the bridge subnet"), "{text}");

    // Out to Kubernetes: every spec of the dir, read back into k8s-openapi's types.
    let kube = env.dir.path().join("kube");
    let out = env
        .command()
        .args(["export", "kube"])
        .arg(env.specs())
        .arg("--to")
        .arg(&kube)
        .arg("--config")
        .arg(env.dir.path().join("berth.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("web: depends_on"), "{}", stderr(&out));
    for name in ["db", "web", "api", "worker", "left", "right"] {
        let text = std::fs::read_to_string(kube.join(format!("{name}.yaml"))).unwrap();
        let objects = berth::interop::kube::from_yaml(&text).unwrap();
        assert!(!objects.is_empty(), "{name}");
    }
    let web =
        berth::interop::kube::from_yaml(&std::fs::read_to_string(kube.join("web.yaml")).unwrap())
            .unwrap();
    use berth::interop::kube::Manifest;
    let [Manifest::Deployment(dep), Manifest::Service(svc)] = web.as_slice() else {
        panic!("{web:?}")
    };
    let c = &dep.spec.template.spec.as_ref().unwrap().containers[0];
    let env_names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env_names, ["GREETING", "MODE"]);
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        18095
    );
    let api = std::fs::read_to_string(kube.join("api.yaml")).unwrap();
    assert!(api.contains("readinessProbe"), "{api}");

    d.stop();
    wait_until(
        Duration::from_secs(5),
        "no container veths or rules",
        || netns.container_leftovers().is_empty(),
    );
    drop(netns);
    env.assert_no_leaks();
}
