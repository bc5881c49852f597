//! The build context and the files COPY and ADD move into a layer.
//!
//! Every path is resolved through fds: sources with `openat2(RESOLVE_IN_ROOT)` below the
//! context dir (or below a stage's root for `COPY --from`), so neither `../` nor a symlink
//! can reach outside it; entries found while walking a source dir are opened one component at
//! a time without following symlinks, and symlinks are copied as symlinks. Destinations are
//! resolved the same way below the layer's root. `.dockerignore` rules hide files from COPY,
//! ADD and the content hash. Owns no state.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, utimensat, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};

use super::BuildError;
use crate::sys::openat;

/// Where copied files come from: the context dir, or a stage's (or image's) root.
pub struct SourceRoot {
    pub fd: OwnedFd,
    /// For messages.
    pub path: PathBuf,
    pub ignore: Ignore,
}

/// The `.dockerignore` rules: the last rule that matches a path (or one of its parent dirs)
/// decides; `!` rules take paths back.
#[derive(Default)]
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

impl Ignore {
    /// Parses `.dockerignore` text: one pattern per line, `#` comments, `!` exceptions.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (exclude, pat) = match t.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, t),
            };
            let cleaned = clean(pat);
            if cleaned.is_empty() {
                continue;
            }
            let m = glob(&cleaned).map_err(|e| format!("line {}: {pat:?}: {e}", i + 1))?;
            rules.push((m, exclude));
        }
        Ok(Ignore { rules })
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, exclude)| !exclude)
    }

    /// Whether `rel` (cleaned, relative to the context) is hidden.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut hidden = false;
        for (m, exclude) in &self.rules {
            let mut hit = m.is_match(rel);
            let mut prefix = rel;
            while !hit {
                match prefix.rfind('/') {
                    Some(i) => {
                        prefix = &prefix[..i];
                        hit = m.is_match(prefix);
                    }
                    None => break,
                }
            }
            if hit {
                hidden = *exclude;
            }
        }
        hidden
    }
}

/// `path.Clean` of a path relative to a root: no leading `/`, no `.`, `..` never above the
/// root. Empty for the root itself.
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// One entry to copy, relative to its source root.
#[derive(Debug, Clone)]
pub struct Item {
    /// Path below the source root (cleaned).
    pub src: String,
    /// Path below the destination (empty: the destination itself).
    pub dest: String,
    pub st: FileStat,
    pub link: Option<Vec<u8>>,
}

/// True when `st` is of the file type `kind` (`S_IFDIR`, `S_IFREG`...).
pub(crate) fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

