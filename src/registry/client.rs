//! One registry's HTTP API: ping, manifests, tags (blobs are in `blob.rs`), with
//! authentication, bounded redirects and retries with exponential backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use url::Url;

use super::auth::{self, Authenticator, Credentials, Scope};
use super::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Error, OCI_INDEX, OCI_MANIFEST, reference};
use crate::digest::Digest;

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
    pub(crate) http: reqwest::Client,
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
        let http = reqwest::Client::builder()
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(options.max_redirects))
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(Error::ClientSetup)?;
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
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<FetchedManifest, Error> {
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
            return Err(Error::ManifestNotFound { reference: name });
        }
        let mut resp = expect(resp, &Method::GET, &[StatusCode::OK]).await?;
        let media_type = content_type(resp.headers());
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(Error::UnexpectedMediaType {
                reference: name,
                found: media_type,
                expected: MANIFEST_TYPES.iter().map(|s| s.to_string()).collect(),
            });
        }
        let limit = self.inner.options.max_manifest_size;
        if let Some(size) = resp.content_length().filter(|n| *n > limit) {
            return Err(Error::ManifestTooLarge {
                reference: name,
                size,
                limit,
            });
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()?.parse::<Digest>().ok());
        let mut data = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| transport(&Method::GET, &url, source))?
        {
            data.extend_from_slice(&chunk);
            if data.len() as u64 > limit {
                return Err(Error::ManifestTooLarge {
                    reference: name,
                    size: data.len() as u64,
                    limit,
                });
            }
        }
        let data = data.freeze();
        let digest = Digest::of(&data);
        let asked = reference.parse::<Digest>().ok();
        for expected in [asked, header_digest].into_iter().flatten() {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    reference: name,
                    expected,
                    found: digest,
                });
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
            let resp = expect(resp, &Method::GET, &[StatusCode::OK]).await?;
            let next = resp.headers().get("link").and_then(|l| next_link(l.to_str().ok()?));
            let body = resp.bytes().await.map_err(|e| transport(&Method::GET, &url, e))?;
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
            let mut rb = inner.http.request(method.clone(), url.clone()).headers(headers.clone());
            if let Some(h) = inner.auth.header(&inner.http, scope).await? {
                rb = rb.header(AUTHORIZATION, h);
            }
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
                    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(*len), 256 << 10);
                    rb.header(CONTENT_LENGTH, *len).body(reqwest::Body::wrap_stream(stream))
                }
            };
            let transient = match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let header = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                    inner.auth.on_challenge(header, 401)?;
                    continue;
                }
                Ok(resp) if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                    return Err(inner.auth.unauthorized(resp.status().as_u16()));
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < retries =>
                {
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_redirect() => {
                    return Err(Error::TooManyRedirects {
                        method: method.to_string(),
                        url: url.to_string(),
                        limit: inner.options.max_redirects,
                    });
                }
                Err(e) if attempt < retries && !e.is_builder() => format!("{e}"),
                Err(e) => return Err(transport(&method, &url, e)),
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
    // The body only explains the status; failing to read it must not hide the status.
    let body = resp.bytes().await.unwrap_or_default();
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
