//! The client against an in-process registry that misbehaves. Each case ends in a clear
//! error or a successful retry, and the store never holds an unverified blob or a
//! temporary file.

#[path = "support/fake_registry.rs"]
mod fake;
#[path = "support/oci_fixtures.rs"]
mod fixtures;

use std::time::Duration;

use fake::{FakeRegistry, Faults};
use fixtures::{assert_store_verified, index, layer_image, noise, sysext_artifact};
use strata::registry::auth::Credentials;
use strata::registry::{self, Client, ClientOptions, Error, PushOptions, Reference};
use strata::store::{Descriptor, Store};

fn options() -> ClientOptions {
    ClientOptions {
        retries: 3,
        backoff: Duration::from_millis(10),
        auth_files: Some(vec![]),
        ..Default::default()
    }
}

struct Setup {
    server: FakeRegistry,
    client: Client,
    _src_dir: tempfile::TempDir,
    src: Store,
    layer: Descriptor,
    sysext: Descriptor,
}

/// A fake registry holding `r:all` (an index of a layer image and a sysext artifact),
/// pushed by our client while the registry behaved.
async fn setup(client_options: ClientOptions, faults_during_push: Faults) -> Setup {
    let server = FakeRegistry::start(faults_during_push).await;
    let client = Client::new(&server.addr, client_options).unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    let layer = layer_image(&src, "layer", &noise(7, 600_000));
    let sysext = sysext_artifact(&src, "sysext", &noise(8, 300_000));
    index(&src, "all", &[layer.clone(), sysext.clone()]);
    registry::push(
        &client,
        &src,
        "all",
        &remote(&server, "r", "all"),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    Setup {
        server,
        client,
        _src_dir: src_dir,
        src,
        layer,
        sysext,
    }
}

fn remote(server: &FakeRegistry, repo: &str, tag: &str) -> Reference {
    format!("{}/{repo}:{tag}", server.addr).parse().unwrap()
}

/// The biggest blob of the layer image (its layer).
fn big_blob(s: &Setup) -> Descriptor {
    let m: serde_json::Value = serde_json::from_slice(&s.src.read_blob(&s.layer.digest).unwrap()).unwrap();
    serde_json::from_value(m["layers"][0].clone()).unwrap()
}

/// Pull `r:all` into a fresh store with the current faults.
async fn pull_fresh(s: &Setup) -> (tempfile::TempDir, Store, Result<registry::Transferred, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let result = registry::pull(&s.client, &store, &remote(&s.server, "r", "all"), "all").await;
    (dir, store, result)
}

#[tokio::test]
async fn five_hundreds_then_success_are_retried() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        fail: vec![("GET /v2/r/blobs/".into(), 2), ("GET /v2/r/manifests/all".into(), 1)],
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    let pulled = result.unwrap();
    assert_eq!(pulled.stats.blobs_transferred, 4);
    assert_eq!(
        s.server.log().iter().filter(|l| l.ends_with("-> 500")).count(),
        3,
        "{:#?}",
        s.server.log()
    );
    assert!(store.get_ref("all").unwrap().is_some());
    assert_eq!(assert_store_verified(dir.path()).len(), 4 + 3);
}

