//! End to end: the default set's initrd boots the real root on the storage stacks people
//! install on (issue 10), each boot under qemu (TCG).
//!
//! These tests need podman (configured by ci/setup.sh), the Debian mirror, qemu, sfdisk, blkid,
//! cryptsetup and debugfs: they are `#[ignore]`d and run with `--include-ignored` (as
//! ci/test.sh does), where a missing tool fails the test. They run one at a time.

mod e2e;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::disks::{self, LuksDisk};
use e2e::real_root::RootMarker;
use e2e::*;

// ---------------------------------------------------------------------------------------------
// Disks made by systemd-repart (xfs by LABEL, btrfs subvolume, LUKS2, key disk): what the
// reference tools read in them, and boots of the roots that need no extension.
// ---------------------------------------------------------------------------------------------

const DISK_TOOLS: &[&str] = &["podman", "tar", "sfdisk", "blkid", "cryptsetup", "debugfs"];

/// The GPT type of a root partition for x86-64 (what repart's `Type=root` means there).
const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// `sfdisk -J` of the one partition of `image`.
fn gpt_partition(image: &Path) -> serde_json::Value {
    let out = Command::new(support::tool("sfdisk"))
        .arg("-J")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    table["partitiontable"]["partitions"][0].clone()
}

/// `debugfs -R REQUEST` on the ext4 filesystem of the one partition of `image`.
fn debugfs(image: &Path, request: &str) -> String {
    let (offset, _) = disks::partition(image);
    let out = Command::new(support::tool("debugfs"))
        .args(["-R", request])
        .arg(format!("{}?offset={offset}", image.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs -R {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn xfs_and_btrfs_disks_carry_the_labels_the_command_lines_name() {
    let _s = serial();
    require_tools(DISK_TOOLS);
    for disk in [disks::xfs_root(), disks::btrfs_root()] {
        let part = gpt_partition(&disk.image);
        assert_eq!(part["type"], ROOT_X86_64, "{}: {part}", disk.image.display());
        assert_eq!(
            part["uuid"].as_str().unwrap().to_lowercase(),
            disk.partuuid,
            "{}: {part}",
            disk.image.display()
        );
        assert_eq!(part["start"], 2048, "{}: {part}", disk.image.display());
        let probe = disks::probe(&disk.image);
        assert_eq!(probe.get("TYPE").map(String::as_str), Some(disk.fstype), "{probe:?}");
        assert_eq!(probe.get("LABEL").map(String::as_str), Some(disk.label), "{probe:?}");
        assert_eq!(probe.get("UUID"), Some(&disk.fs_uuid), "{probe:?}");
        let size = std::fs::metadata(&disk.image).unwrap().len();
        eprintln!("{} {} MiB, fs UUID {}", disk.image.display(), size >> 20, disk.fs_uuid);
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn btrfs_disk_holds_the_root_only_in_subvolume_at() {
    let _s = serial();
    require_tools(DISK_TOOLS);
    let disk = disks::btrfs_root();
    // The root tree names one subvolume, @ (id 256), under the top level (id 5)…
    let roots = disks::btrfs_dump_tree(&disk, "root");
    let refs: Vec<&str> = roots.lines().filter(|l| l.contains("root ref key")).collect();
    assert_eq!(refs.len(), 1, "subvolumes: {refs:?}");
    assert!(
        refs[0].trim().ends_with(&format!("name {}", disks::BTRFS_SUBVOL)),
        "{refs:?}"
    );
    // …the top level holds nothing but @, so only `rootflags=subvol=@` finds the OS…
    let names = |dump: &str| -> Vec<String> {
        let mut v: Vec<String> = dump
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name: "))
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(
        names(&disks::btrfs_dump_tree(&disk, "5")),
        [disks::BTRFS_SUBVOL],
        "the top level"
    );
    // …and @ holds the real root.
    let root = names(&disks::btrfs_dump_tree(&disk, "256"));
    for entry in ["etc", "usr", "os-release", "fstab", "strata-marker"] {
        assert!(root.iter().any(|n| n == entry), "no {entry} in @: {root:?}");
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk, blkid, cryptsetup (run with --include-ignored; ci/test.sh does)"]
fn luks_disk_has_one_pbkdf2_slot_that_the_passphrase_opens() {
    let _s = serial();
    require_tools(DISK_TOOLS);
    let disk: LuksDisk = disks::luks_root();
    let probe = disks::probe(&disk.image);
    assert_eq!(probe.get("TYPE").map(String::as_str), Some("crypto_LUKS"), "{probe:?}");
    assert_eq!(probe.get("VERSION").map(String::as_str), Some("2"), "{probe:?}");
    assert_eq!(probe.get("UUID").map(String::as_str), Some(disk.luks_uuid), "{probe:?}");
    let dump = disks::luks_dump(&disk);
    let keyslots = &dump[dump.find("Keyslots:").expect("a Keyslots section")..dump.find("Tokens:").unwrap()];
    assert!(keyslots.contains("PBKDF:      pbkdf2"), "{keyslots}");
    assert!(
        keyslots.contains(&format!("Iterations: {}\n", disks::PBKDF2_ITERATIONS)),
        "{keyslots}"
    );
    assert!(!dump.contains("argon2"), "a slot still uses Argon2:\n{dump}");
    assert!(
        dump.contains("offset: 16777216 [bytes]"),
        "the data starts after 16 MiB:\n{dump}"
    );
    // The key file's bytes are the passphrase as typed, without a newline.
    assert_eq!(std::fs::read(&disk.key_file).unwrap(), disk.passphrase.as_bytes());
    let mode = std::fs::metadata(&disk.key_file).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    assert!(
        disks::opens_with(&disk, disk.passphrase.as_bytes()),
        "the passphrase does not open {}",
        disk.image.display()
    );
    assert!(!disks::opens_with(&disk, b"not-the-passphrase"));
    assert!(!disks::opens_with(&disk, format!("{}\n", disk.passphrase).as_bytes()));
    let size = std::fs::metadata(&disk.image).unwrap().len();
    eprintln!("{} {} MiB", disk.image.display(), size >> 20);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, sfdisk, blkid, debugfs (run with --include-ignored; ci/test.sh does)"]
fn key_disk_holds_the_key_file_under_its_label() {
    let _s = serial();
    require_tools(DISK_TOOLS);
    let disk = disks::key_disk();
    let probe = disks::probe(&disk.image);
    assert_eq!(probe.get("TYPE").map(String::as_str), Some("ext4"), "{probe:?}");
    assert_eq!(probe.get("LABEL").map(String::as_str), Some(disk.label), "{probe:?}");
    let key = debugfs(&disk.image, &format!("cat {}", disk.key_path));
    assert_eq!(key, disks::PASSPHRASE, "{} on {}", disk.key_path, disk.image.display());
    let stat = debugfs(&disk.image, &format!("stat {}", disk.key_path));
    assert!(stat.contains("Mode:  0600"), "{stat}");
}

const BOOT_TOOLS: &[&str] = &["podman", "qemu-system-x86_64", "tar", "sfdisk", "blkid", "cryptsetup"];

/// Boot the shared signed build's kernel, with its initrd plus `extensions` in the member
/// systemd-stub would add, `disks` and `append`, until the root's marker and power-off.
fn boot_with(extensions: &[&str], disks: &[&Path], append: &str, extra: &boot::Extra) -> real_root::Booted {
    let out = &storage::signed().out;
    let dir = tempfile::tempdir().unwrap();
    let initrd = if extensions.is_empty() {
        product_file(out, "initrd")
    } else {
        let images: Vec<PathBuf> = extensions
            .iter()
            .map(|name| out.join(format!("{name}.sysext.raw")))
            .collect();
        let images: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
        extra::initrd_with(out, &images, &[], dir.path())
    };
    boot::boot(
        &product_file(out, "kernel"),
        &initrd,
        disks,
        append,
        Duration::from_secs(600),
        extra,
    )
}

/// Boot `disk` with the plain initrd (no extension); the root's marker, checked.
fn boot_disk(disk: &Path, append: &str) -> real_root::RootMarker {
    boot_with(&[], &[disk], append, &boot::Extra::default()).reached()
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn xfs_root_by_label_boots() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let disk = disks::xfs_root();
    let m = boot_disk(
        &disk.image,
        &real_root::cmdline(&format!("root=LABEL={}", disk.label), "ro"),
    );
    assert_eq!(
        (m.source.as_str(), m.fstype.as_str()),
        ("/dev/vda1", "xfs"),
        "{}",
        m.line
    );
    assert_eq!(m.uuid, disk.fs_uuid, "{}", m.line);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn btrfs_root_in_a_subvolume_boots() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let disk = disks::btrfs_root();
    let m = boot_disk(
        &disk.image,
        &real_root::cmdline(
            &format!("root=UUID={}", disk.fs_uuid),
            &format!("rootflags=subvol={} ro", disks::BTRFS_SUBVOL),
        ),
    );
    let subvol = format!("subvol=/{}", disks::BTRFS_SUBVOL);
    assert_eq!(m.fstype, "btrfs", "{}", m.line);
    assert_eq!(m.source, format!("/dev/vda1[/{}]", disks::BTRFS_SUBVOL), "{}", m.line);
    assert!(
        m.options.split(',').any(|o| o == subvol),
        "mounted with {subvol}: {}",
        m.line
    );
}

// ---------------------------------------------------------------------------------------------
// LUKS2 roots, unlocked by the storage extension merged in the initrd (trixie's systemd 257
// merges late: strata-sysext-requeue.service starts what the merge added).
// ---------------------------------------------------------------------------------------------

/// What systemd's password agent prints on the console for a LUKS volume.
const PROMPT: &str = "Please enter passphrase for disk";

/// The command line for the LUKS root, as a user writes it.
fn luks_cmdline(disk: &LuksDisk, extra: &str) -> String {
    real_root::cmdline(
        &format!("rd.luks.uuid={u} root=/dev/mapper/luks-{u}", u = disk.luks_uuid),
        extra,
    )
}

/// Booted, the root is the ext4 inside the LUKS volume, through dm-crypt, mapped as
/// systemd-cryptsetup names it for `rd.luks.uuid=` (`luks-UUID`).
fn assert_luks_root(booted: &real_root::Booted, disk: &LuksDisk) {
    assert_luks_root_named(booted, disk, &format!("luks-{}", disk.luks_uuid));
}

/// Booted, the root is the ext4 inside the LUKS volume, mapped as /dev/mapper/`name`.
fn assert_luks_root_named(booted: &real_root::Booted, disk: &LuksDisk, name: &str) {
    let m = booted.reached();
    assert_eq!(m.source, format!("/dev/mapper/{name}"), "{}", m.line);
    assert_eq!(
        (m.fstype.as_str(), m.uuid.as_str(), m.stack.as_str()),
        ("ext4", disk.fs_uuid, "crypt,part,disk"),
        "{}",
        m.line
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid, cryptsetup (run with --include-ignored; ci/test.sh does)"]
fn luks_root_unlocks_with_the_passphrase_typed_on_the_console() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let disk = disks::luks_root();
    let extra = boot::Extra {
        answers: vec![(PROMPT.into(), disk.passphrase.into())],
        ..Default::default()
    };
    let booted = boot_with(&["storage"], &[&disk.image], &luks_cmdline(&disk, "ro"), &extra);
    assert!(
        booted.console.contains(PROMPT),
        "no passphrase prompt:\n{}",
        tail(&booted.console)
    );
    assert_luks_root(&booted, &disk);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid, cryptsetup (run with --include-ignored; ci/test.sh does)"]
fn luks_root_unlocks_with_the_cryptsetup_passphrase_credential() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let disk = disks::luks_root();
    // As firmware passes a system credential; systemd-stub's *.cred files arrive the same way.
    let extra = boot::Extra {
        qemu: vec![
            "-smbios".into(),
            format!(
                "type=11,value=io.systemd.credential:cryptsetup.passphrase={}",
                disk.passphrase
            ),
        ],
        ..Default::default()
    };
    // The volume named on the command line (`rd.luks.name=UUID=NAME`), the root by its
    // file system's UUID, as a user who names the mapping writes it.
    let append = real_root::cmdline(
        &format!("rd.luks.name={}=cryptroot root=UUID={}", disk.luks_uuid, disk.fs_uuid),
        "ro",
    );
    let booted = boot_with(&["storage"], &[&disk.image], &append, &extra);
    assert!(
        !booted.console.contains(PROMPT),
        "asked for the passphrase although the credential has it:\n{}",
        tail(&booted.console)
    );
    assert_luks_root_named(&booted, &disk, "cryptroot");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid, cryptsetup (run with --include-ignored; ci/test.sh does)"]
fn luks_root_unlocks_with_a_key_file_on_a_second_disk() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let (disk, keys) = (disks::luks_root(), disks::key_disk());
    // systemd-cryptsetup-generator(8): a key file on another device (`keyfile:keydev`) is
    // taken only in the `rd.luks.key=UUID=keyfile:keydev` form; without the UUID the whole
    // value is read as the default key file's path.
    let append = luks_cmdline(
        &disk,
        &format!(
            "rd.luks.key={}={}:LABEL={} ro",
            disk.luks_uuid, keys.key_path, keys.label
        ),
    );
    let booted = boot_with(
        &["storage"],
        &[&disk.image, &keys.image],
        &append,
        &boot::Extra::default(),
    );
    assert!(
        !booted.console.contains(PROMPT),
        "asked for the passphrase although the key disk has it:\n{}",
        tail(&booted.console)
    );
    assert_luks_root(&booted, &disk);
}

// ---------------------------------------------------------------------------------------------
// LVM, LVM on LUKS2, MD RAID1 and a TPM2-enrolled LUKS2 root (disks made in the helper VM,
// tests/e2e/helper_vm.rs), each through the storage extension.
// ---------------------------------------------------------------------------------------------

/// Boot `image`'s disks (or the first `disks` of them) with the storage extension and its
/// command line; the marker, checked, with the root's filesystem (the real root's ext4).
fn boot_stack(image: &helper_vm::StackImage, disks: usize, extra: &boot::Extra) -> (real_root::Booted, RootMarker) {
    let paths: Vec<&Path> = image.disks[..disks].iter().map(PathBuf::as_path).collect();
    let booted = boot_with(&["storage"], &paths, &real_root::cmdline(&image.cmdline, "ro"), extra);
    let m = booted.reached();
    assert_eq!(
        (m.fstype.as_str(), m.uuid.as_str()),
        ("ext4", real_root::ROOT_UUID),
        "{}",
        m.line
    );
    (booted, m)
}

/// Types the passphrase at the console's LUKS prompt.
fn typed_passphrase() -> boot::Extra {
    boot::Extra {
        answers: vec![(PROMPT.into(), helper_vm::PASSPHRASE.into())],
        ..Default::default()
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn lvm_root_is_activated_by_udev() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let image = helper_vm::lvm_image();
    let (_, m) = boot_stack(&image, 1, &boot::Extra::default());
    assert_eq!(
        (m.source.as_str(), m.stack.as_str()),
        ("/dev/mapper/strata-root", "lvm,part,disk"),
        "{}",
        m.line
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn lvm_on_luks_root_unlocks_then_activates() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let image = helper_vm::lvm_on_luks_image();
    let (booted, m) = boot_stack(&image, 1, &typed_passphrase());
    assert!(
        booted.console.contains(PROMPT),
        "no passphrase prompt:\n{}",
        tail(&booted.console)
    );
    assert_eq!(
        (m.source.as_str(), m.stack.as_str()),
        ("/dev/mapper/strata--crypt-root", "lvm,crypt,part,disk"),
        "{}",
        m.line
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid, swtpm (run with --include-ignored; ci/test.sh does)"]
fn luks_root_unlocks_with_the_tpm2_it_is_enrolled_to() {
    let _s = serial();
    require_tools(&[BOOT_TOOLS, &["swtpm"]].concat());
    let image = helper_vm::luks_tpm2_image();
    let tpm = swtpm::Swtpm::start(image.tpm_state.as_deref());
    let extra = boot::Extra {
        qemu: tpm.qemu_args.clone(),
        ..Default::default()
    };
    let (booted, m) = boot_stack(&image, 1, &extra);
    assert!(
        !booted.console.contains(PROMPT),
        "asked for the passphrase although the TPM2 can unseal the key:\n{}",
        tail(&booted.console)
    );
    assert_eq!(m.stack, "crypt,part,disk", "{}", m.line);
}
#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn raid1_root_is_assembled_from_both_disks() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let image = helper_vm::raid1_image();
    let (_, m) = boot_stack(&image, 2, &boot::Extra::default());
    assert_eq!(m.stack, "raid1,part,disk,part,disk", "{}", m.line);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, sfdisk, blkid (run with --include-ignored; ci/test.sh does)"]
fn raid1_root_boots_degraded_with_one_disk_gone() {
    let _s = serial();
    require_tools(BOOT_TOOLS);
    let image = helper_vm::raid1_image();
    // mdadm's incremental assembly waits for the second member; its last-resort timer starts
    // the array degraded.
    let (booted, m) = boot_stack(&image, 1, &boot::Extra::default());
    assert_eq!(m.stack, "raid1,part,disk", "{}", m.line);
    assert!(
        booted.console.contains("mdadm-last-resort@"),
        "the array was not started by mdadm's last resort:\n{}",
        tail(&booted.console)
    );
}
