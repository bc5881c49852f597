//! Value syntaxes used in spec files: sizes, durations, bandwidth rates, signals, port mappings,
//! cpuset lists, hostnames and capability names. Pure string parsing; each function returns the
//! converted value or a message saying what is wrong (the caller adds file, line and column).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::types::{PortMapping, Protocol};

/// Parses a size such as `64K`, `256M`, `2G`, `1T`, with an optional `B` or `iB` suffix
/// (`256MB`, `256MiB`), or a plain number of bytes (`1048576`, `1024B`). Units are base 1024 and
/// case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a number followed by K, M, G or T (e.g. \"256M\")"
        ));
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use K, M, G or T, e.g. \"256M\")"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Parses a humantime duration such as `250ms`, `10s`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. \"250ms\", \"10s\", \"1m\")"))
}

/// Parses a bandwidth rate as tc writes it and returns bits per second: `bit`, `kbit`, `mbit`,
/// `gbit`, `tbit` (decimal), `kibit`.. `tibit` (binary), and the same with `bps` for bytes per
/// second (`2mbps` = 16 Mbit/s). A number without unit is bits per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let value: f64 = match num.parse() {
        Ok(v) if !num.starts_with('.') && !num.ends_with('.') => v,
        _ => {
            return Err(format!(
                "invalid rate {s:?}: expected a number followed by a unit such as kbit, mbit, gbit \
                 or mbps"
            ))
        }
    };
    let unit_lc = unit.to_ascii_lowercase();
    let (prefix, bytes) = if let Some(p) = unit_lc.strip_suffix("bit") {
        (p, false)
    } else if let Some(p) = unit_lc.strip_suffix("bps") {
        (p, true)
    } else if unit_lc.is_empty() {
        ("", false)
    } else {
        return Err(format!(
            "invalid rate {s:?}: unknown unit {unit:?} (use bit, kbit, mbit, gbit, tbit, or bps, \
             kbps, mbps, gbps for bytes per second)"
        ));
    };
    let mult: f64 = match prefix {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "invalid rate {s:?}: unknown unit {unit:?} (use bit, kbit, mbit, gbit, tbit, or \
                 bps, kbps, mbps, gbps for bytes per second)"
            ))
        }
    };
    let bits = value * mult * if bytes { 8.0 } else { 1.0 };
    if !bits.is_finite() || bits >= u64::MAX as f64 {
        return Err(format!("invalid rate {s:?}: too large"));
    }
    let bits = bits.round() as u64;
    if bits == 0 {
        return Err(format!("rate {s:?} must be greater than 0"));
    }
    Ok(bits)
}

/// Parses a signal name (`SIGTERM`, `TERM`, case-insensitive) or number (`15`) into its number.
/// Numbers must be in 1..=64.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return match t.parse::<i128>() {
            Ok(n) => signal_number(n),
            Err(_) => Err(format!("signal number {t} is out of range 1..=64")),
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match name.parse::<nix::sys::signal::Signal>() {
        Ok(sig) => Ok(sig as i32),
        Err(_) => Err(format!(
            "unknown signal {s:?} (use a name such as \"SIGTERM\" or \"TERM\", or a number 1..=64)"
        )),
    }
}

/// Checks a signal number is in 1..=64.
pub fn signal_number(n: i128) -> Result<i32, String> {
    if (1..=64).contains(&n) {
        Ok(n as i32)
    } else {
        Err(format!("signal number {n} is out of range 1..=64"))
    }
}

/// The most ports one range (`8000-8999:8000-8999`) may publish.
pub const MAX_PORT_RANGE: u32 = 1024;

/// Parses `[ADDR:]HOST:CONTAINER[/tcp|/udp]` (protocol defaults to tcp; every host address
/// without ADDR), where HOST and CONTAINER may be ranges of the same length (`8000-8010`).
pub fn parse_ports(s: &str) -> Result<Vec<PortMapping>, String> {
    let (body, suffix) = match s.split_once('/') {
        Some((b, proto)) => (b, format!("/{proto}")),
        None => (s, String::new()),
    };
    let (host_ip, rest) = match body.matches(':').count() {
        2 => {
            let (addr, rest) = body.split_once(':').expect("two colons");
            let ip: Ipv4Addr = addr.parse().map_err(|_| {
                format!("invalid port mapping {s:?}: {addr:?} is not an IPv4 address of this host")
            })?;
            (Some(ip), rest)
        }
        _ => (None, body),
    };
    let Some((host, container)) = rest.split_once(':') else {
        return Err(format!(
            "invalid port mapping {s:?}: expected \"[ADDR:]HOST:CONTAINER[/tcp|udp]\", e.g. \"8080:80\""
        ));
    };
    let range = |r: &str| -> Option<(u32, u32)> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (Some((h0, h1)), Some((c0, c1))) = (range(host), range(container)) else {
        // One port: its own message names what is wrong.
        let mut p = parse_port(&format!("{rest}{suffix}"))
            .map_err(|e| e.replace(&format!("{rest}{suffix}"), s))?;
        p.host_ip = host_ip;
        return Ok(vec![p]);
    };
    if h0 > h1 || c0 > c1 || h1 - h0 != c1 - c0 {
        return Err(format!(
            "invalid port mapping {s:?}: the host and container ranges must run upwards and be \
             the same length"
        ));
    }
    if h1 - h0 >= MAX_PORT_RANGE {
        return Err(format!(
            "invalid port mapping {s:?}: a range publishes at most {MAX_PORT_RANGE} ports"
        ));
    }
    (0..=h1 - h0)
        .map(|i| {
            let mut p = parse_port(&format!("{}:{}{suffix}", h0 + i, c0 + i))
                .map_err(|e| format!("invalid port mapping {s:?}: {e}"))?;
            p.host_ip = host_ip;
            Ok(p)
        })
        .collect()
}

