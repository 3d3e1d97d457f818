//! What an initrd is made of, by size: kernel modules, firmware, userspace, and the largest
//! files (pure; unit-tested). The build logs it, so a module list or a package that makes the
//! initrd grow shows in the log of the build that did it.

use std::fmt;

use strata_format::layer::{EntryKind, Layer};
use tracing::info;

/// How many of the largest files the summary names.
pub const LARGEST: usize = 10;

/// A count of files and their bytes (uncompressed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub files: usize,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// The regular files of an initrd's layers, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `*.ko*` files below `lib/modules/` (or `usr/lib/modules/`).
    pub modules: Tally,
    /// Files below `lib/firmware/` (or `usr/lib/firmware/`).
    pub firmware: Tally,
    /// Everything else: the base layer's programs, libraries and data, and the modules
    /// layer's metadata (`modules.dep`, …).
    pub userspace: Tally,
    /// The [`LARGEST`] largest files, largest first (ties by path).
    pub largest: Vec<(String, u64)>,
}

fn below(path: &str, dir: &str) -> bool {
    path.strip_prefix("usr/").unwrap_or(path).starts_with(dir)
}

/// Summarize regular files given as (path relative to `/`, size in bytes).
pub fn summarize<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> Summary {
    let mut s = Summary::default();
    let mut all: Vec<(&str, u64)> = Vec::new();
    for (path, bytes) in files {
        let name = path.rsplit('/').next().unwrap_or(path);
        if below(path, "lib/modules/") && name.contains(".ko") {
            s.modules.add(bytes);
        } else if below(path, "lib/firmware/") {
            s.firmware.add(bytes);
        } else {
            s.userspace.add(bytes);
        }
        all.push((path, bytes));
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    s.largest = all.into_iter().take(LARGEST).map(|(p, b)| (p.to_string(), b)).collect();
    s
}

/// The regular files of `layers` as [`summarize`] takes them.
pub fn of_layers(layers: &[&Layer]) -> Summary {
    summarize(layers.iter().flat_map(|l| l.entries()).filter_map(|e| match &e.kind {
        EntryKind::File { data } => Some((e.path.as_str(), data.len() as u64)),
        _ => None,
    }))
}

/// `usr/lib/udev/hwdb.bin 13.5 MB, …`
struct Largest<'a>(&'a [(String, u64)]);

impl fmt::Display for Largest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, bytes)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{path} {:.1} MB", *bytes as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// Log the summary with the compressed sizes of the base and modules members, which are
/// what the initrd's size budget counts.
pub fn log(s: &Summary, base_member: u64, modules_member: u64) {
    info!(
        base_member_bytes = base_member,
        modules_member_bytes = modules_member,
        members_bytes = base_member + modules_member,
        modules = s.modules.files,
        modules_bytes = s.modules.bytes,
        firmware = s.firmware.files,
        firmware_bytes = s.firmware.bytes,
        userspace_files = s.userspace.files,
        userspace_bytes = s.userspace.bytes,
        largest = %Largest(&s.largest),
        "initrd sizes (file bytes uncompressed; member bytes compressed)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_counted_by_kind_and_the_largest_named() {
        let mut files = vec![
            ("usr/lib/modules/6.12.0/kernel/fs/ext4/ext4.ko.xz", 400),
            ("lib/modules/6.12.0/kernel/drivers/ata/ahci.ko.xz", 30),
            ("usr/lib/modules/6.12.0/modules.dep", 7),
            ("usr/lib/firmware/isci/isci_firmware.bin", 232),
            ("lib/firmware/renesas_usb_fw.mem", 5),
            ("usr/lib/udev/hwdb.bin", 13_500),
            ("usr/bin/bash", 1_300),
            // A module name outside lib/modules/ is userspace.
            ("usr/share/x/not-a-module.ko.xz", 1),
        ];
        for i in 0..10 {
            files.push(("usr/lib/x86_64-linux-gnu/small", i));
        }
        let s = summarize(files.iter().map(|(p, b)| (*p, *b)));
        assert_eq!(s.modules, Tally { files: 2, bytes: 430 });
        assert_eq!(s.firmware, Tally { files: 2, bytes: 237 });
        assert_eq!(
            s.userspace,
            Tally {
                files: 14,
                bytes: 13_500 + 1_300 + 7 + 1 + 45
            }
        );
        assert_eq!(s.largest.len(), LARGEST);
        assert_eq!(s.largest[0], ("usr/lib/udev/hwdb.bin".to_string(), 13_500));
        assert_eq!(s.largest[1].0, "usr/bin/bash");
        assert_eq!(s.largest[2].0, "usr/lib/modules/6.12.0/kernel/fs/ext4/ext4.ko.xz");
        // Ties are ordered by path, so the log is the same from one build to the next.
        assert_eq!(s.largest[5].1, 9);
        assert_eq!(s.largest[7], ("usr/lib/modules/6.12.0/modules.dep".to_string(), 7));
        assert_eq!(s.largest[8], ("usr/lib/x86_64-linux-gnu/small".to_string(), 7));
        assert_eq!(
            Largest(&s.largest[..2]).to_string(),
            "usr/lib/udev/hwdb.bin 0.0 MB, usr/bin/bash 0.0 MB"
        );
    }

    #[test]
    fn only_regular_files_of_every_layer_count() {
        let f = |p: &str, n: usize| strata_format::layer::Entry::new(p, EntryKind::File { data: vec![0; n] }, 0o644, 0);
        let base = Layer::from_entries(vec![
            f("usr/bin/bash", 100),
            strata_format::layer::Entry::new(
                "bin",
                EntryKind::Symlink {
                    target: "usr/bin".into(),
                },
                0o777,
                0,
            ),
        ])
        .unwrap();
        let modules = Layer::from_entries(vec![f("usr/lib/modules/v/kernel/a.ko.xz", 10)]).unwrap();
        let s = of_layers(&[&base, &modules]);
        assert_eq!(s.userspace, Tally { files: 1, bytes: 100 });
        assert_eq!(s.modules, Tally { files: 1, bytes: 10 });
        assert_eq!(s.largest.len(), 2);
    }
}
