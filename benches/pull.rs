//! Registry pull + unpack benchmark: `berth image pull` of a multi-layer image of about 100 MB
//! from Debian's `docker-registry` on 127.0.0.1, against `skopeo copy` to an OCI layout followed
//! by `umoci unpack`, in the same run.
//!
//! The image is a Debian bookworm minbase rootfs made with `mmdebstrap` (without docs, man pages
//! and translations, as Debian's slim images), split into a `usr/lib/` layer and a layer of
//! everything else, plus a top layer adding about 5 MB. When mmdebstrap is
//! missing or fails, a synthetic rootfs is used instead (about 90 MB of files of varied sizes,
//! pseudo-random content that gzip halves, in three layers); the output says which.
//!
//! Run as root: `cargo bench --bench pull` (env `BENCH_ROUNDS`, default 3; `BENCH_SYNTHETIC=1`
//! uses the synthetic rootfs without trying mmdebstrap). Each round pulls
//! into a fresh berth root and a fresh OCI layout + bundle, alternating between the two, after
//! one warm-up of each (the page cache holds the registry's blobs for both); the rounds'
//! output is removed at the end, not between rounds. Reports the median
//! wall time of each and the ratio berth/theirs, for the image as built (gzip layers) and again
//! with its layers recompressed to zstd by `skopeo copy --dest-compress-format zstd`; results
//! as JSON in target/bench/pull.json.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod common;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the pull benchmark needs root (layers keep their owners)");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    for tool in ["docker-registry", "skopeo"] {
        if which(tool).is_none() {
            eprintln!("pull benchmark: {tool} not installed, skipped");
            return;
        }
    }
    if which("umoci").is_none() || which("mmdebstrap").is_none() {
        let st = Command::new("apt-get")
            .args(["install", "-y", "mmdebstrap", "umoci"])
            .stdout(Stdio::null())
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("pull benchmark: apt-get install mmdebstrap umoci failed");
        }
    }
    if which("umoci").is_none() {
        eprintln!("pull benchmark: umoci not installed, skipped");
        return;
    }
    let berth = common::berth_binary();
    let work = tempfile::Builder::new()
        .prefix("berth-pullbench-")
        .tempdir()
        .unwrap();

    // The image, as an OCI layout.
    let t0 = Instant::now();
    let rootfs = work.path().join("rootfs");
    let made = if std::env::var_os("BENCH_SYNTHETIC").is_some() {
        Err("BENCH_SYNTHETIC set".to_string())
    } else {
        debian_rootfs(&rootfs)
    };
    let (kind, layer_dirs) = match made {
        Ok(()) => {
            if let Some(m) = mounted_under(&rootfs) {
                eprintln!("pull benchmark: {m} is still mounted after mmdebstrap; stopping");
                let _ = work.keep();
                return;
            }
            (
                "Debian bookworm minbase rootfs (mmdebstrap, no doc/man/info/locale)",
                split_debian(&rootfs),
            )
        }
        Err(why) => {
            println!("no Debian rootfs ({why}); using a synthetic rootfs");
            if !remove_unless_mounted(&rootfs) {
                let _ = work.keep();
                return;
            }
            ("synthetic rootfs", synthetic_layers(&rootfs))
        }
    };
    let top = work.path().join("top");
    write_top_layer(&top);
    let layout = work.path().join("layout");
    let mut parts = layer_dirs;
    parts.push(LayerSource::of(&top, &["opt"]));
    let layers = write_layout(&layout, &parts);
    // The rootfs is removed at the end, with the rounds' output (see below).
    if let Some(m) = mounted_under(&rootfs) {
        eprintln!("pull benchmark: {m} is still mounted after building the image; stopping");
        let _ = work.keep();
        return;
    }
    let total_gz: u64 = layers.iter().map(|l| l.gz_size).sum();
    let total_tar: u64 = layers.iter().map(|l| l.tar_size).sum();
    println!(
        "image: {kind} plus a 5 MB top layer, built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    for (i, l) in layers.iter().enumerate() {
        println!(
            "  layer {}: {:>6.1} MB tar, {:>6.1} MB gzip  ({})",
            i + 1,
            mb(l.tar_size),
            mb(l.gz_size),
            l.what
        );
    }
    println!(
        "  total:   {:>6.1} MB tar, {:>6.1} MB gzip",
        mb(total_tar),
        mb(total_gz)
    );

    // The registry, filled by skopeo.
    let mut registry = Registry::start(work.path());
    let reference = format!("127.0.0.1:{}/bench:1", registry.port);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{reference}"),
    ]);

    // The same image with its layers recompressed to zstd.
    let zstd_reference = format!("127.0.0.1:{}/bench:zstd", registry.port);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{zstd_reference}"),
    ]);

    let runs = work.path().join("runs");
    fs::create_dir_all(&runs).unwrap();
    let mut results = Vec::new();
    for (label, reference) in [("gzip", &reference), ("zstd", &zstd_reference)] {
        match compare(&berth, &runs, reference, label, rounds) {
            Ok(r) => {
                println!(
                    "{rounds} rounds, pull + unpack of {reference} ({} layers, {label}, {:.1} MB unpacked):",
                    layers.len(),
                    mb(total_tar)
                );
                println!("  berth image pull           median {:>6.2} s", r.berth);
                match (r.theirs, r.copy) {
                    (Some(t), Some(c)) => {
                        println!(
                            "  skopeo copy + umoci unpack median {t:>6.2} s  (skopeo copy alone {c:.2} s)"
                        );
                        println!("  berth/theirs {:.2}x  (target <= 0.50x)", r.berth / t);
                    }
                    _ => println!("  skopeo copy + umoci unpack: {}", r.note),
                }
                results.push(serde_json::json!({
                    "compression": label,
                    "berth_s": r.berth, "berth_all_s": r.berth_all,
                    "theirs_s": r.theirs, "theirs_all_s": r.theirs_all,
                    "skopeo_copy_s": r.copy, "note": r.note,
                }));
            }
            Err(e) => println!("{label}: {e}"),
        }
    }
    registry.stop();
    // Every round's output is removed only now: on an ext4 without a journal, creating files
    // soon after many were deleted walks the recently freed inodes, so a removal between
    // rounds would charge one arm (or variant) for the other's cleanup.
    let _ = fs::remove_dir_all(&runs);
    let _ = fs::remove_dir_all(&top);
    if !remove_unless_mounted(&rootfs) {
        let _ = work.keep();
    }
    common::write_results(
        "pull",
        &serde_json::json!({
            "machine": common::machine(),
            "image": kind,
            "layers": layers.len(),
            "gzip_mb": mb(total_gz),
            "unpacked_mb": mb(total_tar),
            "rounds": rounds,
            "variants": results,
        }),
    );
}

