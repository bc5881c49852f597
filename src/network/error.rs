//! The network module's error type: each variant names the failed step and the object it
//! failed on (link, address, netns path, port, lease file).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network config: {what} {value:?}: {reason}")]
    InvalidConfig {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("subnet {subnet} overlaps the host route {route} on {dev}")]
    SubnetOverlap {
        subnet: String,
        route: String,
        dev: String,
    },

    #[error("address {ip} for {name:?} is outside the bridge subnet {subnet} or reserved")]
    IpOutsideSubnet {
        name: String,
        ip: Ipv4Addr,
        subnet: String,
    },

    #[error("address {ip} for {name:?} is already taken by {holder:?}")]
    IpTaken {
        name: String,
        ip: Ipv4Addr,
        holder: String,
    },

    #[error("no free address left in {subnet} for {name:?}")]
    PoolExhausted { name: String, subnet: String },

    #[error("host port {port}/{protocol} for {id:?} is not available: {reason}")]
    PortInUse {
        id: String,
        port: u16,
        protocol: &'static str,
        reason: String,
    },

    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("lease file {path}: {source}")]
    LeaseFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("network namespace {path}: {step}: {source}")]
    Netns {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("netlink: {step} {object}: {source}")]
    Netlink {
        step: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    #[error("nftables: {step}: {detail}")]
    Nft { step: String, detail: String },

    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl NetworkError {
    pub(crate) fn netlink(
        step: &'static str,
        object: impl Into<String>,
        source: io::Error,
    ) -> Self {
        NetworkError::Netlink {
            step,
            object: object.into(),
            source,
        }
    }
}

/// The errors of a teardown that kept going past each failure.
#[derive(Debug, Default)]
pub struct NetworkErrors(pub Vec<NetworkError>);

impl fmt::Display for NetworkErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} network teardown error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetworkErrors {}
