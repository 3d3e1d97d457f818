//! trixie's `systemd-dissect` (systemd 257) in a podman container, for tests that judge our
//! extension images: the host's systemd 252 predates the checks that matter.
//!
//! The container image is `docker.io/library/debian:trixie` (made locally by ci/setup.sh;
//! nothing is pulled) plus `systemd-container`, built once and tagged with a digest of its
//! Containerfile text. The image under test is mounted read-only; the container has no
//! network.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

const BASE_IMAGE: &str = "docker.io/library/debian:trixie";

const CONTAINERFILE: &str = "\
FROM docker.io/library/debian:trixie
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd-container \\
 && rm -rf /var/lib/apt/lists/*
";

/// systemd's policy for extensions in the initrd's `/.extra/sysext/` (`image_policy_sysext_strict`).
pub const STRICT: &str = "--image-policy=root=signed+absent:usr=signed+absent";

pub fn podman_out(podman: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(podman).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ podman {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// The tag of the systemd-dissect image, built on first use. Panics when podman or the base
/// image is missing.
pub fn dissect_image() -> (PathBuf, String) {
    static TAG: OnceLock<(PathBuf, String)> = OnceLock::new();
    TAG.get_or_init(|| {
        let podman = super::podman();
        let digest = Sha256::digest(CONTAINERFILE);
        let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let tag = format!("localhost/strata-test-dissect:{tag}");
        if podman_out(&podman, &["image", "exists", &tag]).0 {
            return (podman, tag);
        }
        assert!(
            podman_out(&podman, &["image", "exists", BASE_IMAGE]).0,
            "this test needs the base image {BASE_IMAGE}, which is missing; run ci/setup.sh (mmdebstrap + podman import)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Containerfile"), CONTAINERFILE).unwrap();
        let context = dir.path().to_str().unwrap();
        let (ok, out) = podman_out(
            &podman,
            &["build", "--pull=never", "--network=host", "-t", &tag, context],
        );
        assert!(ok, "building the systemd-dissect image failed:\n{out}");
        (podman, tag)
    })
    .clone()
}

/// `systemd-dissect ARGS --validate /x.raw` on `image`: success and the output.
pub fn validate(image: &Path, args: &[&str]) -> (bool, String) {
    let (podman, tag) = dissect_image();
    let volume = format!("{}:/x.raw:ro", image.display());
    let run = [
        "run",
        "--rm",
        "--pull=never",
        "--network=none",
        "-v",
        &volume,
        &tag,
        "systemd-dissect",
        "--no-pager",
    ];
    let tail = ["--validate", "/x.raw"];
    podman_out(&podman, &[&run[..], args, &tail[..]].concat())
}
