//! The node's interfaces, addresses and default routes through one
//! long-lived rtnetlink connection: reads them all in one [`NetState`], and
//! adds or deletes a VIP as a host address (/32, or /128 without DAD)
//! marked with the role's address protocol. An address without that mark
//! is never deleted, and adding one that is there without it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use kvip_core::InterfaceAddress;
use kvip_core::plan::InterfaceInfo;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::error::{Capability, NetError, errno, to_io};

/// An interface as the announcer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Its Ethernet address (all zeros when it has none, such as `lo`).
    pub mac: [u8; 6],
    /// Administratively up and running (carrier or unknown state).
    pub up: bool,
}

/// Everything placement and kernel truth need, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetState {
    /// Every interface with every address.
    pub interfaces: Vec<InterfaceInfo>,
    /// Every interface by name.
    pub links: BTreeMap<String, LinkInfo>,
    /// The IPv4 default route's interface.
    pub default_v4: Option<String>,
    /// The IPv6 default route's interface.
    pub default_v6: Option<String>,
    /// Host addresses by their address protocol (kvip's marks among them).
    pub marked: BTreeMap<u8, BTreeSet<InterfaceAddress>>,
}

impl NetState {
    /// The interfaces without the host addresses marked `protocol`: what a
    /// role places its addresses by (its own VIPs do not count, anyone
    /// else's do).
    pub fn without_marked(&self, protocol: u8) -> Vec<InterfaceInfo> {
        let Some(marked) = self.marked.get(&protocol) else {
            return self.interfaces.clone();
        };
        self.interfaces
            .iter()
            .map(|i| InterfaceInfo {
                name: i.name.clone(),
                up: i.up,
                addresses: i
                    .addresses
                    .iter()
                    .filter(|(ip, len)| {
                        *len != host_prefix(*ip)
                            || !marked.contains(&InterfaceAddress {
                                interface: i.name.clone(),
                                address: *ip,
                            })
                    })
                    .copied()
                    .collect(),
            })
            .collect()
    }

    /// The host addresses marked `protocol`.
    pub fn marked_by(&self, protocol: u8) -> BTreeSet<InterfaceAddress> {
        self.marked.get(&protocol).cloned().unwrap_or_default()
    }

    /// The Ethernet addresses of interfaces that could carry a VIP (they
    /// have an address on a subnet): what the node tells the others, so a
    /// pod's veth coming and going changes nothing published.
    pub fn announcing_macs(&self) -> BTreeSet<[u8; 6]> {
        self.interfaces
            .iter()
            .filter(|i| {
                i.addresses
                    .iter()
                    .any(|(ip, len)| *len < host_prefix(*ip) && !is_link_local(*ip))
            })
            .filter_map(|i| self.links.get(&i.name))
            .map(|l| l.mac)
            .filter(|m| *m != [0; 6])
            .collect()
    }

    /// Every Ethernet address of this node.
    pub fn macs(&self) -> BTreeSet<[u8; 6]> {
        self.links
            .values()
            .map(|l| l.mac)
            .filter(|m| *m != [0; 6])
            .collect()
    }
}

/// A shared connection to the kernel's routing netlink; cheap to clone.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The kernel keeps address marks (`IFA_PROTO`, Linux 5.18 and later).
    marks: bool,
}

