//! `berth commit`: a container's writable layer (an overlayfs upper dir) becomes a new image
//! layer on top of the image the container was started from.
//!
//! The upper dir is read through fds only (`openat` with `O_NOFOLLOW`, `fstatat` with
//! `AT_SYMLINK_NOFOLLOW`); symlinks inside it are recorded, never followed. Overlay whiteouts
//! (0:0 char devices) become `.wh.NAME` entries, opaque dirs get a `.wh..wh..opq` entry, the
//! overlay's own xattrs and entries are left out, and so are the paths berth mounts over
//! (`/proc`, `/sys`, `/dev`, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`).
//!
//! The tar is gzip-compressed into a blob of the content store (digest and size checked), then
//! unpacked from that blob into the layer store like any pulled layer (diff ID checked, temp dir,
//! rename). A new config (the base's, with the diff ID and a history entry appended), a new
//! manifest and an image record named after the commit follow, in that order, so a record never
//! names something that is not there. Owns nothing beyond what [`ImageStore`] owns.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};
use sha2::{Digest, Sha256};

use super::content::{BlobWriter, HistoryRecord, ImageRecord, LayerRecord};
use super::extract::{self, MAX_LAYER_SIZE};
use super::pull::Origin;
use super::store::{chain_ids, describe, run_config, HashReader, MAX_JSON_SIZE};
use super::{ImageError, ImageRef, ImageStore, RegistryRef};
use crate::sys::openat;

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Top-level entries berth mounts over in every container.
const MOUNTED_TOP: &[&[u8]] = &[b"proc", b"sys", b"dev"];
/// Entries of `/etc` berth mounts over.
const MOUNTED_ETC: &[&[u8]] = &[b"hosts", b"hostname", b"resolv.conf"];

/// Xattrs carried into the layer. Only known names: listing a file's xattrs needs a call
/// `sys::openat` does not wrap yet.
const CARRIED_XATTRS: &[&str] = &[
    "security.capability",
    "system.posix_acl_access",
    "system.posix_acl_default",
];
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// Overlay features whose upper-dir form cannot be turned into a plain layer.
const UNSUPPORTED_XATTRS: &[&str] = &["trusted.overlay.redirect", "trusted.overlay.metacopy"];

