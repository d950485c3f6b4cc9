//! Which nodes may announce a Service (design §3), and, when none may, the
//! most specific reason in plain words with the fix. Pure: the daemon passes
//! in the Service, where its endpoints are and which nodes run kvip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::endpoints::EndpointSummary;
use crate::service::{LOADBALANCER_IPS_ANNOTATION, ServiceKey, ServiceView, TrafficPolicy};

/// With `kvip_exclude_lb_label=true`, nodes with this label (any value)
/// never announce Service VIPs, as for cloud load balancers. kubeadm puts it
/// on every control-plane node and kube-vip ignores it, so by default kvip
/// ignores it too.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A node, as far as candidacy is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInput {
    /// `metadata.name`.
    pub name: String,
    /// It may not announce Service VIPs ([`excluded_by_label`]).
    pub excluded: bool,
    /// A live kvip instance with the Service role runs on it.
    pub runs_service_instance: bool,
}

impl NodeInput {
    /// Whether the node opted out of announcing Service VIPs.
    pub fn excluded(&self) -> bool {
        self.excluded
    }
}

/// Whether a node with `labels` is excluded from announcing Service VIPs:
/// only when `honour` (`kvip_exclude_lb_label=true`) and it carries
/// [`EXCLUDE_LB_LABEL`].
pub fn excluded_by_label(labels: &BTreeMap<String, String>, honour: bool) -> bool {
    honour && labels.contains_key(EXCLUDE_LB_LABEL)
}

