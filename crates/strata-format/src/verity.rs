//! dm-verity hash trees, byte-compatible with `veritysetup format` defaults.
//!
//! The format (cryptsetup's `VERITY` type, format version 1) is: sha256, 4096-byte data
//! blocks, 4096-byte hash blocks, every digest taken over `salt || block`. The hash device
//! starts with a 512-byte superblock padded to one hash block, followed by the hash levels,
//! the level nearest the root first and the level over the data blocks last. Each level is a
//! run of hash blocks holding 128 digests each, the last one zero-padded. The root hash is
//! the digest of the single top block (or, for a one-block image, of that data block: there
//! are then no levels at all and the hash device is the superblock alone).
//!
//! Salt and superblock UUID are chosen by the caller, so a build is reproducible:
//! `veritysetup format --salt=HEX --uuid=UUID DATA HASH` gives the same bytes.

use std::fmt;
use std::io::{self, Read, Write};
use std::thread;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Size of a data block and of a hash block, in bytes (veritysetup's default for both).
pub const BLOCK_SIZE: u64 = 4096;

/// Longest salt the verity superblock can carry.
pub const MAX_SALT_SIZE: usize = 256;

const DIGEST_SIZE: usize = 32;
const BLOCK: usize = BLOCK_SIZE as usize;
const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;
const SUPERBLOCK_SIZE: usize = 512;
// The salt field spans bytes 88..344 of the superblock.
const _: () = assert!(88 + MAX_SALT_SIZE <= SUPERBLOCK_SIZE);
/// Data read (and hashed) per worker thread per round of the leaf level.
const CHUNK_PER_THREAD: usize = 4 << 20;

/// Errors from building a hash tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// dm-verity covers whole data blocks only.
    #[error("data size {size} is not a multiple of the {BLOCK_SIZE}-byte verity data block; pad the image")]
    UnalignedDataSize {
        /// The data size given.
        size: u64,
    },
    /// A hash tree over nothing cannot be set up by dm-verity.
    #[error("data is empty: a verity hash tree needs at least one {BLOCK_SIZE}-byte block")]
    EmptyData,
    /// The superblock has room for at most [`MAX_SALT_SIZE`] bytes of salt.
    #[error("salt is {len} bytes; the verity superblock holds at most {MAX_SALT_SIZE}")]
    SaltTooLong {
        /// The salt length given.
        len: usize,
    },
    /// The reader ended before the announced data size.
    #[error("data ended after {read} of the announced {expected} bytes")]
    ShortData {
        /// Bytes read before the end.
        read: u64,
        /// The data size given.
        expected: u64,
    },
    /// Reading the data failed.
    #[error("reading the data to hash")]
    Read(#[source] io::Error),
    /// Writing the hash device failed.
    #[error("writing the verity hash device")]
    Write(#[source] io::Error),
}

/// What `veritysetup format` takes on its command line besides the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Salt prepended to every hashed block (`--salt`); strata derives 32 bytes from content.
    pub salt: Vec<u8>,
    /// UUID stored in the superblock (`--uuid`).
    pub uuid: Uuid,
}

impl Params {
    /// Parameters with the given salt and superblock UUID.
    pub fn new(salt: impl Into<Vec<u8>>, uuid: Uuid) -> Self {
        Params {
            salt: salt.into(),
            uuid,
        }
    }
}

/// A verity root hash (sha256). `Display` gives lowercase hex, as `veritysetup` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash(pub [u8; DIGEST_SIZE]);

impl RootHash {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_SIZE] {
        &self.0
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({self})")
    }
}

/// A finished hash tree: the root hash and the whole hash device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    /// The root hash, to be signed and passed to dm-verity.
    pub root_hash: RootHash,
    /// The hash device: superblock, then the hash levels ([`hash_device_size`] bytes).
    pub hash_device: Vec<u8>,
}

/// Build the hash tree over `data_size` bytes read from `data` and keep it in memory.
///
/// Reads exactly `data_size` bytes; anything the reader holds beyond that is not read.
pub fn hash_tree(data: impl Read, data_size: u64, params: &Params) -> Result<HashTree, Error> {
    let mut hash_device = Vec::with_capacity(hash_device_size(data_size)? as usize);
    let root_hash = write_hash_tree(data, data_size, params, &mut hash_device)?;
    Ok(HashTree { root_hash, hash_device })
}

