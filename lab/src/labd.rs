//! The lab daemon, `kvip-lab labd`: started by `up`, it
//! - forwards the host's `127.0.0.1:16443` to a healthy API server, so the
//!   admin kubeconfig works from the host without any lab address there;
//! - probes the API servers and keeps the lab's API endpoint (see
//!   [`crate::endpoint`]) leading to the healthy ones;
//! - with `--ipvs-dummy`, binds every LoadBalancer address to every node's
//!   `kube-ipvs0`, as kube-proxy's IPVS mode does (see [`crate::ipvs`]).

use crate::endpoint;
use crate::ipvs;
use crate::layout::{self, INFRA_NETNS};
use crate::netns::connect_in;
use crate::state::{LabState, Paths};
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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
    runtime.block_on(endpoint_loop(paths, healthy, changed))
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

async fn endpoint_loop(paths: Paths, healthy: Healthy, changed: Arc<Notify>) -> anyhow::Result<()> {
    let ipvs_dummy = LabState::load(&paths)?.is_some_and(|s| s.shape.ipvs_dummy);
    // With `--ipvs-dummy`, follow the Services for their addresses. The admin
    // client goes through our own forwarder, which fails until an API server
    // is up; the endpoint's rules are written meanwhile.
    let services = if ipvs_dummy {
        let (reader, writer) = reflector::store::<Service>();
        let changed = changed.clone();
        let paths = paths.clone();
        tokio::spawn(async move {
            let client = loop {
                match admin_client(&paths).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            let stream = reflector(
                writer,
                watcher(Api::<Service>::all(client), watcher::Config::default()),
            )
            .backoff(QuickBackoff::default())
            .touched_objects();
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                changed.notify_one();
            }
        });
        Some(reader)
    } else {
        None
    };
    let mut applied: Option<String> = None;
    let mut bound: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    loop {
        let state = match LabState::load(&paths) {
            Ok(Some(s)) => s,
            _ => return Ok(()),
        };
        let apiservers = healthy.read().map(|h| h.clone()).unwrap_or_default();
        let rules = endpoint::render(&apiservers);
        if applied.as_ref() != Some(&rules) {
            match endpoint::apply(INFRA_NETNS, &rules) {
                Ok(()) => applied = Some(rules),
                Err(e) => eprintln!("labd: programming the API endpoint: {e:#}"),
            }
        }
        if let Some(services) = &services {
            let wanted = ipvs::addresses(services.state().iter().map(|s| s.as_ref()));
            for node in &state.nodes {
                let have = bound.entry(node.netns.clone()).or_default();
                if let Err(e) = ipvs::sync(&node.netns, have, &wanted) {
                    eprintln!("labd: {} on {}: {e:#}", layout::IPVS_DUMMY, node.name);
                }
            }
        }
        // Wake on any change; also every second, for the state file.
        let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reconnect watches within 2 s once an API server is back (kube's default
/// backoff grows to 30 s, which would leave `kube-ipvs0` stale).
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
