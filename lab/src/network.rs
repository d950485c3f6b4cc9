//! The lab's layer-2 network: one bridge in a hub namespace, a veth from it to
//! every node, the infra namespace and the client. Addresses and routes are
//! set only inside those namespaces; none of them has a default route.

use crate::layout::{
    self, BRIDGE, CLIENT_IPV4, CLIENT_IPV6, CLIENT_NETNS, HUB_NETNS, INFRA_IPV4, INFRA_IPV6,
    INFRA_NETNS, NETNS_PREFIX, NodeLayout,
};
use crate::process::{run, run_in};
use anyhow::Context;

/// One namespace attached to the bridge.
struct Attachment<'a> {
    netns: &'a str,
    peer: String,
    ipv4: std::net::Ipv4Addr,
    ipv6: Option<std::net::Ipv6Addr>,
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

/// Builds the bridge and attaches the infra, client and node namespaces.
pub fn create(nodes: &[NodeLayout], ipv6: bool) -> anyhow::Result<()> {
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
    ];
    for node in nodes {
        attachments.push(Attachment {
            netns: &node.netns,
            peer: format!("vn{}", node.index),
            ipv4: node.ipv4,
            ipv6: node.ipv6,
        });
    }
    for a in &attachments {
        attach(a).with_context(|| format!("attaching {} to the bridge", a.netns))?;
    }
    for node in nodes {
        node_routes(node, nodes).with_context(|| format!("routing pods for {}", node.name))?;
    }
    Ok(())
}

fn attach(a: &Attachment<'_>) -> anyhow::Result<()> {
    run("ip", &["netns", "add", a.netns])?;
    run_in(a.netns, "ip", &["link", "set", "lo", "up"])?;
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
    // Answer ARP only for addresses on the asking interface, as a tidy host does,
    // so a VIP on one node never gets answered by another.
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
    run_in(
        a.netns,
        "ip",
        &["addr", "add", &format!("{}/24", a.ipv4), "dev", "eth0"],
    )?;
    if let Some(v6) = a.ipv6 {
        run_in(
            a.netns,
            "ip",
            &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
        )?;
    }
    run_in(a.netns, "ip", &["link", "set", "eth0", "up"])?;
    // ClusterIPs are reached through the node's own NAT rules; a route
    // makes them leave through eth0 so those rules see them.
    run_in(
        a.netns,
        "ip",
        &["route", "add", layout::SERVICE_RANGE4, "dev", "eth0"],
    )?;
    Ok(())
}

/// Routes to every other node's pod CIDR through that node.
fn node_routes(node: &NodeLayout, all: &[NodeLayout]) -> anyhow::Result<()> {
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
/// brings it back with its routes.
pub fn set_node_link(node: &NodeLayout, all: &[NodeLayout], up: bool) -> anyhow::Result<()> {
    let state = if up { "up" } else { "down" };
    run_in(
        HUB_NETNS,
        "ip",
        &["link", "set", &format!("vn{}", node.index), state],
    )?;
    run_in(&node.netns, "ip", &["link", "set", "eth0", state])?;
    if up {
        // Routes through eth0 went away with the link; put them back.
        run_in(
            &node.netns,
            "ip",
            &["route", "replace", layout::SERVICE_RANGE4, "dev", "eth0"],
        )?;
        node_routes(node, all)?;
    }
    Ok(())
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
