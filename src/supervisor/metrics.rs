//! Prometheus metrics (`[metrics] listen`): the daemon's counters and histograms, kept as
//! atomics that the loop, the probes and the pulls add to; the text exposition format
//! rendered from them and from a sample of each container; and the small HTTP server that
//! answers `GET /metrics` (bounded: a few connections at once, a short deadline, a small
//! request head).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::control::{ContainerStats, Request, Response};
use super::engine::Event;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Scrapes served at once; more wait for their turn.
const CONNECTIONS_AT_ONCE: usize = 4;
/// A scrape's whole exchange, from accept to the last byte written.
const DEADLINE: Duration = Duration::from_secs(10);
/// The longest request head taken.
const MAX_HEAD: usize = 8192;

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// What the daemon counts, shared by the loop and the workers.
#[derive(Default)]
pub struct Counters {
    pub reconciles: AtomicU64,
    pub reconcile_seconds: Histogram,
    pub probe_seconds: Histogram,
    pub probe_failures: AtomicU64,
    pub pulls_ok: AtomicU64,
    pub pulls_failed: AtomicU64,
    pub pull_seconds: Histogram,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
}

/// The states a container can be in, as `ps` names them.
pub const STATES: [&str; 10] = [
    "pending",
    "waiting",
    "starting",
    "running",
    "updating",
    "stopping",
    "restarting",
    "exited",
    "failed",
    "stopped",
];
const HEALTHS: [&str; 3] = ["starting", "healthy", "unhealthy"];

/// One container as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub name: String,
    pub state: String,
    pub health: Option<String>,
    pub restarts_total: u64,
    /// The last exit's code (128 + the signal for a kill), once it ended at least once.
    pub last_exit_code: Option<i64>,
    pub usage: Option<Usage>,
}

/// A running container's use of the machine, read once from its cgroup (and bridge veth).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    /// Bytes received and sent on the bridge (bridge mode only).
    pub traffic: Option<(u64, u64)>,
}

/// A `berth stats` row from two reads of a container's usage `elapsed` apart.
pub fn stats_row(name: &str, before: &Usage, after: &Usage, elapsed: Duration) -> ContainerStats {
    let used = after.cpu_ns.saturating_sub(before.cpu_ns) as f64;
    let window = elapsed.as_nanos().max(1) as f64;
    ContainerStats {
        name: name.to_string(),
        cpu_percent: (used / window * 1000.0).round() / 10.0,
        memory_bytes: after.memory_bytes,
        memory_limit: after.memory_limit,
        pids: after.pids,
        net_rx_bytes: after.traffic.map(|t| t.0),
        net_tx_bytes: after.traffic.map(|t| t.1),
    }
}

/// A label value as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Writes one metric family: HELP, TYPE and a line per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, lines: &[(String, f64)]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in lines {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
        cumulative += n.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

