//! berth's nftables rules, all in the table `ip berth` of the bridge's network namespace: the
//! table, its chains and the bridge-wide rules through the `nft` tool (once per bridge), each
//! container's port rules over nfnetlink (`nfnetlink.rs`: no process per container).
//!
//! Every rule carries a comment that says who owns it:
//! - `berth bridge=<bridge> <what>`: the bridge-wide NAT rules (masquerade, localhost, hairpin);
//! - `berth id=<container id> port=<proto>/<host port>`: one DNAT rule per published port, in
//!   both `prerouting` (traffic from elsewhere) and `output` (traffic from the host itself).
//!
//! Before adding, the table is listed and rules with the same owner are deleted by handle in the
//! same atomic transaction, so a restart never duplicates them. Nothing outside this table is
//! touched.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use super::addr::Subnet;
use super::error::NetworkError;
use super::netns;
use super::nfnetlink::{self, Transaction};
use super::PortMapping;

pub(crate) const TABLE: &str = "berth";

/// One rule of berth's table, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: String,
    pub handle: u64,
    pub comment: String,
}

pub(crate) fn id_tag(id: &str) -> String {
    format!("berth id={id} ")
}

fn port_tag(id: &str, p: &PortMapping) -> String {
    match p.host_ip {
        Some(ip) => format!(
            "berth id={id} port={}/{ip}:{}",
            p.protocol.as_str(),
            p.host_port
        ),
        None => format!("berth id={id} port={}/{}", p.protocol.as_str(), p.host_port),
    }
}

/// The host side a port rule's comment names (`port=tcp/8080`, `port=tcp/127.0.0.1:8080`).
fn tagged_port(comment: &str) -> Option<PortMapping> {
    let tag = comment
        .rsplit(" port=")
        .next()
        .filter(|_| comment.contains(" port="))?;
    let (proto, rest) = tag.split_once('/')?;
    let protocol = match proto {
        "tcp" => super::Protocol::Tcp,
        "udp" => super::Protocol::Udp,
        _ => return None,
    };
    let (host_ip, port) = match rest.rsplit_once(':') {
        Some((ip, port)) => (Some(ip.parse().ok()?), port),
        None => (None, rest),
    };
    Some(PortMapping {
        host_ip,
        host_port: port.parse().ok()?,
        container_port: 0,
        protocol,
    })
}

fn nft_err(step: impl Into<String>) -> impl FnOnce(String) -> NetworkError {
    let step = step.into();
    move |detail| NetworkError::Nft { step, detail }
}

