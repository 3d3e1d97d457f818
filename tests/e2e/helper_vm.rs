//! Disks with LVM, LVM on LUKS2, MD RAID1 and a TPM2-enrolled LUKS2 root, made inside a helper
//! VM: this host has no device-mapper and no md, so (as dracut's test suite does) trixie's
//! kernel boots under qemu (TCG) with a small initrd of lvm2, mdadm, cryptsetup and
//! systemd-cryptenroll, runs one job script on its virtio disks, prints [`DONE`] or [`FAILED`]
//! on the console and powers off.
//!
//! The helper's kernel and initrd come from a trixie container (`linux-image-amd64`, the
//! kernel strata's default set uses, and the tools): the container's `mkhelper` copies the
//! tools with the libraries `ldd` names and those systemd loads with `dlopen()`, and the
//! modules the jobs need (virtio_blk, dm-mod, dm-crypt, md-mod, raid1, ext4, xts, AF_ALG) with
//! their dependencies, decompressed, in load order. Each job is a second cpio member (`/job.sh`,
//! `/pass`) appended to that initrd.
//!
//! Each image gets the real root's ext4 ([`real_root::real_root_disk`], attached read-only as
//! the last disk) copied with `dd` onto its LV, array or LUKS mapping and grown with
//! `resize2fs`: the filesystem keeps [`real_root::ROOT_UUID`], so the root's fstab stays right.
//! Images are cached under `$STRATA_CI_CACHE/roots/helpervm-<kind>-<digest>/` (the digest
//! covers the helper's recipe, the job and the real root's file name, which carries its own
//! recipe digest), made in a temporary directory and renamed; outdated ones are removed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::real_root;
pub use super::swtpm::Swtpm;
use crate::support;
use crate::support::dissect::podman_out;

const BASE_IMAGE: &str = "docker.io/library/debian:trixie";

/// What the helper's init prints when the job succeeded / failed.
pub const DONE: &str = "STRATA-HELPER-DONE";
pub const FAILED: &str = "STRATA-HELPER-FAILED";

/// The passphrase of every LUKS2 volume here (keyslot 0: pbkdf2, 1000 iterations).
pub const PASSPHRASE: &str = "strata-test-passphrase";
/// The LUKS2 UUID of the LVM-on-LUKS disk.
pub const LVM_LUKS_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000011";
/// The LUKS2 UUID of the TPM2-enrolled disk.
pub const TPM2_LUKS_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000021";
/// The MD array's UUID (`mdadm --detail` writes it as `5a7a0c1e:7e574f00:80000000:00000031`).
pub const MD_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000031";
/// The PCRs the TPM2 enrolment is bound to: PCR 7 (Secure Boot policy) holds only SeaBIOS's
/// separator under qemu's default firmware, so it is the same at every boot of that machine
/// whatever kernel and initrd it loads.
pub const TPM2_PCRS: &str = "7";
/// Each image disk's size; the real root's ext4 (768 MiB) is grown to fill what remains.
const DISK_MIB: u64 = 1024;

