//! `kvip-lab up`, `down` and `env`: building the lab (network, PKI, control
//! plane, labd, Nodes), checking it is healthy, tearing it down, and the
//! environment a shell needs to use it.

use super::binaries::kvip_binary;
use super::{load, lock, require_root, runtime};
use crate::cluster;
use crate::control_plane::{self, PATH};
use crate::layout::{self, CLIENT_NETNS, LabShape, NodeLayout, Role};
use crate::network;
use crate::pki;
use crate::process;
use crate::state::{LabState, Launch, Paths, ProcessKind};
use crate::toolchain;
use anyhow::bail;
use kube::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `kvip-lab up`.
pub fn up(shape: LabShape) -> anyhow::Result<()> {
    require_root()?;
    let nodes = shape.layout().map_err(anyhow::Error::msg)?;
    let paths = Paths::new();
    let _lock = lock(&paths, false)?;
    if let Some(state) = LabState::load(&paths)? {
        if state.ready && state.shape == shape && healthy(&state) {
            print!("{}", env_text(&state, &paths));
            eprintln!("the lab is already up");
            return Ok(());
        }
        if state.ready && state.shape != shape {
            bail!(
                "a lab of {} nodes ({} control-plane{}) is already up; run `kvip-lab down` first",
                state.shape.nodes,
                state.shape.control_plane,
                if state.shape.ipv6 { ", IPv6" } else { "" }
            );
        }
        eprintln!("a previous lab is broken or half built; tearing it down first");
        teardown(&paths, false);
    } else if !network::lab_namespaces().is_empty() {
        eprintln!("removing leftovers of an earlier lab");
        teardown(&paths, false);
    }
    let (bin, version) = toolchain::ensure_control_plane(&mut |line| eprintln!("{line}"))?;
    let etcd = toolchain::etcd_binary()?;
    kvip_binary_hint();
    let started = Instant::now();
    match build(shape, &nodes, &paths, &bin, &version, &etcd) {
        Ok(state) => {
            print!("{}", env_text(&state, &paths));
            eprintln!(
                "lab up in {:.1} s: {} nodes ({} control-plane), Kubernetes {version}",
                started.elapsed().as_secs_f64(),
                shape.nodes,
                shape.control_plane
            );
            Ok(())
        }
        Err(e) => {
            teardown(&paths, true);
            Err(e.context(format!(
                "the lab did not come up; what was started has been removed (logs kept in {})",
                paths.root.join("logs").display()
            )))
        }
    }
}

fn kvip_binary_hint() {
    if kvip_binary().is_err() {
        eprintln!("note: the kvip binary is not built yet; `deploy` needs it (cargo build --bins)");
    }
}

fn healthy(state: &LabState) -> bool {
    state
        .processes
        .iter()
        .all(|p| p.pid.is_none_or(process::alive))
        && network::lab_namespaces().len() >= state.nodes.len() + crate::layout::SHARED_NAMESPACES
}

fn build(
    shape: LabShape,
    nodes: &[NodeLayout],
    paths: &Paths,
    bin: &std::path::Path,
    version: &str,
    etcd: &std::path::Path,
) -> anyhow::Result<LabState> {
    std::fs::create_dir_all(&paths.root)?;
    let mut state = LabState {
        shape,
        kubernetes_version: version.to_string(),
        nodes: nodes.to_vec(),
        processes: Vec::new(),
        pods: Vec::new(),
        faults: BTreeMap::new(),
        k8s_bin: bin.to_path_buf(),
        ready: false,
    };
    state.save(paths)?;
    network::create(nodes, shape.ipv6, shape.ipvs_dummy)?;
    let pki = pki::create(&paths.pki(), nodes)?;
    std::fs::write(
        paths.kubeconfig(),
        pki::kubeconfig(
            &format!("https://127.0.0.1:{}", layout::HOST_API_PORT),
            &pki.ca_cert,
            &pki.admin_token,
        ),
    )?;
    control_plane::write_incluster_kubeconfig(paths, &pki)?;
    control_plane::write_endpoint_kubeconfig(paths, &pki)?;
    std::fs::create_dir_all(paths.bin())?;
    let link = paths.bin().join("kubectl");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin.join("kubectl"), &link)?;

    let start = |state: &mut LabState, kind, node: Option<&str>, launch| -> anyhow::Result<()> {
        let p = control_plane::start(kind, node, launch)?;
        state.processes.push(p);
        state.save(paths)
    };
    start(
        &mut state,
        ProcessKind::Etcd,
        None,
        control_plane::etcd_launch(paths, etcd),
    )?;
    control_plane::wait_etcd(Duration::from_secs(30))?;
    for node in nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        let launch = control_plane::apiserver_launch(paths, bin, &pki, node, shape.ipv6);
        start(&mut state, ProcessKind::Apiserver, Some(&node.name), launch)?;
    }
    start(&mut state, ProcessKind::Labd, None, labd_launch(paths)?)?;
    for node in nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        control_plane::wait_apiserver(bin, paths, node, Duration::from_secs(120))?;
    }
    start(
        &mut state,
        ProcessKind::ControllerManager,
        None,
        control_plane::controller_manager_launch(paths, bin, &pki),
    )?;
    runtime()?.block_on(async {
        let client = admin_client_ready(paths, Duration::from_secs(30)).await?;
        for node in nodes {
            cluster::register_node(&client, node).await?;
        }
        cluster::wait_default_service_account(&client, Duration::from_secs(60)).await
    })?;
    for node in nodes {
        let launch = control_plane::kube_proxy_launch(paths, bin, node, shape.ipv6);
        start(&mut state, ProcessKind::KubeProxy, Some(&node.name), launch)?;
    }
    for node in nodes {
        control_plane::wait_kube_proxy(paths, node, Duration::from_secs(60))?;
    }
    state.ready = true;
    state.save(paths)?;
    Ok(state)
}

