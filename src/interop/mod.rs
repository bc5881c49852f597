//! Moving to and from berth: Compose files in (`compose.rs`), Kubernetes manifests out
//! (`kube.rs`). Both are pure conversions; the CLI reads and writes the files.

pub mod compose;
pub mod kube;
