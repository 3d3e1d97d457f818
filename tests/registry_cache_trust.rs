//! A `--cache-from` registry is not trusted (issue 9, holes 1, 3 and 5), tried against the
//! real binary with the in-process fake registry and no container engine: machine A (the
//! fake build's store) fills a repository with `--cache-to`, signing with its key; then
//! the registry serves, under the right tags, what a hostile registry would. Machine B must
//! never use it: it builds instead (and, without an engine, fails saying so), nothing it
//! refused is named in its store, and no product is made from it.

#[path = "support/fake_build.rs"]
mod fake_build;
#[path = "support/fake_registry.rs"]
mod fake_registry;
#[path = "support/oci_fixtures.rs"]
mod fixtures;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fake_registry::{FakeRegistry, Faults};
use strata::digest::{Digest, canonical_json};
use strata::products::{self, LayerRecord};
use strata::registry::{Client, ClientOptions, OCI_MANIFEST};
use strata::store::Store;
use strata::store::image as oci;
use strata_format::layer::Entry;

const REPO: &str = "strata-test/cache";

/// `strata ARGS` with the fake build's epoch and no container engine.
fn strata(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .envs(env.iter().copied())
        .env("SOURCE_DATE_EPOCH", fake_build::EPOCH.to_string())
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env_remove("STRATA_CACHE_DIR")
        .env_remove("STRATA_MAX_LAYER_SIZE")
        .output()
        .unwrap()
}

/// `strata build --no-extensions` of the default layer set into `cache`, `out`.
fn build(cache: &Path, out: &Path, extra: &[&str]) -> Output {
    build_env(cache, out, extra, &[])
}

fn build_env(cache: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let set = fake_build::layer_set_dir();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "build".as_ref(),
        set.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        "--no-extensions".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    strata(&args, env)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    let e = stderr(&out);
    assert!(out.status.success(), "strata build failed:\n{e}");
    e
}

/// A build that had to build a layer, could not (no engine), and says so.
fn failed_for_want_of_an_engine(out: &Output) -> String {
    let e = stderr(out);
    assert!(!out.status.success(), "the build succeeded:\n{e}");
    assert!(e.contains("container engine"), "{e}");
    e
}

/// A development key pair from `strata keygen`: (key, certificate).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    let out = strata(&["keygen".as_ref(), "--output".as_ref(), d.as_os_str()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    (d.join("sysext.key"), d.join("sysext.crt"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Machine A with its store, a fake registry it filled with `--cache-to`, and two key pairs.
struct World {
    rt: tokio::runtime::Runtime,
    registry: FakeRegistry,
    tmp: tempfile::TempDir,
    layers: Vec<LayerRecord>,
    cache_a: PathBuf,
    out_a: PathBuf,
    /// The key A signs with.
    key: (PathBuf, PathBuf),
    /// Another key pair.
    other: (PathBuf, PathBuf),
}

