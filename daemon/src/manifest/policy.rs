//! The ValidatingAdmissionPolicies (one for Leases, one for Services) that
//! hold one kvip ServiceAccount to what kvip writes, where RBAC cannot: RBAC grants Lease writes by namespace, not
//! by name, and a Service patch whole. The API server then refuses, with
//! 403, any Lease write outside kvip's names ([`kvip_core::lease_names`]) and
//! any Service change other than its status and the `kube-vip.io/vipHost`
//! annotation, even from a node whose credentials were stolen.
//!
//! Every expression is built here from the same constants the daemon uses.
//! Allowing one more Service annotation or label is one entry in
//! [`SERVICE_ANNOTATIONS`] or [`SERVICE_LABELS`].

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kvip_core::lease_names::{LEASE_NAME_PREFIXES, MANAGED_BY, MANAGED_BY_LABEL};
use kvip_core::service::{
    LOADBALANCER_IPS_ANNOTATION, SERVICE_INTERFACE_ANNOTATION, VIP_HOST_ANNOTATION,
};

/// Service annotations kvip may add, change or remove.
pub const SERVICE_ANNOTATIONS: &[&str] = &[
    VIP_HOST_ANNOTATION,
    LOADBALANCER_IPS_ANNOTATION,
    SERVICE_INTERFACE_ANNOTATION,
];

/// Service labels kvip may add, change or remove: the one an address from
/// the pools carries, as kube-vip-cloud-provider sets it.
pub const SERVICE_LABELS: &[&str] = &[kvip_core::ipam::IMPLEMENTATION_LABEL];

/// What one account's policy is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInput<'a> {
    /// The policy's, its binding's and the ServiceAccount's name.
    pub account: &'a str,
    /// The ServiceAccount's namespace.
    pub namespace: &'a str,
    /// Lease names kvip was configured with (`vip_leasename`,
    /// `svc_leasename`); those outside [`LEASE_NAME_PREFIXES`] are allowed by name.
    pub lease_names: &'a [String],
}

/// A CEL string literal.
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A CEL list of string literals.
fn cel_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(cel_string).collect();
    format!("[{}]", items.join(", "))
}

/// True when the maps `old` and `new` hold the same entries apart from the
/// keys in the list `allowed`: no entry removed, changed or added.
fn kept_except(old: &str, new: &str, allowed: &str) -> String {
    format!(
        "{old}.all(k, k in {allowed} || (k in {new} && {new}[k] == {old}[k])) \
         && {new}.all(k, k in {allowed} || k in {old})"
    )
}

