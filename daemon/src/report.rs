//! `kvip status`: one read of the cluster (Services, EndpointSlices, Nodes,
//! Leases; no watches), the same `kvip_core::assess` the daemon runs, and a
//! table or JSON a person or a script can act on. The I/O is a thin shell
//! around [`build`], [`table`] and [`json`], which work on plain values.

use crate::translate;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams};
use kvip_core::candidacy::NodeInput;
use kvip_core::config::parse_go_bool;
use kvip_core::instances::{self, instance_of};
use kvip_core::placement;
use kvip_core::service::{TrafficPolicy, VIP_HOST_ANNOTATION};
use kvip_core::{LbClassRule, LeaseKey, LeaseRecord, ServiceInput, ServiceKey, SliceInput};
use kvip_core::{WallTime, assess};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

/// The role that announces Service VIPs.
pub const LB_ROLE: &str = instances::LB_ROLE;

/// How much the clock of the machine running `kvip status` may disagree with
/// the clocks of the nodes that renew Leases.
///
/// The daemon judges a Lease by how long ago it last *changed*, on its own
/// monotonic clock, because it watches. `kvip status` reads each Lease once,
/// so it can only compare `renewTime + leaseDurationSeconds` with its own
/// wall clock; a Lease that expired less than this long ago still counts as
/// held, so a laptop a little behind NTP does not report live instances dead.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// Exit code when every Service shown is announced or being elected.
const EXIT_OK: u8 = 0;
/// Exit code when any Service shown is pending or refused.
const EXIT_PENDING: u8 = 1;
/// Exit code when the cluster could not be read.
const EXIT_ERROR: u8 = 2;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The table with the Lease and `status.loadBalancer.ingress` too.
    Wide,
    /// A stable JSON document for scripts.
    Json,
}

fn go_bool(s: &str) -> Result<bool, String> {
    parse_go_bool(s).ok_or_else(|| format!("{s:?} is not a boolean (true, false, 1, 0, t, f)"))
}

/// Flags of `kvip status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this Service (in -n, or the kubeconfig context's namespace).
    pub service: Option<String>,
    /// Only Services of this namespace (all namespaces when unset).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// wide or json; a table when unset.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Kubeconfig to use (otherwise KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// kvip's lb_class_only: Services without a loadBalancerClass are not kvip's.
    #[arg(long = "lb-class-only", value_parser = go_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub lb_class_only: bool,
    /// kvip's lb_class_name: the loadBalancerClass that is kvip's.
    #[arg(long = "lb-class-name", default_value = "kube-vip.io/kube-vip-class")]
    pub lb_class_name: String,
    /// kvip's lb_class_legacy_handling (kube-vip's default, true): Services
    /// without a class are kvip's unless --lb-class-only.
    #[arg(long = "lb-class-legacy-handling", value_parser = go_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub lb_class_legacy_handling: bool,
    /// kvip's kvip_exclude_lb_label: nodes labelled
    /// node.kubernetes.io/exclude-from-external-load-balancers announce no
    /// Service VIPs. Inside kvip's pod, its own setting.
    #[arg(long = "exclude-lb-label", env = "kvip_exclude_lb_label", value_parser = go_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub exclude_lb_label: bool,
    /// The namespace kvip runs in: only instance Leases there count (as the
    /// daemon has it). Inside kvip's pod, its own namespace (POD_NAMESPACE or
    /// the ServiceAccount's); elsewhere kube-system.
    #[arg(long = "instance-namespace", env = "POD_NAMESPACE")]
    pub instance_namespace: Option<String>,
    /// kvip's kvip_ipam: Services without an address get one from the pools.
    #[arg(long = "ipam", env = "kvip_ipam", value_parser = go_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub ipam: bool,
    /// kvip's kvip_restrict_to_pools: addresses outside the pools are refused.
    #[arg(long = "restrict-to-pools", env = "kvip_restrict_to_pools", value_parser = go_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub restrict_to_pools: bool,
    /// The namespace of the pools' ConfigMap (KUBEVIP_NAMESPACE).
    #[arg(long = "pools-namespace", env = "KUBEVIP_NAMESPACE", default_value = kvip_core::ipam::CONFIG_MAP_NAMESPACE)]
    pub pools_namespace: String,
    /// The pools' ConfigMap (KUBEVIP_CONFIG_MAP).
    #[arg(long = "pools-config-map", env = "KUBEVIP_CONFIG_MAP", default_value = kvip_core::ipam::CONFIG_MAP_NAME)]
    pub pools_config_map: String,
}

/// How `kvip status` judges Services and nodes, as the daemon is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// Which Services are kvip's.
    pub class: LbClassRule,
    /// `kvip_exclude_lb_label`.
    pub exclude_lb_label: bool,
    /// `kvip_ipam`.
    pub ipam: bool,
    /// `kvip_restrict_to_pools`.
    pub restrict_to_pools: bool,
}

/// Why the cluster could not be read; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `--kubeconfig` names a file that cannot be used.
    #[error("--kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No credentials found at all.
    #[error(
        "no Kubernetes credentials: set KUBECONFIG, pass --kubeconfig PATH, or run in a pod ({0})"
    )]
    NoCredentials(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A list call failed.
    #[error(
        "cannot list {what}: {source}; check that the API server is reachable and that your credentials may list {what} in every namespace"
    )]
    List {
        /// The resource, such as "Services".
        what: &'static str,
        /// The API error.
        source: kube::Error,
    },
}

/// A Lease as status reads it: its labels, annotations and record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFacts {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec`.
    pub record: LeaseRecord,
}

/// A Service as status reads it: what the core needs, plus what kvip wrote on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// The core's input.
    pub input: ServiceInput,
    /// The `kube-vip.io/vipHost` annotation: who last said it announces.
    pub vip_host: Option<String>,
    /// `status.loadBalancer.ingress[].ip`.
    pub ingress: Vec<String>,
}

/// Everything read from the cluster, as plain values.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every Service.
    pub services: Vec<ServiceFacts>,
    /// Every EndpointSlice that belongs to a Service.
    pub slices: Vec<SliceInput>,
    /// Every Node's name and labels.
    pub nodes: Vec<(String, BTreeMap<String, String>)>,
    /// Every Node's own addresses (`status.addresses`), with the Node's name.
    pub node_addresses: BTreeMap<IpAddr, String>,
    /// Every Lease outside `kube-node-lease`.
    pub leases: BTreeMap<LeaseKey, LeaseFacts>,
    /// The namespace kvip runs in: instance Leases elsewhere are not kvip's.
    pub instance_namespace: String,
    /// The ServiceCIDRs (empty when the API has none or may not be read).
    pub service_cidrs: Vec<String>,
    /// When the snapshot was taken, by the wall clock.
    pub now: WallTime,
    /// The pools' ConfigMap: `None` when it does not exist, an error when
    /// it could not be read.
    pub pools: Pools,
}

/// The pools' ConfigMap as `kvip status` read it.
#[derive(Debug, Clone, Default)]
pub enum Pools {
    /// There is none.
    #[default]
    Absent,
    /// Its pools.
    Read(kvip_core::ipam::PoolConfig),
    /// Why it could not be read.
    Unreadable(String),
}

