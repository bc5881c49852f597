//! The decision loop and the workers against a recording fake of the host, without root, in
//! tokio's paused time (a 10 s stop timeout takes no real time, and time only moves when
//! every task waits): parallel stops, a start during stops, failed updates keeping the old
//! instance, adoption, a manual stop that sticks, and a shutdown that forgets nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};

use super::control::{Request, Response};
use super::effects::{Effects, Ending, Wait};
use super::engine::{Engine, Event};
use super::metrics::Usage;
use crate::reconcile::plan::Bandwidth;
use crate::runtime::protocol::ExitStatus;
use crate::source::SpecSource;
use crate::spec::{ValidatedSpec, ValidationContext};
use crate::state::{ContainerRecord, Instance, StateDir};

/// Images the fake treats specially.
const BAD_PULL: &str = "oci:/img:unpullable";
const BAD_START: &str = "oci:/img:crashes-at-start";
const SLOW_PULL: &str = "oci:/img:slow";
const EXITS: &str = "oci:/img:exits-at-once";

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    next_pid: AtomicI32,
    /// Per instance id: the exit flag, and whether its process ignores SIGTERM.
    procs: Mutex<BTreeMap<String, (watch::Sender<bool>, bool)>>,
    /// Instance ids that a previous daemon left running.
    alive: Mutex<BTreeSet<String>>,
    /// Holds a pull of SLOW_PULL until released.
    gate: (Mutex<bool>, Condvar),
    /// Instance ids whose probes fail.
    sick: Mutex<BTreeSet<String>>,
    /// What each registry tag names (a digest number); an image by a tag not listed here is
    /// digest 0. Instances of a digest at or above `EXITING_DIGEST` exit at once.
    tags: Mutex<BTreeMap<String, u64>>,
    usage_reads: AtomicI32,
    /// The bridge leases, by name.
    leases: Mutex<Vec<(String, std::net::Ipv4Addr)>>,
}

const EXITING_DIGEST: u64 = 0xdead;

fn digest(n: u64) -> String {
    format!("sha256:{n:064x}")
}

