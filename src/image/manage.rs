//! Image-level operations of the store: resolving registry and archive references through
//! image records (pull or import on first use, reuse afterwards), explicit pull and import, and
//! listing, tagging, removing and pruning images.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::archive::TarIndex;
use super::content::{ImageRecord, SourceStamp};
use super::pull::{docker_archive, embedded_name, Origin, Pulled};
use super::registry::RegistryClient;
use super::store::describe;
use super::{ImageError, ImageRef, ImageStore, RegistryRef, ResolveStats, ResolvedImage};

/// What [`ImageStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub blob_bytes: u64,
    pub layers: usize,
}

impl ImageStore {
    fn layers_present(&self, rec: &ImageRecord) -> bool {
        rec.chain_ids
            .iter()
            .all(|c| fs::symlink_metadata(self.layer_dir(c)).is_ok_and(|m| m.is_dir()))
    }

    fn resolved(&self, rec: &ImageRecord) -> (ResolvedImage, ResolveStats) {
        let img = ResolvedImage {
            layers: rec.chain_ids.iter().map(|c| self.layer_dir(c)).collect(),
            config: rec.config.clone(),
            digest: Some(rec.digest.clone()),
        };
        let stats = ResolveStats {
            reused: rec.chain_ids.len(),
            chain_ids: rec.chain_ids.clone(),
            ..Default::default()
        };
        (img, stats)
    }

    /// A registry reference: the local record when its layers are all there (no network), else a
    /// pull. `refresh` always asks the registry (what `berth image pull` does).
    pub(crate) fn resolve_registry(
        &self,
        r: &RegistryRef,
        refresh: bool,
    ) -> Result<(ResolvedImage, ResolveStats), ImageError> {
        let name = r.to_string();
        if !refresh {
            let local = self.content.record(&name).or_else(|| {
                let d = r.digest.as_deref()?;
                let prefix = format!("{}/{}", r.registry, r.repository);
                self.content
                    .records()
                    .ok()?
                    .into_iter()
                    .find(|rec| rec.digest == d && rec.name.starts_with(&prefix))
            });
            if let Some(rec) = local.filter(|rec| self.layers_present(rec)) {
                return Ok(self.resolved(&rec));
            }
        }
        self.progress.say(&format!("{name}: pulling"));
        let pulled = self.pull_registry(r)?;
        self.content.write_record(&pulled.record)?;
        self.progress.say(&format!(
            "{name}: {} ({} layers fetched, {} reused)",
            pulled.record.digest, pulled.stats.fetched, pulled.stats.reused
        ));
        let (img, _) = self.resolved(&pulled.record);
        Ok((img, pulled.stats))
    }

    /// Fetches what `r` names (its digest, else its tag, else `latest`) from its registry
    /// (missing layers only); the record, named `r`, is not written yet.
    fn pull_registry(&self, r: &RegistryRef) -> Result<Pulled, ImageError> {
        let name = r.to_string();
        let reference = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let client = RegistryClient::new(&self.registry, r, &name)?;
        let origin = Origin::Registry { client, reference };
        self.pull_origin(&name, &origin, &name, None)
    }

    /// An `oci-archive:` or `docker-archive:` reference: imported on first use and again when the
    /// file changes (by device, inode, size and mtime).
    pub(crate) fn resolve_archive(
        &self,
        r: &ImageRef,
    ) -> Result<(ResolvedImage, ResolveStats), ImageError> {
        let name = describe(r);
        let (ImageRef::OciArchive { path, .. } | ImageRef::DockerArchive { path, .. }) = r else {
            unreachable!("resolve_archive on a non-archive reference")
        };
        let stamp = SourceStamp::of(path).map_err(|e| ImageError::Read {
            image: name.clone(),
            path: path.clone(),
            source: e,
        })?;
        if let Some(rec) = self.content.record(&name) {
            if rec.source.as_ref() == Some(&stamp) && self.layers_present(&rec) {
                return Ok(self.resolved(&rec));
            }
        }
        let origin = open_archive(&name, r)?;
        let pulled = self.pull_origin(&name, &origin, &name, Some(stamp))?;
        self.content.write_record(&pulled.record)?;
        let (img, _) = self.resolved(&pulled.record);
        Ok((img, pulled.stats))
    }