/// Where a Service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A node holds its Lease and announces it.
    Announced,
    /// It has candidates but nobody holds its Lease right now.
    Electing,
    /// Nobody may announce it; see the reason.
    Pending,
    /// Its input is invalid, so kvip does not serve it.
    Refused,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Announced => "announced",
            State::Electing => "electing",
            State::Pending => "pending",
            State::Refused => "refused",
        }
    }
}

/// Why a Service is pending or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// `PendingReason::reason()`, or `InvalidInput` for a refused Service.
    pub code: String,
    /// In plain words, with the fix.
    pub message: String,
}

/// The LEASE column of a Service announced in membership mode.
pub const MEMBERSHIP: &str = "(membership)";

/// Code of a refused Service's reason.
pub const INVALID_INPUT: &str = "InvalidInput";

/// One Service kvip serves (or refuses), as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The VIPs; for a refused Service, the text it asks for.
    pub addresses: Vec<String>,
    /// `Local` or `Cluster`.
    pub policy: String,
    /// `namespace/name` of the Lease that elects its announcer.
    pub lease: Option<String>,
    /// The node holding that Lease, if anyone does.
    pub announcer: Option<String>,
    /// Nodes that may announce it.
    pub candidates: Vec<String>,
    /// Where it stands.
    pub state: State,
    /// Why it is pending or refused.
    pub reason: Option<Reason>,
    /// The `kube-vip.io/vipHost` annotation, to cross-check the announcer (table only).
    #[serde(skip)]
    pub vip_host: Option<String>,
    /// `status.loadBalancer.ingress` (wide table only).
    #[serde(skip)]
    pub ingress: Vec<String>,
}

impl ServiceRow {
    /// `namespace/name`.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.namespace.clone(), self.name.clone())
    }
}

/// One kvip instance (an instance Lease), or a node that runs none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    /// The node.
    pub node: String,
    /// Its roles, such as `lb`; empty for a node without any kvip instance.
    pub roles: Vec<String>,
    /// Whether the instance renewed its Lease within its duration.
    pub live: bool,
    /// How long ago it last renewed (table only).
    #[serde(skip)]
    pub renewed_ago: Option<Duration>,
    /// What it cannot place now, each problem with the addresses it concerns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_problems: Vec<PlacementProblem>,
}

/// A problem an instance published: addresses it cannot put on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementProblem {
    /// The problem, such as a missing interface.
    pub problem: String,
    /// The addresses it concerns.
    pub addresses: Vec<IpAddr>,
}

/// The placement problems an instance Lease publishes, by problem.
fn placement_problems(facts: &LeaseFacts) -> Vec<PlacementProblem> {
    let Some(text) = facts.annotations.get(placement::PLACEMENT_ANNOTATION) else {
        return Vec::new();
    };
    let by_address = match placement::decode(text) {
        Ok(p) => p,
        Err(e) => {
            return vec![PlacementProblem {
                problem: e,
                addresses: Vec::new(),
            }];
        }
    };
    let mut by_problem: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (address, problem) in by_address {
        by_problem.entry(problem).or_default().push(address);
    }
    by_problem
        .into_iter()
        .map(|(problem, addresses)| PlacementProblem { problem, addresses })
        .collect()
}

/// What `kvip status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The Services, in namespace/name order.
    pub services: Vec<ServiceRow>,
    /// kvip instances by node, then nodes without one.
    pub instances: Vec<InstanceRow>,
    /// Nodes that carry the exclusion label, and what kvip makes of it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labelled: Vec<LabelledNode>,
    /// Each pool of the `kubevip` ConfigMap, how full it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<kvip_core::ipam::PoolUsage>,
    /// Values of the ConfigMap that cannot be used as written, or why it
    /// could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pool_problems: Vec<String>,
}

/// A node labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelledNode {
    /// The node.
    pub node: String,
    /// Whether it is excluded from announcing Service VIPs
    /// (`kvip_exclude_lb_label=true`); otherwise the label is ignored, as
    /// kube-vip ignores it.
    pub excluded: bool,
}

impl Report {
    /// Keeps only the Services of `namespace` and, if given, named `name`.
    pub fn select(mut self, namespace: Option<&str>, name: Option<&str>) -> Self {
        self.services.retain(|s| {
            namespace.is_none_or(|ns| s.namespace == ns) && name.is_none_or(|n| s.name == n)
        });
        self
    }

    /// 1 when any Service shown is pending or refused, so scripts can test it; 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self
            .services
            .iter()
            .any(|s| matches!(s.state, State::Pending | State::Refused))
        {
            EXIT_PENDING
        } else {
            EXIT_OK
        }
    }

    /// Nodes without a live kvip instance of the lb role.
    pub fn nodes_without_lb(&self) -> Vec<String> {
        let with: BTreeSet<&str> = self
            .instances
            .iter()
            .filter(|i| i.live && i.roles.iter().any(|r| r == LB_ROLE))
            .map(|i| i.node.as_str())
            .collect();
        let all: BTreeSet<&str> = self.instances.iter().map(|i| i.node.as_str()).collect();
        all.difference(&with).map(|n| n.to_string()).collect()
    }
}

/// The holder of a Lease, if it holds it at `now`: a non-empty holder whose
/// `renewTime + leaseDurationSeconds` (plus [`CLOCK_TOLERANCE`]) is not past.
/// A released Lease (empty holder) or one never renewed has no holder.
pub fn live_holder(record: &LeaseRecord, now: WallTime) -> Option<&str> {
    let holder = record.holder.as_deref().filter(|h| !h.is_empty())?;
    let renewed = record.renew_time?;
    let duration = i64::from(record.lease_duration_seconds.unwrap_or(0).max(0));
    let tolerance = i64::try_from(CLOCK_TOLERANCE.as_micros()).unwrap_or(i64::MAX);
    let expires = renewed
        .0
        .saturating_add(duration.saturating_mul(1_000_000))
        .saturating_add(tolerance);
    (now.0 <= expires).then_some(holder)
}

