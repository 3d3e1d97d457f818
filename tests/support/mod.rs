//! Tools (`skopeo`, `docker-registry`, podman, …) and services (the loopback registry that
//! `ci/registry.sh start` runs) for the tests that need them.
//!
//! Such tests are `#[ignore]`d, so a plain `cargo test` does not run them; they run with
//! `cargo test -- --include-ignored`, as `ci/test.sh` does. When one runs, a missing tool or
//! service fails it with a message naming what is missing and `ci/setup.sh`: a cross-check
//! never passes without having checked anything.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod dissect;

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

/// The address (`127.0.0.1:5000`) of the loopback registry started by `ci/registry.sh start`
/// (ci/setup.sh starts it). Panics unless `GET /v2/` answers 200 there.
pub fn registry() -> String {
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
    let problem = match answer {
        Ok(a) if a.starts_with("HTTP/1.1 200") => return addr.to_string(),
        Ok(a) => format!("it answered {}", a.lines().next().unwrap_or("")),
        Err(e) => e.to_string(),
    };
    panic!(
        "this test needs the docker-registry on http://{addr}/v2/ ({problem}); run ci/setup.sh (or ci/registry.sh start)"
    );
}

/// The `podman` binary. Panics unless it is installed and can talk to its storage
/// (`podman info` succeeds).
pub fn podman() -> PathBuf {
    let podman = tool("podman");
    let info = std::process::Command::new(&podman)
        .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .output();
    let problem = match info {
        Ok(out) if out.status.success() => return podman,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    panic!("this test needs `podman`, but `podman info` fails: {problem}; run ci/setup.sh");
}
