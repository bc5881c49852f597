//! Bringing an image into the store from a registry, an archive or an OCI layout: manifest
//! (through image indexes, picking the platform), config, then the missing layers, fetched
//! concurrently and unpacked while they stream in. Each layer blob is teed into the content store
//! and checked against its digest and size; the unpacked tree against its diff ID. Nothing
//! becomes visible under its final name before both checks pass.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::archive::TarIndex;
use super::content::{
    sha256_hex, BlobWriter, HistoryRecord, ImageRecord, LayerRecord, SourceStamp,
};
use super::registry::RegistryClient;
use super::store::{
    chain_ids, host_arch, image_config, media_compression, sniff, unpack_blob, CheckedConfig,
    Compression, Descriptor, HashReader, Index, Manifest, CONFIG_TYPES, INDEX_TYPES,
    MANIFEST_TYPES, MAX_INDEX_DEPTH, MAX_JSON_SIZE, REF_NAME,
};
use super::{ImageError, ImageStore, ResolveStats};

/// How many layers are fetched at once.
const PARALLEL_LAYERS: usize = 3;
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where the image's documents and blobs are read from.
pub(crate) enum Origin {
    Registry {
        client: RegistryClient,
        /// Tag or digest to ask for.
        reference: String,
    },
    /// An OCI layout directory.
    Layout { dir: PathBuf, tag: Option<String> },
    /// A tarred OCI layout.
    OciArchive { tar: TarIndex, tag: Option<String> },
    /// A `docker save` archive: its `manifest.json` entry, turned into a schema2 manifest.
    DockerArchive {
        tar: TarIndex,
        manifest: Vec<u8>,
        /// Blob digest -> member name.
        members: HashMap<String, String>,
    },
}

/// A manifest or index document and what is known of it before it is parsed.
struct Doc {
    bytes: Vec<u8>,
    media_type: Option<String>,
    /// The digest it must have (from a descriptor or a pinned reference).
    expected: Option<String>,
}

/// The platform an index entry must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Want {
    pub arch: String,
    /// Acceptable variants, best first; `""` matches an entry without a variant.
    pub variants: Vec<&'static str>,
}

impl Want {
    pub(crate) fn host() -> Want {
        let arch = host_arch().to_string();
        let variants = match arch.as_str() {
            "arm64" => vec!["v8", ""],
            "arm" if cfg!(target_feature = "v7") => vec!["v7", "v6", "v5", ""],
            "arm" => vec!["v6", "v5", ""],
            "amd64" => vec!["", "v1"],
            _ => vec![""],
        };
        Want { arch, variants }
    }

    pub(crate) fn describe(&self) -> String {
        match self.variants.first() {
            Some(v) if !v.is_empty() => format!("linux/{}/{v}", self.arch),
            _ => format!("linux/{}", self.arch),
        }
    }
}