fn io_err(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { step, path, source }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl SourceRoot {
    /// Opens the dir `path` as a source root, with its `.dockerignore` when `with_ignore`.
    pub fn open(path: &Path, with_ignore: bool) -> Result<SourceRoot, BuildError> {
        let fd = openat::open_dir(path).map_err(io_err("opening the build context", path))?;
        if !with_ignore {
            return Ok(SourceRoot::at(fd, path));
        }
        let ignore =
            match openat::open_child(fd.as_fd(), Path::new(".dockerignore"), OFlag::O_RDONLY) {
                Ok(f) => {
                    let mut text = String::new();
                    File::from(f)
                        .take(1 << 20)
                        .read_to_string(&mut text)
                        .map_err(io_err("reading", path.join(".dockerignore")))?;
                    Ignore::parse(&text).map_err(|message| BuildError::Ignore {
                        path: path.join(".dockerignore"),
                        message,
                    })?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ignore::default(),
                Err(e) => return Err(io_err("opening", path.join(".dockerignore"))(e)),
            };
        Ok(SourceRoot {
            fd,
            path: path.to_path_buf(),
            ignore,
        })
    }

    /// A source root on the dir `fd` (e.g. a container's root), without ignore rules;
    /// `path` names it in messages.
    pub fn at(fd: OwnedFd, path: &Path) -> SourceRoot {
        SourceRoot {
            fd,
            path: path.to_path_buf(),
            ignore: Ignore::default(),
        }
    }

    /// Opens `rel` (cleaned) below the root, following symlinks only inside it; `nofollow`
    /// keeps a final symlink itself.
    fn open_path(&self, rel: &str, nofollow: bool) -> io::Result<OwnedFd> {
        let flags = if nofollow {
            OFlag::O_PATH | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_PATH
        };
        openat::open_in_root(self.fd.as_fd(), Path::new(rel), flags, 0)
    }

    /// The entries named by the COPY/ADD sources `patterns`: for each source, the source
    /// itself (a file goes to `dest_name(source)`, a dir's contents into the destination)
    /// and, for dirs, everything below them. Errors name a source that matched nothing.
    pub fn expand(&self, patterns: &[String]) -> Result<Vec<(String, Vec<Item>)>, BuildError> {
        let mut out = Vec::new();
        for pat in patterns {
            let cleaned = clean(pat);
            let matched: Vec<String> = if has_glob(&cleaned) {
                let m = glob(&cleaned).map_err(|e| BuildError::Source {
                    source_name: pat.clone(),
                    message: e.to_string(),
                })?;
                let mut all = Vec::new();
                self.walk("", &mut |rel, _| {
                    if m.is_match(rel) {
                        all.push(rel.to_string());
                    }
                })?;
                all
            } else {
                vec![cleaned.clone()]
            };
            let matched: Vec<String> = matched
                .into_iter()
                .filter(|m| m.is_empty() || !self.ignore.excluded(m))
                .collect();
            if matched.is_empty() {
                return Err(BuildError::Source {
                    source_name: pat.clone(),
                    message: format!(
                        "not found in {} (or excluded by .dockerignore)",
                        self.path.display()
                    ),
                });
            }
            for rel in matched {
                let items = self
                    .items(&rel, true)
                    .map_err(|message| BuildError::Source {
                        source_name: pat.clone(),
                        message,
                    })?;
                out.push((rel, items));
            }
        }
        Ok(out)
    }

    /// The entry `rel` (cleaned) and, for a dir, everything below it. `follow` follows a
    /// final symlink (inside the root); otherwise the link itself is the entry.
    pub fn items(&self, rel: &str, follow: bool) -> Result<Vec<Item>, String> {
        let fd = self
            .open_path(rel, !follow)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => format!(
                    "not found in {} (links are followed only inside it)",
                    self.path.display()
                ),
                _ => format!("{}: {e}", self.path.join(rel).display()),
            })?;
        let st = fstat(fd.as_fd()).map_err(|e| e.to_string())?;
        let link = if is(&st, SFlag::S_IFLNK) {
            Some(self.read_link(rel).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let mut items = vec![Item {
            src: rel.to_string(),
            dest: String::new(),
            st,
            link,
        }];
        if is(&st, SFlag::S_IFDIR) {
            self.walk_items(rel, &mut items)
                .map_err(|e| e.to_string())?;
        }
        Ok(items)
    }

    /// The target of the symlink `rel`.
    fn read_link(&self, rel: &str) -> Result<Vec<u8>, BuildError> {
        let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
        let dir = openat::open_dir_in_root(self.fd.as_fd(), parent)
            .map_err(io_err("opening", self.path.join(parent)))?;
        let name = Path::new(rel).file_name().unwrap_or_default();
        let target = nix::fcntl::readlinkat(dir.as_fd(), name)
            .map_err(|e| io_err("reading the link", self.path.join(rel))(errno(e)))?;
        Ok(target.as_bytes().to_vec())
    }

    /// Calls `f(rel, stat)` for every entry below `rel` that `.dockerignore` does not hide,
    /// parents before children, without following symlinks.
    fn walk(&self, rel: &str, f: &mut dyn FnMut(&str, &FileStat)) -> Result<(), BuildError> {
        let dir = openat::open_in_root(
            self.fd.as_fd(),
            Path::new(if rel.is_empty() { "." } else { rel }),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(io_err("opening", self.path.join(rel)))?;
        let mut names = list(dir.as_fd()).map_err(io_err("listing", self.path.join(rel)))?;
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let hidden = self.ignore.excluded(&child);
            let st = fstatat(dir.as_fd(), Path::new(&name), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("reading", self.path.join(&child))(errno(e)))?;
            if !hidden {
                f(&child, &st);
            }
            if is(&st, SFlag::S_IFDIR) && (!hidden || self.ignore.has_exceptions()) {
                self.walk(&child, f)?;
            }
        }
        Ok(())
    }

    fn walk_items(&self, base: &str, items: &mut Vec<Item>) -> Result<(), BuildError> {
        let mut found = Vec::new();
        self.walk(base, &mut |rel, st| found.push((rel.to_string(), *st)))?;
        for (rel, st) in found {
            let link = if is(&st, SFlag::S_IFLNK) {
                Some(self.read_link(&rel)?)
            } else {
                None
            };
            let dest = rel[base.len()..].trim_start_matches('/').to_string();
            items.push(Item {
                src: rel,
                dest,
                st,
                link,
            });
        }
        Ok(())
    }

    /// Opens the regular file `rel` below the root for reading. A link (the source a COPY or
    /// `cp -L` follows) is followed only inside the root; what is opened must be a regular
    /// file, so an entry swapped for a fifo or a device never blocks or streams forever.
    fn read(&self, rel: &str) -> io::Result<File> {
        let fd = openat::open_in_root(
            self.fd.as_fd(),
            Path::new(rel),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            0,
        )?;
        let st = fstat(fd.as_fd()).map_err(errno)?;
        if !is(&st, SFlag::S_IFREG) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "changed into something that is not a regular file",
            ));
        }
        Ok(File::from(fd))
    }

    /// The content hash of what `expand` found: paths, kinds, modes, link targets and file
    /// contents (not times or owners, as Docker's cache does not use them).
    pub fn hash(&self, sets: &[(String, Vec<Item>)]) -> Result<String, BuildError> {
        let mut h = Sha256::new();
        for (source, items) in sets {
            h.update(source.as_bytes());
            h.update([0]);
            for it in items {
                h.update(it.dest.as_bytes());
                h.update([0]);
                h.update(it.st.st_mode.to_le_bytes());
                if let Some(l) = &it.link {
                    h.update(l);
                } else if is(&it.st, SFlag::S_IFREG) {
                    let mut f = self
                        .read(&it.src)
                        .map_err(io_err("reading", self.path.join(&it.src)))?;
                    h.update(it.st.st_size.to_le_bytes());
                    io::copy(&mut f, &mut h).map_err(io_err("reading", self.path.join(&it.src)))?;
                }
                h.update([0]);
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// Names in the dir `dir`, without `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let fd = openat::open_in_root(dir, Path::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let d = nix::dir::Dir::from_fd(fd).map_err(errno)?;
    let mut names = Vec::new();
    for e in d {
        let e = e.map_err(errno)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(names)
}

/// Who copied files belong to and which mode they get.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// `--chmod`, for every entry copied.
    pub chmod: Option<u32>,
    /// Keep each entry's own uid and gid (`cp -a`) instead of `uid` and `gid`.
    pub keep_ids: bool,
}

impl Owner {
    /// The uid and gid the entry `st` gets.
    fn ids(&self, st: &FileStat) -> (u32, u32) {
        if self.keep_ids {
            (st.st_uid, st.st_gid)
        } else {
            (self.uid, self.gid)
        }
    }
}

/// Opens (creating as needed, mode 0755, owned by `owner`) the dir `rel` below `root`;
/// components are resolved inside `root`.
pub fn mkdir_all(root: BorrowedFd<'_>, rel: &str, owner: (u32, u32)) -> io::Result<OwnedFd> {
    let mut dir = openat::open_dir_in_root(root, Path::new("."))?;
    let mut so_far = String::new();
    for comp in clean(rel).split('/').filter(|c| !c.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(comp);
        match openat::open_dir_in_root(root, Path::new(&so_far)) {
            Ok(d) => dir = d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let made = match mkdirat(
                    dir.as_fd(),
                    Path::new(comp),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => false,
                    Err(e) => return Err(errno(e)),
                };
                dir = openat::open_dir_in_root(root, Path::new(&so_far))?;
                if made {
                    fchown(
                        dir.as_fd(),
                        Some(Uid::from_raw(owner.0)),
                        Some(Gid::from_raw(owner.1)),
                    )
                    .map_err(errno)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Whether `rel` below `root` is a directory (symlinks followed inside `root`).
pub fn is_dir(root: BorrowedFd<'_>, rel: &str) -> bool {
    openat::open_dir_in_root(root, Path::new(&clean(rel))).is_ok()
}

/// Removes what is at `name` in `dir` unless it is a dir; a dir there is an error when
/// `want_dir` is false.
fn clear(dir: BorrowedFd<'_>, name: &Path, want_dir: bool) -> io::Result<bool> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is(&st, SFlag::S_IFDIR) => {
            if want_dir {
                Ok(true)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a directory", name.display()),
                ))
            }
        }
        Ok(_) => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(errno)?;
            Ok(false)
        }
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Copies the entries `items` of `src` into `dest_dir` (a dir below the layer root `root`,
/// created as needed); a lone file whose destination is not a dir goes to `dest_file`
/// instead (the name inside `dest_dir`). Returns the count of entries written.
pub fn copy_items(
    src: &SourceRoot,
    items: &[Item],
    root: BorrowedFd<'_>,
    dest_dir: &str,
    dest_file: Option<&str>,
    owner: Owner,
) -> Result<u64, BuildError> {
    let dest_path = |rel: &str| PathBuf::from("/").join(dest_dir).join(rel);
    let base = mkdir_all(root, dest_dir, (owner.uid, owner.gid))
        .map_err(io_err("creating", dest_path("")))?;
    let mut dir_times = Vec::new();
    let mut count = 0;
    for it in items {
        let target_rel = match (it.dest.is_empty(), dest_file) {
            (true, Some(f)) => f.to_string(),
            (true, None) if !is(&it.st, SFlag::S_IFDIR) => Path::new(&it.src)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (true, None) => String::new(),
            (false, _) => it.dest.clone(),
        };
        let at = dest_path(&target_rel);
        let err = |step| io_err(step, at.clone());
        let (parent, name) = match target_rel.rsplit_once('/') {
            Some((p, n)) => (
                Some(
                    openat::open_dir_in_root(base.as_fd(), Path::new(p))
                        .map_err(err("opening the parent of"))?,
                ),
                n.to_string(),
            ),
            None => (None, target_rel.clone()),
        };
        let pdir = parent.as_ref().map(|p| p.as_fd()).unwrap_or(base.as_fd());
        let mode = owner.chmod.unwrap_or(it.st.st_mode & 0o7777);
        let ids = owner.ids(&it.st);
        if name.is_empty() {
            // The destination dir itself: a copied dir's own metadata.
            set_meta(base.as_fd(), ids, mode).map_err(err("setting the owner of"))?;
            dir_times.push((String::new(), times(&it.st)));
            continue;
        }
        let name_p = Path::new(&name);
        if is(&it.st, SFlag::S_IFDIR) {
            let existed = clear(pdir, name_p, true).map_err(err("replacing"))?;
            if !existed {
                mkdirat(pdir, name_p, Mode::from_bits_truncate(0o700))
                    .map_err(|e| err("creating")(errno(e)))?;
            }
            let d = openat::open_child(pdir, name_p, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(err("opening"))?;
            set_meta(d.as_fd(), ids, mode).map_err(err("setting the owner of"))?;
            dir_times.push((target_rel.clone(), times(&it.st)));
        } else if let Some(link) = &it.link {
            clear(pdir, name_p, false).map_err(err("replacing"))?;
            symlinkat(OsStr::from_bytes(link), pdir, name_p)
                .map_err(|e| err("creating the symlink")(errno(e)))?;
            fchownat(
                pdir,
                name_p,
                Some(Uid::from_raw(ids.0)),
                Some(Gid::from_raw(ids.1)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| err("setting the owner of")(errno(e)))?;
            let (a, m) = times(&it.st);
            utimensat(pdir, name_p, &a, &m, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| err("setting the times of")(errno(e)))?;
        } else if is(&it.st, SFlag::S_IFREG) {
            clear(pdir, name_p, false).map_err(err("replacing"))?;
            let mut from = src
                .read(&it.src)
                .map_err(io_err("reading", src.path.join(&it.src)))?;
            let fd = nix::fcntl::openat(
                pdir,
                name_p,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| err("creating")(errno(e)))?;
            let mut to = File::from(fd);
            io::copy(&mut from, &mut to).map_err(err("writing"))?;
            set_meta(to.as_fd(), ids, mode).map_err(err("setting the owner of"))?;
            let (a, m) = times(&it.st);
            futimens(to.as_fd(), &a, &m).map_err(|e| err("setting the times of")(errno(e)))?;
        } else {
            tracing::warn!(path = %src.path.join(&it.src).display(), "not a file, dir or symlink: left out");
            continue;
        }
        count += 1;
    }
    // Dir times last, deepest first, as writing into a dir changes its mtime.
    for (rel, (a, m)) in dir_times.into_iter().rev() {
        let d = if rel.is_empty() {
            openat::open_dir_in_root(base.as_fd(), Path::new("."))
        } else {
            openat::open_dir_in_root(base.as_fd(), Path::new(&rel))
        };
        if let Ok(d) = d {
            let _ = futimens(d.as_fd(), &a, &m);
        }
    }
    Ok(count)
}

fn set_meta(fd: BorrowedFd<'_>, ids: (u32, u32), mode: u32) -> io::Result<()> {
    fchown(fd, Some(Uid::from_raw(ids.0)), Some(Gid::from_raw(ids.1))).map_err(errno)?;
    fchmod(fd, Mode::from_bits_truncate(mode)).map_err(errno)
}

/// Whether the file `rel` below `src` is a tar archive (plain, gzip or zstd), as ADD unpacks.
pub fn archive_reader(src: &SourceRoot, rel: &str) -> Result<Option<Box<dyn Read>>, BuildError> {
    let mut f = src
        .read(rel)
        .map_err(io_err("reading", src.path.join(rel)))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(io_err("reading", src.path.join(rel)))?;
    f.rewind().map_err(io_err("reading", src.path.join(rel)))?;
    let mut reader: Box<dyn Read> = if magic[..n].starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)))
    } else if magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::new(f).map_err(io_err("reading", src.path.join(rel)))?,
        )
    } else {
        Box::new(f)
    };
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || &head[257..262] != b"ustar" {
        return Ok(None);
    }
    Ok(Some(Box::new(io::Cursor::new(head).chain(reader))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ig =
            Ignore::parse("# comment\n*.log\nbuild\n!build/keep\n/secret/**\ndocs/*.md\n").unwrap();
        let cases = [
            ("app.log", true),
            ("sub/app.log", false),
            ("build", true),
            ("build/out.o", true),
            ("build/keep", false),
            ("secret/a/b", true),
            ("docs/x.md", true),
            ("docs/deep/x.md", false),
            ("src/main.rs", false),
        ];
        for (path, hidden) in cases {
            assert_eq!(ig.excluded(path), hidden, "{path}");
        }
        assert!(Ignore::parse("[").is_err());
    }

    #[test]
    fn cleaning() {
        for (raw, want) in [
            ("/a/./b/", "a/b"),
            ("../../etc/passwd", "etc/passwd"),
            ("a/../../b", "b"),
            (".", ""),
            ("./", ""),
        ] {
            assert_eq!(clean(raw), want, "{raw}");
        }
    }

    #[test]
    fn sources_stay_inside_the_context() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::write(ctx.join("dir/a.txt"), "a").unwrap();
        std::fs::write(ctx.join("dir/sub/b.txt"), "b").unwrap();
        std::fs::write(ctx.join("top.txt"), "t").unwrap();
        std::fs::write(d.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside", ctx.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.join("abs")).unwrap();
        std::fs::write(ctx.join(".dockerignore"), "dir/sub\n").unwrap();
        let src = SourceRoot::open(&ctx, true).unwrap();

        let sets = src.expand(&["dir".into()]).unwrap();
        let dests: Vec<&str> = sets[0].1.iter().map(|i| i.dest.as_str()).collect();
        assert_eq!(dests, ["", "a.txt"], "dir/sub is ignored");

        let globbed = src.expand(&["*.txt".into()]).unwrap();
        assert_eq!(globbed.len(), 1);
        assert_eq!(globbed[0].0, "top.txt");

        // `..` is cleaned away and links resolve inside the context: neither reaches out.
        assert!(src.expand(&["../outside".into()]).is_err());
        let up = src.expand(&["up".into()]);
        assert!(
            up.is_err(),
            "../outside from the context root is the root's own outside"
        );
        assert!(
            src.expand(&["abs".into()]).is_err(),
            "/etc/passwd is looked for in the context"
        );
        assert!(
            src.expand(&["dir/sub/b.txt".into()]).is_err(),
            "ignored files are not found"
        );

        let h1 = src.hash(&sets).unwrap();
        std::fs::write(ctx.join("dir/a.txt"), "changed").unwrap();
        let h2 = src.hash(&src.expand(&["dir".into()]).unwrap()).unwrap();
        assert_ne!(h1, h2, "content changes the hash");
        std::fs::write(ctx.join("dir/sub/b.txt"), "ignored change").unwrap();
        let h3 = src.hash(&src.expand(&["dir".into()]).unwrap()).unwrap();
        assert_eq!(h2, h3, "ignored files do not");
    }

    #[test]
    fn copy_into_a_root() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        let root = d.path().join("root");
        std::fs::create_dir_all(ctx.join("site")).unwrap();
        std::fs::write(ctx.join("site/index.html"), "hi").unwrap();
        std::os::unix::fs::symlink("index.html", ctx.join("site/home.html")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        // A destination through a symlink in the image lands inside the root, not on the host.
        std::os::unix::fs::symlink("/real", root.join("www")).unwrap();
        let src = SourceRoot::open(&ctx, true).unwrap();
        let rootfd = openat::open_dir(&root).unwrap();
        let sets = src.expand(&["site".into()]).unwrap();
        let me = Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            chmod: None,
            keep_ids: false,
        };
        let n = copy_items(&src, &sets[0].1, rootfd.as_fd(), "www/html", None, me).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            std::fs::read_to_string(root.join("real/html/index.html")).unwrap(),
            "hi"
        );
        assert_eq!(
            std::fs::read_link(root.join("real/html/home.html")).unwrap(),
            Path::new("index.html")
        );
        let file = src.expand(&["site/index.html".into()]).unwrap();
        copy_items(&src, &file[0].1, rootfd.as_fd(), "", Some("renamed"), me).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("renamed")).unwrap(), "hi");
    }
}
