use super::*;
use crate::tree::{Kind, Metadata};

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Bytes that do not compress: xorshift noise.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn meta(mode: u32, uid: u32, gid: u32) -> Metadata {
    Metadata {
        mode,
        uid,
        gid,
        mtime: 1_700_000_000,
        ..Metadata::default()
    }
}

fn sample() -> Tree {
    let mut tree = Tree::new(meta(0o755, 0, 0));
    tree.insert("usr", Kind::Directory, meta(0o755, 0, 0)).unwrap();
    tree.insert("usr/bin", Kind::Directory, meta(0o755, 0, 0)).unwrap();
    tree.insert("usr/bin/tool", Kind::File(noise(300_000, 1)), meta(0o755, 0, 0))
        .unwrap();
    tree.insert("usr/bin/small", Kind::File(b"#!/bin/sh\n".to_vec()), meta(0o4755, 0, 0))
        .unwrap();
    tree.link("usr/bin/small2", "usr/bin/small").unwrap();
    tree.insert("usr/lib", Kind::Symlink("usr/bin".into()), meta(0o777, 0, 0))
        .unwrap();
    tree.insert("usr/null", Kind::CharDevice { major: 1, minor: 3 }, meta(0o666, 0, 0))
        .unwrap();
    tree.insert("usr/fifo", Kind::Fifo, meta(0o600, 1000, 100)).unwrap();
    tree
}

#[test]
fn superblock_fields_describe_the_image() {
    let tree = sample();
    let opts = Options {
        mtime: 1_234_567,
        block_size: 65536,
        ..Options::default()
    };
    let image = to_bytes(&tree, &opts).unwrap();
    assert_eq!(image.len() % PAD_TO, 0);
    assert_eq!(&image[0..4], b"hsqs");
    // Root, usr, usr/bin, tool, small (+small2), lib, null, fifo.
    assert_eq!(le32(&image, 4), 8, "inode count");
    assert_eq!(le32(&image, 8), 1_234_567, "mtime");
    assert_eq!(le32(&image, 12), 65536, "block size");
    assert_eq!(le32(&image, 16), 1, "one fragment block holds the small file");
    assert_eq!(le16(&image, 20), 6, "zstd");
    assert_eq!(le16(&image, 22), 16, "block log");
    assert_eq!(le16(&image, 24), flags::DUPLICATES | flags::NO_XATTRS);
    assert_eq!(le16(&image, 26), 3, "ids 0, 100, 1000");
    assert_eq!((le16(&image, 28), le16(&image, 30)), (4, 0), "version 4.0");
    let bytes_used = le64(&image, 40);
    assert!(bytes_used as usize <= image.len() && image.len() - (bytes_used as usize) < PAD_TO);
    assert!(image[bytes_used as usize..].iter().all(|&b| b == 0), "padding is zeros");
    let (id, xattr, inode, dir, frag, export) = (
        le64(&image, 48),
        le64(&image, 56),
        le64(&image, 64),
        le64(&image, 72),
        le64(&image, 80),
        le64(&image, 88),
    );
    assert_eq!(xattr, NO_TABLE);
    assert_eq!(export, NO_TABLE);
    assert!(96 < inode && inode < dir && dir < frag && frag < id && id < bytes_used);
    // The id table index (one block) ends the image when there are no xattrs.
    assert_eq!(id + 8, bytes_used);
    // The root inode is the last one written; this small table fits one metadata block.
    assert_eq!(le64(&image, 32) >> 16, 0);
}

#[test]
fn xattrs_set_their_table_and_clear_the_flag() {
    let mut tree = sample();
    let id = tree.lookup("usr/bin/tool").unwrap();
    tree.metadata_mut(id).xattrs.insert(
        "security.capability".into(),
        vec![1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0],
    );
    let image = to_bytes(&tree, &Options::default()).unwrap();
    assert_eq!(le16(&image, 24) & flags::NO_XATTRS, 0);
    let xattr = le64(&image, 56);
    let bytes_used = le64(&image, 40);
    // Header (kv start, count 1, unused) and a one-block index end the image.
    assert_eq!(xattr + 16 + 8, bytes_used);
    assert_eq!(le32(&image, xattr as usize + 8), 1);
    assert!(
        le64(&image, xattr as usize) > le64(&image, 48),
        "kv table after the id table"
    );
}

