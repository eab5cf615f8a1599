//! The API's requests and replies, as typed structs shared by the engine (which builds them),
//! the HTTP layer (which sends them), the client and the CLI (which read them). Nothing on
//! either side reads a reply by string key. Every request body refuses unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use tessera_sched::JobRequest;
pub use tessera_store::{ExternalWork, JobState};

pub use crate::http::{ErrorBody, ErrorDetail};

/// `POST /v1/jobs`: a job of processes Tessera runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Program and arguments, e.g. `["python", "train.py"]`.
    pub command: Vec<String>,
    /// Environment for the job (names as `execve` takes them: no `=`, no NUL).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute, existing, searchable by the user).
    pub cwd: String,
    /// What the job needs: GPU, ranks, sharing, CPUs, memory, tenant, priority, runtime
    /// estimate and limit, whether it may be requeued.
    pub resources: JobRequest,
    /// The signal a preempted job gets before SIGKILL (`SIGTERM` by default), by name
    /// (`SIGUSR1`, `USR1`) or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_signal: Option<String>,
}

/// `POST /v1/work`, admins only: work another system runs (a Slurm job, through
/// `tessera slurm`), for which Tessera decides and holds slices but starts nothing. The door
/// names that system, the key its work (a Slurm job id); the job's slices, CPUs and NUMA node
/// are read back with `GET /v1/jobs/{id}` once it runs, and `POST /v1/jobs/{id}/release` ends it.
/// A request that pins instances (`request.pin`) holds exactly those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    /// What the work needs, as a submission's `resources`.
    pub request: JobRequest,
    /// Which system runs it: 1 to [`MAX_DOOR_BYTES`] of `a-z`, `0-9` and `-`, not one of
    /// [`RESERVED_DOORS`].
    pub door: String,
    /// Whose work it is in that system: 1 to [`MAX_KEY_CHARS`] characters (as the OpenAPI document's
    /// `maxLength` counts them), no control characters.
    pub key: String,
}

/// The longest door name of a [`WorkRequest`].
pub const MAX_DOOR_BYTES: usize = 32;
/// The longest key of a [`WorkRequest`], in characters.
pub const MAX_KEY_CHARS: usize = 256;
/// Doors the API refuses in a [`WorkRequest`]: those of front doors inside the daemon. The
/// Kubernetes door (`kubernetes`) releases every hold of its door that the kubelet does not
/// list, so work submitted under its name through the API would be taken back.
pub const RESERVED_DOORS: &[&str] = &["kubernetes"];
/// The longest `detail` of a [`ReleaseRequest`], in characters.
pub const MAX_RELEASE_DETAIL_CHARS: usize = 1024;

/// `POST /v1/jobs/{id}/release`: external work ended (its owner or an admin says how). The job
/// ends `succeeded` or `failed` and its slices are free again; the reply is the job after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Whether the work succeeded: the job ends `succeeded`, else `failed`.
    pub succeeded: bool,
    /// The work's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why it ended, in words (the job's reason): at most [`MAX_RELEASE_DETAIL_CHARS`] characters, no
    /// control characters; empty: `released by <caller>`.
    #[serde(default)]
    pub detail: String,
}

/// The reply to a submission (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    pub id: u64,
}

/// `GET /v1/jobs`: which jobs. Every filter narrows the list; by default the caller's own
/// active jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobQuery {
    /// Only jobs in these states; empty: the active ones ([`JobQuery::ACTIVE`]), or every state
    /// with `history`.
    #[serde(default)]
    pub states: Vec<JobState>,
    /// Ended jobs too.
    #[serde(default)]
    pub history: bool,
    /// Only jobs still active or ended at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Only this user's jobs (another user's: admins only).
    #[serde(default)]
    pub user: Option<String>,
    /// Only jobs charged to this tenant (a non-admin's own; an admin's: every user's).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Every user's jobs (admins only).
    #[serde(default)]
    pub all: bool,
    /// At most this many jobs in the reply (a page, by increasing id); over HTTP, none means
    /// [`JobQuery::DEFAULT_LIMIT`] and more than [`JobQuery::MAX_LIMIT`] is refused. In the
    /// daemon's own process (front doors), none means every match.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only jobs after this id: the previous page's [`JobList::next`].
    #[serde(default)]
    pub after: Option<u64>,
}

