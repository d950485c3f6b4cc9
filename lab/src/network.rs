//! The lab's layer-2 network: one bridge in a hub namespace, a veth from it to
//! every node, the infra namespace, the client and the router. Addresses and
//! routes are set only inside those namespaces. Every node has a default
//! route, as real nodes do, to the router namespace, which has no link but
//! its own on the bridge and drops (and counts) every packet not addressed
//! to itself: nothing the lab sends can leave the machine.

use crate::layout::{
    self, BRIDGE, CLIENT_IPV4, CLIENT_IPV6, CLIENT_NETNS, HUB_NETNS, INFRA_IPV4, INFRA_IPV6,
    INFRA_NETNS, IPVS_DUMMY, NETNS_PREFIX, NodeLayout, ROUTER_IPV4, ROUTER_IPV6, ROUTER_NETNS,
};
use crate::process::{run, run_in};
use anyhow::Context;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// One namespace attached to the bridge.
struct Attachment<'a> {
    netns: &'a str,
    peer: String,
    ipv4: std::net::Ipv4Addr,
    ipv6: Option<std::net::Ipv6Addr>,
}

impl<'a> Attachment<'a> {
    /// A node's attachment: its namespace, its addresses, `vn<index>` on the bridge.
    fn node(node: &'a NodeLayout) -> Self {
        Attachment {
            netns: &node.netns,
            peer: node_peer(node),
            ipv4: node.ipv4,
            ipv6: node.ipv6,
        }
    }
}

/// The bridge end of a node's veth, in the hub.
fn node_peer(node: &NodeLayout) -> String {
    format!("vn{}", node.index)
}

/// An Ethernet (MAC) address, written `02:00:00:00:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    /// Six bytes of one or two hex digits each, separated by colons.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a MAC address: six hex bytes separated by colons, like 02:00:00:00:00:01"
            )
        };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Every network namespace that exists now and belongs to the lab.
pub fn lab_namespaces() -> Vec<String> {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .map(String::from)
        .collect()
}

/// Builds the bridge and attaches the infra, client, router and node
/// namespaces; with `ipvs_dummy`, every node gets an empty `kube-ipvs0`.
pub fn create(nodes: &[NodeLayout], ipv6: bool, ipvs_dummy: bool) -> anyhow::Result<()> {
    run("ip", &["netns", "add", HUB_NETNS])?;
    run_in(HUB_NETNS, "ip", &["link", "set", "lo", "up"])?;
    run_in(HUB_NETNS, "ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    // No forwarding delay or snooping surprises: ports forward as soon as they are up.
    run_in(
        HUB_NETNS,
        "ip",
        &[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ],
    )?;
    run_in(HUB_NETNS, "ip", &["link", "set", BRIDGE, "up"])?;

    let mut attachments = vec![
        Attachment {
            netns: INFRA_NETNS,
            peer: "vinfra".into(),
            ipv4: INFRA_IPV4,
            ipv6: ipv6.then_some(INFRA_IPV6),
        },
        Attachment {
            netns: CLIENT_NETNS,
            peer: "vclient".into(),
            ipv4: CLIENT_IPV4,
            ipv6: ipv6.then_some(CLIENT_IPV6),
        },
        Attachment {
            netns: ROUTER_NETNS,
            peer: "vrouter".into(),
            ipv4: ROUTER_IPV4,
            ipv6: ipv6.then_some(ROUTER_IPV6),
        },
    ];
    attachments.extend(nodes.iter().map(Attachment::node));
    for a in &attachments {
        attach(a).with_context(|| format!("attaching {} to the bridge", a.netns))?;
    }
    crate::process::run_with_input(
        "ip",
        &["netns", "exec", ROUTER_NETNS, "nft", "-f", "-"],
        ROUTER_RULES,
    )
    .context("giving the router namespace its rules")?;
    for node in nodes {
        node_routes(node, nodes).with_context(|| format!("routing pods for {}", node.name))?;
        if ipvs_dummy {
            // kube-proxy's IPVS mode makes a dummy link and leaves it down;
            // an empty bridge holds addresses the same way.
            run_in(
                &node.netns,
                "ip",
                &["link", "add", IPVS_DUMMY, "type", "bridge"],
            )?;
        }
    }
    Ok(())
}

/// The router's rules: whatever reaches it that is not addressed to it
/// (a node's traffic for anywhere off the lab) is counted in `leaving` and
/// dropped; it has no route and no link to send it on anyway.
const ROUTER_RULES: &str = "table inet kvlab_router {
  counter leaving {}
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    fib daddr type { local, broadcast, multicast } accept
    counter name leaving drop
  }
}
";

