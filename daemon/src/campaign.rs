//! One Lease election as the daemon runs it: the core's elector plus what
//! only the daemon can know — which cache entries are older than our own
//! last write, addresses adopted from an earlier run, and when a takeover
//! began. Both roles (Services and control plane) run their Leases through it.

use crate::leases::{self, LeaseWrite};
use crate::translate;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kvip_core::{Decision, Elector, LeaseKey, Mono, WallTime, WriteResult};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to do after deciding.
#[derive(Debug)]
pub enum Step {
    /// Nothing to write; decide again within this long.
    Wait(Duration),
    /// Take or renew the Lease.
    Write(LeaseWrite),
    /// Give it up, after the addresses are withdrawn.
    Release(LeaseWrite),
}

/// A finished Lease write, sent back to the loop that asked for it.
pub struct WriteDone {
    /// The Lease written.
    pub lease: LeaseKey,
    /// How it ended.
    pub result: WriteResult,
}

/// One election.
pub struct Campaign {
    elector: Elector,
    /// Highest resourceVersion we wrote; older cache entries are stale.
    written_version: Option<u64>,
    /// Held from an earlier run at start-up: announce until the first write settles.
    adopting_until: Option<Mono>,
    /// When this node started wanting the Lease (takeover latency).
    wanting_since: Option<Instant>,
    /// Whether this node announced at the last pass.
    announcing: bool,
    /// Our renewals fail (API unreachable), so nobody else can have written
    /// the Lease either as far as we know: keep announcing until the API
    /// answers or another node is seen claiming the address.
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

    /// Whether this node is named holder in the last record seen.
    pub fn names(&self, node: &str) -> bool {
        self.elector.holder() == Some(node)
    }

    /// Feeds the cached Lease, skipping entries older than our own last write.
    pub fn observe(&mut self, lease: Option<&Lease>, now: Mono) {
        let cached = lease
            .and_then(|l| l.metadata.resource_version.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        // resourceVersions are etcd revisions: a smaller one is an older
        // state of the same object, which the watch has not caught up past.
        let stale = matches!((cached, self.written_version), (Some(c), Some(w)) if c < w);
        if !stale {
            self.elector.observe(translate::observed(lease), now);
        }
        if self.elector.holder() != Some(self.elector.identity()) {
            self.outage_hold = false;
        }
    }

    /// Decides the next write for `candidate`.
    pub fn decide(&mut self, now: Mono, wall: WallTime, candidate: bool) -> Step {
        if candidate && !self.elector.holds(now) && self.wanting_since.is_none() {
            self.wanting_since = Some(Instant::now());
        }
        if !candidate {
            self.wanting_since = None;
        }
        match self.elector.decide(now, wall, candidate) {
            Decision::Wait(d) => Step::Wait(d),
            Decision::Create(record) => Step::Write(LeaseWrite::Create(record)),
            Decision::Update {
                record,
                resource_version,
            } => Step::Write(LeaseWrite::Replace {
                record,
                resource_version,
            }),
            Decision::Release {
                record,
                resource_version,
            } => Step::Release(LeaseWrite::Replace {
                record,
                resource_version,
            }),
        }
    }

    /// Records how a write ended.
    pub fn finished(&mut self, result: WriteResult, now: Mono) {
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
                    tracing::warn!(
                        holder = self.elector.identity(),
                        "cannot renew the Lease: the API is unreachable, so nobody else can take it either; keeping the VIP"
                    );
                }
                self.outage_hold = self.announcing;
            }
        }
        if !matches!(result, WriteResult::Ok { .. }) {
            self.adopting_until = None;
        }
        self.elector.write_result(result, now);
    }

    /// Keeps announcing addresses found on the interface until `until`,
    /// when the Lease still names this node (a restart, not a takeover).
    pub fn adopt(&mut self, node: &str, until: Mono) {
        if self.names(node) {
            self.adopting_until = Some(until);
        }
    }

    /// When the adoption window ends, if one is open.
    pub fn adoption_ends(&self) -> Option<Mono> {
        self.adopting_until
    }

    /// Whether this node announces now.
    pub fn may_announce(&self, now: Mono, candidate: bool) -> bool {
        let adopting = self.adopting_until.is_some_and(|u| now < u);
        candidate
            && !self.yielded
            && (self.elector.may_announce(now) || adopting || self.outage_hold)
    }

    /// Another MAC claims our address. If our hold rests only on an API
    /// outage, the claimant may have the Lease now: yield at once (true).
    /// With a freshly renewed Lease the claimant is wrong: keep it (false).
    pub fn yield_to_claim(&mut self, now: Mono) -> bool {
        if self.elector.holds_fresh(now) {
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

    /// Whether this node announced at the last pass.
    pub fn announcing(&self) -> bool {
        self.announcing
    }

    /// Whether the elector holds the Lease.
    pub fn holds(&self, now: Mono) -> bool {
        self.elector.holds(now)
    }

    /// Time since this node started wanting the Lease, once (takeover latency).
    pub fn take_wanting_since(&mut self) -> Option<Instant> {
        self.wanting_since.take()
    }
}

/// Writes `write` (with `labels`, for Leases that carry them) in the
/// background and reports to `done`.
pub fn spawn_write(
    client: &Client,
    lease: LeaseKey,
    write: LeaseWrite,
    labels: Option<BTreeMap<String, String>>,
    timeout: Duration,
    done: &mpsc::UnboundedSender<WriteDone>,
) {
    let client = client.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let result = leases::write(
            &client,
            &lease.namespace,
            &lease.name,
            write,
            labels.as_ref(),
            timeout,
        )
        .await;
        let _ = done.send(WriteDone { lease, result });
    });
}
