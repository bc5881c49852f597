//! Tests against the host's real cgroup hierarchies. They need root and skip (with a message)
//! otherwise. Each uses its own parent `berth-test-<pid>-<n>` and removes it.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: cgroup root tests need root");
    false
}

fn unique_parent() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn spawn_sleep() -> Child {
    Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep")
}

fn join(cg: &ContainerCgroup, pid: u32) {
    for f in cg.join_files() {
        files::write(&f, &pid.to_string()).unwrap();
    }
}

/// Removes the test parent whatever happens (a failed assert may leave a process inside), so
/// that nothing is left behind.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let mode = cgroup_mode();
        let mut names = std::collections::BTreeSet::new();
        if let Ok(hs) = hierarchies(Path::new(CGROUP_ROOT), mode) {
            for h in hs {
                if let Ok(entries) = std::fs::read_dir(h.mount.join(&self.0)) {
                    for e in entries.flatten().filter(|e| e.path().is_dir()) {
                        names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        for name in names {
            if let Ok(Some(cg)) = ContainerCgroup::open(&self.0, &name) {
                let _ = cg.destroy();
            }
        }
        let _ = ContainerCgroup::remove_parent_if_empty(&self.0);
    }
}

fn limits() -> Resources {
    Resources {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        cpu_weight: Some(200),
        cpuset: Some("0".into()),
        pids: Some(20),
        io_weight: Some(100),
        io_devices: vec![],
    }
}

#[test]
fn lifecycle_on_this_host() {
    if !is_root() {
        return;
    }
    let mode = cgroup_mode();
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());

    let t0 = Instant::now();
    let cg =
        ContainerCgroup::create(&parent, "c1", &limits(), DeviceControl::Required).expect("create");
    eprintln!("first create took {:?} ({mode:?})", t0.elapsed());
    // A second one, with the parent and the mount table cache in place: the start-path cost.
    let t0 = Instant::now();
    let cg_b = ContainerCgroup::create(&parent, "c1b", &limits(), DeviceControl::Required)
        .expect("create");
    eprintln!("second create took {:?}", t0.elapsed());
    cg_b.destroy().expect("destroy c1b");

    let dir_of = |c: Controller| cg.dirs.iter().find(|d| d.has(c)).map(|d| d.path.clone());
    for p in cg.paths() {
        assert!(p.is_dir(), "{} missing", p.display());
    }
    if mode == CgroupMode::V2 {
        let d = &cg.paths()[0];
        assert_eq!(read(&d.join("memory.max")), "67108864");
        assert_eq!(read(&d.join("cpu.max")), "50000 100000");
        assert_eq!(read(&d.join("cpu.weight")), "200");
        assert_eq!(read(&d.join("pids.max")), "20");
        assert_eq!(read(&d.join("cpuset.cpus")), "0");
    } else {
        let mem = dir_of(Controller::Memory).expect("memory hierarchy");
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "67108864");
        }
        let cpu = dir_of(Controller::Cpu).expect("cpu hierarchy");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cpu.join("cpu.shares")), "5219");
        let cs = dir_of(Controller::Cpuset).expect("cpuset hierarchy");
        assert_eq!(read(&cs.join("cpuset.cpus")), "0");
        let parent_mems = read(&cs.parent().unwrap().join("cpuset.mems"));
        assert_eq!(read(&cs.join("cpuset.mems")), parent_mems);
        let pids = dir_of(Controller::Pids).expect("pids hierarchy");
        assert_eq!(read(&pids.join("pids.max")), "20");
        let dev = dir_of(Controller::Devices).expect("devices hierarchy");
        let list = read(&dev.join("devices.list"));
        let want: Vec<String> = ALLOWED_DEVICES.iter().map(|d| d.to_v1_line()).collect();
        let got: Vec<&str> = list.lines().collect();
        assert_eq!(got, want, "devices.list");
        // Hybrid hosts: the controller-less unified hierarchy is not used.
        assert!(dir_of(Controller::Unified).is_none() || mode == CgroupMode::V2);
    }

    let mut child = spawn_sleep();
    join(&cg, child.id());
    assert_eq!(cg.pids().unwrap(), [child.id() as i32]);
    let stats = cg.stats().unwrap();
    eprintln!("stats: {stats:?}");
    assert_eq!(stats.memory_limit, Some(64 << 20));
    assert_eq!(stats.pids_current, 1);
    // memory_bytes may be 0 on v1: charges made before joining stay with the old cgroup.
    assert_eq!(stats.oom_kills, 0);

    // update: raise the memory limit (memsw has to move first on v1), drop the cpu quota.
    let res = Resources {
        memory: Some(256 << 20),
        cpus: None,
        ..limits()
    };
    cg.update(&res, DeviceControl::Required).expect("update");
    assert_eq!(cg.stats().unwrap().memory_limit, Some(256 << 20));
    if let Some(cpu) = dir_of(Controller::Cpu).filter(|_| mode != CgroupMode::V2) {
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
    }

    let reopened = ContainerCgroup::open(&parent, "c1").unwrap().expect("open");
    assert_eq!(reopened.paths(), cg.paths());

    let t0 = Instant::now();
    cg.kill_all().expect("kill_all");
    eprintln!("kill_all took {:?}", t0.elapsed());
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(cg.pids().unwrap().is_empty());

    let paths = cg.paths();
    cg.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(ContainerCgroup::open(&parent, "c1").unwrap().is_none());
    ContainerCgroup::remove_parent_if_empty(&parent).expect("remove parent");
    for h in hierarchies(Path::new(CGROUP_ROOT), mode).unwrap() {
        assert!(
            !h.mount.join(&parent).exists(),
            "parent left in {}",
            h.mount.display()
        );
    }
}

