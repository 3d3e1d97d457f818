//! End to end: a root that never appears. The default set's initrd, built without its
//! extensions (so without the storage extension and its cryptsetup), is booted under qemu
//! (TCG) with a disk that is not the root and a command line that asks for a LUKS root. The console
//! must say which device was awaited, that the cryptsetup generator (the storage extension)
//! is missing, and which storage controller has no module, and the boot must end in emergency
//! mode: refused on the console with the
//! default `emergency-shell = "locked"` (saying how to get a shell), a root shell on the serial
//! console that runs what the test types with `emergency-shell = "open"`.
//!
//! Needs podman (configured by ci/setup.sh), the Debian mirror, qemu and mke2fs: it
//! is `#[ignore]`d, runs with `--include-ignored` (as ci/test.sh does), and fails when a tool
//! is missing.

mod e2e;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::boot::{Console, Extra};
use e2e::*;

/// The LUKS volume the command line asks for; no disk has it.
const LUKS_UUID: &str = "5a7a0c1e-7e57-4f00-8000-00000000dead";
/// The file system on the disk that is there.
const OTHER_UUID: &str = "5a7a0c1e-7e57-4f00-8000-00000000beef";
const OTHER_LABEL: &str = "not-the-root";
/// The root device's job limit, and strata's bounded wait, on the command line (seconds).
const TIMEOUT: u32 = 20;
/// What sulogin says when the root account is locked.
const SULOGIN_REFUSES: &str = "Cannot open access to console, the root account is locked.";
/// Boot to the end of the report: ~15 s to the initrd's userspace under TCG, the timeout,
/// the report; generous for a loaded CI machine.
const TO_REPORT: Duration = Duration::from_secs(300);
/// The watchdog's limit for a whole boot: the report, then the shell's steps.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

/// A small ext4 disk: a block device that is there, but not the root.
fn other_disk(dir: &Path) -> PathBuf {
    let img = dir.join("other.img");
    let st = std::process::Command::new(support::tool("mke2fs"))
        .args(["-q", "-t", "ext4", "-U", OTHER_UUID, "-L", OTHER_LABEL])
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success(), "mke2fs of {} failed", img.display());
    img
}

/// `strata build --no-extensions` of `set` into `out`, sharing `cache`.
/// What the second boot adds to the command line: an LVM volume and an MD array.
const LVM_ARG: &str = "rd.lvm.lv=strata/root";
const MD_ARG: &str = "rd.md.uuid=0a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9";

fn build_initrd(set: &Path, cache: &Path, out: &Path) {
    let start = Instant::now();
    let o = build_with(set, cache, out, &[], &["--no-extensions"]);
    assert_ok(&o, &format!("building {}", set.display()));
    eprintln!("built {} in {:.1?}", set.display(), start.elapsed());
}

