//! Extension layers: `layers/<set>/<name>.toml`, one file per extension, each on top of the
//! set's base layer.
//!
//! ```toml
//! [extension]
//! packages = ["openssh-server"]          # installed on top of the base packages
//! remove = ["etc/ssh/ssh_host_*"]        # globs, in addition to the base layer's
//! confext = false                        # also build NAME.confext.raw from /etc
//! filesystem = "squashfs"                # or "erofs" (mkfs.erofs in the builder image)
//! scope = ["initrd"]                     # SYSEXT_SCOPE of the extension-release
//! reload-manager = true                  # systemd reloads after merging (units, generators)
//! restart-units = ["cryptsetup.target"]   # systemd ≥ 262 restarts them after the merge
//! files = [{ source = "files/x.conf", path = "usr/lib/x.conf", mode = "0644" }]
//! ```
//!
//! A `files.source` is a path relative to the layer-set directory and must stay inside it:
//! no absolute path, and after `..` and symlinks are resolved it must still lie below the
//! (resolved) set directory, so a shared layer set cannot copy the signing key or
//! `/etc/shadow` into a signed image. It must be a regular file (not a device, FIFO or
//! directory) of at most [`MAX_SOURCE_BYTES`] (16 MiB). All of this is checked when the set
//! is loaded, before any container starts.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ErrAt, check_remove_glob, err_fn, package_list, toml_error};
use crate::digest::Digest;

/// An extension layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Extension {
    /// The file stem: the image is `NAME.sysext.raw` with `extension-release.NAME`.
    pub name: String,
    /// The file the extension was read from.
    #[serde(skip)]
    pub file: PathBuf,
    /// Installed on top of the base layer's packages.
    pub packages: Vec<String>,
    /// Paths (globs) removed from the layer, after the base layer's own `remove` list.
    pub remove: Vec<String>,
    /// Files from the layer-set directory put into the layer.
    pub files: Vec<ExtraFile>,
    /// Also build `NAME.confext.raw` from the layer's `/etc`.
    pub confext: bool,
    /// The file system of the images.
    pub filesystem: Filesystem,
    /// `SYSEXT_SCOPE`: where systemd merges it (`initrd`, `system`, `portable`).
    pub scope: Vec<String>,
    /// `EXTENSION_RELOAD_MANAGER=1`: systemd reloads its units after the merge, so the
    /// extension's units and generators take effect.
    pub reload_manager: bool,
    /// `EXTENSION_RESTART_UNITS=`: units systemd (≥ 262) restarts after the merge and its
    /// reload, so that what the reloaded generators added to them is started.
    pub restart_units: Vec<String>,
}

/// The file system inside an extension image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// strata's own squashfs writer (zstd).
    Squashfs,
    /// `mkfs.erofs` from erofs-utils in the builder image (lz4hc).
    Erofs,
}

/// A file the user names explicitly, taken from the layer-set directory into the layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtraFile {
    /// Path inside the layer, relative (`usr/lib/systemd/network/80-dhcp.network`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Where it was read from.
    #[serde(skip)]
    pub source: PathBuf,
    /// Its content (the key covers its digest).
    #[serde(serialize_with = "content_digest")]
    pub data: Vec<u8>,
}

fn content_digest<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Digest::of(data))
}

/// Largest `files.source` strata reads: 16 MiB. Extra files are configuration and small
/// programs; anything bigger belongs in a package.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

