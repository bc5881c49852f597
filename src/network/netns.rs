//! Network namespaces: creating one pinned at a path (a bind mount of the nsfs file), removing
//! it again, and running a closure on a short-lived thread that has joined a given namespace.
//!
//! Only the calling thread's network namespace is ever changed, and only on threads started
//! here, so the caller's own threads (and the host's netns) are never switched. Owns nothing
//! else: links and rules inside the namespaces belong to `netlink` and `nft`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::error::NetworkError;

/// Runs `f` on a new thread that first joins the network namespace at `netns` (when given;
/// otherwise `f` runs on the calling thread). Processes spawned by `f` start in that
/// namespace, and netlink sockets opened by `f` stay bound to it after the thread ends.
pub(crate) fn run_in<R, F>(netns: Option<&Path>, f: F) -> Result<R, NetworkError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    // The caller's own namespace needs no thread.
    let Some(netns) = netns else {
        return Ok(f());
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let path = netns;
            let file = File::open(path).map_err(|source| NetworkError::Netns {
                step: "opening",
                path: path.to_path_buf(),
                source,
            })?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Netns {
                step: "joining (setns)",
                path: path.to_path_buf(),
                source: io::Error::from(e),
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Creates a new, empty network namespace, pins it at `path` (which must not exist yet) and
/// runs `f` inside it, on the thread that made it (a netlink socket `f` opens stays bound to
/// the namespace): one thread for both, not one to create and another to join.
pub(crate) fn create_pinned<R, F>(path: &Path, f: F) -> Result<R, NetworkError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let err = |step: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| NetworkError::Netns { step, path, source }
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err("creating the parent directory"))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err("creating the pin file"))?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<R> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    result.map_err(|e| {
        let _ = fs::remove_file(path);
        err("creating and bind-mounting")(e)
    })
}

/// Unmounts and removes a pinned namespace. A path that is already gone, or a file that is no
/// longer mounted, is not an error.
pub(crate) fn remove_pinned(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::Netns {
                step: "unmounting",
                path: path.to_path_buf(),
                source: io::Error::from(e),
            })
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::Netns {
            step: "removing the pin file",
            path: path.to_path_buf(),
            source,
        }),
    }
}
