//! Every setting kube-vip v1.0.0 reads, and what kvip does with each: the
//! environment variables of its `config_envvar.go` (plus `vip_configmap`,
//! read by its `cmd/`) and the `kube-vip.io/…` names in its source. One
//! table, so start-up warnings, the coverage test against kube-vip's own
//! source and the compatibility table in docs/migrate-from-kube-vip.md
//! cannot disagree.

/// How a variable that kvip does not implement shows it is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A switch: in use unless Go-false.
    Flag,
    /// A value: in use unless empty or one of the values kube-vip's own
    /// manifests and defaults carry, which do nothing.
    Value(&'static [&'static str]),
}

/// What kvip does with one kube-vip setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and acted on as kube-vip does.
    Same,
    /// Read and acted on, with the difference described.
    Differs(&'static str),
    /// Not implemented; start-up (or, for an annotation, the Service's
    /// first assessment) logs a warning naming it when it is in use.
    Warned {
        /// When it counts as in use (variables only; annotations: any value).
        when: Use,
        /// What kvip does instead.
        note: &'static str,
    },
    /// Not implemented and nothing to warn about: kvip writes or reads no
    /// such thing, and its absence changes nothing a user relies on.
    NotSupported(&'static str),
}

/// One kube-vip setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Its name, exactly as kube-vip spells it.
    pub name: &'static str,
    /// What kvip does with it.
    pub support: Support,
}

const fn same(name: &'static str) -> Setting {
    Setting {
        name,
        support: Support::Same,
    }
}

const fn differs(name: &'static str, how: &'static str) -> Setting {
    Setting {
        name,
        support: Support::Differs(how),
    }
}

const fn flag(name: &'static str, note: &'static str) -> Setting {
    Setting {
        name,
        support: Support::Warned {
            when: Use::Flag,
            note,
        },
    }
}

const fn value(
    name: &'static str,
    harmless: &'static [&'static str],
    note: &'static str,
) -> Setting {
    Setting {
        name,
        support: Support::Warned {
            when: Use::Value(harmless),
            note,
        },
    }
}

const fn unsupported(name: &'static str, note: &'static str) -> Setting {
    Setting {
        name,
        support: Support::NotSupported(note),
    }
}

const BGP: &str = "kvip announces on layer 2 only (BGP is on the roadmap)";
const ROUTING_TABLE: &str = "kvip announces on layer 2 only and writes no routing tables";
const EGRESS: &str = "kvip does not implement egress";
const IPVS: &str = "kvip runs no IPVS load balancer; traffic goes to kube-proxy";
const DHCP: &str = "kvip does not request addresses by DHCP; use an IPAM";
const SECURITY: &str = "kvip does not filter traffic to Service ports";

