//! The allocating node's bookkeeping, as plain values: which addresses are
//! being written, which it wrote lately, which Services wait after a failed
//! write, and what to write next ([`Planner::plan`]). The daemon
//! (`daemon/src/ipam.rs`) holds the Lease, sends the writes and reports how
//! they ended; every rule about what counts as used lives here.
//!
//! - **Pins.** An address being written, or written and not yet shown by
//!   the watch, is used whatever the next plan would choose, and its Service
//!   asks for nothing. A pin goes when the watch shows a later version of the
//!   Service than the write was guarded by (it shows what became of the
//!   write), when the Service is gone, or after [`PIN_KEPT`].
//! - **Clashes.** Another allocator (kube-vip-cloud-provider during a
//!   migration) may hand the address this node has just written to another
//!   Service in the same instant. While neither is served, this node's
//!   Service takes another address, in the same pass as every other
//!   allocation. Only against a Service whose address looks allocated
//!   ([`Cached::allocator_made`]): a hand-set address is the author's
//!   choice, and the claim order settles it.
//! - **Giving way.** A Service seen without an address, then with one
//!   written the cloud provider's way (kvip never writes
//!   `spec.loadBalancerIP`) and not by this node, is kube-vip-cloud-provider
//!   at work. Two allocators that cannot see each other's
//!   choices only race, so kvip allocates nothing until [`GIVE_WAY`] after
//!   the cloud provider's last allocation; its own repairs go on.

use crate::election::Mono;
use crate::ipam::{self, AddressUse, Allocation, IpamError, PoolConfig, PoolUsage, Request};
use crate::service::{LbClassRule, ServiceInput, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// How long a pin outlives a watch that shows nothing newer.
pub const PIN_KEPT: Duration = Duration::from_secs(60);
/// How long an address this node wrote is checked for a clash.
pub const WRITTEN_KEPT: Duration = Duration::from_secs(60);
/// How long the list read at the start of a term counts at most: its
/// entries go as soon as the watch shows each Service as new.
pub const LIST_KEPT: Duration = Duration::from_secs(60);
/// The first wait after a failed write; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest a Service waits after failed writes.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// How long kvip allocates nothing after kube-vip-cloud-provider was seen
/// allocating.
pub const GIVE_WAY: Duration = Duration::from_secs(600);

/// A cached Service with what the planner needs beside its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The Service as the core reads it (`uid` set).
    pub input: ServiceInput,
    /// `metadata.resourceVersion` as written.
    pub resource_version: String,
    /// Labelled `implementation: kube-vip` with `spec.loadBalancerIP` equal
    /// to the first address, as kube-vip-cloud-provider writes it.
    pub allocator_made: bool,
}

/// One allocation to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The Service's uid.
    pub uid: String,
    /// The Service.
    pub service: ServiceKey,
    /// The resourceVersion the write is guarded by.
    pub resource_version: String,
    /// The allocation.
    pub allocation: Allocation,
    /// `spec.ports`.
    pub ports: Vec<(String, u16)>,
    /// The address it replaces, which another allocator gave another Service.
    pub replaces: Option<IpAddr>,
}

/// What one plan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to write (only the holder of the Lease writes).
    pub writes: Vec<Write>,
    /// Services the pools give nothing, and why.
    pub refused: BTreeMap<ServiceKey, IpamError>,
    /// How full each pool is, counting this plan's writes.
    pub usage: Vec<PoolUsage>,
    /// Clashes found for the first time: (Service, address, the other).
    pub clashes: Vec<(ServiceKey, IpAddr, ServiceKey)>,
    /// kube-vip-cloud-provider was first seen allocating, for this Service.
    pub gave_way: Option<ServiceKey>,
}

/// A Service as the API server listed it at the start of a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its uid.
    pub uid: String,
    /// Its resourceVersion then.
    pub version: Option<u64>,
    /// Its addresses.
    pub used: AddressUse,
}

#[derive(Debug, Clone)]
struct Pin {
    service: ServiceKey,
    addresses: Vec<IpAddr>,
    ports: Vec<(String, u16)>,
    base: Option<u64>,
    at: Mono,
}

/// The allocating node's bookkeeping.
#[derive(Debug, Default)]
pub struct Planner {
    pins: BTreeMap<String, Pin>,
    written: BTreeMap<String, (Vec<IpAddr>, Mono)>,
    failed: BTreeMap<String, (Mono, Duration)>,
    /// The term's list: each use with its Service's uid and version.
    listed: Option<(Vec<Listed>, Mono)>,
    said: BTreeSet<String>,
    /// Whether each Service named no address when last seen.
    made: BTreeMap<String, bool>,
    /// When kube-vip-cloud-provider was last seen allocating.
    foreign: Option<Mono>,
}

