//! Whether this node can put an address on an interface now, and what it
//! tells the other nodes about it. A node that cannot place an address is
//! no candidate for it (see [`crate::Assessment::exclude_unplaceable`]);
//! each instance publishes its problems on its instance Lease, so every node
//! and `kvip status` see the same candidates and can say why.
//!
//! kvip marks every address it adds with an address protocol (`IFA_PROTO`),
//! one per role, and adopts or removes only addresses with its own mark:
//! addresses of kube-proxy's `kube-ipvs0`, keepalived or the other role are
//! never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::plan::{InterfaceInfo, choose_interface};
use crate::service::{SERVICE_INTERFACE_ANNOTATION, ServiceInterface};

/// The address protocol of Service VIPs kvip adds (`ip -d addr` shows it).
pub const LB_ADDRESS_PROTOCOL: u8 = 107;

/// The address protocol of the control-plane VIP kvip adds.
pub const CP_ADDRESS_PROTOCOL: u8 = 108;

/// Instance Lease annotation: the addresses this node cannot place, by problem (JSON).
pub const PLACEMENT_ANNOTATION: &str = "kvip.io/placement";

/// Instance Lease annotation: the node's Ethernet addresses, comma separated.
pub const MACS_ANNOTATION: &str = "kvip.io/macs";

/// At most this many addresses are published (about 80 kB at worst, well
/// within an object's annotation limit); the rest are left out.
const MAX_PUBLISHED: usize = 2000;

/// How a problem that is someone else's copy of the address starts.
const FOREIGN: &str = "already on ";

/// The problem of an address already on `interface` without kvip's mark.
/// The problem texts carry no address, so a node's publication groups its
/// addresses under a few problems.
fn foreign(interface: &str) -> String {
    format!(
        "{FOREIGN}{interface} and kvip did not put it there (another tool, a leftover, or \
         kvip's other role); kvip leaves it alone"
    )
}

/// The interface of a problem that says the address is already there
/// without kvip's mark: another host address answers for it on that node.
pub fn foreign_interface(problem: &str) -> Option<&str> {
    problem.strip_prefix(FOREIGN)?.split(' ').next()
}

/// How a problem that is another host answering for the address starts.
const ANSWERED: &str = "answered by ";

/// The problem of an address another host answered a probe for (`mac`,
/// as `aa:bb:cc:dd:ee:ff`): no node may take it. Always published one by
/// one, whatever else a node cannot place.
pub fn answered(mac: &str) -> String {
    format!("{ANSWERED}{mac}, another host: the address is in use on the network")
}

/// The MAC of a problem that says another host answered for the address.
pub fn answering_mac(problem: &str) -> Option<&str> {
    problem.strip_prefix(ANSWERED)?.split([',', ' ']).next()
}

/// A MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether a kernel of `release` (`uname -r`, such as `6.1.0-13-amd64`)
/// keeps address marks: `IFA_PROTO` came with Linux 5.18; older kernels
/// accept the attribute and drop it.
pub fn kernel_keeps_marks(release: &str) -> bool {
    let mut parts = release.trim().split(['.', '-']);
    let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 18),
        _ => false,
    }
}

/// The interface an address goes on when its Services ask for `chosen`
/// (`kube-vip.io/serviceInterface`) and `configured` is set: the one named,
/// none for `auto` (the subnet decides), else the configured one.
fn interface_for<'a>(
    chosen: Option<&'a ServiceInterface>,
    configured: Option<&'a str>,
) -> Option<&'a str> {
    match chosen {
        None => configured,
        Some(ServiceInterface::Named(name)) => Some(name.as_str()),
        Some(ServiceInterface::Auto) => None,
    }
}

/// What this node's interfaces look like, for placement.
#[derive(Debug, Clone, Copy)]
pub struct Interfaces<'a> {
    /// `vip_servicesinterface` / `vip_interface`, if set.
    pub configured: Option<&'a str>,
    /// Every interface with its addresses, leaving out those this role put
    /// there (its mark): a host address still listed is someone else's.
    pub list: &'a [InterfaceInfo],
    /// The IPv4 default route's interface.
    pub default_v4: Option<&'a str>,
    /// The IPv6 default route's interface.
    pub default_v6: Option<&'a str>,
}