#[test]
fn destroy_kills_what_is_left_and_cpuset_defaults_to_parent() {
    if !is_root() {
        return;
    }
    let mode = cgroup_mode();
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());
    let cg = ContainerCgroup::create(
        &parent,
        "c2",
        &Resources::default(),
        DeviceControl::Required,
    )
    .expect("create");
    if mode != CgroupMode::V2 {
        let cs = cg
            .dirs
            .iter()
            .find(|d| d.has(Controller::Cpuset))
            .expect("cpuset");
        let parent_dir = cs.path.parent().unwrap();
        assert_eq!(
            read(&cs.path.join("cpuset.cpus")),
            read(&parent_dir.join("cpuset.cpus"))
        );
    }
    let mut kids: Vec<Child> = (0..3).map(|_| spawn_sleep()).collect();
    for k in &kids {
        join(&cg, k.id());
    }
    assert_eq!(cg.pids().unwrap().len(), 3);
    let paths = cg.paths();
    let t0 = Instant::now();
    cg.destroy().expect("destroy");
    assert!(t0.elapsed() < Duration::from_secs(5));
    for k in &mut kids {
        assert!(!k.wait().unwrap().success());
    }
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    ContainerCgroup::remove_parent_if_empty(&parent).expect("remove parent");
}

#[test]
fn create_cost() {
    if !is_root() {
        return;
    }
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());
    let mut times = Vec::new();
    let mut cgs = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        cgs.push(
            ContainerCgroup::create(
                &parent,
                &format!("c{i}"),
                &limits(),
                DeviceControl::Required,
            )
            .expect("create"),
        );
        times.push(t0.elapsed());
    }
    let mut dtimes = Vec::new();
    for cg in cgs {
        let t0 = Instant::now();
        cg.destroy().expect("destroy");
        dtimes.push(t0.elapsed());
    }
    times.sort();
    dtimes.sort();
    eprintln!(
        "create: min {:?} median {:?}; destroy: min {:?} median {:?}",
        times[0], times[10], dtimes[0], dtimes[10]
    );
}

/// The freeze / SIGKILL / thaw path of v1 (and hybrid) hosts.
#[test]
fn v1_kill_through_freezer() {
    if !is_root() {
        return;
    }
    if cgroup_mode() == CgroupMode::V2 {
        eprintln!("skipping: no v1 hierarchies on this host");
        return;
    }
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());
    let root = Path::new(CGROUP_ROOT);
    let cg = ContainerCgroup::create_at(
        root,
        CgroupMode::V1,
        &parent,
        "c3",
        &limits(),
        DeviceControl::Required,
    )
    .expect("create");
    assert!(cg.dirs.iter().all(|d| !d.has(Controller::Unified)));
    let mut kids: Vec<Child> = (0..2).map(|_| spawn_sleep()).collect();
    for k in &kids {
        join(&cg, k.id());
    }
    assert_eq!(cg.pids().unwrap().len(), 2);
    cg.kill_all().expect("kill_all");
    for k in &mut kids {
        assert!(!k.wait().unwrap().success());
    }
    let freezer = cg.dirs.iter().find(|d| d.has(Controller::Freezer)).unwrap();
    assert_eq!(read(&freezer.path.join("freezer.state")), "THAWED");
    cg.destroy().expect("destroy");
    ContainerCgroup::remove_parent_if_empty_at(root, CgroupMode::V1, &parent).expect("parent");
}

