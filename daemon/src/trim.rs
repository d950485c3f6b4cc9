//! What the caches keep of each object: every node stores every Service,
//! EndpointSlice, Node and Lease it watches, so fields kvip never reads are
//! dropped before the store sees them. Server-side apply's `managedFields`
//! and kubectl's last-applied annotation often outweigh the rest of an
//! object; a Node's status carries its image list and conditions.
//!
//! Kept: everything of Services and Leases but those two (their spec,
//! status, labels and annotations are all read somewhere), an
//! EndpointSlice's labels, address type, ports and each endpoint's
//! addresses, conditions and node, a Node's labels, spec and
//! `status.addresses`. `kvip status` reads the cluster itself, untrimmed.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// kubectl's copy of the last applied object, in an annotation.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what kvip never reads from an object before it is cached.
pub trait Trim {
    /// Drops the fields no code path reads.
    fn trim(&mut self);
}

/// What every object loses: server-side apply's bookkeeping and kubectl's
/// copy of the object.
fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

impl Trim for Service {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
    }
}

impl Trim for Lease {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
    }
}

impl Trim for EndpointSlice {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        // The slice's Service is in a label; nothing reads its annotations
        // (the controller's trigger time) or its owner.
        self.metadata.annotations = None;
        self.metadata.owner_references = None;
        for ep in &mut self.endpoints {
            // The pod each endpoint points at, its hostname, zone and
            // topology hints: placement reads only the node and conditions.
            ep.target_ref = None;
            ep.hostname = None;
            ep.zone = None;
            ep.hints = None;
            ep.deprecated_topology = None;
        }
    }
}

