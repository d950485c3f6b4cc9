//! The lab daemon, `kvip-lab labd`: started by `up`, it
//! - forwards the host's `127.0.0.1:16443` to a healthy API server, so the
//!   admin kubeconfig works from the host without any lab address there;
//! - probes the API servers and routes the `kubernetes` ClusterIP in every
//!   namespace to the healthy ones;
//! - plays kube-proxy for LoadBalancer Services in every node namespace
//!   (see [`crate::proxy`]), following Services and EndpointSlices.

use crate::layout::{self, INFRA_NETNS};
use crate::netns::connect_in;
use crate::proxy::{self, ProxyInput};
use crate::state::{LabState, Paths};
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

type Healthy = Arc<RwLock<Vec<Ipv4Addr>>>;

/// Runs the lab daemon until killed.
pub fn run() -> anyhow::Result<()> {
    let paths = Paths::new();
    let state = LabState::load(&paths)?.context("no lab is up")?;
    let apiservers: Vec<Ipv4Addr> = state
        .nodes
        .iter()
        .filter(|n| n.role == layout::Role::ControlPlane)
        .map(|n| n.ipv4)
        .collect();
    let healthy: Healthy = Arc::new(RwLock::new(Vec::new()));
    let changed = Arc::new(Notify::new());
    {
        let healthy = healthy.clone();
        let changed = changed.clone();
        std::thread::spawn(move || probe_apiservers(&apiservers, &healthy, &changed));
    }
    let listener = TcpListener::bind(("127.0.0.1", layout::HOST_API_PORT))
        .with_context(|| format!("binding 127.0.0.1:{}", layout::HOST_API_PORT))?;
    {
        let healthy = healthy.clone();
        std::thread::spawn(move || forward(listener, &healthy));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(proxy_loop(paths, healthy, changed))
}

/// Every 300 ms: which API servers accept connections.
fn probe_apiservers(all: &[Ipv4Addr], healthy: &Healthy, changed: &Notify) {
    loop {
        let now: Vec<Ipv4Addr> = all
            .iter()
            .copied()
            .filter(|ip| {
                connect_in(
                    INFRA_NETNS,
                    SocketAddr::from((*ip, layout::APISERVER_PORT)),
                    Duration::from_millis(250),
                )
                .is_ok()
            })
            .collect();
        let differs = healthy.read().map(|h| *h != now).unwrap_or(true);
        if differs {
            if let Ok(mut h) = healthy.write() {
                *h = now;
            }
            changed.notify_one();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Accepts host connections and relays each to a healthy API server.
fn forward(listener: TcpListener, healthy: &Healthy) {
    let mut next = 0usize;
    for client in listener.incoming().flatten() {
        let backends = healthy.read().map(|h| h.clone()).unwrap_or_default();
        if backends.is_empty() {
            continue;
        }
        next = next.wrapping_add(1);
        let backend = backends[next % backends.len()];
        std::thread::spawn(move || {
            let addr = SocketAddr::from((backend, layout::APISERVER_PORT));
            if let Ok(server) = connect_in(INFRA_NETNS, addr, Duration::from_secs(2)) {
                relay(client, server);
            }
        });
    }
}

fn relay(client: TcpStream, server: TcpStream) {
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let _ = std::io::copy(&mut server_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}

async fn proxy_loop(paths: Paths, healthy: Healthy, changed: Arc<Notify>) -> anyhow::Result<()> {
    // The admin client goes through our own forwarder; until an API server is
    // up that fails, and the ClusterIP rules are still written below.
    let client = loop {
        match admin_client(&paths).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_stream = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .backoff(QuickBackoff::default())
    .touched_objects();
    let slice_stream = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .backoff(QuickBackoff::default())
    .touched_objects();
    {
        let changed = changed.clone();
        tokio::spawn(async move {
            let both = futures::stream::select(svc_stream.map(|_| ()), slice_stream.map(|_| ()));
            let mut both = std::pin::pin!(both);
            while both.next().await.is_some() {
                changed.notify_one();
            }
        });
    }
    let mut applied: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let state = match LabState::load(&paths) {
            Ok(Some(s)) => s,
            _ => return Ok(()),
        };
        let input = ProxyInput {
            services: services.state().iter().map(|s| (**s).clone()).collect(),
            slices: slices.state().iter().map(|s| (**s).clone()).collect(),
            apiservers: healthy.read().map(|h| h.clone()).unwrap_or_default(),
        };
        let changes: Vec<(String, String)> = proxy::namespaces(&state)
            .into_iter()
            .filter_map(|ns| {
                let node = state.nodes.iter().find(|n| n.netns == ns);
                let rules = proxy::render(&input, node, state.shape.ipv6);
                (applied.get(&ns) != Some(&rules)).then_some((ns, rules))
            })
            .collect();
        // Every node's kube-proxy acts on its own: program them in parallel.
        let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = changes
                .iter()
                .map(|(ns, rules)| s.spawn(move || proxy::apply(ns, rules)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the nft thread panicked")))
                })
                .collect()
        });
        for ((ns, rules), result) in changes.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    applied.insert(ns, rules);
                }
                Err(e) => eprintln!("labd: programming {ns}: {e:#}"),
            }
        }
        // Wake on any change; also every second, for the state file.
        let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reconnect watches within 2 s once an API server is back (kube's default
/// backoff grows to 30 s, which would leave kube-proxy's stand-in stale).
#[derive(Debug, Clone)]
struct QuickBackoff(Duration);

impl Default for QuickBackoff {
    fn default() -> Self {
        Self(Duration::from_millis(100))
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A client for the admin kubeconfig the lab wrote.
pub async fn admin_client(paths: &Paths) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}
