//! Lease elections as the daemon runs them: the core decides
//! (`kvip_core::elections` and `kvip_core::campaign` hold every rule); this
//! feeds it the cached Leases, turns its decisions into Lease writes, sends
//! them in the background, reports how they ended and says what changed.
//! Both roles (Services and control plane) run their Leases through one
//! [`Voter`]; membership mode runs its single Lease through [`CampaignExt`].

use crate::leases::{self, LeaseWrite};
use crate::vips::{Conflict, Vips};
use crate::{metrics, translate};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kvip_core::elections::{ClaimAnswer, Elections, Round};
use kvip_core::{
    Decision, InterfaceAddress, LeaseKey, Mono, Notice, Observed, WallTime, WriteResult,
};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;

pub use kvip_core::Campaign;

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

impl From<Decision> for Step {
    fn from(decision: Decision) -> Self {
        match decision {
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
}

/// The campaign with the daemon's types: cached Leases in, writes out,
/// notices logged.
pub trait CampaignExt {
    /// Feeds the cached Lease, first seen at `seen_at`.
    fn see(&mut self, lease: Option<&Lease>, seen_at: Mono);
    /// Decides the next step.
    fn step(&mut self, now: Mono, wall: WallTime, candidate: bool) -> Step;
    /// Records how a write ended, saying what the operator should know.
    fn finish(&mut self, done: WriteDone, now: Mono);
}

impl CampaignExt for Campaign {
    fn see(&mut self, lease: Option<&Lease>, seen_at: Mono) {
        self.observe(translate::observed(lease), seen_at);
    }

    fn step(&mut self, now: Mono, wall: WallTime, candidate: bool) -> Step {
        self.decide(now, wall, candidate).into()
    }

    fn finish(&mut self, done: WriteDone, now: Mono) {
        self.sent(done.sent);
        let notice = self.finished(done.result, now);
        say(notice, &done.lease);
    }
}

fn say(notice: Option<Notice>, lease: &LeaseKey) {
    if let Some(Notice::HoldingThroughOutage) = notice {
        tracing::warn!(
            lease = %format!("{}/{}", lease.namespace, lease.name),
            "cannot renew the Lease (the API server is unreachable or refuses the write): keeping the VIP until another node is seen holding the Lease"
        );
    }
}

/// A role's Lease elections with the daemon's input and output: cached
/// Leases in, writes sent in the background, changes logged and counted.
pub struct Voter {
    elections: Elections,
    /// `cp` or `lb`: the metrics' role label.
    role: &'static str,
    client: Client,
    /// How long a Lease write may take.
    timeout: Duration,
    writes_tx: mpsc::UnboundedSender<WriteDone>,
    writes_rx: mpsc::UnboundedReceiver<WriteDone>,
    /// The Leases held back at the last step (logged when that changes).
    held_back: BTreeSet<LeaseKey>,
}

impl Voter {
    /// A voter for `elections`, writing with `client` within `timeout`.
    pub fn new(
        elections: Elections,
        role: &'static str,
        client: Client,
        timeout: Duration,
    ) -> Self {
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        Self {
            elections,
            role,
            client,
            timeout,
            writes_tx,
            writes_rx,
            held_back: BTreeSet::new(),
        }
    }

    /// The elections inside.
    pub fn elections(&self) -> &Elections {
        &self.elections
    }

    /// The elections inside, to say what each Lease elects.
    pub fn elections_mut(&mut self) -> &mut Elections {
        &mut self.elections
    }

    /// Steps every election over the cached Leases (`lease_of`: what the
    /// cache shows of a Lease and when that version was first seen), sends
    /// the writes due now and says what changed. The caller withdraws what
    /// the round no longer announces, then calls [`Voter::release`].
    pub fn step(
        &mut self,
        now: Mono,
        blind: Option<Mono>,
        lease_of: impl FnMut(&LeaseKey) -> (Observed, Mono),
    ) -> Round {
        let mut round = self
            .elections
            .step(now, translate::wall_now(), blind, lease_of);
        if let Some((held, pace)) = round.paced {
            if pace.stretch > 1 {
                tracing::warn!(
                    held,
                    stretch = pace.stretch,
                    renew_every_ms = pace.renew_every.as_millis() as u64,
                    "this node holds more Leases than the write budget (kvip_api_qps) renews at the configured pace: renewals spread out and their terms stretch (failover for them takes as long); membership mode (kvip_membership=true) needs one Lease per node"
                );
            } else {
                tracing::info!(
                    held,
                    "Lease renewals fit the write budget again: configured timings"
                );
            }
            metrics::get().lease_stretch.set(i64::from(pace.stretch));
        }
        for t in &round.transitions {
            let lease = format!("{}/{}", t.lease.namespace, t.lease.name);
            let addresses = &t.ballot.addresses;
            if t.announcing {
                metrics::won(self.role);
                tracing::info!(role = self.role, lease = %lease, addresses = ?addresses, services = ?t.ballot.services, "won the election: announcing");
            } else {
                metrics::lost(self.role, t.why);
                tracing::info!(role = self.role, lease = %lease, addresses = ?addresses, why = t.why, "withdrawing");
            }
        }
        for (key, decision) in std::mem::take(&mut round.writes) {
            self.send(key, decision);
        }
        let held_back = self.elections.held_back_at(now);
        for (lease, (companion, holder)) in &held_back {
            // A companion on its way to this node (empty holder) is a moment's wait.
            if !self.held_back.contains(lease) && !holder.is_empty() {
                let ballot = self.elections.ballot(lease);
                tracing::warn!(
                    role = self.role,
                    lease = %format!("{}/{}", lease.namespace, lease.name),
                    addresses = ?ballot.map(|b| &b.addresses),
                    other_lease = %format!("{}/{}", companion.namespace, companion.name),
                    holder = %holder,
                    "holding the Lease but not announcing: another Service on this address is elected by a Lease that a node running no kvip (kube-vip during a migration) holds and announces through; taking it when that node frees it"
                );
            }
        }
        for lease in self
            .held_back
            .difference(&held_back.keys().cloned().collect())
        {
            tracing::info!(lease = %format!("{}/{}", lease.namespace, lease.name), "no longer held back by another daemon's Lease");
        }
        self.held_back = held_back
            .into_iter()
            .filter(|(_, (_, holder))| !holder.is_empty())
            .map(|(lease, _)| lease)
            .collect();
        round
    }

    /// Sends the releases of `round`, each only once its withdraw has
    /// succeeded: a Lease whose address could not be removed is held back
    /// and asked again at the next step.
    pub fn release(&mut self, round: &mut Round, vips: &Vips, now: Mono) {
        let up = vips.owned().iter().map(|ia| ia.address).collect();
        let (send, held) = self.elections.releasable(round, &up, now);
        for key in held {
            tracing::warn!(lease = %format!("{}/{}", key.namespace, key.name), "not releasing the Lease: its address could not be removed yet");
        }
        for (key, decision) in send {
            self.send(key, decision);
        }
    }

    fn send(&self, key: LeaseKey, decision: Decision) {
        if let Step::Write(write) | Step::Release(write) = Step::from(decision) {
            spawn_write(
                &self.client,
                key,
                write,
                None,
                self.timeout,
                &self.writes_tx,
            );
        }
    }

    /// The next finished write (for the caller's `select!`).
    pub async fn next_done(&mut self) -> Option<WriteDone> {
        self.writes_rx.recv().await
    }

    /// A finished write, if one is waiting.
    pub fn try_done(&mut self) -> Option<WriteDone> {
        self.writes_rx.try_recv().ok()
    }

    /// The writes this role's loop did not own (the membership Lease, the
    /// instance Lease) report here too.
    pub fn writes(&self) -> &mpsc::UnboundedSender<WriteDone> {
        &self.writes_tx
    }

    /// Records how a write ended. `None` when it was not one of ours, else
    /// whether it was quiet: a renewal stored, which changes nothing this
    /// node announces (the caller need not step for it).
    pub fn finish(&mut self, done: &WriteDone, now: Mono) -> Option<bool> {
        self.elections.campaign(&done.lease)?;
        let quiet = self.elections.quiet(&done.lease, &done.result);
        let notice = self
            .elections
            .finished(&done.lease, done.result.clone(), done.sent, now);
        say(notice, &done.lease);
        Some(quiet)
    }

    /// Another host claims one of our addresses (design §7). Within our
    /// confirmed term it is defended, at most once per 10 s; a hold that
    /// rests on an API outage or adoption yields only to a convincing claim
    /// (from a kvip node's MAC, `kvip_node`, or persisting). `None` when no
    /// Lease of ours elects the address.
    pub fn claim(
        &mut self,
        conflict: &Conflict,
        vips: &mut Vips,
        kvip_node: bool,
        now: Mono,
    ) -> Option<Answered> {
        let ip = conflict.claim.ip;
        let judgement = vips.judge(conflict, kvip_node, now);
        let yielded = match self.elections.claim(ip, now, judgement.convincing) {
            ClaimAnswer::NotOurs => return None,
            ClaimAnswer::Yielded(key) => {
                tracing::warn!(address = %ip, other_mac = %kvip_core::placement::mac_text(&conflict.claim.mac), lease = %format!("{}/{}", key.namespace, key.name), "another node announces this VIP and our Lease is unconfirmed: withdrawing at once");
                true
            }
            ClaimAnswer::Defend(_) => {
                if judgement.may_defend {
                    tracing::warn!(address = %ip, other_mac = %kvip_core::placement::mac_text(&conflict.claim.mac), "address conflict: another MAC claims a VIP whose Lease we hold; announcing again (at most once per 10 s)");
                }
                vips.defend(conflict, judgement);
                false
            }
        };
        metrics::get().conflicts.inc();
        Some(Answered {
            yielded,
            report: judgement.report,
        })
    }

    /// Puts exactly `desired` on the interfaces, logs what failed and what
    /// was added, and counts takeovers and held addresses. Returns what was added.
    pub async fn apply(
        &mut self,
        vips: &mut Vips,
        desired: &BTreeSet<InterfaceAddress>,
        now: Mono,
    ) -> Vec<InterfaceAddress> {
        let (added, failed) = vips.apply(desired).await;
        for (ia, err) in failed {
            tracing::error!(address = %ia.address, interface = %ia.interface, error = %err, "cannot change the address");
        }
        for ia in &added {
            tracing::info!(address = %ia.address, interface = %ia.interface, "VIP added and announced");
            if let Some(took) = self.elections.take_wanting_since(ia.address, now) {
                metrics::get().takeover_seconds.observe(took.as_secs_f64());
            }
        }
        metrics::get()
            .vips_held
            .get_or_create(&metrics::RoleLabels {
                role: self.role.into(),
            })
            .set(i64::try_from(vips.owned().len()).unwrap_or(0));
        added
    }
}

/// What a claim led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The address was given up: a pass should withdraw it now.
    pub yielded: bool,
    /// The same MAC has kept claiming it: worth an Event.
    pub report: bool,
}

/// A finished Lease write, sent back to the loop that asked for it.
pub struct WriteDone {
    /// The Lease written.
    pub lease: LeaseKey,
    /// How it ended.
    pub result: WriteResult,
    /// When it left, after waiting for the write budget.
    pub sent: Mono,
}

/// Writes `write` (with `labels`, for Leases that carry them) in the
/// background and reports to `done`.
pub fn spawn_write(
    client: &Client,
    lease: LeaseKey,
    write: LeaseWrite,
    meta: Option<leases::LeaseMeta>,
    timeout: Duration,
    done: &mpsc::UnboundedSender<WriteDone>,
) {
    let client = client.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let (result, sent) = leases::write(
            &client,
            &lease.namespace,
            &lease.name,
            write,
            meta.as_ref(),
            timeout,
        )
        .await;
        let _ = done.send(WriteDone {
            lease,
            result,
            sent,
        });
    });
}
