//! Checking a signed Discoverable Disk Image (see [`crate::ddi`]) against a certificate before
//! it is installed, as far as that can be done without the kernel: the checks systemd makes
//! when it dissects the image with a root hash signature, plus recomputing the whole dm-verity
//! hash tree, which systemd leaves to the kernel at read time.
//!
//! In order, each failure its own [`Error`]:
//! 1. the protective MBR and the primary GPT: header CRC, entry array CRC, partitions inside
//!    the disk. A damaged primary table is an error; the backup is not consulted, because an
//!    image about to be installed should be intact, not repaired;
//! 2. one data, verity and verity-sig partition of the root (or else `/usr`) types of one
//!    architecture strata knows (an image with several is refused rather than guessed at);
//! 3. the signature partition's JSON (`rootHash`, `certificateFingerprint`, `signature`),
//!    followed by NULs only, at most 4 MiB, as systemd reads it;
//! 4. the fingerprint names the given certificate (systemd treats a missing fingerprint as
//!    "try every certificate", so a missing one is accepted here too: the signature check
//!    that follows binds the image to the certificate either way);
//! 5. the PKCS#7 signature of the hex root hash verifies with the certificate
//!    ([`sign::verify_detached`]);
//! 6. the data and verity partition UUIDs are the halves of the signed root hash;
//! 7. the hash tree recomputed over the data partition, with the salt and UUID of the verity
//!    superblock, has the signed root hash, and the verity partition holds exactly that tree.
//!
//! Only 512-byte sectors are read: that is what [`crate::ddi`] and systemd-repart write for
//! image files.

use std::io::{self, Read, Seek, SeekFrom};

use uuid::Uuid;
use x509_cert::Certificate;

use crate::ddi::{Arch, MAX_SIGNATURE_PARTITION_SIZE, Partition, SECTOR_SIZE};
use crate::sign;
use crate::verity::{self, RootHash};

/// Partition entry arrays larger than this are not read (the usual one is 16 KiB).
const MAX_ENTRY_ARRAY: u64 = 1 << 20;
const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

/// Errors from [`verify`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the image failed.
    #[error("reading the image ({what})")]
    Read {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The protective MBR or the primary GPT is missing or damaged.
    #[error("bad GPT: {what}")]
    BadGpt { what: String },
    /// No data partition of a root or `/usr` type strata knows.
    #[error("no root or /usr partition of a known architecture (x86-64, arm64)")]
    NoDataPartition,
    /// Two partitions of a type there may be only one of.
    #[error("the image has more than one partition of type {type_uuid} ({name})")]
    DuplicatePartition { type_uuid: Uuid, name: String },
    /// The data partition has no verity partition of the matching type.
    #[error("the {class} partition has no verity partition")]
    NoVerityPartition { class: Class },
    /// The image is not signed: there is no verity signature partition.
    #[error("the image has no verity signature partition: it is not signed")]
    NoSignaturePartition,
    /// The signature partition does not hold the JSON systemd reads.
    #[error("the verity signature partition does not hold valid signature JSON: {what}")]
    BadSignatureJson { what: String },
    /// The image was signed for another certificate.
    #[error("the image is signed for the certificate with SHA-256 fingerprint {found}, not {expected}")]
    FingerprintMismatch {
        /// The given certificate's fingerprint.
        expected: String,
        /// The fingerprint in the signature partition.
        found: String,
    },
    /// The PKCS#7 signature does not verify over the root hash with the certificate.
    #[error("the root hash signature does not verify with the certificate")]
    BadSignature(#[source] sign::Error),
    /// A partition UUID is not the half of the signed root hash it must be.
    #[error("the {role} partition's UUID is {found}; the signed root hash makes it {expected}")]
    PartitionUuidMismatch {
        role: &'static str,
        expected: Uuid,
        found: Uuid,
    },
    /// The verity partition does not start with a superblock strata can check.
    #[error("the verity partition's superblock: {what}")]
    BadVeritySuperblock { what: String },
    /// The data partition does not hash to the signed root hash: its content was changed.
    #[error("the data partition hashes to root hash {computed}, but {signed} was signed")]
    RootHashMismatch { signed: RootHash, computed: RootHash },
    /// The verity partition's hash tree differs from the one recomputed over the data.
    #[error("the verity partition differs from the hash tree of the data at byte {offset}")]
    HashTreeMismatch { offset: u64 },
    /// Recomputing the hash tree failed.
    #[error("recomputing the verity hash tree")]
    Verity(#[source] verity::Error),
    /// The certificate cannot be fingerprinted.
    #[error("reading the certificate")]
    Certificate(#[source] sign::Error),
}

/// Which file system the image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// The root partition types (what strata writes for a sysext).
    Root,
    /// The `/usr` partition types.
    Usr,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Root => "root",
            Class::Usr => "usr",
        })
    }
}

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The signed (and recomputed) root hash.
    pub root_hash: RootHash,
    /// Architecture of the partition types.
    pub arch: Arch,
    /// Root or `/usr` partition types.
    pub class: Class,
    /// Data, verity and verity signature partitions, in that order.
    pub partitions: [Partition; 3],
}