/// Freezing stops a busy process where it is; thawing lets it run again.
#[test]
fn freeze_stops_and_thaw_resumes() {
    if !is_root() {
        return;
    }
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());
    let cg = ContainerCgroup::create(
        &parent,
        "c4",
        &Resources::default(),
        DeviceControl::Required,
    )
    .expect("create");
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn");
    join(&cg, busy.id());
    let cpu_ticks = || -> u64 {
        let stat = read(Path::new(&format!("/proc/{}/stat", busy.id())));
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    cg.freeze().expect("freeze");
    let before = cpu_ticks();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(cpu_ticks(), before, "a frozen process ran");
    cg.thaw().expect("thaw");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(cpu_ticks() > before, "a thawed process did not run");
    // Freezing twice and thawing twice are fine.
    cg.freeze().expect("freeze");
    cg.freeze().expect("freeze again");
    cg.thaw().expect("thaw");
    cg.thaw().expect("thaw again");
    cg.destroy().expect("destroy");
    assert!(!busy.wait().unwrap().success());
    ContainerCgroup::remove_parent_if_empty(&parent).expect("parent");
}

/// The cgroup v2 paths on the kernel's own cgroup2 filesystem: the host's root on a v2 host,
/// the controller-less `unified` mount on a hybrid one (where only the core files exist, which
/// is what these paths use): join, list, freeze, kill, remove.
#[test]
fn v2_core_on_the_kernels_cgroup2() {
    if !is_root() {
        return;
    }
    let root = match cgroup_mode() {
        CgroupMode::V2 => Path::new(CGROUP_ROOT).to_path_buf(),
        _ => Path::new(CGROUP_ROOT).join("unified"),
    };
    if !root.join("cgroup.procs").exists() {
        eprintln!("skipping: no cgroup2 mount at {}", root.display());
        return;
    }
    let parent = unique_parent();
    let cg = ContainerCgroup::create_at(
        &root,
        CgroupMode::V2,
        &parent,
        "c5",
        &Resources::default(),
        DeviceControl::Required,
    )
    .expect("create");
    let mut kids: Vec<Child> = (0..2).map(|_| spawn_sleep()).collect();
    for k in &kids {
        join(&cg, k.id());
    }
    let mut want: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
    want.sort_unstable();
    assert_eq!(cg.pids().unwrap(), want);
    cg.freeze().expect("freeze");
    assert_eq!(read(&root.join(&parent).join("c5/cgroup.freeze")), "1");
    cg.thaw().expect("thaw");
    cg.destroy().expect("destroy");
    for k in &mut kids {
        assert!(!k.wait().unwrap().success());
    }
    assert!(!root.join(&parent).join("c5").exists());
    ContainerCgroup::remove_parent_if_empty_at(&root, CgroupMode::V2, &parent).expect("parent");
    assert!(!root.join(&parent).exists());
}

