//! One registry's HTTP API: ping, manifests, tags (blobs are in `blob.rs`), with
//! authentication, bounded redirects, read timeouts and retries with exponential backoff.
//!
//! Every wait on the registry is bounded by [`ClientOptions::read_timeout`]: the answer's
//! headers, and each read of its body (reqwest's per-read timeout, which restarts with every
//! bytes received). Uploads go through a second connection pool without that timeout, since
//! reqwest would count the whole upload against it; there a watchdog fails the request when
//! the body stops moving, or the answer does not come, for as long.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use url::Url;

use super::auth::{self, Authenticator, Credentials, Scope};
use super::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Error, OCI_INDEX, OCI_MANIFEST, reference};
use crate::digest::Digest;

/// The default [`ClientOptions::read_timeout`] (`--registry-timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`ClientOptions::max_blob_size`]: 16 GiB, above any layer or product strata
/// makes, far below what a hostile descriptor may claim.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 16 << 30;

/// How a [`Client`] talks to its registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Use plain HTTP even for a registry that is not on a loopback address.
    pub insecure: bool,
    /// How many blobs move at the same time.
    pub parallel: usize,
    /// Blobs larger than this are uploaded in chunks (PATCH with `Content-Range`).
    pub chunk_threshold: u64,
    /// The size of those chunks.
    pub chunk_size: u64,
    /// Manifests larger than this are refused.
    pub max_manifest_size: u64,
    /// How many times a request (or a blob transfer) is retried after a 5xx answer or a
    /// broken connection.
    pub retries: u32,
    /// The first retry waits this long; each further one twice as long (at most 10 s).
    pub backoff: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// How long the registry may send nothing (no headers, no body bytes, or, while
    /// uploading, take none) before the attempt counts as broken and is retried.
    pub read_timeout: Duration,
    /// Blobs whose descriptor claims more bytes than this are refused before the download.
    pub max_blob_size: u64,
    /// Credentials to use instead of looking them up in the auth files.
    pub credentials: Option<Credentials>,
    /// Auth files to search instead of [`auth::auth_file_candidates`].
    pub auth_files: Option<Vec<PathBuf>>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure: false,
            parallel: 4,
            chunk_threshold: 64 << 20,
            chunk_size: 16 << 20,
            max_manifest_size: 4 << 20,
            retries: 4,
            backoff: Duration::from_millis(250),
            max_redirects: 10,
            connect_timeout: Duration::from_secs(30),
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            credentials: None,
            auth_files: None,
        }
    }
}

/// A client for one registry (`host[:port]`). Cheap to clone; clones share the
/// connection pool and the bearer tokens.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// With the read timeout.
    pub(crate) http: reqwest::Client,
    /// Without it, for requests that send a file (see the module documentation).
    upload_http: reqwest::Client,
    pub(crate) registry: String,
    pub(crate) base: Url,
    pub(crate) options: ClientOptions,
    pub(crate) auth: Authenticator,
}

/// A manifest as the registry sent it, verified against the digest it was asked by.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its media type (the `Content-Type` of the answer).
    pub media_type: String,
    /// The digest of `data`.
    pub digest: Digest,
    /// The bytes, exactly as received.
    pub data: Bytes,
}

/// A manifest's own `mediaType`, when present, must be `media_type` (what the registry's
/// `Content-Type` or the index's descriptor says it is).
pub(crate) fn check_own_media_type(value: &serde_json::Value, media_type: &str, reference: &str) -> Result<(), Error> {
    match value.get("mediaType") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(t)) if t == media_type => Ok(()),
        Some(other) => Err(Error::UnexpectedMediaType {
            reference: reference.to_string(),
            found: other.as_str().map_or_else(|| other.to_string(), str::to_string),
            expected: vec![media_type.to_string()],
        }),
    }
}

/// What a request sends.
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed (re-opened on each attempt).
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

/// Why one attempt at fetching a manifest failed: its body broke off or stalled (worth
/// another attempt), or anything else (`send` has retried what can be retried).
enum Broke {
    Body(Error),
    Other(Error),
}

impl From<Error> for Broke {
    fn from(e: Error) -> Broke {
        Broke::Other(e)
    }
}

/// Why [`Client::read_limited`] stopped.
pub(crate) enum Limited {
    /// More bytes than the limit (this many, or `Content-Length` said so).
    TooLarge(u64),
    /// The body broke off or stalled.
    Broke(Error),
}

/// The manifest media types this client accepts when reading.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

