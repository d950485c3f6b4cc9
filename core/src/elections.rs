//! The Leases one role campaigns for, stepped as one. The control-plane role
//! runs a single Lease, the Service role one per announcement group; both
//! go through this machine, so they share every rule after "which Leases,
//! and may this node hold them": pacing renewals to the write budget,
//! adoption after a restart, withdraw before release, yielding to or
//! defending against another node's claim, and what a change of announcer
//! is called.
//!
//! The daemon reads (the Lease cache, write results, claims on the wire),
//! calls [`Elections::step`], and carries out the [`Round`]: writes now,
//! addresses to announce, and releases only once the withdraw they follow
//! has succeeded.

use crate::assess::Assessment;
use crate::campaign::{Campaign, Notice, Pace, pace_for};
use crate::election::{Decision, ElectionError, Elector, Mono, Observed, WallTime, WriteResult};
use crate::service::{ServiceKey, TrafficPolicy};
use crate::sharing::{AnnouncementGroup, LeaseKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// The part of the write budget (`kvip_api_qps`) Lease renewals may take;
/// beyond it renewals spread out and terms stretch.
pub const RENEWAL_SHARE: f64 = 0.8;

/// Renewals of Leases this node announces fall due on this grid, so a node
/// holding hundreds renews them in a few wakes a second rather than one
/// wake each. A renewal is at most this late, far inside its renew deadline;
/// takeovers and the withdraw at the end of a term are never rounded.
pub const RENEWAL_GRID: Duration = Duration::from_millis(100);

/// `wait` from `now`, rounded up so that it ends on [`RENEWAL_GRID`].
pub fn on_grid(now: Mono, wait: Duration) -> Duration {
    let grid = RENEWAL_GRID.as_nanos();
    let end = (now.0 + wait).as_nanos();
    let rounded = end.div_ceil(grid) * grid;
    let extra = u64::try_from(rounded - end).unwrap_or(0);
    wait + Duration::from_nanos(extra)
}

/// The Lease that elects `group`: its own, or with `svc_election=false`
/// kube-vip's global Services Lease (`global`) — unless the group holds a
/// Local-policy Service (`local`), which must follow its pods and so keeps
/// its own Lease.
pub fn electing_lease(
    group: &AnnouncementGroup,
    local: bool,
    svc_election: bool,
    global: &LeaseKey,
) -> LeaseKey {
    if svc_election || local {
        group.lease.clone()
    } else {
        global.clone()
    }
}

/// What each Lease elects, seen from `node`: the groups of `assessment` by
/// [`electing_lease`], with `node` a candidate where a group lists it,
/// unless it is `leaving` (shutting down).
pub fn ballots(
    assessment: &Assessment,
    node: &str,
    svc_election: bool,
    global: &LeaseKey,
    leaving: bool,
) -> BTreeMap<LeaseKey, Ballot> {
    let local: BTreeSet<&ServiceKey> = assessment
        .views
        .iter()
        .filter(|v| v.policy == TrafficPolicy::Local)
        .map(|v| &v.key)
        .collect();
    let mut out: BTreeMap<LeaseKey, Ballot> = BTreeMap::new();
    for g in &assessment.groups {
        let is_local = g.services.iter().any(|s| local.contains(s));
        let lease = electing_lease(g, is_local, svc_election, global);
        // kube-vip elects each Service on its own Lease; the global Lease
        // stands for all of them.
        let companions = if lease == g.lease {
            companions(assessment, g, &lease)
        } else {
            BTreeSet::new()
        };
        let ballot = out.entry(lease).or_default();
        ballot.addresses.extend(g.addresses.iter().copied());
        ballot.services.extend(g.services.iter().cloned());
        ballot.companions.extend(companions);
        ballot.candidate |= g.candidates.contains(node) && !leaving;
    }
    out
}

/// The Leases of the Services of `group`'s namespace naming one of its
/// addresses, but `lease`, whether kvip serves them or leaves them pending
/// (kube-vip elects them all the same); see [`Ballot::companions`]. Not
/// another namespace's: a Service author there could hold its Lease and so
/// keep this address down.
pub fn companions(
    assessment: &Assessment,
    group: &AnnouncementGroup,
    lease: &LeaseKey,
) -> BTreeSet<LeaseKey> {
    let namespaces: BTreeSet<&str> = group
        .services
        .iter()
        .map(|s| s.namespace.as_str())
        .collect();
    assessment
        .views
        .iter()
        .filter(|v| namespaces.contains(v.key.namespace.as_str()))
        .filter(|v| v.addresses.iter().any(|a| group.addresses.contains(a)))
        .map(|v| v.lease_key())
        .filter(|k| k != lease)
        .collect()
}

/// What one Lease elects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ballot {
    /// The addresses its holder announces.
    pub addresses: BTreeSet<IpAddr>,
    /// The Services those addresses serve (none for the control plane).
    pub services: BTreeSet<ServiceKey>,
    /// Whether this node may hold it now.
    pub candidate: bool,
    /// The Leases of the other Services naming its addresses, pending
    /// ones included: kube-vip elects each Service on its own Lease. The
    /// holder announces nothing while another daemon than kvip holds one;
    /// while some node runs no kvip (see [`Elections::set_peers`]) it also
    /// takes each as it comes free and announces only holding them all, so
    /// kube-vip and kvip never announce one address from two nodes. Other
    /// kvip nodes never take them.
    pub companions: BTreeSet<LeaseKey>,
}

#[derive(Debug, Clone)]
struct Election {
    campaign: Campaign,
    ballot: Ballot,
    /// Still asked for by the last [`Elections::want`].
    wanted: bool,
    /// A Lease that replaced this one for its addresses (a shared address's
    /// first Service was deleted), and when: while this node takes it, this
    /// one stays announced, so the address never leaves the node.
    successor: Option<(LeaseKey, Option<Mono>)>,
    /// This Lease replaced one another node holds: leave it to that node for
    /// one lease duration (from the first step), unless it is taken sooner.
    defer_to_holder: Option<Option<Mono>>,
    /// A companion of this Lease's ballot (see [`Ballot::companions`]): it
    /// elects nothing itself and is wanted only by that Lease's holder.
    companion_of: Option<LeaseKey>,
    /// Since when this Lease, held, waits to take a free companion before
    /// it first announces: one lease duration at most (a companion kvip
    /// cannot write must not keep the address down).
    companions_since: Option<Mono>,
}

/// A change in what this node announces for one Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The Lease.
    pub lease: LeaseKey,
    /// True: this node started announcing; false: it withdrew.
    pub announcing: bool,
    /// Why it withdrew: `lease_lost`, or the role's reason for no longer
    /// being a candidate; empty when it started announcing.
    pub why: &'static str,
    /// What the Lease elects.
    pub ballot: Ballot,
}

/// What one step decided.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Writes to send now: takeovers and renewals.
    pub writes: Vec<(LeaseKey, Decision)>,
    /// Releases, to send only after the withdraw this round asks for.
    pub releases: Vec<(LeaseKey, Decision)>,
    /// The addresses this node announces.
    pub addresses: BTreeSet<IpAddr>,
    /// The Services whose Lease this node announces.
    pub services: BTreeSet<ServiceKey>,
    /// Changes of announcer, in Lease order.
    pub transitions: Vec<Transition>,
    /// The renewal pace changed its stretch: how many Leases this node
    /// holds, and the new pace.
    pub paced: Option<(usize, Pace)>,
    /// Step again within this long at the latest.
    pub next: Duration,
}

/// What to do about another MAC claiming one of our addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// No Lease of ours elects the address.
    NotOurs,
    /// Our hold is unconfirmed (an outage or an adoption): the claimant may
    /// hold the Lease now, so this node stopped announcing it.
    Yielded(LeaseKey),
    /// Our Lease is freshly renewed: the claimant is wrong; announce again.
    Defend(LeaseKey),
}

