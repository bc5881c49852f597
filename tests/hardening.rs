//! What hostile or merely unusual input must not do: an image with 100,000 environment
//! entries starts (the env merge is linear and the plan crosses the helper channel whatever
//! its size), a start that fails at its last step says why, validate refuses values that
//! could only fail at start and never echoes control bytes, and `berth exec` finds the
//! daemon's cgroups without being told the cgroup parent.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::*;

/// The busybox image with `n` environment entries `E<i>=<i>`.
fn image_with_env(env: &TestEnv, n: usize) -> String {
    let layout = busybox_variant(&env.dir.path().join(format!("env-{n}")), |config| {
        let vars: Vec<serde_json::Value> = (0..n).map(|i| format!("E{i}={i}").into()).collect();
        config["config"]["Env"] = vars.into();
    });
    format!("oci:{}:latest", layout.display())
}

#[test]
fn an_image_with_100k_env_entries_starts_and_200k_says_why_not() {
    if skip_unless_root("images with huge environments") {
        return;
    }
    let env = TestEnv::new("hd-env");
    // busybox `env` prints them (its shell would take long to import so many).
    let cmd = "command = [\"env\"]\n[network]\nmode = \"none\"\n";
    let spec = env.spec_with_image("big", &image_with_env(&env, 100_000), cmd);
    let t0 = Instant::now();
    let out = env.run(&spec);
    eprintln!("100k env entries: started and ran in {:?}", t0.elapsed());
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let ours = printed.lines().filter(|l| l.starts_with('E')).count();
    assert_eq!(ours, 100_000);
    assert!(printed.lines().any(|l| l == "E99999=99999"));
    // 200k (a 2.5 MB config, under the 4 MiB cap) crosses the helper channel whole; only the
    // kernel's exec limit stops it, and the error says so.
    let spec = env.spec_with_image("bigger", &image_with_env(&env, 200_000), cmd);
    let out = env.run(&spec);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("E2BIG") && err.contains("200003 environment entries"),
        "{err}"
    );
    env.assert_no_leaks();
}

#[test]
fn a_start_failing_at_exec_says_why() {
    if skip_unless_root("start failures at exec") {
        return;
    }
    let env = TestEnv::new("hd-exec");
    // A dynamically linked host binary inside the busybox image: its loader is not there.
    let host_true = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap();
    let spec = env.spec(
        "noloader",
        &format!(
            "command = [\"/hostbin/true\"]\n[network]\nmode = \"none\"\n[[mounts]]\nsource = {host_true:?}\ntarget = \"/hostbin/true\"\nreadonly = true\n"
        ),
    );
    let out = env.run(&spec);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("exec /hostbin/true") && err.contains("interpreter is missing"),
        "{err}"
    );
    env.assert_no_leaks();
}

#[test]
fn validate_refuses_what_only_fails_at_start_and_escapes_control_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    std::fs::write(
        &file,
        "image = \"oci:/img:v1\"\nuser = \"4294967296\"\n\"\\u001b]0;owned\\u0007\" = 1\n[resources]\ncpus = 1e9\npids = 18446744073709551615\n",
    )
    .unwrap();
    let out = std::process::Command::new(berth_bin())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let f = file.display();
    for want in [
        format!("{f}:2:8: user: invalid user \"4294967296\""),
        format!("{f}:5:8: resources.cpus: must be greater than 0 and at most 1024"),
        format!("{f}:6:8: resources.pids:"),
        format!("{f}:3:1: "),
    ] {
        assert!(err.contains(&want), "{want} missing:\n{err}");
    }
    assert!(
        !err.chars().any(|c| c.is_control() && c != '\n'),
        "raw control bytes in {err:?}"
    );
}

