//! What the end-to-end test files share: running the real `strata` binary with a watchdog,
//! one test at a time, and reading its products.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::support;

pub mod boot;
pub mod disks;
pub mod extra;
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

/// A signed build: `strata keygen`'s key and certificate, and the build made with them.
pub struct SignedBuild {
    /// A kept directory for the keys, the output and whatever else the tests write.
    pub dir: PathBuf,
    pub cache: PathBuf,
    pub out: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl SignedBuild {
    /// `--key K --cert C` for `strata build`, then `extra`.
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "--key",
            self.key.to_str().unwrap(),
            "--cert",
            self.cert.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a
    }
}

/// `strata keygen`, then `set` with all its extensions, signed, into a new kept directory
/// named `<prefix>…` in the system's temporary directory, with the layer store `cache`, or an
/// empty one in that directory when None.
pub fn signed_build(prefix: &str, set: &Path, cache: Option<&Path>) -> SignedBuild {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap().keep();
    let keys = dir.join("keys");
    assert_ok(
        &strata(&["keygen", "-o", keys.to_str().unwrap()], &[], &[]),
        "strata keygen",
    );
    let cache = cache.map_or_else(|| dir.join("cache"), Path::to_path_buf);
    let s = SignedBuild {
        out: dir.join("out"),
        key: keys.join("sysext.key"),
        cert: keys.join("sysext.crt"),
        dir,
        cache,
    };
    let o = build_with(set, &s.cache, &s.out, &[], &s.args(&[]));
    assert_ok(&o, &format!("building {} with its extensions, signed", set.display()));
    s
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

pub fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}
