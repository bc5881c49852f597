//! `berth login` and `berth logout`: the `auths` map of the credentials file the registry code
//! reads (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), as
//! `docker login` and `podman login` write it. A login is checked against the registry's
//! `/v2/` first (basic auth, or a bearer token fetched with it); the file is rewritten
//! atomically, mode 0600, keeping every other key it has.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::registry::{auth_file_path, is_loopback, parse_challenge, Challenge};
use super::{ImageError, RegistryOptions};

fn file_err(path: &Path, message: impl Into<String>) -> ImageError {
    ImageError::AuthFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Value, ImageError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| file_err(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(file_err(path, e.to_string())),
    }
}

fn write(path: &Path, v: &Value) -> Result<(), ImageError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_err(path, e.to_string()))?;
    let tmp = dir.join(format!(".config.json.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(v).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| file_err(path, e.to_string()))
}

/// Asks `registry`'s `/v2/` whether `user` and `password` are accepted.
fn check(opts: &RegistryOptions, registry: &str, user: &str, password: &str) -> Result<(), String> {
    let plain = is_loopback(registry) || opts.insecure.iter().any(|i| i == registry);
    let host = if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    };
    let base = format!("{}://{host}", if plain { "http" } else { "https" });
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(opts.connect_timeout)
        .timeout(Duration::from_secs(30))
        .build();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let denied = |code: u16| format!("{base}/v2/ refused the login (HTTP {code})");
    match agent
        .get(&format!("{base}/v2/"))
        .set("Authorization", &basic)
        .call()
    {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(401, resp)) => {
            // A token registry: the login is good when its realm hands out a token for it.
            let Some(Challenge::Bearer { realm, service, .. }) =
                resp.header("www-authenticate").and_then(parse_challenge)
            else {
                return Err(denied(401));
            };
            let mut url = realm;
            if let Some(service) = service {
                url.push_str(&format!("?service={service}"));
            }
            match agent.get(&url).set("Authorization", &basic).call() {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, _)) => Err(denied(code)),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
        Err(ureq::Error::Status(code, _)) => Err(denied(code)),
        Err(e) => Err(format!("{base}/v2/: {e}")),
    }
}

/// Checks the login, then records it for `registry`; returns the file written.
pub fn login(
    opts: &RegistryOptions,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<PathBuf, ImageError> {
    let path = auth_file_path(opts).ok_or_else(|| {
        file_err(
            Path::new("~/.docker/config.json"),
            "no HOME, DOCKER_CONFIG or REGISTRY_AUTH_FILE",
        )
    })?;
    check(opts, registry, user, password).map_err(|m| file_err(&path, m))?;
    let mut v = read(&path)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| file_err(&path, "not a JSON object"))?;
    let auths = obj.entry("auths").or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    auths[registry] = json!({
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    });
    write(&path, &v)?;
    Ok(path)
}

/// Forgets the login for `registry`; false when there was none.
pub fn logout(opts: &RegistryOptions, registry: &str) -> Result<bool, ImageError> {
    let Some(path) = auth_file_path(opts) else {
        return Ok(false);
    };
    let mut v = read(&path)?;
    let removed = v
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .map(|a| a.remove(registry).is_some())
        .unwrap_or(false);
    if removed {
        write(&path, &v)?;
    }
    Ok(removed)
}
