//! Slurm's jobs and nodes as the agent needs them, read from scontrol records
//! (`scontrol show job -o -d`, `scontrol show node -o -d`).

use serde::{Deserialize, Serialize};

use crate::gres::{GresCount, GresError, parse_gres_list, parse_tres_per_node};
use crate::record::Record;

/// A job, from one `scontrol show job -o -d` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    pub id: u64,
    /// The user's name (`alice` of `UserId=alice(1001)`).
    pub user: String,
    pub uid: Option<u32>,
    /// `JobState=` (`PENDING`, `RUNNING`).
    pub state: String,
    /// `Reason=` (`ReqNodeNotAvail,_May_be_reserved_for_other_job`, `None`).
    pub reason: String,
    /// `Partition=`, which lists several for a job submitted to several.
    pub partitions: Vec<String>,
    /// `SubmitTime=` as Slurm writes it (local time, `2026-12-07T17:34:18`).
    pub submit: String,
    /// `NumNodes=`; a range (`1-2`) is read as its upper bound, since a job that may span nodes
    /// is not one a single node serves alone.
    pub num_nodes: u32,
    /// `ReqNodeList=` as written (may be a hostlist such as `vm[1-2]`); `None` for `(null)`.
    pub req_nodes: Option<String>,
    /// `ExcNodeList=` as written; `None` for `(null)`.
    pub exc_nodes: Option<String>,
    /// What the job asks of each node, from `TresPerNode=`.
    pub gres: Vec<GresCount>,
    /// What each allocated node gave it, from `-d`'s `Nodes=`/`GRES=` pairs; `Nodes=` is kept
    /// as written, hostlist included.
    pub alloc: Vec<(String, Vec<GresCount>)>,
}

/// A node, from one `scontrol show node -o -d` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmNode {
    pub name: String,
    /// `State=` with its flags (`MIXED+DRAIN`, `IDLE*`).
    pub state: String,
    /// `Reason=` without nothing-values; scontrol appends ` [user@time]`.
    pub reason: Option<String>,
    pub partitions: Vec<String>,
    /// `Gres=`: what the node has.
    pub gres: Vec<GresCount>,
    /// `GresUsed=`: what running jobs hold, with their indices.
    pub gres_used: Vec<GresCount>,
}

/// Why a job or node record cannot be read; `what` names the job or node when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("{what}: the record has no {key}=")]
    Missing { what: String, key: &'static str },
    #[error("{what}: {key}={value}: {reason}")]
    Invalid { what: String, key: &'static str, value: String, reason: String },
    #[error("{what}: {key}=: {source}")]
    Gres {
        what: String,
        key: &'static str,
        #[source]
        source: GresError,
    },
}

/// `(null)`, `N/A`, `None` and the empty text as no value.
fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !matches!(v.trim(), "" | "(null)" | "N/A" | "none" | "None"))
}

fn list(value: Option<&str>) -> Vec<String> {
    present(value).map_or_else(Vec::new, |v| v.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect())
}

fn required<'a>(record: &'a Record, what: &str, key: &'static str) -> Result<&'a str, JobError> {
    record.get(key).ok_or_else(|| JobError::Missing { what: what.to_string(), key })
}

fn gres_of(
    value: Option<&str>,
    what: &str,
    key: &'static str,
    parse: fn(&str) -> Result<Vec<GresCount>, GresError>,
) -> Result<Vec<GresCount>, JobError> {
    value.map_or(Ok(Vec::new()), parse).map_err(|source| JobError::Gres { what: what.to_string(), key, source })
}

