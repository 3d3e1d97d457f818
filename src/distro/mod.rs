//! The distribution boundary: everything a package manager decides sits behind [`Distro`].
//!
//! The build stages ask a backend for the builder image, the commands to run in it (argv from
//! pure functions; the commands answer in JSON) and the meaning of what came back; the
//! package model below ([`Package`], [`closure`], [`prune`], [`owners`]) is the same for every
//! package manager. Debian (apt/dpkg through mmdebstrap) is the one backend today
//! ([`debian::Debian`]); dnf, zypper, pacman or apk would be others of the same shape.

pub mod debian;

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use serde::Deserialize;
use strata_format::layer::{EntryKind, Layer};

use crate::config::Distribution;
use crate::engine::run::Command;

/// One installed package, as every backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Dependencies that must be installed with it: each inner list is a set of
    /// alternatives (any one satisfies it).
    pub depends: Vec<Vec<String>>,
    /// Virtual names it provides.
    pub provides: Vec<String>,
    /// The paths it owns, relative to `/` as the layer holds them (`usr/bin/sh`).
    pub files: Vec<String>,
}

/// The files of a builder image's build context.
#[derive(Debug, Clone, Copy)]
pub struct BuilderContext {
    /// Short name of the image: `localhost/strata-builder-NAME:…`.
    pub name: &'static str,
    /// The Containerfile's path in the context and its text.
    pub containerfile: (&'static str, &'static str),
    /// Further files (the commands strata runs), path in the context and text; mode 0755.
    pub files: &'static [(&'static str, &'static str)],
}

/// What the repository says about itself (the answer of [`Distro::release_command`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReleaseAnswer {
    /// Whether the mirror answered at all.
    pub reachable: bool,
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub valid_until: String,
    #[serde(default)]
    pub suite: String,
    #[serde(default)]
    pub codename: String,
}

/// What the kernel fetch unpacked (the answer of [`Distro::kernel_fetch_command`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KernelFetched {
    /// The versioned kernel package (`linux-image-6.12.117+deb13-amd64`).
    pub package: String,
    /// Its package version.
    pub version: String,
    /// The kernel release (`uname -r`), the name of its modules directory.
    pub uname: String,
}

/// What the modules assembly reported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Assembled {
    /// Firmware referenced by a selected module that no unpacked package provides.
    pub firmware_missing: Vec<String>,
}

/// The architecture of a layer set, as each consumer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    /// For extension images (the DPS partition types).
    pub sysext: strata_format::ddi::Arch,
    /// For OCI image configs.
    pub oci: oci_spec::image::Arch,
}

/// Where the unpacked kernel and its metadata are in the builder container after the fetch.
pub mod kernel_paths {
    /// The metadata depmod wrote (`modules.dep`, `.builtin`, `.softdep`, `.weakdep`, `.alias`).
    pub const META: &str = "/work/meta";
    /// The kernel image.
    pub const IMAGE: &str = "/work/vmlinuz";
    /// Where the assembly reads the selection (one module path per line) from.
    pub const SELECTION_DIR: &str = "/work";
    pub const SELECTION_FILE: &str = "selection.txt";
    /// The assembled modules tree (`usr/lib/modules/…`, `usr/lib/firmware/…`).
    pub const OUT: &str = "/out";
}

/// A distribution's package manager, in strata's verbs.
pub trait Distro: Send + Sync + std::fmt::Debug {
    /// `distribution.id` in a layer set.
    fn id(&self) -> &'static str;
    /// The builder image: the package manager and every tool a build runs.
    fn builder(&self) -> BuilderContext;
    /// The default mirror, components and architecture of a layer set.
    fn defaults(&self) -> (&'static str, &'static [&'static str], &'static str);
    /// Whether `name` is a valid package name.
    fn valid_package_name(&self, name: &str) -> bool;
    /// The names a layer set's architecture has for images and OCI.
    fn architecture(&self, name: &str) -> Result<Architecture>;

    /// The command answering with a [`ReleaseAnswer`].
    fn release_command(&self, d: &Distribution) -> Command;
    /// The repository's epoch (its release date) from the answer; an expired repository is
    /// an error unless `d.allow_expired_release`.
    fn release_epoch(&self, d: &Distribution, answer: &ReleaseAnswer, now: u64) -> Result<u64>;

    /// The command installing `packages` and their dependencies into the empty root
    /// `target`, with mtimes from `epoch`.
    fn install_command(&self, d: &Distribution, packages: &[String], target: &str, epoch: u64) -> Command;
    /// Packages the output of a failed install names as unknown.
    fn missing_packages(&self, output: &str) -> Vec<String>;
    /// The command answering with the packages installed in `target` (JSON, parsed by
    /// [`Distro::installed`]).
    fn query_command(&self, target: &str) -> Command;
    /// The installed packages, from the answer of [`Distro::query_command`].
    fn installed(&self, answer: &[u8]) -> Result<Vec<Package>>;
    /// Paths of the package manager's own state in a root (removed from every layer).
    fn state_paths(&self) -> &'static [&'static str];

    /// The command fetching and unpacking the kernel `package` (a metapackage is resolved)
    /// and `firmware` packages; answers with [`KernelFetched`], leaves the files at
    /// [`kernel_paths`].
    fn kernel_fetch_command(&self, d: &Distribution, package: &str, firmware: &[String]) -> Command;
    /// The command copying the selected modules and their firmware to [`kernel_paths::OUT`]
    /// and indexing them; answers with [`Assembled`].
    fn kernel_assemble_command(&self, uname: &str) -> Command;
}

/// The backend for `distribution.id`.
pub fn backend(id: &str) -> Option<&'static dyn Distro> {
    match id {
        "debian" => Some(&debian::Debian),
        _ => None,
    }
}

