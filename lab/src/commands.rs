//! What each `kvip-lab` command does. Commands that change the lab hold the
//! lab's lock; `up` either finishes or tears everything down again, so a
//! failed `up` leaves nothing half-built.

use crate::cluster::{self, PodSpec};
use crate::control_plane::{self, PATH};
use crate::deploy::{self, NodeView};
use crate::layout::{self, CLIENT_NETNS, LabShape, NodeLayout, Role};
use crate::network;
use crate::pki::{self, Pki};
use crate::process;
use crate::state::{LabState, Launch, NodeFaults, Paths, PodRecord, Process, ProcessKind};
use crate::toolchain;
use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Refuses to run without root, in one sentence.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "kvip-lab must run as root: it creates network namespaces, links and addresses (try sudo)"
        );
    }
    Ok(())
}

/// Takes the lab's lock; `wait` false fails at once when another command holds it.
pub fn lock(paths: &Paths, wait: bool) -> anyhow::Result<Flock<File>> {
    std::fs::create_dir_all(&paths.root)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock_file())?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(file, arg).map_err(|_| {
        anyhow::anyhow!("another kvip-lab command is changing the lab right now (an `up` still running?); wait for it to finish")
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn load(paths: &Paths) -> anyhow::Result<LabState> {
    match LabState::load(paths)? {
        Some(s) if s.ready => Ok(s),
        Some(_) => bail!("the lab is half built; run `kvip-lab down`, then `kvip-lab up`"),
        None => bail!("no lab is up; run `kvip-lab up` first"),
    }
}

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
        && network::lab_namespaces().len() >= state.nodes.len() + 3
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
    network::create(nodes, shape.ipv6)?;
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

/// The kvip binary `deploy` runs for kvip images.
pub fn kvip_binary() -> anyhow::Result<PathBuf> {
    local_binary("KVIP_LAB_KVIP", "kvip")
}

/// The kube-vip binary `deploy` runs for kube-vip images: `KVIP_LAB_KUBE_VIP`,
/// a `kube-vip` beside kvip-lab, or the released module built from
/// `lab/kube-vip` (once; cached).
pub fn kube_vip_binary(log: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    match local_binary("KVIP_LAB_KUBE_VIP", "kube-vip") {
        Ok(path) if path.is_file() => Ok(path),
        Ok(path) => bail!("KVIP_LAB_KUBE_VIP={} is not a file", path.display()),
        Err(_) => crate::toolchain::ensure_kube_vip(log),
    }
}

fn local_binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name(name);
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!(
        "the {name} binary is not built: run `cargo build --bins` (looked for {}; or set {var})",
        sibling.display()
    )
}

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
            .map(serde_yaml::to_string)
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

/// Arguments of `kvip-lab pod`.
pub struct PodArgs {
    /// Pod name.
    pub name: String,
    /// Node to run on.
    pub node: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Container port.
    pub port: u16,
    /// Kubernetes namespace.
    pub namespace: String,
}

/// Parses `k=v[,k=v]`.
pub fn parse_labels(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--labels: {pair:?} is not key=value"))?;
            if k.trim().is_empty() {
                bail!("--labels: {pair:?} has an empty key");
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn responder_launch(
    paths: &Paths,
    node: &NodeLayout,
    record: &PodRecord,
) -> anyhow::Result<Launch> {
    let exe = std::env::current_exe()?;
    let mut argv = vec![
        exe.display().to_string(),
        "responder".into(),
        "--text".into(),
        format!("{}/{}", node.name, record.name),
        "--listen".into(),
        SocketAddr::from((record.ipv4, record.port)).to_string(),
    ];
    if let Some(v6) = record.ipv6 {
        argv.extend([
            "--listen".into(),
            SocketAddr::from((v6, record.port)).to_string(),
        ]);
    }
    argv.extend([
        "--also".into(),
        SocketAddr::from((node.ipv4, record.port)).to_string(),
    ]);
    Ok(Launch {
        netns: Some(node.netns.clone()),
        argv,
        env: BTreeMap::from([("PATH".to_string(), PATH.to_string())]),
        service_account_dir: None,
        log: paths.log(
            &node.name,
            &format!("pod-{}-{}", record.namespace, record.name),
        ),
    })
}

fn pod_addresses(node: &NodeLayout, record: &PodRecord, add: bool) -> anyhow::Result<()> {
    let verb = if add { "add" } else { "del" };
    let mut addrs = vec![format!("{}/32", record.ipv4)];
    if let Some(v6) = record.ipv6 {
        addrs.push(format!("{v6}/128"));
    }
    for a in addrs {
        let result = process::run_in(&node.netns, "ip", &["addr", verb, &a, "dev", "lo"]);
        if add {
            result?;
        }
    }
    Ok(())
}

/// `kvip-lab pod NAME --node NODE --labels … --port P`.
pub fn pod_create(args: PodArgs) -> anyhow::Result<()> {
    require_root()?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    let node = state.node(&args.node)?.clone();
    if state
        .pods
        .iter()
        .any(|p| p.name == args.name && p.namespace == args.namespace)
    {
        bail!("pod {}/{} exists already", args.namespace, args.name);
    }
    let used: Vec<_> = state
        .pods
        .iter()
        .filter(|p| p.node == node.name)
        .map(|p| p.ipv4)
        .collect();
    let n = (1..=250u8)
        .find(|n| !used.contains(&node.pod_ipv4(*n)))
        .context("no pod address left on that node")?;
    let record = PodRecord {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        node: node.name.clone(),
        ipv4: node.pod_ipv4(n),
        ipv6: node.ipv6.map(|_| node.pod_ipv6(n)),
        port: args.port,
    };
    pod_addresses(&node, &record, true)?;
    let launch = responder_launch(&paths, &node, &record)?;
    let pid = process::spawn(&launch)?;
    let mut ips = vec![record.ipv4.to_string()];
    ips.extend(record.ipv6.map(|v| v.to_string()));
    let spec = PodSpec {
        namespace: &args.namespace,
        name: &args.name,
        node: &node,
        labels: &args.labels,
        port: args.port,
        ips,
    };
    let created = runtime()?.block_on(async {
        let client = crate::labd::admin_client(&paths).await?;
        cluster::create_pod(&client, &spec).await
    });
    if let Err(e) = created {
        process::kill(pid);
        let _ = pod_addresses(&node, &record, false);
        return Err(e);
    }
    state.processes.push(Process {
        kind: ProcessKind::Pod {
            pod: format!("{}/{}", args.namespace, args.name),
        },
        node: Some(node.name.clone()),
        pid: Some(pid),
        launch,
    });
    println!(
        "pod {}/{} on {} at {} port {} is Ready",
        args.namespace, args.name, node.name, record.ipv4, args.port
    );
    state.pods.push(record);
    state.save(&paths)
}

/// `kvip-lab pod delete NAME`.
pub fn pod_delete(name: &str, namespace: &str) -> anyhow::Result<()> {
    require_root()?;
    let paths = Paths::new();
    let _lock = lock(&paths, true)?;
    let mut state = load(&paths)?;
    let record = state
        .pods
        .iter()
        .find(|p| p.name == name && p.namespace == namespace)
        .cloned()
        .with_context(|| format!("no lab pod {namespace}/{name}"))?;
    let node = state.node(&record.node)?.clone();
    let kind = ProcessKind::Pod {
        pod: format!("{namespace}/{name}"),
    };
    let pids: Vec<i32> = state
        .processes
        .iter()
        .filter(|p| p.kind == kind)
        .filter_map(|p| p.pid)
        .collect();
    let mut ips = vec![record.ipv4.to_string()];
    ips.extend(record.ipv6.map(|v| v.to_string()));
    let spec = PodSpec {
        namespace,
        name,
        node: &node,
        labels: &[],
        port: record.port,
        ips,
    };
    runtime()?.block_on(async {
        let client = crate::labd::admin_client(&paths).await?;
        cluster::delete_pod(&client, &spec, || {
            for pid in &pids {
                process::stop(*pid, Duration::from_secs(1));
            }
            pod_addresses(&node, &record, false)
        })
        .await
    })?;
    state.processes.retain(|p| p.kind != kind);
    state
        .pods
        .retain(|p| !(p.name == name && p.namespace == namespace));
    println!("pod {namespace}/{name} deleted");
    state.save(&paths)
}

/// `kvip-lab probe ADDR:PORT`: one connection from the client namespace.
pub fn probe(target: &str, timeout: Duration) -> anyhow::Result<String> {
    let addr: SocketAddr = target
        .parse()
        .with_context(|| format!("{target:?} is not ADDR:PORT (IPv6: [ADDR]:PORT)"))?;
    let line = crate::netns::in_netns(CLIENT_NETNS, move || -> anyhow::Result<String> {
        use std::io::BufRead;
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line)?;
        if line.is_empty() {
            bail!("the connection closed without an answer");
        }
        Ok(line.trim_end().to_string())
    })??;
    Ok(line)
}

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
            let node = state.node(&name)?.clone();
            process::run_with_input(
                "ip",
                &["netns", "exec", &node.netns, "nft", "-f", "-"],
                &format!(
                    "table inet kvlab_fault {{}}\ndelete table inet kvlab_fault\n{FAULT_RULES}"
                ),
            )?;
            state.faults.entry(name.clone()).or_default().api_isolated = true;
            println!("node {name} cut from the API servers");
        }
        Fault::Heal(name) => {
            let node = state.node(&name)?.clone();
            process::run_with_input(
                "ip",
                &["netns", "exec", &node.netns, "nft", "-f", "-"],
                "table inet kvlab_fault {}\ndelete table inet kvlab_fault\n",
            )?;
            state.faults.entry(name.clone()).or_default().api_isolated = false;
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

/// `kvip-lab logs NODE`: the logs of the DaemonSet containers on NODE.
pub fn logs(node: &str) -> anyhow::Result<()> {
    let paths = Paths::new();
    let state = load(&paths)?;
    state.node(node)?;
    let mut any = false;
    for p in state
        .processes
        .iter()
        .filter(|p| p.node.as_deref() == Some(node))
    {
        if let ProcessKind::DaemonSet { daemonset } = &p.kind {
            any = true;
            println!("==> {daemonset} on {node} ({})", p.launch.log.display());
            print!(
                "{}",
                std::fs::read_to_string(&p.launch.log).unwrap_or_default()
            );
        }
    }
    if !any {
        eprintln!("nothing deployed on {node} (see `kvip-lab deploy`)");
    }
    Ok(())
}
