//! The node's side of announcing: which VIPs this role put on which
//! interface, adding and removing them as the plan says, and when each one's
//! next gratuitous ARP / NA is due (a burst at takeover, then every
//! `vip_arpRate`). Decisions come from the core; this only carries them out.
//!
//! What is on the interfaces is the kernel's word, not ours: every reading
//! of the kernel's state ([`crate::net::kernel`]) is compared with what this
//! role added (its addresses carry its mark), and a VIP someone removed is
//! dropped from what we hold so the next pass adds it back and announces it.
//! Sockets follow their interface: an interface recreated under the same
//! name, or given a new MAC, gets new ones, and a link that comes back up
//! is announced again.

use crate::metrics;
use crate::net::kernel::Snapshot;
use crate::net::watch::{self, Listener};
use crate::net::{Announcer, LinkInfo, NetError, Netlink, burst_schedule};
use kvip_core::config::InterfaceChoice;
use kvip_core::guard::{ClaimGuard, Judgement};
use kvip_core::plan::InterfaceInfo;
use kvip_core::{Action, InterfaceAddress, Mono, plan};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use crate::net::watch::Conflict;

/// Claims waiting to be judged; beyond this they are dropped and counted.
const CLAIM_QUEUE: usize = 1024;

/// When an address's next announcement is due.
#[derive(Debug, Clone)]
struct Schedule {
    /// When the burst started (takeover).
    started: Instant,
    /// Index into the burst schedule; past its end, refreshes.
    step: usize,
    /// Next send.
    next: Instant,
}

impl Schedule {
    /// A burst that starts now (a takeover or a re-announce).
    fn starting_now() -> Self {
        let now = Instant::now();
        Schedule {
            started: now,
            step: 0,
            next: now,
        }
    }
}

/// The interfaces as a role places its addresses by: every interface and
/// address except the role's own VIPs, and the default-route interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementView {
    /// The interfaces.
    pub list: Vec<InterfaceInfo>,
    /// The IPv4 default route's interface.
    pub default_v4: Option<String>,
    /// The IPv6 default route's interface.
    pub default_v6: Option<String>,
}

impl PlacementView {
    /// For the core's placement rules, with the configured choice: a
    /// fallback (`vip_servicesinterface=auto` with `vip_interface`) takes the
    /// default route's place, as kube-vip falls back to `vip_interface`.
    pub fn interfaces<'a>(
        &'a self,
        choice: InterfaceChoice<'a>,
    ) -> kvip_core::placement::Interfaces<'a> {
        let fallback = match choice {
            InterfaceChoice::BySubnet { fallback } => fallback,
            InterfaceChoice::Named(_) => None,
        };
        kvip_core::placement::Interfaces {
            configured: choice.named(),
            list: &self.list,
            default_v4: fallback.or(self.default_v4.as_deref()),
            default_v6: fallback.or(self.default_v6.as_deref()),
        }
    }
}

/// The VIPs of one role on this node and their announcements.
pub struct Vips {
    netlink: Netlink,
    /// The mark (address protocol) of this role's addresses.
    protocol: u8,
    role: &'static str,
    kernel: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    /// Interfaces as the last reading had them.
    links: BTreeMap<String, LinkInfo>,
    /// Every MAC of this node: claims from them are our own.
    local_macs: BTreeSet<[u8; 6]>,
    announcers: BTreeMap<String, Announcer>,
    /// Interfaces whose frames are watched for conflicting claims.
    listeners: BTreeMap<String, Listener>,
    /// Interfaces whose listener could not be opened.
    listen_failed: BTreeSet<String>,
    conflicts_tx: mpsc::Sender<Conflict>,
    conflicts_rx: mpsc::Receiver<Conflict>,
    owned: BTreeSet<InterfaceAddress>,
    /// When each owned address was added (a reading taken before cannot show it).
    added_at: BTreeMap<InterfaceAddress, Instant>,
    schedules: BTreeMap<InterfaceAddress, Schedule>,
    guard: ClaimGuard,
    arp_rate: Duration,
    /// Addresses probed before their first take (or found in use), and the
    /// interface each is probed on: claims for them are reported too.
    probing: BTreeMap<IpAddr, String>,
}

