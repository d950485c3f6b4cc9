//! One Lease election as a node runs it: the [`Elector`] plus the rules that
//! keep a VIP up and single through what the elector alone cannot see —
//! cache entries older than our own last write, addresses adopted from an
//! earlier run, an API outage, and another node seen claiming the address.
//! Both roles (Services and control plane) and membership mode run their
//! Leases through it, and `kvip status` reasons with the same elector.
//!
//! The rules (design §7):
//!
//! * **Stale writes.** A cached Lease whose resourceVersion is older than the
//!   one our last write produced is a state the watch has not caught up past;
//!   it is not observed (it would make our own renewal look like a change).
//! * **Adoption.** At start-up, addresses found on the interface whose Lease
//!   still names this node (a restart, not a takeover) are announced until the
//!   first write settles, at most one lease duration.
//! * **Outage hold.** A holder whose renewals fail with no answer keeps
//!   announcing: nobody else can have written the Lease either.
//! * **Yield.** Another MAC claiming the address while our hold rests only on
//!   an outage or adoption may have the Lease now: stop announcing until a
//!   write succeeds again. With a fresh Lease the claimant is wrong: defend.

use crate::election::{Decision, Elector, Mono, Observed, WallTime, WriteResult};
use std::time::Duration;

/// Something the daemon should tell the operator about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Renewals fail with no answer: the VIP is kept through the API outage.
    HoldingThroughOutage,
}

/// One election with the campaign rules around it.
#[derive(Debug, Clone)]
pub struct Campaign {
    elector: Elector,
    /// Highest resourceVersion we wrote; older cache entries are stale.
    written_version: Option<u64>,
    /// Held from an earlier run at start-up: announce until the first write settles.
    adopting_until: Option<Mono>,
    /// When this node started wanting the Lease (takeover latency).
    wanting_since: Option<Mono>,
    /// Whether this node announced at the last step.
    announcing: bool,
    /// Renewals fail with no answer while we announce: keep announcing.
    outage_hold: bool,
    /// Another node claimed the address while our hold was unconfirmed:
    /// announce nothing until a write succeeds again.
    yielded: bool,
}

impl Campaign {
    /// A campaign for `elector`.
    pub fn new(elector: Elector) -> Self {
        Self {
            elector,
            written_version: None,
            adopting_until: None,
            wanting_since: None,
            announcing: false,
            outage_hold: false,
            yielded: false,
        }
    }

    /// Whether `node` is named holder in the last record seen.
    pub fn names(&self, node: &str) -> bool {
        self.elector.holder() == Some(node)
    }

    /// The elector inside.
    pub fn elector(&self) -> &Elector {
        &self.elector
    }

