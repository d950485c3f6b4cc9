//! Raw announcement frames, built and parsed as plain bytes: gratuitous ARP
//! (RFC 826, RFC 5227) for IPv4 and unsolicited neighbour advertisements
//! (RFC 4861) for IPv6, plus a decoder that spots another host claiming an
//! address, for conflict detection. No sockets here; frames are whole
//! Ethernet frames for an `AF_PACKET`/`SOCK_RAW` socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Ethernet type of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet type of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethernet type of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethernet type of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Length of a gratuitous ARP frame (before the NIC pads it to 60 bytes).
pub const ARP_FRAME_LEN: usize = 42;
/// Length of the unsolicited neighbour advertisement frame.
pub const NA_FRAME_LEN: usize = ETHERNET_LEN + IPV6_LEN + NA_LEN + 8;

const ETHERNET_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_LEN: usize = 40;
/// ICMPv6 type, code, checksum, flags and reserved, target address.
const NA_LEN: usize = 24;
const ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
/// The Override flag: receivers replace the cached link-layer address.
const FLAG_OVERRIDE: u8 = 0x20;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// `33:33` followed by the low 32 bits of ff02::1 (RFC 2464 §7).
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// ff02::1, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Another host's statement that `ip` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Claim {
    /// The address claimed.
    pub ip: IpAddr,
    /// The link-layer address it is claimed for.
    pub mac: [u8; 6],
}

/// A frame that looks like ARP or a neighbour advertisement but is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The frame ends before a header or the length it announces.
    #[error("{layer} truncated: needs {needed} bytes, frame has {got}")]
    Truncated {
        /// The part that is cut short.
        layer: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// A neighbour discovery option of length zero (RFC 4861 §4.6 says drop it).
    #[error("neighbor advertisement has an option of length zero")]
    ZeroLengthOption,
    /// The ICMPv6 checksum does not match.
    #[error("neighbor advertisement has a bad ICMPv6 checksum")]
    BadChecksum,
}

/// Ethernet II header:
///
/// ```text
///  0                   6                   12      14
/// +-------------------+-------------------+-------+
/// | destination MAC   | source MAC        | type  |
/// +-------------------+-------------------+-------+
/// ```
fn ethernet(frame: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// An ARP packet for IPv4 over Ethernet (RFC 826) in an Ethernet frame:
///
/// ```text
///  14      16      18  19  20      22                28         32                38         42
/// +-------+-------+---+---+-------+-----------------+----------+-----------------+----------+
/// | htype | ptype |hln|pln| oper  | sender MAC      |sender IP | target MAC      |target IP |
/// |   1   |0x0800 | 6 | 4 | 1 / 2 |                 |          |                 |          |
/// +-------+-------+---+---+-------+-----------------+----------+-----------------+----------+
/// ```
///
/// Gratuitous: sender IP = target IP = the announced address (RFC 5227 §3).
fn arp(oper: u16, mac: [u8; 6], ip: Ipv4Addr, target_mac: [u8; 6]) -> [u8; ARP_FRAME_LEN] {
    arp_frame(oper, mac, ip, target_mac, ip)
}

fn arp_frame(
    oper: u16,
    mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    ethernet(&mut frame, BROADCAST_MAC, mac, ETHERTYPE_ARP);
    let p = &mut frame[ETHERNET_LEN..];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&oper.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&sender_ip.octets());
    p[18..24].copy_from_slice(&target_mac);
    p[24..28].copy_from_slice(&target_ip.octets());
    frame
}

/// An ARP probe (RFC 5227 §2.1.1): "who has `ip`?" from `mac` with sender
/// IP 0.0.0.0, so no cache learns anything; a host using `ip` answers.
pub fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame(1, mac, Ipv4Addr::UNSPECIFIED, [0; 6], ip)
}

