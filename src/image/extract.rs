//! Safe extraction of one layer tar stream into an empty directory, converting whiteouts to
//! the overlayfs format (each layer dir is an overlay lowerdir).
//!
//! Every filesystem operation goes through fds: an entry's parent dir is opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to the layer root, and the entry
//! itself is created in that dir fd by its single-component name without following symlinks.
//! Names are cleaned like containerd's `path.Clean("/" + name)`, so `..` cannot climb above the
//! root and absolute names become relative. Owns nothing outside `dest`.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;

use super::ImageError;
use crate::sys::openat;

/// Default bound on a layer's uncompressed size (a decompression bomb stops here).
pub const MAX_LAYER_SIZE: u64 = 64 << 30;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// What one extraction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar members applied (including whiteouts).
    pub entries: u64,
    /// Regular files written and their total size in bytes.
    pub files: u64,
    pub bytes: u64,
    /// Whiteouts and opaque markers converted to the overlay format.
    pub whiteouts: u64,
}

/// Unpacks the tar stream `reader` into the empty directory `dest`, bounded by [`MAX_LAYER_SIZE`].
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<LayerStats, ImageError> {
    unpack_layer_limited(reader, dest, MAX_LAYER_SIZE)
}

/// [`unpack_layer`] with an explicit bound on the uncompressed stream size.
pub fn unpack_layer_limited(
    reader: impl Read,
    dest: &Path,
    limit: u64,
) -> Result<LayerStats, ImageError> {
    let root = openat::open_dir(dest).map_err(|source| ImageError::Entry {
        entry: dest.display().to_string(),
        step: "opening the layer dir",
        source,
    })?;
    unpack_layer_at(reader, root, limit)
}

/// [`unpack_layer_limited`] into the directory open as `root` (every member lands below it).
pub fn unpack_layer_at(
    reader: impl Read,
    root: OwnedFd,
    limit: u64,
) -> Result<LayerStats, ImageError> {
    let mut limited = LimitReader {
        inner: reader,
        remaining: limit,
        exceeded: false,
    };
    let mut x = Extractor {
        root,
        stats: LayerStats::default(),
        dir_times: Vec::new(),
        buf: vec![0; 64 << 10],
    };
    let result = (|| {
        let mut archive = tar::Archive::new(&mut limited);
        let entries = archive
            .entries()
            .map_err(|source| ImageError::TarRead { source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| ImageError::TarRead { source })?;
            x.apply(&mut entry)?;
        }
        Ok(())
    })();
    if limited.exceeded {
        return Err(ImageError::LayerTooLarge { limit });
    }
    result?;
    x.set_dir_times();
    Ok(x.stats)
}

/// Copies `r` into the new, empty file `f`, leaving every all-zero chunk a hole (so a layer's
/// sparse or zero-filled files take no disk for their zeros), through `buf`; the file ends at
/// the full length.
fn copy_sparse(r: &mut impl Read, f: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let (mut total, mut ends_in_hole) = (0u64, false);
    loop {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        ends_in_hole = buf[..n].iter().all(|&b| b == 0);
        if ends_in_hole {
            f.seek(SeekFrom::Current(n as i64))?;
        } else {
            f.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    if ends_in_hole {
        f.set_len(total)?;
    }
    Ok(total)
}

/// Cleans a tar member name like containerd (`path.Clean("/" + name)`), returning its components
/// relative to the layer root; empty for the root itself.
pub(crate) fn clean_name(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn join(comps: &[&[u8]]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&comps.join(&b'/')))
}

fn os(c: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(c))
}

struct LimitReader<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded = true;
                    Err(io::Error::other("layer size limit exceeded"))
                }
            };
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Metadata of one member, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Extractor {
    root: OwnedFd,
    stats: LayerStats,
    /// Directories whose mtime is set once every member is written.
    dir_times: Vec<(PathBuf, i64)>,
    /// The copy buffer of every file of the layer.
    buf: Vec<u8>,
}

