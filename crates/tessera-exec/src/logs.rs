//! A job's output read back in the order it was written.
//!
//! The supervisor (`output`) keeps every rank's stdout and stderr in files of their own and,
//! beside them, the **order index** [`INDEX_FILE`]: an 8-byte header, then one 24-byte record
//! per read burst, in the order the bursts were read — which log, where in it, how many bytes,
//! and the wall-clock time in milliseconds. Every run of a job appends to the same logs and the
//! same index. The order is as exact as the reads: bytes a rank wrote to both pipes between two
//! reads of the supervisor (normally well under a millisecond) come stdout first.
//!
//! **Reading.** [`read_output`] walks the index from a [`LogCursor`], keeping the records of the
//! selected ranks and streams, and returns [`LogPiece`]s of at most `max_bytes` in all and the
//! cursor to go on from. Bytes of a log no record covers (output of a supervisor from before the
//! index, or after the index failed) are shown where they are in their own log: before the next
//! record of that log, and, once the job has ended (or when there is no index at all), at the end
//! in rank and stream order. A damaged index (a foreign header, a record beyond its log) never
//! fails a read: what the logs hold is shown, in their own order. A log or index that is a
//! symlink does (the supervisor never makes one: it is not followed).
//!
//! [`tail_cursor`] finds the cursor from which the last N lines of the same view start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::ExecError;
use crate::spec::JobSpec;
use crate::status::{LogStream, SPEC_FILE, log_path, read_json};

/// The order index, beside the logs in the output directory.
pub const INDEX_FILE: &str = "output.index";
/// The index's first bytes (a version: a different layout gets a different header).
pub(crate) const INDEX_HEADER: &[u8; 8] = b"tsxord1\n";
/// The size of one record.
pub(crate) const RECORD_LEN: usize = 24;
/// Records read from the index at once.
const RECORD_BLOCK: usize = 4096;
/// Bytes read from a log at once.
const DATA_BLOCK: usize = 64 * 1024;
/// Index records one [`read_output`] looks at, at most (the records of other ranks or streams
/// cost time but no bytes): the rest is for the next call.
const RECORDS_PER_READ: u64 = 1 << 20;

/// One read burst of one rank's stream, as the index stores it (little-endian: offset u64,
/// time u64, length u32, rank << 1 | stderr u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) rank: u32,
    pub(crate) stream: LogStream,
    /// Where the burst starts in the stream's log.
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// When it was read, in milliseconds since the Unix epoch.
    pub(crate) time_ms: u64,
}

impl Record {
    /// The largest rank a record can name.
    pub(crate) const MAX_RANK: u32 = u32::MAX >> 1;

    pub(crate) fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.len))
    }

    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.time_ms.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        let tag = (self.rank.min(Self::MAX_RANK) << 1) | u32::from(self.stream == LogStream::Stderr);
        b[20..24].copy_from_slice(&tag.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; RECORD_LEN]) -> Record {
        let u64_at =
            |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let tag = u32_at(20);
        Record {
            rank: tag >> 1,
            stream: if tag & 1 == 1 { LogStream::Stderr } else { LogStream::Stdout },
            offset: u64_at(0),
            len: u32_at(16),
            time_ms: u64_at(8),
        }
    }
}

/// Which output to read: one rank or all, and which streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSelect {
    /// `None`: every rank of the job.
    pub rank: Option<u32>,
    pub stdout: bool,
    pub stderr: bool,
}

impl LogSelect {
    /// Both streams of every rank.
    pub const ALL: LogSelect = LogSelect { rank: None, stdout: true, stderr: true };

    fn streams(&self) -> impl Iterator<Item = LogStream> {
        [(self.stdout, LogStream::Stdout), (self.stderr, LogStream::Stderr)].into_iter().filter(|s| s.0).map(|s| s.1)
    }
}

/// Where a read goes on: every index record before `record` has been shown, and of each log
/// (rank, stream) the bytes before `done`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub record: u64,
    pub done: BTreeMap<(u32, LogStream), u64>,
}

/// Bytes of one rank's stream, written at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece {
    pub rank: u32,
    pub stream: LogStream,
    /// When the supervisor read them (milliseconds since the Unix epoch); `None` for bytes no
    /// index record covers.
    pub time_ms: Option<u64>,
    pub data: Vec<u8>,
}