impl JobQuery {
    /// The states of a job that has not ended.
    pub const ACTIVE: [JobState; 3] = [JobState::Queued, JobState::Placing, JobState::Running];
    /// A page's size when `GET /v1/jobs` names none.
    pub const DEFAULT_LIMIT: u32 = 500;
    /// The largest page `GET /v1/jobs` gives: small enough that one page holds the daemon's
    /// reader briefly, so other users' listings go on between one big listing's pages.
    pub const MAX_LIMIT: u32 = 1_000;

    /// The states the query lists: the ones named, else the active ones, or every state with
    /// `history` or `since_ms`.
    pub fn effective_states(&self) -> Vec<JobState> {
        if !self.states.is_empty() {
            self.states.clone()
        } else if self.history || self.since_ms.is_some() {
            JobState::ALL.to_vec()
        } else {
            JobQuery::ACTIVE.to_vec()
        }
    }

    /// The query as `GET /v1/jobs` takes it (`state=queued,running&history=true&user=…`),
    /// percent-encoded.
    pub fn query_string(&self) -> String {
        let mut parts = vec![format!("all={}", self.all)];
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            parts.push(format!("state={}", states.join(",")));
        }
        if self.history {
            parts.push("history=true".into());
        }
        if let Some(ms) = self.since_ms {
            parts.push(format!("since_ms={ms}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={}", percent_encode(u)));
        }
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant={}", percent_encode(t)));
        }
        if let Some(n) = self.limit {
            parts.push(format!("limit={n}"));
        }
        if let Some(id) = self.after {
            parts.push(format!("after={id}"));
        }
        parts.join("&")
    }
}

/// `text` as a query-string value: unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A list of jobs: one page, by increasing id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// More jobs match after this page: ask again with `after` set to this (the page's last
    /// id). `None`: this page is the last.
    #[serde(default)]
    pub next: Option<u64>,
}

/// One job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    pub user: String,
    pub uid: u32,
    pub tenant: String,
    pub priority: i32,
    pub state: JobState,
    /// Why it is in its state; while queued, why it waits (`capacity: …`, `host_memory: …`).
    pub reason: String,
    /// Processes Tessera runs: the command line. `None` for external work.
    pub command: Option<Vec<String>>,
    pub cwd: Option<String>,
    /// Work another front door runs (a pod, a Slurm job).
    pub external: Option<ExternalWork>,
    pub submitted_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// What it asked for.
    pub resources: JobRequest,
    /// How many times it was started (above 1: it was requeued).
    pub runs: u32,
    /// Where its ranks run (its current or last run).
    pub ranks: Vec<RankView>,
    pub exit: Option<ExitView>,
    /// Every state change, oldest first (`GET /v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
    /// Who asked to cancel it (its owner or an admin), once someone did.
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

impl JobView {
    /// Whether the job has ended.
    pub fn ended(&self) -> bool {
        self.state.is_terminal()
    }
}

/// One rank: its devices, CPUs, NUMA node and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankView {
    pub rank: u32,
    /// What its process sees in `CUDA_VISIBLE_DEVICES`.
    pub devices: Vec<String>,
    /// Its CPUs, in the kernel's list format (`0-3,8`); `None` when not bound.
    pub cpus: Option<String>,
    /// How many CPUs that is.
    #[serde(default)]
    pub cpu_count: u32,
    /// The host NUMA node its memory is bound to.
    pub numa_node: Option<u32>,
    pub mem_mib: u64,
    pub slices: Vec<SliceView>,
}

/// One slice of a rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceView {
    pub gpu: u32,
    pub gpu_uuid: String,
    /// MIG on: the instance's profile; MIG off: the model's full profile (the whole GPU).
    pub profile: Option<String>,
    pub profile_id: u32,
    pub start: u8,
    /// `false`: a GPU with MIG off, used whole.
    pub mig: bool,
    pub gpu_instance_id: Option<u32>,
    pub mig_uuid: Option<String>,
    pub exclusive: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub failed_rank: Option<u32>,
    pub detail: String,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub from: JobState,
    pub to: JobState,
    pub reason: String,
    pub at_ms: u64,
}

/// The reply to a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub id: u64,
    pub state: CancelState,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    /// It had not started: it is cancelled now.
    Cancelled,
    /// Its ranks are being stopped; it ends `cancelled` once they are gone.
    Cancelling,
}

