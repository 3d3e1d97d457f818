//! Block compression for squashfs, one codec per thread.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Compression, Error};

/// Compressor ids in the superblock (`squashfs_fs.h`).
pub(super) fn compressor_id(c: Compression) -> u16 {
    match c {
        Compression::Gzip { .. } => 1,
        Compression::Xz { .. } => 4,
        Compression::Zstd { .. } => 6,
    }
}

/// A compressor for one thread: keeps its zstd context between blocks.
pub(super) struct Codec {
    kind: Compression,
    block_size: u32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Codec {
    pub(super) fn new(kind: Compression, block_size: u32) -> Result<Codec, Error> {
        let zstd = match kind {
            Compression::Zstd { level } => {
                Some(zstd::bulk::Compressor::new(level).map_err(|source| Error::Compress {
                    compression: kind,
                    source,
                })?)
            }
            _ => None,
        };
        Ok(Codec { kind, block_size, zstd })
    }

    /// `data` compressed, or `None` when compressing does not make it smaller (squashfs then
    /// stores the block as it is and marks it uncompressed).
    pub(super) fn compress(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let kind = self.kind;
        let packed = self.compress_raw(data).map_err(|source| Error::Compress {
            compression: kind,
            source,
        })?;
        Ok((packed.len() < data.len()).then_some(packed))
    }

    fn compress_raw(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self.kind {
            Compression::Zstd { .. } => {
                let zstd = self.zstd.as_mut().expect("zstd codec has a context");
                zstd.compress(data)
            }
            // squashfs "gzip" is a zlib stream (RFC 1950), which the kernel inflates.
            Compression::Gzip { level } => {
                let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
                enc.write_all(data)?;
                enc.finish()
            }
            // The kernel allocates a dictionary of one block and checks CRC32 at most, as
            // mksquashfs writes it: a preset with the dictionary cut down to the block size.
            Compression::Xz { level } => {
                let mut opts = xz2::stream::LzmaOptions::new_preset(level).map_err(io::Error::other)?;
                opts.dict_size(self.block_size);
                let mut filters = xz2::stream::Filters::new();
                filters.lzma2(&opts);
                let stream = xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
                let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
                enc.write_all(data)?;
                enc.finish()
            }
        }
    }
}

/// A compressed block as it goes into the image.
pub(super) struct Packed {
    /// The bytes to write: compressed, or the input when compression did not help.
    pub(super) bytes: Vec<u8>,
    /// Whether `bytes` is the uncompressed input.
    pub(super) raw: bool,
}

/// Compress every block on `threads` threads. The result is in input order, so the output
/// does not depend on how the work was shared out.
pub(super) fn compress_all(
    blocks: &[&[u8]],
    kind: Compression,
    block_size: u32,
    threads: usize,
) -> Result<Vec<Packed>, Error> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, blocks.len().max(1));
    let work = || -> Result<Vec<(usize, Packed)>, Error> {
        let mut codec = Codec::new(kind, block_size)?;
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(block) = blocks.get(i) else { return Ok(done) };
            let packed = match codec.compress(block)? {
                Some(bytes) => Packed { bytes, raw: false },
                None => Packed {
                    bytes: block.to_vec(),
                    raw: true,
                },
            };
            done.push((i, packed));
        }
    };
    let mut results: Vec<Option<Packed>> = blocks.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        for handle in handles {
            for (i, packed) in handle.join().expect("compression thread panicked")? {
                results[i] = Some(packed);
            }
        }
        Ok::<(), Error>(())
    })?;
    Ok(results
        .into_iter()
        .map(|p| p.expect("every block was compressed"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompressible_blocks_are_kept_raw_and_results_keep_input_order() {
        // A block of pseudo-random bytes does not shrink; a block of zeros does.
        let mut noise = vec![0u8; 4096];
        let mut x: u32 = 0x1234_5678;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let zeros = vec![0u8; 4096];
        let blocks: Vec<&[u8]> = vec![&noise, &zeros, &noise, &zeros, &zeros];
        for kind in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 6 },
            Compression::Xz { level: 6 },
        ] {
            let packed = compress_all(&blocks, kind, 131072, 3).unwrap();
            let raw: Vec<bool> = packed.iter().map(|p| p.raw).collect();
            assert_eq!(raw, [true, false, true, false, false], "{kind:?}");
            assert_eq!(packed[0].bytes, noise);
            assert!(packed[1].bytes.len() < 100, "{kind:?}");
        }
    }
}
