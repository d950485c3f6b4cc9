//! What `/healthz` and `/readyz` answer, judged from the signals the
//! reconcile loops, the kernel watch and the API watches leave behind
//! ([`crate::metrics`] keeps them). Pure: [`judge`] takes the signals and
//! the time and returns the verdict, so every rule is tested here.
//!
//! Liveness is conservative: only a stuck reconcile loop or a kernel that
//! cannot be read fails it, never the API server. A kubelet that restarted
//! kvip because the API server was down would take every VIP down with it,
//! which is what keeping VIPs through an outage exists to avoid. Readiness
//! says whether this instance works now: started (its caches synced once),
//! loops turning, the kernel followed, every conflict listener up, and the
//! API watches working — none failing for [`WATCH_FAILING_NOT_READY`], and
//! the load-balancer role's Lease watch, which carries every node's Lease
//! renewals, not silent for longer than its heartbeat. Readiness touches no
//! VIP: a pod that is not ready keeps announcing; only a rolling update
//! waits for it.

use kvip_core::Mono;
use std::time::Duration;

/// An API watch that has kept failing this long makes the instance not
/// ready. Watches reconnect within 2.5 s of a failure, so a blip of the API
/// server never gets here.
pub const WATCH_FAILING_NOT_READY: Duration = Duration::from_secs(30);

/// Errors of a watch further apart than this belong to different outages.
/// kube's watcher resumes a watch without delivering anything, so a watch
/// whose last error is older than this, with nothing delivered since, has
/// reconnected: a failing attempt ends within the client's 30 s connect
/// timeout plus the 2.5 s backoff.
pub const ERROR_RUN_GAP: Duration = Duration::from_secs(40);

/// The shortest heartbeat a Lease watch is held to (see [`lease_heartbeat`]).
pub const LEASE_HEARTBEAT_MIN: Duration = Duration::from_secs(30);

/// How long the load-balancer role's Lease watch may go without delivering
/// anything before the instance is not ready: every instance renews its
/// own Lease at least every 5 s (every retry period in membership mode),
/// and the watch shows those renewals, so silence this long means the watch
/// is cut off — a hung connection that reports no error.
pub fn lease_heartbeat(lease_duration: Duration) -> Duration {
    (lease_duration * 3).max(LEASE_HEARTBEAT_MIN)
}

/// How long the Lease watch may take to show a Lease write the API server
/// has stored (it shows it within milliseconds when it is alive).
pub const ECHO_WAIT: Duration = Duration::from_secs(5);

/// The shortest time between two restarts of the watches; it doubles with
/// every restart that did not bring the echoes back, up to `REWATCH_GAP_MAX`.
pub const REWATCH_GAP: Duration = Duration::from_secs(10);

/// The longest time between two restarts of the watches.
pub const REWATCH_GAP_MAX: Duration = Duration::from_secs(300);

/// Tells when the Lease watch's connection is dead though the API server
/// answers: it stored a Lease write of ours `ECHO_WAIT` ago or more, and the
/// watch has delivered nothing since. A NAT entry flushed under the watch
/// does this: kube-proxy masquerades a node's traffic to the `kubernetes`
/// ClusterIP, and the kernel drops masqueraded connections when the
/// interface goes down (a link flap, a renamed NIC). Nothing reports an
/// error; the watch would stay silent until its own timeout, minutes later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoCheck {
    /// The first stored write the watch has not shown yet.
    unechoed: Option<Mono>,
    /// The last time the watches were started over.
    restarted: Option<Mono>,
    /// How long after `restarted` they may be started over again.
    gap: Duration,
}

