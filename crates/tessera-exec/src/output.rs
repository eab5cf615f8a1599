//! Job output through the shim: every rank's stdout and stderr are pipes that the shim reads
//! and copies to the rank's logs in the output directory, so that the shim can cap what a run
//! writes and survive a full or failing output file system, and a job never blocks on output.
//!
//! **Cap.** [`Budget`] (pure) counts the bytes written for this run, all ranks and both streams
//! together; bytes a failed write did not get into a log are given back to it. The chunk that crosses the limit is written up to the limit, then one line
//! `tessera: output limit of N bytes reached; further output is discarded` (on a line of its
//! own) goes to that stream's log; from then on everything is read and discarded.
//!
//! **Order.** Beside the logs, the order index ([`crate::logs`]) gets one record per read burst
//! (which rank's stream, where in its log, how long, when), so that both streams can be shown
//! interleaved as they were written. Consecutive bursts of one stream read in the same
//! millisecond share a record; a record is written at the end of each [`Output::pump`] or when
//! another stream's burst comes. The index takes at most as many bytes per run as the output
//! limit (at least [`MIN_INDEX_BYTES`]); a run that would need more (a flood of tiny writes)
//! counts as having reached its limit, with its own marker line
//! `tessera: output order index full after N writes; further output is discarded`. An index
//! that cannot be opened or written gives one note; the output itself goes on, unordered.
//!
//! **Failures.** A log that cannot be opened, or a write that fails (`ENOSPC`, `EIO`, …), gives
//! one note and that stream is discarded from then on; the job runs on. The notes end up in the
//! outcome, which lives on the state file system, not the output one.
//!
//! **Reading.** The read ends are non-blocking (a pipe that cannot be made so is refused by
//! [`Output::add`], and the shim does not start that rank); [`Output::pump`] is the shim's wait: one
//! `poll(2)` on the open pipes with the supervision interval as its timeout, then what is
//! readable is read (a bounded amount per pipe, so the loop stays responsive under a flood).
//! A rank's pipes may be held open by processes it left behind; once the job has ended,
//! [`Output::drain`] reads what is there for a short while and closes the rest.

use std::fs::File;
use std::io::{self, PipeReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::logs::{INDEX_HEADER, RECORD_LEN, Record};
use crate::status::LogStream;
use crate::sys;

/// How much one read takes from a pipe.
const CHUNK: usize = 64 * 1024;
/// Reads per pipe per [`Output::pump`], so one noisy rank cannot hold the loop.
const READS_PER_PUMP: usize = 16;

/// The least the order index may take per run, whatever the output limit.
pub(crate) const MIN_INDEX_BYTES: u64 = 1 << 20;

/// The line written when the output limit is reached.
pub(crate) fn limit_marker(limit: u64) -> String {
    format!("tessera: output limit of {limit} bytes reached; further output is discarded\n")
}

/// The line written when the order index is full.
pub(crate) fn index_full_marker(records: u64) -> String {
    format!("tessera: output order index full after {records} writes; further output is discarded\n")
}

/// What to do with a chunk of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write all of it.
    All,
    /// Write the first `n` bytes, then the limit marker; the limit is now reached.
    Part(usize),
    /// Discard it.
    Nothing,
}

/// The per-run output budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    limit: Option<u64>,
    written: u64,
    reached: bool,
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Budget { limit, written: 0, reached: false }
    }

    /// Decides about the next `len` bytes and counts what it lets through.
    pub(crate) fn admit(&mut self, len: usize) -> Admit {
        let len = len as u64;
        match self.limit {
            _ if self.reached => Admit::Nothing,
            None => {
                self.written = self.written.saturating_add(len);
                Admit::All
            }
            Some(limit) => match self.written.checked_add(len) {
                Some(total) if total <= limit => {
                    self.written = total;
                    Admit::All
                }
                _ => {
                    // At most `len`, which came from a usize.
                    let keep = (limit - self.written) as usize;
                    self.written = limit;
                    self.reached = true;
                    Admit::Part(keep)
                }
            },
        }
    }

    pub(crate) fn reached(&self) -> bool {
        self.reached
    }

    /// Reaches the limit now, whatever was written (the order index is full): like the chunk
    /// that crosses the limit, with nothing of it kept.
    pub(crate) fn close(&mut self) -> Admit {
        if self.reached {
            return Admit::Nothing;
        }
        self.reached = true;
        Admit::Part(0)
    }

    /// Gives back `n` bytes that [`Budget::admit`] let through but that never reached a log
    /// (the write failed): only what was written counts. Below the limit again, it is no longer
    /// reached.
    pub(crate) fn refund(&mut self, n: usize) {
        if n > 0 {
            self.written = self.written.saturating_sub(n as u64);
            self.reached = false;
        }
    }
}

