//! `strata push` and `strata pull`, the real binary against the loopback registry
//! (`ci/registry.sh start`): a fake build's products and layers go up, a second push sends
//! no blob, `strata pull` and `skopeo` read what was pushed, and `strata pull` refuses
//! artifacts it does not know; with `--cert` it installs a sysext only when its signature
//! and verity tree check out against the certificate.

#[path = "support/fake_build.rs"]
mod fake_build;
#[path = "support/fake_registry.rs"]
mod fake_registry;
#[path = "support/oci_fixtures.rs"]
mod fixtures;
#[path = "support/signed_sysext.rs"]
mod signed_sysext;
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use strata::digest::{Digest, canonical_json};
use strata::registry::{self, ClientOptions, OCI_EMPTY, OCI_MANIFEST, PushOptions};
use strata::store::{Descriptor, Store};

/// A repository name no earlier run used, so first pushes really upload.
fn fresh_repo(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("strata-test/{what}-{}-{nanos}", std::process::id())
}

/// Run the strata binary; no container engine is reachable.
fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env_remove("STRATA_CACHE_DIR")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        !out.status.success(),
        "strata {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn total_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("total\t"))
        .unwrap_or_else(|| panic!("no total line in:\n{stdout}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => vec![],
    };
    names.sort();
    names
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh, skopeo (run with --include-ignored; ci/test.sh does)"]
fn push_twice_pull_by_tag_and_skopeo_reads_it() {
    let addr = support::registry();
    let skopeo = support::tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let store = Store::open(&cache.join("oci")).unwrap();
    let layers = fake_build::fake_layers(&store, 1);
    let out = tmp.path().join("out");
    let initrd = fixtures::noise(7, 300_000);
    let vmlinuz = fixtures::noise(8, 100_000);
    let sysext = fixtures::noise(9, 200_000);
    fake_build::fake_output(
        &out,
        layers.clone(),
        &[
            ("kernel", "vmlinuz", vmlinuz.clone()),
            ("initrd", "initrd.cpio.zst", initrd.clone()),
            ("sysext", "network.sysext.raw", sysext.clone()),
        ],
    );
    let repo = fresh_repo("cli");
    let reference = format!("{addr}/{repo}:13");
    let (out_s, cache_s) = (out.to_str().unwrap(), cache.to_str().unwrap());
    let push = [
        "push",
        &reference,
        "--output",
        out_s,
        "--cache-dir",
        cache_s,
        "--source",
        "https://example.org/strata",
    ];

    let first = ok(&push);
    let total = total_line(&first);
    assert!(!total.contains("uploaded 0 bytes"), "{first}");
    // Layers under their cache tags, each product under its own tag, the index under the tag.
    for tag in [
        format!("base-{}", layers[0].key.hex()),
        format!("kernel-{}", layers[1].key.hex()),
        "13-initrd".into(),
        "13-kernel".into(),
        "13-sysext-network".into(),
    ] {
        assert!(
            first.contains(&format!("{addr}/{repo}:{tag}\t")),
            "{tag} not pushed:\n{first}"
        );
    }
    assert!(
        first.lines().any(|l| l.starts_with(&format!("index\t{reference}\t"))),
        "{first}"
    );

    let second = ok(&push);
    let total = total_line(&second);
    assert!(
        total.contains("uploaded 0 bytes in 0 blobs") && total.contains("0 manifests uploaded"),
        "{second}"
    );

    // Pull one product by its tag into an empty cache.
    let dl = tmp.path().join("dl");
    let dl_cache = tmp.path().join("dl-cache");
    let (dl_s, dl_cache_s) = (dl.to_str().unwrap(), dl_cache.to_str().unwrap());
    let pulled = ok(&[
        "pull",
        &format!("{reference}-sysext-network"),
        "--output",
        dl_s,
        "--cache-dir",
        dl_cache_s,
    ]);
    assert!(pulled.starts_with("sysext\t"), "{pulled}");
    assert_eq!(files_in(&dl), ["network.sysext.raw"]);
    assert_eq!(std::fs::read(dl.join("network.sysext.raw")).unwrap(), sysext);
    assert_eq!(
        std::fs::metadata(dl.join("network.sysext.raw"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    fixtures::assert_store_verified(&dl_cache.join("oci"));

    // The index: every product.
    let all = tmp.path().join("all");
    ok(&[
        "pull",
        &reference,
        "--output",
        all.to_str().unwrap(),
        "--cache-dir",
        dl_cache_s,
    ]);
    assert_eq!(files_in(&all), ["initrd.cpio.zst", "network.sysext.raw", "vmlinuz"]);
    assert_eq!(std::fs::read(all.join("initrd.cpio.zst")).unwrap(), initrd);
    assert_eq!(std::fs::read(all.join("vmlinuz")).unwrap(), vmlinuz);

    let src = |tag: &str| format!("docker://{addr}/{repo}:{tag}");
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false", &src("13-sysext-network")]));
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw.as_bytes(), canonical_json(&m), "canonical JSON");
    assert_eq!(m["artifactType"], "application/vnd.strata.sysext.v1");
    assert_eq!(m["config"]["mediaType"], OCI_EMPTY);
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.efi.img");
    assert_eq!(m["layers"][0]["digest"], Digest::of(&sysext).to_string());
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "network.sysext.raw"
    );
    let ann = &m["annotations"];
    assert_eq!(
        ann["org.opencontainers.image.created"], "2023-11-14T22:13:20Z",
        "from the layers' epoch"
    );
    assert_eq!(ann["org.opencontainers.image.version"], "13");
    assert_eq!(ann["org.opencontainers.image.source"], "https://example.org/strata");
    let index: serde_json::Value = serde_json::from_str(&run(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &src("13"),
    ])))
    .unwrap();
    let types: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.strata.kernel.v1",
            "application/vnd.strata.initrd.v1",
            "application/vnd.strata.sysext.v1"
        ]
    );
    // The base layer is an image skopeo understands.
    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        &src(&format!("base-{}", layers[0].key.hex())),
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"], layers[0].manifest.to_string());

    // skopeo copy into an OCI layout: the artifact byte for byte.
    let layout = tmp.path().join("layout");
    for tag in ["13-sysext-network", "13-initrd"] {
        let dest = format!("oci:{}:{tag}", layout.display());
        run(Command::new(&skopeo).args(["copy", "--quiet", "--src-tls-verify=false", &src(tag), &dest]));
    }
    let copied = Store::open(&layout).unwrap();
    assert_eq!(copied.read_blob(&Digest::of(&sysext)).unwrap(), sysext);
    assert_eq!(copied.read_blob(&Digest::of(&initrd)).unwrap(), initrd);
    let desc = copied
        .get_ref("13-sysext-network")
        .unwrap()
        .expect("skopeo named the manifest by its tag");
    assert_eq!(copied.read_blob(&desc.digest).unwrap(), raw.as_bytes());
}