/// Medians (and every round) of one pull comparison, in seconds.
struct PullResult {
    berth: f64,
    berth_all: Vec<f64>,
    theirs: Option<f64>,
    theirs_all: Vec<f64>,
    copy: Option<f64>,
    note: String,
}

/// `rounds` pulls + unpacks of `reference` by berth and by skopeo + umoci, alternating
/// after one warm-up of each (the page cache then holds the registry's blobs for both).
/// Where skopeo + umoci cannot do it (umoci without zstd), berth's figures alone.
fn compare(
    berth: &Path,
    runs: &Path,
    reference: &str,
    label: &str,
    rounds: usize,
) -> Result<PullResult, String> {
    let berth_pull = |n: &str| -> Result<Duration, String> {
        let root = runs.join(format!("berth-{label}-{n}"));
        let t0 = Instant::now();
        let out = Command::new(berth)
            .arg("--root")
            .arg(&root)
            .args(["image", "pull", "--quiet", reference])
            .output()
            .map_err(|e| e.to_string())?;
        let d = t0.elapsed();
        if !out.status.success() {
            return Err(format!(
                "berth image pull {reference}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(d)
    };
    let theirs = |n: &str| -> Result<(Duration, Duration), String> {
        let oci = runs.join(format!("oci-{label}-{n}"));
        let bundle = runs.join(format!("bundle-{label}-{n}"));
        let t0 = Instant::now();
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:1", oci.display()),
        ]);
        let copied = t0.elapsed();
        let out = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:1", oci.display()))
            .arg(&bundle)
            .output()
            .map_err(|e| e.to_string())?;
        let d = t0.elapsed();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "umoci unpack failed: {}",
                err.lines().last().unwrap_or("").trim()
            ));
        }
        Ok((d, copied))
    };
    berth_pull("warm")?;
    let mut note = String::new();
    let mut peer = match theirs("warm") {
        Ok(_) => true,
        Err(e) => {
            note = e;
            false
        }
    };
    let (mut b_all, mut t_all, mut c_all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let n = i.to_string();
        let mut peer_round = |t_all: &mut Vec<Duration>, c_all: &mut Vec<Duration>| {
            if peer {
                match theirs(&n) {
                    Ok((t, c)) => {
                        t_all.push(t);
                        c_all.push(c);
                    }
                    Err(e) => {
                        note = e;
                        peer = false;
                    }
                }
            }
        };
        if i % 2 == 0 {
            b_all.push(berth_pull(&n)?);
            peer_round(&mut t_all, &mut c_all);
        } else {
            peer_round(&mut t_all, &mut c_all);
            b_all.push(berth_pull(&n)?);
        }
        println!(
            "{label} round {}: berth {:.2} s{}",
            i + 1,
            b_all[i].as_secs_f64(),
            match (t_all.last(), c_all.last()) {
                (Some(t), Some(c)) if t_all.len() == i + 1 => format!(
                    ", skopeo+umoci {:.2} s (copy {:.2} s, unpack {:.2} s)",
                    t.as_secs_f64(),
                    c.as_secs_f64(),
                    (*t - *c).as_secs_f64()
                ),
                _ => String::new(),
            }
        );
    }
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let complete = peer && t_all.len() == rounds;
    Ok(PullResult {
        berth: median(&mut b_all.clone()).as_secs_f64(),
        berth_all: secs(&b_all),
        theirs: complete.then(|| median(&mut t_all.clone()).as_secs_f64()),
        theirs_all: secs(&t_all),
        copy: complete.then(|| median(&mut c_all.clone()).as_secs_f64()),
        note,
    })
}

