//! Crash safety of pulls: `berth image pull` from a docker-registry on 127.0.0.1 is killed with
//! SIGKILL at 20 seeded-random moments while it fetches and unpacks a busybox image with two
//! more layers (several MB of random data, and many small files). After each kill no layer dir
//! under `<root>/layers` differs from a reference pull, no blob differs from its digest, no record
//! names a missing layer, and `<root>/tmp` holds only the dead process's temp entries, which the
//! next `ImageStore::open` removes. A last pull completes and a container from it reads the
//! random file intact. Needs root, docker-registry and skopeo (skips, saying why, without them).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::image::{ImageRecord, ImageStore};
use common::registry::{have, sha, Registry};
use common::*;
use sha2::{Digest, Sha256};

const KILLS: usize = 20;
const RANDOM_BYTES: usize = 8 << 20;
const SMALL_FILES: usize = 400;

/// xorshift64*: a small seeded generator, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Adds a gzip layer made of `tar_bytes` on top of the image tagged `tag` in `layout`.
fn add_layer(layout: &Path, tag: &str, tar_bytes: &[u8], created_by: &str) {
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let d = sha(bytes);
        fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        (d, bytes.len())
    };
    let blob = |d: &str| fs::read(blobs.join(&d["sha256:".len()..])).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&blob(&mdigest)).unwrap();
    let cdigest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&blob(&cdigest)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar_bytes).unwrap();
    let (ldigest, lsize) = put(&gz.finish().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(sha(tar_bytes).into());
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "created_by": created_by }));
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
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

fn file_header(size: usize, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The image layout: busybox, then a layer with one big random file, then one with many small
/// files, a symlink, a hardlink and a whiteout. Returns the layout dir and the random file's
/// sha256 (hex).
fn build_layout(dir: &Path, rng: &mut Rng) -> (PathBuf, String) {
    let layout = dir.join("layout");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox-image.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&layout)
        .arg("v1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "busybox-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut data = vec![0u8; RANDOM_BYTES];
    for chunk in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let random_sha = hex::encode(Sha256::digest(&data));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = file_header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, "data", std::io::empty()).unwrap();
    b.append_data(
        &mut file_header(data.len(), 0o644),
        "data/random.bin",
        &data[..],
    )
    .unwrap();
    add_layer(&layout, "v1", &b.into_inner().unwrap(), "add random data");

    let mut b = tar::Builder::new(Vec::new());
    let mut h = file_header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, "small", std::io::empty()).unwrap();
    for i in 0..SMALL_FILES {
        let body = format!("file {i} {}\n", rng.next()).repeat(1 + (i % 50));
        b.append_data(
            &mut file_header(body.len(), 0o600 + (i as u32 % 2) * 0o40),
            format!("small/f{i:04}"),
            body.as_bytes(),
        )
        .unwrap();
    }
    let mut h = file_header(0, 0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, "small/link", "../data/random.bin")
        .unwrap();
    let mut h = file_header(0, 0o600);
    h.set_entry_type(tar::EntryType::Link);
    b.append_link(&mut h, "small/hard", "small/f0001").unwrap();
    let mut h = file_header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, "etc", std::io::empty()).unwrap();
    b.append_data(
        &mut file_header(0, 0o644),
        "etc/.wh.group",
        std::io::empty(),
    )
    .unwrap();
    add_layer(&layout, "v1", &b.into_inner().unwrap(), "add small files");
    (layout, random_sha)
}

/// Everything about a layer dir that an unpack decides, path by path (symlinks not followed).
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!(
                    "file {} {} nlink={}",
                    m.len(),
                    sha(&fs::read(&p).unwrap()),
                    m.nlink()
                )
            } else if ft.is_char_device() {
                format!("chr {}", m.rdev())
            } else {
                "other".to_string()
            };
            let attrs = format!(
                "{what} mode={:o} {}:{} mtime={}",
                m.mode(),
                m.uid(),
                m.gid(),
                // A whiteout's times are the unpack's, not the tar's.
                if ft.is_symlink() || ft.is_char_device() {
                    0
                } else {
                    m.mtime()
                }
            );
            out.insert(rel, attrs);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts two maps are equal, naming the first few differences.
