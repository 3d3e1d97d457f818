//! Layer blobs as streams: a [`Layer`] goes into the store as its normalized tar, hashed
//! (the diff-id) and compressed on the way into a [`BlobWriter`], and comes back out of a
//! verified [`BlobReader`](super::BlobReader) through the decompressor into [`Layer::read_tar`]. Neither
//! direction holds the tar or the compressed blob in memory: only the layer model and the
//! compressor's window.
//!
//! ```text
//! Layer::write_tar → sha256 (diff-id) → zstd (level 3, checksummed, multithreaded) → BlobWriter (sha256 → temp file → rename)
//! BlobReader (sha256, checked at the end) → zstd decoder → Layer::read_tar
//! ```

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};
use strata_format::compress::{Compression, Encoder};
use strata_format::layer::{Layer, ReadOptions};

use super::{BlobWriter, Descriptor, Error, Store};
use crate::digest::Digest;

/// The compression of layer blobs in the store (fast; initrds choose their own). The bytes
/// it gives are part of every layer's digest: changing it (or anything in
/// [`Compression::writer`]) changes every stored layer.
pub const LAYER_COMPRESSION: Compression = Compression::Zstd { level: 3 };

/// Media type of a layer blob.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layer blob written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the compressed blob.
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

impl LayerBlob {
    /// The blob's descriptor (`tar+zstd`).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(LAYER_MEDIA_TYPE, self.digest.clone(), self.size)
    }
}

/// Writes a layer tar into the store: what is written is hashed (the diff-id) and
/// compressed into a blob. [`LayerWriter::put`] writes a whole [`Layer`]; a tar from
/// elsewhere can be copied in with [`io::copy`]. Dropped without [`LayerWriter::finish`],
/// it leaves nothing behind.
pub struct LayerWriter {
    diff_id: Sha256,
    encoder: Encoder<BlobWriter>,
}

impl LayerWriter {
    /// A writer into a new temporary blob of `store`.
    pub fn new(store: &Store) -> Result<LayerWriter, Error> {
        let blob = store.blob_writer()?;
        let encoder = LAYER_COMPRESSION.writer(blob).map_err(|source| Error::Io {
            path: store.root().to_path_buf(),
            source,
        })?;
        Ok(LayerWriter {
            diff_id: Sha256::new(),
            encoder,
        })
    }

    /// Write `layer` as its normalized tar into `store`.
    pub fn put(store: &Store, layer: &Layer) -> anyhow::Result<LayerBlob> {
        use anyhow::Context as _;
        let mut w = LayerWriter::new(store)?;
        layer.write_tar(&mut w).context("writing the layer tar")?;
        Ok(w.finish()?)
    }

