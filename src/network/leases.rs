//! IP leases: which container name holds which address on the bridge. Stored in
//! `<root>/network/leases.json`, changed only under an exclusive flock on `leases.lock` and
//! written so that it is never seen torn (in place while it fits a page, else a temp file and
//! a rename; see [`LeaseGuard::save`]).
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

/// The largest lease file overwritten in place: one page, the most a single write at offset 0
/// copies in one step (a signal can stop a write between pages, never inside one).
const IN_PLACE_MAX: usize = 4096;

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
        let lock_path = self.dir.join("leases.lock");
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        };
        // The directory is made on first use only.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)
                    .map_err(io_err("creating the lease directory", &self.dir))?;
                open()
            }
            other => other,
        }
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

    /// Writes the leases so that a reader (under the lock, after a crash) finds either the
    /// old table or the new one, never a mix. While the file and the table each fit in
    /// [`IN_PLACE_MAX`] bytes, the file is overwritten in place with one write at offset 0
    /// (padded with spaces, which JSON ignores, to the file's length, so nothing needs
    /// truncating): a single write of at most a page is never torn by a signal, and it costs
    /// no new inode, where a temp file and a rename allocate one and free another on every
    /// save. A larger table goes through a temp file and a rename.
    pub fn save(&self) -> Result<(), NetworkError> {
        let mut bytes =
            serde_json::to_vec_pretty(&self.data).map_err(|source| NetworkError::LeaseFile {
                path: self.path.clone(),
                source,
            })?;
        bytes.push(b'\n');
        match self.overwrite_in_place(&mut bytes) {
            Ok(true) => Ok(()),
            Ok(false) => self.replace(&bytes),
            Err(e) => Err(io_err("writing", &self.path)(e)),
        }
    }

    /// Overwrites the file in place if it and `bytes` fit [`IN_PLACE_MAX`]; false (nothing
    /// written) if either does not or the file does not exist yet.
    fn overwrite_in_place(&self, bytes: &mut Vec<u8>) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let file = match OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        if len > IN_PLACE_MAX || bytes.len() > IN_PLACE_MAX {
            return Ok(false);
        }
        bytes.resize(len.max(bytes.len()), b' ');
        match file.write_at(bytes, 0)? {
            n if n == bytes.len() => Ok(true),
            n => Err(io::Error::other(format!(
                "short write in place ({n} of {} bytes)",
                bytes.len()
            ))),
        }
    }

    /// Replaces the file with a temp file and a rename. No fsync: the rename alone makes
    /// readers (and a restarted daemon) see either the old or the new file, never a torn one.
    fn replace(&self, bytes: &[u8]) -> Result<(), NetworkError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".leases.json.tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            File::create(&tmp)?.write_all(bytes)?;
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
    fn lock_makes_the_directory_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(dir.path().join("network"));
        let mut g = leases.lock().unwrap();
        g.assign("a", None, &subnet()).unwrap();
        g.save().unwrap();
        drop(g);
        assert!(leases.lock().unwrap().get("a").is_some());
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

    /// Saves take the in-place path while the file fits a page (same inode, padded, no temp
    /// file) and the temp-file path above it; every save reads back as the table it wrote.
    #[test]
    fn saves_in_place_up_to_a_page_and_replace_above() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(dir.path().join("network"));
        let s = Subnet::new(Ipv4Addr::new(10, 2, 0, 0), 22).unwrap();
        let inode = || fs::metadata(leases.path()).unwrap().ino();
        let size = || fs::metadata(leases.path()).unwrap().len() as usize;
        let names_on_disk = || -> Vec<String> {
            leases
                .lock()
                .unwrap()
                .all()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        let save = |names: &[String]| {
            let mut g = leases.lock().unwrap();
            for (n, _) in g.all() {
                if !names.contains(&n) {
                    let ip = g.get(&n).unwrap().ip;
                    g.release(&n, ip);
                }
            }
            for n in names {
                g.assign(n, None, &s).unwrap();
            }
            g.save().unwrap();
        };
        let names = |k: usize| -> Vec<String> { (0..k).map(|i| format!("c{i:03}")).collect() };

        // The first save makes the file; the next ones, small, overwrite it in place.
        save(&names(3));
        let first = inode();
        save(&names(5));
        let five = size();
        save(&names(1));
        assert_eq!(inode(), first, "a small table is written in place");
        assert_eq!(names_on_disk(), names(1));
        assert_eq!(size(), five, "the file keeps its length");
        let text = fs::read_to_string(leases.path()).unwrap();
        assert!(text.ends_with(' '), "shrunk in place, so padded: {text:?}");

        // A table larger than a page goes through a new file, and so does the next save
        // while the file on disk is still that large.
        save(&names(100));
        assert!(size() > IN_PLACE_MAX);
        assert_ne!(inode(), first);
        assert_eq!(names_on_disk(), names(100));
        let large = inode();
        save(&names(2));
        assert_ne!(inode(), large, "the large file is replaced, not padded");
        assert!(size() <= IN_PLACE_MAX);
        assert_eq!(names_on_disk(), names(2));
        let small = inode();
        save(&names(4));
        assert_eq!(inode(), small);
        assert_eq!(names_on_disk(), names(4));
        let temps = fs::read_dir(dir.path().join("network"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("tmp")
            })
            .count();
        assert_eq!(temps, 0);
    }
}
