//! The layer store and OCI image layout resolution.
//!
//! On disk, under the store root (mode 0700):
//! - `layers/<chainid-hex>/`: one unpacked layer, in overlayfs lowerdir format, named by the
//!   chain ID of the layers up to and including it. Written once, never modified.
//! - `tmp/layer-<pid>-<n>-<chainid-prefix>/`: a layer being unpacked; renamed into `layers/`
//!   when complete and verified. Left-overs of dead processes are removed by [`ImageStore::open`].
//!
//! Blobs are read from the OCI layout directory itself and verified (size and sha256) before use.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::content::{sha256_hex, Content};
use super::extract::{self, MAX_LAYER_SIZE};
use super::pull::{pick_platform, Want};
use super::registry::RegistryOptions;
use super::{ImageConfig, ImageError, ImageRef, ResolvedImage};

/// Cap on index, manifest and config JSON documents.
pub const MAX_JSON_SIZE: u64 = 4 << 20;
/// How many image indexes may be nested before the manifest.
pub(super) const MAX_INDEX_DEPTH: usize = 4;

pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(super) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub(super) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The layer store rooted at a directory (normally berth's `--root`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    pub(crate) layers: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) content: Content,
    pub(crate) registry: RegistryOptions,
    pub(crate) progress: Progress,
    pub(crate) limits: UnpackLimits,
}

/// What a layer may take when it is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Space kept free on the store's filesystem: a layer that would eat into it is refused.
    pub reserve: u64,
    /// The most a layer may unpack to, as a multiple of its compressed size (beyond
    /// [`RATIO_FLOOR`], which any layer may reach).
    pub max_ratio: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            reserve: 256 << 20,
            max_ratio: 100,
        }
    }
}

/// What any layer may unpack to, whatever its compressed size.
pub const RATIO_FLOOR: u64 = 64 << 20;
/// How often (in unpacked bytes) the free space is looked at again while a layer unpacks.
const SPACE_CHECK_EVERY: u64 = 32 << 20;

/// Where progress lines go (stderr for the CLI; nowhere by default).
#[derive(Clone, Default)]
pub struct Progress(Option<std::sync::Arc<ProgressFn>>);

type ProgressFn = dyn Fn(&str) + Send + Sync;

