//! The whole picture in one pure call: from Services, EndpointSlices and
//! Nodes (plain values) to the Services kvip serves, their announcement
//! groups, and why each of the others is pending or refused. The daemon and
//! `kvip status` both call this, so they can never disagree.

use crate::candidacy::{NodeInput, PendingReason, candidates};
use crate::election::{LeaseRecord, WallTime};
use crate::endpoints::{EndpointIndex, SliceInput};
use crate::service::{
    LbClassRule, ServiceError, ServiceInput, ServiceInterface, ServiceKey, ServiceView,
};
use crate::sharing::{AnnouncementGroup, CandidateMap, LeaseKey, plan_groups};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Everything decided about the cluster's LoadBalancer Services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// Services kvip serves (valid input, its class).
    pub views: Vec<ServiceView>,
    /// Who may announce each served Service, or why nobody may.
    pub candidates: CandidateMap,
    /// One election per group of Services sharing addresses.
    pub groups: Vec<AnnouncementGroup>,
    /// Served Services nobody can announce, with the reason.
    pub pending: BTreeMap<ServiceKey, PendingReason>,
    /// Services of kvip's class whose input is invalid, with the problem.
    pub refused: BTreeMap<ServiceKey, ServiceError>,
}

impl Assessment {
    /// The view of `key`, if kvip serves it.
    pub fn view(&self, key: &ServiceKey) -> Option<&ServiceView> {
        self.views.iter().find(|v| &v.key == key)
    }

    /// The group `key` is announced in, if any.
    pub fn group_of(&self, key: &ServiceKey) -> Option<&AnnouncementGroup> {
        self.groups.iter().find(|g| g.services.contains(key))
    }

    /// Takes groups whose address is a Node's own address (`node_addresses`:
    /// address to node name) out of the election, pending `AddressInUse`.
    pub fn refuse_node_addresses(&mut self, node_addresses: &BTreeMap<IpAddr, String>) {
        self.refuse(|a| {
            let node = node_addresses.get(&a)?;
            Some(PendingReason::AddressInUse {
                address: a,
                node: node.clone(),
                mac: None,
            })
        });
    }

    /// Takes groups whose address is in the cluster's Service network out of
    /// the election, pending `ServiceNetwork`: inside one of `ranges` (the
    /// ServiceCIDRs, as CIDR text), or the ClusterIP of one of `services`.
    pub fn refuse_service_network(&mut self, ranges: &[String], services: &[ServiceInput]) {
        let cluster_ips: BTreeMap<IpAddr, &ServiceKey> = services
            .iter()
            .flat_map(|s| {
                s.cluster_ips
                    .iter()
                    .filter_map(|ip| ip.parse().ok())
                    .map(move |ip| (ip, &s.key))
            })
            .collect();
        self.refuse(|a| {
            // The most specific first: a ClusterIP names its Service.
            let range = match cluster_ips.get(&a) {
                Some(service) => format!("the ClusterIP of Service {service}"),
                None => format!("ServiceCIDR {}", crate::plan::range_holding(ranges, a)?),
            };
            Some(PendingReason::ServiceNetwork { address: a, range })
        });
    }

