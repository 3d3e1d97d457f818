//! The distribution boundary, proven by a second layer set: `layers/debian-forky` (Debian's
//! next release on this mirror: systemd 262, kernel 7.2, a split kernel package, an expired
//! Release file, an os-release without VERSION_ID) builds with configuration only, its
//! kernel and initrd boot under qemu to the real trixie root of tests/e2e/real_root.rs (the
//! root is independent of the initrd), and its signed network extension is merged in the
//! booted initrd.

mod e2e;
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use e2e::*;

/// What the boots need: the build's, and the real root's disk.
const BOOT_TOOLS: &[&str] = &["podman", "qemu-system-x86_64", "tar", "mke2fs", "sfdisk"];

fn forky_set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layers/debian-forky")
}

/// The forky set with its network extension, signed with a `strata keygen` key, built once
/// from an empty cache.
fn built() -> &'static SignedBuild {
    static BUILT: OnceLock<SignedBuild> = OnceLock::new();
    BUILT.get_or_init(|| signed_build("strata-e2e-forky-", &forky_set(), None))
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (forky) (run with --include-ignored; ci/test.sh does)"]
fn without_allow_expired_release_the_error_says_what_to_set() {
    let _s = serial();
    require_tools(&["podman"]);
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir_all(&set).unwrap();
    let base = std::fs::read_to_string(forky_set().join("base.toml")).unwrap();
    assert!(
        base.contains("\nallow-expired-release = true\n"),
        "the forky set accepts its expired Release file"
    );
    std::fs::write(
        set.join("base.toml"),
        base.replace("\nallow-expired-release = true\n", "\n"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let o = build(&set, &cache, &dir.path().join("out"), &[]);
    assert!(
        !o.status.success(),
        "an expired Release file must not be accepted silently"
    );
    let err = stderr(&o);
    assert!(err.contains("dists/forky/InRelease expired on"), "{err}");
    assert!(
        err.contains("set `allow-expired-release = true` in [distribution]"),
        "{err}"
    );
    let index = std::fs::read_to_string(cache.join("oci/index.json")).unwrap_or_default();
    assert!(!index.contains("strata.base."), "nothing is stored: {index}");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (forky), qemu-system-x86_64, tar, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn forky_boots_the_real_trixie_root() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let b = built();
    let p = products(&b.out);
    let kernel = p["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "kernel")
        .unwrap();
    assert!(
        kernel["version"].as_str().unwrap().starts_with("7."),
        "forky's kernel: {kernel}"
    );
    // The root is independent of the initrd: forky's kernel and initrd boot trixie's root.
    let booted = real_root::boot_root(
        &product_file(&b.out, "kernel"),
        &product_file(&b.out, "initrd"),
        &[&real_root::real_root_disk()],
        &real_root::cmdline_by_uuid(),
        Duration::from_secs(600),
    );
    let systemd = booted
        .console
        .lines()
        .find(|l| l.contains("systemd 26") && l.contains("running in system mode"))
        .unwrap_or_else(|| panic!("forky's systemd did not start:\n{}", tail(&booted.console)));
    eprintln!("{systemd}");
    let m = booted.reached();
    booted.switch_at();
    assert_eq!(
        (m.source.as_str(), m.fstype.as_str(), m.uuid.as_str()),
        ("/dev/vda1", "ext4", real_root::ROOT_UUID),
        "{}",
        m.line
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (forky), qemu-system-x86_64, tar, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn forky_merges_its_signed_network_extension() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let b = built();
    let image = b.out.join("network.sysext.raw");
    // Merged in forky's initrd, then on to trixie's real root.
    let booted = extra::boot_with(&b.out, &image);
    extra::assert_merged(&booted);
    // The extension-release carries ID only: forky's os-release has no VERSION_ID.
    let listing = std::process::Command::new(support::tool("unsquashfs"))
        .arg("-cat")
        .arg(extract_root(&image, dir_for(&b.out)))
        .arg("usr/lib/extension-release.d/extension-release.network")
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "unsquashfs: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let release = String::from_utf8_lossy(&listing.stdout);
    assert!(
        release.contains("ID=debian") && !release.contains("VERSION_ID"),
        "{release}"
    );
}

/// A scratch directory beside the build's products.
fn dir_for(out: &Path) -> PathBuf {
    let d = out.with_file_name("scratch");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The root (data) partition of a DDI, extracted to a file with `sfdisk --json` offsets.
fn extract_root(image: &Path, dir: PathBuf) -> PathBuf {
    let out = std::process::Command::new(support::tool("sfdisk"))
        .arg("--json")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let part = &table["partitiontable"]["partitions"][0];
    let (start, size) = (
        part["start"].as_u64().unwrap() * 512,
        part["size"].as_u64().unwrap() * 512,
    );
    let data = std::fs::read(image).unwrap();
    let path = dir.join("root.squashfs");
    std::fs::write(&path, &data[start as usize..(start + size) as usize]).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// The storage extension on forky: systemd 262 merges it natively (systemd-sysext-initrd.service,
// before cryptsetup-pre.target) and restarts cryptsetup.target (EXTENSION_RESTART_UNITS=),
// with no strata-sysext-requeue.service.
// ---------------------------------------------------------------------------------------------

/// What systemd's password agent prints on the console for a LUKS volume.
const LUKS_PROMPT: &str = "Please enter passphrase for disk";

/// The forky initrd followed by the member systemd-stub would add: the storage extension, and
/// a drop-in that copies systemd-sysext-initrd.service's log to the console.
fn forky_initrd_with_storage(out: &Path, dir: &Path) -> PathBuf {
    e2e::extra::initrd_with(
        out,
        &[&out.join("storage.sysext.raw")],
        &[(
            "etc/systemd/system/systemd-sysext-initrd.service.d/console.conf",
            "[Service]\nEnvironment=SYSTEMD_LOG_TARGET=console\nStandardError=journal+console\n",
        )],
        dir,
    )
}

/// Where `needle` first shows on `console`, or the test fails naming it.
fn at(console: &str, needle: &str) -> usize {
    console
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} never showed on the console:\n{}", tail(console)))
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (forky), qemu-system-x86_64, sfdisk, blkid, cryptsetup (run with --include-ignored; ci/test.sh does)"]
fn forky_storage_extension_unlocks_a_luks_root_merged_natively() {
    let _s = serial();
    require_tools(&["podman", "qemu-system-x86_64", "tar", "sfdisk", "blkid", "cryptsetup"]);
    let b = built();
    // The base is forky's own: systemd-sysext-initrd.service and no strata-sysext-requeue.
    let initrd = std::fs::read(product_file(&b.out, "initrd")).unwrap();
    let base = zstd::decode_all(zstd_members(&initrd)[0]).unwrap();
    let has = |path: &str| base.windows(path.len()).any(|w| w == path.as_bytes());
    assert!(
        has("usr/lib/systemd/system/systemd-sysext-initrd.service"),
        "forky's systemd has no systemd-sysext-initrd.service"
    );
    assert!(
        !has("strata-sysext-requeue"),
        "the forky initrd carries strata's requeue workaround"
    );

    let disk = e2e::disks::luks_root();
    let dir = tempfile::tempdir().unwrap();
    let append = e2e::real_root::cmdline(
        &format!("rd.luks.uuid={u} root=/dev/mapper/luks-{u}", u = disk.luks_uuid),
        "ro",
    );
    let booted = e2e::boot::boot(
        &product_file(&b.out, "kernel"),
        &forky_initrd_with_storage(&b.out, dir.path()),
        &[&disk.image],
        &append,
        std::time::Duration::from_secs(600),
        &e2e::boot::Extra {
            answers: vec![(LUKS_PROMPT.into(), disk.passphrase.into())],
            ..Default::default()
        },
    );
    let console = &booted.console;
    let m = booted.reached();
    assert_eq!(m.source, format!("/dev/mapper/luks-{}", disk.luks_uuid), "{}", m.line);
    assert_eq!(
        (m.fstype.as_str(), m.uuid.as_str(), m.stack.as_str()),
        ("ext4", disk.fs_uuid, "crypt,part,disk"),
        "{}",
        m.line
    );
    // Merged by systemd 262's own unit (only its log goes to the console), before the
    // cryptsetup unit the extension's generator made (started by EXTENSION_RESTART_UNITS=)
    // asked for the passphrase; strata's workaround never ran. The status lines shorten the
    // unit's name to "systemd-sysext-initrd.ser…".
    let started = at(console, "systemd-sysext-initrd.ser");
    let merged = at(console, "Merged extensions into '/usr'");
    let prompt = at(console, LUKS_PROMPT);
    assert!(
        started < merged && merged < prompt,
        "merge out of order:\n{}",
        tail(console)
    );
    assert!(!console.contains("strata-sysext-requeue"), "{}", tail(console));
    // The order of the steps on the console, for docs/sysext-initrd.md.
    let steps = [
        "sysext-initrd",
        "Merged extensions",
        "udev-trigger",
        "systemd-cryptsetup@",
        LUKS_PROMPT,
        "initrd-root-device",
        "initrd-switch-root.service",
    ];
    for line in console
        .lines()
        .filter(|l| !l.contains("Job ") && steps.iter().any(|s| l.contains(s)))
    {
        eprintln!("console: {line}");
    }
}
