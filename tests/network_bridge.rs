//! Bridge networking through `berth run`, inside a network namespace the test creates (so no
//! bridge or firewall rule touches the host's own): containers get their own address on the
//! bridge, reach each other by name, are reached from the "host" and publish ports on its
//! 127.0.0.1.

mod common;

use std::process::Command;

use common::*;

#[test]
fn containers_on_a_bridge_talk_by_name_and_publish_ports() {
    if skip_unless_root("bridge") {
        return;
    }
    for tool in ["unshare", "nft", "ip"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipping bridge: {tool} not installed");
            return;
        }
    }
    let env = TestEnv::new("bridge");
    let web = env.spec(
        "web",
        "command = [\"sh\", \"-c\", \"hostname > /www; httpd -f -p 80 -h / & sleep 4\"]\n\
         [network]\nmode = \"bridge\"\nip = \"10.89.0.20\"\nports = [\"18080:80/tcp\"]\n",
    );
    let client = env.spec(
        "client",
        "command = [\"sh\", \"-c\", \"grep web /etc/hosts; ping -c1 -W2 web >/dev/null && echo ping-ok; wget -qO- http://web/www; ip -4 -o addr show eth0 | awk '{print $4}'\"]\n\
         [network]\nmode = \"bridge\"\n",
    );
    let berth = |spec: &std::path::Path| {
        format!(
            "{} --root {} --cgroup-parent {} run {}",
            berth_bin(),
            env.root().display(),
            env.cgroup_parent,
            spec.display()
        )
    };
    // The whole scenario runs in a fresh netns: lo up, web in the background, then the client
    // and the host-side checks, all before web's 4 s are over.
    let script = format!(
        "set -e; ip link set lo up; {web} > {dir}/web.out 2>&1 & sleep 1.5; \
         {client}; \
         busybox ping -c1 -W2 10.89.0.20 >/dev/null && echo host-ping-ok; \
         busybox wget -qO- http://127.0.0.1:18080/www; \
         wait",
        web = berth(&web),
        client = berth(&client),
        dir = env.dir.path().display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout:\n{text}\nstderr:\n{}\nweb:\n{}",
        stderr(&out),
        std::fs::read_to_string(env.dir.path().join("web.out")).unwrap_or_default()
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "10.89.0.20\tweb", "{text}");
    assert_eq!(lines[1], "ping-ok", "{text}");
    assert_eq!(lines[2], "web", "{text}");
    assert!(
        lines[3].starts_with("10.89.0.")
            && lines[3].ends_with("/24")
            && lines[3] != "10.89.0.20/24",
        "{text}"
    );
    assert_eq!(lines[4], "host-ping-ok", "{text}");
    assert_eq!(lines[5], "web", "{text}");
    env.assert_no_leaks();
    // Leases of foreground containers are released; their netns pins are gone.
    let netns = std::fs::read_dir(env.root().join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(netns, 0);
}

#[test]
fn run_takes_the_supervisors_network_config() {
    if skip_unless_root("run --config") {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipping run --config: nft not installed");
        return;
    }
    let env = TestEnv::new("bridge-cfg");
    let config = env.dir.path().join("berth.toml");
    std::fs::write(
        &config,
        "[network]\nbridge = \"brrun9\"\nsubnet = \"10.89.9.0/24\"\ndns = [\"10.89.9.1\"]\n",
    )
    .unwrap();
    let spec = env.spec(
        "probe",
        "command = [\"sh\", \"-c\", \"ip -4 -o addr show eth0 | awk '{print $4}'; cat /etc/resolv.conf\"]\n\
         [network]\nmode = \"bridge\"\nip = \"10.89.9.7\"\n",
    );
    let script = format!(
        "ip link set lo up; {} --root {} --cgroup-parent {} run --config {} {} && ip -o link show brrun9 >/dev/null && echo bridge-ok",
        berth_bin(),
        env.root().display(),
        env.cgroup_parent,
        config.display(),
        spec.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out),
        "10.89.9.7/24\nnameserver 10.89.9.1\nbridge-ok\n",
        "{}",
        stderr(&out)
    );
    // The spec is checked against the config's subnet.
    let outside = env.spec(
        "outside",
        "command = [\"true\"]\n[network]\nmode = \"bridge\"\nip = \"10.89.0.7\"\n",
    );
    let out = env
        .command()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg(&outside)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("outside.toml:5:6: network.ip"),
        "{}",
        stderr(&out)
    );
    env.assert_no_leaks();
}

#[test]
fn run_image_publishes_on_one_address_and_ranges() {
    if skip_unless_root("published addresses and ranges") {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipping published addresses and ranges: nft not installed");
        return;
    }
    let env = TestEnv::new("bridge-ports");
    // `berth run IMAGE` with docker's flags; the container serves / on 80 and 81.
    let run = format!(
        "{} --root {} --cgroup-parent {} run --name web --network bridge \
         -p 127.0.0.1:18181:80 -p 18182-18183:80-81 -e WHO=ranged {} \
         sh -c 'echo $WHO > /www; httpd -p 80 -h /; httpd -p 81 -h /; sleep 4'",
        berth_bin(),
        env.root().display(),
        env.cgroup_parent,
        busybox_image()
    );
    // In a fresh netns: lo, with a second local address.
    let script = format!(
        "set -e; ip link set lo up; ip addr add 10.77.0.1/32 dev lo; set +e; {run} > {dir}/web.out 2>&1 & sleep 1.5; \
         get() {{ busybox nc -w 2 $1 $2 </dev/null >/dev/null 2>&1 && printf 'GET /www HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 $1 $2 | tail -n1 || echo refused; }}; \
         echo lo-18181 $(get 127.0.0.1 18181); echo d0-18181 $(get 10.77.0.1 18181); \
         echo d0-18182 $(get 10.77.0.1 18182); echo lo-18183 $(get 127.0.0.1 18183); wait",
        dir = env.dir.path().display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}\nweb:\n{}",
        stderr(&out),
        std::fs::read_to_string(env.dir.path().join("web.out")).unwrap_or_default()
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "lo-18181 ranged",
            "d0-18181 refused",
            "d0-18182 ranged",
            "lo-18183 ranged"
        ],
        "web:\n{}",
        std::fs::read_to_string(env.dir.path().join("web.out")).unwrap_or_default()
    );
    env.assert_no_leaks();
}
