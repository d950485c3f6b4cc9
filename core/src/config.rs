//! kube-vip's environment variables, read and checked into one [`Config`].
//! Every problem is collected, so one start-up attempt reports all of them;
//! kube-vip settings that kvip does not implement come back as warnings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kube_vip::Support;
use crate::sharing::LeaseKey;

/// Go's `strconv.ParseBool` spellings, in the order Go documents them.
const GO_BOOL_SPELLINGS: &str = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False";

/// Longest lease timing accepted, in seconds; keeps every sum far from overflow.
const MAX_SECONDS: u64 = 86_400;

/// kube-vip's default `vip_arpRate`, and what it uses instead of a value
/// below [`ARP_RATE_FLOOR_MS`].
pub const ARP_RATE_DEFAULT_MS: u64 = 3_000;

/// Below this many milliseconds kube-vip logs an error and refreshes every
/// [`ARP_RATE_DEFAULT_MS`] instead; kvip does the same, with a warning.
pub const ARP_RATE_FLOOR_MS: u64 = 500;

/// The kvip-only settings; any other `kvip_` variable is a typo.
pub const KVIP_VARIABLES: &[&str] = &[
    "kvip_api_burst",
    "kvip_api_qps",
    "kvip_exclude_lb_label",
    "kvip_ipam",
    "kvip_log_format",
    "kvip_membership",
    "kvip_probe_ms",
    "kvip_restrict_to_pools",
];

/// Bounds of `kvip_probe_ms`: 0 turns probing off.
const PROBE_MS: std::ops::RangeInclusive<u64> = 0..=5_000;

/// Bounds of `kvip_api_qps` and `kvip_api_burst`: writes per second, and the
/// most sent at once after a quiet spell.
pub const API_BUDGET: std::ops::RangeInclusive<u32> = 1..=10_000;

/// The value of `vip_servicesinterface` that picks an interface per address.
pub const AUTO_INTERFACE: &str = "auto";

/// Every variable name kvip recognises: kube-vip v1.0.0's (implemented or
/// warned about, [`crate::kube_vip::VARIABLES`]), older kube-vip names it
/// still reads, and the kvip-only ones.
pub fn known_variable(name: &str) -> bool {
    crate::kube_vip::variable(name).is_some()
        || crate::kube_vip::OLDER_VARIABLES
            .iter()
            .any(|(n, _)| *n == name)
        || KVIP_VARIABLES.contains(&name)
}

/// Whether `name` looks like a kube-vip variable (lower case, a prefix
/// kube-vip uses) without being one: most likely a typo worth a warning.
pub fn looks_like_kube_vip(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "vip_", "cp_", "svc_", "lb_", "bgp_", "egress_", "zebra_", "mpbgp_", "dns_", "enable_",
    ];
    !known_variable(name)
        && !name.starts_with("kvip_")
        && PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Parses a boolean exactly as Go's `strconv.ParseBool`, which kube-vip uses.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`kvip_log_format=text`, the default).
    #[default]
    Text,
    /// One JSON object per line (`kvip_log_format=json`).
    Json,
}

/// `dns_mode`: which addresses of a DNS name in `address` kube-vip uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// The first address the resolver returns (kube-vip's default).
    #[default]
    First,
    /// The first IPv4 address.
    Ipv4,
    /// The first IPv6 address.
    Ipv6,
    /// One of each family in kube-vip; kvip serves the IPv4 one (with a warning).
    Dual,
}

impl DnsMode {
    /// The address a name's resolution gives in this mode, if any. Once a
    /// VIP is served, kube-vip re-resolves keeping its family: pass that
    /// family's mode.
    pub fn pick(self, resolved: &[IpAddr]) -> Option<IpAddr> {
        match self {
            DnsMode::First => resolved.first().copied(),
            DnsMode::Ipv4 | DnsMode::Dual => resolved.iter().copied().find(IpAddr::is_ipv4),
            DnsMode::Ipv6 => resolved.iter().copied().find(IpAddr::is_ipv6),
        }
    }

    /// The mode that keeps `address`'s family, for re-resolution.
    pub fn of_family(address: IpAddr) -> DnsMode {
        if address.is_ipv4() {
            DnsMode::Ipv4
        } else {
            DnsMode::Ipv6
        }
    }

    /// The control-plane VIP after a lookup of its name, as kube-vip's IP
    /// updater has it: the first address is picked in this mode, later ones
    /// keep the family of the VIP served; a failed or empty lookup keeps
    /// the VIP served (none before the first success). A name with several
    /// addresses (round-robin DNS, answers in another order each time)
    /// keeps the VIP served while it is among them, so it never hops.
    pub fn follow(self, current: Option<IpAddr>, resolved: Option<&[IpAddr]>) -> Option<IpAddr> {
        if let (Some(c), Some(r)) = (current, resolved)
            && r.contains(&c)
        {
            return Some(c);
        }
        let mode = current.map_or(self, DnsMode::of_family);
        resolved.and_then(|r| mode.pick(r)).or(current)
    }
}

/// How often kube-vip looks the control-plane name up again, in seconds.
pub const DNS_REFRESH: Duration = Duration::from_secs(3);

/// How much kvip logs, from kube-vip 1.x's `vip_loglevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogVerbosity {
    /// Debug and everything above.
    Debug,
    /// Info and above.
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
    /// Nothing.
    Off,
}

/// What kube-vip 1.x writes at slog level `level`: a record is written when
/// its level is at least the configured one, and slog's levels are debug
/// -4, info 0, warn 4, error 8. So -4 (kube-vip's manifests) is debug, 0
/// info; the old logrus numbers still parse but mean slog levels now (5
/// is errors only), exactly as in kube-vip v1.0.0.
pub fn log_verbosity(level: i32) -> LogVerbosity {
    match level {
        i32::MIN..=-4 => LogVerbosity::Debug,
        -3..=0 => LogVerbosity::Info,
        1..=4 => LogVerbosity::Warn,
        5..=8 => LogVerbosity::Error,
        _ => LogVerbosity::Off,
    }
}

/// Where Service VIPs go, from `vip_servicesinterface` and `vip_interface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceChoice<'a> {
    /// This interface, which must exist.
    Named(&'a str),
    /// The interface whose subnet holds the address; when none does,
    /// `fallback` (`vip_interface`), else the default-route interface.
    BySubnet {
        /// `vip_interface`, if set.
        fallback: Option<&'a str>,
    },
}

impl<'a> InterfaceChoice<'a> {
    /// A configured interface, or by subnet (then the default route) when none is.
    pub fn configured(name: Option<&'a str>) -> Self {
        match name {
            Some(name) => InterfaceChoice::Named(name),
            None => InterfaceChoice::BySubnet { fallback: None },
        }
    }

    /// The interface that must be used whatever the address, if any.
    pub fn named(&self) -> Option<&'a str> {
        match *self {
            InterfaceChoice::Named(name) => Some(name),
            InterfaceChoice::BySubnet { .. } => None,
        }
    }

    /// The interface this choice names at all: the one it must use, or its fallback.
    pub fn mentioned(&self) -> Option<&'a str> {
        match *self {
            InterfaceChoice::Named(name) => Some(name),
            InterfaceChoice::BySubnet { fallback } => fallback,
        }
    }
}

/// A Lease name as kvip reads `vip_leasename` and `svc_leasename`: `name`,
/// or `namespace/name` for a Lease in another namespace. Both parts must be
/// valid object names; the error says which rule is broken.
pub fn parse_lease_name(value: &str) -> Result<(Option<String>, String), String> {
    let (namespace, name) = match value.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, value),
    };
    if let Some(ns) = namespace
        && let Some(rule) = dns_label_rule(ns)
    {
        return Err(format!("namespace {ns:?} {rule}"));
    }
    if let Some(rule) = dns_subdomain_rule(name) {
        return Err(format!("name {name:?} {rule}"));
    }
    Ok((namespace.map(str::to_string), name.to_string()))
}

/// What is wrong with `value` as a DNS-1123 label (a namespace), if anything.
fn dns_label_rule(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 63 {
        Some("must be 1 to 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may hold only lower-case letters, digits and '-'")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("must start and end with a letter or digit")
    } else {
        None
    }
}

/// What is wrong with `value` as a DNS-1123 subdomain (an object name), if anything.
fn dns_subdomain_rule(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 253 {
        Some("must be 1 to 253 characters")
    } else if value
        .split('.')
        .any(|label| dns_label_rule(label).is_some())
    {
        Some(
            "must be lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit",
        )
    } else {
        None
    }
}

