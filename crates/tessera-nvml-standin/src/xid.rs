//! Injected Xid errors (`TESSERA_STANDIN_XIDS`): a text file a test appends to, one event a line.
//!
//! Each line is `GPU XID` or `GPU XID GI CI` (decimal; GPU is the NVML index, GI/CI the GPU- and
//! compute-instance ids the error is attributed to). Blank lines and lines starting with `#` are
//! skipped. The feed remembers how far it has read, so every line is delivered once; a last line
//! without its newline is left for the next poll (the writer may be half-way through it). A file
//! that does not exist yet simply has no events. When the stand-in reads a line it also does to
//! the simulated node what the driver does ([`tessera_gpu::SimBackend::apply_xid`]: the recovery
//! action, and Xid 79 takes the GPU off the bus); every process reads the file from its start.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One injected Xid error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidEvent {
    pub gpu: u32,
    pub xid: u64,
    /// GPU instance id, when the error is attributed to one.
    pub gpu_instance: Option<u32>,
    /// Compute instance id, when the error is attributed to one.
    pub compute_instance: Option<u32>,
}

/// Parse one line; `Ok(None)` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<XidEvent>, String> {
    let text = line.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let bad = |why: String| format!("bad Xid line '{text}': {why} (expected 'GPU XID' or 'GPU XID GI CI')");
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| bad(format!("{what} '{s}' is not a whole number")));
    let small = |s: &str, what: &str| {
        num(s, what).and_then(|v| u32::try_from(v).map_err(|_| bad(format!("{what} '{s}' is too large"))))
    };
    match fields.as_slice() {
        [gpu, xid] => Ok(Some(XidEvent {
            gpu: small(gpu, "GPU")?,
            xid: num(xid, "Xid")?,
            gpu_instance: None,
            compute_instance: None,
        })),
        [gpu, xid, gi, ci] => Ok(Some(XidEvent {
            gpu: small(gpu, "GPU")?,
            xid: num(xid, "Xid")?,
            gpu_instance: Some(small(gi, "GPU instance")?),
            compute_instance: Some(small(ci, "compute instance")?),
        })),
        _ => Err(bad(format!("{} fields", fields.len()))),
    }
}

/// Reads new lines from the Xid file.
#[derive(Debug)]
pub struct XidFeed {
    path: PathBuf,
    offset: u64,
}

impl XidFeed {
    /// A feed that starts at the beginning of `path`.
    pub fn new(path: &Path) -> XidFeed {
        XidFeed { path: path.to_path_buf(), offset: 0 }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every complete line written since the last poll, parsed (errors name the bad line).
    pub fn poll(&mut self) -> Vec<Result<XidEvent, String>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(e) => return vec![Err(format!("{}: {e}", self.path.display()))],
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start again from its beginning.
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        if let Err(e) = file.seek(SeekFrom::Start(self.offset)).and_then(|_| file.read_to_end(&mut bytes)) {
            return vec![Err(format!("{}: {e}", self.path.display()))];
        }
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete = &bytes[..=end];
        self.offset += complete.len() as u64;
        String::from_utf8_lossy(complete).lines().filter_map(|l| parse_line(l).transpose()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line("3 79"),
            Ok(Some(XidEvent { gpu: 3, xid: 79, gpu_instance: None, compute_instance: None }))
        );
        assert_eq!(
            parse_line("  0\t43 7 0 "),
            Ok(Some(XidEvent { gpu: 0, xid: 43, gpu_instance: Some(7), compute_instance: Some(0) }))
        );
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("# comment"), Ok(None));
        for (bad, needle) in
            [("1", "1 fields"), ("1 2 3", "3 fields"), ("x 79", "GPU 'x'"), ("0 79 1 y", "compute instance 'y'")]
        {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(parse_line("99999999999 1").unwrap_err().contains("too large"));
    }

    #[test]
    fn feed_delivers_each_line_once_and_waits_for_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xids");
        let mut feed = XidFeed::new(&path);
        assert!(feed.poll().is_empty(), "no file yet");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"0 79\n# note\n1 43 7 0\n2 4").unwrap();
        f.flush().unwrap();
        let got: Vec<u32> = feed.poll().into_iter().map(|e| e.unwrap().gpu).collect();
        assert_eq!(got, [0, 1]);
        assert!(feed.poll().is_empty());
        f.write_all(b"8\nbad line here\n").unwrap();
        f.flush().unwrap();
        let got = feed.poll();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().xid, 48);
        assert!(got[1].is_err());
        assert!(feed.poll().is_empty());
    }
}
