//! `tessera logs`: a job's output, both streams of every rank in the order they were written
//! (`--stdout`/`--stderr` and `--rank` narrow it), `--tail N` to start at the last lines, `-f`
//! to follow until the job ends (through restarts of the daemon), `--prefix` to mark each line
//! with its stream (and rank), `-o json` for one JSON object per line.
//!
//! To a terminal the job's text goes with its control characters escaped
//! ([`crate::render::escape`]; newlines and tabs kept), so a user's output cannot rewrite the
//! terminal of whoever reads it; `--raw` prints it as it is. Anywhere else (a file, a pipe) the
//! bytes pass through unchanged.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use serde::Serialize;
use tessera_daemon::client::ClientError;
use tessera_daemon::wire::{LogChunk, LogPiece, LogQuery, Stream};

use crate::cli::{DaemonArgs, Output};

/// How long `-f` waits between reads when nothing new came.
const FOLLOW_PAUSE: Duration = Duration::from_millis(250);
/// How long `-f` waits before asking a daemon that did not answer again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job whose output to show.
    #[arg(value_name = "ID")]
    pub id: u64,
    /// Only this rank's output [default: every rank's].
    #[arg(long, value_name = "N")]
    pub rank: Option<u32>,
    /// Only standard output.
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Only standard error.
    #[arg(long)]
    pub stderr: bool,
    /// Start at the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Keep printing until the job ends (waiting through restarts of the daemon).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Mark each line with its stream (`out| `, `err| `), and its rank when there are several
    /// (`r1 err| `).
    #[arg(long)]
    pub prefix: bool,
    /// Print the job's output as it is, control characters included, even to a terminal.
    #[arg(long)]
    pub raw: bool,
}

/// One line of output as `-o json` prints it.
#[derive(Debug, Serialize)]
struct JsonLine<'a> {
    stream: Stream,
    rank: u32,
    /// When the supervisor read it (RFC 3339, UTC); `null` for output whose order and time were
    /// not recorded.
    time: Option<String>,
    /// The line without its newline (bytes that are not UTF-8 replaced by U+FFFD).
    text: &'a str,
}

/// `tessera logs`.
pub fn logs(output: Output, d: &DaemonArgs, a: &LogsArgs) -> anyhow::Result<()> {
    let c = crate::jobs::client(d)?;
    let stream = match (a.stdout, a.stderr) {
        (true, _) => Some(Stream::Stdout),
        (_, true) => Some(Stream::Stderr),
        _ => None,
    };
    let mut q = LogQuery { rank: a.rank, stream, from: None, tail: a.tail };
    let stdout = std::io::stdout();
    let escape = stdout.is_terminal() && !a.raw;
    let mut printer = Printer::new(output, a.prefix, escape, std::io::BufWriter::new(stdout.lock()));
    let mut unreachable = false;
    // `-f` waits out a daemon that restarts, once it answered; one that never did is an error.
    let mut answered = false;
    loop {
        let chunk: LogChunk = match c.logs(a.id, &q) {
            Ok(chunk) => chunk,
            Err(e) if a.follow && answered && transient(&e) => {
                if !unreachable {
                    eprintln!("warning: {e}; still following job {}", a.id);
                    unreachable = true;
                }
                std::thread::sleep(RECONNECT_PAUSE);
                continue;
            }
            Err(e) => return crate::jobs::ok(Err(e)),
        };
        answered = true;
        if unreachable {
            eprintln!("note: the daemon answers again; following job {}", a.id);
            unreachable = false;
        }
        printer.several_ranks = a.rank.is_none() && chunk.ranks > 1;
        for piece in &chunk.pieces {
            printer.piece(piece)?;
        }
        printer.out.flush()?;
        q = LogQuery { from: Some(chunk.next), tail: None, ..q };
        if chunk.more {
            continue;
        }
        if !a.follow || chunk.job_ended {
            break;
        }
        std::thread::sleep(FOLLOW_PAUSE);
    }
    printer.finish()?;
    printer.out.flush()?;
    Ok(())
}

/// Errors that a restarting daemon gives: `-f` waits them out.
fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Closed { .. } | ClientError::Timeout { .. }
    )
}

/// Prints pieces of output in one of the three forms: as they are (bytes, or escaped text),
/// as marked lines (`--prefix`), or as JSON lines.
struct Printer<W: Write> {
    out: W,
    output: Output,
    prefix: bool,
    escape: bool,
    several_ranks: bool,
    /// Per rank and stream: the start of a line not ended yet (its time, its bytes), in the
    /// line forms; the end of a UTF-8 sequence cut between two pieces, when escaping.
    open: BTreeMap<(u32, Stream), (Option<u64>, Vec<u8>)>,
}

impl<W: Write> Printer<W> {
    fn new(output: Output, prefix: bool, escape: bool, out: W) -> Self {
        Printer { out, output, prefix, escape, several_ranks: false, open: BTreeMap::new() }
    }

