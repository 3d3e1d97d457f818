//! Debian: apt and dpkg, through mmdebstrap, in a builder image made from
//! `Containerfiles/debian.Containerfile`, whose `debian/` scripts are the commands strata
//! runs (`strata-release`, `strata-install-root`, `strata-query-installed`,
//! `strata-kernel-fetch`, `strata-kernel-assemble`). The pure parts: dpkg's relation syntax,
//! the Release file's date, apt's error lines, Debian's package-name rule and architecture
//! names.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use super::{Architecture, BuilderContext, Distro, Package, ReleaseAnswer};
use crate::config::Distribution;
use crate::engine::run::Command;

/// The Debian backend.
#[derive(Debug, Clone, Copy)]
pub struct Debian;

/// The builder image's files, compiled into strata so the image and its tag always match.
const CONTAINERFILE: &str = include_str!("../../../Containerfiles/debian.Containerfile");
const SCRIPTS: [(&str, &str); 5] = [
    (
        "debian/strata-release",
        include_str!("../../../Containerfiles/debian/strata-release"),
    ),
    (
        "debian/strata-install-root",
        include_str!("../../../Containerfiles/debian/strata-install-root"),
    ),
    (
        "debian/strata-query-installed",
        include_str!("../../../Containerfiles/debian/strata-query-installed"),
    ),
    (
        "debian/strata-kernel-fetch",
        include_str!("../../../Containerfiles/debian/strata-kernel-fetch"),
    ),
    (
        "debian/strata-kernel-assemble",
        include_str!("../../../Containerfiles/debian/strata-kernel-assemble"),
    ),
];

/// Debian's main mirror network.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

impl Distro for Debian {
    fn id(&self) -> &'static str {
        "debian"
    }

    fn builder(&self) -> BuilderContext {
        BuilderContext {
            name: "debian",
            containerfile: ("debian.Containerfile", CONTAINERFILE),
            files: &SCRIPTS,
        }
    }

    fn defaults(&self) -> (&'static str, &'static [&'static str], &'static str) {
        (DEFAULT_MIRROR, &["main"], "amd64")
    }

    fn valid_package_name(&self, name: &str) -> bool {
        // Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters,
        // starting with an alphanumeric character.
        name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    }

    fn architecture(&self, name: &str) -> Result<Architecture> {
        use oci_spec::image::Arch as Oci;
        use strata_format::ddi::Arch as Dps;
        match name {
            "amd64" => Ok(Architecture {
                sysext: Dps::X86_64,
                oci: Oci::Amd64,
            }),
            "arm64" => Ok(Architecture {
                sysext: Dps::Arm64,
                oci: Oci::ARM64,
            }),
            other => bail!("architecture `{other}`: strata knows amd64 and arm64"),
        }
    }

    fn release_command(&self, d: &Distribution) -> Command {
        Command::new(
            format!("reading {}/dists/{}/InRelease", d.mirror, d.release),
            ["strata-release", d.mirror.as_str(), d.release.as_str()],
        )
    }

    fn release_epoch(&self, d: &Distribution, answer: &ReleaseAnswer, now: u64) -> Result<u64> {
        let file = format!("{}/dists/{}/InRelease", d.mirror, d.release);
        if !answer.reachable {
            bail!(
                "cannot reach the mirror {} (fetching {file} failed); check the network or the `mirror` key",
                d.mirror
            );
        }
        let date = parse_rfc2822(&answer.date)
            .with_context(|| format!("{file} has no readable Date: field (`{}`)", answer.date))?;
        if let Some(until) = parse_rfc2822(&answer.valid_until)
            && until < now
            && !d.allow_expired_release
        {
            bail!(
                "{file} expired on {} (Valid-Until), so apt refuses it; a frozen snapshot of a mirror is like that. \
                 If this mirror is meant to be frozen, set `allow-expired-release = true` in [distribution]",
                answer.valid_until
            );
        }
        Ok(date)
    }

    fn install_command(&self, d: &Distribution, packages: &[String], target: &str, epoch: u64) -> Command {
        let mut argv = vec![
            "env".to_string(),
            format!("SOURCE_DATE_EPOCH={epoch}"),
            "strata-install-root".into(),
            d.mirror.clone(),
            d.release.clone(),
            d.components.join(","),
            d.architecture.clone(),
            packages.join(","),
            target.into(),
        ];
        if d.allow_expired_release {
            argv.push("allow-expired".into());
        }
        if d.mount_proc {
            argv.push("mount-proc".into());
        }
        Command::new("installing the packages into the build root", argv)
    }

    fn missing_packages(&self, output: &str) -> Vec<String> {
        missing_packages(output)
    }

    fn query_command(&self, target: &str) -> Command {
        Command::new("listing the installed packages", ["strata-query-installed", target])
    }

    fn installed(&self, answer: &[u8]) -> Result<Vec<Package>> {
        let raw: Vec<RawPackage> = serde_json::from_slice(answer)
            .context("the installed-package list is not the JSON strata-query-installed writes")?;
        Ok(raw.into_iter().map(RawPackage::into_package).collect())
    }

    fn state_paths(&self) -> &'static [&'static str] {
        &[
            "var/lib/dpkg",
            "var/lib/apt",
            "var/cache/apt",
            "var/cache/debconf",
            "var/log/apt",
            "var/log/dpkg.log",
        ]
    }

    fn kernel_fetch_command(&self, d: &Distribution, package: &str, firmware: &[String]) -> Command {
        let mut argv = vec![
            "strata-kernel-fetch".to_string(),
            d.mirror.clone(),
            d.release.clone(),
            d.components.join(" "),
            if d.allow_expired_release { "yes" } else { "no" }.into(),
            package.into(),
        ];
        argv.extend(firmware.iter().cloned());
        Command::new(format!("fetching the kernel package `{package}`"), argv)
    }

    fn kernel_assemble_command(&self, uname: &str) -> Command {
        Command::new("assembling the modules layer", ["strata-kernel-assemble", uname])
    }
}