    /// Feeds what the cache holds, first seen at `seen_at`, skipping entries
    /// older than our own last write.
    pub fn observe(&mut self, observed: Observed, seen_at: Mono) {
        let cached = observed
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok());
        // resourceVersions are etcd revisions: a smaller one is an older
        // state of the same object, which the watch has not caught up past.
        // A Lease missing from the cache after we wrote it, with no delete
        // seen, is the watch not yet showing our create (the answer often
        // comes first). A delete the watch saw carries its own, newer
        // version (the cache keeps it as a tombstone).
        let stale = match (cached, self.written_version) {
            (Some(c), Some(w)) => c < w,
            (None, Some(_)) => observed.record.is_none(),
            _ => false,
        };
        if !stale {
            self.elector.observe(observed, seen_at);
        }
        if self.elector.holder() != Some(self.elector.identity()) {
            self.outage_hold = false;
        }
    }

    /// Restarts another holder's term at `at`, the end of a gap in the
    /// Lease watch (see [`Elector::restart_term`]).
    pub fn restart_term(&mut self, at: Mono) {
        self.elector.restart_term(at);
    }

    /// Paces this node's renewals (see [`Elector::set_stretch`] and
    /// [`Elector::set_renew_every`]).
    pub fn set_pace(&mut self, pace: Pace) {
        self.elector.set_stretch(pace.stretch);
        self.elector.set_renew_every(pace.renew_every);
    }

    /// The write awaited went out at `at` (see [`Elector::sent`]).
    pub fn sent(&mut self, at: Mono) {
        self.elector.sent(at);
    }

    /// Decides the next write for `candidate` at `now`.
    pub fn decide(&mut self, now: Mono, wall: WallTime, candidate: bool) -> Decision {
        if candidate && !self.announcing && self.wanting_since.is_none() {
            self.wanting_since = Some(now);
        }
        if !candidate {
            self.wanting_since = None;
        }
        self.elector.decide(now, wall, candidate)
    }

    /// Records how a write ended at `now`.
    pub fn finished(&mut self, result: WriteResult, now: Mono) -> Option<Notice> {
        let mut notice = None;
        if let WriteResult::Ok {
            resource_version, ..
        } = &result
            && let Ok(v) = resource_version.parse::<u64>()
        {
            self.written_version = Some(self.written_version.map_or(v, |w| w.max(v)));
        }
        match &result {
            WriteResult::Ok { .. } => {
                self.outage_hold = false;
                self.yielded = false;
            }
            WriteResult::Conflict => self.outage_hold = false,
            WriteResult::Error => {
                if self.announcing && !self.outage_hold {
                    notice = Some(Notice::HoldingThroughOutage);
                }
                self.outage_hold = self.announcing;
            }
            // Held back by our own budget: the API may be fine and another
            // node may take the Lease when its term runs out, so no hold;
            // what is held stays announced for the term already written.
            WriteResult::NotSent => {}
        }
        if matches!(result, WriteResult::Conflict | WriteResult::Error) {
            self.adopting_until = None;
        }
        self.elector.write_result(result, now);
        notice
    }

    /// Keeps announcing addresses found on the interface until `until`,
    /// when the Lease still names `node` (a restart, not a takeover).
    pub fn adopt(&mut self, node: &str, until: Mono) {
        if self.names(node) {
            self.adopting_until = Some(until);
        }
    }

    /// When the adoption window ends, if it is still open at `now`.
    pub fn adoption_ends(&self, now: Mono) -> Option<Mono> {
        self.adopting_until.filter(|until| now < *until)
    }

    /// Whether this node announces at `now`.
    pub fn may_announce(&self, now: Mono, candidate: bool) -> bool {
        let adopting = self.adopting_until.is_some_and(|u| now < u);
        candidate
            && !self.yielded
            && (self.elector.may_announce(now) || adopting || self.outage_hold)
    }

    /// Another MAC claims our address. Within the term of our last
    /// successful write nobody else can hold the Lease (see
    /// `Elector::may_announce`): the claimant is wrong, keep it (false). If
    /// our hold rests only on an API outage or adoption, the claimant may
    /// have the Lease now, but one frame is easily forged: yield at once
    /// (true) only when the claim is `convincing` (it comes from a kvip
    /// node's MAC, or it persisted); otherwise keep holding.
    pub fn yield_to_claim(&mut self, now: Mono, convincing: bool) -> bool {
        if self.elector.may_announce(now) || !convincing {
            return false;
        }
        self.outage_hold = false;
        self.adopting_until = None;
        self.yielded = true;
        true
    }

    /// Records whether this node announces; Some(true) when it just started,
    /// Some(false) when it just stopped.
    pub fn transition(&mut self, announcing: bool) -> Option<bool> {
        if announcing == self.announcing {
            return None;
        }
        self.announcing = announcing;
        Some(announcing)
    }

    /// Whether this node announced at the last step.
    pub fn announcing(&self) -> bool {
        self.announcing
    }

    /// Whether the elector holds the Lease.
    pub fn holds(&self, now: Mono) -> bool {
        self.elector.holds(now)
    }

    /// How long this node wanted the Lease before announcing, once (takeover latency).
    pub fn take_wanting_since(&mut self, now: Mono) -> Option<Duration> {
        self.wanting_since.take().map(|since| now.since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::LeaseRecord;

    fn secs(s: u64) -> Mono {
        Mono(Duration::from_secs(s))
    }

    fn campaign() -> Campaign {
        let d = Duration::from_secs;
        Campaign::new(Elector::new("me", d(5), d(3), d(1)).unwrap())
    }

    fn lease(holder: &str, rv: &str) -> Observed {
        Observed {
            record: Some(LeaseRecord {
                holder: Some(holder.into()),
                lease_duration_seconds: Some(5),
                acquire_time: Some(WallTime(1)),
                renew_time: Some(WallTime(1)),
                lease_transitions: Some(0),
                kvip_renewed: None,
            }),
            resource_version: Some(rv.into()),
        }
    }

    /// Takes an absent Lease at `at`; the write is stored as version `rv`.
    fn take(c: &mut Campaign, at: Mono, rv: &str) {
        c.observe(
            Observed {
                record: None,
                resource_version: None,
            },
            at,
        );
        let Decision::Create(record) = c.decide(at, WallTime(10), true) else {
            panic!("no create");
        };
        c.finished(
            WriteResult::Ok {
                record,
                resource_version: rv.into(),
            },
            at,
        );
        assert_eq!(c.transition(c.may_announce(at, true)), Some(true));
    }

    #[test]
    fn a_cache_entry_older_than_our_write_is_not_seen() {
        let mut c = campaign();
        take(&mut c, secs(0), "20");
        // The watch still shows another holder at version 10.
        c.observe(lease("other", "10"), secs(1));
        assert!(c.names("me"));
        assert!(c.may_announce(secs(1), true));
        c.observe(lease("other", "30"), secs(2));
        assert!(c.names("other"));
        assert!(!c.may_announce(secs(2), true));
    }

    #[test]
    fn holds_through_an_outage_then_yields_to_a_claimant() {
        let mut c = campaign();
        take(&mut c, secs(0), "5");
        let _ = c.decide(secs(1), WallTime(11), true);
        assert_eq!(
            c.finished(WriteResult::Error, secs(1)),
            Some(Notice::HoldingThroughOutage)
        );
        // Said once: the next failure adds nothing.
        let _ = c.decide(secs(2), WallTime(12), true);
        assert_eq!(c.finished(WriteResult::Error, secs(2)), None);
        // Long after the Lease could have run out, still held: nobody could write.
        assert!(c.may_announce(secs(30), true));
        assert!(
            !c.yield_to_claim(secs(30), false),
            "one unconvincing frame (forged, say) is not enough"
        );
        assert!(c.may_announce(secs(30), true));
        assert!(
            c.yield_to_claim(secs(30), true),
            "an unconfirmed hold yields to a convincing claim"
        );
        assert!(!c.may_announce(secs(30), true));
    }

    #[test]
    fn a_write_the_budget_held_back_is_no_outage() {
        let mut c = campaign();
        take(&mut c, secs(0), "5");
        let _ = c.decide(secs(1), WallTime(11), true);
        assert_eq!(c.finished(WriteResult::NotSent, secs(1)), None);
        assert!(c.may_announce(secs(4), true), "the written term still runs");
        assert!(
            !c.may_announce(secs(5), true),
            "no outage hold past the term: another node may have taken it"
        );
    }

    #[test]
    fn a_holder_within_its_term_defends_and_a_new_write_ends_a_yield() {
        let mut c = campaign();
        take(&mut c, secs(0), "5");
        c.transition(true);
        assert!(
            !c.yield_to_claim(secs(1), true),
            "a fresh Lease is defended"
        );
        // A renewal fails with no answer: the hold goes on past the term.
        let _ = c.decide(secs(1), WallTime(11), true);
        c.finished(WriteResult::Error, secs(1));
        assert!(
            !c.yield_to_claim(secs(4), true),
            "past the renew deadline but within the term written: nobody else can hold it"
        );
        assert!(c.may_announce(secs(6), true), "outage hold past the term");
        assert!(
            c.yield_to_claim(secs(6), true),
            "an unconfirmed hold yields to a claim"
        );
        assert!(!c.may_announce(secs(6), true));
        c.observe(lease("me", "9"), secs(6));
        let Decision::Update { record, .. } = c.decide(secs(6), WallTime(20), true) else {
            panic!("no renewal");
        };
        c.finished(
            WriteResult::Ok {
                record,
                resource_version: "10".into(),
            },
            secs(6),
        );
        assert!(c.may_announce(secs(6), true));
    }

    #[test]
    fn adoption_lasts_until_the_first_write_settles() {
        let mut c = campaign();
        c.observe(lease("me", "3"), secs(0));
        c.adopt("me", secs(5));
        assert!(c.may_announce(secs(1), true));
        let _ = c.decide(secs(1), WallTime(20), true);
        c.finished(WriteResult::Conflict, secs(1));
        assert!(!c.may_announce(secs(1), true));
        let mut other = campaign();
        other.observe(lease("someone", "3"), secs(0));
        other.adopt("me", secs(5));
        assert_eq!(
            other.adoption_ends(secs(0)),
            None,
            "a takeover is no restart"
        );
        c.adopt("me", secs(9));
        assert_eq!(c.adoption_ends(secs(8)), Some(secs(9)));
        assert_eq!(
            c.adoption_ends(secs(9)),
            None,
            "a closed window wakes nobody"
        );
    }

    #[test]
    fn a_create_answered_before_the_watch_shows_it_is_not_undone_by_the_empty_cache() {
        let mut c = campaign();
        c.observe(Observed::default(), secs(0));
        let Decision::Create(record) = c.decide(secs(0), WallTime(1), true) else {
            panic!("no create");
        };
        c.finished(
            WriteResult::Ok {
                record,
                resource_version: "7".into(),
            },
            secs(0),
        );
        // The watch has not delivered the new Lease yet.
        c.observe(Observed::default(), secs(0));
        assert!(c.may_announce(secs(0), true), "our own create counts");
        assert!(
            matches!(c.decide(secs(0), WallTime(2), true), Decision::Wait(_)),
            "no second create racing the first"
        );
        // Deleted behind our back: the watch shows the delete with its own,
        // newer version, and that is believed.
        c.observe(
            Observed {
                record: None,
                resource_version: Some("9".into()),
            },
            secs(1),
        );
        assert!(!c.may_announce(secs(1), true), "withdrawn at the delete");
        assert!(matches!(
            c.decide(secs(1), WallTime(4), true),
            Decision::Create(_)
        ));
    }

    #[test]
    fn takeover_latency_is_measured_once_from_the_first_wish() {
        let mut c = campaign();
        c.observe(lease("other", "1"), secs(0));
        let _ = c.decide(secs(1), WallTime(1), true);
        let _ = c.decide(secs(3), WallTime(1), true);
        assert_eq!(c.take_wanting_since(secs(6)), Some(Duration::from_secs(5)));
        assert_eq!(c.take_wanting_since(secs(7)), None);
    }
}

/// How a node paces the renewals of the Leases it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// How many times the configured timings its writes use.
    pub stretch: u32,
    /// How far apart it renews each Lease (the elector keeps it between the
    /// stretched retry period and the stretched renew deadline).
    pub renew_every: Duration,
}

