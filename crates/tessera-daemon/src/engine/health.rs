//! GPU health fencing. The daemon's watcher feeds Xid events and probe results in; the
//! tracker (`tessera_gpu::health`) decides what is unhealthy and what each fault waits for
//! (a reset, a reboot, quiet) after NVIDIA's Xid catalog; it is kept in the store (`meta`
//! key `health`), so a restart forgets nothing. An unhealthy GPU or instance gets no new work
//! (the scheduler's view says so), and the jobs on it are stopped with a reason naming the Xid:
//! queued again when they allow it, failed otherwise (see `collect.rs`).

use tessera_exec::{StopReason, StopRequest};
use tessera_gpu::health::{Observation, XidEvent};
use tessera_mig::ReconfigurePlan;
use tessera_store::JobState;

use super::{Caller, Engine, EngineError, Reader};
use crate::wire::{DrainView, GpuHealthView, HealthClearReply, HealthReply};

impl Engine {
    /// Xid events as the backend reported them.
    pub fn health_events(&mut self, events: &[XidEvent], now: u64) {
        for e in events {
            self.health.record(e, now);
            let class = tessera_gpu::health::classify(e.xid);
            tracing::warn!(
                gpu = e.gpu,
                xid = e.xid,
                "health: {e}: {} ({}, {})",
                class.name,
                class.severity,
                class.action
            );
            let gpu_down = self.health.gpu_health(e.gpu).is_unhealthy();
            let instance_down = e.gpu_instance_id.filter(|gi| self.health.instance_health(e.gpu, *gi).is_unhealthy());
            if gpu_down || instance_down.is_some() {
                let what = match instance_down {
                    Some(gi) if !gpu_down => format!("GPU {} GPU instance {gi}", e.gpu),
                    _ => format!("GPU {}", e.gpu),
                };
                self.stop_jobs_on(
                    e.gpu,
                    if gpu_down { None } else { instance_down },
                    &format!("{what}: Xid {} ({})", e.xid, class.name),
                );
            }
        }
        self.save_health();
    }

    /// Probe results (each GPU answered, or not), with what was observed of it.
    pub fn health_observe(&mut self, observations: &[(u32, Observation)], now: u64) {
        let before: Vec<(u32, bool)> =
            observations.iter().map(|(g, _)| (*g, self.health.gpu_health(*g).is_unhealthy())).collect();
        self.health.observe_all(observations, now);
        for (gpu, was) in before {
            let is = self.health.gpu_health(gpu).is_unhealthy();
            if is != was {
                tracing::warn!(gpu, "health: GPU {gpu} is now {}", self.health.gpu_health(gpu));
            }
            if is && !was {
                let h = self.health.gpu_health(gpu);
                self.stop_jobs_on(gpu, None, &format!("GPU {gpu}: {h}"));
            }
        }
        self.save_health();
    }

    /// Stops the running jobs on a GPU (or one of its GPU instances).
    fn stop_jobs_on(&mut self, gpu: u32, gpu_instance: Option<u32>, why: &str) {
        let Ok(live) = self.store.live_allocations() else { return };
        let jobs: std::collections::BTreeSet<u64> = live
            .iter()
            .filter(|a| a.allocation.gpu_index == gpu)
            .filter(|a| gpu_instance.is_none() || a.allocation.gpu_instance_id == gpu_instance)
            .map(|a| a.job)
            .collect();
        for id in jobs {
            let Ok(Some(rec)) = self.store.job(id) else { continue };
            let (Some(dir), Some(_)) = (rec.job_dir.as_deref(), rec.work.process()) else { continue };
            if rec.state != JobState::Running {
                continue;
            }
            let request = StopRequest {
                reason: StopReason::Health,
                signal: libc::SIGTERM,
                grace_ms: self.config.health.stop_grace_ms,
                detail: why.to_owned(),
            };
            if let Err(e) = tessera_exec::stop(std::path::Path::new(dir), &request) {
                tracing::error!(job = id, "health: stopping job {id} ({why}): {e}");
            }
        }
    }

    /// GPU instances a plan created are healthy again (recreating cures a contained error).
    pub(crate) fn instances_recreated(&mut self, gpu: u32, plan: &ReconfigurePlan) {
        let created: Vec<_> = plan.target.iter().filter(|i| !plan.unchanged.contains(i)).collect();
        if created.is_empty() {
            return;
        }
        let Ok(view) = tessera_gpu::gpu_view(self.backend(), gpu) else { return };
        let now = tessera_host::now_ms();
        for i in view
            .instances
            .iter()
            .filter(|i| created.iter().any(|c| c.profile_id == i.instance.profile_id && c.start == i.instance.start))
        {
            self.health.instance_recreated(gpu, i.gpu_instance_id, now);
        }
        self.save_health();
    }

    /// Saves the tracker when it changed.
    pub(crate) fn save_health(&mut self) {
        let Ok(text) = serde_json::to_string(&self.health) else { return };
        if text != self.health_saved && self.store.set_meta("health", &text).is_ok() {
            self.health_saved = text;
        }
        // Reads see the health as it is now, without waiting for the engine.
        self.publish();
    }

    /// `tessera admin health clear GPU`: an admin says the GPU was reset or repaired.
    pub(crate) fn health_clear(&mut self, caller: &Caller, gpu: u32) -> Result<HealthClearReply, EngineError> {
        if !caller.admin {
            return Err(EngineError::Forbidden("only admins clear GPU health".into()));
        }
        if self.facts.gpu(gpu).is_none() {
            return Err(EngineError::NotFound(format!("no GPU {gpu} (the node has {})", self.facts.gpus.len())));
        }
        let now = tessera_host::now_ms();
        self.health.clear(gpu, &caller.user, now);
        tracing::info!(gpu, user = %caller.user, "health: GPU {gpu} cleared by {}", caller.user);
        // The clear counts once a probe succeeds: probe now rather than wait for the watcher.
        let obs = Observation::from_result(self.backend().observe(gpu));
        self.health.observe(gpu, &obs, now);
        self.save_health();
        Ok(HealthClearReply { gpu, health: self.health.gpu_health(gpu) })
    }
}

impl Reader {
    /// `GET /v1/health`.
    pub(crate) fn health_reply(&self) -> Result<HealthReply, EngineError> {
        let published = self.published();
        let counts = self.store.count_by_state()?;
        let report = published.health.report();
        let gpus = self
            .facts
            .gpus
            .iter()
            .map(|g| {
                let r = report.gpus.iter().find(|r| r.gpu == g.index);
                GpuHealthView {
                    index: g.index,
                    uuid: Some(g.uuid.clone()),
                    health: published.health.gpu_health(g.index),
                    instances: r.map(|r| r.instances.clone()).unwrap_or_default(),
                    events: r.map(|r| r.events.clone()).unwrap_or_default(),
                    last_cleared: r.and_then(|r| r.last_cleared.clone()),
                    drained: published.drains.get(&g.uuid).map(DrainView::from),
                }
            })
            .collect();
        Ok(HealthReply {
            backend: self.backend().kind().to_string(),
            jobs: counts.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            last_round_ms: published.last_round_ms,
            last_round_us: published.last_round_us,
            gpus,
            isolation: self.isolation.clone(),
        })
    }
}