/// Parses `HOST:CONTAINER[/tcp|/udp]` (protocol defaults to tcp).
pub fn parse_port(s: &str) -> Result<PortMapping, String> {
    let (ports, protocol) = match s.split_once('/') {
        Some((p, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => {
                    return Err(format!(
                        "invalid port mapping {s:?}: unknown protocol {proto:?} (use tcp or udp)"
                    ))
                }
            };
            (p, protocol)
        }
        None => (s, Protocol::Tcp),
    };
    let Some((host, container)) = ports.split_once(':') else {
        return Err(format!(
            "invalid port mapping {s:?}: expected \"HOST:CONTAINER[/tcp|udp]\", e.g. \"8080:80\""
        ));
    };
    let port = |p: &str, which: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!(
                "invalid port mapping {s:?}: {which} port {n} is out of range 1..=65535"
            )),
            Err(_) => Err(format!(
                "invalid port mapping {s:?}: {which} port {p:?} is not a number (expected \
                 \"HOST:CONTAINER[/tcp|udp]\")"
            )),
        }
    };
    Ok(PortMapping {
        host_ip: None,
        host_port: port(host, "host")?,
        container_port: port(container, "container")?,
        protocol,
    })
}

/// Checks a cpuset list such as `0-1,3` (syntax only: numbers, ranges with start <= end).
pub fn check_cpuset(s: &str) -> Result<Vec<(u32, u32)>, String> {
    if s.is_empty() {
        return Err("cpuset is empty (expected a list such as \"0-1,3\")".into());
    }
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "invalid cpuset {s:?}: {part:?} is not a CPU number or range (expected a list \
                     such as \"0-1,3\")"
                ));
            }
            p.parse()
                .map_err(|_| format!("invalid cpuset {s:?}: {p:?} is too large"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!(
                        "invalid cpuset {s:?}: range {part:?} has its start after its end"
                    ));
                }
                ranges.push((a, b));
            }
            None => {
                let n = num(part)?;
                ranges.push((n, n));
            }
        }
    }
    Ok(ranges)
}

/// The first CPU of `wanted` (ranges of [`check_cpuset`]) that is not in `online` (the same
/// format, as /sys/devices/system/cpu/online lists it).
pub fn cpu_not_online(wanted: &[(u32, u32)], online: &[(u32, u32)]) -> Option<u32> {
    wanted
        .iter()
        .flat_map(|&(a, b)| a..=b)
        .find(|cpu| !online.iter().any(|&(a, b)| (a..=b).contains(cpu)))
}

/// Checks a hostname: RFC 1123 labels (letters, digits, `-`, not starting or ending with `-`,
/// 1..=63 characters each) separated by dots, 253 characters at most.
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("hostname is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("hostname {s:?} is longer than 253 characters"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(format!("hostname {s:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "hostname {s:?}: label {label:?} is longer than 63 characters"
            ));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "hostname {s:?}: label {label:?} may only contain letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "hostname {s:?}: label {label:?} must not start or end with '-'"
            ));
        }
    }
    Ok(())
}

/// Normalizes a capability name: `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` all give
/// `NET_ADMIN`. Unknown names are an error.
pub fn parse_capability(s: &str) -> Result<String, String> {
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        // As Docker: `cap_drop = ["ALL"]` then `cap_add` what is needed.
        return Ok(bare.to_string());
    }
    match format!("CAP_{bare}").parse::<caps::Capability>() {
        Ok(_) => Ok(bare.to_string()),
        Err(_) => Err(format!("unknown capability {s:?}")),
    }
}

/// Checks a container name (the file stem): `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`.
pub fn check_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_first && ok_rest && s.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "invalid container name {s:?} (the file name without .toml): it must start with a \
             letter or digit, contain only letters, digits, '_', '.' and '-', and be at most 63 \
             characters"
        ))
    }
}

