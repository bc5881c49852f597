//! Tempdir tests of the writer, the readers, the follower and `print` together.

use std::cell::{Cell, RefCell};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000 + secs, 123)
}

fn contents(lines: &[LogLine]) -> Vec<(Stream, String, bool)> {
    lines
        .iter()
        .map(|l| {
            (
                l.stream,
                String::from_utf8_lossy(&l.content).into_owned(),
                l.partial,
            )
        })
        .collect()
}

fn full(stream: Stream, s: &str) -> (Stream, String, bool) {
    (stream, s.to_string(), false)
}

fn records(dir: &Path, file: &str) -> Vec<String> {
    fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn lines_from_both_streams_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs/web");
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"one\ntwo\n", at(1)).unwrap();
    w.write(Stream::Stderr, b"oops\n", at(2)).unwrap();
    w.write(Stream::Stdout, b"three\n", at(3)).unwrap();

    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        records(&dir, "current.log"),
        [
            "2023-11-14T22:13:21.000000123Z stdout F one",
            "2023-11-14T22:13:21.000000123Z stdout F two",
            "2023-11-14T22:13:22.000000123Z stderr F oops",
            "2023-11-14T22:13:23.000000123Z stdout F three",
        ]
    );
    let lines = read_all(&dir).unwrap();
    assert_eq!(
        contents(&lines),
        [
            full(Stream::Stdout, "one"),
            full(Stream::Stdout, "two"),
            full(Stream::Stderr, "oops"),
            full(Stream::Stdout, "three"),
        ]
    );
    assert_eq!(lines[2].time, at(2));
}

#[test]
fn line_split_across_writes_is_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"hel", at(1)).unwrap();
    w.write(Stream::Stderr, b"e", at(1)).unwrap();
    w.write(Stream::Stdout, b"lo wor", at(2)).unwrap();
    assert!(records(tmp.path(), "current.log").is_empty());
    w.write(Stream::Stdout, b"ld\nnext", at(3)).unwrap();
    w.write(Stream::Stderr, b"rr\n", at(3)).unwrap();
    assert_eq!(
        records(tmp.path(), "current.log"),
        [
            "2023-11-14T22:13:23.000000123Z stdout F hello world",
            "2023-11-14T22:13:23.000000123Z stderr F err",
        ]
    );
    // EOF without a newline: a P record, read back as an unfinished line.
    w.flush_partial(Stream::Stdout, at(4)).unwrap();
    w.flush_partial(Stream::Stderr, at(4)).unwrap();
    let lines = read_all(tmp.path()).unwrap();
    assert_eq!(
        contents(&lines),
        [
            full(Stream::Stdout, "hello world"),
            full(Stream::Stderr, "err"),
            (Stream::Stdout, "next".to_string(), true),
        ]
    );
}

#[test]
fn long_line_becomes_partial_records_and_reads_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    let long: Vec<u8> = (0..40 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    // In uneven pieces, with a stderr line in the middle.
    w.write(Stream::Stdout, &long[..1000], at(1)).unwrap();
    w.write(Stream::Stdout, &long[1000..20_000], at(1)).unwrap();
    w.write(Stream::Stderr, b"between\n", at(2)).unwrap();
    w.write(Stream::Stdout, &long[20_000..], at(3)).unwrap();
    w.write(Stream::Stdout, b"\nshort\n", at(3)).unwrap();

    let recs = records(tmp.path(), "current.log");
    let tags: Vec<&str> = recs
        .iter()
        .map(|r| r.split(' ').take(3).last().unwrap())
        .collect();
    assert_eq!(tags, ["P", "F", "P", "F", "F"]);
    assert!(recs[0].contains(" stdout P "));
    assert!(recs[1].contains(" stderr F between"));
    assert_eq!(
        recs[0].len() - "2023-11-14T22:13:21.000000123Z stdout P ".len(),
        MAX_LINE
    );
    assert_eq!(
        recs[3].len() - "2023-11-14T22:13:23.000000123Z stdout F ".len(),
        40 * 1024 - 2 * MAX_LINE
    );

    let lines = read_all(tmp.path()).unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(contents(&lines[..1]), [full(Stream::Stderr, "between")]);
    assert_eq!(lines[1].content, long);
    assert_eq!(
        lines[1].time,
        at(1),
        "a joined line has its first piece's time"
    );
    assert!(!lines[1].partial);
    assert_eq!(contents(&lines[2..]), [full(Stream::Stdout, "short")]);

    // tail joins the pieces too.
    let last = tail(tmp.path(), 2).unwrap();
    assert_eq!(last[0].content, long);
    assert_eq!(last[1].content, b"short");
}