    /// Pulls a registry image, asking the registry even when the tag is known locally.
    pub fn pull(&self, r: &RegistryRef) -> Result<(ImageRecord, ResolveStats), ImageError> {
        let _lock = self.content.lock(false)?;
        let (_, stats) = self.resolve_registry(r, true)?;
        let rec = self
            .content
            .record(&r.to_string())
            .ok_or_else(|| ImageError::UnknownImage {
                name: r.to_string(),
            })?;
        Ok((rec, stats))
    }

    /// Asks the registry what the tag of `r` names now and fetches that image (missing layers
    /// only), recorded under `r` pinned to its manifest digest. The tag's own record, which
    /// what runs was started from, is left as it was: a rollback finds it unchanged.
    pub fn fetch_current(&self, r: &RegistryRef) -> Result<RegistryRef, ImageError> {
        let _lock = self.content.lock(false)?;
        let tagged = RegistryRef {
            digest: None,
            ..r.clone()
        };
        let mut pulled = self.pull_registry(&tagged)?;
        let pinned = RegistryRef {
            digest: Some(pulled.record.digest.clone()),
            ..tagged
        };
        pulled.record.name = pinned.to_string();
        self.content.write_record(&pulled.record)?;
        Ok(pinned)
    }

    /// Imports an OCI layout dir, oci-archive or docker-archive (a path, detected by content, or a
    /// reference with its `oci:`/`oci-archive:`/`docker-archive:` prefix), recording it as
    /// `name`, else the name the archive carries, else `localhost/<file stem>:<tag or latest>`.
    pub fn import(
        &self,
        source: &str,
        name: Option<&RegistryRef>,
    ) -> Result<(ImageRecord, ResolveStats), ImageError> {
        let _lock = self.content.lock(false)?;
        let r = match ImageRef::parse(source) {
            Ok(
                r @ (ImageRef::OciLayout { .. }
                | ImageRef::OciArchive { .. }
                | ImageRef::DockerArchive { .. }),
            ) => r,
            _ => detect(Path::new(source))?,
        };
        let image = describe(&r);
        let (path, tag) = match &r {
            ImageRef::OciLayout { dir, tag }
            | ImageRef::OciArchive { path: dir, tag }
            | ImageRef::DockerArchive { path: dir, tag } => (dir.clone(), tag.clone()),
            _ => unreachable!("detect returns layouts and archives"),
        };
        let origin = match &r {
            ImageRef::OciLayout { dir, tag } => {
                if !dir.join("oci-layout").is_file() {
                    return Err(ImageError::NotLayout {
                        image,
                        dir: dir.clone(),
                        message: "no oci-layout file".into(),
                    });
                }
                Origin::Layout {
                    dir: dir.clone(),
                    tag: tag.clone(),
                }
            }
            _ => open_archive(&image, &r)?,
        };
        let name = match name {
            Some(n) => n.to_string(),
            None => default_name(embedded_name(&origin).as_deref(), &path, tag.as_deref()),
        };
        self.progress.say(&format!("{image}: importing as {name}"));
        let pulled = self.pull_origin(&image, &origin, &name, None)?;
        self.content.write_record(&pulled.record)?;
        Ok((pulled.record, pulled.stats))
    }