/// One rank's stdout or stderr.
#[derive(Debug)]
struct Stream {
    rank: u32,
    kind: LogStream,
    /// `None` once the pipe reached end of file or was closed.
    reader: Option<PipeReader>,
    /// `None` when the stream is being discarded (the log could not be opened or written).
    file: Option<File>,
    path: PathBuf,
    /// Where the next byte goes in the log (its length when opened, plus what was written).
    offset: u64,
    /// Whether the last byte written to the log ended a line.
    at_line_start: bool,
}

/// The order index being written (see [`crate::logs`]).
#[derive(Debug)]
struct OrderIndex {
    /// `None` once a write failed: the order of later output is not kept.
    file: Option<File>,
    path: PathBuf,
    /// The record being extended, not written yet.
    pending: Option<Record>,
    /// Records of this run, the pending one included.
    records: u64,
    /// The most records this run may write (`None`: no output limit).
    max_records: Option<u64>,
    /// The run needed more records than that.
    full: bool,
}

impl OrderIndex {
    /// Whether a burst would extend the pending record.
    fn extends(&self, rank: u32, kind: LogStream, offset: u64, len: usize, now_ms: u64) -> bool {
        self.pending.is_some_and(|p| {
            (p.rank, p.stream, p.end(), p.time_ms) == (rank, kind, offset, now_ms)
                && u64::from(p.len) + len as u64 <= u64::from(u32::MAX)
        })
    }

    /// Whether a burst needs a record that this run may no longer write.
    fn refuses(&self, rank: u32, kind: LogStream, offset: u64, len: usize, now_ms: u64) -> bool {
        self.file.is_some()
            && self.max_records.is_some_and(|m| self.records >= m)
            && !self.extends(rank, kind, offset, len, now_ms)
    }

    /// Writes the pending record; a failed write gives a note and ends the index for this run.
    fn flush(&mut self, notes: &mut Vec<String>) {
        let Some(rec) = self.pending.take() else { return };
        let Some(file) = self.file.as_mut() else { return };
        if let Err(e) = file.write_all(&rec.encode()) {
            notes.push(format!(
                "writing {} failed: {e}; the order of stdout and stderr is not kept from here on",
                self.path.display()
            ));
            self.file = None;
        }
    }
}

/// Makes an opened index ready for appending: the header in an empty file, a record cut short
/// by a crash cut off; a file that is not an order index is refused.
fn prepare_index(file: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let header_len = INDEX_HEADER.len() as u64;
    let len = file.metadata()?.len();
    let mut head = vec![0u8; len.min(header_len) as usize];
    file.read_exact_at(&mut head, 0)?;
    if head[..] != INDEX_HEADER[..head.len()] {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a Tessera output order index"));
    }
    if len < header_len {
        // New, or its header cut short.
        file.set_len(0)?;
        return file.write_all(INDEX_HEADER);
    }
    let whole = header_len + (len - header_len) / RECORD_LEN as u64 * RECORD_LEN as u64;
    if whole != len {
        file.set_len(whole)?;
    }
    Ok(())
}

/// Every rank's output pipes and logs, and the budget they share.
#[derive(Debug)]
pub(crate) struct Output {
    streams: Vec<Stream>,
    order: Option<OrderIndex>,
    budget: Budget,
    notes: Vec<String>,
    discarded: bool,
    buf: Vec<u8>,
}

