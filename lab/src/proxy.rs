//! A kube-proxy stand-in: for each LoadBalancer Service, traffic reaching a
//! node for one of its ingress addresses is DNATed to a ready endpoint —
//! only the node's own for `externalTrafficPolicy: Local` (dropped when it
//! has none, as kube-proxy does), any for `Cluster` (masqueraded). The
//! `kubernetes` ClusterIP leads to the healthy API servers. Rules are one
//! nftables table per family, replaced atomically.

use crate::layout::{self, NodeLayout};
use crate::state::LabState;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

/// What the rules are made from.
pub struct ProxyInput {
    /// Every Service.
    pub services: Vec<Service>,
    /// Every EndpointSlice.
    pub slices: Vec<EndpointSlice>,
    /// API servers accepting connections now.
    pub apiservers: Vec<Ipv4Addr>,
}

/// Namespaces that get rules: every node, plus the infra namespace (for the
/// `kubernetes` ClusterIP).
pub fn namespaces(state: &LabState) -> Vec<String> {
    let mut out: Vec<String> = state.nodes.iter().map(|n| n.netns.clone()).collect();
    out.push(layout::INFRA_NETNS.to_string());
    out
}

/// One forwarding target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    ip: IpAddr,
    port: u16,
}

/// One Service port on one ingress address.
#[derive(Debug)]
struct Frontend {
    ip: IpAddr,
    port: u16,
    protocol: String,
    masquerade: bool,
    targets: Vec<Target>,
}

fn frontends(input: &ProxyInput, node: &NodeLayout) -> Vec<Frontend> {
    let mut out = Vec::new();
    for svc in &input.services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let ingress: Vec<IpAddr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        if ingress.is_empty() {
            continue;
        }
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
        let slices: Vec<&EndpointSlice> = input
            .slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        for port in spec.ports.iter().flatten() {
            let protocol = port
                .protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase();
            let port_name = port.name.clone().unwrap_or_default();
            let port_number = u16::try_from(port.port).unwrap_or(0);
            let targets = targets(&slices, &port_name, local.then_some(node.name.as_str()));
            for ip in &ingress {
                out.push(Frontend {
                    ip: *ip,
                    port: port_number,
                    protocol: protocol.clone(),
                    masquerade: !local,
                    targets: targets
                        .iter()
                        .filter(|t| t.ip.is_ipv4() == ip.is_ipv4())
                        .cloned()
                        .collect(),
                });
            }
        }
    }
    out
}

/// Ready endpoints for a port (serving-terminating ones when none is ready),
/// only those on `node` when given.
fn targets(slices: &[&EndpointSlice], port_name: &str, node: Option<&str>) -> Vec<Target> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if node.is_some() && ep.node_name.as_deref() != node {
                continue;
            }
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse() else { continue };
                if is_ready {
                    ready.insert(Target { ip, port });
                } else if serving && is_terminating {
                    terminating.insert(Target { ip, port });
                }
            }
        }
    }
    if ready.is_empty() { terminating } else { ready }
        .into_iter()
        .collect()
}

/// The nftables script for one namespace.
pub fn render(input: &ProxyInput, node: Option<&NodeLayout>, ipv6: bool) -> String {
    let fronts = node.map(|n| frontends(input, n)).unwrap_or_default();
    let api: Vec<Target> = input
        .apiservers
        .iter()
        .map(|ip| Target {
            ip: IpAddr::V4(*ip),
            port: layout::APISERVER_PORT,
        })
        .collect();
    let mut script = String::new();
    let mut families = vec![("ip", true)];
    if ipv6 {
        families.push(("ip6", false));
    }
    for (family, v4) in families {
        let _ = writeln!(
            script,
            "table {family} kvlab {{}}\ndelete table {family} kvlab\ntable {family} kvlab {{"
        );
        let mut chains = String::new();
        let mut pre = String::new();
        let mut out = String::new();
        if v4 {
            let _ = writeln!(
                out,
                "    {family} daddr {} tcp dport 443 {}",
                layout::KUBERNETES_SERVICE_IP,
                balance("api", "tcp", &api, &mut chains, false)
            );
        }
        for (i, f) in fronts.iter().filter(|f| f.ip.is_ipv4() == v4).enumerate() {
            let verdict = if f.targets.is_empty() {
                "drop".to_string()
            } else {
                balance(
                    &format!("svc{i}"),
                    &f.protocol,
                    &f.targets,
                    &mut chains,
                    f.masquerade,
                )
            };
            let rule = format!(
                "    {family} daddr {} {} dport {} {verdict}\n",
                f.ip, f.protocol, f.port
            );
            pre.push_str(&rule);
            out.push_str(&rule);
        }
        let _ = write!(
            script,
            "  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n{pre}  }}\n\
             \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{out}  }}\n\
             \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark 0x4000 masquerade\n  }}\n\
             {chains}}}\n"
        );
    }
    script
}

