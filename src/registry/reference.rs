//! Image references: `host[:port]/repo/path[:tag][@sha256:…]`.
//!
//! strata has no default registry: the first component must name a host (it contains a `.`
//! or a `:`, or is `localhost`), so `debian/network:13` is refused instead of silently
//! meaning Docker Hub. Repository components and tags follow the OCI distribution spec.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::digest::Digest;

/// A parsed reference to a manifest in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` as written (IPv6 addresses in brackets).
    pub registry: String,
    /// The repository path, e.g. `initrd/debian-trixie`.
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The manifest digest, if one was given (it wins over the tag when pulling).
    pub digest: Option<Digest>,
}

/// Why a string is not a [`Reference`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a registry reference: {reason}; a reference is host[:port]/repository[:tag][@sha256:…], e.g. 127.0.0.1:5000/initrd/network:13"
)]
pub struct BadReference {
    /// The string as given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// The tag or digest to address the manifest with: the digest if given, else the tag,
    /// else `latest`.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository, addressed by `digest`.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// Whether the registry host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        host_is_loopback(&self.registry)
    }
}

/// Whether `host[:port]` names a loopback address.
pub fn host_is_loopback(registry: &str) -> bool {
    let host = split_host_port(registry).map(|(h, _)| h).unwrap_or(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Split `host[:port]` (with `[v6]` brackets) into host and optional port.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("an IPv6 address lacks its closing `]`")?;
        let addr = &rest[..end];
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or(format!("unexpected `{p}` after the IPv6 address"))?,
            ),
        };
        (&s[..end + 2], port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some("") => return Err("the port after the `:` is missing".into()),
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("`{p}` is not a port number"))?),
    };
    Ok((host, port))
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Reference, BadReference> {
        let bad = |reason: String| BadReference {
            given: s.to_string(),
            reason,
        };
        let s_trim = s.strip_prefix("docker://").unwrap_or(s);
        if let Some((scheme, rest)) = s_trim.split_once("://") {
            return Err(bad(format!(
                "a reference has no URL scheme: drop the `{scheme}://` and write `{rest}` (strata speaks HTTPS, or plain HTTP to a loopback registry or with --insecure)"
            )));
        }
        let (rest, digest) = match s_trim.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|e| bad(e.to_string()))?)),
            None => (s_trim, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no repository after the registry host".into()))?;
        let host = split_host_port(registry).map_err(bad)?.0;
        let explicit_host = registry.contains(['.', ':']) || registry == "localhost";
        if !explicit_host {
            return Err(bad(format!(
                "`{registry}` does not look like a registry host (strata has no default registry; write e.g. registry.example/{rest})"
            )));
        }
        if !host.starts_with('[') && !valid_hostname(host) {
            return Err(bad(format!("`{host}` is not a valid host name")));
        }
        // A tag is after the last `:` of the last path component.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        if repository.len() > 255 {
            return Err(bad("the repository name is longer than 255 characters".into()));
        }
        if repository.split('/').any(str::is_empty) {
            return Err(bad(
                "the repository has an empty path component (a `//`, or a `/` at its start or end)".into(),
            ));
        }
        if let Some(c) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(bad(format!(
                "repository component `{c}` is invalid (lower-case letters, digits and single `.`, `_`, `__` or `-` runs between them)"
            )));
        }
        if let Some(t) = tag.filter(|t| !valid_tag(t)) {
            return Err(bad(format!(
                "tag `{t}` is invalid (letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`)"
            )));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_hosts_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/initrd/network:13");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "initrd/network", Some("13"))
        );
        assert!(r.digest.is_none() && r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/initrd/network:13");

        let d = Digest::of(b"x");
        let r = parse(&format!("registry.example/a/b-c/d__e@{d}"));
        assert_eq!(r.repository, "a/b-c/d__e");
        assert_eq!(r.manifest_ref(), d.to_string());
        assert!(!r.is_loopback());

        let r = parse(&format!("[::1]:5000/x:t@{d}"));
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("[::1]:5000", Some("t")));
        assert!(r.is_loopback());
        assert!(parse("localhost/x").is_loopback());
        assert!(parse("127.3.2.1/x").is_loopback());
        assert!(!parse("128.0.0.1/x").is_loopback());
        assert_eq!(parse("localhost:1/x").manifest_ref(), "latest");
    }

    #[test]
    fn refuses_bad_references_saying_why() {
        for (s, why) in [
            ("debian/network:13", "does not look like a registry host"),
            ("registry.example", "no repository"),
            ("registry.example/Upper", "component `Upper`"),
            ("registry.example/a//b", "empty path component"),
            ("registry.example/a/", "empty path component"),
            ("registry.example:/a", "the port after the `:` is missing"),
            ("registry.example/a:t:u", "component `a:t`"),
            ("registry.example/a:-t", "tag `-t`"),
            ("registry.example:99999/a", "not a port"),
            (
                "http://127.0.0.1:5000/x:1",
                "drop the `http://` and write `127.0.0.1:5000/x:1`",
            ),
            ("https://registry.example/a", "drop the `https://`"),
            ("registry.example/a@sha256:abc", "not a sha256 digest"),
            ("[::1/a", "closing"),
            ("bad_host.example/a", "not a valid host name"),
        ] {
            let err = s.parse::<Reference>().unwrap_err().to_string();
            assert!(err.contains(why), "{s}: {err}");
            assert!(err.contains(s), "{s}: {err}");
            assert!(!err.contains("``"), "an empty value named: {s}: {err}");
            assert!(err.matches("(expected").count() <= 1, "said twice: {err}");
        }
    }
}
