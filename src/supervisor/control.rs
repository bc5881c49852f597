//! The control socket's protocol: one JSON request per line, one JSON response per line, over a
//! unix socket with mode 0600 whose peer must be root or the daemon's own user.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Ps,
    Inspect {
        name: String,
    },
    Stats,
    Stop {
        name: String,
    },
    Start {
        name: String,
    },
    Restart {
        name: String,
    },
    Plan,
    /// Every status change from now on, one JSON object per line (as in the status files),
    /// until the client hangs up.
    Events,
    /// The Prometheus text of the daemon and its containers (a JSON string).
    Metrics,
    /// Stop every container and end the daemon; as the machine's init, then power off,
    /// reboot or halt.
    Power {
        action: crate::init::Power,
    },
}

/// The daemon's answer. The data is encoded once, straight from what the loop built (a
/// `ps` of thousands of rows never becomes a tree of JSON values first).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Ok(Box<serde_json::value::RawValue>),
    Error(String),
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        match serde_json::value::to_raw_value(&data) {
            Ok(raw) => Response::Ok(raw),
            Err(e) => Response::Error(format!("encoding the answer: {e}")),
        }
    }

    /// The data as a JSON tree, or the daemon's error.
    pub fn into_value(self) -> Result<serde_json::Value, String> {
        match self {
            Response::Ok(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
            Response::Error(e) => Err(e),
        }
    }
}

/// One row of `berth ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// running, exited, failed, stopped, starting, stopping.
    pub state: String,
    pub pid: Option<i32>,
    pub id: Option<String>,
    pub image: String,
    pub restarts: u32,
    /// How it last ended: an exit code, `signal N`, plus `(OOM killed)`.
    pub last_exit: Option<String>,
    /// Why it is not restarted, or why starting failed.
    pub note: Option<String>,
    /// The spec file's current error, when its last good version is what runs.
    pub spec_error: Option<String>,
    /// The address on the bridge of a running bridge-mode container.
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Published ports, `HOST:CONTAINER/PROTO`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// starting, healthy or unhealthy, for a running container with a `[health]` probe.
    #[serde(default)]
    pub health: Option<String>,
    /// What its last probe said.
    #[serde(default)]
    pub health_output: Option<String>,
}

/// One row of `berth stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    /// Bytes received and sent on the bridge (bridge mode only).
    #[serde(default)]
    pub net_rx_bytes: Option<u64>,
    #[serde(default)]
    pub net_tx_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the daemon at {path}: {source} (is `berth supervise` running?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response from the daemon: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error("{0}")]
    Daemon(String),
}

/// Connects and sends `req` as one line.
fn send(socket: &Path, req: &Request) -> Result<UnixStream, ControlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(stream)
}

/// Sends one request and returns the daemon's data.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, ControlError> {
    let mut reader = BufReader::new(send(socket, req)?);
    let mut resp = String::new();
    reader.read_line(&mut resp)?;
    match serde_json::from_str::<Response>(&resp)? {
        Response::Ok(raw) => Ok(serde_json::from_str(raw.get())?),
        Response::Error(e) => Err(ControlError::Daemon(e)),
    }
}

/// Sends `req` and hands each line the daemon streams back to `each`, until it hangs up.
pub fn stream(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<(), ControlError> {
    for line in BufReader::new(send(socket, req)?).lines() {
        each(&line?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::Stop { name: "web".into() };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"stop","name":"web"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"ps"}"#).unwrap(),
            Request::Ps
        );
        let ok = Response::ok([1]);
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":[1]}"#);
        let back: Response = serde_json::from_str(r#"{"ok":[1, {"a": 2}]}"#).unwrap();
        assert_eq!(back.into_value(), Ok(serde_json::json!([1, {"a": 2}])));
    }
}
