//! Reading `oci-archive:` (a tarred OCI layout, as `skopeo copy … oci-archive:` writes) and
//! `docker-archive:` (`docker save`, `skopeo copy … docker-archive:`) files without unpacking
//! them: one pass over the tar headers records where each regular member's data lies; members
//! are then read in place. Owns nothing on disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::extract::clean_name;
use super::ImageError;

/// Cap on the number of members an archive may have.
const MAX_MEMBERS: usize = 100_000;

/// Where regular members of a tar file are.
pub(crate) struct TarIndex {
    pub path: PathBuf,
    image: String,
    members: HashMap<String, (u64, u64)>,
}

impl TarIndex {
    /// Indexes `path`. Symlinks and hard links to regular members are followed within the
    /// archive (docker-archive uses them for repeated layers); anything else is ignored.
    pub(crate) fn open(image: &str, path: &Path) -> Result<TarIndex, ImageError> {
        let err = |message: String| ImageError::Archive {
            image: image.into(),
            path: path.into(),
            message,
        };
        let f = File::open(path).map_err(|e| ImageError::Read {
            image: image.into(),
            path: path.into(),
            source: e,
        })?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(err("not a regular file".into()));
        }
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let entries = ar
            .entries_with_seek()
            .map_err(|e| err(format!("not a tar archive: {e}")))?;
        for (i, entry) in entries.enumerate() {
            if i >= MAX_MEMBERS {
                return Err(err(format!("more than {MAX_MEMBERS} members")));
            }
            let entry = entry.map_err(|e| {
                if i == 0 {
                    err("not a tar archive".into())
                } else {
                    err(format!(
                        "corrupt tar archive after {i} members: {}",
                        one_line(&e.to_string())
                    ))
                }
            })?;
            let name = normalize(&entry.path_bytes());
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                            let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            normalize(
                                format!("{dir}/{}", String::from_utf8_lossy(&target)).as_bytes(),
                            )
                        } else {
                            normalize(&target)
                        };
                        links.push((name, target));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            if let Some(v) = members.get(&target).copied() {
                members.entry(name).or_insert(v);
            }
        }
        // A truncated archive: a member's data must lie within the file.
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if let Some((name, _)) = members.iter().find(|(_, (off, size))| off + size > len) {
            return Err(err(format!(
                "truncated: member {name} extends past the end"
            )));
        }
        if members.is_empty() {
            return Err(err("empty or not a tar archive".into()));
        }
        Ok(TarIndex {
            path: path.into(),
            image: image.into(),
            members,
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.members.contains_key(&normalize(name.as_bytes()))
    }

    pub(crate) fn size(&self, name: &str) -> Option<u64> {
        self.members.get(&normalize(name.as_bytes())).map(|m| m.1)
    }

    /// Opens a member for reading.
    pub(crate) fn open_member(&self, name: &str) -> Result<io::Take<File>, ImageError> {
        let &(off, size) = self
            .members
            .get(&normalize(name.as_bytes()))
            .ok_or_else(|| ImageError::Archive {
                image: self.image.clone(),
                path: self.path.clone(),
                message: format!("no member {name:?}"),
            })?;
        let read_err = |e| ImageError::Read {
            image: self.image.clone(),
            path: self.path.clone(),
            source: e,
        };
        let mut f = File::open(&self.path).map_err(read_err)?;
        f.seek(SeekFrom::Start(off)).map_err(read_err)?;
        Ok(f.take(size))
    }

    /// Reads a small member whole, refusing one over `cap` bytes.
    pub(crate) fn read_member(&self, name: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
        if self.size(name).is_some_and(|s| s > cap) {
            return Err(ImageError::TooLarge {
                image: self.image.clone(),
                path: self.path.join(name),
                limit: cap,
            });
        }
        let mut bytes = Vec::new();
        self.open_member(name)?
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Read {
                image: self.image.clone(),
                path: self.path.clone(),
                source: e,
            })?;
        Ok(bytes)
    }
}

/// The first line of `s`, at most 120 characters (tar errors quote raw header bytes).
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

/// Member names without `./`, `..` or leading `/`, joined by `/`.
fn normalize(raw: &[u8]) -> String {
    clean_name(raw)
        .iter()
        .map(|c| String::from_utf8_lossy(c))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_members_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "./x/layer.tar", &b"hello"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "y/layer.tar", "../x/layer.tar")
            .unwrap();
        b.into_inner().unwrap();
        let idx = TarIndex::open("t", &path).unwrap();
        assert_eq!(idx.read_member("x/layer.tar", 10).unwrap(), b"hello");
        assert_eq!(idx.read_member("y/layer.tar", 10).unwrap(), b"hello");
        assert!(idx.read_member("x/layer.tar", 2).is_err());
        assert!(!idx.has("z"));

        // Truncated: cut inside the data of the member.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..515]).unwrap();
        assert!(TarIndex::open("t", &path).is_err());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(TarIndex::open("t", &path).is_err());
    }
}
