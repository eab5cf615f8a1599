//! The actions that read or nudge single jobs and GPUs: list, show, cancel, release, logs,
//! GPUs, drains. Each answers with the typed views of `wire.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tessera_exec::{LogSelect, LogStream};
use tessera_store::{Drain, ExitInfo, JobFilter, JobRecord, JobState, Work};

use super::{Caller, Engine, EngineError, Reader};
use crate::wire::{
    CancelReply, CancelState, DrainReply, DrainRequest, DrainView, EventView, ExitView, GpuInfo, GpuList, InstanceInfo,
    JobList, JobQuery, JobView, LogBytes, LogChunk, LogCursor, LogPiece, LogQuery, Occupant, RankView, SliceView,
    Stream,
};

/// The most output one `logs` reply carries.
const LOG_CHUNK_BYTES: usize = 1 << 20;

fn wire_stream(s: LogStream) -> Stream {
    match s {
        LogStream::Stdout => Stream::Stdout,
        LogStream::Stderr => Stream::Stderr,
    }
}

fn exec_cursor(c: &LogCursor) -> tessera_exec::LogCursor {
    let stream = |s: Stream| match s {
        Stream::Stdout => LogStream::Stdout,
        Stream::Stderr => LogStream::Stderr,
    };
    tessera_exec::LogCursor {
        record: c.record,
        done: c.done.iter().map(|&(rank, s, offset)| ((rank, stream(s)), offset)).collect(),
    }
}

fn wire_cursor(c: &tessera_exec::LogCursor) -> LogCursor {
    LogCursor {
        record: c.record,
        done: c.done.iter().map(|(&(rank, s), &offset)| (rank, wire_stream(s), offset)).collect(),
    }
}

impl Reader {
    /// The job, if the caller may see it.
    pub(crate) fn owned(&self, caller: &Caller, id: u64) -> Result<JobRecord, EngineError> {
        let rec = self.store.job(id)?.ok_or_else(|| EngineError::NotFound(format!("no job {id}")))?;
        if rec.user_uid != caller.uid && !caller.admin {
            return Err(EngineError::Forbidden(format!("job {id} belongs to another user")));
        }
        Ok(rec)
    }

    /// `GET /v1/jobs`: the caller's jobs, or, for admins, another user's (`user`), a tenant's
    /// (`tenant`: every user's in it) or everyone's (`all`); the active ones unless `history`,
    /// `since_ms` or `states` say otherwise.
    pub(crate) fn list_jobs(&self, caller: &Caller, q: &JobQuery) -> Result<JobList, EngineError> {
        let other = q.user.as_deref().filter(|u| *u != caller.user);
        if !caller.admin {
            if q.all {
                return Err(EngineError::Forbidden("only admins see every user's jobs".into()));
            }
            if let Some(u) = other {
                return Err(EngineError::Forbidden(format!(
                    "only admins see another user's jobs ({} asked for {u}'s)",
                    caller.user
                )));
            }
        }
        let user_uid = match other {
            Some(name) => match tessera_host::user_by_name(name) {
                Ok(Some(u)) => Some(u.uid),
                // A filter naming nobody names no jobs: 404, as for a job id (the OpenAPI document's
                // schema cannot know the node's users).
                // A name NSS cannot even be asked about (a NUL byte) names nobody either, and is
                // the caller's mistake, not the daemon's failure.
                Ok(None) | Err(tessera_host::UserError::BadName(_)) => {
                    return Err(EngineError::NotFound(format!("user: no user '{}' on this node", name.escape_debug())));
                }
                Err(e) => return Err(EngineError::Internal(format!("looking up user '{name}': {e}"))),
            },
            None if q.user.is_some() => Some(caller.uid),
            // An admin asking for a tenant, or for everyone, sees every user's jobs.
            None if caller.admin && (q.all || q.tenant.is_some()) => None,
            None => Some(caller.uid),
        };
        // One more than the page, to know whether more follow.
        let filter = JobFilter {
            states: q.effective_states(),
            user_uid,
            tenant: q.tenant.clone(),
            ended_since_ms: q.since_ms,
            after_id: q.after,
            limit: q.limit.map(|n| n as usize + 1),
        };
        let mut records = self.store.jobs(&filter)?;
        let next = match q.limit {
            Some(n) if records.len() > n as usize => {
                records.truncate(n as usize);
                records.last().map(|j| j.id)
            }
            _ => None,
        };
        let jobs: Vec<JobView> = records.iter().map(|j| self.job_view(j, false)).collect();
        // A tenant no longer configured still shows its jobs; one never heard of is a mistake,
        // named: 404, as for a user (the document's schema cannot know the configured tenants).
        if let Some(t) = &q.tenant
            && jobs.is_empty()
            && q.after.is_none()
            && !self.tenants.iter().any(|n| n == t)
        {
            return Err(EngineError::NotFound(format!(
                "tenant: no tenant '{t}' is configured (tenants: {})",
                self.tenants.join(", ")
            )));
        }
        Ok(JobList { jobs, next })
    }

