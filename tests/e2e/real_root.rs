//! A real Debian root for boot tests: trixie made from Debian packages in a podman container
//! (systemd as PID 1), on an ext4 filesystem with a fixed UUID and LABEL, in a GPT disk with a
//! fixed PARTUUID. A unit on it waits until the boot has finished, prints one [`MARKER`] line
//! (how the root was mounted, PID 1's name, `systemctl --failed`) to the console, and powers
//! off.
//!
//! The tree is `podman export` of the root image, cached as a tar
//! (`$STRATA_CI_CACHE/roots/trixie-tree-<digest of the recipe>.tar`, default
//! `/var/cache/strata-ci`, ci/lib.sh's) and shared with the disks of [`super::disks`] (xfs,
//! btrfs, LUKS2), each of which writes its own `/etc/fstab`. The ext4 disk is made without loop
//! devices or device-mapper: `mke2fs -d` of the unpacked tree into a file, `sfdisk` on the disk
//! file and `dd` of the filesystem at its partition's offset. Every cached file is written
//! atomically and made again only when its recipe or the base image changes (the outdated one
//! is then removed). Boots open disks with `snapshot=on`: the cached images are never written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::support;
use crate::support::dissect::podman_out;

const BASE_IMAGE: &str = "docker.io/library/debian:trixie";

/// The root filesystem's UUID (`root=UUID=`).
pub const ROOT_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000001";
/// The root filesystem's label (`root=LABEL=`).
pub const ROOT_LABEL: &str = "strata-root";
/// The root partition's GPT UUID (`root=PARTUUID=`).
pub const ROOT_PARTUUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000002";
/// The disk's GPT UUID.
const DISK_GUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000003";
/// The root filesystem's size; the tree is ~200 MB and the image file is sparse.
const FS_MIB: u64 = 768;

/// What the root's marker unit prints first on its line.
pub const MARKER: &str = "STRATA-ROOT";

const CONTAINERFILE: &str = "\
FROM docker.io/library/debian:trixie
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd systemd-sysv udev e2fsprogs \\
 && apt-get clean \\
 && rm -rf /var/lib/apt/lists/*
COPY strata-marker /usr/local/sbin/strata-marker
COPY strata-marker.service /etc/systemd/system/strata-marker.service
COPY strata-fail.service /etc/systemd/system/strata-fail.service
RUN chmod 0755 /usr/local/sbin/strata-marker \\
 && systemctl enable strata-marker.service \\
 && systemctl mask serial-getty@ttyS0.service \\
 && passwd --lock root \\
 && echo strata-test-root > /etc/hostname \\
 && echo 5a7a0c1e7e574f008000000000000004 > /etc/machine-id
";

/// Waits until no job is left (Type=exec: this unit's own start job is done once it runs),
/// then prints `systemd-analyze time` (where the boot's time went, initrd included) and the
/// marker (with the kernel's uptime) to the console and powers off.
const MARKER_SCRIPT: &str = r#"#!/bin/sh
state=$(timeout 300 systemctl is-system-running --wait 2>&1)
failed=$(systemctl --failed --plain --no-legend | cut -d' ' -f1 | tr '\n' ' ')
# What a block device is, from sysfs (lsblk -s prints nothing for dm devices here).
kind() {
  if [ -e "$1/dm/uuid" ]; then
    case $(cat "$1/dm/uuid") in CRYPT-*) echo crypt ;; LVM-*) echo lvm ;; *) echo dm ;; esac
  elif [ -e "$1/md/level" ]; then cat "$1/md/level"
  elif [ -e "$1/partition" ]; then echo part
  else echo disk
  fi
}
# A block device and what it sits on, depth first (lsblk -s order).
walk() {
  local d=$1 s
  kind "$d"
  for s in "$d"/slaves/*; do [ -e "$s" ] && walk "$(readlink -f "$s")"; done
  if [ -e "$d/partition" ]; then walk "$(readlink -f "$d/..")"; fi
}
# The root's block device in sysfs, by number, or by the mount's source for a btrfs
# subvolume (an anonymous device number); its kernel name is in devtmpfs (this root has no
# udev rules for /dev/mapper).
sys=/sys/dev/block/$(findmnt -no MAJ:MIN / | tr -d ' ')
[ -e "$sys" ] || sys=/sys/class/block/$(basename "$(findmnt -no SOURCE / | sed 's/\[.*//')")
sys=$(readlink -f "$sys")
dev=/dev/$(basename "$sys")
# The block devices under the root, from it down: part,disk or crypt,part,disk or lvm,crypt,…
stack=$(walk "$sys" | paste -sd, -)
uuid=$(blkid -p -s UUID -o value "$dev" 2>&1 | tr -d ' ')
count=$(systemctl --failed --plain --no-legend | wc -l)
command -v systemd-analyze >/dev/null && echo "STRATA-ANALYZE $(systemd-analyze time 2>&1 | head -n 1)" >/dev/console
echo "STRATA-ROOT uptime=$(cut -d' ' -f1 /proc/uptime) source=$(findmnt -no SOURCE /) fstype=$(findmnt -no FSTYPE /) uuid=$uuid options=$(findmnt -no OPTIONS /) pid1=$(cat /proc/1/comm) stack=$stack state=$state failed=$count $failed" >/dev/console
systemctl --no-block poweroff
"#;

