//! `berth run` benchmarks on the busybox image, in one run:
//!
//! - one-shot start-to-exit of `/bin/true`, `berth run` against `crun run` and `runc run`
//!   (those installed) of the same rootfs, interleaved after warm-ups: median, min, p90 and max
//!   wall time and median cpu (the children's rusage), without limits, with memory/cpu/pids
//!   limits, and with berth in bridge mode; berth's peak RSS; JSON in target/bench/run.json;
//! - container start and stop with `mode = "bridge"` against `mode = "none"`, min(runs, 100)
//!   runs each, alternating: start is from spawning `berth run` until the container's first
//!   output byte arrives on a pipe, stop from there until berth exits; median and p90 of start,
//!   median of stop, and bridge - none of both (target: start adds < 5 ms per container);
//! - TCP throughput of HTTP (busybox httpd serving 64 MiB from a tmpfs, busybox wget) between
//!   two bridge containers against a bare veth pair between two network namespaces, the arms
//!   alternating: median Mbit/s of each and bridge/veth in % (target: >= 80%).
//!
//! The network parts run inside network namespaces the benchmark creates, never the host's.
//! berth is the binary it ships (`common::berth_binary`: packaging/build-static); the one-shot
//! comparison also runs cargo's dynamic glibc build as `berth-glibc`.
//! Run as root: `cargo bench --bench run` (env `BENCH_RUNS`, default 200; `BENCH_ONLY=one-shot`
//! stops after the one-shot comparison; `BENCH_BERTH`, see `common::berth_binary`).

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
    hide_hybrid_controllers();
    let berth = common::berth_binary();
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
    // Warm the layer store.
    assert!(
        berth_run(&berth, &root, &spec).status().unwrap().success(),
        "berth run failed"
    );
    let probe = berth_run(&berth, &root, &spec);
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
    let mut report = Vec::new();
    for variant in &VARIANTS {
        match one_shot(&berth, work.path(), &image, &image_dir, variant, runs) {
            Ok(rows) => report.push(serde_json::json!({ "variant": variant.name, "arms": rows })),
            Err(e) => println!("one-shot {}: failed: {e}", variant.name),
        }
    }
    println!(
        "  berth peak RSS (largest child): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    common::write_results(
        "run",
        &serde_json::json!({
            "machine": common::machine(),
            "runs": runs,
            "one_shot": report,
            "peak_rss_kib": peak_kib,
        }),
    );
    if std::env::var("BENCH_ONLY").as_deref() != Ok("one-shot") {
        bridge_start(&berth, work.path(), &image, runs.min(100));
        bridge_throughput(&berth, work.path(), &image);
    }
    common::remove_cgroup_parent("berth-bench");
}

