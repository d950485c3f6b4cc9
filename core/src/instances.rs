//! Who runs kvip: every instance renews a Lease of its own, labelled with
//! its node and roles, and counts as live while that Lease keeps changing
//! within its duration as seen by the observer's monotonic clock. The daemon
//! and `kvip status` read the labels through this one module.

use crate::election::Mono;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Label on an instance Lease that says a kvip instance runs there.
pub const INSTANCE_LABEL: &str = "kvip.io/instance";
/// Label naming the node of an instance Lease.
pub const INSTANCE_NODE_LABEL: &str = "kvip.io/node";
/// Label naming the roles of an instance Lease, joined by dots (`lb`, `cp.lb`).
pub const INSTANCE_ROLE_LABEL: &str = "kvip.io/role";
/// The role that announces Service VIPs.
pub const LB_ROLE: &str = "lb";
/// How long an instance Lease is valid without renewal, outside membership mode.
pub const INSTANCE_LEASE_SECONDS: i32 = 15;

/// Name of the Service role's instance Lease of `node`.
pub fn instance_lease_name(node: &str) -> String {
    format!("kvip-lb-{node}")
}

/// The labels an instance Lease of `node` with `roles` carries.
pub fn instance_labels(node: &str, roles: &[&str]) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_string(), "true".to_string()),
        (INSTANCE_NODE_LABEL.to_string(), node.to_string()),
        (INSTANCE_ROLE_LABEL.to_string(), roles.join(".")),
    ])
}

/// A kvip instance as its Lease's labels name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The node it runs on.
    pub node: String,
    /// Its roles, such as `lb`.
    pub roles: Vec<String>,
}

impl Instance {
    /// Whether the instance runs `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The instance a Lease with `labels` stands for, if it is an instance Lease.
pub fn instance_of(labels: &BTreeMap<String, String>) -> Option<Instance> {
    if labels.get(INSTANCE_LABEL).map(String::as_str) != Some("true") {
        return None;
    }
    let node = labels.get(INSTANCE_NODE_LABEL)?.clone();
    if node.is_empty() {
        return None;
    }
    let roles = labels
        .get(INSTANCE_ROLE_LABEL)
        .map(|r| {
            r.split('.')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Some(Instance { node, roles })
}

/// One instance Lease as an observer last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTerm {
    /// The instance its labels name.
    pub instance: Instance,
    /// The holder named in the Lease; an instance Lease is held by its node.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub duration_seconds: Option<i32>,
    /// When the observer last saw it change (or, after the observer's watch
    /// was down, when it could see again).
    pub seen_at: Mono,
}

/// Which nodes run a live instance of a role, and when the first runs out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Nodes whose instance is live now.
    pub live: BTreeSet<String>,
    /// When the first live instance runs out unless it renews: the observer
    /// decides again then, so a dead node's addresses move as soon as they may.
    pub next_expiry: Option<Mono>,
}

/// The nodes with a live instance of `role` at `now`. An instance counts
/// only while its Lease is held by its own node (not released, not written
/// by someone else) and changed within its duration. `me` is counted when
/// `me_live`, whatever the Leases say: this node knows its own state.
pub fn live<'a>(
    terms: impl IntoIterator<Item = &'a InstanceTerm>,
    role: &str,
    me: &str,
    me_live: bool,
    now: Mono,
) -> Liveness {
    let mut out = Liveness::default();
    if me_live {
        out.live.insert(me.to_string());
    }
    for t in terms {
        let node = &t.instance.node;
        if node == me || !t.instance.has_role(role) || t.holder.as_deref() != Some(node.as_str()) {
            continue;
        }
        let seconds = t
            .duration_seconds
            .filter(|s| *s > 0)
            .unwrap_or(INSTANCE_LEASE_SECONDS);
        let ends = t
            .seen_at
            .after(Duration::from_secs(u64::from(seconds.unsigned_abs())));
        if now < ends {
            out.next_expiry = Some(out.next_expiry.map_or(ends, |e| e.min(ends)));
            out.live.insert(node.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(node: &str, roles: &[&str], seen: u64) -> InstanceTerm {
        InstanceTerm {
            instance: Instance {
                node: node.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            },
            holder: Some(node.into()),
            duration_seconds: Some(5),
            seen_at: Mono(Duration::from_secs(seen)),
        }
    }

    #[test]
    fn labels_round_trip_and_foreign_leases_are_not_instances() {
        let labels = instance_labels("n1", &["cp", "lb"]);
        let i = instance_of(&labels).unwrap();
        assert_eq!(i.node, "n1");
        assert!(i.has_role("lb") && i.has_role("cp"));
        let mut other = labels.clone();
        other.insert(INSTANCE_LABEL.into(), "false".into());
        assert_eq!(instance_of(&other), None);
        let mut nameless = labels;
        nameless.insert(INSTANCE_NODE_LABEL.into(), String::new());
        assert_eq!(instance_of(&nameless), None);
        assert_eq!(instance_of(&BTreeMap::new()), None);
    }

    #[test]
    fn an_instance_lives_for_its_duration_after_it_was_last_seen_changing() {
        let terms = [term("a", &["lb"], 10), term("b", &["lb"], 12)];
        let at = |s| live(&terms, LB_ROLE, "me", true, Mono(Duration::from_secs(s)));
        let l = at(14);
        assert_eq!(
            l.live,
            BTreeSet::from(["a".into(), "b".into(), "me".into()])
        );
        assert_eq!(l.next_expiry, Some(Mono(Duration::from_secs(15))));
        assert_eq!(at(15).live, BTreeSet::from(["b".into(), "me".into()]));
        assert_eq!(at(17).live, BTreeSet::from(["me".to_string()]));
        assert_eq!(at(17).next_expiry, None);
    }

    #[test]
    fn released_foreign_held_and_other_role_leases_do_not_count() {
        let mut released = term("a", &["lb"], 10);
        released.holder = Some(String::new());
        let mut forged = term("b", &["lb"], 10);
        forged.holder = Some("mallory".into());
        let cp_only = term("c", &["cp"], 10);
        let mine = term("me", &["lb"], 10);
        let l = live(
            &[released, forged, cp_only, mine],
            LB_ROLE,
            "me",
            false,
            Mono(Duration::from_secs(11)),
        );
        assert!(l.live.is_empty(), "{:?}", l.live);
    }
}
