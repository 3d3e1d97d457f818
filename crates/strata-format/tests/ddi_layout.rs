//! The DDI writer's layout and tables, checked against numbers worked out by hand and the
//! UEFI GPT rules (header and entry CRCs, backup table, mixed-endian GUIDs); no tools needed.

use strata_format::ddi::*;
use strata_format::verity::{HashTree, Params, RootHash, hash_tree};
use uuid::Uuid;

const MIB: u64 = 1 << 20;

fn root_hash() -> RootHash {
    RootHash(std::array::from_fn(|i| i as u8))
}

struct Image {
    data: Vec<u8>,
    tree: HashTree,
    signature: String,
}

fn image(blocks: usize) -> Image {
    let data: Vec<u8> = (0..blocks * 4096).map(|i| (i % 253) as u8).collect();
    let tree = hash_tree(&data[..], data.len() as u64, &Params::new([7u8; 32], Uuid::nil())).unwrap();
    let signature = signature_json(&tree.root_hash, &[0xab; 32], b"not really DER");
    Image { data, tree, signature }
}

fn write_image(img: &Image, arch: Arch) -> Result<(Layout, Vec<u8>), Error> {
    let mut out = Vec::new();
    let layout = write(
        Input {
            arch,
            data: &img.data[..],
            data_size: img.data.len() as u64,
            hash_tree: &img.tree.hash_device,
            root_hash: img.tree.root_hash,
            signature_json: img.signature.as_bytes(),
        },
        &mut out,
    )?;
    Ok((layout, out))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn layout_of_a_small_image() {
    // Worked out by hand: the table ends at LBA 34 (17408 bytes), so the data starts at
    // 20480; 3 data blocks → 12288 bytes; their hash device is 2 blocks; the JSON fits
    // one block; then 33 sectors of backup table, rounded up to 4096.
    let l = layout(Arch::X86_64, 12288, 8192, 300, &root_hash()).unwrap();
    let spans: Vec<(u64, u64)> = l.partitions.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(spans, [(20480, 12288), (32768, 8192), (40960, 4096)]);
    assert_eq!(l.size, 65536);
    // A JSON of exactly 4096 bytes still gets a NUL after it.
    let l = layout(Arch::X86_64, 12288, 8192, 4096, &root_hash()).unwrap();
    assert_eq!(l.partitions[2].size, 8192);
}

#[test]
fn partition_identity_follows_systemd() {
    let l = layout(Arch::X86_64, 12288, 8192, 300, &root_hash()).unwrap();
    let [data, hash, sig] = &l.partitions;
    assert_eq!(data.uuid.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    assert_eq!(hash.uuid.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    assert_eq!(data.type_uuid.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    assert_eq!(hash.type_uuid.to_string(), "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
    assert_eq!(sig.type_uuid.to_string(), "41092b05-9fc8-4523-994f-2def0408b176");
    let names: Vec<&str> = l.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["root-x86-64", "root-x86-64-verity", "root-x86-64-verity-sig"]);
    assert_eq!(sig.uuid.get_version_num(), 4);
    assert_eq!(l.disk_guid.get_version_num(), 4);
    assert_ne!(sig.uuid, l.disk_guid);

    let arm = layout(Arch::Arm64, 12288, 8192, 300, &root_hash()).unwrap();
    assert_eq!(
        arm.partitions[0].type_uuid.to_string(),
        "b921b045-1df0-41c3-af44-4c6f280d3fae"
    );
    assert_eq!(
        arm.partitions[1].type_uuid.to_string(),
        "df3300ce-d69f-4c92-978c-9bfb0f38d820"
    );
    assert_eq!(
        arm.partitions[2].type_uuid.to_string(),
        "6db69de6-29f4-4758-a7a5-962190f00ce3"
    );
    assert_eq!(arm.partitions[2].name, "root-arm64-verity-sig");
}

#[test]
fn signature_json_is_compact_in_repart_order() {
    let json = signature_json(&root_hash(), &[0xab; 32], &[0x30, 0x82, 0x01]);
    assert_eq!(
        json,
        concat!(
            r#"{"rootHash":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","#,
            r#""certificateFingerprint":"abababababababababababababababababababababababababababababababab","#,
            r#""signature":"MIIB"}"#
        )
    );
}

#[test]
fn image_has_valid_tables_and_the_partition_contents() {
    let img = image(3);
    let (l, disk) = write_image(&img, Arch::X86_64).unwrap();
    assert_eq!(disk.len() as u64, l.size);
    let last_lba = l.size / SECTOR_SIZE - 1;

    assert_eq!(&disk[510..512], &[0x55, 0xaa]);
    assert_eq!(disk[446 + 4], 0xee);
    assert_eq!(u32_at(&disk, 446 + 12) as u64, last_lba);

    let primary = &disk[512..1024];
    let backup = &disk[(last_lba * SECTOR_SIZE) as usize..];
    for (h, my, alt, entries_lba) in [(primary, 1, last_lba, 2), (backup, last_lba, 1, last_lba - 32)] {
        assert_eq!(&h[..8], b"EFI PART");
        let mut zeroed = h[..92].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(u32_at(h, 16), crc32fast::hash(&zeroed), "header CRC");
        assert_eq!((u64_at(h, 24), u64_at(h, 32), u64_at(h, 72)), (my, alt, entries_lba));
        assert_eq!((u64_at(h, 40), u64_at(h, 48)), (34, last_lba - 33));
        let at = (entries_lba * SECTOR_SIZE) as usize;
        let entries = &disk[at..at + 16384];
        assert_eq!(u32_at(h, 88), crc32fast::hash(entries), "entry array CRC");
        assert_eq!(&h[56..72], &l.disk_guid.to_bytes_le());
    }

    // The entry of the data partition, GUIDs in GPT's mixed-endian order.
    let e = &disk[1024..1152];
    assert_eq!(
        &e[..4],
        &[0xe3, 0xbc, 0x68, 0x4f],
        "type GUID, first field little-endian"
    );
    assert_eq!(&e[16..32], &l.partitions[0].uuid.to_bytes_le());
    assert_eq!((u64_at(e, 32), u64_at(e, 40)), (40, 40 + 24 - 1));
    assert_eq!(u64_at(e, 48), 1 << 60);
    assert_eq!(&e[56..62], &[b'r', 0, b'o', 0, b'o', 0]);
    assert!(
        disk[1024 + 3 * 128..1024 + 16384].iter().all(|&b| b == 0),
        "unused entries"
    );

    let part = |i: usize| {
        let p = &l.partitions[i];
        &disk[p.offset as usize..(p.offset + p.size) as usize]
    };
    assert_eq!(part(0), &img.data[..]);
    assert_eq!(part(1), &img.tree.hash_device[..]);
    let sig = part(2);
    assert_eq!(&sig[..img.signature.len()], img.signature.as_bytes());
    assert!(sig[img.signature.len()..].iter().all(|&b| b == 0));
}

#[test]
fn same_input_same_bytes_other_content_other_ids() {
    let (l1, a) = write_image(&image(130), Arch::X86_64).unwrap();
    let (_, b) = write_image(&image(130), Arch::X86_64).unwrap();
    assert!(a == b, "two builds differ");
    let (l2, _) = write_image(&image(131), Arch::X86_64).unwrap();
    assert_ne!(l1.disk_guid, l2.disk_guid);
    assert_ne!(l1.partitions[2].uuid, l2.partitions[2].uuid);
}

#[test]
fn rejects_inconsistent_input() {
    fn input<'a>(data: &'a [u8], data_size: u64, tree: &'a [u8], sig: &'a [u8]) -> Input<'a, &'a [u8]> {
        Input {
            arch: Arch::X86_64,
            data,
            data_size,
            hash_tree: tree,
            root_hash: root_hash(),
            signature_json: sig,
        }
    }
    let img = image(3);
    let (data, tree) = (&img.data[..], &img.tree.hash_device[..]);
    let mut out = Vec::new();

    let err = write(input(data, 12000, tree, b"{}"), &mut out).unwrap_err();
    assert!(matches!(err, Error::UnalignedData { size: 12000 }), "{err:?}");
    let err = write(input(data, 8192, tree, b"{}"), &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HashTreeSizeMismatch {
                hash_tree_blocks: 3,
                data_blocks: 2
            }
        ),
        "{err:?}"
    );
    let err = write(input(data, 12288, &tree[..4096], b"{}"), &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HashTreeLength {
                actual: 4096,
                expected: 8192
            }
        ),
        "{err:?}"
    );
    let err = write(input(data, 12288, &[0; 8192], b"{}"), &mut out).unwrap_err();
    assert!(matches!(err, Error::NotAHashTree), "{err:?}");
    let err = write(input(data, 12288, tree, b"{}\0"), &mut out).unwrap_err();
    assert!(matches!(err, Error::NulInSignature { offset: 2 }), "{err:?}");
    let err = write(input(&data[..8192], 12288, tree, b"{}"), &mut out).unwrap_err();
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
    let big = vec![b' '; (4 * MIB) as usize];
    let err = write(input(data, 12288, tree, &big), &mut out).unwrap_err();
    assert!(matches!(err, Error::SignatureTooLarge { .. }), "{err:?}");
    let err = layout(Arch::X86_64, 0, 4096, 2, &root_hash()).unwrap_err();
    assert!(matches!(err, Error::EmptyData), "{err:?}");
    let err = layout(Arch::X86_64, 5000, 4096, 2, &root_hash()).unwrap_err();
    assert!(matches!(err, Error::UnalignedData { size: 5000 }), "{err:?}");
}
