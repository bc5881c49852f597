//! Supervisor benchmark ("Speed and memory"): `berth supervise` with real busybox containers.
//!
//! First, in this order:
//! - sweep: for each of BENCH_SWEEP (10,50,100,200) containers, on a daemon of its own, the
//!   specs moved in at once -> all running (start-all), memory 2 s later, `berth ps` 20 times,
//!   SIGTERM -> the daemon gone with all of them (stop-all); then conmon's memory with 50
//!   `podman run -d` containers;
//! - burst: BENCH_BURST (1000) specs of containers that exit at once moved in at once, `berth
//!   ps --json` timed every 50 ms until all are handled, then the specs removed.
//!
//! Then:
//! 1. drop: a spec renamed into the watched dir -> the container's command running (its first
//!    command writes a ready file into a bind-mounted host dir; the bench polls for it every
//!    0.2 ms). Containers are dropped one after the other and kept running (drop i happens with
//!    i containers already running).
//! 2. cold start: a daemon started with N spec files already in the dir -> the Nth ready file;
//!    compared with N sequential `podman run -d` (and `docker run -d` when an engine answers)
//!    of the same busybox rootfs.
//! 3. memory with N running containers: the daemon's RSS/PSS and the per-container monitors'
//!    (the parent of each container's init) RSS/PSS.
//! 4. crash -> restarted with `policy = "always"` and a 1 ms backoff (0 is rejected by the spec
//!    format): the container appends to
//!    a file, then blocks on a FIFO; the bench releases it (it exits 1 at once) and times the
//!    release to the next start's line in the file.
//! 5. shutdown: SIGTERM to a daemon running BENCH_STOPS (50) containers whose init ignores
//!    SIGTERM (`sleep` as PID 1, stop_timeout 2s) -> the daemon's exit, everything gone;
//!    beside `podman stop -a -t 2` of as many `sleep` containers.
//! 6. start during stops: 10 such containers (stop_timeout 10s) removed from the dir, and while
//!    they wait out their timeouts a new spec is dropped -> its command running.
//! 7. probe cost: BENCH_PROBED (100) busybox httpd containers, each with an http probe every
//!    10 s; the daemon's CPU time (its threads and children) over BENCH_PROBE_WINDOW (60) s.
//!
//! Run as root: `cargo bench --bench supervise`. The berth binary is the one berth ships
//! (`common::berth_binary`: packaging/build-static, or `BENCH_BERTH`).
//! Environment: BENCH_ONLY=sweep, burst or both (comma-separated) runs only those; BENCH_SWEEP,
//! BENCH_BURST, BENCH_DROPS (default 100), BENCH_COLD (100), BENCH_RESTARTS (50), BENCH_PODMAN=0
//! to skip podman. Results as JSON in target/bench/supervise.json.
//! Every daemon has its own spec dir, socket and cgroup parent under one temp dir and one
//! `--root`; everything is stopped (SIGTERM) and removed at the end.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{cgroup_bases, mountinfo, remove_cgroup_parent};