/// What [`write_layer`] put into the tar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub hardlinks: u64,
    /// Entries left out: berth's mount points, sockets, overlay internals.
    pub skipped: u64,
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn upper_err(step: &'static str, path: &Path, source: io::Error) -> ImageError {
    ImageError::Store {
        step,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Walks an upper dir and appends its entries to a tar builder.
struct Walker<'a, W: Write> {
    builder: tar::Builder<W>,
    upper: &'a Path,
    /// (dev, ino) of regular files with more than one link -> their first path in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: CommitStats,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        let mut p = rel.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

fn os(p: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(p))
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

impl<W: Write> Walker<'_, W> {
    fn err(&self, step: &'static str, rel: &[u8], e: impl Into<io::Error>) -> ImageError {
        upper_err(step, &self.upper.join(os(rel)), e.into())
    }

    fn header(&self, st: &FileStat, entry_type: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(entry_type);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Appends the PAX xattr records for the next entry; `get` reads one xattr of it.
    fn xattrs(
        &mut self,
        rel: &[u8],
        get: impl Fn(&[u8]) -> io::Result<Option<Vec<u8>>>,
    ) -> Result<(), ImageError> {
        for bad in UNSUPPORTED_XATTRS {
            if get(bad.as_bytes())
                .map_err(|e| self.err("reading xattrs of", rel, e))?
                .is_some()
            {
                return Err(ImageError::Record {
                    step: "committing",
                    path: self.upper.join(os(rel)),
                    message: format!("has {bad} (an overlay feature commit does not support)"),
                });
            }
        }
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        for name in CARRIED_XATTRS {
            match get(name.as_bytes()) {
                Ok(Some(v)) => found.push((format!("SCHILY.xattr.{name}"), v)),
                Ok(None) => {}
                // Not supported by this filesystem or this kind of file: nothing to carry.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) => {}
                Err(e) => return Err(self.err("reading xattrs of", rel, e)),
            }
        }
        if !found.is_empty() {
            self.builder
                .append_pax_extensions(found.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.err("writing the layer tar for", rel, e))?;
        }
        Ok(())
    }

    fn append_empty(&mut self, h: &mut tar::Header, path: &[u8]) -> Result<(), ImageError> {
        self.builder
            .append_data(h, os(path), io::empty())
            .map_err(|e| self.err("writing the layer tar for", path, e))
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &[u8]) -> Result<(), ImageError> {
        let mut names: Vec<Vec<u8>> = {
            let dup = dir
                .try_clone_to_owned()
                .map_err(|e| self.err("listing", rel, e))?;
            let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| self.err("listing", rel, e))?;
            let mut names = Vec::new();
            for entry in d.iter() {
                let entry = entry.map_err(|e| self.err("listing", rel, e))?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names
        };
        names.sort();
        for name in names {
            let path = join(rel, &name);
            if (rel.is_empty() && MOUNTED_TOP.contains(&name.as_slice()))
                || (rel == b"etc" && MOUNTED_ETC.contains(&name.as_slice()))
                // Overlay's own entries, and names a layer could only express as whiteouts.
                || name.starts_with(b".wh.")
            {
                self.stats.skipped += 1;
                continue;
            }
            let st = match fstatat(dir, os(&name), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while we walk (the container is running): nothing to record.
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(self.err("inspecting", &path, e)),
            };
            self.entry(dir, rel, &name, &path, &st)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &[u8],
        path: &[u8],
        st: &FileStat,
    ) -> Result<(), ImageError> {
        let lget = |k: &[u8]| openat::lgetxattr_at(dir, os(name), k);
        match kind(st) {
            SFlag::S_IFCHR if st.st_rdev == 0 => {
                let mut h = self.header(st, tar::EntryType::Regular);
                self.append_empty(&mut h, &join(rel, &[b".wh.", name].concat()))?;
                self.stats.whiteouts += 1;
                self.stats.entries += 1;
            }
            SFlag::S_IFDIR => {
                let fd =
                    match openat::open_child(dir, os(name), OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                        Err(e) => return Err(self.err("opening", path, e)),
                    };
                let st = fstat(&fd).map_err(|e| self.err("inspecting", path, e))?;
                self.xattrs(path, |k| openat::fgetxattr(fd.as_fd(), k))?;
                let mut h = self.header(&st, tar::EntryType::Directory);
                self.append_empty(&mut h, path)?;
                self.stats.entries += 1;
                let opaque = openat::fgetxattr(fd.as_fd(), OPAQUE_XATTR)
                    .map_err(|e| self.err("reading xattrs of", path, e))?;
                if opaque.as_deref() == Some(b"y") {
                    let mut h = self.header(&st, tar::EntryType::Regular);
                    h.set_mode(0o644);
                    self.append_empty(&mut h, &join(path, b".wh..wh..opq"))?;
                    self.stats.opaque_dirs += 1;
                    self.stats.entries += 1;
                }
                self.walk(fd.as_fd(), path)?;
            }
            SFlag::S_IFREG => {
                // dev_t and ino_t are not u64 on every target.
                #[allow(clippy::unnecessary_cast)]
                let key = (st.st_dev as u64, st.st_ino as u64);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        let mut h = self.header(st, tar::EntryType::Link);
                        self.builder
                            .append_link(&mut h, os(path), os(&first))
                            .map_err(|e| self.err("writing the layer tar for", path, e))?;
                        self.stats.hardlinks += 1;
                        self.stats.entries += 1;
                        return Ok(());
                    }
                }
                let fd: OwnedFd = match openat::open_child(dir, os(name), OFlag::O_RDONLY) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(self.err("opening", path, e)),
                };
                let st = fstat(&fd).map_err(|e| self.err("inspecting", path, e))?;
                if kind(&st) != SFlag::S_IFREG {
                    // Replaced between the stat and the open: record what is there now.
                    return Ok(());
                }
                self.xattrs(path, |k| openat::fgetxattr(fd.as_fd(), k))?;
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                // Exactly the size in the header, even if the file changes under us.
                let file = File::from(fd);
                let mut data = file.take(st.st_size as u64).chain(io::repeat(0));
                let mut limited = (&mut data).take(st.st_size as u64);
                self.builder
                    .append_data(&mut h, os(path), &mut limited)
                    .map_err(|e| self.err("writing the layer tar for", path, e))?;
                if st.st_nlink > 1 {
                    self.links.insert(key, path.to_vec());
                }
                self.stats.entries += 1;
            }
            SFlag::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(dir, os(name)) {
                    Ok(t) => t,
                    Err(nix::errno::Errno::ENOENT) => return Ok(()),
                    Err(e) => return Err(self.err("reading link", path, e)),
                };
                self.xattrs(path, lget)?;
                let mut h = self.header(st, tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut h, os(path), Path::new(&target))
                    .map_err(|e| self.err("writing the layer tar for", path, e))?;
                self.stats.entries += 1;
            }
            t @ (SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO) => {
                let entry_type = match t {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                self.xattrs(path, lget)?;
                let mut h = self.header(st, entry_type);
                if t != SFlag::S_IFIFO {
                    let rdev = st.st_rdev as libc::dev_t;
                    let _ = h.set_device_major(libc::major(rdev));
                    let _ = h.set_device_minor(libc::minor(rdev));
                }
                self.append_empty(&mut h, path)?;
                self.stats.entries += 1;
            }
            _ => {
                // Sockets (and anything else tar cannot hold) are left out.
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }
}

/// Writes the upper dir `upper` as an uncompressed layer tar (OCI whiteouts) into `out`.
pub fn write_layer(upper: &Path, out: impl Write) -> Result<CommitStats, ImageError> {
    let root = openat::open_dir(upper).map_err(|e| upper_err("opening", upper, e))?;
    let mut w = Walker {
        builder: tar::Builder::new(out),
        upper,
        links: HashMap::new(),
        stats: CommitStats::default(),
    };
    w.walk(root.as_fd(), b"")?;
    w.builder
        .finish()
        .map_err(|e| upper_err("finishing the layer tar for", upper, e))?;
    Ok(w.stats)
}

impl ImageStore {
    /// The record of the image a container was started from (`base` as its spec names it);
    /// an `oci:` layout is read without being recorded.
    pub(crate) fn base_record(&self, base: &ImageRef) -> Result<ImageRecord, ImageError> {
        let image = describe(base);
        match base {
            ImageRef::Registry(r) => {
                self.resolve_registry(r, false)?;
                self.find(&r.to_string())
            }
            ImageRef::OciArchive { .. } | ImageRef::DockerArchive { .. } => {
                self.resolve_archive(base)?;
                self.find(&image)
            }
            ImageRef::OciLayout { dir, tag } => {
                let origin = Origin::Layout {
                    dir: dir.clone(),
                    tag: tag.clone(),
                };
                Ok(self.pull_origin(&image, &origin, &image, None)?.record)
            }
            ImageRef::Rootfs { dir } => Err(ImageError::Record {
                step: "committing onto",
                path: dir.clone(),
                message: "a rootfs: image has no image config or layers to build on".into(),
            }),
        }
    }

    /// Turns the overlay upper dir `upper` of a container started from `base` into a new layer
    /// and records the result as `name`; `created_by` goes into the history entry.
    pub fn commit(
        &self,
        base: &ImageRef,
        upper: &Path,
        name: &RegistryRef,
        created_by: &str,
    ) -> Result<(ImageRecord, CommitStats), ImageError> {
        let _lock = self.content.lock(false)?;
        let base_rec = self.base_record(base)?;
        let image = name.to_string();
        let (layer, stats) = self.store_layer(upper)?;
        let parents: Vec<String> = base_rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        self.ensure_layer(&image, &parents, &layer)?;

        // Config: the base's, with the new layer and a history entry.
        let mut config = self.config_json(&base_rec, &describe(base))?;
        let created = now_rfc3339();
        let bad_config = |message: String| ImageError::Parse {
            image: describe(base),
            what: "config",
            path: PathBuf::from(&base_rec.config_digest),
            message,
        };
        {
            let obj = config
                .as_object_mut()
                .ok_or_else(|| bad_config("not a JSON object".into()))?;
            obj.insert("created".into(), created.clone().into());
            let rootfs = obj
                .entry("rootfs")
                .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
            match rootfs.get_mut("diff_ids").and_then(|d| d.as_array_mut()) {
                Some(ids) => ids.push(layer.diff_id.clone().into()),
                None => return Err(bad_config("no rootfs.diff_ids".into())),
            }
            let entry = serde_json::json!({"created": created, "created_by": created_by});
            match obj.get_mut("history").and_then(|h| h.as_array_mut()) {
                Some(h) => h.push(entry),
                None => {
                    obj.insert("history".into(), serde_json::json!([entry]));
                }
            }
        }
        let mut layers = base_rec.layers.clone();
        layers.push(layer);
        let record = self.record_image(&image, &config, layers)?;
        Ok((record, stats))
    }

    /// The config blob of a recorded image, as JSON.
    pub(crate) fn config_json(
        &self,
        rec: &ImageRecord,
        image: &str,
    ) -> Result<serde_json::Value, ImageError> {
        let bytes = self
            .content
            .read_blob(&rec.config_digest, MAX_JSON_SIZE)
            .ok_or_else(|| ImageError::Record {
                step: "reading the base config",
                path: self.root().join("blobs/sha256"),
                message: format!("config blob {} is missing or corrupt", rec.config_digest),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Parse {
            image: image.into(),
            what: "config",
            path: PathBuf::from(&rec.config_digest),
            message: e.to_string(),
        })
    }

    /// Writes the dir `upper` (an overlay upper dir, or any dir holding what a layer adds) as
    /// a gzip layer blob of the content store: tar -> diff ID hash -> gzip -> blob digest
    /// hash -> temp blob file, checked and renamed.
    pub(crate) fn store_layer(
        &self,
        upper: &Path,
    ) -> Result<(LayerRecord, CommitStats), ImageError> {
        let blob = self.content.blob_writer()?;
        let compressed = HashWriter {
            inner: blob,
            hasher: Sha256::new(),
            count: 0,
        };
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::default());
        let mut plain = HashWriter {
            inner: gz,
            hasher: Sha256::new(),
            count: 0,
        };
        let stats = write_layer(upper, &mut plain)?;
        let diff_id = format!("sha256:{}", hex::encode(plain.hasher.finalize()));
        let mut compressed = plain
            .inner
            .finish()
            .map_err(|e| upper_err("compressing the layer of", upper, e))?;
        compressed
            .flush()
            .map_err(|e| upper_err("compressing the layer of", upper, e))?;
        let digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
        let size = compressed.count;
        let blob: BlobWriter = compressed.inner;
        if let Err(problem) = self.content.commit_blob(blob, &digest, Some(size))? {
            return Err(ImageError::Record {
                step: "storing the layer of",
                path: upper.to_path_buf(),
                message: problem,
            });
        }
        let layer = LayerRecord {
            digest,
            size,
            media_type: LAYER_MEDIA_TYPE.into(),
            diff_id,
        };
        Ok((layer, stats))
    }

    /// The store lock, shared: held by a build so a prune cannot remove the layers it made
    /// before the image that names them is recorded.
    pub(crate) fn shared_lock(&self) -> Result<super::content::StoreLock, ImageError> {
        self.content.lock(false)
    }

    /// Whether the stored layer blob `layer` is still in the content store.
    pub(crate) fn has_layer_blob(&self, layer: &LayerRecord) -> bool {
        self.content.has_blob(&layer.digest)
    }

    /// Makes sure the stored layer `layer`, on top of the layers with the diff IDs `parents`,
    /// is unpacked in the layer store (from its blob, as a pulled layer is); returns its dir.
    pub(crate) fn ensure_layer(
        &self,
        image: &str,
        parents: &[String],
        layer: &LayerRecord,
    ) -> Result<PathBuf, ImageError> {
        let mut diff_ids = parents.to_vec();
        diff_ids.push(layer.diff_id.clone());
        let chain = chain_ids(&diff_ids).pop().expect("at least the new layer");
        let target = self.layer_dir(&chain);
        if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            self.unpack_committed(image, &layer.digest, &layer.diff_id, &chain, &target)?;
        }
        Ok(target)
    }

    /// Records `config` (an image config, whose `rootfs.diff_ids` are those of `layers`) with
    /// a manifest naming `layers`, as the image `name`: config blob, manifest blob, then the
    /// record, so a record never names something that is not there.
    pub(crate) fn record_image(
        &self,
        name: &str,
        config: &serde_json::Value,
        layers: Vec<LayerRecord>,
    ) -> Result<ImageRecord, ImageError> {
        let bad_config = |message: String| ImageError::Parse {
            image: name.into(),
            what: "config",
            path: PathBuf::from(name),
            message,
        };
        let config_bytes = serde_json::to_vec(config).map_err(|e| bad_config(e.to_string()))?;
        let parsed = oci_spec::image::ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| bad_config(e.to_string()))?;
        let config_digest = self.content.put_blob(&config_bytes)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": if l.media_type.is_empty() { LAYER_MEDIA_TYPE } else { l.media_type.as_str() },
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| bad_config(e.to_string()))?;
        let digest = self.content.put_blob(&manifest_bytes)?;
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let history: Vec<HistoryRecord> =
            serde_json::from_value(config.get("history").cloned().unwrap_or_default())
                .unwrap_or_default();
        let record = ImageRecord {
            name: name.to_string(),
            digest,
            config_digest,
            config: run_config(&parsed),
            layers,
            chain_ids: chain_ids(&diff_ids),
            os: parsed.os().to_string(),
            architecture: parsed.architecture().to_string(),
            variant: parsed.variant().clone(),
            created: parsed.created().clone(),
            history,
            recorded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            source: None,
        };
        self.content.write_record(&record)?;
        Ok(record)
    }

    /// Unpacks the stored gzip blob `digest` into `target` through a temp dir, checking the
    /// uncompressed stream against `diff_id`.
    fn unpack_committed(
        &self,
        image: &str,
        digest: &str,
        diff_id: &str,
        chain: &str,
        target: &Path,
    ) -> Result<(), ImageError> {
        let layer_err = |source: ImageError| ImageError::Layer {
            image: image.into(),
            digest: digest.into(),
            source: Box::new(source),
        };
        let blob_path = self
            .content
            .blob_path(digest)
            .ok_or_else(|| ImageError::BadDigest {
                image: image.into(),
                digest: digest.into(),
            })?;
        self.install_layer(chain, target, |tmp| {
            let file = File::open(&blob_path).map_err(|e| ImageError::Read {
                image: image.into(),
                path: blob_path.clone(),
                source: e,
            })?;
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            let mut hashed = HashReader {
                inner: gz,
                hasher: Sha256::new(),
                count: 0,
            };
            extract::unpack_layer_limited(&mut hashed, tmp, MAX_LAYER_SIZE).map_err(layer_err)?;
            io::copy(&mut hashed, &mut io::sink())
                .map_err(|source| layer_err(ImageError::TarRead { source }))?;
            let actual = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
            if actual != diff_id {
                return Err(ImageError::DiffIdMismatch {
                    image: image.into(),
                    digest: digest.into(),
                    expected: diff_id.into(),
                    actual,
                });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn upper_dir_to_tar() {
        let d = tempfile::tempdir().unwrap();
        let u = d.path();
        fs::create_dir_all(u.join("etc/sub")).unwrap();
        fs::write(u.join("etc/sub/f"), b"hello").unwrap();
        fs::hard_link(u.join("etc/sub/f"), u.join("etc/g")).unwrap();
        fs::write(u.join("etc/hosts"), b"mounted").unwrap();
        fs::create_dir_all(u.join("proc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", u.join("link")).unwrap();
        let mut out = Vec::new();
        let stats = write_layer(u, &mut out).unwrap();
        let e = entries(&out);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["etc", "etc/g", "etc/sub", "etc/sub/f", "link"]);
        assert_eq!(e[4].1, tar::EntryType::Symlink);
        assert_eq!(e[4].2, "/etc/shadow");
        assert_eq!(e[3].1, tar::EntryType::Link, "second path of the inode");
        assert_eq!(e[3].2, "etc/g");
        assert_eq!(stats.hardlinks, 1);
        assert_eq!(stats.skipped, 2, "/proc and /etc/hosts are left out");
    }
    #[test]
    fn whiteouts_opaque_dirs_and_xattrs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping whiteouts_opaque_dirs_and_xattrs: needs root for mknod and xattrs");
            return;
        }
        use nix::sys::stat::{mknod, Mode, SFlag};
        let d = tempfile::tempdir().unwrap();
        let u = d.path();
        fs::create_dir_all(u.join("etc/opq")).unwrap();
        fs::write(u.join("etc/opq/kept"), b"k").unwrap();
        fs::write(u.join("etc/capped"), b"c").unwrap();
        mknod(
            &u.join("etc/gone"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0),
            0,
        )
        .unwrap();
        let opq = openat::open_dir(&u.join("etc/opq")).unwrap();
        openat::fsetxattr(opq.as_fd(), OPAQUE_XATTR, b"y").unwrap();
        let capped = File::open(u.join("etc/capped")).unwrap();
        let cap = [1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        openat::fsetxattr(capped.as_fd(), b"security.capability", &cap).unwrap();
        let mut out = Vec::new();
        let stats = write_layer(u, &mut out).unwrap();
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/capped",
                "etc/.wh.gone",
                "etc/opq",
                "etc/opq/.wh..wh..opq",
                "etc/opq/kept"
            ]
        );
        assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
        let mut a = tar::Archive::new(&out[..]);
        let mut found = None;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().ends_with("capped") {
                for x in e.pax_extensions().unwrap().unwrap() {
                    let x = x.unwrap();
                    if x.key().unwrap() == "SCHILY.xattr.security.capability" {
                        found = Some(x.value_bytes().to_vec());
                    }
                }
            }
        }
        assert_eq!(
            found.as_deref(),
            Some(&cap[..]),
            "file capabilities are kept"
        );
        assert!(
            !String::from_utf8_lossy(&out).contains("trusted.overlay"),
            "overlay xattrs stay out of the layer"
        );
    }
}
