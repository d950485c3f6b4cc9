//! EndpointSlices, as plain values, indexed per Service and summarised into
//! which nodes host ready or serving-but-terminating endpoints. The summary
//! spans every slice of a Service and both address families.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::service::ServiceKey;

/// One endpoint of a slice, with its conditions as the API sent them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointInput {
    /// `nodeName`; absent for endpoints outside the cluster's nodes.
    pub node_name: Option<String>,
    /// `conditions.ready`; absent means true.
    pub ready: Option<bool>,
    /// `conditions.serving`; absent means the same as ready.
    pub serving: Option<bool>,
    /// `conditions.terminating`; absent means false.
    pub terminating: Option<bool>,
    /// `addresses`.
    pub addresses: Vec<String>,
}

/// One EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceInput {
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: ServiceKey,
    /// `metadata.name`, unique within the namespace.
    pub slice_name: String,
    /// `addressType`: IPv4, IPv6 or FQDN; FQDN slices are ignored as kube-proxy does.
    pub address_type: String,
    /// `endpoints`.
    pub endpoints: Vec<EndpointInput>,
}

/// Where a Service's endpoints are, aggregated over all its slices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EndpointSummary {
    /// Nodes hosting at least one ready endpoint.
    pub ready_nodes: BTreeSet<String>,
    /// Nodes hosting at least one endpoint that is serving while terminating.
    pub serving_terminating_nodes: BTreeSet<String>,
    /// Some endpoint is ready, on a node or not.
    pub any_ready: bool,
    /// Some endpoint is serving, on a node or not.
    pub any_serving: bool,
}

impl EndpointSummary {
    /// Nodes that may announce a `Local` Service: those with ready endpoints,
    /// or, when none has one, those still serving while terminating (so a
    /// rolling update does not black-hole the VIP).
    pub fn local_nodes(&self) -> &BTreeSet<String> {
        if self.ready_nodes.is_empty() {
            &self.serving_terminating_nodes
        } else {
            &self.ready_nodes
        }
    }

    fn add(&mut self, endpoint: &EndpointInput) {
        let ready = endpoint.ready.unwrap_or(true);
        let serving = endpoint.serving.unwrap_or(ready);
        let terminating = endpoint.terminating.unwrap_or(false);
        self.any_ready |= ready;
        self.any_serving |= serving;
        let Some(node) = endpoint.node_name.as_ref().filter(|n| !n.is_empty()) else {
            return;
        };
        if ready {
            self.ready_nodes.insert(node.clone());
        }
        if serving && terminating {
            self.serving_terminating_nodes.insert(node.clone());
        }
    }
}

/// The EndpointSlices the daemon has seen, per Service.
#[derive(Debug, Clone, Default)]
pub struct EndpointIndex {
    /// Slices per Service, by slice name.
    by_service: BTreeMap<ServiceKey, BTreeMap<String, SliceInput>>,
    /// Which Service each (namespace, slice name) was last filed under.
    owner: BTreeMap<(String, String), ServiceKey>,
}