/// Build the hash tree over `data_size` bytes read from `data` and write the hash device to
/// `out`. Returns the root hash.
pub fn write_hash_tree(
    mut data: impl Read,
    data_size: u64,
    params: &Params,
    mut out: impl Write,
) -> Result<RootHash, Error> {
    let level_blocks = level_sizes(data_size)?;
    if params.salt.len() > MAX_SALT_SIZE {
        return Err(Error::SaltTooLong { len: params.salt.len() });
    }
    let salted = Sha256::new_with_prefix(&params.salt);
    let data_blocks = data_size / BLOCK_SIZE;

    // levels[0] covers the data blocks, levels[last] is the single top block.
    let mut levels: Vec<Vec<u8>> = level_blocks.iter().map(|&n| vec![0; n as usize * BLOCK]).collect();
    let root_hash = match levels.first_mut() {
        None => {
            // One data block: its digest is the root hash, and there is no level to write.
            let mut block = vec![0; BLOCK];
            read_exact(&mut data, &mut block, 0, data_size)?;
            RootHash(digest(&salted, &block))
        }
        Some(leaves) => {
            hash_data_parallel(&mut data, data_size, &salted, leaves)?;
            for i in 1..levels.len() {
                let (below, above) = levels.split_at_mut(i);
                hash_blocks_parallel(&below[i - 1], &salted, &mut above[0]);
            }
            let top = levels.last().expect("at least one level");
            RootHash(digest(&salted, top))
        }
    };

    out.write_all(&superblock(params, data_blocks)).map_err(Error::Write)?;
    for level in levels.iter().rev() {
        out.write_all(level).map_err(Error::Write)?;
    }
    out.flush().map_err(Error::Write)?;
    Ok(root_hash)
}

/// Size in bytes of the hash device for `data_size` bytes of data: one block for the
/// superblock plus every hash level.
pub fn hash_device_size(data_size: u64) -> Result<u64, Error> {
    let blocks: u64 = level_sizes(data_size)?.iter().sum();
    Ok((1 + blocks) * BLOCK_SIZE)
}

/// Number of hash blocks in each level, from the level over the data up to the top block.
/// Empty for a single data block, as in cryptsetup (its root hash is that block's digest).
fn level_sizes(data_size: u64) -> Result<Vec<u64>, Error> {
    if !data_size.is_multiple_of(BLOCK_SIZE) {
        return Err(Error::UnalignedDataSize { size: data_size });
    }
    let mut blocks = data_size / BLOCK_SIZE;
    if blocks == 0 {
        return Err(Error::EmptyData);
    }
    let mut sizes = Vec::new();
    while blocks > 1 {
        blocks = blocks.div_ceil(HASHES_PER_BLOCK);
        sizes.push(blocks);
    }
    Ok(sizes)
}

/// The 512-byte verity superblock (cryptsetup's `struct verity_sb`, little-endian),
/// zero-padded to one hash block as `veritysetup format` writes it.
fn superblock(params: &Params, data_blocks: u64) -> Vec<u8> {
    let mut sb = vec![0u8; BLOCK];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type 1: salt first ("normal")
    sb[16..32].copy_from_slice(params.uuid.as_bytes());
    sb[32..38].copy_from_slice(b"sha256"); // NUL-padded to 32 bytes
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes()); // data block size
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes()); // hash block size
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(params.salt.len() as u16).to_le_bytes());
    sb[88..88 + params.salt.len()].copy_from_slice(&params.salt);
    sb
}

fn digest(salted: &Sha256, block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut hasher = salted.clone();
    hasher.update(block);
    hasher.finalize().into()
}

/// Hash every block of `input` into consecutive digests at the start of `out`.
fn hash_blocks(input: &[u8], salted: &Sha256, out: &mut [u8]) {
    for (block, slot) in input.chunks_exact(BLOCK).zip(out.chunks_exact_mut(DIGEST_SIZE)) {
        slot.copy_from_slice(&digest(salted, block));
    }
}

fn worker_count() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get()).min(16)
}

/// [`hash_blocks`] split across threads (used for the upper levels, which are in memory).
fn hash_blocks_parallel(input: &[u8], salted: &Sha256, out: &mut [u8]) {
    let blocks = input.len() / BLOCK;
    let per_thread = blocks.div_ceil(worker_count()).max(256);
    thread::scope(|s| {
        let outs = out.chunks_mut(per_thread * DIGEST_SIZE);
        for (chunk, out) in input.chunks(per_thread * BLOCK).zip(outs) {
            s.spawn(move || hash_blocks(chunk, salted, out));
        }
    });
}

