//! The OCI Distribution client: push and pull manifests and blobs between the local
//! [`crate::store::Store`] and a registry.
//!
//! - [`reference`](mod@reference): `host[:port]/repo[:tag][@digest]`, loopback → plain HTTP.
//! - [`auth`]: anonymous, basic and bearer-token auth; credentials from the containers
//!   `auth.json` files and `~/.docker/config.json`.
//! - [`client`]: one registry's HTTP API (ping, blobs, manifests, tags) with retries.
//! - [`transfer`]: [`push()`]/[`pull()`] of a manifest tree (index → manifests → blobs).
//!
//! Every pulled blob is streamed into a [`BlobWriter`](crate::store::BlobWriter) and
//! committed against the digest and size its descriptor names: nothing unverified lands
//! in the store.

pub mod artifact;
pub mod auth;
mod blob;
pub mod cache;
pub mod client;
pub mod pull;
pub mod push;
pub mod reference;
pub mod transfer;

use std::path::PathBuf;

pub use blob::{BlobPushed, FREE_SPACE_RESERVE};
pub use client::{Client, ClientOptions, DEFAULT_MAX_BLOB_SIZE, DEFAULT_READ_TIMEOUT, FetchedManifest};
pub use reference::{BadReference, Reference};
pub use transfer::{PushOptions, Stats, Transferred, pull, push};

