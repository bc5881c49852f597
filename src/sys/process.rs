//! Process-level system calls: fork, closing inherited fds, and the sealed copy of our own
//! executable that containers can never overwrite.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::ForkResult;

/// Forks the calling process.
///
/// Callers must be single-threaded (the hidden helper mode started from our own binary), so
/// the child may run arbitrary Rust code: no other thread can hold a lock the child needs.
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: only called from the single-threaded helper process (see `runtime::monitor`),
    // where no other thread exists that could hold a lock or leave state half-written.
    unsafe { nix::unistd::fork() }
}

/// Makes every fd from `first` upwards close at exec (close_range(2) with
/// CLOSE_RANGE_CLOEXEC): nothing leaks into the program exec'd next, yet a step that fails
/// before that exec can still report on its pipe. Kernels before 5.11 lack the flag: there
/// the fds are closed at once.
pub fn close_fds_at_exec(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers and only changes flags in this process's fd
    // table (or, on the fallback, closes fds the callers own and use no more). Through
    // syscall(2): not every C library wraps it.
    let close_range = |flags: libc::c_uint| unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, flags)
    };
    if close_range(libc::CLOSE_RANGE_CLOEXEC) == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    if close_range(0) == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A copy of the running executable that containers can never overwrite (the
/// /proc/self/exe overwrite defence, CVE-2019-5736): helpers exec this, so a container that
/// reaches a helper's /proc/PID/exe finds a file it cannot open for writing.
///
/// First choice, as runc does: the binary seen through a detached read-only overlayfs mount
/// (its directory over `empty_dir`, an empty directory this creates if missing). Nothing is
/// copied, and the text pages stay shared with every other berth process. Where overlayfs or
/// the new mount API is missing, or the binary on disk is no longer the one running (replaced
/// by an upgrade), a sealed memfd copy instead.
pub fn sealed_self_exe(empty_dir: &Path) -> io::Result<OwnedFd> {
    match overlay_self_exe(empty_dir) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            tracing::debug!("overlayfs view of our binary unavailable ({e}); copying it");
            memfd_self_exe()
        }
    }
}

/// `p` as it goes into an overlayfs lowerdir list, which separates with ':' and escapes with
/// '\\': names that would need escaping are not used.
fn lowerdir_part(p: &Path) -> io::Result<&str> {
    p.to_str()
        .filter(|s| !s.contains([':', '\\']))
        .ok_or_else(|| io::Error::other(format!("{} would need escaping", p.display())))
}

fn overlay_self_exe(empty_dir: &Path) -> io::Result<OwnedFd> {
    let running = File::open("/proc/self/exe")?;
    let path = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other("no directory"));
    };
    let (dir_str, empty_str) = (lowerdir_part(dir)?, lowerdir_part(empty_dir)?);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(empty_dir)?;
    let mnt = detached_read_only_overlay(&format!("{dir_str}:{empty_str}"))?;
    let fd = nix::fcntl::openat(
        &mnt,
        name,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )?;
    // The file at that path must still be the running one: same size and modification time.
    let (a, b) = (
        nix::sys::stat::fstat(&fd)?,
        nix::sys::stat::fstat(&running)?,
    );
    let same = |s: &libc::stat| (s.st_size, s.st_mtime, s.st_mtime_nsec, s.st_mode);
    if same(&a) != same(&b) || a.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other(
            "the binary on disk is not the running one",
        ));
    }
    Ok(fd)
}