impl Vips {
    /// A role's wire with nothing on it yet; `protocol` marks its addresses.
    pub fn new(
        netlink: Netlink,
        kernel: tokio::sync::watch::Receiver<Arc<Snapshot>>,
        protocol: u8,
        role: &'static str,
        arp_rate: Duration,
    ) -> Self {
        let (conflicts_tx, conflicts_rx) = mpsc::channel(CLAIM_QUEUE);
        let mut vips = Self {
            netlink,
            protocol,
            role,
            kernel,
            links: BTreeMap::new(),
            local_macs: BTreeSet::new(),
            announcers: BTreeMap::new(),
            listeners: BTreeMap::new(),
            listen_failed: BTreeSet::new(),
            conflicts_tx,
            conflicts_rx,
            owned: BTreeSet::new(),
            added_at: BTreeMap::new(),
            schedules: BTreeMap::new(),
            guard: ClaimGuard::default(),
            arp_rate,
            probing: BTreeMap::new(),
        };
        vips.sync();
        vips
    }

    /// A receiver of the kernel's state, for a role's loop to wait on
    /// (then it calls [`Vips::sync`]).
    pub fn kernel(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        let mut rx = self.kernel.clone();
        rx.mark_unchanged();
        rx
    }

    /// The interfaces as this role places addresses by, from the latest
    /// reading: without link-local addresses (no VIP is one) and without
    /// interfaces that have no other address and are neither `configured`
    /// nor a default route's (a pod's veth), so pods coming and going
    /// change nothing placement sees.
    pub fn placement_view(&self, configured: Option<&str>) -> PlacementView {
        let snapshot = self.kernel.borrow();
        let state = &snapshot.state;
        let mut list = state.without_marked(self.protocol);
        for interface in &mut list {
            interface
                .addresses
                .retain(|(ip, _)| !crate::net::links::is_link_local(*ip));
        }
        list.retain(|i| {
            !i.addresses.is_empty()
                || Some(i.name.as_str()) == configured
                || state.default_v4.as_deref() == Some(i.name.as_str())
                || state.default_v6.as_deref() == Some(i.name.as_str())
        });
        // What this role holds is its own, even before a reading shows the mark.
        for interface in &mut list {
            interface.addresses.retain(|(ip, len)| {
                *len != crate::net::links::host_prefix(*ip)
                    || !self.owned.contains(&InterfaceAddress {
                        interface: interface.name.clone(),
                        address: *ip,
                    })
            });
        }
        PlacementView {
            list,
            default_v4: state.default_v4.clone(),
            default_v6: state.default_v6.clone(),
        }
    }

    /// The MACs of this node's interfaces that could carry a VIP.
    pub fn announcing_macs(&self) -> BTreeSet<[u8; 6]> {
        self.kernel.borrow().state.announcing_macs()
    }

    /// Replaces conflict listeners that stopped (their socket failed), on
    /// the role's timer as well as on every change.
    pub fn check_listeners(&mut self) {
        if self.listeners.values().any(|l| !l.alive()) {
            self.listeners.retain(|_, l| l.alive());
            self.listen_where_held();
        }
    }

