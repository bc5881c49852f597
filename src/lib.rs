//! berth: a declarative container supervisor.
//!
//! Module map (each module's header says what it owns):
//! - `spec`: parse and validate container spec files (pure).
//! - `image`: image references, OCI layouts and the layer store.
//! - `cgroups`: the only writer under /sys/fs/cgroup.
//! - `network`: bridge networking (the only user of netlink).
//! - `runtime`: turns a spec and an image into a `ContainerPlan` and launches it.
//! - `sys`: the only place with `unsafe`.
//! - `cli`: the command line.

pub mod cgroups;
pub mod cli;
pub mod image;
pub mod network;
pub mod runtime;
pub mod spec;
pub mod sys;
