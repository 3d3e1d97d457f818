//! `ddi_verify::verify` on images made with `ddi`, `verity` and `sign`: a good image passes,
//! and each kind of damage or mismatch is refused with the error that names it.

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use strata_format::ddi::{self, Arch};
use strata_format::ddi_verify::{self, Class, Error};
use strata_format::sign::{self, Signer};
use strata_format::verity::{self, RootHash};
use uuid::Uuid;

/// Two development keys for all tests: RSA key generation is slow in debug builds.
fn signers() -> &'static [Signer; 2] {
    static KEYS: OnceLock<[Signer; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let until = from + Duration::from_secs(86400 * 365);
        [0, 1].map(|i| {
            let pair = sign::generate_dev_key(&format!("strata verify test {i}"), from, until).unwrap();
            Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap()
        })
    })
}

/// Three data blocks (one hash level), not all alike.
fn data() -> Vec<u8> {
    (0..3 * 4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn params() -> verity::Params {
    verity::Params::new([0x5a; 32], Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd))
}

fn fingerprint(signer: &Signer) -> [u8; 32] {
    let hex = sign::certificate_fingerprint(signer.certificate()).unwrap();
    hex::decode(hex).unwrap().try_into().unwrap()
}

/// An image of `data` whose signature partition holds `json` (`None`: unsigned).
fn image_with(arch: Arch, data: &[u8], json: Option<&str>) -> (Vec<u8>, RootHash) {
    let tree = verity::hash_tree(data, data.len() as u64, &params()).unwrap();
    let mut out = Vec::new();
    match json {
        Some(json) => {
            let input = ddi::Input {
                arch,
                data,
                data_size: data.len() as u64,
                hash_tree: &tree.hash_device,
                root_hash: tree.root_hash,
                signature_json: json.as_bytes(),
            };
            ddi::write(input, &mut out).unwrap();
        }
        None => {
            ddi::write_unsigned(
                arch,
                data,
                data.len() as u64,
                &tree.hash_device,
                tree.root_hash,
                &mut out,
            )
            .unwrap();
        }
    }
    (out, tree.root_hash)
}

fn root_hash_of(data: &[u8]) -> RootHash {
    verity::hash_tree(data, data.len() as u64, &params()).unwrap().root_hash
}

/// A correctly signed image.
fn signed(arch: Arch, signer: &Signer) -> (Vec<u8>, RootHash) {
    let root = root_hash_of(&data());
    let sig = signer.sign(root.to_string().as_bytes()).unwrap();
    image_with(
        arch,
        &data(),
        Some(&ddi::signature_json(&root, &fingerprint(signer), &sig)),
    )
}

fn verify(image: &[u8], signer: &Signer) -> Result<ddi_verify::Verified, Error> {
    ddi_verify::verify(Cursor::new(image), signer.certificate())
}

#[test]
fn a_signed_image_verifies() {
    let [a, _] = signers();
    for arch in [Arch::X86_64, Arch::Arm64] {
        let (image, root) = signed(arch, a);
        let v = verify(&image, a).unwrap();
        assert_eq!((v.root_hash, v.arch, v.class), (root, arch, Class::Root));
        let layout = ddi::layout(arch, 3 * 4096, 2 * 4096, 1, &root).unwrap();
        let names: Vec<_> = v.partitions.iter().map(|p| p.name.as_str()).collect();
        let expected: Vec<_> = layout.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, expected);
        assert_eq!(v.partitions[0], layout.partitions[0]);
        assert_eq!(v.partitions[1], layout.partitions[1]);
    }
}