impl World {
    /// A's store, keys, and an empty fake registry.
    fn new() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let registry = rt.block_on(FakeRegistry::start(Faults::default()));
        let tmp = tempfile::tempdir().unwrap();
        let cache_a = tmp.path().join("a");
        let layers = fake_build::fake_layers(&Store::open(&cache_a.join("oci")).unwrap(), 5);
        let key = keygen(tmp.path(), "key");
        let other = keygen(tmp.path(), "other");
        let out_a = tmp.path().join("out-a");
        World {
            rt,
            registry,
            tmp,
            layers,
            cache_a,
            out_a,
            key,
            other,
        }
    }

    /// A new world whose registry A filled with `strata build --cache-to … --key --cert`.
    fn filled() -> World {
        let w = World::new();
        let repo = w.repo();
        ok(build(
            &w.cache_a,
            &w.out_a,
            &["--cache-to", &repo, "--key", s(&w.key.0), "--cert", s(&w.key.1)],
        ));
        w
    }

    fn repo(&self) -> String {
        format!("{}/{REPO}", self.registry.addr)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn base(&self) -> &LayerRecord {
        &self.layers[0]
    }

    fn tag(&self, l: &LayerRecord) -> String {
        format!("{}-{}", l.kind, l.key.hex())
    }

    /// Serve `data` as a blob of the repository.
    fn serve_blob(&self, data: Vec<u8>) -> (Digest, u64) {
        let d = Digest::of(&data);
        let size = data.len() as u64;
        let mut st = self.registry.state.lock().unwrap();
        st.blobs.insert(d.clone(), data.into());
        st.repo_blobs.insert((REPO.to_string(), d.clone()));
        (d, size)
    }

    /// Serve under the base layer's tag a copy of A's base manifest whose layer blob is
    /// `blob` (the key annotation and everything else unchanged). Returns its digest.
    fn serve_base_with_blob(&self, blob: Vec<u8>) -> Digest {
        let (digest, size) = self.serve_blob(blob);
        let store = Store::open(&self.cache_a.join("oci")).unwrap();
        let honest = store.read_blob(&self.base().manifest).unwrap();
        let mut m: serde_json::Value = serde_json::from_slice(&honest).unwrap();
        m["layers"][0]["digest"] = digest.to_string().into();
        m["layers"][0]["size"] = size.into();
        let data = canonical_json(&m);
        let d = Digest::of(&data);
        let mut st = self.registry.state.lock().unwrap();
        for reference in [self.tag(self.base()), d.to_string()] {
            st.manifests.insert(
                (REPO.to_string(), reference),
                (OCI_MANIFEST.to_string(), data.clone().into()),
            );
        }
        d
    }

    /// Push A's layers to a fresh repository with the library, unsigned (as an older strata
    /// or `strata push` without a key left them). Returns the repository.
    fn unsigned_repo(&self) -> String {
        let client = Client::new(
            &self.registry.addr,
            ClientOptions {
                auth_files: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
        let store = Store::open(&self.cache_a.join("oci")).unwrap();
        let repo = format!("{}/strata-test/unsigned", self.registry.addr);
        for l in &self.layers {
            let remote = format!("{repo}:{}", self.tag(l)).parse().unwrap();
            self.rt
                .block_on(strata::registry::push(
                    &client,
                    &store,
                    &l.ref_name(),
                    &remote,
                    &Default::default(),
                ))
                .unwrap();
        }
        repo
    }
}

/// No name in B's store points at the layer `l`, nor at a staging copy of anything.
fn assert_not_named(cache: &Path, l: &LayerRecord) {
    let store = Store::open(&cache.join("oci")).unwrap();
    assert_eq!(store.get_ref(&l.ref_name()).unwrap(), None, "{} is named", l.ref_name());
    let index = std::fs::read_to_string(cache.join("oci/index.json")).unwrap();
    assert!(!index.contains("staging"), "a staging name is left: {index}");
}

/// The base layer A built, with `usr/bin/backdoor` added: same key annotation, new digests.
fn backdoored_base_blob(w: &World) -> Vec<u8> {
    let store = Store::open(&w.cache_a.join("oci")).unwrap();
    let m = oci::get_manifest(&store, &w.base().ref_name()).unwrap().unwrap();
    let (blob, _) = oci::layer_digest(&m.layers()[0]).unwrap();
    let mut entries = oci::read_layer_blob(&store, &blob).unwrap().into_entries();
    entries.push(Entry::file(
        "usr/bin/backdoor",
        "#!/bin/sh\nexec sh -i\n",
        0o755,
        fake_build::EPOCH,
    ));
    let evil = strata_format::layer::Layer::from_entries(entries).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let scratch = Store::open(scratch.path()).unwrap();
    let b = oci::put_layer_blob(&scratch, &evil).unwrap();
    scratch.read_blob(&b.digest).unwrap()
}

#[test]
fn a_layer_with_extra_content_under_a_valid_key_is_refused_and_nothing_is_made_from_it() {
    let w = World::filled();
    let evil = w.serve_base_with_blob(backdoored_base_blob(&w));
    assert_ne!(evil, w.base().manifest);

    // B trusts A's certificate and signs with A's key: the registry's layer is not A's.
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let key = ["--cache-from", &w.repo(), "--key", s(&w.key.0), "--cert", s(&w.key.1)];
    let out = build(&cache_b, &out_b, &key);
    let e = failed_for_want_of_an_engine(&out);
    assert!(
        e.contains("remote cache entry refused") && e.contains("is not a valid signature of this layer"),
        "{e}"
    );
    assert!(
        !out_b.join("products.json").exists(),
        "products were written from the refused layer"
    );
    assert_not_named(&cache_b, w.base());

    // The gate really bites: told to take anything, B takes the backdoored layer and
    // builds from it.
    let (cache_c, out_c) = (w.dir("c"), w.dir("out-c"));
    let e = ok(build(
        &cache_c,
        &out_c,
        &["--cache-from", &w.repo(), "--cache-insecure-accept-unsigned"],
    ));
    assert!(e.contains("WITHOUT a valid signature"), "{e}");
    assert_eq!(products::read(&out_c).unwrap().layers[0].manifest, evil);
}

#[test]
fn unsigned_entries_are_refused_unless_explicitly_accepted() {
    let w = World::new();
    let repo = w.unsigned_repo();
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let out = build(&cache_b, &out_b, &["--cache-from", &repo, "--cache-trust", s(&w.key.1)]);
    let e = failed_for_want_of_an_engine(&out);
    // The base layer comes first; its refusal sends the build to the engine.
    assert_eq!(e.matches("the entry is not signed (no ").count(), 1, "{e}");
    assert_not_named(&cache_b, w.base());

    // With the loud option, both are taken (each with a warning), byte for byte A's.
    let (cache_c, out_c) = (w.dir("c"), w.dir("out-c"));
    let e = ok(build(
        &cache_c,
        &out_c,
        &["--cache-from", &repo, "--cache-insecure-accept-unsigned"],
    ));
    assert_eq!(e.matches("WITHOUT a valid signature").count(), 2, "{e}");
    assert_eq!(products::read(&out_c).unwrap().layers, w.layers);
}

#[test]
fn entries_signed_by_another_certificate_are_refused() {
    let w = World::filled();
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let out = build(
        &cache_b,
        &out_b,
        &["--cache-from", &w.repo(), "--cache-trust", s(&w.other.1)],
    );
    let e = failed_for_want_of_an_engine(&out);
    assert_eq!(e.matches("is not a valid signature of this layer").count(), 1, "{e}");
    assert!(
        e.contains(s(&w.other.1)),
        "the refusal names the certificate tried: {e}"
    );
    assert_not_named(&cache_b, w.base());
    // --cache-trust is repeatable: with A's certificate among them, the entries are taken.
    let (cache_c, out_c) = (w.dir("c"), w.dir("out-c"));
    let trust = ["--cache-trust", s(&w.other.1), "--cache-trust", s(&w.key.1)];
    let e = ok(build(
        &cache_c,
        &out_c,
        &[&["--cache-from", &w.repo()][..], &trust].concat(),
    ));
    assert_eq!(e.matches("signed by a trusted certificate").count(), 2, "{e}");
}

#[test]
fn honest_signed_entries_give_byte_identical_products() {
    let w = World::filled();
    // Signed once: a second --cache-to finds the same signatures there.
    let signature_puts = || {
        w.registry
            .log()
            .iter()
            .filter(|l| l.starts_with("PUT ") && l.contains(".sig "))
            .count()
    };
    assert_eq!(signature_puts(), 2, "{:?}", w.registry.log());
    let to = ["--cache-to", &w.repo(), "--key", s(&w.key.0), "--cert", s(&w.key.1)];
    ok(build(&w.cache_a, &w.out_a, &to));
    assert_eq!(signature_puts(), 2, "{:?}", w.registry.log());
    // The signatures are referrers of the layer manifests.
    {
        let st = w.registry.state.lock().unwrap();
        for l in &w.layers {
            let (_, sig) = &st.manifests[&(REPO.to_string(), format!("{}.sig", w.tag(l)))];
            let v: serde_json::Value = serde_json::from_slice(sig).unwrap();
            assert_eq!(v["artifactType"], strata::registry::cache::SIGNATURE_ARTIFACT);
            assert_eq!(v["subject"]["digest"], l.manifest.to_string());
        }
    }
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let e = ok(build(
        &cache_b,
        &out_b,
        &["--cache-from", &w.repo(), "--key", s(&w.key.0), "--cert", s(&w.key.1)],
    ));
    assert_eq!(e.matches("signed by a trusted certificate").count(), 2, "{e}");
    let (pa, pb) = (products::read(&w.out_a).unwrap(), products::read(&out_b).unwrap());
    assert_eq!(pa, pb);
    for p in &pa.products {
        assert!(
            std::fs::read(w.out_a.join(&p.file)).unwrap() == std::fs::read(out_b.join(&p.file)).unwrap(),
            "{} differs",
            p.file
        );
    }
    fixtures::assert_store_verified(&cache_b.join("oci"));
}

#[test]
fn the_cache_flags_need_keys_and_certificates() {
    let w = World::new();
    let (cache, out) = (w.dir("b"), w.dir("out-b"));
    let o = build(&cache, &out, &["--cache-from", &w.repo()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--cache-trust CERT") && e.contains("--cache-insecure-accept-unsigned"),
        "{e}"
    );
    let o = build(&cache, &out, &["--cache-to", &w.repo()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cache-key FILE"), "{}", stderr(&o));
    // Nothing was asked of the registry.
    assert!(w.registry.log().is_empty(), "{:?}", w.registry.log());
    // A certificate file that is not one is named.
    let bogus = w.dir("bogus.crt");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let o = build(&cache, &out, &["--cache-from", &w.repo(), "--cache-trust", s(&bogus)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(s(&bogus)), "{}", stderr(&o));
}

/// A tar+zstd blob of raw tar entries (path, type, link target, data), written by hand so
/// that paths a `Layer` cannot hold can be in it.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (path, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    zstd::encode_all(tar.as_slice(), 3).unwrap()
}

#[test]
fn a_bad_layer_tar_is_refused_before_it_is_named_and_later_builds_do_not_trip_on_it() {
    use tar::EntryType::{Link, Regular};
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "a path that climbs out",
            raw_tar(&[("../../etc/evil", Regular, "", b"evil")]),
            "`../../etc/evil`: path escapes the layer root",
        ),
        (
            "a hard link to a host file",
            raw_tar(&[("usr/bin/x", Link, "/etc/shadow", b"")]),
            "`usr/bin/x` is a hard link to `etc/shadow`, which is not a regular file in the layer",
        ),
        (
            "a hard link out of the layer",
            raw_tar(&[("usr/bin/x", Link, "../../../etc/shadow", b"")]),
            "`usr/bin/x`: path escapes the layer root",
        ),
    ];
    let w = World::filled();
    for (i, (what, blob, message)) in cases.into_iter().enumerate() {
        w.serve_base_with_blob(blob);
        let (cache_b, out_b) = (w.dir(&format!("b{i}")), w.dir(&format!("out-b{i}")));
        let out = build(
            &cache_b,
            &out_b,
            &["--cache-from", &w.repo(), "--cache-insecure-accept-unsigned"],
        );
        let e = failed_for_want_of_an_engine(&out);
        assert!(
            e.contains("not a usable base layer") && e.contains(message),
            "{what}: {e}"
        );
        assert_not_named(&cache_b, w.base());
        // The next build, without the cache, is not stuck on the refused layer: it goes
        // on to build it (and fails here for want of an engine, not because of the store).
        let e = failed_for_want_of_an_engine(&build(&cache_b, &out_b, &[]));
        assert!(!e.contains(message), "{what}: {e}");
        fixtures::assert_store_verified(&cache_b.join("oci"));
    }
}

/// A zstd-compressed tar of `files` files of `each` zero bytes, compressed as it is made
/// (never held uncompressed).
fn zero_bomb(files: usize, each: u64) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("usr/lib/zero{i}")).unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(each);
        h.set_cksum();
        z.write_all(h.as_bytes()).unwrap();
        let mut left = each;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            z.write_all(&zeros[..n as usize]).unwrap();
            left -= n;
        }
    }
    z.write_all(&[0; 1024]).unwrap();
    z.finish().unwrap()
}