fn assert_same<V: PartialEq + std::fmt::Debug>(
    got: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
    what: &str,
) {
    if got == want {
        return;
    }
    let diffs: Vec<String> = want
        .keys()
        .chain(got.keys())
        .filter(|k| got.get(*k) != want.get(*k))
        .take(5)
        .map(|k| format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    panic!("{what} differ from the reference unpack: {diffs:#?}");
}

fn pull_cmd(root: &Path, reference: &str) -> Command {
    let mut c = Command::new(berth_bin());
    c.arg("--root")
        .arg(root)
        .args(["image", "pull", reference])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Checks the store under `root` after a killed pull by `pid` (see the module docs).
fn check_store(root: &Path, reference: &BTreeMap<String, BTreeMap<String, String>>, pid: i32) {
    let layers = root.join("layers");
    for e in fs::read_dir(&layers).into_iter().flatten() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let want = reference
            .get(&name)
            .unwrap_or_else(|| panic!("unknown layer dir {name} under {}", layers.display()));
        assert!(e.file_type().unwrap().is_dir(), "{name} is not a dir");
        let got = describe_tree(&e.path());
        assert_same(&got, want, &format!("layer {name}"));
    }
    for e in fs::read_dir(root.join("blobs/sha256"))
        .into_iter()
        .flatten()
    {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(
            sha(&bytes),
            format!("sha256:{}", e.file_name().to_string_lossy()),
            "blob {} does not match its name",
            e.path().display()
        );
    }
    for e in fs::read_dir(root.join("images")).into_iter().flatten() {
        let e = e.unwrap();
        let rec: ImageRecord = serde_json::from_slice(&fs::read(e.path()).unwrap())
            .unwrap_or_else(|err| panic!("record {}: {err}", e.path().display()));
        for c in &rec.chain_ids {
            assert!(
                layers.join(&c["sha256:".len()..]).is_dir(),
                "record {} names missing layer {c}",
                rec.name
            );
        }
        for d in [&rec.digest, &rec.config_digest] {
            assert!(
                root.join("blobs/sha256")
                    .join(&d["sha256:".len()..])
                    .is_file(),
                "record {} names missing blob {d}",
                rec.name
            );
        }
    }
    let tmp = root.join("tmp");
    let left: Vec<String> = fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &left {
        let ours = [format!("layer-{pid}-"), format!("blob-{pid}-")];
        assert!(
            ours.iter().any(|p| name.starts_with(p.as_str())),
            "unexpected temp entry {name} (the killed pull was {pid})"
        );
    }
    assert!(!pid_alive(pid));
    ImageStore::open(root).unwrap();
    let after: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert!(
        after.is_empty(),
        "ImageStore::open left {} temp entries of {left:?}",
        after.len()
    );
}

#[test]
fn killed_pulls_never_leave_half_layers() {
    if !is_root() {
        eprintln!("skipping killed pulls: needs root");
        return;
    }
    for t in ["docker-registry", "skopeo"] {
        if !have(t) {
            eprintln!("skipping killed pulls: {t} not installed");
            return;
        }
    }
    let seed: u64 = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b347);
    eprintln!("seed {seed} (set BERTH_CRASH_SEED to repeat another run)");
    let mut rng = Rng(seed | 1);
    let env = TestEnv::new("crash");
    let (layout, random_sha) = build_layout(env.dir.path(), &mut rng);
    let registry = Registry::start(None);
    let reference = format!("127.0.0.1:{}/crash/big:v1", registry.port);
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The reference: a pull nobody interrupts, into its own root.
    let ref_root = env.dir.path().join("reference");
    let start = Instant::now();
    let out = pull_cmd(&ref_root, &reference).output().unwrap();
    let full_pull = start.elapsed();
    assert!(
        out.status.success(),
        "reference pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = BTreeMap::new();
    for e in fs::read_dir(ref_root.join("layers")).unwrap() {
        let e = e.unwrap();
        expected.insert(
            e.file_name().to_string_lossy().into_owned(),
            describe_tree(&e.path()),
        );
    }
    assert_eq!(expected.len(), 3, "three layers in the reference pull");
    eprintln!("an uninterrupted pull takes {full_pull:?}");

    // Kill moments spread over the whole pull (at least 0-300 ms): a debug build pulls slower.
    let window = (full_pull.as_millis() as u64 * 6 / 5).max(300);
    let root = env.root();
    let (mut killed, mut finished) = (0, 0);
    // Rounds go on until KILLS pulls were killed before they finished (a pull that finished
    // first does not count; a bound keeps a too-fast machine from looping for ever).
    let mut round = 0;
    while killed < KILLS && round < KILLS * 4 {
        round += 1;
        let delay = Duration::from_millis(rng.below(window + 1));
        let mut child = pull_cmd(&root, &reference).spawn().unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(delay);
        let done_before = child.try_wait().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        match done_before {
            Some(st) => {
                assert!(st.success(), "round {round}: pull failed on its own: {st}");
                finished += 1;
            }
            None => killed += 1,
        }
        let layers_now = fs::read_dir(root.join("layers"))
            .map(|d| d.count())
            .unwrap_or(0);
        eprintln!("round {round}: killed after {delay:?} ({status}), {layers_now} layers complete");
        if root.exists() {
            check_store(&root, &expected, pid);
        }
        // A pull that got to the end would make the rest of the rounds no-ops: start over.
        if done_before.is_some() || layers_now == expected.len() {
            fs::remove_dir_all(&root).unwrap();
        }
    }
    eprintln!("{killed} pulls killed midway, {finished} finished before the kill");
    assert_eq!(
        killed, KILLS,
        "too few pulls were interrupted in {round} rounds"
    );

    // Then a pull that runs to the end, and a container from the image.
    let out = pull_cmd(&root, &reference).output().unwrap();
    assert!(
        out.status.success(),
        "final pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = BTreeMap::new();
    for e in fs::read_dir(root.join("layers")).unwrap() {
        let e = e.unwrap();
        got.insert(
            e.file_name().to_string_lossy().into_owned(),
            describe_tree(&e.path()),
        );
    }
    assert_same(&got, &expected, "final layers");
    assert!(fs::read_dir(root.join("tmp")).unwrap().next().is_none());

    let spec_dir = env.dir.path().join("specs");
    fs::create_dir_all(&spec_dir).unwrap();
    let spec = spec_dir.join("reader.toml");
    fs::write(
        &spec,
        format!(
            "image = {reference:?}\ncommand = [\"sh\", \"-c\", \"sha256sum /data/random.bin; head -n1 /small/hard | cut -d' ' -f1,2; [ -e /etc/group ] && echo group:present || echo group:absent\"]\n[network]\nmode = \"none\"\n"
        ),
    )
    .unwrap();
    let out = env.run(&spec);
    assert!(
        out.status.success(),
        "run: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{random_sha}  /data/random.bin").as_str(),
            "file 1",
            "group:absent",
        ],
        "{text}"
    );
    drop(registry);
    env.assert_no_leaks();
}
