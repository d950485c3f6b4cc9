//! Forged address claims: frames saying that an address is at some MAC,
//! written to a raw packet socket inside a lab namespace as if another host
//! on the bridge had taken the address. The frames are kvip-core's own
//! announcements: a gratuitous ARP reply for IPv4, an unsolicited neighbour
//! advertisement from the address to all nodes for IPv6.

use crate::network::Mac;
use anyhow::{Context, bail};
use kvip_core::packet::{gratuitous_arp_reply, unsolicited_neighbor_advertisement};
use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};
use std::mem::size_of;
use std::net::IpAddr;
use std::time::Duration;

/// Most frames one call sends.
pub const MAX_FRAMES: u32 = 10_000;

/// The frame that claims `ip` for `mac`.
pub fn claim_frame(ip: IpAddr, mac: Mac) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => gratuitous_arp_reply(mac.0, v4).to_vec(),
        IpAddr::V6(v6) => unsolicited_neighbor_advertisement(mac.0, v6, v6),
    }
}

/// Refuses a frame count of zero or above [`MAX_FRAMES`].
pub fn check_count(count: u32) -> anyhow::Result<()> {
    if count == 0 || count > MAX_FRAMES {
        bail!("--count must be between 1 and {MAX_FRAMES}, not {count}");
    }
    Ok(())
}

/// Sends `frame` (a whole Ethernet frame) `count` times, `interval` apart,
/// out of `interface` inside the network namespace `netns`, from a thread
/// that enters it; returns how many frames went out.
pub fn send_frames(
    netns: &str,
    interface: &str,
    frame: Vec<u8>,
    count: u32,
    interval: Duration,
) -> anyhow::Result<u32> {
    check_count(count)?;
    let interface = interface.to_string();
    crate::netns::in_netns(netns, move || {
        send_here(&interface, &frame, count, interval)
    })?
    .with_context(|| format!("sending frames from {netns}"))
}

/// [`send_frames`] in the calling thread's network namespace.
fn send_here(interface: &str, frame: &[u8], count: u32, interval: Duration) -> anyhow::Result<u32> {
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .with_context(|| format!("no interface {interface}"))?;
    let destination = frame.get(..6).and_then(|d| <[u8; 6]>::try_from(d).ok());
    let (Some(destination), Some(&[hi, lo])) = (destination, frame.get(12..14)) else {
        bail!("a frame of {} bytes has no Ethernet header", frame.len());
    };
    let address = link_address(ifindex, u16::from_be_bytes([hi, lo]), destination)?;
    // Protocol 0: the socket only sends; no frame is ever queued to it.
    let socket =
        Socket::new(Domain::PACKET, Type::RAW, None).context("opening a raw packet socket")?;
    let mut sent = 0;
    while sent < count {
        if sent > 0 {
            std::thread::sleep(interval);
        }
        let written = socket
            .send_to(frame, &address)
            .with_context(|| format!("sending on {interface} after {sent} frame(s)"))?;
        if written != frame.len() {
            bail!(
                "sent {written} of {} bytes on {interface} after {sent} frame(s)",
                frame.len()
            );
        }
        sent += 1;
    }
    Ok(sent)
}

/// The `sockaddr_ll` that sends a frame of `ethertype` to `destination` out
/// of interface `ifindex`.
#[allow(unsafe_code)]
fn link_address(ifindex: u32, ethertype: u16, destination: [u8; 6]) -> anyhow::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .with_context(|| format!("interface index {ifindex} out of range"))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is a socket address type of this platform, and
    // `view_as` asserts it fits in the storage; the storage is zeroed, which
    // is a valid `sockaddr_ll`.
    let address = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    address.sll_family = libc::AF_PACKET as libc::sa_family_t;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = ifindex;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&destination);
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds a fully initialised `sockaddr_ll` whose
    // family is `AF_PACKET`, and `len` is exactly its size.
    Ok(unsafe { SockAddr::new(storage, len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::packet::{Claim, decode_claim};

    const MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x42]);

    #[test]
    fn frames_decode_to_the_claim() {
        for ip in ["10.77.0.150", "fd00:77::1:50"] {
            let ip: IpAddr = ip.parse().unwrap();
            let claim = decode_claim(&claim_frame(ip, MAC)).unwrap();
            assert_eq!(claim, Some(Claim { ip, mac: MAC.0 }), "{ip}");
        }
    }

    #[test]
    fn ipv4_claims_are_broadcast_arp_replies() {
        let frame = claim_frame("10.77.0.150".parse().unwrap(), MAC);
        assert_eq!(frame[..6], [0xff; 6]);
        assert_eq!(frame[6..12], MAC.0);
        assert_eq!(frame[12..14], [0x08, 0x06]);
        assert_eq!(frame[20..22], [0, 2], "an ARP reply");
    }

    #[test]
    fn counts_are_capped() {
        assert!(check_count(0).is_err());
        assert!(check_count(1).is_ok());
        assert!(check_count(MAX_FRAMES).is_ok());
        let refused = check_count(MAX_FRAMES + 1).unwrap_err().to_string();
        assert!(refused.contains("--count"), "{refused}");
    }

    #[test]
    fn link_address_is_a_packet_address() {
        let address = link_address(3, 0x0806, [0xff; 6]).unwrap();
        assert_eq!(address.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(address.len() as usize, size_of::<libc::sockaddr_ll>());
        assert!(link_address(u32::MAX, 0x0806, [0xff; 6]).is_err());
    }
}
