//! runtime
pub mod capabilities;
pub mod user;