const POLL: Duration = Duration::from_micros(200);
/// Keeps running until SIGTERM (sh as the pid namespace's init ignores an untrapped TERM).
const HOLD: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the supervise benchmark needs root");
        return;
    }
    let drops = env_usize("BENCH_DROPS", 100);
    let cold = env_usize("BENCH_COLD", 100);
    let restarts = env_usize("BENCH_RESTARTS", 50);
    let stops = env_usize("BENCH_STOPS", 50);
    let probed = env_usize("BENCH_PROBED", 100);
    let window = env_usize("BENCH_PROBE_WINDOW", 60);
    let burst = env_usize("BENCH_BURST", 1000);
    println!(
        "command: cargo bench --bench supervise   (BENCH_DROPS={drops} BENCH_COLD={cold} BENCH_RESTARTS={restarts})"
    );
    let berth = common::berth_binary();
    let work = tempfile::Builder::new()
        .prefix("berth-bench-sv-")
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
    let bench = Bench {
        berth,
        work: work.path().to_path_buf(),
        image: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        tag: format!("berth-bench-sv-{}", std::process::id()),
    };
    println!(
        "host: {} CPUs, kernel {}, load average {} (other work on the host inflates latencies)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        loadavg()
    );
    bench.warm_layer_store();

    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |phase: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == phase))
    };
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), common::machine());
    // The sweep first: the burst's thousands of removals would slow the file creations
    // that follow them on some filesystems (see the pull benchmark).
    if wanted("sweep") {
        let sizes: Vec<usize> = std::env::var("BENCH_SWEEP")
            .unwrap_or_else(|_| "10,50,100,200".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        let rows = bench.sweep(&sizes);
        results.insert("sweep".into(), serde_json::to_value(&rows).unwrap());
        let conmon = if std::env::var("BENCH_PODMAN").as_deref() == Ok("0") {
            None
        } else {
            podman(&bench, 50)
        };
        if let Some(c) = conmon {
            results.insert(
                "conmon".into(),
                serde_json::json!({
                    "containers": 50,
                    "rss_kib": c.monitor_rss.map(|r| r as f64 / 50.0),
                    "pss_kib": c.monitor_pss.map(|p| p as f64 / 50.0),
                    "version": c.version,
                }),
            );
        }
    }
    let burst_ps = if wanted("burst") {
        let lat = bench.burst(burst);
        results.insert(
            "burst".into(),
            serde_json::json!({
                "specs": burst,
                "ps_ms": lat.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            }),
        );
        lat
    } else {
        Vec::new()
    };
    common::write_results("supervise", &serde_json::Value::Object(results));
    if only.is_some() {
        return;
    }
    let shutdown = bench.shutdown(stops);
    let podman_stop = if std::env::var("BENCH_PODMAN").as_deref() == Ok("0") {
        None
    } else {
        podman_stop_all(&bench, stops)
    };
    let during = bench.start_during_stops(10);
    let probe_cpu = bench.probe_cost(probed, Duration::from_secs(window as u64));
    let crash = bench.crash_restart(restarts);
    let drop = bench.drops(drops);
    let cold_start = bench.cold_start(cold);
    let others = compare_engines(&bench, cold);

    println!();
    println!("== summary ==");
    println!(
        "berth ps during a {burst}-spec burst: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms (target < 200 ms)",
        ms(pct(&burst_ps, 0.5)),
        ms(pct(&burst_ps, 0.99)),
        ms(pct(&burst_ps, 1.0))
    );
    let (p50, p99) = (pct(&drop.times, 0.5), pct(&drop.times, 0.99));
    println!(
        "drop -> running ({} drops):        p50 {:7.2} ms  p99 {:7.2} ms",
        drop.times.len(),
        ms(p50),
        ms(p99)
    );
    println!(
        "cold start, {cold} specs -> all running: {:7.1} ms",
        ms(cold_start.all)
    );
    let fastest = others
        .iter()
        .filter_map(|o| o.all.map(|d| (o.name.clone(), d)))
        .min_by_key(|(_, d)| *d);
    match &fastest {
        Some((name, d)) => println!(
            "  vs {name} ({cold} x run -d):      {:7.1} ms  -> berth is {:.1}x faster ({name}/berth)",
            ms(*d),
            d.as_secs_f64() / cold_start.all.as_secs_f64()
        ),
        None => println!("  no other engine could run here; no ratio"),
    }
    for m in [&drop.mem, &cold_start.mem] {
        println!(
            "memory, {} running ({}): daemon RSS {:.1} MiB (target < 15), monitor PSS/container {:.0} KiB, RSS/container {:.0} KiB (target < 1024)",
            m.containers,
            m.when,
            kib_mib(m.daemon_rss),
            m.monitor_pss as f64 / m.containers.max(1) as f64,
            m.monitor_rss as f64 / m.containers.max(1) as f64,
        );
    }
    for o in &others {
        if let Some(m) = &o.monitor_pss {
            println!(
                "  {}: conmon PSS/container {:.0} KiB",
                o.name,
                *m as f64 / cold as f64
            );
        }
    }
    println!(
        "crash -> restarted ({} restarts, 1 ms backoff included):  p50 {:7.2} ms  p90 {:7.2} ms  max {:7.2} ms (target < 20)",
        crash.len(),
        ms(pct(&crash, 0.5)),
        ms(pct(&crash, 0.9)),
        ms(pct(&crash, 1.0))
    );
    println!(
        "shutdown, {stops} SIGTERM-ignoring containers (stop_timeout 2s): {:7.1} ms",
        ms(shutdown)
    );
    match podman_stop {
        Some(p) => println!(
            "  vs podman stop -a -t 2 of {stops}:       {:7.1} ms  -> podman/berth {:.2}x",
            ms(p),
            p.as_secs_f64() / shutdown.as_secs_f64()
        ),
        None => println!("  podman could not run here; no ratio"),
    }
    println!(
        "drop -> running while 10 containers wait out a 10 s stop: {:7.2} ms",
        ms(during)
    );
    println!(
        "daemon CPU with {probed} http-probed containers (10 s interval): {probe_cpu:.2}% of a core (target < 1)"
    );
    println!("load average at the end: {}", loadavg());
    let left = bench.leftovers();
    if left.is_empty() {
        println!("leftovers (mounts, cgroups, container dirs): none");
    } else {
        println!("leftovers: {left:?}");
    }
}

struct Bench {
    berth: PathBuf,
    work: PathBuf,
    image: String,
    tag: String,
}

struct DropResult {
    times: Vec<Duration>,
    mem: Memory,
}

struct ColdResult {
    all: Duration,
    mem: Memory,
}

struct EngineResult {
    name: String,
    version: String,
    all: Option<Duration>,
    /// Summed over the engine's monitor processes (conmon), in KiB.
    monitor_pss: Option<u64>,
    monitor_rss: Option<u64>,
}

/// One size of the scaling sweep.
#[derive(serde::Serialize)]
struct SweepRow {
    containers: usize,
    /// Specs moved in at once -> every container running.
    start_all_ms: f64,
    /// SIGTERM to the daemon -> it exited, every container stopped.
    stop_all_ms: f64,
    daemon_rss_kib: u64,
    daemon_pss_kib: u64,
    monitor_rss_kib: f64,
    monitor_pss_kib: f64,
    ps_p50_ms: f64,
    ps_max_ms: f64,
}

#[derive(Default)]
struct Memory {
    when: &'static str,
    containers: usize,
    daemon_rss: u64,
    daemon_pss: u64,
    monitor_rss: u64,
    monitor_pss: u64,
}

impl Bench {
    fn root(&self) -> PathBuf {
        self.work.join("root")
    }

    fn berth(&self, cgroup_parent: &str) -> Command {
        let mut c = Command::new(&self.berth);
        c.arg("--root")
            .arg(self.root())
            .arg("--cgroup-parent")
            .arg(cgroup_parent);
        c
    }

    /// A spec's text: the busybox image, `sh -c script`, `out` at /out, no network.
    fn spec(&self, script: &str, out: &Path, extra: &str) -> String {
        format!(
            "image = {:?}\ncommand = [\"sh\", \"-c\", {script:?}]\n{extra}\n\
             [[mounts]]\nsource = {:?}\ntarget = \"/out\"\n\n[network]\nmode = \"none\"\n",
            self.image,
            out.display()
        )
    }

