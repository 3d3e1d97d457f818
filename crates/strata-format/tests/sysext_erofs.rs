//! Cross-check of an erofs extension image: the files of `sysext::filesystem_layer`, written
//! with `Layer::write_tar` and unpacked by GNU tar, made into erofs by erofs-utils'
//! `mkfs.erofs`, then `sysext::image_from_filesystem`. `sfdisk --json` finds the three DPS
//! partitions, `veritysetup verify` accepts data and hash tree with our root hash,
//! `fsck.erofs` checks the data partition and extracts the tree (files, modes, times, the
//! extension-release file), `dump.erofs` shows the hard link and the extended attribute, and
//! a second run gives the same bytes.
//!
//! erofs-utils 1.5 (Debian 12) has no `--tar`, hence the unpacked tree. Its `-T` sets *every*
//! file's time to the given one; `SOURCE_DATE_EPOCH` instead clamps the times to it (the
//! layer's times survive, the fresh root directory gets the epoch, as in our squashfs) and
//! makes it the build time, so the image is reproducible without losing the layer's times.

mod support;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use strata_format::ddi::Arch;
use strata_format::layer::{Entry, EntryKind, Layer};
use strata_format::sign::{self, Signer};
use strata_format::squashfs;
use strata_format::sysext::{self, ExtensionRelease, Image, ImageOptions};

const NAME: &str = "hello";
/// The image's time (`SOURCE_DATE_EPOCH`): that of the release file and the root directory.
const EPOCH: u32 = 1_700_000_123;
/// The time of the layer's own files, before [`EPOCH`].
const LAYER_TIME: u64 = 1_700_000_000;
/// erofs superblock UUID (mkfs.erofs picks a random one otherwise).
const FS_UUID: &str = "5f0c6c4e-3a51-4d2e-9b7a-0d3c1e2f4a5b";
const RELEASE_PATH: &str = "usr/lib/extension-release.d/extension-release.hello";

/// The tools this test needs (`support::tool` fails the test when one is missing).
struct Tools {
    tar: PathBuf,
    mkfs: PathBuf,
    fsck: PathBuf,
    dump: PathBuf,
    sfdisk: PathBuf,
    veritysetup: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let [tar, mkfs, fsck, dump, sfdisk, veritysetup] =
            ["tar", "mkfs.erofs", "fsck.erofs", "dump.erofs", "sfdisk", "veritysetup"].map(support::tool);
        Tools {
            tar,
            mkfs,
            fsck,
            dump,
            sfdisk,
            veritysetup,
        }
    }
}

