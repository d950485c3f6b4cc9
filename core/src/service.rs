//! A Kubernetes Service, as plain values, turned into what kvip announces:
//! which Services are ours, their addresses, traffic policy and Lease name.
//! Malformed input becomes an error naming the field, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::parse_go_bool;
use crate::lease_names::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::sharing::LeaseKey;

/// The prefix of the Lease names a Service's election may use by itself
/// (`kubevip-<name>` by default): kube-vip's and kvip's own control Leases
/// (`plndr-*`, `kvip-*`) are not a Service's to hold.
pub const SERVICE_LEASE_PREFIX: &str = "kubevip-";

/// Comma-separated VIPs of both families; wins over `spec.loadBalancerIP`.
pub const LOADBALANCER_IPS_ANNOTATION: &str = "kube-vip.io/loadbalancerIPs";
/// A Go-true value makes kvip leave the Service alone.
pub const IGNORE_ANNOTATION: &str = "kube-vip.io/ignore";
/// Overrides the Service's Lease name (`kubevip-<name>` otherwise).
pub const LEASE_NAME_ANNOTATION: &str = "kube-vip.io/leaseName";
/// Written by kvip: the node announcing the Service.
pub const VIP_HOST_ANNOTATION: &str = "kube-vip.io/vipHost";
/// The interface to announce the Service's addresses on instead of the
/// configured one (kube-vip-cloud-provider writes it); `auto`: the
/// interface whose subnet holds the address.
pub const SERVICE_INTERFACE_ANNOTATION: &str = "kube-vip.io/serviceInterface";
/// kube-vip 1.2's VLAN sub-interface for the Service; kvip refuses it.
pub const SERVICE_VLAN_ANNOTATION: &str = "kube-vip.io/serviceVLAN";
/// The Service type kvip serves.
pub const LOAD_BALANCER_TYPE: &str = "LoadBalancer";
/// A Service's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.externalTrafficPolicy`: where traffic for the VIP may land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any node; kube-proxy forwards to endpoints elsewhere.
    Cluster,
    /// Only nodes with a local endpoint; the client address is preserved.
    Local,
}

/// The fields of a Service kvip reads, copied out of the API object by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInput {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `spec.type`, such as "LoadBalancer".
    pub type_: String,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.loadBalancerIP` (deprecated upstream, still used).
    pub load_balancer_ip: Option<String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.externalTrafficPolicy`; absent means Cluster.
    pub external_traffic_policy: Option<String>,
    /// `spec.ipFamilies`, such as ["IPv4", "IPv6"]; empty means not yet defaulted.
    pub ip_families: Vec<String>,
    /// `spec.ipFamilyPolicy`: SingleStack, PreferDualStack or RequireDualStack.
    pub ip_family_policy: Option<String>,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<(String, u16)>,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.creationTimestamp` in seconds since the epoch.
    pub created: i64,
    /// The IPs in `status.loadBalancer.ingress`: what was served.
    pub ingress_ips: Vec<String>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<String>,
    /// The Lease `kube-vip.io/leaseName` names exists, carries
    /// [`MANAGED_BY_LABEL`] and is none of kvip's control Leases (only read
    /// for names outside [`SERVICE_LEASE_PREFIX`]).
    pub lease_labelled: bool,
}

impl ServiceInput {
    /// The Lease its `kube-vip.io/leaseName` names, in its namespace.
    pub fn named_lease(&self) -> Option<crate::sharing::LeaseKey> {
        let name = self.annotations.get(LEASE_NAME_ANNOTATION)?;
        Some(crate::sharing::LeaseKey {
            namespace: self.key.namespace.clone(),
            name: name.clone(),
        })
    }
}

/// Which `spec.loadBalancerClass` values are ours (`lb_class_only`,
/// `lb_class_name`, `lb_class_legacy_handling`), decided as kube-vip v1.0.0
/// decides ([`LbClassRule::serves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbClassRule {
    /// Ignore Services without a class (legacy handling only).
    pub class_only: bool,
    /// The class that is ours; may be empty.
    pub class_name: String,
    /// kube-vip's legacy handling (its default): a Service without a class
    /// is ours unless `class_only`. Without it a Service is ours exactly
    /// when its class equals `class_name`, no class matching an empty name.
    pub legacy: bool,
}

