//! Tests against real kernel objects. Each test creates its own "host" network namespace
//! (pinned in a temp dir) and puts its bridge, veths and nftables table there, so the machine's
//! own namespace is never touched; dropping the fixture removes that namespace and with it
//! everything inside. They need root, `nft`, `nsenter` and `busybox`, and skip (with a message)
//! otherwise.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use super::*;
use crate::spec::{NetworkMode, NetworkSpec};

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: network root tests need root");
        return false;
    }
    for tool in ["nft", "nsenter", "busybox"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() || tool == "busybox");
        if !found {
            eprintln!("skipping: network root tests need `{tool}`");
            return false;
        }
    }
    true
}

/// A test "host": its own netns pinned under a temp dir, with lo up, and a `Network` whose
/// bridge lives there.
struct Fixture {
    dir: tempfile::TempDir,
    host_ns: PathBuf,
    net: Network,
}

impl Fixture {
    /// `n` makes the bridge name and subnet unique: `bt<n>`, 10.200.<n>.0/24.
    fn new(n: u8) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let host_ns = dir.path().join("hostns");
        netns::create_pinned(&host_ns, || ()).unwrap();
        let mut nl = Netlink::open_in(Some(&host_ns)).unwrap();
        let lo = nl.link_index("lo").unwrap().unwrap();
        nl.set_up(lo).unwrap();
        let config = NetworkConfig {
            bridge: format!("bt{n}"),
            subnet: (Ipv4Addr::new(10, 200, n, 0), 24),
            ..NetworkConfig::default()
        };
        let net = Network::new(&dir.path().join("root"), config, Some(host_ns.clone())).unwrap();
        Fixture { dir, host_ns, net }
    }

    fn ns(&self) -> Option<&Path> {
        Some(&self.host_ns)
    }

    fn links(&self) -> Vec<String> {
        let mut nl = Netlink::open_in(self.ns()).unwrap();
        let mut names: Vec<String> = nl.links().unwrap().into_iter().map(|(_, n)| n).collect();
        names.sort();
        names
    }

    fn rules(&self) -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = nft::rules(self.ns())
            .unwrap()
            .into_iter()
            .map(|r| (r.chain, r.comment))
            .collect();
        r.sort();
        r
    }

    fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("root/network/leases.json"))
            .unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Namespaces pinned by the test itself (hostns, outside) and by any `Network` of it
        // (root/netns/*, root2/netns/*).
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_file()) && e.path() != self.host_ns {
                let _ = netns::remove_pinned(&e.path());
            }
        }
        // Namespaces pinned by any `Network` of this test (root, root2, ...).
        for root in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let pins = std::fs::read_dir(root.path().join("netns"));
            for e in pins.into_iter().flatten().flatten() {
                let _ = netns::remove_pinned(&e.path());
            }
        }
        let _ = netns::remove_pinned(&self.host_ns);
    }
}

fn spec(ip: Option<Ipv4Addr>, ports: &[(u16, u16)]) -> NetworkSpec {
    NetworkSpec {
        mode: NetworkMode::Bridge,
        ip,
        ports: ports
            .iter()
            .map(|&(h, c)| crate::spec::PortMapping {
                host_ip: None,
                host_port: h,
                container_port: c,
                protocol: crate::spec::Protocol::Tcp,
            })
            .collect(),
        egress: None,
        ingress: None,
    }
}

/// Runs `f` on a thread inside the namespace at `ns`, in the background.
fn spawn_in<R: Send + 'static>(ns: &Path, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
    let file = File::open(ns).unwrap();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

fn ping(from: &Path, to: Ipv4Addr) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", from.display()))
        .args(["busybox", "ping", "-c1", "-W1", &to.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

/// A listener in `ns` that answers one connection: reads a line, writes `reply` + the line.
fn echo_once(ns: &Path, addr: SocketAddrV4, reply: &'static str) -> JoinHandle<()> {
    let listener = netns::run_in(Some(ns), move || TcpListener::bind(addr).unwrap()).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(reply.as_bytes()).unwrap();
        s.write_all(&buf[..n]).unwrap();
    })
}

