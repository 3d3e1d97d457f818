//! Debian specifics, as pure functions: the dpkg database of a build root, pruning it to the
//! requested packages' dependency closure, the suite's release date, and apt's error lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_format::layer::{EntryKind, Layer};

/// One installed package from `/var/lib/dpkg/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub architecture: String,
    pub version: String,
    /// `Depends` and `Pre-Depends`: each inner list is a set of alternatives.
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
}

/// Parse the installed packages of a dpkg status file.
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let fields = parse_paragraph(para);
        let installed = fields.get("Status").is_some_and(|s| s.ends_with(" installed"));
        let Some(name) = fields.get("Package") else { continue };
        if !installed {
            continue;
        }
        let rel = |key: &str| -> Vec<Vec<String>> {
            fields
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(|alts| {
                            alts.split('|')
                                .map(|a| package_name(a).to_string())
                                .filter(|a| !a.is_empty())
                                .collect()
                        })
                        .filter(|alts: &Vec<String>| !alts.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut depends = rel("Pre-Depends");
        depends.extend(rel("Depends"));
        let provides = rel("Provides").into_iter().flatten().collect();
        out.push(Package {
            name: name.clone(),
            architecture: fields.get("Architecture").cloned().unwrap_or_default(),
            version: fields.get("Version").cloned().unwrap_or_default(),
            depends,
            provides,
        });
    }
    out
}

/// `libc6 (>= 2.34)` or `foo:any` → `libc6` / `foo`.
fn package_name(relation: &str) -> &str {
    let name = relation.trim().split([' ', '(', '[']).next().unwrap_or("");
    name.split(':').next().unwrap_or("")
}

fn parse_paragraph(para: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut current: Option<String> = None;
    for line in para.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &current {
                let v: &mut String = fields.get_mut(k).expect("current key was inserted");
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.to_string(), v.trim().to_string());
            current = Some(k.to_string());
        }
    }
    fields
}

/// The installed packages reachable from `requested` through Depends/Pre-Depends. For a
/// set of alternatives the first installed one is taken; virtual names resolve through
/// Provides. Errors name a requested package that is not installed.
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

/// Remove from `layer` the files of installed packages outside `keep`, using the dpkg
/// file lists in `var/lib/dpkg/info/`. Directories are removed only when no kept package
/// lists them and nothing is left in them.
pub fn prune(layer: &mut Layer, installed: &[Package], keep: &BTreeSet<String>) -> Pruned {
    let list_of = |p: &Package| file_list(layer, p);
    let mut kept_paths: BTreeSet<String> = BTreeSet::new();
    let mut drop_paths: BTreeSet<String> = BTreeSet::new();
    let mut pruned = Pruned::default();
    for p in installed {
        if keep.contains(&p.name) {
            kept_paths.extend(list_of(p));
        } else {
            pruned.packages.push(p.name.clone());
            drop_paths.extend(list_of(p));
        }
    }
    let kept_paths: BTreeSet<String> = kept_paths.iter().map(|p| canonical_path(p)).collect();
    let drop: BTreeSet<String> = drop_paths
        .iter()
        .map(|p| canonical_path(p))
        .filter(|p| !kept_paths.contains(p))
        .collect();
    // Files first; then directories that became empty, deepest first.
    let removed = layer.remove_where(|e| !matches!(e.kind, EntryKind::Dir) && drop.contains(&e.path));
    pruned.paths += removed.len();
    let mut dirs: Vec<&String> = drop
        .iter()
        .filter(|d| layer.get(d).is_some_and(|e| e.kind == EntryKind::Dir))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let prefix = format!("{d}/");
        let empty = !layer.entries().iter().any(|e| e.path.starts_with(&prefix));
        if empty {
            pruned.paths += layer.remove_where(|e| &e.path == d).len();
        }
    }
    pruned
}

