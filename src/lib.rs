//! strata: Linux initrds and systemd system extensions built from distribution packages.
//!
//! The pipeline (see ARCHITECTURE.md): [`config`] → [`plan`] (cache keys) → `stage` (each
//! layer built in a container through `engine`, the distribution's package manager behind
//! `distro`) → [`store`] (OCI image layout) → [`products`] (initrd, sysexts,
//! `products.json`) ↔ [`registry`] (push, pull, shared layer cache). [`pipeline`] drives a
//! build from end to end.

pub mod cli;
pub(crate) mod cmd;
pub mod config;
pub mod digest;
pub(crate) mod distro;
pub(crate) mod engine;
pub mod fsread;
pub mod interrupt;
pub mod keygen;
pub mod pipeline;
pub mod plan;
pub mod products;
pub mod progress;
pub mod registry;
pub(crate) mod stage;
pub mod store;
pub mod vm;
