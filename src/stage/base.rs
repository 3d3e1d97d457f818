//! The base layer: the package list installed by the distribution's package manager into
//! an empty build root inside a builder container, then pruned and normalized into the
//! initrd's userspace.

use std::collections::HashMap;

use anyhow::{Context as _, Result, anyhow, bail};
use strata_format::layer::{Entry, EntryKind, Layer, ReadOptions};
use strata_format::os_release;
use tracing::info;

use super::{Ctx, epoch, in_container};
use crate::config::EmergencyShell;
use crate::digest::Digest;
use crate::distro::{self, Distro, Package};
use crate::engine::run::{self, Container};
use crate::engine::{ContainerSpec, Engine};
use crate::store::image as oci;

/// Where the build root is installed in the container.
const TARGET: &str = "/root/target";
/// The units that merge system and configuration extensions, enabled in the base layer.
const EXTENSION_UNITS: [&str; 2] = ["systemd-sysext.service", "systemd-confext.service"];

/// Build the base layer and store it as `name`.
pub(crate) async fn build<E: Engine>(ctx: &Ctx<'_, E>, key: &Digest, name: &str) -> Result<()> {
    let set = ctx.set;
    let d = &set.distribution;
    let spec = ContainerSpec {
        image: ctx.builder.to_string(),
        env: vec![],
        network: true,
        mounts: set.distribution.mount_proc,
        name_hint: "base".into(),
    };
    let (root, epoch) = in_container(ctx.engine, ctx.cancel, &spec, async |c: &Container| {
        let epoch = epoch(ctx, c).await?;
        let root = install_root(ctx, c, &set.base.packages, epoch, &set.dir.join("base.toml")).await?;
        Ok((root, epoch))
    })
    .await?;

    let packages = set.base.packages.clone();
    let remove = set.base.remove.clone();
    let shell = set.base.emergency_shell;
    let (release, mirror) = (d.release.clone(), d.mirror.clone());
    let (store, distro) = (ctx.store.clone(), ctx.distro);
    let arch = distro.architecture(&d.architecture)?.oci;
    let name = name.to_string();
    let key = key.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let layer = read_root(&root.tar)?;
        let (layer, versions) = finalize(layer, &root.installed, distro, &packages, &remove, shell, epoch)?;
        let blob = oci::put_layer_blob(&store, &layer)?;
        let os_release = match layer.get("usr/lib/os-release").map(|e| &e.kind) {
            Some(EntryKind::File { data }) => String::from_utf8_lossy(data).into_owned(),
            _ => String::new(),
        };
        let version = os_release::field(&os_release, "VERSION_ID").unwrap_or(release);
        let mut annotations = HashMap::from([
            (oci::ANN_KEY.to_string(), key.to_string()),
            (oci::ANN_EPOCH.to_string(), epoch.to_string()),
            (super::extension::ANN_PACKAGES.to_string(), versions.join(" ")),
            (oci::ANN_OS_RELEASE.to_string(), os_release),
        ]);
        annotations.extend(oci::standard_annotations(epoch, &version, &mirror));
        oci::put_image(&store, &name, &blob, epoch, &arch, annotations)?;
        info!(entries = layer.entries().len(), bytes = layer.data_size(), layer = %blob.digest, "base layer stored");
        Ok(())
    })
    .await?
}

/// An installed build root read as a layer, with the packages in it.
pub struct InstalledRoot {
    pub layer: Layer,
    pub packages: Vec<Package>,
}

/// An installed build root: its tar and the packages in it.
pub(crate) struct Root {
    pub tar: Vec<u8>,
    pub installed: Vec<Package>,
}

