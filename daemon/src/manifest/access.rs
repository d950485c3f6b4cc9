//! Who may do what: each DaemonSet runs under a ServiceAccount of its own,
//! named like the DaemonSet (`kvip-cp`, `kvip-lb`, or `kvip` for both roles
//! in one pod), granted exactly the API calls its role makes, each in the
//! narrowest scope that serves it:
//!
//! - control plane: its one Lease (`vip_leasename` in `cp_namespace`),
//!   watched by name (list, watch), created, renewed and released (patch).
//!   Nothing else: its health check, `/readyz` of the API server on its node,
//!   is open to every client that authenticates;
//! - load balancer: Services, EndpointSlices, Nodes and Leases watched in
//!   every namespace (list, watch); Services patched for
//!   `kube-vip.io/vipHost` (also membership mode's claims) and their status
//!   for the ingress; Events on Services created, and patched to count a
//!   repeat; Leases created and patched wherever Services are (each Service's
//!   Lease lives beside it); its own instance Lease deleted at shutdown, in
//!   its own namespace only; ServiceCIDRs listed, to refuse addresses in the
//!   Service network; the address pools' ConfigMap (`kubevip` in
//!   `kube-system`) watched by name, and Services patched for the
//!   addresses it gives (`kube-vip.io/loadbalancerIPs`,
//!   `kube-vip.io/serviceInterface`, the label `implementation`).
//!
//! The account of role `all` holds both, without the control-plane rules
//! the load balancer's cluster-wide ones already cover. RBAC cannot tell one
//! Lease from another at create, nor one Service field from another; the
//! admission policy ([`super::policy`]) does.

use super::Role;
use k8s_openapi::api::rbac::v1::PolicyRule;
use std::collections::BTreeMap;

/// The Lease names and namespaces a role's rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The DaemonSet's namespace: its ServiceAccount's and its instance Leases'.
    pub namespace: String,
    /// Where the control-plane Lease lives: `cp_namespace`, or the
    /// namespace `vip_leasename` names.
    pub cp_namespace: String,
    /// `vip_leasename`: the control-plane Lease.
    pub cp_lease: String,
    /// The address pools' ConfigMap (`KUBEVIP_NAMESPACE`,
    /// `KUBEVIP_CONFIG_MAP`), read by name; `None` when kvip neither
    /// allocates nor fences.
    pub pools: Option<(String, String)>,
}

/// The rules of one ServiceAccount: cluster-wide, and per namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// Rules for a ClusterRole.
    pub cluster: Vec<PolicyRule>,
    /// Rules for a Role in each namespace.
    pub namespaced: BTreeMap<String, Vec<PolicyRule>>,
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn named(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
    rule.resource_names = Some(names.iter().map(|s| s.to_string()).collect());
    rule
}

const LEASES: &str = "coordination.k8s.io";

fn control_plane(names: &Names) -> Grants {
    // A create names no object RBAC could check; the admission policy does.
    let rules = vec![
        rule(LEASES, &["leases"], &["create"]),
        named(
            rule(LEASES, &["leases"], &["list", "watch", "patch"]),
            &[&names.cp_lease],
        ),
    ];
    Grants {
        cluster: Vec::new(),
        namespaced: BTreeMap::from([(names.cp_namespace.clone(), rules)]),
    }
}

fn load_balancer(names: &Names) -> Grants {
    let mut namespaced = BTreeMap::from([(
        names.namespace.clone(),
        vec![rule(LEASES, &["leases"], &["delete"])],
    )]);
    if let Some((namespace, name)) = &names.pools {
        namespaced.entry(namespace.clone()).or_default().push(named(
            rule("", &["configmaps"], &["list", "watch"]),
            &[name],
        ));
    }
    Grants {
        cluster: vec![
            rule("", &["services"], &["list", "watch", "patch"]),
            rule("", &["services/status"], &["patch"]),
            rule("", &["nodes"], &["list", "watch"]),
            rule("", &["events"], &["create", "patch"]),
            rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            rule("networking.k8s.io", &["servicecidrs"], &["list"]),
            rule(LEASES, &["leases"], &["list", "watch", "create", "patch"]),
        ],
        namespaced,
    }
}

/// Whether the cluster-wide `by` allows everything `rule` does.
fn covers(by: &PolicyRule, rule: &PolicyRule) -> bool {
    by.resource_names.is_none()
        && by.non_resource_urls.is_none()
        && by.api_groups == rule.api_groups
        && by.resources == rule.resources
        && rule.verbs.iter().all(|v| by.verbs.contains(v))
}