const MARKER_UNIT: &str = "\
[Unit]
Description=strata test: report how the root was reached, then power off
After=multi-user.target

[Service]
Type=exec
ExecStart=/usr/local/sbin/strata-marker
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// Not enabled: a test asks for it with `systemd.wants=strata-fail.service` to show that the
/// marker's failed count sees a failed unit.
pub const FAIL_UNIT: &str = "strata-fail.service";
const FAIL_UNIT_TEXT: &str = "\
[Unit]
Description=strata test: a unit that fails when asked for

[Service]
Type=oneshot
ExecStart=/bin/false
";

fn fstab() -> String {
    format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n")
}

/// `$STRATA_CI_CACHE/roots` (default `/var/cache/strata-ci/roots`), where the real root's tree
/// and the disks made from it are cached.
pub fn roots_cache() -> PathBuf {
    let cache =
        std::env::var_os("STRATA_CI_CACHE").map_or_else(|| PathBuf::from("/var/cache/strata-ci"), PathBuf::from);
    let roots = cache.join("roots");
    std::fs::create_dir_all(&roots).unwrap_or_else(|e| panic!("creating {}: {e}", roots.display()));
    roots
}

/// A short hex digest of a recipe's parts (each length-prefixed, so no two recipes collide by
/// concatenation).
pub fn recipe_digest(parts: &[&str]) -> String {
    let mut recipe = Sha256::new();
    for part in parts {
        recipe.update((part.len() as u64).to_le_bytes());
        recipe.update(part);
    }
    recipe.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached file `<roots>/<prefix><digest><suffix>`, made on first use by `make` (given a
/// fresh work directory in the cache, it returns the path of the finished file there, which is
/// renamed into place). Older files of the same prefix and suffix (outdated recipes) are
/// removed.
pub fn cached(prefix: &str, digest: &str, suffix: &str, make: impl FnOnce(&Path) -> PathBuf) -> PathBuf {
    let roots = roots_cache();
    let file = roots.join(format!("{prefix}{digest}{suffix}"));
    if file.is_file() {
        eprintln!("cached: {}", file.display());
        return file;
    }
    let start = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("strata-make-")
        .tempdir_in(&roots)
        .unwrap();
    let made = make(work.path());
    std::fs::rename(&made, &file).unwrap();
    for e in std::fs::read_dir(&roots).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) && e.path() != file {
            eprintln!("removing the outdated {name}");
            let _ = std::fs::remove_file(e.path());
        }
    }
    let size = std::fs::metadata(&file).unwrap().len();
    eprintln!(
        "made {} ({} MiB) in {:.1?}",
        file.display(),
        size >> 20,
        start.elapsed()
    );
    file
}

