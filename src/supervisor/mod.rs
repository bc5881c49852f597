//! The supervisor daemon: watches the spec dir, reconciles containers to it, restarts them by
//! their policy, answers the control socket, and survives its own restart by adopting what
//! runs. Decisions come from `reconcile::plan`; this module only carries them out.

pub mod config;
pub mod control;
mod daemon;
mod notify;
mod pid1;

pub use daemon::run;
