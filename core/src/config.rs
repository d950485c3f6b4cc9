//! kube-vip's environment variables, read and checked into one [`Config`].
//! Every problem is collected, so one start-up attempt reports all of them;
//! kube-vip settings that kvip does not implement come back as warnings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Go's `strconv.ParseBool` spellings, in the order Go documents them.
const GO_BOOL_SPELLINGS: &str = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False";

/// Longest lease timing accepted, in seconds; keeps every sum far from overflow.
const MAX_SECONDS: u64 = 86_400;

/// Bounds of `vip_arpRate`, in milliseconds.
const ARP_RATE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// The kvip-only settings; any other `kvip_` variable is a typo.
pub const KVIP_VARIABLES: &[&str] = &[
    "kvip_api_burst",
    "kvip_api_qps",
    "kvip_log_format",
    "kvip_membership",
    "kvip_probe_ms",
];

/// Bounds of `kvip_probe_ms`: 0 turns probing off.
const PROBE_MS: std::ops::RangeInclusive<u64> = 0..=5_000;

/// Bounds of `kvip_api_qps` and `kvip_api_burst`: writes per second, and the
/// most sent at once after a quiet spell.
pub const API_BUDGET: std::ops::RangeInclusive<u32> = 1..=10_000;

/// The kube-vip variables kvip implements, exactly as `Config::from_env` reads them.
pub const SUPPORTED_VARIABLES: &[&str] = &[
    "vip_arp",
    "vip_interface",
    "vip_servicesinterface",
    "address",
    "vip_address",
    "port",
    "vip_subnet",
    "vip_cidr",
    "vip_leaderelection",
    "vip_leasename",
    "vip_leaseduration",
    "vip_renewdeadline",
    "vip_retryperiod",
    "vip_nodename",
    "node_name",
    "cp_enable",
    "cp_namespace",
    "svc_enable",
    "svc_election",
    "svc_namespace",
    "svc_leasename",
    "lb_class_only",
    "lb_class_name",
    "prometheus_server",
    "vip_arpRate",
    "vip_loglevel",
    "k8s_config_file",
];