/// Connects from `ns` to `addr`, sends "hi", returns what came back.
fn talk(ns: &Path, addr: SocketAddrV4) -> std::io::Result<String> {
    netns::run_in(Some(ns), move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"hi")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

#[test]
fn containers_reach_each_other_the_host_and_published_ports() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(1);
    let a = fx
        .net
        .attach("a", "a-1", &spec(None, &[(18080, 80)]))
        .unwrap();
    let b = fx.net.attach("b", "b-1", &spec(None, &[])).unwrap();
    assert_eq!(a.ip, Ipv4Addr::new(10, 200, 1, 2));
    assert_eq!(b.ip, Ipv4Addr::new(10, 200, 1, 3));
    assert_eq!(a.gateway, Ipv4Addr::new(10, 200, 1, 1));
    assert!(a.netns.starts_with(fx.dir.path().join("root/netns")));

    // Container to container, both ways, and TCP.
    assert!(ping(&a.netns, b.ip), "a cannot ping b");
    assert!(ping(&b.netns, a.ip), "b cannot ping a");
    let server = echo_once(&b.netns, SocketAddrV4::new(b.ip, 7000), "b:");
    assert_eq!(
        talk(&a.netns, SocketAddrV4::new(b.ip, 7000)).unwrap(),
        "b:hi"
    );
    server.join().unwrap();

    // The host reaches a container, and a container its gateway.
    assert!(ping(&fx.host_ns, a.ip), "host cannot ping a");
    assert!(ping(&a.netns, a.gateway), "a cannot ping its gateway");

    // eth0 carries the MAC derived from the IP and the MTU.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", a.netns.display()))
        .args(["busybox", "ip", "link", "show", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("02:42:0a:c8:01:02"), "{text}");
    assert!(text.contains("mtu 1500"), "{text}");

    // The published port answers on the host's 127.0.0.1 and on its bridge address.
    for host_ip in [Ipv4Addr::LOCALHOST, a.gateway] {
        let server = echo_once(&a.netns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), "a:");
        assert_eq!(
            talk(&fx.host_ns, SocketAddrV4::new(host_ip, 18080)).unwrap(),
            "a:hi",
            "published port via {host_ip}"
        );
        server.join().unwrap();
    }
    // And from the other container through the host (hairpin).
    let server = echo_once(&a.netns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), "a:");
    assert_eq!(
        talk(&b.netns, SocketAddrV4::new(a.gateway, 18080)).unwrap(),
        "a:hi"
    );
    server.join().unwrap();

    assert_eq!(
        fx.net.hosts().unwrap(),
        vec![("a".to_string(), a.ip), ("b".to_string(), b.ip)]
    );
    let rules = fx.rules();
    assert!(rules.contains(&("postrouting".into(), "berth bridge=bt1 masquerade".into())));
    assert_eq!(
        rules
            .iter()
            .filter(|(_, c)| c == "berth id=a-1 port=tcp/18080")
            .count(),
        2
    );

    // Detach removes the rules and the pinned namespace; the veths go with the namespaces.
    fx.net.detach(&a, true).unwrap();
    fx.net.detach(&b, true).unwrap();
    fx.net.settle().unwrap();
    let links = fx.links();
    assert!(!links.contains(&a.host_veth), "{links:?}");
    assert!(!links.contains(&b.host_veth), "{links:?}");
    assert!(fx.rules().iter().all(|(_, c)| !c.starts_with("berth id=")));
    assert!(!a.netns.exists() && !b.netns.exists());
    assert!(fx.net.hosts().unwrap().is_empty());
    // Detaching again is harmless.
    fx.net.detach(&a, true).unwrap();
}

/// Sends `bytes` from namespace `from` to `to_ip` and returns the rate seen by the receiver
/// (bits per second, first byte to end).
fn measure(from: &Path, to: &Path, to_ip: Ipv4Addr, bytes: usize) -> f64 {
    let addr = SocketAddrV4::new(to_ip, 5001);
    let listener = netns::run_in(Some(to), move || TcpListener::bind(addr).unwrap()).unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut start = None;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            start.get_or_insert_with(Instant::now);
            total += n;
        }
        (total, start.unwrap().elapsed())
    });
    let sender = spawn_in(from, move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    });
    sender.join().unwrap();
    let (total, elapsed) = receiver.join().unwrap();
    assert_eq!(total, bytes);
    total as f64 * 8.0 / elapsed.as_secs_f64()
}

