//! The artifact vocabulary: how each kind of product travels through a registry as an OCI
//! artifact (its `artifactType`, blob media type, file-name suffix and annotations). `push`
//! writes it, `pull` reads it.
//!
//! A product's file name is checked wherever it comes from someone else: the title of a
//! pulled artifact, the `file` of a product in `products.json` that `push` and `vm` read.
//! It is one plain file name of letters, digits and `._+~-`, starting with a letter or
//! digit, of the kind's shape ([`check_file_name`]), and never `products.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::products::{self, Product};
use crate::store::image as oci;

/// `artifactType` of an initrd.
pub const INITRD_ARTIFACT: &str = "application/vnd.strata.initrd.v1";
/// Media type of the initrd file (concatenated, compressed cpio members).
pub const INITRD_IMAGE: &str = "application/vnd.strata.initrd.image.v1";
/// `artifactType` of a system extension.
pub const SYSEXT_ARTIFACT: &str = "application/vnd.strata.sysext.v1";
/// Media type of a sysext image, as the Discoverable Disk Image specification names it.
pub const SYSEXT_IMAGE: &str = "application/vnd.efi.img";
/// A sysext's file name ends with this.
pub const SYSEXT_SUFFIX: &str = ".sysext.raw";
/// `artifactType` of a confext product.
pub const CONFEXT_ARTIFACT: &str = "application/vnd.strata.confext.v1";
/// A confext's file name ends with this.
pub const CONFEXT_SUFFIX: &str = ".confext.raw";

/// The file name of a product.
pub const ANN_TITLE: &str = "org.opencontainers.image.title";
/// When the product was made (the build's epoch).
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
/// The version pushed (`--version`, default the tag).
pub const ANN_VERSION: &str = "org.opencontainers.image.version";
/// Where the product's sources live (`--source`).
pub const ANN_SOURCE: &str = "org.opencontainers.image.source";
/// The product kind (`initrd`, `kernel`, `sysext`).
pub const ANN_PRODUCT: &str = "io.strata.product";

/// How one kind of product travels as an OCI artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductType {
    /// The `kind` in `products.json`.
    pub kind: &'static str,
    /// The manifest's `artifactType`.
    pub artifact_type: &'static str,
    /// The media type of its one blob.
    pub media_type: &'static str,
}

/// Every product kind strata pushes and pulls.
pub const PRODUCT_TYPES: [ProductType; 4] = [
    ProductType {
        kind: "initrd",
        artifact_type: INITRD_ARTIFACT,
        media_type: INITRD_IMAGE,
    },
    ProductType {
        kind: "kernel",
        artifact_type: oci::KERNEL_ARTIFACT,
        media_type: oci::KERNEL_IMAGE,
    },
    ProductType {
        kind: "sysext",
        artifact_type: SYSEXT_ARTIFACT,
        media_type: SYSEXT_IMAGE,
    },
    ProductType {
        kind: "confext",
        artifact_type: CONFEXT_ARTIFACT,
        media_type: SYSEXT_IMAGE,
    },
];

/// The file name suffix of an extension product kind (`sysext`, `confext`).
pub fn extension_suffix(kind: &str) -> Option<&'static str> {
    match kind {
        "sysext" => Some(SYSEXT_SUFFIX),
        "confext" => Some(CONFEXT_SUFFIX),
        _ => None,
    }
}

/// The type of a product kind.
pub fn product_type(kind: &str) -> Option<ProductType> {
    PRODUCT_TYPES.into_iter().find(|t| t.kind == kind)
}

/// The product type with this `artifactType`.
pub fn product_type_of_artifact(artifact_type: &str) -> Option<ProductType> {
    PRODUCT_TYPES.into_iter().find(|t| t.artifact_type == artifact_type)
}

/// The file names a product of `kind` may have, for messages.
fn allowed_names(kind: &str) -> String {
    let shape = match kind {
        "kernel" => "`vmlinuz` or `vmlinuz-VERSION`".to_string(),
        "initrd" => "`initrd`, `initrd.EXT` or `initrd-SUFFIX`".to_string(),
        _ => match extension_suffix(kind) {
            Some(suffix) => format!("`NAME{suffix}`"),
            None => "a plain file name".to_string(),
        },
    };
    format!("a {kind} file is named {shape}, of letters, digits and `._+~-`, starting with a letter or digit")
}