/// Every Lease a role campaigns for.
#[derive(Debug, Clone)]
pub struct Elections {
    /// A template for new elections: identity and timings, checked once.
    template: Elector,
    lease_duration: Duration,
    retry_period: Duration,
    /// Why a Lease is withdrawn when this node is no longer a candidate.
    not_candidate: &'static str,
    /// The write budget, in writes a second.
    qps: u32,
    pace: Pace,
    by_lease: BTreeMap<LeaseKey, Election>,
    /// Addresses found on the interface at start-up, until the next step
    /// has seen the Leases: (addresses, adopt until).
    adopting: Option<(BTreeSet<IpAddr>, Mono)>,
    /// Nodes running a live kvip instance: a companion Lease they hold
    /// does not hold back the announcement (they give it up).
    peers: BTreeSet<String>,
    /// Some node runs no live kvip instance, so another daemon may take a
    /// companion: holders take them (see [`Ballot::companions`]).
    mixed: bool,
}

impl Elections {
    /// No Leases yet, for `identity` with client-go's three timings and a
    /// write budget of `qps`; `not_candidate` names a withdrawal because this
    /// node may no longer hold a Lease (a metric label and log field).
    pub fn new(
        identity: impl Into<String>,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
        qps: u32,
        not_candidate: &'static str,
    ) -> Result<Self, ElectionError> {
        Ok(Self {
            template: Elector::new(identity, lease_duration, renew_deadline, retry_period)?,
            lease_duration,
            retry_period,
            not_candidate,
            qps,
            pace: Pace {
                stretch: 1,
                renew_every: Duration::ZERO,
            },
            by_lease: BTreeMap::new(),
            adopting: None,
            peers: BTreeSet::new(),
            mixed: false,
        })
    }

    /// The node these elections run for.
    pub fn identity(&self) -> &str {
        self.template.identity()
    }

    /// Sets what each Lease elects. A Lease no longer asked for stops being
    /// a candidate and is kept until it is withdrawn and released.
    ///
    /// A new Lease that elects addresses an old one elected (the group's
    /// first Service was deleted) is a handover, so the addresses stay
    /// where they are: the node holding the old Lease takes the new one
    /// and announces through the old one until it has; the others leave
    /// the new Lease to it for one lease duration.
    pub fn want(&mut self, wanted: &BTreeMap<LeaseKey, Ballot>) {
        let me = self.template.identity().to_string();
        for (key, e) in &mut self.by_lease {
            if !wanted.contains_key(key) {
                e.wanted = false;
                e.ballot.candidate = false;
                e.companion_of = None;
            }
        }
        for (key, ballot) in wanted {
            // A companion watched until now (another member's Lease)
            // becoming the group's Lease is a handover as much as a new one.
            let promoted = self
                .by_lease
                .get(key)
                .is_some_and(|e| e.companion_of.is_some() && !e.campaign.names(&me));
            if !self.by_lease.contains_key(key) || promoted {
                let replaced = self.by_lease.iter_mut().find(|(k, old)| {
                    *k != key && !old.wanted && !old.ballot.addresses.is_disjoint(&ballot.addresses)
                });
                let mut defer_to_holder = None;
                if let Some((_, old)) = replaced {
                    match old.campaign.elector().holder() {
                        Some(holder) if holder == me => {
                            old.successor = Some((key.clone(), None));
                        }
                        Some(_) => defer_to_holder = Some(None),
                        None => {}
                    }
                }
                match self.by_lease.get_mut(key) {
                    Some(e) => e.defer_to_holder = defer_to_holder,
                    None => {
                        let e = self.election(defer_to_holder);
                        self.by_lease.insert(key.clone(), e);
                    }
                }
            }
            if let Some(e) = self.by_lease.get_mut(key) {
                e.wanted = true;
                e.ballot.clone_from(ballot);
                e.companion_of = None;
            }
        }
        for (key, ballot) in wanted {
            for companion in &ballot.companions {
                if wanted.contains_key(companion) {
                    continue;
                }
                let template = self.election(None);
                let e = self.by_lease.entry(companion.clone()).or_insert(template);
                e.wanted = true;
                e.ballot = Ballot::default();
                e.companion_of = Some(key.clone());
            }
        }
    }

    fn election(&self, defer_to_holder: Option<Option<Mono>>) -> Election {
        Election {
            campaign: Campaign::new(self.template.clone()),
            ballot: Ballot::default(),
            wanted: true,
            successor: None,
            defer_to_holder,
            companion_of: None,
            companions_since: None,
        }
    }

    /// The nodes running a live kvip instance now, and whether some node
    /// runs none (`mixed`; see [`Ballot::companions`]).
    pub fn set_peers(&mut self, peers: BTreeSet<String>, mixed: bool) {
        self.peers = peers;
        self.mixed = mixed;
    }

    /// The Leases this node still announces through while it takes their
    /// successor (see [`Elections::want`]), at `now`.
    fn handing_over(&mut self, now: Mono) -> BTreeSet<LeaseKey> {
        let me = self.template.identity();
        let mut out = BTreeSet::new();
        for (key, e) in &self.by_lease {
            let Some((next, since)) = &e.successor else {
                continue;
            };
            let within = since.is_none_or(|s| now.since(s) < self.lease_duration);
            let taking = self.by_lease.get(next).is_some_and(|n| {
                n.wanted
                    && n.ballot.candidate
                    && !n.campaign.announcing()
                    && n.campaign.elector().holder().is_none_or(|h| h == me)
            });
            if !e.wanted && e.campaign.announcing() && within && taking {
                out.insert(key.clone());
            }
        }
        for (key, e) in &mut self.by_lease {
            match &mut e.successor {
                Some((_, since)) if out.contains(key) => {
                    since.get_or_insert(now);
                }
                Some(_) => e.successor = None,
                None => {}
            }
        }
        out
    }

    /// The Leases this node holds but must not announce through: another
    /// daemon than kvip (a node with no live kvip instance, kube-vip during
    /// a migration) holds one of their companions and announces the address
    /// for its Service.
    /// [`Elections::held_back`] with why: for each Lease held back, a
    /// companion and the node that holds it. A holder whose term ran out
    /// (it died) holds nothing back: this node takes its Lease now.
    fn held_back_by(&self, now: Mono) -> BTreeMap<LeaseKey, (LeaseKey, String)> {
        let me = self.identity();
        let mut out = BTreeMap::new();
        for (key, e) in &self.by_lease {
            let Some(primary) = &e.companion_of else {
                continue;
            };
            let elector = e.campaign.elector();
            let holder = match elector.held_by_other(now) {
                // Who wrote it last: kvip stamps its writes; a Lease no kvip
                // ever stamped is judged by whether its holder runs kvip.
                Some(_) => elector
                    .record()
                    .and_then(|r| r.foreign_holder(|h| self.peers.contains(h)))
                    .map(str::to_string),
                // While another daemon may take it, a companion counts only
                // once it is this node's before the address is first
                // announced (a daemon that just freed it may still answer
                // for it for a moment), for one lease duration at most. An
                // address announced already stays while it is taken.
                None if self.mixed && !e.campaign.names(me) => {
                    let waits = self.by_lease.get(primary).is_some_and(|p| {
                        !p.campaign.announcing()
                            && p.companions_since
                                .is_none_or(|since| now < since.after(self.lease_duration))
                    });
                    waits.then(String::new)
                }
                None => None,
            };
            if let Some(holder) = holder {
                out.entry(primary.clone())
                    .or_insert_with(|| (key.clone(), holder));
            }
        }
        out
    }

    /// The Leases of this node held back at `now` (see [`Ballot::companions`]):
    /// for each, a companion and the node (running no kvip) that holds it.
    pub fn held_back_at(&self, now: Mono) -> BTreeMap<LeaseKey, (LeaseKey, String)> {
        self.held_back_by(now)
            .into_iter()
            .filter(|(k, _)| {
                self.by_lease.get(k).is_some_and(|e| {
                    e.wanted && e.ballot.candidate && e.campaign.names(self.identity())
                })
            })
            .collect()
    }

    /// Addresses an earlier run of this node left on the interface: the
    /// Leases electing them are announced until `until` if they still name
    /// this node (a restart, not a takeover); applied at the next step.
    pub fn adopt(&mut self, found: BTreeSet<IpAddr>, until: Mono) {
        self.adopting = Some((found, until));
    }

    /// The Leases these elections run.
    pub fn leases(&self) -> impl Iterator<Item = &LeaseKey> {
        self.by_lease.keys()
    }

