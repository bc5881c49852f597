//! runtime
pub mod capabilities;
pub mod seccomp;
pub mod user;
