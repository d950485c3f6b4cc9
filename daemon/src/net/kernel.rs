//! Kernel truth: a netlink subscription to link, address and route changes
//! that reads the whole [`NetState`] again after each burst of them (and at
//! least every [`REFRESH`]) and hands it to both roles. A VIP someone
//! removed, an interface that went down, came back, was recreated or got a
//! new MAC is seen within milliseconds, without listing interfaces on a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use tokio::sync::watch;

use super::links::{NetState, Netlink};
use crate::metrics;

/// The longest the state goes without being read again, in case a
/// notification was lost (the kernel drops them when the socket is full).
pub const REFRESH: Duration = Duration::from_secs(10);

/// Notifications arriving within this of each other are read as one change.
const SETTLE: Duration = Duration::from_millis(20);

/// How long to wait before trying again after netlink failed.
const RETRY: Duration = Duration::from_secs(1);

/// One reading of the kernel's state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What the kernel has.
    pub state: NetState,
    /// When the reading started: every change before it is in it.
    pub taken: Instant,
}

/// Milliseconds since the process started when the state was last read
/// successfully (0: never).
static LAST_READ_MS: AtomicU64 = AtomicU64::new(0);

/// How long ago the kernel's state was last read successfully, if ever.
pub fn since_last_read(started: Instant) -> Option<Duration> {
    let at = LAST_READ_MS.load(Ordering::Relaxed);
    (at > 0).then(|| started.elapsed().saturating_sub(Duration::from_millis(at)))
}

/// Reads the state now, then starts following the kernel's changes; the
/// receiver always holds the latest reading.
pub async fn watch(
    netlink: Netlink,
    started: Instant,
) -> Result<watch::Receiver<Arc<Snapshot>>, super::NetError> {
    let taken = Instant::now();
    let state = netlink.state().await?;
    mark_read(started);
    let (tx, rx) = watch::channel(Arc::new(Snapshot { state, taken }));
    tokio::spawn(follow(netlink, tx, started));
    Ok(rx)
}

/// Whether a notification can change what placement or kernel truth
/// sees: links and addresses, and default routes (other routes, such as a
/// CNI's per-pod routes, cannot).
fn relevant(message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
    match &message.payload {
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route),
        ) => route.header.destination_prefix_length == 0,
        _ => true,
    }
}

fn mark_read(started: Instant) {
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    LAST_READ_MS.store(ms.max(1), Ordering::Relaxed);
    metrics::get().netlink_up.set(1);
}

async fn follow(netlink: Netlink, tx: watch::Sender<Arc<Snapshot>>, started: Instant) {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let mut last_read = Instant::now();
    loop {
        let mut messages = match rtnetlink::new_multicast_connection(&groups) {
            Ok((connection, _, messages)) => {
                tokio::spawn(connection);
                Some(messages)
            }
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to the kernel's interface changes; reading them every second");
                metrics::get().netlink_up.set(0);
                None
            }
        };
        loop {
            let mut notified = false;
            let refresh = REFRESH.saturating_sub(last_read.elapsed());
            match messages.as_mut() {
                Some(m) => match tokio::time::timeout(refresh, m.next()).await {
                    Ok(None) => {
                        tracing::warn!(
                            "the kernel's interface notifications stopped; subscribing again"
                        );
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                    Ok(Some((message, _))) if !relevant(&message) => continue,
                    Ok(Some(_)) => {
                        notified = true;
                        // Let a burst (an interface going down drops every
                        // address) settle into one reading.
                        let settle = tokio::time::sleep(SETTLE);
                        tokio::pin!(settle);
                        loop {
                            tokio::select! {
                                () = &mut settle => break,
                                next = m.next() => if next.is_none() { break },
                            }
                        }
                    }
                    Err(_refresh) => {}
                },
                None => tokio::time::sleep(RETRY).await,
            }
            let taken = Instant::now();
            last_read = taken;
            match netlink.state().await {
                Ok(state) => {
                    mark_read(started);
                    // After a notification the reading goes out even when it
                    // equals the last one: a VIP added and removed between two
                    // readings must still be judged against a reading taken
                    // after the add.
                    let changed = notified || tx.borrow().state != state;
                    if changed {
                        tx.send_replace(Arc::new(Snapshot { state, taken }));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the interfaces");
                    metrics::get().netlink_up.set(0);
                    tokio::time::sleep(RETRY).await;
                }
            }
            if tx.is_closed() {
                return;
            }
            if messages.is_none() {
                break;
            }
        }
    }
}
