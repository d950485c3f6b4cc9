//! What the API server lets this process do, learnt from its answers.
//!
//! kvip's own ClusterRole grants `patch` on every object it writes, Events,
//! the delete of its instance Lease and the list of ServiceCIDRs. kube-vip's
//! published ClusterRole grants none of these: only `update` on Leases,
//! Services and their status. kvip run under it must still serve, so each
//! refusal by RBAC (403) is answered once, not retried:
//!
//! - a write that may go either way ([`Write`]) falls back from `patch` to a
//!   guarded `update` (the whole object with its resourceVersion), and keeps
//!   to the verb that last went through;
//! - a permission kvip can do without ([`Optional`]) is said missing once and
//!   then not asked for, except for one try every [`RETRY_MISSING`] (an API
//!   server that has just started refuses everything for a moment, and RBAC
//!   may be widened later).
//!
//! Pure: the daemon keeps one [`Access`] per process and passes time in.

use crate::election::Mono;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A write kvip can make with `patch` or with `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Write {
    /// Election and instance Leases (coordination.k8s.io).
    Leases,
    /// A Service's metadata: `kube-vip.io/vipHost`, membership claims.
    Services,
    /// `status.loadBalancer.ingress` (services/status).
    ServiceStatus,
}

impl Write {
    /// The resource as RBAC names it.
    pub fn resource(self) -> &'static str {
        match self {
            Write::Leases => "leases (coordination.k8s.io)",
            Write::Services => "services",
            Write::ServiceStatus => "services/status",
        }
    }

    /// What writing by `update` costs, for the one log line that says so.
    pub fn update_means(self) -> &'static str {
        match self {
            Write::Leases => {
                "each Lease kvip writes is replaced whole, so labels and annotations others put on a Lease kvip takes are replaced (kvip's own labels and annotations are still written)"
            }
            Write::Services => {
                "the Service is read and replaced whole with its resourceVersion to write kube-vip.io/vipHost (one more read per write; a concurrent change makes it wait for the next pass)"
            }
            Write::ServiceStatus => {
                "the Service is read and its status replaced whole with its resourceVersion to write status.loadBalancer.ingress (one more read per write)"
            }
        }
    }
}

/// The verb a [`Write`] goes out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A merge patch (kvip's own RBAC).
    Patch,
    /// A replace of the whole object, guarded by its resourceVersion.
    Update,
}

impl Verb {
    /// The other verb.
    pub fn other(self) -> Verb {
        match self {
            Verb::Patch => Verb::Update,
            Verb::Update => Verb::Patch,
        }
    }

    /// The RBAC verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Patch => "patch",
            Verb::Update => "update",
        }
    }
}

/// A permission kvip uses but can serve without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Optional {
    /// `create` and `patch` on events: the Events on Services.
    Events,
    /// `delete` on leases in kvip's namespace: its instance Lease at shutdown.
    DeleteInstanceLease,
    /// `list` on servicecidrs (networking.k8s.io): the Service network.
    ListServiceCidrs,
}

impl Optional {
    /// Every optional permission, for metrics that show each.
    pub const ALL: [Optional; 3] = [
        Optional::Events,
        Optional::DeleteInstanceLease,
        Optional::ListServiceCidrs,
    ];

    /// The permission as RBAC spells it, for logs and metric labels.
    pub fn permission(self) -> &'static str {
        match self {
            Optional::Events => "create,patch events",
            Optional::DeleteInstanceLease => "delete leases",
            Optional::ListServiceCidrs => "list servicecidrs",
        }
    }

    /// What kvip does without it.
    pub fn without(self) -> &'static str {
        match self {
            Optional::Events => {
                "no Events are recorded on Services (kvip's log and `kvip status` still say what each Service is doing)"
            }
            Optional::DeleteInstanceLease => {
                "the instance Lease is left to expire (other nodes see this instance gone after the Lease duration instead of at once)"
            }
            Optional::ListServiceCidrs => {
                "the Service network is unknown: only the ClusterIPs of existing Services are refused as VIPs"
            }
        }
    }
}

impl fmt::Display for Optional {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.permission())
    }
}

/// How long a missing optional permission is not asked for before one more
/// try.
pub const RETRY_MISSING: Duration = Duration::from_secs(600);

/// Whether a 403 is RBAC refusing the verb, not an admission policy or
/// webhook refusing this one object (which would refuse the other verb too,
/// and says nothing of what RBAC grants).
pub fn refused_by_rbac(code: u16, message: &str) -> bool {
    code == 403
        && !message.contains("ValidatingAdmissionPolicy")
        && !message.contains("admission webhook")
}

/// What this process has learnt of its permissions.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Writes whose `patch` RBAC refused while `update` went through.
    update_only: BTreeMap<Write, ()>,
    /// Optional permissions refused, and when last refused.
    missing: BTreeMap<Optional, Mono>,
}

impl Access {
    /// The verb `write` goes out with first: patch, until RBAC refused it
    /// and an update went through.
    pub fn verb(&self, write: Write) -> Verb {
        if self.update_only.contains_key(&write) {
            Verb::Update
        } else {
            Verb::Patch
        }
    }

    /// `refused` was refused by RBAC and the other verb went through: from
    /// now on `write` goes out with that one. True when this is news (the
    /// caller says so, once).
    pub fn went_through_with(&mut self, write: Write, verb: Verb) -> bool {
        match verb {
            Verb::Update => self.update_only.insert(write, ()).is_none(),
            Verb::Patch => self.update_only.remove(&write).is_some(),
        }
    }

    /// Whether `permission` may be used at `now`: never refused, or last
    /// refused [`RETRY_MISSING`] ago (one more try).
    pub fn may(&self, permission: Optional, now: Mono) -> bool {
        match self.missing.get(&permission) {
            None => true,
            Some(at) => now.since(*at) >= RETRY_MISSING,
        }
    }

    /// RBAC refused `permission` at `now`. True when this is news: it was
    /// not known missing before (a refused retry is not news).
    pub fn refused(&mut self, permission: Optional, now: Mono) -> bool {
        self.missing.insert(permission, now).is_none()
    }

    /// `permission` went through. True when it had been missing (the caller
    /// says it is granted again).
    pub fn granted(&mut self, permission: Optional) -> bool {
        self.missing.remove(&permission).is_some()
    }

    /// Whether `permission` is known missing.
    pub fn is_missing(&self, permission: Optional) -> bool {
        self.missing.contains_key(&permission)
    }

    /// The writes that go out by `update` because `patch` is refused.
    pub fn updating(&self) -> impl Iterator<Item = Write> + '_ {
        self.update_only.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Mono {
        Mono(Duration::from_secs(secs))
    }

    #[test]
    fn a_refused_patch_makes_later_writes_updates_and_says_so_once() {
        let mut access = Access::default();
        for write in [Write::Leases, Write::Services, Write::ServiceStatus] {
            assert_eq!(access.verb(write), Verb::Patch);
        }
        assert!(access.went_through_with(Write::ServiceStatus, Verb::Update));
        assert_eq!(access.verb(Write::ServiceStatus), Verb::Update);
        assert_eq!(
            access.verb(Write::Services),
            Verb::Patch,
            "each write learns for itself"
        );
        assert!(
            !access.went_through_with(Write::ServiceStatus, Verb::Update),
            "a second fall-back is no news"
        );
        assert_eq!(
            access.updating().collect::<Vec<_>>(),
            vec![Write::ServiceStatus]
        );
        // The RBAC was widened: an update refused, the patch went through.
        assert!(access.went_through_with(Write::ServiceStatus, Verb::Patch));
        assert_eq!(access.verb(Write::ServiceStatus), Verb::Patch);
        assert!(!access.went_through_with(Write::ServiceStatus, Verb::Patch));
        assert!(access.went_through_with(Write::ServiceStatus, Verb::Update));
    }

    #[test]
    fn the_other_verb_is_the_fallback() {
        assert_eq!(Verb::Patch.other(), Verb::Update);
        assert_eq!(Verb::Update.other(), Verb::Patch);
    }

    #[test]
    fn a_missing_permission_is_news_once_and_asked_for_again_only_after_a_while() {
        let mut access = Access::default();
        let events = Optional::Events;
        assert!(access.may(events, at(0)));
        assert!(access.refused(events, at(10)), "the first refusal is news");
        assert!(access.is_missing(events));
        assert!(!access.may(events, at(11)));
        assert!(!access.may(events, at(10 + RETRY_MISSING.as_secs() - 1)));
        assert!(
            access.may(events, at(10).after(RETRY_MISSING)),
            "one more try after a while"
        );
        assert!(
            !access.refused(events, at(10).after(RETRY_MISSING)),
            "refused again: no news, no second log line"
        );
        assert!(!access.may(events, at(11).after(RETRY_MISSING)));
        assert!(
            access.may(Optional::ListServiceCidrs, at(11)),
            "other permissions are unaffected"
        );
        assert!(access.granted(events), "granted again is news");
        assert!(!access.granted(events));
        assert!(access.may(events, at(12).after(RETRY_MISSING)));
        assert!(
            access.refused(events, at(13).after(RETRY_MISSING)),
            "news again"
        );
    }

    #[test]
    fn only_rbac_refusing_the_verb_counts() {
        let rbac = r#"services "web" is forbidden: User "system:serviceaccount:kube-system:kube-vip" cannot patch resource "services/status" in API group "" in the namespace "shop""#;
        assert!(refused_by_rbac(403, rbac));
        let lease = r#"leases.coordination.k8s.io "kvip-lb-worker1" is forbidden: User "system:serviceaccount:kube-system:kube-vip" cannot patch resource "leases" in API group "coordination.k8s.io" in the namespace "kube-system""#;
        assert!(refused_by_rbac(403, lease));
        let policy = r#"services "web" is forbidden: ValidatingAdmissionPolicy 'kvip-lb' with binding 'kvip-lb' denied request: failed expression"#;
        assert!(!refused_by_rbac(403, policy));
        let webhook = r#"admission webhook "services.example.com" denied the request: no"#;
        assert!(!refused_by_rbac(403, webhook));
        for code in [404, 409, 422, 429, 500] {
            assert!(!refused_by_rbac(code, rbac), "{code} is no refusal");
            assert!(!refused_by_rbac(code, lease), "{code} is no refusal");
        }
    }

    #[test]
    fn every_optional_permission_names_itself_and_what_is_lost() {
        for p in Optional::ALL {
            assert!(!p.permission().is_empty());
            assert!(!p.without().is_empty());
        }
    }
}