/// Container start and stop with `mode = "bridge"` against `mode = "none"`, in the same run.
///
/// Each mode's runs happen in a network namespace of its own that the spawning thread creates
/// (so no bridge touches the host's; the bridge is made by a warm-up run and reused, as on a
/// host); the runs alternate between the modes, so machine noise hits both alike. start is
/// from spawning `berth run` of `/bin/echo up` until the first byte of that output arrives on
/// a pipe (berth's start-up, prepare, network attach, clone, pivot_root, exec); stop is from
/// there until berth exits (teardown including the network detach).
fn bridge_start(berth: &Path, work: &Path, image: &str, runs: usize) {
    if which("ip").is_none() || which("nft").is_none() {
        println!("bridge start: ip or nft missing, skipped");
        return;
    }
    const MODES: [&str; 2] = ["none", "bridge"];
    let root = work.join("root-net");
    let specs = MODES.map(|mode| {
        let spec = work.join(format!("start-{mode}.toml"));
        std::fs::write(
            &spec,
            format!(
                "image = {image:?}\ncommand = [\"/bin/echo\", \"up\"]\n[network]\nmode = \"{mode}\"\n"
            ),
        )
        .unwrap();
        spec
    });
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<[Vec<(Duration, Duration)>; 2], String> {
            // This thread alone changes namespaces; the processes it spawns inherit them.
            let mut netns = Vec::new();
            for mode in MODES {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET) for {mode}: {e}"))?;
                netns.push(
                    File::open("/proc/thread-self/ns/net")
                        .map_err(|e| format!("opening the {mode} netns: {e}"))?,
                );
                run_quiet(Command::new("ip").args(["link", "set", "lo", "up"]))?;
            }
            let mut samples = [Vec::with_capacity(runs), Vec::with_capacity(runs)];
            // Round 0 is the warm-up (it creates the bridge); odd rounds start with bridge.
            for round in 0..=runs {
                for k in 0..MODES.len() {
                    let m = (k + round) % MODES.len();
                    setns(&netns[m], CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("setns to the {} netns: {e}", MODES[m]))?;
                    let err = work.join(format!("start-{}.err", MODES[m]));
                    let t = start_and_stop(berth, &root, &specs[m], &err)?;
                    if round > 0 {
                        samples[m].push(t);
                    }
                }
            }
            Ok(samples)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    unmount_leftover_pins(&root);
    let samples = match result {
        Ok(s) => s,
        Err(e) => {
            println!("bridge start: failed: {e}");
            return;
        }
    };
    println!(
        "{runs} runs each of /bin/echo, network none and bridge alternating, each mode in a netns of its own:"
    );
    let mut start_median = [Duration::ZERO; 2];
    let mut stop_median = [Duration::ZERO; 2];
    for (m, mode) in MODES.iter().enumerate() {
        let mut start: Vec<Duration> = samples[m].iter().map(|t| t.0).collect();
        let mut stop: Vec<Duration> = samples[m].iter().map(|t| t.1).collect();
        start_median[m] = median(&mut start);
        stop_median[m] = median(&mut stop);
        println!(
            "  {mode:<7} start median {:>7.2} ms  p90 {:>7.2} ms  stop median {:>7.2} ms",
            ms(start_median[m]),
            ms(start[start.len() * 9 / 10]),
            ms(stop_median[m])
        );
    }
    println!(
        "  bridge - none: start {:+.2} ms per container (target < 5 ms), stop {:+.2} ms",
        ms(start_median[1]) - ms(start_median[0]),
        ms(stop_median[1]) - ms(stop_median[0])
    );
}

/// One `berth run` of `spec`, whose container prints "up": the time until the first byte of
/// its output arrives on our pipe, and from then until berth exits. berth's stderr goes to
/// `err`, shown when the run fails.
fn start_and_stop(
    berth: &Path,
    root: &Path,
    spec: &Path,
    err: &Path,
) -> Result<(Duration, Duration), String> {
    let stderr = File::create(err).map_err(|e| format!("{}: {e}", err.display()))?;
    let mut cmd = berth_run(berth, root, spec);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", berth.display()))?;
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let read = out.read_exact(&mut first);
    let start = t0.elapsed();
    let status = child
        .wait()
        .map_err(|e| format!("waiting for berth: {e}"))?;
    let total = t0.elapsed();
    drop(out);
    if read.is_err() || first[0] != b'u' || !status.success() {
        return Err(format!(
            "berth run {}: {status}, first output byte {:?}: {}",
            spec.display(),
            read.map(|()| first[0] as char),
            std::fs::read_to_string(err).unwrap_or_default().trim()
        ));
    }
    Ok((start, total - start))
}

/// Transfers of one 64 MiB file in a sample, samples per arm.
const TPUT_TRANSFERS: usize = 8;
const TPUT_SAMPLES: usize = 5;