impl Fake {
    fn call(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls so far that start with `prefix`, in order.
    fn matching(&self, prefix: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    fn count(&self, prefix: &str) -> usize {
        self.matching(prefix).len()
    }

    fn exit(&self, id: &str) {
        if let Some((tx, _)) = self.procs.lock().unwrap().get(id) {
            tx.send_replace(true);
        }
    }

    fn track(&self, id: &str, ignores_term: bool) {
        let (tx, _) = watch::channel(false);
        self.procs
            .lock()
            .unwrap()
            .insert(id.to_string(), (tx, ignores_term));
    }

    fn release(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Effects for Fake {
    fn pull(&self, spec: &ValidatedSpec) -> Result<(), String> {
        self.call(format!("pull {} {}", spec.name, spec.image));
        if spec.image == SLOW_PULL {
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
        }
        if spec.image == BAD_PULL {
            return Err("manifest unknown".into());
        }
        Ok(())
    }

    fn fetch_current(
        &self,
        image: &str,
        _build: Option<&crate::spec::BuildSpec>,
    ) -> Result<String, String> {
        self.call(format!("check {image}"));
        let n = self.tags.lock().unwrap().get(image).copied().unwrap_or(0);
        Ok(format!("{image}@{}", digest(n)))
    }

    fn start(&self, spec: &ValidatedSpec) -> Result<Instance, String> {
        self.call(format!("start {} {}", spec.name, spec.image));
        if spec.image == BAD_START {
            return Err("exec format error".into());
        }
        let pid = 100 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{pid}", spec.name);
        self.track(&id, spec.env.contains_key("IGNORES_TERM"));
        // By digest, the one pinned; by tag, the one the tag names.
        let image_digest = match spec.image.split_once('@') {
            Some((_, d)) => d.to_string(),
            None => digest(
                self.tags
                    .lock()
                    .unwrap()
                    .get(&spec.image)
                    .copied()
                    .unwrap_or(0),
            ),
        };
        let exits = u64::from_str_radix(image_digest.trim_start_matches("sha256:"), 16)
            .is_ok_and(|n| n >= EXITING_DIGEST);
        if spec.image == EXITS || exits {
            self.exit(&id);
        }
        Ok(Instance {
            id,
            init_pid: pid,
            init_start: 1,
            monitor_pid: pid,
            monitor_start: 1,
            started_at: SystemTime::now(),
            image_digest: Some(image_digest),
        })
    }

    fn signal(&self, inst: &Instance, signal: i32) {
        self.call(format!("signal {} {signal}", inst.id));
        let ignores = self
            .procs
            .lock()
            .unwrap()
            .get(&inst.id)
            .is_some_and(|p| p.1);
        if !ignores {
            self.exit(&inst.id);
        }
    }

    fn exited(&self, inst: &Instance) -> Wait {
        let rx = self
            .procs
            .lock()
            .unwrap()
            .get(&inst.id)
            .map(|p| p.0.subscribe());
        Box::pin(async move {
            if let Some(mut rx) = rx {
                let _ = rx.wait_for(|gone| *gone).await;
            }
        })
    }

    fn kill_all(&self, inst: &Instance) {
        self.call(format!("kill {}", inst.id));
        self.exit(&inst.id);
    }

    fn cleanup(&self, inst: &Instance, release_lease: bool) -> Ending {
        self.call(format!("cleanup {} {release_lease}", inst.id));
        Ending {
            exit: Some((ExitStatus::Code(0), false)),
            ran_for: Duration::from_secs(1),
        }
    }

    fn update(
        &self,
        spec: &ValidatedSpec,
        inst: &Instance,
        _: Option<Bandwidth>,
    ) -> Result<(), String> {
        self.call(format!("update {} {:?}", inst.id, spec.resources.pids));
        Ok(())
    }

    fn probe(&self, inst: &Instance, _: &ValidatedSpec) -> super::effects::ProbeResult {
        self.call(format!("probe {}", inst.id));
        let ok = !self.sick.lock().unwrap().contains(&inst.id);
        Box::pin(async move {
            (
                ok,
                if ok {
                    "200 OK".into()
                } else {
                    "connection refused".into()
                },
            )
        })
    }

    fn release_address(&self, name: &str) {
        self.call(format!("release {name}"));
    }

    fn is_alive(&self, inst: &Instance) -> bool {
        self.alive.lock().unwrap().contains(&inst.id)
    }

    fn sweep(&self, _: &BTreeSet<String>) {}

    fn bridge_hosts(&self) -> Vec<(String, std::net::Ipv4Addr)> {
        self.leases.lock().unwrap().clone()
    }

    fn refresh_hosts(&self, _: &[(i32, String)]) {}

    /// Each instance has used one more CPU second at every read, and 4 KiB.
    fn usage(&self, running: &[(String, bool)]) -> Vec<Option<Usage>> {
        let n = self.usage_reads.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        running
            .iter()
            .map(|_| {
                Some(Usage {
                    cpu_ns: n * 1_000_000_000,
                    memory_bytes: 4096,
                    ..Default::default()
                })
            })
            .collect()
    }

    fn locations(&self, _: &str) -> serde_json::Value {
        serde_json::json!({})
    }
}

struct Harness {
    fake: Arc<Fake>,
    dir: tempfile::TempDir,
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    task: tokio::task::JoinHandle<Option<crate::init::Power>>,
}

/// A spec file body: `image`, then `extra` TOML keys.
fn body(image: &str, extra: &str) -> String {
    format!(
        "image = {image:?}\ncommand = [\"sleep\", \"1000\"]\n{extra}\n[network]\nmode = \"none\"\n"
    )
}

const IGNORES_TERM: &str = "env = { IGNORES_TERM = \"1\" }\nstop_timeout = \"10s\"";

impl Harness {
    fn fixture() -> (Arc<Fake>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("specs")).unwrap();
        (Arc::new(Fake::default()), dir)
    }

    fn start(fake: Arc<Fake>, dir: tempfile::TempDir) -> Harness {
        let state = StateDir::open(&dir.path().join("root")).unwrap();
        let source = SpecSource::new(&dir.path().join("specs"), ValidationContext::default());
        let status = super::status::StatusFiles::open(&dir.path().join("status")).unwrap();
        let (engine, tx, rx) = Engine::new(fake.clone(), state, source, Some(status));
        let hint = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(engine.run(rx, hint, || {}, None));
        Harness {
            fake,
            dir,
            tx,
            task,
        }
    }

    fn write(&self, name: &str, text: &str) {
        write_spec(&self.dir, name, text);
        let _ = self.tx.send(Event::Hint);
    }

    fn delete(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(format!("specs/{name}.toml"))).unwrap();
        let _ = self.tx.send(Event::Hint);
    }

    async fn ask(&self, req: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Event::Control { req, reply }).unwrap();
        rx.await.unwrap()
    }

    async fn ps(&self) -> BTreeMap<String, serde_json::Value> {
        match self.ask(Request::Ps).await.into_value() {
            Ok(serde_json::Value::Array(rows)) => rows
                .into_iter()
                .map(|r| (r["name"].as_str().unwrap().to_string(), r))
                .collect(),
            other => panic!("ps: {other:?}"),
        }
    }

    async fn state(&self, name: &str) -> String {
        self.ps().await.get(name).map_or("absent".into(), |r| {
            r["state"].as_str().unwrap().to_string()
        })
    }

    /// Waits (in paused time, at most `within`) until `name` is in `state`.
    async fn wait_state(&self, name: &str, state: &str, within: Duration) {
        self.wait_row(name, within, |r| r["state"] == state).await;
    }

    /// Waits (in paused time, at most `within`) until `name`'s ps row satisfies `ok`.
    async fn wait_row(
        &self,
        name: &str,
        within: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = tokio::time::Instant::now();
        loop {
            let row = self
                .ps()
                .await
                .remove(name)
                .unwrap_or_else(|| serde_json::json!({ "state": "absent" }));
            if ok(&row) {
                return row;
            }
            assert!(
                t0.elapsed() < within,
                "{name}: {row} after {within:?}; calls: {:?}",
                self.fake.calls()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(self) -> Duration {
        let t0 = tokio::time::Instant::now();
        self.tx.send(Event::Shutdown { power: None }).unwrap();
        self.task.await.unwrap();
        t0.elapsed()
    }
}

/// The status file at `path` once `ok` holds for it: the writer thread puts it on disk a
/// moment after the loop decided (waited for in real time, at most 2 s).
fn status_file_when(
    path: &std::path::Path,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let v: serde_json::Value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if ok(&v) || t0.elapsed() > Duration::from_secs(2) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_spec(dir: &tempfile::TempDir, name: &str, text: &str) {
    std::fs::write(dir.path().join(format!("specs/{name}.toml")), text).unwrap();
}

fn every_start_was_cleaned_up(fake: &Fake) {
    let calls = fake.calls();
    let started = calls.iter().filter(|c| c.starts_with("start ")).count()
        - calls
            .iter()
            .filter(|c| c.starts_with("start ") && c.contains(BAD_START))
            .count();
    assert_eq!(
        fake.count("cleanup "),
        started,
        "an instance was forgotten: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fifty_sigterm_ignoring_containers_stop_in_parallel() {
    let (fake, dir) = Harness::fixture();
    for i in 0..50 {
        write_spec(
            &dir,
            &format!("c{i:02}"),
            &body("oci:/img:v1", IGNORES_TERM),
        );
    }
    let h = Harness::start(fake.clone(), dir);
    for i in 0..50 {
        h.wait_state(&format!("c{i:02}"), "running", Duration::from_secs(5))
            .await;
    }
    let took = h.shutdown().await;
    // One stop timeout (10 s) for all of them, not fifty.
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    assert!(
        took >= Duration::from_secs(10),
        "the stop timeout was not honoured: {took:?}"
    );
    assert_eq!(fake.count("signal "), 50);
    assert_eq!(fake.count("kill "), 50);
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_spec_dropped_during_ten_stops_starts_at_once() {
    let (fake, dir) = Harness::fixture();
    for i in 0..10 {
        write_spec(&dir, &format!("old{i}"), &body("oci:/img:v1", IGNORES_TERM));
    }
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("old9", "running", Duration::from_secs(5))
        .await;
    for i in 0..10 {
        h.delete(&format!("old{i}"));
    }
    h.wait_state("old0", "stopping", Duration::from_secs(1))
        .await;
    let t0 = tokio::time::Instant::now();
    h.write("new", &body("oci:/img:v1", ""));
    h.wait_state("new", "running", Duration::from_millis(200))
        .await;
    assert!(t0.elapsed() < Duration::from_millis(200));
    assert_eq!(
        h.state("old5").await,
        "stopping",
        "the stops are still waiting"
    );
    h.wait_state("old5", "absent", Duration::from_secs(11))
        .await;
    // Removed for good: each gave up its address (release_lease = true).
    assert_eq!(fake.count("cleanup old"), 10);
    assert!(fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("cleanup old"))
        .all(|c| c.ends_with("true")));
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_keeps_the_old_instance_and_a_restored_spec_changes_nothing() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "web", &body("oci:/img:v1", ""));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    let id = h.ps().await["web"]["id"].clone();

    // An image that cannot be pulled: the old one is not even signalled.
    h.write("web", &body(BAD_PULL, ""));
    let failed = |r: &serde_json::Value| {
        r["note"]
            .as_str()
            .is_some_and(|n| n.contains("update failed"))
    };
    let row = h.wait_row("web", Duration::from_secs(1), failed).await;
    assert_eq!(row["state"], "running");
    assert_eq!(row["id"], id, "the same instance runs on");
    assert_eq!(fake.count("signal "), 0);
    // Not tried again on every pass.
    let _ = h.tx.send(Event::Hint);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.count(&format!("pull web {BAD_PULL}")), 1);

    // The spec restored: nothing to do, no second copy.
    h.write("web", &body("oci:/img:v1", ""));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.ps().await["web"]["id"], id);
    assert_eq!(fake.count("start web"), 1);

    // A new version that fails to start: the old one is started again.
    h.write("web", &body(BAD_START, ""));
    let row = h
        .wait_row("web", Duration::from_secs(2), |r| {
            failed(r) && r["state"] == "running" && r["id"] != id
        })
        .await;
    assert_eq!(row["image"], "oci:/img:v1");
    let starts = fake.matching("start web");
    assert_eq!(
        starts,
        [
            "start web oci:/img:v1".to_string(),
            format!("start web {BAD_START}"),
            "start web oci:/img:v1".to_string()
        ]
    );
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn adoption_tracks_the_living_and_cleans_up_the_dead() {
    let (fake, dir) = Harness::fixture();
    let state = StateDir::open(&dir.path().join("root")).unwrap();
    for (name, id) in [("alive", "alive-1"), ("dead", "dead-2")] {
        write_spec(&dir, name, &body("oci:/img:v1", ""));
        let spec = crate::spec::load_file(
            &dir.path().join(format!("specs/{name}.toml")),
            &ValidationContext::default(),
        )
        .unwrap();
        fake.track(id, false);
        state
            .save(&ContainerRecord {
                name: name.into(),
                spec,
                instance: Some(Instance {
                    id: id.into(),
                    init_pid: 10,
                    init_start: 1,
                    monitor_pid: 10,
                    monitor_start: 1,
                    started_at: SystemTime::now(),
                    image_digest: None,
                }),
                restarts: 0,
                manual_stop: false,
                last_exit: None,
            })
            .unwrap();
    }
    fake.alive.lock().unwrap().insert("alive-1".into());
    fake.exit("dead-2");
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("dead", "running", Duration::from_secs(2))
        .await;
    let ps = h.ps().await;
    assert_eq!(ps["alive"]["id"], "alive-1", "adopted, not started again");
    assert_eq!(fake.count("start alive"), 0);
    assert_eq!(fake.count("cleanup dead-2"), 1, "{:?}", fake.calls());
    assert_eq!(fake.count("start dead"), 1, "restarted by its policy");

    // The adopted one's exit is watched like any other.
    fake.exit("alive-1");
    h.wait_row("alive", Duration::from_secs(2), |r| {
        r["state"] == "running" && r["id"] != "alive-1"
    })
    .await;
    assert_eq!(fake.count("cleanup alive-1"), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_stop_sticks_until_start() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "web", &body("oci:/img:v1", IGNORES_TERM));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    assert_eq!(
        h.ask(Request::Stop { name: "web".into() })
            .await
            .into_value(),
        Ok("stopping".into())
    );
    h.wait_state("web", "stopping", Duration::from_secs(1))
        .await;
    h.wait_state("web", "stopped", Duration::from_secs(11))
        .await;
    for _ in 0..3 {
        let _ = h.tx.send(Event::Hint);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(h.state("web").await, "stopped");
    }
    assert_eq!(fake.count("start web"), 1);
    h.ask(Request::Start { name: "web".into() }).await;
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    assert_eq!(fake.count("start web"), 2);

    // restart: stop, then start again.
    h.ask(Request::Restart { name: "web".into() }).await;
    h.wait_state("web", "stopping", Duration::from_secs(1))
        .await;
    h.wait_state("web", "running", Duration::from_secs(11))
        .await;
    assert_eq!(fake.count("start web"), 3);
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

/// Paused time does not move while a blocking task runs (the held pull), so this test waits
/// by yielding, never by sleeping, until the pull is released.
#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_start_stops_what_it_started() {
    let (fake, dir) = Harness::fixture();
    // Whatever fails below, the held pull is let go (a runtime waits for its blocking tasks).
    struct Release(Arc<Fake>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.release();
        }
    }
    let release = Release(fake.clone());
    write_spec(&dir, "slow", &body(SLOW_PULL, ""));
    write_spec(&dir, "quick", &body("oci:/img:v1", ""));
    let h = Harness::start(fake.clone(), dir);
    let mut ready = false;
    for _ in 0..100_000 {
        let ps = h.ps().await;
        if ps.get("quick").is_some_and(|r| r["state"] == "running")
            && ps.get("slow").is_some_and(|r| r["state"] == "starting")
        {
            ready = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(ready, "quick running and slow starting: {:?}", h.ps().await);
    let shutdown = tokio::spawn(h.shutdown());
    let mut stopped = false;
    for _ in 0..1_000_000 {
        if fake.count("cleanup quick") == 1 {
            stopped = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(stopped, "quick was stopped meanwhile: {:?}", fake.calls());
    assert!(
        !shutdown.is_finished(),
        "the shutdown waits for the start in hand"
    );
    drop(release);
    shutdown.await.unwrap();
    let calls = fake.calls();
    let started = calls
        .iter()
        .position(|c| c.starts_with("start slow"))
        .expect("started");
    let cleaned = calls
        .iter()
        .position(|c| c.starts_with("cleanup slow"))
        .expect("cleaned up");
    assert!(started < cleaned, "{calls:?}");
    every_start_was_cleaned_up(&fake);
}

const PROBED: &str =
    "[health]\ntcp = { port = 80 }\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 2";

#[tokio::test(start_paused = true)]
async fn an_unhealthy_container_is_killed_and_restarted_on_the_backoff_curve() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "web", &body("oci:/img:v1", PROBED));
    let h = Harness::start(fake.clone(), dir);
    let row = h
        .wait_row("web", Duration::from_secs(3), |r| r["health"] == "healthy")
        .await;
    assert_eq!(row["health_output"], "200 OK");
    let id = row["id"].as_str().unwrap().to_string();
    // It hangs: every probe fails from now on; two failures make it unhealthy.
    fake.sick.lock().unwrap().insert(id.clone());
    let row = h
        .wait_row("web", Duration::from_secs(10), |r| {
            r["state"] == "running" && r["id"] != id.as_str() && r["health"] == "healthy"
        })
        .await;
    assert_eq!(row["restarts"], 1, "{row}");
    let calls = fake.calls();
    assert!(calls.contains(&format!("kill {id}")), "{calls:?}");
    assert!(
        !calls.contains(&format!("signal {id} 15")),
        "a hung container is killed, not asked: {calls:?}"
    );
    assert_eq!(fake.count(&format!("cleanup {id}")), 1);
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn on_unhealthy_stop_leaves_it_stopped_and_none_only_reports() {
    let (fake, dir) = Harness::fixture();
    write_spec(
        &dir,
        "halt",
        &body("oci:/img:v1", &format!("{PROBED}\non_unhealthy = \"stop\"")),
    );
    write_spec(
        &dir,
        "watch",
        &body("oci:/img:v1", &format!("{PROBED}\non_unhealthy = \"none\"")),
    );
    let h = Harness::start(fake.clone(), dir);
    for name in ["halt", "watch"] {
        let row = h
            .wait_row(name, Duration::from_secs(3), |r| r["health"] == "healthy")
            .await;
        fake.sick
            .lock()
            .unwrap()
            .insert(row["id"].as_str().unwrap().to_string());
    }
    let row = h
        .wait_row("halt", Duration::from_secs(10), |r| r["state"] == "exited")
        .await;
    let row2 = h
        .wait_row("watch", Duration::from_secs(10), |r| {
            r["health"] == "unhealthy"
        })
        .await;
    assert_eq!(row2["state"], "running", "none only reports: {row2}");
    assert_eq!(row2["health_output"], "connection refused");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let ps = h.ps().await;
    assert_eq!(ps["halt"]["state"], "exited", "{row}");
    assert!(
        ps["halt"]["note"].as_str().unwrap().contains("unhealthy"),
        "{}",
        ps["halt"]
    );
    assert_eq!(fake.count("start halt"), 1, "not restarted");
    assert_eq!(ps["watch"]["state"], "running");
    assert_eq!(fake.count("start watch"), 1);
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_chain_starts_in_order_and_stops_in_reverse() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "db", &body("oci:/img:v1", PROBED));
    write_spec(
        &dir,
        "app",
        &body("oci:/img:v1", "depends_on = { db = \"healthy\" }"),
    );
    write_spec(&dir, "web", &body("oci:/img:v1", "depends_on = [\"app\"]"));
    let h = Harness::start(fake.clone(), dir);
    let row = h
        .wait_row("web", Duration::from_secs(1), |r| r["state"] == "waiting")
        .await;
    assert!(row["note"].as_str().unwrap().contains("app"), "{row}");
    h.wait_state("web", "running", Duration::from_secs(5)).await;
    let starts = fake.matching("start ");
    assert_eq!(
        starts,
        [
            "start db oci:/img:v1",
            "start app oci:/img:v1",
            "start web oci:/img:v1"
        ]
    );
    // db's first probe (after 1 s) came before app's start.
    let calls = fake.calls();
    let probe = calls
        .iter()
        .position(|c| c.starts_with("probe db"))
        .unwrap();
    let app = calls
        .iter()
        .position(|c| c.starts_with("start app"))
        .unwrap();
    assert!(probe < app, "{calls:?}");
    h.shutdown().await;
    let cleanups: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("cleanup "))
        .map(|c| c.split(['-', ' ']).nth(1).unwrap().to_string())
        .collect();
    assert_eq!(cleanups, ["web", "app", "db"]);
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn status_files_follow_each_container() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "web", &body("oci:/img:v1", PROBED));
    let status = dir.path().join("status/web.json");
    let spec_file = dir.path().join("specs/web.toml");
    let h = Harness::start(fake.clone(), dir);
    h.wait_row("web", Duration::from_secs(3), |r| r["health"] == "healthy")
        .await;
    let v = status_file_when(&status, |v| v["health"] == "healthy");
    assert_eq!(v["phase"], "running");
    assert_eq!(v["health"], "healthy");
    assert_eq!(v["image"], "oci:/img:v1");
    assert!(
        v["image_digest"].as_str().unwrap().starts_with("sha256:"),
        "{v}"
    );
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&spec_file).unwrap()));
    assert_eq!(v["spec_sha256"], sha);
    assert!(v["updated_at"].is_string());
    // An update that fails is in the file too.
    h.write("web", &body(BAD_PULL, PROBED));
    h.wait_row("web", Duration::from_secs(2), |r| {
        r["note"]
            .as_str()
            .is_some_and(|n| n.contains("update failed"))
    })
    .await;
    let v = status_file_when(&status, |v| v["last_error"].is_string());
    assert!(
        v["last_error"].as_str().unwrap().contains("update failed"),
        "{v}"
    );
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&spec_file).unwrap()));
    assert_eq!(v["spec_sha256"], sha, "the hash of the file as it is now");
    h.delete("web");
    h.wait_state("web", "absent", Duration::from_secs(12)).await;
    // The writer is done with everything once the loop ended.
    h.shutdown().await;
    assert!(!status.exists(), "removed with the container");
}

