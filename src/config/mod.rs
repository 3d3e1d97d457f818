//! Layer-set configuration: `layers/<set>/base.toml` and one `<name>.toml` per extension
//! layer ([`extension`]).
//!
//! TOML with unknown keys rejected. Every error names the file, the line and the key, and
//! where possible says what would be accepted instead.
//!
//! A layer set may come from someone else, so everything in it is read as untrusted input:
//! a TOML file must be a regular file of at most [`MAX_TOML_BYTES`], and an extension's
//! `files.source` must stay inside the set directory ([`extension`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_format::compress::Compression;
use toml::Spanned;

mod error;
pub mod extension;
mod read;

pub use error::ConfigError;
use error::{ErrAt, err_fn, toml_error};
pub use extension::{Extension, ExtraFile, Filesystem};
pub use read::MAX_TOML_BYTES;
pub(crate) use read::read_regular_file;
use read::read_toml;

/// The default mirror of a Debian set.
pub const DEFAULT_DEBIAN_MIRROR: &str = crate::distro::debian::DEFAULT_MIRROR;

/// A parsed and validated layer set.
#[derive(Debug, Clone)]
pub struct LayerSet {
    /// The directory the set was read from.
    pub dir: PathBuf,
    /// The set's name (its directory name).
    pub name: String,
    pub distribution: Distribution,
    pub base: Base,
    pub kernel: Kernel,
    /// Extension layers on top of the base layer, sorted by name.
    pub extensions: Vec<Extension>,
}

/// Which distribution the layers are built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Distribution {
    /// `debian` (the only one with a builder image today).
    pub id: String,
    /// Release code name, e.g. `trixie`.
    pub release: String,
    pub mirror: String,
    pub components: Vec<String>,
    /// The distribution's architecture name, e.g. `amd64`.
    pub architecture: String,
    /// Accept a repository whose release file has expired (`Valid-Until` in the past), as
    /// a frozen mirror snapshot's does. The epoch still comes from its `Date:`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_expired_release: bool,
    /// Mount `/proc` in the build root while maintainer scripts run (the install containers
    /// then get `CAP_SYS_ADMIN`), for packages whose scripts fail without it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mount_proc: bool,
}

/// The base layer: the userspace of the initrd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Base {
    pub packages: Vec<String>,
    /// Paths (globs, relative to `/`) removed from the layer: docs, man pages, locales.
    pub remove: Vec<String>,
    #[serde(serialize_with = "display")]
    pub compression: Compression,
    /// What the console offers when the initrd goes to emergency mode (`emergency-shell`).
    pub emergency_shell: EmergencyShell,
}

/// `[base] emergency-shell`: whether emergency mode in the initrd opens a root shell on the
/// console without a password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmergencyShell {
    /// sulogin asks for the root password as the distribution set it; Debian's root account
    /// is locked, so there is no shell, and the console says how to get one.
    #[default]
    Locked,
    /// A root shell on the console without a password (`SYSTEMD_SULOGIN_FORCE=1`): whoever is
    /// at the console of a machine whose boot failed gets root in the initrd.
    Open,
}

impl EmergencyShell {
    /// The values `emergency-shell` accepts, as written in base.toml.
    pub const VALUES: [(&str, EmergencyShell); 2] =
        [("locked", EmergencyShell::Locked), ("open", EmergencyShell::Open)];
}

/// The kernel and its modules layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kernel {
    /// Package providing the kernel, e.g. `linux-image-amd64` (a metapackage is resolved to
    /// the versioned package it depends on).
    pub package: String,
    /// Module names (`virtio_blk`, `dm-verity`) or globs over module paths as modules.dep
    /// writes them (`kernel/drivers/ata/*`, `kernel/drivers/ata/` for the subtree); with a
    /// leading `!`, left out of what the others select. Dependencies and soft dependencies
    /// are added, even of a module a `!` pattern names (see `stage::kernel::select`).
    pub modules: Vec<String>,
    /// Packages whose firmware files may be included when a selected module references them.
    pub firmware_packages: Vec<String>,
}

fn display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