/// The paths dpkg lists for `p` (from `var/lib/dpkg/info/`), relative, as packaged.
fn file_list(layer: &Layer, p: &Package) -> Vec<String> {
    let candidates = [
        format!("var/lib/dpkg/info/{}.list", p.name),
        format!("var/lib/dpkg/info/{}:{}.list", p.name, p.architecture),
    ];
    candidates
        .iter()
        .find_map(|c| match layer.get(c).map(|e| &e.kind) {
            Some(EntryKind::File { data }) => Some(
                String::from_utf8_lossy(data)
                    .lines()
                    .map(|l| l.trim_start_matches('/').to_string())
                    .filter(|l| !l.is_empty() && *l != ".")
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// dpkg lists paths as packaged (`/bin/sh`), the layer holds them as installed; with a
/// merged /usr both name the same file, and the /usr form is what the layer has.
fn canonical_path(path: &str) -> String {
    for top in ["bin/", "sbin/", "lib/", "lib64/"] {
        if let Some(rest) = path.strip_prefix(top) {
            return format!("usr/{top}{rest}");
        }
    }
    path.to_string()
}

/// Which installed packages list each path (as the layer holds it), from the dpkg database
/// in `layer`.
pub fn owners(layer: &Layer, installed: &[Package]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for p in installed {
        for path in file_list(layer, p) {
            out.entry(canonical_path(&path)).or_default().push(p.name.clone());
        }
    }
    out
}

/// The `Date:` of a Release/InRelease file as seconds since the epoch.
pub fn release_date(release: &str) -> Option<u64> {
    let line = release.lines().find_map(|l| l.strip_prefix("Date:"))?;
    parse_rfc2822(line.trim())
}

/// Parse `Sat, 08 Nov 2025 09:51:03 UTC` (the form apt's Release files use).
fn parse_rfc2822(s: &str) -> Option<u64> {
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let mut it = s.split_whitespace();
    let day: u64 = it.next()?.parse().ok()?;
    let month_name = it.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month_name)? as u64
        + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let zone = it.next().unwrap_or("UTC");
    let offset: i64 = match zone {
        "UTC" | "GMT" | "+0000" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let v = hh * 3600 + mm * 60;
            if z.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let t = days * 86_400 + (h * 3600 + m * 60 + sec) as i64 - offset;
    u64::try_from(t).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Packages apt says it cannot find, from its output lines.
pub fn missing_packages(output: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for line in output.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("E: Unable to locate package ") {
            out.insert(rest.trim().to_string());
        } else if let Some(rest) = l
            .strip_prefix("E: Package '")
            .or_else(|| l.strip_prefix("E: Couldn't find any package by glob '"))
            && let Some((name, _)) = rest.split_once('\'')
        {
            out.insert(name.to_string());
        }
    }
    out.into_iter().collect()
}

/// `/etc/initrd-release` from the layer's os-release: the same fields, marked as an initrd
/// variant. systemd takes the presence of this file to mean "running in the initrd".
pub fn initrd_release(os_release: &str) -> String {
    let mut fields: BTreeMap<usize, String> = BTreeMap::new();
    let mut out = String::new();
    for (i, line) in os_release.lines().enumerate() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key {
            Some("VARIANT_ID") | Some("VARIANT") => continue,
            Some("PRETTY_NAME") => {
                let v = line.split_once('=').map(|(_, v)| v.trim_matches('"')).unwrap_or("");
                fields.insert(i, format!("PRETTY_NAME=\"{v} (initrd)\""));
            }
            _ => {
                fields.insert(i, line.to_string());
            }
        }
    }
    for line in fields.values() {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("VARIANT=\"initrd (strata)\"\nVARIANT_ID=initrd\n");
    out
}

/// The value of `key` in an os-release text.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_format::layer::Entry;

    const STATUS: &str = "\
Package: systemd
Status: install ok installed
Architecture: amd64
Version: 257.9-1
Depends: libc6 (>= 2.34), mount, libsystemd-shared (= 257.9-1)
Pre-Depends: init-system-helpers

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.41-12

Package: mount
Status: install ok installed
Architecture: amd64
Version: 2.41
Depends: awk | mawk-virtual

Package: mawk
Status: install ok installed
Architecture: amd64
Version: 1.3.4
Provides: awk

Package: libsystemd-shared
Status: install ok installed
Architecture: amd64
Version: 257.9-1

Package: init-system-helpers
Status: install ok installed
Architecture: all
Version: 1.68

Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.22.21
Depends: tar

Package: tar
Status: install ok installed
Architecture: amd64
Version: 1.35

Package: removed-one
Status: deinstall ok config-files
Version: 1
";

    #[test]
    fn status_and_closure() {
        let pkgs = parse_status(STATUS);
        assert_eq!(pkgs.len(), 8, "config-files-only packages are not installed");
        let keep = closure(&pkgs, &["systemd".to_string()]).unwrap();
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        assert_eq!(
            keep,
            [
                "init-system-helpers",
                "libc6",
                "libsystemd-shared",
                "mawk",
                "mount",
                "systemd"
            ]
        );
        assert_eq!(closure(&pkgs, &["nope".to_string()]).unwrap_err(), "nope");
    }

    #[test]
    fn prune_removes_files_of_unrequested_packages() {
        let pkgs = parse_status(STATUS);
        let keep = closure(&pkgs, &["systemd".to_string()]).unwrap();
        let mut layer = Layer::from_entries(vec![
            Entry::file(
                "var/lib/dpkg/info/dpkg.list",
                "/.\n/usr\n/usr/bin\n/usr/bin/dpkg\n/usr/share/dpkg\n/usr/share/dpkg/x\n/bin/dpkg-deb\n",
                0o644,
                1,
            ),
            Entry::file(
                "var/lib/dpkg/info/systemd.list",
                "/.\n/usr\n/usr/bin\n/usr/bin/systemctl\n",
                0o644,
                1,
            ),
            Entry::file("usr/bin/dpkg", "d", 0o755, 1),
            Entry::file("usr/bin/dpkg-deb", "d", 0o755, 1),
            Entry::file("usr/bin/systemctl", "s", 0o755, 1),
            Entry::file("usr/share/dpkg/x", "x", 0o644, 1),
            Entry::symlink("bin", "usr/bin", 1),
        ])
        .unwrap();
        let pruned = prune(&mut layer, &pkgs, &keep);
        assert_eq!(pruned.packages, ["dpkg", "tar"]);
        let paths: Vec<&str> = layer.entries().iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"usr/bin/systemctl") && paths.contains(&"usr/bin"));
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("dpkg") && !p.starts_with("var/lib/dpkg")),
            "{paths:?}"
        );
    }

    #[test]
    fn release_date_parses_apt_dates() {
        let text = "Origin: Debian\nDate: Sat, 08 Nov 2025 09:51:03 UTC\nValid-Until: x\n";
        assert_eq!(release_date(text), Some(1_762_595_463));
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 01:00:00 +0100"), Some(0));
        assert_eq!(release_date("Origin: Debian\n"), None);
    }

    #[test]
    fn apt_errors_name_the_package() {
        let out = "Reading package lists...\nE: Unable to locate package no-such-pkg\nE: Package 'gone' has no installation candidate\n";
        assert_eq!(missing_packages(out), ["gone", "no-such-pkg"]);
    }

    #[test]
    fn initrd_release_marks_the_variant() {
        let r = initrd_release("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID=\"13\"\n");
        assert!(r.contains("ID=debian\n") && r.contains("VERSION_ID=\"13\"\n"));
        assert!(r.contains("VARIANT_ID=initrd\n"));
        assert!(r.contains("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie) (initrd)\""));
        assert_eq!(os_release_field(&r, "VERSION_ID").as_deref(), Some("13"));
    }
}