/// kube-vip v1.0.0's environment variables.
pub const VARIABLES: &[Setting] = &[
    same("vip_arp"),
    differs(
        "vip_arpRate",
        "below 500 ms both use 3000 ms and log it; kvip also sends a burst at every takeover instead of waiting for the next refresh",
    ),
    differs(
        "vip_leaderelection",
        "kvip always elects the announcer through a Lease, so false changes nothing",
    ),
    differs(
        "vip_leasename",
        "kvip also reads namespace/name as the Lease in that namespace (kube-vip takes the whole value as the name, which the API server refuses)",
    ),
    same("vip_leaseduration"),
    same("vip_renewdeadline"),
    same("vip_retryperiod"),
    value(
        "vip_leaseannotations",
        &[],
        "kvip does not annotate the control-plane Lease",
    ),
    differs(
        "vip_loglevel",
        "same slog levels (-4 debug, 0 info, 4 warn, 8 error); kvip refuses a value that is not a whole number where kube-vip panics",
    ),
    same("vip_interface"),
    flag(
        "vip_interfaceloglobal",
        "kvip puts VIPs on a network interface, never on lo",
    ),
    differs(
        "vip_servicesinterface",
        "`auto` means the same (the interface whose subnet holds the address, else vip_interface); kvip falls back to the default-route interface when vip_interface is unset too",
    ),
    differs(
        "vip_subnet",
        "checked for compatibility; kvip adds every VIP as a host address (/32, /128), so it adds no route to a shorter prefix's subnet, and warns naming the variable",
    ),
    value("egress_podcidr", &[], EGRESS),
    value("egress_servicecidr", &[], EGRESS),
    flag("egress_withnftables", EGRESS),
    differs(
        "vip_address",
        "older name of address, used only when address is unset; must be an IP address",
    ),
    differs(
        "address",
        "a DNS name is resolved as kube-vip does (dns_mode, re-resolved every 3 s); a name that does not resolve is retried instead of stopping start-up",
    ),
    same("port"),
    value("annotation", &[], BGP),
    flag(
        "vip_ddns",
        "kvip does not request the control-plane address by DHCP; address must be an IP or a DNS name that resolves",
    ),
    differs(
        "vip_nodename",
        "required: kvip refuses to start without it, where kube-vip falls back to the hostname (which need not be the node's name; kube-vip's manifests set it)",
    ),
    flag(
        "vip_singlenode",
        "kvip always elects through a Lease, also on one node",
    ),
    flag(
        "vip_startleader",
        "kvip always elects; no node starts as leader",
    ),
    flag("bgp_enable", BGP),
    value("bgp_routerid", &[], BGP),
    value("bgp_routerinterface", &[], BGP),
    value("bgp_as", &["65000"], BGP),
    value("bgp_peeraddress", &[], BGP),
    value("bgp_peers", &[], BGP),
    value("bgp_peeras", &["65000"], BGP),
    value("bgp_peerpass", &[], BGP),
    flag("bgp_multihop", BGP),
    value("bgp_sourceif", &[], BGP),
    value("bgp_sourceip", &[], BGP),
    value("bgp_hold_time", &["30"], BGP),
    value("bgp_keepalive_interval", &["10"], BGP),
    flag("zebra_enable", BGP),
    value("zebra_url", &["unix:/var/run/frr/zserv.api"], BGP),
    value("zebra_version", &["6"], BGP),
    value("zebra_software_name", &["frr8.3"], BGP),
    value("mpbgp_nexthop", &[], BGP),
    value("mpbgp_ipv4", &[], BGP),
    value("mpbgp_ipv6", &[], BGP),
    flag(
        "vip_wireguard",
        "kvip does not expose Services over WireGuard",
    ),
    flag("vip_routingtable", ROUTING_TABLE),
    value("vip_routingtableid", &["198"], ROUTING_TABLE),
    value("vip_routingtabletype", &[], ROUTING_TABLE),
    value("vip_routingprotocol", &["248"], ROUTING_TABLE),
    flag("vip_cleanroutingtable", ROUTING_TABLE),
    differs(
        "cp_namespace",
        "the same: the control-plane Lease lives there, and so does the global Services Lease when cp_enable is true",
    ),
    same("cp_enable"),
    flag(
        "cp_detect",
        "kvip health-checks the API server on 127.0.0.1:port; it does not search for one",
    ),
    value(
        "kubernetes_addr",
        &[],
        "kvip health-checks the API server on 127.0.0.1:port",
    ),
    same("svc_enable"),
    same("svc_namespace"),
    differs(
        "svc_election",
        "false: Cluster-policy Services follow the global leader as in kube-vip, but Local-policy Services still get their own election among nodes with ready pods (kube-vip leaves them pending)",
    ),
    differs(
        "svc_leasename",
        "kvip also reads namespace/name as the Lease in that namespace",
    ),
    same("lb_class_only"),
    same("lb_class_name"),
    same("lb_class_legacy_handling"),
    flag("lb_enable", IPVS),
    value("lb_port", &["6443"], IPVS),
    value("lb_fwdmethod", &["local"], IPVS),
    flag("enable_service_security", SECURITY),
    flag(
        "enable_node_labeling",
        "kvip does not label the leader's Node (kube-vip.io/has-ip)",
    ),
    differs(
        "prometheus_server",
        "same listen address; kvip's metric names differ (see docs/metrics.md)",
    ),
    differs(
        "k8s_config_file",
        "kube-vip uses it only when writing manifests (the admin.conf hostPath) and at run time reads /etc/kubernetes/admin.conf, else ~/.kube/config, else the pod's account; kvip reads the kubeconfig it names, and without it does as kube-vip",
    ),
    differs(
        "dns_mode",
        "first, ipv4 and ipv6 as in kube-vip; dual serves the IPv4 address only (the control-plane role serves one address)",
    ),
    flag(
        "disable_service_updates",
        "kvip always writes status.loadBalancer.ingress: kube-proxy needs it",
    ),
    flag(
        "enable_endpoints",
        "kvip reads EndpointSlices, never the deprecated Endpoints",
    ),
    value("mirror_dest_interface", &[], "kvip does not mirror traffic"),
    value("iptables_backend", &[], EGRESS),
    value("backend_health_check_interval", &[], IPVS),
    value(
        "health_check_port",
        &["0"],
        "kvip serves /healthz and /readyz on prometheus_server",
    ),
    flag("enable_upnp", "kvip does not forward ports by UPnP"),
    flag("egress_clean", EGRESS),
    value(
        "vip_configmap",
        &["plndr"],
        "kvip reads Services from the API; kube-vip's ConfigMap-driven `service` command has no counterpart",
    ),
];