/// Runs `nft ARGS` (with `script` on stdin) in `netns`; Ok(stdout) or Err(stderr).
fn run(
    netns: Option<&Path>,
    args: &[&str],
    script: Option<&str>,
) -> Result<Result<String, String>, NetworkError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let script = script.map(str::to_string);
    netns::run_in(netns, move || {
        let mut cmd = Command::new("nft");
        cmd.args(&args);
        match crate::sys::children::output(&mut cmd, script.as_deref().map(str::as_bytes), None) {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => Err(format!(
                "nft {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("running nft: {e}")),
        }
    })
}

/// Applies an nft script atomically.
fn apply(netns: Option<&Path>, step: &str, script: &str) -> Result<(), NetworkError> {
    run(netns, &["-f", "-"], Some(script))?
        .map(|_| ())
        .map_err(|e| nft_err(step)(format!("{e}\nscript:\n{script}")))
}

/// Removes the rules of bridge `bridge`, and the whole table when no rule of anyone else is
/// left in it (a daemon's clean exit). Rules of containers are never touched: with any left,
/// the table stays.
pub(crate) fn remove_base(netns: Option<&Path>, bridge: &str) -> Result<(), NetworkError> {
    let existing = rules(netns)?;
    let mine = format!("berth bridge={bridge} ");
    let (ours, others): (Vec<&Rule>, Vec<&Rule>) =
        existing.iter().partition(|r| r.comment.starts_with(&mine));
    let script = if others.is_empty() {
        if existing.is_empty() && run(netns, &["list", "table", "ip", TABLE], None)?.is_err() {
            return Ok(());
        }
        format!("delete table ip {TABLE}\n")
    } else if ours.is_empty() {
        return Ok(());
    } else {
        delete_lines(&ours)
    };
    apply(
        netns,
        &format!("removing the NAT rules of bridge {bridge}"),
        &script,
    )
}

/// Every rule in berth's table (none if the table does not exist). Read over nfnetlink (no
/// process to spawn); falls back to `nft -j` if that fails.
pub(crate) fn rules(netns: Option<&Path>) -> Result<Vec<Rule>, NetworkError> {
    if let Ok(Ok(rules)) = netns::run_in(netns, || nfnetlink::dump_rules(TABLE)) {
        return Ok(rules);
    }
    rules_via_nft(netns)
}

pub(crate) fn rules_via_nft(netns: Option<&Path>) -> Result<Vec<Rule>, NetworkError> {
    let out = match run(netns, &["-j", "-a", "list", "table", "ip", TABLE], None)? {
        Ok(out) => out,
        Err(e) if e.contains("No such file or directory") => return Ok(Vec::new()),
        Err(e) => return Err(nft_err("listing the table ip berth")(e)),
    };
    parse_rules(&out).map_err(nft_err("parsing the listing of table ip berth"))
}

fn parse_rules(json: &str) -> Result<Vec<Rule>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("no \"nftables\" array")?;
    Ok(items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter_map(|r| {
            Some(Rule {
                chain: r.get("chain")?.as_str()?.to_string(),
                handle: r.get("handle")?.as_u64()?,
                comment: r
                    .get("comment")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect())
}

fn delete_lines(rules: &[&Rule]) -> String {
    rules
        .iter()
        .map(|r| format!("delete rule ip {TABLE} {} handle {}\n", r.chain, r.handle))
        .collect()
}

/// Creates the table and its NAT chains if missing, and makes the bridge-wide rules match the
/// config: masquerade of traffic leaving `subnet` (when `masquerade`), masquerade of
/// localhost-originated traffic DNATed onto the bridge, and of hairpin traffic from the bridge
/// back onto it.
pub(crate) fn ensure_base(
    netns: Option<&Path>,
    bridge: &str,
    subnet: &Subnet,
    masquerade: bool,
) -> Result<(), NetworkError> {
    let existing = rules(netns)?;
    let tag = |what: &str| format!("berth bridge={bridge} {what}");
    let mut wanted = vec![
        (
            tag("localhost"),
            format!("oifname \"{bridge}\" ip saddr 127.0.0.0/8 masquerade"),
        ),
        (
            tag("hairpin"),
            format!("oifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade"),
        ),
    ];
    if masquerade {
        wanted.push((
            tag("masquerade"),
            format!("ip saddr {subnet} ip daddr != {subnet} masquerade"),
        ));
    }
    let mut script = format!(
        "table ip {TABLE} {{\n\
         \tchain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         \tchain output {{ type nat hook output priority -100; policy accept; }}\n\
         \tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         }}\n"
    );
    let prefix = tag("");
    // Bridge rules that are no longer wanted, or duplicated, go.
    let mut seen = std::collections::HashSet::new();
    let stale: Vec<&Rule> = existing
        .iter()
        .filter(|r| r.comment.starts_with(&prefix))
        .filter(|r| {
            r.chain != "postrouting"
                || !wanted.iter().any(|(c, _)| *c == r.comment)
                || !seen.insert(r.comment.clone())
        })
        .collect();
    script.push_str(&delete_lines(&stale));
    let mut changed = !stale.is_empty();
    for (comment, rule) in &wanted {
        if !seen.contains(comment) {
            script.push_str(&format!(
                "add rule ip {TABLE} postrouting {rule} comment \"{comment}\"\n"
            ));
            changed = true;
        }
    }
    if changed || existing.is_empty() {
        apply(
            netns,
            &format!("setting up the NAT rules of bridge {bridge}"),
            &script,
        )?;
    }
    Ok(())
}

/// The host ports already published by other containers, as (protocol, port, owner comment).
pub(crate) fn published_elsewhere(rules: &[Rule], id: &str, p: &PortMapping) -> Option<String> {
    let own = id_tag(id);
    rules
        .iter()
        .find(|r| {
            r.comment.starts_with("berth id=")
                && !r.comment.starts_with(&own)
                && tagged_port(&r.comment).is_some_and(|q| q.overlaps(p))
        })
        .map(|r| r.comment.clone())
}

/// Replaces the port rules of container `id` with DNATs of `ports` to `ip`, in one transaction
/// (over nfnetlink: no process to spawn).
pub(crate) fn publish(
    netns: Option<&Path>,
    id: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<(), NetworkError> {
    let mut tx = deleting_rules_of(netns, id)?;
    for p in ports {
        let comment = port_tag(id, p);
        for chain in ["prerouting", "output"] {
            tx.add_dnat(
                chain,
                p.protocol,
                p.host_ip,
                p.host_port,
                ip,
                p.container_port,
                &comment,
            );
        }
    }
    commit(netns, tx, &format!("publishing the ports of {id}"))
}

/// Deletes every rule of container `id`.
pub(crate) fn unpublish(netns: Option<&Path>, id: &str) -> Result<(), NetworkError> {
    let tx = deleting_rules_of(netns, id)?;
    commit(netns, tx, &format!("deleting the port rules of {id}"))
}

/// A transaction that starts by deleting every rule container `id` has now.
fn deleting_rules_of(netns: Option<&Path>, id: &str) -> Result<Transaction, NetworkError> {
    let own = id_tag(id);
    let mut tx = Transaction::new(TABLE);
    for r in rules(netns)?.iter().filter(|r| r.comment.starts_with(&own)) {
        tx.delete_rule(&r.chain, r.handle);
    }
    Ok(tx)
}

fn commit(netns: Option<&Path>, tx: Transaction, step: &str) -> Result<(), NetworkError> {
    if tx.is_empty() {
        return Ok(());
    }
    netns::run_in(netns, move || tx.commit())?.map_err(|e| nft_err(step)(format!("nfnetlink: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::Protocol;
    use super::*;

    #[test]
    fn parses_listing_and_finds_conflicts() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "berth", "handle": 3}},
            {"chain": {"family": "ip", "table": "berth", "name": "prerouting", "handle": 1}},
            {"rule": {"family": "ip", "table": "berth", "chain": "prerouting", "handle": 7,
                      "comment": "berth id=web-1 port=tcp/8080", "expr": []}},
            {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 9,
                      "expr": []}}]}"#;
        let rules = parse_rules(json).unwrap();
        assert_eq!(
            rules[0],
            Rule {
                chain: "prerouting".into(),
                handle: 7,
                comment: "berth id=web-1 port=tcp/8080".into()
            }
        );
        assert_eq!(rules[1].comment, "");
        let p = PortMapping {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert!(published_elsewhere(&rules, "db-2", &p).is_some());
        assert!(published_elsewhere(&rules, "web-1", &p).is_none());
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..p
        };
        assert!(published_elsewhere(&rules, "db-2", &udp).is_none());
        // An id that is a prefix of another does not own its rules.
        assert!(published_elsewhere(&rules, "web", &p).is_some());
    }
}
