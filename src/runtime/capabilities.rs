//! The container's Linux capabilities: the default set (Docker's), the spec's add/drop
//! arithmetic, and applying the result to the calling thread of the container init.
//!
//! Owns: which capabilities a container holds and the capability syscalls (capset,
//! PR_CAPBSET_DROP, PR_CAP_AMBIENT) made on the init's own thread.
//! Must not touch: the uid/gid (the caller changes them, see [`apply`]), seccomp, namespaces.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

/// Errors from computing or applying a capability set.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("dropping {cap:?} from the bounding set: {source}")]
    DropBounding {
        cap: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting the {set} capability set: {source}")]
    Set {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The capabilities every container holds unless its spec says otherwise (Docker's default).
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// [`DEFAULT`] as a set.
pub fn default_set() -> CapsHashSet {
    DEFAULT.into_iter().collect()
}

/// One name from a spec's `cap_add`/`cap_drop`: `ALL`, or a capability name, case-insensitive,
/// with or without the `CAP_` prefix (as Docker accepts them).
enum Name {
    All,
    Cap(Capability),
}

fn parse(name: &str) -> Result<Name, CapError> {
    let trimmed = name.trim();
    if trimmed.eq_ignore_ascii_case("ALL") {
        return Ok(Name::All);
    }
    if trimmed.is_empty() {
        return Err(CapError::Unknown(name.to_string()));
    }
    Capability::from_str(&caps::to_canonical(trimmed))
        .map(Name::Cap)
        .map_err(|_| CapError::Unknown(name.to_string()))
}

/// The container's capability set: [`DEFAULT`] adjusted by the spec, with Docker's rules
/// (moby `TweakCapabilities`):
/// - `ALL` in `add`: every capability except those in `drop`;
/// - else `ALL` in `drop`: exactly the capabilities in `add`;
/// - else the default set, minus `drop`, plus `add` (a name in both ends up added).
///
/// Every name is validated, including those that a rule above ignores.
pub fn effective_set(add: &[String], drop: &[String]) -> Result<CapsHashSet, CapError> {
    let (mut add_all, mut drop_all) = (false, false);
    let mut adds = CapsHashSet::new();
    let mut drops = CapsHashSet::new();
    for name in add {
        match parse(name)? {
            Name::All => add_all = true,
            Name::Cap(c) => {
                adds.insert(c);
            }
        }
    }
    for name in drop {
        match parse(name)? {
            Name::All => drop_all = true,
            Name::Cap(c) => {
                drops.insert(c);
            }
        }
    }
    let set = if add_all {
        caps::all().difference(&drops).copied().collect()
    } else if drop_all {
        adds
    } else {
        let mut set: CapsHashSet = default_set().difference(&drops).copied().collect();
        set.extend(adds);
        set
    };
    Ok(set)
}

/// The bitmask of `set` as /proc/<pid>/status prints it (CapEff, CapBnd, ...).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

/// Drops from the calling thread's bounding set every capability the kernel knows that is not
/// in `set`. Needs CAP_SETPCAP in the effective set, unless nothing is left to drop. Returns
/// the capabilities of `set` that the kernel knows. One PR_CAPBSET_READ per capability tells
/// both whether the kernel knows it (an error if not) and whether the set still holds it.
pub fn drop_bounding(set: &CapsHashSet) -> Result<CapsHashSet, CapError> {
    let mut known = CapsHashSet::new();
    for cap in caps::all() {
        let Ok(held) = caps::has_cap(None, CapSet::Bounding, cap) else {
            continue;
        };
        if set.contains(&cap) {
            known.insert(cap);
        } else if held {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| CapError::DropBounding { cap, source })?;
        }
    }
    Ok(known)
}

/// Gives the calling thread the container's capabilities:
/// 1. drops every capability not in `set` from the bounding set ([`drop_bounding`]);
/// 2. clears the ambient and inheritable sets;
/// 3. sets effective and permitted to `set` if the container user is root (uid 0), or empties
///    them for any other user. As in Docker, a non-root user starts with no capabilities at
///    all, while the bounding set still limits what a file capability could grant (and
///    no_new_privs stops even that).
///
/// Capabilities the running kernel does not know are left out; one that the calling thread
/// does not hold in its permitted set cannot be gained and fails with [`CapError::Set`].
/// Effective is written before permitted, so that it never exceeds permitted while shrinking.
///
/// What the caller (the container init, single-threaded, uid 0 with full capabilities) must do,
/// in this order, as runc does:
/// 1. call [`drop_bounding`] while it is still uid 0: PR_CAPBSET_DROP needs CAP_SETPCAP in
///    the effective set, which a change to a non-zero uid clears;
/// 2. `setgroups`, `setgid`, then `setuid` to the container user (these need CAP_SETGID and
///    CAP_SETUID, still effective because nothing was lowered yet). A change from uid 0 to a
///    non-zero uid clears permitted, effective and ambient by itself; PR_SET_KEEPCAPS is not
///    needed because a non-root user keeps no capabilities anyway;
/// 3. call `apply`: step 1 inside it then finds nothing left to drop, so it needs no
///    capability, and lowering the other sets needs none either;
/// 4. execve. For uid 0, execve recomputes permitted from the bounding set (the kernel treats
///    root's file capabilities as full), so the bounding set is what limits a root container.
///
/// If the container user is root, `apply` may equally be called before step 2 (uid 0 keeps
/// its capabilities through setuid(0)) — but only if `set` still holds CAP_SETUID and
/// CAP_SETGID; calling it after the uid change is correct in every case.
pub fn apply(set: &CapsHashSet, uid_is_root: bool) -> Result<(), CapError> {
    let known = drop_bounding(set)?;
    caps::clear(None, CapSet::Ambient).map_err(|source| CapError::Set {
        set: "ambient",
        source,
    })?;
    caps::clear(None, CapSet::Inheritable).map_err(|source| CapError::Set {
        set: "inheritable",
        source,
    })?;
    let target = if uid_is_root {
        known
    } else {
        CapsHashSet::new()
    };
    caps::set(None, CapSet::Effective, &target).map_err(|source| CapError::Set {
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &target).map_err(|source| CapError::Set {
        set: "permitted",
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use Capability::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn set(list: &[Capability]) -> CapsHashSet {
        list.iter().copied().collect()
    }

    #[test]
    fn default_set_has_exactly_docker_fourteen() {
        let d = default_set();
        assert_eq!(d.len(), 14);
        assert_eq!(mask(&d), 0x0000_0000_a804_25fb);
        assert!(!d.contains(&CAP_SYS_ADMIN));
    }

    #[test]
    fn effective_set_table() {
        let all = caps::all();
        let cases: Vec<(&[&str], &[&str], CapsHashSet)> = vec![
            (&[], &[], default_set()),
            (&["SYS_PTRACE"], &[], {
                let mut s = default_set();
                s.insert(CAP_SYS_PTRACE);
                s
            }),
            (&["cap_sys_ptrace"], &[], {
                let mut s = default_set();
                s.insert(CAP_SYS_PTRACE);
                s
            }),
            (&[], &["NET_RAW", "MKNOD"], {
                let mut s = default_set();
                s.remove(&CAP_NET_RAW);
                s.remove(&CAP_MKNOD);
                s
            }),
            (&[], &["ALL"], CapsHashSet::new()),
            (
                &["NET_BIND_SERVICE"],
                &["ALL"],
                set(&[CAP_NET_BIND_SERVICE]),
            ),
            (&["ALL"], &[], all.clone()),
            (&["all"], &["SYS_ADMIN"], {
                let mut s = all.clone();
                s.remove(&CAP_SYS_ADMIN);
                s
            }),
            // Add wins over drop for the same name, as in Docker.
            (&["KILL"], &["KILL"], default_set()),
            (&["ALL"], &["ALL"], all.clone()),
        ];
        for (add, drop, want) in cases {
            let got = effective_set(&names(add), &names(drop)).unwrap();
            assert_eq!(got, want, "add {add:?} drop {drop:?}");
        }
    }

    #[test]
    fn effective_set_rejects_unknown_names() {
        for (add, drop) in [
            (&["NOPE"][..], &[][..]),
            (&[], &["CAP_NOPE"]),
            (&[""], &[]),
            (&["ALL"], &["SYS_NOTHING"]),
        ] {
            let err = effective_set(&names(add), &names(drop)).unwrap_err();
            assert!(matches!(err, CapError::Unknown(_)), "{err}");
        }
        let err = effective_set(&names(&["SYS_WIZARD"]), &[]).unwrap_err();
        assert!(err.to_string().contains("SYS_WIZARD"), "{err}");
    }

    const PROBE_ENV: &str = "BERTH_CAPS_PROBE";

    fn status_mask(status: &str, field: &str) -> u64 {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in status"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    /// Runs [`probe`] in a child per mode: the changes cannot be undone. Root only.
    #[test]
    fn apply_in_a_child() {
        if !nix::unistd::geteuid().is_root()
            || !caps::has_cap(None, CapSet::Effective, CAP_SETPCAP).unwrap_or(false)
        {
            eprintln!("skipped: needs root with CAP_SETPCAP");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        for mode in ["root", "nobody"] {
            let out = Command::new(&exe)
                .args([
                    "--exact",
                    "runtime::capabilities::tests::probe",
                    "--nocapture",
                ])
                .env(PROBE_ENV, mode)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("caps probe ok"),
                "probe {mode} failed: {}\n{stdout}\n{stderr}",
                out.status
            );
        }
    }

    /// Meaningful only in the child started by `apply_in_a_child`.
    #[test]
    fn probe() {
        let Some(mode) = std::env::var_os(PROBE_ENV) else {
            return;
        };
        let set = default_set();
        let want = mask(&set);
        let status_path = "/proc/thread-self/status";
        match mode.to_str().unwrap() {
            "root" => {
                apply(&set, true).unwrap();
                let status = std::fs::read_to_string(status_path).unwrap();
                assert_eq!(status_mask(&status, "CapEff:"), want, "{status}");
                assert_eq!(status_mask(&status, "CapPrm:"), want, "{status}");
                assert_eq!(status_mask(&status, "CapBnd:"), want, "{status}");
                assert_eq!(status_mask(&status, "CapInh:"), 0, "{status}");
                assert_eq!(status_mask(&status, "CapAmb:"), 0, "{status}");
            }
            "nobody" => {
                // The documented sequence: bounding set, uid change, apply.
                drop_bounding(&set).unwrap();
                let id = 65534;
                nix::unistd::setgroups(&[]).unwrap();
                nix::unistd::setgid(nix::unistd::Gid::from_raw(id)).unwrap();
                nix::unistd::setuid(nix::unistd::Uid::from_raw(id)).unwrap();
                apply(&set, false).unwrap();
                let status = std::fs::read_to_string(status_path).unwrap();
                assert_eq!(status_mask(&status, "CapEff:"), 0, "{status}");
                assert_eq!(status_mask(&status, "CapPrm:"), 0, "{status}");
                assert_eq!(status_mask(&status, "CapBnd:"), want, "{status}");
                assert_eq!(status_mask(&status, "CapInh:"), 0, "{status}");
                assert_eq!(status_mask(&status, "CapAmb:"), 0, "{status}");
            }
            other => panic!("unknown probe mode {other}"),
        }
        println!("caps probe ok");
    }
}
