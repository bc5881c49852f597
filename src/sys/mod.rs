//! sys
pub mod openat;