impl SlurmJob {
    pub fn from_record(record: &Record) -> Result<SlurmJob, JobError> {
        let id_text = required(record, "a job record", "JobId")?;
        let id = id_text.parse::<u64>().map_err(|_| JobError::Invalid {
            what: "a job record".to_string(),
            key: "JobId",
            value: id_text.to_string(),
            reason: "not a job id".to_string(),
        })?;
        let what = format!("job {id}");
        let invalid = |key, value: &str, reason: &str| JobError::Invalid {
            what: what.clone(),
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        };

        let user_id = required(record, &what, "UserId")?;
        let (user, uid) = match user_id.strip_suffix(')').and_then(|u| u.rsplit_once('(')) {
            Some((name, uid)) => {
                (name.to_string(), Some(uid.parse::<u32>().map_err(|_| invalid("UserId", user_id, "not a uid"))?))
            }
            None => (user_id.to_string(), None),
        };
        let num_text = required(record, &what, "NumNodes")?;
        let upper = num_text.rsplit_once('-').map_or(num_text, |(_, hi)| hi);
        let num_nodes = upper.parse::<u32>().map_err(|_| invalid("NumNodes", num_text, "not a node count"))?;

        let mut alloc: Vec<(String, Vec<GresCount>)> = Vec::new();
        for (key, value) in &record.pairs {
            match key.as_str() {
                "Nodes" => alloc.push((value.clone(), Vec::new())),
                // Older Slurm writes `GRES_IDX=`.
                "GRES" | "GRES_IDX" => {
                    let Some((_, gres)) = alloc.last_mut() else {
                        return Err(invalid("GRES", value, "before any Nodes="));
                    };
                    gres.extend(gres_of(Some(value), &what, "GRES", parse_gres_list)?);
                }
                _ => {}
            }
        }

        Ok(SlurmJob {
            id,
            user,
            uid,
            state: required(record, &what, "JobState")?.to_string(),
            reason: record.get("Reason").unwrap_or_default().to_string(),
            partitions: list(record.get("Partition")),
            submit: record.get("SubmitTime").unwrap_or_default().to_string(),
            num_nodes,
            req_nodes: present(record.get("ReqNodeList")).map(str::to_string),
            exc_nodes: present(record.get("ExcNodeList")).map(str::to_string),
            gres: gres_of(present(record.get("TresPerNode")), &what, "TresPerNode", parse_tres_per_node)?,
            alloc,
        })
    }

    pub fn is_pending(&self) -> bool {
        self.state == "PENDING"
    }
}

/// State words (and the `*` of a node not responding) after which Slurm starts no job on a node.
const UNAVAILABLE: &[&str] = &[
    "DOWN",
    "DRAIN",
    "DRAINED",
    "DRAINING",
    "FAIL",
    "FAILING",
    "INVAL",
    "FUTURE",
    "NOT_RESPONDING",
    "POWERED_DOWN",
    "POWER_DOWN",
    "POWERING_DOWN",
    "REBOOT_ISSUED",
    "UNKNOWN",
];

impl SlurmNode {
    pub fn from_record(record: &Record) -> Result<SlurmNode, JobError> {
        let name = required(record, "a node record", "NodeName")?.to_string();
        let what = format!("node {name}");
        Ok(SlurmNode {
            state: required(record, &what, "State")?.to_string(),
            reason: present(record.get("Reason")).map(str::to_string),
            partitions: list(record.get("Partitions")),
            gres: gres_of(record.get("Gres"), &what, "Gres", parse_gres_list)?,
            gres_used: gres_of(record.get("GresUsed"), &what, "GresUsed", parse_gres_list)?,
            name,
        })
    }

    /// The state's words (`MIXED+DRAIN` → `MIXED`, `DRAIN`), without the one-character flags
    /// Slurm appends (`*` not responding, `~` powered down, `#`, `%`, `!`, `$`, `@`, `^`, `-`).
    fn state_words(&self) -> impl Iterator<Item = &str> {
        self.state.split('+').map(|w| w.trim_end_matches(|c: char| "*~#%!$@^-".contains(c)))
    }

    /// The node is draining or drained.
    pub fn is_drained(&self) -> bool {
        self.state.contains("DRAIN")
    }

    /// Slurm may start jobs on the node now: not down, drained, failing, invalid, a
    /// placeholder, not responding (`*`), powered down (`~`) or rebooting.
    pub fn is_available(&self) -> bool {
        !self.state.contains(['*', '~']) && !self.state_words().any(|w| UNAVAILABLE.contains(&w))
    }

    /// GPUs of Type `kind` not held by a job.
    pub fn free(&self, kind: &str) -> u64 {
        let sum = |list: &[GresCount]| -> u64 {
            list.iter().filter(|g| g.name == "gpu" && g.kind.as_deref() == Some(kind)).map(|g| g.count).sum()
        };
        sum(&self.gres).saturating_sub(sum(&self.gres_used))
    }

    /// The GPU GRES indices `GresUsed=` says are held.
    pub fn used_indices(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .gres_used
            .iter()
            .filter(|g| g.name == "gpu")
            .flat_map(|g| g.indices.iter().flatten().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
