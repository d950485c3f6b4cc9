//! What the lab has running, persisted between `kvip-lab` invocations in a
//! JSON file under the state folder, and the folder's layout.

use crate::layout::{LabShape, NodeLayout};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The folder that holds the running lab's state, certificates, logs and etcd data.
pub fn state_dir() -> PathBuf {
    std::env::var_os("KVIP_LAB_STATE").map_or_else(|| PathBuf::from("/run/kvip-lab"), PathBuf::from)
}

/// Files inside the state folder.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state folder itself.
    pub root: PathBuf,
}

impl Paths {
    /// Paths for the default state folder.
    pub fn new() -> Self {
        Self { root: state_dir() }
    }
    /// The lab's state file.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// Held while `up`, `down` or another writer changes the lab.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// Certificates, keys and tokens.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// The admin kubeconfig printed as `KUBECONFIG`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }
    /// kubeconfig used inside the lab (through the `kubernetes` ClusterIP).
    pub fn incluster_kubeconfig(&self) -> PathBuf {
        self.root.join("incluster.kubeconfig")
    }

    /// Kubeconfig of the nodes' own agents (kube-proxy): the lab's API
    /// endpoint in front of the API servers, as kubeadm's
    /// `controlPlaneEndpoint`.
    pub fn endpoint_kubeconfig(&self) -> PathBuf {
        self.root.join("endpoint.kubeconfig")
    }

    /// The files a static Pod's containers mount from the node.
    pub fn static_pod_dir(&self, pod: &str) -> PathBuf {
        self.root.join("staticpods").join(pod)
    }
    /// Log file of one process.
    pub fn log(&self, owner: &str, name: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(owner)
            .join(format!("{name}.log"))
    }
    /// In-cluster credentials of one DaemonSet pod.
    pub fn service_account_dir(&self, pod: &str) -> PathBuf {
        self.root.join("serviceaccounts").join(pod)
    }
    /// etcd's data folder.
    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
    }
    /// Folder on PATH with kubectl and friends.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self::new()
    }
}

/// What a process is, so faults and `down` know what to stop and what to restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProcessKind {
    /// etcd in the infra namespace.
    Etcd,
    /// The API server of a control-plane node.
    Apiserver,
    /// kube-controller-manager in the infra namespace.
    ControllerManager,
    /// The lab daemon: API forwarder and the lab's API endpoint.
    Labd,
    /// kube-proxy of a node.
    KubeProxy,
    /// A container of a DaemonSet pod started by `deploy`.
    DaemonSet {
        /// `namespace/name` of the DaemonSet.
        daemonset: String,
    },
    /// A container of a static Pod started by `deploy --node`.
    StaticPod {
        /// `namespace/name` of the Pod.
        pod: String,
    },
    /// kube-vip-cloud-provider in the infra namespace, started by
    /// `cloud-provider start` (the IPAM tests' oracle).
    CloudProvider,
    /// The responder of a lab pod.
    Pod {
        /// `namespace/name` of the Pod.
        pod: String,
    },
}

/// How to start a process again (after a fault or for `revive-node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Network namespace to run in; None for the host.
    pub netns: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment of the process.
    pub env: BTreeMap<String, String>,
    /// Folder bind-mounted on the in-cluster service-account path, if any.
    pub service_account_dir: Option<PathBuf>,
    /// Files the process sees at a path of its own (path in the pod → lab
    /// file): a static Pod's kubeconfig hostPath.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, PathBuf>,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// What it is.
    #[serde(flatten)]
    pub kind: ProcessKind,
    /// The node it belongs to (None: infra or host).
    pub node: Option<String>,
    /// Process id (also its process group id); None while stopped.
    pub pid: Option<i32>,
    /// How to start it again.
    pub launch: Launch,
}

/// A lab pod: a Pod object and its responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Node it is bound to.
    pub node: String,
    /// Its IPv4 address.
    pub ipv4: std::net::Ipv4Addr,
    /// Its IPv6 address (with `--ipv6`).
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// Port the responder listens on.
    pub port: u16,
}

/// Faults in force on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFaults {
    /// `kill-node`: processes stopped, link down.
    pub killed: bool,
    /// `isolate-api`: traffic to the API servers dropped.
    pub api_isolated: bool,
    /// `apiserver-stop`: this node's API server is stopped.
    pub apiserver_stopped: bool,
}

/// The whole running lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    /// What `up` was asked for.
    pub shape: LabShape,
    /// Kubernetes version of the control plane.
    pub kubernetes_version: String,
    /// The nodes.
    pub nodes: Vec<NodeLayout>,
    /// Every process the lab started.
    pub processes: Vec<Process>,
    /// Lab pods.
    pub pods: Vec<PodRecord>,
    /// Faults per node name.
    #[serde(default)]
    pub faults: BTreeMap<String, NodeFaults>,
    /// Folder with the control-plane binaries.
    pub k8s_bin: PathBuf,
    /// True once `up` finished; a state without it is a half-built lab.
    pub ready: bool,
}

impl LabState {
    /// Reads the state file; None when no lab is up.
    pub fn load(paths: &Paths) -> anyhow::Result<Option<Self>> {
        let file = paths.state_file();
        match std::fs::read(&file) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the lab state {} is unreadable ({e}); run `kvip-lab down`",
                    file.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
        }
    }

    /// Writes the state file atomically.
    pub fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        let file = paths.state_file();
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &file)?;
        Ok(())
    }

    /// The node called `name`, or an error listing the nodes there are.
    pub fn node(&self, name: &str) -> anyhow::Result<&NodeLayout> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<_> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow::anyhow!(
                "no lab node called {name:?}; the nodes are: {}",
                names.join(" ")
            )
        })
    }

    /// Faults in force on `node`.
    pub fn faults(&self, node: &str) -> NodeFaults {
        self.faults.get(node).cloned().unwrap_or_default()
    }
}