/// `items` as prose: `a`, `a or b`, `a, b or c`.
fn prose(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// What kvip may change among a Service's `what` (labels, annotations).
fn only(allowed: &[&str], what: &str) -> String {
    if allowed.is_empty() {
        format!("kvip may not change a Service's {what}")
    } else {
        format!(
            "kvip may change only {} among a Service's {what}",
            prose(allowed)
        )
    }
}

fn variable(name: &str, expression: String) -> Variable {
    Variable {
        name: name.to_string(),
        expression,
    }
}

/// A check whose failure denies the request with 403 and `message`.
fn forbid_unless(expression: String, message: String) -> Validation {
    Validation {
        expression,
        message: Some(message),
        reason: Some("Forbidden".to_string()),
        ..Default::default()
    }
}

fn rule(group: &str, resources: &[&str]) -> NamedRuleWithOperations {
    NamedRuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec!["*".to_string()]),
        operations: Some(
            ["CREATE", "UPDATE", "DELETE"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// The username the API server gives the ServiceAccount's tokens.
pub fn username(namespace: &str, account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{account}")
}

/// The suffix of the Service policy's name (the Lease policy has the account's).
pub const SERVICES_SUFFIX: &str = "-services";

/// What the policies match: `rules`, writes by `input.account` only.
fn spec(
    input: &PolicyInput<'_>,
    rules: Vec<NamedRuleWithOperations>,
    object_selector: Option<LabelSelector>,
    variables: Vec<Variable>,
    validations: Vec<Validation>,
) -> ValidatingAdmissionPolicySpec {
    ValidatingAdmissionPolicySpec {
        failure_policy: Some("Fail".to_string()),
        match_constraints: Some(MatchResources {
            resource_rules: Some(rules),
            object_selector,
            ..Default::default()
        }),
        match_conditions: Some(vec![MatchCondition {
            name: "kvip-service-account".to_string(),
            expression: format!(
                "request.userInfo.username == {}",
                cel_string(&username(input.namespace, input.account))
            ),
        }]),
        variables: Some(variables),
        validations: Some(validations),
        ..Default::default()
    }
}

/// The Lease policy: Lease writes by `input.account` only, named after it.
///
/// A write whose Lease carries kvip's label before and after it (every
/// renewal of a Lease kvip wrote) is allowed by the rule anyway, so an
/// object selector leaves it out before any expression runs: at hundreds
/// of Leases renewed a second, evaluating the policy on each renewal costs
/// the API server more than the write itself. A create is judged by the
/// Lease it makes and an update or delete by the Lease stored, so a write
/// that adds the label to a Lease without it is still judged.
pub fn lease_policy(input: &PolicyInput<'_>, metadata: ObjectMeta) -> ValidatingAdmissionPolicy {
    let extra_names: Vec<&str> = input
        .lease_names
        .iter()
        .map(String::as_str)
        .filter(|n| !kvip_core::lease_names::lease_name_is_kvips(n))
        .collect();
    let prefixes: Vec<String> = LEASE_NAME_PREFIXES
        .iter()
        .map(|p| format!("{p}*"))
        .collect();
    let mut lease_names: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    lease_names.extend(&extra_names);
    let lease_rule = format!(
        "kvip may write only Leases named {} or labelled {MANAGED_BY_LABEL}={MANAGED_BY}",
        prose(&lease_names)
    );
    let variables = vec![
        variable(
            "leaseName",
            "request.operation == 'DELETE' ? oldObject.metadata.name : object.metadata.name"
                .to_string(),
        ),
        variable("leaseNamedForKvip", {
            let prefixed = format!(
                "{}.exists(p, variables.leaseName.startsWith(p))",
                cel_list(LEASE_NAME_PREFIXES)
            );
            if extra_names.is_empty() {
                prefixed
            } else {
                format!(
                    "{prefixed} || variables.leaseName in {}",
                    cel_list(extra_names.iter().copied())
                )
            }
        }),
        // A create is judged by the Lease it makes, an update or delete by
        // the Lease stored: a label added by the write itself counts only
        // on a Lease kvip creates.
        variable(
            "leaseLabelledKvip",
            format!(
                "(request.operation == 'CREATE' ? object : oldObject)\
                 .metadata.?labels[?{}].orValue('') == {}",
                cel_string(MANAGED_BY_LABEL),
                cel_string(MANAGED_BY)
            ),
        ),
    ];
    let mut lease_check = forbid_unless(
        "variables.leaseNamedForKvip || variables.leaseLabelledKvip".to_string(),
        lease_rule.clone(),
    );
    lease_check.message_expression = Some(format!(
        "'Lease ' + request.namespace + '/' + variables.leaseName + ': ' + {}",
        cel_string(&lease_rule)
    ));
    let unlabelled = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: MANAGED_BY_LABEL.to_string(),
            operator: "NotIn".to_string(),
            values: Some(vec![MANAGED_BY.to_string()]),
        }]),
        ..Default::default()
    };
    ValidatingAdmissionPolicy {
        metadata,
        spec: Some(spec(
            input,
            vec![rule("coordination.k8s.io", &["leases"])],
            Some(unlabelled),
            variables,
            vec![lease_check],
        )),
        ..Default::default()
    }
}