    /// One `berth run` so the image's layers are unpacked before anything is timed.
    fn warm_layer_store(&self) {
        let spec = self.work.join("warm.toml");
        std::fs::write(
            &spec,
            format!(
                "image = {:?}\ncommand = [\"true\"]\n[network]\nmode = \"none\"\n",
                self.image
            ),
        )
        .unwrap();
        let parent = format!("{}-warm", self.tag);
        let st = self
            .berth(&parent)
            .arg("run")
            .arg(&spec)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "berth run (warm-up) failed");
        remove_cgroup_parent(&parent);
    }

    fn dirs(&self, phase: &str) -> (PathBuf, PathBuf) {
        let specs = self.work.join(phase).join("specs");
        let out = self.work.join(phase).join("out");
        std::fs::create_dir_all(&specs).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        (specs, out)
    }

    /// 4. Crash to restarted, on a daemon with nothing else to do.
    fn crash_restart(&self, n: usize) -> Vec<Duration> {
        println!();
        // The spec format rejects `initial = "0s"` (restart.backoff.initial must be greater
        // than 0), so the smallest accepted curve: a constant 1 ms, which the figure includes.
        println!(
            "== crash -> restarted ({n} restarts, policy always, backoff initial = max = 1ms) =="
        );
        let (specs, out) = self.dirs("crash");
        let go = out.join("go");
        nix::unistd::mkfifo(&go, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let d = Daemon::start(self, "crash", &specs);
        let body = self.spec(
            "echo >> /out/starts; read x < /out/go; exit 1",
            &out,
            "stop_signal = \"SIGKILL\"\n\n[restart]\npolicy = \"always\"\n\
             backoff = { initial = \"1ms\", max = \"1ms\", reset_after = \"60s\" }\n",
        );
        drop_spec(&self.work, &specs, "crash", &body);
        let starts = out.join("starts");
        let mut gaps = Vec::with_capacity(n);
        let mut released: Option<Instant> = None;
        for k in 0..=n {
            let t = wait_for(Duration::from_secs(20), &format!("start {}", k + 1), || {
                std::fs::metadata(&starts).is_ok_and(|m| m.len() > k as u64)
            })
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
            if let Some(r) = released {
                gaps.push(t.duration_since(r));
            }
            if k == n {
                break;
            }
            // Let the daemon see it running, as a crash some time after start would.
            std::thread::sleep(Duration::from_millis(10));
            released = Some(release_fifo(&go));
        }
        let status = d.status("crash");
        println!(
            "  ps: state {}, restarts {}, last_exit {}",
            status["state"], status["restarts"], status["last_exit"]
        );
        std::fs::remove_file(specs.join("crash.toml")).unwrap();
        wait_for(Duration::from_secs(20), "crash removed", || {
            d.ps().iter().all(|c| c["name"] != "crash")
        })
        .unwrap();
        let stop = d.stop();
        println!(
            "  p50 {:.2} ms  p90 {:.2} ms  min {:.2} ms  max {:.2} ms  (daemon stop {:.0} ms)",
            ms(pct(&gaps, 0.5)),
            ms(pct(&gaps, 0.9)),
            ms(pct(&gaps, 0.0)),
            ms(pct(&gaps, 1.0)),
            ms(stop)
        );
        gaps
    }

    /// A spec whose init ignores SIGTERM (`sleep` as PID 1) and writes a ready file first.
    fn sleeper(&self, name: &str, out: &Path, stop_timeout: &str) -> String {
        format!(
            "image = {:?}\ncommand = [\"sh\", \"-c\", \"echo > /out/ready-{name}; exec sleep 100000\"]\n\
             stop_timeout = {stop_timeout:?}\n\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\n\n\
             [network]\nmode = \"none\"\n",
            self.image,
            out.display()
        )
    }

    /// 5. SIGTERM -> exit of a daemon running `n` containers that ignore SIGTERM.
    fn shutdown(&self, n: usize) -> Duration {
        println!();
        println!(
            "== shutdown: {n} containers ignoring SIGTERM (sleep as PID 1, stop_timeout 2s) =="
        );
        let (specs, out) = self.dirs("shutdown");
        for i in 0..n {
            let name = format!("s{i:03}");
            std::fs::write(
                specs.join(format!("{name}.toml")),
                self.sleeper(&name, &out, "2s"),
            )
            .unwrap();
        }
        let d = Daemon::spawn(self, "shutdown", &specs);
        wait_for(Duration::from_secs(120), "all running", || {
            (0..n).all(|i| out.join(format!("ready-s{i:03}")).exists())
        })
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        d.wait_socket();
        let took = d.stop();
        println!(
            "  SIGTERM -> daemon exit 0: {:.0} ms (the stop timeout alone is 2000 ms)",
            ms(took)
        );
        took
    }

    /// The daemon's CPU use (phase 7), in percent of one core, over `window` with `n`
    /// containers probed over http every 10 s.
    fn probe_cost(&self, n: usize, window: Duration) -> f64 {
        println!();
        println!("== probe cost: {n} busybox httpd containers, http probe every 10s, {window:?} window ==");
        let (specs, out) = self.dirs("probe");
        for i in 0..n {
            let body = format!(
                "image = {:?}\ncommand = [\"sh\", \"-c\", \"mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 127.0.0.1:80 -h /www\"]\n\
                 stop_timeout = \"1s\"\n[[mounts]]\nsource = {:?}\ntarget = \"/out\"\n\
                 [network]\nmode = \"none\"\n[health]\nhttp = {{ port = 80 }}\ninterval = \"10s\"\n",
                self.image,
                out.display()
            );
            std::fs::write(specs.join(format!("h{i:03}.toml")), body).unwrap();
        }
        let d = Daemon::spawn(self, "probe", &specs);
        d.wait_socket();
        wait_for(Duration::from_secs(180), "all healthy", || {
            d.ps().iter().filter(|c| c["health"] == "healthy").count() == n
        })
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        let cpu = |pid: i32| -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            // utime, stime, cutime, cstime: fields 14-17 of the whole line.
            let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100) as f64;
            f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>()) / ticks
        };
        let pid = d.pid();
        let (c0, t0) = (cpu(pid), Instant::now());
        std::thread::sleep(window);
        let (c1, elapsed) = (cpu(pid), t0.elapsed());
        let pct = (c1 - c0) / elapsed.as_secs_f64() * 100.0;
        let healthy = d.ps().iter().filter(|c| c["health"] == "healthy").count();
        println!(
            "  daemon CPU {:.2} s over {:.0} s: {pct:.2}% of a core, about {} probes; {healthy} of {n} healthy at the end",
            c1 - c0,
            elapsed.as_secs_f64(),
            n as u64 * elapsed.as_secs() / 10
        );
        d.stop();
        pct
    }

    /// 6. A spec dropped while `n` containers wait out a 10 s stop timeout -> running.
    fn start_during_stops(&self, n: usize) -> Duration {
        println!();
        println!("== drop -> running while {n} containers are being stopped (stop_timeout 10s) ==");
        let (specs, out) = self.dirs("during");
        let d = Daemon::start(self, "during", &specs);
        for i in 0..n {
            let name = format!("o{i:02}");
            drop_spec(&self.work, &specs, &name, &self.sleeper(&name, &out, "10s"));
        }
        wait_for(Duration::from_secs(60), "all running", || {
            (0..n).all(|i| out.join(format!("ready-o{i:02}")).exists())
        })
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        for i in 0..n {
            std::fs::remove_file(specs.join(format!("o{i:02}.toml"))).unwrap();
        }
        wait_for(Duration::from_secs(10), "all stopping", || {
            d.ps().iter().filter(|c| c["state"] == "stopping").count() == n
        })
        .unwrap();
        let ready = out.join("ready-new");
        let t0 = drop_spec(&self.work, &specs, "new", &self.sleeper("new", &out, "2s"));
        let t = wait_for(Duration::from_secs(30), "new running", || ready.exists())
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        let took = t.duration_since(t0);
        let still = d.ps().iter().filter(|c| c["state"] == "stopping").count();
        println!(
            "  drop -> running {:.2} ms, with {still} of {n} still stopping",
            ms(took)
        );
        d.stop();
        took
    }

    /// `n` spec files moved into the dir at once (each a container that exits at once, so
    /// memory stays small): how long the daemon takes to handle them all, and `berth ps`
    /// latency, asked every 50 ms meanwhile.
    fn burst(&self, n: usize) -> Vec<Duration> {
        println!();
        println!("== {n} specs moved in at once: berth ps while the daemon handles them ==");
        let (specs, out) = self.dirs("burst");
        let d = Daemon::start(self, "burst", &specs);
        let body = self.spec("true", &out, "[restart]\npolicy = \"never\"\n");
        let (t0, files) = move_in_at_once(&self.work.join("burst-staging"), &specs, "b", n, &body);
        let mut lat = Vec::new();
        let handled = loop {
            let (took, rows) = d.timed_ps();
            lat.push(took);
            let exited = rows.iter().filter(|c| c["state"] == "exited").count();
            if exited == n {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(900),
                "burst not handled:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        println!(
            "  all {n} handled in {:.1} s; ps asked {} times: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            handled.as_secs_f64(),
            lat.len(),
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(pct(&lat, 1.0))
        );
        // The same ps once the daemon is idle: what listing n containers costs by itself.
        let idle: Vec<Duration> = (0..20).map(|_| d.timed_ps().0).collect();
        println!(
            "  ps of {n} containers on the idle daemon: p50 {:.1} ms  max {:.1} ms",
            ms(pct(&idle, 0.5)),
            ms(pct(&idle, 1.0))
        );
        // The specs go, and with them their records: the phases after this one share the
        // state root and must not start with thousands of records to clean.
        for f in &files {
            let _ = std::fs::remove_file(specs.join(f));
        }
        wait_for(
            Duration::from_secs(600),
            "the burst's containers removed",
            || {
                d.ps().is_empty() || {
                    std::thread::sleep(Duration::from_millis(200));
                    false
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        d.stop();
        lat
    }

    /// The scaling sweep: for each size, that many specs moved in at once, until all run;
    /// memory and `ps` with all of them running; then the daemon's SIGTERM stop of all.
    fn sweep(&self, sizes: &[usize]) -> Vec<SweepRow> {
        println!();
        println!("== scaling sweep: {sizes:?} containers, each size on a daemon of its own ==");
        let mut rows = Vec::new();
        for &n in sizes {
            let phase = format!("sweep{n}");
            let (specs, out) = self.dirs(&phase);
            let d = Daemon::start(self, &phase, &specs);
            let staging = self.work.join(&phase).join("staging");
            let (t0, _) = move_in_at_once(&staging, &specs, "s", n, &self.spec(HOLD, &out, ""));
            let mut running = Vec::new();
            wait_for(Duration::from_secs(300), "all running", || {
                running = d.running();
                // Each look is a `berth ps`: not more often than every 20 ms.
                running.len() == n || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            })
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
            let start_all = t0.elapsed();
            // Memory in the steady state: after the monitors' idle release (1 s without
            // output gives back what starting touched).
            std::thread::sleep(Duration::from_secs(2));
            let mem = d.memory("sweep", &running);
            let ps: Vec<Duration> = (0..20).map(|_| d.timed_ps().0).collect();
            let stop_all = d.stop();
            let row = SweepRow {
                containers: n,
                start_all_ms: ms(start_all),
                stop_all_ms: ms(stop_all),
                daemon_rss_kib: mem.daemon_rss,
                daemon_pss_kib: mem.daemon_pss,
                monitor_rss_kib: mem.monitor_rss as f64 / n as f64,
                monitor_pss_kib: mem.monitor_pss as f64 / n as f64,
                ps_p50_ms: ms(pct(&ps, 0.5)),
                ps_max_ms: ms(pct(&ps, 1.0)),
            };
            println!(
                "  {n:>4}: start-all {:8.1} ms ({:.2} ms/container)  stop-all {:8.1} ms  daemon RSS {:5.1} MiB  monitor RSS {:4.0} KiB PSS {:4.0} KiB  ps p50 {:5.1} ms",
                row.start_all_ms,
                row.start_all_ms / n as f64,
                row.stop_all_ms,
                kib_mib(row.daemon_rss_kib),
                row.monitor_rss_kib,
                row.monitor_pss_kib,
                row.ps_p50_ms
            );
            rows.push(row);
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let per = |r: &SweepRow, v: f64| v / r.containers as f64;
            for (what, a, b) in [
                (
                    "start-all",
                    per(first, first.start_all_ms),
                    per(last, last.start_all_ms),
                ),
                (
                    "stop-all",
                    per(first, first.stop_all_ms),
                    per(last, last.stop_all_ms),
                ),
                ("ps", per(first, first.ps_p50_ms), per(last, last.ps_p50_ms)),
            ] {
                println!(
                    "  {what}: {:.3} ms/container at {} against {:.3} at {} ({})",
                    a,
                    first.containers,
                    b,
                    last.containers,
                    if b > a * 1.5 {
                        "worse than linear"
                    } else {
                        "linear or better"
                    }
                );
            }
        }
        rows
    }

    /// 1. Spec renamed into the dir -> running, one after the other, all kept running.
    fn drops(&self, n: usize) -> DropResult {
        println!();
        println!("== drop -> running ({n} specs renamed in one by one, kept running) ==");
        let (specs, out) = self.dirs("drop");
        let d = Daemon::start(self, "drop", &specs);
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("d{i:03}");
            let ready = out.join(format!("ready-{name}"));
            let body = self.spec(&format!("echo > /out/ready-{name}; {HOLD}"), &out, "");
            let t0 = drop_spec(&self.work, &specs, &name, &body);
            let t = wait_for(
                Duration::from_secs(30),
                &ready.display().to_string(),
                || ready.exists(),
            )
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
            times.push(t.duration_since(t0));
            // Drops from config tools do not come back to back.
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = d.running();
        assert_eq!(running.len(), n, "not all dropped containers run");
        let mem = d.memory("after the drops", &running);
        let stop = d.stop();
        let half = n / 2;
        println!(
            "  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  min {:.2} ms  max {:.2} ms",
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.9)),
            ms(pct(&times, 0.99)),
            ms(pct(&times, 0.0)),
            ms(pct(&times, 1.0))
        );
        if half > 0 {
            println!(
                "  p50 of the first {half}: {:.2} ms, of the last {}: {:.2} ms",
                ms(pct(&times[..half], 0.5)),
                n - half,
                ms(pct(&times[half..], 0.5))
            );
        }
        mem.print();
        println!(
            "  SIGTERM -> daemon exit 0 with {n} containers: {:.0} ms",
            ms(stop)
        );
        DropResult { times, mem }
    }

    /// 2 and 3. A daemon started with `n` specs in its dir, until all run; then memory.
    fn cold_start(&self, n: usize) -> ColdResult {
        println!();
        println!("== cold start: daemon spawned with {n} specs in the dir -> all running ==");
        let (specs, out) = self.dirs("cold");
        let mut ready = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("c{i:03}");
            std::fs::write(
                specs.join(format!("{name}.toml")),
                self.spec(&format!("echo > /out/ready-{name}; {HOLD}"), &out, ""),
            )
            .unwrap();
            ready.push(out.join(format!("ready-{name}")));
        }
        let t0 = Instant::now();
        let d = Daemon::spawn(self, "cold", &specs);
        let mut seen: Vec<Option<Duration>> = vec![None; n];
        let deadline = t0 + Duration::from_secs(180);
        while seen.iter().any(Option::is_none) {
            for (i, p) in ready.iter().enumerate() {
                if seen[i].is_none() && p.exists() {
                    seen[i] = Some(t0.elapsed());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} of {n} running after 180 s; daemon log:\n{}",
                    seen.iter().flatten().count(),
                    d.log()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut each: Vec<Duration> = seen.into_iter().flatten().collect();
        each.sort();
        let all = *each.last().unwrap();
        d.wait_socket();
        let running = d.running();
        assert_eq!(running.len(), n, "not all containers run");
        let mem = d.memory("after the cold start", &running);
        let stop = d.stop();
        println!(
            "  first running {:.1} ms, half {:.1} ms, all {n} {:.1} ms ({:.2} ms/container)",
            ms(each[0]),
            ms(each[n / 2]),
            ms(all),
            ms(all) / n as f64
        );
        mem.print();
        println!(
            "  SIGTERM -> daemon exit 0 with {n} containers: {:.0} ms",
            ms(stop)
        );
        ColdResult { all, mem }
    }

    /// Mounts, cgroups and container dirs of this run still present.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = mounts_under(&self.work)
            .into_iter()
            .map(|m| format!("mount {}", m.display()))
            .collect();
        for base in cgroup_bases() {
            if let Ok(rd) = std::fs::read_dir(&base) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&self.tag) {
                        left.push(format!("cgroup {}", e.path().display()));
                    }
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.root().join("containers")) {
            for e in rd.flatten() {
                left.push(format!("container dir {}", e.path().display()));
            }
        }
        left
    }
}

