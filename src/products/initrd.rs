//! Flatten layers into an initrd: one compressed cpio `newc` member per layer, concatenated.
//!
//! The kernel unpacks concatenated members in order; each must start 4-byte aligned, so a
//! compressed member is padded with zeros to a multiple of 4. Members are cached in the
//! store by (layer diff, compression, strata version): a rebuild with nothing changed only
//! concatenates them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use strata_format::compress::Compression;
use strata_format::cpio;
use strata_format::layer::{Entry, EntryKind, Layer};
use tracing::info;

use crate::digest::Digest;
use crate::plan;
use crate::store::image as oci;
use crate::store::{Descriptor, Store};

/// Device nodes the kernel and early userspace expect before devtmpfs is mounted (the
/// kernel opens /dev/console for PID 1's stdio). cpio carries them; no root needed.
pub fn device_nodes(mtime: u64) -> Vec<Entry> {
    let dev = |path: &str, major, minor, mode| Entry::new(path, EntryKind::CharDevice { major, minor }, mode, mtime);
    vec![
        dev("dev/console", 5, 1, 0o600),
        dev("dev/kmsg", 1, 11, 0o644),
        dev("dev/null", 1, 3, 0o666),
    ]
}

/// A compressed cpio member, verified.
#[derive(Debug, Clone)]
pub struct Member {
    pub digest: Digest,
    pub data: Vec<u8>,
}

/// Make (or take from the store, verified) the compressed cpio member for the layer blob
/// `layer`. `with_devices` adds [`device_nodes`] (for the base layer).
pub fn member(store: &Store, layer: &Digest, compression: Compression, with_devices: bool) -> Result<Member> {
    let key = format!("{compression}{}", if with_devices { "+dev" } else { "" });
    let name = plan::initrd_member_ref(layer, &key);
    if let Some(desc) = store.get_ref(&name)? {
        // A verified read: a corrupt member is removed by the store and made again below.
        match store.read_blob(&desc.digest) {
            Ok(data) => {
                return Ok(Member {
                    digest: desc.digest,
                    data,
                });
            }
            Err(e @ crate::store::Error::DigestMismatch { .. }) => tracing::warn!("{e}"),
            Err(crate::store::Error::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let span = tracing::info_span!("flatten", layer = %layer, %compression);
    let _g = span.enter();
    let start = std::time::Instant::now();
    let mut l = oci::read_layer_blob(store, layer)?;
    if with_devices {
        let epoch = l.entries().iter().map(|e| e.mtime).max().unwrap_or(0);
        let mut entries = l.into_entries();
        entries.extend(device_nodes(epoch));
        l = Layer::from_entries(entries)?;
    }
    let data = write_member(&l, compression)?;
    let digest = store.put_blob(&data)?;
    store.set_ref(
        &name,
        Descriptor {
            annotations: HashMap::from([("io.strata.layer".into(), layer.to_string())]),
            ..Descriptor::new(oci::INITRD_MEMBER, digest.clone(), data.len() as u64)
        },
    )?;
    info!(entries = l.entries().len(), bytes = data.len(), elapsed = ?start.elapsed(), "cpio member written");
    Ok(Member { digest, data })
}

/// One compressed cpio member for `layer`, padded to a multiple of 4 bytes.
pub fn write_member(layer: &Layer, compression: Compression) -> Result<Vec<u8>> {
    let mut enc = compression.writer(Vec::with_capacity(layer.data_size() as usize / 3))?;
    cpio::write(layer, &mut enc).context("writing the cpio archive")?;
    let mut data = enc.finish()?;
    while data.len() % 4 != 0 {
        data.push(0);
    }
    Ok(data)
}

/// Concatenate the members into `dest`, atomically. Returns the sha256 and size of the
/// result.
pub fn concatenate(members: &[Member], dest: &Path) -> Result<(Digest, u64)> {
    let mut tmp = crate::store::atomic::AtomicFile::beside(dest)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for m in members {
        hasher.update(&m.data);
        size += m.data.len() as u64;
        tmp.write_all(&m.data)
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    tmp.commit(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok((Digest::from_hasher(hasher), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_padded_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = Layer::from_entries(vec![Entry::file("etc/a", "hello", 0o644, 7)]).unwrap();
        let blob = oci::put_layer_blob(&store, &layer).unwrap();
        for c in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
            Compression::Xz { level: 1 },
            Compression::None,
        ] {
            let m = member(&store, &blob.digest, c, true).unwrap();
            assert_eq!(m.data.len() % 4, 0, "{c}");
            assert_eq!(store.read_blob(&m.digest).unwrap(), m.data);
            // Second call: same digest, from the ref.
            assert_eq!(member(&store, &blob.digest, c, true).unwrap().digest, m.digest);
        }
        let m = member(&store, &blob.digest, Compression::None, true).unwrap();
        // A corrupt cached member is made again.
        std::fs::write(store.blob_path(&m.digest), b"junk").unwrap();
        let again = member(&store, &blob.digest, Compression::None, true).unwrap();
        assert_eq!(again.digest, m.digest);
        let text = String::from_utf8_lossy(&m.data).into_owned();
        assert!(text.contains("dev/console") && text.contains("etc/a") && text.contains("TRAILER!!!"));
        let out = dir.path().join("initrd");
        let plain = member(&store, &blob.digest, Compression::None, false).unwrap();
        let (_, size) = concatenate(&[m.clone(), plain.clone()], &out).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
    }
}