#[test]
fn line_of_exactly_max_len_is_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    let line = vec![b'x'; MAX_LINE];
    w.write(Stream::Stdout, &line, at(1)).unwrap();
    w.write(Stream::Stdout, b"\n", at(1)).unwrap();
    let recs = records(tmp.path(), "current.log");
    assert_eq!(recs.len(), 1);
    assert!(recs[0].contains(" stdout F xxx"));
}

#[test]
fn rotation_keeps_max_files_and_the_newest_content() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 200,
        max_files: 3,
    };
    let mut w = LogWriter::open(tmp.path(), cfg).unwrap();
    // Each record is 50 bytes: 4 per file.
    for i in 0..40 {
        w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes(), at(i))
            .unwrap();
    }
    assert_eq!(log_files(tmp.path()), ["1.log", "2.log", "current.log"]);
    for f in ["1.log", "2.log", "current.log"] {
        assert!(fs::metadata(tmp.path().join(f)).unwrap().len() <= 200);
    }
    let lines = read_all(tmp.path()).unwrap();
    let got: Vec<String> = contents(&lines).into_iter().map(|(_, s, _)| s).collect();
    let want: Vec<String> = (28..40).map(|i| format!("line {i:04}")).collect();
    assert_eq!(got, want);

    // Fewer files in a new config: the extra old ones go at the next rotation.
    drop(w);
    let mut w = LogWriter::open(
        tmp.path(),
        LogConfig {
            max_size: 200,
            max_files: 1,
        },
    )
    .unwrap();
    w.write(Stream::Stdout, b"line 0040\nline 0041\n", at(40))
        .unwrap();
    assert_eq!(log_files(tmp.path()), ["current.log"]);
    let got = contents(&read_all(tmp.path()).unwrap());
    assert_eq!(got.last().unwrap().1, "line 0041");
}

#[test]
fn tail_across_rotated_files() {
    let tmp = tempfile::tempdir().unwrap();
    // 3 records of 50 bytes per file: 11 lines fill 4 files.
    let cfg = LogConfig {
        max_size: 150,
        max_files: 4,
    };
    let mut w = LogWriter::open(tmp.path(), cfg).unwrap();
    for i in 0..11 {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        w.write(stream, format!("line {i:04}\n").as_bytes(), at(i))
            .unwrap();
    }
    assert_eq!(log_files(tmp.path()).len(), 4);
    let names = |lines: Vec<LogLine>| -> Vec<String> {
        contents(&lines).into_iter().map(|(_, s, _)| s).collect()
    };
    assert_eq!(
        names(tail(tmp.path(), 5).unwrap()),
        [
            "line 0006",
            "line 0007",
            "line 0008",
            "line 0009",
            "line 0010"
        ]
    );
    assert_eq!(names(tail(tmp.path(), 1).unwrap()), ["line 0010"]);
    assert!(tail(tmp.path(), 0).unwrap().is_empty());
    assert_eq!(
        tail(tmp.path(), 100).unwrap(),
        read_all(tmp.path()).unwrap()
    );
    assert_eq!(tail(tmp.path(), 100).unwrap().len(), 11);
}

