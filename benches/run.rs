//! Container start-to-exit benchmark: `berth run` of `/bin/true` on the busybox image against
//! `runc run` (and `crun run` when installed) of the same rootfs, in the same run.
//!
//! Run as root: `cargo bench --bench run` (env `BENCH_RUNS`, default 200).
//! Reports the median and p90 wall time of each and berth's peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    // Peak-RSS probe mode: run the given command once and print the largest child's max RSS,
    // so nothing else this benchmark started (cargo, runc) is counted.
    if let Ok(cmd) = std::env::var("BERTH_BENCH_RSS_OF") {
        let args: Vec<String> = serde_json::from_str(&cmd).unwrap();
        let st = Command::new(&args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        println!("{}", children_maxrss_kib());
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the run benchmark needs root");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let berth = release_binary();
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let image_dir = work.path().join("image");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox-image.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&image_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let spec = work.path().join("true.toml");
    std::fs::write(
        &spec,
        format!("image = {image:?}\ncommand = [\"/bin/true\"]\n[network]\nmode = \"none\"\n"),
    )
    .unwrap();
    let root = work.path().join("root");
    let berth_cmd = || {
        let mut c = Command::new(&berth);
        c.arg("--root")
            .arg(&root)
            .arg("--cgroup-parent")
            .arg("berth-bench")
            .arg("run")
            .arg(&spec);
        c
    };
    // Warm the layer store.
    assert!(berth_cmd().status().unwrap().success(), "berth run failed");

    let bundle = runtime_bundle(work.path(), &image_dir);
    let mut results: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut berth_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        berth_times.push(time(berth_cmd()));
    }
    let probe = berth_cmd();
    let args: Vec<String> = std::iter::once(probe.get_program())
        .chain(probe.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("BERTH_BENCH_RSS_OF", serde_json::to_string(&args).unwrap())
        .output()
        .unwrap();
    let peak_kib: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    results.push(("berth run".into(), berth_times));
    for tool in ["runc", "crun"] {
        let Some(bin) = which(tool) else {
            println!("{tool}: not installed, skipped");
            continue;
        };
        let mut times = Vec::with_capacity(runs);
        let mut ok = true;
        for i in 0..runs {
            let mut c = Command::new(&bin);
            c.arg("run")
                .arg("--bundle")
                .arg(&bundle)
                .arg(format!("bench-{tool}-{}-{i}", std::process::id()));
            let t0 = Instant::now();
            let st = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            if !st.status.success() {
                println!(
                    "{tool}: failed: {}",
                    String::from_utf8_lossy(&st.stderr).trim()
                );
                ok = false;
                break;
            }
            times.push(t0.elapsed());
        }
        if ok {
            results.push((format!("{tool} run"), times));
        }
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/unified/berth-bench"));
    println!("{runs} runs of /bin/true on the busybox image (network none):");
    let berth_median = median(&mut results[0].1.clone());
    for (name, times) in &mut results {
        let med = median(times);
        let p90 = times[times.len() * 9 / 10];
        let ratio = berth_median.as_secs_f64() / med.as_secs_f64();
        println!(
            "  {name:<10} median {:>7.2} ms  p90 {:>7.2} ms  berth/this {ratio:.2}x",
            ms(med),
            ms(p90)
        );
    }
    println!(
        "  berth peak RSS (largest child): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    bridge_overhead(&berth, work.path(), &image, runs.min(100));
    bridge_throughput(&berth, work.path(), &image);
}

/// HTTP transfer (busybox httpd and wget, 10 x 48 MiB from tmpfs) between two bridge
/// containers, against the same transfer over a bare veth pair between two network
/// namespaces, in the same run. Everything happens inside a network namespace made for it.
fn bridge_throughput(berth: &Path, work: &Path, image: &str) {
    if which("unshare").is_none() || which("nft").is_none() || which("busybox").is_none() {
        println!("throughput: unshare, nft or busybox missing, skipped");
        return;
    }
    let root = work.join("root-tput");
    let server = work.join("tput-server.toml");
    let client = work.join("tput-client.toml");
    std::fs::write(
        &server,
        format!(
            "image = {image:?}\ncommand = [\"sh\", \"-c\", \"trap 'exit 0' TERM; dd if=/dev/zero of=/dev/shm/big bs=1M count=48 2>/dev/null; httpd -p 80 -h /dev/shm; while :; do sleep 0.2; done\"]\n\
             [network]\nmode = \"bridge\"\nip = \"10.89.0.50\"\n"
        ),
    )
    .unwrap();
    let fetch = "s=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /dev/null http://10.89.0.50/big || exit 1; done; e=$(cut -d' ' -f1 /proc/uptime); echo $s $e";
    std::fs::write(
        &client,
        format!("image = {image:?}\ncommand = [\"sh\", \"-c\", {fetch:?}]\n[network]\nmode = \"bridge\"\n"),
    )
    .unwrap();
    let b = |spec: &Path| {
        format!(
            "{} --root {} --cgroup-parent berth-bench run {}",
            berth.display(),
            root.display(),
            spec.display()
        )
    };
    let shm = work.join("tput-shm");
    std::fs::create_dir_all(&shm).unwrap();
    // Bare veth: this netns <-> a second one held by `sleep`, the same httpd/wget pair.
    let script = format!(
        "ip link set lo up; {srv} & srv=$!; sleep 1; cli=$({cli}); kill $srv; wait $srv 2>/dev/null; \
         mount -t tmpfs tmpfs {shm}; dd if=/dev/zero of={shm}/big bs=1M count=48 2>/dev/null; \
         unshare --net sleep 30 & peer=$!; sleep 0.2; \
         ip link add tpa type veth peer name tpb netns $peer; ip addr add 10.250.0.1/24 dev tpa; ip link set tpa up; \
         nsenter -t $peer -n sh -c 'ip link set lo up; ip addr add 10.250.0.2/24 dev tpb; ip link set tpb up'; \
         busybox httpd -f -p 10.250.0.1:80 -h {shm} & h=$!; sleep 0.3; \
         veth=$(nsenter -t $peer -n sh -c \"s=\\$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -q -O /dev/null http://10.250.0.1/big || exit 1; done; e=\\$(cut -d' ' -f1 /proc/uptime); echo \\$s \\$e\"); \
         kill $h $peer; wait 2>/dev/null; umount {shm}; echo \"$cli\"; echo \"$veth\"",
        srv = b(&server),
        cli = b(&client),
        shm = shm.display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| v[1] - v[0])
        })
        .collect();
    if secs.len() != 2 || secs.iter().any(|s| *s <= 0.0) {
        println!(
            "throughput: failed: {text} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let mbit = |s: f64| 10.0 * 48.0 * 8.0 * 1.048576 / s;
    println!(
        "  HTTP 10 x 48 MiB: bridge container -> container {:.0} Mbit/s, bare veth pair {:.0} Mbit/s: {:.0}% of the veth",
        mbit(secs[0]),
        mbit(secs[1]),
        100.0 * secs[1] / secs[0]
    );
}

/// Start-to-exit with `mode = "bridge"` against `mode = "none"`, in the same run, each mode's
/// runs inside one network namespace made for it (so no bridge touches the host's; the bridge
/// is created by a warm-up run and reused, as on a host).
fn bridge_overhead(berth: &Path, work: &Path, image: &str, runs: usize) {
    if which("unshare").is_none() || which("nft").is_none() {
        println!("bridge: unshare or nft missing, skipped");
        return;
    }
    let root = work.join("root-net");
    let mut means = Vec::new();
    for mode in ["none", "bridge"] {
        let spec = work.join(format!("true-{mode}.toml"));
        std::fs::write(
            &spec,
            format!("image = {image:?}\ncommand = [\"/bin/true\"]\n[network]\nmode = \"{mode}\"\n"),
        )
        .unwrap();
        let one = format!(
            "{} --root {} --cgroup-parent berth-bench run {}",
            berth.display(),
            root.display(),
            spec.display()
        );
        let script = format!(
            "ip link set lo up && {one} && s=$(date +%s%N) && i=0 && while [ $i -lt {runs} ]; do {one} || exit 1; i=$((i+1)); done && e=$(date +%s%N) && echo $((e - s))"
        );
        let out = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .output()
            .unwrap();
        if !out.status.success() {
            println!(
                "bridge: {mode} runs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        let total_ns: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0.0);
        means.push(total_ns / runs as f64 / 1e6);
    }
    println!(
        "  {runs} runs each inside a netns: mode none mean {:.2} ms, bridge mean {:.2} ms: bridge adds {:.2} ms per container",
        means[0],
        means[1],
        means[1] - means[0]
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut c: Command) -> Duration {
    let t0 = Instant::now();
    let st = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    t0.elapsed()
}

fn children_maxrss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The binary cargo built for this benchmark (the bench profile: release settings).
fn release_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// An OCI runtime bundle (config.json + rootfs) of the busybox image for runc/crun.
fn runtime_bundle(work: &Path, image_dir: &Path) -> PathBuf {
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let blobs = image_dir.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    assert!(Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    if let Some(runc) = which("runc") {
        assert!(Command::new(runc)
            .arg("spec")
            .current_dir(&bundle)
            .status()
            .unwrap()
            .success());
        let cfg = std::fs::read_to_string(bundle.join("config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        v["process"]["terminal"] = false.into();
        v["process"]["args"] = serde_json::json!(["/bin/true"]);
        std::fs::write(bundle.join("config.json"), v.to_string()).unwrap();
    }
    bundle
}