#[tokio::test]
async fn endless_five_hundreds_give_the_status_and_url() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        fail: vec![("GET /v2/r/blobs/".into(), 100)],
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    let err = result.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 500, .. }), "{err}");
    assert!(
        err.to_string().contains("/v2/r/blobs/sha256:") && err.to_string().contains("UNKNOWN"),
        "{err}"
    );
    assert!(store.get_ref("all").unwrap().is_none());
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn dropped_connection_resumes_with_range() {
    let s = setup(options(), Faults::default()).await;
    let big = big_blob(&s);
    s.server.set_faults(Faults {
        drop_blob: 2,
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    result.unwrap();
    let log = s.server.log();
    let resumed: Vec<_> = log
        .iter()
        .filter(|l| l.contains(&format!("blobs/{}", big.digest)) && l.contains("bytes="))
        .collect();
    assert!(
        !resumed.is_empty() && resumed.iter().all(|l| l.ends_with("-> 206")),
        "{log:#?}"
    );
    assert_eq!(
        store.read_blob(&big.digest).unwrap(),
        s.src.read_blob(&big.digest).unwrap()
    );
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn ignored_range_starts_over_and_succeeds() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        drop_blob: 1,
        ignore_range: true,
        ..Default::default()
    });
    let (dir, _store, result) = pull_fresh(&s).await;
    result.unwrap();
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn wrong_digest_is_refused_and_nothing_lands() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        wrong_blob: true,
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    let err = result.unwrap_err();
    let Error::DigestMismatch {
        reference,
        expected,
        found,
    } = &err
    else {
        panic!("{err}")
    };
    assert!(reference.contains(&format!("/r@{expected}")), "{err}");
    assert_ne!(expected, found);
    assert!(!store.has_blob(expected) && !store.has_blob(found));
    assert!(store.get_ref("all").unwrap().is_none());
    let left = assert_store_verified(dir.path());
    assert!(
        left.iter().all(|d| s.src.has_blob(d)),
        "only verified content of ours is there"
    );
}

#[tokio::test]
async fn truncated_body_is_a_clear_error() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        truncate_blob: true,
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    let err = result.unwrap_err();
    let Error::Truncated {
        expected,
        received,
        attempts,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*received, *attempts), (*expected / 2, 4), "{err}");
    assert!(err.to_string().contains("stopped after"), "{err}");
    assert!(store.get_ref("all").unwrap().is_none());
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn oversized_manifests_are_refused_with_or_without_a_length() {
    let s = setup(options(), Faults::default()).await;
    for chunked in [false, true] {
        s.server.set_faults(Faults {
            manifest_padding: 5 << 20,
            manifest_chunked: chunked,
            ..Default::default()
        });
        let (dir, _store, result) = pull_fresh(&s).await;
        let err = result.unwrap_err();
        let Error::ManifestTooLarge { limit, size, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*limit, 4 << 20);
        assert!(*size > *limit, "{err}");
        assert!(err.to_string().contains("above the limit"), "{err}");
        assert_store_verified(dir.path());
    }
}

#[tokio::test]
async fn wrong_manifest_media_types_are_refused() {
    let s = setup(options(), Faults::default()).await;
    for (content_type, found) in [
        ("text/html; charset=utf-8", "text/html"),
        (registry::OCI_MANIFEST, registry::OCI_INDEX),
    ] {
        s.server.set_faults(Faults {
            manifest_content_type: Some(content_type.into()),
            ..Default::default()
        });
        let (dir, _store, result) = pull_fresh(&s).await;
        let err = result.unwrap_err();
        let Error::UnexpectedMediaType { found: f, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(f, found, "{err}");
        assert_store_verified(dir.path());
    }
}

#[tokio::test]
async fn redirect_loops_end() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        redirect_loop: true,
        ..Default::default()
    });
    let (dir, _store, result) = pull_fresh(&s).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects { limit: 10, .. }), "{err}");
    assert!(err.to_string().contains("redirect loop"), "{err}");
    assert!(
        s.server.log().iter().filter(|l| l.contains("hop=")).count() <= 4 * 10,
        "bounded"
    );
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn uploads_restart_after_500s_and_second_push_sends_nothing() {
    // Chunked uploads (threshold below the layer size), with a failing PATCH and PUT.
    let chunked = ClientOptions {
        chunk_threshold: 100_000,
        chunk_size: 64 << 10,
        ..options()
    };
    let faults = Faults {
        fail: vec![("PATCH /upload/".into(), 1), ("PUT /upload/".into(), 1)],
        ..Default::default()
    };
    let s = setup(chunked, faults).await;
    let log = s.server.log();
    assert!(
        log.iter().filter(|l| l.starts_with("PATCH")).count() > 600_000 / (64 << 10),
        "{log:#?}"
    );
    let again = registry::push(
        &s.client,
        &s.src,
        "all",
        &remote(&s.server, "r", "all"),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            again.stats.bytes_transferred,
            again.stats.blobs_skipped,
            again.stats.manifests_skipped
        ),
        (0, 4, 3)
    );
    // What was uploaded pulls back verified.
    let (dir, _store, result) = pull_fresh(&s).await;
    result.unwrap();
    assert_store_verified(dir.path());
    // Mount into a second repository.
    let mount = PushOptions {
        mount_from: vec!["r".into()],
    };
    let m = registry::push(&s.client, &s.src, "sysext", &remote(&s.server, "r2", "x"), &mount)
        .await
        .unwrap();
    assert_eq!(
        (m.stats.blobs_mounted, m.stats.bytes_transferred),
        (2, 0),
        "{:?}",
        m.stats
    );
}

