//! The `extension-release.<name>` file of an extension image (os-release(5) syntax).

use crate::ddi::Arch;

use super::{Class, Error};

/// The contents of an `extension-release.<name>` file (os-release(5) syntax).
///
/// systemd merges an extension only if `ARCHITECTURE` matches, `SYSEXT_SCOPE` includes
/// `initrd` when merging in the initrd (`system` on the booted host), and `ID` is `_any` or
/// the host's `ID` (recent systemd: or one of its `ID_LIKE`). Past the `ID`, the versions
/// count only if the host's os-release has some: a host with neither `VERSION_ID` nor
/// `SYSEXT_LEVEL` (a rolling release such as Debian testing, or Arch) takes the extension on
/// the `ID` alone, whatever version fields the extension carries. Otherwise the
/// `SYSEXT_LEVEL`s must be equal if both sides have one, or else, if the host has a
/// `VERSION_ID`, the extension must have the same.
/// (For a confext read `CONFEXT_` for `SYSEXT_`.) An empty value counts as no value.
///
/// [`ExtensionRelease::from_os_release`] copies the host's fields, so its release is one
/// systemd takes on that host; with no version on the host it has `ID` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRelease {
    /// `ID=` of the base (e.g. `debian`), or `_any`.
    pub id: String,
    /// `VERSION_ID=` of the base (e.g. `13`).
    pub version_id: Option<String>,
    /// `SYSEXT_LEVEL=` (`CONFEXT_LEVEL=` for a confext), if the base has one.
    pub sysext_level: Option<String>,
    /// `ARCHITECTURE=`, in systemd's spelling (`x86-64`, `arm64`); also decides the DDI's
    /// partition types.
    pub architecture: Arch,
    /// `SYSEXT_SCOPE=` (`CONFEXT_SCOPE=`): any of `initrd`, `system`, `portable`.
    pub scope: Vec<String>,
    /// Further fields, written after the others in this order (e.g.
    /// `EXTENSION_RELOAD_MANAGER=1`).
    pub extra: Vec<(String, String)>,
}

/// The keys [`ExtensionRelease`] writes itself; `extra` may not repeat them.
const OWN_KEYS: [&str; 7] = [
    "ID",
    "VERSION_ID",
    "ARCHITECTURE",
    "SYSEXT_LEVEL",
    "SYSEXT_SCOPE",
    "CONFEXT_LEVEL",
    "CONFEXT_SCOPE",
];

impl ExtensionRelease {
    /// Release data matching a base's os-release text: its `ID`, `VERSION_ID` and
    /// `SYSEXT_LEVEL`, each left out if the base has none or an empty one (a rolling release
    /// like Debian testing has no `VERSION_ID`; its extensions match on `ID` alone). The scope
    /// is left empty for the caller.
    pub fn from_os_release(os_release: &str, architecture: Arch) -> ExtensionRelease {
        let field = |key: &str| os_release_field(os_release, key).filter(|v| !v.is_empty());
        ExtensionRelease {
            id: field("ID").unwrap_or_default(),
            version_id: field("VERSION_ID"),
            sysext_level: field("SYSEXT_LEVEL"),
            architecture,
            scope: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The `usr/lib/extension-release.d/extension-release.<name>` text of a sysext.
    pub fn render(&self) -> String {
        self.render_as(Class::Sysext)
    }

    /// The `etc/extension-release.d/extension-release.<name>` text of a confext
    /// (`CONFEXT_LEVEL=`, `CONFEXT_SCOPE=`).
    pub fn render_confext(&self) -> String {
        self.render_as(Class::Confext)
    }

    /// The text for either class.
    pub fn render_as(&self, class: Class) -> String {
        let prefix = class.key_prefix();
        let mut lines = vec![("ID".to_owned(), self.id.clone())];
        lines.extend(self.version_id.iter().map(|v| ("VERSION_ID".to_owned(), v.clone())));
        lines.extend(self.sysext_level.iter().map(|v| (format!("{prefix}_LEVEL"), v.clone())));
        lines.push(("ARCHITECTURE".to_owned(), self.architecture.name().to_owned()));
        if !self.scope.is_empty() {
            lines.push((format!("{prefix}_SCOPE"), self.scope.join(" ")));
        }
        lines.extend(self.extra.iter().cloned());
        lines.iter().map(|(k, v)| format!("{k}={}\n", quote(v))).collect()
    }

    /// Check the fields against what systemd accepts (os-release(5), systemd-sysext(8)).
    ///
    /// Neither `VERSION_ID` nor `SYSEXT_LEVEL` is required: the release describes its host, and
    /// systemd takes an extension on a host without either on a matching `ID` alone. What
    /// systemd would refuse on that host is refused here: an `ID` that is empty (systemd
    /// refuses such a host and such an extension) or not an os-release ID. A version field
    /// that is present must be a non-empty os-release version; leave it out (`None`) instead
    /// of writing it empty.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, value: &str, reason| {
            Err(Error::InvalidRelease {
                key: key.to_owned(),
                value: value.to_owned(),
                reason,
            })
        };
        let id_chars = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if self.id != "_any" && !id_chars(&self.id) {
            return bad(
                "ID",
                &self.id,
                "must be lowercase letters, digits, `.`, `_`, `-` (or `_any`)",
            );
        }
        let level_chars = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~+".contains(&b));
        for (key, value) in [("VERSION_ID", &self.version_id), ("SYSEXT_LEVEL", &self.sysext_level)] {
            match value.as_deref() {
                Some("") => return bad(key, "", "is empty: leave it out if the base has none"),
                Some(v) if !level_chars(v) => return bad(key, v, "must be letters, digits, `.`, `_`, `-`, `~`, `+`"),
                _ => {}
            }
        }
        if let Some(s) = self
            .scope
            .iter()
            .find(|s| !["initrd", "system", "portable"].contains(&s.as_str()))
        {
            return bad("SYSEXT_SCOPE", s, "scopes are `initrd`, `system` and `portable`");
        }
        for (key, value) in &self.extra {
            let key_ok = key.starts_with(|c: char| c.is_ascii_uppercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok || OWN_KEYS.contains(&key.as_str()) {
                return bad(
                    key,
                    value,
                    "extra keys are A-Z, 0-9, `_` and not one of the fields set above",
                );
            }
            if value.contains(['\n', '\0']) {
                return bad(key, value, "values are one line");
            }
        }
        Ok(())
    }
}

pub(super) use crate::os_release::field as os_release_field;

/// A value as os-release(5) wants it: bare if only safe characters, else double-quoted
/// with `"`, `\`, `$` and `` ` `` escaped.
fn quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._-:/+,@~".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        return value.to_owned();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        if "\"\\$`".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
