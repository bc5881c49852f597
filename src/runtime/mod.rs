//! The container runtime: turns a validated spec and a resolved image into a `ContainerPlan`
//! (pure data), launches it through the single-threaded helper started from our own binary,
//! and tears it down. Owns `<root>/containers`; cgroups, images and netlink belong elsewhere.

pub mod capabilities;
pub mod command;
pub mod container;
pub mod exec;
pub mod launch;
pub mod monitor;
pub mod mounts;
pub mod plan;
pub mod protocol;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod terminal;
pub mod user;
pub mod zygote;