#[test]
fn exec_finds_the_daemons_cgroups_without_the_flag() {
    if skip_unless_root("exec and the daemon's cgroup parent") {
        return;
    }
    let env = TestEnv::new("hd-cgp");
    std::fs::create_dir_all(env.specs()).unwrap();
    env.write_spec(
        "box",
        "command = [\"sleep\", \"600\"]\nstop_timeout = \"1s\"\n[network]\nmode = \"none\"\n",
    );
    let d = Daemon::start(&env);
    wait_until(Duration::from_secs(20), "box running", || {
        env.running_pid("box").is_some()
    });
    // No --cgroup-parent here: the daemon's (the test's own) must be used.
    let out = std::process::Command::new(berth_bin())
        .arg("--socket")
        .arg(env.socket())
        .args(["exec", "box", "--", "echo", "inside"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "inside\n");
    d.stop();
    env.assert_no_leaks();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn the_control_socket_survives_idle_and_endless_clients() {
    if skip_unless_root("control socket bounds") {
        return;
    }
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    // 2,000 connections need more fds than the usual soft limit of this test process.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    if hard < 2_200 {
        eprintln!("skipping control socket bounds: the fd limit is {hard}");
        return;
    }
    let env = TestEnv::new("hd-sock");
    let d = Daemon::start(&env);
    let before = rss_kib(d.pid());
    let idle: Vec<UnixStream> = (0..2_000)
        .map(|_| UnixStream::connect(env.socket()).unwrap())
        .collect();
    // One client sends 100 MB without a newline; the daemon stops reading at 64 KiB.
    let socket = env.socket();
    let flood = std::thread::spawn(move || {
        let mut s = UnixStream::connect(socket).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..100 {
            match s.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        (sent, answer)
    });
    let t0 = Instant::now();
    let out = env.ctl(&["ps"]);
    eprintln!(
        "berth ps with 2,000 idle connections and a flood: {:?}",
        t0.elapsed()
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (sent, answer) = flood.join().unwrap();
    assert!(answer.contains("longer than 65536"), "{answer:?}");
    assert!(sent < 100 << 20, "the daemon read all {sent} bytes");
    let grown = rss_kib(d.pid()).saturating_sub(before);
    eprintln!("daemon RSS grew by {grown} KiB");
    assert!(grown < 64 << 10, "daemon RSS grew by {grown} KiB");
    // The idle ones are told why and dropped after the request timeout.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("no request within"), "{answer:?}");
    drop(idle);
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn what_a_killed_berth_run_leaves_is_swept_by_the_next_run() {
    if skip_unless_root("sweeping killed runs") {
        return;
    }
    let env = TestEnv::new("hd-kill9");
    let sleeper = env.spec(
        "sleeper",
        "command = [\"sleep\", \"600\"]\n[network]\nmode = \"none\"\n",
    );
    let busy = |env: &TestEnv| {
        env.leftover_cgroups().iter().any(|cg| {
            std::fs::read_to_string(cg.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        })
    };
    for _ in 0..3 {
        let mut child = env
            .command()
            .arg("run")
            .arg(&sleeper)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(20), "the container running", || {
            busy(&env)
        });
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until(Duration::from_secs(10), "the container to die", || {
            !busy(&env)
        });
    }
    // Each run swept what the killed one before it left; the last killed one's dir and
    // cgroup are still there (its container died with its launcher, nothing tore it down).
    assert_eq!(env.leftover_containers().len(), 1);
    assert!(!env.leftover_cgroups().is_empty());
    let quick = env.spec(
        "quick",
        "command = [\"true\"]\n[network]\nmode = \"none\"\n",
    );
    let out = env.run(&quick);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a killed `berth run` left"),
        "{}",
        stderr(&out)
    );
    env.assert_no_leaks();
}

/// An OCI layout in `dir` whose one layer is `script`'s output: the script runs in `dir` and
/// must leave `layer.tar` there (gzipped here).
fn layout_with_layer(dir: &std::path::Path, script: &str) -> String {
    let sh = |s: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{s}: {}", stderr(&out));
        stdout(&out)
    };
    sh(script);
    let diff_id = format!(
        "sha256:{}",
        sh("sha256sum layer.tar").split(' ').next().unwrap()
    );
    sh("gzip -1 layer.tar && mkdir -p blobs/sha256");
    let put = |bytes: &[u8]| {
        use sha2::Digest;
        let d = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(dir.join("blobs/sha256").join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let layer = std::fs::read(dir.join("layer.tar.gz")).unwrap();
    let (ld, ls) = put(&layer);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}});
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}]});
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    format!("oci:{}:latest", dir.display())
}

fn import(root: &std::path::Path, image: &str) -> std::process::Output {
    std::process::Command::new(berth_bin())
        .arg("--root")
        .arg(root)
        .args(["image", "import", image, "--name", "localhost/test:1"])
        .output()
        .unwrap()
}

/// Nothing of a refused layer is left: no layer dir, no temp dir, no record.
fn nothing_half_written(root: &std::path::Path) {
    let count = |d: &str| {
        std::fs::read_dir(root.join(d))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert_eq!(count("layers"), 0, "a layer dir was left");
    assert_eq!(count("tmp"), 0, "a temp dir was left");
}

#[test]
fn a_decompression_bomb_is_refused_and_zeros_stay_holes() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb");
    std::fs::create_dir_all(&bomb).unwrap();
    // 256 MiB of zeros gzip to about 250 KiB: a ratio near 1000.
    let image = layout_with_layer(
        &bomb,
        "truncate -s 256M zeros && tar -cf layer.tar zeros && rm zeros",
    );
    let root = dir.path().join("root");
    let out = import(&root, &image);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("decompression bomb") && err.contains("limit is 100x"),
        "{err}"
    );
    assert!(err.contains("sha256:"), "the layer is not named: {err}");
    nothing_half_written(&root);

    // 48 MiB of zeros (under the 64 MiB any layer may reach) unpack as a hole.
    let holes = dir.path().join("holes");
    std::fs::create_dir_all(&holes).unwrap();
    let image = layout_with_layer(
        &holes,
        "truncate -s 48M zeros && tar -cf layer.tar zeros && rm zeros",
    );
    let out = import(&root, &image);
    assert!(out.status.success(), "{}", stderr(&out));
    let layer = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(layer.join("zeros")).unwrap();
    assert_eq!(m.len(), 48 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated for zeros",
        m.blocks() * 512
    );
    let ls = std::process::Command::new(berth_bin())
        .arg("--root")
        .arg(&root)
        .args(["image", "ls"])
        .output()
        .unwrap();
    assert!(stdout(&ls).contains("UNPACKED"), "{}", stdout(&ls));
}

#[test]
fn a_layer_that_would_fill_the_store_is_refused() {
    if skip_unless_root("a full image store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    // A 300 MiB filesystem and the default 256 MiB reserve: a 80 MiB layer cannot fit.
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(&small);
    let src = dir.path().join("random");
    std::fs::create_dir_all(&src).unwrap();
    let image = layout_with_layer(
        &src,
        "head -c 80M /dev/urandom > data && tar -cf layer.tar data && rm data",
    );
    let root = small.join("root");
    let out = import(&root, &image);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("would fill up") && err.contains("kept free"),
        "{err}"
    );
    nothing_half_written(&root);
}
