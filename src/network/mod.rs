//! Host-side networking for `mode = "bridge"`: the bridge, one veth pair and network namespace
//! per container, IP leases, published ports (nftables DNAT), masquerade and bandwidth limits
//! (TBF qdiscs over netlink).
//!
//! The only user of netlink in berth. Owns, in the bridge's network namespace: the bridge link,
//! the `bth*` veths, the nftables table `ip berth`, the sysctls `ip_forward` and the bridge's
//! `route_localnet`; under the state root: `network/` (leases) and `netns/<id>` (pinned
//! namespaces). Must not touch links, routes or rules it did not create.
//!
//! The API is blocking and may be called from several threads: attaches and detaches that
//! change leases or rules are serialized by the lease file's lock. Namespace switches happen only
//! on short-lived threads of our own (see `netns.rs`).

mod addr;
mod error;
mod leases;
mod netlink;
mod netns;
mod nfnetlink;
mod nft;
mod tc;

#[cfg(test)]
mod root_tests;

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use addr::IFNAME_MAX;
pub use error::{NetworkError, NetworkErrors};

use addr::Subnet;
use leases::Leases;
use netlink::{LinkState, Netlink, Veth};
use tc::TbfParams;

/// How long attach waits for the new links to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long removing the bridge waits for the veth pairs of detached containers, which the
/// kernel deletes with their namespaces, to be gone; a pair detached longer ago than this is no
/// longer waited for (something else holds its namespace).
const LINK_GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// The container-side interface name.
pub const CONTAINER_IFNAME: &str = "eth0";

/// The supervisor config's `[network]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bridge name, at most 15 bytes.
    pub bridge: String,
    /// Network address and prefix length; the bridge takes the first host address.
    pub subnet: (Ipv4Addr, u8),
    /// Masquerade traffic that leaves the subnet.
    pub masquerade: bool,
    /// MTU of the bridge and the veths.
    pub mtu: u32,
    /// Name servers for containers' /etc/resolv.conf (empty: the host's).
    pub dns: Vec<std::net::IpAddr>,
    /// Search domains for containers' /etc/resolv.conf (empty: the host's).
    pub dns_search: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "berth0".to_string(),
            subnet: (Ipv4Addr::new(10, 89, 0, 0), 24),
            masquerade: true,
            mtu: 1500,
            dns: Vec::new(),
            dns_search: Vec::new(),
        }
    }
}

pub use crate::spec::{PortMapping, Protocol};

/// What [`Network::attach`] set up; keep it (it serializes) to [`Network::detach`] later, also
/// from a restarted daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub id: String,
    /// The pinned namespace the container's init joins with setns(2).
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The host end of the veth pair (on the bridge).
    pub host_veth: String,
    pub ports: Vec<PortMapping>,
}

/// The bridge network of one supervisor.
#[derive(Debug)]
pub struct Network {
    root: PathBuf,
    config: NetworkConfig,
    subnet: Subnet,
    host_netns: Option<PathBuf>,
    leases: Leases,
    /// Host veths of containers detached here whose pairs the kernel may still be deleting,
    /// with when they were detached; kept for `LINK_GONE_TIMEOUT` at most.
    going: std::sync::Mutex<Vec<(String, Instant)>>,
}