impl std::fmt::Display for CancelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelState::Cancelled => "cancelled",
            CancelState::Cancelling => "cancelling",
        })
    }
}

/// Which output stream of a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

impl Stream {
    /// As the API's `stream` parameter writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Stream, String> {
        [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("'{s}': use stdout or stderr"))
    }
}

/// The reply to `POST /v1/jobs/dry-run` (its body is a [`SubmitRequest`]): what the job would
/// get if it were submitted now — admission, then one scheduling decision on the node as it is
/// with the job added, acting on nothing. A request admission refuses gets the same error a
/// submission would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReply {
    pub verdict: DryRunVerdict,
    /// The profiles one rank needs, per GPU model of the node (`H100-80GB: 1g.10gb`).
    pub profiles: Vec<String>,
    /// Where its ranks would run ([`DryRunVerdict::Start`]).
    pub ranks: Vec<DryRunRank>,
    /// The reconfigurations it needs first ([`DryRunVerdict::Reconfigure`]).
    pub reconfigure: Vec<DryRunReconfigure>,
    /// The jobs that would be preempted for it.
    pub preempt: Vec<u64>,
    /// Why it would wait, as `tessera jobs` would show it (`capacity: …`); empty when it starts.
    pub reason: String,
}

/// What a submission now would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DryRunVerdict {
    /// It would start at once.
    Start,
    /// It would wait while GPUs are reconfigured (or jobs preempted) for it, then start.
    Reconfigure,
    /// It would wait in the queue.
    Wait,
}

impl std::fmt::Display for DryRunVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DryRunVerdict::Start => "start",
            DryRunVerdict::Reconfigure => "reconfigure",
            DryRunVerdict::Wait => "wait",
        })
    }
}

/// Where one rank would run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunRank {
    pub rank: u32,
    pub slices: Vec<DryRunSlice>,
    /// Its CPUs, in the kernel's list format; `None` when not bound.
    pub cpus: Option<String>,
    pub cpu_count: u32,
    pub numa_node: Option<u32>,
    pub mem_mib: u64,
}

/// One slice a rank would get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunSlice {
    pub gpu: u32,
    pub profile: Option<String>,
    pub start: u8,
    /// `false`: a GPU with MIG off, used whole.
    pub mig: bool,
    /// The GPU instance there now.
    pub gpu_instance_id: Option<u32>,
}

/// A GPU change the job would wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReconfigure {
    pub gpu: u32,
    /// `destroy 2g.20gb@4`, `create 1g.10gb@6`, `MIG on`, …
    pub steps: Vec<String>,
}

/// A read of a job's output (`GET /v1/jobs/{id}/logs`): both streams of every rank in the
/// order they were written unless narrowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this rank (`None`: every rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Only this stream (`None`: both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    /// Go on from here: a previous chunk's `next`. `None`: from the start, or from `tail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<LogCursor>,
    /// Without `from`: start at the last this many lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
}

impl LogQuery {
    /// The query string of `GET /v1/jobs/{id}/logs`.
    pub fn query_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(rank) = self.rank {
            parts.push(format!("rank={rank}"));
        }
        if let Some(stream) = self.stream {
            parts.push(format!("stream={}", stream.as_str()));
        }
        if let Some(from) = &self.from {
            parts.push(format!("from={from}"));
        }
        if let Some(n) = self.tail {
            parts.push(format!("tail={n}"));
        }
        parts.join("&")
    }
}

/// Where a read of a job's output goes on, as a token: `RECORD` (index records already read)
/// then `,RANK` `o` or `e` `OFFSET` for each log (bytes of it already read), e.g. `12,0o340,0e17`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub record: u64,
    pub done: Vec<(u32, Stream, u64)>,
}