/// Whether `value` is a host name a resolver could look up (RFC 1123,
/// letters of either case, an optional final dot).
pub fn is_host_name(value: &str) -> bool {
    let name = value.strip_suffix('.').unwrap_or(value);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // All digits and dots is a mistyped IPv4 address, not a name.
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The daemon's settings, named after the kube-vip variables they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `vip_arp`: layer-2 announcements; kvip announces this way regardless.
    pub vip_arp: bool,
    /// `vip_interface`: interface for the control-plane VIP (and services, unless overridden).
    pub vip_interface: Option<String>,
    /// `vip_servicesinterface`: interface for Service VIPs; [`AUTO_INTERFACE`]
    /// picks one per address ([`Config::services_interface`]).
    pub vip_services_interface: Option<String>,
    /// `address`, else `vip_address`: the control-plane VIP, when it is an IP address.
    pub address: Option<IpAddr>,
    /// `address` when it is a DNS name: resolved (and re-resolved) by the
    /// control-plane role, as kube-vip does.
    pub address_name: Option<String>,
    /// `dns_mode`: which of a name's addresses becomes the control-plane VIP.
    pub dns_mode: DnsMode,
    /// `port`: the API server port behind the control-plane VIP.
    pub port: u16,
    /// `vip_subnet` (or the older `vip_cidr`): prefix text such as "32" or "32,128".
    pub vip_subnet: Option<String>,
    /// `vip_leaderelection`: elect one control-plane announcer through a Lease.
    pub vip_leaderelection: bool,
    /// `vip_leasename`: the control-plane Lease's name.
    pub vip_leasename: String,
    /// The namespace `vip_leasename` gives in `namespace/name` form, which
    /// wins over `cp_namespace`.
    pub vip_lease_namespace: Option<String>,
    /// `vip_leaseduration`: how long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// `vip_renewdeadline`: how long a holder keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// `vip_retryperiod`: the pause between election attempts.
    pub retry_period: Duration,
    /// `vip_nodename`: this node's name.
    pub node_name: Option<String>,
    /// `cp_enable`: run the control-plane VIP role.
    pub cp_enable: bool,
    /// `cp_namespace`: namespace of the control-plane Lease.
    pub cp_namespace: String,
    /// `svc_enable`: run the Service load-balancer role.
    pub svc_enable: bool,
    /// `svc_election`: one election per Service address instead of one global leader.
    pub svc_election: bool,
    /// `svc_namespace`: watch only this namespace; `None` watches all.
    pub svc_namespace: Option<String>,
    /// `svc_leasename`: the global Service leader's Lease name when `svc_election` is off.
    pub svc_leasename: String,
    /// The namespace `svc_leasename` gives in `namespace/name` form.
    pub svc_lease_namespace: Option<String>,
    /// `lb_class_only`: ignore Services without a `spec.loadBalancerClass`.
    pub lb_class_only: bool,
    /// `lb_class_name`: the `spec.loadBalancerClass` that is ours (set but
    /// empty is kept: kube-vip then serves only Services without a class).
    pub lb_class_name: String,
    /// `lb_class_legacy_handling` (default true): kube-vip's older class rule
    /// ([`crate::service::LbClassRule`]).
    pub lb_class_legacy_handling: bool,
    /// `prometheus_server`: metrics listen address; empty disables metrics.
    pub prometheus_server: String,
    /// `vip_arpRate` (milliseconds): the refresh period of gratuitous announcements.
    pub arp_rate: Duration,
    /// `vip_loglevel`: a log/slog level as kube-vip 1.x reads it: -4 debug,
    /// 0 info (the default), 4 warn, 8 error ([`log_verbosity`]).
    pub log_level: i32,
    /// `k8s_config_file`: kubeconfig path; `None` uses the in-cluster account.
    pub k8s_config_file: Option<String>,
    /// `kvip_log_format`: text or json.
    pub log_format: LogFormat,
    /// `kvip_membership`: Service addresses are owned by rendezvous hashing
    /// over nodes that renew one membership Lease each, instead of one Lease
    /// per address ([`crate::membership`]).
    pub membership: bool,
    /// `kvip_api_qps`: the API writes this instance sends per second at most
    /// (Lease renewals and takeovers, claims, status, Events).
    pub api_qps: u32,
    /// `kvip_api_burst`: how many writes may go at once after a quiet spell.
    pub api_burst: u32,
    /// `kvip_probe_ms`: how long a node listens after probing an address
    /// before it first takes it ([`crate::probe`]); zero turns probing off.
    pub probe_wait: Duration,
    /// `kvip_exclude_lb_label`: honour the label
    /// `node.kubernetes.io/exclude-from-external-load-balancers`. Off by
    /// default, as in kube-vip (kubeadm puts it on every control-plane node).
    pub exclude_lb_label: bool,
    /// `kvip_ipam`: give Services without an address one from the pools of
    /// kube-vip-cloud-provider's ConfigMap ([`crate::ipam`]), when it exists.
    pub ipam: bool,
    /// `KUBEVIP_NAMESPACE`: the namespace of that ConfigMap, as
    /// kube-vip-cloud-provider reads it.
    pub ipam_namespace: String,
    /// `KUBEVIP_CONFIG_MAP`: its name, as kube-vip-cloud-provider reads it.
    pub ipam_config_map: String,
    /// `kvip_restrict_to_pools`: a Service may only have addresses of the
    /// pool its namespace may use.
    pub restrict_to_pools: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vip_arp: false,
            vip_interface: None,
            vip_services_interface: None,
            address: None,
            address_name: None,
            dns_mode: DnsMode::First,
            port: 6443,
            vip_subnet: None,
            vip_leaderelection: false,
            vip_leasename: "plndr-cp-lock".to_string(),
            vip_lease_namespace: None,
            lease_duration: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_secs(1),
            node_name: None,
            cp_enable: false,
            cp_namespace: "kube-system".to_string(),
            svc_enable: false,
            svc_election: false,
            svc_namespace: None,
            svc_leasename: "plndr-svcs-lock".to_string(),
            svc_lease_namespace: None,
            lb_class_only: false,
            lb_class_name: "kube-vip.io/kube-vip-class".to_string(),
            lb_class_legacy_handling: true,
            prometheus_server: ":2112".to_string(),
            arp_rate: Duration::from_millis(ARP_RATE_DEFAULT_MS),
            log_level: 0,
            k8s_config_file: None,
            log_format: LogFormat::Text,
            membership: false,
            api_qps: 50,
            api_burst: 100,
            probe_wait: crate::probe::DEFAULT_WAIT,
            exclude_lb_label: false,
            ipam: true,
            ipam_namespace: crate::ipam::CONFIG_MAP_NAMESPACE.to_string(),
            ipam_config_map: crate::ipam::CONFIG_MAP_NAME.to_string(),
            restrict_to_pools: false,
        }
    }
}

