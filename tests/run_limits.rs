//! `berth run` as root: cgroup limits enforced by the kernel.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// The container's cgroup dir in `controller`'s hierarchy (v1) while it runs.
fn wait_for_cgroup(env: &TestEnv, controller: &str) -> PathBuf {
    let base = controller_base(controller).unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    let parent = base.join(&env.cgroup_parent);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(dir) = std::fs::read_dir(&parent)
            .ok()
            .and_then(|rd| rd.flatten().find(|e| e.path().is_dir()))
        {
            return dir.path();
        }
        assert!(
            Instant::now() < deadline,
            "no container cgroup under {}",
            parent.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn(env: &TestEnv, spec: &std::path::Path) -> std::process::Child {
    env.command()
        .arg("run")
        .arg(spec)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn memory_limit_oom_kills_with_137() {
    if skip_unless_root("oom") {
        return;
    }
    let env = TestEnv::new("oom");
    let spec = env.spec(
        "oom",
        "command = [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=64M\", \"count=1\"]\n[resources]\nmemory = \"16M\"\n[network]\nmode = \"none\"\n",
    );
    let out = env.run(&spec);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    // The host is fine: the same container without the limit completes.
    let spec = env.spec("fine", "command = [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=64M\", \"count=1\"]\n[network]\nmode = \"none\"\n");
    let out = env.run(&spec);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_no_leaks();
}

#[test]
fn half_a_cpu_is_half_a_cpu() {
    if skip_unless_root("cpu") {
        return;
    }
    let env = TestEnv::new("cpu");
    let spec = env.spec(
        "spin",
        "command = [\"sh\", \"-c\", \"timeout 4 sh -c 'while :; do :; done'; true\"]\n[resources]\ncpus = 0.5\n[network]\nmode = \"none\"\n",
    );
    let child = spawn(&env, &spec);
    let (usage_file, per_ns) = match controller_base("cpuacct") {
        Some(_) => (wait_for_cgroup(&env, "cpuacct").join("cpuacct.usage"), 1.0),
        None => (wait_for_cgroup(&env, "cpu").join("cpu.stat"), 1000.0),
    };
    let read = || -> f64 {
        let s = std::fs::read_to_string(&usage_file).unwrap();
        let v = if per_ns == 1.0 {
            s.trim().parse::<f64>().unwrap()
        } else {
            s.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .unwrap()
                .trim()
                .parse::<f64>()
                .unwrap()
        };
        v * per_ns
    };
    std::thread::sleep(Duration::from_millis(500));
    let (t0, u0) = (Instant::now(), read());
    std::thread::sleep(Duration::from_secs(2));
    let (t1, u1) = (Instant::now(), read());
    let cpus = (u1 - u0) / (t1 - t0).as_nanos() as f64;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        (0.30..=0.60).contains(&cpus),
        "measured {cpus:.3} CPUs under cpus = 0.5"
    );
    env.assert_no_leaks();
}

#[test]
fn fork_bomb_stops_at_pids_limit() {
    if skip_unless_root("pids") {
        return;
    }
    let env = TestEnv::new("pids");
    // busybox sh gives up at its first failed fork, so the bomb runs in a child shell and the
    // init then execs (no fork needed) to keep the container alive while we watch.
    let spec = env.spec(
        "bomb",
        "command = [\"sh\", \"-c\", \"sh -c 'for i in $(seq 1 60); do sleep 3 & done'; exec sleep 2\"]\n[resources]\npids = 20\n[network]\nmode = \"none\"\n",
    );
    let child = spawn(&env, &spec);
    let pids_file = wait_for_cgroup(&env, "pids").join("pids.current");
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(&pids_file) {
            peak = peak.max(s.trim().parse::<u32>().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(peak <= 20, "pids.current reached {peak}");
    assert!(peak >= 15, "the bomb never got going: peak {peak}");
    assert!(
        stderr(&out).contains("fork"),
        "no fork failure reported: {}",
        stderr(&out)
    );
    env.assert_no_leaks();
}

#[test]
fn nothing_leaks_after_100_runs() {
    if skip_unless_root("leaks") {
        return;
    }
    let env = TestEnv::new("leaks");
    let spec = env.spec("t", "command = [\"true\"]\n[resources]\nmemory = \"32M\"\npids = 10\n[network]\nmode = \"none\"\n");
    for i in 0..100 {
        let out = env.run(&spec);
        assert!(out.status.success(), "run {i}: {}", stderr(&out));
    }
    env.assert_no_leaks();
}

/// A filesystem on a loop device of its own, mounted at `mnt`; unmounted and detached on drop.
struct LoopFs {
    device: String,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(dir: &std::path::Path) -> LoopFs {
        let backing = dir.join("disk.img");
        let f = std::fs::File::create(&backing).unwrap();
        f.set_len(96 << 20).unwrap();
        let sh = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let device = sh(std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing));
        let fs = LoopFs {
            device,
            mnt: dir.join("mnt"),
        };
        std::fs::create_dir_all(&fs.mnt).unwrap();
        sh(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&fs.device));
        sh(std::process::Command::new("mount")
            .arg(&fs.device)
            .arg(&fs.mnt));
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.device])
            .status();
    }
}