#[test]
fn one_flipped_data_byte_is_a_root_hash_mismatch() {
    let [a, _] = signers();
    let (mut image, root) = signed(Arch::X86_64, a);
    let data_offset = verify(&image, a).unwrap().partitions[0].offset as usize;
    image[data_offset + 5000] ^= 1;
    match verify(&image, a) {
        Err(Error::RootHashMismatch { signed, computed }) => {
            assert_eq!(signed, root);
            assert_ne!(computed, root);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_certificate_is_a_fingerprint_mismatch() {
    let [a, b] = signers();
    let (image, _) = signed(Arch::X86_64, a);
    match verify(&image, b) {
        Err(Error::FingerprintMismatch { expected, found }) => {
            assert_eq!(expected, sign::certificate_fingerprint(b.certificate()).unwrap());
            assert_eq!(found, sign::certificate_fingerprint(a.certificate()).unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupt_or_foreign_signature_is_a_bad_signature() {
    let [a, b] = signers();
    let root = root_hash_of(&data());
    let mut sig = a.sign(root.to_string().as_bytes()).unwrap();
    let last = sig.len() - 1; // inside the RSA signature value
    sig[last] ^= 0x40;
    let (image, _) = image_with(
        Arch::X86_64,
        &data(),
        Some(&ddi::signature_json(&root, &fingerprint(a), &sig)),
    );
    let err = verify(&image, a).unwrap_err();
    assert!(
        matches!(err, Error::BadSignature(sign::Error::SignatureInvalid(_))),
        "{err:?}"
    );

    // Signed with b's key but claiming a's certificate.
    let sig = b.sign(root.to_string().as_bytes()).unwrap();
    let (image, _) = image_with(
        Arch::X86_64,
        &data(),
        Some(&ddi::signature_json(&root, &fingerprint(a), &sig)),
    );
    let err = verify(&image, a).unwrap_err();
    assert!(
        matches!(err, Error::BadSignature(sign::Error::SignerNotCertificate { .. })),
        "{err:?}"
    );

    // Not PKCS#7 at all.
    let (image, _) = image_with(
        Arch::X86_64,
        &data(),
        Some(&ddi::signature_json(&root, &fingerprint(a), b"junk")),
    );
    let err = verify(&image, a).unwrap_err();
    assert!(
        matches!(err, Error::BadSignature(sign::Error::MalformedSignature { .. })),
        "{err:?}"
    );
}

#[test]
fn a_signature_of_another_root_hash_does_not_match_the_partitions() {
    let [a, _] = signers();
    let mut other_data = data();
    other_data[0] ^= 1;
    let other = root_hash_of(&other_data);
    let sig = a.sign(other.to_string().as_bytes()).unwrap();
    let (image, root) = image_with(
        Arch::X86_64,
        &data(),
        Some(&ddi::signature_json(&other, &fingerprint(a), &sig)),
    );
    match verify(&image, a) {
        Err(Error::PartitionUuidMismatch { role, expected, found }) => {
            assert_eq!(role, "data");
            assert_eq!(expected.as_bytes(), &other.as_bytes()[..16]);
            assert_eq!(found.as_bytes(), &root.as_bytes()[..16]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unsigned_image_has_no_signature_partition() {
    let [a, _] = signers();
    let (image, _) = image_with(Arch::X86_64, &data(), None);
    let err = verify(&image, a).unwrap_err();
    assert!(matches!(err, Error::NoSignaturePartition), "{err:?}");
    assert!(err.to_string().contains("not signed"), "{err}");
}

#[test]
fn a_tampered_hash_partition_is_found() {
    let [a, _] = signers();
    let (mut image, _) = signed(Arch::X86_64, a);
    let hash_offset = verify(&image, a).unwrap().partitions[1].offset as usize;
    // The first digest of the only hash level, right after the superblock block.
    image[hash_offset + 4096 + 3] ^= 1;
    let err = verify(&image, a).unwrap_err();
    assert!(matches!(err, Error::HashTreeMismatch { offset: 4099 }), "{err:?}");

    // The superblock's salt: the tree is recomputed with it, so the root hash changes.
    let (mut image, _) = signed(Arch::X86_64, a);
    image[hash_offset + 88] ^= 1;
    let err = verify(&image, a).unwrap_err();
    assert!(matches!(err, Error::RootHashMismatch { .. }), "{err:?}");
}

#[test]
fn a_damaged_gpt_says_what_is_wrong() {
    let [a, _] = signers();
    let (good, _) = signed(Arch::X86_64, a);
    let cases: [(usize, &str); 4] = [
        (510, "0x55AA"),
        (512 + 40, "header CRC"),
        (1024 + 56, "entry array CRC"), // the first partition's name
        (513, "EFI PART"),
    ];
    for (offset, message) in cases {
        let mut image = good.clone();
        image[offset] ^= 0x20;
        let err = verify(&image, a).unwrap_err();
        assert!(
            matches!(err, Error::BadGpt { ref what } if what.contains(message)),
            "byte {offset}: {err}"
        );
    }
    let err = verify(&good[..1000], a).unwrap_err();
    assert!(matches!(err, Error::BadGpt { .. }), "{err}");
}

#[test]
fn garbage_after_the_signature_json_is_refused() {
    let [a, _] = signers();
    let (mut image, _) = signed(Arch::X86_64, a);
    let sig = &verify(&image, a).unwrap().partitions[2];
    let end = (sig.offset + sig.size) as usize;
    image[end - 1] = b'x';
    let err = verify(&image, a).unwrap_err();
    assert!(matches!(err, Error::BadSignatureJson { .. }), "{err:?}");
}