/// Older kube-vip names kvip still reads, which v1.0.0 no longer does.
pub const OLDER_VARIABLES: &[(&str, &str)] = &[(
    "vip_cidr",
    "kube-vip 0.x's name of vip_subnet; kvip reads it when vip_subnet is unset",
)];

/// The `kube-vip.io/…` names in kube-vip v1.0.0's source: Service and Node
/// annotations, a Node label and the default load-balancer class.
pub const ANNOTATIONS: &[Setting] = &[
    same("kube-vip.io/loadbalancerIPs"),
    differs(
        "kube-vip.io/ignore",
        "kube-vip ignores a Service only for the exact value true; kvip takes every Go boolean spelling (1, t, True, …) and refuses other values with an Event",
    ),
    differs(
        "kube-vip.io/vipHost",
        "written by the announcing node as by kube-vip; kvip also clears it when nobody announces the Service",
    ),
    same("kube-vip.io/kube-vip-class"),
    differs(
        "kube-vip.io/serviceInterface",
        "the Service's addresses go on that interface, as in kube-vip; `auto` picks the interface whose subnet holds the address; an interface missing on every candidate leaves the Service pending with a reason naming the annotation, and Services sharing an address must name the same interface",
    ),
    unsupported(
        "kube-vip.io/has-ip",
        "the Node label of enable_node_labeling, which kvip warns about",
    ),
    unsupported(
        "kube-vip.io/loadbalancerHostname",
        "kvip writes ingress IPs only, no hostname",
    ),
    Setting {
        name: "kube-vip.io/hwaddr",
        support: Support::Warned {
            when: Use::Value(&[]),
            note: DHCP,
        },
    },
    Setting {
        name: "kube-vip.io/requestedIP",
        support: Support::Warned {
            when: Use::Value(&[]),
            note: DHCP,
        },
    },
    Setting {
        name: "kube-vip.io/egress",
        support: Support::Warned {
            when: Use::Value(&["false"]),
            note: EGRESS,
        },
    },
    unsupported("kube-vip.io/egress-internal", EGRESS),
    unsupported("kube-vip.io/egress-ipv6", EGRESS),
    unsupported("kube-vip.io/egress-destination-ports", EGRESS),
    unsupported("kube-vip.io/egress-source-ports", EGRESS),
    unsupported("kube-vip.io/egress-allowed-networks", EGRESS),
    unsupported("kube-vip.io/egress-denied-networks", EGRESS),
    unsupported("kube-vip.io/active-endpoint", EGRESS),
    unsupported("kube-vip.io/active-endpoint-ipv6", EGRESS),
    unsupported("kube-vip.io/flush-conntrack", EGRESS),
    Setting {
        name: "kube-vip.io/forwardUPNP",
        support: Support::Warned {
            when: Use::Value(&["false"]),
            note: "kvip does not forward ports by UPnP",
        },
    },
    unsupported(
        "kube-vip.io/rp_filter",
        "kvip does not change the interface's reverse-path filter",
    ),
    unsupported("kube-vip.io/ignore-service-security", SECURITY),
];

/// `kube-vip.io/…` names kube-vip v1.0.0 reads that this table does not
/// classify yet: they are being implemented apart and get their row then.
pub const ANNOTATIONS_PENDING: &[&str] = &[];

/// The kube-vip variable `name`, if kube-vip v1.0.0 has it.
pub fn variable(name: &str) -> Option<&'static Setting> {
    VARIABLES.iter().find(|s| s.name == name)
}

/// The variables kvip reads and acts on.
pub fn implemented_variables() -> impl Iterator<Item = &'static str> {
    VARIABLES
        .iter()
        .filter(|s| matches!(s.support, Support::Same | Support::Differs(_)))
        .map(|s| s.name)
}

