//! Unpreparing one claim, and what a starting plugin does with its checkpoint.
//!
//! Unprepare is idempotent: a claim the checkpoint does not know is already unprepared. For one
//! it knows, whatever exists is undone in this order, each step safe to repeat: the claim's MPS
//! control daemon quit, every hold of the claim released (found by its UID, so a hold an
//! interrupted prepare submitted is found too), every instance the checkpoint says the plugin
//! made destroyed (never one that existed before: adopted instances stay), the CDI spec
//! removed, and last the claim dropped from the checkpoint. A step that fails leaves the claim
//! in the checkpoint, and the kubelet's next call goes on from there.

use tessera_daemon::engine::{Action, EngineError};
use tessera_kube_core::dra_claim::ClaimRef;
use tessera_mig::Instance;
use tessera_store::ExitInfo;

use super::cdi::remove_spec;
use super::checkpoint::{ClaimEntry, ClaimPhase};
use super::error::{DraError, UnprepareError};
use super::prepare::Driver;

impl Driver {
    /// Unprepares `claim` (see the module header).
    pub async fn unprepare(&self, claim: &ClaimRef) -> Result<(), UnprepareError> {
        let _turn = self.lock(&claim.uid).await;
        let Some(entry) = self.checkpoint.lock().await.get(&claim.uid).cloned() else { return Ok(()) };
        let node = |what: &str| {
            let (claim, what) = (claim.clone(), what.to_string());
            move |problem: String| UnprepareError::Node { claim, what, problem }
        };
        let engine = |what: String| {
            let claim = claim.clone();
            move |source: EngineError| UnprepareError::Engine { claim, what, source }
        };
        self.stop_mps(&entry).await.map_err(node("the MPS control daemon"))?;
        for job in self.claim_jobs(&claim.uid).await.map_err(engine("listing its holds".into()))? {
            let exit = ExitInfo {
                code: None,
                signal: None,
                failed_rank: None,
                detail: format!("DRA claim {claim} unprepared"),
            };
            match self.act(Action::Release { id: job.id, exit, succeeded: true }).await {
                Ok(_) => {}
                // It ended between the list and the release.
                Err(EngineError::Conflict(why)) => tracing::info!("DRA: job {} of claim {claim}: {why}", job.id),
                Err(e) => return Err(engine(format!("releasing job {}", job.id))(e)),
            }
        }
        for d in entry.devices.iter().filter(|d| d.made) {
            let instance = Instance::new(d.profile_id, d.start);
            match self.act(Action::DestroyIdle { gpu: d.gpu, instance }).await {
                Ok(_) => {}
                // Someone else holds it now (it was idle between the release and the destroy):
                // it is theirs; nothing of the claim is left on it.
                Err(EngineError::Conflict(why)) => {
                    tracing::warn!("DRA: claim {claim}: the instance of {} it made stays: {why}", d.device);
                }
                Err(e) => return Err(engine(format!("destroying the instance of {}", d.device))(e)),
            }
        }
        remove_spec(&self.spec_path(&claim.uid)).map_err(node("the CDI spec"))?;
        self.checkpoint.lock().await.remove(&claim.uid).map_err(node("writing the checkpoint"))?;
        self.changed.send_modify(|n| *n += 1);
        tracing::info!("DRA: claim {claim} unprepared");
        Ok(())
    }

    /// Quits the claim's MPS control daemon if one runs at its pipe directory, and removes its
    /// directories.
    async fn stop_mps(&self, entry: &ClaimEntry) -> Result<(), String> {
        let dirs = self.mps_dirs(&entry.claim.uid);
        let pipe = entry.mps_pipe_dir.clone().unwrap_or(dirs.pipe);
        let base = dirs.base;
        let mps = self.mps.clone();
        tokio::task::spawn_blocking(move || {
            if mps.is_running(&pipe) {
                mps.quit(&pipe).map_err(|e| e.to_string())?;
            }
            match std::fs::remove_dir_all(&base) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", base.display())),
            }
        })
        .await
        .map_err(|e| format!("the MPS task: {e}"))?
    }

    /// At start: claims left `Preparing` are kept for the kubelet's retry (or unprepare);
    /// prepared claims whose holds the engine no longer has are dropped, with their CDI spec
    /// and MPS control daemon, and a log line (their instances are left as they are: a pod may
    /// still use them). An engine that cannot be asked stops the start.
    pub async fn recover(&self) -> Result<(), DraError> {
        let claims: Vec<ClaimEntry> = self.checkpoint.lock().await.claims().values().cloned().collect();
        for entry in claims {
            let claim = &entry.claim;
            if entry.phase == ClaimPhase::Preparing {
                tracing::info!(
                    "DRA: claim {claim} was being prepared when the plugin stopped; the kubelet's retry finishes it"
                );
                continue;
            }
            let mut lost = None;
            for d in &entry.devices {
                let Some(id) = d.job else {
                    lost = Some(format!("{} has no hold recorded", d.device));
                    break;
                };
                match self.job(id).await {
                    Ok(job) if job.state.is_active() => {}
                    Ok(job) => {
                        lost = Some(format!("its hold of {} (job {id}) is {}", d.device, job.state));
                        break;
                    }
                    Err(EngineError::NotFound(_)) => {
                        lost = Some(format!("the engine has no job {id} (the hold of {})", d.device));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(why) = lost else { continue };
            tracing::warn!("DRA: claim {claim} is dropped from the checkpoint: {why}");
            if let Err(e) = self.stop_mps(&entry).await {
                tracing::warn!("DRA: claim {claim}: the MPS control daemon: {e}");
            }
            if let Err(e) = remove_spec(&self.spec_path(&claim.uid)) {
                tracing::warn!("DRA: claim {claim}: {e}");
            }
            self.checkpoint
                .lock()
                .await
                .remove(&claim.uid)
                .map_err(|problem| DraError::Checkpoint { path: self.options.checkpoint.clone(), problem })?;
        }
        Ok(())
    }
}
