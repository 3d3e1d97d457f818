//! The artifact vocabulary: how each kind of product travels through a registry as an OCI
//! artifact (its `artifactType`, blob media type, file-name suffix and annotations). `push`
//! writes it, `pull` reads it.

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
