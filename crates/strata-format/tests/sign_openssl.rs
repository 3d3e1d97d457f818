//! Cross-checks of root hash signing against OpenSSL, which systemd uses to verify it.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use strata_format::sign::{self, Error, PemKind, Signer};

const ROOT_HASH: &str = "8a3c1f0e5d9b7a6c4e2f1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a";

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let openssl = support::tool("openssl");
    Command::new(openssl).current_dir(dir).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dev_key(dir: &Path) -> Signer {
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let pair = sign::generate_dev_key("strata dev key", from, from + Duration::from_secs(10 * 365 * 86400)).unwrap();
    std::fs::write(dir.join("key.pem"), &pair.key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &pair.certificate_pem).unwrap();
    Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap()
}

#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn openssl_verifies_our_signature_and_rejects_another_root_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signer = dev_key(d);
    std::fs::write(d.join("sig.der"), signer.sign(ROOT_HASH.as_bytes()).unwrap()).unwrap();
    std::fs::write(d.join("roothash.txt"), ROOT_HASH).unwrap();
    let mut tampered = ROOT_HASH.to_owned();
    tampered.replace_range(0..1, "9");
    std::fs::write(d.join("tampered.txt"), tampered).unwrap();

    // As systemd does it: the certificate from outside, no chain verification.
    let smime = |content: &str| {
        openssl(
            d,
            &[
                "smime",
                "-verify",
                "-binary",
                "-inform",
                "der",
                "-in",
                "sig.der",
                "-content",
                content,
                "-certfile",
                "cert.pem",
                "-nointern",
                "-noverify",
            ],
        )
    };
    ok(smime("roothash.txt"));
    assert!(
        !smime("tampered.txt").status.success(),
        "a changed root hash must not verify"
    );

    // With full verification, our self-signed certificate as the trust anchor.
    let cms = |content: &str| {
        openssl(
            d,
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "der",
                "-in",
                "sig.der",
                "-content",
                content,
                "-certfile",
                "cert.pem",
                "-nointern",
                "-CAfile",
                "cert.pem",
                "-attime",
                "1800000000",
            ],
        )
    };
    ok(cms("roothash.txt"));
    assert!(!cms("tampered.txt").status.success());
    // Without the certificate there is nothing to verify against: the signature embeds none.
    let bare = openssl(
        d,
        &[
            "smime",
            "-verify",
            "-binary",
            "-inform",
            "der",
            "-in",
            "sig.der",
            "-content",
            "roothash.txt",
            "-noverify",
        ],
    );
    assert!(!bare.status.success());
}

#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn our_signature_is_byte_identical_to_openssl_smime_with_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(openssl(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "30",
            "-subj",
            "/CN=openssl made/O=strata",
        ],
    ));
    std::fs::write(d.join("roothash.txt"), ROOT_HASH).unwrap();
    ok(openssl(
        d,
        &[
            "smime",
            "-sign",
            "-nocerts",
            "-noattr",
            "-binary",
            "-in",
            "roothash.txt",
            "-inkey",
            "key.pem",
            "-signer",
            "cert.pem",
            "-outform",
            "der",
            "-out",
            "openssl.der",
        ],
    ));
    let key = std::fs::read(d.join("key.pem")).unwrap();
    let cert = std::fs::read(d.join("cert.pem")).unwrap();
    let ours = Signer::from_pem(&key, &cert)
        .unwrap()
        .sign(ROOT_HASH.as_bytes())
        .unwrap();
    assert_eq!(ours, std::fs::read(d.join("openssl.der")).unwrap());

    // The same key in PKCS#1 form loads and signs the same.
    ok(openssl(
        d,
        &["rsa", "-in", "key.pem", "-traditional", "-out", "key-pkcs1.pem"],
    ));
    let pkcs1 = std::fs::read(d.join("key-pkcs1.pem")).unwrap();
    assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        Signer::from_pem(&pkcs1, &cert)
            .unwrap()
            .sign(ROOT_HASH.as_bytes())
            .unwrap(),
        ours
    );
}

#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn fingerprint_and_certificate_fields_match_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signer = dev_key(d);
    let out = ok(openssl(
        d,
        &[
            "x509",
            "-in",
            "cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-subject",
            "-startdate",
            "-enddate",
        ],
    ));
    let fingerprint = out
        .lines()
        .find_map(|l| l.split_once("Fingerprint="))
        .unwrap()
        .1
        .replace(':', "")
        .to_lowercase();
    assert_eq!(
        sign::certificate_fingerprint(signer.certificate()).unwrap(),
        fingerprint
    );
    assert!(out.contains("subject=CN = strata dev key"), "{out}");
    assert!(out.contains("notBefore=Nov 14 22:13:20 2023 GMT"), "{out}");
    assert!(out.contains("notAfter=Nov 11 22:13:20 2033 GMT"), "{out}");
    // The private key is one openssl reads, and it is the certificate's.
    let key_modulus = ok(openssl(d, &["rsa", "-in", "key.pem", "-noout", "-modulus"]));
    let cert_modulus = ok(openssl(d, &["x509", "-in", "cert.pem", "-noout", "-modulus"]));
    assert_eq!(key_modulus, cert_modulus);
    assert!(key_modulus.len() > 512, "2048-bit modulus");
}

#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn keys_openssl_makes_that_we_cannot_use_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&[&str], &str); 3] = [
        (&["genpkey", "-algorithm", "ed25519"], "Ed25519"),
        (
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ECDSA",
        ),
        (&["ecparam", "-genkey", "-name", "prime256v1", "-noout"], "EC"),
    ];
    for (args, algorithm) in cases {
        let pem = ok(openssl(d, args));
        match sign::load_private_key(pem.as_bytes()) {
            Err(Error::UnsupportedKeyAlgorithm {
                source_kind: PemKind::PrivateKey,
                algorithm: found,
            }) => {
                assert_eq!(found, algorithm)
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
    ok(openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-aes256",
            "-pass",
            "pass:x",
            "-out",
            "enc.pem",
        ],
    ));
    let encrypted = std::fs::read(d.join("enc.pem")).unwrap();
    assert!(matches!(sign::load_private_key(&encrypted), Err(Error::EncryptedKey)));
}
