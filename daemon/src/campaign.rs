//! Lease elections as the daemon runs them: the core's [`Campaign`] decides
//! (`kvip_core::campaign` holds every rule); this turns its decisions into
//! Lease writes, sends them in the background and reports how they ended.
//! Both roles (Services and control plane) run their Leases through it.

use crate::leases::{self, LeaseWrite};
use crate::translate;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kvip_core::{Decision, LeaseKey, Mono, Notice, WallTime, WriteResult};
use std::collections::BTreeMap;
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
    fn finish(&mut self, result: WriteResult, now: Mono);
}

impl CampaignExt for Campaign {
    fn see(&mut self, lease: Option<&Lease>, seen_at: Mono) {
        self.observe(translate::observed(lease), seen_at);
    }

    fn step(&mut self, now: Mono, wall: WallTime, candidate: bool) -> Step {
        self.decide(now, wall, candidate).into()
    }

    fn finish(&mut self, result: WriteResult, now: Mono) {
        if let Some(Notice::HoldingThroughOutage) = self.finished(result, now) {
            tracing::warn!(
                holder = self.elector().identity(),
                "cannot renew the Lease: the API is unreachable, so nobody else can take it either; keeping the VIP"
            );
        }
    }
}

/// A finished Lease write, sent back to the loop that asked for it.
pub struct WriteDone {
    /// The Lease written.
    pub lease: LeaseKey,
    /// How it ended.
    pub result: WriteResult,
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
