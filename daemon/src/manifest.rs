//! `kvip manifest`: the DaemonSet, RBAC and admission policy objects that run
//! kvip, built from k8s-openapi types and printed as YAML. Flags are checked
//! with the same `Config::from_env` that `kvip manager` runs at start-up, so a
//! manifest is refused for exactly the values the daemon would refuse.

mod access;
mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccount, Toleration,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role as NamespacedRole, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kvip_core::config::{Config, ConfigProblem};
use serde::Serialize;

/// The value of the name label on every kvip object.
const APP: &str = "kvip";

/// The label every kvip object carries; the component label tells the roles apart.
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Which of the two instances (or the single combined one) a DaemonSet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The control-plane VIP, on control-plane nodes only (`kvip-cp`, metrics on 2112).
    Cp,
    /// Service load balancing, on every node (`kvip-lb`, metrics on 2113).
    Lb,
    /// Both roles in one DaemonSet on every node (`kvip`, metrics on 2112).
    All,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Cp => "cp",
            Role::Lb => "lb",
            Role::All => "all",
        }
    }

    fn daemonset_name(self) -> &'static str {
        match self {
            Role::Cp => "kvip-cp",
            Role::Lb => "kvip-lb",
            Role::All => "kvip",
        }
    }

    /// The DaemonSet's ServiceAccount, and its roles, bindings and admission
    /// policy: one account per DaemonSet, named like it.
    fn account(self) -> &'static str {
        self.daemonset_name()
    }

    fn control_plane(self) -> bool {
        matches!(self, Role::Cp | Role::All)
    }

    fn services(self) -> bool {
        matches!(self, Role::Lb | Role::All)
    }

    /// Distinct ports let both instances share a node's network namespace.
    fn default_metrics_port(self) -> u16 {
        match self {
            Role::Cp | Role::All => 2112,
            Role::Lb => 2113,
        }
    }
}

