//! Registry authentication: anonymous, HTTP basic, and bearer tokens obtained through the
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge.
//!
//! Credentials come from the first of these files that has an entry for the registry:
//! `$REGISTRY_AUTH_FILE` (when set, it is the only file read), else
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
//! `~/.docker/config.json`. All use `{"auths": {"host[:port][/repo]": {"auth":
//! base64("user:pass")}}}`; the most specific key wins. Credential helpers
//! (`credsStore`, `credHelpers`) and identity tokens are not supported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use reqwest::header::HeaderValue;

use super::Error;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token used as a password).
    pub password: String,
    /// The file they were read from, for error messages.
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The auth files consulted, in order (see the module documentation).
pub fn auth_file_candidates() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    let mut files = Vec::new();
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|f| !f.is_empty()) {
        files.push(Path::new(&run).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|f| !f.is_empty()) {
        let home = Path::new(&home);
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// Look up credentials for `registry` (`host[:port]`) and `repository` in `files`.
/// A file that does not exist is skipped, except `$REGISTRY_AUTH_FILE`, which the user
/// named explicitly. Returns the credentials found (if any).
pub fn find_credentials(files: &[PathBuf], registry: &str, repository: &str) -> Result<Option<Credentials>, Error> {
    let explicit = std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from);
    for path in files {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.as_ref() != Some(path) => continue,
            Err(e) => {
                return Err(Error::AuthFile {
                    path: path.clone(),
                    problem: e.to_string(),
                });
            }
        };
        if let Some(c) = lookup(&data, path, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `https://host:port/v1/` → `host:port`; `host/ns/repo` stays.
fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    k.strip_suffix("/v1").or_else(|| k.strip_suffix("/v2")).unwrap_or(k)
}

fn lookup(data: &[u8], path: &Path, registry: &str, repository: &str) -> Result<Option<Credentials>, Error> {
    let bad = |problem: String| Error::AuthFile {
        path: path.to_path_buf(),
        problem,
    };
    let file: AuthFile = serde_json::from_slice(data).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let full = format!("{registry}/{repository}");
    // The most specific key: `host/ns/repo` beats `host/ns` beats `host`.
    let best = file
        .auths
        .iter()
        .filter(|(k, _)| {
            let k = normalize_key(k);
            k == registry
                || (full.starts_with(k) && full[k.len()..].starts_with('/') && k.starts_with(&format!("{registry}/")))
        })
        .max_by_key(|(k, _)| normalize_key(k).len());
    let Some((key, entry)) = best else { return Ok(None) };
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) if !auth.is_empty() => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("the `auth` of `{key}` is not base64: {e}")))?;
            let text = String::from_utf8(decoded).map_err(|_| bad(format!("the `auth` of `{key}` is not UTF-8")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("the `auth` of `{key}` does not decode to `user:password`")))?;
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ if entry.identitytoken.is_some() => {
            return Err(bad(format!(
                "the entry for `{key}` holds an identity token, which strata does not support; log in with a password"
            )));
        }
        _ => {
            return Err(bad(format!(
                "the entry for `{key}` has neither `auth` nor `username` and `password`"
            )));
        }
    };
    Ok(Some(Credentials {
        username,
        password,
        source: Some(path.to_path_buf()),
    }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Result<Challenge, &'static str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest)?;
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("only the Basic and Bearer schemes are supported");
    }
    let realm = params
        .get("realm")
        .cloned()
        .ok_or("the Bearer challenge has no realm")?;
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return Err("the Bearer realm is not an http(s) URL");
    }
    Ok(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="quoted, value",key2=token` → map (keys lower-cased).
fn parse_params(s: &str) -> Result<HashMap<String, String>, &'static str> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("an unterminated quoted parameter"),
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim().to_string();
        }
        if key.is_empty() {
            return Err("a parameter without a name");
        }
        out.insert(key, value);
    }
}

/// The scope strings of a request: `repository:<repo>:pull[,push]`, one per repository.
pub(crate) type Scope = Vec<String>;

/// `repository:<repo>:<actions>`.
pub(crate) fn repo_scope(repository: &str, push: bool) -> String {
    format!("repository:{repository}:{}", if push { "pull,push" } else { "pull" })
}

/// Per-registry authentication state: the credentials, the scheme the registry asked for,
/// and the bearer tokens obtained so far (one per scope set).
pub(crate) struct Authenticator {
    registry: String,
    credentials: Option<Credentials>,
    searched: Vec<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    challenge: Option<Challenge>,
    tokens: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

impl Authenticator {
    pub(crate) fn new(registry: &str, credentials: Option<Credentials>, searched: Vec<PathBuf>) -> Authenticator {
        Authenticator {
            registry: registry.to_string(),
            credentials,
            searched,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves only a token cache behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` header for a request with `scope`, fetching a token first when
    /// the registry is known to want bearer tokens and none is cached for this scope.
    pub(crate) async fn header(&self, http: &reqwest::Client, scope: &Scope) -> Result<Option<HeaderValue>, Error> {
        let key = scope.join(" ");
        let challenge = {
            let st = self.state();
            if let Some(t) = st.tokens.get(&key) {
                return Ok(Some(bearer(t)));
            }
            st.challenge.clone()
        };
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(basic)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self.fetch_token(http, &realm, service.as_deref(), scope).await?;
                self.state().tokens.insert(key, token.clone());
                Ok(Some(bearer(&token)))
            }
        }
    }

    /// React to a 401 answer: remember the scheme it asks for and drop the cached token of
    /// this scope, so the next [`Authenticator::header`] fetches a fresh one.
    pub(crate) fn on_challenge(&self, header: Option<&str>, status: u16) -> Result<(), Error> {
        let header = header.ok_or_else(|| self.unauthorized(status))?;
        let challenge = parse_challenge(header).map_err(|problem| Error::BadChallenge {
            registry: self.registry.clone(),
            header: header.to_string(),
            problem,
        })?;
        if challenge == Challenge::Basic && self.credentials.is_none() {
            return Err(self.unauthorized(status));
        }
        let mut st = self.state();
        st.tokens.clear();
        st.challenge = Some(challenge);
        Ok(())
    }

    /// The error for a refused request.
    pub(crate) fn unauthorized(&self, status: u16) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            status,
            user: self.credentials.as_ref().map(|c| c.username.clone()),
            auth_file: self.credentials.as_ref().and_then(|c| c.source.clone()),
            searched: if self.credentials.is_none() {
                self.searched.clone()
            } else {
                vec![]
            },
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<String, Error> {
        let mut url = url::Url::parse(realm).map_err(|_| Error::BadChallenge {
            registry: self.registry.clone(),
            header: realm.to_string(),
            problem: "the Bearer realm is not a URL",
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope {
                q.append_pair("scope", s);
            }
        }
        tracing::debug!(registry = %self.registry, %url, "fetching a bearer token");
        let mut req = http.get(url.clone());
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let transport = |source| Error::Transport {
            method: "GET".into(),
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized(status));
        }
        // A token answer is small; a registry that sends more is cut off, not buffered.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_ANSWER {
                return Err(Error::BadChallenge {
                    registry: self.registry.clone(),
                    header: realm.to_string(),
                    problem: "the token server's answer is larger than 1 MiB",
                });
            }
        }
        if !(200..300).contains(&status) {
            let body_excerpt = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(Error::Http {
                method: "GET".into(),
                url: url.to_string(),
                status,
                body_excerpt,
            });
        }
        let answer: Option<TokenAnswer> = serde_json::from_slice(&body).ok();
        answer
            .and_then(|a| a.token.or(a.access_token))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::BadChallenge {
                registry: self.registry.clone(),
                header: realm.to_string(),
                problem: "the token server's answer holds no token",
            })
    }
}