/// An artifact made by some other tool, pushed with the library.
fn push_artifact(addr: &str, reference: &str, artifact_type: &str, blob_type: &str, title: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let put = |mt: &str, data: &[u8]| Descriptor {
        media_type: mt.into(),
        digest: store.put_blob(data).unwrap(),
        size: data.len() as u64,
        artifact_type: None,
        annotations: Default::default(),
    };
    let config = put(OCI_EMPTY, b"{}");
    let mut blob = put(blob_type, &fixtures::noise(11, 4096));
    blob.annotations
        .insert("org.opencontainers.image.title".into(), title.into());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": config, "layers": [blob],
    });
    let desc = put(OCI_MANIFEST, &canonical_json(&manifest));
    store.set_ref("it", desc).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = ClientOptions {
        auth_files: Some(vec![]),
        ..Default::default()
    };
    rt.block_on(registry::push_ref(
        &store,
        "it",
        reference,
        &options,
        &PushOptions::default(),
    ))
    .unwrap();
    assert!(reference.starts_with(addr));
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh (run with --include-ignored; ci/test.sh does)"]
fn pull_refuses_artifacts_it_does_not_know() {
    let addr = support::registry();
    let tmp = tempfile::tempdir().unwrap();
    let repo = fresh_repo("refuse");
    let cache = tmp.path().join("cache");
    let cache_s = cache.to_str().unwrap();
    let cases = [
        (
            "other-type",
            "application/vnd.example.thing.v1",
            "application/vnd.efi.img",
            "x.sysext.raw",
            "artifact type `application/vnd.example.thing.v1`",
        ),
        (
            "wrong-blob",
            "application/vnd.strata.sysext.v1",
            "application/octet-stream",
            "x.sysext.raw",
            "media type `application/octet-stream`",
        ),
        (
            "escape",
            "application/vnd.strata.sysext.v1",
            "application/vnd.efi.img",
            "../x.sysext.raw",
            "holds the character `/`",
        ),
    ];
    for (tag, artifact_type, blob_type, title, message) in cases {
        let reference = format!("{addr}/{repo}:{tag}");
        push_artifact(&addr, &reference, artifact_type, blob_type, title);
        let dest = tmp.path().join(tag);
        let err = fails(&[
            "pull",
            &reference,
            "--output",
            dest.to_str().unwrap(),
            "--cache-dir",
            cache_s,
        ]);
        assert!(err.contains(message) && err.contains("refusing"), "{tag}: {err}");
        assert!(files_in(&dest).is_empty(), "{tag}: something was written");
    }
    // Nothing was downloaded for a refused artifact.
    assert!(files_in(&cache.join("oci/blobs/sha256")).is_empty());

    // A layer image is not a product either.
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    fixtures::layer_image(&store, "layer", &fixtures::noise(3, 1000));
    let reference = format!("{addr}/{repo}:layer");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = ClientOptions {
        auth_files: Some(vec![]),
        ..Default::default()
    };
    rt.block_on(registry::push_ref(
        &store,
        "layer",
        &reference,
        &options,
        &PushOptions::default(),
    ))
    .unwrap();
    let err = fails(&[
        "pull",
        &reference,
        "--output",
        tmp.path().join("layer").to_str().unwrap(),
        "--cache-dir",
        cache_s,
    ]);
    assert!(err.contains("application/vnd.oci.image.config.v1+json"), "{err}");
}