impl Interfaces<'_> {
    /// The interface for `address`, or why it cannot be placed now: no
    /// usable interface, or the same host address already there without
    /// this role's mark (someone else's; kvip leaves it alone).
    pub fn place(&self, address: IpAddr) -> Result<String, String> {
        self.place_as(address, None)
    }

    /// The interface `address` belongs on when its Services ask for
    /// `chosen` (the configured one when absent), whether or not the address
    /// is already there; a problem with `chosen` names the annotation.
    pub fn interface_as(
        &self,
        address: IpAddr,
        chosen: Option<&ServiceInterface>,
    ) -> Result<String, String> {
        choose_interface(
            address,
            interface_for(chosen, self.configured),
            self.list,
            self.default_v4,
            self.default_v6,
        )
        .map_err(|e| match chosen {
            Some(c) => format!("annotation {SERVICE_INTERFACE_ANNOTATION} {c}: {e}"),
            None => e.to_string(),
        })
    }

    /// [`Self::place`] for an address whose Services ask for `chosen`
    /// (`kube-vip.io/serviceInterface`) instead of the configured interface;
    /// a problem with it names the annotation.
    pub fn place_as(
        &self,
        address: IpAddr,
        chosen: Option<&ServiceInterface>,
    ) -> Result<String, String> {
        let interface = self.interface_as(address, chosen)?;
        let host = if address.is_ipv4() { 32 } else { 128 };
        let present = self
            .list
            .iter()
            .find(|i| i.name == interface)
            // IPv6 refuses a /128 next to the same address with another prefix.
            .is_some_and(|i| {
                i.addresses
                    .iter()
                    .any(|(a, len)| *a == address && (*len == host || address.is_ipv6()))
            });
        if present {
            return Err(foreign(&interface));
        }
        Ok(interface)
    }

    /// The problems of every address in `addresses` that cannot be placed,
    /// each where `chosen` puts it (the configured interface when absent).
    pub fn problems(
        &self,
        addresses: impl IntoIterator<Item = IpAddr>,
        chosen: &BTreeMap<IpAddr, ServiceInterface>,
    ) -> BTreeMap<IpAddr, String> {
        addresses
            .into_iter()
            .filter_map(|a| self.place_as(a, chosen.get(&a)).err().map(|e| (a, e)))
            .collect()
    }
}

/// `problems` as the placement annotation: `{"problem": ["address", …]}`.
/// Beyond [`MAX_PUBLISHED`] addresses, each family's most common problem
/// is published for the unspecified address (`0.0.0.0`, `::`): every
/// address of that family. Use [`published`] for what others will read.
pub fn encode(problems: &BTreeMap<IpAddr, String>) -> String {
    let mut by_problem: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Another host's address is everybody's problem: never folded.
    let (answered, problems): (BTreeMap<&IpAddr, &String>, BTreeMap<&IpAddr, &String>) = problems
        .iter()
        .partition(|(_, p)| answering_mac(p).is_some());
    for (address, problem) in answered.into_iter().take(MAX_PUBLISHED) {
        by_problem
            .entry(problem.as_str())
            .or_default()
            .push(address.to_string());
    }
    if problems.len() <= MAX_PUBLISHED {
        for (address, problem) in problems {
            by_problem
                .entry(problem.as_str())
                .or_default()
                .push(address.to_string());
        }
    } else {
        for v4 in [true, false] {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, problem) in problems.iter().filter(|(a, _)| a.is_ipv4() == v4) {
                *counts.entry(problem.as_str()).or_default() += 1;
            }
            if let Some((problem, _)) = counts.into_iter().max_by_key(|(_, n)| *n) {
                let every = if v4 { "0.0.0.0" } else { "::" };
                by_problem
                    .entry(problem)
                    .or_default()
                    .push(every.to_string());
            }
        }
    }
    serde_json::to_string(&by_problem).unwrap_or_default()
}

