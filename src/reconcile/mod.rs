//! Reconciliation as data: what to do to bring the observed containers to the desired ones
//! (`plan.rs`) and the restart policy's decisions and delays (`policy.rs`). Everything here is
//! pure: no I/O, no clock reads, no randomness, no runtime calls; the daemon's worker carries the
//! returned actions out, one at a time per container.

pub mod health;
pub mod plan;
pub mod policy;

pub use plan::{plan, plan_shutdown, Action, Desired, DesiredSet, Observed, ObservedSet, Phase};