/// Removes `dir` unless something is still mounted under it (mmdebstrap mounts /proc, /sys
/// and /dev in the chroot while it works; a recursive removal must never reach the host's).
/// On a leftover mount the whole work dir is kept and reported.
fn remove_unless_mounted(dir: &Path) -> bool {
    if let Some(m) = mounted_under(dir) {
        eprintln!(
            "pull benchmark: {m} is still mounted; leaving {} in place",
            dir.display()
        );
        return false;
    }
    let _ = fs::remove_dir_all(dir);
    true
}

/// A mount point at or under `dir`, if any.
fn mounted_under(dir: &Path) -> Option<String> {
    common::mountinfo()
        .into_iter()
        .map(|(m, _)| m)
        .find(|m| m.starts_with(dir))
        .map(|m| m.display().to_string())
}

fn mb(n: u64) -> f64 {
    n as f64 / 1e6
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn run(c: &mut Command) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").arg("--insecure-policy").args(args));
}

const SLIM: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
];

/// `mmdebstrap --variant=minbase --dpkgopt=path-exclude=... bookworm DIR`.
fn debian_rootfs(dir: &Path) -> Result<(), String> {
    if which("mmdebstrap").is_none() {
        return Err("not installed".into());
    }
    let out = Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase"])
        // As Debian's slim images: no docs, man pages or translations.
        .args(SLIM.iter().map(|p| format!("--dpkgopt=path-exclude={p}")))
        .arg("bookworm")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("").to_string());
    }
    Ok(())
}

/// What one layer is made of: entries of `dir`, tarred with their owners.
struct LayerSource {
    dir: PathBuf,
    /// What the layer holds, for the report.
    what: String,
    /// GNU tar name arguments (names, and `--no-recursion`/`--recursion` between them).
    members: Vec<String>,
}