    /// The campaign for `lease`.
    pub fn campaign(&self, lease: &LeaseKey) -> Option<&Campaign> {
        self.by_lease.get(lease).map(|e| &e.campaign)
    }

    /// What `lease` elects.
    pub fn ballot(&self, lease: &LeaseKey) -> Option<&Ballot> {
        self.by_lease.get(lease).map(|e| &e.ballot)
    }

    /// Whether any Lease still names this node (a shutdown waits for the releases).
    pub fn any_named(&self) -> bool {
        let me = self.identity();
        self.by_lease.values().any(|e| e.campaign.names(me))
    }

    /// One step at `now`: `see` gives what the cache holds of a Lease and
    /// when that version was first seen; `blind` is when other holders'
    /// terms restart after this node could not see them renew.
    pub fn step(
        &mut self,
        now: Mono,
        wall: WallTime,
        blind: Option<Mono>,
        mut see: impl FnMut(&LeaseKey) -> (Observed, Mono),
    ) -> Round {
        let mut round = Round {
            next: on_grid(now, self.retry_period),
            ..Round::default()
        };
        let me = self.template.identity().to_string();
        // Kept until withdrawn and released: a release that did not go is
        // sent again while the Lease still names this node.
        self.by_lease.retain(|_, e| {
            e.wanted || e.campaign.holds(now) || e.campaign.announcing() || e.campaign.names(&me)
        });
        let held = self
            .by_lease
            .values()
            .filter(|e| e.campaign.names(&me))
            .count();
        let pace = pace_for(
            held,
            self.retry_period,
            self.lease_duration,
            self.qps,
            RENEWAL_SHARE,
        );
        if pace.stretch != self.pace.stretch {
            round.paced = Some((held, pace));
        }
        self.pace = pace;
        let adopting = self.adopting.take();
        let handing_over = self.handing_over(now);
        // A ballot's Leases first, then its companions: this node wants a
        // companion while it holds the Lease it belongs to.
        let mut order: Vec<(bool, LeaseKey)> = self
            .by_lease
            .iter()
            .map(|(key, e)| (e.companion_of.is_some(), key.clone()))
            .collect();
        order.sort();
        let adopted = |e: &Election| {
            adopting
                .as_ref()
                .is_some_and(|(found, _)| !found.is_disjoint(&e.ballot.addresses))
        };
        for (_, key) in &order {
            let (holding, adopt) = match self
                .by_lease
                .get(key)
                .and_then(|e| e.companion_of.as_ref())
                .and_then(|p| self.by_lease.get(p))
            {
                Some(p) => (
                    self.mixed && p.wanted && p.ballot.candidate && p.campaign.names(&me),
                    adopted(p),
                ),
                None => (false, false),
            };
            let Some(e) = self.by_lease.get_mut(key) else {
                continue;
            };
            let (observed, seen_at) = see(key);
            e.campaign.observe(observed, seen_at);
            if let Some(b) = blind {
                e.campaign.restart_term(b);
            }
            let is_companion = e.companion_of.is_some();
            if let Some((found, until)) = &adopting
                && (adopt || !found.is_disjoint(&e.ballot.addresses))
            {
                e.campaign.adopt(&me, *until);
            }
            e.campaign.set_pace(pace);
            let renewing = e.campaign.names(&me);
            let mut candidate = if is_companion {
                holding
            } else {
                e.ballot.candidate || handing_over.contains(key)
            };
            if let Some(until) = &mut e.defer_to_holder {
                let until = *until.get_or_insert(now.after(self.lease_duration));
                if now < until && e.campaign.elector().holder().is_none() {
                    candidate = false;
                    round.next = round.next.min(until.since(now));
                } else {
                    e.defer_to_holder = None;
                }
            }
            match e.campaign.decide(now, wall, candidate) {
                Decision::Wait(d) if renewing => round.next = round.next.min(on_grid(now, d)),
                Decision::Wait(d) => round.next = round.next.min(d),
                d @ Decision::Release { .. } => round.releases.push((key.clone(), d)),
                d => round.writes.push((key.clone(), d)),
            }
        }
        // Lease held, not announced yet, with a companion still to take.
        let taking: BTreeSet<LeaseKey> = self
            .by_lease
            .values()
            .filter(|e| {
                self.mixed
                    && !e.campaign.names(&me)
                    && e.campaign.elector().held_by_other(now).is_none()
            })
            .filter_map(|e| e.companion_of.clone())
            .collect();
        for (key, e) in &mut self.by_lease {
            if taking.contains(key) && !e.campaign.announcing() {
                e.companions_since.get_or_insert(now);
            } else {
                e.companions_since = None;
            }
        }
        let held_back: BTreeSet<LeaseKey> = self.held_back_by(now).into_keys().collect();
        for (key, e) in &mut self.by_lease {
            let candidate = e.ballot.candidate || handing_over.contains(key);
            let announce = e.companion_of.is_none()
                && !held_back.contains(key)
                && e.campaign.may_announce(now, candidate);
            if announce {
                round.addresses.extend(e.ballot.addresses.iter().copied());
                round.services.extend(e.ballot.services.iter().cloned());
            }
            if let Some(announcing) = e.campaign.transition(announce) {
                let why = match (announcing, candidate) {
                    (true, _) => "",
                    (false, true) if held_back.contains(key) => "foreign_holder",
                    (false, true) => "lease_lost",
                    (false, false) if e.companion_of.is_some() => "companion",
                    (false, false) => self.not_candidate,
                };
                round.transitions.push(Transition {
                    lease: key.clone(),
                    announcing,
                    why,
                    ballot: e.ballot.clone(),
                });
            }
            if let Some(until) = e.campaign.adoption_ends(now) {
                round.next = round.next.min(until.since(now));
            }
            // Withdraw the moment the term runs out unless a renewal lands first.
            if announce
                && let Some(deadline) = e.campaign.elector().announce_deadline()
                && now < deadline
            {
                round.next = round.next.min(deadline.since(now));
            }
        }
        round
    }

    /// Records how the write to `lease` ended; it left at `sent`.
    pub fn finished(
        &mut self,
        lease: &LeaseKey,
        result: WriteResult,
        sent: Mono,
        now: Mono,
    ) -> Option<Notice> {
        let e = self.by_lease.get_mut(lease)?;
        e.campaign.sent(sent);
        e.campaign.finished(result, now)
    }

    /// Takes the releases out of `round` that may go now: a release follows
    /// its withdraw, so a Lease whose addresses are still `up` on an
    /// interface (the removal failed) is held back and asked again at the
    /// next step. Returns (to send, held back).
    pub fn releasable(
        &mut self,
        round: &mut Round,
        up: &BTreeSet<IpAddr>,
        now: Mono,
    ) -> (Vec<(LeaseKey, Decision)>, Vec<LeaseKey>) {
        let mut send = Vec::new();
        let mut held = Vec::new();
        // An address another Lease announces now (a handover) is not this one's to withdraw.
        let up: BTreeSet<IpAddr> = up.difference(&round.addresses).copied().collect();
        for (key, decision) in std::mem::take(&mut round.releases) {
            // A companion goes with the addresses of the Lease it belongs to.
            let judged = self.by_lease.get(&key).map(|e| match &e.companion_of {
                Some(primary) => self.by_lease.get(primary).unwrap_or(e),
                None => e,
            });
            let still_up = judged.is_some_and(|e| !e.ballot.addresses.is_disjoint(&up));
            if still_up {
                self.finished(&key, WriteResult::NotSent, now, now);
                held.push(key);
            } else {
                send.push((key, decision));
            }
        }
        (send, held)
    }

    /// Whether `result` for `lease` changes nothing this node announces: a
    /// renewal of a Lease it announces that the API server stored. The
    /// caller need not step again for it.
    pub fn quiet(&self, lease: &LeaseKey, result: &WriteResult) -> bool {
        matches!(result, WriteResult::Ok { .. })
            && self.by_lease.get(lease).is_some_and(|e| {
                (e.campaign.announcing() || e.companion_of.is_some())
                    && e.campaign.names(self.identity())
            })
    }