/// Check a signed DDI against `certificate` (see the module documentation for what is
/// checked). Reads the whole data partition once.
pub fn verify(mut image: impl Read + Seek, certificate: &Certificate) -> Result<Verified, Error> {
    let partitions = read_gpt(&mut image)?;
    let (arch, class, data, hash, sig) = find_partitions(&partitions)?;
    let sig = sig.ok_or(Error::NoSignaturePartition)?;

    let json = read_signature_partition(&mut image, &sig)?;
    let signature = parse_signature_json(&json)?;
    let expected = sign::certificate_fingerprint(certificate).map_err(Error::Certificate)?;
    if let Some(found) = signature.fingerprint
        && !found.eq_ignore_ascii_case(&expected)
    {
        return Err(Error::FingerprintMismatch { expected, found });
    }
    let root_hash = signature.root_hash;
    sign::verify_detached(&signature.signature, root_hash.to_string().as_bytes(), certificate)
        .map_err(Error::BadSignature)?;

    let halves = root_hash.as_bytes();
    for (role, partition, half) in [("data", &data, &halves[..16]), ("verity", &hash, &halves[16..])] {
        let expected = Uuid::from_slice(half).expect("16 bytes");
        if partition.uuid != expected {
            return Err(Error::PartitionUuidMismatch {
                role,
                expected,
                found: partition.uuid,
            });
        }
    }

    let superblock = read_at(&mut image, hash.offset, 512.min(hash.size), "verity superblock")?;
    let (params, data_blocks) = parse_superblock(&superblock)?;
    let data_size = data_blocks * verity::BLOCK_SIZE;
    if data_size > data.size {
        return Err(Error::BadVeritySuperblock {
            what: format!(
                "it covers {data_blocks} blocks of 4096 bytes, but the data partition has {} bytes",
                data.size
            ),
        });
    }
    let tree_size = verity::hash_device_size(data_size).map_err(Error::Verity)?;
    if tree_size > hash.size {
        return Err(Error::BadVeritySuperblock {
            what: format!(
                "the hash tree of {data_blocks} data blocks needs {tree_size} bytes; the verity partition has {}",
                hash.size
            ),
        });
    }
    seek(&mut image, data.offset, "data partition")?;
    let tree = verity::hash_tree((&mut image).take(data_size), data_size, &params).map_err(|e| match e {
        verity::Error::Read(source) => Error::Read {
            what: "data partition",
            source,
        },
        other => Error::Verity(other),
    })?;
    if tree.root_hash != root_hash {
        return Err(Error::RootHashMismatch {
            signed: root_hash,
            computed: tree.root_hash,
        });
    }
    let stored = read_at(&mut image, hash.offset, tree_size, "verity partition")?;
    if let Some(offset) = stored.iter().zip(&tree.hash_device).position(|(a, b)| a != b) {
        return Err(Error::HashTreeMismatch { offset: offset as u64 });
    }
    Ok(Verified {
        root_hash,
        arch,
        class,
        partitions: [data, hash, sig],
    })
}

fn bad_gpt(what: impl Into<String>) -> Error {
    Error::BadGpt { what: what.into() }
}

fn seek(image: &mut impl Seek, offset: u64, what: &'static str) -> Result<(), Error> {
    image
        .seek(SeekFrom::Start(offset))
        .map(drop)
        .map_err(|source| Error::Read { what, source })
}

