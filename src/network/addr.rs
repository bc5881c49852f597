//! Pure address arithmetic and naming: subnet masks and ranges, the gateway, MACs derived from
//! IPs, interface names derived from container ids, and validation of names and ids.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use super::error::NetworkError;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The netmask of a prefix length as a host-order integer.
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// A subnet in canonical form (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    /// Checks a configured subnet: prefix 8..=30 and no host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, NetworkError> {
        let invalid = |reason: &str| NetworkError::InvalidConfig {
            what: "subnet",
            value: format!("{network}/{prefix}"),
            reason: reason.to_string(),
        };
        if !(8..=30).contains(&prefix) {
            return Err(invalid("the prefix length must be between 8 and 30"));
        }
        if u32::from(network) & !mask(prefix) != 0 {
            return Err(invalid("host bits are set (give the network address)"));
        }
        Ok(Subnet { network, prefix })
    }

    fn base(&self) -> u32 {
        u32::from(self.network)
    }

    /// The bridge's own address: the first host of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base()
    }

    /// Whether `ip` may be given to a container: inside, and not the network, gateway or
    /// broadcast address.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.gateway() && ip != self.broadcast()
    }

    /// The assignable addresses in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (self.base() + 2..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: Ipv4Addr, other_prefix: u8) -> bool {
        let p = self.prefix.min(other_prefix);
        u32::from(other) & mask(p) == self.base() & mask(p)
    }
}

/// A locally administered unicast MAC carrying the IPv4 address (02:42:a:b:c:d).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The host-side veth name for a container id: `bth` + 8 hex digits of its SHA-256.
pub fn host_veth_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("bth{}", hex::encode(&digest[..4]))
}

/// Checks a bridge name: 1..=15 bytes, no '/', whitespace or ':' (the kernel's rules).
pub fn check_ifname(what: &'static str, name: &str) -> Result<(), NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidConfig {
        what,
        value: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if name.len() > IFNAME_MAX {
        return Err(invalid(format!(
            "is {} bytes long; interface names are at most {IFNAME_MAX}",
            name.len()
        )));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(invalid("must not contain '/', ':' or whitespace".into()));
    }
    Ok(())
}

/// Checks a container id or name used in paths, nftables comments and /etc/hosts:
/// 1..=100 characters from `[A-Za-z0-9_.-]`, not starting with '.' or '-'.
pub fn check_token(what: &'static str, value: &str) -> Result<(), NetworkError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && !value.starts_with(['.', '-'])
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidArgument {
            what,
            value: value.to_string(),
            reason: "use 1 to 100 characters from [A-Za-z0-9_.-], not starting with '.' or '-'"
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let s = Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 24).unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 0, 255));
        assert!(s.is_assignable(Ipv4Addr::new(10, 89, 0, 2)));
        assert!(!s.is_assignable(Ipv4Addr::new(10, 89, 0, 1)));
        assert!(!s.is_assignable(Ipv4Addr::new(10, 89, 0, 255)));
        assert!(!s.is_assignable(Ipv4Addr::new(10, 89, 1, 2)));
        assert_eq!(s.hosts().count(), 253);
        assert_eq!(s.hosts().next(), Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(s.overlaps(Ipv4Addr::new(10, 89, 0, 128), 25));
        assert!(!s.overlaps(Ipv4Addr::new(10, 90, 0, 0), 16));
        assert!(Subnet::new(Ipv4Addr::new(10, 89, 0, 1), 24).is_err());
        assert!(Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 31).is_err());
    }

    #[test]
    fn names() {
        let v = host_veth_name("web-1234");
        assert_eq!(v.len(), 11);
        assert!(v.starts_with("bth"));
        assert_ne!(v, host_veth_name("web-1235"));
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 89, 0, 7)),
            [2, 0x42, 10, 89, 0, 7]
        );
        assert!(check_ifname("bridge", "berth0").is_ok());
        let err = check_ifname("bridge", "a-very-long-bridge").unwrap_err();
        assert!(err.to_string().contains("at most 15"), "{err}");
        assert!(check_ifname("bridge", "").is_err());
        assert!(check_ifname("bridge", "a/b").is_err());
        assert!(check_token("id", "web-abc123").is_ok());
        assert!(check_token("id", "../x").is_err());
        assert!(check_token("id", "a b").is_err());
    }
}
