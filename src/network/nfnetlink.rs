//! nf_tables transactions over an nfnetlink socket: deleting rules by handle and adding the
//! DNAT rules of published ports, in one atomic batch, without running the `nft` tool.
//!
//! The messages are those `nft` itself sends (`nft --debug=netlink` shows the expressions):
//! `fib daddr type local <proto> dport <port> dnat to <ip>:<port> comment "<comment>"`. This file
//! encodes; what the rules are and which ones to delete is decided in `nft.rs`. A socket is
//! bound to the namespace of the thread that opens it (see `netns::run_in`).

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::Protocol;

// linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h, libnftnl udata.h.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
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

/// One batch of rule changes for table `ip <table>`, sent with [`Transaction::commit`].
pub(crate) struct Transaction {
    table: String,
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the commands, each acknowledged by the kernel.
    commands: Vec<u32>,
}

impl Transaction {
    pub fn new(table: &str) -> Transaction {
        let mut t = Transaction {
            table: table.to_string(),
            buf: Vec::new(),
            seq: 0,
            commands: Vec::new(),
        };
        let at = t.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0);
        t.finish(at);
        t
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Deletes rule `handle` of `chain`.
    pub fn delete_rule(&mut self, chain: &str, handle: u64) {
        let at = self.command(NFT_MSG_DELRULE, 0, chain);
        attr(&mut self.buf, NFTA_RULE_HANDLE, &handle.to_be_bytes());
        self.finish(at);
    }

    /// Appends to `chain`: packets to a local address on `protocol` port `host_port` are
    /// DNATed to `ip`:`container_port`; the rule carries `comment`.
    pub fn add_dnat(
        &mut self,
        chain: &str,
        protocol: Protocol,
        host_port: u16,
        ip: Ipv4Addr,
        container_port: u16,
        comment: &str,
    ) {
        let at = self.command(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, chain);
        let list = nest_start(&mut self.buf, NFTA_RULE_EXPRESSIONS);
        let b = &mut self.buf;
        // fib daddr type => reg 1; cmp eq reg 1 RTN_LOCAL
        expr(
            b,
            "fib",
            &[(1, be32(NFT_REG_1)), (2, be32(3)), (3, be32(2))],
        );
        cmp_eq(b, &2u32.to_ne_bytes());
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
        self.finish(at);
    }

    /// Sends the batch on a socket opened in the calling thread's netns and waits for the
    /// kernel's answer to every command: all of it takes effect, or none (the first error).
    pub fn commit(mut self) -> io::Result<()> {
        if self.commands.is_empty() {
            return Ok(());
        }
        let at = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0);
        self.finish(at);
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.send(&self.buf, 0)?;
        let mut pending = self.commands.clone();
        let bad = || io::Error::other("malformed nfnetlink reply");
        while !pending.is_empty() {
            let (data, _) = sock.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > data.len() {
                    return Err(bad());
                }
                let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(data[off + 8..off + 12].try_into().unwrap());
                let body = &data[off + 16..off + len];
                off += (len + 3) & !3;
                if kind != NLMSG_ERROR {
                    continue;
                }
                if body.len() < 4 {
                    return Err(bad());
                }
                let code = i32::from_ne_bytes(body[..4].try_into().unwrap());
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                pending.retain(|s| *s != seq);
            }
        }
        Ok(())
    }

    /// Starts a command message for a rule of `chain`.
    fn command(&mut self, kind: u16, flags: u16, chain: &str) -> usize {
        let at = self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_IPV4,
        );
        self.commands.push(self.seq);
        let table = self.table.clone();
        attr(&mut self.buf, NFTA_RULE_TABLE, &cstr(&table));
        attr(&mut self.buf, NFTA_RULE_CHAIN, &cstr(chain));
        at
    }

    /// Appends a netlink header (length filled in by `finish`) and the nfgenmsg.
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
