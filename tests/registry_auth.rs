//! Basic auth against a real `docker-registry` with htpasswd, started by this test on a
//! free loopback port, credentials read from the file `REGISTRY_AUTH_FILE` names.
//!
//! This is its own test binary with a single test because it sets `REGISTRY_AUTH_FILE`
//! in the process environment, which must not race with other tests reading it.

#[path = "support/oci_fixtures.rs"]
mod fixtures;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fixtures::{assert_store_verified, layer_image, noise};
use strata::registry::{self, Client, ClientOptions, Error, PushOptions, Reference};
use strata::store::Store;

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        // The test is over either way; a registry that already exited is fine.
        if let Err(e) = self.0.kill() {
            eprintln!("stopping docker-registry: {e}");
        }
        if let Err(e) = self.0.wait() {
            eprintln!("waiting for docker-registry: {e}");
        }
    }
}

/// Start `docker-registry` with htpasswd auth (`user`/`pass`) in `dir`; its address.
fn start_registry(docker_registry: &Path, htpasswd: &Path, dir: &Path) -> (Registry, String) {
    let out = Command::new(htpasswd).args(["-Bbn", "user", "pass"]).output().unwrap();
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: strata-test\n    path: {pw}\n",
        root = dir.join("data").display(),
        pw = dir.join("htpasswd").display(),
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new(docker_registry)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let registry = Registry(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "docker-registry did not start on {addr}: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (registry, addr)
}

fn write_auth_file(path: &Path, registry: &str, user: &str, pass: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let json = serde_json::json!({"auths": {registry: {"auth": auth}}});
    std::fs::write(path, json.to_string()).unwrap();
}

#[allow(unsafe_code)] // set_var is unsafe since edition 2024; see the SAFETY note
fn set_auth_file(path: &Path) {
    // SAFETY: the only test of this binary, and no runtime is running (see `block_on`):
    // no other thread reads the environment now.
    unsafe { std::env::set_var("REGISTRY_AUTH_FILE", path) };
}

/// Run `f` on a runtime that is shut down (its threads gone) before this returns.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let out = runtime.block_on(f);
    runtime.shutdown_timeout(Duration::from_secs(5));
    out
}

#[test]
#[ignore = "registry: needs docker-registry, htpasswd (run with --include-ignored; ci/test.sh does)"]
fn basic_auth_through_registry_auth_file() {
    let docker_registry = support::tool("docker-registry");
    let htpasswd = support::tool("htpasswd");
    let dir = tempfile::tempdir().unwrap();
    let (_registry, addr) = start_registry(&docker_registry, &htpasswd, dir.path());
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path()).unwrap();
    layer_image(&src, "layer", &noise(9, 100_000));
    let remote: Reference = format!("{addr}/private/layer:1").parse().unwrap();

    // The right password.
    let good = dir.path().join("good-auth.json");
    write_auth_file(&good, &addr, "user", "pass");
    set_auth_file(&good);
    block_on(async {
        let client = Client::new(&addr, ClientOptions::default()).unwrap();
        client.ping().await.unwrap();
        let pushed = registry::push(&client, &src, "layer", &remote, &PushOptions::default())
            .await
            .unwrap();
        assert_eq!(pushed.stats.blobs_transferred, 2);
        let out_dir = tempfile::tempdir().unwrap();
        let out = Store::open(out_dir.path()).unwrap();
        let pulled = registry::pull(&client, &out, &remote, "layer").await.unwrap();
        assert_eq!(pulled.manifest.digest, src.get_ref("layer").unwrap().unwrap().digest);
        assert_store_verified(out_dir.path());
    });

    // The wrong password: a clear error naming the registry, the user and the file.
    let bad = dir.path().join("bad-auth.json");
    write_auth_file(&bad, &addr, "user", "wrong");
    set_auth_file(&bad);
    let err = block_on(async {
        let client = Client::new(&addr, ClientOptions::default()).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let out = Store::open(out_dir.path()).unwrap();
        registry::pull(&client, &out, &remote, "layer").await.unwrap_err()
    });
    assert!(matches!(err, Error::Unauthorized { status: 401, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr) && msg.contains("`user`") && msg.contains("bad-auth.json"),
        "{msg}"
    );

    // No entry for this registry: the error lists the file looked at.
    let other = dir.path().join("other-auth.json");
    write_auth_file(&other, "registry.example", "user", "pass");
    set_auth_file(&other);
    let err = block_on(async {
        Client::new(&addr, ClientOptions::default())
            .unwrap()
            .ping()
            .await
            .unwrap_err()
    });
    assert!(
        err.to_string().contains("no credentials for this registry in") && err.to_string().contains("other-auth.json"),
        "{err}"
    );

    // A REGISTRY_AUTH_FILE that does not exist is an error, not silently anonymous.
    let missing = dir.path().join("missing.json");
    set_auth_file(&missing);
    let err = Client::new(&addr, ClientOptions::default())
        .err()
        .expect("a missing REGISTRY_AUTH_FILE is an error");
    assert!(
        matches!(err, Error::AuthFile { .. }) && err.to_string().contains("missing.json"),
        "{err}"
    );
}
