//! What the storage-root boots share: one signed build of the default set (kernel, initrd
//! and extensions); [`super::extra::initrd_with`] delivers its extensions to the initrd.

use std::path::Path;
use std::sync::OnceLock;

use super::{SignedBuild, default_set, signed_build};

/// `strata keygen`, then the default set with its extensions, signed. The layer store is
/// kept under the test target's temporary directory and shared by the test files that boot
/// storage roots (cargo runs them one after another), so only the first one builds.
pub fn signed() -> &'static SignedBuild {
    static SIGNED: OnceLock<SignedBuild> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("strata-e2e-signed-store");
        signed_build("strata-e2e-storage-", &default_set(), Some(&cache))
    })
}