    /// Every image record, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.content.records()
    }

    /// The record a user's name for an image means: a name as listed, a reference (normalized
    /// as pulls are), or a manifest digest or unique prefix of one (at least 12 hex digits).
    pub fn find(&self, s: &str) -> Result<ImageRecord, ImageError> {
        if let Some(rec) = self.content.record(s) {
            return Ok(rec);
        }
        if let Ok(r) = ImageRef::parse(s) {
            let name = describe(&r);
            if let Some(rec) = self.content.record(&name) {
                return Ok(rec);
            }
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let recs = self.content.records()?;
            let mut hits = recs
                .iter()
                .filter(|r| r.digest["sha256:".len()..].starts_with(hex));
            if let Some(first) = hits.next() {
                if hits.all(|r| r.digest == first.digest) {
                    return Ok(first.clone());
                }
            }
        }
        Err(ImageError::UnknownImage { name: s.into() })
    }

    /// Records `src`'s image also under `dst`.
    pub fn tag(&self, src: &str, dst: &RegistryRef) -> Result<ImageRecord, ImageError> {
        let mut rec = self.find(src)?;
        rec.name = dst.to_string();
        rec.source = None;
        self.content.write_record(&rec)?;
        Ok(rec)
    }

    /// Removes the record(s) `s` names (all names of a digest when given a digest); returns the
    /// names removed. Blobs and layers stay until [`prune`](Self::prune).
    pub fn remove(&self, s: &str) -> Result<Vec<String>, ImageError> {
        let rec = self.find(s)?;
        let by_digest = rec.name != s
            && ImageRef::parse(s)
                .map(|r| describe(&r) != rec.name)
                .unwrap_or(true);
        let names: Vec<String> = if by_digest {
            self.content
                .records()?
                .into_iter()
                .filter(|r| r.digest == rec.digest)
                .map(|r| r.name)
                .collect()
        } else {
            vec![rec.name]
        };
        for n in &names {
            self.content.remove_record(n)?;
        }
        Ok(names)
    }

    /// Removes blobs and layer dirs that no image record references, keeping the layer dirs in
    /// `in_use` (the layers of running containers, by path). Layers unpacked for `oci:` and
    /// `rootfs:` references have no record and go too unless in use; they are unpacked again on
    /// the next resolve.
    pub fn prune(&self, in_use: &[PathBuf]) -> Result<PruneReport, ImageError> {
        let _lock = self.content.lock(true)?;
        let records = self.content.records()?;
        let mut keep_blobs = HashSet::new();
        let mut keep_layers: HashSet<PathBuf> = in_use.iter().cloned().collect();
        for r in &records {
            keep_blobs.insert(r.digest.clone());
            keep_blobs.insert(r.config_digest.clone());
            keep_blobs.extend(r.layers.iter().map(|l| l.digest.clone()));
            keep_layers.extend(r.chain_ids.iter().map(|c| self.layer_dir(c)));
        }
        let (blobs, blob_bytes) = self.content.prune_blobs(&keep_blobs)?;
        let mut layers = 0;
        let entries = fs::read_dir(&self.layers).map_err(|e| ImageError::Store {
            step: "listing",
            path: self.layers.clone(),
            source: e,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if keep_layers.contains(&path) {
                continue;
            }
            // Out of sight first (atomic), then removed; a crash leaves only a temp dir that the
            // next open cleans.
            let tmp = self.tmp.join(format!(
                "layer-{}-prune-{}",
                std::process::id(),
                entry.file_name().to_string_lossy()
            ));
            fs::rename(&path, &tmp).map_err(|e| ImageError::Store {
                step: "moving out",
                path: path.clone(),
                source: e,
            })?;
            fs::remove_dir_all(&tmp).map_err(|e| ImageError::Store {
                step: "removing",
                path: tmp.clone(),
                source: e,
            })?;
            layers += 1;
        }
        Ok(PruneReport {
            blobs,
            blob_bytes,
            layers,
        })
    }
}