fn run(tool: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().copied())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let env_text: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!(
        "$ {env_text}{} {}\n{}{}",
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

/// Run a tool that must succeed; its stdout.
fn run_ok(tool: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(tool, args, env);
    assert!(out.status.success(), "{} {} failed", tool.display(), args.join(" "));
    String::from_utf8(out.stdout).unwrap()
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

fn options() -> ImageOptions {
    ImageOptions {
        squashfs: squashfs::Options {
            mtime: EPOCH,
            ..squashfs::Options::default()
        },
        ..ImageOptions::default()
    }
}

/// A 300 KiB pseudo-random file: several verity blocks.
fn blob() -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..300 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

/// A small extension: a script with an extended attribute, a big file and a hard link to
/// it, a symlink, something under /opt.
fn layer() -> Layer {
    let mut script = Entry::file(
        "usr/bin/strata-hello",
        b"#!/bin/sh\necho strata-sysext-marker\n".to_vec(),
        0o755,
        LAYER_TIME,
    );
    script.xattrs.insert("user.strata.note".into(), b"kept".to_vec());
    Layer::from_entries(vec![
        script,
        Entry::file("usr/share/strata/blob", blob(), 0o644, LAYER_TIME),
        Entry::new(
            "usr/share/strata/blob-link",
            EntryKind::Hardlink {
                target: "usr/share/strata/blob".into(),
            },
            0o644,
            LAYER_TIME,
        ),
        Entry::symlink("usr/bin/hello-link", "strata-hello", LAYER_TIME),
        Entry::file("opt/strata/README", b"opt is merged too\n".to_vec(), 0o600, LAYER_TIME),
    ])
    .unwrap()
}

fn signer() -> Signer {
    let from = SystemTime::now() - Duration::from_secs(3600);
    let pair = sign::generate_dev_key("strata erofs test", from, from + Duration::from_secs(86400)).unwrap();
    Signer::from_pem(pair.key_pem.as_bytes(), pair.certificate_pem.as_bytes()).unwrap()
}

/// mkfs.erofs's arguments: fixed UUID, everything owned by root, extended attributes kept
/// (no `-x`); the time comes from `SOURCE_DATE_EPOCH` (see the module documentation).
fn mkfs_args<'a>(image: &'a str, root: &'a str) -> Vec<&'a str> {
    vec!["-U", FS_UUID, "--all-root", "--quiet", image, root]
}

/// The erofs image of `fs`, made in `dir`: tar of the layer, unpacked, mkfs.erofs.
fn erofs(tools: &Tools, fs: &Layer, dir: &Path) -> Vec<u8> {
    let (tar, root, image) = (dir.join("fs.tar"), dir.join("root"), dir.join("fs.erofs"));
    fs.write_tar(std::fs::File::create(&tar).unwrap()).unwrap();
    std::fs::create_dir(&root).unwrap();
    let (tar, root, image) = (tar.to_str().unwrap(), root.to_str().unwrap(), image.to_str().unwrap());
    let unpack = [
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-xpf",
        tar,
        "-C",
        root,
    ];
    run_ok(&tools.tar, &unpack, &[]);
    let epoch = EPOCH.to_string();
    run_ok(&tools.mkfs, &mkfs_args(image, root), &[("SOURCE_DATE_EPOCH", &epoch)]);
    std::fs::read(image).unwrap()
}

/// (start, size) in bytes of the partitions sfdisk reports, checked against ours and the DPS.
fn sfdisk_partitions(sfdisk: &Path, path: &Path, image: &Image) -> Vec<(usize, usize)> {
    let out = run_ok(sfdisk, &["--json", path.to_str().unwrap()], &[]);
    let table = serde_json::from_str::<Value>(&out).unwrap()["partitiontable"].clone();
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    let want = [
        ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "root-x86-64"),
        ("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5", "root-x86-64-verity"),
        ("41092B05-9FC8-4523-994F-2DEF0408B176", "root-x86-64-verity-sig"),
    ];
    assert_eq!(parts.len(), want.len());
    let mut spans = Vec::new();
    for (i, (part, (type_uuid, name))) in parts.iter().zip(want).enumerate() {
        assert_eq!(
            (part["type"].as_str(), part["name"].as_str()),
            (Some(type_uuid), Some(name))
        );
        let start = part["start"].as_u64().unwrap() * 512;
        let size = part["size"].as_u64().unwrap() * 512;
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
    let args = ["verify", d.to_str().unwrap(), h.to_str().unwrap(), root_hash];
    run(veritysetup, &args, &[]).status.success()
}

/// Check what `fsck.erofs --extract` gives: contents, modes, times, the release file.
fn check_extracted(root: &Path) {
    let meta = |path: &str| std::fs::symlink_metadata(root.join(path)).unwrap();
    let read = |path: &str| std::fs::read(root.join(path)).unwrap();
    assert_eq!(String::from_utf8(read(RELEASE_PATH)).unwrap(), release().render());
    for (path, mode, mtime) in [
        (RELEASE_PATH, 0o644, u64::from(EPOCH)),
        ("usr/lib/extension-release.d", 0o755, u64::from(EPOCH)),
        ("", 0o755, u64::from(EPOCH)),
        ("usr/bin/strata-hello", 0o755, LAYER_TIME),
        ("usr/share/strata/blob-link", 0o644, LAYER_TIME),
        ("opt/strata/README", 0o600, LAYER_TIME),
    ] {
        let m = meta(path);
        assert_eq!(
            (m.mode() & 0o7777, m.mtime() as u64, m.uid(), m.gid()),
            (mode, mtime, 0, 0),
            "mode, time, owner of `{path}`"
        );
    }
    assert_eq!(read("usr/share/strata/blob-link"), blob());
    assert_eq!(read("usr/bin/strata-hello"), b"#!/bin/sh\necho strata-sysext-marker\n");
    let link = std::fs::read_link(root.join("usr/bin/hello-link")).unwrap();
    assert_eq!(link, Path::new("strata-hello"));
}

/// The value of `key: value` in `dump.erofs --path` output (fields end at two spaces or a
/// line end).
fn dump_field<'a>(dump: &'a str, key: &str) -> &'a str {
    let at = dump
        .find(&format!("{key}: "))
        .unwrap_or_else(|| panic!("no `{key}` in {dump}"))
        + key.len()
        + 2;
    let line = dump[at..].lines().next().unwrap_or_default();
    line.split("  ").next().unwrap_or_default().trim()
}

