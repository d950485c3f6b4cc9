//! Membership mode in the daemon (`kvip_membership=true`): this node's
//! membership Lease (its instance Lease, renewed on the election timings)
//! and one claim per announcement group. The rules are the core's
//! (`kvip_core::membership`); this keeps what only the daemon knows — claim
//! writes in flight, claims the watch has not shown yet, what is announced.

use crate::claims::{ClaimDone, ClaimResult, ClaimWrite};
use crate::elections::{Campaign, CampaignExt, Step as LeaseStep};
use crate::leases::LeaseWrite;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kvip_core::membership::{self, GroupView, Step};
use kvip_core::service::VIP_HOST_ANNOTATION;
use kvip_core::{AnnouncementGroup, LeaseKey, Mono, ServiceKey, ServiceView, WallTime};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// One group's claim as this node tracks it.
#[derive(Debug, Default)]
struct Claim {
    addresses: BTreeSet<IpAddr>,
    services: BTreeSet<ServiceKey>,
    announcing: bool,
    writing: bool,
    /// Our last stored claim write: the resourceVersion it produced and whom
    /// it named. Until the watch shows that version, it is the truth.
    written: Option<(u64, Option<String>)>,
    wanting_since: Option<Mono>,
    /// The last other node seen named in the claim (for Moved events).
    seen: Option<String>,
}

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Addresses this node announces.
    pub addresses: BTreeSet<IpAddr>,
    /// Services announced here, with their addresses.
    pub services: BTreeMap<ServiceKey, BTreeSet<IpAddr>>,
    /// Groups (by their Services) that started being announced here.
    pub won: Vec<BTreeSet<ServiceKey>>,
    /// Groups that stopped, and whether this node was still a candidate.
    pub lost: Vec<(BTreeSet<ServiceKey>, bool)>,
    /// Claims to write now.
    pub claims: Vec<ClaimWrite>,
    /// Claims to clear once the addresses are withdrawn.
    pub releases: Vec<ClaimWrite>,
    /// For Services just claimed from another node: that node (Moved events).
    pub moved_from: BTreeMap<ServiceKey, String>,
}

/// This node's membership and claims.
pub struct Membership {
    node: String,
    lease: LeaseKey,
    campaign: Campaign,
    claims: BTreeMap<LeaseKey, Claim>,
}

impl Membership {
    /// Membership for `node`, renewing Lease `lease` with `campaign`.
    pub fn new(node: String, lease: LeaseKey, campaign: Campaign) -> Self {
        Self {
            node,
            lease,
            campaign,
            claims: BTreeMap::new(),
        }
    }

    /// This node's membership Lease.
    pub fn lease(&self) -> &LeaseKey {
        &self.lease
    }

    /// The membership Lease campaign (renewals, adoption, outage hold).
    pub fn campaign(&mut self) -> &mut Campaign {
        &mut self.campaign
    }

    /// Whether this node counts itself live: its membership is renewed (or
    /// held through an API outage, or adopted at start-up).
    pub fn live(&self, now: Mono) -> bool {
        self.campaign.may_announce(now, true)
    }