    /// A job as the API shows it: its ranks from its allocations (the live ones, or the last
    /// run's once it ended).
    pub(crate) fn job_view(&self, rec: &JobRecord, detail: bool) -> JobView {
        let allocs = self.store.job_allocations(rec.id).unwrap_or_default();
        // The current run's (live) or, once it ended, the last run's.
        let last = allocs.iter().map(|a| a.run).max();
        let mut by_rank: BTreeMap<u32, (RankView, Vec<u32>)> = BTreeMap::new();
        for a in allocs.iter().filter(|a| Some(a.run) == last) {
            let al = &a.allocation;
            let fact = self.facts.by_uuid(&al.gpu_uuid);
            let profile = fact.and_then(|f| f.model.profile_by_id(al.profile_id)).map(|p| p.name.clone());
            let mig = al.mig_uuid.is_some() || al.gpu_instance_id.is_some();
            let slice = SliceView {
                gpu: al.gpu_index,
                gpu_uuid: al.gpu_uuid.clone(),
                profile,
                profile_id: al.profile_id,
                start: al.start,
                mig,
                gpu_instance_id: al.gpu_instance_id,
                mig_uuid: al.mig_uuid.clone(),
                exclusive: al.exclusive,
            };
            let (r, cpus) = by_rank.entry(a.rank).or_insert_with(|| {
                let view = RankView {
                    rank: a.rank,
                    devices: Vec::new(),
                    cpus: None,
                    cpu_count: 0,
                    numa_node: al.numa_node,
                    mem_mib: 0,
                    slices: Vec::new(),
                };
                (view, Vec::new())
            });
            r.devices.push(al.mig_uuid.clone().unwrap_or_else(|| al.gpu_uuid.clone()));
            r.slices.push(slice);
            r.mem_mib += al.host.iter().map(|h| h.mem_mib).sum::<u64>();
            cpus.extend(al.host.iter().flat_map(|h| h.cpus.iter().copied()));
            if r.numa_node != al.numa_node {
                r.numa_node = None;
            }
        }
        let ranks: Vec<RankView> = by_rank
            .into_values()
            .map(|(mut r, cpus)| {
                r.cpus = (!cpus.is_empty()).then(|| tessera_host::format_cpulist(&cpus));
                r.cpu_count = u32::try_from(cpus.len()).unwrap_or(u32::MAX);
                r
            })
            .collect();
        let (command, cwd, external) = match &rec.work {
            Work::Process(p) => (Some(p.command.clone()), Some(p.cwd.clone()), None),
            Work::External(e) => (None, None, Some(e.clone())),
        };
        let events = if detail {
            self.store
                .events(rec.id)
                .unwrap_or_default()
                .into_iter()
                .map(|e| EventView { from: e.from, to: e.to, reason: e.reason, at_ms: e.at_ms })
                .collect()
        } else {
            Vec::new()
        };
        JobView {
            id: rec.id,
            user: rec.user_name.clone(),
            uid: rec.user_uid,
            tenant: rec.tenant.clone(),
            priority: rec.priority,
            state: rec.state,
            reason: rec.reason.clone(),
            command,
            cwd,
            external,
            submitted_ms: rec.submitted_ms,
            started_ms: rec.started_ms,
            ended_ms: rec.ended_ms,
            resources: rec.request.clone(),
            runs: rec.runs,
            ranks,
            exit: rec.exit.as_ref().map(|e| ExitView {
                code: e.code,
                signal: e.signal,
                failed_rank: e.failed_rank,
                detail: e.detail.clone(),
            }),
            events,
            cancelled_by: rec.cancelled_by.clone(),
        }
    }
}