// ---- raw TOML shape -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    distribution: RawDistribution,
    base: RawBase,
    kernel: RawKernel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDistribution {
    id: Spanned<String>,
    release: Spanned<String>,
    mirror: Option<Spanned<String>>,
    components: Option<Vec<Spanned<String>>>,
    architecture: Option<Spanned<String>>,
    #[serde(default)]
    allow_expired_release: bool,
    #[serde(default)]
    mount_proc: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBase {
    packages: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    compression: Option<Spanned<String>>,
    emergency_shell: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKernel {
    package: Spanned<String>,
    modules: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    firmware_packages: Vec<Spanned<String>>,
}

impl LayerSet {
    /// Read `dir/base.toml` and every other `dir/*.toml` as an extension layer.
    pub fn load(dir: &Path) -> anyhow::Result<LayerSet> {
        use anyhow::Context as _;
        let file = dir.join("base.toml");
        let text =
            read_toml(&file).with_context(|| format!("reading the layer set's base layer {}", file.display()))?;
        let mut set = parse(&file, &text)?;
        set.dir = dir.to_path_buf();
        set.name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "layers".into());
        let entries = std::fs::read_dir(dir).with_context(|| format!("listing the layer set {}", dir.display()))?;
        let others = extension_files(dir, entries.map(|e| e.map(|e| e.path())))?;
        for file in others {
            let text = read_toml(&file).with_context(|| format!("reading the extension layer {}", file.display()))?;
            set.extensions.push(extension::parse(&file, &text, dir, set.distro())?);
        }
        Ok(set)
    }

    /// The distribution backend of the set (checked when the set was parsed).
    pub fn distro(&self) -> &'static dyn crate::distro::Distro {
        crate::distro::backend(&self.distribution.id).expect("distribution.id is checked by config::parse")
    }

    /// The extension called `name`.
    pub fn extension(&self, name: &str) -> Option<&Extension> {
        self.extensions.iter().find(|x| x.name == name)
    }
}

