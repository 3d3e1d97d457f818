//! A small signed (or tampered) sysext image made with the format library: `ddi` + `verity` +
//! `sign`, so that pulls with `--cert` have something real to check.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use strata_format::ddi::{self, Arch};
use strata_format::sign::{self, Signer};
use strata_format::verity::{self, RootHash};

/// A development key pair: the signer and its certificate as PEM.
pub fn dev_key(name: &str) -> (Signer, String) {
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let pair = sign::generate_dev_key(name, from, from + Duration::from_secs(86400 * 3650)).unwrap();
    let signer = Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap();
    (signer, pair.certificate_pem)
}

/// A signed image over `blocks` 4096-byte data blocks derived from `seed`. With `tamper`,
/// one data byte is flipped after signing.
pub fn image(signer: &Signer, blocks: u32, seed: u8, tamper: bool) -> Vec<u8> {
    let data: Vec<u8> = (0..blocks * 4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8 ^ seed)
        .collect();
    // The root crate has no `uuid` dependency; any UUID does for the superblock, and a layout
    // hands one out.
    let uuid = ddi::layout_unsigned(Arch::X86_64, 4096, 4096, &RootHash([seed; 32]))
        .unwrap()
        .disk_guid;
    let tree = verity::hash_tree(&data[..], data.len() as u64, &verity::Params::new([seed; 32], uuid)).unwrap();
    let sig = signer.sign(tree.root_hash.to_string().as_bytes()).unwrap();
    let fingerprint = sign::certificate_fingerprint(signer.certificate()).unwrap();
    let fingerprint: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&fingerprint[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let json = ddi::signature_json(&tree.root_hash, &fingerprint.try_into().unwrap(), &sig);
    let mut out = Vec::new();
    let layout = ddi::write(
        ddi::Input {
            arch: Arch::X86_64,
            data: &data[..],
            data_size: data.len() as u64,
            hash_tree: &tree.hash_device,
            root_hash: tree.root_hash,
            signature_json: json.as_bytes(),
        },
        &mut out,
    )
    .unwrap();
    if tamper {
        out[layout.partitions[0].offset as usize + 100] ^= 1;
    }
    out
}