impl Client {
    /// A client for `registry` (`host[:port]`): plain HTTP for loopback addresses or with
    /// `options.insecure`, HTTPS with the system's roots otherwise.
    pub fn new(registry: &str, options: ClientOptions) -> Result<Client, Error> {
        let scheme = if options.insecure || reference::host_is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|_| super::BadReference {
            given: registry.to_string(),
            reason: "not a valid registry host".into(),
        })?;
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::limited(options.max_redirects))
                .connect_timeout(options.connect_timeout)
        };
        let http = builder()
            .read_timeout(options.read_timeout)
            .build()
            .map_err(Error::ClientSetup)?;
        let upload_http = builder().build().map_err(Error::ClientSetup)?;
        let (credentials, searched) = match &options.credentials {
            Some(c) => (Some(c.clone()), vec![]),
            None => {
                let files = options.auth_files.clone().unwrap_or_else(auth::auth_file_candidates);
                (auth::find_credentials(&files, registry, "")?, files)
            }
        };
        let auth = Authenticator::new(registry, credentials, searched);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                upload_http,
                registry: registry.to_string(),
                base,
                options,
                auth,
            }),
        })
    }

    /// The registry this client talks to.
    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    /// The options it was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        self.inner.base.join(path).expect("registry paths are valid URL paths")
    }

    /// `GET /v2/`: the registry answers and accepts our credentials.
    pub async fn ping(&self) -> Result<(), Error> {
        let url = self.url("/v2/");
        let resp = self
            .send(Method::GET, url, HeaderMap::new(), Body::Empty, &vec![], true)
            .await?;
        expect(resp, &Method::GET, &[StatusCode::OK]).await.map(drop)
    }

    /// Fetch a manifest (or index) by tag or digest. Refuses media types other than the OCI
    /// and Docker v2 manifests and lists, manifests above the size limit, and content not
    /// matching the digest asked for (or the `Docker-Content-Digest` the registry names).
    /// A body that breaks off or stalls is fetched again (bounded).
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<FetchedManifest, Error> {
        let mut attempt = 0;
        loop {
            match self.get_manifest_once(repository, reference).await {
                Ok(m) => return Ok(m),
                Err(Broke::Body(e)) if attempt < self.inner.options.retries => {
                    attempt += 1;
                    tracing::warn!(registry = %self.inner.registry, repository, reference, attempt, "{e}; fetching the manifest again");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(Broke::Body(mut e)) => {
                    if let Error::Stalled { attempts, .. } = &mut e {
                        *attempts = attempt + 1;
                    }
                    return Err(e);
                }
                Err(Broke::Other(e)) => return Err(e),
            }
        }
    }

    async fn get_manifest_once(&self, repository: &str, reference: &str) -> Result<FetchedManifest, Broke> {
        let name = format!("{}/{repository}:{reference}", self.inner.registry).replace(":sha256:", "@sha256:");
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&MANIFEST_TYPES.join(", ")).expect("static header"),
        );
        let scope = vec![auth::repo_scope(repository, false)];
        let resp = self
            .send(Method::GET, url.clone(), headers, Body::Empty, &scope, true)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestNotFound { reference: name }.into());
        }
        let mut resp = expect(resp, &Method::GET, &[StatusCode::OK]).await?;
        let media_type = content_type(resp.headers());
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(Error::UnexpectedMediaType {
                reference: name,
                found: media_type,
                expected: MANIFEST_TYPES.iter().map(|s| s.to_string()).collect(),
            }
            .into());
        }
        let limit = self.inner.options.max_manifest_size;
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()?.parse::<Digest>().ok());
        let data = self
            .read_limited(&mut resp, &Method::GET, &url, limit)
            .await
            .map_err(|e| match e {
                Limited::TooLarge(size) => Broke::Other(Error::ManifestTooLarge {
                    reference: name.clone(),
                    size,
                    limit,
                }),
                Limited::Broke(e) => Broke::Body(e),
            })?;
        let digest = Digest::of(&data);
        let asked = reference.parse::<Digest>().ok();
        for expected in [asked, header_digest].into_iter().flatten() {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    reference: name,
                    expected,
                    found: digest,
                }
                .into());
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&data).map_err(|source| Error::BadManifest {
            reference: name.clone(),
            source,
        })?;
        check_own_media_type(&value, &media_type, &name)?;
        Ok(FetchedManifest {
            media_type,
            digest,
            data,
        })
    }

    /// The body of `resp`, at most `limit` bytes (refused as soon as more arrive, whatever
    /// `Content-Length` said). A read that breaks or stalls is [`Limited::Broke`].
    pub(crate) async fn read_limited(
        &self,
        resp: &mut Response,
        method: &Method,
        url: &Url,
        limit: u64,
    ) -> Result<Bytes, Limited> {
        if let Some(size) = resp.content_length().filter(|n| *n > limit) {
            return Err(Limited::TooLarge(size));
        }
        let mut data = BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > limit {
                        return Err(Limited::TooLarge(data.len() as u64));
                    }
                }
                Ok(None) => return Ok(data.freeze()),
                Err(e) => return Err(Limited::Broke(self.transport_error(method, url, e, 1))),
            }
        }
    }

    /// The error for a failed request or read: [`Error::Stalled`] for a timeout, else
    /// [`Error::Transport`].
    pub(crate) fn transport_error(&self, method: &Method, url: &Url, source: reqwest::Error, attempts: u32) -> Error {
        if source.is_timeout() {
            self.stalled(method, url, attempts)
        } else {
            transport(method, url, source)
        }
    }

    pub(crate) fn stalled(&self, method: &Method, url: &Url, attempts: u32) -> Error {
        Error::Stalled {
            method: method.to_string(),
            url: url.to_string(),
            timeout: self.inner.options.read_timeout,
            attempts,
        }
    }

    /// `HEAD` a manifest: its digest if the registry has it (and names it).
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Result<Option<Digest>, Error> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&MANIFEST_TYPES.join(", ")).expect("static header"),
        );
        let scope = vec![auth::repo_scope(repository, false)];
        let resp = self.send(Method::HEAD, url, headers, Body::Empty, &scope, true).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect(resp, &Method::HEAD, &[StatusCode::OK]).await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()?.parse().ok()))
    }

    /// Upload a manifest under `reference` (a tag or its digest) with its media type.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<(), Error> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        let bad_type = || Error::UnexpectedMediaType {
            reference: format!("{}/{repository}:{reference}", self.inner.registry),
            found: media_type.to_string(),
            expected: vec![OCI_MANIFEST.into(), OCI_INDEX.into()],
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(media_type).map_err(|_| bad_type())?);
        let scope = vec![auth::repo_scope(repository, true)];
        let resp = self
            .send(Method::PUT, url, headers, Body::Bytes(data), &scope, true)
            .await?;
        expect(resp, &Method::PUT, &[StatusCode::CREATED, StatusCode::OK])
            .await
            .map(drop)
    }

    /// The tags of a repository (following `Link: <…>; rel="next"` pages).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let scope = vec![auth::repo_scope(repository, false)];
        let mut url = self.url(&format!("/v2/{repository}/tags/list"));
        let mut tags = Vec::new();
        loop {
            let resp = self
                .send(Method::GET, url.clone(), HeaderMap::new(), Body::Empty, &scope, true)
                .await?;
            let mut resp = expect(resp, &Method::GET, &[StatusCode::OK]).await?;
            let next = resp.headers().get("link").and_then(|l| next_link(l.to_str().ok()?));
            let limit = self.inner.options.max_manifest_size;
            let body = match self.read_limited(&mut resp, &Method::GET, &url, limit).await {
                Ok(body) => body,
                Err(Limited::Broke(e)) => return Err(e),
                Err(Limited::TooLarge(size)) => {
                    return Err(Error::ManifestTooLarge {
                        reference: format!("{}/{repository} tag list", self.inner.registry),
                        size,
                        limit,
                    });
                }
            };
            let page: TagList = serde_json::from_slice(&body).map_err(|source| Error::BadManifest {
                reference: format!("{}/{repository} tag list", self.inner.registry),
                source,
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    url = url.join(&n).map_err(|_| Error::BadHeader {
                        method: "GET".into(),
                        url: url.to_string(),
                        header: "Link",
                    })?
                }
                None => return Ok(tags),
            }
        }
    }

    /// Send a request with authentication (answering one 401 challenge), and, when
    /// `retry`, retries with exponential backoff on 5xx/429 answers and broken connections.
    /// Returns the last answer whatever its status; 401/403 become
    /// [`Error::Unauthorized`].
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Body,
        scope: &Scope,
        retry: bool,
    ) -> Result<Response, Error> {
        let inner = &self.inner;
        let retries = if retry { inner.options.retries } else { 0 };
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let http = match body {
                Body::File { .. } => &inner.upload_http,
                _ => &inner.http,
            };
            let mut rb = http.request(method.clone(), url.clone()).headers(headers.clone());
            if let Some(h) = inner.auth.header(&inner.http, scope).await? {
                rb = rb.header(AUTHORIZATION, h);
            }
            // Milliseconds from `start` to the last bytes an upload body gave away.
            let start = tokio::time::Instant::now();
            let progress = Arc::new(AtomicU64::new(0));
            rb = match &body {
                Body::Empty => rb,
                Body::Bytes(b) => rb.body(b.clone()),
                Body::File { path, offset, len } => {
                    let io = |e: std::io::Error| crate::store::Error::Io {
                        path: path.clone(),
                        source: e,
                    };
                    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
                    f.seek(std::io::SeekFrom::Start(*offset)).await.map_err(io)?;
                    let moved = progress.clone();
                    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(*len), 256 << 10)
                        .inspect(move |_| moved.store(elapsed_ms(start), Ordering::Relaxed));
                    rb.header(CONTENT_LENGTH, *len).body(reqwest::Body::wrap_stream(stream))
                }
            };
            let sent = match &body {
                Body::File { .. } => unless_stalled(rb.send(), start, &progress, inner.options.read_timeout).await,
                _ => Some(rb.send().await),
            };
            let transient = match sent {
                None if attempt < retries => "no progress within the read timeout".to_string(),
                None => return Err(self.stalled(&method, &url, attempt + 1)),
                Some(Ok(resp)) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let header = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                    inner.auth.on_challenge(header, 401)?;
                    continue;
                }
                Some(Ok(resp)) if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                    return Err(inner.auth.unauthorized(resp.status().as_u16()));
                }
                Some(Ok(resp))
                    if (resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < retries =>
                {
                    format!("HTTP {}", resp.status())
                }
                Some(Ok(resp)) => return Ok(resp),
                Some(Err(e)) if e.is_redirect() => {
                    return Err(Error::TooManyRedirects {
                        method: method.to_string(),
                        url: url.to_string(),
                        limit: inner.options.max_redirects,
                    });
                }
                Some(Err(e)) if attempt < retries && !e.is_builder() => format!("{e}"),
                Some(Err(e)) => return Err(self.transport_error(&method, &url, e, attempt + 1)),
            };
            attempt += 1;
            let wait = self.backoff(attempt);
            tracing::warn!(%method, %url, attempt, retries, ?wait, "{transient}; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait before retry number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.options.backoff;
        base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(Duration::from_secs(10))
    }
}

