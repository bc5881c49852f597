//! Running as PID 1 (an init system, or a container's init): mount the API filesystems that
//! are missing and reap every orphan.

use nix::mount::{mount, MsFlags};

/// The API filesystems: (target, fstype, flags (MS_NOSUID 0x2, MS_NODEV 0x4, MS_NOEXEC 0x8),
/// data), each mounted when `target` is not a mount point yet.
const API_FILESYSTEMS: &[(&str, &str, u64, Option<&str>)] = &[
    ("/proc", "proc", 0x2 | 0x4 | 0x8, None),
    ("/sys", "sysfs", 0x2 | 0x4 | 0x8, None),
    ("/dev", "devtmpfs", 0x2, Some("mode=755")),
];

/// Mounts what an init needs and is missing (errors are logged: a half-equipped host is
/// better than no supervisor).
pub fn prepare() {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (target, fstype, flags, data) in API_FILESYSTEMS {
        let is_mounted = mounted.lines().any(|l| l.split(' ').nth(4) == Some(target));
        if is_mounted {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some(*fstype),
            *target,
            Some(*fstype),
            MsFlags::from_bits_truncate(*flags),
            *data,
        ) {
            tracing::warn!("mounting {fstype} at {target}: {e}");
        }
    }
}
