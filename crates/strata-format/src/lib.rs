//! Pure format code for strata: no I/O beyond `Read`/`Write`, no async, no processes.
//!
//! Every writer here is deterministic: the same input gives the same bytes.

pub mod compress;
pub mod cpio;
pub mod ddi;
pub mod ddi_verify;
pub mod ids;
pub mod layer;
pub mod os_release;
pub mod sign;
pub mod squashfs;
pub mod sysext;
pub mod tree;
pub mod verity;
