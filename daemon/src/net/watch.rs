//! Conflict detection: a packet socket per interface that hears other hosts'
//! ARP and neighbour advertisements and reports who claims which address,
//! so a node that lost its Lease withdraws as soon as another announces.
//!
//! A flood cannot pin kvip: claims go into one bounded queue and are
//! dropped (and counted) when it is full, and the listener yields to other
//! tasks between batches. A listener whose socket fails says so and stops;
//! its owner sees it is no longer alive and opens a new one.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvip_core::packet::{Claim, decode_claim};
use socket2::{SockFilter, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::error::NetError;
use super::{interface_label, raw};
use crate::metrics;

/// Large enough for a jumbo frame, so no advertisement is cut short.
const FRAME_BUFFER: usize = 9216;
/// Read errors in a row before the listener gives up on its socket.
const MAX_ERRORS_IN_A_ROW: u32 = 16;
/// Frames read before yielding to other tasks.
const BATCH: usize = 64;

/// Another MAC claiming an address, heard on one of our interfaces.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The interface it was heard on.
    pub interface: String,
    /// The claim.
    pub claim: Claim,
}

/// A running listener; dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    /// The interface index it is bound to.
    pub index: u32,
    alive: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl Listener {
    /// Whether it still listens (its socket has not failed).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts listening on `interface` (index `ifindex`) and sends the claims
/// heard into `claims`, dropping them when it is full. The listener runs on
/// the current Tokio runtime until dropped or its socket fails.
pub fn listen(
    ifindex: u32,
    interface: &str,
    claims: mpsc::Sender<Conflict>,
) -> Result<Listener, NetError> {
    let label = interface_label(ifindex);
    let action = || format!("listen for ARP and neighbour advertisements on {label}");
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetError::Socket {
        action: action(),
        source: io::Error::other(e),
    })?;
    let socket = open(ifindex).map_err(|e| NetError::socket(action(), e))?;
    let socket = raw::register_readable(socket).map_err(|e| NetError::socket(action(), e))?;
    let alive = Arc::new(AtomicBool::new(true));
    let task = runtime.spawn(receive(
        socket,
        claims,
        interface.to_string(),
        label,
        alive.clone(),
    ));
    Ok(Listener {
        index: ifindex,
        alive,
        task: task.abort_handle(),
    })
}

/// A packet socket on `ifindex` that passes only ARP and neighbour
/// advertisements. The filter goes on before the bind, so nothing else is
/// ever queued.
fn open(ifindex: u32) -> io::Result<Socket> {
    let socket = raw::unbound_packet_socket()?;
    let program: Vec<SockFilter> = CLAIM_FILTER
        .iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    socket.attach_filter(&program)?;
    raw::bind_to_link(&socket, ifindex, raw::ETH_P_ALL)?;
    Ok(socket)
}

