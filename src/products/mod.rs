//! `products.json`: what a build wrote, for CI pipelines, tests and `strata vm`.
//!
//! ```json
//! {"layer_set": "debian-trixie", "strata_version": "0.1.0",
//!  "products": [{"kind": "kernel", "file": "vmlinuz", "sha256": "…", "size": 1, "version": "6.12.…"},
//!               {"kind": "initrd", "file": "initrd.cpio.zst", "sha256": "…", "size": 1,
//!                "compression": "zstd:19", "members": ["sha256:…"]},
//!               {"kind": "sysext", "file": "network.sysext.raw", "sha256": "…", "size": 1,
//!                "root_hash": "…", "signed": true, "left_out": ["etc/ssh/sshd_config"]}]}
//! ```
//! `file` is relative to the output directory. Fields are only ever added. `layers` lists the
//! layers the products were made from: `[{"kind": "base", "key": "sha256:…", "manifest":
//! "sha256:…"}, …]`.
//!
//! A build puts its products and this file in place together ([`output`]): every file
//! `products.json` lists has the bytes it records.

pub mod initrd;
pub mod output;
pub mod sizes;
pub mod sysext;

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use strata_format::compress::Compression;

use crate::digest::Digest;

/// The file name in the output directory.
pub const FILE: &str = "products.json";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Products {
    pub layer_set: String,
    pub strata_version: String,
    pub products: Vec<Product>,
    /// The layers the products were made from (for `strata push`), by kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRecord>,
}

/// A layer of the build, as named in the store ([`crate::plan::layer_ref`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `base`, `kernel`.
    pub kind: String,
    /// Its cache key.
    pub key: Digest,
    /// The digest of its manifest in the store.
    pub manifest: Digest,
}

impl LayerRecord {
    /// The record of the layer of `kind` with `key`, as the store names it now.
    pub fn of(store: &crate::store::Store, kind: &str, key: &Digest) -> Result<LayerRecord> {
        let name = crate::plan::layer_ref(kind, key);
        let desc = store
            .get_ref(&name)?
            .with_context(|| format!("layer {name} is not in the store"))?;
        Ok(LayerRecord {
            kind: kind.into(),
            key: key.clone(),
            manifest: desc.digest,
        })
    }

    /// Its name in the store.
    pub fn ref_name(&self) -> String {
        crate::plan::layer_ref(&self.kind, &self.key)
    }
}

/// One product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// `kernel`, `initrd`, `sysext`, `confext`.
    pub kind: String,
    pub file: String,
    /// Hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
    /// Kernel version (`uname -r`), for kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Compression, for initrds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Digests of the cpio members, in order, for initrds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The dm-verity root hash (hex), for sysexts and confexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Whether the image carries a signature of its root hash, for sysexts and confexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
    /// Paths of the layer the image does not carry (outside the directories its class
    /// merges), for sysexts and confexts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

impl Product {
    /// A kernel image.
    pub fn kernel(file: &str, digest: Digest, size: u64, version: &str) -> Product {
        Product {
            kind: "kernel".into(),
            file: file.into(),
            sha256: digest.hex().into(),
            size,
            version: Some(version.into()),
            compression: None,
            members: vec![],
            root_hash: None,
            signed: None,
            left_out: vec![],
        }
    }

    /// An initrd.
    pub fn initrd(file: &str, digest: Digest, size: u64, compression: Compression, members: Vec<String>) -> Product {
        Product {
            kind: "initrd".into(),
            file: file.into(),
            sha256: digest.hex().into(),
            size,
            version: None,
            compression: Some(compression.to_string()),
            members,
            root_hash: None,
            signed: None,
            left_out: vec![],
        }
    }
}

impl Products {
    /// A products list for this strata version.
    pub fn new(layer_set: &str, products: Vec<Product>) -> Products {
        Products {
            layer_set: layer_set.into(),
            strata_version: crate::plan::STRATA_VERSION.into(),
            products,
            layers: vec![],
        }
    }

    /// The first product of `kind`.
    pub fn find(&self, kind: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.kind == kind)
    }
}

/// Write `products.json` into `dir` atomically (pretty-printed, stable field order).
pub fn write(dir: &Path, products: &Products) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(products)?;
    text.push(b'\n');
    crate::store::write_atomic(&dir.join(FILE), &text)?;
    Ok(())
}

/// Read `products.json` from `dir`.
pub fn read(dir: &Path) -> Result<Products> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let swapping = output::staging_dirs(dir)
                .unwrap_or_default()
                .into_iter()
                .find(|s| s.join(FILE).is_file());
            return Err(match swapping {
                Some(staging) => anyhow::anyhow!(
                    "{} is missing: a build is putting its products in place, or was killed while it did ({} holds                      them); wait for it, or run `strata build` again to finish",
                    path.display(),
                    staging.display()
                ),
                None => anyhow::Error::new(e).context(format!("reading {} (run `strata build` first)", path.display())),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&text).with_context(|| format!("{} is not a strata products file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = Products::new(
            "debian-trixie",
            vec![
                Product::kernel("vmlinuz", Digest::of(b"k"), 1, "6.12.1-amd64"),
                Product::initrd(
                    "initrd.cpio.zst",
                    Digest::of(b"i"),
                    2,
                    Compression::DEFAULT,
                    vec!["sha256:x".into()],
                ),
            ],
        );
        write(dir.path(), &p).unwrap();
        assert_eq!(read(dir.path()).unwrap(), p);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(v["products"][0]["kind"], "kernel");
        assert_eq!(v["products"][0]["version"], "6.12.1-amd64");
        assert_eq!(v["products"][1]["file"], "initrd.cpio.zst");
        assert_eq!(v["products"][1]["sha256"].as_str().unwrap().len(), 64);
        assert!(v["products"][0].get("compression").is_none());
    }
}