impl Netlink {
    /// Opens the connection and spawns its task; needs a Tokio runtime.
    pub fn new() -> Result<Self, NetError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| NetError::NetlinkUnavailable {
                source: io::Error::other(e),
            })?;
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|source| NetError::NetlinkUnavailable { source })?;
        runtime.spawn(connection);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let marks = kvip_core::placement::kernel_keeps_marks(&release);
        if !marks {
            tracing::warn!(
                kernel = release.trim(),
                "this kernel does not keep address marks (IFA_PROTO needs Linux 5.18): kvip cannot tell the addresses it added from others', and treats every host address (/32, /128) of a VIP as its own, as before marks"
            );
        }
        Ok(Netlink { handle, marks })
    }

    /// Whether addresses carry kvip's marks on this kernel.
    pub fn marks(&self) -> bool {
        self.marks
    }

    /// Every interface with its state and addresses, the default routes and
    /// the marks of host addresses.
    pub async fn state(&self) -> Result<NetState, NetError> {
        let links = self.all_links().await?;
        let messages = self.address_messages().await?;
        let (v4, v6) = self.default_route_indexes().await?;
        let name_of: BTreeMap<u32, String> =
            links.iter().map(|l| (l.index, l.name.clone())).collect();
        let mut addresses: BTreeMap<u32, Vec<(IpAddr, u8)>> = BTreeMap::new();
        let mut marked: BTreeMap<u8, BTreeSet<InterfaceAddress>> = BTreeMap::new();
        for message in &messages {
            let Some(ip) = local_address(message) else {
                continue;
            };
            let index = message.header.index;
            addresses
                .entry(index)
                .or_default()
                .push((ip, message.header.prefix_len));
            let Some(interface) = name_of.get(&index) else {
                continue;
            };
            if message.header.prefix_len != host_prefix(ip) {
                continue;
            }
            let ia = InterfaceAddress {
                interface: interface.clone(),
                address: ip,
            };
            match protocol(message) {
                Some(protocol) => {
                    marked.entry(protocol).or_default().insert(ia);
                }
                // Without marks every host address counts as either role's.
                None if !self.marks => {
                    for protocol in [
                        kvip_core::placement::LB_ADDRESS_PROTOCOL,
                        kvip_core::placement::CP_ADDRESS_PROTOCOL,
                    ] {
                        marked.entry(protocol).or_default().insert(ia.clone());
                    }
                }
                None => {}
            }
        }
        let name = |index: Option<u32>| index.and_then(|i| name_of.get(&i).cloned());
        Ok(NetState {
            interfaces: links
                .iter()
                .map(|link| InterfaceInfo {
                    addresses: addresses.remove(&link.index).unwrap_or_default(),
                    name: link.name.clone(),
                    up: link.up,
                })
                .collect(),
            default_v4: name(v4),
            default_v6: name(v6),
            links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
            marked,
        })
    }

    /// The interface called `name`.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetError> {
        let mut request = std::pin::pin!(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
        );
        let message = request.try_next().await.map_err(|e| {
            if errno(&e) == Some(libc::ENODEV) {
                NetError::InterfaceNotFound {
                    interface: name.to_string(),
                }
            } else {
                read_error(format!("read interface {name}"), e)
            }
        })?;
        message
            .map(|m| link_info(&m))
            .ok_or_else(|| NetError::InterfaceNotFound {
                interface: name.to_string(),
            })
    }

    /// The output interface indexes of the IPv4 and IPv6 default routes
    /// (main table, lowest metric first), if there are any.
    async fn default_route_indexes(&self) -> Result<(Option<u32>, Option<u32>), NetError> {
        let v4 = self
            .default_route_index(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .await?;
        let v6 = self
            .default_route_index(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .await?;
        Ok((v4, v6))
    }

    /// Adds `ip` to `interface` as a host address (/32; /128 with NODAD so it
    /// is usable at once) marked `protocol`. `Ok(false)` when it was already
    /// there with that mark; an error when it is there without it (not
    /// kvip's: left alone).
    pub async fn add_address(
        &self,
        interface: &str,
        ip: IpAddr,
        protocol: u8,
    ) -> Result<bool, NetError> {
        let link = self.link(interface).await?;
        let prefix = host_prefix(ip);
        let mut request = self.handle.address().add(link.index, ip, prefix);
        shape_vip_message(request.message_mut(), protocol);
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                match self.host_address(link.index, ip).await? {
                    Some(_) if !self.marks => Ok(false),
                    Some(existing) if protocol_of(&existing) == Some(protocol) => Ok(false),
                    _ => Err(NetError::NotOurs {
                        interface: interface.to_string(),
                        address: ip,
                    }),
                }
            }
            Err(e) => Err(NetError::netlink(
                format!("add {ip}/{prefix} to {interface}"),
                Capability::NetAdmin,
                to_io(e),
            )),
        }
    }

    /// Puts `protocol`'s mark on the host address `ip` already on
    /// `interface`: in place where the kernel allows it (IPv6; IPv4 from
    /// Linux 6.4), else by deleting it and adding it again with the mark (a
    /// gap of a few milliseconds).
    pub async fn mark_address(
        &self,
        interface: &str,
        ip: IpAddr,
        protocol: u8,
    ) -> Result<(), NetError> {
        let link = self.link(interface).await?;
        let prefix = host_prefix(ip);
        let action = || format!("mark {ip}/{prefix} on {interface} as kvip's");
        let mut request = self.handle.address().add(link.index, ip, prefix).replace();
        shape_vip_message(request.message_mut(), protocol);
        request
            .execute()
            .await
            .map_err(|e| NetError::netlink(action(), Capability::NetAdmin, to_io(e)))?;
        let marked = self
            .host_address(link.index, ip)
            .await?
            .is_some_and(|m| protocol_of(&m) == Some(protocol));
        if !marked {
            self.remove_address(interface, ip).await?;
            self.add_address(interface, ip, protocol).await?;
        }
        Ok(())
    }

    /// Deletes the host address `ip` (/32 or /128) from `interface`. The
    /// caller removes only addresses it holds (added with its mark, or
    /// adopted with it), so no dump is needed to find it. `Ok(false)` when
    /// it was not there.
    pub async fn remove_address(&self, interface: &str, ip: IpAddr) -> Result<bool, NetError> {
        let link = self.link(interface).await?;
        let prefix = host_prefix(ip);
        let action = || format!("remove {ip}/{prefix} from {interface}");
        let mut message = AddressMessage::default();
        message.header.family = match ip {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        message.header.prefix_len = prefix;
        message.header.index = link.index;
        message.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv4() {
            message.attributes.push(AddressAttribute::Local(ip));
        }
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(true),
            // Not there (deleted by someone else, or never added).
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(NetError::netlink(action(), Capability::NetAdmin, to_io(e))),
        }
    }

    /// The host address `ip` on interface `index`, as the kernel has it.
    async fn host_address(
        &self,
        index: u32,
        ip: IpAddr,
    ) -> Result<Option<AddressMessage>, NetError> {
        let prefix = host_prefix(ip);
        let mut found = std::pin::pin!(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(ip)
                .set_prefix_length_filter(prefix)
                .execute()
        );
        found
            .try_next()
            .await
            .map_err(|e| read_error(format!("read {ip}/{prefix}"), e))
    }

    async fn all_links(&self) -> Result<Vec<LinkInfo>, NetError> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_info(&m))
            .try_collect()
            .await
            .map_err(|e| read_error("list interfaces".to_string(), e))
    }

    /// Every address of every interface.
    async fn address_messages(&self) -> Result<Vec<AddressMessage>, NetError> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| read_error("list addresses".to_string(), e))
    }

    /// The output interface index of the best default route of one family.
    async fn default_route_index(&self, dump: RouteMessage) -> Result<Option<u32>, NetError> {
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(dump)
            .execute()
            .try_collect()
            .await
            .map_err(|e| read_error("list routes".to_string(), e))?;
        Ok(best_default_route(&routes))
    }
}