impl FromStr for Role {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cp" => Ok(Role::Cp),
            "lb" => Ok(Role::Lb),
            "all" => Ok(Role::All),
            other => Err(ManifestError::single(
                "--role",
                format!(
                    "{other:?} is not a role; use cp (control-plane VIP), \
                     lb (Service VIPs) or all (both in one DaemonSet)"
                ),
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `kvip manifest` is asked for; each field names the flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    /// `--role`: which instance the DaemonSet runs.
    pub role: Role,
    /// `--namespace`: where the DaemonSet, ServiceAccount and control-plane Lease live.
    pub namespace: String,
    /// `--image`: the container image; its entrypoint must be the kvip binary.
    pub image: String,
    /// `--interface` (`vip_interface`): where VIPs go; unset picks by subnet or default route.
    pub interface: Option<String>,
    /// `--services-interface` (`vip_servicesinterface`): Service VIPs elsewhere than `interface`.
    pub services_interface: Option<String>,
    /// `--address` (`address`): the control-plane VIP; roles cp and all need
    /// it, and role lb refuses Services asking for it.
    pub address: Option<String>,
    /// `--port` (`port`): the API server port behind the control-plane VIP.
    pub port: u16,
    /// `--lease-duration` (`vip_leaseduration`), seconds.
    pub lease_duration: u32,
    /// `--renew-deadline` (`vip_renewdeadline`), seconds.
    pub renew_deadline: u32,
    /// `--retry-period` (`vip_retryperiod`), seconds.
    pub retry_period: u32,
    /// `--arp-rate` (`vip_arpRate`): gratuitous ARP/NA refresh period, milliseconds.
    pub arp_rate_ms: u32,
    /// `--svc-election` (`svc_election`): one Lease per Service address, needed for Local policy.
    pub svc_election: bool,
    /// `--lb-class-only` (`lb_class_only`): ignore Services without a loadBalancerClass.
    pub lb_class_only: bool,
    /// `--lb-class-name` (`lb_class_name`): the loadBalancerClass kvip answers to.
    pub lb_class_name: Option<String>,
    /// `--service-namespace` (`svc_namespace`): watch Services in one namespace only.
    pub service_namespace: Option<String>,
    /// `--metrics-port`: Prometheus and health probes; `None` is 2112 (cp, all) or 2113 (lb).
    pub metrics_port: Option<u16>,
    /// `--log-level` (`vip_loglevel`): a slog level as kube-vip 1.x reads
    /// it: -4 debug, 0 info, 4 warn, 8 error.
    pub log_level: i32,
    /// `--env NAME=VALUE`: extra variables; one named like a generated variable replaces it.
    pub extra_env: Vec<(String, String)>,
    /// `--admission-policy`: print the ValidatingAdmissionPolicy and its
    /// binding with the RBAC (clusters before Kubernetes 1.30 lack the API).
    pub admission_policy: bool,
}

impl ManifestOptions {
    /// The recommended settings for `role`: kube-vip's defaults, kube-system, this version's image.
    pub fn new(role: Role) -> Self {
        ManifestOptions {
            role,
            namespace: "kube-system".to_string(),
            image: concat!("ghcr.io/kvip/kvip:", env!("CARGO_PKG_VERSION")).to_string(),
            interface: None,
            services_interface: None,
            address: None,
            port: 6443,
            lease_duration: 5,
            renew_deadline: 3,
            retry_period: 1,
            arp_rate_ms: 3000,
            svc_election: true,
            lb_class_only: false,
            lb_class_name: None,
            service_namespace: None,
            metrics_port: None,
            log_level: 0,
            extra_env: Vec::new(),
            admission_policy: true,
        }
    }

    fn metrics_port(&self) -> u16 {
        self.metrics_port
            .unwrap_or_else(|| self.role.default_metrics_port())
    }
}

/// One flag whose value a manifest cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagProblem {
    /// The flag, such as `--interface`.
    pub flag: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for FlagProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

/// Why no manifest was printed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Flags with values the daemon would refuse, all of them, one per line.
    #[error("{}", lines(.problems))]
    InvalidFlags {
        /// The refused flags, in the order they were checked.
        problems: Vec<FlagProblem>,
    },
    /// An object could not be written as YAML (a bug, not a user error).
    #[error("cannot write the {kind} as YAML: {source}")]
    Yaml {
        /// The object's kind.
        kind: &'static str,
        /// The serialiser's error.
        source: serde_norway::Error,
    },
}

impl ManifestError {
    fn single(flag: &'static str, message: String) -> Self {
        ManifestError::InvalidFlags {
            problems: vec![FlagProblem { flag, message }],
        }
    }
}

fn lines(problems: &[FlagProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Where a container variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A literal value.
    Value(String),
    /// A pod field the kubelet fills in (`valueFrom.fieldRef`).
    Field(&'static str),
}

/// One variable of the container's environment and the flag that decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    name: String,
    source: Source,
    flag: &'static str,
}

fn value(name: &str, flag: &'static str, value: impl ToString) -> Setting {
    Setting {
        name: name.to_string(),
        source: Source::Value(value.to_string()),
        flag,
    }
}

fn field(name: &str, path: &'static str) -> Setting {
    Setting {
        name: name.to_string(),
        source: Source::Field(path),
        flag: "--env",
    }
}

/// The container's environment in kube-vip's names; both `validate` and the
/// DaemonSet read it, so what is checked is what is deployed.
fn settings(opts: &ManifestOptions) -> Vec<Setting> {
    let role = opts.role;
    let mut env = vec![
        value("vip_arp", "--role", true),
        value("port", "--port", opts.port),
    ];
    if let Some(interface) = &opts.interface {
        env.push(value("vip_interface", "--interface", interface));
    }
    if let Some(interface) = &opts.services_interface {
        env.push(value(
            "vip_servicesinterface",
            "--services-interface",
            interface,
        ));
    }
    env.push(field("vip_nodename", "spec.nodeName"));
    // Also on for the Service role: with svc_election off, kube-vip's rule is
    // one global leader rather than every node answering for every VIP.
    env.push(value("vip_leaderelection", "--role", true));
    if role.control_plane() {
        env.push(value("vip_leasename", "--role", "plndr-cp-lock"));
    }
    env.extend([
        value("vip_leaseduration", "--lease-duration", opts.lease_duration),
        value("vip_renewdeadline", "--renew-deadline", opts.renew_deadline),
        value("vip_retryperiod", "--retry-period", opts.retry_period),
        value("cp_enable", "--role", role.control_plane()),
        value("cp_namespace", "--namespace", &opts.namespace),
        value("svc_enable", "--role", role.services()),
    ]);
    if role.services() {
        env.push(value("svc_election", "--svc-election", opts.svc_election));
        if let Some(namespace) = &opts.service_namespace {
            env.push(value("svc_namespace", "--service-namespace", namespace));
        }
        env.push(value(
            "lb_class_only",
            "--lb-class-only",
            opts.lb_class_only,
        ));
        if let Some(class) = &opts.lb_class_name {
            env.push(value("lb_class_name", "--lb-class-name", class));
        }
    }
    // The lb role refuses Services that ask for the control-plane VIP.
    if let Some(address) = &opts.address {
        env.push(value("address", "--address", address));
    }
    env.extend([
        value(
            "prometheus_server",
            "--metrics-port",
            format!(":{}", opts.metrics_port()),
        ),
        value("vip_arpRate", "--arp-rate", opts.arp_rate_ms),
        value("vip_loglevel", "--log-level", opts.log_level),
        field("POD_NAMESPACE", "metadata.namespace"),
    ]);
    for (name, extra) in &opts.extra_env {
        let setting = value(name, "--env", extra);
        match env.iter_mut().find(|s| s.name == *name) {
            Some(existing) => *existing = setting,
            None => env.push(setting),
        }
    }
    env
}

/// Checks every flag and reports all problems at once, as `kvip manager` does.
pub fn validate(opts: &ManifestOptions) -> Result<(), ManifestError> {
    checked(opts).map(|_| ())
}

/// [`validate`], returning the configuration `kvip manager` will read.
fn checked(opts: &ManifestOptions) -> Result<Config, ManifestError> {
    let mut problems = Vec::new();
    let mut refuse = |flag: &'static str, message: String| {
        problems.push(FlagProblem { flag, message });
    };

    if opts.image.trim().is_empty() || opts.image.chars().any(char::is_whitespace) {
        refuse(
            "--image",
            format!(
                "{:?} is not an image reference, such as ghcr.io/kvip/kvip:{}",
                opts.image,
                env!("CARGO_PKG_VERSION")
            ),
        );
    }
    if let Some(rule) = dns_label_rule(&opts.namespace) {
        refuse(
            "--namespace",
            format!("{:?} is not a namespace name: {rule}", opts.namespace),
        );
    }
    if opts.metrics_port == Some(0) {
        refuse(
            "--metrics-port",
            "0 is not a port; the health probes need one from 1 to 65535".to_string(),
        );
    }
    // Flags the role would silently ignore are refused, so nobody believes
    // a Service setting reached the control-plane instance or the reverse.
    if !opts.role.control_plane() && opts.address.is_some() {
        refuse(
            "--address",
            format!(
                "the control-plane VIP is announced by roles cp and all, not {}",
                opts.role
            ),
        );
    }
    if !opts.role.services() {
        let service_flags = [
            ("--services-interface", opts.services_interface.is_some()),
            ("--service-namespace", opts.service_namespace.is_some()),
            ("--lb-class-only", opts.lb_class_only),
            ("--lb-class-name", opts.lb_class_name.is_some()),
        ];
        for (flag, set) in service_flags {
            if set {
                refuse(
                    flag,
                    format!(
                        "Service settings apply to roles lb and all, not {}",
                        opts.role
                    ),
                );
            }
        }
    }
    for (name, _) in &opts.extra_env {
        if let Some(rule) = env_name_rule(name) {
            refuse("--env", format!("{name:?} is not a variable name: {rule}"));
        }
        // The probes follow the metrics port, so it has one way in.
        if name == "prometheus_server" {
            refuse(
                "--env",
                "prometheus_server also serves the health probes; set it with --metrics-port"
                    .to_string(),
            );
        }
    }

    let settings = settings(opts);
    let vars: BTreeMap<String, String> = settings
        .iter()
        .filter_map(|s| match &s.source {
            Source::Value(v) => Some((s.name.clone(), v.clone())),
            Source::Field(_) => None,
        })
        .collect();
    let config = match Config::from_env(&vars) {
        Ok((config, _)) => Some(config),
        Err(err) => {
            for problem in err.problems {
                let flag = flag_for(&settings, variable_of(&problem));
                let message = match problem {
                    ConfigProblem::ControlPlaneWithoutAddress => format!(
                        "role {} announces the control-plane VIP, so it needs one, \
                         such as --address 192.168.1.10",
                        opts.role
                    ),
                    other => other.to_string(),
                };
                refuse(flag, message);
            }
            None
        }
    };

    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ManifestError::InvalidFlags { problems }),
    }
}