/// What [`read_output`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub pieces: Vec<LogPiece>,
    /// Where to read on from.
    pub next: LogCursor,
    /// The read stopped at its size limit: more is there now.
    pub more: bool,
}

/// Reads the selected output from `from`, in the order it was written: at most `max_bytes` of
/// it. `ended`: the job has ended, so no index record will come for bytes not covered yet (they
/// are shown at the end). `job_dir` is any run's directory of the job (they share their logs).
pub fn read_output(
    job_dir: &Path,
    select: LogSelect,
    from: &LogCursor,
    ended: bool,
    max_bytes: usize,
) -> Result<LogRead, ExecError> {
    let mut walk = Walk::open(job_dir, select, from, ended)?;
    let mut pieces: Vec<LogPiece> = Vec::new();
    let mut left = max_bytes;
    let stopped = walk.run(Some(RECORDS_PER_READ), &mut |key, time_ms, _, data| {
        let take = data.len().min(left);
        left -= take;
        match pieces.last_mut() {
            Some(p) if (p.rank, p.stream, p.time_ms) == (key.0, key.1, time_ms) => {
                p.data.extend_from_slice(&data[..take]);
            }
            _ if take > 0 => pieces.push(LogPiece { rank: key.0, stream: key.1, time_ms, data: data[..take].to_vec() }),
            _ => {}
        }
        (take < data.len() || left == 0).then_some(take)
    })?;
    Ok(LogRead { pieces, next: walk.cursor, more: stopped })
}

/// The cursor from which [`read_output`] shows the last `lines` lines of the selected output,
/// each whole: a line of one stream that began before the cut (another stream's lines between)
/// is shown from its start, just before the rest of it. A last line without a newline counts.
/// It reads the output twice: once to count the lines, once to find where the last ones start.
pub fn tail_cursor(job_dir: &Path, select: LogSelect, lines: u64, ended: bool) -> Result<LogCursor, ExecError> {
    let start = LogCursor::default();
    if lines == 0 {
        // The end: everything there is now, passed over.
        let mut walk = Walk::open(job_dir, select, &start, ended)?;
        walk.run(None, &mut |_, _, _, _| None)?;
        return Ok(walk.cursor);
    }
    let mut newlines = 0u64;
    let mut last: BTreeMap<(u32, LogStream), u8> = BTreeMap::new();
    Walk::open(job_dir, select, &start, ended)?.run(None, &mut |key, _, _, data| {
        newlines += memchr::memchr_iter(b'\n', data).count() as u64;
        if let Some(&b) = data.last() {
            last.insert(key, b);
        }
        None
    })?;
    // Lines not ended yet end with the output; the rest end at their newline.
    let unended = last.values().filter(|&&b| b != b'\n').count() as u64;
    let skip = newlines.saturating_sub(lines.saturating_sub(unended));
    if skip == 0 {
        return Ok(start);
    }
    let mut seen = 0u64;
    // Where each log's current line starts.
    let mut line_start: BTreeMap<(u32, LogStream), u64> = BTreeMap::new();
    let mut walk = Walk::open(job_dir, select, &start, ended)?;
    walk.run(None, &mut |key, _, at, data| {
        for i in memchr::memchr_iter(b'\n', data) {
            seen += 1;
            line_start.insert(key, at + i as u64 + 1);
            if seen == skip {
                return Some(i + 1);
            }
        }
        None
    })?;
    let mut cursor = walk.cursor;
    for (key, done) in cursor.done.iter_mut() {
        *done = line_start.get(key).copied().unwrap_or(0);
    }
    Ok(cursor)
}

/// One log of the selection.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    /// Opened on first use; `None` inside when it does not exist (yet).
    file: Option<Option<File>>,
    /// Its length when last looked at.
    len: u64,
}

/// What a visitor says about the bytes it was shown: `None` took them all and wants more,
/// `Some(n)` took the first `n` and stops the walk.
/// It gets the log, the time, where in the log the bytes are, and the bytes.
type Visit<'v> = dyn FnMut((u32, LogStream), Option<u64>, u64, &[u8]) -> Option<usize> + 'v;

