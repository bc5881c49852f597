//! The image store against real components: Debian's `docker-registry` on 127.0.0.1 (one
//! anonymous, one with htpasswd basic auth) filled by `skopeo copy` from layouts built here,
//! skopeo-written oci-archive and docker-archive files, and small in-test HTTP servers for the
//! failure modes a real registry will not produce (bearer tokens, wrong digests, truncated blobs,
//! a registry that never answers). Needs root (layers keep their owners), docker-registry,
//! skopeo and htpasswd; each test skips, saying why, when something is missing.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::registry::{have, sha, skopeo, Registry};

use berth::image::{ImageError, ImageRef, ImageStore, RegistryOptions, RegistryRef, ResolvedImage};

fn skip(test: &str, tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root");
        return true;
    }
    for t in tools {
        if !have(t) {
            eprintln!("skipping {test}: {t} not installed");
            return true;
        }
    }
    false
}

fn push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        args.push("--dest-creds");
        args.push(c);
    }
    args.push(&src);
    args.push(&dst);
    skopeo(&args);
}

/// Two layouts: `base` (busybox, one layer) and `two` (the same layer plus one that deletes
/// /etc/group and adds /etc/extra).
struct Images {
    dir: tempfile::TempDir,
}

impl Images {
    fn build() -> Images {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox-image.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&base)
            .arg("base")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "busybox-image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let two = dir.path().join("two");
        fs::create_dir_all(two.join("blobs/sha256")).unwrap();
        for e in fs::read_dir(base.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), two.join("blobs/sha256").join(e.file_name())).unwrap();
        }
        fs::copy(base.join("oci-layout"), two.join("oci-layout")).unwrap();
        let put = |bytes: &[u8]| {
            let d = sha(bytes);
            fs::write(two.join("blobs/sha256").join(&d["sha256:".len()..]), bytes).unwrap();
            (d, bytes.len())
        };
        let blob =
            |d: &str| fs::read(base.join("blobs/sha256").join(&d["sha256:".len()..])).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(base.join("index.json")).unwrap()).unwrap();
        let mdigest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let mut manifest: serde_json::Value = serde_json::from_slice(&blob(&mdigest)).unwrap();
        let cdigest = manifest["config"]["digest"].as_str().unwrap().to_string();
        let mut config: serde_json::Value = serde_json::from_slice(&blob(&cdigest)).unwrap();

        // The extra layer: a whiteout for /etc/group and a new file.
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("etc/.wh.group", &b""[..]), ("etc/extra", &b"extra\n"[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, name, data).unwrap();
        }
        let tar_bytes = b.into_inner().unwrap();
        let diff_id = sha(&tar_bytes);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar_bytes).unwrap();
        let (ldigest, lsize) = put(&gz.finish().unwrap());
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(diff_id.into());
        config["history"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"created_by": "remove /etc/group, add /etc/extra"}));
        let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
        manifest["config"]["digest"] = cd.into();
        manifest["config"]["size"] = cs.into();
        manifest["layers"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": ldigest, "size": lsize}));
        let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "two"}}]});
        fs::write(two.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
        Images { dir }
    }

    fn base(&self) -> PathBuf {
        self.dir.path().join("base")
    }
    fn two(&self) -> PathBuf {
        self.dir.path().join("two")
    }
}

fn reg(s: &str) -> RegistryRef {
    match ImageRef::parse(s).unwrap() {
        ImageRef::Registry(r) => r,
        other => panic!("{other:?}"),
    }
}

