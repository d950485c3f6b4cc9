//! One watch per resource type (Services, EndpointSlices, Nodes, Leases)
//! into in-memory stores, waking the reconciler on every change that can
//! change a decision. Never one watch per Service: the API cost stays flat as
//! Services grow. A Lease renewal of a term still running wakes nobody: the
//! watch only records when it arrived, which is all an election needs.
//! Objects are trimmed ([`crate::trim`]) before they are stored, and every
//! watch reports what it delivered to readiness ([`crate::health`]).

use crate::metrics;
use crate::trim::Trim;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use kvip_core::election::is_renewal;
use kvip_core::{LeaseKey, LeaseRecord, Mono, Observed};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Tells every watch to begin again (see [`restartable`]).
type Restart = tokio::sync::watch::Receiver<u64>;

/// The stores the reconciler reads.
#[derive(Clone)]
pub struct Cache {
    /// Services (in `svc_namespace`, or all).
    pub services: Store<Service>,
    /// EndpointSlices (same scope).
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// Leases everywhere but `kube-node-lease`.
    pub leases: LeaseWatch,
    /// Woken on every change that can change a decision.
    pub changed: Arc<Notify>,
}

/// A Lease watch as elections need it: the store, when each version
/// arrived, the versions of deletes, and when the watch could not see. Both
/// roles read their Leases through one.
#[derive(Clone)]
pub struct LeaseWatch {
    /// The Leases.
    pub store: Store<Lease>,
    terms: Arc<Mutex<Terms>>,
}

/// What the Lease watch saw, beside the store.
#[derive(Default)]
struct Terms {
    /// By (namespace, name): the version seen, its record, and when it arrived.
    arrived: HashMap<LeaseKey, Arrival>,
    /// Whether the watch is failing now (it cannot see renewals).
    blind: bool,
    /// The last time it delivered anything.
    delivered: Option<Mono>,
    /// Whether a list is in flight (from its start to its last object).
    listing: bool,
    /// The last instant the watch was known not to see: while it fails, and
    /// the moment it sees again.
    blind_until: Option<Instant>,
    /// Leases listed since the current relist began.
    relisted: std::collections::HashSet<LeaseKey>,
    /// Deleted Leases: the version of the delete, and when it arrived. A
    /// holder tells "deleted" from "our create not shown yet" by it.
    deleted: HashMap<LeaseKey, (String, Instant)>,
}

/// How long a deleted Lease's tombstone is kept: far longer than any term.
const TOMBSTONE_KEPT: Duration = Duration::from_secs(300);

/// The version of a delete the watch did not see (it happened while the
/// watch was away): newer than anything written before.
const UNSEEN_DELETE: &str = "18446744073709551615";

/// A Lease's key in the arrival map.
fn key_of(lease: &Lease) -> Option<LeaseKey> {
    Some(LeaseKey {
        namespace: lease.metadata.namespace.clone()?,
        name: lease.metadata.name.clone()?,
    })
}

struct Arrival {
    resource_version: String,
    record: LeaseRecord,
    at: Instant,
    /// What an instance Lease publishes (placement problems, MACs).
    published: Option<(Option<String>, Option<String>)>,
}

/// The publications of an instance Lease; `None` for any other Lease.
fn published(lease: &Lease) -> Option<(Option<String>, Option<String>)> {
    let annotations = lease.metadata.annotations.as_ref()?;
    let get = |k: &str| annotations.get(k).cloned();
    let placement = get(kvip_core::placement::PLACEMENT_ANNOTATION);
    let macs = get(kvip_core::placement::MACS_ANNOTATION);
    (placement.is_some() || macs.is_some()).then_some((placement, macs))
}