#[test]
fn bandwidth_limits_hold_within_15_percent() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(2);
    let limit = 8_000_000u64;
    let mut limited_out = spec(None, &[]);
    limited_out.egress = Some(limit);
    let mut limited_in = spec(None, &[]);
    limited_in.ingress = Some(limit);
    let a = fx.net.attach("a", "a-2", &limited_out).unwrap();
    let b = fx.net.attach("b", "b-2", &spec(None, &[])).unwrap();
    let c = fx.net.attach("c", "c-2", &limited_in).unwrap();

    // The qdiscs sit where expected: egress on a's eth0, ingress on c's host veth.
    let mut a_nl = Netlink::open_in(Some(&a.netns)).unwrap();
    let eth0 = a_nl.link_index("eth0").unwrap().unwrap();
    assert!(a_nl.qdisc_kinds(eth0).unwrap().contains(&"tbf".to_string()));
    let mut host = Netlink::open_in(fx.ns()).unwrap();
    let c_veth = host.link_index(&c.host_veth).unwrap().unwrap();
    assert!(host
        .qdisc_kinds(c_veth)
        .unwrap()
        .contains(&"tbf".to_string()));

    let bytes = 3 * 1024 * 1024;
    let egress = measure(&a.netns, &b.netns, b.ip, bytes);
    let ingress = measure(&b.netns, &c.netns, c.ip, bytes);
    let free = measure(&b.netns, &a.netns, a.ip, bytes);
    eprintln!(
        "limit {} Mbit/s: egress {:.2} Mbit/s, ingress {:.2} Mbit/s, unlimited {:.1} Mbit/s",
        limit / 1_000_000,
        egress / 1e6,
        ingress / 1e6,
        free / 1e6
    );
    for (what, rate) in [("egress", egress), ("ingress", ingress)] {
        let ratio = rate / limit as f64;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "{what} rate {rate:.0} bit/s is not within 15% of {limit}"
        );
    }
    assert!(
        free > 2.0 * limit as f64,
        "unlimited path only got {free:.0} bit/s"
    );

    for att in [&a, &b, &c] {
        fx.net.detach(att, true).unwrap();
    }
    fx.net.settle().unwrap();
    assert!(host.link_index(&c.host_veth).unwrap().is_none());
}

#[test]
fn fifty_cycles_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(3);
    let mut s = spec(None, &[(19000, 80)]);
    s.egress = Some(10_000_000);
    s.ingress = Some(10_000_000);
    // The first attach creates the bridge and the bridge-wide rules; they stay.
    let first = fx.net.attach("web", "web-0", &s).unwrap();
    fx.net.detach(&first, true).unwrap();
    fx.net.settle().unwrap();
    let (links, rules, leases) = (fx.links(), fx.rules(), fx.leases());
    assert!(links.contains(&"bt3".to_string()));

    for i in 0..50 {
        let id = format!("web-{}", i + 1);
        let att = fx.net.attach("web", &id, &s).unwrap();
        assert!(fx.links().contains(&att.host_veth));
        fx.net.detach(&att, true).unwrap();
    }
    fx.net.settle().unwrap();
    assert_eq!(fx.links(), links);
    assert_eq!(fx.rules(), rules);
    assert_eq!(fx.leases(), leases);
    let pins: Vec<_> = std::fs::read_dir(fx.dir.path().join("root/netns"))
        .unwrap()
        .collect();
    assert!(pins.is_empty(), "{pins:?}");
}

#[test]
fn reattach_after_a_crash_does_not_duplicate_rules() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(4);
    let s = spec(None, &[(19001, 80)]);
    let first = fx.net.attach("web", "web-x", &s).unwrap();
    let before = fx.rules();
    // The nfnetlink listing agrees with nft's own.
    let mut via_netlink = netns::run_in(fx.ns(), || nfnetlink::dump_rules(nft::TABLE))
        .unwrap()
        .unwrap();
    let mut via_nft = nft::rules_via_nft(fx.ns()).unwrap();
    via_netlink.sort_by_key(|r| r.handle);
    via_nft.sort_by_key(|r| r.handle);
    assert_eq!(via_netlink, via_nft);
    assert_eq!(via_nft.len(), 5, "{via_nft:?}");
    // The daemon died without detaching; a new `Network` attaches the same id again.
    let net2 = Network::new(
        &fx.dir.path().join("root"),
        fx.net.config().clone(),
        Some(fx.host_ns.clone()),
    )
    .unwrap();
    let again = net2.attach("web", "web-x", &s).unwrap();
    assert_eq!(again, first);
    assert_eq!(fx.rules(), before);
    // The daemon dies again before recording the attachment: the id alone undoes it.
    assert!(net2.is_attached("web-x"));
    net2.detach_id("web-x").unwrap();
    assert!(!net2.is_attached("web-x"));
    assert!(!fx.links().contains(&again.host_veth));
    assert!(
        !fx.rules()
            .iter()
            .any(|(_, comment)| comment.contains("web-x")),
        "{:?}",
        fx.rules()
    );
    // Undoing twice is not an error.
    net2.detach_id("web-x").unwrap();
    net2.detach(&again, true).unwrap();
}

