//! Layers and blobs as OCI manifests in the store.
//!
//! - A userspace layer is an OCI image: config (`rootfs.diff_ids`, `created` from the
//!   layer's epoch) + one `tar+zstd` layer, so `skopeo`/`podman` can read it.
//! - The kernel is an OCI artifact (`artifactType` [`KERNEL_ARTIFACT`]) holding the kernel
//!   image blob and the modules layer.

use std::collections::HashMap;

use anyhow::Result;
use oci_spec::image::{
    ConfigBuilder, ImageConfigurationBuilder, ImageManifest, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use strata_format::layer::Layer;

use crate::digest::{Digest, canonical_json};
use crate::store::{Descriptor, Store};

/// `artifactType` of the kernel + modules manifest.
pub const KERNEL_ARTIFACT: &str = "application/vnd.strata.kernel.v1";
/// Media type of the kernel image blob.
pub const KERNEL_IMAGE: &str = "application/vnd.strata.kernel.image.v1";
/// Media type of a compressed cpio member of an initrd.
pub const INITRD_MEMBER: &str = "application/vnd.strata.initrd.member.v1";
/// Annotation: the layer's `SOURCE_DATE_EPOCH`.
pub const ANN_EPOCH: &str = "io.strata.epoch";
/// Annotation: the kernel version (`uname -r`).
pub const ANN_KERNEL_VERSION: &str = "io.strata.kernel.version";
/// Annotation: the base layer's `usr/lib/os-release`, which extensions must match.
pub const ANN_OS_RELEASE: &str = "io.strata.os-release";
/// Annotation: the cache key a layer was built for.
pub const ANN_KEY: &str = "io.strata.key";

pub use super::layer::{LAYER_COMPRESSION, LayerBlob, LayerWriter};

/// Write `layer` as a normalized, compressed tar blob (streamed: see [`LayerWriter`]).
pub fn put_layer_blob(store: &Store, layer: &Layer) -> Result<LayerBlob> {
    LayerWriter::put(store, layer)
}

/// Read a layer blob back (verified by digest) into a [`Layer`] (streamed: see
/// [`super::layer::read`]).
pub fn read_layer_blob(store: &Store, digest: &Digest) -> Result<Layer> {
    super::layer::read(store, digest)
}

/// A descriptor inside a manifest.
fn descriptor(media_type: impl Into<String>, digest: &Digest, size: u64) -> oci_spec::image::Descriptor {
    Descriptor::new(media_type, digest.clone(), size).to_oci()
}

/// The OCI annotations every layer manifest carries: `created` (from the layer's epoch),
/// `version` (what was packaged: the distribution's or the kernel's version) and `source`
/// (where the packages came from: the mirror).
pub fn standard_annotations(epoch: u64, version: &str, source: &str) -> [(String, String); 3] {
    [
        ("org.opencontainers.image.created".to_string(), rfc3339(epoch)),
        ("org.opencontainers.image.version".to_string(), version.to_string()),
        ("org.opencontainers.image.source".to_string(), source.to_string()),
    ]
}

/// RFC 3339 UTC time of an epoch second.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn put_manifest(
    store: &Store,
    name: &str,
    manifest: &ImageManifest,
    artifact_type: Option<&str>,
) -> Result<Descriptor> {
    let bytes = canonical_json(manifest);
    let digest = store.put_blob(&bytes)?;
    let desc = Descriptor {
        artifact_type: artifact_type.map(str::to_string),
        ..Descriptor::new(MediaType::ImageManifest.to_string(), digest, bytes.len() as u64)
    };
    store.set_ref(name, desc.clone())?;
    Ok(desc)
}

/// Store a userspace layer for `arch` as a one-layer OCI image named `name`.
pub fn put_image(
    store: &Store,
    name: &str,
    blob: &LayerBlob,
    epoch: u64,
    arch: &oci_spec::image::Arch,
    annotations: HashMap<String, String>,
) -> Result<Descriptor> {
    let config = ImageConfigurationBuilder::default()
        .architecture(arch.clone())
        .os(oci_spec::image::Os::Linux)
        .created(rfc3339(epoch))
        .config(ConfigBuilder::default().build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![blob.diff_id.to_string()])
                .build()?,
        )
        .build()?;
    let config_bytes = canonical_json(&config);
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig.to_string(),
            &config_digest,
            config_bytes.len() as u64,
        ))
        .layers(vec![blob.descriptor().to_oci()])
        .annotations(annotations)
        .build()?;
    put_manifest(store, name, &manifest, None)
}

