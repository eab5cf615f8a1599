//! Job output through the shim: logs in the output directory, appended to across runs, a
//! per-run cap with one marker line, separate files per rank and stream, and a job that never
//! blocks on (or is failed by) its output.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_exec::{JobState, LogCursor, LogSelect, LogStream, launch, read_output, tail_log, tail_stream};
use tessera_host::effective_uid;

fn marker(limit: u64) -> String {
    format!("tessera: output limit of {limit} bytes reached; further output is discarded\n")
}

/// 100-byte lines, far more than the limit: the log holds exactly the limit and the marker,
/// the job still succeeds, the outcome says what happened; a later run appends.
#[test]
fn output_is_capped_per_run_and_later_runs_append() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out/job-3001");
    let limit = 10_000;
    let flood = r#"yes "$(printf '%099d' 0)" | head -n 20000; echo "late stderr" >&2"#;
    let mut s = one_rank(3001, flood);
    s.output_dir = Some(out.clone());
    s.output_limit_bytes = Some(limit);
    let run1 = job_dir(&tmp, "run-1");
    launch(Path::new(SHIM), &[], &run1, &s).unwrap();
    let o = wait_finished(&run1, 3001, Duration::from_secs(30));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    assert!(o.output_truncated);
    assert!(
        o.binding_notes.iter().any(|n| n.starts_with("output limit of 10000 bytes reached (rank 0 stdout)")),
        "{:?}",
        o.binding_notes
    );
    let stdout = fs::read(out.join("stdout.log")).unwrap();
    assert_eq!(stdout.len() as u64, limit + marker(limit).len() as u64);
    assert!(stdout.ends_with(marker(limit).as_bytes()));
    assert_eq!(&stdout[..100], format!("{:099}\n", 0).as_bytes());
    assert_eq!(fs::read(out.join("stderr.log")).unwrap(), b"", "after the cap every stream is discarded");
    assert!(!run1.join("stdout.log").exists(), "logs go to the output directory, not the job directory");
    // The daemon reads them where they are.
    assert_eq!(tail_log(&run1, 0, limit).unwrap().0, marker(limit).as_bytes());
    if effective_uid() == 0 {
        assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o711);
    }

    // Run 2 of the same job, a fresh job directory, the same output directory: appended.
    s.run = 2;
    s.argv = vec!["/bin/sh".into(), "-c".into(), "echo second run; echo oops >&2".into()];
    let run2 = job_dir(&tmp, "run-2");
    launch(Path::new(SHIM), &[], &run2, &s).unwrap();
    let o = wait_finished(&run2, 3001, Duration::from_secs(20));
    assert_eq!((o.state, o.output_truncated), (JobState::Succeeded, false), "{o:?}");
    let stdout = fs::read_to_string(out.join("stdout.log")).unwrap();
    assert!(stdout.ends_with(&format!("{}second run\n", marker(limit))), "{}", &stdout[stdout.len() - 200..]);
    assert_eq!(tail_stream(&run2, 0, LogStream::Stderr, 0).unwrap().0, b"oops\n");
    // In order, across both runs: the marker where the cap was reached, then run 2's lines.
    let view = read_output(&run2, LogSelect::ALL, &LogCursor::default(), true, 1 << 20).unwrap();
    assert!(!view.more);
    let tail: Vec<(LogStream, String)> = view
        .pieces
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|p| (p.stream, String::from_utf8_lossy(&p.data).into_owned()))
        .collect();
    assert_eq!(tail.len(), 3);
    assert!(tail[0].1.ends_with(&marker(limit)), "{tail:?}");
    assert_eq!(tail[1..], [(LogStream::Stdout, "second run\n".into()), (LogStream::Stderr, "oops\n".into())]);
    assert!(read(&run2, "shim.log").contains("job 3001 run 2"), "{}", read(&run2, "shim.log"));
}

/// Ranks writing to both streams at once: each rank's lines land in its own files, in order.
#[test]
fn each_rank_and_stream_keeps_its_own_file_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let script = r#"i=0; while [ $i -lt 300 ]; do echo "r$RANK out $i"; echo "r$RANK err $i" >&2; i=$((i+1)); done"#;
    let ranks = (0..3).map(|r| rank(3101, r, 3, vec![], None)).collect();
    let mut s = spec(3101, script, ranks);
    s.output_limit_bytes = Some(1 << 20);
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 3101, Duration::from_secs(30));
    assert_eq!((o.state, o.output_truncated), (JobState::Succeeded, false), "{o:?}");
    for r in 0..3u32 {
        for (stream, word) in [(LogStream::Stdout, "out"), (LogStream::Stderr, "err")] {
            let text = String::from_utf8(tail_stream(&dir, r, stream, 0).unwrap().0).unwrap();
            let want: String = (0..300).map(|i| format!("r{r} {word} {i}\n")).collect();
            assert!(text == want, "rank {r} {word}: {} bytes, want {}", text.len(), want.len());
        }
    }
}

