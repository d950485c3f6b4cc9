//! The control-plane role (`cp_enable`): one Lease, `plndr-cp-lock` in
//! `cp_namespace`, among control-plane nodes whose local API server passes
//! its health check. The holder puts `address` on its interface and
//! announces it; after repeated failed checks it withdraws and releases.
//! A DNS name in `address` is followed ([`crate::dns`]); until it first
//! resolves the node is no candidate (start-up does not wait for it).
//!
//! The role speaks only to the API server on its own node (127.0.0.1:`port`,
//! verified as `kubernetes`), never through the VIP it manages: it keeps
//! working when every other client reaches the API through that VIP, and a
//! node whose API server is down cannot hold the VIP.

use crate::cache::LeaseWatch;
use crate::elections::Voter;
use crate::metrics;
use crate::vips::Vips;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::{Api, Client};
use kvip_core::config::InterfaceChoice;
use kvip_core::elections::{Ballot, Elections};
use kvip_core::{Config, InterfaceAddress, LeaseKey, Mono};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Consecutive failed health checks before the node gives the VIP up.
const FAILURES_BEFORE_HANDOVER: u32 = 3;

/// A client for the API server on this node, with the credentials of `base`.
pub fn local_client(base: &kube::Config, port: u16) -> anyhow::Result<Client> {
    let mut config = base.clone();
    config.cluster_url = format!("https://127.0.0.1:{port}").parse()?;
    // Serving certificates always carry this name; 127.0.0.1 often is not in them.
    config.tls_server_name = Some("kubernetes".to_string());
    Ok(Client::try_from(config)?)
}

/// Checks `/readyz` of the local API server every `every`; `healthy` turns
/// false after [`FAILURES_BEFORE_HANDOVER`] failures in a row, true after one success.
async fn check_health(
    client: Client,
    every: Duration,
    healthy: Arc<AtomicBool>,
    changed: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let request = hyper::Request::get("/readyz").body(Vec::new());
        let ok = match request {
            Ok(req) => matches!(
                tokio::time::timeout(every.max(Duration::from_secs(1)), client.request_text(req)).await,
                Ok(Ok(body)) if body.trim() == "ok"
            ),
            Err(_) => false,
        };
        failures = if ok { 0 } else { failures + 1 };
        let now_healthy = failures < FAILURES_BEFORE_HANDOVER;
        if healthy.swap(now_healthy, Ordering::Relaxed) != now_healthy {
            if now_healthy {
                tracing::info!("local API server healthy: a control-plane VIP candidate again");
            } else {
                tracing::warn!(
                    failures,
                    "local API server failed its health check: handing the control-plane VIP over"
                );
            }
            changed.notify_one();
        }
        tokio::time::sleep(every).await;
    }
}

/// The control-plane role.
pub struct ControlPlane {
    config: Config,
    /// The VIP: `address`, or what its DNS name resolves to (none yet).
    address: tokio::sync::watch::Receiver<Option<IpAddr>>,
    lease: LeaseKey,
    leases: LeaseWatch,
    changed: Arc<Notify>,
    healthy: Arc<AtomicBool>,
    voter: Voter,
    vips: Vips,
    adopted: bool,
    /// Why this node cannot place the VIP now, as last logged.
    placement_problem: Option<String>,
    node: String,
}

impl ControlPlane {
    /// Sets the role up and starts its watch and health check.
    pub fn start(config: Config, node: String, client: Client, vips: Vips) -> anyhow::Result<Self> {
        let changed = Arc::new(Notify::new());
        if config.address.is_none() && config.address_name.is_none() {
            anyhow::bail!("cp_enable=true needs the control-plane VIP in address");
        }
        let address = crate::dns::control_plane_address(&config, "cp", changed.clone());
        let lease = config.cp_lease();
        let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
        let watch_config =
            watcher::Config::default().fields(&format!("metadata.name={}", lease.name));
        // The control-plane Lease watch is never started over: nobody asks.
        let (_, never) = tokio::sync::watch::channel(0u64);
        let leases = LeaseWatch::start(
            "control-plane Lease",
            api,
            watch_config,
            None,
            never,
            changed.clone(),
        );
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(check_health(
            client.clone(),
            config.retry_period,
            healthy.clone(),
            changed.clone(),
        ));
        let node_name = node.clone();
        let elections = Elections::new(
            node,
            config.lease_duration,
            config.renew_deadline,
            config.retry_period,
            config.api_qps,
            "apiserver_unhealthy",
        )?;
        let voter = Voter::new(elections, "cp", client, config.renew_deadline);
        Ok(Self {
            config,
            address,
            lease,
            leases,
            changed,
            healthy,
            voter,
            vips,
            adopted: false,
            placement_problem: None,
            node: node_name,
        })
    }

    fn now(&self) -> Mono {
        crate::clock::now()
    }

