//! `kvip-lab fault`: killing and reviving nodes, cutting a node from the API
//! servers and healing it, stopping and starting API servers, crashing the
//! DaemonSet containers, and changes to a node's `eth0` that a host sees
//! (a flap of the link, the link made again, a new MAC).

use super::{load, lock, require_root};
use crate::control_plane;
use crate::layout::{NodeLayout, Role};
use crate::network::{self, Mac};
use crate::process;
use crate::state::{LabState, NodeFaults, Paths, ProcessKind};
use anyhow::{Context, bail};
use std::time::Duration;

/// A fault to inject.
pub enum Fault {
    /// Stop every process of the node and take its link down.
    KillNode(String),
    /// Bring the node back: link up, its processes started again.
    ReviveNode(String),
    /// Drop only the node's traffic to and from the API servers.
    IsolateApi(String),
    /// Undo `IsolateApi`.
    Heal(String),
    /// Stop one API server, or all.
    ApiserverStop(Option<String>),
    /// Start one API server again, or all.
    ApiserverStart(Option<String>),
    /// SIGKILL the DaemonSet containers on a node and start them again at
    /// once, as a kubelet restarts a crashed container.
    CrashDaemons(String),
    /// Take the node's `eth0` down on its own side for a while, then up with
    /// the node's addresses and routes restored, as its network manager would.
    LinkFlap {
        /// The node.
        node: String,
        /// How long the link stays down.
        down: Duration,
    },
    /// Delete the node's `eth0` and make it again: a new interface index
    /// and MAC, the same name, addresses and routes.
    RecreateLink(String),
    /// Give the node's `eth0` another MAC address; the link stays up.
    SetMac {
        /// The node.
        node: String,
        /// The new MAC.
        mac: Mac,
    },
}

const FAULT_RULES: &str = "table inet kvlab_fault {\n  chain output { type filter hook output priority 0; tcp dport 6443 drop; }\n  chain input { type filter hook input priority 0; tcp dport 6443 drop; }\n}\n";

