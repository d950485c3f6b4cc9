//! Services that share an address are announced together: one election, one
//! node. This module groups Services into [`AnnouncementGroup`]s and decides,
//! the same way on every node, which Lease elects each group.
//!
//! The rule:
//!
//! 1. Claims on an address go in claim order: the Service that has it
//!    (its status lists this address) first, then the oldest
//!    ([`crate::service::ClaimRank`]), then by uid, so a newcomer never takes
//!    an address, whatever its namespace or name, nor an old Service that
//!    adds another's address to its list.
//! 2. An address belongs to the namespace of its first claim: a Service that
//!    lists an address of another namespace is left out entirely, pending
//!    with [`PendingReason::AddressConflict`]. In one namespace, Services
//!    share an address only when their ports (port and protocol) do not
//!    overlap; a later claim that overlaps is left out, pending with
//!    [`PendingReason::PortConflict`]. Claims do not depend on readiness, so
//!    ownership does not flap.
//! 3. The remaining Services are joined when they share an address or name
//!    the same Lease, transitively (union-find). Each connected set is one
//!    group, elected through the Lease of its oldest Service (the daemon
//!    keeps a member's Lease that is already held, see
//!    [`crate::assess::Assessment::keep_held_leases`], so adding a Service
//!    never changes it).
//! 4. A group announces for its members that have candidates; it announces
//!    their addresses from a node in the intersection of their candidate
//!    sets. Members without candidates are pending with their own reason; if
//!    the intersection is empty every member is pending with
//!    [`PendingReason::NoCommonCandidate`] and the group is not emitted.
//!
//! Output does not depend on the order of the input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::candidacy::PendingReason;
use crate::service::{ServiceKey, ServiceView};

/// A Lease's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LeaseKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// Addresses announced together from one elected node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnouncementGroup {
    /// The Lease that elects the announcer.
    pub lease: LeaseKey,
    /// Every address of the Services announced.
    pub addresses: BTreeSet<IpAddr>,
    /// The Services announced (their status and `kube-vip.io/vipHost` follow the holder).
    pub services: BTreeSet<ServiceKey>,
    /// Nodes that may hold the Lease; never empty.
    pub candidates: BTreeSet<String>,
}

/// Each Service's candidate nodes, or why it has none (from [`crate::candidacy::candidates`]).
pub type CandidateMap = BTreeMap<ServiceKey, Result<BTreeSet<String>, PendingReason>>;

/// Disjoint sets over indices, for joining Services.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    /// Joins two sets, keeping the smaller index as root so roots are the first member.
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        let (root, child) = if a < b { (a, b) } else { (b, a) };
        self.0[child] = root;
    }
}

