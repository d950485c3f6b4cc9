//! Membership mode (`kvip_membership=true`): instead of one Lease per
//! address, each node renews one Lease of its own (its *membership*), and
//! every node computes the same owner for each address by rendezvous hashing
//! over the live candidates. API writes then grow with nodes, not Services.
//!
//! Hashing alone cannot keep two nodes from announcing at once while their
//! views of who is live differ for a moment, so each address also has a
//! *claim*: the `kube-vip.io/vipHost` annotation of one Service of its group,
//! written with the Service's resourceVersion (compare-and-swap). The rules:
//!
//! * A node announces an address only while the claim names it.
//! * The owner claims an address when the claim names nobody, or a node
//!   that is not live (its membership Lease unchanged for the lease
//!   duration, or gone). Two nodes claiming at once: one gets 409.
//! * A claimant that is no longer the owner withdraws the address first,
//!   then clears the claim (guarded by resourceVersion), and the owner
//!   claims it on the next watch event.
//!
//! A node whose membership Lease cannot be renewed stops announcing at
//! `sent + lease duration` of its last successful renewal (the same argument
//! as [`crate::election`]), before any other node can judge it dead; so the
//! claim of a dead node can be taken over safely.

use std::collections::BTreeSet;

/// FNV-1a over `bytes`, then a SplitMix64 finaliser for an even spread.
/// Fixed forever: nodes running different kvip versions must agree.
fn hash(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rendezvous weight of `node` for the address group named `group`.
pub fn weight(group: &str, node: &str) -> u64 {
    hash(group.bytes().chain(std::iter::once(0)).chain(node.bytes()))
}

/// The owner of `group` among `candidates`: the highest weight, ties broken
/// by the smaller name, so every node with the same view picks the same one.
pub fn owner<'a>(group: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by(|a, b| weight(group, a).cmp(&weight(group, b)).then(b.cmp(a)))
}

/// What a node sees of one address group at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView<'a> {
    /// This node.
    pub me: &'a str,
    /// The owner computed over the live candidates; `None` when there is none.
    pub owner: Option<&'a str>,
    /// The node the claim names, if any.
    pub claimant: Option<&'a str>,
    /// Nodes whose membership is live (this node included when it is).
    pub live: &'a BTreeSet<String>,
    /// Whether this node announces the group's addresses now.
    pub announcing: bool,
    /// Whether a claim write for the group is still in flight.
    pub writing: bool,
}

/// What to do for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Announce (or keep announcing): the claim names this node and it owns the group.
    Announce,
    /// Write the claim naming this node; announce once it is stored.
    Claim,
    /// Stop announcing, and clear the claim once the address is withdrawn.
    Release,
    /// Nothing to do: another node owns or holds the group, or a write is in flight.
    Idle,
}