const SCOPES: [&str; 3] = ["initrd", "system", "portable"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    extension: RawExtension,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExtension {
    packages: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<RawExtraFile>>,
    #[serde(default)]
    confext: bool,
    scope: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    reload_manager: bool,
    #[serde(default)]
    restart_units: Vec<Spanned<String>>,
    filesystem: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExtraFile {
    source: Spanned<String>,
    path: Spanned<String>,
    mode: Option<Spanned<String>>,
}

/// Parse one extension file. `dir` is the layer-set directory extra files are read from.
pub fn parse(
    file: &Path,
    text: &str,
    dir: &Path,
    distro: &dyn crate::distro::Distro,
) -> Result<Extension, ConfigError> {
    let err_at = err_fn(file, text);
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = strata_format::sysext::check_name(&name) {
        return Err(err_at(
            None,
            None,
            format!("{e} (the file name is the extension's name)"),
        ));
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(e, text, &err_at))?;
    let x = raw.extension;
    if x.packages.get_ref().is_empty() && x.files.is_empty() {
        return Err(err_at(
            Some(x.packages.span()),
            Some("extension.packages"),
            "the package list is empty and there are no files: the extension would hold nothing".into(),
        ));
    }
    let packages = package_list(x.packages.into_inner(), "extension.packages", distro, &err_at)?;
    let remove = x
        .remove
        .iter()
        .map(|r| check_remove_glob(r, "extension.remove", &err_at))
        .collect::<Result<_, _>>()?;
    let files = x
        .files
        .into_iter()
        .map(|f| extra_file(f, dir, &err_at))
        .collect::<Result<Vec<_>, _>>()?;
    let scope = match x.scope {
        None => vec!["initrd".to_string()],
        Some(s) if s.get_ref().is_empty() => {
            return Err(err_at(
                Some(s.span()),
                Some("extension.scope"),
                format!("empty scope; use some of {SCOPES:?}"),
            ));
        }
        Some(s) => {
            let mut scope: Vec<String> = Vec::new();
            for v in s.into_inner() {
                let why = if !SCOPES.contains(&v.get_ref().as_str()) {
                    format!("unknown scope `{}`: use {SCOPES:?}", v.get_ref())
                } else if scope.contains(v.get_ref()) {
                    format!("scope `{}` is listed twice", v.get_ref())
                } else {
                    scope.push(v.into_inner());
                    continue;
                };
                return Err(err_at(Some(v.span()), Some("extension.scope"), why));
            }
            scope
        }
    };
    let filesystem = match x.filesystem.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("squashfs", _)) => Filesystem::Squashfs,
        Some(("erofs", _)) => Filesystem::Erofs,
        Some((other, span)) => {
            return Err(err_at(
                Some(span),
                Some("extension.filesystem"),
                format!("unknown file system `{other}`: use \"squashfs\" or \"erofs\""),
            ));
        }
    };
    let mut restart_units = Vec::new();
    for u in x.restart_units {
        let unit = u.get_ref();
        if !unit.contains('.') || unit.starts_with('.') || !unit.chars().all(|c| c.is_ascii_graphic() && c != '"') {
            return Err(err_at(
                Some(u.span()),
                Some("extension.restart-units"),
                format!("`{unit}` is not a unit name (such as \"cryptsetup.target\")"),
            ));
        }
        restart_units.push(u.into_inner());
    }
    Ok(Extension {
        name,
        file: file.to_path_buf(),
        packages,
        remove,
        files,
        confext: x.confext,
        filesystem,
        scope,
        reload_manager: x.reload_manager,
        restart_units,
    })
}

fn extra_file(f: Spanned<RawExtraFile>, dir: &Path, err_at: &ErrAt) -> Result<ExtraFile, ConfigError> {
    let f = f.into_inner();
    let path = f.path.get_ref().trim_start_matches('/').to_string();
    if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(err_at(
            Some(f.path.span()),
            Some("extension.files.path"),
            format!("`{}` is not a path inside the layer", f.path.get_ref()),
        ));
    }
    let mode = match &f.mode {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.get_ref(), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                err_at(
                    Some(m.span()),
                    Some("extension.files.mode"),
                    format!("`{}` is not an octal mode like \"0644\"", m.get_ref()),
                )
            })?,
    };
    let given = f.source.get_ref();
    let source = dir.join(given);
    let data = read_source(dir, given).map_err(|why| {
        err_at(
            Some(f.source.span()),
            Some("extension.files.source"),
            format!("`{given}`: {why:#}"),
        )
    })?;
    Ok(ExtraFile {
        path,
        mode,
        source,
        data,
    })
}