/// An overlayfs of `lowerdir` (no upper layer, so nothing can be written through it), mounted
/// read-only, nosuid and nodev, and attached nowhere: reachable only through the returned fd,
/// gone with the last fd or process that uses it.
fn detached_read_only_overlay(lowerdir: &str) -> io::Result<OwnedFd> {
    let fs = std::ffi::CString::new("overlay").expect("no NUL");
    let key = std::ffi::CString::new("lowerdir").expect("no NUL");
    let value = std::ffi::CString::new(lowerdir).map_err(io::Error::other)?;
    // SAFETY: fsopen reads the NUL-terminated name, which outlives the call, and returns a new
    // fd or -1.
    let ctx = unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), libc::FSOPEN_CLOEXEC) };
    if ctx < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as i32) };
    let config = |cmd: libc::c_uint, key: *const libc::c_char, value: *const libc::c_char| {
        // SAFETY: fsconfig reads the NUL-terminated key and value (or takes null for the
        // commands without them), which outlive the call; it only changes the fs context.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, ctx.as_raw_fd(), cmd, key, value, 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    config(libc::FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr())?;
    config(
        libc::FSCONFIG_CMD_CREATE,
        std::ptr::null(),
        std::ptr::null(),
    )?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: fsmount takes the context fd and plain flags and returns a new fd or -1.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    };
    if mnt < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as for fsopen.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

fn memfd_self_exe() -> io::Result<OwnedFd> {
    let fd = memfd_create("berth", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut exe = File::open("/proc/self/exe")?;
    let mut copy = File::from(fd);
    io::copy(&mut exe, &mut copy)?;
    let fd = OwnedFd::from(copy);
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )?;
    Ok(fd)
}

/// With `on`, SIGCHLD is ignored, so the kernel reaps this process's children as they exit
/// (no zombies; waiting for them fails); without, its default disposition comes back.
pub fn set_auto_reap(on: bool) -> io::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    let handler = if on {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL run no code of ours; no handler can observe Rust state.
    unsafe { signal(Signal::SIGCHLD, handler) }
        .map(drop)
        .map_err(io::Error::from)
}

/// The calling thread's CPU niceness.
pub fn niceness() -> io::Result<i32> {
    priority_of(0)
}

/// The niceness of this process's main thread (Linux answers getpriority(2) of the pid for
/// the thread whose id it is), whatever the calling thread's own.
pub fn main_thread_niceness() -> io::Result<i32> {
    priority_of(std::process::id())
}

/// getpriority(PRIO_PROCESS, who).
fn priority_of(who: u32) -> io::Result<i32> {
    // SAFETY: errno is thread-local; clearing it first tells getpriority's legitimate -1
    // from an error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority takes plain integers and only reads scheduler state.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(0) | None => Ok(n),
        _ => Err(err),
    }
}

/// Sets the calling thread's CPU niceness (setpriority(2)); lowering it needs CAP_SYS_NICE.
pub fn set_niceness(n: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and only changes this thread's scheduling.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's CPU priority lowered for as long as this lives. Only lowered where it
/// can be raised back (CAP_SYS_NICE), so a pooled thread never stays slow.
pub struct Lowered {
    base: Option<i32>,
}

impl Lowered {
    pub fn by(n: i32) -> Lowered {
        let can_raise = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_NICE,
        )
        .unwrap_or(false);
        let base = niceness()
            .ok()
            .filter(|_| can_raise)
            .filter(|&b| set_niceness((b + n).min(19)).is_ok());
        Lowered { base }
    }
}

impl Drop for Lowered {
    fn drop(&mut self) {
        if let Some(b) = self.base {
            if let Err(e) = set_niceness(b) {
                tracing::warn!("restoring a thread's CPU priority to {b}: {e}");
            }
        }
    }
}

/// Takes ownership of an fd number inherited from the launcher, or just received with
/// SCM_RIGHTS.
///
/// The caller must own `fd`: it was passed to this process (at exec, or installed by the
/// kernel for a received message) and nothing else in the process refers to it.
pub fn take_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: per the contract above, `fd` is an open fd owned by nobody else in this process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A pidfd for `pid` (pidfd_open(2)): readable once the process has exited, and immune to pid
/// reuse.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd registered with the tokio reactor: `readable().await` completes when `pid` exits.
pub fn async_pidfd(pid: i32) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    let fd = pidfd_open(pid)?;
    // SAFETY: `register` requires that the fd stays open and is not registered elsewhere while
    // the AsyncFd lives; the AsyncFd takes ownership of this freshly opened fd, so both hold.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into())
}

/// Arranges for `fd` to be at fd 3 (without close-on-exec) in the program `cmd` execs.
pub(crate) fn place_at_fd3(cmd: &mut std::process::Command, fd: &OwnedFd) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs between fork (or nothing, for exec) and execve and calls only
    // dup2 and fcntl, both async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                // dup2 onto itself keeps O_CLOEXEC: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// For a long-lived helper with nothing to do: gives back what it no longer needs, then waits
