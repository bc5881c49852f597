//! `berth image push`: a recorded image sent to a registry as it is stored, byte for byte (its
//! layer blobs, its config and its manifest, so the registry's digest is the record's). Blobs
//! the repository already has are not sent again; the manifest goes last, so a failed push
//! never leaves a tag naming missing blobs.

use serde::Deserialize;

use super::content::missing_blob;
use super::registry::RegistryClient;
use super::store::MAX_JSON_SIZE;
use super::{ImageError, ImageStore, RegistryRef};

/// The media type of a manifest that does not say.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a push sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest digest, as the registry now serves it.
    pub digest: String,
    /// Blobs uploaded and their bytes.
    pub uploaded: usize,
    pub bytes: u64,
    /// Blobs the repository already had.
    pub skipped: usize,
}

impl ImageStore {
    /// Pushes the image `name` (as `image find` takes it) to `dest`, under its tag (`latest`
    /// when it has none; a digest-only `dest` pushes the manifest by its digest).
    pub fn push(&self, name: &str, dest: &RegistryRef) -> Result<PushReport, ImageError> {
        let _lock = self.content.lock(false)?;
        let rec = self.find(name)?;
        let image = dest.to_string();
        let manifest = self
            .content
            .read_blob(&rec.digest, MAX_JSON_SIZE)
            .ok_or_else(|| missing_blob(&rec, &rec.digest, "pushing"))?;
        let client = RegistryClient::for_push(&self.registry, dest, &image)?;
        let mut report = PushReport {
            digest: rec.digest.clone(),
            uploaded: 0,
            bytes: 0,
            skipped: 0,
        };
        let blobs = rec
            .layers
            .iter()
            .map(|l| l.digest.as_str())
            .chain([rec.config_digest.as_str()]);
        for digest in blobs {
            if client.has_blob(digest)? {
                report.skipped += 1;
                continue;
            }
            let path = self
                .content
                .blob_path(digest)
                .filter(|p| p.is_file())
                .ok_or_else(|| missing_blob(&rec, digest, "pushing"))?;
            self.progress.say(&format!("{image}: uploading {digest}"));
            client.upload_blob(digest, &path)?;
            report.uploaded += 1;
            report.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        let reference = match (&dest.tag, &dest.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) if d != &rec.digest => {
                return Err(ImageError::Registry {
                    image,
                    registry: dest.registry.clone(),
                    step: "putting the manifest".into(),
                    message: format!("{name} is {}, not {d}", rec.digest),
                })
            }
            (None, Some(d)) => d.clone(),
            (None, None) => "latest".into(),
        };
        let answered = client.put_manifest(&reference, &media_type(&manifest), &manifest)?;
        if let Some(d) = answered.filter(|d| d != &rec.digest) {
            return Err(ImageError::Registry {
                image,
                registry: dest.registry.clone(),
                step: "putting the manifest".into(),
                message: format!("the registry stored it as {d}, not {}", rec.digest),
            });
        }
        Ok(report)
    }
}

/// The manifest's own `mediaType`, else OCI's.
fn media_type(manifest: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Head>(manifest)
        .ok()
        .and_then(|h| h.media_type)
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            media_type(docker),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(media_type(br#"{"schemaVersion":2}"#), OCI_MANIFEST);
        assert_eq!(media_type(b"not json"), OCI_MANIFEST);
    }
}
