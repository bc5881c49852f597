//! A small blocking rtnetlink client (netlink-packet-route messages over a plain netlink
//! socket): links (bridge, veth), addresses, routes and TBF qdiscs in one network namespace.
//!
//! A socket is bound to the namespace it was opened in; [`Netlink::open_in`] opens it from a
//! thread that joined the wanted namespace, so the caller never switches its own. This file
//! decides nothing: the orchestration lives in `mod.rs`, the TBF parameters in `tc.rs`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, RawFd};
use std::path::Path;

use netlink_packet_core::{
    DecodeError, DefaultNla, ErrorBuffer, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkInfo,
    LinkMessage, LinkMessageBuffer, Stats64,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::error::NetworkError;
use super::netns;
use super::tc::TbfParams;

/// An IPv4 route as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub oif: Option<u32>,
}

/// A veth pair to create: `host` in the socket's namespace (labelled with `alias`, enslaved to
/// `controller` when given), its peer named `peer` directly in the namespace `peer_netns` (an
/// open nsfs fd) with the MAC `peer_mac`; both with `mtu` and a single queue each way (a veth
/// otherwise gets one per possible CPU, each registered with its own sysfs objects, which costs
/// every start time on a machine with many CPUs and buys nothing without XDP).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Veth<'a> {
    pub host: &'a str,
    pub alias: &'a str,
    pub controller: Option<u32>,
    pub peer: &'a str,
    pub peer_netns: RawFd,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
}

pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    /// Each request is built here.
    send_buf: Vec<u8>,
    /// Receives every reply: one `recv` each, into memory kept across requests.
    buf: Vec<u8>,
}

/// The receive buffer. The kernel sizes a dump's messages by the largest buffer a socket
/// received into so far (32 KiB at most), so no reply is larger than this.
const RECV_BUF: usize = 64 * 1024;

/// Link attributes read without parsing the whole message (uapi `linux/if_link.h`).
const IFLA_OPERSTATE: u16 = 16;
const IFLA_IFALIAS: u16 = 20;
const IFLA_STATS64: u16 = 23;
/// `IF_OPER_UP` of RFC 2863's operational states, as IFLA_OPERSTATE carries it.
const IF_OPER_UP: u8 = 6;
const RTM_NEWLINK: u16 = libc::RTM_NEWLINK;

/// Whether `attribute` says its link is operationally up.
fn is_oper_up(attribute: &NlaBuffer<&[u8]>) -> bool {
    attribute.kind() == IFLA_OPERSTATE && attribute.value().first() == Some(&IF_OPER_UP)
}

/// What [`Netlink::link_state`] reads of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub index: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up: carrier on, and its queue passing packets.
    pub oper_up: bool,
}

/// Asks a link query to leave out the link's counters (less for the kernel to gather and for
/// us to parse) where they are not wanted.
fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