/// The real root's tree as a tar (`podman export` of the root image, owners numeric), cached
/// by a digest of the base image and the recipe. It has no `/etc/fstab`: each disk made from it
/// writes the one that matches its root ([`unpack_tree`]).
pub fn root_tar() -> PathBuf {
    let podman = support::podman();
    assert!(
        podman_out(&podman, &["image", "exists", BASE_IMAGE]).0,
        "the real root needs the base image {BASE_IMAGE}, which is missing; run ci/setup.sh (mmdebstrap + podman import)"
    );
    let (ok, base_id) = podman_out(&podman, &["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]);
    assert!(ok, "podman image inspect {BASE_IMAGE}: {base_id}");
    let digest = recipe_digest(&[
        "strata real root tree v1",
        base_id.trim(),
        CONTAINERFILE,
        MARKER_SCRIPT,
        MARKER_UNIT,
        FAIL_UNIT_TEXT,
    ]);
    cached("trixie-tree-", &digest, ".tar", |work| {
        export_tar(&podman, &digest, work)
    })
}

/// Unpack [`root_tar`] (as root, owners kept) into `dir/tree` with `fstab` as its
/// `/etc/fstab`; returns the tree.
pub fn unpack_tree(dir: &Path, fstab: &str) -> PathBuf {
    let tar = root_tar();
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    run(
        Command::new("tar")
            .args(["--numeric-owner", "--same-permissions", "-xf"])
            .arg(&tar)
            .arg("-C")
            .arg(&tree),
        "unpacking the real root",
    );
    // podman leaves its own files in an image; a booted system has them from elsewhere.
    for f in ["run/.containerenv", "etc/resolv.conf"] {
        let _ = std::fs::remove_file(tree.join(f));
    }
    std::fs::write(tree.join("etc/fstab"), fstab).unwrap();
    tree
}

/// The cached real root disk (a raw GPT image), made on first use. Panics, naming what is
/// missing, when podman, the base image, the mirror or a tool fails.
pub fn real_root_disk() -> PathBuf {
    let tar = root_tar();
    let digest = recipe_digest(&[
        "strata real root ext4 disk v1",
        &tar.file_name().unwrap().to_string_lossy(),
        &fstab(),
        ROOT_UUID,
        ROOT_LABEL,
        ROOT_PARTUUID,
        DISK_GUID,
        &FS_MIB.to_string(),
    ]);
    cached("trixie-ext4-", &digest, ".img", |work| {
        let tree = unpack_tree(work, &fstab());
        let fs = work.join("root.ext4");
        run(
            Command::new(support::tool("mke2fs"))
                .args(["-q", "-t", "ext4", "-U", ROOT_UUID, "-L", ROOT_LABEL, "-d"])
                .arg(&tree)
                .arg(&fs)
                .arg(format!("{FS_MIB}M")),
            "mke2fs -d of the real root",
        );
        // GPT: 1 MiB before the partition, 1 MiB after it for the backup table.
        let disk = work.join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len((FS_MIB + 2) << 20)
            .unwrap();
        let table = format!(
            "label: gpt\nlabel-id: {DISK_GUID}\nstart=2048, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid={ROOT_PARTUUID}, name=root\n",
            FS_MIB << 11
        );
        let mut sfdisk = Command::new(support::tool("sfdisk"))
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&disk)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table.as_bytes()).unwrap();
        assert!(sfdisk.wait().unwrap().success(), "sfdisk on {} failed", disk.display());
        run(
            Command::new("dd")
                .arg(format!("if={}", fs.display()))
                .arg(format!("of={}", disk.display()))
                .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]),
            "dd of the root filesystem into the disk",
        );
        disk
    })
}

/// Build the root image with podman and export it to `work/root.tar`.
fn export_tar(podman: &Path, digest: &str, work: &Path) -> PathBuf {
    let context = work.join("context");
    std::fs::create_dir(&context).unwrap();
    for (name, text) in [
        ("Containerfile", CONTAINERFILE),
        ("strata-marker", MARKER_SCRIPT),
        ("strata-marker.service", MARKER_UNIT),
        (FAIL_UNIT, FAIL_UNIT_TEXT),
    ] {
        std::fs::write(context.join(name), text).unwrap();
    }
    let tag = format!("localhost/strata-test-root:{digest}");
    let (ok, out) = podman_out(
        podman,
        &[
            "build",
            "--pull=never",
            "--network=host",
            "-t",
            &tag,
            context.to_str().unwrap(),
        ],
    );
    assert!(ok, "building the real root image failed:\n{out}");
    let name = format!("strata-test-root-{digest}-{}", std::process::id());
    let (ok, out) = podman_out(podman, &["create", "--name", &name, &tag, "/bin/true"]);
    assert!(ok, "podman create of the real root: {out}");
    let tar = work.join("root.tar");
    let (ok, out) = podman_out(podman, &["export", "-o", tar.to_str().unwrap(), &name]);
    podman_out(podman, &["rm", &name]);
    podman_out(podman, &["rmi", &tag]);
    assert!(ok, "podman export of the real root: {out}");
    tar
}

pub fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The marker line the real root printed, parsed.
#[derive(Debug, Clone)]
pub struct RootMarker {
    pub line: String,
    /// The guest kernel's uptime when the marker was printed, in seconds.
    pub uptime: f64,
    pub source: String,
    pub fstype: String,
    pub uuid: String,
    pub options: String,
    pub pid1: String,
    /// The block device types under the root, from it down (`lsblk -s`): `part,disk`,
    /// `crypt,part,disk`, `lvm,part,disk`, `raid1,part,disk,part,disk` …
    pub stack: String,
    pub state: String,
    pub failed: usize,
    /// The failed units' names.
    pub failed_units: Vec<String>,
}