/// A walk over the selected output in the order written, from a cursor.
#[derive(Debug)]
struct Walk {
    logs: BTreeMap<(u32, LogStream), Log>,
    index: Option<(File, u64)>,
    index_path: PathBuf,
    ended: bool,
    cursor: LogCursor,
    /// What a log is read into.
    buf: Vec<u8>,
}

impl Walk {
    fn open(job_dir: &Path, select: LogSelect, from: &LogCursor, ended: bool) -> Result<Walk, ExecError> {
        let spec_path = job_dir.join(SPEC_FILE);
        let spec: JobSpec = read_json(&spec_path, "job spec")?.ok_or_else(|| {
            ExecError::io("reading", &spec_path, io::Error::new(io::ErrorKind::NotFound, "no job spec here"))
        })?;
        if let Some(rank) = select.rank
            && spec.rank(rank).is_none()
        {
            return Err(ExecError::NoSuchRank { job_id: spec.job_id, rank, path: job_dir.to_path_buf() });
        }
        let log_dir = spec.log_dir(job_dir);
        let mut logs = BTreeMap::new();
        for r in spec.ranks.iter().filter(|r| select.rank.is_none_or(|want| want == r.rank)) {
            for stream in select.streams() {
                let path = log_path(&log_dir, r.rank, stream);
                logs.insert((r.rank, stream), Log { path, file: None, len: 0 });
            }
        }
        let index_path = log_dir.join(INDEX_FILE);
        let index = open_index(&index_path)?;
        let mut cursor = from.clone();
        cursor.done.retain(|k, _| logs.contains_key(k));
        Ok(Walk { logs, index, index_path, ended, cursor, buf: vec![0u8; DATA_BLOCK] })
    }

    /// Shows the output from the cursor to `visit` (see [`Visit`]), looking at no more than
    /// `max_records` index records; returns whether it stopped before the end.
    fn run(&mut self, max_records: Option<u64>, visit: &mut Visit<'_>) -> Result<bool, ExecError> {
        if let Some((mut file, count)) = self.index.take() {
            let result = self.run_index(&mut file, count, max_records, visit);
            self.index = Some((file, count));
            if result? {
                return Ok(true);
            }
        }
        if self.ended || self.index.is_none() {
            let keys: Vec<_> = self.logs.keys().copied().collect();
            for key in keys {
                if self.show(key, u64::MAX, None, visit)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn run_index(
        &mut self,
        file: &mut File,
        count: u64,
        max_records: Option<u64>,
        visit: &mut Visit<'_>,
    ) -> Result<bool, ExecError> {
        let stop_at = max_records.map_or(count, |m| count.min(self.cursor.record.saturating_add(m)));
        let mut buf = vec![0u8; RECORD_BLOCK * RECORD_LEN];
        while self.cursor.record < stop_at {
            let n = (stop_at - self.cursor.record).min(RECORD_BLOCK as u64) as usize;
            let at = INDEX_HEADER.len() as u64 + self.cursor.record * RECORD_LEN as u64;
            let bytes = &mut buf[..n * RECORD_LEN];
            file.read_exact_at(bytes, at).map_err(|e| ExecError::io("reading", &self.index_path, e))?;
            for chunk in bytes.chunks_exact(RECORD_LEN) {
                let rec = Record::decode(chunk.try_into().unwrap_or(&[0; RECORD_LEN]));
                let key = (rec.rank, rec.stream);
                if self.logs.contains_key(&key) {
                    // Bytes of this log that no record covered come first, then the record's.
                    if self.show(key, rec.offset, None, visit)?
                        || self.show(key, rec.end(), Some(rec.time_ms), visit)?
                    {
                        return Ok(true);
                    }
                }
                self.cursor.record += 1;
            }
        }
        Ok(stop_at < count)
    }

    /// Shows log `key` from where the cursor is up to `until` (or its end), with `time_ms`;
    /// returns whether the visitor stopped.
    fn show(
        &mut self,
        key: (u32, LogStream),
        until: u64,
        time_ms: Option<u64>,
        visit: &mut Visit<'_>,
    ) -> Result<bool, ExecError> {
        let done = self.cursor.done.get(&key).copied().unwrap_or(0);
        if until <= done {
            return Ok(false);
        }
        let Some(log) = self.logs.get_mut(&key) else { return Ok(false) };
        if log.file.is_none() {
            log.file = Some(match open_no_follow(&log.path) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(ExecError::io("opening", &log.path, e)),
            });
        }
        let Some(Some(file)) = log.file.as_mut() else { return Ok(false) };
        if until > log.len {
            log.len = file.metadata().map_err(|e| ExecError::io("reading", &log.path, e))?.len();
        }
        let end = until.min(log.len);
        let mut pos = done;
        let buf = &mut self.buf;
        file.seek(SeekFrom::Start(pos)).map_err(|e| ExecError::io("seeking in", &log.path, e))?;
        while pos < end {
            let want = (end - pos).min(DATA_BLOCK as u64) as usize;
            let got = match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ExecError::io("reading", &log.path, e)),
            };
            if let Some(took) = visit(key, time_ms, pos, &buf[..got]) {
                self.cursor.done.insert(key, pos + took as u64);
                return Ok(true);
            }
            pos += got as u64;
        }
        // A record past the end of its log (a damaged index) shows what there is; the bytes
        // that are not there are passed over.
        let past = if until == u64::MAX { pos } else { until.max(pos) };
        self.cursor.done.insert(key, past);
        Ok(false)
    }
}