fn io_other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            sock,
            seq: 0,
            send_buf: Vec::new(),
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Opens a socket bound to the namespace at `netns` (None: the caller's).
    pub fn open_in(netns: Option<&Path>) -> Result<Netlink, NetworkError> {
        let object = netns.map_or("current netns".to_string(), |p| p.display().to_string());
        netns::run_in(netns, Netlink::open)?
            .map_err(|e| NetworkError::netlink("opening a socket in", object, e))
    }

    /// Sends one request and hands each reply message (its type and payload, unparsed) to
    /// `on_message` until the ACK (or DONE for dumps). Nothing is allocated per request: the
    /// request is built in, and the replies received into, buffers the socket keeps.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut on_message: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        self.send_buf.clear();
        self.send_buf.resize(packet.buffer_len(), 0);
        packet.serialize(&mut self.send_buf);
        self.sock.send(&self.send_buf, 0)?;

        let decode = |e: DecodeError| io_other(format!("decoding a netlink reply: {e}"));
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, libc::MSG_TRUNC)?;
            if n > self.buf.len() {
                return Err(io_other(format!(
                    "a netlink reply of {n} bytes exceeds the {RECV_BUF}-byte buffer"
                )));
            }
            let mut data = &self.buf[..];
            while !data.is_empty() {
                let reply = NetlinkBuffer::new_checked(data).map_err(decode)?;
                let len = reply.length() as usize;
                if len == 0 {
                    break;
                }
                data = data.get((len + 3) & !3..).unwrap_or_default();
                if reply.sequence_number() != seq {
                    continue;
                }
                match reply.message_type() {
                    NLMSG_ERROR => {
                        let error = ErrorBuffer::new_checked(reply.payload()).map_err(decode)?;
                        return match error.code() {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NLMSG_DONE => return Ok(()),
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    kind => on_message(kind, reply.payload())?,
                }
            }
        }
    }

    /// Sends one request and collects the replies, each parsed in full, until the ACK (or
    /// DONE for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        self.exchange(msg, flags, |kind, payload| {
            let mut header = NetlinkHeader::default();
            header.message_type = kind;
            let m = RouteNetlinkMessage::deserialize(&header, payload)
                .map_err(|e| io_other(format!("decoding a netlink reply: {e}")))?;
            out.push(m);
            Ok(())
        })?;
        Ok(out)
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, flags, |_, _| Ok(()))
    }

    /// Asks for one link (by `index`, or by `name` when given; with its counters only when
    /// `counters`) and hands its header and its attributes, unparsed, to `read`; None if no
    /// link has that name (a missing index stays an error). Nothing is parsed but what `read`
    /// looks at.
    fn query_link<R>(
        &mut self,
        index: u32,
        name: Option<&str>,
        counters: bool,
        mut read: impl FnMut(&LinkHeader, NlasIterator<&[u8]>) -> R,
    ) -> io::Result<Option<R>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = name
            .map(|n| LinkAttribute::IfName(n.to_string()))
            .into_iter()
            .chain((!counters).then(skip_stats))
            .collect();
        let mut found = None;
        let result = self.exchange(RouteNetlinkMessage::GetLink(msg), 0, |kind, payload| {
            if kind == RTM_NEWLINK && found.is_none() {
                let header = LinkHeader::parse(payload).map_err(|e| io_other(e.to_string()))?;
                let attributes = payload
                    .get(size_of::<LinkMessageBuffer>()..)
                    .unwrap_or_default();
                found = Some(read(&header, NlasIterator::new(attributes)));
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(found),
            Err(e) if name.is_some() && e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the link named `name`, None if there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        crate::sys::netdev::index(self.sock.as_fd(), name)
    }

    /// The index and state of the link named `name`, None if there is none.
    pub fn link_state(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        self.query_link(0, Some(name), false, |h, mut attributes| LinkState {
            index: h.index,
            up: h.flags.contains(LinkFlags::Up),
            oper_up: attributes.any(|a| a.is_ok_and(|a| is_oper_up(&a))),
        })
    }

    /// The alias (IFLA_IFALIAS) of link `index`, if it has one.
    pub fn alias(&mut self, index: u32) -> io::Result<Option<String>> {
        let alias = self.query_link(index, None, false, |_, mut attributes| {
            attributes
                .find_map(|a| a.ok().filter(|a| a.kind() == IFLA_IFALIAS))
                .map(|a| {
                    String::from_utf8_lossy(a.value())
                        .trim_end_matches('\0')
                        .to_string()
                })
        })?;
        Ok(alias.flatten().filter(|a| !a.is_empty()))
    }

    /// Whether link `index` is operationally up (carrier on and processed by the kernel's link
    /// watcher, which is when its queue starts passing packets).
    pub fn oper_up(&mut self, index: u32) -> io::Result<bool> {
        let up = self.query_link(index, None, false, |_, mut attributes| {
            attributes.any(|a| a.is_ok_and(|a| is_oper_up(&a)))
        })?;
        Ok(up == Some(true))
    }

    /// The byte counters (received, sent) of the link named `name`, None if there is none.
    pub fn byte_counters(&mut self, name: &str) -> io::Result<Option<(u64, u64)>> {
        let counters = self.query_link(0, Some(name), true, |_, mut attributes| {
            attributes
                .find_map(|a| a.ok().filter(|a| a.kind() == IFLA_STATS64))
                .map(|a| Stats64::parse(a.value()))
        })?;
        match counters.flatten() {
            Some(Ok(s)) => Ok(Some((s.rx_bytes, s.tx_bytes))),
            Some(Err(e)) => Err(io_other(format!("decoding the counters of {name}: {e}"))),
            None => Ok(None),
        }
    }

    /// Every link's index and name.
    pub fn links(&mut self) -> io::Result<Vec<(u32, String)>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((l.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge with the given MTU and MAC, down.
    pub fn add_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair as described by `v`, the host end up; returns the host end's index.
    pub fn add_veth(&mut self, v: &Veth<'_>) -> io::Result<u32> {
        let Veth {
            host,
            alias,
            controller,
            peer,
            peer_netns,
            peer_mac,
            mtu,
        } = *v;
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
            LinkAttribute::Address(peer_mac.to_vec()),
            LinkAttribute::NetNsFd(peer_netns),
        ];
        // The host end is created up (the kernel applies the header's flags once both ends
        // exist; the peer's would be applied before, when an end without a peer cannot open).
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName(host.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NumTxQueues(1),
            LinkAttribute::NumRxQueues(1),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        let index = self
            .link_index(host)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if !alias.is_empty() {
            // The kernel ignores IFLA_IFALIAS when creating a link: set it afterwards.
            let mut msg = LinkMessage::default();
            msg.header.index = index;
            msg.attributes = vec![LinkAttribute::IfAlias(alias.to_string())];
            self.ack(RouteNetlinkMessage::SetLink(msg), 0)?;
        }
        Ok(index)
    }

    /// Brings the link named `name` up.
    pub fn set_up_by_name(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Deletes a link (for a veth, both ends).
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Adds (or replaces) `ip/prefix` on a link, with the subnet's broadcast address.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        let mask = super::addr::mask(prefix);
        let broadcast = Ipv4Addr::from(u32::from(ip) | !mask);
        msg.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
            AddressAttribute::Broadcast(broadcast),
        ];
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Adds the default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// The IPv4 unicast routes of the main table, and local routes of whole prefixes.
    pub fn routes_v4(&mut self) -> io::Result<Vec<Route4>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            let mut table = u32::from(m.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let main_unicast = table == u32::from(RouteHeader::RT_TABLE_MAIN)
                && m.header.kind == RouteType::Unicast;
            // A whole prefix made local (an address with a prefix on lo) counts too.
            let local_prefix =
                m.header.kind == RouteType::Local && m.header.destination_prefix_length < 32;
            if main_unicast || local_prefix {
                out.push(Route4 {
                    dst,
                    prefix: m.header.destination_prefix_length,
                    oif,
                });
            }
        }
        Ok(out)
    }

    /// Replaces the root qdisc of link `index` with a TBF.
    pub fn set_tbf(&mut self, index: u32, params: &TbfParams) -> io::Result<()> {
        let mut msg = TcMessage::default();
        msg.header.index = index as i32;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.header.parent = TcHandle::ROOT;
        let options = params
            .attributes()
            .into_iter()
            .map(|(kind, value)| TcOption::Other(DefaultNla::new(kind, value)))
            .collect();
        msg.attributes = vec![
            TcAttribute::Kind("tbf".to_string()),
            TcAttribute::Options(options),
        ];
        self.ack(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Deletes the root qdisc of link `index` (back to the default); a link without one is not
    /// an error.
    pub fn del_root_qdisc(&mut self, index: u32) -> io::Result<()> {
        let mut msg = TcMessage::default();
        msg.header.index = index as i32;
        msg.header.parent = TcHandle::ROOT;
        match self.ack(RouteNetlinkMessage::DelQueueDiscipline(msg), 0) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
            other => other,
        }
    }

    #[cfg(test)]
    /// The kinds of the qdiscs attached to link `index` (e.g. "tbf", "noqueue").
    pub fn qdisc_kinds(&mut self, index: u32) -> io::Result<Vec<String>> {
        let replies = self.request(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewQueueDiscipline(m) if m.header.index == index as i32 => {
                    m.attributes.into_iter().find_map(|a| match a {
                        TcAttribute::Kind(k) => Some(k),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }
}
