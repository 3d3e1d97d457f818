//! End to end: the real `strata` binary, real podman, the Debian mirror, and the Linux kernel
//! under qemu as the judge of the initrd.
//!
//! These tests need podman (configured by ci/setup.sh), the Debian mirror, qemu, GNU cpio,
//! zstd, mke2fs and sfdisk: they are `#[ignore]`d and run with `--include-ignored` (as
//! ci/test.sh does), where a missing tool fails the test. Those that need none of it (bad
//! input refused before anything is built) always run. The tests run one at a time (they
//! share the machine's two cores and podman), and the default set is built once and shared.

mod e2e;
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::*;

/// `strata build` of the kernel and initrd only (the extensions are tests/e2e_sysext.rs's).
fn build_initrd(set: &Path, cache: &Path, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    build_with(set, cache, out, env, &["--no-extensions"])
}

struct Built {
    cache: PathBuf,
    out: PathBuf,
}

/// The default set, built once from an empty cache for all tests of this file.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("strata-e2e-").tempdir().unwrap().keep();
        let (cache, out) = (dir.join("cache"), dir.join("out"));
        let o = build_initrd(&default_set(), &cache, &out, &[]);
        assert_ok(&o, "building the default layer set");
        Built { cache, out }
    })
}

/// `zstd -dc | cpio -t` of one member, with the reference tools.
fn cpio_list(member: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.zst");
    std::fs::write(&f, member).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | cpio -t --quiet", f.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zstd | cpio -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Boot the shared build's kernel and initrd with the real root's disk and `append`.
fn boot_real_root(append: &str) -> real_root::Booted {
    require_tools(&["podman", "qemu-system-x86_64", "mke2fs", "sfdisk", "tar"]);
    let disk = real_root::real_root_disk();
    let b = built();
    real_root::boot_root(
        &product_file(&b.out, "kernel"),
        &product_file(&b.out, "initrd"),
        &[&disk],
        append,
        Duration::from_secs(480),
    )
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn default_set_boots_a_real_debian_root_by_uuid() {
    let _s = serial();
    let booted = boot_real_root(&real_root::cmdline_by_uuid());
    let m = booted.reached();
    let switch = booted.switch_at();
    // No extension was merged, so the unit that re-queues what extensions add stays idle
    // (systemd 257 makes /usr a mount point in every initrd boot; its condition must not be
    // that).
    assert!(
        !booted.console[..switch].contains("strata-sysext-requeue"),
        "strata-sysext-requeue ran without a merged extension:\n{}",
        tail(&booted.console)
    );
    assert_eq!(m.source, "/dev/vda1", "the root's source: {}", m.line);
    assert_eq!(m.fstype, "ext4", "the root's type: {}", m.line);
    assert_eq!(m.uuid, real_root::ROOT_UUID, "the root's UUID: {}", m.line);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn default_set_boots_the_real_root_by_partuuid() {
    let _s = serial();
    let append = real_root::cmdline(&format!("root=PARTUUID={}", real_root::ROOT_PARTUUID), "ro");
    let booted = boot_real_root(&append);
    let m = booted.reached();
    assert_eq!(
        (m.fstype.as_str(), m.source.as_str()),
        ("ext4", "/dev/vda1"),
        "{}",
        m.line
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, qemu-system-x86_64, mke2fs, sfdisk (run with --include-ignored; ci/test.sh does)"]
fn real_root_by_label_rw_reports_a_failed_unit() {
    let _s = serial();
    // A unit of the root that fails, asked for on the command line: the marker must see it,
    // or its `failed=0` in the test above would prove nothing.
    let append = real_root::cmdline(
        &format!("root=LABEL={}", real_root::ROOT_LABEL),
        &format!("rw systemd.wants={}", real_root::FAIL_UNIT),
    );
    let booted = boot_real_root(&append);
    let m = booted.reached_with_failed(&[real_root::FAIL_UNIT]);
    assert_eq!(
        (m.fstype.as_str(), m.source.as_str()),
        ("ext4", "/dev/vda1"),
        "{}",
        m.line
    );
    assert!(m.options.split(',').any(|o| o == "rw"), "mounted rw: {}", m.line);
}

#[test]
fn root_marker_line_is_parsed() {
    let console = "[  1.0] Reached target multi-user.target\n\
        [ 40.1] STRATA-ROOT uptime=40.12 source=/dev/mapper/root fstype=xfs uuid=u-1 options=ro,relatime pid1=systemd state=degraded failed=2 a.service b.mount \n";
    let m = real_root::RootMarker::find(console).expect("a marker line");
    assert_eq!(m.uptime, 40.12);
    assert_eq!(m.source, "/dev/mapper/root");
    assert_eq!(m.fstype, "xfs");
    assert_eq!(m.uuid, "u-1");
    assert_eq!(m.options, "ro,relatime");
    assert_eq!(m.pid1, "systemd");
    assert_eq!(m.state, "degraded");
    assert_eq!(m.failed, 2);
    assert_eq!(m.failed_units, ["a.service", "b.mount"]);
    assert!(real_root::RootMarker::find("STRATA-ROOT-REACHED\n").is_none());
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, cpio, zstd (run with --include-ignored; ci/test.sh does)"]
fn initrd_members_list_with_gnu_cpio() {
    let _s = serial();
    require_tools(&["podman", "cpio", "zstd"]);
    let b = built();
    let initrd = std::fs::read(product_file(&b.out, "initrd")).unwrap();
    let members = zstd_members(&initrd);
    assert_eq!(members.len(), 2, "a base member and a modules member");
    let base = cpio_list(members[0]);
    for must in [
        "init",
        "etc/initrd-release",
        "usr/lib/systemd/systemd",
        "dev/console",
        "usr/bin/udevadm",
        "usr/bin/kmod",
    ] {
        assert!(base.iter().any(|p| p == must), "base member lacks {must}");
    }
    for never in ["usr/share/doc", "var/lib/dpkg/status", "usr/bin/dpkg", "usr/bin/apt"] {
        assert!(!base.iter().any(|p| p == never), "base member has {never}");
    }
    let mut sorted = base.clone();
    sorted.sort();
    assert_eq!(base, sorted, "entries are sorted");
    let modules = cpio_list(members[1]);
    let version = products(&b.out)["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "kernel")
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    for m in [
        "modules.dep",
        "modules.alias",
        "kernel/drivers/block/virtio_blk.ko.xz",
        "kernel/fs/ext4/ext4.ko.xz",
        "kernel/drivers/md/dm-verity.ko.xz",
        "kernel/fs/squashfs/squashfs.ko.xz",
    ] {
        let path = format!("usr/lib/modules/{version}/{m}");
        assert!(modules.iter().any(|p| p == &path), "modules member lacks {path}");
    }
    // The kernel unpacks each member on its own: every entry's parent directory must be in
    // the same member, as GNU cpio lists it.
    for (name, list) in [("base", &base), ("modules", &modules)] {
        let present: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
        for entry in list.iter() {
            if let Some((parent, _)) = entry.rsplit_once('/') {
                assert!(
                    present.contains(parent),
                    "{name} member: `{entry}` without its parent directory `{parent}`"
                );
            }
        }
    }
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn noop_rebuild_starts_no_container_and_rewrites_identical_products() {
    let _s = serial();
    require_tools(&["podman"]);
    let b = built();
    let before = std::fs::read(product_file(&b.out, "initrd")).unwrap();
    let before_json = std::fs::read(b.out.join("products.json")).unwrap();
    let out2 = b.out.with_file_name("out-noop");
    // A dead engine socket: any attempt to use the engine would fail the build.
    let o = build_initrd(
        &default_set(),
        &b.cache,
        &out2,
        &[("CONTAINER_HOST", "unix:///nonexistent/strata-e2e.sock")],
    );
    assert_ok(&o, "no-op rebuild");
    assert_eq!(std::fs::read(product_file(&out2, "initrd")).unwrap(), before);
    assert_eq!(std::fs::read(out2.join("products.json")).unwrap(), before_json);
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn corrupt_layer_blob_is_detected_and_rebuilt_to_the_same_bytes() {
    let _s = serial();
    require_tools(&["podman"]);
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&b.cache)
            .arg(&cache)
            .status()
            .unwrap()
            .success()
    );
    // Find the base layer's blob through the store's index and flip one byte in it.
    let oci = cache.join("oci");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let base = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or("")
                .starts_with("strata.base.")
        })
        .expect("a base layer in the store");
    let hex = |d: &serde_json::Value| d.as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(hex(&base["digest"]))).unwrap()).unwrap();
    let blob = oci.join("blobs/sha256").join(hex(&manifest["layers"][0]["digest"]));
    let mut data = std::fs::read(&blob).unwrap();
    data[1000] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    let out = dir.path().join("out");
    let o = build_initrd(&default_set(), &cache, &out, &[]);
    assert_ok(&o, "build over a corrupt store");
    let err = stderr(&o);
    assert!(err.contains("corrupt"), "the corruption was not reported:\n{err}");
    assert!(
        err.contains("built=[\"base\"]"),
        "the base layer was not rebuilt:\n{err}"
    );
    assert_eq!(
        std::fs::read(product_file(&out, "initrd")).unwrap(),
        std::fs::read(product_file(&b.out, "initrd")).unwrap(),
        "the rebuilt initrd differs from the first build"
    );
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, runuser, the rootless user of ci/setup.sh (run with --include-ignored; ci/test.sh does)"]
fn rootless_build_gives_the_same_bytes_as_rootful() {
    let _s = serial();
    require_tools(&["podman", "runuser"]);
    let user = std::env::var("STRATA_ROOTLESS_USER").unwrap_or_else(|_| "strata-ci".into());
    let uid = Command::new("id").args(["-u", &user]).output().unwrap();
    assert!(
        uid.status.success(),
        "this test needs the user {user} for rootless builds, which is missing; run ci/setup.sh"
    );
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    // The user's own home: rootless podman keeps its storage (with the imported base image)
    // and storage.conf there.
    let passwd = Command::new("getent").args(["passwd", &user]).output().unwrap();
    let home = String::from_utf8_lossy(&passwd.stdout)
        .trim()
        .split(':')
        .nth(5)
        .unwrap_or("")
        .to_string();
    let b = built();
    let dir = tempfile::Builder::new().prefix("strata-rootless-").tempdir().unwrap();
    assert!(
        Command::new("chown")
            .arg(&user)
            .arg(dir.path())
            .status()
            .unwrap()
            .success()
    );
    let (cache, out) = (dir.path().join("cache"), dir.path().join("out"));
    let o = Command::new("timeout")
        .args(["--signal=INT", "1200", "runuser", "-u", &user, "--", "env"])
        .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
        .arg(format!("HOME={home}"))
        .arg(STRATA)
        .args([
            "build",
            default_set().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .arg("--no-extensions")
        .current_dir("/")
        .output()
        .unwrap();
    assert_ok(&o, "rootless build");
    let st = Command::new("cmp")
        .arg(product_file(&b.out, "initrd"))
        .arg(product_file(&out, "initrd"))
        .status()
        .unwrap();
    assert!(st.success(), "the rootless initrd differs from the rootful one");
}

// ---- bad input: a clear error, and nothing half-written --------------------------------

/// A copy of the default set's base.toml with `from` replaced by `to`.
fn modified_set(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(default_set().join("base.toml")).unwrap();
    assert!(text.contains(from), "base.toml no longer contains {from:?}");
    let set = dir.join("set");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(set.join("base.toml"), text.replacen(from, to, 1)).unwrap();
    set
}

/// No temporary files and no layer of `kind` in the store at `cache`.
fn assert_store_clean(cache: &Path, kind: &str) {
    let oci = cache.join("oci");
    if !oci.exists() {
        return;
    }
    for e in std::fs::read_dir(oci.join("blobs/sha256")).unwrap() {
        let name = e.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with(".tmp"),
            "temporary file left in the store: {name:?}"
        );
    }
    let index = std::fs::read_to_string(oci.join("index.json")).unwrap();
    assert!(
        !index.contains(&format!("strata.{kind}.")),
        "a {kind} layer was stored despite the failure:\n{index}"
    );
}

#[test]
fn unknown_config_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let set = modified_set(dir.path(), "compression = ", "colour = \"blue\"\ncompression = ");
    let cache = dir.path().join("cache");
    let o = build(&set, &cache, &dir.path().join("out"), &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let line = std::fs::read_to_string(set.join("base.toml"))
        .unwrap()
        .lines()
        .position(|l| l.starts_with("colour"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("base.toml:{line}:")) && err.contains("unknown field `colour`"),
        "{err}"
    );
    assert!(!cache.exists(), "nothing may be written for a bad config");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn missing_package_is_named_and_nothing_is_stored() {
    let _s = serial();
    require_tools(&["podman"]);
    let dir = tempfile::tempdir().unwrap();
    let set = modified_set(dir.path(), "\"dmsetup\",", "\"dmsetup\", \"no-such-package-strata\",");
    let cache = dir.path().join("cache");
    let o = build(&set, &cache, &dir.path().join("out"), &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`no-such-package-strata` not found"), "{err}");
    assert_store_clean(&cache, "base");
    assert_no_build_containers();
}

#[test]
#[ignore = "e2e: needs podman (run with --include-ignored; ci/test.sh does)"]
fn unreachable_mirror_is_a_clear_error() {
    let _s = serial();
    require_tools(&["podman"]);
    let dir = tempfile::tempdir().unwrap();
    let set = modified_set(dir.path(), "http://deb.debian.org/debian", "http://127.0.0.1:9/debian");
    let cache = dir.path().join("cache");
    let o = build(&set, &cache, &dir.path().join("out"), &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the mirror http://127.0.0.1:9/debian"),
        "{err}"
    );
    assert_store_clean(&cache, "base");
    assert_no_build_containers();
}

#[test]
fn missing_podman_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_path).unwrap();
    let cache = dir.path().join("cache");
    let o = strata(
        &[
            "build",
            default_set().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            dir.path().join("out").to_str().unwrap(),
        ],
        &[("PATH", empty_path.to_str().unwrap())],
        &["CONTAINER_HOST", "DOCKER_HOST", "XDG_RUNTIME_DIR"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("podman is not installed"), "{err}");
    assert_store_clean(&cache, "base");
}

#[test]
fn dead_api_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on any more.
    let sock = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cache = dir.path().join("cache");
    let host = format!("unix://{}", sock.display());
    let o = build_initrd(
        &default_set(),
        &cache,
        &dir.path().join("out"),
        &[("CONTAINER_HOST", &host)],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("CONTAINER_HOST={host} does not answer")), "{err}");
    assert_store_clean(&cache, "base");
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror (run with --include-ignored; ci/test.sh does)"]
fn interrupted_build_removes_its_container_and_stores_nothing() {
    let _s = serial();
    require_tools(&["podman"]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut child = Command::new(STRATA)
        .args([
            "build",
            default_set().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            dir.path().join("out").to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("installing packages into the build root") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build never started installing:\n{}",
            seen.join("\n")
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted build must fail");
    let all = format!("{}\n{}", seen.join("\n"), rest.join("\n"));
    assert!(all.contains("interrupted"), "no word of the interruption:\n{all}");
    assert_store_clean(&cache, "base");
    assert_no_build_containers();
}

#[test]
#[ignore = "e2e: needs podman, the Debian mirror, skopeo (run with --include-ignored; ci/test.sh does)"]
fn skopeo_reads_the_layer_store_with_its_annotations() {
    let _s = serial();
    require_tools(&["podman", "skopeo"]);
    let b = built();
    let oci = b.cache.join("oci");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let base = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .find(|n| n.starts_with("strata.base."))
        .expect("a base layer in the store")
        .to_string();
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{base}", oci.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
    // skopeo 1.9 shows manifest annotations only in the raw manifest.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:{base}", oci.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "skopeo inspect --raw: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let info = &manifest;
    let labels = &manifest["annotations"];
    assert_eq!(labels["org.opencontainers.image.version"], "13", "{info}");
    assert_eq!(
        labels["org.opencontainers.image.source"], "http://deb.debian.org/debian",
        "{info}"
    );
    assert!(
        labels["org.opencontainers.image.created"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{info}"
    );
}