#[test]
fn static_addresses_collide_and_leases_persist() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(5);
    let fixed = Ipv4Addr::new(10, 200, 5, 2);
    let a = fx.net.attach("a", "a-5", &spec(Some(fixed), &[])).unwrap();
    assert_eq!(a.ip, fixed);
    let err = fx
        .net
        .attach("b", "b-5", &spec(Some(fixed), &[]))
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::IpTaken { ref holder, .. } if holder == "a"),
        "{err}"
    );
    assert!(err.to_string().contains("10.200.5.2"), "{err}");
    // The failed attach left nothing: no veth, no pin, no lease.
    assert!(!fx.links().contains(&addr::host_veth_name("b-5")));
    assert!(!fx.net.netns_path("b-5").exists());

    // A dynamic lease never takes the static address, and is kept across detach/attach.
    let c = fx.net.attach("c", "c-5a", &spec(None, &[])).unwrap();
    assert_eq!(c.ip, Ipv4Addr::new(10, 200, 5, 3));
    fx.net.detach(&c, false).unwrap();
    fx.net.detach(&a, false).unwrap();
    let d = fx.net.attach("d", "d-5", &spec(None, &[])).unwrap();
    assert_eq!(d.ip, Ipv4Addr::new(10, 200, 5, 4));
    let c2 = fx.net.attach("c", "c-5b", &spec(None, &[])).unwrap();
    assert_eq!(c2.ip, c.ip);
    // The stopped container's static address is still refused to others.
    assert!(fx.net.attach("e", "e-5", &spec(Some(fixed), &[])).is_err());
    // Outside the subnet.
    let err = fx
        .net
        .attach("e", "e-5", &spec(Some(Ipv4Addr::new(10, 9, 9, 9)), &[]))
        .unwrap_err();
    assert!(matches!(err, NetworkError::IpOutsideSubnet { .. }), "{err}");
    fx.net.detach(&c2, true).unwrap();
    fx.net.detach(&d, true).unwrap();
    assert_eq!(
        fx.net.hosts().unwrap(),
        vec![("a".to_string(), fixed)],
        "a's static lease stays until released"
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    if !can_run() {
        return;
    }
    // Bridge name too long.
    let dir = tempfile::tempdir().unwrap();
    let err = Network::new(
        dir.path(),
        NetworkConfig {
            bridge: "berth-bridge-long".into(),
            ..NetworkConfig::default()
        },
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at most 15"), "{err}");

    let fx = Fixture::new(6);
    // A port bound by a host process.
    let held = netns::run_in(fx.ns(), || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 19100)).unwrap()
    })
    .unwrap();
    let err = fx
        .net
        .attach("a", "a-6", &spec(None, &[(19100, 80)]))
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::PortInUse { port: 19100, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("19100"), "{err}");
    drop(held);
    assert!(
        fx.net.hosts().unwrap().is_empty(),
        "the failed attach kept a lease"
    );
    // A port published by another container.
    let a = fx
        .net
        .attach("a", "a-6", &spec(None, &[(19101, 80)]))
        .unwrap();
    let err = fx
        .net
        .attach("b", "b-6", &spec(None, &[(19101, 81)]))
        .unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
    fx.net.detach(&a, true).unwrap();

    // Another container's veth under the same name (a hash collision) is refused and kept.
    let host_file = File::open(&fx.host_ns).unwrap();
    let mut nl = Netlink::open_in(fx.ns()).unwrap();
    let taken = addr::host_veth_name("ghost");
    nl.add_veth(&Veth {
        host: &taken,
        alias: "berth:other",
        controller: None,
        peer: "ghostpeer",
        peer_netns: host_file.as_raw_fd(),
        peer_mac: [2, 0, 0, 0, 6, 9],
        mtu: 1500,
    })
    .unwrap();
    let err = fx
        .net
        .attach("ghost", "ghost", &spec(None, &[]))
        .unwrap_err();
    assert!(err.to_string().contains(&taken), "{err}");
    assert!(
        nl.link_index(&taken).unwrap().is_some(),
        "a foreign veth was deleted"
    );

    // A subnet that overlaps a route of the host namespace.
    let lo = nl.link_index("lo").unwrap().unwrap();
    nl.add_address(lo, Ipv4Addr::new(10, 201, 6, 1), 24)
        .unwrap();
    let overlapping = Network::new(
        &fx.dir.path().join("root2"),
        NetworkConfig {
            bridge: "bt6x".into(),
            subnet: (Ipv4Addr::new(10, 201, 6, 0), 24),
            ..NetworkConfig::default()
        },
        Some(fx.host_ns.clone()),
    )
    .unwrap();
    let err = overlapping
        .attach("x", "x-6", &spec(None, &[]))
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::SubnetOverlap { ref dev, .. } if dev == "lo"),
        "{err}"
    );
    assert!(!fx.links().contains(&"bt6x".to_string()));
}

