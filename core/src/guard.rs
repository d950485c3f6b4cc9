//! A disciplined answer to other hosts claiming our addresses on the wire
//! (RFC 5227 §2.4): at most one defence per address per
//! [`DEFEND_INTERVAL`], and a claim counts as convincing only when it comes
//! from a kvip node's MAC or keeps coming for [`PERSIST`]. One forged frame,
//! or a flood of them, can neither take an address nor make kvip flood back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::election::Mono;

/// The shortest time between two defences of one address (RFC 5227's DEFEND_INTERVAL).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

/// How long claims by one MAC must keep coming, first to last, to persist
/// (with at least [`PERSIST_FRAMES`] of them): a new holder's takeover burst
/// does within 400 ms, one forged frame never does.
pub const PERSIST: Duration = Duration::from_millis(400);

/// Frames a persisting claim has at least.
pub const PERSIST_FRAMES: u32 = 3;

/// Claims by one MAC for one address in a row, after which an Event names it.
pub const REPORT_AFTER: u32 = 3;

/// Claims further apart than this start a new run.
const RUN_GAP: Duration = Duration::from_secs(10);

/// Claimants remembered per address (the oldest is forgotten first).
const RUNS_PER_ADDRESS: usize = 8;

/// What to do about one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The claim came from a MAC of a kvip node, or persisted: a hold that
    /// is not confirmed by the API server should yield to it.
    pub convincing: bool,
    /// A defence (a new announcement burst) may go now.
    pub may_defend: bool,
    /// This claim made the run long enough to report (once per run).
    pub report: bool,
}

#[derive(Debug, Clone)]
struct Run {
    mac: [u8; 6],
    first: Mono,
    last: Mono,
    count: u32,
}

#[derive(Debug, Clone, Default)]
struct AddressState {
    last_defence: Option<Mono>,
    /// One run per claimant, so frames of a second MAC (forged, say) do
    /// not keep a real claimant's run from persisting.
    runs: Vec<Run>,
}

/// Claims seen per address.
#[derive(Debug, Clone, Default)]
pub struct ClaimGuard {
    by_address: HashMap<IpAddr, AddressState>,
}

impl ClaimGuard {
    /// Records a claim of `address` by `mac` at `now`; `kvip_node` says
    /// whether `mac` belongs to a node that runs kvip.
    pub fn judge(
        &mut self,
        address: IpAddr,
        mac: [u8; 6],
        kvip_node: bool,
        now: Mono,
    ) -> Judgement {
        let state = self.by_address.entry(address).or_default();
        state.runs.retain(|r| now.since(r.last) <= RUN_GAP);
        let index = match state.runs.iter().position(|r| r.mac == mac) {
            Some(i) => i,
            None => {
                if state.runs.len() >= RUNS_PER_ADDRESS
                    && let Some(oldest) = (0..state.runs.len()).min_by_key(|i| state.runs[*i].last)
                {
                    state.runs.swap_remove(oldest);
                }
                state.runs.push(Run {
                    mac,
                    first: now,
                    last: now,
                    count: 0,
                });
                state.runs.len() - 1
            }
        };
        let Some(run) = state.runs.get_mut(index) else {
            return Judgement {
                convincing: kvip_node,
                may_defend: false,
                report: false,
            };
        };
        run.last = now;
        run.count = run.count.saturating_add(1);
        let persisted = run.count >= PERSIST_FRAMES && now.since(run.first) >= PERSIST;
        let report = run.count == REPORT_AFTER;
        let may_defend = state
            .last_defence
            .is_none_or(|at| now.since(at) >= DEFEND_INTERVAL);
        if may_defend {
            state.last_defence = Some(now);
        }
        Judgement {
            convincing: kvip_node || persisted,
            may_defend,
            report,
        }
    }

    /// Forgets addresses `keep` rejects (no longer ours).
    pub fn retain(&mut self, keep: impl Fn(IpAddr) -> bool) {
        self.by_address.retain(|a, _| keep(*a));
    }

    /// Addresses with state.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no address has state.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

    fn at(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    fn ip() -> IpAddr {
        "192.0.2.10".parse().unwrap()
    }

    #[test]
    fn a_flood_is_defended_once_per_interval() {
        let mut g = ClaimGuard::default();
        let defences = (0..2000u64)
            .filter(|i| g.judge(ip(), MAC, false, at(i * 10)).may_defend)
            .count();
        // 20 s of claims every 10 ms: at 0 s, 10 s (and not before).
        assert_eq!(defences, 2);
    }

    #[test]
    fn one_frame_is_not_convincing_but_a_kvip_node_or_a_persisting_claim_is() {
        let mut g = ClaimGuard::default();
        let first = g.judge(ip(), MAC, false, at(0));
        assert!(!first.convincing && first.may_defend && !first.report);
        assert!(!g.judge(ip(), MAC, false, at(150)).convincing);
        assert!(
            !g.judge(ip(), MAC, false, at(399)).convincing,
            "three frames, but not for long enough"
        );
        assert!(g.judge(ip(), MAC, false, at(400)).convincing, "persisted");
        let mut g = ClaimGuard::default();
        g.judge(ip(), MAC, false, at(0));
        assert!(
            !g.judge(ip(), MAC, false, at(5_000)).convincing,
            "two frames are not enough however far apart"
        );
        let mut g = ClaimGuard::default();
        assert!(g.judge(ip(), MAC, true, at(0)).convincing, "a kvip node");
    }

    #[test]
    fn a_run_is_one_mac_without_long_gaps() {
        let mut g = ClaimGuard::default();
        g.judge(ip(), MAC, false, at(0));
        g.judge(ip(), OTHER, false, at(100));
        g.judge(ip(), MAC, false, at(200));
        g.judge(ip(), OTHER, false, at(300));
        assert!(
            !g.judge(ip(), OTHER, false, at(350)).convincing,
            "each MAC is its own run: OTHER's has not lasted"
        );
        assert!(
            g.judge(ip(), MAC, false, at(500)).convincing,
            "frames of another MAC in between do not stop a run persisting"
        );
        let mut g = ClaimGuard::default();
        for i in 0..100u8 {
            g.judge(ip(), [0x02, 0, 0, 0, 1, i], false, at(u64::from(i)));
        }
        assert!(
            g.by_address
                .values()
                .all(|s| s.runs.len() <= RUNS_PER_ADDRESS),
            "claimants per address are bounded"
        );
        let mut g = ClaimGuard::default();
        g.judge(ip(), MAC, false, at(0));
        assert!(
            !g.judge(ip(), MAC, false, at(20_000)).convincing,
            "a frame long after the last starts a new run"
        );
    }

    #[test]
    fn a_run_is_reported_once() {
        let mut g = ClaimGuard::default();
        let reports = (0..50u64)
            .filter(|i| g.judge(ip(), MAC, false, at(i * 100)).report)
            .count();
        assert_eq!(reports, 1);
        g.retain(|_| false);
        assert!(g.is_empty());
    }
}