/// Levenshtein distance, for "did you mean" hints on short key names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("64K", Some(64 << 10)),
            ("256M", Some(256 << 20)),
            ("256m", Some(256 << 20)),
            ("256MB", Some(256 << 20)),
            ("256MiB", Some(256 << 20)),
            ("2G", Some(2 << 30)),
            ("1T", Some(1 << 40)),
            ("1048576", Some(1 << 20)),
            ("1024B", Some(1024)),
            ("", None),
            ("M", None),
            ("1.5G", None),
            ("12X", None),
            ("-1M", None),
            ("99999999999T", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn rates() {
        let cases: &[(&str, Option<u64>)] = &[
            ("10mbit", Some(10_000_000)),
            ("500kbit", Some(500_000)),
            ("1gbit", Some(1_000_000_000)),
            ("2mbps", Some(16_000_000)),
            ("1.5mbit", Some(1_500_000)),
            ("1kibit", Some(1024)),
            ("800", Some(800)),
            ("10MBit", Some(10_000_000)),
            ("0mbit", None),
            ("10mb", None),
            ("fast", None),
            (".5mbit", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rate(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn signals() {
        let cases: &[(&str, Option<i32>)] = &[
            ("SIGTERM", Some(15)),
            ("TERM", Some(15)),
            ("sigint", Some(2)),
            ("SIGKILL", Some(9)),
            ("15", Some(15)),
            ("64", Some(64)),
            ("0", None),
            ("65", None),
            ("SIGNOPE", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_signal(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn ports() {
        let p = parse_port("8080:80/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8080, 80, Protocol::Udp)
        );
        assert_eq!(parse_port("53:53").unwrap().protocol, Protocol::Tcp);
        for bad in [
            "80",
            "0:80",
            "80:70000",
            "a:80",
            "80:80/sctp",
            ":80",
            "1:2:3",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_addresses_and_ranges() {
        let one = parse_ports("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            one,
            [PortMapping {
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Udp
            }]
        );
        let r = parse_ports("8000-8002:9000-9002").unwrap();
        let pairs: Vec<(u16, u16)> = r.iter().map(|p| (p.host_port, p.container_port)).collect();
        assert_eq!(pairs, [(8000, 9000), (8001, 9001), (8002, 9002)]);
        assert_eq!(parse_ports("10.0.0.1:53-54:53-54/udp").unwrap().len(), 2);
        let errors = [
            ("localhost:80:80", "\"localhost\" is not an IPv4 address"),
            ("8000-8002:9000", "the same length"),
            ("8002-8000:9002-9000", "run upwards"),
            ("1-2000:1-2000", "at most 1024"),
            ("1.2.3.4:0:80", "host port 0 is out of range"),
            ("1-2:0-1", "container port 0 is out of range"),
        ];
        for (bad, want) in errors {
            let e = parse_ports(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let all = parse_ports("80:80").unwrap()[0];
        let lo = one[0];
        let lo_tcp = parse_ports("127.0.0.1:80:1").unwrap()[0];
        let other = parse_ports("127.0.0.2:80:1").unwrap()[0];
        assert!(all.overlaps(&lo_tcp) && lo_tcp.overlaps(&all));
        assert!(!lo_tcp.overlaps(&other), "different addresses");
        assert!(!lo.overlaps(&lo_tcp), "udp and tcp");
        assert_eq!(lo.host_side(), "127.0.0.1:8080/udp");
        assert_eq!(all.host_side(), "80/tcp");
    }

    #[test]
    fn cpusets() {
        for good in ["0", "0-1", "0-1,3", "0,2,4-7"] {
            assert!(check_cpuset(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "1-", "-1", "3-1", "0,,1", "0 - 1", "1,"] {
            assert!(check_cpuset(bad).is_err(), "{bad}");
        }
        assert_eq!(check_cpuset("0,2,4-7"), Ok(vec![(0, 0), (2, 2), (4, 7)]));
        let online = [(0, 1)];
        let cases: &[(&str, Option<u32>)] = &[
            ("0", None),
            ("0-1", None),
            ("1,0", None),
            ("0-7", Some(2)),
            ("3", Some(3)),
            ("0,5-6", Some(5)),
        ];
        for (set, want) in cases {
            let wanted = check_cpuset(set).unwrap();
            assert_eq!(cpu_not_online(&wanted, &online), *want, "{set}");
        }
    }

    #[test]
    fn hostnames() {
        for good in ["web", "web-1", "a.b.c", &"a".repeat(63)] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-web", "web-", "we_b", "a..b", &"a".repeat(64), "web."] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities() {
        assert_eq!(parse_capability("NET_ADMIN").unwrap(), "NET_ADMIN");
        assert_eq!(parse_capability("CAP_NET_ADMIN").unwrap(), "NET_ADMIN");
        assert_eq!(parse_capability("sys_time").unwrap(), "SYS_TIME");
        assert!(parse_capability("NET_ADMINN").is_err());
        assert_eq!(parse_capability("all").unwrap(), "ALL");
    }

    #[test]
    fn names() {
        for good in ["web", "web.prod", "a_b-c", "0", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".web", "-web", "we b", "wéb", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("memroy", "memory"), 2);
        assert_eq!(edit_distance("image", "image"), 0);
        assert_eq!(edit_distance("imag", "image"), 1);
    }
}