/// Writes the spec next to the spec dir (same filesystem) and renames it in; returns the
/// instant just before the rename.
fn drop_spec(work: &Path, specs: &Path, name: &str, body: &str) -> Instant {
    let tmp = work.join(format!("{name}.toml.staged"));
    std::fs::write(&tmp, body).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&tmp, specs.join(format!("{name}.toml"))).unwrap();
    t0
}

/// Writes `n` spec files `{prefix}NNNNN.toml` with `body` into `staging`, then renames them all
/// into `specs` one right after the other, as a config tool dropping a batch would. Returns
/// the instant the renames began and the files' names.
fn move_in_at_once(
    staging: &Path,
    specs: &Path,
    prefix: &str,
    n: usize,
    body: &str,
) -> (Instant, Vec<String>) {
    std::fs::create_dir_all(staging).unwrap();
    let files: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}.toml")).collect();
    for f in &files {
        std::fs::write(staging.join(f), body).unwrap();
    }
    let t0 = Instant::now();
    for f in &files {
        std::fs::rename(staging.join(f), specs.join(f)).unwrap();
    }
    (t0, files)
}

/// Opens the FIFO for writing once the container waits on it, and writes a line: the
/// container's `read` returns and it exits 1. Returns the instant just before the write.
fn release_fifo(go: &Path) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(go)
        {
            Ok(mut f) => {
                let t = Instant::now();
                f.write_all(b"\n").unwrap();
                return t;
            }
            // ENXIO: no reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(POLL)
            }
            Err(e) => panic!("opening {}: {e}", go.display()),
        }
    }
}