    /// Takes nodes that cannot place an address of a group out of its
    /// candidates (`problems`: node, then address, then why). A group left
    /// with no candidate goes out of the election, its Services pending
    /// `NoUsableInterface` naming each node and its problem. A group whose
    /// address is already on some node without kvip's mark goes out
    /// whoever could place it, pending `AddressOnNode`.
    pub fn exclude_unplaceable(&mut self, problems: &BTreeMap<String, BTreeMap<IpAddr, String>>) {
        if problems.values().all(BTreeMap::is_empty) {
            return;
        }
        // Someone else's copy of an address on any node, or another host
        // answering for it: announcing it from a node would make two hosts
        // answer.
        self.refuse(|a| {
            problems.iter().find_map(|(node, p)| {
                let problem = crate::placement::problem_for(p, a)?;
                if let Some(mac) = crate::placement::answering_mac(problem) {
                    return Some(PendingReason::AddressInUse {
                        address: a,
                        node: node.clone(),
                        mac: Some(mac.to_string()),
                    });
                }
                let interface = crate::placement::foreign_interface(problem)?;
                Some(PendingReason::AddressOnNode {
                    address: a,
                    node: node.clone(),
                    interface: interface.to_string(),
                })
            })
        });
        let mut refused: Vec<(BTreeSet<ServiceKey>, PendingReason)> = Vec::new();
        self.groups.retain_mut(|g| {
            let mut nodes = BTreeMap::new();
            g.candidates.retain(|node| {
                let problem = problems.get(node).and_then(|p| {
                    g.addresses
                        .iter()
                        .find_map(|a| crate::placement::problem_for(p, *a))
                });
                match problem {
                    Some(problem) => {
                        nodes.insert(node.clone(), problem.clone());
                        false
                    }
                    None => true,
                }
            });
            if g.candidates.is_empty() {
                refused.push((
                    g.services.clone(),
                    PendingReason::NoUsableInterface { nodes },
                ));
                false
            } else {
                true
            }
        });
        for (services, reason) in refused {
            for s in services {
                self.pending.insert(s, reason.clone());
            }
        }
    }

    /// Takes the Services that list an address `unusable` objects to out of
    /// their groups, pending with that reason. The rest of a group stays as
    /// it is, with its Lease: a newcomer that adds a bad address to a shared
    /// one never takes the shared address down. A group left without
    /// Services goes out of the election.
    pub fn refuse(&mut self, unusable: impl Fn(IpAddr) -> Option<PendingReason>) {
        let addresses: BTreeMap<&ServiceKey, &Vec<IpAddr>> =
            self.views.iter().map(|v| (&v.key, &v.addresses)).collect();
        let mut refused: Vec<(ServiceKey, PendingReason)> = Vec::new();
        for g in &mut self.groups {
            if !g.addresses.iter().any(|a| unusable(*a).is_some()) {
                continue;
            }
            let mut keep = BTreeSet::new();
            for key in &g.services {
                let own = addresses.get(key).map(|a| a.as_slice()).unwrap_or_default();
                match own.iter().find_map(|a| unusable(*a)) {
                    Some(reason) => refused.push((key.clone(), reason)),
                    None => {
                        keep.insert(key.clone());
                    }
                }
            }
            g.addresses = keep
                .iter()
                .filter_map(|k| addresses.get(k))
                .flat_map(|a| a.iter().copied())
                .collect();
            g.services = keep;
        }
        self.groups.retain(|g| !g.services.is_empty());
        for (service, reason) in refused {
            self.pending.insert(service, reason);
        }
    }

    /// The pools' word on Services without an address: each the pools
    /// refuse is pending with that reason instead of `NoAddress`.
    pub fn no_pool_address(&mut self, refused: &BTreeMap<ServiceKey, crate::ipam::IpamError>) {
        for (key, error) in refused {
            if let Some(reason @ PendingReason::NoAddress) = self.pending.get_mut(key) {
                *reason = PendingReason::NoPoolAddress {
                    code: error.code(),
                    pool: error.pool().map(str::to_string),
                    message: error.to_string(),
                };
            }
        }
    }

