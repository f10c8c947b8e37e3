//! Packet I/O for a userspace tunnel, with no knowledge of Pinhole's protocol: the UDP socket
//! (dual-stack binding, batched sends with GSO and receives with GRO and `recvmmsg`), a pool of
//! extra UDP sockets, the TUN device's batched reads and writes with offloads and the TCP
//! coalescer behind them, the Internet checksum they share, and UDP inside IP packets for
//! services answered on the TUN device itself.

pub mod bypass;
pub mod checksum;
pub mod extra_sockets;
pub mod ip_udp;
#[cfg(target_os = "linux")]
pub mod tun_gro;
pub mod tun_io;
pub mod udp;
pub mod udp_batch;