impl Output {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Output {
            streams: Vec::new(),
            order: None,
            budget: Budget::new(limit),
            notes: Vec::new(),
            discarded: false,
            buf: vec![0; CHUNK],
        }
    }

    /// Keeps the order of the output in this index (opened for reading and appending), or
    /// notes why it cannot.
    pub(crate) fn keep_order(&mut self, file: Result<File, io::Error>, path: PathBuf) {
        match file.and_then(|mut f| prepare_index(&mut f).map(|()| f)) {
            Ok(f) => {
                let max_records = self.budget.limit.map(|l| l.max(MIN_INDEX_BYTES) / RECORD_LEN as u64);
                self.order =
                    Some(OrderIndex { file: Some(f), path, pending: None, records: 0, max_records, full: false });
            }
            Err(e) => self
                .notes
                .push(format!("cannot open {}: {e}; the order of stdout and stderr is not kept", path.display())),
        }
    }

    /// Adds a rank's stream: the pipe's read end (made non-blocking here) and its log, or why
    /// the log could not be opened (then the stream is discarded, with a note). Returns its
    /// index; fails, adding nothing, when the pipe cannot be made non-blocking (a blocking read
    /// would stall the shim, so the rank must not start with it).
    pub(crate) fn add(
        &mut self,
        rank: u32,
        kind: LogStream,
        reader: PipeReader,
        file: Result<File, io::Error>,
        path: PathBuf,
    ) -> io::Result<usize> {
        sys::set_nonblocking(reader.as_fd())?;
        let (file, offset) = match file.and_then(|f| f.metadata().map(|m| (f, m.len()))) {
            Ok((f, len)) => (Some(f), len),
            Err(e) => {
                self.notes.push(format!(
                    "rank {rank}: cannot open {}: {e}; its {} is discarded",
                    path.display(),
                    kind.as_str()
                ));
                self.discarded = true;
                (None, 0)
            }
        };
        self.streams.push(Stream { rank, kind, reader: Some(reader), file, path, offset, at_line_start: true });
        Ok(self.streams.len() - 1)
    }

    /// Whether any pipe is still open.
    pub(crate) fn open(&self) -> bool {
        self.streams.iter().any(|s| s.reader.is_some())
    }

    /// Waits up to `timeout` for output, then copies what is readable (see the module docs).
    pub(crate) fn pump(&mut self, timeout: Duration) {
        let open: Vec<usize> = (0..self.streams.len()).filter(|&i| self.streams[i].reader.is_some()).collect();
        let fds: Vec<_> = open.iter().filter_map(|&i| self.streams[i].reader.as_ref().map(|r| r.as_raw_fd())).collect();
        match sys::poll_readable(&fds, timeout) {
            Ok(ready) => {
                for (k, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
                    self.read_ready(open[k], READS_PER_PUMP, None);
                }
            }
            Err(e) => {
                let note = format!("poll on the ranks' output failed: {e}");
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                std::thread::sleep(timeout);
            }
        }
        self.flush_order();
    }

    /// Writes the pending order record, so that readers see what was read.
    fn flush_order(&mut self) {
        if let Some(order) = self.order.as_mut() {
            order.flush(&mut self.notes);
        }
    }

    /// Reads what stream `index` has now, without waiting, and returns it (it is also logged):
    /// for the diagnostics of a rank that failed to start.
    pub(crate) fn read_now(&mut self, index: usize) -> Vec<u8> {
        let mut seen = Vec::new();
        self.read_ready(index, READS_PER_PUMP, Some(&mut seen));
        self.flush_order();
        seen
    }

    /// After the job: reads until every pipe is at end of file or `within` has passed, then
    /// closes what is still open (processes holding it get `EPIPE`/`SIGPIPE`).
    pub(crate) fn drain(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.open() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pump(left.min(Duration::from_millis(10)));
        }
        for s in &mut self.streams {
            s.reader = None;
        }
        self.flush_order();
    }

    /// The notes for the outcome and whether any output was discarded.
    pub(crate) fn finish(mut self) -> (Vec<String>, bool) {
        self.flush_order();
        if self.budget.reached() {
            self.discarded = true;
        }
        (self.notes, self.discarded)
    }

    fn read_ready(&mut self, index: usize, max_reads: usize, mut seen: Option<&mut Vec<u8>>) {
        let mut buf = std::mem::take(&mut self.buf);
        let now_ms = tessera_host::now_ms();
        for _ in 0..max_reads {
            let Some(reader) = self.streams[index].reader.as_mut() else { break };
            match reader.read(&mut buf) {
                Ok(0) => {
                    self.streams[index].reader = None;
                    break;
                }
                Ok(n) => {
                    if let Some(seen) = seen.as_deref_mut() {
                        seen.extend_from_slice(&buf[..n]);
                    }
                    self.deliver(index, &buf[..n], now_ms);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let s = &mut self.streams[index];
                    self.notes.push(format!("rank {} {}: reading its pipe failed: {e}", s.rank, s.kind.as_str()));
                    s.reader = None;
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Passes one chunk through the budget to the stream's log; what a failed write did not
    /// store is given back to the budget.
    fn deliver(&mut self, index: usize, data: &[u8], now_ms: u64) {
        let s = &self.streams[index];
        if s.file.is_none() {
            return;
        }
        let order_full = self.order.as_ref().is_some_and(|o| o.refuses(s.rank, s.kind, s.offset, data.len(), now_ms));
        let decision = if order_full {
            if let Some(o) = self.order.as_mut() {
                o.full = true;
            }
            self.budget.close()
        } else {
            self.budget.admit(data.len())
        };
        match decision {
            Admit::All => {
                let written = self.write(index, data, now_ms);
                self.budget.refund(data.len() - written);
            }
            Admit::Nothing => {}
            Admit::Part(keep) => {
                let written = self.write(index, &data[..keep], now_ms);
                if written < keep {
                    // The log failed before the limit: the limit was not reached after all.
                    self.budget.refund(keep - written);
                    return;
                }
                let limit = self.budget.limit.unwrap_or(0);
                let (marker, why) = match self.order.as_ref().filter(|o| o.full) {
                    Some(o) => {
                        let n = o.records;
                        (index_full_marker(n), format!("output order index full after {n} writes"))
                    }
                    None => (limit_marker(limit), format!("output limit of {limit} bytes reached")),
                };
                let line = if self.streams[index].at_line_start { marker } else { format!("\n{marker}") };
                self.write(index, line.as_bytes(), now_ms);
                self.notes.push(format!(
                    "{why} (rank {} {}); further output of every rank was discarded",
                    self.streams[index].rank,
                    self.streams[index].kind.as_str()
                ));
            }
        }
    }

    /// Writes `bytes` to the stream's log; returns how many got there (all of them unless the
    /// write failed, which discards the stream from then on, with a note).
    fn write(&mut self, index: usize, bytes: &[u8], now_ms: u64) -> usize {
        let s = &mut self.streams[index];
        let offset = s.offset;
        let Some(file) = s.file.as_mut() else { return 0 };
        let mut done = 0;
        let mut failure = None;
        while done < bytes.len() {
            match file.write(&bytes[done..]) {
                Ok(0) => {
                    failure = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(&last) = bytes[..done].last() {
            s.at_line_start = last == b'\n';
        }
        s.offset += done as u64;
        let (rank, kind) = (s.rank, s.kind);
        if let Some(e) = failure {
            self.notes.push(format!(
                "rank {} {}: writing {} failed: {e}; the rest of this stream is discarded",
                s.rank,
                s.kind.as_str(),
                s.path.display()
            ));
            s.file = None;
            self.discarded = true;
        }
        if done > 0 {
            self.record(rank, kind, offset, done, now_ms);
        }
        done
    }

    /// Notes `len` bytes of a stream, written at `offset` of its log, in the order index.
    fn record(&mut self, rank: u32, kind: LogStream, offset: u64, len: usize, now_ms: u64) {
        let Some(order) = self.order.as_mut() else { return };
        if order.file.is_none() || rank > Record::MAX_RANK {
            return;
        }
        if order.extends(rank, kind, offset, len, now_ms) {
            if let Some(p) = order.pending.as_mut() {
                // At most u32::MAX: checked by `extends`.
                p.len += len as u32;
            }
            return;
        }
        order.flush(&mut self.notes);
        // At most CHUNK or one marker line.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        order.pending = Some(Record { rank, stream: kind, offset, len, time_ms: now_ms });
        order.records += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_lets_through_exactly_the_limit() {
        // (limit, chunks, expected decisions)
        let cases: Vec<(Option<u64>, Vec<usize>, Vec<Admit>)> = vec![
            (None, vec![10, 1 << 20], vec![Admit::All, Admit::All]),
            (Some(10), vec![4, 6, 1], vec![Admit::All, Admit::All, Admit::Part(0)]),
            (Some(10), vec![4, 7, 3], vec![Admit::All, Admit::Part(6), Admit::Nothing]),
            (Some(10), vec![10], vec![Admit::All]),
            (Some(0), vec![0, 1, 1], vec![Admit::All, Admit::Part(0), Admit::Nothing]),
            (Some(u64::MAX), vec![usize::MAX, 5], vec![Admit::All, Admit::Part(0)]),
        ];
        for (limit, chunks, want) in cases {
            let mut b = Budget::new(limit);
            let got: Vec<Admit> = chunks.iter().map(|&n| b.admit(n)).collect();
            assert_eq!(got, want, "limit {limit:?}, chunks {chunks:?}");
        }
        let mut b = Budget::new(Some(3));
        assert!(!b.reached());
        b.admit(4);
        assert!(b.reached());
    }

    fn pipe_into(out: &mut Output, rank: u32, kind: LogStream, path: &std::path::Path) -> io::PipeWriter {
        let (r, w) = io::pipe().unwrap();
        let file = crate::status::open_log(path, None);
        out.add(rank, kind, r, file, path.to_path_buf()).unwrap();
        w
    }

    #[test]
    fn output_is_copied_capped_and_marked_once() {
        let dir = tempfile::tempdir().unwrap();
        let (p0, p1) = (dir.path().join("stdout.log"), dir.path().join("rank-1.stdout.log"));
        let mut out = Output::new(Some(25));
        let mut w0 = pipe_into(&mut out, 0, LogStream::Stdout, &p0);
        let mut w1 = pipe_into(&mut out, 1, LogStream::Stdout, &p1);
        w0.write_all(b"0123456789\n").unwrap();
        out.pump(Duration::from_millis(50));
        w1.write_all(b"abcdefghij\n").unwrap();
        out.pump(Duration::from_millis(50));
        w0.write_all(b"ABCDEFGHIJ\n").unwrap();
        out.pump(Duration::from_millis(50));
        w1.write_all(b"more\n").unwrap();
        drop((w0, w1));
        out.drain(Duration::from_secs(1));
        assert!(!out.open());
        let marker = limit_marker(25);
        assert_eq!(std::fs::read_to_string(&p0).unwrap(), format!("0123456789\nABC\n{marker}"));
        assert_eq!(std::fs::read_to_string(&p1).unwrap(), "abcdefghij\n");
        let (notes, discarded) = out.finish();
        assert!(discarded);
        assert_eq!(
            notes,
            vec!["output limit of 25 bytes reached (rank 0 stdout); further output of every rank was discarded"]
        );
    }

    #[test]
    fn an_unopenable_log_is_discarded_with_a_note_and_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("stdout.log");
        let mut out = Output::new(Some(5));
        let (r, mut w_bad) = io::pipe().unwrap();
        let missing = dir.path().join("no/such/dir/stderr.log");
        out.add(0, LogStream::Stderr, r, crate::status::open_log(&missing, None), missing.clone()).unwrap();
        let mut w_good = pipe_into(&mut out, 0, LogStream::Stdout, &good);
        // Discarded output does not eat into the budget.
        w_bad.write_all(b"lots and lots of bytes").unwrap();
        w_good.write_all(b"12345").unwrap();
        drop((w_bad, w_good));
        out.drain(Duration::from_secs(1));
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "12345");
        let (notes, discarded) = out.finish();
        assert!(discarded);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with(&format!("rank 0: cannot open {}", missing.display())), "{notes:?}");
        assert!(notes[0].ends_with("its stderr is discarded"), "{notes:?}");
    }

    /// A log whose write fails (here `/dev/full`: `ENOSPC`) does not use up the budget: the
    /// other streams still get the whole limit.
    #[test]
    fn a_failed_write_is_not_charged_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("stdout.log");
        let mut out = Output::new(Some(10));
        let (r, mut w_full) = io::pipe().unwrap();
        let full = std::path::PathBuf::from("/dev/full");
        let file = std::fs::OpenOptions::new().write(true).open(&full);
        out.add(0, LogStream::Stderr, r, file, full).unwrap();
        let mut w_good = pipe_into(&mut out, 0, LogStream::Stdout, &good);
        w_full.write_all(b"12345678").unwrap();
        out.pump(Duration::from_millis(50));
        w_good.write_all(b"abcdefghij").unwrap();
        drop((w_full, w_good));
        out.drain(Duration::from_secs(1));
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "abcdefghij");
        let (notes, discarded) = out.finish();
        assert!(discarded);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("rank 0 stderr: writing /dev/full failed"), "{notes:?}");

        // The same for the chunk that would have crossed the limit.
        let mut b = Budget::new(Some(10));
        assert_eq!(b.admit(8), Admit::All);
        assert_eq!(b.admit(5), Admit::Part(2));
        b.refund(2);
        assert!(!b.reached());
        assert_eq!(b.admit(2), Admit::All);
        assert_eq!(b.admit(1), Admit::Part(0));
    }

    fn index_records(path: &std::path::Path) -> Vec<(u32, LogStream, u64, u32, u64)> {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..INDEX_HEADER.len()], INDEX_HEADER);
        bytes[INDEX_HEADER.len()..]
            .chunks_exact(RECORD_LEN)
            .map(|c| {
                let r = Record::decode(c.try_into().unwrap());
                (r.rank, r.stream, r.offset, r.len, r.time_ms)
            })
            .collect()
    }

    /// Bursts of one stream at one time share a record; another stream or time starts a new
    /// one; a run that needs more records than it may write ends like one at its limit.
    #[test]
    fn the_order_index_records_bursts_and_ends_the_output_when_full() {
        use LogStream::{Stderr, Stdout};
        let dir = tempfile::tempdir().unwrap();
        let (p0, p1, pi) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"), dir.path().join("idx"));
        std::fs::write(&p0, b"earlier run\n").unwrap();
        let mut out = Output::new(Some(1000));
        out.keep_order(crate::status::open_index(&pi, None), pi.clone());
        let _w0 = pipe_into(&mut out, 0, Stdout, &p0);
        let _w1 = pipe_into(&mut out, 0, Stderr, &p1);
        out.order.as_mut().unwrap().max_records = Some(4);
        // (stream index, bytes, time)
        let writes: &[(usize, &[u8], u64)] =
            &[(0, b"a", 5), (0, b"b\n", 5), (1, b"E\n", 5), (0, b"c", 6), (0, b"d", 6), (1, b"F", 7), (1, b"G", 7)];
        for &(i, data, t) in writes {
            out.deliver(i, data, t);
        }
        out.flush_order();
        assert_eq!(
            index_records(&pi),
            vec![(0, Stdout, 12, 3, 5), (0, Stderr, 0, 2, 5), (0, Stdout, 15, 2, 6), (0, Stderr, 2, 2, 7)]
        );
        // The fifth record is refused: the marker, indexed too, and nothing after it.
        out.deliver(0, b"e", 8);
        out.deliver(1, b"H", 9);
        out.flush_order();
        let marker = index_full_marker(4);
        assert_eq!(std::fs::read_to_string(&p0).unwrap(), format!("earlier run\nab\ncd\n{marker}"));
        assert_eq!(std::fs::read_to_string(&p1).unwrap(), "E\nFG");
        let recs = index_records(&pi);
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[4], (0, Stdout, 17, marker.len() as u32 + 1, 8));
        let (notes, discarded) = out.finish();
        assert!(discarded);
        assert_eq!(
            notes,
            vec!["output order index full after 4 writes (rank 0 stdout); further output of every rank was discarded"]
        );

        // A later run appends to the same index; a record cut short by a crash is cut off.
        std::fs::OpenOptions::new().append(true).open(&pi).unwrap().write_all(b"partial").unwrap();
        let mut out = Output::new(None);
        out.keep_order(crate::status::open_index(&pi, None), pi.clone());
        let _w0 = pipe_into(&mut out, 0, Stdout, &p0);
        out.deliver(0, b"run 2\n", 20);
        let _ = out.finish();
        let recs = index_records(&pi);
        assert_eq!(recs.len(), 6);
        assert_eq!(recs[5], (0, Stdout, std::fs::metadata(&p0).unwrap().len() - 6, 6, 20));
    }

    #[test]
    fn a_file_that_is_not_an_index_is_left_alone_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let pi = dir.path().join("idx");
        std::fs::write(&pi, b"my own file").unwrap();
        let mut out = Output::new(None);
        out.keep_order(crate::status::open_index(&pi, None), pi.clone());
        let p0 = dir.path().join("stdout.log");
        let mut w = pipe_into(&mut out, 0, LogStream::Stdout, &p0);
        w.write_all(b"hello\n").unwrap();
        drop(w);
        out.drain(Duration::from_secs(1));
        assert_eq!(std::fs::read(&pi).unwrap(), b"my own file");
        assert_eq!(std::fs::read(&p0).unwrap(), b"hello\n");
        let (notes, discarded) = out.finish();
        assert!(!discarded);
        assert_eq!(
            notes,
            vec![format!(
                "cannot open {}: not a Tessera output order index; the order of stdout and stderr is not kept",
                pi.display()
            )]
        );
    }

    /// A pipe held open by someone else does not hold `drain` beyond its time.
    #[test]
    fn drain_gives_up_on_a_pipe_that_never_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Output::new(None);
        let mut w = pipe_into(&mut out, 0, LogStream::Stdout, &dir.path().join("stdout.log"));
        w.write_all(b"partial").unwrap();
        let t0 = Instant::now();
        out.drain(Duration::from_millis(100));
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(!out.open());
        assert_eq!(std::fs::read_to_string(dir.path().join("stdout.log")).unwrap(), "partial");
        // The reader is gone: the writer sees a broken pipe.
        assert_eq!(w.write_all(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
