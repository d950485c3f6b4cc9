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
use kvip_core::ipam::{
    self, AddressUse, IMPLEMENTATION_LABEL, IMPLEMENTATION_LABEL_VALUE, IpamError, PoolConfig,
    Request,
};
use kvip_core::service::{LOADBALANCER_IPS_ANNOTATION, SERVICE_INTERFACE_ANNOTATION};
use kvip_core::{Elector, LbClassRule, LeaseKey, Mono, ServiceInput, ServiceKey};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The Lease whose holder writes allocations.
pub const IPAM_LEASE: &str = "kvip-ipam";

/// How long the allocator keeps its Lease after the last Service got an
/// address: a burst of creates is served by one holder.
const LINGER: Duration = Duration::from_secs(30);

/// How long an address this node wrote is checked for a clash with another
/// allocator, and counted as used while the watch does not show it.
const WRITTEN_KEPT: Duration = Duration::from_secs(60);

/// How long a Service whose write failed waits before it is written again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

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
                tracing::info!(configmap = %format!("{}/{}", self.namespace, self.name), "the address pools' ConfigMap is gone: no pools");
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
        self.parsed = Some((version, config.clone()));
        Known::Present(config)
    }
}

/// An allocation to write.
#[derive(Debug, Clone)]
struct Wanted {
    uid: String,
    service: ServiceKey,
    resource_version: String,
    addresses: Vec<IpAddr>,
    interface: Option<String>,
    pool: String,
    ports: Vec<(String, u16)>,
    /// Instead of an address it wrote that turned out to be another's.
    replaces: Option<IpAddr>,
}

/// An allocation this node wrote.
#[derive(Debug, Clone)]
struct Written {
    service: ServiceKey,
    addresses: Vec<IpAddr>,
    ports: Vec<(String, u16)>,
    at: Mono,
    /// The watch has shown it.
    seen: bool,
}

/// A finished piece of the allocator's background work.
pub enum Done {
    /// A write of its Lease.
    Lease(WriteDone),
    /// The consistent list at the start of a term.
    Listed(Result<Vec<AddressUse>, String>),
    /// An allocation written (or not).
    Service {
        wanted: Box<WantedDone>,
        result: Result<(), String>,
        conflict: bool,
    },
}

/// The allocation a [`Done::Service`] reports on.
pub struct WantedDone(Wanted);

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

/// The allocator of one node.
pub struct Allocator {
    /// Watched only when kvip allocates or fences.
    pools: Option<Pools>,
    enabled: bool,
    lease: LeaseKey,
    campaign: Option<Campaign>,
    lease_writing: bool,
    client: Client,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    lease_tx: mpsc::UnboundedSender<WriteDone>,
    lease_rx: mpsc::UnboundedReceiver<WriteDone>,
    /// Allocations this node wrote lately, by uid.
    written: BTreeMap<String, Written>,
    /// Allocations being written, by uid.
    writing: BTreeSet<String>,
    /// Services whose write failed, until when they wait.
    failed: BTreeMap<String, Mono>,
    /// What the last assessment found to write.
    wanted: Vec<Wanted>,
    /// When there was last something to write.
    last_work: Option<Mono>,
    /// The consistent list of this term: `None` until it arrived.
    listed: Option<Vec<AddressUse>>,
    listing: bool,
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
            timeout: config.renew_deadline,
            tx,
            rx,
            lease_tx,
            lease_rx,
            written: BTreeMap::new(),
            writing: BTreeSet::new(),
            failed: BTreeMap::new(),
            wanted: Vec::new(),
            last_work: None,
            listed: None,
            listing: false,
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