#[test]
#[ignore = "registry: needs the loopback registry on 127.0.0.1:5000 of ci/registry.sh (run with --include-ignored; ci/test.sh does)"]
fn pull_with_cert_checks_the_sysext_signature() {
    let addr = support::registry();
    let tmp = tempfile::tempdir().unwrap();
    let (signer, cert_pem) = signed_sysext::dev_key("strata pull test");
    let (_, other_pem) = signed_sysext::dev_key("someone else");
    let (cert, other) = (tmp.path().join("sysext.crt"), tmp.path().join("other.crt"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&other, &other_pem).unwrap();
    let (cert, other) = (cert.to_str().unwrap(), other.to_str().unwrap());
    let good = signed_sysext::image(&signer, 5, 1, false);
    let tampered = signed_sysext::image(&signer, 5, 2, true);

    // A build with an initrd, a good sysext and a tampered one.
    let cache = tmp.path().join("cache");
    let store = Store::open(&cache.join("oci")).unwrap();
    let out = tmp.path().join("out");
    fake_build::fake_output(
        &out,
        fake_build::fake_layers(&store, 2),
        &[
            ("initrd", "initrd.cpio.zst", fixtures::noise(12, 10_000)),
            ("sysext", "network.sysext.raw", good.clone()),
            ("sysext", "storage.sysext.raw", tampered),
        ],
    );
    let reference = format!("{addr}/{}:13", fresh_repo("cert"));
    let cache_s = cache.to_str().unwrap();
    ok(&[
        "push",
        &reference,
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache_s,
    ]);
    let pull = |what: &str, dest: &Path, cert: &str| {
        strata(&[
            "pull",
            &format!("{reference}{what}"),
            "--output",
            dest.to_str().unwrap(),
            "--cache-dir",
            cache_s,
            "--cert",
            cert,
        ])
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The right certificate: installed, byte for byte.
    let dest = tmp.path().join("good");
    let o = pull("-sysext-network", &dest, cert);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files_in(&dest), ["network.sysext.raw"]);
    assert_eq!(std::fs::read(dest.join("network.sysext.raw")).unwrap(), good);

    // Another certificate: refused, and nothing (not even a temporary file) is left.
    let dest = tmp.path().join("other");
    let o = pull("-sysext-network", &dest, other);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("refusing") && err.contains("signed for the certificate with SHA-256 fingerprint"),
        "{err}"
    );
    assert!(
        !err.contains("downloading it again"),
        "a refused signature is not a damaged download: {err}"
    );
    assert!(files_in(&dest).is_empty(), "{:?}", files_in(&dest));

    // Tampered after signing: the recomputed root hash says so.
    let dest = tmp.path().join("tampered");
    let o = pull("-sysext-storage", &dest, cert);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("the data partition hashes to root hash"), "{err}");
    assert!(files_in(&dest).is_empty(), "{:?}", files_in(&dest));

    // --cert on something that is not a sysext: an error before anything is downloaded.
    let dest = tmp.path().join("initrd");
    for what in ["-initrd", ""] {
        let o = pull(what, &dest, cert);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("only a sysext or confext carries a verity signature"),
            "{what}: {err}"
        );
        assert!(files_in(&dest).is_empty());
    }
}

