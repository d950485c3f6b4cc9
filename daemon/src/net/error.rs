//! What can go wrong on the node's network, in words an operator can act on:
//! a missing capability, an interface that is not there, or the kernel's own
//! error with the interface and address it concerned.

use std::fmt;
use std::io;

/// The Linux capability an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Changing addresses and routes (netlink writes).
    NetAdmin,
    /// Opening raw packet sockets (ARP, neighbour advertisements).
    NetRaw,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
        })
    }
}

/// A failure of the network layer; every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The kernel said EPERM/EACCES: the process lacks a capability.
    #[error(
        "cannot {action}: permission denied; kvip needs {capability} (add it to the container's securityContext.capabilities.add, e.g. [\"NET_ADMIN\", \"NET_RAW\"])"
    )]
    PermissionDenied {
        /// What kvip was doing, e.g. "add 192.0.2.10/32 to eth0".
        action: String,
        /// The capability that is missing.
        capability: Capability,
    },
    /// The interface does not exist in this network namespace.
    #[error(
        "interface {interface:?} does not exist on this node (check vip_interface / vip_servicesinterface)"
    )]
    InterfaceNotFound {
        /// The name asked for.
        interface: String,
    },
    /// The interface has no Ethernet address, so ARP and NDP cannot work on it.
    #[error(
        "interface {interface} has no Ethernet (MAC) address, so a VIP cannot be announced on it; choose an Ethernet interface with vip_interface"
    )]
    NoEthernetAddress {
        /// The interface.
        interface: String,
    },
    /// The address is on the interface, put there by someone else (another
    /// tool, or kvip's other role): kvip neither takes nor removes it.
    #[error(
        "{address} is already on {interface} and kvip did not put it there (another tool, or kvip's other role); kvip leaves it alone"
    )]
    NotOurs {
        /// The interface.
        interface: String,
        /// The address.
        address: std::net::IpAddr,
    },
    /// No netlink socket could be opened (or no Tokio runtime to drive it).
    #[error("cannot open a netlink socket to the kernel: {source}")]
    NetlinkUnavailable {
        /// The underlying error.
        source: io::Error,
    },
    /// A netlink request failed for another reason.
    #[error("cannot {action}: {source}")]
    Netlink {
        /// What kvip was doing, naming the interface and address.
        action: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// A packet socket could not be opened, bound or used.
    #[error("cannot {action}: {source}")]
    Socket {
        /// What kvip was doing, naming the interface and address.
        action: String,
        /// The kernel's error.
        source: io::Error,
    },
}

impl NetError {
    /// The error for `action` failing with `source`: a missing `capability`
    /// when the kernel refused permission, else a netlink error.
    pub(super) fn netlink(action: String, capability: Capability, source: io::Error) -> Self {
        if is_permission_error(&source) {
            NetError::PermissionDenied { action, capability }
        } else {
            NetError::Netlink { action, source }
        }
    }

    /// The error for a packet socket `action` failing with `source`.
    pub(super) fn socket(action: String, source: io::Error) -> Self {
        if is_permission_error(&source) {
            NetError::PermissionDenied {
                action,
                capability: Capability::NetRaw,
            }
        } else {
            NetError::Socket { action, source }
        }
    }
}

fn is_permission_error(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// The errno of a failed rtnetlink request, when the kernel sent one.
pub(super) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
        _ => None,
    }
}

/// An rtnetlink error as an `io::Error`, keeping the kernel's errno.
pub(super) fn to_io(error: rtnetlink::Error) -> io::Error {
    match errno(&error) {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    fn nack(code: i32) -> rtnetlink::Error {
        let mut message = ErrorMessage::default();
        message.code = NonZeroI32::new(code);
        rtnetlink::Error::NetlinkError(message)
    }

    #[test]
    fn eperm_names_the_missing_capability() {
        let err = NetError::netlink(
            "add 192.0.2.10/32 to eth0".into(),
            Capability::NetAdmin,
            to_io(nack(-libc::EPERM)),
        );
        assert!(matches!(
            err,
            NetError::PermissionDenied {
                capability: Capability::NetAdmin,
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.contains("CAP_NET_ADMIN") && text.contains("192.0.2.10/32 to eth0"),
            "{text}"
        );

        let err = NetError::socket(
            "open a packet socket on eth0".into(),
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(err.to_string().contains("CAP_NET_RAW"), "{err}");
        let err = NetError::socket(
            "open a packet socket on eth0".into(),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(err.to_string().contains("CAP_NET_RAW"), "{err}");
    }

    #[test]
    fn other_errors_keep_the_kernel_message_and_the_action() {
        let err = NetError::netlink(
            "add fd00::10/128 to eth0".into(),
            Capability::NetAdmin,
            to_io(nack(-libc::EINVAL)),
        );
        let NetError::Netlink { ref source, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        assert!(
            err.to_string()
                .starts_with("cannot add fd00::10/128 to eth0: ")
        );
    }

    #[test]
    fn errno_reads_nacks_and_ignores_the_rest() {
        assert_eq!(errno(&nack(-libc::EEXIST)), Some(libc::EEXIST));
        assert_eq!(errno(&nack(0)), None);
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
        assert!(
            to_io(rtnetlink::Error::RequestFailed)
                .raw_os_error()
                .is_none()
        );
    }
}