impl Default for LbClassRule {
    /// kube-vip's defaults: legacy handling, no class needed; ours is
    /// `kube-vip.io/kube-vip-class`.
    fn default() -> Self {
        Self {
            class_only: false,
            class_name: "kube-vip.io/kube-vip-class".to_string(),
            legacy: true,
        }
    }
}

impl LbClassRule {
    /// Whether a Service whose `spec.loadBalancerClass` is `class` is ours
    /// (kube-vip's `lbClassFilterLegacy` and `lbClassFilter`).
    pub fn serves(&self, class: Option<&str>) -> bool {
        match (self.legacy, class) {
            (_, Some(class)) => class == self.class_name,
            (true, None) => !self.class_only,
            (false, None) => self.class_name.is_empty(),
        }
    }
}

/// A Service kvip announces, reduced to what the decisions need.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceView {
    /// Namespace and name.
    pub key: ServiceKey,
    /// The VIPs, duplicates removed, in the order the user wrote them; may be empty.
    pub addresses: Vec<IpAddr>,
    /// Where traffic may land.
    pub policy: TrafficPolicy,
    /// The Lease that elects this Service's announcer, in its namespace.
    pub lease_name: String,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<(String, u16)>,
    /// Its age, when Services contend for an address.
    pub rank: ClaimRank,
    /// Those of its addresses its `status.loadBalancer.ingress` lists: it
    /// has them, and keeps them against any other claim.
    pub served: Vec<IpAddr>,
    /// Where its addresses come from.
    pub addresses_from: AddressSource,
    /// `kube-vip.io/serviceInterface`: where its addresses go on a node,
    /// instead of the configured interface.
    pub interface: Option<ServiceInterface>,
}

impl ServiceView {
    /// The Lease that elects this Service on its own, as kube-vip elects
    /// every Service.
    pub fn lease_key(&self) -> LeaseKey {
        LeaseKey {
            namespace: self.key.namespace.clone(),
            name: self.lease_name.clone(),
        }
    }
}

/// The field a Service's addresses come from, in kube-vip's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AddressSource {
    /// `kube-vip.io/loadbalancerIPs`.
    Annotation,
    /// `spec.loadBalancerIP`.
    #[default]
    Spec,
    /// `status.loadBalancer.ingress`, when neither of the others names an
    /// address (or `spec.loadBalancerIP` agrees with it): clearing the
    /// status would lose the address, so it is never cleared.
    Ingress,
}

/// The interface a Service's `kube-vip.io/serviceInterface` asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServiceInterface {
    /// This interface, on every node that announces it.
    Named(String),
    /// `auto`: the interface whose subnet holds the address, whatever
    /// interface is configured.
    Auto,
}

impl fmt::Display for ServiceInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceInterface::Named(name) => f.write_str(name),
            ServiceInterface::Auto => f.write_str("auto"),
        }
    }
}

/// The rule a Linux interface name breaks, if any: 1 to 15 bytes, no
/// `/`, `:` or white space, not `.` or `..`.
pub fn interface_name_rule(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        return Some("an interface name is 1 to 15 characters long");
    }
    if name == "." || name == ".." {
        return Some("an interface name cannot be . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some("an interface name cannot contain '/', ':' or white space");
    }
    None
}

impl ServiceView {
    /// Its priority for `address` against other claims: served first, then older.
    pub fn claim_on(&self, address: IpAddr) -> (bool, &ClaimRank, &ServiceKey) {
        (!self.served.contains(&address), &self.rank, &self.key)
    }
}

/// A Service's age when Services contend for an address: the older first,
/// then the smaller uid. Whether a Service already has the address counts
/// before its age, address by address ([`ServiceView::served`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ClaimRank {
    /// `metadata.creationTimestamp` in seconds since the epoch.
    pub created: i64,
    /// `metadata.uid`.
    pub uid: String,
}

