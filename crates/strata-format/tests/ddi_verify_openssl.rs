//! `sign::verify_detached` and `ddi_verify::verify` against signatures made by OpenSSL
//! (`openssl smime -sign`), with and without signed attributes.

mod support;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use strata_format::ddi::{self, Arch};
use strata_format::{ddi_verify, sign, verity};

fn openssl_sign(dir: &Path, content: &str, extra: &[&str]) -> Vec<u8> {
    let openssl = support::tool("openssl");
    std::fs::write(dir.join("content"), content).unwrap();
    let mut args = vec!["smime", "-sign", "-binary", "-nocerts"];
    args.extend_from_slice(extra);
    args.extend([
        "-in", "content", "-signer", "cert.pem", "-inkey", "key.pem", "-md", "sha256", "-outform", "der", "-out",
        "sig.der",
    ]);
    let out = Command::new(openssl).current_dir(dir).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("sig.der")).unwrap()
}

#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn openssl_signatures_verify_and_tampering_is_caught() {
    let openssl = support::tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let pair = sign::generate_dev_key("strata openssl", from, from + Duration::from_secs(86400 * 365)).unwrap();
    std::fs::write(d.join("key.pem"), &pair.key_pem).unwrap();
    std::fs::write(d.join("cert.pem"), &pair.certificate_pem).unwrap();
    let cert = sign::load_certificate(pair.certificate_pem.as_bytes()).unwrap();
    let signer = sign::Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap();

    let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    let params = verity::Params::new(
        [3u8; 32],
        uuid::Uuid::from_u128(0x1111_2222_3333_4444_8555_6666_7777_8888),
    );
    let tree = verity::hash_tree(&data[..], data.len() as u64, &params).unwrap();
    let hex = tree.root_hash.to_string();

    // -noattr: the bytes strata writes itself.
    let noattr = openssl_sign(d, &hex, &["-noattr"]);
    assert_eq!(
        noattr,
        signer.sign(hex.as_bytes()).unwrap(),
        "same bytes as Signer::sign"
    );
    sign::verify_detached(&noattr, hex.as_bytes(), &cert).unwrap();
    let err = sign::verify_detached(&noattr, b"another root hash", &cert).unwrap_err();
    assert!(matches!(err, sign::Error::SignatureInvalid(_)), "{err:?}");

    // With signed attributes (content type, signing time, message digest, capabilities).
    let attrs = openssl_sign(d, &hex, &[]);
    assert_ne!(attrs, noattr);
    sign::verify_detached(&attrs, hex.as_bytes(), &cert).unwrap();
    let err = sign::verify_detached(&attrs, b"another root hash", &cert).unwrap_err();
    assert!(matches!(err, sign::Error::MessageDigestMismatch), "{err:?}");
    let mut tampered = attrs.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = sign::verify_detached(&tampered, hex.as_bytes(), &cert).unwrap_err();
    assert!(matches!(err, sign::Error::SignatureInvalid(_)), "{err:?}");

    // Either in an image: the whole image verifies.
    let fingerprint: [u8; 32] = hex::decode(sign::certificate_fingerprint(&cert).unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    for sig in [&noattr, &attrs] {
        let json = ddi::signature_json(&tree.root_hash, &fingerprint, sig);
        let mut image = Vec::new();
        let input = ddi::Input {
            arch: Arch::Arm64,
            data: &data[..],
            data_size: data.len() as u64,
            hash_tree: &tree.hash_device,
            root_hash: tree.root_hash,
            signature_json: json.as_bytes(),
        };
        ddi::write(input, &mut image).unwrap();
        let v = ddi_verify::verify(Cursor::new(&image), &cert).unwrap();
        assert_eq!((v.root_hash, v.arch), (tree.root_hash, Arch::Arm64));
    }

    // A DER certificate loads as well as PEM.
    let der = std::fs::read(d.join("cert.pem")).unwrap();
    assert_eq!(sign::load_certificate_pem_or_der(&der).unwrap(), cert);
    let out = Command::new(openssl)
        .current_dir(d)
        .args(["x509", "-in", "cert.pem", "-outform", "der", "-out", "cert.der"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        sign::load_certificate_pem_or_der(&std::fs::read(d.join("cert.der")).unwrap()).unwrap(),
        cert
    );
}