/// The variable a core configuration problem is about.
fn variable_of(problem: &ConfigProblem) -> &str {
    match problem {
        ConfigProblem::InvalidBool { variable, .. }
        | ConfigProblem::InvalidSeconds { variable, .. }
        | ConfigProblem::InvalidInterface { variable, .. }
        | ConfigProblem::InvalidPort { variable, .. }
        | ConfigProblem::InvalidAddress { variable, .. }
        | ConfigProblem::InvalidSubnet { variable, .. }
        | ConfigProblem::UnknownKvipVariable { variable, .. } => variable,
        // Name the longer timing of the first pair that is out of order.
        ConfigProblem::LeaseTimingOrder { lease, renew, .. } if lease <= renew => {
            "vip_leaseduration"
        }
        ConfigProblem::LeaseTimingOrder { .. } => "vip_renewdeadline",
        ConfigProblem::InvalidArpRate { .. } => "vip_arpRate",
        ConfigProblem::InvalidLogLevel { .. } => "vip_loglevel",
        ConfigProblem::InvalidLeaseName { variable, .. }
        | ConfigProblem::InvalidObjectName { variable, .. } => variable,
        ConfigProblem::InvalidDnsMode { .. } => "dns_mode",
        ConfigProblem::InvalidLogFormat { .. } => "kvip_log_format",
        ConfigProblem::InvalidProbeWait { .. } => "kvip_probe_ms",
        ConfigProblem::InvalidApiBudget { variable, .. } => variable,
        ConfigProblem::InvalidPrometheusServer { .. } => "prometheus_server",
        ConfigProblem::ControlPlaneWithoutAddress => "address",
        ConfigProblem::IpamNeedsEveryNamespace => "kvip_ipam",
    }
}

/// The flag behind a variable: the one that wrote it, else `--env`.
fn flag_for(settings: &[Setting], variable: &str) -> &'static str {
    match settings.iter().find(|s| s.name == variable) {
        Some(setting) => setting.flag,
        None if variable == "address" || variable == "vip_address" => "--address",
        None => "--env",
    }
}

/// The RFC 1123 label rule a namespace name breaks, if any.
fn dns_label_rule(name: &str) -> Option<&'static str> {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() || name.len() > 63 {
        Some("it must be 1 to 63 characters long")
    } else if !name.chars().all(|c| alphanumeric(c) || c == '-') {
        Some("it may contain only lower-case letters, digits and '-'")
    } else if !name.starts_with(alphanumeric) || !name.ends_with(alphanumeric) {
        Some("it must start and end with a letter or digit")
    } else {
        None
    }
}

/// The rule an environment variable name breaks, if any (the classic
/// Kubernetes rule, which every supported API server accepts).
fn env_name_rule(name: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if name.is_empty() {
        Some("it is empty; write NAME=VALUE")
    } else if !name.chars().all(allowed) {
        Some("it may contain only letters, digits, '-', '.' and '_'")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some("it cannot start with a digit")
    } else {
        None
    }
}

fn labels(role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            role.as_str().to_string(),
        ),
    ])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn env_var(setting: &Setting) -> EnvVar {
    match &setting.source {
        Source::Value(v) => EnvVar {
            name: setting.name.clone(),
            value: Some(v.clone()),
            ..Default::default()
        },
        Source::Field(path) => EnvVar {
            name: setting.name.clone(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// An HTTP probe on the metrics port; with host networking that is the node's port.
fn probe(path: &str, port: u16, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn toleration(key: Option<&str>, effect: &str) -> Toleration {
    Toleration {
        key: key.map(str::to_string),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    }
}

/// Control-plane nodes only (tolerating the old `master` taint too; its label
/// is not selected, the API server warns about it); any other role runs on
/// every node, control-plane nodes included, so their pods are served.
fn placement(role: Role) -> (Option<Affinity>, Vec<Toleration>) {
    const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
    const MASTER: &str = "node-role.kubernetes.io/master";
    if role != Role::Cp {
        let tolerations = vec![
            toleration(None, "NoSchedule"),
            toleration(None, "NoExecute"),
        ];
        return (None, tolerations);
    }
    let control_plane_nodes = NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: CONTROL_PLANE.to_string(),
            operator: "Exists".to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![control_plane_nodes],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tolerations = vec![
        toleration(Some(CONTROL_PLANE), "NoSchedule"),
        toleration(Some(MASTER), "NoSchedule"),
    ];
    (Some(affinity), tolerations)
}

fn build_daemonset(opts: &ManifestOptions) -> DaemonSet {
    let role = opts.role;
    let metrics_port = opts.metrics_port();
    let (affinity, tolerations) = placement(role);
    let container = Container {
        name: "kvip".to_string(),
        image: Some(opts.image.clone()),
        args: Some(strings(&["manager"])),
        env: Some(settings(opts).iter().map(env_var).collect()),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_string()),
            container_port: i32::from(metrics_port),
            host_port: Some(i32::from(metrics_port)),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", metrics_port, 10)),
        readiness_probe: Some(probe("/readyz", metrics_port, 5)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".to_string())),
                ("memory".to_string(), Quantity("32Mi".to_string())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("128Mi".to_string()),
            )])),
            ..Default::default()
        }),
        // Root with two capabilities: addresses (NET_ADMIN) and raw ARP/NA (NET_RAW).
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN", "NET_RAW"])),
                drop: Some(strings(&["ALL"])),
            }),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(role.daemonset_name().to_string()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(labels(role)),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(role)),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(role)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    service_account_name: Some(role.account().to_string()),
                    priority_class_name: Some("system-node-critical".to_string()),
                    // Long enough to withdraw each VIP and release its Lease.
                    termination_grace_period_seconds: Some(10),
                    affinity,
                    tolerations: Some(tolerations),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Metadata of `role`'s access objects: named after its account.
fn access_meta(role: Role, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(role.account().to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(role)),
        ..Default::default()
    }
}

fn yaml<T: Serialize>(kind: &'static str, object: &T) -> Result<String, ManifestError> {
    serde_norway::to_string(object).map_err(|source| ManifestError::Yaml { kind, source })
}

/// What the access objects of one role are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccessInput {
    role: Role,
    names: access::Names,
    /// `vip_leasename` and `svc_leasename` as the role uses them.
    lease_names: Vec<String>,
    admission_policy: bool,
}

impl AccessInput {
    /// The names `config` gives `role`, its DaemonSet in `namespace`.
    fn new(role: Role, namespace: &str, config: &Config, admission_policy: bool) -> Self {
        let mut lease_names = Vec::new();
        if role.control_plane() {
            lease_names.push(config.vip_leasename.clone());
        }
        if role.services() {
            lease_names.push(config.svc_leasename.clone());
        }
        AccessInput {
            role,
            names: access::Names {
                namespace: namespace.to_string(),
                cp_namespace: config.cp_lease().namespace,
                cp_lease: config.vip_leasename.clone(),
                pools: (config.ipam || config.restrict_to_pools).then(|| {
                    (
                        config.ipam_namespace.clone(),
                        config.ipam_config_map.clone(),
                    )
                }),
            },
            lease_names,
            admission_policy,
        }
    }
}