impl std::fmt::Display for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.record)?;
        for (rank, stream, offset) in &self.done {
            let s = match stream {
                Stream::Stdout => 'o',
                Stream::Stderr => 'e',
            };
            write!(f, ",{rank}{s}{offset}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LogCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<LogCursor, String> {
        let bad = || format!("'{text}' is not a cursor a log read returned (RECORD,RANKoOFFSET,RANKeOFFSET…)");
        let mut parts = text.split(',');
        let record = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
        let done = parts
            .map(|p| {
                let (rank, offset, stream) = match (p.split_once('o'), p.split_once('e')) {
                    (Some((r, o)), None) => (r, o, Stream::Stdout),
                    (None, Some((r, o))) => (r, o, Stream::Stderr),
                    _ => return None,
                };
                Some((rank.parse().ok()?, stream, offset.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(LogCursor { record, done })
    }
}

impl Serialize for LogCursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogCursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogCursor, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Bytes of a job's output, sent as base64 (output need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBytes(pub Vec<u8>);

impl Serialize for LogBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for LogBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogBytes, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map(LogBytes).map_err(serde::de::Error::custom)
    }
}

/// Bytes one rank wrote to one stream at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPiece {
    pub rank: u32,
    pub stream: Stream,
    /// When the supervisor read them, in milliseconds since the Unix epoch; `None` for output
    /// whose order was not recorded (a supervisor from before the order index, or one whose
    /// index failed): it comes after what was recorded.
    pub time_ms: Option<u64>,
    /// The bytes, base64.
    pub data: LogBytes,
}

/// A job's output (`GET /v1/jobs/{id}/logs`), in the order it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub pieces: Vec<LogPiece>,
    /// Read on from here (`from`).
    pub next: LogCursor,
    /// The chunk stopped at its size limit: more is there now.
    pub more: bool,
    /// The job has ended: nothing more will come once `more` is false.
    pub job_ended: bool,
    /// How many ranks the job has.
    pub ranks: u32,
}

/// The node's GPUs (`GET /v1/gpus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuList {
    /// `nvml` or `sim`.
    pub backend: String,
    pub gpus: Vec<GpuInfo>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    /// The catalog model, when known.
    pub model: Option<String>,
    pub numa_node: Option<u32>,
    /// Its device node's number, `/dev/nvidia<minor>` (the driver's minor number, as the
    /// backend reads it; `None` from a server before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    /// The CPUs of its NUMA node, in the kernel's list format, as CPUs **of this machine**: on
    /// the simulated node the simulated NUMA node's CPUs folded onto the CPUs the daemon may
    /// use, as a job's are when it is bound. `None` when none are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_cpus: Option<String>,
    /// MIG mode in force.
    pub mig: bool,
    /// Why no new work goes to it, when an admin drained it.
    pub drained: Option<DrainView>,
    /// `healthy`, `degraded: …` or `unhealthy: …`.
    pub health: String,
    pub instances: Vec<InstanceInfo>,
}

/// One GPU instance (or, MIG off, the whole GPU) and the jobs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub gpu_instance_id: Option<u32>,
    pub profile: String,
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
    pub jobs: Vec<u64>,
    /// The jobs on it with their users and tenants (several when it is shared).
    #[serde(default)]
    pub occupants: Vec<Occupant>,
    pub mig_uuid: Option<String>,
    pub healthy: bool,
    /// The minor of the GPU instance's `/dev/nvidia-caps/nvidia-cap<N>` (`None`: MIG off, the
    /// driver does not publish `mig-minors`, or a server before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gi_caps_minor: Option<u32>,
    /// The minor of its (first) compute instance's `/dev/nvidia-caps/nvidia-cap<N>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_caps_minor: Option<u32>,
}

/// A job on an instance, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    pub job: u64,
    pub user: String,
    pub tenant: String,
    /// For work another system runs, which front door and whose (a pod: `kubernetes`,
    /// `<namespace>/<pod>/<container>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<tessera_store::ExternalWork>,
}

/// A drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

/// `POST /v1/gpus/{gpu}/drain` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    #[serde(default)]
    pub reason: String,
}

/// The reply to a drain or undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub gpu: u32,
    pub drained: bool,
}

/// The most instances one layout request may list (no GPU has more than 16 placement units).
pub const MAX_LAYOUT_ENTRIES: usize = 32;