#[tokio::test(start_paused = true)]
async fn a_new_version_that_exits_is_rolled_back_and_not_tried_again() {
    let (fake, dir) = Harness::fixture();
    let upd = "[update]\nhealthy_for = \"5s\"";
    write_spec(&dir, "web", &body("oci:/img:v1", upd));
    let status = dir.path().join("status/web.json");
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    h.write("web", &body(EXITS, upd));
    let row = h
        .wait_row("web", Duration::from_secs(5), |r| {
            r["state"] == "running"
                && r["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("rolled back"))
        })
        .await;
    assert_eq!(row["image"], "oci:/img:v1", "{row}");
    assert!(row["note"].as_str().unwrap().contains("exited"), "{row}");
    let file = status_file_when(&status, |v| v["last_rollback"].is_string());
    assert!(
        file["last_rollback"].as_str().unwrap().contains("exited"),
        "{file}"
    );
    // The failed version is not tried again while the file stays as it is.
    let _ = h.tx.send(Event::Hint);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.count(&format!("start web {EXITS}")), 1);
    assert_eq!(h.state("web").await, "running");
    let starts = fake.matching("start web");
    assert_eq!(
        starts,
        [
            "start web oci:/img:v1".to_string(),
            format!("start web {EXITS}"),
            "start web oci:/img:v1".to_string()
        ]
    );
    // The restored instance is watched like any other: its exit is seen and restarted.
    let restored = h.ps().await["web"]["id"].clone();
    fake.exit(restored.as_str().unwrap());
    h.wait_row("web", Duration::from_secs(5), |r| {
        r["state"] == "running" && r["id"] != restored
    })
    .await;
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_new_version_that_runs_its_healthy_for_is_kept() {
    let (fake, dir) = Harness::fixture();
    let upd = "[update]\nhealthy_for = \"5s\"";
    write_spec(&dir, "web", &body("oci:/img:v1", upd));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    h.write("web", &body("oci:/img:v2", upd));
    let row = h
        .wait_row("web", Duration::from_secs(2), |r| {
            r["image"] == "oci:/img:v2" && r["state"] == "running"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Kept: a crash now is an ordinary crash, restarted as v2, not rolled back.
    fake.exit(row["id"].as_str().unwrap());
    h.wait_row("web", Duration::from_secs(5), |r| {
        r["state"] == "running" && r["id"] != row["id"]
    })
    .await;
    assert_eq!(fake.count("start web oci:/img:v2"), 2);
    assert_eq!(fake.count("start web oci:/img:v1"), 1);
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn events_stream_every_change() {
    let (fake, dir) = Harness::fixture();
    let h = Harness::start(fake.clone(), dir);
    h.ps().await; // the loop is up
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    h.tx.send(Event::Subscribe { events }).unwrap();
    h.write("web", &body("oci:/img:v1", ""));
    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("running") {
        let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["name"], "web");
        phases.push(v["phase"].as_str().unwrap().to_string());
    }
    assert_eq!(phases, ["starting", "running"]);
    h.delete("web");
    let mut last = String::new();
    while last != "removed" {
        let line = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("an event")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        last = v["phase"].as_str().unwrap().to_string();
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_moved_tag_is_an_update_and_a_bad_digest_is_rolled_back_once() {
    let (fake, dir) = Harness::fixture();
    const TAG: &str = "registry.test/app:1";
    let upd = "[update]\ncheck = \"10s\"\nhealthy_for = \"5s\"";
    fake.tags.lock().unwrap().insert(TAG.into(), 1);
    write_spec(&dir, "web", &body(TAG, upd));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;

    // Checks that find what runs change nothing.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert!(
        fake.count(&format!("check {TAG}")) >= 3,
        "{:?}",
        fake.calls()
    );
    assert_eq!(fake.count("start web"), 1);

    // The tag moves: the next check starts the new digest, pinned.
    fake.tags.lock().unwrap().insert(TAG.into(), 2);
    let pinned = format!("{TAG}@{}", digest(2));
    let row = h
        .wait_row("web", Duration::from_secs(11), |r| {
            r["image"] == pinned.as_str() && r["state"] == "running"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        h.ps().await["web"]["id"],
        row["id"],
        "kept after its healthy_for"
    );

    // The tag moves to an image that exits: rolled back to the last good digest, and that bad
    // digest is not tried again however often the checks find it.
    fake.tags.lock().unwrap().insert(TAG.into(), EXITING_DIGEST);
    let bad = format!("start web {TAG}@{}", digest(EXITING_DIGEST));
    h.wait_row("web", Duration::from_secs(15), |r| {
        r["state"] == "running"
            && r["note"]
                .as_str()
                .is_some_and(|n| n.contains("rolled back"))
    })
    .await;
    assert_eq!(h.ps().await["web"]["image"], pinned.as_str());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.count(&bad), 1, "{:?}", fake.matching("start web"));
    assert_eq!(h.state("web").await, "running");

    // An edit of the file that names another tag drops the pin.
    fake.tags
        .lock()
        .unwrap()
        .insert("registry.test/app:2".into(), 3);
    h.write("web", &body("registry.test/app:2", upd));
    h.wait_row("web", Duration::from_secs(5), |r| {
        r["image"] == "registry.test/app:2" && r["state"] == "running"
    })
    .await;
    h.shutdown().await;
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_container_keeps_the_digest_a_check_found() {
    let (fake, dir) = Harness::fixture();
    const TAG: &str = "registry.test/app:1";
    let upd = "[update]\ncheck = \"10s\"";
    let spec_text = body(TAG, upd);
    write_spec(&dir, "web", &spec_text);
    let pinned = format!("{TAG}@{}", digest(7));
    // A previous daemon left it running from the digest its check had found.
    let file = dir.path().join("specs/web.toml");
    let mut spec = crate::spec::load_file(&file, &ValidationContext::default()).unwrap();
    spec.image = pinned.clone();
    let inst = Instance {
        id: "web-old".into(),
        init_pid: 50,
        init_start: 1,
        monitor_pid: 50,
        monitor_start: 1,
        started_at: SystemTime::now(),
        image_digest: Some(digest(7)),
    };
    let state = StateDir::open(&dir.path().join("root")).unwrap();
    state
        .save(&ContainerRecord {
            name: "web".into(),
            spec,
            instance: Some(inst),
            restarts: 0,
            manual_stop: false,
            last_exit: None,
        })
        .unwrap();
    fake.alive.lock().unwrap().insert("web-old".into());
    fake.track("web-old", false);
    fake.tags.lock().unwrap().insert(TAG.into(), 7);
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let row = &h.ps().await["web"];
    assert_eq!(
        row["id"], "web-old",
        "not replaced by the tag's older image: {row}"
    );
    assert_eq!(row["image"], pinned.as_str());
    assert_eq!(fake.count("start web"), 0, "{:?}", fake.calls());
    assert!(fake.count("check ") >= 2);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_and_stats_show_each_container() {
    let (fake, dir) = Harness::fixture();
    let restart = "[restart]\npolicy = \"always\"\nbackoff = { initial = \"1s\" }";
    write_spec(&dir, "web", &body("oci:/img:v1", restart));
    write_spec(&dir, "job", &body(EXITS, "[restart]\npolicy = \"never\""));
    let h = Harness::start(fake.clone(), dir);
    let row = h
        .wait_row("web", Duration::from_secs(1), |r| r["state"] == "running")
        .await;
    h.wait_state("job", "exited", Duration::from_secs(1)).await;
    fake.exit(row["id"].as_str().unwrap());
    h.wait_row("web", Duration::from_secs(5), |r| {
        r["state"] == "running" && r["id"] != row["id"]
    })
    .await;
    let text = match h.ask(Request::Metrics).await.into_value() {
        Ok(serde_json::Value::String(t)) => t,
        other => panic!("metrics: {other:?}"),
    };
    for line in [
        "berth_container_state{name=\"web\",state=\"running\"} 1",
        "berth_container_state{name=\"job\",state=\"exited\"} 1",
        "berth_container_state{name=\"job\",state=\"running\"} 0",
        "berth_container_restarts_total{name=\"web\"} 1",
        "berth_container_restarts_total{name=\"job\"} 0",
        "berth_container_last_exit_code{name=\"web\"} 0",
        "berth_container_memory_bytes{name=\"web\"} 4096",
        "berth_image_pulls_total{result=\"ok\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    // Only the running one has usage.
    assert!(!text.contains("memory_bytes{name=\"job\"}"), "{text}");
    let reconciles: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("berth_reconciles_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(reconciles >= 4.0, "{text}");
    // berth stats: one more CPU second over its 200 ms window is 500%.
    let rows = match h.ask(Request::Stats).await.into_value() {
        Ok(serde_json::Value::Array(rows)) => rows,
        other => panic!("stats: {other:?}"),
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "web");
    assert_eq!(rows[0]["cpu_percent"], 500.0);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_power_request_stops_everything_and_is_returned() {
    let (fake, dir) = Harness::fixture();
    write_spec(&dir, "db", &body("oci:/img:v1", IGNORES_TERM));
    write_spec(&dir, "web", &body("oci:/img:v1", "depends_on = [\"db\"]"));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    let action = crate::init::Power::Reboot;
    match h.ask(Request::Power { action }).await.into_value() {
        Ok(v) => assert!(v.as_str().unwrap().contains("reboot"), "{v}"),
        other => panic!("{other:?}"),
    }
    // A later signal does not change what was asked first.
    h.tx.send(Event::Shutdown {
        power: Some(crate::init::Power::Poweroff),
    })
    .unwrap();
    assert_eq!(h.task.await.unwrap(), Some(action));
    // web (the dependent) was signalled before db, and db was killed after its timeout.
    let signals = fake.matching("signal ");
    assert!(signals[0].starts_with("signal web-"), "{signals:?}");
    assert_eq!(fake.count("kill db-"), 1);
    every_start_was_cleaned_up(&fake);
}

#[tokio::test(start_paused = true)]
async fn an_address_no_record_or_file_claims_is_released_at_start() {
    let (fake, dir) = Harness::fixture();
    let ip = std::net::Ipv4Addr::new(10, 89, 0, 7);
    *fake.leases.lock().unwrap() =
        vec![("gone".into(), ip), ("kept".into(), ip), ("web".into(), ip)];
    // "kept" has a record (stopped by hand), "web" a file; "gone" neither: its start crashed
    // before its record and its file was removed since.
    write_spec(&dir, "kept", &body("oci:/img:v1", ""));
    let file = dir.path().join("specs/kept.toml");
    let spec = crate::spec::load_file(&file, &ValidationContext::default()).unwrap();
    std::fs::remove_file(&file).unwrap();
    StateDir::open(&dir.path().join("root"))
        .unwrap()
        .save(&ContainerRecord {
            name: "kept".into(),
            spec,
            instance: None,
            restarts: 0,
            manual_stop: true,
            last_exit: None,
        })
        .unwrap();
    write_spec(&dir, "web", &body("oci:/img:v1", ""));
    let h = Harness::start(fake.clone(), dir);
    h.wait_state("web", "running", Duration::from_secs(1)).await;
    assert_eq!(fake.matching("release "), ["release gone"]);
    h.shutdown().await;
}
