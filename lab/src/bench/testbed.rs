//! The lab as the scenarios drive it: an admin API client for Services and
//! node labels (in-process, so a timestamp taken before a request is not
//! blurred by starting kubectl), the nodes' interfaces as seen from inside
//! their namespaces, and the client namespace's neighbour table and routes.

use crate::bench::apiserver::{self, RequestCounts};
use crate::bench::results::NodeUsage;
use crate::bench::usage::{self, ProcSample};
use crate::layout::{CLIENT_NETNS, NodeLayout};
use crate::process;
use crate::state::{LabState, Paths};
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Kubernetes namespace every benchmark object lives in.
pub const NAMESPACE: &str = "bench";
/// Port every benchmark Service exposes (to the responders' 8080).
pub const SERVICE_PORT: u16 = 80;
/// Port the lab's pod responders listen on.
pub const POD_PORT: u16 = 8080;

/// How long one Service create may take, retries included, before the
/// scale scenario counts it as refused.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// `externalTrafficPolicy` of a benchmark Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only nodes with a ready local endpoint may announce.
    Local,
    /// Any node may announce.
    Cluster,
}

/// A LoadBalancer Service with its VIP in kube-vip's annotation.
#[derive(Debug, Clone)]
pub struct BenchService {
    /// Service name.
    pub name: String,
    /// Traffic policy.
    pub policy: Policy,
    /// The VIP (`kube-vip.io/loadbalancerIPs`).
    pub vip: Ipv4Addr,
    /// Pods with `app=<this>` back it.
    pub app: String,
    /// `bench=<this>` label, to list and delete a group at once.
    pub group: String,
}

impl BenchService {
    fn object(&self) -> anyhow::Result<Service> {
        let policy = match self.policy {
            Policy::Local => "Local",
            Policy::Cluster => "Cluster",
        };
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": self.name, "namespace": NAMESPACE,
                "labels": { "bench": self.group },
                "annotations": { "kube-vip.io/loadbalancerIPs": self.vip.to_string() },
            },
            "spec": {
                "type": "LoadBalancer",
                // The client reaches the VIPs directly, so no NodePorts, and
                // 30000-32767 holds only 2768 of them: 3000 Services need none.
                "allocateLoadBalancerNodePorts": false,
                "externalTrafficPolicy": policy,
                "selector": { "app": self.app },
                "ports": [{ "port": SERVICE_PORT, "targetPort": POD_PORT, "protocol": "TCP" }],
            },
        }))?)
    }
}

/// The running lab, ready for scenarios.
pub struct Testbed {
    rt: tokio::runtime::Runtime,
    client: Client,
    paths: Paths,
    kubectl: PathBuf,
    /// The lab's nodes.
    pub nodes: Vec<NodeLayout>,
    /// Kubernetes version of the control plane.
    pub kubernetes_version: String,
}

