//! The image module's error type. Each variant names the step that failed and carries the
//! image, path or digest involved; messages are one line.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Creating or preparing a directory of the store.
    #[error("image store: {step} {}: {source}", path.display())]
    Store {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("image {image}: {} is not a directory", dir.display())]
    RootfsNotDir { image: String, dir: PathBuf },

    #[error("image {image}: reading {}: {source}", path.display())]
    Read {
        image: String,
        path: PathBuf,
        source: io::Error,
    },

    #[error("image {image}: {} is larger than the {limit}-byte limit", path.display())]
    TooLarge {
        image: String,
        path: PathBuf,
        limit: u64,
    },

    #[error("image {image}: parsing {what} {}: {message}", path.display())]
    Parse {
        image: String,
        what: &'static str,
        path: PathBuf,
        message: String,
    },

    #[error("image {image}: {} is not an OCI image layout: {message}", dir.display())]
    NotLayout {
        image: String,
        dir: PathBuf,
        message: String,
    },

    #[error("image {image}: no manifest tagged {tag:?} in {} (tags: {})", index.display(), list(tags))]
    NoSuchTag {
        image: String,
        tag: String,
        index: PathBuf,
        tags: Vec<String>,
    },

    #[error("image {image}: {} lists {count} manifests, name one with a tag (tags: {})", index.display(), list(tags))]
    AmbiguousTag {
        image: String,
        index: PathBuf,
        count: usize,
        tags: Vec<String>,
    },

    #[error("image {image}: index {digest} has no manifest for {platform}")]
    NoPlatform {
        image: String,
        digest: String,
        platform: String,
    },

    #[error("image {image}: image indexes nested deeper than {depth} levels at {digest}")]
    IndexTooDeep {
        image: String,
        digest: String,
        depth: usize,
    },

    #[error("image {image}: invalid or unsupported digest {digest:?} (want sha256:<64 hex>)")]
    BadDigest { image: String, digest: String },

    #[error("image {image}: unsupported media type {media_type:?} for {digest}")]
    MediaType {
        image: String,
        digest: String,
        media_type: String,
    },

    #[error("image {image}: blob {digest} at {}: {problem}", path.display())]
    BlobMismatch {
        image: String,
        digest: String,
        path: PathBuf,
        problem: String,
    },

    #[error(
        "image {image}: manifest has {layers} layers but the config lists {diff_ids} diff_ids"
    )]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },

    #[error(
        "image {image}: layer {digest}: uncompressed content is {actual}, config says {expected}"
    )]
    DiffIdMismatch {
        image: String,
        digest: String,
        expected: String,
        actual: String,
    },

    /// Unpacking one layer failed; `source` says how.
    #[error("image {image}: layer {digest}: {source}")]
    Layer {
        image: String,
        digest: String,
        source: Box<ImageError>,
    },

    /// A registry request failed (connect, timeout, TLS, protocol); `message` says how.
    #[error("image {image}: registry {registry}: {step}: {message}")]
    Registry {
        image: String,
        registry: String,
        step: String,
        message: String,
    },

    /// The registry answered with an HTTP error status.
    #[error(
        "image {image}: registry {registry}: {step}: HTTP {status}{}",
        detail(message)
    )]
    RegistryStatus {
        image: String,
        registry: String,
        step: String,
        status: u16,
        message: String,
    },

    #[error("image {image}: not found in registry {registry}{}", detail(message))]
    NotFound {
        image: String,
        registry: String,
        message: String,
    },

    #[error("image {image}: registry {registry}: {message}")]
    Auth {
        image: String,
        registry: String,
        message: String,
    },

    #[error("registry credentials {}: {message}", path.display())]
    AuthFile { path: PathBuf, message: String },

    /// An archive (oci-archive, docker-archive) that cannot be used.
    #[error("image {image}: archive {}: {message}", path.display())]
    Archive {
        image: String,
        path: PathBuf,
        message: String,
    },

    #[error("image {name}: no such image in the store")]
    UnknownImage { name: String },

    #[error("image store: {step} {}: {message}", path.display())]
    Record {
        step: &'static str,
        path: PathBuf,
        message: String,
    },

    // ---- layer extraction (no image context; wrapped in `Layer` by the store) ----
    #[error("reading the layer stream: {source}")]
    TarRead { source: io::Error },

    #[error("layer is larger than the {limit}-byte limit uncompressed")]
    LayerTooLarge { limit: u64 },

    #[error(
        "layer unpacks to more than {ratio} times its compressed size of {compressed} bytes \
         (over {unpacked} bytes so far; the limit is {limit}x): refused as a decompression bomb"
    )]
    LayerRatio {
        compressed: u64,
        unpacked: u64,
        ratio: u64,
        limit: u64,
    },

    #[error(
        "the image store at {path} would fill up: {available} bytes free, {reserve} kept free \
         (layer unpacked {unpacked} bytes so far)"
    )]
    StoreFull {
        path: PathBuf,
        available: u64,
        reserve: u64,
        unpacked: u64,
    },

    #[error("layer entry {entry:?}: {step}: {source}")]
    Entry {
        entry: String,
        step: &'static str,
        source: io::Error,
    },

    #[error("layer entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
}

fn list(tags: &[String]) -> String {
    if tags.is_empty() {
        "none".to_string()
    } else {
        tags.join(", ")
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}
