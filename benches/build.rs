//! Image build benchmark: `berth build` against `buildah bud` (Debian's buildah) on the same
//! Containerfiles and context, in the same run, interleaved, after a warm-up of each.
//!
//! Two Containerfiles on the busybox image `examples/busybox-image.sh` makes: `web`, the web
//! server of tests/build.rs (COPY of a 300-file site, EXPOSE, HEALTHCHECK, STOPSIGNAL, LABEL,
//! CMD), and `web+run`, the same with a RUN step. Each is built uncached (`berth build
//! --no-cache`, `buildah bud --layers --no-cache`) and cached (an unchanged rebuild:
//! `berth build`, `buildah bud --layers`). buildah's RUN steps use `--isolation chroot`: its
//! default OCI runtime refuses a hybrid cgroup host; berth's RUN is a full container either
//! way. buildah keeps its store under the bench's work dir (`--root`, `--runroot`).
//!
//! Run as root: `cargo bench --bench build` (env `BENCH_ROUNDS`, default 7). Medians, min-max
//! and berth/buildah ratios go to stdout and target/bench/build.json.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const WEB: &str = "FROM @BASE@\n\
    COPY site/ /www/\n\
    EXPOSE 8080\n\
    HEALTHCHECK --interval=5s --timeout=2s CMD nc 127.0.0.1 8080 </dev/null\n\
    STOPSIGNAL SIGTERM\n\
    LABEL org.example.app=web\n\
    CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

const WEB_RUN: &str = "FROM @BASE@\n\
    COPY site/ /www/\n\
    RUN mkdir -p /var/log/httpd && echo built > /www/built.txt\n\
    EXPOSE 8080\n\
    CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn timed(c: &mut Command) -> Result<Duration, String> {
    let t0 = Instant::now();
    let out = c.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(took)
}

fn median(v: &[Duration]) -> f64 {
    let mut s: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn span(v: &[Duration]) -> (f64, f64) {
    let s: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    (
        s.iter().cloned().fold(f64::INFINITY, f64::min),
        s.iter().cloned().fold(0.0, f64::max),
    )
}

struct Arms {
    berth: PathBuf,
    root: PathBuf,
    cgroup_parent: String,
    buildah: Option<(PathBuf, PathBuf)>,
}

impl Arms {
    fn berth(&self, ctx: &Path, tag: &str, cached: bool) -> Result<Duration, String> {
        let mut c = Command::new(&self.berth);
        c.arg("--root")
            .arg(&self.root)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(["build", "-t", tag]);
        if !cached {
            c.arg("--no-cache");
        }
        timed(c.arg(ctx))
    }

    fn buildah(&self, ctx: &Path, tag: &str, cached: bool) -> Option<Result<Duration, String>> {
        let (root, run) = self.buildah.as_ref()?;
        let mut c = Command::new("buildah");
        c.arg("--root").arg(root).arg("--runroot").arg(run).args([
            "bud",
            "--quiet",
            "--isolation",
            "chroot",
            "--layers",
            "-t",
            tag,
        ]);
        if !cached {
            c.arg("--no-cache");
        }
        Some(timed(c.arg(ctx)))
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the build benchmark needs root (RUN steps are containers)");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(7);
    // Lower case only: buildah names an oci: base image after its path.
    let work = tempfile::Builder::new()
        .prefix("berth-buildbench-")
        .rand_bytes(0)
        .suffix(&std::process::id().to_string())
        .tempdir()
        .unwrap();
    let base = work.path().join("busybox");
    let st = Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox-image.sh"))
        .arg(&base)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "busybox-image.sh failed");
    let base_ref = format!("oci:{}:latest", base.display());
    let ctx = work.path().join("ctx");
    for i in 0..300 {
        let dir = ctx.join(format!("site/section{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("page{i}.html")),
            format!("<p>page {i}</p>\n").repeat(20),
        )
        .unwrap();
    }
    std::fs::write(ctx.join("site/index.html"), "<h1>bench</h1>\n").unwrap();
    let buildah = have("buildah").then(|| (work.path().join("bstore"), work.path().join("brun")));
    if buildah.is_none() {
        eprintln!("build benchmark: buildah is not installed; berth alone");
    }
    let arms = Arms {
        berth: common::berth_binary(),
        root: work.path().join("berth-root"),
        cgroup_parent: format!("berth-buildbench-{}", std::process::id()),
        buildah,
    };
    let mut variants = Vec::new();
    for (label, text) in [("web", WEB), ("web+run", WEB_RUN)] {
        std::fs::write(ctx.join("Containerfile"), text.replace("@BASE@", &base_ref)).unwrap();
        let tag = format!("localhost/bench-{}:1", label.replace('+', "-"));
        for cached in [false, true] {
            // Warm-up (and, for the cached arm, the build the rebuilds reuse).
            let berth_warm = arms.berth(&ctx, &tag, false);
            let theirs_warm = arms.buildah(&ctx, &tag, false);
            if let Err(e) = &berth_warm {
                eprintln!("build benchmark: berth failed: {e}");
                return;
            }
            let mut note = match theirs_warm {
                Some(Err(e)) => Some(format!("buildah failed: {e}")),
                None => Some("buildah not installed".to_string()),
                Some(Ok(_)) => None,
            };
            let (mut b, mut t) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                b.push(arms.berth(&ctx, &tag, cached).expect("berth build"));
                if note.is_none() {
                    match arms.buildah(&ctx, &tag, cached) {
                        Some(Ok(d)) => t.push(d),
                        Some(Err(e)) => note = Some(format!("buildah failed: {e}")),
                        None => {}
                    }
                }
            }
            let theirs = (t.len() == rounds).then(|| median(&t));
            let kind = if cached { "cached" } else { "uncached" };
            println!(
                "{label} {kind}: berth {:.3} s{}",
                median(&b),
                theirs
                    .map(|m| format!(", buildah {m:.3} s, ratio {:.2}x", median(&b) / m))
                    .unwrap_or_default()
            );
            let (bmin, bmax) = span(&b);
            let (tmin, tmax) = if t.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                span(&t)
            };
            variants.push(serde_json::json!({
                "containerfile": label,
                "cache": kind,
                "berth_s": median(&b),
                "berth_min_s": bmin,
                "berth_max_s": bmax,
                "buildah_s": theirs,
                "buildah_min_s": theirs.map(|_| tmin),
                "buildah_max_s": theirs.map(|_| tmax),
                "note": note,
            }));
        }
    }
    let version = Command::new("buildah")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    common::write_results(
        "build",
        &serde_json::json!({
            "machine": common::machine(),
            "rounds": rounds,
            "files": 301,
            "buildah": version,
            "variants": variants,
        }),
    );
    common::remove_cgroup_parent(&arms.cgroup_parent);
}
