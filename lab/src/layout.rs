//! The lab's fixed shape: names of nodes and namespaces, and every address the
//! lab hands out. All of it lives inside namespaces the lab creates; nothing
//! here is routed out of the machine.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Lease timings the lab deploys every daemon with, seconds: duration,
/// renew deadline, retry period (the demo, the benchmark, the test suites).
pub const LEASE_TIMINGS: (u32, u32, u32) = (5, 3, 1);
/// [`LEASE_TIMINGS`] as `kvip manifest` flags.
pub const LEASE_TIMING_FLAGS: [&str; 6] = [
    "--lease-duration",
    "5",
    "--renew-deadline",
    "3",
    "--retry-period",
    "1",
];

/// Prefix of every network namespace the lab creates.
pub const NETNS_PREFIX: &str = "kvl-";
/// Namespace holding the bridge that joins every other namespace.
pub const HUB_NETNS: &str = "kvl-hub";
/// Namespace that runs etcd and kube-controller-manager (not a node).
pub const INFRA_NETNS: &str = "kvl-infra";
/// Namespace that plays the user's laptop.
pub const CLIENT_NETNS: &str = "kvl-client";
/// How many lab namespaces are not nodes: hub, infra, client and router.
pub const SHARED_NAMESPACES: usize = 4;
/// The bridge inside [`HUB_NETNS`].
pub const BRIDGE: &str = "br0";
/// The bridge's IPv4 subnet.
pub const SUBNET4: &str = "10.77.0.0/24";
/// The bridge's IPv6 subnet (with `--ipv6`).
pub const SUBNET6: &str = "fd00:77::/64";
/// Address range inside [`SUBNET4`] that nothing in the lab uses: free for VIPs.
pub const VIP_RANGE4: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 199));
/// Address range inside [`SUBNET6`] free for VIPs.
pub const VIP_RANGE6: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 1, 0),
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 1, 0xff),
);
/// Every node's pod CIDR lies inside this (kube-proxy's `--cluster-cidr`).
pub const POD_RANGE4: &str = "10.78.0.0/16";
/// Every node's IPv6 pod CIDR lies inside this.
pub const POD_RANGE6: &str = "fd00:78::/32";
/// Service ClusterIP range given to the API server.
pub const SERVICE_RANGE4: &str = "10.96.0.0/16";
/// IPv6 Service ClusterIP range (with `--ipv6`).
pub const SERVICE_RANGE6: &str = "fd00:96::/112";
/// ClusterIP of the `kubernetes` Service: in-cluster clients reach the API here.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Port the API servers listen on in their node namespaces.
pub const APISERVER_PORT: u16 = 6443;
/// Port on the host's loopback where the lab forwards to a healthy API server.
pub const HOST_API_PORT: u16 = 16443;
/// etcd's client port inside [`INFRA_NETNS`].
pub const ETCD_PORT: u16 = 2379;

/// A node's role in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs an API server; labelled and tainted as a control-plane node.
    ControlPlane,
    /// A worker node.
    Worker,
}

/// One lab node: a network namespace on the bridge plus a Node object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLayout {
    /// Node object name, also used in log and file names.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// The node's network namespace.
    pub netns: String,
    /// Position among all nodes (0-based); decides addresses.
    pub index: u8,
    /// The node's address on the bridge.
    pub ipv4: Ipv4Addr,
    /// The node's IPv6 address on the bridge (with `--ipv6`).
    pub ipv6: Option<Ipv6Addr>,
}

impl NodeLayout {
    /// The pod CIDR routed to this node (pods get addresses from it).
    pub fn pod_cidr4(&self) -> String {
        format!("10.78.{}.0/24", u16::from(self.index) + 1)
    }

    /// The IPv6 pod CIDR routed to this node.
    pub fn pod_cidr6(&self) -> String {
        format!("fd00:78:{:x}::/64", u16::from(self.index) + 1)
    }

    /// The `n`-th pod address of this node (n from 1).
    pub fn pod_ipv4(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.index + 1, n)
    }

    /// The `n`-th IPv6 pod address of this node.
    pub fn pod_ipv6(&self, n: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x78,
            u16::from(self.index) + 1,
            0,
            0,
            0,
            0,
            u16::from(n),
        )
    }
}

