//! End to end for system extensions: the default set's five extensions, built by the real
//! `strata` with a key from `strata keygen`, judged by the reference tools (`sfdisk`,
//! `veritysetup`, `unsquashfs`, trixie's `systemd-dissect`) and by systemd itself in the
//! initrd booted under qemu, which merges the signed image and refuses a tampered or
//! unsigned one; each of those boots goes on to the real trixie root of
//! tests/e2e/real_root.rs.
//!
//! Needs what tests/e2e_build.rs needs plus sfdisk, veritysetup, unsquashfs, openssl, tar and
//! fsck.erofs: those tests are `#[ignore]`d and run with `--include-ignored` (as ci/test.sh
//! does), where a missing tool fails the test.

mod e2e;
mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use e2e::*;

/// Each curated extension and files it must carry.
const CURATED: [(&str, &[&str]); 5] = [
    (
        "graphics",
        &["usr/sbin/plymouthd", "usr/bin/loadkeys", "usr/share/keymaps"],
    ),
    (
        "hwe",
        &["usr/libexec/bluetooth/bluetoothd", "usr/bin/lsusb", "usr/lib/firmware"],
    ),
    ("network", &["usr/sbin/sshd"]),
    ("sound", &["usr/bin/espeakup", "usr/bin/amixer", "usr/share/alsa/ucm2"]),
    (
        "storage",
        &[
            "usr/sbin/cryptsetup",
            "usr/sbin/lvm",
            "usr/sbin/mdadm",
            "usr/sbin/iscsiadm",
            "usr/sbin/mount.nfs",
            "usr/bin/clevis",
        ],
    ),
];

/// `strata keygen`, then the default set with all its extensions, signed, from an empty cache
/// (the reproducibility tests below compare it with a second build from another one).
fn signed() -> &'static SignedBuild {
    static SIGNED: OnceLock<SignedBuild> = OnceLock::new();
    SIGNED.get_or_init(|| signed_build("strata-e2e-sysext-", &default_set(), None))
}

/// The default base with the network extension plus `line` in its table, built signed from
/// the signed build's cache into `dir/out`.
fn build_network_variant(s: &SignedBuild, dir: &Path, line: &str) -> PathBuf {
    let text = std::fs::read_to_string(default_set().join("network.toml")).unwrap() + line + "\n";
    let set = set_with_extension(dir, "network", &text);
    let out = dir.join("out");
    assert_ok(
        &build_with(&set, &s.cache, &out, &[], &s.args(&[])),
        &format!("build with `{line}`"),
    );
    out
}

fn sysext_entry(out: &Path, name: &str) -> serde_json::Value {
    let file = format!("{name}.sysext.raw");
    products(out)["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "sysext" && p["file"] == file.as_str())
        .unwrap_or_else(|| panic!("no sysext {file} in products.json"))
        .clone()
}

/// The partitions of a GPT image as sfdisk reads them: (type GUID, start byte, size).
fn partitions(image: &Path) -> Vec<(String, u64, u64)> {
    let o = Command::new(support::tool("sfdisk"))
        .arg("--json")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sfdisk --json {}: {}",
        image.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap().to_lowercase(),
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect()
}

fn extract(image: &Path, (start, size): (u64, u64), to: &Path) {
    let mut f = std::fs::File::open(image).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start)).unwrap();
    let mut data = vec![0; size as usize];
    f.read_exact(&mut data).unwrap();
    std::fs::write(to, data).unwrap();
}

/// The data partition of `image`, extracted into `dir`, after `veritysetup verify` of it and
/// its hash partition with `root_hash` (the one products.json lists).
fn verity_verified_data(image: &Path, parts: &[(String, u64, u64)], root_hash: &str, dir: &Path) -> PathBuf {
    let stem = image.file_name().unwrap().to_string_lossy();
    let (data, hash) = (dir.join(format!("{stem}.data")), dir.join(format!("{stem}.hash")));
    extract(image, (parts[0].1, parts[0].2), &data);
    extract(image, (parts[1].1, parts[1].2), &hash);
    let (ok, text) = run(Command::new(support::tool("veritysetup"))
        .arg("verify")
        .arg(&data)
        .arg(&hash)
        .arg(root_hash));
    assert!(
        ok,
        "{}: veritysetup verify with the root hash of products.json: {text}",
        image.display()
    );
    data
}