const CONTAINERFILE: &str = "\
FROM docker.io/library/debian:trixie
RUN apt-get update \\
 && apt-get install -y --no-install-recommends linux-image-amd64 lvm2 mdadm cryptsetup-bin \\
      systemd-cryptsetup e2fsprogs busybox-static kmod cpio xz-utils \\
      libtss2-esys-3.0.2-0t64 libtss2-rc0t64 libtss2-mu-4.0.1-0t64 libtss2-tcti-device0t64 \\
 && apt-get clean \\
 && rm -rf /var/lib/apt/lists/* /boot/initrd.img-*
COPY mkhelper /usr/local/sbin/mkhelper
COPY init /init
";

/// Run in the container: the helper's kernel and initrd into /out.
const MKHELPER: &str = r#"#!/bin/sh
set -eu
kver=$(ls /lib/modules)
tree=/tmp/tree
mkdir -p "$tree/usr/bin" "$tree/usr/sbin" "$tree/usr/lib" "$tree/usr/lib64" "$tree/etc/lvm" \
  "$tree/proc" "$tree/sys" "$tree/dev" "$tree/run" "$tree/tmp"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$tree/$d"; done
lib=/usr/lib/x86_64-linux-gnu
# The last six are loaded with dlopen(), so ldd does not name them.
for f in /usr/bin/busybox /usr/sbin/lvm /usr/sbin/mdadm /usr/sbin/cryptsetup \
  /usr/bin/systemd-cryptenroll /usr/lib/systemd/systemd-cryptsetup /usr/sbin/e2fsck \
  /usr/sbin/resize2fs /usr/sbin/blkid /usr/bin/dd \
  $lib/libtss2-esys.so.0 $lib/libtss2-rc.so.0 $lib/libtss2-mu.so.0 $lib/libtss2-tcti-device.so.0 \
  $lib/libcryptsetup.so.12 $lib/cryptsetup/libcryptsetup-token-systemd-tpm2.so; do
  cp -L --parents "$f" "$tree"
  { ldd "$f" || true; } | sed -n 's,.*=> \(/[^ ]*\) .*,\1,p; s,^[[:space:]]*\(/[^ ]*\) .*,\1,p' |
    while read -r l; do [ -e "$tree$l" ] || cp -L --parents "$l" "$tree"; done
done
: > "$tree/modules.list"
# tpm_tis and tpm_crb are built into trixie's kernel (modprobe says "builtin").
for m in virtio_blk dm-mod dm-crypt md-mod raid1 ext4 xts algif_skcipher algif_hash tpm_tis tpm_crb; do
  modprobe -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { $1 = ""; print }' | while read -r path args; do
  mkdir -p "$tree$(dirname "$path")"
  xz -dc "$path" > "$tree${path%.xz}"
  echo "${path%.xz} $args" >> "$tree/modules.list"
done
# No udev in the helper: LVM makes its /dev nodes itself.
cat > "$tree/etc/lvm/lvm.conf" <<'CONF'
devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 }
activation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 1 monitoring = 0 }
global { use_lvmpolld = 0 }
CONF
install -m 0755 /init "$tree/init"
(cd "$tree" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > /out/initrd.cpio
cp /boot/vmlinuz-"$kver" /out/vmlinuz
cp /boot/config-"$kver" /out/config
echo "$kver" > /out/kernel-version
"#;

/// The helper's /init. busybox's shell runs its own applets first (`dd`, `blkid`): jobs call
/// the real ones by path.
const INIT: &str = r#"#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin
/bin/busybox --install -s /usr/bin 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/lvm /run/lock/lvm /run/mdadm /run/cryptsetup /tmp
end() {
  sync
  echo "$1"
  poweroff -f
}
while read -r path args; do
  # CPU-specific variants (crc32c-intel without SSE4.2) may refuse: the generic ones load.
  insmod "$path" $args || echo "strata helper: $path not loaded"
done < /modules.list
sh -ex /job.sh
rc=$?
[ "$rc" = 0 ] && end STRATA-HELPER-DONE
end "STRATA-HELPER-FAILED rc=$rc"
"#;

/// The helper VM's kernel and initrd (uncompressed cpio, without a job).
pub struct HelperKit {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_version: String,
    /// The kernel's build configuration (`/boot/config-*`).
    pub config: PathBuf,
}

/// The cached helper kit, made on first use from the trixie container. Panics, naming what is
/// missing, when podman, the base image or the mirror fails.
pub fn helper_kit() -> HelperKit {
    let podman = support::podman();
    assert!(
        podman_out(&podman, &["image", "exists", BASE_IMAGE]).0,
        "the helper VM needs the base image {BASE_IMAGE}, which is missing; run ci/setup.sh"
    );
    let (ok, base_id) = podman_out(&podman, &["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]);
    assert!(ok, "podman image inspect {BASE_IMAGE}: {base_id}");
    let dir = cached("kit", &[base_id.trim(), CONTAINERFILE, MKHELPER, INIT], |work| {
        let context = work.join("context");
        std::fs::create_dir(&context).unwrap();
        for (name, text) in [("Containerfile", CONTAINERFILE), ("mkhelper", MKHELPER), ("init", INIT)] {
            std::fs::write(context.join(name), text).unwrap();
        }
        let tag = format!("localhost/strata-test-helpervm:{}", std::process::id());
        let ctx = context.to_str().unwrap();
        let (ok, out) = podman_out(&podman, &["build", "--pull=never", "--network=host", "-t", &tag, ctx]);
        assert!(ok, "building the helper VM's container failed:\n{out}");
        let volume = format!("{}:/out", work.display());
        let args = [
            "run",
            "--rm",
            "--network=none",
            "-v",
            &volume,
            &tag,
            "sh",
            "/usr/local/sbin/mkhelper",
        ];
        let (made, out) = podman_out(&podman, &args);
        podman_out(&podman, &["rmi", &tag]);
        assert!(made, "mkhelper in the helper VM's container failed:\n{out}");
        std::fs::remove_dir_all(&context).unwrap();
    });
    HelperKit {
        kernel: dir.join("vmlinuz"),
        config: dir.join("config"),
        initrd: dir.join("initrd.cpio"),
        kernel_version: std::fs::read_to_string(dir.join("kernel-version"))
            .unwrap()
            .trim()
            .to_string(),
    }
}

/// One made disk stack: its files and what a boot's command line needs to reach the root.
#[derive(Debug, Clone)]
pub struct StackImage {
    /// The disk files, attached in this order (`/dev/vda`, `/dev/vdb`, …).
    pub disks: Vec<PathBuf>,
    /// The root device (`root=` of [`StackImage::cmdline`]).
    pub root: String,
    /// The command line's parameters for this stack, as a user writes them.
    pub cmdline: String,
    /// The swtpm state the LUKS2 volume is enrolled to (only the TPM2 image); boot with
    /// [`Swtpm::start`] on it.
    pub tpm_state: Option<PathBuf>,
}

/// GPT partition types.
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const LVM: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
const RAID: &str = "A19D880F-05FC-4D3B-A006-743F0F84911E";

/// `e2fsck -fy` exits 1 when it only optimised directories (it does after `mke2fs -d`).
const COPY_ROOT: &str = r#"
/usr/bin/dd if="$SRC" of="$DST" bs=1M $DD_CONV
e2fsck -fy "$DST" || test $? -le 1
resize2fs "$DST"
e2fsck -fn "$DST"
/usr/sbin/blkid "$DST" | grep -F "UUID=\"$ROOT_UUID\""
"#;

const LVM_JOB: &str = r#"
lvm pvcreate -y /dev/vda1
lvm vgcreate strata /dev/vda1
lvm lvcreate -y -n root -l 100%FREE strata
SRC=/dev/vdb1 DST=/dev/strata/root DD_CONV=conv=sparse,fsync
. /copy-root.sh
lvm vgchange -an strata
"#;

const LVM_LUKS_JOB: &str = r#"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --uuid "$LUKS_UUID" --key-file /pass /dev/vda1
cryptsetup open --key-file /pass /dev/vda1 crypt
lvm pvcreate -y /dev/mapper/crypt
lvm vgcreate strata-crypt /dev/mapper/crypt
lvm lvcreate -y -n root -l 100%FREE strata-crypt
# Not sparse: blocks left unwritten under dm-crypt read back as noise, not zeros.
SRC=/dev/vdb1 DST=/dev/strata-crypt/root DD_CONV=conv=fsync
. /copy-root.sh
lvm vgchange -an strata-crypt
cryptsetup close crypt
"#;

/// `--assume-clean`: both members are zero where nothing is written, so no resync.
const RAID_JOB: &str = r#"
mdadm --create /dev/md/root --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal \
  --assume-clean --homehost=any --name=root --uuid="$MD_UUID" /dev/vda1 /dev/vdb1
SRC=/dev/vdc1 DST=/dev/md/root DD_CONV=conv=sparse,fsync
. /copy-root.sh
mdadm --stop /dev/md/root
"#;

const TPM2_JOB: &str = r#"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --uuid "$LUKS_UUID" --key-file /pass /dev/vda1
systemd-cryptenroll --unlock-key-file=/pass --tpm2-device=auto --tpm2-pcrs="$TPM2_PCRS" /dev/vda1
cryptsetup open --key-file /pass /dev/vda1 root
SRC=/dev/vdb1 DST=/dev/mapper/root DD_CONV=conv=fsync
. /copy-root.sh
cryptsetup close root
"#;

/// LVM: one disk, a GPT partition holding a PV of VG `strata`, LV `root`.
pub fn lvm_image() -> StackImage {
    let dir = stack(
        "lvm",
        LVM_JOB,
        &[],
        &[(LVM, "5a7a0c1e-7e57-4f00-8000-000000000101")],
        false,
    );
    StackImage {
        disks: vec![dir.join("disk0.img")],
        root: "/dev/strata/root".into(),
        cmdline: "root=/dev/strata/root rd.lvm.lv=strata/root".into(),
        tpm_state: None,
    }
}

/// LVM on LUKS2 (the Debian installer's "guided, encrypted LVM"): a LUKS2 partition
/// ([`LVM_LUKS_UUID`], [`PASSPHRASE`]) holding a PV of VG `strata-crypt`, LV `root`.
pub fn lvm_on_luks_image() -> StackImage {
    let parts = [(LINUX, "5a7a0c1e-7e57-4f00-8000-000000000111")];
    let dir = stack("lvm-luks", LVM_LUKS_JOB, &[("LUKS_UUID", LVM_LUKS_UUID)], &parts, false);
    StackImage {
        disks: vec![dir.join("disk0.img")],
        root: "/dev/strata-crypt/root".into(),
        cmdline: format!("rd.luks.uuid={LVM_LUKS_UUID} rd.lvm.lv=strata-crypt/root root=/dev/strata-crypt/root"),
        tpm_state: None,
    }
}

/// MD RAID1, metadata 1.2, array name `root` ([`MD_UUID`]), a partition on each of two disks;
/// boot with `disks[..1]` for the degraded case.
pub fn raid1_image() -> StackImage {
    let parts = [
        (RAID, "5a7a0c1e-7e57-4f00-8000-000000000121"),
        (RAID, "5a7a0c1e-7e57-4f00-8000-000000000122"),
    ];
    let dir = stack("raid1", RAID_JOB, &[("MD_UUID", &md_uuid_colons())], &parts, false);
    StackImage {
        disks: vec![dir.join("disk0.img"), dir.join("disk1.img")],
        root: "/dev/md/root".into(),
        cmdline: "root=/dev/md/root".into(),
        tpm_state: None,
    }
}

/// A LUKS2 ext4 root ([`TPM2_LUKS_UUID`], [`PASSPHRASE`] in keyslot 0) enrolled with
/// `systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7` to the swtpm whose state is
/// [`StackImage::tpm_state`].
pub fn luks_tpm2_image() -> StackImage {
    let parts = [(LINUX, "5a7a0c1e-7e57-4f00-8000-000000000131")];
    let env = [("LUKS_UUID", TPM2_LUKS_UUID), ("TPM2_PCRS", TPM2_PCRS)];
    let dir = stack("luks-tpm2", TPM2_JOB, &env, &parts, true);
    StackImage {
        disks: vec![dir.join("disk0.img")],
        root: format!("/dev/mapper/luks-{TPM2_LUKS_UUID}"),
        cmdline: format!(
            "rd.luks.uuid={TPM2_LUKS_UUID} rd.luks.options=tpm2-device=auto root=/dev/mapper/luks-{TPM2_LUKS_UUID}"
        ),
        tpm_state: Some(dir.join("tpm")),
    }
}

/// [`MD_UUID`] as mdadm writes it.
pub fn md_uuid_colons() -> String {
    let hex = MD_UUID.replace('-', "");
    [&hex[..8], &hex[8..16], &hex[16..24], &hex[24..]].join(":")
}

/// Make (or find cached) the disks of one stack: a sparse [`DISK_MIB`] file per partition of
/// `parts` (type, PARTUUID), partitioned on the host, filled by `job` in the helper VM with
/// `env` set and the real root attached last; with `tpm`, a swtpm whose state is kept in `tpm/`.
fn stack(kind: &str, job: &str, env: &[(&str, &str)], parts: &[(&str, &str)], tpm: bool) -> PathBuf {
    let kit = helper_kit();
    let root = real_root::real_root_disk();
    let root_name = root.file_name().unwrap().to_string_lossy().into_owned();
    let kit_name = kit
        .kernel
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut script = format!("set -eu\nROOT_UUID={}\n", real_root::ROOT_UUID);
    for (k, v) in env {
        script.push_str(&format!("{k}={v}\n"));
    }
    script.push_str(job);
    let layout: String = parts.iter().map(|(t, u)| format!("{t} {u}\n")).collect();
    let recipe = [
        kit_name.as_str(),
        root_name.as_str(),
        &script,
        COPY_ROOT,
        &layout,
        &DISK_MIB.to_string(),
    ];
    cached(kind, &recipe, |work| {
        let mut disks = Vec::new();
        for (i, (part_type, part_uuid)) in parts.iter().enumerate() {
            let disk = work.join(format!("disk{i}.img"));
            partitioned_disk(&disk, part_type, part_uuid);
            disks.push(Disk {
                path: disk,
                access: Access::Write,
            });
        }
        disks.push(Disk {
            path: root.clone(),
            access: Access::ReadOnly,
        });
        let swtpm = tpm.then(|| {
            let state = work.join("tpm");
            std::fs::create_dir(&state).unwrap();
            Swtpm::start_in(&state, None)
        });
        let files = [
            ("job.sh", script.as_str()),
            ("copy-root.sh", COPY_ROOT),
            ("pass", PASSPHRASE),
        ];
        run_helper(&kit, &files, &disks, swtpm.as_ref(), Duration::from_secs(900));
        drop(swtpm);
        if tpm {
            // swtpm's lock file is not state.
            let _ = std::fs::remove_file(work.join("tpm/.lock"));
        }
    })
}

/// A GPT disk file of [`DISK_MIB`] with one partition from 1 MiB to the end.
fn partitioned_disk(disk: &Path, part_type: &str, part_uuid: &str) {
    std::fs::File::create(disk).unwrap().set_len(DISK_MIB << 20).unwrap();
    // The disk's GUID is the partition's with the last digit changed: fixed and distinct.
    let disk_guid = format!("{}f", &part_uuid[..part_uuid.len() - 1]);
    let table =
        format!("label: gpt\nlabel-id: {disk_guid}\nstart=2048, type={part_type}, uuid={part_uuid}, name=root\n");
    let mut sfdisk = Command::new(support::tool("sfdisk"))
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk on {} failed", disk.display());
}

/// A disk of the helper VM.
pub struct Disk {
    pub path: PathBuf,
    pub access: Access,
}

/// How the helper VM may use a [`Disk`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Written: the job fills it.
    Write,
    /// Only read (the real root, the source).
    ReadOnly,
    /// Written in a throw-away overlay (`snapshot=on`): the file is never changed.
    Snapshot,
}

/// Boot the helper VM with `files` (name, content) added to its initrd's root (`job.sh` is
/// what it runs), `disks` as virtio disks in order and, with `tpm`, that swtpm as its TPM2.
/// Returns the console once [`DONE`] was printed; panics with the console's tail when the job
/// failed or `limit` passed.
pub fn run_helper(
    kit: &HelperKit,
    files: &[(&str, &str)],
    disks: &[Disk],
    tpm: Option<&Swtpm>,
    limit: Duration,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("job");
    std::fs::create_dir(&tree).unwrap();
    for (name, text) in files {
        std::fs::write(tree.join(name), text).unwrap();
    }
    let mut cpio = Command::new(support::tool("cpio"))
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let names: String = files.iter().map(|(n, _)| format!("{n}\n")).collect();
    cpio.stdin.take().unwrap().write_all(names.as_bytes()).unwrap();
    let member = cpio.wait_with_output().unwrap();
    assert!(member.status.success(), "cpio of the helper's job failed");
    let mut initrd = std::fs::read(&kit.initrd).unwrap();
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend(member.stdout);
    let initrd_path = dir.path().join("initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();

    let mut cmd = Command::new(support::tool("qemu-system-x86_64"));
    cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&initrd_path)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    for disk in disks {
        let mode = match disk.access {
            Access::Write => "",
            Access::ReadOnly => ",readonly=on",
            Access::Snapshot => ",snapshot=on",
        };
        cmd.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw{mode}", disk.path.display()));
    }
    if let Some(tpm) = tpm {
        cmd.args(&tpm.qemu_args);
    }
    let start = Instant::now();
    let mut qemu = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(qemu.id() as i32);
    let watchdog = std::thread::spawn(move || {
        if stop.recv_timeout(limit).is_err() {
            eprintln!("helper VM ran past {limit:?}; killing it");
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut console = String::new();
    for line in BufReader::new(qemu.stdout.take().unwrap()).split(b'\n') {
        let Ok(line) = line else { break };
        console.push_str(&String::from_utf8_lossy(&line));
        console.push('\n');
    }
    let status = qemu.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    eprintln!("helper VM exited {status} after {:.1?}", start.elapsed());
    let ok = console.lines().any(|l| l.trim_end() == DONE);
    let tail: Vec<&str> = console.lines().collect();
    let tail = tail[tail.len().saturating_sub(60)..].join("\n");
    assert!(ok, "the helper VM's job did not print {DONE} ({status}):\n{tail}");
    console
}

/// Only one image is made at a time in this process (they share the kit and the machine).
static MAKING: Mutex<()> = Mutex::new(());

/// `$STRATA_CI_CACHE/roots/helpervm-<kind>-<digest of recipe>/`, made by `make` (given an
/// empty work directory) unless it exists; older `helpervm-<kind>-*` directories are removed.
fn cached(kind: &str, recipe: &[&str], make: impl FnOnce(&Path)) -> PathBuf {
    let mut hash = Sha256::new();
    for part in ["strata helper vm v1", kind].iter().chain(recipe) {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest: String = hash.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
    let cache =
        std::env::var_os("STRATA_CI_CACHE").map_or_else(|| PathBuf::from("/var/cache/strata-ci"), PathBuf::from);
    let roots = cache.join("roots");
    let prefix = format!("helpervm-{kind}-");
    let dir = roots.join(format!("{prefix}{digest}"));
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if dir.is_dir() {
        eprintln!("helper VM: cached {}", dir.display());
        return dir;
    }
    std::fs::create_dir_all(&roots).unwrap_or_else(|e| panic!("creating {}: {e}", roots.display()));
    let start = Instant::now();
    let work = tempfile::Builder::new()
        .prefix(".helpervm-")
        .tempdir_in(&roots)
        .unwrap();
    make(work.path());
    let made = work.keep();
    if let Err(e) = std::fs::rename(&made, &dir) {
        // Another process made the same image meanwhile: use theirs.
        std::fs::remove_dir_all(&made).unwrap();
        assert!(dir.is_dir(), "renaming {} to {}: {e}", made.display(), dir.display());
    }
    for e in std::fs::read_dir(&roots).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // A work directory left by a killed run (each is up to ~2 GB).
        let stale = name.starts_with(".helpervm-")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(6 * 3600));
        if outdated(kind, &name, &digest) || stale {
            eprintln!("helper VM: removing the outdated {name}");
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    eprintln!("helper VM: made {} in {:.1?}", dir.display(), start.elapsed());
    dir
}

/// Whether the cache entry `name` is an older `kind` image than `digest`'s.
/// Only `helpervm-<kind>-<24 hex digits>` is of that kind (`lvm` is a prefix of `lvm-luks`).
pub fn outdated(kind: &str, name: &str, digest: &str) -> bool {
    name.strip_prefix(&format!("helpervm-{kind}-"))
        .is_some_and(|d| d.len() == 24 && d.bytes().all(|b| b.is_ascii_hexdigit()) && d != digest)
}
