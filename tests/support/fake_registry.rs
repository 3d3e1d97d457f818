//! An in-process OCI registry (hyper, 127.0.0.1:0) that can be told to misbehave: wrong
//! blob content, truncated bodies, dropped connections, oversized manifests, wrong media
//! types, redirect loops, 500s, and bearer-token auth. Good enough for the client, not a
//! registry: one lock, everything in memory.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use strata::digest::Digest;

type Body = BoxBody<Bytes, std::io::Error>;

/// What the registry does wrong.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Blob GETs send other bytes of the same length.
    pub wrong_blob: bool,
    /// Blob GETs send only the first half (an honest, short `Content-Length`), and ignore
    /// `Range`.
    pub truncate_blob: bool,
    /// The next N blob GETs announce the full length, send half, and drop the connection.
    pub drop_blob: u32,
    /// Blob GETs send half and then nothing, forever (the client gets cancelled).
    pub stall_blob: bool,
    /// Blob GETs ignore `Range` (answer 200 with everything).
    pub ignore_range: bool,
    /// Manifests are served with this many bytes of JSON white space appended.
    pub manifest_padding: usize,
    /// …and without a `Content-Length` (chunked), so only a streaming limit catches it.
    pub manifest_chunked: bool,
    /// Manifests are served with this `Content-Type`.
    pub manifest_content_type: Option<String>,
    /// Blob GETs redirect forever.
    pub redirect_loop: bool,
    /// The next N requests whose `METHOD path` contains the string answer 500.
    pub fail: Vec<(String, u32)>,
    /// The next N answers to requests whose `METHOD path` contains the string send their
    /// headers (the full `Content-Length`) and half the body, then nothing, forever.
    pub stall: Vec<(String, u32)>,
    /// The next N requests whose `METHOD path` contains the string get no answer at all.
    pub stall_headers: Vec<(String, u32)>,
    /// Require bearer tokens from `/token`, which wants these basic credentials.
    pub bearer: Option<(String, String)>,
}

/// The registry's state, shared with the test.
#[derive(Default)]
pub struct State {
    pub faults: Faults,
    /// Blob content by digest.
    pub blobs: HashMap<Digest, Bytes>,
    /// Which repositories have which blobs.
    pub repo_blobs: HashSet<(String, Digest)>,
    /// (repository, tag or digest) → (media type, bytes).
    pub manifests: HashMap<(String, String), (String, Bytes)>,
    uploads: HashMap<u64, (String, Vec<u8>)>,
    next_upload: u64,
    /// `METHOD path [range]` → status, one line per request.
    pub log: Vec<String>,
}

/// A running fake registry.
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRegistry {
    /// Start one on a free loopback port.
    pub async fn start(faults: Faults) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            faults,
            ..Default::default()
        }));
        let (st, a) = (state.clone(), addr.clone());
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (st, a) = (st.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), a.clone(), req));
                    // Connections we drop on purpose end in errors; nothing to report.
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await
                    {
                        eprintln!("fake registry connection: {e}");
                    }
                });
            }
        });
        FakeRegistry { addr, state, task }
    }

    /// Change the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// The request log.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn full(status: StatusCode, data: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(data.into()).map_err(|e: Infallible| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn json_error(status: StatusCode, code: &str) -> Response<Body> {
    full(
        status,
        format!(r#"{{"errors":[{{"code":"{code}","message":"fake registry says {code}"}}]}}"#),
    )
}

