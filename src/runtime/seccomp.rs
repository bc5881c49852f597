//! The container's seccomp profile: an allowlist equivalent to Docker/moby's default
//! (`profiles/seccomp/default.json`), compiled to classic BPF with `seccompiler` (pure Rust, no
//! libseccomp), and its installation in the calling thread.
//!
//! Owns: the syscall lists, the argument rules (`personality`, `clone`, `socket`), the
//! capability-gated groups and the order in which the programs are installed.
//! Must not touch: capabilities, namespaces, mounts or the uid; the caller sets no_new_privs
//! before [`install`] (see there).
//!
//! Differences from moby's profile, all on the side of denying more:
//! - `io_uring_setup`, `io_uring_enter` and `io_uring_register` are denied (SECURITY.md): the
//!   operations an io_uring runs never pass through this filter.
//! - Only the native ABI of each architecture is allowed: on x86_64 a 32-bit (i386) or x32
//!   syscall is not matched by the allowlist. seccompiler's architecture check kills the
//!   process on an i386 entry; x32 numbers (bit 30 set) fall through to EPERM. moby allows the
//!   i386 and x32 sub-architectures; 32-bit binaries therefore do not run under this profile.

use std::collections::BTreeMap;

use caps::{Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors from building or installing the profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(&'static str),
    #[error("building the seccomp {filter} filter: {source}")]
    Build {
        filter: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing seccomp program {index} of {count}: {source}")]
    Install {
        index: usize,
        count: usize,
        #[source]
        source: seccompiler::Error,
    },
}

/// errno for syscalls outside the allowlist (moby's `defaultErrnoRet`).
const DENY_ERRNO: u32 = libc::EPERM as u32;

/// Namespace flags `clone` must not carry (moby's mask 0x7E020000): CLONE_NEWNS | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality` values moby allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and
/// 0xffffffff (query the current persona).
const PERSONALITY_ALLOWED: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

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

#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;

/// The profile for a container holding berth's default capability set
/// ([`crate::runtime::capabilities::default_set`]).
pub fn default_profile() -> Result<Vec<BpfProgram>, SeccompError> {
    profile_for(&crate::runtime::capabilities::default_set())
}

/// The profile for a container whose capability set is `caps`, as moby derives it: the
/// capability-gated groups are allowed only when the capability is held.
///
/// Returns the programs in installation order (pass them to [`install`] as they are):
/// 1. the allowlist: allowed calls return normally, everything else fails with EPERM;
/// 2. unless `caps` holds CAP_SYS_ADMIN: a filter that makes `clone3` fail with ENOSYS.
///
/// Why two programs: a seccompiler filter has a single on-match action, and `clone3` needs a
/// third outcome. `clone3` passes its flags in a struct in memory that BPF cannot read, so the
/// namespace flags cannot be filtered; ENOSYS makes glibc (2.34+) fall back to `clone`, whose
/// flags are a register and are filtered above. How the kernel combines stacked filters: every
/// filter runs, and the action with the highest precedence wins (KILL > TRAP > ERRNO > TRACE >
/// ALLOW); between two ERRNO results the filter installed last wins (it is evaluated first and
/// only a strictly higher precedence replaces its result). For `clone3` the allowlist answers
/// ERRNO(EPERM) and the second filter ERRNO(ENOSYS); the second is installed last, so the
/// caller sees ENOSYS. For every other call the second filter answers ALLOW, which never
/// overrides the allowlist's answer.
pub fn profile_for(caps: &CapsHashSet) -> Result<Vec<BpfProgram>, SeccompError> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let sys_admin = caps.contains(&Capability::CAP_SYS_ADMIN);

        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for &nr in ALLOW_COMMON.iter().chain(ALLOW_ARCH) {
            rules.insert(nr, Vec::new());
        }
        for (cap, calls) in cap_gated() {
            if caps.contains(&cap) {
                for &nr in calls {
                    rules.insert(nr, Vec::new());
                }
            }
        }

        let build = |e| SeccompError::Build {
            filter: "allowlist",
            source: e,
        };
        // personality: only the listed personas. The kernel reads the argument as an
        // unsigned int, so compare the low 32 bits.
        let personality = PERSONALITY_ALLOWED
            .iter()
            .map(|&v| arg_rule(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(build)?;
        rules.insert(libc::SYS_personality, personality);
        // socket: any family except AF_VSOCK (talking to the host over vsock).
        rules.insert(
            libc::SYS_socket,
            vec![arg_rule(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_VSOCK as u64,
            )
            .map_err(build)?],
        );
        if sys_admin {
            rules.insert(libc::SYS_clone, Vec::new());
            rules.insert(libc::SYS_clone3, Vec::new());
        } else {
            // clone: flags (argument 0 on x86_64 and aarch64) carry no namespace flag.
            rules.insert(
                libc::SYS_clone,
                vec![arg_rule(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
                    0,
                )
                .map_err(build)?],
            );
        }

        let mut programs = vec![compile(
            "allowlist",
            rules,
            SeccompAction::Errno(DENY_ERRNO),
            SeccompAction::Allow,
        )?];
        if !sys_admin {
            let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
            programs.push(compile(
                "clone3",
                clone3,
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
            )?);
        }
        Ok(programs)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = caps;
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn arg_rule(
    index: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(index, len, op, value)?])
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn compile(
    filter: &'static str,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let err = |source| SeccompError::Build { filter, source };
    SeccompFilter::new(rules, mismatch, matched, TARGET)
        .and_then(BpfProgram::try_from)
        .map_err(err)
}

/// Installs `programs` in the calling thread, in order (the order [`profile_for`] returns).
///
/// The caller must have set no_new_privs first (`nix::sys::prctl::set_no_new_privs`), or hold
/// CAP_SYS_ADMIN; berth always sets no_new_privs. Only the calling thread is filtered (no
/// TSYNC): call this in the single-threaded container init, after the mounts and pivot_root
/// and before the capability drop, the uid change and execve (all of which the profile
/// allows). Children and the exec'd program inherit the filters.
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    let count = programs.len();
    for (index, program) in programs.iter().enumerate() {
        seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
            index,
            count,
            source,
        })?;
    }
    Ok(())
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    const PROBE_ENV: &str = "BERTH_SECCOMP_PROBE";

    #[test]
    fn default_profile_builds_two_programs_of_reasonable_size() {
        let start = Instant::now();
        let programs = default_profile().unwrap();
        let elapsed = start.elapsed();
        println!("default seccomp profile built in {elapsed:?} (debug build)");
        assert_eq!(programs.len(), 2);
        let allowlist = programs[0].len();
        // About four instructions per allowed syscall, under the kernel's BPF_MAXINSNS.
        assert!(
            (4 * ALLOW_COMMON.len()..4096).contains(&allowlist),
            "{allowlist} instructions"
        );
        assert!(programs[1].len() < 16, "{} instructions", programs[1].len());
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
    fn sys_admin_profile_is_one_program() {
        let mut caps = crate::runtime::capabilities::default_set();
        caps.insert(Capability::CAP_SYS_ADMIN);
        let programs = profile_for(&caps).unwrap();
        assert_eq!(programs.len(), 1);
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
        assert!(status.contains("Seccomp_filters:\t2"), "{status}");

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