/// The extension files among a layer set's directory entries (`*.toml` but `base.toml`),
/// sorted. An entry that cannot be read could be an extension: it is an error naming the
/// directory, never silently dropped.
fn extension_files(
    dir: &Path,
    entries: impl Iterator<Item = std::io::Result<PathBuf>>,
) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    let mut files = Vec::new();
    for entry in entries {
        let path =
            entry.with_context(|| format!("listing the layer set {}: an entry cannot be read", dir.display()))?;
        if path.extension().is_some_and(|e| e == "toml") && path.file_name().is_some_and(|n| n != "base.toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parse and validate one `base.toml` text. `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<LayerSet, ConfigError> {
    let err_at = err_fn(file, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(e, text, &err_at))?;

    let d = raw.distribution;
    let Some(distro) = crate::distro::backend(d.id.get_ref()) else {
        return Err(err_at(
            Some(d.id.span()),
            Some("distribution.id"),
            format!(
                "unsupported distribution `{}`: strata has a backend for {}",
                d.id.get_ref(),
                crate::distro::KNOWN.map(|k| format!("`{k}`")).join(", ")
            ),
        ));
    };
    let (default_mirror, default_components, default_architecture) = distro.defaults();
    check_word(&d.release, "distribution.release", &err_at)?;
    if let Some(m) = &d.mirror
        && !(m.get_ref().starts_with("http://") || m.get_ref().starts_with("https://"))
    {
        return Err(err_at(
            Some(m.span()),
            Some("distribution.mirror"),
            format!("mirror `{}` must be an http:// or https:// URL", m.get_ref()),
        ));
    }
    let mirror = d.mirror.map_or_else(|| default_mirror.to_string(), |m| m.into_inner());
    let components = match d.components {
        Some(c) => c
            .into_iter()
            .map(|c| check_word(&c, "distribution.components", &err_at).map(|_| c.into_inner()))
            .collect::<Result<_, _>>()?,
        None => default_components.iter().map(|c| c.to_string()).collect(),
    };
    let (architecture, architecture_span) = match d.architecture {
        Some(a) => {
            check_word(&a, "distribution.architecture", &err_at)?;
            (a.get_ref().clone(), Some(a.span()))
        }
        None => (default_architecture.to_string(), None),
    };
    if let Err(e) = distro.architecture(&architecture) {
        return Err(err_at(
            architecture_span,
            Some("distribution.architecture"),
            format!("{e:#}"),
        ));
    }

    let b = raw.base;
    if b.packages.get_ref().is_empty() {
        return Err(err_at(
            Some(b.packages.span()),
            Some("base.packages"),
            "the package list is empty".into(),
        ));
    }
    let packages = package_list(b.packages.into_inner(), "base.packages", distro, &err_at)?;
    let remove = b
        .remove
        .iter()
        .map(|r| check_remove_glob(r, "base.remove", &err_at))
        .collect::<Result<_, _>>()?;
    let compression = match b.compression {
        Some(c) => c
            .get_ref()
            .parse::<Compression>()
            .map_err(|e| err_at(Some(c.span()), Some("base.compression"), e.to_string()))?,
        None => Compression::DEFAULT,
    };
    let emergency_shell = match b.emergency_shell {
        Some(v) => EmergencyShell::VALUES
            .iter()
            .find(|(name, _)| name == v.get_ref())
            .map(|(_, shell)| *shell)
            .ok_or_else(|| {
                err_at(
                    Some(v.span()),
                    Some("base.emergency-shell"),
                    format!(
                        "`{}` is not an emergency shell: `locked` (the default: sulogin asks for the root \
                         password, and Debian's root account is locked) or `open` (a root shell on the \
                         console without a password)",
                        v.get_ref()
                    ),
                )
            })?,
        None => EmergencyShell::default(),
    };

    let k = raw.kernel;
    check_package(&k.package, "kernel.package", distro, &err_at)?;
    if !k.modules.get_ref().iter().any(|m| !m.get_ref().starts_with('!')) {
        return Err(err_at(
            Some(k.modules.span()),
            Some("kernel.modules"),
            "no modules selected".into(),
        ));
    }
    let mut modules = Vec::new();
    for m in k.modules.into_inner() {
        if let Err(message) = crate::stage::kernel::select::check_pattern(m.get_ref()) {
            return Err(err_at(Some(m.span()), Some("kernel.modules"), message));
        }
        modules.push(m.into_inner());
    }
    let firmware_packages = package_list(k.firmware_packages, "kernel.firmware-packages", distro, &err_at)?;

    Ok(LayerSet {
        dir: PathBuf::new(),
        name: String::new(),
        distribution: Distribution {
            id: d.id.into_inner(),
            release: d.release.into_inner(),
            mirror,
            components,
            architecture,
            allow_expired_release: d.allow_expired_release,
            mount_proc: d.mount_proc,
        },
        base: Base {
            packages,
            remove,
            compression,
            emergency_shell,
        },
        kernel: Kernel {
            package: k.package.into_inner(),
            modules,
            firmware_packages,
        },
        extensions: vec![],
    })
}

/// A `remove` entry: a glob over paths inside the layer, leading `/` dropped.
fn check_remove_glob(r: &Spanned<String>, key: &str, err_at: &ErrAt) -> Result<String, ConfigError> {
    let p = r.get_ref().trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|c| c == "..") || glob::Pattern::new(p).is_err() {
        return Err(err_at(
            Some(r.span()),
            Some(key),
            format!("`{}` is not a path glob inside the layer", r.get_ref()),
        ));
    }
    Ok(p.to_string())
}

fn package_list(
    list: Vec<Spanned<String>>,
    key: &str,
    distro: &dyn crate::distro::Distro,
    err_at: &ErrAt,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        check_package(&p, key, distro, err_at)?;
        if out.contains(p.get_ref()) {
            return Err(err_at(
                Some(p.span()),
                Some(key),
                format!("package `{}` is listed twice", p.get_ref()),
            ));
        }
        out.push(p.into_inner());
    }
    Ok(out)
}

/// A package name as the distribution's rules allow it.
fn check_package(
    p: &Spanned<String>,
    key: &str,
    distro: &dyn crate::distro::Distro,
    err_at: &ErrAt,
) -> Result<(), ConfigError> {
    let name = p.get_ref();
    if distro.valid_package_name(name) {
        Ok(())
    } else {
        let id = distro.id();
        let id = id[..1].to_uppercase() + &id[1..];
        Err(err_at(
            Some(p.span()),
            Some(key),
            format!("`{name}` is not a valid {id} package name"),
        ))
    }
}