/// A Service field kvip cannot use; reported on the Service as an Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// An address that does not parse or cannot be a VIP.
    #[error("{field}: {value:?} {reason}")]
    InvalidAddress {
        /// The annotation or spec field that holds it.
        field: String,
        /// The offending item.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// An address whose family the Service does not have.
    #[error("{field}: {address} is {family}, but spec.ipFamilies is [{}]; add {family} to spec.ipFamilies or remove the address", families.join(", "))]
    FamilyNotEnabled {
        /// The annotation or spec field that holds it.
        field: String,
        /// The address.
        address: IpAddr,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The Service's `spec.ipFamilies`.
        families: Vec<String>,
    },
    /// `kube-vip.io/ignore` is not a boolean.
    #[error(
        "annotation {IGNORE_ANNOTATION}: {value:?} is not a boolean; use true or false (Go ParseBool spellings)"
    )]
    InvalidIgnore {
        /// Its value.
        value: String,
    },
    /// `kube-vip.io/leaseName` names a Lease that is neither kvip's nor kube-vip's.
    #[error(
        "annotation {LEASE_NAME_ANNOTATION}: {value:?} is not a Service's Lease: use a name \
         starting with {SERVICE_LEASE_PREFIX}, or label the Lease {MANAGED_BY_LABEL}={MANAGED_BY} \
         (another controller's Lease, and kvip's or kube-vip's control Leases, are refused)"
    )]
    ForeignLeaseName {
        /// Its value.
        value: String,
    },
    /// `kube-vip.io/leaseName` is not a valid object name.
    #[error("annotation {LEASE_NAME_ANNOTATION}: {value:?} is not a valid Lease name: {reason}")]
    InvalidLeaseName {
        /// Its value.
        value: String,
        /// The DNS-1123 rule it breaks.
        reason: &'static str,
    },
    /// `kube-vip.io/serviceInterface` is no interface name.
    #[error(
        "annotation {SERVICE_INTERFACE_ANNOTATION}: {value:?} is not an interface name: {reason}; name the interface (such as eth1) or write auto"
    )]
    InvalidInterface {
        /// Its value.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Two Services share an address but ask for different interfaces.
    #[error(
        "annotation {SERVICE_INTERFACE_ANNOTATION}: {address} is announced on {other_interface} for {other}, which shares it; give both Services the same interface"
    )]
    InterfaceConflict {
        /// The shared address.
        address: IpAddr,
        /// The Service that has it.
        other: ServiceKey,
        /// The interface that Service asks for (`the configured interface` when none).
        other_interface: String,
    },
    /// `kube-vip.io/serviceVLAN` is set: kvip makes no VLAN interfaces.
    #[error(
        "annotation {SERVICE_VLAN_ANNOTATION}: {value:?}: not supported: kvip does not create VLAN sub-interfaces; create the VLAN interface on the nodes (such as `ip link add link eth0 name eth0.{value} type vlan id {value}`), name it in {SERVICE_INTERFACE_ANNOTATION} and remove {SERVICE_VLAN_ANNOTATION}"
    )]
    VlanNotSupported {
        /// Its value.
        value: String,
    },
    /// `spec.externalTrafficPolicy` is neither Cluster nor Local.
    #[error("spec.externalTrafficPolicy: {value:?} must be Cluster or Local")]
    UnknownTrafficPolicy {
        /// Its value.
        value: String,
    },
}

/// The address family name Kubernetes uses.
pub fn family_name(address: &IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Why `address` cannot be announced as a VIP, if it cannot.
pub fn unusable_address(address: &IpAddr) -> Option<&'static str> {
    if address.is_unspecified() {
        return Some(
            "is the unspecified address (kube-vip's DHCP request, which kvip does not support)",
        );
    }
    if address.is_loopback() {
        return Some("is a loopback address");
    }
    if address.is_multicast() {
        return Some("is a multicast address");
    }
    match address {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some(
            "is an IPv4 link-local address (169.254.0.0/16, where cloud metadata services live), \
             which cannot be reached off the link",
        ),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            Some("is an IPv6 link-local address, which cannot be reached off the link")
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("is an IPv4-mapped IPv6 address; write the IPv4 address instead")
        }
        _ => None,
    }
}