fn instances(snapshot: &Snapshot) -> Vec<InstanceRow> {
    let mut rows = Vec::new();
    for (key, facts) in &snapshot.leases {
        if key.namespace != snapshot.instance_namespace {
            continue;
        }
        let Some(instance) = instance_of(&facts.labels) else {
            continue;
        };
        let renewed_ago = facts.record.renew_time.map(|t| {
            Duration::from_micros(u64::try_from(snapshot.now.0.saturating_sub(t.0)).unwrap_or(0))
        });
        let live = live_holder(&facts.record, snapshot.now) == Some(instance.node.as_str());
        rows.push(InstanceRow {
            node: instance.node,
            roles: instance.roles,
            placement_problems: if live {
                placement_problems(facts)
            } else {
                Vec::new()
            },
            live,
            renewed_ago,
        });
    }
    let with_instance: BTreeSet<String> = rows.iter().map(|r| r.node.clone()).collect();
    for (name, _) in &snapshot.nodes {
        if !with_instance.contains(name) {
            rows.push(InstanceRow {
                node: name.clone(),
                roles: Vec::new(),
                live: false,
                renewed_ago: None,
                placement_problems: Vec::new(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.node, &a.roles).cmp(&(&b.node, &b.roles)));
    rows
}

fn policy_text(input: &ServiceInput) -> String {
    match input.external_traffic_policy.as_deref() {
        None | Some("") => "Cluster".to_string(),
        Some(p) => p.to_string(),
    }
}

/// What a refused Service asks for, as written, from where kvip reads it.
fn requested_addresses(input: &ServiceInput) -> Vec<String> {
    kvip_core::service::address_texts(input)
        .1
        .into_iter()
        .map(String::from)
        .collect()
}

/// The Lease that elects a group, by the daemon's rule
/// ([`kvip_core::elections::electing_lease`]). Status cannot see the
/// daemon's `svc_election`: it takes it as false when the group's own Lease
/// does not exist and kube-vip's global Services Lease does, in kvip's
/// namespace (a load-balancer-only instance) or else in `cp_namespace`'s
/// default (an instance that runs the control plane too).
fn election_lease(
    group: &kvip_core::AnnouncementGroup,
    all_cluster: bool,
    leases: &BTreeMap<LeaseKey, LeaseFacts>,
    instance_namespace: &str,
) -> LeaseKey {
    let defaults = kvip_core::Config::default();
    let in_namespace = |namespace: &str| LeaseKey {
        namespace: namespace.to_string(),
        name: defaults.svc_leasename.clone(),
    };
    let global = [instance_namespace, defaults.cp_namespace.as_str()]
        .into_iter()
        .map(in_namespace)
        .find(|key| leases.contains_key(key))
        .unwrap_or_else(|| in_namespace(instance_namespace));
    let svc_election = leases.contains_key(&group.lease) || !leases.contains_key(&global);
    kvip_core::elections::electing_lease(group, !all_cluster, svc_election, &global)
}

fn lease_text(key: &LeaseKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// Assesses `snapshot` as the daemon would and describes every Service kvip
/// serves or refuses, and every kvip instance.
pub fn build(snapshot: &Snapshot, rules: &Rules) -> Report {
    let class = &rules.class;
    let instances = instances(snapshot);
    let lb_nodes: BTreeSet<&str> = instances
        .iter()
        .filter(|i| i.live && i.roles.iter().any(|r| r == LB_ROLE))
        .map(|i| i.node.as_str())
        .collect();
    let nodes: Vec<NodeInput> = snapshot
        .nodes
        .iter()
        .map(|(name, labels)| NodeInput {
            name: name.clone(),
            excluded: kvip_core::candidacy::excluded_by_label(labels, rules.exclude_lb_label),
            runs_service_instance: lb_nodes.contains(name.as_str()),
        })
        .collect();
    let labelled = snapshot
        .nodes
        .iter()
        .filter(|(_, labels)| labels.contains_key(kvip_core::candidacy::EXCLUDE_LB_LABEL))
        .map(|(name, _)| LabelledNode {
            node: name.clone(),
            excluded: rules.exclude_lb_label,
        })
        .collect();
    let inputs: Vec<ServiceInput> = snapshot
        .services
        .iter()
        .map(|s| {
            let mut input = s.input.clone();
            input.lease_labelled = input.named_lease().is_some_and(|key| {
                snapshot.leases.get(&key).is_some_and(|f| {
                    kvip_core::lease_names::service_may_name(&key.name, Some(&f.labels), &[])
                })
            });
            input
        })
        .collect();
    // kvip_restrict_to_pools, as the daemon applies it: a Service outside
    // its pool claims nothing.
    let fenced = match &snapshot.pools {
        Pools::Read(config) if rules.restrict_to_pools => {
            kvip_core::ipam::outside_pools(&inputs, class, Some(config))
        }
        Pools::Absent if rules.restrict_to_pools => {
            kvip_core::ipam::outside_pools(&inputs, class, None)
        }
        _ => BTreeMap::new(),
    };
    let admitted: Vec<ServiceInput> = inputs
        .iter()
        .filter(|i| !fenced.contains_key(&i.key))
        .cloned()
        .collect();
    let mut assessment = assess(&admitted, snapshot.slices.iter().cloned(), &nodes, class);
    assessment.pending.extend(fenced.clone());
    // As the daemon does before electing. (It also refuses a subnet's
    // network and broadcast addresses, but that needs the node's interfaces,
    // which the API does not show: such a Service stays `electing` here, and
    // its `VIPPending` Event says why.)
    assessment.refuse_node_addresses(&snapshot.node_addresses);
    assessment.refuse_service_network(&snapshot.service_cidrs, &inputs);
    // The pools, as the daemon applies them.
    let mut pools = Vec::new();
    let mut pool_problems = Vec::new();
    let config = match &snapshot.pools {
        Pools::Read(config) => Some(config),
        _ => None,
    };
    if let Pools::Unreadable(e) = &snapshot.pools {
        pool_problems.push(e.clone());
    }
    if let Some(config) = config {
        let (requests, uses) = kvip_core::ipam::requests_and_uses(&inputs, class);
        if rules.ipam {
            let requests: Vec<_> = requests.into_iter().map(|(_, r)| r).collect();
            let outcome = kvip_core::ipam::allocate_all(config, &requests, &uses);
            assessment.no_pool_address(&outcome.refused);
        }
        pools = kvip_core::ipam::pool_usage(config, &uses);
        pool_problems.extend(config.problems.iter().map(ToString::to_string));
    }
    // Nodes that cannot place an address are no candidates, as the daemon has it.
    let problems: BTreeMap<String, BTreeMap<IpAddr, String>> = instances
        .iter()
        .filter(|i| i.live && i.roles.iter().any(|r| r == LB_ROLE))
        .map(|i| {
            let each = i
                .placement_problems
                .iter()
                .flat_map(|p| p.addresses.iter().map(|a| (*a, p.problem.clone())))
                .collect();
            (i.node.clone(), each)
        })
        .collect();
    assessment.exclude_unplaceable(&problems);
    // A shared address keeps the Lease that elects it now, as the daemon has it.
    assessment.keep_held_leases(
        |key| Some(snapshot.leases.get(key)?.record.clone()),
        |key| {
            snapshot
                .services
                .iter()
                .find(|s| &s.input.key == key)?
                .vip_host
                .clone()
                .filter(|host| lb_nodes.contains(host.as_str()))
        },
    );

    let mut services = Vec::new();
    for facts in &snapshot.services {
        let key = &facts.input.key;
        let mut row = ServiceRow {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            addresses: Vec::new(),
            policy: policy_text(&facts.input),
            lease: None,
            announcer: None,
            candidates: Vec::new(),
            state: State::Electing,
            reason: None,
            vip_host: facts.vip_host.clone(),
            ingress: facts.ingress.clone(),
        };
        if let Some(error) = assessment.refused.get(key) {
            row.addresses = requested_addresses(&facts.input);
            row.state = State::Refused;
            row.reason = Some(Reason {
                code: INVALID_INPUT.to_string(),
                message: error.to_string(),
            });
            services.push(row);
            continue;
        }
        if let Some(reason) = fenced.get(key) {
            row.addresses = requested_addresses(&facts.input);
            row.state = State::Pending;
            row.reason = Some(Reason {
                code: reason.reason().to_string(),
                message: reason.message(),
            });
            services.push(row);
            continue;
        }
        let Some(view) = assessment.view(key) else {
            continue; // not kvip's Service
        };
        row.addresses = view.addresses.iter().map(ToString::to_string).collect();
        row.policy = match view.policy {
            TrafficPolicy::Local => "Local".to_string(),
            TrafficPolicy::Cluster => "Cluster".to_string(),
        };
        let own = LeaseKey {
            namespace: key.namespace.clone(),
            name: view.lease_name.clone(),
        };
        if let Some(reason) = assessment.pending.get(key) {
            row.lease = Some(lease_text(&own));
            row.announcer = snapshot
                .leases
                .get(&own)
                .and_then(|l| live_holder(&l.record, snapshot.now))
                .map(String::from);
            row.state = State::Pending;
            row.reason = Some(Reason {
                code: reason.reason().to_string(),
                message: reason.message(),
            });
        } else if let Some(group) = assessment.group_of(key) {
            let all_cluster = group.services.iter().all(|s| {
                assessment
                    .view(s)
                    .is_some_and(|v| v.policy == TrafficPolicy::Cluster)
            });
            let lease = election_lease(
                group,
                all_cluster,
                &snapshot.leases,
                &snapshot.instance_namespace,
            );
            match snapshot.leases.get(&lease) {
                Some(l) => {
                    row.announcer = live_holder(&l.record, snapshot.now).map(String::from);
                    row.lease = Some(lease_text(&lease));
                }
                None => {
                    // Membership mode writes no Lease per address: the claim
                    // (vipHost of the group's first Service) names the
                    // announcer while that node's membership is live.
                    let claim = group
                        .services
                        .iter()
                        .find_map(|k| snapshot.services.iter().find(|f| &f.input.key == k))
                        .and_then(|f| f.vip_host.as_deref())
                        .filter(|h| group.candidates.contains(*h));
                    row.announcer = claim.map(String::from);
                    row.lease = Some(match claim {
                        Some(_) => MEMBERSHIP.to_string(),
                        None => lease_text(&lease),
                    });
                }
            }
            row.candidates = group.candidates.iter().cloned().collect();
            // Another daemon holding the Lease of a Service on this address
            // answers for it; kvip's holder holds back (Ballot::companions).
            if let Some((other, holder)) =
                foreign_companion(&assessment, group, &lease, snapshot, &lb_nodes)
            {
                row.reason = Some(Reason {
                    code: FOREIGN_HOLDER.to_string(),
                    message: format!(
                        "Lease {} (a Service on this address) is held by {holder}, which runs no kvip (kube-vip during a migration?): {holder} answers for the address, and kvip announces it only once that Lease is free",
                        lease_text(&other)
                    ),
                });
                row.announcer = Some(holder);
            }
            row.state = if row.announcer.is_some() {
                State::Announced
            } else {
                State::Electing
            };
        }
        services.push(row);
    }
    services.sort_by_key(ServiceRow::key);
    Report {
        services,
        instances,
        labelled,
        pools,
        pool_problems,
    }
}

/// The reason code of a shared address another daemon answers for.
pub const FOREIGN_HOLDER: &str = "ForeignHolder";

/// The Lease of another Service of `group`'s namespace naming its
/// addresses, held (unexpired) by a writer that is not kvip — its stamp is
/// stale, or it carries none and its holder runs no live kvip instance —
/// with that holder.
fn foreign_companion(
    assessment: &kvip_core::Assessment,
    group: &kvip_core::AnnouncementGroup,
    lease: &LeaseKey,
    snapshot: &Snapshot,
    lb_nodes: &BTreeSet<&str>,
) -> Option<(LeaseKey, String)> {
    kvip_core::elections::companions(assessment, group, lease)
        .into_iter()
        .find_map(|k| {
            let record = &snapshot.leases.get(&k)?.record;
            live_holder(record, snapshot.now)?;
            let holder = record.foreign_holder(|h| lb_nodes.contains(h))?;
            Some((k.clone(), holder.to_string()))
        })
}

/// `kubectl`-style age: 42s, 5m, 3h, 2d.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn dash_join(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

/// Left-aligned columns three spaces apart; the last column is not padded.
fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The announcer cell: the Lease holder, with the `vipHost` annotation
/// when it says otherwise (status not yet written, or written by an old holder).
fn announcer_cell(row: &ServiceRow) -> String {
    let holder = row.announcer.as_deref().unwrap_or("-");
    match row.vip_host.as_deref() {
        Some(host) if Some(host) != row.announcer.as_deref() => {
            format!("{holder} (vipHost: {host})")
        }
        _ => holder.to_string(),
    }
}

/// What the table says of a Service nobody holds yet: normal for a moment,
/// worth a look when it lasts.
const ELECTING_HINT: &str =
    "nobody holds its Lease yet; if this lasts, its Events say why (kubectl describe service)";

/// The two tables `kvip status` prints: Services, then kvip instances.
pub fn table(report: &Report, wide: bool) -> String {
    let mut headers = vec![
        "NAMESPACE/NAME",
        "VIP(S)",
        "POLICY",
        "ANNOUNCER",
        "CANDIDATES",
        "STATE",
    ];
    if wide {
        headers.extend(["LEASE", "INGRESS"]);
    }
    headers.push("REASON");
    let rows: Vec<Vec<String>> = report
        .services
        .iter()
        .map(|s| {
            let mut row = vec![
                format!("{}/{}", s.namespace, s.name),
                dash_join(&s.addresses),
                s.policy.clone(),
                announcer_cell(s),
                dash_join(&s.candidates),
                s.state.as_str().to_string(),
            ];
            if wide {
                row.push(s.lease.clone().unwrap_or_else(|| "-".to_string()));
                row.push(dash_join(&s.ingress));
            }
            row.push(match (&s.reason, s.state) {
                (Some(r), _) => format!("{}: {}", r.code, r.message),
                (None, State::Electing) => ELECTING_HINT.to_string(),
                (None, _) => "-".to_string(),
            });
            row
        })
        .collect();
    let mut out = if rows.is_empty() {
        "No LoadBalancer Services served by kvip.\n".to_string()
    } else {
        columns(&headers, &rows)
    };
    out.push('\n');
    let instance_rows: Vec<Vec<String>> = report
        .instances
        .iter()
        .map(|i| {
            vec![
                i.node.clone(),
                if i.roles.is_empty() {
                    "-".to_string()
                } else {
                    i.roles.join(",")
                },
                if i.roles.is_empty() {
                    "no instance".to_string()
                } else if i.live {
                    "yes".to_string()
                } else {
                    "no".to_string()
                },
                i.renewed_ago
                    .map(|d| format!("{} ago", age(d)))
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["NODE", "KVIP ROLES", "LIVE", "RENEWED"],
        &instance_rows,
    ));
    let problems: Vec<String> = report
        .instances
        .iter()
        .flat_map(|i| {
            i.placement_problems.iter().map(move |p| {
                let addresses: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
                format!("  {}: {} ({})", i.node, p.problem, addresses.join(", "))
            })
        })
        .collect();
    if !problems.is_empty() {
        out.push_str(&format!(
            "\nAddresses nodes cannot place (they are no candidates for them):\n{}\n",
            problems.join("\n")
        ));
    }
    let (excluded, ignored): (Vec<&LabelledNode>, Vec<&LabelledNode>) =
        report.labelled.iter().partition(|n| n.excluded);
    let names = |nodes: &[&LabelledNode]| {
        nodes
            .iter()
            .map(|n| n.node.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !excluded.is_empty() {
        out.push_str(&format!(
            "\nNodes excluded from announcing Service VIPs (label {}; kvip_exclude_lb_label=true): {}\n",
            kvip_core::candidacy::EXCLUDE_LB_LABEL,
            names(&excluded)
        ));
    }
    if !ignored.is_empty() {
        out.push_str(&format!(
            "\nNodes labelled {} that still announce Service VIPs (kvip ignores the label as kube-vip does; kvip_exclude_lb_label=true honours it): {}\n",
            kvip_core::candidacy::EXCLUDE_LB_LABEL,
            names(&ignored)
        ));
    }
    if !report.pools.is_empty() {
        let rows: Vec<Vec<String>> = report
            .pools
            .iter()
            .flat_map(|p| {
                p.families.iter().map(|f| {
                    vec![
                        p.key.clone(),
                        f.family.name().to_string(),
                        f.used.to_string(),
                        f.free.to_string(),
                    ]
                })
            })
            .collect();
        out.push('\n');
        out.push_str(&columns(&["POOL", "FAMILY", "USED", "FREE"], &rows));
    }
    if !report.pool_problems.is_empty() {
        out.push_str(&format!(
            "\nAddress pools: {}\n",
            report.pool_problems.join("\n  ")
        ));
    }
    let missing = report.nodes_without_lb();
    if !missing.is_empty() {
        out.push_str(&format!(
            "\nNodes without a live kvip lb instance (no Service VIP can be announced from them): {}\n",
            missing.join(", ")
        ));
    }
    out
}

/// The JSON document of `kvip status -o json`.
pub fn json(report: &Report) -> String {
    // Plain structs of strings, bools and vectors always serialise.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn service_facts(svc: &Service) -> ServiceFacts {
    let ingress = translate::ingress(svc)
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    ServiceFacts {
        input: translate::service_input(svc),
        vip_host: svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VIP_HOST_ANNOTATION).cloned()),
        ingress,
    }
}

fn lease_facts(lease: &Lease) -> Option<(LeaseKey, LeaseFacts)> {
    let key = LeaseKey {
        namespace: lease.metadata.namespace.clone()?,
        name: lease.metadata.name.clone()?,
    };
    let facts = LeaseFacts {
        labels: lease
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        annotations: lease.metadata.annotations.clone().unwrap_or_default(),
        record: translate::observed(Some(lease)).record.unwrap_or_default(),
    };
    Some((key, facts))
}

async fn client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<(kube::Client, String), StatusError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| StatusError::Kubeconfig {
                    path: shown.clone(),
                    source: Box::new(e),
                })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| StatusError::Kubeconfig {
                    path: shown,
                    source: Box::new(e),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(StatusError::NoCredentials)?,
    };
    // A status command should fail fast, not hang on an unreachable server.
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(StatusError::Client)?;
    Ok((client, namespace))
}

/// Reads the cluster once: Services, EndpointSlices, Nodes and Leases.
pub async fn read(
    client: &kube::Client,
    instance_namespace: &str,
    pools: (&str, &str),
) -> Result<Snapshot, StatusError> {
    let (pools_namespace, pools_name) = pools;
    // A list by name, which kvip's own RBAC grants (not get).
    let by_name = ListParams::default().fields(&format!("metadata.name={pools_name}"));
    let pools = match Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        client.clone(),
        pools_namespace,
    )
    .list(&by_name)
    .await
    .map(|list| list.items.into_iter().next())
    {
        Ok(None) => Pools::Absent,
        Ok(Some(map)) => {
            let data = map.data.unwrap_or_default().into_iter().collect();
            Pools::Read(kvip_core::ipam::PoolConfig::from_data(&data))
        }
        Err(e) => Pools::Unreadable(format!(
            "cannot read the pools' ConfigMap {pools_namespace}/{pools_name}: {e}"
        )),
    };
    let plain = ListParams::default();
    let services = Api::<Service>::all(client.clone())
        .list(&plain)
        .await
        .map_err(|source| StatusError::List {
            what: "Services",
            source,
        })?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&plain)
        .await
        .map_err(|source| StatusError::List {
            what: "EndpointSlices",
            source,
        })?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&plain)
        .await
        .map_err(|source| StatusError::List {
            what: "Nodes",
            source,
        })?;
    let leases = Api::<Lease>::all(client.clone())
        .list(&ListParams::default().fields("metadata.namespace!=kube-node-lease"))
        .await
        .map_err(|source| StatusError::List {
            what: "Leases",
            source,
        })?;
    Ok(Snapshot {
        services: services.items.iter().map(service_facts).collect(),
        slices: slices
            .items
            .iter()
            .filter_map(translate::slice_input)
            .collect(),
        nodes: nodes.items.iter().map(translate::node_labels).collect(),
        node_addresses: crate::translate::node_addresses(&nodes.items),
        leases: leases.items.iter().filter_map(lease_facts).collect(),
        instance_namespace: instance_namespace.to_string(),
        // Optional: older clusters have no ServiceCIDRs (ClusterIPs still count).
        service_cidrs: Api::<ServiceCIDR>::all(client.clone())
            .list(&plain)
            .await
            .map(|l| crate::service_network::ranges_of(&l.items))
            .unwrap_or_default(),
        now: translate::wall_now(),
        pools,
    })
}

