//! GPT disks holding the real root of [`super::real_root`] on xfs, btrfs and LUKS2, plus a key
//! disk, for the storage boot tests. They are made without loop devices or device-mapper by
//! trixie's `systemd-repart --offline=yes` (and its `mke2fs`, `cryptsetup`) in a small podman
//! image built from the local `docker.io/library/debian:trixie` (ci/setup.sh), and cached in
//! `$STRATA_CI_CACHE/roots/` by a digest of their recipe, like the ext4 disk.
//!
//! Each root's `/etc/fstab` names that root (by LABEL, or the fixed UUID inside LUKS) with the
//! options it is booted with, as an installer writes it: systemd-remount-fs and
//! systemd-fsck-root then act on the real root, and a wrong line shows as a failed unit.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::real_root::{cached, recipe_digest, root_tar, run, unpack_tree};
use crate::support;
use crate::support::dissect::podman_out;

const TOOLS_CONTAINERFILE: &str = "\
FROM docker.io/library/debian:trixie
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd-repart cryptsetup-bin xfsprogs btrfs-progs \\
      e2fsprogs dosfstools \\
 && apt-get clean \\
 && rm -rf /var/lib/apt/lists/*
";

/// The xfs root's filesystem label (`root=LABEL=`; repart gives the filesystem the partition's).
pub const XFS_LABEL: &str = "strata-xfs";
const XFS_PARTUUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000012";
/// The btrfs filesystem's label.
pub const BTRFS_LABEL: &str = "strata-btrfs";
const BTRFS_PARTUUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000022";
/// The btrfs subvolume that holds the root (`rootflags=subvol=@`).
pub const BTRFS_SUBVOL: &str = "@";
/// The LUKS2 header's UUID (`rd.luks.uuid=`), set after repart made it.
pub const LUKS_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000033";
/// The ext4 filesystem inside LUKS (`root=UUID=`).
pub const LUKS_FS_UUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000031";
const LUKS_PARTUUID: &str = "5a7a0c1e-7e57-4f00-8000-000000000032";
/// The LUKS passphrase; the key file holds exactly these bytes (no newline), so the same
/// secret is typed at the prompt, given as a credential, or read from the key disk.
pub const PASSPHRASE: &str = "strata-test-passphrase";
/// The key disk's filesystem label and the key file's path on it (`rd.luks.key=/key:LABEL=keydev`).
pub const KEYDEV_LABEL: &str = "keydev";
pub const KEYDEV_PATH: &str = "/key";
/// Iterations of the pbkdf2 key slot: Argon2id needs ~1 GiB and minutes under TCG.
pub const PBKDF2_ITERATIONS: u32 = 1000;

/// Root filesystems' sizes: xfs needs ≥ 300 MiB; the tree is ~200 MB; images are sparse.
const ROOT_MIB: u64 = 512;

/// A disk with the real root on one partition.
#[derive(Debug)]
pub struct RootDisk {
    pub image: PathBuf,
    pub fstype: &'static str,
    pub label: &'static str,
    pub partuuid: &'static str,
    /// repart derives it from the partition UUID; read back with `blkid -p`.
    pub fs_uuid: String,
}

/// A disk whose one partition is LUKS2 (pbkdf2 key slot 0) with the real root on ext4 inside.
#[derive(Debug)]
pub struct LuksDisk {
    pub image: PathBuf,
    pub partuuid: &'static str,
    pub luks_uuid: &'static str,
    pub fs_uuid: &'static str,
    pub passphrase: &'static str,
    /// [`PASSPHRASE`] in a file of mode 0600.
    pub key_file: PathBuf,
}

/// A small disk whose ext4 filesystem (LABEL=[`KEYDEV_LABEL`]) holds the LUKS key at [`KEYDEV_PATH`].
#[derive(Debug)]
pub struct KeyDisk {
    pub image: PathBuf,
    pub label: &'static str,
    pub key_path: &'static str,
}

/// The tools image (trixie's systemd-repart, cryptsetup, mkfs.*), built on first use and
/// tagged with a digest of its Containerfile.
fn tools_image() -> &'static (PathBuf, String) {
    static TAG: OnceLock<(PathBuf, String)> = OnceLock::new();
    TAG.get_or_init(|| {
        let podman = support::podman();
        let tag = format!(
            "localhost/strata-test-disktools:{}",
            recipe_digest(&[TOOLS_CONTAINERFILE])
        );
        if podman_out(&podman, &["image", "exists", &tag]).0 {
            return (podman, tag);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Containerfile"), TOOLS_CONTAINERFILE).unwrap();
        let (ok, out) = podman_out(
            &podman,
            &[
                "build",
                "--pull=never",
                "--network=host",
                "-t",
                &tag,
                dir.path().to_str().unwrap(),
            ],
        );
        assert!(ok, "building the disk tools image {tag} failed:\n{out}");
        (podman, tag)
    })
}

/// Run `script` (`sh -eu`) in the tools container with `work` at `/w` (the working directory),
/// as root and without network; returns its output.
fn in_tools(work: &Path, what: &str, script: &str) -> String {
    let (podman, tag) = tools_image();
    let volume = format!("{}:/w", work.display());
    let (ok, out) = podman_out(
        podman,
        &[
            "run",
            "--rm",
            "--pull=never",
            "--network=none",
            "-v",
            &volume,
            "-w",
            "/w",
            tag,
            "sh",
            "-euc",
            script,
        ],
    );
    assert!(ok, "{what} failed:\n{out}");
    out
}

/// `systemd-repart --offline=yes` of `work/disk.img` from one partition definition, files
/// copied from `work/tree`; returns the disk.
fn repart(work: &Path, seed: &str, definition: &str, extra: &str) -> PathBuf {
    std::fs::create_dir(work.join("defs")).unwrap();
    std::fs::write(work.join("defs/10-root.conf"), definition).unwrap();
    in_tools(
        work,
        "systemd-repart",
        &format!(
            "systemd-repart --offline=yes --empty=create --size=auto --dry-run=no --no-pager \
             --seed={seed} --definitions=/w/defs --copy-source=/w/tree --json=short {extra} /w/disk.img"
        ),
    );
    work.join("disk.img")
}

/// The one partition of `image` (`sfdisk -J`): its byte offset and size.
pub fn partition(image: &Path) -> (u64, u64) {
    let out = Command::new(support::tool("sfdisk"))
        .arg("-J")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sfdisk -J {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "gpt", "{}: {table}", image.display());
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{}: {table}", image.display());
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    (
        parts[0]["start"].as_u64().unwrap() * sector,
        parts[0]["size"].as_u64().unwrap() * sector,
    )
}

/// `blkid -p` of the filesystem (or LUKS header) at the partition of `image`: `KEY=value` pairs.
pub fn probe(image: &Path) -> std::collections::BTreeMap<String, String> {
    let (offset, size) = partition(image);
    let out = Command::new(support::tool("blkid"))
        .args(["-p", "-o", "export", "-O", &offset.to_string(), "-S", &size.to_string()])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "blkid -p {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn root_disk(
    name: &str,
    fstype: &'static str,
    label: &'static str,
    partuuid: &'static str,
    definition: &str,
    fstab: &str,
) -> RootDisk {
    let tar = root_tar();
    let digest = recipe_digest(&[
        "strata repart root v1",
        &tar.file_name().unwrap().to_string_lossy(),
        TOOLS_CONTAINERFILE,
        definition,
        fstab,
    ]);
    let image = cached(&format!("trixie-{name}-"), &digest, ".img", |work| {
        unpack_tree(work, fstab);
        repart(work, partuuid, definition, "")
    });
    let fs_uuid = probe(&image).remove("UUID").unwrap_or_default();
    RootDisk {
        image,
        fstype,
        label,
        partuuid,
        fs_uuid,
    }
}

/// The real root on xfs, mounted by LABEL (fstab `LABEL=strata-xfs / xfs defaults 0 0`).
pub fn xfs_root() -> RootDisk {
    let definition = format!(
        "[Partition]\nType=root\nLabel={XFS_LABEL}\nUUID={XFS_PARTUUID}\nFormat=xfs\nCopyFiles=/:/\n\
         SizeMinBytes={ROOT_MIB}M\nSizeMaxBytes={ROOT_MIB}M\n"
    );
    let fstab = format!("LABEL={XFS_LABEL} / xfs defaults 0 0\n");
    root_disk("xfs", "xfs", XFS_LABEL, XFS_PARTUUID, &definition, &fstab)
}

/// The real root in the btrfs subvolume `@` (the top level holds only `@`, so a boot without
/// `rootflags=subvol=@` finds no OS there); fstab mounts it by LABEL with `subvol=@`.
pub fn btrfs_root() -> RootDisk {
    let definition = format!(
        "[Partition]\nType=root\nLabel={BTRFS_LABEL}\nUUID={BTRFS_PARTUUID}\nFormat=btrfs\n\
         MakeDirectories=/{BTRFS_SUBVOL}\nSubvolumes=/{BTRFS_SUBVOL}\nCopyFiles=/:/{BTRFS_SUBVOL}\n\
         SizeMinBytes={ROOT_MIB}M\nSizeMaxBytes={ROOT_MIB}M\n"
    );
    let fstab = format!("LABEL={BTRFS_LABEL} / btrfs subvol={BTRFS_SUBVOL} 0 0\n");
    root_disk("btrfs", "btrfs", BTRFS_LABEL, BTRFS_PARTUUID, &definition, &fstab)
}

/// `btrfs inspect-internal dump-tree -t TREE` of the btrfs partition of `disk` (trixie's
/// btrfs-progs, on a copy of the partition).
pub fn btrfs_dump_tree(disk: &RootDisk, tree: &str) -> String {
    let (offset, size) = partition(&disk.image);
    let work = tempfile::tempdir().unwrap();
    std::fs::hard_link(&disk.image, work.path().join("disk.img"))
        .or_else(|_| std::fs::copy(&disk.image, work.path().join("disk.img")).map(drop))
        .unwrap();
    in_tools(
        work.path(),
        "btrfs inspect-internal dump-tree",
        &format!(
            "dd if=disk.img of=/tmp/part bs=1M skip={} count={} conv=sparse status=none\n\
             btrfs inspect-internal dump-tree -t {tree} /tmp/part\n",
            offset >> 20,
            size >> 20
        ),
    )
}

/// [`PASSPHRASE`] in `$STRATA_CI_CACHE/roots/luks.key`, mode 0600 (repart and
/// systemd-cryptsetup refuse or warn about readable key files).
pub fn key_file() -> PathBuf {
    let file = super::real_root::roots_cache().join("luks.key");
    if std::fs::read(&file).ok().as_deref() != Some(PASSPHRASE.as_bytes()) {
        let tmp = file.with_extension("key.tmp");
        std::fs::write(&tmp, PASSPHRASE).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    }
    file
}

fn write_key(work: &Path) -> PathBuf {
    let key = work.join("key");
    std::fs::write(&key, PASSPHRASE).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

/// The real root on ext4 (UUID [`LUKS_FS_UUID`]) inside LUKS2 (UUID [`LUKS_UUID`]), key slot 0
/// opened by [`PASSPHRASE`] with pbkdf2 ([`PBKDF2_ITERATIONS`]). repart encrypts the ext4 image
/// (`CopyBlocks=`, `Encrypt=key-file`) in userspace; the header (the partition's first 16 MiB)
/// is then cut out, its key slot converted and its UUID set, and written back in place.
pub fn luks_root() -> LuksDisk {
    let tar = root_tar();
    let fstab = format!("UUID={LUKS_FS_UUID} / ext4 defaults 0 1\n");
    let definition = format!(
        "[Partition]\nType=root\nLabel=strata-luks\nUUID={LUKS_PARTUUID}\nEncrypt=key-file\nCopyBlocks=/w/root.ext4\n"
    );
    let digest = recipe_digest(&[
        "strata repart luks v1",
        &tar.file_name().unwrap().to_string_lossy(),
        TOOLS_CONTAINERFILE,
        &definition,
        &fstab,
        LUKS_UUID,
        LUKS_FS_UUID,
        PASSPHRASE,
        &PBKDF2_ITERATIONS.to_string(),
    ]);
    let image = cached("trixie-luks-", &digest, ".img", |work| {
        unpack_tree(work, &fstab);
        write_key(work);
        in_tools(
            work,
            "mke2fs -d of the LUKS root's ext4",
            &format!("mke2fs -q -t ext4 -U {LUKS_FS_UUID} -L strata-luks-root -d /w/tree /w/root.ext4 {ROOT_MIB}M"),
        );
        let disk = repart(work, LUKS_PARTUUID, &definition, "--key-file=/w/key");
        let (offset, _) = partition(&disk);
        assert_eq!(
            offset % (1 << 20),
            0,
            "the LUKS partition of {} is not MiB-aligned",
            disk.display()
        );
        let mib = offset >> 20;
        in_tools(
            work,
            "converting the LUKS key slot to pbkdf2",
            &format!(
                "dd if=/w/disk.img of=/w/hdr bs=1M skip={mib} count=16 status=none\n\
                 cryptsetup luksConvertKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations {PBKDF2_ITERATIONS} --key-file /w/key /w/hdr\n\
                 cryptsetup luksUUID --batch-mode --uuid {LUKS_UUID} /w/hdr\n\
                 dd if=/w/hdr of=/w/disk.img bs=1M seek={mib} conv=notrunc status=none\n"
            ),
        );
        std::fs::remove_file(work.join("root.ext4")).unwrap();
        disk
    });
    LuksDisk {
        image,
        partuuid: LUKS_PARTUUID,
        luks_uuid: LUKS_UUID,
        fs_uuid: LUKS_FS_UUID,
        passphrase: PASSPHRASE,
        key_file: key_file(),
    }
}

/// The key disk: ext4 LABEL=[`KEYDEV_LABEL`] holding [`PASSPHRASE`] at [`KEYDEV_PATH`] (0600).
pub fn key_disk() -> KeyDisk {
    let definition = format!(
        "[Partition]\nType=linux-generic\nLabel={KEYDEV_LABEL}\nUUID=5a7a0c1e-7e57-4f00-8000-000000000042\n\
         Format=ext4\nCopyFiles=/:/\nSizeMinBytes=16M\nSizeMaxBytes=16M\n"
    );
    let digest = recipe_digest(&[
        "strata key disk v1",
        TOOLS_CONTAINERFILE,
        &definition,
        PASSPHRASE,
        KEYDEV_PATH,
    ]);
    let image = cached("keydev-", &digest, ".img", |work| {
        let tree = work.join("tree");
        std::fs::create_dir(&tree).unwrap();
        let key = write_key(work);
        std::fs::rename(key, tree.join(KEYDEV_PATH.trim_start_matches('/'))).unwrap();
        repart(work, "5a7a0c1e-7e57-4f00-8000-000000000040", &definition, "")
    });
    KeyDisk {
        image,
        label: KEYDEV_LABEL,
        key_path: KEYDEV_PATH,
    }
}

/// `cryptsetup luksDump` of the LUKS partition of `disk` (the host's cryptsetup, on a copy of
/// the header: no device-mapper needed).
pub fn luks_dump(disk: &LuksDisk) -> String {
    let header = header_copy(disk);
    let out = Command::new(support::tool("cryptsetup"))
        .arg("luksDump")
        .arg(header.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cryptsetup luksDump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `cryptsetup luksOpen --test-passphrase` accepts `key` (a key file's bytes, as typed
/// without newline) for the LUKS partition of `disk`.
pub fn opens_with(disk: &LuksDisk, key: &[u8]) -> bool {
    let header = header_copy(disk);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key).unwrap();
    Command::new(support::tool("cryptsetup"))
        .args(["luksOpen", "--test-passphrase", "--key-file"])
        .arg(&key_file)
        .arg(header.path())
        .status()
        .unwrap()
        .success()
}

/// The LUKS header (the partition's first 16 MiB) of `disk` in a temporary file.
fn header_copy(disk: &LuksDisk) -> tempfile::NamedTempFile {
    let (offset, _) = partition(&disk.image);
    let header = tempfile::NamedTempFile::new().unwrap();
    run(
        Command::new("dd")
            .arg(format!("if={}", disk.image.display()))
            .arg(format!("of={}", header.path().display()))
            .args(["bs=1M", &format!("skip={}", offset >> 20), "count=16", "status=none"]),
        "dd of the LUKS header",
    );
    header
}