#[test]
#[ignore = "reference tools: needs mkfs.erofs, fsck.erofs, dump.erofs, sfdisk, veritysetup, tar (run with --include-ignored; ci/test.sh does)"]
fn erofs_image_passes_sfdisk_veritysetup_and_fsck_erofs() {
    let tools = Tools::find();
    let fs = sysext::filesystem_layer(&layer(), &release(), NAME, &options()).unwrap();
    let signer = signer();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = d.join("first");
    std::fs::create_dir(&first).unwrap();
    let filesystem = erofs(&tools, &fs, &first);
    let image = sysext::image_from_filesystem(filesystem.clone(), Arch::X86_64, Some(&signer)).unwrap();
    let path = d.join(format!("{NAME}.sysext.raw"));
    std::fs::write(&path, &image.bytes).unwrap();

    let spans = sfdisk_partitions(&tools.sfdisk, &path, &image);
    let part = |i: usize| &image.bytes[spans[i].0..spans[i].0 + spans[i].1];
    assert_eq!(part(0), &filesystem[..], "the data partition is the erofs image");
    let root_hash = image.root_hash.to_string();
    assert!(
        verity_verify(&tools.veritysetup, d, part(0), part(1), &root_hash),
        "veritysetup rejects the erofs image's hash tree"
    );
    let mut tampered = part(0).to_vec();
    tampered[5000] ^= 1;
    assert!(!verity_verify(&tools.veritysetup, d, &tampered, part(1), &root_hash));
    let json = std::str::from_utf8(part(2)).unwrap().trim_end_matches('\0');
    assert_eq!(serde_json::from_str::<Value>(json).unwrap()["rootHash"], root_hash);

    // The file system, as erofs-utils reads it from the data partition.
    let data = d.join("data.erofs");
    std::fs::write(&data, part(0)).unwrap();
    let data = data.to_str().unwrap();
    let extracted = d.join("extracted");
    run_ok(&tools.fsck, &[data], &[]);
    run_ok(&tools.fsck, &[&format!("--extract={}", extracted.display()), data], &[]);
    check_extracted(&extracted);
    let superblock = run_ok(&tools.dump, &["-s", data], &[]);
    assert!(superblock.contains(FS_UUID), "{superblock}");
    let blob = run_ok(&tools.dump, &["--path=/usr/share/strata/blob-link", data], &[]);
    assert_eq!(dump_field(&blob, "Links"), "2", "the hard link is one inode");
    let script = run_ok(&tools.dump, &["--path=/usr/bin/strata-hello", data], &[]);
    assert_ne!(dump_field(&script, "Xattr size"), "0", "the extended attribute is gone");
    let readme = run_ok(&tools.dump, &["--path=/opt/strata/README", data], &[]);
    assert_eq!(dump_field(&readme, "Xattr size"), "0");
    // erofs stores an xattr entry as the name without its `user.` prefix, then the value.
    assert!(
        part(0).windows(15).any(|w| w == b"strata.notekept"),
        "the extended attribute is not in the image"
    );

    // Another unpacking (other directory, other inode numbers) gives the same image.
    let second = d.join("second");
    std::fs::create_dir(&second).unwrap();
    let again = sysext::image_from_filesystem(erofs(&tools, &fs, &second), Arch::X86_64, Some(&signer)).unwrap();
    assert!(again.bytes == image.bytes, "two erofs builds differ");
}
