//! The only module with `unsafe`: thin wrappers over system calls that `nix` and `std` do not
//! offer safely, and the process-wide rules for waiting on children. Each wrapper states the
//! contract its callers rely on; nothing here decides policy.

pub mod bpf;
pub mod children;
pub mod exec;
pub mod netdev;
pub mod openat;
pub mod process;
pub mod spawn;
