//! The real control plane: etcd in the infra namespace, one kube-apiserver
//! per control-plane node (listening on every address of the node, so it
//! also answers on a VIP added there), and kube-controller-manager running
//! the endpointslice, namespace, service-account and garbage-collector
//! controllers.

use crate::layout::{self, INFRA_IPV4, INFRA_NETNS, NodeLayout};
use crate::pki::Pki;
use crate::process;
use crate::state::{Launch, Paths, Process, ProcessKind};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// PATH given to every process the lab starts.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn base_env() -> BTreeMap<String, String> {
    BTreeMap::from([("PATH".to_string(), PATH.to_string())])
}

/// How to start etcd.
pub fn etcd_launch(paths: &Paths, etcd: &Path) -> Launch {
    let client = format!("http://{INFRA_IPV4}:{}", layout::ETCD_PORT);
    Launch {
        netns: Some(INFRA_NETNS.to_string()),
        argv: vec![
            etcd.display().to_string(),
            "--name=lab".into(),
            format!("--data-dir={}", paths.etcd_data().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=lab=http://127.0.0.1:2380".into(),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
        env: base_env(),
        service_account_dir: None,
        files: Default::default(),
        log: paths.log("infra", "etcd"),
    }
}

/// How to start the API server of control-plane node `node`.
pub fn apiserver_launch(
    paths: &Paths,
    bin: &Path,
    pki: &Pki,
    node: &NodeLayout,
    ipv6: bool,
) -> Launch {
    let ranges = if ipv6 {
        format!("{},{}", layout::SERVICE_RANGE4, layout::SERVICE_RANGE6)
    } else {
        layout::SERVICE_RANGE4.to_string()
    };
    Launch {
        netns: Some(node.netns.clone()),
        argv: vec![
            bin.join("kube-apiserver").display().to_string(),
            format!("--etcd-servers=http://{INFRA_IPV4}:{}", layout::ETCD_PORT),
            "--bind-address=::".into(),
            format!("--secure-port={}", layout::APISERVER_PORT),
            format!("--advertise-address={}", node.ipv4),
            format!("--tls-cert-file={}", pki.server_cert.display()),
            format!("--tls-private-key-file={}", pki.server_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--token-auth-file={}", pki.token_file.display()),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-account-max-token-expiration=48h".into(),
            format!("--service-cluster-ip-range={ranges}"),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            "--endpoint-reconciler-type=lease".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ],
        env: base_env(),
        service_account_dir: None,
        files: Default::default(),
        log: paths.log(&node.name, "kube-apiserver"),
    }
}

/// How to start kube-controller-manager.
pub fn controller_manager_launch(paths: &Paths, bin: &Path, pki: &Pki) -> Launch {
    Launch {
        netns: Some(INFRA_NETNS.to_string()),
        argv: vec![
            bin.join("kube-controller-manager").display().to_string(),
            format!("--kubeconfig={}", paths.incluster_kubeconfig().display()),
            "--controllers=endpointslice,endpointslicemirroring,namespace,serviceaccount,garbagecollector".into(),
            format!("--service-account-private-key-file={}", pki.sa_key.display()),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
            "--secure-port=0".into(),
            "--concurrent-service-endpoint-syncs=10".into(),
            "--v=1".into(),
        ],
        env: base_env(),
        service_account_dir: None,
        files: Default::default(),
        log: paths.log("infra", "kube-controller-manager"),
    }
}

/// Starts `launch` and records it.
pub fn start(kind: ProcessKind, node: Option<&str>, launch: Launch) -> anyhow::Result<Process> {
    let pid = process::spawn(&launch)?;
    Ok(Process {
        kind,
        node: node.map(String::from),
        pid: Some(pid),
        launch,
    })
}

/// Waits until etcd answers `GET /health`.
pub fn wait_etcd(timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from((INFRA_IPV4, layout::ETCD_PORT));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut stream) =
            crate::netns::connect_in(INFRA_NETNS, addr, Duration::from_millis(300))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = String::new();
            if stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                && stream.read_to_string(&mut reply).is_ok()
                && reply.contains("\"health\":\"true\"")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("etcd did not become healthy within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a log file, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the API server on `node` answers `/readyz` with `ok`.
pub fn wait_apiserver(
    bin: &Path,
    paths: &Paths,
    node: &NodeLayout,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let server = format!("--server=https://{}:{}", node.ipv4, layout::APISERVER_PORT);
    let kubeconfig = format!("--kubeconfig={}", paths.incluster_kubeconfig().display());
    let kubectl = bin.join("kubectl").display().to_string();
    loop {
        let ok = process::run_in(
            INFRA_NETNS,
            &kubectl,
            &[
                &kubeconfig,
                &server,
                "--request-timeout=2s",
                "get",
                "--raw",
                "/readyz",
            ],
        )
        .is_ok_and(|out| out.trim() == "ok");
        if ok {
            return Ok(());
        }
        let log = paths.log(&node.name, "kube-apiserver");
        let exited = process::pids_in_netns(&crate::netns::netns_path(&node.netns))
            .into_iter()
            .all(|pid| {
                !std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("kube-apiserver"))
            });
        if exited {
            bail!(
                "the API server on {} exited:\n{}",
                node.name,
                log_tail(&log, 5)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the API server on {} did not become ready within {timeout:?}; see {}",
                node.name,
                paths.log(&node.name, "kube-apiserver").display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes the kubeconfig of the nodes' kube-proxy: the lab's API endpoint in
/// the infra namespace, which leads to the healthy API servers (kube-proxy
/// cannot use the `kubernetes` ClusterIP: it is what programs it).
pub fn write_endpoint_kubeconfig(paths: &Paths, pki: &Pki) -> anyhow::Result<()> {
    let server = format!("https://{}:{}", layout::INFRA_IPV4, layout::APISERVER_PORT);
    std::fs::write(
        paths.endpoint_kubeconfig(),
        crate::pki::kubeconfig(&server, &pki.ca_cert, &pki.controller_manager_token),
    )
    .context("writing the kube-proxy kubeconfig")
}

/// How to start kube-proxy on `node`: nftables mode, leaving the conntrack
/// sysctls of the namespace as they are.
pub fn kube_proxy_launch(paths: &Paths, bin: &Path, node: &NodeLayout, ipv6: bool) -> Launch {
    let mut cluster_cidr = layout::POD_RANGE4.to_string();
    if ipv6 {
        cluster_cidr = format!("{cluster_cidr},{}", layout::POD_RANGE6);
    }
    Launch {
        netns: Some(node.netns.clone()),
        argv: vec![
            bin.join("kube-proxy").display().to_string(),
            format!("--kubeconfig={}", paths.endpoint_kubeconfig().display()),
            format!("--hostname-override={}", node.name),
            "--proxy-mode=nftables".into(),
            format!("--cluster-cidr={cluster_cidr}"),
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0s".into(),
            "--conntrack-tcp-timeout-close-wait=0s".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--v=1".into(),
        ],
        env: base_env(),
        service_account_dir: None,
        files: Default::default(),
        log: paths.log(&node.name, "kube-proxy"),
    }
}

/// Waits until kube-proxy on `node` has programmed the `kubernetes`
/// ClusterIP: from then on the node's pods reach the API.
pub fn wait_kube_proxy(paths: &Paths, node: &NodeLayout, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let wanted = layout::KUBERNETES_SERVICE_IP.to_string();
    loop {
        let rules =
            crate::process::run_in(&node.netns, "nft", &["list", "table", "ip", "kube-proxy"])
                .unwrap_or_default();
        if rules.contains(&wanted) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "kube-proxy on {} did not program the kubernetes ClusterIP within {timeout:?}; see {}",
                node.name,
                paths.log(&node.name, "kube-proxy").display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes the kubeconfig used inside the lab (via the `kubernetes` ClusterIP).
pub fn write_incluster_kubeconfig(paths: &Paths, pki: &Pki) -> anyhow::Result<()> {
    let server = format!("https://{}:443", layout::KUBERNETES_SERVICE_IP);
    std::fs::write(
        paths.incluster_kubeconfig(),
        crate::pki::kubeconfig(&server, &pki.ca_cert, &pki.controller_manager_token),
    )
    .context("writing the in-cluster kubeconfig")
}
