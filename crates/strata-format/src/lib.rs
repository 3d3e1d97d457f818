//! Pure format code for strata: no I/O beyond `Read`/`Write`, no async, no processes.
//!
//! Every writer here is deterministic: the same input gives the same bytes.

pub mod cpio;
pub mod layer;
