//! The control socket: a unix socket (mode 0600, in a 0700 dir) whose peers must be root or
//! the daemon's own user; one JSON request per connection, answered by the decision loop.
//! Bounded against its clients: the peer is checked before anything is read, a request must
//! arrive whole within [`REQUEST_TIMEOUT`] and within [`MAX_REQUEST`] bytes, at most
//! [`CONNECTIONS_AT_ONCE`] connections are served at once, and accept backs off when the
//! daemon is out of fds instead of spinning.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::control::{Request, Response};
use super::daemon::DaemonError;
use super::engine::Event;

/// The longest request line taken (requests are a few dozen bytes).
pub const MAX_REQUEST: u64 = 64 << 10;
/// How long a client has to send its request after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (`berth events` streams included); more wait to be accepted.
pub const CONNECTIONS_AT_ONCE: usize = 4096;

pub fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
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
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Serves the control socket from a thread of its own with its own event loop, so `ps`
/// (answered from the board) never waits behind a decision pass, however long passes get
/// in a burst of thousands of specs. Everything else is still decided by the loop, through
/// `tx`.
pub fn spawn_control_thread(
    listener: std::os::unix::net::UnixListener,
    tx: mpsc::UnboundedSender<Event>,
    ps: PsSource,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()?;
    std::thread::Builder::new()
        .name("berth-control".into())
        .spawn(move || {
            rt.block_on(async move {
                match UnixListener::from_std(listener) {
                    Ok(l) => accept_loop(l, tx, ps).await,
                    Err(e) => tracing::error!("control socket: {e}"),
                }
            })
        })?;
    Ok(())
}

/// Accepts connections with `accept` and serves each with `serve` in a task of its own, at
/// most `at_once` at a time (more wait in the kernel's queue). An accept error (EMFILE and
/// the like) waits 100 ms rather than spinning on the pending connection.
pub async fn accept_bounded<S, A, AF, F, SF>(what: &str, at_once: usize, mut accept: A, serve: F)
where
    A: FnMut() -> AF,
    AF: std::future::Future<Output = std::io::Result<S>>,
    F: Fn(S) -> SF,
    SF: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(at_once));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("{what}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let served = serve(stream);
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
}

/// What `ps` is answered from without the decision loop: its board and, for the addresses of
/// bridge containers, the leases.
#[derive(Clone)]
pub struct PsSource {
    pub board: super::status::Board,
    pub effects: std::sync::Arc<dyn super::effects::Effects>,
}

impl PsSource {
    async fn answer(&self) -> Response {
        let addresses = if self.board.any_bridged() {
            let fx = std::sync::Arc::clone(&self.effects);
            tokio::task::spawn_blocking(move || fx.bridge_hosts())
                .await
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            Default::default()
        };
        self.board.ps(&addresses)
    }
}

async fn accept_loop(listener: UnixListener, tx: mpsc::UnboundedSender<Event>, ps: PsSource) {
    let me = nix::unistd::geteuid().as_raw();
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    accept_bounded("control socket", CONNECTIONS_AT_ONCE, accept, |stream| {
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == me)
            .unwrap_or(false);
        let (tx, ps) = (tx.clone(), ps.clone());
        async move { serve(stream, allowed, &tx, &ps).await }
    })
    .await
}

/// Reads the request line: at most `MAX_REQUEST` bytes, within `REQUEST_TIMEOUT`.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(r: R) -> Result<Request, String> {
    let mut line = String::new();
    let mut reader = BufReader::with_capacity(1024, r.take(MAX_REQUEST + 1));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err(format!("no request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() as u64 > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))
}

async fn serve(
    stream: UnixStream,
    allowed: bool,
    tx: &mpsc::UnboundedSender<Event>,
    ps: &PsSource,
) {
    let (r, mut w) = stream.into_split();
    let resp = if !allowed {
        // Nothing is read from a peer that may not ask.
        Response::Error("permission denied".into())
    } else {
        match read_request(r).await {
            Err(e) => Response::Error(e),
            // Never waits for the loop (see `status::Board`).
            Ok(Request::Ps) => ps.answer().await,
            Ok(Request::Events) => {
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
            Ok(req) => {
                let (reply, rx) = oneshot::channel();
                let _ = tx.send(Event::Control { req, reply });
                rx.await
                    .unwrap_or_else(|_| Response::Error("the daemon is shutting down".into()))
            }
        }
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = w.write_all(&out).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_bounded_in_size() {
        let ok = read_request(&b"{\"cmd\":\"ps\"}\n"[..]).await;
        assert_eq!(ok, Ok(Request::Ps));
        let huge = vec![b'x'; 10 << 20];
        let err = read_request(&huge[..]).await.unwrap_err();
        assert!(err.contains("longer than 65536"), "{err}");
        let err = read_request(&b"{\"cmd\":\"nosuch\"}\n"[..])
            .await
            .unwrap_err();
        assert!(err.starts_with("bad request"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped() {
        let (_keep, quiet) = tokio::io::duplex(64);
        let err = read_request(quiet).await.unwrap_err();
        assert!(err.contains("no request within"), "{err}");
    }
}