/// The content of `source`, a path relative to the set directory `dir` that must resolve
/// inside it to a regular file of at most [`MAX_SOURCE_BYTES`].
fn read_source(dir: &Path, source: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::{Context as _, bail};
    if source.is_empty() {
        bail!("the path is empty; name a file in the layer-set directory");
    }
    if Path::new(source).is_absolute() {
        bail!(
            "it is an absolute path; a source is relative to the layer-set directory {} and stays inside it",
            dir.display()
        );
    }
    let root = dir
        .canonicalize()
        .with_context(|| format!("resolving the layer-set directory {}", dir.display()))?;
    let path = dir.join(source);
    let real = path
        .canonicalize()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !real.starts_with(&root) {
        bail!(
            "it resolves to {}, outside the layer-set directory {}; copy the file into the set",
            real.display(),
            root.display()
        );
    }
    super::read_regular_file(&real, MAX_SOURCE_BYTES).with_context(|| {
        if real == path {
            format!("cannot use {}", path.display())
        } else {
            format!("cannot use {} (resolved: {})", path.display(), real.display())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<Extension, ConfigError> {
        parse(&dir.join("network.toml"), text, dir, &crate::distro::debian::Debian)
    }

    #[test]
    fn good_extension_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dhcp.network"), "[Match]\nName=en*\n").unwrap();
        let x = parse_in(
            dir.path(),
            r#"[extension]
packages = ["openssh-server"]
remove = ["/etc/ssh/ssh_host_*"]
files = [{ source = "dhcp.network", path = "/usr/lib/systemd/network/80-dhcp.network" }]
"#,
        )
        .unwrap();
        assert_eq!(x.name, "network");
        assert_eq!(x.scope, ["initrd"]);
        assert!(x.restart_units.is_empty());
        assert!(!x.confext);
        assert_eq!(x.filesystem, Filesystem::Squashfs);
        assert_eq!(x.remove, ["etc/ssh/ssh_host_*"]);
        assert_eq!(x.files[0].path, "usr/lib/systemd/network/80-dhcp.network");
        assert_eq!(
            (x.files[0].mode, x.files[0].data.as_slice()),
            (0o644, &b"[Match]\nName=en*\n"[..])
        );
    }

    #[test]
    fn bad_extensions_name_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[extension]\npackages = []\n",
                2,
                Some("extension.packages"),
                "would hold nothing",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nscope = [\"usr\"]\n",
                3,
                Some("extension.scope"),
                "unknown scope `usr`",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nscope = [\"initrd\", \"initrd\"]\n",
                3,
                Some("extension.scope"),
                "scope `initrd` is listed twice",
            ),
            (
                "[extension]\npackages = [\"ok\"]\ncolour = 1\n",
                3,
                Some("extension.colour"),
                "unknown field",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nrestart-units = [\"a.target b.target\"]\n",
                3,
                Some("extension.restart-units"),
                "`a.target b.target` is not a unit name",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nfilesystem = \"ext4\"\n",
                3,
                Some("extension.filesystem"),
                "unknown file system `ext4`",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nfiles = [{ source = \"nope\", path = \"usr/x\" }]\n",
                3,
                Some("extension.files.source"),
                "cannot read",
            ),
            (
                "[extension]\npackages = [\"ok\"]\nfiles = [{ source = \"nope\", path = \"../x\" }]\n",
                3,
                Some("extension.files.path"),
                "not a path inside",
            ),
        ];
        for (text, line, key, msg) in cases {
            let e = parse_in(dir.path(), text).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (line, key), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
        let e = parse(
            &dir.path().join("my_ext.toml"),
            "[extension]\npackages = [\"ok\"]\n",
            dir.path(),
            &crate::distro::debian::Debian,
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid extension name `my_ext`"), "{e}");
    }

    /// Every way a `files.source` could reach outside the set directory, or read without end,
    /// is refused at load time with the file, line, key, value and reason.
    #[test]
    fn sources_stay_inside_the_set_and_are_bounded_regular_files() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("secret.key");
        std::fs::write(&outside, "PRIVATE").unwrap();
        let set = tmp.path().join("set");
        std::fs::create_dir_all(set.join("files/sub")).unwrap();
        std::fs::write(set.join("files/ok.conf"), "ok").unwrap();
        symlink(&outside, set.join("files/abs-link")).unwrap();
        symlink("../../secret.key", set.join("files/rel-link")).unwrap();
        symlink("abs-link", set.join("files/link-to-link")).unwrap();
        symlink("/dev/zero", set.join("files/zero")).unwrap();
        symlink("ok.conf", set.join("files/inside-link")).unwrap();
        nix::unistd::mkfifo(&set.join("files/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = std::fs::File::create(set.join("files/big")).unwrap();
        big.set_len(MAX_SOURCE_BYTES + 1).unwrap();
        let at_limit = std::fs::File::create(set.join("files/at-limit")).unwrap();
        at_limit.set_len(MAX_SOURCE_BYTES).unwrap();

        let file = |source: &str| {
            format!("[extension]\npackages = [\"ok\"]\nfiles = [{{ source = \"{source}\", path = \"usr/x\" }}]\n")
        };
        for (source, why) in [
            (outside.to_str().unwrap(), "absolute path"),
            ("/etc/shadow", "absolute path"),
            ("/dev/zero", "absolute path"),
            ("../secret.key", "outside the layer-set directory"),
            ("files/../../secret.key", "outside the layer-set directory"),
            ("files/abs-link", "outside the layer-set directory"),
            ("files/rel-link", "outside the layer-set directory"),
            ("files/link-to-link", "outside the layer-set directory"),
            ("files/zero", "outside the layer-set directory"),
            ("files/fifo", "a FIFO, not a regular file"),
            ("files/sub", "a directory, not a regular file"),
            ("files", "a directory, not a regular file"),
            ("files/big", "larger than the limit of 16777216 bytes"),
            ("", "the path is empty"),
        ] {
            let e = parse_in(&set, &file(source)).unwrap_err();
            assert_eq!((e.line, e.column), (3, 21), "{source}: {e}");
            assert_eq!(e.key.as_deref(), Some("extension.files.source"), "{source}: {e}");
            assert!(e.message.contains(&format!("`{source}`")), "{source}: {e}");
            assert!(e.message.contains(why), "{source}: want {why:?} in {e}");
        }
        // Inside the set, through a symlink or a `..` that comes back, is fine; so is a file
        // of exactly the limit.
        for source in ["files/inside-link", "files/sub/../ok.conf"] {
            let x = parse_in(&set, &file(source)).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(x.files[0].data, b"ok");
        }
        let x = parse_in(&set, &file("files/at-limit")).unwrap();
        assert_eq!(x.files[0].data.len() as u64, MAX_SOURCE_BYTES);
    }

    /// A device reached despite the checks (here: the resolved set directory is `/dev`) is
    /// refused by its type, never read.
    #[test]
    fn a_device_is_refused_not_read() {
        let e = read_source(Path::new("/dev"), "zero").unwrap_err();
        assert!(
            format!("{e:#}").contains("a character device, not a regular file"),
            "{e:#}"
        );
    }
}
