//! The build cache: `<root>/build-cache/<key>.json` records what a step produced, keyed by
//! a hash of the parent layer chain, the stage's run settings, the instruction as expanded and
//! the content hash of the files it copies. An entry whose layer blob is gone (pruned) is a
//! miss; entries are written atomically, so a crash leaves an old entry or none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::image::LayerRecord;

/// What a cached step made: a layer, or nothing (a WORKDIR that already existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub layer: Option<LayerRecord>,
    /// When the step first ran: its history time, so a cached rebuild is the same image.
    #[serde(default)]
    pub created: Option<String>,
}

pub struct Cache {
    dir: PathBuf,
    enabled: bool,
}

/// The key of a step: the hash of its parts, each length-prefixed so no two lists collide.
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Cache {
    pub fn new(root: &Path, enabled: bool) -> Cache {
        Cache {
            dir: root.join("build-cache"),
            enabled,
        }
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        if !self.enabled {
            return None;
        }
        let bytes = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records `entry` for `key`; a failure only costs a later rebuild, so it is logged.
    pub fn put(&self, key: &str, entry: &Entry) {
        let write = || -> Result<(), String> {
            std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
            let data = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
            crate::state::write_atomic(
                &self.dir.join(format!("{key}.json")),
                &data,
                crate::state::Durability::Process,
            )
            .map_err(|e| e.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), "recording a build cache entry: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_entries() {
        assert_ne!(
            key(&["ab", "c"]),
            key(&["a", "bc"]),
            "parts do not run together"
        );
        assert_eq!(key(&["x"]), key(&["x"]));
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path(), true);
        assert_eq!(c.get("k"), None);
        let e = Entry {
            layer: None,
            created: None,
        };
        c.put("k", &e);
        assert_eq!(c.get("k"), Some(e.clone()));
        assert_eq!(
            Cache::new(d.path(), false).get("k"),
            None,
            "--no-cache reads nothing"
        );
    }
}
