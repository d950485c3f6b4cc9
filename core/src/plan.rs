//! What to change on the node's interfaces: the difference between the
//! addresses kvip should hold and those it holds, withdrawals first, and
//! which interface a VIP belongs on.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

/// A VIP on an interface (added as /32 or /128).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InterfaceAddress {
    /// Interface name, such as "eth0".
    pub interface: String,
    /// The VIP.
    pub address: IpAddr,
}

/// One change to make on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    /// Add the address and start announcing it.
    Add(InterfaceAddress),
    /// Stop announcing and delete the address.
    Remove(InterfaceAddress),
}

/// The changes that turn `actual_owned` (the VIPs kvip put on the node) into
/// `desired`: every removal before any addition, each part sorted.
pub fn plan(
    desired: &BTreeSet<InterfaceAddress>,
    actual_owned: &BTreeSet<InterfaceAddress>,
) -> Vec<Action> {
    let removes = actual_owned
        .difference(desired)
        .cloned()
        .map(Action::Remove);
    let adds = desired.difference(actual_owned).cloned().map(Action::Add);
    removes.chain(adds).collect()
}

/// An interface as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Administratively and operationally up.
    pub up: bool,
    /// Its addresses with prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
}

/// Why no interface could be chosen for a VIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The configured interface does not exist on this node.
    #[error("interface {interface:?} (vip_interface / vip_servicesinterface) does not exist on this node; it has: {}", known.join(", "))]
    InterfaceNotFound {
        /// The configured name.
        interface: String,
        /// The interfaces that exist.
        known: Vec<String>,
    },
    /// The interface the VIP belongs on is down or has no carrier.
    #[error(
        "interface {interface} is down or has no carrier; the VIP is not moved to an interface on another network"
    )]
    InterfaceDown {
        /// The interface.
        interface: String,
    },
    /// Nothing on this node carries the VIP's family.
    #[error(
        "no interface has a subnet containing the address or a default route of its family ({}); set vip_servicesinterface or vip_interface",
        if address.is_ipv4() { "IPv4" } else { "IPv6" }
    )]
    NoInterfaceForFamily {
        /// The VIP.
        address: IpAddr,
    },
}

/// Whether `address` lies in `network/prefix` (same family only).
pub fn subnet_contains(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    fn masked(bits: u128, prefix: u32, width: u32) -> u128 {
        let prefix = prefix.min(width);
        if prefix == 0 {
            0
        } else {
            bits >> (width - prefix)
        }
    }
    let prefix = u32::from(prefix);
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            masked(u32::from(n).into(), prefix, 32) == masked(u32::from(a).into(), prefix, 32)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            masked(u128::from(n), prefix, 128) == masked(u128::from(a), prefix, 128)
        }
        _ => false,
    }
}

/// `network/prefix` from CIDR text such as `10.96.0.0/12`; None when it is not one.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.trim().split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let width = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= width).then_some((address, prefix))
}

/// The first of `ranges` (CIDR text) that holds `address`, if any.
pub fn range_holding(ranges: &[String], address: IpAddr) -> Option<&str> {
    ranges
        .iter()
        .find(|r| parse_cidr(r).is_some_and(|(net, len)| subnet_contains(net, len, address)))
        .map(String::as_str)
}