/// The pace of a node holding `held` Leases, so their renewals fit in
/// `share` of a write budget of `qps` writes a second: the configured `retry`
/// period while they fit; beyond, renewals spread out and the terms stretch,
/// never further than every observer honours for `lease`
/// ([`crate::election::max_stretch`]).
pub fn pace_for(held: usize, retry: Duration, lease: Duration, qps: u32, share: f64) -> Pace {
    let per_second = f64::from(qps.max(1)) * share.clamp(0.01, 1.0);
    let every = held as f64 / per_second;
    let needed = every / retry.as_secs_f64().max(f64::EPSILON);
    let stretch = if needed <= 1.0 {
        1
    } else {
        u32::try_from(needed.ceil() as u64).unwrap_or(u32::MAX)
    };
    Pace {
        stretch: stretch.min(crate::election::max_stretch(lease)),
        renew_every: Duration::try_from_secs_f64(every).unwrap_or(Duration::MAX),
    }
}

/// The campaign rules in a simulated world: one Lease on an API server that
/// can go down, lagging watches that go blind in an outage, nodes that come
/// and go as candidates, and claims on the wire, genuine or forged.
#[cfg(test)]
mod world {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const SEC: Duration = Duration::from_secs(1);

    #[derive(Debug, Clone)]
    enum Step {
        Decide(usize),
        /// Deliver the node's write: true = answered, false = lost on the way.
        Deliver(usize, bool),
        Watch(usize),
        Tick(u16),
        ToggleCandidate(usize),
        /// The API server goes down for everyone, or comes back.
        ToggleOutage,
        /// Every announcer hears every other one's gratuitous packets.
        Wire,
        /// A forged claim for the address reaches a node, and persists.
        Forged(usize),
        /// One forged frame claiming the address reaches a node.
        ForgedOnce(usize),
        Stretch(usize, u32),
        /// The node's write leaves now, after waiting for the write budget.
        Send(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3usize).prop_map(Step::Decide),
            5 => (0..3usize, prop_oneof![5 => Just(true), 1 => Just(false)]).prop_map(|(n, ok)| Step::Deliver(n, ok)),
            5 => (0..3usize).prop_map(Step::Watch),
            5 => (0u16..1500).prop_map(Step::Tick),
            1 => (0..3usize).prop_map(Step::ToggleCandidate),
            1 => Just(Step::ToggleOutage),
            2 => Just(Step::Wire),
            1 => (0..3usize).prop_map(Step::Forged),
            1 => (0..3usize).prop_map(Step::ForgedOnce),
            1 => (0..3usize, 1u32..4).prop_map(|(n, f)| Step::Stretch(n, f)),
            2 => (0..3usize).prop_map(Step::Send),
        ]
    }

    struct Node {
        campaign: Campaign,
        candidate: bool,
        request: Option<Decision>,
        /// When the request was decided, or left after waiting for the budget.
        sent: Mono,
        watch: VecDeque<Observed>,
    }

    struct World {
        now: Duration,
        api_down: bool,
        lease: crate::testing::SimLease,
        nodes: Vec<Node>,
    }

    impl World {
        fn new() -> World {
            let nodes = (0..3)
                .map(|i| Node {
                    campaign: Campaign::new(
                        Elector::new(format!("node-{i}"), 5 * SEC, 3 * SEC, SEC).unwrap(),
                    ),
                    candidate: true,
                    request: None,
                    sent: Mono::default(),
                    watch: VecDeque::from([Observed::default()]),
                })
                .collect();
            World {
                now: Duration::ZERO,
                api_down: false,
                lease: Default::default(),
                nodes,
            }
        }

        fn mono(&self) -> Mono {
            Mono(self.now)
        }

        fn snapshot(&self) -> Observed {
            self.lease.snapshot()
        }

        fn store(&mut self, decision: &Decision) -> WriteResult {
            let stored = self.lease.store(decision).unwrap_or(WriteResult::Error);
            if matches!(stored, WriteResult::Ok { .. }) {
                let snapshot = self.snapshot();
                for node in &mut self.nodes {
                    node.watch.push_back(snapshot.clone());
                }
            }
            stored
        }

        fn announcing(&self, n: usize) -> bool {
            let node = &self.nodes[n];
            node.campaign.may_announce(self.mono(), node.candidate)
        }

        fn announcers(&self) -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&n| self.announcing(n))
                .collect()
        }

        /// Runs one step; returns true when it was a renewal by a node that
        /// announced and named itself holder.
        fn run(&mut self, step: &Step) -> Result<bool, TestCaseError> {
            let now = self.mono();
            match *step {
                Step::Decide(n) => {
                    let node = &mut self.nodes[n];
                    if node.request.is_none() {
                        let d = node.campaign.decide(
                            now,
                            WallTime(now.0.as_micros() as i64),
                            node.candidate,
                        );
                        if matches!(d, Decision::Release { .. }) {
                            prop_assert!(
                                !node.campaign.may_announce(now, node.candidate),
                                "a release decided while still announcing"
                            );
                        }
                        if !matches!(d, Decision::Wait(_)) {
                            node.request = Some(d);
                            node.sent = now;
                        }
                    }
                }
                Step::Deliver(n, answered) => {
                    if let Some(request) = self.nodes[n].request.take() {
                        // A renewal that keeps the term's length (a shorter
                        // term may end the hold: that is a change of pace),
                        // answered within the renew deadline (an answer later
                        // than that may come after the term could have run out).
                        let held = self.nodes[n]
                            .campaign
                            .elector()
                            .record()
                            .and_then(|r| r.lease_duration_seconds);
                        let renewal = self.announcing(n)
                            && self.nodes[n].campaign.names(&format!("node-{n}"))
                            && matches!(&request, Decision::Update { record, .. }
                                if record.lease_duration_seconds == held)
                            && now.since(self.nodes[n].sent) < 3 * SEC;
                        let result = if self.api_down || !answered {
                            WriteResult::Error
                        } else {
                            self.store(&request)
                        };
                        let ok = matches!(result, WriteResult::Ok { .. });
                        self.nodes[n].campaign.finished(result, now);
                        return Ok(renewal && ok);
                    }
                }
                Step::Watch(n) => {
                    if !self.api_down
                        && let Some(event) = self.nodes[n].watch.pop_front()
                    {
                        self.nodes[n].campaign.observe(event, now);
                    }
                }
                Step::Tick(ms) => self.now += Duration::from_millis(u64::from(ms)),
                Step::ToggleCandidate(n) => self.nodes[n].candidate ^= true,
                Step::ToggleOutage => {
                    self.api_down ^= true;
                    if !self.api_down {
                        // The watches see again: terms restart now (the cache's
                        // blind gap), and a relist delivers the current state.
                        let snapshot = self.snapshot();
                        for node in &mut self.nodes {
                            node.watch.clear();
                            node.campaign.observe(snapshot.clone(), now);
                            node.campaign.restart_term(now);
                        }
                    }
                }
                Step::Wire => {
                    let announcers = self.announcers();
                    if announcers.len() > 1 {
                        for &n in &announcers {
                            self.nodes[n].campaign.yield_to_claim(now, true);
                        }
                    }
                }
                Step::Forged(n) => {
                    let fresh = self.nodes[n].campaign.holds(now) && self.announcing(n);
                    self.nodes[n].campaign.yield_to_claim(now, true);
                    prop_assert!(
                        !fresh || self.announcing(n),
                        "a persisting forged claim took the VIP from a freshly renewed holder"
                    );
                }
                Step::ForgedOnce(n) => {
                    let announcing = self.announcing(n);
                    self.nodes[n].campaign.yield_to_claim(now, false);
                    prop_assert!(
                        !announcing || self.announcing(n),
                        "one forged frame took the VIP (outage hold or adoption included)"
                    );
                }
                Step::Send(n) => {
                    let node = &mut self.nodes[n];
                    if node.request.is_some() {
                        node.campaign.sent(now);
                        node.sent = now;
                    }
                }
                Step::Stretch(n, f) => self.nodes[n].campaign.set_pace(Pace {
                    stretch: f,
                    renew_every: SEC * f * 3,
                }),
            }
            Ok(false)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn the_campaign_rules_keep_one_announcer(steps in proptest::collection::vec(step(), 1..500)) {
            let mut world = World::new();
            for step in &steps {
                let before = world.announcers();
                let renewal = world.run(step)?;
                let after = world.announcers();
                if renewal {
                    prop_assert_eq!(&before, &after, "a renewal changed who announces");
                }
                // Two announcers only while one holds on unconfirmed (an
                // outage hold or a yield not yet forced): never two fresh holders.
                let fresh: Vec<usize> = after
                    .iter()
                    .copied()
                    .filter(|&n| world.nodes[n].campaign.holds(world.mono()))
                    .collect();
                prop_assert!(fresh.len() <= 1, "two fresh holders {:?} after {:?}", fresh, step);
                if matches!(step, Step::Wire) {
                    prop_assert!(after.len() <= 1, "two announcers {:?} after they heard each other", after);
                }
                for n in 0..3 {
                    let announcing = world.announcing(n);
                    world.nodes[n].campaign.transition(announcing);
                }
            }
        }
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn leases_that_fit_the_budget_keep_the_configured_pace() {
        let retry = Duration::from_secs(1);
        let lease = Duration::from_secs(5);
        let stretch = |held, lease| pace_for(held, retry, lease, 50, 0.8).stretch;
        assert_eq!(stretch(0, lease), 1);
        assert_eq!(stretch(34, lease), 1);
        assert_eq!(stretch(40, lease), 1);
        assert_eq!(stretch(41, lease), 2);
        assert_eq!(stretch(334, lease), 3, "15 s at most");
        assert_eq!(stretch(334, Duration::from_secs(1)), 9);
        assert_eq!(stretch(334, Duration::from_secs(15)), 1);
    }

    #[test]
    fn renewals_spread_to_fit_the_budget() {
        let pace = pace_for(334, Duration::from_secs(1), Duration::from_secs(5), 50, 0.8);
        assert_eq!(pace.renew_every.as_millis(), 8350);
        assert_eq!(
            pace_for(0, Duration::from_secs(1), Duration::from_secs(5), 50, 0.8).renew_every,
            Duration::ZERO
        );
    }
}