impl ImageStore {
    /// Layer dirs of this store that some overlay mount on the host uses as a lowerdir, found
    /// in the mount tables of every mount namespace (`/proc/<pid>/mountinfo`, one process per
    /// namespace). What a prune from the command line keeps in addition to recorded images.
    pub fn layers_in_use(&self) -> Vec<PathBuf> {
        let mut seen_ns = HashSet::new();
        let mut out = HashSet::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        for p in procs.flatten() {
            let name = p.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(ns) = fs::read_link(p.path().join("ns/mnt")) else {
                continue;
            };
            if !seen_ns.insert(ns) {
                continue;
            }
            let Ok(table) = fs::read_to_string(p.path().join("mountinfo")) else {
                continue;
            };
            for dir in overlay_lowerdirs(&table) {
                if dir.starts_with(&self.layers) {
                    out.insert(dir);
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The lower dirs of every overlay mount in a mountinfo table (`lowerdir=a:b`, with `\:` and
/// `\,` escapes as the runtime writes them and mountinfo's octal escapes).
fn overlay_lowerdirs(table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in crate::mountinfo::parse(table) {
        if m.fstype != "overlay" {
            continue;
        }
        // Split on unescaped ',' then unescaped ':'.
        for opt in split_escaped(&m.super_options, ',') {
            let Some(v) = opt
                .strip_prefix("lowerdir=")
                .or_else(|| opt.strip_prefix("lowerdir+="))
            else {
                continue;
            };
            for d in split_escaped(v, ':') {
                out.push(PathBuf::from(d.replace("\\:", ":").replace("\\,", ",")));
            }
        }
    }
    out
}

/// Splits on `sep` not preceded by a backslash, keeping escapes in the parts.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if c == sep && !escaped {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    parts
}

fn open_archive(image: &str, r: &ImageRef) -> Result<Origin, ImageError> {
    match r {
        ImageRef::OciArchive { path, tag } => {
            let tar = TarIndex::open(image, path)?;
            if !tar.has("oci-layout") || !tar.has("index.json") {
                return Err(ImageError::Archive {
                    image: image.into(),
                    path: path.clone(),
                    message: "no oci-layout or index.json in it (not an oci-archive)".into(),
                });
            }
            Ok(Origin::OciArchive {
                tar,
                tag: tag.clone(),
            })
        }
        ImageRef::DockerArchive { path, tag } => docker_archive(image, path, tag.as_deref()),
        _ => unreachable!("open_archive on a non-archive reference"),
    }
}

/// A path's kind by content: a dir is an OCI layout; a tar with `oci-layout` an oci-archive,
/// else one with `manifest.json` a docker-archive.
fn detect(path: &Path) -> Result<ImageRef, ImageError> {
    let image = path.display().to_string();
    let abs = std::path::absolute(path).map_err(|e| ImageError::Read {
        image: image.clone(),
        path: path.into(),
        source: e,
    })?;
    let meta = fs::metadata(&abs).map_err(|e| ImageError::Read {
        image: image.clone(),
        path: path.into(),
        source: e,
    })?;
    if meta.is_dir() {
        return Ok(ImageRef::OciLayout {
            dir: abs,
            tag: None,
        });
    }
    let tar = TarIndex::open(&image, &abs)?;
    if tar.has("oci-layout") && tar.has("index.json") {
        Ok(ImageRef::OciArchive {
            path: abs,
            tag: None,
        })
    } else if tar.has("manifest.json") {
        Ok(ImageRef::DockerArchive {
            path: abs,
            tag: None,
        })
    } else {
        Err(ImageError::Archive {
            image,
            path: abs,
            message: "neither an oci-archive (oci-layout, index.json) nor a docker-archive (manifest.json)".into(),
        })
    }
}

/// The name for an imported image: the embedded one when it is a full reference, else
/// `localhost/<stem>:<embedded tag, the tag asked for, or latest>`.
fn default_name(embedded: Option<&str>, path: &Path, tag: Option<&str>) -> String {
    if let Some(e) = embedded {
        if e.contains(['/', ':']) {
            if let Ok(ImageRef::Registry(r)) = ImageRef::parse(e) {
                return r.to_string();
            }
        }
    }
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_start_matches(['.', '_', '-']);
    let stem = if stem.is_empty() { "image" } else { stem };
    let tag = embedded
        .filter(|e| !e.contains(['/', ':']))
        .or(tag)
        .unwrap_or("latest");
    match ImageRef::parse(&format!("localhost/{stem}:{tag}")) {
        Ok(ImageRef::Registry(r)) => r.to_string(),
        _ => format!("localhost/{stem}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdirs_from_mountinfo() {
        let t = "36 35 98:0 / /mnt rw - ext4 /dev/x rw\n\
                 40 1 0:50 / /c/rootfs rw - overlay overlay rw,lowerdir=/r/layers/b\\:c:/r/layers/a,upperdir=/u,workdir=/w\\,x,volatile\n\
                 41 1 0:51 / /d rw - overlay overlay rw,lowerdir=/r/my\\040dir/l\n";
        assert_eq!(
            overlay_lowerdirs(t),
            vec![
                PathBuf::from("/r/layers/b:c"),
                PathBuf::from("/r/layers/a"),
                PathBuf::from("/r/my dir/l")
            ]
        );
    }

    #[test]
    fn import_names() {
        let p = Path::new("/tmp/My Image.tar");
        assert_eq!(default_name(None, p, None), "localhost/my-image:latest");
        assert_eq!(default_name(Some("v2"), p, None), "localhost/my-image:v2");
        assert_eq!(
            default_name(Some("busybox:1.36"), p, None),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            default_name(Some("127.0.0.1:5000/a/b:x"), p, None),
            "127.0.0.1:5000/a/b:x"
        );
        assert_eq!(default_name(None, p, Some("t")), "localhost/my-image:t");
    }
}