    /// Runs until `shutdown`, then withdraws and releases.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if tokio::time::timeout(
            Duration::from_secs(30),
            self.leases.store.wait_until_ready(),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                "the control-plane Lease watch has not synced after 30 s; deciding without it"
            );
        }
        let mut kernel_followed = true;
        let mut kernel = self.vips.kernel();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = self.voter.try_done() {
                self.voter.finish(&done, self.now());
            }
            let next = self.pass(false).await;
            metrics::beat("cp", self.now());
            tokio::select! {
                _ = self.changed.notified() => {}
                Some(done) = self.voter.next_done() => {
                    self.voter.finish(&done, self.now());
                }
                Some(conflict) = self.vips.next_conflict() => {
                    let now = self.now();
                    self.voter.claim(&conflict, &mut self.vips, false, now);
                }
                followed = kernel.changed(), if kernel_followed => {
                    kernel_followed = followed.is_ok();
                    self.vips.sync();
                }
                _ = tokio::time::sleep(next.min(Duration::from_secs(1))) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("control plane: withdrawing the VIP, then releasing the Lease");
        let deadline = Instant::now() + Duration::from_millis(900);
        let _ = self.pass(true).await;
        while self.voter.elections().any_named() && Instant::now() < deadline {
            tokio::select! {
                Some(done) = self.voter.next_done() => {
                    self.voter.finish(&done, self.now());
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let _ = self.pass(true).await;
        }
        Ok(())
    }

    /// Start-up: an unmarked copy of the VIP on its interface, while the
    /// Lease names this node, was left by a kvip without marks: keep it.
    async fn claim_unmarked(&mut self) {
        if self.leases.holder(&self.lease).as_deref() != Some(self.node.as_str()) {
            return;
        }
        let view = self
            .vips
            .placement_view(self.config.vip_interface.as_deref());
        let Some(address) = *self.address.borrow() else {
            return;
        };
        let placed = view
            .interfaces(InterfaceChoice::configured(
                self.config.vip_interface.as_deref(),
            ))
            .place(address);
        if let Err(problem) = placed
            && let Some(interface) = kvip_core::placement::foreign_interface(&problem)
        {
            let ours = BTreeMap::from([(address, interface.to_string())]);
            self.vips.claim_unmarked(&ours).await;
        }
    }

    async fn pass(&mut self, shutting_down: bool) -> Duration {
        let now = self.now();
        self.vips.check_listeners();
        if !self.adopted {
            self.claim_unmarked().await;
        }
        // Until a DNS name in address first resolves there is nothing to
        // announce: the node is no candidate and any Lease it held is let go.
        let address = *self.address.borrow();
        // A node that cannot put the VIP on an interface now is no candidate.
        let placed = match address {
            Some(address) => self
                .vips
                .placement_view(self.config.vip_interface.as_deref())
                .interfaces(InterfaceChoice::configured(
                    self.config.vip_interface.as_deref(),
                ))
                .place(address),
            None => Err("the name in address has not resolved yet".to_string()),
        };
        let problem = placed.as_ref().err().cloned();
        if problem != self.placement_problem {
            match (&problem, address) {
                (Some(p), Some(address)) => {
                    tracing::error!(address = %address, problem = %p, "cannot place the control-plane VIP on this node: not a candidate")
                }
                (None, Some(address)) => {
                    tracing::info!(address = %address, "the control-plane VIP can be placed on this node again")
                }
                // follow_name says why.
                (_, None) => {}
            }
            self.placement_problem = problem;
        }
        let wanted = match address {
            Some(address) => BTreeMap::from([(
                self.lease.clone(),
                Ballot {
                    addresses: BTreeSet::from([address]),
                    services: BTreeSet::new(),
                    candidate: !shutting_down
                        && self.healthy.load(Ordering::Relaxed)
                        && placed.is_ok(),
                    companions: BTreeSet::new(),
                },
            )]),
            None => BTreeMap::new(),
        };
        self.voter.elections_mut().want(&wanted);
        if !self.adopted
            && let Some(address) = address
        {
            self.adopted = true;
            let vips = BTreeSet::from([address]);
            // A second control-plane instance may serve the other family.
            let family = address.is_ipv4();
            if !self
                .vips
                .adopt(&vips, &|a| a.is_ipv4() == family)
                .await
                .is_empty()
            {
                let until = now.after(self.config.lease_duration);
                self.voter.elections_mut().adopt(vips, until);
                tracing::info!(address = %address, "control-plane VIP found on the interface from an earlier run");
            }
        }
        // Other holders' terms restart a renew deadline after the watch
        // could see again, as in the Service role.
        let blind = self
            .leases
            .blind_until(now)
            .map(|b| b.after(self.config.renew_deadline));
        let leases = &self.leases;
        let mut round = self
            .voter
            .step(now, blind, |key| leases.seen(key, blind, now));
        let announce = !round.addresses.is_empty();
        let mut desired = BTreeSet::new();
        if announce && let (Ok(interface), Some(address)) = (placed, address) {
            desired.insert(InterfaceAddress { interface, address });
        }
        self.voter.apply(&mut self.vips, &desired, now).await;
        metrics::get().kube_vip_is_leader.set(i64::from(announce));
        // Release only after the address is gone.
        self.voter.release(&mut round, &self.vips, now);
        let mut next = round.next;
        if let Some(at) = self.vips.send_due().await {
            next = next.min(at.saturating_duration_since(Instant::now()));
        }
        next
    }
}