/// The text exposition format of the counters and the containers.
pub fn render(c: &Counters, samples: &[Sample]) -> String {
    let mut out = String::new();
    let per = |f: &dyn Fn(&Sample) -> Vec<(String, f64)>| -> Vec<(String, f64)> {
        samples.iter().flat_map(f).collect()
    };
    let by_name = |s: &Sample| format!("{{name=\"{}\"}}", label(&s.name));
    family(
        &mut out,
        "berth_container_state",
        "gauge",
        "1 for the state each container is in (as berth ps shows it), 0 for the others.",
        &per(&|s| {
            STATES
                .iter()
                .map(|st| {
                    let labels = format!("{{name=\"{}\",state=\"{st}\"}}", label(&s.name));
                    (labels, f64::from(u8::from(s.state == *st)))
                })
                .collect()
        }),
    );
    family(
        &mut out,
        "berth_container_health",
        "gauge",
        "1 for the health of each probed container, 0 for the others.",
        &per(&|s| {
            let Some(h) = &s.health else {
                return Vec::new();
            };
            HEALTHS
                .iter()
                .map(|st| {
                    let labels = format!("{{name=\"{}\",health=\"{st}\"}}", label(&s.name));
                    (labels, f64::from(u8::from(h == st)))
                })
                .collect()
        }),
    );
    family(
        &mut out,
        "berth_container_restarts_total",
        "counter",
        "Restarts by the restart policy since the daemon started.",
        &per(&|s| vec![(by_name(s), s.restarts_total as f64)]),
    );
    family(
        &mut out,
        "berth_container_last_exit_code",
        "gauge",
        "Exit code of the container's last instance (128 + signal when killed).",
        &per(&|s| {
            s.last_exit_code
                .map(|c| (by_name(s), c as f64))
                .into_iter()
                .collect()
        }),
    );
    let usage = |f: fn(&Usage) -> Option<f64>| {
        per(&|s| {
            s.usage
                .as_ref()
                .and_then(f)
                .map(|v| (by_name(s), v))
                .into_iter()
                .collect()
        })
    };
    family(
        &mut out,
        "berth_container_cpu_seconds_total",
        "counter",
        "CPU time used by the running instance's cgroup.",
        &usage(|u| Some(u.cpu_ns as f64 / 1e9)),
    );
    family(
        &mut out,
        "berth_container_memory_bytes",
        "gauge",
        "Memory used by the running instance's cgroup.",
        &usage(|u| Some(u.memory_bytes as f64)),
    );
    family(
        &mut out,
        "berth_container_memory_limit_bytes",
        "gauge",
        "The running instance's memory limit, when it has one.",
        &usage(|u| u.memory_limit.map(|l| l as f64)),
    );
    family(
        &mut out,
        "berth_container_pids",
        "gauge",
        "Processes in the running instance's cgroup.",
        &usage(|u| Some(u.pids as f64)),
    );
    family(
        &mut out,
        "berth_container_network_receive_bytes_total",
        "counter",
        "Bytes the running bridge container received.",
        &usage(|u| u.traffic.map(|t| t.0 as f64)),
    );
    family(
        &mut out,
        "berth_container_network_transmit_bytes_total",
        "counter",
        "Bytes the running bridge container sent.",
        &usage(|u| u.traffic.map(|t| t.1 as f64)),
    );
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    family(
        &mut out,
        "berth_reconciles_total",
        "counter",
        "Planning passes of the decision loop.",
        &[(String::new(), load(&c.reconciles))],
    );
    histogram(
        &mut out,
        "berth_reconcile_duration_seconds",
        "Time of one planning pass (plan and hand out the actions).",
        &c.reconcile_seconds,
    );
    histogram(
        &mut out,
        "berth_probe_duration_seconds",
        "Time of one health probe, up to its timeout.",
        &c.probe_seconds,
    );
    family(
        &mut out,
        "berth_probe_failures_total",
        "counter",
        "Health probes that failed or timed out.",
        &[(String::new(), load(&c.probe_failures))],
    );
    family(
        &mut out,
        "berth_image_pulls_total",
        "counter",
        "Images made ready for a start or an update (from the store or a registry).",
        &[
            ("{result=\"ok\"}".into(), load(&c.pulls_ok)),
            ("{result=\"error\"}".into(), load(&c.pulls_failed)),
        ],
    );
    histogram(
        &mut out,
        "berth_image_pull_duration_seconds",
        "Time to make an image ready, waiting for the pull queue included.",
        &c.pull_seconds,
    );
    family(
        &mut out,
        "berth_image_checks_total",
        "counter",
        "Registry checks of a tag (update.check).",
        &[
            ("{result=\"ok\"}".into(), load(&c.checks_ok)),
            ("{result=\"error\"}".into(), load(&c.checks_failed)),
        ],
    );
    out
}

