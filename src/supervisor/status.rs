//! What `ps` and `inspect` show of each container, read from the decision loop's records, and
//! the same as a file per container for the tools that drop the spec files
//! (`<status_dir>/<name>.json`, rewritten atomically when it changes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, RwLock};

use super::control::{ContainerStatus, Response};
use super::engine::Engine;
use super::persist::Write;
use crate::reconcile::Phase;
use crate::runtime::protocol::ExitStatus;

pub fn describe(status: ExitStatus, oom_killed: bool) -> String {
    let oom = if oom_killed { " (OOM killed)" } else { "" };
    match status {
        ExitStatus::Code(c) => format!("exit code {c}{oom}"),
        ExitStatus::Signal(s) => format!("signal {s}{oom}"),
    }
}

/// The names of every container the daemon knows or the spec dir names, sorted.
fn ps_names(e: &Engine) -> BTreeSet<&String> {
    e.records
        .keys()
        .chain(e.snapshot.desired.keys())
        .chain(e.snapshot.errors.keys())
        .collect()
}

/// Whether the daemon knows `name` or the spec dir names it.
fn is_known(e: &Engine, name: &str) -> bool {
    e.records.contains_key(name)
        || e.snapshot.desired.contains_key(name)
        || e.snapshot.errors.contains_key(name)
}