impl Extractor {
    fn apply<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let kind = e.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw: Vec<u8> = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let meta = read_meta(e).map_err(|source| ImageError::Entry {
            entry: name.clone(),
            step: "reading the header",
            source,
        })?;
        if raw.contains(&0) {
            return Err(refused(&name, "name contains a NUL byte"));
        }
        let comps = clean_name(&raw);
        self.stats.entries += 1;
        let Some((base, parent)) = comps.split_last() else {
            // The layer root itself (`./` or `/`).
            if kind != EntryType::Directory {
                return Err(refused(&name, "a non-directory entry names the layer root"));
            }
            let root = self
                .root
                .try_clone()
                .map_err(|s| io_err(&name, "duplicating the root fd", s))?;
            self.set_meta_fd(&name, root.as_fd(), &meta)?;
            self.dir_times.push((PathBuf::new(), meta.mtime));
            return Ok(());
        };
        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parent, base, &meta);
        }
        let pdir = self.ensure_parent(&name, parent)?;
        let pdir = pdir.as_fd();
        let base_p = os(base);
        match kind {
            EntryType::Directory => {
                if !self.clear(&name, pdir, base_p, true)? {
                    mkdirat(pdir, base_p, Mode::from_bits_truncate(0o700))
                        .map_err(|s| io_err(&name, "creating the directory", s.into()))?;
                }
                let fd = openat::open_child(pdir, base_p, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|s| io_err(&name, "opening the directory", s))?;
                self.set_meta_fd(&name, fd.as_fd(), &meta)?;
                self.dir_times.push((join(&comps), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&name, pdir, base_p, false)?;
                let fd = nix::fcntl::openat(
                    pdir,
                    base_p,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|s| io_err(&name, "creating the file", s.into()))?;
                let mut file = File::from(fd);
                let n = copy_sparse(e, &mut file, &mut self.buf)
                    .map_err(|source| ImageError::TarRead { source })?;
                self.stats.files += 1;
                self.stats.bytes += n;
                self.set_meta_fd(&name, file.as_fd(), &meta)?;
                let t = TimeSpec::new(meta.mtime, 0);
                futimens(file.as_fd(), &t, &t)
                    .map_err(|s| io_err(&name, "setting the mtime", s.into()))?;
            }
            EntryType::Symlink => {
                let target: Vec<u8> = match e.link_name_bytes() {
                    Some(t) if !t.is_empty() => t.into_owned(),
                    _ => return Err(refused(&name, "symlink without a target")),
                };
                self.clear(&name, pdir, base_p, false)?;
                symlinkat(os(&target), pdir, base_p)
                    .map_err(|s| io_err(&name, "creating the symlink", s.into()))?;
                self.set_meta_at(&name, pdir, base_p, &meta, false)?;
            }
            EntryType::Link => {
                let target_raw: Vec<u8> = match e.link_name_bytes() {
                    Some(t) => t.into_owned(),
                    None => return Err(refused(&name, "hardlink without a target")),
                };
                self.hardlink(&name, &comps, pdir, base_p, &target_raw)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = e.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                        let f = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, makedev(major.into(), minor.into()))
                    }
                };
                self.clear(&name, pdir, base_p, false)?;
                mknodat(pdir, base_p, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|s| io_err(&name, "creating the device node", s.into()))?;
                self.set_meta_at(&name, pdir, base_p, &meta, true)?;
            }
            other => {
                return Err(refused(
                    &name,
                    &format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        Ok(())
    }

    /// Opens the parent dir named by `parent` (resolved inside the root), creating missing
    /// components with mode 0755 like containerd.
    fn ensure_parent(&self, name: &str, parent: &[&[u8]]) -> Result<OwnedFd, ImageError> {
        let root = self.root.as_fd();
        match openat::open_dir_in_root(root, &join(parent)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(io_err(name, "opening the parent directory", e)),
        }
        let mut cur = self
            .root
            .try_clone()
            .map_err(|s| io_err(name, "duplicating the root fd", s))?;
        for i in 0..parent.len() {
            match openat::open_dir_in_root(root, &join(&parent[..=i])) {
                Ok(fd) => cur = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = os(parent[i]);
                    match mkdirat(cur.as_fd(), c, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EEXIST) => {
                            let p = join(&parent[..=i]);
                            let reason = format!(
                                "parent {p:?} does not resolve to a directory inside the layer"
                            );
                            return Err(refused(name, &reason));
                        }
                        Err(s) => {
                            return Err(io_err(name, "creating a parent directory", s.into()))
                        }
                    }
                    // mkdirat applies the umask.
                    let fd =
                        openat::open_child(cur.as_fd(), c, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                            .map_err(|s| io_err(name, "opening a parent directory", s))?;
                    fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))
                        .map_err(|s| io_err(name, "chmod of a parent directory", s.into()))?;
                    cur = fd;
                }
                Err(e) => return Err(io_err(name, "opening a parent directory", e)),
            }
        }
        Ok(cur)
    }

    /// Makes room for a new entry `base` in `dir`: removes whatever is there, except an existing
    /// directory when `keep_dir` (returns true then).
    fn clear(
        &self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &Path,
        keep_dir: bool,
    ) -> Result<bool, ImageError> {
        match fstatat(dir, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_err(name, "inspecting the existing entry", e.into())),
            Ok(st) => {
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if is_dir && keep_dir {
                    return Ok(true);
                }
                openat::remove_all_at(dir, base)
                    .map_err(|s| io_err(name, "removing the existing entry", s))?;
                Ok(false)
            }
        }
    }

    fn hardlink(
        &mut self,
        name: &str,
        comps: &[&[u8]],
        pdir: BorrowedFd<'_>,
        base: &Path,
        target_raw: &[u8],
    ) -> Result<(), ImageError> {
        if target_raw.contains(&0) {
            return Err(refused(name, "hardlink target contains a NUL byte"));
        }
        let target = clean_name(target_raw);
        let Some((tbase, tparent)) = target.split_last() else {
            return Err(refused(name, "hardlink to the layer root"));
        };
        if target == comps {
            return Err(refused(name, "hardlink to itself"));
        }
        // The target's parent is resolved inside the root: a symlink on the way cannot lead out.
        let tdir = openat::open_dir_in_root(self.root.as_fd(), &join(tparent))
            .map_err(|s| io_err(name, "opening the hardlink target's directory", s))?;
        self.clear(name, pdir, base, false)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
        linkat(tdir.as_fd(), os(tbase), pdir, base, AtFlags::empty())
            .map_err(|s| io_err(name, "creating the hardlink", s.into()))?;
        Ok(())
    }

    fn whiteout(
        &mut self,
        name: &str,
        parent: &[&[u8]],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        if base == WHITEOUT_OPAQUE {
            let pdir = self.ensure_parent(name, parent)?;
            openat::fsetxattr(pdir.as_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|s| io_err(name, "marking the directory opaque", s))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(refused(name, "invalid whiteout name"));
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            // aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, ...): not a whiteout, skipped as Docker does.
            tracing::debug!(entry = name, "skipping aufs metadata entry");
            return Ok(());
        }
        let pdir = self.ensure_parent(name, parent)?;
        let t = os(target);
        self.clear(name, pdir.as_fd(), t, false)?;
        mknodat(
            pdir.as_fd(),
            t,
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|s| io_err(name, "creating the whiteout device", s.into()))?;
        fchownat(
            pdir.as_fd(),
            t,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|s| io_err(name, "chown of the whiteout", s.into()))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Owner, mode and xattrs on an open file or directory (chown first: it clears setuid bits
    /// and file capabilities).
    fn set_meta_fd(&self, name: &str, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), ImageError> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|s| io_err(name, "chown", s.into()))?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
            .map_err(|s| io_err(name, "chmod", s.into()))?;
        for (k, v) in &meta.xattrs {
            if skip_xattr(name, k) {
                continue;
            }
            xattr_result(name, k, openat::fsetxattr(fd, k, v))?;
        }
        Ok(())
    }

    /// Owner, (mode), xattrs and mtime on the entry `base` of `dir` without following it.
    fn set_meta_at(
        &self,
        name: &str,
        dir: BorrowedFd<'_>,
        base: &Path,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), ImageError> {
        fchownat(
            dir,
            base,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|s| io_err(name, "chown", s.into()))?;
        if chmod {
            fchmodat(
                dir,
                base,
                Mode::from_bits_truncate(meta.mode & 0o7777),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(|s| io_err(name, "chmod", s.into()))?;
        }
        for (k, v) in &meta.xattrs {
            if skip_xattr(name, k) {
                continue;
            }
            xattr_result(name, k, openat::lsetxattr_at(dir, base, k, v))?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(dir, base, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|s| io_err(name, "setting the mtime", s.into()))?;
        Ok(())
    }

    /// Directory mtimes last, since creating entries changes them. Best effort.
    fn set_dir_times(&self) {
        for (rel, mtime) in &self.dir_times {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            if let Ok(fd) = openat::open_in_root(self.root.as_fd(), rel, flags, 0) {
                let t = TimeSpec::new(*mtime, 0);
                let _ = futimens(fd.as_fd(), &t, &t);
            }
        }
    }
}

fn read_meta<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = e.header();
    let mode = h.mode()?;
    // PAX uid/gid are already applied to the header by the tar crate.
    let uid = u32::try_from(h.uid()?).map_err(|_| io::Error::other("uid out of range"))?;
    let gid = u32::try_from(h.gid()?).map_err(|_| io::Error::other("gid out of range"))?;
    let mut mtime = i64::try_from(h.mtime()?).unwrap_or(0);
    let mut xattrs = Vec::new();
    if let Some(pax) = e.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
            } else if key == b"mtime" {
                let v: Cow<'_, str> = String::from_utf8_lossy(ext.value_bytes());
                if let Ok(secs) = v.split('.').next().unwrap_or("").parse::<i64>() {
                    mtime = secs;
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// Overlay's own xattrs in a layer could redirect lookups or fake whiteouts: never applied.
fn skip_xattr(name: &str, key: &[u8]) -> bool {
    if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
        tracing::warn!(entry = name, xattr = %String::from_utf8_lossy(key), "ignoring overlayfs xattr in layer");
        return true;
    }
    false
}

fn xattr_result(name: &str, key: &[u8], r: io::Result<()>) -> Result<(), ImageError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            tracing::warn!(entry = name, xattr = %String::from_utf8_lossy(key), error = %e, "xattr not kept");
            Ok(())
        }
        Err(e) => Err(io_err(name, "setting an xattr", e)),
    }
}