impl Progress {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress(Some(std::sync::Arc::new(f)))
    }
    pub(crate) fn say(&self, line: &str) {
        if let Some(f) = &self.0 {
            f(line)
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}

/// What a resolve did, for callers that report progress (and for tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveStats {
    /// Layers unpacked by this call.
    pub unpacked: usize,
    /// Layers found already unpacked.
    pub reused: usize,
    /// Chain IDs (`sha256:...`) of the image's layers, lowest first.
    pub chain_ids: Vec<String>,
    /// Layer blobs downloaded or read from an archive by this call, and their bytes.
    pub fetched: usize,
    pub fetched_bytes: u64,
    /// Whether a registry was asked anything.
    pub network: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// Chain IDs for a list of diff IDs: `chain(1) = diff(1)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The OCI name of the architecture this binary runs on.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `image` as written in a spec, for messages.
pub(crate) fn describe(r: &ImageRef) -> String {
    let with_tag = |kind: &str, p: &Path, tag: &Option<String>| match tag {
        Some(t) => format!("{kind}:{}:{t}", p.display()),
        None => format!("{kind}:{}", p.display()),
    };
    match r {
        ImageRef::OciLayout { dir, tag } => with_tag("oci", dir, tag),
        ImageRef::OciArchive { path, tag } => with_tag("oci-archive", path, tag),
        ImageRef::DockerArchive { path, tag } => with_tag("docker-archive", path, tag),
        ImageRef::Rootfs { dir } => format!("rootfs:{}", dir.display()),
        ImageRef::Registry(reg) => reg.to_string(),
    }
}

fn mkdir_private(path: &Path) -> Result<(), ImageError> {
    let err = |step, source| ImageError::Store {
        step,
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(|e| err("creating", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| err("setting mode 0700 on", e))
}

fn pid_alive(pid: i32) -> bool {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    pid > 0
        && !matches!(
            kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`: `root`, `root/layers` and `root/tmp`
    /// get mode 0700, and temp dirs left by dead processes are removed.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            layers: root.join("layers"),
            tmp: root.join("tmp"),
            content: Content::new(root),
            registry: RegistryOptions::default(),
            progress: Progress::default(),
            limits: UnpackLimits::default(),
        };
        mkdir_private(&store.root)?;
        mkdir_private(&store.layers)?;
        mkdir_private(&store.tmp)?;
        for d in store.content.dirs() {
            mkdir_private(d)?;
        }
        store.remove_stale_temps()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the layer with this chain ID (`sha256:...`) is (or would be) unpacked.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.layers
            .join(chain_id.strip_prefix("sha256:").unwrap_or(chain_id))
    }

    fn remove_stale_temps(&self) -> Result<(), ImageError> {
        let entries = fs::read_dir(&self.tmp).map_err(|source| ImageError::Store {
            step: "listing",
            path: self.tmp.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix("layer-").or_else(|| n.strip_prefix("blob-")))
            else {
                continue; // not ours: `<root>/tmp` may be shared with other modules
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(pid_alive) {
                continue;
            }
            let path = entry.path();
            // remove_dir_all does not follow symlinks inside the tree.
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "removing stale layer temp dir");
            }
        }
        Ok(())
    }

    /// Resolves an image reference to its unpacked layer dirs and config.
    pub fn resolve(&self, r: &ImageRef) -> Result<ResolvedImage, ImageError> {
        self.resolve_with_stats(r).map(|(img, _)| img)
    }

    /// [`resolve`](Self::resolve), also saying which layers were unpacked now.
    pub fn resolve_with_stats(
        &self,
        r: &ImageRef,
    ) -> Result<(ResolvedImage, ResolveStats), ImageError> {
        let image = describe(r);
        match r {
            ImageRef::Rootfs { dir } => {
                if !fs::metadata(dir).map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(ImageError::RootfsNotDir {
                        image,
                        dir: dir.clone(),
                    });
                }
                let img = ResolvedImage {
                    layers: vec![dir.clone()],
                    config: ImageConfig::default(),
                    digest: None,
                };
                Ok((img, ResolveStats::default()))
            }
            ImageRef::OciLayout { dir, tag } => {
                let _lock = self.content.lock(false)?;
                self.resolve_layout(&image, dir, tag.as_deref())
            }
            ImageRef::OciArchive { .. } | ImageRef::DockerArchive { .. } => {
                let _lock = self.content.lock(false)?;
                self.resolve_archive(r)
            }
            ImageRef::Registry(reg) => {
                let _lock = self.content.lock(false)?;
                self.resolve_registry(reg, false)
            }
        }
    }

    /// Bounds every layer unpacked from now on by `limits`.
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// What the layers of `rec` take on disk (allocated blocks: holes count nothing).
    pub fn unpacked_size(&self, rec: &super::content::ImageRecord) -> u64 {
        fn walk(dir: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(entries) = fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => m.blocks() * 512 + walk(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        }
        rec.chain_ids.iter().map(|c| walk(&self.layer_dir(c))).sum()
    }

    /// Uses `opts` for registry access (timeouts, insecure registries, credentials file).
    pub fn with_registry_options(mut self, opts: RegistryOptions) -> ImageStore {
        self.registry = opts;
        self
    }

    /// Sends progress lines (one per pull step) to `progress`.
    pub fn with_progress(mut self, progress: Progress) -> ImageStore {
        self.progress = progress;
        self
    }

    fn resolve_layout(
        &self,
        image: &str,
        dir: &Path,
        tag: Option<&str>,
    ) -> Result<(ResolvedImage, ResolveStats), ImageError> {
        let layout = Layout { image, dir };
        layout.check_layout_file()?;
        let index_path = dir.join("index.json");
        let index: Index =
            layout.parse("index", &index_path, &layout.read_json_file(&index_path)?)?;
        let mut desc = layout.pick_tagged(&index, &index_path, tag)?;

        // Follow nested indexes down to a manifest for this platform.
        let mut depth = 0;
        let (manifest_desc, manifest): (Descriptor, Manifest) = loop {
            let bytes = layout.read_blob(&desc, MAX_JSON_SIZE)?;
            let path = layout.blob_path(&desc)?;
            let kind = match desc.media_type.as_deref() {
                Some(t) if INDEX_TYPES.contains(&t) => "index",
                Some(t) if MANIFEST_TYPES.contains(&t) => "manifest",
                Some(t) => {
                    return Err(ImageError::MediaType {
                        image: image.into(),
                        digest: desc.digest.clone(),
                        media_type: t.into(),
                    })
                }
                // No media type on the descriptor: an index has `manifests`, a manifest `config`.
                None => {
                    let v: serde_json::Value = layout.parse("manifest", &path, &bytes)?;
                    if v.get("manifests").is_some() {
                        "index"
                    } else {
                        "manifest"
                    }
                }
            };
            if kind == "manifest" {
                let m: Manifest = layout.parse("manifest", &path, &bytes)?;
                if let Some(t) = m.media_type.as_deref() {
                    if INDEX_TYPES.contains(&t) {
                        return Err(ImageError::MediaType {
                            image: image.into(),
                            digest: desc.digest.clone(),
                            media_type: t.into(),
                        });
                    }
                }
                break (desc, m);
            }
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(ImageError::IndexTooDeep {
                    image: image.into(),
                    digest: desc.digest,
                    depth: MAX_INDEX_DEPTH,
                });
            }
            let nested: Index = layout.parse("index", &path, &bytes)?;
            let want = Want::host();
            desc = match pick_platform(&nested.manifests, &want) {
                Some(d) => d.clone(),
                None => {
                    return Err(ImageError::NoPlatform {
                        image: image.into(),
                        digest: desc.digest,
                        platform: want.describe(),
                    })
                }
            };
        };

        // Config.
        let cdesc = &manifest.config;
        let cbytes = layout.read_blob(cdesc, MAX_JSON_SIZE)?;
        let CheckedConfig {
            config, diff_ids, ..
        } = image_config(image, &manifest, &cbytes, &layout.blob_path(cdesc)?)?;
        let diff_ids = &diff_ids;

        // Layers, lowest first.
        let chains = chain_ids(diff_ids);
        let mut stats = ResolveStats {
            chain_ids: chains.clone(),
            ..Default::default()
        };
        let mut layers = Vec::with_capacity(chains.len());
        for ((ldesc, diff_id), chain) in manifest.layers.iter().zip(diff_ids).zip(&chains) {
            let target = self.layer_dir(chain);
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => stats.reused += 1,
                Ok(_) => {
                    return Err(ImageError::Store {
                        step: "using layer",
                        path: target,
                        source: io::Error::other("exists and is not a directory"),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.unpack(&layout, ldesc, diff_id, chain, &target)?;
                    stats.unpacked += 1;
                }
                Err(source) => {
                    return Err(ImageError::Store {
                        step: "inspecting layer",
                        path: target,
                        source,
                    })
                }
            }
            layers.push(target);
        }
        let img = ResolvedImage {
            layers,
            config,
            digest: Some(manifest_desc.digest),
        };
        Ok((img, stats))
    }

    /// Verifies the layer blob, unpacks it into a temp dir while checking its diff ID, then renames
    /// the dir into place. Any failure removes the temp dir.
    fn unpack(
        &self,
        layout: &Layout<'_>,
        desc: &Descriptor,
        diff_id: &str,
        chain: &str,
        target: &Path,
    ) -> Result<(), ImageError> {
        let layer_err = |source: ImageError| ImageError::Layer {
            image: layout.image.into(),
            digest: desc.digest.clone(),
            source: Box::new(source),
        };
        let compression_hint = layer_compression(layout, desc)?;
        // Verify the compressed blob before anything parses it.
        layout.verify_blob_file(desc)?;

        self.install_layer(chain, target, |tmp| {
            let file = layout.open_blob(desc)?;
            let mut buf = BufReader::with_capacity(256 * 1024, file.take(desc.size));
            let actual = unpack_blob(&mut buf, compression_hint, tmp, desc.size, &self.limits)
                .map_err(layer_err)?;
            if actual != diff_id {
                return Err(ImageError::DiffIdMismatch {
                    image: layout.image.into(),
                    digest: desc.digest.clone(),
                    expected: diff_id.into(),
                    actual,
                });
            }
            Ok(())
        })
    }

    /// Builds a layer dir safely: `fill` writes it into a fresh temp dir under `<root>/tmp`
    /// (named after the process and `chain`, removed on any failure), which is then synced and
    /// renamed to `target` — unless another process got there first, whose copy is kept.
    pub(super) fn install_layer(
        &self,
        chain: &str,
        target: &Path,
        fill: impl FnOnce(&Path) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let store_err = |step, path: &Path, source| ImageError::Store {
            step,
            path: path.to_path_buf(),
            source,
        };
        let chain_hex = chain.strip_prefix("sha256:").unwrap_or(chain);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!(
            "layer-{}-{n}-{}",
            std::process::id(),
            &chain_hex[..12.min(chain_hex.len())]
        ));
        fs::create_dir(&tmp).map_err(|e| store_err("creating", &tmp, e))?;
        let result = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(|e| store_err("setting mode on", &tmp, e))
            .and_then(|()| fill(&tmp));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Make the content durable before it becomes visible under its final name.
        if let Ok(f) = File::open(&tmp) {
            let _ = nix::unistd::syncfs(&f);
        }
        match crate::sys::openat::rename_noreplace(&tmp, target) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                // Another process unpacked the same layer first: keep theirs.
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(store_err("renaming layer into", target, e))
            }
        }
    }
}

/// The compression a layer media type implies; unknown non-layer types are refused.
fn layer_compression(layout: &Layout<'_>, desc: &Descriptor) -> Result<Compression, ImageError> {
    media_compression(layout.image, desc)
}

/// The compression a layer media type implies; unknown non-layer types are refused.
pub(crate) fn media_compression(image: &str, desc: &Descriptor) -> Result<Compression, ImageError> {
    let t = desc.media_type.as_deref().unwrap_or("");
    let bad = || ImageError::MediaType {
        image: image.into(),
        digest: desc.digest.clone(),
        media_type: t.into(),
    };
    let is_layer = t.starts_with("application/vnd.oci.image.layer.")
        || t.starts_with("application/vnd.docker.image.rootfs.")
        || t.is_empty();
    if !is_layer || t.contains("encrypted") {
        return Err(bad());
    }
    Ok(if t.ends_with("+gzip") || t.ends_with(".gzip") {
        Compression::Gzip
    } else if t.ends_with("+zstd") || t.ends_with(".zstd") {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Compression by magic bytes; `None` when neither gzip nor zstd.
pub(crate) fn sniff(b: &[u8]) -> Option<Compression> {
    if b.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// An image's config blob, parsed and checked against its manifest.
pub(crate) struct CheckedConfig {
    pub parsed: oci_spec::image::ImageConfiguration,
    /// What a container runs with.
    pub config: ImageConfig,
    /// One per manifest layer, each a well-formed digest (as are the layers').
    pub diff_ids: Vec<String>,
}

/// What a container of the image runs with, from its parsed config.
pub(crate) fn run_config(parsed: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    match parsed.config() {
        Some(c) => ImageConfig {
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        },
        None => ImageConfig::default(),
    }
}

/// Parses the config of an image (`bytes`, the blob `manifest.config` names, read from
/// `source`) and checks it against the manifest.
pub(crate) fn image_config(
    image: &str,
    manifest: &Manifest,
    bytes: &[u8],
    source: &Path,
) -> Result<CheckedConfig, ImageError> {
    let cdesc = &manifest.config;
    if let Some(t) = cdesc.media_type.as_deref() {
        if !CONFIG_TYPES.contains(&t) {
            return Err(ImageError::MediaType {
                image: image.into(),
                digest: cdesc.digest.clone(),
                media_type: t.into(),
            });
        }
    }
    let parsed =
        oci_spec::image::ImageConfiguration::from_reader(bytes).map_err(|e| ImageError::Parse {
            image: image.into(),
            what: "config",
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
    let config = run_config(&parsed);
    let diff_ids = parsed.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::LayerCount {
            image: image.into(),
            layers: manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    for d in diff_ids
        .iter()
        .chain(manifest.layers.iter().map(|l| &l.digest))
    {
        if sha256_hex(d).is_none() {
            return Err(ImageError::BadDigest {
                image: image.into(),
                digest: d.clone(),
            });
        }
    }
    Ok(CheckedConfig {
        parsed,
        config,
        diff_ids,
    })
}

/// Unpacks a layer blob read from `buf` into the empty dir `dir`, decompressing by its magic
/// bytes (else as `hint` says), and returns its diff ID: the sha256 of the whole uncompressed
/// stream, including what follows the tar's end marker. Reads `buf` only to the end of the
/// compressed stream. `compressed` is the blob's size: the unpacked stream may outgrow it
/// only as far as `limits` allow (and never the store's reserve).
pub(crate) fn unpack_blob<R: Read + Send>(
    buf: &mut BufReader<R>,
    hint: Compression,
    dir: &Path,
    compressed: u64,
    limits: &UnpackLimits,
) -> Result<String, ImageError> {
    let read_err = |source| ImageError::TarRead { source };
    let magic = buf.fill_buf().map_err(read_err)?;
    let decoder: Box<dyn Read + Send + '_> = match sniff(magic).unwrap_or(hint) {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(read_err)?)
        }
    };
    let guarded = Guard {
        inner: decoder,
        dir,
        compressed,
        limits: *limits,
        count: 0,
        next_check: 0,
        tripped: None,
    };
    let hashed = HashReader {
        inner: guarded,
        hasher: Sha256::new(),
        count: 0,
    };
    // Reading, hashing and decompressing run on a thread of their own, ahead of the
    // extraction (file creation, which is mostly kernel time): the two overlap.
    let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_CHUNKS);
    let (spent_tx, spent_rx) = std::sync::mpsc::channel();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (unpacked, produced) = std::thread::scope(|s| {
        let producer = s.spawn(|| produce(hashed, tx, spent_rx, &stop));
        let mut reader = ChannelReader {
            rx,
            spent: spent_tx,
            chunk: Chunk::default(),
            pos: 0,
        };
        let unpacked = extract::unpack_layer_limited(&mut reader, dir, MAX_LAYER_SIZE);
        // A failed extraction needs nothing more; a finished one still hashes what follows
        // the tar's end marker.
        stop.store(unpacked.is_err(), Ordering::Relaxed);
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (unpacked, produced)
    });
    let (mut hashed, read_result) = produced;
    if let Some(e) = hashed.inner.tripped.take() {
        return Err(e);
    }
    unpacked?;
    read_result.map_err(read_err)?;
    if hashed.count > MAX_LAYER_SIZE {
        return Err(ImageError::LayerTooLarge {
            limit: MAX_LAYER_SIZE,
        });
    }
    Ok(format!("sha256:{}", hex::encode(hashed.hasher.finalize())))
}

/// Chunks of the uncompressed stream in flight between the decompressing thread and the
/// extraction, and their size.
const PREFETCH_CHUNKS: usize = 8;
const PREFETCH_CHUNK: usize = 256 * 1024;

/// A buffer of `PREFETCH_CHUNK` bytes, the first `len` of them filled.
#[derive(Default)]
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// Reads `hashed` to its end (at most `MAX_LAYER_SIZE` + 1 bytes), sending each full chunk to
/// the extraction while it listens, then only hashing. The extraction hands the buffers back
/// on `spent`, so the same few serve the whole layer (a fresh 256 KiB buffer a chunk is an
/// mmap, its page faults and an munmap). Stops early when `stop` is set (the extraction
/// failed) or on a read error, which the extraction also receives.
fn produce<R: Read>(
    mut hashed: HashReader<R>,
    tx: std::sync::mpsc::SyncSender<io::Result<Chunk>>,
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    stop: &std::sync::atomic::AtomicBool,
) -> (HashReader<R>, io::Result<()>) {
    let mut listening = true;
    let mut spare = None;
    while !stop.load(Ordering::Relaxed) && hashed.count <= MAX_LAYER_SIZE {
        let mut buf = spare
            .take()
            .or_else(|| spent.try_recv().ok())
            .unwrap_or_else(|| vec![0; PREFETCH_CHUNK]);
        let mut len = 0;
        let mut failed = None;
        while len < buf.len() {
            match hashed.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if len > 0 && listening {
            if let Err(std::sync::mpsc::SendError(unsent)) = tx.send(Ok(Chunk { buf, len })) {
                // The extraction is over: only hashing from here on, in this one buffer.
                listening = false;
                spare = unsent.ok().map(|c| c.buf);
            }
        } else {
            spare = Some(buf);
        }
        if let Some(e) = failed {
            let mine = io::Error::new(e.kind(), e.to_string());
            let _ = tx.send(Err(e));
            return (hashed, Err(mine));
        }
        if len < PREFETCH_CHUNK {
            break;
        }
    }
    (hashed, Ok(()))
}

/// The extraction's side of [`produce`]: a `Read` over the chunks it sends, each buffer handed
/// back once read; the end of the stream once it has sent the last.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Chunk>>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    chunk: Chunk,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    if !done.buf.is_empty() {
                        let _ = self.spent.send(done.buf);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len - self.pos);
        buf[..n].copy_from_slice(&self.chunk.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The uncompressed stream of a layer, stopped (with the reason kept in `tripped`) once it
/// passes the ratio limit or the store's free space falls to the reserve.
struct Guard<'a, R> {
    inner: R,
    dir: &'a Path,
    compressed: u64,
    limits: UnpackLimits,
    count: u64,
    next_check: u64,
    tripped: Option<ImageError>,
}

impl<R: Read> Guard<'_, R> {
    fn check(&mut self) -> Option<ImageError> {
        let allowed = self
            .compressed
            .saturating_mul(self.limits.max_ratio)
            .max(RATIO_FLOOR);
        if self.count > allowed {
            return Some(ImageError::LayerRatio {
                compressed: self.compressed,
                unpacked: self.count,
                ratio: self.count / self.compressed.max(1),
                limit: self.limits.max_ratio,
            });
        }
        if self.count >= self.next_check {
            self.next_check = self.count + SPACE_CHECK_EVERY;
            if let Ok(st) = nix::sys::statvfs::statvfs(self.dir) {
                let available = st.blocks_available() * st.fragment_size();
                if available < self.limits.reserve {
                    return Some(ImageError::StoreFull {
                        path: self.dir.to_path_buf(),
                        available,
                        reserve: self.limits.reserve,
                        unpacked: self.count,
                    });
                }
            }
        }
        None
    }
}

impl<R: Read> Read for Guard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tripped.is_some() {
            return Err(io::Error::other("layer refused"));
        }
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(e) = self.check() {
            let msg = e.to_string();
            self.tripped = Some(e);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

pub(crate) struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// One OCI layout directory being read for one image reference.
struct Layout<'a> {
    image: &'a str,
    dir: &'a Path,
}

impl Layout<'_> {
    fn read_err(&self, path: &Path, source: io::Error) -> ImageError {
        ImageError::Read {
            image: self.image.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::Parse {
            image: self.image.into(),
            what,
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn check_layout_file(&self) -> Result<(), ImageError> {
        let path = self.dir.join("oci-layout");
        let not_layout = |message: String| ImageError::NotLayout {
            image: self.image.into(),
            dir: self.dir.into(),
            message,
        };
        let bytes = match self.read_json_file(&path) {
            Err(ImageError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(not_layout("no oci-layout file".into()))
            }
            other => other?,
        };
        let f: LayoutFile = self.parse("oci-layout", &path, &bytes)?;
        if !f.image_layout_version.starts_with("1.") {
            return Err(not_layout(format!(
                "unsupported imageLayoutVersion {:?}",
                f.image_layout_version
            )));
        }
        Ok(())
    }

    /// Reads a small JSON file of the layout (not a blob), refusing anything over the cap.
    fn read_json_file(&self, path: &Path) -> Result<Vec<u8>, ImageError> {
        let f = File::open(path).map_err(|e| self.read_err(path, e))?;
        let mut bytes = Vec::new();
        f.take(MAX_JSON_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_err(path, e))?;
        if bytes.len() as u64 > MAX_JSON_SIZE {
            return Err(ImageError::TooLarge {
                image: self.image.into(),
                path: path.into(),
                limit: MAX_JSON_SIZE,
            });
        }
        Ok(bytes)
    }

    fn pick_tagged(
        &self,
        index: &Index,
        index_path: &Path,
        tag: Option<&str>,
    ) -> Result<Descriptor, ImageError> {
        let tags: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned())
            .collect();
        match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
                .cloned()
                .ok_or_else(|| ImageError::NoSuchTag {
                    image: self.image.into(),
                    tag: t.into(),
                    index: index_path.into(),
                    tags,
                }),
            None if index.manifests.len() == 1 => Ok(index.manifests[0].clone()),
            None => Err(ImageError::AmbiguousTag {
                image: self.image.into(),
                index: index_path.into(),
                count: index.manifests.len(),
                tags,
            }),
        }
    }

    fn blob_path(&self, desc: &Descriptor) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(&desc.digest).ok_or_else(|| ImageError::BadDigest {
            image: self.image.into(),
            digest: desc.digest.clone(),
        })?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    fn mismatch(&self, desc: &Descriptor, path: &Path, problem: String) -> ImageError {
        ImageError::BlobMismatch {
            image: self.image.into(),
            digest: desc.digest.clone(),
            path: path.into(),
            problem,
        }
    }

    /// Opens a blob, checking it is a regular file of the descriptor's size.
    fn open_blob(&self, desc: &Descriptor) -> Result<File, ImageError> {
        let path = self.blob_path(desc)?;
        let f = File::open(&path).map_err(|e| self.read_err(&path, e))?;
        let meta = f.metadata().map_err(|e| self.read_err(&path, e))?;
        if !meta.is_file() {
            return Err(self.mismatch(desc, &path, "not a regular file".into()));
        }
        if meta.size() != desc.size {
            return Err(self.mismatch(
                desc,
                &path,
                format!("size is {}, descriptor says {}", meta.size(), desc.size),
            ));
        }
        Ok(f)
    }

    /// Hashes a whole blob and checks size and digest.
    fn verify_blob_file(&self, desc: &Descriptor) -> Result<(), ImageError> {
        let path = self.blob_path(desc)?;
        let f = self.open_blob(desc)?;
        let mut h = HashReader {
            inner: f.take(desc.size),
            hasher: Sha256::new(),
            count: 0,
        };
        io::copy(&mut h, &mut io::sink()).map_err(|e| self.read_err(&path, e))?;
        self.check_hash(desc, &path, h.count, h.hasher)
    }

    fn check_hash(
        &self,
        desc: &Descriptor,
        path: &Path,
        count: u64,
        hasher: Sha256,
    ) -> Result<(), ImageError> {
        if count != desc.size {
            return Err(self.mismatch(
                desc,
                path,
                format!("read {count} bytes, descriptor says {}", desc.size),
            ));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            return Err(self.mismatch(desc, path, format!("content hashes to {actual}")));
        }
        Ok(())
    }

    /// Reads a small blob (index, manifest, config) whole, verified.
    fn read_blob(&self, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(desc)?;
        if desc.size > cap {
            return Err(ImageError::TooLarge {
                image: self.image.into(),
                path,
                limit: cap,
            });
        }
        let f = self.open_blob(desc)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        f.take(desc.size)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_err(&path, e))?;
        self.check_hash(
            desc,
            &path,
            bytes.len() as u64,
            Sha256::new_with_prefix(&bytes),
        )?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;
    use std::time::Instant;

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(d.len() as u64);
                    b.append_data(&mut h, name, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, &b""[..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn write_blob(dir: &Path, bytes: &[u8]) -> serde_json::Value {
        let d = sha(bytes);
        let p = dir.join("blobs/sha256");
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        serde_json::json!({ "digest": d, "size": bytes.len() })
    }

    fn with_type(mut v: serde_json::Value, t: &str) -> serde_json::Value {
        v["mediaType"] = t.into();
        v
    }

    struct Fixture {
        dir: tempfile::TempDir,
        diff_ids: Vec<String>,
        layer_blobs: Vec<String>,
        manifest_digest: String,
    }

    /// An OCI layout with two layers: the second (zstd) deletes `etc/a` and adds `etc/new`.
    /// `nested` puts a multi-platform index between index.json and the manifest.
    fn fixture(tags: &[&str], nested: bool, diff_override: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let l1 = tar_of(&[
            ("etc", None),
            ("etc/a", Some(b"to be deleted")),
            ("etc/keep", Some(b"kept")),
            ("bin", None),
            ("bin/tool", Some(b"#!tool")),
        ]);
        let l2 = tar_of(&[
            ("etc", None),
            ("etc/.wh.a", Some(b"")),
            ("etc/new", Some(b"new")),
        ]);
        let l1_blob = gzip(&l1);
        let l2_blob = zstd::encode_all(&l2[..], 3).unwrap();
        let mut diff_ids = vec![sha(&l1), sha(&l2)];
        if let Some(o) = diff_override {
            diff_ids[1] = o.to_string();
        }
        let config = serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/tool"],
                "Cmd": ["--serve"],
                "Env": ["PATH=/bin", "A=b"],
                "WorkingDir": "/srv",
                "User": "1000:1000"
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids }
        });
        let config_desc = with_type(
            write_blob(d, config.to_string().as_bytes()),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [
                with_type(write_blob(d, &l1_blob), "application/vnd.oci.image.layer.v1.tar+gzip"),
                with_type(write_blob(d, &l2_blob), "application/vnd.oci.image.layer.v1.tar+zstd"),
            ]
        });
        let manifest_bytes = manifest.to_string();
        let mut top = with_type(
            write_blob(d, manifest_bytes.as_bytes()),
            "application/vnd.oci.image.manifest.v1+json",
        );
        if nested {
            let mut decoy = top.clone();
            decoy["platform"] = serde_json::json!({ "architecture": "decoyarch", "os": "linux" });
            let mut real = top.clone();
            real["platform"] = serde_json::json!({ "architecture": host_arch(), "os": "linux" });
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [decoy, real]
            });
            top = with_type(
                write_blob(d, index.to_string().as_bytes()),
                "application/vnd.oci.image.index.v1+json",
            );
        }
        let manifests: Vec<serde_json::Value> = tags
            .iter()
            .map(|t| {
                let mut m = top.clone();
                m["annotations"] = serde_json::json!({ REF_NAME: t });
                m
            })
            .collect();
        let manifests = if tags.is_empty() {
            vec![top]
        } else {
            manifests
        };
        fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            d.join("index.json"),
            serde_json::json!({ "schemaVersion": 2, "manifests": manifests }).to_string(),
        )
        .unwrap();
        Fixture {
            dir,
            diff_ids,
            layer_blobs: vec![sha(&l1_blob), sha(&l2_blob)],
            manifest_digest: sha(manifest_bytes.as_bytes()),
        }
    }

    fn oci(f: &Fixture, tag: Option<&str>) -> ImageRef {
        ImageRef::OciLayout {
            dir: f.dir.path().to_path_buf(),
            tag: tag.map(String::from),
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn tmp_is_empty(store: &ImageStore) -> bool {
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[2], sha(format!("{} {c}", ids[1]).as_bytes()));
    }

    #[test]
    fn open_creates_private_dirs_and_removes_stale_temps() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().join("state");
        fs::create_dir_all(r.join("tmp/layer-999999999-0-abc/sub")).unwrap();
        fs::create_dir_all(r.join(format!("tmp/layer-{}-0-live", std::process::id()))).unwrap();
        fs::create_dir_all(r.join("tmp/someone-else")).unwrap();
        let store = ImageStore::open(&r).unwrap();
        for p in [r.clone(), r.join("layers"), r.join("tmp")] {
            assert_eq!(
                fs::metadata(&p).unwrap().mode() & 0o7777,
                0o700,
                "{}",
                p.display()
            );
        }
        assert!(
            !r.join("tmp/layer-999999999-0-abc").exists(),
            "a dead process's temp dir is removed"
        );
        assert!(
            r.join(format!("tmp/layer-{}-0-live", std::process::id()))
                .exists(),
            "a live one is kept"
        );
        assert!(
            r.join("tmp/someone-else").exists(),
            "other modules' temp files are not touched"
        );
        assert_eq!(store.root(), r);
    }

    #[test]
    fn resolves_two_layers_once() {
        if !is_root() {
            eprintln!(
                "skipping resolves_two_layers_once: unpacking preserves ownership and needs root"
            );
            return;
        }
        let f = fixture(&["v1"], false, None);
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let (img, stats) = store.resolve_with_stats(&oci(&f, Some("v1"))).unwrap();
        assert_eq!((stats.unpacked, stats.reused), (2, 0));
        let chain2 = sha(format!("{} {}", f.diff_ids[0], f.diff_ids[1]).as_bytes());
        assert_eq!(stats.chain_ids, vec![f.diff_ids[0].clone(), chain2.clone()]);
        let hex = |s: &str| s.trim_start_matches("sha256:").to_string();
        assert_eq!(
            img.layers,
            vec![
                root.path().join("layers").join(hex(&f.diff_ids[0])),
                root.path().join("layers").join(hex(&chain2))
            ]
        );
        assert_eq!(img.digest.as_deref(), Some(f.manifest_digest.as_str()));
        assert_eq!(
            img.config,
            ImageConfig {
                entrypoint: Some(vec!["/bin/tool".into()]),
                cmd: Some(vec!["--serve".into()]),
                env: vec!["PATH=/bin".into(), "A=b".into()],
                working_dir: Some("/srv".into()),
                user: Some("1000:1000".into()),
            }
        );
        let (bottom, top) = (&img.layers[0], &img.layers[1]);
        assert_eq!(fs::read(bottom.join("etc/a")).unwrap(), b"to be deleted");
        assert_eq!(fs::read(bottom.join("bin/tool")).unwrap(), b"#!tool");
        assert_eq!(fs::read(top.join("etc/new")).unwrap(), b"new");
        let wh = fs::symlink_metadata(top.join("etc/a")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "whiteout is a 0:0 char device"
        );
        assert!(tmp_is_empty(&store));

        // Warm: nothing unpacked again, same dirs.
        let ino = fs::metadata(top).unwrap().ino();
        let start = Instant::now();
        let (again, stats) = store.resolve_with_stats(&oci(&f, Some("v1"))).unwrap();
        let took = start.elapsed();
        eprintln!("warm resolve took {took:?}");
        assert_eq!((stats.unpacked, stats.reused), (0, 2));
        assert_eq!(again, img);
        assert_eq!(fs::metadata(top).unwrap().ino(), ino);
        assert!(took.as_millis() < 50, "warm resolve took {took:?}");

        // Layer blobs are not read when their dirs exist: remove them and resolve again.
        for b in &f.layer_blobs {
            fs::remove_file(f.dir.path().join("blobs/sha256").join(hex(b))).unwrap();
        }
        assert_eq!(store.resolve(&oci(&f, Some("v1"))).unwrap(), img);
    }

    #[test]
    fn nested_index_picks_host_platform() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let f = fixture(&[], true, None);
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let img = store.resolve(&oci(&f, None)).unwrap();
        assert_eq!(img.digest.as_deref(), Some(f.manifest_digest.as_str()));
        assert_eq!(img.layers.len(), 2);
    }

    #[test]
    fn missing_tag_lists_tags() {
        let f = fixture(&["v1"], false, None);
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let err = store.resolve(&oci(&f, Some("v2"))).unwrap_err();
        let d = f.dir.path().display();
        assert_eq!(
            err.to_string(),
            format!("image oci:{d}:v2: no manifest tagged \"v2\" in {d}/index.json (tags: v1)")
        );

        let f2 = fixture(&["v1", "v3"], false, None);
        let err = store.resolve(&oci(&f2, None)).unwrap_err();
        assert!(
            matches!(err, ImageError::AmbiguousTag { count: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("(tags: v1, v3)"), "{err}");
    }

    #[test]
    fn corrupt_blob_leaves_nothing() {
        let f = fixture(&["v1"], false, None);
        let blob = f
            .dir
            .path()
            .join("blobs/sha256")
            .join(f.layer_blobs[1].trim_start_matches("sha256:"));
        let mut bytes = fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&blob, &bytes).unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let err = store.resolve(&oci(&f, Some("v1"))).unwrap_err();
        assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&f.layer_blobs[1]), "{err}");
        let chain2 = sha(format!("{} {}", f.diff_ids[0], f.diff_ids[1]).as_bytes());
        assert!(!store.layer_dir(&chain2).exists());
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn diff_id_mismatch_is_discarded() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let wrong = format!("sha256:{}", "0".repeat(64));
        let f = fixture(&["v1"], false, Some(&wrong));
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let err = store.resolve(&oci(&f, Some("v1"))).unwrap_err();
        assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
        let chain2 = sha(format!("{} {}", f.diff_ids[0], wrong).as_bytes());
        assert!(!store.layer_dir(&chain2).exists());
        assert!(
            store.layer_dir(&f.diff_ids[0]).exists(),
            "the good lower layer is kept"
        );
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn concurrent_resolves_share_layers() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let f = fixture(&["v1"], false, None);
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let r = oci(&f, Some("v1"));
        let results: Vec<ResolvedImage> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| store.resolve(&r).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_dir(root.path().join("layers")).unwrap().count(), 2);
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn json_is_capped() {
        let f = fixture(&["v1"], false, None);
        fs::write(
            f.dir.path().join("index.json"),
            vec![b' '; (MAX_JSON_SIZE + 10) as usize],
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let err = store.resolve(&oci(&f, Some("v1"))).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn bad_digest_cannot_escape_blobs_dir() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:../../../../etc/passwd", "size": 10 }]});
        fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        let store = ImageStore::open(&dir.path().join("store")).unwrap();
        let r = ImageRef::OciLayout {
            dir: dir.path().into(),
            tag: None,
        };
        let err = store.resolve(&r).unwrap_err();
        assert!(matches!(err, ImageError::BadDigest { .. }), "{err}");
    }

    #[test]
    fn rootfs_and_missing_archives() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&root.path().join("store")).unwrap();
        let img = store
            .resolve(&ImageRef::Rootfs {
                dir: root.path().into(),
            })
            .unwrap();
        assert_eq!(
            img,
            ResolvedImage {
                layers: vec![root.path().into()],
                config: ImageConfig::default(),
                digest: None
            }
        );
        let err = store
            .resolve(&ImageRef::Rootfs {
                dir: root.path().join("missing"),
            })
            .unwrap_err();
        assert!(matches!(err, ImageError::RootfsNotDir { .. }), "{err}");
        for r in [
            "oci-archive:/nonexistent/x.tar",
            "docker-archive:/nonexistent/x.tar",
        ] {
            let err = store.resolve(&ImageRef::parse(r).unwrap()).unwrap_err();
            assert!(matches!(err, ImageError::Read { .. }), "{err}");
        }
    }

    /// The layers stack under overlayfs: the whiteout hides the lower file.
    #[test]
    fn overlay_mount_of_resolved_layers() {
        if !is_root() {
            eprintln!("skipping overlay_mount_of_resolved_layers: needs root to mount overlayfs");
            return;
        }
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let f = fixture(&["v1"], false, None);
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let img = store.resolve(&oci(&f, Some("v1"))).unwrap();
        let target = tempfile::tempdir().unwrap();
        let lower: Vec<String> = img
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let opts = format!("lowerdir={}", lower.join(":"));
        if let Err(e) = mount(
            Some("overlay"),
            target.path(),
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        ) {
            eprintln!("skipping overlay check: mount failed: {e}");
            return;
        }
        let t = target.path();
        let check = || -> Result<(), String> {
            let exists = |p: &str| fs::symlink_metadata(t.join(p)).is_ok();
            if exists("etc/a") {
                return Err("etc/a should be hidden by the whiteout".into());
            }
            if fs::read(t.join("etc/keep")).ok().as_deref() != Some(&b"kept"[..]) {
                return Err("etc/keep missing".into());
            }
            if fs::read(t.join("etc/new")).ok().as_deref() != Some(&b"new"[..]) {
                return Err("etc/new missing".into());
            }
            if !exists("bin/tool") {
                return Err("bin/tool missing".into());
            }
            Ok(())
        };
        let res = check();
        umount2(t, MntFlags::MNT_DETACH).unwrap();
        res.unwrap();
    }
}
