//! Leader election on a `coordination.k8s.io/v1` Lease, as a state machine
//! that follows client-go's `leaderelection` package, so kvip and kube-vip can
//! contend for one Lease. It decides what to write; the daemon does the I/O.
//!
//! The rules, as in client-go:
//!
//! * A Lease is valid while, by this node's **monotonic** clock, less than the
//!   record's `leaseDurationSeconds` has passed since this node last saw the
//!   record change. Wall-clock timestamps in the record are only written,
//!   never trusted.
//! * A candidate takes the Lease when it is missing, has no holder, or has
//!   expired; the holder renews every retry period keeping `acquireTime` and
//!   `leaseTransitions`; a takeover increments `leaseTransitions`.
//! * Every write carries the observed `resourceVersion`, so of two nodes
//!   writing at once one gets 409 Conflict and has lost.
//! * A holder that stops being a candidate releases: empty holder,
//!   `leaseDurationSeconds` 1, both times set to now.
//!
//! When may the holder announce (design §7, keep announcing while the API is
//! unreachable)? Another node can only take the Lease with a write based on
//! our latest record, after watching it unchanged for the lease duration;
//! it first saw that record no earlier than the moment it was committed,
//! which is no earlier than the moment we *sent* it. So we may announce until
//! `sent + lease duration` of our last successful write, measured by our own
//! monotonic clock (clocks may be offset, but are assumed to run at the same
//! rate, as client-go assumes). Using the send time rather than the moment
//! the answer arrived is what makes this safe under slow responses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A monotonic instant: time since an arbitrary epoch that never steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub Duration);

impl Mono {
    /// This instant plus `d`, saturating instead of overflowing.
    pub fn after(self, d: Duration) -> Mono {
        Mono(self.0.checked_add(d).unwrap_or(Duration::MAX))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// A wall-clock instant, in microseconds since the Unix epoch (a Lease's `MicroTime`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WallTime(pub i64);

/// The spec of a Lease, as client-go's `LeaderElectionRecord` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// `holderIdentity`; `None` or empty means nobody holds it.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`: how long observers wait after the last change.
    pub lease_duration_seconds: Option<i32>,
    /// `acquireTime`.
    pub acquire_time: Option<WallTime>,
    /// `renewTime`.
    pub renew_time: Option<WallTime>,
    /// `leaseTransitions`: how many times the holder changed.
    pub lease_transitions: Option<i32>,
    /// The renew time kvip stamped on its last write of the Lease
    /// ([`KVIP_RENEWED_ANNOTATION`]), if any.
    pub kvip_renewed: Option<WallTime>,
}

/// The annotation every Lease write of kvip carries: its `renewTime`, in
/// microseconds since the epoch. Another daemon's write (kube-vip's
/// client-go keeps annotations but writes a new `renewTime`) leaves it
/// stale, so observers can tell who wrote a Lease last.
pub const KVIP_RENEWED_ANNOTATION: &str = "kvip.io/renewed";

impl LeaseRecord {
    /// The holder, with an empty string read as nobody.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    /// Whether kvip wrote this record: `None` when no kvip ever wrote the
    /// Lease (or an older kvip did), else whether its stamp is this
    /// record's renew time.
    pub fn written_by_kvip(&self) -> Option<bool> {
        let stamp = self.kvip_renewed?;
        Some(self.renew_time == Some(stamp))
    }

    /// The holder, when another daemon than kvip wrote this record last:
    /// kvip's stamp is stale, or there is none and the holder does not
    /// `run_kvip`.
    pub fn foreign_holder(&self, runs_kvip: impl Fn(&str) -> bool) -> Option<&str> {
        let holder = self.holder()?;
        let kvip = self.written_by_kvip().unwrap_or_else(|| runs_kvip(holder));
        (!kvip).then_some(holder)
    }
}

/// Whether `after` only renews the term of `before`: the same holder (not
/// released), duration and transitions. Such a change restarts that Lease's
/// expiry clock and changes nothing else, so it needs no reassessment: at a
/// hundred Services another node's renewals arrive many times a second.
pub fn is_renewal(before: &LeaseRecord, after: &LeaseRecord) -> bool {
    before.holder().is_some()
        && before.holder() == after.holder()
        && before.lease_duration_seconds == after.lease_duration_seconds
        && before.lease_transitions == after.lease_transitions
        && before.acquire_time == after.acquire_time
}

/// The longest stretch of a `lease_duration`: the stretched duration stays
/// within 15 s, which every observer honours in full (see
/// [`Elector::set_stretch`]); never below 1.
pub fn max_stretch(lease_duration: Duration) -> u32 {
    let cap = Duration::from_secs(15).as_millis();
    u32::try_from(cap / lease_duration.as_millis().max(1))
        .unwrap_or(1)
        .max(1)
}

/// What the daemon last read of the Lease (watch event, list or get).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The Lease's spec; `None` when the Lease does not exist.
    pub record: Option<LeaseRecord>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

/// What the daemon should do next for this Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the Lease with this spec (it does not exist).
    Create(LeaseRecord),
    /// Replace the spec, guarded by `resource_version`; takes over or renews.
    Update {
        /// The new spec.
        record: LeaseRecord,
        /// The version the write must match.
        resource_version: String,
    },
    /// Give the Lease up: stop announcing first, then write this spec.
    Release {
        /// The released spec (no holder).
        record: LeaseRecord,
        /// The version the write must match.
        resource_version: String,
    },
    /// Nothing to write; decide again after this long or on the next observation.
    Wait(Duration),
}

/// How a write from a [`Decision`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// The API server stored it.
    Ok {
        /// The spec as stored.
        record: LeaseRecord,
        /// The new `metadata.resourceVersion`.
        resource_version: String,
    },
    /// 409: someone else wrote first (or the Lease already existed).
    Conflict,
    /// Anything else, including a timeout: the write may or may not have been stored.
    Error,
    /// Never sent: the daemon's write budget held it back. Nothing is known
    /// about the API server, so this is no sign of an outage.
    NotSent,
}