/// The Service policy (named after the account with [`SERVICES_SUFFIX`]):
/// Service changes by `input.account` only.
pub fn service_policy(input: &PolicyInput<'_>, metadata: ObjectMeta) -> ValidatingAdmissionPolicy {
    let variables = vec![
        variable("serviceUpdate", "request.operation == 'UPDATE'".to_string()),
        variable("allowedLabels", cel_list(SERVICE_LABELS.iter().copied())),
        variable(
            "allowedAnnotations",
            cel_list(SERVICE_ANNOTATIONS.iter().copied()),
        ),
        variable(
            "oldLabels",
            "oldObject.metadata.?labels.orValue({})".to_string(),
        ),
        variable(
            "newLabels",
            "object.metadata.?labels.orValue({})".to_string(),
        ),
        variable(
            "oldAnnotations",
            "oldObject.metadata.?annotations.orValue({})".to_string(),
        ),
        variable(
            "newAnnotations",
            "object.metadata.?annotations.orValue({})".to_string(),
        ),
    ];
    // The API server itself keeps the status of a write to the Service and
    // the spec of a write to its status; these checks cover both.
    let validations = vec![
        forbid_unless(
            "variables.serviceUpdate".to_string(),
            "kvip never creates or deletes Services".to_string(),
        ),
        forbid_unless(
            "!variables.serviceUpdate || object.?spec.orValue({}) == oldObject.?spec.orValue({})"
                .to_string(),
            "kvip may not change a Service's spec".to_string(),
        ),
        forbid_unless(
            format!(
                "!variables.serviceUpdate || ({})",
                kept_except(
                    "variables.oldLabels",
                    "variables.newLabels",
                    "variables.allowedLabels"
                )
            ),
            only(SERVICE_LABELS, "labels"),
        ),
        forbid_unless(
            format!(
                "!variables.serviceUpdate || ({})",
                kept_except(
                    "variables.oldAnnotations",
                    "variables.newAnnotations",
                    "variables.allowedAnnotations"
                )
            ),
            only(SERVICE_ANNOTATIONS, "annotations"),
        ),
        forbid_unless(
            format!(
                "!variables.serviceUpdate || !('{LOADBALANCER_IPS_ANNOTATION}' in variables.oldAnnotations) \
                 || variables.oldLabels[?'{label}'].orValue('') == '{value}' \
                 || variables.newAnnotations[?'{LOADBALANCER_IPS_ANNOTATION}'].orValue('') == variables.oldAnnotations['{LOADBALANCER_IPS_ANNOTATION}']",
                label = kvip_core::ipam::IMPLEMENTATION_LABEL,
                value = kvip_core::ipam::IMPLEMENTATION_LABEL_VALUE,
            ),
            format!(
                "kvip may change {LOADBALANCER_IPS_ANNOTATION} only on a Service that has none or that a pool gave one (label {}: {})",
                kvip_core::ipam::IMPLEMENTATION_LABEL,
                kvip_core::ipam::IMPLEMENTATION_LABEL_VALUE
            ),
        ),
        forbid_unless(
            "!variables.serviceUpdate \
             || (object.metadata.?finalizers.orValue([]) == oldObject.metadata.?finalizers.orValue([]) \
             && object.metadata.?ownerReferences.orValue([]) == oldObject.metadata.?ownerReferences.orValue([]))"
                .to_string(),
            "kvip may not change a Service's finalizers or owner references".to_string(),
        ),
    ];
    ValidatingAdmissionPolicy {
        metadata,
        spec: Some(spec(
            input,
            vec![rule("", &["services", "services/status"])],
            None,
            variables,
            validations,
        )),
        ..Default::default()
    }
}

