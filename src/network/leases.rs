//! IP leases: which container name holds which address on the bridge. Stored in
//! `<root>/network/leases.json`, changed only under an exclusive flock on `leases.lock` and
//! written atomically (temp file, rename).
//!
//! A static lease (the spec gives `ip`) and a dynamic one (allocated) both keep their address
//! for their name until released, so neither is ever handed to another name. Owns only that
//! directory's two files.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::addr::Subnet;
use super::error::NetworkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub ip: Ipv4Addr,
    /// Given by the spec rather than allocated.
    #[serde(rename = "static")]
    pub fixed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    leases: BTreeMap<String, Lease>,
}

/// The lease store under one directory.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    dir: PathBuf,
}

/// The leases, read and locked; changes reach the disk with [`LeaseGuard::save`]. The lock is
/// released on drop.
pub(crate) struct LeaseGuard {
    _lock: Flock<File>,
    path: PathBuf,
    data: LeaseFile,
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::Io { step, path, source }
}

impl Leases {
    pub fn new(dir: PathBuf) -> Leases {
        Leases { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("leases.json")
    }

    /// Takes the exclusive lock (blocking) and reads the current leases.
    pub fn lock(&self) -> Result<LeaseGuard, NetworkError> {
        fs::create_dir_all(&self.dir).map_err(io_err("creating the lease directory", &self.dir))?;
        let lock_path = self.dir.join("leases.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening the lease lock", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("locking", &lock_path)(io::Error::from(e)))?;
        let path = self.path();
        let data = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| NetworkError::LeaseFile {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => LeaseFile::default(),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        Ok(LeaseGuard {
            _lock: lock,
            path,
            data,
        })
    }
}

impl LeaseGuard {
    pub fn get(&self, name: &str) -> Option<Lease> {
        self.data.leases.get(name).copied()
    }

    /// Who else holds `ip`, if anyone.
    fn holder(&self, ip: Ipv4Addr, except: &str) -> Option<&str> {
        self.data
            .leases
            .iter()
            .find(|(n, l)| l.ip == ip && n.as_str() != except)
            .map(|(n, _)| n.as_str())
    }

    /// Decides the address of `name`: the requested static one if free, else the name's
    /// existing lease, else the lowest free address. Records it (in memory).
    pub fn assign(
        &mut self,
        name: &str,
        requested: Option<Ipv4Addr>,
        subnet: &Subnet,
    ) -> Result<Ipv4Addr, NetworkError> {
        if let Some(ip) = requested {
            if !subnet.is_assignable(ip) {
                return Err(NetworkError::IpOutsideSubnet {
                    name: name.to_string(),
                    ip,
                    subnet: subnet.to_string(),
                });
            }
            if let Some(holder) = self.holder(ip, name) {
                return Err(NetworkError::IpTaken {
                    name: name.to_string(),
                    ip,
                    holder: holder.to_string(),
                });
            }
            self.data
                .leases
                .insert(name.to_string(), Lease { ip, fixed: true });
            return Ok(ip);
        }
        if let Some(lease) = self.get(name) {
            if subnet.is_assignable(lease.ip) && self.holder(lease.ip, name).is_none() {
                self.data.leases.insert(
                    name.to_string(),
                    Lease {
                        ip: lease.ip,
                        fixed: false,
                    },
                );
                return Ok(lease.ip);
            }
        }
        let taken: std::collections::HashSet<Ipv4Addr> = self
            .data
            .leases
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, l)| l.ip)
            .collect();
        let ip = subnet
            .hosts()
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NetworkError::PoolExhausted {
                name: name.to_string(),
                subnet: subnet.to_string(),
            })?;
        self.data
            .leases
            .insert(name.to_string(), Lease { ip, fixed: false });
        Ok(ip)
    }

    /// Puts back what `name` held before (None: nothing).
    pub fn restore(&mut self, name: &str, previous: Option<Lease>) {
        match previous {
            Some(l) => {
                self.data.leases.insert(name.to_string(), l);
            }
            None => {
                self.data.leases.remove(name);
            }
        }
    }

    /// Frees the lease of `name` if it still holds `ip`.
    pub fn release(&mut self, name: &str, ip: Ipv4Addr) {
        if self.get(name).is_some_and(|l| l.ip == ip) {
            self.data.leases.remove(name);
        }
    }

    pub fn all(&self) -> Vec<(String, Ipv4Addr)> {
        self.data
            .leases
            .iter()
            .map(|(n, l)| (n.clone(), l.ip))
            .collect()
    }

    /// Writes the leases atomically.
    pub fn save(&self) -> Result<(), NetworkError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".leases.json.tmp.{}", std::process::id()));
        let bytes =
            serde_json::to_vec_pretty(&self.data).map_err(|source| NetworkError::LeaseFile {
                path: self.path.clone(),
                source,
            })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.write_all(b"\n")?;
            // No fsync: the rename alone makes readers (and a restarted daemon) see either
            // the old or the new file, never a torn one.
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("writing", &self.path)(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        Subnet::new(Ipv4Addr::new(10, 1, 2, 0), 29).unwrap()
    }

    #[test]
    fn allocates_keeps_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(dir.path().join("network"));
        let s = subnet();
        {
            let mut g = leases.lock().unwrap();
            assert_eq!(g.assign("a", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 2));
            assert_eq!(g.assign("b", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 3));
            g.save().unwrap();
        }
        let mut g = leases.lock().unwrap();
        // Kept across a reload, and the same for the same name.
        assert_eq!(g.assign("b", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 3));
        // A static address held by another name is refused, naming the holder.
        let err = g
            .assign("c", Some(Ipv4Addr::new(10, 1, 2, 2)), &s)
            .unwrap_err();
        assert!(matches!(err, NetworkError::IpTaken { ref holder, .. } if holder == "a"));
        // Outside the subnet, the gateway and broadcast are refused.
        for ip in [[10, 1, 3, 2], [10, 1, 2, 1], [10, 1, 2, 7]] {
            assert!(matches!(
                g.assign("c", Some(Ipv4Addr::from(ip)), &s),
                Err(NetworkError::IpOutsideSubnet { .. })
            ));
        }
        // A static address is never handed out dynamically.
        assert_eq!(
            g.assign("s", Some(Ipv4Addr::new(10, 1, 2, 4)), &s).unwrap(),
            Ipv4Addr::new(10, 1, 2, 4)
        );
        assert_eq!(g.assign("d", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 5));
        assert_eq!(g.assign("e", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 6));
        assert!(matches!(
            g.assign("f", None, &s),
            Err(NetworkError::PoolExhausted { .. })
        ));
        g.release("a", Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(g.assign("f", None, &s).unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        g.save().unwrap();
        drop(g);
        let names: Vec<String> = leases
            .lock()
            .unwrap()
            .all()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["b", "d", "e", "f", "s"]);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("network"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn lock_excludes_other_threads() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(dir.path().to_path_buf());
        let s = subnet();
        std::thread::scope(|sc| {
            for t in 0..4 {
                let leases = leases.clone();
                sc.spawn(move || {
                    let mut g = leases.lock().unwrap();
                    g.assign(&format!("n{t}"), None, &s).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    g.save().unwrap();
                });
            }
        });
        let mut ips: Vec<Ipv4Addr> = leases
            .lock()
            .unwrap()
            .all()
            .into_iter()
            .map(|(_, ip)| ip)
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 4);
    }
}