/// Runs the device probes of [`device_probes`] in a shell; with `cgroup_procs`, the shell first
/// moves itself into that cgroup. Returns the probes that succeeded, one per line.
fn device_probes(cgroup_procs: Option<&Path>, scratch: &Path) -> String {
    let join = match cgroup_procs {
        Some(p) => format!("echo $$ > {} || exit 99; ", p.display()),
        None => String::new(),
    };
    let script = format!(
        "{join}cd {dir} || exit 98; \
         true </dev/null && echo null-read; \
         true >/dev/null && echo null-write; \
         true </dev/loop0 && echo block-read; \
         true >/dev/loop0 && echo block-write; \
         true </dev/kmsg && echo kmsg-read; \
         mknod blk b 7 0 && echo block-mknod; \
         mknod kmsg c 1 11 && echo kmsg-mknod; \
         mknod nul c 1 3 && echo null-mknod; \
         true <nul && echo made-null-read; \
         exit 0",
        dir = scratch.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("spawn sh");
    assert!(out.status.success(), "probe shell failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The v2 device program on the kernel's own cgroup2 filesystem (on a hybrid host the
/// `unified` mount, where the v1 devices cgroup of the test allows everything, so only the
/// program decides): the allowlist opens and mknods, a block device and a char device outside
/// it do neither; an update replaces the one program in place; removing the cgroup frees it.
#[test]
fn v2_device_program_denies_outside_the_allowlist() {
    if !is_root() {
        return;
    }
    let root = match cgroup_mode() {
        CgroupMode::V2 => Path::new(CGROUP_ROOT).to_path_buf(),
        _ => Path::new(CGROUP_ROOT).join("unified"),
    };
    if !root.join("cgroup.procs").exists() || !Path::new("/dev/loop0").exists() {
        eprintln!("skipping: needs a cgroup2 mount and /dev/loop0");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // Without the program every probe works: the probes themselves are sound.
    let free = device_probes(None, scratch.path());
    for f in ["blk", "kmsg", "nul"] {
        let _ = std::fs::remove_file(scratch.path().join(f));
    }
    assert_eq!(
        free.lines().collect::<Vec<_>>(),
        [
            "null-read",
            "null-write",
            "block-read",
            "block-write",
            "kmsg-read",
            "block-mknod",
            "kmsg-mknod",
            "null-mknod",
            "made-null-read"
        ]
    );

    let parent = unique_parent();
    let cg = ContainerCgroup::create_at(
        &root,
        CgroupMode::V2,
        &parent,
        "dev",
        &Resources::default(),
        DeviceControl::Required,
    )
    .expect("create");
    let dir = cg.paths()[0].clone();
    let attached = |dir: &Path| {
        let f = std::fs::File::open(dir).unwrap();
        crate::sys::bpf::attached_device_programs(std::os::fd::AsFd::as_fd(&f)).unwrap()
    };
    let first = attached(&dir);
    assert_eq!(first.len(), 1, "one program attached: {first:?}");

    let confined = device_probes(Some(&dir.join("cgroup.procs")), scratch.path());
    assert_eq!(
        confined.lines().collect::<Vec<_>>(),
        ["null-read", "null-write", "null-mknod", "made-null-read"]
    );

    cg.update(&Resources::default(), DeviceControl::Required)
        .expect("update");
    let second = attached(&dir);
    assert_eq!(second.len(), 1, "still one program: {second:?}");
    assert_ne!(first, second, "the program was replaced");
    let _ = std::fs::remove_file(scratch.path().join("nul"));
    assert_eq!(
        device_probes(Some(&dir.join("cgroup.procs")), scratch.path()),
        confined
    );

    cg.destroy().expect("destroy");
    ContainerCgroup::remove_parent_if_empty_at(&root, CgroupMode::V2, &parent).expect("parent");
    // The kernel frees a removed cgroup's programs asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::sys::bpf::program_by_id(second[0]).is_ok() {
        assert!(
            Instant::now() < deadline,
            "program {} outlived its cgroup",
            second[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A whole disk of this host (not a loop or ram device), as its /dev path and "MAJ:MIN".
fn some_disk() -> Option<(std::path::PathBuf, String)> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
            let path = Path::new("/dev").join(&name);
            path.exists().then(|| (path, dev.trim().to_string()))
        })
}

#[test]
fn io_throttles_are_set_changed_and_lifted() {
    if !is_root() {
        return;
    }
    let Some((disk, dev)) = some_disk() else {
        eprintln!("skipping io_throttles_are_set_changed_and_lifted: no disk in /sys/block");
        return;
    };
    let parent = unique_parent();
    let _cleanup = Cleanup(parent.clone());
    let with = |read_bps, write_iops| Resources {
        io_devices: vec![crate::spec::IoDeviceLimit {
            device: disk.clone(),
            read_bps,
            write_iops,
            ..Default::default()
        }],
        ..Resources::default()
    };
    let cg = ContainerCgroup::create(
        &parent,
        "io",
        &with(Some(1 << 20), None),
        DeviceControl::Required,
    )
    .expect("create");
    // (device, value) of each throttle, as the kernel lists them now.
    let listed = || -> Vec<String> {
        match cgroup_mode() {
            CgroupMode::V2 => read(&cg.paths()[0].join("io.max"))
                .lines()
                .map(str::to_string)
                .collect(),
            _ => {
                let blkio = cg
                    .dirs
                    .iter()
                    .find(|d| d.has(Controller::Blkio))
                    .expect("blkio hierarchy");
                limits::V1_THROTTLE_FILES
                    .iter()
                    .flat_map(|f| {
                        read(&blkio.path.join(f))
                            .lines()
                            .map(|l| format!("{f} {l}"))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
        }
    };
    let v2 = cgroup_mode() == CgroupMode::V2;
    let want = |read: Option<u64>, wiops: Option<u64>| -> Vec<String> {
        if v2 {
            if read.is_none() && wiops.is_none() {
                return vec![];
            }
            let r = |v: Option<u64>| v.map_or("max".into(), |n: u64| n.to_string());
            vec![format!(
                "{dev} rbps={} wbps=max riops=max wiops={}",
                r(read),
                r(wiops)
            )]
        } else {
            let mut w = Vec::new();
            if let Some(r) = read {
                w.push(format!("blkio.throttle.read_bps_device {dev} {r}"));
            }
            if let Some(i) = wiops {
                w.push(format!("blkio.throttle.write_iops_device {dev} {i}"));
            }
            w
        }
    };
    assert_eq!(listed(), want(Some(1 << 20), None));
    // An edit moves the limit to write IOPS: the read throttle is lifted.
    cg.update(&with(None, Some(300)), DeviceControl::Required)
        .expect("update");
    assert_eq!(listed(), want(None, Some(300)));
    // No throttle left in the spec: none left in the kernel.
    cg.update(&Resources::default(), DeviceControl::Required)
        .expect("update");
    assert_eq!(listed(), Vec::<String>::new());
    cg.destroy().expect("destroy");
}