impl Terms {
    /// Records one Lease version; true when it needs a decision (anything
    /// but the renewal of a term that had not run out).
    fn arrive(&mut self, lease: &Lease, at: Instant) -> bool {
        let Some(key) = key_of(lease) else {
            return true;
        };
        let seen = crate::translate::observed(Some(lease));
        let (Some(record), Some(resource_version)) = (seen.record, seen.resource_version) else {
            return true;
        };
        let published = published(lease);
        let decide = match self.arrived.get(&key) {
            Some(before) if before.resource_version == resource_version => false,
            // An instance says something new about what it can place.
            Some(before) if before.published != published => true,
            Some(before) => {
                let seconds = before.record.lease_duration_seconds.unwrap_or(0).max(0);
                let running =
                    at < before.at + Duration::from_secs(u64::from(seconds.unsigned_abs()));
                !(running && is_renewal(&before.record, &record))
            }
            None => true,
        };
        self.deleted.remove(&key);
        self.arrived.insert(
            key,
            Arrival {
                resource_version,
                record,
                at,
                published,
            },
        );
        decide
    }
}

/// Reconnect quickly after the API server comes back: 100 ms doubling to
/// 2 s (kube's default grows to 30 s, which would leave the daemon blind
/// for half a minute after an outage), each wait spread ±25 % so the nodes
/// of a cluster do not relist in step.
#[derive(Debug, Clone)]
pub struct QuickBackoff {
    next: Duration,
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        Some(now.mul_f64(0.75 + 0.5 * crate::budget::jitter("watch")))
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Watches `api` as `name` (the word readiness and logs use for it) into a
/// store of trimmed objects.
fn watch<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    restart: Restart,
    changed: Arc<Notify>,
) -> Store<K>
where
    K: Resource + Trim + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let trimmed = restartable(api, config, restart).modify(K::trim);
    let stream = reflector::reflector(writer, trimmed).backoff(QuickBackoff::default());
    metrics::watch_started(name, None);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    metrics::watch_delivered(name);
                    changed.notify_one();
                }
                Err(e) => {
                    metrics::watch_failed(name);
                    tracing::warn!(watch = name, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
    });
    reader
}

