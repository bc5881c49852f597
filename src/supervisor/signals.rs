//! Signals: SIGTERM and SIGINT shut the daemon down, SIGHUP asks for a relist, and SIGCHLD
//! reaps every child nobody else waits for (monitors, and orphans when PID 1).

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::engine::Event;

pub fn spawn_signal_handlers(tx: mpsc::UnboundedSender<Event>) {
    for (kind, shutdown) in [
        (SignalKind::terminate(), true),
        (SignalKind::interrupt(), true),
        (SignalKind::hangup(), false),
    ] {
        let tx = tx.clone();
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    let _ = tx.send(if shutdown {
                        Event::Shutdown
                    } else {
                        Event::Hint
                    });
                }
            });
        }
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
