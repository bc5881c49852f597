//! Signals: SIGTERM and SIGINT shut the daemon down (as the machine's init also SIGUSR1 and
//! SIGUSR2, each with its power state, read as busybox init reads them), SIGHUP asks for a
//! relist, and SIGCHLD reaps every child nobody else waits for (monitors, and orphans when
//! PID 1).

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::engine::Event;
use crate::init::{self, Power};

pub fn spawn_signal_handlers(tx: mpsc::UnboundedSender<Event>, shutdown: Power) {
    let mut kinds = vec![SignalKind::terminate(), SignalKind::interrupt()];
    // Outside an init these keep their default (they end a process, as for any daemon).
    if init::is_machine_init() {
        kinds.extend([SignalKind::user_defined1(), SignalKind::user_defined2()]);
    }
    for kind in kinds {
        let tx = tx.clone();
        if let Ok(mut s) = signal(kind) {
            let power = init::power_of(kind.as_raw_value(), shutdown);
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    let _ = tx.send(Event::Shutdown { power: Some(power) });
                }
            });
        }
    }
    if let Ok(mut s) = signal(SignalKind::hangup()) {
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                let _ = tx.send(Event::Hint);
            }
        });
    }
    // Reap every child that is not waited for elsewhere: monitors we started, and as PID 1
    // every orphan reparented to us.
    if let Ok(mut s) = signal(SignalKind::child()) {
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                crate::sys::children::reap_others();
            }
        });
    }
}