    /// Waits up to `limit` for the first read of the pools, so the first
    /// assessment after a start does not take them for missing.
    pub async fn wait_listed(&self, limit: Duration) {
        let Some(pools) = &self.pools else { return };
        let until = tokio::time::Instant::now() + limit;
        while !pools.listed.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Works out, over the Services `inputs` (with `versions`: uid and
    /// resourceVersion by Service), what the pools give the Services of
    /// `class` that have no address, and what this node would write.
    pub fn plan(
        &mut self,
        known: &Known,
        inputs: &[ServiceInput],
        class: &LbClassRule,
        versions: &BTreeMap<ServiceKey, (String, String)>,
        now: Mono,
    ) -> Planned {
        self.wanted.clear();
        let Some(config) = known.config() else {
            crate::metrics::pool_usage(&[]);
            return Planned::default();
        };
        let (requests, mut uses) = ipam::requests_and_uses(inputs, class);
        let uid_of: BTreeMap<&ServiceKey, &str> =
            inputs.iter().map(|i| (&i.key, i.uid.as_str())).collect();
        // What the watch shows of each Service's addresses, by uid.
        let shown: BTreeMap<String, Vec<IpAddr>> = uses
            .iter()
            .filter_map(|u| Some((uid_of.get(&u.service)?.to_string(), u.addresses.clone())))
            .collect();
        // Its own writes the watch does not show yet count as used; once
        // shown, the watch has them (and a Service deleted since frees its
        // address at once).
        self.written
            .retain(|_, w| now.since(w.at) < WRITTEN_KEPT || w.at > now);
        for (uid, w) in &mut self.written {
            w.seen |= shown.get(uid.as_str()) == Some(&w.addresses);
        }
        let unseen: Vec<AddressUse> = self
            .written
            .values()
            .filter(|w| !w.seen)
            .map(|w| AddressUse {
                service: w.service.clone(),
                addresses: w.addresses.clone(),
                ports: w.ports.clone(),
            })
            .collect();
        let pending_uid = |key: &ServiceKey| versions.get(key).map(|(uid, _)| uid.clone());
        let busy = |key: &ServiceKey| {
            pending_uid(key).is_some_and(|uid| {
                self.writing.contains(&uid)
                    || self.failed.get(&uid).is_some_and(|until| now < *until)
                    || self.written.get(&uid).is_some_and(|w| !w.seen)
            })
        };
        uses.extend(unseen);
        if let Some(listed) = &self.listed {
            uses.extend(listed.iter().cloned());
        }
        let requests: Vec<Request> = requests.into_iter().map(|(_, r)| r).collect();
        let outcome = if self.enabled {
            ipam::allocate_all(config, &requests, &uses)
        } else {
            ipam::Outcome::default()
        };
        crate::metrics::pool_usage(&ipam::pool_usage(config, &uses));
        for (request, allocation) in &outcome.allocations {
            if busy(&request.service) {
                continue;
            }
            let Some((uid, version)) = versions.get(&request.service) else {
                continue;
            };
            self.wanted.push(Wanted {
                uid: uid.clone(),
                service: request.service.clone(),
                resource_version: version.clone(),
                addresses: allocation.addresses.clone(),
                interface: allocation.interface.clone(),
                pool: allocation.pool.clone(),
                ports: request.ports.clone(),
                replaces: None,
            });
        }
        // An address this node wrote that another allocator gave another
        // Service too: this node's Service takes another.
        if self.enabled {
            for (uid, w) in &self.written {
                let Some(input) = inputs.iter().find(|i| &i.uid == uid) else {
                    continue;
                };
                if shown.get(uid.as_str()) != Some(&w.addresses) || self.writing.contains(uid) {
                    continue;
                }
                let mine = AddressUse {
                    service: w.service.clone(),
                    addresses: w.addresses.clone(),
                    ports: w.ports.clone(),
                };
                let others: Vec<AddressUse> = uses
                    .iter()
                    .filter(|u| {
                        u.service == w.service
                            || !self.written.values().any(|x| x.service == u.service)
                    })
                    .cloned()
                    .collect();
                let Some((address, other)) = ipam::clash(config, &mine, &others) else {
                    continue;
                };
                tracing::warn!(service = %w.service, %address, other = %other, "another allocator gave the address kvip wrote to another Service at the same time: giving this Service another address");
                let request = Request::of(input);
                // The other Service keeps the address: it counts as used.
                let used: Vec<AddressUse> = uses
                    .iter()
                    .filter(|u| u.service != w.service)
                    .cloned()
                    .collect();
                if let (Ok(allocation), Some((_, version))) = (
                    ipam::allocate(config, &request, &used),
                    versions.get(&w.service),
                ) {
                    self.wanted.push(Wanted {
                        uid: uid.clone(),
                        service: w.service.clone(),
                        resource_version: version.clone(),
                        addresses: allocation.addresses,
                        interface: allocation.interface,
                        pool: allocation.pool,
                        ports: request.ports.clone(),
                        replaces: Some(address),
                    });
                }
            }
        }
        if !self.wanted.is_empty() {
            self.last_work = Some(now);
        }
        Planned {
            refused: outcome.refused,
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
            && (!self.wanted.is_empty() || self.last_work.is_some_and(|at| now.since(at) < LINGER));
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
                        self.timeout,
                        &self.lease_tx,
                    );
                }
            }
        }
        let holds = campaign.holds(now);
        if holds != self.holding {
            self.holding = holds;
            self.listed = None;
            self.listing = false;
            if holds {
                tracing::info!(
                    lease = %format!("{}/{}", self.lease.namespace, self.lease.name),
                    "this node allocates Service addresses from the pools"
                );
            }
        }
        if !holds {
            return next;
        }
        if self.listed.is_none() {
            if !self.listing {
                self.listing = true;
                self.list();
            }
            return next;
        }
        for wanted in std::mem::take(&mut self.wanted) {
            if !self.writing.insert(wanted.uid.clone()) {
                continue;
            }
            let client = self.client.clone();
            let tx = self.tx.clone();
            let timeout = self.timeout;
            tokio::spawn(async move {
                let result = tokio::time::timeout(timeout, write(&client, &wanted)).await;
                let (result, conflict) = match result {
                    Ok(Ok(_)) => (Ok(()), false),
                    Ok(Err(kube::Error::Api(s))) if s.code == 409 => (Err(s.message), true),
                    Ok(Err(e)) => (Err(e.to_string()), false),
                    Err(_) => (Err("timed out".to_string()), false),
                };
                let _ = tx.send(Done::Service {
                    wanted: Box::new(WantedDone(wanted)),
                    result,
                    conflict,
                });
            });
        }
        next
    }

    /// Reads the allocated Services from the API server (not the cache).
    fn list(&self) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let api: Api<Service> = Api::all(client);
            let selector = format!("{IMPLEMENTATION_LABEL}={IMPLEMENTATION_LABEL_VALUE}");
            let result = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|list| {
                    let inputs: Vec<ServiceInput> =
                        list.items.iter().map(translate::service_input).collect();
                    // Every class: any Service's address is used.
                    let everyone = LbClassRule {
                        class_only: false,
                        class_name: String::new(),
                        legacy: true,
                    };
                    ipam::requests_and_uses(&inputs, &everyone).1
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(Done::Listed(result));
        });
    }

    /// The next finished piece of background work.
    pub async fn next_done(&mut self) -> Option<Done> {
        tokio::select! {
            Some(done) = self.rx.recv() => Some(done),
            Some(done) = self.lease_rx.recv() => Some(Done::Lease(done)),
        }
    }

    /// Records `done`; an allocation written comes back for its Event.
    pub fn finished(&mut self, done: Done, now: Mono) -> Option<Allocated> {
        match done {
            Done::Lease(done) => {
                self.lease_writing = false;
                if let Some(c) = self.campaign.as_mut() {
                    c.finish(done, now);
                }
                None
            }
            Done::Listed(Ok(uses)) => {
                self.listing = false;
                if self.holding {
                    self.listed = Some(uses);
                }
                None
            }
            Done::Listed(Err(e)) => {
                self.listing = false;
                tracing::warn!(error = %e, "cannot list the allocated Services; allocating waits");
                None
            }
            Done::Service {
                wanted,
                result,
                conflict,
            } => {
                let WantedDone(w) = *wanted;
                self.writing.remove(&w.uid);
                match result {
                    Ok(()) => {
                        self.failed.remove(&w.uid);
                        let text = w
                            .addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ");
                        let message = match w.replaces {
                            Some(old) => format!(
                                "address {text} from pool {}, instead of {old}, which another allocator gave another Service at the same time",
                                w.pool
                            ),
                            None => format!("address {text} from pool {}", w.pool),
                        };
                        tracing::info!(service = %w.service, addresses = %text, pool = %w.pool, "address allocated");
                        self.written.insert(
                            w.uid.clone(),
                            Written {
                                service: w.service.clone(),
                                addresses: w.addresses,
                                ports: w.ports,
                                at: now,
                                seen: false,
                            },
                        );
                        Some(Allocated {
                            service: w.service,
                            uid: w.uid,
                            message,
                        })
                    }
                    Err(e) => {
                        if !conflict {
                            tracing::warn!(service = %w.service, error = %e, "cannot write the allocated address; trying again");
                        }
                        self.failed.insert(w.uid, now.after(RETRY_AFTER));
                        None
                    }
                }
            }
        }
    }
}