impl Trim for Node {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        // Node annotations (CNI, CSI, kubeadm) are never read.
        self.metadata.annotations = None;
        self.metadata.owner_references = None;
        // Of the status only the addresses are read (a Service may not have
        // a node's address); images, conditions and capacity are the bulk.
        self.status = self.status.take().map(|s| NodeStatus {
            addresses: s.addresses,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate;
    use serde_json::json;

    fn managed_fields() -> serde_json::Value {
        json!([{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": { "f:metadata": { "f:annotations": {} }, "f:spec": { "f:ports": {} } }
        }])
    }

    fn size(value: &impl serde::Serialize) -> usize {
        serde_json::to_vec(value).map_or(0, |v| v.len())
    }

    #[test]
    fn a_trimmed_service_reads_the_same_and_loses_the_bookkeeping() {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "annotations": {
                    "kube-vip.io/loadbalancerIPs": "192.0.2.10",
                    "kube-vip.io/vipHost": "worker1",
                    LAST_APPLIED_ANNOTATION: "{\"apiVersion\":\"v1\",\"kind\":\"Service\"}"
                },
                "labels": { "app": "web" },
                "managedFields": managed_fields()
            },
            "spec": {
                "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ipFamilies": ["IPv4"], "loadBalancerClass": "kube-vip.io/kube-vip-class",
                "ports": [{ "port": 80, "protocol": "TCP" }]
            },
            "status": { "loadBalancer": { "ingress": [{ "ip": "192.0.2.10" }] } }
        }))
        .unwrap();
        let before = svc.clone();
        svc.trim();
        let mut expected = translate::service_input(&before);
        expected.annotations.remove(LAST_APPLIED_ANNOTATION);
        assert_eq!(translate::service_input(&svc), expected);
        assert_eq!(
            translate::ingress(&svc).collect::<Vec<_>>(),
            translate::ingress(&before).collect::<Vec<_>>()
        );
        assert_eq!(svc.metadata.managed_fields, None);
        // What other code reads stays: identity, age, version, spec, status.
        assert_eq!(svc.metadata.uid, before.metadata.uid);
        assert_eq!(
            svc.metadata.creation_timestamp,
            before.metadata.creation_timestamp
        );
        assert_eq!(
            svc.metadata.resource_version,
            before.metadata.resource_version
        );
        assert_eq!(svc.metadata.labels, before.metadata.labels);
        assert_eq!(svc.spec, before.spec);
        assert_eq!(svc.status, before.status);
    }

    #[test]
    fn a_trimmed_slice_reads_the_same() {
        let mut slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": "web-abcde", "namespace": "shop",
                "labels": { "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
                "annotations": { "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z" },
                "ownerReferences": [{ "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u-1", "controller": true }],
                "managedFields": managed_fields()
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": [{
                "addresses": ["10.78.2.5"],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": "worker1",
                "hostname": "web-1",
                "zone": "rack-a",
                "hints": { "forZones": [{ "name": "rack-a" }] },
                "targetRef": { "kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "p-1" }
            }]
        }))
        .unwrap();
        let before = slice.clone();
        slice.trim();
        assert_eq!(
            translate::slice_input(&slice),
            translate::slice_input(&before)
        );
        assert!(translate::slice_input(&slice).is_some());
        assert_eq!(slice.ports, before.ports);
        assert!(slice.endpoints[0].target_ref.is_none());
        assert!(slice.metadata.annotations.is_none());
        assert!(size(&slice) < size(&before) / 2, "{slice:?}");
    }

    #[test]
    fn a_trimmed_node_keeps_its_name_labels_and_addresses_only() {
        let images: Vec<serde_json::Value> = (0..40)
            .map(|i| json!({ "names": [format!("registry.example/app-{i}@sha256:{i:064}")], "sizeBytes": 123_456_789 }))
            .collect();
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "worker1",
                "labels": { "kubernetes.io/hostname": "worker1", "node.kubernetes.io/exclude-from-external-load-balancers": "true" },
                "annotations": { "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock", "node.alpha.kubernetes.io/ttl": "0" },
                "managedFields": managed_fields()
            },
            "spec": { "podCIDR": "10.78.2.0/24", "taints": [{ "key": "k", "effect": "NoSchedule" }] },
            "status": {
                "addresses": [
                    { "type": "InternalIP", "address": "10.77.0.12" },
                    { "type": "InternalIP", "address": "fd00:77::12" },
                    { "type": "Hostname", "address": "worker1" }
                ],
                "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status" }],
                "images": images,
                "nodeInfo": {
                    "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://2.0",
                    "kernelVersion": "6.1", "kubeProxyVersion": "", "kubeletVersion": "v1.34.0",
                    "machineID": "m", "operatingSystem": "linux", "osImage": "Debian", "systemUUID": "s"
                },
                "capacity": { "cpu": "4", "memory": "8Gi" }
            }
        }))
        .unwrap();
        let before = node.clone();
        node.trim();
        assert_eq!(
            translate::node_labels(&node),
            translate::node_labels(&before)
        );
        assert_eq!(
            translate::node_addresses([&node]),
            translate::node_addresses([&before])
        );
        assert_eq!(translate::node_addresses([&node]).len(), 2);
        assert_eq!(node.spec, before.spec);
        let status = node.status.as_ref().unwrap();
        assert!(
            status.images.is_none() && status.conditions.is_none() && status.node_info.is_none()
        );
        assert!(node.metadata.annotations.is_none() && node.metadata.managed_fields.is_none());
        assert!(size(&node) * 5 < size(&before), "{node:?}");
    }

    #[test]
    fn a_trimmed_lease_keeps_what_elections_and_instances_read() {
        let mut lease: Lease = serde_json::from_value(json!({
            "metadata": {
                "name": "kvip-lb-worker1", "namespace": "kube-system", "resourceVersion": "7",
                "labels": { "app.kubernetes.io/managed-by": "kvip" },
                "annotations": { "kvip.io/macs": "02:00:00:00:00:01" },
                "managedFields": managed_fields()
            },
            "spec": {
                "holderIdentity": "worker1", "leaseDurationSeconds": 5,
                "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 1
            }
        }))
        .unwrap();
        let before = lease.clone();
        lease.trim();
        assert_eq!(
            translate::observed(Some(&lease)),
            translate::observed(Some(&before))
        );
        assert_eq!(lease.metadata.labels, before.metadata.labels);
        assert_eq!(lease.metadata.annotations, before.metadata.annotations);
        assert_eq!(lease.metadata.managed_fields, None);
    }
}
