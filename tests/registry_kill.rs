//! Kill `strata push` and `strata pull` at a random point (SIGKILL, nothing to clean up with)
//! and run them again: the second run completes, and the store verifies clean: every blob
//! re-hashes to its name and no temporary file is left, in the store or the output
//! directory. The real binary against the loopback registry (`ci/registry.sh start`).
//!
//! The delay is drawn from the clock and printed, so a failing run can be repeated with
//! `STRATA_KILL_DELAY_MS=<ms>`.

#[path = "support/fake_build.rs"]
mod fake_build;
#[path = "support/oci_fixtures.rs"]
mod fixtures;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata::digest::Digest;
use strata::store::Store;

const PRODUCT_SIZE: usize = 64 << 20;

fn strata() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env_remove("STRATA_CACHE_DIR");
    cmd
}

/// 50–800 ms, from the clock unless `STRATA_KILL_DELAY_MS` says.
fn random_delay() -> Duration {
    let ms = match std::env::var("STRATA_KILL_DELAY_MS") {
        Ok(ms) => ms.parse().expect("STRATA_KILL_DELAY_MS is a number of milliseconds"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            50 + u64::from(nanos.wrapping_mul(2_654_435_761) >> 8) % 751
        }
    };
    Duration::from_millis(ms)
}

/// Start `strata args`, SIGKILL it after a random delay (unless it finished first), then run
/// it again to completion.
fn kill_then_rerun(args: &[&str]) {
    let delay = random_delay();
    let started = Instant::now();
    let mut child = strata().args(args).spawn().unwrap();
    let mut killed = false;
    while started.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap(); // SIGKILL
        killed = true;
    }
    let status = child.wait().unwrap();
    eprintln!(
        "strata {}: {} after {} ms (STRATA_KILL_DELAY_MS={}), {status}",
        args[0],
        if killed { "killed" } else { "finished before the kill" },
        started.elapsed().as_millis(),
        delay.as_millis()
    );
    let out = strata().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "strata {args:?} after the kill at {} ms failed:\n{}",
        delay.as_millis(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every blob re-hashes to its name, and nothing else (no temporary file of the killed run)
/// is in the blob directory.
fn assert_clean(store: &Path) {
    let dir = store.join("blobs/sha256");
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        match format!("sha256:{name}").parse::<Digest>() {
            Ok(claimed) => assert_eq!(
                Digest::of(&std::fs::read(entry.path()).unwrap()),
                claimed,
                "blob {name} in {} does not match its name",
                dir.display()
            ),
            Err(_) => stray.push(name),
        }
    }
    assert!(
        stray.is_empty(),
        "the blobs verify, but files are left in {}: {stray:?}",
        dir.display()
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A fake build whose initrd is 64 MiB of noise, and a fresh repository to push it to.
fn build(dir: &Path, addr: &str, what: &str) -> (String, Vec<u8>) {
    let store = Store::open(&dir.join("cache/oci")).unwrap();
    let layers = fake_build::fake_layers(&store, 3);
    let initrd = fixtures::noise(u64::from(std::process::id()), PRODUCT_SIZE);
    fake_build::fake_output(
        &dir.join("out"),
        layers,
        &[("initrd", "initrd.cpio.zst", initrd.clone())],
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (format!("{addr}/strata-test/kill-{what}-{nanos}:1"), initrd)
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh (run with --include-ignored; ci/test.sh does)"]
fn a_killed_push_completes_when_run_again() {
    let addr = support::registry();
    let tmp = tempfile::tempdir().unwrap();
    let (reference, initrd) = build(tmp.path(), &addr, "push");
    let (out, cache) = (tmp.path().join("out"), tmp.path().join("cache"));
    kill_then_rerun(&[
        "push",
        &reference,
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_clean(&cache.join("oci"));

    // What the registry holds is the whole product.
    let dl = tmp.path().join("dl");
    let dl_cache = tmp.path().join("dl-cache");
    let status = strata()
        .args(["pull", &format!("{reference}-initrd"), "--output", dl.to_str().unwrap()])
        .args(["--cache-dir", dl_cache.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read(dl.join("initrd.cpio.zst")).unwrap() == initrd,
        "pulled bytes differ"
    );
    assert_clean(&dl_cache.join("oci"));
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh (run with --include-ignored; ci/test.sh does)"]
fn a_killed_pull_completes_when_run_again() {
    let addr = support::registry();
    let tmp = tempfile::tempdir().unwrap();
    let (reference, initrd) = build(tmp.path(), &addr, "pull");
    let (out, cache) = (tmp.path().join("out"), tmp.path().join("cache"));
    let status = strata()
        .args([
            "push",
            &reference,
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let dl = tmp.path().join("dl");
    let dl_cache = tmp.path().join("dl-cache");
    kill_then_rerun(&[
        "pull",
        &format!("{reference}-initrd"),
        "--output",
        dl.to_str().unwrap(),
        "--cache-dir",
        dl_cache.to_str().unwrap(),
    ]);
    assert_eq!(
        files_in(&dl),
        ["initrd.cpio.zst"],
        "only the product, no temporary file"
    );
    assert!(
        std::fs::read(dl.join("initrd.cpio.zst")).unwrap() == initrd,
        "pulled bytes differ"
    );
    assert_clean(&dl_cache.join("oci"));
}
