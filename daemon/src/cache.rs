//! One watch per resource type (Services, EndpointSlices, Nodes, Leases)
//! into in-memory stores, waking the reconciler on every change. Never one
//! watch per Service: the API cost stays flat as Services grow.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
    pub leases: Store<Lease>,
    /// Woken on every change.
    pub changed: Arc<Notify>,
}

/// Reconnect quickly after the API server comes back: 100 ms doubling to
/// 2 s (kube's default grows to 30 s, which would leave the daemon blind
/// for half a minute after an outage).
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
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

fn watch<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, config)).backoff(QuickBackoff::default());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}

impl Cache {
    /// Starts the four watches.
    pub fn start(client: &Client, service_namespace: Option<&str>) -> Self {
        let changed = Arc::new(Notify::new());
        let (services, slices): (Api<Service>, Api<EndpointSlice>) = match service_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let plain = watcher::Config::default;
        Self {
            services: watch(services, plain(), changed.clone()),
            slices: watch(slices, plain(), changed.clone()),
            nodes: watch(Api::all(client.clone()), plain(), changed.clone()),
            leases: watch(
                Api::all(client.clone()),
                plain().fields("metadata.namespace!=kube-node-lease"),
                changed.clone(),
            ),
            changed,
        }
    }

    /// Waits until every store has its first full list.
    pub async fn wait_synced(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.leases.wait_until_ready().await
    }

    /// The Lease `namespace/name`, if it exists.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.leases
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }
}
