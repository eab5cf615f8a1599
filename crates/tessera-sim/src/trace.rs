//! The simulator's inputs, read with errors that name the file, line and column.
//!
//! - Alibaba's openb traces (`cluster-trace-gpu-v2023`, the FGD paper's data): node lists
//!   (`sn,cpu_milli,memory_mib,gpu,model`) and pod lists
//!   (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time`;
//!   the `multigpu*` files carry only the first five columns).
//! - Tessera's native job format, one job per line:
//!   `job_id,submit_s,duration_s,tenant,num_gpu,gpu_milli,gpu_mem_mib,cpus,mem_mib,model_class`.
//!
//! Readers take the text and a name for messages, so tests need no files; `read_*` wrap them.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What is wrong with a trace file.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: line 1: header is '{found}', expected '{expected}'")]
    Header { source_name: String, expected: String, found: String },
    #[error("{source_name}: line {line}: {found} fields, expected {expected}")]
    FieldCount { source_name: String, line: usize, expected: usize, found: usize },
    #[error("{source_name}: line {line}, column '{column}': {reason} (found '{value}')")]
    Field { source_name: String, line: usize, column: &'static str, value: String, reason: String },
    #[error("{source_name}: no rows")]
    Empty { source_name: String },
}

/// One node of an openb node list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// CPU capacity in milli-cores.
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// GPUs on the node (0 on CPU-only nodes).
    pub gpus: u32,
    /// GPU type (`P100`, `T4`, `V100M16`, `V100M32`, `A10`, `G2`, `G3`); empty on CPU-only nodes.
    pub model: String,
}

/// One pod (task) of an openb pod list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// GPUs requested: 0 (CPU-only), 1, 2, 4, 8.
    pub num_gpu: u32,
    /// Share of each GPU in milli-GPU: below 1000 only for single-GPU sharing pods.
    pub gpu_milli: u32,
    /// Allowed GPU types; empty means any.
    pub gpu_spec: Vec<String>,
    /// `LS`, `BE`, `Burstable`, `Guaranteed`; empty in the `multigpu*` files.
    pub qos: String,
    pub pod_phase: String,
    pub creation_s: Option<u64>,
    pub deletion_s: Option<u64>,
    pub scheduled_s: Option<u64>,
}

impl Pod {
    /// GPU demand in milli-GPU (`num_gpu × gpu_milli`).
    pub fn gpu_demand_milli(&self) -> u64 {
        u64::from(self.num_gpu) * u64::from(self.gpu_milli)
    }
}

/// One job in Tessera's native format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Arrival, in seconds from the start of the trace.
    pub submit_s: f64,
    /// Running time on a whole GPU (each of its GPUs), in seconds.
    pub duration_s: f64,
    pub tenant: String,
    /// GPUs requested: 0 (CPU-only) or more.
    pub num_gpu: u32,
    /// Share of one GPU, 1–1000; 1000 when `num_gpu > 1`.
    pub gpu_milli: u32,
    /// GPU memory per GPU in MiB; 0 means unknown.
    pub gpu_mem_mib: u64,
    pub cpus: f64,
    pub mem_mib: u64,
    /// Picks a speed curve; empty means the default curve.
    pub model_class: String,
}

/// The native format's header line.
pub const JOBS_HEADER: &str =
    "job_id,submit_s,duration_s,tenant,num_gpu,gpu_milli,gpu_mem_mib,cpus,mem_mib,model_class";
const NODES_HEADER: &str = "sn,cpu_milli,memory_mib,gpu,model";
const PODS_HEADER: &str =
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time";
const PODS_SHORT_HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli";

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Io { path: path.display().to_string(), source })
}

/// Read an openb node list.
pub fn read_openb_nodes(path: &Path) -> Result<Vec<Node>, TraceError> {
    parse_openb_nodes(&read(path)?, &path.display().to_string())
}

/// Read an openb pod list (full or `multigpu*` five-column form).
pub fn read_openb_pods(path: &Path) -> Result<Vec<Pod>, TraceError> {
    parse_openb_pods(&read(path)?, &path.display().to_string())
}