/// Name of the router's counter of packets that were headed out of the lab.
pub const ROUTER_COUNTER: &str = "leaving";

/// Packets the router has dropped because they were headed out of the lab.
pub fn router_dropped() -> anyhow::Result<u64> {
    let text = run_in(
        ROUTER_NETNS,
        "nft",
        &[
            "-j",
            "list",
            "counter",
            "inet",
            "kvlab_router",
            ROUTER_COUNTER,
        ],
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&text).context("`nft -j list counter` printed no JSON")?;
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|item| item["counter"]["packets"].as_u64())
        .context("the router's counter is missing")
}

/// Makes the namespace of `a`, sets its sysctls and puts it on the bridge.
fn attach(a: &Attachment<'_>) -> anyhow::Result<()> {
    run("ip", &["netns", "add", a.netns])?;
    run_in(a.netns, "ip", &["link", "set", "lo", "up"])?;
    // Answer ARP only for addresses on the asking interface, as a tidy host does,
    // so a VIP on one node never gets answered by another. These belong to the
    // namespace; set before eth0 exists, its "default" values are also eth0's,
    // and those of an eth0 made again later.
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ] {
        run_in(a.netns, "sysctl", &["-qw", &format!("{key}={value}")])?;
    }
    add_link(a)
}

/// Gives the namespace of `a` its `eth0` on the bridge: a veth pair made in
/// the hub (a new pair has a new interface index and a random MAC) whose
/// bridge end is `a.peer`, with the namespace's addresses and the Service
/// route.
fn add_link(a: &Attachment<'_>) -> anyhow::Result<()> {
    // Create the pair inside the hub, then move the node end into its namespace.
    run_in(
        HUB_NETNS,
        "ip",
        &[
            "link", "add", &a.peer, "type", "veth", "peer", "name", "eth0",
        ],
    )?;
    run_in(HUB_NETNS, "ip", &["link", "set", "eth0", "netns", a.netns])?;
    run_in(
        HUB_NETNS,
        "ip",
        &["link", "set", &a.peer, "master", BRIDGE, "up"],
    )?;
    add_missing_addresses(a)?;
    run_in(a.netns, "ip", &["link", "set", "eth0", "up"])?;
    service_route(a.netns)
}

/// Adds the addresses of `a` to its `eth0` where they are not there yet
/// (IPv6 without duplicate address detection); other addresses on `eth0`
/// (a VIP) are left alone.
fn add_missing_addresses(a: &Attachment<'_>) -> anyhow::Result<()> {
    let present = eth0_addresses(a.netns)?;
    if !present.contains(&(IpAddr::V4(a.ipv4), 24)) {
        run_in(
            a.netns,
            "ip",
            &["addr", "add", &format!("{}/24", a.ipv4), "dev", "eth0"],
        )?;
    }
    if let Some(v6) = a.ipv6
        && !present.contains(&(IpAddr::V6(v6), 64))
    {
        run_in(
            a.netns,
            "ip",
            &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
        )?;
    }
    Ok(())
}

/// ClusterIPs are reached through the node's own NAT rules; a route makes
/// them leave through eth0 so those rules see them.
fn service_route(netns: &str) -> anyhow::Result<()> {
    run_in(
        netns,
        "ip",
        &["route", "replace", layout::SERVICE_RANGE4, "dev", "eth0"],
    )?;
    Ok(())
}

/// The node's default route to the router, and routes to every other
/// node's pod CIDR through that node.
fn node_routes(node: &NodeLayout, all: &[NodeLayout]) -> anyhow::Result<()> {
    run_in(
        &node.netns,
        "ip",
        &[
            "route",
            "replace",
            "default",
            "via",
            &ROUTER_IPV4.to_string(),
        ],
    )?;
    if node.ipv6.is_some() {
        run_in(
            &node.netns,
            "ip",
            &[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                &ROUTER_IPV6.to_string(),
            ],
        )?;
    }
    for other in all.iter().filter(|o| o.name != node.name) {
        run_in(
            &node.netns,
            "ip",
            &[
                "route",
                "replace",
                &other.pod_cidr4(),
                "via",
                &other.ipv4.to_string(),
            ],
        )?;
        if let (Some(_), Some(via)) = (node.ipv6, other.ipv6) {
            run_in(
                &node.netns,
                "ip",
                &[
                    "-6",
                    "route",
                    "replace",
                    &other.pod_cidr6(),
                    "via",
                    &via.to_string(),
                ],
            )?;
        }
    }
    Ok(())
}