async fn status(args: &StatusArgs) -> Result<u8, StatusError> {
    let (client, context_namespace) = client(args.kubeconfig.as_deref()).await?;
    let instance_namespace = args
        .instance_namespace
        .clone()
        .or_else(crate::settings::service_account_namespace)
        .unwrap_or_else(|| kvip_core::Config::default().cp_namespace);
    let snapshot = read(
        &client,
        &instance_namespace,
        (&args.pools_namespace, &args.pools_config_map),
    )
    .await?;
    let rules = Rules {
        class: LbClassRule {
            class_only: args.lb_class_only,
            class_name: args.lb_class_name.clone(),
            legacy: args.lb_class_legacy_handling,
        },
        exclude_lb_label: args.exclude_lb_label,
        ipam: args.ipam,
        restrict_to_pools: args.restrict_to_pools,
    };
    // A Service name alone means the context's namespace, as kubectl does.
    let namespace = args
        .namespace
        .clone()
        .or_else(|| args.service.as_ref().map(|_| context_namespace));
    let report = build(&snapshot, &rules).select(namespace.as_deref(), args.service.as_deref());
    match args.output {
        Some(Output::Json) => println!("{}", json(&report)),
        Some(Output::Wide) => print!("{}", table(&report, true)),
        None => print!("{}", table(&report, false)),
    }
    if let (Some(name), true) = (&args.service, report.services.is_empty()) {
        eprintln!(
            "kvip status: no LoadBalancer Service {}/{name} served by kvip",
            namespace.unwrap_or_default()
        );
    }
    Ok(report.exit_code())
}

