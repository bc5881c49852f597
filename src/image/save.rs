//! `berth image save`: recorded images written out as one tar that is at once an OCI archive
//! (`oci-layout`, `index.json`, `blobs/sha256/...`, as `skopeo copy ... oci-archive:` reads)
//! and a docker archive (a `manifest.json` naming the same blobs, as `docker save` writes since
//! Docker 25 and `docker load` / `skopeo ... docker-archive:` read). Blobs are copied from the
//! content store with their digests checked; the tar is written beside the destination and
//! renamed into place, so a failed save leaves nothing at the destination.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::content::{missing_blob, sha256_hex};
use super::store::MAX_JSON_SIZE;
use super::{ImageError, ImageRecord, ImageStore};

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a save wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    pub images: usize,
    pub blobs: usize,
    pub bytes: u64,
}

fn save_err<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Store {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The tag part of a recorded name (`localhost/app:1` -> `1`), `latest` without one.
fn tag_of(name: &str) -> &str {
    let base = name.split('@').next().unwrap_or(name);
    match base.rfind(':') {
        Some(i) if !base[i..].contains('/') => &base[i + 1..],
        _ => "latest",
    }
}

impl ImageStore {
    /// Writes the images `names` (as `image find` takes them) to the tar file `out`.
    pub fn save(&self, names: &[String], out: &Path) -> Result<SaveReport, ImageError> {
        let _lock = self.content.lock(false)?;
        let records: Vec<ImageRecord> = names
            .iter()
            .map(|n| self.find(n))
            .collect::<Result<_, _>>()?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp: PathBuf = dir.join(format!(
            ".{}.tmp-{}",
            out.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = self.write_archive(&records, &tmp);
        match result {
            Ok(report) => {
                fs::rename(&tmp, out).map_err(save_err(out, "renaming the archive into"))?;
                Ok(report)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_archive(
        &self,
        records: &[ImageRecord],
        path: &Path,
    ) -> Result<SaveReport, ImageError> {
        let file = File::create(path).map_err(save_err(path, "creating"))?;
        let mut tar = tar::Builder::new(io::BufWriter::new(file));
        let mut written = BTreeSet::new();
        let mut report = SaveReport {
            images: records.len(),
            blobs: 0,
            bytes: 0,
        };
        let add_bytes = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, bytes)
                .map_err(save_err(path, "writing"))
        };
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, d, io::empty())
                .map_err(save_err(path, "writing"))?;
        }
        add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut index = Vec::new();
        let mut docker = Vec::new();
        for rec in records {
            let manifest = self
                .content
                .read_blob(&rec.digest, MAX_JSON_SIZE)
                .ok_or_else(|| missing_blob(rec, &rec.digest, "saving"))?;
            let mut blobs = vec![rec.digest.clone(), rec.config_digest.clone()];
            blobs.extend(rec.layers.iter().map(|l| l.digest.clone()));
            for digest in &blobs {
                if written.insert(digest.clone()) {
                    report.bytes += self.copy_blob(rec, digest, &mut tar, path)?;
                    report.blobs += 1;
                }
            }
            index.push(json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": rec.digest,
                "size": manifest.len(),
                "annotations": {
                    "org.opencontainers.image.ref.name": tag_of(&rec.name),
                    "io.containerd.image.name": rec.name,
                },
            }));
            let blob_name = |d: &str| format!("blobs/sha256/{}", sha256_hex(d).unwrap_or(d));
            docker.push(json!({
                "Config": blob_name(&rec.config_digest),
                "RepoTags": [rec.name],
                "Layers": rec.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": index});
        add_bytes(
            &mut tar,
            "index.json",
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        add_bytes(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&docker).unwrap_or_default(),
        )?;
        let mut w = tar.into_inner().map_err(save_err(path, "finishing"))?;
        w.flush().map_err(save_err(path, "writing"))?;
        w.get_ref().sync_all().map_err(save_err(path, "syncing"))?;
        Ok(report)
    }

    /// Appends the stored blob `digest` to `tar`, checking its digest on the way.
    fn copy_blob<W: Write>(
        &self,
        rec: &ImageRecord,
        digest: &str,
        tar: &mut tar::Builder<W>,
        path: &Path,
    ) -> Result<u64, ImageError> {
        let src = self
            .content
            .blob_path(digest)
            .filter(|p| p.is_file())
            .ok_or_else(|| missing_blob(rec, digest, "saving"))?;
        let f = File::open(&src).map_err(save_err(&src, "opening"))?;
        let size = f.metadata().map_err(save_err(&src, "reading"))?.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let mut hashing = Hashing {
            inner: f.take(size),
            hasher: Sha256::new(),
        };
        let name = format!("blobs/sha256/{}", sha256_hex(digest).unwrap_or(digest));
        tar.append_data(&mut h, &name, &mut hashing)
            .map_err(save_err(path, "writing"))?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != digest {
            return Err(ImageError::Record {
                step: "saving",
                path: src,
                message: format!(
                    "blob {digest} of {} is corrupt (its content hashes to {actual})",
                    rec.name
                ),
            });
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for (name, tag) in [
            ("localhost/app:1", "1"),
            ("localhost:5000/app", "latest"),
            ("localhost:5000/app:v2", "v2"),
            ("docker.io/library/busybox:latest@sha256:abc", "latest"),
        ] {
            assert_eq!(tag_of(name), tag, "{name}");
        }
    }
}