    /// The next membership write, if one is due.
    pub fn renew(
        &mut self,
        lease: Option<&Lease>,
        now: Mono,
        wall: WallTime,
    ) -> Result<LeaseWrite, Duration> {
        self.campaign.see(lease, now);
        match self.campaign.step(now, wall, true) {
            LeaseStep::Write(w) => Ok(w),
            LeaseStep::Wait(d) => Err(d),
            // Never a candidate-less decision here: shutdown deletes the Lease instead.
            LeaseStep::Release(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Records how a claim write ended.
    pub fn claim_finished(&mut self, done: ClaimDone) {
        let Some(c) = self.claims.get_mut(&done.group) else {
            return;
        };
        c.writing = false;
        if let ClaimResult::Ok {
            resource_version,
            claimant,
        } = done.result
        {
            c.written = Some((resource_version, claimant));
        }
    }

    /// The group whose addresses include `ip`, if this node announces it.
    pub fn announces(&self, ip: IpAddr) -> bool {
        self.claims
            .values()
            .any(|c| c.announcing && c.addresses.contains(&ip))
    }

    /// Takeover latency of the group announcing `ip`, once.
    pub fn take_wanting_since(&mut self, ip: IpAddr, now: Mono) -> Option<Duration> {
        self.claims
            .values_mut()
            .find(|c| c.addresses.contains(&ip))
            .and_then(|c| c.wanting_since.take())
            .map(|since| now.since(since))
    }

    /// Decides every group: who owns it, who holds its claim, what to write.
    /// `live` holds the nodes with a live membership (this one only when
    /// [`Membership::live`]); the groups' candidates are already limited to them.
    pub fn decide(
        &mut self,
        groups: &[AnnouncementGroup],
        views: &[ServiceView],
        services: &[Arc<Service>],
        live: &BTreeSet<String>,
        shutting_down: bool,
    ) -> Outcome {
        let by_key: BTreeMap<ServiceKey, &Arc<Service>> = services
            .iter()
            .map(|s| (crate::translate::service_key(s), s))
            .collect();
        let view_of: BTreeMap<&ServiceKey, &ServiceView> =
            views.iter().map(|v| (&v.key, v)).collect();
        let mut wanted: BTreeMap<&LeaseKey, &AnnouncementGroup> = BTreeMap::new();
        for g in groups {
            wanted.insert(&g.lease, g);
        }
        self.claims
            .retain(|k, c| wanted.contains_key(k) || c.announcing || c.writing);
        for g in groups {
            let c = self.claims.entry(g.lease.clone()).or_default();
            c.addresses = g.addresses.clone();
            c.services = g.services.clone();
        }
        let me = self.node.as_str();
        let me_live = live.contains(me) && !shutting_down;
        let mut out = Outcome::default();
        for (key, c) in self.claims.iter_mut() {
            let group = wanted.get(key);
            // The claim lives on the group's first Service that still exists.
            let lock = c
                .services
                .iter()
                .find_map(|k| by_key.get(k).map(|s| (k.clone(), *s)));
            let (claimant, version) = match &lock {
                Some((_, svc)) => {
                    let cached = svc
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok());
                    let annotated = svc
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(VIP_HOST_ANNOTATION))
                        .filter(|h| !h.is_empty())
                        .cloned();
                    match (&c.written, cached) {
                        (Some((w, who)), Some(seen)) if seen < *w => (who.clone(), Some(*w)),
                        _ => (annotated, cached),
                    }
                }
                None => (None, None),
            };
            if let Some(other) = claimant.as_ref().filter(|c| c.as_str() != me) {
                c.seen = Some(other.clone());
            }
            let id = format!("{}/{}", key.namespace, key.name);
            let owner = group.and_then(|g| {
                membership::owner(
                    &id,
                    g.candidates
                        .iter()
                        .map(String::as_str)
                        .filter(|n| *n != me || me_live),
                )
            });
            let candidate = group.is_some_and(|g| g.candidates.contains(me)) && me_live;
            if candidate && c.wanting_since.is_none() && !c.announcing {
                c.wanting_since = Some(crate::clock::now());
            }
            if !candidate {
                c.wanting_since = None;
            }
            let view = GroupView {
                me,
                owner,
                claimant: claimant.as_deref(),
                live,
                announcing: c.announcing,
                writing: c.writing,
            };
            let step = membership::step(&view);
            let announce = step == Step::Announce;
            let write = |claimant: Option<String>| {
                let (service, _) = lock.as_ref()?;
                Some(ClaimWrite {
                    group: key.clone(),
                    service: service.clone(),
                    resource_version: version?.to_string(),
                    claimant,
                })
            };
            match step {
                Step::Claim => {
                    if let Some(w) = write(Some(me.to_string())) {
                        c.writing = true;
                        out.claims.push(w);
                    }
                }
                // Handing a claim on needs a live membership: otherwise the
                // other nodes take it over when our membership runs out.
                // It names the owner, which then announces without a write
                // of its own (or clears it, if it disagrees).
                Step::Release if claimant.as_deref() == Some(me) && me_live && !c.writing => {
                    let next = owner.filter(|o| *o != me).map(str::to_string);
                    if let Some(w) = write(next) {
                        c.writing = true;
                        out.releases.push(w);
                    }
                }
                _ => {}
            }
            if announce {
                out.addresses.extend(c.addresses.iter().copied());
                for s in &c.services {
                    if let Some(v) = view_of.get(s) {
                        out.services
                            .entry(s.clone())
                            .or_default()
                            .extend(v.addresses.iter().copied());
                    }
                }
            }
            if announce != c.announcing {
                c.announcing = announce;
                if announce {
                    if let Some(from) = c.seen.take() {
                        for s in &c.services {
                            out.moved_from.insert(s.clone(), from.clone());
                        }
                    }
                    out.won.push(c.services.clone());
                } else {
                    out.lost.push((c.services.clone(), candidate));
                }
            }
        }
        self.claims
            .retain(|k, c| wanted.contains_key(k) || c.announcing || c.writing);
        out
    }
}
