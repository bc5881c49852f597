//! fd-relative file operations confined to a root directory: `openat2` with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, and the xattr calls nix does not wrap.
//! Owns no state; callers hold the fds. Used by layer extraction (`image::extract`), where
//! every path comes from an untrusted archive and must never be resolved as a host path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Opens a trusted host directory (e.g. a fresh layer dir) to serve as a root for [`open_in_root`].
/// The final component must not be a symlink.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens `rel` below `root` with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: absolute
/// symlinks and `..` are resolved as if `root` were `/`, so the result is always inside `root`.
/// `O_CLOEXEC` is always added. An empty `rel` opens `root` itself (as `.`).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: u32,
) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how).map_err(io::Error::from)
}

/// Opens the directory `rel` below `root` (symlinks followed, but only inside `root`).
pub fn open_dir_in_root(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_in_root(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
}

/// Opens the single entry `name` in `dir` without following a symlink there.
/// `name` must not contain `/`.
pub fn open_child(dir: BorrowedFd<'_>, name: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    check_single_component(name)?;
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn check_single_component(name: &Path) -> io::Result<()> {
    let b = name.as_os_str().as_bytes();
    if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a single path component: {name:?}"),
        ));
    }
    Ok(())
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// Renames `from` to `to` unless `to` exists (`renameat2(2)` with RENAME_NOREPLACE; EEXIST, or
/// ENOTEMPTY for a directory, when it does). Through syscall(2): not every C library wraps it.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (
        cstring(from.as_os_str().as_bytes())?,
        cstring(to.as_os_str().as_bytes())?,
    );
    // SAFETY: both paths are NUL-terminated strings that outlive the call; the kernel only
    // reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fsetxattr(2)` on an open file or directory.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cstring(name)?;
    // SAFETY: `fd` is a live descriptor borrowed for the call; `cname` is a NUL-terminated string
    // and `value` a valid buffer of `value.len()` bytes, both outliving the call. The kernel only
    // reads from them.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fgetxattr(2)`; `Ok(None)` when the attribute is absent.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = cstring(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `fd` is live for the call, `cname` is NUL-terminated, and `buf` is a writable
    // buffer of `buf.len()` bytes; the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(None);
        }
        return Err(e);
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// Path of entry `name` in `dir` through the `/proc/self/fd` link of `dir`. The directory link is
/// the only thing followed; `name` is a single component, so the `l*xattr` calls act on the entry
/// itself even when it is a symlink.
fn proc_fd_child(dir: BorrowedFd<'_>, name: &Path) -> io::Result<CString> {
    check_single_component(name)?;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_os_str().as_bytes());
    cstring(&p)
}

/// `lsetxattr(2)` on the entry `name` of `dir`, never following a symlink at `name`.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &Path, key: &[u8], value: &[u8]) -> io::Result<()> {
    let path = proc_fd_child(dir, name)?;
    let ckey = cstring(key)?;
    // SAFETY: `path` and `ckey` are NUL-terminated strings and `value` a valid buffer of
    // `value.len()` bytes, all alive for the duration of the call; the kernel only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            ckey.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr(2)` on the entry `name` of `dir`; `Ok(None)` when absent.
pub fn lgetxattr_at(dir: BorrowedFd<'_>, name: &Path, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let path = proc_fd_child(dir, name)?;
    let ckey = cstring(key)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `path` and `ckey` are NUL-terminated and alive for the call; `buf` is a writable
    // buffer of `buf.len()` bytes and the kernel writes at most that many.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            ckey.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(None);
        }
        return Err(e);
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// Removes the entry `name` of `dir`, recursively when it is a directory, without following any
/// symlink (each level is opened with `O_NOFOLLOW` relative to its parent's fd).
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    check_single_component(name)?;
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let child = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let names: Vec<std::ffi::OsString> = {
        let mut d = nix::dir::Dir::from_fd(child.try_clone()?)?;
        d.iter()
            .filter_map(|e| e.ok())
            .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in names {
        remove_all_at(child.as_fd(), Path::new(&n))?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_root_confines_absolute_symlinks() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("host")).unwrap();
        let fd = open_dir(root.path()).unwrap();
        // `/etc` inside the root does not exist, so following the link fails instead of escaping.
        let err =
            open_in_root(fd.as_fd(), Path::new("host/passwd"), OFlag::O_RDONLY, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let err = open_in_root(
            fd.as_fd(),
            Path::new("../../etc/passwd"),
            OFlag::O_RDONLY,
            0,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("keep"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("d/e")).unwrap();
        std::os::unix::fs::symlink(host.path(), root.path().join("d/e/link")).unwrap();
        let fd = open_dir(root.path()).unwrap();
        remove_all_at(fd.as_fd(), Path::new("d")).unwrap();
        assert!(!root.path().join("d").exists());
        assert!(host.path().join("keep").exists());
    }
}
