//! Health probes, run by the supervisor rather than by the image: `tcp` and `http` connect to
//! 127.0.0.1 inside the container's own network namespace (from a socket made there by a
//! short-lived thread that enters it and dies), so they work in bridge, none and host mode
//! with nothing installed in the image; `exec` runs the command inside the container as
//! `berth exec` does, and kills it at the probe's timeout. The caller bounds every probe by its
//! timeout.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cgroups::ContainerCgroup;
use crate::runtime::exec::{self, Target};
use crate::spec::{Probe, ValidatedSpec};
use crate::state::{self, Instance};

/// Kept of a probe's output (as Docker keeps 4 KiB).
const OUTPUT_MAX: usize = 4096;

/// Runs the spec's probe once: healthy or not, and what it said.
pub async fn run(
    inst: Instance,
    spec: ValidatedSpec,
    exe: Arc<OwnedFd>,
    cgroup_parent: String,
) -> (bool, String) {
    let Some(health) = spec.health.clone() else {
        return (true, String::new());
    };
    match health.probe {
        Probe::Tcp { port } => match connect(&inst, port).await {
            Ok(_) => (true, format!("connected to 127.0.0.1:{port}")),
            Err(e) => (false, format!("connecting to 127.0.0.1:{port}: {e}")),
        },
        Probe::Http { port, path } => match http(&inst, port, &path).await {
            Ok((code, line)) => ((200..400).contains(&code), line),
            Err(e) => (false, format!("GET http://127.0.0.1:{port}{path}: {e}")),
        },
        Probe::Exec { command } => {
            let timeout = health.timeout;
            tokio::task::spawn_blocking(move || {
                exec_probe(&inst, &spec, command, &exe, &cgroup_parent, timeout)
            })
            .await
            .unwrap_or_else(|e| (false, format!("probe task failed: {e}")))
        }
    }
}

/// A TCP socket created in the network namespace of `inst`'s init, connected to
/// 127.0.0.1:`port` there.
async fn connect(inst: &Instance, port: u16) -> io::Result<TcpStream> {
    let fd = socket_in_netns(inst.init_pid, inst.init_start).await?;
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
}

/// A non-blocking TCP socket of the network namespace of process `pid` (proved by its start
/// time): made by a thread that enters that namespace and exits, so no thread of the daemon is
/// ever left in a container's namespace.
async fn socket_in_netns(pid: i32, start: u64) -> io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-probe".into())
        .spawn(move || {
            let made = (|| -> io::Result<OwnedFd> {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                if !state::is_same_process(pid, start) {
                    return Err(io::Error::other("the container's init is gone"));
                }
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    None,
                )?)
            })();
            let _ = tx.send(made);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the probe thread failed"))?
}

/// GET `path`: the status code and the status line.
async fn http(inst: &Instance, port: u16, path: &str) -> io::Result<(u16, String)> {
    let mut stream = connect(inst, port).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-health\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < OUTPUT_MAX {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    parse_status_line(&line)
        .map(|code| (code, line.clone()))
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {line:?}")))
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

/// Runs `command` inside the container through the exec helper; killed (with what it
/// started) at `timeout`.
fn exec_probe(
    inst: &Instance,
    spec: &ValidatedSpec,
    command: Vec<String>,
    exe: &OwnedFd,
    cgroup_parent: &str,
    timeout: Duration,
) -> (bool, String) {
    let result = (|| -> Result<crate::sys::spawn::Output, String> {
        let cgroup_procs = match ContainerCgroup::open(cgroup_parent, &inst.id) {
            Ok(Some(cg)) => cg.join_files(),
            Ok(None) => return Err(format!("no cgroup {cgroup_parent}/{}", inst.id)),
            Err(e) => return Err(e.to_string()),
        };
        let target = Target {
            name: &spec.name,
            spec,
            instance: Some(inst),
            cgroup_procs,
        };
        let mut plan = exec::plan(&target, command, false, false).map_err(|e| e.to_string())?;
        plan.die_with_helper = true;
        let h = exec::helper_command(exe, &plan).map_err(|e| e.to_string())?;
        crate::sys::children::while_waited(|| crate::sys::spawn::output(h.spawn(), timeout))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let mut text = text.trim().to_string();
            if text.len() > OUTPUT_MAX {
                let mut end = OUTPUT_MAX;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            let ok = out.status.success();
            if text.is_empty() {
                text = match out.status.code() {
                    Some(c) => format!("exit code {c}"),
                    None => "killed".into(),
                };
            }
            (ok, text)
        }
        Err(e) => (false, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.0 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.1 302 Found"), Some(302));
        assert_eq!(
            parse_status_line("HTTP/1.1 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 abc"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