/// One variable whose value kvip cannot use; start-up stops on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A boolean variable holds something Go's ParseBool rejects.
    #[error("{variable}={value:?} is not a boolean; use one of {GO_BOOL_SPELLINGS}")]
    InvalidBool {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
    /// A duration variable is not a whole number of seconds in range.
    #[error("{variable}={value:?} must be a whole number of seconds from 1 to {MAX_SECONDS}")]
    InvalidSeconds {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
    /// The three lease timings are out of order (client-go refuses them too).
    #[error(
        "vip_leaseduration ({lease}s) must be greater than vip_renewdeadline ({renew}s), \
         which must be greater than vip_retryperiod ({retry}s)"
    )]
    LeaseTimingOrder {
        /// `vip_leaseduration` in seconds.
        lease: u64,
        /// `vip_renewdeadline` in seconds.
        renew: u64,
        /// `vip_retryperiod` in seconds.
        retry: u64,
    },
    /// `kvip_probe_ms` is not whole milliseconds within bounds.
    #[error("kvip_probe_ms={value:?} must be whole milliseconds from 0 (no probe) to 5000")]
    InvalidProbeWait {
        /// Its value.
        value: String,
    },
    /// `vip_arpRate` is not a whole number of milliseconds (a 32-bit integer, as kube-vip parses it).
    #[error("vip_arpRate={value:?} must be whole milliseconds, such as 3000 (kube-vip's default)")]
    InvalidArpRate {
        /// Its value.
        value: String,
    },
    /// An interface name Linux would refuse.
    #[error("{variable}={value:?} is not a valid Linux interface name: {rule}")]
    InvalidInterface {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A port that is not 1..=65535.
    #[error("{variable}={value:?} must be a port number from 1 to 65535")]
    InvalidPort {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
    /// An address that is neither a literal IP nor (for `address`) a DNS name.
    #[error("{variable}={value:?} is not {expected}")]
    InvalidAddress {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `vip_subnet` is not prefix-length text.
    #[error("{variable}={value:?} {reason}")]
    InvalidSubnet {
        /// The variable (`vip_subnet` or `vip_cidr`).
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `vip_loglevel` is not a 32-bit whole number.
    #[error(
        "vip_loglevel={value:?} must be a whole number, a log/slog level as kube-vip 1.x reads it: -4 debug, 0 info, 4 warn, 8 error"
    )]
    InvalidLogLevel {
        /// Its value.
        value: String,
    },
    /// `vip_leasename` or `svc_leasename` is not `name` or `namespace/name`.
    #[error("{variable}={value:?} must be a Lease name or namespace/name: the {reason}")]
    InvalidLeaseName {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// `kvip_ipam=true` with `svc_namespace` set.
    #[error(
        "kvip_ipam=true needs every namespace watched (svc_namespace is set): an allocator that sees one namespace would hand out addresses other namespaces use; unset svc_namespace or kvip_ipam"
    )]
    IpamNeedsEveryNamespace,
    /// `KUBEVIP_NAMESPACE` or `KUBEVIP_CONFIG_MAP` is no object name.
    #[error("{variable}={value:?} {reason}")]
    InvalidObjectName {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// `dns_mode` is not one of kube-vip's modes.
    #[error("dns_mode={value:?} must be first, ipv4, ipv6 or dual")]
    InvalidDnsMode {
        /// Its value.
        value: String,
    },
    /// `kvip_api_qps` or `kvip_api_burst` is not a whole number within bounds.
    #[error("{variable}={value:?} must be a whole number from 1 to 10000")]
    InvalidApiBudget {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// `kvip_log_format` is neither text nor json.
    #[error("kvip_log_format={value:?} must be text or json")]
    InvalidLogFormat {
        /// Its value.
        value: String,
    },
    /// `prometheus_server` is not `[host]:port`.
    #[error("prometheus_server={value:?} must be [host]:port, such as :2112, or empty to disable")]
    InvalidPrometheusServer {
        /// Its value.
        value: String,
    },
    /// A `kvip_` variable kvip does not know, most likely a typo.
    #[error("{variable} is not a kvip setting; the known ones are: {}", known.join(", "))]
    UnknownKvipVariable {
        /// The variable.
        variable: String,
        /// The `kvip_` settings that exist.
        known: Vec<&'static str>,
    },
    /// The control-plane role has nothing to announce.
    #[error("cp_enable=true needs the control-plane VIP in address (or vip_address)")]
    ControlPlaneWithoutAddress,
}

/// Every problem found in the environment, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(problems))]
pub struct ConfigError {
    /// The problems, in the order the variables were read.
    pub problems: Vec<ConfigProblem>,
}

fn lines(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Something in the environment worth telling the operator that does not stop start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ConfigWarning {
    /// A kube-vip variable that kvip ignores is set.
    Unsupported {
        /// The variable.
        variable: String,
        /// What kvip does instead.
        note: &'static str,
    },
    /// A variable named like kube-vip's that no kube-vip v1.0.0 has: a typo?
    UnknownVariable {
        /// The variable.
        variable: String,
    },
    /// `vip_arpRate` below kube-vip's floor; 3000 ms is used, as kube-vip does.
    ArpRateRaised {
        /// The value given, in milliseconds.
        value: i64,
    },
    /// `dns_mode=dual`: kvip serves the name's IPv4 address only.
    DualDnsMode,
    /// `vip_loglevel` 5 or 6: debug and trace in kube-vip 0.x (logrus), errors
    /// only and nothing but errors in kube-vip 1.x (slog), as kvip reads them.
    LogrusLogLevel {
        /// The value given.
        value: i32,
    },
    /// `vip_subnet` (or `vip_cidr`) asks for a prefix shorter than a host's:
    /// kvip adds host addresses, so no on-link route comes with them.
    HostPrefixOnly {
        /// The variable (`vip_subnet` or `vip_cidr`).
        variable: String,
        /// Its value.
        value: String,
    },
    /// `vip_arp` is off while a role is on; kvip announces on layer 2 anyway.
    ArpNotEnabled,
    /// Neither `cp_enable` nor `svc_enable` is on, so kvip will announce nothing.
    NoRoleEnabled,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::Unsupported { variable, note } => {
                write!(
                    f,
                    "{variable} is set but kvip does not implement it: {note}"
                )
            }
            ConfigWarning::UnknownVariable { variable } => write!(
                f,
                "{variable} is set but is no kube-vip v1.0.0 variable (a typo?); kvip ignores it"
            ),
            ConfigWarning::ArpRateRaised { value } => write!(
                f,
                "vip_arpRate={value} is below {ARP_RATE_FLOOR_MS} ms: refreshing every \
                 {ARP_RATE_DEFAULT_MS} ms instead, as kube-vip does"
            ),
            ConfigWarning::LogrusLogLevel { value } => write!(
                f,
                "vip_loglevel={value} is read as kube-vip 1.x reads it, a slog level: errors only; \
                 in kube-vip 0.x it meant {}: for that, set vip_loglevel=-4",
                if *value == 5 { "debug" } else { "trace" }
            ),
            ConfigWarning::DualDnsMode => f.write_str(
                "dns_mode=dual: the control-plane role serves one address, so kvip serves the \
                 name's IPv4 address (kube-vip would serve one of each family)",
            ),
            ConfigWarning::HostPrefixOnly { variable, value } => write!(
                f,
                "{variable}={value}: kvip adds every VIP as a host address (/32, /128), so no \
                 route to that subnet comes with it (kube-vip adds one); a VIP outside the \
                 node's own subnets needs that route on the node \
                 (ip route add SUBNET dev INTERFACE)"
            ),
            ConfigWarning::ArpNotEnabled => f.write_str(
                "vip_arp is not true, but layer 2 (ARP / neighbour advertisement) is the only \
                 mode kvip implements, so it announces that way anyway",
            ),
            ConfigWarning::NoRoleEnabled => {
                f.write_str("neither cp_enable nor svc_enable is true, so kvip has nothing to do")
            }
        }
    }
}

/// Reads variables one by one, recording problems instead of stopping at the first.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl Reader<'_> {
    /// The value of a variable, with empty treated as unset (as kube-vip does).
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        let Some(value) = self.get(name) else {
            return default;
        };
        match parse_go_bool(value) {
            Some(b) => b,
            None => {
                self.problems.push(ConfigProblem::InvalidBool {
                    variable: name.to_string(),
                    value: value.to_string(),
                });
                default
            }
        }
    }

    fn seconds(&mut self, name: &str, default: u64) -> Duration {
        let Some(value) = self.get(name) else {
            return Duration::from_secs(default);
        };
        match value.parse::<u64>() {
            Ok(s) if (1..=MAX_SECONDS).contains(&s) => Duration::from_secs(s),
            _ => {
                self.problems.push(ConfigProblem::InvalidSeconds {
                    variable: name.to_string(),
                    value: value.to_string(),
                });
                Duration::from_secs(default)
            }
        }
    }

    fn interface(&mut self, name: &str) -> Option<String> {
        let value = self.get(name)?;
        match interface_name_rule(value) {
            None => Some(value.to_string()),
            Some(rule) => {
                self.problems.push(ConfigProblem::InvalidInterface {
                    variable: name.to_string(),
                    value: value.to_string(),
                    rule,
                });
                None
            }
        }
    }

    fn address(&mut self, name: &str) -> Option<IpAddr> {
        let value = self.get(name)?;
        match value.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problems.push(ConfigProblem::InvalidAddress {
                    variable: name.to_string(),
                    value: value.to_string(),
                    expected: "an IP address",
                });
                None
            }
        }
    }

    /// `vip_leasename` or `svc_leasename`: `name` or `namespace/name`.
    fn lease_name(&mut self, variable: &'static str, default: &str) -> (Option<String>, String) {
        let Some(value) = self.get(variable) else {
            return (None, default.to_string());
        };
        match parse_lease_name(value) {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.problems.push(ConfigProblem::InvalidLeaseName {
                    variable,
                    value: value.to_string(),
                    reason,
                });
                (None, default.to_string())
            }
        }
    }
}