/// Hash the data blocks into `leaves`, reading the next round of data on this thread while
/// the workers hash the current one. Hashing is the cost (a reader is usually the page
/// cache), so each round hands every core a few MiB.
fn hash_data_parallel(data: &mut impl Read, data_size: u64, salted: &Sha256, leaves: &mut [u8]) -> Result<(), Error> {
    let workers = worker_count();
    let round = (workers * CHUNK_PER_THREAD).min(data_size as usize);
    let mut current = vec![0u8; round];
    let mut next = vec![0u8; round];
    let mut done: u64 = 0;
    let mut len = round.min(data_size as usize);
    read_exact(data, &mut current[..len], 0, data_size)?;
    let mut leaves = &mut leaves[..];
    while len > 0 {
        let after = done + len as u64;
        let next_len = round.min((data_size - after) as usize);
        let (these, rest) = leaves.split_at_mut(len / BLOCK * DIGEST_SIZE);
        let chunk = current[..len].as_ref();
        let read = thread::scope(|s| {
            let outs = these.chunks_mut(CHUNK_PER_THREAD / BLOCK * DIGEST_SIZE);
            for (input, out) in chunk.chunks(CHUNK_PER_THREAD).zip(outs) {
                s.spawn(move || hash_blocks(input, salted, out));
            }
            read_exact(data, &mut next[..next_len], after, data_size)
        });
        read?;
        leaves = rest;
        done = after;
        len = next_len;
        std::mem::swap(&mut current, &mut next);
    }
    Ok(())
}

