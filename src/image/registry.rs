//! A small blocking client for the OCI distribution API: pulling manifests and blobs, and
//! pushing them (monolithic blob uploads, manifest puts), with anonymous, basic and
//! bearer-token auth.
//!
//! Credentials come from `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`: from the credential helper it names for the registry (`credHelpers`)
//! or for all (`credsStore`), run as `docker-credential-<name> get`, else from its `auths` map.
//! They are sent only to the registry they are filed under (and to the token service that
//! registry names, over https or loopback). Redirects (blob downloads are often redirected to a
//! CDN) never carry an Authorization header. Plain HTTP is used only for loopback registries and
//! ones listed as insecure.
//! Owns no files; the store writes what this returns.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::{ImageError, RegistryRef};

/// Media types a manifest request accepts.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How the store talks to registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any single read (a registry that stops sending fails after this).
    pub read_timeout: Duration,
    /// Registries (`host[:port]`) reached over plain HTTP although not loopback.
    pub insecure: Vec<String>,
    /// Overrides the credentials file lookup.
    pub auth_file: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            insecure: Vec::new(),
            auth_file: None,
        }
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.user)
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// What `docker-credential-<name> get` prints.
#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials file to read, per the podman/docker convention; `None` when none exists.
pub(crate) fn auth_file_path(opts: &RegistryOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.auth_file {
        return Some(p.clone());
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// `https://host:5000/v1/` -> `host:5000`; Docker Hub's aliases -> `docker.io`.
fn normalize_auth_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

/// Credentials for `registry` from the credentials file, if it names that registry.
pub(crate) fn load_credentials(
    opts: &RegistryOptions,
    registry: &str,
) -> Result<Option<Credentials>, ImageError> {
    let Some(path) = auth_file_path(opts) else {
        return Ok(None);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ImageError::AuthFile {
                path,
                message: e.to_string(),
            })
        }
    };
    let bad = |message: String| ImageError::AuthFile {
        path: path.clone(),
        message,
    };
    let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let want = normalize_auth_key(registry);
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_auth_key(k) == want)
        .map(|(_, v)| v.clone())
        .or(file.creds_store)
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        if let Some(creds) = run_credential_helper(&helper, &want).map_err(bad)? {
            return Ok(Some(creds));
        }
    }
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| normalize_auth_key(k) == want)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths[{registry:?}].auth is not base64: {e}")))?;
        let s = String::from_utf8(decoded)
            .map_err(|_| bad(format!("auths[{registry:?}].auth is not UTF-8")))?;
        let (user, password) = s
            .split_once(':')
            .ok_or_else(|| bad(format!("auths[{registry:?}].auth is not user:password")))?;
        return Ok(Some(Credentials {
            user: user.into(),
            password: password.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            user: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// Asks `docker-credential-<helper> get` for the credentials of `registry` (a normalized
/// auth key). `None` when the helper has none for it.
fn run_credential_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, String> {
    use std::process::Command;
    if !helper
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "credential helper name {helper:?} is not a plain name"
        ));
    }
    let program = format!("docker-credential-{helper}");
    // Docker files Docker Hub under its v1 index URL; others under host[:port].
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let output = crate::sys::children::output(
        Command::new(&program).arg("get"),
        Some(server.as_bytes()),
        Some(HELPER_TIMEOUT),
    )
    .map_err(|e| format!("running {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let said = format!("{stdout} {}", String::from_utf8_lossy(&output.stderr));
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "{program} get {server}: {}: {}",
            output.status,
            said.trim()
        ));
    }
    let reply: HelperReply = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{program} get {server}: unreadable answer: {e}"))?;
    if reply.username == "<token>" {
        return Err(format!(
            "{program} get {server}: answered with an identity token, which berth cannot use"
        ));
    }
    Ok(Some(Credentials {
        user: reply.username,
        password: reply.secret,
    }))
}

/// True for `localhost`, `127.x.y.z`, `[::1]`, with or without a port.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// A manifest as fetched.
pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    /// The registry's `Docker-Content-Digest` header, when sent.
    pub digest: Option<String>,
}

