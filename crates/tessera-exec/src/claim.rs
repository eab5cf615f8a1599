//! Who owns a job directory: the claim protocol that closes every `kill -9` window between the
//! daemon handing a job to a shim and the shim taking it.
//!
//! `shim.pid` is created exactly once, atomically and exclusively
//! ([`create_once`](crate::status::create_once): the content goes into a temporary file first,
//! which is then `link(2)`ed to `shim.pid`; the link fails with `EEXIST` when the name is taken,
//! and a reader never sees a half-written file). Its content is either
//! the pid of the shim that claimed the job or the word `abandoned`, written by the daemon
//! ([`crate::abandon`]) when it gave up waiting. Whoever links first wins, for good:
//!
//! * a shim that finds `abandoned` starts nothing and exits ([`crate::shim::EXIT_ABANDONED`]);
//! * a daemon whose `abandon` finds a pid knows a shim took the job and adopts it.
//!
//! So a restarted daemon that finds `spec.json` without `shim.pid`
//! ([`ShimState::Unclaimed`](crate::ShimState::Unclaimed)) calls [`crate::abandon`] and learns, without
//! any race, whether the job will ever run.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::ExecError;
use crate::status::{PID_FILE, create_once};

/// What `shim.pid` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A shim (this pid) claimed the job.
    Shim { pid: u32 },
    /// The daemon gave the job up before any shim claimed it: no shim will ever run this job
    /// directory.
    Abandoned,
}

/// The word `shim.pid` holds when the daemon abandoned the job.
pub const ABANDONED: &str = "abandoned";

impl Claim {
    /// The file's content.
    fn text(self) -> String {
        match self {
            Claim::Shim { pid } => format!("{pid}\n"),
            Claim::Abandoned => format!("{ABANDONED}\n"),
        }
    }

    /// Parses the file's content.
    pub(crate) fn parse(text: &str) -> Option<Claim> {
        match text.trim() {
            ABANDONED => Some(Claim::Abandoned),
            pid => pid.parse::<u32>().ok().filter(|&p| p > 0).map(|pid| Claim::Shim { pid }),
        }
    }
}

/// Reads `shim.pid`; `Ok(None)` when nobody has claimed the job yet.
pub(crate) fn read_claim(job_dir: &Path) -> Result<Option<Claim>, ExecError> {
    let path = job_dir.join(PID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Claim::parse(&text).map(Some).ok_or_else(|| {
            let what = format!("neither a pid nor `{ABANDONED}`: {text:?}");
            ExecError::io("parsing", &path, io::Error::new(io::ErrorKind::InvalidData, what))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExecError::io("reading", path, e)),
    }
}

/// Tries to create `shim.pid` with `claim` in it. Returns the claim that holds afterwards:
/// `claim` itself when this call won, the other one when `shim.pid` was already there.
pub(crate) fn try_claim(job_dir: &Path, claim: Claim) -> Result<Claim, ExecError> {
    let target = job_dir.join(PID_FILE);
    if create_once(&target, claim.text().as_bytes())? {
        return Ok(claim);
    }
    read_claim(job_dir)?.ok_or_else(|| {
        let gone = io::Error::new(io::ErrorKind::NotFound, "shim.pid existed, then vanished");
        ExecError::io("reading", &target, gone)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_refuses_the_rest() {
        let cases = [
            ("1234\n", Some(Claim::Shim { pid: 1234 })),
            ("abandoned\n", Some(Claim::Abandoned)),
            (" 7 ", Some(Claim::Shim { pid: 7 })),
            ("0\n", None),
            ("", None),
            ("12ab", None),
            ("abandon", None),
        ];
        for (text, want) in cases {
            assert_eq!(Claim::parse(text), want, "{text:?}");
        }
        assert_eq!(Claim::parse(&Claim::Shim { pid: 9 }.text()), Some(Claim::Shim { pid: 9 }));
        assert_eq!(Claim::parse(&Claim::Abandoned.text()), Some(Claim::Abandoned));
    }

    #[test]
    fn the_first_claim_wins_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_claim(dir.path()).unwrap(), None);
        assert_eq!(try_claim(dir.path(), Claim::Shim { pid: 42 }).unwrap(), Claim::Shim { pid: 42 });
        assert_eq!(try_claim(dir.path(), Claim::Abandoned).unwrap(), Claim::Shim { pid: 42 });
        assert_eq!(try_claim(dir.path(), Claim::Shim { pid: 43 }).unwrap(), Claim::Shim { pid: 42 });
        assert_eq!(read_claim(dir.path()).unwrap(), Some(Claim::Shim { pid: 42 }));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(PID_FILE)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(PID_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the job directory's files are the daemon's alone");

        let other = tempfile::tempdir().unwrap();
        assert_eq!(try_claim(other.path(), Claim::Abandoned).unwrap(), Claim::Abandoned);
        assert_eq!(try_claim(other.path(), Claim::Shim { pid: 5 }).unwrap(), Claim::Abandoned);
        fs::write(other.path().join(PID_FILE), "junk").unwrap();
        assert!(read_claim(other.path()).unwrap_err().to_string().contains("neither a pid nor"));
    }

    /// Many claimants at once: exactly one wins, and every one of them learns who.
    #[test]
    fn concurrent_claims_agree_on_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let results: Vec<Claim> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=8u32)
                .map(|i| {
                    let path = dir.path();
                    let claim = if i == 8 { Claim::Abandoned } else { Claim::Shim { pid: i } };
                    s.spawn(move || try_claim(path, claim).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winner = read_claim(dir.path()).unwrap().unwrap();
        assert!(results.iter().all(|&c| c == winner), "{results:?} vs {winner:?}");
    }
}
