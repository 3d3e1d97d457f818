//! Discoverable Disk Images (UAPI.3): a GPT disk holding a file system image, its dm-verity
//! hash tree and the signature of the root hash, with the partition types of the UAPI
//! Discoverable Partitions Specification (DPS). This is what a `<name>.sysext.raw` is.
//!
//! Partition types: a sysext uses the **root** types (root, root-verity, root-verity-sig).
//! systemd-sysext dissects extensions with `image_policy_sysext`, which accepts a verity- or
//! signature-protected root *or* `/usr` partition (systemd 257 `src/shared/image-policy.c`,
//! with `DISSECT_IMAGE_REQUIRE_ROOT|DISSECT_IMAGE_USR_NO_ROOT` in `src/sysext/sysext.c`), so
//! both would work; we follow mkosi's sysext format (mkosi 25
//! `resources/repart/definitions/sysext.repart.d`: `Type=root`, `root-verity`,
//! `root-verity-sig`), whose images are the ones systemd is tested with, and the project's
//! design. The file system image carries `/usr` (and `/opt`) at its top level.
//!
//! What else follows systemd-repart (systemd 257 `src/repart/repart.c`), so that systemd finds
//! and checks the partitions the way it does for images repart made:
//! - the data partition's UUID is the first 128 bits of the root hash and the verity
//!   partition's the last 128 bits, byte for byte (not made v4-style: `dissect_image()`
//!   matches them exactly against the root hash when one is given);
//! - partition names are systemd's type names (`root-x86-64`, `root-x86-64-verity`,
//!   `root-x86-64-verity-sig`);
//! - partitions start on 4096-byte boundaries (repart's grain), in the order data, hash,
//!   signature, the first at LBA 40 right after a 128-entry table (as `systemd-repart
//!   --offline=yes` lays out a new image);
//! - the signature partition holds the compact JSON object `{"rootHash":…,
//!   "certificateFingerprint":…,"signature":…}`, NUL-padded (the DPS says to the next multiple
//!   of 4096 bytes; systemd-dissect requires only NULs after the JSON and at most 4 MiB).
//!
//! The read-only flag (bit 60) is set on all three partitions: repart sets it on the data and
//! verity partitions, and the DPS recommends it for verity and signature partitions.
//! The disk GUID and the signature partition's UUID, which nothing looks up, are derived from
//! the root hash so that the same content gives the same image.
//!
//! systemd-dissect 257 (Debian 13) accepts such an image with `--validate`, also under the
//! strict sysext policy `root=signed+absent:usr=signed+absent` and with `--root-hash=`.
//!
//! Without a signing key, [`write_unsigned`] leaves the signature partition out (data and
//! hash tree only), as systemd-repart does for `Verity=data`/`Verity=hash` without
//! `Verity=signature`. systemd uses verity on such an image only when it is given the root
//! hash (`--root-hash=`, a `<image>.roothash` file or the `user.verity.roothash` xattr);
//! otherwise the data partition counts as unprotected, which the strict policy
//! systemd-sysext applies to `/.extra/sysext/` in the initrd refuses.
//!
//! The GPT is written here rather than with the `gpt` crate: `gpt` edits a table on a
//! `Read + Write + Seek` device of the final size (so the whole image in memory or a file),
//! while this writer streams the image front to back into any `Write`, the data partition
//! copied from a `Read`. The table itself is small (UEFI 2.10, section 5.3).

use std::io::{self, Read, Write};

use uuid::Uuid;

use crate::verity::{self, RootHash};

/// Logical sector size of the image.
pub const SECTOR_SIZE: u64 = 512;
/// Partitions start and end on multiples of this (systemd-repart's grain).
pub const ALIGNMENT: u64 = 4096;
/// systemd refuses signature partitions larger than this.
pub const MAX_SIGNATURE_PARTITION_SIZE: u64 = 4 << 20;

const ENTRY_COUNT: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const HEADER_SIZE: usize = 92;
/// Sectors of one partition entry array (16 KiB).
const ENTRY_SECTORS: u64 = ENTRY_COUNT * ENTRY_SIZE / SECTOR_SIZE;
/// GPT attribute bit 60, `SD_GPT_FLAG_READ_ONLY`.
pub const FLAG_READ_ONLY: u64 = 1 << 60;

