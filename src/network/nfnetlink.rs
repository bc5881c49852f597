//! nf_tables over an nfnetlink socket, without running the `nft` tool: dumping the rules of a
//! table, and transactions that delete rules by handle and add the DNAT rules of published
//! ports in one atomic batch.
//!
//! The messages are those `nft` itself sends (`nft --debug=netlink` shows the expressions):
//! `fib daddr type local <proto> dport <port> dnat to <ip>:<port> comment "<comment>"`. This file
//! encodes; what the rules are and which ones to delete is decided in `nft.rs`. A socket is
//! bound to the namespace of the thread that opens it (see `netns::run_in`).

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nft::Rule;
use super::Protocol;

// linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h, libnftnl udata.h.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFPROTO_IPV4: u8 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Dumps the rules of table `ip <table>` over a socket opened in the calling thread's netns. A
/// missing table yields no rules.
pub(crate) fn dump_rules(table: &str) -> io::Result<Vec<Rule>> {
    let mut msg = Encoder::default();
    let at = msg.header(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        NFPROTO_IPV4,
    );
    attr(&mut msg.buf, NFTA_RULE_TABLE, &cstr(table));
    msg.finish(at);
    let sock = socket()?;
    sock.send(&msg.buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        for reply in replies(&data)? {
            if reply.seq != msg.seq {
                continue;
            }
            match reply.kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    return match reply.error()? {
                        0 => Ok(out),
                        code if code == -libc::ENOENT => Ok(Vec::new()),
                        code => Err(io::Error::from_raw_os_error(-code)),
                    }
                }
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                    // After the nfgenmsg: the rule's attributes.
                    if let Some(rule) = reply.body.get(4..).and_then(|a| parse_rule(a, table)) {
                        out.push(rule);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The chain, handle and comment of one NEWRULE message's attributes (None for a rule of
/// another table).
fn parse_rule(mut attrs: &[u8], want_table: &str) -> Option<Rule> {
    let text = |v: &[u8]| {
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    };
    let (mut table, mut chain, mut handle, mut comment) = (None, None, None, String::new());
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return None;
        }
        let value = &attrs[4..len];
        match kind {
            NFTA_RULE_TABLE => table = Some(text(value)),
            NFTA_RULE_CHAIN => chain = Some(text(value)),
            NFTA_RULE_HANDLE if value.len() == 8 => {
                handle = Some(u64::from_be_bytes(value.try_into().unwrap()))
            }
            NFTA_RULE_USERDATA => {
                let mut u = value;
                while u.len() >= 2 {
                    let (t, l) = (u[0], u[1] as usize);
                    if 2 + l > u.len() {
                        break;
                    }
                    if t == NFTNL_UDATA_RULE_COMMENT {
                        comment = text(&u[2..2 + l]);
                    }
                    u = &u[2 + l..];
                }
            }
            _ => {}
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    if table.as_deref() != Some(want_table) {
        return None;
    }
    Some(Rule {
        chain: chain?,
        handle: handle?,
        comment,
    })
}

/// One batch of rule changes for table `ip <table>`, sent with [`Transaction::commit`].
pub(crate) struct Transaction {
    table: String,
    msg: Encoder,
    /// Sequence numbers of the commands, each acknowledged by the kernel.
    commands: Vec<u32>,
}

impl Transaction {
    pub fn new(table: &str) -> Transaction {
        let mut msg = Encoder::default();
        let at = msg.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0);
        msg.finish(at);
        Transaction {
            table: table.to_string(),
            msg,
            commands: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Deletes rule `handle` of `chain`.
    pub fn delete_rule(&mut self, chain: &str, handle: u64) {
        let at = self.command(NFT_MSG_DELRULE, 0, chain);
        attr(&mut self.msg.buf, NFTA_RULE_HANDLE, &handle.to_be_bytes());
        self.msg.finish(at);
    }

    /// Appends to `chain`: packets to a local address (to `host_ip` only, when given) on
    /// `protocol` port `host_port` are DNATed to `ip`:`container_port`; the rule carries
    /// `comment`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_dnat(
        &mut self,
        chain: &str,
        protocol: Protocol,
        host_ip: Option<Ipv4Addr>,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
        comment: &str,
    ) {
        let at = self.command(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, chain);
        let list = nest_start(&mut self.msg.buf, NFTA_RULE_EXPRESSIONS);
        let b = &mut self.msg.buf;
        // fib daddr type => reg 1; cmp eq reg 1 RTN_LOCAL
        expr(
            b,
            "fib",
            &[(1, be32(NFT_REG_1)), (2, be32(3)), (3, be32(2))],
        );
        cmp_eq(b, &2u32.to_ne_bytes());
        if let Some(addr) = host_ip {
            // payload 4 bytes at network header + 16 (daddr) => reg 1; cmp eq reg 1 <addr>
            expr(
                b,
                "payload",
                &[
                    (1, be32(NFT_REG_1)),
                    (2, be32(1)),
                    (3, be32(16)),
                    (4, be32(4)),
                ],
            );
            cmp_eq(b, &addr.octets());
        }
        // meta l4proto => reg 1; cmp eq reg 1 <proto>
        expr(b, "meta", &[(1, be32(NFT_REG_1)), (2, be32(16))]);
        let l4 = match protocol {
            Protocol::Tcp => 6u8,
            Protocol::Udp => 17u8,
        };
        cmp_eq(b, &[l4]);
        // payload 2 bytes at transport header + 2 (dport) => reg 1; cmp eq reg 1 <port>
        expr(
            b,
            "payload",
            &[
                (1, be32(NFT_REG_1)),
                (2, be32(2)),
                (3, be32(2)),
                (4, be32(2)),
            ],
        );
        cmp_eq(b, &host_port.to_be_bytes());
        immediate(b, NFT_REG_1, &ip.octets());
        immediate(b, NFT_REG_2, &container_port.to_be_bytes());
        // nat dnat ip addr_min reg 1 proto_min reg 2 flags NF_NAT_RANGE_PROTO_SPECIFIED
        expr(
            b,
            "nat",
            &[
                (1, be32(1)),
                (2, be32(u32::from(NFPROTO_IPV4))),
                (3, be32(NFT_REG_1)),
                (5, be32(NFT_REG_2)),
                (7, be32(2)),
            ],
        );
        nest_end(b, list);
        let mut udata = vec![NFTNL_UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
        udata.extend_from_slice(comment.as_bytes());
        udata.push(0);
        attr(b, NFTA_RULE_USERDATA, &udata);
        self.msg.finish(at);
    }

    /// Sends the batch on a socket opened in the calling thread's netns and waits for the
    /// kernel's answer to every command: all of it takes effect, or none (the first error).
    pub fn commit(mut self) -> io::Result<()> {
        if self.commands.is_empty() {
            return Ok(());
        }
        let at = self.msg.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0);
        self.msg.finish(at);
        let sock = socket()?;
        sock.send(&self.msg.buf, 0)?;
        let mut pending = self.commands;
        while !pending.is_empty() {
            let (data, _) = sock.recv_from_full()?;
            for reply in replies(&data)? {
                if reply.kind != NLMSG_ERROR {
                    continue;
                }
                match reply.error()? {
                    0 => pending.retain(|s| *s != reply.seq),
                    code => return Err(io::Error::from_raw_os_error(-code)),
                }
            }
        }
        Ok(())
    }

    /// Starts a command message for a rule of `chain`.
    fn command(&mut self, kind: u16, flags: u16, chain: &str) -> usize {
        let at = self.msg.header(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_IPV4,
        );
        self.commands.push(self.msg.seq);
        attr(&mut self.msg.buf, NFTA_RULE_TABLE, &cstr(&self.table));
        attr(&mut self.msg.buf, NFTA_RULE_CHAIN, &cstr(chain));
        at
    }
}

/// Netlink messages being built: headers with their nfgenmsg, and attributes.
#[derive(Default)]
struct Encoder {
    buf: Vec<u8>,
    /// The sequence number of the last message started.
    seq: u32,
}

impl Encoder {
    /// Appends a netlink header (its length is set by `finish`) and the nfgenmsg.
    fn header(&mut self, kind: u16, flags: u16, family: u8) -> usize {
        self.seq += 1;
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version, res_id (big endian; the subsystem for batches).
        let res_id = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        at
    }

    fn finish(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// An nfnetlink socket bound to the calling thread's netns.
fn socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(sock)
}

/// One message of a reply.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    body: &'a [u8],
}

impl Reply<'_> {
    /// The (negative errno, or 0 for an ack) code of an NLMSG_ERROR.
    fn error(&self) -> io::Result<i32> {
        self.body
            .get(..4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
            .ok_or_else(malformed)
    }
}

fn malformed() -> io::Error {
    io::Error::other("malformed nfnetlink reply")
}

/// The messages in one datagram.
fn replies(data: &[u8]) -> io::Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= data.len() {
        let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len < 16 || off + len > data.len() {
            return Err(malformed());
        }
        out.push(Reply {
            kind: u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap()),
            seq: u32::from_ne_bytes(data[off + 8..off + 12].try_into().unwrap()),
            body: &data[off + 16..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends attribute `kind` with `value`, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn nest_start(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// One expression of a rule: its name and its (u32 or binary) attributes.
fn expr(buf: &mut Vec<u8>, name: &str, attrs: &[(u16, Vec<u8>)]) {
    let elem = nest_start(buf, NFTA_LIST_ELEM);
    attr(buf, NFTA_EXPR_NAME, &cstr(name));
    let data = nest_start(buf, NFTA_EXPR_DATA);
    for (kind, value) in attrs {
        attr(buf, *kind, value);
    }
    nest_end(buf, data);
    nest_end(buf, elem);
}

/// `cmp eq reg 1 <value>`.
fn cmp_eq(buf: &mut Vec<u8>, value: &[u8]) {
    let elem = nest_start(buf, NFTA_LIST_ELEM);
    attr(buf, NFTA_EXPR_NAME, &cstr("cmp"));
    let data = nest_start(buf, NFTA_EXPR_DATA);
    attr(buf, 1, &be32(NFT_REG_1)); // NFTA_CMP_SREG
    attr(buf, 2, &be32(0)); // NFTA_CMP_OP: NFT_CMP_EQ
    let d = nest_start(buf, 3); // NFTA_CMP_DATA
    attr(buf, NFTA_DATA_VALUE, value);
    nest_end(buf, d);
    nest_end(buf, data);
    nest_end(buf, elem);
}

/// `immediate reg <reg> <value>`.
fn immediate(buf: &mut Vec<u8>, reg: u32, value: &[u8]) {
    let elem = nest_start(buf, NFTA_LIST_ELEM);
    attr(buf, NFTA_EXPR_NAME, &cstr("immediate"));
    let data = nest_start(buf, NFTA_EXPR_DATA);
    attr(buf, 1, &be32(reg)); // NFTA_IMMEDIATE_DREG
    let d = nest_start(buf, 2); // NFTA_IMMEDIATE_DATA
    attr(buf, NFTA_DATA_VALUE, value);
    nest_end(buf, d);
    nest_end(buf, data);
    nest_end(buf, elem);
}
