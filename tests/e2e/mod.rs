//! What the end-to-end test files share: running the real `strata` binary with a watchdog,
//! one test at a time, and reading its products.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support;

pub mod boot;
pub mod console;
pub mod disks;
pub mod helper_vm;
pub mod real_root;
pub mod storage;
pub mod swtpm;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn default_set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layers/debian-trixie")
}

/// Fails the test (naming the tool and ci/setup.sh) unless every tool of `names` is
/// installed; `podman` must also answer `podman info`. Called first, so that a missing tool
/// fails before the long build.
pub fn require_tools(names: &[&str]) {
    for name in names {
        if *name == "podman" {
            support::podman();
        } else {
            support::tool(name);
        }
    }
}

/// Run strata with a watchdog; returns its output.
pub fn strata(args: &[&str], env: &[(&str, &str)], env_remove: &[&str]) -> Output {
    // An absolute path: some tests give strata a PATH without the usual tools.
    let mut c = Command::new("/usr/bin/timeout");
    c.args(["--signal=INT", "--kill-after=30", "1200", STRATA]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    for k in env_remove {
        c.env_remove(k);
    }
    let start = Instant::now();
    let out = c.stdin(Stdio::null()).output().expect("running strata");
    eprintln!("strata {} → {} in {:.1?}", args.join(" "), out.status, start.elapsed());
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn build(set: &Path, cache: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    build_with(set, cache, out, env, &[])
}

/// `strata build` with further arguments (`--key`, `--extension`, …).
pub fn build_with(set: &Path, cache: &Path, out: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        set.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    strata(&args, env, &[])
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed ({}):\n{}", o.status, stderr(o));
}

pub fn products(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("products.json")).unwrap()).unwrap()
}

pub fn product_file(out: &Path, kind: &str) -> PathBuf {
    let p = products(out);
    let item = p["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in products.json"));
    out.join(item["file"].as_str().unwrap())
}

/// Split an initrd into its compressed members (zstd frames separated by zero padding).
pub fn zstd_members(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if data[pos] == 0 {
            pos += 1;
            continue;
        }
        let len = zstd::zstd_safe::find_frame_compressed_size(&data[pos..]).expect("a zstd frame");
        out.push(&data[pos..pos + len]);
        pos += len;
    }
    out
}

/// Fails the test if a container labelled `io.strata.build` exists.
pub fn assert_no_build_containers() {
    let o = Command::new(support::tool("podman"))
        .args(["ps", "-a", "-q", "--filter", "label=io.strata.build"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        o.stdout.is_empty(),
        "build containers left behind: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// What the busybox test root's /sbin/init prints (tests/e2e_forky.rs; the default set boots
/// the real root of [`real_root`]).
pub const MARKER: &str = "STRATA-ROOT-REACHED";

/// A root disk whose /sbin/init prints the marker and powers off.
pub fn root_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("rootfs");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let busybox = support::tool("busybox");
    std::fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    let init = tree.join("sbin/init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox sync\n/bin/busybox poweroff -f\n"),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&init).unwrap().permissions(), 0o755);
    Command::new("chmod")
        .args(["0755", init.to_str().unwrap()])
        .status()
        .unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        "ID=strata-test\nNAME=\"strata test root\"\n",
    )
    .unwrap();
    let img = dir.join("root.img");
    let st = Command::new(support::tool("mke2fs"))
        .args(["-q", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success(), "mke2fs -d failed");
    img
}

