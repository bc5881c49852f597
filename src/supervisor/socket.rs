//! The control socket: a unix socket (mode 0600, in a 0700 dir) whose peers must be root or
//! the daemon's own user; one JSON request per connection, answered by the decision loop.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::control::{Request, Response};
use super::daemon::DaemonError;
use super::engine::Event;

pub fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another daemon is listening there",
        )));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

pub async fn accept_loop(listener: UnixListener, tx: mpsc::UnboundedSender<Event>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == me)
            .unwrap_or(false);
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            if allowed && matches!(serde_json::from_str(&line), Ok(Request::Events)) {
                let (events, mut rx) = mpsc::unbounded_channel::<String>();
                let _ = tx.send(Event::Subscribe { events });
                while let Some(mut ev) = rx.recv().await {
                    ev.push('\n');
                    if w.write_all(ev.as_bytes()).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let resp = if !allowed {
                Response::Error("permission denied".into())
            } else {
                match serde_json::from_str::<Request>(&line) {
                    Err(e) => Response::Error(format!("bad request: {e}")),
                    Ok(req) => {
                        let (reply, rx) = oneshot::channel();
                        let _ = tx.send(Event::Control { req, reply });
                        rx.await.unwrap_or_else(|_| {
                            Response::Error("the daemon is shutting down".into())
                        })
                    }
                }
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}