    /// The Lease that elects `address`, if one of ours does.
    pub fn lease_of(&self, address: IpAddr) -> Option<&LeaseKey> {
        self.by_lease
            .iter()
            .find(|(_, e)| e.ballot.addresses.contains(&address))
            .map(|(key, _)| key)
    }

    /// Another MAC claims `address` (design §7); `convincing` as for
    /// [`Campaign::yield_to_claim`].
    pub fn claim(&mut self, address: IpAddr, now: Mono, convincing: bool) -> ClaimAnswer {
        let Some((key, e)) = self
            .by_lease
            .iter_mut()
            .find(|(_, e)| e.ballot.addresses.contains(&address))
        else {
            return ClaimAnswer::NotOurs;
        };
        if e.campaign.yield_to_claim(now, convincing) {
            ClaimAnswer::Yielded(key.clone())
        } else {
            ClaimAnswer::Defend(key.clone())
        }
    }

    /// How long this node wanted the Lease electing `address` before it
    /// announced it, once (takeover latency).
    pub fn take_wanting_since(&mut self, address: IpAddr, now: Mono) -> Option<Duration> {
        self.by_lease
            .values_mut()
            .find(|e| e.ballot.addresses.contains(&address))
            .and_then(|e| e.campaign.take_wanting_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::LeaseRecord;
    use crate::testing::SimLease;

    const SEC: Duration = Duration::from_secs(1);

    fn key(name: &str) -> LeaseKey {
        LeaseKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn ballot(last: u8, candidate: bool) -> Ballot {
        Ballot {
            addresses: BTreeSet::from([ip(last)]),
            services: BTreeSet::from([ServiceKey {
                namespace: "ns".into(),
                name: format!("svc-{last}"),
            }]),
            candidate,
            companions: BTreeSet::new(),
        }
    }

    fn elections(node: &str) -> Elections {
        Elections::new(node, 5 * SEC, 3 * SEC, SEC, 50, "no_longer_candidate").unwrap()
    }

    /// Steps `e` at `now` against `leases`, writing what it asks at once.
    fn run(e: &mut Elections, leases: &mut BTreeMap<LeaseKey, SimLease>, now: Mono) -> Round {
        let round = e.step(now, WallTime(now.0.as_micros() as i64), None, |k| {
            (leases.entry(k.clone()).or_default().snapshot(), now)
        });
        for (k, d) in round.writes.iter().chain(&round.releases) {
            let result = leases
                .entry(k.clone())
                .or_default()
                .store(d)
                .unwrap_or(WriteResult::Error);
            e.finished(k, result, now, now);
        }
        round
    }

    #[test]
    fn a_lease_taken_is_announced_and_a_lease_no_longer_wanted_is_withdrawn_then_released() {
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        e.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        let first = run(&mut e, &mut leases, Mono(SEC));
        assert_eq!(first.writes.len(), 1, "the free Lease is taken");
        assert!(
            first.addresses.is_empty(),
            "nothing is announced before the write"
        );
        let second = run(&mut e, &mut leases, Mono(SEC + SEC / 10));
        assert_eq!(second.addresses, BTreeSet::from([ip(1)]));
        assert_eq!(second.transitions.len(), 1);
        assert!(second.transitions[0].announcing);

        e.want(&BTreeMap::new());
        let third = run(&mut e, &mut leases, Mono(2 * SEC));
        assert!(third.addresses.is_empty(), "withdrawn at once");
        assert_eq!(third.releases.len(), 1, "and released after");
        assert_eq!(third.transitions[0].why, "no_longer_candidate");
        assert!(!e.any_named());
        let fourth = run(&mut e, &mut leases, Mono(3 * SEC));
        assert_eq!(e.leases().count(), 0, "a released Lease is forgotten");
        assert!(fourth.writes.is_empty() && fourth.releases.is_empty());
    }

    #[test]
    fn renewals_fall_due_together_on_the_grid_and_a_stored_renewal_is_quiet() {
        assert_eq!(on_grid(Mono(SEC), SEC), SEC);
        assert_eq!(
            on_grid(Mono(SEC + Duration::from_millis(30)), SEC),
            SEC + Duration::from_millis(70)
        );
        let ms = |m: u64| Mono(Duration::from_millis(m));
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        // Taken 30 ms apart: their renewals fall due 30 ms apart.
        e.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        run(&mut e, &mut leases, ms(1010));
        e.want(&BTreeMap::from([
            (key("a"), ballot(1, true)),
            (key("b"), ballot(2, true)),
        ]));
        run(&mut e, &mut leases, ms(1040));
        let r = run(&mut e, &mut leases, ms(1050));
        assert_eq!(r.addresses.len(), 2, "both announced");
        let version = |l: &BTreeMap<LeaseKey, SimLease>, k| l[&key(k)].last_version;
        assert_eq!((version(&leases, "a"), version(&leases, "b")), (1, 1));
        let stored = WriteResult::Ok {
            record: leases[&key("a")].snapshot().record.unwrap(),
            resource_version: "1".into(),
        };
        assert!(e.quiet(&key("a"), &stored), "a renewal stored is quiet");
        assert!(!e.quiet(&key("a"), &WriteResult::Conflict));
        assert!(!e.quiet(&key("zz"), &stored), "not ours");
        let due = ms(1050).after(r.next);
        assert_eq!(due, ms(2100), "woken on the grid, after both are due");
        run(&mut e, &mut leases, due);
        assert_eq!(
            (version(&leases, "a"), version(&leases, "b")),
            (2, 2),
            "both renewed in one wake"
        );
    }

    /// Both nodes now want `next` for the address `me` announces (from 1.1
    /// s): `other` leaves it to `me`, which never withdraws the address.
    fn hand_over(
        me: &mut Elections,
        other: &mut Elections,
        leases: &mut BTreeMap<LeaseKey, SimLease>,
        next: &BTreeMap<LeaseKey, Ballot>,
    ) {
        let ms = |m: u64| Mono(Duration::from_millis(m));
        other.want(next);
        me.want(next);
        let r = run(other, leases, ms(1200));
        assert!(
            r.writes.is_empty(),
            "the other node leaves the new Lease to the holder"
        );
        for (i, t) in [1210, 1300, 1400, 1500].into_iter().enumerate() {
            let r = run(me, leases, ms(t));
            assert_eq!(
                r.addresses,
                BTreeSet::from([ip(1)]),
                "step {i}: never withdrawn"
            );
            run(other, leases, ms(t + 5));
        }
    }

    #[test]
    fn a_new_lease_for_the_same_address_is_handed_over_without_a_gap() {
        let ms = |m: u64| Mono(Duration::from_millis(m));
        let mut me = elections("me");
        let mut other = elections("other");
        let mut leases = BTreeMap::new();
        let shared = |candidate| Ballot {
            addresses: BTreeSet::from([ip(1)]),
            services: BTreeSet::new(),
            candidate,
            companions: BTreeSet::new(),
        };
        me.want(&BTreeMap::from([(key("kubevip-first"), shared(true))]));
        other.want(&BTreeMap::from([(key("kubevip-first"), shared(true))]));
        run(&mut me, &mut leases, ms(1000));
        run(&mut other, &mut leases, ms(1010));
        assert_eq!(
            run(&mut me, &mut leases, ms(1100)).addresses,
            BTreeSet::from([ip(1)])
        );

        // The group's first Service is deleted: the next one's Lease elects it.
        let next = BTreeMap::from([(key("kubevip-second"), shared(true))]);
        hand_over(&mut me, &mut other, &mut leases, &next);
        assert!(
            leases[&key("kubevip-second")]
                .snapshot()
                .record
                .unwrap()
                .holder()
                == Some("me")
        );
        assert!(
            !me.leases().any(|k| k == &key("kubevip-first")),
            "the old Lease is released and forgotten"
        );
        let r = run(&mut other, &mut leases, ms(1600));
        assert!(r.writes.is_empty() && r.addresses.is_empty());

        // Had the holder gone, the other node takes the new Lease after one lease duration.
        let mut late = elections("late");
        late.want(&BTreeMap::from([(key("x"), shared(true))]));
        let mut gone = BTreeMap::from([(key("x"), leases[&key("kubevip-second")].clone())]);
        run(&mut late, &mut gone, ms(2000));
        late.want(&BTreeMap::from([(key("y"), shared(true))]));
        assert!(run(&mut late, &mut gone, ms(2100)).writes.is_empty());
        assert_eq!(run(&mut late, &mut gone, ms(7200)).writes.len(), 1);
    }

    /// A shared address's ballot on `kubevip-a`, with `kubevip-b` (the
    /// other Service's own Lease) as its companion.
    fn shared_ballot(candidate: bool) -> BTreeMap<LeaseKey, Ballot> {
        let mut ballot = ballot(1, candidate);
        ballot.companions = BTreeSet::from([key("kubevip-b")]);
        BTreeMap::from([(key("kubevip-a"), ballot)])
    }

    /// `me`, taking companions (another daemon is about), holding both
    /// Leases of [`shared_ballot`] after 1.1 s.
    fn holding_shared() -> (Elections, BTreeMap<LeaseKey, SimLease>) {
        let mut me = elections("me");
        let mut leases = BTreeMap::new();
        me.want(&shared_ballot(true));
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        run(&mut me, &mut leases, Mono(SEC));
        run(&mut me, &mut leases, Mono(SEC + SEC / 10));
        (me, leases)
    }

    #[test]
    fn a_companion_becoming_the_groups_lease_is_handed_over_too() {
        let ms = |m: u64| Mono(Duration::from_millis(m));
        let mut me = elections("me");
        let mut other = elections("other");
        let mut leases = BTreeMap::new();
        let peers = BTreeSet::from(["me".to_string(), "other".to_string()]);
        for e in [&mut me, &mut other] {
            e.want(&shared_ballot(true));
            e.set_peers(peers.clone(), false);
        }
        run(&mut me, &mut leases, ms(1000));
        run(&mut other, &mut leases, ms(1010));
        assert_eq!(
            run(&mut me, &mut leases, ms(1100)).addresses,
            BTreeSet::from([ip(1)])
        );
        // The first Service goes: its companion, the second Service's own
        // Lease, elects the address now. The holder keeps it.
        let next = BTreeMap::from([(key("kubevip-b"), ballot(1, true))]);
        hand_over(&mut me, &mut other, &mut leases, &next);
        assert_eq!(holder_of(&leases, "kubevip-b"), Some("me".to_string()));
        let r = run(&mut other, &mut leases, ms(1600));
        assert!(r.writes.is_empty() && r.addresses.is_empty());
    }

    #[test]
    fn the_holder_takes_the_companion_leases_and_other_nodes_never_do() {
        let mut me = elections("me");
        let mut other = elections("other");
        let mut leases = BTreeMap::new();
        me.want(&shared_ballot(true));
        other.want(&shared_ballot(true));
        let peers = BTreeSet::from(["me".to_string(), "other".to_string()]);
        me.set_peers(peers.clone(), true);
        other.set_peers(peers, true);
        run(&mut me, &mut leases, Mono(SEC));
        run(&mut other, &mut leases, Mono(SEC));
        // The next step takes the companion, once the Lease it belongs to
        // is seen to be ours; the one after announces, holding both.
        let second = run(&mut me, &mut leases, Mono(SEC + SEC / 10));
        assert!(second.addresses.is_empty());
        let third = run(&mut me, &mut leases, Mono(SEC + SEC / 5));
        assert_eq!(third.addresses, BTreeSet::from([ip(1)]));
        let holder = |l: &BTreeMap<LeaseKey, SimLease>, name: &str| {
            l.get(&key(name))
                .and_then(|s| s.stored.as_ref())
                .and_then(|(r, _)| r.holder().map(str::to_string))
        };
        assert_eq!(holder(&leases, "kubevip-a").as_deref(), Some("me"));
        assert_eq!(holder(&leases, "kubevip-b").as_deref(), Some("me"));
        let round = run(&mut other, &mut leases, Mono(2 * SEC));
        assert!(round.addresses.is_empty());
        assert!(round.writes.is_empty(), "{:?}", round.writes);
        // Renewals keep both; the companion's renewal is quiet.
        let round = run(&mut me, &mut leases, Mono(3 * SEC));
        assert_eq!(round.addresses, BTreeSet::from([ip(1)]));
        assert!(me.quiet(
            &key("kubevip-b"),
            &WriteResult::Ok {
                resource_version: "99".into(),
                record: LeaseRecord::default(),
            }
        ));
    }

    #[test]
    fn a_companion_held_by_another_daemon_holds_the_address_back_until_it_is_free() {
        let mut me = elections("me");
        let mut kube_vip = elections("worker9");
        let mut leases = BTreeMap::new();
        // kube-vip on worker9 holds the other Service's Lease and announces.
        kube_vip.want(&BTreeMap::from([(key("kubevip-b"), ballot(1, true))]));
        run(&mut kube_vip, &mut leases, Mono(SEC));
        unstamp(&mut leases, "kubevip-b");
        me.want(&shared_ballot(true));
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        let mut t = SEC;
        let mut announced = Vec::new();
        for _ in 0..30 {
            t += SEC / 5;
            run(&mut kube_vip, &mut leases, Mono(t));
            unstamp(&mut leases, "kubevip-b");
            let round = run(&mut me, &mut leases, Mono(t));
            announced.push(!round.addresses.is_empty());
            for tr in &round.transitions {
                assert!(tr.announcing, "{tr:?}");
            }
        }
        assert!(!announced.iter().any(|a| *a), "announced beside kube-vip");
        // A kvip node holding it instead does not hold the address back.
        me.set_peers(
            BTreeSet::from(["me".to_string(), "worker9".to_string()]),
            true,
        );
        t += SEC / 5;
        assert_eq!(
            run(&mut me, &mut leases, Mono(t)).addresses,
            BTreeSet::from([ip(1)])
        );
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        t += SEC / 5;
        let round = run(&mut me, &mut leases, Mono(t));
        assert!(round.addresses.is_empty());
        assert_eq!(round.transitions[0].why, "foreign_holder");
        // kube-vip leaves and releases its Lease: taken, then announced.
        kube_vip.want(&BTreeMap::new());
        t += SEC / 5;
        run(&mut kube_vip, &mut leases, Mono(t));
        run(&mut me, &mut leases, Mono(t));
        t += SEC / 10;
        assert_eq!(
            run(&mut me, &mut leases, Mono(t)).addresses,
            BTreeSet::from([ip(1)])
        );
    }

    #[test]
    fn a_companion_whose_holder_died_holds_nothing_back() {
        let mut me = elections("me");
        let mut dead = elections("worker9");
        let mut leases = BTreeMap::new();
        dead.want(&BTreeMap::from([(key("kubevip-b"), ballot(1, true))]));
        run(&mut dead, &mut leases, Mono(SEC));
        run(&mut dead, &mut leases, Mono(SEC + SEC / 10));
        unstamp(&mut leases, "kubevip-b");
        me.want(&shared_ballot(true));
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        // worker9 stops renewing; the moment its term runs out (5 s after
        // this node saw it change), this node takes its Lease, and announces
        // as soon as the Lease is seen to be its own.
        let mut t = 2 * SEC;
        run(&mut me, &mut leases, Mono(t));
        while t < 7 * SEC - SEC / 5 {
            t += SEC / 5;
            let round = run(&mut me, &mut leases, Mono(t));
            assert!(round.addresses.is_empty(), "announced at {t:?}");
        }
        t = 7 * SEC;
        run(&mut me, &mut leases, Mono(t));
        assert_eq!(holder_of(&leases, "kubevip-b").as_deref(), Some("me"));
        let round = run(&mut me, &mut leases, Mono(t + SEC / 10));
        assert_eq!(round.addresses, BTreeSet::from([ip(1)]));
    }

    /// Another daemon than kvip wrote `name` last: no stamp of kvip's.
    fn unstamp(leases: &mut BTreeMap<LeaseKey, SimLease>, name: &str) {
        if let Some((record, _)) = leases.entry(key(name)).or_default().stored.as_mut() {
            record.kvip_renewed = None;
        }
    }

    fn holder_of(leases: &BTreeMap<LeaseKey, SimLease>, name: &str) -> Option<String> {
        leases
            .get(&key(name))
            .and_then(|s| s.stored.as_ref())
            .and_then(|(r, _)| r.holder().map(str::to_string))
    }

    #[test]
    fn a_service_that_leaves_the_address_takes_its_lease_out_of_the_group() {
        let (mut me, mut leases) = holding_shared();
        assert_eq!(holder_of(&leases, "kubevip-b").as_deref(), Some("me"));
        // b is deleted (or moves away): its Lease is released, a's kept.
        me.want(&BTreeMap::from([(key("kubevip-a"), ballot(1, true))]));
        let round = run(&mut me, &mut leases, Mono(2 * SEC));
        assert_eq!(round.addresses, BTreeSet::from([ip(1)]));
        assert_eq!(holder_of(&leases, "kubevip-b"), None);
        assert_eq!(holder_of(&leases, "kubevip-a").as_deref(), Some("me"));
    }

    #[test]
    fn a_companion_waits_for_the_withdraw_of_its_address() {
        let (mut me, mut leases) = holding_shared();
        me.want(&shared_ballot(false));
        let mut round = me.step(Mono(2 * SEC), WallTime(0), None, |k| {
            (
                leases.entry(k.clone()).or_default().snapshot(),
                Mono(2 * SEC),
            )
        });
        // The address could not be removed: neither Lease goes.
        let (send, held) = me.releasable(&mut round, &BTreeSet::from([ip(1)]), Mono(2 * SEC));
        assert!(send.is_empty(), "{send:?}");
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn with_kvip_on_every_node_companions_are_watched_not_taken() {
        let mut me = elections("me");
        let mut other = elections("worker9");
        let mut leases = BTreeMap::new();
        me.want(&shared_ballot(true));
        me.set_peers(
            BTreeSet::from(["me".to_string(), "worker9".to_string()]),
            false,
        );
        let mut t = SEC;
        for _ in 0..5 {
            run(&mut me, &mut leases, Mono(t));
            t += SEC / 2;
        }
        assert_eq!(holder_of(&leases, "kubevip-b"), None, "no companion taken");
        assert_eq!(
            run(&mut me, &mut leases, Mono(t)).addresses,
            BTreeSet::from([ip(1)])
        );
        // A kvip node (stamped writes) holding it holds nothing back, even
        // when it no longer counts as live.
        other.want(&BTreeMap::from([(key("kubevip-b"), ballot(1, true))]));
        run(&mut other, &mut leases, Mono(t));
        me.set_peers(BTreeSet::from(["me".to_string()]), false);
        t += SEC / 5;
        assert_eq!(
            run(&mut me, &mut leases, Mono(t)).addresses,
            BTreeSet::from([ip(1)])
        );
        // Another daemon renews it under that name (kube-vip restarted
        // there keeps the stamp but writes a new renew time): held back.
        let entry = leases.entry(key("kubevip-b")).or_default();
        if let Some((record, rv)) = entry.stored.as_mut() {
            record.renew_time = record.renew_time.map(|w| WallTime(w.0 + 1));
            *rv += 1;
            entry.last_version = *rv;
        }
        me.set_peers(
            BTreeSet::from(["me".to_string(), "worker9".to_string()]),
            false,
        );
        t += SEC / 5;
        let round = run(&mut me, &mut leases, Mono(t));
        assert!(round.addresses.is_empty());
        assert_eq!(round.transitions[0].why, "foreign_holder");
    }

    #[test]
    fn an_announced_address_stays_while_its_companions_are_taken() {
        let mut me = elections("me");
        let mut leases = BTreeMap::new();
        me.want(&shared_ballot(true));
        me.set_peers(BTreeSet::from(["me".to_string()]), false);
        run(&mut me, &mut leases, Mono(SEC));
        assert_eq!(
            run(&mut me, &mut leases, Mono(SEC + SEC / 10)).addresses,
            BTreeSet::from([ip(1)])
        );
        // Another daemon appears: the free companion is taken, and the
        // address never leaves meanwhile.
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        let round = run(&mut me, &mut leases, Mono(SEC + SEC / 5));
        assert_eq!(round.addresses, BTreeSet::from([ip(1)]));
        assert!(round.transitions.is_empty(), "{:?}", round.transitions);
        assert_eq!(holder_of(&leases, "kubevip-b").as_deref(), Some("me"));
    }

    #[test]
    fn a_companion_that_cannot_be_taken_holds_the_address_back_one_lease_duration() {
        let mut me = elections("me");
        let mut leases: BTreeMap<LeaseKey, SimLease> = BTreeMap::new();
        me.want(&shared_ballot(true));
        me.set_peers(BTreeSet::from(["me".to_string()]), true);
        let mut t = SEC;
        let mut first = None;
        while t < 10 * SEC {
            // Every write of the companion is refused (RBAC, a quota, ...).
            let round = me.step(Mono(t), WallTime(t.as_micros() as i64), None, |k| {
                (leases.entry(k.clone()).or_default().snapshot(), Mono(t))
            });
            for (k, d) in round.writes.iter().chain(&round.releases) {
                let result = if k.name == "kubevip-b" {
                    WriteResult::Error
                } else {
                    leases
                        .entry(k.clone())
                        .or_default()
                        .store(d)
                        .unwrap_or(WriteResult::Error)
                };
                me.finished(k, result, Mono(t), Mono(t));
            }
            if first.is_none() && !round.addresses.is_empty() {
                first = Some(t);
            }
            t += SEC / 10;
        }
        let first = first.expect("announced in the end");
        assert!(
            first >= 5 * SEC && first <= 6 * SEC + SEC / 2,
            "announced after {first:?}"
        );
    }

    #[test]
    fn companions_are_released_with_the_lease_they_belong_to() {
        let (mut me, mut leases) = holding_shared();
        me.want(&shared_ballot(false));
        let round = run(&mut me, &mut leases, Mono(2 * SEC));
        assert!(round.addresses.is_empty());
        let mut released: Vec<String> =
            round.releases.iter().map(|(k, _)| k.name.clone()).collect();
        released.sort();
        assert_eq!(released, ["kubevip-a", "kubevip-b"]);
    }

    #[test]
    fn a_lease_is_not_released_while_its_address_is_still_up() {
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        e.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        run(&mut e, &mut leases, Mono(SEC));
        run(&mut e, &mut leases, Mono(SEC + SEC / 10));
        e.want(&BTreeMap::new());
        let see = |l: &BTreeMap<LeaseKey, SimLease>| l[&key("a")].snapshot();
        let now = Mono(2 * SEC);
        let mut r = e.step(now, WallTime(2), None, |_| (see(&leases), now));
        assert!(r.addresses.is_empty(), "withdraw asked");
        assert_eq!(r.releases.len(), 1);
        // The removal failed: the address is still up.
        let (send, held) = e.releasable(&mut r, &BTreeSet::from([ip(1)]), now);
        assert!(send.is_empty());
        assert_eq!(held, vec![key("a")]);
        // Asked again one retry period on; once the address is gone, released.
        let later = Mono(3 * SEC);
        let mut r = e.step(later, WallTime(3), None, |_| (see(&leases), later));
        assert_eq!(r.releases.len(), 1, "asked again");
        let (send, held) = e.releasable(&mut r, &BTreeSet::new(), later);
        assert_eq!((send.len(), held.len()), (1, 0));
    }

    #[test]
    fn another_holder_is_waited_out_and_a_lost_lease_is_named_so() {
        let mut a = elections("a");
        let mut b = elections("b");
        let mut leases = BTreeMap::new();
        let wanted = BTreeMap::from([(key("x"), ballot(7, true))]);
        a.want(&wanted);
        b.want(&wanted);
        run(&mut a, &mut leases, Mono(SEC));
        assert_eq!(
            run(&mut a, &mut leases, Mono(SEC + SEC / 10))
                .addresses
                .len(),
            1
        );
        let r = run(&mut b, &mut leases, Mono(SEC));
        assert!(r.writes.is_empty(), "b waits while a holds");
        assert!(r.next <= SEC);
        // a stops renewing (its node froze); b takes over once the term ran out.
        assert!(run(&mut b, &mut leases, Mono(5 * SEC)).writes.is_empty());
        let late = run(&mut b, &mut leases, Mono(6 * SEC));
        assert_eq!(late.writes.len(), 1);
        let r = run(&mut a, &mut leases, Mono(6 * SEC + SEC / 2));
        assert!(r.addresses.is_empty());
        assert_eq!(r.transitions.len(), 1);
        assert_eq!(
            (r.transitions[0].announcing, r.transitions[0].why),
            (false, "lease_lost")
        );
    }

    #[test]
    fn a_create_not_shown_yet_is_kept_and_a_delete_seen_is_withdrawn_at_once() {
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        e.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        run(&mut e, &mut leases, Mono(SEC));
        let empty = |_: &LeaseKey| (Observed::default(), Mono(SEC));
        let r = e.step(Mono(SEC), WallTime(2), None, empty);
        assert_eq!(
            r.addresses,
            BTreeSet::from([ip(1)]),
            "the watch has not shown our create yet: still ours"
        );
        let deleted = |_: &LeaseKey| {
            let tombstone = Observed {
                record: None,
                resource_version: Some("99".into()),
            };
            (tombstone, Mono(SEC))
        };
        let r = e.step(Mono(SEC + SEC / 10), WallTime(3), None, deleted);
        assert!(r.addresses.is_empty(), "deleted: withdrawn at once");
        assert_eq!(r.transitions[0].why, "lease_lost");
    }

    #[test]
    fn a_claim_is_defended_with_a_fresh_lease_and_yielded_to_without_one() {
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        e.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        run(&mut e, &mut leases, Mono(SEC));
        run(&mut e, &mut leases, Mono(SEC + SEC / 10));
        assert_eq!(e.claim(ip(9), Mono(2 * SEC), true), ClaimAnswer::NotOurs);
        assert_eq!(
            e.claim(ip(1), Mono(2 * SEC), true),
            ClaimAnswer::Defend(key("a"))
        );
        // Adopted after a restart, nothing written yet: yield.
        let mut restarted = elections("me");
        restarted.want(&BTreeMap::from([(key("a"), ballot(1, true))]));
        restarted.adopt(BTreeSet::from([ip(1)]), Mono(7 * SEC));
        let r = restarted.step(Mono(2 * SEC), WallTime(2), None, |k| {
            (leases[k].snapshot(), Mono(2 * SEC))
        });
        assert_eq!(
            r.addresses,
            BTreeSet::from([ip(1)]),
            "adopted: announced at once"
        );
        assert!(r.next <= 5 * SEC);
        assert_eq!(
            restarted.claim(ip(1), Mono(2 * SEC), false),
            ClaimAnswer::Defend(key("a")),
            "one unconvincing frame in the adoption window is defended, not yielded to"
        );
        assert_eq!(
            restarted.claim(ip(1), Mono(2 * SEC), true),
            ClaimAnswer::Yielded(key("a"))
        );
        let r = restarted.step(Mono(2 * SEC), WallTime(2), None, |k| {
            (leases[k].snapshot(), Mono(2 * SEC))
        });
        assert!(r.addresses.is_empty(), "yielded until a write succeeds");
    }

    #[test]
    fn cluster_groups_share_the_global_lease_without_svc_election_and_local_ones_never_do() {
        let group = |name: &str, last: u8, candidates: &[&str]| AnnouncementGroup {
            lease: key(&format!("kubevip-{name}")),
            addresses: BTreeSet::from([ip(last)]),
            services: BTreeSet::from([ServiceKey {
                namespace: "ns".into(),
                name: name.into(),
            }]),
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
        };
        let view = |name: &str, policy| crate::ServiceView {
            key: ServiceKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            addresses: vec![match name {
                "a" => ip(1),
                "b" => ip(2),
                _ => ip(3),
            }],
            policy,
            lease_name: format!("kubevip-{name}"),
            rank: Default::default(),
            served: vec![],
            addresses_from: Default::default(),
            interface: None,
            ports: Vec::new(),
        };
        let assessment = Assessment {
            views: vec![
                view("a", TrafficPolicy::Cluster),
                view("b", TrafficPolicy::Cluster),
                view("c", TrafficPolicy::Local),
            ],
            groups: vec![
                group("a", 1, &["n1"]),
                group("b", 2, &["n2"]),
                group("c", 3, &["n1"]),
            ],
            ..Assessment::default()
        };
        let global = key("plndr-svcs-lock");
        let own = ballots(&assessment, "n1", true, &global, false);
        assert_eq!(own.len(), 3, "one Lease per group");
        assert!(own[&key("kubevip-a")].candidate && !own[&key("kubevip-b")].candidate);
        let shared = ballots(&assessment, "n1", false, &global, false);
        assert_eq!(shared.len(), 2, "the Cluster groups share the global Lease");
        let g = &shared[&global];
        assert_eq!(g.addresses, BTreeSet::from([ip(1), ip(2)]));
        assert!(g.candidate, "a candidate of any group it covers");
        assert!(
            shared.contains_key(&key("kubevip-c")),
            "Local keeps its own"
        );
        let leaving = ballots(&assessment, "n1", false, &global, true);
        assert!(leaving.values().all(|b| !b.candidate));
        assert!(
            own.values()
                .chain(shared.values())
                .all(|b| b.companions.is_empty())
        );

        // Two Services on one address: the group's Lease elects, the
        // other member's own Lease is its companion; under the global
        // Lease kube-vip elects them together too, so no companion.
        let mut pair = assessment.clone();
        pair.views[1].addresses = vec![ip(1)];
        pair.groups = vec![AnnouncementGroup {
            services: BTreeSet::from([
                ServiceKey {
                    namespace: "ns".into(),
                    name: "a".into(),
                },
                ServiceKey {
                    namespace: "ns".into(),
                    name: "b".into(),
                },
            ]),
            ..group("a", 1, &["n1"])
        }];
        let own = ballots(&pair, "n1", true, &global, false);
        assert_eq!(
            own[&key("kubevip-a")].companions,
            BTreeSet::from([key("kubevip-b")])
        );
        // A Service naming the address that kvip leaves pending (c: no
        // ready endpoint, so in no group) is a companion all the same.
        let mut pending = pair.clone();
        pending.views[2].addresses = vec![ip(1)];
        let own = ballots(&pending, "n1", true, &global, false);
        assert_eq!(
            own[&key("kubevip-a")].companions,
            BTreeSet::from([key("kubevip-b"), key("kubevip-c")])
        );
        // Another namespace's Service naming it (pending, AddressConflict)
        // is none: its author could hold that Lease to keep the address down.
        let mut foreign = pending.clone();
        foreign.views[2].key.namespace = "elsewhere".into();
        let own = ballots(&foreign, "n1", true, &global, false);
        assert_eq!(
            own[&key("kubevip-a")].companions,
            BTreeSet::from([key("kubevip-b")])
        );
        let shared = ballots(&pair, "n1", false, &global, false);
        assert!(shared[&global].companions.is_empty());
    }

    #[test]
    fn holding_many_leases_stretches_the_pace_once() {
        let mut e = elections("me");
        let mut leases = BTreeMap::new();
        let wanted: BTreeMap<_, _> = (0..200u8)
            .map(|i| (key(&format!("l{i}")), ballot(i, true)))
            .collect();
        e.want(&wanted);
        let first = run(&mut e, &mut leases, Mono(SEC));
        assert_eq!(first.writes.len(), 200);
        assert!(first.paced.is_none(), "nothing held before the writes");
        let second = run(&mut e, &mut leases, Mono(2 * SEC));
        let (held, pace) = second.paced.expect("the pace stretched");
        assert_eq!((held, pace.stretch), (200, 3));
        assert_eq!(
            pace.renew_every,
            SEC * 5,
            "200 Leases at 40 writes a second"
        );
        assert!(run(&mut e, &mut leases, Mono(3 * SEC)).paced.is_none());
    }
}

/// Every rule of the machine in a simulated world: three nodes, three
/// Leases on one API server that can go down, watches that lag, candidacy
/// that churns, writes that are lost, budget waits, claims on the wire.
#[cfg(test)]
mod world {
    use super::*;
    use crate::testing::SimLease;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const SEC: Duration = Duration::from_secs(1);
    const NODES: usize = 3;
    const LEASES: usize = 3;

    #[derive(Debug, Clone)]
    enum Step {
        /// The node steps its elections.
        Wake(usize),
        /// The node's oldest write arrives: true = answered, false = lost.
        Deliver(usize, bool),
        /// The node's oldest write leaves after waiting for the budget.
        Send(usize),
        /// The node's watch delivers its next event.
        Watch(usize),
        Tick(u16),
        /// The node's candidacy for a Lease flips.
        Candidacy(usize, usize),
        ToggleOutage,
        /// Another MAC claims a Lease's address at the node.
        Claim(usize, usize),
        /// Someone deletes a Lease (an admin, a namespace clean-up).
        Delete(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..NODES).prop_map(Step::Wake),
            5 => (0..NODES, prop_oneof![5 => Just(true), 1 => Just(false)])
                .prop_map(|(n, ok)| Step::Deliver(n, ok)),
            2 => (0..NODES).prop_map(Step::Send),
            5 => (0..NODES).prop_map(Step::Watch),
            5 => (0u16..1500).prop_map(Step::Tick),
            2 => (0..NODES, 0..LEASES).prop_map(|(n, l)| Step::Candidacy(n, l)),
            1 => Just(Step::ToggleOutage),
            1 => (0..NODES, 0..LEASES).prop_map(|(n, l)| Step::Claim(n, l)),
            1 => (0..LEASES).prop_map(Step::Delete),
        ]
    }

    fn lease(l: usize) -> LeaseKey {
        LeaseKey {
            namespace: "ns".into(),
            name: format!("l{l}"),
        }
    }

    fn address(l: usize) -> IpAddr {
        IpAddr::from([10, 0, 0, l as u8])
    }

    struct Node {
        elections: Elections,
        candidate: [bool; LEASES],
        /// Writes on their way: Lease, decision, when it left.
        in_flight: VecDeque<(LeaseKey, Decision, Mono)>,
        /// Watch events not delivered yet.
        watch: VecDeque<(LeaseKey, Observed)>,
        /// What the watch delivered, and when.
        cache: BTreeMap<LeaseKey, (Observed, Mono)>,
        /// Deletes the watch delivered that no step has seen yet.
        delete_unstepped: [bool; LEASES],
    }

    impl Node {
        fn ballots(&self) -> BTreeMap<LeaseKey, Ballot> {
            (0..LEASES)
                .map(|l| {
                    let ballot = Ballot {
                        addresses: BTreeSet::from([address(l)]),
                        services: BTreeSet::new(),
                        candidate: self.candidate[l],
                        companions: BTreeSet::new(),
                    };
                    (lease(l), ballot)
                })
                .collect()
        }
    }

    struct World {
        now: Duration,
        api_down: bool,
        leases: BTreeMap<LeaseKey, SimLease>,
        nodes: Vec<Node>,
    }

    impl World {
        fn new() -> World {
            let nodes = (0..NODES)
                .map(|i| {
                    let mut node = Node {
                        elections: Elections::new(
                            format!("node-{i}"),
                            5 * SEC,
                            3 * SEC,
                            SEC,
                            50,
                            "no_longer_candidate",
                        )
                        .unwrap(),
                        candidate: [true; LEASES],
                        in_flight: VecDeque::new(),
                        watch: VecDeque::new(),
                        cache: BTreeMap::new(),
                        delete_unstepped: [false; LEASES],
                    };
                    let ballots = node.ballots();
                    node.elections.want(&ballots);
                    node
                })
                .collect();
            World {
                now: Duration::ZERO,
                api_down: false,
                leases: (0..LEASES)
                    .map(|l| (lease(l), SimLease::default()))
                    .collect(),
                nodes,
            }
        }

        fn mono(&self) -> Mono {
            Mono(self.now)
        }

        /// Nodes that announce `l` within the term of their last successful
        /// write — the window in which no other node may hold the Lease —
        /// as opposed to an unconfirmed hold (outage, adoption).
        fn fresh_announcers(&self, l: usize) -> Vec<usize> {
            let now = self.mono();
            (0..NODES)
                .filter(|&n| {
                    let node = &self.nodes[n];
                    node.elections.campaign(&lease(l)).is_some_and(|c| {
                        c.elector().may_announce(now) && c.may_announce(now, node.candidate[l])
                    })
                })
                .collect()
        }

        fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
            let now = self.mono();
            match *step {
                Step::Wake(n) => {
                    let node = &mut self.nodes[n];
                    node.delete_unstepped = [false; LEASES];
                    let cache = &node.cache;
                    let round =
                        node.elections
                            .step(now, WallTime(now.0.as_micros() as i64), None, |k| {
                                cache.get(k).cloned().unwrap_or((Observed::default(), now))
                            });
                    for (key, release) in &round.releases {
                        let l = (0..LEASES).find(|&l| lease(l) == *key).unwrap_or(0);
                        prop_assert!(
                            !round.addresses.contains(&address(l)),
                            "a release of {:?} in the round that still announces it",
                            key
                        );
                        let is_release = matches!(release, Decision::Release { .. });
                        prop_assert!(is_release, "a takeover filed as a release");
                    }
                    for (key, d) in round.writes.into_iter().chain(round.releases) {
                        node.in_flight.push_back((key, d, now));
                    }
                }
                Step::Send(n) => {
                    if let Some(w) = self.nodes[n].in_flight.front_mut() {
                        w.2 = now;
                    }
                }
                Step::Deliver(n, answered) => {
                    if let Some((key, decision, sent)) = self.nodes[n].in_flight.pop_front() {
                        let result = if self.api_down || !answered {
                            WriteResult::Error
                        } else {
                            let sim = self.leases.entry(key.clone()).or_default();
                            let result = sim.store(&decision).unwrap_or(WriteResult::Error);
                            if matches!(result, WriteResult::Ok { .. }) {
                                let snapshot = sim.snapshot();
                                for node in &mut self.nodes {
                                    node.watch.push_back((key.clone(), snapshot.clone()));
                                }
                            }
                            result
                        };
                        self.nodes[n].elections.finished(&key, result, sent, now);
                    }
                }
                Step::Watch(n) => {
                    // A watch sees nothing while the API server is down.
                    if !self.api_down
                        && let Some((key, observed)) = self.nodes[n].watch.pop_front()
                    {
                        if observed.record.is_none()
                            && let Some(l) = (0..LEASES).find(|&l| lease(l) == key)
                        {
                            self.nodes[n].delete_unstepped[l] = true;
                        }
                        self.nodes[n].cache.insert(key, (observed, now));
                    }
                }
                Step::Tick(ms) => self.now += Duration::from_millis(u64::from(ms)),
                Step::Candidacy(n, l) => {
                    let node = &mut self.nodes[n];
                    node.candidate[l] = !node.candidate[l];
                    let ballots = node.ballots();
                    node.elections.want(&ballots);
                }
                Step::ToggleOutage => self.api_down = !self.api_down,
                Step::Delete(l) => {
                    if !self.api_down {
                        let gone = self.leases.entry(lease(l)).or_default().delete();
                        for node in &mut self.nodes {
                            node.watch.push_back((lease(l), gone.clone()));
                        }
                    }
                }
                Step::Claim(n, l) => {
                    let fresh = self.fresh_announcers(l).contains(&n);
                    let answer = self.nodes[n].elections.claim(address(l), now, true);
                    prop_assert!(
                        !fresh || matches!(answer, ClaimAnswer::Defend(_)),
                        "a freshly renewed holder yielded to a claim"
                    );
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn never_two_fresh_announcers_and_never_a_release_before_its_withdraw(
            steps in proptest::collection::vec(step(), 1..400)
        ) {
            let mut world = World::new();
            for step in &steps {
                world.run(step)?;
                for l in 0..LEASES {
                    // A Lease deleted under its holder can be taken before
                    // the holder has stepped on the delete: outside the
                    // contract until every node has.
                    let unseen_delete = world.nodes.iter().any(|n| {
                        n.delete_unstepped[l]
                            || n.watch.iter().any(|(k, o)| *k == lease(l) && o.record.is_none())
                    });
                    if unseen_delete {
                        continue;
                    }
                    let fresh = world.fresh_announcers(l);
                    prop_assert!(fresh.len() <= 1, "two fresh announcers {:?} of l{} after {:?}", fresh, l, step);
                }
            }
        }
    }
}