#[test]
fn tail_keeps_whole_lines_when_streams_interleave() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    let long = vec![b'L'; MAX_LINE + 10];
    w.write(Stream::Stdout, b"old\n", at(0)).unwrap();
    w.write(Stream::Stdout, &long, at(1)).unwrap(); // P piece written, 10 bytes buffered
    w.write(Stream::Stderr, b"e1\n", at(2)).unwrap();
    w.write(Stream::Stdout, b"\n", at(3)).unwrap(); // F piece
    w.write(Stream::Stderr, b"e2\n", at(4)).unwrap();
    w.write(Stream::Stdout, b"dangling", at(5)).unwrap();
    w.flush_partial(Stream::Stdout, at(5)).unwrap();

    let last = tail(tmp.path(), 3).unwrap();
    assert_eq!(last.len(), 3);
    assert_eq!(last[0].content, long);
    assert_eq!(
        contents(&last[1..]),
        [
            full(Stream::Stderr, "e2"),
            (Stream::Stdout, "dangling".into(), true)
        ]
    );
    let last = tail(tmp.path(), 4).unwrap();
    assert_eq!(contents(&last[..1]), [full(Stream::Stderr, "e1")]);
}

#[test]
fn reopening_closes_an_unfinished_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"no newline", at(1)).unwrap();
    w.flush_partial(Stream::Stdout, at(1)).unwrap();
    drop(w);
    // A crash in the middle of a record, too.
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join("current.log"))
        .unwrap()
        .write_all(b"2023-11-14T22:13:21.000000123Z stderr F torn")
        .unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"restarted\n", at(2)).unwrap();
    // The unfinished line ends with the empty F record written by the second open, after
    // the torn record: lines come in the order they were finished.
    let recs = records(tmp.path(), "current.log");
    assert_eq!(recs.len(), 4);
    assert!(recs[2].ends_with(" stdout F "), "{recs:?}");
    let lines = read_all(tmp.path()).unwrap();
    assert_eq!(
        contents(&lines),
        [
            full(Stream::Stderr, "torn"),
            full(Stream::Stdout, "no newline"),
            full(Stream::Stdout, "restarted"),
        ]
    );
}

#[test]
fn non_utf8_line_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    let bytes = b"\xff\xfe caf\xc3\xa9 \x00\x1b[31m \r tab\t\x80";
    let mut data = bytes.to_vec();
    data.push(b'\n');
    w.write(Stream::Stderr, &data, at(1)).unwrap();
    let lines = read_all(tmp.path()).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].content, bytes);
    assert_eq!(tail(tmp.path(), 1).unwrap()[0].content, bytes);

    let (mut out, mut err) = (Vec::new(), Vec::new());
    print(
        tmp.path(),
        PrintOptions::default(),
        &mut out,
        &mut err,
        &|| true,
    )
    .unwrap();
    assert!(out.is_empty());
    assert_eq!(err, data);
}

#[test]
fn missing_dir_reads_as_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nope");
    assert!(read_all(&dir).unwrap().is_empty());
    assert!(tail(&dir, 3).unwrap().is_empty());
    let mut f = Follower::new(&dir).unwrap();
    assert!(f.poll().unwrap().is_empty());
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"first\n", at(1)).unwrap();
    assert_eq!(
        contents(&f.poll().unwrap()),
        [full(Stream::Stdout, "first")]
    );
}

#[test]
fn follow_sees_appended_lines_and_survives_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 200,
        max_files: 4,
    };
    let mut w = LogWriter::open(tmp.path(), cfg).unwrap();
    w.write(Stream::Stdout, b"before\n", at(0)).unwrap();
    let mut f = Follower::new(tmp.path()).unwrap();
    assert!(f.poll().unwrap().is_empty());

    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut i = 0;
    // 50-byte records, 4 per file: one line per poll, then a rotation between polls, then two
    // rotations between polls.
    for batch in [1, 1, 1, 1, 4, 9, 1] {
        for _ in 0..batch {
            let line = format!("line {i:04}");
            w.write(Stream::Stdout, format!("{line}\n").as_bytes(), at(i))
                .unwrap();
            want.push(line);
            i += 1;
        }
        got.extend(contents(&f.poll().unwrap()).into_iter().map(|(_, s, _)| s));
        got.extend(contents(&f.poll().unwrap()).into_iter().map(|(_, s, _)| s));
    }
    assert!(fs::metadata(tmp.path().join("2.log")).is_ok(), "rotated");
    assert_eq!(got, want);

    // Pieces of a long line arrive in separate polls and come out as one line.
    let long = vec![b'z'; MAX_LINE * 2 + 5];
    w.write(Stream::Stderr, &long[..MAX_LINE + 1], at(50))
        .unwrap();
    assert!(f.poll().unwrap().is_empty());
    w.write(Stream::Stderr, &long[MAX_LINE + 1..], at(51))
        .unwrap();
    w.write(Stream::Stderr, b"\n", at(51)).unwrap();
    let lines = f.poll().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].content, long);
}

