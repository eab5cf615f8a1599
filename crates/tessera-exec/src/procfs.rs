//! The few `/proc` reads the executor needs: a process's command line, and its `stat` fields
//! (state, process group, session, start time), and a scan for a session's members.

use std::fs;
use std::path::Path;

/// Fields of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: u32,
    pub session: u32,
    pub start_time: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field n is fields[n - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The arguments of a live process (empty for a zombie or a kernel thread).
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(bytes.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Whether `pid` is alive and is that job's shim, not a process that reused the pid: its
/// command line has `job_dir` as an argument (or as the value of `--job-dir=`), or it is a
/// standby shim (`--standby`) that took the job up and so works in `job_dir`.
pub(crate) fn is_shim_of(pid: u32, job_dir: &Path) -> bool {
    let Some(args) = cmdline(pid) else { return false };
    let dir = job_dir.to_string_lossy();
    if args.iter().any(|a| *a == dir || a.strip_prefix("--job-dir=") == Some(&*dir)) {
        return true;
    }
    args.iter().any(|a| a == "--standby")
        && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.as_path() == job_dir)
}

/// The live (non-zombie) processes whose `stat` passes `keep`, sorted.
fn live_processes(keep: impl Fn(&ProcStat) -> bool) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.state != 'Z' && keep(&s)))
        .collect();
    pids.sort_unstable();
    pids
}

/// The live processes whose session id is `sid`.
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    live_processes(|s| s.session == sid)
}

/// The live processes in process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    live_processes(|s| s.pgrp == pgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let line = "1234 (we ird) name)) S 1 1200 1100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, ProcStat { state: 'S', pgrp: 1200, session: 1100, start_time: 987654 });
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn reads_own_entries() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(s.start_time > 0);
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(session_members(s.session).contains(&me));
        assert!(group_members(s.pgrp).contains(&me));
        assert!(!is_shim_of(me, Path::new("/definitely/not/an/argument")));
    }
}