/// What `GET /metrics` is rendered from: the node's GPUs as `GET /v1/gpus` shows them, and the
/// live jobs counted by state and tenant, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsData {
    /// The node's host name (dcgm-exporter's `Hostname` label).
    pub hostname: String,
    pub gpus: GpuList,
    /// Live jobs (queued, placing, running) by state and tenant.
    pub jobs: Vec<JobCount>,
    /// Queued jobs by why they wait (the scheduler's reason code, `undecided` before the first
    /// round) and tenant.
    pub pending: Vec<PendingCount>,
    /// Every job that has started: its tenant and its wait in ms (submission to start).
    pub waits: Vec<(String, u64)>,
    /// Every finished reconfiguration.
    pub reconfigurations: Vec<ReconfigDone>,
    /// Each tenant's decayed fair-share usage in slice-milliseconds, as the engine last saved
    /// it (every few seconds).
    pub fair_share: BTreeMap<String, f64>,
    /// The configured quotas: tenant → (compute slices, memory slices).
    pub quotas: BTreeMap<String, (u32, u32)>,
    /// Xid events seen per GPU and code, since the health tracker first saw the GPU.
    pub xids: Vec<XidCount>,
    /// MIG operations the reconfiguration journal records, per GPU, operation and outcome.
    pub mig_operations: Vec<MigOperationCount>,
    /// GPM utilisation of the last sample interval, per GPU instance (per GPU with MIG off), on
    /// GPUs that have GPM (Hopper and newer); none elsewhere.
    #[serde(default)]
    pub utilisation: Vec<UtilisationReading>,
    /// What pruned history counted (queue waits, reconfigurations, MIG operations), added to
    /// what the remaining rows above give so that counters never go down. Not sent: read in the
    /// daemon and rendered there.
    #[serde(skip)]
    pub pruned: tessera_store::MetricTotals,
}

/// The GPU performance monitoring (GPM) metrics of one GPU instance, or of a GPU with MIG off,
/// over the daemon's last sample interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtilisationReading {
    pub gpu: u32,
    /// The GPU instance; `None`: the whole GPU (MIG off).
    pub gpu_instance_id: Option<u32>,
    /// Each metric as a ratio 0..1 (`None` where the driver gave none), and the interval's length.
    pub metrics: tessera_gpu::GpmMetrics,
}

/// How many Xid events of one code a GPU has had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidCount {
    pub gpu: u32,
    pub xid: u64,
    pub count: u64,
}

/// How many MIG operations of one kind ended one way on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigOperationCount {
    pub gpu: u32,
    /// `create_gpu_instance`, `destroy_gpu_instance` or `set_mig_mode`.
    pub operation: String,
    /// `ok` or `failed`.
    pub outcome: String,
    pub count: u64,
}

/// How many queued jobs of one tenant wait for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCount {
    /// A `tessera_sched::PendingReason` code (`capacity`, `fragmentation`, …) or `undecided`.
    pub reason: String,
    pub tenant: String,
    pub count: u64,
}

/// A finished reconfiguration, as the metrics count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconfigDone {
    pub gpu: u32,
    pub gpu_uuid: String,
    /// `completed`, `rolled_back` or `abandoned`.
    pub outcome: String,
    pub duration_ms: u64,
}

/// How many live jobs of one tenant are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    pub state: JobState,
    pub tenant: String,
    pub count: u64,
}

/// `POST /v1/gpus/{gpu}/layout`: a MIG layout change, for admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutRequest {
    /// The instances the GPU should have: `3g.40gb` (wherever it fits best; matching instances
    /// are kept) or `3g.40gb@4` (at that placement; then every entry gives one), or a compute
    /// split `1c.3g.40gb`. An empty list removes every idle instance. At most
    /// [`MAX_LAYOUT_ENTRIES`].
    pub instances: Vec<String>,
    /// Only plan: say what would change, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The reply to a layout change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutReply {
    pub gpu: u32,
    pub dry_run: bool,
    /// `destroy 2g.20gb@4`, `create 1g.10gb@6`, …
    pub steps: Vec<String>,
    /// The layout after the change.
    pub layout: Vec<String>,
    pub changed: bool,
}

/// Node health (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    pub backend: String,
    /// Jobs by state.
    pub jobs: BTreeMap<String, u64>,
    pub last_round_ms: u64,
    /// How long the last scheduling round took, in µs (read, decide, act).
    #[serde(default)]
    pub last_round_us: u64,
    /// Per GPU: health, its instances' health, the last Xid events, drains.
    pub gpus: Vec<GpuHealthView>,
    /// What isolation this machine gives jobs (cgroup v1/v2 and its controllers).
    pub isolation: String,
}

/// One GPU's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuHealthView {
    pub index: u32,
    pub uuid: Option<String>,
    /// The health tracker's verdict (`state`: healthy, degraded, unhealthy; with the reason,
    /// since when and what it waits for).
    pub health: tessera_gpu::health::Health,
    pub instances: Vec<tessera_gpu::health::InstanceHealthReport>,
    pub events: Vec<tessera_gpu::health::RecordedEvent>,
    pub last_cleared: Option<tessera_gpu::health::Cleared>,
    pub drained: Option<DrainView>,
}

