//! Reference tools (`cpio`, `veritysetup`, `sfdisk`, …) for the cross-checks that need them.
//!
//! Those tests are `#[ignore]`d, so a plain `cargo test` does not run them; they run with
//! `cargo test -- --include-ignored`, as `ci/test.sh` does. When one runs, a missing tool
//! fails it with a message naming the tool and `ci/setup.sh`: a cross-check never passes
//! without having checked anything.
#![allow(dead_code)]

use std::path::PathBuf;

/// Find `name` on PATH (and in /usr/sbin, /sbin, where Debian puts some of them, off a
/// normal user's PATH). Panics, naming the tool and `ci/setup.sh`, when it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("this test needs `{name}`, which is not installed (not on PATH, /usr/sbin or /sbin); run ci/setup.sh");
}