/// Binds the metrics listener (before the loop runs, so that a taken port is a start error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers scrapes until the daemon ends.
pub async fn serve(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    super::socket::accept_bounded("metrics", CONNECTIONS_AT_ONCE, accept, |stream| {
        let events = events.clone();
        async move {
            let _ = tokio::time::timeout(DEADLINE, answer(stream, &events)).await;
        }
    })
    .await
}

/// Whether a request head asks for the metrics; if not, the status and body to answer.
fn route(head: &[u8]) -> Result<(), (&'static str, &'static str)> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    match (method, path) {
        (Some("GET"), Some("/metrics")) => Ok(()),
        (Some("GET"), Some(_)) => Err(("404 Not Found", "only /metrics is served\n")),
        (Some(_), Some(_)) => Err(("405 Method Not Allowed", "use GET\n")),
        _ => Err(("400 Bad Request", "bad request\n")),
    }
}

async fn answer(mut stream: TcpStream, events: &mpsc::UnboundedSender<Event>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = reply(&mut stream, "431 Request Header Fields Too Large", "").await;
            return;
        }
    }
    let (status, body) = match route(&head) {
        Ok(()) => {
            let (tx, rx) = oneshot::channel();
            let req = Request::Metrics;
            if events.send(Event::Control { req, reply: tx }).is_err() {
                return;
            }
            match rx.await.map(Response::into_value) {
                Ok(Ok(serde_json::Value::String(text))) => ("200 OK", text),
                _ => (
                    "503 Service Unavailable",
                    "the daemon is shutting down\n".into(),
                ),
            }
        }
        Err((status, body)) => (status, body.to_string()),
    };
    let _ = reply(&mut stream, status, &body).await;
}

async fn reply(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, state: &str) -> Sample {
        Sample {
            name: name.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(()));
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Ok(()));
        assert_eq!(
            route(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().0,
            "404 Not Found"
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap_err().0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"\r\n\r\n").unwrap_err().0, "400 Bad Request");
    }

    #[test]
    fn renders_each_family_once_with_one_state_set() {
        let c = Counters::default();
        c.reconciles.fetch_add(3, Ordering::Relaxed);
        c.reconcile_seconds.observe(Duration::from_micros(700));
        c.reconcile_seconds.observe(Duration::from_millis(30));
        let mut web = sample("web", "running");
        web.health = Some("healthy".into());
        web.restarts_total = 2;
        web.last_exit_code = Some(137);
        web.usage = Some(Usage {
            cpu_ns: 1_500_000_000,
            memory_bytes: 4096,
            memory_limit: Some(1 << 20),
            pids: 3,
            traffic: Some((10, 20)),
        });
        let text = render(&c, &[web, sample("db", "exited")]);
        for line in [
            "berth_container_state{name=\"web\",state=\"running\"} 1",
            "berth_container_state{name=\"web\",state=\"exited\"} 0",
            "berth_container_state{name=\"db\",state=\"exited\"} 1",
            "berth_container_health{name=\"web\",health=\"healthy\"} 1",
            "berth_container_health{name=\"web\",health=\"unhealthy\"} 0",
            "berth_container_restarts_total{name=\"web\"} 2",
            "berth_container_restarts_total{name=\"db\"} 0",
            "berth_container_last_exit_code{name=\"web\"} 137",
            "berth_container_cpu_seconds_total{name=\"web\"} 1.5",
            "berth_container_memory_limit_bytes{name=\"web\"} 1048576",
            "berth_container_network_transmit_bytes_total{name=\"web\"} 20",
            "berth_reconciles_total 3",
            "berth_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "berth_reconcile_duration_seconds_bucket{le=\"0.05\"} 2",
            "berth_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "berth_reconcile_duration_seconds_count 2",
            "berth_image_pulls_total{result=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // db has no probe and does not run: no health or usage lines.
        assert!(!text.contains("health{name=\"db\""));
        assert!(!text.contains("memory_bytes{name=\"db\""));
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let mut names: Vec<_> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        names.dedup();
        assert_eq!(names.len(), types, "a family written twice");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