async fn receive(
    socket: AsyncFd<Socket>,
    claims: mpsc::Sender<Conflict>,
    interface: String,
    label: String,
    alive: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; FRAME_BUFFER];
    let mut undecodable: u64 = 0;
    let mut errors = 0;
    'listening: loop {
        let mut ready = tokio::select! {
            () = claims.closed() => break 'listening,
            ready = socket.readable() => match ready {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::warn!(interface = %label, %error, "conflict listener stopped: socket failed; opening a new one");
                    break 'listening;
                }
            },
        };
        let mut read_now = 0;
        loop {
            if read_now >= BATCH {
                // Leave the rest for after other tasks had a turn.
                break;
            }
            let read = ready.try_io(|socket| Read::read(&mut socket.get_ref(), &mut buffer));
            let len = match read {
                Err(_would_block) => {
                    errors = 0;
                    break;
                }
                Ok(Ok(len)) => len,
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(error)) => {
                    // ENETDOWN while the link is down, and the like.
                    tracing::debug!(interface = %label, %error, "conflict listener: read failed");
                    errors += 1;
                    if errors >= MAX_ERRORS_IN_A_ROW {
                        tracing::warn!(interface = %label, %error, "conflict listener stopped: reads keep failing; opening a new one");
                        break 'listening;
                    }
                    continue;
                }
            };
            errors = 0;
            read_now += 1;
            let frame = buffer.get(..len).unwrap_or_default();
            match decode_claim(frame) {
                Ok(Some(claim)) => {
                    let heard = Conflict {
                        interface: interface.clone(),
                        claim,
                    };
                    match claims.try_send(heard) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics::get().claims_dropped.inc();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break 'listening,
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    undecodable += 1;
                    tracing::debug!(interface = %label, %error, undecodable, "ignored a malformed frame");
                }
            }
        }
        tokio::task::yield_now().await;
    }
    alive.store(false, Ordering::Relaxed);
    tracing::debug!(interface = %label, undecodable, "conflict listener stopped");
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy)]
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn op(code: u32, k: u32) -> Instruction {
    Instruction {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

const LOAD_WORD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const LOAD_HALF: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
const LOAD_BYTE: u32 = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
const RETURN: u32 = libc::BPF_RET | libc::BPF_K;
const ANCILLARY_PKTTYPE: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
const ANCILLARY_VLAN_TAG_PRESENT: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32;
/// Keep the whole frame.
const ACCEPT: u32 = 0x0004_0000;

/// The kernel-side filter: drop our own outgoing frames and frames of a VLAN
/// carried on this interface (its own interface has its own listener); keep
/// ARP, and IPv6 whose next header is ICMPv6 type 136 (a neighbour
/// advertisement; RFC 4861 advertisements carry no extension headers).
/// Jump offsets count instructions after the jump.
const CLAIM_FILTER: [Instruction; 13] = [
    op(LOAD_WORD, ANCILLARY_PKTTYPE),          // 0
    jeq(libc::PACKET_OUTGOING as u32, 10, 0),  // 1: outgoing -> 12
    op(LOAD_WORD, ANCILLARY_VLAN_TAG_PRESENT), // 2
    jeq(0, 0, 8),                              // 3: tagged -> 12
    op(LOAD_HALF, 12),                         // 4: ethertype
    jeq(libc::ETH_P_ARP as u32, 5, 0),         // 5: ARP -> 11
    jeq(libc::ETH_P_IPV6 as u32, 0, 5),        // 6: other -> 12
    op(LOAD_BYTE, 14 + 6),                     // 7: IPv6 next header
    jeq(libc::IPPROTO_ICMPV6 as u32, 0, 3),    // 8: not ICMPv6 -> 12
    op(LOAD_BYTE, 14 + 40),                    // 9: ICMPv6 type
    jeq(136, 0, 1),                            // 10: NA -> 11, else 12
    op(RETURN, ACCEPT),                        // 11
    op(RETURN, 0),                             // 12
];

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::packet::{gratuitous_arp_reply, unsolicited_neighbor_advertisement};
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// What the kernel would do with `frame`: a classic BPF interpreter for
    /// the instructions the filter uses.
    fn run(frame: &[u8], pkttype: u32, vlan_tagged: bool) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0;
        loop {
            let i = CLAIM_FILTER[pc];
            pc += 1;
            let code = u32::from(i.code);
            let load = |width: usize| -> Option<u32> {
                let at = i.k as usize;
                let bytes = frame.get(at..at + width)?;
                Some(bytes.iter().fold(0, |acc, b| acc << 8 | u32::from(*b)))
            };
            match code {
                LOAD_WORD if i.k == ANCILLARY_PKTTYPE => a = pkttype,
                LOAD_WORD if i.k == ANCILLARY_VLAN_TAG_PRESENT => a = u32::from(vlan_tagged),
                LOAD_HALF => match load(2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LOAD_BYTE => match load(1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                RETURN => return i.k,
                _ if code == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                _ => panic!("unexpected instruction {i:?}"),
            }
        }
    }

    const HOST: u32 = libc::PACKET_HOST as u32;
    const BROADCAST: u32 = libc::PACKET_BROADCAST as u32;
    const MULTICAST: u32 = libc::PACKET_MULTICAST as u32;
    const OUTGOING: u32 = libc::PACKET_OUTGOING as u32;

    #[test]
    fn filter_keeps_arp_and_advertisements_only() {
        let arp = gratuitous_arp_reply(MAC, Ipv4Addr::new(192, 0, 2, 7));
        let na = unsolicited_neighbor_advertisement(
            MAC,
            "fd00:99::7".parse().unwrap(),
            "fd00:99::7".parse().unwrap(),
        );
        assert_eq!(run(&arp, BROADCAST, false), ACCEPT);
        assert_eq!(run(&arp, HOST, false), ACCEPT);
        assert_eq!(run(&na, MULTICAST, false), ACCEPT);

        assert_eq!(run(&arp, OUTGOING, false), 0, "our own frames");
        assert_eq!(run(&na, OUTGOING, false), 0, "our own frames");
        assert_eq!(run(&arp, BROADCAST, true), 0, "another VLAN's traffic");

        let mut solicitation = na.clone();
        solicitation[54] = 135;
        assert_eq!(run(&solicitation, MULTICAST, false), 0);
        let mut udp = na.clone();
        udp[20] = 17;
        assert_eq!(run(&udp, MULTICAST, false), 0);
        let mut ipv4 = arp;
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(run(&ipv4, BROADCAST, false), 0);
        assert_eq!(run(&na[..40], MULTICAST, false), 0, "short frames");
    }
}