/// Election settings the state machine cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    /// The identity written into `holderIdentity` is empty.
    #[error("the election identity (vip_nodename) is empty")]
    EmptyIdentity,
    /// The timings are out of order, or the lease is shorter than one second.
    #[error(
        "lease duration ({lease:?}) must be at least 1s and greater than the renew deadline \
         ({renew:?}), which must be greater than the retry period ({retry:?})"
    )]
    Timings {
        /// `vip_leaseduration`.
        lease: Duration,
        /// `vip_renewdeadline`.
        renew: Duration,
        /// `vip_retryperiod`.
        retry: Duration,
    },
}

/// The last record seen and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    record: Option<LeaseRecord>,
    resource_version: Option<String>,
    changed_at: Mono,
}

/// One node's view of one Lease, deciding when to take, renew or release it.
#[derive(Debug, Clone)]
pub struct Elector {
    /// Written into `holderIdentity`; the node name.
    identity: String,
    /// How long a record stays valid without change.
    lease_duration: Duration,
    /// How long the holder may fail to renew before it is no longer fresh.
    renew_deadline: Duration,
    /// Pause between attempts, and between renewals.
    retry_period: Duration,
    /// What we last saw; `None` before the first observation.
    seen: Option<Seen>,
    /// Send time of our last write that succeeded while naming us holder.
    last_renew: Option<Mono>,
    /// Send time of the write whose result is awaited.
    in_flight: Option<Mono>,
    /// After a failed write, no new write before this instant.
    retry_after: Option<Mono>,
    /// The candidacy given to the last `decide`.
    candidate: bool,
    /// How many times the configured timings this node's next write uses
    /// (see [`Elector::set_stretch`]).
    stretch: u32,
    /// The stretch of the write in flight.
    in_flight_stretch: u32,
    /// The stretch of our last successful write: its duration is what
    /// observers honour.
    held_stretch: u32,
    /// The pace of renewals asked by [`Elector::set_renew_every`].
    renew_every: Duration,
}

