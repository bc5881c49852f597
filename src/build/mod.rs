//! `berth build`: an OCI image from a Containerfile (Dockerfile), into berth's image store.
//!
//! - `containerfile`: the grammar (pure, table-tested).
//! - `words`: variable expansion and word splitting of arguments (pure).
//! - `context`: the build context, `.dockerignore`, and copying files through fds.
//! - `cache`: the build cache, one record per step that made (or found) a layer.
//! - `builder`: runs the stages: FROM resolves through the image store, RUN runs as a berth
//!   container, COPY/ADD/WORKDIR write into an overlay of the stage's layers mounted in the
//!   build's private mount namespace; each such step's upper dir becomes one layer through the
//!   same layer writer `berth commit` uses.
//!
//! Owns `<root>/build-cache` and the `build-*` entries of `<root>/tmp`; layers, blobs and
//! records are written through [`crate::image::ImageStore`], containers through
//! [`crate::runtime`].

mod builder;
mod cache;
pub mod containerfile;
pub mod context;
pub mod words;

pub use builder::{build, BuildOptions, BuildReport};

use std::path::PathBuf;

use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.iter().map(|e| format!("{}:{}: {}", e.0.display(), e.1, e.2)).collect::<Vec<_>>().join("\n"))]
    Parse(Vec<(PathBuf, usize, String)>),
    /// A step failed: where, which instruction, and why.
    #[error("{file}:{line}: {instruction}: {source}")]
    Step {
        file: PathBuf,
        line: usize,
        instruction: String,
        source: Box<BuildError>,
    },
    #[error("{step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Ignore { path: PathBuf, message: String },
    #[error("source {source_name:?}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Runtime(String),
    #[error("the command exited with status {0}")]
    Exited(i32),
}