    fn lines(&self) -> bool {
        self.prefix || self.output == Output::Json
    }

    fn piece(&mut self, p: &LogPiece) -> std::io::Result<()> {
        let key = (p.rank, p.stream);
        let data = &p.data.0;
        if !self.lines() {
            if !self.escape {
                return self.out.write_all(data);
            }
            let mut bytes = self.open.remove(&key).map(|(_, b)| b).unwrap_or_default();
            bytes.extend_from_slice(data);
            let cut = incomplete_utf8_suffix(&bytes);
            let rest = bytes.split_off(bytes.len() - cut);
            if !rest.is_empty() {
                self.open.insert(key, (None, rest));
            }
            return self.out.write_all(escape_output(&bytes).as_bytes());
        }
        let mut rest: &[u8] = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (time, mut line) = self.open.remove(&key).unwrap_or_default();
            line.extend_from_slice(&rest[..nl]);
            self.line(key, time.or(p.time_ms), &line)?;
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() {
            let open = self.open.entry(key).or_default();
            // A line's time is the first known time of its bytes.
            open.0 = open.0.or(p.time_ms);
            open.1.extend_from_slice(rest);
        }
        Ok(())
    }

    /// At the end: what is left of lines not ended, in the order they started.
    fn finish(&mut self) -> std::io::Result<()> {
        let mut left: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        left.sort_by_key(|(key, (time, _))| (*time, *key));
        for (key, (time, bytes)) in left {
            if self.lines() {
                self.line(key, time, &bytes)?;
            } else {
                self.out.write_all(escape_output(&bytes).as_bytes())?;
            }
        }
        Ok(())
    }

    fn line(&mut self, (rank, stream): (u32, Stream), time: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        if self.output == Output::Json {
            let text = String::from_utf8_lossy(bytes);
            let line = JsonLine { stream, rank, time: time.map(rfc3339), text: &text };
            serde_json::to_writer(&mut self.out, &line)?;
            return self.out.write_all(b"\n");
        }
        let mark = match stream {
            Stream::Stdout => "out| ",
            Stream::Stderr => "err| ",
        };
        if self.several_ranks {
            write!(self.out, "r{rank} ")?;
        }
        self.out.write_all(mark.as_bytes())?;
        if self.escape {
            self.out.write_all(escape_output(bytes).as_bytes())?;
        } else {
            self.out.write_all(bytes)?;
        }
        self.out.write_all(b"\n")
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC, to the millisecond.
fn rfc3339(ms: u64) -> String {
    match i64::try_from(ms).ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(t) => format!("{t:.3}"),
        None => format!("{ms} ms after the epoch"),
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 sequence that is not complete yet.
fn incomplete_utf8_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// A job's bytes for a terminal: newlines and tabs kept, every other control character and
/// every byte that is not UTF-8 written out (`\x1b`, `\r`, `\xff`).
fn escape_output(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let mut text = chunk.valid();
        while let Some(at) = text.find(['\n', '\t']) {
            out.push_str(&crate::render::escape(&text[..at]));
            out.push_str(&text[at..=at]);
            text = &text[at + 1..];
        }
        out.push_str(&crate::render::escape(text));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tessera_daemon::wire::LogBytes;

    use super::*;

    #[test]
    fn job_output_is_escaped_for_a_terminal() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain\n\tindented\n", "plain\n\tindented\n"),
            (b"\x1b]0;owned\x07\x1b[2Jgone\rover", "\\x1b]0;owned\\x07\\x1b[2Jgone\\rover"),
            (b"bad \xff\xfe bytes", "bad \\xff\\xfe bytes"),
            ("ok ✓ \u{202e}txt.exe\n".as_bytes(), "ok ✓ \\u{202e}txt.exe\n"),
        ];
        for (bytes, want) in cases {
            assert_eq!(escape_output(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn a_utf8_sequence_cut_between_pieces_is_held_back() {
        let cases: &[(&[u8], usize)] = &[
            (b"abc", 0),
            (b"ab\xe6", 1),
            (b"ab\xe6\x97", 2),
            (b"\xe6\x97\xa5", 0),
            (b"\xf0\x9f\x98", 3),
            (b"\xff", 0),
        ];
        for (bytes, want) in cases {
            assert_eq!(incomplete_utf8_suffix(bytes), *want, "{bytes:?}");
        }
        let mut p = Printer::new(Output::Table, false, true, Vec::new());
        let piece = |stream, data: &[u8]| LogPiece { rank: 0, stream, time_ms: None, data: LogBytes(data.to_vec()) };
        for (stream, data) in [(Stream::Stdout, &b"\xe6\x97"[..]), (Stream::Stderr, b"x"), (Stream::Stdout, b"\xa5!")] {
            p.piece(&piece(stream, data)).unwrap();
        }
        p.finish().unwrap();
        assert_eq!(String::from_utf8(p.out).unwrap(), "x日!");
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(1_750_000_000_123), "2025-06-15T15:06:40.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
