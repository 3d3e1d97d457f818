//! Cross-check of our extension images with trixie's `systemd-dissect --validate` (systemd
//! 257), run in a podman container: the host's systemd 252 predates the checks that matter.
//!
//! The container is made by `support::dissect`.
//!
//! What `--validate` checks: the partition table, the image policy, and (with
//! `--root-hash=`) that a data and verity partition carry that root hash's halves as UUIDs.
//! It reads neither the file system blocks nor the signature: a flipped data byte or a bad
//! signature is caught by dm-verity and the signature check when the image is activated (the
//! qemu test) and by `veritysetup verify` / `openssl smime -verify`
//! (crates/strata-format/tests/sysext_tools.rs).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strata_format::ddi::Arch;
use strata_format::layer::{Entry, Layer};
use strata_format::sign::{self, Signer};
use strata_format::sysext::{self, ExtensionRelease, Image, ImageOptions};
use support::dissect::{STRICT, validate};

fn build(dir: &Path, signed: bool) -> (Image, PathBuf) {
    let t = 1_700_000_000;
    let layer = Layer::from_entries(vec![
        Entry::file(
            "usr/bin/strata-hello",
            b"#!/bin/sh\necho strata-sysext-marker\n".to_vec(),
            0o755,
            t,
        ),
        Entry::file("usr/share/strata/data", vec![7u8; 100_000], 0o644, t),
    ])
    .unwrap();
    let release = ExtensionRelease {
        id: "debian".into(),
        version_id: Some("13".into()),
        sysext_level: None,
        architecture: Arch::X86_64,
        scope: vec!["initrd".into(), "system".into()],
        extra: Vec::new(),
    };
    let signer = signed.then(|| {
        let from = SystemTime::now() - Duration::from_secs(3600);
        let pair = sign::generate_dev_key("strata dissect test", from, from + Duration::from_secs(86400)).unwrap();
        Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap()
    });
    let image = sysext::build_image(&layer, &release, "hello", signer.as_ref(), &ImageOptions::default()).unwrap();
    let path = dir.join(if signed {
        "hello.sysext.raw"
    } else {
        "unsigned.sysext.raw"
    });
    std::fs::write(&path, &image.bytes).unwrap();
    (image, path)
}

/// Another root hash: ours with its first digit changed.
fn other_root_hash(image: &Image) -> String {
    let hex = image.root_hash.to_string();
    format!("{}{}", if hex.starts_with('0') { '1' } else { '0' }, &hex[1..])
}

#[test]
#[ignore = "reference tools: needs podman, the trixie base image of ci/setup.sh, the Debian mirror (systemd-dissect in a container) (run with --include-ignored; ci/test.sh does)"]
fn signed_image_validates_under_the_strict_sysext_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (image, path) = build(dir.path(), true);
    let (ok, out) = validate(&path, &[]);
    assert!(
        ok && out.contains("OK"),
        "systemd-dissect --validate rejects our signed image:\n{out}"
    );
    let (ok, out) = validate(&path, &[STRICT]);
    assert!(
        ok,
        "the strict sysext policy (signed root) rejects our signed image:\n{out}"
    );
    let ours = format!("--root-hash={}", image.root_hash);
    let (ok, out) = validate(&path, &[&ours, STRICT]);
    assert!(ok, "our root hash does not find our partitions:\n{out}");

    // An image that is not the one the root hash names is refused.
    let other = format!("--root-hash={}", other_root_hash(&image));
    let (ok, out) = validate(&path, &[&other]);
    assert!(
        !ok && out.contains("No root partition for specified root hash found"),
        "{out}"
    );
}

#[test]
#[ignore = "reference tools: needs podman, the trixie base image of ci/setup.sh, the Debian mirror (systemd-dissect in a container) (run with --include-ignored; ci/test.sh does)"]
fn unsigned_image_fails_the_strict_policy_and_validates_with_its_root_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (image, path) = build(dir.path(), false);
    assert_eq!(image.layout.partitions.len(), 2);
    let (ok, out) = validate(&path, &[]);
    assert!(ok, "systemd-dissect --validate rejects our unsigned image:\n{out}");
    let (ok, out) = validate(&path, &[STRICT]);
    assert!(
        !ok && out.contains("does not match image policy"),
        "unsigned image passes the strict policy:\n{out}"
    );
    let ours = format!("--root-hash={}", image.root_hash);
    let (ok, out) = validate(&path, &[&ours, "--image-policy=root=verity+absent:usr=absent"]);
    assert!(
        ok,
        "the unsigned image is not verity-protected under its root hash:\n{out}"
    );
    let other = format!("--root-hash={}", other_root_hash(&image));
    assert!(
        !validate(&path, &[&other]).0,
        "another root hash finds our unsigned image"
    );
}
