//! The container's seccomp profile: an allowlist equivalent to Docker/moby's default
//! (`profiles/seccomp/default.json`), as a decision table compiled to one classic-BPF program
//! by `seccomp_bpf` (a binary search, not a chain), and its installation in the calling thread
//! (seccompiler's `apply_filter`: pure Rust, no libseccomp).
//!
//! Owns: the syscall lists, the argument rules (`personality`, `clone`, `clone3`, `socket`) and
//! the capability-gated groups.
//! Must not touch: capabilities, namespaces, mounts or the uid.
//!
//! Differences from moby's profile, all on the side of denying more:
//! - `io_uring_setup`, `io_uring_enter` and `io_uring_register` are denied (SECURITY.md): the
//!   operations an io_uring runs never pass through this filter.
//! - Only the native ABI of each architecture is allowed: on x86_64 a 32-bit (i386) or x32
//!   syscall is not matched by the allowlist. The architecture check kills the process on an
//!   i386 entry; x32 numbers (bit 30 set) fall through to EPERM. moby allows the
//!   i386 and x32 sub-architectures; 32-bit binaries therefore do not run under this profile.

use std::collections::BTreeMap;

use caps::{Capability, CapsHashSet};

use crate::runtime::seccomp_bpf::{Decision, Program, Table};

/// Errors from building or installing the profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(&'static str),
    #[error("installing the seccomp program: {0}")]
    Install(#[source] seccompiler::Error),
}

/// errno for syscalls outside the allowlist (moby's `defaultErrnoRet`).
const DENY_ERRNO: u32 = libc::EPERM as u32;

/// Namespace flags `clone` must not carry (moby's mask 0x7E020000): CLONE_NEWNS | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// `personality` values moby allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and
/// 0xffffffff (query the current persona).
const PERSONALITY_ALLOWED: [u32; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Syscall numbers that the libc crate does not define (yet) for every target we build.
/// Numbers from 424 on are the same on every architecture (except alpha), so one table serves
/// x86_64 and aarch64.
mod nr {
    pub const SET_MEMPOLICY_HOME_NODE: i64 = 450;
    pub const CACHESTAT: i64 = 451;
    pub const FCHMODAT2: i64 = 452;
    pub const MAP_SHADOW_STACK: i64 = 453;
    pub const FUTEX_WAKE: i64 = 454;
    pub const FUTEX_WAIT: i64 = 455;
    pub const FUTEX_REQUEUE: i64 = 456;

    #[cfg(target_arch = "x86_64")]
    pub const IO_PGETEVENTS: i64 = 333;
    #[cfg(target_arch = "x86_64")]
    pub const URETPROBE: i64 = 335;

    #[cfg(target_arch = "aarch64")]
    pub const IO_PGETEVENTS: i64 = 292;
    // asm-generic numbers arm64 has (it sets __ARCH_WANT_RENAMEAT and
    // __ARCH_WANT_SET_GET_RLIMIT) but the gnu libc crate does not export.
    #[cfg(target_arch = "aarch64")]
    pub const RENAMEAT: i64 = 38;
    #[cfg(target_arch = "aarch64")]
    pub const SYNC_FILE_RANGE: i64 = 84;
    #[cfg(target_arch = "aarch64")]
    pub const GETRLIMIT: i64 = 163;
    #[cfg(target_arch = "aarch64")]
    pub const SETRLIMIT: i64 = 164;
}

/// Allowed unconditionally, on every supported architecture (moby's first `names` block, less
/// io_uring, plus its kernel >= 4.8 block: ptrace and process_vm_*).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const ALLOW_COMMON: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_adjtimex,
    libc::SYS_bind,
    libc::SYS_brk,
    nr::CACHESTAT,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    nr::FCHMODAT2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    nr::FUTEX_REQUEUE,
    nr::FUTEX_WAIT,
    libc::SYS_futex_waitv,
    nr::FUTEX_WAKE,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    nr::IO_PGETEVENTS,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lgetxattr,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_madvise,
    nr::MAP_SHADOW_STACK,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_mseal,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    // moby allows it (it only encodes a handle; open_by_handle_at, the dangerous half,
    // stays gated on CAP_DAC_READ_SEARCH). systemd and util-linux use it.
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlinkat,
    libc::SYS_utimensat,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
];

