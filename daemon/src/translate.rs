//! Translation only: Kubernetes objects into the core's plain inputs, and
//! the core's Lease records back into Lease specs. No decisions live here.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kvip_core::endpoints::EndpointInput;
use kvip_core::{LeaseRecord, Observed, ServiceInput, ServiceKey, SliceInput, WallTime};
use std::collections::BTreeMap;

/// The key of a Service object.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// A Service as the core reads it.
pub fn service_input(svc: &Service) -> ServiceInput {
    let spec = svc.spec.clone().unwrap_or_default();
    let cluster_ips = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default();
    ServiceInput {
        key: service_key(svc),
        type_: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
        load_balancer_class: spec.load_balancer_class,
        load_balancer_ip: spec.load_balancer_ip,
        annotations: svc
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        external_traffic_policy: spec.external_traffic_policy,
        ip_families: spec.ip_families.unwrap_or_default(),
        ip_family_policy: spec.ip_family_policy,
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.protocol.unwrap_or_else(|| "TCP".into()),
                    u16::try_from(p.port).unwrap_or(0),
                )
            })
            .collect(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        // Without a creation time (never from the API server) a Service ranks last.
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        ingress_ips: ingress(svc).filter_map(|i| i.ip.clone()).collect(),
        cluster_ips,
        lease_labelled: false,
    }
}

/// The entries of a Service's `status.loadBalancer.ingress`.
pub fn ingress(svc: &Service) -> impl Iterator<Item = &LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
}

/// An EndpointSlice as the core reads it; None when it belongs to no Service.
pub fn slice_input(slice: &EndpointSlice) -> Option<SliceInput> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some(SliceInput {
        service: ServiceKey::new(
            slice.metadata.namespace.clone().unwrap_or_default(),
            service.clone(),
        ),
        slice_name: slice.metadata.name.clone().unwrap_or_default(),
        address_type: slice.address_type.clone(),
        endpoints: slice
            .endpoints
            .iter()
            .map(|ep| {
                let c = ep.conditions.clone().unwrap_or_default();
                EndpointInput {
                    node_name: ep.node_name.clone(),
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                    addresses: ep.addresses.clone(),
                }
            })
            .collect(),
    })
}

/// A Node's name and labels.
pub fn node_labels(node: &Node) -> (String, BTreeMap<String, String>) {
    (
        node.metadata.name.clone().unwrap_or_default(),
        node.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    )
}

/// Every Node's own addresses (`status.addresses` that are IPs), with its name.
pub fn node_addresses<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
) -> BTreeMap<std::net::IpAddr, String> {
    nodes
        .into_iter()
        .flat_map(|node| {
            let name = node.metadata.name.clone().unwrap_or_default();
            node.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(move |a| Some((a.address.parse().ok()?, name.clone())))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn wall(t: &MicroTime) -> WallTime {
    WallTime(t.0.as_microsecond())
}

fn micro(t: WallTime) -> Option<MicroTime> {
    Timestamp::from_microsecond(t.0).ok().map(MicroTime)
}

/// What the core observes of a Lease (None: it does not exist).
pub fn observed(lease: Option<&Lease>) -> Observed {
    match lease {
        None => Observed {
            record: None,
            resource_version: None,
        },
        Some(l) => {
            let spec = l.spec.clone().unwrap_or_default();
            Observed {
                record: Some(LeaseRecord {
                    holder: spec.holder_identity,
                    lease_duration_seconds: spec.lease_duration_seconds,
                    acquire_time: spec.acquire_time.as_ref().map(wall),
                    renew_time: spec.renew_time.as_ref().map(wall),
                    lease_transitions: spec.lease_transitions,
                    kvip_renewed: l
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(kvip_core::election::KVIP_RENEWED_ANNOTATION))
                        .and_then(|v| v.trim().parse::<i64>().ok())
                        .map(WallTime),
                }),
                resource_version: l.metadata.resource_version.clone(),
            }
        }
    }
}

/// A Lease spec from a core record.
pub fn lease_spec(record: &LeaseRecord) -> LeaseSpec {
    LeaseSpec {
        holder_identity: record.holder.clone(),
        lease_duration_seconds: record.lease_duration_seconds,
        acquire_time: record.acquire_time.and_then(micro),
        renew_time: record.renew_time.and_then(micro),
        lease_transitions: record.lease_transitions,
        ..Default::default()
    }
}

/// Now, as a Lease timestamp.
pub fn wall_now() -> WallTime {
    WallTime(Timestamp::now().as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn lease_round_trip_keeps_microseconds() {
        let record = LeaseRecord {
            holder: Some("worker1".into()),
            lease_duration_seconds: Some(5),
            acquire_time: Some(WallTime(1_764_000_000_123_456)),
            renew_time: Some(WallTime(1_764_000_001_654_321)),
            lease_transitions: Some(3),
            kvip_renewed: None,
        };
        let lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                ..Default::default()
            },
            spec: Some(lease_spec(&record)),
        };
        let seen = observed(Some(&lease));
        assert_eq!(seen.record, Some(record));
        assert_eq!(seen.resource_version.as_deref(), Some("42"));
        assert_eq!(observed(None).record, None);
    }

    #[test]
    fn slices_without_a_service_are_skipped() {
        assert!(slice_input(&EndpointSlice::default()).is_none());
    }
}
