//! Link-layer (`AF_PACKET`) sockets: the only place in kvip that uses
//! `unsafe`, to fill in a `sockaddr_ll` (neither socket2 nor nix build one
//! safely) and to hand a socket to Tokio's reactor. The rest is safe socket2.

use std::io;
use std::mem::size_of;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `ETH_P_ALL`: every protocol, for a listener whose BPF filter picks frames.
pub(super) const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// A raw packet socket that receives nothing until [`bind_to_link`] binds it
/// with a protocol: created with protocol 0 so that no frame from another
/// interface can be queued before the bind (and the filter) take effect.
pub(super) fn unbound_packet_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds `socket` to one interface; `protocol` (an ethertype, or
/// [`ETH_P_ALL`]) selects what it receives, 0 for nothing (a sender).
pub(super) fn bind_to_link(socket: &Socket, ifindex: u32, protocol: u16) -> io::Result<()> {
    socket.bind(&link_address(ifindex, protocol, [0; 6])?)
}

/// The `sockaddr_ll` to send a frame of `ethertype` to `destination` out of
/// interface `ifindex`.
#[allow(unsafe_code)]
pub(super) fn link_address(
    ifindex: u32,
    ethertype: u16,
    destination: [u8; 6],
) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface index {ifindex} out of range"),
        )
    })?;
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

/// Registers `socket` with the current Tokio runtime's reactor for reading;
/// must be called within a runtime.
#[allow(unsafe_code)]
pub(super) fn register_readable(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: a socket2 `Socket` owns its descriptor: it stays open, and
    // `as_raw_fd` returns the same one, until the `Socket` is dropped, which
    // happens only when the `AsyncFd` that now owns it is dropped.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_address_is_a_packet_address() {
        let address = link_address(3, 0x0806, [0xff; 6]).unwrap();
        assert_eq!(address.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(address.len() as usize, size_of::<libc::sockaddr_ll>());
        assert!(link_address(u32::MAX, 0x0806, [0xff; 6]).is_err());
    }
}