/// A verdict spreading connections over `targets` at random, adding the
/// chains it needs to `chains`.
fn balance(
    name: &str,
    protocol: &str,
    targets: &[Target],
    chains: &mut String,
    masquerade: bool,
) -> String {
    if targets.is_empty() {
        return "drop".into();
    }
    let mark = if masquerade {
        "meta mark set 0x4000 "
    } else {
        ""
    };
    let mut map = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let dest = match t.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", t.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", t.port),
        };
        let _ = writeln!(
            chains,
            "  chain {name}-{i} {{\n    meta l4proto {protocol} {mark}dnat to {dest}\n  }}"
        );
        map.push(format!("{i} : jump {name}-{i}"));
    }
    format!(
        "numgen random mod {} vmap {{ {} }}",
        targets.len(),
        map.join(", ")
    )
}

/// Replaces the lab's rules in `netns` atomically.
pub fn apply(netns: &str, script: &str) -> anyhow::Result<()> {
    crate::process::run_with_input("ip", &["netns", "exec", netns, "nft", "-f", "-"], script)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LabShape;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(policy: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                external_traffic_policy: Some(policy.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        }
    }

    fn slice(endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                labels: Some(
                    [("kubernetes.io/service-name".to_string(), "web".to_string())].into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                name: Some(String::new()),
                ..Default::default()
            }]),
            endpoints: endpoints
                .iter()
                .map(|(ip, node, ready)| Endpoint {
                    addresses: vec![(*ip).into()],
                    node_name: Some((*node).into()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn nodes() -> Vec<NodeLayout> {
        LabShape {
            nodes: 3,
            control_plane: 1,
            ipv6: false,
        }
        .layout()
        .unwrap()
    }

    #[test]
    fn local_policy_only_uses_the_nodes_own_endpoints() {
        let input = ProxyInput {
            services: vec![service("Local", "10.77.0.100")],
            slices: vec![slice(&[
                ("10.78.2.1", "worker1", true),
                ("10.78.3.1", "worker2", true),
            ])],
            apiservers: vec![],
        };
        let nodes = nodes();
        let on_worker1 = render(&input, Some(&nodes[1]), false);
        assert!(
            on_worker1.contains("dnat to 10.78.2.1:8080"),
            "{on_worker1}"
        );
        assert!(!on_worker1.contains("10.78.3.1"));
        assert!(
            !on_worker1.contains("meta mark set"),
            "Local keeps the client address"
        );
        let on_cp = render(&input, Some(&nodes[0]), false);
        assert!(
            on_cp.contains("ip daddr 10.77.0.100 tcp dport 80 drop"),
            "{on_cp}"
        );
    }

    #[test]
    fn cluster_policy_uses_every_ready_endpoint_and_masquerades() {
        let input = ProxyInput {
            services: vec![service("Cluster", "10.77.0.100")],
            slices: vec![slice(&[
                ("10.78.2.1", "worker1", true),
                ("10.78.3.1", "worker2", false),
            ])],
            apiservers: vec![Ipv4Addr::new(10, 77, 0, 11)],
        };
        let script = render(&input, Some(&nodes()[0]), false);
        assert!(
            script.contains("meta l4proto tcp meta mark set 0x4000 dnat to 10.78.2.1:8080"),
            "{script}"
        );
        assert!(
            !script.contains("10.78.3.1"),
            "not-ready endpoints get no traffic"
        );
        assert!(script.contains("ip daddr 10.96.0.1 tcp dport 443 numgen random mod 1"));
        assert!(script.contains("dnat to 10.77.0.11:6443"));
    }

    #[test]
    fn no_api_server_means_the_cluster_ip_drops() {
        let input = ProxyInput {
            services: vec![],
            slices: vec![],
            apiservers: vec![],
        };
        assert!(render(&input, None, false).contains("ip daddr 10.96.0.1 tcp dport 443 drop"));
    }
}