/// Fill `buf` from `data`, which has already delivered `done` of `expected` bytes.
fn read_exact(data: &mut impl Read, buf: &mut [u8], done: u64, expected: u64) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::ShortData {
                    read: done + filled as u64,
                    expected,
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Read(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers produced once on Debian 12 with cryptsetup-bin 2:2.6.1 (veritysetup 2.6.1):
    //   veritysetup format --salt=000102…1e1f --uuid=12345678-9abc-4def-8123-456789abcdef DATA HASH
    // root hash as printed, `sha256sum HASH` and `stat -c %s HASH` of the hash device.
    // DATA is 4096 zero bytes (`zero1`) or `pattern(n)` below, written by a Python one-liner
    // computing the same formula.
    const SALT: [u8; 32] = {
        let mut s = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            s[i] = i as u8;
            i += 1;
        }
        s
    };
    const UUID: &str = "12345678-9abc-4def-8123-456789abcdef";

    struct Known {
        blocks: usize,
        root: &'static str,
        device_sha256: &'static str,
        device_size: u64,
    }

    const PATTERNS: &[Known] = &[
        // 2 blocks: one level, one hash block.
        Known {
            blocks: 2,
            root: "f0fcc38c7d8998c18d746dc12889ff714b5227f0fe689d367f99f642998e0f8b",
            device_sha256: "07c41eee3af42ff31e3feca2f840b75111e325e450fb3098eb7144752cd50e9a",
            device_size: 8192,
        },
        Known {
            blocks: 3,
            root: "69f511c9b8a18ec24c1a1c5a2a4c42b0e1115716ca90eab4e482aba32746d740",
            device_sha256: "9e7e3740551b4d6084e28e2191b931d074739732e41f777db7bfe50868f146fb",
            device_size: 8192,
        },
        // 128 blocks: exactly one full hash block.
        Known {
            blocks: 128,
            root: "4fbd644d0adfaeda4f3fded13993411b8bf27b37fd0decae40c402d1a5fe7559",
            device_sha256: "0728483981f20d3174026087bef6481b0352d1e810b6998ae5bb9b189cfb8f88",
            device_size: 8192,
        },
        // 129 and 130 blocks: two levels (2 leaf hash blocks under 1 top block).
        Known {
            blocks: 129,
            root: "9e1e479bc82edaa0688c38a182d02a59f8df6c84255706ac0e3fadf51eba22c1",
            device_sha256: "8efa810a1e0ce9f8203e5540a4e414a243dbfd47913cca7ca43acf5fbbc933ff",
            device_size: 16384,
        },
        Known {
            blocks: 130,
            root: "dbfb50b2e6c3dda4591ed8858f01c3d27aef28a034358f255e6cb29ceb00ea48",
            device_sha256: "170512459809af20ecc96681c233961308b591b86d5f16549ec09a05ffbc9353",
            device_size: 16384,
        },
        // 16385 blocks (64 MiB + 4 KiB): three levels (129 + 2 + 1 hash blocks), and more
        // than one round of parallel leaf hashing.
        Known {
            blocks: 16385,
            root: "f25b49bfe63370fa54f4beb8da3191f7fad81f5798131dc6233cf9e64a57affe",
            device_sha256: "1eeef81c2eae87549badc58ec00fda99f995a50f842c85d8f3d4e8e4e3686220",
            device_size: 544768,
        },
    ];

    /// Byte `i` of the test data is `(7 i + i / 4096) mod 251`: no two blocks are equal.
    fn pattern(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK).map(|i| ((i * 7 + i / BLOCK) % 251) as u8).collect()
    }

    fn params() -> Params {
        Params::new(SALT, Uuid::parse_str(UUID).unwrap())
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        RootHash(Sha256::digest(bytes).into()).to_string()
    }

    fn check(data: &[u8], root: &str, device_sha256: &str, device_size: u64) {
        let tree = hash_tree(data, data.len() as u64, &params()).unwrap();
        let blocks = data.len() / BLOCK;
        assert_eq!(tree.root_hash.to_string(), root, "root hash, {blocks} blocks");
        assert_eq!(
            tree.hash_device.len() as u64,
            device_size,
            "device size, {blocks} blocks"
        );
        assert_eq!(hash_device_size(data.len() as u64).unwrap(), device_size);
        assert_eq!(sha256_hex(&tree.hash_device), device_sha256, "device, {blocks} blocks");
    }

    #[test]
    fn one_zero_block_matches_veritysetup() {
        check(
            &[0; BLOCK],
            "4ce3ecf32c133bf6321901b6092219474b6ac91a19d0304621d629e6bb9987dc",
            "0f12bf3220be313347674d8e3d6b96663e01058a5fa665099a1ba1eee6c5d5b2",
            4096,
        );
    }

    #[test]
    fn patterns_match_veritysetup() {
        for known in PATTERNS {
            check(
                &pattern(known.blocks),
                known.root,
                known.device_sha256,
                known.device_size,
            );
        }
    }

    #[test]
    fn superblock_fields() {
        let tree = hash_tree(&pattern(3)[..], 3 * BLOCK_SIZE, &params()).unwrap();
        let sb = &tree.hash_device[..BLOCK];
        assert_eq!(&sb[..8], b"verity\0\0");
        assert_eq!(u64::from_le_bytes(sb[72..80].try_into().unwrap()), 3);
        assert_eq!(&sb[16..32], Uuid::parse_str(UUID).unwrap().as_bytes());
        assert_eq!(&sb[88..120], &SALT);
        assert!(sb[120..].iter().all(|&b| b == 0));
    }

    #[test]
    fn salt_and_uuid_change_the_output() {
        let data = pattern(3);
        let base = hash_tree(&data[..], data.len() as u64, &params()).unwrap();
        let other_salt = Params::new([1u8; 32], params().uuid);
        let salted = hash_tree(&data[..], data.len() as u64, &other_salt).unwrap();
        assert_ne!(salted.root_hash, base.root_hash);
        let other_uuid = Params::new(SALT, Uuid::from_u128(1));
        let relabelled = hash_tree(&data[..], data.len() as u64, &other_uuid).unwrap();
        assert_eq!(relabelled.root_hash, base.root_hash, "the UUID is not hashed");
        assert_ne!(relabelled.hash_device, base.hash_device, "but it is in the superblock");
    }

    #[test]
    fn rejects_unaligned_and_empty_data() {
        let data = [0u8; 5000];
        let err = hash_tree(&data[..], 5000, &params()).unwrap_err();
        assert!(matches!(err, Error::UnalignedDataSize { size: 5000 }), "{err:?}");
        assert!(err.to_string().contains("not a multiple of the 4096-byte"), "{err}");
        let err = hash_tree(&data[..0], 0, &params()).unwrap_err();
        assert!(matches!(err, Error::EmptyData), "{err:?}");
    }

    #[test]
    fn rejects_short_data_and_long_salt() {
        let data = pattern(2);
        let err = hash_tree(&data[..], 3 * BLOCK_SIZE, &params()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ShortData {
                    read: 8192,
                    expected: 12288
                }
            ),
            "{err:?}"
        );
        let err = hash_tree(&data[..], 2 * BLOCK_SIZE, &Params::new(vec![0; 257], params().uuid)).unwrap_err();
        assert!(matches!(err, Error::SaltTooLong { len: 257 }), "{err:?}");
    }

    #[test]
    fn reads_only_the_announced_size() {
        let data = pattern(3);
        let two = hash_tree(&data[..2 * BLOCK], 2 * BLOCK_SIZE, &params()).unwrap();
        let prefix = hash_tree(&data[..], 2 * BLOCK_SIZE, &params()).unwrap();
        assert_eq!(two, prefix);
    }
}