#[tokio::test]
async fn bearer_tokens_from_the_realm_with_basic_credentials() {
    let creds = |pass: &str| Credentials {
        username: "user".into(),
        password: pass.into(),
        source: None,
    };
    let bearer = Faults {
        bearer: Some(("user".into(), "pass".into())),
        ..Default::default()
    };
    let s = setup(
        ClientOptions {
            credentials: Some(creds("pass")),
            ..options()
        },
        bearer,
    )
    .await;
    let log = s.server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("GET /token?service=fake&scope=repository%3Ar%3Apull%2Cpush") && l.ends_with("200")),
        "{log:#?}"
    );
    let (dir, _store, result) = pull_fresh(&s).await;
    result.unwrap();
    assert_store_verified(dir.path());

    for (options, user) in [
        (
            ClientOptions {
                credentials: Some(creds("wrong")),
                ..options()
            },
            Some("user"),
        ),
        (options(), None),
    ] {
        let client = Client::new(&s.server.addr, options).unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let err = registry::pull(&client, &store, &remote(&s.server, "r", "all"), "all")
            .await
            .unwrap_err();
        let Error::Unauthorized { registry, user: u, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (registry.as_str(), u.as_deref()),
            (s.server.addr.as_str(), user),
            "{err}"
        );
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
}

#[tokio::test]
async fn a_cancelled_pull_leaves_nothing_and_the_rerun_completes() {
    let s = setup(options(), Faults::default()).await;
    s.server.set_faults(Faults {
        stall_blob: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = remote(&s.server, "r", "all");
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), registry::pull(&s.client, &store, &r, "all")).await;
    assert!(cancelled.is_err(), "the pull should have stalled");
    // The blob writers of the dropped downloads remove their temporary files.
    let mut waited = 0;
    while std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".tmp"))
    {
        assert!(waited < 100, "temporary files stay behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_store_verified(dir.path());
    s.server.set_faults(Faults::default());
    let done = registry::pull(&s.client, &store, &r, "all").await.unwrap();
    assert_eq!(done.manifest.digest, s.src.get_ref("all").unwrap().unwrap().digest);
    assert_eq!(
        store.read_blob(&s.sysext.digest).unwrap(),
        s.src.read_blob(&s.sysext.digest).unwrap()
    );
    assert_store_verified(dir.path());
}

/// Options with a short read timeout.
fn impatient(read_timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        read_timeout: Duration::from_millis(read_timeout_ms),
        retries: 2,
        ..options()
    }
}

