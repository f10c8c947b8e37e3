//! The node's UDP socket: dual-stack where the OS allows, IPv4 otherwise; the address forms
//! such a socket sends to and receives from; and the local address the OS picks toward a host.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// Socket buffers large enough for bursts at Gbit/s rates.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds `port` (0: any) on all addresses, IPv6 and IPv4 on one socket when possible.
pub fn bind(port: u16) -> io::Result<UdpSocket> {
    let socket = match bind_v6_dual(port) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("dual-stack socket unavailable ({e}), using IPv4 only");
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot bind UDP port {port}: {e}"))
                })?;
            s
        }
    };
    crate::bypass::mark(&socket);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn bind_v6_dual(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s)
}

/// The address to pass to `send_to` on `socket`: IPv4 destinations become IPv4-mapped IPv6 on a
/// dual-stack socket.
pub fn to_socket_family(local: &SocketAddr, dst: SocketAddr) -> SocketAddr {
    match (local, dst) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
        }
        _ => dst,
    }
}

/// The peer's address as the engine sees it (IPv4-mapped IPv6 back to IPv4).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from((addr.ip().to_canonical(), addr.port()))
}

/// The local address the OS would send from toward `dst` (a connected UDP socket; nothing is
/// sent), or None without a route.
pub fn source_toward(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_unmaps_v4() {
        let local: SocketAddr = "[::]:51820".parse().unwrap();
        let dst: SocketAddr = "192.0.2.1:7".parse().unwrap();
        let mapped = to_socket_family(&local, dst);
        assert_eq!(
            mapped,
            "[::ffff:192.0.2.1]:7".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(canonical(mapped), dst);
        let local4: SocketAddr = "0.0.0.0:51820".parse().unwrap();
        assert_eq!(to_socket_family(&local4, dst), dst);
    }

    #[test]
    fn the_source_toward_loopback_is_loopback() {
        assert_eq!(
            source_toward(Ipv4Addr::LOCALHOST.into()),
            Some(Ipv4Addr::LOCALHOST.into())
        );
    }
}
