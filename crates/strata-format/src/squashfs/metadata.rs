//! Metadata blocks: the 8 KiB units that hold inodes, directories and lookup tables.
//!
//! Each block is a 16-bit little-endian header (the stored length, with bit 15 set when the
//! block is stored uncompressed) followed by the block. A reference to a position in a table
//! is `(start of its block relative to the table) << 16 | offset in the uncompressed block`.

use super::Error;
use super::compress::Codec;

/// Uncompressed size of a metadata block.
pub(super) const BLOCK: usize = 8192;

/// Bit 15 of a metadata block header: stored uncompressed.
const UNCOMPRESSED: u16 = 0x8000;

/// Writes a stream of bytes as a sequence of metadata blocks.
pub(super) struct MetadataWriter {
    /// The finished blocks, headers included.
    out: Vec<u8>,
    /// The block being filled (always shorter than [`BLOCK`]).
    pending: Vec<u8>,
    /// Where each finished block starts in `out`.
    starts: Vec<u64>,
    codec: Codec,
}

impl MetadataWriter {
    pub(super) fn new(codec: Codec) -> MetadataWriter {
        MetadataWriter {
            out: Vec::new(),
            pending: Vec::with_capacity(BLOCK),
            starts: Vec::new(),
            codec,
        }
    }

    /// Start of the current block (relative to the table) and the offset in it.
    pub(super) fn position(&self) -> (u32, u16) {
        let block = u32::try_from(self.out.len()).expect("metadata tables stay below 4 GiB");
        (block, self.pending.len() as u16)
    }

    /// The current position as a 48-bit reference (`block << 16 | offset`).
    pub(super) fn reference(&self) -> u64 {
        ((self.out.len() as u64) << 16) | self.pending.len() as u64
    }

    /// Append bytes, finishing blocks as they fill.
    pub(super) fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            let take = (BLOCK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == BLOCK {
                self.finish_block()?;
            }
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<(), Error> {
        self.starts.push(self.out.len() as u64);
        match self.codec.compress(&self.pending)? {
            Some(packed) => {
                self.out.extend_from_slice(&(packed.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&packed);
            }
            None => {
                self.out
                    .extend_from_slice(&(self.pending.len() as u16 | UNCOMPRESSED).to_le_bytes());
                self.out.extend_from_slice(&self.pending);
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// Finish the last block; returns the blocks and the start of each, relative to the table.
    pub(super) fn finish(mut self) -> Result<(Vec<u8>, Vec<u64>), Error> {
        if !self.pending.is_empty() {
            self.finish_block()?;
        }
        Ok((self.out, self.starts))
    }
}

/// Append a lookup table (fragments, ids, xattr ids) to `image`: its entries in metadata
/// blocks, then the index of those blocks (absolute 64-bit positions). Returns the position
/// of the index, which is what the superblock points at.
pub(super) fn append_table(image: &mut Vec<u8>, entries: &[u8], codec: Codec) -> Result<u64, Error> {
    let mut writer = MetadataWriter::new(codec);
    writer.write(entries)?;
    let (blocks, starts) = writer.finish()?;
    let base = image.len() as u64;
    image.extend_from_slice(&blocks);
    let index = image.len() as u64;
    for start in starts {
        image.extend_from_slice(&(base + start).to_le_bytes());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::Compression;

    #[test]
    fn blocks_split_at_8k_with_headers_and_references() {
        let mut w = MetadataWriter::new(Codec::new(Compression::Zstd { level: 1 }, 131072).unwrap());
        w.write(&[7u8; 5000]).unwrap();
        assert_eq!(w.reference(), 5000);
        w.write(&[7u8; 5000]).unwrap();
        // One block finished (compressed to a few bytes), 1808 bytes into the second.
        let (block, offset) = w.position();
        assert!(block > 2 && block < 100, "compressed block of {block} bytes");
        assert_eq!(offset, 1808);
        assert_eq!(w.reference(), (u64::from(block) << 16) | 1808);
        let (out, starts) = w.finish().unwrap();
        assert_eq!(starts, [0, u64::from(block)]);
        let first = u16::from_le_bytes([out[0], out[1]]);
        assert_eq!(first & UNCOMPRESSED, 0);
        assert_eq!(u32::from(first) + 2, block);
    }
}