/// The signature partition of `image` (systemd's JSON: rootHash, signature) checked with
/// `openssl cms -verify` against `cert`, over the hex root hash as systemd passes it.
fn verify_signature(image: &Path, part: &(String, u64, u64), root_hash: &str, cert: &Path, dir: &Path) {
    use base64::Engine as _;
    let sig = dir.join("sig.json");
    extract(image, (part.1, part.2), &sig);
    let raw = std::fs::read(&sig).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let json: serde_json::Value = serde_json::from_str(text.trim_end_matches('\0').trim_end()).unwrap();
    assert_eq!(
        json["rootHash"],
        root_hash,
        "{}: the signature is for another root hash",
        image.display()
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(json["signature"].as_str().unwrap())
        .unwrap();
    std::fs::write(dir.join("sig.der"), der).unwrap();
    std::fs::write(dir.join("roothash.txt"), root_hash).unwrap();
    let (ok, text) = run(Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "der",
            "-in",
            "sig.der",
            "-content",
            "roothash.txt",
            "-nointern",
        ])
        .arg("-certfile")
        .arg(cert)
        .arg("-CAfile")
        .arg(cert)
        .current_dir(dir));
    assert!(
        ok,
        "{}: openssl cms -verify of the root hash signature: {text}",
        image.display()
    );
}

/// The path of an `unsquashfs -lls -d ""` line (`-rw-r--r-- root/root 91 2026-11-21 09:15
/// /usr/x`, symlinks with ` -> target`).
fn listed_path(line: &str) -> Option<&str> {
    let l = line.split(" -> ").next()?;
    l.find(" /").map(|i| &l[i + 1..])
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk, veritysetup, unsquashfs, openssl, the trixie base image for systemd-dissect (run with --include-ignored; ci/test.sh does)"]
fn curated_extensions_pass_the_reference_tools() {
    let _s = serial();
    require_tools(&["podman", "sfdisk", "veritysetup", "unsquashfs", "openssl"]);
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    for (name, expected) in CURATED {
        let entry = sysext_entry(&s.out, name);
        assert_eq!(entry["signed"], true, "{name}: {entry}");
        let root_hash = entry["root_hash"].as_str().unwrap().to_string();
        let image = s.out.join(entry["file"].as_str().unwrap());
        let parts = partitions(&image);
        let types: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            types,
            [
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
                "41092b05-9fc8-4523-994f-2def0408b176"
            ],
            "{name}: not the x86-64 root, root-verity and root-verity-sig partition types"
        );
        let data = verity_verified_data(&image, &parts, &root_hash, dir.path());

        let (ok, listing) = run(Command::new("unsquashfs").args(["-lls", "-d", ""]).arg(&data));
        assert!(ok, "{name}: unsquashfs -lls: {listing}");
        let paths: Vec<&str> = listing.lines().filter_map(listed_path).collect();
        let release = format!("/usr/lib/extension-release.d/extension-release.{name}");
        for path in expected.iter().map(|p| format!("/{p}")).chain([release.clone()]) {
            assert!(paths.contains(&path.as_str()), "{name}: no {path} in the image");
        }
        let outside: Vec<&&str> = paths
            .iter()
            .filter(|p| !(p.starts_with("/usr") || p.starts_with("/opt")))
            .collect();
        assert!(outside.is_empty(), "{name}: paths outside /usr and /opt: {outside:?}");
        let (ok, text) = run(Command::new("unsquashfs").args(["-cat"]).arg(&data).arg(&release[1..]));
        assert!(ok, "{name}: unsquashfs -cat: {text}");
        for line in [
            "ID=debian",
            "VERSION_ID=13",
            "ARCHITECTURE=x86-64",
            "SYSEXT_SCOPE=initrd",
            "EXTENSION_RELOAD_MANAGER=1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{name}: extension-release lacks {line}:\n{text}"
            );
        }
        verify_signature(&image, &parts[2], &root_hash, &s.cert, dir.path());
        let (ok, text) =
            support::dissect::validate(&image, &[&format!("--root-hash={root_hash}"), support::dissect::STRICT]);
        assert!(
            ok,
            "{name}: systemd-dissect --validate under the strict sysext policy:\n{text}"
        );
    }
    // The graphics extension leaves out the initramfs-tools that plymouth pulls in.
    let graphics = s.out.join("graphics.sysext.raw");
    let parts = partitions(&graphics);
    let data = dir.path().join("g.data");
    extract(&graphics, (parts[0].1, parts[0].2), &data);
    let (_, listing) = run(Command::new("unsquashfs").args(["-lls", "-d", ""]).arg(&data));
    assert!(
        !listing
            .lines()
            .filter_map(listed_path)
            .any(|p| p == "/usr/sbin/mkinitramfs"),
        "mkinitramfs is in the graphics extension"
    );
    // What is not in an image is listed, not dropped silently.
    let network = sysext_entry(&s.out, "network");
    let left_out: Vec<&str> = network["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(left_out.contains(&"etc/ssh/sshd_config"), "{left_out:?}");
    assert!(
        !left_out.iter().any(|p| p.starts_with("etc/ssh/ssh_host_")),
        "host keys must never be built into a layer: {left_out:?}"
    );
}