#[test]
fn disk_throttles_hold_direct_io_to_their_rate() {
    if skip_unless_root("io throttle") {
        return;
    }
    let env = TestEnv::new("io");
    let disk = LoopFs::new(env.dir.path());
    const MIB: f64 = 1024.0 * 1024.0;
    const LIMIT: f64 = 4.0 * MIB;
    const SIZE_MIB: f64 = 12.0;
    // Direct IO of SIZE_MIB, written then read back, each throttled to 4 MiB/s on this device.
    let body = |limits: &str| {
        format!(
            "command = [\"sh\", \"-c\", \"dd if=/dev/zero of=/data/f bs=1M count={SIZE_MIB} oflag=direct && dd if=/data/f of=/dev/null bs=1M iflag=direct\"]\n\
             [[mounts]]\nsource = {:?}\ntarget = \"/data\"\n[network]\nmode = \"none\"\n{limits}",
            disk.mnt.display()
        )
    };
    let timed = |name: &str, limits: &str| -> f64 {
        let spec = env.spec(name, &body(limits));
        let t0 = Instant::now();
        let out = env.run(&spec);
        let took = t0.elapsed().as_secs_f64();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        took
    };
    let free = timed("free", "");
    let both = format!(
        "[resources]\nio = {{ write_bps = {{ {dev:?} = \"4M\" }}, read_bps = {{ {dev:?} = {bytes} }} }}\n",
        dev = disk.device,
        bytes = LIMIT as u64
    );
    let spec = env.spec("limited", &body(&both));
    let t0 = Instant::now();
    let child = spawn(&env, &spec);
    // While it runs, the throttle is in the container's cgroup.
    let rdev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&disk.device).unwrap().rdev()
    };
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let file = match controller_base("blkio") {
        Some(_) => wait_for_cgroup(&env, "blkio").join("blkio.throttle.write_bps_device"),
        None => wait_for_cgroup(&env, "io").join("io.max"),
    };
    // The cgroup dir exists before berth has written its limits: read until they are there
    // (the run lasts seconds), then check them.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut written = std::fs::read_to_string(&file).unwrap();
    while !written.contains(&dev) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        written = std::fs::read_to_string(&file).unwrap();
    }
    assert!(
        written.contains(&dev) && written.contains("4194304"),
        "{dev} not throttled: {written:?}"
    );
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", stderr(&out));
    // Two transfers at the limit, plus what the same run takes unthrottled.
    let rate = 2.0 * SIZE_MIB * MIB / (took - free).max(0.001);
    eprintln!(
        "direct IO at {:.2} MiB/s under a 4 MiB/s throttle ({took:.2} s, {free:.2} s unthrottled)",
        rate / MIB
    );
    assert!(
        (0.8 * LIMIT..=1.2 * LIMIT).contains(&rate),
        "{:.2} MiB/s against a limit of 4 MiB/s ({took:.2} s throttled, {free:.2} s free)",
        rate / MIB
    );
    drop(disk);
    env.assert_no_leaks();
}
