//! The decision loop's writes to disk: state records (fsynced) and status files, carried out
//! by one thread of their own in the order the loop asked, so that a slow disk never stalls
//! the loop (and `berth ps`, and the watchdog with it). Writes queued for the same file are
//! collapsed into the last one. [`Writer::finish`] waits until all of it is on disk.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;

use crate::state::{ContainerRecord, Durability, StateDir};

pub enum Write {
    Record(Box<ContainerRecord>),
    RemoveRecord(String),
    /// A status file's new content (written atomically).
    File {
        path: PathBuf,
        data: Vec<u8>,
    },
    RemoveFile(PathBuf),
}

impl Write {
    /// What the write is to, so that an earlier one to the same target can be skipped.
    fn target(&self) -> (bool, String) {
        match self {
            Write::Record(r) => (true, r.name.clone()),
            Write::RemoveRecord(n) => (true, n.clone()),
            Write::File { path, .. } | Write::RemoveFile(path) => {
                (false, path.display().to_string())
            }
        }
    }
}

pub struct Writer {
    state: StateDir,
    tx: Option<mpsc::Sender<Write>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn spawn(state: StateDir) -> Writer {
        let (tx, rx) = mpsc::channel::<Write>();
        let dir = state.clone();
        let thread = std::thread::Builder::new()
            .name("berth-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    write_batch(&dir, batch);
                }
            })
            .ok();
        Writer {
            state,
            tx: Some(tx),
            thread,
        }
    }

    pub fn send(&self, w: Write) {
        match (&self.tx, &self.thread) {
            (Some(tx), Some(_)) => {
                // The thread lives as long as the sender.
                let _ = tx.send(w);
            }
            // No writer thread could be made: write here.
            _ => write_batch(&self.state, vec![w]),
        }
    }

    /// Waits until every write sent is done.
    pub fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Carries out a batch in order, each target's last write only.
fn write_batch(state: &StateDir, batch: Vec<Write>) {
    let mut seen = HashSet::new();
    let last: Vec<Write> = batch
        .into_iter()
        .rev()
        .filter(|w| seen.insert(w.target()))
        .collect();
    for w in last.into_iter().rev() {
        match w {
            Write::Record(rec) => {
                if let Err(e) = state.save(&rec) {
                    tracing::error!(name = %rec.name, "{e}");
                }
            }
            Write::RemoveRecord(name) => {
                if let Err(e) = state.remove(&name) {
                    tracing::error!(%name, "{e}");
                }
            }
            Write::File { path, data } => {
                if let Err(e) = crate::state::write_atomic(&path, &data, Durability::Process) {
                    tracing::warn!("status file {}: {e}", path.display());
                }
            }
            Write::RemoveFile(path) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