impl Planner {
    /// Whether writes are pinned (the node keeps its Lease for them).
    pub fn writing(&self) -> bool {
        !self.pins.is_empty()
    }

    /// A new term: what the API server listed (every Service labelled
    /// `implementation: kube-vip`, read past any cache) counts as used until
    /// the watch shows each Service at that version or later, or for
    /// [`LIST_KEPT`] at most.
    pub fn listed(&mut self, uses: Vec<Listed>, now: Mono) {
        self.listed = Some((uses, now));
    }

    /// The term ended: the next one lists again.
    pub fn term_ended(&mut self) {
        self.listed = None;
    }

    /// Whether this term's list has come.
    pub fn has_list(&self) -> bool {
        self.listed.is_some()
    }

    /// Plans over the cached Services: what the pools give the Services of
    /// `class` that name no address (none when not `allocating`), what to
    /// repair, and why the others get nothing.
    pub fn plan(
        &mut self,
        config: &PoolConfig,
        services: &[Cached],
        class: &LbClassRule,
        allocating: bool,
        now: Mono,
    ) -> Plan {
        let by_uid: BTreeMap<&str, &Cached> = services
            .iter()
            .filter(|c| !c.input.uid.is_empty())
            .map(|c| (c.input.uid.as_str(), c))
            .collect();
        self.pins.retain(|uid, pin| {
            let Some(cached) = by_uid.get(uid.as_str()) else {
                return false;
            };
            let shown = cached.resource_version.parse::<u64>().ok();
            let moved_on = matches!((shown, pin.base), (Some(s), Some(b)) if s > b);
            !moved_on && now.since(pin.at) < PIN_KEPT
        });
        self.failed
            .retain(|uid, _| by_uid.contains_key(uid.as_str()));
        self.written.retain(|uid, (_, at)| {
            by_uid.contains_key(uid.as_str()) && now.since(*at) < WRITTEN_KEPT
        });
        self.said.retain(|uid| self.written.contains_key(uid));
        let mut gave_way = None;
        for c in services {
            // Seen without an address, then with one the cloud provider's
            // way, not written here.
            // (or over an address written here: its retry overwrites).
            let named = ipam::named_addresses(&c.input);
            let before = self.made.insert(c.input.uid.clone(), named.is_empty());
            let overwritten = self
                .written
                .get(&c.input.uid)
                .is_some_and(|(mine, _)| *mine != named);
            let fresh = before == Some(true) && !self.written.contains_key(&c.input.uid);
            if c.allocator_made && (fresh || overwritten) && !self.pins.contains_key(&c.input.uid) {
                if self.foreign.is_none_or(|at| now.since(at) >= GIVE_WAY) {
                    gave_way = Some(c.input.key.clone());
                }
                self.foreign = Some(now);
            }
        }
        self.made.retain(|uid, _| by_uid.contains_key(uid.as_str()));
        let giving_way = self.foreign.is_some_and(|at| now.since(at) < GIVE_WAY);
        if let Some((listed, at)) = &mut self.listed {
            let expired = now.since(*at) >= LIST_KEPT;
            listed.retain(|l| {
                let caught_up = by_uid.get(l.uid.as_str()).is_some_and(|c| {
                    matches!(
                        (c.resource_version.parse::<u64>().ok(), l.version),
                        (Some(shown), Some(listed)) if shown >= listed
                    )
                });
                !expired && !caught_up
            });
        }

        let inputs: Vec<ServiceInput> = services.iter().map(|c| c.input.clone()).collect();
        // A fenced Service still uses its addresses: the fence is about
        // serving, and when it lifts the Service claims them again.
        let (requests, mut uses) = ipam::requests_and_uses(&inputs, class);
        let pinned: BTreeSet<&ServiceKey> = self.pins.values().map(|p| &p.service).collect();
        uses.retain(|u| !pinned.contains(&u.service));
        uses.extend(self.pins.values().map(|p| AddressUse {
            service: p.service.clone(),
            addresses: p.addresses.clone(),
            ports: p.ports.clone(),
        }));
        if let Some((listed, _)) = &self.listed {
            uses.extend(listed.iter().map(|l| l.used.clone()));
        }
        let uid_of: BTreeMap<&ServiceKey, &str> = services
            .iter()
            .map(|c| (&c.input.key, c.input.uid.as_str()))
            .collect();
        // Listed with an address the watch does not show yet: it has one.
        let listed_uids: BTreeSet<&str> = self
            .listed
            .iter()
            .flat_map(|(listed, _)| listed.iter().map(|l| l.uid.as_str()))
            .collect();
        let waiting = |key: &ServiceKey| {
            uid_of.get(key).is_some_and(|uid| {
                self.pins.contains_key(*uid)
                    || listed_uids.contains(*uid)
                    || self.failed.get(*uid).is_some_and(|(until, _)| now < *until)
            })
        };
        let mut requests: Vec<Request> = requests
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !waiting(&r.service))
            .collect();

