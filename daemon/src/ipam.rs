//! Addresses from pools in the daemon: the `kubevip` ConfigMap watched,
//! read into a [`PoolConfig`], and one allocator at a time writing the
//! addresses the core chooses (`kvip_core::ipam`) to the Services that have
//! none.
//!
//! **One writer.** Every node works out the same allocations (what `kvip
//! status` and the pending reasons show), but only the holder of the Lease
//! `kvip-ipam` in kvip's namespace writes them. A node campaigns for it only
//! while some Service waits for an address, and lets it go a while after
//! the last one got one, so an idle cluster pays no renewals for it. A new
//! holder reads the allocated Services once from the API server (a
//! consistent list, not its cache) before it writes anything, so it sees
//! every address the previous holder wrote, however late its own watch is.
//!
//! **Its own writes.** A write is a merge patch carrying the resourceVersion
//! the allocation was decided on (or, under kube-vip's RBAC, a guarded
//! update): a Service that changed since, say because kube-vip-cloud-provider
//! gave it an address first, is not overwritten. Until the watch shows a
//! written address, the allocator counts it as used itself.
//!
//! **Another allocator.** kube-vip-cloud-provider may still run during a
//! migration. It cannot see kvip's Lease, so the two may hand one address to
//! two Services in the same instant. The allocator checks every address it
//! wrote for a while afterwards, and gives its Service another address when
//! a Service it did not allocate turns out to have the same one
//! ([`kvip_core::ipam::clash`]); the cloud provider never takes one back.

use crate::cache::Cache;
use crate::elections::{self, Campaign, CampaignExt, Step, WriteDone};
use crate::translate;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kvip_core::access::{Verb, Write};
use kvip_core::allocator::{Cached, Listed, Planner, Write as AllocationWrite};
use kvip_core::ipam::{
    self, AddressUse, IMPLEMENTATION_LABEL, IMPLEMENTATION_LABEL_VALUE, IpamError, PoolConfig,
};
use kvip_core::service::{LOADBALANCER_IPS_ANNOTATION, SERVICE_INTERFACE_ANNOTATION};
use kvip_core::{Elector, LbClassRule, LeaseKey, Mono, ServiceInput, ServiceKey};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The Lease whose holder writes allocations.
pub const IPAM_LEASE: &str = "kvip-ipam";

/// How long the allocator keeps its Lease after the last Service got an
/// address: a burst of creates is served by one holder.
const LINGER: Duration = Duration::from_secs(30);

/// How long the list at the start of a term may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// What this node knows of the pools.
#[derive(Debug, Clone)]
pub enum Known {
    /// The ConfigMap could not be read yet (RBAC, or the API server).
    Unknown,
    /// There is no such ConfigMap: no pools.
    Absent,
    /// The pools.
    Present(Arc<PoolConfig>),
}

impl Known {
    /// The pools, if any are known.
    pub fn config(&self) -> Option<&PoolConfig> {
        match self {
            Known::Present(config) => Some(config),
            _ => None,
        }
    }
}

/// The watched ConfigMap.
pub struct Pools {
    /// The ConfigMap, when there is one.
    map: Arc<Mutex<Option<ConfigMap>>>,
    listed: Arc<AtomicBool>,
    /// The last version read, and what it said.
    parsed: Option<(String, Arc<PoolConfig>)>,
    /// What the fence goes by: the pools last read, each bad or missing
    /// value replaced by its last good one, kept while the ConfigMap is
    /// gone (a delete and create, a bad edit being fixed, must not
    /// withdraw every address).
    fence: Option<Arc<PoolConfig>>,
    name: String,
    namespace: String,
}

/// The first wait after RBAC refused the ConfigMap; it doubles up to
/// [`kvip_core::access::RETRY_MISSING`], so a refusal costs the API server
/// next to nothing (an API server that has just started refuses everything
/// for a moment, and RBAC may be widened later).
const REFUSED_FIRST_WAIT: Duration = Duration::from_secs(30);