/// Errors from building a disk image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// dm-verity needs the data partition to be whole 4096-byte blocks.
    #[error("data partition image is {size} bytes, not a multiple of {ALIGNMENT}; pad it")]
    UnalignedData {
        /// Size of the data image.
        size: u64,
    },
    /// An empty data partition cannot be verity-protected.
    #[error("data partition image is empty")]
    EmptyData,
    /// The hash tree does not start with a dm-verity superblock.
    #[error("the hash tree does not start with a dm-verity superblock")]
    NotAHashTree,
    /// The hash tree was made for data of another size.
    #[error("the hash tree covers {hash_tree_blocks} data blocks but the data image has {data_blocks}")]
    HashTreeSizeMismatch {
        /// Data blocks recorded in the hash tree's superblock.
        hash_tree_blocks: u64,
        /// Data blocks in the data image.
        data_blocks: u64,
    },
    /// The hash tree is not what `verity` writes for data of this size.
    #[error("the hash tree is {actual} bytes; {expected} expected for this data size")]
    HashTreeLength {
        /// Length given.
        actual: u64,
        /// Length of a hash device for the data size.
        expected: u64,
    },
    /// The signature JSON must be followed by NULs only, so it may not contain one.
    #[error("the signature JSON contains a NUL byte at offset {offset}")]
    NulInSignature {
        /// Offset of the first NUL.
        offset: usize,
    },
    /// systemd does not read signature partitions above 4 MiB.
    #[error("the signature partition would be {size} bytes; systemd reads at most {MAX_SIGNATURE_PARTITION_SIZE}")]
    SignatureTooLarge {
        /// Padded size of the signature partition.
        size: u64,
    },
    /// The data reader ended early.
    #[error("data partition image ended after {read} of the announced {expected} bytes")]
    ShortData {
        /// Bytes read before the end.
        read: u64,
        /// Size announced.
        expected: u64,
    },
    /// Reading the data partition image failed.
    #[error("reading the data partition image")]
    Read(#[source] io::Error),
    /// Writing the disk image failed.
    #[error("writing the disk image")]
    Write(#[source] io::Error),
}

/// CPU architectures strata builds images for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// amd64 / x86-64.
    X86_64,
    /// arm64 / AArch64.
    Arm64,
}

/// The DPS partition type UUIDs of one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionTypes {
    /// Root file system.
    pub root: Uuid,
    /// Verity hash tree of the root file system.
    pub root_verity: Uuid,
    /// Signature of the root file system's verity root hash.
    pub root_verity_sig: Uuid,
    /// `/usr` file system.
    pub usr: Uuid,
    /// Verity hash tree of `/usr`.
    pub usr_verity: Uuid,
    /// Signature of `/usr`'s verity root hash.
    pub usr_verity_sig: Uuid,
}

impl Arch {
    /// The architecture's name in DPS partition names and `ARCHITECTURE=` (systemd's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86-64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The partition type UUIDs, from the DPS table.
    pub fn partition_types(self) -> PartitionTypes {
        let u = Uuid::from_u128;
        match self {
            Arch::X86_64 => PartitionTypes {
                root: u(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709),
                root_verity: u(0x2c7357ed_ebd2_46d9_aec1_23d437ec2bf5),
                root_verity_sig: u(0x41092b05_9fc8_4523_994f_2def0408b176),
                usr: u(0x8484680c_9521_48c6_9c11_b0720656f69e),
                usr_verity: u(0x77ff5f63_e7b6_4633_acf4_1565b864c0e6),
                usr_verity_sig: u(0xe7bb33fb_06cf_4e81_8273_e543b413e2e2),
            },
            Arch::Arm64 => PartitionTypes {
                root: u(0xb921b045_1df0_41c3_af44_4c6f280d3fae),
                root_verity: u(0xdf3300ce_d69f_4c92_978c_9bfb0f38d820),
                root_verity_sig: u(0x6db69de6_29f4_4758_a7a5_962190f00ce3),
                usr: u(0xb0e01050_ee5f_4390_949a_9101b17104e9),
                usr_verity: u(0x6e11a4e7_fbca_4ded_b9e9_e1a512bb664e),
                usr_verity_sig: u(0xc23ce4ff_44bd_4b00_b2d4_b41b3419e02a),
            },
        }
    }
}