fn tmp_is_empty(root: &Path) -> bool {
    fs::read_dir(root.join("tmp")).unwrap().next().is_none()
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn pull_from_registry_shares_layers_and_resolves_offline() {
    if skip("pull_from_registry", &["docker-registry", "skopeo"]) {
        return;
    }
    let images = Images::build();
    let mut registry = Registry::start(None);
    let host = registry.host();
    push(&images.base(), "base", &format!("{host}/bb:base"), None);
    push(&images.two(), "two", &format!("{host}/bb:two"), None);

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let base_ref = ImageRef::parse(&format!("{host}/bb:base")).unwrap();
    let (img, stats) = store.resolve_with_stats(&base_ref).unwrap();
    assert_eq!((stats.fetched, stats.unpacked, stats.reused), (1, 1, 0));
    assert!(stats.network);
    assert_eq!(img.layers.len(), 1);
    assert!(img.layers[0].join("bin/busybox").is_file());
    assert_eq!(img.config.cmd, Some(vec!["sh".to_string()]));

    // The second image shares the base layer: only its new layer is downloaded.
    let (rec2, stats2) = store.pull(&reg(&format!("{host}/bb:two"))).unwrap();
    assert_eq!((stats2.fetched, stats2.unpacked, stats2.reused), (1, 1, 1));
    assert_eq!(rec2.layers.len(), 2);
    assert_eq!(rec2.history.len(), 2);
    let two_ref = ImageRef::parse(&format!("{host}/bb:two")).unwrap();
    let img2 = store.resolve(&two_ref).unwrap();
    assert_eq!(
        img2.layers[0], img.layers[0],
        "the base layer dir is shared"
    );
    let wh = fs::symlink_metadata(img2.layers[1].join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "the deletion is a whiteout"
    );
    assert_eq!(
        fs::read(img2.layers[1].join("etc/extra")).unwrap(),
        b"extra\n"
    );
    assert_eq!(count(&root.path().join("layers")), 2);
    // Blobs: 2 layers, 2 configs, 2 manifests.
    assert_eq!(count(&root.path().join("blobs/sha256")), 6);

    // Pinned by digest in a fresh store: both layers come over the network.
    let root_b = tempfile::tempdir().unwrap();
    let store_b = ImageStore::open(root_b.path()).unwrap();
    let pinned = ImageRef::parse(&format!("{host}/bb@{}", rec2.digest)).unwrap();
    let (img_b, stats_b) = store_b.resolve_with_stats(&pinned).unwrap();
    assert_eq!((stats_b.fetched, stats_b.unpacked), (2, 2));
    assert_eq!(img_b.digest.as_deref(), Some(rec2.digest.as_str()));

    // A tag the registry does not have: a clear error, nothing left behind.
    let err = store
        .resolve(&ImageRef::parse(&format!("{host}/bb:nope")).unwrap())
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("not found in registry"), "{err}");
    assert!(tmp_is_empty(root.path()));

    // Warm resolves never ask the registry: stop it and resolve by tag and by digest again.
    registry.stop();
    let start = Instant::now();
    let (again, warm) = store.resolve_with_stats(&two_ref).unwrap();
    eprintln!("warm registry resolve took {:?}", start.elapsed());
    assert!(!warm.network);
    assert_eq!((warm.fetched, warm.unpacked, warm.reused), (0, 0, 2));
    assert_eq!(again, img2);
    let by_digest = ImageRef::parse(&format!("{host}/bb@{}", rec2.digest)).unwrap();
    assert_eq!(store.resolve(&by_digest).unwrap(), img2);
    // But an explicit pull does ask, and says the registry is unreachable.
    let err = store.pull(&reg(&format!("{host}/bb:two"))).unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");

    // Records: tag, rm, prune.
    let names: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        names,
        vec![format!("{host}/bb:base"), format!("{host}/bb:two")]
    );
    store
        .tag(&format!("{host}/bb:two"), &reg("localhost/mine:1"))
        .unwrap();
    assert_eq!(store.find("localhost/mine:1").unwrap().digest, rec2.digest);
    assert_eq!(store.find(&rec2.digest[7..19]).unwrap().digest, rec2.digest);
    store.remove(&format!("{host}/bb:two")).unwrap();
    let report = store.prune(&[]).unwrap();
    assert_eq!(
        (report.blobs, report.layers),
        (0, 0),
        "mine:1 still holds them"
    );
    store.remove("localhost/mine:1").unwrap();
    let report = store.prune(&[]).unwrap();
    assert_eq!((report.blobs, report.layers), (3, 1));
    assert_eq!(count(&root.path().join("layers")), 1);
    // A layer in use by a container survives a prune even without a record.
    store.remove(&format!("{host}/bb:base")).unwrap();
    let report = store.prune(&[img.layers[0].clone()]).unwrap();
    assert_eq!((report.blobs, report.layers), (3, 0));
    assert!(img.layers[0].is_dir());
    assert!(store.images().unwrap().is_empty());
    assert!(store.find("localhost/mine:1").is_err());
}

