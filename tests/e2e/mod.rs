//! What the end-to-end test files share: running the real `strata` binary with a watchdog,
//! one test at a time, and reading its products.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::support;

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