fn boot(out: &Path, disk: &Path, extra: &str, qemu_args: &[&str]) -> Console {
    let append = real_root::cmdline(
        &format!("rd.luks.uuid={LUKS_UUID} root=/dev/mapper/luks-{LUKS_UUID}"),
        &format!("systemd.default_device_timeout_sec={TIMEOUT} {extra}"),
    );
    let extra = Extra {
        qemu: qemu_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    Console::start(
        &product_file(out, "kernel"),
        &product_file(out, "initrd"),
        &[disk],
        &append,
        BOOT_LIMIT,
        &extra,
    )
}

/// The default set with `emergency-shell = "open"`: a copy of its base.toml (no extensions).
fn open_shell_set(dir: &Path) -> PathBuf {
    let set = dir.join("debian-trixie-open-shell");
    std::fs::create_dir_all(&set).unwrap();
    let base = std::fs::read_to_string(default_set().join("base.toml")).unwrap();
    assert!(
        !base.contains("\nemergency-shell"),
        "the default set sets emergency-shell itself"
    );
    let open = base.replacen("\ncompression = ", "\nemergency-shell = \"open\"\ncompression = ", 1);
    assert_ne!(
        open, base,
        "no `compression =` line in [base] to put emergency-shell before"
    );
    std::fs::write(set.join("base.toml"), open).unwrap();
    set
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, mke2fs (run with --include-ignored; ci/test.sh does)"]
fn a_root_that_never_appears_is_explained_and_ends_in_an_emergency_shell() {
    let _s = serial();
    require_tools(&["podman", "qemu-system-x86_64", "mke2fs"]);
    let dir = tempfile::Builder::new()
        .prefix("strata-e2e-failure-")
        .tempdir()
        .unwrap();
    let disk = other_disk(dir.path());
    let cache = dir.path().join("cache");

    // The default set: the root account stays locked.
    let out = dir.path().join("out");
    build_initrd(&default_set(), &cache, &out);
    // And a SCSI controller (AMD Am53c974, qemu's am53c974) whose module is not in the initrd.
    let mut c = boot(&out, &disk, "", &["-device", "am53c974"]);
    let reported = c.wait_for("strata: ==== end of strata's report", TO_REPORT);
    let refused = reported.and_then(|_| c.wait_for(SULOGIN_REFUSES, Duration::from_secs(60)));
    let console = c.text();
    assert!(refused.is_some(), "no report, or sulogin did not refuse:\n{}", c.tail());
    drop(c);
    eprintln!(
        "locked: report and sulogin's refusal {:.1?} after qemu's start",
        refused.unwrap()
    );
    for line in [
        format!("strata: root device /dev/mapper/luks-{LUKS_UUID} never appeared"),
        format!(
            "strata: command line: rd.luks.uuid={LUKS_UUID} root=/dev/mapper/luks-{LUKS_UUID} systemd.default_device_timeout_sec={TIMEOUT}"
        ),
        "strata: extensions: none found".into(),
        format!(
            "strata: MISSING: rd.luks.uuid={LUKS_UUID} asks for LUKS, but there is no \
             /usr/lib/systemd/system-generators/systemd-cryptsetup-generator: the storage extension is not merged"
        ),
        "[1af4:1001] class 010000: driver virtio-pci".into(),
        "strata: NO DRIVER: no module for the controller 1022:2020 (".into(),
        "strata: the root account is locked, so there is no emergency shell; to get one on the console, set".into(),
        "strata: emergency-shell = \"open\" in [base] of the layer set's base.toml and rebuild".into(),
    ] {
        assert!(
            console.contains(&line),
            "the console lacks {line:?}:\n{}",
            tail(&console)
        );
    }
    // lsblk's table: the disk that is there, with its file system.
    assert!(
        console.lines().any(|l| l.contains("strata:     vda ")
            && [" disk ", " ext4 ", OTHER_LABEL, OTHER_UUID]
                .iter()
                .all(|w| l.contains(w))),
        "the block devices are not listed:\n{}",
        tail(&console)
    );
    let report = console.find("strata: ==== emergency mode in the initrd").unwrap();
    let sulogin = console
        .find(SULOGIN_REFUSES)
        .unwrap_or_else(|| panic!("sulogin's refusal is not on the console:\n{}", tail(&console)));
    assert!(
        report < sulogin,
        "the report comes after the prompt:\n{}",
        tail(&console)
    );
    assert_eq!(console.matches("strata: ==== emergency mode in the initrd").count(), 1);

    // `emergency-shell = "open"`, and a root device job without a limit (what the cryptsetup
    // generator makes for a LUKS device): only strata's bounded wait ends the boot's wait.
    let out = dir.path().join("out-open");
    build_initrd(&open_shell_set(dir.path()), &cache, &out);
    // LVM and MD RAID asked for too: the report names the tool each lacks.
    let mut c = boot(
        &out,
        &disk,
        &format!("rootflags=x-systemd.device-timeout=infinity {LVM_ARG} {MD_ARG}"),
        &[],
    );
    let prompt = c.wait_for("(or press Control-D to continue): ", TO_REPORT);
    assert!(prompt.is_some(), "no emergency shell prompt:\n{}", c.tail());
    let console = c.text();
    for line in [
        format!("strata: ==== the root file system did not appear within {TIMEOUT} s"),
        format!("strata: waited for /dev/mapper/luks-{LUKS_UUID}"),
        "strata: emergency shell: a root shell opens on the console without a password".into(),
        format!(
            "strata: MISSING: {LVM_ARG} asks for LVM, but there is no /usr/sbin/lvm: the storage extension is not merged"
        ),
        format!(
            "strata: MISSING: {MD_ARG} asks for MD RAID, but there is no /usr/sbin/mdadm: the storage extension is not merged"
        ),
    ] {
        assert!(
            console.contains(&line),
            "the console lacks {line:?}:\n{}",
            tail(&console)
        );
    }
    // sulogin may discard what was typed while it set up the terminal: Enter again until the
    // shell's prompt comes.
    let mut shell = None;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        c.type_line("");
        shell = c.wait_for("# ", Duration::from_secs(20));
        if shell.is_some() {
            break;
        }
    }
    assert!(shell.is_some(), "no shell prompt after Enter:\n{}", c.tail());
    // The device's job limit, read in the shell: infinity proves that systemd would have
    // waited forever, and that the report came from strata's bounded wait.
    c.type_line(&format!(
        "echo STRATA-SHELL-$((6*7)) device-timeout=$(systemctl show -P JobRunningTimeoutUSec \
         $(systemd-escape -p --suffix=device /dev/mapper/luks-{LUKS_UUID}))"
    ));
    let ran = c.wait_for("STRATA-SHELL-42 device-timeout=infinity", Duration::from_secs(60));
    assert!(
        ran.is_some(),
        "the shell did not run the typed command (or the device had a limit):\n{}",
        c.tail()
    );
    assert!(
        !c.text().contains("Timed out waiting for device"),
        "systemd's own device timeout fired:\n{}",
        c.tail()
    );
    eprintln!("open: the typed command ran {:.1?} after qemu's start", ran.unwrap());
}
