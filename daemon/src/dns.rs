//! The control-plane VIP when `address` is a DNS name: looked up every
//! [`DNS_REFRESH`] as kube-vip does, the address picked by `dns_mode` and
//! kept within its family afterwards ([`DnsMode::follow`]). Both roles
//! follow it: the control plane to announce it, the load balancer to refuse
//! Services asking for it.

use crate::metrics;
use kvip_core::Config;
use kvip_core::config::{DNS_REFRESH, DnsMode};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// The control-plane VIP as `config` gives it: `address` itself, or what
/// its DNS name resolves to now (none before the first answer), followed
/// in the background with `changed` notified on every change. `role` names
/// the follower in its log lines.
pub fn control_plane_address(
    config: &Config,
    role: &'static str,
    changed: Arc<Notify>,
) -> watch::Receiver<Option<IpAddr>> {
    let (tx, rx) = watch::channel(config.address);
    if let (None, Some(name)) = (config.address, &config.address_name) {
        tokio::spawn(follow_name(
            name.clone(),
            config.dns_mode,
            role,
            tx,
            changed,
        ));
    }
    rx
}

/// Looks `name` up every [`DNS_REFRESH`] and publishes the control-plane
/// VIP it gives ([`DnsMode::follow`]), waking the role when it changes. A
/// failed lookup keeps the VIP served and is logged when it starts failing
/// and when it recovers, not every time.
async fn follow_name(
    name: String,
    mode: DnsMode,
    role: &'static str,
    address: watch::Sender<Option<IpAddr>>,
    changed: Arc<Notify>,
) {
    // What is wrong with the last lookup, as last logged.
    let mut problem: Option<String> = None;
    loop {
        let current = *address.borrow();
        let (resolved, now_wrong) = match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(found) => {
                let found: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                // Once a VIP is served, only its family counts, as in kube-vip.
                let wanted = current.map_or(mode, DnsMode::of_family);
                let wrong = wanted.pick(&found).is_none().then(|| {
                    format!("it resolves to no address of the family {wanted:?} asks for")
                });
                (Some(found), wrong)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        if now_wrong != problem {
            match (&now_wrong, current) {
                (Some(error), Some(served)) => {
                    tracing::warn!(role, name = %name, %error, %served, retry_s = DNS_REFRESH.as_secs(), "cannot resolve address; keeping the control-plane VIP it last gave and retrying")
                }
                (Some(error), None) => {
                    tracing::error!(role, name = %name, %error, retry_s = DNS_REFRESH.as_secs(), "cannot resolve address, so there is no control-plane VIP yet; retrying")
                }
                (None, _) => tracing::info!(role, name = %name, "address resolves again"),
            }
            problem = now_wrong;
        }
        let next = mode.follow(current, resolved.as_deref());
        if next != current {
            match (current, next) {
                (None, Some(to)) => {
                    tracing::info!(role, name = %name, address = %to, "control-plane VIP resolved")
                }
                (Some(from), Some(to)) => {
                    tracing::warn!(role, name = %name, %from, %to, "the control-plane VIP's name now resolves elsewhere: following it")
                }
                _ => {}
            }
            if role == "cp" {
                metrics::get().control_plane_address_changes.inc();
            }
            address.send_replace(next);
            changed.notify_one();
        }
        tokio::time::sleep(DNS_REFRESH).await;
    }
}
