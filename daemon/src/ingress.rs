//! Service status follows the announcer: the node that announces a Service
//! writes `status.loadBalancer.ingress` and the `kube-vip.io/vipHost`
//! annotation; the node named there clears both when nobody can announce the
//! Service any more or it stopped being kvip's. One writer per Service.

use crate::budget::{self, Urgency};
use crate::metrics;
use crate::translate;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kvip_core::service::VIP_HOST_ANNOTATION;
use kvip_core::{PendingReason, ServiceKey};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes Service status without blocking the reconcile loop.
pub struct IngressWriter {
    client: Client,
    node: String,
    in_flight: Arc<Mutex<BTreeSet<ServiceKey>>>,
    /// A write was held back by the budget: sync again soon.
    held_back: Arc<AtomicBool>,
}

/// What a Service's status should become.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// Announced here: these addresses, this host (and whether the
    /// annotation names this node already, as a membership claim does).
    Announced(Vec<IpAddr>, bool),
    /// Nobody serves it: clear what we wrote.
    Cleared,
}

fn current(svc: &Service) -> (Vec<IpAddr>, Option<String>) {
    let ips = crate::translate::ingress(svc)
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let host = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VIP_HOST_ANNOTATION).cloned());
    (ips, host)
}

/// How long a status write may queue for the write budget (the budget cuts
/// it to what leaves Lease renewals room); held back, it is tried again at
/// the next step.
const STATUS_WAIT: Duration = Duration::from_secs(5);

impl IngressWriter {
    /// A writer for `node`.
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            in_flight: Arc::new(Mutex::new(BTreeSet::new())),
            held_back: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once after a write was held back by the write budget: the
    /// caller syncs again without waiting for the next assessment.
    pub fn take_held_back(&self) -> bool {
        self.held_back.swap(false, Ordering::Relaxed)
    }

    /// Brings every Service's status in line with what this node announces.
    pub async fn sync(
        &self,
        services: &[Arc<Service>],
        announced: &BTreeMap<ServiceKey, BTreeSet<IpAddr>>,
        ours: &BTreeSet<ServiceKey>,
        pending: &BTreeMap<ServiceKey, PendingReason>,
    ) {
        for svc in services {
            let key = translate::service_key(svc);
            let (ips, host) = current(svc);
            let want = if let Some(addresses) = announced.get(&key) {
                let addresses: Vec<IpAddr> = addresses.iter().copied().collect();
                if ips == addresses && host.as_deref() == Some(self.node.as_str()) {
                    continue;
                }
                Want::Announced(addresses, host.as_deref() == Some(self.node.as_str()))
            } else if host.as_deref() == Some(self.node.as_str())
                && (!ours.contains(&key) || pending.contains_key(&key))
            {
                Want::Cleared
            } else {
                continue;
            };
            self.write(key, want);
        }
    }

    fn write(&self, key: ServiceKey, want: Want) {
        {
            let Ok(mut set) = self.in_flight.lock() else {
                return;
            };
            if !set.insert(key.clone()) {
                return;
            }
        }
        let client = self.client.clone();
        let node = self.node.clone();
        let in_flight = self.in_flight.clone();
        let held_back = self.held_back.clone();
        tokio::spawn(async move {
            let api: Api<Service> = Api::namespaced(client, &key.namespace);
            let (ingress, host) = match &want {
                Want::Announced(ips, _) => (
                    json!(
                        ips.iter()
                            .map(|ip| json!({ "ip": ip.to_string(), "ipMode": "VIP" }))
                            .collect::<Vec<_>>()
                    ),
                    json!(node),
                ),
                Want::Cleared => (serde_json::Value::Null, serde_json::Value::Null),
            };
            let params = PatchParams::default();
            let status = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
            let meta = json!({ "metadata": { "annotations": { VIP_HOST_ANNOTATION: host } } });
            let done = || {
                if let Ok(mut set) = in_flight.lock() {
                    set.remove(&key);
                }
            };
            // Held back by the budget or a backoff: the next sync tries again.
            let status_target = format!("services/status/{key}");
            if budget::admit(
                &status_target,
                "services/status",
                Urgency::Within(STATUS_WAIT),
            )
            .await
            .is_err()
            {
                held_back.store(true, Ordering::Relaxed);
                return done();
            }
            let a = api
                .patch_status(&key.name, &params, &Patch::Merge(&status))
                .await;
            metrics::api_request("services/status", "patch", a.is_ok());
            budget::answered(&status_target, "services/status", "patch", budget::code(&a));
            let b = if matches!(want, Want::Announced(_, true)) {
                Ok(())
            } else {
                let target = format!("services/{key}");
                if budget::admit(&target, "services", Urgency::Within(STATUS_WAIT))
                    .await
                    .is_err()
                {
                    held_back.store(true, Ordering::Relaxed);
                    return done();
                }
                let b = api.patch(&key.name, &params, &Patch::Merge(&meta)).await;
                metrics::api_request("services", "patch", b.is_ok());
                budget::answered(&target, "services", "patch", budget::code(&b));
                b.map(|_| ())
            };
            match (a, b) {
                (Ok(_), Ok(_)) => match want {
                    Want::Announced(ips, _) => {
                        tracing::info!(service = %key, addresses = ?ips, "status: ingress written")
                    }
                    Want::Cleared => {
                        tracing::info!(service = %key, "status: ingress cleared, nobody announces it")
                    }
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(service = %key, error = %e, "status write failed; retried at the next sync")
                }
            }
            done();
        });
    }
}
