//! Kernel module selection, from the metadata depmod writes (pure; unit-tested).
//!
//! A pattern is a module name (`virtio_blk`; `-` and `_` are the same) or a glob over module
//! paths as `modules.dep` writes them, relative to `lib/modules/<version>/`
//! (`kernel/drivers/ata/*`). `*` stays within one directory; `**` or a trailing `/` takes a
//! whole subtree (`kernel/drivers/ata/` = `kernel/drivers/ata/**`). A glob may leave out the
//! `.ko.xz` suffix. Paths are not taken relative to `kernel/`: the kernel tree has its own
//! `kernel/kernel/` directory, so `kernel/…` would be ambiguous; the config rejects a glob that
//! does not start with `kernel/`.
//!
//! A pattern that starts with `!` leaves out what it matches from what the positive patterns
//! selected, whatever their order in the list. It acts before the dependency closure: a module
//! that a selected module needs (`modules.dep`, soft and weak dependencies) is added back, since
//! the selected one would not load without it; [`Selection::readded`] names those.
//!
//! The selection is closed over `modules.dep` (hard dependencies), `modules.softdep` (pre: and
//! post: soft dependencies) and `modules.weakdep`; soft and weak dependencies may name aliases
//! (`crypto-crc32c`), which resolve through `modules.alias`. A name that is built into the
//! kernel (`modules.builtin`) is satisfied without a file.

use std::collections::{BTreeMap, BTreeSet};

/// The parsed module metadata of one kernel version.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Module path (relative to `lib/modules/<version>/`) → paths it depends on.
    deps: BTreeMap<String, Vec<String>>,
    /// Normalized module name → path.
    by_name: BTreeMap<String, String>,
    /// Normalized names of built-in modules.
    builtin: BTreeSet<String>,
    /// Normalized name → soft and weak dependency names or aliases.
    softdeps: BTreeMap<String, Vec<String>>,
    /// Alias → normalized module names.
    aliases: BTreeMap<String, Vec<String>>,
}

/// The depmod metadata files [`ModuleIndex::parse`] reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Metadata<'a> {
    pub dep: &'a str,
    pub builtin: &'a str,
    pub softdep: &'a str,
    pub weakdep: &'a str,
    pub alias: &'a str,
}

/// The outcome of [`ModuleIndex::select`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Module files to install, sorted.
    pub paths: Vec<String>,
    /// Requested names that are built into the kernel.
    pub builtin: Vec<String>,
    /// Modules a `!` pattern left out that came back as a dependency of a selected module.
    pub readded: Vec<String>,
}

/// Why a module selection failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectError {
    /// A positive pattern that matched no module, built-in or not.
    #[error(
        "kernel {version}: module pattern `{pattern}` matches no module (neither a loadable module in modules.dep nor a built-in one in modules.builtin)"
    )]
    Unknown { version: String, pattern: String },
    /// A `!` pattern that left out nothing the positive patterns selected.
    #[error(
        "kernel {version}: module pattern `!{pattern}` leaves out nothing: it matches none of the loadable modules the other patterns select (a built-in module cannot be left out); remove it or fix it"
    )]
    UnusedExclusion { version: String, pattern: String },
}

/// A parsed pattern: a module name or a path glob.
enum Pattern {
    Name(String),
    Glob(glob::Pattern),
}

const GLOB_CHARS: [char; 4] = ['/', '*', '?', '['];
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Pattern {
    fn parse(pattern: &str) -> Option<Pattern> {
        if !pattern.contains(GLOB_CHARS) {
            return Some(Pattern::Name(module_name(pattern)));
        }
        let subtree;
        let text = if pattern.ends_with('/') {
            subtree = format!("{pattern}**");
            &subtree
        } else {
            pattern
        };
        glob::Pattern::new(text).ok().map(Pattern::Glob)
    }

    /// Whether the module file at `path` (as in modules.dep) matches.
    fn matches_path(&self, path: &str) -> bool {
        match self {
            Pattern::Name(name) => module_name(path) == *name,
            Pattern::Glob(pat) => {
                let without_ext = path.split(".ko").next().unwrap_or(path);
                pat.matches_with(path, MATCH) || pat.matches_with(without_ext, MATCH)
            }
        }
    }
}

