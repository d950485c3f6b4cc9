//! The write budget: how many API writes an instance may send, and how long
//! a target whose write was refused waits before it is tried again. An
//! overloaded or refusing API server must see fewer requests from kvip, never
//! a retry storm (design §7). Pure: time and jitter are arguments.

use crate::election::Mono;
use std::collections::HashMap;
use std::time::Duration;

/// A token bucket: `qps` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Mono,
}

impl TokenBucket {
    /// A full bucket at `now`. Zero rates are raised to one.
    pub fn new(qps: u32, burst: u32, now: Mono) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(qps.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Mono) {
        let elapsed = now.since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Mono) -> Result<(), Duration> {
        match self.reserve(now, Duration::ZERO) {
            Ok(_) => Ok(()),
            Err(wait) => Err(wait),
        }
    }

    /// Reserves the next token if it comes within `max_wait`: returns how
    /// long to wait before sending (zero when one is there now). Reservations
    /// queue in the order they are made, so a write that waited is not
    /// overtaken by later ones. Otherwise reserves nothing and says how long
    /// until a token would be there.
    pub fn reserve(&mut self, now: Mono, max_wait: Duration) -> Result<Duration, Duration> {
        self.refill(now);
        let wait = if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        };
        if wait > max_wait {
            return Err(wait);
        }
        self.tokens -= 1.0;
        Ok(wait)
    }
}

/// What a write is, as far as its place in the queue goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A Lease renewal or takeover: it may book the budget as far ahead as
    /// its caller allows.
    Lease,
    /// A Lease release after a withdraw: it goes soon or not at all (the
    /// next step sends it again).
    Release,
    /// Anything else (status, annotations, claims, Events): it books at
    /// most [`OTHER_WRITES_WAIT`] ahead, so a burst of them never pushes
    /// Lease renewals past their deadline; held back, it is tried again later.
    Other,
}

/// How far ahead writes other than Leases may book the budget.
pub const OTHER_WRITES_WAIT: Duration = Duration::from_millis(500);

/// How far ahead a release may book the budget.
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

impl Class {
    /// The longest a write of this class waits for a token, when its caller
    /// would wait `asked`.
    pub fn longest_wait(self, asked: Duration) -> Duration {
        match self {
            Class::Lease => asked,
            Class::Release => RELEASE_WAIT,
            Class::Other => asked.min(OTHER_WRITES_WAIT),
        }
    }
}

/// How a write ended, as far as the budget cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Stored, or refused for a reason that is the caller's to handle (409, 404, 422).
    Settled,
    /// 429 or 5xx: the API server is overloaded or failing.
    Overloaded,
    /// 403: RBAC does not allow it; retrying soon cannot help.
    Forbidden,
    /// No answer (connection refused, timeout): nothing reached the server to overload it.
    NoAnswer,
}

impl Answer {
    /// The answer for an HTTP status code, or `None` when there was no answer.
    pub fn of(code: Option<u16>) -> Answer {
        match code {
            None => Answer::NoAnswer,
            Some(403) => Answer::Forbidden,
            Some(429) | Some(500..=599) => Answer::Overloaded,
            Some(_) => Answer::Settled,
        }
    }
}

/// First and longest wait after an overloaded answer.
pub const OVERLOAD_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30));
/// First and longest wait after a forbidden answer: short at first (an API
/// server that just started refuses until its authorizer has synced), up to
/// minutes when RBAC really forbids it.
pub const FORBIDDEN_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(300));

#[derive(Debug, Clone)]
struct Wait {
    until: Mono,
    step: Duration,
}

/// Per-target backoff (a target is one object and verb, such as a Service's status).
#[derive(Debug, Clone, Default)]
pub struct Backoffs {
    waits: HashMap<String, Wait>,
}

impl Backoffs {
    /// Whether `target` may be written at `now`, or how long it must still wait.
    pub fn ready(&self, target: &str, now: Mono) -> Result<(), Duration> {
        match self.waits.get(target) {
            Some(w) if now < w.until => Err(w.until.since(now)),
            _ => Ok(()),
        }
    }

    /// Records how a write to `target` ended at `now`; `jitter` in `[0, 1)`
    /// spreads the waits of many targets refused at once (±20 %). Returns
    /// the wait now imposed, if any.
    pub fn record(
        &mut self,
        target: &str,
        answer: Answer,
        now: Mono,
        jitter: f64,
    ) -> Option<Duration> {
        let (first, longest) = match answer {
            Answer::Settled => {
                self.waits.remove(target);
                return None;
            }
            Answer::NoAnswer => return None,
            Answer::Overloaded => OVERLOAD_BACKOFF,
            Answer::Forbidden => FORBIDDEN_BACKOFF,
        };
        let step = match self.waits.get(target) {
            Some(w) => (w.step * 2).clamp(first, longest),
            None => first,
        };
        let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        let wait = step.mul_f64(spread);
        self.waits.insert(
            target.to_string(),
            Wait {
                until: now.after(wait),
                step,
            },
        );
        Some(wait)
    }

    /// Forgets waits that have run out, so the map does not grow with every
    /// object ever refused.
    pub fn prune(&mut self, now: Mono) {
        self.waits.retain(|_, w| now < w.until.after(w.step));
    }