/// A rank writing to both streams in turn, with partial lines and bytes that are not UTF-8:
/// read back through the order index as it was written, each piece with its time.
#[test]
fn both_streams_come_back_in_the_order_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let script = r#"printf 'out 1\n'; sleep 0.2; printf 'err 1\n' >&2; sleep 0.2; printf 'out partial'; sleep 0.2
        printf 'err \377\376 2\n' >&2; sleep 0.2; printf ' rest\n'; sleep 0.2; printf 'err 3' >&2"#;
    launch(Path::new(SHIM), &[], &dir, &one_rank(3051, script)).unwrap();
    let o = wait_finished(&dir, 3051, Duration::from_secs(20));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    let view = read_output(&dir, LogSelect::ALL, &LogCursor::default(), true, 1 << 20).unwrap();
    let got: Vec<(LogStream, &[u8])> = view.pieces.iter().map(|p| (p.stream, p.data.as_slice())).collect();
    let want: Vec<(LogStream, &[u8])> = vec![
        (LogStream::Stdout, b"out 1\n"),
        (LogStream::Stderr, b"err 1\n"),
        (LogStream::Stdout, b"out partial"),
        (LogStream::Stderr, b"err \xff\xfe 2\n"),
        (LogStream::Stdout, b" rest\n"),
        (LogStream::Stderr, b"err 3"),
    ];
    assert_eq!(got, want);
    let times: Vec<u64> = view.pieces.iter().map(|p| p.time_ms.expect("every piece has a time")).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // The per-stream logs are as before.
    assert_eq!(tail_stream(&dir, 0, LogStream::Stdout, 0).unwrap().0, b"out 1\nout partial rest\n");
}

/// A rank that exits leaving a process that holds its stdout open (and escaped its process
/// group): the shim does not wait for an end of file that never comes.
#[test]
fn a_pipe_held_open_by_an_escaped_process_does_not_hold_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let t0 = Instant::now();
    launch(Path::new(SHIM), &[], &dir, &one_rank(3201, r#"setsid sleep 300 & echo "bg=$!""#)).unwrap();
    let o = wait_finished(&dir, 3201, Duration::from_secs(20));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    let bg: u32 = field(&read(&dir, "stdout.log"), "bg=").unwrap().parse().unwrap();
    // Without a cgroup the escaped process lives on (see the isolation tests); clean up.
    let _ = std::process::Command::new("kill").args(["-9", &bg.to_string()]).status();
}

/// A small tmpfs mounted for the test (root only); unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tessera-test", &at.display().to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The output file system fills up: one note per stream, the job runs on and succeeds, and
/// status.json (on the state file system) is written.
#[test]
fn a_full_output_filesystem_is_noted_and_the_job_goes_on() {
    if effective_uid() != 0 {
        eprintln!("skipped a_full_output_filesystem_is_noted_and_the_job_goes_on: needs root to mount a tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mount = match Tmpfs::mount(&tmp.path().join("small"), "64k") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped a_full_output_filesystem_is_noted_and_the_job_goes_on: cannot mount a tmpfs: {e}");
            return;
        }
    };
    let dir = job_dir(&tmp, "job");
    let done = tmp.path().join("done");
    let script = format!(
        r#"yes "$(printf '%099d' 0)" | head -n 5000; yes err | head -n 40000 >&2; echo still here > {}"#,
        done.display()
    );
    let mut s = one_rank(3301, &script);
    s.output_dir = Some(mount.0.join("out"));
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 3301, Duration::from_secs(30));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    assert!(o.output_truncated);
    assert_eq!(read(tmp.path(), "done"), "still here\n", "the job ran to its end");
    let failures: Vec<&String> = o.binding_notes.iter().filter(|n| n.contains("No space left on device")).collect();
    assert_eq!(failures.len(), 2, "one note per stream: {:?}", o.binding_notes);
    assert!(failures[0].starts_with("rank 0 stdout: writing ") || failures[1].starts_with("rank 0 stdout: writing "));
    drop(mount);
}