/// Read a job file in the native format.
pub fn read_jobs_csv(path: &Path) -> Result<Vec<Job>, TraceError> {
    parse_jobs_csv(&read(path)?, &path.display().to_string())
}

/// Lines of a CSV text: (1-based line number, fields), header first; blank lines skipped.
fn rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n, l.split(',').map(str::trim).collect()))
}

struct Row<'a> {
    source: &'a str,
    line: usize,
}

impl Row<'_> {
    fn err(&self, column: &'static str, value: &str, reason: impl Into<String>) -> TraceError {
        TraceError::Field {
            source_name: self.source.to_string(),
            line: self.line,
            column,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn uint(&self, column: &'static str, value: &str) -> Result<u64, TraceError> {
        value.parse::<u64>().map_err(|_| self.err(column, value, "not a whole number of 0 or more"))
    }

    fn u32(&self, column: &'static str, value: &str) -> Result<u32, TraceError> {
        let v = self.uint(column, value)?;
        u32::try_from(v).map_err(|_| self.err(column, value, "too large"))
    }

    fn opt_uint(&self, column: &'static str, value: &str) -> Result<Option<u64>, TraceError> {
        if value.is_empty() { Ok(None) } else { self.uint(column, value).map(Some) }
    }

    fn seconds(&self, column: &'static str, value: &str) -> Result<f64, TraceError> {
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(self.err(column, value, "not a number of seconds of 0 or more")),
        }
    }
}

fn check_header(source: &str, found: &[&str], expected: &[&str]) -> Result<(), TraceError> {
    let found_line = found.join(",");
    if expected.iter().any(|e| *e == found_line) {
        return Ok(());
    }
    Err(TraceError::Header { source_name: source.to_string(), expected: expected[0].to_string(), found: found_line })
}

fn check_count(source: &str, line: usize, fields: &[&str], expected: usize) -> Result<(), TraceError> {
    if fields.len() == expected {
        Ok(())
    } else {
        Err(TraceError::FieldCount { source_name: source.to_string(), line, expected, found: fields.len() })
    }
}

/// Parse an openb node list; `source` names it in errors.
pub fn parse_openb_nodes(text: &str, source: &str) -> Result<Vec<Node>, TraceError> {
    let mut it = rows(text);
    let Some((_, header)) = it.next() else { return Err(TraceError::Empty { source_name: source.to_string() }) };
    check_header(source, &header, &[NODES_HEADER])?;
    let mut out = Vec::new();
    for (line, f) in it {
        check_count(source, line, &f, 5)?;
        let r = Row { source, line };
        if f[0].is_empty() {
            return Err(r.err("sn", f[0], "empty node name"));
        }
        let gpus = r.u32("gpu", f[3])?;
        if gpus > 0 && f[4].is_empty() {
            return Err(r.err("model", f[4], "a node with GPUs needs a GPU model"));
        }
        out.push(Node {
            name: f[0].to_string(),
            cpu_milli: r.uint("cpu_milli", f[1])?,
            memory_mib: r.uint("memory_mib", f[2])?,
            gpus,
            model: f[4].to_string(),
        });
    }
    if out.is_empty() {
        return Err(TraceError::Empty { source_name: source.to_string() });
    }
    Ok(out)
}