// ---- merged (or refused) by systemd in the booted initrd, then the real root --------------
//
// Each boot delivers one image as systemd-stub does, runs the extension's `sshd -V` in the
// initrd (extra::RAN) and goes on to the real trixie root (no sshd there): the check unit's
// line proves what the initrd did with the image, the root's marker that the boot still
// reaches the real root with systemd as PID 1 and no failed unit but, after a refusal, the
// initrd's systemd-sysext.service.

/// What the boots need: the build's, and the real root's disk.
const BOOT_TOOLS: &[&str] = &["podman", "qemu-system-x86_64", "tar", "mke2fs", "sfdisk"];

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, tar, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn signed_extension_is_merged_in_the_booted_initrd() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let s = signed();
    let booted = extra::boot_with(&s.out, &s.out.join("network.sysext.raw"));
    assert!(
        booted.console.contains("Userspace PKCS#7 validation succeeded"),
        "no signature check:\n{}",
        tail(&booted.console)
    );
    extra::assert_merged(&booted);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, tar, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn tampered_extension_is_refused_by_dm_verity() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    let image = s.out.join("network.sysext.raw");
    let (_, start, size) = partitions(&image)[0].clone();
    let mut bytes = std::fs::read(&image).unwrap();
    // A byte of the data partition that squashfs itself never reads (past its bytes_used,
    // superblock offset 40), so only dm-verity can notice it.
    let used = u64::from_le_bytes(bytes[start as usize + 40..start as usize + 48].try_into().unwrap());
    assert!(
        used < size,
        "the squashfs fills its partition; pick another byte to flip"
    );
    let at = (start + size - 1) as usize;
    bytes[at] ^= 0x5a;
    let tampered = dir.path().join("network.sysext.raw");
    std::fs::write(&tampered, bytes).unwrap();
    let booted = extra::boot_with(&s.out, &tampered);
    // Proves: dm-verity refuses the image, nothing is merged, no sshd runs in the initrd, and
    // the boot still reaches the real root without the extension.
    extra::assert_refused(&booted, "Verity device detected corruption");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, tar, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn unsigned_extension_is_refused_by_the_signed_initrd() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let s = signed();
    // The same extension built without a key (its layer comes from the cache).
    let out = s.dir.join("unsigned");
    let o = build_with(&default_set(), &s.cache, &out, &[], &["--extension", "network"]);
    assert_ok(&o, "unsigned build");
    assert!(
        stderr(&o).contains("the extension images are unsigned"),
        "no warning about unsigned images:\n{}",
        stderr(&o)
    );
    assert_eq!(sysext_entry(&out, "network")["signed"], false);
    let booted = extra::boot_with(&s.out, &out.join("network.sysext.raw"));
    // Proves: the signed initrd's image policy refuses an unsigned image, nothing is merged,
    // and the boot still reaches the real root without the extension.
    extra::assert_refused(&booted, "'signed+absent' was required");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, tar, mke2fs, sfdisk, veritysetup, fsck.erofs (run with --include-ignored; ci/test.sh does)"]