/// The JSON for the signature partition, as systemd-repart writes it (compact, this key
/// order): the root hash and the certificate fingerprint in lowercase hex, the detached
/// PKCS#7 signature (DER) of the root hash's hex string in base64.
///
/// Every value is hex or base64, so there is nothing to escape.
pub fn signature_json(root_hash: &RootHash, certificate_fingerprint: &[u8; 32], signature_der: &[u8]) -> String {
    use base64::Engine as _;
    let fingerprint = RootHash(*certificate_fingerprint); // same 32-byte lowercase-hex display
    let signature = base64::engine::general_purpose::STANDARD.encode(signature_der);
    format!(r#"{{"rootHash":"{root_hash}","certificateFingerprint":"{fingerprint}","signature":"{signature}"}}"#)
}

/// The pieces of a signed, verity-protected DDI.
#[derive(Debug)]
pub struct Input<'a, R> {
    /// Architecture whose partition types to use.
    pub arch: Arch,
    /// The file system image (squashfs, erofs), read exactly `data_size` bytes.
    pub data: R,
    /// Size of the file system image: a multiple of 4096.
    pub data_size: u64,
    /// The verity hash device made over the data (see [`crate::verity`]).
    pub hash_tree: &'a [u8],
    /// Its root hash.
    pub root_hash: RootHash,
    /// The signature partition's JSON (see [`signature_json`]).
    pub signature_json: &'a [u8],
}

/// One partition as placed in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// DPS partition type.
    pub type_uuid: Uuid,
    /// Partition UUID.
    pub uuid: Uuid,
    /// GPT partition name.
    pub name: String,
    /// Offset from the start of the image, in bytes.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
}

/// Where everything goes: decided before a byte is written. `N` is 3 for a signed image
/// ([`layout`], [`write()`]) and 2 for one without a signature partition ([`layout_unsigned`],
/// [`write_unsigned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<const N: usize = 3> {
    /// GPT disk GUID.
    pub disk_guid: Uuid,
    /// Total image size in bytes.
    pub size: u64,
    /// Data, verity hash tree, verity signature (if signed), in that order.
    pub partitions: [Partition; N],
}

/// Lay out an image for these sizes and root hash, checking the sizes as [`write()`] does.
pub fn layout(
    arch: Arch,
    data_size: u64,
    hash_tree_len: u64,
    signature_len: u64,
    root_hash: &RootHash,
) -> Result<Layout, Error> {
    check_sizes(data_size, hash_tree_len)?;
    // At least one NUL after the JSON, as systemd-repart writes it.
    let signature_size = (signature_len + 1).next_multiple_of(ALIGNMENT);
    if signature_size > MAX_SIGNATURE_PARTITION_SIZE {
        return Err(Error::SignatureTooLarge { size: signature_size });
    }
    Ok(place(arch, data_size, hash_tree_len, Some(signature_size), root_hash))
}

/// Lay out an image without a signature partition (data and hash tree only), checking the
/// sizes as [`write_unsigned`] does.
pub fn layout_unsigned(
    arch: Arch,
    data_size: u64,
    hash_tree_len: u64,
    root_hash: &RootHash,
) -> Result<Layout<2>, Error> {
    check_sizes(data_size, hash_tree_len)?;
    Ok(place(arch, data_size, hash_tree_len, None, root_hash))
}

fn check_sizes(data_size: u64, hash_tree_len: u64) -> Result<(), Error> {
    if data_size == 0 {
        return Err(Error::EmptyData);
    }
    if !data_size.is_multiple_of(ALIGNMENT) {
        return Err(Error::UnalignedData { size: data_size });
    }
    let expected = verity::hash_device_size(data_size).expect("data size checked above");
    if hash_tree_len != expected {
        return Err(Error::HashTreeLength {
            actual: hash_tree_len,
            expected,
        });
    }
    Ok(())
}