/// The best index entry for `want`: linux, same architecture, the most preferred variant.
/// Entries that are neither manifests nor indexes (attestations) are skipped.
pub(crate) fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    want: &Want,
) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .filter(|d| {
            d.media_type
                .as_deref()
                .is_none_or(|t| INDEX_TYPES.contains(&t) || MANIFEST_TYPES.contains(&t))
        })
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            if p.os != "linux" || p.architecture != want.arch {
                return None;
            }
            let v = p.variant.as_deref().unwrap_or("");
            let rank = want.variants.iter().position(|w| *w == v)?;
            Some((rank, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Origin {
    fn name(&self) -> String {
        match self {
            Origin::Registry { client, .. } => format!("registry {}", client.registry()),
            Origin::Layout { dir, .. } => dir.display().to_string(),
            Origin::OciArchive { tar, .. } | Origin::DockerArchive { tar, .. } => {
                tar.path.display().to_string()
            }
        }
    }

    fn read_err(&self, image: &str, e: io::Error) -> ImageError {
        ImageError::Read {
            image: image.into(),
            path: PathBuf::from(self.name()),
            source: e,
        }
    }

    /// Reads a layout file (`index.json`) from a layout dir or archive.
    fn layout_file(&self, image: &str, rel: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
        match self {
            Origin::Layout { dir, .. } => {
                let path = dir.join(rel);
                let mut bytes = Vec::new();
                File::open(&path)
                    .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
                    .map_err(|e| ImageError::Read {
                        image: image.into(),
                        path: path.clone(),
                        source: e,
                    })?;
                if bytes.len() as u64 > cap {
                    return Err(ImageError::TooLarge {
                        image: image.into(),
                        path,
                        limit: cap,
                    });
                }
                Ok(bytes)
            }
            Origin::OciArchive { tar, .. } => {
                if !tar.has(rel) {
                    return Err(ImageError::Archive {
                        image: image.into(),
                        path: tar.path.clone(),
                        message: format!("no {rel} in it (not an oci-archive)"),
                    });
                }
                tar.read_member(rel, cap)
            }
            _ => unreachable!("layout_file on a non-layout origin"),
        }
    }

    /// The top document: what the tag or reference names.
    fn top(&self, image: &str) -> Result<Doc, ImageError> {
        match self {
            Origin::Registry { client, reference } => {
                let m = client.manifest(reference, MAX_JSON_SIZE)?;
                Ok(Doc {
                    bytes: m.bytes,
                    media_type: m.media_type,
                    // Pinned: the digest asked for. By tag: the one the registry says it sent.
                    expected: if reference.starts_with("sha256:") {
                        Some(reference.clone())
                    } else {
                        m.digest.filter(|d| d.starts_with("sha256:"))
                    },
                })
            }
            Origin::Layout { tag, .. } | Origin::OciArchive { tag, .. } => {
                let bytes = self.layout_file(image, "index.json", MAX_JSON_SIZE)?;
                let index: Index = parse(image, "index", &self.name(), &bytes)?;
                let desc = pick_tagged(image, &self.name(), &index, tag.as_deref())?;
                let bytes = self.read_small(image, &desc)?;
                Ok(Doc {
                    bytes,
                    media_type: desc.media_type.clone(),
                    expected: Some(desc.digest.clone()),
                })
            }
            Origin::DockerArchive { manifest, .. } => Ok(Doc {
                bytes: manifest.clone(),
                media_type: Some(MANIFEST_TYPES[1].into()),
                expected: None,
            }),
        }
    }

    /// Opens a blob's content as a stream (unverified: the caller checks it).
    fn open_blob(
        &self,
        image: &str,
        desc: &Descriptor,
    ) -> Result<Box<dyn Read + Send>, ImageError> {
        let hex = sha256_hex(&desc.digest).ok_or_else(|| ImageError::BadDigest {
            image: image.into(),
            digest: desc.digest.clone(),
        })?;
        match self {
            Origin::Registry { client, .. } => client.blob(&desc.digest),
            Origin::Layout { dir, .. } => {
                let path = dir.join("blobs/sha256").join(hex);
                let f = File::open(&path).map_err(|e| ImageError::Read {
                    image: image.into(),
                    path,
                    source: e,
                })?;
                Ok(Box::new(f))
            }
            Origin::OciArchive { tar, .. } => {
                Ok(Box::new(tar.open_member(&format!("blobs/sha256/{hex}"))?))
            }
            Origin::DockerArchive { tar, members, .. } => {
                let m = members
                    .get(&desc.digest)
                    .ok_or_else(|| ImageError::Archive {
                        image: image.into(),
                        path: tar.path.clone(),
                        message: format!("no member for {}", desc.digest),
                    })?;
                Ok(Box::new(tar.open_member(m)?))
            }
        }
    }

    /// Reads a small blob (manifest, index, config) and verifies it against `desc`.
    fn read_small(&self, image: &str, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_JSON_SIZE {
            return Err(ImageError::TooLarge {
                image: image.into(),
                path: PathBuf::from(&desc.digest),
                limit: MAX_JSON_SIZE,
            });
        }
        let bytes = match self {
            Origin::Registry { client, .. }
                if desc
                    .media_type
                    .as_deref()
                    .is_some_and(|t| INDEX_TYPES.contains(&t) || MANIFEST_TYPES.contains(&t)) =>
            {
                client.manifest(&desc.digest, MAX_JSON_SIZE)?.bytes
            }
            _ => {
                let mut bytes = Vec::new();
                self.open_blob(image, desc)?
                    .take(desc.size + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.read_err(image, e))?;
                bytes
            }
        };
        verify(image, &self.name(), desc, &bytes)?;
        Ok(bytes)
    }
}

fn verify(image: &str, origin: &str, desc: &Descriptor, bytes: &[u8]) -> Result<(), ImageError> {
    let mismatch = |problem: String| ImageError::BlobMismatch {
        image: image.into(),
        digest: desc.digest.clone(),
        path: PathBuf::from(origin),
        problem,
    };
    if bytes.len() as u64 != desc.size {
        return Err(mismatch(format!(
            "got {} bytes, descriptor says {}",
            bytes.len(),
            desc.size
        )));
    }
    let actual = sha(bytes);
    if actual != desc.digest {
        return Err(mismatch(format!("content hashes to {actual}")));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(
    image: &str,
    what: &'static str,
    origin: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Parse {
        image: image.into(),
        what,
        path: PathBuf::from(origin),
        message: e.to_string(),
    })
}

fn pick_tagged(
    image: &str,
    origin: &str,
    index: &Index,
    tag: Option<&str>,
) -> Result<Descriptor, ImageError> {
    let tags: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).cloned())
        .collect();
    let index_path = PathBuf::from(origin).join("index.json");
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| {
                d.annotations.get(REF_NAME).map(String::as_str) == Some(t)
                    || d.annotations
                        .get(CONTAINERD_NAME)
                        .is_some_and(|n| n.rsplit_once(':').is_some_and(|(_, nt)| nt == t))
            })
            .cloned()
            .ok_or_else(|| ImageError::NoSuchTag {
                image: image.into(),
                tag: t.into(),
                index: index_path,
                tags,
            }),
        None if index.manifests.len() == 1 => Ok(index.manifests[0].clone()),
        None => Err(ImageError::AmbiguousTag {
            image: image.into(),
            index: index_path,
            count: index.manifests.len(),
            tags,
        }),
    }
}