/// The ServiceAccount, its ClusterRole and Roles with their bindings, and
/// the admission policy with its binding, one YAML document each.
fn access_documents(input: &AccessInput) -> Result<Vec<String>, ManifestError> {
    let role = input.role;
    let namespace = input.names.namespace.as_str();
    let subject = Subject {
        kind: "ServiceAccount".to_string(),
        name: role.account().to_string(),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: role.account().to_string(),
    };
    let grants = access::grants(role, &input.names);
    let mut documents = vec![yaml(
        "ServiceAccount",
        &ServiceAccount {
            metadata: access_meta(role, Some(namespace)),
            ..Default::default()
        },
    )?];
    if !grants.cluster.is_empty() {
        let cluster_role = ClusterRole {
            metadata: access_meta(role, None),
            rules: Some(grants.cluster),
            ..Default::default()
        };
        let binding = ClusterRoleBinding {
            metadata: access_meta(role, None),
            role_ref: role_ref("ClusterRole"),
            subjects: Some(vec![subject.clone()]),
        };
        documents.push(yaml("ClusterRole", &cluster_role)?);
        documents.push(yaml("ClusterRoleBinding", &binding)?);
    }
    for (rules_namespace, rules) in grants.namespaced {
        let namespaced_role = NamespacedRole {
            metadata: access_meta(role, Some(&rules_namespace)),
            rules: Some(rules),
        };
        let binding = RoleBinding {
            metadata: access_meta(role, Some(&rules_namespace)),
            role_ref: role_ref("Role"),
            subjects: Some(vec![subject.clone()]),
        };
        documents.push(yaml("Role", &namespaced_role)?);
        documents.push(yaml("RoleBinding", &binding)?);
    }
    if input.admission_policy {
        let policy_input = policy::PolicyInput {
            account: role.account(),
            namespace,
            lease_names: &input.lease_names,
        };
        let lease_meta = access_meta(role, None);
        let mut services_meta = lease_meta.clone();
        services_meta.name = Some(format!("{}{}", role.account(), policy::SERVICES_SUFFIX));
        for (policy, meta) in [
            (
                policy::lease_policy(&policy_input, lease_meta.clone()),
                lease_meta,
            ),
            (
                policy::service_policy(&policy_input, services_meta.clone()),
                services_meta,
            ),
        ] {
            documents.push(yaml("ValidatingAdmissionPolicy", &policy)?);
            documents.push(yaml(
                "ValidatingAdmissionPolicyBinding",
                &policy::binding(meta),
            )?);
        }
    }
    Ok(documents)
}

/// The DaemonSet for `opts.role` as YAML, after [`validate`] accepts the flags.
pub fn daemonset(opts: &ManifestOptions) -> Result<String, ManifestError> {
    validate(opts)?;
    yaml("DaemonSet", &build_daemonset(opts))
}

/// What `kvip manifest rbac` is asked for; each field names the flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacOptions {
    /// `--role`: whose access; unset is cp and lb, the two-instance layout.
    pub roles: Vec<Role>,
    /// `--namespace`: where the ServiceAccounts, the instance Leases and the
    /// control-plane Lease live.
    pub namespace: String,
    /// `--admission-policy`: also print the admission policy and its binding.
    pub admission_policy: bool,
}

/// The access objects of `opts.roles` for kvip's default Lease names, as
/// multi-document YAML. A DaemonSet with other Lease names or another
/// `cp_namespace` (`--env`) needs [`all`], which follows them.
pub fn rbac(opts: &RbacOptions) -> Result<String, ManifestError> {
    if let Some(rule) = dns_label_rule(&opts.namespace) {
        return Err(ManifestError::single(
            "--namespace",
            format!("{:?} is not a namespace name: {rule}", opts.namespace),
        ));
    }
    let config = Config {
        cp_namespace: opts.namespace.clone(),
        ..Config::default()
    };
    let mut documents = Vec::new();
    for &role in &opts.roles {
        let input = AccessInput::new(role, &opts.namespace, &config, opts.admission_policy);
        documents.extend(access_documents(&input)?);
    }
    Ok(documents.join("---\n"))
}

