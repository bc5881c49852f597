//! The only module with `unsafe`: thin wrappers over system calls that `nix` and `std` do not
//! offer safely. Each wrapper states the contract its callers rely on; nothing here decides
//! policy.

pub mod exec;
pub mod openat;
pub mod process;