/// Check the form of one `kernel.modules` entry, for the config: a name, or a glob that
/// starts with `kernel/`, either one optionally after `!`. The message says how to fix it.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_prefix('!').unwrap_or(pattern);
    if body.is_empty() || body.starts_with('!') {
        return Err(format!(
            "`{pattern}` is not a module name or glob (`name`, `kernel/dir/*`, `!kernel/dir/name`)"
        ));
    }
    if !body.contains(GLOB_CHARS) {
        return Ok(());
    }
    if !body.starts_with("kernel/") {
        return Err(format!(
            "module glob `{pattern}` must start with `kernel/`: globs match paths as modules.dep writes them, e.g. `kernel/{}`",
            body.trim_start_matches('/')
        ));
    }
    match Pattern::parse(body) {
        Some(_) => Ok(()),
        None => Err(format!("`{pattern}` is not a valid glob")),
    }
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`; `dm-verity` → `dm_verity`.
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleIndex {
    /// Parse depmod's metadata texts.
    pub fn parse(m: Metadata<'_>) -> ModuleIndex {
        let mut idx = ModuleIndex::default();
        for line in m.dep.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim().to_string();
            idx.by_name.insert(module_name(&module), module.clone());
            idx.deps
                .insert(module, deps.split_whitespace().map(str::to_string).collect());
        }
        for line in m.builtin.lines().map(str::trim).filter(|l| !l.is_empty()) {
            idx.builtin.insert(module_name(line));
        }
        for line in m.softdep.lines().chain(m.weakdep.lines()) {
            let mut words = line.split_whitespace();
            if !matches!(words.next(), Some("softdep" | "weakdep")) {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let deps: Vec<String> = words.filter(|w| !w.ends_with(':')).map(str::to_string).collect();
            idx.softdeps.entry(module_name(module)).or_default().extend(deps);
        }
        for line in m.alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) = (words.next(), words.next(), words.next()) {
                idx.aliases
                    .entry(alias.to_string())
                    .or_default()
                    .push(module_name(module));
            }
        }
        idx
    }

    /// Select modules for `patterns` (`!` ones leave out), closed over hard and soft
    /// dependencies.
    pub fn select(&self, version: &str, patterns: &[String]) -> Result<Selection, SelectError> {
        let mut roots: BTreeSet<String> = BTreeSet::new();
        let mut builtin = BTreeSet::new();
        let (negative, positive): (Vec<&String>, Vec<&String>) = patterns.iter().partition(|p| p.starts_with('!'));
        for pattern in positive {
            let unknown = || SelectError::Unknown {
                version: version.into(),
                pattern: pattern.clone(),
            };
            let pat = Pattern::parse(pattern).ok_or_else(unknown)?;
            let mut matched = false;
            for path in self.deps.keys().filter(|p| pat.matches_path(p)) {
                roots.insert(path.clone());
                matched = true;
            }
            if let Pattern::Name(name) = &pat
                && !matched
                && self.builtin.contains(name)
            {
                builtin.insert(name.clone());
                matched = true;
            }
            if !matched {
                return Err(unknown());
            }
        }
        let mut excluded = BTreeSet::new();
        for pattern in negative {
            let text = &pattern[1..];
            let unused = || SelectError::UnusedExclusion {
                version: version.into(),
                pattern: text.to_string(),
            };
            let pat = Pattern::parse(text).ok_or_else(unused)?;
            let before = roots.len();
            roots.retain(|path| {
                let hit = pat.matches_path(path);
                if hit {
                    excluded.insert(path.clone());
                }
                !hit
            });
            if roots.len() == before && !excluded.iter().any(|p| pat.matches_path(p)) {
                return Err(unused());
            }
        }
        let mut selected = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().collect();
        while let Some(path) = todo.pop() {
            if !selected.insert(path.clone()) {
                continue;
            }
            todo.extend(self.deps.get(&path).into_iter().flatten().cloned());
            // Soft dependencies are best effort, as for modprobe: a missing one is not an
            // error (it is often built in or absent on this architecture).
            for soft in self.softdeps.get(&module_name(&path)).into_iter().flatten() {
                if let Some(p) = self.by_name.get(&module_name(soft)) {
                    todo.push(p.clone());
                }
                for name in self.aliases.get(soft.as_str()).into_iter().flatten() {
                    if let Some(p) = self.by_name.get(name) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        Ok(Selection {
            readded: excluded.intersection(&selected).cloned().collect(),
            paths: selected.into_iter().collect(),
            builtin: builtin.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko.xz kernel/drivers/md/dm-mod.ko.xz
kernel/drivers/md/dm-bufio.ko.xz:
kernel/drivers/md/dm-mod.ko.xz:
kernel/drivers/ata/ahci.ko.xz: kernel/drivers/ata/libahci.ko.xz
kernel/drivers/ata/libahci.ko.xz:
kernel/drivers/ata/pata_legacy.ko.xz:
kernel/drivers/ata/pata_acpi.ko.xz:
kernel/drivers/scsi/sd_mod.ko.xz:
kernel/drivers/scsi/mpt3sas/mpt3sas.ko.xz: kernel/drivers/scsi/raid_class.ko.xz
kernel/drivers/scsi/raid_class.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/unrelated.ko.xz:
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/overlayfs/overlay.ko\n";
    const SOFTDEP: &str = "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c post: \nsoftdep jbd2 pre: crc32c\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\n";

    fn sel(patterns: &[&str]) -> Result<Selection, SelectError> {
        let idx = ModuleIndex::parse(Metadata {
            dep: DEP,
            builtin: BUILTIN,
            softdep: SOFTDEP,
            weakdep: "",
            alias: ALIAS,
        });
        idx.select(
            "6.12.0-test",
            &patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn names_close_over_hard_and_soft_dependencies() {
        let s = sel(&["ext4", "dm-verity"]).unwrap();
        assert_eq!(
            s.paths,
            [
                "kernel/crypto/crc32c_generic.ko.xz",
                "kernel/drivers/md/dm-bufio.ko.xz",
                "kernel/drivers/md/dm-mod.ko.xz",
                "kernel/drivers/md/dm-verity.ko.xz",
                "kernel/fs/ext4/ext4.ko.xz",
                "kernel/fs/jbd2/jbd2.ko.xz",
                "kernel/fs/mbcache.ko.xz",
                "kernel/lib/crc16.ko.xz",
            ]
        );
    }

    #[test]
    fn globs_match_module_paths_within_one_directory() {
        let s = sel(&["kernel/drivers/ata/*"]).unwrap();
        assert_eq!(
            s.paths,
            [
                "kernel/drivers/ata/ahci.ko.xz",
                "kernel/drivers/ata/libahci.ko.xz",
                "kernel/drivers/ata/pata_acpi.ko.xz",
                "kernel/drivers/ata/pata_legacy.ko.xz",
            ]
        );
        // `*` does not cross a `/`: mpt3sas is one directory further down.
        let s = sel(&["kernel/drivers/scsi/*"]).unwrap();
        assert_eq!(
            s.paths,
            [
                "kernel/drivers/scsi/raid_class.ko.xz",
                "kernel/drivers/scsi/sd_mod.ko.xz"
            ]
        );
        // Without `kernel/`, a glob matches nothing (the config says how to write it).
        assert!(matches!(sel(&["drivers/ata/*"]), Err(SelectError::Unknown { .. })));
    }

    #[test]
    fn trailing_slash_and_double_star_take_a_subtree() {
        let expected = [
            "kernel/drivers/scsi/mpt3sas/mpt3sas.ko.xz",
            "kernel/drivers/scsi/raid_class.ko.xz",
            "kernel/drivers/scsi/sd_mod.ko.xz",
        ];
        assert_eq!(sel(&["kernel/drivers/scsi/"]).unwrap().paths, expected);
        assert_eq!(sel(&["kernel/drivers/scsi/**"]).unwrap().paths, expected);
    }

    #[test]
    fn negative_patterns_leave_out_what_positives_selected() {
        // Globs with or without the suffix, and names; their place in the list does not matter.
        for neg in ["!kernel/drivers/ata/pata_*", "!kernel/drivers/ata/pata_*.ko.xz"] {
            let s = sel(&[neg, "kernel/drivers/ata/"]).unwrap();
            assert_eq!(
                s.paths,
                ["kernel/drivers/ata/ahci.ko.xz", "kernel/drivers/ata/libahci.ko.xz"]
            );
            assert!(s.readded.is_empty());
        }
        let s = sel(&["kernel/drivers/ata/", "!pata-legacy"]).unwrap();
        assert!(!s.paths.iter().any(|p| p.contains("pata_legacy")));
        assert!(s.paths.iter().any(|p| p.contains("pata_acpi")));
    }

    #[test]
    fn negative_patterns_do_not_remove_dependencies() {
        // libahci is left out as a root but ahci needs it: it comes back, and is reported.
        let s = sel(&[
            "kernel/drivers/ata/",
            "!kernel/drivers/ata/lib*",
            "!kernel/drivers/ata/pata_*",
        ])
        .unwrap();
        assert_eq!(
            s.paths,
            ["kernel/drivers/ata/ahci.ko.xz", "kernel/drivers/ata/libahci.ko.xz"]
        );
        assert_eq!(s.readded, ["kernel/drivers/ata/libahci.ko.xz"]);
        let s = sel(&["kernel/drivers/scsi/", "!raid_class"]).unwrap();
        assert_eq!(s.readded, ["kernel/drivers/scsi/raid_class.ko.xz"]);
    }

    #[test]
    fn negative_pattern_that_leaves_out_nothing_is_an_error() {
        // Matches no module at all.
        let e = sel(&["kernel/drivers/ata/", "!kernel/drivers/ata/pata_nothing*"]).unwrap_err();
        assert_eq!(
            e,
            SelectError::UnusedExclusion {
                version: "6.12.0-test".into(),
                pattern: "kernel/drivers/ata/pata_nothing*".into()
            }
        );
        assert!(e.to_string().contains("`!kernel/drivers/ata/pata_nothing*`"));
        // Matches a module, but not one the positive patterns selected.
        assert!(matches!(
            sel(&["ext4", "!kernel/drivers/ata/pata_legacy"]),
            Err(SelectError::UnusedExclusion { .. })
        ));
        // A built-in module cannot be left out.
        assert!(matches!(
            sel(&["virtio_pci", "ext4", "!virtio_pci"]),
            Err(SelectError::UnusedExclusion { .. })
        ));
        // Two exclusions overlapping are both in use.
        assert!(sel(&["kernel/drivers/ata/", "!pata_legacy", "!kernel/drivers/ata/pata_*"]).is_ok());
    }

    #[test]
    fn pattern_forms_are_checked_with_a_fix() {
        for good in [
            "ext4",
            "dm-verity",
            "!pata_legacy",
            "kernel/drivers/ata/",
            "!kernel/drivers/ata/pata_*",
        ] {
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        let e = check_pattern("drivers/ata/*").unwrap_err();
        assert!(
            e.contains("must start with `kernel/`") && e.contains("`kernel/drivers/ata/*`"),
            "{e}"
        );
        assert!(check_pattern("!").is_err());
        assert!(check_pattern("!!ext4").is_err());
        assert!(
            check_pattern("kernel/drivers/[ata")
                .unwrap_err()
                .contains("not a valid glob")
        );
    }

    #[test]
    fn builtin_names_are_satisfied_without_files() {
        let s = sel(&["virtio_pci", "overlay", "virtio_blk"]).unwrap();
        assert_eq!(s.builtin, ["overlay", "virtio_pci"]);
        assert_eq!(s.paths, ["kernel/drivers/block/virtio_blk.ko.xz"]);
    }

    #[test]
    fn unknown_module_is_named() {
        let e = sel(&["ext4", "no_such_mod"]).unwrap_err();
        assert!(matches!(&e, SelectError::Unknown { pattern, .. } if pattern == "no_such_mod"));
        assert!(e.to_string().contains("6.12.0-test"));
        assert!(sel(&["kernel/drivers/nothing/*"]).is_err());
    }
}