/// x86_64 only: the legacy (pre asm-generic) calls plus moby's amd64 block.
#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH: &[i64] = &[
    libc::SYS_access,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_creat,
    libc::SYS_dup2,
    libc::SYS_epoll_create,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_fork,
    libc::SYS_futimesat,
    libc::SYS_getdents,
    libc::SYS_getpgrp,
    libc::SYS_getrlimit,
    libc::SYS_get_thread_area,
    libc::SYS_inotify_init,
    libc::SYS_lchown,
    libc::SYS_link,
    libc::SYS_lstat,
    libc::SYS_mkdir,
    libc::SYS_mknod,
    libc::SYS_modify_ldt,
    libc::SYS_open,
    libc::SYS_pause,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_readlink,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_rmdir,
    libc::SYS_select,
    libc::SYS_set_thread_area,
    libc::SYS_setrlimit,
    libc::SYS_signalfd,
    libc::SYS_stat,
    libc::SYS_symlink,
    libc::SYS_sync_file_range,
    libc::SYS_time,
    libc::SYS_unlink,
    // Kernel 6.11+ uretprobe trampoline; returns ENXIO unless called from it.
    nr::URETPROBE,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_vfork,
];

/// aarch64 only: calls the asm-generic table keeps for arm64.
#[cfg(target_arch = "aarch64")]
const ALLOW_ARCH: &[i64] = &[
    nr::GETRLIMIT,
    nr::RENAMEAT,
    nr::SETRLIMIT,
    nr::SYNC_FILE_RANGE,
];

/// moby's `includes.caps` blocks: calls allowed only when the container holds the capability
/// (the kernel still checks the capability itself; the filter only narrows the surface).
/// `clone`/`clone3` under CAP_SYS_ADMIN are handled by [`profile_for`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn cap_gated() -> Vec<(Capability, &'static [i64])> {
    vec![
        (
            Capability::CAP_SYS_ADMIN,
            &[
                libc::SYS_bpf,
                libc::SYS_fanotify_init,
                libc::SYS_fsconfig,
                libc::SYS_fsmount,
                libc::SYS_fsopen,
                libc::SYS_fspick,
                libc::SYS_lookup_dcookie,
                libc::SYS_mount,
                libc::SYS_mount_setattr,
                libc::SYS_move_mount,
                libc::SYS_open_tree,
                libc::SYS_perf_event_open,
                libc::SYS_quotactl,
                libc::SYS_quotactl_fd,
                libc::SYS_setdomainname,
                libc::SYS_sethostname,
                libc::SYS_setns,
                libc::SYS_syslog,
                libc::SYS_umount2,
                libc::SYS_unshare,
            ],
        ),
        (Capability::CAP_SYS_BOOT, &[libc::SYS_reboot]),
        (Capability::CAP_SYS_CHROOT, &[libc::SYS_chroot]),
        (
            Capability::CAP_SYS_MODULE,
            &[
                libc::SYS_delete_module,
                libc::SYS_init_module,
                libc::SYS_finit_module,
            ],
        ),
        (Capability::CAP_SYS_PACCT, &[libc::SYS_acct]),
        (
            Capability::CAP_SYS_PTRACE,
            &[
                libc::SYS_kcmp,
                libc::SYS_pidfd_getfd,
                libc::SYS_process_madvise,
            ],
        ),
        #[cfg(target_arch = "x86_64")]
        (
            Capability::CAP_SYS_RAWIO,
            &[libc::SYS_iopl, libc::SYS_ioperm],
        ),
        (
            Capability::CAP_SYS_TIME,
            &[libc::SYS_settimeofday, libc::SYS_clock_settime],
        ),
        (Capability::CAP_SYS_TTY_CONFIG, &[libc::SYS_vhangup]),
        (
            Capability::CAP_SYS_NICE,
            &[
                libc::SYS_get_mempolicy,
                libc::SYS_mbind,
                libc::SYS_set_mempolicy,
                nr::SET_MEMPOLICY_HOME_NODE,
            ],
        ),
        (Capability::CAP_SYSLOG, &[libc::SYS_syslog]),
        (Capability::CAP_BPF, &[libc::SYS_bpf]),
        (Capability::CAP_PERFMON, &[libc::SYS_perf_event_open]),
        (
            Capability::CAP_DAC_READ_SEARCH,
            &[libc::SYS_open_by_handle_at],
        ),
    ]
}

/// The architecture the filter is for: a syscall of any other ABI (i386 on x86_64) kills the
/// process.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The profile for a container holding berth's default capability set
/// ([`crate::runtime::capabilities::default_set`]).
pub fn default_profile() -> Result<Program, SeccompError> {
    profile_for(&crate::runtime::capabilities::default_set())
}

