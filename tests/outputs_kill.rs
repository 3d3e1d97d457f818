//! The output directory holds one complete build, never a mix (issue 9, fault 7), without a
//! container engine: the fake build's layers (with a 16 MiB incompressible payload, so that
//! writing the initrd takes a while) stand for built ones.
//!
//! - Builds killed (SIGKILL) at spread-out points, several of them while the products are
//!   written: at every moment `products.json`, when present, lists only files with the
//!   recorded bytes, and once a build completes again the directory holds exactly that build,
//!   the user's own file, and no temporary or staging leftovers; the store verifies clean.
//! - A build that fails after some of its products were made leaves the previous build as it
//!   was.
//!
//! Before the fix products were written straight into the output directory: a kill between
//! the initrd and `products.json` left an initrd that `products.json` did not describe, and a
//! kill during a write left a `.tmp-<pid>-…` file that no later build removed.

#[path = "support/fake_build.rs"]
mod fake_build;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use strata::products::{self, Products};
use strata::store::Store;
use strata::store::image as oci;

/// Incompressible bytes in the fake base layer: the initrd is that big.
const PAYLOAD: usize = 16 << 20;
/// A file of the user's in the output directory, which builds must keep.
const USER_FILE: &str = "notes.txt";
/// A build's staging directory in the output directory (`.strata-staging-<pid>`).
const STAGING_PREFIX: &str = ".strata-staging-";

/// A layer set (a copy of the default set's base.toml with another compression), signed or
/// not: each makes different products (the initrd's name or its bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    compression: &'static str,
    signed: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        compression: "zstd:3",
        signed: false,
    },
    Config {
        compression: "gzip:1",
        signed: true,
    },
    Config {
        compression: "zstd:3",
        signed: true,
    },
    Config {
        compression: "gzip:1",
        signed: false,
    },
];

struct Fixture {
    tmp: tempfile::TempDir,
    cache: PathBuf,
    keys: PathBuf,
}

impl Fixture {
    fn new(payload: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        fake_build::fake_layers_with_payload(&Store::open(&cache.join("oci")).unwrap(), 7, payload);
        let keys = tmp.path().join("keys");
        strata::keygen::run(&keys, "strata test", false).unwrap();
        Fixture { tmp, cache, keys }
    }

    /// The layer set directory for `compression` (the layers' keys do not cover it).
    fn set(&self, compression: &str) -> PathBuf {
        let dir = self.tmp.path().join(format!("set-{}", compression.replace(':', "-")));
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let text = std::fs::read_to_string(fake_build::layer_set_dir().join("base.toml")).unwrap();
            assert!(text.contains("compression = \"zstd:19\""));
            let text = text.replacen(
                "compression = \"zstd:19\"",
                &format!("compression = \"{compression}\""),
                1,
            );
            std::fs::write(dir.join("base.toml"), text).unwrap();
        }
        dir
    }

    fn command(&self, set: &Path, out: &Path, signed: bool, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("build")
            .arg(set)
            .arg("--output")
            .arg(out)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(extra)
            .env("SOURCE_DATE_EPOCH", fake_build::EPOCH.to_string())
            .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
            .env_remove("STRATA_CACHE_DIR")
            .stdin(Stdio::null());
        if signed {
            cmd.arg("--key")
                .arg(self.keys.join("sysext.key"))
                .arg("--cert")
                .arg(self.keys.join("sysext.crt"));
        }
        cmd
    }

    fn config_command(&self, c: Config, out: &Path) -> Command {
        self.command(&self.set(c.compression), out, c.signed, &[])
    }
}

/// Run `cmd` to its end; panics with its log unless it succeeds.
fn run_ok(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "strata build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_file(path: &Path) -> (String, u64) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (hex::encode(sha2::Sha256::digest(&data)), data.len() as u64)
}

/// What a reader of `out` sees: None without `products.json`; else the list, after checking
/// that every file it lists has the recorded sha256 and size.
fn consistent(out: &Path) -> Option<Products> {
    if !out.join(products::FILE).exists() {
        return None;
    }
    let p = products::read(out).unwrap();
    for product in &p.products {
        let path = out.join(&product.file);
        assert!(path.is_file(), "products.json lists {}, which is missing", product.file);
        assert_eq!(
            sha256_file(&path),
            (product.sha256.clone(), product.size),
            "{} does not have the bytes products.json records",
            product.file
        );
    }
    Some(p)
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `out` holds exactly the build `expected`, the user's file and nothing else.
fn assert_exactly(out: &Path, expected: &Products) {
    let found = consistent(out).expect("products.json after a complete build");
    assert_eq!(&found, expected, "the output directory holds another build");
    let mut want: BTreeSet<String> = expected.products.iter().map(|p| p.file.clone()).collect();
    want.insert(products::FILE.into());
    want.insert(USER_FILE.into());
    assert_eq!(
        names(out),
        want,
        "stale products, temporary files or staging directories are left"
    );
}

/// Every blob hashes to its name, no temporary file is left, and the layers verify.
fn assert_store_verifies(cache: &Path) {
    let root = cache.join("oci");
    let store = Store::open(&root).unwrap();
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "temporary file left in the store: {name}");
        assert_eq!(sha256_file(&e.path()).0, name, "corrupt blob {name}");
    }
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let digest: strata::digest::Digest = m["digest"].as_str().unwrap().parse().unwrap();
        assert!(store.has_blob(&digest), "index.json names the missing blob {digest}");
    }
    let (base, kernel) = fake_build::keys();
    for name in [
        strata::plan::layer_ref("base", &base),
        strata::plan::layer_ref("kernel", &kernel),
    ] {
        assert!(oci::verify(&store, &name).unwrap(), "{name} does not verify");
    }
}