/// What `up` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabShape {
    /// Number of nodes in all.
    pub nodes: u8,
    /// How many of them are control-plane nodes.
    pub control_plane: u8,
    /// Whether the bridge and pods also carry IPv6.
    pub ipv6: bool,
    /// Whether every node has a `kube-ipvs0` carrying every LoadBalancer
    /// address, as kube-proxy's IPVS mode binds them (this kernel has no
    /// IPVS; the lab's kube-proxy forwards with nftables either way).
    #[serde(default)]
    pub ipvs_dummy: bool,
}

/// Largest lab the address plan allows.
pub const MAX_NODES: u8 = 80;

impl LabShape {
    /// Checks the shape and lays out its nodes.
    pub fn layout(&self) -> Result<Vec<NodeLayout>, String> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(format!(
                "--nodes must be between 1 and {MAX_NODES}, not {}",
                self.nodes
            ));
        }
        if self.control_plane == 0 || self.control_plane > self.nodes {
            return Err(format!(
                "--control-plane must be between 1 and --nodes ({}), not {}",
                self.nodes, self.control_plane
            ));
        }
        let mut out = Vec::new();
        for index in 0..self.nodes {
            let (role, name) = if index < self.control_plane {
                (Role::ControlPlane, format!("cp{}", index + 1))
            } else {
                (
                    Role::Worker,
                    format!("worker{}", index - self.control_plane + 1),
                )
            };
            out.push(NodeLayout {
                netns: format!("{NETNS_PREFIX}{name}"),
                name,
                role,
                index,
                ipv4: Ipv4Addr::new(10, 77, 0, 11 + index),
                ipv6: self
                    .ipv6
                    .then(|| Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x11 + u16::from(index))),
            });
        }
        Ok(out)
    }
}

/// Address of the infra namespace (etcd, controller manager) on the bridge.
pub const INFRA_IPV4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// IPv6 address of the infra namespace.
pub const INFRA_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// Namespace that plays the site's router: every node's default route leads
/// here, and it drops whatever is not for the lab (it has no other link).
pub const ROUTER_NETNS: &str = "kvl-router";
/// Address of the router namespace on the bridge: the nodes' default gateway.
pub const ROUTER_IPV4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// IPv6 address of the router namespace.
pub const ROUTER_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// The interface that kube-proxy's IPVS mode binds Service addresses to.
pub const IPVS_DUMMY: &str = "kube-ipvs0";
/// Address of the client namespace on the bridge.
pub const CLIENT_IPV4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);
/// IPv6 address of the client namespace.
pub const CLIENT_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_flags_say_the_timings() {
        let (duration, deadline, retry) = LEASE_TIMINGS;
        let expected = [
            "--lease-duration".to_string(),
            duration.to_string(),
            "--renew-deadline".to_string(),
            deadline.to_string(),
            "--retry-period".to_string(),
            retry.to_string(),
        ];
        assert_eq!(LEASE_TIMING_FLAGS.map(String::from), expected);
    }

    #[test]
    fn default_shape_names_and_addresses() {
        let nodes = LabShape {
            nodes: 3,
            control_plane: 1,
            ipv6: false,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["cp1", "worker1", "worker2"]);
        assert_eq!(nodes[2].ipv4, Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(nodes[2].netns, "kvl-worker2");
        assert_eq!(nodes[1].pod_ipv4(3), Ipv4Addr::new(10, 78, 2, 3));
        assert!(nodes[0].ipv6.is_none());
    }

    #[test]
    fn vip_range_is_inside_subnet_and_clear_of_nodes() {
        let nodes = LabShape {
            nodes: MAX_NODES,
            control_plane: 3,
            ipv6: true,
            ipvs_dummy: false,
        }
        .layout()
        .unwrap();
        let last = nodes.last().unwrap();
        assert!(
            last.ipv4 < VIP_RANGE4.0,
            "node addresses must stay below the VIP range"
        );
        assert!(last.ipv6.unwrap() < VIP_RANGE6.0);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(
            LabShape {
                nodes: 0,
                control_plane: 0,
                ipv6: false,
                ipvs_dummy: false,
            }
            .layout()
            .is_err()
        );
        assert!(
            LabShape {
                nodes: 2,
                control_plane: 3,
                ipv6: false,
                ipvs_dummy: false,
            }
            .layout()
            .is_err()
        );
        assert!(
            LabShape {
                nodes: 200,
                control_plane: 1,
                ipv6: false,
                ipvs_dummy: false,
            }
            .layout()
            .is_err()
        );
    }
}