/// The step for one group (see the module's rules).
pub fn step(view: &GroupView<'_>) -> Step {
    let mine = view.claimant == Some(view.me);
    let owned = view.owner == Some(view.me);
    if owned && mine {
        return Step::Announce;
    }
    if view.announcing {
        // Announcing without both the claim and ownership: stop at once.
        return Step::Release;
    }
    if view.writing {
        return Step::Idle;
    }
    if mine {
        return Step::Release;
    }
    let held_elsewhere = view.claimant.is_some_and(|c| view.live.contains(c));
    if owned && !held_elsewhere {
        Step::Claim
    } else {
        Step::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn view<'a>(
        me: &'a str,
        owner: Option<&'a str>,
        claimant: Option<&'a str>,
        live: &'a BTreeSet<String>,
    ) -> GroupView<'a> {
        GroupView {
            me,
            owner,
            claimant,
            live,
            announcing: false,
            writing: false,
        }
    }

    #[test]
    fn weights_are_fixed_across_versions() {
        // Nodes running different kvip builds must pick the same owner.
        assert_eq!(
            weight("default/kubevip-web", "worker1"),
            weight("default/kubevip-web", "worker1")
        );
        assert_eq!(hash([]), hash(std::iter::empty()));
        let pinned = weight("10.0.0.1", "node-a");
        assert_eq!(
            pinned, 0xe7b5_48d8_fc0f_f2e1,
            "the hash changed: {pinned:#x}"
        );
    }

    #[test]
    fn every_view_of_the_same_nodes_picks_the_same_owner() {
        let a = owner("g", ["n1", "n2", "n3"]);
        let b = owner("g", ["n3", "n1", "n2"]);
        assert_eq!(a, b);
        assert_eq!(owner("g", []), None);
        assert_eq!(owner("g", ["only"]), Some("only"));
    }

    #[test]
    fn groups_spread_evenly_and_only_a_leaving_nodes_groups_move() {
        let nodes = ["cp1", "worker1", "worker2"];
        let groups: Vec<String> = (0..3000)
            .map(|i| format!("10.77.{}.{}", i / 250, i % 250))
            .collect();
        let mut counts = [0usize; 3];
        for g in &groups {
            let o = owner(g, nodes).unwrap();
            counts[nodes.iter().position(|n| *n == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..=1150).contains(&c), "uneven spread: {counts:?}");
        }
        for g in &groups {
            let before = owner(g, nodes).unwrap();
            let after = owner(g, ["cp1", "worker2"]).unwrap();
            if before != "worker1" {
                assert_eq!(before, after, "{g} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn the_owner_claims_a_free_or_dead_claim_and_waits_for_a_live_one() {
        let l = live(&["a", "b"]);
        assert_eq!(step(&view("a", Some("a"), None, &l)), Step::Claim);
        assert_eq!(step(&view("a", Some("a"), Some("dead"), &l)), Step::Claim);
        assert_eq!(step(&view("a", Some("a"), Some("b"), &l)), Step::Idle);
        assert_eq!(step(&view("a", Some("a"), Some("a"), &l)), Step::Announce);
        let writing = GroupView {
            writing: true,
            ..view("a", Some("a"), None, &l)
        };
        assert_eq!(step(&writing), Step::Idle);
    }

    #[test]
    fn a_claimant_that_is_no_longer_owner_releases() {
        let l = live(&["a", "b"]);
        let announcing = GroupView {
            announcing: true,
            ..view("a", Some("b"), Some("a"), &l)
        };
        assert_eq!(step(&announcing), Step::Release);
        // Not announcing but still named (after a restart): clear the claim.
        assert_eq!(step(&view("a", Some("b"), Some("a"), &l)), Step::Release);
        // No candidate at all: the claimant lets go too.
        assert_eq!(step(&view("a", None, Some("a"), &l)), Step::Release);
        // Someone else's business.
        assert_eq!(step(&view("a", Some("b"), Some("b"), &l)), Step::Idle);
        assert_eq!(step(&view("a", Some("b"), None, &l)), Step::Idle);
    }

    #[test]
    fn announcing_without_the_claim_stops() {
        // The claim was taken over (we were judged dead): stop at once.
        let l = live(&["a", "b"]);
        let v = GroupView {
            announcing: true,
            ..view("a", Some("b"), Some("b"), &l)
        };
        assert_eq!(step(&v), Step::Release);
    }

    /// Two nodes whose views of the live set differ never both announce:
    /// every sequence of steps through a shared claim keeps one announcer.
    #[test]
    fn differing_views_never_give_two_announcers() {
        let all = live(&["a", "b"]);
        let only_a = live(&["a"]);
        // a does not see b yet (a owns by its view); b owns by the full view.
        let owner_full = owner("g", ["a", "b"]).unwrap();
        let mut claim: Option<&str> = None;
        let mut announcing = [false, false];
        for round in 0..6 {
            for (i, me) in ["a", "b"].into_iter().enumerate() {
                let (o, l) = if me == "a" && round < 3 {
                    (Some("a"), &only_a)
                } else {
                    (Some(owner_full), &all)
                };
                let v = GroupView {
                    me,
                    owner: o,
                    claimant: claim,
                    live: l,
                    announcing: announcing[i],
                    writing: false,
                };
                match step(&v) {
                    // Compare-and-swap: the claim is written on the state just read.
                    Step::Claim => claim = Some(me),
                    Step::Announce => announcing[i] = true,
                    Step::Release => {
                        announcing[i] = false;
                        if claim == Some(me) {
                            claim = None;
                        }
                    }
                    Step::Idle => {}
                }
                assert!(
                    !(announcing[0] && announcing[1]),
                    "round {round}: both announce"
                );
            }
        }
        let winner = ["a", "b"].iter().position(|n| *n == owner_full).unwrap();
        assert!(announcing[winner] && claim == Some(owner_full));
    }
}