impl Elector {
    /// A fresh elector for `identity`, with client-go's three timings.
    pub fn new(
        identity: impl Into<String>,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Elector, ElectionError> {
        let identity = identity.into();
        if identity.is_empty() {
            return Err(ElectionError::EmptyIdentity);
        }
        if lease_duration < Duration::from_secs(1)
            || lease_duration <= renew_deadline
            || renew_deadline <= retry_period
            || retry_period.is_zero()
        {
            return Err(ElectionError::Timings {
                lease: lease_duration,
                renew: renew_deadline,
                retry: retry_period,
            });
        }
        Ok(Elector {
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
            seen: None,
            last_renew: None,
            in_flight: None,
            retry_after: None,
            candidate: false,
            stretch: 1,
            in_flight_stretch: 1,
            held_stretch: 1,
            renew_every: Duration::ZERO,
        })
    }

    /// The identity this elector writes as holder.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The holder named by the last record seen.
    pub fn holder(&self) -> Option<&str> {
        self.record().and_then(LeaseRecord::holder)
    }

    /// The last record seen (`None`: not observed yet, or the Lease does not exist).
    pub fn record(&self) -> Option<&LeaseRecord> {
        self.seen.as_ref().and_then(|s| s.record.as_ref())
    }

    /// We hold the Lease and renewed it within the renew deadline: the API is reachable.
    pub fn holds_fresh(&self, now: Mono) -> bool {
        self.within(now, self.renew_deadline * self.honoured_stretch())
    }

    /// Same as [`Elector::holds_fresh`]: client-go's "still leading".
    pub fn holds(&self, now: Mono) -> bool {
        self.holds_fresh(now)
    }

    /// We hold the Lease and no other node can have taken it yet (see module docs).
    pub fn may_announce(&self, now: Mono) -> bool {
        self.within(now, self.written_duration())
    }

    /// When [`Elector::may_announce`] turns false unless a renewal succeeds first;
    /// the daemon withdraws at that instant if it has not heard back by then.
    pub fn announce_deadline(&self) -> Option<Mono> {
        let renewed = self.last_renew.filter(|_| self.names_us())?;
        Some(renewed.after(self.written_duration()))
    }

    fn within(&self, now: Mono, window: Duration) -> bool {
        self.names_us()
            && self
                .last_renew
                .is_some_and(|renewed| now < renewed.after(window))
    }

    fn names_us(&self) -> bool {
        self.holder() == Some(self.identity.as_str())
    }

    /// The `leaseDurationSeconds` observers may honour for our term, as a
    /// duration: that of our last successful write, or a shorter one in flight.
    fn written_duration(&self) -> Duration {
        self.lease_duration * self.honoured_stretch()
    }

    /// The stretch of our last successful write, or of the write in flight
    /// if that is shorter: once sent it may be stored and watched at any
    /// moment, and an observer then waits out only its shorter duration,
    /// counted from no earlier than our last successful write was sent (as
    /// after [`WriteResult::Error`]).
    fn honoured_stretch(&self) -> u32 {
        match self.in_flight {
            Some(_) => self.held_stretch.min(self.in_flight_stretch),
            None => self.held_stretch,
        }
    }

    /// The `leaseDurationSeconds` our next write carries.
    fn written_seconds(&self) -> i32 {
        i32::try_from((self.lease_duration * self.stretch).as_secs()).unwrap_or(i32::MAX)
    }

    /// The longest stretch: a written duration every observer honours in
    /// full (no more than 15 s, the least [`Elector::longest_honoured`] of
    /// any kvip), and never below the configured timings.
    pub fn max_stretch(&self) -> u32 {
        max_stretch(self.lease_duration)
    }

    /// Stretches this node's own timings by `factor` (clamped to
    /// 1..=[`Elector::max_stretch`]): writes carry `factor` times the lease
    /// duration, renewals come `factor` times the retry period apart, and the
    /// renew deadline grows alike. A node holding more Leases than its API
    /// write budget can renew at the configured pace keeps them all valid
    /// this way, at the price of a longer failover for those Leases. The
    /// change takes effect with the next write; what is held keeps the
    /// duration it was written with.
    pub fn set_stretch(&mut self, factor: u32) {
        self.stretch = factor.clamp(1, self.max_stretch());
    }

    /// Renews what is held no more often than every `every`: a node holding
    /// more Leases than its write budget renews at the stretched pace spreads
    /// them over the renew deadline instead. The interval stays at least the
    /// (stretched) retry period and leaves one retry period before the renew
    /// deadline.
    pub fn set_renew_every(&mut self, every: Duration) {
        self.renew_every = every;
    }

    /// The time between two renewals of a held Lease.
    pub fn renew_interval(&self) -> Duration {
        // A term written at a shorter stretch is renewed at its own pace.
        let stretch = self.stretch.min(self.held_stretch);
        let least = self.retry_period * stretch;
        let latest = (self.renew_deadline * stretch).saturating_sub(self.retry_period);
        self.renew_every.min(latest).max(least)
    }

    /// The write awaited went out at `at` (it may have waited for the write
    /// budget since it was decided): the term it renews starts then.
    pub fn sent(&mut self, at: Mono) {
        if let Some(decided) = self.in_flight
            && decided < at
        {
            self.in_flight = Some(at);
        }
    }

    /// The longest `leaseDurationSeconds` of another holder this elector
    /// waits out: three of its own lease durations, and at least 15 s (kube-vip's
    /// default), so kvip and kube-vip can share Leases during a migration.
    pub fn longest_honoured(&self) -> Duration {
        (self.lease_duration * 3).max(Duration::from_secs(15))
    }

    /// Records what the daemon read; a changed record restarts the expiry clock.
    pub fn observe(&mut self, observed: Observed, now: Mono) {
        let changed = self.seen.as_ref().is_none_or(|s| {
            s.record != observed.record || s.resource_version != observed.resource_version
        });
        if changed {
            self.seen = Some(Seen {
                record: observed.record,
                resource_version: observed.resource_version,
                changed_at: now,
            });
            // New information: a write may now succeed, so do not hold back.
            self.retry_after = None;
        }
        if !self.names_us() {
            self.last_renew = None;
        }
    }

    /// Starts another holder's term again at `at`: while this node could not
    /// watch the Lease (an API outage) the holder may have renewed unseen, so
    /// its term is judged from the moment the watch could see again, never
    /// from before the gap. Our own term is not touched: it rests on our
    /// writes, not on what we saw.
    pub fn restart_term(&mut self, at: Mono) {
        if self.names_us() {
            return;
        }
        if let Some(seen) = self.seen.as_mut()
            && seen.record.as_ref().and_then(LeaseRecord::holder).is_some()
            && seen.changed_at < at
        {
            seen.changed_at = at;
        }
    }

    /// What to write now, if anything. `candidate`: this node may hold the Lease.
    pub fn decide(&mut self, now: Mono, now_wall: WallTime, candidate: bool) -> Decision {
        self.candidate = candidate;
        if !candidate {
            // Withdraw before release: stop announcing before anything is written.
            self.last_renew = None;
        }
        let wait = Decision::Wait(self.retry_period);
        if self.in_flight.is_some() {
            return wait;
        }
        if let Some(until) = self.retry_after
            && now < until
        {
            return Decision::Wait(until.since(now));
        }
        let Some(seen) = &self.seen else {
            return wait;
        };
        let Some(current) = &seen.record else {
            if !candidate {
                return wait;
            }
            let record = self.our_record(None, now_wall, 0);
            self.in_flight = Some(now);
            self.in_flight_stretch = self.stretch;
            return Decision::Create(record);
        };
        let Some(resource_version) = seen.resource_version.clone() else {
            return wait;
        };
        let ours = current.holder() == Some(self.identity.as_str());
        let transitions = current.lease_transitions.unwrap_or(0);

        let record = if !candidate {
            if !ours {
                return wait;
            }
            let at = Self::later_than(current, now_wall);
            let record = LeaseRecord {
                holder: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(at),
                renew_time: Some(at),
                lease_transitions: Some(transitions),
                kvip_renewed: Some(at),
            };
            self.in_flight = Some(now);
            self.in_flight_stretch = self.stretch;
            return Decision::Release {
                record,
                resource_version,
            };
        } else if ours {
            if let Some(renewed) = self.last_renew {
                let due = renewed.after(self.renew_interval());
                if now < due {
                    return Decision::Wait(due.since(now));
                }
            }
            self.our_record(Some(current), now_wall, transitions)
        } else if current.holder().is_none() {
            self.our_record(None, now_wall, transitions.saturating_add(1))
        } else {
            let expires = self.term_ends(seen.changed_at, current);
            if now < expires {
                return Decision::Wait(expires.since(now));
            }
            self.our_record(None, now_wall, transitions.saturating_add(1))
        };
        self.in_flight = Some(now);
        self.in_flight_stretch = self.stretch;
        Decision::Update {
            record,
            resource_version,
        }
    }

    /// When the term of `record`, last changed at `changed_at`, runs out
    /// for an observer.
    fn term_ends(&self, changed_at: Mono, record: &LeaseRecord) -> Mono {
        let valid_for = match record.lease_duration_seconds {
            // Honour the holder's duration, but not without bound: a Lease
            // edited by hand to a day must not wedge the address for a day.
            Some(s) if s > 0 => {
                Duration::from_secs(u64::from(s.unsigned_abs())).min(self.longest_honoured())
            }
            // Unknown duration: be patient rather than take over at once.
            _ => self.lease_duration,
        };
        changed_at.after(valid_for)
    }

    /// Another node holds the Lease and its term has not run out at `now`.
    pub fn held_by_other(&self, now: Mono) -> Option<&str> {
        let seen = self.seen.as_ref()?;
        let record = seen.record.as_ref()?;
        let holder = record.holder().filter(|h| *h != self.identity)?;
        (now < self.term_ends(seen.changed_at, record)).then_some(holder)
    }

    /// A record naming us. `renewing`: the current record, whose acquire time is kept.
    fn our_record(
        &self,
        renewing: Option<&LeaseRecord>,
        now_wall: WallTime,
        transitions: i32,
    ) -> LeaseRecord {
        let at = match renewing.or(self.record()) {
            Some(current) => Self::later_than(current, now_wall),
            None => now_wall,
        };
        LeaseRecord {
            holder: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.written_seconds()),
            acquire_time: Some(renewing.and_then(|r| r.acquire_time).unwrap_or(at)),
            renew_time: Some(at),
            lease_transitions: Some(transitions),
            kvip_renewed: Some(at),
        }
    }

