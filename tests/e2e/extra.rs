//! Extensions delivered as systemd-stub delivers them: in `/.extra/sysext/` of a cpio member
//! appended to the build's initrd; and the extension boots of tests/e2e_sysext.rs and
//! tests/e2e_forky.rs, which add a unit that runs the extension's `sshd -V` in the initrd and
//! then boot on to the real root of [`real_root`].

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::real_root::{self, Booted};
use super::{assert_ok, boot, product_file, strata, tail};

/// The build's initrd followed by a member holding `images` at
/// `/.extra/sysext/<file name>` with systemd-stub's modes (directories 0555, images 0444),
/// and `files` (path in the member, text), written under `dir`.
pub fn initrd_with(out: &Path, images: &[&Path], files: &[(&str, &str)], dir: &Path) -> PathBuf {
    let tree = dir.join("extra");
    let sysext = tree.join(".extra/sysext");
    std::fs::create_dir_all(&sysext).unwrap();
    for image in images {
        let copy = sysext.join(image.file_name().unwrap());
        std::fs::copy(image, &copy).unwrap_or_else(|e| panic!("copying the extension {}: {e}", image.display()));
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    for (path, text) in files {
        let file = tree.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
    }
    for d in [&sysext, &tree.join(".extra")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let member = dir.join("extra.cpio");
    let o = strata(
        &[
            "cpio",
            tree.to_str().unwrap(),
            "-o",
            member.to_str().unwrap(),
            "--compression",
            "none",
        ],
        &[],
        &[],
    );
    assert_ok(&o, "strata cpio of the extensions' member");
    let mut initrd = std::fs::read(product_file(out, "initrd")).unwrap();
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend(std::fs::read(&member).unwrap());
    let combined = dir.join("initrd-with-extensions.img");
    std::fs::write(&combined, initrd).unwrap();
    // The tree is read-only now, as systemd-stub makes it; let the temporary dir go.
    for d in [&sysext, &tree.join(".extra")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    combined
}

/// What the extension check unit prints before the extension's `sshd -V`.
pub const RAN: &str = "STRATA-EXT-RAN:";

/// The check unit: run the extension's `sshd -V` in the initrd after systemd-sysext, pulled in
/// by initrd.target; and drop-ins that make systemd-sysext say why it refuses an image.
fn check_unit() -> Vec<(&'static str, String)> {
    let debug = "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console\n\
                 StandardError=journal+console\n";
    vec![
        ("etc/systemd/system/systemd-sysext.service.d/debug.conf", debug.into()),
        // systemd ≥ 258 merges in the initrd with systemd-sysext-initrd.service.
        (
            "etc/systemd/system/systemd-sysext-initrd.service.d/debug.conf",
            debug.into(),
        ),
        (
            "etc/systemd/system/strata-e2e-ext.service",
            format!(
                "[Unit]\nDescription=strata e2e: run the extension's sshd\nDefaultDependencies=no\n\
                 After=systemd-sysext.service systemd-sysext-initrd.service\nBefore=initrd.target\n\n\
                 [Service]\nType=oneshot\n\
                 ExecStart=/usr/bin/bash -c 'echo \"{RAN} $$(/usr/sbin/sshd -V 2>&1)\"'\n\
                 StandardOutput=journal+console\nStandardError=journal+console\n"
            ),
        ),
        (
            "etc/systemd/system/initrd.target.d/strata-e2e-ext.conf",
            "[Unit]\nWants=strata-e2e-ext.service\n".into(),
        ),
    ]
}

/// Boot the build's kernel with its initrd plus `image` at
/// `/.extra/sysext/network.sysext.raw` and the check unit, and the real root's disk by
/// `root=UUID=`, until the root's marker and power-off.
pub fn boot_with(out: &Path, image: &Path) -> Booted {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("network.sysext.raw");
    std::fs::copy(image, &named).unwrap_or_else(|e| panic!("copying {}: {e}", image.display()));
    let files = check_unit();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let initrd = initrd_with(out, &[&named], &files, dir.path());
    let disk = real_root::real_root_disk();
    boot::boot(
        &product_file(out, "kernel"),
        &initrd,
        &[&disk],
        &real_root::cmdline_by_uuid(),
        Duration::from_secs(600),
        &boot::Extra::default(),
    )
}

/// The line the check unit printed in the initrd, checked to come before the switch to the
/// real root, whose marker is checked ([`Booted::reached_with_failed`]): the extension's
/// effect (or its absence) was seen in the initrd, and the boot went on to the real root with
/// systemd as PID 1 and no failed unit but `failed`.
pub fn ran_then_root<'a>(booted: &'a Booted, failed: &[&str]) -> &'a str {
    let console = &booted.console;
    let mut at = 0;
    let ran = console
        .split_inclusive('\n')
        .find(|line| {
            let found = line.contains(RAN) && !line.contains("echo");
            if !found {
                at += line.len();
            }
            found
        })
        .unwrap_or_else(|| panic!("the check unit never ran:\n{}", tail(console)))
        .trim_end();
    booted.reached_with_failed(failed);
    assert!(
        at < booted.switch_at(),
        "the check unit did not run in the initrd before the switch to the real root:\n{}",
        tail(console)
    );
    ran
}

/// The boot merged the extension in the initrd, its `sshd -V` ran there, and the boot went on
/// to the real root, no unit failed ([`ran_then_root`]); returns the check unit's line.
pub fn assert_merged(booted: &Booted) -> &str {
    let console = &booted.console;
    assert!(
        console.contains("Merged extensions into '/usr'"),
        "the extension was not merged:\n{}",
        tail(console)
    );
    let ran = ran_then_root(booted, &[]);
    assert!(
        ran.contains("OpenSSH_"),
        "the extension's sshd did not run: {ran}\n{}",
        tail(console)
    );
    ran
}

/// The initrd refused the extension saying `reason`, merged nothing, found no sshd, and the
/// boot still went on to the real root without it ([`ran_then_root`]). The refusal fails the
/// initrd's systemd-sysext.service, and systemd keeps that state across the switch to the
/// root: the booted system is `degraded` with that one failed unit, so the refusal shows there
/// too (`systemctl --failed`).
pub fn assert_refused(booted: &Booted, reason: &str) {
    let console = &booted.console;
    assert!(
        console.contains(reason),
        "the console lacks the refusal {reason:?}:\n{}",
        tail(console)
    );
    assert!(
        !console.contains("Merged extensions into '/usr'"),
        "a refused image was merged:\n{}",
        tail(console)
    );
    let ran = ran_then_root(booted, &["systemd-sysext.service"]);
    assert!(
        !ran.contains("OpenSSH_") && ran.contains("/usr/sbin/sshd"),
        "the refused extension's sshd ran, or the check unit said something else: {ran}\n{}",
        tail(console)
    );
}
