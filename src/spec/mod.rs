//! Container spec files: parsing and validation into a `ValidatedSpec` (pure, no I/O but reading
//! the file). Owns the spec format; must not touch the system.

mod types;
pub use types::*;
