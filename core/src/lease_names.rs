//! Which Leases are kvip's to write: those named as kvip or kube-vip name
//! their Leases, the configured `vip_leasename` and `svc_leasename`, and any
//! Lease that carries kvip's managed-by label. The daemon refuses every other
//! Lease (a `kube-vip.io/leaseName` annotation pointing at another
//! controller's leader Lease), and the admission policy `kvip manifest`
//! prints enforces the same rule at the API server, built from these items.

use std::collections::BTreeMap;

/// The label every Lease kvip writes carries, with the value [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY_LABEL`] on kvip's Leases.
pub const MANAGED_BY: &str = "kvip";

/// How the Leases kvip or kube-vip name begin: `kubevip-<service>` (one per
/// Service), `plndr-` (kube-vip's `plndr-cp-lock` and `plndr-svcs-lock`) and
/// `kvip-` (kvip's own instance Leases, `kvip-lb-<node>`).
pub const LEASE_NAME_PREFIXES: [&str; 3] = ["kubevip-", "plndr-", "kvip-"];

/// Whether `name` is a Lease name kvip or kube-vip gives: it starts with one
/// of [`LEASE_NAME_PREFIXES`] (case matters, as in Kubernetes names).
pub fn lease_name_is_kvips(name: &str) -> bool {
    LEASE_NAME_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Whether a Lease's `labels` mark it as written by kvip.
pub fn labelled_kvips(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// Whether kvip may write the Lease `name` with `labels`: named by kvip's
/// rule, one of the `configured` names (`vip_leasename`, `svc_leasename`),
/// or labelled as kvip's.
pub fn may_write(
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
    configured: &[&str],
) -> bool {
    lease_name_is_kvips(name) || configured.contains(&name) || labelled_kvips(labels)
}

/// Whether a Service's `kube-vip.io/leaseName` may name the Lease `name`
/// with `labels` though it is no `kubevip-` name: an administrator labelled
/// it kvip's, and it is none of kvip's or kube-vip's control Leases
/// (`plndr-*`, `kvip-*`, an instance Lease, or one of `control`, the
/// configured `vip_leasename` and `svc_leasename`).
pub fn service_may_name(
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
    control: &[&str],
) -> bool {
    let instance = labels.is_some_and(|l| l.contains_key(crate::instances::INSTANCE_LABEL));
    labelled_kvips(labels)
        && !instance
        && !control.contains(&name)
        && !name.starts_with("plndr-")
        && !name.starts_with("kvip-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvip_and_kube_vip_names_pass() {
        for name in [
            "kubevip-web",
            "kubevip-a.b",
            "plndr-cp-lock",
            "plndr-svcs-lock",
            "kvip-lb-worker1",
            "kvip-x",
        ] {
            assert!(lease_name_is_kvips(name), "{name}");
        }
    }

    #[test]
    fn other_components_names_do_not() {
        for name in [
            "kube-controller-manager",
            "kube-scheduler",
            "apiserver-2x3lz5hrfeuz4ge6qslaqs3tie",
            "cert-manager-controller",
            "kubevip",
            "plndr",
            "kvip",
            "kvipx-a",
            "my-kubevip-web",
            "Kubevip-web",
            "KVIP-lb-a",
            "",
        ] {
            assert!(!lease_name_is_kvips(name), "{name}");
        }
    }

    #[test]
    fn only_kvips_label_value_counts() {
        let labels = |value: &str| BTreeMap::from([(MANAGED_BY_LABEL.to_string(), value.into())]);
        assert!(labelled_kvips(Some(&labels("kvip"))));
        assert!(!labelled_kvips(Some(&labels("helm"))));
        assert!(!labelled_kvips(Some(&labels("kvip "))));
        assert!(!labelled_kvips(Some(&BTreeMap::new())));
        assert!(!labelled_kvips(None));
        let other_key = BTreeMap::from([("app.kubernetes.io/name".to_string(), "kvip".into())]);
        assert!(!labelled_kvips(Some(&other_key)));
    }

    #[test]
    fn may_write_takes_name_configured_name_or_label() {
        let ours = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
        let configured = ["my-cp-lock"];
        assert!(may_write("kubevip-web", None, &configured));
        assert!(may_write("my-cp-lock", None, &configured));
        assert!(may_write("team-lease", Some(&ours), &configured));
        assert!(!may_write("team-lease", None, &configured));
        assert!(!may_write("kube-controller-manager", None, &configured));
        assert!(!may_write("my-cp-lock", None, &[]));
    }

    #[test]
    fn a_service_may_name_a_labelled_lease_but_no_control_lease() {
        let labelled = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
        assert!(service_may_name(
            "team-vip",
            Some(&labelled),
            &["my-cp-lock"]
        ));
        assert!(!service_may_name("team-vip", None, &[]));
        for name in ["plndr-cp-lock", "kvip-lb-worker1", "my-cp-lock"] {
            assert!(
                !service_may_name(name, Some(&labelled), &["my-cp-lock"]),
                "{name}"
            );
        }
        let mut instance = labelled.clone();
        instance.insert(crate::instances::INSTANCE_LABEL.into(), "true".into());
        assert!(!service_may_name("renamed", Some(&instance), &[]));
    }
}