#[test]
fn writes_are_byte_identical_whatever_the_thread_count() {
    let tree = sample();
    let one = to_bytes(
        &tree,
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let again = to_bytes(
        &tree,
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let four = to_bytes(
        &tree,
        &Options {
            threads: 4,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(one, again);
    assert_eq!(one, four);
    let mut written = Vec::new();
    write(&tree, &Options::default(), &mut written).unwrap();
    assert_eq!(one, written);
    // The superblock time is the caller's and only changes those four bytes.
    let later = to_bytes(
        &tree,
        &Options {
            mtime: 99,
            ..Options::default()
        },
    )
    .unwrap();
    let differing: Vec<usize> = (0..one.len()).filter(|&i| one[i] != later[i]).collect();
    assert_eq!(differing, [8]);
}

#[test]
fn identical_contents_and_hardlinks_are_stored_once() {
    let content = noise(200_000, 7);
    let mut one = Tree::new(meta(0o755, 0, 0));
    one.insert("a", Kind::File(content.clone()), meta(0o644, 0, 0)).unwrap();
    let mut copies = one.clone();
    copies
        .insert("b", Kind::File(content.clone()), meta(0o644, 0, 0))
        .unwrap();
    let mut linked = one.clone();
    linked.link("b", "a").unwrap();
    let opts = Options {
        compression: Compression::Zstd { level: 1 },
        ..Options::default()
    };
    let used = |t: &Tree| le64(&to_bytes(t, &opts).unwrap(), 40);
    assert!(used(&one) > 200_000);
    assert!(used(&copies) < used(&one) + 200, "a copy adds an inode, not its data");
    assert!(used(&linked) < used(&one) + 200);
    assert_eq!(
        le32(&to_bytes(&linked, &opts).unwrap(), 4),
        2,
        "a hardlink is one inode"
    );
    assert_eq!(le32(&to_bytes(&copies, &opts).unwrap(), 4), 3);
}

#[test]
fn blocks_of_zeros_are_holes() {
    let mut tree = Tree::new(meta(0o755, 0, 0));
    let mut data = vec![0u8; 4 * 131072];
    data.extend(noise(1000, 3));
    tree.insert("sparse", Kind::File(data), meta(0o644, 0, 0)).unwrap();
    let image = to_bytes(&tree, &Options::default()).unwrap();
    assert!(le64(&image, 40) < 2000, "zeros take no room");
}

#[test]
fn bad_inputs_give_structured_errors() {
    let tree = sample();
    let err = to_bytes(
        &tree,
        &Options {
            block_size: 3000,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidBlockSize { block_size: 3000 }));
    let err = to_bytes(
        &tree,
        &Options {
            compression: Compression::Zstd { level: 0 },
            ..Options::default()
        },
    );
    assert!(matches!(err, Err(Error::InvalidLevel { .. })));

    let mut t = sample();
    let id = t.lookup("usr/fifo").unwrap();
    t.metadata_mut(id)
        .xattrs
        .insert("system.posix_acl_access".into(), vec![2]);
    let err = to_bytes(&t, &Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedXattr { ref path, ref name } if path == "usr/fifo" && name == "system.posix_acl_access")
    );

    let mut t = sample();
    t.metadata_mut(t.lookup("usr/bin").unwrap()).mtime = 1 << 32;
    let err = to_bytes(&t, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::MtimeOutOfRange { ref path, mtime } if path == "usr/bin" && mtime == 1 << 32));

    let mut t = sample();
    t.insert("disk", Kind::BlockDevice { major: 5000, minor: 0 }, meta(0o600, 0, 0))
        .unwrap();
    let err = to_bytes(&t, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::DeviceOutOfRange { major: 5000, .. }));
}

#[test]
fn every_compressor_writes_its_id() {
    for (compression, id) in [
        (Compression::Gzip { level: 9 }, 1),
        (Compression::Xz { level: 6 }, 4),
        (Compression::Zstd { level: 3 }, 6),
    ] {
        let image = to_bytes(
            &sample(),
            &Options {
                compression,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(le16(&image, 20), id, "{compression:?}");
    }
}