impl Engine {
    pub(crate) fn cancel(&mut self, caller: &Caller, id: u64) -> Result<CancelReply, EngineError> {
        let rec = self.reader.owned(caller, id)?;
        let now = tessera_host::now_ms();
        if rec.state.is_terminal() {
            return Err(EngineError::Conflict(format!("job {id} has already ended ({})", rec.state)));
        }
        // Who asked is kept with the job (the first to ask, should several), shown by `tessera job`.
        self.store.set_cancelled_by(id, &caller.user)?;
        match rec.state {
            JobState::Queued => {
                let exit = ExitInfo {
                    code: None,
                    signal: None,
                    failed_rank: None,
                    detail: format!("cancelled by {}", caller.user),
                };
                self.store
                    .finish(
                        id,
                        JobState::Queued,
                        JobState::Cancelled,
                        &format!("cancelled by {} before it started", caller.user),
                        exit,
                        now,
                    )
                    .map_err(|e| EngineError::Conflict(e.to_string()))?;
                tracing::info!(
                    job = id,
                    user = %rec.user_name,
                    tenant = %rec.tenant,
                    state = "cancelled",
                    "job {id} ended cancelled by {} before it started",
                    caller.user,
                );
                Ok(CancelReply { id, state: CancelState::Cancelled })
            }
            JobState::Placing | JobState::Running => match (&rec.work, rec.job_dir.as_deref()) {
                (Work::Process(_), Some(dir)) => {
                    let request = tessera_exec::StopRequest {
                        reason: tessera_exec::StopReason::Cancel,
                        signal: libc::SIGTERM,
                        grace_ms: self.config.scheduler.kill_grace_ms,
                        detail: format!("by {}", caller.user),
                    };
                    tessera_exec::stop(std::path::Path::new(dir), &request)
                        .map_err(|e| EngineError::Internal(format!("cancelling job {id}: {e}")))?;
                    Ok(CancelReply { id, state: CancelState::Cancelling })
                }
                _ => {
                    let exit = ExitInfo { detail: format!("cancelled by {}", caller.user), ..ExitInfo::default() };
                    self.store
                        .finish(id, rec.state, JobState::Cancelled, &format!("cancelled by {}", caller.user), exit, now)
                        .map_err(|e| EngineError::Conflict(e.to_string()))?;
                    Ok(CancelReply { id, state: CancelState::Cancelled })
                }
            },
            s => Err(EngineError::Conflict(format!("job {id} has already ended ({s})"))),
        }
    }

    /// External work ended: its slices are free again. Its reason is the exit's detail, or
    /// `released by <caller>` without one.
    pub(crate) fn release(
        &mut self,
        caller: &Caller,
        id: u64,
        mut exit: ExitInfo,
        succeeded: bool,
    ) -> Result<JobView, EngineError> {
        let rec = self.reader.owned(caller, id)?;
        if rec.work.process().is_some() {
            return Err(EngineError::Conflict(format!(
                "job {id} runs processes Tessera supervises; cancel it instead"
            )));
        }
        if !rec.state.is_active() {
            return Err(EngineError::Conflict(format!("job {id} is {}, not running", rec.state)));
        }
        let to = if succeeded { JobState::Succeeded } else { JobState::Failed };
        if exit.detail.is_empty() {
            exit.detail = format!("released by {}", caller.user);
        }
        let reason = exit.detail.clone();
        self.store
            .finish(id, rec.state, to, &reason, exit, tessera_host::now_ms())
            .map_err(|e| EngineError::Conflict(e.to_string()))?;
        tracing::info!(
            job = id,
            user = %rec.user_name,
            tenant = %rec.tenant,
            state = %to,
            "job {id} ended {to} (released by {}): {reason}",
            caller.user,
        );
        let rec = self.reader.owned(caller, id)?;
        Ok(self.reader.job_view(&rec, true))
    }

    /// Names live external work (the front door that submitted it learned whom it is for).
    pub(crate) fn name_work(&mut self, caller: &Caller, id: u64, key: String) -> Result<JobView, EngineError> {
        let rec = self.reader.owned(caller, id)?;
        let Work::External(ext) = &rec.work else {
            return Err(EngineError::Conflict(format!(
                "job {id} runs processes Tessera supervises; it has no external name"
            )));
        };
        if key.trim().is_empty() || key.len() > 512 || key.chars().any(char::is_control) {
            return Err(EngineError::invalid("key", "give 1 to 512 characters, none of them control characters"));
        }
        if !rec.state.is_active() {
            return Err(EngineError::Conflict(format!("job {id} is {}; only live work is named", rec.state)));
        }
        self.store.set_external_key(id, &ext.door, &key).map_err(|e| EngineError::Conflict(e.to_string()))?;
        tracing::info!(job = id, "job {id} ({} {}) is now {} {key}", ext.door, ext.key, ext.door);
        let rec = self.reader.owned(caller, id)?;
        Ok(self.reader.job_view(&rec, true))
    }
}