/// The Linux rule (`dev_valid_name`) an interface name breaks, if any.
pub fn interface_name_rule(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("it must be 1 to 15 bytes long")
    } else if name == "." || name == ".." {
        Some("it cannot be \".\" or \"..\"")
    } else if name.contains('/') {
        Some("it cannot contain '/'")
    } else if name.contains(':') {
        Some("it cannot contain ':'")
    } else if name.chars().any(char::is_whitespace) {
        Some("it cannot contain whitespace")
    } else {
        None
    }
}

/// What is wrong with `vip_subnet` text, if anything: one prefix length, or
/// an IPv4 and an IPv6 length separated by ',' or '/' (dual stack).
fn subnet_rule(value: &str, address: Option<IpAddr>) -> Option<&'static str> {
    let parts: Vec<&str> = value.split([',', '/']).map(str::trim).collect();
    let lengths: Option<Vec<u8>> = parts.iter().map(|p| p.parse::<u8>().ok()).collect();
    let Some(lengths) = lengths else {
        return Some("must be prefix lengths such as 32, 128 or 32,128");
    };
    match lengths.as_slice() {
        [len] if *len > 128 => Some("is longer than 128 bits"),
        [len] if *len > 32 && matches!(address, Some(IpAddr::V4(_))) => {
            Some("is longer than 32 bits, but address is IPv4")
        }
        [_] => None,
        [v4, v6] if *v4 > 32 || *v6 > 128 => {
            Some("needs an IPv4 length up to 32, then an IPv6 length up to 128")
        }
        [_, _] => None,
        _ => Some("has more than two prefix lengths (one per address family)"),
    }
}

/// Whether valid `vip_subnet` text asks only for host prefixes, as kube-vip's
/// manifests write it: 32 or 128 for each address.
fn host_prefixes(value: &str) -> bool {
    value
        .split([',', '/'])
        .map(str::trim)
        .all(|p| p == "32" || p == "128")
}

/// Whether `value` is `[host]:port` with a port number; the host is not resolved here.
fn is_listen_address(value: &str) -> bool {
    value
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

impl Config {
    /// Reads the kube-vip environment; all problems come back together in the error.
    pub fn from_env(
        vars: &BTreeMap<String, String>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let defaults = Config::default();
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };

        let vip_arp = r.flag("vip_arp", defaults.vip_arp);
        let vip_interface = r.interface("vip_interface");
        let vip_services_interface = match r.get("vip_servicesinterface") {
            Some(AUTO_INTERFACE) => Some(AUTO_INTERFACE.to_string()),
            _ => r.interface("vip_servicesinterface"),
        };
        // kube-vip takes a DNS name in address (not in vip_address) and resolves it.
        let (address, address_name) = match r.get("address") {
            Some(value) => match value.parse::<IpAddr>() {
                Ok(ip) => (Some(ip), None),
                Err(_) if is_host_name(value) => (None, Some(value.to_string())),
                Err(_) => {
                    r.problems.push(ConfigProblem::InvalidAddress {
                        variable: "address".to_string(),
                        value: value.to_string(),
                        expected: "an IP address or a DNS name",
                    });
                    (None, None)
                }
            },
            None => (r.address("vip_address"), None),
        };
        let dns_mode = match r.get("dns_mode") {
            None | Some("first") => DnsMode::First,
            Some("ipv4") => DnsMode::Ipv4,
            Some("ipv6") => DnsMode::Ipv6,
            Some("dual") => DnsMode::Dual,
            Some(value) => {
                // kube-vip looks the name up in "first" mode for any other
                // value; refusing it only matters when there is a name.
                if address_name.is_some() {
                    r.problems.push(ConfigProblem::InvalidDnsMode {
                        value: value.to_string(),
                    });
                }
                DnsMode::First
            }
        };

        let port = match r.get("port") {
            None => defaults.port,
            Some(value) => match value.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    r.problems.push(ConfigProblem::InvalidPort {
                        variable: "port".to_string(),
                        value: value.to_string(),
                    });
                    defaults.port
                }
            },
        };

        let subnet_variable = if r.get("vip_subnet").is_some() {
            "vip_subnet"
        } else {
            "vip_cidr"
        };
        let vip_subnet = r.string(subnet_variable);
        let mut subnet_warning = None;
        if let Some(value) = &vip_subnet {
            match subnet_rule(value, address) {
                Some(reason) => r.problems.push(ConfigProblem::InvalidSubnet {
                    variable: subnet_variable.to_string(),
                    value: value.clone(),
                    reason,
                }),
                None if !host_prefixes(value) => {
                    subnet_warning = Some(ConfigWarning::HostPrefixOnly {
                        variable: subnet_variable.to_string(),
                        value: value.clone(),
                    });
                }
                None => {}
            }
        }

        let vip_leaderelection = r.flag("vip_leaderelection", defaults.vip_leaderelection);
        let (vip_lease_namespace, vip_leasename) =
            r.lease_name("vip_leasename", &defaults.vip_leasename);
        let lease_duration = r.seconds("vip_leaseduration", 5);
        let renew_deadline = r.seconds("vip_renewdeadline", 3);
        let retry_period = r.seconds("vip_retryperiod", 1);
        if !(lease_duration > renew_deadline && renew_deadline > retry_period) {
            r.problems.push(ConfigProblem::LeaseTimingOrder {
                lease: lease_duration.as_secs(),
                renew: renew_deadline.as_secs(),
                retry: retry_period.as_secs(),
            });
        }

        let node_name = r.string("vip_nodename");
        let cp_enable = r.flag("cp_enable", defaults.cp_enable);
        let cp_namespace = r.string("cp_namespace").unwrap_or(defaults.cp_namespace);
        let svc_enable = r.flag("svc_enable", defaults.svc_enable);
        let svc_election = r.flag("svc_election", defaults.svc_election);
        let svc_namespace = r.string("svc_namespace");
        let (svc_lease_namespace, svc_leasename) =
            r.lease_name("svc_leasename", &defaults.svc_leasename);
        let lb_class_only = r.flag("lb_class_only", defaults.lb_class_only);
        // kube-vip looks this one up (os.LookupEnv): set but empty is kept.
        let lb_class_name = vars
            .get("lb_class_name")
            .cloned()
            .unwrap_or(defaults.lb_class_name);
        let lb_class_legacy_handling = r.flag(
            "lb_class_legacy_handling",
            defaults.lb_class_legacy_handling,
        );
        let exclude_lb_label = r.flag("kvip_exclude_lb_label", defaults.exclude_lb_label);
        // Allocation must see every Service's address: with one namespace
        // watched it is off, and cannot be turned on.
        let ipam = r.flag("kvip_ipam", defaults.ipam && svc_namespace.is_none());
        if ipam && svc_namespace.is_some() {
            r.problems.push(ConfigProblem::IpamNeedsEveryNamespace);
        }
        let restrict_to_pools = r.flag("kvip_restrict_to_pools", defaults.restrict_to_pools);
        let mut object_name =
            |variable: &'static str, default: String, rule: fn(&str) -> Option<&'static str>| {
                match r.get(variable).map(str::to_string) {
                    None => default,
                    Some(value) => {
                        if let Some(reason) = rule(&value) {
                            r.problems.push(ConfigProblem::InvalidObjectName {
                                variable,
                                value: value.clone(),
                                reason,
                            });
                        }
                        value
                    }
                }
            };
        let ipam_namespace =
            object_name("KUBEVIP_NAMESPACE", defaults.ipam_namespace, dns_label_rule);
        let ipam_config_map = object_name(
            "KUBEVIP_CONFIG_MAP",
            defaults.ipam_config_map,
            dns_subdomain_rule,
        );

        // Unlike the others, an empty value here means something: no metrics.
        let prometheus_server = match vars.get("prometheus_server") {
            None => defaults.prometheus_server,
            Some(value) => {
                if !value.is_empty() && !is_listen_address(value) {
                    r.problems.push(ConfigProblem::InvalidPrometheusServer {
                        value: value.clone(),
                    });
                }
                value.clone()
            }
        };

        let mut arp_rate_raised = None;
        let arp_rate = match r.get("vip_arpRate") {
            None => defaults.arp_rate,
            Some(value) => match value.parse::<i32>() {
                Ok(ms) => match u64::try_from(ms) {
                    Ok(ms) if ms >= ARP_RATE_FLOOR_MS => Duration::from_millis(ms),
                    _ => {
                        arp_rate_raised = Some(i64::from(ms));
                        defaults.arp_rate
                    }
                },
                Err(_) => {
                    r.problems.push(ConfigProblem::InvalidArpRate {
                        value: value.to_string(),
                    });
                    defaults.arp_rate
                }
            },
        };

        let probe_wait = match r.get("kvip_probe_ms") {
            None => defaults.probe_wait,
            Some(value) => match value.parse::<u64>() {
                Ok(ms) if PROBE_MS.contains(&ms) => Duration::from_millis(ms),
                _ => {
                    r.problems.push(ConfigProblem::InvalidProbeWait {
                        value: value.to_string(),
                    });
                    defaults.probe_wait
                }
            },
        };

        let log_level = match r.get("vip_loglevel") {
            None => defaults.log_level,
            Some(value) => match value.parse::<i32>() {
                Ok(level) => level,
                Err(_) => {
                    r.problems.push(ConfigProblem::InvalidLogLevel {
                        value: value.to_string(),
                    });
                    defaults.log_level
                }
            },
        };

        let k8s_config_file = r.string("k8s_config_file");
        let membership = r.flag("kvip_membership", defaults.membership);
        let mut budget = |variable: &'static str, default: u32| match r.get(variable) {
            None => default,
            Some(value) => match value.parse::<u32>() {
                Ok(n) if API_BUDGET.contains(&n) => n,
                _ => {
                    r.problems.push(ConfigProblem::InvalidApiBudget {
                        variable,
                        value: value.to_string(),
                    });
                    default
                }
            },
        };
        let api_qps = budget("kvip_api_qps", defaults.api_qps);
        let api_burst = budget("kvip_api_burst", defaults.api_burst);

        let log_format = match r.get("kvip_log_format") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(value) => {
                r.problems.push(ConfigProblem::InvalidLogFormat {
                    value: value.to_string(),
                });
                LogFormat::Text
            }
        };

        for variable in vars.keys() {
            if variable.starts_with("kvip_") && !KVIP_VARIABLES.contains(&variable.as_str()) {
                r.problems.push(ConfigProblem::UnknownKvipVariable {
                    variable: variable.clone(),
                    known: KVIP_VARIABLES.to_vec(),
                });
            }
        }

        if cp_enable
            && address.is_none()
            && address_name.is_none()
            && !r.problems.iter().any(is_address_problem)
        {
            r.problems.push(ConfigProblem::ControlPlaneWithoutAddress);
        }

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }

        let mut warnings = unsupported_in_use(vars);
        if let Some(value) = arp_rate_raised {
            warnings.push(ConfigWarning::ArpRateRaised { value });
        }
        if matches!(log_level, 5 | 6) {
            warnings.push(ConfigWarning::LogrusLogLevel { value: log_level });
        }
        if dns_mode == DnsMode::Dual && address_name.is_some() {
            warnings.push(ConfigWarning::DualDnsMode);
        }
        warnings.extend(subnet_warning);
        if !cp_enable && !svc_enable {
            warnings.push(ConfigWarning::NoRoleEnabled);
        } else if !vip_arp {
            warnings.push(ConfigWarning::ArpNotEnabled);
        }

        let config = Config {
            vip_arp,
            vip_interface,
            vip_services_interface,
            address,
            address_name,
            dns_mode,
            port,
            vip_subnet,
            vip_leaderelection,
            vip_leasename,
            vip_lease_namespace,
            lease_duration,
            renew_deadline,
            retry_period,
            node_name,
            cp_enable,
            cp_namespace,
            svc_enable,
            svc_election,
            svc_namespace,
            svc_leasename,
            svc_lease_namespace,
            lb_class_only,
            lb_class_name,
            lb_class_legacy_handling,
            prometheus_server,
            arp_rate,
            log_level,
            k8s_config_file,
            log_format,
            membership,
            api_qps,
            api_burst,
            probe_wait,
            exclude_lb_label,
            ipam,
            ipam_namespace,
            ipam_config_map,
            restrict_to_pools,
        };
        Ok((config, warnings))
    }
}