fn check_word(w: &Spanned<String>, key: &str, err_at: &ErrAt) -> Result<(), ConfigError> {
    let s = w.get_ref();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        Ok(())
    } else {
        Err(err_at(
            Some(w.span()),
            Some(key),
            format!("`{s}` is not a valid name (letters, digits, `-`, `_` and `.`)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[distribution]
id = "debian"
release = "trixie"

[base]
packages = ["systemd", "udev"]
remove = ["usr/share/doc"]
compression = "xz"

[kernel]
package = "linux-image-amd64"
modules = ["virtio_blk", "ext4"]
"#;

    fn parse_str(text: &str) -> Result<LayerSet, ConfigError> {
        parse(Path::new("layers/test/base.toml"), text)
    }

    #[test]
    fn good_config_and_defaults() {
        let set = parse_str(GOOD).unwrap();
        assert_eq!(set.distribution.mirror, DEFAULT_DEBIAN_MIRROR);
        assert_eq!(set.distribution.components, ["main"]);
        assert_eq!(set.distribution.architecture, "amd64");
        assert_eq!(set.base.compression, Compression::Xz { level: 6 });
        assert_eq!(set.kernel.modules, ["virtio_blk", "ext4"]);
        assert_eq!(set.base.emergency_shell, EmergencyShell::Locked);
    }

    #[test]
    fn emergency_shell_is_locked_or_open() {
        let with = |v: &str| parse_str(&GOOD.replace("compression = \"xz\"", &format!("emergency-shell = {v}")));
        assert_eq!(with("\"open\"").unwrap().base.emergency_shell, EmergencyShell::Open);
        assert_eq!(with("\"locked\"").unwrap().base.emergency_shell, EmergencyShell::Locked);
        let e = with("\"root-shell\"").unwrap_err();
        assert_eq!(
            ((e.line, e.column), e.key.as_deref()),
            ((9, 19), Some("base.emergency-shell")),
            "{e}"
        );
        assert!(
            e.message
                .contains("`root-shell` is not an emergency shell: `locked` (the default"),
            "{e}"
        );
        assert!(
            e.message
                .contains("or `open` (a root shell on the console without a password)"),
            "{e}"
        );
        let e = with("true").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("base.emergency-shell"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("remove = [", "colour = \"red\"\nremove = [");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert_eq!(e.key.as_deref(), Some("base.colour"));
        let shown = e.to_string();
        assert!(shown.starts_with("layers/test/base.toml:8:"), "{shown}");
        assert!(shown.contains("unknown field `colour`"), "{shown}");
    }

    #[test]
    fn bad_values_point_at_their_line() {
        let cases = [
            (
                GOOD.replace("\"udev\"", "\"Udev!\""),
                7,
                "base.packages",
                "not a valid Debian package name",
            ),
            (
                GOOD.replace("\"udev\"", "\"systemd\""),
                7,
                "base.packages",
                "listed twice",
            ),
            (
                GOOD.replace("compression = \"xz\"", "compression = \"lz5\""),
                9,
                "base.compression",
                "unknown compression",
            ),
            (
                GOOD.replace("id = \"debian\"", "id = \"arch\""),
                3,
                "distribution.id",
                "unsupported distribution",
            ),
            (
                GOOD.replace("[\"virtio_blk\", \"ext4\"]", "[]"),
                13,
                "kernel.modules",
                "no modules",
            ),
            (
                GOOD.replace("[\"virtio_blk\", \"ext4\"]", "[\"!ext4\"]"),
                13,
                "kernel.modules",
                "no modules",
            ),
            (
                GOOD.replace("[\"virtio_blk\", \"ext4\"]", "[\"drivers/ata/*\"]"),
                13,
                "kernel.modules",
                "must start with `kernel/`",
            ),
            (
                GOOD.replace("[\"usr/share/doc\"]", "[\"../etc\"]"),
                8,
                "base.remove",
                "not a path glob",
            ),
            (
                GOOD.replace("release = \"trixie\"", "release = \"trixie\"\nmirror = \"ftp://x\""),
                5,
                "distribution.mirror",
                "must be an http",
            ),
        ];
        for (text, line, key, msg) in cases {
            let e = parse_str(&text).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (line, Some(key)), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    /// The key at fault is named: not the value (`key `19``), not a syntax character, and a
    /// key written twice by its name.
    #[test]
    fn schema_and_syntax_errors_name_the_right_key() {
        let cases = [
            (
                GOOD.replace("compression = \"xz\"", "compression = 19"),
                (9, 15),
                Some("base.compression"),
                "invalid type: integer `19`, expected a string",
            ),
            (
                GOOD.replace("[\"virtio_blk\", \"ext4\"]", "[\"ext4\", 7]"),
                (13, 20),
                Some("kernel.modules"),
                "expected a string",
            ),
            (
                GOOD.replace("[distribution]", "[distribution]\nallow-expired-release = \"yes\""),
                (3, 25),
                Some("distribution.allow-expired-release"),
                "expected a boolean",
            ),
            (
                GOOD.replace("release = \"trixie\"", "release = \"trixie\"\nrelease = \"forky\""),
                (5, 1),
                Some("release"),
                "duplicate key: `release` is set twice",
            ),
            (
                GOOD.replace("[kernel]", "[kernel]\n[kernel]"),
                (12, 2),
                Some("kernel"),
                "duplicate key: `kernel` is set twice",
            ),
            (GOOD.replace("[kernel]", "[kernel"), (11, 8), None, "unclosed table"),
            (
                GOOD.replace("[kernel]", "[kernel]\nmodule = []"),
                (12, 1),
                Some("kernel.module"),
                "unknown field `module`",
            ),
            (
                GOOD.replace("package = \"linux-image-amd64\"\n", ""),
                (11, 1),
                Some("kernel.package"),
                "missing field `package`",
            ),
            (
                GOOD.replace("release = \"trixie\"", "release = \"trixie\"\narchitecture = \"sparc\""),
                (5, 16),
                Some("distribution.architecture"),
                "sparc",
            ),
        ];
        for (text, at, key, msg) in cases {
            let e = parse_str(&text).unwrap_err();
            assert_eq!(((e.line, e.column), e.key.as_deref()), (at, key), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn missing_section_is_named() {
        let text = GOOD.split("[kernel]").next().unwrap();
        let e = parse_str(text).unwrap_err();
        assert!(e.to_string().contains("missing field `kernel`"), "{e}");
    }

    #[test]
    fn an_unreadable_directory_entry_is_an_error_not_a_dropped_extension() {
        let dir = Path::new("layers/test");
        let ok = [
            Ok(dir.join("storage.toml")),
            Ok(dir.join("base.toml")),
            Ok(dir.join("README")),
            Ok(dir.join("network.toml")),
        ];
        assert_eq!(
            extension_files(dir, ok.into_iter()).unwrap(),
            [dir.join("network.toml"), dir.join("storage.toml")]
        );
        let broken = [Ok(dir.join("network.toml")), Err(std::io::Error::from_raw_os_error(5))];
        let e = format!("{:#}", extension_files(dir, broken.into_iter()).unwrap_err());
        assert!(
            e.contains("listing the layer set layers/test: an entry cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn shipped_default_set_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("layers/debian-trixie");
        let set = LayerSet::load(&dir).unwrap();
        assert_eq!(set.name, "debian-trixie");
        assert!(set.base.packages.iter().any(|p| p == "systemd"));
        // Both shipped sets' kernel.modules are in the pattern grammar (`!`, `kernel/…`).
        let forky = LayerSet::load(&dir.with_file_name("debian-forky")).unwrap();
        for k in [&set.kernel, &forky.kernel] {
            assert!(k.modules.iter().any(|m| m.starts_with("!kernel/")), "{:?}", k.modules);
        }
        // forky's maintainer scripts need /proc; trixie's products are built without it.
        assert!(forky.distribution.mount_proc && !set.distribution.mount_proc);
    }
}
