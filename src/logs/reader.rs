//! Reading a log directory back: all lines in order across rotated files, or the last N lines,
//! with the `P` pieces of long lines joined into one line.
//!
//! Readers open every file first (a [`Snapshot`]) and then read through those descriptors, so a
//! rotation while reading neither loses nor repeats lines. Records that do not parse (a file
//! cut short by a crash) are skipped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::files::{self, current_path, FileId};
use super::format::{self, Record};
use super::{LogError, Stream};

/// One line of container output as read back from the log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the line's first piece was written.
    pub time: SystemTime,
    pub stream: Stream,
    /// The line never got its final piece: the stream ended without a newline (or the writer
    /// stopped mid-line). Printed without a trailing newline.
    pub partial: bool,
    /// The line without its newline; raw bytes, not necessarily UTF-8.
    pub content: Vec<u8>,
}

/// Reads in chunks of this size.
const CHUNK: usize = 64 * 1024;

/// Every line in `dir`, oldest first, across the rotated files and `current.log`. A missing
/// directory has no lines. Lines still unfinished at the end come last, with `partial` set.
pub fn read_all(dir: &Path) -> Result<Vec<LogLine>, LogError> {
    let snap = Snapshot::take(dir)?;
    let mut asm = Assembler::default();
    let mut lines = history(&snap, None, &mut asm)?;
    lines.extend(asm.finish());
    Ok(lines)
}

/// The last `n` lines in `dir` (fewer when there are not that many), oldest first. Reads the
/// files backwards from the end and stops once it has them.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<LogLine>, LogError> {
    let snap = Snapshot::take(dir)?;
    let mut asm = Assembler::default();
    let mut lines = history(&snap, Some(n), &mut asm)?;
    lines.extend(asm.finish());
    Ok(lines)
}

/// The lines of `snap` (all, or the last `tail`), leaving unfinished lines in `asm`.
pub(crate) fn history(
    snap: &Snapshot,
    tail: Option<usize>,
    asm: &mut Assembler,
) -> Result<Vec<LogLine>, LogError> {
    let mut lines = Vec::new();
    match tail {
        None => {
            for src in snap.sources() {
                src.for_each_line(|line| {
                    if let Some(rec) = format::parse(line) {
                        lines.extend(asm.push(&rec));
                    }
                })?;
            }
        }
        Some(n) => {
            for rec in last_records(snap, n)? {
                lines.extend(asm.push(&rec.as_record()));
            }
        }
    }
    Ok(lines)
}

/// The records that make up the last `n` lines, oldest first. Walking backwards, a stream's
/// line ends at each `F` record and at its very last record (an unfinished line); once `n`
/// lines have ended, a stream is done at its next line end.
fn last_records(snap: &Snapshot, n: usize) -> Result<Vec<OwnedRecord>, LogError> {
    let mut recs = Vec::new();
    if n == 0 {
        return Ok(recs);
    }
    let mut seen = [false; 2];
    let mut done = [false; 2];
    let mut ended = 0;
    'files: for src in snap.sources().rev() {
        let mut lines = RevLines::new(src);
        while let Some(line) = lines.next_line()? {
            let Some(rec) = format::parse(&line) else {
                continue;
            };
            let i = rec.stream.index();
            if done[i] {
                continue;
            }
            let ends_line = !rec.partial || !seen[i];
            seen[i] = true;
            if ends_line {
                if ended == n {
                    done[i] = true;
                    if done.iter().all(|&d| d) {
                        break 'files;
                    }
                    continue;
                }
                ended += 1;
                if ended == n {
                    // A stream with no line among the last n has nothing more to add.
                    for s in 0..2 {
                        done[s] |= !seen[s];
                    }
                }
            }
            recs.push(OwnedRecord::from(&rec));
        }
    }
    recs.reverse();
    Ok(recs)
}

#[derive(Debug)]
struct OwnedRecord {
    time: SystemTime,
    stream: Stream,
    partial: bool,
    content: Vec<u8>,
}

impl OwnedRecord {
    fn from(rec: &Record<'_>) -> OwnedRecord {
        OwnedRecord {
            time: rec.time,
            stream: rec.stream,
            partial: rec.partial,
            content: rec.content.to_vec(),
        }
    }

    fn as_record(&self) -> Record<'_> {
        Record {
            time: self.time,
            stream: self.stream,
            partial: self.partial,
            content: &self.content,
        }
    }
}

/// Joins the `P` pieces of each stream's lines.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    pending: [Option<Pending>; 2],
}

#[derive(Debug)]
struct Pending {
    time: SystemTime,
    content: Vec<u8>,
    /// When the first piece arrived here (for `take_stale`).
    since: Instant,
}

impl Assembler {
    /// Adds one record; returns the line it completes.
    pub fn push(&mut self, rec: &Record<'_>) -> Option<LogLine> {
        let slot = &mut self.pending[rec.stream.index()];
        let mut p = slot.take().unwrap_or_else(|| Pending {
            time: rec.time,
            content: Vec::new(),
            since: Instant::now(),
        });
        p.content.extend_from_slice(rec.content);
        if rec.partial {
            *slot = Some(p);
            return None;
        }
        Some(LogLine {
            time: p.time,
            stream: rec.stream,
            partial: false,
            content: p.content,
        })
    }

