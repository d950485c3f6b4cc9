//! The node's side of announcing: which VIPs this kvip put on which
//! interface, adding and removing them as the plan says, and when each one's
//! next gratuitous ARP / NA is due (a burst at takeover, then every
//! `vip_arpRate`). Decisions come from the core; this only carries them out.

use crate::metrics;
use crate::net::{Announcer, NetError, Netlink, burst_schedule};
use kvip_core::packet::Claim;
use kvip_core::plan::InterfaceInfo;
use kvip_core::{Action, InterfaceAddress, plan};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

/// Another MAC claiming one of our VIPs on one of our interfaces.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The interface it was seen on.
    pub interface: String,
    /// The claim.
    pub claim: Claim,
}

/// The VIPs on this node and their announcements.
pub struct Vips {
    netlink: Netlink,
    announcers: BTreeMap<String, Announcer>,
    /// Interfaces whose frames are watched for conflicting claims.
    listening: BTreeSet<String>,
    conflicts_tx: mpsc::UnboundedSender<Conflict>,
    conflicts_rx: mpsc::UnboundedReceiver<Conflict>,
    owned: BTreeSet<InterfaceAddress>,
    schedules: BTreeMap<InterfaceAddress, Schedule>,
    arp_rate: Duration,
}

impl Vips {
    /// A wire with nothing on it yet.
    pub fn new(netlink: Netlink, arp_rate: Duration) -> Self {
        let (conflicts_tx, conflicts_rx) = mpsc::unbounded_channel();
        Self {
            netlink,
            announcers: BTreeMap::new(),
            listening: BTreeSet::new(),
            conflicts_tx,
            conflicts_rx,
            owned: BTreeSet::new(),
            schedules: BTreeMap::new(),
            arp_rate,
        }
    }

    /// The next claim by another MAC for one of the VIPs this node holds.
    pub async fn next_conflict(&mut self) -> Option<Conflict> {
        loop {
            let conflict = self.conflicts_rx.recv().await?;
            let ours = self
                .owned
                .iter()
                .any(|ia| ia.address == conflict.claim.ip && ia.interface == conflict.interface);
            if ours {
                return Some(conflict);
            }
        }
    }

    /// Starts watching `interface` for claims, once.
    async fn listen(&mut self, interface: &str) {
        if self.listening.contains(interface) {
            return;
        }
        let link = match self.netlink.link(interface).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(interface, error = %e, "cannot watch for address conflicts");
                return;
            }
        };
        match crate::net::watch::listen(link.index, link.mac) {
            Ok(mut claims) => {
                self.listening.insert(interface.to_string());
                let tx = self.conflicts_tx.clone();
                let interface = interface.to_string();
                tokio::spawn(async move {
                    while let Some(claim) = claims.recv().await {
                        if tx
                            .send(Conflict {
                                interface: interface.clone(),
                                claim,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(interface, error = %e, "cannot watch for address conflicts"),
        }
    }

    /// The node's interfaces and default-route interfaces (v4, v6).
    pub async fn interfaces(
        &self,
    ) -> Result<(Vec<InterfaceInfo>, Option<String>, Option<String>), NetError> {
        let interfaces = self.netlink.interfaces().await?;
        let (v4, v6) = self.netlink.default_route_interfaces().await?;
        Ok((interfaces, v4, v6))
    }

    /// Takes over addresses from `vips` already on an interface as host
    /// routes (left by an earlier kvip): they are ours to keep or remove.
    pub async fn adopt(
        &mut self,
        vips: &BTreeSet<IpAddr>,
    ) -> Result<Vec<InterfaceAddress>, NetError> {
        let mut adopted = Vec::new();
        for iface in self.netlink.interfaces().await? {
            for (address, prefix) in iface.addresses {
                let host = if address.is_ipv4() { 32 } else { 128 };
                if prefix == host && vips.contains(&address) {
                    self.listen(&iface.name).await;
                    let ia = InterfaceAddress {
                        interface: iface.name.clone(),
                        address,
                    };
                    self.owned.insert(ia.clone());
                    adopted.push(ia);
                }
            }
        }
        Ok(adopted)
    }

    /// Addresses this kvip has on its interfaces.
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
        for action in plan(desired, &self.owned) {
            match action {
                Action::Remove(ia) => {
                    match self.netlink.remove_address(&ia.interface, ia.address).await {
                        Ok(_) => {
                            tracing::info!(address = %ia.address, interface = %ia.interface, "VIP withdrawn");
                            self.owned.remove(&ia);
                            self.schedules.remove(&ia);
                        }
                        Err(e) => failed.push((ia, e)),
                    }
                }
                Action::Add(ia) => {
                    match self.netlink.add_address(&ia.interface, ia.address).await {
                        Ok(_) => {
                            self.listen(&ia.interface).await;
                            self.owned.insert(ia.clone());
                            self.schedules.insert(ia.clone(), Schedule::starting_now());
                            added.push(ia);
                        }
                        Err(e) => failed.push((ia, e)),
                    }
                }
            }
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
