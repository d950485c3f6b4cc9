//! Membership mode's claims (see `kvip_core::membership`): the
//! `kube-vip.io/vipHost` annotation of a group's first Service names the node
//! allowed to announce the group's addresses. Every write carries the
//! resourceVersion it was decided on, so of two nodes claiming at once one
//! gets 409 and has lost.

use crate::budget::Urgency;
use crate::metrics;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kvip_core::access::{Verb, Write};
use kvip_core::service::VIP_HOST_ANNOTATION;
use kvip_core::{LeaseKey, ServiceKey};
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;

/// How a claim write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    /// Stored; the Service's new resourceVersion and the claimant written.
    Ok {
        /// `metadata.resourceVersion` after the write.
        resource_version: u64,
        /// The node named (None: the claim was cleared).
        claimant: Option<String>,
    },
    /// 409: the Service changed since it was read; decide again.
    Conflict,
    /// Anything else, including a timeout.
    Error,
}

/// A finished claim write, sent back to the reconcile loop.
#[derive(Debug)]
pub struct ClaimDone {
    /// The group whose claim was written.
    pub group: LeaseKey,
    /// How it ended.
    pub result: ClaimResult,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct ClaimWrite {
    /// The group (for the answer).
    pub group: LeaseKey,
    /// The Service carrying the claim.
    pub service: ServiceKey,
    /// The resourceVersion the decision was taken on.
    pub resource_version: String,
    /// Who is named: this node to claim, None to clear.
    pub claimant: Option<String>,
}

/// Writes `claim` in the background and reports to `done`.
pub fn spawn(
    client: &Client,
    claim: ClaimWrite,
    timeout: Duration,
    done: &mpsc::UnboundedSender<ClaimDone>,
) {
    let client = client.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let result = write(&client, &claim, timeout).await;
        let _ = done.send(ClaimDone {
            group: claim.group,
            result,
        });
    });
}

async fn write(client: &Client, claim: &ClaimWrite, timeout: Duration) -> ClaimResult {
    let api: Api<Service> = Api::namespaced(client.clone(), &claim.service.namespace);
    let target = format!("services/{}", claim.service);
    if crate::budget::admit(&target, "services", Urgency::Within(timeout / 2))
        .await
        .is_err()
    {
        return ClaimResult::Error;
    }
    let call = send(&api, claim);
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => {
            metrics::api_request("services", "claim", false);
            crate::budget::answered(&target, "services", "claim", None);
            tracing::warn!(service = %claim.service, "claim write timed out");
            return ClaimResult::Error;
        }
    };
    crate::budget::answered(&target, "services", "claim", crate::budget::code(&result));
    match result {
        Ok(stored) => {
            metrics::api_request("services", "claim", true);
            match stored
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(resource_version) => ClaimResult::Ok {
                    resource_version,
                    claimant: claim.claimant.clone(),
                },
                None => ClaimResult::Error,
            }
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            metrics::api_request("services", "claim", true);
            ClaimResult::Conflict
        }
        Err(e) => {
            metrics::api_request("services", "claim", false);
            tracing::warn!(service = %claim.service, error = %e, "claim write failed");
            ClaimResult::Error
        }
    }
}

/// Sends `claim`: a merge patch carrying the resourceVersion it was decided
/// on, or where RBAC grants only `update` on services (kube-vip's
/// ClusterRole) a read of the Service, refused as a conflict when it changed
/// since, and a replace guarded by that version.
async fn send(api: &Api<Service>, claim: &ClaimWrite) -> kube::Result<Service> {
    let name = claim.service.name.as_str();
    crate::access::write(Write::Services, |verb| async move {
        match verb {
            Verb::Patch => {
                let patch = json!({
                    "metadata": {
                        "resourceVersion": claim.resource_version,
                        "annotations": { VIP_HOST_ANNOTATION: claim.claimant },
                    }
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
            Verb::Update => {
                let mut svc = api.get(name).await?;
                if svc.metadata.resource_version.as_deref() != Some(claim.resource_version.as_str())
                {
                    return Err(crate::access::conflict(&format!(
                        "service {}",
                        claim.service
                    )));
                }
                crate::ingress::set_vip_host(&mut svc, claim.claimant.as_deref());
                api.replace(name, &PostParams::default(), &svc).await
            }
        }
    })
    .await
}