    /// `now_wall`, moved past the record's renew time if the wall clock lags or
    /// stepped back, so every write visibly changes the record for observers.
    fn later_than(current: &LeaseRecord, now_wall: WallTime) -> WallTime {
        match current.renew_time {
            Some(WallTime(previous)) if previous >= now_wall.0 => {
                WallTime(previous.saturating_add(1))
            }
            _ => now_wall,
        }
    }

    /// Records how the write from the last [`Decision`] ended.
    pub fn write_result(&mut self, result: WriteResult, now: Mono) {
        let sent = self.in_flight.take();
        match result {
            WriteResult::Ok {
                record,
                resource_version,
            } => {
                self.seen = Some(Seen {
                    record: Some(record),
                    resource_version: Some(resource_version),
                    changed_at: now,
                });
                self.retry_after = None;
                self.held_stretch = self.in_flight_stretch;
                self.last_renew = if self.names_us() && self.candidate {
                    sent
                } else {
                    None
                };
            }
            WriteResult::Conflict => {
                self.last_renew = None;
                self.retry_after = Some(now.after(self.retry_period));
            }
            WriteResult::Error => {
                // It may have been stored anyway: observers may honour the
                // shorter of the two terms.
                self.held_stretch = self.held_stretch.min(self.in_flight_stretch);
                self.retry_after = Some(now.after(self.retry_period));
            }
            WriteResult::NotSent => {
                self.retry_after = Some(now.after(self.retry_period));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed_by(holder: &str, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: Some(5),
            acquire_time: Some(WallTime(1)),
            renew_time: Some(WallTime(renewed)),
            lease_transitions: Some(2),
            kvip_renewed: None,
        }
    }

    #[test]
    fn only_a_renewal_of_a_held_term_is_a_renewal() {
        let before = renewed_by("a", 10);
        assert!(is_renewal(&before, &renewed_by("a", 20)));
        assert!(!is_renewal(&before, &renewed_by("b", 20)), "a takeover");
        let released = LeaseRecord {
            holder: Some(String::new()),
            ..renewed_by("a", 20)
        };
        assert!(!is_renewal(&before, &released), "a release");
        assert!(
            !is_renewal(&released, &renewed_by("a", 30)),
            "taken after a release"
        );
        let longer = LeaseRecord {
            lease_duration_seconds: Some(15),
            ..renewed_by("a", 20)
        };
        assert!(!is_renewal(&before, &longer), "a new duration");
    }

    /// An elector for "me" that saw "other" renew at `at`.
    fn held_by_other_seen_at(at: Duration) -> Elector {
        let secs = Duration::from_secs;
        let mut e = Elector::new("me", secs(5), secs(3), secs(1)).unwrap();
        e.observe(
            Observed {
                record: Some(renewed_by("other", 10)),
                resource_version: Some("7".into()),
            },
            Mono(at),
        );
        e
    }

    #[test]
    fn a_term_restarted_after_a_watch_gap_is_waited_out_from_the_restart() {
        let secs = Duration::from_secs;
        let mut e = held_by_other_seen_at(secs(0));
        // Blind from 1 s to 9 s: the holder may have renewed unseen.
        e.restart_term(Mono(secs(9)));
        assert!(matches!(
            e.decide(Mono(secs(13)), WallTime(0), true),
            Decision::Wait(d) if d == secs(1)
        ));
        assert!(matches!(
            e.decide(Mono(secs(14)), WallTime(0), true),
            Decision::Update { .. }
        ));
    }

    #[test]
    fn a_restart_never_touches_our_own_term_nor_shortens_one() {
        let secs = Duration::from_secs;
        let mut e = held_by_other_seen_at(secs(8));
        e.restart_term(Mono(secs(2)));
        assert!(matches!(
            e.decide(Mono(secs(12)), WallTime(0), true),
            Decision::Wait(d) if d == secs(1)
        ));
        let mut mine = Elector::new("me", secs(5), secs(3), secs(1)).unwrap();
        mine.observe(
            Observed {
                record: None,
                resource_version: None,
            },
            Mono(secs(0)),
        );
        let Decision::Create(record) = mine.decide(Mono(secs(0)), WallTime(5), true) else {
            panic!("no create");
        };
        mine.write_result(
            WriteResult::Ok {
                record,
                resource_version: "1".into(),
            },
            Mono(secs(0)),
        );
        mine.restart_term(Mono(secs(4)));
        assert!(mine.may_announce(Mono(secs(4))));
        assert_eq!(mine.announce_deadline(), Some(Mono(secs(5))));
    }

    #[test]
    fn a_stretched_holder_writes_longer_terms_and_renews_less_often() {
        let secs = Duration::from_secs;
        let mut e = Elector::new("me", secs(5), secs(3), secs(1)).unwrap();
        assert_eq!(e.max_stretch(), 3);
        e.set_stretch(10);
        e.observe(Observed::default(), Mono(secs(0)));
        let Decision::Create(record) = e.decide(Mono(secs(0)), WallTime(1), true) else {
            panic!("no create");
        };
        assert_eq!(record.lease_duration_seconds, Some(15), "clamped to 3x");
        e.write_result(
            WriteResult::Ok {
                record,
                resource_version: "1".into(),
            },
            Mono(secs(0)),
        );
        assert!(
            matches!(e.decide(Mono(secs(2)), WallTime(2), true), Decision::Wait(d) if d == secs(1))
        );
        assert!(e.holds_fresh(Mono(secs(8))) && e.may_announce(Mono(secs(14))));
        assert!(!e.may_announce(Mono(secs(15))));
        // Back to the configured pace: what is held keeps its written term.
        e.set_stretch(1);
        assert!(e.may_announce(Mono(secs(14))));
        let Decision::Update { record, .. } = e.decide(Mono(secs(3)), WallTime(3), true) else {
            panic!("no renewal");
        };
        assert_eq!(record.lease_duration_seconds, Some(5));
        let long = Elector::new("x", secs(15), secs(10), secs(2)).unwrap();
        assert_eq!(long.max_stretch(), 1);
    }

    #[test]
    fn a_paced_holder_spreads_renewals_from_when_each_write_left() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut e = Elector::new("me", secs(5), secs(3), secs(1)).unwrap();
        e.set_stretch(3);
        e.set_renew_every(ms(8350));
        assert_eq!(
            e.renew_interval(),
            secs(2),
            "nothing held at 3x yet: one retry period before the configured renew deadline"
        );
        e.observe(Observed::default(), Mono(secs(0)));
        let Decision::Create(record) = e.decide(Mono(secs(0)), WallTime(1), true) else {
            panic!("no create");
        };
        // The write waited 2 s for the budget before it left.
        e.sent(Mono(secs(2)));
        e.sent(Mono(secs(1)));
        e.write_result(
            WriteResult::Ok {
                record,
                resource_version: "1".into(),
            },
            Mono(ms(2500)),
        );
        assert_eq!(
            e.renew_interval(),
            secs(8),
            "one retry period before the 9 s renew deadline"
        );
        assert!(
            matches!(e.decide(Mono(ms(9900)), WallTime(2), true), Decision::Wait(d) if d == ms(100))
        );
        assert!(
            e.holds_fresh(Mono(ms(10_999))),
            "the term runs from when the write left"
        );
        assert!(!e.holds_fresh(Mono(secs(11))));
        assert!(matches!(
            e.decide(Mono(secs(10)), WallTime(3), true),
            Decision::Update { .. }
        ));
    }

    #[test]
    fn a_hand_edited_day_long_lease_is_waited_out_for_a_bounded_time() {
        let secs = Duration::from_secs;
        let mut e = Elector::new("a", secs(5), secs(3), secs(1)).unwrap();
        let garbage = LeaseRecord {
            holder: Some("ghost".into()),
            lease_duration_seconds: Some(86_400),
            acquire_time: None,
            renew_time: None,
            lease_transitions: Some(-7),
            kvip_renewed: None,
        };
        e.observe(
            Observed {
                record: Some(garbage),
                resource_version: Some("1".into()),
            },
            Mono(secs(0)),
        );
        assert!(matches!(
            e.decide(Mono(secs(14)), WallTime(0), true),
            Decision::Wait(_)
        ));
        assert!(matches!(
            e.decide(Mono(secs(16)), WallTime(0), true),
            Decision::Update { .. }
        ));
    }
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: f64) -> Mono {
        Mono(Duration::from_secs_f64(secs))
    }