    /// End the compressed stream and commit the blob (fsync, rename).
    pub fn finish(self) -> Result<LayerBlob, Error> {
        let blob = self.encoder.finish().map_err(|source| Error::Io {
            path: "<layer blob>".into(),
            source,
        })?;
        let (digest, size) = blob.commit(None)?;
        Ok(LayerBlob {
            digest,
            size,
            diff_id: Digest::from_hasher(self.diff_id),
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.diff_id.update(&buf[..n]);
        Ok(n)
    }

    /// Does nothing: a zstd flush ends the current block, so the blob's bytes would depend
    /// on when the tar writer flushes (it does at its end). The data is made durable by
    /// [`LayerWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest uncompressed layer tar [`read`] accepts unless `STRATA_MAX_LAYER_SIZE`
/// (bytes, or with a `K`, `M` or `G` suffix) says otherwise: 1 GiB. The layer model holds
/// every file in memory, so this is what a hostile layer (a zstd bomb from a cache
/// registry: 33 KB that decompress to GBs) can make strata allocate. Real layers are far
/// below it: a Debian base layer is about 100 MB, the largest extension a few hundred.
pub const MAX_LAYER_SIZE: u64 = 1 << 30;

/// The environment variable that raises (or lowers) [`MAX_LAYER_SIZE`].
pub const MAX_LAYER_SIZE_ENV: &str = "STRATA_MAX_LAYER_SIZE";

/// [`MAX_LAYER_SIZE`], or what [`MAX_LAYER_SIZE_ENV`] says.
pub fn max_layer_size() -> anyhow::Result<u64> {
    let Some(v) = std::env::var_os(MAX_LAYER_SIZE_ENV).filter(|v| !v.is_empty()) else {
        return Ok(MAX_LAYER_SIZE);
    };
    let text = v.to_string_lossy();
    parse_size(&text).ok_or_else(|| {
        anyhow::anyhow!("{MAX_LAYER_SIZE_ENV}=`{text}` is not a size in bytes (e.g. 4G, 1500M or 2147483648)")
    })
}

/// A positive number of bytes, with an optional `K`, `M` or `G` (binary) suffix.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
}

/// Read the layer blob `digest` from `store` into a [`Layer`], streaming. The whole blob is
/// hashed on the way and checked before the layer is returned: a corrupt blob is removed
/// and reported as [`Error::DigestMismatch`], whether or not it still decompressed. An
/// uncompressed tar above [`max_layer_size`] is refused, naming the limit, as soon as the
/// limit is passed.
pub fn read(store: &Store, digest: &Digest) -> anyhow::Result<Layer> {
    use anyhow::Context as _;
    let max = max_layer_size()?;
    let opts = ReadOptions {
        max_size: Some(max),
        ..Default::default()
    };
    let mut blob = store.blob_reader(digest)?;
    let layer = zstd::stream::read::Decoder::new(&mut blob)
        .map_err(anyhow::Error::from)
        .and_then(|decoder| Ok(Layer::read_tar(decoder, &opts)?));
    // Verified first: a decompression or tar error of a corrupt blob is reported as the
    // corruption it is. (The rest of a blob refused for its size is compressed bytes only.)
    blob.finish()?;
    if let Err(e) = &layer
        && let Some(strata_format::layer::Error::TooLarge { .. }) = e.downcast_ref()
    {
        return layer.with_context(|| {
            format!("reading layer {digest} (if a real layer is this large, raise {MAX_LAYER_SIZE_ENV})")
        });
    }
    layer.with_context(|| format!("reading layer {digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_format::layer::{Entry, EntryKind};

    /// A layer with every kind of entry, xattrs and odd sizes.
    fn sample() -> Layer {
        let mut with_xattr = Entry::file("usr/bin/ping", "ping", 0o755, 7);
        with_xattr
            .xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20, 0, 0]);
        Layer::from_entries(vec![
            Entry::dir("etc", 0o755, 7),
            Entry::file("etc/hostname", "strata\n", 0o644, 7),
            Entry::file("etc/empty", "", 0o600, 7),
            Entry::symlink("bin", "usr/bin", 7),
            Entry::dir("usr", 0o755, 7),
            Entry::dir("usr/bin", 0o755, 7),
            with_xattr,
            Entry::new(
                "usr/bin/ping6",
                EntryKind::Hardlink {
                    target: "usr/bin/ping".into(),
                },
                0o755,
                7,
            ),
            Entry::new("dev/null", EntryKind::CharDevice { major: 1, minor: 3 }, 0o666, 7),
            Entry::new("run/fifo", EntryKind::Fifo, 0o644, 7),
            Entry::file(
                "usr/lib/big",
                (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
                0o644,
                7,
            ),
        ])
        .unwrap()
    }

    /// `n` bytes that compress a little (so the zstd jobs fill with real work).
    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 { b'a' } else { x as u8 }
            })
            .collect()
    }

    /// How `put_layer_blob` made a blob before it streamed: the whole tar in a Vec, the
    /// whole compressed blob in another, then the store.
    fn the_old_way(layer: &Layer) -> LayerBlob {
        let mut tar = Vec::new();
        layer.write_tar(&mut tar).unwrap();
        let compressed = Compression::Zstd { level: 3 }.compress(&tar).unwrap();
        LayerBlob {
            digest: Digest::of(&compressed),
            size: compressed.len() as u64,
            diff_id: Digest::of(&tar),
        }
    }