/// The DNS-1123 subdomain rule `name` breaks, if any (Kubernetes object names).
pub fn dns1123_subdomain_rule(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("it must be 1 to 253 characters long");
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(|c| alnum(c) || c == '-' || c == '.') {
        return Some("it may only contain lower-case letters, digits, '-' and '.'");
    }
    for label in name.split('.') {
        let (Some(first), Some(last)) = (label.chars().next(), label.chars().last()) else {
            return Some("it cannot have empty parts between dots");
        };
        if !alnum(first) || !alnum(last) {
            return Some("each dot-separated part must start and end with a letter or digit");
        }
    }
    None
}

fn parse_address(field: &str, text: &str) -> Result<IpAddr, ServiceError> {
    let invalid = |reason| ServiceError::InvalidAddress {
        field: field.to_string(),
        value: text.to_string(),
        reason,
    };
    let address: IpAddr = text.parse().map_err(|_| invalid("is not an IP address"))?;
    match unusable_address(&address) {
        Some(reason) => Err(invalid(reason)),
        None => Ok(address),
    }
}

impl ServiceView {
    /// What kvip announces for `input`; `Ok(None)` when the Service is not kvip's to serve.
    pub fn from_input(
        input: &ServiceInput,
        class: &LbClassRule,
    ) -> Result<Option<ServiceView>, ServiceError> {
        if input.type_ != LOAD_BALANCER_TYPE {
            return Ok(None);
        }
        if let Some(value) = input.annotations.get(IGNORE_ANNOTATION) {
            match parse_go_bool(value) {
                Some(true) => return Ok(None),
                Some(false) => {}
                None if value.is_empty() => {}
                None => {
                    return Err(ServiceError::InvalidIgnore {
                        value: value.clone(),
                    });
                }
            }
        }
        // The API server refuses an empty class; treat one as none.
        if !class.serves(
            input
                .load_balancer_class
                .as_deref()
                .filter(|c| !c.is_empty()),
        ) {
            return Ok(None);
        }

        let policy = match input.external_traffic_policy.as_deref() {
            None | Some("") | Some("Cluster") => TrafficPolicy::Cluster,
            Some("Local") => TrafficPolicy::Local,
            Some(other) => {
                return Err(ServiceError::UnknownTrafficPolicy {
                    value: other.to_string(),
                });
            }
        };

        if let Some(value) = input
            .annotations
            .get(SERVICE_VLAN_ANNOTATION)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        {
            return Err(ServiceError::VlanNotSupported {
                value: value.to_string(),
            });
        }
        let interface = match input
            .annotations
            .get(SERVICE_INTERFACE_ANNOTATION)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        {
            None => None,
            Some("auto") => Some(ServiceInterface::Auto),
            Some(name) => match interface_name_rule(name) {
                Some(reason) => {
                    return Err(ServiceError::InvalidInterface {
                        value: name.to_string(),
                        reason,
                    });
                }
                None => Some(ServiceInterface::Named(name.to_string())),
            },
        };

        let (addresses_from, texts) = address_texts(input);
        let field = match addresses_from {
            AddressSource::Annotation => format!("annotation {LOADBALANCER_IPS_ANNOTATION}"),
            AddressSource::Spec => "spec.loadBalancerIP".to_string(),
            AddressSource::Ingress => "status.loadBalancer.ingress".to_string(),
        };
        let mut addresses = Vec::new();
        for text in texts {
            let address = parse_address(&field, text)?;
            let family = family_name(&address);
            if !input.ip_families.is_empty() && !input.ip_families.iter().any(|f| f == family) {
                return Err(ServiceError::FamilyNotEnabled {
                    field,
                    address,
                    family,
                    families: input.ip_families.clone(),
                });
            }
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }

        let lease_name = match input.annotations.get(LEASE_NAME_ANNOTATION) {
            Some(name) if !name.is_empty() => {
                if let Some(reason) = dns1123_subdomain_rule(name) {
                    return Err(ServiceError::InvalidLeaseName {
                        value: name.clone(),
                        reason,
                    });
                }
                if !name.starts_with(SERVICE_LEASE_PREFIX) && !input.lease_labelled {
                    return Err(ServiceError::ForeignLeaseName {
                        value: name.clone(),
                    });
                }
                name.clone()
            }
            _ => format!("kubevip-{}", input.key.name),
        };

        Ok(Some(ServiceView {
            key: input.key.clone(),
            policy,
            ports: input.ports.clone(),
            rank: ClaimRank {
                created: input.created,
                uid: input.uid.clone(),
            },
            served: addresses
                .iter()
                .filter(|a| input.ingress_ips.iter().any(|i| i.parse() == Ok(**a)))
                .copied()
                .collect(),
            addresses,
            lease_name,
            addresses_from,
            interface,
        }))
    }
}