    /// Brings this role in step with the latest reading of the kernel.
    /// Returns true when one of its VIPs is gone from the kernel (removed by
    /// hand, by a network manager, with its interface, or by a link going
    /// down): it is no longer held, so the next apply adds it back.
    pub fn sync(&mut self) -> bool {
        let snapshot = self.kernel.borrow().clone();
        let state = &snapshot.state;
        self.local_macs = state.macs();

        // Announce again on a link that came back, was recreated or got a new MAC.
        let mut renewed: BTreeSet<String> = BTreeSet::new();
        for (name, link) in &state.links {
            if let Some(before) = self.links.get(name)
                && (before.index != link.index || before.mac != link.mac || (!before.up && link.up))
            {
                renewed.insert(name.clone());
            }
        }
        self.announcers.retain(|name, a| {
            state
                .links
                .get(name)
                .is_some_and(|l| a.is_for(l.index, l.mac))
        });
        self.listeners.retain(|name, l| {
            let keep = l.alive() && state.links.get(name).is_some_and(|k| k.index == l.index);
            if !keep {
                tracing::info!(interface = %name, "conflict listener replaced: its interface changed or its socket failed");
            }
            keep
        });
        self.links = state.links.clone();

        // Kernel truth: what this role holds must be on the interface.
        let marked = state.marked_by(self.protocol);
        let missing: Vec<InterfaceAddress> = self
            .owned
            .iter()
            .filter(|ia| !marked.contains(*ia))
            .filter(|ia| {
                self.added_at
                    .get(*ia)
                    .is_none_or(|at| *at <= snapshot.taken)
            })
            .cloned()
            .collect();
        for ia in &missing {
            self.forget(ia);
            // Its interface was renamed: the address is still ours, there.
            let moved = marked
                .iter()
                .find(|m| m.address == ia.address && !self.owned.contains(*m))
                .cloned();
            if let Some(moved) = moved {
                tracing::info!(address = %ia.address, from = %ia.interface, to = %moved.interface, "VIP's interface renamed: held there now");
                self.owned.insert(moved.clone());
                self.schedules.insert(moved, Schedule::starting_now());
                continue;
            }
            tracing::warn!(address = %ia.address, interface = %ia.interface, "VIP gone from the interface (removed by someone else, or with its link): adding it back");
            metrics::get().addresses_restored.inc();
        }
        for ia in self
            .owned
            .iter()
            .filter(|ia| renewed.contains(&ia.interface))
        {
            self.schedules.insert(ia.clone(), Schedule::starting_now());
        }
        self.listen_where_held();
        !missing.is_empty()
    }

    fn forget(&mut self, ia: &InterfaceAddress) {
        self.owned.remove(ia);
        self.schedules.remove(ia);
        self.added_at.remove(ia);
    }

    /// Opens a listener on every interface that holds one of our VIPs and
    /// has none, and says how many such interfaces have none working.
    fn listen_where_held(&mut self) {
        let interfaces: BTreeSet<String> = self
            .owned
            .iter()
            .map(|ia| ia.interface.clone())
            .chain(self.probing.values().cloned())
            .collect();
        for name in &interfaces {
            if self.listeners.contains_key(name) {
                continue;
            }
            let Some(link) = self.links.get(name) else {
                continue;
            };
            match watch::listen(link.index, name, self.conflicts_tx.clone()) {
                Ok(listener) => {
                    self.listen_failed.remove(name);
                    self.listeners.insert(name.clone(), listener);
                }
                Err(e) => {
                    if self.listen_failed.insert(name.clone()) {
                        tracing::warn!(interface = %name, error = %e, "cannot watch for address conflicts");
                    }
                }
            }
        }
        self.listen_failed.retain(|n| interfaces.contains(n));
        let down = interfaces
            .iter()
            .filter(|n| !self.listeners.get(*n).is_some_and(Listener::alive))
            .count();
        metrics::set_listeners_down(self.role, down);
    }

    /// The next claim by another host for one of the VIPs this role holds
    /// (or probes), heard on the interface that holds it; our own MACs never
    /// count.
    pub async fn next_conflict(&mut self) -> Option<Conflict> {
        loop {
            let conflict = self.conflicts_rx.recv().await?;
            if self.concerns_us(&conflict) {
                return Some(conflict);
            }
        }
    }

    /// [`Vips::next_conflict`] among the claims already heard, without waiting.
    pub fn try_next_conflict(&mut self) -> Option<Conflict> {
        while let Ok(conflict) = self.conflicts_rx.try_recv() {
            if self.concerns_us(&conflict) {
                return Some(conflict);
            }
        }
        None
    }