impl EchoCheck {
    /// One look, with when the watch last `delivered`, when the API server
    /// last `stored` a Lease write, and whether the watch is `listing` (a
    /// list in flight delivers nothing until it ends, however slow the API
    /// server: never judged, or a slow server would never finish one); true
    /// when the watches must start over: no sooner than `REWATCH_GAP` after
    /// the last time, doubling while restarts do not help.
    pub fn dead(
        &mut self,
        delivered: Option<Mono>,
        stored: Option<Mono>,
        listing: bool,
        now: Mono,
    ) -> bool {
        let shown = |at: Mono| delivered.is_some_and(|d| d >= at);
        if listing {
            self.unechoed = None;
            return false;
        }
        if self.unechoed.is_some_and(shown) {
            self.unechoed = None;
        }
        // The watch started last shows our writes: it works, and the next
        // restart may come soon again.
        if stored.is_some_and(shown) && self.restarted.is_some_and(|r| delivered > Some(r)) {
            self.gap = REWATCH_GAP;
        }
        if self.unechoed.is_none() {
            self.unechoed = stored.filter(|s| !shown(*s));
        }
        let late = self.unechoed.is_some_and(|w| now.since(w) >= ECHO_WAIT);
        let gap = self.gap.max(REWATCH_GAP);
        let may = self.restarted.is_none_or(|r| now.since(r) >= gap);
        if late && may {
            if self.restarted.is_some() {
                self.gap = (gap * 2).min(REWATCH_GAP_MAX);
            }
            self.restarted = Some(now);
            self.unechoed = None;
            return true;
        }
        false
    }
}

/// What one API watch has shown lately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchSeen {
    /// The last time it delivered anything (an object, a delete, a relist).
    pub delivered: Option<Mono>,
    /// The current run of errors with nothing delivered between them: the
    /// first and the last.
    pub errors: Option<(Mono, Mono)>,
}

impl WatchSeen {
    /// The watch delivered something at `now`: it works.
    pub fn delivered(&mut self, now: Mono) {
        self.delivered = Some(now);
        self.errors = None;
    }

    /// The watch failed at `now`.
    pub fn failed(&mut self, now: Mono) {
        self.errors = match self.errors {
            Some((first, last)) if now.since(last) <= ERROR_RUN_GAP => Some((first, now)),
            _ => Some((now, now)),
        };
    }

    /// How long the watch has been failing at `now`, if it is failing.
    pub fn failing_for(&self, now: Mono) -> Option<Duration> {
        let (first, last) = self.errors?;
        (now.since(last) <= ERROR_RUN_GAP).then(|| now.since(first))
    }
}

/// One API watch as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// What it watches, in a person's words (`Services`, `Lease`).
    pub name: &'static str,
    /// What it showed.
    pub seen: WatchSeen,
    /// The longest it may go without delivering, when something it watches
    /// is known to change that often.
    pub heartbeat: Option<Duration>,
}

/// Everything health is judged by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// Each role's last reconcile pass (`None`: its loop has not started).
    pub beats: Vec<(&'static str, Option<Mono>)>,
    /// How long ago the kernel's state was last read (`None`: not yet).
    pub netlink_age: Option<Duration>,
    /// The kernel's changes are followed (netlink works).
    pub netlink_up: bool,
    /// The roles have started: the load-balancer role's caches synced.
    pub started: bool,
    /// Interfaces holding VIPs without a working conflict listener.
    pub listeners_down: u64,
    /// The API watches.
    pub watches: Vec<Watch>,
}

/// How long things may take before they count as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A reconcile loop that has not passed for this long is stuck.
    pub stuck_after: Duration,
    /// How often the kernel's state is read on a quiet node.
    pub kernel_refresh: Duration,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `/healthz`: the reconcile loops turn and the kernel's state is read.
    pub alive: bool,
    /// `/readyz`: everything in the module doc holds.
    pub ready: bool,
    /// Why not, when not (the first problem found).
    pub problem: String,
}

/// Judges `signals` at `now`.
pub fn judge(signals: &Signals, now: Mono, limits: &Limits) -> Health {
    let stuck = signals
        .beats
        .iter()
        .find(|(_, beat)| beat.is_some_and(|b| now.since(b) >= limits.stuck_after))
        .map(|(role, _)| format!("the reconcile loop of the {role} role is stuck"));
    // A quiet node reads the kernel every refresh period; a reading may be running.
    let unread = signals
        .netlink_age
        .is_some_and(|age| age >= limits.stuck_after.saturating_add(limits.kernel_refresh))
        .then(|| "the kernel's interfaces cannot be read (netlink)".to_string());
    let alive_problem = stuck.or(unread);
    let alive = alive_problem.is_none();
    let problem = alive_problem
        .or_else(|| (!signals.started).then(|| "caches not synced yet".to_string()))
        .or_else(|| {
            (!signals.netlink_up && signals.netlink_age.is_some())
                .then(|| "netlink fails: interface changes are not followed".to_string())
        })
        .or_else(|| {
            (signals.listeners_down > 0)
                .then(|| "a conflict listener is down on an interface holding VIPs".to_string())
        })
        .or_else(|| watch_problem(&signals.watches, now))
        .unwrap_or_default();
    Health {
        alive,
        ready: problem.is_empty(),
        problem,
    }
}

