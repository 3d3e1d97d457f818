//! The distribution boundary: everything a package manager decides lives behind it.

pub mod debian;