/// A read failed; reads need no capability, so only permission errors from
/// unusual sandboxes would map to one.
fn read_error(action: String, error: rtnetlink::Error) -> NetError {
    NetError::netlink(action, Capability::NetAdmin, to_io(error))
}

/// Link-local addresses (169.254/16, fe80::/10): every pod's veth has one,
/// and no VIP can be one.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// The prefix length of a host address of `ip`'s family.
pub fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Makes rtnetlink's address message the one kvip wants for a VIP: no
/// broadcast attribute (a /32 needs none, and a broadcast equal to the VIP
/// would add a broadcast route for it), and IPv6 without duplicate address
/// detection, which would hold the address "tentative" for a second or more
/// and fail it while the previous holder's cache entries still point
/// elsewhere.
fn shape_vip_message(message: &mut AddressMessage, protocol: u8) {
    message
        .attributes
        .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
    message
        .attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(protocol)));
    if message.header.prefix_len == 128 {
        message.header.flags = AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
}

fn link_info(message: &LinkMessage) -> LinkInfo {
    let mut name = String::new();
    let mut mac = [0u8; 6];
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => mac.copy_from_slice(bytes),
            _ => {}
        }
    }
    let flags = message.header.flags;
    LinkInfo {
        index: message.header.index,
        name,
        mac,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
    }
}