/// Place the partitions (the signature partition only if `signature_size` is given; `N`
/// must match) after the primary table, each on the next 4096-byte boundary.
fn place<const N: usize>(
    arch: Arch,
    data_size: u64,
    hash_tree_len: u64,
    signature_size: Option<u64>,
    root_hash: &RootHash,
) -> Layout<N> {
    let types = arch.partition_types();
    let name = arch.name();
    let hash = root_hash.as_bytes();
    let read_only = FLAG_READ_ONLY;
    let mut offset = (2 + ENTRY_SECTORS) * SECTOR_SIZE;
    let mut next = |type_uuid, uuid, name: String, size: u64| {
        let start = offset.next_multiple_of(ALIGNMENT);
        offset = start + size;
        Partition {
            type_uuid,
            uuid,
            name,
            offset: start,
            size,
            attributes: read_only,
        }
    };
    let mut partitions = vec![
        next(types.root, uuid_from(&hash[..16]), format!("root-{name}"), data_size),
        next(
            types.root_verity,
            uuid_from(&hash[16..]),
            format!("root-{name}-verity"),
            hash_tree_len,
        ),
    ];
    if let Some(signature_size) = signature_size {
        partitions.push(next(
            types.root_verity_sig,
            derived_uuid(root_hash, "verity-sig partition"),
            format!("root-{name}-verity-sig"),
            signature_size,
        ));
    }
    let size = (offset + (ENTRY_SECTORS + 1) * SECTOR_SIZE).next_multiple_of(ALIGNMENT);
    Layout {
        disk_guid: derived_uuid(root_hash, "disk"),
        size,
        partitions: partitions
            .try_into()
            .expect("callers ask for 3 partitions with a signature, 2 without"),
    }
}

/// Write the whole image to `out`, front to back. Returns its layout.
pub fn write<R: Read>(input: Input<'_, R>, out: impl Write) -> Result<Layout, Error> {
    let Input {
        arch,
        data,
        data_size,
        hash_tree,
        root_hash,
        signature_json,
    } = input;
    if let Some(offset) = signature_json.iter().position(|&b| b == 0) {
        return Err(Error::NulInSignature { offset });
    }
    let layout = layout(
        arch,
        data_size,
        hash_tree.len() as u64,
        signature_json.len() as u64,
        &root_hash,
    )?;
    write_layout(layout, data, data_size, hash_tree, Some(signature_json), out)
}

/// Write an image without a signature partition: the data and its hash tree only (see the
/// module documentation for what systemd makes of it). Returns its layout.
pub fn write_unsigned<R: Read>(
    arch: Arch,
    data: R,
    data_size: u64,
    hash_tree: &[u8],
    root_hash: RootHash,
    out: impl Write,
) -> Result<Layout<2>, Error> {
    let layout = layout_unsigned(arch, data_size, hash_tree.len() as u64, &root_hash)?;
    write_layout(layout, data, data_size, hash_tree, None, out)
}

/// Write the image laid out by `layout` (with a signature partition if `signature_json` is
/// given).
fn write_layout<R: Read, const N: usize>(
    layout: Layout<N>,
    mut data: R,
    data_size: u64,
    hash_tree: &[u8],
    signature_json: Option<&[u8]>,
    mut out: impl Write,
) -> Result<Layout<N>, Error> {
    check_superblock(hash_tree, data_size)?;
    let (data_part, hash_part) = (&layout.partitions[0], &layout.partitions[1]);

    let last_lba = layout.size / SECTOR_SIZE - 1;
    let entries = entry_array(&layout.partitions);
    let mut w = Counter {
        out: &mut out,
        pos: 0,
        failed: false,
    };
    w.put(&protective_mbr(last_lba))?;
    w.put(&header(layout.disk_guid, layout.size, &entries, 1, last_lba))?;
    w.put(&entries)?;

    w.zeros_to(data_part.offset)?;
    let copied = io::copy(&mut (&mut data).take(data_size), &mut w)
        .map_err(|e| if w.failed { Error::Write(e) } else { Error::Read(e) })?;
    if copied != data_size {
        return Err(Error::ShortData {
            read: copied,
            expected: data_size,
        });
    }
    w.zeros_to(hash_part.offset)?;
    w.put(hash_tree)?;
    if let (Some(json), Some(sig_part)) = (signature_json, layout.partitions.get(2)) {
        w.zeros_to(sig_part.offset)?;
        w.put(json)?;
    }
    w.zeros_to(last_lba * SECTOR_SIZE - ENTRY_SECTORS * SECTOR_SIZE)?;
    w.put(&entries)?;
    w.put(&header(layout.disk_guid, layout.size, &entries, last_lba, 1))?;
    debug_assert_eq!(w.pos, layout.size);
    out.flush().map_err(Error::Write)?;
    Ok(layout)
}