/// True when `address` is the network or broadcast address of an IPv4
/// subnet on `interface` (hosts must not use those; /31 and /32 have none).
pub fn is_subnet_edge(address: IpAddr, interface: &InterfaceInfo) -> bool {
    let IpAddr::V4(v4) = address else {
        return false;
    };
    interface.addresses.iter().any(|(net, len)| {
        let (IpAddr::V4(net), true) = (net, *len <= 30) else {
            return false;
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        let network = u32::from(*net) & mask;
        let broadcast = network | !mask;
        let a = u32::from(v4);
        a & mask == network && (a == network || a == broadcast)
    })
}

/// The interface to put `address` on: the configured one (which must exist),
/// else the interface with the longest subnet containing the VIP (host
/// routes such as a VIP's own /32 do not count), else the default-route
/// interface of the VIP's family. The interface must be up with carrier:
/// when every interface on the VIP's network is down, the answer is
/// [`PlanError::InterfaceDown`], never an interface on another network.
pub fn choose_interface(
    address: IpAddr,
    configured: Option<&str>,
    interfaces: &[InterfaceInfo],
    default_route_v4: Option<&str>,
    default_route_v6: Option<&str>,
) -> Result<String, PlanError> {
    let usable = |name: &str| match interfaces.iter().find(|i| i.name == name) {
        Some(i) if i.up => Ok(name.to_string()),
        Some(_) => Err(PlanError::InterfaceDown {
            interface: name.to_string(),
        }),
        None => Err(PlanError::InterfaceNotFound {
            interface: name.to_string(),
            known: interfaces.iter().map(|i| i.name.clone()).collect(),
        }),
    };
    if let Some(name) = configured {
        return usable(name);
    }
    let full = if address.is_ipv4() { 32 } else { 128 };
    let on_subnet: Vec<(&InterfaceInfo, u8)> = interfaces
        .iter()
        .flat_map(|i| i.addresses.iter().map(move |(net, len)| (i, *net, *len)))
        .filter(|(_, net, len)| *len < full && subnet_contains(*net, *len, address))
        .map(|(i, _, len)| (i, len))
        .collect();
    // Longest prefix wins; ties go to the first name so every run agrees.
    let best_up = on_subnet
        .iter()
        .filter(|(i, _)| i.up)
        .max_by(|(a, alen), (b, blen)| alen.cmp(blen).then(b.name.cmp(&a.name)));
    if let Some((interface, _)) = best_up {
        return Ok(interface.name.clone());
    }
    if let Some((down, _)) = on_subnet.iter().max_by_key(|(_, len)| *len) {
        return Err(PlanError::InterfaceDown {
            interface: down.name.clone(),
        });
    }
    let default_route = if address.is_ipv4() {
        default_route_v4
    } else {
        default_route_v6
    };
    match default_route {
        Some(name) => usable(name),
        None => Err(PlanError::NoInterfaceForFamily { address }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn subnet_edges_are_recognised() {
        let eth0 = InterfaceInfo {
            name: "eth0".into(),
            up: true,
            addresses: vec![
                ("10.77.0.12".parse().unwrap(), 24),
                ("fd00::1".parse().unwrap(), 64),
            ],
        };
        assert!(is_subnet_edge("10.77.0.0".parse().unwrap(), &eth0));
        assert!(is_subnet_edge("10.77.0.255".parse().unwrap(), &eth0));
        assert!(!is_subnet_edge("10.77.0.100".parse().unwrap(), &eth0));
        assert!(!is_subnet_edge("10.78.0.0".parse().unwrap(), &eth0));
        assert!(!is_subnet_edge("fd00::".parse().unwrap(), &eth0));
        let p2p = InterfaceInfo {
            name: "p".into(),
            up: true,
            addresses: vec![("192.0.2.0".parse().unwrap(), 31)],
        };
        assert!(!is_subnet_edge("192.0.2.0".parse().unwrap(), &p2p));
    }
    use proptest::prelude::*;

    fn ia(interface: &str, address: &str) -> InterfaceAddress {
        InterfaceAddress {
            interface: interface.to_string(),
            address: address.parse().unwrap(),
        }
    }

    fn iface(name: &str, up: bool, addresses: &[(&str, u8)]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.to_string(),
            up,
            addresses: addresses
                .iter()
                .map(|(a, l)| (a.parse().unwrap(), *l))
                .collect(),
        }
    }

    fn apply(actual: &mut BTreeSet<InterfaceAddress>, actions: &[Action]) {
        for action in actions {
            match action {
                Action::Add(a) => assert!(actual.insert(a.clone())),
                Action::Remove(a) => assert!(actual.remove(a)),
            }
        }
    }

    #[test]
    fn removes_come_first_and_sorted() {
        let desired = [ia("eth0", "10.0.0.3"), ia("eth0", "10.0.0.1")].into();
        let actual = [
            ia("eth1", "10.0.0.9"),
            ia("eth0", "10.0.0.2"),
            ia("eth0", "10.0.0.1"),
        ]
        .into();
        assert_eq!(
            plan(&desired, &actual),
            vec![
                Action::Remove(ia("eth0", "10.0.0.2")),
                Action::Remove(ia("eth1", "10.0.0.9")),
                Action::Add(ia("eth0", "10.0.0.3")),
            ]
        );
    }

    #[test]
    fn moving_an_address_between_interfaces_withdraws_first() {
        let desired = [ia("eth1", "10.0.0.1")].into();
        let actual = [ia("eth0", "10.0.0.1")].into();
        assert_eq!(
            plan(&desired, &actual),
            vec![
                Action::Remove(ia("eth0", "10.0.0.1")),
                Action::Add(ia("eth1", "10.0.0.1"))
            ]
        );
    }

    #[test]
    fn cidrs_parse_and_hold_addresses() {
        assert_eq!(parse_cidr("10.96.0.0/12"), Some((ip("10.96.0.0"), 12)));
        assert_eq!(parse_cidr("fd00:10:96::/112").map(|c| c.1), Some(112));
        for bad in ["10.96.0.0", "10.96.0.0/33", "::/129", "x/8", "10.0.0.0/-1"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        let ranges = vec!["garbage".to_string(), "10.96.0.0/12".to_string()];
        assert_eq!(
            range_holding(&ranges, ip("10.100.1.1")),
            Some("10.96.0.0/12")
        );
        assert_eq!(range_holding(&ranges, ip("10.112.0.1")), None);
    }

    #[test]
    fn subnet_math() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(subnet_contains(ip("192.168.1.7"), 24, ip("192.168.1.200")));
        assert!(!subnet_contains(ip("192.168.1.7"), 24, ip("192.168.2.1")));
        assert!(subnet_contains(ip("10.0.0.0"), 0, ip("1.2.3.4")));
        assert!(subnet_contains(ip("fd00:1::5"), 64, ip("fd00:1::ffff")));
        assert!(!subnet_contains(ip("fd00:1::5"), 64, ip("fd00:2::1")));
        assert!(!subnet_contains(ip("10.0.0.1"), 8, ip("::ffff:10.0.0.2")));
        assert!(subnet_contains(ip("10.0.0.1"), 200, ip("10.0.0.1")));
    }

    #[test]
    fn configured_interface_wins_but_must_exist() {
        let ifaces = [
            iface("eth0", true, &[("10.0.0.5", 24)]),
            iface("eth1", false, &[]),
        ];
        let vip = "10.0.0.100".parse().unwrap();
        assert_eq!(
            choose_interface(vip, Some("eth0"), &ifaces, None, None),
            Ok("eth0".to_string())
        );
        assert_eq!(
            choose_interface(vip, Some("eth1"), &ifaces, None, None),
            Err(PlanError::InterfaceDown {
                interface: "eth1".to_string()
            }),
            "down or without carrier"
        );
        let err = choose_interface(vip, Some("bond0"), &ifaces, None, None).unwrap_err();
        assert!(
            err.to_string().contains("bond0") && err.to_string().contains("eth0, eth1"),
            "{err}"
        );
    }

    #[test]
    fn subnet_then_default_route() {
        let ifaces = [
            iface("lo", true, &[("127.0.0.1", 8), ("::1", 128)]),
            iface("eth0", true, &[("10.0.0.5", 16), ("10.0.0.100", 32)]),
            iface("eth1", true, &[("10.0.3.5", 24), ("fd00::5", 64)]),
            iface("eth2", false, &[("10.0.3.6", 25)]),
        ];
        let pick =
            |vip: &str| choose_interface(vip.parse().unwrap(), None, &ifaces, Some("eth0"), None);
        assert_eq!(
            pick("10.0.3.9"),
            Ok("eth1".to_string()),
            "longest up prefix"
        );
        assert_eq!(pick("10.0.9.9"), Ok("eth0".to_string()));
        assert_eq!(pick("192.168.0.1"), Ok("eth0".to_string()), "default route");
        assert_eq!(pick("fd00::99"), Ok("eth1".to_string()));
        assert_eq!(
            pick("fd01::1"),
            Err(PlanError::NoInterfaceForFamily {
                address: "fd01::1".parse().unwrap()
            })
        );
    }

    #[test]
    fn a_network_whose_interfaces_are_down_is_not_left_for_another() {
        let ifaces = [
            iface("eth0", true, &[("10.0.0.5", 24)]),
            iface("eth1", false, &[("10.0.3.5", 24)]),
            iface("eth2", false, &[]),
        ];
        let pick = |vip: &str, default: Option<&str>| {
            choose_interface(vip.parse().unwrap(), None, &ifaces, default, None)
        };
        let down = |name: &str| {
            Err(PlanError::InterfaceDown {
                interface: name.to_string(),
            })
        };
        assert_eq!(pick("10.0.3.9", Some("eth0")), down("eth1"));
        assert_eq!(pick("192.168.0.1", Some("eth2")), down("eth2"));
        assert_eq!(pick("192.168.0.1", Some("eth0")), Ok("eth0".to_string()));
    }

    fn arb_set() -> impl Strategy<Value = BTreeSet<InterfaceAddress>> {
        proptest::collection::btree_set((0..3u8, 0..6u8), 0..8).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(i, a)| ia(&format!("eth{i}"), &format!("10.0.0.{a}")))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn applying_the_plan_reaches_desired_and_replanning_does_nothing(
            desired in arb_set(),
            actual in arb_set(),
        ) {
            let actions = plan(&desired, &actual);
            let first_add = actions.iter().position(|a| matches!(a, Action::Add(_)));
            if let Some(first_add) = first_add {
                prop_assert!(actions[first_add..].iter().all(|a| matches!(a, Action::Add(_))));
            }
            let mut reached = actual.clone();
            apply(&mut reached, &actions);
            prop_assert_eq!(&reached, &desired);
            prop_assert!(plan(&desired, &reached).is_empty());
        }
    }
}