/// Install `packages` and their dependencies with the distribution's package manager into
/// an empty build root in container `c`. `config` is the file that lists the packages,
/// named when one of them does not exist.
pub(crate) async fn install_root<E: Engine>(
    ctx: &Ctx<'_, E>,
    c: &Container,
    packages: &[String],
    epoch: u64,
    config: &std::path::Path,
) -> Result<Root> {
    let d = &ctx.set.distribution;
    info!(
        packages = packages.len(),
        epoch, "installing packages into the build root"
    );
    let install = ctx.distro.install_command(d, packages, TARGET, epoch);
    if let Err(e) = run::run(ctx.engine, c, &install).await {
        let missing = super::missing_packages(ctx, &e);
        if !missing.is_empty() {
            bail!(
                "package{} {} not found in {}/{} ({}, components {}): check the spelling in {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                d.id,
                d.release,
                d.mirror,
                d.components.join(" "),
                config.display()
            );
        }
        return Err(e);
    }
    let query = run::run(ctx.engine, c, &ctx.distro.query_command(TARGET)).await?;
    let installed = ctx
        .distro
        .installed(&query.stdout)
        .with_context(|| format!("{} in {}", query_what(), TARGET))?;
    let tar = ctx.engine.get_archive(&c.id, TARGET).await?;
    Ok(Root { tar, installed })
}

fn query_what() -> &'static str {
    "reading the installed packages"
}

/// The build root in a tar from [`install_root`], as a layer.
pub(crate) fn read_root(tar: &[u8]) -> Result<Layer> {
    Layer::read_tar(
        tar,
        &ReadOptions {
            strip_prefix: Some("target".into()),
            ..Default::default()
        },
    )
    .context("reading the build root from the container")
}

/// Turn an installed build root into the base layer: keep only the requested packages'
/// dependency closure, drop the configured paths, add `/init`, `/etc/initrd-release` and
/// what the initrd does when its root never appears ([`super::emergency`], with the emergency
/// shell `shell`), clamp mtimes. Returns the layer and the kept packages as `name=version`.
pub fn finalize(
    mut layer: Layer,
    installed: &[Package],
    distro: &dyn Distro,
    packages: &[String],
    remove: &[String],
    shell: EmergencyShell,
    epoch: u64,
) -> Result<(Layer, Vec<String>)> {
    let keep = distro::closure(installed, packages)
        .map_err(|p| anyhow!("package `{p}` was requested but is not installed in the build root"))?;
    let pruned = distro::prune(&mut layer, installed, &keep);
    info!(
        kept = keep.len(),
        pruned = pruned.packages.len(),
        paths = pruned.paths,
        "pruned packages outside the requested closure"
    );
    tracing::debug!(packages = ?pruned.packages, "pruned");
    let versions: Vec<String> = installed
        .iter()
        .filter(|p| keep.contains(&p.name))
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();

    let patterns: Vec<glob::Pattern> = remove
        .iter()
        .map(|r| glob::Pattern::new(r).with_context(|| format!("bad remove glob `{r}`")))
        .collect::<Result<_>>()?;
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    layer.remove_where(|e| patterns.iter().any(|p| p.matches_with(&e.path, opts)));
    // The package manager's own state has no use in an initrd or an extension.
    let state = distro.state_paths();
    layer.remove_where(|e| {
        state
            .iter()
            .any(|s| e.path == *s || e.path.strip_prefix(s).is_some_and(|r| r.starts_with('/')))
    });

    let os_release = ["usr/lib/os-release", "etc/os-release"]
        .iter()
        .find_map(|p| match layer.get(p).map(|e| &e.kind) {
            Some(EntryKind::File { data }) => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        })
        .context("the base layer has no os-release (usr/lib/os-release); add `base-files` to the package list")?;
    if layer.get("usr/lib/systemd/systemd").is_none() {
        bail!("the base layer has no usr/lib/systemd/systemd; add `systemd` to the package list");
    }
    // Debian ships systemd-sysext and systemd-confext disabled; the initrd merges the
    // extensions systemd-stub places under /.extra/, so both are enabled.
    let wants: Vec<&str> = EXTENSION_UNITS
        .iter()
        .copied()
        .filter(|u| layer.get(&format!("usr/lib/systemd/system/{u}")).is_some())
        .collect();
    if wants.is_empty() {
        bail!(
            "the base layer has no usr/lib/systemd/system/systemd-sysext.service: its systemd cannot merge extensions"
        );
    }
    let mut entries = layer.into_entries();
    for u in wants {
        entries.push(Entry::symlink(
            &format!("etc/systemd/system/sysinit.target.wants/{u}"),
            &format!("/usr/lib/systemd/system/{u}"),
            epoch,
        ));
    }
    // systemd < 258 merges extensions after the generators ran and the boot's jobs were
    // queued: strata's unit starts what the merge added (see `requeue`).
    let native = layer_has(&entries, super::requeue::NATIVE_UNIT);
    if !native {
        entries.extend(super::requeue::entries(epoch));
    }
    entries.push(super::requeue::unmerge_before_udev_cleanup(native, epoch));
    super::emergency::add_files(&mut entries, shell, epoch);
    entries.push(Entry::symlink("init", "usr/lib/systemd/systemd", epoch));
    entries.push(Entry::file(
        "etc/initrd-release",
        os_release::initrd_release(&os_release),
        0o644,
        epoch,
    ));
    let mut layer = Layer::from_entries(entries)?;
    layer.clamp_mtimes(epoch);
    Ok((layer, versions))
}