/// Check the hash tree's superblock against the data size: a cheap guard against pairing a
/// hash tree with the wrong data image.
fn check_superblock(hash_tree: &[u8], data_size: u64) -> Result<(), Error> {
    let Some(sb) = hash_tree.get(..88).filter(|sb| sb.starts_with(b"verity\0\0")) else {
        return Err(Error::NotAHashTree);
    };
    let hash_tree_blocks = u64::from_le_bytes(sb[72..80].try_into().expect("8 bytes"));
    let data_blocks = data_size / verity::BLOCK_SIZE;
    if hash_tree_blocks != data_blocks || !data_size.is_multiple_of(verity::BLOCK_SIZE) {
        return Err(Error::HashTreeSizeMismatch {
            hash_tree_blocks,
            data_blocks,
        });
    }
    Ok(())
}

/// 16 bytes of the root hash as a UUID, in the byte order of its string form (systemd's
/// `sd_id128_t`), so that the UUID's text is the root hash's hex.
fn uuid_from(bytes: &[u8]) -> Uuid {
    Uuid::from_slice(bytes).expect("16 bytes")
}

/// A v4-style UUID derived from the root hash, for identifiers nothing matches against.
fn derived_uuid(root_hash: &RootHash, purpose: &str) -> Uuid {
    crate::ids::content_uuid([
        b"strata ddi ".as_slice(),
        purpose.as_bytes(),
        &[0],
        root_hash.as_bytes(),
    ])
}

/// LBA 0: an MBR with one partition of type 0xEE covering the disk (capped at 2^32 - 1).
fn protective_mbr(last_lba: u64) -> [u8; SECTOR_SIZE as usize] {
    let mut mbr = [0u8; SECTOR_SIZE as usize];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    entry[4] = 0xee;
    entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]); // CHS beyond what it can express
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    entry[12..16].copy_from_slice(&u32::try_from(last_lba).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
    mbr
}

/// The partition entry array (128 entries of 128 bytes; unused ones zero).
fn entry_array(partitions: &[Partition]) -> Vec<u8> {
    let mut array = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (p, entry) in partitions.iter().zip(array.chunks_exact_mut(ENTRY_SIZE as usize)) {
        entry[0..16].copy_from_slice(&p.type_uuid.to_bytes_le());
        entry[16..32].copy_from_slice(&p.uuid.to_bytes_le());
        entry[32..40].copy_from_slice(&(p.offset / SECTOR_SIZE).to_le_bytes());
        entry[40..48].copy_from_slice(&((p.offset + p.size) / SECTOR_SIZE - 1).to_le_bytes());
        entry[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        // Names are UTF-16LE, at most 36 code units; ours are short ASCII.
        for (unit, slot) in p.name.encode_utf16().take(36).zip(entry[56..128].chunks_exact_mut(2)) {
            slot.copy_from_slice(&unit.to_le_bytes());
        }
    }
    array
}

/// A GPT header sector: the primary one (at LBA 1, entries after it) or the backup one (at
/// the last LBA, entries before it).
fn header(disk_guid: Uuid, size: u64, entries: &[u8], my_lba: u64, alternate_lba: u64) -> [u8; SECTOR_SIZE as usize] {
    let last_lba = size / SECTOR_SIZE - 1;
    let entries_lba = if my_lba == 1 { 2 } else { last_lba - ENTRY_SECTORS };
    let mut h = [0u8; SECTOR_SIZE as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes()); // revision 1.0
    h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes()); // first usable LBA
    h[48..56].copy_from_slice(&(last_lba - ENTRY_SECTORS - 1).to_le_bytes()); // last usable LBA
    h[56..72].copy_from_slice(&disk_guid.to_bytes_le());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRY_COUNT as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_SIZE]); // computed with its own field zero
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A writer that knows its position, for padding to offsets, and whether a write failed
/// (so that `io::copy` errors are told apart from read errors).
struct Counter<W> {
    out: W,
    pos: u64,
    failed: bool,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.write_all(bytes).map_err(Error::Write)
    }

    fn zeros_to(&mut self, offset: u64) -> Result<(), Error> {
        debug_assert!(offset >= self.pos, "layout goes backwards");
        let zeros = [0u8; 4096];
        while self.pos < offset {
            let n = (offset - self.pos).min(zeros.len() as u64) as usize;
            self.put(&zeros[..n])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf).inspect_err(|_| self.failed = true)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
