//! `kvip-lab pod` and `pod delete`: a Pod bound to a node, its addresses on
//! the node and the responder that answers for it.

use super::{load, lock, require_root, runtime};
use crate::cluster::{self, PodSpec};
use crate::control_plane::PATH;
use crate::layout::NodeLayout;
use crate::process;
use crate::state::{Launch, Paths, PodRecord, Process, ProcessKind};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

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
        files: Default::default(),
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
