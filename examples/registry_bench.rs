//! Drive `strata::registry` push/pull from the shell, for `bench/registry.sh`.
//!
//! ```text
//! registry_bench make STORE NAME LAYERS MIB SEED   # an index of LAYERS images, MIB each
//! registry_bench push STORE NAME REMOTE             # prints the transfer stats as JSON
//! registry_bench pull REMOTE STORE NAME
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use strata::digest::{Digest, canonical_json};
use strata::registry::{self, ClientOptions, OCI_INDEX, OCI_MANIFEST, PushOptions};
use strata::store::{Descriptor, Store};

fn put(store: &Store, media_type: &str, data: &[u8]) -> anyhow::Result<Descriptor> {
    let digest = store.put_blob(data)?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as u64,
        artifact_type: None,
        annotations: HashMap::new(),
    })
}

/// An index of `layers` image manifests, each with one gzip layer of `mib` MiB of noise.
fn make(store: &Store, name: &str, layers: usize, mib: usize, seed: u64) -> anyhow::Result<()> {
    let mut manifests = Vec::new();
    for i in 0..layers {
        let mut x = (seed * 1000 + i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let payload: Vec<u8> = (0..mib << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("layer-{i}.bin"))?;
        h.set_size(payload.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, payload.as_slice())?;
        let tar = tar.into_inner()?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let layer = put(store, "application/vnd.oci.image.layer.v1.tar+gzip", &gz.finish()?)?;
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]},
        });
        let config = put(
            store,
            "application/vnd.oci.image.config.v1+json",
            &canonical_json(&config),
        )?;
        let manifest =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        manifests.push(put(store, OCI_MANIFEST, &canonical_json(&manifest))?);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let desc = put(store, OCI_INDEX, &canonical_json(&index))?;
    store.set_ref(name, desc)?;
    Ok(())
}

fn print_stats(t: &registry::Transferred) {
    let s = &t.stats;
    println!(
        r#"{{"blobs_transferred":{},"bytes_transferred":{},"blobs_skipped":{},"bytes_skipped":{},"blobs_mounted":{},"manifests_transferred":{},"manifests_skipped":{}}}"#,
        s.blobs_transferred,
        s.bytes_transferred,
        s.blobs_skipped,
        s.bytes_skipped,
        s.blobs_mounted,
        s.manifests_transferred,
        s.manifests_skipped
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let options = ClientOptions::default();
    match args.as_slice() {
        ["make", store, name, layers, mib, seed] => {
            let store = Store::open(Path::new(store))?;
            make(&store, name, layers.parse()?, mib.parse()?, seed.parse()?).context("making the layers")?;
        }
        ["push", store, name, remote] => {
            let store = Store::open(Path::new(store))?;
            let t = registry::push_ref(&store, name, remote, &options, &PushOptions::default())
                .await
                .with_context(|| format!("pushing `{name}` to {remote}"))?;
            print_stats(&t);
        }
        ["pull", remote, store, name] => {
            let store = Store::open(Path::new(store))?;
            let t = registry::pull_ref(&store, remote, name, &options)
                .await
                .with_context(|| format!("pulling {remote}"))?;
            print_stats(&t);
        }
        _ => bail!(
            "usage: registry_bench make STORE NAME LAYERS MIB SEED | push STORE NAME REMOTE | pull REMOTE STORE NAME"
        ),
    }
    Ok(())
}