/// Access objects and the DaemonSet in one stream, ready for `kubectl apply -f -`.
pub fn all(opts: &ManifestOptions) -> Result<String, ManifestError> {
    let config = checked(opts)?;
    let input = AccessInput::new(opts.role, &opts.namespace, &config, opts.admission_policy);
    let mut documents = access_documents(&input)?;
    documents.push(yaml("DaemonSet", &build_daemonset(opts))?);
    Ok(documents.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    /// The fixed options each snapshot is taken with.
    fn fixed(role: Role) -> ManifestOptions {
        let mut opts = ManifestOptions::new(role);
        opts.image = "ghcr.io/kvip/kvip:snapshot".to_string();
        opts.interface = Some("eth0".to_string());
        if role.control_plane() {
            opts.address = Some("192.168.1.10".to_string());
        }
        if role == Role::All {
            opts.services_interface = Some("eth1".to_string());
            opts.lb_class_name = Some("kvip.example/lb".to_string());
        }
        opts
    }

    const ROLES: [Role; 3] = [Role::Cp, Role::Lb, Role::All];

    fn snapshot_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/manifest/snapshots")
            .join(name)
    }

    /// Compares with the stored snapshot and describes any difference;
    /// `UPDATE_SNAPSHOTS=1` (re)writes the snapshot instead.
    fn snapshot_mismatch(name: &str, actual: &str) -> Option<String> {
        let path = snapshot_path(name);
        if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return None;
        }
        let expected = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => return Some(format!("{} cannot be read ({err})", path.display())),
        };
        if expected == actual {
            return None;
        }
        let old: Vec<&str> = expected.lines().collect();
        let new: Vec<&str> = actual.lines().collect();
        let mut diff = format!("{} differs (- stored, + now):\n", path.display());
        for i in 0..old.len().max(new.len()) {
            let (o, n) = (old.get(i), new.get(i));
            if o != n {
                diff.push_str(&format!("line {}:\n", i + 1));
                if let Some(o) = o {
                    diff.push_str(&format!("-{o}\n"));
                }
                if let Some(n) = n {
                    diff.push_str(&format!("+{n}\n"));
                }
            }
        }
        Some(format!("{diff}whole output:\n{actual}"))
    }

    fn parse_daemonset(opts: &ManifestOptions) -> DaemonSet {
        serde_norway::from_str(&daemonset(opts).unwrap()).unwrap()
    }

    fn pod_spec(ds: &DaemonSet) -> &PodSpec {
        ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn env_of(ds: &DaemonSet) -> Vec<EnvVar> {
        pod_spec(ds).containers[0].env.clone().unwrap()
    }

    /// The literal variables, as a kubelet would hand them to `kvip manager`.
    fn literal_env(ds: &DaemonSet) -> BTreeMap<String, String> {
        env_of(ds)
            .into_iter()
            .filter_map(|e| e.value.map(|v| (e.name, v)))
            .collect()
    }

    /// `kvip manifest rbac` for `roles` in kube-system, with the policy.
    fn access(roles: &[Role]) -> RbacOptions {
        RbacOptions {
            roles: roles.to_vec(),
            namespace: "kube-system".to_string(),
            admission_policy: true,
        }
    }

    /// The documents of a YAML stream, as values.
    fn documents(text: &str) -> Vec<serde_norway::Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }

    /// `Kind namespace/name` of each document.
    fn objects(text: &str) -> Vec<String> {
        documents(text)
            .iter()
            .map(|d| {
                let meta = &d["metadata"];
                let namespace = meta["namespace"].as_str().map(|n| format!("{n}/"));
                format!(
                    "{} {}{}",
                    d["kind"].as_str().unwrap(),
                    namespace.unwrap_or_default(),
                    meta["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn refused(opts: &ManifestOptions) -> Vec<FlagProblem> {
        match validate(opts) {
            Err(ManifestError::InvalidFlags { problems }) => problems,
            other => panic!("expected refused flags, got {other:?}"),
        }
    }

    #[test]
    fn snapshots() {
        let mut outputs: Vec<(String, String)> = ROLES
            .iter()
            .map(|&role| {
                let name = format!("daemonset-{role}.yaml");
                (name, daemonset(&fixed(role)).unwrap())
            })
            .collect();
        for role in ROLES {
            outputs.push((format!("rbac-{role}.yaml"), rbac(&access(&[role])).unwrap()));
        }
        let mismatches: Vec<String> = outputs
            .iter()
            .filter_map(|(name, text)| snapshot_mismatch(name, text))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{}\nreview the output, then run UPDATE_SNAPSHOTS=1 cargo test -p kvip manifest",
            mismatches.join("\n")
        );
    }

    #[test]
    fn roles_parse_from_their_flag_values() {
        for role in ROLES {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        }
        let err = "master".parse::<Role>().unwrap_err().to_string();
        assert!(err.starts_with("--role: \"master\""), "{err}");
    }

    #[test]
    fn defaults_follow_kube_vip_and_this_version() {
        let opts = ManifestOptions::new(Role::Lb);
        assert_eq!(
            opts.image,
            format!("ghcr.io/kvip/kvip:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(opts.namespace, "kube-system");
        assert_eq!(
            (
                opts.port,
                opts.lease_duration,
                opts.renew_deadline,
                opts.retry_period
            ),
            (6443, 5, 3, 1)
        );
        assert!(opts.svc_election);
        // The default image runs as-is in the lab: its name is exactly `kvip`.
        let name = opts.image.rsplit('/').next().unwrap();
        assert_eq!(name.split(':').next(), Some("kvip"));
    }

    #[test]
    fn names_labels_and_selector() {
        for (role, name) in [
            (Role::Cp, "kvip-cp"),
            (Role::Lb, "kvip-lb"),
            (Role::All, "kvip"),
        ] {
            let ds = parse_daemonset(&fixed(role));
            assert_eq!(ds.metadata.name.as_deref(), Some(name));
            assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
            let labels = ds.metadata.labels.clone().unwrap();
            assert_eq!(labels[NAME_LABEL], "kvip");
            assert_eq!(labels["app.kubernetes.io/component"], role.to_string());
            let spec = ds.spec.as_ref().unwrap();
            assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels));
            let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
            assert_eq!(template_labels, Some(&labels));
        }
    }

    #[test]
    fn pod_runs_on_the_host_network_with_two_capabilities_only() {
        for role in ROLES {
            let ds = parse_daemonset(&fixed(role));
            let pod = pod_spec(&ds);
            assert_eq!(pod.host_network, Some(true));
            assert_eq!(
                pod.service_account_name.as_deref(),
                ds.metadata.name.as_deref(),
                "one account per DaemonSet, named like it"
            );
            assert_eq!(
                pod.priority_class_name.as_deref(),
                Some("system-node-critical")
            );
            assert_eq!(pod.termination_grace_period_seconds, Some(10));
            assert_eq!(pod.containers.len(), 1);
            let container = &pod.containers[0];
            assert_eq!(
                container.args.as_deref(),
                Some(&["manager".to_string()][..])
            );
            assert_eq!(container.command, None, "the image's entrypoint runs");
            let security = container.security_context.as_ref().unwrap();
            let caps = security.capabilities.as_ref().unwrap();
            let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
            assert_eq!(added, BTreeSet::from(["NET_ADMIN", "NET_RAW"]));
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
            assert_eq!(security.privileged, Some(false));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(security.read_only_root_filesystem, Some(true));
            let resources = container.resources.as_ref().unwrap();
            let requests = resources.requests.as_ref().unwrap();
            assert_eq!(requests["cpu"].0, "10m");
            assert_eq!(requests["memory"].0, "32Mi");
            assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "128Mi");
            let strategy = ds.spec.as_ref().unwrap().update_strategy.as_ref().unwrap();
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
            assert_eq!(
                strategy.rolling_update.as_ref().unwrap().max_unavailable,
                Some(IntOrString::Int(1))
            );
        }
    }

    #[test]
    fn metrics_and_probes_share_the_role_port() {
        for (role, port) in [(Role::Cp, 2112), (Role::Lb, 2113), (Role::All, 2112)] {
            let ds = parse_daemonset(&fixed(role));
            assert_eq!(literal_env(&ds)["prometheus_server"], format!(":{port}"));
            let container = &pod_spec(&ds).containers[0];
            for (probe, path) in [
                (&container.liveness_probe, "/healthz"),
                (&container.readiness_probe, "/readyz"),
            ] {
                let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
                assert_eq!(get.path.as_deref(), Some(path));
                assert_eq!(get.port, IntOrString::Int(port));
            }
            let ports = container.ports.as_ref().unwrap();
            assert_eq!(ports[0].container_port, port);
            assert_eq!(ports[0].host_port, Some(port));
        }
        let mut opts = fixed(Role::Lb);
        opts.metrics_port = Some(9100);
        let ds = parse_daemonset(&opts);
        assert_eq!(literal_env(&ds)["prometheus_server"], ":9100");
    }

    #[test]
    fn environment_uses_kube_vip_names() {
        let common = [
            "vip_arp",
            "port",
            "vip_interface",
            "vip_nodename",
            "vip_leaderelection",
            "vip_leaseduration",
            "vip_renewdeadline",
            "vip_retryperiod",
            "cp_enable",
            "cp_namespace",
            "svc_enable",
            "prometheus_server",
            "vip_arpRate",
            "vip_loglevel",
            "POD_NAMESPACE",
        ];
        let control_plane = ["vip_leasename", "address"];
        let services = ["svc_election", "lb_class_only"];
        let combined = ["vip_servicesinterface", "lb_class_name"];
        let expected = |extra: &[&[&str]]| -> BTreeSet<String> {
            common
                .iter()
                .chain(extra.iter().copied().flatten())
                .map(|s| s.to_string())
                .collect()
        };
        for (role, want) in [
            (Role::Cp, expected(&[&control_plane])),
            (Role::Lb, expected(&[&services])),
            (Role::All, expected(&[&control_plane, &services, &combined])),
        ] {
            let env = env_of(&parse_daemonset(&fixed(role)));
            let names: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
            let unique: BTreeSet<String> = names.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                names.len(),
                "{role}: duplicate names {names:?}"
            );
            assert_eq!(unique, want, "{role}");
        }
    }

    #[test]
    fn node_and_namespace_come_from_the_pod() {
        for role in ROLES {
            let env = env_of(&parse_daemonset(&fixed(role)));
            for (name, path) in [
                ("vip_nodename", "spec.nodeName"),
                ("POD_NAMESPACE", "metadata.namespace"),
            ] {
                let var = env.iter().find(|e| e.name == name).unwrap();
                assert_eq!(var.value, None);
                let field = var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
                assert_eq!(field.field_path, path, "{role} {name}");
            }
        }
    }

    #[test]
    fn role_switches() {
        let cases = [
            (Role::Cp, "true", "false"),
            (Role::Lb, "false", "true"),
            (Role::All, "true", "true"),
        ];
        for (role, cp, svc) in cases {
            let env = literal_env(&parse_daemonset(&fixed(role)));
            assert_eq!(env["cp_enable"], cp, "{role}");
            assert_eq!(env["svc_enable"], svc, "{role}");
            assert_eq!(env["vip_arp"], "true");
            assert_eq!(env["vip_leaderelection"], "true");
            if role.control_plane() {
                assert_eq!(env["vip_leasename"], "plndr-cp-lock");
                assert_eq!(env["address"], "192.168.1.10");
            }
            if role.services() {
                assert_eq!(env["svc_election"], "true");
            }
        }
    }

    /// What `kvip manager` reads from each manifest is what the flags asked for.
    #[test]
    fn manager_reads_the_manifest_as_intended() {
        for role in ROLES {
            let ds = parse_daemonset(&fixed(role));
            let mut env = literal_env(&ds);
            env.insert("vip_nodename".to_string(), "node-a".to_string());
            let (config, warnings) = Config::from_env(&env).unwrap();
            assert!(warnings.is_empty(), "{role}: {warnings:?}");
            assert_eq!(config.cp_enable, role.control_plane());
            assert_eq!(config.svc_enable, role.services());
            assert_eq!(config.svc_election, role.services());
            assert_eq!(config.vip_interface.as_deref(), Some("eth0"));
            assert_eq!(config.cp_namespace, "kube-system");
            assert_eq!(config.lease_duration.as_secs(), 5);
            assert_eq!(config.renew_deadline.as_secs(), 3);
            assert_eq!(config.retry_period.as_secs(), 1);
            assert_eq!(config.arp_rate.as_millis(), 3000);
            assert_eq!(config.log_level, 0);
            let address = role
                .control_plane()
                .then(|| "192.168.1.10".parse().unwrap());
            assert_eq!(config.address, address);
        }
    }

    #[test]
    fn control_plane_instance_lands_on_control_plane_nodes() {
        let pod = pod_spec(&parse_daemonset(&fixed(Role::Cp))).clone();
        assert_eq!(pod.node_selector, None);
        let required = pod
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        let keys: Vec<(String, String)> = required
            .node_selector_terms
            .iter()
            .flat_map(|t| t.match_expressions.clone().unwrap())
            .map(|r| (r.key, r.operator))
            .collect();
        assert_eq!(
            keys,
            [(
                "node-role.kubernetes.io/control-plane".into(),
                "Exists".into()
            )]
        );
        let tolerations: Vec<_> = pod
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| (t.key.unwrap(), t.operator.unwrap(), t.effect.unwrap()))
            .collect();
        assert_eq!(
            tolerations,
            [
                (
                    "node-role.kubernetes.io/control-plane".into(),
                    "Exists".into(),
                    "NoSchedule".into()
                ),
                (
                    "node-role.kubernetes.io/master".into(),
                    "Exists".into(),
                    "NoSchedule".into()
                ),
            ]
        );
    }

    #[test]
    fn service_instances_run_on_every_node() {
        for role in [Role::Lb, Role::All] {
            let pod = pod_spec(&parse_daemonset(&fixed(role))).clone();
            assert_eq!(pod.node_selector, None, "{role}");
            assert_eq!(pod.affinity, None, "{role}");
            let tolerations: Vec<_> = pod
                .tolerations
                .unwrap()
                .into_iter()
                .map(|t| (t.key, t.operator.unwrap(), t.effect.unwrap()))
                .collect();
            assert_eq!(
                tolerations,
                [
                    (None, "Exists".into(), "NoSchedule".into()),
                    (None, "Exists".into(), "NoExecute".into()),
                ],
                "{role}"
            );
        }
    }

    /// `kvip-lab deploy` runs these DaemonSets as they are.
    #[test]
    fn stays_within_what_the_lab_runs() {
        const LAB_FIELDS: [&str; 5] = [
            "spec.nodeName",
            "metadata.name",
            "metadata.namespace",
            "status.hostIP",
            "status.podIP",
        ];
        for role in ROLES {
            let ds = parse_daemonset(&fixed(role));
            let pod = pod_spec(&ds);
            assert_eq!(pod.host_network, Some(true));
            let container = &pod.containers[0];
            assert_eq!(container.env_from, None);
            for var in container.env.iter().flatten() {
                match (&var.value, &var.value_from) {
                    (Some(_), None) => {}
                    (None, Some(from)) => {
                        let field = from.field_ref.as_ref().unwrap();
                        assert!(LAB_FIELDS.contains(&field.field_path.as_str()), "{var:?}");
                    }
                    _ => panic!("{role}: {var:?} is neither a value nor a fieldRef"),
                }
            }
            let image = container.image.as_deref().unwrap();
            let last = image.rsplit('/').next().unwrap();
            assert_eq!(last.split([':', '@']).next(), Some("kvip"));
        }
    }

    #[test]
    fn each_role_has_its_own_account_roles_and_policy() {
        let cases: [(Role, &[&str]); 3] = [
            (
                Role::Cp,
                &[
                    "ServiceAccount kvip-system/kvip-cp",
                    "Role kvip-system/kvip-cp",
                    "RoleBinding kvip-system/kvip-cp",
                    "ValidatingAdmissionPolicy kvip-cp",
                    "ValidatingAdmissionPolicyBinding kvip-cp",
                    "ValidatingAdmissionPolicy kvip-cp-services",
                    "ValidatingAdmissionPolicyBinding kvip-cp-services",
                ],
            ),
            (
                Role::Lb,
                &[
                    "ServiceAccount kvip-system/kvip-lb",
                    "ClusterRole kvip-lb",
                    "ClusterRoleBinding kvip-lb",
                    "Role kube-system/kvip-lb",
                    "RoleBinding kube-system/kvip-lb",
                    "Role kvip-system/kvip-lb",
                    "RoleBinding kvip-system/kvip-lb",
                    "ValidatingAdmissionPolicy kvip-lb",
                    "ValidatingAdmissionPolicyBinding kvip-lb",
                    "ValidatingAdmissionPolicy kvip-lb-services",
                    "ValidatingAdmissionPolicyBinding kvip-lb-services",
                ],
            ),
            (
                Role::All,
                &[
                    "ServiceAccount kvip-system/kvip",
                    "ClusterRole kvip",
                    "ClusterRoleBinding kvip",
                    "Role kube-system/kvip",
                    "RoleBinding kube-system/kvip",
                    "Role kvip-system/kvip",
                    "RoleBinding kvip-system/kvip",
                    "ValidatingAdmissionPolicy kvip",
                    "ValidatingAdmissionPolicyBinding kvip",
                    "ValidatingAdmissionPolicy kvip-services",
                    "ValidatingAdmissionPolicyBinding kvip-services",
                ],
            ),
        ];
        for (role, want) in cases {
            let mut opts = access(&[role]);
            opts.namespace = "kvip-system".to_string();
            let text = rbac(&opts).unwrap();
            assert_eq!(objects(&text), want, "{role}");
            for doc in documents(&text) {
                let labels = &doc["metadata"]["labels"];
                assert_eq!(labels[NAME_LABEL].as_str(), Some("kvip"));
                assert_eq!(
                    labels["app.kubernetes.io/component"].as_str(),
                    Some(role.as_str())
                );
                match doc["kind"].as_str().unwrap() {
                    kind @ ("RoleBinding" | "ClusterRoleBinding") => {
                        let role_ref = &doc["roleRef"];
                        assert_eq!(role_ref["name"].as_str(), Some(role.account()));
                        assert_eq!(role_ref["kind"].as_str(), kind.strip_suffix("Binding"));
                        let subjects: Vec<Subject> =
                            serde_norway::from_value(doc["subjects"].clone()).unwrap();
                        assert_eq!(subjects.len(), 1);
                        assert_eq!(subjects[0].kind, "ServiceAccount");
                        assert_eq!(subjects[0].name, role.account());
                        assert_eq!(subjects[0].namespace.as_deref(), Some("kvip-system"));
                    }
                    "ValidatingAdmissionPolicyBinding" => {
                        assert_eq!(doc["spec"]["policyName"], doc["metadata"]["name"]);
                    }
                    "ValidatingAdmissionPolicy" => {
                        let text = serde_norway::to_string(&doc).unwrap();
                        let user =
                            format!("'system:serviceaccount:kvip-system:{}'", role.account());
                        assert!(text.contains(&user), "{role}: {text}");
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn rbac_alone_is_the_two_instance_layout_unless_a_role_is_named() {
        let text = rbac(&access(&[Role::Cp, Role::Lb])).unwrap();
        let expected = format!(
            "{}---\n{}",
            rbac(&access(&[Role::Cp])).unwrap(),
            rbac(&access(&[Role::Lb])).unwrap()
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn all_is_the_access_then_the_daemonset() {
        for role in ROLES {
            let mut opts = fixed(role);
            opts.namespace = "kvip-system".to_string();
            let text = all(&opts).unwrap();
            let mut access = access(&[role]);
            access.namespace = "kvip-system".to_string();
            let expected = format!(
                "{}---\n{}",
                rbac(&access).unwrap(),
                daemonset(&opts).unwrap()
            );
            assert_eq!(text, expected, "{role}");
            let ds: DaemonSet = serde_norway::from_value(documents(&text).pop().unwrap()).unwrap();
            let account = pod_spec(&ds).service_account_name.clone();
            assert!(
                objects(&text)
                    .contains(&format!("ServiceAccount kvip-system/{}", account.unwrap())),
                "{role}: the DaemonSet runs under the account printed with it"
            );
        }
    }

    /// A DaemonSet told to use other Lease names or another control-plane
    /// namespace gets access to exactly those.
    #[test]
    fn all_follows_the_lease_names_the_daemonset_uses() {
        let mut opts = fixed(Role::All);
        opts.extra_env = vec![
            ("vip_leasename".to_string(), "my-cp-lock".to_string()),
            ("cp_namespace".to_string(), "control".to_string()),
            ("svc_leasename".to_string(), "kubevip-global".to_string()),
        ];
        let text = all(&opts).unwrap();
        let docs = documents(&text);
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "control");
        // Both roles in one account: the cluster-wide Lease rules cover the
        // control-plane Lease, wherever it is.
        assert!(role.is_none(), "{text}");
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .map(|d| serde_norway::to_string(d).unwrap())
            .unwrap();
        assert!(policy.contains("'my-cp-lock'"), "{policy}");
        assert!(
            !policy.contains("'kubevip-global'"),
            "covered by its prefix: {policy}"
        );

        let mut opts = fixed(Role::Cp);
        opts.extra_env = vec![
            ("vip_leasename".to_string(), "my-cp-lock".to_string()),
            ("cp_namespace".to_string(), "control".to_string()),
        ];
        let text = all(&opts).unwrap();
        let role: NamespacedRole = documents(&text)
            .into_iter()
            .find(|d| d["kind"] == "Role")
            .map(|d| serde_norway::from_value(d).unwrap())
            .unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("control"));
        let names: Vec<_> = role
            .rules
            .unwrap()
            .into_iter()
            .filter_map(|r| r.resource_names)
            .collect();
        assert_eq!(names, [vec!["my-cp-lock".to_string()]]);
        assert!(objects(&text).contains(&"ServiceAccount kube-system/kvip-cp".to_string()));
    }

    #[test]
    fn the_admission_policy_can_be_left_out() {
        let mut opts = fixed(Role::Lb);
        opts.admission_policy = false;
        let text = all(&opts).unwrap();
        assert!(!text.contains("admissionregistration"), "{text}");
        assert_eq!(objects(&text).len(), 6);
        let mut access = access(&[Role::Cp]);
        access.admission_policy = false;
        assert_eq!(objects(&rbac(&access).unwrap()).len(), 3);
    }

    #[test]
    fn extra_env_adds_or_replaces_in_place() {
        let mut opts = fixed(Role::Lb);
        opts.extra_env = vec![
            ("kvip_log_format".to_string(), "json".to_string()),
            ("vip_arpRate".to_string(), "1500".to_string()),
        ];
        let env = env_of(&parse_daemonset(&opts));
        let position = |name: &str| env.iter().position(|e| e.name == name).unwrap();
        assert_eq!(env[position("vip_arpRate")].value.as_deref(), Some("1500"));
        assert_eq!(env.iter().filter(|e| e.name == "vip_arpRate").count(), 1);
        assert!(
            position("vip_arpRate") < position("vip_loglevel"),
            "order kept"
        );
        assert_eq!(position("kvip_log_format"), env.len() - 1);
    }

    /// The three bad inputs the issue names, each refused with its flag.
    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let mut opts = fixed(Role::Cp);
        opts.interface = Some("et h0".to_string());
        let problems = refused(&opts);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].flag, "--interface");
        assert!(
            problems[0].message.contains("whitespace"),
            "{}",
            problems[0]
        );

        let mut opts = fixed(Role::Cp);
        opts.address = Some("kube..example".to_string());
        let problems = refused(&opts);
        assert_eq!(problems[0].flag, "--address");
        assert!(
            problems[0]
                .message
                .contains("not an IP address or a DNS name")
        );
        // A DNS name is taken, as kube-vip takes it.
        opts.address = Some("kube.example".to_string());
        assert!(validate(&opts).is_ok());

        let mut opts = fixed(Role::Cp);
        (opts.lease_duration, opts.renew_deadline) = (3, 3);
        let err = daemonset(&opts).unwrap_err().to_string();
        assert!(err.starts_with("--lease-duration: "), "{err}");
        assert!(err.contains("vip_renewdeadline"), "{err}");

        let mut opts = fixed(Role::Cp);
        (opts.renew_deadline, opts.retry_period) = (2, 2);
        assert_eq!(refused(&opts)[0].flag, "--renew-deadline");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut opts = ManifestOptions::new(Role::Cp);
        opts.image = " ".to_string();
        opts.namespace = "Kube_System".to_string();
        opts.metrics_port = Some(0);
        // Beyond a 32-bit integer, which kube-vip cannot parse either.
        opts.arp_rate_ms = u32::MAX;
        opts.port = 0;
        opts.retry_period = 0;
        opts.lb_class_name = Some("x".to_string());
        opts.extra_env = vec![
            ("kvip_log_fromat".to_string(), "json".to_string()),
            ("1bad".to_string(), "x".to_string()),
        ];
        let flags: BTreeSet<&str> = refused(&opts).iter().map(|p| p.flag).collect();
        let expected = BTreeSet::from([
            "--image",
            "--namespace",
            "--metrics-port",
            "--arp-rate",
            "--port",
            "--retry-period",
            "--lb-class-name",
            "--env",
            "--address",
        ]);
        assert_eq!(flags, expected);
        let text = validate(&opts).unwrap_err().to_string();
        assert_eq!(text.lines().count(), refused(&opts).len());
    }

    #[test]
    fn control_plane_roles_need_the_address() {
        for role in [Role::Cp, Role::All] {
            let mut opts = fixed(role);
            opts.address = None;
            let problems = refused(&opts);
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].flag, "--address");
            assert!(problems[0].message.contains(&format!("role {role}")));
        }
        assert!(validate(&fixed(Role::Lb)).is_ok());
    }

    #[test]
    fn flags_the_role_would_ignore_are_refused() {
        let mut opts = fixed(Role::Lb);
        opts.address = Some("192.168.1.10".to_string());
        assert_eq!(refused(&opts)[0].flag, "--address");
        let mut opts = fixed(Role::Cp);
        opts.services_interface = Some("eth1".to_string());
        opts.service_namespace = Some("web".to_string());
        opts.lb_class_only = true;
        let flags: Vec<&str> = refused(&opts).iter().map(|p| p.flag).collect();
        assert_eq!(
            flags,
            [
                "--services-interface",
                "--service-namespace",
                "--lb-class-only"
            ]
        );
    }

    #[test]
    fn extra_env_problems_name_the_env_flag() {
        let mut opts = fixed(Role::Lb);
        opts.extra_env = vec![("vip_interface".to_string(), "a/b".to_string())];
        let problems = refused(&opts);
        assert_eq!(problems[0].flag, "--env");
        assert!(problems[0].message.contains("vip_interface"));

        opts.extra_env = vec![("prometheus_server".to_string(), ":9100".to_string())];
        let problems = refused(&opts);
        assert_eq!(problems[0].flag, "--env");
        assert!(problems[0].message.contains("--metrics-port"));
    }

    /// The manifest refuses a value exactly when `kvip manager` refuses the
    /// variable it becomes.
    #[test]
    fn refuses_what_the_manager_refuses() {
        type Edit = fn(&mut ManifestOptions);
        let cases: [(Edit, &str, &str); 10] = [
            (
                |o| o.interface = Some("abcdefghijklmnop".into()),
                "vip_interface",
                "abcdefghijklmnop",
            ),
            (
                |o| o.interface = Some("eth0.100".into()),
                "vip_interface",
                "eth0.100",
            ),
            (
                |o| o.address = Some("fd00::10".into()),
                "address",
                "fd00::10",
            ),
            (
                |o| o.address = Some("10.0.0.256".into()),
                "address",
                "10.0.0.256",
            ),
            (
                |o| o.lease_duration = 100_000,
                "vip_leaseduration",
                "100000",
            ),
            (|o| o.arp_rate_ms = 99, "vip_arpRate", "99"),
            (|o| o.arp_rate_ms = 100, "vip_arpRate", "100"),
            (|o| o.arp_rate_ms = u32::MAX, "vip_arpRate", "4294967295"),
            (|o| o.log_level = 6, "vip_loglevel", "6"),
            (|o| o.log_level = -4, "vip_loglevel", "-4"),
        ];
        for (edit, variable, value) in cases {
            let mut opts = fixed(Role::All);
            edit(&mut opts);
            let mut env = literal_env(&parse_daemonset(&fixed(Role::All)));
            env.insert(variable.to_string(), value.to_string());
            let manager_accepts = Config::from_env(&env).is_ok();
            assert_eq!(
                validate(&opts).is_ok(),
                manager_accepts,
                "{variable}={value}"
            );
        }
    }

    #[test]
    fn rbac_refuses_a_bad_namespace() {
        let mut opts = access(&[Role::Lb]);
        opts.namespace = "-x".to_string();
        let err = rbac(&opts).unwrap_err().to_string();
        assert!(err.starts_with("--namespace: "), "{err}");
    }
}
