//! The files under packaging/: the service files' stop timeouts against the daemon's longest
//! clean stop, the OpenRC script's syntax, and (as root, with dpkg) the .deb built by
//! `packaging/build-deb`, installed with `dpkg -i`, its config validated by the installed
//! binary, its unit checked by `systemd-analyze verify` where that is installed, and purged
//! with nothing left behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::registry::have;

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn stop_timeouts_are_the_daemons_longest_stop() {
    let longest = berth::supervisor::LONGEST_SHUTDOWN.as_secs();
    let unit = std::fs::read_to_string(repo("packaging/berth.service")).unwrap();
    let timeout: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("TimeoutStopSec="))
        .collect();
    assert_eq!(timeout, [longest.to_string()], "berth.service");
    for key in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=mixed",
        "WatchdogSec=",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(key)),
            "berth.service: {key}"
        );
    }
    let openrc = std::fs::read_to_string(repo("packaging/openrc/berth")).unwrap();
    assert!(
        openrc.contains(&format!("retry=\"TERM/{longest}/KILL/5\"")),
        "packaging/openrc/berth: retry"
    );
    let (ok, text) = run(Command::new("sh")
        .arg("-n")
        .arg(repo("packaging/openrc/berth")));
    assert!(ok, "{text}");
}

const INSTALLED: &[&str] = &[
    "/usr/bin/berth",
    "/lib/systemd/system/berth.service",
    "/etc/berth/berth.toml",
    "/etc/berth/specs",
    "/usr/share/man/man8/berth.8.gz",
    "/usr/share/man/man8/berth-image-push.8.gz",
    "/usr/share/bash-completion/completions/berth",
    "/usr/share/zsh/vendor-completions/_berth",
    "/usr/share/fish/vendor_completions.d/berth.fish",
    "/usr/share/berth/spec.schema.json",
    "/usr/share/berth/config.schema.json",
];

#[test]
fn the_deb_installs_validates_and_purges_clean() {
    if common::skip_unless_root("the .deb") {
        return;
    }
    for tool in ["dpkg", "dpkg-deb", "objcopy"] {
        if !have(tool) {
            eprintln!("skipping the .deb: {tool} not installed");
            return;
        }
    }
    // Never over another install: this test owns the package while it runs.
    let (installed, _) = run(Command::new("dpkg").args(["-s", "berth"]));
    if installed || Path::new("/usr/bin/berth").exists() || Path::new("/etc/berth").exists() {
        eprintln!("skipping the .deb: berth is installed on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The test binary without its debug info (the package of a release build holds the
    // static binary; what is tested here is the package).
    let bin = dir.path().join("berth");
    let (ok, text) = run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(common::berth_bin())
        .arg(&bin));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new(repo("packaging/build-deb"))
        .arg("--binary")
        .arg(&bin)
        .arg(dir.path().join("out")));
    assert!(ok, "build-deb: {text}");
    let deb = text.lines().last().unwrap().trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{text}");

    let (ok, text) = run(Command::new("dpkg").args(["-i", &deb]));
    let purge = || run(Command::new("dpkg").args(["--purge", "berth"]));
    if !ok {
        purge();
        panic!("dpkg -i: {text}");
    }
    let checks = std::panic::catch_unwind(|| {
        for path in INSTALLED {
            assert!(Path::new(path).exists(), "{path} not installed");
        }
        let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/berth.conffiles").unwrap();
        assert_eq!(conffiles.trim(), "/etc/berth/berth.toml");
        let (ok, text) = run(Command::new("/usr/bin/berth").args([
            "validate",
            "--config",
            "/etc/berth/berth.toml",
            "/etc/berth/specs",
        ]));
        assert!(ok, "berth validate on the installed config: {text}");
        let config = std::fs::read_to_string("/etc/berth/berth.toml").unwrap();
        assert_eq!(
            config.lines().next(),
            Some("#:schema /usr/share/berth/config.schema.json"),
            "the installed config names the installed schema"
        );
        let schema = std::fs::read_to_string("/usr/share/berth/config.schema.json").unwrap();
        let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
        assert_eq!(schema["title"], "berth supervisor config");
        let (ok, text) = run(Command::new("/usr/bin/berth").args(["version"]));
        assert!(ok && text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        if have("systemd-analyze") {
            let (ok, text) = run(Command::new("systemd-analyze")
                .args(["verify", "/lib/systemd/system/berth.service"]));
            // Without man-db, the unit's Documentation= pages cannot be looked up: that is
            // the only complaint allowed.
            let complaints: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("Command 'man ") || have("man"))
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert!(
                ok || complaints.is_empty(),
                "systemd-analyze verify: {text}"
            );
        } else {
            eprintln!("systemd-analyze not installed: the unit is not verified");
        }
    });
    let (ok, text) = purge();
    assert!(ok, "dpkg --purge: {text}");
    if let Err(e) = checks {
        std::panic::resume_unwind(e);
    }
    for path in INSTALLED.iter().chain(&["/etc/berth"]) {
        assert!(!Path::new(path).exists(), "{path} left after the purge");
    }
    let (installed, _) = run(Command::new("dpkg").args(["-s", "berth"]));
    assert!(!installed, "dpkg still knows berth");
}
