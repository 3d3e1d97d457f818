//! What the storage-root boots share: one signed build of the default set (kernel, initrd
//! and extensions), and the initrd with extensions delivered as systemd-stub delivers them,
//! in `/.extra/sysext/` of an appended cpio member.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{assert_ok, build_with, default_set, product_file, strata};

/// A signed build of the default set.
pub struct Signed {
    pub out: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// `strata keygen`, then the default set with its extensions, signed. The layer store is
/// kept under the test target's temporary directory and shared by the test files that boot
/// storage roots (cargo runs them one after another), so only the first one builds.
pub fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-storage-")
            .tempdir()
            .unwrap()
            .keep();
        let keys = dir.join("keys");
        assert_ok(
            &strata(&["keygen", "-o", keys.to_str().unwrap()], &[], &[]),
            "strata keygen",
        );
        let (key, cert) = (keys.join("sysext.key"), keys.join("sysext.crt"));
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("strata-e2e-signed-store");
        let out = dir.join("out");
        let o = build_with(
            &default_set(),
            &cache,
            &out,
            &[],
            &["--key", key.to_str().unwrap(), "--cert", cert.to_str().unwrap()],
        );
        assert_ok(&o, "building the default set with its extensions, signed");
        Signed { out, key, cert }
    })
}

/// The build's initrd followed by a member holding `extensions` (product names such as
/// `storage`) at `/.extra/sysext/NAME.sysext.raw`, with systemd-stub's modes (directories
/// 0555, images 0444), written under `dir`.
pub fn initrd_with(out: &Path, extensions: &[&str], dir: &Path) -> PathBuf {
    let tree = dir.join("extra");
    let sysext = tree.join(".extra/sysext");
    std::fs::create_dir_all(&sysext).unwrap();
    for name in extensions {
        let copy = sysext.join(format!("{name}.sysext.raw"));
        std::fs::copy(out.join(format!("{name}.sysext.raw")), &copy)
            .unwrap_or_else(|e| panic!("copying the {name} extension from {}: {e}", out.display()));
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    for d in [&sysext, &tree.join(".extra")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let member = dir.join("extra.cpio");
    let o = strata(
        &[
            "cpio",
            tree.to_str().unwrap(),
            "-o",
            member.to_str().unwrap(),
            "--compression",
            "none",
        ],
        &[],
        &[],
    );
    assert_ok(&o, "strata cpio of the extensions' member");
    let mut initrd = std::fs::read(product_file(out, "initrd")).unwrap();
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend(std::fs::read(&member).unwrap());
    let combined = dir.join("initrd-with-extensions.img");
    std::fs::write(&combined, initrd).unwrap();
    // The tree is read-only now, as systemd-stub makes it; let the temporary dir go.
    for d in [&sysext, &tree.join(".extra")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    combined
}