/// Whether a value of a warned setting is in use (see [`Use`]).
pub fn in_use(when: Use, value: &str) -> bool {
    let value = value.trim();
    match when {
        Use::Flag => !value.is_empty() && crate::config::parse_go_bool(value) != Some(false),
        Use::Value(harmless) => !value.is_empty() && !harmless.contains(&value),
    }
}

/// The annotations of a Service that kube-vip would act on and kvip does
/// not, with what kvip does instead: worth one warning per Service.
pub fn unsupported_annotations<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(&'static str, &'static str)> {
    annotations
        .into_iter()
        .filter_map(|(name, value)| {
            let setting = ANNOTATIONS.iter().find(|s| s.name == name)?;
            match setting.support {
                Support::Warned { when, note } if in_use(when, value) => Some((setting.name, note)),
                _ => None,
            }
        })
        .collect()
}

/// The compatibility table of docs/migrate-from-kube-vip.md, generated
/// from [`VARIABLES`], [`OLDER_VARIABLES`] and [`ANNOTATIONS`].
pub fn markdown_table() -> String {
    fn row(out: &mut String, setting: &Setting) {
        let (kind, text) = match setting.support {
            Support::Same => ("same", String::new()),
            Support::Differs(how) => ("differs", how.to_string()),
            Support::Warned { note, .. } => ("warned", note.to_string()),
            Support::NotSupported(note) => ("not supported", note.to_string()),
        };
        out.push_str(&format!("| `{}` | {kind} | {text} |\n", setting.name));
    }
    let mut out =
        String::from("### Environment variables\n\n| variable | kvip | how |\n|---|---|---|\n");
    for setting in VARIABLES {
        row(&mut out, setting);
    }
    for (name, how) in OLDER_VARIABLES {
        out.push_str(&format!("| `{name}` | older name | {how} |\n"));
    }
    out.push_str("\n### Annotations, labels and classes\n\n| name | kvip | how |\n|---|---|---|\n");
    for setting in ANNOTATIONS {
        row(&mut out, setting);
    }
    for name in ANNOTATIONS_PENDING {
        out.push_str(&format!("| `{name}` | not yet | being implemented |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn every_name_is_listed_once() {
        let mut seen = BTreeSet::new();
        for name in VARIABLES
            .iter()
            .map(|s| s.name)
            .chain(OLDER_VARIABLES.iter().map(|(n, _)| *n))
            .chain(ANNOTATIONS.iter().map(|s| s.name))
            .chain(ANNOTATIONS_PENDING.iter().copied())
        {
            assert!(seen.insert(name), "{name} is listed twice");
        }
    }

    #[test]
    fn variables_are_never_merely_unsupported() {
        // A variable is either acted on or warned about by name.
        for s in VARIABLES {
            assert!(
                !matches!(s.support, Support::NotSupported(_)),
                "{} must be implemented or warned",
                s.name
            );
        }
    }

    #[test]
    fn in_use_rules() {
        assert!(in_use(Use::Flag, "true"));
        assert!(in_use(Use::Flag, "garbage"));
        assert!(!in_use(Use::Flag, "false"));
        assert!(!in_use(Use::Flag, "0"));
        assert!(!in_use(Use::Flag, ""));
        assert!(in_use(Use::Value(&["65000"]), "65001"));
        assert!(!in_use(Use::Value(&["65000"]), "65000"));
        assert!(!in_use(Use::Value(&[]), " "));
    }

    #[test]
    fn service_annotations_worth_a_warning() {
        let annotations: BTreeMap<String, String> = [
            ("kube-vip.io/egress", "true"),
            ("kube-vip.io/forwardUPNP", "false"),
            ("kube-vip.io/loadbalancerIPs", "10.0.0.1"),
            ("kube-vip.io/rp_filter", "1"),
            ("example.com/other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let warned: Vec<&str> = unsupported_annotations(&annotations)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(warned, ["kube-vip.io/egress"]);
    }

    #[test]
    fn the_table_has_a_row_per_name() {
        let table = markdown_table();
        for s in VARIABLES.iter().chain(ANNOTATIONS) {
            assert!(table.contains(&format!("| `{}` |", s.name)), "{}", s.name);
        }
        assert!(table.contains("| `vip_cidr` | older name |"));
    }
}