#[test]
fn basic_auth_registry() {
    if skip(
        "basic_auth_registry",
        &["docker-registry", "skopeo", "htpasswd"],
    ) {
        return;
    }
    let images = Images::build();
    let registry = Registry::start(Some(("alice", "s3cret")));
    let host = registry.host();
    push(
        &images.base(),
        "base",
        &format!("{host}/bb:base"),
        Some("alice:s3cret"),
    );

    let dir = tempfile::tempdir().unwrap();
    let write_auth = |name: &str, user: &str, pw: &str, key: &str| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        let p = dir.path().join(name);
        fs::write(&p, format!(r#"{{"auths":{{"{key}":{{"auth":"{b64}"}}}}}}"#)).unwrap();
        p
    };
    let good = write_auth("good.json", "alice", "s3cret", &host);
    let wrong = write_auth("wrong.json", "alice", "nope", &host);
    let other = write_auth("other.json", "alice", "s3cret", "127.0.0.1:1");
    let r = ImageRef::parse(&format!("{host}/bb:base")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let open = |auth: &Path| {
        ImageStore::open(root.path())
            .unwrap()
            .with_registry_options(RegistryOptions {
                auth_file: Some(auth.to_path_buf()),
                ..Default::default()
            })
    };
    // No credentials for this registry (they are filed under another): refused, clearly.
    let err = open(&other).resolve(&r).unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("none for it"), "{err}");
    let err = open(&wrong).resolve(&r).unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    assert!(
        err.to_string().contains("credentials were refused"),
        "{err}"
    );
    assert!(tmp_is_empty(root.path()));
    assert_eq!(count(&root.path().join("layers")), 0);
    let img = open(&good).resolve(&r).unwrap();
    assert!(img.layers[0].join("bin/busybox").is_file());

    // The command line reads $REGISTRY_AUTH_FILE.
    let root2 = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(root2.path())
        .args(["image", "pull", &format!("{host}/bb:base")])
        .env("REGISTRY_AUTH_FILE", &good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{host}/bb:base sha256:")),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(root2.path())
        .args(["image", "ls", "--json"])
        .output()
        .unwrap();
    let recs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(recs[0]["name"], format!("{host}/bb:base"));
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(root2.path())
        .args(["image", "pull", &format!("{host}/bb:base")])
        .env("REGISTRY_AUTH_FILE", &wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials were refused"), "{stderr}");

    // A credential helper named for the registry (`credHelpers`) answers instead of `auths`;
    // one that has nothing for it lets `auths` answer.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n\
             if [ \"$server\" = {host} ]; then echo '{{\"ServerURL\":\"{host}\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}'; \
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    let empty = bin.join("docker-credential-empty");
    fs::write(
        &empty,
        "#!/bin/sh\necho 'credentials not found in native keychain'; exit 1\n",
    )
    .unwrap();
    for h in [&helper, &empty] {
        fs::set_permissions(h, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_helper = |name: &str, body: String| {
        let p = dir.path().join(name);
        fs::write(&p, body).unwrap();
        let root = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(root.path())
            .args(["image", "pull", &format!("{host}/bb:base")])
            .env("REGISTRY_AUTH_FILE", &p)
            .env("PATH", &path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let wrong_auths = fs::read_to_string(&wrong).unwrap();
    let (code, err) = with_helper(
        "helper.json",
        format!(
            "{{\"credHelpers\":{{\"{host}\":\"berthtest\"}},{}",
            &wrong_auths[1..]
        ),
    );
    assert_eq!(code, Some(0), "{err}");
    let good_auths = fs::read_to_string(&good).unwrap();
    let (code, err) = with_helper(
        "store.json",
        format!("{{\"credsStore\":\"empty\",{}", &good_auths[1..]),
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = with_helper(
        "missing.json",
        format!("{{\"credHelpers\":{{\"{host}\":\"nosuchhelper\"}}}}"),
    );
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("docker-credential-nosuchhelper"), "{err}");
}

#[test]
fn archives_import_and_resolve() {
    if skip("archives_import_and_resolve", &["skopeo"]) {
        return;
    }
    let images = Images::build();
    let dir = tempfile::tempdir().unwrap();
    let oci_tar = dir.path().join("two-oci.tar");
    let docker_tar = dir.path().join("two-docker.tar");
    let src = format!("oci:{}:two", images.two().display());
    skopeo(&[
        "copy",
        &src,
        &format!("oci-archive:{}:two", oci_tar.display()),
    ]);
    skopeo(&[
        "copy",
        &src,
        &format!(
            "docker-archive:{}:example.org/team/two:v2",
            docker_tar.display()
        ),
    ]);

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let (rec, stats) = store.import(&oci_tar.display().to_string(), None).unwrap();
    assert_eq!(rec.name, "localhost/two-oci:two");
    assert_eq!((stats.unpacked, stats.reused), (2, 0));
    let (drec, dstats) = store
        .import(&docker_tar.display().to_string(), None)
        .unwrap();
    assert_eq!(drec.name, "example.org/team/two:v2");
    assert_eq!(
        drec.chain_ids, rec.chain_ids,
        "same layers, whatever the archive"
    );
    assert_eq!((dstats.unpacked, dstats.reused), (0, 2));
    assert_eq!(drec.config, rec.config);

    // An OCI layout dir imports too, named explicitly.
    let (lrec, _) = store
        .import(
            &images.base().display().to_string(),
            Some(&reg("localhost/base:1")),
        )
        .unwrap();
    assert_eq!(lrec.name, "localhost/base:1");
    assert_eq!(lrec.chain_ids[0], rec.chain_ids[0]);

    // As spec references: imported once, then reused while the file is unchanged.
    let r = ImageRef::parse(&format!("docker-archive:{}", docker_tar.display())).unwrap();
    let (img, s1) = store.resolve_with_stats(&r).unwrap();
    assert_eq!(s1.fetched, 0, "layers already unpacked");
    assert_eq!(img.layers.len(), 2);
    let (_, s2) = store.resolve_with_stats(&r).unwrap();
    assert_eq!((s2.unpacked, s2.reused), (0, 2));
    let r = ImageRef::parse(&format!("oci-archive:{}:two", oci_tar.display())).unwrap();
    assert_eq!(store.resolve(&r).unwrap().layers, img.layers);

    // A truncated archive: a one-line error naming it, nothing left behind, store usable.
    let bytes = fs::read(&oci_tar).unwrap();
    let cut = dir.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let root2 = tempfile::tempdir().unwrap();
    let store2 = ImageStore::open(root2.path()).unwrap();
    let err = store2.import(&cut.display().to_string(), None).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n') && msg.contains("cut.tar"), "{msg}");
    assert!(tmp_is_empty(root2.path()));
    assert!(store2.images().unwrap().is_empty());
    // Garbage is refused as not an archive.
    fs::write(&cut, b"not a tar at all").unwrap();
    assert!(store2.import(&cut.display().to_string(), None).is_err());
    // And the store still works.
    store2.import(&oci_tar.display().to_string(), None).unwrap();
}

// ---- a scripted registry for failure modes ----

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes (with the full Content-Length).
    cut: Option<usize>,
}

fn reply(status: u16, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body,
        cut: None,
    }
}

type Handler = dyn Fn(&str, &[(String, String)]) -> Reply + Send + Sync;

/// Serves `handler`'s replies on 127.0.0.1 (one request per connection); returns the port.
fn serve(handler: Arc<Handler>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let h = handler.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).is_err() || l.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.trim().split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let rep = h(&path, &headers);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    rep.status,
                    rep.body.len()
                );
                for (k, v) in &rep.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = conn.write_all(head.as_bytes());
                let n = rep.cut.unwrap_or(rep.body.len());
                let _ = conn.write_all(&rep.body[..n]);
            });
        }
    });
    port
}