/// The profile for a container whose capability set is `caps`, as moby derives it: the
/// capability-gated groups are allowed only when the capability is held. One program: allowed
/// calls return normally, everything else fails with EPERM, and without CAP_SYS_ADMIN `clone3`
/// fails with ENOSYS: it passes its flags in a struct in memory that BPF cannot read, so the
/// namespace flags cannot be filtered, and ENOSYS makes glibc (2.34+) fall back to `clone`,
/// whose flags are a register and are filtered.
pub fn profile_for(caps: &CapsHashSet) -> Result<Program, SeccompError> {
    profile_table(caps).map(|t| t.compile())
}

/// The decisions of [`profile_for`], before compiling.
fn profile_table(caps: &CapsHashSet) -> Result<Table, SeccompError> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let sys_admin = caps.contains(&Capability::CAP_SYS_ADMIN);
        let mut calls: BTreeMap<u32, Decision> = BTreeMap::new();
        let mut allow = |nr: i64| {
            calls.insert(nr as u32, Decision::Allow);
        };
        ALLOW_COMMON
            .iter()
            .chain(ALLOW_ARCH)
            .for_each(|&nr| allow(nr));
        for (cap, listed) in cap_gated() {
            if caps.contains(&cap) {
                listed.iter().for_each(|&nr| allow(nr));
            }
        }
        // personality: only the listed personas (the kernel reads an unsigned int).
        calls.insert(
            libc::SYS_personality as u32,
            Decision::ArgIn {
                arg: 0,
                values: PERSONALITY_ALLOWED.to_vec(),
            },
        );
        // socket: any family except AF_VSOCK (talking to the host over vsock).
        calls.insert(
            libc::SYS_socket as u32,
            Decision::ArgNot {
                arg: 0,
                value: libc::AF_VSOCK as u32,
            },
        );
        if sys_admin {
            calls.insert(libc::SYS_clone as u32, Decision::Allow);
            calls.insert(libc::SYS_clone3 as u32, Decision::Allow);
        } else {
            // clone: flags (argument 0 on x86_64 and aarch64) carry no namespace flag.
            calls.insert(
                libc::SYS_clone as u32,
                Decision::ArgClear {
                    arg: 0,
                    mask: CLONE_NAMESPACE_FLAGS,
                },
            );
            calls.insert(
                libc::SYS_clone3 as u32,
                Decision::Errno(libc::ENOSYS as u32),
            );
        }
        Ok(Table {
            arch: AUDIT_ARCH,
            default_errno: DENY_ERRNO,
            calls,
        })
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = caps;
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// Installs `program` in the calling thread.
///
/// Sets no_new_privs first (berth always does; the kernel requires it or CAP_SYS_ADMIN). Only
/// the calling thread is filtered (no TSYNC): call this in the single-threaded container init,
/// after the mounts and pivot_root and before the capability drop, the uid change and execve
/// (all of which the profile allows). Children and the exec'd program inherit the filter.
pub fn install(program: &Program) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(SeccompError::Install)
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use crate::runtime::seccomp_bpf::tests::run;
    use crate::runtime::seccomp_bpf::{ret_errno, RET_ALLOW, RET_KILL_PROCESS};
    use std::process::Command;
    use std::time::Instant;

    const PROBE_ENV: &str = "BERTH_SECCOMP_PROBE";

    /// The compiled program answers as the table for every syscall number the kernel has and
    /// beyond, for each argument rule's interesting values, and stays short.
    #[test]
    fn default_profile_program_means_its_table() {
        let caps = crate::runtime::capabilities::default_set();
        let table = profile_table(&caps).unwrap();
        let start = Instant::now();
        let program = profile_for(&caps).unwrap();
        println!(
            "default seccomp profile: {} instructions, built in {:?}",
            program.len(),
            start.elapsed()
        );
        // About two instructions per run of allowed numbers, far below one per syscall.
        assert!(
            program.len() < 2 * ALLOW_COMMON.len() / 3,
            "{}",
            program.len()
        );
        let values = [
            0u64,
            0x8,
            0x20000,
            0x400000,
            libc::AF_UNIX as u64,
            libc::AF_VSOCK as u64,
            libc::CLONE_NEWNET as u64,
            (libc::CLONE_VM | libc::CLONE_THREAD) as u64,
            0xffff_ffff,
            u64::MAX,
        ];
        for nr in (0..1024).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
            for &v in &values {
                let args = [v, 0, 0, 0, 0, 0];
                assert_eq!(
                    run(&program, nr, AUDIT_ARCH, args),
                    table.decide(AUDIT_ARCH, nr, args),
                    "syscall {nr} args {args:x?}"
                );
            }
        }
        let nr = |n: i64| n as u32;
        let deny = ret_errno(DENY_ERRNO);
        let call = |n: i64, arg0: u64| run(&program, nr(n), AUDIT_ARCH, [arg0, 0, 0, 0, 0, 0]);
        assert_eq!(call(libc::SYS_read, 0), RET_ALLOW);
        assert_eq!(call(libc::SYS_mount, 0), deny);
        assert_eq!(call(libc::SYS_clone3, 0), ret_errno(libc::ENOSYS as u32));
        assert_eq!(call(libc::SYS_clone, libc::CLONE_NEWNS as u64), deny);
        assert_eq!(call(libc::SYS_clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(call(libc::SYS_socket, libc::AF_VSOCK as u64), deny);
        assert_eq!(call(libc::SYS_personality, 0x0040_0000), deny);
        assert_eq!(call(libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        // Another ABI (i386 on x86_64) is killed.
        assert_eq!(run(&program, 0, 0x4000_0003, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn lists_hold_no_duplicates_and_no_denied_call() {
        let mut all: Vec<i64> = ALLOW_COMMON.iter().chain(ALLOW_ARCH).copied().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a syscall is listed twice");
        for denied in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_pivot_root,
            libc::SYS_perf_event_open,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_acct,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_quotactl,
            libc::SYS_lookup_dcookie,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_syslog,
            libc::SYS_nfsservctl,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_personality,
            libc::SYS_socket,
            libc::SYS_chroot,
        ] {
            assert!(!all.contains(&denied), "syscall {denied} is unconditional");
        }
    }

    #[test]
    fn sys_admin_allows_namespaces_and_clone3() {
        let mut caps = crate::runtime::capabilities::default_set();
        caps.insert(Capability::CAP_SYS_ADMIN);
        let program = profile_for(&caps).unwrap();
        for n in [libc::SYS_clone3, libc::SYS_mount, libc::SYS_unshare] {
            assert_eq!(
                run(&program, n as u32, AUDIT_ARCH, [0; 6]),
                RET_ALLOW,
                "{n}"
            );
        }
        let flags = [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0];
        assert_eq!(
            run(&program, libc::SYS_clone as u32, AUDIT_ARCH, flags),
            RET_ALLOW
        );
    }

    /// Runs [`probe`] in a child process: installing a filter cannot be undone.
    #[test]
    fn filter_denies_and_allows_in_a_child() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "runtime::seccomp::tests::probe", "--nocapture"])
            .env(PROBE_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "probe failed: {}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains("seccomp probe ok"), "{stdout}\n{stderr}");
    }

    /// Meaningful only in the child started by `filter_denies_and_allows_in_a_child`.
    #[test]
    fn probe() {
        use nix::errno::Errno;
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

        if std::env::var_os(PROBE_ENV).is_none() {
            return;
        }
        nix::sys::prctl::set_no_new_privs().unwrap();
        install(&default_profile().unwrap()).unwrap();

        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert!(status.contains("Seccomp_filters:\t1"), "{status}");

        assert_eq!(
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS),
            Err(Errno::EPERM)
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            nix::mount::mount(
                Some("none"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
            Err(Errno::EPERM)
        );
        assert!(nix::unistd::getpid().as_raw() > 0);
        assert_eq!(
            socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::empty(),
                None
            )
            .unwrap_err(),
            Errno::EPERM
        );
        socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();

        // glibc >= 2.34 creates threads and posix_spawn children with clone3 and falls back
        // to clone only on ENOSYS: these work only if clone3 answers ENOSYS (not EPERM) and
        // plain clone is allowed.
        assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
        assert!(Command::new("/bin/true").status().unwrap().success());
        // Ordinary userland keeps working: a shell, coreutils, a pipe, a temp file.
        let st = Command::new("/bin/sh")
            .args([
                "-c",
                "ls -la / >/dev/null && date >/dev/null && id >/dev/null \
                 && f=$(mktemp) && echo x | sort >\"$f\" && rm \"$f\"",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "shell commands failed under the filter: {st}");
        // A forked child inherits the filter: a namespace in it is refused too.
        if std::path::Path::new("/usr/bin/unshare").exists() {
            let st = Command::new("/usr/bin/unshare")
                .args(["--uts", "/bin/true"])
                .status()
                .unwrap();
            assert!(!st.success(), "unshare --uts succeeded under the filter");
        }
        // personality: a persona outside the allowed values (ADDR_NO_RANDOMIZE) is refused.
        if std::path::Path::new("/usr/bin/setarch").exists() {
            let st = Command::new("/usr/bin/setarch")
                .args([std::env::consts::ARCH, "-R", "/bin/true"])
                .status()
                .unwrap();
            assert!(!st.success(), "setarch -R succeeded under the filter");
        }
        println!("seccomp probe ok");
    }
}
