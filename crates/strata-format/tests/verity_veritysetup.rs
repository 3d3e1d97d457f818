//! Cross-check: `veritysetup` (cryptsetup-bin) makes the same hash device as ours from the
//! same data, salt and UUID, accepts our hash tree with `verify`, and rejects it once one
//! data byte is flipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_format::verity::{self, Params};
use uuid::Uuid;

const SALT_HEX: &str = "5f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const UUID: &str = "0b9e2a44-6c1d-4f0e-9a7b-3c5d2e1f0a99";

fn params() -> Params {
    Params::new(hex::decode(SALT_HEX).unwrap(), Uuid::parse_str(UUID).unwrap())
}

/// Deterministic pseudo-random bytes (xorshift64), so a failure can be reproduced.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run(tool: &Path, args: &[&str]) -> Output {
    let out = Command::new(tool).args(args).env("LC_ALL", "C").output().unwrap();
    eprintln!(
        "$ {} {}\n{}{}",
        tool.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[test]
#[ignore = "reference tools: needs veritysetup (run with --include-ignored; ci/test.sh does)"]
fn veritysetup_format_makes_the_same_hash_device() {
    let veritysetup = support::tool("veritysetup");
    let dir = tempfile::tempdir().unwrap();
    // One block (no levels), a partial and a full hash block, two levels, and three levels
    // (16385 blocks = 64 MiB + 4 KiB).
    for blocks in [1usize, 2, 127, 128, 129, 1000, 16384, 16385] {
        let data = noise(blocks * 4096, blocks as u64);
        let (data_path, hash_path) = (path(dir.path(), "data"), path(dir.path(), "hash"));
        std::fs::write(&data_path, &data).unwrap();
        let _ = std::fs::remove_file(&hash_path);
        let out = run(
            &veritysetup,
            &[
                "format",
                &format!("--salt={SALT_HEX}"),
                &format!("--uuid={UUID}"),
                data_path.to_str().unwrap(),
                hash_path.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "veritysetup format failed for {blocks} blocks");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let theirs = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .expect("veritysetup printed a root hash")
            .trim();

        let ours = verity::hash_tree(&data[..], data.len() as u64, &params()).unwrap();
        assert_eq!(ours.root_hash.to_string(), theirs, "root hash, {blocks} blocks");
        let their_device = std::fs::read(&hash_path).unwrap();
        assert!(
            ours.hash_device == their_device,
            "hash device differs for {blocks} blocks"
        );
    }
}

#[test]
#[ignore = "reference tools: needs veritysetup (run with --include-ignored; ci/test.sh does)"]
fn veritysetup_verifies_our_tree_and_catches_a_flipped_byte() {
    let veritysetup = support::tool("veritysetup");
    let dir = tempfile::tempdir().unwrap();
    let mut data = noise(300 * 4096, 42);
    let (data_path, hash_path) = (path(dir.path(), "data"), path(dir.path(), "hash"));
    std::fs::write(&data_path, &data).unwrap();
    let hash_file = std::fs::File::create(&hash_path).unwrap();
    let root = verity::write_hash_tree(&data[..], data.len() as u64, &params(), hash_file).unwrap();
    let root = root.to_string();
    let verify = |root: &str| {
        run(
            &veritysetup,
            &["verify", data_path.to_str().unwrap(), hash_path.to_str().unwrap(), root],
        )
    };
    let verify_ok = |root: &str| verify(root).status.success();

    assert!(verify_ok(&root), "veritysetup rejects our hash tree");
    let mut wrong = root.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    assert!(
        !verify_ok(std::str::from_utf8(&wrong).unwrap()),
        "veritysetup accepts a wrong root hash"
    );

    data[200 * 4096 + 17] ^= 0x01;
    std::fs::write(&data_path, &data).unwrap();
    let out = verify(&root);
    assert!(!out.status.success(), "veritysetup accepts data with a flipped byte");
    // It names the block we changed (block 200, at byte 819200).
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("position 819200"),
        "veritysetup blamed another block"
    );
}
