//! Service status follows the announcer: the node that announces a Service
//! writes `status.loadBalancer.ingress` and the `kube-vip.io/vipHost`
//! annotation; the node named there clears both when nobody can announce the
//! Service any more or it stopped being kvip's. One writer per Service.

use crate::budget::{self, Urgency};
use crate::metrics;
use crate::translate;
use k8s_openapi::api::core::v1::LoadBalancerIngress;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kvip_core::access::{Verb, Write};
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
    /// Nobody serves it, but its addresses come from its status (nothing
    /// else names them): clear only the vipHost, or the address is lost.
    Unhosted,
}

/// What this node knows of one Service, for [`wanted`].
struct ServiceState<'a> {
    /// The addresses this node announces for it, if any.
    announced: Option<&'a BTreeSet<IpAddr>>,
    /// kvip's (served, pending or refused).
    ours: bool,
    /// Nobody can announce it.
    pending: bool,
    /// Its addresses come from its status ingress.
    from_status: bool,
}

/// What the status of a Service whose ingress is `ips` should become, when
/// its vipHost names this node (`here`) or not; None: leave it.
fn wanted(ips: &[IpAddr], here: bool, state: &ServiceState<'_>) -> Option<Want> {
    if let Some(addresses) = state.announced {
        let addresses: Vec<IpAddr> = addresses.iter().copied().collect();
        if ips == addresses && here {
            return None;
        }
        return Some(Want::Announced(addresses, here));
    }
    if !here || (state.ours && !state.pending) {
        return None;
    }
    if state.from_status && state.ours {
        Some(Want::Unhosted)
    } else {
        Some(Want::Cleared)
    }
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
        from_status: &BTreeSet<ServiceKey>,
    ) {
        for svc in services {
            let key = translate::service_key(svc);
            let (ips, host) = current(svc);
            let here = host.as_deref() == Some(self.node.as_str());
            let state = ServiceState {
                announced: announced.get(&key),
                ours: ours.contains(&key),
                pending: pending.contains_key(&key),
                from_status: from_status.contains(&key),
            };
            if let Some(want) = wanted(&ips, here, &state) {
                self.write(key, want);
            }
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
            let ips = match &want {
                Want::Announced(ips, _) => Some(ips.clone()),
                Want::Cleared | Want::Unhosted => None,
            };
            let host = ips.as_ref().map(|_| node.clone());
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
            let a = if want == Want::Unhosted {
                Ok(())
            } else {
                let a = write_status(&api, &key.name, ips.as_deref()).await;
                metrics::api_request("services/status", "write", a.is_ok());
                budget::answered(&status_target, "services/status", "write", budget::code(&a));
                a.map(|_| ())
            };
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
                let b = write_vip_host(&api, &key.name, host.as_deref()).await;
                metrics::api_request("services", "write", b.is_ok());
                budget::answered(&target, "services", "write", budget::code(&b));
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
                    Want::Unhosted => {
                        tracing::info!(service = %key, "status: vipHost cleared, nobody announces it; the ingress stays, it names the Service's addresses")
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

/// Writes `status.loadBalancer.ingress` of Service `name`: these addresses
/// (`ipMode: VIP`), or none. By merge patch, or where RBAC grants only
/// `update` on services/status (kube-vip's ClusterRole) by reading the
/// Service and replacing its status guarded by the resourceVersion read.
async fn write_status(
    api: &Api<Service>,
    name: &str,
    ips: Option<&[IpAddr]>,
) -> kube::Result<Service> {
    crate::access::write(Write::ServiceStatus, |verb| async move {
        match verb {
            Verb::Patch => {
                let ingress = match ips {
                    Some(ips) => json!(ingress_of(ips)),
                    None => serde_json::Value::Null,
                };
                let status = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
            }
            Verb::Update => {
                let mut svc = api.get(name).await?;
                set_ingress(&mut svc, ips);
                api.replace_status(name, &PostParams::default(), &svc).await
            }
        }
    })
    .await
}

/// Writes the `kube-vip.io/vipHost` annotation of Service `name` (`None`
/// removes it), by merge patch or, where RBAC grants only `update` on
/// services, by reading the Service and replacing it guarded by the
/// resourceVersion read.
async fn write_vip_host(
    api: &Api<Service>,
    name: &str,
    host: Option<&str>,
) -> kube::Result<Service> {
    crate::access::write(Write::Services, |verb| async move {
        match verb {
            Verb::Patch => {
                let meta = json!({ "metadata": { "annotations": { VIP_HOST_ANNOTATION: host } } });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&meta))
                    .await
            }
            Verb::Update => {
                let mut svc = api.get(name).await?;
                set_vip_host(&mut svc, host);
                api.replace(name, &PostParams::default(), &svc).await
            }
        }
    })
    .await
}

/// The ingress entries kvip writes for `ips`.
fn ingress_of(ips: &[IpAddr]) -> Vec<LoadBalancerIngress> {
    ips.iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".to_string()),
            ..Default::default()
        })
        .collect()
}