impl Reader {
    /// A job's output in the order it was written ([`tessera_exec::read_output`]): at most
    /// [`LOG_CHUNK_BYTES`] from the query's cursor, or from its last `tail` lines.
    pub(crate) fn logs(&self, caller: &Caller, id: u64, q: &LogQuery) -> Result<LogChunk, EngineError> {
        let rec = self.owned(caller, id)?;
        let ended = rec.state.is_terminal();
        let ranks = rec.request.ranks;
        if let Some(rank) = q.rank.filter(|&r| r >= ranks) {
            let have =
                if ranks == 1 { "its only rank is 0".to_owned() } else { format!("its ranks are 0 to {}", ranks - 1) };
            // No such rank, as no such job: 404 (a schema cannot know a job's ranks).
            return Err(EngineError::NotFound(format!("rank: job {id} has no rank {rank}; {have}")));
        }
        let Some(dir) = rec.job_dir.as_deref().map(PathBuf::from) else {
            let next = q.from.clone().unwrap_or_default();
            return Ok(LogChunk { pieces: Vec::new(), next, more: false, job_ended: ended, ranks });
        };
        let select = LogSelect {
            rank: q.rank,
            stdout: q.stream != Some(Stream::Stderr),
            stderr: q.stream != Some(Stream::Stdout),
        };
        let failed = |e: tessera_exec::ExecError| EngineError::Internal(format!("reading job {id}'s output: {e}"));
        let from = match (&q.from, q.tail) {
            (Some(c), _) => exec_cursor(c),
            (None, Some(lines)) => tessera_exec::tail_cursor(&dir, select, lines, ended).map_err(failed)?,
            (None, None) => tessera_exec::LogCursor::default(),
        };
        let read = tessera_exec::read_output(&dir, select, &from, ended, LOG_CHUNK_BYTES).map_err(failed)?;
        let pieces = read
            .pieces
            .into_iter()
            .map(|p| LogPiece {
                rank: p.rank,
                stream: wire_stream(p.stream),
                time_ms: p.time_ms,
                data: LogBytes(p.data),
            })
            .collect();
        Ok(LogChunk { pieces, next: wire_cursor(&read.next), more: read.more, job_ended: ended, ranks })
    }

