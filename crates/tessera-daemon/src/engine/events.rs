//! What happened on the node lately (`GET /v1/events`, the web view's "recent events"), put
//! together from what is already durable or published — the jobs' times in the store, the
//! reconfiguration journal, the health tracker's recorded Xid events and clears, the drains —
//! so there is no event log of its own to keep in step. Who sees what follows the other reads:
//! a caller's own jobs (an admin's: every job), as `GET /v1/jobs` lists them; every GPU's
//! changes, as `GET /v1/gpus` shows every GPU to everyone.

use tessera_store::{JobFilter, JobRecord, JobState, ReconfigOutcome, ReconfigRecord};

use super::reader::Reader;
use super::{Caller, EngineError};
use crate::wire::{EventQuery, NodeEvent, NodeEventKind, NodeEventList};

impl Reader {
    /// The events at or after the query's time (default: the last hour), newest first, at most
    /// its limit.
    pub(crate) fn events(&self, caller: &Caller, q: &EventQuery) -> Result<NodeEventList, EngineError> {
        let now = tessera_host::now_ms();
        let since = q.since_ms.unwrap_or_else(|| now.saturating_sub(EventQuery::DEFAULT_WINDOW_MS));
        let limit = q.limit.unwrap_or(EventQuery::DEFAULT_LIMIT).min(EventQuery::MAX_LIMIT) as usize;
        let filter = JobFilter {
            user_uid: (!caller.admin).then_some(caller.uid),
            ended_since_ms: Some(since),
            ..JobFilter::default()
        };
        let mut events = Vec::new();
        for j in self.store.jobs(&filter)? {
            // When it started: its state changes (a job queued and never placed has none to read).
            let starts: Vec<u64> = if j.state == JobState::Queued && j.runs == 0 {
                Vec::new()
            } else {
                self.store.events(j.id)?.iter().filter(|e| e.to == JobState::Running).map(|e| e.at_ms).collect()
            };
            events.extend(job_events(&j, &starts));
        }
        let finished = self.store.finished_reconfigs()?;
        let open = self.store.open_reconfigs()?;
        for r in finished.iter().chain(open.iter()) {
            events.push(self.layout_event(r));
        }
        let published = self.published();
        for g in published.health.report().gpus {
            for e in &g.events {
                events.push(NodeEvent {
                    at_ms: e.at_ms,
                    kind: NodeEventKind::Xid,
                    gpu: Some(g.gpu),
                    job: None,
                    text: format!("{} ({}, {})", e.event, e.class.name, e.class.severity),
                });
            }
            if let Some(c) = &g.last_cleared {
                events.push(NodeEvent {
                    at_ms: c.at_ms,
                    kind: NodeEventKind::HealthCleared,
                    gpu: Some(g.gpu),
                    job: None,
                    text: format!("GPU {}: fault cleared by {} ({})", g.gpu, c.by, c.fault),
                });
            }
        }
        for d in published.drains.values() {
            let why = if d.reason.is_empty() { String::new() } else { format!(": {}", d.reason) };
            events.push(NodeEvent {
                at_ms: d.at_ms,
                kind: NodeEventKind::Drained,
                gpu: Some(d.gpu_index),
                job: None,
                text: format!("GPU {} drained by {}{why}", d.gpu_index, d.by),
            });
        }
        events.retain(|e| e.at_ms >= since);
        // Newest first; among equal times, the order they were made in, reversed.
        events.reverse();
        events.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        events.truncate(limit);
        Ok(NodeEventList { events })
    }

    /// A reconfiguration as an event: when it finished (or, still open, when it began), the
    /// layout it leaves, how it ended and for whom.
    fn layout_event(&self, r: &ReconfigRecord) -> NodeEvent {
        let model = self.facts.by_uuid(&r.gpu_uuid).map(|f| f.model);
        let target: Vec<String> = r
            .plan
            .target
            .iter()
            .map(|i| {
                let name = model
                    .and_then(|m| m.profile_by_id(i.profile_id))
                    .map_or_else(|| format!("profile {}", i.profile_id), |p| p.name.clone());
                format!("{name}@{}", i.start)
            })
            .collect();
        let layout = if target.is_empty() { "no instances".to_owned() } else { target.join(", ") };
        let steps = match r.plan.steps.len() {
            1 => "1 step".to_owned(),
            n => format!("{n} steps"),
        };
        let mode = match r.plan.mig_mode {
            Some(true) => ", MIG on",
            Some(false) => ", MIG off",
            None => "",
        };
        let mut who = Vec::new();
        if let Some(by) = &r.plan.by {
            who.push(format!("by {by}"));
        }
        if let Some(job) = r.for_job {
            who.push(format!("for job {job}"));
        }
        let who = if who.is_empty() { String::new() } else { format!(", {}", who.join(" ")) };
        let (at_ms, text) = match (&r.outcome, r.finished_ms) {
            (Some(outcome), Some(end)) => {
                let secs = end.saturating_sub(r.created_ms) as f64 / 1000.0;
                let how = match outcome {
                    ReconfigOutcome::Completed => format!("layout now {layout}"),
                    ReconfigOutcome::RolledBack => format!("layout change to {layout} rolled back"),
                    ReconfigOutcome::Abandoned { detail } => format!("layout change to {layout} abandoned: {detail}"),
                };
                (end, format!("GPU {}: {how} ({steps}{mode} in {secs:.1} s{who})", r.gpu_index))
            }
            _ => (r.created_ms, format!("GPU {}: changing the layout to {layout} ({steps}{mode}{who})", r.gpu_index)),
        };
        NodeEvent { at_ms, kind: NodeEventKind::Layout, gpu: Some(r.gpu_index), job: r.for_job, text }
    }
}

/// A job's submission, its starts (`starts`: when it entered `running`, each run) and its end,
/// as events.
fn job_events(j: &JobRecord, starts: &[u64]) -> Vec<NodeEvent> {
    let who = format!("job {} ({})", j.id, j.user_name);
    let event = |at_ms, kind, text| NodeEvent { at_ms, kind, gpu: None, job: Some(j.id), text };
    let mut out = vec![event(j.submitted_ms, NodeEventKind::JobSubmitted, format!("{who} submitted"))];
    for (k, &at) in starts.iter().enumerate() {
        let again = if k > 0 { format!(" again (run {})", k + 1) } else { String::new() };
        out.push(event(at, NodeEventKind::JobStarted, format!("{who} started{again}")));
    }
    if let Some(at) = j.ended_ms.filter(|_| j.state.is_terminal()) {
        let how = match j.state {
            JobState::Succeeded => "succeeded",
            JobState::Cancelled => "was cancelled",
            JobState::Failed => "failed",
            other => other.as_str(),
        };
        let why = if j.reason.is_empty() { String::new() } else { format!(": {}", j.reason) };
        out.push(event(at, NodeEventKind::JobEnded, format!("{who} {how}{why}")));
    }
    out
}