/// A one-layer image as registry documents: (manifest, config, layer blob).
fn tiny_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
    let tar_bytes = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar_bytes)]}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": sha(&layer), "size": layer.len()}]}))
    .unwrap();
    (manifest, config, layer)
}

fn scripted(bad_layer: Option<&'static str>, bearer: bool) -> u16 {
    let (manifest, config, layer) = tiny_image();
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let pc = port_cell.clone();
    let handler: Arc<Handler> = Arc::new(move |path, headers| {
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        if path.starts_with("/token") {
            assert!(
                path.contains("scope=repository%3Ateam%2Ftiny%3Apull"),
                "{path}"
            );
            return reply(200, br#"{"token":"t0k3n"}"#.to_vec());
        }
        if bearer && auth != Some("Bearer t0k3n") {
            let mut r = reply(401, b"{}".to_vec());
            r.headers.push((
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="http://127.0.0.1:{}/token",service="test""#,
                    pc.get().unwrap()
                ),
            ));
            return r;
        }
        if path.starts_with("/v2/team/tiny/manifests/") {
            let mut r = reply(200, manifest.clone());
            r.headers.push((
                "Content-Type".into(),
                "application/vnd.docker.distribution.manifest.v2+json".into(),
            ));
            return r;
        }
        if path == format!("/v2/team/tiny/blobs/{}", sha(&config)) {
            return reply(200, config.clone());
        }
        if path == format!("/v2/team/tiny/blobs/{}", sha(&layer)) {
            let mut r = reply(200, layer.clone());
            match bad_layer {
                Some("truncated") => r.cut = Some(layer.len() / 2),
                Some("corrupt") => {
                    let n = r.body.len();
                    r.body[n - 5] ^= 0x55; // inside the gzip trailer: tar unpacks, digest fails
                }
                _ => {}
            }
            return r;
        }
        reply(
            404,
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#.to_vec(),
        )
    });
    let port = serve(handler);
    port_cell.set(port).unwrap();
    port
}