    #[test]
    fn streamed_blobs_are_the_bytes_of_the_old_way() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let small = sample();
        let blob = LayerWriter::put(&store, &small).unwrap();
        assert_eq!(blob, the_old_way(&small));
        // Known answer: the bytes of every stored layer depend on these settings.
        assert_eq!(
            blob.digest.to_string(),
            "sha256:e665a7ec1d9ba11e11d4447b8e53f9adf3f25c93703abea1c7b1f3ebeac68ed6"
        );
        // Larger than several zstd jobs (level 3: 8 MiB each), so the multithreaded
        // encoder's job boundaries are crossed mid-write.
        let big = Layer::from_entries(vec![
            Entry::file("a", noise(1, 9 << 20), 0o644, 0),
            Entry::file("b", noise(2, 13 << 20), 0o644, 0),
            Entry::file("c", "tail", 0o644, 0),
        ])
        .unwrap();
        let blob = LayerWriter::put(&store, &big).unwrap();
        assert_eq!(blob, the_old_way(&big));
        assert_eq!(Digest::of(&store.read_blob(&blob.digest).unwrap()), blob.digest);
        assert_eq!(read(&store, &blob.digest).unwrap(), big);
    }

    #[test]
    fn copied_tars_chunked_any_way_give_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tar = Vec::new();
        sample().write_tar(&mut tar).unwrap();
        let want = the_old_way(&sample());
        for chunk in [1, 7, 512, 4096, 1 << 20] {
            let mut w = LayerWriter::new(&store).unwrap();
            for c in tar.chunks(chunk) {
                w.write_all(c).unwrap();
                w.flush().unwrap();
            }
            assert_eq!(w.finish().unwrap(), want, "chunks of {chunk}");
        }
    }

    #[test]
    fn layer_size_limits_parse() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("1500m"), Some(1500 << 20));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("2147483648"), Some(2 << 30));
        for bad in ["", "0", "G", "-1", "1.5G", "1T", "99999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_are_verified_and_nothing_half_written_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = sample();
        let blob = LayerWriter::put(&store, &layer).unwrap();
        assert_eq!(read(&store, &blob.digest).unwrap(), layer);

        // Flip one byte of the compressed data: the read fails as a digest mismatch (not
        // as a zstd error) and the blob is removed.
        let path = store.blob_path(&blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&store, &blob.digest).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::DigestMismatch { .. })),
            "{err:#}"
        );
        assert!(!store.has_blob(&blob.digest));

        // Trailing junk after a valid stream (it decompresses fine up to there): refused too.
        let blob = LayerWriter::put(&store, &layer).unwrap();
        let path = store.blob_path(&blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&store, &blob.digest).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::DigestMismatch { .. })),
            "{err:#}"
        );
        let err = read(&store, &blob.digest).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::Missing { .. })),
            "{err:#}"
        );

        // A writer dropped before finish leaves no temporary file.
        let mut w = LayerWriter::new(&store).unwrap();
        w.write_all(&[0; 100_000]).unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A layer of 2240 files of 32 KiB (every third byte the same, the rest noise) in 40
    /// directories: 70 MiB of data, a 55 MiB blob.
    fn layer_of_70_mib() -> Layer {
        let mut entries = vec![Entry::dir("usr", 0o755, 0), Entry::dir("usr/lib", 0o755, 0)];
        for d in 0..40 {
            entries.push(Entry::dir(&format!("usr/lib/d{d}"), 0o755, 0));
            for f in 0..56 {
                let data = noise((d * 100 + f) as u64, 32 << 10);
                entries.push(Entry::file(&format!("usr/lib/d{d}/f{f}"), data, 0o644, 0));
            }
        }
        Layer::from_entries(entries).unwrap()
    }

    /// MiB of a `/proc/self/status` line (`VmRSS:`, `VmHWM:`).
    fn status_mib(key: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    }

    /// One measurement of [`peak_memory_of_a_70_mib_layer`], in a process of its own
    /// (`STRATA_PEAK_PROBE` names it): prints the resident memory before the operation and
    /// the peak during it.
    #[test]
    #[ignore = "a measurement, run by peak_memory_of_a_70_mib_layer (Linux only)"]
    fn peak_memory_probe() {
        let Ok(mode) = std::env::var("STRATA_PEAK_PROBE") else {
            // Not driven by the measurement (e.g. `--include-ignored`): run the measurement,
            // so this never passes having checked nothing.
            return peak_memory_of_a_70_mib_layer();
        };
        let store = Store::open(std::env::var("STRATA_PEAK_STORE").unwrap().as_ref()).unwrap();
        let digest: Digest = std::env::var("STRATA_PEAK_BLOB").unwrap().parse().unwrap();
        let layer = mode.starts_with("write").then(layer_of_70_mib);
        let before = status_mib("VmRSS:");
        std::fs::write("/proc/self/clear_refs", "5").unwrap(); // VmHWM := VmRSS
        match mode.as_str() {
            "write-old" => {
                // put_layer_blob before LayerWriter: the tar in a Vec, the blob in another.
                let layer = layer.as_ref().unwrap();
                let mut tar = Vec::with_capacity(layer.data_size() as usize + layer.entries().len() * 1024);
                layer.write_tar(&mut tar).unwrap();
                let _diff_id = Digest::of(&tar);
                let compressed = LAYER_COMPRESSION.compress(&tar).unwrap();
                assert_eq!(store.put_blob(&compressed).unwrap(), digest);
            }
            "write-streamed" => {
                assert_eq!(
                    LayerWriter::put(&store, layer.as_ref().unwrap()).unwrap().digest,
                    digest
                );
            }
            "read-old" => {
                // read_layer_blob before streaming: the blob in a Vec, the tar in another.
                let compressed = store.read_blob(&digest).unwrap();
                let tar = zstd::decode_all(compressed.as_slice()).unwrap();
                let l = Layer::read_tar(tar.as_slice(), &ReadOptions::default()).unwrap();
                assert_eq!(l.entries().len(), 2282);
            }
            "read-streamed" => {
                assert_eq!(read(&store, &digest).unwrap().entries().len(), 2282);
            }
            other => panic!("unknown probe {other}"),
        }
        println!("PEAK {mode} {before} {}", status_mib("VmHWM:"));
    }

    /// Peak resident memory of writing a 70 MiB layer into the store and reading it back,
    /// the old way (whole tar and whole blob in memory) and streamed, each in a process of
    /// its own. Linux only. `cargo test --release --lib
    /// store::layer::tests::peak_memory_of -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement (prints a table); Linux only"]
    fn peak_memory_of_a_70_mib_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = layer_of_70_mib();
        let blob = LayerWriter::put(&store, &layer).unwrap();
        assert_eq!(blob, the_old_way(&layer));
        println!(
            "layer: {} entries, {} MiB of data; blob {} MiB",
            layer.entries().len(),
            layer.data_size() >> 20,
            blob.size >> 20
        );
        drop(layer);
        let mut peaks = std::collections::BTreeMap::new();
        for mode in ["write-old", "write-streamed", "read-old", "read-streamed"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "store::layer::tests::peak_memory_probe"])
                .args(["--ignored", "--nocapture", "--test-threads=1"])
                .env("STRATA_PEAK_PROBE", mode)
                .env("STRATA_PEAK_STORE", dir.path())
                .env("STRATA_PEAK_BLOB", blob.digest.to_string())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{mode}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The harness prints the test's name on the same line, before.
            let line = stdout.lines().find_map(|l| l.split_once("PEAK ")).unwrap().1;
            let n: Vec<u64> = line.split(' ').skip(1).map(|n| n.parse().unwrap()).collect();
            println!(
                "{mode:>15}: resident before {:>4} MiB, peak {:>4} MiB, peak above before {:>4} MiB",
                n[0],
                n[1],
                n[1] - n[0]
            );
            peaks.insert(mode, n[1] - n[0]);
        }
        assert!(peaks["write-streamed"] < peaks["write-old"]);
        assert!(peaks["read-streamed"] < peaks["read-old"]);
    }
}
