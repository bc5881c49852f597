//! The spec dir watcher: inotify events wake the decision loop for a relist (the relist, not
//! the event, is the truth; the loop also relists on a timer).

use std::path::Path;
use std::sync::Arc;

use ::notify as notify_crate;

/// Watches the spec dir; changes (not reads: relisting reads every file) wake `hint`, which
/// coalesces any number of them into one relist.
pub fn watch_specs(
    dir: &Path,
    hint: Arc<tokio::sync::Notify>,
) -> Option<notify_crate::RecommendedWatcher> {
    use notify_crate::Watcher;
    let result =
        notify_crate::recommended_watcher(move |ev: notify_crate::Result<notify_crate::Event>| {
            let is_change = match ev {
                Ok(ev) => match ev.kind {
                    notify_crate::EventKind::Access(notify_crate::event::AccessKind::Close(
                        notify_crate::event::AccessMode::Write,
                    )) => true,
                    notify_crate::EventKind::Access(_) => false,
                    _ => true,
                },
                Err(_) => true,
            };
            if is_change {
                hint.notify_one();
            }
        })
        .and_then(|mut w| {
            w.watch(dir, notify_crate::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
    match result {
        Ok(w) => Some(w),
        Err(e) => {
            // The periodic relist still sees every change, only later.
            tracing::warn!(dir = %dir.display(), "not watching for changes: {e}");
            None
        }
    }
}
