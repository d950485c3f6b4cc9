//! `kvip-lab deploy` and `undeploy`: a manifest's objects go to the API
//! server, each DaemonSet's containers run as processes on the nodes that
//! admit them, with their ServiceAccount's token, and each static Pod's on
//! the nodes named, with the node's admin kubeconfig.

use super::binaries::{kube_vip_binary, kvip_binary};
use super::{load, lock, require_root, runtime};
use crate::deploy::{self, NodeView};
use crate::layout::NodeLayout;
use crate::pki::Pki;
use crate::process;
use crate::state::{LabState, Launch, Paths, Process, ProcessKind};
use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, PodSpec, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `kvip-lab deploy FILE [--node N]…`: the Pods in FILE are static Pods,
/// run on each node named (none named: a Pod in FILE is an error). A
/// container whose pod template did not change keeps running, as the
/// DaemonSet controller leaves it, unless `restart`.
pub fn deploy(
    file: &std::path::Path,
    static_nodes: &[String],
    restart: bool,
) -> anyhow::Result<()> {
    require_root()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let manifest = deploy::parse(&text).with_context(|| format!("in {}", file.display()))?;
    if !manifest.pods.is_empty() && static_nodes.is_empty() {
        bail!(
            "{} holds a Pod: the lab runs it as a static Pod, on the nodes given with --node (as each node's kubelet runs the files in its manifests folder)",
            file.display()
        );
    }
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    for name in static_nodes {
        state.node(name)?;
    }
    if !manifest.objects.is_empty() {
        let docs: Vec<String> = manifest
            .objects
            .iter()
            .map(serde_norway::to_string)
            .collect::<Result<_, _>>()?;
        let kubectl = state.k8s_bin.join("kubectl");
        let out = process::run_with_input(
            &kubectl.display().to_string(),
            &[
                "--kubeconfig",
                &paths.kubeconfig().display().to_string(),
                "apply",
                "-f",
                "-",
            ],
            &docs.join("---\n"),
        )?;
        eprint!("{out}");
    }
    let pki = Pki::load(&paths.pki())?;
    let rt = runtime()?;
    let client = rt.block_on(crate::labd::admin_client(&paths))?;
    let nodes = rt.block_on(Api::<Node>::all(client.clone()).list(&ListParams::default()))?;
    for ds in &manifest.daemonsets {
        let key = deploy::daemonset_key(ds);
        let namespace = ds
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let ds_name = ds.metadata.name.clone().unwrap_or_default();
        let spec = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .with_context(|| format!("DaemonSet {key} has no pod template"))?;
        if spec.host_network != Some(true) {
            bail!(
                "DaemonSet {key}: the lab runs hostNetwork pods only (set spec.template.spec.hostNetwork: true)"
            );
        }
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let mut placed = Vec::new();
        for layout in &state.nodes.clone() {
            let Some(node) = nodes
                .items
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(&layout.name))
            else {
                continue;
            };
            let view = NodeView {
                layout,
                labels: node.metadata.labels.clone().unwrap_or_default(),
                taints: node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default(),
            };
            if !deploy::admits(&spec, &view) {
                continue;
            }
            let pod_name = format!("{ds_name}-{}", layout.name);
            let sa_dir = paths.service_account_dir(&pod_name);
            let token = rt.block_on(service_account_token(&client, &namespace, &sa))?;
            std::fs::create_dir_all(&sa_dir)?;
            std::fs::write(sa_dir.join("token"), token)?;
            std::fs::copy(&pki.ca_cert, sa_dir.join("ca.crt"))?;
            std::fs::write(sa_dir.join("namespace"), &namespace)?;
            let pod = PodRun {
                name: &pod_name,
                namespace: &namespace,
                spec: &spec,
                service_account: &sa,
                service_account_dir: Some(sa_dir),
                kubeconfig: None,
                log_prefix: &ds_name,
                kind: ProcessKind::DaemonSet {
                    daemonset: key.clone(),
                },
            };
            run_pod(&mut state, &paths, layout, &pod, restart)?;
            placed.push(layout.name.clone());
        }
        // Nodes that no longer admit the DaemonSet lose its pod, as the
        // DaemonSet controller deletes it (a node relabelled, say).
        stop_matching(&mut state, |p| {
            p.kind
                == ProcessKind::DaemonSet {
                    daemonset: key.clone(),
                }
                && p.node.as_ref().is_some_and(|n| !placed.contains(n))
        });
        state.save(&paths)?;
        println!(
            "daemonset {key}: running on {}",
            if placed.is_empty() {
                "no node".to_string()
            } else {
                placed.join(" ")
            }
        );
    }
    for static_pod in &manifest.pods {
        let key = deploy::pod_key(static_pod);
        let namespace = static_pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = static_pod.metadata.name.clone().unwrap_or_default();
        let spec = static_pod
            .spec
            .clone()
            .with_context(|| format!("Pod {key} has no spec"))?;
        if spec.host_network != Some(true) {
            bail!("Pod {key}: the lab runs hostNetwork pods only (set spec.hostNetwork: true)");
        }
        for node_name in static_nodes {
            let layout = state.node(node_name)?.clone();
            // A kubelet names a static Pod's mirror `<name>-<node>`.
            let pod_name = format!("{name}-{node_name}");
            // The node's admin kubeconfig, as kubeadm writes it: the admin's
            // credentials for this node's own API server where it runs one
            // (what kube-vip's static Pod reaches as `kubernetes`), else the
            // first control-plane node's.
            let server_node = if layout.role == crate::layout::Role::ControlPlane {
                layout.clone()
            } else {
                state
                    .nodes
                    .iter()
                    .find(|n| n.role == crate::layout::Role::ControlPlane)
                    .cloned()
                    .context("the lab has no control-plane node")?
            };
            let dir = paths.static_pod_dir(&pod_name);
            std::fs::create_dir_all(&dir)?;
            let kubeconfig = dir.join("admin.conf");
            std::fs::write(
                &kubeconfig,
                crate::pki::kubeconfig(
                    &format!(
                        "https://{}:{}",
                        server_node.ipv4,
                        crate::layout::APISERVER_PORT
                    ),
                    &pki.ca_cert,
                    &pki.admin_token,
                ),
            )?;
            let pod = PodRun {
                name: &pod_name,
                namespace: &namespace,
                spec: &spec,
                service_account: "",
                service_account_dir: None,
                kubeconfig: Some(kubeconfig),
                log_prefix: &name,
                kind: ProcessKind::StaticPod { pod: key.clone() },
            };
            run_pod(&mut state, &paths, &layout, &pod, restart)?;
        }
        state.save(&paths)?;
        println!("static pod {key}: running on {}", static_nodes.join(" "));
    }
    Ok(())
}

