//! A build without a container engine: small but valid base and kernel layers (tar+zstd
//! blobs, manifests as `strata build` writes them) stored under the exact names `build::run`
//! looks for with the default layer set, and an output directory as a build leaves it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use strata::config::LayerSet;
use strata::digest::Digest;
use strata::plan;
use strata::products::{self, LayerRecord, Product, Products};
use strata::store::Store;
use strata::store::image as oci;
use strata_format::compress::Compression;
use strata_format::layer::{Entry, Layer};

/// The `SOURCE_DATE_EPOCH` the fake build is made with.
pub const EPOCH: u64 = 1_700_000_000;

/// The default layer set.
pub fn layer_set_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layers/debian-trixie")
}

/// The cache keys `strata build` computes for the default layer set with `SOURCE_DATE_EPOCH`
/// set to [`EPOCH`].
pub fn keys() -> (Digest, Digest) {
    let set = LayerSet::load(&layer_set_dir()).unwrap();
    let builder = strata::pipeline::builder_tag(set.distro());
    (
        plan::base_key(&set, &builder, Some(EPOCH)),
        plan::kernel_key(&set, &builder, Some(EPOCH)),
    )
}

/// Store fake base and kernel layers as `strata build` would have; `seed` varies their
/// content. Returns the layer records.
pub fn fake_layers(store: &Store, seed: u8) -> Vec<LayerRecord> {
    fake_layers_with_payload(store, seed, 0)
}

/// [`fake_layers`] with a base layer that also holds `payload` incompressible bytes (in
/// `usr/lib/payload`), so that flattening and writing the initrd take a while.
pub fn fake_layers_with_payload(store: &Store, seed: u8, payload: usize) -> Vec<LayerRecord> {
    let (base_key, kernel_key) = keys();
    let e = EPOCH;
    let mut entries = vec![
        Entry::file(
            "usr/lib/os-release",
            format!("ID=debian\nVERSION_ID=13\nSEED={seed}\n"),
            0o644,
            e,
        ),
        Entry::symlink("etc/os-release", "../usr/lib/os-release", e),
        Entry::file("usr/lib/systemd/systemd", vec![seed; 4096], 0o755, e),
        Entry::symlink("init", "usr/lib/systemd/systemd", e),
    ];
    if payload > 0 {
        let mut state = u64::from(seed) | 1;
        let noise: Vec<u8> = (0..payload)
            .map(|_| {
                // xorshift64: incompressible, and the same for the same seed.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        entries.push(Entry::file("usr/lib/payload", noise, 0o644, e));
    }
    let base = Layer::from_entries(entries).unwrap();
    let blob = oci::put_layer_blob(store, &base).unwrap();
    let ann = |key: &Digest| {
        HashMap::from([
            (oci::ANN_KEY.to_string(), key.to_string()),
            (oci::ANN_EPOCH.to_string(), e.to_string()),
            ("org.opencontainers.image.created".to_string(), oci::rfc3339(e)),
        ])
    };
    oci::put_image(
        store,
        &plan::layer_ref("base", &base_key),
        &blob,
        e,
        &oci_spec::image::Arch::Amd64,
        ann(&base_key),
    )
    .unwrap();

    let version = "6.12.99-amd64";
    let modules = Layer::from_entries(vec![Entry::file(
        &format!("usr/lib/modules/{version}/kernel/fs/ext4/ext4.ko"),
        vec![seed ^ 0x55; 8192],
        0o644,
        e,
    )])
    .unwrap();
    let modules = oci::put_layer_blob(store, &modules).unwrap();
    let vmlinuz: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    let image = store.put_blob(&vmlinuz).unwrap();
    let mut kann = ann(&kernel_key);
    kann.insert(oci::ANN_KERNEL_VERSION.into(), version.into());
    oci::put_artifact(
        store,
        &plan::layer_ref("kernel", &kernel_key),
        oci::KERNEL_ARTIFACT,
        &[
            (oci::KERNEL_IMAGE.to_string(), image, vmlinuz.len() as u64),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd".to_string(),
                modules.digest,
                modules.size,
            ),
        ],
        kann,
    )
    .unwrap();
    vec![
        LayerRecord::of(store, "base", &base_key).unwrap(),
        LayerRecord::of(store, "kernel", &kernel_key).unwrap(),
    ]
}

/// An output directory as a build leaves it: `products.json` listing `files`
/// (kind, file name, content) and `layers`.
pub fn fake_output(dir: &Path, layers: Vec<LayerRecord>, files: &[(&str, &str, Vec<u8>)]) -> Products {
    std::fs::create_dir_all(dir).unwrap();
    let mut list = Vec::new();
    for (kind, name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
        let d = Digest::of(data);
        let size = data.len() as u64;
        list.push(match *kind {
            "kernel" => Product::kernel(name, d, size, "6.12.99-amd64"),
            "initrd" => Product::initrd(name, d, size, Compression::DEFAULT, vec![]),
            other => {
                let mut p = Product::initrd(name, d, size, Compression::DEFAULT, vec![]);
                p.kind = other.into();
                p.compression = None;
                p
            }
        });
    }
    let mut p = Products::new("debian-trixie", list);
    p.layers = layers;
    products::write(dir, &p).unwrap();
    p
}