#[test]
fn pull_with_an_unreadable_cert_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.crt");
    let not_a_cert = tmp.path().join("junk.crt");
    std::fs::write(&not_a_cert, "hello").unwrap();
    for (cert, message) in [(&missing, "reading"), (&not_a_cert, "is not an X.509 certificate")] {
        let err = fails(&[
            "pull",
            "127.0.0.1:1/x/network:13",
            "--output",
            tmp.path().join("out").to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ]);
        assert!(err.contains("--cert") && err.contains(message), "{err}");
    }
    assert!(files_in(&tmp.path().join("out")).is_empty());
}

#[test]
fn push_needs_a_tag_and_a_build() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let err = fails(&["push", "127.0.0.1:5000/x/initrd", "--output", out, "--cache-dir", out]);
    assert!(err.contains("name the tag"), "{err}");
    let err = fails(&[
        "push",
        "127.0.0.1:5000/x/initrd:13",
        "--output",
        out,
        "--cache-dir",
        out,
    ]);
    assert!(err.contains("products.json") && err.contains("strata build"), "{err}");
}

/// A fake registry (in-process, on its own runtime, which must outlive it).
fn fake_registry() -> (tokio::runtime::Runtime, fake_registry::FakeRegistry) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(fake_registry::FakeRegistry::start(Default::default()));
    (rt, server)
}