use crate::digest::Digest;
use crate::store::{self, Store};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2 (read only).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (read only).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The empty config of OCI artifacts: the 2-byte blob `{}`.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Registry errors. Each names the registry, URL or reference it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reference string that does not parse.
    #[error(transparent)]
    BadReference(#[from] BadReference),
    /// The connection failed or broke (after the allowed retries).
    #[error("{method} {url}")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}{}", excerpt(body_excerpt))]
    Http {
        method: String,
        url: String,
        status: u16,
        body_excerpt: String,
    },
    /// The registry refused our credentials (or wants some and we have none).
    #[error("{registry}: {}", unauthorized(*status, user.as_deref(), auth_file.as_ref(), searched))]
    Unauthorized {
        registry: String,
        status: u16,
        /// The user name we tried, if any.
        user: Option<String>,
        /// The file the credentials came from.
        auth_file: Option<PathBuf>,
        /// The files looked at when no credentials were found.
        searched: Vec<PathBuf>,
    },
    /// An auth file that cannot be read or parsed.
    #[error("credentials file {path}: {problem}")]
    AuthFile { path: PathBuf, problem: String },
    /// A `WWW-Authenticate` header we cannot follow.
    #[error("{registry}: cannot follow the authentication challenge `{header}`: {problem}")]
    BadChallenge {
        registry: String,
        header: String,
        problem: &'static str,
    },
    /// Content whose digest is not the one asked for.
    #[error("{reference}: expected digest {expected}, the registry sent content hashing to {found} (not stored)")]
    DigestMismatch {
        reference: String,
        expected: Digest,
        found: Digest,
    },
    /// Content whose size is not the one its descriptor names.
    #[error("{reference}: expected {expected} bytes, the registry sent {found}{}", if *found > *expected { " or more" } else { "" })]
    SizeMismatch {
        reference: String,
        expected: u64,
        found: u64,
    },
    /// A blob download that kept breaking off.
    #[error(
        "{reference}: the download stopped after {received} of {expected} bytes, {attempts} times (partial data discarded)"
    )]
    Truncated {
        reference: String,
        expected: u64,
        received: u64,
        attempts: u32,
    },
    /// The registry sent nothing for longer than the read timeout, on every attempt.
    #[error(
        "{method} {url}: the registry sent nothing for {} s (the read timeout) on each of {attempts} attempts; \
         for a slow registry, raise --registry-timeout (STRATA_REGISTRY_TIMEOUT)",
        timeout.as_secs_f64()
    )]
    Stalled {
        method: String,
        url: String,
        timeout: std::time::Duration,
        attempts: u32,
    },
    /// A blob whose descriptor claims more bytes than strata accepts.
    #[error("{reference}: the blob claims {size} bytes, above the limit of {limit} bytes; not downloaded")]
    BlobTooLarge { reference: String, size: u64, limit: u64 },
    /// A blob that would not fit in the store's file system.
    #[error(
        "{reference}: the blob claims {size} bytes, but {} has only {free} bytes free \
         (keeping {reserve} in reserve); free some space or use another --cache-dir",
        store.display()
    )]
    NoSpace {
        reference: String,
        size: u64,
        free: u64,
        reserve: u64,
        store: PathBuf,
    },
    /// A manifest, index, tag list or image config bigger than the limit.
    #[error("{reference}: {size} bytes or more, above the limit of {limit} bytes for a manifest, index or config")]
    ManifestTooLarge { reference: String, size: u64, limit: u64 },
    /// A manifest (or blob) with a media type we do not accept here.
    #[error("{reference}: media type `{found}` is not one of {}", expected.join(", "))]
    UnexpectedMediaType {
        reference: String,
        found: String,
        expected: Vec<String>,
    },
    /// A manifest whose JSON does not parse.
    #[error("{reference}: not a valid manifest")]
    BadManifest {
        reference: String,
        #[source]
        source: serde_json::Error,
    },
    /// The registry has no such manifest.
    #[error("{reference}: manifest not found in the registry")]
    ManifestNotFound { reference: String },
    /// Redirects that never end.
    #[error("{method} {url}: too many redirects (more than {limit}; a redirect loop?)")]
    TooManyRedirects { method: String, url: String, limit: usize },
    /// An answer missing a header the protocol requires, or with one that does not parse.
    #[error("{method} {url}: bad or missing `{header}` header in the answer")]
    BadHeader {
        method: String,
        url: String,
        header: &'static str,
    },
    /// A client asked to work on a reference of another registry.
    #[error("the client talks to {client}, not to the registry of {reference}")]
    RegistryMismatch { client: String, reference: String },
    /// No manifest of that name in the local store.
    #[error("no manifest named `{name}` in the store at {}", store.display())]
    LocalRefMissing { store: PathBuf, name: String },
    /// Setting up the HTTP client failed (TLS roots, …).
    #[error("cannot set up the HTTP client")]
    ClientSetup(#[source] reqwest::Error),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

fn excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

fn unauthorized(status: u16, user: Option<&str>, file: Option<&PathBuf>, searched: &[PathBuf]) -> String {
    let what = if status == 403 {
        "access denied (HTTP 403)"
    } else {
        "authentication failed (HTTP 401)"
    };
    match (user, file) {
        (Some(u), Some(f)) => format!("{what} for user `{u}` with the credentials from {}", f.display()),
        (Some(u), None) => format!("{what} for user `{u}`"),
        (None, _) if searched.is_empty() => format!("{what}; no credentials were given"),
        (None, _) => {
            let files: Vec<_> = searched.iter().map(|p| p.display().to_string()).collect();
            format!("{what}; no credentials for this registry in {}", files.join(", "))
        }
    }
}

impl Error {
    /// Whether trying again may help (5xx, 429, a broken connection).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status >= 500 || *status == 429,
            Error::Transport { source, .. } => !source.is_builder() && !source.is_redirect(),
            Error::Truncated { .. } | Error::Stalled { .. } => true,
            _ => false,
        }
    }
}

/// Push the manifest named `local_ref_name` in `store` (and everything it references) to
/// `remote` (e.g. `registry.example/initrd/network:13`), with a client made for it.
pub async fn push_ref(
    store: &Store,
    local_ref_name: &str,
    remote: &str,
    client_options: &ClientOptions,
    push_options: &PushOptions,
) -> Result<Transferred, Error> {
    let remote: Reference = remote.parse()?;
    let client = Client::new(&remote.registry, client_options.clone())?;
    push(&client, store, local_ref_name, &remote, push_options).await
}

/// Pull `remote` (and everything it references) into `store`, naming it
/// `local_ref_name`, with a client made for it.
pub async fn pull_ref(
    store: &Store,
    remote: &str,
    local_ref_name: &str,
    client_options: &ClientOptions,
) -> Result<Transferred, Error> {
    let remote: Reference = remote.parse()?;
    let client = Client::new(&remote.registry, client_options.clone())?;
    pull(&client, store, &remote, local_ref_name).await
}