fn is_address_problem(problem: &ConfigProblem) -> bool {
    matches!(problem, ConfigProblem::InvalidAddress { .. })
}

/// Warnings for the kube-vip variables kvip does not implement that are
/// set to something that matters, and for names that look like kube-vip's
/// but are not.
fn unsupported_in_use(vars: &BTreeMap<String, String>) -> Vec<ConfigWarning> {
    let mut warnings: Vec<ConfigWarning> = crate::kube_vip::VARIABLES
        .iter()
        .filter_map(|setting| match setting.support {
            Support::Warned { when, note } => {
                let value = vars.get(setting.name)?;
                crate::kube_vip::in_use(when, value).then(|| ConfigWarning::Unsupported {
                    variable: setting.name.to_string(),
                    note,
                })
            }
            _ => None,
        })
        .collect();
    warnings.extend(
        vars.keys()
            .filter(|name| looks_like_kube_vip(name))
            .map(|name| ConfigWarning::UnknownVariable {
                variable: name.clone(),
            }),
    );
    warnings
}

impl Config {
    /// The control-plane Lease: `vip_leasename` in `cp_namespace`, unless
    /// `vip_leasename` names its namespace.
    pub fn cp_lease(&self) -> LeaseKey {
        LeaseKey {
            namespace: self
                .vip_lease_namespace
                .clone()
                .unwrap_or_else(|| self.cp_namespace.clone()),
            name: self.vip_leasename.clone(),
        }
    }

    /// The global Services Lease (`svc_election=false`), where kube-vip
    /// v1.0.0 puts it: in `cp_namespace` when this instance also runs the
    /// control plane, else in the pod's own namespace (kube-vip reads its
    /// ServiceAccount's; the daemon passes `POD_NAMESPACE`, else that), else
    /// in `cp_namespace`. `svc_leasename` in `namespace/name` form wins over
    /// all of them.
    pub fn services_lease(&self, pod_namespace: Option<&str>) -> LeaseKey {
        let namespace = match (&self.svc_lease_namespace, self.cp_enable, pod_namespace) {
            (Some(ns), _, _) => ns.clone(),
            (None, true, _) | (None, false, None) => self.cp_namespace.clone(),
            (None, false, Some(pod)) => pod.to_string(),
        };
        LeaseKey {
            namespace,
            name: self.svc_leasename.clone(),
        }
    }