pub fn status_of(
    e: &Engine,
    name: &str,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> ContainerStatus {
    let r = e.records.get(name);
    let spec = e.spec_of(name);
    let state = match r {
        None => "pending",
        Some(r) => match (r.job, &r.obs.phase) {
            (Some("stopping" | "removing" | "killing"), _) => "stopping",
            (Some("updating" | "rolling back"), _) => "updating",
            (Some(_), Phase::Running { .. }) => "running",
            (Some(_), _) => "starting",
            (None, Phase::Running { .. }) => "running",
            (None, _) if r.waiting.is_some() => "waiting",
            (None, Phase::Exiting { .. }) => "exited",
            (None, Phase::Exited { .. }) if r.obs.restart_at.is_some() => "restarting",
            (None, Phase::Exited { .. }) => "exited",
            (None, Phase::StartFailed { .. }) => "failed",
            (None, Phase::Stopped) => "stopped",
        },
    };
    let phase = r.map(|r| &r.obs.phase);
    let health = r.and_then(|r| r.health.as_ref());
    ContainerStatus {
        health: health.map(|h| h.status.as_str().to_string()),
        health_output: health
            .map(|h| h.last_output.clone())
            .filter(|o| !o.is_empty()),
        name: name.to_string(),
        state: state.to_string(),
        pid: match phase {
            Some(Phase::Running { pid, .. }) => Some(*pid),
            _ => None,
        },
        id: r.and_then(|r| r.instance.as_ref()).map(|i| i.id.clone()),
        image: spec.as_ref().map(|s| s.image.clone()).unwrap_or_default(),
        restarts: r.map(|r| r.obs.restarts).unwrap_or(0),
        last_exit: match phase {
            Some(Phase::Exited {
                status, oom_killed, ..
            }) => Some(describe(*status, *oom_killed)),
            _ => None,
        },
        note: r.and_then(|r| r.waiting.clone().or_else(|| r.note.clone())),
        spec_error: e.snapshot.errors.get(name).cloned(),
        ip: match phase {
            Some(Phase::Running { .. }) => addresses.get(name).copied(),
            _ => None,
        },
        ports: spec
            .map(|s| {
                s.network
                    .ports
                    .iter()
                    .map(|p| match p.host_ip {
                        Some(ip) => format!(
                            "{ip}:{}:{}/{}",
                            p.host_port,
                            p.container_port,
                            p.protocol.as_str()
                        ),
                        None => format!(
                            "{}:{}/{}",
                            p.host_port,
                            p.container_port,
                            p.protocol.as_str()
                        ),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Every container's `ps` row as of the loop's last pass, shared with the control socket: a
/// `ps` is answered from here without waiting for the loop, which may be busy with thousands
/// of spec files. Rows carry no bridge address (read from the leases when asked).
#[derive(Clone, Default)]
pub struct Board(Arc<RwLock<BTreeMap<String, BoardRow>>>);

#[derive(Clone)]
struct BoardRow {
    row: ContainerStatus,
    bridged: bool,
}

impl Board {
    /// Takes in the rows the last pass changed and drops the containers gone.
    fn update(&self, rows: &[(ContainerStatus, bool)], gone: &[String]) {
        let mut board = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (row, bridged) in rows {
            board.insert(
                row.name.clone(),
                BoardRow {
                    row: row.clone(),
                    bridged: *bridged,
                },
            );
        }
        for name in gone {
            board.remove(name);
        }
    }

    /// Whether some running container is in bridge mode (so that `ps` needs the leases).
    pub fn any_bridged(&self) -> bool {
        let board = self.0.read().unwrap_or_else(|e| e.into_inner());
        board.values().any(|r| r.bridged && r.row.pid.is_some())
    }

    /// Every row, sorted by name (without bridge addresses).
    pub fn rows(&self) -> Vec<ContainerStatus> {
        let board = self.0.read().unwrap_or_else(|e| e.into_inner());
        board.values().map(|r| r.row.clone()).collect()
    }

    /// The `ps` answer, sorted by name, encoded at once.
    pub fn ps(&self, addresses: &BTreeMap<String, Ipv4Addr>) -> Response {
        let board = self.0.read().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<std::borrow::Cow<'_, ContainerStatus>> = board
            .values()
            .map(|r| match addresses.get(&r.row.name) {
                Some(ip) if r.row.pid.is_some() => {
                    let mut row = r.row.clone();
                    row.ip = Some(*ip);
                    std::borrow::Cow::Owned(row)
                }
                _ => std::borrow::Cow::Borrowed(&r.row),
            })
            .collect();
        Response::ok(rows)
    }
}

/// Recomputes the rows of `dirty` (every container when `None`) into `board` and returns
/// them; names no longer known leave the board.
pub fn refresh_board(
    e: &Engine,
    board: &Board,
    dirty: Option<&BTreeSet<String>>,
) -> Vec<ContainerStatus> {
    let known = |n: &String| is_known(e, n);
    let (names, gone): (Vec<String>, Vec<String>) = match dirty {
        None => {
            let names: Vec<String> = ps_names(e).into_iter().cloned().collect();
            let held = board.0.read().unwrap_or_else(|e| e.into_inner());
            let gone = held.keys().filter(|n| !known(n)).cloned().collect();
            (names, gone)
        }
        Some(d) => d.iter().cloned().partition(known),
    };
    let addresses = BTreeMap::new();
    let rows: Vec<(ContainerStatus, bool)> = names
        .iter()
        .map(|n| {
            let bridged = e
                .spec_of(n)
                .is_some_and(|s| s.network.mode == crate::spec::NetworkMode::Bridge);
            (status_of(e, n, &addresses), bridged)
        })
        .collect();
    board.update(&rows, &gone);
    rows.into_iter().map(|(row, _)| row).collect()
}

/// `<dir>/<name>.json` for every container the daemon knows or the spec dir names.
pub struct StatusFiles {
    dir: PathBuf,
    /// What was written last, by name.
    written: BTreeMap<String, serde_json::Value>,
}

impl StatusFiles {
    /// The status dir (created 0755; files from an earlier daemon are rewritten or removed).
    pub fn open(dir: &Path) -> std::io::Result<StatusFiles> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        let mut written = BTreeMap::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                written.insert(stem.to_string(), serde_json::Value::Null);
            }
        }
        Ok(StatusFiles {
            dir: dir.to_path_buf(),
            written,
        })
    }

    /// Rewrites the files of `rows` (the containers in `dirty`, or all when `None`, that are
    /// known) whose content changed and removes those of containers gone; returns each change
    /// (the new content, or `{"name", "phase": "removed"}`). The writes go to the engine's
    /// writer thread.
    pub fn publish(
        &mut self,
        e: &Engine,
        rows: Vec<ContainerStatus>,
        dirty: Option<&BTreeSet<String>>,
    ) -> Vec<serde_json::Value> {
        let mut changes = Vec::new();
        let known = |n: &String| is_known(e, n);
        for row in rows {
            let name = row.name.clone();
            let r = e.records.get(&name);
            let spec = e.spec_of(&name);
            let v = serde_json::json!({
                "name": row.name,
                "phase": row.state,
                "health": row.health,
                "health_output": row.health_output,
                "image": row.image,
                "image_digest": r.and_then(|r| r.instance.as_ref()).and_then(|i| i.image_digest.clone()),
                "pid": row.pid,
                "restarts": row.restarts,
                "last_exit": row.last_exit,
                "last_error": row.note,
                "spec_error": row.spec_error,
                "file": spec.as_ref().map(|s| s.file.clone()),
                "last_rollback": r.and_then(|r| r.last_rollback.clone()),
            });
            if self.written.get(&name) == Some(&v) {
                continue;
            }
            let hash = spec.as_ref().and_then(|s| file_sha256(&s.file));
            let mut with_time = v.clone();
            with_time["spec_sha256"] = hash.into();
            with_time["updated_at"] =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string()
                    .into();
            let path = self.dir.join(format!("{name}.json"));
            let data = serde_json::to_vec_pretty(&with_time).unwrap_or_default();
            changes.push(with_time);
            e.writer().send(Write::File { path, data });
            self.written.insert(name, v);
        }
        let gone: Vec<String> = match dirty {
            None => self.written.keys().filter(|n| !known(n)).cloned().collect(),
            Some(d) => d
                .iter()
                .filter(|n| self.written.contains_key(*n) && !known(n))
                .cloned()
                .collect(),
        };
        for name in gone {
            e.writer()
                .send(Write::RemoveFile(self.dir.join(format!("{name}.json"))));
            self.written.remove(&name);
            changes.push(serde_json::json!({ "name": name, "phase": "removed" }));
        }
        changes
    }
}

fn file_sha256(path: &Path) -> Option<String> {
    use sha2::Digest;
    let data = std::fs::read(path).ok()?;
    Some(hex::encode(sha2::Sha256::digest(&data)))
}