    /// Elects a group of several Services through the Lease that elects it
    /// now: its members' announcer (`announcer`: the node a served member's
    /// `kube-vip.io/vipHost` names) holds one of their Leases (`lease`: the
    /// record of a Lease), so the group keeps it, whatever joins. By rule a
    /// group is elected through its oldest member's Lease, which changes
    /// when an older Service joins, and the address must not change hands
    /// for that. Of several member Leases the announcer holds, the one it
    /// has held longest (`acquireTime`): every node sees the same, and it
    /// does not change while the announcer keeps them.
    pub fn keep_held_leases(
        &mut self,
        lease: impl Fn(&LeaseKey) -> Option<LeaseRecord>,
        announcer: impl Fn(&ServiceKey) -> Option<String>,
    ) {
        let views: BTreeMap<&ServiceKey, &ServiceView> =
            self.views.iter().map(|v| (&v.key, v)).collect();
        for g in &mut self.groups {
            if g.services.len() < 2 {
                continue;
            }
            let mut members: Vec<&ServiceView> = g
                .services
                .iter()
                .filter_map(|k| views.get(k).copied())
                .collect();
            let served = |v: &ServiceView| v.served.iter().any(|a| g.addresses.contains(a));
            let announcers: BTreeSet<String> = members
                .iter()
                .filter(|v| served(v))
                .filter_map(|v| announcer(&v.key))
                .collect();
            let announcers: Vec<String> = announcers.into_iter().collect();
            members
                .sort_by(|a, b| (!served(a), &a.rank, &a.key).cmp(&(!served(b), &b.rank, &b.key)));
            let leases: Vec<(LeaseKey, Option<String>, Option<WallTime>)> = members
                .iter()
                .map(|v| {
                    let key = v.lease_key();
                    let record = lease(&key);
                    let held = record.as_ref().and_then(|r| r.holder().map(str::to_string));
                    let since = record.and_then(|r| r.acquire_time);
                    (key, held, since)
                })
                .collect();
            let current = match announcers.as_slice() {
                // The announcer's, when the status says who announces: the
                // one it has held longest.
                [node] => leases
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, h, _))| h.as_deref() == Some(node.as_str()))
                    .min_by_key(|(i, (_, _, since))| (since.is_none(), *since, *i))
                    .map(|(_, (k, _, _))| k.clone()),
                // Before any status is written: the one member Lease that
                // is held. (A status naming only nodes that run no kvip now
                // says nothing: the rule stands.)
                [] if !members.iter().any(|v| served(v)) => {
                    let mut held = leases.iter().filter(|(_, h, _)| h.is_some());
                    match (held.next(), held.next()) {
                        (Some((key, _, _)), None) => Some(key.clone()),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(key) = current {
                g.lease = key;
            }
        }
    }
}

/// Services that share an address must ask for the same interface
/// (`kube-vip.io/serviceInterface`, or none): of those that differ, the one
/// with the first claim on the address (it has it, else the oldest) keeps
/// it, and the others are refused naming it.
fn refuse_interface_conflicts(
    views: Vec<ServiceView>,
    refused: &mut BTreeMap<ServiceKey, ServiceError>,
) -> Vec<ServiceView> {
    let mut first: BTreeMap<IpAddr, &ServiceView> = BTreeMap::new();
    for view in &views {
        for address in &view.addresses {
            let entry = first.entry(*address).or_insert(view);
            if view.claim_on(*address) < entry.claim_on(*address) {
                *entry = view;
            }
        }
    }
    let mut conflicts = BTreeMap::new();
    for view in &views {
        let clash = view.addresses.iter().find_map(|address| {
            let holder = first.get(address)?;
            (holder.key != view.key && holder.interface != view.interface)
                .then_some((*address, *holder))
        });
        if let Some((address, holder)) = clash {
            let other_interface = holder
                .interface
                .as_ref()
                .map_or("the configured interface".to_string(), |i| i.to_string());
            conflicts.insert(
                view.key.clone(),
                ServiceError::InterfaceConflict {
                    address,
                    other: holder.key.clone(),
                    other_interface,
                },
            );
        }
    }
    let kept = views
        .into_iter()
        .filter(|v| !conflicts.contains_key(&v.key))
        .collect();
    refused.extend(conflicts);
    kept
}

impl Assessment {
    /// The interface each address must go on, where its Services ask for
    /// one (`kube-vip.io/serviceInterface`); others go where configured.
    pub fn interfaces(&self) -> BTreeMap<IpAddr, ServiceInterface> {
        self.views
            .iter()
            .filter_map(|v| Some((v, v.interface.clone()?)))
            .flat_map(|(v, i)| v.addresses.iter().map(move |a| (*a, i.clone())))
            .collect()
    }
}