        if giving_way {
            requests.clear();
        }
        let mut plan = Plan {
            gave_way,
            ..Plan::default()
        };
        let mut replaces: BTreeMap<ServiceKey, IpAddr> = BTreeMap::new();
        if allocating {
            let made: BTreeSet<&ServiceKey> = services
                .iter()
                .filter(|c| c.allocator_made)
                .map(|c| &c.input.key)
                .collect();
            let mut holders: BTreeMap<IpAddr, Vec<&AddressUse>> = BTreeMap::new();
            for u in &uses {
                for a in &u.addresses {
                    holders.entry(*a).or_default().push(u);
                }
            }
            for (uid, (addresses, _)) in &self.written {
                let Some(cached) = by_uid.get(uid.as_str()) else {
                    continue;
                };
                let input = &cached.input;
                let backing_off = self.failed.get(uid).is_some_and(|(until, _)| now < *until);
                if self.pins.contains_key(uid)
                    || backing_off
                    || ipam::named_addresses(input) != *addresses
                {
                    continue;
                }
                let served = input
                    .ingress_ips
                    .iter()
                    .filter_map(|i| i.parse::<IpAddr>().ok())
                    .any(|a| addresses.contains(&a));
                if served {
                    continue;
                }
                let mine = AddressUse {
                    service: input.key.clone(),
                    addresses: addresses.clone(),
                    ports: input.ports.clone(),
                };
                let others: Vec<AddressUse> = addresses
                    .iter()
                    .flat_map(|a| holders.get(a).into_iter().flatten())
                    .filter(|u| u.service != input.key && made.contains(&u.service))
                    .map(|u| (*u).clone())
                    .collect();
                let Some((address, other)) = ipam::clash(config, &mine, &others) else {
                    continue;
                };
                if self.said.insert(uid.clone()) {
                    plan.clashes
                        .push((input.key.clone(), address, other.clone()));
                }
                replaces.insert(input.key.clone(), address);
                requests.insert(0, Request::of(input));
            }
        }
        // A Service taking another address no longer uses its own; the
        // other Service keeps it.
        uses.retain(|u| !replaces.contains_key(&u.service));
        let outcome = if allocating {
            ipam::allocate_all(config, &requests, &uses)
        } else {
            ipam::Outcome::default()
        };
        let mut counted = uses;
        counted.extend(outcome.allocations.iter().map(|(r, a)| AddressUse {
            service: r.service.clone(),
            addresses: a.addresses.clone(),
            ports: r.ports.clone(),
        }));
        plan.usage = ipam::pool_usage(config, &counted);
        let by_key: BTreeMap<&ServiceKey, &Cached> =
            services.iter().map(|c| (&c.input.key, c)).collect();
        for (request, allocation) in outcome.allocations {
            let Some(cached) = by_key.get(&request.service) else {
                continue;
            };
            plan.writes.push(Write {
                uid: cached.input.uid.clone(),
                service: request.service.clone(),
                resource_version: cached.resource_version.clone(),
                allocation,
                ports: request.ports,
                replaces: replaces.get(&request.service).copied(),
            });
        }
        plan.refused = outcome.refused;
        plan.refused.retain(|key, _| !replaces.contains_key(key));
        plan
    }

    /// `write` is being sent: its addresses are used from now on.
    pub fn sending(&mut self, write: &Write, now: Mono) {
        self.pins.insert(
            write.uid.clone(),
            Pin {
                service: write.service.clone(),
                addresses: write.allocation.addresses.clone(),
                ports: write.ports.clone(),
                base: write.resource_version.parse().ok(),
                at: now,
            },
        );
    }

    /// Whether `uid` has a write pinned (it is not sent again).
    pub fn pinned(&self, uid: &str) -> bool {
        self.pins.contains_key(uid)
    }

    /// The write for `uid` was stored: checked for a clash for a while.
    pub fn stored(&mut self, uid: &str, addresses: &[IpAddr], now: Mono) {
        self.failed.remove(uid);
        // Sorted, as `named_addresses` gives them back.
        let mut addresses = addresses.to_vec();
        addresses.sort();
        self.written.insert(uid.to_string(), (addresses, now));
    }

    /// The write for `uid` was certainly not stored (a conflict, or never
    /// sent): it is decided again, after a wait.
    pub fn not_stored(&mut self, uid: &str, now: Mono) -> Duration {
        self.pins.remove(uid);
        self.back_off(uid, now)
    }

    /// The write for `uid` failed and may have been stored: the pin stays
    /// until the watch tells; returns the wait before the next try.
    pub fn failed(&mut self, uid: &str, now: Mono) -> Duration {
        self.back_off(uid, now)
    }

    fn back_off(&mut self, uid: &str, now: Mono) -> Duration {
        let wait = self
            .failed
            .get(uid)
            .map_or(RETRY_FIRST, |(_, last)| (*last * 2).min(RETRY_MAX));
        self.failed.insert(uid.to_string(), (now.after(wait), wait));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::pools;

    fn cached(ns: &str, name: &str, created: i64, version: u64) -> Cached {
        Cached {
            input: ServiceInput {
                key: ServiceKey::new(ns, name),
                type_: "LoadBalancer".into(),
                ip_families: vec!["IPv4".into()],
                ports: vec![("TCP".into(), 80)],
                uid: format!("uid-{ns}-{name}"),
                created,
                ..Default::default()
            },
            resource_version: version.to_string(),
            allocator_made: false,
        }
    }

    fn with_address(mut c: Cached, address: &str, version: u64) -> Cached {
        c.input.annotations.insert(
            crate::service::LOADBALANCER_IPS_ANNOTATION.into(),
            address.into(),
        );
        c.resource_version = version.to_string();
        c
    }

    fn at(seconds: u64) -> Mono {
        Mono::default().after(Duration::from_secs(seconds))
    }

    fn given(plan: &Plan) -> Vec<(String, String)> {
        plan.writes
            .iter()
            .map(|w| (w.service.to_string(), w.allocation.annotation()))
            .collect()
    }

    fn plan(planner: &mut Planner, config: &PoolConfig, services: &[Cached], now: Mono) -> Plan {
        planner.plan(config, services, &LbClassRule::default(), true, now)
    }

    #[test]
    fn an_address_being_written_stays_used_when_an_older_service_arrives() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.3")]);
        let mut planner = Planner::default();
        let b = cached("b", "one", 10, 100);
        let first = plan(&mut planner, &config, std::slice::from_ref(&b), at(0));
        assert_eq!(
            given(&first),
            [("b/one".to_string(), "10.0.0.1".to_string())]
        );
        planner.sending(&first.writes[0], at(0));
        // a/one sorts first (same second, lower key) while b/one's write is
        // on its way: b/one keeps .1, a/one gets .2.
        let a = cached("a", "one", 10, 101);
        let second = plan(&mut planner, &config, &[a.clone(), b.clone()], at(1));
        assert_eq!(
            given(&second),
            [("a/one".to_string(), "10.0.0.2".to_string())]
        );
        // Stored and shown: the pin goes, the annotation counts.
        planner.stored(&b.input.uid, &["10.0.0.1".parse().unwrap()], at(1));
        let shown = with_address(b, "10.0.0.1", 102);
        let third = plan(&mut planner, &config, &[a, shown], at(2));
        assert_eq!(
            given(&third),
            [("a/one".to_string(), "10.0.0.2".to_string())]
        );
        assert!(
            !planner.writing(),
            "the watch showed a later version: no pin"
        );
    }

    #[test]
    fn a_write_that_may_have_been_stored_keeps_its_address_until_the_watch_tells() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.3")]);
        let mut planner = Planner::default();
        let one = cached("a", "one", 10, 100);
        let p = plan(&mut planner, &config, std::slice::from_ref(&one), at(0));
        planner.sending(&p.writes[0], at(0));
        let wait = planner.failed(&one.input.uid, at(1));
        assert_eq!(wait, RETRY_FIRST);
        let two = cached("a", "two", 11, 103);
        let p = plan(&mut planner, &config, &[one.clone(), two.clone()], at(5));
        assert_eq!(
            given(&p),
            [("a/two".to_string(), "10.0.0.2".to_string())],
            "one's address is pinned and one asks for nothing"
        );
        planner.sending(&p.writes[0], at(5));
        // The watch shows one unchanged at a later version: the write did
        // not land, one asks again (after its wait).
        let mut later = one.clone();
        later.resource_version = "104".into();
        let p = plan(&mut planner, &config, &[later, two], at(6));
        assert_eq!(given(&p), [("a/one".to_string(), "10.0.0.1".to_string())]);
        // Failures back off, doubling to a minute.
        let waits: Vec<u64> = (0..8)
            .map(|i| planner.failed(&one.input.uid, at(10 + i)).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_conflict_frees_the_pin_and_a_deleted_service_frees_its_address() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.2")]);
        let mut planner = Planner::default();
        let one = cached("a", "one", 10, 100);
        let p = plan(&mut planner, &config, std::slice::from_ref(&one), at(0));
        planner.sending(&p.writes[0], at(0));
        assert!(planner.pinned(&one.input.uid));
        planner.not_stored(&one.input.uid, at(0));
        assert!(!planner.pinned(&one.input.uid));
        // Deleted while pinned: its address is free for the next.
        let p = plan(&mut planner, &config, std::slice::from_ref(&one), at(2));
        planner.sending(&p.writes[0], at(2));
        let two = cached("a", "two", 11, 105);
        let p = plan(&mut planner, &config, std::slice::from_ref(&two), at(3));
        assert_eq!(given(&p), [("a/two".to_string(), "10.0.0.1".to_string())]);
    }

    #[test]
    fn a_duplicate_from_another_allocator_moves_this_nodes_service_past_every_new_one() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.4")]);
        let mut planner = Planner::default();
        let mine = cached("a", "mine", 10, 100);
        let p = plan(&mut planner, &config, std::slice::from_ref(&mine), at(0));
        planner.sending(&p.writes[0], at(0));
        planner.stored(&mine.input.uid, &["10.0.0.1".parse().unwrap()], at(0));
        let mine = with_address(mine, "10.0.0.1", 101);
        // The cloud provider gave .1 to b/theirs at the same time, and a
        // new Service waits: the two take .2 and .3, never one address twice.
        let mut theirs = with_address(cached("b", "theirs", 10, 102), "10.0.0.1", 102);
        theirs.allocator_made = true;
        let new = cached("c", "new", 12, 103);
        let services = [mine.clone(), theirs.clone(), new.clone()];
        let p = plan(&mut planner, &config, &services, at(1));
        assert_eq!(
            given(&p),
            [
                ("a/mine".to_string(), "10.0.0.2".to_string()),
                ("c/new".to_string(), "10.0.0.3".to_string())
            ]
        );
        assert_eq!(p.writes[0].replaces, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            p.clashes,
            [(
                ServiceKey::new("a", "mine"),
                "10.0.0.1".parse().unwrap(),
                ServiceKey::new("b", "theirs")
            )]
        );
        // A hand-set twin is the author's choice; a served address stays.
        let mut planner2 = Planner::default();
        planner2.stored(&mine.input.uid, &["10.0.0.1".parse().unwrap()], at(0));
        let mut hand = theirs.clone();
        hand.allocator_made = false;
        let p = plan(&mut planner2, &config, &[mine.clone(), hand], at(1));
        assert!(p.writes.is_empty(), "{:?}", given(&p));
        let mut served = mine;
        served.input.ingress_ips = vec!["10.0.0.1".into()];
        let p = plan(&mut planner2, &config, &[served, theirs], at(2));
        assert!(p.writes.is_empty(), "{:?}", given(&p));
    }

    #[test]
    fn kvip_gives_way_while_the_cloud_provider_allocates() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.4")]);
        let mut planner = Planner::default();
        // Allocated by the cloud provider before this node watched: no sign.
        let mut old = with_address(cached("a", "old", 1, 100), "10.0.0.1", 100);
        old.allocator_made = true;
        let theirs = cached("a", "theirs", 2, 101);
        let p = plan(&mut planner, &config, &[old.clone(), theirs.clone()], at(0));
        assert_eq!(
            given(&p),
            [("a/theirs".to_string(), "10.0.0.2".to_string())]
        );
        // The cloud provider got there first: the Service became
        // allocator-made under this node's eyes.
        let mut done = with_address(theirs, "10.0.0.2", 102);
        done.allocator_made = true;
        let new = cached("a", "new", 3, 103);
        let p = plan(
            &mut planner,
            &config,
            &[old.clone(), done.clone(), new.clone()],
            at(1),
        );
        assert_eq!(p.gave_way, Some(ServiceKey::new("a", "theirs")));
        assert!(p.writes.is_empty(), "{:?}", given(&p));
        let p = plan(
            &mut planner,
            &config,
            &[old.clone(), done.clone(), new.clone()],
            at(500),
        );
        assert!(p.writes.is_empty() && p.gave_way.is_none());
        let p = plan(&mut planner, &config, &[old, done, new], at(601));
        assert_eq!(given(&p), [("a/new".to_string(), "10.0.0.3".to_string())]);
    }

    #[test]
    fn the_terms_list_counts_until_the_watch_has_caught_up() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.3")]);
        let mut planner = Planner::default();
        let listed = |ns: &str, name: &str, version: u64, address: &str| Listed {
            uid: format!("uid-{ns}-{name}"),
            version: Some(version),
            used: AddressUse {
                service: ServiceKey::new(ns, name),
                addresses: vec![address.parse().unwrap()],
                ports: vec![],
            },
        };
        // z/lagging was given .1 by the last holder at version 90; this
        // node's cache still shows it without. z/unseen (.2) it has not seen.
        planner.listed(
            vec![
                listed("z", "lagging", 90, "10.0.0.1"),
                listed("z", "unseen", 91, "10.0.0.2"),
            ],
            at(0),
        );
        let lagging = cached("z", "lagging", 1, 80);
        let one = cached("a", "one", 10, 100);
        let p = plan(
            &mut planner,
            &config,
            &[lagging.clone(), one.clone()],
            at(1),
        );
        assert_eq!(given(&p), [("a/one".to_string(), "10.0.0.3".to_string())]);
        // The watch shows z/lagging at 90, with its address.
        let caught_up = with_address(lagging, "10.0.0.1", 90);
        let p = plan(
            &mut planner,
            &config,
            &[caught_up.clone(), one.clone()],
            at(2),
        );
        assert_eq!(given(&p), [("a/one".to_string(), "10.0.0.3".to_string())]);
        // z/unseen counts for a minute at most.
        let p = plan(&mut planner, &config, &[caught_up, one], at(61));
        assert_eq!(given(&p), [("a/one".to_string(), "10.0.0.2".to_string())]);
    }

    #[test]
    fn an_overwrite_of_an_address_written_here_is_the_cloud_provider_too() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.4")]);
        let mut planner = Planner::default();
        let mine = cached("a", "mine", 1, 100);
        let p = plan(&mut planner, &config, std::slice::from_ref(&mine), at(0));
        planner.sending(&p.writes[0], at(0));
        planner.stored(&mine.input.uid, &["10.0.0.1".parse().unwrap()], at(0));
        let shown = with_address(mine.clone(), "10.0.0.1", 101);
        let new = cached("a", "new", 2, 102);
        // Its author copies the address into spec.loadBalancerIP: no sign.
        let mut copied = shown.clone();
        copied.allocator_made = true;
        copied.resource_version = "103".into();
        let p = plan(&mut planner, &config, &[copied, new.clone()], at(1));
        assert!(p.gave_way.is_none());
        assert_eq!(given(&p), [("a/new".to_string(), "10.0.0.2".to_string())]);
        // The cloud provider's retry writes its own choice over it.
        let mut overwritten = with_address(mine, "10.0.0.3", 104);
        overwritten.allocator_made = true;
        let p = plan(&mut planner, &config, &[overwritten, new], at(2));
        assert_eq!(p.gave_way, Some(ServiceKey::new("a", "mine")));
    }

    #[test]
    fn fenced_services_keep_their_addresses_and_nothing_is_written_unless_allocating() {
        let config = pools(&[("range-global", "10.0.0.1-10.0.0.1")]);
        let mut planner = Planner::default();
        let squatter = with_address(cached("a", "squat", 1, 100), "10.0.0.1", 100);
        let new = cached("a", "new", 2, 101);
        let services = [squatter, new];
        let class = LbClassRule::default();
        let p = planner.plan(&config, &services, &class, true, at(0));
        assert!(
            p.writes.is_empty(),
            "a fenced Service keeps its address: {:?}",
            given(&p)
        );
        let p = planner.plan(&config, &services, &class, false, at(0));
        assert!(p.writes.is_empty() && p.refused.is_empty());
        assert_eq!(p.usage[0].families[0].used, 1);
    }
}
