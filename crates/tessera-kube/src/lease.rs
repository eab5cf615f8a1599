//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: one replica holds the Lease and renews it; the others take it over only once it has gone
//! unrenewed for its whole duration, as they observed it on their own clocks (no clock is
//! compared across machines); every write carries the Lease's `resourceVersion`, so of two
//! replicas racing for it the API server lets one win and answers the other `409 Conflict`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::error::{KubeError, status_code};

/// The Lease and this replica's identity.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica (`POD_NAME`): the Lease's `holderIdentity` while it leads.
    pub identity: String,
    /// How long a Lease unrenewed stays its holder's (`leaseDurationSeconds`).
    pub duration: Duration,
}

/// One replica's side of the election.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The other holder's record last seen (holder, renew time) and when it was first seen so.
    observed: Option<(String, Option<Timestamp>, Instant)>,
    /// When this replica last wrote the Lease as its holder.
    renewed: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> LeaderElector {
        LeaderElector { api: Api::namespaced(client, &settings.namespace), settings, observed: None, renewed: None }
    }

    fn what(&self) -> String {
        format!("Lease {}/{}", self.settings.namespace, self.settings.name)
    }

    /// Tries to acquire or renew the Lease; true while this replica leads. A failed request
    /// keeps the lead only while the last renewal is younger than two thirds of the duration
    /// (client-go's renew deadline), so a leader cut off from the API server steps down before
    /// anyone can take over.
    pub async fn try_lead(&mut self) -> Result<bool, KubeError> {
        match self.round().await {
            Ok(leading) => {
                self.renewed = leading.then(Instant::now);
                Ok(leading)
            }
            Err(e) => {
                let deadline = self.settings.duration * 2 / 3;
                if self.renewed.is_some_and(|t| t.elapsed() >= deadline) {
                    self.renewed = None;
                }
                Err(e)
            }
        }
    }

    /// Whether this replica led at its last successful round, and still may.
    pub fn leading(&self) -> bool {
        self.renewed.is_some_and(|t| t.elapsed() < self.settings.duration * 2 / 3)
    }

    async fn round(&mut self) -> Result<bool, KubeError> {
        let me = self.settings.identity.clone();
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let current =
            self.api.get_opt(&self.settings.name).await.map_err(KubeError::api(format!("reading {}", self.what())))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) => Err(KubeError::api(format!("creating {}", self.what()))(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        if holder != me && !holder.is_empty() {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.duration, Duration::from_secs);
            let seen_since = match &self.observed {
                Some((h, r, since)) if *h == holder && *r == renew => *since,
                _ => {
                    let since = Instant::now();
                    self.observed = Some((holder.clone(), renew, since));
                    since
                }
            };
            if seen_since.elapsed() < duration {
                return Ok(false);
            }
            tracing::info!("{}: {holder} has not renewed it for {} s; taking it over", self.what(), duration.as_secs());
        }
        if holder != me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = None;
                Ok(true)
            }
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(KubeError::api(format!("updating {}", self.what()))(e)),
        }
    }

    /// Gives the Lease up when this replica holds it (on shutdown), so another takes over at
    /// once rather than after the duration: no holder, a one-second duration (as client-go's
    /// `ReleaseOnCancel`).
    pub async fn release(&mut self) -> Result<(), KubeError> {
        self.renewed = None;
        let Some(mut lease) =
            self.api.get_opt(&self.settings.name).await.map_err(KubeError::api(format!("reading {}", self.what())))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(KubeError::api(format!("releasing {}", self.what()))(e)),
        }
    }
}