/// Run `strata build` and sample its peak resident memory (`VmHWM`) until it exits.
fn build_measured(cache: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Output, u64) {
    let set = fake_build::layer_set_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("build")
        .arg(set)
        .arg("--output")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--no-extensions")
        .args(extra)
        .envs(env.iter().copied())
        .env("SOURCE_DATE_EPOCH", fake_build::EPOCH.to_string())
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env_remove("STRATA_CACHE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    // Sampled until the process is gone; VmHWM only grows, so the last sample is the
    // peak up to a few milliseconds before the exit.
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak_kib = peak_kib.max(v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (child.wait_with_output().unwrap(), peak_kib >> 10)
}

#[test]
fn a_zstd_bomb_is_refused_with_bounded_memory() {
    let w = World::filled();
    // 24 files of 64 MiB: 1.5 GiB of zeros in a blob of a few hundred KiB.
    let bomb = zero_bomb(24, 64 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    w.serve_base_with_blob(bomb);
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let accept = ["--cache-from", &w.repo(), "--cache-insecure-accept-unsigned"];
    let (out, peak_mib) = build_measured(&cache_b, &out_b, &accept, &[("STRATA_MAX_LAYER_SIZE", "256M")]);
    let e = failed_for_want_of_an_engine(&out);
    assert!(
        e.contains("the layer tar is larger than the limit of 268435456 bytes") && e.contains("STRATA_MAX_LAYER_SIZE"),
        "{e}"
    );
    eprintln!("zstd bomb of 1.5 GiB, limit 256 MiB: peak resident memory of strata build {peak_mib} MiB");
    assert!(peak_mib < 512, "peak resident memory {peak_mib} MiB");
    assert_not_named(&cache_b, w.base());

    // One file that claims more than the default limit is refused at its header.
    w.serve_base_with_blob(zero_bomb(1, 2 << 30));
    let (cache_c, out_c) = (w.dir("c"), w.dir("out-c"));
    let (out, peak_mib) = build_measured(&cache_c, &out_c, &accept, &[]);
    let e = failed_for_want_of_an_engine(&out);
    assert!(
        e.contains("larger than the limit of 1073741824 bytes (at entry `usr/lib/zero0`)"),
        "{e}"
    );
    eprintln!("zstd bomb of one 2 GiB file, default limit: peak resident memory {peak_mib} MiB");
    assert!(peak_mib < 512, "peak resident memory {peak_mib} MiB");
}

#[test]
fn a_repository_filled_by_a_signed_strata_push_is_a_trusted_cache() {
    let w = World::new();
    ok(build(&w.cache_a, &w.out_a, &[]));
    let push = |repo: &str, signed: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "push".as_ref(),
            repo.as_ref(),
            "--output".as_ref(),
            w.out_a.as_os_str(),
            "--cache-dir".as_ref(),
            w.cache_a.as_os_str(),
        ];
        if signed {
            args.extend([
                "--key".as_ref(),
                w.key.0.as_os_str(),
                "--cert".as_ref(),
                w.key.1.as_os_str(),
            ]);
        }
        let out = strata(&args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let addr = &w.registry.addr;
    let e = push(&format!("{addr}/strata-test/unsigned:13"), false);
    assert_eq!(e.matches("the layer is pushed unsigned").count(), 2, "{e}");
    push(&format!("{addr}/strata-test/pushed:13"), true);

    let trust = ["--cache-trust", s(&w.key.1)];
    let (cache_b, out_b) = (w.dir("b"), w.dir("out-b"));
    let from = format!("{addr}/strata-test/pushed");
    let e = ok(build(
        &cache_b,
        &out_b,
        &[&["--cache-from", &from][..], &trust].concat(),
    ));
    assert_eq!(e.matches("signed by a trusted certificate").count(), 2, "{e}");
    assert_eq!(products::read(&out_b).unwrap().layers, w.layers);

    let (cache_c, out_c) = (w.dir("c"), w.dir("out-c"));
    let from = format!("{addr}/strata-test/unsigned");
    let out = build(&cache_c, &out_c, &[&["--cache-from", &from][..], &trust].concat());
    let e = failed_for_want_of_an_engine(&out);
    assert!(e.contains("the entry is not signed"), "{e}");
}