/// The name a layout or archive gives its image (`ref.name` / containerd's name / `RepoTags`).
pub(crate) fn embedded_name(origin: &Origin) -> Option<String> {
    match origin {
        Origin::Layout { tag, .. } | Origin::OciArchive { tag, .. } => {
            let bytes = origin.layout_file("", "index.json", MAX_JSON_SIZE).ok()?;
            let index: Index = serde_json::from_slice(&bytes).ok()?;
            let d = pick_tagged("", "", &index, tag.as_deref()).ok()?;
            d.annotations
                .get(CONTAINERD_NAME)
                .or_else(|| d.annotations.get(REF_NAME))
                .cloned()
        }
        Origin::DockerArchive { tar, .. } => {
            let bytes = tar.read_member("manifest.json", MAX_JSON_SIZE).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            v.get(0)?
                .get("RepoTags")?
                .get(0)?
                .as_str()
                .map(str::to_string)
        }
        Origin::Registry { .. } => None,
    }
}

/// Opens a docker-archive: reads `manifest.json`, picks the entry (by `RepoTags` when `tag` is
/// given), hashes the config and layer members and builds a schema2 manifest for them.
pub(crate) fn docker_archive(
    image: &str,
    path: &Path,
    tag: Option<&str>,
) -> Result<Origin, ImageError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let tar = TarIndex::open(image, path)?;
    let err = |message: String| ImageError::Archive {
        image: image.into(),
        path: path.into(),
        message,
    };
    if !tar.has("manifest.json") {
        return Err(err("no manifest.json in it (not a docker-archive)".into()));
    }
    let bytes = tar.read_member("manifest.json", MAX_JSON_SIZE)?;
    let entries: Vec<Entry> = parse(image, "manifest.json", &path.display().to_string(), &bytes)?;
    let all_tags: Vec<String> = entries
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    let entry = match tag {
        Some(t) => entries.iter().find(|e| {
            e.repo_tags
                .iter()
                .flatten()
                .any(|rt| rt == t || rt.rsplit_once(':').is_some_and(|(_, x)| x == t))
        }),
        None if entries.len() == 1 => entries.first(),
        None => {
            return Err(ImageError::AmbiguousTag {
                image: image.into(),
                index: path.join("manifest.json"),
                count: entries.len(),
                tags: all_tags,
            })
        }
    }
    .ok_or_else(|| ImageError::NoSuchTag {
        image: image.into(),
        tag: tag.unwrap_or_default().into(),
        index: path.join("manifest.json"),
        tags: all_tags.clone(),
    })?;
    let mut members = HashMap::new();
    let mut hash_member = |name: &str| -> Result<(String, u64, Compression), ImageError> {
        let mut r = BufReader::new(tar.open_member(name)?);
        let magic = r
            .fill_buf()
            .map_err(|e| err(format!("reading {name}: {e}")))?;
        let compression = sniff(magic).unwrap_or(Compression::None);
        let mut h = HashReader {
            inner: r,
            hasher: Sha256::new(),
            count: 0,
        };
        io::copy(&mut h, &mut io::sink()).map_err(|e| err(format!("reading {name}: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(h.hasher.finalize()));
        members.insert(digest.clone(), name.to_string());
        Ok((digest, h.count, compression))
    };
    let (config_digest, config_size, _) = hash_member(&entry.config)?;
    let mut layers = Vec::new();
    for l in &entry.layers {
        let (digest, size, c) = hash_member(l)?;
        let media_type = match c {
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        };
        layers.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[1],
        "config": {"mediaType": CONFIG_TYPES[1], "digest": config_digest, "size": config_size},
        "layers": layers,
    }))
    .expect("a JSON value serializes");
    Ok(Origin::DockerArchive {
        tar,
        manifest,
        members,
    })
}