/// A daemon of one phase: its own spec dir, socket, log and cgroup parent.
struct Daemon<'a> {
    bench: &'a Bench,
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    cgroup_parent: String,
}

impl<'a> Daemon<'a> {
    fn spawn(bench: &'a Bench, phase: &str, specs: &Path) -> Daemon<'a> {
        let dir = bench.work.join(phase);
        let socket = dir.join("berth.sock");
        let log = dir.join("daemon.log");
        let cgroup_parent = format!("{}-{phase}", bench.tag);
        let logf = std::fs::File::create(&log).unwrap();
        let child = bench
            .berth(&cgroup_parent)
            .arg("--socket")
            .arg(&socket)
            .arg("supervise")
            .arg("--specs")
            .arg(specs)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        Daemon {
            bench,
            child: Some(child),
            socket,
            log,
            cgroup_parent,
        }
    }

    fn start(bench: &'a Bench, phase: &str, specs: &Path) -> Daemon<'a> {
        let d = Daemon::spawn(bench, phase, specs);
        d.wait_socket();
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn wait_socket(&self) {
        wait_for(Duration::from_secs(20), "the daemon's socket", || {
            std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", self.log()));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ps(&self) -> Vec<serde_json::Value> {
        self.timed_ps().1
    }

    /// `berth ps --json`: how long the command took (start to exit, not counting this
    /// bench's parse of its output), and its rows.
    fn timed_ps(&self) -> (Duration, Vec<serde_json::Value>) {
        let t = Instant::now();
        let out = self
            .bench
            .berth(&self.cgroup_parent)
            .arg("--socket")
            .arg(&self.socket)
            .args(["ps", "--json"])
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "berth ps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (took, serde_json::from_slice(&out.stdout).unwrap())
    }

    fn status(&self, name: &str) -> serde_json::Value {
        self.ps()
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or_default()
    }

    /// Init pids of the running containers.
    fn running(&self) -> Vec<i32> {
        self.ps()
            .iter()
            .filter(|c| c["state"] == "running")
            .filter_map(|c| c["pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    }

    fn memory(&self, when: &'static str, inits: &[i32]) -> Memory {
        let mut monitors: Vec<i32> = inits.iter().filter_map(|p| ppid(*p)).collect();
        monitors.sort();
        monitors.dedup();
        assert_eq!(monitors.len(), inits.len(), "one monitor per container");
        assert!(!monitors.contains(&self.pid()), "the daemon is no monitor");
        // The zygote the monitors were forked from counts with them (its pages are shared
        // with theirs).
        let mut zygotes: Vec<i32> = monitors
            .iter()
            .filter_map(|p| ppid(*p))
            .filter(|p| *p != self.pid())
            .collect();
        zygotes.sort();
        zygotes.dedup();
        monitors.extend(zygotes);
        Memory {
            when,
            containers: inits.len(),
            daemon_rss: status_kib(self.pid(), "VmRSS:").unwrap_or(0),
            daemon_pss: rollup_kib(self.pid(), "Pss:").unwrap_or(0),
            monitor_rss: monitors
                .iter()
                .map(|p| status_kib(*p, "VmRSS:").unwrap_or(0))
                .sum(),
            monitor_pss: monitors
                .iter()
                .map(|p| rollup_kib(*p, "Pss:").unwrap_or(0))
                .sum(),
        }
    }

    /// SIGTERM: the daemon stops every container and exits 0. Returns how long that took.
    fn stop(mut self) -> Duration {
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let code = wait_child(&mut child, Duration::from_secs(120));
        let took = t0.elapsed();
        assert_eq!(code, Some(0), "daemon exit; log:\n{}", self.log());
        let leaked: Vec<PathBuf> = cgroup_bases()
            .iter()
            .filter_map(|b| std::fs::read_dir(b.join(&self.cgroup_parent)).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        if !leaked.is_empty() {
            println!("  cgroups left after the daemon exited: {leaked:?}");
        }
        remove_cgroup_parent(&self.cgroup_parent);
        took
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(120)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            remove_cgroup_parent(&self.cgroup_parent);
        }
    }
}

impl Memory {
    fn print(&self) {
        let n = self.containers.max(1) as f64;
        println!(
            "  memory with {} running: daemon RSS {:.1} MiB, PSS {:.1} MiB; monitors RSS {:.1} MiB total ({:.0} KiB/container), PSS {:.1} MiB total ({:.0} KiB/container)",
            self.containers,
            kib_mib(self.daemon_rss),
            kib_mib(self.daemon_pss),
            kib_mib(self.monitor_rss),
            self.monitor_rss as f64 / n,
            kib_mib(self.monitor_pss),
            self.monitor_pss as f64 / n,
        );
    }
}

/// 2 (comparison). `n` sequential `run -d` of the same busybox rootfs with podman and docker.
fn compare_engines(bench: &Bench, n: usize) -> Vec<EngineResult> {
    println!();
    println!("== {n} x `run -d` of the same busybox rootfs with other engines ==");
    let mut results = Vec::new();
    if std::env::var("BENCH_PODMAN").as_deref() == Ok("0") {
        println!("podman: skipped (BENCH_PODMAN=0)");
    } else if let Some(r) = podman(bench, n) {
        results.push(r);
    }
    if let Some(r) = docker(bench, n) {
        results.push(r);
    }
    results
}

/// The busybox image's layer unpacked into a plain dir (for `--rootfs` / `docker import`).
fn rootfs(bench: &Bench) -> PathBuf {
    let rootfs = bench.work.join("rootfs");
    common::unpack_rootfs(&bench.work.join("image"), &rootfs);
    rootfs
}

fn podman(bench: &Bench, n: usize) -> Option<EngineResult> {
    let bin = match which("podman") {
        Some(b) => b,
        None => {
            println!("podman: not installed; trying `apt-get install -y podman`");
            let out = Command::new("apt-get")
                .args(["install", "-y", "podman"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                println!(
                    "podman: apt-get install failed, skipped: {}",
                    err.lines().last().unwrap_or("")
                );
                return None;
            }
            which("podman")?
        }
    };
    let dir = bench.work.join("podman");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let rootfs = rootfs(bench);
    let cgroup_parent = format!("{}-podman", bench.tag);
    let base = podman_base(&dir);
    let cmd = |args: &[OsString]| {
        let mut c = Command::new(&bin);
        c.args(&base).args(args).stdin(Stdio::null());
        c
    };
    let run_args = |name: &str, script: &str| -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["run".into()];
        // This host's root lacks CAP_SYS_RESOURCE: podman's default rlimits (1M files, 4M
        // processes) cannot be set, so ask for lower ones.
        for a in [
            "-d",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--name",
            name,
        ] {
            v.push(a.into());
        }
        v.push("--cgroup-parent".into());
        v.push(format!("/{cgroup_parent}").into());
        v.push("-v".into());
        v.push(format!("{}:/out", out.display()).into());
        // The same rootfs with a per-container overlay (like berth's writable layer).
        v.push("--rootfs".into());
        v.push(format!("{}:O", rootfs.display()).into());
        for a in ["sh", "-c", script] {
            v.push(a.into());
        }
        v
    };
    // Subreaper: conmon daemonizes; its zombies come back to us instead of an init that may
    // not reap them.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let version = cmd(&["--version".into()]).output().ok();
    let version = version
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("{version} (runtime from its defaults, --cgroup-manager=cgroupfs --events-backend=file --storage-driver=overlay, --rootfs DIR:O)");
    let result = (|| {
        // Warm-up (storage init), not timed.
        let mut warm = run_args("pb-warm", "true");
        warm[1] = "--rm".into();
        let o = cmd(&warm).output().unwrap();
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        let mut per_run = Vec::with_capacity(n);
        let t0 = Instant::now();
        for i in 0..n {
            let name = format!("p{i:03}");
            let t = Instant::now();
            let o = cmd(&run_args(
                &name,
                &format!("echo > /out/ready-{name}; {HOLD}"),
            ))
            .output()
            .unwrap();
            if !o.status.success() {
                return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
            }
            per_run.push(t.elapsed());
        }
        let ready: Vec<PathBuf> = (0..n).map(|i| out.join(format!("ready-p{i:03}"))).collect();
        let all = wait_for(Duration::from_secs(60), "podman containers ready", || {
            ready.iter().all(|p| p.exists())
        })?
        .duration_since(t0);
        println!(
            "  podman: all {n} running {:.1} ms ({:.2} ms/container); one `podman run -d` p50 {:.1} ms  p90 {:.1} ms",
            ms(all),
            ms(all) / n as f64,
            ms(pct(&per_run, 0.5)),
            ms(pct(&per_run, 0.9))
        );
        // conmon is the per-container monitor: its PSS for comparison.
        let o = cmd(&["ps".into(), "-q".into(), "--no-trunc".into()])
            .output()
            .unwrap();
        let ids: Vec<OsString> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(OsString::from)
            .collect();
        let mut args: Vec<OsString> = vec![
            "inspect".into(),
            "--format".into(),
            "{{.State.ConmonPid}}".into(),
        ];
        args.extend(ids);
        let o = cmd(&args).output().unwrap();
        let conmons: Vec<i32> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let pss: u64 = conmons
            .iter()
            .map(|p| rollup_kib(*p, "Pss:").unwrap_or(0))
            .sum();
        let rss: u64 = conmons
            .iter()
            .map(|p| status_kib(*p, "VmRSS:").unwrap_or(0))
            .sum();
        println!(
            "  podman memory: {} conmon processes, RSS {:.0} KiB/container, PSS {:.0} KiB/container (no daemon)",
            conmons.len(),
            rss as f64 / conmons.len().max(1) as f64,
            pss as f64 / conmons.len().max(1) as f64
        );
        Ok((all, pss, rss))
    })();
    // Cleanup: stop (SIGTERM, then KILL after 10 s) and remove every container.
    let t = Instant::now();
    let o = cmd(&[
        "rm".into(),
        "-a".into(),
        "-f".into(),
        "-t".into(),
        "10".into(),
    ])
    .output()
    .unwrap();
    if !o.status.success() {
        println!(
            "  podman rm -af failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    } else if result.is_ok() {
        println!("  podman rm -af -t 10 of {n}: {:.0} ms", ms(t.elapsed()));
    }
    reap_orphans(Duration::from_secs(5));
    let _ = nix::sys::prctl::set_child_subreaper(false);
    unmount_under(&dir);
    remove_cgroup_parent(&cgroup_parent);
    match result {
        Ok((all, pss, rss)) => Some(EngineResult {
            name: "podman".into(),
            version,
            all: Some(all),
            monitor_pss: Some(pss),
            monitor_rss: Some(rss),
        }),
        Err(e) => {
            println!("podman: cannot run containers here, skipped: {e}");
            None
        }
    }
}

/// `podman stop -a -t 2` of `n` running `sleep` containers (which ignore SIGTERM as PID 1),
/// with the same storage flags as [`podman`]; `None` where podman cannot run.
fn podman_stop_all(bench: &Bench, n: usize) -> Option<Duration> {
    println!();
    println!("== podman stop -a -t 2 of {n} `sleep` containers ==");
    let Some(bin) = which("podman") else {
        println!("podman: not installed, skipped");
        return None;
    };
    let dir = bench.work.join("podman-stop");
    let cgroup_parent = format!("{}-podman-stop", bench.tag);
    let base = podman_base(&dir);
    let rootfs = rootfs(bench);
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(&base).args(args).stdin(Stdio::null());
        c
    };
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let parent = format!("/{cgroup_parent}");
    let root_arg = format!("{}:O", rootfs.display());
    let mut result = Ok(());
    for i in 0..n {
        let name = format!("ps{i:03}");
        let o = cmd(&[
            "run",
            "-d",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--name",
            &name,
            "--cgroup-parent",
            &parent,
            "--rootfs",
            &root_arg,
            "sleep",
            "100000",
        ])
        .output()
        .unwrap();
        if !o.status.success() {
            result = Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
            break;
        }
    }
    let took = result.map(|()| {
        let t = Instant::now();
        let o = cmd(&["stop", "-a", "-t", "2"]).output().unwrap();
        let took = t.elapsed();
        if !o.status.success() {
            println!(
                "  podman stop -a failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        println!("  podman stop -a -t 2 of {n}: {:.0} ms", ms(took));
        took
    });
    let _ = cmd(&["rm", "-a", "-f", "-t", "0"]).output();
    reap_orphans(Duration::from_secs(5));
    let _ = nix::sys::prctl::set_child_subreaper(false);
    unmount_under(&dir);
    remove_cgroup_parent(&cgroup_parent);
    match took {
        Ok(t) => Some(t),
        Err(e) => {
            println!("podman: cannot run containers here, skipped: {e}");
            None
        }
    }
}

/// podman's global flags for a run of its own under `dir`: own storage, run and network-config
/// dirs; cgroupfs and file events (no systemd here); runc on hybrid cgroup hosts, where crun
/// refuses to run, when it is installed.
fn podman_base(dir: &Path) -> Vec<OsString> {
    let mut base: Vec<OsString> = Vec::new();
    for (flag, sub) in [
        ("--root", "root"),
        ("--runroot", "run"),
        ("--tmpdir", "tmp"),
        ("--network-config-dir", "net"),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        base.push(flag.into());
        base.push(dir.join(sub).into());
    }
    for f in [
        "--cgroup-manager=cgroupfs",
        "--events-backend=file",
        "--storage-driver=overlay",
    ] {
        base.push(f.into());
    }
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    if let (true, Some(runc)) = (hybrid, which("runc")) {
        base.push("--runtime".into());
        base.push(runc.into());
    }
    base
}

/// Docker only when an engine already answers; none is started.
fn docker(bench: &Bench, n: usize) -> Option<EngineResult> {
    let Some(bin) = which("docker") else {
        println!("docker: not installed, skipped");
        return None;
    };
    let mut probe = Command::new(&bin)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if wait_child(&mut probe, Duration::from_secs(10)) != Some(0) {
        let _ = probe.kill();
        let _ = probe.wait();
        println!("docker: no engine, skipped");
        return None;
    }
    let out = bench.work.join("docker-out");
    std::fs::create_dir_all(&out).unwrap();
    let image = format!("{}:busybox", bench.tag);
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs(bench))
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = Command::new(&bin)
        .args(["import", "-", &image])
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let _ = tar.wait();
    if !st.success() {
        println!("docker: import failed, skipped");
        return None;
    }
    let names: Vec<String> = (0..n).map(|i| format!("{}-{i:03}", bench.tag)).collect();
    let t0 = Instant::now();
    let mut failed = None;
    for (i, name) in names.iter().enumerate() {
        let o = Command::new(&bin)
            .args(["run", "-d", "--network", "none", "--name", name])
            .arg("--cgroup-parent")
            .arg(format!("/{}-docker", bench.tag))
            .arg("-v")
            .arg(format!("{}:/out", out.display()))
            .arg(&image)
            .args(["sh", "-c", &format!("echo > /out/ready-{i:03}; {HOLD}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !o.status.success() {
            failed = Some(String::from_utf8_lossy(&o.stderr).trim().to_string());
            break;
        }
    }
    let all = if failed.is_none() {
        wait_for(Duration::from_secs(60), "docker containers ready", || {
            (0..n).all(|i| out.join(format!("ready-{i:03}")).exists())
        })
        .ok()
        .map(|t| t.duration_since(t0))
    } else {
        None
    };
    let _ = Command::new(&bin)
        .args(["rm", "-f"])
        .args(&names)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = Command::new(&bin)
        .args(["rmi", &image])
        .stdout(Stdio::null())
        .status();
    remove_cgroup_parent(&format!("{}-docker", bench.tag));
    match (all, failed) {
        (Some(all), _) => {
            println!(
                "  docker: all {n} running {:.1} ms ({:.2} ms/container)",
                ms(all),
                ms(all) / n as f64
            );
            Some(EngineResult {
                name: "docker".into(),
                version: String::new(),
                all: Some(all),
                monitor_pss: None,
                monitor_rss: None,
            })
        }
        (None, e) => {
            println!("docker: failed, skipped: {}", e.unwrap_or_default());
            None
        }
    }
}

/// Reaps the children we inherited as subreaper until none is left (or the time is up).
fn reap_orphans(timeout: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
            Err(_) => return, // ECHILD: nothing left
        }
    }
}

/// Polls `cond` every 0.2 ms; returns the instant it first held.
fn wait_for(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn ppid(pid: i32) -> Option<i32> {
    status_kib(pid, "PPid:").map(|p| p as i32)
}

/// The number after `key` in /proc/PID/status.
fn status_kib(pid: i32, key: &str) -> Option<u64> {
    field(&format!("/proc/{pid}/status"), key)
}

/// The number after `key` in /proc/PID/smaps_rollup (kB).
fn rollup_kib(pid: i32, key: &str) -> Option<u64> {
    field(&format!("/proc/{pid}/smaps_rollup"), key)
}

fn field(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Nearest-rank percentile (q in 0..=1) of unsorted durations.
fn pct(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn kib_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Detaches mounts left under `dir` (podman's overlay storage), deepest first.
fn unmount_under(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