    /// How many targets wait now.
    pub fn waiting(&self, now: Mono) -> usize {
        self.waits.values().filter(|w| now < w.until).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(10, 3, at(0));
        for _ in 0..3 {
            assert_eq!(b.take(at(0)), Ok(()));
        }
        assert_eq!(b.take(at(0)), Err(Duration::from_millis(100)));
        assert_eq!(b.take(at(100)), Ok(()));
        assert!(b.take(at(150)).is_err());
        // A long quiet spell saves up no more than the burst.
        for _ in 0..3 {
            assert_eq!(b.take(at(60_000)), Ok(()));
        }
        assert!(b.take(at(60_000)).is_err());
    }

    #[test]
    fn overload_backs_off_doubling_to_its_cap_and_success_forgets() {
        let mut b = Backoffs::default();
        let mut now = at(0);
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = b.record("svc", Answer::of(Some(429)), now, 0.5).unwrap();
            assert!(b.ready("svc", now).is_err());
            waits.push(w.as_secs());
            now = now.after(w);
            assert_eq!(b.ready("svc", now), Ok(()));
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.record("svc", Answer::of(Some(200)), now, 0.5), None);
        assert_eq!(
            b.record("svc", Answer::Overloaded, now, 0.5),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn forbidden_waits_long_and_no_answer_does_not_back_off() {
        let mut b = Backoffs::default();
        let w = b.record("s", Answer::of(Some(403)), at(0), 0.5).unwrap();
        assert_eq!(w, Duration::from_secs(5));
        assert_eq!(b.record("t", Answer::of(None), at(0), 0.5), None);
        assert_eq!(b.ready("t", at(0)), Ok(()));
        assert_eq!(Answer::of(Some(409)), Answer::Settled);
        assert_eq!(Answer::of(Some(503)), Answer::Overloaded);
        assert_eq!(b.waiting(at(0)), 1);
        b.prune(at(120_000));
        assert_eq!(b.waiting(at(0)), 0);
    }

    #[test]
    fn reservations_queue_in_order() {
        let mut b = TokenBucket::new(10, 1, at(0));
        assert_eq!(b.reserve(at(0), Duration::ZERO), Ok(Duration::ZERO));
        let second = b.reserve(at(0), Duration::from_secs(1)).unwrap();
        let third = b.reserve(at(0), Duration::from_secs(1)).unwrap();
        assert!(second < third, "{second:?} then {third:?}");
        assert_eq!(
            b.reserve(at(0), Duration::from_millis(50)),
            Err(Duration::from_millis(300))
        );
        assert!(
            b.take(at(300)).is_ok(),
            "the two reserved are paid back first"
        );
    }

    #[test]
    fn a_burst_of_other_writes_never_starves_lease_renewals() {
        // 100 Leases taken at once spend the burst; each takeover brings a
        // status, an annotation and an Event write (Other), asked to wait 5 s.
        let mut b = TokenBucket::new(50, 100, at(0));
        for _ in 0..100 {
            assert!(
                b.reserve(
                    at(0),
                    Class::Lease.longest_wait(Duration::from_millis(1500))
                )
                .is_ok()
            );
        }
        let mut sent = 0;
        for _ in 0..300 {
            if b.reserve(at(0), Class::Other.longest_wait(Duration::from_secs(5)))
                .is_ok()
            {
                sent += 1;
            }
        }
        assert_eq!(sent, 25, "others book half a second ahead at most");
        // Two seconds on, every renewal finds a token within its 1.5 s.
        for i in 0..100 {
            assert!(
                b.reserve(
                    at(2000),
                    Class::Lease.longest_wait(Duration::from_millis(1500))
                )
                .is_ok(),
                "renewal {i} held back"
            );
        }
        // Releases book a second ahead at most.
        assert_eq!(Class::Release.longest_wait(Duration::ZERO), RELEASE_WAIT);
    }

    proptest! {
        /// Whatever the pattern of takes, no window of one second lets more
        /// than burst + qps writes through.
        #[test]
        fn never_more_than_burst_plus_rate_in_a_second(
            qps in 1u32..50, burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..200, 1..400),
        ) {
            let mut b = TokenBucket::new(qps, burst, at(0));
            let mut now = 0;
            let mut sent = Vec::new();
            for g in gaps {
                now += g;
                if b.take(at(now)).is_ok() {
                    sent.push(now);
                }
            }
            for (i, t) in sent.iter().enumerate() {
                let in_window = sent[i..].iter().take_while(|u| **u < t + 1000).count();
                prop_assert!(in_window as u32 <= burst + qps, "{in_window} in a second");
            }
        }

        /// The imposed wait stays within the jittered bounds of its class.
        #[test]
        fn waits_stay_within_bounds(codes in proptest::collection::vec(
            proptest::option::of(200u16..600), 1..60), jitter in 0.0f64..1.0) {
            let mut b = Backoffs::default();
            for (i, code) in codes.into_iter().enumerate() {
                let answer = Answer::of(code);
                if let Some(w) = b.record("x", answer, at(i as u64 * 1000), jitter) {
                    let (first, longest) = if answer == Answer::Forbidden {
                        FORBIDDEN_BACKOFF
                    } else {
                        OVERLOAD_BACKOFF
                    };
                    prop_assert!(w >= first.mul_f64(0.8) && w <= longest.mul_f64(1.2));
                }
            }
        }
    }
}