/// One pod's containers to run on a node.
struct PodRun<'a> {
    /// The pod's name (`<daemonset>-<node>`, `<static pod>-<node>`).
    name: &'a str,
    namespace: &'a str,
    spec: &'a PodSpec,
    service_account: &'a str,
    /// Its token and CA, for a DaemonSet pod.
    service_account_dir: Option<PathBuf>,
    /// The node kubeconfig a static Pod's hostPath volume mounts.
    kubeconfig: Option<PathBuf>,
    /// Log files are `<prefix>-<container>.log` in the node's folder.
    log_prefix: &'a str,
    kind: ProcessKind,
}

/// Starts `pod`'s containers on `layout` (replacing what ran for the same
/// pod there, as a rolling update would); a killed node runs nothing until
/// it is revived.
fn run_pod(
    state: &mut LabState,
    paths: &Paths,
    layout: &NodeLayout,
    pod: &PodRun<'_>,
    restart: bool,
) -> anyhow::Result<()> {
    let facts = deploy::PodFacts {
        pod_name: pod.name,
        namespace: pod.namespace,
        node: layout,
        service_account: pod.service_account,
    };
    for container in &pod.spec.containers {
        let image = container.image.clone().unwrap_or_default();
        let binary = match deploy::binary_for_image(&image)? {
            "kube-vip" => kube_vip_binary(&mut |line| eprintln!("{line}"))?,
            _ => kvip_binary()?,
        };
        let env = deploy::container_env(container, &facts)?;
        let argv = deploy::container_argv(container, &binary.display().to_string(), &env);
        let mut files = BTreeMap::new();
        if let Some(kubeconfig) = &pod.kubeconfig {
            for at in deploy::kubeconfig_mounts(pod.spec, container)? {
                files.insert(at, kubeconfig.clone());
            }
        }
        let launch = Launch {
            netns: Some(layout.netns.clone()),
            argv,
            env,
            service_account_dir: pod.service_account_dir.clone(),
            files,
            log: paths.log(
                &layout.name,
                &format!("{}-{}", pod.log_prefix, container.name),
            ),
        };
        let unchanged = state.processes.iter().any(|p| {
            p.kind == pod.kind
                && p.node.as_deref() == Some(&layout.name)
                && p.launch == launch
                && p.pid.is_some_and(process::alive)
        });
        if unchanged && !restart {
            continue;
        }
        // A changed template replaces the running container, as a rolling
        // update would.
        stop_matching(state, |p| {
            p.kind == pod.kind
                && p.node.as_deref() == Some(&layout.name)
                && p.launch.log == launch.log
        });
        let pid = if state.faults(&layout.name).killed {
            None
        } else {
            Some(process::spawn(&launch)?)
        };
        state.processes.push(Process {
            kind: pod.kind.clone(),
            node: Some(layout.name.clone()),
            pid,
            launch,
        });
    }
    Ok(())
}

async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get_opt(name).await?.is_none() {
        if Instant::now() > deadline {
            bail!("ServiceAccount {namespace}/{name} does not exist (add it to the manifest)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(48 * 3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let reply = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
    reply
        .status
        .map(|s| s.token)
        .context("the TokenRequest came back without a token")
}

fn stop_matching(state: &mut LabState, matches: impl Fn(&Process) -> bool) {
    state.processes.retain(|p| {
        if matches(p) {
            if let Some(pid) = p.pid {
                process::stop(pid, Duration::from_secs(5));
            }
            false
        } else {
            true
        }
    });
}

/// `kvip-lab undeploy FILE`.
pub fn undeploy(file: &std::path::Path) -> anyhow::Result<()> {
    require_root()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let manifest = deploy::parse(&text)?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    for ds in &manifest.daemonsets {
        let key = deploy::daemonset_key(ds);
        stop_matching(&mut state, |p| {
            p.kind
                == ProcessKind::DaemonSet {
                    daemonset: key.clone(),
                }
        });
        println!("daemonset {key}: stopped");
    }
    for pod in &manifest.pods {
        let key = deploy::pod_key(pod);
        stop_matching(&mut state, |p| {
            p.kind == ProcessKind::StaticPod { pod: key.clone() }
        });
        println!("static pod {key}: stopped");
    }
    state.save(&paths)
}
