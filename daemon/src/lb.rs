//! `kvip manager`, the Service role: one reconcile loop that reads the
//! watched stores, asks the core who may announce what, runs one Lease
//! election per announcement group, and carries out the result — withdraw,
//! then release; add, then announce — and keeps Service status in step.
//!
//! Work follows what changed. The whole picture (Services, EndpointSlices,
//! Nodes, live instances, interfaces) is assessed again only when one of
//! them changed; a timer or a finished write only steps the elections over
//! the last assessment. Another node's renewal wakes nothing at all.

use crate::budget;
use crate::cache::Cache;
use crate::claims::{self, ClaimDone};
use crate::clock;
use crate::elections::{self, Campaign, CampaignExt, Voter, WriteDone};
use crate::events::{self, Reason};
use crate::ingress;
use crate::ipam;
use crate::leases::{self, LeaseMeta, LeaseWrite};
use crate::membership::Membership;
use crate::metrics;
use crate::service_network::ServiceNetwork;
use crate::translate;
use crate::vips::{PlacementView, Vips};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kvip_core::candidacy::NodeInput;
use kvip_core::config::InterfaceChoice;
use kvip_core::elections::{Ballot, Elections};
use kvip_core::instances::{self, InstanceTerm, Liveness};
use kvip_core::lease_names;
use kvip_core::placement;
use kvip_core::probe::Prober;
use kvip_core::service::{AddressSource, ServiceInterface};
use kvip_core::{
    AnnouncementGroup, Config, Elector, InterfaceAddress, LeaseKey, Mono, PendingReason,
    ServiceKey, assess, plan::is_subnet_edge,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Addresses each node cannot place, and why: node, then address.
type Problems = BTreeMap<String, BTreeMap<IpAddr, String>>;

/// How long a Service stays pending for one reason before it gets an Event.
const PENDING_EVENT_DELAY: Duration = Duration::from_secs(2);

/// The longest a change waits for the next assessment to settle.
const MAX_SETTLE: Duration = Duration::from_millis(250);

/// The longest the whole picture goes without being assessed again.
const RESYNC: Duration = Duration::from_secs(10);

/// How long a MAC a kvip node published stays kvip's after the node
/// stopped renewing its instance Lease: it may still answer for what it held.
const KVIP_MAC_MEMORY: Duration = Duration::from_secs(600);

/// How long a Service Lease written by another daemon (kube-vip during a
/// migration) keeps this node taking the other Leases of shared addresses
/// (see `kvip_core::elections::Ballot::companions`).
const FOREIGN_MEMORY: Duration = Duration::from_secs(600);

/// What the last assessment of the whole picture found; the elections step
/// over it until something it was built from changes.
#[derive(Default)]
struct Assessed {
    /// The Services in the cache.
    services: Vec<Arc<Service>>,
    /// The same, by key.
    by_key: BTreeMap<ServiceKey, Arc<Service>>,
    /// Services this role serves, each with its addresses.
    views: Vec<kvip_core::ServiceView>,
    /// Announcement groups with their candidates.
    groups: Vec<AnnouncementGroup>,
    /// Pending Services and why.
    pending: BTreeMap<ServiceKey, PendingReason>,
    /// Services refused for bad input.
    refused: BTreeMap<ServiceKey, kvip_core::service::ServiceError>,
    /// Services of ours: served, pending or refused.
    ours: BTreeSet<ServiceKey>,
    /// Nodes with a live instance when it was made.
    live: BTreeSet<String>,
    /// Some node had none: another daemon (kube-vip during a migration)
    /// may run there.
    mixed: bool,
    /// This node's interfaces as placement sees them.
    interfaces: PlacementView,
    /// The interface each address goes on where its Services ask for one
    /// (`kube-vip.io/serviceInterface`).
    chosen: BTreeMap<IpAddr, ServiceInterface>,
    /// Addresses this node cannot place now, and why (what it publishes).
    unplaceable: BTreeMap<IpAddr, String>,
    /// Elections wanted: by Lease, what it elects and our candidacy.
    wanted: BTreeMap<LeaseKey, Ballot>,
    /// Addresses some Service's status lists: taken without a probe.
    served: BTreeSet<IpAddr>,
    /// When it was made.
    at: Option<Mono>,
}

/// The Service role's state.
pub struct LbRole {
    config: Config,
    node: String,
    client: Client,
    cache: Cache,
    vips: Vips,
    /// One election per Lease (none in membership mode).
    voter: Voter,
    instance_namespace: String,
    /// The global Services Lease (`svc_election=false`), where kube-vip has it
    /// ([`Config::services_lease`]).
    global_lease: LeaseKey,
    /// The control-plane VIP, which no Service may have (followed when
    /// `address` is a DNS name).
    control_plane_address: tokio::sync::watch::Receiver<Option<IpAddr>>,
    next_instance_renew: Mono,
    /// The last assessment of the whole picture.
    assessed: Assessed,
    /// Something the assessment was built from changed.
    dirty: bool,
    /// What the instance Lease last said (placement problems and MACs).
    published: BTreeMap<String, String>,
    /// The MACs of other nodes that run kvip, from their instance Leases
    /// (for [`KVIP_MAC_MEMORY`] after they were last published).
    kvip_macs: BTreeMap<[u8; 6], String>,
    /// When each kvip MAC was last published, and by which node.
    kvip_macs_seen: BTreeMap<[u8; 6], (String, Instant)>,
    /// When a Service Lease written by another daemon than kvip was last
    /// seen arriving.
    foreign_seen: Option<Mono>,
    /// How long the last assessment took (the settle time after a change).
    assess_cost: Duration,
    /// The announcement made by the last step, to write status only on change.
    announced_last: BTreeMap<ServiceKey, BTreeSet<IpAddr>>,
    /// Problems already logged, so a Service's bad input is said once.
    reported: BTreeMap<ServiceKey, String>,
    /// kube-vip annotations kvip does not implement, already logged per Service.
    annotations_warned: BTreeMap<ServiceKey, Vec<&'static str>>,
    status: ingress::IngressWriter,
    events: events::Recorder,
    /// Since when each Service has been pending for its current reason:
    /// a VIPPending Event waits out the first seconds, which a new Service
    /// spends waiting for its EndpointSlice.
    pending_since: BTreeMap<ServiceKey, (String, Instant)>,
    started_adoption: bool,
    /// Membership mode (`kvip_membership`): this node's membership and claims.
    membership: Option<Membership>,
    claims_tx: mpsc::UnboundedSender<ClaimDone>,
    claims_rx: mpsc::UnboundedReceiver<ClaimDone>,
    /// Services just claimed from another node, for their Moved Event.
    moved_from: BTreeMap<ServiceKey, String>,
    /// When the first live instance Lease runs out unless renewed.
    next_expiry: Option<Mono>,
    /// Addresses probed before they are first taken, and those found in use.
    prober: Prober,
    /// The cluster's ServiceCIDRs.
    service_network: ServiceNetwork,
    /// Services this node won whose addresses wait for their probe.
    probe_held: BTreeSet<ServiceKey>,
    /// Addresses from the pools of the `kubevip` ConfigMap.
    allocator: ipam::Allocator,
}

impl LbRole {
    /// Sets the role up; nothing runs until [`LbRole::run`].
    pub fn new(
        config: Config,
        node: String,
        client: Client,
        cache: Cache,
        vips: Vips,
        instance_namespace: String,
        global_lease: LeaseKey,
    ) -> anyhow::Result<Self> {
        let (claims_tx, claims_rx) = mpsc::unbounded_channel();
        let status = ingress::IngressWriter::new(client.clone(), node.clone());
        let membership = if config.membership {
            match Elector::new(
                node.clone(),
                config.lease_duration,
                config.renew_deadline,
                config.retry_period,
            ) {
                Ok(elector) => Some(Membership::new(
                    node.clone(),
                    LeaseKey {
                        namespace: instance_namespace.clone(),
                        name: instances::instance_lease_name(&node),
                    },
                    Campaign::new(elector),
                )),
                Err(e) => {
                    // Config::from_env checked the timings and the node name.
                    tracing::error!(error = %e, "cannot run membership mode; using one Lease per address");
                    None
                }
            }
        } else {
            None
        };
        let events = events::Recorder::new(client.clone(), node.clone());
        // Config::from_env checked the timings and the node name.
        let elections = Elections::new(
            node.clone(),
            config.lease_duration,
            config.renew_deadline,
            config.retry_period,
            config.api_qps,
            "no_longer_candidate",
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let voter = Voter::new(elections, "lb", client.clone(), config.renew_deadline);
        let config_probe_wait = config.probe_wait;
        // A new answer for the name is assessed like any other change.
        let control_plane_address =
            crate::dns::control_plane_address(&config, "lb", cache.changed.clone());
        let client_for_network = client.clone();
        let allocator = ipam::Allocator::new(
            &config,
            &node,
            client.clone(),
            &instance_namespace,
            cache.changed.clone(),
        );
        Ok(Self {
            config,
            node,
            client,
            cache,
            vips,
            voter,
            instance_namespace,
            global_lease,
            control_plane_address,
            next_instance_renew: Mono::default(),
            assessed: Assessed::default(),
            dirty: true,
            published: BTreeMap::new(),
            kvip_macs: BTreeMap::new(),
            kvip_macs_seen: BTreeMap::new(),
            foreign_seen: None,
            assess_cost: Duration::ZERO,
            announced_last: BTreeMap::new(),
            reported: BTreeMap::new(),
            annotations_warned: BTreeMap::new(),
            status,
            events,
            pending_since: BTreeMap::new(),
            started_adoption: false,
            membership,
            claims_tx,
            claims_rx,
            moved_from: BTreeMap::new(),
            next_expiry: None,
            prober: Prober::new(config_probe_wait),
            service_network: ServiceNetwork::start(&client_for_network),
            probe_held: BTreeSet::new(),
            allocator,
        })
    }

    fn now(&self) -> Mono {
        clock::now()
    }

    /// Runs until `shutdown` fires, then withdraws and releases everything.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        // A pass is due when something changed or the time it asked for
        // has come; a renewal stored changes nothing and wakes no pass.
        let mut pass_due = true;
        let mut deadline = tokio::time::Instant::now();
        let mut kernel_followed = true;
        let mut kernel = self.vips.kernel();
        self.allocator.wait_listed(Duration::from_secs(5)).await;
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = self.voter.try_done() {
                pass_due |= !self.write_finished(done);
            }
            while let Ok(done) = self.claims_rx.try_recv() {
                self.claim_finished(done);
                pass_due = true;
            }
            if pass_due || tokio::time::Instant::now() >= deadline {
                let next = self.pass(false).await;
                metrics::beat("lb", self.now());
                deadline = tokio::time::Instant::now() + next.min(Duration::from_secs(1));
                pass_due = false;
            }
            tokio::select! {
                _ = self.cache.changed.notified() => {
                    // Let a burst of watch events settle into one assessment;
                    // at thousands of Services an assessment takes tens of
                    // milliseconds, and waiting as long as the last one took
                    // keeps a storm of changes to half a core at most.
                    tokio::time::sleep(self.assess_cost.max(Duration::from_millis(5))).await;
                    self.dirty = true;
                    pass_due = true;
                }
                Some(done) = self.voter.next_done() => pass_due |= !self.write_finished(done),
                Some(done) = self.claims_rx.recv() => {
                    self.claim_finished(done);
                    pass_due = true;
                }
                Some(done) = self.allocator.next_done() => {
                    let (allocated, changed) = self.allocator.finished(done, self.now());
                    if let Some(allocated) = allocated {
                        self.events.record(
                            &allocated.service,
                            Some(allocated.uid),
                            Reason::Allocated,
                            allocated.message,
                        );
                    }
                    self.dirty |= changed;
                    pass_due = true;
                }
                Some(conflict) = self.vips.next_conflict() => {
                    // Claims are judged here; only a yield needs a pass.
                    pass_due |= self.conflict(conflict);
                }
                followed = kernel.changed(), if kernel_followed => {
                    kernel_followed = followed.is_ok();
                    // A VIP gone from the kernel is added back by the next pass;
                    // an interface change is assessed again.
                    pass_due |= self.vips.sync();
                    if self.vips.placement_view(self.configured_interface()) != self.assessed.interfaces {
                        self.dirty = true;
                        pass_due = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.shutdown().await;
        Ok(())
    }

    fn claim_finished(&mut self, done: ClaimDone) {
        if let Some(m) = self.membership.as_mut() {
            m.claim_finished(done);
        }
    }

    /// Records a finished Lease write; true when it changed nothing this
    /// node announces (a renewal stored).
    fn write_finished(&mut self, done: WriteDone) -> bool {
        let now = self.now();
        if let Some(m) = self.membership.as_mut()
            && *m.lease() == done.lease
        {
            m.campaign().finish(done, now);
            return false;
        }
        let failed = done.result == kvip_core::WriteResult::NotSent;
        let finished = self.voter.finish(&done, now);
        if finished.is_some() && failed && budget::take_lease_throttled_news() {
            // Said once per process, on one Service the budget left unrenewed.
            let key = self
                .voter
                .elections()
                .ballot(&done.lease)
                .and_then(|b| b.services.iter().next().cloned());
            if let Some(key) = key {
                let uid = self.uid(&key);
                self.events.record(
                    &key,
                    uid,
                    Reason::Throttled,
                    format!(
                        "kvip_api_qps={} cannot renew every Lease of node {} in time; a VIP whose renewal cannot go is announced until its term ends, then by whichever node takes the Lease. With hundreds of Services use membership mode (kvip_membership=true): one Lease per node",
                        self.config.api_qps, self.node
                    ),
                );
            }
        }
        finished == Some(true)
    }

    /// Another host claims one of our VIPs (design §7): yield when our hold
    /// is unconfirmed and the claim convincing, otherwise defend the address
    /// (at most once per 10 s). True when a pass must withdraw it now.
    fn conflict(&mut self, conflict: crate::vips::Conflict) -> bool {
        let now = self.now();
        let ip = conflict.claim.ip;
        // An answer to a probe: another host uses the address, unless it is
        // a kvip node (a holder the status does not show yet).
        if !self.vips.holds(ip) && self.prober.listening(ip) {
            if !self.kvip_macs.contains_key(&conflict.claim.mac) {
                self.prober.heard(ip, conflict.claim.mac);
            }
            return false;
        }
        // A claim from the MAC of the node the Lease names is that node
        // announcing what it holds; any other MAC may be forged.
        let kvip_node = self.kvip_macs.get(&conflict.claim.mac).is_some_and(|node| {
            self.voter
                .elections()
                .lease_of(ip)
                .and_then(|key| self.cache.leases.holder(key))
                .is_some_and(|holder| holder == *node)
        });
        let answered = match self.membership.as_mut() {
            None => self.voter.claim(&conflict, &mut self.vips, kvip_node, now),
            Some(m) if !m.announces(ip) => None,
            Some(m) => {
                metrics::get().conflicts.inc();
                let judgement = self.vips.judge(&conflict, kvip_node, now);
                let mac = placement::mac_text(&conflict.claim.mac);
                let yielded = m.campaign().yield_to_claim(now, judgement.convincing);
                if yielded {
                    tracing::warn!(address = %ip, other_mac = %mac, "another node announces this VIP and our membership is unconfirmed: withdrawing every VIP at once");
                } else {
                    if judgement.may_defend {
                        tracing::warn!(address = %ip, other_mac = %mac, "address conflict: another MAC claims a VIP we hold the claim for; announcing again (at most once per 10 s)");
                    }
                    self.vips.defend(&conflict, judgement);
                }
                Some(elections::Answered {
                    yielded,
                    report: judgement.report,
                })
            }
        };
        let Some(answered) = answered else {
            return false;
        };
        if answered.report {
            self.report_conflict(&conflict);
        }
        answered.yielded
    }

    /// The uid of Service `key` as last assessed, for its Events.
    fn uid(&self, key: &ServiceKey) -> Option<String> {
        self.assessed
            .by_key
            .get(key)
            .and_then(|s| s.metadata.uid.clone())
    }

    /// An Event on each Service of a VIP that another MAC keeps claiming.
    fn report_conflict(&mut self, conflict: &crate::vips::Conflict) {
        let ip = conflict.claim.ip;
        let mac = placement::mac_text(&conflict.claim.mac);
        let services: Vec<ServiceKey> = self
            .assessed
            .views
            .iter()
            .filter(|v| v.addresses.contains(&ip))
            .map(|v| v.key.clone())
            .collect();
        for key in services {
            let uid = self.uid(&key);
            self.events.record(
                &key,
                uid,
                Reason::AddressConflict,
                format!(
                    "MAC {mac} keeps claiming {ip} on {}, which node {} holds; kvip defends it at most once every 10 s: find the host with that MAC",
                    conflict.interface, self.node
                ),
            );
        }
    }

    /// Nodes that run a live kvip Service instance, judged by their
    /// instance Leases changing within their duration (local clock). Only
    /// Leases in the instance namespace count, held by the node they name.
    fn live_instances(&self, now: Mono, shutting_down: bool) -> Liveness {
        let blind = self.blind_until(now);
        let me_live = match &self.membership {
            Some(m) => m.live(now) && !shutting_down,
            None => true,
        };
        let terms: Vec<InstanceTerm> = self
            .cache
            .leases
            .store
            .state()
            .iter()
            .filter(|l| l.metadata.namespace.as_deref() == Some(self.instance_namespace.as_str()))
            .filter_map(|lease| {
                let instance = instances::instance_of(lease.metadata.labels.as_ref()?)?;
                let spec = lease.spec.as_ref();
                Some(InstanceTerm {
                    instance,
                    holder: spec.and_then(|s| s.holder_identity.clone()),
                    duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
                    seen_at: self.cache.leases.term_seen_at(lease, blind, now),
                })
            })
            .collect();
        instances::live(&terms, instances::LB_ROLE, &self.node, me_live, now)
    }

    /// When other holders' terms restart: the last moment this node could
    /// not see them renew (its Lease watch failed, or one of its writes got
    /// no answer at all), plus the renew deadline. A holder coming out of an
    /// API outage may need that long for its first renewal to go through (a
    /// write hung on the dead server runs into its timeout, and a server that
    /// has just started refuses for a moment), and must not lose its VIP for it.
    fn blind_until(&self, now: Mono) -> Option<Mono> {
        let watch = self.cache.leases.blind_until(now);
        let writes = budget::last_unanswered();
        watch
            .max(writes)
            .map(|b| b.after(self.config.renew_deadline))
    }

    /// Renews this node's instance Lease when due; returns when it is due next.
    fn renew_instance(&mut self, now: Mono) -> Duration {
        if self.membership.is_some() {
            return self.renew_membership(now);
        }
        if now < self.next_instance_renew {
            return self.next_instance_renew.since(now);
        }
        let every = Duration::from_secs(5);
        self.next_instance_renew = now.after(every);
        let name = instances::instance_lease_name(&self.node);
        let current = self.cache.leases.lease(&self.instance_namespace, &name);
        let wall = translate::wall_now();
        let record = kvip_core::LeaseRecord {
            holder: Some(self.node.clone()),
            lease_duration_seconds: Some(instances::INSTANCE_LEASE_SECONDS),
            acquire_time: current
                .as_ref()
                .and_then(|l| translate::observed(Some(l)).record)
                .and_then(|r| r.acquire_time)
                .or(Some(wall)),
            renew_time: Some(wall),
            lease_transitions: Some(0),
            kvip_renewed: None,
        };
        let write = match current
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
        {
            Some(resource_version) => LeaseWrite::Replace {
                record,
                resource_version,
            },
            None => LeaseWrite::Create(record),
        };
        let meta = self.instance_meta();
        let client = self.client.clone();
        let namespace = self.instance_namespace.clone();
        let timeout = self.config.renew_deadline;
        tokio::spawn(async move {
            let _ = leases::write(&client, &namespace, &name, write, Some(&meta), timeout).await;
        });
        every
    }

    /// The instance Lease's labels, and annotations telling the other nodes
    /// which addresses this node cannot place and which MACs are its own.
    fn instance_meta(&mut self) -> LeaseMeta {
        let mut annotations = BTreeMap::new();
        if !self.assessed.unplaceable.is_empty() {
            annotations.insert(
                placement::PLACEMENT_ANNOTATION.to_string(),
                placement::encode(&self.assessed.unplaceable),
            );
        }
        annotations.insert(
            placement::MACS_ANNOTATION.to_string(),
            placement::encode_macs(&self.vips.announcing_macs()),
        );
        self.published = annotations.clone();
        LeaseMeta {
            labels: instances::instance_labels(&self.node, &[instances::LB_ROLE]),
            annotations,
        }
    }

    /// Whether the instance Lease says something other than it should.
    fn publication_stale(&self) -> bool {
        let placement = (!self.assessed.unplaceable.is_empty())
            .then(|| placement::encode(&self.assessed.unplaceable));
        let macs = placement::encode_macs(&self.vips.announcing_macs());
        self.published.get(placement::PLACEMENT_ANNOTATION) != placement.as_ref()
            || self.published.get(placement::MACS_ANNOTATION) != Some(&macs)
    }

    /// Membership mode: renews this node's membership Lease on the election
    /// timings, and returns when it is due next: the renewal keeps its own
    /// time whatever else wakes the loop. At start-up a Lease still naming
    /// this node (a restart) counts as held for one lease duration, so
    /// claimed VIPs stay up meanwhile.
    fn renew_membership(&mut self, now: Mono) -> Duration {
        let meta = self.instance_meta();
        let until = now.after(self.config.lease_duration);
        let adopting = !self.started_adoption;
        let retry = self.config.retry_period;
        let Some(m) = self.membership.as_mut() else {
            return retry;
        };
        let key = m.lease().clone();
        let lease = self.cache.leases.lease(&key.namespace, &key.name);
        let write = m.renew(lease.as_deref(), now, translate::wall_now());
        if adopting {
            m.campaign().adopt(&self.node, until);
        }
        let write = match write {
            Ok(w) => w,
            Err(due) => return due,
        };
        elections::spawn_write(
            &self.client,
            key,
            write,
            Some(meta),
            self.config.renew_deadline,
            self.voter.writes(),
        );
        // The write's result wakes the loop.
        retry
    }

    /// One reconcile pass: assess the whole picture again if anything it
    /// was built from changed, then step every election over it and carry
    /// out the result. Returns how long until the next pass is due.
    async fn pass(&mut self, shutting_down: bool) -> Duration {
        let now = self.now();
        let mut next = Duration::from_secs(1);
        self.vips.check_listeners();
        if !shutting_down {
            next = next.min(self.renew_instance(now));
        }
        let me_live = self
            .membership
            .as_ref()
            .is_none_or(|m| m.live(now) && !shutting_down);
        let stale = self.dirty
            || shutting_down
            || self.assessed.at.is_none_or(|at| now.since(at) >= RESYNC)
            || self.next_expiry.is_some_and(|e| now >= e)
            || self.assessed.live.contains(&self.node) != me_live;
        if stale {
            self.dirty = false;
            let started = Instant::now();
            self.assess(now, shutting_down).await;
            self.assess_cost = started.elapsed().min(MAX_SETTLE);
            // Other nodes learn at once what this node cannot place (in
            // membership mode with the next renewal, one retry period away).
            if !shutting_down && self.membership.is_none() && self.publication_stale() {
                self.next_instance_renew = now;
                next = next.min(self.renew_instance(now));
            }
        }
        if let Some(at) = self.next_expiry {
            next = next.min(at.since(now) + Duration::from_millis(1));
        }
        if !shutting_down {
            let blind = self.blind_until(now);
            next = next.min(self.allocator.step(&self.cache, blind, now));
        }
        let a = std::mem::take(&mut self.assessed);
        next = next.min(self.step(&a, now, shutting_down).await);
        if let Some(at) = a.at {
            next = next.min(at.after(RESYNC).since(now));
        }
        self.assessed = a;
        next
    }

    /// Assesses the whole picture: what the cluster asks for, who runs
    /// kvip, which addresses this node's interfaces allow.
    async fn assess(&mut self, now: Mono, shutting_down: bool) {
        let liveness = self.live_instances(now, shutting_down);
        self.next_expiry = liveness.next_expiry;
        let live = liveness.live;
        let (mut problems, kvip_macs) = self.published_by_others(&live);
        // A node that stopped renewing may still answer for what it held:
        // its MACs stay kvip's for a while, so its answer is no other host.
        let seen = Instant::now();
        for (mac, node) in kvip_macs {
            self.kvip_macs_seen.insert(mac, (node, seen));
        }
        self.kvip_macs_seen
            .retain(|_, (_, at)| seen.duration_since(*at) < KVIP_MAC_MEMORY);
        self.kvip_macs = self
            .kvip_macs_seen
            .iter()
            .map(|(mac, (node, _))| (*mac, node.clone()))
            .collect();
        let rule = self.config.class_rule();
        let services: Vec<Arc<Service>> = self.cache.services.state();
        let leases = &self.cache.leases;
        let control = [
            self.config.vip_leasename.as_str(),
            self.config.svc_leasename.as_str(),
        ];
        let inputs: Vec<_> = services
            .iter()
            .map(|s| {
                let mut input = translate::service_input(s);
                input.lease_labelled = input.named_lease().is_some_and(|key| {
                    leases.lease(&key.namespace, &key.name).is_some_and(|l| {
                        lease_names::service_may_name(
                            &key.name,
                            l.metadata.labels.as_ref(),
                            &control,
                        )
                    })
                });
                input
            })
            .collect();
        let nodes: Vec<NodeInput> = self
            .cache
            .nodes
            .state()
            .iter()
            .map(|n| {
                let (name, labels) = translate::node_labels(n);
                NodeInput {
                    runs_service_instance: live.contains(&name),
                    excluded: kvip_core::candidacy::excluded_by_label(
                        &labels,
                        self.config.exclude_lb_label,
                    ),
                    name,
                }
            })
            .collect();
        // kvip_restrict_to_pools: a Service outside its pool claims nothing.
        let fenced = match self.allocator.fence() {
            Some(fence) if self.config.restrict_to_pools => {
                kvip_core::ipam::outside_pools(&inputs, &rule, fence.as_deref())
            }
            // Not read yet: nothing is fenced (the ConfigMap watch says why).
            _ => BTreeMap::new(),
        };
        let admitted: Vec<kvip_core::ServiceInput> = if fenced.is_empty() {
            Vec::new()
        } else {
            inputs
                .iter()
                .filter(|i| !fenced.contains_key(&i.key))
                .cloned()
                .collect()
        };
        let slices = self.cache.slices.state();
        let mut assessment = assess(
            if fenced.is_empty() {
                &inputs
            } else {
                &admitted
            },
            slices.iter().filter_map(|s| translate::slice_input(s)),
            &nodes,
            &rule,
        );
        let fenced_keys: BTreeSet<ServiceKey> = fenced.keys().cloned().collect();
        assessment.pending.extend(fenced);
        for (key, e) in &assessment.refused {
            let text = e.to_string();
            if self.reported.get(key) != Some(&text) {
                tracing::warn!(service = %key, error = %text, "Service not served: bad input");
                self.reported.insert(key.clone(), text);
            }
        }
        self.reported
            .retain(|k, _| assessment.refused.contains_key(k));
        // Addresses from the pools: what a Service without one gets (the
        // allocator writes it) and why it gets none.
        let known = self.allocator.pools();
        let by_key: BTreeMap<ServiceKey, Arc<Service>> = services
            .iter()
            .map(|s| (translate::service_key(s), s.clone()))
            .collect();
        let planned = self.allocator.plan(&known, &inputs, &rule, &by_key, now);
        assessment.no_pool_address(&planned.refused);
        let ours: BTreeSet<ServiceKey> = assessment
            .views
            .iter()
            .map(|v| v.key.clone())
            .chain(assessment.refused.keys().cloned())
            .chain(fenced_keys.iter().cloned())
            .collect();
        // kube-vip annotations that would do something there and do nothing
        // here: said once per Service.
        for input in inputs.iter().filter(|i| ours.contains(&i.key)) {
            let names: Vec<&'static str> =
                kvip_core::kube_vip::unsupported_annotations(&input.annotations)
                    .into_iter()
                    .map(|(name, note)| {
                        if self.annotations_warned.get(&input.key).is_none_or(|w| !w.contains(&name)) {
                            tracing::warn!(service = %input.key, annotation = name, "the Service carries a kube-vip annotation kvip does not implement: {note}");
                        }
                        name
                    })
                    .collect();
            if names.is_empty() {
                self.annotations_warned.remove(&input.key);
            } else {
                self.annotations_warned.insert(input.key.clone(), names);
            }
        }
        self.annotations_warned.retain(|k, _| ours.contains(k));
        // Addresses no host may use, judged on this node's interfaces.
        let chosen = assessment.interfaces();
        let mut interfaces = self.vips.placement_view(self.configured_interface());
        self.refuse_unusable(&mut assessment, &interfaces, &chosen);
        assessment.refuse_service_network(&self.service_network.ranges(), &inputs);
        // Start-up: unmarked copies of VIPs whose Lease (or, in membership
        // mode, claim) names this node, left by a kvip without marks, are
        // this node's to keep.
        if !self.started_adoption
            && self
                .claim_unmarked(&assessment.groups, &services, &chosen)
                .await
        {
            interfaces = self.vips.placement_view(self.configured_interface());
        }
        // Nodes that cannot place an address are no candidates for it; this
        // node judges itself by what it publishes, as the others do.
        let mut unplaceable = interfaces.interfaces(self.interface_choice()).problems(
            assessment
                .views
                .iter()
                .flat_map(|v| v.addresses.iter().copied()),
            &chosen,
        );
        // Addresses another host answered for: nobody's to take.
        let asked: BTreeSet<IpAddr> = assessment
            .views
            .iter()
            .flat_map(|v| v.addresses.iter().copied())
            .collect();
        self.prober.retain(|a| asked.contains(&a));
        for (address, mac) in self.prober.in_use() {
            unplaceable.insert(address, placement::answered(&placement::mac_text(&mac)));
        }
        problems.insert(self.node.clone(), placement::published(&unplaceable));
        assessment.exclude_unplaceable(&problems);
        let leases = &self.cache.leases;
        let blind = self.blind_until(now);
        let foreign = assessment
            .views
            .iter()
            .map(|v| v.lease_key())
            .chain([self.global_lease.clone()])
            .filter_map(|key| leases.lease(&key.namespace, &key.name))
            .filter(|l| {
                translate::observed(Some(l))
                    .record
                    .is_some_and(|r| r.foreign_holder(|h| live.contains(h)).is_some())
            })
            .map(|l| leases.term_seen_at(&l, blind, now))
            .max();
        if let Some(at) = foreign {
            self.foreign_seen = Some(self.foreign_seen.map_or(at, |t| t.max(at)));
        }
        let mixed = self
            .foreign_seen
            .is_some_and(|at| now.since(at) < FOREIGN_MEMORY);
        // A node that runs no kvip now (it died, or kube-vip runs there)
        // says nothing about who announces: only live kvip nodes' vipHost.
        let hosts: BTreeMap<ServiceKey, String> = services
            .iter()
            .filter_map(|s| {
                let host = s
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(kvip_core::service::VIP_HOST_ANNOTATION)?;
                live.contains(host)
                    .then(|| (translate::service_key(s), host.clone()))
            })
            .collect();
        assessment.keep_held_leases(
            |key| translate::observed(leases.lease(&key.namespace, &key.name).as_deref()).record,
            |key| hosts.get(key).cloned(),
        );
        self.update_pending_metrics(&assessment.pending);
        let wanted = if self.membership.is_some() {
            BTreeMap::new()
        } else {
            kvip_core::elections::ballots(
                &assessment,
                &self.node,
                self.config.svc_election,
                &self.global_lease,
                shutting_down,
            )
        };
        // Only what kvip's own Services have, address by address: another
        // load balancer's status must not spare an address its probe. Nor
        // may a status that is the Service's only source of addresses,
        // unless a daemon announced them (`kube-vip.io/vipHost` names a
        // node): whoever may write the status could name the gateway.
        let announced = |key: &ServiceKey| {
            by_key.get(key).is_some_and(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(kvip_core::service::VIP_HOST_ANNOTATION))
            })
        };
        let served = assessment
            .views
            .iter()
            .filter(|v| v.addresses_from != AddressSource::Ingress || announced(&v.key))
            .flat_map(|v| v.served.iter().copied())
            .collect();
        self.assessed = Assessed {
            services,
            by_key,
            views: assessment.views,
            groups: assessment.groups,
            pending: assessment.pending,
            refused: assessment.refused,
            ours,
            mixed,
            live,
            interfaces,
            chosen,
            unplaceable,
            wanted,
            served,
            at: Some(now),
        };
    }

    /// Steps every election (or membership's claims) over the assessment
    /// `a` and carries out the result. Returns when to step again.
    async fn step(&mut self, a: &Assessed, now: Mono, shutting_down: bool) -> Duration {
        let mut next = Duration::from_secs(1);
        let view_of: BTreeMap<&ServiceKey, &kvip_core::ServiceView> =
            a.views.iter().map(|v| (&v.key, v)).collect();

        // Membership mode: owners by rendezvous hashing, claims on the Services.
        let mut decided = self
            .membership
            .as_mut()
            .map(|m| m.decide(&a.groups, &a.views, &a.services, &a.live, shutting_down));
        if let Some(o) = decided.as_mut() {
            self.moved_from.append(&mut o.moved_from);
            for w in o.claims.drain(..) {
                claims::spawn(&self.client, w, self.config.renew_deadline, &self.claims_tx);
            }
        }

        // Start-up: addresses an earlier run left are kept while we still hold their Lease.
        if !self.started_adoption {
            self.started_adoption = true;
            // Only addresses an election may give this node: not a refused
            // Service's (the control-plane VIP, a node's own address).
            let vips: BTreeSet<IpAddr> = a
                .groups
                .iter()
                .flat_map(|g| g.addresses.iter().copied())
                .collect();
            // Instances split by namespace or class share the mark: they
            // cannot tell which stale address is whose.
            let alone = self.config.svc_namespace.is_none() && !self.config.lb_class_only;
            let adopted = self.vips.adopt(&vips, &|_| alone).await;
            if !adopted.is_empty() {
                let until = now.after(self.config.lease_duration);
                let found = adopted.iter().map(|ia| ia.address).collect();
                self.voter.elections_mut().adopt(found, until);
                tracing::info!(
                    count = adopted.len(),
                    "found VIPs from an earlier run on the interfaces"
                );
            }
        }

        // Otherwise one election per Lease, told what each elects after every assessment.
        if a.at == Some(now) {
            self.voter
                .elections_mut()
                .set_peers(a.live.clone(), a.mixed);
            self.voter.elections_mut().want(&a.wanted);
        }
        let blind = self.blind_until(now);
        let leases = &self.cache.leases;
        let mut round = self
            .voter
            .step(now, blind, |key| leases.seen(key, blind, now));
        next = next.min(round.next);

        // What this node announces.
        let mut won: Vec<BTreeSet<ServiceKey>> = Vec::new();
        let mut lost: Vec<BTreeSet<ServiceKey>> = Vec::new();
        for t in &round.transitions {
            let services = t.ballot.services.clone();
            if t.announcing {
                won.push(services);
            } else {
                lost.push(services);
            }
        }
        let mut desired_addresses = round.addresses.clone();
        let mut announced_services: BTreeMap<ServiceKey, BTreeSet<IpAddr>> = BTreeMap::new();
        for s in &round.services {
            let own = view_of
                .get(s)
                .map(|v| v.addresses.clone())
                .unwrap_or_default();
            announced_services.entry(s.clone()).or_default().extend(own);
        }
        if let Some(o) = decided.as_mut() {
            desired_addresses.extend(o.addresses.iter().copied());
            for (s, addresses) in std::mem::take(&mut o.services) {
                announced_services.entry(s).or_default().extend(addresses);
            }
            for services in o.won.drain(..) {
                metrics::won("lb");
                tracing::info!(services = ?services, "owner by membership and claim: announcing");
                won.push(services);
            }
            for (services, candidate) in o.lost.drain(..) {
                let why = if candidate {
                    "claim_lost"
                } else {
                    "no_longer_candidate"
                };
                metrics::lost("lb", why);
                tracing::info!(services = ?services, why, "withdrawing");
                lost.push(services);
            }
        }
        // An address never served before is probed first: another host may use it.
        let (allowed, probe_next) = self.probe_first(&desired_addresses, a).await;
        if let Some(d) = probe_next {
            next = next.min(d);
        }
        // A Service whose address waits for its probe is not announced yet:
        // its status and its Event wait too.
        announced_services.retain(|_, addresses| addresses.iter().all(|x| allowed.contains(x)));
        let mut held = std::mem::take(&mut self.probe_held);
        for set in &mut won {
            // Held back, and never "won" until its address is up.
            set.retain(|k| {
                announced_services.contains_key(k) || {
                    held.insert(k.clone());
                    false
                }
            });
        }
        for set in &mut lost {
            set.retain(|k| !held.remove(k));
        }
        let released: BTreeSet<ServiceKey> = held
            .iter()
            .filter(|k| announced_services.contains_key(*k))
            .cloned()
            .collect();
        if !released.is_empty() {
            won.push(released);
        }
        held.retain(|k| !announced_services.contains_key(k) && a.by_key.contains_key(k));
        self.probe_held = held;
        let desired = self.place(&allowed, &a.interfaces, &a.chosen);
        let added = self.voter.apply(&mut self.vips, &desired, now).await;
        if let Some(m) = self.membership.as_mut() {
            for ia in &added {
                if let Some(took) = m.take_wanting_since(ia.address, now) {
                    metrics::get().takeover_seconds.observe(took.as_secs_f64());
                }
            }
        }
        metrics::get()
            .kube_vip_active_services
            .set(i64::try_from(announced_services.len()).unwrap_or(0));
        metrics::get()
            .kube_vip_is_leader
            .set(i64::from(!announced_services.is_empty()));

        self.record_events(a, &desired, &won, &lost, shutting_down);

        // Releases only after the withdraw above.
        self.voter.release(&mut round, &self.vips, now);
        for w in decided.into_iter().flat_map(|o| o.releases) {
            claims::spawn(&self.client, w, self.config.renew_deadline, &self.claims_tx);
        }

        // Service status follows what this node announces: compared with
        // the cache after every assessment, and whenever the announcement changed.
        let assessed_now = a.at == Some(now);
        if !shutting_down
            && (assessed_now
                || announced_services != self.announced_last
                || self.status.take_held_back())
        {
            let from_status: BTreeSet<ServiceKey> = a
                .views
                .iter()
                .filter(|v| v.addresses_from == kvip_core::service::AddressSource::Ingress)
                .map(|v| v.key.clone())
                .collect();
            self.status
                .sync(
                    &a.services,
                    &announced_services,
                    &a.ours,
                    &a.pending,
                    &from_status,
                )
                .await;
        }
        self.announced_last = announced_services;
        if let Some(at) = self.vips.send_due().await {
            next = next.min(at.saturating_duration_since(Instant::now()));
        }
        next
    }

    /// Of the addresses this node should announce (`wanted`), those it may
    /// put on an interface now: already served (in a Service's status) or
    /// already here, or probed and unanswered (see [`kvip_core::probe`]).
    /// Sends the probes due and runs the rechecks of addresses in use; a
    /// change in what is in use makes the next pass assess again, so every
    /// node learns it. Returns the allowed and when to step again.
    async fn probe_first(
        &mut self,
        wanted: &BTreeSet<IpAddr>,
        a: &Assessed,
    ) -> (BTreeSet<IpAddr>, Option<Duration>) {
        let before = self.prober.in_use();
        // Answers already heard count before a probe is judged: at scale
        // the loop may reach this step before it read them.
        while let Some(conflict) = self.vips.try_next_conflict() {
            if self.conflict(conflict) {
                self.dirty = true;
            }
        }
        let vips = &self.vips;
        let served = &a.served;
        // A free address that left the node and nobody serves is probed
        // again at its next take.
        self.prober
            .forget_clear(|x| wanted.contains(&x) || served.contains(&x) || vips.holds(x));
        // The pass read its clock before assessing, which at thousands of
        // Services takes tens of milliseconds: a probe's frames and verdict
        // go by the clock of now.
        let round = self.prober.step(
            wanted,
            |address| a.served.contains(&address) || vips.holds(address),
            self.now(),
        );
        if !round.send.is_empty() {
            let send: BTreeSet<IpAddr> = round.send.iter().copied().collect();
            for ia in self.place(&send, &a.interfaces, &a.chosen) {
                self.vips.probe(&ia).await;
            }
        }
        let prober = &self.prober;
        self.vips.keep_probing(|address| prober.listening(address));
        let after = self.prober.in_use();
        if after != before {
            self.dirty = true;
            for (address, mac) in &after {
                if before.get(address) != Some(mac) {
                    tracing::warn!(%address, other_mac = %placement::mac_text(mac), "another host answered for this address before it was first taken: no node takes it (probed again every 30 s)");
                }
            }
            for address in before.keys().filter(|a| !after.contains_key(a)) {
                tracing::info!(%address, "the host that used this address is gone: it may be taken");
            }
        }
        (round.allowed, round.next)
    }

    /// Events for what this pass decided: takeovers by the new holder,
    /// withdrawals that leave a Service unserved by the node that withdrew,
    /// pending reasons by one recorder node (the first live instance by name).
    fn record_events(
        &mut self,
        a: &Assessed,
        placed: &BTreeSet<InterfaceAddress>,
        won: &[BTreeSet<ServiceKey>],
        lost: &[BTreeSet<ServiceKey>],
        shutting_down: bool,
    ) {
        let by_key = &a.by_key;
        let pending = &a.pending;
        let uid = |k: &ServiceKey| by_key.get(k).and_then(|s| s.metadata.uid.clone());
        let view_of: BTreeMap<&ServiceKey, &kvip_core::ServiceView> = if won.is_empty() {
            BTreeMap::new()
        } else {
            a.views.iter().map(|v| (&v.key, v)).collect()
        };
        for key in won.iter().flatten() {
            let Some(svc) = by_key.get(key) else { continue };
            let previous = self.moved_from.remove(key).or_else(|| {
                svc.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(kvip_core::service::VIP_HOST_ANNOTATION))
                    .cloned()
            });
            let own = view_of
                .get(key)
                .map(|v| v.addresses.clone())
                .unwrap_or_default();
            let where_: Vec<String> = placed
                .iter()
                .filter(|ia| own.contains(&ia.address))
                .map(|ia| format!("{} on {}", ia.address, ia.interface))
                .collect();
            let (reason, message) = match previous {
                Some(from) if from != self.node => (
                    Reason::Moved,
                    format!(
                        "VIP moved from node {from} to node {} ({})",
                        self.node,
                        where_.join(", ")
                    ),
                ),
                _ => (
                    Reason::Announced,
                    format!("node {} announces {}", self.node, where_.join(", ")),
                ),
            };
            self.events.record(key, uid(key), reason, message);
        }
        // Only this pass's takeovers name where they came from.
        self.moved_from.clear();
        for key in lost.iter().flatten() {
            self.events.forget(key);
            if let Some(reason) = pending.get(key) {
                let message = format!("node {} withdrew the VIP: {}", self.node, reason.message());
                self.events
                    .record(key, uid(key), Reason::Withdrawn, message);
            }
        }
        let recorder = a
            .live
            .iter()
            .next()
            .is_some_and(|first| *first == self.node);
        let now = Instant::now();
        self.pending_since.retain(|k, _| pending.contains_key(k));
        for (key, reason) in pending {
            let code = reason.reason().to_string();
            let entry = self
                .pending_since
                .entry(key.clone())
                .or_insert((code.clone(), now));
            if entry.0 != code {
                *entry = (code, now);
            }
        }
        if recorder && !shutting_down {
            for (key, reason) in pending {
                let settled = self
                    .pending_since
                    .get(key)
                    .is_some_and(|(_, since)| now.duration_since(*since) >= PENDING_EVENT_DELAY);
                if settled {
                    self.events
                        .record(key, uid(key), Reason::Pending, reason.message());
                }
            }
            for (key, error) in &a.refused {
                self.events.record(
                    key,
                    uid(key),
                    Reason::Pending,
                    format!("invalid input: {error}"),
                );
            }
        }
        self.events.retain(|k| by_key.contains_key(k));
    }

    /// Where Service VIPs go (`vip_servicesinterface`, `vip_interface`).
    fn interface_choice(&self) -> InterfaceChoice<'_> {
        self.config.services_interface()
    }

    /// The interface configured for Service VIPs, or their fallback, if any.
    fn configured_interface(&self) -> Option<&str> {
        self.interface_choice().mentioned()
    }

    /// Takes groups whose address is a node's own address, the control-plane
    /// VIP, or the network or broadcast address of its subnet, out of the
    /// election, with the reason.
    fn refuse_unusable(
        &self,
        assessment: &mut kvip_core::Assessment,
        view: &PlacementView,
        chosen: &BTreeMap<IpAddr, ServiceInterface>,
    ) {
        let nodes = self.cache.nodes.state();
        assessment.refuse_node_addresses(&translate::node_addresses(nodes.iter().map(|n| &**n)));
        if let Some(cp) = *self.control_plane_address.borrow() {
            assessment
                .refuse(|a| (a == cp).then_some(PendingReason::ControlPlaneAddress { address: a }));
        }
        let interfaces = view.interfaces(self.interface_choice());
        assessment.refuse(|a| {
            let name = interfaces.interface_as(a, chosen.get(&a)).ok()?;
            let info = view.list.iter().find(|i| i.name == name)?;
            is_subnet_edge(a, info).then_some(PendingReason::SubnetAddress {
                address: a,
                interface: name,
            })
        });
    }

    /// Chooses the interface for every address this node announces. An
    /// address that cannot be placed (it was when the node became its
    /// candidate; the next assessment takes the node out) is left off;
    /// `chosen` is the interface each Service annotation names.
    fn place(
        &self,
        addresses: &BTreeSet<IpAddr>,
        view: &PlacementView,
        chosen: &BTreeMap<IpAddr, ServiceInterface>,
    ) -> BTreeSet<InterfaceAddress> {
        let interfaces = view.interfaces(self.interface_choice());
        addresses
            .iter()
            .filter_map(|address| match interfaces.place_as(*address, chosen.get(address)) {
                Ok(interface) => Some(InterfaceAddress {
                    interface,
                    address: *address,
                }),
                Err(problem) => {
                    tracing::debug!(address = %address, %problem, "cannot place the VIP on this node now");
                    None
                }
            })
            .collect()
    }

    /// Marks the unmarked copies of addresses of `groups` whose Lease (in
    /// membership mode, whose Services' claim) names this node, on the
    /// interface each belongs on (see [`Vips::claim_unmarked`]). True when
    /// any was marked.
    async fn claim_unmarked(
        &mut self,
        groups: &[AnnouncementGroup],
        services: &[Arc<Service>],
        chosen: &BTreeMap<IpAddr, ServiceInterface>,
    ) -> bool {
        let view = self.vips.placement_view(self.configured_interface());
        let places = view.interfaces(self.interface_choice());
        let claimed_here: BTreeSet<ServiceKey> = services
            .iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(kvip_core::service::VIP_HOST_ANNOTATION))
                    == Some(&self.node)
            })
            .map(|s| translate::service_key(s))
            .collect();
        let mut ours = BTreeMap::new();
        for g in groups {
            let names_us = if self.membership.is_some() {
                g.services.iter().any(|k| claimed_here.contains(k))
            } else {
                self.cache.leases.holder(&g.lease).as_deref() == Some(self.node.as_str())
            };
            if !names_us {
                continue;
            }
            for address in &g.addresses {
                if let Err(problem) = places.place_as(*address, chosen.get(address))
                    && let Some(interface) = placement::foreign_interface(&problem)
                {
                    ours.insert(*address, interface.to_string());
                }
            }
        }
        !ours.is_empty() && !self.vips.claim_unmarked(&ours).await.is_empty()
    }

    /// What the other live instances published: the addresses each cannot
    /// place, and their MACs. Only instance Leases of live nodes in the
    /// instance namespace held by the node they name count.
    fn published_by_others(
        &self,
        live: &BTreeSet<String>,
    ) -> (Problems, BTreeMap<[u8; 6], String>) {
        let mut problems = BTreeMap::new();
        let mut macs = BTreeMap::new();
        for lease in self.cache.leases.store.state() {
            if lease.metadata.namespace.as_deref() != Some(self.instance_namespace.as_str()) {
                continue;
            }
            let Some(instance) = lease
                .metadata
                .labels
                .as_ref()
                .and_then(instances::instance_of)
            else {
                continue;
            };
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            if instance.node == self.node
                || holder != Some(instance.node.as_str())
                || !live.contains(&instance.node)
            {
                continue;
            }
            let Some(annotations) = lease.metadata.annotations.as_ref() else {
                continue;
            };
            if let Some(text) = annotations.get(placement::PLACEMENT_ANNOTATION) {
                match placement::decode(text) {
                    Ok(p) => {
                        problems.insert(instance.node.clone(), p);
                    }
                    Err(e) => {
                        tracing::debug!(node = %instance.node, error = %e, "ignored a placement annotation")
                    }
                }
            }
            if let Some(text) = annotations.get(placement::MACS_ANNOTATION) {
                for mac in placement::decode_macs(text) {
                    macs.insert(mac, instance.node.clone());
                }
            }
        }
        (problems, macs)
    }

    fn update_pending_metrics(&self, pending: &BTreeMap<ServiceKey, PendingReason>) {
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        for reason in pending.values() {
            *counts.entry(reason.reason()).or_default() += 1;
        }
        let family = &metrics::get().pending;
        family.clear();
        for (reason, n) in counts {
            family
                .get_or_create(&metrics::ReasonLabels {
                    reason: reason.into(),
                })
                .set(n);
        }
    }

    /// Withdraws every VIP, then releases every Lease held, within about a second.
    async fn shutdown(&mut self) {
        tracing::info!("shutting down: withdrawing VIPs, then releasing Leases");
        let _ = self.pass(true).await;
        let deadline = Instant::now() + Duration::from_millis(900);
        while self.voter.elections().any_named() && Instant::now() < deadline {
            tokio::select! {
                Some(done) = self.voter.next_done() => {
                    self.write_finished(done);
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let _ = self.pass(true).await;
        }
        leases::delete(
            &self.client,
            &self.instance_namespace,
            &instances::instance_lease_name(&self.node),
        )
        .await;
    }
}