/// Parse an openb pod list; `source` names it in errors.
pub fn parse_openb_pods(text: &str, source: &str) -> Result<Vec<Pod>, TraceError> {
    let mut it = rows(text);
    let Some((_, header)) = it.next() else { return Err(TraceError::Empty { source_name: source.to_string() }) };
    check_header(source, &header, &[PODS_HEADER, PODS_SHORT_HEADER])?;
    let width = header.len();
    let mut out = Vec::new();
    for (line, f) in it {
        check_count(source, line, &f, width)?;
        let r = Row { source, line };
        if f[0].is_empty() {
            return Err(r.err("name", f[0], "empty pod name"));
        }
        let num_gpu = r.u32("num_gpu", f[3])?;
        let gpu_milli = r.u32("gpu_milli", f[4])?;
        if gpu_milli > 1000 {
            return Err(r.err("gpu_milli", f[4], "more than 1000 milli-GPU (one GPU)"));
        }
        if num_gpu > 1 && gpu_milli != 1000 {
            return Err(r.err("gpu_milli", f[4], format!("a {num_gpu}-GPU pod must ask for whole GPUs (1000)")));
        }
        if num_gpu > 0 && gpu_milli == 0 {
            return Err(r.err("gpu_milli", f[4], "a GPU pod must ask for more than 0 milli-GPU"));
        }
        let full = width == 11;
        out.push(Pod {
            name: f[0].to_string(),
            cpu_milli: r.uint("cpu_milli", f[1])?,
            memory_mib: r.uint("memory_mib", f[2])?,
            num_gpu,
            gpu_milli: if num_gpu == 0 { 0 } else { gpu_milli },
            gpu_spec: if full && !f[5].is_empty() {
                f[5].split('|').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
            } else {
                Vec::new()
            },
            qos: if full { f[6].to_string() } else { String::new() },
            pod_phase: if full { f[7].to_string() } else { String::new() },
            creation_s: if full { r.opt_uint("creation_time", f[8])? } else { None },
            deletion_s: if full { r.opt_uint("deletion_time", f[9])? } else { None },
            scheduled_s: if full { r.opt_uint("scheduled_time", f[10])? } else { None },
        });
    }
    if out.is_empty() {
        return Err(TraceError::Empty { source_name: source.to_string() });
    }
    Ok(out)
}

/// Parse jobs in the native format; `source` names it in errors.
pub fn parse_jobs_csv(text: &str, source: &str) -> Result<Vec<Job>, TraceError> {
    let mut it = rows(text);
    let Some((_, header)) = it.next() else { return Err(TraceError::Empty { source_name: source.to_string() }) };
    check_header(source, &header, &[JOBS_HEADER])?;
    let mut out = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (line, f) in it {
        check_count(source, line, &f, 10)?;
        let r = Row { source, line };
        if f[0].is_empty() {
            return Err(r.err("job_id", f[0], "empty job id"));
        }
        if !ids.insert(f[0].to_string()) {
            return Err(r.err("job_id", f[0], "job id used twice"));
        }
        let num_gpu = r.u32("num_gpu", f[4])?;
        let gpu_milli = r.u32("gpu_milli", f[5])?;
        if num_gpu > 0 && !(1..=1000).contains(&gpu_milli) {
            return Err(r.err("gpu_milli", f[5], "must be 1–1000 (the share of one GPU)"));
        }
        if num_gpu > 1 && gpu_milli != 1000 {
            return Err(r.err("gpu_milli", f[5], format!("a {num_gpu}-GPU job must ask for whole GPUs (1000)")));
        }
        let duration_s = r.seconds("duration_s", f[2])?;
        if duration_s <= 0.0 {
            return Err(r.err("duration_s", f[2], "must be above 0"));
        }
        let cpus = match f[7].parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => return Err(r.err("cpus", f[7], "not a number of CPUs of 0 or more")),
        };
        out.push(Job {
            id: f[0].to_string(),
            submit_s: r.seconds("submit_s", f[1])?,
            duration_s,
            tenant: if f[3].is_empty() { "default".to_string() } else { f[3].to_string() },
            num_gpu,
            gpu_milli: if num_gpu == 0 { 0 } else { gpu_milli },
            gpu_mem_mib: r.uint("gpu_mem_mib", f[6])?,
            cpus,
            mem_mib: r.uint("mem_mib", f[8])?,
            model_class: f[9].to_string(),
        });
    }
    if out.is_empty() {
        return Err(TraceError::Empty { source_name: source.to_string() });
    }
    out.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    Ok(out)
}

/// Write jobs in the native format (header first).
pub fn write_jobs_csv(jobs: &[Job]) -> String {
    let mut s = String::with_capacity(64 * (jobs.len() + 1));
    s.push_str(JOBS_HEADER);
    s.push('\n');
    for j in jobs {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            j.id,
            j.submit_s,
            j.duration_s,
            j.tenant,
            j.num_gpu,
            j.gpu_milli,
            j.gpu_mem_mib,
            j.cpus,
            j.mem_mib,
            j.model_class
        );
    }
    s
}

