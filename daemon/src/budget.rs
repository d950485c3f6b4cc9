//! Every API write passes through here: one token bucket per instance
//! (`kvip_api_qps`, `kvip_api_burst`) and a backoff per target after a 429,
//! a 5xx or a 403 (the rules are `kvip_core::budget`'s). Lease writes come
//! first: other writes book the bucket only a little ahead. A write that may not
//! go now is not sent; its caller counts it as failed and tries again later,
//! so an overloaded API server sees fewer requests from kvip, not more.

use crate::{clock, metrics};
use kvip_core::budget::{Answer, Backoffs, Class, TokenBucket};
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A write that was not sent: the budget or the target's backoff held it back.
#[derive(Debug, Clone, Copy)]
pub struct Throttled;

struct State {
    bucket: TokenBucket,
    backoffs: Backoffs,
    /// Resources whose refusal by RBAC was logged already.
    forbidden_said: BTreeSet<String>,
    /// The last moment a write got no answer.
    unanswered: Option<kvip_core::Mono>,
    /// The last moment the API server stored a Lease write.
    lease_stored: Option<kvip_core::Mono>,
}

static BUDGET: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> &'static Mutex<State> {
    BUDGET.get_or_init(|| {
        let d = kvip_core::Config::default();
        Mutex::new(State {
            bucket: TokenBucket::new(d.api_qps, d.api_burst, clock::now()),
            backoffs: Backoffs::default(),
            forbidden_said: BTreeSet::new(),
            unanswered: None,
            lease_stored: None,
        })
    })
}

/// Sets the budget from the configuration, before any write.
pub fn init(qps: u32, burst: u32) {
    lock().bucket = TokenBucket::new(qps, burst, clock::now());
}

/// How long a write may wait for the budget.
#[derive(Debug, Clone, Copy)]
pub enum Urgency {
    /// It goes soon or not at all: a release after a withdraw (the address
    /// is gone already; a late release would leave it unserved until the
    /// Lease expires) or an instance Lease's delete. It books at most
    /// [`kvip_core::budget::RELEASE_WAIT`] ahead.
    Now,
    /// It waits at most this long for a token, in the order writes asked.
    Within(Duration),
}

/// Waits until a write to `target` may go, as `urgency` allows.
pub async fn admit(target: &str, resource: &str, urgency: Urgency) -> Result<(), Throttled> {
    let now = clock::now();
    let class = match (resource, urgency) {
        ("lease", Urgency::Now) => Class::Release,
        ("lease", Urgency::Within(_)) => Class::Lease,
        _ => Class::Other,
    };
    let reserved = {
        let mut s = lock();
        match urgency {
            Urgency::Now => s.bucket.reserve(now, class.longest_wait(Duration::ZERO)),
            Urgency::Within(max_wait) => s
                .backoffs
                .ready(target, now)
                .and_then(|()| s.bucket.reserve(now, class.longest_wait(max_wait))),
        }
    };
    match reserved {
        Ok(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Err(_) => {
            metrics::throttled(resource);
            if resource == "lease" {
                lease_throttled();
            }
            Err(Throttled)
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    // Nothing in the state can be left half-changed by a panic elsewhere.
    state().lock().unwrap_or_else(|e| e.into_inner())
}

/// The last moment a write got no answer at all (connection refused, time
/// out): the watches most likely saw nothing then either.
pub fn last_unanswered() -> Option<kvip_core::Mono> {
    lock().unanswered
}

/// The last moment the API server stored a Lease write of this instance:
/// the Lease watch should show it moments later.
pub fn last_lease_stored() -> Option<kvip_core::Mono> {
    lock().lease_stored
}

static LEASE_THROTTLED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Says once, when the budget first holds back a Lease write, that the
/// Leases cannot all be renewed in time.
fn lease_throttled() {
    use std::sync::atomic::Ordering;
    if LEASE_THROTTLED
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        tracing::warn!(
            "the API write budget (kvip_api_qps) cannot renew every Lease in time: a VIP whose renewal cannot go is announced until its term ends, then by whichever node takes the Lease, and kvip sends no more than the budget; with hundreds of Services run membership mode (kvip_membership=true), one Lease per node"
        );
    }
}

/// True once, after the budget first held back a Lease write: the caller
/// records the Warning Event.
pub fn take_lease_throttled_news() -> bool {
    use std::sync::atomic::Ordering;
    LEASE_THROTTLED
        .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// Records how a write to `target` ended: `code` is the HTTP status (`None`
/// when nothing answered). Lease writes never back off per object: the
/// election paces them (one attempt per retry period), and a longer wait
/// would let a healthy holder's term run out — right after an API server
/// starts, it answers 403 for a moment until its authorizer has synced.
pub fn answered(target: &str, resource: &str, verb: &str, code: Option<u16>) {
    let answer = Answer::of(code);
    let now = clock::now();
    let mut s = lock();
    if answer == Answer::NoAnswer {
        s.unanswered = Some(now);
    }
    if resource == "lease" && code.is_some_and(|c| (200..300).contains(&c)) {
        s.lease_stored = Some(now);
    }
    let wait = if resource == "lease" {
        None
    } else {
        s.backoffs.record(target, answer, now, jitter(target))
    };
    s.backoffs.prune(now);
    metrics::backing_off(s.backoffs.waiting(now));
    match answer {
        Answer::Forbidden if s.forbidden_said.insert(format!("{resource}/{verb}")) => {
            tracing::error!(
                resource,
                verb,
                retry_in_s = wait.map(|w| w.as_secs()),
                "the API server forbids this write (RBAC); if it goes on, grant {verb} on {resource} as `kvip manifest rbac` does (an API server that just started refuses for a moment too)"
            );
        }
        Answer::Overloaded => {
            tracing::debug!(
                target,
                code,
                wait_ms = wait.map(|w| w.as_millis() as u64),
                "API server overloaded: backing off"
            );
        }
        _ => {}
    }
}

/// The HTTP status of a kube call's result, `None` when nothing answered.
pub fn code<T>(result: &Result<T, kube::Error>) -> Option<u16> {
    match result {
        Ok(_) => Some(200),
        Err(kube::Error::Api(status)) => Some(status.code),
        Err(_) => None,
    }
}

/// A number in [0, 1) that differs between targets and over time.
pub fn jitter(target: &str) -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(target.as_bytes());
    h.write_u128(clock::now().0.as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
