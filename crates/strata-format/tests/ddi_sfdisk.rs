//! Cross-check: util-linux `sfdisk` reads our DDI's partition table (types, UUIDs, names,
//! offsets, flags; also from the backup table alone), and `veritysetup verify` accepts the
//! data and hash partitions cut out at the offsets sfdisk reports, with the root hash from the
//! signature partition.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use strata_format::ddi::{self, Arch, Input, Layout};
use strata_format::verity::{self, Params};
use uuid::Uuid;

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

/// A DDI over 300 blocks of pseudo-random "file system", with a made-up signature.
fn build(dir: &Path) -> (Layout, verity::RootHash, std::path::PathBuf) {
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..300 * 4096)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let tree = verity::hash_tree(
        &data[..],
        data.len() as u64,
        &Params::new([3u8; 32], Uuid::from_u128(7)),
    )
    .unwrap();
    let json = ddi::signature_json(
        &tree.root_hash,
        &[0x5a; 32],
        b"\x30\x82 stand-in for a PKCS#7 signature",
    );
    let image = dir.join("test.sysext.raw");
    let out = std::io::BufWriter::new(std::fs::File::create(&image).unwrap());
    let input = Input {
        arch: Arch::X86_64,
        data: &data[..],
        data_size: data.len() as u64,
        hash_tree: &tree.hash_device,
        root_hash: tree.root_hash,
        signature_json: json.as_bytes(),
    };
    let layout = ddi::write(input, out).unwrap();
    (layout, tree.root_hash, image)
}

fn sfdisk_json(sfdisk: &Path, image: &Path) -> Value {
    let out = run(sfdisk, &["--json", image.to_str().unwrap()]);
    assert!(out.status.success(), "sfdisk --json failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitiontable"].clone()
}

fn check_table(table: &Value, layout: &Layout) {
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["unit"], "sectors");
    assert_eq!(table["sectorsize"], 512);
    assert_eq!(table["id"], layout.disk_guid.to_string().to_uppercase());
    assert_eq!(table["firstlba"], 34);
    assert_eq!(table["lastlba"], layout.size / 512 - 34);
    let parts = table["partitions"].as_array().unwrap();
    let want = [
        ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "root-x86-64"),
        ("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5", "root-x86-64-verity"),
        ("41092B05-9FC8-4523-994F-2DEF0408B176", "root-x86-64-verity-sig"),
    ];
    assert_eq!(parts.len(), 3);
    for ((part, (type_uuid, name)), ours) in parts.iter().zip(want).zip(&layout.partitions) {
        assert_eq!(part["type"], type_uuid);
        assert_eq!(part["name"], name);
        assert_eq!(part["uuid"], ours.uuid.to_string().to_uppercase());
        assert_eq!(part["attrs"], "GUID:60");
        let start = part["start"].as_u64().unwrap() * 512;
        assert_eq!(start % 4096, 0, "{name} is not 4 KiB aligned");
        assert_eq!((start, part["size"].as_u64().unwrap() * 512), (ours.offset, ours.size));
    }
}

#[test]
#[ignore = "reference tools: needs sfdisk, veritysetup (run with --include-ignored; ci/test.sh does)"]
fn sfdisk_reads_the_table_and_veritysetup_the_partitions() {
    let sfdisk = support::tool("sfdisk");
    let veritysetup = support::tool("veritysetup");
    let dir = tempfile::tempdir().unwrap();
    let (layout, root_hash, image) = build(dir.path());
    let table = sfdisk_json(&sfdisk, &image);
    check_table(&table, &layout);

    // The partition UUIDs are the halves of the root hash, as systemd looks them up.
    let hex = root_hash.to_string();
    let parts = table["partitions"].as_array().unwrap();
    let no_dashes = |v: &Value| v.as_str().unwrap().replace('-', "").to_lowercase();
    assert_eq!(no_dashes(&parts[0]["uuid"]), hex[..32]);
    assert_eq!(no_dashes(&parts[1]["uuid"]), hex[32..]);

    let verify = sfdisk_verify(&sfdisk, &image);
    assert!(verify.status.success(), "sfdisk --verify failed");
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("No errors detected"),
        "sfdisk --verify found problems"
    );

    // Cut the partitions out where sfdisk says they are.
    let disk = std::fs::read(&image).unwrap();
    let extent = |i: usize| {
        let start = parts[i]["start"].as_u64().unwrap() as usize * 512;
        &disk[start..start + parts[i]["size"].as_u64().unwrap() as usize * 512]
    };
    let sig = extent(2);
    let end = sig.iter().position(|&b| b == 0).expect("JSON is NUL-terminated");
    assert!(sig[end..].iter().all(|&b| b == 0), "only NULs after the JSON");
    let json: Value = serde_json::from_slice(&sig[..end]).unwrap();
    assert_eq!(json["rootHash"], hex);
    assert_eq!(json["certificateFingerprint"], "5a".repeat(32));

    let (data_path, hash_path) = (dir.path().join("data"), dir.path().join("hash"));
    std::fs::write(&data_path, extent(0)).unwrap();
    std::fs::write(&hash_path, extent(1)).unwrap();
    let root = json["rootHash"].as_str().unwrap();
    let verify = |root: &str| {
        run(
            &veritysetup,
            &["verify", data_path.to_str().unwrap(), hash_path.to_str().unwrap(), root],
        )
    };
    assert!(
        verify(root).status.success(),
        "veritysetup rejects the partitions of our DDI"
    );

    let mut tampered = extent(0).to_vec();
    tampered[123_456] ^= 0x80;
    std::fs::write(&data_path, tampered).unwrap();
    assert!(
        !verify(root).status.success(),
        "veritysetup accepts a tampered data partition"
    );
}

fn sfdisk_verify(sfdisk: &Path, image: &Path) -> Output {
    run(sfdisk, &["--verify", image.to_str().unwrap()])
}

#[test]
#[ignore = "reference tools: needs sfdisk (run with --include-ignored; ci/test.sh does)"]
fn sfdisk_falls_back_to_our_backup_table() {
    let sfdisk = support::tool("sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let (layout, _, image) = build(dir.path());
    let mut disk = std::fs::read(&image).unwrap();
    disk[512..1024].fill(0); // destroy the primary header
    let broken = dir.path().join("broken.raw");
    std::fs::write(&broken, &disk).unwrap();
    check_table(&sfdisk_json(&sfdisk, &broken), &layout);
}

#[test]
fn two_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (_, _, first) = build(&a);
    let (_, _, second) = build(&b);
    assert!(std::fs::read(first).unwrap() == std::fs::read(second).unwrap());
}