fn quick() -> RegistryOptions {
    RegistryOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        auth_file: Some(PathBuf::from("/nonexistent/auth.json")),
        ..Default::default()
    }
}

fn resolve_tiny(port: u16, root: &Path) -> Result<ResolvedImage, ImageError> {
    ImageStore::open(root)
        .unwrap()
        .with_registry_options(quick())
        .resolve(&ImageRef::parse(&format!("127.0.0.1:{port}/team/tiny:1")).unwrap())
}

#[test]
fn bearer_token_and_bad_blobs() {
    if skip("bearer_token_and_bad_blobs", &[]) {
        return;
    }
    // Bearer: 401 with a challenge, a token from the realm, then the pull.
    let root = tempfile::tempdir().unwrap();
    let img = resolve_tiny(scripted(None, true), root.path()).unwrap();
    assert_eq!(fs::read(img.layers[0].join("hello")).unwrap(), b"hi\n");
    assert_eq!(img.config.cmd, Some(vec!["/hello".to_string()]));

    for (kind, want) in [("truncated", "got"), ("corrupt", "hashes to")] {
        let root = tempfile::tempdir().unwrap();
        let err = resolve_tiny(scripted(Some(kind), false), root.path()).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains(want) || msg.contains("layer"), "{kind}: {msg}");
        assert!(tmp_is_empty(root.path()), "{kind}: temp files left");
        assert_eq!(count(&root.path().join("layers")), 0, "{kind}");
        assert_eq!(count(&root.path().join("images")), 0, "{kind}");
        // Only the verified config may have been stored, never the bad layer.
        assert!(count(&root.path().join("blobs/sha256")) <= 1, "{kind}");
        // The store stays usable.
        resolve_tiny(scripted(None, false), root.path()).unwrap();
    }
}

#[test]
fn hanging_registry_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c); // accept, never answer
        }
    });
    let root = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = resolve_tiny(port, root.path()).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("timed out"),
        "{err}"
    );
    assert!(tmp_is_empty(root.path()));
}

#[test]
fn login_and_logout_write_the_credentials_file() {
    if skip("login_and_logout", &["docker-registry", "htpasswd"]) {
        return;
    }
    let registry = Registry::start(Some(("alice", "s3cret")));
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    fs::write(&auth, r#"{"credHelpers":{"other.example":"pass"}}"#).unwrap();
    let berth = |args: &[&str], input: &str| {
        let mut c = std::process::Command::new(common::berth_bin());
        c.env("REGISTRY_AUTH_FILE", &auth).args(args);
        common::output_with_input(&mut c, input.as_bytes())
    };
    let bad = berth(
        &["login", "-u", "alice", "--password-stdin", &host],
        "wrong\n",
    );
    assert!(!bad.status.success());
    assert!(
        common::stderr(&bad).contains("refused the login (HTTP 401)"),
        "{}",
        common::stderr(&bad)
    );
    assert!(
        !fs::read_to_string(&auth).unwrap().contains("auths"),
        "a refused login writes nothing"
    );

    let good = berth(
        &["login", "-u", "alice", "--password-stdin", &host],
        "s3cret\n",
    );
    assert!(good.status.success(), "{}", common::stderr(&good));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&auth).unwrap()).unwrap();
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    assert_eq!(v["auths"][&host]["auth"], want.as_str());
    assert_eq!(
        v["credHelpers"]["other.example"], "pass",
        "other keys are kept"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&auth).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = berth(&["logout", &host], "");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&auth).unwrap()).unwrap();
    assert!(v["auths"].get(&host).is_none());
    assert!(
        !berth(&["logout", &host], "").status.success(),
        "no login left"
    );
}