/// until one of `fds` is readable (or hung up). Given back are freed heap (malloc_trim) and
/// every resident page of its read-only file mappings (program text and constants of our
/// binary and the C library) that still equals the file, i.e. holds no private copy
/// (`Anonymous: 0 kB` in /proc/self/smaps; relocated read-only data does, and is kept). Those
/// pages stay in the page cache and the sealed copy; what the helper runs again faults back in
/// as a minor fault. Between the release and the wait runs nothing but [`madvise_then_poll`]:
/// any other code on the way would map its pages back, each fault a whole fault-around block
/// (64 KiB by default), and keep them resident for as long as the helper waits.
/// `EINTR` returns early; the caller polls again either way.
pub fn release_pages_and_wait(fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let clean: Vec<(usize, usize)> = clean_file_mappings(&smaps)
        .into_iter()
        .map(|m| (m.start, m.len))
        .collect();
    drop(smaps);
    // After the smaps text is freed, so its pages go back too.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: each range is a whole mapping of this process that is not writable and holds no
    // private (anonymous) pages, so every page is an unmodified view of its file: MADV_DONTNEED
    // only unmaps them, and the next access reads the same bytes back. The pollfds are ours
    // and live across the call.
    let rc = unsafe { madvise_then_poll(&clean, &mut pollfds) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc as i32));
    }
    Ok(())
}

/// `madvise(MADV_DONTNEED)` on each range, then `ppoll` on `fds` without a timeout; returns
/// ppoll's result (negative errno). Small and self-contained (raw system calls, no call out)
/// so that the code that runs after the text is dropped lies in one fault-around block.
///
/// # Safety
/// Every range must be a mapping whose pages can be dropped without losing data (see
/// [`release_pages_and_wait`]).
#[inline(never)]
unsafe fn madvise_then_poll(ranges: &[(usize, usize)], fds: &mut [libc::pollfd]) -> isize {
    for &(start, len) in ranges {
        // SAFETY: the caller vouches for the range; madvise touches no memory of ours.
        unsafe {
            raw_syscall5(
                libc::SYS_madvise as usize,
                [start, len, libc::MADV_DONTNEED as usize, 0, 0],
            );
        }
    }
    // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfds; the timeout
    // and signal mask are null (wait without limit, keep the mask).
    unsafe {
        raw_syscall5(
            libc::SYS_ppoll as usize,
            [fds.as_mut_ptr() as usize, fds.len(), 0, 0, 0],
        )
    }
}

/// A system call with up to five arguments, made in place on x86_64: no C library function to
/// page in (elsewhere through `syscall(2)`, which may cost a fault-around block or two more).
/// Returns the kernel's result (negative errno on failure).
///
/// # Safety
/// As for the system call `n` with these arguments.
#[inline(always)]
unsafe fn raw_syscall5(n: usize, a: [usize; 5]) -> isize {
    #[cfg(target_arch = "x86_64")]
    {
        let ret: isize;
        // SAFETY: the x86_64 system call convention: number in rax, arguments in rdi, rsi,
        // rdx, r10, r8; the kernel clobbers rcx and r11 and returns in rax.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4],
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as the caller's; the C library's wrapper reports errors through errno.
        let rc = unsafe { libc::syscall(n as libc::c_long, a[0], a[1], a[2], a[3], a[4]) };
        if rc < 0 {
            -(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO) as isize)
        } else {
            rc as isize
        }
    }
}

/// A mapping [`release_pages_and_wait`] may drop: its range and resident bytes.
#[derive(Debug, PartialEq)]
struct CleanMapping {
    start: usize,
    len: usize,
    resident: u64,
}

