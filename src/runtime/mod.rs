//! runtime
pub mod capabilities;