/// Writes `wanted`: a merge patch carrying the resourceVersion it was
/// decided on, or where RBAC grants only `update` on services a read of the
/// Service, refused as a conflict when it changed since, and a guarded
/// replace.
async fn write(client: &Client, wanted: &Wanted) -> kube::Result<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), &wanted.service.namespace);
    let name = wanted.service.name.as_str();
    let value = wanted
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let target = format!("services/{}", wanted.service);
    let _ = crate::budget::admit(&target, "services", crate::budget::Urgency::Now).await;
    let result = crate::access::write(Write::Services, |verb| {
        let value = value.clone();
        let api = api.clone();
        async move {
            match verb {
                Verb::Patch => {
                    let mut annotations = serde_json::Map::new();
                    annotations.insert(LOADBALANCER_IPS_ANNOTATION.to_string(), json!(value));
                    if let Some(interface) = &wanted.interface {
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
                    if let Some(interface) = &wanted.interface {
                        annotations
                            .insert(SERVICE_INTERFACE_ANNOTATION.to_string(), interface.clone());
                    }
                    api.replace(name, &PostParams::default(), &svc).await
                }
            }
        }
    })
    .await;
    crate::budget::answered(
        &target,
        "services",
        "allocate",
        crate::budget::code(&result),
    );
    crate::metrics::api_request("services", "allocate", result.is_ok());
    result
}