/// A watch of `api` that begins again, with a fresh list, each time
/// `restart` changes (a watch whose connection died without an error).
fn restartable<K>(
    api: Api<K>,
    config: watcher::Config,
    restart: Restart,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    type Inner<K> = BoxStream<'static, watcher::Result<watcher::Event<K>>>;
    let begin = move || -> Inner<K> { watcher(api.clone(), config.clone()).boxed() };
    let first = begin();
    futures::stream::unfold(
        (first, Some(restart), begin),
        |(mut inner, mut restart, begin)| async move {
            loop {
                let told = async {
                    match restart.as_mut() {
                        Some(r) => r.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    again = told => {
                        if again {
                            inner = begin();
                        } else {
                            // Nobody can ask for a restart any more.
                            restart = None;
                        }
                    }
                    item = inner.next() => {
                        return item.map(|i| (i, (inner, restart, begin)));
                    }
                }
            }
        },
    )
}

impl LeaseWatch {
    /// Starts watching the Leases `api` and `config` select, as `name` for
    /// readiness and logs; wakes `changed` only for changes that matter (not
    /// another holder's renewal). With a `heartbeat`, readiness fails when
    /// the watch delivers nothing for that long. The watch begins again when
    /// `restart` changes.
    pub fn start(
        name: &'static str,
        api: Api<Lease>,
        config: watcher::Config,
        heartbeat: Option<Duration>,
        restart: Restart,
        changed: Arc<Notify>,
    ) -> LeaseWatch {
        let (reader, writer) = reflector::store();
        let terms = Arc::new(Mutex::new(Terms::default()));
        let trimmed = restartable(api, config, restart).modify(Lease::trim);
        let stream = reflector::reflector(writer, trimmed).backoff(QuickBackoff::default());
        let record = terms.clone();
        metrics::watch_started(name, heartbeat);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match &event {
                    Ok(_) => metrics::watch_delivered(name),
                    Err(_) => metrics::watch_failed(name),
                }
                let mut t = record.lock().unwrap_or_else(|e| e.into_inner());
                if event.is_ok() {
                    t.delivered = Some(crate::clock::now());
                }
                // A watch that failed could not see renewals: every other
                // holder's term restarts when it sees again — at the first object
                // or the end of a relist, not at the start of one (the list
                // request may still hang).
                let sees = matches!(
                    event,
                    Ok(watcher::Event::Apply(_)
                        | watcher::Event::InitApply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone)
                );
                if sees && t.blind {
                    t.blind = false;
                    t.blind_until = Some(now);
                    changed.notify_one();
                }
                let wake = match &event {
                    Ok(watcher::Event::Apply(l)) => t.arrive(l, now),
                    Ok(watcher::Event::InitApply(l)) => {
                        if let Some(key) = key_of(l) {
                            t.relisted.insert(key);
                        }
                        t.arrive(l, now)
                    }
                    Ok(watcher::Event::Delete(l)) => {
                        if let Some(key) = key_of(l) {
                            t.arrived.remove(&key);
                            let version = l
                                .metadata
                                .resource_version
                                .clone()
                                .unwrap_or_else(|| UNSEEN_DELETE.to_string());
                            t.deleted
                                .retain(|_, (_, at)| now.duration_since(*at) < TOMBSTONE_KEPT);
                            t.deleted.insert(key, (version, now));
                        }
                        true
                    }
                    Ok(watcher::Event::Init) => {
                        t.relisted.clear();
                        t.listing = true;
                        false
                    }
                    Ok(watcher::Event::InitDone) => {
                        t.listing = false;
                        // Leases deleted while the watch was away send no Delete.
                        let listed = std::mem::take(&mut t.relisted);
                        let gone: Vec<_> = t
                            .arrived
                            .keys()
                            .filter(|k| !listed.contains(*k))
                            .cloned()
                            .collect();
                        t.deleted
                            .retain(|_, (_, at)| now.duration_since(*at) < TOMBSTONE_KEPT);
                        for key in gone {
                            t.arrived.remove(&key);
                            t.deleted.insert(key, (UNSEEN_DELETE.to_string(), now));
                        }
                        true
                    }
                    Err(e) => {
                        if !t.blind {
                            tracing::warn!(watch = name, error = %e, "Lease watch failed; retrying with backoff");
                        }
                        t.blind = true;
                        t.blind_until = Some(now);
                        false
                    }
                };
                drop(t);
                if wake {
                    changed.notify_one();
                }
            }
        });
        LeaseWatch {
            store: reader,
            terms,
        }
    }
}