    fn concerns_us(&self, conflict: &Conflict) -> bool {
        if self.local_macs.contains(&conflict.claim.mac) {
            return false;
        }
        let ours = self.owned.contains(&InterfaceAddress {
            interface: conflict.interface.clone(),
            address: conflict.claim.ip,
        });
        ours || self.probing.get(&conflict.claim.ip) == Some(&conflict.interface)
    }

    /// Whether this role has `address` on an interface.
    pub fn holds(&self, address: IpAddr) -> bool {
        self.owned.iter().any(|ia| ia.address == address)
    }

    /// Sends one probe for `ia.address` on `ia.interface` (an ARP probe or
    /// a duplicate address detection solicitation) and listens there for
    /// answers; the claims heard come out of [`Vips::next_conflict`].
    pub async fn probe(&mut self, ia: &InterfaceAddress) {
        if self
            .probing
            .insert(ia.address, ia.interface.clone())
            .as_ref()
            != Some(&ia.interface)
        {
            self.listen_where_held();
        }
        let sent = match self.announcer(&ia.interface).await {
            Ok(a) => a.probe(ia.address),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            self.announcers.remove(&ia.interface);
            tracing::warn!(address = %ia.address, interface = %ia.interface, error = %e, "cannot probe the address");
        }
    }

    /// Stops listening for addresses no longer probed or in use (`keep`).
    pub fn keep_probing(&mut self, keep: impl Fn(IpAddr) -> bool) {
        let before = self.probing.len();
        self.probing.retain(|a, _| keep(*a));
        if self.probing.len() != before {
            self.listen_where_held();
        }
    }

    /// Records `conflict` and says what may be done about it (RFC 5227:
    /// one defence per address per 10 s; one frame is not convincing).
    pub fn judge(&mut self, conflict: &Conflict, kvip_node: bool, now: Mono) -> Judgement {
        self.guard
            .judge(conflict.claim.ip, conflict.claim.mac, kvip_node, now)
    }

    /// Defends the claimed address with a new burst, if the judgement allows.
    pub fn defend(&mut self, conflict: &Conflict, judgement: Judgement) {
        let outcome = if judgement.may_defend {
            self.reannounce(&InterfaceAddress {
                interface: conflict.interface.clone(),
                address: conflict.claim.ip,
            });
            "sent"
        } else {
            "suppressed"
        };
        metrics::get()
            .defences
            .get_or_create(&metrics::StateLabels {
                state: outcome.into(),
            })
            .inc();
    }

    /// Marks as this role's the unmarked host addresses in `ours` (address
    /// to the interface it belongs on) that are on that interface: copies an
    /// earlier kvip without marks left while this node held their Lease
    /// (`ours` holds only such addresses). Returns those now marked.
    pub async fn claim_unmarked(
        &mut self,
        ours: &BTreeMap<IpAddr, String>,
    ) -> Vec<InterfaceAddress> {
        let present: Vec<InterfaceAddress> = {
            let snapshot = self.kernel.borrow();
            let state = &snapshot.state;
            let marked: BTreeSet<&InterfaceAddress> = state.marked.values().flatten().collect();
            ours.iter()
                .map(|(address, interface)| InterfaceAddress {
                    interface: interface.clone(),
                    address: *address,
                })
                .filter(|ia| !marked.contains(ia))
                .filter(|ia| {
                    let host = if ia.address.is_ipv4() { 32 } else { 128 };
                    state.interfaces.iter().any(|i| {
                        i.name == ia.interface && i.addresses.contains(&(ia.address, host))
                    })
                })
                .collect()
        };
        let mut claimed = Vec::new();
        for ia in present {
            match self
                .netlink
                .mark_address(&ia.interface, ia.address, self.protocol)
                .await
            {
                Ok(()) => {
                    tracing::info!(address = %ia.address, interface = %ia.interface, "an unmarked copy of a VIP whose Lease this node holds (left by an earlier kvip): marked as kvip's and kept");
                    self.owned.insert(ia.clone());
                    self.added_at.insert(ia.clone(), Instant::now());
                    self.schedules.insert(ia.clone(), Schedule::starting_now());
                    claimed.push(ia);
                }
                Err(e) => {
                    tracing::warn!(address = %ia.address, interface = %ia.interface, error = %e, "cannot mark the VIP's unmarked copy")
                }
            }
        }
        claimed
    }