/// A client for one registry and repository (one pull).
pub(crate) struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    image: String,
    creds: Option<Credentials>,
    /// The Authorization header that worked last (basic or bearer).
    auth: Mutex<Option<String>>,
    /// What a token is asked for when the challenge names no scope: `pull` or `pull,push`.
    actions: &'static str,
}

/// A request body that can be sent again after an authentication round.
pub(crate) enum Body<'a> {
    Bytes(&'a [u8]),
    /// A file, sent with its length.
    File(&'a std::path::Path),
}

impl RegistryClient {
    pub(crate) fn new(
        opts: &RegistryOptions,
        r: &RegistryRef,
        image: &str,
    ) -> Result<RegistryClient, ImageError> {
        let plain = is_loopback(&r.registry) || opts.insecure.iter().any(|i| i == &r.registry);
        let host = if r.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &r.registry
        };
        let base = format!("{}://{host}", if plain { "http" } else { "https" });
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.connect_timeout)
            .timeout_read(opts.read_timeout)
            .timeout_write(opts.read_timeout)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::Never)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(RegistryClient {
            agent,
            base,
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            image: image.to_string(),
            creds: load_credentials(opts, &r.registry)?,
            auth: Mutex::new(None),
            actions: "pull",
        })
    }

    /// A client that may also push to the repository.
    pub(crate) fn for_push(
        opts: &RegistryOptions,
        r: &RegistryRef,
        image: &str,
    ) -> Result<RegistryClient, ImageError> {
        Ok(RegistryClient {
            actions: "pull,push",
            ..RegistryClient::new(opts, r, image)?
        })
    }

    fn transport_err(&self, step: &str, e: &ureq::Transport) -> ImageError {
        let mut message = e.to_string();
        if let Some(src) = std::error::Error::source(e) {
            let s = src.to_string();
            if !message.contains(&s) {
                message = format!("{message}: {s}");
            }
        }
        ImageError::Registry {
            image: self.image.clone(),
            registry: self.registry.clone(),
            step: step.to_string(),
            message,
        }
    }

    fn status_err(&self, step: &str, status: u16, resp: ureq::Response) -> ImageError {
        let mut body = String::new();
        let _ = resp.into_reader().take(4096).read_to_string(&mut body);
        let message = error_message(&body);
        match status {
            404 => ImageError::NotFound {
                image: self.image.clone(),
                registry: self.registry.clone(),
                message,
            },
            401 | 403 => ImageError::Auth {
                image: self.image.clone(),
                registry: self.registry.clone(),
                message: format!(
                    "{step}: access denied (HTTP {status}){}",
                    if self.creds.is_some() {
                        ": the credentials were refused"
                    } else {
                        ": no credentials for this registry"
                    }
                ),
            },
            _ => ImageError::RegistryStatus {
                image: self.image.clone(),
                registry: self.registry.clone(),
                step: step.to_string(),
                status,
                message,
            },
        }
    }

    /// GETs `path` under the repository, authenticating on a 401 challenge (once).
    fn get(
        &self,
        step: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::Response, ImageError> {
        let url = self.url(path);
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        self.send("GET", step, &url, &headers, None)
    }

    /// `path` under the repository (`/v2/<repository>/<path>`).
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Sends one request, authenticating on a 401 challenge (once, with `body` opened again).
    /// The Authorization header goes only to this registry's own origin: an upload location
    /// elsewhere gets none.
    fn send(
        &self,
        method: &str,
        step: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Body<'_>>,
    ) -> Result<ureq::Response, ImageError> {
        let own = url.starts_with(&format!("{}/", self.base));
        let mut retried = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(h) = auth.filter(|_| own) {
                req = req.set("Authorization", &h);
            }
            let result = match body {
                None => req.call(),
                Some(Body::Bytes(b)) => req.send_bytes(b),
                Some(Body::File(path)) => {
                    let f = std::fs::File::open(path).map_err(|e| ImageError::Registry {
                        image: self.image.clone(),
                        registry: self.registry.clone(),
                        step: step.to_string(),
                        message: format!("opening {}: {e}", path.display()),
                    })?;
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    req.set("Content-Length", &len.to_string()).send(f)
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !retried && own => {
                    retried = true;
                    let challenge = resp.header("www-authenticate").map(str::to_string);
                    let header = self.authenticate(step, challenge.as_deref())?;
                    *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(header);
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(self.status_err(step, code, resp))
                }
                Err(ureq::Error::Transport(t)) => return Err(self.transport_err(step, &t)),
            }
        }
    }

    fn basic_header(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            let raw = format!("{}:{}", c.user, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    /// Answers a challenge with an Authorization header value.
    fn authenticate(&self, step: &str, challenge: Option<&str>) -> Result<String, ImageError> {
        let auth_err = |message: String| ImageError::Auth {
            image: self.image.clone(),
            registry: self.registry.clone(),
            message,
        };
        match challenge.and_then(parse_challenge) {
            Some(Challenge::Basic) => self.basic_header().ok_or_else(|| {
                auth_err(format!(
                    "{step}: the registry wants a user and password and the credentials file has none for it"
                ))
            }),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:{}", self.repository, self.actions));
                let realm_host = realm
                    .strip_prefix("https://")
                    .or_else(|| realm.strip_prefix("http://"))
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("");
                let realm_ok = realm.starts_with("https://")
                    || (realm.starts_with("http://")
                        && (is_loopback(realm_host) || realm_host == self.registry));
                if !realm_ok {
                    return Err(auth_err(format!(
                        "token service {realm:?} is neither https nor on this host; not sending a request to it"
                    )));
                }
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(b) = self.basic_header() {
                    req = req.set("Authorization", &b);
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                        return Err(auth_err(format!(
                            "token service {realm} refused {} (HTTP {code})",
                            if self.creds.is_some() {
                                "the credentials"
                            } else {
                                "anonymous access"
                            }
                        )))
                    }
                    Err(ureq::Error::Status(code, resp)) => {
                        return Err(self.status_err("getting a token", code, resp))
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(self.transport_err("getting a token", &t))
                    }
                };
                let mut body = Vec::new();
                resp.into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut body)
                    .map_err(|e| auth_err(format!("reading the token: {e}")))?;
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| auth_err(format!("token service answer: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| auth_err("token service returned no token".into()))?;
                Ok(format!("Bearer {token}"))
            }
            None => Err(auth_err(format!(
                "{step}: HTTP 401 without a usable WWW-Authenticate challenge"
            ))),
        }
    }

    /// Fetches a manifest or index by tag or digest, bounded by `cap` bytes.
    pub(crate) fn manifest(
        &self,
        reference: &str,
        cap: u64,
    ) -> Result<FetchedManifest, ImageError> {
        let step = format!("fetching manifest {reference}");
        let resp = self.get(
            &step,
            &format!("manifests/{reference}"),
            Some(MANIFEST_ACCEPT),
        )?;
        let digest = resp
            .header("docker-content-digest")
            .map(|d| d.trim().to_string());
        let media_type = Some(resp.content_type().to_string())
            .filter(|t| !t.is_empty() && t != "text/plain" && t != "application/octet-stream");
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Registry {
                image: self.image.clone(),
                registry: self.registry.clone(),
                step: step.clone(),
                message: e.to_string(),
            })?;
        if bytes.len() as u64 > cap {
            return Err(ImageError::Registry {
                image: self.image.clone(),
                registry: self.registry.clone(),
                step,
                message: format!("manifest is larger than {cap} bytes"),
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Opens a blob download as a stream.
    pub(crate) fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let resp = self.get(
            &format!("fetching blob {digest}"),
            &format!("blobs/{digest}"),
            None,
        )?;
        Ok(Box::new(resp.into_reader()))
    }

    pub(crate) fn registry(&self) -> &str {
        &self.registry
    }

    /// True when the repository has the blob `digest`.
    pub(crate) fn has_blob(&self, digest: &str) -> Result<bool, ImageError> {
        let step = format!("checking blob {digest}");
        match self.send(
            "HEAD",
            &step,
            &self.url(&format!("blobs/{digest}")),
            &[],
            None,
        ) {
            Ok(_) => Ok(true),
            Err(ImageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads the blob `digest` from the file `path` in one request (the distribution API's
    /// monolithic upload: POST for a location, then PUT the content there with its digest).
    pub(crate) fn upload_blob(
        &self,
        digest: &str,
        path: &std::path::Path,
    ) -> Result<(), ImageError> {
        let step = format!("uploading blob {digest}");
        let resp = self.send(
            "POST",
            &step,
            &self.url("blobs/uploads/"),
            &[("Content-Length", "0")],
            None,
        )?;
        let location =
            resp.header("location")
                .map(str::to_string)
                .ok_or_else(|| ImageError::Registry {
                    image: self.image.clone(),
                    registry: self.registry.clone(),
                    step: step.clone(),
                    message: "the registry gave no upload location".into(),
                })?;
        let url = upload_url(&self.base, &location, digest);
        self.send(
            "PUT",
            &step,
            &url,
            &[("Content-Type", "application/octet-stream")],
            Some(&Body::File(path)),
        )?;
        Ok(())
    }

    /// Puts the manifest `bytes` (of `media_type`) under `reference` (a tag or its digest);
    /// returns the digest the registry reports, if it does.
    pub(crate) fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, ImageError> {
        let resp = self.send(
            "PUT",
            &format!("putting manifest {reference}"),
            &self.url(&format!("manifests/{reference}")),
            &[("Content-Type", media_type)],
            Some(&Body::Bytes(bytes)),
        )?;
        Ok(resp
            .header("docker-content-digest")
            .map(|d| d.trim().to_string()))
    }
}

/// Where to PUT an upload's content: the `Location` the registry gave (absolute, or a path on
/// `base`) with `digest=` added to its query.
fn upload_url(base: &str, location: &str, digest: &str) -> String {
    let abs = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}/{}", location.trim_start_matches('/'))
    };
    let sep = if abs.contains('?') { '&' } else { '?' };
    let digest = digest.replace(':', "%3A");
    format!("{abs}{sep}digest={digest}")
}

/// The first message of a distribution-spec error body, or the body's start.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errs {
        errors: Vec<Err1>,
    }
    #[derive(Deserialize)]
    struct Err1 {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_str::<Errs>(body) {
        if let Some(first) = e.errors.first() {
            return format!("{} {}", first.code, first.message)
                .trim()
                .to_string();
        }
    }
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="http://127.0.0.1:9/t""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate x"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn loopback_detection() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example",
            "[::2]:80",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn credentials_only_for_their_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},
                "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let opts = RegistryOptions {
            auth_file: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            load_credentials(&opts, "127.0.0.1:5000").unwrap(),
            Some(Credentials {
                user: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            load_credentials(&opts, "docker.io").unwrap().unwrap().user,
            "bob"
        );
        assert_eq!(load_credentials(&opts, "127.0.0.1:5001").unwrap(), None);
        assert_eq!(load_credentials(&opts, "127.0.0.1").unwrap(), None);
        std::fs::write(&path, "{not json").unwrap();
        let err = load_credentials(&opts, "127.0.0.1:5000").unwrap_err();
        assert!(
            err.to_string().starts_with("registry credentials "),
            "{err}"
        );
    }

    #[test]
    fn upload_locations() {
        let d = "sha256:ab";
        for (location, want) in [
            (
                "/v2/a/blobs/uploads/u1",
                "http://r:5000/v2/a/blobs/uploads/u1?digest=sha256%3Aab",
            ),
            (
                "/v2/a/blobs/uploads/u1?_state=x",
                "http://r:5000/v2/a/blobs/uploads/u1?_state=x&digest=sha256%3Aab",
            ),
            (
                "https://cdn.example/up?sig=1",
                "https://cdn.example/up?sig=1&digest=sha256%3Aab",
            ),
        ] {
            assert_eq!(upload_url("http://r:5000", location, d), want, "{location}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(error_message("plain\nmore"), "plain");
    }
}