/// Every second: when the Lease watch has not shown a Lease write the API
/// server stored (see [`crate::health::lease_watch_dead`]), every watch
/// begins again; the others share its fate (each rides a connection made
/// the same way, to the same address).
async fn restart_dead_watches(terms: Arc<Mutex<Terms>>, restart: tokio::sync::watch::Sender<u64>) {
    let mut check = crate::health::EchoCheck::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (delivered, listing) = {
            let t = terms.lock().unwrap_or_else(|e| e.into_inner());
            (t.delivered, t.listing)
        };
        let stored = crate::budget::last_lease_stored();
        let now = crate::clock::now();
        if check.dead(delivered, stored, listing, now) {
            tracing::warn!(
                silent_s = delivered.map(|d| now.since(d).as_secs()),
                "the Lease watch has not shown Lease writes the API server stored: its connection is dead (a NAT entry lost when an interface went down, say); starting every watch again"
            );
            restart.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

impl Cache {
    /// Starts the four watches; `lease_heartbeat` is how long the Lease
    /// watch, which carries every instance's renewals, may stay silent.
    pub fn start(
        client: &Client,
        service_namespace: Option<&str>,
        lease_heartbeat: Duration,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let (services, slices): (Api<Service>, Api<EndpointSlice>) = match service_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let plain = watcher::Config::default;
        let (restart_tx, restart) = tokio::sync::watch::channel(0u64);
        let leases = LeaseWatch::start(
            "Lease",
            Api::all(client.clone()),
            plain().fields("metadata.namespace!=kube-node-lease"),
            Some(lease_heartbeat),
            restart.clone(),
            changed.clone(),
        );
        tokio::spawn(restart_dead_watches(leases.terms.clone(), restart_tx));
        Self {
            services: watch(
                "Service",
                services,
                plain(),
                restart.clone(),
                changed.clone(),
            ),
            slices: watch(
                "EndpointSlice",
                slices,
                plain(),
                restart.clone(),
                changed.clone(),
            ),
            nodes: watch(
                "Node",
                Api::all(client.clone()),
                plain(),
                restart,
                changed.clone(),
            ),
            leases,
            changed,
        }
    }

    /// Waits until every store has its first full list.
    pub async fn wait_synced(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.leases.store.wait_until_ready().await
    }
}

impl LeaseWatch {
    /// The holder the cached Lease `key` names, if it exists and names one.
    pub fn holder(&self, key: &LeaseKey) -> Option<String> {
        self.lease(&key.namespace, &key.name)?
            .spec
            .as_ref()?
            .holder_identity
            .clone()
    }

    /// The Lease `namespace/name`, if it exists.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.store
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// What an election sees of Lease `key`: the cached Lease as of when
    /// this node saw its term begin ([`LeaseWatch::term_seen_at`]), or, when
    /// it is gone, the version of its delete (so a delete is told from our
    /// own create the watch has not shown yet).
    pub fn seen(&self, key: &LeaseKey, blind: Option<Mono>, now: Mono) -> (Observed, Mono) {
        // The watch's own record of the version it delivered: one lookup,
        // no translation of the stored object on every step.
        {
            let t = self.terms.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = t.arrived.get(key) {
                let seen = Observed {
                    record: Some(a.record.clone()),
                    resource_version: Some(a.resource_version.clone()),
                };
                let at = crate::clock::mono(a.at);
                return (seen, blind.map_or(at, |b| at.max(b)).min(now));
            }
        }
        if let Some(lease) = self.lease(&key.namespace, &key.name) {
            let at = self.term_seen_at(&lease, blind, now);
            return (crate::translate::observed(Some(&lease)), at);
        }
        let t = self.terms.lock().unwrap_or_else(|e| e.into_inner());
        let deleted = t.deleted.get(key).map(|(version, _)| version.clone());
        let gone = Observed {
            record: None,
            resource_version: deleted,
        };
        (gone, now)
    }

    /// When this node saw `lease` begin its current term: when that version
    /// arrived, never earlier than `blind` (the end of a gap in what this
    /// node could see), never later than `now`.
    pub fn term_seen_at(&self, lease: &Lease, blind: Option<Mono>, now: Mono) -> Mono {
        let arrived = self.arrived_at(lease, now);
        blind.map_or(arrived, |b| arrived.max(b)).min(now)
    }

    /// When `lease` (the version in the store) arrived, on the core's clock;
    /// `now` when the watch has not said yet.
    fn arrived_at(&self, lease: &Lease, now: Mono) -> Mono {
        let Some(key) = key_of(lease) else {
            return now;
        };
        let t = self.terms.lock().unwrap_or_else(|e| e.into_inner());
        t.arrived
            .get(&key)
            .filter(|a| lease.metadata.resource_version.as_ref() == Some(&a.resource_version))
            .map_or(now, |a| crate::clock::mono(a.at))
            .min(now)
    }

    /// The last instant the watch could not see (now, while it fails).
    pub fn blind_until(&self, now: Mono) -> Option<Mono> {
        let t = self.terms.lock().unwrap_or_else(|e| e.into_inner());
        if t.blind {
            Some(now)
        } else {
            t.blind_until.map(crate::clock::mono)
        }
    }
}