fn read_at(image: &mut (impl Read + Seek), offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>, Error> {
    seek(image, offset, what)?;
    let mut buf = vec![0; len as usize];
    image
        .read_exact(&mut buf)
        .map_err(|source| Error::Read { what, source })?;
    Ok(buf)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The used entries of the primary GPT, after checking the protective MBR, the header and
/// both CRCs, and that every partition lies inside the usable area.
fn read_gpt(image: &mut (impl Read + Seek)) -> Result<Vec<Partition>, Error> {
    let size = image.seek(SeekFrom::End(0)).map_err(|source| Error::Read {
        what: "image size",
        source,
    })?;
    if size < 3 * SECTOR_SIZE {
        return Err(bad_gpt(format!("the image is only {size} bytes")));
    }
    let head = read_at(image, 0, 2 * SECTOR_SIZE, "protective MBR and GPT header")?;
    let (mbr, header) = head.split_at(SECTOR_SIZE as usize);
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(bad_gpt("no MBR boot signature (0x55AA) in the first sector"));
    }
    if !mbr[446..510].chunks_exact(16).any(|entry| entry[4] == 0xee) {
        return Err(bad_gpt("the MBR has no protective partition (type 0xEE)"));
    }
    if &header[0..8] != b"EFI PART" {
        return Err(bad_gpt("no \"EFI PART\" header at LBA 1 (512-byte sectors)"));
    }
    let header_size = le32(header, 12) as usize;
    if !(92..=SECTOR_SIZE as usize).contains(&header_size) {
        return Err(bad_gpt(format!("header size {header_size} is not within 92..=512")));
    }
    let mut zeroed = header[..header_size].to_vec();
    zeroed[16..20].fill(0);
    let (stored, computed) = (le32(header, 16), crc32fast::hash(&zeroed));
    if stored != computed {
        return Err(bad_gpt(format!(
            "primary header CRC is {stored:#010x}, its content gives {computed:#010x}"
        )));
    }
    if le64(header, 24) != 1 {
        return Err(bad_gpt(format!(
            "primary header says it is at LBA {}",
            le64(header, 24)
        )));
    }
    let (first_usable, last_usable) = (le64(header, 40), le64(header, 48));
    let entries_lba = le64(header, 72);
    let (count, entry_size) = (u64::from(le32(header, 80)), u64::from(le32(header, 84)));
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(bad_gpt(format!("partition entry size {entry_size} is not 128 × 2^n")));
    }
    let array_len = count * entry_size;
    if array_len > MAX_ENTRY_ARRAY {
        return Err(bad_gpt(format!(
            "{count} partition entries of {entry_size} bytes is more than strata reads"
        )));
    }
    let array_end = entries_lba
        .checked_mul(SECTOR_SIZE)
        .and_then(|start| start.checked_add(array_len));
    if entries_lba < 2 || array_end.is_none_or(|end| end > size) {
        return Err(bad_gpt(format!(
            "the partition entry array at LBA {entries_lba} is outside the image"
        )));
    }
    let disk_last_lba = size / SECTOR_SIZE - 1;
    if first_usable > last_usable || last_usable > disk_last_lba {
        return Err(bad_gpt(format!(
            "usable LBAs {first_usable}..={last_usable} do not fit a disk whose last LBA is {disk_last_lba}"
        )));
    }
    let array = read_at(image, entries_lba * SECTOR_SIZE, array_len, "partition entry array")?;
    let (stored, computed) = (le32(header, 88), crc32fast::hash(&array));
    if stored != computed {
        return Err(bad_gpt(format!(
            "partition entry array CRC is {stored:#010x}, its content gives {computed:#010x}"
        )));
    }

    let mut partitions = Vec::new();
    for (index, entry) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_uuid = Uuid::from_bytes_le(entry[0..16].try_into().expect("16 bytes"));
        if type_uuid.is_nil() {
            continue;
        }
        let (first, last) = (le64(entry, 32), le64(entry, 40));
        if first < first_usable || last < first || last > last_usable {
            return Err(bad_gpt(format!(
                "partition {} spans LBAs {first}..={last}, outside the usable {first_usable}..={last_usable}",
                index + 1
            )));
        }
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            type_uuid,
            uuid: Uuid::from_bytes_le(entry[16..32].try_into().expect("16 bytes")),
            name: String::from_utf16_lossy(&units),
            offset: first * SECTOR_SIZE,
            size: (last - first + 1) * SECTOR_SIZE,
            attributes: le64(entry, 48),
        });
    }
    Ok(partitions)
}

/// The data, verity and (if present) signature partitions: the root types of some known
/// architecture, else the `/usr` types.
fn find_partitions(partitions: &[Partition]) -> Result<(Arch, Class, Partition, Partition, Option<Partition>), Error> {
    let one = |type_uuid: Uuid| -> Result<Option<Partition>, Error> {
        let mut found = partitions.iter().filter(|p| p.type_uuid == type_uuid);
        match (found.next(), found.next()) {
            (first, None) => Ok(first.cloned()),
            (Some(p), Some(_)) => Err(Error::DuplicatePartition {
                type_uuid,
                name: p.name.clone(),
            }),
            (None, Some(_)) => unreachable!("a second match without a first"),
        }
    };
    for class in [Class::Root, Class::Usr] {
        let mut candidates = Vec::new();
        for arch in ARCHES {
            let t = arch.partition_types();
            let types = match class {
                Class::Root => [t.root, t.root_verity, t.root_verity_sig],
                Class::Usr => [t.usr, t.usr_verity, t.usr_verity_sig],
            };
            if let Some(data) = one(types[0])? {
                candidates.push((arch, data, one(types[1])?, one(types[2])?));
            }
        }
        match candidates.as_slice() {
            [] => continue,
            [_] => {
                let (arch, data, hash, sig) = candidates.pop().expect("one candidate");
                let hash = hash.ok_or(Error::NoVerityPartition { class })?;
                return Ok((arch, class, data, hash, sig));
            }
            [(_, first, ..), ..] => {
                return Err(Error::DuplicatePartition {
                    type_uuid: first.type_uuid,
                    name: format!("{class} partitions of several architectures"),
                });
            }
        }
    }
    Err(Error::NoDataPartition)
}

