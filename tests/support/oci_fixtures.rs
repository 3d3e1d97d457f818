//! Small OCI content for the registry tests: a layer-like image manifest, an artifact
//! manifest (a sysext-like `application/vnd.efi.img` blob), an index of both; and a check
//! that a store holds only verified blobs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use strata::digest::{Digest, canonical_json};
use strata::registry::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use strata::store::{Descriptor, Store};

/// The `artifactType` the fixtures' artifact carries.
pub const SYSEXT_ARTIFACT: &str = "application/vnd.strata.sysext.v1";

/// `n` pseudo-random bytes from `seed` (xorshift; not compressible, reproducible).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put(store: &Store, media_type: &str, data: &[u8]) -> Descriptor {
    let digest = store.put_blob(data).unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as u64,
        artifact_type: None,
        annotations: HashMap::new(),
    }
}

/// An uncompressed tar with one file `data.bin` of `data`.
pub fn tar_with(data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("data.bin").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// An OCI image manifest with one gzip-compressed tar layer holding `payload` (fast
/// compression: the payload is noise anyway), named `name`.
pub fn layer_image(store: &Store, name: &str, payload: &[u8]) -> Descriptor {
    use std::io::Write as _;
    let tar = tar_with(payload);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = put(
        store,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.finish().unwrap(),
    );
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]},
    });
    let config = put(
        store,
        "application/vnd.oci.image.config.v1+json",
        &canonical_json(&config),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer],
        "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
    });
    let desc = put(store, OCI_MANIFEST, &canonical_json(&manifest));
    store.set_ref(name, desc.clone()).unwrap();
    desc
}

/// An OCI artifact: `artifactType`, the empty `{}` config, one `application/vnd.efi.img`
/// blob holding `image`, named `name`.
pub fn sysext_artifact(store: &Store, name: &str, image: &[u8]) -> Descriptor {
    let empty = put(store, OCI_EMPTY, b"{}");
    let mut blob = put(store, "application/vnd.efi.img", image);
    blob.annotations
        .insert("org.opencontainers.image.title".into(), "network.sysext.raw".into());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SYSEXT_ARTIFACT,
        "config": empty, "layers": [blob],
    });
    let mut desc = put(store, OCI_MANIFEST, &canonical_json(&manifest));
    desc.artifact_type = Some(SYSEXT_ARTIFACT.into());
    store.set_ref(name, desc.clone()).unwrap();
    desc
}

/// An OCI index of `children`, named `name`.
pub fn index(store: &Store, name: &str, children: &[Descriptor]) -> Descriptor {
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
    let desc = put(store, OCI_INDEX, &canonical_json(&index));
    store.set_ref(name, desc.clone()).unwrap();
    desc
}

/// Every file under `blobs/sha256` is named by the sha256 of its content (re-hashed here);
/// nothing else (no temporary file) is there. Returns the digests.
pub fn assert_store_verified(root: &Path) -> Vec<Digest> {
    let dir = root.join("blobs/sha256");
    let mut digests = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let claimed: Digest = format!("sha256:{name}")
            .parse()
            .unwrap_or_else(|_| panic!("stray file {name} in {}", dir.display()));
        let data = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            Digest::of(&data),
            claimed,
            "blob {name} in {} does not match its name",
            dir.display()
        );
        digests.push(claimed);
    }
    digests.sort();
    digests
}