/// Check that `name` is a file name a product of `kind` may have: one plain file name (no
/// directory, no `..`, not hidden, no white space or control character), at most 255 bytes,
/// of the kind's shape, and not `products.json`. The error names the kind, the name and
/// what is allowed.
pub fn check_file_name(kind: &str, name: &str) -> Result<()> {
    let fail = |why: &str| -> Result<()> {
        bail!(
            "the {kind} file name `{}` is refused: {why}; {}",
            name.escape_debug(),
            allowed_names(kind)
        )
    };
    if name.is_empty() || name.len() > 255 {
        return fail("a file name has 1 to 255 bytes");
    }
    if name == products::FILE {
        return fail("it would overwrite the list of products");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+~-".contains(*c)))
    {
        return fail(&format!("it holds the character `{}`", c.escape_debug()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail("it does not start with a letter or digit");
    }
    let shaped = match kind {
        "kernel" => name == "vmlinuz" || name.starts_with("vmlinuz-"),
        "initrd" => name == "initrd" || name.starts_with("initrd.") || name.starts_with("initrd-"),
        _ => extension_suffix(kind).is_none_or(|suffix| name.strip_suffix(suffix).is_some_and(|n| !n.is_empty())),
    };
    if !shaped {
        return fail("it does not have the shape of its kind");
    }
    Ok(())
}

/// The path of `product`'s file in the output directory `dir`, as `products.json` names
/// it: its name must pass [`check_file_name`], and the file, after symbolic links, must be
/// a regular file inside `dir`.
pub fn product_path(dir: &Path, product: &Product) -> Result<PathBuf> {
    check_file_name(&product.kind, &product.file)
        .with_context(|| format!("{}: bad `file` of a product", dir.join(products::FILE).display()))?;
    let path = dir.join(&product.file);
    let real_dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let real = path
        .canonicalize()
        .with_context(|| format!("opening {}", path.display()))?;
    if real.parent() != Some(real_dir.as_path()) {
        bail!(
            "{} leads to {}, outside the output directory {}: refused",
            path.display(),
            real.display(),
            real_dir.display()
        );
    }
    if !real.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_file_names_are_plain_and_of_their_kind() {
        for (kind, good) in [
            ("kernel", "vmlinuz"),
            ("kernel", "vmlinuz-6.12.1+deb13-amd64"),
            ("initrd", "initrd.cpio.zst"),
            ("initrd", "initrd"),
            ("sysext", "network.sysext.raw"),
            ("confext", "etc-x.confext.raw"),
        ] {
            check_file_name(kind, good).unwrap_or_else(|e| panic!("{kind} {good}: {e:#}"));
        }
        for (kind, bad, why) in [
            ("kernel", "products.json", "overwrite the list"),
            ("initrd", "products.json", "overwrite the list"),
            ("kernel", "../vmlinuz", "character `/`"),
            ("kernel", "vmlinuz\n", "character `\\n`"),
            ("kernel", "vmlinuz\\x", "character `\\\\`"),
            ("initrd", " initrd", "character ` `"),
            ("initrd", ".initrd", "does not start"),
            ("initrd", "..", "does not start"),
            ("initrd", "", "1 to 255 bytes"),
            ("kernel", "bzImage", "shape"),
            ("initrd", "vmlinuz", "shape"),
            ("sysext", ".sysext.raw", "does not start"),
            ("sysext", "network.raw", "shape"),
            ("sysext", "a/b.sysext.raw", "character `/`"),
        ] {
            let e = format!("{:#}", check_file_name(kind, bad).unwrap_err());
            assert!(
                e.contains(why) && e.contains(&format!("a {kind} file is named")),
                "{kind} {bad:?}: {e}"
            );
            assert!(e.contains(&format!("`{}`", bad.escape_debug())), "{e}");
        }
        assert!(check_file_name("kernel", &format!("vmlinuz-{}", "x".repeat(300))).is_err());
    }

    #[test]
    fn product_paths_stay_in_the_output_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::fs::write(out.join("vmlinuz"), b"k").unwrap();
        std::os::unix::fs::symlink("../secret", out.join("vmlinuz-escape")).unwrap();
        std::os::unix::fs::symlink("vmlinuz", out.join("vmlinuz-inside")).unwrap();
        std::fs::create_dir(out.join("vmlinuz-dir")).unwrap();
        let product = |file: &str| Product::kernel(file, crate::digest::Digest::of(b"k"), 1, "6.12");
        assert_eq!(product_path(&out, &product("vmlinuz")).unwrap(), out.join("vmlinuz"));
        assert_eq!(
            product_path(&out, &product("vmlinuz-inside")).unwrap(),
            out.join("vmlinuz-inside")
        );
        for (file, why) in [
            ("../../../etc/hostname", "character `/`"),
            ("vmlinuz-escape", "outside the output directory"),
            ("vmlinuz-dir", "not a regular file"),
            ("vmlinuz-missing", "opening"),
        ] {
            let e = format!("{:#}", product_path(&out, &product(file)).unwrap_err());
            assert!(e.contains(why), "{file}: {e}");
        }
    }
}