/// `berth --root ROOT ARGS...` with `REGISTRY_AUTH_FILE`: (exit code, stdout, stderr).
fn berth_at(root: &Path, auth: Option<&Path>, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--root").arg(root).args(args);
    if let Some(a) = auth {
        cmd.env("REGISTRY_AUTH_FILE", a);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn push_sends_the_image_byte_for_byte() {
    if skip("push", &["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let images = Images::build();
    let registry = Registry::start(None);
    let host = registry.host();
    let root = tempfile::tempdir().unwrap();
    let two = images.two().display().to_string();
    let (code, out, err) = berth_at(
        root.path(),
        None,
        &["image", "import", &two, "--name", "localhost/two:1"],
    );
    assert_eq!(code, Some(0), "{err}");
    let digest = out.split_whitespace().nth(1).unwrap().to_string();

    // All three blobs go up, then the manifest, under the same digest skopeo sees.
    let dest = format!("{host}/pushed/two:1");
    let (code, out, err) = berth_at(
        root.path(),
        None,
        &["image", "push", "localhost/two:1", &dest],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{dest} {digest}\n"));
    assert!(err.contains("3 blobs uploaded"), "{err}");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"], digest.as_str());

    // Pulled back into an empty store it is the same image, whiteout and all.
    let back = tempfile::tempdir().unwrap();
    let img = ImageStore::open(back.path())
        .unwrap()
        .resolve(&ImageRef::parse(&dest).unwrap())
        .unwrap();
    assert_eq!(img.digest.as_deref(), Some(digest.as_str()));
    let top = img.layers.last().unwrap();
    assert_eq!(
        fs::read_to_string(top.join("etc/extra")).unwrap(),
        "extra\n"
    );

    // Again, and to another tag of the same repository: nothing is sent twice.
    let (code, out, err) = berth_at(
        root.path(),
        None,
        &[
            "image",
            "push",
            "-q",
            "localhost/two:1",
            &format!("{host}/pushed/two:2"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{digest}\n"));
    assert!(
        err.contains("0 blobs uploaded") && err.contains("3 already there"),
        "{err}"
    );

    // Errors: an image the store lacks, a destination that is not a registry reference.
    let (code, _, err) = berth_at(
        root.path(),
        None,
        &["image", "push", "localhost/nope:1", &dest],
    );
    assert_eq!(code, Some(125));
    assert!(err.contains("localhost/nope:1"), "{err}");
    let (code, _, err) = berth_at(
        root.path(),
        None,
        &["image", "push", "localhost/two:1", "oci:/tmp/x"],
    );
    assert_eq!(code, Some(125));
    assert!(err.contains("not a registry reference"), "{err}");

    // A registry with basic auth: refused without credentials, taken with them.
    let locked = Registry::start(Some(("alice", "s3cret")));
    let lhost = locked.host();
    let ldest = format!("{lhost}/team/two:1");
    let (code, _, err) = berth_at(
        root.path(),
        None,
        &["image", "push", "localhost/two:1", &ldest],
    );
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("credentials file has none for it"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = berth_at(
        root.path(),
        Some(&dir.path().join("auth.json")),
        &["login", &lhost, "-u", "alice", "-p", "s3cret"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = berth_at(
        root.path(),
        Some(&dir.path().join("auth.json")),
        &["image", "push", "localhost/two:1", &ldest],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{ldest} {digest}\n"));
    assert!(tmp_is_empty(root.path()));
}
