//! What the base initrd does when its root never appears: a bounded wait, a report on the
//! console, and an emergency shell that can work on a serial console.
//!
//! The units and scripts are text files in `src/stage/initrd/`, added to the base layer by
//! [`add_files`]:
//! - `strata-root-timeout.service` runs `root-timeout`, which waits for the root at most
//!   `systemd.default_device_timeout_sec=` seconds (90 by default), not counting the time a
//!   passphrase prompt is open, and fails: its `OnFailure=` goes to emergency.target. systemd's
//!   own device job already has that limit, except for a device a generator marks as one that
//!   waits for a passphrase (cryptsetup's), which has none;
//! - `strata-emergency-report.service`, wanted by emergency.target and ordered before the
//!   shell, runs `emergency-report`: which root was awaited, what the command line asked for,
//!   which extensions merged or were refused, the tools the command line needs that are
//!   missing, the block devices, the storage controllers without a driver, and whether the
//!   emergency shell will open;
//! - with `emergency-shell = "open"` ([`EmergencyShell::Open`]), a drop-in for
//!   emergency.service and rescue.service sets `SYSTEMD_SULOGIN_FORCE=1`: sulogin then opens
//!   a root shell without a password even though the root account is locked.

use strata_format::layer::Entry;

use crate::config::EmergencyShell;

/// A file strata adds to the base layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdFile {
    /// Relative to the layer's root.
    pub path: &'static str,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    File { text: &'static str, mode: u32 },
    Symlink { target: &'static str },
}

const fn file(path: &'static str, text: &'static str, mode: u32) -> InitrdFile {
    InitrdFile {
        path,
        kind: FileKind::File { text, mode },
    }
}

const fn symlink(path: &'static str, target: &'static str) -> InitrdFile {
    InitrdFile {
        path,
        kind: FileKind::Symlink { target },
    }
}

/// The files for an emergency shell set to `shell`, in a fixed order.
pub fn files(shell: EmergencyShell) -> Vec<InitrdFile> {
    let mut files = vec![
        file(
            "usr/lib/strata/root-timeout",
            include_str!("initrd/root-timeout"),
            0o755,
        ),
        file(
            "usr/lib/strata/emergency-report",
            include_str!("initrd/emergency-report"),
            0o755,
        ),
        file(
            "usr/lib/systemd/system/strata-root-timeout.service",
            include_str!("initrd/strata-root-timeout.service"),
            0o644,
        ),
        file(
            "usr/lib/systemd/system/strata-emergency-report.service",
            include_str!("initrd/strata-emergency-report.service"),
            0o644,
        ),
        symlink(
            "etc/systemd/system/initrd.target.wants/strata-root-timeout.service",
            "/usr/lib/systemd/system/strata-root-timeout.service",
        ),
        symlink(
            "etc/systemd/system/emergency.target.wants/strata-emergency-report.service",
            "/usr/lib/systemd/system/strata-emergency-report.service",
        ),
    ];
    if shell == EmergencyShell::Open {
        let conf = include_str!("initrd/emergency-shell-open.conf");
        files.push(file(
            "usr/lib/systemd/system/emergency.service.d/strata-emergency-shell.conf",
            conf,
            0o644,
        ));
        files.push(file(
            "usr/lib/systemd/system/rescue.service.d/strata-emergency-shell.conf",
            conf,
            0o644,
        ));
    }
    files
}

/// Add [`files`] for `shell` to a base layer's entries, with `mtime`.
pub fn add_files(entries: &mut Vec<Entry>, shell: EmergencyShell, mtime: u64) {
    for f in files(shell) {
        entries.push(match f.kind {
            FileKind::File { text, mode } => Entry::file(f.path, text, mode, mtime),
            FileKind::Symlink { target } => Entry::symlink(f.path, target, mtime),
        });
    }
}

/// What decides the bytes [`add_files`] adds, for the base layer's cache key: a change to a
/// unit or a script makes a new base layer.
pub fn key_input(shell: EmergencyShell) -> String {
    let mut s = String::new();
    for f in files(shell) {
        match f.kind {
            FileKind::File { text, mode } => s.push_str(&format!("{}\0{mode:o}\0{}\0{text}\0", f.path, text.len())),
            FileKind::Symlink { target } => s.push_str(&format!("{}\0->\0{target}\0", f.path)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(shell: EmergencyShell, path: &str) -> &'static str {
        match files(shell).into_iter().find(|f| f.path == path).map(|f| f.kind) {
            Some(FileKind::File { text, .. }) => text,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Every unit a symlink enables exists, and every script a unit runs is shipped
    /// executable at the path the unit names.
    #[test]
    fn units_are_enabled_and_run_shipped_scripts() {
        let all = files(EmergencyShell::Open);
        for f in &all {
            if let FileKind::Symlink { target } = f.kind {
                let unit = target.trim_start_matches('/');
                assert!(all.iter().any(|g| g.path == unit), "{} → {target}: not shipped", f.path);
                assert!(f.path.ends_with(unit.rsplit('/').next().unwrap()), "{}", f.path);
            }
        }
        for unit in ["strata-root-timeout.service", "strata-emergency-report.service"] {
            let text = text_of(EmergencyShell::Locked, &format!("usr/lib/systemd/system/{unit}"));
            let exec = text
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
            let script = all
                .iter()
                .find(|f| f.path == exec.trim_start_matches('/'))
                .unwrap_or_else(|| panic!("{unit} runs {exec}, which is not shipped"));
            assert!(matches!(script.kind, FileKind::File { mode: 0o755, .. }), "{exec}");
            assert!(
                text.contains("ConditionPathExists=/etc/initrd-release"),
                "{unit}: initrd only"
            );
        }
        let timeout = text_of(
            EmergencyShell::Locked,
            "usr/lib/systemd/system/strata-root-timeout.service",
        );
        assert!(timeout.contains("\nOnFailure=emergency.target\n"), "{timeout}");
        let report = text_of(
            EmergencyShell::Locked,
            "usr/lib/systemd/system/strata-emergency-report.service",
        );
        assert!(report.contains("\nBefore=emergency.service\n"), "{report}");
    }

    #[test]
    fn only_the_open_shell_forces_sulogin() {
        let forced = |shell| {
            files(shell)
                .iter()
                .filter(|f| matches!(f.kind, FileKind::File { text, .. } if text.contains("Environment=SYSTEMD_SULOGIN_FORCE=1")))
                .map(|f| f.path)
                .collect::<Vec<_>>()
        };
        assert!(forced(EmergencyShell::Locked).is_empty());
        assert_eq!(
            forced(EmergencyShell::Open),
            [
                "usr/lib/systemd/system/emergency.service.d/strata-emergency-shell.conf",
                "usr/lib/systemd/system/rescue.service.d/strata-emergency-shell.conf"
            ]
        );
        assert_ne!(key_input(EmergencyShell::Locked), key_input(EmergencyShell::Open));
    }

    /// The scripts parse as bash (`bash -n`).
    #[test]
    fn scripts_are_valid_bash() {
        for f in files(EmergencyShell::Locked) {
            let FileKind::File { text, mode: 0o755 } = f.kind else {
                continue;
            };
            assert!(text.starts_with("#!/usr/bin/bash\n"), "{}", f.path);
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", text])
                .output()
                .expect("running bash -n");
            assert!(
                out.status.success(),
                "bash -n {}: {}",
                f.path,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