#[tokio::test]
async fn stalls_fail_within_the_read_timeout_naming_url_and_timeout() {
    for (fault, what) in [
        (
            Faults {
                stall: vec![("GET /v2/r/blobs/".into(), 100)],
                ..Default::default()
            },
            "/v2/r/blobs/sha256:",
        ),
        (
            Faults {
                stall: vec![("GET /v2/r/manifests/".into(), 100)],
                ..Default::default()
            },
            "/v2/r/manifests/all",
        ),
        (
            Faults {
                stall_headers: vec![("GET /v2/r/".into(), 100)],
                ..Default::default()
            },
            "/v2/r/manifests/all",
        ),
    ] {
        let s = setup(impatient(300), Faults::default()).await;
        s.server.set_faults(fault.clone());
        let started = std::time::Instant::now();
        let (dir, store, result) = pull_fresh(&s).await;
        let took = started.elapsed();
        let err = result.unwrap_err();
        let Error::Stalled { timeout, attempts, .. } = &err else {
            panic!("{fault:?}: {err}")
        };
        assert_eq!((*timeout, *attempts), (Duration::from_millis(300), 3), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(what) && text.contains(&s.server.addr) && text.contains("sent nothing for 0.3 s"),
            "{text}"
        );
        // Three attempts of 0.3 s and two short backoffs; never the 30 s default.
        assert!(took < Duration::from_secs(3), "{fault:?} took {took:?}");
        assert!(store.get_ref("all").unwrap().is_none());
        assert_store_verified(dir.path());
    }
}

#[tokio::test]
async fn a_stall_then_a_good_answer_is_a_retry_that_succeeds() {
    let s = setup(impatient(300), Faults::default()).await;
    s.server.set_faults(Faults {
        stall: vec![("GET /v2/r/blobs/".into(), 2), ("GET /v2/r/manifests/all".into(), 1)],
        stall_headers: vec![("GET /v2/r/manifests/sha256:".into(), 1)],
        ..Default::default()
    });
    let (dir, store, result) = pull_fresh(&s).await;
    let pulled = result.unwrap();
    assert_eq!(pulled.manifest.digest, s.src.get_ref("all").unwrap().unwrap().digest);
    let log = s.server.log();
    assert!(log.iter().any(|l| l.ends_with("-> stalled")), "{log:#?}");
    assert_eq!(
        store.read_blob(&s.sysext.digest).unwrap(),
        s.src.read_blob(&s.sysext.digest).unwrap()
    );
    assert_store_verified(dir.path());
}