impl EndpointIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new or changed slice; a slice that moved to another Service leaves the old one.
    pub fn apply(&mut self, slice: SliceInput) {
        let id = (slice.service.namespace.clone(), slice.slice_name.clone());
        if let Some(previous) = self.owner.get(&id)
            && *previous != slice.service
        {
            let previous = previous.clone();
            self.delete(&previous, &slice.slice_name);
        }
        self.owner.insert(id, slice.service.clone());
        self.by_service
            .entry(slice.service.clone())
            .or_default()
            .insert(slice.slice_name.clone(), slice);
    }

    /// Forgets a deleted slice.
    pub fn delete(&mut self, service: &ServiceKey, slice_name: &str) {
        if let Some(slices) = self.by_service.get_mut(service) {
            slices.remove(slice_name);
            if slices.is_empty() {
                self.by_service.remove(service);
            }
        }
        let id = (service.namespace.clone(), slice_name.to_string());
        if self.owner.get(&id) == Some(service) {
            self.owner.remove(&id);
        }
    }

    /// Replaces everything with a fresh listing (after a watch restart).
    pub fn reset(&mut self, slices: impl IntoIterator<Item = SliceInput>) {
        *self = Self::default();
        for slice in slices {
            self.apply(slice);
        }
    }

    /// The Services that have at least one slice.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.by_service.keys()
    }

    /// Where `service`'s endpoints are; empty when it has no slices.
    pub fn summary(&self, service: &ServiceKey) -> EndpointSummary {
        let mut summary = EndpointSummary::default();
        let slices = self
            .by_service
            .get(service)
            .into_iter()
            .flat_map(|s| s.values());
        for slice in slices.filter(|s| s.address_type != "FQDN") {
            for endpoint in &slice.endpoints {
                summary.add(endpoint);
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    fn ep(
        node: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        term: Option<bool>,
    ) -> EndpointInput {
        EndpointInput {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ready,
            serving,
            terminating: term,
            addresses: vec!["10.1.0.1".to_string()],
        }
    }

    fn slice(service: &str, name: &str, family: &str, endpoints: Vec<EndpointInput>) -> SliceInput {
        SliceInput {
            service: svc(service),
            slice_name: name.to_string(),
            address_type: family.to_string(),
            endpoints,
        }
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn absent_conditions_follow_kubernetes_defaults() {
        let mut index = EndpointIndex::new();
        index.apply(slice(
            "web",
            "web-1",
            "IPv4",
            vec![ep("a", None, None, None)],
        ));
        let s = index.summary(&svc("web"));
        assert_eq!(s.ready_nodes, set(&["a"]));
        assert!(s.serving_terminating_nodes.is_empty());
        assert!(s.any_ready && s.any_serving);

        // Not ready and serving absent: serving follows ready, so not serving.
        index.apply(slice(
            "web",
            "web-1",
            "IPv4",
            vec![ep("a", Some(false), None, Some(true))],
        ));
        let s = index.summary(&svc("web"));
        assert_eq!(s, EndpointSummary::default());
    }

    #[test]
    fn aggregates_all_slices_and_both_families() {
        let mut index = EndpointIndex::new();
        index.apply(slice(
            "web",
            "web-v4",
            "IPv4",
            vec![ep("a", Some(true), None, None)],
        ));
        index.apply(slice(
            "web",
            "web-v6",
            "IPv6",
            vec![
                ep("b", Some(true), None, None),
                ep("c", Some(false), Some(true), Some(true)),
            ],
        ));
        index.apply(slice(
            "web",
            "web-fqdn",
            "FQDN",
            vec![ep("z", None, None, None)],
        ));
        index.apply(slice(
            "other",
            "other-1",
            "IPv4",
            vec![ep("d", None, None, None)],
        ));
        let s = index.summary(&svc("web"));
        assert_eq!(s.ready_nodes, set(&["a", "b"]));
        assert_eq!(s.serving_terminating_nodes, set(&["c"]));
        assert_eq!(s.local_nodes(), &set(&["a", "b"]));
    }

    #[test]
    fn terminating_nodes_count_only_when_none_is_ready() {
        let mut index = EndpointIndex::new();
        index.apply(slice(
            "web",
            "web-1",
            "IPv4",
            vec![
                ep("old", Some(false), Some(true), Some(true)),
                ep("new", Some(false), Some(false), None),
            ],
        ));
        let s = index.summary(&svc("web"));
        assert!(!s.any_ready && s.any_serving);
        assert_eq!(s.local_nodes(), &set(&["old"]));
    }

    #[test]
    fn endpoints_without_a_node_count_only_towards_any_ready() {
        let mut index = EndpointIndex::new();
        index.apply(slice(
            "web",
            "web-1",
            "IPv4",
            vec![ep("", None, None, None)],
        ));
        let s = index.summary(&svc("web"));
        assert!(s.any_ready);
        assert!(s.ready_nodes.is_empty());
    }

    #[test]
    fn delete_and_move_between_services() {
        let mut index = EndpointIndex::new();
        index.apply(slice("web", "s1", "IPv4", vec![ep("a", None, None, None)]));
        index.apply(slice("web", "s2", "IPv4", vec![ep("b", None, None, None)]));
        index.delete(&svc("web"), "s1");
        assert_eq!(index.summary(&svc("web")).ready_nodes, set(&["b"]));

        // s2 relabelled to another Service: web must forget it.
        index.apply(slice("api", "s2", "IPv4", vec![ep("b", None, None, None)]));
        assert_eq!(index.summary(&svc("web")), EndpointSummary::default());
        assert_eq!(index.summary(&svc("api")).ready_nodes, set(&["b"]));
        assert_eq!(index.services().collect::<Vec<_>>(), vec![&svc("api")]);

        index.reset(vec![slice(
            "web",
            "s9",
            "IPv4",
            vec![ep("c", None, None, None)],
        )]);
        assert_eq!(index.summary(&svc("api")), EndpointSummary::default());
        assert_eq!(index.summary(&svc("web")).ready_nodes, set(&["c"]));
    }
}