fn layer_has(entries: &[Entry], path: &str) -> bool {
    entries.iter().any(|e| e.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, depends: &[&str], files: &[&str]) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            depends: depends.iter().map(|d| vec![d.to_string()]).collect(),
            provides: vec![],
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// What the Debian backend reports for [`root`].
    fn installed() -> Vec<Package> {
        vec![
            pkg("systemd", "257", &["libc6"], &[]),
            pkg("libc6", "2.41", &[], &[]),
            pkg("dpkg", "1.22", &[], &["usr/bin/dpkg"]),
        ]
    }

    fn root() -> Layer {
        let status = "Package: systemd\nStatus: install ok installed\nArchitecture: amd64\nVersion: 257\nDepends: libc6\n\n\
                      Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.41\n\n\
                      Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.22\n";
        Layer::from_entries(vec![
            Entry::file("var/lib/dpkg/status", status, 0o644, 1),
            Entry::file("var/lib/dpkg/info/dpkg.list", "/usr/bin/dpkg\n", 0o644, 1),
            Entry::file("usr/bin/dpkg", "x", 0o755, 2_000_000_000),
            Entry::file("usr/lib/systemd/systemd", "ELF", 0o755, 2_000_000_000),
            Entry::file("usr/lib/systemd/system/systemd-sysext.service", "[Unit]", 0o644, 1),
            Entry::file("usr/lib/os-release", "ID=debian\nVERSION_ID=\"13\"\n", 0o644, 1),
            Entry::file("usr/share/doc/systemd/copyright", "c", 0o644, 1),
            Entry::file("var/cache/ldconfig/aux-cache", "c", 0o644, 1),
        ])
        .unwrap()
    }

    #[test]
    fn finalize_prunes_removes_and_adds_the_initrd_files() {
        let remove = [
            "usr/share/doc".to_string(),
            "var/cache/*".to_string(),
            "var/lib/dpkg".to_string(),
        ];
        let (layer, versions) = finalize(
            root(),
            &installed(),
            &crate::distro::debian::Debian,
            &["systemd".into()],
            &remove,
            EmergencyShell::Locked,
            1_000,
        )
        .unwrap();
        assert_eq!(versions, ["systemd=257", "libc6=2.41"]);
        assert!(layer.get("usr/bin/dpkg").is_none(), "dpkg was not requested");
        assert!(layer.get("usr/share/doc").is_none() && layer.get("var/lib/dpkg").is_none());
        assert!(layer.get("var/cache").is_some() && layer.get("var/cache/ldconfig").is_none());
        assert_eq!(
            layer.get("init").unwrap().kind,
            EntryKind::Symlink {
                target: "usr/lib/systemd/systemd".into()
            }
        );
        let wants = layer
            .get("etc/systemd/system/sysinit.target.wants/systemd-sysext.service")
            .unwrap();
        assert_eq!(
            wants.kind,
            EntryKind::Symlink {
                target: "/usr/lib/systemd/system/systemd-sysext.service".into()
            }
        );
        assert!(
            layer
                .get("etc/systemd/system/sysinit.target.wants/systemd-confext.service")
                .is_none(),
            "not shipped, not enabled"
        );
        // systemd 257: strata's unit starts what the merge adds, with systemd-sysext.
        let link = layer
            .get("etc/systemd/system/systemd-sysext.service.wants/strata-sysext-requeue.service")
            .expect("the requeue unit is started with systemd-sysext");
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: "/usr/lib/systemd/system/strata-sysext-requeue.service".into()
            }
        );
        assert_eq!(layer.get("usr/lib/strata/sysext-requeue").unwrap().mode & 0o777, 0o755);
        let EntryKind::File { data } = &layer
            .get("etc/systemd/system/systemd-sysext.service.d/50-strata-before-udev-cleanup.conf")
            .expect("the unmerge is ordered before udev's database is emptied")
            .kind
        else {
            panic!()
        };
        assert!(String::from_utf8_lossy(data).contains("Before=initrd-udevadm-cleanup-db.service"));
        let EntryKind::File { data } = &layer.get("etc/initrd-release").unwrap().kind else {
            panic!()
        };
        assert!(String::from_utf8_lossy(data).contains("VARIANT_ID=initrd"));
        for f in crate::stage::emergency::files(EmergencyShell::Locked) {
            assert!(layer.get(f.path).is_some(), "{} is not in the base layer", f.path);
        }
        assert!(
            layer
                .get("usr/lib/systemd/system/emergency.service.d/strata-emergency-shell.conf")
                .is_none(),
            "the emergency shell is locked by default"
        );
        assert!(layer.entries().iter().all(|e| e.mtime <= 1_000));
    }

    #[test]
    fn systemd_with_its_own_initrd_merge_gets_no_requeue_unit() {
        let mut entries = root().into_entries();
        entries.push(Entry::file(super::super::requeue::NATIVE_UNIT, "[Unit]", 0o644, 1));
        let (layer, _) = finalize(
            Layer::from_entries(entries).unwrap(),
            &installed(),
            &crate::distro::debian::Debian,
            &["systemd".into()],
            &[],
            EmergencyShell::Locked,
            1_000,
        )
        .unwrap();
        assert!(
            layer.entries().iter().all(|e| !e.path.contains("sysext-requeue")),
            "systemd >= 258 orders its own merge before cryptsetup-pre.target"
        );
        let EntryKind::File { data } = &layer
            .get("etc/systemd/system/systemd-sysext-initrd.service.d/50-strata-before-udev-cleanup.conf")
            .expect("systemd >= 258's unmerge is ordered before udev's database is emptied too")
            .kind
        else {
            panic!()
        };
        assert!(String::from_utf8_lossy(data).contains("Before=initrd-udevadm-cleanup-db.service"));
    }

    #[test]
    fn finalize_explains_what_is_missing() {
        let err = finalize(
            root(),
            &installed(),
            &crate::distro::debian::Debian,
            &["bash".into()],
            &[],
            EmergencyShell::Locked,
            1,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`bash` was requested but is not installed"),
            "{err}"
        );
        let mut no_systemd = root();
        no_systemd.remove_where(|e| e.path == "usr/lib/systemd/systemd");
        let err = finalize(
            no_systemd,
            &installed(),
            &crate::distro::debian::Debian,
            &["libc6".into()],
            &[],
            EmergencyShell::Locked,
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("add `systemd`"), "{err}");
    }
}