fn elapsed_ms(start: tokio::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `fut`'s output, or `None` once `progress` (milliseconds after `start`, moved by whoever
/// makes progress) stands still for `timeout`.
async fn unless_stalled<F: std::future::Future>(
    fut: F,
    start: tokio::time::Instant,
    progress: &AtomicU64,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let seen = progress.load(Ordering::Relaxed);
        tokio::select! {
            out = &mut fut => return Some(out),
            () = tokio::time::sleep_until(start + Duration::from_millis(seen) + timeout) => {
                if progress.load(Ordering::Relaxed) == seen {
                    return None;
                }
            }
        }
    }
}

pub(crate) fn transport(method: &Method, url: &Url, source: reqwest::Error) -> Error {
    Error::Transport {
        method: method.to_string(),
        url: url.to_string(),
        source,
    }
}

/// The `Content-Type` without parameters, lower-cased.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    let raw = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// `resp` if its status is one of `ok`, else [`Error::Http`] with the start of the body.
pub(crate) async fn expect(resp: Response, method: &Method, ok: &[StatusCode]) -> Result<Response, Error> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let url = resp.url().to_string();
    let status = resp.status().as_u16();
    // The body only explains the status: its first 512 bytes, read for at most 10 s (a
    // hostile registry may send an endless one); failing to read it must not hide the status.
    let mut resp = resp;
    let mut body = Vec::new();
    let read = async {
        while body.len() < 512
            && let Ok(Some(chunk)) = resp.chunk().await
        {
            body.extend_from_slice(&chunk);
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read).await.is_err() {
        tracing::debug!(url, "the error answer's body did not come; reporting the status alone");
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let body_excerpt = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(Error::Http {
        method: method.to_string(),
        url,
        status,
        body_excerpt,
    })
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|l| l.contains("rel=\"next\"")).and_then(|l| {
        let start = l.find('<')? + 1;
        let end = l.find('>')?;
        Some(l[start..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_others_https_unless_insecure() {
        let base = |reg: &str, insecure| {
            Client::new(
                reg,
                ClientOptions {
                    insecure,
                    auth_files: Some(vec![]),
                    ..Default::default()
                },
            )
            .unwrap()
            .inner
            .base
            .to_string()
        };
        assert_eq!(base("127.0.0.1:5000", false), "http://127.0.0.1:5000/");
        assert_eq!(base("[::1]:5000", false), "http://[::1]:5000/");
        assert_eq!(base("localhost", false), "http://localhost/");
        assert_eq!(base("registry.example", false), "https://registry.example/");
        assert_eq!(base("registry.example:8443", true), "http://registry.example:8443/");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = Client::new(
            "127.0.0.1:1",
            ClientOptions {
                backoff: Duration::from_millis(100),
                auth_files: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
        let waits: Vec<_> = (1..=4).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800]);
        assert_eq!(c.backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn follows_next_links() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"<x>; rel="prev""#), None);
    }
}
