//! `berth version` and `berth info`: what this binary is, and this host as berth sees it
//! (as `docker version` and `docker info` show theirs).

use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use super::{Cli, EXIT_BERTH_ERROR};
use crate::cgroups::{cgroup_mode, CgroupMode};
use crate::supervisor::control::{call, Request};

fn print(v: &Value, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else if let Some(o) = v.as_object() {
        for (k, val) in o {
            match val {
                Value::Object(inner) => {
                    println!("{k}:");
                    for (ik, iv) in inner {
                        println!("  {ik}: {}", text(iv));
                    }
                }
                other => println!("{k}: {}", text(other)),
            }
        }
    }
    ExitCode::SUCCESS
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn static_binary() -> bool {
    // A dynamic binary has its program interpreter (ld-linux) mapped; reading the maps costs
    // a page, where scanning the binary would read all of it.
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| !m.lines().any(|l| l.contains("/ld-linux")))
        .unwrap_or(false)
}

pub fn version(json: bool) -> ExitCode {
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "os/arch": format!("{}/{}", std::env::consts::OS, crate::image::host_arch()),
        "static": static_binary(),
    });
    print(&v, json)
}

fn kernel() -> String {
    let u = nix::sys::utsname::uname();
    match u {
        Ok(u) => format!(
            "{} {}",
            u.release().to_string_lossy(),
            u.machine().to_string_lossy()
        ),
        Err(e) => format!("unknown ({e})"),
    }
}

pub fn info(cli: &Cli, config: Option<&Path>, json: bool) -> ExitCode {
    let cfg = match cli.settings(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(EXIT_BERTH_ERROR);
        }
    };
    let cgroups = match cgroup_mode() {
        CgroupMode::V2 => "v2",
        CgroupMode::Hybrid => "v1 (hybrid: cgroup2 at /sys/fs/cgroup/unified)",
        CgroupMode::V1 => "v1",
    };
    let images = crate::image::ImageStore::open(&cfg.root)
        .ok()
        .and_then(|s| s.images().ok())
        .map(|i| i.len());
    let free = nix::sys::statvfs::statvfs(&cfg.root)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size());
    // What the daemon says, if one answers on the socket.
    let daemon = match call(&cfg.socket, &Request::Ps) {
        Ok(rows) => {
            let rows = rows.as_array().cloned().unwrap_or_default();
            let count = |state: &str| rows.iter().filter(|r| r["state"] == state).count();
            json!({
                "socket": cfg.socket,
                "containers": rows.len(),
                "running": count("running"),
                "stopped": count("stopped"),
                "failed": count("failed"),
            })
        }
        Err(e) => json!({"socket": cfg.socket, "answer": format!("none ({e})")}),
    };
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel(),
        "cgroups": {
            "version": cgroups,
            "driver": "cgroupfs",
            "parent": cfg.cgroup_parent,
        },
        "storage": {
            "root": cfg.root,
            "driver": "overlay",
            "images": images,
            "free_bytes": free,
        },
        "network": {
            "bridge": cfg.network.bridge,
            "subnet": format!("{}/{}", cfg.network.subnet.0, cfg.network.subnet.1),
        },
        "specs": cfg.specs,
        "daemon": daemon,
    });
    print(&v, json)
}