/// Groups `services` for announcement; see the module docs for the rule. A
/// Service missing from `candidates` is treated as having no ready endpoints.
pub fn plan_groups(
    services: &[ServiceView],
    candidates: &CandidateMap,
) -> (Vec<AnnouncementGroup>, BTreeMap<ServiceKey, PendingReason>) {
    let mut pending = BTreeMap::new();

    // Sort fully so duplicates of a key resolve the same way whatever the input order.
    let mut unique: Vec<&ServiceView> = services.iter().collect();
    unique.sort();
    unique.dedup_by(|later, first| later.key == first.key);
    // Rule 1: claim order, address by address: the Service that has the
    // address (its status lists it), then the oldest, then by uid. The first
    // claim's namespace owns the address.
    let mut sorted = unique;
    sorted.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.key.cmp(&b.key)));
    let mut owner: BTreeMap<IpAddr, &ServiceView> = BTreeMap::new();
    for view in &sorted {
        for address in &view.addresses {
            let best = owner.entry(*address).or_insert(view);
            if view.claim_on(*address) < best.claim_on(*address) {
                *best = view;
            }
        }
    }

    // Rule 2: another namespace's address is refused; in the namespace, a
    // port already taken on the address is refused, in the same claim order.
    let mut refused: BTreeSet<&ServiceKey> = BTreeSet::new();
    for view in &sorted {
        if view.addresses.is_empty() {
            pending.insert(view.key.clone(), PendingReason::NoAddress);
            refused.insert(&view.key);
            continue;
        }
        let conflict = view.addresses.iter().find_map(|address| {
            owner
                .get(address)
                .filter(|other| other.key.namespace != view.key.namespace)
                .map(|other| (*address, other.key.clone()))
        });
        if let Some((address, other)) = conflict {
            pending.insert(
                view.key.clone(),
                PendingReason::AddressConflict { address, other },
            );
            refused.insert(&view.key);
        }
    }
    // Refusing one claim frees its ports everywhere: go again until none is refused.
    loop {
        let mut taken: BTreeMap<(IpAddr, &str, u16), &ServiceView> = BTreeMap::new();
        let mut claims: Vec<(IpAddr, &ServiceView)> = sorted
            .iter()
            .filter(|v| !refused.contains(&v.key))
            .flat_map(|v| v.addresses.iter().map(move |a| (*a, *v)))
            .collect();
        claims.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.claim_on(*a).cmp(&y.claim_on(*b))));
        let overlap = claims.iter().find_map(|(address, view)| {
            view.ports.iter().find_map(|(protocol, port)| {
                let first = taken
                    .entry((*address, protocol.as_str(), *port))
                    .or_insert(view);
                (first.key != view.key).then(|| {
                    (
                        *view,
                        PendingReason::PortConflict {
                            address: *address,
                            protocol: protocol.clone(),
                            port: *port,
                            other: first.key.clone(),
                        },
                    )
                })
            })
        });
        match overlap {
            Some((view, reason)) => {
                pending.insert(view.key.clone(), reason);
                refused.insert(&view.key);
            }
            None => break,
        }
    }
    let accepted: Vec<&ServiceView> = sorted
        .into_iter()
        .filter(|v| !refused.contains(&v.key))
        .collect();

    // Rule 3: join by shared address or shared Lease.
    let mut sets = UnionFind::new(accepted.len());
    let mut first_by_address: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut first_by_lease: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, view) in accepted.iter().enumerate() {
        for address in &view.addresses {
            let first = *first_by_address.entry(*address).or_insert(i);
            sets.union(first, i);
        }
        let lease = (view.key.namespace.as_str(), view.lease_name.as_str());
        let first = *first_by_lease.entry(lease).or_insert(i);
        sets.union(first, i);
    }
    let mut members: BTreeMap<usize, Vec<&ServiceView>> = BTreeMap::new();
    for (i, view) in accepted.iter().enumerate() {
        members.entry(sets.find(i)).or_default().push(view);
    }

    // Rule 4: announce the members with candidates, from a node they all accept.
    let mut groups = Vec::new();
    for (root, group_members) in members {
        let first = accepted[root];
        let mut ready: Vec<(&ServiceView, &BTreeSet<String>)> = Vec::new();
        for view in group_members {
            match candidates.get(&view.key) {
                Some(Ok(nodes)) => ready.push((view, nodes)),
                Some(Err(reason)) => {
                    pending.insert(view.key.clone(), reason.clone());
                }
                None => {
                    pending.insert(view.key.clone(), PendingReason::NoReadyEndpoints);
                }
            }
        }
        let Some(((_, first_nodes), rest)) = ready.split_first() else {
            continue;
        };
        let common: BTreeSet<String> = rest.iter().fold((*first_nodes).clone(), |acc, (_, n)| {
            acc.intersection(n).cloned().collect()
        });
        let addresses: BTreeSet<IpAddr> = ready
            .iter()
            .flat_map(|(v, _)| v.addresses.iter().copied())
            .collect();
        let services: BTreeSet<ServiceKey> = ready.iter().map(|(v, _)| v.key.clone()).collect();
        if common.is_empty() {
            let reason = PendingReason::NoCommonCandidate {
                addresses: addresses.into_iter().collect(),
                services: services.iter().cloned().collect(),
            };
            for key in services {
                pending.insert(key, reason.clone());
            }
            continue;
        }
        groups.push(AnnouncementGroup {
            lease: first.lease_key(),
            addresses,
            services,
            candidates: common,
        });
    }
    groups.sort_by(|a, b| a.lease.cmp(&b.lease));
    (groups, pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::TrafficPolicy;
    use proptest::prelude::*;

    fn view(ns: &str, name: &str, addresses: &[&str]) -> ServiceView {
        ServiceView {
            key: ServiceKey::new(ns, name),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            policy: TrafficPolicy::Cluster,
            lease_name: format!("kubevip-{name}"),
            ports: vec![],
            rank: Default::default(),
            served: vec![],
            addresses_from: Default::default(),
            interface: None,
        }
    }

    fn aged(mut v: ServiceView, created: i64, served: bool) -> ServiceView {
        v.rank.created = created;
        v.served = if served { v.addresses.clone() } else { vec![] };
        v
    }

    fn ported(mut v: ServiceView, ports: &[(&str, u16)]) -> ServiceView {
        v.ports = ports.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        v
    }

    #[test]
    fn the_served_then_the_oldest_keeps_a_contested_address_whatever_the_names() {
        for (first, second) in [("a-new", "z-prod"), ("z-new", "a-prod")] {
            let prod = aged(view(second, "web", &["10.0.0.1"]), 100, false);
            let newcomer = aged(view(first, "web", &["10.0.0.1"]), 200, false);
            let cs = cands(&[(&prod, nodes(&["n1"])), (&newcomer, nodes(&["n1"]))]);
            let (groups, pending) = plan_groups(&[newcomer.clone(), prod.clone()], &cs);
            assert_eq!(
                groups[0].services,
                keys(&[&prod]),
                "{first} against {second}"
            );
            assert!(matches!(
                &pending[&newcomer.key],
                PendingReason::AddressConflict { other, .. } if other == &prod.key
            ));
            // Served beats older: the status says who had it.
            let served = aged(newcomer.clone(), 200, true);
            let (groups, _) = plan_groups(&[served.clone(), prod.clone()], &cs);
            assert_eq!(groups[0].services, keys(&[&served]));
        }
    }

    #[test]
    fn an_old_service_adding_a_served_address_to_its_list_does_not_take_it() {
        let victim = aged(view("prod", "web", &["10.0.0.1"]), 200, true);
        let mut old = aged(view("evil", "old", &["10.0.0.2", "10.0.0.1"]), 100, false);
        old.served = vec!["10.0.0.2".parse().unwrap()];
        let cs = cands(&[(&victim, nodes(&["n1"])), (&old, nodes(&["n1"]))]);
        let (groups, pending) = plan_groups(&[old.clone(), victim.clone()], &cs);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].services, keys(&[&victim]));
        assert!(matches!(
            &pending[&old.key],
            PendingReason::AddressConflict { other, .. } if other == &victim.key
        ));
        // In one namespace the same: the served claim keeps its port.
        let mut same = old.clone();
        same.key.namespace = "prod".into();
        let victim = ported(victim, &[("TCP", 80)]);
        let same = ported(same, &[("TCP", 80)]);
        let cs = cands(&[(&victim, nodes(&["n1"])), (&same, nodes(&["n1"]))]);
        let (_, pending) = plan_groups(&[same.clone(), victim.clone()], &cs);
        assert!(matches!(
            &pending[&same.key],
            PendingReason::PortConflict { other, .. } if other == &victim.key
        ));
        assert!(!pending.contains_key(&victim.key));
    }

    #[test]
    fn services_share_an_address_only_with_different_ports() {
        let a = ported(
            aged(view("ns", "a", &["10.0.0.1"]), 100, true),
            &[("TCP", 80)],
        );
        let b = ported(
            aged(view("ns", "b", &["10.0.0.1"]), 50, false),
            &[("TCP", 80), ("TCP", 443)],
        );
        let c = ported(
            aged(view("ns", "c", &["10.0.0.1"]), 300, false),
            &[("UDP", 80)],
        );
        let cs = cands(&[
            (&a, nodes(&["n1"])),
            (&b, nodes(&["n1"])),
            (&c, nodes(&["n1"])),
        ]);
        let (groups, pending) = plan_groups(&[c.clone(), b.clone(), a.clone()], &cs);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].services, keys(&[&a, &c]));
        assert_eq!(
            groups[0].lease.name, "kubevip-a",
            "the served Service's Lease"
        );
        assert_eq!(
            pending[&b.key],
            PendingReason::PortConflict {
                address: "10.0.0.1".parse().unwrap(),
                protocol: "TCP".into(),
                port: 80,
                other: a.key.clone(),
            }
        );
    }

    #[test]
    fn adding_a_service_to_a_shared_address_keeps_its_lease() {
        let a = ported(
            aged(view("ns", "z-first", &["10.0.0.1"]), 100, true),
            &[("TCP", 80)],
        );
        let cs_one = cands(&[(&a, nodes(&["n1", "n2"]))]);
        let (before, _) = plan_groups(std::slice::from_ref(&a), &cs_one);
        let b = ported(
            aged(view("ns", "a-later", &["10.0.0.1"]), 200, false),
            &[("TCP", 81)],
        );
        let cs = cands(&[(&a, nodes(&["n1", "n2"])), (&b, nodes(&["n1", "n2"]))]);
        let (after, _) = plan_groups(&[a.clone(), b.clone()], &cs);
        assert_eq!(before[0].lease, after[0].lease);
        assert_eq!(after[0].services, keys(&[&a, &b]));
    }

    fn nodes(list: &[&str]) -> Result<BTreeSet<String>, PendingReason> {
        Ok(list.iter().map(|n| n.to_string()).collect())
    }

    fn cands(entries: &[(&ServiceView, Result<BTreeSet<String>, PendingReason>)]) -> CandidateMap {
        entries
            .iter()
            .map(|(v, c)| (v.key.clone(), c.clone()))
            .collect()
    }

    fn keys(views: &[&ServiceView]) -> BTreeSet<ServiceKey> {
        views.iter().map(|v| v.key.clone()).collect()
    }

    #[test]
    fn separate_addresses_make_separate_groups() {
        let a = view("ns", "a", &["10.0.0.1"]);
        let b = view("ns", "b", &["10.0.0.2"]);
        let c = cands(&[(&a, nodes(&["n1"])), (&b, nodes(&["n2"]))]);
        let (groups, pending) = plan_groups(&[b.clone(), a.clone()], &c);
        assert!(pending.is_empty());
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].lease.name, "kubevip-a");
        assert_eq!(groups[1].services, keys(&[&b]));
    }

    #[test]
    fn shared_address_means_one_election_on_the_first_lease() {
        let a = view("ns", "a", &["10.0.0.1"]);
        let b = view("ns", "b", &["10.0.0.1", "10.0.0.2"]);
        let c = view("ns", "c", &["10.0.0.2"]);
        let cs = cands(&[
            (&a, nodes(&["n1", "n2", "n3"])),
            (&b, nodes(&["n2", "n3"])),
            (&c, nodes(&["n3", "n4"])),
        ]);
        let (groups, pending) = plan_groups(&[c.clone(), b.clone(), a.clone()], &cs);
        assert!(pending.is_empty());
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(
            g.lease,
            LeaseKey {
                namespace: "ns".to_string(),
                name: "kubevip-a".to_string()
            }
        );
        assert_eq!(g.services, keys(&[&a, &b, &c]));
        assert_eq!(g.addresses.len(), 2);
        assert_eq!(g.candidates, nodes(&["n3"]).unwrap());
    }

    #[test]
    fn same_lease_name_joins_services() {
        let a = view("ns", "a", &["10.0.0.1"]);
        let mut b = view("ns", "b", &["10.0.0.2"]);
        b.lease_name = "kubevip-a".to_string();
        let cs = cands(&[(&a, nodes(&["n1"])), (&b, nodes(&["n1"]))]);
        let (groups, _) = plan_groups(&[a, b], &cs);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].addresses.len(), 2);
    }

    #[test]
    fn another_namespace_cannot_take_an_address() {
        let a = view("alpha", "web", &["10.0.0.1"]);
        let b = view("beta", "web", &["10.0.0.2", "10.0.0.1"]);
        let cs = cands(&[(&a, nodes(&["n1"])), (&b, nodes(&["n1"]))]);
        let (groups, pending) = plan_groups(&[b.clone(), a.clone()], &cs);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].services, keys(&[&a]));
        assert_eq!(
            pending.get(&b.key),
            Some(&PendingReason::AddressConflict {
                address: "10.0.0.1".parse().unwrap(),
                other: a.key.clone()
            })
        );
    }

    #[test]
    fn members_without_candidates_are_pending_but_keep_the_lease() {
        let a = view("ns", "a", &["10.0.0.1"]);
        let b = view("ns", "b", &["10.0.0.1", "10.0.0.9"]);
        let cs = cands(&[
            (&a, Err(PendingReason::NoReadyEndpoints)),
            (&b, nodes(&["n1"])),
        ]);
        let (groups, pending) = plan_groups(&[a.clone(), b.clone()], &cs);
        assert_eq!(
            groups[0].lease.name, "kubevip-a",
            "lease does not move with readiness"
        );
        assert_eq!(groups[0].services, keys(&[&b]));
        assert_eq!(pending.get(&a.key), Some(&PendingReason::NoReadyEndpoints));
    }

    #[test]
    fn no_common_candidate_makes_every_member_pending() {
        let a = view("ns", "a", &["10.0.0.1"]);
        let b = view("ns", "b", &["10.0.0.1"]);
        let cs = cands(&[(&a, nodes(&["n1"])), (&b, nodes(&["n2"]))]);
        let (groups, pending) = plan_groups(&[a.clone(), b.clone()], &cs);
        assert!(groups.is_empty());
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[&a.key].reason(), "NoCommonCandidate");
    }

    #[test]
    fn services_without_addresses_or_candidates_are_pending() {
        let a = view("ns", "a", &[]);
        let b = view("ns", "b", &["10.0.0.1"]);
        let (groups, pending) = plan_groups(&[a.clone(), b.clone()], &BTreeMap::new());
        assert!(groups.is_empty());
        assert_eq!(pending[&a.key], PendingReason::NoAddress);
        assert_eq!(pending[&b.key], PendingReason::NoReadyEndpoints);
    }

    fn arb_world() -> impl Strategy<Value = (Vec<ServiceView>, CandidateMap)> {
        let service = (
            0..2usize,
            0..6usize,
            proptest::collection::btree_set(0..5u8, 0..3),
            proptest::option::of(0..2u8),
            proptest::option::of(proptest::collection::btree_set(0..3u8, 0..3)),
        );
        proptest::collection::vec(service, 0..10).prop_map(|raw| {
            let mut views = Vec::new();
            let mut cands = BTreeMap::new();
            for (ns, name, addrs, lease, nodes) in raw {
                let addrs: Vec<String> = addrs.iter().map(|a| format!("10.0.0.{a}")).collect();
                let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                let mut v = view(&format!("ns{ns}"), &format!("s{name}"), &refs);
                if let Some(l) = lease {
                    v.lease_name = format!("shared-{l}");
                }
                let c = match nodes {
                    Some(n) => Ok(n.iter().map(|n| format!("n{n}")).collect()),
                    None => Err(PendingReason::NoReadyEndpoints),
                };
                cands.insert(v.key.clone(), c);
                views.push(v);
            }
            (views, cands)
        })
    }

    proptest! {
        #[test]
        fn input_order_does_not_change_the_outcome(
            (views, cands) in arb_world(),
            seed in any::<u64>(),
        ) {
            let expected = plan_groups(&views, &cands);
            let mut shuffled = views.clone();
            // A deterministic shuffle driven by the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(plan_groups(&shuffled, &cands), expected);
        }

        #[test]
        fn groups_are_disjoint_and_every_service_is_accounted_for(
            (views, cands) in arb_world(),
        ) {
            let (groups, pending) = plan_groups(&views, &cands);
            let mut seen_addresses = BTreeSet::new();
            let mut seen_leases = BTreeSet::new();
            let mut announced = BTreeSet::new();
            for g in &groups {
                prop_assert!(!g.candidates.is_empty());
                prop_assert!(seen_leases.insert(g.lease.clone()));
                for a in &g.addresses {
                    prop_assert!(seen_addresses.insert(*a), "address in two groups");
                }
                for s in &g.services {
                    prop_assert!(announced.insert(s.clone()));
                    prop_assert!(!pending.contains_key(s));
                    prop_assert_eq!(&s.namespace, &g.lease.namespace);
                    let Some(Ok(c)) = cands.get(s) else {
                        return Err(TestCaseError::fail("announced without candidates"));
                    };
                    prop_assert!(g.candidates.is_subset(c));
                }
            }
            for v in &views {
                prop_assert!(announced.contains(&v.key) || pending.contains_key(&v.key));
            }
        }
    }
}