async fn admin_client_ready(paths: &Paths, timeout: Duration) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let client = crate::labd::admin_client(paths).await?;
            client.apiserver_version().await?;
            anyhow::Ok(client)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(
                    e.context("the API server is not reachable through the lab's forwarder")
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn labd_launch(paths: &Paths) -> anyhow::Result<Launch> {
    let exe = std::env::current_exe()?;
    let mut env = BTreeMap::from([("PATH".to_string(), PATH.to_string())]);
    if let Some(state) = std::env::var_os("KVIP_LAB_STATE") {
        env.insert(
            "KVIP_LAB_STATE".into(),
            state.to_string_lossy().into_owned(),
        );
    }
    Ok(Launch {
        netns: None,
        argv: vec![exe.display().to_string(), "labd".into()],
        env,
        service_account_dir: None,
        files: Default::default(),
        log: paths.log("lab", "labd"),
    })
}

/// Stops everything and removes every namespace and link; returns problems.
/// `keep_logs` leaves the log folder for a post-mortem.
fn teardown(paths: &Paths, keep_logs: bool) -> Vec<String> {
    if let Ok(Some(state)) = LabState::load(paths) {
        for p in &state.processes {
            if let Some(pid) = p.pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for p in &state.processes {
            if let Some(pid) = p.pid {
                process::stop(pid, Duration::from_secs(3));
            }
        }
    }
    for ns in network::lab_namespaces() {
        for pid in process::pids_in_netns(&crate::netns::netns_path(&ns)) {
            process::kill(pid);
        }
    }
    let problems = network::destroy();
    if let Ok(entries) = std::fs::read_dir(&paths.root) {
        for entry in entries.flatten() {
            if entry.file_name() != "lock" && !(keep_logs && entry.file_name() == "logs") {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
    let _ = std::fs::remove_dir(process::SERVICE_ACCOUNT_PATH);
    problems
}

/// `kvip-lab down`.
pub fn down() -> anyhow::Result<()> {
    require_root()?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let problems = teardown(&paths, false);
    let left = network::lab_namespaces();
    if !problems.is_empty() || !left.is_empty() {
        bail!(
            "the lab is not fully removed: {} {}",
            problems.join("; "),
            left.join(" ")
        );
    }
    eprintln!("the lab is down");
    Ok(())
}

/// `kvip-lab env`.
pub fn env() -> anyhow::Result<()> {
    let paths = Paths::new();
    let state = load(&paths)?;
    print!("{}", env_text(&state, &paths));
    Ok(())
}

fn env_text(state: &LabState, paths: &Paths) -> String {
    let names: Vec<_> = state.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut out = format!(
        "export KUBECONFIG={}\nexport KVIP_LAB_NODES=\"{}\"\nexport KVIP_LAB_CLIENT={CLIENT_NETNS}\nexport KVIP_LAB_SUBNET={}\nexport KVIP_LAB_VIP_RANGE={}-{}\n",
        paths.kubeconfig().display(),
        names.join(" "),
        layout::SUBNET4,
        layout::VIP_RANGE4.0,
        layout::VIP_RANGE4.1,
    );
    if state.shape.ipv6 {
        out.push_str(&format!(
            "export KVIP_LAB_SUBNET6={}\nexport KVIP_LAB_VIP_RANGE6={}-{}\n",
            layout::SUBNET6,
            layout::VIP_RANGE6.0,
            layout::VIP_RANGE6.1
        ));
    }
    for n in &state.nodes {
        out.push_str(&format!("export KVIP_LAB_NETNS_{}={}\n", n.name, n.netns));
    }
    out.push_str(&format!("export PATH={}:$PATH\n", paths.bin().display()));
    out
}