/// Sets `status.loadBalancer.ingress` of `svc` to `ips`, or clears it;
/// the rest of the status stays.
fn set_ingress(svc: &mut Service, ips: Option<&[IpAddr]>) {
    let status = svc.status.get_or_insert_with(Default::default);
    let lb = status.load_balancer.get_or_insert_with(Default::default);
    lb.ingress = ips.map(ingress_of);
}

/// Sets the `kube-vip.io/vipHost` annotation of `svc` to `host`, or
/// removes it; other annotations stay.
pub fn set_vip_host(svc: &mut Service, host: Option<&str>) {
    let annotations = svc
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match host {
        Some(host) => {
            annotations.insert(VIP_HOST_ANNOTATION.to_string(), host.to_string());
        }
        None => {
            annotations.remove(VIP_HOST_ANNOTATION);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerStatus, ServiceStatus};

    fn service() -> Service {
        let mut svc = Service::default();
        svc.metadata.annotations = Some(BTreeMap::from([
            ("team".to_string(), "shop".to_string()),
            (VIP_HOST_ANNOTATION.to_string(), "worker1".to_string()),
        ]));
        svc.status = Some(ServiceStatus {
            conditions: Some(Vec::new()),
            load_balancer: Some(LoadBalancerStatus { ingress: None }),
        });
        svc
    }

    #[test]
    fn a_pending_service_addressed_by_its_status_keeps_its_ingress() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let here = BTreeSet::from([ip]);
        let state = |announced, ours, pending, from_status| ServiceState {
            announced,
            ours,
            pending,
            from_status,
        };
        // Announced here, written already: nothing to do.
        assert_eq!(
            wanted(&[ip], true, &state(Some(&here), true, false, false)),
            None
        );
        assert_eq!(
            wanted(&[], false, &state(Some(&here), true, false, true)),
            Some(Want::Announced(vec![ip], false))
        );
        // Pending, written by this node: cleared, unless the status is
        // where its address comes from.
        assert_eq!(
            wanted(&[ip], true, &state(None, true, true, false)),
            Some(Want::Cleared)
        );
        assert_eq!(
            wanted(&[ip], true, &state(None, true, true, true)),
            Some(Want::Unhosted)
        );
        // No longer kvip's: cleared either way.
        assert_eq!(
            wanted(&[ip], true, &state(None, false, false, true)),
            Some(Want::Cleared)
        );
        // Another node's, or served: left alone.
        assert_eq!(wanted(&[ip], false, &state(None, true, true, false)), None);
        assert_eq!(wanted(&[ip], true, &state(None, true, false, false)), None);
    }

    #[test]
    fn an_update_sets_the_ingress_and_keeps_the_rest_of_the_status() {
        let mut svc = service();
        let ips: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        set_ingress(&mut svc, Some(&ips));
        let status = svc.status.as_ref().unwrap();
        let (ips_written, _): (Vec<_>, ()) = (
            crate::translate::ingress(&svc)
                .map(|i| i.ip.clone().unwrap())
                .collect(),
            (),
        );
        assert_eq!(ips_written, vec!["192.0.2.10", "2001:db8::10"]);
        assert!(status.conditions.is_some(), "conditions stay");
        let modes: Vec<_> = crate::translate::ingress(&svc)
            .map(|i| i.ip_mode.clone())
            .collect();
        assert_eq!(modes, vec![Some("VIP".to_string()); 2]);
        set_ingress(&mut svc, None);
        assert_eq!(crate::translate::ingress(&svc).count(), 0);
        let mut bare = Service::default();
        set_ingress(&mut bare, Some(&ips[..1]));
        assert_eq!(crate::translate::ingress(&bare).count(), 1);
    }

    #[test]
    fn an_update_sets_or_removes_only_the_vip_host_annotation() {
        let mut svc = service();
        set_vip_host(&mut svc, Some("worker2"));
        let annotations = svc.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[VIP_HOST_ANNOTATION], "worker2");
        assert_eq!(annotations["team"], "shop");
        set_vip_host(&mut svc, None);
        let annotations = svc.metadata.annotations.clone().unwrap();
        assert!(!annotations.contains_key(VIP_HOST_ANNOTATION));
        assert_eq!(annotations["team"], "shop");
        let mut bare = Service::default();
        set_vip_host(&mut bare, Some("worker1"));
        assert_eq!(
            bare.metadata.annotations.unwrap()[VIP_HOST_ANNOTATION],
            "worker1"
        );
    }
}