    /// Takes over addresses from `vips` that carry this role's mark (left by
    /// an earlier run): they are ours to keep or remove. Addresses with the
    /// mark that no VIP asks for any more (its Service was deleted or
    /// changed while kvip was down) are removed where `remove_stale` allows.
    /// Nothing else is touched, whatever interface it is on.
    pub async fn adopt(
        &mut self,
        vips: &BTreeSet<IpAddr>,
        remove_stale: &(dyn Fn(IpAddr) -> bool + Sync),
    ) -> Vec<InterfaceAddress> {
        let marked = self.kernel.borrow().state.marked_by(self.protocol);
        let (mut adopted, stale): (Vec<InterfaceAddress>, Vec<InterfaceAddress>) = marked
            .into_iter()
            .partition(|ia| vips.contains(&ia.address));
        for ia in &adopted {
            self.owned.insert(ia.clone());
            // Announced again at once, then refreshed like any other.
            self.schedules.insert(ia.clone(), Schedule::starting_now());
        }
        // Unmarked copies just marked as ours count too.
        let claimed: Vec<InterfaceAddress> = self
            .owned
            .iter()
            .filter(|ia| vips.contains(&ia.address) && !adopted.contains(ia))
            .cloned()
            .collect();
        adopted.extend(claimed);
        // Without marks, a host address may be anyone's: leave them all. An
        // instance that shares its mark with another (split by namespace or
        // class) cannot tell whose they are either.
        if self.netlink.marks() {
            for ia in stale.into_iter().filter(|ia| remove_stale(ia.address)) {
                match self.netlink.remove_address(&ia.interface, ia.address).await {
                    Ok(_) => {
                        tracing::info!(address = %ia.address, interface = %ia.interface, "removed a VIP an earlier run left, which no Service asks for now")
                    }
                    Err(e) => {
                        tracing::warn!(address = %ia.address, interface = %ia.interface, error = %e, "cannot remove a VIP an earlier run left")
                    }
                }
            }
        }
        self.listen_where_held();
        adopted
    }

    /// Addresses this role has on its interfaces.
    pub fn owned(&self) -> &BTreeSet<InterfaceAddress> {
        &self.owned
    }

    /// Brings the interfaces to `desired`: removals first, then additions,
    /// each new address announced at once. Returns the addresses added.
    pub async fn apply(
        &mut self,
        desired: &BTreeSet<InterfaceAddress>,
    ) -> (Vec<InterfaceAddress>, Vec<(InterfaceAddress, NetError)>) {
        let mut added = Vec::new();
        let mut failed = Vec::new();
        let actions = plan(desired, &self.owned);
        for action in &actions {
            match action {
                Action::Remove(ia) => {
                    match self.netlink.remove_address(&ia.interface, ia.address).await {
                        Ok(_) => {
                            tracing::info!(address = %ia.address, interface = %ia.interface, "VIP withdrawn");
                            self.forget(ia);
                        }
                        // The interface is gone, and the address with it.
                        Err(NetError::InterfaceNotFound { .. }) => self.forget(ia),
                        Err(e) => failed.push((ia.clone(), e)),
                    }
                }
                Action::Add(ia) => {
                    match self
                        .netlink
                        .add_address(&ia.interface, ia.address, self.protocol)
                        .await
                    {
                        Ok(_) => {
                            // A reading that starts after the kernel said yes has it.
                            self.owned.insert(ia.clone());
                            self.added_at.insert(ia.clone(), Instant::now());
                            self.schedules.insert(ia.clone(), Schedule::starting_now());
                            added.push(ia.clone());
                        }
                        Err(e) => failed.push((ia.clone(), e)),
                    }
                }
            }
        }
        if !actions.is_empty() {
            let owned = &self.owned;
            self.guard
                .retain(|ip| owned.iter().any(|ia| ia.address == ip));
            self.listen_where_held();
        }
        self.send_due().await;
        (added, failed)
    }