/// What the other nodes read of `problems` (see [`encode`]); a node judges
/// itself by the same, so all agree on its candidacy.
pub fn published(problems: &BTreeMap<IpAddr, String>) -> BTreeMap<IpAddr, String> {
    decode(&encode(problems)).unwrap_or_default()
}

/// The problem `problems` has with `address`, itself or its whole family.
pub fn problem_for(problems: &BTreeMap<IpAddr, String>, address: IpAddr) -> Option<&String> {
    let every: IpAddr = if address.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    problems.get(&address).or_else(|| problems.get(&every))
}

/// The placement annotation back as address to problem; a value that is
/// not what [`encode`] writes is an error naming the annotation.
pub fn decode(text: &str) -> Result<BTreeMap<IpAddr, String>, String> {
    let by_problem: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
        .map_err(|e| format!("annotation {PLACEMENT_ANNOTATION}: not a JSON map of lists: {e}"))?;
    let mut out = BTreeMap::new();
    for (problem, addresses) in by_problem {
        for address in addresses {
            let ip: IpAddr = address.parse().map_err(|_| {
                format!("annotation {PLACEMENT_ANNOTATION}: {address:?} is not an IP address")
            })?;
            out.insert(ip, problem.clone());
        }
    }
    Ok(out)
}

/// MAC addresses as the MAC annotation (`aa:bb:cc:dd:ee:ff,…`).
pub fn encode_macs(macs: &BTreeSet<[u8; 6]>) -> String {
    let each: Vec<String> = macs.iter().map(mac_text).collect();
    each.join(",")
}

