//! Asking the network before kvip first takes an address. A Service author
//! can write any address; if another host already uses it (the gateway,
//! a server, a printer), announcing it would take that host's traffic and
//! then defend the theft. So before an address is put on an interface for
//! the first time — not on a failover, which must stay fast — the node
//! sends probes (an ARP probe from 0.0.0.0, RFC 5227; a neighbour
//! solicitation from `::`, RFC 4862 duplicate address detection) and
//! listens. An answer from a MAC that is no kvip node's marks the address
//! in use — when it answers at least [`ANSWERS_NEEDED`] of the probes, so a
//! single forged frame cannot deny an address: the node publishes it, no
//! node takes it, and the node probes it again every [`RECHECK_EVERY`]
//! until the other host is gone.
//!
//! Pure: the daemon sends the frames, feeds what it hears and the clock.

use crate::election::Mono;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// Probe frames sent per probe. Each goes a third of the wait after the one
/// before it *was sent*, and the probe is judged a third of the wait after
/// the last: at 0, 33 and 67 ms, judged at 100 ms by default. A node busy
/// for longer than that (assessing thousands of Services) sends its frames
/// later, never fewer, and still listens a third of the wait after the last.
pub const FRAMES: u32 = 3;
/// Answers from one MAC that make an address in use: a host using it
/// answers every probe, while one forged frame proves nothing.
pub const ANSWERS_NEEDED: u32 = 2;
/// How long a probe listens by default (`kvip_probe_ms`). Hosts on one wired
/// link answer an ARP probe or a neighbour solicitation within a millisecond
/// or two, and routers that answer ARP in software within tens; hosts that
/// answer later (Wi-Fi clients in power save answer broadcasts only at the
/// next DTIM beacon, proxy ARP waits up to its `proxy_delay`) need a longer
/// `kvip_probe_ms`.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(100);
/// How often an address found in use is probed again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// Frames going out, answers awaited. `was`: the MAC it was in use by
    /// (a recheck), which stands until this probe ends.
    Running {
        /// When the last frame went out (none yet: the next step sends one).
        last: Option<Mono>,
        sent: u32,
        answers: BTreeMap<[u8; 6], u32>,
        was: Option<[u8; 6]>,
    },
    /// Nobody answered, or the address was already served: free to take.
    Clear,
    /// Another host answered.
    InUse { mac: [u8; 6], next_check: Mono },
}

/// What to do after a [`Prober::step`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRound {
    /// The wanted addresses that may be put on an interface now.
    pub allowed: BTreeSet<IpAddr>,
    /// Addresses to send a probe frame for now.
    pub send: Vec<IpAddr>,
    /// Step again within this long at the latest.
    pub next: Option<Duration>,
}

/// Every address this node probes or found in use.
#[derive(Debug, Clone)]
pub struct Prober {
    wait: Duration,
    probes: BTreeMap<IpAddr, Probe>,
}