/// Assesses `services` given their `slices` and the `nodes`.
pub fn assess(
    services: &[ServiceInput],
    slices: impl IntoIterator<Item = SliceInput>,
    nodes: &[NodeInput],
    class: &LbClassRule,
) -> Assessment {
    let mut out = Assessment::default();
    for input in services {
        match ServiceView::from_input(input, class) {
            Ok(Some(view)) => out.views.push(view),
            Ok(None) => {}
            Err(e) => {
                out.refused.insert(input.key.clone(), e);
            }
        }
    }
    out.views = refuse_interface_conflicts(std::mem::take(&mut out.views), &mut out.refused);
    let mut index = EndpointIndex::new();
    index.reset(slices);
    out.candidates = out
        .views
        .iter()
        .map(|v| (v.key.clone(), candidates(v, &index.summary(&v.key), nodes)))
        .collect();
    let (groups, pending) = plan_groups(&out.views, &out.candidates);
    out.groups = groups;
    out.pending = pending;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::EndpointInput;

    fn svc(name: &str, policy: &str, ip: &str) -> ServiceInput {
        ServiceInput {
            key: ServiceKey::new("default", name),
            type_: "LoadBalancer".into(),
            load_balancer_class: None,
            load_balancer_ip: None,
            annotations: [("kube-vip.io/loadbalancerIPs".to_string(), ip.to_string())].into(),
            external_traffic_policy: Some(policy.into()),
            ip_families: vec![],
            ports: vec![("TCP".into(), 80)],
            ..ServiceInput::default()
        }
    }

    fn slice(service: &str, node: &str) -> SliceInput {
        SliceInput {
            service: ServiceKey::new("default", service),
            slice_name: format!("{service}-1"),
            address_type: "IPv4".into(),
            endpoints: vec![EndpointInput {
                node_name: Some(node.into()),
                ready: Some(true),
                serving: None,
                terminating: None,
                addresses: vec!["10.0.0.1".into()],
            }],
        }
    }

    fn node(name: &str, kvip: bool) -> NodeInput {
        NodeInput {
            name: name.into(),
            excluded: false,
            runs_service_instance: kvip,
        }
    }

    #[test]
    fn services_sharing_an_address_must_share_its_interface() {
        let interface = crate::service::SERVICE_INTERFACE_ANNOTATION;
        let mut web = svc("web", "Cluster", "10.1.0.1");
        web.created = 1;
        web.annotations.insert(interface.into(), "eth1".into());
        let mut api = svc("api", "Cluster", "10.1.0.1");
        api.created = 2;
        api.annotations.insert(interface.into(), "eth2".into());
        let mut other = svc("other", "Cluster", "10.1.0.2");
        other.annotations.insert(interface.into(), "auto".into());
        let plain = svc("plain", "Cluster", "10.1.0.3");
        let nodes = [node("n1", true)];
        let slices = ["web", "api", "other", "plain"].map(|s| slice(s, "n1"));
        let a = assess(
            &[api.clone(), web.clone(), other, plain],
            slices.clone(),
            &nodes,
            &LbClassRule::default(),
        );
        let refused = &a.refused[&ServiceKey::new("default", "api")];
        let text = refused.to_string();
        assert!(
            text.contains("default/web") && text.contains("eth1"),
            "{text}"
        );
        assert!(text.contains(interface), "{text}");
        assert!(
            a.view(&ServiceKey::new("default", "web")).is_some(),
            "the older keeps it"
        );
        let by_address = a.interfaces();
        assert_eq!(by_address.len(), 2);
        assert_eq!(
            by_address[&"10.1.0.1".parse().unwrap()],
            ServiceInterface::Named("eth1".into())
        );
        assert_eq!(
            by_address[&"10.1.0.2".parse().unwrap()],
            ServiceInterface::Auto
        );
        // One asking for an interface, one not: refused too.
        api.annotations.remove(interface);
        let a = assess(&[web, api], slices, &nodes, &LbClassRule::default());
        let text = a.refused[&ServiceKey::new("default", "api")].to_string();
        assert!(text.contains("eth1"), "{text}");
        let mut same = svc("same", "Cluster", "10.1.0.1");
        same.annotations.insert(interface.into(), "eth1".into());
        let mut again = svc("again", "Cluster", "10.1.0.1");
        again.annotations.insert(interface.into(), "eth1".into());
        let a = assess(
            &[same, again],
            [slice("same", "n1")],
            &nodes,
            &LbClassRule::default(),
        );
        assert!(
            a.refused.is_empty(),
            "the same interface shares: {:?}",
            a.refused
        );
    }

    #[test]
    fn the_seeds_broken_layout_is_pending_with_the_worker_named() {
        let nodes = [node("cp1", true), node("worker1", false)];
        let a = assess(
            &[svc("web", "Local", "10.1.0.1")],
            [slice("web", "worker1")],
            &nodes,
            &LbClassRule::default(),
        );
        let reason = a
            .pending
            .get(&ServiceKey::new("default", "web"))
            .expect("pending");
        assert!(
            matches!(reason, PendingReason::EndpointsOnNodesWithoutKvip { nodes } if nodes == &["worker1"])
        );
        assert!(a.groups.is_empty());
    }

    #[test]
    fn refused_addresses_take_the_group_out_with_the_reason() {
        let nodes = [node("worker1", true)];
        let mut a = assess(
            &[svc("good", "Cluster", "10.1.0.2")],
            [slice("good", "worker1")],
            &nodes,
            &LbClassRule::default(),
        );
        let stolen: IpAddr = "10.1.0.2".parse().unwrap();
        a.refuse(|ip| {
            (ip == stolen).then(|| PendingReason::AddressInUse {
                mac: None,
                address: ip,
                node: "worker1".into(),
            })
        });
        assert!(a.groups.is_empty());
        assert!(matches!(
            a.pending.get(&ServiceKey::new("default", "good")),
            Some(PendingReason::AddressInUse { .. })
        ));
    }

    #[test]
    fn an_address_in_the_service_network_is_refused() {
        let nodes = [node("worker1", true)];
        let mut other = svc("api", "Cluster", "");
        other.type_ = "ClusterIP".into();
        other.cluster_ips = vec!["10.1.0.3".into()];
        let inputs = [
            svc("in-range", "Cluster", "10.96.0.10"),
            svc("cluster-ip", "Cluster", "10.1.0.3"),
            svc("fine", "Cluster", "10.1.0.4"),
            other,
        ];
        let slices = ["in-range", "cluster-ip", "fine"].map(|s| slice(s, "worker1"));
        let mut a = assess(&inputs, slices, &nodes, &LbClassRule::default());
        a.refuse_service_network(&["10.96.0.0/12".to_string()], &inputs);
        let reason = |name: &str| a.pending.get(&ServiceKey::new("default", name)).cloned();
        assert_eq!(
            reason("in-range"),
            Some(PendingReason::ServiceNetwork {
                address: "10.96.0.10".parse().unwrap(),
                range: "ServiceCIDR 10.96.0.0/12".into()
            })
        );
        assert!(
            matches!(reason("cluster-ip"), Some(PendingReason::ServiceNetwork { range, .. }) if range == "the ClusterIP of Service default/api")
        );
        assert_eq!(reason("fine"), None);
        assert_eq!(a.groups.len(), 1);
        // A ClusterIP inside a ServiceCIDR names its Service, the more useful.
        let mut inputs = inputs.to_vec();
        inputs[3].cluster_ips.push("10.96.0.10".into());
        let slices = ["in-range"].map(|s| slice(s, "worker1"));
        let mut a = assess(&inputs, slices, &nodes, &LbClassRule::default());
        a.refuse_service_network(&["10.96.0.0/12".to_string()], &inputs);
        assert!(matches!(
            a.pending.get(&ServiceKey::new("default", "in-range")),
            Some(PendingReason::ServiceNetwork { range, .. }) if range == "the ClusterIP of Service default/api"
        ));
    }

    #[test]
    fn a_newcomer_with_a_bad_second_address_leaves_the_shared_address_alone() {
        let nodes = [node("worker1", true)];
        let mut newcomer = svc("new", "Cluster", "10.1.0.2,10.1.0.9");
        newcomer.ports = vec![("TCP".into(), 81)];
        newcomer.created = 200;
        let mut web = svc("web", "Cluster", "10.1.0.2");
        web.created = 100;
        let mut a = assess(
            &[web, newcomer],
            [slice("web", "worker1"), slice("new", "worker1")],
            &nodes,
            &LbClassRule::default(),
        );
        assert_eq!(a.groups.len(), 1);
        let lease = a.groups[0].lease.clone();
        let bad: IpAddr = "10.1.0.9".parse().unwrap();
        a.refuse(|ip| {
            (ip == bad).then(|| PendingReason::AddressInUse {
                mac: Some("02:00:00:00:00:09".into()),
                address: ip,
                node: "worker1".into(),
            })
        });
        assert_eq!(
            a.groups.len(),
            1,
            "the shared address stays in the election"
        );
        let g = &a.groups[0];
        assert_eq!(
            g.services,
            BTreeSet::from([ServiceKey::new("default", "web")])
        );
        assert_eq!(g.addresses, BTreeSet::from(["10.1.0.2".parse().unwrap()]));
        assert_eq!(g.lease, lease);
        assert!(matches!(
            a.pending.get(&ServiceKey::new("default", "new")),
            Some(PendingReason::AddressInUse { .. })
        ));
    }

    #[test]
    fn a_shared_group_keeps_the_lease_that_is_held() {
        let nodes = [node("worker1", true)];
        let mut alpha = svc("alpha", "Cluster", "10.1.0.2");
        alpha.created = 200;
        alpha.ports = vec![("TCP".into(), 81)];
        let mut older = svc("older", "Cluster", "10.1.0.2");
        older.created = 100;
        let inputs = [alpha, older];
        let slices = [slice("alpha", "worker1"), slice("older", "worker1")];
        let mut inputs = inputs;
        inputs[0].ingress_ips = vec!["10.1.0.2".into()];
        let mut a = assess(&inputs, slices.clone(), &nodes, &LbClassRule::default());
        assert_eq!(
            a.groups[0].lease.name, "kubevip-older",
            "the oldest member's by rule"
        );
        // alpha is served by worker1, which holds its Lease; older's Lease is
        // still held elsewhere (it elected another address until now).
        let held = |holder: &str, since: i64| LeaseRecord {
            holder: Some(holder.to_string()),
            acquire_time: Some(WallTime(since)),
            ..LeaseRecord::default()
        };
        let holder = |k: &LeaseKey| match k.name.as_str() {
            "kubevip-alpha" => Some(held("worker1", 20)),
            _ => Some(held("worker2", 10)),
        };
        let announcer = |_: &ServiceKey| Some("worker1".to_string());
        a.keep_held_leases(holder, announcer);
        assert_eq!(
            a.groups[0].lease.name, "kubevip-alpha",
            "the Lease that elects it now"
        );
        // Nobody announces it, and both Leases are held: the rule stands.
        let mut b = assess(&inputs, slices.clone(), &nodes, &LbClassRule::default());
        b.keep_held_leases(holder, |_| None);
        assert_eq!(b.groups[0].lease.name, "kubevip-older");
        // Before any status: the one member Lease that is held.
        let mut fresh = inputs.clone();
        fresh[0].ingress_ips.clear();
        let mut c = assess(&fresh, slices, &nodes, &LbClassRule::default());
        c.keep_held_leases(
            |k| (k.name == "kubevip-alpha").then(|| held("worker1", 20)),
            |_| None,
        );
        assert_eq!(c.groups[0].lease.name, "kubevip-alpha");
        // Served, but the status names no node that runs kvip now (it died,
        // or kube-vip announced): one held Lease decides nothing.
        let mut e = assess(&inputs, slices_both(), &nodes, &LbClassRule::default());
        e.keep_held_leases(
            |k| (k.name == "kubevip-alpha").then(|| held("worker1", 20)),
            |_| None,
        );
        assert_eq!(e.groups[0].lease.name, "kubevip-older");
        // The announcer holds both: the one it has held longest, whichever
        // member is older or served.
        for (alpha_since, older_since, elects) in
            [(20, 10, "kubevip-older"), (10, 20, "kubevip-alpha")]
        {
            let mut d = assess(&inputs, slices_both(), &nodes, &LbClassRule::default());
            d.keep_held_leases(
                |k| match k.name.as_str() {
                    "kubevip-alpha" => Some(held("worker1", alpha_since)),
                    _ => Some(held("worker1", older_since)),
                },
                |_| Some("worker1".to_string()),
            );
            assert_eq!(d.groups[0].lease.name, elects);
        }
    }

    fn slices_both() -> [SliceInput; 2] {
        [slice("alpha", "worker1"), slice("older", "worker1")]
    }

    #[test]
    fn nodes_that_cannot_place_an_address_are_no_candidates() {
        let nodes = [node("worker1", true), node("worker2", true)];
        let mut a = assess(
            &[
                svc("one", "Cluster", "10.1.0.1"),
                svc("two", "Cluster", "10.1.0.2"),
            ],
            [slice("one", "worker1"), slice("two", "worker1")],
            &nodes,
            &LbClassRule::default(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let problems = BTreeMap::from([
            (
                "worker1".to_string(),
                BTreeMap::from([
                    (ip("10.1.0.1"), "interface bond0 does not exist".to_string()),
                    (ip("10.1.0.2"), "interface bond0 does not exist".to_string()),
                ]),
            ),
            (
                "worker2".to_string(),
                BTreeMap::from([(ip("10.1.0.2"), "interface eth0 is down".to_string())]),
            ),
        ]);
        a.exclude_unplaceable(&problems);
        let one = a
            .group_of(&ServiceKey::new("default", "one"))
            .expect("served");
        assert_eq!(one.candidates, BTreeSet::from(["worker2".to_string()]));
        assert!(a.group_of(&ServiceKey::new("default", "two")).is_none());
        let Some(PendingReason::NoUsableInterface { nodes }) =
            a.pending.get(&ServiceKey::new("default", "two"))
        else {
            panic!("{:?}", a.pending);
        };
        assert_eq!(nodes.len(), 2);
        assert!(nodes["worker1"].contains("bond0"));
        assert!(nodes["worker2"].contains("down"));

        let mut a = assess(
            &[svc("one", "Cluster", "10.1.0.1")],
            [slice("one", "worker1")],
            &[node("worker1", true), node("worker2", true)],
            &LbClassRule::default(),
        );
        let foreign = crate::placement::Interfaces {
            configured: None,
            list: &[crate::plan::InterfaceInfo {
                name: "eth0".into(),
                up: true,
                addresses: vec![(ip("10.1.0.5"), 24), (ip("10.1.0.1"), 32)],
            }],
            default_v4: None,
            default_v6: None,
        }
        .problems([ip("10.1.0.1")], &BTreeMap::new());
        a.exclude_unplaceable(&BTreeMap::from([("worker2".to_string(), foreign)]));
        assert!(
            a.groups.is_empty(),
            "worker1 could place it, but worker2 answers for it"
        );
        assert_eq!(
            a.pending.get(&ServiceKey::new("default", "one")),
            Some(&PendingReason::AddressOnNode {
                address: ip("10.1.0.1"),
                node: "worker2".into(),
                interface: "eth0".into(),
            })
        );
    }

    #[test]
    fn bad_input_is_refused_and_others_are_unaffected() {
        let nodes = [node("worker1", true)];
        let services = [
            svc("bad", "Local", "10.1.0.x"),
            svc("good", "Cluster", "10.1.0.2"),
        ];
        let a = assess(
            &services,
            [slice("good", "worker1")],
            &nodes,
            &LbClassRule::default(),
        );
        assert!(a.refused.contains_key(&ServiceKey::new("default", "bad")));
        assert_eq!(a.groups.len(), 1);
        assert!(a.group_of(&ServiceKey::new("default", "good")).is_some());
    }

    #[test]
    fn the_fence_refuses_addresses_outside_the_namespaces_pool_and_keeps_the_rest() {
        let pools = crate::testing::pools(&[("cidr-default", "10.1.0.0/30")]);
        let inside = svc("inside", "Cluster", "10.1.0.1");
        let mut outside = svc("outside", "Cluster", "10.1.0.9");
        outside.load_balancer_ip = Some("10.1.0.2".into());
        let mut spec_only = svc("spec", "Cluster", "");
        spec_only.annotations.clear();
        spec_only.load_balancer_ip = Some("10.1.0.10".into());
        let mut status = svc("status", "Cluster", "");
        status.annotations.clear();
        status.ingress_ips = vec!["10.1.0.11".into()];
        let mut theirs = svc("theirs", "Cluster", "10.9.9.9");
        theirs.load_balancer_class = Some("example.com/other".into());
        let inputs = [inside, outside, spec_only, status, theirs];
        let class = LbClassRule::default();
        let fenced = crate::ipam::outside_pools(&inputs, &class, Some(&pools));
        let key = |n| ServiceKey::new("default", n);
        let address = |a: &str| PendingReason::AddressOutsidePools {
            address: a.parse().unwrap(),
            pool: Some("cidr-default".into()),
        };
        assert_eq!(
            fenced,
            BTreeMap::from([
                (key("outside"), address("10.1.0.9")),
                (key("spec"), address("10.1.0.10")),
                (key("status"), address("10.1.0.11")),
            ]),
            "every source of an address is fenced; another class's Service is not kvip's"
        );
        // A bad value never good before fences nothing; the last good one
        // stands in for a bad edit.
        let bad = crate::testing::pools(&[("cidr-default", "10.1.0.0/30\n")]);
        assert!(crate::ipam::outside_pools(&inputs, &class, Some(&bad)).is_empty());
        let patched = bad.patched(&pools);
        assert_eq!(
            crate::ipam::outside_pools(&inputs, &class, Some(&patched)).len(),
            3
        );
        // Without a ConfigMap no address is in a pool.
        let fenced = crate::ipam::outside_pools(&inputs[..1], &class, None);
        let reason = &fenced[&key("inside")];
        assert_eq!(reason.reason(), "AddressOutsidePools");
        assert!(reason.message().contains("no pool"), "{}", reason.message());
    }

    #[test]
    fn a_service_the_pools_cannot_serve_is_pending_with_their_reason() {
        let pools = crate::testing::pools(&[("range-global", "10.1.0.1-10.1.0.1")]);
        let mut first = svc("first", "Cluster", "");
        first.annotations.clear();
        first.created = 1;
        first.ip_families = vec!["IPv4".into()];
        let mut second = first.clone();
        second.key = ServiceKey::new("default", "second");
        second.created = 2;
        let inputs = [first, second];
        let mut a = assess(&inputs, [], &[node("n1", true)], &LbClassRule::default());
        let (requests, uses) = crate::ipam::requests_and_uses(&inputs, &LbClassRule::default());
        let requests: Vec<_> = requests.into_iter().map(|(_, r)| r).collect();
        let outcome = crate::ipam::allocate_all(&pools, &requests, &uses);
        a.no_pool_address(&outcome.refused);
        let key = |n| ServiceKey::new("default", n);
        assert_eq!(a.pending[&key("first")], PendingReason::NoAddress);
        let reason = &a.pending[&key("second")];
        assert_eq!(reason.reason(), "PoolExhausted");
        assert!(
            reason.message().contains("range-global"),
            "{}",
            reason.message()
        );
    }
}