/// Where a Service's addresses come from, as kube-vip reads them: the
/// `kube-vip.io/loadbalancerIPs` annotation; else the IPs in
/// `status.loadBalancer.ingress`, unless `spec.loadBalancerIP` is set and
/// an ingress IP of its family differs from it (then the spec wins); else
/// `spec.loadBalancerIP`. Hostname-only ingress entries name no address.
pub fn address_texts(input: &ServiceInput) -> (AddressSource, Vec<&str>) {
    let annotated: Vec<&str> = input
        .annotations
        .get(LOADBALANCER_IPS_ANNOTATION)
        .map(|list| list.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .into_iter()
        .flatten()
        .collect();
    if !annotated.is_empty() {
        return (AddressSource::Annotation, annotated);
    }
    let spec = input
        .load_balancer_ip
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let ingress: Vec<&str> = input
        .ingress_ips
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if !ingress.is_empty() {
        let spec_ip = spec.and_then(|s| s.parse::<IpAddr>().ok());
        let disagrees = spec_ip.is_some_and(|spec_ip| {
            ingress.iter().any(|i| {
                i.parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_ipv4() == spec_ip.is_ipv4() && ip != spec_ip)
            })
        });
        if !disagrees {
            return (AddressSource::Ingress, ingress);
        }
    }
    (AddressSource::Spec, spec.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule() -> LbClassRule {
        LbClassRule::default()
    }

    fn lb(annotations: &[(&str, &str)]) -> ServiceInput {
        ServiceInput {
            key: ServiceKey::new("default", "web"),
            type_: "LoadBalancer".to_string(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ServiceInput::default()
        }
    }

    fn view(input: &ServiceInput) -> ServiceView {
        ServiceView::from_input(input, &rule()).unwrap().unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_ingress_is_the_source_as_kube_vip_reads_it() {
        // Neither annotation nor spec: the ingress IPs (hostnames skipped).
        let mut input = lb(&[]);
        input.ingress_ips = vec!["10.0.0.7".into(), "".into(), "fd00::7".into()];
        let v = view(&input);
        assert_eq!(v.addresses, ips(&["10.0.0.7", "fd00::7"]));
        assert_eq!(v.addresses_from, AddressSource::Ingress);
        assert_eq!(v.served, v.addresses, "what the ingress lists is served");
        // The spec agrees with the ingress of its family: the ingress, all of it.
        input.load_balancer_ip = Some("10.0.0.7".into());
        assert_eq!(view(&input).addresses, ips(&["10.0.0.7", "fd00::7"]));
        assert_eq!(view(&input).addresses_from, AddressSource::Ingress);
        // The spec disagrees: the spec wins.
        input.load_balancer_ip = Some("10.0.0.8".into());
        assert_eq!(view(&input).addresses, ips(&["10.0.0.8"]));
        assert_eq!(view(&input).addresses_from, AddressSource::Spec);
        // An IPv6 spec says nothing of an IPv4 ingress.
        input.ingress_ips = vec!["10.0.0.7".into()];
        input.load_balancer_ip = Some("fd00::8".into());
        assert_eq!(view(&input).addresses, ips(&["10.0.0.7"]));
        // The annotation wins over both.
        input
            .annotations
            .insert(LOADBALANCER_IPS_ANNOTATION.into(), "10.0.0.9".into());
        assert_eq!(view(&input).addresses, ips(&["10.0.0.9"]));
        assert_eq!(view(&input).addresses_from, AddressSource::Annotation);
        // Nothing anywhere: no address.
        let empty = view(&lb(&[]));
        assert!(empty.addresses.is_empty());
        assert_eq!(empty.addresses_from, AddressSource::Spec);
    }

    #[test]
    fn a_bad_ingress_address_names_the_status_field() {
        let mut input = lb(&[]);
        input.ingress_ips = vec!["127.0.0.1".into()];
        let err = ServiceView::from_input(&input, &rule()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("status.loadBalancer.ingress: \"127.0.0.1\""),
            "{err}"
        );
    }

    #[test]
    fn service_interface_is_a_name_or_auto() {
        let named = view(&lb(&[(SERVICE_INTERFACE_ANNOTATION, " eth1 ")]));
        assert_eq!(
            named.interface,
            Some(ServiceInterface::Named("eth1".into()))
        );
        let auto = view(&lb(&[(SERVICE_INTERFACE_ANNOTATION, "auto")]));
        assert_eq!(auto.interface, Some(ServiceInterface::Auto));
        assert_eq!(
            view(&lb(&[(SERVICE_INTERFACE_ANNOTATION, "")])).interface,
            None
        );
        assert_eq!(view(&lb(&[])).interface, None);
        for bad in [
            "eth0/1",
            "a very long name",
            "eth0:1",
            "..",
            "sixteen-chars-xx",
        ] {
            let err = ServiceView::from_input(&lb(&[(SERVICE_INTERFACE_ANNOTATION, bad)]), &rule())
                .unwrap_err();
            assert!(
                matches!(&err, ServiceError::InvalidInterface { value, .. } if value == bad),
                "{bad}: {err:?}"
            );
            assert!(
                err.to_string().contains(SERVICE_INTERFACE_ANNOTATION),
                "{err}"
            );
        }
    }

    #[test]
    fn a_service_vlan_is_refused_with_the_way_around_it() {
        let err =
            ServiceView::from_input(&lb(&[(SERVICE_VLAN_ANNOTATION, "10")]), &rule()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not supported"), "{text}");
        assert!(text.contains(SERVICE_VLAN_ANNOTATION), "{text}");
        assert!(text.contains("type vlan id 10"), "{text}");
        assert!(text.contains(SERVICE_INTERFACE_ANNOTATION), "{text}");
        assert!(ServiceView::from_input(&lb(&[(SERVICE_VLAN_ANNOTATION, " ")]), &rule()).is_ok());
    }

    #[test]
    fn key_displays_as_namespace_slash_name() {
        assert_eq!(ServiceKey::new("ns", "svc").to_string(), "ns/svc");
    }

    #[test]
    fn only_load_balancers_are_ours() {
        let mut input = lb(&[]);
        input.type_ = "ClusterIP".to_string();
        assert_eq!(ServiceView::from_input(&input, &rule()).unwrap(), None);
    }

    #[test]
    fn ignore_annotation_uses_go_booleans() {
        for t in ["true", "1", "T"] {
            let input = lb(&[(IGNORE_ANNOTATION, t)]);
            assert_eq!(ServiceView::from_input(&input, &rule()).unwrap(), None);
        }
        assert!(
            view(&lb(&[(IGNORE_ANNOTATION, "false")]))
                .addresses
                .is_empty()
        );
        let err = ServiceView::from_input(&lb(&[(IGNORE_ANNOTATION, "yes")]), &rule());
        assert_eq!(
            err,
            Err(ServiceError::InvalidIgnore {
                value: "yes".to_string()
            })
        );
    }

    /// kube-vip v1.0.0's decision (pkg/services/watch_services.go), row by
    /// row: legacy handling, lb_class_only, lb_class_name, the Service's
    /// class, served.
    #[test]
    fn load_balancer_class_as_kube_vip_decides() {
        const KV: &str = "kube-vip.io/kube-vip-class";
        let table: &[(bool, bool, &str, Option<&str>, bool)] = &[
            // Legacy handling (kube-vip's default).
            (true, false, KV, None, true),
            (true, false, KV, Some(KV), true),
            (true, false, KV, Some("other.io/lb"), false),
            (true, true, KV, None, false),
            (true, true, KV, Some(KV), true),
            (true, true, KV, Some("other.io/lb"), false),
            (true, false, "", None, true),
            (true, false, "", Some(KV), false),
            (true, true, "", None, false),
            // lb_class_legacy_handling=false: the class must be exactly ours.
            (false, false, KV, None, false),
            (false, false, KV, Some(KV), true),
            (false, false, KV, Some("other.io/lb"), false),
            (false, true, KV, None, false),
            (false, true, KV, Some(KV), true),
            (false, false, "", None, true),
            (false, true, "", None, true),
            (false, false, "", Some(KV), false),
            (false, false, "mine.io/lb", Some("mine.io/lb"), true),
            (false, false, "mine.io/lb", None, false),
        ];
        for &(legacy, class_only, name, class, want) in table {
            let rule = LbClassRule {
                class_only,
                class_name: name.to_string(),
                legacy,
            };
            assert_eq!(rule.serves(class), want, "{rule:?} with class {class:?}");
            let mut input = lb(&[]);
            input.load_balancer_class = class.map(str::to_string);
            assert_eq!(
                ServiceView::from_input(&input, &rule).unwrap().is_some(),
                want,
                "{rule:?} with class {class:?}"
            );
        }
    }

    #[test]
    fn load_balancer_class() {
        let mut input = lb(&[]);
        input.load_balancer_class = Some("other.io/lb".to_string());
        assert_eq!(ServiceView::from_input(&input, &rule()).unwrap(), None);
        input.load_balancer_class = Some("kube-vip.io/kube-vip-class".to_string());
        assert!(ServiceView::from_input(&input, &rule()).unwrap().is_some());

        let only = LbClassRule {
            class_only: true,
            ..rule()
        };
        assert!(ServiceView::from_input(&input, &only).unwrap().is_some());
        input.load_balancer_class = None;
        assert_eq!(ServiceView::from_input(&input, &only).unwrap(), None);
    }

    #[test]
    fn annotation_wins_over_spec_and_keeps_order_without_duplicates() {
        let mut input = lb(&[(
            LOADBALANCER_IPS_ANNOTATION,
            " 10.0.0.2, fd00::1 ,,10.0.0.1,10.0.0.2 ",
        )]);
        input.load_balancer_ip = Some("10.9.9.9".to_string());
        assert_eq!(
            view(&input).addresses,
            ips(&["10.0.0.2", "fd00::1", "10.0.0.1"])
        );
    }

    #[test]
    fn spec_load_balancer_ip_is_the_fallback() {
        let mut input = lb(&[(LOADBALANCER_IPS_ANNOTATION, " , ")]);
        input.load_balancer_ip = Some("192.168.1.10".to_string());
        assert_eq!(view(&input).addresses, ips(&["192.168.1.10"]));
        input.load_balancer_ip = None;
        assert!(view(&input).addresses.is_empty());
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let err = ServiceView::from_input(
            &lb(&[(LOADBALANCER_IPS_ANNOTATION, "10.0.0.1,10.0.0.x")]),
            &rule(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation kube-vip.io/loadbalancerIPs: \"10.0.0.x\" is not an IP address"
        );
        for bad in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "fe80::1",
            "169.254.169.254",
            "::ffff:10.0.0.1",
        ] {
            let mut input = lb(&[]);
            input.load_balancer_ip = Some(bad.to_string());
            let err = ServiceView::from_input(&input, &rule()).unwrap_err();
            assert!(
                err.to_string().starts_with("spec.loadBalancerIP: "),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_served_address_ranks_first_then_age_then_uid() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut input = lb(&[(LOADBALANCER_IPS_ANNOTATION, "10.0.0.1,10.0.0.2")]);
        input.created = 1_767_312_000;
        input.uid = "b".into();
        let young = view(&input);
        assert!(young.served.is_empty());
        input.ingress_ips = vec!["10.0.0.2".into(), "10.0.0.9".into()];
        assert_eq!(
            view(&input).served,
            ips(&["10.0.0.2"]),
            "address by address"
        );
        input.ingress_ips = vec!["10.0.0.1".into()];
        let served = view(&input);
        let mut old = input.clone();
        old.ingress_ips.clear();
        old.created = 1_767_225_599;
        old.uid = "z".into();
        let old = view(&old);
        assert!(served.claim_on(a) < old.claim_on(a) && old.claim_on(a) < young.claim_on(a));
    }

    #[test]
    fn address_family_must_be_enabled() {
        let mut input = lb(&[(LOADBALANCER_IPS_ANNOTATION, "10.0.0.1,fd00::1")]);
        input.ip_families = vec!["IPv4".to_string()];
        let err = ServiceView::from_input(&input, &rule()).unwrap_err();
        assert!(matches!(
            err,
            ServiceError::FamilyNotEnabled { family: "IPv6", .. }
        ));
        input.ip_families.push("IPv6".to_string());
        assert_eq!(view(&input).addresses.len(), 2);
    }

    #[test]
    fn traffic_policy() {
        let mut input = lb(&[]);
        assert_eq!(view(&input).policy, TrafficPolicy::Cluster);
        input.external_traffic_policy = Some("Local".to_string());
        assert_eq!(view(&input).policy, TrafficPolicy::Local);
        input.external_traffic_policy = Some("Nowhere".to_string());
        assert!(ServiceView::from_input(&input, &rule()).is_err());
    }

    #[test]
    fn lease_name() {
        assert_eq!(view(&lb(&[])).lease_name, "kubevip-web");
        assert_eq!(
            view(&lb(&[(LEASE_NAME_ANNOTATION, "kubevip-shared.vip-1")])).lease_name,
            "kubevip-shared.vip-1"
        );
        // kvip's and kube-vip's control Leases are not a Service's.
        for name in ["kvip-lb-worker1", "plndr-cp-lock", "plndr-svcs-lock"] {
            assert!(matches!(
                ServiceView::from_input(&lb(&[(LEASE_NAME_ANNOTATION, name)]), &rule()),
                Err(ServiceError::ForeignLeaseName { .. })
            ));
        }
        // Another controller's leader Lease is not kvip's to write ...
        let foreign = lb(&[(LEASE_NAME_ANNOTATION, "kube-controller-manager")]);
        assert_eq!(
            ServiceView::from_input(&foreign, &rule()),
            Err(ServiceError::ForeignLeaseName {
                value: "kube-controller-manager".into()
            })
        );
        // ... unless an administrator labelled it kvip's.
        let mut labelled = foreign.clone();
        labelled.lease_labelled = true;
        assert_eq!(view(&labelled).lease_name, "kube-controller-manager");

        for bad in [
            "Upper",
            "-a",
            "a..b",
            "a_b",
            &format!("kubevip-{}", "a".repeat(254)),
        ] {
            let err = ServiceView::from_input(&lb(&[(LEASE_NAME_ANNOTATION, bad)]), &rule());
            assert!(
                matches!(err, Err(ServiceError::InvalidLeaseName { .. })),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(
            ips_text in ".{0,40}",
            spec_ip in proptest::option::of(".{0,20}"),
            lease in ".{0,12}",
            policy in proptest::option::of("(Local|Cluster|.{0,6})"),
        ) {
            let mut input = lb(&[(LOADBALANCER_IPS_ANNOTATION, &ips_text), (LEASE_NAME_ANNOTATION, &lease)]);
            input.load_balancer_ip = spec_ip;
            input.external_traffic_policy = policy;
            if let Ok(Some(view)) = ServiceView::from_input(&input, &rule()) {
                for (i, a) in view.addresses.iter().enumerate() {
                    prop_assert!(!view.addresses[..i].contains(a));
                    prop_assert!(unusable_address(a).is_none());
                }
            }
        }
    }
}
