//! strata: Linux initrds and systemd system extensions built from distribution packages.
//!
//! The pipeline (see DESIGN.md): [`config`] → [`plan`] (cache keys) → [`engine`] (podman
//! through its Docker-compatible API) → [`store`] (OCI image layout) → [`initrd`] (cpio)
//! and the products listed in `products.json` ([`products`]).

pub mod build;
pub mod cmd;
pub mod config;
pub mod debian;
pub mod digest;
pub mod engine;
pub mod fsread;
pub mod initrd;
pub mod keygen;
pub mod kernel;
pub mod plan;
pub mod products;
pub mod progress;
pub mod pull;
pub mod push;
pub mod registry;
pub mod store;
pub mod sysext;
pub mod vm;
