//! `kvip-lab forge-claim`: another host on the bridge claiming an address,
//! played from the client namespace.

use super::require_root;
use crate::forge;
use crate::layout::CLIENT_NETNS;
use crate::network::Mac;
use std::net::IpAddr;
use std::time::Duration;

/// `kvip-lab forge-claim --ip IP --mac MAC`: `count` frames claiming `ip`
/// for `mac`, `interval` apart, out of the client's `eth0`; returns how
/// many went out.
pub fn forge_claim(ip: IpAddr, mac: Mac, count: u32, interval: Duration) -> anyhow::Result<u32> {
    require_root()?;
    forge::send_frames(
        CLIENT_NETNS,
        "eth0",
        forge::claim_frame(ip, mac),
        count,
        interval,
    )
}