/// `kvip-lab fault …`.
pub fn fault(fault: Fault) -> anyhow::Result<()> {
    require_root()?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    match fault {
        Fault::KillNode(name) => {
            let node = state.node(&name)?.clone();
            for p in state
                .processes
                .iter_mut()
                .filter(|p| p.node.as_deref() == Some(&name))
            {
                if let Some(pid) = p.pid.take() {
                    process::kill(pid);
                }
            }
            network::set_node_link(&node, &state.nodes, false)?;
            state.faults.entry(name.clone()).or_default().killed = true;
            println!("node {name} killed");
        }
        Fault::ReviveNode(name) => {
            let node = state.node(&name)?.clone();
            network::set_node_link(&node, &state.nodes, true)?;
            let faults = state.faults(&name);
            for p in state
                .processes
                .iter_mut()
                .filter(|p| p.node.as_deref() == Some(&name))
            {
                if p.pid.is_none()
                    && !(p.kind == ProcessKind::Apiserver && faults.apiserver_stopped)
                {
                    p.pid = Some(process::spawn(&p.launch)?);
                }
            }
            state.faults.entry(name.clone()).or_default().killed = false;
            println!("node {name} revived");
        }
        Fault::IsolateApi(name) => {
            api_rules(&mut state, &name, true)?;
            println!("node {name} cut from the API servers");
        }
        Fault::Heal(name) => {
            api_rules(&mut state, &name, false)?;
            println!("node {name} healed");
        }
        Fault::CrashDaemons(name) => {
            state.node(&name)?;
            let mut restarted = 0;
            for p in state.processes.iter_mut().filter(|p| {
                p.node.as_deref() == Some(name.as_str())
                    && matches!(
                        p.kind,
                        ProcessKind::DaemonSet { .. } | ProcessKind::StaticPod { .. }
                    )
            }) {
                if let Some(pid) = p.pid.take() {
                    process::kill(pid);
                    p.pid = Some(process::spawn(&p.launch)?);
                    restarted += 1;
                }
            }
            println!("{restarted} DaemonSet container(s) on {name} crashed and restarted");
        }
        Fault::LinkFlap { node: name, down } => {
            let node = live_node(&state, &name)?;
            network::flap_node_link(&node, &state.nodes, down)
                .with_context(|| format!("flapping the link of {name}"))?;
            println!(
                "node {name}: eth0 down for {} ms, up again",
                down.as_millis()
            );
        }
        Fault::RecreateLink(name) => {
            let node = live_node(&state, &name)?;
            let (old_index, old_mac) = network::eth0_link(&node.netns)?;
            network::recreate_node_link(&node, &state.nodes)
                .with_context(|| format!("making the link of {name} again"))?;
            let (index, mac) = network::eth0_link(&node.netns)?;
            println!(
                "node {name}: eth0 made again (ifindex {old_index} -> {index}, MAC {old_mac} -> {mac})"
            );
        }
        Fault::SetMac { node: name, mac } => {
            let node = state.node(&name)?.clone();
            let (_, old_mac) = network::eth0_link(&node.netns)?;
            network::set_node_mac(&node, mac)?;
            println!("node {name}: eth0 MAC {old_mac} -> {mac}");
        }
        Fault::ApiserverStop(which) => {
            let names = apiserver_nodes(&state, which.as_deref())?;
            for p in state
                .processes
                .iter_mut()
                .filter(|p| p.kind == ProcessKind::Apiserver)
            {
                if p.node.as_ref().is_some_and(|n| names.contains(n))
                    && let Some(pid) = p.pid.take()
                {
                    process::stop(pid, Duration::from_secs(5));
                }
            }
            for n in &names {
                state.faults.entry(n.clone()).or_default().apiserver_stopped = true;
            }
            println!("API server stopped on {}", names.join(" "));
        }
        Fault::ApiserverStart(which) => {
            let names = apiserver_nodes(&state, which.as_deref())?;
            for p in state
                .processes
                .iter_mut()
                .filter(|p| p.kind == ProcessKind::Apiserver)
            {
                let Some(node) = p.node.clone() else { continue };
                let killed = state.faults.get(&node).is_some_and(|f| f.killed);
                if names.contains(&node) && p.pid.is_none() && !killed {
                    p.pid = Some(process::spawn(&p.launch)?);
                }
            }
            for n in &names {
                state.faults.entry(n.clone()).or_default().apiserver_stopped = false;
            }
            state.save(&paths)?;
            for n in &names {
                if !state.faults(n).killed {
                    let node = state.node(n)?.clone();
                    control_plane::wait_apiserver(
                        &state.k8s_bin,
                        &paths,
                        &node,
                        Duration::from_secs(120),
                    )?;
                }
            }
            println!("API server started on {}", names.join(" "));
        }
    }
    state.faults.retain(|_, f| *f != NodeFaults::default());
    state.save(&paths)
}

/// The node called `name`, refused while it is killed: its link is down on
/// both ends until `revive-node`.
fn live_node(state: &LabState, name: &str) -> anyhow::Result<NodeLayout> {
    let node = state.node(name)?.clone();
    if state.faults(name).killed {
        bail!("node {name} is killed; revive it first (`kvip-lab fault revive-node {name}`)");
    }
    Ok(node)
}

fn apiserver_nodes(state: &LabState, which: Option<&str>) -> anyhow::Result<Vec<String>> {
    match which {
        Some(name) => {
            let node = state.node(name)?;
            if node.role != Role::ControlPlane {
                bail!("{name} is a worker: it runs no API server");
            }
            Ok(vec![name.to_string()])
        }
        None => Ok(state
            .nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| n.name.clone())
            .collect()),
    }
}

/// Drops (`isolated`) or lets through again the node's traffic to and from
/// the API servers: its fault table is replaced either way.
fn api_rules(state: &mut LabState, name: &str, isolated: bool) -> anyhow::Result<()> {
    let node = state.node(name)?.clone();
    let rules = if isolated { FAULT_RULES } else { "" };
    process::run_with_input(
        "ip",
        &["netns", "exec", &node.netns, "nft", "-f", "-"],
        &format!("table inet kvlab_fault {{}}\ndelete table inet kvlab_fault\n{rules}"),
    )?;
    state
        .faults
        .entry(name.to_string())
        .or_default()
        .api_isolated = isolated;
    Ok(())
}
