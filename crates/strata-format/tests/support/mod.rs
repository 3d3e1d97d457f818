//! Gating for cross-checks against reference tools (`cpio`, `veritysetup`, `sfdisk`, …).
//!
//! Locally a missing tool skips the check with a message on stderr. In CI (`CI` set, as
//! `.ci/run` does) or with `STRATA_REQUIRE_TOOLS=1`, a missing tool fails the test: a
//! cross-check must never pass silently where it is supposed to run.
#![allow(dead_code)]

use std::path::PathBuf;

/// Whether missing reference tools must fail tests instead of skipping them.
pub fn tools_required() -> bool {
    std::env::var_os("STRATA_REQUIRE_TOOLS").is_some_and(|v| v != "0")
        || std::env::var_os("CI").is_some_and(|v| v != "false" && v != "0")
}

/// Find `name` on PATH (and in /usr/sbin, /sbin, where Debian puts some of them).
/// Returns None (after saying so) when the tool is missing and tools are not required;
/// panics when they are.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if tools_required() {
        panic!(
            "reference tool `{name}` is required (CI or STRATA_REQUIRE_TOOLS set) but not installed; run ci/setup.sh"
        );
    }
    eprintln!("SKIP: reference tool `{name}` not installed (set STRATA_REQUIRE_TOOLS=1 to make this fail)");
    None
}