impl Testbed {
    /// Connects to the lab that is up.
    pub fn connect() -> anyhow::Result<Self> {
        let paths = Paths::new();
        let state = LabState::load(&paths)?.context("no lab is up")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(crate::labd::admin_client(&paths))?;
        Ok(Testbed {
            rt,
            client,
            kubectl: state.k8s_bin.join("kubectl"),
            nodes: state.nodes,
            kubernetes_version: state.kubernetes_version,
            paths,
        })
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates the benchmark namespace (idempotent).
    pub fn ensure_namespace(&self) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE },
        }))?;
        self.rt.block_on(async {
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e).context("creating the bench namespace"),
            }
        })
    }

    /// Creates one Service.
    pub fn create_service(&self, svc: &BenchService) -> anyhow::Result<()> {
        let object = svc.object()?;
        self.rt
            .block_on(self.services().create(&PostParams::default(), &object))
            .with_context(|| format!("creating Service {}", svc.name))?;
        Ok(())
    }

    /// Creates many Services, `parallel` requests at a time, stopping at the
    /// first refusal (an overloaded API server answers 429 or 504, and more
    /// requests would only add to its load). Returns how many were created,
    /// and the refusal if there was one.
    pub fn create_services(
        &self,
        list: &[BenchService],
        parallel: usize,
    ) -> (usize, Option<anyhow::Error>) {
        let api = self.services();
        let objects: Vec<(String, Service)> = match list
            .iter()
            .map(|s| Ok((s.name.clone(), s.object()?)))
            .collect::<anyhow::Result<_>>()
        {
            Ok(objects) => objects,
            Err(e) => return (0, Some(e)),
        };
        self.rt.block_on(async {
            let mut results = futures::stream::iter(objects)
                .map(|(name, object)| {
                    let api = api.clone();
                    async move {
                        // The client retries 429 and 504 answers by itself; an
                        // overloaded API server can keep it retrying forever.
                        let params = PostParams::default();
                        let create = api.create(&params, &object);
                        match tokio::time::timeout(CREATE_TIMEOUT, create).await {
                            Ok(done) => done
                                .map(|_| ())
                                .with_context(|| format!("creating Service {name}")),
                            Err(_) => Err(anyhow::anyhow!(
                                "creating Service {name}: no answer within {CREATE_TIMEOUT:?} (the API server kept answering 429 or 504)"
                            )),
                        }
                    }
                })
                .buffer_unordered(parallel.max(1));
            let mut created = 0;
            while let Some(result) = results.next().await {
                match result {
                    Ok(()) => created += 1,
                    Err(e) => return (created, Some(e)),
                }
            }
            (created, None)
        })
    }

    /// Deletes one Service (gone already is fine).
    pub fn delete_service(&self, name: &str) -> anyhow::Result<()> {
        self.rt.block_on(async {
            match self.services().delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting Service {name}")),
            }
        })
    }

    /// Deletes every Service labelled `bench=<group>`, `parallel` at a time.
    pub fn delete_group(&self, group: &str, parallel: usize) -> anyhow::Result<usize> {
        let api = self.services();
        self.rt.block_on(async {
            let list = api
                .list(&ListParams::default().labels(&format!("bench={group}")))
                .await?;
            let names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            let count = names.len();
            let results: Vec<anyhow::Result<()>> = futures::stream::iter(names)
                .map(|name| {
                    let api = api.clone();
                    async move {
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                            Err(e) => Err(e).with_context(|| format!("deleting Service {name}")),
                        }
                    }
                })
                .buffer_unordered(parallel.max(1))
                .collect()
                .await;
            results.into_iter().collect::<anyhow::Result<()>>()?;
            Ok(count)
        })
    }

    /// Services of `bench=<group>` with an ingress address in their status.
    pub fn with_ingress(&self, group: &str) -> anyhow::Result<usize> {
        let list = self.rt.block_on(
            self.services()
                .list(&ListParams::default().labels(&format!("bench={group}"))),
        )?;
        Ok(list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_some_and(|i| i.iter().any(|x| x.ip.is_some()))
            })
            .count())
    }

    /// Sets (`Some`) or removes (`None`) a label on a Node.
    pub fn label_node(&self, node: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "metadata": { "labels": { key: value } } });
        self.rt
            .block_on(api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)))
            .with_context(|| format!("labelling Node {node}"))?;
        Ok(())
    }

    /// IPv4 addresses on each node's VIP interface.
    pub fn addresses(&self) -> BTreeMap<String, Vec<Ipv4Addr>> {
        self.nodes
            .iter()
            .map(|n| {
                let out = process::run(
                    "ip",
                    &["-n", &n.netns, "-o", "-4", "addr", "show", "dev", "eth0"],
                )
                .unwrap_or_default();
                let ips = out
                    .split_whitespace()
                    .filter_map(|w| w.split('/').next()?.parse().ok())
                    .collect();
                (n.name.clone(), ips)
            })
            .collect()
    }

    /// Nodes that have `vip` on their interface.
    pub fn nodes_with(&self, vip: Ipv4Addr) -> Vec<String> {
        self.addresses()
            .into_iter()
            .filter(|(_, ips)| ips.contains(&vip))
            .map(|(n, _)| n)
            .collect()
    }

    /// Waits until exactly one node has `vip`; returns it.
    pub fn wait_single_holder(&self, vip: Ipv4Addr, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let holders = self.nodes_with(vip);
            if let [one] = holders.as_slice() {
                return Ok(one.clone());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{vip} is on {holders:?} after {timeout:?}, not on exactly one node");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no node has `vip`.
    pub fn wait_withdrawn(&self, vip: Ipv4Addr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let holders = self.nodes_with(vip);
            if holders.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{vip} is still on {holders:?} {timeout:?} after its Service went");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Forgets the client's neighbour entry for `vip`, as a client that
    /// never talked to that address would be.
    pub fn forget_neighbour(&self, vip: Ipv4Addr) {
        let _ = process::run(
            "ip",
            &["-n", CLIENT_NETNS, "neigh", "flush", "to", &vip.to_string()],
        );
    }

    /// Makes `cidr` on-link on the client's bridge interface (so it ARPs for it).
    pub fn client_route(&self, cidr: &str) -> anyhow::Result<()> {
        process::run(
            "ip",
            &["-n", CLIENT_NETNS, "route", "replace", cidr, "dev", "eth0"],
        )
        .map(|_| ())
    }

    /// One reading of the API server's request counter.
    pub fn request_counts(&self) -> anyhow::Result<RequestCounts> {
        apiserver::scrape(&self.kubectl, &self.paths.kubeconfig())
    }

    /// RSS and CPU ticks of every `binary manager` process, per node.
    pub fn daemon_samples(&self, binary: &Path) -> Vec<(usage::DaemonProcess, ProcSample)> {
        usage::find_daemons(binary, &self.nodes)
            .into_iter()
            .filter_map(|d| usage::sample(d.pid).map(|s| (d, s)))
            .collect()
    }

    /// Starts the peak RSS of every `binary manager` process again from now;
    /// the processes whose peak could not be reset, with why.
    pub fn reset_peaks(&self, binary: &Path) -> Vec<(usage::DaemonProcess, String)> {
        usage::find_daemons(binary, &self.nodes)
            .into_iter()
            .filter_map(|d| usage::reset_peak(d.pid).err().map(|e| (d, e.to_string())))
            .collect()
    }

    /// Usage over a window from two rounds of samples.
    pub fn usage_between(
        before: &[(usage::DaemonProcess, ProcSample)],
        after: &[(usage::DaemonProcess, ProcSample)],
        window: Duration,
    ) -> Vec<NodeUsage> {
        after
            .iter()
            .map(|(d, end)| {
                let cpu_percent = before
                    .iter()
                    .find(|(b, _)| b.pid == d.pid)
                    .map(|(_, start)| {
                        let ticks = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64;
                        100.0 * ticks / usage::TICKS_PER_SECOND / window.as_secs_f64()
                    });
                NodeUsage {
                    node: d.node.clone(),
                    pid: d.pid,
                    rss_kib: end.rss_kib,
                    peak_rss_kib: end.peak_rss_kib,
                    cpu_percent,
                }
            })
            .collect()
    }

    /// The lab's log folder (daemon logs are copied from it before `down`).
    pub fn log_dir(&self) -> PathBuf {
        self.paths.root.join("logs")
    }
}