#[test]
fn pull_from_a_stalled_registry_fails_within_the_timeout() {
    let (_rt, server) = fake_registry();
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/r:1-sysext-network", server.addr);
    push_artifact(
        &server.addr,
        &reference,
        registry::artifact::SYSEXT_ARTIFACT,
        registry::artifact::SYSEXT_IMAGE,
        "network.sysext.raw",
    );
    server.set_faults(fake_registry::Faults {
        stall: vec![("GET /v2/r/blobs/".into(), 100)],
        ..Default::default()
    });
    let out = tmp.path().join("out");
    let started = std::time::Instant::now();
    let err = fails(&[
        "pull",
        &reference,
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        "--registry-timeout",
        "0.5",
    ]);
    let took = started.elapsed();
    // As documented: 5 attempts of 0.5 s, and 0.25 + 0.5 + 1 + 2 s of backoff between them.
    assert!(took < std::time::Duration::from_secs(9), "took {took:?}: {err}");
    assert!(
        err.contains("sent nothing for 0.5 s")
            && err.contains("on each of 5 attempts")
            && err.contains("/v2/r/blobs/sha256:"),
        "{err}"
    );
    assert!(err.contains("--registry-timeout"), "{err}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
    let bad = fails(&[
        "pull",
        &reference,
        "--output",
        out.to_str().unwrap(),
        "--registry-timeout",
        "0",
    ]);
    assert!(bad.contains("`0` is not a number of seconds above 0"), "{bad}");
}

#[test]
fn pull_refuses_titles_that_are_not_file_names_of_their_kind() {
    let (_rt, server) = fake_registry();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for (n, (kind, title, why)) in [
        ("kernel", "products.json", "would overwrite the list of products"),
        ("initrd", "products.json", "would overwrite the list of products"),
        ("kernel", "vmlinuz\nx", "holds the character `\\n`"),
        ("initrd", " initrd", "holds the character ` `"),
        ("initrd", "..", "does not start with a letter or digit"),
        ("kernel", "../../etc/vmlinuz", "holds the character `/`"),
        ("sysext", ".hidden.sysext.raw", "does not start with a letter or digit"),
        ("kernel", "initrd.cpio.zst", "does not have the shape of its kind"),
    ]
    .into_iter()
    .enumerate()
    {
        let t = registry::artifact::product_type(kind).unwrap();
        let reference = format!("{}/r:{n}", server.addr);
        push_artifact(&server.addr, &reference, t.artifact_type, t.media_type, title);
        let out = tmp.path().join(format!("out{n}"));
        std::fs::create_dir(&out).unwrap();
        let err = fails(&[
            "pull",
            &reference,
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ]);
        assert!(err.contains("refusing") && err.contains(why), "{title:?}: {err}");
        assert!(
            err.contains(&format!("the {kind} file name `{}`", title.escape_debug())),
            "{err}"
        );
        assert!(files_in(&out).is_empty(), "{title:?}: {:?}", files_in(&out));
    }
    // Nothing of a refused artifact was downloaded.
    assert!(files_in(&cache.join("oci/blobs/sha256")).is_empty());
}

/// An output directory whose `products.json` names `file` for its kernel.
fn output_naming(dir: &Path, file: &str) {
    fake_build::fake_output(
        dir,
        vec![],
        &[
            ("kernel", "vmlinuz", b"k".to_vec()),
            ("initrd", "initrd.cpio.zst", b"i".to_vec()),
        ],
    );
    let path = dir.join("products.json");
    let mut p: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    p["products"][0]["file"] = file.into();
    std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
}

#[test]
fn push_and_vm_refuse_product_files_outside_the_output_directory() {
    let (_rt, server) = fake_registry();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
    // qemu that only says it ran.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ran = tmp.path().join("qemu-ran");
    let qemu = bin.join("qemu-system-x86_64");
    std::fs::write(&qemu, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for (n, (file, why)) in [
        ("../../../etc/hostname", "holds the character `/`"),
        ("vmlinuz-escape", "outside the output directory"),
        ("products.json", "would overwrite the list of products"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out{n}"));
        output_naming(&out, file);
        std::os::unix::fs::symlink("../secret", out.join("vmlinuz-escape")).unwrap();
        let out_s = out.to_str().unwrap();
        let err = fails(&[
            "push",
            &format!("{}/r:1", server.addr),
            "--output",
            out_s,
            "--cache-dir",
            out_s,
        ]);
        assert!(err.contains(why), "push {file}: {err}");
        assert!(server.log().is_empty(), "push {file} sent: {:#?}", server.log());
        let vm = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["vm", out_s])
            .env("PATH", &path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&vm.stderr);
        assert!(!vm.status.success() && err.contains(why), "vm {file}: {err}");
        assert!(!ran.exists(), "vm {file} started qemu");
    }
    // The same directory with a good name boots (the fake qemu).
    let out = tmp.path().join("good");
    output_naming(&out, "vmlinuz");
    let vm = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["vm", out.to_str().unwrap()])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        vm.status.success() && ran.exists(),
        "{}",
        String::from_utf8_lossy(&vm.stderr)
    );
}
