//! The supervisor daemon: watches the spec dir, reconciles containers to it, restarts them by
//! their policy, answers the control socket, and survives its own restart by adopting what
//! runs. Decisions come from `reconcile::plan`; the decision loop (`engine`) hands each action
//! to the container's own worker (`worker`), which reaches the host through `effects`.

pub mod config;
pub mod control;
mod daemon;
mod effects;
mod engine;
#[cfg(test)]
mod engine_tests;
mod metrics;
mod notify;
mod persist;
mod probe;
mod signals;
mod socket;
mod status;
mod watch;
mod worker;

pub use daemon::run;
pub use effects::LONGEST_SHUTDOWN;