async fn handle(state: Arc<Mutex<State>>, addr: String, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (range, auth, content_range) = (header("range"), header("authorization"), header("content-range"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let line = format!("{method} {path}{}{}", if query.is_empty() { "" } else { "?" }, query);
    let request = format!("{method} {path}");
    let (stall_headers, stall_body) = {
        let mut st = state.lock().unwrap();
        let stall_headers = take_one(&mut st.faults.stall_headers, &request);
        if stall_headers {
            st.log.push(format!("{line} -> stalled"));
        }
        (stall_headers, take_one(&mut st.faults.stall, &request))
    };
    if stall_headers {
        return futures_util::future::pending().await;
    }
    let resp = {
        let mut st = state.lock().unwrap();
        let resp = route(
            &mut st,
            &addr,
            &method,
            &path,
            &query,
            range.as_deref(),
            auth.as_deref(),
            content_range.as_deref(),
            body,
        );
        st.log.push(format!(
            "{line} {} -> {}",
            range.unwrap_or_default(),
            resp.status().as_u16()
        ));
        resp
    };
    if stall_body && method != Method::HEAD {
        let (parts, body) = resp.into_parts();
        let data = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let half = data.slice(..data.len() / 2);
        let stream =
            futures_util::stream::once(async move { Ok(Frame::data(half)) }).chain(futures_util::stream::pending());
        let mut r = Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", data.len().into());
        return Ok(r);
    }
    Ok(resp)
}

/// Count down the first rule whose pattern `request` contains; whether one matched.
fn take_one(rules: &mut [(String, u32)], request: &str) -> bool {
    match rules
        .iter_mut()
        .find(|(pat, n)| *n > 0 && request.contains(pat.as_str()))
    {
        Some((_, n)) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[allow(clippy::too_many_arguments)]
fn route(
    st: &mut State,
    addr: &str,
    method: &Method,
    path: &str,
    query: &str,
    range: Option<&str>,
    auth: Option<&str>,
    content_range: Option<&str>,
    body: Bytes,
) -> Response<Body> {
    let line = format!("{method} {path}");
    if let Some((_, n)) = st
        .faults
        .fail
        .iter_mut()
        .find(|(pat, n)| *n > 0 && line.contains(pat.as_str()))
    {
        *n -= 1;
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN");
    }
    if path == "/token" {
        let (user, pass) = st.faults.bearer.clone().unwrap_or_default();
        use base64::Engine as _;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        if auth != Some(want.as_str()) {
            return json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
        let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.into_owned())
            .collect();
        return full(StatusCode::OK, format!(r#"{{"token":"tok {}"}}"#, scopes.join(" ")));
    }
    if st.faults.bearer.is_some() {
        let repo = path
            .strip_prefix("/v2/")
            .and_then(|p| {
                p.split_once("/blobs/")
                    .or(p.split_once("/manifests/"))
                    .or(p.split_once("/tags/"))
            })
            .map(|(r, _)| r);
        let repo = repo.or_else(|| {
            path.strip_prefix("/upload/")
                .and_then(|id| st.uploads.get(&id.parse().ok()?))
                .map(|(r, _)| r.as_str())
        });
        let needed = repo.map(|r| format!("repository:{r}:"));
        let ok = auth
            .and_then(|a| a.strip_prefix("Bearer tok"))
            .is_some_and(|granted| needed.as_ref().is_none_or(|n| granted.contains(n.as_str())));
        if !ok {
            let scope = repo
                .map(|r| format!(",scope=\"repository:{r}:pull\""))
                .unwrap_or_default();
            let mut r = json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
            let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"fake\"{scope}");
            r.headers_mut().insert("www-authenticate", challenge.parse().unwrap());
            return r;
        }
    }
    if path == "/v2/" {
        return full(StatusCode::OK, "{}");
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return upload(st, method, id.parse().unwrap_or(u64::MAX), query, content_range, body);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    if let Some(repo) = rest.strip_suffix("/blobs/uploads/") {
        if let (Some(mount), Some(from)) = (query_param(query, "mount"), query_param(query, "from"))
            && let Ok(d) = mount.parse::<Digest>()
            && st.repo_blobs.contains(&(from, d.clone()))
        {
            st.repo_blobs.insert((repo.to_string(), d));
            return full(StatusCode::CREATED, "");
        }
        st.next_upload += 1;
        st.uploads.insert(st.next_upload, (repo.to_string(), Vec::new()));
        let mut r = full(StatusCode::ACCEPTED, "");
        r.headers_mut().insert(
            "location",
            format!("/upload/{}?_state=x", st.next_upload).parse().unwrap(),
        );
        return r;
    }
    if let Some((repo, digest)) = rest.split_once("/blobs/") {
        return blob(st, method, repo, digest, query, range);
    }
    if let Some((repo, reference)) = rest.split_once("/manifests/") {
        return manifest(st, method, repo, reference, body);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let tags: Vec<_> = st
            .manifests
            .keys()
            .filter(|(r, t)| r == repo && !t.starts_with("sha256:"))
            .map(|(_, t)| t.clone())
            .collect();
        return full(
            StatusCode::OK,
            serde_json::json!({"name": repo, "tags": tags}).to_string(),
        );
    }
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND")
}

fn upload(
    st: &mut State,
    method: &Method,
    id: u64,
    query: &str,
    content_range: Option<&str>,
    body: Bytes,
) -> Response<Body> {
    let Some((_, data)) = st.uploads.get_mut(&id) else {
        return json_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    };
    if method == Method::PATCH {
        let start = content_range.and_then(|r| r.split('-').next()?.parse::<usize>().ok());
        if start != Some(data.len()) {
            return json_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
        }
        data.extend_from_slice(&body);
        let mut r = full(StatusCode::ACCEPTED, "");
        r.headers_mut()
            .insert("location", format!("/upload/{id}?_state=y").parse().unwrap());
        r.headers_mut()
            .insert("range", format!("0-{}", data.len() - 1).parse().unwrap());
        return r;
    }
    if method != Method::PUT {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
    data.extend_from_slice(&body);
    let (repo, data) = st.uploads.remove(&id).unwrap();
    let Some(want) = query_param(query, "digest").and_then(|d| d.parse::<Digest>().ok()) else {
        return json_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    };
    if Digest::of(&data) != want {
        return json_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
    st.blobs.insert(want.clone(), data.into());
    st.repo_blobs.insert((repo, want));
    full(StatusCode::CREATED, "")
}

fn blob(st: &mut State, method: &Method, repo: &str, digest: &str, query: &str, range: Option<&str>) -> Response<Body> {
    let Ok(d) = digest.parse::<Digest>() else {
        return json_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    };
    let Some(data) = st
        .blobs
        .get(&d)
        .filter(|_| st.repo_blobs.contains(&(repo.to_string(), d.clone())))
        .cloned()
    else {
        return json_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    };
    if method == Method::HEAD {
        let mut r = full(StatusCode::OK, "");
        r.headers_mut().insert("content-length", data.len().into());
        return r;
    }
    let f = &mut st.faults;
    if f.redirect_loop {
        let n: u32 = query_param(query, "hop").and_then(|h| h.parse().ok()).unwrap_or(0);
        let mut r = full(StatusCode::TEMPORARY_REDIRECT, "");
        r.headers_mut().insert(
            "location",
            format!("/v2/{repo}/blobs/{digest}?hop={}", n + 1).parse().unwrap(),
        );
        return r;
    }
    if f.wrong_blob {
        let mut other = data.to_vec();
        other[0] ^= 1;
        return full(StatusCode::OK, other);
    }
    if f.truncate_blob {
        return full(StatusCode::OK, data.slice(..data.len() / 2));
    }
    if f.stall_blob {
        let half = data.slice(..data.len() / 2);
        let stream =
            futures_util::stream::once(async move { Ok(Frame::data(half)) }).chain(futures_util::stream::pending());
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", data.len().into());
        return r;
    }
    let start = range
        .filter(|_| !f.ignore_range)
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
    if f.drop_blob > 0 {
        f.drop_blob -= 1;
        let from = start.unwrap_or(0);
        let half = data.slice(from..from + (data.len() - from) / 2);
        let stream = futures_util::stream::unfold(Some(half), |state| async move {
            match state {
                Some(half) => Some((Ok(Frame::data(half)), None)),
                None => {
                    // Let the first half reach the client before the connection breaks.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Err(std::io::Error::other("connection dropped on purpose")), None))
                }
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", (data.len() - from).into());
        if from > 0 {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                "content-range",
                format!("bytes {from}-{}/{}", data.len() - 1, data.len())
                    .parse()
                    .unwrap(),
            );
        }
        return r;
    }
    match start {
        Some(s) if s < data.len() => {
            let mut r = full(StatusCode::PARTIAL_CONTENT, data.slice(s..));
            r.headers_mut().insert(
                "content-range",
                format!("bytes {s}-{}/{}", data.len() - 1, data.len()).parse().unwrap(),
            );
            r
        }
        Some(_) => json_error(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE"),
        None => full(StatusCode::OK, data),
    }
}

fn manifest(st: &mut State, method: &Method, repo: &str, reference: &str, body: Bytes) -> Response<Body> {
    let key = (repo.to_string(), reference.to_string());
    if method == Method::PUT {
        let digest = Digest::of(&body);
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_default();
        st.manifests.insert(
            (repo.to_string(), digest.to_string()),
            (media_type.clone(), body.clone()),
        );
        st.manifests.insert(key, (media_type, body));
        let mut r = full(StatusCode::CREATED, "");
        r.headers_mut()
            .insert("docker-content-digest", digest.to_string().parse().unwrap());
        return r;
    }
    let Some((media_type, data)) = st.manifests.get(&key).cloned() else {
        return json_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    };
    let media_type = st.faults.manifest_content_type.clone().unwrap_or(media_type);
    let mut data = data.to_vec();
    data.extend(std::iter::repeat_n(b' ', st.faults.manifest_padding));
    let digest = Digest::of(&data);
    let mut r = if st.faults.manifest_chunked {
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = data
            .chunks(64 << 10)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))
    } else {
        let mut r = full(
            StatusCode::OK,
            if method == Method::HEAD {
                Vec::new()
            } else {
                data.clone()
            },
        );
        r.headers_mut().insert("content-length", data.len().into());
        r
    };
    r.headers_mut().insert("content-type", media_type.parse().unwrap());
    r.headers_mut()
        .insert("docker-content-digest", digest.to_string().parse().unwrap());
    r
}