/// Length of the duplicate address detection solicitation frame.
pub const DAD_FRAME_LEN: usize = ETHERNET_LEN + IPV6_LEN + NS_LEN;
/// ICMPv6 type, code, checksum, reserved, target address.
const NS_LEN: usize = 24;
const NEIGHBOR_SOLICITATION: u8 = 135;

/// A duplicate address detection probe (RFC 4862 §5.4.2): a neighbour
/// solicitation for `target` from the unspecified address to its
/// solicited-node group, with no link-layer option; a host using `target`
/// answers with a neighbour advertisement to all nodes.
pub fn dad_neighbor_solicitation(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let g = group.octets();
    let mut frame = vec![0u8; DAD_FRAME_LEN];
    ethernet(
        &mut frame,
        [0x33, 0x33, g[12], g[13], g[14], g[15]],
        mac,
        ETHERTYPE_IPV6,
    );
    let ip = &mut frame[ETHERNET_LEN..ETHERNET_LEN + IPV6_LEN];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(NS_LEN as u16).to_be_bytes());
    ip[6] = ICMPV6;
    ip[7] = 255;
    ip[24..40].copy_from_slice(&g);
    let icmp = &mut frame[ETHERNET_LEN + IPV6_LEN..];
    icmp[0] = NEIGHBOR_SOLICITATION;
    icmp[8..24].copy_from_slice(&t);
    let checksum = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, group, icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// A broadcast gratuitous ARP request: "who has `ip`? tell `ip`", from `mac`.
pub fn gratuitous_arp_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp(1, mac, ip, [0; 6])
}

/// A broadcast gratuitous ARP reply: "`ip` is at `mac`", for hosts that ignore requests.
pub fn gratuitous_arp_reply(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp(2, mac, ip, BROADCAST_MAC)
}

/// An unsolicited neighbour advertisement (RFC 4861 §4.4, §7.2.6) that
/// `target` is at `mac`, sent from `src` to all nodes:
///
/// ```text
/// IPv6 header (14..54)
/// +-------+---------------+---------------+----------+----------+
/// |ver 6  | payload len 32| next hdr 58   | hop 255  | src, dst |
/// +-------+---------------+---------------+----------+----------+
/// ICMPv6 neighbour advertisement (54..78)
/// +--------+--------+-----------+------------------+--------------------+
/// |type 136| code 0 | checksum  | R S O + reserved | target (16 bytes)  |
/// +--------+--------+-----------+------------------+--------------------+
/// option: target link-layer address (78..86)
/// +--------+--------+-------------------+
/// | type 2 | len 1  | MAC (6 bytes)     |
/// +--------+--------+-------------------+
/// ```
///
/// Router = 0, Solicited = 0 (unsolicited), Override = 1 so caches update.
/// Hop limit 255 proves the frame never crossed a router (receivers check).
pub fn unsolicited_neighbor_advertisement(
    mac: [u8; 6],
    src: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let mut frame = vec![0u8; NA_FRAME_LEN];
    ethernet(&mut frame, ALL_NODES_MAC, mac, ETHERTYPE_IPV6);
    let payload_len = NA_FRAME_LEN - ETHERNET_LEN - IPV6_LEN;

    let ip = &mut frame[ETHERNET_LEN..ETHERNET_LEN + IPV6_LEN];
    ip[0] = 0x60; // version 6, traffic class and flow label 0
    ip[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    ip[6] = ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());

    let icmp = &mut frame[ETHERNET_LEN + IPV6_LEN..];
    icmp[0] = NEIGHBOR_ADVERTISEMENT;
    icmp[4] = FLAG_OVERRIDE;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = OPTION_TARGET_LINK_LAYER;
    icmp[25] = 1; // in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let checksum = icmpv6_checksum(src, ALL_NODES, icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// The ICMPv6 checksum (RFC 4443 §2.3): the one's complement of the one's
/// complement sum over the IPv6 pseudo-header (RFC 8200 §8.1) and the
/// message, whose checksum field must be zero when computing it. Over a
/// message carrying its checksum, the sum is 0xffff, so this returns 0.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    fn add(sum: u64, bytes: &[u8]) -> u64 {
        bytes.chunks(2).fold(sum, |sum, pair| {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum + (hi | lo)
        })
    }
    let mut sum = add(0, &src.octets());
    sum = add(sum, &dst.octets());
    sum = add(sum, &(message.len() as u32).to_be_bytes());
    sum = add(sum, &[0, 0, 0, ICMPV6]);
    sum = add(sum, message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `len` bytes of `bytes` from `at`, or the error naming `layer`.
fn take<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    layer: &'static str,
) -> Result<&'a [u8], PacketError> {
    bytes
        .get(at..at.saturating_add(len))
        .ok_or(PacketError::Truncated {
            layer,
            needed: at.saturating_add(len),
            got: bytes.len(),
        })
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