impl Network {
    /// Checks the config (bridge name length, subnet) and prepares `<root>/network/`.
    /// `host_netns`: the netns holding the bridge (None = the caller's current one); tests pass
    /// a namespace they created.
    pub fn new(
        root: &Path,
        config: NetworkConfig,
        host_netns: Option<PathBuf>,
    ) -> Result<Network, NetworkError> {
        addr::check_ifname("bridge name", &config.bridge)?;
        let subnet = Subnet::new(config.subnet.0, config.subnet.1)?;
        if !(576..=65535).contains(&config.mtu) {
            return Err(NetworkError::InvalidConfig {
                what: "mtu",
                value: config.mtu.to_string(),
                reason: "must be between 576 and 65535".to_string(),
            });
        }
        let dir = root.join("network");
        std::fs::create_dir_all(&dir).map_err(|source| NetworkError::Io {
            step: "creating",
            path: dir.clone(),
            source,
        })?;
        Ok(Network {
            root: root.to_path_buf(),
            config,
            subnet,
            host_netns,
            leases: Leases::new(dir),
            going: Default::default(),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The bridge's own address, the containers' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// Where the namespace of container `id` is pinned.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.root.join("netns").join(id)
    }

    fn host_ns(&self) -> Option<&Path> {
        self.host_netns.as_deref()
    }

    /// Creates a new network namespace for container `id`, pinned at `<root>/netns/<id>`, with
    /// lo up and `eth0` (a veth whose peer is on the bridge) carrying the container's address
    /// (the static `spec.ip`, or the lease of `name`), the gateway as default route, the MTU and
    /// a MAC derived from the IP; publishes `spec.ports` and applies the bandwidth limits.
    ///
    /// Leftovers of an earlier attach of the same `id` (after a crash) are removed first. On
    /// failure everything done so far is undone and a new lease is dropped again.
    pub fn attach(
        &self,
        name: &str,
        id: &str,
        spec: &crate::spec::NetworkSpec,
    ) -> Result<Attachment, NetworkError> {
        addr::check_token("container name", name)?;
        addr::check_token("container id", id)?;
        if spec.mode != crate::spec::NetworkMode::Bridge {
            return Err(NetworkError::InvalidArgument {
                what: "network mode",
                value: format!("{:?}", spec.mode).to_lowercase(),
                reason: "only bridge mode gets an attachment".to_string(),
            });
        }
        let ports = spec.ports.clone();
        check_duplicate_ports(id, &ports)?;

        let mut leases = self.leases.lock()?;
        let previous = leases.get(name);
        let ip = leases.assign(name, spec.ip, &self.subnet)?;

        let att = Attachment {
            name: name.to_string(),
            id: id.to_string(),
            netns: self.netns_path(id),
            ip,
            prefix_len: self.subnet.prefix,
            gateway: self.subnet.gateway(),
            host_veth: addr::host_veth_name(id),
            ports,
        };

        let mut host = Netlink::open_in(self.host_ns())?;
        let bridge = self.ensure_bridge(&mut host)?;
        self.check_ports(&att)?;
        // A crashed earlier attach of this id may have left its objects behind; the pinned
        // namespace is made first and removed last, so without it there are none.
        if self.is_attached(id) {
            let _ = self.teardown(&mut host, id);
        }
        if leases.get(name) != previous {
            leases.save()?;
        }
        match self.setup(&mut host, bridge, &att, spec) {
            Ok(()) => Ok(att),
            Err(e) => {
                let _ = self.teardown(&mut host, id);
                if leases.get(name) != previous {
                    leases.restore(name, previous);
                    let _ = leases.save();
                }
                Err(e)
            }
        }
    }

    /// Undoes [`Network::attach`], going on past errors: the port rules and the pinned
    /// namespace (unmount + unlink). The lease stays with the name unless `release_lease`.
    /// Detaching twice is not an error.
    ///
    /// The veth pair is not deleted here: its container end lives in the namespace, which the
    /// kernel destroys in the background once unpinned and empty (the container's processes
    /// are gone by now), deleting the pair with it. Deleting it here would wait for the RCU
    /// grace periods of unregistering a device (some 20 ms on a small machine) on every stop.
    pub fn detach(&self, att: &Attachment, release_lease: bool) -> Result<(), NetworkErrors> {
        // Without ports, no rule was published (the attachment is recorded after the attach).
        let unpublished = if att.ports.is_empty() {
            Ok(())
        } else {
            nft::unpublish(self.host_ns(), &att.id)
        };
        let mut errors: Vec<NetworkError> = unpublished
            .err()
            .into_iter()
            .chain(netns::remove_pinned(&att.netns).err())
            .collect();
        let mut going = self.going.lock().unwrap_or_else(|p| p.into_inner());
        going.retain(|(veth, at)| veth != &att.host_veth && at.elapsed() < LINK_GONE_TIMEOUT);
        going.push((att.host_veth.clone(), Instant::now()));
        drop(going);
        if release_lease {
            match self.leases.lock() {
                Ok(mut leases) => {
                    leases.release(&att.name, att.ip);
                    errors.extend(leases.save().err());
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetworkErrors(errors))
        }
    }

    /// Removes the kernel objects of container `id` (port rules, veth, pinned namespace) when
    /// its [`Attachment`] was never recorded: a crash between attach and the record. The lease
    /// stays. Nothing there is not an error. The veth is deleted here: whether its namespace
    /// still holds the container's processes is not known.
    pub fn detach_id(&self, id: &str) -> Result<(), NetworkErrors> {
        let errors = self.remove_objects(id);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetworkErrors(errors))
        }
    }

    /// Replaces the bandwidth limits of the attached container `id`: a TBF qdisc for a rate,
    /// the default qdisc for `None` (egress on its eth0, ingress on the host end of its veth).
    pub fn set_bandwidth(
        &self,
        id: &str,
        egress: Option<u64>,
        ingress: Option<u64>,
    ) -> Result<(), NetworkError> {
        let mtu = self.config.mtu;
        let apply = |nl: &mut Netlink, ifname: &str, what: String, rate: Option<u64>| {
            let index = nl
                .link_index(ifname)
                .and_then(|i| i.ok_or_else(|| io::ErrorKind::NotFound.into()))
                .map_err(|e| NetworkError::netlink("looking up", what.clone(), e))?;
            match rate {
                Some(bits) => nl
                    .set_tbf(index, &TbfParams::for_rate(bits, mtu))
                    .map_err(|e| NetworkError::netlink("replacing the TBF qdisc on", what, e)),
                None => nl
                    .del_root_qdisc(index)
                    .map_err(|e| NetworkError::netlink("removing the TBF qdisc of", what, e)),
            }
        };
        let veth = addr::host_veth_name(id);
        let mut host = Netlink::open_in(self.host_ns())?;
        apply(&mut host, &veth, veth.clone(), ingress)?;
        let netns = self.netns_path(id);
        let mut ctr = Netlink::open_in(Some(&netns))?;
        let what = format!("{CONTAINER_IFNAME} in {}", netns.display());
        apply(&mut ctr, CONTAINER_IFNAME, what, egress)
    }

    /// Bytes container `id` has received and sent on its eth0 (read from the host end of its
    /// veth, which sees them the other way round); None when it has no veth.
    pub fn traffic(&self, id: &str) -> Result<Option<(u64, u64)>, NetworkError> {
        let veth = addr::host_veth_name(id);
        let mut host = Netlink::open_in(self.host_ns())?;
        let counters = host
            .byte_counters(&veth)
            .map_err(|e| NetworkError::netlink("reading the counters of", veth, e))?;
        Ok(counters.map(|(host_rx, host_tx)| (host_tx, host_rx)))
    }

    /// Whether container `id` has a pinned namespace (an attach that was not undone).
    pub fn is_attached(&self, id: &str) -> bool {
        self.netns_path(id).exists()
    }

    fn remove_objects(&self, id: &str) -> Vec<NetworkError> {
        match Netlink::open_in(self.host_ns()) {
            Ok(mut host) => self.teardown(&mut host, id),
            Err(e) => {
                let mut errors = vec![e];
                errors.extend(nft::unpublish(self.host_ns(), id).err());
                errors.extend(netns::remove_pinned(&self.netns_path(id)).err());
                errors
            }
        }
    }

    /// Frees whatever address `name` holds (its container is removed while none of its
    /// instances runs, e.g. between crash restarts). No lease is not an error.
    pub fn release_name(&self, name: &str) -> Result<(), NetworkError> {
        let mut leases = self.leases.lock()?;
        if let Some(lease) = leases.get(name) {
            leases.release(name, lease.ip);
            leases.save()?;
        }
        Ok(())
    }

    /// Names and addresses of every lease, sorted by name, for /etc/hosts.
    pub fn hosts(&self) -> Result<Vec<(String, Ipv4Addr)>, NetworkError> {
        Ok(self.leases.lock()?.all())
    }

    /// Waits (at most `LINK_GONE_TIMEOUT`) until the veth pairs of the containers detached
    /// here are gone with their namespaces (see [`Network::detach`]).
    pub fn settle(&self) -> Result<(), NetworkError> {
        self.settle_with(&mut Netlink::open_in(self.host_ns())?)
    }

    fn settle_with(&self, host: &mut Netlink) -> Result<(), NetworkError> {
        let deadline = Instant::now() + LINK_GONE_TIMEOUT;
        loop {
            let links = list_links(host)?;
            let mut going = self.going.lock().unwrap_or_else(|p| p.into_inner());
            going.retain(|(v, _)| links.iter().any(|(_, l)| l == v));
            if going.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
            drop(going);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What a daemon's clean exit undoes once no container is attached: the bridge-wide NAT
    /// rules (and the table, when nothing else has rules in it) and the bridge itself. It first
    /// [settles](Network::settle); with any berth veth still in the namespace (another root's
    /// container, say) nothing is removed. `ip_forward` is left as it is (what it was before
    /// berth is not known).
    pub fn remove_bridge(&self) -> Result<(), NetworkError> {
        let mut host = Netlink::open_in(self.host_ns())?;
        let name = &self.config.bridge;
        self.settle_with(&mut host)?;
        let links = list_links(&mut host)?;
        if links.iter().any(|(_, l)| l.starts_with("bth")) {
            return Ok(());
        }
        nft::remove_base(self.host_ns(), name)?;
        if let Some((index, _)) = links.iter().find(|(_, l)| l == name) {
            host.del_link(*index)
                .map_err(|e| NetworkError::netlink("deleting bridge", name.clone(), e))?;
        }
        Ok(())
    }

    /// Creates the bridge if missing (after checking that the subnet overlaps no host route),
    /// gives it the gateway address, brings it up, sets the sysctls and the bridge-wide NAT
    /// rules. Returns its index and state as found.
    fn ensure_bridge(&self, host: &mut Netlink) -> Result<LinkState, NetworkError> {
        let name = &self.config.bridge;
        let nl = |step: &'static str| {
            let object = name.clone();
            move |e: io::Error| NetworkError::netlink(step, object, e)
        };
        let bridge = match host.link_state(name).map_err(nl("looking up bridge"))? {
            Some(state) => state,
            None => {
                self.check_overlap(host)?;
                match host.add_bridge(name, self.config.mtu, addr::mac_for(self.subnet.gateway())) {
                    Ok(()) => {}
                    // Another process created it in between.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl("creating bridge")(e)),
                }
                host.link_state(name)
                    .map_err(nl("looking up bridge"))?
                    .ok_or_else(|| nl("looking up bridge")(io::ErrorKind::NotFound.into()))?
            }
        };
        host.add_address(bridge.index, self.subnet.gateway(), self.subnet.prefix)
            .map_err(nl("adding the gateway address to bridge"))?;
        if !bridge.up {
            host.set_up(bridge.index)
                .map_err(nl("bringing up bridge"))?;
        }
        let sysctls = [
            format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
            "/proc/sys/net/ipv4/ip_forward".to_string(),
        ];
        netns::run_in(self.host_ns(), || -> Result<(), NetworkError> {
            for path in &sysctls {
                set_sysctl(path, "1")?;
            }
            Ok(())
        })??;
        nft::ensure_base(self.host_ns(), name, &self.subnet, self.config.masquerade)?;
        Ok(bridge)
    }

    /// Refuses a subnet that overlaps a route of the bridge's namespace (other than the
    /// default route).
    fn check_overlap(&self, host: &mut Netlink) -> Result<(), NetworkError> {
        let routes = host
            .routes_v4()
            .map_err(|e| NetworkError::netlink("listing the routes of", "the host netns", e))?;
        for r in routes {
            if r.prefix > 0 && self.subnet.overlaps(r.dst, r.prefix) {
                let dev = r
                    .oif
                    .and_then(|i| {
                        host.links()
                            .ok()?
                            .into_iter()
                            .find(|(idx, _)| *idx == i)
                            .map(|(_, n)| n)
                    })
                    .unwrap_or_else(|| "?".to_string());
                return Err(NetworkError::SubnetOverlap {
                    subnet: self.subnet.to_string(),
                    route: format!("{}/{}", r.dst, r.prefix),
                    dev,
                });
            }
        }
        Ok(())
    }

    /// Refuses host ports published by another container or bound by a host process.
    fn check_ports(&self, att: &Attachment) -> Result<(), NetworkError> {
        if att.ports.is_empty() {
            return Ok(());
        }
        let rules = nft::rules(self.host_ns())?;
        for p in &att.ports {
            if let Some(owner) = nft::published_elsewhere(&rules, &att.id, p) {
                return Err(NetworkError::PortInUse {
                    id: att.id.clone(),
                    port: p.host_port,
                    protocol: p.protocol.as_str(),
                    reason: format!("already published ({owner})"),
                });
            }
        }
        let ports = att.ports.clone();
        netns::run_in(self.host_ns(), move || {
            for p in &ports {
                let addr =
                    SocketAddrV4::new(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
                let bound = match p.protocol {
                    Protocol::Tcp => TcpListener::bind(addr).map(drop),
                    Protocol::Udp => UdpSocket::bind(addr).map(drop),
                };
                if let Err(e) = bound {
                    return Err((*p, e));
                }
            }
            Ok(())
        })?
        .map_err(|(p, e)| NetworkError::PortInUse {
            id: att.id.clone(),
            port: p.host_port,
            protocol: p.protocol.as_str(),
            reason: format!("binding it on the host failed: {e}"),
        })
    }

    /// The kernel work of attach, in order; the caller undoes it on error.
    fn setup(
        &self,
        host: &mut Netlink,
        bridge: LinkState,
        att: &Attachment,
        spec: &crate::spec::NetworkSpec,
    ) -> Result<(), NetworkError> {
        let mtu = self.config.mtu;
        let in_ctr = |step: &'static str, ifname: &str| {
            let object = format!("{ifname} in {}", att.netns.display());
            move |e: io::Error| NetworkError::netlink(step, object, e)
        };
        let mut ctr = netns::create_pinned(&att.netns, Netlink::open)?
            .map_err(in_ctr("opening a socket in", "the namespace"))?;
        let ns_file = File::open(&att.netns).map_err(|source| NetworkError::Netns {
            step: "opening",
            path: att.netns.clone(),
            source,
        })?;
        let veth = att.host_veth.as_str();
        let host_index = host
            .add_veth(&Veth {
                host: veth,
                alias: &veth_alias(&att.id),
                controller: Some(bridge.index),
                peer: CONTAINER_IFNAME,
                peer_netns: ns_file.as_raw_fd(),
                peer_mac: addr::mac_for(att.ip),
                mtu,
            })
            .map_err(|e| NetworkError::netlink("creating veth pair", veth, e))?;
        drop(ns_file);

        ctr.set_up_by_name("lo")
            .map_err(in_ctr("bringing up", "lo"))?;
        let eth = ctr
            .link_index(CONTAINER_IFNAME)
            .and_then(|i| i.ok_or_else(|| io::ErrorKind::NotFound.into()))
            .map_err(in_ctr("looking up", CONTAINER_IFNAME))?;
        ctr.add_address(eth, att.ip, att.prefix_len)
            .map_err(in_ctr("adding the address to", CONTAINER_IFNAME))?;
        ctr.set_up(eth)
            .map_err(in_ctr("bringing up", CONTAINER_IFNAME))?;
        ctr.add_default_route(eth, att.gateway)
            .map_err(in_ctr("adding the default route via", CONTAINER_IFNAME))?;

        // Traffic towards the container leaves the host veth; traffic from it leaves eth0.
        if let Some(bits) = spec.ingress {
            host.set_tbf(host_index, &TbfParams::for_rate(bits, mtu))
                .map_err(|e| NetworkError::netlink("adding the ingress TBF qdisc on", veth, e))?;
        }
        if let Some(bits) = spec.egress {
            ctr.set_tbf(eth, &TbfParams::for_rate(bits, mtu))
                .map_err(in_ctr("adding the egress TBF qdisc on", CONTAINER_IFNAME))?;
        }
        if !att.ports.is_empty() {
            nft::publish(self.host_ns(), &att.id, att.ip, &att.ports)?;
        }
        // A new link passes no packets until the kernel's link watcher (run up to a second
        // later) has seen its carrier; return only once the path is usable.
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        wait_up(host, host_index, veth, deadline)?;
        // A bridge that had a working port already stays up when one more is added.
        if !bridge.oper_up {
            wait_up(host, bridge.index, &self.config.bridge, deadline)?;
        }
        let eth_name = format!("{CONTAINER_IFNAME} in {}", att.netns.display());
        wait_up(&mut ctr, eth, &eth_name, deadline)?;
        Ok(())
    }

    /// Removes what attach made for container `id`, whatever is still there; returns the
    /// errors.
    fn teardown(&self, host: &mut Netlink, id: &str) -> Vec<NetworkError> {
        let mut errors = Vec::new();
        errors.extend(nft::unpublish(self.host_ns(), id).err());
        let veth = &addr::host_veth_name(id);
        let ours = |host: &mut Netlink, index| {
            // Only a link labelled with this id (or unlabelled) is ours: another id could hash
            // to the same name.
            host.alias(index)
                .map(|a| a.is_none_or(|a| a == veth_alias(id)))
        };
        match host.link_index(veth) {
            Ok(Some(index)) if !ours(host, index).unwrap_or(true) => {}
            // Its qdiscs and its peer (the container's eth0, with its qdiscs) go with it.
            Ok(Some(index)) => match host.del_link(index) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => errors.push(NetworkError::netlink("deleting veth", veth, e)),
            },
            Ok(None) => {}
            Err(e) => errors.push(NetworkError::netlink("looking up veth", veth, e)),
        }
        errors.extend(netns::remove_pinned(&self.netns_path(id)).err());
        errors
    }
}

/// The alias on a host veth naming the container it belongs to.
fn veth_alias(id: &str) -> String {
    format!("berth:{id}")
}

/// Every link's index and name in the bridge's namespace.
fn list_links(host: &mut Netlink) -> Result<Vec<(u32, String)>, NetworkError> {
    host.links()
        .map_err(|e| NetworkError::netlink("listing the links of", "the bridge's netns", e))
}

/// Waits until link `index` is operationally up, at most until `deadline`.
fn wait_up(
    nl: &mut Netlink,
    index: u32,
    what: &str,
    deadline: Instant,
) -> Result<(), NetworkError> {
    loop {
        match nl.oper_up(index) {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(false) => {
                return Err(NetworkError::netlink(
                    "waiting for carrier on",
                    what,
                    io::ErrorKind::TimedOut.into(),
                ))
            }
            Err(e) => return Err(NetworkError::netlink("reading the state of", what, e)),
        }
    }
}

fn check_duplicate_ports(id: &str, ports: &[PortMapping]) -> Result<(), NetworkError> {
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].iter().any(|q| q.overlaps(p)) {
            return Err(NetworkError::PortInUse {
                id: id.to_string(),
                port: p.host_port,
                protocol: p.protocol.as_str(),
                reason: "listed twice in the spec".to_string(),
            });
        }
    }
    Ok(())
}

/// Writes `value` to a sysctl file unless it already holds it. Must run in the namespace the
/// sysctl belongs to (net sysctls follow the opening thread's netns).
fn set_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    let err = |source| NetworkError::Sysctl {
        path: path.to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(cur) if cur.trim() == value => Ok(()),
        _ => std::fs::write(path, value).map_err(err),
    }
}