    /// The unfinished lines, as `partial` lines, oldest first.
    pub fn finish(&mut self) -> Vec<LogLine> {
        self.take_if(|_| true)
    }

    /// The unfinished lines whose first piece arrived at least `age` ago.
    pub fn take_stale(&mut self, age: Duration) -> Vec<LogLine> {
        self.take_if(|p| p.since.elapsed() >= age)
    }

    fn take_if(&mut self, pred: impl Fn(&Pending) -> bool) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for stream in Stream::ALL {
            let slot = &mut self.pending[stream.index()];
            if slot.as_ref().is_some_and(&pred) {
                let p = slot.take().expect("checked above");
                lines.push(LogLine {
                    time: p.time,
                    stream,
                    partial: true,
                    content: p.content,
                });
            }
        }
        lines.sort_by_key(|l| l.time);
        lines
    }
}

/// One opened log file and how much of it belongs to the snapshot.
#[derive(Debug)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub file: File,
    pub id: FileId,
    /// Bytes to read; for `current.log`, up to the end of its last complete record.
    pub len: u64,
}

impl Source {
    pub fn open(path: PathBuf) -> Result<Option<Source>, LogError> {
        let Some(file) = files::open_existing(&path)? else {
            return Ok(None);
        };
        let md = files::metadata(&file, &path)?;
        Ok(Some(Source {
            id: FileId::of(&md),
            len: md.len(),
            path,
            file,
        }))
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), LogError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| LogError::Read {
                path: self.path.clone(),
                source,
            })
    }

    /// Calls `f` with each line of the first `len` bytes (without the `\n`; the last line may
    /// lack one).
    pub fn for_each_line(&self, mut f: impl FnMut(&[u8])) -> Result<(), LogError> {
        let mut carry: Vec<u8> = Vec::new();
        let mut pos = 0;
        let mut chunk = vec![0; CHUNK];
        while pos < self.len {
            let want = CHUNK.min((self.len - pos) as usize);
            self.read_at(&mut chunk[..want], pos)?;
            pos += want as u64;
            let data = &chunk[..want];
            let mut start = 0;
            for (i, _) in data.iter().enumerate().filter(|(_, &b)| b == b'\n') {
                if carry.is_empty() {
                    f(&data[start..i]);
                } else {
                    carry.extend_from_slice(&data[start..i]);
                    f(&carry);
                    carry.clear();
                }
                start = i + 1;
            }
            carry.extend_from_slice(&data[start..]);
        }
        if !carry.is_empty() {
            f(&carry);
        }
        Ok(())
    }

    /// Shortens `len` to just after its last `\n`: the writer may be in the middle of a record.
    pub fn trim_to_last_newline(&mut self) -> Result<(), LogError> {
        let mut end = self.len;
        let mut chunk = vec![0; CHUNK];
        while end > 0 {
            let start = end.saturating_sub(CHUNK as u64);
            let buf = &mut chunk[..(end - start) as usize];
            self.read_at(buf, start)?;
            if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
                self.len = start + i as u64 + 1;
                return Ok(());
            }
            end = start;
        }
        self.len = 0;
        Ok(())
    }
}

/// The lines of a `Source`, last first.
struct RevLines<'a> {
    src: &'a Source,
    /// Bytes before `pos` are not read yet.
    pos: u64,
    /// Read but not yet returned: `[pos, pos + buf.len())`.
    buf: Vec<u8>,
}

impl<'a> RevLines<'a> {
    fn new(src: &'a Source) -> RevLines<'a> {
        RevLines {
            src,
            pos: src.len,
            buf: Vec::new(),
        }
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, LogError> {
        loop {
            if let Some(i) = self.buf.iter().rposition(|&b| b == b'\n') {
                let line = self.buf.split_off(i + 1);
                self.buf.truncate(i);
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.pos == 0 {
                return Ok(if self.buf.is_empty() {
                    None
                } else {
                    Some(std::mem::take(&mut self.buf))
                });
            }
            let start = self.pos.saturating_sub(CHUNK as u64);
            let mut chunk = vec![0; (self.pos - start) as usize];
            self.src.read_at(&mut chunk, start)?;
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            self.pos = start;
        }
    }
}

/// Every file of a log directory, opened at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Rotated files, oldest first.
    pub rotated: Vec<Source>,
    pub current: Option<Source>,
}

impl Snapshot {
    /// Opens `current.log` and then the rotated files; when a rotation happened in between
    /// (a rotated file turns out to be the `current.log` just opened, or one vanished), tries
    /// again a few times.
    pub fn take(dir: &Path) -> Result<Snapshot, LogError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut current = Source::open(current_path(dir))?;
            let mut rotated = Vec::new();
            let mut raced = false;
            for (_, path) in files::list_rotated(dir)? {
                match Source::open(path)? {
                    Some(src) if current.as_ref().is_some_and(|c| c.id == src.id) => {
                        raced = true;
                        break;
                    }
                    Some(src) => rotated.push(src),
                    None => {
                        raced = true;
                        break;
                    }
                }
            }
            if !raced || attempt >= 5 {
                if let Some(cur) = current.as_mut() {
                    cur.trim_to_last_newline()?;
                }
                return Ok(Snapshot { rotated, current });
            }
        }
    }

    /// Oldest first.
    pub fn sources(&self) -> impl DoubleEndedIterator<Item = &Source> {
        self.rotated.iter().chain(self.current.iter())
    }
}
