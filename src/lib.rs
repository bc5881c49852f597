//! berth: a declarative container supervisor.
//!
//! Module map (each module's header says what it owns):
//! - `spec`: parse and validate container spec files (pure).
//! - `image`: image references, OCI layouts and the layer store.
//! - `build`: images from Containerfiles (RUN steps are containers of `runtime`).
//! - `cgroups`: the only writer under /sys/fs/cgroup.
//! - `reconcile`: the pure planner and restart policy (what to do, never doing it).
//! - `network`: bridge networking (the only user of netlink).
//! - `runtime`: turns a spec and an image into a `ContainerPlan` and launches it.
//! - `mountinfo`: mount tables as data.
//! - `logs`: containers' log files (CRI format, size-based rotation) and reading them.
//! - `source`: the spec dir (relist as truth, inotify as hint, last good version per file).
//! - `state`: the supervisor's durable records under `<root>/state`.
//! - `supervisor`: the daemon, its config and its control socket.
//! - `init`: berth as PID 1 (mounts, modules, power-off).
//! - `interop`: Compose files in, Kubernetes manifests out (pure).
//! - `sys`: the only place with `unsafe`.
//! - `cli`: the command line.

pub mod build;
pub mod cgroups;
pub mod cli;
pub mod image;
pub mod init;
pub mod interop;
pub mod logs;
pub mod mountinfo;
pub mod network;
pub mod reconcile;
pub mod runtime;
pub mod source;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod sys;
