//! Sending announcements: one long-lived raw packet socket per interface
//! that writes the core's gratuitous ARP and unsolicited neighbour
//! advertisement frames, and the timing of the takeover burst.

use std::net::IpAddr;
use std::time::Duration;

use kvip_core::packet::{
    arp_probe, dad_neighbor_solicitation, gratuitous_arp_reply, gratuitous_arp_request,
    unsolicited_neighbor_advertisement,
};
use socket2::Socket;

use super::error::NetError;
use super::{interface_label, raw};

/// When to send the takeover burst, as offsets from the moment the address
/// was added: at once, then a few repeats within the first second (switches
/// and hosts that missed or rate-limited one frame catch a later one). After
/// the last, the caller refreshes every `vip_arpRate`.
pub fn burst_schedule() -> &'static [Duration] {
    const BURST: [Duration; 4] = [
        Duration::ZERO,
        Duration::from_millis(150),
        Duration::from_millis(400),
        Duration::from_millis(800),
    ];
    &BURST
}

/// A raw packet socket bound to one interface that announces VIPs on it.
#[derive(Debug)]
pub struct Announcer {
    socket: Socket,
    ifindex: u32,
    mac: [u8; 6],
    interface: String,
}

impl Announcer {
    /// Whether it is open on interface `ifindex` announcing at `mac`: an
    /// interface recreated under the same name, or given a new MAC, needs a
    /// new announcer.
    pub fn is_for(&self, ifindex: u32, mac: [u8; 6]) -> bool {
        self.ifindex == ifindex && self.mac == mac
    }

    /// Opens the socket on interface `ifindex`, announcing VIPs at `mac`.
    pub fn open(ifindex: u32, mac: [u8; 6]) -> Result<Self, NetError> {
        let interface = interface_label(ifindex);
        if mac == [0; 6] {
            return Err(NetError::NoEthernetAddress { interface });
        }
        let socket = raw::unbound_packet_socket()
            .and_then(|socket| {
                // Protocol 0: this socket only sends, it receives nothing.
                raw::bind_to_link(&socket, ifindex, 0)?;
                Ok(socket)
            })
            .map_err(|e| NetError::socket(format!("open a packet socket on {interface}"), e))?;
        Ok(Announcer {
            socket,
            ifindex,
            mac,
            interface,
        })
    }

    /// Sends one round of announcements for `ip` and returns how many frames
    /// went out: IPv4, a gratuitous ARP request and reply; IPv6, one
    /// unsolicited neighbour advertisement with Override to ff02::1.
    pub fn announce(&self, ip: IpAddr) -> Result<usize, NetError> {
        let frames = announcement_frames(self.mac, ip);
        for frame in &frames {
            self.send(ip, frame)?;
        }
        Ok(frames.len())
    }

    /// Asks whether another host uses `ip`: an ARP probe from 0.0.0.0, or a
    /// neighbour solicitation from `::`; neither teaches any cache anything.
    pub fn probe(&self, ip: IpAddr) -> Result<(), NetError> {
        let frame = match ip {
            IpAddr::V4(v4) => arp_probe(self.mac, v4).to_vec(),
            IpAddr::V6(v6) => dad_neighbor_solicitation(self.mac, v6),
        };
        self.send(ip, &frame)
    }

    fn send(&self, ip: IpAddr, frame: &[u8]) -> Result<(), NetError> {
        let action = || format!("send a frame for {ip} on {}", self.interface);
        let (destination, ethertype) = frame_header(frame);
        let address = raw::link_address(self.ifindex, ethertype, destination)
            .map_err(|e| NetError::socket(action(), e))?;
        let sent = self
            .socket
            .send_to(frame, &address)
            .map_err(|e| NetError::socket(action(), e))?;
        if sent != frame.len() {
            return Err(NetError::socket(
                action(),
                std::io::Error::other(format!("sent {sent} of {} bytes", frame.len())),
            ));
        }
        Ok(())
    }
}

/// The frames that announce `ip` at `mac`. An IPv6 VIP is its own source
/// address: it is on the interface, and a link-local source would need one.
fn announcement_frames(mac: [u8; 6], ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![
            gratuitous_arp_request(mac, v4).to_vec(),
            gratuitous_arp_reply(mac, v4).to_vec(),
        ],
        IpAddr::V6(v6) => vec![unsolicited_neighbor_advertisement(mac, v6, v6)],
    }
}

/// Destination MAC and ethertype of an Ethernet frame built by the core.
fn frame_header(frame: &[u8]) -> ([u8; 6], u16) {
    let mut destination = [0u8; 6];
    if let Some(bytes) = frame.get(..6) {
        destination.copy_from_slice(bytes);
    }
    let ethertype = match frame.get(12..14) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    };
    (destination, ethertype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvip_core::packet::{Claim, ETHERTYPE_ARP, ETHERTYPE_IPV6, decode_claim};

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn burst_starts_at_once_and_repeats_within_the_first_second() {
        let schedule = burst_schedule();
        assert_eq!(schedule.first(), Some(&Duration::ZERO));
        assert!(schedule.len() >= 3, "a few repeats");
        assert!(schedule.windows(2).all(|w| w[0] < w[1]), "{schedule:?}");
        assert!(schedule.iter().all(|d| *d < Duration::from_secs(1)));
    }

    #[test]
    fn ipv4_is_announced_by_a_request_and_a_reply() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let frames = announcement_frames(MAC, ip);
        assert_eq!(frames.len(), 2);
        let opers: Vec<u8> = frames.iter().map(|f| f[21]).collect();
        assert_eq!(opers, [1, 2], "request, then reply");
        for frame in &frames {
            assert_eq!(frame_header(frame), ([0xff; 6], ETHERTYPE_ARP));
            assert_eq!(decode_claim(frame), Ok(Some(Claim { ip, mac: MAC })));
        }
    }

    #[test]
    fn ipv6_is_announced_by_one_advertisement_from_the_vip_to_all_nodes() {
        let ip: IpAddr = "fd00:99::10".parse().unwrap();
        let frames = announcement_frames(MAC, ip);
        assert_eq!(frames.len(), 1);
        let frame = &frames[0];
        assert_eq!(
            frame_header(frame),
            ([0x33, 0x33, 0, 0, 0, 1], ETHERTYPE_IPV6)
        );
        assert_eq!(
            &frame[22..38],
            &"fd00:99::10"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(frame[21], 255, "hop limit");
        assert_eq!(decode_claim(frame), Ok(Some(Claim { ip, mac: MAC })));
    }

    #[test]
    fn short_frames_have_a_zero_header() {
        assert_eq!(frame_header(&[1, 2, 3]), ([0; 6], 0));
    }

    #[test]
    fn an_interface_without_a_mac_cannot_announce() {
        let err = Announcer::open(1, [0; 6]).unwrap_err();
        assert!(matches!(err, NetError::NoEthernetAddress { .. }), "{err}");
    }
}