#[tokio::test]
async fn an_upload_whose_answer_never_comes_is_retried_then_named() {
    let s = setup(options(), Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path()).unwrap();
    fixtures::layer_image(&src, "other", &noise(21, 200_000));
    let client = Client::new(&s.server.addr, impatient(300)).unwrap();
    // The first monolithic PUT of a blob hangs after its body: retried, then it works.
    s.server.set_faults(Faults {
        stall_headers: vec![("PUT /upload/".into(), 1)],
        ..Default::default()
    });
    registry::push(
        &client,
        &src,
        "other",
        &remote(&s.server, "up", "1"),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    // Every PUT hangs: the push fails naming the upload and the timeout.
    fixtures::layer_image(&src, "third", &noise(22, 200_000));
    s.server.set_faults(Faults {
        stall_headers: vec![("PUT /upload/".into(), 100)],
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let err = registry::push(
        &client,
        &src,
        "third",
        &remote(&s.server, "up", "2"),
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
    assert!(
        err.to_string().contains("PUT http://") && err.to_string().contains("/upload/"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Serve, as `r:TAG` (and by digest), a manifest of a layer image whose layer descriptor
/// claims `size` bytes for a blob the registry really holds (`actual` bytes of noise).
fn serve_claiming(s: &Setup, tag: &str, actual: usize, size: u64) -> Descriptor {
    serve_claiming_with_config(s, tag, actual, size, 2)
}

/// The same, with a config descriptor claiming `config_size` bytes for `{}`.
fn serve_claiming_with_config(s: &Setup, tag: &str, actual: usize, size: u64, config_size: u64) -> Descriptor {
    let data = noise(31, actual);
    let digest = strata::digest::Digest::of(&data);
    let mut st = s.server.state.lock().unwrap();
    st.blobs.insert(digest.clone(), data.into());
    st.repo_blobs.insert(("r".into(), digest.clone()));
    let config = b"{}".to_vec();
    let config_digest = strata::digest::Digest::of(&config);
    st.blobs.insert(config_digest.clone(), config.into());
    st.repo_blobs.insert(("r".into(), config_digest.clone()));
    let layer = Descriptor::new("application/vnd.oci.image.layer.v1.tar+zstd", digest, size);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": registry::OCI_MANIFEST,
        "config": Descriptor::new("application/vnd.oci.image.config.v1+json", config_digest, config_size),
        "layers": [layer],
    });
    let bytes = bytes::Bytes::from(strata::digest::canonical_json(&manifest));
    let md = strata::digest::Digest::of(&bytes);
    for key in [tag.to_string(), md.to_string()] {
        st.manifests
            .insert(("r".into(), key), (registry::OCI_MANIFEST.into(), bytes.clone()));
    }
    layer
}

#[tokio::test]
async fn blob_sizes_are_bounded_before_and_during_the_download() {
    let s = setup(options(), Faults::default()).await;
    let pull = |client: &Client, tag: &str| {
        let (client, r) = (client.clone(), remote(&s.server, "r", tag));
        async move {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let result = registry::pull(&client, &store, &r, "x").await;
            assert_store_verified(dir.path());
            assert!(store.get_ref("x").unwrap().is_none());
            result.unwrap_err()
        }
    };
    // A descriptor claiming 1 TiB: refused before a byte of it is asked for.
    let layer = serve_claiming(&s, "tera", 1000, 1 << 40);
    let err = pull(&s.client, "tera").await;
    let Error::BlobTooLarge { size, limit, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((*size, *limit), (1 << 40, registry::DEFAULT_MAX_BLOB_SIZE));
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    let asked = |log: Vec<String>| {
        log.iter()
            .any(|l| l.starts_with(&format!("GET /v2/r/blobs/{}", layer.digest)))
    };
    assert!(!asked(s.server.log()), "{:#?}", s.server.log());
    // Under the limit but above the free space of the store's file system.
    let unlimited = Client::new(
        &s.server.addr,
        ClientOptions {
            max_blob_size: u64::MAX,
            ..options()
        },
    )
    .unwrap();
    let layer = serve_claiming(&s, "peta", 1001, 1 << 60);
    let err = pull(&unlimited, "peta").await;
    let Error::NoSpace {
        size, free, reserve, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(
        *size == 1 << 60 && *free < *size && *reserve == registry::FREE_SPACE_RESERVE,
        "{err}"
    );
    assert!(
        err.to_string().contains("bytes free") && err.to_string().contains(&layer.digest.to_string()),
        "{err}"
    );
    assert!(!asked(s.server.log()), "{:#?}", s.server.log());
    // A config (JSON, read whole) is bounded like a manifest.
    serve_claiming_with_config(&s, "fatconfig", 1002, 1002, 1 << 30);
    let err = pull(&s.client, "fatconfig").await;
    let Error::ManifestTooLarge { reference, size, .. } = &err else {
        panic!("{err}")
    };
    assert!(reference.contains(" config sha256:") && *size == 1 << 30, "{err}");
    // A blob longer than its descriptor says: cut off at the first bytes too many.
    let layer = serve_claiming(&s, "short", 600_000, 1000);
    let err = pull(&s.client, "short").await;
    let Error::SizeMismatch { expected, found, .. } = &err else {
        panic!("{err}")
    };
    assert!(*expected == 1000 && *found > 1000 && *found < 600_000, "{err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
}

#[tokio::test]
async fn a_directory_at_a_blob_path_is_replaced_by_a_pull_and_named_by_a_push() {
    let s = setup(options(), Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big = big_blob(&s);
    std::fs::create_dir_all(store.blob_path(&big.digest).join("junk")).unwrap();
    registry::pull(&s.client, &store, &remote(&s.server, "r", "all"), "all")
        .await
        .unwrap();
    assert_eq!(
        store.read_blob(&big.digest).unwrap(),
        s.src.read_blob(&big.digest).unwrap()
    );
    assert_store_verified(dir.path());
    // Pushing from a store where the blob is a directory says so.
    let path = store.blob_path(&big.digest);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = registry::push(
        &s.client,
        &store,
        "all",
        &remote(&s.server, "r3", "x"),
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()) && err.to_string().contains("is a directory, not a blob"),
        "{err}"
    );
}