impl Pools {
    /// Watches ConfigMap `namespace/name` (only that one object), waking
    /// `changed` on every change.
    pub fn start(client: &Client, namespace: &str, name: &str, changed: Arc<Notify>) -> Pools {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let map = Arc::new(Mutex::new(None));
        let listed = Arc::new(AtomicBool::new(false));
        let (slot, seen) = (map.clone(), listed.clone());
        let what = format!("{namespace}/{name}");
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config));
            let mut relisted: Option<ConfigMap> = None;
            let mut wait = Duration::from_millis(100);
            let mut refused_wait = REFUSED_FIRST_WAIT;
            let mut failing = false;
            while let Some(event) = stream.next().await {
                let set = |value: Option<ConfigMap>| {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = value;
                };
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        let refused = matches!(
                            &e,
                            watcher::Error::InitialListFailed(kube::Error::Api(s))
                                | watcher::Error::WatchFailed(kube::Error::Api(s))
                                if kvip_core::access::refused_by_rbac(s.code, &s.message)
                        );
                        if !failing {
                            failing = true;
                            if refused {
                                crate::metrics::permission_missing("list,watch configmaps", true);
                                tracing::warn!(configmap = %what, error = %e, "RBAC does not grant list and watch on the address pools' ConfigMap: kvip gives no Service an address, and kvip_restrict_to_pools fences nothing until it can read it (asked again after 30 s, doubling to 10 minutes); grant it as `kvip manifest rbac` does, or set kvip_ipam=false");
                            } else {
                                tracing::warn!(configmap = %what, error = %e, "the address pools' ConfigMap cannot be read now; keeping what was read last");
                            }
                        }
                        if refused {
                            tokio::time::sleep(refused_wait).await;
                            refused_wait = (refused_wait * 2).min(kvip_core::access::RETRY_MISSING);
                        } else {
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(2));
                        }
                        continue;
                    }
                };
                wait = Duration::from_millis(100);
                refused_wait = REFUSED_FIRST_WAIT;
                if failing {
                    failing = false;
                    crate::metrics::permission_missing("list,watch configmaps", false);
                    tracing::info!(configmap = %what, "the address pools' ConfigMap can be read again");
                }
                match event {
                    watcher::Event::Init => relisted = None,
                    watcher::Event::InitApply(map) => relisted = Some(map),
                    watcher::Event::InitDone => {
                        set(relisted.take());
                        seen.store(true, Ordering::Relaxed);
                    }
                    watcher::Event::Apply(map) => set(Some(map)),
                    watcher::Event::Delete(_) => set(None),
                }
                changed.notify_one();
            }
        });
        Pools {
            map,
            listed,
            parsed: None,
            fence: None,
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The pools now; a new version of the ConfigMap is read (and each of
    /// its problems logged) once.
    pub fn current(&mut self) -> Known {
        if !self.listed.load(Ordering::Relaxed) {
            return Known::Unknown;
        }
        let current = self.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(map) = current else {
            if self.parsed.take().is_some() {
                tracing::warn!(configmap = %format!("{}/{}", self.namespace, self.name), "the address pools' ConfigMap is gone: no address is given from a pool; kvip_restrict_to_pools keeps fencing with the pools read last");
            }
            crate::metrics::pool_problems(0);
            return Known::Absent;
        };
        let version = map.resource_version().unwrap_or_default();
        if let Some((seen, config)) = &self.parsed
            && *seen == version
        {
            return Known::Present(config.clone());
        }
        let data: BTreeMap<String, String> = map.data.clone().unwrap_or_default();
        let config = Arc::new(PoolConfig::from_data(&data));
        for problem in &config.problems {
            tracing::warn!(configmap = %format!("{}/{}", self.namespace, self.name), key = %problem.key, "{problem}");
        }
        crate::metrics::pool_problems(config.problems.len());
        tracing::info!(
            configmap = %format!("{}/{}", self.namespace, self.name),
            pools = config.pools().count(),
            problems = config.problems.len(),
            "address pools read"
        );
        let fence = match &self.fence {
            Some(last) => config.patched(last),
            None => (*config).clone(),
        };
        self.fence = Some(Arc::new(fence));
        self.parsed = Some((version, config.clone()));
        Known::Present(config)
    }

    /// What `kvip_restrict_to_pools` goes by: `None` while the ConfigMap
    /// cannot be read yet (nothing is fenced: said in the log), else the
    /// pools last read (see [`Pools::fence`]'s field), `Some(None)` when
    /// there never was a ConfigMap (no address is inside a pool).
    pub fn fence(&mut self) -> Option<Option<Arc<PoolConfig>>> {
        match self.current() {
            Known::Unknown => None,
            _ => Some(self.fence.clone()),
        }
    }
}

/// A finished piece of the allocator's background work.
pub enum Done {
    /// A write of its Lease.
    Lease(WriteDone),
    /// The consistent list at the start of a term (by term number).
    Listed(u64, Result<Vec<Listed>, String>),
    /// An allocation written (or not).
    Service {
        /// What was written.
        write: Box<AllocationWrite>,
        /// How it ended.
        result: WriteEnd,
    },
}

/// How an allocation write ended.
pub enum WriteEnd {
    /// Stored.
    Stored,
    /// The Service changed since the allocation was decided (it is decided
    /// again on what the watch shows).
    Conflict,
    /// Not sent (the write budget).
    NotSent,
    /// Failed, or timed out: it may or may not be stored.
    Failed(String),
}

/// What the assessment needs from the pools.
#[derive(Debug, Default)]
pub struct Planned {
    /// Services the pools give nothing, and why.
    pub refused: BTreeMap<ServiceKey, IpamError>,
}

/// An allocation written, for its Event.
pub struct Allocated {
    /// The Service.
    pub service: ServiceKey,
    /// Its uid.
    pub uid: String,
    /// What the Event says.
    pub message: String,
}

/// The allocator of one node: the Lease, the writes, and the core's
/// bookkeeping ([`Planner`]).
pub struct Allocator {
    /// Watched only when kvip allocates or fences.
    pools: Option<Pools>,
    enabled: bool,
    lease: LeaseKey,
    campaign: Option<Campaign>,
    lease_writing: bool,
    client: Client,
    /// How long an allocation write may take: short enough that it ends
    /// before another node may take the Lease.
    timeout: Duration,
    lease_timeout: Duration,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    lease_tx: mpsc::UnboundedSender<WriteDone>,
    lease_rx: mpsc::UnboundedReceiver<WriteDone>,
    planner: Planner,
    /// What the last plan found to write.
    wanted: Vec<AllocationWrite>,
    /// When there was last something to write.
    last_work: Option<Mono>,
    /// The term: counted up each time this node starts holding the Lease.
    term: u64,
    listing: bool,
    /// After a failed list: the wait, and when to list again.
    list_wait: Option<Duration>,
    list_after: Option<Mono>,
    holding: bool,
}

impl Allocator {
    /// The allocator of `node`, writing with `client`.
    pub fn new(
        config: &kvip_core::Config,
        node: &str,
        client: Client,
        instance_namespace: &str,
        changed: Arc<Notify>,
    ) -> Allocator {
        let pools = (config.ipam || config.restrict_to_pools).then(|| {
            Pools::start(
                &client,
                &config.ipam_namespace,
                &config.ipam_config_map,
                changed,
            )
        });
        let campaign = Elector::new(
            node.to_string(),
            config.lease_duration,
            config.renew_deadline,
            config.retry_period,
        )
        .ok()
        .map(Campaign::new);
        let (tx, rx) = mpsc::unbounded_channel();
        let (lease_tx, lease_rx) = mpsc::unbounded_channel();
        Allocator {
            pools,
            enabled: config.ipam,
            lease: LeaseKey {
                namespace: instance_namespace.to_string(),
                name: IPAM_LEASE.to_string(),
            },
            campaign,
            lease_writing: false,
            client,
            timeout: config
                .lease_duration
                .saturating_sub(config.renew_deadline)
                .max(Duration::from_millis(500)),
            lease_timeout: config.renew_deadline,
            tx,
            rx,
            lease_tx,
            lease_rx,
            planner: Planner::default(),
            wanted: Vec::new(),
            last_work: None,
            term: 0,
            listing: false,
            list_wait: None,
            list_after: None,
            holding: false,
        }
    }

    /// The pools now.
    pub fn pools(&mut self) -> Known {
        match self.pools.as_mut() {
            Some(pools) => pools.current(),
            None => Known::Absent,
        }
    }

    /// What `kvip_restrict_to_pools` goes by ([`Pools::fence`]).
    pub fn fence(&mut self) -> Option<Option<Arc<PoolConfig>>> {
        match self.pools.as_mut() {
            Some(pools) => pools.fence(),
            None => Some(None),
        }
    }

    /// Waits up to `limit` for the first read of the pools, so the first
    /// assessment after a start does not take them for missing.
    pub async fn wait_listed(&self, limit: Duration) {
        let Some(pools) = &self.pools else { return };
        let until = tokio::time::Instant::now() + limit;
        while !pools.listed.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Works out, over the cached Services (`inputs`, and `services` by
    /// key), what the pools give the Services of `class` that name no
    /// address, and what this node would write.
    pub fn plan(
        &mut self,
        known: &Known,
        inputs: &[ServiceInput],
        class: &LbClassRule,
        services: &BTreeMap<ServiceKey, Arc<Service>>,
        now: Mono,
    ) -> Planned {
        self.wanted.clear();
        let Some(config) = known.config() else {
            crate::metrics::pool_usage(&[]);
            return Planned::default();
        };
        let cached: Vec<Cached> = inputs
            .iter()
            .filter_map(|input| {
                let svc = services.get(&input.key)?;
                Some(Cached {
                    input: input.clone(),
                    resource_version: svc.metadata.resource_version.clone()?,
                    allocator_made: allocator_made(svc),
                })
            })
            .collect();
        let plan = self.planner.plan(config, &cached, class, self.enabled, now);
        for (service, address, other) in &plan.clashes {
            tracing::warn!(service = %service, %address, other = %other, "another allocator (kube-vip-cloud-provider?) gave the address kvip wrote to another Service at the same time: giving this Service another address");
        }
        if let Some(service) = &plan.gave_way {
            tracing::warn!(service = %service, "kube-vip-cloud-provider allocates in this cluster (it gave this Service its address): kvip allocates nothing until 10 minutes after its last allocation, so the two never race; remove it to let kvip allocate");
        }
        crate::metrics::pool_usage(&plan.usage);
        self.wanted = plan.writes;
        if !self.wanted.is_empty() {
            self.last_work = Some(now);
        }
        Planned {
            refused: plan.refused,
        }
    }

    /// Campaigns for the allocator's Lease while there is work, and writes
    /// what the last plan found while holding it. Returns when to step again.
    pub fn step(&mut self, cache: &Cache, blind: Option<Mono>, now: Mono) -> Duration {
        let mut next = Duration::from_secs(1);
        let Some(campaign) = self.campaign.as_mut() else {
            return next;
        };
        let candidate = self.enabled
            && (!self.wanted.is_empty()
                || self.planner.writing()
                || self.last_work.is_some_and(|at| now.since(at) < LINGER));
        if !self.lease_writing {
            let (observed, seen_at) = cache.leases.seen(&self.lease, blind, now);
            campaign.observe(observed, seen_at);
            match campaign.step(now, translate::wall_now(), candidate) {
                Step::Wait(d) => next = next.min(d),
                Step::Write(write) | Step::Release(write) => {
                    self.lease_writing = true;
                    elections::spawn_write(
                        &self.client,
                        self.lease.clone(),
                        write,
                        None,
                        self.lease_timeout,
                        &self.lease_tx,
                    );
                }
            }
        }
        let holds = campaign.holds(now);
        if holds != self.holding {
            self.holding = holds;
            self.planner.term_ended();
            self.listing = false;
            if holds {
                self.term += 1;
                tracing::info!(
                    lease = %format!("{}/{}", self.lease.namespace, self.lease.name),
                    "this node allocates Service addresses from the pools"
                );
            }
        }
        if !holds {
            return next;
        }
        if !self.planner.has_list() {
            if !self.listing && self.list_after.is_none_or(|at| now >= at) {
                self.listing = true;
                self.list();
            }
            return next;
        }
        for wanted in std::mem::take(&mut self.wanted) {
            if self.planner.pinned(&wanted.uid) {
                continue;
            }
            self.planner.sending(&wanted, now);
            let client = self.client.clone();
            let tx = self.tx.clone();
            let timeout = self.timeout;
            tokio::spawn(async move {
                let result = write(&client, &wanted, timeout).await;
                let _ = tx.send(Done::Service {
                    write: Box::new(wanted),
                    result,
                });
            });
        }
        next
    }

    /// Reads the allocated Services from the API server (not the cache),
    /// for this term.
    fn list(&self) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let term = self.term;
        tokio::spawn(async move {
            let api: Api<Service> = Api::all(client);
            let selector = format!("{IMPLEMENTATION_LABEL}={IMPLEMENTATION_LABEL_VALUE}");
            let params = ListParams::default().labels(&selector);
            let listing = api.list(&params);
            let result = match tokio::time::timeout(LIST_TIMEOUT, listing).await {
                Ok(Ok(list)) => Ok(list
                    .items
                    .iter()
                    .filter_map(|svc| {
                        let input = translate::service_input(svc);
                        let addresses = ipam::named_addresses(&input);
                        (input.type_ == kvip_core::service::LOAD_BALANCER_TYPE
                            && !addresses.is_empty())
                        .then(|| Listed {
                            uid: input.uid.clone(),
                            version: svc
                                .metadata
                                .resource_version
                                .as_deref()
                                .and_then(|v| v.parse().ok()),
                            used: AddressUse {
                                service: input.key.clone(),
                                addresses,
                                ports: input.ports.clone(),
                            },
                        })
                    })
                    .collect()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            let _ = tx.send(Done::Listed(term, result));
        });
    }

    /// The next finished piece of background work.
    pub async fn next_done(&mut self) -> Option<Done> {
        tokio::select! {
            Some(done) = self.rx.recv() => Some(done),
            Some(done) = self.lease_rx.recv() => Some(Done::Lease(done)),
        }
    }

    /// Records `done`. Returns an allocation written, for its Event, and
    /// whether the pools' picture changed (the next pass plans again).
    pub fn finished(&mut self, done: Done, now: Mono) -> (Option<Allocated>, bool) {
        match done {
            Done::Lease(done) => {
                self.lease_writing = false;
                if let Some(c) = self.campaign.as_mut() {
                    c.finish(done, now);
                }
                (None, false)
            }
            Done::Listed(term, result) => {
                if term != self.term || !self.holding {
                    return (None, false);
                }
                self.listing = false;
                match result {
                    Ok(uses) => {
                        self.list_wait = None;
                        self.planner.listed(uses, now);
                        (None, true)
                    }
                    Err(e) => {
                        let wait = self.list_wait.map_or(Duration::from_secs(1), |w| {
                            (w * 2).min(Duration::from_secs(30))
                        });
                        self.list_wait = Some(wait);
                        self.list_after = Some(now.after(wait));
                        tracing::warn!(error = %e, "cannot list the allocated Services; allocating waits, and lists again in {wait:?}");
                        (None, false)
                    }
                }
            }
            Done::Service { write: w, result } => match result {
                WriteEnd::Stored => {
                    let addresses = &w.allocation.addresses;
                    self.planner.stored(&w.uid, addresses, now);
                    let text = addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    let pool = &w.allocation.pool;
                    let message = match w.replaces {
                        Some(old) => format!(
                            "address {text} from pool {pool}, instead of {old}, which another allocator gave another Service at the same time"
                        ),
                        None => format!("address {text} from pool {pool}"),
                    };
                    tracing::info!(service = %w.service, addresses = %text, pool = %pool, "address allocated");
                    (
                        Some(Allocated {
                            service: w.service.clone(),
                            uid: w.uid.clone(),
                            message,
                        }),
                        true,
                    )
                }
                WriteEnd::Conflict | WriteEnd::NotSent => {
                    // Not stored: decided again on what the watch shows.
                    self.planner.not_stored(&w.uid, now);
                    (None, true)
                }
                WriteEnd::Failed(e) => {
                    // Maybe stored: the address stays used until the watch tells.
                    let wait = self.planner.failed(&w.uid, now);
                    tracing::warn!(service = %w.service, error = %e, "cannot write the allocated address; trying again in {wait:?}");
                    (None, true)
                }
            },
        }
    }
}

/// Whether `svc`'s address looks written by an allocator: labelled
/// `implementation: kube-vip` and, as kube-vip-cloud-provider writes it,
/// `spec.loadBalancerIP` equal to the first address. A hand-set address
/// (the cloud provider labels those too) has no `spec.loadBalancerIP`.
fn allocator_made(svc: &Service) -> bool {
    let labelled = svc.labels().get(IMPLEMENTATION_LABEL).map(String::as_str)
        == Some(IMPLEMENTATION_LABEL_VALUE);
    let first = svc
        .annotations()
        .get(LOADBALANCER_IPS_ANNOTATION)
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref());
    labelled && first.is_some() && spec == first
}

/// Writes `wanted` within `timeout`: a merge patch carrying the
/// resourceVersion it was decided on, or where RBAC grants only `update` on
/// services a read of the Service, refused as a conflict when it changed
/// since, and a guarded replace. Only the addresses' annotation, the label
/// and (from an `interface-*` key) the interface annotation are written.
async fn write(client: &Client, wanted: &AllocationWrite, timeout: Duration) -> WriteEnd {
    let api: Api<Service> = Api::namespaced(client.clone(), &wanted.service.namespace);
    let name = wanted.service.name.as_str();
    let value = wanted
        .allocation
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let target = format!("services/{}", wanted.service);
    // One deadline for the wait for the write budget and the write: it ends
    // before another node may take the Lease.
    let deadline = tokio::time::Instant::now() + timeout;
    let admitted = tokio::time::timeout_at(
        deadline,
        crate::budget::admit(
            &target,
            "services",
            crate::budget::Urgency::Within(timeout / 2),
        ),
    )
    .await;
    if !matches!(admitted, Ok(Ok(()))) {
        return WriteEnd::NotSent;
    }
    let call = crate::access::write(Write::Services, |verb| {
        let value = value.clone();
        let api = api.clone();
        async move {
            match verb {
                Verb::Patch => {
                    let mut annotations = serde_json::Map::new();
                    annotations.insert(LOADBALANCER_IPS_ANNOTATION.to_string(), json!(value));
                    if let Some(interface) = &wanted.allocation.interface {
                        annotations
                            .insert(SERVICE_INTERFACE_ANNOTATION.to_string(), json!(interface));
                    }
                    let patch = json!({
                        "metadata": {
                            "resourceVersion": wanted.resource_version,
                            "labels": { IMPLEMENTATION_LABEL: IMPLEMENTATION_LABEL_VALUE },
                            "annotations": annotations,
                        }
                    });
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                }
                Verb::Update => {
                    let mut svc = api.get(name).await?;
                    if svc.metadata.resource_version.as_deref()
                        != Some(wanted.resource_version.as_str())
                    {
                        return Err(crate::access::conflict(&format!(
                            "service {}",
                            wanted.service
                        )));
                    }
                    svc.labels_mut().insert(
                        IMPLEMENTATION_LABEL.to_string(),
                        IMPLEMENTATION_LABEL_VALUE.to_string(),
                    );
                    let annotations = svc.annotations_mut();
                    annotations.insert(LOADBALANCER_IPS_ANNOTATION.to_string(), value);
                    if let Some(interface) = &wanted.allocation.interface {
                        annotations
                            .insert(SERVICE_INTERFACE_ANNOTATION.to_string(), interface.clone());
                    }
                    api.replace(name, &PostParams::default(), &svc).await
                }
            }
        }
    });
    let result = tokio::time::timeout_at(deadline, call).await;
    let code = match &result {
        Ok(r) => crate::budget::code(r),
        Err(_) => None,
    };
    crate::budget::answered(&target, "services", "allocate", code);
    crate::metrics::api_request("services", "allocate", matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(_)) => WriteEnd::Stored,
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => WriteEnd::Conflict,
        Ok(Err(e)) => WriteEnd::Failed(e.to_string()),
        Err(_) => WriteEnd::Failed("timed out".to_string()),
    }
}
