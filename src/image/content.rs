//! The content store: blobs by digest and image records, under the store root.
//!
//! - `blobs/sha256/<hex>`: a manifest, config or compressed layer blob. Written to
//!   `tmp/blob-<pid>-<n>` while it is hashed, verified by digest and size, fsynced, then renamed.
//! - `images/<key>.json`: one [`ImageRecord`] per image name (`registry/repo:tag`,
//!   `registry/repo@sha256:...` or the `oci-archive:`/`docker-archive:` reference it was imported
//!   from), written atomically (temp file, fsync, rename). `<key>` is a hash of the name.
//! - `lock`: shared by pulls and resolves, exclusive for prune, so prune never removes what a
//!   pull is about to record.
//!
//! Owns those paths only; layers are the store's (`store.rs`).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ImageConfig, ImageError};

static BLOB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One layer of a recorded image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as distributed (compressed).
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: String,
}

/// One entry of the config's `history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

/// Identity of an archive file an image was imported from, so a changed file is re-imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl SourceStamp {
    pub fn of(path: &Path) -> io::Result<SourceStamp> {
        let m = fs::metadata(path)?;
        Ok(SourceStamp {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// What the store knows about one named image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The name it is found by (see the module docs).
    pub name: String,
    /// The manifest digest (`sha256:...`).
    pub digest: String,
    pub config_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    /// Chain IDs of the layers, lowest first (the names of their dirs under `layers/`).
    pub chain_ids: Vec<String>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub history: Vec<HistoryRecord>,
    /// Seconds since the epoch when the record was written.
    pub recorded_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStamp>,
}

impl ImageRecord {
    /// Sum of the layer blob sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// The error for a blob of `rec` that the store lacks, met while `step` (e.g. "saving").
pub(crate) fn missing_blob(rec: &ImageRecord, digest: &str, step: &'static str) -> ImageError {
    ImageError::Record {
        step,
        path: PathBuf::from(&rec.name),
        message: format!("blob {digest} is not in the store (pull the image again)"),
    }
}

/// `sha256:<hex>` -> `<hex>` when well formed (64 lower-case hex digits).
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// Blobs and records under a store root.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    blobs: PathBuf,
    images: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
}

/// A blob being written: bytes go to a temp file and through the hasher.
pub(crate) struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    count: u64,
    done: bool,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn store_err(step: &'static str, path: &Path, source: io::Error) -> ImageError {
    ImageError::Store {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// A held store lock; released on drop.
pub(crate) struct StoreLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl Content {
    pub(crate) fn new(root: &Path) -> Content {
        Content {
            blobs: root.join("blobs").join("sha256"),
            images: root.join("images"),
            tmp: root.join("tmp"),
            lock: root.join("lock"),
        }
    }

    pub(crate) fn dirs(&self) -> [&Path; 2] {
        [&self.blobs, &self.images]
    }

    /// Takes the store lock, shared (pull, resolve) or exclusive (prune).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<StoreLock, ImageError> {
        use nix::fcntl::{Flock, FlockArg};
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)
            .map_err(|e| store_err("opening", &self.lock, e))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg)
            .map(StoreLock)
            .map_err(|(_, e)| store_err("locking", &self.lock, e.into()))
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|h| self.blobs.join(h))
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest)
            .is_some_and(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Starts writing a blob into a temp file.
    pub(crate) fn blob_writer(&self) -> Result<BlobWriter, ImageError> {
        let n = BLOB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("blob-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| store_err("creating", &path, e))?;
        Ok(BlobWriter {
            file,
            path,
            hasher: Sha256::new(),
            count: 0,
            done: false,
        })
    }

    /// Checks the written bytes against `digest` and `size`, fsyncs and renames the blob into
    /// place. On a mismatch the temp file is removed and the problem returned as text.
    pub(crate) fn commit_blob(
        &self,
        mut w: BlobWriter,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Result<(), String>, ImageError> {
        if let Some(size) = size {
            if w.count != size {
                return Ok(Err(format!("got {} bytes, expected {size}", w.count)));
            }
        }
        let actual = format!("sha256:{}", hex::encode(w.hasher.clone().finalize()));
        if actual != digest {
            return Ok(Err(format!("content hashes to {actual}")));
        }
        let Some(target) = self.blob_path(digest) else {
            return Ok(Err(format!("invalid digest {digest:?}")));
        };
        w.file
            .sync_all()
            .map_err(|e| store_err("syncing", &w.path, e))?;
        fs::rename(&w.path, &target).map_err(|e| store_err("renaming blob into", &target, e))?;
        w.done = true;
        Ok(Ok(()))
    }

    /// Stores a small blob held in memory (its digest is computed).
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(|e| store_err("writing", &w.path.clone(), e))?;
        match self.commit_blob(w, &digest, Some(bytes.len() as u64))? {
            Ok(()) => Ok(digest),
            Err(problem) => Err(ImageError::Record {
                step: "storing blob",
                path: self.blobs.clone(),
                message: problem,
            }),
        }
    }

    /// Reads a stored blob, verifying its digest; `None` when absent.
    pub(crate) fn read_blob(&self, digest: &str, cap: u64) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let mut bytes = Vec::new();
        File::open(path)
            .ok()?
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        (bytes.len() as u64 <= cap && actual == digest).then_some(bytes)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(name.as_bytes()));
        self.images.join(format!("{}.json", &h[..40]))
    }

    /// Writes (replacing) the record for `rec.name`: temp file, fsync, rename.
    pub(crate) fn write_record(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let target = self.record_path(&rec.name);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| ImageError::Record {
            step: "encoding",
            path: target.clone(),
            message: e.to_string(),
        })?;
        let mut w = self.blob_writer()?;
        w.write_all(&bytes)
            .map_err(|e| store_err("writing", &w.path.clone(), e))?;
        w.file
            .sync_all()
            .map_err(|e| store_err("syncing", &w.path.clone(), e))?;
        fs::rename(&w.path, &target).map_err(|e| store_err("renaming record into", &target, e))?;
        w.done = true;
        if let Ok(d) = File::open(&self.images) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The record named `name`, if any (an unreadable record counts as absent, with a warning).
    pub(crate) fn record(&self, name: &str) -> Option<ImageRecord> {
        let path = self.record_path(name);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice::<ImageRecord>(&bytes) {
            Ok(r) if r.name == name => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable image record");
                None
            }
        }
    }

    /// Removes the record named `name`; false when there was none.
    pub(crate) fn remove_record(&self, name: &str) -> Result<bool, ImageError> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_err("removing", &path, e)),
        }
    }

    /// Every readable record, sorted by name.
    pub(crate) fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let entries = match fs::read_dir(&self.images) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_err("listing", &self.images, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes every blob not in `keep`; returns (count, bytes) removed.
    pub(crate) fn prune_blobs(&self, keep: &HashSet<String>) -> Result<(usize, u64), ImageError> {
        let entries = match fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(store_err("listing", &self.blobs, e)),
        };
        let (mut n, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if keep.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).map_err(|e| store_err("removing", &entry.path(), e))?;
            n += 1;
            bytes += size;
        }
        Ok((n, bytes))
    }
}