/// The mark (address protocol) of an address, if it has one.
fn protocol_of(message: &AddressMessage) -> Option<u8> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Protocol(p) => Some(u8::from(*p)),
        _ => None,
    })
}

/// The mark of an address other than the kernel's own (0 is none).
fn protocol(message: &AddressMessage) -> Option<u8> {
    protocol_of(message).filter(|p| *p != 0)
}

/// The address of this host in an address message: IFA_LOCAL for IPv4 (on
/// point-to-point links IFA_ADDRESS is the peer), else IFA_ADDRESS.
fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address)
}

/// The interface index of the main table's default route with the lowest
/// metric (first nexthop of a multipath route).
fn best_default_route(routes: &[RouteMessage]) -> Option<u32> {
    routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0 && r.header.kind == RouteType::Unicast)
        .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .filter_map(|r| {
            let mut oif = None;
            let mut metric = 0;
            for attribute in &r.attributes {
                match attribute {
                    RouteAttribute::Oif(index) => oif = Some(*index),
                    RouteAttribute::MultiPath(hops) if oif.is_none() => {
                        oif = hops.first().map(|h| h.interface_index)
                    }
                    RouteAttribute::Priority(p) => metric = *p,
                    _ => {}
                }
            }
            oif.map(|oif| (metric, oif))
        })
        .min()
        .map(|(_, oif)| oif)
}

/// The table of a route: the RTA_TABLE attribute when present (tables above
/// 255), else the header's byte.
fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteNextHop;

    fn route(prefix: u8, table: u8, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut message = RouteMessageBuilder::<Ipv4Addr>::new().build();
        message.header.destination_prefix_length = prefix;
        message.header.table = table;
        message.header.kind = RouteType::Unicast;
        message.attributes = attributes;
        message
    }

    #[test]
    fn default_route_is_the_main_tables_lowest_metric() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let routes = vec![
            route(24, main, vec![RouteAttribute::Oif(9)]),
            route(0, 100, vec![RouteAttribute::Oif(8)]),
            route(
                0,
                main,
                vec![RouteAttribute::Oif(3), RouteAttribute::Priority(200)],
            ),
            route(
                0,
                main,
                vec![RouteAttribute::Oif(4), RouteAttribute::Priority(100)],
            ),
        ];
        assert_eq!(best_default_route(&routes), Some(4));
        assert_eq!(best_default_route(&routes[..2]), None);

        let mut hop = RouteNextHop::default();
        hop.interface_index = 7;
        let multipath = route(0, main, vec![RouteAttribute::MultiPath(vec![hop])]);
        assert_eq!(best_default_route(&[multipath]), Some(7));

        let big_table = route(
            0,
            0,
            vec![RouteAttribute::Table(254), RouteAttribute::Oif(5)],
        );
        assert_eq!(best_default_route(&[big_table]), Some(5));
    }

    #[test]
    fn vip_messages_have_no_broadcast_and_v6_skips_dad() {
        let mut v4 = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .address(Ipv4Addr::new(192, 0, 2, 10), 32)
            .build();
        shape_vip_message(&mut v4, 107);
        assert!(
            !v4.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Broadcast(_)))
        );
        assert!(!v4.header.flags.contains(AddressHeaderFlags::Nodad));
        assert_eq!(protocol_of(&v4), Some(107), "marked as kvip's");

        let mut v6 = rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
            .address("fd00:99::10".parse().unwrap(), 128)
            .build();
        shape_vip_message(&mut v6, 107);
        assert!(v6.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(
            v6.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
    }

    #[test]
    fn local_beats_peer_address() {
        let mut message = AddressMessage::default();
        message.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()),
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
        ];
        assert_eq!(local_address(&message), Some("10.0.0.1".parse().unwrap()));
        message.attributes.remove(1);
        assert_eq!(local_address(&message), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn host_prefixes() {
        assert_eq!(host_prefix("192.0.2.1".parse().unwrap()), 32);
        assert_eq!(host_prefix("fd00::1".parse().unwrap()), 128);
    }
}