    /// Starts a new burst for `ia` (re-announce, e.g. after a conflict or adoption).
    pub fn reannounce(&mut self, ia: &InterfaceAddress) {
        if self.owned.contains(ia) {
            self.schedules.insert(ia.clone(), Schedule::starting_now());
        }
    }

    async fn announcer(&mut self, interface: &str) -> Result<&Announcer, NetError> {
        if !self.announcers.contains_key(interface) {
            let link = self.netlink.link(interface).await?;
            let announcer = Announcer::open(link.index, link.mac)?;
            self.announcers.insert(interface.to_string(), announcer);
        }
        self.announcers
            .get(interface)
            .ok_or_else(|| NetError::InterfaceNotFound {
                interface: interface.to_string(),
            })
    }

    /// Sends every announcement that is due; returns when the next one is.
    pub async fn send_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let due: Vec<InterfaceAddress> = self
            .schedules
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(ia, _)| ia.clone())
            .collect();
        for ia in due {
            let sent = match self.announcer(&ia.interface).await {
                Ok(a) => a.announce(ia.address),
                Err(e) => Err(e),
            };
            match sent {
                Ok(frames) => {
                    let family = if ia.address.is_ipv4() { "ipv4" } else { "ipv6" };
                    metrics::get()
                        .gratuitous_sent
                        .get_or_create(&metrics::FamilyLabels {
                            family: family.into(),
                        })
                        .inc_by(u64::try_from(frames).unwrap_or(0));
                }
                Err(e) => {
                    // A new socket next time: the interface may have changed under it.
                    self.announcers.remove(&ia.interface);
                    tracing::warn!(address = %ia.address, interface = %ia.interface, error = %e, "gratuitous announcement failed")
                }
            }
            if let Some(s) = self.schedules.get_mut(&ia) {
                s.step += 1;
                let burst = burst_schedule();
                s.next = match burst.get(s.step) {
                    Some(offset) => s.started + *offset,
                    None => now + self.arp_rate,
                };
            }
        }
        self.schedules.values().map(|s| s.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PlacementView {
        let iface = |name: &str, address: &str, len: u8| InterfaceInfo {
            name: name.to_string(),
            up: true,
            addresses: vec![(address.parse().expect("an IP"), len)],
        };
        PlacementView {
            list: vec![
                iface("eth0", "10.0.0.2", 24),
                iface("eth1", "10.1.0.2", 24),
                iface("eth2", "10.2.0.2", 24),
            ],
            default_v4: Some("eth2".to_string()),
            default_v6: None,
        }
    }

    /// `vip_servicesinterface=auto`: the interface whose subnet holds the
    /// address, else `vip_interface` (kube-vip's fallback), else the
    /// default route.
    #[test]
    fn auto_picks_by_subnet_then_vip_interface() {
        let view = view();
        let place = |choice: InterfaceChoice<'_>, address: &str| {
            view.interfaces(choice)
                .place(address.parse().expect("an IP"))
        };
        let auto = InterfaceChoice::BySubnet {
            fallback: Some("eth0"),
        };
        assert_eq!(place(auto, "10.1.0.50"), Ok("eth1".to_string()));
        assert_eq!(place(auto, "192.0.2.1"), Ok("eth0".to_string()));
        let automatic = InterfaceChoice::BySubnet { fallback: None };
        assert_eq!(place(automatic, "192.0.2.1"), Ok("eth2".to_string()));
        // A named interface is used whatever the address.
        assert_eq!(
            place(InterfaceChoice::Named("eth0"), "10.1.0.50"),
            Ok("eth0".to_string())
        );
    }
}