impl Prober {
    /// Probes that listen `wait` each; zero turns probing off.
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            probes: BTreeMap::new(),
        }
    }

    /// One step at `now` for the addresses this node `wanted` to announce;
    /// `settled` says which need no probe (already served, or already on
    /// the interface). Also runs the rechecks of addresses in use.
    pub fn step(
        &mut self,
        wanted: &BTreeSet<IpAddr>,
        settled: impl Fn(IpAddr) -> bool,
        now: Mono,
    ) -> ProbeRound {
        let mut round = ProbeRound::default();
        if self.wait.is_zero() {
            round.allowed.clone_from(wanted);
            return round;
        }
        for address in wanted {
            let start = match self.probes.get(address) {
                None if settled(*address) => {
                    self.probes.insert(*address, Probe::Clear);
                    false
                }
                None => true,
                Some(_) => false,
            };
            if start {
                self.probes.insert(
                    *address,
                    Probe::Running {
                        last: None,
                        sent: 0,
                        answers: BTreeMap::new(),
                        was: None,
                    },
                );
            }
        }
        let gap = self.wait / FRAMES;
        for (address, probe) in &mut self.probes {
            match probe {
                Probe::InUse { mac, next_check } if now >= *next_check => {
                    *probe = Probe::Running {
                        last: None,
                        sent: 0,
                        answers: BTreeMap::new(),
                        was: Some(*mac),
                    };
                }
                _ => {}
            }
            if let Probe::Running {
                last,
                sent,
                answers,
                ..
            } = probe
            {
                // The next frame, or the verdict, a gap after the last frame.
                let due = last.map_or(now, |l| l.after(gap));
                if now >= due && *sent < FRAMES {
                    round.send.push(*address);
                    *sent += 1;
                    *last = Some(now);
                } else if now >= due {
                    let answered = answers
                        .iter()
                        .filter(|(_, n)| **n >= ANSWERS_NEEDED)
                        .max_by_key(|(_, n)| **n)
                        .map(|(mac, _)| *mac);
                    *probe = match answered {
                        Some(mac) => Probe::InUse {
                            mac,
                            next_check: now.after(RECHECK_EVERY),
                        },
                        None => Probe::Clear,
                    };
                }
                if let Probe::Running { last: Some(l), .. } = probe {
                    let due = l.after(gap).since(now);
                    round.next = Some(round.next.map_or(due, |n| n.min(due)));
                }
            }
            if let Probe::InUse { next_check, .. } = probe {
                let due = next_check.since(now);
                round.next = Some(round.next.map_or(due, |n| n.min(due)));
            }
        }
        round.allowed = wanted
            .iter()
            .filter(|a| self.probes.get(a) == Some(&Probe::Clear))
            .copied()
            .collect();
        round
    }

    /// Another host's frame claims `address` from `mac` (never one of this
    /// node's or another kvip node's MACs: the caller leaves those out).
    /// True when a probe was listening for it.
    pub fn heard(&mut self, address: IpAddr, mac: [u8; 6]) -> bool {
        match self.probes.get_mut(&address) {
            Some(Probe::Running { answers, .. }) => {
                // Bounded: a flood of forged MACs keeps at most this many.
                if answers.len() < 64 || answers.contains_key(&mac) {
                    *answers.entry(mac).or_default() += 1;
                }
                true
            }
            Some(Probe::InUse { .. }) => true,
            _ => false,
        }
    }

    /// Whether frames claiming `address` are wanted ([`Prober::heard`]).
    pub fn listening(&self, address: IpAddr) -> bool {
        matches!(
            self.probes.get(&address),
            Some(Probe::Running { .. } | Probe::InUse { .. })
        )
    }

    /// The addresses being probed now.
    pub fn running(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.probes
            .iter()
            .filter(|(_, p)| matches!(p, Probe::Running { .. }))
            .map(|(a, _)| *a)
    }

    /// The addresses another host answered for, with its MAC; a recheck
    /// under way leaves the address in use until it ends.
    pub fn in_use(&self) -> BTreeMap<IpAddr, [u8; 6]> {
        self.probes
            .iter()
            .filter_map(|(a, p)| match p {
                Probe::InUse { mac, .. } => Some((*a, *mac)),
                Probe::Running { was: Some(mac), .. } => Some((*a, *mac)),
                _ => None,
            })
            .collect()
    }

    /// Forgets every address `keep` rejects (no Service asks for it any more).
    pub fn retain(&mut self, keep: impl Fn(IpAddr) -> bool) {
        self.probes.retain(|a, _| keep(*a));
    }

    /// Forgets the addresses found free that `keep` rejects (no longer
    /// wanted here, not on the interface, not served): the next take, maybe
    /// days later, probes again.
    pub fn forget_clear(&mut self, keep: impl Fn(IpAddr) -> bool) {
        self.probes.retain(|a, p| *p != Probe::Clear || keep(*a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 5];

    fn at(ms: u64) -> Mono {
        Mono(MS * u32::try_from(ms).unwrap())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn set(list: &[IpAddr]) -> BTreeSet<IpAddr> {
        list.iter().copied().collect()
    }

    /// Steps at each of `steps` (ms): when frames went out, and the first
    /// step at which `wanted` was allowed.
    fn drive(
        p: &mut Prober,
        wanted: &BTreeSet<IpAddr>,
        steps: impl IntoIterator<Item = u64>,
    ) -> (Vec<u64>, Option<u64>) {
        let mut frames = Vec::new();
        for ms in steps {
            let r = p.step(wanted, |_| false, at(ms));
            frames.extend(r.send.iter().map(|_| ms));
            if !r.allowed.is_empty() {
                return (frames, Some(ms));
            }
        }
        (frames, None)
    }

    #[test]
    fn a_new_address_is_probed_three_times_and_taken_when_nobody_answers() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let wanted = set(&[ip(1)]);
        let r = p.step(&wanted, |_| false, at(0));
        assert!(r.allowed.is_empty(), "not before the probe ends");
        assert_eq!(r.send, vec![ip(1)]);
        assert_eq!(r.next, Some(DEFAULT_WAIT / 3));
        let (frames, allowed) = drive(&mut p, &wanted, 1..200);
        assert_eq!(frames, vec![34, 68], "a third of the wait apart");
        assert_eq!(allowed, Some(102), "a third of the wait after the last");
        assert!(p.in_use().is_empty());
    }

    #[test]
    fn a_busy_node_sends_every_frame_late_and_still_listens_after_the_last() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let wanted = set(&[ip(1)]);
        // Steps 250 ms apart, as when each pass assesses thousands of Services.
        let (frames, allowed) = drive(&mut p, &wanted, (0..10).map(|n| n * 250));
        assert_eq!(
            frames,
            vec![0, 250, 500],
            "one frame per step, never merged"
        );
        assert_eq!(allowed, Some(750));
        // Answers to the late frames still count.
        let mut p = Prober::new(DEFAULT_WAIT);
        drive(&mut p, &wanted, [0, 250]);
        p.heard(ip(1), MAC);
        p.heard(ip(1), MAC);
        let (_, allowed) = drive(&mut p, &wanted, [500, 750, 1000]);
        assert_eq!(allowed, None);
        assert_eq!(p.in_use(), BTreeMap::from([(ip(1), MAC)]));
    }

    #[test]
    fn a_longer_wait_spreads_the_frames_over_it() {
        let mut p = Prober::new(Duration::from_millis(300));
        let wanted = set(&[ip(1)]);
        let (frames, allowed) = drive(&mut p, &wanted, 0..1000);
        assert_eq!(frames, vec![0, 100, 200]);
        assert_eq!(allowed, Some(300));
    }

    #[test]
    fn a_served_address_is_taken_at_once() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let r = p.step(&set(&[ip(1), ip(2)]), |a| a == ip(1), at(0));
        assert_eq!(r.allowed, set(&[ip(1)]));
        assert_eq!(r.send, vec![ip(2)]);
    }

    #[test]
    fn an_answer_marks_the_address_in_use_until_a_recheck_finds_it_free() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let wanted = set(&[ip(1)]);
        p.step(&wanted, |_| false, at(0));
        assert!(p.listening(ip(1)));
        assert!(p.heard(ip(1), MAC));
        assert!(p.heard(ip(1), MAC));
        assert!(!p.heard(ip(9), MAC), "nobody probes that one");
        let (_, allowed) = drive(&mut p, &wanted, 1..200);
        assert_eq!(allowed, None);
        assert_eq!(p.in_use(), BTreeMap::from([(ip(1), MAC)]));
        assert_eq!(
            p.step(&wanted, |_| false, at(200)).next,
            Some(RECHECK_EVERY - 98 * MS),
            "judged at 102 ms, rechecked 30 s later"
        );
        // Rechecked: still in use while the probe runs, and the host answers again.
        let recheck = at(102).after(RECHECK_EVERY);
        let r = p.step(&BTreeSet::new(), |_| false, recheck);
        assert_eq!(r.send, vec![ip(1)]);
        assert_eq!(p.in_use().len(), 1);
        p.heard(ip(1), MAC);
        p.heard(ip(1), MAC);
        let later = |ms: u64| recheck.after(MS * u32::try_from(ms).unwrap());
        for ms in [34, 68, 102] {
            p.step(&BTreeSet::new(), |_| false, later(ms));
        }
        assert_eq!(p.in_use().len(), 1);
        // The host is gone: the next recheck clears it.
        let next = later(102).after(RECHECK_EVERY);
        for ms in [0, 34, 68] {
            p.step(&BTreeSet::new(), |_| false, next.after(MS * ms));
        }
        assert_eq!(p.in_use().len(), 1, "in use until the recheck ends");
        let r = p.step(&wanted, |_| false, next.after(MS * 102));
        assert!(p.in_use().is_empty());
        assert_eq!(r.allowed, wanted);
    }

    #[test]
    fn zero_wait_turns_probing_off_and_forgotten_addresses_go() {
        let mut off = Prober::new(Duration::ZERO);
        let wanted = set(&[ip(1)]);
        assert_eq!(off.step(&wanted, |_| false, at(0)).allowed, wanted);
        let mut p = Prober::new(DEFAULT_WAIT);
        p.step(&wanted, |_| false, at(0));
        p.heard(ip(1), MAC);
        p.heard(ip(1), MAC);
        drive(&mut p, &wanted, 1..200);
        assert_eq!(p.in_use().len(), 1);
        p.retain(|_| false);
        assert!(p.in_use().is_empty() && !p.listening(ip(1)));
    }

    #[test]
    fn one_forged_frame_or_a_flood_of_one_frame_each_proves_nothing() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let wanted = set(&[ip(1)]);
        p.step(&wanted, |_| false, at(0));
        p.heard(ip(1), MAC);
        for i in 0..=255u8 {
            p.heard(ip(1), [2, 0, 0, 0, 1, i]);
        }
        let (_, allowed) = drive(&mut p, &wanted, 1..200);
        assert_eq!(allowed, Some(102));
        assert!(p.in_use().is_empty());
    }

    #[test]
    fn a_free_address_left_behind_is_probed_again_at_its_next_take() {
        let mut p = Prober::new(DEFAULT_WAIT);
        let wanted = set(&[ip(1)]);
        assert_eq!(drive(&mut p, &wanted, 0..200).1, Some(102));
        // Still wanted or held: kept.
        p.forget_clear(|a| a == ip(1));
        assert_eq!(p.step(&wanted, |_| false, at(400)).allowed, wanted);
        // Gone from the node and unserved: forgotten.
        p.forget_clear(|_| false);
        let r = p.step(&wanted, |_| false, at(500));
        assert!(r.allowed.is_empty());
        assert_eq!(r.send, vec![ip(1)]);
    }
}
