//! squashfs 4.0 images, as the Linux kernel mounts them, from a [`Tree`].
//!
//! Our own writer rather than the `backhand` crate (evaluated at 0.25.5): backhand's writer
//! does not write extended attributes (its inodes are written with `xattr_index:
//! 0xffffffff`, "TODO(#32): Support xattr"), so `security.capability` would be lost, and it
//! writes each path as its own inode, so hardlinks are not kept. Both matter for a `/usr`
//! tree built from distribution packages.
//!
//! The image is a function of the tree and the [`Options`] only:
//! - inodes are numbered in one fixed walk (post-order, entries sorted by name bytes, a
//!   hardlinked file at its first path), so the root gets the highest number as with
//!   mksquashfs;
//! - data blocks are compressed on several threads, each block on its own, and placed in
//!   input order, so thread timing cannot change the bytes;
//! - the superblock time is the caller's, never the clock.
//!
//! Layout: superblock, file data blocks (in inode order; identical files stored once; blocks
//! of zeros stored as holes), fragment blocks (the tails of files smaller than a block,
//! packed in inode order), then the inode, directory, fragment, id and xattr tables in the
//! order the kernel's sanity checks expect. There is no NFS export table and no directory
//! index (the kernel then scans a directory's entries in order). The image is padded with
//! zeros to a multiple of 4096 bytes.

mod compress;
mod layout;
mod metadata;

use std::io::{self, Write};

use crate::tree::Tree;

/// Size of the superblock at the start of the image.
const SUPERBLOCK_SIZE: usize = 96;

/// The image is padded to a multiple of this, as mksquashfs does and dm-verity needs.
pub const PAD_TO: usize = 4096;

/// How data and metadata blocks are compressed: compressors the kernel's squashfs reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// zstd at `level` (1..=22).
    Zstd { level: i32 },
    /// zlib ("gzip" in squashfs terms) at `level` (1..=9).
    Gzip { level: u32 },
    /// xz (LZMA2, CRC32 check, dictionary of one block) at preset `level` (0..=9).
    Xz { level: u32 },
}

impl Default for Compression {
    /// zstd at level 15, the level mksquashfs uses for `-comp zstd`.
    fn default() -> Compression {
        Compression::Zstd { level: 15 }
    }
}

/// How to write an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Compressor for data and metadata.
    pub compression: Compression,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Modification time recorded in the superblock (seconds since the epoch).
    pub mtime: u32,
    /// Compression threads; 0 uses every available core. Does not change the output.
    pub threads: usize,
}

impl Default for Options {
    /// zstd level 15, 128 KiB blocks, time 0, all cores.
    fn default() -> Options {
        Options {
            compression: Compression::default(),
            block_size: 128 * 1024,
            mtime: 0,
            threads: 0,
        }
    }
}

/// Errors from writing a squashfs image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The block size is not a power of two between 4 KiB and 1 MiB.
    #[error("squashfs block size {block_size} is not a power of two from 4096 to 1048576")]
    InvalidBlockSize { block_size: u32 },
    /// The compression level is outside what the compressor accepts.
    #[error("compression level out of range in {compression:?} (zstd 1..=22, gzip 1..=9, xz 0..=9)")]
    InvalidLevel { compression: Compression },
    /// The compressor failed.
    #[error("{compression:?} compression failed")]
    Compress {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    /// squashfs stores only `user.`, `trusted.` and `security.` extended attributes.
    #[error("`{path}` has extended attribute `{name}`; squashfs stores only user., trusted. and security. ones")]
    UnsupportedXattr { path: String, name: String },
    /// squashfs times are 32-bit.
    #[error("`{path}` has mtime {mtime}, beyond squashfs's 32-bit times")]
    MtimeOutOfRange { path: String, mtime: u64 },
    /// squashfs device numbers hold a 12-bit major and a 20-bit minor.
    #[error("`{path}` is device {major}:{minor}; squashfs allows majors below 4096 and minors below 1048576")]
    DeviceOutOfRange { path: String, major: u32, minor: u32 },
    /// squashfs has room for 65535 distinct owners and groups.
    #[error("{count} distinct uids and gids; squashfs holds at most 65535")]
    TooManyIds { count: usize },
    /// Writing the image failed.
    #[error("writing the squashfs image")]
    Write(#[source] io::Error),
}

/// Write the squashfs image of `tree` to `out`, padded to a multiple of [`PAD_TO`] bytes.
pub fn write(tree: &Tree, opts: &Options, mut out: impl Write) -> Result<(), Error> {
    let image = to_bytes(tree, opts)?;
    out.write_all(&image).map_err(Error::Write)
}

/// The squashfs image of `tree`, padded to a multiple of [`PAD_TO`] bytes.
pub fn to_bytes(tree: &Tree, opts: &Options) -> Result<Vec<u8>, Error> {
    check_options(opts)?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    layout::build(tree, opts, threads)
}

fn check_options(opts: &Options) -> Result<(), Error> {
    let bs = opts.block_size;
    if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
        return Err(Error::InvalidBlockSize { block_size: bs });
    }
    let level_ok = match opts.compression {
        Compression::Zstd { level } => (1..=22).contains(&level),
        Compression::Gzip { level } => (1..=9).contains(&level),
        Compression::Xz { level } => level <= 9,
    };
    if !level_ok {
        return Err(Error::InvalidLevel {
            compression: opts.compression,
        });
    }
    Ok(())
}

/// Superblock flags (`squashfs_fs.h`).
mod flags {
    /// Identical files are stored once.
    pub const DUPLICATES: u16 = 0x0040;
    /// The image has no extended attributes.
    pub const NO_XATTRS: u16 = 0x0200;
}

/// "No table" in a superblock table position.
const NO_TABLE: u64 = u64::MAX;

/// The fields of the superblock that vary between images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub inode_count: u32,
    pub mtime: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compressor: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_id_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

impl Superblock {
    fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = Vec::with_capacity(SUPERBLOCK_SIZE);
        b.extend_from_slice(b"hsqs");
        for v in [self.inode_count, self.mtime, self.block_size, self.fragment_count] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let block_log = self.block_size.trailing_zeros() as u16;
        for v in [self.compressor, block_log, self.flags, self.id_count, 4, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            self.xattr_id_table,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.export_table,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.try_into().expect("superblock is 96 bytes")
    }
}

#[cfg(test)]
mod tests;
