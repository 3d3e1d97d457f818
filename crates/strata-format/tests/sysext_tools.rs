//! Cross-checks of a whole extension image (`sysext::build_image`) with the reference tools:
//! `sfdisk --json` reads the partition types and UUIDs, `veritysetup verify` accepts the
//! data and hash partitions cut out where sfdisk says they are (and refuses a flipped
//! byte), `unsquashfs` lists the tree with its extension-release file, and `openssl smime
//! -verify` checks the signature from the JSON partition the way systemd does.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;
use strata_format::ddi::Arch;
use strata_format::layer::{Entry, EntryKind, Layer};
use strata_format::sign::{self, Signer};
use strata_format::sysext::{self, ExtensionRelease, Image, ImageOptions};

const NAME: &str = "hello";

fn run(tool: &Path, args: &[&str]) -> Output {
    let out = Command::new(tool).args(args).env("LC_ALL", "C").output().unwrap();
    eprintln!(
        "$ {} {}\n{}{}",
        tool.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(4000)
            .collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn release() -> ExtensionRelease {
    ExtensionRelease {
        id: "debian".into(),
        version_id: Some("13".into()),
        sysext_level: None,
        architecture: Arch::X86_64,
        scope: vec!["initrd".into(), "system".into()],
        extra: Vec::new(),
    }
}

/// A small extension: a script, a 300 KiB file (several verity blocks), a hard link, a
/// symlink, something under /opt.
fn layer() -> Layer {
    let mut x: u32 = 12345;
    let blob: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let t = 1_700_000_000;
    Layer::from_entries(vec![
        Entry::file(
            "usr/bin/strata-hello",
            b"#!/bin/sh\necho strata-sysext-marker\n".to_vec(),
            0o755,
            t,
        ),
        Entry::file("usr/share/strata/blob", blob, 0o644, t),
        Entry::new(
            "usr/share/strata/blob-link",
            EntryKind::Hardlink {
                target: "usr/share/strata/blob".into(),
            },
            0o644,
            t,
        ),
        Entry::symlink("usr/bin/hello-link", "strata-hello", t),
        Entry::file("opt/strata/README", b"opt is merged too\n".to_vec(), 0o644, t),
    ])
    .unwrap()
}

fn signer(dir: &Path) -> (Signer, PathBuf) {
    let from = SystemTime::now() - Duration::from_secs(3600);
    let pair = sign::generate_dev_key("strata sysext test", from, from + Duration::from_secs(86400)).unwrap();
    let crt = dir.join("sysext.crt");
    std::fs::write(&crt, &pair.certificate_pem).unwrap();
    (
        Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap(),
        crt,
    )
}

fn build(dir: &Path, signer: Option<&Signer>) -> (Image, PathBuf) {
    let image = sysext::build_image(&layer(), &release(), NAME, signer, &ImageOptions::default()).unwrap();
    let path = dir.join(format!("{NAME}.sysext.raw"));
    std::fs::write(&path, &image.bytes).unwrap();
    (image, path)
}

/// The partitions sfdisk reports, checked against ours; returns (start, size) in bytes.
fn sfdisk_partitions(sfdisk: &Path, path: &Path, image: &Image) -> Vec<(usize, usize)> {
    let out = run(sfdisk, &["--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "sfdisk --json failed");
    let table: Value = serde_json::from_slice::<Value>(&out.stdout).unwrap()["partitiontable"].clone();
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["id"], image.layout.disk_guid.to_string().to_uppercase());
    let parts = table["partitions"].as_array().unwrap();
    let want = [
        ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "root-x86-64"),
        ("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5", "root-x86-64-verity"),
        ("41092B05-9FC8-4523-994F-2DEF0408B176", "root-x86-64-verity-sig"),
    ];
    assert_eq!(parts.len(), image.layout.partitions.len());
    let hex = image.root_hash.to_string();
    let halves = [&hex[..32], &hex[32..]];
    let mut spans = Vec::new();
    for (i, (part, (type_uuid, name))) in parts.iter().zip(want).enumerate() {
        assert_eq!(part["type"], type_uuid);
        assert_eq!(part["name"], name);
        let uuid = part["uuid"].as_str().unwrap().replace('-', "").to_lowercase();
        if let Some(half) = halves.get(i) {
            assert_eq!(&uuid, half, "{name}'s UUID is not its half of the root hash");
        }
        let (start, size) = (
            part["start"].as_u64().unwrap() * 512,
            part["size"].as_u64().unwrap() * 512,
        );
        assert_eq!(
            (start, size),
            (image.layout.partitions[i].offset, image.layout.partitions[i].size)
        );
        spans.push((start as usize, size as usize));
    }
    spans
}

fn verity_verify(veritysetup: &Path, dir: &Path, data: &[u8], hash: &[u8], root_hash: &str) -> bool {
    let (d, h) = (dir.join("data.part"), dir.join("hash.part"));
    std::fs::write(&d, data).unwrap();
    std::fs::write(&h, hash).unwrap();
    run(
        veritysetup,
        &["verify", d.to_str().unwrap(), h.to_str().unwrap(), root_hash],
    )
    .status
    .success()
}

#[test]
#[ignore = "reference tools: needs sfdisk, veritysetup, unsquashfs, openssl (run with --include-ignored; ci/test.sh does)"]
fn signed_image_passes_sfdisk_veritysetup_unsquashfs_and_openssl() {
    let [sfdisk, veritysetup, unsquashfs, openssl] =
        ["sfdisk", "veritysetup", "unsquashfs", "openssl"].map(support::tool);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (signer, crt) = signer(d);
    let (image, path) = build(d, Some(&signer));
    let spans = sfdisk_partitions(&sfdisk, &path, &image);
    assert_eq!(spans.len(), 3);
    let part = |i: usize| &image.bytes[spans[i].0..spans[i].0 + spans[i].1];
    let root_hash = image.root_hash.to_string();

    // dm-verity: our root hash over the partitions where sfdisk puts them; one flipped bit fails.
    assert!(
        verity_verify(&veritysetup, d, part(0), part(1), &root_hash),
        "veritysetup rejects our image"
    );
    let mut tampered = part(0).to_vec();
    tampered[5000] ^= 1;
    assert!(
        !verity_verify(&veritysetup, d, &tampered, part(1), &root_hash),
        "tampered data verified"
    );

    // The file system: our files and the extension-release file systemd looks for.
    let sqfs = d.join("data.part");
    std::fs::write(&sqfs, part(0)).unwrap();
    let out = run(&unsquashfs, &["-lls", sqfs.to_str().unwrap()]);
    assert!(out.status.success(), "unsquashfs -lls failed");
    let listing = String::from_utf8_lossy(&out.stdout);
    let release_path = format!("usr/lib/extension-release.d/extension-release.{NAME}");
    for (mode, path) in [
        ("-rw-r--r-- root/root", release_path.as_str()),
        ("-rwxr-xr-x root/root", "usr/bin/strata-hello"),
        ("lrwxrwxrwx root/root", "usr/bin/hello-link -> strata-hello"),
        ("-rw-r--r-- root/root", "usr/share/strata/blob-link"),
        ("-rw-r--r-- root/root", "opt/strata/README"),
    ] {
        let line = listing.lines().find(|l| l.ends_with(&format!("squashfs-root/{path}")));
        assert!(
            line.is_some_and(|l| l.starts_with(mode)),
            "no `{mode} … {path}` in the listing"
        );
    }
    let out = run(&unsquashfs, &["-cat", sqfs.to_str().unwrap(), &release_path]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), release().render());

    // The signature partition: JSON, NUL-padded, naming our root hash and certificate.
    let sig_part = part(2);
    let end = sig_part.iter().position(|&b| b == 0).unwrap();
    assert!(sig_part[end..].iter().all(|&b| b == 0));
    let json: Value = serde_json::from_slice(&sig_part[..end]).unwrap();
    assert_eq!(json["rootHash"], root_hash);
    let out = run(
        &openssl,
        &[
            "x509",
            "-in",
            crt.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let openssl_fp = String::from_utf8(out.stdout).unwrap();
    let openssl_fp = openssl_fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(json["certificateFingerprint"], openssl_fp);
    let der = base64::engine::general_purpose::STANDARD
        .decode(json["signature"].as_str().unwrap())
        .unwrap();
    let (sig, content) = (d.join("sig.der"), d.join("roothash"));
    std::fs::write(&sig, der).unwrap();
    let smime_verify = |root_hash: &str| {
        std::fs::write(&content, root_hash).unwrap();
        let args = [
            "smime",
            "-verify",
            "-binary",
            "-inform",
            "der",
            "-in",
            sig.to_str().unwrap(),
            "-content",
        ];
        let tail = [
            content.to_str().unwrap(),
            "-certfile",
            crt.to_str().unwrap(),
            "-nointern",
            "-noverify",
        ];
        run(&openssl, &[&args[..], &tail[..]].concat()).status.success()
    };
    assert!(
        smime_verify(&root_hash),
        "openssl rejects our signature of the root hash"
    );
    let other = format!(
        "{}{}",
        if root_hash.starts_with('0') { '1' } else { '0' },
        &root_hash[1..]
    );
    assert!(
        !smime_verify(&other),
        "openssl accepts the signature for another root hash"
    );
}

#[test]
#[ignore = "reference tools: needs sfdisk, veritysetup (run with --include-ignored; ci/test.sh does)"]
fn unsigned_image_has_data_and_hash_partitions_only() {
    let [sfdisk, veritysetup] = ["sfdisk", "veritysetup"].map(support::tool);
    let dir = tempfile::tempdir().unwrap();
    let (image, path) = build(dir.path(), None);
    let spans = sfdisk_partitions(&sfdisk, &path, &image);
    assert_eq!(spans.len(), 2);
    let part = |i: usize| &image.bytes[spans[i].0..spans[i].0 + spans[i].1];
    assert!(verity_verify(
        &veritysetup,
        dir.path(),
        part(0),
        part(1),
        &image.root_hash.to_string()
    ));
    let out = run(&sfdisk, &["--verify", path.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No errors detected"),
        "sfdisk --verify found problems"
    );
}