#[test]
fn outbound_traffic_is_masqueraded_and_the_switch_turns_it_off() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(7);
    // An "outside" namespace behind the test host, on 10.202.7.0/24, with no route back to
    // the bridge subnet: only masqueraded traffic can get answers.
    let outside = fx.dir.path().join("outside");
    netns::create_pinned(&outside, || ()).unwrap();
    let out_file = File::open(&outside).unwrap();
    let mut host = Netlink::open_in(fx.ns()).unwrap();
    host.add_veth(&Veth {
        host: "up7",
        alias: "",
        controller: None,
        peer: "down7",
        peer_netns: out_file.as_raw_fd(),
        peer_mac: [2, 0, 0, 0, 7, 2],
        mtu: 1500,
    })
    .unwrap();
    let up = host.link_index("up7").unwrap().unwrap();
    host.add_address(up, Ipv4Addr::new(10, 202, 7, 1), 24)
        .unwrap();
    host.set_up(up).unwrap();
    let mut out_nl = Netlink::open_in(Some(&outside)).unwrap();
    let down = out_nl.link_index("down7").unwrap().unwrap();
    out_nl
        .add_address(down, Ipv4Addr::new(10, 202, 7, 2), 24)
        .unwrap();
    out_nl.set_up(down).unwrap();

    let a = fx.net.attach("a", "a-7", &spec(None, &[])).unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::new(10, 202, 7, 2), 7100);
    let listener =
        netns::run_in(Some(&outside), move || TcpListener::bind(target).unwrap()).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut hi = [0u8; 2];
        s.read_exact(&mut hi).unwrap();
        s.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    // The outside sees the host's address, not the container's.
    assert_eq!(talk(&a.netns, target).unwrap(), "10.202.7.1");
    server.join().unwrap();

    // With the switch off the rule goes, and the same connection gets no answer.
    let net2 = Network::new(
        &fx.dir.path().join("root"),
        NetworkConfig {
            masquerade: false,
            ..fx.net.config().clone()
        },
        Some(fx.host_ns.clone()),
    )
    .unwrap();
    let b = net2.attach("b", "b-7", &spec(None, &[])).unwrap();
    assert!(!fx
        .rules()
        .iter()
        .any(|(_, c)| c == "berth bridge=bt7 masquerade"));
    let _listener =
        netns::run_in(Some(&outside), move || TcpListener::bind(target).unwrap()).unwrap();
    let err = netns::run_in(Some(&b.netns), move || {
        TcpStream::connect_timeout(&target.into(), Duration::from_secs(1))
    })
    .unwrap();
    assert!(err.is_err(), "connected without masquerade");
    net2.detach(&b, true).unwrap();
    fx.net.detach(&a, true).unwrap();
    drop(out_file);
    netns::remove_pinned(&outside).unwrap();
}