/// Opens a log or the index for reading, never through a symlink (the supervisor writes them
/// the same way, so one there was put by someone else: the read fails rather than show the
/// daemon's view of another file).
fn open_no_follow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The index and how many whole records it holds; `None` when there is none or its header is
/// not ours (then the logs are shown in their own order).
fn open_index(path: &Path) -> Result<Option<(File, u64)>, ExecError> {
    let file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ExecError::io("opening", path, e)),
    };
    let len = file.metadata().map_err(|e| ExecError::io("reading", path, e))?.len();
    let mut header = [0u8; INDEX_HEADER.len()];
    if len < header.len() as u64 || file.read_exact_at(&mut header, 0).is_err() || &header != INDEX_HEADER {
        return Ok(None);
    }
    Ok(Some((file, (len - header.len() as u64) / RECORD_LEN as u64)))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A job directory with `ranks` ranks whose output is written through [`Fake::write`].
    struct Fake {
        dir: tempfile::TempDir,
        index: Option<File>,
        time: u64,
    }

    impl Fake {
        fn new(ranks: u32, with_index: bool) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let spec = JobSpec { job_id: 9, ..crate::spec::sample_spec(ranks) };
            crate::status::write_json(&dir.path().join(SPEC_FILE), "job spec", &spec).unwrap();
            let index = with_index.then(|| {
                let mut f = File::create(dir.path().join(INDEX_FILE)).unwrap();
                f.write_all(INDEX_HEADER).unwrap();
                f
            });
            Fake { dir, index, time: 1000 }
        }

        /// Appends to a log and, with `indexed`, records it.
        fn write(&mut self, rank: u32, stream: LogStream, data: &[u8], indexed: bool) {
            let path = log_path(self.dir.path(), rank, stream);
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
            let offset = f.metadata().unwrap().len();
            f.write_all(data).unwrap();
            self.time += 1;
            if let (true, Some(index)) = (indexed, self.index.as_mut()) {
                let rec = Record { rank, stream, offset, len: data.len() as u32, time_ms: self.time };
                index.write_all(&rec.encode()).unwrap();
            }
        }

        fn record(&mut self, rec: Record) {
            self.index.as_mut().unwrap().write_all(&rec.encode()).unwrap();
        }

        /// The whole view, read `step` bytes at a time: (rank, stream, time, text) per piece,
        /// pieces of one stream and time joined.
        fn view(&self, select: LogSelect, ended: bool, step: usize) -> Vec<(u32, char, Option<u64>, String)> {
            let mut cursor = LogCursor::default();
            let mut all: Vec<(u32, char, Option<u64>, String)> = Vec::new();
            for _ in 0..10_000 {
                let r = read_output(self.dir.path(), select, &cursor, ended, step).unwrap();
                for p in r.pieces {
                    assert!(p.data.len() <= step);
                    let s = if p.stream == LogStream::Stdout { 'o' } else { 'e' };
                    let text = String::from_utf8_lossy(&p.data).into_owned();
                    match all.last_mut() {
                        Some(l) if (l.0, l.1, l.2) == (p.rank, s, p.time_ms) => l.3.push_str(&text),
                        _ => all.push((p.rank, s, p.time_ms, text)),
                    }
                }
                cursor = r.next;
                if !r.more {
                    return all;
                }
            }
            panic!("the read never ended");
        }
    }

    fn piece(rank: u32, s: char, time: Option<u64>, text: &str) -> (u32, char, Option<u64>, String) {
        (rank, s, time, text.to_owned())
    }

    #[test]
    fn output_comes_back_in_the_order_written_at_any_read_size() {
        use LogStream::{Stderr, Stdout};
        let mut f = Fake::new(2, true);
        f.write(0, Stdout, b"out 1\n", true);
        f.write(0, Stderr, b"err 1\n", true);
        f.write(1, Stdout, b"rank 1 partial", true);
        f.write(0, Stdout, b"out 2\n", true);
        f.write(1, Stdout, b" line\n", true);
        f.write(0, Stderr, b"err 2\n", true);
        let every = [
            piece(0, 'o', Some(1001), "out 1\n"),
            piece(0, 'e', Some(1002), "err 1\n"),
            piece(1, 'o', Some(1003), "rank 1 partial"),
            piece(0, 'o', Some(1004), "out 2\n"),
            piece(1, 'o', Some(1005), " line\n"),
            piece(0, 'e', Some(1006), "err 2\n"),
        ];
        // (selection, what it shows)
        let cases: Vec<(LogSelect, Vec<usize>)> = vec![
            (LogSelect::ALL, vec![0, 1, 2, 3, 4, 5]),
            (LogSelect { rank: Some(0), stdout: true, stderr: true }, vec![0, 1, 3, 5]),
            (LogSelect { rank: None, stdout: false, stderr: true }, vec![1, 5]),
            (LogSelect { rank: Some(1), stdout: true, stderr: false }, vec![2, 4]),
        ];
        for (select, want) in cases {
            let want: Vec<_> = want.iter().map(|&i| every[i].clone()).collect();
            for step in [1, 2, 5, 7, 1 << 20] {
                for ended in [false, true] {
                    assert_eq!(f.view(select, ended, step), want, "{select:?} step {step} ended {ended}");
                }
            }
        }
    }

    /// Bytes no record covers: before a log's next record, and at the end once the job ended
    /// (or always, without an index); records past their log's end pass over what is missing.
    #[test]
    fn bytes_without_records_are_shown_where_they_are() {
        use LogStream::{Stderr, Stdout};
        let mut f = Fake::new(1, true);
        f.write(0, Stdout, b"old run\n", false);
        f.write(0, Stderr, b"err\n", true);
        f.write(0, Stdout, b"new run\n", true);
        f.write(0, Stdout, b"after the index failed\n", false);
        f.record(Record { rank: 5, stream: Stdout, offset: 0, len: 9, time_ms: 1 });
        f.record(Record { rank: 0, stream: Stderr, offset: 4, len: 1000, time_ms: 7 });
        let running = vec![
            piece(0, 'e', Some(1002), "err\n"),
            piece(0, 'o', None, "old run\n"),
            piece(0, 'o', Some(1003), "new run\n"),
        ];
        let mut ended = running.clone();
        ended.push(piece(0, 'o', None, "after the index failed\n"));
        for step in [1, 3, 1 << 20] {
            assert_eq!(f.view(LogSelect::ALL, false, step), running, "step {step}");
            assert_eq!(f.view(LogSelect::ALL, true, step), ended, "step {step}");
        }

        let mut f = Fake::new(2, false);
        f.write(1, Stderr, b"e1\n", false);
        f.write(0, Stdout, b"o0\n", false);
        f.write(1, Stdout, b"o1", false);
        let want = vec![piece(0, 'o', None, "o0\n"), piece(1, 'o', None, "o1"), piece(1, 'e', None, "e1\n")];
        assert_eq!(f.view(LogSelect::ALL, false, 2), want);
        // A foreign header counts as no index.
        std::fs::write(f.dir.path().join(INDEX_FILE), b"something else entirely").unwrap();
        assert_eq!(f.view(LogSelect::ALL, false, 2), want);
    }

    #[test]
    fn the_tail_starts_at_the_last_lines() {
        use LogStream::{Stderr, Stdout};
        let mut f = Fake::new(1, true);
        f.write(0, Stdout, b"a\nb\n", true);
        f.write(0, Stderr, b"c\n", true);
        f.write(0, Stdout, b"d\npartial", true);
        // (lines, selection, what the view from the tail cursor holds)
        let cases: Vec<(u64, LogSelect, &str)> = vec![
            (0, LogSelect::ALL, ""),
            (1, LogSelect::ALL, "partial"),
            (2, LogSelect::ALL, "d\npartial"),
            (3, LogSelect::ALL, "c\nd\npartial"),
            (4, LogSelect::ALL, "b\nc\nd\npartial"),
            (5, LogSelect::ALL, "a\nb\nc\nd\npartial"),
            (99, LogSelect::ALL, "a\nb\nc\nd\npartial"),
            (1, LogSelect { rank: None, stdout: false, stderr: true }, "c\n"),
            (2, LogSelect { rank: Some(0), stdout: true, stderr: false }, "d\npartial"),
        ];
        for (lines, select, want) in cases {
            let cursor = tail_cursor(f.dir.path(), select, lines, true).unwrap();
            let got = read_output(f.dir.path(), select, &cursor, true, 1 << 20).unwrap();
            let text: Vec<u8> = got.pieces.iter().flat_map(|p| p.data.clone()).collect();
            assert_eq!(String::from_utf8(text).unwrap(), want, "tail {lines} of {select:?}");
        }
        // A line that began before the cut is shown whole, from its start.
        let mut g = Fake::new(1, true);
        g.write(0, Stdout, b"x", true);
        g.write(0, Stderr, b"e1\n", true);
        g.write(0, Stdout, b"y\n", true);
        g.write(0, Stderr, b"e2\n", true);
        for ended in [false, true] {
            let cursor = tail_cursor(g.dir.path(), LogSelect::ALL, 2, ended).unwrap();
            let got = read_output(g.dir.path(), LogSelect::ALL, &cursor, ended, 1 << 20).unwrap();
            let got: Vec<_> = got.pieces.iter().map(|p| (p.stream, p.time_ms, p.data.as_slice())).collect();
            let want: Vec<(LogStream, Option<u64>, &[u8])> =
                vec![(Stdout, None, b"x"), (Stdout, Some(1003), b"y\n"), (Stderr, Some(1004), b"e2\n")];
            assert_eq!(got, want, "ended {ended}");
        }
        let e = tail_cursor(f.dir.path(), LogSelect { rank: Some(3), ..LogSelect::ALL }, 1, true).unwrap_err();
        assert!(e.to_string().starts_with("job 9 has no rank 3"), "{e}");
    }

    /// A log or index that is a symlink is refused, not followed.
    #[test]
    fn symlinks_are_not_followed() {
        let mut f = Fake::new(1, false);
        let secret = f.dir.path().join("secret");
        std::fs::write(&secret, b"not the job's\n").unwrap();
        std::os::unix::fs::symlink(&secret, log_path(f.dir.path(), 0, LogStream::Stdout)).unwrap();
        let e = read_output(f.dir.path(), LogSelect::ALL, &LogCursor::default(), true, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("stdout.log"), "{e}");
        f.write(0, LogStream::Stderr, b"err\n", false);
        let only_err = LogSelect { stdout: false, ..LogSelect::ALL };
        std::os::unix::fs::symlink(&secret, f.dir.path().join(INDEX_FILE)).unwrap();
        assert!(read_output(f.dir.path(), only_err, &LogCursor::default(), true, 1 << 20).is_err());
    }

    #[test]
    fn records_round_trip() {
        let cases = [
            Record { rank: 0, stream: LogStream::Stdout, offset: 0, len: 0, time_ms: 0 },
            Record { rank: 3, stream: LogStream::Stderr, offset: 1 << 40, len: 65_536, time_ms: 1_750_000_000_123 },
            Record {
                rank: Record::MAX_RANK,
                stream: LogStream::Stderr,
                offset: u64::MAX,
                len: u32::MAX,
                time_ms: u64::MAX,
            },
        ];
        for rec in cases {
            assert_eq!(Record::decode(&rec.encode()), rec);
        }
    }
}