    /// Where Service VIPs go: `vip_servicesinterface`, else `vip_interface`,
    /// else by subnet; `vip_servicesinterface=auto` picks by subnet and falls
    /// back to `vip_interface`, as kube-vip does.
    pub fn services_interface(&self) -> InterfaceChoice<'_> {
        match (
            self.vip_services_interface.as_deref(),
            self.vip_interface.as_deref(),
        ) {
            (Some(AUTO_INTERFACE), fallback) => InterfaceChoice::BySubnet { fallback },
            (Some(name), _) | (None, Some(name)) => InterfaceChoice::Named(name),
            (None, None) => InterfaceChoice::BySubnet { fallback: None },
        }
    }

    /// Which `spec.loadBalancerClass` values are this instance's.
    pub fn class_rule(&self) -> crate::service::LbClassRule {
        crate::service::LbClassRule {
            class_only: self.lb_class_only,
            class_name: self.lb_class_name.clone(),
            legacy: self.lb_class_legacy_handling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<ConfigProblem> {
        Config::from_env(&env(pairs)).unwrap_err().problems
    }

    #[test]
    fn an_old_logrus_debug_level_is_warned() {
        for (value, meant) in [("5", "debug"), ("6", "trace")] {
            let (_, warnings) = Config::from_env(&env(&[("vip_loglevel", value)])).unwrap();
            let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
            assert!(
                text.iter()
                    .any(|w| w.contains(&format!("vip_loglevel={value}")) && w.contains(meant)),
                "{text:?}"
            );
        }
        let (_, warnings) = Config::from_env(&env(&[("vip_loglevel", "-4")])).unwrap();
        assert!(
            !warnings
                .iter()
                .any(|w| matches!(w, ConfigWarning::LogrusLogLevel { .. }))
        );
    }

    #[test]
    fn a_round_robin_name_keeps_the_vip_served() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.11".parse().unwrap();
        let mode = DnsMode::Ipv4;
        assert_eq!(mode.follow(None, Some(&[a, b])), Some(a));
        // The same two answers in the other order: no move.
        assert_eq!(mode.follow(Some(a), Some(&[b, a])), Some(a));
        // The served address is gone from the answers: move.
        assert_eq!(mode.follow(Some(a), Some(&[b])), Some(b));
        // A failed lookup keeps it.
        assert_eq!(mode.follow(Some(a), None), Some(a));
    }

    #[test]
    fn go_bool_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "on", " true", "2", "y"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn empty_environment_gives_kube_vip_defaults() {
        let (config, warnings) = Config::from_env(&BTreeMap::new()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.lease_duration, Duration::from_secs(5));
        assert_eq!(config.arp_rate, Duration::from_millis(3000));
        assert_eq!(warnings, vec![ConfigWarning::NoRoleEnabled]);
    }

    #[test]
    fn reads_a_kube_vip_manifest() {
        let vars = env(&[
            ("vip_arp", "true"),
            ("port", "6443"),
            ("vip_interface", "eth0"),
            ("vip_subnet", "32"),
            ("dns_mode", "first"),
            ("vip_ddns", "false"),
            ("cp_enable", "true"),
            ("cp_namespace", "kube-system"),
            ("svc_enable", "true"),
            ("svc_leasename", "plndr-svcs-lock"),
            ("vip_leaderelection", "true"),
            ("vip_leasename", "plndr-cp-lock"),
            ("vip_leaseduration", "15"),
            ("vip_renewdeadline", "10"),
            ("vip_retryperiod", "2"),
            ("address", "192.168.0.40"),
            ("prometheus_server", ":2112"),
            ("vip_nodename", "node-a"),
            ("vip_arpRate", "1500"),
        ]);
        let (config, warnings) = Config::from_env(&vars).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(config.vip_arp && config.cp_enable && config.svc_enable);
        assert_eq!(config.address, Some("192.168.0.40".parse().unwrap()));
        assert_eq!(config.vip_interface.as_deref(), Some("eth0"));
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert_eq!(config.retry_period, Duration::from_secs(2));
        assert_eq!(config.node_name.as_deref(), Some("node-a"));
        assert_eq!(config.arp_rate, Duration::from_millis(1500));
    }

    #[test]
    fn address_wins_over_vip_address() {
        let vars = env(&[("address", "10.0.0.1"), ("vip_address", "10.0.0.2")]);
        let (config, _) = Config::from_env(&vars).unwrap();
        assert_eq!(config.address, Some("10.0.0.1".parse().unwrap()));
        let vars = env(&[("vip_address", "fd00::2")]);
        assert_eq!(
            Config::from_env(&vars).unwrap().0.address,
            Some("fd00::2".parse().unwrap())
        );
    }

    #[test]
    fn node_name_is_vip_nodename_only() {
        // kube-vip v1.0.0 reads no other name for it.
        let vars = env(&[("node_name", "b")]);
        assert_eq!(Config::from_env(&vars).unwrap().0.node_name, None);
        let vars = env(&[("node_name", "b"), ("vip_nodename", "a")]);
        assert_eq!(
            Config::from_env(&vars).unwrap().0.node_name.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn bad_boolean_names_variable_value_and_spellings() {
        let p = problems(&[("svc_enable", "yes")]);
        assert_eq!(p.len(), 1);
        let text = p[0].to_string();
        assert!(text.contains("svc_enable"), "{text}");
        assert!(text.contains("\"yes\""), "{text}");
        assert!(text.contains("TRUE") && text.contains("False"), "{text}");
    }

    #[test]
    fn all_problems_are_collected_and_shown_one_per_line() {
        let err = Config::from_env(&env(&[
            ("vip_arp", "maybe"),
            ("port", "0"),
            ("vip_interface", "this-name-is-too-long"),
            ("address", "kube..example"),
            ("vip_arpRate", "fast"),
            ("vip_loglevel", "debug"),
            ("kvip_log_fromat", "json"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 7, "{err}");
        assert_eq!(err.to_string().lines().count(), 7);
        let text = err.to_string();
        for needle in [
            "vip_arp",
            "port",
            "vip_interface",
            "address",
            "vip_arpRate",
            "vip_loglevel",
            "kvip_log_fromat",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(
            text.contains("kvip_log_format"),
            "known settings are listed"
        );
    }

    #[test]
    fn lease_timings_must_be_ordered() {
        let p = problems(&[("vip_leaseduration", "3"), ("vip_renewdeadline", "3")]);
        assert_eq!(
            p,
            vec![ConfigProblem::LeaseTimingOrder {
                lease: 3,
                renew: 3,
                retry: 1
            }]
        );
        let text = p[0].to_string();
        for v in ["vip_leaseduration", "vip_renewdeadline", "vip_retryperiod"] {
            assert!(text.contains(v));
        }
        for bad in ["0", "-1", "1.5", "5s", "100000"] {
            let p = problems(&[("vip_retryperiod", bad)]);
            assert!(
                matches!(&p[0], ConfigProblem::InvalidSeconds { variable, .. } if variable == "vip_retryperiod"),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn interface_rules_say_which_rule() {
        let cases = [
            ("eth0", None),
            ("enp0s31f6.100", None),
            ("", Some("1 to 15 bytes")),
            ("abcdefghijklmnop", Some("1 to 15 bytes")),
            ("a/b", Some("'/'")),
            ("eth0:1", Some("':'")),
            ("et h0", Some("whitespace")),
            ("..", Some("\"..\"")),
        ];
        for (name, want) in cases {
            let got = interface_name_rule(name);
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(want) => assert!(got.is_some_and(|g| g.contains(want)), "{name}: {got:?}"),
            }
        }
        // An empty value is unset, not an invalid name.
        let (config, _) = Config::from_env(&env(&[("vip_interface", "")])).unwrap();
        assert_eq!(config.vip_interface, None);
    }

    #[test]
    fn subnet_text() {
        for ok in ["32", "128", "32,128", "32/128", "24"] {
            assert!(subnet_rule(ok, None).is_none(), "{ok}");
        }
        for bad in ["", "abc", "129", "33,128", "32,129", "32,128,64", "/32"] {
            assert!(subnet_rule(bad, None).is_some(), "{bad}");
        }
        assert!(subnet_rule("64", Some("10.0.0.1".parse().unwrap())).is_some());
        let p = problems(&[("vip_cidr", "x")]);
        assert!(p[0].to_string().starts_with("vip_cidr="), "{}", p[0]);
        // A subnet prefix is read, and warned: no route comes with a host address.
        for (value, warned) in [
            ("32", false),
            ("32,128", false),
            ("24", true),
            ("24,64", true),
        ] {
            let (_, warnings) =
                Config::from_env(&env(&[("svc_enable", "true"), ("vip_subnet", value)]))
                    .expect("valid");
            let found = warnings
                .iter()
                .find(|w| matches!(w, ConfigWarning::HostPrefixOnly { .. }));
            assert_eq!(found.is_some(), warned, "{value}: {warnings:?}");
            if let Some(w) = found {
                assert!(
                    w.to_string().starts_with(&format!("vip_subnet={value}:")),
                    "{w}"
                );
            }
        }
    }

    #[test]
    fn prometheus_server_empty_disables() {
        let (config, _) = Config::from_env(&env(&[("prometheus_server", "")])).unwrap();
        assert_eq!(config.prometheus_server, "");
        let (config, _) = Config::from_env(&env(&[("prometheus_server", "0.0.0.0:9100")])).unwrap();
        assert_eq!(config.prometheus_server, "0.0.0.0:9100");
        assert!(matches!(
            problems(&[("prometheus_server", "2112")])[..],
            [ConfigProblem::InvalidPrometheusServer { .. }]
        ));
    }

    #[test]
    fn control_plane_needs_an_address() {
        assert_eq!(
            problems(&[("cp_enable", "true")]),
            vec![ConfigProblem::ControlPlaneWithoutAddress]
        );
        // A bad address is reported once, not twice.
        assert_eq!(
            problems(&[("cp_enable", "true"), ("address", "x_y")]).len(),
            1
        );
    }

    #[test]
    fn unsupported_variables_warn_only_when_used() {
        let vars = env(&[
            ("svc_enable", "true"),
            ("vip_arp", "true"),
            ("bgp_enable", "true"),
            ("bgp_as", "65000"),
            ("bgp_peers", "10.0.0.1:65000::false"),
            ("vip_wireguard", "false"),
            ("dns_mode", "first"),
            ("lb_port", "6443"),
            ("lb_enable", "garbage"),
            ("egress_podcidr", ""),
            ("vip_routingtableid", "198"),
            ("enable_upnp", "true"),
            ("PROVIDER_CONFIG", "/etc/cloud-sa/cloud-sa.json"),
        ]);
        let (_, warnings) = Config::from_env(&vars).unwrap();
        let names: Vec<&str> = warnings
            .iter()
            .map(|w| match w {
                ConfigWarning::Unsupported { variable, .. } => variable.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["bgp_enable", "bgp_peers", "lb_enable", "enable_upnp"]
        );
        assert!(warnings[0].to_string().contains("bgp_enable"));
    }

    #[test]
    fn arp_off_with_a_role_warns() {
        let (_, warnings) = Config::from_env(&env(&[("svc_enable", "true")])).unwrap();
        assert_eq!(warnings, vec![ConfigWarning::ArpNotEnabled]);
        let (_, warnings) =
            Config::from_env(&env(&[("svc_enable", "true"), ("vip_arp", "1")])).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn log_format() {
        let (config, _) = Config::from_env(&env(&[("kvip_log_format", "json")])).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(matches!(
            problems(&[("kvip_log_format", "yaml")])[..],
            [ConfigProblem::InvalidLogFormat { .. }]
        ));
    }

    #[test]
    fn membership_is_off_unless_asked_for() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert!(!config.membership);
        let (config, _) = Config::from_env(&env(&[("kvip_membership", "true")])).unwrap();
        assert!(config.membership);
        assert!(matches!(
            problems(&[("kvip_membership", "sometimes")])[..],
            [ConfigProblem::InvalidBool { ref variable, .. }] if variable == "kvip_membership"
        ));
    }

    #[test]
    fn api_budget_defaults_and_bounds() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert_eq!((config.api_qps, config.api_burst), (50, 100));
        let (config, _) =
            Config::from_env(&env(&[("kvip_api_qps", "5"), ("kvip_api_burst", "10")])).unwrap();
        assert_eq!((config.api_qps, config.api_burst), (5, 10));
        for bad in ["0", "-1", "1.5", "10001", "lots"] {
            assert!(
                matches!(
                    problems(&[("kvip_api_qps", bad)])[..],
                    [ConfigProblem::InvalidApiBudget {
                        variable: "kvip_api_qps",
                        ..
                    }]
                ),
                "{bad}"
            );
        }
        let text = problems(&[("kvip_api_burst", "0")])[0].to_string();
        assert!(
            text.contains("kvip_api_burst") && text.contains("1 to 10000"),
            "{text}"
        );
    }

    #[test]
    fn probe_wait_defaults_bounds_and_off() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.probe_wait, Duration::from_millis(100));
        let (config, _) = Config::from_env(&env(&[("kvip_probe_ms", "0")])).unwrap();
        assert!(config.probe_wait.is_zero());
        for bad in ["-1", "5001", "soon"] {
            let text = problems(&[("kvip_probe_ms", bad)])[0].to_string();
            assert!(text.contains("kvip_probe_ms"), "{text}");
        }
    }

    /// Every variable from_env reads, plus kvip-only and unsupported ones.
    fn variables() -> Vec<&'static str> {
        let extra = [
            "kvip_other",
            "bgp_enable",
            "lb_port",
            "vip_cidr",
            "vip_arprate",
        ];
        crate::kube_vip::implemented_variables()
            .chain(KVIP_VARIABLES.iter().copied())
            .chain(extra)
            .collect()
    }

    #[test]
    fn log_levels_are_kube_vip_1_slog_levels() {
        let table = [
            ("-8", LogVerbosity::Debug),
            ("-4", LogVerbosity::Debug),
            ("-3", LogVerbosity::Info),
            ("0", LogVerbosity::Info),
            ("+0", LogVerbosity::Info),
            ("1", LogVerbosity::Warn),
            ("4", LogVerbosity::Warn),
            // logrus's old "debug" is a level above warn in slog: errors only.
            ("5", LogVerbosity::Error),
            ("8", LogVerbosity::Error),
            ("9", LogVerbosity::Off),
            ("2147483647", LogVerbosity::Off),
            ("-2147483648", LogVerbosity::Debug),
        ];
        for (value, want) in table {
            let (config, _) = Config::from_env(&env(&[("vip_loglevel", value)])).unwrap();
            assert_eq!(log_verbosity(config.log_level), want, "{value}");
        }
        assert_eq!(
            log_verbosity(Config::default().log_level),
            LogVerbosity::Info
        );
        for bad in ["debug", "2147483648", "1.0", "", " 4"] {
            if bad.is_empty() {
                continue; // empty is unset
            }
            let p = problems(&[("vip_loglevel", bad)]);
            assert!(
                matches!(&p[..], [ConfigProblem::InvalidLogLevel { .. }]),
                "{bad}: {p:?}"
            );
            assert!(p[0].to_string().contains("vip_loglevel"));
        }
    }

    #[test]
    fn arp_rate_below_the_floor_is_raised_as_kube_vip_does() {
        for (value, want_ms, raised) in [
            ("500", 500, false),
            ("1500", 1500, false),
            ("2147483647", 2_147_483_647, false),
            ("499", 3000, true),
            ("10", 3000, true),
            ("0", 3000, true),
            ("-5", 3000, true),
        ] {
            let (config, warnings) = Config::from_env(&env(&[
                ("vip_arpRate", value),
                ("svc_enable", "true"),
                ("vip_arp", "true"),
            ]))
            .unwrap();
            assert_eq!(config.arp_rate, Duration::from_millis(want_ms), "{value}");
            let warned = warnings
                .iter()
                .any(|w| matches!(w, ConfigWarning::ArpRateRaised { .. }));
            assert_eq!(warned, raised, "{value}: {warnings:?}");
            if raised {
                assert!(warnings[0].to_string().contains("vip_arpRate"));
            }
        }
        for bad in ["fast", "1.5", "2147483648"] {
            let p = problems(&[("vip_arpRate", bad)]);
            assert!(p[0].to_string().contains("vip_arpRate"), "{bad}");
        }
    }

    #[test]
    fn lease_names_take_a_namespace() {
        let (config, _) = Config::from_env(&env(&[
            ("vip_leasename", "vip-system/my-cp-lock"),
            ("svc_leasename", "vip-system/my-svcs-lock"),
            ("cp_namespace", "control"),
        ]))
        .unwrap();
        assert_eq!(
            config.cp_lease(),
            LeaseKey {
                namespace: "vip-system".into(),
                name: "my-cp-lock".into()
            }
        );
        assert_eq!(
            config.services_lease(Some("pods")),
            LeaseKey {
                namespace: "vip-system".into(),
                name: "my-svcs-lock".into()
            }
        );
        for bad in ["a/b/c", "/x", "x/", "Upper", "kube_system/x", "-a/x"] {
            let p = problems(&[("vip_leasename", bad)]);
            assert!(
                matches!(
                    &p[..],
                    [ConfigProblem::InvalidLeaseName {
                        variable: "vip_leasename",
                        ..
                    }]
                ),
                "{bad}: {p:?}"
            );
        }
    }

    /// kube-vip v1.0.0 (pkg/manager/manager_arp.go): the global Services
    /// Lease lives in cp_namespace when the instance runs the control plane
    /// too, else in the pod's namespace, else in cp_namespace.
    #[test]
    fn lease_namespaces_follow_kube_vip() {
        let table = [
            // cp_enable, cp_namespace, pod namespace, control-plane Lease ns, Services Lease ns
            (false, None, None, "kube-system", "kube-system"),
            (false, None, Some("vip"), "kube-system", "vip"),
            (false, Some("control"), Some("vip"), "control", "vip"),
            (false, Some("control"), None, "control", "control"),
            (true, None, Some("vip"), "kube-system", "kube-system"),
            (true, Some("control"), Some("vip"), "control", "control"),
        ];
        for (cp, cp_namespace, pod, want_cp, want_svc) in table {
            let mut vars = vec![("address", "10.0.0.1")];
            if cp {
                vars.push(("cp_enable", "true"));
            }
            if let Some(ns) = cp_namespace {
                vars.push(("cp_namespace", ns));
            }
            let (config, _) = Config::from_env(&env(&vars)).unwrap();
            assert_eq!(config.cp_lease().namespace, want_cp, "{vars:?} {pod:?}");
            assert_eq!(config.cp_lease().name, "plndr-cp-lock");
            let svc = config.services_lease(pod);
            assert_eq!(svc.namespace, want_svc, "{vars:?} {pod:?}");
            assert_eq!(svc.name, "plndr-svcs-lock");
        }
    }

    #[test]
    fn services_interface_auto_picks_by_subnet() {
        let choice = |pairs: &[(&str, &str)]| {
            let (config, _) = Config::from_env(&env(pairs)).unwrap();
            format!("{:?}", config.services_interface())
        };
        assert_eq!(choice(&[]), "BySubnet { fallback: None }");
        assert_eq!(choice(&[("vip_interface", "eth0")]), "Named(\"eth0\")");
        assert_eq!(
            choice(&[("vip_interface", "eth0"), ("vip_servicesinterface", "eth1")]),
            "Named(\"eth1\")"
        );
        assert_eq!(
            choice(&[("vip_interface", "eth0"), ("vip_servicesinterface", "auto")]),
            "BySubnet { fallback: Some(\"eth0\") }"
        );
        assert_eq!(
            choice(&[("vip_servicesinterface", "auto")]),
            "BySubnet { fallback: None }"
        );
    }

    #[test]
    fn address_may_be_a_dns_name() {
        let (config, warnings) = Config::from_env(&env(&[
            ("cp_enable", "true"),
            ("vip_arp", "true"),
            ("address", "api.cluster.example"),
        ]))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.address, None);
        assert_eq!(config.address_name.as_deref(), Some("api.cluster.example"));
        assert_eq!(config.dns_mode, DnsMode::First);
        // vip_address stays an IP address, as kube-vip only resolves address.
        let p = problems(&[("vip_address", "api.cluster.example")]);
        assert!(
            matches!(&p[..], [ConfigProblem::InvalidAddress { .. }]),
            "{p:?}"
        );
        for bad in ["kube..example", "-x.example", "a b", "10.0.0.256"] {
            let p = problems(&[("address", bad)]);
            assert!(
                p[0].to_string().contains("IP address or a DNS name"),
                "{bad}: {p:?}"
            );
        }
        let p = problems(&[("address", "api.example"), ("dns_mode", "both")]);
        assert!(
            matches!(&p[..], [ConfigProblem::InvalidDnsMode { .. }]),
            "{p:?}"
        );
        let (config, warnings) =
            Config::from_env(&env(&[("address", "api.example"), ("dns_mode", "dual")])).unwrap();
        assert_eq!(config.dns_mode, DnsMode::Dual);
        assert!(warnings.contains(&ConfigWarning::DualDnsMode));
    }

    #[test]
    fn dns_mode_picks_as_kube_vip() {
        let resolved: Vec<IpAddr> = ["fd00::1", "10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(DnsMode::First.pick(&resolved), Some(resolved[0]));
        assert_eq!(DnsMode::Ipv4.pick(&resolved), Some(resolved[1]));
        assert_eq!(DnsMode::Dual.pick(&resolved), Some(resolved[1]));
        assert_eq!(DnsMode::Ipv6.pick(&resolved[1..]), None);
        assert_eq!(DnsMode::First.pick(&[]), None);
        assert_eq!(DnsMode::of_family(resolved[0]), DnsMode::Ipv6);
    }

    #[test]
    fn a_name_is_followed_within_its_family() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        let (v4a, v4b, v6) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1"));
        // First lookup: the mode decides.
        assert_eq!(DnsMode::First.follow(None, Some(&[v6, v4a])), Some(v6));
        assert_eq!(DnsMode::Ipv4.follow(None, Some(&[v6, v4a])), Some(v4a));
        // Not resolved yet: nothing to serve.
        assert_eq!(DnsMode::First.follow(None, None), None);
        assert_eq!(DnsMode::Ipv6.follow(None, Some(&[v4a])), None);
        // The name moved: the VIP follows, keeping its family.
        assert_eq!(
            DnsMode::First.follow(Some(v4a), Some(&[v6, v4b])),
            Some(v4b)
        );
        // A failed or empty lookup, or none of the family, keeps the VIP.
        assert_eq!(DnsMode::First.follow(Some(v4a), None), Some(v4a));
        assert_eq!(DnsMode::First.follow(Some(v4a), Some(&[])), Some(v4a));
        assert_eq!(DnsMode::First.follow(Some(v4a), Some(&[v6])), Some(v4a));
    }

    #[test]
    fn class_settings() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.class_rule(), crate::service::LbClassRule::default());
        let (config, _) = Config::from_env(&env(&[
            ("lb_class_name", ""),
            ("lb_class_legacy_handling", "false"),
        ]))
        .unwrap();
        let rule = config.class_rule();
        assert_eq!(
            rule.class_name, "",
            "set but empty is kept, as kube-vip's LookupEnv"
        );
        assert!(!rule.legacy);
        assert!(rule.serves(None));
    }

    #[test]
    fn pools_are_read_from_the_cloud_providers_configmap_unless_one_namespace_is_watched() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert!(config.ipam && !config.restrict_to_pools);
        assert_eq!(
            (
                config.ipam_namespace.as_str(),
                config.ipam_config_map.as_str()
            ),
            ("kube-system", "kubevip")
        );
        let (config, _) = Config::from_env(&env(&[
            ("KUBEVIP_NAMESPACE", "pools"),
            ("KUBEVIP_CONFIG_MAP", "lab.pools"),
            ("kvip_restrict_to_pools", "true"),
            ("kvip_ipam", "false"),
        ]))
        .unwrap();
        assert!(!config.ipam && config.restrict_to_pools);
        assert_eq!(
            (
                config.ipam_namespace.as_str(),
                config.ipam_config_map.as_str()
            ),
            ("pools", "lab.pools")
        );
        let (config, _) = Config::from_env(&env(&[("svc_namespace", "team")])).unwrap();
        assert!(!config.ipam, "one namespace watched: allocation is off");
        assert!(matches!(
            problems(&[("svc_namespace", "team"), ("kvip_ipam", "true")])[..],
            [ConfigProblem::IpamNeedsEveryNamespace]
        ));
        for (variable, bad) in [
            ("KUBEVIP_NAMESPACE", "Pools"),
            ("KUBEVIP_CONFIG_MAP", "a_b"),
        ] {
            let found = problems(&[(variable, bad)]);
            assert!(
                matches!(&found[..], [ConfigProblem::InvalidObjectName { variable: v, .. }] if *v == variable),
                "{found:?}"
            );
            assert!(found[0].to_string().contains(variable));
        }
    }

    #[test]
    fn exclusion_label_is_off_unless_asked_for() {
        let (config, _) = Config::from_env(&env(&[])).unwrap();
        assert!(!config.exclude_lb_label);
        let (config, _) = Config::from_env(&env(&[("kvip_exclude_lb_label", "true")])).unwrap();
        assert!(config.exclude_lb_label);
    }

    #[test]
    fn names_like_kube_vip_variables_are_warned() {
        let (_, warnings) = Config::from_env(&env(&[
            ("vip_arprate", "1000"),
            ("svc_enabled", "true"),
            ("HOME", "/root"),
            ("node_name", "a"),
        ]))
        .unwrap();
        let unknown: Vec<String> = warnings
            .iter()
            .filter_map(|w| match w {
                ConfigWarning::UnknownVariable { variable } => Some(variable.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(unknown, ["svc_enabled", "vip_arprate"]);
        assert!(
            warnings
                .iter()
                .any(|w| w.to_string().contains("vip_arprate"))
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_values(values in proptest::collection::vec(
            proptest::option::of(".{0,24}"), variables().len()
        )) {
            let vars: BTreeMap<String, String> = variables()
                .iter()
                .zip(values)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect();
            match Config::from_env(&vars) {
                Ok((config, _)) => {
                    prop_assert!(config.lease_duration > config.renew_deadline);
                    prop_assert!(config.renew_deadline > config.retry_period);
                    prop_assert!(config.port > 0);
                }
                Err(err) => {
                    prop_assert!(!err.problems.is_empty());
                    prop_assert_eq!(err.to_string().lines().count(), err.problems.len());
                }
            }
        }
    }
}
