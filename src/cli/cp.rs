//! `berth cp [-a] [-L] SRC DEST`, one side `NAME:PATH`: copies files and dirs between the host
//! and a running container, with docker's rules for where they land. Every container path is
//! resolved below the container's root (`/proc/PID/root` of its init, so its mounts and
//! volumes are seen as the container sees them) with `openat2(RESOLVE_IN_ROOT)`, and entries
//! are created without following links, so a link inside the container can never lead a copy
//! out of it, in either direction. Unlike docker, the container must be running.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use super::{Cli, EXIT_BERTH_ERROR};
use crate::build::context::{clean, copy_items, is, Owner, SourceRoot};
use crate::sys::openat;

#[derive(Debug, Clone, clap::Args)]
pub struct CpArgs {
    /// Keep uids and gids (else what lands in a container is root's, what lands on the host
    /// the caller's).
    #[arg(short, long)]
    pub archive: bool,
    /// Follow a symlink that SRC names (else the link itself is copied).
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// NAME:PATH or a host path.
    pub src: String,
    /// NAME:PATH or a host path.
    pub dest: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Host(String),
    Container { name: String, path: String },
}

/// Docker's reading: `NAME:PATH` is a container's path unless it starts with `/` or `.`
/// (write `./a:b` for a host file with a colon).
fn endpoint(s: &str) -> Endpoint {
    if s.starts_with('/') || s.starts_with('.') {
        return Endpoint::Host(s.to_string());
    }
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Endpoint::Container {
            name: name.to_string(),
            path: path.to_string(),
        },
        _ => Endpoint::Host(s.to_string()),
    }
}

/// What is at the destination before the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestKind {
    Dir,
    /// A file, link or anything else that is not a dir.
    Other,
    Missing {
        parent_is_dir: bool,
    },
}

/// Where a copy lands, as `copy_items` takes it: the dir entries go into and, for a lone
/// file, its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    dir: String,
    file: Option<String>,
}

fn parent_and_name(p: &str) -> (String, String) {
    match p.rsplit_once('/') {
        Some((parent, name)) => (parent.to_string(), name.to_string()),
        None => (String::new(), p.to_string()),
    }
}

/// Docker's rules. `src` and `dest` are as typed (a trailing `/` or `/.` matters), `dest`
/// relative to its root.
fn place(src: &str, src_is_dir: bool, dest: &str, kind: DestKind) -> Result<Placement, String> {
    let dest_clean = clean(dest);
    let (parent, name) = parent_and_name(&dest_clean);
    if let DestKind::Missing {
        parent_is_dir: false,
    } = kind
    {
        return Err(format!("{dest}: its parent dir does not exist"));
    }
    match (src_is_dir, kind) {
        (false, DestKind::Dir) => Ok(Placement {
            dir: dest_clean,
            file: None,
        }),
        (false, DestKind::Missing { .. }) if dest.ends_with('/') => {
            Err(format!("{dest}: no such dir"))
        }
        (false, _) if name.is_empty() => Err(format!("{dest}: not a file name")),
        (false, _) => Ok(Placement {
            dir: parent,
            file: Some(name),
        }),
        (true, DestKind::Other) => Err(format!("cannot copy a dir onto the file {dest}")),
        (true, DestKind::Missing { .. }) => Ok(Placement {
            dir: dest_clean,
            file: None,
        }),
        (true, DestKind::Dir) => {
            let src_name = parent_and_name(&clean(src)).1;
            if src.ends_with("/.") || src_name.is_empty() {
                Ok(Placement {
                    dir: dest_clean,
                    file: None,
                })
            } else {
                Ok(Placement {
                    dir: if dest_clean.is_empty() {
                        src_name
                    } else {
                        format!("{dest_clean}/{src_name}")
                    },
                    file: None,
                })
            }
        }
    }
}

/// A root to copy from or to: a container's, or the host's `/`.
struct Side {
    fd: OwnedFd,
    /// For messages.
    label: String,
    /// The path below `fd`.
    path: String,
}

fn host_side(path: &str) -> Result<Side, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{path}: {e}"))?;
    let fd = openat::open_dir(Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
    let mut rel = clean(&abs.to_string_lossy());
    // A trailing `/` or `/.` is part of what the path means (see `place`).
    if path.ends_with("/.") {
        rel.push_str("/.");
    } else if path.ends_with('/') {
        rel.push('/');
    }
    Ok(Side {
        fd,
        label: "the host".to_string(),
        path: rel,
    })
}

