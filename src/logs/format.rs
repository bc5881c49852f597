//! The on-disk record format (Kubernetes CRI logs): encoding and parsing one record line.
//!
//! `<timestamp> <stream> <tag> <content>\n`, where the timestamp is RFC3339 in UTC with nine
//! fraction digits, the stream is `stdout` or `stderr` and the tag is `F` (the final or only piece
//! of a line) or `P` (a piece of a longer line, or output that ended without a newline). The
//! content is raw bytes: it is not required to be UTF-8 and never contains `\n`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest content of one record; longer lines are cut into `P` pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// The name used in records: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Stream> {
        match b {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed record, borrowing its content from the line it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub time: SystemTime,
    pub stream: Stream,
    /// `P`: more pieces of the same line follow (or the stream ended without a newline).
    pub partial: bool,
    pub content: &'a [u8],
}

/// The last instant humantime can format (the end of year 9999).
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999)
}

/// `2024-05-01T12:00:00.000000001Z`: RFC3339 in UTC with nine fraction digits, as CRI writes.
/// Times outside 1970..=9999 are clamped (humantime cannot format them).
pub fn timestamp(time: SystemTime) -> String {
    let time = time.clamp(UNIX_EPOCH, latest());
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Appends one record line (with its newline) to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, ts: &str, stream: Stream, partial: bool, content: &[u8]) {
    out.reserve(encoded_len(ts, stream, content));
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// The length of the record `encode` writes.
pub(crate) fn encoded_len(ts: &str, stream: Stream, content: &[u8]) -> usize {
    ts.len() + 1 + stream.as_str().len() + 3 + content.len() + 1
}

/// Parses one record line (without its `\n`); `None` when it is not a record.
pub(crate) fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(fields.next()?).ok()?;
    let time = humantime::parse_rfc3339(ts).ok()?;
    let stream = Stream::from_bytes(fields.next()?)?;
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    // "<ts> <stream> <tag>" without the separator is an empty piece.
    let content = fields.next().unwrap_or_default();
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        let ts = timestamp(t);
        assert_eq!(ts, "2023-11-14T22:13:20.000000042Z");
        let mut out = Vec::new();
        encode(&mut out, &ts, Stream::Stderr, true, b"a b\xff");
        assert_eq!(out, b"2023-11-14T22:13:20.000000042Z stderr P a b\xff\n");
        assert_eq!(out.len(), encoded_len(&ts, Stream::Stderr, b"a b\xff"));
        let rec = parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            rec,
            Record {
                time: t,
                stream: Stream::Stderr,
                partial: true,
                content: b"a b\xff"
            }
        );
    }

    #[test]
    fn parse_rejects_garbage_and_accepts_empty_content() {
        assert!(parse(b"").is_none());
        assert!(parse(b"hello world").is_none());
        assert!(parse(b"2023-11-14T22:13:20Z stdin F x").is_none());
        assert!(parse(b"2023-11-14T22:13:20Z stdout X x").is_none());
        let rec = parse(b"2023-11-14T22:13:20Z stdout F").unwrap();
        assert_eq!(rec.content, b"");
        let rec = parse(b"2023-11-14T22:13:20Z stdout F ").unwrap();
        assert_eq!(rec.content, b"");
    }

    #[test]
    fn timestamp_clamps_out_of_range_times() {
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999999999Z"
        );
    }
}