/// Boot kernel + initrd with the root disk under qemu (TCG); returns the console output.
pub fn boot(kernel: &Path, initrd: &Path, disk: &Path) -> String {
    let start = Instant::now();
    let out = Command::new("timeout")
        .args([
            "300",
            "qemu-system-x86_64",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .args([
            "-append",
            "console=ttyS0 panic=-1 systemd.show_status=1 root=/dev/vda rw",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("qemu exited {} after {:.1?}", out.status, start.elapsed());
    console
}

/// What the extension check unit prints before the extension's `sshd -V`.
pub const RAN: &str = "STRATA-EXT-RAN:";

/// An extra initrd member as systemd-stub would add one: `image` at
/// `/.extra/sysext/network.sysext.raw`, plus a unit that runs the extension's `sshd -V`
/// after systemd-sysext and a drop-in that makes systemd-sysext say why it refuses.
pub fn extra_member(dir: &Path, image: &Path) -> PathBuf {
    let tree = dir.join("extra");
    let sysext = tree.join(".extra/sysext");
    std::fs::create_dir_all(&sysext).unwrap();
    let copy = sysext.join("network.sysext.raw");
    std::fs::copy(image, &copy).unwrap();
    let units = tree.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("initrd.target.wants")).unwrap();
    // systemd ≥ 258 merges in the initrd with systemd-sysext-initrd.service.
    for unit in ["systemd-sysext.service", "systemd-sysext-initrd.service"] {
        std::fs::create_dir_all(units.join(format!("{unit}.d"))).unwrap();
        std::fs::write(
            units.join(format!("{unit}.d/debug.conf")),
            "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console\nStandardError=journal+console\n",
        )
        .unwrap();
    }
    std::fs::write(
        units.join("strata-e2e-ext.service"),
        format!(
            "[Unit]\nDescription=strata e2e: run the extension's sshd\nDefaultDependencies=no\n\
             After=systemd-sysext.service systemd-sysext-initrd.service\nBefore=initrd.target\n\n[Service]\nType=oneshot\n\
             ExecStart=/usr/bin/bash -c 'echo \"{RAN} $$(/usr/sbin/sshd -V 2>&1)\"'\n\
             StandardOutput=journal+console\nStandardError=journal+console\n"
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../strata-e2e-ext.service",
        units.join("initrd.target.wants/strata-e2e-ext.service"),
    )
    .unwrap();
    // systemd-stub's modes: directories 0555, the image 0444.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    for d in [&sysext, &tree.join(".extra")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let member = dir.join("extra.cpio");
    let o = strata(
        &[
            "cpio",
            tree.to_str().unwrap(),
            "-o",
            member.to_str().unwrap(),
            "--compression",
            "none",
        ],
        &[],
        &[],
    );
    assert_ok(&o, "strata cpio of the extra member");
    member
}

/// Boot the build's kernel with its initrd plus [`extra_member`] of `image`, without a root
/// disk, until the extension's command has run; returns the console.
pub fn boot_with(out: &Path, image: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let member = extra_member(dir.path(), image);
    let mut initrd = std::fs::read(product_file(out, "initrd")).unwrap();
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend(std::fs::read(&member).unwrap());
    let combined = dir.path().join("initrd.img");
    std::fs::write(&combined, initrd).unwrap();
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-m", "1536", "-nographic", "-no-reboot", "-kernel"])
        .arg(product_file(out, "kernel"))
        .arg("-initrd")
        .arg(&combined)
        .args(["-append", "console=ttyS0 panic=-1 systemd.show_status=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: qemu is killed after the deadline even if the console stays silent.
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(qemu.id() as i32);
    let watchdog = std::thread::spawn(move || {
        if stop.recv_timeout(Duration::from_secs(480)).is_err() {
            eprintln!("qemu ran past 480 s; killing it");
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut console = String::new();
    for line in BufReader::new(qemu.stdout.take().unwrap()).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        console.push_str(&line);
        console.push('\n');
        if line.contains(RAN) && !line.contains("echo") {
            break;
        }
    }
    qemu.kill().unwrap();
    qemu.wait().unwrap();
    done.send(()).unwrap();
    watchdog.join().unwrap();
    eprintln!("qemu stopped after {:.1?}", start.elapsed());
    console
}

pub fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// The line the extension's command printed.
pub fn ran_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.contains(RAN) && !l.contains("echo"))
        .unwrap_or_else(|| panic!("the check unit never ran:\n{}", tail(console)))
}
