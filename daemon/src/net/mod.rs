//! The daemon's hands on the node's network: netlink for interfaces and VIP
//! addresses ([`links`]), raw packet sockets that announce VIPs ([`announcer`]) and
//! hear other hosts claim them ([`watch`]). No decisions here; frames come
//! from `kvip_core::packet`.

pub mod announcer;
pub mod error;
pub mod kernel;
pub mod links;
mod raw;
pub mod watch;

pub use announcer::{Announcer, burst_schedule};
pub use error::NetError;
pub use links::{LinkInfo, Netlink};

/// "eth0 (index 3)" for messages, or "interface index 3" if it has no name.
fn interface_label(ifindex: u32) -> String {
    match nix::net::if_::if_indextoname(ifindex) {
        Ok(name) => format!("{} (index {ifindex})", name.to_string_lossy()),
        Err(_) => format!("interface index {ifindex}"),
    }
}