/// The jobs of an openb pod list for time-driven replay: pods that were scheduled, with
/// `submit = creation_time` (shifted so the window starts at 0), `duration = deletion_time −
/// scheduled_time` (at least 1 s), the QoS class as the tenant, and the default speed curve.
/// With `last_days`, only pods created in the trace's last that many days.
pub fn jobs_from_openb(pods: &[Pod], last_days: Option<f64>) -> Vec<Job> {
    let timed: Vec<&Pod> = pods.iter().filter(|p| p.creation_s.is_some() && p.scheduled_s.is_some()).collect();
    let end = timed.iter().filter_map(|p| p.creation_s).max().unwrap_or(0);
    let from = match last_days {
        Some(d) => end.saturating_sub((d * 86_400.0) as u64),
        None => timed.iter().filter_map(|p| p.creation_s).min().unwrap_or(0),
    };
    let mut jobs: Vec<Job> = timed
        .into_iter()
        .filter(|p| p.creation_s.unwrap_or(0) >= from)
        .map(|p| {
            let created = p.creation_s.unwrap_or(0);
            let scheduled = p.scheduled_s.unwrap_or(created);
            let deleted = p.deletion_s.unwrap_or(scheduled);
            Job {
                id: p.name.clone(),
                submit_s: (created - from) as f64,
                duration_s: deleted.saturating_sub(scheduled).max(1) as f64,
                tenant: if p.qos.is_empty() { "default".to_string() } else { p.qos.clone() },
                num_gpu: p.num_gpu,
                gpu_milli: p.gpu_milli,
                gpu_mem_mib: 0,
                cpus: p.cpu_milli as f64 / 1000.0,
                mem_mib: p.memory_mib,
                model_class: String::new(),
            }
        })
        .collect();
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s).then_with(|| a.id.cmp(&b.id)));
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_column() {
        let text = format!("{JOBS_HEADER}\nj1,0,10,a,1,500,0,2,1024,\nj2,5,-3,a,1,500,0,2,1024,\n");
        let e = parse_jobs_csv(&text, "jobs.csv").unwrap_err().to_string();
        assert_eq!(e, "jobs.csv: line 3, column 'duration_s': not a number of seconds of 0 or more (found '-3')");
        let e = parse_jobs_csv(&format!("{JOBS_HEADER}\nj1,0,10,a,2,500,0,2,1024,\n"), "x").unwrap_err().to_string();
        assert!(e.contains("column 'gpu_milli'") && e.contains("whole GPUs"), "{e}");
        let e = parse_jobs_csv("a,b\n", "x").unwrap_err().to_string();
        assert!(e.starts_with("x: line 1: header is 'a,b'"), "{e}");
        let e = parse_jobs_csv(&format!("{JOBS_HEADER}\nj1,0,10\n"), "x").unwrap_err().to_string();
        assert_eq!(e, "x: line 2: 3 fields, expected 10");
    }

    #[test]
    fn native_round_trip() {
        let text = format!("{JOBS_HEADER}\nb,5.5,10,t2,1,250,4096,2,1024,resnet\na,0,20,,2,1000,0,8,0,\n");
        let jobs = parse_jobs_csv(&text, "x").unwrap();
        assert_eq!(jobs[0].id, "a", "sorted by submit time");
        assert_eq!(jobs[0].tenant, "default");
        assert_eq!(parse_jobs_csv(&write_jobs_csv(&jobs), "y").unwrap(), jobs);
    }

    #[test]
    fn openb_short_and_full_pods() {
        let short = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,8000,1024,2,1000\n";
        let pods = parse_openb_pods(short, "s").unwrap();
        assert_eq!(pods[0].num_gpu, 2);
        assert!(pods[0].creation_s.is_none());
        let full = format!("{PODS_HEADER}\np1,6000,12288,1,460,V100M16|V100M32,LS,Running,100,900,110\n");
        let pods = parse_openb_pods(&full, "f").unwrap();
        assert_eq!(pods[0].gpu_spec, vec!["V100M16", "V100M32"]);
        let jobs = jobs_from_openb(&pods, None);
        assert_eq!((jobs[0].submit_s, jobs[0].duration_s, jobs[0].tenant.as_str()), (0.0, 790.0, "LS"));
    }
}