/// TCP throughput of HTTP (busybox httpd serving 64 MiB from a tmpfs, busybox wget to
/// /dev/null) between two bridge containers, against the same programs over a bare veth pair
/// between two network namespaces, in the same run; the arms alternate, the transfers are
/// timed here. Everything happens inside a network namespace made for it.
fn bridge_throughput(berth: &Path, work: &Path, image: &str) {
    let (Some(busybox), Some(_), Some(_), Some(_)) = (
        which("busybox"),
        which("ip"),
        which("nft"),
        which("nsenter"),
    ) else {
        println!("throughput: busybox, ip, nft or nsenter missing, skipped");
        return;
    };
    let root = work.join("root-tput");
    let server = work.join("tput-server.toml");
    let client = work.join("tput-client.toml");
    std::fs::write(
        &server,
        format!(
            "image = {image:?}\ncommand = [\"sh\", \"-c\", \"trap 'exit 0' TERM; dd if=/dev/zero of=/dev/shm/big bs=1M count=64 2>/dev/null; httpd -p 80 -h /dev/shm; while :; do sleep 0.2; done\"]\n\
             [network]\nmode = \"bridge\"\nip = \"10.89.0.50\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        &client,
        format!(
            "image = {image:?}\ncommand = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.2; done\"]\n\
             [network]\nmode = \"bridge\"\n"
        ),
    )
    .unwrap();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let mut started = Started::default();
            let samples = throughput_arms(&mut started, berth, work, &root, &busybox);
            let problems = started.stop_all();
            match samples {
                Ok(s) if problems.is_empty() => Ok(s),
                Ok(_) => Err(format!("stopping: {}", problems.join("; "))),
                Err(e) => Err(e),
            }
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    unmount_leftover_pins(&root);
    let [mut bridge, mut veth] = match result {
        Ok(s) => s,
        Err(e) => {
            println!("throughput: failed: {e}");
            return;
        }
    };
    let (b, v) = (median_f64(&mut bridge), median_f64(&mut veth));
    println!(
        "HTTP over TCP (busybox httpd -> wget), {TPUT_SAMPLES} samples of {TPUT_TRANSFERS} x 64 MiB per arm, alternating, inside a netns:"
    );
    for (name, med, all) in [
        ("bridge container -> container", b, &bridge),
        ("bare veth pair", v, &veth),
    ] {
        println!(
            "  {name:<30} median {med:>6.0} Mbit/s  (min {:.0}, max {:.0})",
            all[0],
            all[all.len() - 1]
        );
    }
    println!("  bridge/veth {:.0}% (target >= 80%)", 100.0 * b / v);
}

/// Sets up both arms in the calling thread's (new) network namespace, recording in `started`
/// what to undo, and returns the Mbit/s samples of the bridge and the veth arm.
fn throughput_arms(
    started: &mut Started,
    berth: &Path,
    work: &Path,
    root: &Path,
    busybox: &Path,
) -> Result<[Vec<f64>; 2], String> {
    const BIG: usize = 64 << 20;
    run_quiet(Command::new("ip").args(["link", "set", "lo", "up"]))?;

    // Bare veth arm: httpd here on tpa, the client's netns is held by a `sleep`.
    let www = work.join("tput-www");
    std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    mount(
        Some("tmpfs"),
        &www,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=80m,mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", www.display()))?;
    started.mounts.push(www.clone());
    std::fs::write(www.join("big"), vec![0u8; BIG]).map_err(|e| format!("writing big: {e}"))?;
    let holder = started.spawn(
        "netns holder",
        Command::new("unshare").args(["--net", "sleep", "1000"]),
        None,
    )?;
    let ours = std::fs::read_link("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    let peer = PathBuf::from(format!("/proc/{holder}/ns/net"));
    wait_for(
        "the netns holder to unshare",
        Duration::from_secs(5),
        || Ok(std::fs::read_link(&peer).is_ok_and(|ns| ns != ours)),
    )?;
    started.links.push("tpa".into());
    run_quiet(Command::new("ip").args([
        "link",
        "add",
        "tpa",
        "type",
        "veth",
        "peer",
        "name",
        "tpb",
        "netns",
        &holder.to_string(),
    ]))?;
    run_quiet(Command::new("ip").args(["addr", "add", "10.250.0.1/24", "dev", "tpa"]))?;
    run_quiet(Command::new("ip").args(["link", "set", "tpa", "up"]))?;
    let in_peer = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", peer.display())).args(args);
        c
    };
    run_quiet(&mut in_peer(&["ip", "link", "set", "lo", "up"]))?;
    run_quiet(&mut in_peer(&[
        "ip",
        "addr",
        "add",
        "10.250.0.2/24",
        "dev",
        "tpb",
    ]))?;
    run_quiet(&mut in_peer(&["ip", "link", "set", "tpb", "up"]))?;
    let mut httpd = Command::new(busybox);
    httpd
        .args(["httpd", "-f", "-p", "10.250.0.1:80", "-h"])
        .arg(&www);
    started.spawn("busybox httpd", &mut httpd, None)?;

    // Bridge arm: a server and a client container; the client's netns is pinned by berth.
    let server = work.join("tput-server.toml");
    let client = work.join("tput-client.toml");
    let server_err = work.join("tput-server.err");
    let client_err = work.join("tput-client.err");
    started.spawn(
        "berth run (server)",
        &mut berth_run(berth, root, &server),
        Some(&server_err),
    )?;
    let pin = |name: &str| -> Option<PathBuf> {
        std::fs::read_dir(root.join("netns"))
            .ok()?
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-"))
            })
            .map(|e| e.path())
    };
    wait_for(
        "the server container's netns",
        Duration::from_secs(30),
        || {
            started.check_running()?;
            Ok(pin("tput-server").is_some())
        },
    )?;
    started.spawn(
        "berth run (client)",
        &mut berth_run(berth, root, &client),
        Some(&client_err),
    )?;
    let mut client_ns = None;
    wait_for(
        "the client container's netns",
        Duration::from_secs(30),
        || {
            started.check_running()?;
            client_ns = pin("tput-client");
            Ok(client_ns.is_some())
        },
    )?;
    let client_ns = client_ns.unwrap();

    let arms = [
        (client_ns.as_path(), "http://10.89.0.50/big"),
        (peer.as_path(), "http://10.250.0.1/big"),
    ];
    let fetch = |ns: &Path, url: &str, times: usize, spider: bool| -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(
                "i=0; while [ $i -lt \"$1\" ]; do \
                 nsenter --net=\"$2\" \"$3\" wget -q -O /dev/null $5 \"$4\" || exit 1; i=$((i+1)); \
                 done",
            )
            .arg("sh")
            .arg(times.to_string())
            .arg(ns)
            .arg(busybox)
            .arg(url)
            .arg(if spider { "--spider" } else { "" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    for (ns, url) in arms {
        wait_for(&format!("{url} to answer"), Duration::from_secs(30), || {
            started.check_running()?;
            Ok(fetch(ns, url, 1, true).status().is_ok_and(|s| s.success()))
        })?;
        // One untimed transfer, so both arms start warm.
        run_quiet(&mut fetch(ns, url, 1, false))?;
    }
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..TPUT_SAMPLES {
        for k in 0..arms.len() {
            let a = (k + round) % arms.len();
            let (ns, url) = arms[a];
            let mut c = fetch(ns, url, TPUT_TRANSFERS, false);
            let t0 = Instant::now();
            let st = c.status().map_err(|e| format!("running sh: {e}"))?;
            let secs = t0.elapsed().as_secs_f64();
            if !st.success() {
                started.check_running()?;
                return Err(format!("wget {url} from {}: {st}", ns.display()));
            }
            samples[a].push((TPUT_TRANSFERS * BIG * 8) as f64 / secs / 1e6);
        }
    }
    Ok(samples)
}

/// Processes, links and mounts the throughput arms made, undone by [`Started::stop_all`] or,
/// on a failure path, when dropped. Must be dropped on the thread (netns) that made them.
#[derive(Default)]
struct Started {
    children: Vec<(String, Child, Option<PathBuf>)>,
    links: Vec<String>,
    mounts: Vec<PathBuf>,
}

impl Started {
    /// Spawns `cmd` in the background (stdout to /dev/null, stderr to `err` or /dev/null);
    /// returns its pid.
    fn spawn(&mut self, what: &str, cmd: &mut Command, err: Option<&Path>) -> Result<u32, String> {
        let stderr = match err {
            Some(p) => Stdio::from(File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => Stdio::null(),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawning {what}: {e}"))?;
        let pid = child.id();
        self.children
            .push((what.to_string(), child, err.map(Path::to_path_buf)));
        Ok(pid)
    }

    /// An error naming the first background process that has already exited.
    fn check_running(&mut self) -> Result<(), String> {
        for (what, child, err) in &mut self.children {
            if let Ok(Some(st)) = child.try_wait() {
                let log = err
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                return Err(format!("{what} exited early: {st} {}", log.trim()));
            }
        }
        Ok(())
    }

    /// SIGTERM to every background process (by pid, newest first), waits for each (SIGKILL
    /// after 10 s), then removes the links and unmounts the mounts. Returns what went wrong:
    /// a process that needed SIGKILL or a `berth run` that did not exit with 0.
    fn stop_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (_, child, _) in self.children.iter().rev() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (what, mut child, err) in self.children.drain(..).rev() {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break Some(st),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        problems.push(format!("{what} ignored SIGTERM, killed"));
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                    Err(e) => {
                        problems.push(format!("waiting for {what}: {e}"));
                        break None;
                    }
                }
            };
            if let (Some(st), Some(err)) = (status, err) {
                if !st.success() {
                    let log = std::fs::read_to_string(&err).unwrap_or_default();
                    problems.push(format!("{what}: {st} {}", log.trim()));
                }
            }
        }
        for link in self.links.drain(..) {
            let _ = Command::new("ip")
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
        }
        for m in self.mounts.drain(..).rev() {
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                problems.push(format!("unmounting {}: {e}", m.display()));
            }
        }
        problems
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// `berth --root ROOT --cgroup-parent berth-bench run SPEC`.
fn berth_run(berth: &Path, root: &Path, spec: &Path) -> Command {
    let mut c = Command::new(berth);
    c.arg("--root")
        .arg(root)
        .arg("--cgroup-parent")
        .arg("berth-bench")
        .arg("run")
        .arg(spec);
    c
}

/// Runs `cmd` to completion; an error with its stderr unless it succeeds.
fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?}: {}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls `ready` every 10 ms until it returns true, at most for `limit`.
fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !ready()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Unmounts namespace pins a `berth run` left under `<root>/netns/` (none when it tore down
/// cleanly), so the work dir can be removed; says so when there were any.
fn unmount_leftover_pins(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root.join("netns")) else {
        return;
    };
    for e in dir.flatten() {
        println!("  note: berth left {} behind", e.path().display());
        let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
/// An OCI runtime bundle of the busybox image for runc and crun: `runc spec`'s (or `crun
/// spec`'s) defaults running /bin/true without a terminal, with the variant's limits, and
/// the image's rootfs unpacked once under `work/rootfs`. None when neither runtime is there.
fn runtime_bundle(work: &Path, image_dir: &Path, v: &Variant) -> Option<PathBuf> {
    let tool = which("runc").or_else(|| which("crun"))?;
    let rootfs = work.join("rootfs");
    common::unpack_rootfs(image_dir, &rootfs);
    let bundle = work.join(format!("bundle-{}", v.name));
    std::fs::create_dir_all(&bundle).unwrap();
    let _ = std::fs::remove_file(bundle.join("config.json"));
    assert!(Command::new(tool)
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .unwrap()
        .success());
    let cfg = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    let mut c: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    c["root"]["path"] = rootfs.display().to_string().into();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/bin/true"]);
    if v.limits {
        c["linux"]["resources"] = serde_json::json!({
            "memory": { "limit": 64u64 << 20 },
            "cpu": { "quota": 50000, "period": 100000 },
            "pids": { "limit": 64 },
        });
    }
    std::fs::write(bundle.join("config.json"), c.to_string()).unwrap();
    Some(bundle)
}

/// crun refuses a hybrid host whose controller-less cgroup2 mount lists a controller
/// (hugetlb): the whole benchmark runs in a private mount namespace where that one file reads
/// empty, which changes nothing on the host and nothing berth or runc look at. Called while
/// the process is single-threaded.
fn hide_hybrid_controllers() {
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let listed = std::fs::read_to_string(controllers).unwrap_or_default();
    if listed.trim().is_empty() {
        return;
    }
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making / private");
    mount(
        Some("/dev/null"),
        controllers,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("binding /dev/null over the unified cgroup.controllers");
    println!(
        "hybrid host: the unified hierarchy lists {:?}; hidden for crun in this benchmark's own mount namespace",
        listed.trim()
    );
}

/// One shape of the one-shot comparison: what berth's spec adds after the command, whether
/// the runtimes' bundle carries the same limits, and whether it runs in a netns of its own
/// (bridge mode; runc and crun there get a netns with nothing in it, a lower bound for them).
struct Variant {
    name: &'static str,
    spec: &'static str,
    limits: bool,
    bridge: bool,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "plain",
        spec: "[network]\nmode = \"none\"\n",
        limits: false,
        bridge: false,
    },
    Variant {
        name: "limits",
        spec: "[resources]\nmemory = \"64M\"\ncpus = 0.5\npids = 64\n[network]\nmode = \"none\"\n",
        limits: true,
        bridge: false,
    },
    Variant {
        name: "bridge",
        spec: "[network]\nmode = \"bridge\"\n",
        limits: false,
        bridge: true,
    },
];

/// Makes the command of run number N of one arm.
type MakeRun<'a> = Box<dyn Fn(usize) -> Command + Sync + 'a>;
/// An arm's name and its commands.
type Arm<'a> = (String, MakeRun<'a>);

/// Runs before every timed run.
const WARMUP: usize = 3;

/// One timed run: wall from spawn to reaped, cpu the user + system time of the whole process
/// tree (what RUSAGE_CHILDREN gained by reaping it).
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// berth, runc and crun (those installed) running /bin/true `runs` times each after
/// [`WARMUP`] runs, interleaved A B C A B C so that machine noise hits all alike. Prints a
/// table and returns its rows as JSON.
fn one_shot(
    berth: &Path,
    work: &Path,
    image: &str,
    image_dir: &Path,
    v: &Variant,
    runs: usize,
) -> Result<Vec<serde_json::Value>, String> {
    let spec = work.join(format!("one-shot-{}.toml", v.name));
    std::fs::write(
        &spec,
        format!("image = {image:?}\ncommand = [\"/bin/true\"]\n{}", v.spec),
    )
    .map_err(|e| e.to_string())?;
    let root = work.join(format!("root-{}", v.name));
    let bundle = runtime_bundle(work, image_dir, v);
    let cargo_berth = common::cargo_berth();
    let glibc_root = work.join(format!("root-{}-glibc", v.name));
    let mut arms: Vec<Arm<'_>> = vec![(
        "berth".into(),
        Box::new(|_| berth_run(berth, &root, &spec)) as MakeRun<'_>,
    )];
    if cargo_berth != berth {
        let (bin, root, spec) = (cargo_berth, glibc_root.clone(), &spec);
        arms.push((
            "berth-glibc".into(),
            Box::new(move |_| berth_run(&bin, &root, spec)),
        ));
    }
    for tool in ["crun", "runc"] {
        match (which(tool), &bundle) {
            (Some(bin), Some(bundle)) => {
                let bundle = bundle.clone();
                arms.push((
                    tool.into(),
                    Box::new(move |i| {
                        let mut c = Command::new(&bin);
                        c.arg("run")
                            .arg("--bundle")
                            .arg(&bundle)
                            .arg(format!("bench-{tool}-{}-{i}", std::process::id()));
                        c
                    }),
                ));
            }
            (None, _) => println!("{tool}: not installed, skipped"),
            (_, None) => println!("{tool}: no bundle (runc spec needs runc), skipped"),
        }
    }
    let samples = std::thread::scope(|s| {
        s.spawn(|| {
            if v.bridge {
                // This thread alone changes its netns; what it spawns inherits it.
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(NEWNET): {e}"))?;
                run_quiet(Command::new("ip").args(["link", "set", "lo", "up"]))?;
            }
            interleaved(&arms, runs)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    unmount_leftover_pins(&root);
    unmount_leftover_pins(&glibc_root);
    let samples = samples?;
    let limits = if v.limits {
        "memory 64M, cpus 0.5, pids 64"
    } else {
        "no limits"
    };
    let net = if v.bridge {
        "berth in bridge mode, the runtimes with an empty netns"
    } else {
        "network none"
    };
    println!("{runs} runs of /bin/true, {limits}, {net}, interleaved after {WARMUP} warm-ups:");
    let stats: Vec<_> = samples.iter().map(|s| Stats::of(s)).collect();
    let mut rows = Vec::new();
    for ((name, _), st) in arms.iter().zip(&stats) {
        let (wall_ratio, cpu_ratio) = (stats[0].wall / st.wall, stats[0].cpu / st.cpu);
        println!(
            "  {name:<6} wall median {:>6.2} ms (min {:>6.2}, p90 {:>6.2}, max {:>6.2})  cpu median {:>6.2} ms  berth/this wall {wall_ratio:.2}x cpu {cpu_ratio:.2}x",
            st.wall, st.wall_min, st.wall_p90, st.wall_max, st.cpu
        );
        rows.push(serde_json::json!({
            "name": name, "wall_ms": st.wall, "wall_min_ms": st.wall_min,
            "wall_p90_ms": st.wall_p90, "wall_max_ms": st.wall_max, "cpu_ms": st.cpu,
            "wall_all_ms": st.all_wall,
        }));
    }
    Ok(rows)
}

/// Medians and spread of one arm, in ms.
struct Stats {
    wall: f64,
    wall_min: f64,
    wall_p90: f64,
    wall_max: f64,
    cpu: f64,
    all_wall: Vec<f64>,
}

impl Stats {
    fn of(samples: &[Sample]) -> Stats {
        let mut wall: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
        let mut cpu: Vec<f64> = samples.iter().map(|s| ms(s.cpu)).collect();
        wall.sort_by(f64::total_cmp);
        Stats {
            wall: wall[wall.len() / 2],
            wall_min: wall[0],
            wall_p90: wall[wall.len() * 9 / 10],
            wall_max: wall[wall.len() - 1],
            cpu: median_f64(&mut cpu),
            all_wall: wall,
        }
    }
}

/// Each arm's samples, the arms taking turns (the first of each turn rotating).
fn interleaved(arms: &[Arm<'_>], runs: usize) -> Result<Vec<Vec<Sample>>, String> {
    let mut samples = vec![Vec::with_capacity(runs); arms.len()];
    for round in 0..WARMUP + runs {
        for k in 0..arms.len() {
            let a = (k + round) % arms.len();
            let (name, make) = &arms[a];
            let s = timed(make(round), name)?;
            if round >= WARMUP {
                samples[a].push(s);
            }
        }
    }
    Ok(samples)
}

/// Runs `cmd` to completion with stdio on /dev/null (stderr kept for the error).
fn timed(mut cmd: Command, name: &str) -> Result<Sample, String> {
    use nix::sys::resource::{getrusage, UsageWho};
    let cpu = || {
        getrusage(UsageWho::RUSAGE_CHILDREN)
            .map(|u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
                };
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or_default()
    };
    let (c0, t0) = (cpu(), Instant::now());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    let wall = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{name}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Sample {
        wall,
        cpu: cpu().saturating_sub(c0),
    })
}
