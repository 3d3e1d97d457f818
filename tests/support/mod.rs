//! Gating for tests that need reference tools (`skopeo`, `docker-registry`, …) or services
//! (the loopback registry that `ci/registry.sh start` runs).
//!
//! Locally a missing tool or service skips the check with a message on stderr. In CI (`CI`
//! set) or with `STRATA_REQUIRE_TOOLS=1`, it fails the test: a cross-check must never pass
//! silently where it is supposed to run.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod dissect;

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

/// The address (`127.0.0.1:5000`) of the loopback registry started by
/// `ci/registry.sh start`, if `GET /v2/` answers 200 there. Same gating as [`tool`].
pub fn registry() -> Option<String> {
    use std::io::{Read, Write};
    let addr = "127.0.0.1:5000";
    let answer = (|| -> std::io::Result<String> {
        let timeout = std::time::Duration::from_secs(3);
        let mut s = std::net::TcpStream::connect_timeout(&addr.parse().expect("a socket address"), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    match answer {
        Ok(a) if a.starts_with("HTTP/1.1 200") => return Some(addr.to_string()),
        Ok(a) => eprintln!("registry on {addr} answered: {}", a.lines().next().unwrap_or("")),
        Err(e) => eprintln!("no registry on {addr}: {e}"),
    }
    if tools_required() {
        panic!(
            "the registry on http://{addr}/v2/ is required (CI or STRATA_REQUIRE_TOOLS set); run ci/registry.sh start"
        );
    }
    eprintln!(
        "SKIP: no registry on http://{addr}/v2/ (run ci/registry.sh start; set STRATA_REQUIRE_TOOLS=1 to make this fail)"
    );
    None
}

/// The `podman` binary, if it is installed and can talk to its storage (`podman info`
/// succeeds). Same gating as [`tool`]: skips locally, panics in CI.
pub fn podman() -> Option<PathBuf> {
    let podman = tool("podman")?;
    let info = std::process::Command::new(&podman)
        .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .output();
    let problem = match info {
        Ok(out) if out.status.success() => return Some(podman),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    if tools_required() {
        panic!("podman is required (CI or STRATA_REQUIRE_TOOLS set) but `podman info` fails: {problem}");
    }
    eprintln!("SKIP: `podman info` fails: {problem} (set STRATA_REQUIRE_TOOLS=1 to make this fail)");
    None
}