/// The non-writable, file-backed mappings in `smaps` with resident pages and no anonymous
/// (privately copied) ones.
fn clean_file_mappings(smaps: &str) -> Vec<CleanMapping> {
    let mut out = Vec::new();
    let mut current: Option<(CleanMapping, bool)> = None;
    let finish = |m: Option<(CleanMapping, bool)>, out: &mut Vec<CleanMapping>| {
        if let Some((m, true)) = m {
            if m.resident > 0 {
                out.push(m);
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            finish(current.take(), &mut out);
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let eligible = perms.as_bytes().get(1) == Some(&b'-') && inode != "0";
            current = Some((
                CleanMapping {
                    start,
                    len: end - start,
                    resident: 0,
                },
                eligible,
            ));
            continue;
        }
        let Some((m, eligible)) = current.as_mut() else {
            continue;
        };
        let kib = || -> u64 {
            fields
                .clone()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => m.resident = kib() * 1024,
            "Anonymous:" if kib() > 0 => *eligible = false,
            _ => {}
        }
    }
    finish(current.take(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_released() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 00:01 1234 /memfd:berth (deleted)
Size:               1024 kB
Rss:                 936 kB
Anonymous:             0 kB
55d0a0100000-55d0a0200000 r-xp 00100000 00:01 1234 /memfd:berth (deleted)
Rss:                1472 kB
Anonymous:             0 kB
55d0a0200000-55d0a0210000 r--p 00200000 00:01 1234 /memfd:berth (deleted)
Rss:                  64 kB
Anonymous:            64 kB
55d0a0210000-55d0a0213000 rw-p 00210000 00:01 1234 /memfd:berth (deleted)
Rss:                  12 kB
Anonymous:            12 kB
55d0a1000000-55d0a1020000 rw-p 00000000 00:00 0 [heap]
Rss:                  84 kB
Anonymous:            84 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f0000002000-7f0000003000 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                CleanMapping {
                    start: 0x55d0a0000000,
                    len: 0x100000,
                    resident: 936 * 1024
                },
                CleanMapping {
                    start: 0x55d0a0100000,
                    len: 0x100000,
                    resident: 1472 * 1024
                },
            ]
        );
    }

    #[test]
    fn the_sealed_view_is_our_binary_and_read_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping the_sealed_view_is_our_binary_and_read_only: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        let fd = overlay_self_exe(&empty).expect("overlayfs view of the test binary");
        let view = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(
            std::fs::read(&view).unwrap(),
            std::fs::read("/proc/self/exe").unwrap()
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&view)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let fs = nix::sys::statfs::fstatfs(&fd).unwrap();
        assert_eq!(
            fs.filesystem_type(),
            nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
        );
        // The empty layer stays empty, and the fallback still seals.
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        let copy = memfd_self_exe().unwrap();
        let seals = fcntl(&copy, FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
    }

    #[test]
    fn a_lowered_priority_comes_back() {
        let base = niceness().unwrap();
        let can_raise = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_NICE,
        )
        .unwrap();
        std::thread::spawn(move || {
            {
                let _l = Lowered::by(5);
                let expect = if can_raise { (base + 5).min(19) } else { base };
                assert_eq!(niceness().unwrap(), expect);
            }
            assert_eq!(niceness().unwrap(), base);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn released_pages_read_back_the_same_and_the_wait_ends_on_input() {
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            clean_file_mappings(&smaps).iter().map(|m| m.resident).sum()
        };
        let before_bytes: Vec<u8> = std::fs::read("/proc/self/exe").unwrap()[..4096].to_vec();
        let before = resident();
        assert!(before > 0, "nothing resident to release");
        let (r, w) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            nix::unistd::write(&w, b"x").unwrap();
        });
        release_pages_and_wait(&[std::os::fd::AsFd::as_fd(&r)]).unwrap();
        let after = resident();
        // Other test threads fault some pages back in meanwhile, never all of them.
        assert!(after < before, "resident {before} -> {after} bytes");
        // It returned because the byte arrived.
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut byte).unwrap(), 1);
        writer.join().unwrap();
        // Code and constants still work after their pages were dropped.
        let again: Vec<u8> = std::fs::read("/proc/self/exe").unwrap()[..4096].to_vec();
        assert_eq!(before_bytes, again);
        assert_eq!(format!("{:?}", vec![1, 2, 3]), "[1, 2, 3]");
    }
}
