//! Kernel module selection, from the metadata depmod writes (pure; unit-tested).
//!
//! Patterns are module names (`virtio_blk`; `-` and `_` are the same) or globs over module
//! paths below `kernel/` (`drivers/ata/*`). The selection is closed over `modules.dep`
//! (hard dependencies), `modules.softdep` (pre: and post: soft dependencies) and
//! `modules.weakdep`; soft and weak dependencies may name aliases (`crypto-crc32c`), which
//! resolve through `modules.alias`. A name that is built into the kernel
//! (`modules.builtin`) is satisfied without a file.

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
}

/// A pattern that matched no module, built-in or not.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "kernel {version}: module pattern `{pattern}` matches no module (neither a loadable module in modules.dep nor a built-in one in modules.builtin)"
)]
pub struct UnknownModule {
    pub version: String,
    pub pattern: String,
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

    /// Select modules for `patterns`, closed over hard and soft dependencies.
    pub fn select(&self, version: &str, patterns: &[String]) -> Result<Selection, UnknownModule> {
        let mut roots: BTreeSet<String> = BTreeSet::new();
        let mut builtin = BTreeSet::new();
        for pattern in patterns {
            let is_glob = pattern.contains(['/', '*', '?', '[']);
            let mut matched = false;
            if is_glob {
                let pat = glob::Pattern::new(pattern).map_err(|_| UnknownModule {
                    version: version.into(),
                    pattern: pattern.clone(),
                })?;
                for path in self.deps.keys() {
                    let rel = path.strip_prefix("kernel/").unwrap_or(path);
                    let without_ext = rel.split(".ko").next().unwrap_or(rel);
                    if pat.matches(rel) || pat.matches(without_ext) {
                        roots.insert(path.clone());
                        matched = true;
                    }
                }
            } else {
                let name = module_name(pattern);
                if let Some(path) = self.by_name.get(&name) {
                    roots.insert(path.clone());
                    matched = true;
                } else if self.builtin.contains(&name) {
                    builtin.insert(name);
                    matched = true;
                }
            }
            if !matched {
                return Err(UnknownModule {
                    version: version.into(),
                    pattern: pattern.clone(),
                });
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
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/unrelated.ko.xz:
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/overlayfs/overlay.ko\n";
    const SOFTDEP: &str = "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c post: \nsoftdep jbd2 pre: crc32c\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\n";

    fn sel(patterns: &[&str]) -> Result<Selection, UnknownModule> {
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
    fn globs_match_paths_below_kernel() {
        let s = sel(&["drivers/ata/*"]).unwrap();
        assert_eq!(
            s.paths,
            ["kernel/drivers/ata/ahci.ko.xz", "kernel/drivers/ata/libahci.ko.xz"]
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
        assert_eq!(e.pattern, "no_such_mod");
        assert!(e.to_string().contains("6.12.0-test"));
        assert!(sel(&["drivers/nothing/*"]).is_err());
    }
}
