//! The writer side, used only by the container's monitor: splits output into CRI records,
//! appends them to `current.log` and rotates by size.
//!
//! Writes are plain `write_all` calls on a regular file (no fsync per line), so nothing a reader
//! does can block the container. The writer keeps at most [`MAX_LINE`] bytes of an unfinished
//! line per stream; beyond that the line goes out as `P` pieces.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::files::{self, current_path, rotated_path};
use super::format::{self, encode, encoded_len};
use super::{LogError, Stream, MAX_LINE};

/// Rotation settings: the supervisor config's `[logs]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `current.log` is rotated before a record would take it past this many bytes
    /// (a single record bigger than this still gets written, alone in its file).
    pub max_size: u64,
    /// Files kept, `current.log` included; 0 counts as 1.
    pub max_files: u32,
}

impl Default for LogConfig {
    /// 10 MiB per file, 3 files.
    fn default() -> Self {
        LogConfig {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// How much of the end of an existing `current.log` [`LogWriter::open`] checks for a line left
/// unfinished by the previous writer.
const REPAIR_WINDOW: u64 = 64 * 1024;

/// Records are written out once this many bytes are pending, and at the end of each call.
const OUT_CHUNK: usize = 64 * 1024;

/// Appends one container's output to its log directory.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    cfg: LogConfig,
    file: File,
    /// Bytes in `current.log` (written by this writer or before it).
    size: u64,
    /// The unfinished line of each stream (indexed by `Stream::index`).
    partial: [Vec<u8>; 2],
    /// Encoded records not yet written.
    out: Vec<u8>,
}

impl LogWriter {
    /// Opens `dir/current.log` for appending, creating `dir` (mode 0700) and the file (0600) when
    /// missing: logs survive container restarts. A line the previous writer left unfinished
    /// (`P` as its stream's last record, or a record cut short by a crash) is closed first, so
    /// the new output does not join it.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<LogWriter, LogError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LogError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        let path = current_path(dir);
        let file = open_append(&path)?;
        let size = files::metadata(&file, &path)?.len();
        let mut w = LogWriter {
            dir: dir.to_path_buf(),
            path,
            cfg,
            file,
            size,
            partial: [Vec::new(), Vec::new()],
            out: Vec::new(),
        };
        w.close_unfinished(SystemTime::now())?;
        Ok(w)
    }

    /// Records `data` read from `stream` at `now`: each complete line becomes an `F` record (or
    /// `P` pieces and an `F`); an unfinished trailing line is kept for the next call.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> Result<(), LogError> {
        let ts = format::timestamp(now);
        let i = stream.index();
        let mut data = data;
        while !data.is_empty() {
            let room = MAX_LINE - self.partial[i].len();
            if room == 0 {
                // A full buffer: the next byte says whether this was the whole line.
                let ends = data[0] == b'\n';
                self.emit_partial_buffer(&ts, stream, !ends)?;
                if ends {
                    data = &data[1..];
                }
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) if pos <= room => {
                    if self.partial[i].is_empty() {
                        self.emit(&ts, stream, false, &data[..pos])?;
                    } else {
                        self.partial[i].extend_from_slice(&data[..pos]);
                        self.emit_partial_buffer(&ts, stream, false)?;
                    }
                    data = &data[pos + 1..];
                }
                _ => {
                    let take = room.min(data.len());
                    self.partial[i].extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
            }
            if self.out.len() >= OUT_CHUNK {
                self.write_out()?;
            }
        }
        self.write_out()
    }

    /// Writes out the unfinished line of `stream` as a `P` record: call it when the stream
    /// reaches EOF (CRI marks output that ended without a newline as partial).
    pub fn flush_partial(&mut self, stream: Stream, now: SystemTime) -> Result<(), LogError> {
        if !self.partial[stream.index()].is_empty() {
            let ts = format::timestamp(now);
            self.emit_partial_buffer(&ts, stream, true)?;
        }
        self.write_out()
    }

    /// The directory this writer writes to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Emits the buffered line of `stream` as one record and empties the buffer.
    fn emit_partial_buffer(
        &mut self,
        ts: &str,
        stream: Stream,
        partial: bool,
    ) -> Result<(), LogError> {
        let mut buf = std::mem::take(&mut self.partial[stream.index()]);
        let result = self.emit(ts, stream, partial, &buf);
        buf.clear();
        self.partial[stream.index()] = buf;
        result
    }

    /// Queues one record, rotating first when it would take `current.log` past `max_size`.
    fn emit(
        &mut self,
        ts: &str,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> Result<(), LogError> {
        let len = encoded_len(ts, stream, content) as u64;
        let used = self.size + self.out.len() as u64;
        if used > 0 && used + len > self.cfg.max_size {
            self.write_out()?;
            self.rotate()?;
        }
        encode(&mut self.out, ts, stream, partial, content);
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), LogError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.out);
        let len = self.out.len() as u64;
        self.out.clear();
        match result {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(source) => {
                // Part of it may have been written: trust the file again.
                if let Ok(md) = self.file.metadata() {
                    self.size = md.len();
                }
                Err(LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// current.log -> 1.log -> 2.log ..., dropping files beyond `max_files`, then a new
    /// current.log. With `max_files` 1 the old current.log is simply removed.
    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.cfg.max_files.max(1);
        for (n, path) in files::list_rotated(&self.dir)? {
            if n >= keep - 1 {
                remove_file(&path)?;
            }
        }
        for n in (1..keep.saturating_sub(1)).rev() {
            let from = rotated_path(&self.dir, n);
            let to = rotated_path(&self.dir, n + 1);
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Rotate { from, to, source }),
            }
        }
        if keep == 1 {
            remove_file(&self.path)?;
        } else {
            let to = rotated_path(&self.dir, 1);
            fs::rename(&self.path, &to).map_err(|source| LogError::Rotate {
                from: self.path.clone(),
                to,
                source,
            })?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Closes lines the previous writer left unfinished at the end of `current.log`: appends a
    /// newline when the file ends inside a record, and an empty `F` record for each stream whose
    /// last record (within the last [`REPAIR_WINDOW`] bytes) is a `P` piece.
    fn close_unfinished(&mut self, now: SystemTime) -> Result<(), LogError> {
        if self.size == 0 {
            return Ok(());
        }
        let start = self.size.saturating_sub(REPAIR_WINDOW);
        let mut tail = vec![0; (self.size - start) as usize];
        self.file
            .read_exact_at(&mut tail, start)
            .map_err(|source| LogError::Read {
                path: self.path.clone(),
                source,
            })?;
        if tail.last() != Some(&b'\n') {
            self.out.push(b'\n');
        }
        let mut lines = tail.split(|&b| b == b'\n');
        if start > 0 {
            lines.next(); // cut by the window
        }
        let mut open = [false; 2];
        for rec in lines.filter_map(format::parse) {
            open[rec.stream.index()] = rec.partial;
        }
        let ts = format::timestamp(now);
        for stream in Stream::ALL {
            if open[stream.index()] {
                self.emit(&ts, stream, false, b"")?;
            }
        }
        self.write_out()
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn remove_file(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}