/// The first watch that fails readiness, in words.
fn watch_problem(watches: &[Watch], now: Mono) -> Option<String> {
    watches.iter().find_map(|w| {
        if let Some(failing) = w
            .seen
            .failing_for(now)
            .filter(|d| *d >= WATCH_FAILING_NOT_READY)
        {
            return Some(format!(
                "the {} watch has failed for {} s: the API server cannot be reached or refuses it",
                w.name,
                failing.as_secs()
            ));
        }
        let silent = now.since(w.seen.delivered?);
        let heartbeat = w.heartbeat?;
        (silent >= heartbeat).then(|| {
            format!(
                "the {} watch has delivered nothing for {} s (every instance renews its Lease every few seconds): it is cut off from the API server",
                w.name,
                silent.as_secs()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Mono {
        Mono(Duration::from_secs(s))
    }

    const LIMITS: Limits = Limits {
        stuck_after: Duration::from_secs(10),
        kernel_refresh: Duration::from_secs(10),
    };

    /// A started instance whose every signal is fine at `at(100)`.
    fn healthy() -> Signals {
        let mut leases = WatchSeen::default();
        leases.delivered(at(99));
        let mut services = WatchSeen::default();
        services.delivered(at(5));
        Signals {
            beats: vec![("lb", Some(at(99))), ("cp", None)],
            netlink_age: Some(Duration::from_secs(3)),
            netlink_up: true,
            started: true,
            listeners_down: 0,
            watches: vec![
                Watch {
                    name: "Service",
                    seen: services,
                    heartbeat: None,
                },
                Watch {
                    name: "Lease",
                    seen: leases,
                    heartbeat: Some(Duration::from_secs(30)),
                },
            ],
        }
    }

    /// Judges `s` at `t` seconds, the lb loop having just passed.
    fn judge_at(s: &Signals, t: u64) -> Health {
        let mut s = s.clone();
        s.beats = vec![("lb", Some(at(t)))];
        judge(&s, at(t), &LIMITS)
    }

    #[test]
    fn a_healthy_instance_is_alive_and_ready() {
        let h = judge(&healthy(), at(100), &LIMITS);
        assert_eq!((h.alive, h.ready, h.problem.as_str()), (true, true, ""));
    }

    #[test]
    fn a_loop_that_has_not_started_is_not_stuck_but_a_stopped_one_is() {
        let mut s = healthy();
        s.beats = vec![("lb", None)];
        assert!(judge(&s, at(100), &LIMITS).alive);
        s.beats = vec![("lb", Some(at(99))), ("cp", Some(at(85)))];
        let h = judge(&s, at(100), &LIMITS);
        assert!(!h.alive && !h.ready);
        assert_eq!(h.problem, "the reconcile loop of the cp role is stuck");
    }

    #[test]
    fn an_api_outage_takes_readiness_but_never_liveness() {
        let mut s = healthy();
        for w in &mut s.watches {
            for t in (40..=100).step_by(3) {
                w.seen.failed(at(t));
            }
        }
        let h = judge(&s, at(100), &LIMITS);
        assert!(h.alive, "{h:?}");
        assert!(!h.ready);
        assert!(
            h.problem.contains("Service watch has failed for 60 s"),
            "{h:?}"
        );
    }

    #[test]
    fn a_short_failure_keeps_readiness() {
        let mut s = healthy();
        s.watches[0].seen.failed(at(80));
        s.watches[0].seen.failed(at(95));
        assert!(judge_at(&s, 100).ready);
        // Still failing 30 s after the first error: not ready.
        s.watches[0].seen.failed(at(110));
        assert!(!judge_at(&s, 110).ready);
        // Delivering again ends it at once.
        s.watches[0].seen.delivered(at(111));
        s.watches[1].seen.delivered(at(111));
        assert!(judge_at(&s, 112).ready);
    }

    #[test]
    fn a_watch_that_resumed_silently_counts_as_working_after_the_gap() {
        let mut s = healthy();
        s.watches[0].seen.failed(at(40));
        s.watches[0].seen.failed(at(75));
        assert!(!judge_at(&s, 100).ready);
        // No error for longer than the gap: the watch is up again, though a
        // quiet cluster gave it nothing to deliver.
        s.watches[1].seen.delivered(at(116));
        assert!(judge_at(&s, 116).ready);
        // A new error long after starts a new run, not the old one.
        s.watches[0].seen.failed(at(200));
        s.watches[1].seen.delivered(at(200));
        assert_eq!(
            s.watches[0].seen.failing_for(at(201)),
            Some(Duration::from_secs(1))
        );
        assert!(judge_at(&s, 201).ready);
    }

    #[test]
    fn a_silent_lease_watch_is_cut_off_but_a_quiet_service_watch_is_not() {
        let s = healthy();
        // Services delivered nothing for 125 s: a quiet cluster, fine.
        assert!(
            judge_at(&s, 130)
                .problem
                .contains("Lease watch has delivered nothing for 31 s")
        );
        let mut s = healthy();
        s.watches[1].seen.delivered(at(129));
        assert!(judge_at(&s, 130).ready);
    }

    #[test]
    fn readiness_waits_for_the_start_and_follows_netlink_and_listeners() {
        let mut s = healthy();
        s.started = false;
        assert_eq!(judge(&s, at(100), &LIMITS).problem, "caches not synced yet");
        let mut s = healthy();
        s.netlink_up = false;
        let h = judge(&s, at(100), &LIMITS);
        assert!(h.alive && !h.ready, "{h:?}");
        let mut s = healthy();
        s.listeners_down = 1;
        assert!(!judge(&s, at(100), &LIMITS).ready);
        let mut s = healthy();
        s.netlink_age = Some(Duration::from_secs(25));
        let h = judge(&s, at(100), &LIMITS);
        assert!(!h.alive && h.problem.contains("netlink"), "{h:?}");
    }

    #[test]
    fn a_lease_watch_that_never_shows_a_stored_write_is_dead() {
        let at = |s: u64| Some(Mono(Duration::from_secs(s)));
        let now = |s: u64| Mono(Duration::from_secs(s));
        let mut check = EchoCheck::default();
        // Nothing written yet: nothing to judge by.
        assert!(!check.dead(at(1), None, false, now(100)));
        // Written at 10, shown at 10: alive, however long ago.
        assert!(!check.dead(at(10), at(10), false, now(100)));
        // Written at 101, then every second after, nothing shown since 100:
        // the first write unshown counts, not the latest.
        assert!(!check.dead(at(100), at(101), false, now(102)));
        assert!(!check.dead(at(100), at(105), false, now(105)));
        assert!(check.dead(at(100), at(106), false, now(106)));
        // Started over at 106: not again before 116, however late.
        assert!(!check.dead(at(100), at(110), false, now(115)));
        assert!(check.dead(at(100), at(111), false, now(116)));
        // That did not help: the gap doubles to 20 s.
        assert!(!check.dead(at(100), at(120), false, now(135)));
        assert!(check.dead(at(100), at(121), false, now(136)));
        // The new watch shows the writes: alive again, and the gap is back to 10 s.
        assert!(!check.dead(at(140), at(140), false, now(145)));
        assert!(!check.dead(at(141), at(141), false, now(150)));
        assert!(check.dead(at(150), at(151), false, now(156)));
    }

    #[test]
    fn a_watch_still_listing_is_never_judged() {
        let at = |s: u64| Some(Mono(Duration::from_secs(s)));
        let now = |s: u64| Mono(Duration::from_secs(s));
        let mut check = EchoCheck::default();
        // A slow list: writes go through, nothing delivered for a minute.
        for t in 10..70 {
            assert!(!check.dead(at(5), at(t), true, now(t)), "at {t}");
        }
        // The list ends and the watch shows nothing more: judged from then on.
        assert!(!check.dead(at(70), at(71), false, now(72)));
        assert!(check.dead(at(70), at(72), false, now(77)));
    }

    #[test]
    fn the_lease_heartbeat_follows_the_lease_duration() {
        assert_eq!(lease_heartbeat(Duration::from_secs(5)), LEASE_HEARTBEAT_MIN);
        assert_eq!(
            lease_heartbeat(Duration::from_secs(15)),
            Duration::from_secs(45)
        );
    }
}