    pub(crate) fn gpus(&self) -> Result<GpuList, EngineError> {
        let published = self.published();
        let live =
            tessera_gpu::view::node_view_partial(self.backend()).map_err(|e| EngineError::Internal(e.to_string()))?;
        let allocs = self.store.live_allocations()?;
        // Whose each job on a slice is.
        let mut owners: BTreeMap<u64, (String, String, Option<tessera_store::ExternalWork>)> = BTreeMap::new();
        for a in &allocs {
            if let std::collections::btree_map::Entry::Vacant(e) = owners.entry(a.job)
                && let Some(rec) = self.store.job(a.job)?
            {
                let external = match rec.work {
                    Work::External(x) => Some(x),
                    Work::Process(_) => None,
                };
                e.insert((rec.user_name, rec.tenant, external));
            }
        }
        let occupants_of = |jobs: &[u64]| -> Vec<Occupant> {
            jobs.iter()
                .map(|&job| {
                    let (user, tenant, external) = owners.get(&job).cloned().unwrap_or_default();
                    Occupant { job, user, tenant, external }
                })
                .collect()
        };
        let mut gpus: Vec<GpuInfo> = live
            .gpus
            .iter()
            .map(|g| {
                let fact = self.facts.gpu(g.device.index);
                let jobs_on = |profile_id: u32, start: u8| -> Vec<u64> {
                    let mut v: Vec<u64> = allocs
                        .iter()
                        .filter(|a| {
                            a.allocation.gpu_uuid == g.device.uuid
                                && a.allocation.profile_id == profile_id
                                && a.allocation.start == start
                        })
                        .map(|a| a.job)
                        .collect();
                    v.dedup();
                    v
                };
                let instances = if g.mig.current && g.model.is_some() {
                    g.instances
                        .iter()
                        .map(|i| InstanceInfo {
                            gpu_instance_id: Some(i.gpu_instance_id),
                            profile: i.profile_name.clone(),
                            profile_id: i.instance.profile_id,
                            start: i.instance.start,
                            size: i.placement_size,
                            jobs: jobs_on(i.instance.profile_id, i.instance.start),
                            occupants: Vec::new(),
                            mig_uuid: i.compute_instances.first().map(|c| c.uuid.clone()),
                            healthy: !published
                                .health
                                .instance_health(g.device.index, i.gpu_instance_id)
                                .is_unhealthy(),
                            gi_caps_minor: i.caps_minor,
                            ci_caps_minor: i.compute_instances.first().and_then(|c| c.caps_minor),
                        })
                        .collect()
                } else {
                    fact.and_then(|f| tessera_sched::full_profile(f.model))
                        .map(|p| {
                            vec![InstanceInfo {
                                gpu_instance_id: None,
                                profile: format!("{} (whole GPU)", p.name),
                                profile_id: p.id,
                                start: 0,
                                size: p.placement_size,
                                jobs: jobs_on(p.id, 0),
                                occupants: Vec::new(),
                                mig_uuid: None,
                                healthy: true,
                                gi_caps_minor: None,
                                ci_caps_minor: None,
                            }]
                        })
                        .unwrap_or_default()
                };
                GpuInfo {
                    index: g.device.index,
                    name: g.device.name.clone(),
                    uuid: g.device.uuid.clone(),
                    model: g.model.map(|m| m.name.clone()),
                    numa_node: g.device.numa_node,
                    minor: Some(g.device.minor_number),
                    local_cpus: self.local_cpus(g.device.numa_node),
                    mig: g.mig.current,
                    drained: published.drains.get(&g.device.uuid).map(DrainView::from),
                    health: published.health.gpu_health(g.device.index).to_string(),
                    instances,
                }
            })
            .collect();
        for f in &live.failed {
            let Some(fact) = self.facts.gpu(f.gpu.index) else { continue };
            gpus.push(GpuInfo {
                index: fact.index,
                name: fact.name.clone(),
                uuid: fact.uuid.clone(),
                model: fact.catalog.then(|| fact.model.name.clone()),
                numa_node: fact.numa_node,
                minor: Some(fact.minor),
                local_cpus: self.local_cpus(fact.numa_node),
                mig: false,
                drained: published.drains.get(&fact.uuid).map(DrainView::from),
                health: format!("unhealthy: it does not answer: {}", f.error),
                instances: Vec::new(),
            });
        }
        gpus.sort_by_key(|g| g.index);
        for i in gpus.iter_mut().flat_map(|g| g.instances.iter_mut()) {
            i.occupants = occupants_of(&i.jobs);
        }
        Ok(GpuList { backend: self.backend().kind().to_string(), gpus })
    }

    /// The CPUs of this machine for a GPU's NUMA node (`None`: the platform does not say, as the
    /// node's facts file such a GPU's CPUs under node 0), as a cpulist: the host facts' CPUs of
    /// that node, folded onto this machine's on the simulated node ([`super::view::HostBinding`]).
    fn local_cpus(&self, numa_node: Option<u32>) -> Option<String> {
        let node_cpus = self.facts.host_cpus.get(&numa_node.unwrap_or(0))?;
        let here = self.facts.binding.cpus(node_cpus);
        (!here.is_empty()).then(|| tessera_host::format_cpulist(&here))
    }
}

impl Engine {
    pub(crate) fn drain(
        &mut self,
        caller: &Caller,
        gpu: u32,
        drain: bool,
        req: &DrainRequest,
    ) -> Result<DrainReply, EngineError> {
        if !caller.admin {
            return Err(EngineError::Forbidden("only admins drain GPUs".into()));
        }
        let fact = self
            .facts
            .gpu(gpu)
            .ok_or_else(|| EngineError::NotFound(format!("no GPU {gpu} (the node has {})", self.facts.gpus.len())))?
            .clone();
        if drain {
            let d = Drain {
                gpu_uuid: fact.uuid.clone(),
                gpu_index: gpu,
                by: caller.user.clone(),
                reason: req.reason.clone(),
                at_ms: tessera_host::now_ms(),
            };
            self.store.set_drain(&d)?;
            self.drains.insert(fact.uuid, d);
        } else {
            self.store.clear_drain(&fact.uuid)?;
            self.drains.remove(&fact.uuid);
        }
        Ok(DrainReply { gpu, drained: drain })
    }
}
