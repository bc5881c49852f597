//! A network namespace of one test, pinned at a file, so that a daemon and its bridge live there
//! (never in the host's own netns), can be killed and restarted in the same namespace, and its
//! links, firewall rules and leases can be read from outside.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use super::{stderr, stdout, TestEnv};

pub struct TestNetns {
    pin: PathBuf,
}

impl TestNetns {
    /// Creates the namespace (with lo up), pinned at `<test dir>/netns.pin`.
    pub fn new(env: &TestEnv) -> TestNetns {
        let pin = env.dir.path().join("netns.pin");
        std::fs::File::create(&pin).unwrap();
        let out = Command::new("unshare")
            .arg(format!("--net={}", pin.display()))
            .args(["ip", "link", "set", "lo", "up"])
            .output()
            .unwrap();
        assert!(out.status.success(), "unshare --net: {}", stderr(&out));
        TestNetns { pin }
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.pin.display())).arg(program);
        c
    }

    /// `sh -c script` inside the namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.command("sh").arg("-c").arg(script).output().unwrap()
    }

    /// The names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.sh("ip -o link show");
        assert!(out.status.success(), "ip link: {}", stderr(&out));
        let mut names: Vec<String> = stdout(&out)
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next()?.to_string())
            })
            .collect();
        names.sort();
        names
    }

    /// The host ends of container veths (berth names them `bth` + 8 hex digits).
    pub fn veths(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("bth"))
            .collect()
    }

    /// The comments of the rules in berth's nftables table, sorted (empty without the table).
    pub fn rule_comments(&self) -> Vec<String> {
        let out = self.sh("nft list table ip berth 2>/dev/null");
        let mut comments: Vec<String> = stdout(&out)
            .lines()
            .filter_map(|l| {
                let c = l.split("comment \"").nth(1)?;
                Some(c.trim_end_matches('"').to_string())
            })
            .collect();
        comments.sort();
        comments
    }

    /// Kernel objects left by containers: veths and per-container rules.
    pub fn container_leftovers(&self) -> Vec<String> {
        let mut left = self.veths();
        left.extend(
            self.rule_comments()
                .into_iter()
                .filter(|c| c.starts_with("berth id=")),
        );
        left
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.pin, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.pin);
    }
}