fn mac_at(bytes: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0; 6];
    if let Some(src) = bytes.get(at..at + 6) {
        mac.copy_from_slice(src);
    }
    mac
}

/// The address claim in an Ethernet frame, if it carries one: any ARP
/// request or reply with a sender address (RFC 5227 §2.4: a packet whose
/// sender IP is ours, from another MAC, is a conflict), or a neighbour
/// advertisement for a unicast target (its target link-layer option, else
/// the Ethernet source). Up to two VLAN tags are skipped. Other traffic is
/// `Ok(None)`; never panics.
pub fn decode_claim(frame: &[u8]) -> Result<Option<Claim>, PacketError> {
    take(frame, 0, ETHERNET_LEN, "Ethernet header")?;
    let source_mac = mac_at(frame, 6);
    let mut ethertype = u16_at(frame, 12);
    let mut offset = ETHERNET_LEN;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = take(frame, offset, 4, "VLAN tag")?;
        ethertype = u16_at(tag, 2);
        offset += 4;
    }
    let payload = &frame[offset..];
    match ethertype {
        ETHERTYPE_ARP => decode_arp(payload),
        ETHERTYPE_IPV6 => decode_neighbor_advertisement(payload, source_mac),
        _ => Ok(None),
    }
}

fn decode_arp(packet: &[u8]) -> Result<Option<Claim>, PacketError> {
    let p = take(packet, 0, ARP_LEN, "ARP packet")?;
    let ethernet_ipv4 = u16_at(p, 0) == 1 && u16_at(p, 2) == 0x0800 && p[4] == 6 && p[5] == 4;
    let oper = u16_at(p, 6);
    if !ethernet_ipv4 || !(oper == 1 || oper == 2) {
        return Ok(None);
    }
    let sender = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    if sender.is_unspecified() {
        // An RFC 5227 probe: someone asking, not claiming.
        return Ok(None);
    }
    Ok(Some(Claim {
        ip: IpAddr::V4(sender),
        mac: mac_at(p, 8),
    }))
}

fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    if let Some(src) = bytes.get(at..at + 16) {
        octets.copy_from_slice(src);
    }
    Ipv6Addr::from(octets)
}

