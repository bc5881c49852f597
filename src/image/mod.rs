//! Images: references, registries, archives, OCI image layouts, the content store and the layer
//! store under `--root`.
//! `save.rs` writes images out as archives; `push.rs` sends them to registries; `login.rs` the credentials file's `auths`.
//! Owns `<root>/layers`, `<root>/blobs`, `<root>/images`, `<root>/lock` and the `layer-*` and
//! `blob-*` entries of `<root>/tmp`; must not touch cgroups or mounts. Its only network traffic is
//! registry HTTP(S) (`registry.rs`).

mod archive;
mod commit;
mod content;
mod error;
pub mod extract;
mod login;
mod manage;
mod pull;
mod push;
mod reference;
mod registry;
mod save;
mod store;

pub(crate) use commit::now_rfc3339;
pub use commit::{write_layer, CommitStats};
pub use content::{HistoryRecord, ImageRecord, LayerRecord, SourceStamp};
pub use error::ImageError;
pub use extract::{unpack_layer, unpack_layer_at, LayerStats, MAX_LAYER_SIZE};
pub use login::{login, logout};
pub use manage::PruneReport;
pub use push::PushReport;
pub use reference::{ImageRef, RegistryRef};
pub use registry::RegistryOptions;
pub use save::SaveReport;
pub(crate) use store::host_arch;
pub use store::{chain_ids, ImageStore, Progress, ResolveStats, UnpackLimits, MAX_JSON_SIZE};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The parts of an image's config that decide how its process starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// An image ready to be mounted: its layer dirs (bottom first) and its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// Unpacked layer directories, lowest first. For `rootfs:` this is the dir itself.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// The manifest digest (`sha256:...`), or `None` for a plain rootfs dir.
    pub digest: Option<String>,
}