/// What a pull produced before it is recorded under a name.
pub(crate) struct Pulled {
    pub record: ImageRecord,
    pub stats: ResolveStats,
}

/// A reader that copies everything it reads into a blob being written.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut BlobWriter,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl ImageStore {
    /// Pulls or imports the image `origin` names into the store (missing layers only) and
    /// returns its record, named `name` (not yet written).
    pub(crate) fn pull_origin(
        &self,
        image: &str,
        origin: &Origin,
        name: &str,
        source: Option<SourceStamp>,
    ) -> Result<Pulled, ImageError> {
        let origin_name = origin.name();
        let mut stats = ResolveStats {
            network: matches!(origin, Origin::Registry { .. }),
            ..Default::default()
        };
        let want = Want::host();
        let mut doc = origin.top(image)?;
        let mut digest = sha(&doc.bytes);
        if let Some(e) = &doc.expected {
            if *e != digest {
                return Err(ImageError::BlobMismatch {
                    image: image.into(),
                    digest: e.clone(),
                    path: PathBuf::from(&origin_name),
                    problem: format!("content hashes to {digest}"),
                });
            }
        }
        let mut depth = 0;
        let manifest: Manifest = loop {
            let v: serde_json::Value = parse(image, "manifest", &origin_name, &doc.bytes)?;
            let doc_type = v
                .get("mediaType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .or(doc.media_type.clone());
            let is_index = match doc_type.as_deref() {
                Some(t) if INDEX_TYPES.contains(&t) => true,
                Some(t) if MANIFEST_TYPES.contains(&t) => false,
                Some(t) if v.get("manifests").is_none() && v.get("config").is_none() => {
                    return Err(ImageError::MediaType {
                        image: image.into(),
                        digest,
                        media_type: t.into(),
                    })
                }
                _ => v.get("manifests").is_some(),
            };
            if !is_index {
                if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
                    return Err(ImageError::MediaType {
                        image: image.into(),
                        digest,
                        media_type: "schema1 manifest".into(),
                    });
                }
                break parse(image, "manifest", &origin_name, &doc.bytes)?;
            }
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(ImageError::IndexTooDeep {
                    image: image.into(),
                    digest,
                    depth: MAX_INDEX_DEPTH,
                });
            }
            let index: Index = parse(image, "index", &origin_name, &doc.bytes)?;
            let desc =
                pick_platform(&index.manifests, &want).ok_or_else(|| ImageError::NoPlatform {
                    image: image.into(),
                    digest: digest.clone(),
                    platform: want.describe(),
                })?;
            let bytes = origin.read_small(image, desc)?;
            digest = desc.digest.clone();
            doc = Doc {
                bytes,
                media_type: desc.media_type.clone(),
                expected: None,
            };
        };

        // Config.
        let cdesc = &manifest.config;
        let cbytes = match self.content.read_blob(&cdesc.digest, MAX_JSON_SIZE) {
            Some(b) if b.len() as u64 == cdesc.size => b,
            _ => origin.read_small(image, cdesc)?,
        };
        let CheckedConfig {
            parsed,
            config,
            diff_ids,
        } = image_config(image, &manifest, &cbytes, Path::new(&cdesc.digest))?;
        let chains = chain_ids(&diff_ids);
        stats.chain_ids = chains.clone();

        // Layers: fetch the missing ones, a few at a time.
        let mut jobs = Vec::new();
        for (i, chain) in chains.iter().enumerate() {
            let dir = self.layer_dir(chain);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => stats.reused += 1,
                Ok(_) => {
                    return Err(ImageError::Store {
                        step: "using layer",
                        path: dir,
                        source: io::Error::other("exists and is not a directory"),
                    })
                }
                Err(_) => jobs.push(i),
            }
        }
        let queue = Mutex::new(jobs.clone());
        let first_err: Mutex<Option<ImageError>> = Mutex::new(None);
        let fetched = AtomicU64::new(0);
        let bytes_total = AtomicU64::new(0);
        let workers = PARALLEL_LAYERS.min(jobs.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if first_err
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some()
                    {
                        return;
                    }
                    let Some(i) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                        return;
                    };
                    let desc = &manifest.layers[i];
                    self.progress.say(&format!(
                        "{image}: fetching layer {} ({} bytes)",
                        desc.digest, desc.size
                    ));
                    match self.fetch_layer(image, origin, desc, &diff_ids[i], &chains[i]) {
                        Ok(from_origin) => {
                            if from_origin {
                                fetched.fetch_add(1, Ordering::Relaxed);
                                bytes_total.fetch_add(desc.size, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            let mut slot = first_err.lock().unwrap_or_else(|e| e.into_inner());
                            if slot.is_none() {
                                *slot = Some(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        stats.unpacked = jobs.len();
        stats.fetched = fetched.into_inner() as usize;
        stats.fetched_bytes = bytes_total.into_inner();

        // The manifest and config blobs last: a record never names a blob that is not there.
        self.content.put_blob(&cbytes)?;
        let manifest_digest = self.content.put_blob(&doc.bytes)?;
        debug_assert_eq!(manifest_digest, digest);

        let history = parsed
            .history()
            .iter()
            .flatten()
            .map(|h| HistoryRecord {
                created: h.created().clone(),
                created_by: h.created_by().clone(),
                comment: h.comment().clone(),
                empty_layer: h.empty_layer().unwrap_or(false),
            })
            .collect();
        let record = ImageRecord {
            name: name.to_string(),
            digest,
            config_digest: cdesc.digest.clone(),
            config,
            layers: manifest
                .layers
                .iter()
                .zip(&diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    size: l.size,
                    media_type: l.media_type.clone().unwrap_or_default(),
                    diff_id: d.clone(),
                })
                .collect(),
            chain_ids: chains,
            os: parsed.os().to_string(),
            architecture: parsed.architecture().to_string(),
            variant: parsed.variant().clone(),
            created: parsed.created().clone(),
            history,
            recorded_at: now(),
            source,
        };
        Ok(Pulled { record, stats })
    }

    /// Fetches one layer blob (from the content store when it is there, else from `origin`),
    /// unpacking it as it streams. Returns whether it came from the origin.
    fn fetch_layer(
        &self,
        image: &str,
        origin: &Origin,
        desc: &Descriptor,
        diff_id: &str,
        chain: &str,
    ) -> Result<bool, ImageError> {
        let layer_err = |source: ImageError| ImageError::Layer {
            image: image.into(),
            digest: desc.digest.clone(),
            source: Box::new(source),
        };
        let hint = media_compression(image, desc)?;
        let local = self
            .content
            .blob_path(&desc.digest)
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == desc.size));
        let (reader, from_origin): (Box<dyn Read + Send>, bool) = match &local {
            Some(p) => (
                Box::new(File::open(p).map_err(|e| ImageError::Read {
                    image: image.into(),
                    path: p.clone(),
                    source: e,
                })?),
                false,
            ),
            None => (origin.open_blob(image, desc)?, true),
        };
        let mut blob = self.content.blob_writer()?;

        let target = self.layer_dir(chain);
        self.install_layer(chain, &target, |tmp| {
            let tee = Tee {
                inner: reader.take(desc.size + 1),
                out: &mut blob,
            };
            let mut buf = BufReader::with_capacity(256 * 1024, tee);
            let actual =
                unpack_blob(&mut buf, hint, tmp, desc.size, &self.limits).map_err(layer_err)?;
            if actual != diff_id {
                return Err(ImageError::DiffIdMismatch {
                    image: image.into(),
                    digest: desc.digest.clone(),
                    expected: diff_id.into(),
                    actual,
                });
            }
            // Whatever follows the compressed stream still counts for the blob digest.
            io::copy(&mut buf, &mut io::sink())
                .map_err(|source| layer_err(ImageError::TarRead { source }))?;
            // The blob is kept only once the layer unpacked and checked out.
            match self
                .content
                .commit_blob(blob, &desc.digest, Some(desc.size))?
            {
                Ok(()) => Ok(()),
                Err(problem) => Err(ImageError::BlobMismatch {
                    image: image.into(),
                    digest: desc.digest.clone(),
                    path: local
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(origin.name())),
                    problem,
                }),
            }
        })?;
        Ok(from_origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::Platform;

    fn d(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: Some(MANIFEST_TYPES[0].into()),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
            annotations: Default::default(),
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let list = vec![
            d("amd64", None, 1),
            d("arm", Some("v6"), 2),
            d("arm", Some("v7"), 3),
            d("arm64", Some("v8"), 4),
            d("amd64", Some("v3"), 5),
        ];
        let want = |arch: &str, variants: Vec<&'static str>| Want {
            arch: arch.into(),
            variants,
        };
        let pick = |w: &Want| pick_platform(&list, w).map(|d| d.digest.clone());
        assert_eq!(
            pick(&want("amd64", vec!["", "v1"])),
            Some(list[0].digest.clone())
        );
        assert_eq!(
            pick(&want("arm", vec!["v7", "v6", "v5", ""])),
            Some(list[2].digest.clone())
        );
        assert_eq!(
            pick(&want("arm", vec!["v6", "v5", ""])),
            Some(list[1].digest.clone())
        );
        assert_eq!(
            pick(&want("arm64", vec!["v8", ""])),
            Some(list[3].digest.clone())
        );
        assert_eq!(pick(&want("s390x", vec![""])), None);
        // An arm64 entry without a variant is fine too; attestations are skipped.
        let mut att = d("arm64", None, 6);
        att.media_type = Some("application/vnd.in-toto+json".into());
        let list2 = [att, d("arm64", None, 7)];
        assert_eq!(
            pick_platform(&list2, &want("arm64", vec!["v8", ""])).map(|d| d.digest.clone()),
            Some(list2[1].digest.clone())
        );
        assert!(Want::host().describe().starts_with("linux/"));
    }
}