fn erofs_extension_is_checked_and_merged_in_the_booted_initrd() {
    let _s = serial();
    require_tools(&[BOOT_TOOLS, &["veritysetup", "fsck.erofs"]].concat());
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    let out = build_network_variant(s, dir.path(), "filesystem = \"erofs\"");
    let image = out.join("network.sysext.raw");
    let root_hash = sysext_entry(&out, "network")["root_hash"].as_str().unwrap().to_string();
    let parts = partitions(&image);
    let data = verity_verified_data(&image, &parts, &root_hash, dir.path());
    let bytes = std::fs::read(&data).unwrap();
    assert_eq!(
        bytes[1024..1028],
        0xE0F5_E1E2u32.to_le_bytes(),
        "the data partition is not an erofs"
    );
    let (ok, text) = run(Command::new("fsck.erofs").arg(&data));
    assert!(ok, "fsck.erofs: {text}");
    let booted = extra::boot_with(&s.out, &image);
    extra::assert_merged(&booted);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk, unsquashfs, openssl (run with --include-ignored; ci/test.sh does)"]
fn confext_carries_the_extensions_etc() {
    let _s = serial();
    require_tools(&["podman", "sfdisk", "unsquashfs", "openssl"]);
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    let out = build_network_variant(s, dir.path(), "confext = true");
    let entry = products(&out)["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "confext")
        .expect("a confext product")
        .clone();
    assert_eq!(
        (entry["file"].as_str(), entry["signed"].as_bool()),
        (Some("network.confext.raw"), Some(true))
    );
    let image = out.join("network.confext.raw");
    let parts = partitions(&image);
    assert_eq!(
        parts.len(),
        3,
        "a signed confext has data, verity and signature partitions"
    );
    verify_signature(
        &image,
        &parts[2],
        entry["root_hash"].as_str().unwrap(),
        &s.cert,
        dir.path(),
    );
    let data = dir.path().join("confext.data");
    extract(&image, (parts[0].1, parts[0].2), &data);
    let (ok, listing) = run(Command::new("unsquashfs").args(["-lls", "-d", ""]).arg(&data));
    assert!(ok, "unsquashfs: {listing}");
    let paths: Vec<&str> = listing.lines().filter_map(listed_path).collect();
    for p in [
        "/etc/ssh/sshd_config",
        "/etc/extension-release.d/extension-release.network",
    ] {
        assert!(paths.contains(&p), "no {p} in the confext");
    }
    assert!(
        paths.iter().all(|p| p.starts_with("/etc")),
        "a confext holds /etc only: {paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("/etc/ssh/ssh_host_")),
        "host keys in the confext"
    );
    let (_, release) = run(Command::new("unsquashfs")
        .arg("-cat")
        .arg(&data)
        .arg("etc/extension-release.d/extension-release.network"));
    assert!(release.lines().any(|l| l == "CONFEXT_SCOPE=initrd"), "{release}");
    let left_out = &sysext_entry(&out, "network")["left_out"];
    assert!(
        !left_out
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("etc/")),
        "etc is in the confext: {left_out}"
    );
}

// ---- reproducible, cached ---------------------------------------------------------------

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn two_builds_from_empty_caches_are_byte_identical() {
    let _s = serial();
    require_tools(&["podman"]);
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sign = s.args(&["--extension", "network"]);
    let o = build_with(&default_set(), &dir.path().join("cache"), &out, &[], &sign);
    assert_ok(&o, "second clean build");
    for file in ["vmlinuz", "initrd.cpio.zst", "network.sysext.raw"] {
        let (a, c) = (s.out.join(file), out.join(file));
        let st = Command::new("cmp").arg(&a).arg(&c).status().unwrap();
        assert!(
            st.success(),
            "{file} differs between two clean builds: cmp {} {}",
            a.display(),
            c.display()
        );
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn noop_rebuild_with_extensions_starts_no_container() {
    let _s = serial();
    require_tools(&["podman"]);
    let s = signed();
    let out = s.dir.join("noop");
    let sign = s.args(&[]);
    let o = build_with(
        &default_set(),
        &s.cache,
        &out,
        &[("CONTAINER_HOST", "unix:///nonexistent/strata-e2e.sock")],
        &sign,
    );
    assert_ok(&o, "no-op rebuild");
    assert!(stderr(&o).contains("built=[]"), "{}", stderr(&o));
    for (name, _) in CURATED {
        let file = format!("{name}.sysext.raw");
        assert_eq!(
            std::fs::read(s.out.join(&file)).unwrap(),
            std::fs::read(out.join(&file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, the loopback registry on 127.0.0.1:5000 (run with --include-ignored; ci/test.sh does)"]
fn extension_layers_travel_through_the_registry_cache() {
    let _s = serial();
    require_tools(&["podman"]);
    let addr = support::registry();
    let s = signed();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let repo = format!("{addr}/strata-test/ext-cache-{}-{nanos}", std::process::id());
    let sign = s.args(&["--extension", "network"]);
    // The first machine publishes its layers (all cached locally: no container).
    let dead = [("CONTAINER_HOST", "unix:///nonexistent/strata-e2e.sock")];
    let o = build_with(
        &default_set(),
        &s.cache,
        &s.dir.join("pub"),
        &dead,
        &[&sign[..], &["--cache-to", &repo]].concat(),
    );
    assert_ok(&o, "build --cache-to");
    // A second machine with an empty store and no engine builds the same products from it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = build_with(
        &default_set(),
        &dir.path().join("cache"),
        &out,
        &dead,
        &[&sign[..], &["--cache-from", &repo]].concat(),
    );
    assert_ok(&o, "build --cache-from without an engine");
    assert!(
        stderr(&o).contains("pulled=[\"base\", \"kernel\", \"ext-network\"]"),
        "{}",
        stderr(&o)
    );
    for file in ["initrd.cpio.zst", "network.sysext.raw"] {
        assert_eq!(
            std::fs::read(s.out.join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
            "{file} differs"
        );
    }

    // The registry turns hostile: under the network layer's tag it now serves that layer
    // plus `usr/bin/backdoor`, with the same cache key annotation. A third machine with the
    // same trusted certificate must not take it, so nothing of it gets signed.
    let record = strata::products::read(&s.dir.join("pub"))
        .unwrap()
        .layers
        .into_iter()
        .find(|l| l.kind == "ext-network")
        .expect("the build lists its network layer");
    serve_backdoored_layer(&addr, &repo, &s.cache, &record);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = build_with(
        &default_set(),
        &dir.path().join("cache"),
        &out,
        &dead,
        &[&sign[..], &["--cache-from", &repo]].concat(),
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "a backdoored network layer was used:\n{err}");
    assert!(
        err.contains("remote cache entry refused") && err.contains("is not a valid signature of this layer"),
        "{err}"
    );
    assert!(
        !out.join("network.sysext.raw").exists() && !out.join("products.json").exists(),
        "products were written from a refused layer"
    );
}

/// Put into `repo` under the cache tag of the layer `record` (from the store in `cache`) a
/// manifest whose layer blob is that layer plus `usr/bin/backdoor`; everything else, the
/// cache key annotation included, as the honest manifest has it.
fn serve_backdoored_layer(registry: &str, repo: &str, cache: &Path, record: &strata::products::LayerRecord) {
    use strata::store::image as oci;
    let store = strata::store::Store::open(&cache.join("oci")).unwrap();
    let honest = store.read_blob(&record.manifest).unwrap();
    let m = oci::get_manifest(&store, &record.ref_name()).unwrap().unwrap();
    let (blob, _) = oci::layer_digest(&m.layers()[0]).unwrap();
    let mut entries = oci::read_layer_blob(&store, &blob).unwrap().into_entries();
    entries.push(strata_format::layer::Entry::file(
        "usr/bin/backdoor",
        "#!/bin/sh\nexec sh -i\n",
        0o755,
        0,
    ));
    let evil = strata_format::layer::Layer::from_entries(entries).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let scratch = strata::store::Store::open(scratch.path()).unwrap();
    let b = oci::put_layer_blob(&scratch, &evil).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&honest).unwrap();
    json["layers"][0]["digest"] = b.digest.to_string().into();
    json["layers"][0]["size"] = b.size.into();
    let data = strata::digest::canonical_json(&json);
    let repository = repo.split_once('/').unwrap().1;
    let tag = strata::registry::cache::tag(&record.kind, &record.key);
    let client = strata::registry::Client::new(registry, Default::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        client
            .push_blob(&scratch, repository, &b.descriptor(), &[])
            .await
            .unwrap();
        client
            .put_manifest(repository, &tag, strata::registry::OCI_MANIFEST, data.into())
            .await
            .unwrap();
    });
}

// ---- bad input ---------------------------------------------------------------------------

#[test]
fn bad_keys_are_clear_errors_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let keygen = |name: &str| {
        let d = dir.path().join(name);
        assert_ok(&strata(&["keygen", "-o", d.to_str().unwrap()], &[], &[]), "keygen");
        (d.join("sysext.key"), d.join("sysext.crt"))
    };
    let (key_a, _) = keygen("a");
    let (_, cert_b) = keygen("b");
    let o = build_with(
        &default_set(),
        &cache,
        &out,
        &[],
        &["--key", key_a.to_str().unwrap(), "--cert", cert_b.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("do not go together"), "{}", stderr(&o));

    let o = build_with(&default_set(), &cache, &out, &[], &["--key", key_a.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cert"), "{}", stderr(&o));

    let missing = dir.path().join("nope.key");
    let o = build_with(
        &default_set(),
        &cache,
        &out,
        &[],
        &["--key", missing.to_str().unwrap(), "--cert", cert_b.to_str().unwrap()],
    );
    assert!(
        stderr(&o).contains(&format!("reading the signing key {}", missing.display())),
        "{}",
        stderr(&o)
    );
    assert!(!cache.exists() && !out.exists(), "nothing may be written for bad keys");
}

/// An EC key (made by openssl; strata signs with RSA only) is a clear error too.
#[test]
#[ignore = "reference tools: needs openssl (run with --include-ignored; ci/test.sh does)"]
fn an_ec_key_is_a_clear_error_before_anything_is_built() {
    let openssl = support::tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let keys = dir.path().join("keys");
    assert_ok(&strata(&["keygen", "-o", keys.to_str().unwrap()], &[], &[]), "keygen");
    let cert = keys.join("sysext.crt");
    let ec = dir.path().join("ec.key");
    let (ok, text) = run(Command::new(openssl)
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&ec));
    assert!(ok, "openssl genpkey: {text}");
    let o = build_with(
        &default_set(),
        &cache,
        &out,
        &[],
        &["--key", ec.to_str().unwrap(), "--cert", cert.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("loading the signing key {}", ec.display())),
        "{err}"
    );
    assert!(!cache.exists() && !out.exists(), "nothing may be written for bad keys");
}

/// A layer set with the default base and one extension file.
fn set_with_extension(dir: &Path, name: &str, text: &str) -> PathBuf {
    let set = dir.join("set");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(default_set().join("base.toml"), set.join("base.toml")).unwrap();
    std::fs::write(set.join(format!("{name}.toml")), text).unwrap();
    set
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn extensions_that_add_nothing_or_replace_base_files_are_refused() {
    let _s = serial();
    require_tools(&["podman"]);
    let s = signed();
    let dir = tempfile::tempdir().unwrap();
    // Every package already in the base: nothing to merge.
    let set = set_with_extension(dir.path(), "nothing", "[extension]\npackages = [\"bash\", \"kmod\"]\n");
    let out = dir.path().join("out");
    let o = build_with(&set, &s.cache, &out, &[], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("extension `nothing`") && err.contains("installs nothing under /usr or /opt"),
        "{err}"
    );

    // A file that would shadow a base file (the base's os-release, from base-files).
    let set2 = dir.path().join("two");
    std::fs::create_dir_all(&set2).unwrap();
    let set2 = set_with_extension(
        &set2,
        "shadow",
        "[extension]\npackages = [\"less\"]\nfiles = [{ source = \"os-release\", path = \"usr/lib/os-release\" }]\n",
    );
    std::fs::write(set2.join("os-release"), "ID=evil\n").unwrap();
    let o = build_with(&set2, &s.cache, &out, &[], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("changes base files: /usr/lib/os-release (package base-files)"),
        "{err}"
    );
    let index = std::fs::read_to_string(s.cache.join("oci/index.json")).unwrap();
    assert!(
        !index.contains("strata.ext-nothing.") && !index.contains("strata.ext-shadow."),
        "a refused extension was stored"
    );
    assert!(
        !out.join("products.json").exists(),
        "products were written for a refused extension"
    );
}