#[test]
fn follow_after_its_file_was_dropped_goes_on_without_repeats() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 200,
        max_files: 2,
    };
    let mut w = LogWriter::open(tmp.path(), cfg).unwrap();
    w.write(Stream::Stdout, b"line 0000\n", at(0)).unwrap();
    let mut f = Follower::new(tmp.path()).unwrap();
    for i in 1..30 {
        w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes(), at(i))
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(contents(&f.poll().unwrap()).into_iter().map(|(_, s, _)| s));
    }
    // The rest of the followed file, then (the files between were dropped) what is left, once
    // and in order.
    let want: Vec<String> = (1..4)
        .chain(24..30)
        .map(|i| format!("line {i:04}"))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn follow_shows_an_unfinished_line_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), LogConfig::default()).unwrap();
    let mut f = Follower::new(tmp.path()).unwrap();
    w.write(Stream::Stdout, b"exiting without a newline", at(1))
        .unwrap();
    w.flush_partial(Stream::Stdout, at(1)).unwrap();
    assert!(f.poll().unwrap().is_empty());
    std::thread::sleep(PARTIAL_GRACE + Duration::from_millis(50));
    assert_eq!(
        contents(&f.poll().unwrap()),
        [(Stream::Stdout, "exiting without a newline".into(), true)]
    );
}

#[test]
fn follow_with_a_single_file_survives_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 120,
        max_files: 1,
    };
    let mut w = LogWriter::open(tmp.path(), cfg).unwrap();
    let mut f = Follower::new(tmp.path()).unwrap();
    let mut got = Vec::new();
    for i in 0..10 {
        w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes(), at(i))
            .unwrap();
        got.extend(contents(&f.poll().unwrap()).into_iter().map(|(_, s, _)| s));
        got.extend(contents(&f.poll().unwrap()).into_iter().map(|(_, s, _)| s));
    }
    let want: Vec<String> = (0..10).map(|i| format!("line {i:04}")).collect();
    assert_eq!(got, want);
}

#[test]
fn print_splits_streams_tails_and_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"a\nb\n", at(1)).unwrap();
    w.write(Stream::Stderr, b"e\n", at(2)).unwrap();
    w.write(Stream::Stdout, b"c\n", at(3)).unwrap();

    let (mut out, mut err) = (Vec::new(), Vec::new());
    let opts = PrintOptions {
        follow: false,
        tail: Some(2),
        timestamps: true,
        ..PrintOptions::default()
    };
    print(&dir, opts, &mut out, &mut err, &|| false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2023-11-14T22:13:23.000000123Z c\n"
    );
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "2023-11-14T22:13:22.000000123Z e\n"
    );

    // Following: the writer runs while print polls; stop once the last line was printed.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let polls = Cell::new(0);
    let w = RefCell::new(w);
    let stop = || {
        polls.set(polls.get() + 1);
        match polls.get() {
            2 => w.borrow_mut().write(Stream::Stdout, b"d\n", at(4)).unwrap(),
            3 => w.borrow_mut().write(Stream::Stderr, b"f\n", at(5)).unwrap(),
            _ => {}
        }
        polls.get() > 4
    };
    let opts = PrintOptions {
        follow: true,
        tail: Some(1),
        timestamps: false,
        ..PrintOptions::default()
    };
    print(&dir, opts, &mut out, &mut err, &stop).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "c\nd\n");
    assert_eq!(String::from_utf8(err).unwrap(), "f\n");

    // --since and --until: by the time each line was written.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let opts = PrintOptions {
        since: Some(at(2)),
        until: Some(at(4)),
        ..PrintOptions::default()
    };
    print(&dir, opts, &mut out, &mut err, &|| false).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "c\n");
    assert_eq!(String::from_utf8(err).unwrap(), "e\n");
}