/// The ids [`backend`] knows.
pub const KNOWN: [&str; 1] = ["debian"];

/// The installed packages reachable from `requested` through their dependencies. For a set
/// of alternatives the first installed one is taken; virtual names resolve through
/// `provides`. Errors name a requested package that is not installed.
pub fn closure(installed: &[Package], requested: &[String]) -> Result<BTreeSet<String>, String> {
    let by_name: HashMap<&str, &Package> = installed.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut providers: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in installed {
        for v in &p.provides {
            providers.entry(v.as_str()).or_default().push(p.name.as_str());
        }
    }
    let resolve = |name: &str| -> Option<&str> {
        by_name
            .get(name)
            .map(|p| p.name.as_str())
            .or_else(|| providers.get(name).and_then(|v| v.first().copied()))
    };
    let mut keep = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    for r in requested {
        let p = resolve(r).ok_or_else(|| r.clone())?;
        todo.push(p.to_string());
    }
    while let Some(name) = todo.pop() {
        if !keep.insert(name.clone()) {
            continue;
        }
        let pkg = by_name[name.as_str()];
        for alts in &pkg.depends {
            if let Some(p) = alts.iter().find_map(|a| resolve(a))
                && !keep.contains(p)
            {
                todo.push(p.to_string());
            }
        }
    }
    Ok(keep)
}

/// What [`prune`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Packages whose files were removed.
    pub packages: Vec<String>,
    /// Number of paths removed.
    pub paths: usize,
}

/// Remove from `layer` the files of installed packages outside `keep`. Directories are
/// removed only when no kept package lists them and nothing is left in them.
pub fn prune(layer: &mut Layer, installed: &[Package], keep: &BTreeSet<String>) -> Pruned {
    let mut kept_paths: BTreeSet<&str> = BTreeSet::new();
    let mut drop_paths: BTreeSet<&str> = BTreeSet::new();
    let mut pruned = Pruned::default();
    for p in installed {
        if keep.contains(&p.name) {
            kept_paths.extend(p.files.iter().map(String::as_str));
        } else {
            pruned.packages.push(p.name.clone());
            drop_paths.extend(p.files.iter().map(String::as_str));
        }
    }
    let drop: BTreeSet<&str> = drop_paths.into_iter().filter(|p| !kept_paths.contains(p)).collect();
    // Files first; then directories that became empty, deepest first.
    let removed = layer.remove_where(|e| !matches!(e.kind, EntryKind::Dir) && drop.contains(e.path.as_str()));
    pruned.paths += removed.len();
    let mut dirs: Vec<&str> = drop
        .iter()
        .copied()
        .filter(|d| layer.get(d).is_some_and(|e| e.kind == EntryKind::Dir))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let prefix = format!("{d}/");
        let empty = !layer.entries().iter().any(|e| e.path.starts_with(&prefix));
        if empty {
            pruned.paths += layer.remove_where(|e| e.path == d).len();
        }
    }
    pruned
}

/// Which installed packages own each path.
pub fn owners(installed: &[Package]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for p in installed {
        for path in &p.files {
            out.entry(path.clone()).or_default().push(p.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_format::layer::Entry;

    fn pkg(name: &str, depends: &[&[&str]], provides: &[&str], files: &[&str]) -> Package {
        Package {
            name: name.into(),
            version: "1".into(),
            architecture: "amd64".into(),
            depends: depends
                .iter()
                .map(|a| a.iter().map(|s| s.to_string()).collect())
                .collect(),
            provides: provides.iter().map(|s| s.to_string()).collect(),
            files: files.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn closure_follows_alternatives_and_provides() {
        let installed = [
            pkg("systemd", &[&["libc6"], &["default-dbus", "dbus"]], &[], &[]),
            pkg("libc6", &[], &[], &[]),
            pkg("dbus-broker", &[], &["default-dbus"], &[]),
            pkg("dbus", &[], &[], &[]),
            pkg("dpkg", &[], &[], &[]),
        ];
        let keep = closure(&installed, &["systemd".into()]).unwrap();
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            ["dbus-broker", "libc6", "systemd"]
        );
        assert_eq!(closure(&installed, &["bash".into()]).unwrap_err(), "bash");
    }

    #[test]
    fn prune_removes_other_packages_files_and_their_empty_dirs() {
        let mut layer = Layer::from_entries(vec![
            Entry::file("usr/bin/dpkg", "x", 0o755, 1),
            Entry::dir("usr/share/dpkg", 0o755, 1),
            Entry::file("usr/share/dpkg/cputable", "x", 0o644, 1),
            Entry::file("usr/lib/systemd/systemd", "x", 0o755, 1),
        ])
        .unwrap();
        let installed = [
            pkg(
                "systemd",
                &[],
                &[],
                &["usr", "usr/lib", "usr/lib/systemd", "usr/lib/systemd/systemd"],
            ),
            pkg(
                "dpkg",
                &[],
                &[],
                &[
                    "usr",
                    "usr/bin",
                    "usr/bin/dpkg",
                    "usr/share/dpkg",
                    "usr/share/dpkg/cputable",
                ],
            ),
        ];
        let keep = BTreeSet::from(["systemd".to_string()]);
        let pruned = prune(&mut layer, &installed, &keep);
        assert_eq!(pruned.packages, ["dpkg"]);
        let paths: Vec<&str> = layer.entries().iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"usr/lib/systemd/systemd"), "{paths:?}");
        assert!(
            !paths.contains(&"usr/bin"),
            "a directory only dpkg listed, left empty: {paths:?}"
        );
        assert!(!paths.iter().any(|p| p.contains("dpkg")), "{paths:?}");
        assert_eq!(owners(&installed)["usr"], ["systemd", "dpkg"]);
    }
}