/// `POST /v1/gpus/{gpu}/health/clear`: an admin says a GPU was reset or repaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthClearReply {
    pub gpu: u32,
    /// The GPU's health after the clear (a fault clears at the next successful probe).
    pub health: tessera_gpu::health::Health,
}

/// `GET /v1/events`: what happened on the node lately. Jobs submitted, started and ended are
/// the caller's own (an admin's: every user's); layout changes, Xid events, health clears and
/// drains are every caller's, as `GET /v1/gpus` shows every GPU to everyone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events at or after this time (ms since the Unix epoch); default: the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// At most this many, the newest ([`EventQuery::DEFAULT_LIMIT`] by default; at most
    /// [`EventQuery::MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl EventQuery {
    /// How far back a query without `since_ms` looks.
    pub const DEFAULT_WINDOW_MS: u64 = 3_600_000;
    /// How many events a query without `limit` gets.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// The most events one reply holds.
    pub const MAX_LIMIT: u32 = 500;
}

/// The reply to `GET /v1/events`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEventList {
    pub events: Vec<NodeEvent>,
}

/// One thing that happened on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    pub kind: NodeEventKind,
    /// The GPU it happened on, when one.
    pub gpu: Option<u32>,
    /// The job it is about (a job's event, or the job a reconfiguration made room for).
    pub job: Option<u64>,
    /// What happened, in words (`job 7 (alice) started on GPU 0 3g.40gb@4`).
    pub text: String,
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeEventKind {
    JobSubmitted,
    JobStarted,
    JobEnded,
    /// A reconfiguration of a GPU's MIG layout finished (or is under way).
    Layout,
    Xid,
    HealthCleared,
    Drained,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_queries_are_written_as_the_api_reads_them() {
        let q = JobQuery {
            states: vec![JobState::Queued, JobState::Failed],
            history: true,
            since_ms: Some(5),
            user: Some("a b&c=d".into()),
            tenant: Some("ml/é".into()),
            all: false,
            limit: Some(20),
            after: Some(7),
        };
        assert_eq!(
            q.query_string(),
            "all=false&state=queued,failed&history=true&since_ms=5&user=a%20b%26c%3Dd&tenant=ml%2F%C3%A9&limit=20&after=7"
        );
        assert_eq!(JobQuery::default().effective_states(), JobQuery::ACTIVE);
        assert_eq!(JobQuery { since_ms: Some(1), ..JobQuery::default() }.effective_states(), JobState::ALL);
    }

    #[test]
    fn log_cursors_are_tokens_that_round_trip() {
        let cases = [
            (LogCursor::default(), "0"),
            (LogCursor { record: 12, done: vec![(0, Stream::Stdout, 340), (0, Stream::Stderr, 17)] }, "12,0o340,0e17"),
            (LogCursor { record: 3, done: vec![(7, Stream::Stderr, 0)] }, "3,7e0"),
        ];
        for (cursor, token) in cases {
            assert_eq!(cursor.to_string(), token);
            assert_eq!(token.parse::<LogCursor>(), Ok(cursor.clone()));
            assert_eq!(serde_json::to_string(&cursor).unwrap(), format!("\"{token}\""));
        }
        for bad in ["", "x", "1,", "1,0x5", "1,0o", "1,o5", "1,0oe5", "-1"] {
            let e = bad.parse::<LogCursor>().unwrap_err();
            assert!(e.starts_with(&format!("'{bad}' is not a cursor")), "{bad}: {e}");
        }
    }

    #[test]
    fn log_bytes_are_base64_and_need_not_be_utf8() {
        let piece = LogPiece { rank: 1, stream: Stream::Stderr, time_ms: None, data: LogBytes(b"a\xff\n".to_vec()) };
        let json = serde_json::to_string(&piece).unwrap();
        assert_eq!(json, r#"{"rank":1,"stream":"stderr","time_ms":null,"data":"Yf8K"}"#);
        assert_eq!(serde_json::from_str::<LogPiece>(&json).unwrap(), piece);
        let e = serde_json::from_str::<LogBytes>(r#""not base64!""#).unwrap_err();
        assert!(e.to_string().contains("Invalid"), "{e}");
    }
}