/// Every variable name kvip recognises: implemented, kvip-only, and kube-vip's
/// unimplemented ones (reported as warnings).
pub fn known_variable(name: &str) -> bool {
    SUPPORTED_VARIABLES.contains(&name)
        || KVIP_VARIABLES.contains(&name)
        || UNSUPPORTED.iter().any(|(n, _, _)| *n == name)
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

/// The daemon's settings, named after the kube-vip variables they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `vip_arp`: layer-2 announcements; kvip announces this way regardless.
    pub vip_arp: bool,
    /// `vip_interface`: interface for the control-plane VIP (and services, unless overridden).
    pub vip_interface: Option<String>,
    /// `vip_servicesinterface`: interface for Service VIPs.
    pub vip_services_interface: Option<String>,
    /// `address`, else `vip_address`: the control-plane VIP.
    pub address: Option<IpAddr>,
    /// `port`: the API server port behind the control-plane VIP.
    pub port: u16,
    /// `vip_subnet` (or the older `vip_cidr`): prefix text such as "32" or "32,128".
    pub vip_subnet: Option<String>,
    /// `vip_leaderelection`: elect one control-plane announcer through a Lease.
    pub vip_leaderelection: bool,
    /// `vip_leasename`: the control-plane Lease.
    pub vip_leasename: String,
    /// `vip_leaseduration`: how long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// `vip_renewdeadline`: how long a holder keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// `vip_retryperiod`: the pause between election attempts.
    pub retry_period: Duration,
    /// `vip_nodename`, else `node_name`: this node's name.
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
    /// `svc_leasename`: the global Service leader's Lease when `svc_election` is off.
    pub svc_leasename: String,
    /// `lb_class_only`: ignore Services without a `spec.loadBalancerClass`.
    pub lb_class_only: bool,
    /// `lb_class_name`: the `spec.loadBalancerClass` that is ours.
    pub lb_class_name: String,
    /// `prometheus_server`: metrics listen address; empty disables metrics.
    pub prometheus_server: String,
    /// `vip_arpRate` (milliseconds): the refresh period of gratuitous announcements.
    pub arp_rate: Duration,
    /// `vip_loglevel`: logrus level 0 (panic) ..= 6 (trace); 4 is info.
    pub log_level: u8,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vip_arp: false,
            vip_interface: None,
            vip_services_interface: None,
            address: None,
            port: 6443,
            vip_subnet: None,
            vip_leaderelection: false,
            vip_leasename: "plndr-cp-lock".to_string(),
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
            lb_class_only: false,
            lb_class_name: "kube-vip.io/kube-vip-class".to_string(),
            prometheus_server: ":2112".to_string(),
            arp_rate: Duration::from_millis(3000),
            log_level: 4,
            k8s_config_file: None,
            log_format: LogFormat::Text,
            membership: false,
            api_qps: 50,
            api_burst: 100,
            probe_wait: crate::probe::DEFAULT_WAIT,
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
    /// `vip_arpRate` is not whole milliseconds within bounds.
    #[error("vip_arpRate={value:?} must be whole milliseconds from 100 to 3600000 (one hour)")]
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
    /// An address that is not a literal IP.
    #[error("{variable}={value:?} is not an IP address (kvip does not resolve host names)")]
    InvalidAddress {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
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
    /// `vip_loglevel` is not 0..=6.
    #[error("vip_loglevel={value:?} must be a logrus level from 0 (panic) to 6 (trace); 4 is info")]
    InvalidLogLevel {
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

/// How an unsupported variable shows it is in use.
enum Use {
    /// A switch: in use unless Go-false.
    Flag,
    /// A value: in use unless empty or one of the harmless values kube-vip manifests carry.
    Value(&'static [&'static str]),
}

const NO_BGP: &str = "kvip announces on layer 2 only; BGP is on the roadmap";
const NO_ROUTING_TABLE: &str = "kvip announces on layer 2 only and writes no routing tables";
const NO_LB: &str = "kvip does not run an IPVS load balancer; traffic goes to kube-proxy";

/// kube-vip variables that kvip does not implement.
const UNSUPPORTED: &[(&str, Use, &str)] = &[
    ("bgp_enable", Use::Flag, NO_BGP),
    ("bgp_routerid", Use::Value(&[]), NO_BGP),
    ("bgp_routerinterface", Use::Value(&[]), NO_BGP),
    ("bgp_as", Use::Value(&["65000"]), NO_BGP),
    ("bgp_peers", Use::Value(&[]), NO_BGP),
    ("bgp_peeraddress", Use::Value(&[]), NO_BGP),
    ("bgp_peerpass", Use::Value(&[]), NO_BGP),
    ("bgp_peeras", Use::Value(&["65000"]), NO_BGP),
    ("bgp_multihop", Use::Flag, NO_BGP),
    ("bgp_sourceif", Use::Value(&[]), NO_BGP),
    ("bgp_sourceip", Use::Value(&[]), NO_BGP),
    ("bgp_hold_time", Use::Value(&[]), NO_BGP),
    ("bgp_keepalive_interval", Use::Value(&[]), NO_BGP),
    ("annotations", Use::Value(&[]), NO_BGP),
    (
        "vip_wireguard",
        Use::Flag,
        "kvip does not expose Services over WireGuard",
    ),
    (
        "egress_podcidr",
        Use::Value(&[]),
        "kvip does not implement egress",
    ),
    (
        "egress_servicecidr",
        Use::Value(&[]),
        "kvip does not implement egress",
    ),
    (
        "egress_withnftables",
        Use::Flag,
        "kvip does not implement egress",
    ),
    (
        "enable_service_security",
        Use::Flag,
        "kvip does not filter Service ports",
    ),
    (
        "vip_ddns",
        Use::Flag,
        "kvip does not register addresses in DNS",
    ),
    (
        "dhcp_mode",
        Use::Value(&[]),
        "kvip does not request addresses by DHCP; use an IPAM",
    ),
    ("vip_routingtable", Use::Flag, NO_ROUTING_TABLE),
    ("vip_routingtable_id", Use::Value(&[]), NO_ROUTING_TABLE),
    ("vip_routingtable_type", Use::Value(&[]), NO_ROUTING_TABLE),
    ("vip_cleanroutingtable", Use::Flag, NO_ROUTING_TABLE),
    ("lb_enable", Use::Flag, NO_LB),
    ("lb_port", Use::Value(&["6443"]), NO_LB),
    ("lb_fwdmethod", Use::Value(&["local"]), NO_LB),
    (
        "vip_packet",
        Use::Flag,
        "kvip does not call the Equinix Metal API",
    ),
    (
        "vip_packetproject",
        Use::Value(&[]),
        "kvip does not call the Equinix Metal API",
    ),
    (
        "vip_packetprojectid",
        Use::Value(&[]),
        "kvip does not call the Equinix Metal API",
    ),
    (
        "PROVIDER_CONFIG",
        Use::Value(&[]),
        "kvip does not call the Equinix Metal API",
    ),
    (
        "provider_config",
        Use::Value(&[]),
        "kvip does not call the Equinix Metal API",
    ),
    (
        "vip_startleader",
        Use::Flag,
        "kvip always elects; no node starts as leader",
    ),
    (
        "dns_mode",
        Use::Value(&["first"]),
        "kvip takes IP addresses only, not host names",
    ),
    (
        "enableUPNP",
        Use::Flag,
        "kvip does not forward ports by UPnP",
    ),
    (
        "enable_node_labeling",
        Use::Flag,
        "kvip does not label the leader's Node",
    ),
];

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
                });
                None
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
        let vip_services_interface = r.interface("vip_servicesinterface");
        let address = if r.get("address").is_some() {
            r.address("address")
        } else {
            r.address("vip_address")
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
        if let Some(value) = &vip_subnet
            && let Some(reason) = subnet_rule(value, address)
        {
            r.problems.push(ConfigProblem::InvalidSubnet {
                variable: subnet_variable.to_string(),
                value: value.clone(),
                reason,
            });
        }

        let vip_leaderelection = r.flag("vip_leaderelection", defaults.vip_leaderelection);
        let vip_leasename = r.string("vip_leasename").unwrap_or(defaults.vip_leasename);
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

        let node_name = r.string("vip_nodename").or_else(|| r.string("node_name"));
        let cp_enable = r.flag("cp_enable", defaults.cp_enable);
        let cp_namespace = r.string("cp_namespace").unwrap_or(defaults.cp_namespace);
        let svc_enable = r.flag("svc_enable", defaults.svc_enable);
        let svc_election = r.flag("svc_election", defaults.svc_election);
        let svc_namespace = r.string("svc_namespace");
        let svc_leasename = r.string("svc_leasename").unwrap_or(defaults.svc_leasename);
        let lb_class_only = r.flag("lb_class_only", defaults.lb_class_only);
        let lb_class_name = r.string("lb_class_name").unwrap_or(defaults.lb_class_name);

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

        let arp_rate = match r.get("vip_arpRate") {
            None => defaults.arp_rate,
            Some(value) => match value.parse::<u64>() {
                Ok(ms) if ARP_RATE_MS.contains(&ms) => Duration::from_millis(ms),
                _ => {
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
            Some(value) => match value.parse::<u8>() {
                Ok(level) if level <= 6 => level,
                _ => {
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

        if cp_enable && address.is_none() && !r.problems.iter().any(is_address_problem) {
            r.problems.push(ConfigProblem::ControlPlaneWithoutAddress);
        }

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }

        let mut warnings = unsupported_in_use(vars);
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
            port,
            vip_subnet,
            vip_leaderelection,
            vip_leasename,
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
            lb_class_only,
            lb_class_name,
            prometheus_server,
            arp_rate,
            log_level,
            k8s_config_file,
            log_format,
            membership,
            api_qps,
            api_burst,
            probe_wait,
        };
        Ok((config, warnings))
    }
}

fn is_address_problem(problem: &ConfigProblem) -> bool {
    matches!(problem, ConfigProblem::InvalidAddress { .. })
}

/// Warnings for the unsupported kube-vip variables that are set to something that matters.
fn unsupported_in_use(vars: &BTreeMap<String, String>) -> Vec<ConfigWarning> {
    UNSUPPORTED
        .iter()
        .filter(|(name, used, _)| {
            let Some(value) = vars.get(*name).map(|v| v.trim()) else {
                return false;
            };
            match used {
                Use::Flag => !value.is_empty() && parse_go_bool(value) != Some(false),
                Use::Value(harmless) => !value.is_empty() && !harmless.contains(&value),
            }
        })
        .map(|(name, _, note)| ConfigWarning::Unsupported {
            variable: name.to_string(),
            note,
        })
        .collect()
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
    fn node_name_falls_back() {
        let vars = env(&[("node_name", "b")]);
        assert_eq!(
            Config::from_env(&vars).unwrap().0.node_name.as_deref(),
            Some("b")
        );
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
            ("address", "kube.example"),
            ("vip_arpRate", "10"),
            ("vip_loglevel", "7"),
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
            problems(&[("cp_enable", "true"), ("address", "x")]).len(),
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
            ["bgp_enable", "bgp_peers", "lb_enable", "PROVIDER_CONFIG"]
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
            "kvip_api_burst",
            "kvip_api_qps",
            "kvip_log_format",
            "kvip_membership",
            "kvip_probe_ms",
            "kvip_other",
            "bgp_enable",
            "lb_port",
        ];
        SUPPORTED_VARIABLES.iter().copied().chain(extra).collect()
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