impl LayerSource {
    fn of(dir: &Path, names: &[&str]) -> LayerSource {
        LayerSource {
            dir: dir.to_path_buf(),
            what: names.join(" "),
            members: names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Two layers of about the same size: `usr/lib/`, and everything else (device nodes in /dev
/// left out, as in registry images). Both hold the `usr` directory entry itself.
fn split_debian(rootfs: &Path) -> Vec<LayerSource> {
    if let Ok(d) = fs::read_dir(rootfs.join("dev")) {
        for e in d.flatten() {
            // Only device nodes, symlinks and the empty pts/ and shm/ dirs are here.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(e.path());
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let usr_dir = ["--no-recursion", "usr", "--recursion"].map(String::from);
    let mut lib = usr_dir.to_vec();
    lib.push("usr/lib".into());
    let mut rest = usr_dir.to_vec();
    rest.extend(
        entries(&rootfs.join("usr"))
            .into_iter()
            .filter(|n| n != "lib")
            .map(|n| format!("usr/{n}")),
    );
    rest.extend(entries(rootfs).into_iter().filter(|n| n != "usr"));
    vec![
        LayerSource {
            dir: rootfs.to_path_buf(),
            what: "usr/lib".into(),
            members: lib,
        },
        LayerSource {
            dir: rootfs.to_path_buf(),
            what: "the rest of the rootfs".into(),
            members: rest,
        },
    ]
}

/// xorshift64*: a small deterministic generator for the synthetic content.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `size` bytes that gzip compresses to about half: random bytes drawn from 16 values.
fn content(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 16);
    while v.len() < size {
        let mut x = rng.next();
        for _ in 0..16 {
            v.push(b'a' + (x & 15) as u8);
            x >>= 4;
        }
    }
    v.truncate(size);
    v
}

/// Files of varied sizes (most small, a few large) under `dir`, `total` bytes in all.
fn fill(dir: &Path, rng: &mut Rng, total: u64) {
    let mut written = 0u64;
    let mut i = 0;
    while written < total {
        let sub = dir.join(format!("d{:03}", i / 40));
        fs::create_dir_all(&sub).unwrap();
        let size = match rng.next() % 100 {
            0..=59 => 512 + rng.next() % 8192,
            60..=89 => 8192 + rng.next() % 131_072,
            90..=98 => 131_072 + rng.next() % 1_048_576,
            _ => 1_048_576 + rng.next() % 4_194_304,
        }
        .min(total - written) as usize;
        fs::write(sub.join(format!("f{i:05}")), content(rng, size)).unwrap();
        written += size as u64;
        i += 1;
    }
}

/// About 90 MB in three layers: `usr/` (60 MB), `var/` (20 MB), `etc/` + `lib/` (10 MB).
fn synthetic_layers(rootfs: &Path) -> Vec<LayerSource> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    fill(&rootfs.join("usr"), &mut rng, 60_000_000);
    fill(&rootfs.join("var"), &mut rng, 20_000_000);
    fill(&rootfs.join("etc"), &mut rng, 4_000_000);
    fill(&rootfs.join("lib"), &mut rng, 6_000_000);
    vec![
        LayerSource::of(rootfs, &["usr"]),
        LayerSource::of(rootfs, &["var"]),
        LayerSource::of(rootfs, &["etc", "lib"]),
    ]
}

/// The top layer: about 5 MB under /opt/app.
fn write_top_layer(dir: &Path) {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    fill(&dir.join("opt/app"), &mut rng, 5_000_000);
}

struct LayerInfo {
    what: String,
    digest: String,
    diff_id: String,
    gz_size: u64,
    tar_size: u64,
}

/// Counts and hashes what passes through to the gzip encoder.
struct Tee<W: Write> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Same, for the compressed side.
struct HashFile {
    file: fs::File,
    hash: Sha256,
    n: u64,
}

impl Write for HashFile {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.file.write(b)?;
        self.hash.update(&b[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One gzip layer blob made by GNU tar (numeric owners, sorted names, no atime/ctime), written
/// into the layout's blob dir under its digest.
fn write_layer(blobs: &Path, src: &LayerSource) -> LayerInfo {
    let tmp = blobs.join("layer.tmp");
    let mut child = Command::new("tar")
        .arg("-C")
        .arg(&src.dir)
        .args(["--numeric-owner", "--sort=name", "--format=pax"])
        .args(["--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"])
        .args(["-cf", "-"])
        .args(&src.members)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let file = HashFile {
        file: fs::File::create(&tmp).unwrap(),
        hash: Sha256::new(),
        n: 0,
    };
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tee = Tee {
        inner: gz,
        hash: Sha256::new(),
        n: 0,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        tee.write_all(&buf[..n]).unwrap();
    }
    assert!(child.wait().unwrap().success(), "tar failed");
    let diff_id = hex::encode(tee.hash.finalize());
    let tar_size = tee.n;
    let mut file = tee.inner.finish().unwrap();
    file.flush().unwrap();
    let digest = hex::encode(file.hash.finalize());
    fs::rename(&tmp, blobs.join(&digest)).unwrap();
    LayerInfo {
        what: src.what.clone(),
        digest,
        diff_id,
        gz_size: file.n,
        tar_size,
    }
}

/// An OCI layout at `dir` with one image tagged `1` made of `parts`, bottom first.
fn write_layout(dir: &Path, parts: &[LayerSource]) -> Vec<LayerInfo> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layers: Vec<LayerInfo> = parts.iter().map(|p| write_layer(&blobs, p)).collect();
    let put = |bytes: &[u8]| {
        let d = sha_hex(bytes);
        fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>()},
        "history": layers.iter().map(|l| serde_json::json!({"created_by": format!("bench layer: {}", l.what)})).collect::<Vec<_>>(),
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", l.digest),
            "size": l.gz_size,
        })).collect::<Vec<_>>(),
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    layers
}

/// A docker-registry process on a free 127.0.0.1 port, storage under `work`, stopped by pid.
struct Registry {
    child: Option<Child>,
    port: u16,
}

impl Registry {
    fn start(work: &Path) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            work.join("registry").display()
        );
        let cfg = work.join("registry.yml");
        fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reg = Registry {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                reg.stop();
                panic!("docker-registry did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