impl RootMarker {
    /// The first marker line of `console`, if any (not the echo of the script's own text).
    pub fn find(console: &str) -> Option<RootMarker> {
        let line = console.lines().find(|l| l.contains(&format!("{MARKER} uptime=")))?;
        let text = &line[line.find(MARKER).unwrap() + MARKER.len()..];
        let mut m = RootMarker {
            line: line.to_string(),
            uptime: f64::NAN,
            source: String::new(),
            fstype: String::new(),
            uuid: String::new(),
            options: String::new(),
            pid1: String::new(),
            stack: String::new(),
            state: String::new(),
            failed: usize::MAX,
            failed_units: Vec::new(),
        };
        let mut words = text.split_whitespace();
        for word in words.by_ref() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "uptime" => m.uptime = value.parse().unwrap_or(f64::NAN),
                "source" => m.source = value.into(),
                "fstype" => m.fstype = value.into(),
                "uuid" => m.uuid = value.into(),
                "options" => m.options = value.into(),
                "pid1" => m.pid1 = value.into(),
                "stack" => m.stack = value.into(),
                "state" => m.state = value.into(),
                "failed" => {
                    m.failed = value.parse().unwrap_or(usize::MAX);
                    break;
                }
                _ => {}
            }
        }
        m.failed_units = words.map(str::to_string).collect();
        Some(m)
    }
}

/// A boot under qemu: the console and, when the root's marker came, its line and the time.
pub struct Booted {
    pub console: String,
    /// The root's `systemd-analyze time` line ("Startup finished in … (initrd) + …").
    pub analyze: Option<String>,
    pub marker: Option<RootMarker>,
    /// Wall time from qemu's start to the marker line.
    pub to_marker: Option<Duration>,
}

impl Booted {
    /// The root's marker, checked: the real root was reached with systemd as PID 1, its boot
    /// finished (`running`) and no unit failed. Panics with the console's tail otherwise.
    pub fn reached(&self) -> RootMarker {
        self.reached_with_failed(&[])
    }

    /// The root's marker, checked: the real root was reached with systemd as PID 1, and the
    /// units that failed are exactly `failed` (the boot `degraded`), or none (`running`).
    pub fn reached_with_failed(&self, failed: &[&str]) -> RootMarker {
        let m = self
            .marker
            .as_ref()
            .unwrap_or_else(|| panic!("the real root's marker never came:\n{}", super::tail(&self.console)));
        eprintln!(
            "real root reached {:.1?} after qemu's start, {:.1} s after the kernel's: {}\n{:?}",
            self.to_marker, m.uptime, m.line, self.analyze
        );
        assert_eq!(m.pid1, "systemd", "PID 1 of the real root: {}", m.line);
        let state = if failed.is_empty() { "running" } else { "degraded" };
        assert_eq!(
            (m.failed, m.failed_units.as_slice(), m.state.as_str()),
            (
                failed.len(),
                failed.iter().map(|u| u.to_string()).collect::<Vec<_>>().as_slice(),
                state
            ),
            "failed units on the real root: {}\n{}",
            m.line,
            super::tail(&self.console)
        );
        m.clone()
    }

    /// Where the console shows the switch from the initrd to the root, checked to come after
    /// systemd ran in the initrd and before the root's marker.
    pub fn switch_at(&self) -> usize {
        let console = &self.console;
        let t = || super::tail(console);
        let in_initrd = console
            .find("systemd[1]: Running in initrd.")
            .unwrap_or_else(|| panic!("systemd did not run in the initrd:\n{}", t()));
        let switch = console
            .find("initrd-switch-root.service")
            .unwrap_or_else(|| panic!("no switch-root:\n{}", t()));
        let marker = console
            .find(&format!("{MARKER} uptime="))
            .unwrap_or_else(|| panic!("the real root's marker never came:\n{}", t()));
        assert!(
            in_initrd < switch && switch < marker,
            "boot steps out of order:\n{}",
            t()
        );
        switch
    }
}

/// `root=UUID=` of the real root's ext4 ([`real_root_disk`]), read-only, as a user writes it.
pub fn cmdline_by_uuid() -> String {
    cmdline(&format!("root=UUID={ROOT_UUID}"), "ro")
}

/// The kernel command line for the real root, as a user writes it: `root` is e.g.
/// `root=UUID=…`; `extra` is appended (`ro`, `rootflags=…`).
pub fn cmdline(root: &str, extra: &str) -> String {
    format!("console=ttyS0 panic=-1 systemd.show_status=1 {root} {extra}")
        .trim_end()
        .to_string()
}

/// Boot `kernel` + `initrd` under qemu (TCG) with `disks` as virtio disks (the first is
/// /dev/vda; all opened with `snapshot=on`, so never written) and `append` as the command
/// line, until the root's marker is printed and the machine powers off, or `limit` passes (then
/// qemu is killed). Returns the console.
pub fn boot_root(kernel: &Path, initrd: &Path, disks: &[&Path], append: &str, limit: Duration) -> Booted {
    super::boot::boot(kernel, initrd, disks, append, limit, &super::boot::Extra::default())
}