/// Why a Service has no announcer; each message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PendingReason {
    /// The Service has no VIP yet.
    NoAddress,
    /// No endpoint is ready (or, failing that, serving) anywhere.
    NoReadyEndpoints,
    /// Local policy: the endpoints run only on nodes without a kvip Service instance.
    EndpointsOnNodesWithoutKvip {
        /// The nodes with endpoints but no kvip.
        nodes: Vec<String>,
    },
    /// No node at all runs a kvip Service instance.
    NoKvipInstances,
    /// Every node that could announce is labelled to be excluded.
    AllCandidatesExcluded {
        /// The excluded nodes that would otherwise be candidates.
        nodes: Vec<String>,
    },
    /// Another Service, in another namespace, already claims the address.
    AddressConflict {
        /// The contested address.
        address: IpAddr,
        /// The Service that keeps it.
        other: ServiceKey,
    },
    /// Services sharing an address have no candidate node in common.
    NoCommonCandidate {
        /// The shared addresses.
        addresses: Vec<IpAddr>,
        /// The Services sharing them.
        services: Vec<ServiceKey>,
    },
    /// Every node that could announce cannot put the address on a usable
    /// interface (missing, down, no carrier, no route of its family, or the
    /// address already there and not kvip's).
    NoUsableInterface {
        /// Each such node with its problem.
        nodes: BTreeMap<String, String>,
    },
    /// The address is already on a node's interface, put there by someone
    /// else: a second announcer would make two hosts answer for it.
    AddressOnNode {
        /// The address.
        address: IpAddr,
        /// The node.
        node: String,
        /// Its interface.
        interface: String,
    },
    /// The address is the control-plane VIP (`address`), which only the
    /// control-plane role announces.
    ControlPlaneAddress {
        /// The address.
        address: IpAddr,
    },
    /// The address is a node's own address, or another host answered for
    /// it before kvip first took it.
    AddressInUse {
        /// The address.
        address: IpAddr,
        /// The node that has it, or the node that heard the other host.
        node: String,
        /// The MAC of the host that answered, when it is not a node's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// Another Service in the namespace already has this port on the address.
    PortConflict {
        /// The shared address.
        address: IpAddr,
        /// `TCP`, `UDP` or `SCTP`.
        protocol: String,
        /// The port both Services use.
        port: u16,
        /// The Service that keeps it.
        other: ServiceKey,
    },
    /// The address is inside the cluster's Service IP range (where ClusterIPs come from).
    ServiceNetwork {
        /// The address.
        address: IpAddr,
        /// The range, or the Service whose ClusterIP it is.
        range: String,
    },
    /// The Service has no address, and the pools (the `kubevip` ConfigMap)
    /// give it none.
    NoPoolAddress {
        /// Why, as a stable code (`PoolExhausted`, `NoPool`, ...).
        code: crate::ipam::PoolCode,
        /// The pool the Service's namespace takes from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// The reason in full.
        message: String,
    },
    /// `kvip_restrict_to_pools=true` and the address is in no pool the
    /// Service's namespace may use.
    AddressOutsidePools {
        /// The address.
        address: IpAddr,
        /// The pool the namespace may use, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    /// The address is the network or broadcast address of the interface's subnet.
    SubnetAddress {
        /// The address.
        address: IpAddr,
        /// The interface whose subnet it names.
        interface: String,
    },
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    items.join(", ")
}

impl PendingReason {
    /// A stable CamelCase code for metrics labels and JSON.
    pub fn reason(&self) -> &'static str {
        match self {
            PendingReason::NoAddress => "NoAddress",
            PendingReason::NoReadyEndpoints => "NoReadyEndpoints",
            PendingReason::EndpointsOnNodesWithoutKvip { .. } => "EndpointsOnNodesWithoutKvip",
            PendingReason::NoKvipInstances => "NoKvipInstances",
            PendingReason::AllCandidatesExcluded { .. } => "AllCandidatesExcluded",
            PendingReason::AddressConflict { .. } => "AddressConflict",
            PendingReason::NoCommonCandidate { .. } => "NoCommonCandidate",
            PendingReason::NoUsableInterface { .. } => "NoUsableInterface",
            PendingReason::ControlPlaneAddress { .. } => "ControlPlaneAddress",
            PendingReason::AddressOnNode { .. } => "AddressOnNode",
            PendingReason::AddressInUse { .. } => "AddressInUse",
            PendingReason::SubnetAddress { .. } => "SubnetAddress",
            PendingReason::PortConflict { .. } => "PortConflict",
            PendingReason::ServiceNetwork { .. } => "ServiceNetwork",
            PendingReason::NoPoolAddress { code, .. } => code.name(),
            PendingReason::AddressOutsidePools { .. } => "AddressOutsidePools",
        }
    }

    /// The reason in plain words, with what to do about it.
    pub fn message(&self) -> String {
        match self {
            PendingReason::NoAddress => format!(
                "no address: set the annotation {LOADBALANCER_IPS_ANNOTATION} or \
                 spec.loadBalancerIP, or run an IPAM"
            ),
            PendingReason::NoReadyEndpoints => {
                "no ready endpoints: no pod of this Service is ready, so there is nothing to \
                 send traffic to; check the pods and their readiness probes"
                    .to_string()
            }
            PendingReason::EndpointsOnNodesWithoutKvip { nodes } => format!(
                "the ready endpoints run only on nodes without a kvip load-balancer instance \
                 ({}); with externalTrafficPolicy Local only those nodes may announce: deploy \
                 the kvip --role lb DaemonSet to every node",
                list(nodes)
            ),
            PendingReason::NoKvipInstances => {
                "no node runs a kvip load-balancer instance: deploy the kvip --role lb \
                 DaemonSet to every node"
                    .to_string()
            }
            PendingReason::AllCandidatesExcluded { nodes } => format!(
                "every node that could announce ({}) has the label {EXCLUDE_LB_LABEL}, which \
                 kvip honours because kvip_exclude_lb_label=true: remove the label from one of \
                 them, run the pods elsewhere, or unset kvip_exclude_lb_label (kube-vip ignores \
                 the label)",
                list(nodes)
            ),
            PendingReason::AddressConflict { address, other } => format!(
                "address {address} is already claimed by Service {other} in another namespace, which \
                 had it first: \
                 choose another address"
            ),
            PendingReason::NoCommonCandidate {
                addresses,
                services,
            } => format!(
                "the Services sharing {} ({}) have no node that may announce for all of them: \
                 with externalTrafficPolicy Local their pods must share a node, or give them \
                 separate addresses",
                list(addresses),
                list(services)
            ),
            PendingReason::NoUsableInterface { nodes } => {
                let each: Vec<String> = nodes
                    .iter()
                    .map(|(node, problem)| format!("{node}: {problem}"))
                    .collect();
                format!(
                    "no node that could announce can put the address on an interface ({}); \
                     fix the interface, or set vip_servicesinterface (or vip_interface) to one \
                     every node has",
                    each.join("; ")
                )
            }
            PendingReason::AddressOnNode {
                address,
                node,
                interface,
            } => format!(
                "address {address} is already on {interface} of node {node}, and kvip did not \
                 put it there (another tool, or a leftover): that node answers for it, so kvip \
                 announces it nowhere; remove it there, or choose another address"
            ),
            PendingReason::ControlPlaneAddress { address } => format!(
                "address {address} is the control-plane VIP, which only kvip's control-plane \
                 role announces: choose another address"
            ),
            PendingReason::AddressInUse {
                address,
                node,
                mac: None,
            } => format!(
                "address {address} belongs to node {node}: announcing it would steal the \
                 node's traffic; choose a free address"
            ),
            PendingReason::AddressInUse {
                address,
                node,
                mac: Some(mac),
            } => format!(
                "address {address} is in use by another host (MAC {mac}, answered node {node}'s \
                 probe): announcing it would steal that host's traffic, so no node takes it; \
                 free the address there or choose another (kvip probes again every 30 s)"
            ),
            PendingReason::PortConflict {
                address,
                protocol,
                port,
                other,
            } => format!(
                "port {port}/{protocol} on address {address} is already served by Service \
                 {other}: Services share an address only with different ports; change the port \
                 or choose another address"
            ),
            PendingReason::NoPoolAddress { message, .. } => {
                format!("no address: the Service names none, and {message}")
            }
            PendingReason::AddressOutsidePools {
                address,
                pool: Some(pool),
            } => format!(
                "address {address} is outside pool {pool}, the only addresses this namespace may \
                 use (kvip_restrict_to_pools=true): choose an address from it, or remove the \
                 address and let the pool give one"
            ),
            PendingReason::AddressOutsidePools {
                address,
                pool: None,
            } => format!(
                "address {address} may not be used: kvip_restrict_to_pools=true and no pool of the \
                 kubevip ConfigMap is for this namespace: add cidr-<namespace> or range-<namespace> \
                 (or a -global one) holding it"
            ),
            PendingReason::ServiceNetwork { address, range } => format!(
                "address {address} is in the cluster's Service network ({range}): it would \
                 shadow a ClusterIP; choose an address outside it"
            ),
            PendingReason::SubnetAddress { address, interface } => format!(
                "address {address} is the network or broadcast address of {interface}'s \
                 subnet, which hosts cannot use: choose another address"
            ),
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// The nodes that may announce `view` (design §3), or the most specific reason none may.
pub fn candidates(
    view: &ServiceView,
    summary: &EndpointSummary,
    nodes: &[NodeInput],
) -> Result<BTreeSet<String>, PendingReason> {
    if view.addresses.is_empty() {
        return Err(PendingReason::NoAddress);
    }
    let by_name: BTreeMap<&str, &NodeInput> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    match view.policy {
        TrafficPolicy::Local => {
            let local = summary.local_nodes();
            if local.is_empty() {
                return Err(PendingReason::NoReadyEndpoints);
            }
            let mut found = BTreeSet::new();
            let mut without_kvip = Vec::new();
            for name in local {
                let node = by_name.get(name.as_str());
                let excluded = node.is_some_and(|n| n.excluded());
                let has_kvip = node.is_some_and(|n| n.runs_service_instance);
                match (has_kvip, excluded) {
                    (true, false) => {
                        found.insert(name.clone());
                    }
                    (false, false) => without_kvip.push(name.clone()),
                    (_, true) => {}
                }
            }
            if !found.is_empty() {
                Ok(found)
            } else if !without_kvip.is_empty() {
                // Deploying kvip there would help; the excluded nodes would not.
                Err(PendingReason::EndpointsOnNodesWithoutKvip {
                    nodes: without_kvip,
                })
            } else {
                Err(PendingReason::AllCandidatesExcluded {
                    nodes: local.iter().cloned().collect(),
                })
            }
        }
        TrafficPolicy::Cluster => {
            if !summary.any_ready && !summary.any_serving {
                return Err(PendingReason::NoReadyEndpoints);
            }
            let instances: Vec<&NodeInput> =
                nodes.iter().filter(|n| n.runs_service_instance).collect();
            let found: BTreeSet<String> = instances
                .iter()
                .filter(|n| !n.excluded())
                .map(|n| n.name.clone())
                .collect();
            if !found.is_empty() {
                Ok(found)
            } else if instances.is_empty() {
                Err(PendingReason::NoKvipInstances)
            } else {
                let mut excluded: Vec<String> = instances.iter().map(|n| n.name.clone()).collect();
                excluded.sort();
                excluded.dedup();
                Err(PendingReason::AllCandidatesExcluded { nodes: excluded })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(policy: TrafficPolicy) -> ServiceView {
        ServiceView {
            key: ServiceKey::new("default", "web"),
            addresses: vec!["10.0.0.10".parse().unwrap()],
            policy,
            lease_name: "kubevip-web".to_string(),
            ports: vec![],
            rank: Default::default(),
            served: vec![],
            addresses_from: Default::default(),
            interface: None,
        }
    }

    fn node(name: &str, kvip: bool, excluded: bool) -> NodeInput {
        NodeInput {
            name: name.to_string(),
            excluded,
            runs_service_instance: kvip,
        }
    }

    #[test]
    fn the_label_counts_only_when_honoured() {
        let labelled = BTreeMap::from([(EXCLUDE_LB_LABEL.to_string(), String::new())]);
        let other = BTreeMap::from([(
            "node-role.kubernetes.io/control-plane".to_string(),
            String::new(),
        )]);
        assert!(excluded_by_label(&labelled, true));
        assert!(
            !excluded_by_label(&labelled, false),
            "kube-vip ignores the label"
        );
        assert!(!excluded_by_label(&other, true));
        assert!(!excluded_by_label(&BTreeMap::new(), true));
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    fn summary(ready: &[&str], terminating: &[&str]) -> EndpointSummary {
        EndpointSummary {
            ready_nodes: set(ready),
            serving_terminating_nodes: set(terminating),
            any_ready: !ready.is_empty(),
            any_serving: !ready.is_empty() || !terminating.is_empty(),
        }
    }

    #[test]
    fn no_address_comes_first() {
        let mut v = view(TrafficPolicy::Local);
        v.addresses.clear();
        assert_eq!(
            candidates(&v, &EndpointSummary::default(), &[]),
            Err(PendingReason::NoAddress)
        );
        assert!(
            PendingReason::NoAddress
                .message()
                .contains("kube-vip.io/loadbalancerIPs")
        );
    }

    #[test]
    fn local_takes_ready_nodes_with_kvip() {
        let nodes = [
            node("a", true, false),
            node("b", true, false),
            node("c", false, false),
        ];
        let got = candidates(
            &view(TrafficPolicy::Local),
            &summary(&["a", "c"], &["b"]),
            &nodes,
        );
        assert_eq!(got, Ok(set(&["a"])));
    }

    #[test]
    fn local_falls_back_to_serving_terminating() {
        let nodes = [node("a", true, false), node("b", true, false)];
        let got = candidates(&view(TrafficPolicy::Local), &summary(&[], &["b"]), &nodes);
        assert_eq!(got, Ok(set(&["b"])));
        let got = candidates(&view(TrafficPolicy::Local), &summary(&[], &[]), &nodes);
        assert_eq!(got, Err(PendingReason::NoReadyEndpoints));
    }

    #[test]
    fn local_endpoints_only_where_kvip_does_not_run_names_the_nodes() {
        let nodes = [node("cp", true, false), node("w1", false, false)];
        let got = candidates(
            &view(TrafficPolicy::Local),
            &summary(&["w1", "w2"], &[]),
            &nodes,
        );
        let reason = got.unwrap_err();
        assert_eq!(
            reason,
            PendingReason::EndpointsOnNodesWithoutKvip {
                nodes: vec!["w1".to_string(), "w2".to_string()]
            }
        );
        assert_eq!(reason.reason(), "EndpointsOnNodesWithoutKvip");
        let text = reason.message();
        assert!(
            text.contains("w1, w2") && text.contains("--role lb DaemonSet"),
            "{text}"
        );
    }

    #[test]
    fn local_excluded_nodes() {
        let nodes = [node("a", true, true), node("b", false, true)];
        let got = candidates(
            &view(TrafficPolicy::Local),
            &summary(&["a", "b"], &[]),
            &nodes,
        );
        assert_eq!(
            got,
            Err(PendingReason::AllCandidatesExcluded {
                nodes: vec!["a".to_string(), "b".to_string()]
            })
        );
        // A node without kvip that is not excluded is the more useful thing to report.
        let nodes = [node("a", true, true), node("b", false, false)];
        let got = candidates(
            &view(TrafficPolicy::Local),
            &summary(&["a", "b"], &[]),
            &nodes,
        );
        assert_eq!(
            got,
            Err(PendingReason::EndpointsOnNodesWithoutKvip {
                nodes: vec!["b".to_string()]
            })
        );
    }

    #[test]
    fn cluster_takes_every_instance_once_anything_is_ready() {
        let nodes = [
            node("a", true, false),
            node("b", true, true),
            node("c", false, false),
        ];
        let v = view(TrafficPolicy::Cluster);
        assert_eq!(
            candidates(&v, &summary(&["c"], &[]), &nodes),
            Ok(set(&["a"]))
        );
        assert_eq!(
            candidates(&v, &summary(&[], &["c"]), &nodes),
            Ok(set(&["a"]))
        );
        assert_eq!(
            candidates(&v, &summary(&[], &[]), &nodes),
            Err(PendingReason::NoReadyEndpoints)
        );
        let nodeless = EndpointSummary {
            any_ready: true,
            any_serving: true,
            ..EndpointSummary::default()
        };
        assert_eq!(candidates(&v, &nodeless, &nodes), Ok(set(&["a"])));
    }

    #[test]
    fn cluster_without_instances() {
        let v = view(TrafficPolicy::Cluster);
        let s = summary(&["a"], &[]);
        assert_eq!(
            candidates(&v, &s, &[node("a", false, false)]),
            Err(PendingReason::NoKvipInstances)
        );
        assert_eq!(
            candidates(&v, &s, &[node("a", true, true)]),
            Err(PendingReason::AllCandidatesExcluded {
                nodes: vec!["a".to_string()]
            })
        );
    }

    #[test]
    fn reason_codes_are_distinct_camel_case() {
        let reasons = [
            PendingReason::NoAddress,
            PendingReason::NoReadyEndpoints,
            PendingReason::EndpointsOnNodesWithoutKvip { nodes: vec![] },
            PendingReason::NoKvipInstances,
            PendingReason::AllCandidatesExcluded { nodes: vec![] },
            PendingReason::AddressConflict {
                address: "10.0.0.1".parse().unwrap(),
                other: ServiceKey::new("a", "b"),
            },
            PendingReason::NoCommonCandidate {
                addresses: vec![],
                services: vec![],
            },
            PendingReason::NoUsableInterface {
                nodes: BTreeMap::from([("w1".into(), "interface bond0 does not exist".into())]),
            },
            PendingReason::ControlPlaneAddress {
                address: "10.0.0.1".parse().unwrap(),
            },
            PendingReason::AddressOnNode {
                address: "10.0.0.1".parse().unwrap(),
                node: "w1".into(),
                interface: "eth0".into(),
            },
        ];
        let codes: BTreeSet<&str> = reasons.iter().map(PendingReason::reason).collect();
        assert_eq!(codes.len(), reasons.len());
        for r in &reasons {
            assert!(r.reason().chars().all(|c| c.is_ascii_alphabetic()));
            assert!(!r.message().is_empty());
        }
    }

    proptest! {
        #[test]
        fn candidates_are_live_unexcluded_instances_where_traffic_may_land(
            local in any::<bool>(),
            ready in proptest::collection::btree_set(0..5u8, 0..4),
            terminating in proptest::collection::btree_set(0..5u8, 0..4),
            kvip in proptest::collection::vec(any::<bool>(), 5),
            excluded in proptest::collection::vec(any::<bool>(), 5),
        ) {
            let name = |n: &u8| format!("n{n}");
            let summary = EndpointSummary {
                ready_nodes: ready.iter().map(name).collect(),
                serving_terminating_nodes: terminating.iter().map(name).collect(),
                any_ready: !ready.is_empty(),
                any_serving: !ready.is_empty() || !terminating.is_empty(),
            };
            let nodes: Vec<NodeInput> = (0..5u8)
                .map(|i| node(&name(&i), kvip[usize::from(i)], excluded[usize::from(i)]))
                .collect();
            let policy = if local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
            match candidates(&view(policy), &summary, &nodes) {
                Ok(found) => {
                    prop_assert!(!found.is_empty());
                    for n in &found {
                        let node = nodes.iter().find(|x| &x.name == n).unwrap();
                        prop_assert!(node.runs_service_instance && !node.excluded());
                        if local {
                            prop_assert!(summary.local_nodes().contains(n));
                        }
                    }
                }
                Err(reason) => {
                    let possible = nodes.iter().any(|n| {
                        n.runs_service_instance
                            && !n.excluded()
                            && (!local || summary.local_nodes().contains(&n.name))
                    });
                    prop_assert!(!possible || !summary.any_serving, "{reason:?} although a candidate exists");
                }
            }
        }
    }
}
