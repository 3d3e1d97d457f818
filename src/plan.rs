//! Cache keys: a digest over everything that decides a layer's bytes.
//!
//! Same key → same layer, taken from the store instead of being rebuilt. The key covers the
//! distribution (release, mirror, components, architecture), the package list, the layer's
//! options, the builder image (its tag is a digest of its Containerfile), `SOURCE_DATE_EPOCH`
//! when the user sets it, strata's version, and [`LAYER_FORMAT`]. It does not cover what the
//! mirror serves today: a new package version on the mirror is picked up by `--rebuild`.

use serde::Serialize;

use crate::config::{Base, Distribution, EmergencyShell, Extension, Kernel, LayerSet};
use crate::digest::{Digest, canonical_json};

/// Bumped whenever strata changes how a layer's bytes are made from the same inputs.
pub const LAYER_FORMAT: u32 = 2;

/// strata's version, part of every key.
pub const STRATA_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct KeyInput<'a, T: Serialize> {
    kind: &'static str,
    strata: &'static str,
    layer_format: u32,
    builder: &'a str,
    distribution: &'a Distribution,
    source_date_epoch: Option<u64>,
    layer: &'a T,
}

#[derive(Serialize)]
struct BaseKey<'a> {
    packages: &'a [String],
    remove: &'a [String],
    emergency_shell: EmergencyShell,
    /// The units and scripts strata adds to the base layer ([`crate::stage::emergency`],
    /// [`crate::stage::requeue`]).
    strata_files: Digest,
}

fn key<T: Serialize>(kind: &'static str, set: &LayerSet, builder: &str, epoch: Option<u64>, layer: &T) -> Digest {
    Digest::of(&canonical_json(&KeyInput {
        kind,
        strata: STRATA_VERSION,
        layer_format: LAYER_FORMAT,
        builder,
        distribution: &set.distribution,
        source_date_epoch: epoch,
        layer,
    }))
}

/// The base (userspace) layer's key. Compression is not part of it: it applies to the
/// initrd made from the layer, which has its own key ([`initrd_member_ref`]).
pub fn base_key(set: &LayerSet, builder: &str, epoch: Option<u64>) -> Digest {
    let Base {
        packages,
        remove,
        compression: _,
        emergency_shell,
    } = &set.base;
    let strata_files = Digest::of(
        format!(
            "{}\0{}",
            crate::stage::emergency::key_input(*emergency_shell),
            crate::stage::requeue::fingerprint()
        )
        .as_bytes(),
    );
    let input = BaseKey {
        packages,
        remove,
        emergency_shell: *emergency_shell,
        strata_files,
    };
    key("base", set, builder, epoch, &input)
}

/// The kernel + modules layer's key.
pub fn kernel_key(set: &LayerSet, builder: &str, epoch: Option<u64>) -> Digest {
    let k: &Kernel = &set.kernel;
    key("kernel", set, builder, epoch, k)
}

#[derive(Serialize)]
struct ExtensionKey<'a> {
    /// The base layer's blob: the extension is the diff against exactly these bytes.
    parent: &'a Digest,
    base_packages: &'a [String],
    base_remove: &'a [String],
    packages: &'a [String],
    remove: &'a [String],
    files: &'a [crate::config::ExtraFile],
}

/// An extension layer's key: what decides its content (packages, removals, extra files), the
/// base layer it is a diff against, and the base settings its build root is installed with.
/// The image options (`confext`, `scope`) decide products, not the layer, and are not in it.
pub fn extension_key(set: &LayerSet, builder: &str, epoch: Option<u64>, parent: &Digest, x: &Extension) -> Digest {
    let input = ExtensionKey {
        parent,
        base_packages: &set.base.packages,
        base_remove: &set.base.remove,
        packages: &x.packages,
        remove: &x.remove,
        files: &x.files,
    };
    key("extension", set, builder, epoch, &input)
}

/// Store reference of a built layer.
pub fn layer_ref(kind: &str, key: &Digest) -> String {
    format!("strata.{kind}.{}", key.hex())
}

/// Store reference of a compressed cpio member made from the layer with `diff_id`.
pub fn initrd_member_ref(diff_id: &Digest, compression: &str) -> String {
    let k = Digest::of(format!("{STRATA_VERSION}\0{LAYER_FORMAT}\0{diff_id}\0{compression}").as_bytes());
    format!("strata.initrd-member.{}", k.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    const SET: &str = r#"
[distribution]
id = "debian"
release = "trixie"
[base]
packages = ["systemd", "udev"]
compression = "zstd:19"
[kernel]
package = "linux-image-amd64"
modules = ["ext4"]
"#;

    fn set(text: &str) -> LayerSet {
        parse(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn keys_change_with_every_input_that_decides_bytes() {
        let s = set(SET);
        let k = base_key(&s, "builder:a", None);
        assert_eq!(k, base_key(&s, "builder:a", None), "deterministic");
        assert_ne!(k, base_key(&s, "builder:b", None), "builder image");
        assert_ne!(k, base_key(&s, "builder:a", Some(1)), "SOURCE_DATE_EPOCH");
        assert_ne!(
            k,
            base_key(&set(&SET.replace("\"udev\"", "\"udev\", \"kmod\"")), "builder:a", None),
            "packages"
        );
        assert_ne!(
            k,
            base_key(&set(&SET.replace("trixie", "forky")), "builder:a", None),
            "release"
        );
        assert_ne!(
            k,
            base_key(
                &set(&SET.replace("compression", "emergency-shell = \"open\"\ncompression")),
                "builder:a",
                None
            ),
            "emergency shell"
        );
        // Compression decides the initrd, not the layer.
        assert_eq!(k, base_key(&set(&SET.replace("zstd:19", "xz")), "builder:a", None));
        // The kernel key does not move with the base package list.
        let kk = kernel_key(&s, "builder:a", None);
        assert_eq!(
            kk,
            kernel_key(&set(&SET.replace("\"udev\"", "\"udev\", \"kmod\"")), "builder:a", None)
        );
        assert_ne!(
            kk,
            kernel_key(&set(&SET.replace("[\"ext4\"]", "[\"xfs\"]")), "builder:a", None)
        );
    }
}