fn decode_neighbor_advertisement(
    packet: &[u8],
    source_mac: [u8; 6],
) -> Result<Option<Claim>, PacketError> {
    let header = take(packet, 0, IPV6_LEN, "IPv6 header")?;
    if header[0] >> 4 != 6 || header[6] != ICMPV6 {
        return Ok(None);
    }
    let payload_len = usize::from(u16_at(header, 4));
    let icmp = take(packet, IPV6_LEN, payload_len, "IPv6 payload")?;
    if icmp.first() != Some(&NEIGHBOR_ADVERTISEMENT) {
        return Ok(None);
    }
    take(icmp, 0, NA_LEN, "neighbor advertisement")?;
    // RFC 4861 §7.1.2: only code 0 with hop limit 255 is a valid advertisement.
    if icmp[1] != 0 || header[7] != 255 {
        return Ok(None);
    }
    let (src, dst) = (ipv6_at(header, 8), ipv6_at(header, 24));
    if icmpv6_checksum(src, dst, icmp) != 0 {
        return Err(PacketError::BadChecksum);
    }
    let target = ipv6_at(icmp, 8);
    if target.is_multicast() || target.is_unspecified() {
        return Ok(None);
    }
    let mut mac = source_mac;
    let mut options = &icmp[NA_LEN..];
    while let [kind, units, ..] = *options {
        let len = usize::from(units) * 8;
        if len == 0 {
            return Err(PacketError::ZeroLengthOption);
        }
        let option = take(options, 0, len, "neighbor discovery option")?;
        if kind == OPTION_TARGET_LINK_LAYER {
            mac = mac_at(option, 2);
        }
        options = &options[len..];
    }
    Ok(Some(Claim {
        ip: IpAddr::V6(target),
        mac,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn gratuitous_arp_request_layout() {
        let frame = gratuitous_arp_request(MAC, Ipv4Addr::new(192, 168, 0, 40));
        let expected = [
            // Ethernet: to broadcast, from MAC, type ARP
            "ffffffffffff0242ac1100020806",
            // htype 1, ptype IPv4, lengths 6 and 4, operation 1 (request)
            "0001080006040001",
            // sender MAC and IP
            "0242ac110002c0a80028",
            // target MAC unknown, target IP the same address
            "000000000000c0a80028",
        ];
        assert_eq!(hex(&frame), expected.concat());
    }

    #[test]
    fn gratuitous_arp_reply_layout() {
        let frame = gratuitous_arp_reply(MAC, Ipv4Addr::new(10, 0, 0, 1));
        let expected = [
            "ffffffffffff0242ac1100020806",
            // operation 2 (reply)
            "0001080006040002",
            "0242ac1100020a000001",
            // target MAC broadcast, target IP the same address
            "ffffffffffff0a000001",
        ];
        assert_eq!(hex(&frame), expected.concat());
    }

    #[test]
    fn arp_probe_layout() {
        let frame = arp_probe(MAC, Ipv4Addr::new(10, 0, 0, 1));
        let expected = [
            "ffffffffffff0242ac1100020806",
            "0001080006040001",
            // sender MAC, sender IP 0.0.0.0: nobody learns from a probe
            "0242ac11000200000000",
            "0000000000000a000001",
        ];
        assert_eq!(hex(&frame), expected.concat());
        assert_eq!(decode_claim(&frame), Ok(None), "a probe claims nothing");
    }

    #[test]
    fn dad_solicitation_matches_the_known_good_vector() {
        let frame = dad_neighbor_solicitation(MAC, "2001:db8::10".parse().unwrap());
        // Checksum computed independently (Python, RFC 4443 algorithm).
        let expected = [
            // to the solicited-node group's MAC 33:33:ff:00:00:10
            "3333ff0000100242ac11000286dd",
            "6000000000183aff",
            // from ::
            "00000000000000000000000000000000",
            // to ff02::1:ff00:10
            "ff0200000000000000000001ff000010",
            // type 135, code 0, checksum, reserved
            "87004ccf00000000",
            "20010db8000000000000000000000010",
        ];
        assert_eq!(hex(&frame), expected.concat());
        assert_eq!(decode_claim(&frame), Ok(None));
    }

    /// Computed independently (Python, RFC 4443 algorithm) for these inputs.
    const NA_VECTOR: [&str; 9] = [
        // Ethernet: to 33:33:00:00:00:01, from MAC, type IPv6
        "3333000000010242ac11000286dd",
        // version 6, payload length 32, next header ICMPv6, hop limit 255
        "6000000000203aff",
        // source fe80::42:acff:fe11:2
        "fe800000000000000042acfffe110002",
        // destination ff02::1
        "ff020000000000000000000000000001",
        // type 136, code 0, checksum 0xd0aa
        "8800d0aa",
        // flags: Override only
        "20000000",
        // target 2001:db8::10
        "20010db8000000000000000000000010",
        // option 2 (target link-layer address), length 1 (8 bytes), MAC
        "0201",
        "0242ac110002",
    ];

    #[test]
    fn neighbor_advertisement_matches_the_known_good_vector() {
        let frame = unsolicited_neighbor_advertisement(
            MAC,
            "fe80::42:acff:fe11:2".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        );
        assert_eq!(frame.len(), NA_FRAME_LEN);
        assert_eq!(hex(&frame), NA_VECTOR.concat());
    }

    /// The RFC algorithm again, written the plain way: build the pseudo-header
    /// and message in one buffer and sum 16-bit words.
    fn reference_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
        let mut buf = Vec::new();
        buf.extend_from_slice(&src.octets());
        buf.extend_from_slice(&dst.octets());
        buf.extend_from_slice(&(message.len() as u32).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 58]);
        buf.extend_from_slice(message);
        if buf.len() % 2 == 1 {
            buf.push(0);
        }
        let mut sum: u32 = 0;
        for word in buf.chunks(2) {
            sum += u32::from(word[0]) << 8 | u32::from(word[1]);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest! {
        #[test]
        fn checksum_agrees_with_the_reference(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            message in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            prop_assert_eq!(icmpv6_checksum(src, dst, &message), reference_checksum(src, dst, &message));
        }

        #[test]
        fn announcements_decode_to_their_claim(mac in any::<[u8; 6]>(), v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>()) {
            let v4 = Ipv4Addr::from(v4);
            prop_assume!(!v4.is_unspecified());
            let claim = Some(Claim { ip: IpAddr::V4(v4), mac });
            prop_assert_eq!(decode_claim(&gratuitous_arp_request(mac, v4)), Ok(claim));
            prop_assert_eq!(decode_claim(&gratuitous_arp_reply(mac, v4)), Ok(claim));

            let v6 = Ipv6Addr::from(v6);
            prop_assume!(!v6.is_multicast() && !v6.is_unspecified());
            let frame = unsolicited_neighbor_advertisement(mac, v6, v6);
            prop_assert_eq!(decode_claim(&frame), Ok(Some(Claim { ip: IpAddr::V6(v6), mac })));
        }

        #[test]
        fn never_panics_on_any_bytes(frame in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_claim(&frame);
        }

        #[test]
        fn never_panics_on_valid_frames_with_random_tails(
            kind in 0..3u8,
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            flip in any::<(usize, u8)>(),
        ) {
            let mut frame = match kind {
                0 => gratuitous_arp_request(MAC, Ipv4Addr::new(10, 0, 0, 1)).to_vec(),
                1 => gratuitous_arp_reply(MAC, Ipv4Addr::new(10, 0, 0, 1)).to_vec(),
                _ => unsolicited_neighbor_advertisement(MAC, "fd00::1".parse().unwrap(), "fd00::1".parse().unwrap()),
            };
            frame.extend_from_slice(&tail);
            let at = flip.0 % frame.len();
            frame[at] ^= flip.1;
            let _ = decode_claim(&frame);
        }
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let frames = [
            gratuitous_arp_request(MAC, Ipv4Addr::new(10, 0, 0, 1)).to_vec(),
            unsolicited_neighbor_advertisement(
                MAC,
                "fd00::1".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ),
            with_vlan(&gratuitous_arp_reply(MAC, Ipv4Addr::new(10, 0, 0, 1))),
        ];
        for frame in frames {
            for len in 0..frame.len() {
                let got = decode_claim(&frame[..len]);
                assert!(
                    matches!(got, Err(PacketError::Truncated { .. })),
                    "{len}: {got:?}"
                );
            }
            assert!(matches!(decode_claim(&frame), Ok(Some(_))));
        }
    }

    fn with_vlan(frame: &[u8]) -> Vec<u8> {
        let mut tagged = frame[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]); // VLAN 100
        tagged.extend_from_slice(&frame[12..]);
        tagged
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let claim = Ok(Some(Claim {
            ip: IpAddr::V4(ip),
            mac: MAC,
        }));
        let tagged = with_vlan(&gratuitous_arp_reply(MAC, ip));
        assert_eq!(decode_claim(&tagged), claim);
        assert_eq!(
            decode_claim(&with_vlan(&tagged)),
            claim,
            "QinQ-style double tag"
        );
    }

    #[test]
    fn ordinary_arp_requests_claim_their_sender_and_probes_claim_nothing() {
        let mut frame = gratuitous_arp_request(MAC, Ipv4Addr::new(10, 0, 0, 5));
        frame[38..42].copy_from_slice(&[10, 0, 0, 99]); // asking for another host
        assert_eq!(
            decode_claim(&frame),
            Ok(Some(Claim {
                ip: "10.0.0.5".parse().unwrap(),
                mac: MAC
            }))
        );
        frame[28..32].copy_from_slice(&[0, 0, 0, 0]); // RFC 5227 probe
        assert_eq!(decode_claim(&frame), Ok(None));
        // Ethernet padding to 60 bytes is fine.
        let mut padded = gratuitous_arp_reply(MAC, Ipv4Addr::new(10, 0, 0, 5)).to_vec();
        padded.resize(60, 0);
        assert!(matches!(decode_claim(&padded), Ok(Some(_))));
    }

    #[test]
    fn neighbor_advertisement_details() {
        let target: Ipv6Addr = "fd00::10".parse().unwrap();
        let frame = unsolicited_neighbor_advertisement(MAC, target, target);

        // Without the option, the Ethernet source is the claimed MAC.
        let mut bare = frame[..NA_FRAME_LEN - 8].to_vec();
        bare[18..20].copy_from_slice(&24u16.to_be_bytes());
        let icmp_at = ETHERNET_LEN + IPV6_LEN;
        bare[icmp_at + 2..icmp_at + 4].copy_from_slice(&[0, 0]);
        let sum = icmpv6_checksum(target, ALL_NODES, &bare[icmp_at..]);
        bare[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
        let mut other = bare.clone();
        other[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert_eq!(
            decode_claim(&other),
            Ok(Some(Claim {
                ip: IpAddr::V6(target),
                mac: [2, 0, 0, 0, 0, 9]
            }))
        );

        let mut corrupted = frame.clone();
        corrupted[NA_FRAME_LEN - 1] ^= 1;
        assert_eq!(decode_claim(&corrupted), Err(PacketError::BadChecksum));

        let mut routed = frame.clone();
        routed[ETHERNET_LEN + 7] = 64; // hop limit below 255: crossed a router
        assert_eq!(decode_claim(&routed), Ok(None));

        let mut zero_option = frame;
        zero_option[NA_FRAME_LEN - 7] = 0;
        let sum_at = icmp_at + 2;
        zero_option[sum_at..sum_at + 2].copy_from_slice(&[0, 0]);
        let sum = icmpv6_checksum(target, ALL_NODES, &zero_option[icmp_at..]);
        zero_option[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            decode_claim(&zero_option),
            Err(PacketError::ZeroLengthOption)
        );
    }

    #[test]
    fn other_traffic_is_not_a_claim() {
        let mut ipv4 = gratuitous_arp_request(MAC, Ipv4Addr::new(10, 0, 0, 1));
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(decode_claim(&ipv4), Ok(None));
        let mut solicitation = unsolicited_neighbor_advertisement(
            MAC,
            "fd00::1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
        );
        solicitation[ETHERNET_LEN + IPV6_LEN] = 135;
        assert_eq!(decode_claim(&solicitation), Ok(None));
    }
}