    fn wall(secs: i64) -> WallTime {
        WallTime(1_700_000_000_000_000 + secs * 1_000_000)
    }

    fn elector(id: &str) -> Elector {
        Elector::new(id, 5 * SEC, 3 * SEC, SEC).unwrap()
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.to_string()),
            lease_duration_seconds: Some(5),
            acquire_time: Some(wall(0)),
            renew_time: Some(wall(0)),
            lease_transitions: Some(transitions),
            kvip_renewed: None,
        }
    }

    fn observed(record: LeaseRecord, rv: &str) -> Observed {
        Observed {
            record: Some(record),
            resource_version: Some(rv.to_string()),
        }
    }

    /// Applies a write decision as a perfect API server would.
    fn ok(decision: &Decision, rv: &str) -> WriteResult {
        let record = match decision {
            Decision::Create(r) => r.clone(),
            Decision::Update { record, .. } | Decision::Release { record, .. } => record.clone(),
            Decision::Wait(_) => panic!("no write in {decision:?}"),
        };
        WriteResult::Ok {
            record,
            resource_version: rv.to_string(),
        }
    }

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(
            Elector::new("", 5 * SEC, 3 * SEC, SEC).unwrap_err(),
            ElectionError::EmptyIdentity
        );
        assert!(Elector::new("a", 3 * SEC, 3 * SEC, SEC).is_err());
        assert!(Elector::new("a", 5 * SEC, 3 * SEC, 3 * SEC).is_err());
    }

    #[test]
    fn waits_until_it_has_observed_the_lease() {
        let mut e = elector("a");
        assert_eq!(e.decide(at(0.0), wall(0), true), Decision::Wait(SEC));
    }

    #[test]
    fn creates_a_missing_lease_and_then_may_announce() {
        let mut e = elector("a");
        e.observe(Observed::default(), at(0.0));
        let d = e.decide(at(0.0), wall(0), true);
        let Decision::Create(record) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(record.holder.as_deref(), Some("a"));
        assert_eq!(record.lease_duration_seconds, Some(5));
        assert_eq!(record.lease_transitions, Some(0));
        assert!(!e.may_announce(at(0.1)), "not before the API confirmed it");
        e.write_result(ok(&d, "1"), at(0.2));
        assert!(e.may_announce(at(0.2)) && e.holds_fresh(at(0.2)));
        assert_eq!(e.holder(), Some("a"));
        // Validity counts from when the write was sent, not when it was answered.
        assert!(e.may_announce(at(4.99)));
        assert!(!e.may_announce(at(5.0)));
        assert!(!e.holds_fresh(at(3.0)));
    }

    #[test]
    fn takes_over_only_after_expiry() {
        let mut e = elector("b");
        e.observe(observed(held_by("a", 3), "7"), at(10.0));
        assert_eq!(e.decide(at(12.0), wall(12), true), Decision::Wait(3 * SEC));
        // The same record observed again does not restart the clock...
        e.observe(observed(held_by("a", 3), "7"), at(13.0));
        assert_eq!(e.decide(at(14.5), wall(14), true), Decision::Wait(SEC / 2));
        // ...but a renewal does.
        let mut renewed = held_by("a", 3);
        renewed.renew_time = Some(wall(14));
        e.observe(observed(renewed, "8"), at(14.0));
        assert!(matches!(
            e.decide(at(18.9), wall(18), true),
            Decision::Wait(_)
        ));
        let d = e.decide(at(19.0), wall(19), true);
        let Decision::Update {
            record,
            resource_version,
        } = &d
        else {
            panic!("{d:?}")
        };
        assert_eq!(resource_version, "8");
        assert_eq!(record.holder.as_deref(), Some("b"));
        assert_eq!(record.lease_transitions, Some(4));
        assert_eq!(record.acquire_time, Some(wall(19)));
        assert_eq!(record.renew_time, Some(wall(19)));
    }

    #[test]
    fn empty_holder_is_taken_at_once() {
        let mut e = elector("b");
        let mut released = held_by("", 2);
        released.lease_duration_seconds = Some(1);
        e.observe(observed(released, "9"), at(0.0));
        let d = e.decide(at(0.0), wall(1), true);
        assert!(
            matches!(&d, Decision::Update { record, .. } if record.holder.as_deref() == Some("b") && record.lease_transitions == Some(3)),
            "{d:?}"
        );
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let mut e = elector("a");
        e.observe(observed(held_by("a", 2), "5"), at(0.0));
        let d = e.decide(at(0.0), wall(3), true);
        let Decision::Update { record, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(record.acquire_time, Some(wall(0)));
        assert_eq!(record.renew_time, Some(wall(3)));
        assert_eq!(record.lease_transitions, Some(2));
        e.write_result(ok(&d, "6"), at(0.1));
        // Next renewal one retry period after the last one was sent.
        assert_eq!(e.decide(at(0.5), wall(3), true), Decision::Wait(SEC / 2));
        let d = e.decide(at(1.0), wall(3), true);
        let Decision::Update { record, .. } = &d else {
            panic!("{d:?}")
        };
        // The wall clock did not move, but the record still changes.
        assert_eq!(record.renew_time, Some(WallTime(wall(3).0 + 1)));
    }

    #[test]
    fn release_writes_an_empty_holder_after_withdrawing() {
        let mut e = elector("a");
        e.observe(Observed::default(), at(0.0));
        let d = e.decide(at(0.0), wall(0), true);
        e.write_result(ok(&d, "1"), at(0.0));
        assert!(e.may_announce(at(1.0)));
        let d = e.decide(at(1.0), wall(1), false);
        assert!(
            !e.may_announce(at(1.0)),
            "withdraw before the release is written"
        );
        let Decision::Release {
            record,
            resource_version,
        } = &d
        else {
            panic!("{d:?}")
        };
        assert_eq!(resource_version, "1");
        assert_eq!(record.holder, None);
        assert_eq!(record.lease_duration_seconds, Some(1));
        assert_eq!(record.acquire_time, Some(wall(1)));
        assert_eq!(record.renew_time, Some(wall(1)));
        assert_eq!(record.lease_transitions, Some(0));
        e.write_result(ok(&d, "2"), at(1.1));
        assert_eq!(e.holder(), None);
        assert_eq!(e.decide(at(2.0), wall(2), false), Decision::Wait(SEC));
    }

    #[test]
    fn a_conflict_loses() {
        let mut e = elector("a");
        e.observe(Observed::default(), at(0.0));
        let d = e.decide(at(0.0), wall(0), true);
        e.write_result(ok(&d, "1"), at(0.0));
        let _renew = e.decide(at(1.0), wall(1), true);
        e.write_result(WriteResult::Conflict, at(1.1));
        assert!(!e.may_announce(at(1.1)));
        assert!(!e.holds(at(1.1)));
        // It backs off, then learns who won.
        assert!(matches!(
            e.decide(at(1.5), wall(1), true),
            Decision::Wait(_)
        ));
        e.observe(observed(held_by("b", 1), "3"), at(1.6));
        assert_eq!(e.holder(), Some("b"));
        assert!(matches!(
            e.decide(at(1.6), wall(1), true),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn keeps_announcing_through_api_errors_until_the_lease_could_expire() {
        let mut e = elector("a");
        e.observe(Observed::default(), at(0.0));
        let d = e.decide(at(0.0), wall(0), true);
        e.write_result(ok(&d, "1"), at(0.5));
        for t in [1.0, 2.0, 3.0, 4.0] {
            let d = e.decide(at(t), wall(0), true);
            assert!(matches!(d, Decision::Update { .. }), "{t}: {d:?}");
            e.write_result(WriteResult::Error, at(t));
        }
        assert!(e.may_announce(at(4.9)) && !e.holds_fresh(at(4.9)));
        assert_eq!(e.announce_deadline(), Some(at(5.0)));
        assert!(!e.may_announce(at(5.0)));
    }

    #[test]
    fn the_old_holder_stops_exactly_when_a_watcher_may_take_over() {
        let (mut a, mut b) = (elector("a"), elector("b"));
        a.observe(Observed::default(), at(0.0));
        b.observe(Observed::default(), at(0.0));
        let d = a.decide(at(0.0), wall(0), true);
        a.write_result(ok(&d, "1"), at(0.0));
        let Decision::Create(record) = d else {
            panic!("{d:?}")
        };
        // b sees the record at once; a is then cut off from the API server.
        b.observe(observed(record, "1"), at(0.0));
        assert!(matches!(
            b.decide(at(4.999), wall(4), true),
            Decision::Wait(_)
        ));
        let d = b.decide(at(5.0), wall(5), true);
        assert!(matches!(d, Decision::Update { .. }), "{d:?}");
        b.write_result(ok(&d, "2"), at(5.0));
        assert!(b.may_announce(at(5.0)));
        assert!(a.may_announce(at(4.999)) && !a.may_announce(at(5.0)));
    }

    #[test]
    fn does_not_write_while_a_write_is_in_flight() {
        let mut e = elector("a");
        e.observe(Observed::default(), at(0.0));
        assert!(matches!(
            e.decide(at(0.0), wall(0), true),
            Decision::Create(_)
        ));
        assert_eq!(e.decide(at(0.5), wall(0), true), Decision::Wait(SEC));
    }

    #[test]
    fn a_renewal_answered_after_losing_candidacy_does_not_announce() {
        let mut e = elector("a");
        e.observe(observed(held_by("a", 0), "1"), at(0.0));
        let d = e.decide(at(0.0), wall(0), true);
        assert!(matches!(d, Decision::Update { .. }), "{d:?}");
        assert_eq!(e.decide(at(0.1), wall(0), false), Decision::Wait(SEC));
        e.write_result(ok(&d, "2"), at(0.2));
        assert!(!e.may_announce(at(0.2)));
        assert!(matches!(
            e.decide(at(0.3), wall(0), false),
            Decision::Release { .. }
        ));
    }

    #[test]
    fn an_unstretched_renewal_in_flight_shortens_the_term_at_once() {
        // a holds a term written at twice its 3 s lease, then un-stretches
        // and renews with 3 s: the renewal is stored and watched, its answer
        // is lost. b may take over 3 s after it saw the renewal, so a must
        // count its term by the shorter duration from the moment it sends.
        let mut a = Elector::new("a", 3 * SEC, 2 * SEC, SEC).unwrap();
        let mut b = elector("b");
        a.set_stretch(2);
        a.observe(Observed::default(), at(0.0));
        let create = a.decide(at(0.0), wall(0), true);
        a.write_result(ok(&create, "1"), at(0.0));
        assert_eq!(a.announce_deadline(), Some(at(6.0)));
        a.set_stretch(1);
        let renew = a.decide(at(1.0), wall(1), true);
        let Decision::Update { record, .. } = &renew else {
            panic!("{renew:?}")
        };
        assert_eq!(record.lease_duration_seconds, Some(3));
        b.observe(observed(record.clone(), "2"), at(1.0));
        assert_eq!(a.announce_deadline(), Some(at(3.0)));
        assert!(a.may_announce(at(2.999)) && !a.may_announce(at(3.0)));
        assert!(!a.holds_fresh(at(2.0)));
        let takeover = b.decide(at(4.0), wall(4), true);
        assert!(matches!(takeover, Decision::Update { .. }), "{takeover:?}");
        b.write_result(ok(&takeover, "3"), at(4.0));
        assert!(b.may_announce(at(4.0)) && !a.may_announce(at(4.0)));
        a.write_result(WriteResult::Error, at(4.5));
        assert!(!a.may_announce(at(4.5)));
    }

    // A simulated API server shared by several electors, with a lossy network,
    // lagging watches and independent monotonic clocks.

    #[derive(Debug, Clone)]
    enum Step {
        Decide(usize),
        ToggleCandidate(usize),
        /// Deliver node's pending write: 0 = applied and answered at once, 1 = lost,
        /// 2 = applied but the answer lost, 3 = applied and answered later.
        Deliver(usize, u8),
        Answer(usize),
        /// Deliver the next watch event.
        Watch(usize),
        /// Re-read the Lease directly (a relist).
        Relist(usize),
        Tick(u16),
        WallJump(usize, i32),
        /// Cut the node from the API server, or reconnect it.
        TogglePartition(usize),
        /// Sleep until the earliest moment a node asked to decide again.
        Sleep,
        /// Stretch a node's own timings (it holds more Leases than its budget renews).
        Stretch(usize, u32),
    }

    fn step(nodes: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..nodes).prop_map(Step::Decide),
            1 => (0..nodes).prop_map(Step::ToggleCandidate),
            5 => (0..nodes, prop_oneof![4 => Just(0u8), 4 => Just(3u8), 1 => Just(1u8), 1 => Just(2u8)]).prop_map(|(n, f)| Step::Deliver(n, f)),
            3 => (0..nodes).prop_map(Step::Answer),
            5 => (0..nodes).prop_map(Step::Watch),
            1 => (0..nodes).prop_map(Step::Relist),
            4 => (0u16..300).prop_map(Step::Tick),
            1 => (0u16..3000).prop_map(Step::Tick),
            1 => (0..nodes, -3_000_000i32..3_000_000).prop_map(|(n, s)| Step::WallJump(n, s)),
            1 => (0..nodes).prop_map(Step::TogglePartition),
            3 => Just(Step::Sleep),
            1 => (0..nodes, 1u32..8).prop_map(|(n, f)| Step::Stretch(n, f)),
        ]
    }

    struct Node {
        elector: Elector,
        offset: Duration,
        wall_offset: i64,
        candidate: bool,
        partitioned: bool,
        request: Option<Decision>,
        answer: Option<WriteResult>,
        wake: Option<Duration>,
        watch: std::collections::VecDeque<Observed>,
    }

    struct World {
        now: Duration,
        lease: crate::testing::SimLease,
        nodes: Vec<Node>,
    }

    impl World {
        fn new(offsets: &[u32], timings: &[u8]) -> World {
            let nodes = offsets
                .iter()
                .zip(timings)
                .enumerate()
                .map(|(i, (offset, t))| {
                    let (lease, renew, retry) = match t % 3 {
                        0 => (5, 3, 1),
                        1 => (15, 10, 2),
                        _ => (3, 2, 1),
                    };
                    Node {
                        elector: Elector::new(
                            format!("node-{i}"),
                            lease * SEC,
                            renew * SEC,
                            retry * SEC,
                        )
                        .unwrap(),
                        offset: Duration::from_millis(u64::from(*offset)),
                        wall_offset: i64::from(*offset) * 7,
                        candidate: true,
                        partitioned: false,
                        request: None,
                        answer: None,
                        wake: None,
                        watch: Default::default(),
                    }
                })
                .collect();
            World {
                now: Duration::ZERO,
                lease: Default::default(),
                nodes,
            }
        }

        fn mono(&self, n: usize) -> Mono {
            Mono(self.now + self.nodes[n].offset)
        }

        fn wall(&self, n: usize) -> WallTime {
            WallTime(self.now.as_micros() as i64 + self.nodes[n].wall_offset)
        }

        fn snapshot(&self) -> Observed {
            self.lease.snapshot()
        }

        /// The API server's guarded write; `None` on conflict.
        fn store(&mut self, decision: &Decision) -> Option<WriteResult> {
            let stored = self.lease.store(decision)?;
            if stored == WriteResult::Conflict {
                return None;
            }
            let snapshot = self.snapshot();
            for node in &mut self.nodes {
                node.watch.push_back(snapshot.clone());
            }
            Some(stored)
        }

        fn run(&mut self, step: &Step) {
            match *step {
                Step::Decide(n) => {
                    let (now, wall) = (self.mono(n), self.wall(n));
                    let node = &mut self.nodes[n];
                    let d = node.elector.decide(now, wall, node.candidate);
                    if let Decision::Wait(after) = d {
                        node.wake = Some(self.now + after);
                    } else {
                        assert!(
                            node.request.is_none() && node.answer.is_none(),
                            "two writes in flight"
                        );
                        node.request = Some(d);
                    }
                }
                Step::ToggleCandidate(n) => self.nodes[n].candidate ^= true,
                Step::Deliver(n, fault) => {
                    if let Some(request) = self.nodes[n].request.take() {
                        let partitioned = self.nodes[n].partitioned;
                        let answer = match fault {
                            _ if partitioned => WriteResult::Error,
                            1 => WriteResult::Error,
                            _ => {
                                let stored = self.store(&request).unwrap_or(WriteResult::Conflict);
                                if fault == 2 {
                                    WriteResult::Error
                                } else {
                                    stored
                                }
                            }
                        };
                        self.nodes[n].answer = Some(answer);
                        if fault == 0 {
                            self.run(&Step::Answer(n));
                        }
                    }
                }
                Step::Answer(n) => {
                    let now = self.mono(n);
                    let node = &mut self.nodes[n];
                    if let Some(answer) = node.answer.take() {
                        node.elector.write_result(answer, now);
                    }
                }
                Step::Watch(n) => {
                    let now = self.mono(n);
                    let node = &mut self.nodes[n];
                    if node.partitioned {
                        return;
                    }
                    if let Some(event) = node.watch.pop_front() {
                        node.elector.observe(event, now);
                    }
                }
                Step::Relist(n) => {
                    let (now, snapshot) = (self.mono(n), self.snapshot());
                    let node = &mut self.nodes[n];
                    if node.partitioned {
                        return;
                    }
                    node.watch.clear();
                    node.elector.observe(snapshot, now);
                }
                Step::Tick(ms) => self.now += Duration::from_millis(u64::from(ms)),
                Step::WallJump(n, micros) => self.nodes[n].wall_offset += i64::from(micros),
                Step::TogglePartition(n) => self.nodes[n].partitioned ^= true,
                Step::Stretch(n, factor) => self.nodes[n].elector.set_stretch(factor),
                Step::Sleep => {
                    let wake = self.nodes.iter().filter_map(|n| n.wake).min();
                    if let Some(wake) = wake.filter(|w| *w > self.now) {
                        self.now = wake;
                    }
                }
            }
        }

        fn announcers(&self) -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&n| self.nodes[n].elector.may_announce(self.mono(n)))
                .collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn never_two_announcers(
            offsets in proptest::collection::vec(0u32..100_000, 2..4),
            timings in proptest::collection::vec(any::<u8>(), 4),
            initial in proptest::option::of(0usize..4),
            steps in proptest::collection::vec(step(3), 1..600),
        ) {
            let mut world = World::new(&offsets, &timings);
            let count = world.nodes.len();
            if let Some(holder) = initial {
                // A Lease left behind by some earlier holder, maybe one of these nodes.
                world.lease.stored = Some((held_by(&format!("node-{holder}"), 0), 1));
            }
            for n in 0..count {
                world.run(&Step::Relist(n));
            }
            for step in &steps {
                let step = match step.clone() {
                    Step::Decide(n) | Step::ToggleCandidate(n) | Step::Answer(n) | Step::Watch(n) | Step::Relist(n) if n >= count => continue,
                    Step::Deliver(n, _) | Step::WallJump(n, _) if n >= count => continue,
                    Step::Stretch(n, _) if n >= count => continue,
                    Step::TogglePartition(n) if n >= count => continue,
                    s => s,
                };
                world.run(&step);
                // A daemon decides again whenever anything happened.
                for n in 0..count {
                    world.run(&Step::Decide(n));
                }
                let announcers = world.announcers();
                prop_assert!(announcers.len() <= 1, "both {:?} announce after {:?}", announcers, step);
                for n in 0..count {
                    let e = &world.nodes[n].elector;
                    let now = world.mono(n);
                    prop_assert!(!e.holds_fresh(now) || e.may_announce(now));
                }
            }

            // Then the network heals and every node is a candidate: someone must
            // announce within a lease duration plus a few retry periods.
            for node in &mut world.nodes {
                node.candidate = true;
                node.partitioned = false;
            }
            let mut announced = false;
            for _ in 0..200 {
                for n in 0..count {
                    world.run(&Step::Deliver(n, 0));
                    world.run(&Step::Answer(n));
                    while !world.nodes[n].watch.is_empty() {
                        world.run(&Step::Watch(n));
                    }
                    world.run(&Step::Decide(n));
                    prop_assert!(world.announcers().len() <= 1);
                }
                world.run(&Step::Tick(100));
                if world.announcers().len() == 1 {
                    announced = true;
                    break;
                }
            }
            prop_assert!(announced, "nobody took the Lease once the network healed");
        }
    }
}
