//! Following a log directory: the lines appended after a starting point, across rotations.
//!
//! Polls (the caller sleeps between calls). The followed `current.log` stays open; when a poll
//! finds it fully read and `current.log` is now another file (a new inode), the old file is
//! drained, the rotated files newer than it are read, and the new `current.log` is followed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::{self, current_path, FileId};
use super::format;
use super::reader::{Assembler, LogLine, Snapshot, Source};
use super::LogError;

/// Pieces of a line still unfinished after this long are returned as a `partial` line (the
/// stream may have ended without a newline); a later final piece then comes as its own line.
pub const PARTIAL_GRACE: Duration = Duration::from_secs(1);

/// At most this much is read per poll, so one poll never holds a whole file in memory.
const READ_MAX: u64 = 4 * 1024 * 1024;

/// Reads lines as they are appended to a log directory.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    /// The file being followed (`current.log` when it was opened) and how far it was read.
    cur: Option<(Source, u64)>,
    /// Bytes read after the last complete record.
    carry: Vec<u8>,
    asm: Assembler,
}

impl Follower {
    /// Follows `dir` from the end of its current log: only lines written from now on. The
    /// directory and `current.log` need not exist yet.
    pub fn new(dir: &Path) -> Result<Follower, LogError> {
        let mut cur = Source::open(current_path(dir))?;
        if let Some(src) = cur.as_mut() {
            src.trim_to_last_newline()?;
        }
        Ok(Follower::start(dir, cur, Assembler::default()))
    }

    /// Follows on from where `snap` ends, with the unfinished lines of the history in `asm`.
    pub(crate) fn resume(dir: &Path, snap: Snapshot, asm: Assembler) -> Follower {
        Follower::start(dir, snap.current, asm)
    }

    fn start(dir: &Path, cur: Option<Source>, asm: Assembler) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            cur: cur.map(|src| {
                let pos = src.len;
                (src, pos)
            }),
            carry: Vec::new(),
            asm,
        }
    }

    /// The lines completed since the last call (empty when nothing new was written). Never
    /// blocks.
    pub fn poll(&mut self) -> Result<Vec<LogLine>, LogError> {
        let mut lines = Vec::new();
        let current = current_path(&self.dir);
        if self.cur.is_none() {
            self.cur = Source::open(current.clone())?.map(|src| (src, 0));
        }
        if self.cur.is_some() && self.read_available(&mut lines)? == 0 {
            let followed = self.cur.as_ref().map(|(src, _)| src.id);
            if let Some(now) = FileId::of_path(&current)? {
                if Some(now) != followed {
                    self.switch(&mut lines)?;
                }
            }
        }
        lines.extend(self.asm.take_stale(PARTIAL_GRACE));
        Ok(lines)
    }

    /// The followed file was rotated away: finish it, read the rotated files newer than it,
    /// then follow the new `current.log`.
    fn switch(&mut self, lines: &mut Vec<LogLine>) -> Result<(), LogError> {
        self.read_available(lines)?;
        if !self.carry.is_empty() {
            // Cut short by a crash: the writer never finishes it now.
            let carry = std::mem::take(&mut self.carry);
            self.push_line(&carry, lines);
        }
        let Some((old, _)) = self.cur.take() else {
            return Ok(());
        };
        for path in self.newer_rotated(old.id)? {
            if let Some(src) = Source::open(path)? {
                src.for_each_line(|line| {
                    if let Some(rec) = format::parse(line) {
                        lines.extend(self.asm.push(&rec));
                    }
                })?;
            }
        }
        self.cur = Source::open(current_path(&self.dir))?.map(|src| (src, 0));
        self.read_available(lines)?;
        Ok(())
    }

    /// The rotated files newer than the file `old`, oldest first: those after it when it is
    /// still there, all of them when it was already dropped.
    fn newer_rotated(&self, old: FileId) -> Result<Vec<PathBuf>, LogError> {
        let mut rotated = Vec::new();
        // A rename during the listing can hide `old` for a moment: look again before deciding
        // it was dropped.
        for _ in 0..3 {
            rotated = files::list_rotated(&self.dir)?;
            for (i, (_, path)) in rotated.iter().enumerate() {
                if FileId::of_path(path)? == Some(old) {
                    return Ok(rotated.drain(i + 1..).map(|(_, p)| p).collect());
                }
            }
        }
        Ok(rotated.into_iter().map(|(_, p)| p).collect())
    }

    /// Reads what was appended to the followed file and turns complete records into lines;
    /// returns the number of bytes read.
    fn read_available(&mut self, lines: &mut Vec<LogLine>) -> Result<usize, LogError> {
        let Some((src, pos)) = self.cur.as_mut() else {
            return Ok(0);
        };
        let len = files::metadata(&src.file, &src.path)?.len();
        if len <= *pos {
            return Ok(0);
        }
        let start = self.carry.len();
        let n = (len - *pos).min(READ_MAX) as usize;
        self.carry.resize(start + n, 0);
        src.read_at(&mut self.carry[start..], *pos)?;
        *pos += n as u64;
        let carry = std::mem::take(&mut self.carry);
        let mut done = 0;
        for (i, _) in carry.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            self.push_line(&carry[done..i], lines);
            done = i + 1;
        }
        self.carry = carry;
        self.carry.drain(..done);
        Ok(n)
    }

    fn push_line(&mut self, line: &[u8], lines: &mut Vec<LogLine>) {
        if let Some(rec) = format::parse(line) {
            lines.extend(self.asm.push(&rec));
        }
    }
}
