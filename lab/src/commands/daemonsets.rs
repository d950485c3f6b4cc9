//! `kvip-lab deploy` and `undeploy`: a manifest's objects go to the API
//! server, and each DaemonSet's containers run as processes on the nodes
//! that admit them, with their ServiceAccount's token.

use super::binaries::{kube_vip_binary, kvip_binary};
use super::{load, lock, require_root, runtime};
use crate::deploy::{self, NodeView};
use crate::pki::Pki;
use crate::process;
use crate::state::{LabState, Launch, Paths, Process, ProcessKind};
use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// `kvip-lab deploy FILE`.
pub fn deploy(file: &std::path::Path) -> anyhow::Result<()> {
    require_root()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let manifest = deploy::parse(&text).with_context(|| format!("in {}", file.display()))?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
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
            let facts = deploy::PodFacts {
                pod_name: &pod_name,
                namespace: &namespace,
                node: layout,
                service_account: &sa,
            };
            for container in &spec.containers {
                let image = container.image.clone().unwrap_or_default();
                let binary = match deploy::binary_for_image(&image)? {
                    "kube-vip" => kube_vip_binary(&mut |line| eprintln!("{line}"))?,
                    _ => kvip_binary()?,
                };
                let env = deploy::container_env(container, &facts)?;
                let argv = deploy::container_argv(container, &binary.display().to_string(), &env);
                let launch = Launch {
                    netns: Some(layout.netns.clone()),
                    argv,
                    env,
                    service_account_dir: Some(sa_dir.clone()),
                    log: paths.log(&layout.name, &format!("{ds_name}-{}", container.name)),
                };
                let kind = ProcessKind::DaemonSet {
                    daemonset: key.clone(),
                };
                // A redeploy replaces the running container, as a rolling update would.
                stop_matching(&mut state, |p| {
                    p.kind == kind
                        && p.node.as_deref() == Some(&layout.name)
                        && p.launch.log == launch.log
                });
                let pid = if state.faults(&layout.name).killed {
                    None
                } else {
                    Some(process::spawn(&launch)?)
                };
                state.processes.push(Process {
                    kind,
                    node: Some(layout.name.clone()),
                    pid,
                    launch,
                });
            }
            placed.push(layout.name.clone());
        }
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
    state.save(&paths)
}