/// Takes a node's link down (both ends), as if its cable was pulled, or
/// brings it back with its addresses and routes.
pub fn set_node_link(node: &NodeLayout, all: &[NodeLayout], up: bool) -> anyhow::Result<()> {
    let state = if up { "up" } else { "down" };
    run_in(HUB_NETNS, "ip", &["link", "set", &node_peer(node), state])?;
    run_in(&node.netns, "ip", &["link", "set", "eth0", state])?;
    if up {
        restore_node_config(node, all)?;
    }
    Ok(())
}

/// Takes a node's `eth0` administratively down on the node's side only, as
/// a host's network manager does, for `down`; then brings it up and
/// restores what the host's network configuration would.
pub fn flap_node_link(node: &NodeLayout, all: &[NodeLayout], down: Duration) -> anyhow::Result<()> {
    run_in(&node.netns, "ip", &["link", "set", "eth0", "down"])?;
    std::thread::sleep(down);
    run_in(&node.netns, "ip", &["link", "set", "eth0", "up"])?;
    restore_node_config(node, all)
}

/// Deletes a node's `eth0` (its veth pair goes with it, and every address
/// on it) and makes it again as `up` did: the same name, addresses and
/// routes on a new interface with a new index and a new random MAC.
pub fn recreate_node_link(node: &NodeLayout, all: &[NodeLayout]) -> anyhow::Result<()> {
    run_in(&node.netns, "ip", &["link", "del", "eth0"])?;
    add_link(&Attachment::node(node))?;
    node_routes(node, all)
}

/// Gives a node's `eth0` another MAC address; the link stays up.
pub fn set_node_mac(node: &NodeLayout, mac: Mac) -> anyhow::Result<()> {
    run_in(
        &node.netns,
        "ip",
        &["link", "set", "eth0", "address", &mac.to_string()],
    )?;
    Ok(())
}

/// A namespace's `eth0` as the kernel shows it: (interface index, MAC).
pub fn eth0_link(netns: &str) -> anyhow::Result<(u64, String)> {
    let text = run_in(netns, "ip", &["-j", "link", "show", "dev", "eth0"])?;
    let links: serde_json::Value =
        serde_json::from_str(&text).context("`ip -j link show` printed no JSON")?;
    let link = &links[0];
    match (link["ifindex"].as_u64(), link["address"].as_str()) {
        (Some(ifindex), Some(mac)) => Ok((ifindex, mac.to_string())),
        _ => anyhow::bail!("`ip -j link show` in {netns} shows no eth0 index and address"),
    }
}

/// The addresses on a namespace's `eth0`, with their prefix lengths.
fn eth0_addresses(netns: &str) -> anyhow::Result<Vec<(IpAddr, u8)>> {
    let text = run_in(netns, "ip", &["-j", "addr", "show", "dev", "eth0"])?;
    let links: serde_json::Value =
        serde_json::from_str(&text).context("`ip -j addr show` printed no JSON")?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
        .filter_map(|a| {
            let ip = a["local"].as_str()?.parse().ok()?;
            let prefix = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
            Some((ip, prefix))
        })
        .collect())
}

/// Puts back what a node's network configuration sets up on its `eth0`
/// once the link is up again: its own addresses where missing (Linux drops
/// IPv6 addresses from a link that goes down), the Service route and the
/// routes to the other nodes' pods (routes through a link go away with it).
fn restore_node_config(node: &NodeLayout, all: &[NodeLayout]) -> anyhow::Result<()> {
    add_missing_addresses(&Attachment::node(node))?;
    service_route(&node.netns)?;
    node_routes(node, all)
}

/// Deletes every lab namespace (their links go with them).
pub fn destroy() -> Vec<String> {
    let mut problems = Vec::new();
    for ns in lab_namespaces() {
        if let Err(e) = run("ip", &["netns", "delete", &ns]) {
            problems.push(e.to_string());
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let mac: Mac = "02:0A:b:00:ff:1".parse().unwrap();
        assert_eq!(mac, Mac([0x02, 0x0a, 0x0b, 0, 0xff, 0x01]));
        assert_eq!(mac.to_string(), "02:0a:0b:00:ff:01");
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
    }

    #[test]
    fn bad_macs_are_refused() {
        for text in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:001",
            "02:00:00:00::01",
            "02-00-00-00-00-01",
            "02:00:00:00:00:+1",
            "02:00:00:00:00:zz",
        ] {
            let refused = text.parse::<Mac>().unwrap_err();
            assert!(refused.contains("not a MAC address"), "{text:?}: {refused}");
        }
    }
}
