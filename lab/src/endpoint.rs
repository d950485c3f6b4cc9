//! The lab's API endpoint, in the infra namespace: what kubeadm calls the
//! `controlPlaneEndpoint` (an external load balancer in front of the API
//! servers). Connections to the infra address on port 6443 (kube-proxy's)
//! and to the `kubernetes` ClusterIP from the infra namespace itself (the
//! controller manager's; no kube-proxy runs there) go to the API servers
//! accepting connections now. The nodes' own Service rules are kube-proxy's.
//! Rules are one nftables table, replaced atomically.

use crate::layout;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The nftables script for the infra namespace, leading to `apiservers`.
pub fn render(apiservers: &[Ipv4Addr]) -> String {
    let verdict = if apiservers.is_empty() {
        "drop".to_string()
    } else {
        let map: Vec<String> = apiservers
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("{i} : {ip}"))
            .collect();
        format!(
            "dnat to numgen random mod {} map {{ {} }} : {}",
            apiservers.len(),
            map.join(", "),
            layout::APISERVER_PORT
        )
    };
    let mut script = String::new();
    let _ = write!(
        script,
        "table ip kvlab {{}}\ndelete table ip kvlab\ntable ip kvlab {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n\
         \x20   ip daddr {infra} tcp dport {port} meta mark set 0x4000 {verdict}\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n\
         \x20   ip daddr {cluster_ip} tcp dport 443 {verdict}\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   meta mark 0x4000 masquerade\n  }}\n}}\n",
        infra = layout::INFRA_IPV4,
        port = layout::APISERVER_PORT,
        cluster_ip = layout::KUBERNETES_SERVICE_IP,
    );
    script
}

/// Replaces the lab's rules in `netns` atomically.
pub fn apply(netns: &str, script: &str) -> anyhow::Result<()> {
    crate::process::run_with_input("ip", &["netns", "exec", netns, "nft", "-f", "-"], script)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_and_the_cluster_ip_lead_to_the_healthy_api_servers() {
        let script = render(&[Ipv4Addr::new(10, 77, 0, 11), Ipv4Addr::new(10, 77, 0, 12)]);
        assert!(
            script.contains(
                "ip daddr 10.77.0.2 tcp dport 6443 meta mark set 0x4000 dnat to numgen random mod 2 map { 0 : 10.77.0.11, 1 : 10.77.0.12 } : 6443"
            ),
            "{script}"
        );
        assert!(
            script.contains("ip daddr 10.96.0.1 tcp dport 443 dnat to numgen random mod 2"),
            "{script}"
        );
        assert!(script.contains("meta mark 0x4000 masquerade"), "{script}");
    }

    #[test]
    fn no_api_server_means_both_drop() {
        let script = render(&[]);
        assert!(
            script.contains("ip daddr 10.96.0.1 tcp dport 443 drop"),
            "{script}"
        );
        assert!(
            script.contains("ip daddr 10.77.0.2 tcp dport 6443 meta mark set 0x4000 drop"),
            "{script}"
        );
    }
}