/// Both sets, without namespaced rules a cluster-wide one already covers.
fn union(a: Grants, b: Grants) -> Grants {
    let mut cluster = a.cluster;
    cluster.extend(b.cluster);
    let mut namespaced: BTreeMap<String, Vec<PolicyRule>> = BTreeMap::new();
    for (namespace, rules) in a.namespaced.into_iter().chain(b.namespaced) {
        let kept = rules
            .into_iter()
            .filter(|r| !cluster.iter().any(|c| covers(c, r)));
        namespaced.entry(namespace).or_default().extend(kept);
    }
    namespaced.retain(|_, rules| !rules.is_empty());
    Grants {
        cluster,
        namespaced,
    }
}

/// What `role`'s ServiceAccount may do.
pub fn grants(role: Role, names: &Names) -> Grants {
    match role {
        Role::Cp => control_plane(names),
        Role::Lb => load_balancer(names),
        Role::All => union(load_balancer(names), control_plane(names)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names() -> Names {
        Names {
            namespace: "kvip-system".to_string(),
            cp_namespace: "kube-system".to_string(),
            cp_lease: "plndr-cp-lock".to_string(),
            pools: None,
        }
    }

    /// `scope group/resource:verb[names]` for every permission granted.
    fn flat(grants: &Grants) -> BTreeSet<String> {
        let scoped = grants.cluster.iter().map(|r| ("*", r)).chain(
            grants
                .namespaced
                .iter()
                .flat_map(|(ns, rules)| rules.iter().map(move |r| (ns.as_str(), r))),
        );
        let mut out = BTreeSet::new();
        for (scope, rule) in scoped {
            let only = rule
                .resource_names
                .as_ref()
                .map(|n| format!("[{}]", n.join(",")))
                .unwrap_or_default();
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        out.insert(format!("{scope} {group}/{resource}:{verb}{only}"));
                    }
                }
            }
        }
        out
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const LB_CLUSTER: [&str; 15] = [
        "* /services:list",
        "* /services:watch",
        "* /services:patch",
        "* /services/status:patch",
        "* /nodes:list",
        "* /nodes:watch",
        "* /events:create",
        "* /events:patch",
        "* discovery.k8s.io/endpointslices:list",
        "* discovery.k8s.io/endpointslices:watch",
        "* networking.k8s.io/servicecidrs:list",
        "* coordination.k8s.io/leases:list",
        "* coordination.k8s.io/leases:watch",
        "* coordination.k8s.io/leases:create",
        "* coordination.k8s.io/leases:patch",
    ];

    #[test]
    fn control_plane_touches_its_one_lease_in_its_namespace() {
        let got = flat(&grants(Role::Cp, &names()));
        assert_eq!(
            got,
            set(&[
                "kube-system coordination.k8s.io/leases:create",
                "kube-system coordination.k8s.io/leases:list[plndr-cp-lock]",
                "kube-system coordination.k8s.io/leases:watch[plndr-cp-lock]",
                "kube-system coordination.k8s.io/leases:patch[plndr-cp-lock]",
            ])
        );
        assert!(grants(Role::Cp, &names()).cluster.is_empty());
    }

    #[test]
    fn load_balancer_deletes_leases_only_in_its_own_namespace() {
        let mut want = set(&LB_CLUSTER);
        want.insert("kvip-system coordination.k8s.io/leases:delete".to_string());
        assert_eq!(flat(&grants(Role::Lb, &names())), want);
    }

    /// The control plane's Lease rules add nothing to the load balancer's
    /// cluster-wide ones, so the combined account holds exactly those.
    #[test]
    fn both_roles_hold_the_union_without_covered_rules() {
        for namespace in ["kvip-system", "kube-system"] {
            let mut names = names();
            names.namespace = namespace.to_string();
            let all = grants(Role::All, &names);
            let mut want = set(&LB_CLUSTER);
            want.insert(format!("{namespace} coordination.k8s.io/leases:delete"));
            assert_eq!(flat(&all), want, "{namespace}");
            assert_eq!(all.namespaced.len(), 1, "{all:?}");
        }
    }

    #[test]
    fn a_rule_is_covered_only_by_a_wider_one() {
        let wide = rule(LEASES, &["leases"], &["list", "watch", "update"]);
        assert!(covers(&wide, &rule(LEASES, &["leases"], &["update"])));
        assert!(!covers(&wide, &rule(LEASES, &["leases"], &["delete"])));
        assert!(!covers(&wide, &rule("", &["leases"], &["update"])));
        assert!(!covers(&wide, &rule(LEASES, &["leases", "x"], &["update"])));
        let narrow = named(wide.clone(), &["plndr-cp-lock"]);
        assert!(!covers(&narrow, &rule(LEASES, &["leases"], &["update"])));
        assert!(covers(&wide, &narrow));
    }
}
