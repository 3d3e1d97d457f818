//! strata's own files in initrds whose systemd merges extensions late (systemd < 258):
//! a unit that starts what the merged extensions added (generator units, udev rules) on the
//! boot already under way. The texts say why; `docs/sysext-initrd.md` has the measurements.

use strata_format::layer::Entry;

use crate::digest::Digest;

/// systemd ≥ 258 merges in the initrd with this unit, early enough for generators and udev.
pub(crate) const NATIVE_UNIT: &str = "usr/lib/systemd/system/systemd-sysext-initrd.service";

const UNIT: &str = "strata-sysext-requeue.service";
const UNIT_TEXT: &str = include_str!("strata-sysext-requeue.service");
const SCRIPT: &str = "usr/lib/strata/sysext-requeue";
const SCRIPT_TEXT: &str = include_str!("sysext-requeue");
const DROP_IN: &str = "50-strata-before-udev-cleanup.conf";
const DROP_IN_TEXT: &str = include_str!("50-strata-before-udev-cleanup.conf");

/// The entries added to a base layer whose systemd lacks [`NATIVE_UNIT`]: the unit, its
/// script and the link that starts it with `systemd-sysext.service`.
pub(crate) fn entries(epoch: u64) -> Vec<Entry> {
    vec![
        Entry::file(&format!("usr/lib/systemd/system/{UNIT}"), UNIT_TEXT, 0o644, epoch),
        Entry::file(SCRIPT, SCRIPT_TEXT, 0o755, epoch),
        Entry::symlink(
            &format!("etc/systemd/system/systemd-sysext.service.wants/{UNIT}"),
            &format!("/usr/lib/systemd/system/{UNIT}"),
            epoch,
        ),
    ]
}

/// A drop-in for the unit that merges extensions in the initrd (`native`: systemd ≥ 258's
/// [`NATIVE_UNIT`], else `systemd-sysext.service`) that has it unmerge, and reload the manager,
/// before udev's database is emptied at the switch to the root. Every base layer gets it.
pub(crate) fn unmerge_before_udev_cleanup(native: bool, epoch: u64) -> Entry {
    let unit = if native {
        "systemd-sysext-initrd.service"
    } else {
        "systemd-sysext.service"
    };
    Entry::file(
        &format!("etc/systemd/system/{unit}.d/{DROP_IN}"),
        DROP_IN_TEXT,
        0o644,
        epoch,
    )
}

/// A digest of these files, part of the base layer's cache key: a strata that ships other
/// texts builds the base layer again.
pub(crate) fn fingerprint() -> Digest {
    Digest::of(format!("{UNIT}\0{UNIT_TEXT}\0{SCRIPT}\0{SCRIPT_TEXT}\0{DROP_IN}\0{DROP_IN_TEXT}").as_bytes())
}