/// One package as `strata-query-installed` writes it.
#[derive(Deserialize)]
struct RawPackage {
    name: String,
    version: String,
    architecture: String,
    /// Pre-Depends and Depends, in dpkg's syntax.
    depends: String,
    provides: String,
    files: Vec<String>,
}

impl RawPackage {
    fn into_package(self) -> Package {
        Package {
            depends: parse_relations(&self.depends),
            provides: parse_relations(&self.provides).into_iter().flatten().collect(),
            files: self
                .files
                .iter()
                .map(|f| canonical_path(f.trim_start_matches('/')))
                .filter(|f| !f.is_empty() && f != ".")
                .collect(),
            name: self.name,
            version: self.version,
            architecture: self.architecture,
        }
    }
}

/// `libc6 (>= 2.34), awk | mawk-virtual` → `[["libc6"], ["awk", "mawk-virtual"]]`.
pub fn parse_relations(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|alts| {
            alts.split('|')
                .map(|a| package_name(a).to_string())
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|alts| !alts.is_empty())
        .collect()
}

/// `libc6 (>= 2.34)` or `foo:any` → `libc6` / `foo`.
fn package_name(relation: &str) -> &str {
    let name = relation.trim().split([' ', '(', '[']).next().unwrap_or("");
    name.split(':').next().unwrap_or("")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::closure;

    fn trixie() -> Distribution {
        Distribution {
            id: "debian".into(),
            release: "trixie".into(),
            mirror: DEFAULT_MIRROR.into(),
            components: vec!["main".into(), "contrib".into()],
            architecture: "amd64".into(),
            allow_expired_release: false,
            mount_proc: false,
        }
    }

    const ANSWER: &str = r#"[{"name":"systemd","version":"257.9-1","architecture":"amd64","depends":"init-system-helpers, libc6 (>= 2.34), mount, libsystemd-shared (= 257.9-1)","provides":"","files":["/.","/usr","/usr/bin","/usr/bin/systemctl","/bin/systemd"]},
{"name":"libc6","version":"2.41-12","architecture":"amd64","depends":"","provides":"","files":["/."]},
{"name":"mount","version":"2.41","architecture":"amd64","depends":"awk | mawk-virtual","provides":"","files":[]},
{"name":"mawk","version":"1.3.4","architecture":"amd64","depends":"","provides":"awk (= 1.3.4)","files":[]},
{"name":"libsystemd-shared","version":"257.9-1","architecture":"amd64","depends":"","provides":"","files":[]},
{"name":"init-system-helpers","version":"1.68","architecture":"all","depends":"","provides":"","files":[]},
{"name":"dpkg","version":"1.22.21","architecture":"amd64","depends":"tar","provides":"","files":["/usr/bin/dpkg"]},
{"name":"tar","version":"1.35","architecture":"amd64","depends":"","provides":"","files":[]}]"#;

    #[test]
    fn the_query_answer_gives_packages_relations_and_layer_paths() {
        let pkgs = Debian.installed(ANSWER.replace('\n', "").as_bytes()).unwrap();
        assert_eq!(pkgs.len(), 8);
        assert_eq!(
            pkgs[0].files,
            ["usr", "usr/bin", "usr/bin/systemctl", "usr/bin/systemd"],
            "merged /usr, no `/.`"
        );
        assert_eq!(pkgs[2].depends, [vec!["awk".to_string(), "mawk-virtual".into()]]);
        assert_eq!(pkgs[3].provides, ["awk"]);
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
        let err = Debian.installed(b"STRATA_X=1").unwrap_err();
        assert!(
            format!("{err:#}").contains("not the JSON strata-query-installed writes"),
            "{err:#}"
        );
    }

    #[test]
    fn commands_are_the_builder_scripts_with_the_set_s_values() {
        let d = trixie();
        let c = Debian.install_command(&d, &["systemd".into(), "udev".into()], "/root/target", 1_700_000_000);
        assert_eq!(
            c.argv,
            [
                "env",
                "SOURCE_DATE_EPOCH=1700000000",
                "strata-install-root",
                DEFAULT_MIRROR,
                "trixie",
                "main,contrib",
                "amd64",
                "systemd,udev",
                "/root/target"
            ]
        );
        let expired = Distribution {
            allow_expired_release: true,
            ..trixie()
        };
        assert_eq!(
            Debian.install_command(&expired, &[], "/t", 1).argv.last().unwrap(),
            "allow-expired"
        );
        let proc = Distribution {
            mount_proc: true,
            ..expired
        };
        assert_eq!(
            Debian.install_command(&proc, &[], "/t", 1).argv[9..],
            ["allow-expired", "mount-proc"]
        );
        let k = Debian.kernel_fetch_command(&d, "linux-image-amd64", &["firmware-misc-nonfree".into()]);
        assert_eq!(
            k.argv,
            [
                "strata-kernel-fetch",
                DEFAULT_MIRROR,
                "trixie",
                "main contrib",
                "no",
                "linux-image-amd64",
                "firmware-misc-nonfree"
            ]
        );
        assert_eq!(
            Debian.release_command(&d).argv,
            ["strata-release", DEFAULT_MIRROR, "trixie"]
        );
        // Every command is a script the builder image has.
        for cmd in [
            c.argv[2].as_str(),
            k.argv[0].as_str(),
            "strata-query-installed",
            "strata-kernel-assemble",
        ] {
            assert!(
                SCRIPTS.iter().any(|(p, _)| p.ends_with(cmd)),
                "{cmd} is not in the builder context"
            );
        }
    }

    #[test]
    fn the_epoch_is_the_release_date_and_an_expired_release_needs_the_key() {
        let answer = |valid_until: &str| ReleaseAnswer {
            reachable: true,
            date: "Fri, 30 Oct 2026 08:08:01 UTC".into(),
            valid_until: valid_until.into(),
            suite: "testing".into(),
            codename: "forky".into(),
        };
        let now = 1_796_000_000; // 2026-12-01
        let fresh = answer("Fri, 06 Nov 2099 08:08:01 UTC");
        assert_eq!(Debian.release_epoch(&trixie(), &fresh, now).unwrap(), 1_793_347_681);
        let expired = answer("Fri, 06 Nov 2026 08:08:01 UTC");
        let err = Debian.release_epoch(&trixie(), &expired, now).unwrap_err().to_string();
        assert!(
            err.contains("expired on Fri, 06 Nov 2026") && err.contains("allow-expired-release = true"),
            "{err}"
        );
        let allowed = Distribution {
            allow_expired_release: true,
            ..trixie()
        };
        assert_eq!(
            Debian.release_epoch(&allowed, &expired, now).unwrap(),
            1_793_347_681,
            "the epoch still comes from Date:"
        );
        let unreachable = ReleaseAnswer {
            reachable: false,
            ..fresh
        };
        assert!(
            Debian
                .release_epoch(&trixie(), &unreachable, now)
                .unwrap_err()
                .to_string()
                .contains("cannot reach the mirror")
        );
    }

    #[test]
    fn release_dates_parse_as_apt_writes_them() {
        assert_eq!(parse_rfc2822("Sat, 08 Nov 2025 09:51:03 UTC"), Some(1_762_595_463));
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 01:00:00 +0100"), Some(0));
        assert_eq!(parse_rfc2822(""), None);
    }

    #[test]
    fn apt_errors_name_the_package() {
        let out = "Reading package lists...\nE: Unable to locate package no-such-pkg\nE: Package 'gone' has no installation candidate\n";
        assert_eq!(missing_packages(out), ["gone", "no-such-pkg"]);
    }

    #[test]
    fn package_names_and_architectures() {
        assert!(Debian.valid_package_name("libc6") && Debian.valid_package_name("g++-14"));
        assert!(
            !Debian.valid_package_name("Udev!") && !Debian.valid_package_name("a") && !Debian.valid_package_name("-x")
        );
        assert_eq!(Debian.architecture("amd64").unwrap().oci, oci_spec::image::Arch::Amd64);
        assert_eq!(Debian.architecture("arm64").unwrap().oci, oci_spec::image::Arch::ARM64);
        assert!(Debian.architecture("s390x").is_err());
    }
}
