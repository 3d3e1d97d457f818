//! The registry as the shared build cache, without podman: machine A has the default layer
//! set's layers in its store and fills a registry repository with `--cache-to`; machine B,
//! with an empty cache directory and no reachable container engine, builds from
//! `--cache-from` alone and gets byte-identical products.

#[path = "support/fake_build.rs"]
mod fake_build;
#[path = "support/oci_fixtures.rs"]
mod fixtures;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use strata::products;
use strata::registry::{Client, ClientOptions};
use strata::store::Store;
use strata::store::image as oci;

fn fresh_repo(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("strata-test/{what}-{}-{nanos}", std::process::id())
}

/// `strata build` of the default layer set with the fake build's epoch; any use of the
/// container engine fails.
fn build(cache: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("build")
        .arg(fake_build::layer_set_dir())
        .arg("--output")
        .arg(output)
        .arg("--cache-dir")
        .arg(cache)
        // The fake layers stand for the base and kernel layers; extension layers are
        // diffs against a real base (tests/e2e_sysext.rs).
        .arg("--no-extensions")
        .args(extra)
        .env("SOURCE_DATE_EPOCH", fake_build::EPOCH.to_string())
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env_remove("STRATA_CACHE_DIR")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "strata build failed:\n{stderr}");
    stderr
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh (run with --include-ignored; ci/test.sh does)"]
fn second_machine_builds_from_the_registry_without_an_engine() {
    let addr = support::registry();
    let tmp = tempfile::tempdir().unwrap();
    let (cache_a, out_a) = (tmp.path().join("a"), tmp.path().join("out-a"));
    let layers = fake_build::fake_layers(&Store::open(&cache_a.join("oci")).unwrap(), 5);
    let repo = format!("{addr}/{}", fresh_repo("cache"));
    // A signs what it pushes; B trusts A's certificate (tests/registry_cache_trust.rs has
    // the entries B must refuse).
    let keys = tmp.path().join("keys");
    let keygen = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["keygen", "--output"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let (key, cert) = (keys.join("sysext.key"), keys.join("sysext.crt"));
    let signed = |flag: &'static str, repo: &str| -> Vec<String> {
        vec![
            flag.to_string(),
            repo.to_string(),
            "--key".into(),
            key.display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
        ]
    };

    // Without a cache, an empty store needs the engine: the gate below really bites.
    let (cache_c, out_c) = (tmp.path().join("c"), tmp.path().join("out-c"));
    let out = build(&cache_c, &out_c, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("container engine"), "{stderr}");

    // Machine A: every layer is in its store; --cache-to fills the registry.
    let to: Vec<String> = signed("--cache-to", &repo);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    ok(build(&cache_a, &out_a, &to));
    let client = Client::new(
        &addr,
        ClientOptions {
            auth_files: Some(vec![]),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repository = repo.strip_prefix(&format!("{addr}/")).unwrap();
    for l in &layers {
        let tag = format!("{}-{}", l.kind, l.key.hex());
        let there = rt.block_on(client.manifest_digest(repository, &tag)).unwrap();
        assert_eq!(there.as_ref(), Some(&l.manifest), "{tag}");
    }
    // A second --cache-to finds them there.
    let stderr = ok(build(&cache_a, &out_a, &to));
    assert_eq!(
        stderr.matches("the remote cache has the layer already").count(),
        2,
        "{stderr}"
    );

    // Machine B: empty cache dir, no engine; everything comes from --cache-from.
    let (cache_b, out_b) = (tmp.path().join("b"), tmp.path().join("out-b"));
    let from: Vec<String> = signed("--cache-from", &repo);
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let stderr = ok(build(&cache_b, &out_b, &from));
    assert_eq!(
        stderr.matches("layer pulled from the remote cache").count(),
        2,
        "{stderr}"
    );
    let (pa, pb) = (products::read(&out_a).unwrap(), products::read(&out_b).unwrap());
    assert_eq!(pa, pb);
    assert_eq!(pb.layers, layers);
    for p in &pa.products {
        let (a, b) = (
            std::fs::read(out_a.join(&p.file)).unwrap(),
            std::fs::read(out_b.join(&p.file)).unwrap(),
        );
        assert!(a == b, "{} differs between the two machines", p.file);
    }
    assert_eq!(
        std::fs::read(out_a.join("products.json")).unwrap(),
        std::fs::read(out_b.join("products.json")).unwrap()
    );
    let store_b = Store::open(&cache_b.join("oci")).unwrap();
    for l in &layers {
        assert!(
            oci::verify(&store_b, &l.ref_name()).unwrap(),
            "{} verifies in B's store",
            l.ref_name()
        );
    }
    fixtures::assert_store_verified(&cache_b.join("oci"));

    // A cache that lacks the layers is no error: the build goes on to the engine (and fails
    // here, without one, saying so).
    let empty = format!("{addr}/{}", fresh_repo("empty"));
    let (cache_d, out_d) = (tmp.path().join("d"), tmp.path().join("out-d"));
    let out = build(
        &cache_d,
        &out_d,
        &["--cache-from", &empty, "--cache-trust", cert.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not in the remote cache") && stderr.contains("container engine"),
        "{stderr}"
    );
}

#[test]
fn cache_references_name_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build(
        tmp.path(),
        &tmp.path().join("out"),
        &[
            "--cache-from",
            "127.0.0.1:5000/cache:13",
            "--cache-insecure-accept-unsigned",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a tag"), "{stderr}");
}