/// Store an artifact (empty config, the given blobs as layers) named `name`.
pub fn put_artifact(
    store: &Store,
    name: &str,
    artifact_type: &str,
    layers: &[(String, Digest, u64)],
    annotations: HashMap<String, String>,
) -> Result<Descriptor> {
    let empty = store.put_blob(b"{}")?;
    let layers = layers
        .iter()
        .map(|(mt, d, size)| descriptor(mt.as_str(), d, *size))
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(artifact_type.into()))
        .config(descriptor(MediaType::EmptyJSON.to_string(), &empty, 2))
        .layers(layers)
        .annotations(annotations)
        .build()?;
    put_manifest(store, name, &manifest, Some(artifact_type))
}

/// The manifest named `name`, if present and readable. A corrupt manifest blob counts as
/// absent (it is removed by the store's verified read and rebuilt).
pub fn get_manifest(store: &Store, name: &str) -> Result<Option<ImageManifest>> {
    let Some(desc) = store.get_ref(name)? else {
        return Ok(None);
    };
    match store.read_json::<ImageManifest>(&desc.digest) {
        Ok(m) => Ok(Some(m)),
        Err(crate::store::Error::Missing { .. }) => Ok(None),
        Err(e @ crate::store::Error::DigestMismatch { .. }) => {
            tracing::warn!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the manifest named `name` and every blob it references are present and intact.
/// Corrupt blobs are removed (by the store's verified read) and reported, so the caller
/// rebuilds the layer.
pub fn verify(store: &Store, name: &str) -> Result<bool> {
    let Some(manifest) = get_manifest(store, name)? else {
        return Ok(false);
    };
    let blobs = std::iter::once(manifest.config()).chain(manifest.layers().iter());
    for desc in blobs {
        let (digest, size) = layer_digest(desc)?;
        // Hashed as it is read, not held: a layer blob is tens of MiB.
        match store.blob_reader(&digest).and_then(|r| r.finish()) {
            Ok(found) if found == size => {}
            Ok(_) => {
                tracing::warn!(%digest, layer = name, "blob size differs from its descriptor; rebuilding the layer");
                return Ok(false);
            }
            Err(e @ crate::store::Error::DigestMismatch { .. }) => {
                tracing::warn!(layer = name, "{e}");
                return Ok(false);
            }
            Err(crate::store::Error::Missing { .. }) => {
                tracing::warn!(%digest, layer = name, "blob missing from the store; rebuilding the layer");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// A layer descriptor's digest and size, in our types.
pub fn layer_digest(desc: &oci_spec::image::Descriptor) -> Result<(Digest, u64)> {
    Ok((desc.digest().to_string().parse()?, desc.size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_answers() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_762_595_463), "2025-11-08T09:51:03Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    /// A store in a temporary directory holding a one-file layer.
    fn one_file_layer() -> (tempfile::TempDir, Store, Layer, LayerBlob) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = Layer::from_entries(vec![strata_format::layer::Entry::file("etc/x", "y", 0o644, 5)]).unwrap();
        let blob = put_layer_blob(&store, &layer).unwrap();
        (dir, store, layer, blob)
    }

    #[test]
    fn image_round_trip_through_the_store() {
        let (_dir, store, layer, blob) = one_file_layer();
        put_image(
            &store,
            "t",
            &blob,
            5,
            &oci_spec::image::Arch::Amd64,
            HashMap::from([(ANN_EPOCH.into(), "5".into())]),
        )
        .unwrap();
        let m = get_manifest(&store, "t").unwrap().unwrap();
        let (d, _) = layer_digest(&m.layers()[0]).unwrap();
        assert_eq!(read_layer_blob(&store, &d).unwrap(), layer);
        assert_eq!(m.annotations().as_ref().unwrap()[ANN_EPOCH], "5");
        // Same input, same manifest bytes.
        let again = put_image(
            &store,
            "t2",
            &put_layer_blob(&store, &layer).unwrap(),
            5,
            &oci_spec::image::Arch::Amd64,
            HashMap::from([(ANN_EPOCH.into(), "5".into())]),
        )
        .unwrap();
        assert_eq!(again.digest, store.get_ref("t").unwrap().unwrap().digest);
        // A corrupted layer blob makes the layer count as absent (and is removed).
        assert!(verify(&store, "t").unwrap());
        std::fs::write(store.blob_path(&d), b"garbage").unwrap();
        assert!(!verify(&store, "t").unwrap());
        assert!(!store.has_blob(&d));
        assert!(!verify(&store, "missing").unwrap());
    }

    #[test]
    fn the_image_config_names_the_set_s_architecture() {
        let (_dir, store, _, blob) = one_file_layer();
        put_image(&store, "arm", &blob, 5, &oci_spec::image::Arch::ARM64, HashMap::new()).unwrap();
        let m = get_manifest(&store, "arm").unwrap().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&layer_digest(m.config()).unwrap().0).unwrap()).unwrap();
        assert_eq!(config["architecture"], "arm64");
    }

    /// The manifests' bytes, pinned: a layer pushed again must be the same manifest, so
    /// that a push of an unchanged build uploads nothing.
    #[test]
    fn manifest_bytes_known_answers() {
        let (_dir, store, _, blob) = one_file_layer();
        let image = put_image(
            &store,
            "t",
            &blob,
            5,
            &oci_spec::image::Arch::Amd64,
            HashMap::from([(ANN_EPOCH.into(), "5".into())]),
        )
        .unwrap();
        let text = |d: &Digest| String::from_utf8(store.read_blob(d).unwrap()).unwrap();
        // The bytes the hand-built descriptors (DescriptorBuilder) gave before
        // store::Descriptor::to_oci made them.
        assert_eq!(
            text(&image.digest),
            concat!(
                r#"{"annotations":{"io.strata.epoch":"5"},"config":{"digest":"#,
                r#""sha256:00ad7393beac0f31c3489563b0352d49e4c42416d45034bd8f6b7d59679b54b4","#,
                r#""mediaType":"application/vnd.oci.image.config.v1+json","size":196},"#,
                r#""layers":[{"digest":"sha256:808dcfbba2d97caeff6de7c03063b59e36bb2cc949c82b810fc7617a53d4827a","#,
                r#""mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","size":115}],"#,
                r#""mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#
            )
        );
        let manifest: ImageManifest = store.read_json(&image.digest).unwrap();
        assert_eq!(
            text(&layer_digest(manifest.config()).unwrap().0),
            concat!(
                r#"{"architecture":"amd64","config":{},"created":"1970-01-01T00:00:05Z","os":"linux","#,
                r#""rootfs":{"diff_ids":["sha256:7c4a07a8b72e89c2ff7534e3d63d4e9bd73c39aad8d2b17f09438534a7d636dd"],"#,
                r#""type":"layers"}}"#
            )
        );
        let kernel = put_artifact(
            &store,
            "k",
            KERNEL_ARTIFACT,
            &[
                (KERNEL_IMAGE.to_string(), Digest::of(b"vmlinuz"), 7),
                (MediaType::ImageLayerZstd.to_string(), blob.digest.clone(), blob.size),
            ],
            HashMap::from([(ANN_KERNEL_VERSION.into(), "6.12".into())]),
        )
        .unwrap();
        assert_eq!(
            text(&kernel.digest),
            concat!(
                r#"{"annotations":{"io.strata.kernel.version":"6.12"},"#,
                r#""artifactType":"application/vnd.strata.kernel.v1","config":{"#,
                r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","#,
                r#""mediaType":"application/vnd.oci.empty.v1+json","size":2},"layers":[{"#,
                r#""digest":"sha256:42f083196bf0997a4f9c37295e311eb5012aa59e383c15b8ba466070af14cd8f","#,
                r#""mediaType":"application/vnd.strata.kernel.image.v1","size":7},{"#,
                r#""digest":"sha256:808dcfbba2d97caeff6de7c03063b59e36bb2cc949c82b810fc7617a53d4827a","#,
                r#""mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","size":115}],"#,
                r#""mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#
            )
        );
        assert_eq!(
            store.get_ref("k").unwrap().unwrap().artifact_type.as_deref(),
            Some(KERNEL_ARTIFACT)
        );
        // The descriptors are the very values the builder made before.
        for (mt, d, size) in [
            (MediaType::ImageConfig, Digest::of(b"c"), 196),
            (MediaType::ImageLayerZstd, blob.digest.clone(), blob.size),
            (MediaType::EmptyJSON, Digest::of(b"{}"), 2),
            (MediaType::Other(KERNEL_IMAGE.into()), Digest::of(b"vmlinuz"), 7),
        ] {
            let built = oci_spec::image::DescriptorBuilder::default()
                .media_type(mt.clone())
                .digest(d.to_string().parse::<oci_spec::image::Digest>().unwrap())
                .size(size)
                .build()
                .unwrap();
            assert_eq!(descriptor(mt.to_string(), &d, size), built);
        }
    }
}