fn container_side(cli: &Cli, name: &str, path: &str) -> Result<Side, String> {
    let (inst, _) = super::container::running(cli, name)?;
    let fd = nix::fcntl::open(
        format!("/proc/{}/root", inst.init_pid).as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the root of {name}: {e}"))?;
    // The pid could have been reused between the daemon's answer and the open.
    if !crate::state::is_same_process(inst.init_pid, inst.init_start) {
        return Err(format!("container {name} stopped"));
    }
    Ok(Side {
        fd,
        label: format!("container {name}"),
        path: path.to_string(),
    })
}

fn is_dir(st: &FileStat) -> bool {
    is(st, SFlag::S_IFDIR)
}

fn kind_of(side: &Side) -> DestKind {
    let at = |rel: &str| {
        openat::open_in_root(side.fd.as_fd(), Path::new(rel), OFlag::O_PATH, 0)
            .ok()
            .and_then(|fd| fstat(fd.as_fd()).ok())
    };
    let rel = clean(&side.path);
    match at(&rel) {
        Some(st) if is_dir(&st) => DestKind::Dir,
        Some(_) => DestKind::Other,
        None => DestKind::Missing {
            parent_is_dir: at(&parent_and_name(&rel).0).is_some_and(|st| is_dir(&st)),
        },
    }
}

fn copy(cli: &Cli, args: &CpArgs) -> Result<u64, String> {
    let (src, dest, to_host) = match (endpoint(&args.src), endpoint(&args.dest)) {
        (Endpoint::Host(s), Endpoint::Container { name, path }) => {
            (host_side(&s)?, container_side(cli, &name, &path)?, false)
        }
        (Endpoint::Container { name, path }, Endpoint::Host(d)) => {
            if d == "-" {
                return Err("a tar stream (`-`) is not supported: copy to a dir".into());
            }
            (container_side(cli, &name, &path)?, host_side(&d)?, true)
        }
        (Endpoint::Host(_), Endpoint::Host(_)) => {
            return Err("one side must be a container's NAME:PATH".into())
        }
        (Endpoint::Container { .. }, Endpoint::Container { .. }) => {
            return Err(
                "copying between two containers is not supported: one side must be a host path"
                    .into(),
            )
        }
    };
    // Docker's owners: the caller's on the host, root's in the container.
    let (uid, gid) = if to_host {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        (0, 0)
    };
    let owner = Owner {
        uid,
        gid,
        chmod: None,
        keep_ids: args.archive,
    };
    let src_rel = clean(&src.path);
    let root = SourceRoot::at(src.fd, Path::new(&src.label));
    let items = root
        .items(&src_rel, args.follow_link)
        .map_err(|e| format!("{} in {}: {e}", src.path, src.label))?;
    let src_is_dir = items.first().is_some_and(|i| is_dir(&i.st));
    let to = place(&src.path, src_is_dir, &dest.path, kind_of(&dest))
        .map_err(|e| format!("{}: {e}", dest.label))?;
    copy_items(
        &root,
        &items,
        dest.fd.as_fd(),
        &to.dir,
        to.file.as_deref(),
        owner,
    )
    .map_err(|e| format!("copying to {}: {e}", dest.label))
}

pub fn cp(cli: &Cli, args: &CpArgs) -> ExitCode {
    match copy(cli, args) {
        Ok(n) => {
            eprintln!("copied {n} entries to {}", args.dest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: cp: {e}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_read_as_docker_reads_them() {
        let c = |n: &str, p: &str| Endpoint::Container {
            name: n.into(),
            path: p.into(),
        };
        let h = |p: &str| Endpoint::Host(p.into());
        for (arg, want) in [
            ("web:/etc/hosts", c("web", "/etc/hosts")),
            ("web:etc", c("web", "etc")),
            ("web:", c("web", "")),
            ("/tmp/a:b", h("/tmp/a:b")),
            ("./a:b", h("./a:b")),
            ("a/b:c", h("a/b:c")),
            ("file", h("file")),
            (":x", h(":x")),
        ] {
            assert_eq!(endpoint(arg), want, "{arg}");
        }
    }

    #[test]
    fn placement_follows_dockers_rules() {
        let missing = DestKind::Missing {
            parent_is_dir: true,
        };
        let p = |dir: &str, file: Option<&str>| {
            Ok(Placement {
                dir: dir.into(),
                file: file.map(Into::into),
            })
        };
        type Case<'a> = (&'a str, bool, &'a str, DestKind, Result<Placement, String>);
        let cases: Vec<Case> = vec![
            // A file into a dir keeps its name; onto a file or a new name takes that name.
            ("etc/hosts", false, "/tmp", DestKind::Dir, p("tmp", None)),
            (
                "etc/hosts",
                false,
                "/tmp/h",
                DestKind::Other,
                p("tmp", Some("h")),
            ),
            ("etc/hosts", false, "/tmp/h", missing, p("tmp", Some("h"))),
            ("hosts", false, "h", missing, p("", Some("h"))),
            // A dir onto a new name becomes it; into a dir goes below it, unless `/.`.
            ("/var/www", true, "/srv/site", missing, p("srv/site", None)),
            ("/var/www", true, "/srv", DestKind::Dir, p("srv/www", None)),
            ("/var/www/", true, "/srv", DestKind::Dir, p("srv/www", None)),
            ("/var/www/.", true, "/srv", DestKind::Dir, p("srv", None)),
            ("/", true, "/srv", DestKind::Dir, p("srv", None)),
            ("www", true, "/", DestKind::Dir, p("www", None)),
        ];
        for (src, is_dir, dest, kind, want) in cases {
            assert_eq!(
                place(src, is_dir, dest, kind),
                want,
                "{src} -> {dest} ({kind:?})"
            );
        }
        let errs = [
            ("a", false, "/new/", missing),
            ("a", true, "/etc/hosts", DestKind::Other),
            (
                "a",
                false,
                "/no/such/x",
                DestKind::Missing {
                    parent_is_dir: false,
                },
            ),
            (
                "a",
                true,
                "/no/such/x",
                DestKind::Missing {
                    parent_is_dir: false,
                },
            ),
        ];
        for (src, is_dir, dest, kind) in errs {
            assert!(place(src, is_dir, dest, kind).is_err(), "{src} -> {dest}");
        }
    }
}
