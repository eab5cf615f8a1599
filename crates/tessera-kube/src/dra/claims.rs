//! Reading a ResourceClaim the kubelet asks the driver to prepare: its allocation (devices and
//! opaque configuration) and the user its pod runs as, into
//! [`tessera_kube_core::dra_claim::ClaimAllocation`], where everything after is decided.
//!
//! The kubelet names a claim by namespace, name and UID; a claim of that name with another UID
//! is another claim (deleted and re-created) and is refused, as is one not allocated.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimConsumerReference};
use kube::Client;
use kube::api::Api;
use tessera_kube_core::dra_claim::{AllocatedDevice, ClaimAllocation, ClaimConfig, ClaimRef, ConfigSource};

use crate::error::KubeError;

/// The allocation of `claim` as the API server holds it, with the user its first reserving pod
/// runs as. Errors name the claim: it cannot be read, it is another claim of the same name, it
/// is not allocated, or its allocation cannot be read. A reserving pod that cannot be read
/// leaves `run_as_user` empty (logged at debug), it is no error.
pub async fn claim_allocation(client: &Client, claim: &ClaimRef) -> Result<ClaimAllocation, KubeError> {
    let claims: Api<ResourceClaim> = Api::namespaced(client.clone(), &claim.namespace);
    let object = claims.get(&claim.name).await.map_err(KubeError::api(format!("reading ResourceClaim {claim}")))?;
    let mut allocation = allocation_of(claim, &object)?;
    let reserved = object.status.as_ref().and_then(|s| s.reserved_for.as_ref());
    if let Some(pod) = reserved.and_then(|r| r.iter().find(|c| is_pod(c))) {
        allocation.run_as_user = run_as_user(client, claim, pod).await;
    }
    Ok(allocation)
}

/// The allocation `object` holds for `claim` (pure): its devices and opaque configuration, in
/// the API's order; `run_as_user` is left empty.
pub fn allocation_of(claim: &ClaimRef, object: &ResourceClaim) -> Result<ClaimAllocation, KubeError> {
    let found = object.metadata.uid.clone().unwrap_or_default();
    if found != claim.uid {
        return Err(KubeError::ClaimReplaced { claim: claim.to_string(), found });
    }
    let Some(allocation) = object.status.as_ref().and_then(|s| s.allocation.as_ref()) else {
        return Err(KubeError::ClaimNotAllocated { claim: claim.to_string() });
    };
    let Some(devices) = &allocation.devices else { return Ok(ClaimAllocation::default()) };
    let results = devices
        .results
        .iter()
        .flatten()
        .map(|r| AllocatedDevice {
            request: r.request.clone(),
            driver: r.driver.clone(),
            pool: r.pool.clone(),
            device: r.device.clone(),
            share_id: r.share_id.clone(),
        })
        .collect();
    let mut config = Vec::new();
    for (index, c) in devices.config.iter().flatten().enumerate() {
        let source = match c.source.as_str() {
            "FromClass" => ConfigSource::FromClass,
            "FromClaim" => ConfigSource::FromClaim,
            other => {
                return Err(KubeError::ClaimMalformed {
                    claim: claim.to_string(),
                    problem: format!(
                        "status.allocation.devices.config[{index}].source is '{other}', neither FromClass nor FromClaim"
                    ),
                });
            }
        };
        // Only opaque configuration exists in v1; another kind is no driver's parameters.
        let Some(opaque) = &c.opaque else { continue };
        config.push(ClaimConfig {
            source,
            requests: c.requests.clone().unwrap_or_default(),
            driver: opaque.driver.clone(),
            parameters: opaque.parameters.0.clone(),
        });
    }
    Ok(ClaimAllocation { devices: results, config, run_as_user: None })
}

fn is_pod(consumer: &ResourceClaimConsumerReference) -> bool {
    consumer.resource == "pods" && consumer.api_group.as_deref().unwrap_or("").is_empty()
}

/// The user the reserving pod's first container runs as, else the pod's; `None` when neither
/// says or the pod cannot be read (it is the same pod only when its UID matches).
async fn run_as_user(client: &Client, claim: &ClaimRef, consumer: &ResourceClaimConsumerReference) -> Option<u32> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &claim.namespace);
    let pod = match pods.get(&consumer.name).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("ResourceClaim {claim}: reading its pod {}: {e}; no runAsUser", consumer.name);
            return None;
        }
    };
    if pod.metadata.uid.as_deref() != Some(consumer.uid.as_str()) {
        tracing::debug!(
            "ResourceClaim {claim}: pod {} is not the reserving one (uid {:?}, reserved by {}); no runAsUser",
            consumer.name,
            pod.metadata.uid,
            consumer.uid
        );
        return None;
    }
    let spec = pod.spec?;
    let container = spec.containers.first().and_then(|c| c.security_context.as_ref()).and_then(|s| s.run_as_user);
    let uid = container.or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user))?;
    match u32::try_from(uid) {
        Ok(u) => Some(u),
        Err(_) => {
            tracing::debug!("ResourceClaim {claim}: pod {} runs as {uid}, not a user id; no runAsUser", consumer.name);
            None
        }
    }
}