/// The largest token answer read.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

fn bearer(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}

fn basic(c: &Credentials) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic
        );
        assert!(parse_challenge("Negotiate abc").is_err());
        assert!(parse_challenge(r#"Bearer service="x""#).is_err());
        assert!(parse_challenge(r#"Bearer realm="https://x"#).is_err());
    }

    #[test]
    fn finds_the_most_specific_entry_and_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"auths": {
            "https://reg.example:5000/v1/": {"auth": b64("host:pw")},
            "reg.example:5000/team": {"auth": b64("team:pw2")},
            "other.example": {"username": "u", "password": "p"},
            "broken.example": {"auth": "!!!"},
        }});
        std::fs::write(&file, json.to_string()).unwrap();
        let files = vec![dir.path().join("missing.json"), file.clone()];
        let get = |reg: &str, repo: &str| find_credentials(&files, reg, repo);
        assert_eq!(get("reg.example:5000", "team/x").unwrap().unwrap().username, "team");
        assert_eq!(get("reg.example:5000", "teamx/x").unwrap().unwrap().username, "host");
        let c = get("other.example", "a").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str(), c.source.as_ref()),
            ("u", "p", Some(&file))
        );
        assert!(get("nothing.example", "a").unwrap().is_none());
        let err = get("broken.example", "a").unwrap_err().to_string();
        assert!(err.contains("auth.json") && err.contains("broken.example"), "{err}");
        std::fs::write(&file, "{").unwrap();
        assert!(
            get("reg.example:5000", "a")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