/// The MAC annotation back; entries that are not a MAC are skipped.
pub fn decode_macs(text: &str) -> BTreeSet<[u8; 6]> {
    text.split(',')
        .filter_map(|one| {
            let bytes: Vec<u8> = one
                .trim()
                .split(':')
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<_, _>>()
                .ok()?;
            <[u8; 6]>::try_from(bytes).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, addresses: &[(&str, u8)]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            up,
            addresses: addresses
                .iter()
                .map(|(a, l)| (a.parse().unwrap(), *l))
                .collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn missing_down_and_foreign_addresses_cannot_be_placed() {
        let list = [
            // 10.0.0.51/32 is kvip's own, so it is not listed.
            iface("eth0", true, &[("10.0.0.5", 24), ("10.0.0.50", 32)]),
            iface("eth1", false, &[("10.0.1.5", 24)]),
            iface("kube-ipvs0", false, &[("10.0.0.60", 32)]),
        ];
        let here = Interfaces {
            configured: None,
            list: &list,
            default_v4: Some("eth0"),
            default_v6: None,
        };
        assert_eq!(here.place(ip("10.0.0.51")), Ok("eth0".into()));
        assert_eq!(
            here.place(ip("10.0.0.60")),
            Ok("eth0".into()),
            "kube-ipvs0 holds it, but it belongs on eth0"
        );
        let taken = here.place(ip("10.0.0.50")).unwrap_err();
        assert_eq!(foreign_interface(&taken), Some("eth0"), "{taken}");
        assert_eq!(foreign_interface("interface eth1 is down"), None);
        assert!(
            here.place(ip("10.0.1.9"))
                .unwrap_err()
                .contains("eth1 is down")
        );
        let none = here.place(ip("fd00::1")).unwrap_err();
        assert!(
            none.contains("no interface") && none.contains("IPv6"),
            "{none}"
        );
        assert!(
            !none.contains("fd00::1"),
            "problems name no address: {none}"
        );
        let bond = Interfaces {
            configured: Some("bond0"),
            ..here
        };
        let problems = bond.problems([ip("10.0.0.51"), ip("10.0.0.52")], &BTreeMap::new());
        assert_eq!(problems.len(), 2);
        assert!(problems.values().all(|p| p.contains("\"bond0\"")));
    }

    #[test]
    fn a_service_interface_overrides_the_configured_one() {
        let list = [
            iface("eth0", true, &[("10.0.0.5", 24)]),
            iface("eth1", true, &[("10.0.1.5", 24)]),
            iface("eth2", false, &[]),
        ];
        let here = Interfaces {
            configured: Some("eth0"),
            list: &list,
            default_v4: Some("eth0"),
            default_v6: None,
        };
        let named = |n: &str| ServiceInterface::Named(n.to_string());
        assert_eq!(here.place(ip("10.0.1.9")), Ok("eth0".into()), "configured");
        assert_eq!(
            here.place_as(ip("10.0.1.9"), Some(&named("eth1"))),
            Ok("eth1".into())
        );
        assert_eq!(
            here.place_as(ip("10.0.1.9"), Some(&ServiceInterface::Auto)),
            Ok("eth1".into()),
            "auto: the interface whose subnet holds it, not the configured one"
        );
        let missing = here
            .place_as(ip("10.0.1.9"), Some(&named("eth9")))
            .unwrap_err();
        assert!(
            missing.starts_with("annotation kube-vip.io/serviceInterface eth9: ")
                && missing.contains("eth9"),
            "{missing}"
        );
        let down = here
            .place_as(ip("10.0.1.9"), Some(&named("eth2")))
            .unwrap_err();
        assert!(
            down.contains("kube-vip.io/serviceInterface") && down.contains("down"),
            "{down}"
        );
        let chosen = BTreeMap::from([(ip("10.0.1.9"), named("eth9"))]);
        let problems = here.problems([ip("10.0.1.9"), ip("10.0.0.9")], &chosen);
        assert_eq!(
            problems.len(),
            1,
            "only the annotated address: {problems:?}"
        );
    }

    #[test]
    fn marks_need_linux_5_18() {
        assert!(kernel_keeps_marks("6.18.44-fc-v782\n"));
        assert!(kernel_keeps_marks("5.18.0"));
        assert!(!kernel_keeps_marks("5.15.0-91-generic"));
        assert!(!kernel_keeps_marks("4.18.0-513.el8.x86_64"));
        assert!(!kernel_keeps_marks(""));
        assert!(!kernel_keeps_marks("garbage"));
    }

    #[test]
    fn problems_round_trip_through_the_annotation() {
        let problems = BTreeMap::from([
            (ip("10.0.0.1"), "interface eth1 is down".to_string()),
            (ip("fd00::1"), "interface eth1 is down".to_string()),
            (ip("10.0.0.2"), "no interface".to_string()),
        ]);
        let text = encode(&problems);
        assert_eq!(decode(&text), Ok(problems));
        assert!(decode("[1,2]").unwrap_err().contains(PLACEMENT_ANNOTATION));
        assert!(decode(r#"{"x":["nope"]}"#).unwrap_err().contains("nope"));
        assert_eq!(decode("{}"), Ok(BTreeMap::new()));
    }

    #[test]
    fn too_many_problems_are_published_for_the_whole_family() {
        let problems: BTreeMap<IpAddr, String> = (0..3000u32)
            .map(|i| {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                (ip, "interface \"eth0\" does not exist".to_string())
            })
            .chain([(ip("fd00::1"), "no interface (IPv6)".to_string())])
            .collect();
        let text = encode(&problems);
        assert!(text.len() < 200, "{text}");
        let seen = published(&problems);
        for (address, problem) in &problems {
            assert_eq!(problem_for(&seen, *address), Some(problem));
        }
        assert!(
            problem_for(&seen, ip("192.0.2.1")).is_some(),
            "every IPv4 address"
        );
        let few = BTreeMap::from([(ip("10.0.0.1"), "down".to_string())]);
        assert_eq!(published(&few), few);
        assert_eq!(problem_for(&few, ip("10.0.0.2")), None);
    }

    #[test]
    fn macs_round_trip_and_junk_is_skipped() {
        let macs = BTreeSet::from([
            [0x02, 0, 0, 0, 0, 0x0a],
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        ]);
        let text = encode_macs(&macs);
        assert_eq!(text, "02:00:00:00:00:0a,aa:bb:cc:dd:ee:ff");
        assert_eq!(decode_macs(&text), macs);
        assert_eq!(decode_macs("zz:00,02:00:00:00:00:0a:01,"), BTreeSet::new());
    }
}