/// Runs `kvip status`: 0 all served, 1 some Service pending or refused, 2 the cluster could not be read.
pub fn run(args: StatusArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(status(&args)).map_err(|e| format!("{e}")));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kvip status: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::endpoints::EndpointInput;
    use kvip_core::service::LOADBALANCER_IPS_ANNOTATION;

    const SECOND: i64 = 1_000_000;
    const NOW: WallTime = WallTime(1_764_000_000 * SECOND);

    fn service(ns: &str, name: &str, policy: &str, ips: Option<&str>) -> ServiceFacts {
        let mut annotations = BTreeMap::new();
        if let Some(ips) = ips {
            annotations.insert(LOADBALANCER_IPS_ANNOTATION.to_string(), ips.to_string());
        }
        ServiceFacts {
            input: ServiceInput {
                key: ServiceKey::new(ns, name),
                type_: "LoadBalancer".into(),
                annotations,
                external_traffic_policy: Some(policy.into()),
                ports: vec![("TCP".into(), 80)],
                ..ServiceInput::default()
            },
            vip_host: None,
            ingress: vec![],
        }
    }

    fn slice(ns: &str, service: &str, node: &str) -> SliceInput {
        SliceInput {
            service: ServiceKey::new(ns, service),
            slice_name: format!("{service}-abc"),
            address_type: "IPv4".into(),
            endpoints: vec![EndpointInput {
                node_name: Some(node.into()),
                ready: Some(true),
                serving: None,
                terminating: None,
                addresses: vec!["10.244.1.5".into()],
            }],
        }
    }

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32) -> LeaseFacts {
        LeaseFacts {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            record: LeaseRecord {
                holder: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                acquire_time: None,
                renew_time: Some(WallTime(NOW.0 - renewed_secs_ago * SECOND)),
                lease_transitions: Some(0),
                kvip_renewed: None,
            },
        }
    }

    fn instance(node: &str, renewed_secs_ago: i64) -> (LeaseKey, LeaseFacts) {
        let mut facts = lease(node, renewed_secs_ago, 15);
        facts.labels = instances::instance_labels(node, &[LB_ROLE]);
        let key = LeaseKey {
            namespace: "kube-system".into(),
            name: format!("kvip-lb-{node}"),
        };
        (key, facts)
    }

    fn nodes(names: &[&str]) -> Vec<(String, BTreeMap<String, String>)> {
        names
            .iter()
            .map(|n| (n.to_string(), BTreeMap::new()))
            .collect()
    }

    /// The seed's broken layout: kvip only on cp1, the pod on worker1.
    fn broken_layout() -> Snapshot {
        Snapshot {
            services: vec![service("shop", "web", "Local", Some("10.77.0.150"))],
            slices: vec![slice("shop", "web", "worker1")],
            nodes: nodes(&["cp1", "worker1", "worker2"]),
            node_addresses: BTreeMap::from([(
                "10.77.0.12".parse().expect("an IP"),
                "worker2".to_string(),
            )]),
            leases: [instance("cp1", 1)].into_iter().collect(),
            instance_namespace: "kube-system".into(),
            service_cidrs: vec!["10.96.0.0/12".into()],
            now: NOW,
            pools: Pools::Absent,
        }
    }

    #[test]
    fn the_exclusion_label_counts_only_when_kvip_honours_it() {
        let mut snapshot = broken_layout();
        snapshot.slices = vec![slice("shop", "web", "cp1")];
        for (name, labels) in &mut snapshot.nodes {
            if name == "cp1" {
                labels.insert(
                    kvip_core::candidacy::EXCLUDE_LB_LABEL.to_string(),
                    String::new(),
                );
            }
        }
        // By default the label is ignored, as kube-vip ignores it.
        let report = build(&snapshot, &Rules::default());
        assert_eq!(report.services[0].candidates, ["cp1"]);
        assert_eq!(
            report.labelled,
            [LabelledNode {
                node: "cp1".into(),
                excluded: false
            }]
        );
        let text = table(&report, false);
        assert!(text.contains("still announce Service VIPs"), "{text}");
        assert!(!text.contains("Nodes excluded"), "{text}");

        let honoured = Rules {
            exclude_lb_label: true,
            ..Rules::default()
        };
        let report = build(&snapshot, &honoured);
        let reason = report.services[0].reason.as_ref().expect("pending");
        assert_eq!(reason.code, "AllCandidatesExcluded");
        assert!(reason.message.contains("cp1"), "{}", reason.message);
        assert!(report.labelled[0].excluded);
        let text = table(&report, false);
        assert!(
            text.contains("Nodes excluded from announcing Service VIPs")
                && text.contains("kvip_exclude_lb_label=true): cp1"),
            "{text}"
        );
        assert!(json(&report).contains("\"labelled\""));
    }

    #[test]
    fn an_instance_lease_outside_kvips_namespace_does_not_count() {
        let mut snapshot = broken_layout();
        let (key, facts) = instance("worker1", 1);
        let forged = LeaseKey {
            namespace: "tenant".into(),
            ..key
        };
        snapshot.leases.insert(forged, facts);
        let report = build(&snapshot, &Rules::default());
        assert!(
            report
                .instances
                .iter()
                .any(|i| i.node == "worker1" && !i.live),
            "{:?}",
            report.instances
        );
        assert_eq!(
            report.services[0].reason.as_ref().map(|r| r.code.as_str()),
            Some("EndpointsOnNodesWithoutKvip")
        );
    }

    #[test]
    fn a_lease_is_live_until_renew_plus_duration_plus_tolerance() {
        let l = lease("w1", 0, 5).record;
        assert_eq!(live_holder(&l, NOW), Some("w1"));
        let l = lease("w1", 6, 5).record;
        assert_eq!(live_holder(&l, NOW), Some("w1"), "within the tolerance");
        let l = lease("w1", 8, 5).record;
        assert_eq!(live_holder(&l, NOW), None);
        let mut released = lease("", 0, 5).record;
        assert_eq!(live_holder(&released, NOW), None);
        released.holder = None;
        assert_eq!(live_holder(&released, NOW), None);
        let mut never = lease("w1", 0, 5).record;
        never.renew_time = None;
        assert_eq!(live_holder(&never, NOW), None);
    }

    #[test]
    fn a_node_that_cannot_place_the_address_is_no_candidate_and_status_says_why() {
        let mut snapshot = broken_layout();
        let (key, mut facts) = instance("worker1", 1);
        let problems = BTreeMap::from([(
            "10.77.0.150".parse().expect("an IP"),
            "interface \"bond0\" does not exist on this node".to_string(),
        )]);
        facts.annotations.insert(
            placement::PLACEMENT_ANNOTATION.into(),
            placement::encode(&problems),
        );
        snapshot.leases.insert(key, facts);
        let report = build(&snapshot, &Rules::default());
        let web = &report.services[0];
        assert_eq!(web.state, State::Pending);
        let reason = web.reason.as_ref().expect("a reason");
        assert_eq!(reason.code, "NoUsableInterface");
        assert!(
            reason.message.contains("worker1") && reason.message.contains("bond0"),
            "{}",
            reason.message
        );
        let text = table(&report, false);
        assert!(
            text.contains("worker1: interface \"bond0\" does not exist on this node (10.77.0.150)"),
            "{text}"
        );
        assert!(json(&report).contains("placement_problems"));
    }

    #[test]
    fn the_broken_layout_is_pending_naming_the_worker_and_exits_1() {
        let report = build(&broken_layout(), &Rules::default());
        let web = &report.services[0];
        assert_eq!(web.state, State::Pending);
        let reason = web.reason.as_ref().expect("a reason");
        assert_eq!(reason.code, "EndpointsOnNodesWithoutKvip");
        assert!(reason.message.contains("worker1"), "{}", reason.message);
        assert!(web.candidates.is_empty());
        assert_eq!(web.lease.as_deref(), Some("shop/kubevip-web"));
        assert_eq!(report.exit_code(), 1);
        assert_eq!(report.nodes_without_lb(), ["worker1", "worker2"]);
        let live: Vec<(&str, bool)> = report
            .instances
            .iter()
            .map(|i| (i.node.as_str(), i.live))
            .collect();
        assert_eq!(
            live,
            [("cp1", true), ("worker1", false), ("worker2", false)]
        );
    }

    #[test]
    fn with_kvip_everywhere_the_holder_announces_and_exits_0() {
        let mut snapshot = broken_layout();
        snapshot
            .leases
            .extend([instance("worker1", 2), instance("worker2", 3)]);
        snapshot.leases.insert(
            LeaseKey {
                namespace: "shop".into(),
                name: "kubevip-web".into(),
            },
            lease("worker1", 1, 5),
        );
        snapshot.services[0].vip_host = Some("worker1".into());
        let report = build(&snapshot, &Rules::default());
        let web = &report.services[0];
        assert_eq!(web.state, State::Announced);
        assert_eq!(web.announcer.as_deref(), Some("worker1"));
        assert_eq!(web.candidates, ["worker1"]);
        assert_eq!(web.reason, None);
        assert_eq!(report.exit_code(), 0);
        assert!(report.nodes_without_lb().is_empty());
    }

    #[test]
    fn a_shared_address_another_daemon_answers_for_is_named_with_its_lease() {
        let mut snapshot = broken_layout();
        snapshot
            .leases
            .extend([instance("worker1", 2), instance("worker2", 3)]);
        let mut other = service("shop", "www", "Cluster", Some("10.77.0.150"));
        other.input.ports = vec![("TCP".into(), 81)];
        snapshot.services.push(other);
        snapshot.slices.push(slice("shop", "www", "worker1"));
        let key = |name: &str| LeaseKey {
            namespace: "shop".into(),
            name: name.into(),
        };
        let mut web = lease("worker1", 1, 5);
        web.record.kvip_renewed = web.record.renew_time;
        snapshot.leases.insert(key("kubevip-web"), web);
        // kube-vip on worker2 renewed www's Lease: kvip's stamp is stale.
        let mut www = lease("worker2", 1, 5);
        www.record.kvip_renewed = Some(WallTime(NOW.0 - 60 * SECOND));
        snapshot.leases.insert(key("kubevip-www"), www.clone());
        let report = build(&snapshot, &Rules::default());
        for row in &report.services {
            assert_eq!(row.announcer.as_deref(), Some("worker2"), "{row:?}");
            let reason = row.reason.as_ref().expect("a reason");
            assert_eq!(reason.code, FOREIGN_HOLDER);
            assert!(
                reason.message.contains("shop/kubevip-www"),
                "{}",
                reason.message
            );
        }
        // The same Lease as kvip wrote it last: kvip's own, no reason.
        www.record.kvip_renewed = www.record.renew_time;
        snapshot.leases.insert(key("kubevip-www"), www);
        let report = build(&snapshot, &Rules::default());
        assert!(report.services.iter().all(|r| r.reason.is_none()));
    }

    #[test]
    fn in_membership_mode_the_claim_of_a_live_member_names_the_announcer() {
        let mut snapshot = broken_layout();
        snapshot
            .leases
            .extend([instance("worker1", 2), instance("worker2", 3)]);
        snapshot.services[0].vip_host = Some("worker1".into());
        let report = build(&snapshot, &Rules::default());
        let web = &report.services[0];
        assert_eq!(web.state, State::Announced);
        assert_eq!(web.announcer.as_deref(), Some("worker1"));
        assert_eq!(web.lease.as_deref(), Some(MEMBERSHIP));
        // The claimant's membership ran out: nobody announces it yet.
        let mut snapshot = broken_layout();
        snapshot.leases.extend([instance("worker1", 60)]);
        snapshot.services[0].vip_host = Some("worker1".into());
        let report = build(&snapshot, &Rules::default());
        assert_eq!(report.services[0].announcer, None);
        assert_ne!(report.services[0].state, State::Announced);
    }

    #[test]
    fn an_expired_holder_is_electing_not_announced() {
        let mut snapshot = broken_layout();
        snapshot.leases.extend([instance("worker1", 2)]);
        snapshot.leases.insert(
            LeaseKey {
                namespace: "shop".into(),
                name: "kubevip-web".into(),
            },
            lease("worker2", 60, 5),
        );
        let report = build(&snapshot, &Rules::default());
        assert_eq!(report.services[0].state, State::Electing);
        assert_eq!(report.services[0].announcer, None);
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn refused_input_has_invalid_input_and_the_text_as_written() {
        let mut snapshot = broken_layout();
        snapshot
            .services
            .push(service("shop", "bad", "Local", Some("10.77.0.x")));
        let report = build(&snapshot, &Rules::default());
        let bad = report
            .services
            .iter()
            .find(|s| s.name == "bad")
            .expect("listed");
        assert_eq!(bad.state, State::Refused);
        assert_eq!(bad.addresses, ["10.77.0.x"]);
        let reason = bad.reason.as_ref().expect("a reason");
        assert_eq!(reason.code, INVALID_INPUT);
        assert!(reason.message.contains("10.77.0.x"), "{}", reason.message);
    }

    #[test]
    fn services_that_are_not_kvips_are_not_listed() {
        let mut snapshot = broken_layout();
        let mut other = service("shop", "metallb", "Cluster", Some("10.77.0.160"));
        other.input.load_balancer_class = Some("metallb.io/metallb".into());
        let mut plain = service("shop", "internal", "Cluster", None);
        plain.input.type_ = "ClusterIP".into();
        snapshot.services.extend([other, plain]);
        let report = build(&snapshot, &Rules::default());
        let names: Vec<&str> = report.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        let class_only = Rules {
            class: LbClassRule {
                class_only: true,
                ..LbClassRule::default()
            },
            ..Rules::default()
        };
        assert!(build(&snapshot, &class_only).services.is_empty());
        // Without legacy handling a class-less Service is another load balancer's.
        let exact = Rules {
            class: LbClassRule {
                legacy: false,
                ..LbClassRule::default()
            },
            ..Rules::default()
        };
        assert!(build(&snapshot, &exact).services.is_empty());
    }

    #[test]
    fn select_filters_by_namespace_and_name_and_drives_the_exit_code() {
        let mut snapshot = broken_layout();
        snapshot.leases.extend([instance("worker1", 2)]);
        snapshot
            .services
            .push(service("other", "web", "Cluster", None));
        let report = build(&snapshot, &Rules::default());
        assert_eq!(report.services.len(), 2);
        let other = report.clone().select(Some("other"), None);
        assert_eq!(other.services.len(), 1);
        assert_eq!(
            other.services[0].reason.as_ref().map(|r| r.code.as_str()),
            Some("NoAddress")
        );
        let shop = report.select(Some("shop"), Some("web"));
        assert_eq!(shop.services.len(), 1);
        assert_eq!(shop.services[0].state, State::Electing);
        assert_eq!(shop.exit_code(), 0);
    }

    #[test]
    fn a_conflicting_address_in_another_namespace_is_pending() {
        let mut snapshot = broken_layout();
        snapshot.leases.extend([instance("worker1", 2)]);
        snapshot
            .services
            .push(service("zoo", "web", "Cluster", Some("10.77.0.150")));
        let report = build(&snapshot, &Rules::default());
        let zoo = report.clone().select(Some("zoo"), None);
        assert_eq!(
            zoo.services[0].reason.as_ref().map(|r| r.code.as_str()),
            Some("AddressConflict")
        );
    }

    #[test]
    fn global_lease_is_used_for_cluster_groups_without_their_own() {
        let mut snapshot = broken_layout();
        snapshot.services = vec![service("shop", "api", "Cluster", Some("10.77.0.151"))];
        snapshot.slices = vec![slice("shop", "api", "worker2")];
        snapshot.leases.insert(
            LeaseKey {
                namespace: "kube-system".into(),
                name: "plndr-svcs-lock".into(),
            },
            lease("cp1", 1, 5),
        );
        let report = build(&snapshot, &Rules::default());
        let api = &report.services[0];
        assert_eq!(api.lease.as_deref(), Some("kube-system/plndr-svcs-lock"));
        assert_eq!(api.announcer.as_deref(), Some("cp1"));
        assert_eq!(api.state, State::Announced);
    }

    #[test]
    fn a_nodes_own_address_is_pending_as_the_daemon_says() {
        let mut snapshot = broken_layout();
        snapshot.leases.extend([instance("worker1", 2)]);
        snapshot
            .services
            .push(service("shop", "stolen", "Cluster", Some("10.77.0.12")));
        snapshot.slices.push(slice("shop", "stolen", "worker1"));
        let report = build(&snapshot, &Rules::default()).select(None, Some("stolen"));
        let stolen = &report.services[0];
        assert_eq!(stolen.state, State::Pending);
        let reason = stolen.reason.as_ref().expect("a reason");
        assert_eq!(reason.code, "AddressInUse");
        assert!(reason.message.contains("worker2"), "{}", reason.message);
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn an_electing_row_points_at_the_events() {
        let mut report = sample();
        report.services[1].state = State::Electing;
        report.services[1].announcer = None;
        let text = table(&report, false);
        assert!(text.contains(ELECTING_HINT), "{text}");
    }

    fn sample() -> Report {
        Report {
            services: vec![
                ServiceRow {
                    namespace: "shop".into(),
                    name: "web".into(),
                    addresses: vec!["10.77.0.150".into()],
                    policy: "Local".into(),
                    lease: Some("shop/kubevip-web".into()),
                    announcer: None,
                    candidates: vec![],
                    state: State::Pending,
                    reason: Some(Reason {
                        code: "EndpointsOnNodesWithoutKvip".into(),
                        message: "deploy kvip to worker1".into(),
                    }),
                    vip_host: None,
                    ingress: vec![],
                },
                ServiceRow {
                    namespace: "shop".into(),
                    name: "api".into(),
                    addresses: vec!["10.77.0.151".into(), "fd00::151".into()],
                    policy: "Cluster".into(),
                    lease: Some("shop/kubevip-api".into()),
                    announcer: Some("worker2".into()),
                    candidates: vec!["worker1".into(), "worker2".into()],
                    state: State::Announced,
                    reason: None,
                    vip_host: Some("worker1".into()),
                    ingress: vec!["10.77.0.151".into()],
                },
            ],
            instances: vec![
                InstanceRow {
                    node: "cp1".into(),
                    roles: vec!["lb".into()],
                    live: true,
                    renewed_ago: Some(Duration::from_secs(3)),
                    placement_problems: vec![],
                },
                InstanceRow {
                    node: "worker1".into(),
                    roles: vec![],
                    live: false,
                    renewed_ago: None,
                    placement_problems: vec![],
                },
            ],
            labelled: Vec::new(),
            pools: Vec::new(),
            pool_problems: Vec::new(),
        }
    }

    #[test]
    fn the_table_has_aligned_columns_and_names_the_missing_nodes() {
        let text = table(&sample(), false);
        let expected = "\
NAMESPACE/NAME   VIP(S)                  POLICY    ANNOUNCER                    CANDIDATES        STATE       REASON
shop/web         10.77.0.150             Local     -                            -                 pending     EndpointsOnNodesWithoutKvip: deploy kvip to worker1
shop/api         10.77.0.151,fd00::151   Cluster   worker2 (vipHost: worker1)   worker1,worker2   announced   -

NODE      KVIP ROLES   LIVE          RENEWED
cp1       lb           yes           3s ago
worker1   -            no instance   -

Nodes without a live kvip lb instance (no Service VIP can be announced from them): worker1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_wide_table_adds_lease_and_ingress() {
        let text = table(&sample(), true);
        let header = text.lines().next().unwrap_or_default();
        assert!(
            header.contains("STATE       LEASE              INGRESS       REASON"),
            "{header}"
        );
        assert!(
            text.contains("shop/kubevip-api   10.77.0.151   -"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_cluster_says_so() {
        let text = table(&Report::default(), false);
        assert!(text.starts_with("No LoadBalancer Services served by kvip."));
    }

    #[test]
    fn the_json_document_is_stable() {
        let value: serde_json::Value = serde_json::from_str(&json(&sample())).expect("valid JSON");
        let expected = serde_json::json!({
            "services": [
                {
                    "namespace": "shop", "name": "web", "addresses": ["10.77.0.150"],
                    "policy": "Local", "lease": "shop/kubevip-web", "announcer": null,
                    "candidates": [], "state": "pending",
                    "reason": { "code": "EndpointsOnNodesWithoutKvip", "message": "deploy kvip to worker1" }
                },
                {
                    "namespace": "shop", "name": "api", "addresses": ["10.77.0.151", "fd00::151"],
                    "policy": "Cluster", "lease": "shop/kubevip-api", "announcer": "worker2",
                    "candidates": ["worker1", "worker2"], "state": "announced", "reason": null
                }
            ],
            "instances": [
                { "node": "cp1", "roles": ["lb"], "live": true },
                { "node": "worker1", "roles": [], "live": false }
            ]
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(300)), "5m");
        assert_eq!(age(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(age(Duration::from_secs(3 * 86_400)), "3d");
    }

    #[test]
    fn the_class_default_is_kube_vips() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StatusArgs,
        }
        let cli = Cli::try_parse_from(["status"]).expect("parses");
        assert_eq!(cli.args.lb_class_name, LbClassRule::default().class_name);
        assert!(!cli.args.lb_class_only);
        let cli =
            Cli::try_parse_from(["status", "--lb-class-only", "-o", "json", "-n", "x", "web"])
                .expect("parses");
        assert!(cli.args.lb_class_only);
        assert_eq!(cli.args.output, Some(Output::Json));
        assert_eq!(cli.args.service.as_deref(), Some("web"));
        let cli = Cli::try_parse_from(["status", "--lb-class-only=F"]).expect("parses");
        assert!(!cli.args.lb_class_only);
    }
}