fn io_err(name: &str, step: &'static str, source: io::Error) -> ImageError {
    ImageError::Entry {
        entry: name.to_string(),
        step,
        source,
    }
}

fn refused(name: &str, reason: &str) -> ImageError {
    ImageError::Refused {
        entry: name.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Builds tar streams with arbitrary (also hostile) names, bypassing the tar crate's checks.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn raw(
            &mut self,
            name: &[u8],
            kind: EntryType,
            link: Option<&[u8]>,
            data: &[u8],
            mode: u32,
            uid: u64,
        ) {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.raw(name.as_bytes(), EntryType::Regular, None, data, 0o644, 0);
            self
        }
        fn file_mode(&mut self, name: &str, mode: u32, uid: u64) -> &mut Self {
            self.raw(
                name.as_bytes(),
                EntryType::Regular,
                None,
                b"data",
                mode,
                uid,
            );
            self
        }
        fn dir(&mut self, name: &str, mode: u32, uid: u64) -> &mut Self {
            self.raw(name.as_bytes(), EntryType::Directory, None, b"", mode, uid);
            self
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(
                name.as_bytes(),
                EntryType::Symlink,
                Some(target.as_bytes()),
                b"",
                0o777,
                0,
            );
            self
        }
        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(
                name.as_bytes(),
                EntryType::Link,
                Some(target.as_bytes()),
                b"",
                0o644,
                0,
            );
            self
        }
        /// A PAX extended header applying to the next entry.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (k, v) in records {
                let body_len = 1 + k.len() + 1 + v.len() + 1; // " k=v\n"
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {k}=").as_bytes());
                data.extend_from_slice(v);
                data.push(b'\n');
            }
            self.raw(b"PaxHeader", EntryType::XHeader, None, &data, 0o644, 0);
            self
        }
        fn bytes(&mut self) -> Vec<u8> {
            let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
            b.into_inner().unwrap()
        }
    }

    /// Path -> (mode, uid, gid, nlink, mtime, content or link target).
    type Snapshot = BTreeMap<PathBuf, (u32, u32, u32, u64, i64, Vec<u8>)>;

    /// Everything observable about a directory tree (not following symlinks).
    fn snapshot(root: &Path) -> Snapshot {
        fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.is_file() {
                    std::fs::read(&p).unwrap()
                } else if m.file_type().is_symlink() {
                    std::fs::read_link(&p).unwrap().into_os_string().into_vec()
                } else {
                    Vec::new()
                };
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (m.mode(), m.uid(), m.gid(), m.nlink(), m.mtime(), content),
                );
                if m.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        use std::os::unix::ffi::OsStringExt;
        let mut out = BTreeMap::new();
        let m = std::fs::symlink_metadata(root).unwrap();
        out.insert(
            PathBuf::new(),
            (m.mode(), m.uid(), m.gid(), m.nlink(), m.mtime(), Vec::new()),
        );
        walk(root, root, &mut out);
        out
    }

    /// A "host" directory with things an escaping archive would like to touch.
    fn host() -> tempfile::TempDir {
        let h = tempfile::tempdir().unwrap();
        std::fs::write(h.path().join("sentinel"), b"host data").unwrap();
        std::fs::create_dir(h.path().join("dir")).unwrap();
        std::fs::write(h.path().join("dir/inner"), b"inner").unwrap();
        h
    }

    /// `/tmp/xyz` -> `tmp/xyz`, the same path seen from inside a layer.
    fn rel(p: &Path) -> String {
        p.to_str().unwrap().trim_start_matches('/').to_string()
    }

    fn unpack_bytes(tar: &[u8], dest: &Path) -> Result<LayerStats, ImageError> {
        unpack_layer(tar, dest)
    }

    #[test]
    fn clean_name_like_containerd() {
        let cases: &[(&str, &str)] = &[
            ("a/b", "a/b"),
            ("/a/b", "a/b"),
            ("./a/./b/", "a/b"),
            ("../../a", "a"),
            ("a/../../../b", "b"),
            ("/", ""),
            ("./", ""),
            ("a//b", "a/b"),
        ];
        for (input, want) in cases {
            let got = clean_name(input.as_bytes()).join(&b'/');
            assert_eq!(String::from_utf8(got).unwrap(), *want, "{input}");
        }
    }

    /// containerd's pkg/archive breakout table: each archive must be refused or land inside dest,
    /// and the host tree must stay exactly as it was.
    #[test]
    fn breakout_table() {
        if !is_root() {
            eprintln!("skipping breakout_table: needs root (chown, mknod)");
            return;
        }
        type Build = fn(&mut Tar, &Path);
        let cases: &[(&str, Build)] = &[
            ("dotdot name", |t, h| {
                t.file(
                    &format!("../../../../../../../../{}/sentinel", rel(h)),
                    b"pwned",
                );
            }),
            ("absolute name", |t, h| {
                t.file(&format!("{}/sentinel", h.display()), b"pwned");
            }),
            ("symlink to absolute dir, then a file through it", |t, h| {
                t.symlink("etc", h.to_str().unwrap())
                    .file("etc/sentinel", b"pwned");
            }),
            (
                "symlink to absolute dir, then a new file through it",
                |t, h| {
                    t.symlink("etc", h.to_str().unwrap())
                        .file("etc/newfile", b"pwned");
                },
            ),
            (
                "relative symlink climbing out, then a file through it",
                |t, h| {
                    t.symlink("up", &format!("../../../../../../../../../{}", rel(h)))
                        .file("up/sentinel", b"pwned");
                },
            ),
            ("symlink chain out", |t, h| {
                t.symlink("a", "b")
                    .symlink("b", h.to_str().unwrap())
                    .file("a/sentinel", b"pwned");
            }),
            ("symlink in a subdir climbing out", |t, h| {
                t.dir("sub", 0o755, 0)
                    .symlink("sub/loop", &format!("../../../../../../{}", rel(h)))
                    .file("sub/loop/dir/inner", b"pwned");
            }),
            ("symlink to / then dotdot", |t, h| {
                t.symlink("root", "/")
                    .file(&format!("root/../../{}/sentinel", rel(h)), b"pwned");
            }),
            ("hardlink to an absolute host file", |t, h| {
                t.hardlink("passwd", &format!("{}/sentinel", h.display()));
            }),
            ("hardlink to /etc/passwd", |t, _| {
                t.hardlink("passwd", "/etc/passwd").file("passwd", b"pwned");
            }),
            ("hardlink with dotdot target", |t, h| {
                t.hardlink("passwd", &format!("../../../../../{}/sentinel", rel(h)));
            }),
            ("hardlink through a symlink", |t, h| {
                t.symlink("s", h.to_str().unwrap())
                    .hardlink("h", "s/sentinel")
                    .file("h", b"pwned");
            }),
            ("hardlink to a symlink, then written", |t, h| {
                t.symlink("s", &format!("{}/sentinel", h.display()))
                    .hardlink("h", "s")
                    .file("h", b"pwned");
            }),
            ("chmod through a symlink (dir entry)", |t, h| {
                t.symlink("s", h.to_str().unwrap()).dir("s", 0o777, 0);
            }),
            ("chmod through a symlink (file entry)", |t, h| {
                t.symlink("s", &format!("{}/sentinel", h.display()))
                    .file_mode("s", 0o4777, 0);
            }),
            ("chown through a symlink", |t, h| {
                t.symlink("s", &format!("{}/dir", h.display()))
                    .dir("s", 0o755, 1234);
            }),
            ("chown through a symlinked parent", |t, h| {
                t.symlink("s", h.to_str().unwrap())
                    .dir("s/dir", 0o700, 1234);
            }),
            ("whiteout through a symlinked parent", |t, h| {
                t.symlink("d", h.to_str().unwrap())
                    .file("d/.wh.sentinel", b"");
            }),
            ("opaque marker through a symlinked parent", |t, h| {
                t.symlink("d", &format!("{}/dir", h.display()))
                    .file("d/.wh..wh..opq", b"");
            }),
            ("whiteout with dotdot", |t, h| {
                t.file(&format!("../../../../{}/.wh.sentinel", rel(h)), b"");
            }),
            ("device through a symlinked parent", |t, h| {
                t.symlink("d", h.to_str().unwrap());
                t.raw(b"d/null", EntryType::Char, None, b"", 0o666, 0);
            }),
        ];
        for (what, build) in cases {
            let h = host();
            let dest = tempfile::tempdir().unwrap();
            let before = snapshot(h.path());
            let mut t = Tar::new();
            build(&mut t, h.path());
            let res = unpack_bytes(&t.bytes(), dest.path());
            eprintln!("{what}: {:?}", res.as_ref().map_err(|e| e.to_string()));
            assert_eq!(snapshot(h.path()), before, "{what}: host changed ({res:?})");
            // Whatever was written is in dest: the root of dest is still a plain dir.
            assert!(
                std::fs::symlink_metadata(dest.path()).unwrap().is_dir(),
                "{what}"
            );
            let etc_passwd = std::fs::read("/etc/passwd").unwrap();
            assert!(!etc_passwd.starts_with(b"pwned"), "{what}");
        }
    }

    #[test]
    fn escaping_names_land_inside() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dest = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        t.file("../../../escape", b"a").file("/abs/file", b"b");
        unpack_bytes(&t.bytes(), dest.path()).unwrap();
        assert_eq!(std::fs::read(dest.path().join("escape")).unwrap(), b"a");
        assert_eq!(std::fs::read(dest.path().join("abs/file")).unwrap(), b"b");
    }

    #[test]
    fn invalid_whiteouts_are_errors() {
        for name in ["d/.wh..", "d/.wh...", ".wh."] {
            let dest = tempfile::tempdir().unwrap();
            let mut t = Tar::new();
            t.dir("d", 0o755, 0).file(name, b"");
            let err = unpack_bytes(&t.bytes(), dest.path()).unwrap_err();
            assert!(matches!(err, ImageError::Refused { .. }), "{name}: {err}");
            assert!(err.to_string().contains("invalid whiteout"), "{err}");
        }
    }

    #[test]
    fn symlinked_parent_dir_followed_inside() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        // `lib -> /usr/lib` (absolute, as in merged-/usr images) resolves inside the layer.
        let dest = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        t.dir("usr", 0o755, 0)
            .dir("usr/lib", 0o755, 0)
            .symlink("lib", "/usr/lib")
            .file("lib/libc.so", b"elf");
        unpack_bytes(&t.bytes(), dest.path()).unwrap();
        assert_eq!(
            std::fs::read(dest.path().join("usr/lib/libc.so")).unwrap(),
            b"elf"
        );
    }

    #[test]
    fn legit_archive() {
        if !is_root() {
            eprintln!("skipping legit_archive: needs root (chown, mknod, trusted xattrs)");
            return;
        }
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let long = "n".repeat(200);
        let mut t = Tar::new();
        t.dir("./", 0o755, 0)
            .dir("bin", 0o755, 0)
            .file("bin/busybox", b"#!busybox")
            .hardlink("bin/sh", "/bin/busybox")
            .file_mode("bin/su", 0o4755, 0)
            .file_mode("bin/mine", 0o6750, 1000)
            .dir("tmp", 0o1777, 0)
            .dir("opq", 0o755, 0)
            .file("opq/.wh..wh..opq", b"")
            .file("opq/kept", b"k")
            .dir("gone", 0o755, 0)
            .file("gone/.wh.old", b"")
            .pax(&[
                ("SCHILY.xattr.user.test", b"hello"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .file("xattr-file", b"x")
            .symlink("link", "/does/not/exist");
        t.raw(b"dev-null", EntryType::Char, None, b"", 0o666, 0);
        t.raw(b"fifo", EntryType::Fifo, None, b"", 0o600, 0);
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o644);
            h.set_entry_type(EntryType::Regular);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            t.0.append_data(&mut h, format!("dir/{long}"), &b"long"[..])
                .unwrap();
        }
        let stats = unpack_bytes(&t.bytes(), d).unwrap();
        assert_eq!(stats.whiteouts, 2);

        let meta = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
        assert_eq!(
            meta("bin/sh").ino(),
            meta("bin/busybox").ino(),
            "absolute hardlink target inside the layer"
        );
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
        assert_eq!(meta("bin/mine").mode() & 0o7777, 0o6750);
        assert_eq!(
            (meta("bin/mine").uid(), meta("bin/mine").gid()),
            (1000, 1000)
        );
        assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
        assert_eq!(
            meta("bin").mtime(),
            1_600_000_000,
            "dir mtime set after its entries"
        );

        let opq = openat::open_dir(&d.join("opq")).unwrap();
        assert_eq!(
            openat::fgetxattr(opq.as_fd(), b"trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!d.join("opq/.wh..wh..opq").exists());

        let wh = meta("gone/old");
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!d.join("gone/.wh.old").exists());

        let root = openat::open_dir(d).unwrap();
        let xf = openat::open_in_root(root.as_fd(), Path::new("xattr-file"), OFlag::O_RDONLY, 0)
            .unwrap();
        assert_eq!(
            openat::fgetxattr(xf.as_fd(), b"user.test").unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            openat::fgetxattr(xf.as_fd(), b"trusted.overlay.opaque").unwrap(),
            None,
            "overlay xattrs are not taken from layers"
        );

        assert_eq!(
            std::fs::read_link(d.join("link")).unwrap(),
            Path::new("/does/not/exist")
        );
        let dn = meta("dev-null");
        assert!(dn.file_type().is_char_device());
        assert_eq!(dn.mode() & 0o7777, 0o666);
        assert!(meta("fifo").file_type().is_fifo());
        assert_eq!(std::fs::read(d.join("dir").join(&long)).unwrap(), b"long");
    }

    #[test]
    fn existing_entries_are_replaced() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let mut t = Tar::new();
        t.dir("x", 0o755, 0)
            .file("x/child", b"c")
            .file("x", b"now a file")
            .file("y", b"file")
            .dir("y", 0o700, 0)
            .dir("z", 0o755, 0)
            .file("z/keep", b"k")
            .dir("z", 0o711, 0);
        unpack_bytes(&t.bytes(), d).unwrap();
        assert_eq!(std::fs::read(d.join("x")).unwrap(), b"now a file");
        assert!(d.join("y").is_dir());
        assert_eq!(
            std::fs::metadata(d.join("z")).unwrap().mode() & 0o7777,
            0o711
        );
        assert!(d.join("z/keep").exists(), "an existing dir is kept");
    }

    #[test]
    fn size_limit() {
        let dest = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        t.file("big", &vec![7u8; 64 * 1024]);
        let err = unpack_layer_limited(&t.bytes()[..], dest.path(), 10_000).unwrap_err();
        assert!(
            matches!(err, ImageError::LayerTooLarge { limit: 10_000 }),
            "{err}"
        );
    }
}