/// A small seeded generator (xorshift64): the kill points are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether a staging directory in `out` holds a `products.json`: a build is (or was, when
/// killed) putting a complete set of products in place.
fn committed(out: &Path) -> bool {
    names(out)
        .iter()
        .any(|n| n.starts_with(STAGING_PREFIX) && out.join(n).join(products::FILE).is_file())
}

fn is_in_flight(name: &str) -> bool {
    name.starts_with(".tmp-") || name.starts_with(STAGING_PREFIX)
}

#[test]
fn killed_builds_leave_the_last_complete_build_and_nothing_else() {
    let fx = Fixture::new(PAYLOAD);
    // The products of each configuration, each built once in a directory of its own (which
    // also caches the initrd members, as a user's second build has them).
    let mut refs = Vec::new();
    let mut slowest = Duration::ZERO;
    for (i, c) in CONFIGS.iter().enumerate() {
        let dir = fx.tmp.path().join(format!("ref-{i}"));
        run_ok(fx.config_command(*c, &dir));
        let start = Instant::now();
        run_ok(fx.config_command(*c, &dir));
        slowest = slowest.max(start.elapsed());
        refs.push(products::read(&dir).unwrap());
    }
    for (i, a) in refs.iter().enumerate() {
        for b in &refs[i + 1..] {
            assert_ne!(a.products, b.products, "two configurations make the same products");
        }
    }
    eprintln!("a build with cached members takes {slowest:.2?}");

    let out = fx.tmp.path().join("out");
    run_ok(fx.config_command(CONFIGS[0], &out));
    std::fs::write(out.join(USER_FILE), "the user's own file\n").unwrap();
    assert_exactly(&out, &refs[0]);
    // The builds whose products `out` may hold: the last that completed, and those killed
    // since (a kill after the commit point is finished by the next build).
    let mut candidates = vec![0];
    let mut rng = Rng(0x05ee_d0f5_7a7a);
    let (mut during_writes, mut during_swaps, mut completed) = (0, 0, 0);
    for attempt in 0..15 {
        let c = (candidates[candidates.len() - 1] + 1 + attempt % 3) % CONFIGS.len();
        let mut child = fx
            .config_command(CONFIGS[c], &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        match attempt % 3 {
            0 => {
                // Anywhere in the run, up to a bit past its usual end.
                let at = slowest.mul_f64(1.2 * rng.unit());
                while started.elapsed() < at && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            1 => {
                // While the products are written: once a staging directory or temporary
                // file shows up in the output directory, within a few milliseconds.
                while child.try_wait().unwrap().is_none() && !names(&out).iter().any(|n| is_in_flight(n)) {
                    std::thread::sleep(Duration::from_micros(500));
                }
                std::thread::sleep(Duration::from_micros(rng.next() % 30_000));
            }
            _ => {
                // While the products are put in place: as soon as the list of a complete
                // set of products shows up anywhere in the output directory but its place.
                while child.try_wait().unwrap().is_none() && !committed(&out) {}
            }
        }
        let writing = names(&out).iter().any(|n| is_in_flight(n));
        // Already gone if it finished: then the kill finds no process.
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            assert_eq!(e, nix::errno::Errno::ESRCH);
        }
        let status = child.wait().unwrap();
        let swapping = committed(&out);
        eprintln!(
            "attempt {attempt}: config {c}, killed after {:.0?}{}{}{}",
            started.elapsed(),
            if writing { ", while writing products" } else { "" },
            if swapping { ", while putting them in place" } else { "" },
            if status.success() { ", had completed" } else { "" }
        );
        if status.success() {
            completed += 1;
            candidates = vec![c];
        } else {
            during_writes += usize::from(writing);
            during_swaps += usize::from(swapping);
            candidates.push(c);
        }

        // What a reader sees right after the kill.
        match consistent(&out) {
            Some(p) => assert!(
                candidates.iter().any(|&i| refs[i] == p),
                "attempt {attempt}: products.json is none of the builds {candidates:?}"
            ),
            None => assert!(
                committed(&out),
                "attempt {attempt}: no products.json, and no complete build to finish"
            ),
        }
        assert!(out.join(USER_FILE).is_file(), "the user's file is gone");

        if attempt % 4 != 3 {
            let next = (rng.next() % CONFIGS.len() as u64) as usize;
            run_ok(fx.config_command(CONFIGS[next], &out));
            candidates = vec![next];
            assert_exactly(&out, &refs[next]);
        }
    }
    run_ok(fx.config_command(CONFIGS[1], &out));
    assert_exactly(&out, &refs[1]);
    assert_store_verifies(&fx.cache);
    eprintln!(
        "{during_writes} kills while products were written, {during_swaps} of them while they were put in place, \
         {completed} builds completed before their kill"
    );
    assert!(
        during_writes >= 5,
        "too few kills hit the product writing: {during_writes}"
    );
    assert!(during_swaps >= 3, "too few kills hit the swap: {during_swaps}");
}

/// A layer set with two extensions over the fake base: `a` (squashfs, made by strata) and
/// `b` (erofs, which needs the container engine this test does not have). Returns the set.
fn set_with_extensions(fx: &Fixture) -> PathBuf {
    let set = fx.tmp.path().join("set-ext");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(fake_build::layer_set_dir().join("base.toml"), set.join("base.toml")).unwrap();
    std::fs::write(set.join("a.toml"), "[extension]\npackages = [\"hello\"]\n").unwrap();
    std::fs::write(
        set.join("b.toml"),
        "[extension]\npackages = [\"hello\"]\nfilesystem = \"erofs\"\n",
    )
    .unwrap();
    let layer_set = strata::config::LayerSet::load(&set).unwrap();
    let builder = strata::pipeline::builder_tag(layer_set.distro());
    let store = Store::open(&fx.cache.join("oci")).unwrap();
    let e = fake_build::EPOCH;
    let (base_key, _) = fake_build::keys();
    let base_ref = strata::plan::layer_ref("base", &base_key);
    // The base layer again, with the os-release an extension's release is made from.
    let manifest = oci::get_manifest(&store, &base_ref).unwrap().unwrap();
    let (base_blob, _) = oci::layer_digest(&manifest.layers()[0]).unwrap();
    let base = oci::read_layer_blob(&store, &base_blob).unwrap();
    let mut ann: std::collections::HashMap<String, String> = manifest.annotations().clone().unwrap();
    ann.insert(oci::ANN_OS_RELEASE.into(), "ID=debian\nVERSION_ID=13\n".into());
    let blob = oci::put_layer_blob(&store, &base).unwrap();
    assert_eq!(blob.digest, base_blob);
    oci::put_image(&store, &base_ref, &blob, e, &oci_spec::image::Arch::Amd64, ann).unwrap();
    for name in ["a", "b"] {
        let x = layer_set.extension(name).unwrap();
        let key = strata::plan::extension_key(&layer_set, &builder, Some(e), &base_blob, x);
        let layer = strata_format::layer::Layer::from_entries(vec![
            strata_format::layer::Entry::dir("usr", 0o755, e),
            strata_format::layer::Entry::dir("usr/bin", 0o755, e),
            strata_format::layer::Entry::file("usr/bin/hello", format!("#!/bin/sh\necho {name}\n"), 0o755, e),
        ])
        .unwrap();
        let blob = oci::put_layer_blob(&store, &layer).unwrap();
        let ann = BTreeMap::from([
            (oci::ANN_KEY.to_string(), key.to_string()),
            (oci::ANN_EPOCH.to_string(), e.to_string()),
        ]);
        oci::put_image(
            &store,
            &strata::plan::layer_ref(&format!("ext-{name}"), &key),
            &blob,
            e,
            &oci_spec::image::Arch::Amd64,
            ann.into_iter().collect(),
        )
        .unwrap();
    }
    set
}

#[test]
fn a_build_that_fails_midway_leaves_the_previous_build() {
    let fx = Fixture::new(0);
    let set = set_with_extensions(&fx);
    let out = fx.tmp.path().join("out");
    run_ok(fx.command(&set, &out, false, &["--extension", "a"]));
    std::fs::write(out.join(USER_FILE), "the user's own file\n").unwrap();
    let before = consistent(&out).unwrap();
    assert!(
        before.find("sysext").is_some_and(|p| p.file == "a.sysext.raw"),
        "{before:?}"
    );

    // Signed this time (another initrd, another a.sysext.raw); `b` needs the engine.
    let failed = fx.command(&set, &out, true, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the erofs image needs an engine:\n{stderr}");
    assert!(
        stderr.contains("b.sysext.raw"),
        "the failure names the image:\n{stderr}"
    );
    assert!(
        stderr.contains("a.sysext.raw") || stderr.contains("making the extension image"),
        "the build got as far as making a.sysext.raw:\n{stderr}"
    );
    assert_exactly(&out, &before);
}