/// The signature partition's JSON text: everything before the first NUL, which must be
/// followed by NULs only.
fn read_signature_partition(image: &mut (impl Read + Seek), sig: &Partition) -> Result<Vec<u8>, Error> {
    if sig.size > MAX_SIGNATURE_PARTITION_SIZE {
        return Err(Error::BadSignatureJson {
            what: format!(
                "the partition is {} bytes; systemd reads at most {MAX_SIGNATURE_PARTITION_SIZE}",
                sig.size
            ),
        });
    }
    let mut bytes = read_at(image, sig.offset, sig.size, "verity signature partition")?;
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        if let Some(offset) = bytes[end..].iter().position(|&b| b != 0) {
            return Err(Error::BadSignatureJson {
                what: format!("a non-NUL byte at offset {} after the JSON", end + offset),
            });
        }
        bytes.truncate(end);
    }
    Ok(bytes)
}

struct SignatureJson {
    root_hash: RootHash,
    fingerprint: Option<String>,
    signature: Vec<u8>,
}

fn parse_signature_json(json: &[u8]) -> Result<SignatureJson, Error> {
    use base64::Engine as _;
    let bad = |what: String| Error::BadSignatureJson { what };
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let string = |key: &str| -> Result<Option<&str>, Error> {
        match object.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(format!("`{key}` is not a string"))),
        }
    };
    let hex = string("rootHash")?.ok_or_else(|| bad("no `rootHash`".into()))?;
    let root_hash = parse_hash(hex).ok_or_else(|| bad(format!("`rootHash` {hex:?} is not 64 hex digits")))?;
    let fingerprint = string("certificateFingerprint")?.map(str::to_owned);
    let signature = string("signature")?.ok_or_else(|| bad("no `signature`".into()))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|e| bad(format!("`signature` is not base64: {e}")))?;
    Ok(SignatureJson {
        root_hash,
        fingerprint,
        signature,
    })
}

fn parse_hash(hex: &str) -> Option<RootHash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(RootHash(out))
}

/// Salt, UUID and data block count from a verity superblock, refusing what [`verity`] does
/// not compute (another hash, block size or format).
fn parse_superblock(sb: &[u8]) -> Result<(verity::Params, u64), Error> {
    let bad = |what: String| Err(Error::BadVeritySuperblock { what });
    if sb.len() < 512 || &sb[0..8] != b"verity\0\0" {
        return bad("no superblock (\"verity\" magic) at the start of the verity partition".into());
    }
    let (version, hash_type) = (le32(sb, 8), le32(sb, 12));
    if version != 1 || hash_type != 1 {
        return bad(format!(
            "version {version}, hash type {hash_type}; only 1 and 1 are supported"
        ));
    }
    let algorithm = &sb[32..64];
    let name_len = algorithm.iter().position(|&b| b == 0).unwrap_or(32);
    if &algorithm[..name_len] != b"sha256" {
        let name = String::from_utf8_lossy(&algorithm[..name_len]);
        return bad(format!("hash algorithm {name:?}; only sha256 is supported"));
    }
    let (data_block, hash_block) = (le32(sb, 64), le32(sb, 68));
    if u64::from(data_block) != verity::BLOCK_SIZE || u64::from(hash_block) != verity::BLOCK_SIZE {
        return bad(format!(
            "block sizes {data_block}/{hash_block}; only 4096/4096 are supported"
        ));
    }
    let data_blocks = le64(sb, 72);
    if data_blocks == 0 {
        return bad("it covers no data blocks".into());
    }
    let salt_len = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if salt_len > verity::MAX_SALT_SIZE {
        return bad(format!(
            "salt of {salt_len} bytes; at most {} fit",
            verity::MAX_SALT_SIZE
        ));
    }
    let uuid = Uuid::from_bytes(sb[16..32].try_into().expect("16 bytes"));
    Ok((verity::Params::new(&sb[88..88 + salt_len], uuid), data_blocks))
}
