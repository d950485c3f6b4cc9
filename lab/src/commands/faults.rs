//! `kvip-lab fault`: killing and reviving nodes, cutting a node from the API
//! servers and healing it, stopping and starting API servers, crashing the
//! DaemonSet containers.

use super::{load, lock, require_root};
use crate::control_plane;
use crate::layout::Role;
use crate::process;
use crate::state::{LabState, NodeFaults, Paths, ProcessKind};
use anyhow::bail;
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
            crate::network::set_node_link(&node, &state.nodes, false)?;
            state.faults.entry(name.clone()).or_default().killed = true;
            println!("node {name} killed");
        }
        Fault::ReviveNode(name) => {
            let node = state.node(&name)?.clone();
            crate::network::set_node_link(&node, &state.nodes, true)?;
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
                    && matches!(p.kind, ProcessKind::DaemonSet { .. })
            }) {
                if let Some(pid) = p.pid.take() {
                    process::kill(pid);
                    p.pid = Some(process::spawn(&p.launch)?);
                    restarted += 1;
                }
            }
            println!("{restarted} DaemonSet container(s) on {name} crashed and restarted");
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