/// The binding that puts the policy of the same name in force, denying.
pub fn binding(metadata: ObjectMeta) -> ValidatingAdmissionPolicyBinding {
    let policy_name = metadata.name.clone();
    ValidatingAdmissionPolicyBinding {
        metadata,
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name,
            validation_actions: Some(vec!["Deny".to_string()]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(lease_names: &[String]) -> PolicyInput<'_> {
        PolicyInput {
            account: "kvip-lb",
            namespace: "kvip-system",
            lease_names,
        }
    }

    fn spec(policy: &ValidatingAdmissionPolicy) -> &ValidatingAdmissionPolicySpec {
        policy.spec.as_ref().unwrap()
    }

    fn variable_of<'a>(policy: &'a ValidatingAdmissionPolicy, name: &str) -> &'a str {
        spec(policy)
            .variables
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .map(|v| v.expression.as_str())
            .unwrap_or_else(|| panic!("no variable {name}"))
    }

    #[test]
    fn applies_only_to_the_account_and_fails_closed() {
        let names = vec!["plndr-svcs-lock".to_string()];
        let writes = vec!["CREATE".to_string(), "UPDATE".into(), "DELETE".into()];
        let leases = lease_policy(&input(&names), ObjectMeta::default());
        let services = service_policy(&input(&names), ObjectMeta::default());
        for (policy, group, resources) in [
            (&leases, "coordination.k8s.io", vec!["leases"]),
            (&services, "", vec!["services", "services/status"]),
        ] {
            let spec = spec(policy);
            assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
            let conditions = spec.match_conditions.as_ref().unwrap();
            assert_eq!(conditions.len(), 1);
            assert_eq!(
                conditions[0].expression,
                "request.userInfo.username == 'system:serviceaccount:kvip-system:kvip-lb'"
            );
            let rules = spec
                .match_constraints
                .as_ref()
                .and_then(|m| m.resource_rules.clone())
                .unwrap();
            let covered: Vec<(Vec<String>, Vec<String>, Vec<String>)> = rules
                .into_iter()
                .map(|r| {
                    (
                        r.api_groups.unwrap(),
                        r.resources.unwrap(),
                        r.operations.unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                covered,
                [(
                    vec![group.to_string()],
                    resources.iter().map(|r| r.to_string()).collect(),
                    writes.clone()
                )]
            );
            for check in spec.validations.iter().flatten() {
                assert_eq!(check.reason.as_deref(), Some("Forbidden"), "{check:?}");
                assert!(check.message.is_some(), "{check:?}");
            }
        }
        // Leases kvip labelled, before and after the write, are left out
        // before any expression runs: the rule allows them anyway.
        let selector = spec(&leases)
            .match_constraints
            .as_ref()
            .and_then(|m| m.object_selector.clone())
            .unwrap();
        let requirement = &selector.match_expressions.unwrap()[0];
        assert_eq!(requirement.key, MANAGED_BY_LABEL);
        assert_eq!(requirement.operator, "NotIn");
        assert_eq!(requirement.values, Some(vec![MANAGED_BY.to_string()]));
        assert!(
            variable_of(&leases, "leaseLabelledKvip").contains(MANAGED_BY_LABEL),
            "a Lease without the label is judged by the label it had"
        );
        // A Service's labels never exempt a write to it.
        assert!(
            spec(&services)
                .match_constraints
                .as_ref()
                .is_some_and(|m| m.object_selector.is_none())
        );
        let meta = ObjectMeta {
            name: Some("kvip-lb".to_string()),
            ..Default::default()
        };
        let binding = binding(meta).spec.unwrap();
        assert_eq!(binding.policy_name.as_deref(), Some("kvip-lb"));
        assert_eq!(binding.validation_actions, Some(vec!["Deny".to_string()]));
    }

    #[test]
    fn lease_names_come_from_the_core_rule_and_the_configuration() {
        let names = vec!["plndr-cp-lock".to_string(), "my-cp-lock".to_string()];
        let policy = lease_policy(&input(&names), ObjectMeta::default());
        assert_eq!(
            variable_of(&policy, "leaseNamedForKvip"),
            "['kubevip-', 'plndr-', 'kvip-'].exists(p, variables.leaseName.startsWith(p)) \
             || variables.leaseName in ['my-cp-lock']"
        );
        assert_eq!(
            variable_of(&policy, "leaseLabelledKvip"),
            "(request.operation == 'CREATE' ? object : oldObject)\
             .metadata.?labels[?'app.kubernetes.io/managed-by'].orValue('') == 'kvip'"
        );
        let defaults = vec!["plndr-cp-lock".to_string(), "plndr-svcs-lock".to_string()];
        let policy = super::lease_policy(&input(&defaults), ObjectMeta::default());
        assert_eq!(
            variable_of(&policy, "leaseNamedForKvip"),
            "['kubevip-', 'plndr-', 'kvip-'].exists(p, variables.leaseName.startsWith(p))"
        );
        let message = spec(&policy).validations.as_ref().unwrap()[0]
            .message
            .clone()
            .unwrap();
        assert_eq!(
            message,
            "kvip may write only Leases named kubevip-*, plndr-* or kvip-* \
             or labelled app.kubernetes.io/managed-by=kvip"
        );
    }

    #[test]
    fn service_changes_allowed_are_the_listed_ones() {
        let policy = service_policy(&input(&[]), ObjectMeta::default());
        assert_eq!(
            variable_of(&policy, "allowedAnnotations"),
            "['kube-vip.io/vipHost', 'kube-vip.io/loadbalancerIPs', 'kube-vip.io/serviceInterface']"
        );
        assert_eq!(variable_of(&policy, "allowedLabels"), "['implementation']");
        let messages: Vec<String> = spec(&policy)
            .validations
            .iter()
            .flatten()
            .filter_map(|v| v.message.clone())
            .collect();
        assert!(
            messages.contains(
                &"kvip may change only implementation among a Service's labels".to_string()
            )
        );
        assert!(messages.contains(
            &"kvip may change only kube-vip.io/vipHost, kube-vip.io/loadbalancerIPs or kube-vip.io/serviceInterface among a Service's annotations".to_string()
        ));
    }

    #[test]
    fn kept_except_compares_both_ways() {
        assert_eq!(
            kept_except("o", "n", "a"),
            "o.all(k, k in a || (k in n && n[k] == o[k])) && n.all(k, k in a || k in o)"
        );
    }

    #[test]
    fn cel_strings_are_quoted() {
        assert_eq!(cel_string("kube-vip.io/vipHost"), "'kube-vip.io/vipHost'");
        assert_eq!(cel_string(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(cel_list(["a", "b"]), "['a', 'b']");
        assert_eq!(cel_list([]), "[]");
        assert_eq!(prose(&["a", "b", "c"]), "a, b or c");
        assert_eq!(
            only(&[], "labels"),
            "kvip may not change a Service's labels"
        );
        assert_eq!(
            only(&["x", "y"], "labels"),
            "kvip may change only x or y among a Service's labels"
        );
    }
}
