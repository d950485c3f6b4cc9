//! `kvip-lab up --ipvs-dummy`: kube-proxy's IPVS mode binds every
//! LoadBalancer address to a `kube-ipvs0` link on every node, so each node's
//! kernel takes the address as its own. The kernel here has no IPVS; the
//! lab keeps the same addresses on an empty bridge of that name (kube-proxy's
//! nftables rules still do the forwarding).

use crate::layout::IPVS_DUMMY;
use crate::process::run_in;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every address in the status of every LoadBalancer Service.
pub fn addresses<'a>(services: impl Iterator<Item = &'a Service>) -> BTreeSet<IpAddr> {
    services
        .filter(|s| s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer"))
        .filter_map(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

/// Brings `kube-ipvs0` in `netns` from `have` to `wanted`, updating `have`
/// with what was done.
pub fn sync(
    netns: &str,
    have: &mut BTreeSet<IpAddr>,
    wanted: &BTreeSet<IpAddr>,
) -> anyhow::Result<()> {
    for ip in have.difference(wanted).copied().collect::<Vec<_>>() {
        let _ = run_in(
            netns,
            "ip",
            &["addr", "del", &host_prefix(ip), "dev", IPVS_DUMMY],
        );
        have.remove(&ip);
    }
    for ip in wanted.difference(have).copied().collect::<Vec<_>>() {
        let mut args = vec!["addr", "replace"];
        let prefix = host_prefix(ip);
        args.extend([prefix.as_str(), "dev", IPVS_DUMMY]);
        if ip.is_ipv6() {
            args.push("nodad");
        }
        run_in(netns, "ip", &args)?;
        have.insert(ip);
    }
    Ok(())
}

/// `ip/32` or `ip/128`.
fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    fn service(kind: &str, ips: &[&str]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(kind.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some((*ip).into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_load_balancer_address_and_nothing_else() {
        let services = [
            service("LoadBalancer", &["10.77.0.100", "fd00:77::1:1"]),
            service("ClusterIP", &["10.77.0.101"]),
            service("LoadBalancer", &["not an address", "10.77.0.102"]),
            Service::default(),
        ];
        let got: Vec<String> = addresses(services.iter())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.77.0.100", "10.77.0.102", "fd00:77::1:1"]);
    }
}
